//! XEP-0045 administration on Matrix rooms: `muc#admin` (kick, ban, affiliations and their
//! lists, §8-§9) and `muc#owner` (the room configuration form, §10). Affiliations are power
//! levels (owner 100, admin 50, member 0) and the ban; what a user may change is what the
//! Matrix authorization rules let it change.

use estuary_core::CoreError;
use estuary_core::rooms::EventTemplate;
use serde_json::{Value, json};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::minidom::rxml::xml_ncname;
use xmpp_parsers::data_forms::{DataForm, DataFormType, Field, FieldType};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{FullJid, Jid};
use xmpp_parsers::stanza_error::{DefinedCondition as Condition, ErrorType};

use super::{RoomState, joined_with_nick, user_of};
use crate::c2s::{C2s, error_reply};

pub const NS_ADMIN: &str = "http://jabber.org/protocol/muc#admin";
pub const NS_OWNER: &str = "http://jabber.org/protocol/muc#owner";
const CONFIG_FORM: &str = "http://jabber.org/protocol/muc#roomconfig";

/// Why a request failed, as a stanza error.
struct Refusal(ErrorType, Condition);

impl From<CoreError> for Refusal {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::Forbidden(_) => Refusal(ErrorType::Auth, Condition::Forbidden),
            CoreError::NotFound(_) | CoreError::UnknownUser(_) => Refusal(ErrorType::Cancel, Condition::ItemNotFound),
            CoreError::InvalidParam(_) | CoreError::TooLarge(_) => Refusal(ErrorType::Modify, Condition::NotAcceptable),
            e => {
                tracing::warn!(error = %e, "MUC administration failed");
                Refusal(ErrorType::Wait, Condition::InternalServerError)
            }
        }
    }
}

fn bad_request() -> Refusal {
    Refusal(ErrorType::Modify, Condition::BadRequest)
}

/// A `muc#admin` or `muc#owner` query to a room.
pub(super) async fn handle(
    c2s: &C2s,
    full: &FullJid,
    room_id: &str,
    iq_id: String,
    to: Jid,
    payload: &Element,
    get: bool,
) -> Iq {
    let me: Jid = full.clone().into();
    let answer = if payload.is("query", NS_ADMIN) {
        if get {
            affiliation_list(c2s, room_id, payload).await
        } else {
            admin_set(c2s, full, room_id, payload).await.map(|()| None)
        }
    } else if get {
        config_form(c2s, full, room_id).await.map(Some)
    } else {
        owner_set(c2s, full, room_id, payload).await.map(|()| None)
    };
    match answer {
        Ok(payload) => Iq::Result {
            from: Some(to),
            to: Some(me),
            id: iq_id,
            payload,
        },
        Err(Refusal(type_, condition)) => error_reply(iq_id, Some(to), Some(me), type_, condition),
    }
}

/// The Matrix user an item names, by `jid` (a local account) or by `nick` (an occupant).
async fn target(c2s: &C2s, room_id: &str, item: &Element) -> Result<String, Refusal> {
    let not_found = || Refusal(ErrorType::Cancel, Condition::ItemNotFound);
    if let Some(jid) = item.attr("jid") {
        let jid = Jid::new(jid).map_err(|_| Refusal(ErrorType::Modify, Condition::JidMalformed))?;
        // Remote users need s2s; only local accounts are named by JID.
        let node = crate::local_account(jid.as_str(), &c2s.domain).ok_or_else(not_found)?;
        return Ok(c2s.core.matrix_user_id(node));
    }
    let nick = item.attr("nick").ok_or_else(bad_request)?;
    let members = c2s.core.rooms.members(room_id).await?;
    joined_with_nick(&members, nick, None).cloned().ok_or_else(not_found)
}

async fn send_membership(
    c2s: &C2s,
    full: &FullJid,
    room_id: &str,
    user: &str,
    membership: &str,
) -> Result<(), Refusal> {
    send_state(
        c2s,
        full,
        room_id,
        "m.room.member",
        user,
        json!({ "membership": membership }),
    )
    .await
}

async fn send_state(
    c2s: &C2s,
    full: &FullJid,
    room_id: &str,
    kind: &str,
    key: &str,
    content: Value,
) -> Result<(), Refusal> {
    let sender = user_of(c2s, full).ok_or_else(bad_request)?;
    let room = ruma::RoomId::parse(room_id).map_err(|_| bad_request())?;
    c2s.core
        .rooms
        .send(&room, &sender, EventTemplate::state(kind, key, content), None)
        .await?;
    Ok(())
}

