//! The MUC pump: one task that follows the room event stream and turns the events of rooms
//! with occupant sessions into XEP-0045 stanzas, and that serves joins and leaves in the same
//! order, so that a joining session gets the room's presences and history up to a position and
//! every event after it live, nothing twice and nothing missed.

use estuary_core::Locked;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

use estuary_core::Core;
use estuary_core::StoredEvent;
use estuary_core::rooms::Pdu;
use serde_json::Value;
use sha2::Digest;
use tokio::sync::mpsc;
use tokio_xmpp::minidom::rxml::xml_ncname;
use tokio_xmpp::minidom::{Element, ElementBuilder};
use xmpp_parsers::jid::{BareJid, FullJid};
use xmpp_parsers::muc::muc::History;
use xmpp_parsers::ns;

use super::{NS_MODERATE, NS_OCCUPANT_ID, NS_SID, NS_USER, XMPP_DEVICE, member_nick};
use crate::c2s::C2s;

/// A Matrix invite (member event `e`) as a XEP-0249 direct invitation to `to`, from the
/// inviter; None for what is not one (a DM's invitation is its messages, see `direct`) or an
/// inviter of another server.
pub(crate) async fn invitation(c2s: &C2s, e: &StoredEvent, to: &xmpp_parsers::jid::Jid) -> Option<Element> {
    let content = Pdu::from_stored(e).ok()?.content_value();
    if content["membership"] != "invite" || content["is_direct"] == Value::Bool(true) {
        return None;
    }
    let core = &c2s.core;
    let local = core.local_localpart(&e.sender)?;
    let from = crate::bare_jid(local, &c2s.domain);
    let alias = super::RoomState::read(core, &e.room_id)
        .await
        .ok()
        .and_then(|s| s.alias);
    let node = super::jid::node_for(&e.room_id, alias.as_deref(), &core.config.server_name);
    let room = format!("{node}@{}", c2s.muc.domain);
    let mut x = Element::builder("x", "jabber:x:conference").attr(xml_ncname!("jid").to_owned(), room.as_str());
    if let Some(reason) = content["reason"].as_str() {
        x = x.attr(xml_ncname!("reason").to_owned(), reason);
    }
    Some(
        Element::builder("message", ns::JABBER_CLIENT)
            .attr(xml_ncname!("from").to_owned(), from.as_str())
            .attr(xml_ncname!("to").to_owned(), to.to_string())
            .attr(xml_ncname!("id").to_owned(), e.event_id.as_str())
            .append(
                Element::builder("body", ns::JABBER_CLIENT)
                    .append(format!("{from} invites you to the room {room}"))
                    .build(),
            )
            .append(x.build())
            .build(),
    )
}

/// Reactions remembered per room (see `Room::reacted`).
const REMEMBERED_REACTIONS: usize = 10_000;
/// Rooms whose DM-ness is remembered.
const REMEMBERED_ROOMS: usize = 10_000;
/// Events read from the store at a time.
const BATCH: i64 = 256;
/// History sent on join when the client does not say (Prosody sends 20).
const DEFAULT_HISTORY: usize = 20;
/// Most history sent on join, whatever the client asks: older messages are in the archive.
const MAX_HISTORY: usize = 100;

/// What an XMPP client sees of a Megolm message: the server cannot read it.
pub const ENCRYPTED_NOTICE: &str =
    "[This message is end-to-end encrypted for Matrix clients and cannot be shown here.]";

pub(crate) enum Command {
    /// A session joins (or joins again). Served once the pump has seen position `after` (the
    /// member event that made the account a member, if any).
    Join {
        room_id: String,
        full: FullJid,
        room_jid: BareJid,
        history: Option<History>,
        created: bool,
        after: i64,
    },
    /// A session leaves the room.
    Part {
        room_id: String,
        full: FullJid,
        room_jid: BareJid,
        /// The nick the client named (used if the account is not a member).
        nick: String,
    },
    /// A session ended: it leaves every room without a word (its account stays in them).
    Gone { full: FullJid },
}

impl Command {
    fn after(&self) -> i64 {
        match self {
            Command::Join { after, .. } => *after,
            _ => 0,
        }
    }
}

/// The transaction ID an XMPP session's room event is kept under: resource, stanza id and
/// origin-id. Without an origin-id a random part makes it unique, since clients may reuse ids.
pub(crate) fn txn_id(resource: &str, id: &str, origin: &str) -> String {
    if origin.is_empty() {
        let nonce = estuary_core::random::string(12, estuary_core::random::BASE62).unwrap_or_default();
        format!("{resource}\n{id}\n\n{nonce}")
    } else {
        format!("{resource}\n{id}\n{origin}")
    }
}

/// The (resource, id, origin-id) of an event an XMPP session sent, if one did (recently).
pub(crate) fn sent_by_xmpp(core: &Core, event_id: &str, sender: &str) -> Option<(String, String, String)> {
    let localpart = sender.strip_prefix('@')?.split(':').next()?;
    txn_parts(&core.rooms.txn_of(event_id, localpart, XMPP_DEVICE)?)
}

