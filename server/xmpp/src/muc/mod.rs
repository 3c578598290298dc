//! XEP-0045 multi-user chat on `xmpp.muc_domain`, as a view of Matrix rooms (see `jid` for
//! which room a JID names).
//!
//! - The occupants of a room, as XMPP clients see them, are its joined Matrix members; an
//!   occupant's nick is the member's display name in that room (its localpart when it has
//!   none). A session that joins makes its account a member (with the nick as its display name
//!   in the room) when it is not one already; a nick change is a display name change.
//! - An XMPP session in a room ("occupant session") receives the room's events as the `pump`
//!   turns them into stanzas: one task that follows the event stream, so that whatever sent an
//!   event (a Matrix client, an XMPP client, the server) XMPP clients see it alike and in order.
//! - Leaving (unavailable presence to the room) from the account's last session in the room is
//!   leaving the Matrix room. A disconnect is not: the account stays a member, and its next
//!   session joins again.

mod admin;
pub(crate) mod convert;
pub mod jid;
pub(crate) mod pump;

use estuary_core::Locked;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use estuary_core::rooms::create::{CreateRoom, Preset};
use estuary_core::rooms::{EventTemplate, Members, Pdu};
use estuary_core::{Core, CoreError, StoredEvent};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_xmpp::minidom::Element;
use xmpp_parsers::disco::{DiscoInfoResult, DiscoItemsResult, Identity, Item as DiscoItem};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::ns;
use xmpp_parsers::presence::{Presence, Type as PresenceType};
use xmpp_parsers::stanza_error::{DefinedCondition as Condition, ErrorType, StanzaError};

use crate::c2s::{C2s, error_reply};

pub use jid::Target;

pub const NS_MUC: &str = "http://jabber.org/protocol/muc";
pub const NS_USER: &str = "http://jabber.org/protocol/muc#user";
pub const NS_OCCUPANT_ID: &str = "urn:xmpp:occupant-id:0";
pub const NS_SID: &str = "urn:xmpp:sid:0";
pub const NS_MODERATE: &str = "urn:xmpp:message-moderate:1";
/// The device ID under which XMPP sessions' room events keep their transaction IDs (one per
/// message: the session's resource, the stanza's id and origin-id), so that the reflected
/// copy carries the ids the client gave it.
pub(crate) const XMPP_DEVICE: &str = "xmpp";
/// How long a room created from XMPP waits for its owner's configuration (Prosody: 300 s).
const LOCK_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest nick accepted (Synapse's limit on display names is 256).
const MAX_NICK: usize = 256;

/// The MUC service: its domain, the pump's queue, and which sessions are in which rooms.
pub struct Muc {
    pub domain: String,
    tx: mpsc::UnboundedSender<pump::Command>,
    /// Occupant sessions: full JID -> room IDs. Written by the pump only.
    occupied: Arc<Mutex<HashMap<FullJid, HashSet<String>>>>,
    /// Rooms created from XMPP that their owner has not configured yet (§10.1.1): room ID ->
    /// (owner, since). Only the owner may join until it has.
    locked: Mutex<HashMap<String, (String, Instant)>>,
}

impl Muc {
    pub(crate) fn start(core: &Arc<Core>, c2s: Weak<C2s>) -> Muc {
        let (tx, rx) = mpsc::unbounded_channel();
        let occupied = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(pump::run(core.clone(), c2s, rx, occupied.clone()));
        Muc {
            domain: core.config.xmpp.muc_domain.clone(),
            tx,
            occupied,
            locked: Mutex::default(),
        }
    }

    fn locks(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Instant)>> {
        self.locked.locked()
    }

    /// Whether the room waits for its owner to configure it (a lock lapses after
    /// [`LOCK_TIMEOUT`]; the room then stays as it was made: members-only and unlisted).
    pub(crate) fn is_locked(&self, room_id: &str) -> Option<String> {
        let mut locks = self.locks();
        match locks.get(room_id) {
            Some((owner, since)) if since.elapsed() < LOCK_TIMEOUT => Some(owner.clone()),
            Some(_) => {
                locks.remove(room_id);
                None
            }
            None => None,
        }
    }

    pub(crate) fn unlock(&self, room_id: &str) {
        self.locks().remove(room_id);
    }

    /// Whether a stanza to `to` is the MUC service's.
    pub fn serves(&self, to: &Jid) -> bool {
        to.domain().as_str().eq_ignore_ascii_case(&self.domain)
    }

    fn is_occupant(&self, full: &FullJid, room_id: &str) -> bool {
        self.occupied
            .locked()
            .get(full)
            .is_some_and(|rooms| rooms.contains(room_id))
    }

    /// The sessions of account `localpart` that are occupants of the room.
    fn occupant_sessions(&self, localpart: &str, room_id: &str) -> Vec<FullJid> {
        self.occupied
            .locked()
            .iter()
            .filter(|(full, rooms)| full.node().is_some_and(|n| n.as_str() == localpart) && rooms.contains(room_id))
            .map(|(full, _)| full.clone())
            .collect()
    }

    fn send(&self, command: pump::Command) {
        // The pump only stops with the process.
        let _ = self.tx.send(command);
    }

    /// The session is gone (not a leave: its account stays in its rooms).
    pub(crate) fn gone(&self, full: &FullJid) {
        let was_in = self.occupied.locked().contains_key(full);
        if was_in {
            self.send(pump::Command::Gone { full: full.clone() });
        }
    }
}

/// The Matrix user ID of a local account.
pub(crate) fn user_of(c2s: &C2s, full: &FullJid) -> Option<ruma::OwnedUserId> {
    let lp = full.node()?;
    ruma::UserId::parse(c2s.core.matrix_user_id(lp.as_str())).ok()
}

/// An occupant's nick: the member's display name in the room, else the user ID's localpart.
pub(crate) fn member_nick(user_id: &str, content: &Value) -> String {
    match content["displayname"].as_str().map(str::trim) {
        Some(n) if !n.is_empty() => n.to_owned(),
        _ => user_id
            .strip_prefix('@')
            .and_then(|u| u.split(':').next())
            .unwrap_or(user_id)
            .to_owned(),
    }
}

/// The power level messages need in a room (its power levels' content).
pub(crate) fn send_level(levels: &Value) -> i64 {
    levels["events"]["m.room.message"]
        .as_i64()
        .unwrap_or_else(|| levels["events_default"].as_i64().unwrap_or(0))
}

/// XEP-0045 affiliation and role of a member, from the power levels: 100 owner, 50 admin,
/// else member; a moderator can kick, a participant can send messages, a visitor cannot.
pub(crate) fn standing(levels: &Value, user: &str) -> (&'static str, &'static str) {
    let level = levels["users"][user]
        .as_i64()
        .unwrap_or_else(|| levels["users_default"].as_i64().unwrap_or(0));
    let affiliation = match level {
        l if l >= 100 => "owner",
        l if l >= 50 => "admin",
        _ => "member",
    };
    let role = if level >= levels["kick"].as_i64().unwrap_or(50) {
        "moderator"
    } else if level >= send_level(levels) {
        "participant"
    } else {
        "visitor"
    };
    (affiliation, role)
}

/// The nick a member's latest member event gives it.
pub(crate) fn event_nick(user: &str, e: &StoredEvent) -> String {
    let content = Pdu::from_stored(e).map(|p| p.content_value()).unwrap_or_default();
    member_nick(user, &content)
}

/// The joined member showing `nick`, other than `except`.
pub(crate) fn joined_with_nick<'a>(members: &'a Members, nick: &str, except: Option<&str>) -> Option<&'a String> {
    members
        .iter()
        .find(|(u, (m, e))| m == "join" && Some(u.as_str()) != except && event_nick(u, e) == nick)
        .map(|(u, _)| u)
}

