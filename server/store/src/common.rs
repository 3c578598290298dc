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
/// Rows of one multi-row statement at most: far below both backends' limit on bound
/// parameters (SQLite: 32,766; PostgreSQL: 65,535) at eleven per event.
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

/// The positions of `events`, in their order, from the (event ID, position) rows a multi-row
/// insert returned (in an order neither backend promises). The positions must rise in the
/// order of the events: the room's order is the stream's.
pub(crate) fn positions_in_order(events: &[&crate::NewEvent], rows: Vec<(String, i64)>) -> crate::Result<Vec<i64>> {
    let by_id: std::collections::HashMap<String, i64> = rows.into_iter().collect();
    let positions = events
        .iter()
        .map(|e| by_id.get(&e.event_id).copied())
        .collect::<Option<Vec<i64>>>()
        .ok_or_else(|| {
            crate::StoreError::Database(sqlx::Error::Protocol("an inserted event has no position".into()))
        })?;
    if positions.windows(2).any(|w| w[0] >= w[1]) {
        return Err(crate::StoreError::Database(sqlx::Error::Protocol(
            "inserted events were not given positions in order".into(),
        )));
    }
    Ok(positions)
}

/// (room ID, event ID).
type RoomEvent<'a> = (&'a str, &'a str);

/// The forward extremities a batch of events changes: (room, event) pairs that leave (every
/// prev event) and that come (every event no other of the batch names as a prev event).
pub(crate) fn extremity_changes<'a>(events: &[&'a crate::NewEvent]) -> (Vec<RoomEvent<'a>>, Vec<RoomEvent<'a>>) {
    let mut gone: Vec<RoomEvent<'a>> = events
        .iter()
        .flat_map(|e| e.prev_events.iter().map(|p| (e.room_id.as_str(), p.as_str())))
        .collect();
    gone.sort_unstable();
    gone.dedup();
    let named: std::collections::HashSet<&str> = gone.iter().map(|(_, p)| *p).collect();
    let new = events
        .iter()
        .filter(|e| !named.contains(e.event_id.as_str()))
        .map(|e| (e.room_id.as_str(), e.event_id.as_str()))
        .collect();
    (gone, new)
}

/// `$crate::common::let_write_tx!(self, tx);` binds `tx`, a transaction on the write connection, which stays
/// taken until `tx`'s block ends.
macro_rules! let_write_tx {
    ($store:ident, $tx:ident) => {
        let mut conn = $store.writes.lock().await?;
        let mut $tx = sqlx::Connection::begin(&mut *conn).await?;
    };
}
pub(crate) use let_write_tx;

