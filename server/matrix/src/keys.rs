//! End-to-end encryption endpoints (spec: "End-to-End Encryption", "Send-to-Device
//! messaging"): key upload, query, claim, changes, and to-device sends. Keys are stored and
//! handed out as the clients signed them; the server never decrypts.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use ruma::api::client::keys::{
    claim_keys::v3 as claim, get_key_changes::v3 as changes, get_keys::v3 as query, upload_keys::v3 as upload,
    upload_signatures::v3 as signatures, upload_signing_keys::v3 as signing,
};
use ruma::api::client::to_device::send_event_to_device::v3 as to_device;
use ruma::to_device::DeviceIdOrAllDevices;
use serde_json::{Map, Value, json};

use crate::{Caller, MatrixError, MatrixState, Ruma};

type JsonResult = Result<Json<Value>, MatrixError>;

fn raw_map<T>(map: &BTreeMap<impl ToString, ruma::serde::Raw<T>>) -> Result<Map<String, Value>, MatrixError> {
    let mut out = Map::new();
    for (k, v) in map {
        let value: Value = serde_json::from_str(v.json().get()).map_err(|e| MatrixError::bad_json(e.to_string()))?;
        out.insert(k.to_string(), value);
    }
    Ok(out)
}

pub async fn upload_keys(State(state): State<Arc<MatrixState>>, req: Ruma<upload::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    let device_keys: Option<Value> = match &b.device_keys {
        Some(raw) => Some(serde_json::from_str(raw.json().get()).map_err(|e| MatrixError::bad_json(e.to_string()))?),
        None => None,
    };
    let counts = state
        .core
        .e2ee
        .upload(
            &caller.localpart,
            caller.user_id.as_str(),
            caller.device_id.as_str(),
            device_keys.as_ref(),
            &raw_map(&b.one_time_keys)?,
            &raw_map(&b.fallback_keys)?,
        )
        .await?;
    Ok(Json(json!({ "one_time_key_counts": counts })))
}

/// keys/query: device keys of local users (with the device's display name in `unsigned`).
/// Remote users need federation and are reported under `failures`.
pub async fn query_keys(State(state): State<Arc<MatrixState>>, req: Ruma<query::Request>) -> JsonResult {
    let caller = req.caller()?;
    let mut device_keys = Map::new();
    let mut failures = Map::new();
    let (mut master_keys, mut self_signing_keys, mut user_signing_keys) = (Map::new(), Map::new(), Map::new());
    for (user, wanted) in &req.body.device_keys {
        let Some(localpart) = state.local(user) else {
            failures.insert(
                user.server_name().to_string(),
                json!({ "errcode": "M_UNRECOGNIZED", "error": "Federation is not available yet" }),
            );
            continue;
        };
        let names: BTreeMap<String, Option<String>> = state
            .core
            .sessions
            .devices(&localpart)
            .await?
            .into_iter()
            .map(|d| (d.device_id, d.display_name))
            .collect();
        let mut devices = Map::new();
        for (device, mut keys) in state.core.e2ee.device_keys(&localpart).await? {
            if !wanted.is_empty() && !wanted.iter().any(|w| w.as_str() == device) {
                continue;
            }
            if let Some(Some(name)) = names.get(&device)
                && let Some(obj) = keys.as_object_mut()
            {
                obj.insert("unsigned".into(), json!({ "device_display_name": name }));
            }
            devices.insert(device, keys);
        }
        device_keys.insert(user.to_string(), Value::Object(devices));
        for (key_type, field) in [("master", &mut master_keys), ("self_signing", &mut self_signing_keys)] {
            if let Some(k) = state.core.e2ee.cross_signing_key(&localpart, key_type).await? {
                field.insert(user.to_string(), k);
            }
        }
        // A user-signing key is shown to its owner only (spec).
        if localpart == caller.localpart
            && let Some(k) = state.core.e2ee.cross_signing_key(&localpart, "user_signing").await?
        {
            user_signing_keys.insert(user.to_string(), k);
        }
    }
    Ok(Json(json!({
        "device_keys": device_keys,
        "failures": failures,
        "master_keys": master_keys,
        "self_signing_keys": self_signing_keys,
        "user_signing_keys": user_signing_keys,
    })))
}

