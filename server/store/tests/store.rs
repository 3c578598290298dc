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

both_backends!(
    migrations_are_idempotent,
    account_round_trip,
    duplicate_localpart_conflicts,
    list_is_ordered,
    set_password_and_deactivate,
);
