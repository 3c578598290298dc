//! 1:1 chats as DM rooms. A chat message between two local accounts is also an event of the
//! DM room of the two (found through either account's `m.direct`, or an `is_direct` invite;
//! created on the first message and marked in both accounts' `m.direct`), so a Matrix client
//! of either account sees the conversation, and the room is the XEP-0313 archive of it.
//!
//! From XMPP, c2s delivers the stanza itself (with its carbons and offline storage) and
//! [`record`] adds the event. From Matrix, the pump hands each event of a DM room to
//! [`outbound`], which sends it to the other account's XMPP sessions (a sent carbon to the
//! sender's). XMPP clients know a message by the id its sender's client gave it (kept as the
//! transaction ID), else by its event ID; the stanza-id is always the event ID.

use estuary_core::Locked;
use std::collections::HashMap;
use std::sync::Mutex;

use estuary_core::rooms::create::{CreateRoom, Preset};
use estuary_core::rooms::{EventTemplate, Pdu, Queued};
use estuary_core::{Core, CoreError, StoredEvent};
use serde_json::{Value, json};
use tokio_xmpp::minidom::Element;
use tokio_xmpp::minidom::rxml::xml_ncname;
use xmpp_parsers::jid::{BareJid, FullJid};
use xmpp_parsers::message::{Message, MessageType};
use xmpp_parsers::stanza_error::{DefinedCondition as Condition, ErrorType, StanzaError};

use crate::c2s::C2s;
use crate::muc::convert::{self, NS_CHAT_STATES, NS_MARKERS, NS_REACTIONS, NS_RETRACT};
use crate::muc::pump::{MESSAGE_KINDS, message_parts, txn_id};
use crate::muc::{NS_SID, XMPP_DEVICE};

/// Pairs remembered (see [`Direct::rooms`]).
const REMEMBERED: usize = 10_000;

/// The DM rooms found so far, and one creation at a time (so two first messages crossing
/// each other make one room).
#[derive(Default)]
pub struct Direct {
    /// (user, user) in order -> the DM room of the two; checked on each use.
    rooms: Mutex<HashMap<(String, String), String>>,
    creating: tokio::sync::Mutex<()>,
    /// What the other account's XMPP sessions were last told of a user in a DM room: whether
    /// it is typing, and the event it read last.
    told: Mutex<Told>,
}

#[derive(Default)]
struct Told {
    typing: HashMap<(String, String), bool>,
    read: HashMap<(String, String), String>,
}

