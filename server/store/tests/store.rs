//! Store tests: each runs against SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use estuary_store::{Account, NewAccount, PasswordCredentials, ScramKeys, StoreError};
use estuary_tests::{Backend, TestDb, both_backends};

fn creds(tag: u8) -> PasswordCredentials {
    PasswordCredentials {
        argon2_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$fake{tag}"),
        scram_salt: vec![tag; 16],
        scram_iterations: 4096,
        scram_sha1: ScramKeys {
            stored_key: vec![tag; 20],
            server_key: vec![tag + 1; 20],
        },
        scram_sha256: ScramKeys {
            stored_key: vec![tag; 32],
            server_key: vec![tag + 2; 32],
        },
    }
}

fn new_account(localpart: &str, password: Option<PasswordCredentials>) -> NewAccount {
    NewAccount {
        localpart: localpart.to_owned(),
        password,
        admin: false,
        created_at: 1_700_000_000_000,
    }
}

async fn migrations_are_idempotent(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = estuary_store::open(&db.url).await.unwrap();
    store.create_account(&new_account("alice", None)).await.unwrap();
    store.migrate().await.unwrap();
    store.close().await;
    // Opening again runs the migrator again: nothing is re-applied, nothing lost.
    let store = estuary_store::open(&db.url).await.unwrap();
    assert!(store.account("alice").await.unwrap().is_some());
    assert_eq!(
        store.backend(),
        match backend {
            Backend::Sqlite => estuary_store::Backend::Sqlite,
            Backend::Postgres => estuary_store::Backend::Postgres,
        }
    );
}

async fn account_round_trip(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = estuary_store::open(&db.url).await.unwrap();
    let mut a = new_account("bob", Some(creds(7)));
    a.admin = true;
    store.create_account(&a).await.unwrap();
    let got = store.account("bob").await.unwrap().unwrap();
    assert_eq!(
        got,
        Account {
            localpart: "bob".into(),
            password: Some(creds(7)),
            displayname: None,
            avatar_url: None,
            admin: true,
            created_at: 1_700_000_000_000,
            deactivated_at: None,
        }
    );
    assert!(store.account("nobody").await.unwrap().is_none());
}

async fn duplicate_localpart_conflicts(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = estuary_store::open(&db.url).await.unwrap();
    store
        .create_account(&new_account("carol", Some(creds(1))))
        .await
        .unwrap();
    let err = store.create_account(&new_account("carol", None)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict), "{err:?}");
    // The first account is untouched.
    assert_eq!(store.account("carol").await.unwrap().unwrap().password, Some(creds(1)));
}

async fn list_is_ordered(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = estuary_store::open(&db.url).await.unwrap();
    for lp in ["zed", "amy", "mia"] {
        store.create_account(&new_account(lp, None)).await.unwrap();
    }
    let names: Vec<_> = store
        .list_accounts()
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.localpart)
        .collect();
    assert_eq!(names, ["amy", "mia", "zed"]);
}

async fn set_password_and_deactivate(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = estuary_store::open(&db.url).await.unwrap();
    store.create_account(&new_account("dan", Some(creds(1)))).await.unwrap();
    assert!(store.set_password("dan", &creds(9)).await.unwrap());
    assert_eq!(store.account("dan").await.unwrap().unwrap().password, Some(creds(9)));
    assert!(!store.set_password("nobody", &creds(9)).await.unwrap());

    assert!(store.deactivate_account("dan", 42).await.unwrap());
    let dan = store.account("dan").await.unwrap().unwrap();
    assert_eq!(dan.deactivated_at, Some(42));
    assert_eq!(dan.password, None, "credentials are erased");
    // Deactivated: no second deactivation, no new password, and the name stays taken.
    assert!(!store.deactivate_account("dan", 43).await.unwrap());
    assert!(!store.set_password("dan", &creds(3)).await.unwrap());
    assert!(matches!(
        store.create_account(&new_account("dan", None)).await,
        Err(StoreError::Conflict)
    ));
}

/// Writers take turns on the write connection (SQLite's is one, held by a mutex, not pooled):
/// many at once all land; one abandoned midway (its future dropped after a first poll) leaves
/// the connection usable; after `close`, a write is an error, not a wait or a panic.
async fn writers_take_turns_and_stop_at_close(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = estuary_store::open(&db.url).await.unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..20u8 {
        let store = store.clone();
        writers.spawn(async move {
            store
                .create_account(&new_account(&format!("u{i:02}"), Some(creds(i))))
                .await
        });
    }
    while let Some(done) = writers.join_next().await {
        done.unwrap().unwrap();
    }
    assert_eq!(store.list_accounts().await.unwrap().len(), 20);

    // Abandoned after one poll: whatever it had begun is rolled back or finished, never left
    // holding the connection or an open transaction.
    let mut abandoned = Box::pin(store.deactivate_account("u00", 42));
    let _ = tokio::time::timeout(std::time::Duration::ZERO, &mut abandoned).await;
    drop(abandoned);
    assert!(store.set_password("u01", &creds(99)).await.unwrap());
    assert_eq!(store.account("u01").await.unwrap().unwrap().password, Some(creds(99)));
    let u00 = store.account("u00").await.unwrap().unwrap();
    assert!(
        (u00.deactivated_at, u00.password.is_some()) == (None, true)
            || (u00.deactivated_at, u00.password.is_some()) == (Some(42), false),
        "half a deactivation: {u00:?}"
    );

    store.close().await;
    let late = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        store.create_account(&new_account("late", None)),
    )
    .await
    .expect("a write after close waits instead of failing");
    assert!(late.is_err(), "a write after close succeeded");
}

