//! A room's state where its history branches: the state after each event (state groups), state
//! resolution v2 where branches meet, and the path of an event another server built (what
//! federation's `/send` hands in): checked as the spec's "Checks performed on receipt of a
//! PDU" say, then stored with the room's new current state.
//!
//! On one server a room's history is one line (the writer serialises each room), so local
//! events only extend the single extremity's group. Branches come from other servers: an
//! event whose `prev_events` are not the room's extremities, or several of them.

use std::collections::{BTreeMap, HashMap};

use estuary_store::{EventGroup, NewEvent, NewStateGroup, StateChange, StateEntry, StateUpdate, StoredEvent};
use ruma::events::StateEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::signatures::{PublicKeyMap, Verified};
use ruma::state_res::utils::event_id_set::EventIdSet;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, RoomId};
use serde_json::Value;

use super::{Pdu, Rooms, rules_for};
use crate::CoreError;

/// A room state: (type, state key) -> event ID.
pub type StateIds = BTreeMap<(String, String), String>;

/// A full group every this many groups of a chain, so that reading a group's state walks at
/// most this many rows.
const FULL_EVERY: i64 = 100;

/// The state group after an event built on the state in `group` (None: none stored), and the
/// group to store if the event starts one. A state event starts one: a delta of one entry, or
/// the whole state (`full`, with the event put in) when the chain is long or there is no group
/// to build on. Any other event starts one only when there is no group to name.
pub(super) fn group_after(
    group: Option<&(String, i64)>,
    event_id: &str,
    own: Option<(&str, &str)>,
    full: impl FnOnce() -> StateIds,
) -> Result<(String, Option<NewStateGroup>), CoreError> {
    let new = |prev: Option<&String>, chain: i64, entries: String| NewStateGroup {
        id: event_id.to_owned(),
        prev: prev.cloned(),
        chain,
        entries,
    };
    Ok(match (group, own) {
        (Some((id, _)), None) => (id.clone(), None),
        (Some((id, chain)), Some(own)) if chain + 1 < FULL_EVERY => (
            event_id.to_owned(),
            Some(new(Some(id), chain + 1, encode(&[[own.0, own.1, event_id]])?)),
        ),
        _ => {
            let mut state = full();
            if let Some((kind, key)) = own {
                state.insert((kind.to_owned(), key.to_owned()), event_id.to_owned());
            }
            (
                event_id.to_owned(),
                Some(new(None, 0, encode(&encode_entries(&state))?)),
            )
        }
    })
}

fn encode<T: serde::Serialize>(v: &T) -> Result<String, CoreError> {
    serde_json::to_string(v).map_err(|e| CoreError::Internal(e.to_string()))
}

fn encode_entries(state: &StateIds) -> Vec<[&str; 3]> {
    state
        .iter()
        .map(|((kind, key), id)| [kind.as_str(), key.as_str(), id.as_str()])
        .collect()
}

/// What became of an event another server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// Stored, at this stream position.
    Accepted(i64),
    /// Already stored.
    Known,
    /// Allowed by the state it was built on, but not by the room's current state (spec:
    /// "soft failure"): not stored, not shown to clients, and not built on.
    SoftFailed(String),
}

impl Rooms {
    /// The room's state after an event.
    pub async fn state_after(&self, event_id: &str) -> Result<StateIds, CoreError> {
        let at = self
            .store
            .event_group(event_id)
            .await?
            .ok_or_else(|| CoreError::NotFound(format!("event {event_id}")))?;
        self.state_of(&at).await
    }

    /// The state after the event `at` stands for.
    async fn state_of(&self, at: &EventGroup) -> Result<StateIds, CoreError> {
        let Some(group) = &at.state_group else {
            // Stored before state groups, when history was one line.
            let state = self.store.state_at(&at.room_id, at.stream_ordering, false).await?;
            return Ok(state
                .into_iter()
                .filter_map(|e| Some(((e.kind, e.state_key?), e.event_id)))
                .collect());
        };
        let mut state = StateIds::new();
        for entries in self.store.state_group_chain(group).await? {
            let entries: Vec<[String; 3]> =
                serde_json::from_str(&entries).map_err(|e| CoreError::Internal(format!("state group {group}: {e}")))?;
            for [kind, key, id] in entries {
                state.insert((kind, key), id);
            }
        }
        if state.is_empty() {
            return Err(CoreError::Internal(format!("state group {group} is missing")));
        }
        Ok(state)
    }

