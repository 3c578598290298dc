//! Relations (spec: "Relationships between events"): `/relations`, `/threads`, `/context`, and
//! the server-side aggregations in `unsigned.m.relations` (latest edit, thread summary,
//! references). Reactions are not aggregated by the server (spec v1.7 dropped that).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use estuary_core::StoredEvent;
use ruma::api::Direction;
use ruma::api::client::context::get_context::v3 as context;
use ruma::api::client::relations::{
    get_relating_events::v1 as rel_all, get_relating_events_with_rel_type::v1 as rel_type,
    get_relating_events_with_rel_type_and_event_type::v1 as rel_type_kind,
};
use ruma::api::client::threads::get_threads::v1 as threads;
use ruma::{EventId, RoomId};
use serde_json::{Value, json};

use crate::events::client_event_for;
use crate::sync::{parse_token, token};
use crate::{Caller, MatrixError, MatrixState, Ruma};

type JsonResult = Result<Json<Value>, MatrixError>;

const DEFAULT_LIMIT: i64 = 10;
const MAX_LIMIT: i64 = 100;

/// Events in the client format for `viewer`, with relation aggregations added (only from
/// relating events at or below `visible`).
pub async fn for_client(
    state: &MatrixState,
    viewer: &Caller,
    events: &[StoredEvent],
    with_room_id: bool,
    visible: i64,
) -> Result<Vec<Value>, MatrixError> {
    // Spec (m.ignored_user_list): events from ignored users are not sent; their state events
    // are, so the room's state stays whole (as Synapse does).
    let ignored = ignored_users(state, &viewer.localpart).await;
    // Spec: each event as its room's history visibility allowed the viewer to see it then.
    let mut visibility: std::collections::HashMap<&str, estuary_core::rooms::Visibility> = Default::default();
    let mut shown = Vec::with_capacity(events.len());
    for e in events {
        if e.state_key.is_none() && ignored.contains(&e.sender) {
            continue;
        }
        if !visibility.contains_key(e.room_id.as_str()) {
            let v = state.core.rooms.visibility(&e.room_id, &viewer.user_id).await?;
            visibility.insert(e.room_id.as_str(), v);
        }
        if visibility
            .get(e.room_id.as_str())
            .is_some_and(|v| v.can_see(e.stream_ordering))
        {
            shown.push(e);
        }
    }
    // Nothing to bundle from rooms that never had an event relating to another.
    let relations = &state.core.streams.room_relations;
    let bundles = shown
        .iter()
        .any(|e| relations.rows(&e.room_id) != estuary_core::streams::Rows::Nothing);
    let mut out: Vec<Value> = shown
        .into_iter()
        .map(|e| client_event_for(state, viewer, e, with_room_id))
        .collect();
    if bundles {
        annotate(state, viewer, &mut out, visible).await?;
    }
    Ok(out)
}

/// The users a user ignores (`m.ignored_user_list`).
pub async fn ignored_users(state: &MatrixState, localpart: &str) -> std::collections::BTreeSet<String> {
    state
        .core
        .account_data
        .get(localpart, None, "m.ignored_user_list")
        .await
        .ok()
        .flatten()
        .and_then(|v| {
            v.get("ignored_users")
                .and_then(Value::as_object)
                .map(|o| o.keys().cloned().collect())
        })
        .unwrap_or_default()
}

/// Add `unsigned.m.relations` to client events that have edits, threads or references.
pub async fn annotate(
    state: &MatrixState,
    viewer: &Caller,
    events: &mut [Value],
    visible: i64,
) -> Result<(), MatrixError> {
    let ids: Vec<String> = events
        .iter()
        .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
        .collect();
    let mut relations = state
        .core
        .store
        .relations_to(&ids)
        .await
        .map_err(estuary_core::CoreError::from)?;
    relations.retain(|r| r.stream_ordering <= visible);
    if relations.is_empty() {
        return Ok(());
    }
    let mut by_target: HashMap<&str, Vec<&estuary_core::Relation>> = HashMap::new();
    for r in &relations {
        by_target.entry(r.relates_to.as_str()).or_default().push(r);
    }
    for event in events.iter_mut() {
        let Some(rels) = event["event_id"].as_str().and_then(|id| by_target.get(id)) else {
            continue;
        };
        let sender = event["sender"].as_str().unwrap_or_default().to_owned();
        let mut agg = serde_json::Map::new();
        // Spec: only edits by the original sender count; the latest (by stream) wins.
        if let Some(edit) = rels
            .iter()
            .filter(|r| r.rel_type == "m.replace" && r.sender == sender)
            .max_by_key(|r| r.stream_ordering)
            && let Some(e) = state.core.rooms.event(&edit.event_id).await?
        {
            agg.insert("m.replace".into(), client_event_for(state, viewer, &e, true));
        }
        let thread: Vec<_> = rels.iter().filter(|r| r.rel_type == "m.thread").collect();
        if let Some(latest) = thread.iter().max_by_key(|r| r.stream_ordering)
            && let Some(e) = state.core.rooms.event(&latest.event_id).await?
        {
            let participated =
                sender == viewer.user_id.as_str() || thread.iter().any(|r| r.sender == viewer.user_id.as_str());
            agg.insert(
                "m.thread".into(),
                json!({ "latest_event": client_event_for(state, viewer, &e, true), "count": thread.len(), "current_user_participated": participated }),
            );
        }
        let references: Vec<Value> = rels
            .iter()
            .filter(|r| r.rel_type == "m.reference")
            .map(|r| json!({ "event_id": r.event_id }))
            .collect();
        if !references.is_empty() {
            agg.insert("m.reference".into(), json!({ "chunk": references }));
        }
        if !agg.is_empty() {
            event["unsigned"]["m.relations"] = Value::Object(agg);
        }
    }
    Ok(())
}