macro_rules! impl_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::Store for $store {
            fn backend(&self) -> $crate::Backend {
                Self::BACKEND
            }

            async fn migrate(&self) -> $crate::Result<()> {
                // Through the read pool: the migrator takes a pool (a borrowed connection's
                // `Acquire` does not meet async_trait's lifetimes), and nothing writes before
                // the store is migrated.
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
                    .execute(&mut *self.writes.lock().await?)
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
                    .execute(&mut *self.writes.lock().await?)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn deactivate_account(&self, localpart: &str, at: i64) -> $crate::Result<bool> {
                // Transactions start with a write, so SQLite takes the write lock at once
                // (waiting out busy_timeout) instead of failing to upgrade a read lock.
                $crate::common::let_write_tx!(self, tx);
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
                for erase in [
                    $crate::sql::OFFLINE_ERASE,
                    $crate::sql::PEP_ERASE_NODES,
                    $crate::sql::PEP_ERASE_ITEMS,
                ] {
                    sqlx::query::<$db>(erase)
                        .bind(localpart)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_displayname(&self, localpart: &str, value: Option<&str>) -> $crate::Result<bool> {
                let done = sqlx::query::<$db>($crate::sql::SET_DISPLAYNAME)
                    .bind(localpart)
                    .bind(value)
                    .execute(&mut *self.writes.lock().await?)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_avatar_url(&self, localpart: &str, value: Option<&str>) -> $crate::Result<bool> {
                let done = sqlx::query::<$db>($crate::sql::SET_AVATAR_URL)
                    .bind(localpart)
                    .bind(value)
                    .execute(&mut *self.writes.lock().await?)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn add_session(&self, s: &$crate::NewSession) -> $crate::Result<()> {
                $crate::common::let_write_tx!(self, tx);
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
                    .execute(&mut *self.writes.lock().await?)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_devices(&self, localpart: &str, device_ids: &[String]) -> $crate::Result<()> {
                $crate::common::let_write_tx!(self, tx);
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
                    .execute(&mut *self.writes.lock().await?)
                    .await?;
                Ok(())
            }

            async fn signing_key(&self) -> $crate::Result<Option<(String, Vec<u8>)>> {
                Ok(sqlx::query_as::<$db, (String, Vec<u8>)>($crate::sql::SIGNING_KEY)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn add_signing_key(&self, key_id: &str, pkcs8: &[u8], created_at: i64) -> $crate::Result<()> {
                sqlx::query::<$db>($crate::sql::ADD_SIGNING_KEY)
                    .bind(key_id)
                    .bind(pkcs8)
                    .bind(created_at)
                    .execute(&mut *self.writes.lock().await?)
                    .await?;
                Ok(())
            }

            async fn room(&self, room_id: &str) -> $crate::Result<Option<$crate::RoomRecord>> {
                Ok(sqlx::query_as::<$db, $crate::RoomRecord>($crate::sql::ROOM)
                    .bind(room_id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn set_room_published(&self, room_id: &str, published: bool) -> $crate::Result<()> {
                sqlx::query::<$db>($crate::sql::SET_ROOM_PUBLISHED)
                    .bind(room_id)
                    .bind(published)
                    .execute(&mut *self.writes.lock().await?)
                    .await?;
                Ok(())
            }

            async fn published_rooms(&self) -> $crate::Result<Vec<$crate::RoomRecord>> {
                Ok(
                    sqlx::query_as::<$db, $crate::RoomRecord>($crate::sql::PUBLISHED_ROOMS)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            async fn append_events(
                &self,
                rooms: &[&$crate::NewRoom],
                events: &[&$crate::NewEvent],
            ) -> $crate::Result<Vec<i64>> {
                $crate::common::let_write_tx!(self, tx);
                for room in rooms {
                    let r = &room.record;
                    sqlx::query::<$db>($crate::sql::CREATE_ROOM)
                        .bind(&r.room_id)
                        .bind(&r.room_version)
                        .bind(&r.creator)
                        .bind(r.created_at)
                        .bind(r.published)
                        .execute(&mut *tx)
                        .await?;
                    if let Some(alias) = &room.alias {
                        sqlx::query::<$db>($crate::sql::ADD_ALIAS)
                            .bind(alias)
                            .bind(&r.room_id)
                            .bind(&r.creator)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                // The event rows, a few hundred to a statement (a batch of messages is one round
                // trip, not one per event); positions are given in the order of the rows.
                let mut streams = Vec::with_capacity(events.len());
                for chunk in events.chunks($crate::common::ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new($crate::sql::INSERT_EVENTS);
                    q.push_values(chunk, |mut row, e| {
                        row.push_bind(e.event_id.as_str())
                            .push_bind(e.room_id.as_str())
                            .push_bind(e.depth)
                            .push_bind(e.sender.as_str())
                            .push_bind(e.kind.as_str())
                            .push_bind(e.state_key.as_deref())
                            .push_bind(e.origin_server_ts)
                            .push_bind(e.pdu.as_str())
                            .push_bind(e.replaces_state.as_ref().map(|r| r.0.as_str()))
                            .push_bind(e.replaces_state.as_ref().map(|r| r.1.as_str()))
                            .push_bind(e.state_group.as_str())
                            .push_bind(e.txn.as_ref().map(|t| t.1.as_str()))
                            .push_bind(e.txn.as_ref().map(|t| t.2.as_str()));
                    });
                    q.push(" RETURNING event_id, stream_ordering");
                    let rows: Vec<(String, i64)> = q.build_query_as().fetch_all(&mut *tx).await?;
                    streams.extend($crate::common::positions_in_order(chunk, rows)?);
                }
                for (e, &stream) in events.iter().zip(&streams) {
                    if let Some(g) = &e.new_group {
                        sqlx::query::<$db>($crate::sql::INSERT_STATE_GROUP)
                            .bind(&g.id)
                            .bind(&e.room_id)
                            .bind(g.prev.as_deref())
                            .bind(g.chain)
                            .bind(&g.entries)
                            .execute(&mut *tx)
                            .await?;
                    }
                    for r in e.resets() {
                        sqlx::query::<$db>($crate::sql::INSERT_STATE_RESET)
                            .bind(&e.room_id)
                            .bind(stream)
                            .bind(&r.kind)
                            .bind(&r.state_key)
                            .bind(r.event.as_ref().map(|entry| entry.event_id.as_str()))
                            .execute(&mut *tx)
                            .await?;
                    }
                    let own = e.state_key.as_ref().map(|key| $crate::StateChange {
                        kind: e.kind.clone(),
                        state_key: key.clone(),
                        event: Some($crate::StateEntry {
                            event_id: e.event_id.clone(),
                            stream_ordering: stream,
                            membership: e.membership.clone(),
                        }),
                    });
                    let changes = match &e.state_update {
                        $crate::StateUpdate::Own => own.as_slice(),
                        $crate::StateUpdate::Resolved(changes) => changes.as_slice(),
                    };
                    for c in changes {
                        match &c.event {
                            Some(entry) => {
                                // The appended event's own entry takes its new position.
                                let position = if entry.event_id == e.event_id {
                                    stream
                                } else {
                                    entry.stream_ordering
                                };
                                sqlx::query::<$db>($crate::sql::UPSERT_CURRENT_STATE)
                                    .bind(&e.room_id)
                                    .bind(&c.kind)
                                    .bind(&c.state_key)
                                    .bind(&entry.event_id)
                                    .bind(position)
                                    .bind(entry.membership.as_deref())
                                    .execute(&mut *tx)
                                    .await?
                            }
                            None => {
                                sqlx::query::<$db>($crate::sql::DELETE_CURRENT_STATE)
                                    .bind(&e.room_id)
                                    .bind(&c.kind)
                                    .bind(&c.state_key)
                                    .execute(&mut *tx)
                                    .await?
                            }
                        };
                    }
                    if let Some((rel_type, target)) = &e.relation {
                        sqlx::query::<$db>($crate::sql::INSERT_RELATION)
                            .bind(&e.event_id)
                            .bind(&e.room_id)
                            .bind(target)
                            .bind(rel_type)
                            .bind(&e.kind)
                            .bind(&e.sender)
                            .bind(stream)
                            .execute(&mut *tx)
                            .await?;
                    }
                    if let Some(r) = &e.redaction {
                        sqlx::query::<$db>($crate::sql::REDACT_EVENT)
                            .bind(&r.target)
                            .bind(&r.pdu)
                            .bind(&e.event_id)
                            .bind(&r.because)
                            .execute(&mut *tx)
                            .await?;
                        // m.relates_to does not survive redaction, and neither does the relation.
                        sqlx::query::<$db>($crate::sql::DELETE_RELATION)
                            .bind(&r.target)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                // The forward extremities: the events' prev events leave, and the events no
                // other of the batch names come.
                let (gone, new) = $crate::common::extremity_changes(events);
                for chunk in gone.chunks($crate::common::ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new($crate::sql::DELETE_EXTREMITIES);
                    q.push_values(chunk, |mut row, (room, event)| {
                        row.push_bind(*room).push_bind(*event);
                    });
                    q.push(")");
                    q.build().execute(&mut *tx).await?;
                }
                for chunk in new.chunks($crate::common::ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new($crate::sql::ADD_EXTREMITIES);
                    q.push_values(chunk, |mut row, (room, event)| {
                        row.push_bind(*room).push_bind(*event);
                    });
                    q.build().execute(&mut *tx).await?;
                }
                let txns: Vec<_> = events
                    .iter()
                    .filter_map(|e| Some((e.txn.as_ref()?, e.event_id.as_str())))
                    .collect();
                for chunk in txns.chunks($crate::common::ROWS_PER_STATEMENT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new($crate::sql::INSERT_TXNS);
                    q.push_values(chunk, |mut row, ((localpart, device_id, txn_id), event)| {
                        row.push_bind(localpart.as_str())
                            .push_bind(device_id.as_str())
                            .push_bind(txn_id.as_str())
                            .push_bind(*event);
                    });
                    q.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(streams)
            }

            async fn event(&self, event_id: &str) -> $crate::Result<Option<$crate::StoredEvent>> {
                Ok(sqlx::query_as::<$db, $crate::StoredEvent>($crate::sql::EVENT)
                    .bind(event_id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn device_txn_ids(
                &self,
                localpart: &str,
                device_id: &str,
                limit: i64,
            ) -> $crate::Result<Vec<String>> {
                Ok(sqlx::query_scalar::<$db, String>($crate::sql::DEVICE_TXN_IDS)
                    .bind(localpart)
                    .bind(device_id)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn txn_event_like(
                &self,
                localpart: &str,
                device_id: &str,
                patterns: [&str; 2],
            ) -> $crate::Result<Option<String>> {
                let row: Option<(String,)> = sqlx::query_as::<$db, (String,)>($crate::sql::TXN_EVENT_LIKE)
                    .bind(localpart)
                    .bind(device_id)
                    .bind(patterns[0])
                    .bind(patterns[1])
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.0))
            }

            async fn event_txn(&self, event_id: &str) -> $crate::Result<Option<(String, String)>> {
                Ok(sqlx::query_as::<$db, (String, String)>($crate::sql::EVENT_TXN)
                    .bind(event_id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn txn_event(
                &self,
                localpart: &str,
                device_id: &str,
                txn_id: &str,
            ) -> $crate::Result<Option<String>> {
                let row: Option<(String,)> = sqlx::query_as::<$db, (String,)>($crate::sql::TXN_EVENT)
                    .bind(localpart)
                    .bind(device_id)
                    .bind(txn_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.0))
            }

            async fn current_state(&self, room_id: &str) -> $crate::Result<Vec<$crate::StoredEvent>> {
                Ok(
                    sqlx::query_as::<$db, $crate::StoredEvent>($crate::sql::CURRENT_STATE)
                        .bind(room_id)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            async fn state_at(&self, room_id: &str, at: i64, resets: bool) -> $crate::Result<Vec<$crate::StoredEvent>> {
                let sql = if resets {
                    $crate::sql::STATE_AT_WITH_RESETS
                } else {
                    $crate::sql::STATE_AT
                };
                Ok(sqlx::query_as::<$db, $crate::StoredEvent>(sql)
                    .bind(room_id)
                    .bind(at)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn state_resets(
                &self,
                room_id: &str,
                after: i64,
                to: i64,
            ) -> $crate::Result<Vec<$crate::StateReset>> {
                Ok(
                    sqlx::query_as::<$db, $crate::StateReset>($crate::sql::STATE_RESETS)
                        .bind(room_id)
                        .bind(after)
                        .bind(to)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            async fn last_state_resets(&self) -> $crate::Result<Vec<(String, i64)>> {
                Ok(
                    sqlx::query_as::<$db, (String, i64)>($crate::sql::LAST_STATE_RESETS)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            async fn current_state_event(
                &self,
                room_id: &str,
                kind: &str,
                state_key: &str,
            ) -> $crate::Result<Option<$crate::StoredEvent>> {
                Ok(
                    sqlx::query_as::<$db, $crate::StoredEvent>($crate::sql::CURRENT_STATE_EVENT)
                        .bind(room_id)
                        .bind(kind)
                        .bind(state_key)
                        .fetch_optional(&self.pool)
                        .await?,
                )
            }

            async fn event_group(&self, event_id: &str) -> $crate::Result<Option<$crate::EventGroup>> {
                Ok(
                    sqlx::query_as::<$db, $crate::EventGroup>($crate::sql::EVENT_GROUP)
                        .bind(event_id)
                        .fetch_optional(&self.pool)
                        .await?,
                )
            }

            async fn state_group_chain(&self, group_id: &str) -> $crate::Result<Vec<String>> {
                let rows: Vec<(String,)> = sqlx::query_as::<$db, (String,)>($crate::sql::STATE_GROUP_CHAIN)
                    .bind(group_id)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(|(entries,)| entries).collect())
            }

            async fn forward_extremities(&self, room_id: &str) -> $crate::Result<Vec<(String, i64)>> {
                Ok(
                    sqlx::query_as::<$db, (String, i64)>($crate::sql::FORWARD_EXTREMITIES)
                        .bind(room_id)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            async fn memberships(&self, user_id: &str) -> $crate::Result<Vec<$crate::Membership>> {
                Ok(
                    sqlx::query_as::<$db, $crate::Membership>($crate::sql::MEMBERSHIPS)
                        .bind(user_id)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            async fn room_events(
                &self,
                room_id: &str,
                from: i64,
                to: i64,
                limit: i64,
                newest: bool,
            ) -> $crate::Result<Vec<$crate::StoredEvent>> {
                let sql = if newest {
                    $crate::sql::ROOM_EVENTS_NEWEST
                } else {
                    $crate::sql::ROOM_EVENTS_OLDEST
                };
                let mut rows = sqlx::query_as::<$db, $crate::StoredEvent>(sql)
                    .bind(room_id)
                    .bind(from)
                    .bind(to)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                if newest {
                    rows.reverse();
                }
                Ok(rows)
            }

            async fn rooms_newest_events(
                &self,
                rooms: &[&str],
                from: i64,
                to: i64,
                limit: i64,
            ) -> $crate::Result<Vec<$crate::StoredEvent>> {
                let rooms = serde_json::to_string(rooms).expect("strings serialize");
                Ok(
                    sqlx::query_as::<$db, $crate::StoredEvent>(Self::ROOMS_NEWEST_EVENTS)
                        .bind(rooms)
                        .bind(from)
                        .bind(to)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            async fn events_between(
                &self,
                from: i64,
                to: i64,
                limit: i64,
                kind: Option<&str>,
            ) -> $crate::Result<Vec<$crate::StoredEvent>> {
                Ok(
                    sqlx::query_as::<$db, $crate::StoredEvent>($crate::sql::EVENTS_BETWEEN)
                        .bind(from)
                        .bind(to)
                        .bind(limit)
                        .bind(kind)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            async fn max_stream_ordering(&self) -> $crate::Result<i64> {
                let (max,): (i64,) = sqlx::query_as::<$db, (i64,)>($crate::sql::MAX_STREAM)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(max)
            }

            async fn add_alias(&self, alias: &str, room_id: &str, creator: &str) -> $crate::Result<()> {
                sqlx::query::<$db>($crate::sql::ADD_ALIAS)
                    .bind(alias)
                    .bind(room_id)
                    .bind(creator)
                    .execute(&mut *self.writes.lock().await?)
                    .await?;
                Ok(())
            }

            async fn alias(&self, alias: &str) -> $crate::Result<Option<String>> {
                let row: Option<(String,)> = sqlx::query_as::<$db, (String,)>($crate::sql::ALIAS)
                    .bind(alias)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.0))
            }

            async fn delete_alias(&self, alias: &str) -> $crate::Result<bool> {
                let done = sqlx::query::<$db>($crate::sql::DELETE_ALIAS)
                    .bind(alias)
                    .execute(&mut *self.writes.lock().await?)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn alias_creator(&self, alias: &str) -> $crate::Result<Option<String>> {
                let row: Option<(String,)> = sqlx::query_as::<$db, (String,)>($crate::sql::ALIAS_CREATOR)
                    .bind(alias)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.0))
            }

            async fn state_history(
                &self,
                room_id: &str,
                kind: &str,
                state_key: &str,
            ) -> $crate::Result<Vec<(i64, String)>> {
                Ok(sqlx::query_as::<$db, (i64, String)>($crate::sql::STATE_HISTORY)
                    .bind(room_id)
                    .bind(kind)
                    .bind(state_key)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn add_filter(&self, localpart: &str, json: &str) -> $crate::Result<i64> {
                let (id,): (i64,) = sqlx::query_as::<$db, (i64,)>($crate::sql::ADD_FILTER)
                    .bind(localpart)
                    .bind(json)
                    .fetch_one(&mut *self.writes.lock().await?)
                    .await?;
                Ok(id)
            }

            async fn filter(&self, localpart: &str, filter_id: i64) -> $crate::Result<Option<String>> {
                let row: Option<(String,)> = sqlx::query_as::<$db, (String,)>($crate::sql::FILTER)
                    .bind(localpart)
                    .bind(filter_id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.0))
            }

            async fn set_account_data(
                &self,
                localpart: &str,
                room_id: &str,
                kind: &str,
                content: &str,
            ) -> $crate::Result<i64> {
                $crate::common::let_write_tx!(self, tx);
                sqlx::query::<$db>($crate::sql::DELETE_ACCOUNT_DATA)
                    .bind(localpart)
                    .bind(room_id)
                    .bind(kind)
                    .execute(&mut *tx)
                    .await?;
                let (id,): (i64,) = sqlx::query_as::<$db, (i64,)>($crate::sql::INSERT_ACCOUNT_DATA)
                    .bind(localpart)
                    .bind(room_id)
                    .bind(kind)
                    .bind(content)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(id)
            }

            async fn account_data(&self, localpart: &str, room_id: &str, kind: &str) -> $crate::Result<Option<String>> {
                let row: Option<(String,)> = sqlx::query_as::<$db, (String,)>($crate::sql::ACCOUNT_DATA)
                    .bind(localpart)
                    .bind(room_id)
                    .bind(kind)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.0))
            }

            async fn account_data_since(
                &self,
                localpart: &str,
                since: i64,
            ) -> $crate::Result<Vec<$crate::AccountDataRow>> {
                Ok(
                    sqlx::query_as::<$db, $crate::AccountDataRow>($crate::sql::ACCOUNT_DATA_SINCE)
                        .bind(localpart)
                        .bind(since)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            async fn max_account_data_stream(&self) -> $crate::Result<i64> {
                let (max,): (i64,) = sqlx::query_as::<$db, (i64,)>($crate::sql::MAX_ACCOUNT_DATA)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(max)
            }

            async fn set_receipt(&self, r: &$crate::Receipt) -> $crate::Result<i64> {
                $crate::common::let_write_tx!(self, tx);
                sqlx::query::<$db>($crate::sql::DELETE_RECEIPT)
                    .bind(&r.room_id)
                    .bind(&r.user_id)
                    .bind(&r.receipt_type)
                    .bind(&r.thread_id)
                    .execute(&mut *tx)
                    .await?;
                let (id,): (i64,) = sqlx::query_as::<$db, (i64,)>($crate::sql::INSERT_RECEIPT)
                    .bind(&r.room_id)
                    .bind(&r.user_id)
                    .bind(&r.receipt_type)
                    .bind(&r.thread_id)
                    .bind(&r.event_id)
                    .bind(r.ts)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(id)
            }

            async fn receipts_since(&self, room_id: &str, since: i64) -> $crate::Result<Vec<$crate::Receipt>> {
                Ok(
                    sqlx::query_as::<$db, $crate::Receipt>($crate::sql::RECEIPTS_SINCE)
                        .bind(room_id)
                        .bind(since)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            async fn receipts_after(&self, since: i64, limit: i64) -> $crate::Result<Vec<$crate::Receipt>> {
                Ok(
                    sqlx::query_as::<$db, $crate::Receipt>($crate::sql::RECEIPTS_AFTER)
                        .bind(since)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            async fn max_receipt_stream(&self) -> $crate::Result<i64> {
                let (max,): (i64,) = sqlx::query_as::<$db, (i64,)>($crate::sql::MAX_RECEIPT)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(max)
            }

            async fn read_up_to(&self, room_id: &str, user_id: &str) -> $crate::Result<i64> {
                let (at,): (i64,) = sqlx::query_as::<$db, (i64,)>($crate::sql::READ_UP_TO)
                    .bind(room_id)
                    .bind(user_id)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(at)
            }

            async fn unread_events(
                &self,
                room_id: &str,
                user_id: &str,
                after: i64,
                limit: i64,
            ) -> $crate::Result<Vec<$crate::StoredEvent>> {
                Ok(
                    sqlx::query_as::<$db, $crate::StoredEvent>($crate::sql::UNREAD_EVENTS)
                        .bind(room_id)
                        .bind(user_id)
                        .bind(after)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            async fn relating_events(
                &self,
                target: &str,
                rel_type: Option<&str>,
                kind: Option<&str>,
                from: i64,
                to: i64,
                limit: i64,
                newest: bool,
            ) -> $crate::Result<Vec<$crate::StoredEvent>> {
                let sql = if newest {
                    $crate::sql::RELATING_NEWEST
                } else {
                    $crate::sql::RELATING_OLDEST
                };
                let mut rows = sqlx::query_as::<$db, $crate::StoredEvent>(sql)
                    .bind(target)
                    .bind(rel_type)
                    .bind(kind)
                    .bind(from)
                    .bind(to)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?;
                if newest {
                    rows.reverse();
                }
                Ok(rows)
            }

            async fn relations_to(&self, targets: &[String]) -> $crate::Result<Vec<$crate::Relation>> {
                if targets.is_empty() {
                    return Ok(Vec::new());
                }
                // Only the placeholders are formatted into the SQL; the values are bound.
                let placeholders: Vec<String> = (1..=targets.len()).map(|i| format!("${i}")).collect();
                let sql = format!(
                    "SELECT event_id, relates_to, rel_type, type, sender, stream_ordering FROM event_relations \
                     WHERE relates_to IN ({}) ORDER BY stream_ordering",
                    placeholders.join(", ")
                );
                let mut q = sqlx::query_as::<$db, $crate::Relation>(sqlx::AssertSqlSafe(sql));
                for t in targets {
                    q = q.bind(t);
                }
                Ok(q.fetch_all(&self.pool).await?)
            }

            async fn search_messages(
                &self,
                room_ids: &[String],
                needle: &str,
                before: i64,
                limit: i64,
            ) -> $crate::Result<Vec<$crate::StoredEvent>> {
                if room_ids.is_empty() {
                    return Ok(Vec::new());
                }
                // LIKE with the wildcards of the needle escaped; only placeholders are formatted.
                let escaped: String = needle
                    .chars()
                    .flat_map(|c| match c {
                        '%' | '_' | '\\' => vec!['\\', c],
                        c => vec![c],
                    })
                    .collect();
                let pattern = format!("%{escaped}%");
                let rooms: Vec<String> = (0..room_ids.len()).map(|i| format!("${}", i + 4)).collect();
                let sql = format!(
                    concat!(
                        "SELECT ",
                        $crate::sql::event_columns!(),
                        " FROM events WHERE type = 'm.room.message' \
                     AND redacted_by IS NULL AND LOWER(pdu) LIKE $1 ESCAPE '\\' AND stream_ordering < $2 \
                     AND room_id IN ({}) ORDER BY stream_ordering DESC LIMIT CAST($3 AS BIGINT)"
                    ),
                    rooms.join(", ")
                );
                let mut q = sqlx::query_as::<$db, $crate::StoredEvent>(sqlx::AssertSqlSafe(sql))
                    .bind(pattern)
                    .bind(before)
                    .bind(limit);
                for r in room_ids {
                    q = q.bind(r);
                }
                Ok(q.fetch_all(&self.pool).await?)
            }

            async fn thread_roots(&self, room_id: &str, before: i64, limit: i64) -> $crate::Result<Vec<(String, i64)>> {
                Ok(sqlx::query_as::<$db, (String, i64)>($crate::sql::THREAD_ROOTS)
                    .bind(room_id)
                    .bind(before)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn set_device_keys(
                &self,
                localpart: &str,
                device_id: &str,
                user_id: &str,
                key_json: &str,
            ) -> $crate::Result<Option<i64>> {
                $crate::common::let_write_tx!(self, tx);
                let done = sqlx::query::<$db>($crate::sql::UPSERT_DEVICE_KEYS)
                    .bind(localpart)
                    .bind(device_id)
                    .bind(key_json)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Ok(None);
                }
                let (pos,): (i64,) = sqlx::query_as::<$db, (i64,)>($crate::sql::ADD_DEVICE_LIST_CHANGE)
                    .bind(user_id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Some(pos))
            }

            async fn device_keys(&self, localpart: &str) -> $crate::Result<Vec<(String, String)>> {
                Ok(sqlx::query_as::<$db, (String, String)>($crate::sql::DEVICE_KEYS)
                    .bind(localpart)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn add_one_time_keys(
                &self,
                localpart: &str,
                device_id: &str,
                keys: &[(String, String, String)],
            ) -> $crate::Result<()> {
                $crate::common::let_write_tx!(self, tx);
                for (algorithm, key_id, json) in keys {
                    sqlx::query::<$db>($crate::sql::ADD_OTK)
                        .bind(localpart)
                        .bind(device_id)
                        .bind(algorithm)
                        .bind(key_id)
                        .bind(json)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn set_fallback_key(
                &self,
                localpart: &str,
                device_id: &str,
                algorithm: &str,
                key_id: &str,
                key_json: &str,
            ) -> $crate::Result<()> {
                sqlx::query::<$db>($crate::sql::SET_FALLBACK)
                    .bind(localpart)
                    .bind(device_id)
                    .bind(algorithm)
                    .bind(key_id)
                    .bind(key_json)
                    .execute(&mut *self.writes.lock().await?)
                    .await?;
                Ok(())
            }

            async fn key_counts(
                &self,
                localpart: &str,
                device_id: &str,
            ) -> $crate::Result<(Vec<(String, i64)>, Vec<String>)> {
                let rows: Vec<(String, i64, bool)> =
                    sqlx::query_as::<$db, (String, i64, bool)>($crate::sql::KEY_COUNTS)
                        .bind(localpart)
                        .bind(device_id)
                        .fetch_all(&self.pool)
                        .await?;
                let (fallbacks, counts): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.2);
                Ok((
                    counts.into_iter().map(|(a, n, _)| (a, n)).collect(),
                    fallbacks.into_iter().map(|(a, _, _)| a).collect(),
                ))
            }

            async fn claim_key(
                &self,
                localpart: &str,
                device_id: &str,
                algorithm: &str,
            ) -> $crate::Result<Option<(String, String)>> {
                // The one-time key claim is one statement that deletes and returns a row; how
                // it picks a row no concurrent claim can also pick differs per engine.
                let otk: Option<(String, String)> = sqlx::query_as::<$db, (String, String)>(Self::CLAIM_ONE_TIME_KEY)
                    .bind(localpart)
                    .bind(device_id)
                    .bind(algorithm)
                    .fetch_optional(&mut *self.writes.lock().await?)
                    .await?;
                if otk.is_some() {
                    return Ok(otk);
                }
                Ok(
                    sqlx::query_as::<$db, (String, String)>($crate::sql::CLAIM_FALLBACK)
                        .bind(localpart)
                        .bind(device_id)
                        .bind(algorithm)
                        .fetch_optional(&mut *self.writes.lock().await?)
                        .await?,
                )
            }

            async fn delete_device_keys(&self, localpart: &str, device_id: &str, user_id: &str) -> $crate::Result<i64> {
                $crate::common::let_write_tx!(self, tx);
                for sql in [
                    $crate::sql::DELETE_DEVICE_KEYS,
                    $crate::sql::DELETE_OTKS,
                    $crate::sql::DELETE_FALLBACKS,
                    $crate::sql::DELETE_ALL_TO_DEVICE,
                ] {
                    sqlx::query::<$db>(sql)
                        .bind(localpart)
                        .bind(device_id)
                        .execute(&mut *tx)
                        .await?;
                }
                let (pos,): (i64,) = sqlx::query_as::<$db, (i64,)>($crate::sql::ADD_DEVICE_LIST_CHANGE)
                    .bind(user_id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(pos)
            }

            async fn device_list_changes(&self, after: i64, upto: i64) -> $crate::Result<Vec<String>> {
                let rows: Vec<(String,)> = sqlx::query_as::<$db, (String,)>($crate::sql::DEVICE_LIST_CHANGES)
                    .bind(after)
                    .bind(upto)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(|r| r.0).collect())
            }

            async fn max_device_list_stream(&self) -> $crate::Result<i64> {
                let (max,): (i64,) = sqlx::query_as::<$db, (i64,)>($crate::sql::MAX_DEVICE_LIST)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(max)
            }

            async fn add_device_list_change(&self, user_id: &str) -> $crate::Result<i64> {
                let (pos,): (i64,) = sqlx::query_as::<$db, (i64,)>($crate::sql::ADD_DEVICE_LIST_CHANGE)
                    .bind(user_id)
                    .fetch_one(&mut *self.writes.lock().await?)
                    .await?;
                Ok(pos)
            }

            async fn cross_signing_key(&self, localpart: &str, key_type: &str) -> $crate::Result<Option<String>> {
                let row: Option<(String,)> = sqlx::query_as::<$db, (String,)>($crate::sql::CROSS_SIGNING_KEY)
                    .bind(localpart)
                    .bind(key_type)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.0))
            }

            async fn set_cross_signing_key(
                &self,
                localpart: &str,
                key_type: &str,
                key_json: &str,
            ) -> $crate::Result<()> {
                sqlx::query::<$db>($crate::sql::SET_CROSS_SIGNING_KEY)
                    .bind(localpart)
                    .bind(key_type)
                    .bind(key_json)
                    .execute(&mut *self.writes.lock().await?)
                    .await?;
                Ok(())
            }

            async fn create_backup_version(
                &self,
                localpart: &str,
                algorithm: &str,
                auth_data: &str,
            ) -> $crate::Result<i64> {
                let (v,): (i64,) = sqlx::query_as::<$db, (i64,)>($crate::sql::CREATE_BACKUP_VERSION)
                    .bind(localpart)
                    .bind(algorithm)
                    .bind(auth_data)
                    .fetch_one(&mut *self.writes.lock().await?)
                    .await?;
                Ok(v)
            }

            async fn backup_version(
                &self,
                localpart: &str,
                version: Option<i64>,
            ) -> $crate::Result<Option<$crate::BackupVersion>> {
                Ok(match version {
                    Some(v) => {
                        sqlx::query_as::<$db, $crate::BackupVersion>($crate::sql::BACKUP_VERSION)
                            .bind(localpart)
                            .bind(v)
                            .fetch_optional(&self.pool)
                            .await?
                    }
                    None => {
                        sqlx::query_as::<$db, $crate::BackupVersion>($crate::sql::LATEST_BACKUP_VERSION)
                            .bind(localpart)
                            .fetch_optional(&self.pool)
                            .await?
                    }
                })
            }

            async fn update_backup_version(
                &self,
                localpart: &str,
                version: i64,
                auth_data: &str,
            ) -> $crate::Result<bool> {
                let done = sqlx::query::<$db>($crate::sql::UPDATE_BACKUP_VERSION)
                    .bind(localpart)
                    .bind(version)
                    .bind(auth_data)
                    .execute(&mut *self.writes.lock().await?)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn delete_backup_version(&self, localpart: &str, version: i64) -> $crate::Result<bool> {
                $crate::common::let_write_tx!(self, tx);
                let done = sqlx::query::<$db>($crate::sql::DELETE_BACKUP_VERSION)
                    .bind(localpart)
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query::<$db>($crate::sql::DELETE_BACKUP_KEYS)
                    .bind(localpart)
                    .bind(version)
                    .bind(None::<&str>)
                    .bind(None::<&str>)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() == 1)
            }

            async fn put_backup_keys(
                &self,
                localpart: &str,
                version: i64,
                keys: &[$crate::BackupKey],
            ) -> $crate::Result<()> {
                $crate::common::let_write_tx!(self, tx);
                sqlx::query::<$db>($crate::sql::BUMP_BACKUP_ETAG)
                    .bind(localpart)
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
                for k in keys {
                    sqlx::query::<$db>($crate::sql::PUT_BACKUP_KEY)
                        .bind(localpart)
                        .bind(version)
                        .bind(&k.room_id)
                        .bind(&k.session_id)
                        .bind(k.first_message_index)
                        .bind(k.forwarded_count)
                        .bind(k.is_verified)
                        .bind(&k.session_data)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn backup_keys(
                &self,
                localpart: &str,
                version: i64,
                room_id: Option<&str>,
                session_id: Option<&str>,
            ) -> $crate::Result<Vec<$crate::BackupKey>> {
                Ok(sqlx::query_as::<$db, $crate::BackupKey>($crate::sql::BACKUP_KEYS)
                    .bind(localpart)
                    .bind(version)
                    .bind(room_id)
                    .bind(session_id)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn delete_backup_keys(
                &self,
                localpart: &str,
                version: i64,
                room_id: Option<&str>,
                session_id: Option<&str>,
            ) -> $crate::Result<()> {
                $crate::common::let_write_tx!(self, tx);
                sqlx::query::<$db>($crate::sql::BUMP_BACKUP_ETAG)
                    .bind(localpart)
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query::<$db>($crate::sql::DELETE_BACKUP_KEYS)
                    .bind(localpart)
                    .bind(version)
                    .bind(room_id)
                    .bind(session_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn backup_key_count(&self, localpart: &str, version: i64) -> $crate::Result<i64> {
                let (n,): (i64,) = sqlx::query_as::<$db, (i64,)>($crate::sql::BACKUP_KEY_COUNT)
                    .bind(localpart)
                    .bind(version)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n)
            }

            async fn create_device(
                &self,
                localpart: &str,
                device_id: &str,
                display_name: Option<&str>,
                created_at: i64,
            ) -> $crate::Result<()> {
                sqlx::query::<$db>($crate::sql::INSERT_DEVICE_IF_NEW)
                    .bind(localpart)
                    .bind(device_id)
                    .bind(display_name)
                    .bind(created_at)
                    .execute(&mut *self.writes.lock().await?)
                    .await?;
                Ok(())
            }

            async fn set_dehydrated_device(
                &self,
                localpart: &str,
                device_id: &str,
                device_data: &str,
            ) -> $crate::Result<()> {
                sqlx::query::<$db>($crate::sql::SET_DEHYDRATED)
                    .bind(localpart)
                    .bind(device_id)
                    .bind(device_data)
                    .execute(&mut *self.writes.lock().await?)
                    .await?;
                Ok(())
            }

            async fn dehydrated_device(&self, localpart: &str) -> $crate::Result<Option<(String, String)>> {
                Ok(sqlx::query_as::<$db, (String, String)>($crate::sql::DEHYDRATED)
                    .bind(localpart)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn delete_dehydrated_device(&self, localpart: &str) -> $crate::Result<()> {
                sqlx::query::<$db>($crate::sql::DELETE_DEHYDRATED)
                    .bind(localpart)
                    .execute(&mut *self.writes.lock().await?)
                    .await?;
                Ok(())
            }

            async fn roster(&self, localpart: &str) -> $crate::Result<Vec<$crate::RosterItem>> {
                Ok(sqlx::query_as::<$db, $crate::RosterItem>($crate::sql::ROSTER)
                    .bind(localpart)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn roster_item(&self, localpart: &str, contact: &str) -> $crate::Result<Option<$crate::RosterItem>> {
                Ok(
                    sqlx::query_as::<$db, $crate::RosterItem>($crate::sql::ROSTER_ITEM)
                        .bind(localpart)
                        .bind(contact)
                        .fetch_optional(&self.pool)
                        .await?,
                )
            }

            async fn put_roster_item(&self, localpart: &str, item: &$crate::RosterItem) -> $crate::Result<i64> {
                $crate::common::let_write_tx!(self, tx);
                sqlx::query::<$db>($crate::sql::PUT_ROSTER_ITEM)
                    .bind(localpart)
                    .bind(&item.contact)
                    .bind(item.name.as_deref())
                    .bind(&item.subscription)
                    .bind(item.ask)
                    .bind(item.pending_in)
                    .bind(&item.groups)
                    .execute(&mut *tx)
                    .await?;
                let (v,): (i64,) = sqlx::query_as::<$db, (i64,)>($crate::sql::BUMP_ROSTER_VERSION)
                    .bind(localpart)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(v)
            }

            async fn remove_roster_item(&self, localpart: &str, contact: &str) -> $crate::Result<i64> {
                $crate::common::let_write_tx!(self, tx);
                sqlx::query::<$db>($crate::sql::REMOVE_ROSTER_ITEM)
                    .bind(localpart)
                    .bind(contact)
                    .execute(&mut *tx)
                    .await?;
                let (v,): (i64,) = sqlx::query_as::<$db, (i64,)>($crate::sql::BUMP_ROSTER_VERSION)
                    .bind(localpart)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(v)
            }

            async fn roster_version(&self, localpart: &str) -> $crate::Result<i64> {
                let row: Option<(i64,)> = sqlx::query_as::<$db, (i64,)>($crate::sql::ROSTER_VERSION)
                    .bind(localpart)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map_or(0, |r| r.0))
            }

            async fn forget_room(&self, user_id: &str, room_id: &str, member_event: &str) -> $crate::Result<()> {
                sqlx::query::<$db>($crate::sql::FORGET_ROOM)
                    .bind(user_id)
                    .bind(room_id)
                    .bind(member_event)
                    .execute(&mut *self.writes.lock().await?)
                    .await?;
                Ok(())
            }

            async fn forgotten_rooms(&self, user_id: &str) -> $crate::Result<Vec<(String, String)>> {
                Ok(
                    sqlx::query_as::<$db, (String, String)>($crate::sql::FORGOTTEN_ROOMS)
                        .bind(user_id)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            async fn pep_node(&self, owner: &str, node: &str) -> $crate::Result<Option<$crate::PepNode>> {
                Ok(sqlx::query_as::<$db, $crate::PepNode>($crate::sql::PEP_NODE)
                    .bind(owner)
                    .bind(node)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn pep_nodes(&self, owner: &str) -> $crate::Result<Vec<$crate::PepNode>> {
                Ok(sqlx::query_as::<$db, $crate::PepNode>($crate::sql::PEP_NODES)
                    .bind(owner)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn put_pep_node(&self, n: &$crate::PepNode) -> $crate::Result<()> {
                $crate::common::let_write_tx!(self, tx);
                sqlx::query::<$db>($crate::sql::PUT_PEP_NODE)
                    .bind(&n.owner)
                    .bind(&n.node)
                    .bind(&n.access_model)
                    .bind(n.persist_items)
                    .bind(n.max_items)
                    .execute(&mut *tx)
                    .await?;
                if n.max_items > 0 {
                    sqlx::query::<$db>($crate::sql::PEP_TRIM)
                        .bind(&n.owner)
                        .bind(&n.node)
                        .bind(n.max_items)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn delete_pep_node(&self, owner: &str, node: &str) -> $crate::Result<bool> {
                $crate::common::let_write_tx!(self, tx);
                let done = sqlx::query::<$db>($crate::sql::DELETE_PEP_NODE)
                    .bind(owner)
                    .bind(node)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query::<$db>($crate::sql::DELETE_PEP_NODE_ITEMS)
                    .bind(owner)
                    .bind(node)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn pep_publish(
                &self,
                owner: &str,
                node: &str,
                item: &$crate::PepItem,
                keep: i64,
            ) -> $crate::Result<()> {
                $crate::common::let_write_tx!(self, tx);
                sqlx::query::<$db>($crate::sql::PEP_PUBLISH)
                    .bind(owner)
                    .bind(node)
                    .bind(&item.item_id)
                    .bind(item.publisher.as_deref())
                    .bind(&item.payload)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query::<$db>($crate::sql::PEP_TRIM)
                    .bind(owner)
                    .bind(node)
                    .bind(keep)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn pep_items(&self, owner: &str, node: &str, limit: i64) -> $crate::Result<Vec<$crate::PepItem>> {
                Ok(sqlx::query_as::<$db, $crate::PepItem>($crate::sql::PEP_ITEMS)
                    .bind(owner)
                    .bind(node)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn pep_retract(&self, owner: &str, node: &str, item_id: &str) -> $crate::Result<bool> {
                let done = sqlx::query::<$db>($crate::sql::PEP_RETRACT)
                    .bind(owner)
                    .bind(node)
                    .bind(item_id)
                    .execute(&mut *self.writes.lock().await?)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn add_media(&self, r: &$crate::MediaRecord) -> $crate::Result<()> {
                sqlx::query::<$db>($crate::sql::ADD_MEDIA)
                    .bind(&r.media_id)
                    .bind(&r.uploader)
                    .bind(&r.content_type)
                    .bind(r.filename.as_deref())
                    .bind(r.size)
                    .bind(&r.sha1)
                    .bind(r.created_at)
                    .execute(&mut *self.writes.lock().await?)
                    .await?;
                Ok(())
            }

            async fn media(&self, media_id: &str) -> $crate::Result<Option<$crate::MediaRecord>> {
                Ok(sqlx::query_as::<$db, $crate::MediaRecord>($crate::sql::MEDIA)
                    .bind(media_id)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn offline_push(&self, localpart: &str, stanza: &str, limit: i64) -> $crate::Result<Option<i64>> {
                let row: Option<(i64,)> = sqlx::query_as::<$db, (i64,)>($crate::sql::OFFLINE_PUSH)
                    .bind(localpart)
                    .bind(stanza)
                    .bind(limit)
                    .fetch_optional(&mut *self.writes.lock().await?)
                    .await?;
                Ok(row.map(|r| r.0))
            }

            async fn offline_batch(&self, keep: &[(String, String)], forget: &[i64]) -> $crate::Result<Vec<i64>> {
                $crate::common::let_write_tx!(self, tx);
                let mut ids = Vec::with_capacity(keep.len());
                for (localpart, stanza) in keep {
                    let (id,): (i64,) = sqlx::query_as::<$db, (i64,)>($crate::sql::OFFLINE_ADD)
                        .bind(localpart)
                        .bind(stanza)
                        .fetch_one(&mut *tx)
                        .await?;
                    ids.push(id);
                }
                for id in forget {
                    sqlx::query::<$db>($crate::sql::OFFLINE_DELETE)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(ids)
            }

            async fn offline_list(&self, localpart: &str) -> $crate::Result<Vec<(i64, String)>> {
                Ok(sqlx::query_as::<$db, (i64, String)>($crate::sql::OFFLINE_LIST)
                    .bind(localpart)
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn offline_delete(&self, ids: &[i64]) -> $crate::Result<()> {
                if ids.is_empty() {
                    return Ok(());
                }
                $crate::common::let_write_tx!(self, tx);
                for id in ids {
                    sqlx::query::<$db>($crate::sql::OFFLINE_DELETE)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn add_to_device(
                &self,
                messages: &[$crate::NewToDevice],
                txn: Option<(&str, &str, &str)>,
            ) -> $crate::Result<Option<i64>> {
                $crate::common::let_write_tx!(self, tx);
                if let Some((lp, device, txn_id)) = txn {
                    let done = sqlx::query::<$db>($crate::sql::ADD_TO_DEVICE_TXN)
                        .bind(lp)
                        .bind(device)
                        .bind(txn_id)
                        .execute(&mut *tx)
                        .await?;
                    if done.rows_affected() == 0 {
                        return Ok(None);
                    }
                }
                let mut last = 0;
                for (lp, device, sender, kind, content) in messages {
                    let (pos,): (i64,) = sqlx::query_as::<$db, (i64,)>($crate::sql::ADD_TO_DEVICE)
                        .bind(lp)
                        .bind(device)
                        .bind(sender)
                        .bind(kind)
                        .bind(content)
                        .fetch_one(&mut *tx)
                        .await?;
                    last = pos;
                }
                tx.commit().await?;
                Ok(Some(last))
            }

            async fn to_device(
                &self,
                localpart: &str,
                device_id: &str,
                after: i64,
                upto: i64,
                limit: i64,
            ) -> $crate::Result<Vec<$crate::ToDeviceMessage>> {
                Ok(
                    sqlx::query_as::<$db, $crate::ToDeviceMessage>($crate::sql::TO_DEVICE)
                        .bind(localpart)
                        .bind(device_id)
                        .bind(after)
                        .bind(upto)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?,
                )
            }

            async fn delete_to_device(&self, localpart: &str, device_id: &str, upto: i64) -> $crate::Result<()> {
                sqlx::query::<$db>($crate::sql::DELETE_TO_DEVICE)
                    .bind(localpart)
                    .bind(device_id)
                    .bind(upto)
                    .execute(&mut *self.writes.lock().await?)
                    .await?;
                Ok(())
            }

            async fn max_to_device_stream(&self) -> $crate::Result<i64> {
                let (max,): (i64,) = sqlx::query_as::<$db, (i64,)>($crate::sql::MAX_TO_DEVICE)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(max)
            }

            async fn newest_rows(&self) -> $crate::Result<$crate::NewestRows> {
                let keyed = |sql| sqlx::query_as::<$db, (String, i64)>(sql).fetch_all(&self.pool);
                let devices: Vec<(String, String, i64)> = sqlx::query_as($crate::sql::NEWEST_DEVICE_TO_DEVICE)
                    .fetch_all(&self.pool)
                    .await?;
                Ok($crate::NewestRows {
                    room_events: keyed($crate::sql::NEWEST_ROOM_EVENTS).await?,
                    room_state: keyed($crate::sql::NEWEST_ROOM_STATE).await?,
                    room_receipts: keyed($crate::sql::NEWEST_ROOM_RECEIPTS).await?,
                    room_relations: keyed($crate::sql::NEWEST_ROOM_RELATIONS).await?,
                    user_account_data: keyed($crate::sql::NEWEST_USER_ACCOUNT_DATA).await?,
                    device_to_device: devices.into_iter().map(|(l, d, p)| ((l, d), p)).collect(),
                })
            }

            async fn close(&self) {
                self.writes.close().await;
                self.pool.close().await;
            }
        }
    };
}

pub(crate) use impl_store;
