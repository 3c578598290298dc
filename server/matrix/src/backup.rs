//! Server-side key backup (spec: "Server-side key backups"): versions and per-session key
//! data, stored opaquely (the data is encrypted by the client for its recovery key).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use estuary_core::{BackupKey, BackupVersion, CoreError};
use ruma::api::client::backup::{
    add_backup_keys::v3 as add_all, add_backup_keys_for_room::v3 as add_room,
    add_backup_keys_for_session::v3 as add_session, create_backup_version::v3 as create,
    delete_backup_keys::v3 as del_all, delete_backup_keys_for_room::v3 as del_room,
    delete_backup_keys_for_session::v3 as del_session, delete_backup_version::v3 as delete_version,
    get_backup_info::v3 as info, get_backup_keys::v3 as get_all, get_backup_keys_for_room::v3 as get_room,
    get_backup_keys_for_session::v3 as get_session, get_latest_backup_info::v3 as latest,
    update_backup_version::v3 as update,
};
use serde_json::{Map, Value, json};

use crate::{Caller, MatrixError, MatrixState, Ruma};

type JsonResult = Result<Json<Value>, MatrixError>;

fn store_err(e: estuary_core::StoreError) -> MatrixError {
    CoreError::from(e).into()
}

fn version_number(v: &str) -> Result<i64, MatrixError> {
    v.parse().map_err(|_| MatrixError::not_found("Unknown backup version"))
}

fn no_backup() -> MatrixError {
    MatrixError::not_found("No current backup version")
}

/// The caller's backup version `v`, or `M_NOT_FOUND`.
async fn existing_version(state: &MatrixState, caller: &Caller, v: i64) -> Result<BackupVersion, MatrixError> {
    state
        .core
        .store
        .backup_version(&caller.localpart, Some(v))
        .await
        .map_err(store_err)?
        .ok_or_else(no_backup)
}

/// The answer to a key upload or deletion: the version's new etag and its key count.
async fn etag_and_count(state: &MatrixState, caller: &Caller, v: i64) -> JsonResult {
    let info = existing_version(state, caller, v).await?;
    let count = state
        .core
        .store
        .backup_key_count(&caller.localpart, v)
        .await
        .map_err(store_err)?;
    Ok(Json(json!({ "etag": info.etag.to_string(), "count": count })))
}

/// The algorithm object of a request body: `{algorithm, auth_data}`.
fn algorithm(raw: &serde_json::value::RawValue) -> Result<(String, String), MatrixError> {
    let v: Value = serde_json::from_str(raw.get()).map_err(|e| MatrixError::bad_json(e.to_string()))?;
    let alg = v["algorithm"]
        .as_str()
        .ok_or_else(|| MatrixError::bad_json("algorithm is required"))?;
    if !v["auth_data"].is_object() {
        return Err(MatrixError::bad_json("auth_data must be an object"));
    }
    Ok((alg.to_owned(), v["auth_data"].to_string()))
}

async fn version_info(state: &MatrixState, caller: &Caller, version: Option<i64>) -> JsonResult {
    let store = &state.core.store;
    let v = store
        .backup_version(&caller.localpart, version)
        .await
        .map_err(store_err)?
        .ok_or_else(no_backup)?;
    let count = store
        .backup_key_count(&caller.localpart, v.version)
        .await
        .map_err(store_err)?;
    Ok(Json(json!({
        "version": v.version.to_string(),
        "algorithm": v.algorithm,
        "auth_data": serde_json::from_str::<Value>(&v.auth_data).unwrap_or_default(),
        "etag": v.etag.to_string(),
        "count": count,
    })))
}

pub async fn create_version(State(state): State<Arc<MatrixState>>, req: Ruma<create::Request>) -> JsonResult {
    let caller = req.caller()?;
    let (alg, auth) = algorithm(req.body.algorithm.json())?;
    let v = state
        .core
        .store
        .create_backup_version(&caller.localpart, &alg, &auth)
        .await
        .map_err(store_err)?;
    Ok(Json(json!({ "version": v.to_string() })))
}

pub async fn latest_version(State(state): State<Arc<MatrixState>>, req: Ruma<latest::Request>) -> JsonResult {
    version_info(&state, req.caller()?, None).await
}

pub async fn version(State(state): State<Arc<MatrixState>>, req: Ruma<info::Request>) -> JsonResult {
    let v = version_number(&req.body.version)?;
    version_info(&state, req.caller()?, Some(v)).await
}

