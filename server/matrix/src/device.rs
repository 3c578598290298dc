//! Device management (spec: Client-Server API, "Device Management"). No IP address or user
//! agent is kept, and activity is not tracked.

use std::sync::Arc;

use axum::extract::State;
use ruma::api::client::device::{
    self as dev, delete_device::v3 as delete, delete_devices::v3 as delete_many, get_device::v3 as get,
    get_devices::v3 as list, update_device::v3 as update,
};

use crate::uiaa::{self, PASSWORD};
use crate::{ApiResult, MatrixError, MatrixState, Ruma, RumaResponse};

/// `last_seen_ts` and `last_seen_ip` stay empty: activity is not tracked (privacy).
fn to_ruma(d: estuary_core::Device) -> dev::Device {
    let mut out = dev::Device::new(d.device_id.into());
    out.display_name = d.display_name;
    out
}

pub async fn list(State(state): State<Arc<MatrixState>>, req: Ruma<list::Request>) -> ApiResult<list::Response> {
    let caller = req.caller()?;
    let devices = state.core.sessions.devices(&caller.localpart).await?;
    Ok(RumaResponse(list::Response::new(
        devices.into_iter().map(to_ruma).collect(),
    )))
}

pub async fn get(State(state): State<Arc<MatrixState>>, req: Ruma<get::Request>) -> ApiResult<get::Response> {
    let caller = req.caller()?;
    let device = state
        .core
        .sessions
        .device(&caller.localpart, req.body.device_id.as_str())
        .await?;
    let device = device.ok_or_else(|| MatrixError::not_found("No such device"))?;
    Ok(RumaResponse(get::Response::new(to_ruma(device))))
}

pub async fn update(State(state): State<Arc<MatrixState>>, req: Ruma<update::Request>) -> ApiResult<update::Response> {
    let caller = req.caller()?;
    let renamed = state
        .core
        .sessions
        .rename_device(
            &caller.localpart,
            req.body.device_id.as_str(),
            req.body.display_name.as_deref(),
        )
        .await?;
    if !renamed {
        return Err(MatrixError::not_found("No such device"));
    }
    Ok(RumaResponse(update::Response::new()))
}

pub async fn delete(State(state): State<Arc<MatrixState>>, req: Ruma<delete::Request>) -> ApiResult<delete::Response> {
    let caller = req.caller()?;
    let device_id = req.body.device_id.as_str();
    if state
        .core
        .sessions
        .device(&caller.localpart, device_id)
        .await?
        .is_none()
    {
        return Err(MatrixError::not_found("No such device"));
    }
    let purpose = format!("delete_device:{}:{device_id}", caller.localpart);
    uiaa::authenticate(
        &state,
        req.body.auth.as_ref(),
        &[&[PASSWORD]],
        &purpose,
        Some(&caller.localpart),
    )
    .await?;
    state
        .core
        .delete_devices(&caller.localpart, &[device_id.to_owned()])
        .await?;
    Ok(RumaResponse(delete::Response::new()))
}

pub async fn delete_many(
    State(state): State<Arc<MatrixState>>,
    req: Ruma<delete_many::Request>,
) -> ApiResult<delete_many::Response> {
    let caller = req.caller()?;
    let ids: Vec<String> = req.body.devices.iter().map(ToString::to_string).collect();
    let purpose = format!("delete_devices:{}:{}", caller.localpart, ids.join(","));
    uiaa::authenticate(
        &state,
        req.body.auth.as_ref(),
        &[&[PASSWORD]],
        &purpose,
        Some(&caller.localpart),
    )
    .await?;
    state.core.delete_devices(&caller.localpart, &ids).await?;
    Ok(RumaResponse(delete_many::Response::new()))
}
