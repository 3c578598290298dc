//! PostgreSQL backend: the production choice, and the path to more than one process.

use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, Postgres};

use crate::{Backend, Result};

/// How long a pooled connection may sit idle before it is pinged on its next use.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(30);

pub struct PgStore {
    pool: PgPool,
    /// The same pool: PostgreSQL runs concurrent writers itself.
    writes: Writes,
}

/// Writes take any connection of the pool (the SQLite backend's `Writes` has one).
struct Writes(PgPool);

impl Writes {
    async fn lock(&self) -> Result<PoolConnection<Postgres>> {
        Ok(self.0.acquire().await?)
    }

    async fn close(&self) {
        self.0.close().await;
    }
}

impl PgStore {
    const BACKEND: Backend = Backend::Postgres;
    const MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");
    /// SKIP LOCKED: concurrent claims each lock a different row, so no key is given twice.
    const CLAIM_ONE_TIME_KEY: &str = "DELETE FROM e2e_one_time_keys WHERE ctid = (SELECT ctid FROM e2e_one_time_keys \
        WHERE localpart = $1 AND device_id = $2 AND algorithm = $3 ORDER BY key_id LIMIT 1 FOR UPDATE SKIP LOCKED) \
        RETURNING key_id, key_json";
    /// Each room's newest events through an index scan of its own (LATERAL); $1 is a JSON
    /// array of room IDs.
    const ROOMS_NEWEST_EVENTS: &str = concat!(
        "SELECT e.* FROM json_array_elements_text(CAST($1 AS json)) AS r (room_id) CROSS JOIN LATERAL (SELECT ",
        crate::sql::event_columns!(),
        " FROM events WHERE events.room_id = r.room_id AND stream_ordering > $2 AND stream_ordering <= $3 \
         ORDER BY stream_ordering DESC LIMIT CAST($4 AS BIGINT)) AS e ORDER BY e.stream_ordering"
    );

    pub async fn connect(url: &str) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            // A connection is pinged before use only after it sat idle (the database may have
            // restarted or a firewall dropped it meanwhile), not before every statement: each
            // ping is a round trip to the server.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > IDLE_BEFORE_PING {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self {
            writes: Writes(pool.clone()),
            pool,
        })
    }
}

crate::common::impl_store!(PgStore, sqlx::Postgres);
