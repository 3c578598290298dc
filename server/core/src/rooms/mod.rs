//! Rooms and their events. Every event is a real PDU from the start: hashed and signed with
//! the server key, its ID the reference hash, `prev_events`/`auth_events`/`depth` set, and
//! accepted only if ruma-state-res's authorization rules pass against the room's state.
//!
//! Appends are serialised (one room lock while an event is built, one process-wide lock
//! around the commit) so that stream positions become visible in order: a sync that has seen
//! position N never misses an event below N.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::streams::Streams;
use estuary_store::{NewEvent, RoomRecord, Store, StoredEvent};
use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::RoomVersionRules;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, RoomVersionId, UserId,
};
use serde_json::Value;

use crate::keys::ServerKey;
use crate::{CoreError, now_ms, random};

pub mod create;
pub mod pdu;

pub use pdu::Pdu;

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

pub struct Rooms {
    store: Arc<dyn Store>,
    key: Arc<ServerKey>,
    server_name: OwnedServerName,
    room_locks: Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
    append_lock: tokio::sync::Mutex<()>,
    streams: Arc<Streams>,
    recent_txns: Mutex<RecentTxns>,
    /// Members of rooms, as `members` reads them from the current state; an entry goes when
    /// a member event is appended to or redacted in its room.
    members_cache: Mutex<HashMap<String, Members>>,
    /// Bumped by every such change, so a read that raced one is not cached.
    members_epoch: std::sync::atomic::AtomicU64,
}

/// A room's members: user ID -> (membership, their member event).
pub type Members = Arc<BTreeMap<String, (String, StoredEvent)>>;

/// Rooms whose members are kept in memory at most (then the cache starts over).
const MEMBERS_CACHED: usize = 10_000;

/// The transaction IDs of recent client sends, shown to the sending device as
/// `unsigned.transaction_id` so it can match its local echo. Memory only, bounded.
#[derive(Default)]
struct RecentTxns {
    by_event: HashMap<String, (String, String)>,
    order: std::collections::VecDeque<String>,
}