fn reason(item: &Element) -> Option<String> {
    item.get_child("reason", NS_ADMIN)
        .map(Element::text)
        .filter(|r| !r.is_empty())
}

/// §8.2 kick (role none), §9.1 ban (outcast), §9.3-§10.7 affiliations as power levels.
async fn admin_set(c2s: &C2s, full: &FullJid, room_id: &str, query: &Element) -> Result<(), Refusal> {
    let items: Vec<&Element> = query.children().filter(|c| c.is("item", NS_ADMIN)).collect();
    if items.is_empty() {
        return Err(bad_request());
    }
    for item in items {
        let user = target(c2s, room_id, item).await?;
        let mut member = json!({});
        if let Some(r) = reason(item) {
            member["reason"] = json!(r);
        }
        match (item.attr("role"), item.attr("affiliation")) {
            (Some("none"), None) => {
                member["membership"] = json!("leave");
                send_state(c2s, full, room_id, "m.room.member", &user, member).await?;
            }
            (Some(role @ ("participant" | "visitor" | "moderator")), None) => {
                set_role(c2s, full, room_id, &user, role).await?;
            }
            (None, Some("outcast")) => {
                member["membership"] = json!("ban");
                send_state(c2s, full, room_id, "m.room.member", &user, member).await?;
            }
            (None, Some(affiliation @ ("owner" | "admin" | "member" | "none"))) => {
                let level = match affiliation {
                    "owner" => Some(100),
                    "admin" => Some(50),
                    _ => None,
                };
                let uid = ruma::UserId::parse(&user).map_err(|_| bad_request())?;
                let membership = c2s.core.rooms.membership(room_id, &uid).await?;
                if membership.as_deref() == Some("ban") {
                    // Leaving the outcast list is an unban.
                    send_membership(c2s, full, room_id, &user, "leave").await?;
                }
                let mut levels = c2s.core.rooms.power_levels(room_id).await?.0;
                let current = levels["users"][&user].as_i64();
                if current != level {
                    match level {
                        Some(l) => levels["users"][&user] = json!(l),
                        None => {
                            if let Some(users) = levels["users"].as_object_mut() {
                                users.remove(&user);
                            }
                        }
                    }
                    send_state(c2s, full, room_id, "m.room.power_levels", "", levels).await?;
                }
                // A member of a members-only room may join: an invite.
                if affiliation != "none" && !matches!(membership.as_deref(), Some("join" | "invite")) {
                    let state = RoomState::read(&c2s.core, room_id).await?;
                    if state.join_rule != "public" {
                        send_membership(c2s, full, room_id, &user, "invite").await?;
                    }
                }
            }
            _ => return Err(bad_request()),
        }
    }
    Ok(())
}

/// §8.3-§8.8: voice and moderator grants as power levels. A moderator is whoever may kick, a
/// participant whoever may send messages; so granting moderator raises the user to the kick
/// level (with Matrix's default levels that is also the admin affiliation), granting voice to
/// the level messages need, and revoking voice sets it just below. Admins and owners keep
/// their roles (§8.4, §8.6: not-allowed).
async fn set_role(c2s: &C2s, full: &FullJid, room_id: &str, user: &str, role: &str) -> Result<(), Refusal> {
    let levels = c2s.core.rooms.power_levels(room_id).await?;
    let level = levels.user(user);
    let kick = levels.get("kick", 50);
    let send = super::send_level(&levels.0);
    let (affiliation, _) = super::standing(&levels.0, user);
    if matches!(affiliation, "owner" | "admin") && role != "moderator" {
        return Err(Refusal(ErrorType::Cancel, Condition::NotAllowed));
    }
    let wanted = match role {
        "moderator" => level.max(kick),
        "participant" if level >= kick || level < send => send,
        "visitor" if level >= send => send - 1,
        _ => level,
    };
    if wanted == level {
        return Ok(());
    }
    let mut content = levels.0;
    if wanted == content["users_default"].as_i64().unwrap_or(0) {
        if let Some(users) = content["users"].as_object_mut() {
            users.remove(user);
        }
    } else {
        content["users"][user] = json!(wanted);
    }
    send_state(c2s, full, room_id, "m.room.power_levels", "", content).await
}

