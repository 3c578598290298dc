//! Account service tests over a real store, on SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use estuary_core::CoreError;
use estuary_core::accounts::Accounts;
use estuary_core::password::{scram_keys_sha1, scram_keys_sha256};
use estuary_tests::{Backend, TestDb, both_backends};

async fn accounts(backend: Backend) -> (TestDb, Accounts) {
    let db = TestDb::new(backend).await;
    let store = estuary_store::open(&db.url).await.unwrap();
    (db, Accounts::new(store, "example.org".to_owned()))
}

async fn create_and_log_in(backend: Backend) {
    let (_db, accounts) = accounts(backend).await;
    let alice = accounts.create("alice", Some("s3cret pass"), false).await.unwrap();
    let p = alice.password.unwrap();
    // SCRAM credentials are those of the same password, over SASLprep'd bytes.
    assert_eq!(
        p.scram_sha1,
        scram_keys_sha1(b"s3cret pass", &p.scram_salt, p.scram_iterations)
    );
    assert_eq!(
        p.scram_sha256,
        scram_keys_sha256(b"s3cret pass", &p.scram_salt, p.scram_iterations)
    );
    assert!(accounts.check_password("alice", "s3cret pass").await.unwrap());
    assert!(!accounts.check_password("alice", "wrong").await.unwrap());
    assert!(!accounts.check_password("nobody", "s3cret pass").await.unwrap());
}

async fn refuses_bad_and_taken_names(backend: Backend) {
    let (_db, accounts) = accounts(backend).await;
    assert!(matches!(
        accounts.create("Alice", None, false).await,
        Err(CoreError::InvalidLocalpart(_))
    ));
    assert!(matches!(
        accounts.create("a/b", None, false).await,
        Err(CoreError::InvalidLocalpart(_))
    ));
    assert!(matches!(
        accounts.create("ok", Some(""), false).await,
        Err(CoreError::InvalidPassword(_))
    ));
    accounts.create("bob", None, false).await.unwrap();
    assert!(matches!(
        accounts.create("bob", None, false).await,
        Err(CoreError::UserInUse(_))
    ));
}

async fn set_password_changes_hash_and_scram(backend: Backend) {
    let (_db, accounts) = accounts(backend).await;
    let before = accounts
        .create("carol", Some("first"), false)
        .await
        .unwrap()
        .password
        .unwrap();
    accounts.set_password("carol", "second").await.unwrap();
    let after = accounts.get("carol").await.unwrap().password.unwrap();
    assert_ne!(before.argon2_hash, after.argon2_hash);
    assert_ne!(before.scram_sha1, after.scram_sha1);
    assert_ne!(before.scram_sha256, after.scram_sha256);
    assert_eq!(
        after.scram_sha256,
        scram_keys_sha256(b"second", &after.scram_salt, after.scram_iterations)
    );
    assert!(accounts.check_password("carol", "second").await.unwrap());
    assert!(!accounts.check_password("carol", "first").await.unwrap());
    assert!(matches!(
        accounts.set_password("nobody", "x").await,
        Err(CoreError::UnknownUser(_))
    ));
}

async fn deactivate_erases_and_reserves(backend: Backend) {
    let (_db, accounts) = accounts(backend).await;
    accounts.create("dave", Some("pw"), false).await.unwrap();
    accounts.deactivate("dave").await.unwrap();
    assert!(!accounts.check_password("dave", "pw").await.unwrap());
    let dave = accounts.get("dave").await.unwrap();
    assert!(!dave.is_active());
    assert_eq!(dave.password, None);
    assert!(matches!(
        accounts.deactivate("dave").await,
        Err(CoreError::Deactivated(_))
    ));
    assert!(matches!(
        accounts.set_password("dave", "pw2").await,
        Err(CoreError::Deactivated(_))
    ));
    assert!(matches!(
        accounts.create("dave", Some("pw"), false).await,
        Err(CoreError::UserInUse(_))
    ));
}

both_backends!(
    create_and_log_in,
    refuses_bad_and_taken_names,
    set_password_changes_hash_and_scram,
    deactivate_erases_and_reserves,
);