const RECENT_TXNS: usize = 10_000;

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
        Self {
            store,
            key,
            server_name,
            room_locks: Mutex::new(HashMap::new()),
            append_lock: tokio::sync::Mutex::new(()),
            streams,
            recent_txns: Mutex::default(),
            members_cache: Mutex::default(),
            members_epoch: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn server_name(&self) -> &OwnedServerName {
        &self.server_name
    }

    fn remember_txn(&self, event_id: &str, localpart: &str, device_id: &str, txn_id: &str) {
        let mut r = self.recent_txns.lock().unwrap_or_else(|p| p.into_inner());
        r.by_event.insert(
            event_id.to_owned(),
            (format!("{localpart}\u{0}{device_id}"), txn_id.to_owned()),
        );
        r.order.push_back(event_id.to_owned());
        while r.order.len() > RECENT_TXNS {
            if let Some(old) = r.order.pop_front() {
                r.by_event.remove(&old);
            }
        }
    }

    /// The transaction ID under which this device sent the event, if it did (recently).
    pub fn txn_of(&self, event_id: &str, localpart: &str, device_id: &str) -> Option<String> {
        let r = self.recent_txns.lock().unwrap_or_else(|p| p.into_inner());
        let (who, txn) = r.by_event.get(event_id)?;
        (who == &format!("{localpart}\u{0}{device_id}")).then(|| txn.clone())
    }

    /// The highest committed event position.
    pub fn current_position(&self) -> i64 {
        self.streams.current().events
    }

    fn room_lock(&self, room_id: &RoomId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.room_locks.lock().unwrap_or_else(|p| p.into_inner());
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

    /// Add an event to a room as `sender`; returns the event ID and its stream position.
    /// A repeated `txn` returns the event of the first request instead.
    pub async fn send(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        template: EventTemplate,
        txn: Option<TxnKey>,
    ) -> Result<(OwnedEventId, i64), CoreError> {
        let lock = self.room_lock(room_id);
        let _guard = lock.lock().await;
        if let Some((lp, device, txn_id)) = &txn
            && let Some(existing) = self.store.txn_event(lp, device, txn_id).await?
        {
            let stored = self
                .store
                .event(&existing)
                .await?
                .ok_or_else(|| CoreError::Internal("txn event vanished".into()))?;
            let id = OwnedEventId::try_from(existing).map_err(|e| CoreError::Internal(e.to_string()))?;
            return Ok((id, stored.stream_ordering));
        }
        let room = self
            .store
            .room(room_id.as_str())
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("room {room_id}")))?;
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
        self.append_locked(&room, sender, template, txn).await
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
        let levels = self.power_levels(room_id.as_str()).await?;
        if levels.user(sender.as_str()) >= levels.get("redact", 50) {
            Ok(())
        } else {
            Err(CoreError::Forbidden(
                "you may only redact your own events in this room".to_owned(),
            ))
        }
    }

    /// The room's current power levels.
    pub async fn power_levels(&self, room_id: &str) -> Result<PowerLevels, CoreError> {
        let content = match self
            .store
            .current_state_event(room_id, "m.room.power_levels", "")
            .await?
        {
            Some(e) => Pdu::from_stored(&e)?.content_value(),
            None => Value::Null,
        };
        Ok(PowerLevels(content))
    }

    /// Build, sign, authorise and append one event. The caller holds the room lock.
    async fn append_locked(
        &self,
        room: &RoomRecord,
        sender: &UserId,
        t: EventTemplate,
        txn: Option<TxnKey>,
    ) -> Result<(OwnedEventId, i64), CoreError> {
        let (_, rules) = rules_for(&room.room_version)?;
        let room_id = RoomId::parse(&room.room_id).map_err(|e| CoreError::Internal(e.to_string()))?;
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
            if let Some(e) = self
                .store
                .current_state_event(room_id.as_str(), &ty.to_string(), key)
                .await?
            {
                state.insert((ty.clone(), key.clone()), Pdu::from_stored(&e)?);
            }
        }
        let auth_events: Vec<OwnedEventId> = state.values().map(|p| p.event_id.clone()).collect();

        let mut extremities = self.store.forward_extremities(room_id.as_str()).await?;
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
            ruma::signatures::reference_hash(&object, &rules).map_err(|e| CoreError::Internal(e.to_string()))?
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
            Some(key) => self
                .store
                .current_state_event(room_id.as_str(), &t.kind, key)
                .await?
                .map(|prev| {
                    (
                        prev.event_id.clone(),
                        Pdu::from_stored(&prev)
                            .map(|p| p.content.get().to_owned())
                            .unwrap_or_default(),
                    )
                }),
            None => None,
        };
        // m.relates_to (cleartext even in encrypted events), to an event of this room.
        let relation = match (
            t.content["m.relates_to"]["rel_type"].as_str(),
            t.content["m.relates_to"]["event_id"].as_str(),
        ) {
            (Some(rel_type), Some(target)) => match self.store.event(target).await? {
                Some(e) if e.room_id == room_id.as_str() => Some((rel_type.to_owned(), target.to_owned())),
                _ => None,
            },
            _ => None,
        };
        let membership = (pdu.kind == TimelineEventType::RoomMember)
            .then(|| t.content.get("membership").and_then(Value::as_str).map(str::to_owned))
            .flatten();
        let new = NewEvent {
            event_id: event_id.clone(),
            room_id: room_id.to_string(),
            depth,
            sender: sender.to_string(),
            kind: t.kind.clone(),
            state_key: t.state_key.clone(),
            origin_server_ts: u64::from(pdu.origin_server_ts.0).try_into().unwrap_or(i64::MAX),
            pdu: json,
            membership,
            prev_events,
            txn: txn.clone(),
            replaces_state,
            relation,
        };
        let stream = {
            let _append = self.append_lock.lock().await;
            let stream = self.store.append_event(&new).await?;
            // What readers woken by the advance look up is current before it.
            if t.kind == "m.room.member" {
                self.forget_members(room_id.as_str());
            }
            if let Some((lp, device, txn_id)) = &txn {
                self.remember_txn(&event_id, lp, device, txn_id);
            }
            self.streams.advance(|p| p.events = p.events.max(stream));
            stream
        };
        if let Some(redacted) = &t.redacts {
            let because = serde_json::json!({
                "event_id": event_id,
                "type": t.kind,
                "sender": sender.as_str(),
                "origin_server_ts": new.origin_server_ts,
                "content": t.content,
                "redacts": redacted.as_str(),
            });
            self.apply_redaction(&rules, redacted, &event_id, &because.to_string())
                .await?;
            self.forget_members(room_id.as_str());
        }
        Ok((pdu.event_id, stream))
    }

    /// Replace a redacted event's stored PDU by its redacted form (spec: "Redactions").
    async fn apply_redaction(
        &self,
        rules: &RoomVersionRules,
        target: &ruma::EventId,
        redaction_id: &str,
        because: &str,
    ) -> Result<(), CoreError> {
        let Some(stored) = self.store.event(target.as_str()).await? else {
            return Ok(());
        };
        let object: CanonicalJsonObject =
            serde_json::from_str(&stored.pdu).map_err(|e| CoreError::Internal(e.to_string()))?;
        let redacted = ruma::canonical_json::redact(object, &rules.redaction, None)
            .map_err(|e| CoreError::Internal(e.to_string()))?;
        let json = serde_json::to_string(&redacted).map_err(|e| CoreError::Internal(e.to_string()))?;
        self.store
            .redact_event(target.as_str(), &json, redaction_id, because)
            .await?;
        Ok(())
    }

    pub async fn event(&self, event_id: &str) -> Result<Option<StoredEvent>, CoreError> {
        Ok(self.store.event(event_id).await?)
    }

    pub async fn current_state(&self, room_id: &str) -> Result<Vec<StoredEvent>, CoreError> {
        Ok(self.store.current_state(room_id).await?)
    }

    pub async fn state_event(
        &self,
        room_id: &str,
        kind: &str,
        state_key: &str,
    ) -> Result<Option<StoredEvent>, CoreError> {
        Ok(self.store.current_state_event(room_id, kind, state_key).await?)
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
        let Some(e) = self
            .store
            .current_state_event(room_id, "m.room.member", user_id.as_str())
            .await?
        else {
            return Ok(None);
        };
        let content: Value = serde_json::from_str::<Value>(&e.pdu)
            .ok()
            .map(|p| p["content"].clone())
            .unwrap_or_default();
        Ok(content.get("membership").and_then(Value::as_str).map(str::to_owned))
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

    fn forget_members(&self, room_id: &str) {
        self.members_epoch.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.members_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(room_id);
    }

    /// Members of a room by membership, from the current state (read once per change: every
    /// sync asks for every joined room).
    pub async fn members(&self, room_id: &str) -> Result<Members, CoreError> {
        if let Some(m) = self
            .members_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(room_id)
        {
            return Ok(m.clone());
        }
        let epoch = self.members_epoch.load(std::sync::atomic::Ordering::SeqCst);
        let members: Members = Arc::new(self.read_members(room_id).await?);
        let mut cache = self.members_cache.lock().unwrap_or_else(|p| p.into_inner());
        if self.members_epoch.load(std::sync::atomic::Ordering::SeqCst) == epoch {
            if cache.len() >= MEMBERS_CACHED {
                cache.clear();
            }
            cache.insert(room_id.to_owned(), members.clone());
        }
        Ok(members)
    }

    async fn read_members(&self, room_id: &str) -> Result<BTreeMap<String, (String, StoredEvent)>, CoreError> {
        let mut out = BTreeMap::new();
        for e in self.store.current_state(room_id).await? {
            if e.kind == "m.room.member"
                && let Some(user) = &e.state_key
            {
                let membership = serde_json::from_str::<Value>(&e.pdu)
                    .ok()
                    .and_then(|p| p["content"]["membership"].as_str().map(str::to_owned));
                out.insert(user.clone(), (membership.unwrap_or_default(), e));
            }
        }
        Ok(out)
    }
}

/// A string field of a stored PDU's content ("" when absent).
fn content_field(pdu: &str, key: &str) -> String {
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
