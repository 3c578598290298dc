//! The bridge between axum and ruma. `Ruma<T>` turns an HTTP request into ruma's typed
//! request `T`, authenticated as `T`'s metadata requires; `RumaResponse<R>` serialises a typed
//! response. Every failure comes out as the spec's error.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, RawPathParams, Request};
use axum::handler::Handler;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use bytes::BytesMut;
use ruma::api::auth_scheme::{
    AccessToken, AccessTokenOptional, AppserviceToken, AppserviceTokenOptional, NoAccessToken, NoAuthentication,
};
use ruma::api::error::{DeserializationError, FromHttpRequestError};
use ruma::api::{
    IncomingRequest, IncomingRequestExt, OutgoingResponse, OutgoingResponseExt, path_builder::PathBuilder,
};
use ruma::{OwnedDeviceId, OwnedUserId};

use crate::{MatrixError, MatrixState};

/// Whether an endpoint needs an access token, read from ruma's auth scheme types.
pub trait Auth {
    const REQUIREMENT: Requirement;
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    None,
    Optional,
    Required,
}
impl Auth for NoAuthentication {
    const REQUIREMENT: Requirement = Requirement::None;
}
impl Auth for NoAccessToken {
    const REQUIREMENT: Requirement = Requirement::None;
}
impl Auth for AccessToken {
    const REQUIREMENT: Requirement = Requirement::Required;
}
impl Auth for AccessTokenOptional {
    const REQUIREMENT: Requirement = Requirement::Optional;
}
// Appservice tokens arrive with the Application Service API; until then these endpoints
// accept a user's token where one is given.
impl Auth for AppserviceToken {
    const REQUIREMENT: Requirement = Requirement::Required;
}
impl Auth for AppserviceTokenOptional {
    const REQUIREMENT: Requirement = Requirement::Optional;
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub localpart: String,
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
}

/// A parsed, authenticated ruma request.
pub struct Ruma<T> {
    pub body: T,
    pub caller: Option<Caller>,
    /// The client's address: for in-memory rate limiting only, never logged or stored
    /// (unless `privacy.log_ips`, which affects logs only).
    pub peer: Option<IpAddr>,
}

impl<T> Ruma<T> {
    /// The caller of an endpoint that requires a token (the extractor has checked it).
    pub fn caller(&self) -> Result<&Caller, MatrixError> {
        self.caller.as_ref().ok_or_else(MatrixError::missing_token)
    }
}

/// The session an access token belongs to.
async fn caller_of(state: &MatrixState, token: &str) -> Result<Caller, MatrixError> {
    let session = state
        .core
        .sessions
        .authenticate(token)
        .await?
        .ok_or_else(MatrixError::unknown_token)?;
    let user_id = state.user_id(&session.localpart)?;
    Ok(Caller {
        localpart: session.localpart,
        user_id,
        device_id: session.device_id.into(),
    })
}

/// For handlers outside the ruma extractor: the request's caller, which is required.
pub async fn required_caller(parts: &http::request::Parts, state: &MatrixState) -> Result<Caller, MatrixError> {
    let token = access_token(parts)?.ok_or_else(MatrixError::missing_token)?;
    caller_of(state, &token).await
}

fn access_token(parts: &http::request::Parts) -> Result<Option<String>, MatrixError> {
    if let Some(value) = parts.headers.get(http::header::AUTHORIZATION) {
        let value = value.to_str().map_err(|_| MatrixError::unknown_token())?;
        return match value.strip_prefix("Bearer ") {
            Some(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_owned())),
            _ => Err(MatrixError::unknown_token()),
        };
    }
    // Deprecated in spec v1.11 but still sent by older clients.
    let query = parts.uri.query().unwrap_or_default();
    Ok(form_urlencoded_get(query, "access_token"))
}