/// The (resource, id, origin-id) a transaction ID made by [`txn_id`] holds.
pub(crate) fn txn_parts(txn: &str) -> Option<(String, String, String)> {
    let mut parts = txn.split('\n');
    Some((
        parts.next()?.to_owned(),
        parts.next()?.to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    ))
}

struct Occupant {
    full: FullJid,
    user: String,
    /// The JID the session joined under (a room may have two).
    room_jid: BareJid,
}

/// A room with occupant sessions, as the pump knows it.
struct Room {
    /// Joined members: user ID -> nick.
    members: HashMap<String, String>,
    /// The power levels' content.
    levels: Value,
    occupants: Vec<Occupant>,
    /// Reactions seen while the room had occupants: reaction event -> the event reacted to (a
    /// redaction empties the stored reaction, and XMPP needs the set of the reacted message).
    reacted: HashMap<String, String>,
    /// Members typing, as the occupants were last told.
    typing: HashSet<String>,
}

impl Room {
    /// A nick for `user` from its member event's content, unique in the room: a display name
    /// another member already shows gets the user ID added.
    fn nick_for(&self, user: &str, content: &Value) -> String {
        let base = member_nick(user, content);
        if self.members.iter().any(|(u, n)| u != user && *n == base) {
            format!("{base} ({user})")
        } else {
            base
        }
    }

    /// XEP-0045 affiliation and role of a member (see [`super::standing`]).
    fn standing(&self, user: &str) -> (&'static str, &'static str) {
        super::standing(&self.levels, user)
    }
}

struct Pump {
    core: Arc<Core>,
    rooms: HashMap<String, Room>,
    /// Every event up to here has been looked at.
    examined: i64,
    occupied: Arc<Mutex<HashMap<FullJid, HashSet<String>>>>,
    xmpp_domain: String,
    server_name: String,
    /// Rooms seen since the pump last skipped events: the two accounts of a DM room, None
    /// for other rooms (forgotten on a member event).
    dms: HashMap<String, Option<[String; 2]>>,
    /// Typing and receipt changes up to here have been looked at.
    typing_seen: i64,
    receipts_seen: i64,
}

