//! Room aliases (spec: `/directory/room/{roomAlias}`). Local aliases only until federation.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ruma::api::client::alias::{create_alias::v3 as create, delete_alias::v3 as delete, get_alias::v3 as get};
use serde_json::{Value, json};

use crate::{MatrixError, MatrixState, Ruma};

type JsonResult = Result<Json<Value>, MatrixError>;

fn local_alias(state: &MatrixState, alias: &ruma::RoomAliasId) -> Result<(), MatrixError> {
    if alias.server_name() != state.server_name {
        return Err(MatrixError::invalid_param(
            "Aliases of other servers cannot be managed here",
        ));
    }
    Ok(())
}

pub async fn get_alias(State(state): State<Arc<MatrixState>>, req: Ruma<get::Request>) -> JsonResult {
    let alias = &req.body.room_alias;
    if alias.server_name() != state.server_name {
        return Err(MatrixError::not_found(
            "Resolving aliases of other servers needs federation, which is not available yet",
        ));
    }
    let room = state
        .core
        .store
        .alias(alias.as_str())
        .await
        .map_err(estuary_core::CoreError::from)?;
    let room = room.ok_or_else(|| MatrixError::not_found("Room alias not found"))?;
    Ok(Json(json!({ "room_id": room, "servers": [state.server_name] })))
}

pub async fn put_alias(State(state): State<Arc<MatrixState>>, req: Ruma<create::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    local_alias(&state, &b.room_alias)?;
    if state
        .core
        .rooms
        .membership(b.room_id.as_str(), &caller.user_id)
        .await?
        .as_deref()
        != Some("join")
    {
        return Err(MatrixError::forbidden(
            "You must be joined to the room to give it an alias",
        ));
    }
    match state
        .core
        .store
        .add_alias(b.room_alias.as_str(), b.room_id.as_str(), caller.user_id.as_str())
        .await
    {
        Ok(()) => Ok(Json(json!({}))),
        Err(estuary_core::StoreError::Conflict) => Err(MatrixError::new(
            axum::http::StatusCode::CONFLICT,
            "M_UNKNOWN",
            "Room alias already exists",
        )),
        Err(e) => Err(estuary_core::CoreError::from(e).into()),
    }
}

/// Deleting an alias needs its creator, or a member of its room with the power to set the
/// room's canonical alias (as Synapse).
pub async fn delete_alias(State(state): State<Arc<MatrixState>>, req: Ruma<delete::Request>) -> JsonResult {
    let caller = req.caller()?;
    let alias = &req.body.room_alias;
    local_alias(&state, alias)?;
    let store = &state.core.store;
    let room = store
        .alias(alias.as_str())
        .await
        .map_err(estuary_core::CoreError::from)?;
    let room = room.ok_or_else(|| MatrixError::not_found("Room alias not found"))?;
    let creator = store
        .alias_creator(alias.as_str())
        .await
        .map_err(estuary_core::CoreError::from)?;
    let allowed = if creator.as_deref() == Some(caller.user_id.as_str()) {
        true
    } else if state.core.rooms.membership(&room, &caller.user_id).await?.as_deref() == Some("join") {
        let levels = state.core.rooms.power_levels(&room).await?;
        let needed = levels.0["events"]["m.room.canonical_alias"]
            .as_i64()
            .unwrap_or_else(|| levels.get("state_default", 50));
        levels.user(caller.user_id.as_str()) >= needed
    } else {
        false
    };
    if !allowed {
        return Err(MatrixError::forbidden("You may not delete this alias"));
    }
    store
        .delete_alias(alias.as_str())
        .await
        .map_err(estuary_core::CoreError::from)?;
    Ok(Json(json!({})))
}