/// The room a room JID names, if it exists.
async fn resolve(c2s: &C2s, target: &Target) -> Result<Option<String>, CoreError> {
    match target {
        Target::Alias(alias) => Ok(c2s.core.store.alias(alias).await?),
        Target::RoomId(id) => Ok(c2s.core.rooms.room(id).await?.map(|r| r.room_id)),
    }
}

fn target_of(c2s: &C2s, room: &BareJid) -> Option<Target> {
    jid::target(room.node()?.as_str(), &c2s.core.config.server_name)
}

fn stanza_error(type_: ErrorType, condition: Condition, text: Option<&str>) -> StanzaError {
    let mut texts = BTreeMap::new();
    if let Some(t) = text {
        texts.insert(String::new(), t.to_owned());
    }
    StanzaError {
        type_,
        by: None,
        defined_condition: condition,
        texts,
        other: None,
    }
}

/// A stanza the MUC service answers (its `to` is on `xmpp.muc_domain`), from a bound session.
/// Returns what goes back to the session at once, if anything.
pub(crate) async fn handle(c2s: &C2s, el: Element, full: &FullJid) -> Result<Option<Element>, &'static str> {
    match el.name() {
        "presence" => {
            let Ok(mut presence) = Presence::try_from(el) else {
                return Err("malformed presence");
            };
            presence.from = Some(full.clone().into());
            Ok(handle_presence(c2s, full, presence).await.map(Into::into))
        }
        "message" => {
            let Ok(mut msg) = Message::try_from(el) else {
                return Err("malformed message");
            };
            msg.from = Some(full.clone().into());
            Ok(handle_message(c2s, full, msg).await.map(Into::into))
        }
        _ => match Iq::try_from(el) {
            Ok(iq) => Ok(handle_iq(c2s, full, iq).await.map(Into::into)),
            Err(_) => Err("malformed iq"),
        },
    }
}