    /// Take in a PDU another server built (spec: Server-Server API, "Checks performed on
    /// receipt of a PDU"): its format, hashes and signatures (`keys` holds the public keys
    /// of the servers that signed it), authorisation by its auth events, by the state before
    /// it (the resolved states of its prev_events) and by the room's current state. Then it
    /// is stored, with its state group and the room's new current state: the resolution of
    /// the extremities' states when branches remain. Refused (nothing stored): a room this
    /// server does not have, a malformed or badly signed PDU, prev or auth events not stored
    /// here (`NotFound`; federation fetches them first), and an event the auth rules reject.
    pub async fn ingest(
        &self,
        mut object: CanonicalJsonObject,
        keys: &PublicKeyMap,
    ) -> Result<(OwnedEventId, Ingested), CoreError> {
        let room_id = match object.get("room_id") {
            Some(CanonicalJsonValue::String(r)) => {
                RoomId::parse(r.as_str()).map_err(|e| CoreError::InvalidParam(format!("room_id: {e}")))?
            }
            _ => return Err(CoreError::InvalidParam("the PDU has no room_id".into())),
        };
        let version = self.version(room_id.as_str()).await?;
        let (_, rules) = rules_for(&version)?;
        object.remove("unsigned");
        ruma::state_res::check_pdu_format(&object, &rules.event_format).map_err(CoreError::InvalidParam)?;
        match ruma::signatures::verify_event(keys, &object, &rules) {
            Ok(Verified::All) => {}
            // Spec: a PDU whose content hash does not match is redacted, then processed.
            Ok(Verified::Signatures) => {
                object = ruma::canonical_json::redact(object, &rules.redaction, None)
                    .map_err(|e| CoreError::InvalidParam(format!("cannot redact the PDU: {e}")))?;
            }
            Err(e) => return Err(CoreError::Forbidden(format!("signature check failed: {e}"))),
        }
        let event_id = format!(
            "${}",
            ruma::signatures::reference_hash(&object, &rules).map_err(|e| CoreError::InvalidParam(e.to_string()))?
        );
        let id = EventId::parse(&event_id).map_err(|e| CoreError::Internal(e.to_string()))?;
        let guard = self.room_lock(&room_id).lock_owned().await;
        // The extremities it is resolved against must all be in the store: none queued ahead.
        self.writer.settle().await?;
        if self.store.event(&event_id).await?.is_some() {
            return Ok((id, Ingested::Known));
        }
        let json = serde_json::to_string(&object).map_err(|e| CoreError::Internal(e.to_string()))?;
        let pdu = Pdu::from_json(&event_id, &json).map_err(|e| CoreError::InvalidParam(e.to_string()))?;

        // Its auth events, which must be stored and of this room, authorise it.
        let auth: Vec<Pdu> = self.room_pdus(&room_id, &pdu.auth_events).await?;
        let by_id: HashMap<&EventId, &Pdu> = auth.iter().map(|p| (p.event_id.as_ref(), p)).collect();
        ruma::state_res::check_state_independent_auth_rules(&rules.authorization, &pdu, |id| by_id.get(id).copied())
            .map_err(|e| CoreError::Forbidden(format!("rejected by its auth events: {e}")))?;
        authorize(&rules, &pdu, auth.iter().cloned())
            .map_err(|e| CoreError::Forbidden(format!("rejected by its auth events: {e}")))?;

        // The state before it: its prev_events' states, resolved. They must be stored, in
        // this room.
        let mut prev_groups = Vec::with_capacity(pdu.prev_events.len());
        let mut branches = Vec::with_capacity(pdu.prev_events.len());
        for prev in &pdu.prev_events {
            let at = match self.store.event_group(prev.as_str()).await? {
                Some(at) if at.room_id == room_id.as_str() => at,
                _ => return Err(CoreError::NotFound(format!("event {prev} of room {room_id}"))),
            };
            branches.push(self.state_of(&at).await?);
            prev_groups.push(at);
        }
        let before = match branches.as_slice() {
            [one] => one.clone(),
            _ => resolve_with(self, &rules, &branches, None).await?,
        };
        let before_pdus = self.auth_state(&room_id, &rules, &pdu, &before).await?;
        authorize(&rules, &pdu, before_pdus.into_iter())
            .map_err(|e| CoreError::Forbidden(format!("rejected by the state before it: {e}")))?;

        // Soft failure: the room's current state must allow it too.
        let current = self.room_state(room_id.as_str()).await?.ids();
        let current_pdus = self.auth_state(&room_id, &rules, &pdu, &current).await?;
        if let Err(e) = authorize(&rules, &pdu, current_pdus.into_iter()) {
            tracing::info!(event = %event_id, room = %room_id, "soft-failed: {e}");
            return Ok((id, Ingested::SoftFailed(e)));
        }

        // The state after it, and the room's current state: the resolution of the
        // extremities' states once it replaces its prev_events among them.
        let own = pdu
            .state_key
            .as_deref()
            .map(|key| (pdu.kind.to_string(), key.to_owned()));
        let mut after = before.clone();
        if let Some(own) = &own {
            after.insert(own.clone(), event_id.clone());
        }
        let prevs: Vec<&str> = pdu.prev_events.iter().map(|e| e.as_str()).collect();
        let mut tips = vec![after.clone()];
        for (tip, _) in self.extremities(room_id.as_str()).await? {
            if !prevs.contains(&tip.as_str()) {
                tips.push(self.state_after(&tip).await?);
            }
        }
        let resolved = match tips.as_slice() {
            [one] => one.clone(),
            _ => resolve_with(self, &rules, &tips, Some(&pdu)).await?,
        };
        let changes = self
            .changes(&current, &resolved, (&event_id, own.as_ref()), pdu.membership())
            .await?;

        let (state_group, new_group) = match prev_groups.as_slice() {
            [at] => {
                let group = at.state_group.clone().map(|g| (g, at.chain.unwrap_or(0)));
                let own = own.as_ref().map(|(k, s)| (k.as_str(), s.as_str()));
                group_after(group.as_ref(), &event_id, own, || before.clone())?
            }
            _ => group_after(None, &event_id, None, || after.clone())?,
        };
        let replaces_state = match &own {
            Some(key) => match before.get(key) {
                Some(prev) => self
                    .store
                    .event(prev)
                    .await?
                    .map(|e| Pdu::from_stored(&e).map(|p| (e.event_id, p.content.get().to_owned())))
                    .transpose()?,
                None => None,
            },
            None => None,
        };
        let relation = self.relation_of(&room_id, &pdu.content_value()).await?;
        let redaction = match &pdu.redacts {
            Some(target) if self.may_redact(&room_id, &pdu, target, &before).await? => {
                self.redacted_form(&rules, &pdu, target).await?
            }
            _ => None,
        };
        let new = NewEvent {
            event_id: event_id.clone(),
            room_id: room_id.to_string(),
            depth: i64::try_from(pdu.depth).unwrap_or(i64::MAX),
            sender: pdu.sender.to_string(),
            kind: pdu.kind.to_string(),
            state_key: pdu.state_key.clone(),
            origin_server_ts: pdu.origin_ts(),
            membership: pdu.membership(),
            prev_events: pdu.prev_events.iter().map(ToString::to_string).collect(),
            txn: None,
            replaces_state,
            relation,
            redaction,
            state_group,
            new_group,
            state_update: StateUpdate::Resolved(changes),
            pdu: json,
        };
        let (stream, _guard) = self.writer.append(new, guard).await?;
        Ok((id, Ingested::Accepted(stream)))
    }

