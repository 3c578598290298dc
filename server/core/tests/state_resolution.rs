//! State resolution where a room's history branches, over a real store, on SQLite and
//! PostgreSQL. A second server ("remote.test") is played by this test: it builds and signs
//! PDUs with its own key, and the room service takes them in as federation's `/send` will.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use estuary_core::CoreError;
use estuary_core::keys::ServerKey;
use estuary_core::rooms::state::Ingested;
use estuary_core::rooms::{EventTemplate, Rooms};
use estuary_core::streams::{Positions, Streams};
use estuary_tests::{Backend, TestDb, both_backends};
use ruma::room_version_rules::RoomVersionRules;
use ruma::serde::Base64;
use ruma::signatures::{Ed25519KeyPair, PublicKeyMap};
use ruma::{CanonicalJsonObject, OwnedRoomId, ServerName};
use serde_json::{Value, json};

const REMOTE: &str = "remote.test";

/// The other server: its key, and a PDU builder signing with it.
struct Remote {
    key: Ed25519KeyPair,
    keys: PublicKeyMap,
}

impl Remote {
    fn new(version: &str) -> Remote {
        let der = Ed25519KeyPair::generate();
        let key = Ed25519KeyPair::from_der(&der, version.to_owned()).unwrap();
        let mut set = BTreeMap::new();
        set.insert(format!("ed25519:{version}"), Base64::new(key.public_key().to_vec()));
        let keys = PublicKeyMap::from([(REMOTE.to_owned(), set)]);
        Remote { key, keys }
    }

    /// A signed PDU of `sender` (a user of remote.test) after `prev`, authorised by `auth`.
    #[allow(clippy::too_many_arguments)]
    async fn pdu(
        &self,
        rooms: &Rooms,
        room: &OwnedRoomId,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
        prev: &[&str],
        auth: &[&str],
        ts: i64,
    ) -> CanonicalJsonObject {
        let mut depth = 0;
        for p in prev {
            if let Some(e) = rooms.event(p).await.unwrap() {
                depth = depth.max(e.depth);
            }
        }
        let mut pdu = json!({
            "room_id": room, "sender": sender, "type": kind, "content": content,
            "prev_events": prev, "auth_events": auth, "depth": depth + 1, "origin_server_ts": ts,
        });
        if let Some(k) = state_key {
            pdu["state_key"] = json!(k);
        }
        let mut object: CanonicalJsonObject = serde_json::from_value(pdu).unwrap();
        ruma::signatures::hash_and_sign_event(REMOTE, &self.key, &mut object, &RoomVersionRules::V11.redaction)
            .unwrap();
        object
    }
}

struct Room {
    db: TestDb,
    store: Arc<dyn estuary_store::Store>,
    key: Arc<ServerKey>,
    rooms: Rooms,
    id: OwnedRoomId,
    remote: Remote,
}

use common::user;

impl Room {
    /// A public room on ours.test: alice (100) and carol (50) local, bob of remote.test (100)
    /// joined through an ingested PDU.
    async fn new(backend: Backend) -> Room {
        let db = TestDb::new(backend).await;
        let (store, key, rooms) = common::rooms_on(&db).await;
        let mut over = serde_json::Map::new();
        over.insert(
            "users".into(),
            json!({ "@alice:ours.test": 100, "@carol:ours.test": 50, "@bob:remote.test": 100 }),
        );
        let id = common::public_room(&rooms, Some("first"), Some(over)).await;
        let room = Room {
            db,
            store,
            key,
            rooms,
            id,
            remote: Remote::new("r1"),
        };
        room.send(
            "@carol:ours.test",
            "m.room.member",
            Some("@carol:ours.test"),
            json!({"membership": "join"}),
        )
        .await;
        room.remote_join("@bob:remote.test").await;
        room
    }

    async fn send(&self, sender: &str, kind: &str, state_key: Option<&str>, content: Value) -> String {
        let t = match state_key {
            Some(k) => EventTemplate::state(kind, k, content),
            None => EventTemplate::message(kind, content),
        };
        self.rooms
            .send(&self.id, &user(sender), t, None)
            .await
            .unwrap()
            .0
            .to_string()
    }

    async fn set_topic(&self, sender: &str, topic: impl Into<String>) -> String {
        self.send(sender, "m.room.topic", Some(""), json!({ "topic": topic.into() }))
            .await
    }