/// The error presence of XEP-0045 §7.2 (from the occupant JID asked for).
fn presence_error(to_room: &Jid, full: &FullJid, error: StanzaError) -> Presence {
    let mut p = Presence::new(PresenceType::Error);
    p.from = Some(to_room.clone());
    p.to = Some(full.clone().into());
    p.payloads.push(Element::builder("x", NS_MUC).build());
    p.payloads.push(error.into());
    p
}

async fn handle_presence(c2s: &C2s, full: &FullJid, presence: Presence) -> Option<Presence> {
    let to = presence.to.clone()?;
    match presence.type_ {
        PresenceType::None => {
            let Some(nick) = to.resource().map(|r| r.as_str().to_owned()) else {
                // §7.2.1: a join needs a nick.
                return Some(presence_error(
                    &to,
                    full,
                    stanza_error(ErrorType::Modify, Condition::JidMalformed, Some("a nick is needed")),
                ));
            };
            let wants_join = presence.payloads.iter().any(|p| p.is("x", NS_MUC));
            match join(c2s, full, &to.to_bare(), &nick, &presence, wants_join).await {
                Ok(()) => None,
                Err(e) => Some(presence_error(&to, full, e)),
            }
        }
        PresenceType::Unavailable => {
            let nick = to.resource().map(|r| r.as_str().to_owned()).unwrap_or_default();
            leave(c2s, full, &to.to_bare(), nick).await;
            None
        }
        // Errors, probes and subscriptions have no meaning for a room.
        _ => None,
    }
}

/// Join (or change nick in) the room `room_jid` as `nick`.
async fn join(
    c2s: &C2s,
    full: &FullJid,
    room_jid: &BareJid,
    nick: &str,
    presence: &Presence,
    wants_join: bool,
) -> Result<(), StanzaError> {
    let internal = |e: CoreError| {
        tracing::warn!(error = %e, "MUC join failed");
        stanza_error(ErrorType::Wait, Condition::InternalServerError, None)
    };
    let not_found = || stanza_error(ErrorType::Cancel, Condition::ItemNotFound, Some("no such room"));
    if nick.chars().count() > MAX_NICK {
        return Err(stanza_error(
            ErrorType::Modify,
            Condition::NotAcceptable,
            Some("nick too long"),
        ));
    }
    let target = target_of(c2s, room_jid).ok_or_else(not_found)?;
    let user = user_of(c2s, full).ok_or_else(not_found)?;
    let core = &c2s.core;
    let account = core
        .accounts
        .find(user.localpart())
        .await
        .map_err(internal)?
        .filter(|a| a.is_active())
        .ok_or_else(not_found)?;
    let mut after = 0;
    let mut created = false;
    let room_id = match resolve(c2s, &target).await.map_err(internal)? {
        Some(room_id) => room_id,
        None => {
            // §10.1: joining a room that does not exist creates it (an alias JID only), locked
            // (members-only and unlisted) until the owner accepts the defaults (an instant
            // room: open, listed, unencrypted, what an XMPP client expects) or submits its
            // configuration (a reserved room).
            let Target::Alias(alias) = target else {
                return Err(not_found());
            };
            let req = CreateRoom {
                creator: user.clone(),
                creator_profile: (Some(nick.to_owned()), account.avatar_url.clone()),
                room_version: None,
                preset: Preset::PublicChat,
                name: None,
                topic: None,
                invite: vec![],
                is_direct: false,
                initial_state: vec![EventTemplate::state(
                    "m.room.join_rules",
                    "",
                    json!({ "join_rule": "invite" }),
                )],
                alias: Some(alias),
                power_level_content_override: None,
                creation_content: None,
                publish: false,
                encrypt: false,
            };
            match core.rooms.create_room(req).await {
                Ok(id) => {
                    c2s.muc
                        .locks()
                        .insert(id.to_string(), (user.to_string(), Instant::now()));
                    created = true;
                    after = core.rooms.current_position();
                    id.to_string()
                }
                Err(CoreError::AliasInUse(_)) => {
                    return Err(stanza_error(
                        ErrorType::Wait,
                        Condition::Conflict,
                        Some("the room is being created"),
                    ));
                }
                Err(e) => return Err(internal(e)),
            }
        }
    };
    if !created {
        if c2s.muc.is_locked(&room_id).is_some_and(|owner| owner != user.as_str()) {
            // §10.1.1: nobody else enters before the owner configured the room.
            return Err(stanza_error(
                ErrorType::Cancel,
                Condition::ItemNotFound,
                Some("the room is locked until its owner configures it"),
            ));
        }
        let members = core.rooms.members(&room_id).await.map_err(internal)?;
        if joined_with_nick(&members, nick, Some(user.as_str())).is_some() {
            return Err(stanza_error(
                ErrorType::Cancel,
                Condition::Conflict,
                Some("that nick is in use"),
            ));
        }
        let mine = members.get(user.as_str());
        let membership = mine.map(|(m, _)| m.as_str());
        if membership == Some("ban") {
            return Err(stanza_error(
                ErrorType::Auth,
                Condition::Forbidden,
                Some("you are banned from this room"),
            ));
        }
        let current_nick = mine
            .filter(|(m, _)| m == "join")
            .map(|(_, e)| event_nick(user.as_str(), e));
        if current_nick.as_deref() != Some(nick) {
            let mut content = json!({ "membership": "join", "displayname": nick });
            if let Some(a) = &account.avatar_url {
                content["avatar_url"] = json!(a);
            }
            let room = ruma::RoomId::parse(&room_id).map_err(|e| internal(CoreError::Internal(e.to_string())))?;
            match core
                .rooms
                .send(
                    &room,
                    &user,
                    EventTemplate::state("m.room.member", user.as_str(), content),
                    None,
                )
                .await
            {
                Ok((_, position)) => after = position,
                Err(CoreError::Forbidden(_)) if membership != Some("join") => {
                    // §7.2.6: a members-only room the user is not invited to.
                    return Err(stanza_error(
                        ErrorType::Auth,
                        Condition::RegistrationRequired,
                        Some("this room is invite-only"),
                    ));
                }
                Err(CoreError::Forbidden(m)) => {
                    return Err(stanza_error(ErrorType::Auth, Condition::Forbidden, Some(&m)));
                }
                Err(e) => return Err(internal(e)),
            }
        } else if !wants_join && c2s.muc.is_occupant(full, &room_id) {
            // A presence update from an occupant: nothing the room shows.
            return Ok(());
        }
    }
    let history = presence
        .payloads
        .iter()
        .find(|p| p.is("x", NS_MUC))
        .and_then(|x| xmpp_parsers::muc::Muc::try_from(x.clone()).ok())
        .and_then(|m| m.history);
    c2s.muc.send(pump::Command::Join {
        room_id,
        full: full.clone(),
        room_jid: room_jid.clone(),
        history,
        created,
        after,
    });
    Ok(())
}