    /// The events the room's state was reset to in (after, to] by state resolution (the newest
    /// reset of each key), for an incremental sync: a reset is no event of the timeline.
    pub async fn state_resets(&self, room_id: &str, after: i64, to: i64) -> Result<Vec<StoredEvent>, CoreError> {
        if self.last_reset(room_id).await?.is_none_or(|last| last <= after) {
            return Ok(Vec::new());
        }
        let mut newest = BTreeMap::new();
        for r in self.store.state_resets(room_id, after, to).await? {
            newest.insert((r.kind, r.state_key), r.event_id);
        }
        let mut events = Vec::new();
        for id in newest.into_values().flatten() {
            events.extend(self.store.event(&id).await?);
        }
        events.sort_by_key(|e| e.stream_ordering);
        Ok(events)
    }

    /// The stored events `ids` of this room, as PDUs; NotFound names the first one missing.
    async fn room_pdus(&self, room_id: &RoomId, ids: &[OwnedEventId]) -> Result<Vec<Pdu>, CoreError> {
        let mut pdus = Vec::with_capacity(ids.len());
        for id in ids {
            match self.store.event(id.as_str()).await? {
                Some(e) if e.room_id == room_id.as_str() => pdus.push(Pdu::from_stored(&e)?),
                _ => return Err(CoreError::NotFound(format!("event {id} of room {room_id}"))),
            }
        }
        Ok(pdus)
    }

