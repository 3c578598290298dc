//! Rooms: creation, sending, state, redaction, single events, members, and membership changes
//! (join, invite, leave, kick, ban, unban, forget).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use estuary_core::StoredEvent;
use estuary_core::rooms::EventTemplate;
use estuary_core::rooms::create::{CreateRoom, Preset};
use ruma::api::client::membership as mem;
use ruma::api::client::room::{create_room::v3 as create_room, get_room_event::v3 as get_event};
use ruma::api::client::state::{
    get_state_event_for_key::v3 as get_state_key, get_state_events::v3 as get_state, send_state_event::v3 as send_state,
};
use ruma::api::client::{message::send_message_event::v3 as send_message, redact::redact_event::v3 as redact};
use ruma::{RoomId, UserId};
use serde_json::{Map, Value, json};

use crate::events::client_event;
use crate::{Caller, MatrixError, MatrixState, Ruma};

type JsonResult = Result<Json<Value>, MatrixError>;

/// The caller must be joined to see or change a room (no peeking, no world-readable yet).
pub(crate) async fn require_joined(state: &MatrixState, room_id: &RoomId, caller: &Caller) -> Result<(), MatrixError> {
    if !state.core.rooms.known(room_id.as_str()).await? {
        return Err(MatrixError::not_found("Unknown room"));
    }
    match state
        .core
        .rooms
        .membership(room_id.as_str(), &caller.user_id)
        .await?
        .as_deref()
    {
        Some("join") => Ok(()),
        _ => Err(MatrixError::forbidden("You are not joined to this room")),
    }
}

/// The room's state as the caller may see it (spec: a user who left sees the state at the
/// time they left), at stream position `at` if given, else now.
async fn visible_state(
    state: &MatrixState,
    room_id: &RoomId,
    caller: &Caller,
    at: Option<i64>,
) -> Result<Vec<StoredEvent>, MatrixError> {
    let visible = crate::relations::visible_until(state, room_id, caller).await?;
    let rooms = &state.core.rooms;
    Ok(match at.map_or(visible, |at| at.min(visible)) {
        i64::MAX => rooms.current_state(room_id.as_str()).await?,
        at => rooms.state_at(room_id.as_str(), at).await?,
    })
}

fn to_object(raw: &serde_json::value::RawValue, what: &str) -> Result<Value, MatrixError> {
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(MatrixError::bad_json(format!("{what} must be a JSON object"))),
    }
}

pub async fn create(State(state): State<Arc<MatrixState>>, req: Ruma<create_room::Request>) -> JsonResult {
    let caller = req.caller()?.clone();
    let core = &state.core;
    let b = req.body;
    let preset = match b.preset.as_ref().map(|p| p.as_str()) {
        Some("public_chat") => Preset::PublicChat,
        Some("trusted_private_chat") => Preset::TrustedPrivateChat,
        Some("private_chat") => Preset::PrivateChat,
        Some(other) => return Err(MatrixError::invalid_param(format!("Unknown preset {other:?}"))),
        // Spec: without a preset, public visibility means public_chat, else private_chat.
        None if b.visibility == ruma::api::client::room::Visibility::Public => Preset::PublicChat,
        None => Preset::PrivateChat,
    };
    let mut initial_state = Vec::new();
    for raw in &b.initial_state {
        let v = to_object(raw.json(), "an initial_state event")?;
        let kind = v["type"]
            .as_str()
            .ok_or_else(|| MatrixError::bad_json("initial_state event without a type"))?;
        let content = v.get("content").cloned().unwrap_or_else(|| json!({}));
        if !content.is_object() {
            return Err(MatrixError::bad_json("initial_state content must be an object"));
        }
        initial_state.push(EventTemplate::state(
            kind,
            v["state_key"].as_str().unwrap_or_default(),
            content,
        ));
    }
    for u in &b.invite {
        if state.local(u).is_none() {
            return Err(MatrixError::forbidden(
                "Inviting users of other servers needs federation, which is not available yet",
            ));
        }
    }
    let alias = match &b.room_alias_name {
        Some(name) if name.is_empty() || name.contains(':') || name.contains(char::is_whitespace) => {
            return Err(MatrixError::invalid_param(
                "room_alias_name must be a non-empty localpart without ':' or spaces",
            ));
        }
        Some(name) => Some(format!("#{name}:{}", state.server_name)),
        None => None,
    };
    let as_map = |raw: &serde_json::value::RawValue, what: &str| -> Result<Map<String, Value>, MatrixError> {
        match to_object(raw, what)? {
            Value::Object(m) => Ok(m),
            _ => Err(MatrixError::bad_json(format!("{what} must be a JSON object"))),
        }
    };
    let power_level_content_override = b
        .power_level_content_override
        .as_ref()
        .map(|r| as_map(r.json(), "power_level_content_override"))
        .transpose()?;
    let creation_content = b
        .creation_content
        .as_ref()
        .map(|r| as_map(r.json(), "creation_content"))
        .transpose()?;
    let account = core.accounts.get(&caller.localpart).await?;
    // Encryption by default: private presets and DMs, unless the operator turned it off.
    let encrypt = core.config.matrix.encrypt_private_rooms && (preset != Preset::PublicChat || b.is_direct);
    let room_id = core
        .rooms
        .create_room(CreateRoom {
            creator: caller.user_id.clone(),
            creator_profile: (account.displayname, account.avatar_url),
            room_version: b.room_version.as_ref().map(ToString::to_string),
            preset,
            name: b.name.clone(),
            topic: b.topic.clone(),
            invite: b.invite.clone(),
            is_direct: b.is_direct,
            initial_state,
            alias,
            power_level_content_override,
            creation_content,
            publish: b.visibility == ruma::api::client::room::Visibility::Public,
            encrypt,
        })
        .await?;
    Ok(Json(json!({ "room_id": room_id })))
}

