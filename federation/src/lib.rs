//! Matrix server-server federation (and, as it lands, XMPP s2s). For now: the federation
//! listener's routes that identify the server to peers and publish its signing key.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use estuary_core::Core;
use estuary_matrix::{MatrixError, error};
use ruma::CanonicalJsonObject;
use serde_json::{Value, json};

/// How long peers may cache our key (Synapse publishes a validity of about a day to a week).
const KEY_VALIDITY_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// Routes of the federation listener (`matrix.federation_listen`, HTTPS).
pub fn router(core: Arc<Core>) -> Router {
    Router::new()
        .route("/_matrix/federation/v1/version", get(version))
        .route("/_matrix/key/v2/server", get(server_keys))
        .fallback(error::unrecognized)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(core)
}

/// Server-Server API: `GET /_matrix/federation/v1/version`.
async fn version() -> Json<Value> {
    Json(json!({ "server": { "name": "Estuary", "version": env!("CARGO_PKG_VERSION") } }))
}

/// Server-Server API: `GET /_matrix/key/v2/server`: the server's signing key, signed by itself.
async fn server_keys(State(core): State<Arc<Core>>) -> Result<Json<Value>, MatrixError> {
    let key = &core.key;
    let body = json!({
        "server_name": core.config.server_name,
        "verify_keys": { key.key_id.clone(): { "key": key.public_base64() } },
        "old_verify_keys": {},
        "valid_until_ts": estuary_core::now_ms() + KEY_VALIDITY_MS,
    });
    let mut object: CanonicalJsonObject = serde_json::from_value(body).map_err(MatrixError::internal)?;
    ruma::signatures::sign_json(&core.config.server_name, &key.pair, &mut object).map_err(MatrixError::internal)?;
    Ok(Json(serde_json::to_value(object).map_err(MatrixError::internal)?))
}
