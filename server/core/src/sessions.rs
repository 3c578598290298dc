//! Logged-in sessions: devices and their access tokens. Tokens are random and only their
//! SHA-256 is stored.

use std::sync::Arc;

use estuary_store::{Device, NewSession, Session, Store};
use sha2::{Digest, Sha256};

use crate::{CoreError, now_ms, random};

#[derive(Clone)]
pub struct Sessions {
    store: Arc<dyn Store>,
}

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
        Self { store }
    }

    /// Log a device in: the device is created if new (named `display_name`), and gets a
    /// fresh token that replaces any it had. Without a device ID one is generated.
    pub async fn login(
        &self,
        localpart: &str,
        device_id: Option<&str>,
        display_name: Option<&str>,
    ) -> Result<Login, CoreError> {
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
        Ok(Login {
            device_id,
            access_token,
        })
    }

    /// The session an access token belongs to, if it is live.
    pub async fn authenticate(&self, access_token: &str) -> Result<Option<Session>, CoreError> {
        Ok(self.store.session(&token_sha256(access_token)).await?)
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
        Ok(self.store.delete_devices(localpart, device_ids).await?)
    }

    /// Log out every device of the account except `keep`.
    pub async fn delete_other_devices(&self, localpart: &str, keep: Option<&str>) -> Result<(), CoreError> {
        Ok(self.store.delete_other_devices(localpart, keep).await?)
    }
}
