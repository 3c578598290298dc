//! Per-user data and ephemeral signals: account data (global and per room, including
//! `m.direct`), tags, read receipts, read markers, typing, presence.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use ruma::api::client::config::{
    get_global_account_data::v3 as get_global, get_room_account_data::v3 as get_room,
    set_global_account_data::v3 as set_global, set_room_account_data::v3 as set_room,
};
use ruma::api::client::presence::{get_presence::v3 as get_presence, set_presence::v3 as set_presence};
use ruma::api::client::read_marker::set_read_marker::v3 as read_marker;
use ruma::api::client::receipt::create_receipt::v3 as receipt;
use ruma::api::client::tag::{create_tag::v3 as create_tag, delete_tag::v3 as delete_tag, get_tags::v3 as get_tags};
use ruma::api::client::typing::create_typing_event::v3 as typing;
use ruma::{EventId, RoomId, UserId};
use serde_json::{Value, json};

use crate::{Caller, MatrixError, MatrixState, Ruma};

type JsonResult = Result<Json<Value>, MatrixError>;

/// Account data, tags and presence may only be set for oneself.
fn only_self(caller: &Caller, user_id: &UserId) -> Result<(), MatrixError> {
    if user_id == caller.user_id {
        Ok(())
    } else {
        Err(MatrixError::forbidden("You can only change your own data"))
    }
}

/// The event must exist in the room.
async fn event_in_room(state: &MatrixState, room_id: &RoomId, event_id: &EventId) -> Result<(), MatrixError> {
    match state.core.rooms.event(event_id.as_str()).await? {
        Some(e) if e.room_id == room_id.as_str() => Ok(()),
        _ => Err(MatrixError::not_found("No such event in this room")),
    }
}

fn content_of(raw: &serde_json::value::RawValue) -> Result<Value, MatrixError> {
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(MatrixError::bad_json("Account data must be a JSON object")),
    }
}

pub async fn put_global(State(state): State<Arc<MatrixState>>, req: Ruma<set_global::Request>) -> JsonResult {
    let caller = req.caller()?;
    only_self(caller, &req.body.user_id)?;
    let kind = req.body.event_type.to_string();
    if kind == "m.fully_read" || kind == "m.push_rules" {
        // Spec: these are managed by their own endpoints.
        return Err(MatrixError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            format!("{kind} cannot be set through this endpoint"),
        ));
    }
    state
        .core
        .account_data
        .set(&caller.localpart, None, &kind, &content_of(req.body.data.json())?)
        .await?;
    Ok(Json(json!({})))
}

pub async fn get_global_data(State(state): State<Arc<MatrixState>>, req: Ruma<get_global::Request>) -> JsonResult {
    let caller = req.caller()?;
    only_self(caller, &req.body.user_id)?;
    let data = state
        .core
        .account_data
        .get(&caller.localpart, None, &req.body.event_type.to_string())
        .await?;
    data.map(Json)
        .ok_or_else(|| MatrixError::not_found("Account data not found"))
}

pub async fn put_room(State(state): State<Arc<MatrixState>>, req: Ruma<set_room::Request>) -> JsonResult {
    let caller = req.caller()?;
    only_self(caller, &req.body.user_id)?;
    let kind = req.body.event_type.to_string();
    if kind == "m.fully_read" {
        return Err(MatrixError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            "m.fully_read is set through /read_markers",
        ));
    }
    let content = content_of(req.body.data.json())?;
    state
        .core
        .account_data
        .set(&caller.localpart, Some(req.body.room_id.as_str()), &kind, &content)
        .await?;
    Ok(Json(json!({})))
}

pub async fn get_room_data(State(state): State<Arc<MatrixState>>, req: Ruma<get_room::Request>) -> JsonResult {
    let caller = req.caller()?;
    only_self(caller, &req.body.user_id)?;
    let data = state
        .core
        .account_data
        .get(
            &caller.localpart,
            Some(req.body.room_id.as_str()),
            &req.body.event_type.to_string(),
        )
        .await?;
    data.map(Json)
        .ok_or_else(|| MatrixError::not_found("Account data not found"))
}

/// Tags live in the room account data event `m.tag`: `{"tags": {name: {order}}}`.
async fn tags_of(state: &MatrixState, caller: &Caller, room_id: &RoomId) -> Result<Value, MatrixError> {
    let data = state
        .core
        .account_data
        .get(&caller.localpart, Some(room_id.as_str()), "m.tag")
        .await?;
    Ok(data
        .and_then(|d| d.get("tags").cloned())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({})))
}

pub async fn list_tags(State(state): State<Arc<MatrixState>>, req: Ruma<get_tags::Request>) -> JsonResult {
    let caller = req.caller()?;
    only_self(caller, &req.body.user_id)?;
    Ok(Json(
        json!({ "tags": tags_of(&state, caller, &req.body.room_id).await? }),
    ))
}

pub async fn put_tag(State(state): State<Arc<MatrixState>>, req: Ruma<create_tag::Request>) -> JsonResult {
    let caller = req.caller()?;
    only_self(caller, &req.body.user_id)?;
    if req.body.tag.is_empty() || req.body.tag.len() > 255 {
        return Err(MatrixError::invalid_param("A tag is 1 to 255 bytes"));
    }
    let mut tags = tags_of(&state, caller, &req.body.room_id).await?;
    tags[&req.body.tag] = serde_json::to_value(&req.body.tag_info).map_err(MatrixError::internal)?;
    state
        .core
        .account_data
        .set(
            &caller.localpart,
            Some(req.body.room_id.as_str()),
            "m.tag",
            &json!({ "tags": tags }),
        )
        .await?;
    Ok(Json(json!({})))
}

