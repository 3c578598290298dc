//! SQLite backend: the embedded default. One file in WAL mode, bundled SQLite.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use crate::{Backend, Result};

pub struct SqliteStore {
    /// Reads (WAL: they run beside the one writer).
    pool: SqlitePool,
    /// Writes, on one connection: SQLite takes one writer at a time, and writers of one
    /// process queueing here wait for each other without SQLite's busy handler, which sleeps
    /// (1 ms, 2 ms, 5 ms, ...) and retries.
    writes: SqlitePool,
}

impl SqliteStore {
    const BACKEND: Backend = Backend::Sqlite;
    const MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");
    /// One statement: SQLite runs one writer at a time, so the row it selects is the row it
    /// deletes.
    const CLAIM_ONE_TIME_KEY: &str = "DELETE FROM e2e_one_time_keys WHERE rowid = (SELECT rowid FROM e2e_one_time_keys \
        WHERE localpart = $1 AND device_id = $2 AND algorithm = $3 ORDER BY key_id LIMIT 1) RETURNING key_id, key_json";
    /// Each room's newest events: a correlated list subquery per room (an index range each),
    /// then the events by primary key; $1 is a JSON array of room IDs.
    const ROOMS_NEWEST_EVENTS: &str = concat!(
        "SELECT ",
        crate::sql::event_columns_e!(),
        " FROM json_each($1) AS r JOIN events e ON e.stream_ordering IN (SELECT x.stream_ordering FROM events x \
         WHERE x.room_id = r.value AND x.stream_ordering > $2 AND x.stream_ordering <= $3 \
         ORDER BY x.stream_ordering DESC LIMIT $4) ORDER BY e.stream_ordering"
    );

    /// Open (creating if missing) the database file named by a `sqlite://PATH` URL.
    pub async fn connect(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a commit is on disk before a client is told it succeeded, even across a
            // power loss. Throughput comes from batching commits, not from weaker syncs.
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // Another process (`estuary user ...` beside a running server) may hold the
            // write lock briefly; wait for it rather than fail.
            .busy_timeout(Duration::from_secs(10));
        // No ping before a connection is handed out: a SQLite connection is a file handle that
        // cannot have been dropped by a peer, and each ping is a round trip to sqlx's worker
        // thread (a park and a wake-up) before every statement.
        let writes = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Ok(Self { pool, writes })
    }
}

crate::common::impl_store!(SqliteStore, sqlx::Sqlite);