pub async fn send(State(state): State<Arc<MatrixState>>, req: Ruma<send_message::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    state
        .core
        .limits
        .message
        .check(&caller.localpart)
        .map_err(MatrixError::limit_exceeded)?;
    require_joined(&state, &b.room_id, caller).await?;
    let content = to_object(b.body.json(), "event content")?;
    let txn = (
        caller.localpart.clone(),
        caller.device_id.to_string(),
        b.txn_id.to_string(),
    );
    let (event_id, _) = state
        .core
        .rooms
        .send(
            &b.room_id,
            &caller.user_id,
            EventTemplate::message(&b.event_type.to_string(), content),
            Some(txn),
        )
        .await?;
    Ok(Json(json!({ "event_id": event_id })))
}

pub async fn put_state(State(state): State<Arc<MatrixState>>, req: Ruma<send_state::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    require_joined(&state, &b.room_id, caller).await?;
    let kind = b.event_type.to_string();
    if kind == "m.room.member" {
        // Membership changes go through the membership endpoints, which fill in the profile.
        let target =
            UserId::parse(&b.state_key).map_err(|_| MatrixError::invalid_param("state_key must be a user ID"))?;
        if state.local(&target).is_none() {
            return Err(MatrixError::forbidden(
                "Membership of users of other servers needs federation",
            ));
        }
    }
    let content = to_object(b.body.json(), "event content")?;
    let (event_id, _) = state
        .core
        .rooms
        .send(
            &b.room_id,
            &caller.user_id,
            EventTemplate::state(&kind, &b.state_key, content),
            None,
        )
        .await?;
    Ok(Json(json!({ "event_id": event_id })))
}

pub async fn get_state_event(State(state): State<Arc<MatrixState>>, req: Ruma<get_state_key::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    let (kind, key) = (b.event_type.to_string(), b.state_key.as_str());
    let e = visible_state(&state, &b.room_id, caller, None)
        .await?
        .into_iter()
        .find(|e| e.kind == kind && e.state_key.as_deref() == Some(key))
        .ok_or_else(|| MatrixError::not_found("No such state event"))?;
    let event = client_event(&e, true);
    if b.format == ruma::api::client::state::get_state_event_for_key::v3::StateEventFormat::Event {
        return Ok(Json(event));
    }
    Ok(Json(event["content"].clone()))
}

pub async fn get_all_state(State(state): State<Arc<MatrixState>>, req: Ruma<get_state::Request>) -> JsonResult {
    let caller = req.caller()?;
    let events = visible_state(&state, &req.body.room_id, caller, None).await?;
    Ok(Json(Value::Array(
        events.iter().map(|e| client_event(e, true)).collect(),
    )))
}

pub async fn redact_event(State(state): State<Arc<MatrixState>>, req: Ruma<redact::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    require_joined(&state, &b.room_id, caller).await?;
    let target = state.core.rooms.event(b.event_id.as_str()).await?;
    if target.as_ref().is_none_or(|t| t.room_id != b.room_id.as_str()) {
        return Err(MatrixError::not_found("No such event in this room"));
    }
    let mut content = json!({});
    if let Some(reason) = &b.reason {
        content["reason"] = json!(reason);
    }
    let template = EventTemplate {
        kind: "m.room.redaction".into(),
        state_key: None,
        content,
        redacts: Some(b.event_id.clone()),
    };
    let txn = (
        caller.localpart.clone(),
        caller.device_id.to_string(),
        format!("redact:{}", b.txn_id),
    );
    let (event_id, _) = state
        .core
        .rooms
        .send(&b.room_id, &caller.user_id, template, Some(txn))
        .await?;
    Ok(Json(json!({ "event_id": event_id })))
}