    async fn state_id(&self, kind: &str, key: &str) -> Option<String> {
        self.rooms
            .state_event(self.id.as_str(), kind, key)
            .await
            .unwrap()
            .map(|e| e.event_id)
    }

    async fn tips(&self) -> Vec<String> {
        let mut tips = self.rooms.tips(self.id.as_str()).await.unwrap();
        tips.sort();
        tips
    }

    /// The auth events a remote server would name: create, power levels, the sender's member
    /// event (and the join rules for a join), as of the current state.
    async fn auth_for(&self, sender: &str, join: bool) -> Vec<String> {
        let mut auth = vec![
            self.state_id("m.room.create", "").await.unwrap(),
            self.state_id("m.room.power_levels", "").await.unwrap(),
        ];
        if join {
            auth.push(self.state_id("m.room.join_rules", "").await.unwrap());
        }
        auth.extend(self.state_id("m.room.member", sender).await);
        auth
    }

    async fn remote_join(&self, sender: &str) -> String {
        let tips = self.tips().await;
        let auth = self.auth_for(sender, true).await;
        let pdu = self
            .pdu(
                sender,
                "m.room.member",
                Some(sender),
                json!({"membership": "join"}),
                &tips,
                &auth,
                now(),
            )
            .await;
        let (id, outcome) = self.rooms.ingest(pdu, &self.remote.keys).await.unwrap();
        assert!(matches!(outcome, Ingested::Accepted(_)), "{outcome:?}");
        id.to_string()
    }

    #[allow(clippy::too_many_arguments)]
    async fn pdu(
        &self,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
        prev: &[String],
        auth: &[String],
        ts: i64,
    ) -> CanonicalJsonObject {
        let prev: Vec<&str> = prev.iter().map(String::as_str).collect();
        let auth: Vec<&str> = auth.iter().map(String::as_str).collect();
        self.remote
            .pdu(
                &self.rooms,
                &self.id,
                sender,
                kind,
                state_key,
                content,
                &prev,
                &auth,
                ts,
            )
            .await
    }

    /// A message PDU of a remote user, sent now.
    async fn message(&self, sender: &str, body: &str, prev: &[String], auth: &[String]) -> CanonicalJsonObject {
        self.pdu(
            sender,
            "m.room.message",
            None,
            json!({ "body": body }),
            prev,
            auth,
            now(),
        )
        .await
    }

    /// The topic event of the room's state at a stream position.
    async fn topic_at(&self, at: i64) -> String {
        let state = self.rooms.state_at(self.id.as_str(), at).await.unwrap();
        let topic = state.into_iter().find(|e| e.kind == "m.room.topic").unwrap();
        topic.event_id
    }

    async fn content(&self, event_id: &str) -> Value {
        let e = self.rooms.event(event_id).await.unwrap().unwrap();
        serde_json::from_str::<Value>(&e.pdu).unwrap()["content"].clone()
    }
}

fn now() -> i64 {
    estuary_core::now_ms()
}