/// Leave the room: the session stops being an occupant, and if it was the account's last in
/// the room, the account leaves the Matrix room.
async fn leave(c2s: &C2s, full: &FullJid, room_jid: &BareJid, nick: String) {
    let Some(target) = target_of(c2s, room_jid) else { return };
    let Ok(Some(room_id)) = resolve(c2s, &target).await else {
        return;
    };
    c2s.muc.send(pump::Command::Part {
        room_id,
        full: full.clone(),
        room_jid: room_jid.clone(),
        nick,
    });
}

/// Sent by the pump when an account's last occupant session left by presence.
pub(crate) async fn leave_room(core: &Core, room_id: &str, user_id: &str) {
    let Ok(user) = ruma::UserId::parse(user_id) else { return };
    if let Err(e) = leave_if(core, room_id, &user, "join").await {
        tracing::warn!(error = %e, room = room_id, "leaving a room from XMPP failed");
    }
}

/// The user leaves the room (or turns down its invitation) if its membership is `was`;
/// whether it did.
async fn leave_if(core: &Core, room_id: &str, user: &ruma::UserId, was: &str) -> Result<bool, CoreError> {
    if core.rooms.membership(room_id, user).await?.as_deref() != Some(was) {
        return Ok(false);
    }
    let room = ruma::RoomId::parse(room_id).map_err(|e| CoreError::Internal(e.to_string()))?;
    let template = EventTemplate::state("m.room.member", user.as_str(), json!({ "membership": "leave" }));
    core.rooms.send(&room, user, template, None).await?;
    Ok(true)
}

/// The Matrix invitations an account has not answered, as XEP-0249 invitations to a session
/// that just came online (the pump told only the sessions online at the time).
pub(crate) async fn pending_invitations(c2s: &C2s, full: &FullJid) {
    let Some(user) = user_of(c2s, full) else { return };
    let core = &c2s.core;
    let Ok(memberships) = core.rooms.memberships(user.as_str()).await else {
        return;
    };
    let to: Jid = full.clone().into();
    for m in memberships.iter().filter(|m| m.membership == "invite") {
        if let Ok(Some(e)) = core.store.event(&m.event_id).await
            && let Some(invitation) = pump::invitation(c2s, &e, &to).await
        {
            c2s.router.deliver(&to, &invitation);
        }
    }
}

