//! What the room service tests share: a room service on a test database, and a public room of
//! alice's on ours.test.
#![allow(clippy::unwrap_used, dead_code)]

use std::sync::Arc;

use estuary_core::keys::ServerKey;
use estuary_core::rooms::Rooms;
use estuary_core::rooms::create::{CreateRoom, Preset};
use estuary_core::streams::{Positions, Streams};
use estuary_tests::TestDb;
use ruma::{OwnedRoomId, OwnedUserId, ServerName};

pub fn user(s: &str) -> OwnedUserId {
    s.try_into().unwrap()
}

/// The room service of ours.test on `db`, with its store and signing key.
pub async fn rooms_on(db: &TestDb) -> (Arc<dyn estuary_store::Store>, Arc<ServerKey>, Rooms) {
    let store = estuary_store::open(&db.url).await.unwrap();
    let key = ServerKey::load_or_create(&store).await.unwrap();
    let streams = Arc::new(Streams::new(Positions::default()));
    let rooms = Rooms::new(
        store.clone(),
        key.clone(),
        ServerName::parse("ours.test").unwrap(),
        streams,
    );
    (store, key, rooms)
}

/// A public room (version 11) made by @alice:ours.test.
pub async fn public_room(
    rooms: &Rooms,
    topic: Option<&str>,
    power_levels: Option<serde_json::Map<String, serde_json::Value>>,
) -> OwnedRoomId {
    rooms
        .create_room(CreateRoom {
            creator: user("@alice:ours.test"),
            creator_profile: (None, None),
            room_version: Some("11".into()),
            preset: Preset::PublicChat,
            name: None,
            topic: topic.map(str::to_owned),
            invite: Vec::new(),
            is_direct: false,
            initial_state: Vec::new(),
            alias: None,
            power_level_content_override: power_levels,
            creation_content: None,
            publish: false,
            encrypt: false,
        })
        .await
        .unwrap()
}
