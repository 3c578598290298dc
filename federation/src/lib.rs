//! Matrix server-server federation (and, as it lands, XMPP s2s). For now: the federation
//! listener's routes that identify the server to peers.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::routing::get;
use estuary_core::Core;
use estuary_matrix::error;
use serde_json::{Value, json};

/// Routes of the federation listener (`matrix.federation_listen`, HTTPS).
pub fn router(core: Arc<Core>) -> Router {
    Router::new()
        .route("/_matrix/federation/v1/version", get(version))
        .fallback(error::unrecognized)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(core)
}

/// Server-Server API: `GET /_matrix/federation/v1/version`.
async fn version() -> Json<Value> {
    Json(json!({ "server": { "name": "Estuary", "version": env!("CARGO_PKG_VERSION") } }))
}