/// §7.8.2 (decline): the session's account turns down its Matrix invitation to the room.
async fn decline(c2s: &C2s, full: &FullJid, room_jid: &BareJid) -> Result<(), StanzaError> {
    let not_found = || {
        stanza_error(
            ErrorType::Cancel,
            Condition::ItemNotFound,
            Some("no invitation to decline"),
        )
    };
    let room_id = match target_of(c2s, room_jid) {
        Some(t) => resolve(c2s, &t).await.ok().flatten().ok_or_else(not_found)?,
        None => return Err(not_found()),
    };
    let user = user_of(c2s, full).ok_or_else(not_found)?;
    match leave_if(&c2s.core, &room_id, &user, "invite").await {
        Ok(true) => Ok(()),
        Ok(false) => Err(not_found()),
        Err(e) => {
            tracing::warn!(error = %e, "declining an invitation failed");
            Err(stanza_error(ErrorType::Wait, Condition::InternalServerError, None))
        }
    }
}

pub(crate) fn bounce(msg: Message, error: StanzaError) -> Message {
    let mut b = msg;
    std::mem::swap(&mut b.from, &mut b.to);
    b.type_ = MessageType::Error;
    b.payloads.push(error.into());
    b
}

/// Invite a local account into the room `room_jid` names, as the session's account (a Matrix
/// invite; the invitee's XMPP sessions get it as a XEP-0249 invitation from the pump).
pub(crate) async fn invite(
    c2s: &C2s,
    full: &FullJid,
    room_jid: &BareJid,
    invitee: &str,
    reason: Option<&str>,
) -> Result<(), StanzaError> {
    let not_found = || stanza_error(ErrorType::Cancel, Condition::ItemNotFound, None);
    let room_id = match target_of(c2s, room_jid) {
        Some(t) => resolve(c2s, &t).await.ok().flatten().ok_or_else(not_found)?,
        None => return Err(not_found()),
    };
    let user = user_of(c2s, full).ok_or_else(not_found)?;
    let node = crate::local_account(invitee, &c2s.domain).ok_or_else(|| {
        stanza_error(
            ErrorType::Cancel,
            Condition::RemoteServerNotFound,
            Some("only local accounts can be invited until s2s exists"),
        )
    })?;
    let invitee = c2s.core.matrix_user_id(node);
    let mut content = json!({ "membership": "invite" });
    if let Some(r) = reason.filter(|r| !r.is_empty()) {
        content["reason"] = json!(r);
    }
    let room = ruma::RoomId::parse(&room_id).map_err(|_| not_found())?;
    match c2s
        .core
        .rooms
        .send(
            &room,
            &user,
            EventTemplate::state("m.room.member", &invitee, content),
            None,
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(CoreError::Forbidden(m)) => Err(stanza_error(ErrorType::Auth, Condition::Forbidden, Some(&m))),
        Err(e) => {
            tracing::warn!(error = %e, "MUC invitation failed");
            Err(stanza_error(ErrorType::Wait, Condition::InternalServerError, None))
        }
    }
}

async fn handle_message(c2s: &C2s, full: &FullJid, msg: Message) -> Option<Message> {
    let to = msg.to.clone()?;
    if msg.type_ == MessageType::Error {
        return None;
    }
    // §7.8.2: a mediated invitation, through the room.
    if let Some(x) = msg.payloads.iter().find(|p| p.is("x", NS_USER))
        && to.resource().is_none()
    {
        for invitation in x.children().filter(|c| c.is("invite", NS_USER)) {
            let invitee = invitation.attr("to").unwrap_or_default();
            let reason = invitation.get_child("reason", NS_USER).map(Element::text);
            if let Err(e) = invite(c2s, full, &to.to_bare(), invitee, reason.as_deref()).await {
                return Some(bounce(msg, e));
            }
        }
        if x.children().any(|c| c.is("decline", NS_USER))
            && let Err(e) = decline(c2s, full, &to.to_bare()).await
        {
            return Some(bounce(msg, e));
        }
        return None;
    }
    if let Some(nick) = to.resource() {
        let nick = nick.as_str().to_owned();
        return private_message(c2s, full, msg, &nick).await;
    }
    if msg.type_ != MessageType::Groupchat {
        return Some(bounce(
            msg,
            stanza_error(
                ErrorType::Modify,
                Condition::BadRequest,
                Some("messages to a room are groupchat"),
            ),
        ));
    }
    let (Some(target), Some(user)) = (target_of(c2s, &to.to_bare()), user_of(c2s, full)) else {
        return Some(bounce(
            msg,
            stanza_error(ErrorType::Cancel, Condition::ItemNotFound, None),
        ));
    };
    let room_id = match resolve(c2s, &target).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Some(bounce(
                msg,
                stanza_error(ErrorType::Cancel, Condition::ItemNotFound, None),
            ));
        }
        Err(_) => {
            return Some(bounce(
                msg,
                stanza_error(ErrorType::Wait, Condition::InternalServerError, None),
            ));
        }
    };
    let core = &c2s.core;
    // §7.4: only occupants speak; here, the room's members.
    if core.rooms.membership(&room_id, &user).await.ok().flatten().as_deref() != Some("join") {
        return Some(bounce(
            msg,
            stanza_error(
                ErrorType::Modify,
                Condition::NotAcceptable,
                Some("you are not in this room"),
            ),
        ));
    }
    // What the stanza asks of the room: a message, an edit, reactions, a retraction, ...
    let templates = match convert::inbound(c2s, &room_id, &user, &msg, None).await {
        Ok(t) => t,
        Err(refusal) => return Some(bounce(msg, refusal.error())),
    };
    if templates.is_empty() {
        return None;
    }
    if core.limits.message.check(user.as_str()).is_err() {
        return Some(bounce(
            msg,
            stanza_error(
                ErrorType::Wait,
                Condition::ResourceConstraint,
                Some("too many messages; slow down"),
            ),
        ));
    }
    let origin = msg
        .payloads
        .iter()
        .find(|p| p.is("origin-id", NS_SID))
        .and_then(|p| p.attr("id"))
        .unwrap_or_default()
        .to_owned();
    let Ok(room) = ruma::RoomId::parse(&room_id) else {
        return None;
    };
    for template in templates {
        // A message keeps the client's ids, for its reflection and for later references.
        let txn = (template.kind == "m.room.message").then(|| {
            let id = msg.id.as_ref().map_or("", |i| i.0.as_str());
            (
                user.localpart().to_owned(),
                XMPP_DEVICE.to_owned(),
                pump::txn_id(full.resource().as_str(), id, &origin),
            )
        });
        let error = match core.rooms.send(&room, &user, template, txn).await {
            Ok(_) => continue,
            Err(CoreError::Forbidden(m)) => stanza_error(ErrorType::Auth, Condition::Forbidden, Some(&m)),
            Err(CoreError::NotFound(_)) => stanza_error(ErrorType::Cancel, Condition::ItemNotFound, None),
            Err(e) => {
                tracing::warn!(error = %e, "MUC message not stored");
                stanza_error(ErrorType::Wait, Condition::InternalServerError, None)
            }
        };
        return Some(bounce(msg, error));
    }
    None
}