/// The viewer may see a room's history while joined, up to the end of their last joined
/// period after leaving, and nothing if they never joined.
pub(crate) async fn visible_until(state: &MatrixState, room_id: &RoomId, caller: &Caller) -> Result<i64, MatrixError> {
    if !state.core.rooms.known(room_id.as_str()).await? {
        return Err(MatrixError::not_found("Unknown room"));
    }
    if state.core.rooms.is_forgotten(room_id.as_str(), &caller.user_id).await? {
        return Err(MatrixError::forbidden("You forgot this room"));
    }
    let rooms = &state.core.rooms;
    match rooms.joined_until(room_id.as_str(), &caller.user_id).await? {
        Some(until) => Ok(until),
        // A world-readable room's history is anyone's to read (each event still by the
        // setting it was sent under).
        None if rooms
            .visibility(room_id.as_str(), &caller.user_id)
            .await?
            .world_readable() =>
        {
            Ok(i64::MAX)
        }
        None => Err(MatrixError::forbidden("You are not a member of this room")),
    }
}

async fn target_in_room(
    state: &MatrixState,
    room_id: &RoomId,
    event_id: &EventId,
    visible: i64,
) -> Result<StoredEvent, MatrixError> {
    match state.core.rooms.event(event_id.as_str()).await? {
        Some(e) if e.room_id == room_id.as_str() && e.stream_ordering <= visible => Ok(e),
        _ => Err(MatrixError::not_found("Event not found")),
    }
}

#[allow(clippy::too_many_arguments)]
async fn relating(
    state: &MatrixState,
    caller: &Caller,
    room_id: &RoomId,
    event_id: &EventId,
    rel: Option<&str>,
    kind: Option<&str>,
    from: Option<&str>,
    to: Option<&str>,
    dir: Direction,
    limit: Option<u64>,
) -> JsonResult {
    let visible = visible_until(state, room_id, caller).await?;
    target_in_room(state, room_id, event_id, visible).await?;
    let limit = limit
        .map_or(DEFAULT_LIMIT, |l| i64::try_from(l).unwrap_or(MAX_LIMIT))
        .clamp(1, MAX_LIMIT);
    let now = state.core.rooms.current_position().min(visible);
    let from = from.map(parse_token).transpose()?;
    let to = to.map(parse_token).transpose()?;
    let store = &state.core.store;
    let (events, next) = match dir {
        Direction::Backward => {
            let upper = from.unwrap_or(now).min(now);
            let mut events = store
                .relating_events(event_id.as_str(), rel, kind, to.unwrap_or(0), upper, limit, true)
                .await
                .map_err(estuary_core::CoreError::from)?;
            let next = events
                .first()
                .map(|e| e.stream_ordering - 1)
                .filter(|_| events.len() as i64 == limit);
            events.reverse();
            (events, next)
        }
        Direction::Forward => {
            let upper = to.unwrap_or(now).min(now);
            let events = store
                .relating_events(event_id.as_str(), rel, kind, from.unwrap_or(0), upper, limit, false)
                .await
                .map_err(estuary_core::CoreError::from)?;
            let next = events
                .last()
                .map(|e| e.stream_ordering)
                .filter(|_| events.len() as i64 == limit);
            (events, next)
        }
    };
    let mut out = json!({ "chunk": for_client(state, caller, &events, true, visible).await? });
    if let Some(n) = next {
        out["next_batch"] = json!(token(n));
    }
    Ok(Json(out))
}

