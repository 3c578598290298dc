//! Black-box tests of rooms: creation (presets, encryption by default), events as real signed
//! PDUs, sending with idempotent transaction IDs, state, membership, redaction, sync and
//! history. On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use estuary_tests::matrix::Client;
use estuary_tests::{Backend, Instance, OPEN_CONFIG, TestDb, both_backends, open_server};
use serde_json::{Value, json};

/// The event IDs of a JSON array of events, in order.
fn event_ids(events: &Value) -> Vec<String> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

async fn create_room(c: &Client, body: Value) -> String {
    c.post("createRoom", body).await.ok()["room_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn send_text(c: &Client, room: &str, txn: &str, text: &str) -> String {
    let path = format!("rooms/{room}/send/m.room.message/{txn}");
    c.put(&path, json!({ "msgtype": "m.text", "body": text })).await.ok()["event_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn state(c: &Client, room: &str) -> Vec<Value> {
    c.get(&format!("rooms/{room}/state"))
        .await
        .ok()
        .as_array()
        .unwrap()
        .clone()
}

fn has_state(state: &[Value], kind: &str) -> Option<Value> {
    state.iter().find(|e| e["type"] == kind).map(|e| e["content"].clone())
}

async fn create_presets_and_encryption(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let bob = Client::register(&server, "bob", "pw").await;

    // Private rooms and DMs are encrypted by default; public rooms are not.
    let private = create_room(
        &alice,
        json!({ "preset": "private_chat", "name": "Secret", "topic": "shh" }),
    )
    .await;
    let s = state(&alice, &private).await;
    assert_eq!(
        has_state(&s, "m.room.encryption"),
        Some(json!({ "algorithm": "m.megolm.v1.aes-sha2" }))
    );
    assert_eq!(has_state(&s, "m.room.join_rules").unwrap()["join_rule"], "invite");
    assert_eq!(has_state(&s, "m.room.name").unwrap()["name"], "Secret");
    assert_eq!(has_state(&s, "m.room.topic").unwrap()["topic"], "shh");
    assert_eq!(has_state(&s, "m.room.create").unwrap()["room_version"], "11");
    let dm = create_room(
        &alice,
        json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [bob.user_id] }),
    )
    .await;
    let s = state(&alice, &dm).await;
    assert!(has_state(&s, "m.room.encryption").is_some());
    assert_eq!(
        has_state(&s, "m.room.power_levels").unwrap()["users"][&bob.user_id],
        100,
        "trusted_private_chat: invitees are admins"
    );
    let invite = s
        .iter()
        .find(|e| e["type"] == "m.room.member" && e["state_key"] == bob.user_id.as_str())
        .unwrap();
    assert_eq!(invite["content"]["membership"], "invite");
    assert_eq!(invite["content"]["is_direct"], true);
    let public = create_room(&alice, json!({ "preset": "public_chat", "room_alias_name": "lobby" })).await;
    let s = state(&alice, &public).await;
    assert!(has_state(&s, "m.room.encryption").is_none());
    assert_eq!(has_state(&s, "m.room.join_rules").unwrap()["join_rule"], "public");
    assert_eq!(
        has_state(&s, "m.room.canonical_alias").unwrap()["alias"],
        "#lobby:localhost"
    );
    assert_eq!(
        alice.get("directory/room/%23lobby:localhost").await.ok()["room_id"],
        public.as_str()
    );
    alice
        .post("createRoom", json!({ "room_alias_name": "lobby" }))
        .await
        .err(400, "M_ROOM_IN_USE");

    // initial_state and power_level_content_override win over the preset.
    let custom = create_room(
        &alice,
        json!({ "preset": "private_chat", "room_version": "10",
                "initial_state": [{ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "joined" } }],
                "power_level_content_override": { "events_default": 10 } }),
    )
    .await;
    let s = state(&alice, &custom).await;
    assert_eq!(
        has_state(&s, "m.room.history_visibility").unwrap()["history_visibility"],
        "joined"
    );
    assert_eq!(has_state(&s, "m.room.power_levels").unwrap()["events_default"], 10);
    let create = has_state(&s, "m.room.create").unwrap();
    assert_eq!(
        (create["room_version"].as_str(), create["creator"].as_str()),
        (Some("10"), Some(alice.user_id.as_str()))
    );
    // An override that gives the room to someone else still builds the whole room (name,
    // topic, invite), and ends with exactly the levels asked for.
    let handed_over = create_room(
        &alice,
        json!({ "name": "Handed over", "topic": "t", "invite": ["@bob:localhost"],
                "power_level_content_override": { "users": { "@bob:localhost": 100 } } }),
    )
    .await;
    let s = state(&alice, &handed_over).await;
    assert_eq!(has_state(&s, "m.room.name").unwrap()["name"], "Handed over");
    assert_eq!(has_state(&s, "m.room.topic").unwrap()["topic"], "t");
    assert_eq!(
        has_state(&s, "m.room.power_levels").unwrap()["users"],
        json!({ "@bob:localhost": 100 })
    );
    alice
        .post("createRoom", json!({ "room_version": "9" }))
        .await
        .err(400, "M_UNSUPPORTED_ROOM_VERSION");
    alice
        .post("createRoom", json!({ "preset": "nonsense" }))
        .await
        .err(400, "M_INVALID_PARAM");
}

async fn encryption_default_can_be_turned_off(backend: Backend) {
    let inst = Instance::with_config(
        backend,
        &format!("{OPEN_CONFIG}[matrix]\nencrypt_private_rooms = false\n"),
    )
    .await;
    let server = inst.start().await;
    let alice = Client::register(&server, "alice", "pw").await;
    let room = create_room(&alice, json!({ "preset": "private_chat" })).await;
    assert!(has_state(&state(&alice, &room).await, "m.room.encryption").is_none());
}

