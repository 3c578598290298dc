//! Matrix error responses: `{"errcode": "M_...", "error": "..."}` with the spec's HTTP status,
//! plus the few that carry more fields (`retry_after_ms`, user-interactive auth).

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use estuary_core::CoreError;
use serde_json::{Map, Value, json};

#[derive(Debug, Clone)]
pub struct MatrixError {
    pub status: StatusCode,
    pub body: Map<String, Value>,
}

impl MatrixError {
    pub fn new(status: StatusCode, errcode: &str, error: impl Into<String>) -> Self {
        let mut body = Map::new();
        body.insert("errcode".into(), errcode.into());
        body.insert("error".into(), Value::String(error.into()));
        Self { status, body }
    }

    /// A response with an arbitrary JSON object body (user-interactive auth challenges).
    pub fn with_body(status: StatusCode, body: Map<String, Value>) -> Self {
        Self { status, body }
    }

    pub fn errcode(&self) -> Option<&str> {
        self.body.get("errcode").and_then(Value::as_str)
    }

    pub fn unrecognized() -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_UNRECOGNIZED", "Unrecognized request")
    }
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "M_UNRECOGNIZED",
            "Method not allowed for this endpoint",
        )
    }
    pub fn forbidden(error: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", error)
    }
    pub fn not_found(error: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", error)
    }
    pub fn bad_json(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", error)
    }
    pub fn not_json(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_NOT_JSON", error)
    }
    pub fn invalid_param(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_INVALID_PARAM", error)
    }
    pub fn missing_param(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_MISSING_PARAM", error)
    }
    pub fn missing_token() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "M_MISSING_TOKEN", "Missing access token")
    }
    pub fn unknown_token() -> Self {
        let mut e = Self::new(
            StatusCode::UNAUTHORIZED,
            "M_UNKNOWN_TOKEN",
            "Unknown or expired access token",
        );
        e.body.insert("soft_logout".into(), false.into());
        e
    }
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            format!("Request body is larger than {limit} bytes"),
        )
    }
    pub fn limit_exceeded(retry_after: Duration) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", "Too many requests");
        let ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX).max(1);
        e.body.insert("retry_after_ms".into(), ms.into());
        e
    }
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", "Internal server error")
    }
}

impl From<CoreError> for MatrixError {
    fn from(e: CoreError) -> Self {
        match e {
            CoreError::InvalidLocalpart(e) => Self::new(StatusCode::BAD_REQUEST, "M_INVALID_USERNAME", e.to_string()),
            CoreError::InvalidPassword(e) => Self::new(StatusCode::BAD_REQUEST, "M_WEAK_PASSWORD", e.to_string()),
            CoreError::UserInUse(_) => Self::new(StatusCode::BAD_REQUEST, "M_USER_IN_USE", "User ID already taken"),
            CoreError::UnknownUser(_) => Self::not_found("No such user"),
            CoreError::Deactivated(_) => Self::new(
                StatusCode::FORBIDDEN,
                "M_USER_DEACTIVATED",
                "This account has been deactivated",
            ),
            CoreError::Forbidden(e) => Self::forbidden(e),
            CoreError::NotFound(e) => Self::not_found(e),
            CoreError::InvalidParam(e) => Self::invalid_param(e),
            CoreError::TooLarge(e) => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", e),
            CoreError::AliasInUse(a) => Self::new(
                StatusCode::BAD_REQUEST,
                "M_ROOM_IN_USE",
                format!("Room alias {a} is already in use"),
            ),
            CoreError::UnsupportedRoomVersion(v) => Self::new(
                StatusCode::BAD_REQUEST,
                "M_UNSUPPORTED_ROOM_VERSION",
                format!("Room version {v:?} is not supported"),
            ),
            CoreError::Store(e) => Self::internal(e),
            CoreError::Internal(e) => Self::internal(e),
        }
    }
}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(Value::Object(self.body))).into_response()
    }
}

/// Router fallbacks that answer in Matrix's error shape rather than axum's plain text.
pub async fn unrecognized() -> MatrixError {
    MatrixError::unrecognized()
}

pub async fn method_not_allowed() -> MatrixError {
    MatrixError::method_not_allowed()
}

/// `{}`: the body of many successful responses.
pub fn empty_object() -> axum::Json<Value> {
    axum::Json(json!({}))
}
