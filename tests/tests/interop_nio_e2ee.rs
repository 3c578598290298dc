//! Interop: matrix-nio[e2e] (vodozemac's Python bindings) and the Rust vodozemac test client
//! exchange end-to-end encrypted messages in both directions through Estuary, on SQLite and
//! PostgreSQL. The server only stores and routes keys and ciphertext.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use estuary_tests::matrix::Client;
use estuary_tests::olm::{Device, RoomKey, megolm_decrypt};
use estuary_tests::{Backend, Instance, both_backends, interop_python};
use serde_json::{Value, json};

const CONFIG: &str = "[registration]\nopen = true\n\
    [rate_limits]\nlogin = { per_second = 0.0, burst = 0.0 }\nregistration = { per_second = 0.0, burst = 0.0 }\n\
    message = { per_second = 0.0, burst = 0.0 }\n";

const FROM_RUST: &str = "hello from rust";

async fn nio_and_rust_exchange_encrypted_messages(backend: Backend) {
    let inst = Instance::with_config(backend, CONFIG).await;
    assert!(
        inst.cli(&["user", "create", "bob", "--password", "bob-password"])
            .status
            .success()
    );
    let server = inst.start().await;
    let mut alice = Device::new(Client::register(&server, "alice", "pw").await);
    alice.upload_keys(10, true).await;
    let room = alice
        .client
        .post(
            "createRoom",
            json!({ "preset": "private_chat", "invite": ["@bob:localhost"] }),
        )
        .await
        .ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let store = tempfile::tempdir().unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/nio_e2ee.py");
    let nio = tokio::process::Command::new(interop_python())
        .arg(&script)
        .args(["--homeserver", &server.base_url, "--room", &room, "--expect", FROM_RUST])
        .arg("--store")
        .arg(store.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // Alice waits for nio's room key (Olm to-device) and its encrypted message.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut since: Option<String> = None;
    let mut room_key: Option<Value> = None;
    let mut from_nio: Option<Value> = None;
    while from_nio.is_none() {
        assert!(
            Instant::now() < deadline,
            "nothing encrypted from nio arrived (room key: {})",
            room_key.is_some()
        );
        let q = since
            .as_ref()
            .map(|s| format!("?since={s}&timeout=2000"))
            .unwrap_or_default();
        let s = alice.client.get(&format!("sync{q}")).await.ok();
        since = s["next_batch"].as_str().map(str::to_owned);
        for m in s["to_device"]["events"].as_array().into_iter().flatten() {
            let mine = &m["content"]["ciphertext"][alice.curve25519()];
            if m["type"] == "m.room.encrypted" && mine["type"] == 0 && room_key.is_none() {
                let payload = alice.olm_decrypt(&m["content"]);
                if payload["type"] == "m.room_key" && payload["content"]["room_id"] == room.as_str() {
                    room_key = Some(payload);
                }
            }
        }
        for e in s["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if e["type"] == "m.room.encrypted" && e["sender"] == "@bob:localhost" {
                let key = room_key
                    .as_ref()
                    .expect("nio's room key arrives no later than its message");
                from_nio = Some(megolm_decrypt(key, &e["content"]));
            }
        }
    }
    let from_nio = from_nio.unwrap();
    assert_eq!(from_nio["content"]["body"], "hello from nio", "{from_nio}");

    // Alice shares her own room key with bob's nio device, then sends an encrypted reply.
    let q = alice
        .client
        .post("keys/query", json!({ "device_keys": { "@bob:localhost": [] } }))
        .await
        .ok();
    let devices = q["device_keys"]["@bob:localhost"].as_object().unwrap().clone();
    assert_eq!(devices.len(), 1, "{devices:?}");
    let (bob_device, bob_keys) = devices.into_iter().next().unwrap();
    let bob_curve = bob_keys["keys"][format!("curve25519:{bob_device}")]
        .as_str()
        .unwrap()
        .to_owned();
    let bob_ed = bob_keys["keys"][format!("ed25519:{bob_device}")]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, otk) = alice
        .claim("@bob:localhost", &bob_device)
        .await
        .expect("a key of bob's nio device");
    let mut key = RoomKey::new();
    let share = key.share_payload(&room, &alice, "@bob:localhost", &bob_ed);
    let encrypted = alice.olm_encrypt(&bob_curve, otk["key"].as_str().unwrap(), &share);
    alice
        .client
        .put(
            "sendToDevice/m.room.encrypted/share1",
            json!({ "messages": { "@bob:localhost": { bob_device: encrypted } } }),
        )
        .await
        .ok();
    let reply = key.encrypt(
        &alice,
        &room,
        "m.room.message",
        &json!({ "msgtype": "m.text", "body": FROM_RUST }),
    );
    alice
        .client
        .put(&format!("rooms/{room}/send/m.room.encrypted/reply1"), reply)
        .await
        .ok();

    let out = tokio::time::timeout(Duration::from_secs(120), nio.wait_with_output())
        .await
        .expect("nio finished")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("ALL OK"),
        "nio failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("bob decrypts alice's message"), "{stdout}");
    assert!(server.terminate().await.success());
}

both_backends!(nio_and_rust_exchange_encrypted_messages);
