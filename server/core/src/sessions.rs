//! Logged-in sessions: devices and their access tokens. Tokens are random and only their
//! SHA-256 is stored.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use estuary_store::{Device, NewSession, Session, Store};
use sha2::{Digest, Sha256};

use crate::{CoreError, Locked, now_ms, random};

#[derive(Clone)]
pub struct Sessions {
    store: Arc<dyn Store>,
    held: Arc<HeldTokens>,
}

/// Token lookups, held so that a client's every request does not read the store: at most
/// [`TOKEN_HELD_FOR`], and never across a revocation made through this process (a login that
/// replaces a device's token, a device deleted, an account deactivated), which bumps the
/// generation. A revocation by another process (`estuary user deactivate` beside a running
/// server) takes effect here within [`TOKEN_HELD_FOR`].
#[derive(Default)]
struct HeldTokens {
    generation: AtomicU64,
    /// token SHA-256 -> (its session, when read, the generation before the read).
    map: Mutex<HashMap<String, (Session, Instant, u64)>>,
}

const TOKEN_HELD_FOR: Duration = Duration::from_secs(5);

/// What a login hands to the client.
#[derive(Debug, Clone)]
pub struct Login {
    pub device_id: String,
    pub access_token: String,
}

/// Hex SHA-256 of an access token: the form in which tokens are stored and looked up.
pub fn token_sha256(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Sessions {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            held: Arc::default(),
        }
    }

    /// Tokens were revoked: nothing held before stays valid.
    fn revoked(&self) {
        self.held.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Log a device in: the device is created if new (named `display_name`), and gets a
    /// fresh token that replaces any it had. Without a device ID one is generated.
    pub async fn login(
        &self,
        localpart: &str,
        device_id: Option<&str>,
        display_name: Option<&str>,
    ) -> Result<Login, CoreError> {
        // Only a device the client names may have a token this login replaces.
        let replaces = device_id.is_some();
        let device_id = match device_id {
            Some(d) => d.to_owned(),
            // Synapse-style: ten upper-case letters.
            None => random::string(10, random::UPPER)?,
        };
        let access_token = format!("est_{}", random::string(40, random::BASE62)?);
        self.store
            .add_session(&NewSession {
                localpart: localpart.to_owned(),
                device_id: device_id.clone(),
                display_name: display_name.map(str::to_owned),
                token_sha256: token_sha256(&access_token),
                created_at: now_ms(),
            })
            .await?;
        // The device's earlier token is gone.
        if replaces {
            self.revoked();
        }
        Ok(Login {
            device_id,
            access_token,
        })
    }

    /// The session an access token belongs to, if it is live.
    pub async fn authenticate(&self, access_token: &str) -> Result<Option<Session>, CoreError> {
        let sha = token_sha256(access_token);
        let generation = self.held.generation.load(Ordering::SeqCst);
        if let Some((session, read, held_in)) = self.held.map.locked().get(&sha)
            && *held_in == generation
            && read.elapsed() < TOKEN_HELD_FOR
        {
            return Ok(Some(session.clone()));
        }
        let session = self.store.session(&sha).await?;
        if let Some(session) = &session {
            crate::bounded_insert(
                &mut self.held.map.locked(),
                sha,
                (session.clone(), Instant::now(), generation),
            );
        }
        Ok(session)
    }

    pub async fn devices(&self, localpart: &str) -> Result<Vec<Device>, CoreError> {
        Ok(self.store.devices(localpart).await?)
    }

    pub async fn device(&self, localpart: &str, device_id: &str) -> Result<Option<Device>, CoreError> {
        Ok(self.store.device(localpart, device_id).await?)
    }

    pub async fn rename_device(&self, localpart: &str, device_id: &str, name: Option<&str>) -> Result<bool, CoreError> {
        Ok(self.store.rename_device(localpart, device_id, name).await?)
    }

    /// Delete devices and with them their tokens (and, later, their E2EE keys).
    pub async fn delete_devices(&self, localpart: &str, device_ids: &[String]) -> Result<(), CoreError> {
        let deleted = self.store.delete_devices(localpart, device_ids).await;
        self.revoked();
        Ok(deleted?)
    }

    /// Log out every device of the account except `keep`.
    pub async fn delete_other_devices(&self, localpart: &str, keep: Option<&str>) -> Result<(), CoreError> {
        let deleted = self.store.delete_other_devices(localpart, keep).await;
        self.revoked();
        Ok(deleted?)
    }

    /// The account was deactivated (its tokens no longer authenticate).
    pub fn account_deactivated(&self) {
        self.revoked();
    }
}
