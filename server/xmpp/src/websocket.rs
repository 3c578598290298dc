//! XMPP over WebSocket (RFC 7395) at `/xmpp-websocket` on the HTTP client listener, and its
//! discovery (XEP-0156): `/.well-known/host-meta` (XRD) and `/.well-known/host-meta.json`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::c2s::{self, C2s};
use crate::limit;

pub const PATH: &str = "/xmpp-websocket";
const REL: &str = "urn:xmpp:alt-connections:websocket";

pub fn router(c2s: Arc<C2s>) -> Router {
    Router::new()
        .route(PATH, get(upgrade))
        .route("/.well-known/host-meta", get(host_meta))
        .route("/.well-known/host-meta.json", get(host_meta_json))
        .with_state(c2s)
}

async fn upgrade(State(c2s): State<Arc<C2s>>, ws: WebSocketUpgrade) -> Response {
    // One frame is one stanza: the authenticated stanza limit bounds frames too (the byte
    // budget under the parser applies the tighter limit before authentication).
    ws.protocols(["xmpp"])
        .max_message_size(limit::AUTHENTICATED)
        .max_frame_size(limit::AUTHENTICATED)
        .on_upgrade(move |socket| c2s::handle_websocket(socket, c2s))
}

/// The WebSocket URL clients are told, from `matrix.public_base_url` (None when unset:
/// the server does not know how it is reached).
fn endpoint(c2s: &C2s) -> Option<String> {
    let base = c2s.core.config.matrix.public_base_url.trim_end_matches('/');
    let rest = base
        .strip_prefix("https://")
        .map(|r| format!("wss://{r}"))
        .or_else(|| base.strip_prefix("http://").map(|r| format!("ws://{r}")))?;
    Some(format!("{rest}{PATH}"))
}

fn not_found() -> Response {
    (
        axum::http::StatusCode::NOT_FOUND,
        "no public URL is configured (matrix.public_base_url)",
    )
        .into_response()
}

async fn host_meta(State(c2s): State<Arc<C2s>>) -> Response {
    let Some(href) = endpoint(&c2s) else {
        return not_found();
    };
    let href = href.replace('&', "&amp;").replace('\'', "&apos;").replace('<', "&lt;");
    let body = format!(
        "<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n  <Link rel='{REL}' href='{href}'/>\n</XRD>\n"
    );
    (
        [
            (header::CONTENT_TYPE, "application/xrd+xml"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body,
    )
        .into_response()
}

async fn host_meta_json(State(c2s): State<Arc<C2s>>) -> Response {
    let Some(href) = endpoint(&c2s) else {
        return not_found();
    };
    let body = serde_json::json!({ "links": [{ "rel": REL, "href": href }] });
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        body.to_string(),
    )
        .into_response()
}
