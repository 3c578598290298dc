//! The content repository: upload (`/_matrix/media/v3/upload`), and the authenticated
//! download, thumbnail and config endpoints of spec v1.11 (`/_matrix/client/v1/media/...`).
//! Media of other servers needs federation and is not found. Thumbnails are the original
//! image (no resizing yet).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::MatrixState;
use crate::error::MatrixError;
use crate::extract::required_caller;

type Result<T> = std::result::Result<T, MatrixError>;

pub fn router() -> Router<Arc<MatrixState>> {
    Router::new()
        .route("/_matrix/media/v3/upload", post(upload))
        .route("/_matrix/media/r0/upload", post(upload))
        .route("/_matrix/client/v1/media/config", get(config))
        .route("/_matrix/media/v3/config", get(config))
        .route("/_matrix/client/v1/media/download/{server}/{media_id}", get(download))
        .route(
            "/_matrix/client/v1/media/download/{server}/{media_id}/{filename}",
            get(download_named),
        )
        .route("/_matrix/client/v1/media/thumbnail/{server}/{media_id}", get(thumbnail))
}

/// The `filename` query parameter of an upload.
fn filename(query: Option<&str>) -> Option<String> {
    crate::extract::form_urlencoded_get(query?, "filename").filter(|s| !s.is_empty())
}

async fn upload(State(state): State<Arc<MatrixState>>, request: Request) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let caller = required_caller(&parts, &state).await?;
    let media = &state.core.media;
    let limit = media.max_upload_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(MatrixError::too_large(limit));
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| MatrixError::too_large(limit))?;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or("application/octet-stream");
    let name = filename(parts.uri.query());
    let record = media
        .put(&caller.localpart, content_type, name.as_deref(), bytes.to_vec())
        .await?;
    tracing::info!(user = %caller.localpart, size = record.size, "media uploaded");
    Ok(axum::Json(json!({ "content_uri": media.mxc(&record.media_id) })).into_response())
}

async fn config(State(state): State<Arc<MatrixState>>, request: Request) -> Result<Response> {
    let (parts, _) = request.into_parts();
    required_caller(&parts, &state).await?;
    Ok(axum::Json(json!({ "m.upload.size": state.core.media.max_upload_bytes })).into_response())
}

async fn download(
    State(state): State<Arc<MatrixState>>,
    Path((server, media_id)): Path<(String, String)>,
    request: Request,
) -> Result<Response> {
    serve(&state, &server, &media_id, None, false, request).await
}

async fn download_named(
    State(state): State<Arc<MatrixState>>,
    Path((server, media_id, name)): Path<(String, String, String)>,
    request: Request,
) -> Result<Response> {
    serve(&state, &server, &media_id, Some(name), false, request).await
}

async fn thumbnail(
    State(state): State<Arc<MatrixState>>,
    Path((server, media_id)): Path<(String, String)>,
    request: Request,
) -> Result<Response> {
    serve(&state, &server, &media_id, None, true, request).await
}

/// Types a browser may show inline; anything else is a download (spec: content repository
/// security considerations).
fn inline(content_type: &str) -> bool {
    let base = content_type.split(';').next().unwrap_or_default().trim();
    matches!(
        base,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp" | "image/avif" | "image/apng" | "text/plain"
    ) || (base.starts_with("audio/") || base.starts_with("video/"))
}

async fn serve(
    state: &MatrixState,
    server: &str,
    media_id: &str,
    name: Option<String>,
    thumbnail: bool,
    request: Request,
) -> Result<Response> {
    let (parts, _) = request.into_parts();
    required_caller(&parts, state).await?;
    if server != state.server_name.as_str() {
        return Err(MatrixError::not_found(
            "Media from other servers needs federation, which this server does not do yet",
        ));
    }
    let Some((record, bytes)) = state.core.media.get(media_id).await? else {
        return Err(MatrixError::not_found("No such media"));
    };
    if thumbnail && !record.content_type.starts_with("image/") {
        return Err(MatrixError::not_found("No thumbnail for this media"));
    }
    let disposition = if inline(&record.content_type) {
        "inline"
    } else {
        "attachment"
    };
    let name = name.or(record.filename);
    let disposition = match name {
        Some(n) => {
            let encoded: String = n
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("{disposition}; filename*=utf-8''{encoded}")
        }
        None => disposition.to_owned(),
    };
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    let value = |v: &str| HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, value(&record.content_type));
    headers.insert(header::CONTENT_DISPOSITION, value(&disposition));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert("cross-origin-resource-policy", HeaderValue::from_static("cross-origin"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filename_from_query() {
        assert_eq!(filename(Some("filename=a%20b.png")).as_deref(), Some("a b.png"));
        assert_eq!(filename(Some("x=1&filename=c.txt")).as_deref(), Some("c.txt"));
        assert_eq!(filename(Some("filename=")), None);
        assert_eq!(filename(None), None);
    }
}
