//! End-to-end encryption through the server, proven with vodozemac test devices: key upload,
//! query and claim (one-time keys, then the fallback key), Olm to-device sharing of a Megolm
//! room key, an encrypted room message decrypted to its plaintext; the plaintext is nowhere in
//! the store or the logs; concurrent claims hand out each key at most once; bad keys are
//! refused. On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use estuary_tests::matrix::{Client, next_batch as next};
use estuary_tests::olm::{Device, RoomKey, megolm_decrypt};
use estuary_tests::{Backend, both_backends, open_server};
use serde_json::{Value, json};

/// The to-device events a sync delivers.
fn to_device(s: &Value) -> Vec<Value> {
    s["to_device"]["events"].as_array().cloned().unwrap_or_default()
}

const MARKER: &str = "PLAINTEXT-MARKER-7f3a9c";

async fn olm_megolm_roundtrip_and_fallback(backend: Backend) {
    let (inst, server) = open_server(backend).await;
    let mut alice = Device::new(Client::register(&server, "alice", "pw").await);
    let mut bob = Device::new(Client::register(&server, "bob", "pw").await);

    alice.upload_keys(5, false).await;
    let counts = bob.upload_keys(1, true).await;
    assert_eq!(counts["signed_curve25519"], 1);
    let bob_sync = bob.client.get("sync").await.ok();
    assert_eq!(bob_sync["device_one_time_keys_count"]["signed_curve25519"], 1);
    assert_eq!(
        bob_sync["device_unused_fallback_key_types"],
        json!(["signed_curve25519"])
    );
    let mut bob_since = next(&bob_sync);

    // An encrypted room (encryption is on by default for private rooms).
    let room = alice
        .client
        .post(
            "createRoom",
            json!({ "preset": "private_chat", "invite": [bob.client.user_id] }),
        )
        .await
        .ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.client.post(&format!("join/{room}"), json!({})).await.ok();

    // Alice looks up bob's device keys and checks them as a client would.
    let q = alice
        .client
        .post("keys/query", json!({ "device_keys": { "@bob:localhost": [] } }))
        .await
        .ok();
    let bob_keys = &q["device_keys"]["@bob:localhost"][&bob.client.device_id];
    assert_eq!(
        bob_keys["keys"][format!("curve25519:{}", bob.client.device_id)],
        bob.curve25519().as_str()
    );
    assert_eq!(
        bob_keys,
        &{
            let mut expected = bob.device_keys();
            if let Some(u) = bob_keys.get("unsigned") {
                expected["unsigned"] = u.clone();
            }
            expected
        },
        "the keys come back exactly as signed"
    );

    // Claim bob's one-time key, open an Olm session, send the room key to-device.
    let (key_id, otk) = alice
        .claim("@bob:localhost", &bob.client.device_id)
        .await
        .expect("a one-time key");
    assert!(
        key_id.starts_with("signed_curve25519:") && otk.get("fallback").is_none(),
        "{key_id} {otk}"
    );
    let mut room_key = RoomKey::new();
    let share = room_key.share_payload(&room, &alice, "@bob:localhost", &bob.ed25519());
    let encrypted = alice.olm_encrypt(&bob.curve25519(), otk["key"].as_str().unwrap(), &share);
    let send = json!({ "messages": { "@bob:localhost": { bob.client.device_id.clone(): encrypted } } });
    alice
        .client
        .put("sendToDevice/m.room.encrypted/txn1", send.clone())
        .await
        .ok();
    // The same transaction again queues nothing.
    alice.client.put("sendToDevice/m.room.encrypted/txn1", send).await.ok();

    // A Megolm-encrypted room message.
    let secret = json!({ "msgtype": "m.text", "body": format!("{MARKER} meet at noon") });
    let content = room_key.encrypt(&alice, &room, "m.room.message", &secret);
    alice
        .client
        .put(&format!("rooms/{room}/send/m.room.encrypted/m1"), content)
        .await
        .ok();

    // Bob syncs: one to-device message (the retried txn added none), and the room event.
    let s = bob.client.get(&format!("sync?since={bob_since}")).await.ok();
    let msgs = to_device(&s);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(
        (msgs[0]["type"].as_str(), msgs[0]["sender"].as_str()),
        (Some("m.room.encrypted"), Some("@alice:localhost"))
    );
    let payload = bob.olm_decrypt(&msgs[0]["content"]);
    assert_eq!(payload["type"], "m.room_key");
    assert_eq!(payload["recipient_keys"]["ed25519"], bob.ed25519().as_str());
    let event = s["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.encrypted")
        .cloned()
        .unwrap();
    let decrypted = megolm_decrypt(&payload, &event["content"]);
    assert_eq!(decrypted["content"], secret, "bob reads alice's message");
    assert_eq!(
        s["device_one_time_keys_count"]
            .get("signed_curve25519")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        0,
        "the one-time key is used up"
    );
    bob_since = next(&s);
    // Delivered once: the next sync (acknowledging the last) has no to-device messages.
    let s = bob.client.get(&format!("sync?since={bob_since}&timeout=0")).await.ok();
    assert!(to_device(&s).is_empty(), "{s}");

    // No one-time key left: the claim gets the fallback key, and a session still opens.
    let (key_id, fallback) = alice
        .claim("@bob:localhost", &bob.client.device_id)
        .await
        .expect("the fallback key");
    assert_eq!(fallback["fallback"], true, "{key_id} {fallback}");
    let mut second_key = RoomKey::new();
    let share = second_key.share_payload(&room, &alice, "@bob:localhost", &bob.ed25519());
    let encrypted = alice.olm_encrypt(&bob.curve25519(), fallback["key"].as_str().unwrap(), &share);
    alice
        .client
        .put(
            "sendToDevice/m.room.encrypted/txn2",
            json!({ "messages": { "@bob:localhost": { "*": encrypted } } }),
        )
        .await
        .ok();
    let content = second_key.encrypt(
        &alice,
        &room,
        "m.room.message",
        &json!({ "msgtype": "m.text", "body": "second" }),
    );
    alice
        .client
        .put(&format!("rooms/{room}/send/m.room.encrypted/m2"), content)
        .await
        .ok();
    let s = bob.client.get(&format!("sync?since={}", next(&s))).await.ok();
    let payload = bob.olm_decrypt(&to_device(&s)[0]["content"]);
    let event = s["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.room.encrypted")
        .cloned()
        .unwrap();
    assert_eq!(megolm_decrypt(&payload, &event["content"])["content"]["body"], "second");
    assert!(
        s["device_unused_fallback_key_types"].as_array().unwrap().is_empty(),
        "the fallback key was used"
    );

    // Privacy: the plaintext is nowhere in the store or the logs.
    estuary_tests::assert_not_in_store(&inst.db, MARKER, "events").await;
    let log_path = server.log_path.clone();
    assert!(server.terminate().await.success());
    assert!(
        !std::fs::read_to_string(log_path).unwrap().contains(MARKER),
        "the plaintext reached the log"
    );
}