/// §7.5: a private message to the occupant `nick`, from an occupant. It reaches the occupant's
/// sessions in the room, from the sender's occupant JID; a member with no session in the room
/// (on Matrix only, say) gets it as a 1:1 chat message from the sender's account instead, in
/// the DM room of the two.
async fn private_message(c2s: &C2s, full: &FullJid, msg: Message, nick: &str) -> Option<Message> {
    let refuse = |msg, type_, condition, text| Some(bounce(msg, stanza_error(type_, condition, text)));
    if msg.type_ == MessageType::Groupchat {
        return refuse(
            msg,
            ErrorType::Modify,
            Condition::BadRequest,
            Some("a groupchat message goes to the room, not to an occupant"),
        );
    }
    let room_jid = msg.to.as_ref().map(Jid::to_bare)?;
    let room_id = match target_of(c2s, &room_jid) {
        Some(t) => resolve(c2s, &t).await.ok().flatten(),
        None => None,
    };
    let Some(room_id) = room_id else {
        return refuse(msg, ErrorType::Cancel, Condition::ItemNotFound, Some("no such room"));
    };
    let Some(own_nick) = occupant_nick(c2s, full, &room_id).await else {
        return refuse(
            msg,
            ErrorType::Modify,
            Condition::NotAcceptable,
            Some("only occupants send private messages"),
        );
    };
    let members = c2s.core.rooms.members(&room_id).await.ok()?;
    let Some(target) = joined_with_nick(&members, nick, None).cloned() else {
        return refuse(
            msg,
            ErrorType::Cancel,
            Condition::ItemNotFound,
            Some("no occupant has that nick"),
        );
    };
    let Some(localpart) = c2s.core.local_localpart(&target) else {
        return refuse(
            msg,
            ErrorType::Cancel,
            Condition::FeatureNotImplemented,
            Some("private messages to members of other servers need federation"),
        );
    };
    let sessions = c2s.muc.occupant_sessions(localpart, &room_id);
    if sessions.is_empty() {
        let Ok(account) = BareJid::new(&crate::bare_jid(localpart, &c2s.domain)) else {
            return None;
        };
        let mut chat = msg;
        chat.to = Some(account.into());
        chat.type_ = MessageType::Chat;
        let bounced = crate::c2s::route_message(c2s, chat, full).await?;
        return Message::try_from(bounced).ok();
    }
    let Ok(from) = Jid::new(&format!("{room_jid}/{own_nick}")) else {
        return None;
    };
    let mut private = msg;
    private.from = Some(from);
    private.payloads.retain(|p| !p.is("x", NS_USER));
    private.payloads.push(Element::builder("x", NS_USER).build());
    for session in sessions {
        let mut m = private.clone();
        m.to = Some(session.clone().into());
        c2s.router.deliver(&session.into(), &m.into());
    }
    None
}

