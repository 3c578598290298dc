//! Authorization and visibility edge cases: redactions however sent, alias deletion, history
//! for users who never joined or who left, hostile key JSON, password guessing through
//! user-interactive auth, key counts at zero, and profile changes in sync. On SQLite and
//! PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use estuary_tests::matrix::{Client, next_batch as next};
use estuary_tests::olm::Device;
use estuary_tests::{Backend, Instance, both_backends, open_server};
use reqwest::Method;
use serde_json::json;

async fn room_with(alice: &Client, bob: &Client, preset: &str) -> String {
    let room = alice
        .post("createRoom", json!({ "preset": preset, "invite": [bob.user_id] }))
        .await
        .ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.post(&format!("join/{room}"), json!({})).await.ok();
    room
}

async fn send(c: &Client, room: &str, txn: &str, body: &str) -> String {
    c.put(
        &format!("rooms/{room}/send/m.room.message/{txn}"),
        json!({ "msgtype": "m.text", "body": body }),
    )
    .await
    .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A redaction sent through /send or /state is checked like one sent through /redact.
async fn redactions_however_sent(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let bob = Client::register(&server, "bob", "pw").await;
    let room = room_with(&alice, &bob, "public_chat").await;
    let alices = send(&alice, &room, "a", "moderator's words").await;
    let bobs = send(&bob, &room, "b", "bob's words").await;
    bob.put(
        &format!("rooms/{room}/send/m.room.redaction/r1"),
        json!({ "redacts": alices }),
    )
    .await
    .err(403, "M_FORBIDDEN");
    bob.put(
        &format!("rooms/{room}/state/m.room.redaction/x"),
        json!({ "redacts": alices }),
    )
    .await
    .err(400, "M_INVALID_PARAM");
    bob.put(&format!("rooms/{room}/send/m.room.redaction/r2"), json!({}))
        .await
        .err(400, "M_INVALID_PARAM");
    assert_eq!(
        alice.get(&format!("rooms/{room}/event/{alices}")).await.ok()["content"]["body"],
        "moderator's words"
    );
    // One's own event, through /send: accepted, and the original is redacted in the store.
    let redaction = bob
        .put(
            &format!("rooms/{room}/send/m.room.redaction/r3"),
            json!({ "redacts": bobs, "reason": "typo" }),
        )
        .await
        .ok()["event_id"]
        .clone();
    let redacted = alice.get(&format!("rooms/{room}/event/{bobs}")).await.ok();
    assert_eq!(redacted["content"], json!({}));
    // Spec: unsigned.redacted_because is the redaction event itself.
    let because = &redacted["unsigned"]["redacted_because"];
    assert_eq!(because["event_id"], redaction);
    assert_eq!(because["type"], "m.room.redaction");
    assert_eq!(because["sender"], "@bob:localhost");
    assert_eq!(because["content"]["reason"], "typo");
    assert!(because["origin_server_ts"].is_i64(), "{because}");
}

async fn alias_deletion_needs_rights(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let mallory = Client::register(&server, "mallory", "pw").await;
    alice
        .post(
            "createRoom",
            json!({ "preset": "public_chat", "room_alias_name": "general" }),
        )
        .await
        .ok();
    mallory
        .delete("directory/room/%23general:localhost", json!({}))
        .await
        .err(403, "M_FORBIDDEN");
    assert!(alice.get("directory/room/%23general:localhost").await.ok()["room_id"].is_string());
    alice
        .delete("directory/room/%23general:localhost", json!({}))
        .await
        .ok();
    alice
        .get("directory/room/%23general:localhost")
        .await
        .err(404, "M_NOT_FOUND");
}

/// Invited (or banned) users who never joined see no history; users who left see it up to
/// their leave, without later edits or state.
async fn history_for_those_not_joined(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let bob = Client::register(&server, "bob", "pw").await;
    let mallory = Client::register(&server, "mallory", "pw").await;
    let room = room_with(&alice, &bob, "private_chat").await;
    let secret = send(&alice, &room, "s", "the secret plan").await;

    alice
        .post(&format!("rooms/{room}/invite"), json!({ "user_id": mallory.user_id }))
        .await
        .ok();
    mallory
        .get(&format!("rooms/{room}/messages?dir=b&limit=100"))
        .await
        .err(403, "M_FORBIDDEN");
    mallory
        .get(&format!("rooms/{room}/context/{secret}"))
        .await
        .err(403, "M_FORBIDDEN");
    let since = next(&mallory.get("sync").await.ok());
    mallory.post(&format!("rooms/{room}/leave"), json!({})).await.ok();
    let s = mallory.get(&format!("sync?since={since}")).await.ok();
    let timeline = s["rooms"]["leave"][&room]["timeline"]["events"].as_array().unwrap();
    assert!(
        timeline.iter().all(|e| e["type"] == "m.room.member"),
        "a rejected invite shows no room events: {timeline:?}"
    );

    // Bob is kicked; later edits and state stay hidden from him.
    alice
        .post(&format!("rooms/{room}/kick"), json!({ "user_id": bob.user_id }))
        .await
        .ok();
    alice
        .put(&format!("rooms/{room}/send/m.room.message/e"), json!({ "msgtype": "m.text", "body": "* new plan", "m.new_content": { "msgtype": "m.text", "body": "new plan" },
            "m.relates_to": { "rel_type": "m.replace", "event_id": secret } }))
        .await
        .ok();
    alice
        .put(
            &format!("rooms/{room}/state/m.room.topic/"),
            json!({ "topic": "after bob" }),
        )
        .await
        .ok();
    let page = bob.get(&format!("rooms/{room}/messages?dir=b&limit=100")).await.ok();
    let old = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == secret.as_str())
        .unwrap();
    assert!(
        old["unsigned"].get("m.relations").is_none(),
        "an edit made after bob left reached him: {old}"
    );
    assert!(!page.to_string().contains("new plan"));
    let ctx = bob.get(&format!("rooms/{room}/context/{secret}")).await.ok();
    assert!(
        !ctx.to_string().contains("after bob"),
        "state set after bob left reached him"
    );
}