/// Two topics set at once on two servers: the room settles on the one resolution orders last
/// (the later `origin_server_ts`), not on the one that arrived last; each branch keeps its
/// own state; the next local event merges the branches.
async fn concurrent_topics_resolve_by_order_not_arrival(backend: Backend) {
    let room = Room::new(backend).await;
    let fork = room.tips().await;
    assert_eq!(fork.len(), 1, "one line so far");
    let alice = room.set_topic("@alice:ours.test", "alice's").await;
    let auth = room.auth_for("@bob:remote.test", false).await;
    // Bob's was sent a minute before alice's, and arrives after it.
    let pdu = room
        .pdu(
            "@bob:remote.test",
            "m.room.topic",
            Some(""),
            json!({"topic": "bob's"}),
            &fork,
            &auth,
            now() - 60_000,
        )
        .await;
    let (bob, outcome) = room.rooms.ingest(pdu.clone(), &room.remote.keys).await.unwrap();
    let Ingested::Accepted(at) = outcome else {
        panic!("{outcome:?}")
    };
    let bob = bob.to_string();
    let mut both = vec![alice.clone(), bob.clone()];
    both.sort();
    assert_eq!(room.tips().await, both, "two branches");
    assert_eq!(
        room.state_id("m.room.topic", "").await.as_deref(),
        Some(alice.as_str()),
        "resolution puts the later topic last, whatever arrived last"
    );
    let key = ("m.room.topic".to_owned(), String::new());
    assert_eq!(
        room.rooms.state_after(&bob).await.unwrap()[&key],
        bob,
        "bob's branch has bob's topic"
    );
    assert_eq!(room.rooms.state_after(&alice).await.unwrap()[&key], alice);
    // The same PDU again is known, and changes nothing.
    let (_, again) = room.rooms.ingest(pdu, &room.remote.keys).await.unwrap();
    assert_eq!(again, Ingested::Known);

    // The next local event names both branches and carries the resolved state.
    let merge = room
        .send("@alice:ours.test", "m.room.name", Some(""), json!({"name": "merged"}))
        .await;
    let pdu: Value = serde_json::from_str(&room.rooms.event(&merge).await.unwrap().unwrap().pdu).unwrap();
    let mut prev: Vec<String> = serde_json::from_value(pdu["prev_events"].clone()).unwrap();
    prev.sort();
    assert_eq!(prev, both);
    assert_eq!(room.tips().await, vec![merge.clone()]);
    assert_eq!(room.rooms.state_after(&merge).await.unwrap()[&key], alice);
    assert_eq!(room.content(&alice).await["topic"], "alice's");
    // Bob's topic is the newest state event by position, and not the state there: the
    // state at a position (read from the store now that a state event came after), and an
    // incremental sync over it, show alice's.
    assert_eq!(room.topic_at(at).await, alice);
    assert_eq!(room.topic_at(at - 1).await, alice);
    let resets = room.rooms.state_resets(room.id.as_str(), at - 1, at).await.unwrap();
    assert_eq!(resets.iter().map(|e| &e.event_id).collect::<Vec<_>>(), vec![&alice]);
}

/// Power events first: bob demotes carol while carol sets the topic. Carol's topic was allowed
/// where she sent it, but the resolved state applies the demotion first and then refuses it,
/// so the room keeps the topic from before the fork (the newest topic would be carol's).
async fn demotion_beats_concurrent_topic(backend: Backend) {
    let room = Room::new(backend).await;
    let before = room.state_id("m.room.topic", "").await.unwrap();
    let fork = room.tips().await;
    let levels = room.state_id("m.room.power_levels", "").await.unwrap();
    let mut content = room.content(&levels).await;
    let carol = room.set_topic("@carol:ours.test", "carol's").await;
    assert_eq!(room.state_id("m.room.topic", "").await.as_deref(), Some(carol.as_str()));
    content["users"]["@carol:ours.test"] = json!(0);
    let auth = room.auth_for("@bob:remote.test", false).await;
    let pdu = room
        .pdu(
            "@bob:remote.test",
            "m.room.power_levels",
            Some(""),
            content,
            &fork,
            &auth,
            now() - 5_000,
        )
        .await;
    let (demotion, outcome) = room.rooms.ingest(pdu, &room.remote.keys).await.unwrap();
    let Ingested::Accepted(at) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        room.state_id("m.room.power_levels", "").await.as_deref(),
        Some(demotion.as_str())
    );
    assert_eq!(
        room.state_id("m.room.topic", "").await.as_deref(),
        Some(before.as_str()),
        "carol's topic does not survive her demotion"
    );
    // The state at a position (from the store, once a state event came after), and what an
    // incremental sync over the demotion shows.
    room.send("@alice:ours.test", "m.room.name", Some(""), json!({"name": "later"}))
        .await;
    assert_eq!(room.topic_at(at - 1).await, carol);
    assert_eq!(room.topic_at(at).await, before);
    let resets = room.rooms.state_resets(room.id.as_str(), at - 1, at).await.unwrap();
    assert_eq!(resets.iter().map(|e| &e.event_id).collect::<Vec<_>>(), vec![&before]);
    assert!(
        room.rooms
            .state_resets(room.id.as_str(), at, at + 10)
            .await
            .unwrap()
            .is_empty(),
        "the name is no reset"
    );
    // After a restart, the resets are read back from the store.
    let streams = Arc::new(Streams::new(Positions::default()));
    let restarted = Rooms::new(
        room.store.clone(),
        room.key.clone(),
        ServerName::parse("ours.test").unwrap(),
        streams,
    );
    let resets = restarted.state_resets(room.id.as_str(), at - 1, at).await.unwrap();
    assert_eq!(resets.iter().map(|e| &e.event_id).collect::<Vec<_>>(), vec![&before]);
    // Carol's own branch still has it; the local service sees the demotion now.
    let key = ("m.room.topic".to_owned(), String::new());
    assert_eq!(room.rooms.state_after(&carol).await.unwrap()[&key], carol);
    let refused = room
        .rooms
        .send(
            &room.id,
            &user("@carol:ours.test"),
            EventTemplate::state("m.room.topic", "", json!({"topic": "again"})),
            None,
        )
        .await;
    assert!(matches!(refused, Err(CoreError::Forbidden(_))), "{refused:?}");
}

