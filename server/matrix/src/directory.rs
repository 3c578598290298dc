//! The room directory (`/publicRooms`, `/directory/list/room`), the user directory, and
//! server-side search of message bodies (unencrypted rooms only: the server cannot read
//! encrypted ones, by design).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ruma::api::client::directory::{
    get_public_rooms::v3 as public_get, get_public_rooms_filtered::v3 as public_post,
    get_room_visibility::v3 as get_visibility, set_room_visibility::v3 as set_visibility,
};
use ruma::api::client::room::Visibility;
use ruma::api::client::search::search_events::v3 as search;
use ruma::api::client::user_directory::search_users::v3 as users;
use serde_json::{Value, json};

use crate::events::client_event;
use crate::{Caller, MatrixError, MatrixState, Ruma};

type JsonResult = Result<Json<Value>, MatrixError>;

const DEFAULT_LIMIT: usize = 50;

/// The directory entry of a room, from its current state.
async fn room_entry(state: &MatrixState, room_id: &str) -> Result<Value, MatrixError> {
    let mut entry = json!({ "room_id": room_id, "num_joined_members": 0, "world_readable": false, "guest_can_join": false, "join_rule": "public" });
    let mut joined = 0;
    for e in state.core.rooms.current_state(room_id).await? {
        let content = client_event(&e, false)["content"].clone();
        match e.kind.as_str() {
            "m.room.name" => entry["name"] = content["name"].clone(),
            "m.room.topic" => entry["topic"] = content["topic"].clone(),
            "m.room.canonical_alias" => entry["canonical_alias"] = content["alias"].clone(),
            "m.room.avatar" => entry["avatar_url"] = content["url"].clone(),
            "m.room.join_rules" => entry["join_rule"] = content["join_rule"].clone(),
            "m.room.history_visibility" => {
                entry["world_readable"] = json!(content["history_visibility"] == "world_readable")
            }
            "m.room.guest_access" => entry["guest_can_join"] = json!(content["guest_access"] == "can_join"),
            "m.room.create" => {
                if let Some(t) = content.get("type") {
                    entry["room_type"] = t.clone();
                }
            }
            "m.room.member" if content["membership"] == "join" => joined += 1,
            _ => {}
        }
    }
    entry["num_joined_members"] = json!(joined);
    if let Some(map) = entry.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    Ok(entry)
}

async fn public_rooms(
    state: &MatrixState,
    server: Option<&ruma::ServerName>,
    limit: Option<u64>,
    since: Option<&str>,
    term: Option<&str>,
) -> JsonResult {
    if server.is_some_and(|s| s != state.server_name) {
        return Err(MatrixError::not_found(
            "Room directories of other servers need federation, which is not available yet",
        ));
    }
    let mut rooms = Vec::new();
    for r in state
        .core
        .store
        .published_rooms()
        .await
        .map_err(estuary_core::CoreError::from)?
    {
        rooms.push(room_entry(state, &r.room_id).await?);
    }
    if let Some(term) = term.map(str::to_lowercase).filter(|t| !t.is_empty()) {
        let matches = |v: &Value| v.as_str().is_some_and(|s| s.to_lowercase().contains(&term));
        rooms.retain(|r| {
            matches(&r["name"]) || matches(&r["topic"]) || matches(&r["canonical_alias"]) || matches(&r["room_id"])
        });
    }
    // Busiest rooms first, as Synapse lists them.
    rooms.sort_by_key(|r| std::cmp::Reverse(r["num_joined_members"].as_i64().unwrap_or(0)));
    let total = rooms.len();
    let offset = match since {
        Some(t) => t
            .strip_prefix('o')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| MatrixError::invalid_param("Invalid since token"))?,
        None => 0,
    };
    let limit = limit
        .map_or(DEFAULT_LIMIT, |l| usize::try_from(l).unwrap_or(DEFAULT_LIMIT))
        .max(1);
    let page: Vec<Value> = rooms.into_iter().skip(offset).take(limit).collect();
    let mut out = json!({ "chunk": page, "total_room_count_estimate": total });
    if offset + limit < total {
        out["next_batch"] = json!(format!("o{}", offset + limit));
    }
    if offset > 0 {
        out["prev_batch"] = json!(format!("o{}", offset.saturating_sub(limit)));
    }
    Ok(Json(out))
}

pub async fn get_public(State(state): State<Arc<MatrixState>>, req: Ruma<public_get::Request>) -> JsonResult {
    let b = &req.body;
    public_rooms(
        &state,
        b.server.as_deref(),
        b.limit.map(u64::from),
        b.since.as_deref(),
        None,
    )
    .await
}

pub async fn post_public(State(state): State<Arc<MatrixState>>, req: Ruma<public_post::Request>) -> JsonResult {
    let b = &req.body;
    public_rooms(
        &state,
        b.server.as_deref(),
        b.limit.map(u64::from),
        b.since.as_deref(),
        b.filter.generic_search_term.as_deref(),
    )
    .await
}

pub async fn visibility(State(state): State<Arc<MatrixState>>, req: Ruma<get_visibility::Request>) -> JsonResult {
    let room = state
        .core
        .rooms
        .room(req.body.room_id.as_str())
        .await?
        .ok_or_else(|| MatrixError::not_found("Unknown room"))?;
    Ok(Json(
        json!({ "visibility": if room.published { "public" } else { "private" } }),
    ))
}