pub async fn relations(State(state): State<Arc<MatrixState>>, req: Ruma<rel_all::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    relating(
        &state,
        caller,
        &b.room_id,
        &b.event_id,
        None,
        None,
        b.from.as_deref(),
        b.to.as_deref(),
        b.dir,
        b.limit.map(u64::from),
    )
    .await
}

pub async fn relations_by_type(State(state): State<Arc<MatrixState>>, req: Ruma<rel_type::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    let rel = b.rel_type.to_string();
    relating(
        &state,
        caller,
        &b.room_id,
        &b.event_id,
        Some(&rel),
        None,
        b.from.as_deref(),
        b.to.as_deref(),
        b.dir,
        b.limit.map(u64::from),
    )
    .await
}

pub async fn relations_by_type_and_kind(
    State(state): State<Arc<MatrixState>>,
    req: Ruma<rel_type_kind::Request>,
) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    let (rel, kind) = (b.rel_type.to_string(), b.event_type.to_string());
    relating(
        &state,
        caller,
        &b.room_id,
        &b.event_id,
        Some(&rel),
        Some(&kind),
        b.from.as_deref(),
        b.to.as_deref(),
        b.dir,
        b.limit.map(u64::from),
    )
    .await
}

/// `GET /rooms/{roomId}/threads`: thread roots, most recently active first.
pub async fn list_threads(State(state): State<Arc<MatrixState>>, req: Ruma<threads::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    let visible = visible_until(&state, &b.room_id, caller).await?;
    let limit = b
        .limit
        .map_or(DEFAULT_LIMIT, |l| i64::try_from(u64::from(l)).unwrap_or(MAX_LIMIT))
        .clamp(1, MAX_LIMIT);
    let before = match &b.from {
        Some(t) => parse_token(t)?,
        None => i64::MAX,
    };
    let participated_only = b.include == threads::IncludeThreads::Participated;
    let roots = state
        .core
        .store
        .thread_roots(b.room_id.as_str(), before, limit)
        .await
        .map_err(estuary_core::CoreError::from)?;
    let mut chunk = Vec::new();
    for (root, _) in &roots {
        if let Some(e) = state.core.rooms.event(root).await?
            && e.stream_ordering <= visible
        {
            chunk.push(e);
        }
    }
    let mut events = for_client(&state, caller, &chunk, true, visible).await?;
    if participated_only {
        events.retain(|e| e["unsigned"]["m.relations"]["m.thread"]["current_user_participated"] == true);
    }
    let mut out = json!({ "chunk": events });
    if roots.len() as i64 == limit
        && let Some((_, latest)) = roots.last()
    {
        out["next_batch"] = json!(token(*latest));
    }
    Ok(Json(out))
}

/// `GET /rooms/{roomId}/context/{eventId}`: the event with events before and after it, and the
/// room's current state.
pub async fn get_context(State(state): State<Arc<MatrixState>>, req: Ruma<context::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    let visible = visible_until(&state, &b.room_id, caller).await?;
    let event = target_in_room(&state, &b.room_id, &b.event_id, visible).await?;
    let limit = i64::try_from(u64::from(b.limit))
        .unwrap_or(DEFAULT_LIMIT)
        .clamp(0, MAX_LIMIT);
    let before_n = limit / 2;
    let after_n = limit - before_n;
    let store = &state.core.store;
    let room = b.room_id.as_str();
    let mut before = store
        .room_events(room, 0, event.stream_ordering - 1, before_n.max(1), true)
        .await
        .map_err(estuary_core::CoreError::from)?;
    if before_n == 0 {
        before.clear();
    }
    before.reverse();
    let upper = state.core.rooms.current_position().min(visible);
    let mut after = store
        .room_events(room, event.stream_ordering, upper, after_n.max(1), false)
        .await
        .map_err(estuary_core::CoreError::from)?;
    if after_n == 0 {
        after.clear();
    }
    let start = before
        .last()
        .map_or(event.stream_ordering - 1, |e| e.stream_ordering - 1);
    let end = after.last().map_or(event.stream_ordering, |e| e.stream_ordering);
    // Spec: the state at the last event returned (never past a departed user's leave).
    let state_events = state.core.rooms.state_at(room, end).await?;
    Ok(Json(json!({
        "event": for_client(&state, caller, std::slice::from_ref(&event), true, visible).await?.pop(),
        "events_before": for_client(&state, caller, &before, true, visible).await?,
        "events_after": for_client(&state, caller, &after, true, visible).await?,
        "state": state_events.iter().map(|e| crate::events::client_event(e, true)).collect::<Vec<_>>(),
        "start": token(start.max(0)),
        "end": token(end),
    })))
}