pub async fn get_room_event(State(state): State<Arc<MatrixState>>, req: Ruma<get_event::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    require_joined(&state, &b.room_id, caller).await?;
    match state.core.rooms.event(b.event_id.as_str()).await? {
        Some(e) if e.room_id == b.room_id.as_str() => {
            let mut one =
                crate::relations::for_client(&state, caller, std::slice::from_ref(&e), true, i64::MAX).await?;
            // None: the sender is ignored (as Synapse, such an event is not found).
            one.pop()
                .map(Json)
                .ok_or_else(|| MatrixError::not_found("Event not found"))
        }
        _ => Err(MatrixError::not_found("Event not found")),
    }
}

pub async fn joined_rooms(
    State(state): State<Arc<MatrixState>>,
    req: Ruma<mem::joined_rooms::v3::Request>,
) -> JsonResult {
    let caller = req.caller()?;
    let rooms: Vec<String> = state
        .core
        .rooms
        .memberships(caller.user_id.as_str())
        .await?
        .into_iter()
        .filter(|m| m.membership == "join")
        .map(|m| m.room_id)
        .collect();
    Ok(Json(json!({ "joined_rooms": rooms })))
}

pub async fn members(
    State(state): State<Arc<MatrixState>>,
    req: Ruma<mem::get_member_events::v3::Request>,
) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    let at = b.at.as_deref().map(crate::sync::parse_token).transpose()?;
    let only = b.membership.as_ref().map(|m| m.to_string());
    let not = b.not_membership.as_ref().map(|m| m.to_string());
    let chunk: Vec<Value> = visible_state(&state, &b.room_id, caller, at)
        .await?
        .iter()
        .filter(|e| e.kind == "m.room.member")
        .filter(|e| {
            let m = estuary_core::rooms::content_field(&e.pdu, "membership");
            only.as_ref().is_none_or(|o| *o == m) && not.as_ref().is_none_or(|n| *n != m)
        })
        .map(|e| client_event(e, true))
        .collect();
    Ok(Json(json!({ "chunk": chunk })))
}

pub async fn joined_members(
    State(state): State<Arc<MatrixState>>,
    req: Ruma<mem::joined_members::v3::Request>,
) -> JsonResult {
    let caller = req.caller()?;
    require_joined(&state, &req.body.room_id, caller).await?;
    let mut joined = Map::new();
    for (user, (membership, e)) in state.core.rooms.members(req.body.room_id.as_str()).await?.iter() {
        if membership == "join" {
            let content = &client_event(e, false)["content"];
            joined.insert(
                user.clone(),
                json!({ "display_name": content["displayname"], "avatar_url": content["avatar_url"] }),
            );
        }
    }
    Ok(Json(json!({ "joined": joined })))
}

/// Set `target`'s membership in `room_id` as `caller`, with the target's profile on joins.
async fn set_membership(
    state: &MatrixState,
    caller: &Caller,
    room_id: &RoomId,
    target: &UserId,
    membership: &str,
    reason: Option<&str>,
    extra: Option<(&str, Value)>,
) -> Result<(), MatrixError> {
    if !state.core.rooms.known(room_id.as_str()).await? {
        return Err(MatrixError::not_found(
            "Unknown room; joining rooms on other servers needs federation, which is not available yet",
        ));
    }
    let Some(target_localpart) = state.local(target) else {
        return Err(MatrixError::forbidden(
            "Membership of users of other servers needs federation, which is not available yet",
        ));
    };
    let mut content = json!({ "membership": membership });
    if membership == "join" || membership == "invite" {
        let account = match state.core.accounts.find(&target_localpart).await? {
            Some(a) if a.is_active() => a,
            _ => return Err(MatrixError::not_found("Unknown user")),
        };
        if let Some(n) = account.displayname {
            content["displayname"] = json!(n);
        }
        if let Some(a) = account.avatar_url {
            content["avatar_url"] = json!(a);
        }
    }
    if let Some(r) = reason {
        content["reason"] = json!(r);
    }
    if let Some((k, v)) = extra {
        content[k] = v;
    }
    state
        .core
        .rooms
        .send(
            room_id,
            &caller.user_id,
            EventTemplate::state("m.room.member", target.as_str(), content),
            None,
        )
        .await?;
    Ok(())
}

