//! User-interactive authentication (spec: Client-Server API, "User-Interactive Authentication
//! API"). Sessions are short-lived and kept in memory.

use estuary_core::Locked;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use ruma::api::client::uiaa::AuthData;
use serde_json::{Map, Value, json};

use crate::{MatrixError, MatrixState};

pub const DUMMY: &str = "m.login.dummy";
pub const PASSWORD: &str = "m.login.password";
pub const REGISTRATION_TOKEN: &str = "m.login.registration_token";

/// At most this many open sessions; beyond it new ones are refused (memory bound).
const MAX_SESSIONS: usize = 10_000;
/// How long a client has to complete the stages of one session.
const SESSION_LIFETIME: Duration = Duration::from_secs(15 * 60);

#[derive(Default)]
pub struct UiaaSessions {
    sessions: Mutex<HashMap<String, Session>>,
}

struct Session {
    completed: Vec<&'static str>,
    /// The endpoint and user the session was started for: a session cannot be replayed
    /// against another operation.
    purpose: String,
    started: Instant,
}

impl UiaaSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.locked()
    }
}

/// Drive one round of user-interactive auth. `Ok(())` once some flow is complete; otherwise
/// the 401 response (flows, session, completed stages, and the error of a failed stage).
/// `user` is the account whose password `m.login.password` must match.
pub async fn authenticate(
    state: &MatrixState,
    auth: Option<&AuthData>,
    flows: &[&[&'static str]],
    purpose: &str,
    user: Option<&str>,
) -> Result<(), MatrixError> {
    let uiaa = &state.uiaa;
    let session_id = match auth.and_then(AuthData::session) {
        Some(id) => {
            let sessions = uiaa.lock();
            match sessions.get(id) {
                Some(s) if s.purpose == purpose && s.started.elapsed() < SESSION_LIFETIME => id.to_owned(),
                _ => {
                    return Err(MatrixError::new(
                        StatusCode::BAD_REQUEST,
                        "M_UNKNOWN",
                        "Unknown or expired session",
                    ));
                }
            }
        }
        None => new_session(state, purpose)?,
    };
    let Some(auth) = auth else {
        return Err(challenge(state, &session_id, flows, None));
    };
    let stage: Result<&'static str, MatrixError> = match auth {
        AuthData::Dummy(_) => Ok(DUMMY),
        AuthData::RegistrationToken(t) => {
            if state
                .core
                .config
                .registration
                .tokens
                .iter()
                .any(|known| known == &t.token)
            {
                Ok(REGISTRATION_TOKEN)
            } else {
                Err(MatrixError::forbidden("Invalid registration token"))
            }
        }
        AuthData::Password(p) => {
            let claimed = match &p.identifier {
                ruma::api::client::uiaa::UserIdentifier::Matrix(m) => Some(m.user.as_str()),
                _ => None,
            };
            let expected = user.unwrap_or_default();
            let claimed_localpart = claimed.map(|c| state.localpart_of(c));
            let right_user = claimed_localpart
                .as_ref()
                .is_none_or(|c| c.as_deref() == Some(expected));
            // Password checks here get the login limit too: a stolen token must not allow
            // unlimited password guessing.
            state
                .core
                .limits
                .login
                .check(&format!("user:{expected}"))
                .map_err(MatrixError::limit_exceeded)?;
            if right_user && !expected.is_empty() && state.core.accounts.check_password(expected, &p.password).await? {
                Ok(PASSWORD)
            } else {
                Err(MatrixError::forbidden("Invalid password"))
            }
        }
        _ => Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_UNRECOGNIZED",
            "Unsupported authentication stage",
        )),
    };
    let stage = match stage {
        Ok(s) => s,
        Err(e) => return Err(challenge(state, &session_id, flows, Some(e))),
    };
    if !flows.iter().any(|f| f.contains(&stage)) {
        let e = MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_UNRECOGNIZED",
            "This stage is not part of any flow here",
        );
        return Err(challenge(state, &session_id, flows, Some(e)));
    }
    let done = {
        let mut sessions = uiaa.lock();
        let Some(s) = sessions.get_mut(&session_id) else {
            return Err(MatrixError::new(
                StatusCode::BAD_REQUEST,
                "M_UNKNOWN",
                "Unknown or expired session",
            ));
        };
        if !s.completed.contains(&stage) {
            s.completed.push(stage);
        }
        let done = flows.iter().any(|f| f.iter().all(|st| s.completed.contains(st)));
        if done {
            sessions.remove(&session_id);
        }
        done
    };
    if done {
        Ok(())
    } else {
        Err(challenge(state, &session_id, flows, None))
    }
}

fn new_session(state: &MatrixState, purpose: &str) -> Result<String, MatrixError> {
    let id = estuary_core::random::string(24, estuary_core::random::BASE62)?;
    let mut sessions = state.uiaa.lock();
    sessions.retain(|_, s| s.started.elapsed() < SESSION_LIFETIME);
    if sessions.len() >= MAX_SESSIONS {
        return Err(MatrixError::limit_exceeded(SESSION_LIFETIME / 10));
    }
    sessions.insert(
        id.clone(),
        Session {
            completed: Vec::new(),
            purpose: purpose.to_owned(),
            started: Instant::now(),
        },
    );
    Ok(id)
}

/// The 401 body: `{flows, params, session, completed, [errcode, error]}`.
fn challenge(
    state: &MatrixState,
    session_id: &str,
    flows: &[&[&'static str]],
    error: Option<MatrixError>,
) -> MatrixError {
    let completed: Vec<&str> = state
        .uiaa
        .lock()
        .get(session_id)
        .map(|s| s.completed.clone())
        .unwrap_or_default();
    let mut body = Map::new();
    body.insert(
        "flows".into(),
        Value::Array(flows.iter().map(|f| json!({ "stages": f })).collect()),
    );
    body.insert("params".into(), json!({}));
    body.insert("session".into(), session_id.into());
    body.insert("completed".into(), json!(completed));
    if let Some(e) = error {
        body.extend(e.body);
    }
    MatrixError::with_body(StatusCode::UNAUTHORIZED, body)
}
