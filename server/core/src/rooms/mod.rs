//! Rooms and their events. Every event is a real PDU from the start: hashed and signed with
//! the server key, its ID the reference hash, `prev_events`/`auth_events`/`depth` set, and
//! accepted only if ruma-state-res's authorization rules pass against the room's state.
//!
//! Appends are serialised per room (its lock is held while an event is built and until it is
//! committed) and committed by one writer (`writer.rs`, group commit), so that stream
//! positions become visible in order: a sync that has seen position N never misses an event
//! below N. The room's current state and forward extremities are kept in memory and kept
//! current by that writer.

use crate::Locked;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::streams::{HeldWhile, Streams};
use estuary_store::{Membership, NewEvent, Redaction, RoomRecord, StateUpdate, Store, StoredEvent};
use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::RoomVersionRules;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, RoomVersionId, UserId,
};
use sent_txns::{Known, SentTxns};
use serde_json::Value;
use writer::{Memo, RoomGuard, Writer};

use crate::keys::ServerKey;
use crate::{CoreError, now_ms, random};

/// Events one statement of [`Rooms::rooms_newest_events`] reads at most.
const EVENTS_PER_STATEMENT: i64 = 5000;

pub mod create;
pub mod pdu;
mod sent_txns;
pub mod state;
mod writer;

pub use pdu::Pdu;
pub use writer::{Members, RoomState};

/// Room versions this server creates and accepts.
pub const SUPPORTED_ROOM_VERSIONS: &[RoomVersionId] = &[RoomVersionId::V10, RoomVersionId::V11];
/// Room version of new rooms (as Synapse).
pub const DEFAULT_ROOM_VERSION: RoomVersionId = RoomVersionId::V11;
/// At most this many prev_events per event (spec: 20).
const MAX_PREV_EVENTS: usize = 20;
/// Largest PDU accepted, in bytes (spec: 65536).
pub const MAX_PDU_BYTES: usize = 65_536;

/// What a client (or the server) asks to add to a room; the service turns it into a PDU.
#[derive(Debug, Clone)]
pub struct EventTemplate {
    pub kind: String,
    pub state_key: Option<String>,
    pub content: Value,
    /// For m.room.redaction.
    pub redacts: Option<OwnedEventId>,
}

impl EventTemplate {
    pub fn message(kind: &str, content: Value) -> Self {
        Self {
            kind: kind.to_owned(),
            state_key: None,
            content,
            redacts: None,
        }
    }
    pub fn state(kind: &str, state_key: &str, content: Value) -> Self {
        Self {
            kind: kind.to_owned(),
            state_key: Some(state_key.to_owned()),
            content,
            redacts: None,
        }
    }
}

/// The content of an m.room.power_levels event, read with the spec's defaults.
pub struct PowerLevels(pub Value);

impl PowerLevels {
    /// A top-level level (`redact`, `kick`, `ban`, ...) or its default.
    pub fn get(&self, key: &str, default: i64) -> i64 {
        level(&self.0[key]).unwrap_or(default)
    }

    /// Whether the user may redact others' events (the `redact` level, 50 by default).
    pub fn may_redact(&self, user_id: &str) -> bool {
        self.user(user_id) >= self.get("redact", 50)
    }

    /// A user's level: `users[user]`, else `users_default` (0).
    pub fn user(&self, user_id: &str) -> i64 {
        level(&self.0["users"][user_id]).unwrap_or_else(|| self.get("users_default", 0))
    }
}

