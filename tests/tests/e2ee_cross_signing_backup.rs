//! Cross-signing keys and signatures, and server-side key backup. On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use estuary_tests::matrix::Client;
use estuary_tests::olm::{Device, SigningKey};
use estuary_tests::{Backend, both_backends, open_server};
use reqwest::Method;
use serde_json::{Value, json};

async fn cross_signing(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let mut bob = Device::new(Client::register(&server, "bob", "pw").await);
    let alice = Device::new(Client::register(&server, "alice", "pw").await);
    bob.upload_keys(1, false).await;
    let room = alice
        .client
        .post("createRoom", json!({ "preset": "public_chat" }))
        .await
        .ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.client.post(&format!("join/{room}"), json!({})).await.ok();
    let since = alice.client.get("sync").await.ok()["next_batch"]
        .as_str()
        .unwrap()
        .to_owned();

    let (master, ssk, usk) = (SigningKey::new(), SigningKey::new(), SigningKey::new());
    let b = "@bob:localhost";
    let master_obj = master.key_object(b, "master");
    let ssk_obj = master.sign(b, ssk.key_object(b, "self_signing"));
    let usk_obj = master.sign(b, usk.key_object(b, "user_signing"));

    // Refused: a self-signing key not signed by the master, a wrong usage.
    let unsigned_ssk = ssk.key_object(b, "self_signing");
    bob.client
        .post(
            "keys/device_signing/upload",
            json!({ "master_key": master_obj, "self_signing_key": unsigned_ssk }),
        )
        .await
        .err(400, "M_INVALID_PARAM");
    bob.client
        .post(
            "keys/device_signing/upload",
            json!({ "master_key": master.key_object(b, "self_signing") }),
        )
        .await
        .err(400, "M_INVALID_PARAM");
    // The first upload needs no password (spec v1.11).
    bob.client
        .post(
            "keys/device_signing/upload",
            json!({ "master_key": master_obj, "self_signing_key": ssk_obj, "user_signing_key": usk_obj }),
        )
        .await
        .ok();
    let q = alice
        .client
        .post("keys/query", json!({ "device_keys": { b: [] } }))
        .await
        .ok();
    assert_eq!(q["master_keys"][b]["keys"][master.key_id()], master.public().as_str());
    assert_eq!(q["self_signing_keys"][b]["keys"][ssk.key_id()], ssk.public().as_str());
    assert!(
        q["user_signing_keys"].get(b).is_none(),
        "a user-signing key is shown to its owner only"
    );
    let own = bob
        .client
        .post("keys/query", json!({ "device_keys": { b: [] } }))
        .await
        .ok();
    assert_eq!(own["user_signing_keys"][b]["keys"][usk.key_id()], usk.public().as_str());
    let s = alice.client.get(&format!("sync?since={since}")).await.ok();
    assert!(
        s["device_lists"]["changed"].as_array().unwrap().iter().any(|u| u == b),
        "{s}"
    );

    // Replacing the keys needs the password.
    let first = bob
        .client
        .post("keys/device_signing/upload", json!({ "master_key": master_obj }))
        .await;
    assert_eq!(first.status, 401, "{}", first.body);
    let r = bob
        .client
        .with_password_uia(
            Method::POST,
            "keys/device_signing/upload",
            json!({ "master_key": master_obj }),
            "pw",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Bob signs his device with his self-signing key; the signature is stored and shown.
    let signed_device = ssk.sign(b, bob.device_keys());
    let r = bob
        .client
        .post(
            "keys/signatures/upload",
            json!({ b: { bob.client.device_id.clone(): signed_device } }),
        )
        .await
        .ok();
    assert_eq!(r["failures"], json!({}), "{r}");
    let q = alice
        .client
        .post("keys/query", json!({ "device_keys": { b: [] } }))
        .await
        .ok();
    assert!(
        q["device_keys"][b][&bob.client.device_id]["signatures"][b][ssk.key_id()].is_string(),
        "{q}"
    );
    // A signature by a key bob does not have is refused per key, in failures.
    let stranger = SigningKey::new();
    let forged = stranger.sign(b, bob.device_keys());
    let r = bob
        .client
        .post(
            "keys/signatures/upload",
            json!({ b: { bob.client.device_id.clone(): forged } }),
        )
        .await
        .ok();
    assert_eq!(
        r["failures"][b][&bob.client.device_id]["errcode"], "M_INVALID_SIGNATURE",
        "{r}"
    );

    // Alice, with her own user-signing key, signs bob's master key.
    let (a_master, a_usk) = (SigningKey::new(), SigningKey::new());
    let a = "@alice:localhost";
    alice
        .client
        .post("keys/device_signing/upload", json!({ "master_key": a_master.key_object(a, "master"), "user_signing_key": a_master.sign(a, a_usk.key_object(a, "user_signing")) }))
        .await
        .ok();
    let bob_master_signed = a_usk.sign(a, q["master_keys"][b].clone());
    let r = alice
        .client
        .post(
            "keys/signatures/upload",
            json!({ b: { master.public(): bob_master_signed } }),
        )
        .await
        .ok();
    assert_eq!(r["failures"], json!({}), "{r}");
    let q = alice
        .client
        .post("keys/query", json!({ "device_keys": { b: [] } }))
        .await
        .ok();
    assert!(q["master_keys"][b]["signatures"][a][a_usk.key_id()].is_string(), "{q}");
}

fn key(index: i64, verified: bool, marker: &str) -> Value {
    json!({ "first_message_index": index, "forwarded_count": 0, "is_verified": verified,
            "session_data": { "ephemeral": "e", "ciphertext": marker, "mac": "m" } })
}

async fn key_backup(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let bob = Client::register(&server, "bob", "pw").await;
    let eve = Client::register(&server, "eve", "pw").await;
    bob.get("room_keys/version").await.err(404, "M_NOT_FOUND");
    let algorithm =
        json!({ "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": { "public_key": "abc" } });
    let v1 = bob.post("room_keys/version", algorithm.clone()).await.ok()["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let info = bob.get("room_keys/version").await.ok();
    assert_eq!(
        (info["version"].as_str(), info["count"].as_i64()),
        (Some(v1.as_str()), Some(0))
    );
    let etag0 = info["etag"].as_str().unwrap().to_owned();

    let r = bob.put(&format!("room_keys/keys?version={v1}"), json!({ "rooms": { "!r1:localhost": { "sessions": { "s1": key(5, false, "one"), "s2": key(0, true, "two") } } } })).await.ok();
    assert_eq!(r["count"], 2);
    assert_ne!(r["etag"].as_str().unwrap(), etag0, "the etag changes with the keys");
    bob.put(
        &format!("room_keys/keys/!r2:localhost?version={v1}"),
        json!({ "sessions": { "s3": key(1, false, "three") } }),
    )
    .await
    .ok();
    let all = bob.get(&format!("room_keys/keys?version={v1}")).await.ok();
    assert_eq!(
        all["rooms"]["!r1:localhost"]["sessions"]["s2"]["session_data"]["ciphertext"],
        "two"
    );
    assert_eq!(
        all["rooms"]["!r2:localhost"]["sessions"]["s3"]["first_message_index"],
        1
    );

    // A worse key does not replace a better one; a better one does.
    bob.put(
        &format!("room_keys/keys/!r1:localhost/s1?version={v1}"),
        key(9, false, "worse"),
    )
    .await
    .ok();
    assert_eq!(
        bob.get(&format!("room_keys/keys/!r1:localhost/s1?version={v1}"))
            .await
            .ok()["session_data"]["ciphertext"],
        "one"
    );
    bob.put(
        &format!("room_keys/keys/!r1:localhost/s1?version={v1}"),
        key(2, false, "better"),
    )
    .await
    .ok();
    assert_eq!(
        bob.get(&format!("room_keys/keys/!r1:localhost/s1?version={v1}"))
            .await
            .ok()["session_data"]["ciphertext"],
        "better"
    );
    let room = bob
        .get(&format!("room_keys/keys/!r1:localhost?version={v1}"))
        .await
        .ok();
    assert_eq!(room["sessions"].as_object().unwrap().len(), 2);

    // Keys go only to the current version.
    let v2 = bob.post("room_keys/version", algorithm.clone()).await.ok()["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let wrong = bob
        .put(
            &format!("room_keys/keys/!r1:localhost/s9?version={v1}"),
            key(0, true, "x"),
        )
        .await;
    wrong.err(403, "M_WRONG_ROOM_KEYS_VERSION");
    assert_eq!(wrong.body["current_version"], v2.as_str());
    // auth_data may change, the algorithm may not.
    bob.put(
        &format!("room_keys/version/{v2}"),
        json!({ "algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": { "public_key": "def" } }),
    )
    .await
    .ok();
    assert_eq!(
        bob.get(&format!("room_keys/version/{v2}")).await.ok()["auth_data"]["public_key"],
        "def"
    );
    bob.put(
        &format!("room_keys/version/{v2}"),
        json!({ "algorithm": "org.example.other", "auth_data": {} }),
    )
    .await
    .err(400, "M_INVALID_PARAM");

    // Deletion: a session, a room, a version.
    let r = bob
        .delete(&format!("room_keys/keys/!r1:localhost/s2?version={v1}"), json!({}))
        .await
        .ok();
    assert_eq!(r["count"], 2);
    bob.delete(&format!("room_keys/keys/!r2:localhost?version={v1}"), json!({}))
        .await
        .ok();
    assert_eq!(bob.get(&format!("room_keys/version/{v1}")).await.ok()["count"], 1);
    bob.delete(&format!("room_keys/version/{v1}"), json!({})).await.ok();
    bob.get(&format!("room_keys/version/{v1}"))
        .await
        .err(404, "M_NOT_FOUND");
    // Another user's namespace is separate.
    eve.get(&format!("room_keys/version/{v2}"))
        .await
        .err(404, "M_NOT_FOUND");
}

both_backends!(cross_signing, key_backup);