/// What a receiving server refuses or only half accepts.
async fn refused_and_soft_failed(backend: Backend) {
    let room = Room::new(backend).await;
    let dan = "@dan:remote.test";
    room.remote_join(dan).await;
    let tips = room.tips().await;
    let auth = room.auth_for(dan, false).await;
    let position = room.rooms.current_position();

    // Signed by a key the receiver does not know.
    let stranger = Remote::new("other");
    let prev: Vec<&str> = tips.iter().map(String::as_str).collect();
    let auth_ids: Vec<&str> = auth.iter().map(String::as_str).collect();
    let forged = stranger
        .pdu(
            &room.rooms,
            &room.id,
            dan,
            "m.room.message",
            None,
            json!({"body": "x"}),
            &prev,
            &auth_ids,
            now(),
        )
        .await;
    let r = room.rooms.ingest(forged, &room.remote.keys).await;
    assert!(matches!(r, Err(CoreError::Forbidden(_))), "{r:?}");

    // A prev event this server does not have.
    let missing = vec!["$notstoredhere000000000000000000000000000000".to_owned()];
    let gap = room.message(dan, "x", &missing, &auth).await;
    let r = room.rooms.ingest(gap, &room.remote.keys).await;
    assert!(matches!(r, Err(CoreError::NotFound(_))), "{r:?}");

    // A user who is not in the room.
    let eve = "@eve:remote.test";
    let pdu = room.message(eve, "x", &tips, &auth[..2]).await;
    let r = room.rooms.ingest(pdu, &room.remote.keys).await;
    assert!(matches!(r, Err(CoreError::Forbidden(_))), "{r:?}");
    // A room this server does not have.
    let mut elsewhere = room.message(dan, "x", &tips, &auth).await;
    elsewhere.insert(
        "room_id".into(),
        ruma::CanonicalJsonValue::String("!nope:remote.test".into()),
    );
    let r = room.rooms.ingest(elsewhere, &room.remote.keys).await;
    assert!(matches!(r, Err(CoreError::NotFound(_))), "{r:?}");
    assert_eq!(room.rooms.current_position(), position, "nothing refused was stored");
    assert_eq!(room.tips().await, tips);

    // Content that does not match its hash: redacted, then taken in.
    let mut tampered = room.message(dan, "signed", &tips, &auth).await;
    tampered.insert(
        "content".into(),
        serde_json::from_value(json!({"body": "changed"})).unwrap(),
    );
    let (id, outcome) = room.rooms.ingest(tampered, &room.remote.keys).await.unwrap();
    assert!(matches!(outcome, Ingested::Accepted(_)), "{outcome:?}");
    assert_eq!(room.content(id.as_str()).await, json!({}), "stored redacted");

    // Alice bans dan; dan's message built before the ban arrives after it: allowed by the
    // state it was built on, not by the room's state now.
    let before_ban = room.tips().await;
    room.send(
        "@alice:ours.test",
        "m.room.member",
        Some(dan),
        json!({"membership": "ban"}),
    )
    .await;
    let position = room.rooms.current_position();
    let late = room.message(dan, "late", &before_ban, &auth).await;
    let (id, outcome) = room.rooms.ingest(late, &room.remote.keys).await.unwrap();
    assert!(matches!(outcome, Ingested::SoftFailed(_)), "{outcome:?}");
    assert!(room.rooms.event(id.as_str()).await.unwrap().is_none());
    assert_eq!(room.rooms.current_position(), position);
}