/// Every event is a PDU: hashed, signed, its ID the reference hash of the redacted form,
/// chained by prev_events with growing depth, and carrying auth_events.
async fn events_are_signed_pdus(backend: Backend) {
    let (inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let room = create_room(&alice, json!({ "preset": "public_chat" })).await;
    let id1 = send_text(&alice, &room, "t1", "one").await;
    let id2 = send_text(&alice, &room, "t2", "two").await;
    let pdus = read_pdus(&inst.db, &room).await;
    assert!(
        pdus.len() >= 8,
        "create, member, power levels, join rules, ... and two messages: {}",
        pdus.len()
    );
    let rules = ruma::RoomVersionId::V11.rules().unwrap();
    let mut prev_depth = 0;
    for (i, (event_id, json)) in pdus.iter().enumerate() {
        let object: ruma::CanonicalJsonObject = serde_json::from_str(json).unwrap();
        let expected = format!("${}", ruma::signatures::reference_hash(&object, &rules).unwrap());
        assert_eq!(event_id, &expected, "event ID is the reference hash");
        let v: Value = serde_json::from_str(json).unwrap();
        assert!(v["hashes"]["sha256"].is_string(), "{v}");
        assert!(
            v["signatures"]["localhost"]
                .as_object()
                .is_some_and(|s| s.keys().any(|k| k.starts_with("ed25519:"))),
            "{v}"
        );
        let depth = v["depth"].as_i64().unwrap();
        assert!(depth > prev_depth, "depth grows: {depth} after {prev_depth}");
        prev_depth = depth;
        if i == 0 {
            assert_eq!(v["type"], "m.room.create");
            assert_eq!(v["prev_events"], json!([]));
        } else {
            assert_eq!(
                v["prev_events"],
                json!([pdus[i - 1].0]),
                "linear history: each event follows the last"
            );
            assert!(!v["auth_events"].as_array().unwrap().is_empty());
        }
    }
    assert_eq!(pdus[pdus.len() - 2].0, id1);
    assert_eq!(pdus[pdus.len() - 1].0, id2);
}

async fn read_pdus(db: &TestDb, room: &str) -> Vec<(String, String)> {
    use sqlx::Connection;
    const SQL: &str = "SELECT event_id, pdu FROM events WHERE room_id = $1 ORDER BY stream_ordering";
    match db.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query_as(SQL).bind(room).fetch_all(&mut c).await.unwrap()
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query_as(SQL).bind(room).fetch_all(&mut c).await.unwrap()
        }
    }
}

