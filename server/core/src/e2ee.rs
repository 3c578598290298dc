//! End-to-end encryption support: the server stores and routes what clients need (device
//! keys, one-time and fallback keys, to-device messages, device-list changes) and never holds
//! a private key or decrypts anything. Key JSON is stored exactly as the client signed it.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use estuary_store::{NewToDevice, Store, ToDeviceMessage};
use ruma::CanonicalJsonObject;
use serde_json::{Map, Value};

use crate::CoreError;
use crate::streams::{HeldWhile, Rows, Streams, Versions};

/// Algorithms a device may announce (spec: "End-to-End Encryption", messaging algorithms).
pub const DEVICE_ALGORITHMS: &[&str] = &[
    "m.olm.v1.curve25519-aes-sha2",
    "m.megolm.v1.aes-sha2",
    "m.megolm.v2.aes-sha2",
    "m.olm.v2.curve25519-aes-sha2",
];
/// Key algorithms of one-time and fallback keys.
pub const ONE_TIME_KEY_ALGORITHMS: &[&str] = &["signed_curve25519", "curve25519"];
/// Largest to-device content, in bytes (Synapse's limit for a whole request is much larger;
/// one message this size already carries any room key).
pub const MAX_TO_DEVICE_BYTES: usize = 65_536;
/// To-device messages delivered per sync at most; the rest come with the next sync.
pub const TO_DEVICE_PER_SYNC: i64 = 100;

#[derive(Clone)]
pub struct E2ee {
    store: Arc<dyn Store>,
    streams: Arc<Streams>,
    /// Each device's one-time key counts and unused fallback key types (every `/sync`
    /// response carries them), held while its keys do not change: an upload, a claim or the
    /// device's deletion bumps their version.
    held: Arc<HeldCounts>,
}

#[derive(Default)]
struct HeldCounts {
    counts: HeldWhile<(String, String), KeyCounts>,
    versions: Versions<(String, String)>,
}

type KeyCounts = (BTreeMap<String, i64>, Vec<String>);

fn invalid(msg: impl Into<String>) -> CoreError {
    CoreError::InvalidParam(msg.into())
}

/// Check a device_keys object: it is for this user and device, announces known algorithms,
/// carries its ed25519 and curve25519 keys, and is signed by its own ed25519 key.
pub fn verify_device_keys(keys: &Value, user_id: &str, device_id: &str) -> Result<(), CoreError> {
    if keys["user_id"].as_str() != Some(user_id) || keys["device_id"].as_str() != Some(device_id) {
        return Err(invalid("device_keys must name the uploading user and device"));
    }
    let algorithms = keys["algorithms"]
        .as_array()
        .ok_or_else(|| invalid("device_keys.algorithms must be a list"))?;
    for a in algorithms {
        if !a.as_str().is_some_and(|a| DEVICE_ALGORITHMS.contains(&a)) {
            return Err(invalid(format!("unknown algorithm {a} in device_keys.algorithms")));
        }
    }
    let ed_id = format!("ed25519:{device_id}");
    let ed25519 = keys["keys"][&ed_id]
        .as_str()
        .ok_or_else(|| invalid(format!("device_keys.keys lacks {ed_id}")))?;
    if !keys["keys"][format!("curve25519:{device_id}")].is_string() {
        return Err(invalid(format!("device_keys.keys lacks curve25519:{device_id}")));
    }
    verify_signature(keys, user_id, &ed_id, ed25519)
}

/// Verify the signature of `signer`'s key `key_id` (base64 `public_key`) on a JSON object.
pub fn verify_signature(object: &Value, signer: &str, key_id: &str, public_key: &str) -> Result<(), CoreError> {
    let signature = object["signatures"][signer][key_id]
        .as_str()
        .ok_or_else(|| invalid(format!("not signed by {key_id}")))?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s.trim_end_matches('='));
    let public = b64(public_key).map_err(|_| invalid(format!("{key_id} is not valid base64")))?;
    let signature = b64(signature).map_err(|_| invalid("signature is not valid base64"))?;
    let canonical: CanonicalJsonObject =
        serde_json::from_value(object.clone()).map_err(|e| invalid(format!("not canonical JSON: {e}")))?;
    let message =
        ruma::signatures::to_canonical_json_string_for_signing(&canonical).map_err(|e| invalid(e.to_string()))?;
    ruma::signatures::verify_canonical_json_bytes(
        &ruma::SigningKeyAlgorithm::Ed25519,
        &public,
        &signature,
        message.as_bytes(),
    )
    .map_err(|_| invalid(format!("the signature by {key_id} does not verify")))
}