/// SQLite: the write-ahead log is copied into the database file in the background once enough
/// writes gathered. What this writes (2.2 MB in 60 writes) is under SQLite's default threshold
/// for a checkpoint in the writer's commit (1,000 pages, 4 MB) and far under the writer's own
/// (50,000 pages), so the database file grows only if the background checkpointer ran.
#[tokio::test]
async fn sqlite_wal_is_checkpointed_in_the_background() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = estuary_store::open(&db.url).await.unwrap();
    let path = db.url.trim_start_matches("sqlite://").to_owned();
    let file_len = || std::fs::metadata(&path).unwrap().len();
    store.create_account(&new_account("alice", None)).await.unwrap();
    let before = file_len();
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(200_000));
    for i in 0..60 {
        let content = if i < 11 { big.as_str() } else { "{}" };
        store
            .set_account_data("alice", "", &format!("t.{i}"), content)
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while file_len() < before + 2_000_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file is {} bytes, {before} before 2.2 MB were written: the WAL was not checkpointed",
            file_len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Everything is still there, read through the pool.
    assert_eq!(store.account_data("alice", "", "t.10").await.unwrap(), Some(big));
}

/// Rows of a store from before the transaction ID moved onto the event (migration 20): a room,
/// an event a client sent under a transaction ID, and one received without.
const ROWS_BEFORE_TXN_ON_EVENT: [&str; 4] = [
    "INSERT INTO rooms (room_id, room_version, creator, created_at) VALUES ('!r:x', '11', '@a:x', 0)",
    "INSERT INTO events (event_id, room_id, depth, sender, type, origin_server_ts, pdu) \
     VALUES ('$sent', '!r:x', 1, '@a:x', 'm.room.message', 0, '{}')",
    "INSERT INTO events (event_id, room_id, depth, sender, type, origin_server_ts, pdu) \
     VALUES ('$received', '!r:x', 2, '@b:y', 'm.room.message', 0, '{}')",
    "INSERT INTO event_txn_ids (localpart, device_id, txn_id, event_id) VALUES ('a', 'DEV', 'txn-1', '$sent')",
];

/// Migrate a pool's database only to 19, write [`ROWS_BEFORE_TXN_ON_EVENT`], close it.
macro_rules! store_at_19 {
    ($pool:expr, $migrations:literal) => {{
        let pool = $pool;
        sqlx::migrate!($migrations).run_to(19, &pool).await.unwrap();
        for q in ROWS_BEFORE_TXN_ON_EVENT {
            sqlx::query(q).execute(&pool).await.unwrap();
        }
        pool.close().await;
    }};
}

/// A store holding [`ROWS_BEFORE_TXN_ON_EVENT`], migrated only to 19.
async fn store_before_txn_on_event(db: &TestDb) {
    match db.backend {
        Backend::Sqlite => {
            let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&db.url)
                .unwrap()
                .create_if_missing(true)
                .foreign_keys(true);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            store_at_19!(pool, "../../migrations/sqlite");
        }
        Backend::Postgres => {
            store_at_19!(
                sqlx::PgPool::connect(&db.url).await.unwrap(),
                "../../migrations/postgres"
            );
        }
    }
}

/// Migration 20 copies each event's transaction ID onto the event's row: what an XMPP client
/// sent keeps the id it knows the message by, and the transaction still finds its event.
async fn txn_ids_move_onto_their_events(backend: Backend) {
    let db = TestDb::new(backend).await;
    store_before_txn_on_event(&db).await;
    let store = estuary_store::open(&db.url).await.unwrap();
    assert_eq!(
        store.event_txn("$sent").await.unwrap(),
        Some(("DEV".to_owned(), "txn-1".to_owned()))
    );
    assert_eq!(store.event_txn("$received").await.unwrap(), None);
    assert_eq!(store.event_txn("$unknown").await.unwrap(), None);
    assert_eq!(
        store.txn_event("a", "DEV", "txn-1").await.unwrap().as_deref(),
        Some("$sent")
    );
}

both_backends!(
    txn_ids_move_onto_their_events,
    migrations_are_idempotent,
    account_round_trip,
    duplicate_localpart_conflicts,
    list_is_ordered,
    set_password_and_deactivate,
    writers_take_turns_and_stop_at_close,
);
