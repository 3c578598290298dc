//! The federation listener publishes the server's signing key (`/_matrix/key/v2/server`),
//! signed by itself, and the same key signs every event: a peer fetching the key can verify
//! our events. On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use estuary_tests::matrix::Client;
use estuary_tests::{Backend, both_backends, open_server};
use ruma::serde::Base64;
use serde_json::{Value, json};

async fn published_key_verifies_itself_and_events(backend: Backend) {
    let (inst, server) = open_server(backend).await;
    let url = format!("https://127.0.0.1:{}/_matrix/key/v2/server", inst.federation_port);
    let keys: Value = server.http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(keys["server_name"], "localhost");
    let verify_keys = keys["verify_keys"].as_object().unwrap();
    assert_eq!(verify_keys.len(), 1, "{keys}");
    let (key_id, key) = verify_keys.iter().next().unwrap();
    assert!(key_id.starts_with("ed25519:"), "{key_id}");
    assert!(keys["valid_until_ts"].as_i64().unwrap() > now_ms(), "{keys}");

    let public = Base64::parse(key["key"].as_str().unwrap()).unwrap();
    let map: ruma::signatures::PublicKeyMap =
        BTreeMap::from([("localhost".to_owned(), BTreeMap::from([(key_id.clone(), public)]))]);
    let object: ruma::CanonicalJsonObject = serde_json::from_value(keys.clone()).unwrap();
    ruma::signatures::verify_json(&map, &object).expect("the key response is signed by the key it publishes");

    // An event of a new room verifies with that key.
    let alice = Client::register(&server, "alice", "pw").await;
    let room = alice.post("createRoom", json!({ "preset": "public_chat" })).await.ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = alice
        .put(
            &format!("rooms/{room}/send/m.room.message/t"),
            json!({ "body": "signed" }),
        )
        .await
        .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let pdu = stored_pdu(&inst.db, &id).await;
    let object: ruma::CanonicalJsonObject = serde_json::from_str(&pdu).unwrap();
    let rules = ruma::RoomVersionId::V11.rules().unwrap();
    let verified =
        ruma::signatures::verify_event(&map, &object, &rules).expect("the event's signature and hashes verify");
    assert_eq!(verified, ruma::signatures::Verified::All);
    // A tampered event does not.
    let mut tampered = object.clone();
    tampered.insert(
        "origin_server_ts".into(),
        ruma::CanonicalJsonValue::Integer(1_u32.into()),
    );
    assert!(ruma::signatures::verify_event(&map, &tampered, &rules).is_err());
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn stored_pdu(db: &estuary_tests::TestDb, event_id: &str) -> String {
    use sqlx::Connection;
    const SQL: &str = "SELECT pdu FROM events WHERE event_id = $1";
    match db.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar(SQL).bind(event_id).fetch_one(&mut c).await.unwrap()
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query_scalar(SQL).bind(event_id).fetch_one(&mut c).await.unwrap()
        }
    }
}

both_backends!(published_key_verifies_itself_and_events);