/// §8.5, §8.7: the occupants with a role (voice list: participants; moderator list).
async fn role_list(c2s: &C2s, room_id: &str, wanted: &str) -> Result<Option<Element>, Refusal> {
    let levels = c2s.core.rooms.power_levels(room_id).await?;
    let members = c2s.core.rooms.members(room_id).await?;
    let mut out = Element::builder("query", NS_ADMIN);
    for (user, (membership, event)) in members.iter() {
        let role = super::standing(&levels.0, user).1;
        if membership != "join" || role != wanted {
            continue;
        }
        let mut item = Element::builder("item", NS_ADMIN)
            .attr(xml_ncname!("role").to_owned(), role)
            .attr(xml_ncname!("nick").to_owned(), super::event_nick(user, event));
        if let Some(local) = c2s.core.local_localpart(user) {
            item = item.attr(xml_ncname!("jid").to_owned(), crate::bare_jid(local, &c2s.domain));
        }
        out = out.append(item.build());
    }
    Ok(Some(out.build()))
}

/// §9.5, §10.5: the users with an affiliation.
async fn affiliation_list(c2s: &C2s, room_id: &str, query: &Element) -> Result<Option<Element>, Refusal> {
    let item = query.get_child("item", NS_ADMIN).ok_or_else(bad_request)?;
    if let Some(role @ ("moderator" | "participant")) = item.attr("role") {
        return role_list(c2s, room_id, role).await;
    }
    let wanted = item.attr("affiliation").ok_or_else(bad_request)?;
    let levels = c2s.core.rooms.power_levels(room_id).await?;
    let members = c2s.core.rooms.members(room_id).await?;
    let users: Vec<&String> = match wanted {
        "outcast" => members
            .iter()
            .filter(|(_, (m, _))| m == "ban")
            .map(|(u, _)| u)
            .collect(),
        "owner" | "admin" | "member" => members
            .iter()
            .filter(|(u, (m, _))| super::standing(&levels.0, u).0 == wanted && matches!(m.as_str(), "join" | "invite"))
            .map(|(u, _)| u)
            .collect(),
        _ => return Err(bad_request()),
    };
    let mut out = Element::builder("query", NS_ADMIN);
    for user in users {
        let Some(local) = c2s.core.local_localpart(user) else {
            continue;
        };
        out = out.append(
            Element::builder("item", NS_ADMIN)
                .attr(xml_ncname!("affiliation").to_owned(), wanted)
                .attr(xml_ncname!("jid").to_owned(), crate::bare_jid(local, &c2s.domain))
                .build(),
        );
    }
    Ok(Some(out.build()))
}

/// Only owners configure a room (§10.1).
async fn require_owner(c2s: &C2s, full: &FullJid, room_id: &str) -> Result<(), Refusal> {
    let user = user_of(c2s, full).ok_or_else(bad_request)?;
    let levels = c2s.core.rooms.power_levels(room_id).await?;
    if levels.user(user.as_str()) >= 100 {
        Ok(())
    } else {
        Err(Refusal(ErrorType::Auth, Condition::Forbidden))
    }
}

fn field(var: &str, type_: FieldType, label: &str, value: &str) -> Field {
    let mut f = Field::new(var, type_).with_value(value);
    f.label = Some(label.to_owned());
    f
}