/// 50 concurrent claims for one device's 10 one-time keys: each key goes out at most once.
async fn concurrent_claims_hand_out_each_key_once(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let mut bob = Device::new(Client::register(&server, "bob", "pw").await);
    let counts = bob.upload_keys(10, false).await;
    assert_eq!(counts["signed_curve25519"], 10);
    let alice = Client::register(&server, "alice", "pw").await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let c = alice.clone();
        let device = bob.client.device_id.clone();
        tasks.push(tokio::spawn(async move {
            let r = c
                .post(
                    "keys/claim",
                    json!({ "one_time_keys": { "@bob:localhost": { device.clone(): "signed_curve25519" } } }),
                )
                .await
                .ok();
            r["one_time_keys"]["@bob:localhost"][&device]
                .as_object()
                .and_then(|m| m.keys().next().cloned())
        }));
    }
    let mut handed_out = Vec::new();
    for t in tasks {
        if let Some(k) = t.await.unwrap() {
            handed_out.push(k);
        }
    }
    let distinct: BTreeSet<_> = handed_out.iter().collect();
    assert_eq!(
        distinct.len(),
        handed_out.len(),
        "a key was handed out twice: {handed_out:?}"
    );
    assert!(!handed_out.is_empty() && handed_out.len() <= 10, "{handed_out:?}");
    let left = bob.client.get("sync").await.ok()["device_one_time_keys_count"]["signed_curve25519"]
        .as_i64()
        .unwrap_or(0);
    assert_eq!(left as usize, 10 - handed_out.len());
}