pub async fn remove_tag(State(state): State<Arc<MatrixState>>, req: Ruma<delete_tag::Request>) -> JsonResult {
    let caller = req.caller()?;
    only_self(caller, &req.body.user_id)?;
    let mut tags = tags_of(&state, caller, &req.body.room_id).await?;
    if let Some(map) = tags.as_object_mut() {
        map.remove(&req.body.tag);
    }
    state
        .core
        .account_data
        .set(
            &caller.localpart,
            Some(req.body.room_id.as_str()),
            "m.tag",
            &json!({ "tags": tags }),
        )
        .await?;
    Ok(Json(json!({})))
}

pub async fn put_receipt(State(state): State<Arc<MatrixState>>, req: Ruma<receipt::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    crate::rooms::require_joined(&state, &b.room_id, caller).await?;
    event_in_room(&state, &b.room_id, &b.event_id).await?;
    let kind = b.receipt_type.to_string();
    let thread = match &b.thread {
        ruma::events::receipt::ReceiptThread::Unthreaded => String::new(),
        ruma::events::receipt::ReceiptThread::Main => "main".to_owned(),
        ruma::events::receipt::ReceiptThread::Thread(root) => root.to_string(),
        _ => String::new(),
    };
    match kind.as_str() {
        "m.read" | "m.read.private" => {
            state
                .core
                .account_data
                .set_receipt(
                    b.room_id.as_str(),
                    caller.user_id.as_str(),
                    &kind,
                    &thread,
                    b.event_id.as_str(),
                )
                .await?
        }
        // Spec: m.fully_read via /receipt sets the read marker.
        "m.fully_read" => set_fully_read(&state, caller, &b.room_id, &b.event_id).await?,
        other => return Err(MatrixError::invalid_param(format!("Unknown receipt type {other:?}"))),
    }
    Ok(Json(json!({})))
}

async fn set_fully_read(
    state: &MatrixState,
    caller: &Caller,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<(), MatrixError> {
    let content = json!({ "event_id": event_id });
    state
        .core
        .account_data
        .set(&caller.localpart, Some(room_id.as_str()), "m.fully_read", &content)
        .await?;
    Ok(())
}

pub async fn put_read_markers(State(state): State<Arc<MatrixState>>, req: Ruma<read_marker::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    crate::rooms::require_joined(&state, &b.room_id, caller).await?;
    if let Some(e) = &b.fully_read {
        event_in_room(&state, &b.room_id, e).await?;
        set_fully_read(&state, caller, &b.room_id, e).await?;
    }
    for (kind, event) in [("m.read", &b.read_receipt), ("m.read.private", &b.private_read_receipt)] {
        if let Some(e) = event {
            event_in_room(&state, &b.room_id, e).await?;
            state
                .core
                .account_data
                .set_receipt(b.room_id.as_str(), caller.user_id.as_str(), kind, "", e.as_str())
                .await?;
        }
    }
    Ok(Json(json!({})))
}

pub async fn put_typing(State(state): State<Arc<MatrixState>>, req: Ruma<typing::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    only_self(caller, &b.user_id)?;
    crate::rooms::require_joined(&state, &b.room_id, caller).await?;
    let timeout = match &b.state {
        typing::Typing::Yes(info) => Some(info.timeout),
        _ => None,
    };
    state.core.typing.set(
        b.room_id.as_str(),
        caller.user_id.as_str(),
        timeout.map(|t| t.max(Duration::from_millis(1))),
    );
    Ok(Json(json!({})))
}

pub async fn put_presence(State(state): State<Arc<MatrixState>>, req: Ruma<set_presence::Request>) -> JsonResult {
    let caller = req.caller()?;
    only_self(caller, &req.body.user_id)?;
    let presence = match &req.body.presence {
        ruma::presence::PresenceState::Online => "online",
        ruma::presence::PresenceState::Unavailable => "unavailable",
        ruma::presence::PresenceState::Offline => "offline",
        other => return Err(MatrixError::invalid_param(format!("Unknown presence {other:?}"))),
    };
    state
        .core
        .presence
        .set(caller.user_id.as_str(), presence, Some(req.body.status_msg.clone()));
    Ok(Json(json!({})))
}

/// Presence is visible to oneself and to users who share a room.
pub async fn fetch_presence(State(state): State<Arc<MatrixState>>, req: Ruma<get_presence::Request>) -> JsonResult {
    let caller = req.caller()?;
    let target = &req.body.user_id;
    if target != &caller.user_id && !share_a_room(&state, &caller.user_id, target).await? {
        return Err(MatrixError::forbidden("You do not share a room with this user"));
    }
    let Some(p) = state.core.presence.get(target.as_str()) else {
        return Ok(Json(json!({ "presence": "offline" })));
    };
    let event = crate::sync::presence_event(target.as_str(), &p);
    Ok(Json(event["content"].clone()))
}

async fn share_a_room(state: &MatrixState, a: &UserId, b: &UserId) -> Result<bool, MatrixError> {
    let rooms_a = state.core.rooms.memberships(a.as_str()).await?;
    let rooms_b = state.core.rooms.memberships(b.as_str()).await?;
    Ok(rooms_a
        .iter()
        .filter(|m| m.membership == "join")
        .any(|m| rooms_b.iter().any(|n| n.membership == "join" && n.room_id == m.room_id)))
}
