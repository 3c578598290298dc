//! Messages queued ahead of their commit (`Rooms::send_queued`), over a real store, on SQLite
//! and PostgreSQL: the room's next event is built on one still committing, they commit in
//! order, a repeated transaction is one event, and a failed commit takes down what was built
//! on it, never leaving an event whose prev event the store lacks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use estuary_core::rooms::{EventTemplate, Queued, Rooms};
use estuary_tests::{Backend, TestDb, both_backends, execute_sql};
use ruma::OwnedRoomId;
use serde_json::{Value, json};

struct Room {
    db: TestDb,
    rooms: Rooms,
    id: OwnedRoomId,
}

use common::user;

impl Room {
    /// A public room of alice's on ours.test, which carol joined.
    async fn new(backend: Backend) -> Room {
        let db = TestDb::new(backend).await;
        let (_, _, rooms) = common::rooms_on(&db).await;
        let id = common::public_room(&rooms, None, None).await;
        let carol = user("@carol:ours.test");
        let join = EventTemplate::state("m.room.member", carol.as_str(), json!({"membership": "join"}));
        rooms.send(&id, &carol, join, None).await.unwrap();
        Room { db, rooms, id }
    }

    /// Queue a message of `sender` (not waiting for its commit).
    async fn queue(&self, sender: &str, body: &str, txn: Option<&str>) -> Queued {
        self.queue_on(&self.rooms, sender, body, txn).await
    }

    /// [`Room::queue`] through another room service over the same store.
    async fn queue_on(&self, rooms: &Rooms, sender: &str, body: &str, txn: Option<&str>) -> Queued {
        let content = json!({"msgtype": "m.text", "body": body});
        let txn = txn.map(|t| {
            (
                sender[1..].split(':').next().unwrap().to_owned(),
                "DEV".to_owned(),
                t.to_owned(),
            )
        });
        rooms
            .send_queued(
                &self.id,
                &user(sender),
                EventTemplate::message("m.room.message", content),
                txn,
            )
            .await
            .unwrap()
    }

    async fn prev_events(&self, event_id: &str) -> Vec<String> {
        let e = self.rooms.event(event_id).await.unwrap().expect("stored");
        let pdu: Value = serde_json::from_str(&e.pdu).unwrap();
        serde_json::from_value(pdu["prev_events"].clone()).unwrap()
    }

    async fn tips(&self) -> Vec<String> {
        self.rooms.tips(self.id.as_str()).await.unwrap()
    }
}

/// Twenty messages of two senders, each queued before the one before it is committed: one
/// line of history, committed in the order queued, and a transaction repeated while its first
/// event is queued gives that event.
async fn queued_messages_make_one_line(backend: Backend) {
    let room = Room::new(backend).await;
    let before = room.tips().await;
    assert_eq!(before.len(), 1);
    let mut queued = Vec::new();
    for i in 0..20 {
        let sender = if i % 2 == 0 {
            "@alice:ours.test"
        } else {
            "@carol:ours.test"
        };
        queued.push(room.queue(sender, &format!("m{i}"), Some(&format!("t{i}"))).await);
    }
    // Carol repeats her last transaction, which may still be queued.
    let again = room.queue("@carol:ours.test", "m19 again", Some("t19")).await;
    let ids: Vec<String> = queued.iter().map(|q| q.event_id.to_string()).collect();
    assert_eq!(
        again.event_id.to_string(),
        ids[19],
        "a repeated transaction is the first event"
    );
    let mut positions = Vec::new();
    for q in queued {
        positions.push(q.committed().await.unwrap());
    }
    assert_eq!(again.committed().await.unwrap(), positions[19]);
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "committed in the order queued: {positions:?}"
    );
    let mut prev = before[0].clone();
    for id in &ids {
        assert_eq!(
            room.prev_events(id).await,
            vec![prev.clone()],
            "each is built on the one before"
        );
        prev = id.clone();
    }
    assert_eq!(room.tips().await, vec![ids[19].clone()]);
    // The next event, a state event that waits for its commit, follows the line.
    let topic = EventTemplate::state("m.room.topic", "", json!({"topic": "after"}));
    let (topic_id, at) = room
        .rooms
        .send(&room.id, &user("@alice:ours.test"), topic, None)
        .await
        .unwrap();
    assert!(at > positions[19]);
    assert_eq!(room.prev_events(topic_id.as_str()).await, vec![ids[19].clone()]);
}

