//! Login and logout (spec: Client-Server API, "Login").

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use ruma::api::client::session::{
    get_login_types::v3 as login_types, login::v3 as login, logout::v3 as logout, logout_all::v3 as logout_all,
};
use ruma::api::client::uiaa::UserIdentifier;

use crate::{ApiResult, MatrixError, MatrixState, Ruma, RumaResponse};

pub async fn login_types(_req: Ruma<login_types::Request>) -> ApiResult<login_types::Response> {
    use login_types::{LoginType, PasswordLoginType};
    Ok(RumaResponse(login_types::Response::new(vec![LoginType::Password(
        PasswordLoginType::new(),
    )])))
}

/// The rate-limit key of a client address (kept in memory only).
pub(crate) fn peer_key(peer: Option<std::net::IpAddr>) -> String {
    peer.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
}

pub async fn login(State(state): State<Arc<MatrixState>>, req: Ruma<login::Request>) -> ApiResult<login::Response> {
    let core = &state.core;
    core.limits
        .login
        .check(&format!("ip:{}", peer_key(req.peer)))
        .map_err(MatrixError::limit_exceeded)?;
    let login::LoginInfo::Password(p) = &req.body.login_info else {
        return Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_UNKNOWN",
            "Unsupported login type; use m.login.password",
        ));
    };
    #[allow(deprecated)]
    let user = match (&p.identifier, &p.user) {
        (Some(UserIdentifier::Matrix(m)), _) => m.user.clone(),
        (None, Some(user)) => user.clone(),
        _ => {
            return Err(MatrixError::new(
                StatusCode::BAD_REQUEST,
                "M_UNKNOWN",
                "Unsupported identifier type; use m.id.user",
            ));
        }
    };
    let forbidden = || MatrixError::forbidden("Invalid username or password");
    let localpart = state.localpart_of(&user).ok_or_else(forbidden)?;
    core.limits
        .login
        .check(&format!("user:{localpart}"))
        .map_err(MatrixError::limit_exceeded)?;
    if !core.accounts.check_password(&localpart, &p.password).await? {
        return Err(forbidden());
    }
    let session = core
        .sessions
        .login(
            &localpart,
            req.body.device_id.as_deref().map(|d| d.as_str()),
            req.body.initial_device_display_name.as_deref(),
        )
        .await?;
    tracing::info!(user = %localpart, device = %session.device_id, "login");
    Ok(RumaResponse(login::Response::new(
        state.user_id(&localpart)?,
        session.access_token,
        session.device_id.into(),
    )))
}

/// Spec: logout invalidates the token and deletes its device.
pub async fn logout(State(state): State<Arc<MatrixState>>, req: Ruma<logout::Request>) -> ApiResult<logout::Response> {
    let caller = req.caller()?;
    state
        .core
        .delete_devices(&caller.localpart, &[caller.device_id.to_string()])
        .await?;
    Ok(RumaResponse(logout::Response::new()))
}

pub async fn logout_all(
    State(state): State<Arc<MatrixState>>,
    req: Ruma<logout_all::Request>,
) -> ApiResult<logout_all::Response> {
    let caller = req.caller()?;
    state.core.delete_other_devices(&caller.localpart, None).await?;
    Ok(RumaResponse(logout_all::Response::new()))
}