pub(crate) fn result(to_iq_of: &FullJid, from: Option<Jid>, id: String, payload: Option<Element>) -> Iq {
    Iq::Result {
        from,
        to: Some(to_iq_of.clone().into()),
        id,
        payload,
    }
}

async fn handle_iq(c2s: &C2s, full: &FullJid, iq: Iq) -> Option<Iq> {
    let (id, to, payload, get) = match iq {
        Iq::Get { id, to, payload, .. } => (id, to, payload, true),
        Iq::Set { id, to, payload, .. } => (id, to, payload, false),
        // Never answered (RFC 6120 §8.2.3).
        Iq::Result { .. } | Iq::Error { .. } => return None,
    };
    let to = to?;
    let me: Jid = full.clone().into();
    let error = |condition, type_| {
        Some(error_reply(
            id.clone(),
            Some(to.clone()),
            Some(me.clone()),
            type_,
            condition,
        ))
    };
    let disco_info = get && payload.is("query", ns::DISCO_INFO) && payload.attr("node").is_none();
    let disco_items = get && payload.is("query", ns::DISCO_ITEMS) && payload.attr("node").is_none();
    if to.node().is_none() {
        // The service itself.
        if disco_info {
            return Some(result(full, Some(to.clone()), id, Some(service_info().into())));
        }
        if disco_items {
            let items = public_rooms(c2s).await;
            return Some(result(full, Some(to.clone()), id, Some(items.into())));
        }
        return error(Condition::ServiceUnavailable, ErrorType::Cancel);
    }
    let room_id = match target_of(c2s, &to.to_bare()) {
        Some(t) => resolve(c2s, &t).await.ok().flatten(),
        None => None,
    };
    let Some(room_id) = room_id else {
        return error(Condition::ItemNotFound, ErrorType::Cancel);
    };
    if let Some(nick) = to.resource() {
        // XEP-0410: a client checks it is still in the room by pinging its own occupant JID.
        if get && payload.is("ping", ns::PING) {
            let own = c2s.muc.is_occupant(full, &room_id)
                && occupant_nick(c2s, full, &room_id).await.as_deref() == Some(nick.as_str());
            return if own {
                Some(result(full, Some(to.clone()), id, None))
            } else {
                error(Condition::NotAcceptable, ErrorType::Cancel)
            };
        }
        return error(Condition::ServiceUnavailable, ErrorType::Cancel);
    }
    if payload.is("query", crate::mam::NS_MAM) {
        // The results go the way the final IQ goes, so that they arrive before it.
        for el in crate::mam::room(c2s, full, &room_id, &to.to_bare(), id, &payload, get).await {
            c2s.router.deliver(&me, &el);
        }
        return None;
    }
    if !get && payload.is("moderate", NS_MODERATE) {
        // XEP-0425: a moderator retracts someone's message: a redaction with the reason.
        let Some(user) = user_of(c2s, full) else {
            return error(Condition::Forbidden, ErrorType::Auth);
        };
        let target = match payload.attr("id") {
            Some(id) => convert::event_for_id(c2s, &room_id, &[user.localpart()], id).await,
            None => None,
        };
        let (Some(target), Ok(room)) = (target, ruma::RoomId::parse(&room_id)) else {
            return error(Condition::ItemNotFound, ErrorType::Cancel);
        };
        let mut content = json!({});
        if let Some(reason) = payload.children().find(|c| c.name() == "reason").map(Element::text) {
            content["reason"] = json!(reason);
        }
        let template = EventTemplate {
            kind: "m.room.redaction".into(),
            state_key: None,
            content,
            redacts: ruma::EventId::parse(&target).ok(),
        };
        return match c2s.core.rooms.send(&room, &user, template, None).await {
            Ok(_) => Some(result(full, Some(to.clone()), id, None)),
            Err(CoreError::Forbidden(_)) => error(Condition::Forbidden, ErrorType::Auth),
            Err(_) => error(Condition::InternalServerError, ErrorType::Wait),
        };
    }
    if payload.is("query", admin::NS_ADMIN) || payload.is("query", admin::NS_OWNER) {
        return Some(admin::handle(c2s, full, &room_id, id, to, &payload, get).await);
    }
    if disco_info {
        return match room_info(c2s, &room_id).await {
            Ok(info) => Some(result(full, Some(to.clone()), id, Some(info.into()))),
            Err(_) => error(Condition::InternalServerError, ErrorType::Wait),
        };
    }
    if disco_items {
        // Occupants are not listed (Prosody does the same for non-occupants).
        let items = DiscoItemsResult {
            node: None,
            items: vec![],
            rsm: None,
        };
        return Some(result(full, Some(to.clone()), id, Some(items.into())));
    }
    error(Condition::FeatureNotImplemented, ErrorType::Cancel)
}