/// On one line, the state after each event is the state at its position, across the full
/// groups that cut the delta chains (one every 100 state events).
async fn state_after_along_a_long_line(backend: Backend) {
    let room = Room::new(backend).await;
    let key = ("m.room.topic".to_owned(), String::new());
    let mut topics = Vec::new();
    for i in 0..130 {
        let id = room
            .send(
                "@alice:ours.test",
                "m.room.topic",
                Some(""),
                json!({ "topic": format!("t{i}") }),
            )
            .await;
        if i % 10 == 0 {
            room.send("@carol:ours.test", "m.room.message", None, json!({"body": i}))
                .await;
        }
        topics.push(id);
    }
    for (i, id) in topics.iter().enumerate() {
        assert_eq!(&room.rooms.state_after(id).await.unwrap()[&key], id, "topic {i}");
    }
    let current = room.rooms.current_state(room.id.as_str()).await.unwrap();
    let current: std::collections::BTreeMap<(String, String), String> = current
        .into_iter()
        .map(|e| ((e.kind, e.state_key.unwrap()), e.event_id))
        .collect();
    let last = room.tips().await.pop().unwrap();
    assert_eq!(room.rooms.state_after(&last).await.unwrap(), current);
    assert_eq!(
        current.len(),
        9,
        "create, levels, join rules, visibility, guest access, topic, 3 members"
    );
}

/// A database from before state groups (migration 0018): its events have none. The state
/// after them is the state at their position; the first new event starts a full group; a
/// branch from an old event resolves against it.
async fn events_from_before_state_groups(backend: Backend) {
    let room = Room::new(backend).await;
    let old_topic = room.state_id("m.room.topic", "").await.unwrap();
    let old_tip = room.tips().await.pop().unwrap();
    let before = room.rooms.state_after(&old_tip).await.unwrap();
    estuary_tests::execute_sql(&room.db, "UPDATE events SET state_group = NULL").await;
    estuary_tests::execute_sql(&room.db, "DELETE FROM state_groups").await;
    // The server starts again on that database.
    let streams = Arc::new(Streams::new(Positions {
        events: room.rooms.current_position(),
        ..Positions::default()
    }));
    let rooms = Rooms::new(
        room.store.clone(),
        room.key.clone(),
        ServerName::parse("ours.test").unwrap(),
        streams,
    );
    assert_eq!(
        rooms.state_after(&old_tip).await.unwrap(),
        before,
        "from the events' positions"
    );
    let message = EventTemplate::message("m.room.message", json!({"body": "after the upgrade"}));
    let (first, _) = rooms
        .send(&room.id, &user("@alice:ours.test"), message, None)
        .await
        .unwrap();
    assert_eq!(rooms.state_after(first.as_str()).await.unwrap(), before, "a full group");
    let topic = EventTemplate::state("m.room.topic", "", json!({"topic": "new"}));
    let (alice, _) = rooms
        .send(&room.id, &user("@alice:ours.test"), topic, None)
        .await
        .unwrap();
    let key = ("m.room.topic".to_owned(), String::new());
    assert_eq!(rooms.state_after(alice.as_str()).await.unwrap()[&key], alice.as_str());
    // Bob branches off the old tip; his topic is older, so alice's stays.
    let auth = room.auth_for("@bob:remote.test", false).await;
    let pdu = room
        .pdu(
            "@bob:remote.test",
            "m.room.topic",
            Some(""),
            json!({"topic": "bob's"}),
            &[old_tip],
            &auth,
            now() - 60_000,
        )
        .await;
    let (bob, outcome) = rooms.ingest(pdu, &room.remote.keys).await.unwrap();
    assert!(matches!(outcome, Ingested::Accepted(_)), "{outcome:?}");
    assert_eq!(rooms.state_after(bob.as_str()).await.unwrap()[&key], bob.as_str());
    let current = rooms.state_event(room.id.as_str(), "m.room.topic", "").await.unwrap();
    assert_eq!(current.unwrap().event_id, alice.as_str());
    assert_ne!(old_topic, alice.as_str());
}

both_backends!(
    events_from_before_state_groups,
    state_after_along_a_long_line,
    concurrent_topics_resolve_by_order_not_arrival,
    demotion_beats_concurrent_topic,
    refused_and_soft_failed,
);
