//! The one implementation of [`crate::Store`], instantiated for each typed pool by
//! `impl_store!`. SQL and method bodies are written once; a backend supplies only its
//! connection setup and, where the engines differ, native methods of its own.

use crate::{Account, PasswordCredentials, ScramKeys};

/// An `accounts` row as the database returns it.
#[derive(sqlx::FromRow)]
pub(crate) struct AccountRow {
    localpart: String,
    password_hash: Option<String>,
    scram_salt: Option<Vec<u8>>,
    scram_iterations: Option<i64>,
    scram_sha1_stored_key: Option<Vec<u8>>,
    scram_sha1_server_key: Option<Vec<u8>>,
    scram_sha256_stored_key: Option<Vec<u8>>,
    scram_sha256_server_key: Option<Vec<u8>>,
    displayname: Option<String>,
    avatar_url: Option<String>,
    admin: bool,
    created_at: i64,
    deactivated_at: Option<i64>,
}

impl From<AccountRow> for Account {
    fn from(r: AccountRow) -> Self {
        // Credentials are written and erased as a whole, so either all columns are set or
        // none is; a partial row (never written by this code) is treated as no password.
        let password = match (
            r.password_hash,
            r.scram_salt,
            r.scram_iterations.and_then(|i| u32::try_from(i).ok()),
            r.scram_sha1_stored_key,
            r.scram_sha1_server_key,
            r.scram_sha256_stored_key,
            r.scram_sha256_server_key,
        ) {
            (Some(h), Some(salt), Some(iter), Some(s1), Some(k1), Some(s256), Some(k256)) => {
                Some(PasswordCredentials {
                    argon2_hash: h,
                    scram_salt: salt,
                    scram_iterations: iter,
                    scram_sha1: ScramKeys {
                        stored_key: s1,
                        server_key: k1,
                    },
                    scram_sha256: ScramKeys {
                        stored_key: s256,
                        server_key: k256,
                    },
                })
            }
            _ => None,
        };
        Account {
            localpart: r.localpart,
            password,
            displayname: r.displayname,
            avatar_url: r.avatar_url,
            admin: r.admin,
            created_at: r.created_at,
            deactivated_at: r.deactivated_at,
        }
    }
}

