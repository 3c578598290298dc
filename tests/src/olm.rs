//! A Matrix end-to-end encryption test device built on vodozemac: it uploads signed device
//! keys and one-time/fallback keys, opens Olm sessions from claimed keys, shares Megolm room
//! keys over to-device messages, and encrypts and decrypts room messages. The server in the
//! middle only stores and routes; this proves it does so exactly as clients need.

use serde_json::{Value, json};
use vodozemac::megolm::{GroupSession, InboundGroupSession, MegolmMessage, SessionConfig as MegolmConfig, SessionKey};
use vodozemac::olm::{Account, OlmMessage, PreKeyMessage, SessionConfig};
use vodozemac::{Curve25519PublicKey, KeyId};

use crate::matrix::Client;

pub const OLM: &str = "m.olm.v1.curve25519-aes-sha2";
pub const MEGOLM: &str = "m.megolm.v1.aes-sha2";

pub struct Device {
    pub client: Client,
    pub account: Account,
}

/// Canonical JSON for signing, as the spec (and the server) compute it.
fn signing_string(v: &Value) -> String {
    let object: ruma::CanonicalJsonObject = serde_json::from_value(v.clone()).unwrap();
    ruma::signatures::to_canonical_json_string_for_signing(&object).unwrap()
}

impl Device {
    pub fn new(client: Client) -> Device {
        Device {
            client,
            account: Account::new(),
        }
    }

    pub fn curve25519(&self) -> String {
        self.account.curve25519_key().to_base64()
    }

    pub fn ed25519(&self) -> String {
        self.account.ed25519_key().to_base64()
    }

    fn sign(&self, mut v: Value) -> Value {
        let signature = self.account.sign(signing_string(&v)).to_base64();
        v["signatures"] =
            json!({ self.client.user_id.clone(): { format!("ed25519:{}", self.client.device_id): signature } });
        v
    }

    /// The device_keys object, signed by the device's ed25519 key.
    pub fn device_keys(&self) -> Value {
        let d = &self.client.device_id;
        self.sign(json!({
            "user_id": self.client.user_id,
            "device_id": d,
            "algorithms": [OLM, MEGOLM],
            "keys": { format!("curve25519:{d}"): self.curve25519(), format!("ed25519:{d}"): self.ed25519() },
        }))
    }

    fn signed_key(&self, key: &Curve25519PublicKey, fallback: bool) -> Value {
        let mut v = json!({ "key": key.to_base64() });
        if fallback {
            v["fallback"] = json!(true);
        }
        self.sign(v)
    }

    /// Generate and upload `otks` one-time keys (and a fallback key if asked), with the device
    /// keys. Returns the server's one-time key counts.
    pub async fn upload_keys(&mut self, otks: usize, fallback: bool) -> Value {
        let body = self.generate_keys(otks, fallback);
        let r = self.client.post("keys/upload", body).await.ok();
        self.account.mark_keys_as_published();
        r["one_time_key_counts"].clone()
    }

    /// Generate keys and return them as a keys/upload body (device_keys, one_time_keys,
    /// fallback_keys); the caller uploads it and marks the keys published.
    pub fn generate_keys(&mut self, otks: usize, fallback: bool) -> Value {
        self.account.generate_one_time_keys(otks);
        if fallback {
            self.account.generate_fallback_key();
        }
        let one_time: serde_json::Map<String, Value> = self
            .account
            .one_time_keys()
            .iter()
            .map(|(id, key): (&KeyId, &Curve25519PublicKey)| {
                (
                    format!("signed_curve25519:{}", id.to_base64()),
                    self.signed_key(key, false),
                )
            })
            .collect();
        let fallback_keys: serde_json::Map<String, Value> = self
            .account
            .fallback_key()
            .iter()
            .map(|(id, key)| {
                (
                    format!("signed_curve25519:{}", id.to_base64()),
                    self.signed_key(key, true),
                )
            })
            .collect();
        json!({ "device_keys": self.device_keys(), "one_time_keys": one_time, "fallback_keys": fallback_keys })
    }

    /// Claim a key of `other`'s device through the server: (key ID, key JSON).
    pub async fn claim(&self, user_id: &str, device_id: &str) -> Option<(String, Value)> {
        let r = self
            .client
            .post(
                "keys/claim",
                json!({ "one_time_keys": { user_id: { device_id: "signed_curve25519" } } }),
            )
            .await
            .ok();
        let keys = r["one_time_keys"][user_id][device_id].as_object()?;
        keys.iter().next().map(|(k, v)| (k.clone(), v.clone()))
    }