/// Power levels are integers; before room version 10 they could be strings of digits.
fn level(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// Client send idempotency: (localpart, device_id, txn_id).
pub type TxnKey = (String, String, String);

/// An event built and queued by [`Rooms::send_queued`].
pub struct Queued {
    pub event_id: OwnedEventId,
    position: Position,
}

enum Position {
    Known(i64),
    Ahead(writer::Ahead),
}

impl Queued {
    fn known(event_id: OwnedEventId, position: i64) -> Self {
        Self {
            event_id,
            position: Position::Known(position),
        }
    }

    /// The event's stream position, once it is committed.
    pub async fn committed(self) -> Result<i64, CoreError> {
        match self.position {
            Position::Known(p) => Ok(p),
            Position::Ahead(a) => a.committed().await,
        }
    }
}

pub struct Rooms {
    store: Arc<dyn Store>,
    key: Arc<ServerKey>,
    server_name: OwnedServerName,
    room_locks: Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
    streams: Arc<Streams>,
    memo: Arc<Memo>,
    writer: Writer,
    /// Room versions (they never change), so a send need not read the room's record.
    versions: Mutex<HashMap<String, String>>,
    /// Set once the stored state resets are in `memo.resets`.
    resets_loaded: tokio::sync::OnceCell<()>,
    /// (room, user) -> what the user may see, while the room's state history does not move
    /// (`streams.room_state`).
    visibility: HeldWhile<(String, String), Visibility>,
    /// user -> their memberships, while none changes (`streams.user_memberships`).
    memberships: HeldWhile<String, Vec<Membership>>,
}

/// The rules of a supported room version.
pub fn rules_for(version: &str) -> Result<(RoomVersionId, RoomVersionRules), CoreError> {
    let id = RoomVersionId::try_from(version).map_err(|_| CoreError::UnsupportedRoomVersion(version.to_owned()))?;
    if !SUPPORTED_ROOM_VERSIONS.contains(&id) {
        return Err(CoreError::UnsupportedRoomVersion(version.to_owned()));
    }
    let rules = id
        .rules()
        .ok_or_else(|| CoreError::UnsupportedRoomVersion(version.to_owned()))?;
    Ok((id, rules))
}

impl Rooms {
    pub fn new(
        store: Arc<dyn Store>,
        key: Arc<ServerKey>,
        server_name: OwnedServerName,
        streams: Arc<Streams>,
    ) -> Self {
        let memo = Arc::new(Memo::default());
        Self {
            writer: Writer::start(store.clone(), streams.clone(), memo.clone()),
            store,
            key,
            server_name,
            room_locks: Mutex::new(HashMap::new()),
            streams,
            memo,
            versions: Mutex::default(),
            resets_loaded: tokio::sync::OnceCell::new(),
            visibility: HeldWhile::default(),
            memberships: HeldWhile::default(),
        }
    }

    /// The user's memberships, from the rooms' current state (held while none changes).
    pub async fn memberships(&self, user_id: &str) -> Result<Vec<Membership>, CoreError> {
        let rows = self.streams.user_memberships.rows(user_id);
        self.memberships
            .get(user_id.to_owned(), rows, || async {
                Ok(self.store.memberships(user_id).await?)
            })
            .await
    }

    pub fn server_name(&self) -> &OwnedServerName {
        &self.server_name
    }

    /// The transaction ID under which this device sent the event, if it did (recently).
    pub fn txn_of(&self, event_id: &str, localpart: &str, device_id: &str) -> Option<String> {
        self.memo.txn_of(event_id, localpart, device_id)
    }

    /// The highest committed event position.
    pub fn current_position(&self) -> i64 {
        self.streams.current().events
    }

    fn room_lock(&self, room_id: &RoomId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.room_locks.locked();
        locks.entry(room_id.to_owned()).or_default().clone()
    }

    pub async fn room(&self, room_id: &str) -> Result<Option<RoomRecord>, CoreError> {
        Ok(self.store.room(room_id).await?)
    }

    /// A new room ID: `!<18 random>:server_name`.
    pub fn new_room_id(&self) -> Result<OwnedRoomId, CoreError> {
        let id = format!("!{}:{}", random::string(18, random::BASE62)?, self.server_name);
        RoomId::parse(id).map_err(|e| CoreError::Internal(e.to_string()))
    }

    /// Add an event to a room as `sender`; returns the event ID and its stream position once
    /// committed. A repeated `txn` returns the event of the first request instead.
    pub async fn send(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        template: EventTemplate,
        txn: Option<TxnKey>,
    ) -> Result<(OwnedEventId, i64), CoreError> {
        let queued = self.send_queued(room_id, sender, template, txn).await?;
        let event_id = queued.event_id.clone();
        Ok((event_id, queued.committed().await?))
    }

    /// [`Rooms::send`] in two steps: the event's ID once it is built and queued, and its
    /// position from [`Queued::committed`]. A message may be queued ahead of its commit (see
    /// `writer`), so that a caller with several to send (an XMPP session reading a burst)
    /// need not wait for each commit before building the next.
    pub async fn send_queued(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        template: EventTemplate,
        txn: Option<TxnKey>,
    ) -> Result<Queued, CoreError> {
        let guard = self.room_lock(room_id).lock_owned().await;
        if let Some(key) = &txn {
            if self.memo.txn_pending(key) {
                // The same transaction is queued ahead and not committed yet.
                self.writer.settle().await?;
            }
            let (lp, device, txn_id) = key;
            if self.maybe_sent(lp, device, txn_id).await?
                && let Some(existing) = self.store.txn_event(lp, device, txn_id).await?
            {
                let stored = self
                    .store
                    .event(&existing)
                    .await?
                    .ok_or_else(|| CoreError::Internal("txn event vanished".into()))?;
                let id = OwnedEventId::try_from(existing).map_err(|e| CoreError::Internal(e.to_string()))?;
                return Ok(Queued::known(id, stored.stream_ordering));
            }
        }
        let version = self.version(room_id.as_str()).await?;
        let mut template = template;
        if template.kind == "m.room.redaction" {
            // However it arrives (/redact, /send, /state), a redaction names its target and is
            // checked: the redacter's own event, or the `redact` power level (spec, v3+).
            if template.state_key.is_some() {
                return Err(CoreError::InvalidParam(
                    "m.room.redaction is not a state event".to_owned(),
                ));
            }
            if template.redacts.is_none() {
                let target = template.content["redacts"]
                    .as_str()
                    .ok_or_else(|| CoreError::InvalidParam("a redaction needs `redacts`".to_owned()))?;
                template.redacts =
                    Some(ruma::EventId::parse(target).map_err(|e| CoreError::InvalidParam(format!("redacts: {e}")))?);
            }
        }
        if let Some(target) = &template.redacts {
            self.check_redaction(room_id, sender, target).await?;
        }
        let own_join = template.kind == "m.room.member"
            && template.state_key.as_deref() == Some(sender.as_str())
            && template.content["membership"] == "join"
            && template.content.get("join_authorised_via_users_server").is_none();
        if own_join && let Some(authoriser) = self.restricted_join_authoriser(room_id, sender).await? {
            template.content["join_authorised_via_users_server"] = Value::String(authoriser);
        }
        self.append_locked(room_id, &version, sender, template, txn, guard)
            .await
    }

    /// Whether a device may have sent an event under this transaction ID before: false only
    /// when it surely has not (see `sent_txns`), so the store need not be asked.
    async fn maybe_sent(&self, localpart: &str, device_id: &str, txn_id: &str) -> Result<bool, CoreError> {
        let sent = &self.memo.sent_txns;
        match sent.known(localpart, device_id, txn_id) {
            Known::New => Ok(false),
            Known::Maybe => Ok(true),
            Known::Load => {
                let stored = self
                    .store
                    .device_txn_ids(localpart, device_id, SentTxns::READ_LIMIT)
                    .await?;
                Ok(sent.loaded(localpart, device_id, &stored, txn_id))
            }
        }
    }

    /// The event a device sent under a transaction ID matching one of two LIKE `patterns`
    /// (escaped with `!`), waiting first for events queued ahead: a client may name a
    /// message it sent a moment ago.
    pub async fn txn_event_like(
        &self,
        localpart: &str,
        device_id: &str,
        patterns: [&str; 2],
    ) -> Result<Option<String>, CoreError> {
        self.writer.settle().await?;
        Ok(self.store.txn_event_like(localpart, device_id, patterns).await?)
    }

    /// The room's version; NotFound for a room this server does not have.
    async fn version(&self, room_id: &str) -> Result<String, CoreError> {
        if let Some(v) = self.versions.locked().get(room_id) {
            return Ok(v.clone());
        }
        let room = self
            .store
            .room(room_id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("room {room_id}")))?;
        crate::bounded_insert(&mut self.versions.locked(), room.room_id, room.room_version.clone());
        Ok(room.room_version)
    }

    /// Whether this server has the room (its version is held once read: rooms are never
    /// removed).
    pub async fn known(&self, room_id: &str) -> Result<bool, CoreError> {
        match self.version(room_id).await {
            Ok(_) => Ok(true),
            Err(CoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Spec (room versions 3+): the auth rules accept any redaction event, and the server
    /// applies it only if the redacter sent the original event or has the `redact` power
    /// level. For a local client we refuse the request up front.
    async fn check_redaction(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &ruma::EventId,
    ) -> Result<(), CoreError> {
        let original = self.store.event(target.as_str()).await?;
        let original = original
            .filter(|e| e.room_id == room_id.as_str())
            .ok_or_else(|| CoreError::NotFound(format!("event {target}")))?;
        if original.sender == sender.as_str() {
            return Ok(());
        }
        if self.power_levels(room_id.as_str()).await?.may_redact(sender.as_str()) {
            Ok(())
        } else {
            Err(CoreError::Forbidden(
                "you may only redact your own events in this room".to_owned(),
            ))
        }
    }

    /// A restricted room (`join_rule` restricted or knock_restricted, room versions 8 and up)
    /// lets a user who is not invited join when it is joined to a room its `allow` list names;
    /// the join then names a local member who may invite (`join_authorised_via_users_server`),
    /// which the auth rules check. That member, or None: the room is not restricted, the user
    /// is invited or joined already, or it is in none of the allowed rooms (the auth rules then
    /// refuse the join).
    async fn restricted_join_authoriser(&self, room_id: &RoomId, user: &UserId) -> Result<Option<String>, CoreError> {
        let state = self.room_state(room_id.as_str()).await?;
        let Some(rules) = state.get("m.room.join_rules", "") else {
            return Ok(None);
        };
        let rules = Pdu::from_stored(rules)?.content_value();
        if !matches!(rules["join_rule"].as_str(), Some("restricted" | "knock_restricted")) {
            return Ok(None);
        }
        if matches!(
            self.membership(room_id.as_str(), user).await?.as_deref(),
            Some("join" | "invite")
        ) {
            return Ok(None);
        }
        let mut allowed = false;
        for entry in rules["allow"].as_array().into_iter().flatten() {
            if entry["type"] == "m.room_membership"
                && let Some(other) = entry["room_id"].as_str()
                && self.membership(other, user).await?.as_deref() == Some("join")
            {
                allowed = true;
                break;
            }
        }
        if !allowed {
            return Ok(None);
        }
        let levels = self.power_levels(room_id.as_str()).await?;
        let invite = levels.get("invite", 0);
        let suffix = format!(":{}", self.server_name);
        let members = self.members(room_id.as_str()).await?;
        let authoriser = members
            .iter()
            .filter(|(u, (m, _))| m == "join" && u.ends_with(&suffix) && levels.user(u) >= invite)
            .max_by_key(|(u, _)| (levels.user(u), std::cmp::Reverse(u.as_str())))
            .map(|(u, _)| u.clone());
        Ok(authoriser)
    }

    /// The room's current power levels.
    pub async fn power_levels(&self, room_id: &str) -> Result<PowerLevels, CoreError> {
        let content = match self.room_state(room_id).await?.get("m.room.power_levels", "") {
            Some(e) => Pdu::from_stored(e)?.content_value(),
            None => Value::Null,
        };
        Ok(PowerLevels(content))
    }

    /// Build, sign and authorise an event of `sender` on the room state `current`, after
    /// the room's `extremities`: the event to commit, and its PDU.
    #[allow(clippy::too_many_arguments)]
    async fn build(
        &self,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        sender: &UserId,
        t: &EventTemplate,
        current: &RoomState,
        extremities: Vec<(String, i64)>,
        txn: Option<TxnKey>,
    ) -> Result<(NewEvent, Pdu), CoreError> {
        let kind = TimelineEventType::from(t.kind.as_str());
        let content_raw =
            serde_json::value::to_raw_value(&t.content).map_err(|e| CoreError::InvalidParam(e.to_string()))?;

        // The state the auth rules look at: the auth event types of this event.
        let auth_types = if kind == TimelineEventType::RoomCreate {
            Vec::new()
        } else {
            ruma::state_res::auth_types_for_event(
                &kind,
                sender,
                t.state_key.as_deref(),
                &content_raw,
                &rules.authorization,
            )
            .map_err(CoreError::InvalidParam)?
        };
        let mut state: HashMap<(StateEventType, String), Pdu> = HashMap::new();
        for (ty, key) in &auth_types {
            if let Some(e) = current.get(&ty.to_string(), key) {
                state.insert((ty.clone(), key.clone()), Pdu::from_stored(e)?);
            }
        }
        let auth_events: Vec<OwnedEventId> = state.values().map(|p| p.event_id.clone()).collect();

        let mut extremities = extremities;
        extremities.sort_by_key(|(_, depth)| std::cmp::Reverse(*depth));
        extremities.truncate(MAX_PREV_EVENTS);
        let depth = extremities.iter().map(|(_, d)| *d).max().map_or(1, |d| d + 1);
        let prev_events: Vec<String> = extremities.into_iter().map(|(id, _)| id).collect();

        let mut object = CanonicalJsonObject::new();
        let s = |v: &str| CanonicalJsonValue::String(v.to_owned());
        let ids = |v: &[String]| CanonicalJsonValue::Array(v.iter().map(|x| s(x)).collect());
        object.insert("room_id".into(), s(room_id.as_str()));
        object.insert("sender".into(), s(sender.as_str()));
        object.insert("type".into(), s(&t.kind));
        let int = |v: i64| {
            ruma::Int::new(v)
                .map(CanonicalJsonValue::Integer)
                .ok_or_else(|| CoreError::Internal(format!("{v} out of range")))
        };
        object.insert("origin_server_ts".into(), int(now_ms())?);
        object.insert("depth".into(), int(depth)?);
        object.insert("prev_events".into(), ids(&prev_events));
        object.insert(
            "auth_events".into(),
            ids(&auth_events.iter().map(ToString::to_string).collect::<Vec<_>>()),
        );
        if let Some(k) = &t.state_key {
            object.insert("state_key".into(), s(k));
        }
        let mut content = t.content.clone();
        if let Some(r) = &t.redacts {
            // v10 keeps `redacts` at the top level; v11 has it in the content. Both are
            // written, as Synapse does, so either reader finds it.
            object.insert("redacts".into(), s(r.as_str()));
            if let Value::Object(c) = &mut content {
                c.insert("redacts".into(), Value::String(r.to_string()));
            }
        }
        let content =
            CanonicalJsonValue::try_from(content).map_err(|e| CoreError::InvalidParam(format!("content: {e}")))?;
        object.insert("content".into(), content);
        ruma::signatures::hash_and_sign_event(self.server_name.as_str(), &self.key.pair, &mut object, &rules.redaction)
            .map_err(|e| CoreError::InvalidParam(format!("cannot sign the event: {e}")))?;
        let json = serde_json::to_string(&object).map_err(|e| CoreError::Internal(e.to_string()))?;
        if json.len() > MAX_PDU_BYTES {
            return Err(CoreError::TooLarge(format!(
                "event is {} bytes; the limit is {MAX_PDU_BYTES}",
                json.len()
            )));
        }
        let event_id = format!(
            "${}",
            ruma::signatures::reference_hash(&object, rules).map_err(|e| CoreError::Internal(e.to_string()))?
        );
        let pdu = Pdu::from_json(&event_id, &json)?;

        // Authorization rules (spec: Server-Server API, "Authorization rules").
        let by_id: HashMap<&ruma::EventId, &Pdu> = state.values().map(|p| (p.event_id.as_ref(), p)).collect();
        ruma::state_res::check_state_independent_auth_rules(&rules.authorization, &pdu, |id| by_id.get(id).copied())
            .map_err(CoreError::Forbidden)?;
        ruma::state_res::check_state_dependent_auth_rules(&rules.authorization, &pdu, |ty, key| {
            state.get(&(ty.clone(), key.to_owned()))
        })
        .map_err(CoreError::Forbidden)?;

        let replaces_state = match &t.state_key {
            Some(key) => current.get(&t.kind, key).map(|prev| {
                (
                    prev.event_id.clone(),
                    Pdu::from_stored(prev)
                        .map(|p| p.content.get().to_owned())
                        .unwrap_or_default(),
                )
            }),
            None => None,
        };
        let relation = self.relation_of(room_id, &t.content).await?;
        let membership = pdu.membership();
        let origin_server_ts = pdu.origin_ts();
        let redaction = match &t.redacts {
            Some(target) => self.redacted_form(rules, &pdu, target).await?,
            None => None,
        };
        let own = t.state_key.as_deref().map(|key| (t.kind.as_str(), key));
        let (state_group, new_group) = state::group_after(current.group.as_ref(), &event_id, own, || current.ids())?;
        let new = NewEvent {
            event_id: event_id.clone(),
            room_id: room_id.to_string(),
            depth,
            sender: sender.to_string(),
            kind: t.kind.clone(),
            state_key: t.state_key.clone(),
            origin_server_ts,
            pdu: json,
            membership,
            prev_events,
            txn,
            replaces_state,
            relation,
            redaction,
            state_group,
            new_group,
            state_update: StateUpdate::Own,
        };
        Ok((new, pdu))
    }

    /// m.relates_to of a content (cleartext even in encrypted events), when it names an event
    /// of this room: (rel_type, event ID).
    async fn relation_of(&self, room_id: &RoomId, content: &Value) -> Result<Option<(String, String)>, CoreError> {
        let relates = &content["m.relates_to"];
        let (Some(rel_type), Some(target)) = (relates["rel_type"].as_str(), relates["event_id"].as_str()) else {
            return Ok(None);
        };
        Ok(match self.store.event(target).await? {
            Some(e) if e.room_id == room_id.as_str() => Some((rel_type.to_owned(), target.to_owned())),
            _ => None,
        })
    }

    /// Build, sign, authorise and append one event, holding the room's lock (given back).
    async fn append_locked(
        &self,
        room_id: &RoomId,
        room_version: &str,
        sender: &UserId,
        t: EventTemplate,
        txn: Option<TxnKey>,
        guard: RoomGuard,
    ) -> Result<Queued, CoreError> {
        let (_, rules) = rules_for(room_version)?;
        let current = self.room_state(room_id.as_str()).await?;
        let extremities = self.extremities(room_id.as_str()).await?;
        let (new, pdu) = self
            .build(room_id, &rules, sender, &t, &current, extremities, txn)
            .await?;
        if new.only_extends() {
            self.memo.queued(&new);
            let ahead = self.writer.queue_ahead(new).await;
            drop(guard);
            return Ok(Queued {
                event_id: pdu.event_id,
                position: Position::Ahead(ahead?),
            });
        }
        let (stream, _guard) = self.writer.append(new, guard).await?;
        Ok(Queued::known(pdu.event_id, stream))
    }

    /// The room's forward extremities (event ID, depth). Call with the room's lock held: what
    /// is read from the store is kept.
    async fn extremities(&self, room_id: &str) -> Result<Vec<(String, i64)>, CoreError> {
        if let Some(e) = self.memo.extremities(room_id) {
            return Ok(e);
        }
        let e = self.store.forward_extremities(room_id).await?;
        self.memo.keep_extremities(room_id, e.clone());
        Ok(e)
    }

    /// The room's forward extremities: the events the next one will name as prev_events.
    /// From memory if kept there; a read from the store is not kept (no lock is held).
    pub async fn tips(&self, room_id: &str) -> Result<Vec<String>, CoreError> {
        let tips = match self.memo.extremities(room_id) {
            Some(e) => e,
            None => self.store.forward_extremities(room_id).await?,
        };
        Ok(tips.into_iter().map(|(id, _)| id).collect())
    }

    /// The stored group that is the room's current state: its single extremity's.
    async fn current_group(&self, room_id: &str) -> Result<Option<(String, i64)>, CoreError> {
        let tips = self.tips(room_id).await?;
        let [tip] = tips.as_slice() else {
            return Ok(None);
        };
        let group = self.store.event_group(tip).await?;
        Ok(group.and_then(|g| Some((g.state_group?, g.chain.unwrap_or(0)))))
    }

    /// What the redaction `by` does to its target (spec: "Redactions"), applied in the
    /// redaction's own transaction: the target's redacted PDU, and the redaction in the client
    /// format for its `unsigned.redacted_because`. None if the target is not stored.
    async fn redacted_form(
        &self,
        rules: &RoomVersionRules,
        by: &Pdu,
        target: &ruma::EventId,
    ) -> Result<Option<Redaction>, CoreError> {
        let Some(stored) = self.store.event(target.as_str()).await? else {
            return Ok(None);
        };
        let object: CanonicalJsonObject =
            serde_json::from_str(&stored.pdu).map_err(|e| CoreError::Internal(e.to_string()))?;
        let redacted = ruma::canonical_json::redact(object, &rules.redaction, None)
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        let because = serde_json::json!({
            "event_id": by.event_id,
            "type": by.kind.to_string(),
            "sender": by.sender,
            "origin_server_ts": by.origin_ts(),
            "content": by.content_value(),
            "redacts": target.as_str(),
        });
        Ok(Some(Redaction {
            target: target.to_string(),
            pdu: serde_json::to_string(&redacted).map_err(|e| CoreError::Internal(e.to_string()))?,
            because: because.to_string(),
        }))
    }

    pub async fn event(&self, event_id: &str) -> Result<Option<StoredEvent>, CoreError> {
        Ok(self.store.event(event_id).await?)
    }

    pub async fn current_state(&self, room_id: &str) -> Result<Vec<StoredEvent>, CoreError> {
        Ok(self.room_state(room_id).await?.events())
    }

    /// The room's newest events with from < stream position <= to, at most `limit`, oldest
    /// first, when memory holds them (the newest events of rooms written since start); None
    /// when the store must be asked.
    pub fn recent_events(&self, room_id: &str, from: i64, to: i64, limit: usize) -> Option<Vec<StoredEvent>> {
        self.memo.recent_events(room_id, from, to, limit)
    }

    /// The room's newest events with from < stream position <= to, at most `limit`, oldest
    /// first: from memory when it holds them ([`Rooms::recent_events`]), else from the store.
    pub async fn newest_events(
        &self,
        room_id: &str,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, CoreError> {
        let count = usize::try_from(limit).unwrap_or(usize::MAX);
        match self.recent_events(room_id, from, to, count) {
            Some(events) => Ok(events),
            None => Ok(self.store.room_events(room_id, from, to, limit, true).await?),
        }
    }

    /// The newest `limit` events up to `to` of each of `rooms` (an initial or full-state
    /// sync's timelines), oldest first: from memory for the rooms it holds, the others in a
    /// few statements rather than one each (each a round trip to PostgreSQL). Every room is a
    /// key, with no events if it has none.
    pub async fn rooms_newest_events(
        &self,
        rooms: &[&str],
        to: i64,
        limit: i64,
    ) -> Result<HashMap<String, Vec<StoredEvent>>, CoreError> {
        let count = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut timelines = HashMap::new();
        let mut unknown = Vec::new();
        for &room in rooms {
            let kept = self.recent_events(room, 0, to, count);
            if kept.is_none() {
                unknown.push(room);
            }
            timelines.insert(room.to_owned(), kept.unwrap_or_default());
        }
        let per_statement = usize::try_from((EVENTS_PER_STATEMENT / limit.max(1)).max(1)).unwrap_or(1);
        for chunk in unknown.chunks(per_statement) {
            for e in self.store.rooms_newest_events(chunk, 0, to, limit).await? {
                if let Some(timeline) = timelines.get_mut(&e.room_id) {
                    timeline.push(e);
                }
            }
        }
        Ok(timelines)
    }

    /// The room's state at stream position `at` (what a user who left at `at` last saw, the
    /// state before a sync timeline), in stream order. From memory when no state changed
    /// since `at`.
    pub async fn state_at(&self, room_id: &str, at: i64) -> Result<Vec<StoredEvent>, CoreError> {
        let current = self.room_state(room_id).await?;
        if current.is_state_at(at) {
            return Ok(current.events());
        }
        let resets = self.last_reset(room_id).await?.is_some_and(|r| r <= at);
        Ok(self.store.state_at(room_id, at, resets).await?)
    }

    /// The position of the room's newest state reset (see `state.rs`), if it had any.
    pub(super) async fn last_reset(&self, room_id: &str) -> Result<Option<i64>, CoreError> {
        self.resets_loaded
            .get_or_try_init(|| async {
                for (room, position) in self.store.last_state_resets().await? {
                    self.memo.reset_at(&room, position);
                }
                Ok::<(), CoreError>(())
            })
            .await?;
        Ok(self.memo.resets.locked().get(room_id).copied())
    }

    pub async fn state_event(
        &self,
        room_id: &str,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<StoredEvent>, CoreError> {
        Ok(self.room_state(room_id).await?.get(kind, state_key).cloned())
    }

    /// C-S `/forget`: the user (who left or was banned) no longer sees the room's history.
    /// A later membership (a new invite or join) ends the forgetting. Err(Forbidden) while
    /// joined or invited, NotFound if the user was never in the room.
    pub async fn forget(&self, room_id: &str, user_id: &UserId) -> Result<(), CoreError> {
        let Some(member) = self
            .store
            .current_state_event(room_id, "m.room.member", user_id.as_str())
            .await?
        else {
            return Err(CoreError::NotFound("you were never in this room".into()));
        };
        match self.membership(room_id, user_id).await?.as_deref() {
            Some("leave" | "ban") => {}
            _ => return Err(CoreError::Forbidden("leave the room before forgetting it".into())),
        }
        Ok(self
            .store
            .forget_room(user_id.as_str(), room_id, &member.event_id)
            .await?)
    }

    /// The rooms a user forgot and has not been in again since (room -> membership event).
    pub async fn forgotten(&self, user_id: &UserId) -> Result<std::collections::HashMap<String, String>, CoreError> {
        Ok(self
            .store
            .forgotten_rooms(user_id.as_str())
            .await?
            .into_iter()
            .collect())
    }

    /// Whether the user forgot this room (and has not been in it again since).
    pub async fn is_forgotten(&self, room_id: &str, user_id: &UserId) -> Result<bool, CoreError> {
        let Some(at) = self.forgotten(user_id).await?.remove(room_id) else {
            return Ok(false);
        };
        let current = self
            .store
            .current_state_event(room_id, "m.room.member", user_id.as_str())
            .await?;
        Ok(current.is_some_and(|e| e.event_id == at))
    }

    /// The membership of a user in a room ("join", "invite", "leave", "ban", "knock").
    pub async fn membership(&self, room_id: &str, user_id: &UserId) -> Result<Option<String>, CoreError> {
        Ok(self
            .members(room_id)
            .await?
            .get(user_id.as_str())
            .map(|(membership, _)| membership.clone())
            .filter(|m| !m.is_empty()))
    }

    /// Up to which stream position a user may see a room's events: `i64::MAX` while joined,
    /// the end of their last joined period (their leave, kick or ban) after that, None if
    /// they never joined. (History visibility `shared`, the default; `invited`/`joined`/
    /// `world_readable` are not distinguished yet.)
    pub async fn joined_until(&self, room_id: &str, user_id: &UserId) -> Result<Option<i64>, CoreError> {
        Ok(joined_until(&self.membership_history(room_id, user_id).await?))
    }

    /// A user's membership changes in a room, oldest first: (stream position, membership).
    async fn membership_history(&self, room_id: &str, user_id: &UserId) -> Result<Vec<(i64, String)>, CoreError> {
        Ok(self
            .store
            .state_history(room_id, "m.room.member", user_id.as_str())
            .await?
            .into_iter()
            .map(|(stream, pdu)| (stream, content_field(&pdu, "membership")))
            .collect())
    }

    /// What of the room's history the user may see (spec: room history visibility).
    pub async fn visibility(&self, room_id: &str, user_id: &UserId) -> Result<Visibility, CoreError> {
        let key = (room_id.to_owned(), user_id.to_string());
        let rows = self.streams.room_state.rows(room_id);
        self.visibility
            .get(key, rows, || self.read_visibility(room_id, user_id))
            .await
    }

    async fn read_visibility(&self, room_id: &str, user_id: &UserId) -> Result<Visibility, CoreError> {
        let memberships = self.membership_history(room_id, user_id).await?;
        let settings = self
            .store
            .state_history(room_id, "m.room.history_visibility", "")
            .await?
            .into_iter()
            .map(|(stream, pdu)| (stream, content_field(&pdu, "history_visibility")))
            .collect();
        Ok(Visibility {
            until: joined_until(&memberships),
            memberships,
            settings,
        })
    }

    /// The room's current state (read from the store once per change of it).
    pub async fn room_state(&self, room_id: &str) -> Result<Arc<RoomState>, CoreError> {
        match self.memo.state(room_id) {
            Ok(state) => Ok(state),
            Err(epoch) => {
                let mut state = RoomState::from_current(self.store.current_state(room_id).await?);
                state.group = self.current_group(room_id).await?;
                if let Some(reset) = self.last_reset(room_id).await? {
                    state.changed_at(reset);
                }
                let state = Arc::new(state);
                self.memo.keep_state(room_id, epoch, &state);
                Ok(state)
            }
        }
    }

    /// Members of a room by membership, from the current state (every sync asks for every
    /// joined room).
    pub async fn members(&self, room_id: &str) -> Result<Members, CoreError> {
        Ok(self.room_state(room_id).await?.members.clone())
    }
}

/// A string field of a stored PDU's content ("" when absent).
pub fn content_field(pdu: &str, key: &str) -> String {
    serde_json::from_str::<Value>(pdu)
        .ok()
        .and_then(|p| p["content"][key].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The end of the last joined period in a membership history: `i64::MAX` while joined, the
/// leave (kick, ban) that ended it after that, None if never joined.
fn joined_until(memberships: &[(i64, String)]) -> Option<i64> {
    let mut joined = false;
    let mut until = None;
    for (stream, membership) in memberships {
        match membership.as_str() {
            "join" => joined = true,
            _ if joined => {
                joined = false;
                until = Some(*stream);
            }
            _ => {}
        }
    }
    if joined { Some(i64::MAX) } else { until }
}

/// One user's view of one room's history (spec: history visibility): each event is judged by
/// the `m.room.history_visibility` in force when it was sent (`shared` when none) and the
/// user's membership then.
#[derive(Debug, Clone)]
pub struct Visibility {
    /// The user's membership changes, oldest first: (stream position, membership).
    memberships: Vec<(i64, String)>,
    /// The room's history visibility changes, oldest first.
    settings: Vec<(i64, String)>,
    /// The end of the user's last joined period (`i64::MAX` while joined); None if they never
    /// joined.
    until: Option<i64>,
}

impl Visibility {
    /// Whether the user may see the event at this stream position.
    pub fn can_see(&self, stream: i64) -> bool {
        // The setting before the event (an event that changes it is judged by the old one).
        let setting = self
            .settings
            .iter()
            .take_while(|(s, _)| *s < stream)
            .last()
            .map_or("shared", |(_, v)| v.as_str());
        if setting == "world_readable" {
            return true;
        }
        if self.until.is_none_or(|until| stream > until) {
            return false;
        }
        let membership = self
            .memberships
            .iter()
            .take_while(|(s, _)| *s <= stream)
            .last()
            .map(|(_, m)| m.as_str());
        match setting {
            "joined" => membership == Some("join"),
            "invited" => matches!(membership, Some("join" | "invite")),
            // "shared" (and unknown values, read as the default).
            _ => true,
        }
    }

    /// Whether the room's history is world-readable now (a non-member may read it).
    pub fn world_readable(&self) -> bool {
        self.settings.last().is_some_and(|(_, v)| v == "world_readable")
    }
}

#[cfg(test)]
mod visibility_tests {
    use super::Visibility;

    fn v(memberships: &[(i64, &str)], settings: &[(i64, &str)], until: Option<i64>) -> Visibility {
        Visibility {
            memberships: memberships.iter().map(|(s, m)| (*s, (*m).to_owned())).collect(),
            settings: settings.iter().map(|(s, m)| (*s, (*m).to_owned())).collect(),
            until,
        }
    }

    #[test]
    fn per_event_settings() {
        // Invited at 10, joined at 20, left at 40; "joined" from 5, "invited" from 30.
        let vis = v(
            &[(10, "invite"), (20, "join"), (40, "leave")],
            &[(5, "joined"), (30, "invited")],
            Some(40),
        );
        assert!(
            vis.can_see(3),
            "before any setting: shared, and before the user's leave"
        );
        assert!(!vis.can_see(15), "joined-only and the user was only invited");
        assert!(vis.can_see(25), "joined then");
        assert!(vis.can_see(35), "invited-visibility while joined");
        assert!(!vis.can_see(45), "after the leave");
        // shared: everything up to the leave, even before joining.
        let shared = v(&[(20, "join"), (40, "leave")], &[], Some(40));
        assert!(shared.can_see(3) && shared.can_see(40) && !shared.can_see(41));
        // world_readable: anyone, never joined included.
        let open = v(&[], &[(1, "world_readable")], None);
        assert!(open.can_see(2) && open.world_readable());
        assert!(!v(&[], &[], None).can_see(2));
    }
}
