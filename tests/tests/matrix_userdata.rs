//! Black-box tests of account data (m.direct, tags), receipts and read markers, unread
//! counts, typing and presence, and of sync's long-poll waking for them (and only for what
//! concerns the user). On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use estuary_tests::matrix::{Client, next_batch as next};
use estuary_tests::{Backend, Instance, Running, both_backends, open_server};
use serde_json::{Value, json};

async fn shared_room(alice: &Client, bob: &Client) -> String {
    let room = alice.post("createRoom", json!({ "preset": "public_chat" })).await.ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    bob.post(&format!("join/{room}"), json!({})).await.ok();
    room
}

/// A fresh server (the instance keeps its data directory alive) with alice and bob joined to
/// one public room of alice's.
async fn alice_and_bob_in_a_room(backend: Backend) -> (Instance, Running, Client, Client, String) {
    let (inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let bob = Client::register(&server, "bob", "pw").await;
    let room = shared_room(&alice, &bob).await;
    (inst, server, alice, bob, room)
}

async fn send(c: &Client, room: &str, txn: &str) -> String {
    c.put(
        &format!("rooms/{room}/send/m.room.message/{txn}"),
        json!({ "msgtype": "m.text", "body": txn }),
    )
    .await
    .ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn account_data_and_tags(backend: Backend) {
    let (_inst, _server, alice, bob, room) = alice_and_bob_in_a_room(backend).await;
    let since = next(&alice.get("sync").await.ok());

    let direct = json!({ "@bob:localhost": [room] });
    alice
        .put("user/@alice:localhost/account_data/m.direct", direct.clone())
        .await
        .ok();
    assert_eq!(
        alice.get("user/@alice:localhost/account_data/m.direct").await.ok(),
        direct
    );
    alice
        .put(
            &format!("user/@alice:localhost/rooms/{room}/account_data/org.example.colour"),
            json!({ "c": "blue" }),
        )
        .await
        .ok();
    alice
        .put(
            &format!("user/@alice:localhost/rooms/{room}/tags/m.favourite"),
            json!({ "order": 0.5 }),
        )
        .await
        .ok();
    alice
        .put(&format!("user/@alice:localhost/rooms/{room}/tags/u.work"), json!({}))
        .await
        .ok();
    let tags = alice
        .get(&format!("user/@alice:localhost/rooms/{room}/tags"))
        .await
        .ok();
    assert_eq!(tags["tags"]["m.favourite"]["order"], 0.5);
    assert!(tags["tags"].get("u.work").is_some());
    alice
        .delete(&format!("user/@alice:localhost/rooms/{room}/tags/u.work"), json!({}))
        .await
        .ok();

    let s = alice.get(&format!("sync?since={since}")).await.ok();
    let global = s["account_data"]["events"].as_array().unwrap();
    assert!(
        global.iter().any(|e| e["type"] == "m.direct" && e["content"] == direct),
        "{s}"
    );
    let room_data = s["rooms"]["join"][&room]["account_data"]["events"].as_array().unwrap();
    assert!(room_data.iter().any(|e| e["type"] == "org.example.colour"), "{s}");
    let tag_event = room_data.iter().find(|e| e["type"] == "m.tag").unwrap();
    assert!(
        tag_event["content"]["tags"].get("m.favourite").is_some()
            && tag_event["content"]["tags"].get("u.work").is_none(),
        "{tag_event}"
    );
    // Delivered once.
    let again = alice.get(&format!("sync?since={}&timeout=0", next(&s))).await.ok();
    assert!(again["account_data"]["events"].as_array().unwrap().is_empty());
    // An initial sync has it all.
    let initial = alice.get("sync").await.ok();
    assert!(
        initial["account_data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.direct")
    );

    // Other users' data is off limits; bad content is refused.
    bob.get("user/@alice:localhost/account_data/m.direct")
        .await
        .err(403, "M_FORBIDDEN");
    bob.put("user/@alice:localhost/account_data/m.direct", json!({}))
        .await
        .err(403, "M_FORBIDDEN");
    alice
        .get("user/@alice:localhost/account_data/nothing.here")
        .await
        .err(404, "M_NOT_FOUND");
    alice
        .put("user/@alice:localhost/account_data/m.fully_read", json!({}))
        .await
        .err(400, "M_BAD_JSON");
}

async fn receipts_markers_and_unread_counts(backend: Backend) {
    let (_inst, server, alice, bob, room) = alice_and_bob_in_a_room(backend).await;
    let since_a = next(&alice.get("sync").await.ok());
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(send(&alice, &room, &format!("m{i}")).await);
    }
    let s = bob.get("sync").await.ok();
    assert_eq!(
        s["rooms"]["join"][&room]["unread_notifications"]["notification_count"], 3,
        "{s}"
    );
    let since_b = next(&s);

    // A public receipt on the second message: alice sees it, the count drops to 1.
    bob.post(&format!("rooms/{room}/receipt/m.read/{}", ids[1]), json!({}))
        .await
        .ok();
    let s = alice.get(&format!("sync?since={since_a}")).await.ok();
    let eph = s["rooms"]["join"][&room]["ephemeral"]["events"].as_array().unwrap();
    let receipt = eph
        .iter()
        .find(|e| e["type"] == "m.receipt")
        .unwrap_or_else(|| panic!("{s}"));
    assert!(
        receipt["content"][&ids[1]]["m.read"]["@bob:localhost"]["ts"].is_i64(),
        "{receipt}"
    );
    let s = bob.get(&format!("sync?since={since_b}")).await.ok();
    assert_eq!(
        s["rooms"]["join"][&room]["unread_notifications"]["notification_count"],
        1
    );
    let since_b = next(&s);
    let since_a = next(&alice.get(&format!("sync?since={since_a}&timeout=0")).await.ok());

    // A private receipt (through read_markers) is shown to bob only, and sets the count to 0.
    bob.post(
        &format!("rooms/{room}/read_markers"),
        json!({ "m.fully_read": ids[2], "m.read.private": ids[2] }),
    )
    .await
    .ok();
    let s = bob.get(&format!("sync?since={since_b}")).await.ok();
    let r = &s["rooms"]["join"][&room];
    assert_eq!(r["unread_notifications"]["notification_count"], 0);
    assert!(
        r["ephemeral"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["content"][&ids[2]]["m.read.private"]["@bob:localhost"].is_object()),
        "{r}"
    );
    assert!(
        r["account_data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.fully_read" && e["content"]["event_id"] == ids[2].as_str()),
        "{r}"
    );
    let s = alice.get(&format!("sync?since={since_a}&timeout=0")).await.ok();
    let leaked = s["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .is_some_and(|e| e.iter().any(|x| x.to_string().contains("m.read.private")));
    assert!(!leaked, "a private receipt reached another user: {s}");

    bob.post(&format!("rooms/{room}/receipt/m.read/$nope"), json!({}))
        .await
        .err(404, "M_NOT_FOUND");
    let stranger = Client::register(&server, "zed", "pw").await;
    stranger
        .post(&format!("rooms/{room}/receipt/m.read/{}", ids[0]), json!({}))
        .await
        .err(403, "M_FORBIDDEN");

    // Counts carry on from sync to sync (each event's push rules run once), and a redaction
    // takes its event back out of them.
    let count = |s: &Value| s["rooms"]["join"][&room]["unread_notifications"]["notification_count"].clone();
    let mut since_b = next(&sync_since(&bob, &since_b).await);
    for i in 3..5 {
        ids.push(send(&alice, &room, &format!("m{i}")).await);
    }
    let s = sync_since(&bob, &since_b).await;
    assert_eq!(count(&s), 2, "{s}");
    since_b = next(&s);
    ids.push(send(&alice, &room, "m5").await);
    let s = sync_since(&bob, &since_b).await;
    assert_eq!(count(&s), 3, "{s}");
    since_b = next(&s);
    alice
        .put(&format!("rooms/{room}/redact/{}/r1", ids[4]), json!({}))
        .await
        .ok();
    let s = sync_since(&bob, &since_b).await;
    assert_eq!(count(&s), 2, "{s}");
    assert_eq!(count(&bob.get("sync").await.ok()), 2, "an initial sync counts the same");

    // Counts follow the push rules: under a rule that matches everything and does nothing, no
    // unread event counts; without it they all count again (shown with the room's next event).
    since_b = next(&s);
    bob.put(
        "pushrules/global/override/mute-all",
        json!({ "actions": [], "conditions": [] }),
    )
    .await
    .ok();
    ids.push(send(&alice, &room, "m6").await);
    let s = sync_since(&bob, &since_b).await;
    assert_eq!(count(&s), 0, "{s}");
    since_b = next(&s);
    bob.delete("pushrules/global/override/mute-all", json!({})).await.ok();
    ids.push(send(&alice, &room, "m7").await);
    let s = sync_since(&bob, &since_b).await;
    assert_eq!(count(&s), 4, "{s}");
}

async fn sync_since(c: &Client, since: &str) -> Value {
    c.get(&format!("sync?since={since}&timeout=0")).await.ok()
}

async fn typing_and_presence(backend: Backend) {
    let (_inst, server, alice, bob, room) = alice_and_bob_in_a_room(backend).await;
    let since = next(&alice.get("sync").await.ok());

    bob.put(
        &format!("rooms/{room}/typing/@bob:localhost"),
        json!({ "typing": true, "timeout": 1500 }),
    )
    .await
    .ok();
    let s = alice.get(&format!("sync?since={since}&timeout=5000")).await.ok();
    let typing = s["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.typing")
        .cloned();
    assert_eq!(typing.unwrap()["content"]["user_ids"], json!(["@bob:localhost"]));
    // The typing notification expires by itself; the long-poll wakes for it.
    let started = Instant::now();
    let s = alice.get(&format!("sync?since={}&timeout=10000", next(&s))).await.ok();
    let typing = s["rooms"]["join"][&room]["ephemeral"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "m.typing")
        .cloned();
    assert_eq!(typing.unwrap()["content"]["user_ids"], json!([]), "{s}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "expiry should wake the long-poll"
    );
    alice
        .put(
            &format!("rooms/{room}/typing/@bob:localhost"),
            json!({ "typing": true, "timeout": 1000 }),
        )
        .await
        .err(403, "M_FORBIDDEN");

    // Presence: set by bob, visible to alice (they share a room), not to a stranger.
    bob.put(
        "presence/@bob:localhost/status",
        json!({ "presence": "unavailable", "status_msg": "lunch" }),
    )
    .await
    .ok();
    let p = alice.get("presence/@bob:localhost/status").await.ok();
    assert_eq!(
        (p["presence"].as_str(), p["status_msg"].as_str()),
        (Some("unavailable"), Some("lunch"))
    );
    let s = alice.get(&format!("sync?since={}&timeout=0", next(&s))).await.ok();
    let seen = s["presence"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["sender"] == "@bob:localhost" && e["content"]["presence"] == "unavailable");
    assert!(seen, "{s}");
    let stranger = Client::register(&server, "zed", "pw").await;
    stranger
        .get("presence/@bob:localhost/status")
        .await
        .err(403, "M_FORBIDDEN");
    alice
        .put("presence/@bob:localhost/status", json!({ "presence": "online" }))
        .await
        .err(403, "M_FORBIDDEN");
}

/// A long-poll is not woken by what does not concern the user (activity in a room they are
/// not in), and is woken at once by what does.
async fn long_poll_only_wakes_for_the_user(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let bob = Client::register(&server, "bob", "pw").await;
    let carol = Client::register(&server, "carol", "pw").await;
    let room = shared_room(&alice, &bob).await;
    let elsewhere = carol.post("createRoom", json!({ "preset": "public_chat" })).await.ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let since = next(&alice.get("sync").await.ok());

    let poll = {
        let http = alice.http.clone();
        let url = format!("{}/_matrix/client/v3/sync?since={since}&timeout=6000", alice.base);
        let token = alice.token.clone().unwrap();
        tokio::spawn(async move {
            let started = Instant::now();
            let v: Value = http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (started.elapsed(), v)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..5 {
        send(&carol, &elsewhere, &format!("noise{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!poll.is_finished(), "activity in another room woke alice's long-poll");
    let id = send(&bob, &room, "for-alice").await;
    let (elapsed, v) = poll.await.unwrap();
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(
        v["rooms"]["join"][&room]["timeline"]["events"][0]["event_id"],
        id.as_str(),
        "{v}"
    );
    assert!(v["rooms"]["join"].get(&elsewhere).is_none());
}

/// `m.ignored_user_list`: an ignored user's messages are not sent (sync, /messages, /event),
/// their state events are, their invites are dropped; un-ignoring lets new messages through.
async fn ignored_users_are_hidden(backend: Backend) {
    let (_inst, _server, alice, bob, room) = alice_and_bob_in_a_room(backend).await;
    let since = next(&alice.get("sync").await.ok());
    alice
        .put(
            "user/@alice:localhost/account_data/m.ignored_user_list",
            json!({ "ignored_users": { "@bob:localhost": {} } }),
        )
        .await
        .ok();
    let hidden = send(&bob, &room, "from-ignored-bob").await;
    bob.put("profile/@bob:localhost/displayname", json!({ "displayname": "Bobby" }))
        .await
        .ok();
    let mine = send(&alice, &room, "from-alice").await;
    let s = alice.get(&format!("sync?since={since}")).await.ok();
    let timeline: Vec<&str> = s["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["event_id"].as_str())
        .collect();
    assert!(
        !timeline.contains(&hidden.as_str()),
        "an ignored user's message reached sync: {timeline:?}"
    );
    assert!(timeline.contains(&mine.as_str()), "{timeline:?}");
    let renames: Vec<&Value> = s["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member" && e["content"]["displayname"] == "Bobby")
        .collect();
    assert_eq!(renames.len(), 1, "state events of ignored users stay: {s}");
    let history = alice.get(&format!("rooms/{room}/messages?dir=b&limit=50")).await.ok();
    assert!(!history.to_string().contains("from-ignored-bob"), "{history}");
    assert!(history.to_string().contains("from-alice"));
    alice
        .get(&format!("rooms/{room}/event/{hidden}"))
        .await
        .err(404, "M_NOT_FOUND");
    // bob still sees his own message.
    bob.get(&format!("rooms/{room}/event/{hidden}")).await.ok();

    // An invite from an ignored user is dropped.
    let since = next(&alice.get(&format!("sync?since={}", next(&s))).await.ok());
    let other = bob
        .post("createRoom", json!({ "invite": ["@alice:localhost"] }))
        .await
        .ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let s = alice.get(&format!("sync?since={since}")).await.ok();
    assert!(
        s["rooms"]["invite"].get(&other).is_none(),
        "an invite from an ignored user: {s}"
    );

    // Un-ignored: new messages come through.
    alice
        .put(
            "user/@alice:localhost/account_data/m.ignored_user_list",
            json!({ "ignored_users": {} }),
        )
        .await
        .ok();
    let seen = send(&bob, &room, "after-unignore").await;
    let s = alice.get(&format!("sync?since={}", next(&s))).await.ok();
    assert!(s.to_string().contains(&seen), "{s}");
}

/// What was stored before a restart reaches a sync that began before it: a message, a receipt,
/// account data and a to-device message (sync skips what did not move, knowing from the store
/// which room, user and device holds what). Once acknowledged, the to-device message is not
/// delivered again, and a new one is.
async fn sync_across_a_restart(backend: Backend) {
    let (inst, server, alice, bob, room) = alice_and_bob_in_a_room(backend).await;
    let since = next(&bob.get("sync").await.ok());
    let message = send(&alice, &room, "before-restart").await;
    alice
        .post(&format!("rooms/{room}/receipt/m.read/{message}"), json!({}))
        .await
        .ok();
    bob.put("user/@bob:localhost/account_data/org.example.kept", json!({ "n": 1 }))
        .await
        .ok();
    let to_bob = |n: i64| json!({ "messages": { "@bob:localhost": { &bob.device_id: { "n": n } } } });
    alice.put("sendToDevice/org.example.ping/t1", to_bob(1)).await.ok();
    assert!(server.terminate().await.success());

    let server = inst.start().await;
    let s = bob.get(&format!("sync?since={since}&timeout=0")).await.ok();
    let r = &s["rooms"]["join"][&room];
    assert!(r["timeline"].to_string().contains(&message), "{s}");
    assert!(
        r["ephemeral"]["events"][0]["content"][&message]["m.read"]["@alice:localhost"].is_object(),
        "{s}"
    );
    assert!(
        s["account_data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "org.example.kept" && e["content"]["n"] == 1),
        "{s}"
    );
    let pings = |s: &Value| -> Vec<Value> {
        s["to_device"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "org.example.ping")
            .map(|e| e["content"]["n"].clone())
            .collect()
    };
    assert_eq!(pings(&s), [json!(1)], "{s}");

    // Acknowledged: not again; a new one comes, once.
    let s = bob.get(&format!("sync?since={}&timeout=0", next(&s))).await.ok();
    assert!(pings(&s).is_empty(), "{s}");
    alice.put("sendToDevice/org.example.ping/t2", to_bob(2)).await.ok();
    let s = bob.get(&format!("sync?since={}&timeout=5000", next(&s))).await.ok();
    assert_eq!(pings(&s), [json!(2)], "{s}");
    let s = bob.get(&format!("sync?since={}&timeout=0", next(&s))).await.ok();
    assert!(pings(&s).is_empty(), "{s}");
    assert!(server.terminate().await.success());
}

both_backends!(
    ignored_users_are_hidden,
    sync_across_a_restart,
    account_data_and_tags,
    receipts_markers_and_unread_counts,
    typing_and_presence,
    long_poll_only_wakes_for_the_user
);