    /// Olm-encrypt `payload` for a device whose identity key and claimed one-time key are
    /// given; returns the m.room.encrypted to-device content.
    pub fn olm_encrypt(&self, their_curve: &str, their_otk: &str, payload: &Value) -> Value {
        let identity = Curve25519PublicKey::from_base64(their_curve).unwrap();
        let otk = Curve25519PublicKey::from_base64(their_otk).unwrap();
        let mut session = self
            .account
            .create_outbound_session(SessionConfig::version_1(), identity, otk)
            .unwrap();
        let (message_type, body) = match session.encrypt(payload.to_string()).unwrap() {
            OlmMessage::PreKey(m) => (0, m.to_base64()),
            OlmMessage::Normal(m) => (1, m.to_base64()),
        };
        json!({ "algorithm": OLM, "sender_key": self.curve25519(), "ciphertext": { their_curve: { "type": message_type, "body": body } } })
    }

    /// Decrypt an Olm pre-key to-device message addressed to this device.
    pub fn olm_decrypt(&mut self, content: &Value) -> Value {
        let sender_key = Curve25519PublicKey::from_base64(content["sender_key"].as_str().unwrap()).unwrap();
        let mine = &content["ciphertext"][self.curve25519()];
        assert_eq!(mine["type"], 0, "expected a pre-key message: {content}");
        let message = PreKeyMessage::from_base64(mine["body"].as_str().unwrap()).unwrap();
        let result = self
            .account
            .create_inbound_session(SessionConfig::version_1(), sender_key, &message)
            .unwrap();
        serde_json::from_slice(&result.plaintext).unwrap()
    }
}

/// An outbound Megolm session and how to share it.
pub struct RoomKey {
    pub session: GroupSession,
}

impl RoomKey {
    pub fn new() -> Self {
        Self {
            session: GroupSession::new(MegolmConfig::version_1()),
        }
    }

    /// The m.room_key payload to send (Olm-encrypted) to each recipient device.
    pub fn share_payload(
        &self,
        room_id: &str,
        sender: &Device,
        recipient_user: &str,
        recipient_ed25519: &str,
    ) -> Value {
        json!({
            "type": "m.room_key",
            "content": { "algorithm": MEGOLM, "room_id": room_id, "session_id": self.session.session_id(), "session_key": self.session.session_key().to_base64() },
            "sender": sender.client.user_id,
            "sender_device": sender.client.device_id,
            "recipient": recipient_user,
            "recipient_keys": { "ed25519": recipient_ed25519 },
            "keys": { "ed25519": sender.ed25519() },
        })
    }

    /// The m.room.encrypted content of a room event.
    pub fn encrypt(&mut self, sender: &Device, room_id: &str, kind: &str, content: &Value) -> Value {
        let plaintext = json!({ "type": kind, "content": content, "room_id": room_id });
        let ciphertext = self.session.encrypt(plaintext.to_string()).to_base64();
        json!({ "algorithm": MEGOLM, "sender_key": sender.curve25519(), "ciphertext": ciphertext, "session_id": self.session.session_id(), "device_id": sender.client.device_id })
    }
}

impl Default for RoomKey {
    fn default() -> Self {
        Self::new()
    }
}

/// Decrypt a Megolm room event with the room key received in an m.room_key payload.
pub fn megolm_decrypt(room_key_payload: &Value, encrypted: &Value) -> Value {
    let key = SessionKey::from_base64(room_key_payload["content"]["session_key"].as_str().unwrap()).unwrap();
    let mut inbound = InboundGroupSession::new(&key, MegolmConfig::version_1());
    let message = MegolmMessage::from_base64(encrypted["ciphertext"].as_str().unwrap()).unwrap();
    let decrypted = inbound.decrypt(&message).unwrap();
    serde_json::from_slice(&decrypted.plaintext).unwrap()
}

/// A cross-signing key held by a test client (its private half stays in the test).
pub struct SigningKey {
    pub secret: vodozemac::Ed25519SecretKey,
}

impl SigningKey {
    pub fn new() -> Self {
        Self {
            secret: vodozemac::Ed25519SecretKey::new(),
        }
    }

    pub fn public(&self) -> String {
        self.secret.public_key().to_base64()
    }

    pub fn key_id(&self) -> String {
        format!("ed25519:{}", self.public())
    }

    /// Add this key's signature (as `signer`) to a JSON object.
    pub fn sign(&self, signer: &str, mut v: Value) -> Value {
        let signature = self.secret.sign(signing_string(&v).as_bytes()).to_base64();
        v["signatures"][signer][self.key_id()] = json!(signature);
        v
    }

    /// The cross-signing key object of `user_id` for `usage`.
    pub fn key_object(&self, user_id: &str, usage: &str) -> Value {
        json!({ "user_id": user_id, "usage": [usage], "keys": { self.key_id(): self.public() } })
    }
}

impl Default for SigningKey {
    fn default() -> Self {
        Self::new()
    }
}