/// The nick of the session's account in the room, if it is a member.
async fn occupant_nick(c2s: &C2s, full: &FullJid, room_id: &str) -> Option<String> {
    let user = user_of(c2s, full)?;
    let members = c2s.core.rooms.members(room_id).await.ok()?;
    let (m, e) = members.get(user.as_str())?;
    (m == "join").then(|| event_nick(user.as_str(), e))
}

fn service_info() -> DiscoInfoResult {
    DiscoInfoResult {
        node: None,
        identities: vec![Identity {
            category: "conference".into(),
            type_: "text".into(),
            lang: None,
            name: Some("Chatrooms".into()),
        }],
        features: [ns::DISCO_INFO, ns::DISCO_ITEMS, NS_MUC, NS_OCCUPANT_ID, NS_SID]
            .iter()
            .map(|f| (*f).to_owned())
            .collect(),
        extensions: vec![],
    }
}

/// The rooms of the room directory, under their JIDs.
async fn public_rooms(c2s: &C2s) -> DiscoItemsResult {
    let mut items = vec![];
    for room in c2s.core.store.published_rooms().await.unwrap_or_default() {
        let Ok(state) = RoomState::read(&c2s.core, &room.room_id).await else {
            continue;
        };
        let node = jid::node_for(&room.room_id, state.alias.as_deref(), &c2s.core.config.server_name);
        if let Ok(jid) = Jid::new(&format!("{node}@{}", c2s.muc.domain)) {
            items.push(DiscoItem {
                jid,
                node: None,
                name: state.name.clone(),
            });
        }
    }
    DiscoItemsResult {
        node: None,
        items,
        rsm: None,
    }
}

/// The parts of a room's state XMPP shows.
#[derive(Debug, Default)]
pub(crate) struct RoomState {
    pub name: Option<String>,
    pub topic: Option<String>,
    pub alias: Option<String>,
    pub join_rule: String,
    pub encrypted: bool,
    pub joined: usize,
}

impl RoomState {
    pub(crate) async fn read(core: &Core, room_id: &str) -> Result<RoomState, CoreError> {
        let mut s = RoomState {
            join_rule: "invite".into(),
            ..RoomState::default()
        };
        for e in core.rooms.current_state(room_id).await? {
            let Ok(pdu) = Pdu::from_stored(&e) else {
                continue;
            };
            let c = pdu.content_value();
            let text = |k: &str| c[k].as_str().filter(|t| !t.is_empty()).map(str::to_owned);
            match e.kind.as_str() {
                "m.room.name" => s.name = text("name"),
                "m.room.topic" => s.topic = text("topic"),
                "m.room.canonical_alias" => s.alias = text("alias"),
                "m.room.join_rules" => s.join_rule = text("join_rule").unwrap_or_default(),
                "m.room.encryption" => s.encrypted = true,
                "m.room.member" if c["membership"] == "join" => s.joined += 1,
                _ => {}
            }
        }
        Ok(s)
    }
}

async fn room_info(c2s: &C2s, room_id: &str) -> Result<DiscoInfoResult, CoreError> {
    let state = RoomState::read(&c2s.core, room_id).await?;
    let published = c2s.core.rooms.room(room_id).await?.is_some_and(|r| r.published);
    let features = [
        ns::DISCO_INFO,
        NS_MUC,
        NS_OCCUPANT_ID,
        NS_SID,
        crate::mam::NS_MAM,
        crate::mam::NS_MAM_EXTENDED,
        NS_MODERATE,
        convert::NS_RETRACT,
        convert::NS_REACTIONS,
        convert::NS_CORRECT,
        convert::NS_REPLY,
        "muc_persistent",
        "muc_nonanonymous",
        "muc_unmoderated",
        "muc_unsecured",
        if published { "muc_public" } else { "muc_hidden" },
        if state.join_rule == "public" {
            "muc_open"
        } else {
            "muc_membersonly"
        },
    ];
    let mut form = xmpp_parsers::data_forms::DataForm::new(
        xmpp_parsers::data_forms::DataFormType::Result_,
        "http://jabber.org/protocol/muc#roominfo",
        vec![],
    );
    let field = |var: &str, value: String| {
        xmpp_parsers::data_forms::Field::new(var, xmpp_parsers::data_forms::FieldType::TextSingle).with_value(&value)
    };
    form.fields.push(field(
        "muc#roominfo_description",
        state.topic.clone().unwrap_or_default(),
    ));
    form.fields
        .push(field("muc#roominfo_subject", state.topic.clone().unwrap_or_default()));
    form.fields
        .push(field("muc#roominfo_occupants", state.joined.to_string()));
    Ok(DiscoInfoResult {
        node: None,
        identities: vec![Identity {
            category: "conference".into(),
            type_: "text".into(),
            lang: None,
            name: Some(state.name.unwrap_or_default()).filter(|n| !n.is_empty()),
        }],
        features: features.iter().map(|f| (*f).to_owned()).collect(),
        extensions: vec![form],
    })
}