/// Remember `value` under `key`; true when it is news.
fn news<V: PartialEq>(map: &mut HashMap<(String, String), V>, room_id: &str, user: &str, value: V) -> bool {
    let key = (room_id.to_owned(), user.to_owned());
    if map.get(&key) == Some(&value) {
        return false;
    }
    if map.len() >= REMEMBERED {
        map.clear();
    }
    map.insert(key, value);
    true
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

/// `<stanza-id/>` (XEP-0359) for a message archived as `event_id` in `by`'s archive.
pub fn stanza_id(event_id: &str, by: &BareJid) -> Element {
    Element::builder("stanza-id", NS_SID)
        .attr(xml_ncname!("id").to_owned(), event_id)
        .attr(xml_ncname!("by").to_owned(), by.to_string())
        .build()
}

/// The users (join or invite) of a room, if exactly two local accounts.
async fn two_members(core: &Core, room_id: &str) -> Option<[String; 2]> {
    let members = core.rooms.members(room_id).await.ok()?;
    let mut present = members
        .iter()
        .filter(|(_, (m, _))| m == "join" || m == "invite")
        .map(|(u, _)| u.clone());
    let (a, b) = (present.next()?, present.next()?);
    if present.next().is_some() || core.local_localpart(&a).is_none() || core.local_localpart(&b).is_none() {
        return None;
    }
    Some([a, b])
}

/// The rooms `user`'s `m.direct` lists for `other`.
async fn listed(core: &Core, user: &str, other: &str) -> Vec<String> {
    let Some(local) = core.local_localpart(user) else {
        return vec![];
    };
    let direct = core
        .account_data
        .get(local, None, "m.direct")
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    direct[other]
        .as_array()
        .map(|rooms| rooms.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The two accounts of a DM room: its only members, and either lists it in `m.direct` or was
/// invited to it as a DM.
pub(crate) async fn parties(core: &Core, room_id: &str) -> Option<[String; 2]> {
    let [a, b] = two_members(core, room_id).await?;
    if listed(core, &a, &b).await.iter().any(|r| r == room_id)
        || listed(core, &b, &a).await.iter().any(|r| r == room_id)
    {
        return Some([a, b]);
    }
    for user in [a.as_str(), b.as_str()] {
        let history = core
            .store
            .state_history(room_id, "m.room.member", user)
            .await
            .unwrap_or_default();
        if history
            .iter()
            .any(|(_, pdu)| serde_json::from_str::<Value>(pdu).is_ok_and(|p| p["content"]["is_direct"] == json!(true)))
        {
            return Some([a.clone(), b.clone()]);
        }
    }
    None
}

/// Add `room_id` to `user`'s `m.direct` under `other`.
async fn mark(core: &Core, user: &str, other: &str, room_id: &str) -> Result<(), CoreError> {
    let Some(local) = core.local_localpart(user) else {
        return Ok(());
    };
    let mut direct = core
        .account_data
        .get(local, None, "m.direct")
        .await?
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    let mut list: Vec<Value> = direct[other].as_array().cloned().unwrap_or_default();
    if list.iter().any(|r| r == room_id) {
        return Ok(());
    }
    list.push(json!(room_id));
    direct[other] = Value::Array(list);
    core.account_data.set(local, None, "m.direct", &direct).await
}

impl Direct {
    /// The peer is told that `user` is typing (or not) in the DM room; true when that is news.
    pub(crate) fn tell_typing(&self, room_id: &str, user: &str, typing: bool) -> bool {
        news(&mut self.told.locked().typing, room_id, user, typing)
    }

    /// The peer is told that `user` read up to `event_id`; true when that is news.
    pub(crate) fn tell_read(&self, room_id: &str, user: &str, event_id: &str) -> bool {
        news(&mut self.told.locked().read, room_id, user, event_id.to_owned())
    }

    /// The DM room of `me` and `peer`, if there is one: the one remembered, else the newest
    /// their `m.direct` lists, else one of `me`'s rooms that is a DM of the two.
    async fn find(&self, core: &Core, me: &str, peer: &str) -> Option<String> {
        let key = pair(me, peer);
        let is_ours = |members: Option<[String; 2]>| members.is_some_and(|m| pair(&m[0], &m[1]) == key);
        let remembered = self.rooms.locked().get(&key).cloned();
        if let Some(room) = remembered
            && is_ours(two_members(core, &room).await)
        {
            return Some(room);
        }
        let mut candidates = listed(core, me, peer).await;
        candidates.extend(listed(core, peer, me).await);
        let mut found = None;
        for room in candidates.iter().rev() {
            if is_ours(two_members(core, room).await) {
                found = Some(room.clone());
                break;
            }
        }
        if found.is_none() {
            let mut mine = core.rooms.memberships(me).await.unwrap_or_default();
            mine.retain(|m| m.membership == "join" || m.membership == "invite");
            mine.sort_by_key(|m| std::cmp::Reverse(m.stream_ordering));
            for m in mine {
                if is_ours(parties(core, &m.room_id).await) {
                    found = Some(m.room_id);
                    break;
                }
            }
        }
        let room = found?;
        let mut rooms = self.rooms.locked();
        if rooms.len() >= REMEMBERED {
            rooms.clear();
        }
        rooms.insert(key, room.clone());
        Some(room)
    }

    /// The DM room of `me` and `peer`, made if there is none (`me` invites `peer`; both mark it
    /// in `m.direct`), and joined by `me` if only invited. Encrypted when the first message is
    /// (an XMPP client that chose plaintext gets a room Matrix clients will write plaintext in).
    async fn room_for(&self, core: &Core, me: &ruma::UserId, peer: &str, encrypted: bool) -> Result<String, CoreError> {
        let room_id = match self.find(core, me.as_str(), peer).await {
            Some(r) => r,
            None => {
                let _one = self.creating.lock().await;
                match self.find(core, me.as_str(), peer).await {
                    Some(r) => r,
                    None => self.create(core, me, peer, encrypted).await?,
                }
            }
        };
        if core.rooms.membership(&room_id, me).await?.as_deref() == Some("invite") {
            // Answering an invitation to a DM accepts it.
            let account = core.accounts.find(me.localpart()).await?;
            let mut content = json!({ "membership": "join" });
            if let Some(a) = account {
                if let Some(n) = a.displayname {
                    content["displayname"] = json!(n);
                }
                if let Some(u) = a.avatar_url {
                    content["avatar_url"] = json!(u);
                }
            }
            let room = ruma::RoomId::parse(&room_id).map_err(|e| CoreError::Internal(e.to_string()))?;
            core.rooms
                .send(
                    &room,
                    me,
                    EventTemplate::state("m.room.member", me.as_str(), content),
                    None,
                )
                .await?;
            mark(core, me.as_str(), peer, &room_id).await?;
        }
        Ok(room_id)
    }

    async fn create(&self, core: &Core, me: &ruma::UserId, peer: &str, encrypted: bool) -> Result<String, CoreError> {
        let account = core.accounts.find(me.localpart()).await?;
        let peer_id = ruma::UserId::parse(peer).map_err(|e| CoreError::Internal(e.to_string()))?;
        let room = core
            .rooms
            .create_room(CreateRoom {
                creator: me.to_owned(),
                creator_profile: account.map(|a| (a.displayname, a.avatar_url)).unwrap_or_default(),
                room_version: None,
                preset: Preset::TrustedPrivateChat,
                name: None,
                topic: None,
                invite: vec![peer_id],
                is_direct: true,
                initial_state: vec![],
                alias: None,
                power_level_content_override: None,
                creation_content: None,
                publish: false,
                encrypt: encrypted && core.config.matrix.encrypt_private_rooms,
            })
            .await?
            .to_string();
        mark(core, me.as_str(), peer, &room).await?;
        mark(core, peer, me.as_str(), &room).await?;
        let mut rooms = self.rooms.locked();
        rooms.insert(pair(me.as_str(), peer), room.clone());
        Ok(room)
    }
}

fn internal(e: CoreError) -> StanzaError {
    tracing::warn!(error = %e, "a chat message could not be kept in its DM room");
    StanzaError::new(
        ErrorType::Wait,
        Condition::InternalServerError,
        "en",
        "the message could not be kept",
    )
}

/// The events a chat message became in its DM room, queued (see `Rooms::send_queued`).
#[derive(Default)]
pub(crate) struct Recorded {
    /// The message event's ID, if it became one.
    message: Option<String>,
    queued: Vec<Queued>,
}

impl Recorded {
    /// Once its events are committed: the message event's ID, if it became one.
    pub(crate) async fn committed(self) -> Result<Option<String>, StanzaError> {
        for q in self.queued {
            q.committed().await.map_err(internal)?;
        }
        Ok(self.message)
    }
}

/// A chat message from `sender` to the local account `to_node`, kept in the DM room of the
/// two: its events queued, with the message event's ID when it became one; none when the
/// room keeps nothing of it (a receipt, a chat state, a message to oneself, a message for an
/// account that does not exist). Err: the message must bounce with that error.
pub(crate) async fn record(c2s: &C2s, sender: &FullJid, to_node: &str, msg: &Message) -> Result<Recorded, StanzaError> {
    let core = &c2s.core;
    if !matches!(msg.type_, MessageType::Chat | MessageType::Normal) {
        return Ok(Recorded::default());
    }
    let Some(me) = sender
        .node()
        .and_then(|n| ruma::UserId::parse(core.matrix_user_id(n.as_str())).ok())
    else {
        return Ok(Recorded::default());
    };
    let peer = core.matrix_user_id(to_node);
    if peer == me.as_str() {
        return Ok(Recorded::default());
    }
    let omemo = msg.payloads.iter().any(convert::is_omemo);
    let kept = !msg.bodies.is_empty()
        || omemo
        || msg
            .payloads
            .iter()
            .any(|p| p.is("retract", NS_RETRACT) || p.is("reactions", NS_REACTIONS));
    let ephemeral = msg
        .payloads
        .iter()
        .any(|p| p.ns() == NS_CHAT_STATES || p.is("displayed", NS_MARKERS));
    if !kept && !ephemeral {
        return Ok(Recorded::default());
    }
    let room_id = if kept {
        match core.accounts.find(to_node).await {
            Ok(Some(a)) if a.is_active() => {}
            Ok(_) => return Ok(Recorded::default()),
            Err(e) => return Err(internal(e)),
        }
        c2s.direct.room_for(core, &me, &peer, omemo).await.map_err(internal)?
    } else {
        // A chat state or a marker alone: typing or a receipt in the room if there is one,
        // and nothing is made for it.
        match c2s.direct.find(core, me.as_str(), &peer).await {
            Some(r) => r,
            None => return Ok(Recorded::default()),
        }
    };
    let templates = match convert::inbound(c2s, &room_id, &me, msg, Some(to_node)).await {
        Ok(t) => t,
        Err(refusal) => {
            // A reference the room cannot resolve (a message from before the room, say): the
            // stanza still goes to the peer's XMPP sessions, as XMPP would have it.
            tracing::debug!(?refusal, "a chat message's reference is not in its DM room");
            return Ok(Recorded::default());
        }
    };
    let room = ruma::RoomId::parse(&room_id).map_err(|e| internal(CoreError::Internal(e.to_string())))?;
    let id = msg.id.as_ref().map_or("", |i| i.0.as_str());
    let origin = msg
        .payloads
        .iter()
        .find(|p| p.is("origin-id", NS_SID))
        .and_then(|p| p.attr("id"))
        .unwrap_or_default();
    let mut recorded = Recorded::default();
    for template in templates {
        // Every event keeps the client's ids: the pump knows by them not to send it again,
        // and a message is known by them later. Reactions and redactions get a unique one.
        let is_message = template.kind == "m.room.message";
        let txn = (
            me.localpart().to_owned(),
            XMPP_DEVICE.to_owned(),
            txn_id(sender.resource().as_str(), id, if is_message { origin } else { "" }),
        );
        // XMPP carries larger messages than a Matrix event holds: the room gets the start.
        // (JSON escapes at most sextuple a string, so short ones need no measuring.)
        let raw = |key: &str| template.content[key].as_str().map_or(0, str::len);
        let template = if is_message
            && raw("body") + raw(convert::OMEMO_KEY) > ROOMY_CONTENT / 6
            && template.content.to_string().len() > ROOMY_CONTENT
        {
            shrunk(template)
        } else {
            template
        };
        match core.rooms.send_queued(&room, &me, template, Some(txn)).await {
            Ok(queued) => {
                if is_message {
                    recorded.message = Some(queued.event_id.to_string());
                }
                recorded.queued.push(queued);
            }
            Err(CoreError::Forbidden(m)) => {
                return Err(StanzaError::new(ErrorType::Auth, Condition::Forbidden, "en", m));
            }
            Err(e) => return Err(internal(e)),
        }
    }
    Ok(recorded)
}

/// Content this large (in bytes of JSON) leaves room in an event (64 KiB) for the rest of it.
const ROOMY_CONTENT: usize = 60_000;
/// Bytes of a message's body kept when the whole is too large for an event.
const SHRUNK_BODY: usize = 30_000;

/// A message event too large for the room, cut to fit: the start of its body and a note.
fn shrunk(template: EventTemplate) -> EventTemplate {
    let content = &template.content;
    let body = content["body"].as_str().unwrap_or_default();
    let mut end = body.len().min(SHRUNK_BODY);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    let mut new = json!({
        "msgtype": content["msgtype"].as_str().unwrap_or("m.text"),
        "body": format!("{}\n[The rest of this message, sent over XMPP, is too large for a Matrix event.]", &body[..end]),
    });
    if content["m.relates_to"]["m.in_reply_to"].is_object() {
        new["m.relates_to"] = content["m.relates_to"].clone();
    }
    EventTemplate::message(&template.kind, new)
}

/// `user`'s DM rooms (with `with` only, when given) and their two accounts.
pub(crate) async fn rooms_of(
    core: &Core,
    user: &str,
    with: Option<&str>,
) -> Result<Vec<(String, [String; 2])>, CoreError> {
    let mut out = vec![];
    for m in core.rooms.memberships(user).await? {
        if m.membership != "join" && m.membership != "invite" {
            continue;
        }
        if let Some(parties) = parties(core, &m.room_id).await
            && with.is_none_or(|w| parties.iter().any(|p| p == w) && w != user)
        {
            out.push((m.room_id, parties));
        }
    }
    Ok(out)
}

/// A DM message as archived (XEP-0313): from the session that sent it, under the id its
/// client gave it, when an XMPP session did.
pub(crate) async fn archived(c2s: &C2s, e: &StoredEvent, parties: &[String; 2]) -> Option<Message> {
    let core = &c2s.core;
    let other = parties.iter().find(|u| **u != e.sender)?;
    let (from, to) = jids(c2s, &e.sender, other)?;
    let mut m = chat_message(core, e, &from, &to).await?;
    if let Some((resource, id, origin)) = xmpp_ids(core, &e.event_id, &e.sender).await {
        if let Ok(full) = from.with_resource_str(&resource) {
            m.from = Some(full.into());
        }
        if !id.is_empty() {
            m.id = Some(xmpp_parsers::message::Id(id));
        }
        if !origin.is_empty() {
            m.payloads.push(
                Element::builder("origin-id", NS_SID)
                    .attr(xml_ncname!("id").to_owned(), origin)
                    .build(),
            );
        }
    }
    Some(m)
}

/// The (resource, id, origin-id) an XMPP session sent an event under, if one did.
pub(crate) async fn xmpp_ids(core: &Core, event_id: &str, sender: &str) -> Option<(String, String, String)> {
    if let Some(ids) = crate::muc::pump::sent_by_xmpp(core, event_id, sender) {
        return Some(ids);
    }
    let (device, txn) = core.store.event_txn(event_id).await.ok().flatten()?;
    if device != XMPP_DEVICE {
        return None;
    }
    crate::muc::pump::txn_parts(&txn)
}

/// The id both accounts' XMPP clients know a DM event by.
async fn known_id(core: &Core, event_id: &str) -> String {
    let sender = match core.rooms.event(event_id).await {
        Ok(Some(e)) => e.sender,
        _ => return event_id.to_owned(),
    };
    match xmpp_ids(core, event_id, &sender).await {
        Some((_, id, _)) if !id.is_empty() => id,
        _ => event_id.to_owned(),
    }
}

/// The ids a message event names (what it edits, what it answers), each with the id the XMPP
/// clients know it by.
async fn known_ids(core: &Core, e: &StoredEvent) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let Ok(pdu) = Pdu::from_stored(e) else { return out };
    let content = pdu.content_value();
    let relates = &content["m.relates_to"];
    for id in [
        relates["event_id"].as_str(),
        relates["m.in_reply_to"]["event_id"].as_str(),
    ]
    .into_iter()
    .flatten()
    {
        out.insert(id.to_owned(), known_id(core, id).await);
    }
    out
}

/// A DM event as the chat message XMPP clients see; None for what has no message form.
pub(crate) async fn chat_message(core: &Core, e: &StoredEvent, from: &BareJid, to: &BareJid) -> Option<Message> {
    let mut m = Message::new(Some(to.clone().into()));
    m.from = Some(from.clone().into());
    m.type_ = MessageType::Chat;
    match e.kind.as_str() {
        "m.reaction" => {
            // XEP-0444: the sender's whole set of reactions to the message.
            let pdu = Pdu::from_stored(e).ok()?;
            let target = pdu.content_value()["m.relates_to"]["event_id"].as_str()?.to_owned();
            m.payloads.push(reactions(core, &target, &e.sender, None).await);
            m.payloads.push(Element::builder("store", "urn:xmpp:hints").build());
        }
        "m.room.redaction" => {
            let target_id = Pdu::from_stored(e).ok()?.redacts?.to_string();
            let target_id = target_id.as_str();
            let target = core.rooms.event(target_id).await.ok().flatten()?;
            if target.kind == "m.reaction" {
                let original: Value = serde_json::from_str(&target.pdu).unwrap_or_default();
                let reacted_to = original["content"]["m.relates_to"]["event_id"].as_str()?;
                m.payloads
                    .push(reactions(core, reacted_to, &target.sender, Some(target_id)).await);
            } else if MESSAGE_KINDS.contains(&target.kind.as_str()) {
                m.payloads.push(
                    Element::builder("retract", NS_RETRACT)
                        .attr(xml_ncname!("id").to_owned(), known_id(core, target_id).await)
                        .build(),
                );
                m = m.with_body(Default::default(), "This message was retracted.".into());
            } else {
                return None;
            }
            m.payloads.push(Element::builder("store", "urn:xmpp:hints").build());
        }
        _ => {
            let known = known_ids(core, e).await;
            let (body, extra) = message_parts(e, &|id| known.get(id).cloned().unwrap_or_else(|| id.to_owned()))?;
            m = m.with_body(Default::default(), body);
            m.payloads.extend(extra);
        }
    }
    m.id = Some(xmpp_parsers::message::Id(e.event_id.clone()));
    Some(m)
}

/// `<reactions/>` with `user`'s live reactions to `target` (but `removed`, being redacted).
async fn reactions(core: &Core, target: &str, user: &str, removed: Option<&str>) -> Element {
    convert::reactions_element(core, target, user, removed, &known_id(core, target).await).await
}

/// An event of the DM room of `parties`, sent from Matrix: to the other account's XMPP
/// sessions, with a sent carbon to the sender's. Sessions that are not online then catch up
/// from the archive (XEP-0313), which is the room.
pub(crate) async fn outbound(c2s: &C2s, e: &StoredEvent, parties: &[String; 2]) {
    let core = &c2s.core;
    let Some(other) = parties.iter().find(|u| **u != e.sender) else {
        return;
    };
    let Some((from, to)) = jids(c2s, &e.sender, other) else {
        return;
    };
    if !parties.contains(&e.sender) || (!c2s.router.has_sessions(&to) && !c2s.router.has_sessions(&from)) {
        return;
    }
    if xmpp_ids(core, &e.event_id, &e.sender).await.is_some() {
        // Sent by an XMPP session: c2s delivered it.
        return;
    }
    let to_local = to.node().map(|n| n.to_string()).unwrap_or_default();
    if crate::blocking::blocks(c2s, &to_local, &from.clone().into()).await {
        return;
    }
    let Some(mut m) = chat_message(core, e, &from, &to).await else {
        return;
    };
    let carbon = m.clone();
    m.payloads.push(stanza_id(&e.event_id, &to));
    let reached = c2s
        .router
        .deliver_message(&to.clone().into(), &m.into(), &MessageType::Chat, None);
    crate::carbons::copy(c2s, &carbon, &from, None, &reached);
}

/// The two accounts of a DM room and who of them is typing: a XEP-0085 chat state to the other
/// account's XMPP sessions for each change they were not told of.
pub(crate) fn typing(c2s: &C2s, room_id: &str, parties: &[String; 2], typing: &[String]) {
    for (user, other) in [(&parties[0], &parties[1]), (&parties[1], &parties[0])] {
        let now = typing.contains(user);
        if !c2s.direct.tell_typing(room_id, user, now) {
            continue;
        }
        let state = if now { "composing" } else { "active" };
        let Some((from, to)) = jids(c2s, user, other) else {
            continue;
        };
        let mut m = Message::new(Some(to.clone().into()));
        m.from = Some(from.into());
        m.type_ = MessageType::Chat;
        m.payloads.push(Element::builder(state, NS_CHAT_STATES).build());
        c2s.router
            .deliver_message(&to.into(), &m.into(), &MessageType::Chat, None);
    }
}

/// A read receipt in a DM room: a XEP-0333 displayed marker to the other account's XMPP
/// sessions, if they were not told already.
pub(crate) async fn read(c2s: &C2s, room_id: &str, parties: &[String; 2], user: &str, event_id: &str) {
    let Some(other) = parties.iter().find(|u| *u != user) else {
        return;
    };
    if !parties.iter().any(|u| u == user) || !c2s.direct.tell_read(room_id, user, event_id) {
        return;
    }
    let Some((from, to)) = jids(c2s, user, other) else {
        return;
    };
    if !c2s.router.has_sessions(&to) {
        return;
    }
    let mut m = Message::new(Some(to.clone().into()));
    m.from = Some(from.into());
    m.type_ = MessageType::Chat;
    m.payloads.push(
        Element::builder("displayed", NS_MARKERS)
            .attr(xml_ncname!("id").to_owned(), known_id(&c2s.core, event_id).await)
            .build(),
    );
    c2s.router
        .deliver_message(&to.into(), &m.into(), &MessageType::Chat, None);
}

/// The bare JIDs of two local users.
fn jids(c2s: &C2s, a: &str, b: &str) -> Option<(BareJid, BareJid)> {
    let jid = |user: &str| BareJid::new(&crate::bare_jid(c2s.core.local_localpart(user)?, &c2s.domain)).ok();
    Some((jid(a)?, jid(b)?))
}