async fn bad_keys_and_to_device_rules(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let mut bob = Device::new(Client::register(&server, "bob", "pw").await);
    let bob2 = Client::login(&server, "bob", "pw").await;
    let alice = Device::new(Client::register(&server, "alice", "pw").await);

    // Unsigned, wrongly signed, or for another device: refused, and nothing is stored.
    let mut unsigned = bob.device_keys();
    unsigned.as_object_mut().unwrap().remove("signatures");
    bob.client
        .post("keys/upload", json!({ "device_keys": unsigned }))
        .await
        .err(400, "M_INVALID_PARAM");
    let mut forged = bob.device_keys();
    forged["keys"][format!("curve25519:{}", bob.client.device_id)] =
        json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    bob.client
        .post("keys/upload", json!({ "device_keys": forged }))
        .await
        .err(400, "M_INVALID_PARAM");
    let signed_by_alice = alice.device_keys();
    bob.client
        .post("keys/upload", json!({ "device_keys": signed_by_alice }))
        .await
        .err(400, "M_INVALID_PARAM");
    let mut wrong_algorithm = bob.device_keys();
    wrong_algorithm["algorithms"] = json!(["m.made.up"]);
    bob.client
        .post("keys/upload", json!({ "device_keys": wrong_algorithm }))
        .await
        .err(400, "M_INVALID_PARAM");
    bob.client
        .post(
            "keys/upload",
            json!({ "one_time_keys": { "made_up:AAAA": { "key": "x" } } }),
        )
        .await
        .err(400, "M_INVALID_PARAM");
    let q = alice
        .client
        .post("keys/query", json!({ "device_keys": { "@bob:localhost": [] } }))
        .await
        .ok();
    assert_eq!(
        q["device_keys"]["@bob:localhost"],
        json!({}),
        "nothing stored by refused uploads"
    );

    // A good upload shows as a device-list change to a user sharing a room.
    let room = alice
        .client
        .post("createRoom", json!({ "preset": "public_chat" }))
        .await
        .ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.client.post(&format!("join/{room}"), json!({})).await.ok();
    let since = next(&alice.client.get("sync").await.ok());
    bob.upload_keys(2, false).await;
    let s = alice.client.get(&format!("sync?since={since}")).await.ok();
    assert!(
        s["device_lists"]["changed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == "@bob:localhost"),
        "{s}"
    );
    let changes = alice
        .client
        .get(&format!("keys/changes?from={since}&to={}", next(&s)))
        .await
        .ok();
    assert!(
        changes["changed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == "@bob:localhost"),
        "{changes} from {since} to {}",
        next(&s)
    );

    // "*" reaches every device of the user; each device gets it once.
    let since_b = next(&bob.client.get("sync").await.ok());
    let since_b2 = next(&bob2.get("sync").await.ok());
    alice
        .client
        .put(
            "sendToDevice/org.example.ping/t1",
            json!({ "messages": { "@bob:localhost": { "*": { "n": 1 } } } }),
        )
        .await
        .ok();
    for (c, since) in [(&bob.client, &since_b), (&bob2, &since_b2)] {
        let s = c.get(&format!("sync?since={since}")).await.ok();
        let msgs = to_device(&s);
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert_eq!(msgs[0]["content"]["n"], 1);
    }
    // Too large, or to another server: refused.
    let big = "x".repeat(70_000);
    alice
        .client
        .put(
            "sendToDevice/org.example.big/t2",
            json!({ "messages": { "@bob:localhost": { "*": { "blob": big } } } }),
        )
        .await
        .err(413, "M_TOO_LARGE");
    alice
        .client
        .put(
            "sendToDevice/org.example.ping/t3",
            json!({ "messages": { "@x:elsewhere.org": { "*": {} } } }),
        )
        .await
        .err(403, "M_FORBIDDEN");

    // Deleting a device deletes its keys, and its user's device list changes.
    let since = next(&alice.client.get("sync").await.ok());
    let r = bob
        .client
        .with_password_uia(
            reqwest::Method::DELETE,
            &format!("devices/{}", bob.client.device_id),
            json!({}),
            "pw",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let q = alice
        .client
        .post("keys/query", json!({ "device_keys": { "@bob:localhost": [] } }))
        .await
        .ok();
    assert_eq!(q["device_keys"]["@bob:localhost"], json!({}));
    let s = alice.client.get(&format!("sync?since={since}")).await.ok();
    assert!(
        s["device_lists"]["changed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == "@bob:localhost"),
        "{s}"
    );
}

/// Users who start sharing a room show up in device_lists.changed; users who share no room
/// any more show up in device_lists.left (in sync and in keys/changes).
async fn device_lists_follow_room_membership(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let mut carol = Device::new(Client::register(&server, "carol", "pw").await);
    carol.upload_keys(1, false).await;
    let room = alice.post("createRoom", json!({ "preset": "public_chat" })).await.ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let since = next(&alice.get("sync").await.ok());
    carol.client.post(&format!("join/{room}"), json!({})).await.ok();
    let s = alice.get(&format!("sync?since={since}")).await.ok();
    assert!(
        s["device_lists"]["changed"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u == "@carol:localhost"),
        "{s}"
    );
    let since = next(&s);
    carol.client.post(&format!("rooms/{room}/leave"), json!({})).await.ok();
    let s = alice.get(&format!("sync?since={since}")).await.ok();
    assert_eq!(s["device_lists"]["left"], json!(["@carol:localhost"]), "{s}");
    let changes = alice
        .get(&format!("keys/changes?from={since}&to={}", next(&s)))
        .await
        .ok();
    assert_eq!(changes["left"], json!(["@carol:localhost"]), "{changes}");
}

/// MSC3814: a dehydrated device receives an Olm-encrypted room key while its user is
/// offline; the user later reads it through /events.
async fn dehydrated_device(backend: Backend) {
    const BASE: &str = "/_matrix/client/unstable/org.matrix.msc3814.v1";
    let (_inst, server) = open_server(backend).await;
    let bob = Client::register(&server, "bob", "pw").await;
    let alice = Device::new(Client::register(&server, "alice", "pw").await);
    bob.get(&format!("{BASE}/dehydrated_device"))
        .await
        .err(404, "M_NOT_FOUND");

    let mut parked = Device::new(Client {
        device_id: "DEHYDRATED1".into(),
        ..bob.clone()
    });
    let mut body = parked.generate_keys(2, true);
    let data = json!({ "algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": "opaque to the server" });
    body["device_id"] = json!("DEHYDRATED1");
    body["device_data"] = data.clone();
    body["initial_device_display_name"] = json!("Dehydrated");
    bob.put(&format!("{BASE}/dehydrated_device"), body).await.ok();
    parked.account.mark_keys_as_published();
    let got = bob.get(&format!("{BASE}/dehydrated_device")).await.ok();
    assert_eq!(
        (got["device_id"].as_str(), &got["device_data"]),
        (Some("DEHYDRATED1"), &data)
    );

    // Alice sees the device's keys and sends it a room key.
    let q = alice
        .client
        .post("keys/query", json!({ "device_keys": { "@bob:localhost": [] } }))
        .await
        .ok();
    assert!(q["device_keys"]["@bob:localhost"].get("DEHYDRATED1").is_some(), "{q}");
    let (_, otk) = alice.claim("@bob:localhost", "DEHYDRATED1").await.unwrap();
    let share = RoomKey::new().share_payload("!room:localhost", &alice, "@bob:localhost", &parked.ed25519());
    let encrypted = alice.olm_encrypt(&parked.curve25519(), otk["key"].as_str().unwrap(), &share);
    alice
        .client
        .put(
            "sendToDevice/m.room.encrypted/d1",
            json!({ "messages": { "@bob:localhost": { "DEHYDRATED1": encrypted } } }),
        )
        .await
        .ok();

    let page = bob
        .post(&format!("{BASE}/dehydrated_device/DEHYDRATED1/events"), json!({}))
        .await
        .ok();
    let events = page["events"].as_array().unwrap();
    assert_eq!(events.len(), 1, "{page}");
    assert_eq!(
        parked.olm_decrypt(&events[0]["content"])["content"]["session_key"],
        share["content"]["session_key"]
    );
    let again = bob
        .post(
            &format!("{BASE}/dehydrated_device/DEHYDRATED1/events"),
            json!({ "next_batch": page["next_batch"] }),
        )
        .await
        .ok();
    assert!(
        again["events"].as_array().unwrap().is_empty(),
        "acknowledged messages are gone: {again}"
    );
    bob.post(&format!("{BASE}/dehydrated_device/OTHER/events"), json!({}))
        .await
        .err(404, "M_NOT_FOUND");

    // A new dehydrated device replaces the old one (whose keys go).
    let mut second = Device::new(Client {
        device_id: "DEHYDRATED2".into(),
        ..bob.clone()
    });
    let mut body = second.generate_keys(1, false);
    body["device_id"] = json!("DEHYDRATED2");
    body["device_data"] = data.clone();
    bob.put(&format!("{BASE}/dehydrated_device"), body.clone()).await.ok();
    let q = alice
        .client
        .post("keys/query", json!({ "device_keys": { "@bob:localhost": [] } }))
        .await
        .ok();
    assert!(
        q["device_keys"]["@bob:localhost"].get("DEHYDRATED1").is_none()
            && q["device_keys"]["@bob:localhost"].get("DEHYDRATED2").is_some(),
        "{q}"
    );
    // Refused: another device's ID, unsigned keys.
    let mut clash = body.clone();
    clash["device_id"] = json!(bob.device_id);
    bob.put(&format!("{BASE}/dehydrated_device"), clash)
        .await
        .err(400, "M_INVALID_PARAM");
    let mut unsigned = body;
    unsigned["device_keys"].as_object_mut().unwrap().remove("signatures");
    bob.put(&format!("{BASE}/dehydrated_device"), unsigned)
        .await
        .err(400, "M_INVALID_PARAM");
    assert_eq!(
        bob.delete(&format!("{BASE}/dehydrated_device"), json!({})).await.ok()["device_id"],
        "DEHYDRATED2"
    );
    bob.get(&format!("{BASE}/dehydrated_device"))
        .await
        .err(404, "M_NOT_FOUND");
}

both_backends!(
    dehydrated_device,
    device_lists_follow_room_membership,
    olm_megolm_roundtrip_and_fallback,
    concurrent_claims_hand_out_each_key_once,
    bad_keys_and_to_device_rules
);
