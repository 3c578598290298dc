//! Discovery: `/versions`, `/.well-known/matrix/{client,server,support}`, `/capabilities`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ruma::api::client::discovery::get_capabilities::v3 as capabilities;
use serde_json::{Value, json};

use crate::{ApiResult, MatrixError, MatrixState, Ruma, RumaResponse};

/// Spec versions this server speaks. Only versions whose required endpoints work are listed.
pub const SUPPORTED_VERSIONS: &[&str] = &["v1.11", "v1.12"];

pub async fn versions() -> Json<Value> {
    Json(json!({
        "versions": SUPPORTED_VERSIONS,
        "unstable_features": {},
    }))
}

/// Spec: `GET /.well-known/matrix/client`, served when `matrix.public_base_url` is set.
pub async fn well_known_client(State(state): State<Arc<MatrixState>>) -> Result<Json<Value>, MatrixError> {
    let base = &state.core.config.matrix.public_base_url;
    if base.is_empty() {
        return Err(MatrixError::not_found("No client discovery information configured"));
    }
    Ok(Json(json!({ "m.homeserver": { "base_url": base } })))
}

/// Spec (Server-Server API): `GET /.well-known/matrix/server`, served when
/// `matrix.well_known_server` is set (delegation of federation to another host:port).
pub async fn well_known_server(State(state): State<Arc<MatrixState>>) -> Result<Json<Value>, MatrixError> {
    let delegate = &state.core.config.matrix.well_known_server;
    if delegate.is_empty() {
        return Err(MatrixError::not_found("No federation delegation configured"));
    }
    Ok(Json(json!({ "m.server": delegate })))
}

/// Spec v1.10: `GET /.well-known/matrix/support`, from `[contact]`. Only `mailto:` (e-mail)
/// and `matrix:u/` (Matrix ID) URIs have a field here; 404 when nothing is left to say.
pub async fn well_known_support(State(state): State<Arc<MatrixState>>) -> Result<Json<Value>, MatrixError> {
    let contact = &state.core.config.contact;
    let mut contacts = Vec::new();
    for (role, uris) in [("m.role.admin", &contact.admin), ("m.role.security", &contact.security)] {
        for uri in uris {
            if let Some(email) = uri.strip_prefix("mailto:") {
                contacts.push(json!({ "role": role, "email_address": email }));
            } else if let Some(user) = uri.strip_prefix("matrix:u/") {
                // MSC2312 URIs may carry `?action=...`.
                let user = user.split_once('?').map_or(user, |(u, _)| u);
                contacts.push(json!({ "role": role, "matrix_id": format!("@{user}") }));
            }
        }
    }
    if contacts.is_empty() && contact.support_page.is_empty() {
        return Err(MatrixError::not_found("No support information configured"));
    }
    let mut body = json!({ "contacts": contacts });
    if !contact.support_page.is_empty() {
        body["support_page"] = json!(contact.support_page);
    }
    Ok(Json(body))
}

pub async fn capabilities(_req: Ruma<capabilities::Request>) -> ApiResult<capabilities::Response> {
    use capabilities::{Capabilities, RoomVersionStability, RoomVersionsCapability};
    use ruma::RoomVersionId;
    let mut caps = Capabilities::new();
    caps.change_password.enabled = true;
    // Room versions 10 and 11 (default 11, as Synapse); only what works is advertised.
    caps.room_versions = RoomVersionsCapability::new(
        RoomVersionId::V11,
        [
            (RoomVersionId::V10, RoomVersionStability::Stable),
            (RoomVersionId::V11, RoomVersionStability::Stable),
        ]
        .into(),
    );
    // No e-mail or phone numbers on this server.
    caps.thirdparty_id_changes.enabled = false;
    Ok(RumaResponse(capabilities::Response::new(caps)))
}
