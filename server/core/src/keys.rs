//! The server's Ed25519 signing key: generated on first start, kept in the store, used to
//! sign every event this server creates (and, with federation, its requests).

use std::sync::Arc;

use estuary_store::Store;
use ruma::signatures::Ed25519KeyPair;

use crate::{CoreError, now_ms, random};

pub struct ServerKey {
    pub key_id: String,
    pub pair: Ed25519KeyPair,
}

impl ServerKey {
    /// Load the stored key, or generate and store one. Safe against two processes racing:
    /// both re-read the oldest key after inserting.
    pub async fn load_or_create(store: &Arc<dyn Store>) -> Result<Arc<ServerKey>, CoreError> {
        if store.signing_key().await?.is_none() {
            let pkcs8 = Ed25519KeyPair::generate();
            let key_id = format!("ed25519:a_{}", random::string(4, random::BASE62)?);
            store.add_signing_key(&key_id, &pkcs8, now_ms()).await?;
            tracing::info!(%key_id, "generated the server signing key");
        }
        let (key_id, pkcs8) = store
            .signing_key()
            .await?
            .ok_or_else(|| CoreError::Internal("signing key vanished".to_owned()))?;
        let version = key_id.strip_prefix("ed25519:").unwrap_or(&key_id).to_owned();
        let pair = Ed25519KeyPair::from_der(&pkcs8, version)
            .map_err(|e| CoreError::Internal(format!("stored signing key {key_id} is unusable: {e}")))?;
        Ok(Arc::new(ServerKey { key_id, pair }))
    }
}

impl ServerKey {
    /// The public key, unpadded standard base64 (as the Matrix key APIs write it).
    pub fn public_base64(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.pair.public_key())
    }
}
