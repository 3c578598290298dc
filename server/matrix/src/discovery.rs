//! Discovery: `GET /_matrix/client/versions` (spec: Client-Server API, "Supported versions").

use axum::Json;
use serde_json::{Value, json};

/// Spec versions this server speaks. Only versions whose required endpoints work are listed.
pub const SUPPORTED_VERSIONS: &[&str] = &["v1.11", "v1.12"];

pub async fn versions() -> Json<Value> {
    Json(json!({
        "versions": SUPPORTED_VERSIONS,
        "unstable_features": {},
    }))
}