fn boolean(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

/// §10.2: the configuration form, filled with the room's state.
async fn config_form(c2s: &C2s, full: &FullJid, room_id: &str) -> Result<Element, Refusal> {
    require_owner(c2s, full, room_id).await?;
    let mut state = RoomState::read(&c2s.core, room_id).await?;
    let mut published = c2s.core.rooms.room(room_id).await?.is_some_and(|r| r.published);
    if c2s.muc.is_locked(room_id).is_some() {
        // A new room's form offers what it will be: open and listed, unless changed.
        state.join_rule = "public".into();
        published = true;
    }
    let mut form = DataForm::new(DataFormType::Form, CONFIG_FORM, vec![]);
    form.title = Some("Room configuration".into());
    form.fields = vec![
        field(
            "muc#roomconfig_roomname",
            FieldType::TextSingle,
            "Name",
            state.name.as_deref().unwrap_or(""),
        ),
        field(
            "muc#roomconfig_roomdesc",
            FieldType::TextSingle,
            "Description (the topic)",
            state.topic.as_deref().unwrap_or(""),
        ),
        field(
            "muc#roomconfig_membersonly",
            FieldType::Boolean,
            "Only members may join (invite only)",
            boolean(state.join_rule != "public"),
        ),
        field(
            "muc#roomconfig_publicroom",
            FieldType::Boolean,
            "Listed in the room directory",
            boolean(published),
        ),
        // Fixed by the mapping: rooms persist, and members' addresses are visible.
        field("muc#roomconfig_persistentroom", FieldType::Boolean, "Persistent", "1"),
        field(
            "muc#roomconfig_whois",
            FieldType::ListSingle,
            "Who may see real addresses",
            "anyone",
        ),
    ];
    Ok(Element::builder("query", NS_OWNER).append(Element::from(form)).build())
}

/// §10.1.2-§10.2: a submitted form (an empty one accepts the defaults: an instant room), or a
/// cancelled one. A new room (locked) opens once its form is submitted; cancelling its first
/// configuration destroys it (§10.1.3) as far as Matrix allows.
async fn owner_set(c2s: &C2s, full: &FullJid, room_id: &str, query: &Element) -> Result<(), Refusal> {
    require_owner(c2s, full, room_id).await?;
    let locked = c2s.muc.is_locked(room_id).is_some();
    owner_form(c2s, full, room_id, query, locked).await?;
    if locked {
        c2s.muc.unlock(room_id);
    }
    Ok(())
}

/// A new room whose owner cancelled its configuration: its alias is freed, it leaves the room
/// directory, and the owner leaves it (a Matrix room cannot be deleted).
async fn destroy_new(c2s: &C2s, full: &FullJid, room_id: &str) -> Result<(), Refusal> {
    let store = &c2s.core.store;
    if let Some(alias) = RoomState::read(&c2s.core, room_id).await?.alias {
        store.delete_alias(&alias).await.map_err(CoreError::from)?;
    }
    store
        .set_room_published(room_id, false)
        .await
        .map_err(CoreError::from)?;
    let user = user_of(c2s, full).ok_or_else(bad_request)?;
    send_membership(c2s, full, room_id, user.as_str(), "leave").await
}

async fn owner_form(c2s: &C2s, full: &FullJid, room_id: &str, query: &Element, locked: bool) -> Result<(), Refusal> {
    if query.get_child("destroy", NS_OWNER).is_some() {
        // A Matrix room cannot be destroyed; its members can leave it.
        return Err(Refusal(ErrorType::Cancel, Condition::NotAllowed));
    }
    let x = query
        .get_child("x", xmpp_parsers::ns::DATA_FORMS)
        .ok_or_else(bad_request)?;
    let form = DataForm::try_from(x.clone()).map_err(|_| bad_request())?;
    if form.type_ == DataFormType::Cancel {
        return if locked {
            destroy_new(c2s, full, room_id).await
        } else {
            Ok(())
        };
    }
    if form.type_ != DataFormType::Submit {
        return Err(bad_request());
    }
    let state = RoomState::read(&c2s.core, room_id).await?;
    let value = |var: &str| {
        form.fields
            .iter()
            .find(|f| f.var.as_deref() == Some(var))
            .map(|f| f.values.first().cloned().unwrap_or_default())
    };
    let truth = |v: String| matches!(v.as_str(), "1" | "true");
    // A new room takes the defaults for what the form leaves out: open and listed.
    let defaults = |v: Option<bool>, default: bool| v.or(locked.then_some(default));
    if value("muc#roomconfig_persistentroom").map(truth) == Some(false) {
        // Matrix rooms always persist.
        return Err(Refusal(ErrorType::Modify, Condition::NotAcceptable));
    }
    if let Some(name) = value("muc#roomconfig_roomname")
        && name != state.name.clone().unwrap_or_default()
    {
        send_state(c2s, full, room_id, "m.room.name", "", json!({ "name": name })).await?;
    }
    if let Some(desc) = value("muc#roomconfig_roomdesc")
        && desc != state.topic.clone().unwrap_or_default()
    {
        send_state(c2s, full, room_id, "m.room.topic", "", json!({ "topic": desc })).await?;
    }
    if let Some(members_only) = defaults(value("muc#roomconfig_membersonly").map(truth), false) {
        let rule = if members_only { "invite" } else { "public" };
        if rule != state.join_rule {
            send_state(
                c2s,
                full,
                room_id,
                "m.room.join_rules",
                "",
                json!({ "join_rule": rule }),
            )
            .await?;
        }
    }
    if let Some(public) = defaults(value("muc#roomconfig_publicroom").map(truth), true) {
        c2s.core
            .store
            .set_room_published(room_id, public)
            .await
            .map_err(CoreError::from)?;
    }
    Ok(())
}
