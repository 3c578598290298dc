//! MSC3814 dehydrated devices (`/_matrix/client/unstable/org.matrix.msc3814.v1/`): a device a
//! client parks on the server (its pickled data encrypted by the client) so it can receive
//! room keys while every real device is offline.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ruma::api::client::dehydrated_device::{
    delete_dehydrated_device::unstable as delete, get_dehydrated_device::unstable as get,
    get_events::unstable as events, put_dehydrated_device::unstable as put,
};
use serde_json::{Map, Value, json};

use crate::{MatrixError, MatrixState, Ruma};

type JsonResult = Result<Json<Value>, MatrixError>;

fn to_value(raw: &serde_json::value::RawValue) -> Result<Value, MatrixError> {
    serde_json::from_str(raw.get()).map_err(|e| MatrixError::bad_json(e.to_string()))
}

fn key_map<T>(
    map: &std::collections::BTreeMap<impl ToString, ruma::serde::Raw<T>>,
) -> Result<Map<String, Value>, MatrixError> {
    map.iter()
        .map(|(k, v)| Ok((k.to_string(), to_value(v.json())?)))
        .collect()
}

pub async fn put_device(State(state): State<Arc<MatrixState>>, req: Ruma<put::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    state
        .core
        .put_dehydrated_device(
            &caller.localpart,
            b.device_id.as_str(),
            b.initial_device_display_name.as_deref(),
            &to_value(b.device_data.json())?,
            &to_value(b.device_keys.json())?,
            &key_map(&b.one_time_keys)?,
            &key_map(&b.fallback_keys)?,
        )
        .await?;
    Ok(Json(json!({ "device_id": b.device_id })))
}

pub async fn get_device(State(state): State<Arc<MatrixState>>, req: Ruma<get::Request>) -> JsonResult {
    let caller = req.caller()?;
    let (device_id, device_data) = state
        .core
        .dehydrated_device(&caller.localpart)
        .await?
        .ok_or_else(|| MatrixError::not_found("No dehydrated device"))?;
    Ok(Json(json!({ "device_id": device_id, "device_data": device_data })))
}

pub async fn delete_device(State(state): State<Arc<MatrixState>>, req: Ruma<delete::Request>) -> JsonResult {
    let caller = req.caller()?;
    let device_id = state
        .core
        .delete_dehydrated_device(&caller.localpart)
        .await?
        .ok_or_else(|| MatrixError::not_found("No dehydrated device"))?;
    Ok(Json(json!({ "device_id": device_id })))
}

/// The to-device messages waiting for the dehydrated device. `next_batch` acknowledges (and
/// deletes) the messages before it; an empty list means there are no more.
pub async fn device_events(State(state): State<Arc<MatrixState>>, req: Ruma<events::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    match state.core.dehydrated_device(&caller.localpart).await? {
        Some((d, _)) if d == b.device_id.as_str() => {}
        _ => return Err(MatrixError::not_found("No such dehydrated device")),
    }
    let after = match &b.next_batch {
        Some(t) => t
            .parse::<i64>()
            .map_err(|_| MatrixError::invalid_param("Invalid next_batch"))?,
        None => 0,
    };
    let messages = state
        .core
        .e2ee
        .to_device_for_sync(&caller.localpart, b.device_id.as_str(), after, i64::MAX)
        .await?;
    let next = messages.last().map_or(after, |m| m.stream_id);
    let events: Vec<Value> = messages
        .iter()
        .map(|m| json!({ "type": m.kind, "sender": m.sender, "content": serde_json::from_str::<Value>(&m.content).unwrap_or_default() }))
        .collect();
    Ok(Json(json!({ "events": events, "next_batch": next.to_string() })))
}