/// The store refuses one message: it fails, and so does the message queued on top of it,
/// which is not stored; the room goes on from the last event that was committed.
async fn a_failed_commit_fails_what_was_built_on_it(backend: Backend) {
    let room = Room::new(backend).await;
    match backend {
        Backend::Sqlite => {
            execute_sql(
                &room.db,
                "CREATE TRIGGER poison BEFORE INSERT ON events WHEN NEW.pdu LIKE '%poison%' \
                 BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
            )
            .await;
        }
        Backend::Postgres => {
            execute_sql(
                &room.db,
                "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN \
                 IF NEW.pdu LIKE '%poison%' THEN RAISE EXCEPTION 'poisoned'; END IF; \
                 RETURN NEW; END $$ LANGUAGE plpgsql",
            )
            .await;
            execute_sql(
                &room.db,
                "CREATE TRIGGER poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION poison()",
            )
            .await;
        }
    }
    let first = room.queue("@alice:ours.test", "fine", None).await;
    let bad = room.queue("@alice:ours.test", "poison", Some("bad")).await;
    let on_bad = room.queue("@carol:ours.test", "built on the refused one", None).await;
    let (first_id, bad_id, on_bad_id) = (
        first.event_id.to_string(),
        bad.event_id.to_string(),
        on_bad.event_id.to_string(),
    );
    first.committed().await.expect("the first message commits");
    assert!(bad.committed().await.is_err(), "the refused message fails");
    assert!(on_bad.committed().await.is_err(), "the message built on it fails too");
    for id in [&bad_id, &on_bad_id] {
        assert!(room.rooms.event(id).await.unwrap().is_none(), "{id} is not stored");
    }
    // The room goes on from the first message; the failed transaction is free again.
    let next = room.queue("@carol:ours.test", "next", None).await;
    let next_id = next.event_id.to_string();
    next.committed().await.unwrap();
    assert_eq!(room.prev_events(&next_id).await, vec![first_id]);
    assert_eq!(room.tips().await, vec![next_id]);
    let retried = room.queue("@alice:ours.test", "poison again", Some("bad")).await;
    assert!(retried.committed().await.is_err(), "the trigger still refuses it");
}

/// A transaction the store holds from before a restart is a repeat after it: memory reads a
/// device's transactions from the store once before it answers "new" without asking; what
/// commits after that read is a repeat too.
async fn transactions_outlive_a_restart(backend: Backend) {
    let room = Room::new(backend).await;
    let before = room.queue("@alice:ours.test", "one", Some("t1")).await;
    let before_id = before.event_id.to_string();
    before.committed().await.unwrap();
    // A second room service over the same store: nothing of alice's device in its memory.
    let (_, _, restarted) = common::rooms_on(&room.db).await;
    let sent = |body, txn| room.queue_on(&restarted, "@alice:ours.test", body, Some(txn));
    let two = sent("two", "t2").await;
    let two_id = two.event_id.to_string();
    two.committed().await.unwrap();
    assert_ne!(two_id, before_id);
    assert_eq!(
        sent("one again", "t1").await.event_id.to_string(),
        before_id,
        "committed before the restart"
    );
    assert_eq!(
        sent("two again", "t2").await.event_id.to_string(),
        two_id,
        "committed after the device's transactions were read"
    );
    let three = sent("three", "t3").await;
    assert!(![&before_id, &two_id].contains(&&three.event_id.to_string()));
    three.committed().await.unwrap();
    // The same transaction ID of another device is its own.
    let carol = room
        .queue_on(&restarted, "@carol:ours.test", "carol's", Some("t1"))
        .await;
    assert_ne!(carol.event_id.to_string(), before_id);
}

both_backends!(
    transactions_outlive_a_restart,
    queued_messages_make_one_line,
    a_failed_commit_fails_what_was_built_on_it
);