pub(crate) async fn run(
    core: Arc<Core>,
    c2s: Weak<C2s>,
    mut rx: mpsc::UnboundedReceiver<Command>,
    occupied: Arc<Mutex<HashMap<FullJid, HashSet<String>>>>,
) {
    let mut positions = core.streams.subscribe();
    let now = core.streams.current();
    let mut pump = Pump {
        typing_seen: now.typing,
        receipts_seen: now.receipts,
        examined: core.rooms.current_position(),
        rooms: HashMap::new(),
        dms: HashMap::new(),
        occupied,
        xmpp_domain: core.config.xmpp.domain.clone(),
        server_name: core.config.server_name.clone(),
        core,
    };
    let mut waiting: Vec<Command> = vec![];
    loop {
        let Some(c2s) = c2s.upgrade() else {
            // Not built yet (the pump starts while C2s is being made), or gone with the server.
            if rx.is_closed() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        pump.catch_up(&c2s).await;
        pump.ephemeral(&c2s).await;
        let (ready, later): (Vec<_>, Vec<_>) = waiting.into_iter().partition(|c| c.after() <= pump.examined);
        waiting = later;
        for command in ready {
            pump.command(&c2s, command).await;
        }
        drop(c2s);
        tokio::select! {
            command = rx.recv() => match command {
                Some(c) => waiting.push(c),
                None => return,
            },
            changed = positions.changed() => if changed.is_err() { return },
        }
    }
}

impl Pump {
    async fn catch_up(&mut self, c2s: &C2s) {
        loop {
            let current = self.core.rooms.current_position();
            if self.examined >= current {
                return;
            }
            if self.rooms.is_empty() && c2s.router.is_empty() {
                // Nobody to tell (of room events, of DMs, nor of invitations).
                self.examined = current;
                self.dms.clear();
                return;
            }
            match self
                .core
                .store
                .events_between(self.examined, current, BATCH, None)
                .await
            {
                Ok(events) if events.is_empty() => self.examined = current,
                Ok(events) => {
                    for e in events {
                        self.examined = e.stream_ordering;
                        self.event(c2s, &e).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "MUC: reading room events failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }

    fn real_jid(&self, user: &str) -> Option<String> {
        Some(crate::bare_jid(self.core.local_localpart(user)?, &self.xmpp_domain))
    }

    /// The presence of `user`'s occupant, as `to` sees it.
    #[allow(clippy::too_many_arguments)]
    fn presence(
        &self,
        room_id: &str,
        room: &Room,
        to: &Occupant,
        user: &str,
        nick: &str,
        unavailable: bool,
        statuses: &[u16],
        new_nick: Option<&str>,
    ) -> Element {
        let (affiliation, role) = if unavailable && new_nick.is_none() {
            (room.standing(user).0, "none")
        } else {
            room.standing(user)
        };
        let mut item = Element::builder("item", NS_USER)
            .attr(xml_ncname!("affiliation").to_owned(), affiliation)
            .attr(xml_ncname!("role").to_owned(), role);
        if let Some(jid) = self.real_jid(user) {
            item = item.attr(xml_ncname!("jid").to_owned(), jid);
        }
        if let Some(n) = new_nick {
            item = item.attr(xml_ncname!("nick").to_owned(), n);
        }
        let mut x = Element::builder("x", NS_USER).append(item.build());
        let own = to.user == user;
        for code in own.then_some(110).iter().chain(statuses) {
            x = x.append(
                Element::builder("status", NS_USER)
                    .attr(xml_ncname!("code").to_owned(), code.to_string())
                    .build(),
            );
        }
        let mut p = Element::builder("presence", ns::JABBER_CLIENT)
            .attr(xml_ncname!("from").to_owned(), occupant_jid(&to.room_jid, nick))
            .attr(xml_ncname!("to").to_owned(), to.full.to_string());
        if unavailable {
            p = p.attr(xml_ncname!("type").to_owned(), "unavailable");
        }
        p.append(x.build())
            .append(
                Element::builder("occupant-id", NS_OCCUPANT_ID)
                    .attr(xml_ncname!("id").to_owned(), occupant_id(room_id, user))
                    .build(),
            )
            .build()
    }

    /// A room event as a groupchat message to `to`; None for what has no message form.
    fn message(&self, room_id: &str, room: &Room, to: &Occupant, e: &StoredEvent, shown: Shown) -> Option<Element> {
        let nick = room
            .members
            .get(&e.sender)
            .cloned()
            .unwrap_or_else(|| member_nick(&e.sender, &Value::Null));
        groupchat(&self.core, room_id, &to.room_jid, &to.full, &nick, e, shown)
    }

    fn deliver(c2s: &C2s, to: &Occupant, el: Element) {
        c2s.router.deliver(&to.full.clone().into(), &el);
    }

    /// One event from the stream.
    async fn event(&mut self, c2s: &C2s, e: &StoredEvent) {
        if e.kind == "m.room.member" {
            self.dms.remove(&e.room_id);
            self.invitation(c2s, e).await;
        } else if MESSAGE_KINDS.contains(&e.kind.as_str()) || e.kind == "m.reaction" || e.kind == "m.room.redaction" {
            self.direct(c2s, e).await;
        }
        let Some(mut room) = self.rooms.remove(&e.room_id) else {
            return;
        };
        match e.kind.as_str() {
            "m.room.member" => self.member(c2s, &e.room_id, &mut room, e),
            "m.room.power_levels" => {
                let before: Vec<_> = room.members.keys().map(|u| (u.clone(), room.standing(u))).collect();
                if let Ok(pdu) = Pdu::from_stored(e) {
                    room.levels = pdu.content_value();
                }
                for (user, standing) in before {
                    if room.standing(&user) != standing {
                        let nick = room.members[&user].clone();
                        for o in &room.occupants {
                            let p = self.presence(&e.room_id, &room, o, &user, &nick, false, &[], None);
                            Self::deliver(c2s, o, p);
                        }
                    }
                }
            }
            "m.room.topic" if e.state_key.as_deref() == Some("") => {
                let topic = Pdu::from_stored(e)
                    .ok()
                    .and_then(|p| p.content_value()["topic"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                let nick = room.members.get(&e.sender).cloned();
                for o in &room.occupants {
                    Self::deliver(c2s, o, subject(o, nick.as_deref(), &topic));
                }
            }
            "m.reaction" => {
                if let Some(target) = Pdu::from_stored(e).ok().and_then(|p| {
                    p.content_value()["m.relates_to"]["event_id"]
                        .as_str()
                        .map(str::to_owned)
                }) {
                    if room.reacted.len() >= REMEMBERED_REACTIONS {
                        room.reacted.clear();
                    }
                    room.reacted.insert(e.event_id.clone(), target.clone());
                    self.reactions(c2s, &e.room_id, &room, e, &target, None).await;
                }
            }
            "m.room.redaction" => self.redaction(c2s, &e.room_id, &room, e).await,
            _ => {
                for o in &room.occupants {
                    if let Some(m) = self.message(&e.room_id, &room, o, e, Shown::Live) {
                        Self::deliver(c2s, o, m);
                    }
                }
            }
        }
        if !room.occupants.is_empty() {
            self.rooms.insert(e.room_id.clone(), room);
        }
    }

    /// The two accounts of a DM room; None for other rooms.
    async fn parties(&mut self, room_id: &str) -> Option<[String; 2]> {
        if let Some(p) = self.dms.get(room_id) {
            return p.clone();
        }
        let p = crate::direct::parties(&self.core, room_id).await;
        if self.dms.len() >= REMEMBERED_ROOMS {
            self.dms.clear();
        }
        self.dms.insert(room_id.to_owned(), p.clone());
        p
    }

    /// An event of a DM room: to XMPP as a chat message.
    async fn direct(&mut self, c2s: &C2s, e: &StoredEvent) {
        if let Some(p) = self.parties(&e.room_id).await {
            crate::direct::outbound(c2s, e, &p).await;
        }
    }

    /// Typing and read receipts since last time: XEP-0085 chat states and XEP-0333 displayed
    /// markers, in rooms with occupants and in DM rooms.
    async fn ephemeral(&mut self, c2s: &C2s) {
        let now = self.core.streams.current();
        if c2s.router.is_empty() {
            (self.typing_seen, self.receipts_seen) = (now.typing, now.receipts);
            return;
        }
        if now.typing != self.typing_seen {
            for (room_id, typing) in self.core.typing.rooms_changed_since(self.typing_seen) {
                self.typing(c2s, &room_id, &typing).await;
            }
            self.typing_seen = now.typing;
        }
        while self.receipts_seen < now.receipts {
            let Ok(receipts) = self.core.store.receipts_after(self.receipts_seen, BATCH).await else {
                return;
            };
            let Some(last) = receipts.last() else {
                self.receipts_seen = now.receipts;
                break;
            };
            self.receipts_seen = last.stream_id;
            // Private receipts stay private.
            for r in receipts.iter().filter(|r| r.receipt_type == "m.read") {
                self.read(c2s, &r.room_id, &r.user_id, &r.event_id).await;
            }
        }
    }

    async fn typing(&mut self, c2s: &C2s, room_id: &str, typing: &[String]) {
        if let Some(room) = self.rooms.get_mut(room_id) {
            let changed: Vec<String> = room
                .members
                .keys()
                .filter(|u| room.typing.contains(*u) != typing.contains(*u))
                .cloned()
                .collect();
            room.typing = typing.iter().cloned().collect();
            for user in changed {
                let state = if typing.contains(&user) { "composing" } else { "active" };
                let nick = room.members[&user].clone();
                for o in &room.occupants {
                    let m = occupant_message(room_id, o, &nick, &user)
                        .append(Element::builder(state, super::convert::NS_CHAT_STATES).build())
                        .append(Element::builder("no-store", "urn:xmpp:hints").build())
                        .build();
                    Self::deliver(c2s, o, m);
                }
            }
        } else if let Some(parties) = self.parties(room_id).await {
            crate::direct::typing(c2s, room_id, &parties, typing);
        }
    }

    async fn read(&mut self, c2s: &C2s, room_id: &str, user: &str, event_id: &str) {
        if let Some(room) = self.rooms.get(room_id) {
            let Some(nick) = room.members.get(user) else { return };
            for o in &room.occupants {
                let m = occupant_message(room_id, o, nick, user)
                    .append(
                        Element::builder("displayed", super::convert::NS_MARKERS)
                            .attr(xml_ncname!("id").to_owned(), event_id)
                            .build(),
                    )
                    .build();
                Self::deliver(c2s, o, m);
            }
        } else if let Some(parties) = self.parties(room_id).await {
            crate::direct::read(c2s, room_id, &parties, user, event_id).await;
        }
    }

    /// A Matrix invite of a local account with XMPP sessions online: a XEP-0249 direct
    /// invitation to the room's JID, from the inviter. (One with none gets it when a session
    /// next comes online: `muc::pending_invitations`.)
    async fn invitation(&self, c2s: &C2s, e: &StoredEvent) {
        let Some(to) = e.state_key.as_deref().and_then(|i| self.real_jid(i)) else {
            return;
        };
        let Ok(to) = xmpp_parsers::jid::Jid::new(&to) else {
            return;
        };
        if !c2s.router.has_sessions(&to.to_bare()) {
            return;
        }
        if let Some(m) = invitation(c2s, e, &to).await {
            c2s.router
                .deliver_message(&to, &m, &xmpp_parsers::message::MessageType::Normal, None);
        }
    }

    /// XEP-0444: a user's whole set of reactions to `target`, after `e` (leaving out a reaction
    /// being redacted).
    async fn reactions(
        &self,
        c2s: &C2s,
        room_id: &str,
        room: &Room,
        e: &StoredEvent,
        target: &str,
        removed: Option<&str>,
    ) {
        let reactions = super::convert::reactions_element(&self.core, target, &e.sender, removed, target).await;
        let nick = self.nick(room, &e.sender);
        for o in &room.occupants {
            let m = envelope(room_id, &o.room_jid, &o.full, &nick, &e.event_id, e)
                .append(reactions.clone())
                .append(Element::builder("store", "urn:xmpp:hints").build())
                .build();
            Self::deliver(c2s, o, m);
        }
    }

    /// A redaction: of a reaction, the reacting user's new set; of a message, a XEP-0424
    /// retraction (XEP-0425 moderation when someone else redacted it).
    async fn redaction(&self, c2s: &C2s, room_id: &str, room: &Room, e: &StoredEvent) {
        let Some(target_id) = Pdu::from_stored(e).ok().and_then(|p| p.redacts).map(|r| r.to_string()) else {
            return;
        };
        let Ok(Some(target)) = self.core.rooms.event(&target_id).await else {
            return;
        };
        if target.kind == "m.reaction" {
            // What it reacted to: remembered from when the reaction came, or read from the
            // stored copy (which the redaction empties).
            let original: Value = serde_json::from_str(&target.pdu).unwrap_or_default();
            let reacted_to = room.reacted.get(&target_id).cloned().or_else(|| {
                original["content"]["m.relates_to"]["event_id"]
                    .as_str()
                    .map(str::to_owned)
            });
            if let Some(reacted_to) = reacted_to {
                self.reactions(c2s, room_id, room, &target, &reacted_to, Some(&target_id))
                    .await;
            }
            return;
        }
        if !MESSAGE_KINDS.contains(&target.kind.as_str()) {
            return;
        }
        let moderated = e.sender != target.sender;
        let by = self.nick(room, &e.sender);
        let author = self.nick(room, &target.sender);
        for o in &room.occupants {
            let mut retract = Element::builder("retract", super::convert::NS_RETRACT)
                .attr(xml_ncname!("id").to_owned(), target_id.as_str());
            if moderated {
                retract = retract.append(
                    Element::builder("moderated", NS_MODERATE)
                        .attr(xml_ncname!("by").to_owned(), occupant_jid(&o.room_jid, &by))
                        .append(
                            Element::builder("occupant-id", NS_OCCUPANT_ID)
                                .attr(xml_ncname!("id").to_owned(), occupant_id(room_id, &e.sender))
                                .build(),
                        )
                        .build(),
                );
            }
            let m = envelope(
                room_id,
                &o.room_jid,
                &o.full,
                if moderated { "" } else { &author },
                &e.event_id,
                e,
            )
            .append(retract.build())
            .append(
                Element::builder("fallback", super::convert::NS_FALLBACK)
                    .attr(xml_ncname!("for").to_owned(), super::convert::NS_RETRACT)
                    .build(),
            )
            .append(
                Element::builder("body", ns::JABBER_CLIENT)
                    .append("This message was retracted.")
                    .build(),
            )
            .append(Element::builder("store", "urn:xmpp:hints").build())
            .build();
            Self::deliver(c2s, o, m);
        }
    }

    fn nick(&self, room: &Room, user: &str) -> String {
        room.members
            .get(user)
            .cloned()
            .unwrap_or_else(|| member_nick(user, &Value::Null))
    }

    fn member(&mut self, c2s: &C2s, room_id: &str, room: &mut Room, e: &StoredEvent) {
        let Some(user) = e.state_key.clone() else { return };
        let Ok(pdu) = Pdu::from_stored(e) else { return };
        let content = pdu.content_value();
        let joined = content["membership"] == "join";
        match (room.members.get(&user).cloned(), joined) {
            (None, true) => {
                let nick = room.nick_for(&user, &content);
                room.members.insert(user.clone(), nick.clone());
                for o in room.occupants.iter().filter(|o| o.user != user) {
                    Self::deliver(c2s, o, self.presence(room_id, room, o, &user, &nick, false, &[], None));
                }
            }
            (Some(old), true) => {
                let nick = room.nick_for(&user, &content);
                if nick != old {
                    room.members.insert(user.clone(), nick.clone());
                    // §7.6: the old occupant goes with 303 and the new nick, the new one comes.
                    for o in &room.occupants {
                        Self::deliver(
                            c2s,
                            o,
                            self.presence(room_id, room, o, &user, &old, true, &[303], Some(&nick)),
                        );
                        Self::deliver(c2s, o, self.presence(room_id, room, o, &user, &nick, false, &[], None));
                    }
                }
            }
            (Some(nick), false) => {
                // §9.1 kick (307) and §9.2 ban (301).
                let codes: &[u16] = if content["membership"] == "ban" {
                    &[301]
                } else if e.sender != user {
                    &[307]
                } else {
                    &[]
                };
                for o in &room.occupants {
                    Self::deliver(c2s, o, self.presence(room_id, room, o, &user, &nick, true, codes, None));
                }
                room.members.remove(&user);
                let gone: Vec<FullJid> = room
                    .occupants
                    .iter()
                    .filter(|o| o.user == user)
                    .map(|o| o.full.clone())
                    .collect();
                room.occupants.retain(|o| o.user != user);
                for full in gone {
                    self.unindex(&full, room_id);
                }
            }
            (None, false) => {}
        }
    }

    fn index(&self, full: &FullJid, room_id: &str) {
        self.occupied
            .locked()
            .entry(full.clone())
            .or_default()
            .insert(room_id.to_owned());
    }

    fn unindex(&self, full: &FullJid, room_id: &str) {
        let mut occupied = self.occupied.locked();
        if let Some(rooms) = occupied.get_mut(full) {
            rooms.remove(room_id);
            if rooms.is_empty() {
                occupied.remove(full);
            }
        }
    }

    /// The room's members and power levels, read when its first session joins.
    async fn load(&self, room_id: &str) -> Result<Room, estuary_core::CoreError> {
        let members = self.core.rooms.members(room_id).await?;
        let mut joined: Vec<(&String, &StoredEvent)> = members
            .iter()
            .filter(|(_, (m, _))| m == "join")
            .map(|(u, (_, e))| (u, e))
            .collect();
        joined.sort_by_key(|(_, e)| e.stream_ordering);
        let mut room = Room {
            members: HashMap::new(),
            levels: self.core.rooms.power_levels(room_id).await?.0,
            occupants: vec![],
            reacted: HashMap::new(),
            typing: HashSet::new(),
        };
        for (user, e) in joined {
            let content = Pdu::from_stored(e).map(|p| p.content_value()).unwrap_or_default();
            let nick = room.nick_for(user, &content);
            room.members.insert(user.clone(), nick);
        }
        Ok(room)
    }

    async fn command(&mut self, c2s: &C2s, command: Command) {
        match command {
            Command::Join {
                room_id,
                full,
                room_jid,
                history,
                created,
                ..
            } => {
                if let Err(e) = self.join(c2s, &room_id, full, room_jid, history, created).await {
                    tracing::warn!(error = %e, room = room_id, "MUC join not completed");
                }
            }
            Command::Part {
                room_id,
                full,
                room_jid,
                nick,
            } => {
                let user = full
                    .node()
                    .map(|n| format!("@{}:{}", n.as_str(), self.server_name))
                    .unwrap_or_default();
                let mut room = self.rooms.remove(&room_id).unwrap_or_else(|| Room {
                    members: HashMap::new(),
                    levels: Value::Null,
                    occupants: vec![],
                    reacted: HashMap::new(),
                    typing: HashSet::new(),
                });
                room.occupants.retain(|o| o.full != full);
                let last = !room.occupants.iter().any(|o| o.user == user);
                let nick = room.members.get(&user).cloned().unwrap_or(nick);
                let to = Occupant {
                    full: full.clone(),
                    user: user.clone(),
                    room_jid,
                };
                let p = self.presence(&room_id, &room, &to, &user, &nick, true, &[], None);
                Self::deliver(c2s, &to, p);
                if !room.occupants.is_empty() {
                    self.rooms.insert(room_id.clone(), room);
                }
                self.unindex(&full, &room_id);
                if last {
                    // The account's last session left: the account leaves the room. Not here,
                    // where it would wait for the pump.
                    let core = self.core.clone();
                    tokio::spawn(async move { super::leave_room(&core, &room_id, &user).await });
                }
            }
            Command::Gone { full } => {
                let rooms: Vec<String> = self
                    .occupied
                    .locked()
                    .remove(&full)
                    .map(|r| r.into_iter().collect())
                    .unwrap_or_default();
                for room_id in rooms {
                    if let Some(room) = self.rooms.get_mut(&room_id) {
                        room.occupants.retain(|o| o.full != full);
                        if room.occupants.is_empty() {
                            self.rooms.remove(&room_id);
                        }
                    }
                }
            }
        }
    }

    /// §7.2: the occupants' presences, the joiner's own (110), the history, the subject.
    async fn join(
        &mut self,
        c2s: &C2s,
        room_id: &str,
        full: FullJid,
        room_jid: BareJid,
        history: Option<History>,
        created: bool,
    ) -> Result<(), estuary_core::CoreError> {
        let user = full
            .node()
            .map(|n| format!("@{}:{}", n.as_str(), self.server_name))
            .unwrap_or_default();
        let mut room = match self.rooms.remove(room_id) {
            Some(r) => r,
            None => self.load(room_id).await?,
        };
        room.occupants.retain(|o| o.full != full);
        if !room.members.contains_key(&user) {
            // Left again before the join was served.
            if !room.occupants.is_empty() {
                self.rooms.insert(room_id.to_owned(), room);
            }
            return Ok(());
        }
        let me = Occupant {
            full: full.clone(),
            user: user.clone(),
            room_jid: room_jid.clone(),
        };
        for (u, nick) in room.members.iter().filter(|(u, _)| **u != user) {
            Self::deliver(c2s, &me, self.presence(room_id, &room, &me, u, nick, false, &[], None));
        }
        // 100: real JIDs are visible to everyone (Matrix user IDs are); 201: a new room.
        let statuses: &[u16] = if created { &[100, 201] } else { &[100] };
        let nick = room.members[&user].clone();
        Self::deliver(
            c2s,
            &me,
            self.presence(room_id, &room, &me, &user, &nick, false, statuses, None),
        );
        for e in self.history(room_id, &user, history.as_ref()).await? {
            if let Some(m) = self.message(room_id, &room, &me, &e, Shown::History) {
                Self::deliver(c2s, &me, m);
            }
        }
        let topic = self
            .core
            .rooms
            .state_event(room_id, "m.room.topic", "")
            .await?
            .and_then(|e| Pdu::from_stored(&e).ok())
            .and_then(|p| p.content_value()["topic"].as_str().map(str::to_owned))
            .unwrap_or_default();
        Self::deliver(c2s, &me, subject(&me, None, &topic));
        room.occupants.push(me);
        self.index(&full, room_id);
        self.rooms.insert(room_id.to_owned(), room);
        Ok(())
    }

    /// The messages a joiner gets (XEP-0045 §7.2.15), up to what the pump has seen, that the
    /// user may see (history visibility).
    async fn history(
        &self,
        room_id: &str,
        user: &str,
        history: Option<&History>,
    ) -> Result<Vec<StoredEvent>, estuary_core::CoreError> {
        let mut limit = DEFAULT_HISTORY;
        let mut since = i64::MIN;
        if let Some(h) = history {
            if h.maxchars == Some(0) {
                return Ok(vec![]);
            }
            if let Some(n) = h.maxstanzas {
                limit = n as usize;
            }
            if let Some(s) = h.seconds {
                since = estuary_core::now_ms() - i64::from(s) * 1000;
            }
            if let Some(t) = &h.since {
                since = since.max(t.0.timestamp_millis());
            }
        }
        let limit = limit.min(MAX_HISTORY);
        if limit == 0 {
            return Ok(vec![]);
        }
        let Ok(user_id) = ruma::UserId::parse(user) else {
            return Ok(vec![]);
        };
        let visibility = self.core.rooms.visibility(room_id, &user_id).await?;
        let events = self
            .core
            .store
            .room_events(room_id, 0, self.examined, (limit * 4) as i64, true)
            .await?;
        let mut kept: Vec<StoredEvent> = events
            .into_iter()
            .filter(|e| {
                MESSAGE_KINDS.contains(&e.kind.as_str())
                    && e.origin_server_ts >= since
                    && visibility.can_see(e.stream_ordering)
            })
            .collect();
        let skip = kept.len().saturating_sub(limit);
        kept.drain(..skip);
        Ok(kept)
    }
}

/// XEP-0421: an occupant's stable id in a room (not its JID: a hash of room and user).
fn occupant_id(room_id: &str, user: &str) -> String {
    use base64::Engine;
    let digest = sha2::Sha256::digest(format!("{room_id}\0{user}").as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// How a room event is shown as a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shown {
    /// As it happens: the sending session gets back the ids it gave.
    Live,
    /// In the history sent on join: with a XEP-0203 delay.
    History,
    /// In a MAM result (the delay goes on the `forwarded` around it).
    Archive,
}

/// The event kinds shown as groupchat messages.
pub(crate) const MESSAGE_KINDS: &[&str] = &["m.room.message", "m.room.encrypted", "m.sticker"];

/// A room event as the groupchat message `to` sees from `nick`; None for what has no message
/// form (state, redacted events).
pub(crate) fn groupchat(
    core: &Core,
    room_id: &str,
    room_jid: &BareJid,
    to: &FullJid,
    nick: &str,
    e: &StoredEvent,
    shown: Shown,
) -> Option<Element> {
    let (body, extra) = message_parts(e, &|original| id_for(core, original, &e.sender, to))?;
    // The sending session gets its own ids back (XEP-0045 §7.2.13); everyone else the
    // event ID, which is also the stanza-id.
    let mut id = e.event_id.clone();
    let mut origin = None;
    if shown == Shown::Live
        && to.node().is_some_and(|n| core.matrix_user_id(n.as_str()) == e.sender)
        && let Some((resource, sent_id, origin_id)) = sent_by_xmpp(core, &e.event_id, &e.sender)
        && resource == to.resource().as_str()
    {
        if !sent_id.is_empty() {
            id = sent_id;
        }
        origin = Some(origin_id).filter(|o| !o.is_empty());
    }
    let room = room_jid.to_string();
    let mut m = envelope(room_id, room_jid, to, nick, &id, e)
        .append(Element::builder("body", ns::JABBER_CLIENT).append(body).build());
    for x in extra {
        m = m.append(x);
    }
    if let Some(o) = origin {
        m = m.append(
            Element::builder("origin-id", NS_SID)
                .attr(xml_ncname!("id").to_owned(), o)
                .build(),
        );
    }
    if shown == Shown::History {
        m = m.append(
            Element::builder("delay", "urn:xmpp:delay")
                .attr(xml_ncname!("from").to_owned(), room.as_str())
                .attr(xml_ncname!("stamp").to_owned(), stamp(e.origin_server_ts))
                .build(),
        );
    }
    Some(m.build())
}

/// A message event's body as XMPP shows it, and the payloads that go with it: a XEP-0308
/// correction for an edit, a XEP-0461 reply, the OMEMO element an XMPP client sent. `known`
/// gives the id the recipient knows another event by. None for what has no message form.
pub(crate) fn message_parts(e: &StoredEvent, known: &dyn Fn(&str) -> String) -> Option<(String, Vec<Element>)> {
    let pdu = Pdu::from_stored(e).ok()?;
    let content = pdu.content_value();
    let relates = &content["m.relates_to"];
    let mut extra = vec![];
    let body = match e.kind.as_str() {
        "m.room.encrypted" => ENCRYPTED_NOTICE.to_owned(),
        "m.room.message" | "m.sticker" => {
            // An edit shows its new content, as a XEP-0308 correction of the original.
            let shown = if relates["rel_type"] == "m.replace"
                && let Some(original) = relates["event_id"].as_str()
                && content["m.new_content"].is_object()
            {
                extra.push(
                    Element::builder("replace", super::convert::NS_CORRECT)
                        .attr(xml_ncname!("id").to_owned(), known(original))
                        .build(),
                );
                &content["m.new_content"]
            } else {
                &content
            };
            let mut body = shown["body"].as_str()?;
            if let Some(parent) = relates["m.in_reply_to"]["event_id"].as_str() {
                extra.push(
                    Element::builder("reply", super::convert::NS_REPLY)
                        .attr(xml_ncname!("id").to_owned(), known(parent))
                        .build(),
                );
                body = without_reply_fallback(body);
            }
            if let Some(omemo) = content[super::convert::OMEMO_KEY]
                .as_str()
                .and_then(|x| x.parse::<Element>().ok())
                .filter(super::convert::is_omemo)
            {
                extra.push(omemo);
            }
            if shown["msgtype"] == "m.emote" {
                format!("/me {body}")
            } else {
                body.to_owned()
            }
        }
        _ => return None,
    };
    Some((body, extra))
}

/// A groupchat message for event `e` from `nick` (the room itself when empty) with stanza id
/// `id`, its stanza-id and the sender's occupant-id; the caller adds the payload.
fn envelope(room_id: &str, room_jid: &BareJid, to: &FullJid, nick: &str, id: &str, e: &StoredEvent) -> ElementBuilder {
    let from = if nick.is_empty() {
        room_jid.to_string()
    } else {
        occupant_jid(room_jid, nick)
    };
    Element::builder("message", ns::JABBER_CLIENT)
        .attr(xml_ncname!("from").to_owned(), from)
        .attr(xml_ncname!("to").to_owned(), to.to_string())
        .attr(xml_ncname!("type").to_owned(), "groupchat")
        .attr(xml_ncname!("id").to_owned(), id)
        .append(
            Element::builder("stanza-id", NS_SID)
                .attr(xml_ncname!("id").to_owned(), e.event_id.as_str())
                .attr(xml_ncname!("by").to_owned(), room_jid.to_string())
                .build(),
        )
        .append(
            Element::builder("occupant-id", NS_OCCUPANT_ID)
                .attr(xml_ncname!("id").to_owned(), occupant_id(room_id, &e.sender))
                .build(),
        )
}

/// A groupchat message from `nick` (a member, `user`) that is not an event: a chat state, a
/// marker. The caller adds the payload.
fn occupant_message(room_id: &str, to: &Occupant, nick: &str, user: &str) -> ElementBuilder {
    Element::builder("message", ns::JABBER_CLIENT)
        .attr(xml_ncname!("from").to_owned(), occupant_jid(&to.room_jid, nick))
        .attr(xml_ncname!("to").to_owned(), to.full.to_string())
        .attr(xml_ncname!("type").to_owned(), "groupchat")
        .attr(xml_ncname!("id").to_owned(), crate::c2s::new_id())
        .append(
            Element::builder("occupant-id", NS_OCCUPANT_ID)
                .attr(xml_ncname!("id").to_owned(), occupant_id(room_id, user))
                .build(),
        )
}

/// The id a recipient knows a message by: the one its own session gave it, else the event ID.
fn id_for(core: &Core, event_id: &str, sender: &str, to: &FullJid) -> String {
    if to.node().is_some_and(|n| core.matrix_user_id(n.as_str()) == sender)
        && let Some((resource, id, _)) = sent_by_xmpp(core, event_id, sender)
        && resource == to.resource().as_str()
        && !id.is_empty()
    {
        return id;
    }
    event_id.to_owned()
}

/// A Matrix body without its reply fallback (the quoted lines before the first blank line).
fn without_reply_fallback(body: &str) -> &str {
    if body.starts_with("> ")
        && let Some(at) = body.find("\n\n")
    {
        return &body[at + 2..];
    }
    body
}

fn occupant_jid(room: &BareJid, nick: &str) -> String {
    format!("{room}/{nick}")
}

/// XEP-0082 time of a Matrix timestamp, to the millisecond.
pub(crate) fn stamp(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The room's subject (§7.2.16): from the room, or from the occupant who set it.
fn subject(to: &Occupant, nick: Option<&str>, topic: &str) -> Element {
    let from = match nick {
        Some(n) => occupant_jid(&to.room_jid, n),
        None => to.room_jid.to_string(),
    };
    Element::builder("message", ns::JABBER_CLIENT)
        .attr(xml_ncname!("from").to_owned(), from)
        .attr(xml_ncname!("to").to_owned(), to.full.to_string())
        .attr(xml_ncname!("type").to_owned(), "groupchat")
        .attr(xml_ncname!("id").to_owned(), crate::c2s::new_id())
        .append(Element::builder("subject", ns::JABBER_CLIENT).append(topic).build())
        .build()
}