/// Key JSON as stored: `unsigned` is the server's to fill in (client data there is dropped)
/// and `signatures`, when present, must be an object of objects. Later writes into the stored
/// JSON then cannot meet a non-object where they expect one.
pub fn sanitize_key_object(mut v: Value) -> Result<Value, CoreError> {
    let obj = v.as_object_mut().ok_or_else(|| invalid("keys must be a JSON object"))?;
    obj.remove("unsigned");
    match obj.get("signatures") {
        None => {}
        Some(Value::Object(sigs)) if sigs.values().all(Value::is_object) => {}
        Some(_) => return Err(invalid("signatures must be an object of objects")),
    }
    Ok(v)
}

/// Set `object.signatures[signer][key_id] = signature`, creating the maps; never panics.
pub fn set_signature(object: &mut Value, signer: &str, key_id: &str, signature: Value) {
    let Some(obj) = object.as_object_mut() else { return };
    let sigs = obj.entry("signatures").or_insert_with(|| Value::Object(Map::new()));
    if !sigs.is_object() {
        *sigs = Value::Object(Map::new());
    }
    let Some(sigs) = sigs.as_object_mut() else { return };
    let mine = sigs
        .entry(signer.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !mine.is_object() {
        *mine = Value::Object(Map::new());
    }
    if let Some(mine) = mine.as_object_mut() {
        mine.insert(key_id.to_owned(), signature);
    }
}

/// Split `algorithm:key_id` and check the algorithm.
fn key_name(name: &str) -> Result<(String, String), CoreError> {
    match name.split_once(':') {
        Some((alg, id)) if ONE_TIME_KEY_ALGORITHMS.contains(&alg) && !id.is_empty() => {
            Ok((alg.to_owned(), id.to_owned()))
        }
        _ => Err(invalid(format!(
            "unknown key algorithm in {name:?}; expected signed_curve25519:ID"
        ))),
    }
}

impl E2ee {
    pub fn new(store: Arc<dyn Store>, streams: Arc<Streams>) -> Self {
        Self {
            store,
            streams,
            held: Arc::default(),
        }
    }

    /// keys/upload. Returns the one-time key counts after the upload.
    pub async fn upload(
        &self,
        localpart: &str,
        user_id: &str,
        device_id: &str,
        device_keys: Option<&Value>,
        one_time_keys: &Map<String, Value>,
        fallback_keys: &Map<String, Value>,
    ) -> Result<BTreeMap<String, i64>, CoreError> {
        // Everything is checked before anything is stored: a bad key fails the whole upload.
        let device_keys = device_keys.map(|k| sanitize_key_object(k.clone())).transpose()?;
        let device_keys = device_keys.as_ref();
        if let Some(keys) = device_keys {
            verify_device_keys(keys, user_id, device_id)?;
        }
        let mut otks = Vec::new();
        for (name, key) in one_time_keys {
            let (alg, id) = key_name(name)?;
            otks.push((alg, id, key.to_string()));
        }
        let mut fallbacks = Vec::new();
        for (name, key) in fallback_keys {
            fallbacks.push((key_name(name)?, key.to_string()));
        }
        let device_lists_writer = self.streams.device_lists_writer.lock().await;
        if let Some(keys) = device_keys
            && let Some(pos) = self
                .store
                .set_device_keys(localpart, device_id, user_id, &keys.to_string())
                .await?
        {
            self.streams.advance(|p| p.device_lists = p.device_lists.max(pos));
        }
        drop(device_lists_writer);
        let stored = async {
            if !otks.is_empty() {
                self.store.add_one_time_keys(localpart, device_id, &otks).await?;
            }
            for ((alg, id), json) in fallbacks {
                self.store
                    .set_fallback_key(localpart, device_id, &alg, &id, &json)
                    .await?;
            }
            Ok::<_, CoreError>(())
        }
        .await;
        // Also after a failure part-way: what was stored counts.
        self.keys_changed(localpart, device_id);
        stored?;
        // Read (and held) as the next /sync will want them.
        Ok(self.counts_and_fallbacks(localpart, device_id).await?.0)
    }

    /// The one-time key counts and the algorithms of the unused fallback keys, in one read.
    /// `signed_curve25519` is always counted (0 when all are claimed): clients read a missing
    /// count as "unchanged" and would never upload more.
    pub async fn counts_and_fallbacks(&self, localpart: &str, device_id: &str) -> Result<KeyCounts, CoreError> {
        let key = (localpart.to_owned(), device_id.to_owned());
        let rows = self.held.versions.rows(&key);
        self.held
            .counts
            .get(key, rows, || async {
                let (counts, fallbacks) = self.store.key_counts(localpart, device_id).await?;
                Ok((with_curve25519(counts), fallbacks))
            })
            .await
    }

    /// The device's one-time or fallback keys changed (or may have).
    fn keys_changed(&self, localpart: &str, device_id: &str) {
        self.held.versions.bump((localpart.to_owned(), device_id.to_owned()));
    }

    /// The device keys of a local user: device_id -> keys JSON.
    pub async fn device_keys(&self, localpart: &str) -> Result<BTreeMap<String, Value>, CoreError> {
        let rows = self.store.device_keys(localpart).await?;
        Ok(rows
            .into_iter()
            .filter_map(|(d, json)| serde_json::from_str(&json).ok().map(|v| (d, v)))
            .collect())
    }

    /// Claim a key of `algorithm` for a device: `(algorithm:key_id, key JSON)`.
    pub async fn claim(
        &self,
        localpart: &str,
        device_id: &str,
        algorithm: &str,
    ) -> Result<Option<(String, Value)>, CoreError> {
        let claimed = self.store.claim_key(localpart, device_id, algorithm).await;
        self.keys_changed(localpart, device_id);
        let Some((key_id, json)) = claimed? else {
            return Ok(None);
        };
        let value = serde_json::from_str(&json).unwrap_or(Value::Null);
        Ok(Some((format!("{algorithm}:{key_id}"), value)))
    }

    /// A device was deleted: its keys and queued messages go, and its user's device list
    /// changed.
    pub async fn device_deleted(&self, localpart: &str, device_id: &str, user_id: &str) -> Result<(), CoreError> {
        let _writer = self.streams.device_lists_writer.lock().await;
        let deleted = self.store.delete_device_keys(localpart, device_id, user_id).await;
        self.keys_changed(localpart, device_id);
        let pos = deleted?;
        self.streams.advance(|p| p.device_lists = p.device_lists.max(pos));
        Ok(())
    }

    pub async fn device_list_changes(&self, after: i64, upto: i64) -> Result<Vec<String>, CoreError> {
        Ok(self.store.device_list_changes(after, upto).await?)
    }

    /// Queue to-device messages. With a txn already seen from this device, nothing is queued
    /// (spec: idempotent per access token and transaction ID).
    pub async fn send_to_device(&self, messages: Vec<NewToDevice>, txn: (&str, &str, &str)) -> Result<(), CoreError> {
        for m in &messages {
            if m.4.len() > MAX_TO_DEVICE_BYTES {
                return Err(CoreError::TooLarge(format!(
                    "a to-device message is larger than {MAX_TO_DEVICE_BYTES} bytes"
                )));
            }
        }
        let _writer = self.streams.to_device_writer.lock().await;
        if let Some(pos) = self.store.add_to_device(&messages, Some(txn)).await?
            && pos > 0
        {
            // Each device is noted at the batch's newest position, at or after its own.
            for (localpart, device, ..) in &messages {
                self.streams
                    .device_to_device
                    .note((localpart.clone(), device.clone()), pos);
            }
            self.streams.advance(|p| p.to_device = p.to_device.max(pos));
        }
        Ok(())
    }

    /// The device's messages after `after` (up to `upto`), deleting those up to `after`, which
    /// the device acknowledged by syncing with that position.
    pub async fn to_device_for_sync(
        &self,
        localpart: &str,
        device_id: &str,
        after: i64,
        upto: i64,
    ) -> Result<Vec<ToDeviceMessage>, CoreError> {
        let key = (localpart.to_owned(), device_id.to_owned());
        match self.streams.device_to_device.rows(&key) {
            Rows::Nothing => return Ok(Vec::new()),
            // Nothing new: only acknowledged messages may be left, to delete once.
            Rows::UpTo(newest) if newest <= after => {
                self.store.delete_to_device(localpart, device_id, after).await?;
                self.streams.device_to_device.forget(&key, newest);
                return Ok(Vec::new());
            }
            Rows::UpTo(_) | Rows::Unknown => {}
        }
        if after > 0 {
            self.store.delete_to_device(localpart, device_id, after).await?;
        }
        Ok(self
            .store
            .to_device(localpart, device_id, after, upto, TO_DEVICE_PER_SYNC)
            .await?)
    }
}

/// Cross-signing key types (spec: "Cross-signing").
pub const CROSS_SIGNING_TYPES: &[&str] = &["master", "self_signing", "user_signing"];

/// The single ed25519 key of a cross-signing key object: (key ID, public key).
fn cross_signing_public(key: &Value) -> Result<(String, String), CoreError> {
    let keys = key["keys"]
        .as_object()
        .ok_or_else(|| invalid("a cross-signing key needs a keys object"))?;
    match keys.iter().next() {
        Some((id, Value::String(public)))
            if keys.len() == 1 && id.strip_prefix("ed25519:") == Some(public.as_str()) =>
        {
            Ok((id.clone(), public.clone()))
        }
        _ => Err(invalid(
            "a cross-signing key has exactly one key, \"ed25519:<public key>\": \"<public key>\"",
        )),
    }
}

/// The JSON that a signature covers: the object without signatures and unsigned.
fn signed_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("signatures");
        o.remove("unsigned");
    }
    v
}