/// keys/claim: a one-time key per device, or its fallback key when none is left.
pub async fn claim_keys(State(state): State<Arc<MatrixState>>, req: Ruma<claim::Request>) -> JsonResult {
    let _caller = req.caller()?;
    let mut one_time_keys = Map::new();
    let mut failures = Map::new();
    for (user, devices) in &req.body.one_time_keys {
        let Some(localpart) = state.local(user) else {
            failures.insert(
                user.server_name().to_string(),
                json!({ "errcode": "M_UNRECOGNIZED", "error": "Federation is not available yet" }),
            );
            continue;
        };
        let mut claimed = Map::new();
        for (device, algorithm) in devices {
            if let Some((key_id, key)) = state
                .core
                .e2ee
                .claim(&localpart, device.as_str(), algorithm.as_str())
                .await?
            {
                claimed.insert(device.to_string(), json!({ key_id: key }));
            }
        }
        if !claimed.is_empty() {
            one_time_keys.insert(user.to_string(), Value::Object(claimed));
        }
    }
    Ok(Json(json!({ "one_time_keys": one_time_keys, "failures": failures })))
}

/// Users sharing a joined room with the caller (and the caller): whose device lists matter.
pub async fn interesting_users(
    state: &MatrixState,
    caller: &Caller,
) -> Result<std::collections::BTreeSet<String>, MatrixError> {
    let mut users = std::collections::BTreeSet::from([caller.user_id.to_string()]);
    for m in state.core.rooms.memberships(caller.user_id.as_str()).await? {
        if m.membership == "join" {
            for (user, (membership, _)) in state.core.rooms.members(&m.room_id).await?.iter() {
                if membership == "join" {
                    users.insert(user.clone());
                }
            }
        }
    }
    Ok(users)
}

pub async fn key_changes(State(state): State<Arc<MatrixState>>, req: Ruma<changes::Request>) -> JsonResult {
    let caller = req.caller()?;
    let parse = |t: &str| {
        estuary_core::streams::Positions::parse(t)
            .ok_or_else(|| MatrixError::invalid_param(format!("Invalid token {t:?}")))
    };
    let (from, to) = (parse(&req.body.from)?, parse(&req.body.to)?);
    let memberships = state.core.rooms.memberships(caller.user_id.as_str()).await?;
    let (changed, left) = device_list_updates(&state, caller, &memberships, &from, &to).await?;
    Ok(Json(json!({ "changed": changed, "left": left })))
}

/// Spec ("Tracking the device list for a user"): `changed` = users sharing a room with the
/// caller whose devices changed, or who started sharing a room; `left` = users who no longer
/// share any room with the caller. Between positions `from` and `to`.
pub async fn device_list_updates(
    state: &MatrixState,
    caller: &Caller,
    memberships: &[estuary_core::Membership],
    from: &estuary_core::streams::Positions,
    to: &estuary_core::streams::Positions,
) -> Result<(Vec<String>, Vec<String>), MatrixError> {
    use std::collections::BTreeSet;
    // Membership events scanned per room and sync; more than this in one gap is a full resync.
    const SCAN: i64 = 1000;
    let mut changed: BTreeSet<String> = BTreeSet::new();
    if to.device_lists > from.device_lists {
        changed.extend(
            state
                .core
                .e2ee
                .device_list_changes(from.device_lists, to.device_lists)
                .await?,
        );
    }
    let mut candidates_left: BTreeSet<String> = BTreeSet::new();
    if to.events > from.events {
        let store = &state.core.store;
        for m in memberships {
            if m.stream_ordering > from.events
                && m.stream_ordering <= to.events
                && !crate::sync::same_membership_as_before(state, m).await?
            {
                // The caller's own membership changed: everyone in the room is concerned.
                for (user, (membership, _)) in state.core.rooms.members(&m.room_id).await?.iter() {
                    if m.membership == "join" && membership == "join" {
                        changed.insert(user.clone());
                    } else {
                        candidates_left.insert(user.clone());
                    }
                }
                continue;
            }
            // Only member events are looked for: a room with no state event since needs no look.
            if m.membership != "join" || !state.core.streams.room_state.any_after(&m.room_id, from.events) {
                continue;
            }
            let events = store
                .room_events(&m.room_id, from.events, to.events, SCAN, true)
                .await
                .map_err(estuary_core::CoreError::from)?;
            for e in events.iter().filter(|e| e.kind == "m.room.member") {
                let Some(user) = &e.state_key else { continue };
                match crate::events::client_event(e, false)["content"]["membership"].as_str() {
                    Some("join") => {
                        changed.insert(user.clone());
                    }
                    Some("leave" | "ban") => {
                        candidates_left.insert(user.clone());
                    }
                    _ => {}
                }
            }
        }
    }
    if changed.is_empty() && candidates_left.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let now_sharing = interesting_users(state, caller).await?;
    changed.retain(|u| now_sharing.contains(u));
    let left: Vec<String> = candidates_left
        .into_iter()
        .filter(|u| !now_sharing.contains(u))
        .collect();
    Ok((changed.into_iter().collect(), left))
}