/// Spec: only auth_data may change; the algorithm must stay the same.
pub async fn update_version(State(state): State<Arc<MatrixState>>, req: Ruma<update::Request>) -> JsonResult {
    let caller = req.caller()?;
    let v = version_number(&req.body.version)?;
    let (alg, auth) = algorithm(req.body.algorithm.json())?;
    let current = existing_version(&state, caller, v).await?;
    if current.algorithm != alg {
        return Err(MatrixError::invalid_param(
            "The algorithm of a backup version cannot change",
        ));
    }
    state
        .core
        .store
        .update_backup_version(&caller.localpart, v, &auth)
        .await
        .map_err(store_err)?;
    Ok(Json(json!({})))
}

pub async fn remove_version(State(state): State<Arc<MatrixState>>, req: Ruma<delete_version::Request>) -> JsonResult {
    let caller = req.caller()?;
    let v = version_number(&req.body.version)?;
    if !state
        .core
        .store
        .delete_backup_version(&caller.localpart, v)
        .await
        .map_err(store_err)?
    {
        return Err(no_backup());
    }
    Ok(Json(json!({})))
}

/// Keys are written only to the current version (spec: M_WRONG_ROOM_KEYS_VERSION otherwise).
async fn writable(state: &MatrixState, caller: &Caller, version: &str) -> Result<i64, MatrixError> {
    let v = version_number(version)?;
    let current = state
        .core
        .store
        .backup_version(&caller.localpart, None)
        .await
        .map_err(store_err)?
        .ok_or_else(no_backup)?;
    if current.version != v {
        let mut e = MatrixError::new(
            axum::http::StatusCode::FORBIDDEN,
            "M_WRONG_ROOM_KEYS_VERSION",
            "Not the current backup version",
        );
        e.body
            .insert("current_version".into(), json!(current.version.to_string()));
        return Err(e);
    }
    Ok(v)
}

fn parse_key(room_id: &str, session_id: &str, raw: &serde_json::value::RawValue) -> Result<BackupKey, MatrixError> {
    let v: Value = serde_json::from_str(raw.get()).map_err(|e| MatrixError::bad_json(e.to_string()))?;
    let int = |k: &str| {
        v[k].as_i64()
            .ok_or_else(|| MatrixError::bad_json(format!("{k} is required")))
    };
    Ok(BackupKey {
        room_id: room_id.to_owned(),
        session_id: session_id.to_owned(),
        first_message_index: int("first_message_index")?,
        forwarded_count: int("forwarded_count")?,
        is_verified: v["is_verified"]
            .as_bool()
            .ok_or_else(|| MatrixError::bad_json("is_verified is required"))?,
        session_data: v
            .get("session_data")
            .filter(|d| d.is_object())
            .ok_or_else(|| MatrixError::bad_json("session_data must be an object"))?
            .to_string(),
    })
}

/// Spec: an existing key is replaced only by a better one: verified beats unverified, then a
/// lower first_message_index, then a lower forwarded_count.
fn better(new: &BackupKey, old: &BackupKey) -> bool {
    (
        new.is_verified,
        std::cmp::Reverse(new.first_message_index),
        std::cmp::Reverse(new.forwarded_count),
    ) > (
        old.is_verified,
        std::cmp::Reverse(old.first_message_index),
        std::cmp::Reverse(old.forwarded_count),
    )
}

async fn put_keys(state: &MatrixState, caller: &Caller, version: &str, keys: Vec<BackupKey>) -> JsonResult {
    let v = writable(state, caller, version).await?;
    let store = &state.core.store;
    let mut kept = Vec::new();
    for k in keys {
        let existing = store
            .backup_keys(&caller.localpart, v, Some(&k.room_id), Some(&k.session_id))
            .await
            .map_err(store_err)?;
        if existing.first().is_none_or(|old| better(&k, old)) {
            kept.push(k);
        }
    }
    store
        .put_backup_keys(&caller.localpart, v, &kept)
        .await
        .map_err(store_err)?;
    etag_and_count(state, caller, v).await
}

