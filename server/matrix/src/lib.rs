//! The Matrix Client-Server HTTP API: one module per endpoint group, each a thin
//! translation onto `estuary-core`. Also the Matrix HTTP glue (errors) that federation reuses.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use estuary_core::Core;

pub mod discovery;
pub mod error;

pub use error::MatrixError;

/// Routes of the client listener (`matrix.client_listen`).
pub fn client_router(core: Arc<Core>) -> Router {
    Router::new()
        .route("/_matrix/client/versions", get(discovery::versions))
        .fallback(error::unrecognized)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(core)
}