async fn send_is_idempotent_per_device(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let room = create_room(&alice, json!({ "preset": "public_chat" })).await;
    let a = send_text(&alice, &room, "same-txn", "hello").await;
    let b = send_text(&alice, &room, "same-txn", "hello").await;
    assert_eq!(a, b, "a retried transaction returns the first event");
    let other_device = Client::login(&server, "alice", "pw").await;
    let c = send_text(&other_device, &room, "same-txn", "hello").await;
    assert_ne!(a, c, "transaction IDs are per device");
    let msgs = alice.get(&format!("rooms/{room}/messages?dir=b&limit=50")).await.ok();
    let texts = msgs["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .count();
    assert_eq!(texts, 2);
}

async fn membership_and_power(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let bob = Client::register(&server, "bob", "pw").await;
    let carol = Client::register(&server, "carol", "pw").await;
    bob.put("profile/@bob:localhost/displayname", json!({ "displayname": "Bobby" }))
        .await
        .ok();

    let room = create_room(&alice, json!({ "preset": "private_chat" })).await;
    // Invite-only: bob cannot just join; once invited he can.
    bob.post(&format!("rooms/{room}/join"), json!({}))
        .await
        .err(403, "M_FORBIDDEN");
    carol
        .post(&format!("rooms/{room}/invite"), json!({ "user_id": bob.user_id }))
        .await
        .err(403, "M_FORBIDDEN");
    alice
        .post(&format!("rooms/{room}/invite"), json!({ "user_id": bob.user_id }))
        .await
        .ok();
    alice
        .post(
            &format!("rooms/{room}/invite"),
            json!({ "user_id": "@ghost:localhost" }),
        )
        .await
        .err(404, "M_NOT_FOUND");
    bob.post(&format!("join/{room}"), json!({})).await.ok();
    let members = alice.get(&format!("rooms/{room}/joined_members")).await.ok();
    assert_eq!(
        members["joined"]["@bob:localhost"]["display_name"], "Bobby",
        "{members}"
    );
    assert_eq!(bob.get("joined_rooms").await.ok()["joined_rooms"], json!([room]));

    // Power levels: bob (0) may talk but not rename (state_default 50) or kick (50).
    send_text(&bob, &room, "b1", "hi").await;
    bob.put(&format!("rooms/{room}/state/m.room.name/"), json!({ "name": "mine" }))
        .await
        .err(403, "M_FORBIDDEN");
    bob.post(&format!("rooms/{room}/kick"), json!({ "user_id": alice.user_id }))
        .await
        .err(403, "M_FORBIDDEN");
    alice
        .put(
            &format!("rooms/{room}/state/m.room.name/"),
            json!({ "name": "Renamed" }),
        )
        .await
        .ok();
    assert_eq!(
        bob.get(&format!("rooms/{room}/state/m.room.name/")).await.ok()["name"],
        "Renamed"
    );
    bob.get(&format!("rooms/{room}/state/m.room.nothing/"))
        .await
        .err(404, "M_NOT_FOUND");
    carol.get(&format!("rooms/{room}/state")).await.err(403, "M_FORBIDDEN");
    carol
        .put(
            &format!("rooms/{room}/send/m.room.message/x"),
            json!({ "body": "let me in" }),
        )
        .await
        .err(403, "M_FORBIDDEN");

    // Kick, ban, unban.
    alice
        .post(
            &format!("rooms/{room}/kick"),
            json!({ "user_id": bob.user_id, "reason": "bye" }),
        )
        .await
        .ok();
    // Spec: a user who left (here, was kicked) sees the state as it was when they left.
    alice
        .put(
            &format!("rooms/{room}/state/m.room.name/"),
            json!({ "name": "After bob" }),
        )
        .await
        .ok();
    let seen = bob.get(&format!("rooms/{room}/state")).await.ok();
    let seen = seen.as_array().expect("state is a list");
    let name = seen.iter().find(|e| e["type"] == "m.room.name").expect("a name");
    assert_eq!(name["content"]["name"], "Renamed", "{seen:?}");
    let own = seen
        .iter()
        .find(|e| e["state_key"] == bob.user_id.as_str())
        .expect("bob's member event");
    assert_eq!(own["content"]["membership"], "leave");
    assert_eq!(
        bob.get(&format!("rooms/{room}/state/m.room.name/")).await.ok()["name"],
        "Renamed"
    );
    let members = bob.get(&format!("rooms/{room}/members?membership=leave")).await.ok();
    assert_eq!(members["chunk"].as_array().map(Vec::len), Some(1), "{members}");
    assert_eq!(
        alice.get(&format!("rooms/{room}/state/m.room.name/")).await.ok()["name"],
        "After bob"
    );
    alice
        .post(&format!("rooms/{room}/ban"), json!({ "user_id": bob.user_id }))
        .await
        .ok();
    alice
        .post(&format!("rooms/{room}/invite"), json!({ "user_id": bob.user_id }))
        .await
        .err(403, "M_FORBIDDEN");
    alice
        .post(&format!("rooms/{room}/unban"), json!({ "user_id": bob.user_id }))
        .await
        .ok();
    alice
        .post(&format!("rooms/{room}/invite"), json!({ "user_id": bob.user_id }))
        .await
        .ok();
    bob.post(&format!("rooms/{room}/join"), json!({})).await.ok();
    alice
        .put(
            &format!("rooms/{room}/send/m.room.message/before-forget"),
            json!({ "msgtype": "m.text", "body": "seen before leaving" }),
        )
        .await
        .ok();
    let since = bob.get("sync").await.ok()["next_batch"].as_str().unwrap().to_owned();
    bob.post(&format!("rooms/{room}/leave"), json!({})).await.ok();
    // Left, bob still reads the history up to his leave...
    bob.get(&format!("rooms/{room}/messages?dir=b")).await.ok();
    bob.post(&format!("rooms/{room}/forget"), json!({})).await.ok();
    // ...forgotten, he does not, and the room is not in his sync.
    bob.get(&format!("rooms/{room}/messages?dir=b"))
        .await
        .err(403, "M_FORBIDDEN");
    let s = bob.get(&format!("sync?since={since}")).await.ok();
    assert!(
        s["rooms"]["leave"].get(&room).is_none(),
        "a forgotten room in sync: {s}"
    );
    alice
        .post(&format!("rooms/{room}/forget"), json!({}))
        .await
        .err(400, "M_UNKNOWN");
    // In the room again, the forgetting is over.
    alice
        .post(&format!("rooms/{room}/invite"), json!({ "user_id": bob.user_id }))
        .await
        .ok();
    bob.post(&format!("rooms/{room}/join"), json!({})).await.ok();
    bob.get(&format!("rooms/{room}/messages?dir=b")).await.ok();

    // Public rooms: anyone joins, by ID or by alias.
    let public = create_room(&alice, json!({ "preset": "public_chat", "room_alias_name": "open" })).await;
    carol.post("join/%23open:localhost", json!({})).await.ok();
    assert_eq!(carol.get("joined_rooms").await.ok()["joined_rooms"], json!([public]));
    carol
        .post("join/%23nope:localhost", json!({}))
        .await
        .err(404, "M_NOT_FOUND");
    carol
        .post("join/!unknown:localhost", json!({}))
        .await
        .err(404, "M_NOT_FOUND");
}

/// Restricted join rules (room versions 8+): members of an allowed room may join without an
/// invite, the join naming a member who may invite; others are refused.
async fn restricted_joins(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let bob = Client::register(&server, "bob", "pw").await;
    let carol = Client::register(&server, "carol", "pw").await;
    let team = create_room(&alice, json!({ "preset": "private_chat", "invite": [bob.user_id] })).await;
    bob.post(&format!("rooms/{team}/join"), json!({})).await.ok();
    let restricted = create_room(
        &alice,
        json!({
            "preset": "private_chat",
            "initial_state": [{
                "type": "m.room.join_rules", "state_key": "",
                "content": { "join_rule": "restricted", "allow": [{ "type": "m.room_membership", "room_id": team }] },
            }],
        }),
    )
    .await;
    carol
        .post(&format!("rooms/{restricted}/join"), json!({}))
        .await
        .err(403, "M_FORBIDDEN");
    bob.post(&format!("join/{restricted}"), json!({})).await.ok();
    let member = bob
        .get(&format!("rooms/{restricted}/state/m.room.member/{}", bob.user_id))
        .await
        .ok();
    assert_eq!(member["membership"], "join");
    assert_eq!(member["join_authorised_via_users_server"], alice.user_id.as_str());
    // A restricted room whose allowed rooms the user is not in stays closed; an invite opens it.
    alice
        .post(
            &format!("rooms/{restricted}/invite"),
            json!({ "user_id": carol.user_id }),
        )
        .await
        .ok();
    carol.post(&format!("rooms/{restricted}/join"), json!({})).await.ok();
    let member = carol
        .get(&format!("rooms/{restricted}/state/m.room.member/{}", carol.user_id))
        .await
        .ok();
    assert!(member.get("join_authorised_via_users_server").is_none(), "{member}");
}

async fn redaction(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let bob = Client::register(&server, "bob", "pw").await;
    let room = create_room(&alice, json!({ "preset": "public_chat" })).await;
    bob.post(&format!("join/{room}"), json!({})).await.ok();
    let secret = send_text(&bob, &room, "s", "oops, my password").await;
    let mine = send_text(&alice, &room, "m", "alice's words").await;
    // Bob (power 0, redact 50) may redact his own event but not alice's.
    bob.put(&format!("rooms/{room}/redact/{mine}/r1"), json!({}))
        .await
        .err(403, "M_FORBIDDEN");
    let redaction = bob
        .put(&format!("rooms/{room}/redact/{secret}/r2"), json!({ "reason": "typo" }))
        .await
        .ok();
    let event = alice.get(&format!("rooms/{room}/event/{secret}")).await.ok();
    assert_eq!(event["content"], json!({}), "redacted content is gone: {event}");
    assert_eq!(event["unsigned"]["redacted_because"]["event_id"], redaction["event_id"]);
    // A sync's timeline (the room's newest events, which memory keeps) shows it redacted too.
    let s = alice.get("sync").await.ok();
    let timeline = s["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .clone();
    let shown = timeline
        .iter()
        .find(|e| e["event_id"] == secret.as_str())
        .unwrap_or_else(|| panic!("{s}"));
    assert_eq!(shown["content"], json!({}), "{shown}");
    bob.put(&format!("rooms/{room}/redact/$nonexistent/r3"), json!({}))
        .await
        .err(404, "M_NOT_FOUND");
}

async fn sync_initial_incremental_and_invites(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let bob = Client::register(&server, "bob", "pw").await;
    let room = create_room(&alice, json!({ "preset": "private_chat", "name": "Plans" })).await;

    let first = bob.get("sync").await.ok();
    assert!(first["rooms"]["join"].as_object().unwrap().is_empty());
    let since = first["next_batch"].as_str().unwrap().to_owned();

    alice
        .post(&format!("rooms/{room}/invite"), json!({ "user_id": bob.user_id }))
        .await
        .ok();
    let s = bob.get(&format!("sync?since={since}")).await.ok();
    let invite = &s["rooms"]["invite"][&room]["invite_state"]["events"];
    let kinds: Vec<&str> = invite
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"m.room.name") && kinds.contains(&"m.room.member") && kinds.contains(&"m.room.encryption"),
        "{kinds:?}"
    );
    let since = s["next_batch"].as_str().unwrap().to_owned();
    // Nothing new: an immediate empty answer with timeout=0, same position.
    let quiet = bob.get(&format!("sync?since={since}&timeout=0")).await.ok();
    assert!(
        quiet["rooms"]["invite"].as_object().unwrap().is_empty(),
        "an invite is delivered once"
    );
    assert_eq!(quiet["next_batch"], since.as_str());

    bob.post(&format!("join/{room}"), json!({})).await.ok();
    let s = bob.get(&format!("sync?since={since}")).await.ok();
    let joined = &s["rooms"]["join"][&room];
    // The room's state comes along: in `state`, or in the timeline when it fits there.
    let mut state_kinds: Vec<&str> = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    state_kinds.extend(
        joined["timeline"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e.get("state_key").is_some())
            .map(|e| e["type"].as_str().unwrap()),
    );
    assert!(
        state_kinds.contains(&"m.room.create") && state_kinds.contains(&"m.room.name"),
        "a newly joined room comes with its state: {state_kinds:?}"
    );
    let since = s["next_batch"].as_str().unwrap().to_owned();

    let e1 = send_text(&alice, &room, "1", "first").await;
    let s = bob.get(&format!("sync?since={since}")).await.ok();
    let timeline = s["rooms"]["join"][&room]["timeline"]["events"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(
        timeline
            .iter()
            .map(|e| e["event_id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec![e1.as_str()]
    );
    assert_eq!(timeline[0]["content"]["body"], "first");
    assert!(
        s["rooms"]["join"][&room]["state"]["events"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let since = s["next_batch"].as_str().unwrap().to_owned();

    // Leaving shows up in "leave", once.
    bob.post(&format!("rooms/{room}/leave"), json!({})).await.ok();
    let s = bob.get(&format!("sync?since={since}")).await.ok();
    assert!(s["rooms"]["leave"].get(&room).is_some(), "{s}");
    let since = s["next_batch"].as_str().unwrap().to_owned();
    send_text(&alice, &room, "2", "after bob left").await;
    let s = bob.get(&format!("sync?since={since}&timeout=0")).await.ok();
    assert!(
        s["rooms"]["join"].get(&room).is_none() && s["rooms"]["leave"].get(&room).is_none(),
        "{s}"
    );
}

/// A long-poll wakes as soon as an event arrives, not at its timeout; 100 messages sent while
/// another client long-polls all arrive, once each, in order.
async fn long_poll_delivers_everything_once_in_order(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let bob = Client::register(&server, "bob", "pw").await;
    let room = create_room(&alice, json!({ "preset": "public_chat" })).await;
    bob.post(&format!("join/{room}"), json!({})).await.ok();
    let mut since = bob.get("sync").await.ok()["next_batch"].as_str().unwrap().to_owned();

    let poll = {
        let bob_http = bob.http.clone();
        let url = format!("{}/_matrix/client/v3/sync?since={since}&timeout=20000", bob.base);
        let token = bob.token.clone().unwrap();
        tokio::spawn(async move {
            let started = Instant::now();
            let r: Value = bob_http
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (started.elapsed(), r)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let woke_by = send_text(&alice, &room, "wake", "wake up").await;
    let (elapsed, r) = poll.await.unwrap();
    assert!(
        elapsed < Duration::from_secs(15),
        "the long-poll waited for its timeout ({elapsed:?}) instead of waking"
    );
    assert_eq!(
        r["rooms"]["join"][&room]["timeline"]["events"][0]["event_id"],
        woke_by.as_str()
    );
    since = r["next_batch"].as_str().unwrap().to_owned();

    let sender = {
        let alice = alice.clone();
        let room = room.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..100 {
                ids.push(send_text(&alice, &room, &format!("burst-{i}"), &format!("message {i}")).await);
            }
            ids
        })
    };
    let mut received: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.len() < 100 {
        assert!(
            Instant::now() < deadline,
            "only {} of 100 messages arrived",
            received.len()
        );
        let s = bob.get(&format!("sync?since={since}&timeout=5000&filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A200%7D%7D%7D")).await.ok();
        if let Some(events) = s["rooms"]["join"][&room]["timeline"]["events"].as_array() {
            assert_eq!(s["rooms"]["join"][&room]["timeline"]["limited"], false);
            received.extend(
                events
                    .iter()
                    .filter(|e| e["type"] == "m.room.message")
                    .map(|e| e["event_id"].as_str().unwrap().to_owned()),
            );
        }
        since = s["next_batch"].as_str().unwrap().to_owned();
    }
    let sent = sender.await.unwrap();
    assert_eq!(received, sent, "every message once, in the order sent");
}

/// A limited timeline's gap is filled by paginating /messages from prev_batch; pagination
/// works both ways.
async fn limited_sync_and_pagination(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let room = create_room(&alice, json!({ "preset": "public_chat" })).await;
    let since = alice.get("sync").await.ok()["next_batch"].as_str().unwrap().to_owned();
    let mut sent = Vec::new();
    for i in 0..25 {
        sent.push(send_text(&alice, &room, &format!("p{i}"), &format!("page {i}")).await);
    }
    let s = alice.get(&format!("sync?since={since}")).await.ok();
    let timeline = &s["rooms"]["join"][&room]["timeline"];
    assert_eq!(timeline["limited"], true);
    let mut seen = event_ids(&timeline["events"]);
    assert_eq!(seen.len(), 10, "the default timeline limit");
    let mut from = timeline["prev_batch"].as_str().unwrap().to_owned();
    loop {
        let page = alice
            .get(&format!("rooms/{room}/messages?dir=b&limit=4&from={from}&to={since}"))
            .await
            .ok();
        let mut ids = event_ids(&page["chunk"]);
        ids.reverse();
        ids.extend(seen);
        seen = ids;
        match page["end"].as_str() {
            Some(end) => from = end.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, sent, "backward pagination fills the gap exactly");

    // Forward from the start of the room reaches the same messages in order.
    let mut forward = Vec::new();
    let mut from = "s0".to_owned();
    loop {
        let page = alice
            .get(&format!("rooms/{room}/messages?dir=f&limit=7&from={from}"))
            .await
            .ok();
        forward.extend(
            page["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .map(|e| e["event_id"].as_str().unwrap().to_owned()),
        );
        match page["end"].as_str() {
            Some(end) => from = end.to_owned(),
            None => break,
        }
    }
    assert_eq!(forward, sent);
    alice
        .get(&format!("rooms/{room}/messages?dir=b&from=bogus"))
        .await
        .err(400, "M_INVALID_PARAM");
    let stranger = Client::register(&server, "zed", "pw").await;
    stranger
        .get(&format!("rooms/{room}/messages?dir=b"))
        .await
        .err(403, "M_FORBIDDEN");
}

/// An initial (or full-state) sync reads every joined room's newest events in one statement:
/// each room's timeline is still its own newest events, oldest first, and only joined rooms
/// have one.
async fn initial_sync_of_many_rooms(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let bob = Client::register(&server, "bob", "pw").await;
    let mut rooms = Vec::new();
    for (i, messages) in [0usize, 1, 2, 7].into_iter().enumerate() {
        let room = create_room(&alice, json!({ "preset": "public_chat", "name": format!("room {i}") })).await;
        for m in 0..messages {
            send_text(&alice, &room, &format!("r{i}m{m}"), &format!("{i}/{m}")).await;
        }
        rooms.push(room);
    }
    // Messages interleaved across rooms: one room's newest are not another's.
    for (i, room) in rooms.iter().enumerate().skip(1) {
        send_text(&alice, room, &format!("last{i}"), "last").await;
    }
    // A room Alice left and one she is only invited to: no timeline of theirs.
    let left = create_room(&alice, json!({ "preset": "public_chat" })).await;
    alice.post(&format!("rooms/{left}/leave"), json!({})).await.ok();
    let invited = create_room(&bob, json!({ "preset": "private_chat" })).await;
    bob.post(
        &format!("rooms/{invited}/invite"),
        json!({ "user_id": "@alice:localhost" }),
    )
    .await
    .ok();
    let filter = urlencode(r#"{"room":{"timeline":{"limit":3}}}"#);
    let since = alice.get("sync").await.ok()["next_batch"].as_str().unwrap().to_owned();
    for query in [
        format!("sync?filter={filter}"),
        format!("sync?filter={filter}&since={since}&full_state=true"),
    ] {
        let s = alice.get(&query).await.ok();
        let join = s["rooms"]["join"].as_object().unwrap();
        assert_eq!(join.len(), rooms.len(), "{query}: {:?}", join.keys());
        assert!(!join.contains_key(&left) && !join.contains_key(&invited), "{query}");
        if !query.contains("since") {
            assert!(s["rooms"]["invite"].get(&invited).is_some(), "{query}");
        }
        for room in &rooms {
            let timeline = &join[room]["timeline"];
            let ids = event_ids(&timeline["events"]);
            let page = alice.get(&format!("rooms/{room}/messages?dir=b&limit=4")).await.ok();
            let mut newest = event_ids(&page["chunk"]);
            assert_eq!(newest.len(), 4, "every room has more than three events");
            newest.reverse();
            assert_eq!(ids, newest[1..], "{query}: room {room}");
            assert_eq!(timeline["limited"], true, "{query}");
            assert_eq!(
                join[room]["state"]["events"].as_array().map(|e| e.is_empty()),
                Some(false)
            );
        }
    }
}

async fn filters(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let room = create_room(&alice, json!({ "preset": "public_chat" })).await;
    for i in 0..5 {
        send_text(&alice, &room, &format!("f{i}"), "x").await;
    }
    let id = alice
        .post(
            "user/@alice:localhost/filter",
            json!({ "room": { "timeline": { "limit": 2 } } }),
        )
        .await
        .ok()["filter_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        alice.get(&format!("user/@alice:localhost/filter/{id}")).await.ok()["room"]["timeline"]["limit"],
        2
    );
    let s = alice.get(&format!("sync?filter={id}")).await.ok();
    assert_eq!(
        s["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // The timeline is limited, so the room's state before it comes in `state`.
    let state_kinds: Vec<&str> = s["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(
        state_kinds.contains(&"m.room.create") && state_kinds.contains(&"m.room.power_levels"),
        "{state_kinds:?}"
    );
    let bob = Client::register(&server, "bob", "pw").await;
    bob.get(&format!("user/@alice:localhost/filter/{id}"))
        .await
        .err(403, "M_FORBIDDEN");
    bob.get("sync?filter=999999").await.err(400, "M_INVALID_PARAM");

    // /messages with a filter: only what passes, full pages, and the next page from where
    // the last one stopped; lazy loading sends the senders' member events.
    bob.post(&format!("join/{room}"), json!({})).await.ok();
    let carol = Client::register(&server, "carol", "pw").await;
    carol.post(&format!("join/{room}"), json!({})).await.ok();
    for i in 0..6 {
        send_text(&bob, &room, &format!("b{i}"), "y").await;
    }
    let f = urlencode(
        &json!({ "senders": ["@alice:localhost"], "types": ["m.room.message"], "lazy_load_members": true }).to_string(),
    );
    let page = alice
        .get(&format!("rooms/{room}/messages?dir=b&limit=3&filter={f}"))
        .await
        .ok();
    let senders: Vec<&str> = page["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["sender"].as_str().unwrap())
        .collect();
    assert_eq!(senders, vec!["@alice:localhost"; 3], "{page}");
    let members: Vec<&str> = page["state"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["state_key"].as_str())
        .collect();
    assert_eq!(members, vec!["@alice:localhost"], "lazy-loaded members: {page}");
    let end = page["end"].as_str().unwrap();
    let next = alice
        .get(&format!("rooms/{room}/messages?dir=b&limit=3&from={end}&filter={f}"))
        .await
        .ok();
    let n = next["chunk"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .count();
    assert_eq!(n, 2, "the two remaining of alice's five messages: {next}");
    let f = urlencode(&json!({ "not_types": ["m.room.*"] }).to_string());
    let none = alice.get(&format!("rooms/{room}/messages?dir=b&filter={f}")).await.ok();
    assert!(
        none["chunk"].as_array().unwrap().is_empty() && none.get("end").is_none(),
        "{none}"
    );

    // A sync filter with lazy-loaded members: of the member events, only the senders'.
    let lazy = urlencode(
        &json!({ "room": { "timeline": { "limit": 2 }, "state": { "lazy_load_members": true } } }).to_string(),
    );
    let s = alice.get(&format!("sync?filter={lazy}")).await.ok();
    let members: Vec<&str> = s["rooms"]["join"][&room]["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "m.room.member")
        .filter_map(|e| e["state_key"].as_str())
        .collect();
    assert_eq!(
        members,
        vec!["@alice:localhost", "@bob:localhost"],
        "the user's own and the timeline sender's, not carol's: {s}"
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// What clients need to render and de-duplicate: the sending device sees its transaction ID,
/// state events carry the content they replaced, and a profile change updates member events.
async fn client_details(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let alice2 = Client::login(&server, "alice", "pw").await;
    let bob = Client::register(&server, "bob", "pw").await;
    let room = create_room(&alice, json!({ "preset": "public_chat", "topic": "first" })).await;
    bob.post(&format!("join/{room}"), json!({})).await.ok();
    let since = |c: &Client| {
        let c = c.clone();
        async move { c.get("sync").await.ok()["next_batch"].as_str().unwrap().to_owned() }
    };
    let (sa, sa2, sb) = (since(&alice).await, since(&alice2).await, since(&bob).await);
    let id = send_text(&alice, &room, "my-txn-1", "hello").await;
    alice
        .put(
            &format!("rooms/{room}/state/m.room.topic/"),
            json!({ "topic": "second" }),
        )
        .await
        .ok();
    let timeline = |s: &Value| {
        s["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .unwrap()
            .clone()
    };
    let ta = timeline(&alice.get(&format!("sync?since={sa}")).await.ok());
    let ta2 = timeline(&alice2.get(&format!("sync?since={sa2}")).await.ok());
    let tb = timeline(&bob.get(&format!("sync?since={sb}")).await.ok());
    let msg = |t: &[Value]| t.iter().find(|e| e["event_id"] == id.as_str()).unwrap().clone();
    assert_eq!(msg(&ta)["unsigned"]["transaction_id"], "my-txn-1");
    assert!(
        msg(&ta2)["unsigned"].get("transaction_id").is_none(),
        "another device of the same user"
    );
    assert!(msg(&tb)["unsigned"].get("transaction_id").is_none(), "another user");
    let topic = tb.iter().find(|e| e["type"] == "m.room.topic").unwrap();
    assert_eq!(topic["unsigned"]["prev_content"]["topic"], "first", "{topic}");
    assert!(topic["unsigned"]["replaces_state"].is_string());

    bob.put("profile/@bob:localhost/displayname", json!({ "displayname": "Robert" }))
        .await
        .ok();
    let member = alice
        .get(&format!("rooms/{room}/state/m.room.member/@bob:localhost"))
        .await
        .ok();
    assert_eq!(
        (member["membership"].as_str(), member["displayname"].as_str()),
        (Some("join"), Some("Robert"))
    );
    let joined = alice.get(&format!("rooms/{room}/joined_members")).await.ok();
    assert_eq!(joined["joined"]["@bob:localhost"]["display_name"], "Robert");
}

async fn relations_threads_and_context(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let bob = Client::register(&server, "bob", "pw").await;
    let room = create_room(&alice, json!({ "preset": "public_chat" })).await;
    bob.post(&format!("join/{room}"), json!({})).await.ok();
    let original = send_text(&alice, &room, "orig", "helo").await;
    let put = |c: &Client, kind: &str, txn: &str, content: Value| {
        let path = format!("rooms/{room}/send/{kind}/{txn}");
        let c = c.clone();
        async move {
            c.put(&path, content).await.ok()["event_id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let edit = |body: &str| {
        json!({ "msgtype": "m.text", "body": format!("* {body}"), "m.new_content": { "msgtype": "m.text", "body": body },
        "m.relates_to": { "rel_type": "m.replace", "event_id": original } })
    };
    put(&alice, "m.room.message", "e1", edit("hello")).await;
    let latest_edit = put(&alice, "m.room.message", "e2", edit("hello!")).await;
    // An "edit" by someone else does not count.
    put(&bob, "m.room.message", "e3", edit("hijacked")).await;
    let mut reactions = Vec::new();
    for i in 0..15 {
        let c = if i % 2 == 0 { &alice } else { &bob };
        reactions.push(
            put(
                c,
                "m.reaction",
                &format!("r{i}"),
                json!({ "m.relates_to": { "rel_type": "m.annotation", "event_id": original, "key": format!("k{i}") } }),
            )
            .await,
        );
    }

    let event = alice.get(&format!("rooms/{room}/event/{original}")).await.ok();
    assert_eq!(
        event["unsigned"]["m.relations"]["m.replace"]["event_id"],
        latest_edit.as_str(),
        "{event}"
    );

    // /relations by type, paginated (newest first), and by type and event type.
    let mut seen = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let q = from.as_ref().map(|f| format!("&from={f}")).unwrap_or_default();
        let page = bob
            .get(&format!(
                "/_matrix/client/v1/rooms/{room}/relations/{original}/m.annotation?limit=10{q}"
            ))
            .await
            .ok();
        seen.extend(event_ids(&page["chunk"]));
        match page["next_batch"].as_str() {
            Some(n) => from = Some(n.to_owned()),
            None => break,
        }
    }
    let mut expected = reactions.clone();
    expected.reverse();
    assert_eq!(seen, expected, "all reactions, newest first");
    let all = bob
        .get(&format!(
            "/_matrix/client/v1/rooms/{room}/relations/{original}/m.annotation/m.reaction?limit=50&dir=f"
        ))
        .await
        .ok();
    assert_eq!(all["chunk"].as_array().unwrap().len(), 15);
    let edits = bob
        .get(&format!(
            "/_matrix/client/v1/rooms/{room}/relations/{original}/m.replace"
        ))
        .await
        .ok();
    assert_eq!(edits["chunk"].as_array().unwrap().len(), 3);
    // A redacted reaction is no longer a relation.
    alice
        .put(&format!("rooms/{room}/redact/{}/red1", reactions[0]), json!({}))
        .await
        .ok();
    let all = bob
        .get(&format!(
            "/_matrix/client/v1/rooms/{room}/relations/{original}/m.annotation?limit=50"
        ))
        .await
        .ok();
    assert_eq!(all["chunk"].as_array().unwrap().len(), 14);

    // Threads: a root with two replies; /threads lists it with its summary.
    let root = send_text(&alice, &room, "root", "thread root").await;
    let reply = |body: &str| json!({ "msgtype": "m.text", "body": body, "m.relates_to": { "rel_type": "m.thread", "event_id": root } });
    put(&alice, "m.room.message", "t1", reply("first reply")).await;
    let last = put(&bob, "m.room.message", "t2", reply("second reply")).await;
    let threads = alice
        .get(&format!("/_matrix/client/v1/rooms/{room}/threads"))
        .await
        .ok();
    let t = &threads["chunk"][0];
    assert_eq!(t["event_id"], root.as_str());
    let summary = &t["unsigned"]["m.relations"]["m.thread"];
    assert_eq!(
        (summary["count"].as_i64(), summary["latest_event"]["event_id"].as_str()),
        (Some(2), Some(last.as_str())),
        "{t}"
    );
    assert_eq!(summary["current_user_participated"], true);
    let carol = Client::register(&server, "carol", "pw").await;
    carol.post(&format!("join/{room}"), json!({})).await.ok();
    let mine = carol
        .get(&format!("/_matrix/client/v1/rooms/{room}/threads?include=participated"))
        .await
        .ok();
    assert!(
        mine["chunk"].as_array().unwrap().is_empty(),
        "carol took part in no thread"
    );

    // /context: the event, two before (newest first) and two after.
    let ids: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..7 {
            v.push(send_text(&alice, &room, &format!("c{i}"), &format!("ctx {i}")).await);
        }
        v
    };
    let ctx = bob.get(&format!("rooms/{room}/context/{}?limit=4", ids[3])).await.ok();
    assert_eq!(ctx["event"]["event_id"], ids[3].as_str());
    let before = event_ids(&ctx["events_before"]);
    let after = event_ids(&ctx["events_after"]);
    assert_eq!(before, vec![ids[2].as_str(), ids[1].as_str()]);
    assert_eq!(after, vec![ids[4].as_str(), ids[5].as_str()]);
    assert!(
        ctx["state"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "m.room.create")
    );
    // Paginating on from the context's end token continues after it.
    let more = bob
        .get(&format!(
            "rooms/{room}/messages?dir=f&limit=1&from={}",
            ctx["end"].as_str().unwrap()
        ))
        .await
        .ok();
    assert_eq!(more["chunk"][0]["event_id"], ids[6].as_str());
    bob.get(&format!("rooms/{room}/context/$missing"))
        .await
        .err(404, "M_NOT_FOUND");
    let stranger = Client::register(&server, "zed", "pw").await;
    stranger
        .get(&format!("rooms/{room}/context/{}", ids[3]))
        .await
        .err(403, "M_FORBIDDEN");
}

async fn directories_and_search(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let bob = Client::register(&server, "bob", "pw").await;
    let carol = Client::register(&server, "carol", "pw").await;
    alice
        .put(
            "profile/@alice:localhost/displayname",
            json!({ "displayname": "Alice Liddell" }),
        )
        .await
        .ok();
    carol
        .put(
            "profile/@carol:localhost/displayname",
            json!({ "displayname": "Carol Private" }),
        )
        .await
        .ok();

    let public = create_room(&alice, json!({ "preset": "public_chat", "visibility": "public", "name": "Tea Party", "topic": "mad hatters", "room_alias_name": "tea" })).await;
    let hidden = create_room(&alice, json!({ "preset": "public_chat", "name": "Hidden" })).await;
    bob.post(&format!("join/{public}"), json!({})).await.ok();

    let anon = Client::anonymous(&server);
    let dir = anon.get("publicRooms").await.ok();
    let chunk = dir["chunk"].as_array().unwrap();
    assert_eq!(chunk.len(), 1, "{dir}");
    let entry = &chunk[0];
    assert_eq!(
        (
            entry["room_id"].as_str(),
            entry["name"].as_str(),
            entry["topic"].as_str()
        ),
        (Some(public.as_str()), Some("Tea Party"), Some("mad hatters"))
    );
    assert_eq!(
        (entry["canonical_alias"].as_str(), entry["num_joined_members"].as_i64()),
        (Some("#tea:localhost"), Some(2))
    );
    assert_eq!(
        anon.get(&format!("directory/list/room/{hidden}")).await.ok()["visibility"],
        "private"
    );
    bob.put(
        &format!("directory/list/room/{hidden}"),
        json!({ "visibility": "public" }),
    )
    .await
    .err(403, "M_FORBIDDEN");
    alice
        .put(
            &format!("directory/list/room/{hidden}"),
            json!({ "visibility": "public" }),
        )
        .await
        .ok();
    let filtered = alice
        .post("publicRooms", json!({ "filter": { "generic_search_term": "hidd" } }))
        .await
        .ok();
    assert_eq!(filtered["chunk"].as_array().unwrap().len(), 1);
    assert_eq!(filtered["chunk"][0]["room_id"], hidden.as_str());
    let page = anon.get("publicRooms?limit=1").await.ok();
    assert_eq!(page["total_room_count_estimate"], 2);
    let rest = anon
        .get(&format!(
            "publicRooms?limit=1&since={}",
            page["next_batch"].as_str().unwrap()
        ))
        .await
        .ok();
    assert_ne!(rest["chunk"][0]["room_id"], page["chunk"][0]["room_id"]);
    anon.get("publicRooms?server=elsewhere.org")
        .await
        .err(404, "M_NOT_FOUND");

    // The user directory: people in shared or public rooms, by ID or display name.
    let found = bob
        .post("user_directory/search", json!({ "search_term": "liddell" }))
        .await
        .ok();
    assert_eq!(found["results"][0]["user_id"], "@alice:localhost");
    assert_eq!(found["results"][0]["display_name"], "Alice Liddell");
    let none = bob
        .post("user_directory/search", json!({ "search_term": "carol" }))
        .await
        .ok();
    assert!(
        none["results"].as_array().unwrap().is_empty(),
        "carol shares no room with bob: {none}"
    );

    // Search: message bodies in rooms the searcher is joined to, not in encrypted rooms.
    send_text(&alice, &public, "s1", "The Hatter asked a riddle").await;
    send_text(&alice, &public, "s2", "nothing to see").await;
    let secret = create_room(&alice, json!({ "preset": "private_chat", "invite": [bob.user_id] })).await;
    bob.post(&format!("join/{secret}"), json!({})).await.ok();
    alice
        .put(&format!("rooms/{secret}/send/m.room.encrypted/e1"), json!({ "algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "riddle-ish-ciphertext", "sender_key": "k", "device_id": "D", "session_id": "s" }))
        .await
        .ok();
    let r = bob
        .post(
            "search",
            json!({ "search_categories": { "room_events": { "search_term": "RIDDLE" } } }),
        )
        .await
        .ok();
    let results = r["search_categories"]["room_events"]["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{r}");
    assert_eq!(results[0]["result"]["content"]["body"], "The Hatter asked a riddle");
    let other = carol
        .post(
            "search",
            json!({ "search_categories": { "room_events": { "search_term": "riddle" } } }),
        )
        .await
        .ok();
    assert!(
        other["search_categories"]["room_events"]["results"]
            .as_array()
            .unwrap()
            .is_empty(),
        "carol is in none of the rooms"
    );
    bob.post(
        "search",
        json!({ "search_categories": { "room_events": { "search_term": "  " } } }),
    )
    .await
    .err(400, "M_INVALID_PARAM");
    // LIKE wildcards in the term are literal.
    let wild = bob
        .post(
            "search",
            json!({ "search_categories": { "room_events": { "search_term": "%" } } }),
        )
        .await
        .ok();
    assert!(
        wild["search_categories"]["room_events"]["results"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{wild}"
    );
}

/// Room history visibility, per event: "joined" hides what came before a member joined,
/// "shared" (the default) shows it, "world_readable" is anyone's to read; a setting change
/// applies to the events after it.
async fn history_visibility(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let bob = Client::register(&server, "bob", "pw").await;
    let carol = Client::register(&server, "carol", "pw").await;
    let say = |c: &Client, room: &str, text: &str| {
        let (c, room, text) = (c.clone(), room.to_owned(), text.to_owned());
        async move {
            c.put(
                &format!("rooms/{room}/send/m.room.message/{text}"),
                json!({ "msgtype": "m.text", "body": text }),
            )
            .await
            .ok();
        }
    };
    let bodies = |v: &Value| -> Vec<String> {
        v["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
            .collect()
    };

    let joined = create_room(
        &alice,
        json!({ "preset": "public_chat", "initial_state": [{ "type": "m.room.history_visibility", "state_key": "",
                "content": { "history_visibility": "joined" } }] }),
    )
    .await;
    say(&alice, &joined, "before-bob").await;
    bob.post(&format!("rooms/{joined}/join"), json!({})).await.ok();
    say(&alice, &joined, "after-bob").await;
    let seen = bodies(&bob.get(&format!("rooms/{joined}/messages?dir=b&limit=50")).await.ok());
    assert_eq!(seen, vec!["after-bob"], "joined visibility");
    let s = bob.get("sync").await.ok();
    assert!(
        !s.to_string().contains("before-bob"),
        "initial sync under joined visibility: {s}"
    );
    // From a change to shared on, a later member sees what follows it, not what came before.
    alice
        .put(
            &format!("rooms/{joined}/state/m.room.history_visibility"),
            json!({ "history_visibility": "shared" }),
        )
        .await
        .ok();
    say(&alice, &joined, "shared-now").await;
    carol.post(&format!("rooms/{joined}/join"), json!({})).await.ok();
    let seen = bodies(&carol.get(&format!("rooms/{joined}/messages?dir=b&limit=50")).await.ok());
    assert_eq!(seen, vec!["shared-now"], "{seen:?}");

    // shared (the default): a later member reads the whole history.
    let shared = create_room(&alice, json!({ "preset": "public_chat" })).await;
    say(&alice, &shared, "early").await;
    bob.post(&format!("rooms/{shared}/join"), json!({})).await.ok();
    let seen = bodies(&bob.get(&format!("rooms/{shared}/messages?dir=b&limit=50")).await.ok());
    assert_eq!(seen, vec!["early"]);
    carol
        .get(&format!("rooms/{shared}/messages?dir=b"))
        .await
        .err(403, "M_FORBIDDEN");

    // world_readable: a non-member reads it.
    let open = create_room(
        &alice,
        json!({ "preset": "public_chat", "initial_state": [{ "type": "m.room.history_visibility", "state_key": "",
                "content": { "history_visibility": "world_readable" } }] }),
    )
    .await;
    say(&alice, &open, "for-everyone").await;
    let seen = bodies(&carol.get(&format!("rooms/{open}/messages?dir=b&limit=50")).await.ok());
    assert_eq!(seen, vec!["for-everyone"]);
}

/// State at a point of the room's history: before a sync timeline, at a `/context` event,
/// `/members?at=`; and a creation that fails stores nothing.
async fn state_at_a_point(backend: Backend) {
    let (_inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let bob = Client::register(&server, "bob", "pw").await;
    let name_of = |events: &Value| -> Vec<String> {
        events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "m.room.name")
            .map(|e| e["content"]["name"].as_str().unwrap_or("").to_owned())
            .collect()
    };

    let room = create_room(&alice, json!({ "preset": "public_chat", "name": "One" })).await;
    let middle = send_text(&alice, &room, "m1", "while One").await;
    let one = alice.get("sync").await.ok()["next_batch"].as_str().unwrap().to_owned();
    alice
        .put(&format!("rooms/{room}/state/m.room.name/"), json!({ "name": "Two" }))
        .await
        .ok();
    bob.post(&format!("rooms/{room}/join"), json!({})).await.ok();
    send_text(&alice, &room, "m2", "while Two").await;

    // The initial sync's state is the state before the timeline: with the last three events
    // in the timeline (the rename, bob's join, a message), the name there is still "One".
    let filter = json!({ "room": { "timeline": { "limit": 3 } } }).to_string();
    let s = alice.get(&format!("sync?filter={}", urlencode(&filter))).await.ok();
    let joined = &s["rooms"]["join"][&room];
    assert_eq!(name_of(&joined["state"]["events"]), vec!["One"], "{joined}");
    assert_eq!(name_of(&joined["timeline"]["events"]), vec!["Two"], "{joined}");
    let bob_in_state = joined["state"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["state_key"] == bob.user_id.as_str());
    assert!(!bob_in_state, "bob joined inside the timeline: {joined}");

    // /context: the state at the last event returned.
    let ctx = alice.get(&format!("rooms/{room}/context/{middle}?limit=0")).await.ok();
    assert_eq!(name_of(&ctx["state"]), vec!["One"], "{ctx}");
    let ctx = alice.get(&format!("rooms/{room}/context/{middle}?limit=10")).await.ok();
    assert_eq!(name_of(&ctx["state"]), vec!["Two"], "{ctx}");

    // /members at a sync token from before bob joined.
    let members = |v: &Value| -> Vec<String> {
        v["chunk"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["state_key"].as_str().unwrap().to_owned())
            .collect()
    };
    let then = alice.get(&format!("rooms/{room}/members?at={one}")).await.ok();
    assert_eq!(members(&then), vec![alice.user_id.clone()], "{then}");
    let now = alice.get(&format!("rooms/{room}/members")).await.ok();
    assert_eq!(members(&now).len(), 2, "{now}");
    alice
        .get(&format!("rooms/{room}/members?at=bogus"))
        .await
        .err(400, "M_INVALID_PARAM");

    // A creation refused half-way (the invite needs more than the creator's 100) stores
    // nothing: no room, and the alias stays free.
    let before = alice.get("joined_rooms").await.ok();
    alice
        .post(
            "createRoom",
            json!({ "preset": "private_chat", "room_alias_name": "half", "name": "Half",
                    "invite": [bob.user_id], "power_level_content_override": { "invite": 101 } }),
        )
        .await
        .err(403, "M_FORBIDDEN");
    assert_eq!(alice.get("joined_rooms").await.ok(), before);
    alice
        .get("directory/room/%23half:localhost")
        .await
        .err(404, "M_NOT_FOUND");
    let invites = bob.get("sync").await.ok();
    assert!(
        invites["rooms"]["invite"].as_object().is_none_or(|i| i.is_empty()),
        "{invites}"
    );
    create_room(&alice, json!({ "preset": "private_chat", "room_alias_name": "half" })).await;
}

both_backends!(
    state_at_a_point,
    restricted_joins,
    history_visibility,
    directories_and_search,
    relations_threads_and_context,
    client_details,
    create_presets_and_encryption,
    encryption_default_can_be_turned_off,
    events_are_signed_pdus,
    send_is_idempotent_per_device,
    membership_and_power,
    redaction,
    sync_initial_incremental_and_invites,
    long_poll_delivers_everything_once_in_order,
    limited_sync_and_pagination,
    initial_sync_of_many_rooms,
    filters,
);

/// SIGKILL during a burst of sends: every event ID the server returned is in the room's
/// history after a restart, in order.
async fn acknowledged_events_survive_a_crash(backend: Backend) {
    let (inst, server) = open_server(backend).await;
    let alice = Client::register(&server, "alice", "pw").await;
    let room = create_room(&alice, json!({ "preset": "public_chat" })).await;
    let burst = {
        let alice = alice.clone();
        let room = room.clone();
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..10_000 {
                let path = format!("rooms/{room}/send/m.room.message/k{i}");
                let r = alice
                    .http
                    .put(format!("{}/_matrix/client/v3/{path}", alice.base))
                    .bearer_auth(alice.token.as_ref().unwrap())
                    .json(&json!({ "msgtype": "m.text", "body": format!("k{i}") }))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let v: Value = match r.json().await {
                            Ok(v) => v,
                            Err(_) => break,
                        };
                        acked.push(v["event_id"].as_str().unwrap().to_owned());
                    }
                    _ => break,
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill().await;
    let acked = burst.await.unwrap();
    assert!(
        acked.len() > 5,
        "the burst should have got going before the kill: {}",
        acked.len()
    );

    let server = inst.start().await;
    let alice = Client::login(&server, "alice", "pw").await;
    let mut history = Vec::new();
    let mut from = "s0".to_owned();
    loop {
        let page = alice
            .get(&format!("rooms/{room}/messages?dir=f&limit=500&from={from}"))
            .await
            .ok();
        history.extend(
            page["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .map(|e| e["event_id"].as_str().unwrap().to_owned()),
        );
        match page["end"].as_str() {
            Some(end) => from = end.to_owned(),
            None => break,
        }
    }
    assert!(history.len() >= acked.len());
    assert_eq!(
        &history[..acked.len()],
        &acked[..],
        "every acknowledged event, in order"
    );
}

both_backends!(acknowledged_events_survive_a_crash);
