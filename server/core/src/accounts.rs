//! Account administration shared by every front end and the CLI: create, list, change the
//! password, deactivate, check a password.

use std::sync::Arc;

use estuary_store::{Account, NewAccount, Store, StoreError};

use crate::{CoreError, localpart, now_ms, password};

#[derive(Clone)]
pub struct Accounts {
    store: Arc<dyn Store>,
    server_name: String,
}

impl Accounts {
    pub fn new(store: Arc<dyn Store>, server_name: String) -> Self {
        Self { store, server_name }
    }

    /// Create an account. With no password, the account cannot log in until one is set.
    pub async fn create(&self, localpart: &str, password: Option<&str>, admin: bool) -> Result<Account, CoreError> {
        localpart::validate(localpart, &self.server_name)?;
        let credentials = match password {
            Some(p) => Some(derive_blocking(p).await?),
            None => None,
        };
        let new = NewAccount {
            localpart: localpart.to_owned(),
            password: credentials,
            admin,
            created_at: now_ms(),
        };
        match self.store.create_account(&new).await {
            Ok(()) => {}
            Err(StoreError::Conflict) => return Err(CoreError::UserInUse(localpart.to_owned())),
            Err(e) => return Err(e.into()),
        }
        self.get(localpart).await
    }

    /// The account, if it exists (active or deactivated).
    pub async fn find(&self, localpart: &str) -> Result<Option<Account>, CoreError> {
        Ok(self.store.account(localpart).await?)
    }

    pub async fn get(&self, localpart: &str) -> Result<Account, CoreError> {
        self.store
            .account(localpart)
            .await?
            .ok_or_else(|| CoreError::UnknownUser(localpart.to_owned()))
    }

    pub async fn list(&self) -> Result<Vec<Account>, CoreError> {
        Ok(self.store.list_accounts().await?)
    }

    /// Set a new password: the Argon2id hash and both SCRAM credentials change together.
    pub async fn set_password(&self, localpart: &str, password: &str) -> Result<(), CoreError> {
        let credentials = derive_blocking(password).await?;
        if self.store.set_password(localpart, &credentials).await? {
            Ok(())
        } else {
            Err(self.missing_or_deactivated(localpart).await)
        }
    }

    /// Deactivate: credentials and profile are erased; the name stays reserved.
    pub async fn deactivate(&self, localpart: &str) -> Result<(), CoreError> {
        if self.store.deactivate_account(localpart, now_ms()).await? {
            Ok(())
        } else {
            Err(self.missing_or_deactivated(localpart).await)
        }
    }

    /// Set or clear the display name (the profile shared by Matrix and XMPP vCard).
    pub async fn set_displayname(&self, localpart: &str, value: Option<&str>) -> Result<(), CoreError> {
        if self.store.set_displayname(localpart, value).await? {
            Ok(())
        } else {
            Err(self.missing_or_deactivated(localpart).await)
        }
    }

    pub async fn set_avatar_url(&self, localpart: &str, value: Option<&str>) -> Result<(), CoreError> {
        if self.store.set_avatar_url(localpart, value).await? {
            Ok(())
        } else {
            Err(self.missing_or_deactivated(localpart).await)
        }
    }

    /// True if the account is active and the password matches its Argon2id hash.
    pub async fn check_password(&self, localpart: &str, password: &str) -> Result<bool, CoreError> {
        let Some(account) = self.store.account(localpart).await? else {
            return Ok(false);
        };
        let Some(hash) = account
            .password
            .filter(|_| account.deactivated_at.is_none())
            .map(|p| p.argon2_hash)
        else {
            return Ok(false);
        };
        let password = password.to_owned();
        password::on_hashing_thread(move || password::verify(&hash, &password)).await
    }

    async fn missing_or_deactivated(&self, localpart: &str) -> CoreError {
        match self.store.account(localpart).await {
            Ok(Some(_)) => CoreError::Deactivated(localpart.to_owned()),
            Ok(None) => CoreError::UnknownUser(localpart.to_owned()),
            Err(e) => e.into(),
        }
    }
}

/// Password hashing is deliberately slow; keep it off the async runtime's threads.
async fn derive_blocking(password: &str) -> Result<estuary_store::PasswordCredentials, CoreError> {
    let password = password.to_owned();
    password::on_hashing_thread(move || password::derive(&password))
        .await?
        .map_err(CoreError::from)
}