/// Key JSON with a hostile `unsigned` or `signatures` cannot break key queries.
async fn hostile_key_json(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let mut mallory = Device::new(Client::register(&server, "mallory", "pw").await);
    let alice = Client::register(&server, "alice", "pw").await;
    let mut body = mallory.generate_keys(1, false);
    body["device_keys"]["unsigned"] = json!("not an object");
    mallory.client.post("keys/upload", body).await.ok();
    mallory
        .client
        .put(
            &format!("devices/{}", mallory.client.device_id),
            json!({ "display_name": "evil" }),
        )
        .await
        .ok();
    let q = alice
        .post("keys/query", json!({ "device_keys": { "@mallory:localhost": [] } }))
        .await
        .ok();
    assert_eq!(
        q["device_keys"]["@mallory:localhost"][&mallory.client.device_id]["unsigned"]["device_display_name"],
        "evil"
    );
    let master = json!({ "user_id": "@mallory:localhost", "usage": ["master"], "keys": { "ed25519:AAAA": "AAAA" }, "signatures": 1 });
    mallory
        .client
        .post("keys/device_signing/upload", json!({ "master_key": master }))
        .await
        .err(400, "M_INVALID_PARAM");
}

/// The one-time key count is reported as 0, not left out, once every key is claimed.
async fn zero_key_counts_are_reported(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let mut bob = Device::new(Client::register(&server, "bob", "pw").await);
    let alice = Device::new(Client::register(&server, "alice", "pw").await);
    bob.upload_keys(1, false).await;
    alice.claim("@bob:localhost", &bob.client.device_id).await.unwrap();
    let s = bob.client.get("sync").await.ok();
    assert_eq!(s["device_one_time_keys_count"]["signed_curve25519"], 0, "{s}");
}

/// A profile change rewrites member events, but sync must not resend the rooms as joined anew.
async fn profile_change_is_not_a_new_join(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let bob = Client::register(&server, "bob", "pw").await;
    let room = room_with(&alice, &bob, "public_chat").await;
    for i in 0..15 {
        send(&alice, &room, &format!("m{i}"), "filler").await;
    }
    let since = next(&alice.get("sync").await.ok());
    alice
        .put(
            "profile/@alice:localhost/displayname",
            json!({ "displayname": "Alice II" }),
        )
        .await
        .ok();
    let s = alice.get(&format!("sync?since={since}")).await.ok();
    let r = &s["rooms"]["join"][&room];
    assert_eq!(r["timeline"]["limited"], false, "{r}");
    assert_eq!(
        r["timeline"]["events"].as_array().unwrap().len(),
        1,
        "only the new member event: {r}"
    );
    assert!(r["state"]["events"].as_array().unwrap().is_empty());
}

both_backends!(
    redactions_however_sent,
    alias_deletion_needs_rights,
    history_for_those_not_joined,
    hostile_key_json,
    zero_key_counts_are_reported,
    profile_change_is_not_a_new_join,
);

/// Password checks in user-interactive auth are rate limited like logins.
#[tokio::test]
async fn uia_password_guessing_is_limited() {
    let inst = Instance::with_config(
        Backend::Sqlite,
        "[registration]\nopen = true\n[rate_limits]\nlogin = { per_second = 0.01, burst = 3.0 }\n",
    )
    .await;
    let server = inst.start().await;
    let bob = Client::register(&server, "bob", "right").await;
    let mut last = None;
    for _ in 0..5 {
        last = Some(
            bob.with_password_uia(
                Method::POST,
                "account/password",
                json!({ "new_password": "x" }),
                "guess",
            )
            .await,
        );
    }
    last.unwrap().err(429, "M_LIMIT_EXCEEDED");
}