    /// The events of `state` the auth rules look at for `pdu`.
    async fn auth_state(
        &self,
        room_id: &RoomId,
        rules: &RoomVersionRules,
        pdu: &Pdu,
        state: &StateIds,
    ) -> Result<Vec<Pdu>, CoreError> {
        let types = ruma::state_res::auth_types_for_event(
            &pdu.kind,
            &pdu.sender,
            pdu.state_key.as_deref(),
            &pdu.content,
            &rules.authorization,
        )
        .map_err(CoreError::InvalidParam)?;
        let ids: Vec<OwnedEventId> = types
            .iter()
            .filter_map(|(ty, key)| state.get(&(ty.to_string(), key.clone())))
            .filter_map(|id| EventId::parse(id).ok())
            .collect();
        self.room_pdus(room_id, &ids).await
    }

    /// The current-state entries that differ between `old` and `new`, ready for the store;
    /// also the entry of the new event's own key when the event is not in `new` (the store
    /// records that it did not take its place).
    async fn changes(
        &self,
        old: &StateIds,
        new: &StateIds,
        (own_id, own_key): (&str, Option<&(String, String)>),
        own_membership: Option<String>,
    ) -> Result<Vec<StateChange>, CoreError> {
        let mut changes = Vec::new();
        for ((kind, key), id) in new {
            let k = (kind.clone(), key.clone());
            let lost_own_key = own_key == Some(&k) && id != own_id;
            if old.get(&k) == Some(id) && !lost_own_key {
                continue;
            }
            let entry = if id == own_id {
                StateEntry {
                    event_id: id.clone(),
                    stream_ordering: 0,
                    membership: own_membership.clone(),
                }
            } else {
                let e = self
                    .store
                    .event(id)
                    .await?
                    .ok_or_else(|| CoreError::Internal(format!("resolved state names {id}, not stored")))?;
                let membership = (kind == "m.room.member").then(|| super::content_field(&e.pdu, "membership"));
                StateEntry {
                    event_id: e.event_id,
                    stream_ordering: e.stream_ordering,
                    membership,
                }
            };
            changes.push(StateChange {
                kind: kind.clone(),
                state_key: key.clone(),
                event: Some(entry),
            });
        }
        let gone = old.keys().chain(own_key).filter(|k| !new.contains_key(*k));
        for (kind, key) in gone.collect::<std::collections::BTreeSet<_>>() {
            changes.push(StateChange {
                kind: kind.clone(),
                state_key: key.clone(),
                event: None,
            });
        }
        Ok(changes)
    }

