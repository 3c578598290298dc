//! Profiles: display name and avatar URL, the one profile shared with XMPP (vCard).
//! Updating the member events of the user's rooms comes with rooms.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ruma::UserId;
use ruma::api::client::profile::{
    get_avatar_url::v3 as get_avatar, get_display_name::v3 as get_name, get_profile::v3 as get_all,
    set_avatar_url::v3 as set_avatar, set_display_name::v3 as set_name,
};
use serde_json::{Map, Value};

use crate::{ApiResult, MatrixError, MatrixState, Ruma, RumaResponse};

/// A local, active account's profile; remote profiles arrive with federation.
async fn profile_of(state: &MatrixState, user_id: &UserId) -> Result<estuary_core::Account, MatrixError> {
    let localpart = state
        .local(user_id)
        .ok_or_else(|| MatrixError::not_found("Profile lookup over federation is not available yet"))?;
    match state.core.accounts.find(&localpart).await? {
        Some(a) if a.is_active() => Ok(a),
        _ => Err(MatrixError::not_found("Profile not found")),
    }
}

fn own(state: &MatrixState, caller: &crate::Caller, user_id: &UserId) -> Result<String, MatrixError> {
    match state.local(user_id) {
        Some(lp) if lp == caller.localpart => Ok(lp),
        _ => Err(MatrixError::forbidden("You can only change your own profile")),
    }
}

pub async fn get_profile(
    State(state): State<Arc<MatrixState>>,
    req: Ruma<get_all::Request>,
) -> Result<Json<Value>, MatrixError> {
    let account = profile_of(&state, &req.body.user_id).await?;
    let mut body = Map::new();
    if let Some(n) = account.displayname {
        body.insert("displayname".into(), n.into());
    }
    if let Some(a) = account.avatar_url {
        body.insert("avatar_url".into(), a.into());
    }
    Ok(Json(Value::Object(body)))
}

pub async fn get_displayname(
    State(state): State<Arc<MatrixState>>,
    req: Ruma<get_name::Request>,
) -> ApiResult<get_name::Response> {
    let account = profile_of(&state, &req.body.user_id).await?;
    Ok(RumaResponse(get_name::Response::new(account.displayname)))
}

pub async fn get_avatar_url(
    State(state): State<Arc<MatrixState>>,
    req: Ruma<get_avatar::Request>,
) -> ApiResult<get_avatar::Response> {
    let account = profile_of(&state, &req.body.user_id).await?;
    Ok(RumaResponse(get_avatar::Response::new(
        account.avatar_url.map(Into::into),
    )))
}

/// Longest display name accepted, in bytes (Synapse uses 256 too).
const MAX_DISPLAYNAME_BYTES: usize = 256;

pub async fn set_displayname(
    State(state): State<Arc<MatrixState>>,
    req: Ruma<set_name::Request>,
) -> ApiResult<set_name::Response> {
    let caller = req.caller()?;
    let localpart = own(&state, caller, &req.body.user_id)?;
    let name = req.body.displayname.as_deref().filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.len() > MAX_DISPLAYNAME_BYTES) {
        return Err(MatrixError::invalid_param(format!(
            "Display name is longer than {MAX_DISPLAYNAME_BYTES} bytes"
        )));
    }
    state.core.accounts.set_displayname(&localpart, name).await?;
    state.core.propagate_profile(&caller.localpart).await;
    Ok(RumaResponse(set_name::Response::new()))
}

pub async fn set_avatar_url(
    State(state): State<Arc<MatrixState>>,
    req: Ruma<set_avatar::Request>,
) -> ApiResult<set_avatar::Response> {
    let caller = req.caller()?;
    let localpart = own(&state, caller, &req.body.user_id)?;
    let url = req
        .body
        .avatar_url
        .as_ref()
        .map(|u| u.as_str())
        .filter(|u| !u.is_empty());
    state.core.accounts.set_avatar_url(&localpart, url).await?;
    state.core.propagate_profile(&caller.localpart).await;
    Ok(RumaResponse(set_avatar::Response::new()))
}