pub async fn put_all(State(state): State<Arc<MatrixState>>, req: Ruma<add_all::Request>) -> JsonResult {
    let caller = req.caller()?;
    let mut keys = Vec::new();
    for (room, backup) in &req.body.rooms {
        for (session, raw) in &backup.sessions {
            keys.push(parse_key(room.as_str(), session, raw.json())?);
        }
    }
    put_keys(&state, caller, &req.body.version, keys).await
}

pub async fn put_room(State(state): State<Arc<MatrixState>>, req: Ruma<add_room::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    let keys = b
        .sessions
        .iter()
        .map(|(s, raw)| parse_key(b.room_id.as_str(), s, raw.json()))
        .collect::<Result<Vec<_>, _>>()?;
    put_keys(&state, caller, &b.version, keys).await
}

pub async fn put_session(State(state): State<Arc<MatrixState>>, req: Ruma<add_session::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    let key = parse_key(b.room_id.as_str(), &b.session_id, b.session_data.json())?;
    put_keys(&state, caller, &b.version, vec![key]).await
}

fn key_json(k: &BackupKey) -> Value {
    json!({
        "first_message_index": k.first_message_index,
        "forwarded_count": k.forwarded_count,
        "is_verified": k.is_verified,
        "session_data": serde_json::from_str::<Value>(&k.session_data).unwrap_or_default(),
    })
}

async fn fetch(
    state: &MatrixState,
    caller: &Caller,
    version: &str,
    room: Option<&str>,
    session: Option<&str>,
) -> Result<Vec<BackupKey>, MatrixError> {
    let v = version_number(version)?;
    existing_version(state, caller, v).await?;
    state
        .core
        .store
        .backup_keys(&caller.localpart, v, room, session)
        .await
        .map_err(store_err)
}

fn sessions_json(keys: &[BackupKey]) -> Value {
    let sessions: Map<String, Value> = keys.iter().map(|k| (k.session_id.clone(), key_json(k))).collect();
    json!({ "sessions": sessions })
}

pub async fn fetch_all(State(state): State<Arc<MatrixState>>, req: Ruma<get_all::Request>) -> JsonResult {
    let caller = req.caller()?;
    let keys = fetch(&state, caller, &req.body.version, None, None).await?;
    let mut rooms: Map<String, Value> = Map::new();
    for k in &keys {
        let room = rooms
            .entry(k.room_id.clone())
            .or_insert_with(|| json!({ "sessions": {} }));
        room["sessions"][&k.session_id] = key_json(k);
    }
    Ok(Json(json!({ "rooms": rooms })))
}

pub async fn fetch_room(State(state): State<Arc<MatrixState>>, req: Ruma<get_room::Request>) -> JsonResult {
    let caller = req.caller()?;
    let keys = fetch(&state, caller, &req.body.version, Some(req.body.room_id.as_str()), None).await?;
    Ok(Json(sessions_json(&keys)))
}

pub async fn fetch_session(State(state): State<Arc<MatrixState>>, req: Ruma<get_session::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    let keys = fetch(
        &state,
        caller,
        &b.version,
        Some(b.room_id.as_str()),
        Some(&b.session_id),
    )
    .await?;
    keys.first()
        .map(|k| Json(key_json(k)))
        .ok_or_else(|| MatrixError::not_found("No key for this session"))
}

async fn delete_keys(
    state: &MatrixState,
    caller: &Caller,
    version: &str,
    room: Option<&str>,
    session: Option<&str>,
) -> JsonResult {
    let v = version_number(version)?;
    existing_version(state, caller, v).await?;
    state
        .core
        .store
        .delete_backup_keys(&caller.localpart, v, room, session)
        .await
        .map_err(store_err)?;
    etag_and_count(state, caller, v).await
}

pub async fn remove_all(State(state): State<Arc<MatrixState>>, req: Ruma<del_all::Request>) -> JsonResult {
    delete_keys(&state, req.caller()?, &req.body.version, None, None).await
}

pub async fn remove_room(State(state): State<Arc<MatrixState>>, req: Ruma<del_room::Request>) -> JsonResult {
    delete_keys(
        &state,
        req.caller()?,
        &req.body.version,
        Some(req.body.room_id.as_str()),
        None,
    )
    .await
}

pub async fn remove_session(State(state): State<Arc<MatrixState>>, req: Ruma<del_session::Request>) -> JsonResult {
    let b = &req.body;
    delete_keys(
        &state,
        req.caller()?,
        &b.version,
        Some(b.room_id.as_str()),
        Some(&b.session_id),
    )
    .await
}