/// Implements [`crate::Store`] for `$store`, a struct with a `pool: sqlx::Pool<$db>` field,
/// a `BACKEND` constant and a `MIGRATOR` static.
macro_rules! impl_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::Store for $store {
            fn backend(&self) -> $crate::Backend {
                Self::BACKEND
            }

            async fn migrate(&self) -> $crate::Result<()> {
                Self::MIGRATOR.run(&self.pool).await?;
                Ok(())
            }

            async fn create_account(&self, a: &$crate::NewAccount) -> $crate::Result<()> {
                let p = a.password.as_ref();
                sqlx::query::<$db>($crate::sql::INSERT_ACCOUNT)
                    .bind(&a.localpart)
                    .bind(p.map(|p| p.argon2_hash.as_str()))
                    .bind(p.map(|p| p.scram_salt.as_slice()))
                    .bind(p.map(|p| i64::from(p.scram_iterations)))
                    .bind(p.map(|p| p.scram_sha1.stored_key.as_slice()))
                    .bind(p.map(|p| p.scram_sha1.server_key.as_slice()))
                    .bind(p.map(|p| p.scram_sha256.stored_key.as_slice()))
                    .bind(p.map(|p| p.scram_sha256.server_key.as_slice()))
                    .bind(a.admin)
                    .bind(a.created_at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn account(&self, localpart: &str) -> $crate::Result<Option<$crate::Account>> {
                let row = sqlx::query_as::<$db, $crate::common::AccountRow>($crate::sql::SELECT_ACCOUNT)
                    .bind(localpart)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(Into::into))
            }

            async fn list_accounts(&self) -> $crate::Result<Vec<$crate::Account>> {
                let rows = sqlx::query_as::<$db, $crate::common::AccountRow>($crate::sql::LIST_ACCOUNTS)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn set_password(&self, localpart: &str, p: &$crate::PasswordCredentials) -> $crate::Result<bool> {
                let done = sqlx::query::<$db>($crate::sql::SET_PASSWORD)
                    .bind(localpart)
                    .bind(&p.argon2_hash)
                    .bind(p.scram_salt.as_slice())
                    .bind(i64::from(p.scram_iterations))
                    .bind(p.scram_sha1.stored_key.as_slice())
                    .bind(p.scram_sha1.server_key.as_slice())
                    .bind(p.scram_sha256.stored_key.as_slice())
                    .bind(p.scram_sha256.server_key.as_slice())
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn deactivate_account(&self, localpart: &str, at: i64) -> $crate::Result<bool> {
                // Transactions start with a write, so SQLite takes the write lock at once
                // (waiting out busy_timeout) instead of failing to upgrade a read lock.
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query::<$db>($crate::sql::DEACTIVATE_ACCOUNT)
                    .bind(localpart)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query::<$db>($crate::sql::DELETE_OTHER_DEVICES)
                    .bind(localpart)
                    .bind(None::<&str>)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_displayname(&self, localpart: &str, value: Option<&str>) -> $crate::Result<bool> {
                let done = sqlx::query::<$db>($crate::sql::SET_DISPLAYNAME)
                    .bind(localpart)
                    .bind(value)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_avatar_url(&self, localpart: &str, value: Option<&str>) -> $crate::Result<bool> {
                let done = sqlx::query::<$db>($crate::sql::SET_AVATAR_URL)
                    .bind(localpart)
                    .bind(value)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn add_session(&self, s: &$crate::NewSession) -> $crate::Result<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query::<$db>($crate::sql::INSERT_DEVICE_IF_NEW)
                    .bind(&s.localpart)
                    .bind(&s.device_id)
                    .bind(s.display_name.as_deref())
                    .bind(s.created_at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query::<$db>($crate::sql::DELETE_DEVICE_TOKENS)
                    .bind(&s.localpart)
                    .bind(&s.device_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query::<$db>($crate::sql::INSERT_TOKEN)
                    .bind(&s.token_sha256)
                    .bind(&s.localpart)
                    .bind(&s.device_id)
                    .bind(s.created_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn session(&self, token_sha256: &str) -> $crate::Result<Option<$crate::Session>> {
                let row: Option<(String, String)> = sqlx::query_as::<$db, _>($crate::sql::SESSION_BY_TOKEN)
                    .bind(token_sha256)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|(localpart, device_id)| $crate::Session { localpart, device_id }))
            }

            async fn devices(&self, localpart: &str) -> $crate::Result<Vec<$crate::Device>> {
                Ok(sqlx::query_as::<$db, $crate::Device>($crate::sql::LIST_DEVICES)
                    .bind(localpart)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn device(&self, localpart: &str, device_id: &str) -> $crate::Result<Option<$crate::Device>> {
                Ok(sqlx::query_as::<$db, $crate::Device>($crate::sql::GET_DEVICE)
                    .bind(localpart)
                    .bind(device_id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn rename_device(
                &self,
                localpart: &str,
                device_id: &str,
                name: Option<&str>,
            ) -> $crate::Result<bool> {
                let done = sqlx::query::<$db>($crate::sql::RENAME_DEVICE)
                    .bind(localpart)
                    .bind(device_id)
                    .bind(name)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_devices(&self, localpart: &str, device_ids: &[String]) -> $crate::Result<()> {
                let mut tx = self.pool.begin().await?;
                for id in device_ids {
                    sqlx::query::<$db>($crate::sql::DELETE_DEVICE)
                        .bind(localpart)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn delete_other_devices(&self, localpart: &str, keep: Option<&str>) -> $crate::Result<()> {
                sqlx::query::<$db>($crate::sql::DELETE_OTHER_DEVICES)
                    .bind(localpart)
                    .bind(keep)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn close(&self) {
                self.pool.close().await;
            }
        }
    };
}

pub(crate) use impl_store;