/// The first value of `key` in a URL query string, percent-decoded.
pub(crate) fn form_urlencoded_get(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = |c: u8| char::from(c).to_digit(16);
        match (
            b,
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Spec: a request body must be a JSON object. Media uploads (non-JSON content types) are
/// passed through untouched.
fn is_json_like(parts: &http::request::Parts) -> bool {
    let content_type = parts
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    content_type.is_empty() || content_type.starts_with("application/json")
}

fn check_json_object(parts: &http::request::Parts, body: &[u8]) -> Result<(), MatrixError> {
    if !is_json_like(parts) || body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(_) => Err(MatrixError::bad_json("The request body must be a JSON object")),
        Err(_) => Err(MatrixError::not_json("The request body is not valid JSON")),
    }
}

fn deserialization_error(e: FromHttpRequestError) -> MatrixError {
    match e {
        FromHttpRequestError::Deserialization(DeserializationError::Json(e)) => {
            use serde_json::error::Category;
            match e.classify() {
                Category::Syntax | Category::Eof | Category::Io => MatrixError::not_json(format!("Invalid JSON: {e}")),
                Category::Data => MatrixError::bad_json(format!("Invalid request body: {e}")),
            }
        }
        FromHttpRequestError::Deserialization(DeserializationError::Utf8(_)) => {
            MatrixError::not_json("The request body is not UTF-8")
        }
        FromHttpRequestError::Deserialization(DeserializationError::Ident(e)) => {
            MatrixError::invalid_param(format!("Invalid identifier: {e}"))
        }
        FromHttpRequestError::Deserialization(DeserializationError::Query(e)) => {
            MatrixError::invalid_param(format!("Invalid query parameter: {e}"))
        }
        FromHttpRequestError::MethodMismatch { .. } => MatrixError::method_not_allowed(),
        other => MatrixError::bad_json(format!("Invalid request: {other}")),
    }
}

impl<T> FromRequest<Arc<MatrixState>> for Ruma<T>
where
    T: IncomingRequest + Send,
    T::Authentication: Auth,
{
    type Rejection = MatrixError;

    async fn from_request(req: Request, state: &Arc<MatrixState>) -> Result<Self, MatrixError> {
        let (mut parts, body) = req.into_parts();
        let path_args: Vec<String> = match RawPathParams::from_request_parts(&mut parts, state).await {
            Ok(params) => params.iter().map(|(_, v)| v.to_owned()).collect(),
            Err(_) => Vec::new(),
        };
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());

        let requirement = T::Authentication::REQUIREMENT;
        let caller = match (requirement, access_token(&parts)?) {
            (Requirement::None, _) | (Requirement::Optional, None) => None,
            (Requirement::Required, None) => return Err(MatrixError::missing_token()),
            (_, Some(token)) => Some(caller_of(state, &token).await?),
        };

        let limit = state.core.config.matrix.max_request_bytes;
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(MatrixError::too_large(limit));
        }
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
            let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if too_large {
                MatrixError::too_large(limit)
            } else {
                MatrixError::bad_json(format!("Cannot read the request body: {e}"))
            }
        })?;
        check_json_object(&parts, &bytes)?;
        // Clients send POSTs like /join and /leave with no body at all; Synapse reads that as
        // `{}`, and so do we (for JSON endpoints).
        let bytes =
            if bytes.iter().all(u8::is_ascii_whitespace) && is_json_like(&parts) && parts.method != http::Method::GET {
                bytes::Bytes::from_static(b"{}")
            } else {
                bytes
            };
        let mut args: Vec<&str> = path_args.iter().map(String::as_str).collect();
        // Routes mounted without their last parameters (`/state/{event_type}` for an empty
        // state_key) get those parameters as "".
        let expected = T::PATH_BUILDER._path_parameters().len();
        while args.len() < expected {
            args.push("");
        }
        let request = http::Request::from_parts(parts, bytes.as_ref());
        let body = T::try_from_http_request(request, &args).map_err(deserialization_error)?;
        Ok(Ruma { body, caller, peer })
    }
}

/// A typed ruma response as an axum response.
pub struct RumaResponse<R>(pub R);

impl<R: OutgoingResponse> IntoResponse for RumaResponse<R> {
    fn into_response(self) -> Response {
        match self.0.try_into_http_response::<BytesMut>() {
            Ok(res) => res.map(|b| axum::body::Body::from(b.freeze())).into_response(),
            Err(e) => MatrixError::internal(format!("cannot serialise response: {e}")).into_response(),
        }
    }
}

pub type ApiResult<R> = Result<RumaResponse<R>, MatrixError>;

/// Mount a handler on every path (stable, legacy `r0`, unstable) of ruma endpoint `T`.
pub trait RouterExt {
    fn endpoint<T, H, M>(self, handler: H) -> Self
    where
        T: IncomingRequest,
        H: Handler<M, Arc<MatrixState>>,
        M: 'static;

    /// Also mount the endpoint on every path of `T` with its last parameter left off (with
    /// and without the trailing slash), passing "" for it: `/state/{event_type}` and
    /// `/state/{event_type}/` for the empty state key most state events have.
    fn endpoint_without_last_param<T, H, M>(self, handler: H) -> Self
    where
        T: IncomingRequest,
        H: Handler<M, Arc<MatrixState>>,
        M: 'static;
}

impl RouterExt for Router<Arc<MatrixState>> {
    fn endpoint<T, H, M>(self, handler: H) -> Self
    where
        T: IncomingRequest,
        H: Handler<M, Arc<MatrixState>>,
        M: 'static,
    {
        let Ok(filter) = MethodFilter::try_from(T::METHOD) else {
            tracing::error!(method = %T::METHOD, "endpoint with an unroutable method not mounted");
            return self;
        };
        T::PATH_BUILDER
            .all_paths()
            .fold(self, |router, path| router.route(path, on(filter, handler.clone())))
    }

    fn endpoint_without_last_param<T, H, M>(self, handler: H) -> Self
    where
        T: IncomingRequest,
        H: Handler<M, Arc<MatrixState>>,
        M: 'static,
    {
        let Ok(filter) = MethodFilter::try_from(T::METHOD) else {
            return self;
        };
        T::PATH_BUILDER.all_paths().fold(self, |router, path| {
            let Some((short, last)) = path.rsplit_once('/') else {
                return router;
            };
            if !last.starts_with('{') {
                return router;
            }
            router
                .route(short, on(filter, handler.clone()))
                .route(&format!("{short}/"), on(filter, handler.clone()))
        })
    }
}