pub async fn send_to_device(State(state): State<Arc<MatrixState>>, req: Ruma<to_device::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    let kind = b.event_type.to_string();
    let mut queued = Vec::new();
    for (user, devices) in &b.messages {
        let Some(localpart) = state.local(user) else {
            return Err(MatrixError::forbidden(
                "Sending to devices of other servers needs federation, which is not available yet",
            ));
        };
        for (target, raw) in devices {
            let content = raw.json().get().to_owned();
            if !content.trim_start().starts_with('{') {
                return Err(MatrixError::bad_json("to-device content must be a JSON object"));
            }
            let ids: Vec<String> = match target {
                DeviceIdOrAllDevices::DeviceId(d) => vec![d.to_string()],
                DeviceIdOrAllDevices::AllDevices => state
                    .core
                    .sessions
                    .devices(&localpart)
                    .await?
                    .into_iter()
                    .map(|d| d.device_id)
                    .collect(),
            };
            for device in ids {
                queued.push((
                    localpart.clone(),
                    device,
                    caller.user_id.to_string(),
                    kind.clone(),
                    content.clone(),
                ));
            }
        }
    }
    state
        .core
        .e2ee
        .send_to_device(
            queued,
            (&caller.localpart, caller.device_id.as_str(), b.txn_id.as_str()),
        )
        .await?;
    Ok(Json(json!({})))
}

/// keys/device_signing/upload. Spec (v1.11, MSC3967): the first upload needs no
/// user-interactive auth; replacing existing cross-signing keys needs the password.
pub async fn upload_signing_keys(State(state): State<Arc<MatrixState>>, req: Ruma<signing::Request>) -> JsonResult {
    let caller = req.caller()?;
    let b = &req.body;
    if state
        .core
        .e2ee
        .cross_signing_key(&caller.localpart, "master")
        .await?
        .is_some()
    {
        let purpose = format!("device_signing:{}", caller.localpart);
        crate::uiaa::authenticate(
            &state,
            b.auth.as_ref(),
            &[&[crate::uiaa::PASSWORD]],
            &purpose,
            Some(&caller.localpart),
        )
        .await?;
    }
    let parse = |raw: &Option<ruma::serde::Raw<_>>| -> Result<Option<Value>, MatrixError> {
        raw.as_ref()
            .map(|r: &ruma::serde::Raw<_>| {
                serde_json::from_str(r.json().get()).map_err(|e| MatrixError::bad_json(e.to_string()))
            })
            .transpose()
    };
    let keys = [
        ("master", parse(&b.master_key)?),
        ("self_signing", parse(&b.self_signing_key)?),
        ("user_signing", parse(&b.user_signing_key)?),
    ];
    let present: Vec<(&str, &Value)> = keys.iter().filter_map(|(t, k)| k.as_ref().map(|k| (*t, k))).collect();
    if present.is_empty() {
        return Err(MatrixError::missing_param("No cross-signing key given"));
    }
    state
        .core
        .e2ee
        .upload_cross_signing(&caller.localpart, caller.user_id.as_str(), &present)
        .await?;
    Ok(Json(json!({})))
}

pub async fn upload_signatures(State(state): State<Arc<MatrixState>>, req: Ruma<signatures::Request>) -> JsonResult {
    let caller = req.caller()?;
    let mut targets = Vec::new();
    for (user, keys) in &req.body.signed_keys {
        let keys = serde_json::to_value(keys).map_err(MatrixError::internal)?;
        for (key_id, signed) in keys.as_object().into_iter().flatten() {
            targets.push((user.to_string(), state.local(user), key_id.clone(), signed.clone()));
        }
    }
    let failures = state
        .core
        .e2ee
        .upload_signatures(caller.user_id.as_str(), &caller.localpart, targets)
        .await?;
    Ok(Json(json!({ "failures": failures })))
}