impl E2ee {
    async fn changed(&self, user_id: &str) -> Result<(), CoreError> {
        let _writer = self.streams.device_lists_writer.lock().await;
        let pos = self.store.add_device_list_change(user_id).await?;
        self.streams.advance(|p| p.device_lists = p.device_lists.max(pos));
        Ok(())
    }

    pub async fn cross_signing_key(&self, localpart: &str, key_type: &str) -> Result<Option<Value>, CoreError> {
        Ok(self
            .store
            .cross_signing_key(localpart, key_type)
            .await?
            .and_then(|j| serde_json::from_str(&j).ok()))
    }

    /// keys/device_signing/upload: check every key, then store them all.
    pub async fn upload_cross_signing(
        &self,
        localpart: &str,
        user_id: &str,
        keys: &[(&str, &Value)],
    ) -> Result<(), CoreError> {
        // Sanitised copies are what is checked and stored.
        let keys: Vec<(&str, Value)> = keys
            .iter()
            .map(|(t, k)| Ok((*t, sanitize_key_object((*k).clone())?)))
            .collect::<Result<_, CoreError>>()?;
        let new_master = keys.iter().find(|(t, _)| *t == "master").map(|(_, k)| (*k).clone());
        let master = match &new_master {
            Some(m) => Some(m.clone()),
            None => self.cross_signing_key(localpart, "master").await?,
        };
        for (key_type, key) in &keys {
            if !CROSS_SIGNING_TYPES.contains(key_type) {
                return Err(invalid(format!("unknown cross-signing key type {key_type}")));
            }
            if key["user_id"].as_str() != Some(user_id) {
                return Err(invalid(format!("the {key_type} key must be for {user_id}")));
            }
            if !key["usage"]
                .as_array()
                .is_some_and(|u| u.iter().any(|x| x == *key_type))
            {
                return Err(invalid(format!("the {key_type} key must have usage [\"{key_type}\"]")));
            }
            cross_signing_public(key)?;
            if *key_type != "master" {
                let master = master
                    .as_ref()
                    .ok_or_else(|| invalid(format!("a {key_type} key needs a master key")))?;
                let (id, public) = cross_signing_public(master)?;
                verify_signature(key, user_id, &id, &public)?;
            }
        }
        for (key_type, key) in &keys {
            self.store
                .set_cross_signing_key(localpart, key_type, &key.to_string())
                .await?;
        }
        self.changed(user_id).await
    }

