//! Matrix error responses: `{"errcode": "M_...", "error": "..."}` with the spec's HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone)]
pub struct MatrixError {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub error: String,
}

impl MatrixError {
    pub fn new(status: StatusCode, errcode: &'static str, error: impl Into<String>) -> Self {
        Self {
            status,
            errcode,
            error: error.into(),
        }
    }

    /// Spec: an unknown endpoint is 404 `M_UNRECOGNIZED`.
    pub fn unrecognized() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
            "Unrecognized request",
        )
    }

    /// Spec: a known endpoint with the wrong method is 405 `M_UNRECOGNIZED`.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "M_UNRECOGNIZED",
            "Method not allowed for this endpoint",
        )
    }
}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "errcode": self.errcode, "error": self.error });
        (self.status, axum::Json(body)).into_response()
    }
}

/// Router fallbacks that answer in Matrix's error shape rather than axum's plain text.
pub async fn unrecognized() -> MatrixError {
    MatrixError::unrecognized()
}

pub async fn method_not_allowed() -> MatrixError {
    MatrixError::method_not_allowed()
}
