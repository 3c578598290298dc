//! Account endpoints: register (with user-interactive auth), availability, whoami, password
//! change, deactivation. No e-mail or phone number is ever asked for.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use ruma::api::client::account::{
    change_password::v3 as change_password, check_registration_token_validity::v1 as token_validity,
    deactivate::v3 as deactivate, get_username_availability::v3 as available, register::v3 as register,
    whoami::v3 as whoami,
};

use crate::session::peer_key;
use crate::uiaa::{self, DUMMY, PASSWORD, REGISTRATION_TOKEN};
use crate::{ApiResult, MatrixError, MatrixState, Ruma, RumaResponse};

/// The registration flows the configuration allows; None if registration is closed.
fn registration_flows(state: &MatrixState) -> Option<Vec<&'static [&'static str]>> {
    let reg = &state.core.config.registration;
    let mut flows: Vec<&'static [&'static str]> = Vec::new();
    if reg.open {
        flows.push(&[DUMMY]);
    }
    if !reg.tokens.is_empty() {
        flows.push(&[REGISTRATION_TOKEN]);
    }
    (!flows.is_empty()).then_some(flows)
}

pub async fn register(
    State(state): State<Arc<MatrixState>>,
    req: Ruma<register::Request>,
) -> ApiResult<register::Response> {
    let core = &state.core;
    let body = &req.body;
    if body.kind == ruma::api::client::account::register::RegistrationKind::Guest {
        return Err(MatrixError::forbidden("Guest access is not enabled"));
    }
    let Some(flows) = registration_flows(&state) else {
        return Err(MatrixError::forbidden("Registration is disabled on this server"));
    };
    // Spec: a username given is checked before user-interactive auth starts.
    let localpart = match &body.username {
        Some(u) => {
            let lp = u.to_lowercase();
            estuary_core::localpart::validate(&lp, &core.config.server_name).map_err(estuary_core::CoreError::from)?;
            if core.accounts.find(&lp).await?.is_some() {
                return Err(MatrixError::new(
                    StatusCode::BAD_REQUEST,
                    "M_USER_IN_USE",
                    "User ID already taken",
                ));
            }
            Some(lp)
        }
        None => None,
    };
    let Some(password) = body.password.as_deref() else {
        // Without a password the account could never log in (no e-mail, no SSO here).
        return Err(MatrixError::missing_param("A password is required"));
    };
    uiaa::authenticate(&state, body.auth.as_ref(), &flows, "register", None).await?;
    core.limits
        .registration
        .check(&format!("ip:{}", peer_key(req.peer)))
        .map_err(MatrixError::limit_exceeded)?;
    let localpart = match localpart {
        Some(lp) => lp,
        None => core_generated_localpart()?,
    };
    core.accounts.create(&localpart, Some(password), false).await?;
    tracing::info!(user = %localpart, "registered");
    let user_id = state.user_id(&localpart)?;
    let mut response = register::Response::new(user_id);
    if !body.inhibit_login {
        let session = core
            .sessions
            .login(
                &localpart,
                body.device_id.as_deref().map(|d| d.as_str()),
                body.initial_device_display_name.as_deref(),
            )
            .await?;
        response.access_token = Some(session.access_token);
        response.device_id = Some(session.device_id.into());
    }
    Ok(RumaResponse(response))
}

/// A localpart for a registration that named none: lower-case letters and digits.
fn core_generated_localpart() -> Result<String, MatrixError> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    Ok(format!("u{}", estuary_core::random::string(11, ALPHABET)?))
}

pub async fn available(
    State(state): State<Arc<MatrixState>>,
    req: Ruma<available::Request>,
) -> ApiResult<available::Response> {
    let core = &state.core;
    core.limits
        .registration
        .check(&format!("ip:{}", peer_key(req.peer)))
        .map_err(MatrixError::limit_exceeded)?;
    let lp = req.body.username.to_lowercase();
    estuary_core::localpart::validate(&lp, &core.config.server_name).map_err(estuary_core::CoreError::from)?;
    if core.accounts.find(&lp).await?.is_some() {
        return Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_USER_IN_USE",
            "User ID already taken",
        ));
    }
    Ok(RumaResponse(available::Response::new(true)))
}

pub async fn token_validity(
    State(state): State<Arc<MatrixState>>,
    req: Ruma<token_validity::Request>,
) -> ApiResult<token_validity::Response> {
    let core = &state.core;
    core.limits
        .registration
        .check(&format!("ip:{}", peer_key(req.peer)))
        .map_err(MatrixError::limit_exceeded)?;
    let valid = core.config.registration.tokens.iter().any(|t| t == &req.body.token);
    Ok(RumaResponse(token_validity::Response::new(valid)))
}

pub async fn whoami(req: Ruma<whoami::Request>) -> ApiResult<whoami::Response> {
    let caller = req.caller()?;
    let mut response = whoami::Response::new(caller.user_id.clone(), false);
    response.device_id = Some(caller.device_id.clone());
    Ok(RumaResponse(response))
}

pub async fn change_password(
    State(state): State<Arc<MatrixState>>,
    req: Ruma<change_password::Request>,
) -> ApiResult<change_password::Response> {
    let caller = req.caller()?;
    uiaa::authenticate(
        &state,
        req.body.auth.as_ref(),
        &[&[PASSWORD]],
        &format!("password:{}", caller.localpart),
        Some(&caller.localpart),
    )
    .await?;
    state
        .core
        .accounts
        .set_password(&caller.localpart, &req.body.new_password)
        .await?;
    // Spec: logout_devices (default true) logs out every other device.
    if req.body.logout_devices {
        state
            .core
            .delete_other_devices(&caller.localpart, Some(caller.device_id.as_str()))
            .await?;
    }
    Ok(RumaResponse(change_password::Response::new()))
}

pub async fn deactivate(
    State(state): State<Arc<MatrixState>>,
    req: Ruma<deactivate::Request>,
) -> ApiResult<deactivate::Response> {
    let caller = req.caller()?;
    uiaa::authenticate(
        &state,
        req.body.auth.as_ref(),
        &[&[PASSWORD]],
        &format!("deactivate:{}", caller.localpart),
        Some(&caller.localpart),
    )
    .await?;
    state.core.deactivate(&caller.localpart).await?;
    tracing::info!(user = %caller.localpart, "deactivated");
    Ok(RumaResponse(deactivate::Response::new(
        ruma::api::client::account::ThirdPartyIdRemovalStatus::NoSupport,
    )))
}