pub async fn join_by_id(
    State(state): State<Arc<MatrixState>>,
    req: Ruma<mem::join_room_by_id::v3::Request>,
) -> JsonResult {
    let caller = req.caller()?;
    let room_id = &req.body.room_id;
    set_membership(
        &state,
        caller,
        room_id,
        &caller.user_id,
        "join",
        req.body.reason.as_deref(),
        None,
    )
    .await?;
    Ok(Json(json!({ "room_id": room_id })))
}

pub async fn join_by_id_or_alias(
    State(state): State<Arc<MatrixState>>,
    req: Ruma<mem::join_room_by_id_or_alias::v3::Request>,
) -> JsonResult {
    let caller = req.caller()?;
    let target = req.body.room_id_or_alias.as_str();
    let room_id = if target.starts_with('#') {
        let room = state
            .core
            .store
            .alias(target)
            .await
            .map_err(estuary_core::CoreError::from)?;
        let room = room.ok_or_else(|| MatrixError::not_found("Room alias not found"))?;
        RoomId::parse(room).map_err(MatrixError::internal)?
    } else {
        RoomId::parse(target).map_err(|e| MatrixError::invalid_param(e.to_string()))?
    };
    set_membership(
        &state,
        caller,
        &room_id,
        &caller.user_id,
        "join",
        req.body.reason.as_deref(),
        None,
    )
    .await?;
    Ok(Json(json!({ "room_id": room_id })))
}

pub async fn invite(State(state): State<Arc<MatrixState>>, req: Ruma<mem::invite_user::v3::Request>) -> JsonResult {
    let caller = req.caller()?;
    let mem::invite_user::v3::InvitationRecipient::UserId(invitee) = &req.body.recipient else {
        return Err(MatrixError::forbidden(
            "Third-party invites are not supported (no e-mail or phone numbers here)",
        ));
    };
    require_joined(&state, &req.body.room_id, caller).await?;
    set_membership(
        &state,
        caller,
        &req.body.room_id,
        &invitee.user_id,
        "invite",
        invitee.reason.as_deref(),
        None,
    )
    .await?;
    Ok(Json(json!({})))
}

pub async fn leave(State(state): State<Arc<MatrixState>>, req: Ruma<mem::leave_room::v3::Request>) -> JsonResult {
    let caller = req.caller()?;
    set_membership(
        &state,
        caller,
        &req.body.room_id,
        &caller.user_id,
        "leave",
        req.body.reason.as_deref(),
        None,
    )
    .await?;
    Ok(Json(json!({})))
}

pub async fn kick(State(state): State<Arc<MatrixState>>, req: Ruma<mem::kick_user::v3::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    match state
        .core
        .rooms
        .membership(b.room_id.as_str(), &b.user_id)
        .await?
        .as_deref()
    {
        Some("join" | "invite" | "knock") => {}
        _ => return Err(MatrixError::forbidden("The user is not in the room")),
    }
    set_membership(
        &state,
        caller,
        &b.room_id,
        &b.user_id,
        "leave",
        b.reason.as_deref(),
        None,
    )
    .await?;
    Ok(Json(json!({})))
}

pub async fn ban(State(state): State<Arc<MatrixState>>, req: Ruma<mem::ban_user::v3::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    set_membership(&state, caller, &b.room_id, &b.user_id, "ban", b.reason.as_deref(), None).await?;
    Ok(Json(json!({})))
}

pub async fn unban(State(state): State<Arc<MatrixState>>, req: Ruma<mem::unban_user::v3::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    if state
        .core
        .rooms
        .membership(b.room_id.as_str(), &b.user_id)
        .await?
        .as_deref()
        != Some("ban")
    {
        return Err(MatrixError::forbidden("The user is not banned"));
    }
    set_membership(
        &state,
        caller,
        &b.room_id,
        &b.user_id,
        "leave",
        b.reason.as_deref(),
        None,
    )
    .await?;
    Ok(Json(json!({})))
}

/// Spec: forgetting needs the user to have left; afterwards the room's history is no longer
/// theirs to read (403), and the room leaves their syncs, until they are in it again.
pub async fn forget(State(state): State<Arc<MatrixState>>, req: Ruma<mem::forget_room::v3::Request>) -> JsonResult {
    let caller = req.caller()?;
    let rooms = &state.core.rooms;
    let room_id = req.body.room_id.as_str();
    match rooms.membership(room_id, &caller.user_id).await?.as_deref() {
        Some("join" | "invite" | "knock") => Err(MatrixError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            "Leave the room before forgetting it",
        )),
        None => Err(MatrixError::not_found("You were never in this room")),
        Some(_) => {
            rooms.forget(room_id, &caller.user_id).await?;
            Ok(Json(json!({})))
        }
    }
}