    /// keys/signatures/upload by `uploader`: for each target (user, key or device ID), check
    /// each new signature by a key of the uploader and merge it into the stored object.
    /// Returns the failures, spec-shaped: `{user: {key_id: {errcode, error}}}`.
    pub async fn upload_signatures(
        &self,
        uploader: &str,
        uploader_localpart: &str,
        targets: Vec<(String, Option<String>, String, Value)>,
    ) -> Result<Map<String, Value>, CoreError> {
        let mut failures = Map::new();
        // The uploader's keys that may sign: its devices and its cross-signing keys.
        let mut signers: BTreeMap<String, String> = BTreeMap::new();
        for (device, keys) in self.device_keys(uploader_localpart).await? {
            if let Some(k) = keys["keys"][format!("ed25519:{device}")].as_str() {
                signers.insert(format!("ed25519:{device}"), k.to_owned());
            }
        }
        for t in CROSS_SIGNING_TYPES {
            if let Some(k) = self.cross_signing_key(uploader_localpart, t).await?
                && let Ok((id, public)) = cross_signing_public(&k)
            {
                signers.insert(id, public);
            }
        }
        for (user_id, target_localpart, key_id, signed) in targets {
            let mut fail = |msg: &str| {
                let entry = failures
                    .entry(user_id.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                entry[&key_id] = serde_json::json!({ "errcode": "M_INVALID_SIGNATURE", "error": msg });
            };
            let Some(localpart) = target_localpart else {
                fail("signatures of users of other servers need federation");
                continue;
            };
            // The target: a device of the user, or one of its cross-signing keys.
            let mut stored: Option<(Option<&str>, Value)> = None;
            if let Some(k) = self.device_keys(&localpart).await?.remove(&key_id) {
                stored = Some((None, k));
            } else {
                for t in CROSS_SIGNING_TYPES {
                    if let Some(k) = self.cross_signing_key(&localpart, t).await?
                        && cross_signing_public(&k).is_ok_and(|(_, public)| public == key_id)
                    {
                        stored = Some((Some(t), k));
                        break;
                    }
                }
            }
            let Some((cross_type, mut object)) = stored else {
                fail("unknown key");
                continue;
            };
            if signed_part(&object) != signed_part(&signed) {
                fail("the signed object differs from the stored key");
                continue;
            }
            let Some(new_sigs) = signed["signatures"][uploader].as_object() else {
                fail("no signature by the uploader");
                continue;
            };
            let mut ok = true;
            for (sig_key, sig) in new_sigs {
                let Some(public) = signers.get(sig_key) else {
                    ok = false;
                    break;
                };
                if verify_signature(&signed, uploader, sig_key, public).is_err() {
                    ok = false;
                    break;
                }
                set_signature(&mut object, uploader, sig_key, sig.clone());
            }
            if !ok {
                fail("a signature does not verify with the uploader's keys");
                continue;
            }
            match cross_type {
                Some(t) => {
                    self.store
                        .set_cross_signing_key(&localpart, t, &object.to_string())
                        .await?
                }
                None => {
                    self.store
                        .set_device_keys(&localpart, &key_id, &user_id, &object.to_string())
                        .await?;
                }
            }
            self.changed(&user_id).await?;
        }
        Ok(failures)
    }
}

/// One-time key counts with `signed_curve25519` always present.
fn with_curve25519(counts: Vec<(String, i64)>) -> BTreeMap<String, i64> {
    let mut counts: BTreeMap<String, i64> = counts.into_iter().collect();
    counts.entry("signed_curve25519".to_owned()).or_insert(0);
    counts
}
