//! SQLite backend: the embedded default. One file in WAL mode, bundled SQLite.

use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::pool::CloseEvent;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard, Notify};

use crate::{Backend, Result};

pub struct SqliteStore {
    /// Reads (WAL: they run beside the one writer).
    pool: SqlitePool,
    /// Writes, on one connection: SQLite takes one writer at a time, and writers of one
    /// process queueing here wait for each other without SQLite's busy handler, which sleeps
    /// (1 ms, 2 ms, 5 ms, ...) and retries.
    writes: Writes,
}

/// The one write connection, handed from writer to writer by a mutex. Not a sqlx pool of one:
/// the pool gives a released connection back only from a task it spawns, after pinging it (a
/// round trip to sqlx's worker thread), and the next writer waits for both. In the saturated
/// Matrix workload that wait was a fifth of each commit (0.45 of 2 ms, mean).
struct Writes {
    /// `None` once the store is closed.
    conn: Mutex<Option<SqliteConnection>>,
    wal: Arc<WalWrites>,
}

impl Writes {
    /// The write connection, once every writer before has let it go.
    async fn lock(&self) -> Result<WriteGuard<'_>> {
        let conn = MutexGuard::try_map(self.conn.lock().await, Option::as_mut).map_err(|_| sqlx::Error::PoolClosed)?;
        Ok(WriteGuard { conn, wal: &self.wal })
    }

    async fn close(&self) {
        if let Some(conn) = self.conn.lock().await.take()
            && let Err(e) = conn.close().await
        {
            tracing::warn!(error = %e, "closing the write connection failed");
        }
    }
}

/// A writer's hold on the write connection; each one is counted as a write when let go.
struct WriteGuard<'a> {
    conn: MappedMutexGuard<'a, SqliteConnection>,
    wal: &'a WalWrites,
}

impl Deref for WriteGuard<'_> {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.conn
    }
}

impl DerefMut for WriteGuard<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.conn
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        self.wal.wrote();
    }
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

    /// Write-ahead log pages after which the writer checkpoints in its own commit. The
    /// background checkpointer (see [`checkpoints`]) copies the log into the database file,
    /// but the log file starts again from its beginning only after a checkpoint that found
    /// nothing appended during its copy: under writes without a pause that is this one, run by
    /// the writer between two commits. About 200 MB, a few seconds of the busiest writing
    /// measured (the benchmark's XMPP messaging writes 26,000 pages a second); what this
    /// checkpoint still has to copy is only what the last background one had not.
    const WAL_BACKSTOP_PAGES: &str = "50000";

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
        let wal = Arc::new(WalWrites::default());
        let conn = options
            .clone()
            .pragma("wal_autocheckpoint", Self::WAL_BACKSTOP_PAGES)
            .connect()
            .await?;
        let writes = Writes {
            conn: Mutex::new(Some(conn)),
            wal: wal.clone(),
        };
        // No ping before a connection is handed out: a SQLite connection is a file handle that
        // cannot have been dropped by a peer, and each ping is a round trip to sqlx's worker
        // thread (a park and a wake-up) before every statement.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        tokio::spawn(checkpoints(pool.clone(), pool.close_event(), wal));
        Ok(Self { pool, writes })
    }
}

/// The shortest time between two background checkpoints. Each copies every page changed
/// since the last once, however often it changed: the pages every commit touches (the newest
/// events, each room's index tail, the forward extremities) are copied once a second, not once
/// per commit. Measured against 100 ms: fewer fsyncs of the database file beside the commits'.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Writes after which a checkpoint is due: about 1,000 pages of log at the 20 to 25 pages a
/// message's commit writes, SQLite's own default threshold. A server writing a few messages a
/// minute checkpoints every few minutes, not every second.
const CHECKPOINT_AFTER_WRITES: u32 = 50;

/// The write connection's uses since the last checkpoint, and the checkpointer's wake-up.
#[derive(Default)]
struct WalWrites {
    since_checkpoint: AtomicU32,
    due: Notify,
}

impl WalWrites {
    fn wrote(&self) {
        if self.since_checkpoint.fetch_add(1, Ordering::Relaxed) + 1 >= CHECKPOINT_AFTER_WRITES {
            self.due.notify_one();
        }
    }
}

/// Copies the write-ahead log back into the database file, beside the writer rather than in
/// its commits. SQLite's own automatic checkpoint runs inside the commit that crosses its
/// threshold (1,000 pages by default): that commit, and every write queued behind it, waits
/// for the copy and the database file's fsync, which at a few hundred commits a second is
/// every 40th commit, the p99. Measured by hand in the benchmark's saturated Matrix workload
/// on a store already holding 100,000 events: p99 10.8 to 16.3 ms in eight runs with SQLite's
/// checkpoint, 8.2 to 8.5 ms in three with this one. A passive checkpoint takes no write
/// lock, so commits go on while it runs. Idle while nothing is written; ends when the store
/// closes (closing the last connection checkpoints what is left).
async fn checkpoints(pool: SqlitePool, mut closed: CloseEvent, wal: Arc<WalWrites>) {
    let run = async {
        loop {
            wal.due.notified().await;
            wal.since_checkpoint.store(0, Ordering::Relaxed);
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
                tracing::warn!(error = %e, "WAL checkpoint failed; the writer's own checkpoint remains");
            }
            tokio::time::sleep(CHECKPOINT_INTERVAL).await;
        }
    };
    // Err: the store closed.
    let _ = closed.do_until(run).await;
}

crate::common::impl_store!(SqliteStore, sqlx::Sqlite);