/// Publishing needs the power to set the room's canonical alias (Synapse's rule of thumb).
pub async fn put_visibility(State(state): State<Arc<MatrixState>>, req: Ruma<set_visibility::Request>) -> JsonResult {
    let caller = req.caller()?;
    let room_id = req.body.room_id.as_str();
    state
        .core
        .rooms
        .room(room_id)
        .await?
        .ok_or_else(|| MatrixError::not_found("Unknown room"))?;
    if state.core.rooms.membership(room_id, &caller.user_id).await?.as_deref() != Some("join") {
        return Err(MatrixError::forbidden("You are not joined to this room"));
    }
    let levels = state.core.rooms.power_levels(room_id).await?;
    let needed = levels.0["events"]["m.room.canonical_alias"]
        .as_i64()
        .unwrap_or_else(|| levels.get("state_default", 50));
    if levels.user(caller.user_id.as_str()) < needed {
        return Err(MatrixError::forbidden(
            "You may not change this room's directory visibility",
        ));
    }
    let publish = req.body.visibility == Visibility::Public;
    state
        .core
        .store
        .set_room_published(room_id, publish)
        .await
        .map_err(estuary_core::CoreError::from)?;
    Ok(Json(json!({})))
}

/// Rooms the caller is joined to.
async fn joined_rooms(state: &MatrixState, caller: &Caller) -> Result<Vec<String>, MatrixError> {
    let memberships = state.core.rooms.memberships(caller.user_id.as_str()).await?;
    Ok(memberships
        .into_iter()
        .filter(|m| m.membership == "join")
        .map(|m| m.room_id)
        .collect())
}

/// Spec: the user directory holds users who share a room with the searcher or are in a
/// public room (Synapse's default); matched on user ID and display name.
pub async fn search_users(State(state): State<Arc<MatrixState>>, req: Ruma<users::Request>) -> JsonResult {
    let caller = req.caller()?;
    let term = req.body.search_term.to_lowercase();
    let limit = usize::try_from(u64::from(req.body.limit)).unwrap_or(10).clamp(1, 100);
    let mut rooms: BTreeSet<String> = joined_rooms(&state, caller).await?.into_iter().collect();
    for r in state
        .core
        .store
        .published_rooms()
        .await
        .map_err(estuary_core::CoreError::from)?
    {
        rooms.insert(r.room_id);
    }
    let mut found: BTreeMap<String, Value> = BTreeMap::new();
    for room in rooms {
        for (user, (membership, e)) in state.core.rooms.members(&room).await?.iter() {
            if membership != "join" || found.contains_key(user) {
                continue;
            }
            let content = client_event(e, false)["content"].clone();
            let name = content["displayname"].as_str().map(str::to_owned);
            let hit =
                user.to_lowercase().contains(&term) || name.as_ref().is_some_and(|n| n.to_lowercase().contains(&term));
            if hit {
                let mut entry = json!({ "user_id": user });
                if let Some(n) = name {
                    entry["display_name"] = json!(n);
                }
                if let Some(a) = content["avatar_url"].as_str() {
                    entry["avatar_url"] = json!(a);
                }
                found.insert(user.clone(), entry);
            }
        }
    }
    let limited = found.len() > limit;
    let results: Vec<Value> = found.into_values().take(limit).collect();
    Ok(Json(json!({ "results": results, "limited": limited })))
}

/// `POST /search`: message bodies in the caller's joined rooms, newest first. Encrypted
/// events are never searched: the server cannot read them.
pub async fn search_events(State(state): State<Arc<MatrixState>>, req: Ruma<search::Request>) -> JsonResult {
    let caller = req.caller()?;
    let Some(criteria) = &req.body.search_categories.room_events else {
        return Ok(Json(json!({ "search_categories": {} })));
    };
    let term = criteria.search_term.trim().to_lowercase();
    if term.is_empty() {
        return Err(MatrixError::invalid_param("search_term must not be empty"));
    }
    let mut rooms = joined_rooms(&state, caller).await?;
    if let Some(only) = &criteria.filter.rooms {
        rooms.retain(|r| only.iter().any(|o| o.as_str() == r));
    }
    let limit = criteria
        .filter
        .limit
        .map_or(10, |l| i64::try_from(u64::from(l)).unwrap_or(10))
        .clamp(1, 100);
    let before = match &req.body.next_batch {
        Some(t) => crate::sync::parse_token(t)?,
        None => i64::MAX,
    };
    let candidates = state
        .core
        .store
        .search_messages(&rooms, &term, before, limit * 4)
        .await
        .map_err(estuary_core::CoreError::from)?;
    let hits: Vec<_> = candidates
        .into_iter()
        .filter(|e| {
            client_event(e, false)["content"]["body"]
                .as_str()
                .is_some_and(|b| b.to_lowercase().contains(&term))
        })
        .take(usize::try_from(limit).unwrap_or(10))
        .collect();
    let next = (hits.len() as i64 == limit)
        .then(|| hits.last().map(|e| crate::sync::token(e.stream_ordering)))
        .flatten();
    let events = crate::relations::for_client(&state, caller, &hits, true, i64::MAX).await?;
    let results: Vec<Value> = events
        .into_iter()
        .map(|e| json!({ "rank": 1.0, "result": e }))
        .collect();
    let mut room_events = json!({ "count": results.len(), "results": results, "highlights": [term] });
    if let Some(n) = next {
        room_events["next_batch"] = json!(n);
    }
    Ok(Json(json!({ "search_categories": { "room_events": room_events } })))
}