    /// Spec (room versions 3+): a redaction takes effect if its sender's server is the
    /// target's, or the sender has the `redact` power level.
    async fn may_redact(
        &self,
        room_id: &RoomId,
        pdu: &Pdu,
        target: &EventId,
        before: &StateIds,
    ) -> Result<bool, CoreError> {
        let Some(original) = self.store.event(target.as_str()).await? else {
            return Ok(false);
        };
        if original.room_id != room_id.as_str() {
            return Ok(false);
        }
        let target_server = ruma::UserId::parse(&original.sender).ok();
        if target_server.is_some_and(|u| u.server_name() == pdu.sender.server_name()) {
            return Ok(true);
        }
        let levels = match before.get(&("m.room.power_levels".to_owned(), String::new())) {
            Some(id) => match self.store.event(id).await? {
                Some(e) => Pdu::from_stored(&e)?.content_value(),
                None => Value::Null,
            },
            None => Value::Null,
        };
        Ok(super::PowerLevels(levels).may_redact(pdu.sender.as_str()))
    }
}

/// Run the state-dependent auth rules on `pdu` against `state` (the events they look at).
fn authorize(rules: &RoomVersionRules, pdu: &Pdu, state: impl Iterator<Item = Pdu>) -> Result<(), String> {
    let state: HashMap<(StateEventType, String), Pdu> = state
        .filter_map(|p| Some(((StateEventType::from(p.kind.to_string()), p.state_key.clone()?), p)))
        .collect();
    ruma::state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, |ty, key| {
        state.get(&(ty.clone(), key.to_owned()))
    })
}

/// State resolution v2 over `states`: loads the events of the states and their auth chains,
/// then runs ruma-state-res.
/// `pending` is an event not stored yet that a state may name.
async fn resolve_with(
    rooms: &Rooms,
    rules: &RoomVersionRules,
    states: &[StateIds],
    pending: Option<&Pdu>,
) -> Result<StateIds, CoreError> {
    if states.windows(2).all(|w| w[0] == w[1]) {
        return Ok(states.first().cloned().unwrap_or_default());
    }
    let v2 = rules
        .state_res
        .v2_rules()
        .ok_or_else(|| CoreError::Internal("room version without state resolution v2".into()))?;
    let mut events: HashMap<OwnedEventId, Pdu> = pending.map(|p| (p.event_id.clone(), p.clone())).into_iter().collect();
    let mut maps = Vec::with_capacity(states.len());
    let mut chains = Vec::with_capacity(states.len());
    for state in states {
        let mut map = ruma::state_res::StateMap::new();
        for ((kind, key), id) in state {
            let id = EventId::parse(id).map_err(|e| CoreError::Internal(e.to_string()))?;
            map.insert((StateEventType::from(kind.as_str()), key.clone()), id);
        }
        // The auth chain of the state: every auth event of its events, recursively.
        let mut chain = EventIdSet::new();
        let mut todo: Vec<OwnedEventId> = map.values().cloned().collect();
        let mut seen = std::collections::HashSet::new();
        while let Some(id) = todo.pop() {
            if !seen.insert(id.clone()) {
                continue;
            }
            if !events.contains_key(&id) {
                let stored = rooms
                    .store
                    .event(id.as_str())
                    .await?
                    .ok_or_else(|| CoreError::NotFound(format!("event {id} (auth chain)")))?;
                events.insert(id.clone(), Pdu::from_stored(&stored)?);
            }
            for auth in &events[&id].auth_events {
                chain.insert(auth.clone());
                todo.push(auth.clone());
            }
        }
        maps.push(map);
        chains.push(chain);
    }
    let resolved = ruma::state_res::resolve(
        &rules.authorization,
        v2,
        maps.iter(),
        chains,
        |id| events.get(id).cloned(),
        |_| None,
    )
    .map_err(|e| CoreError::Internal(format!("state resolution failed: {e}")))?;
    Ok(resolved
        .into_iter()
        .map(|((ty, key), id)| ((ty.to_string(), key), id.to_string()))
        .collect())
}
