//! Room creation (spec: Client-Server API, `POST /createRoom`): the initial events in the
//! spec's order, presets, and encryption by default for private rooms and DMs.

use std::collections::HashSet;

use estuary_store::{NewEvent, NewRoom, RoomRecord, StoredEvent};
use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::{Map, Value, json};

use super::{DEFAULT_ROOM_VERSION, EventTemplate, RoomState, Rooms, rules_for};
use crate::{CoreError, now_ms};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

#[derive(Debug, Clone)]
pub struct CreateRoom {
    pub creator: OwnedUserId,
    /// Display name and avatar for the creator's member event.
    pub creator_profile: (Option<String>, Option<String>),
    pub room_version: Option<String>,
    pub preset: Preset,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    pub initial_state: Vec<EventTemplate>,
    /// Full alias (`#room:server`) to create and point at the room.
    pub alias: Option<String>,
    pub power_level_content_override: Option<Map<String, Value>>,
    pub creation_content: Option<Map<String, Value>>,
    /// Publish in the room directory.
    pub publish: bool,
    /// Add m.room.encryption unless initial_state has one: the operator's default for private
    /// presets and DMs (see `matrix.encrypt_private_rooms`).
    pub encrypt: bool,
}

/// The megolm algorithm every Matrix client supports.
pub const MEGOLM: &str = "m.megolm.v1.aes-sha2";

impl Rooms {
    pub async fn create_room(&self, req: CreateRoom) -> Result<OwnedRoomId, CoreError> {
        let version = req
            .room_version
            .clone()
            .unwrap_or_else(|| DEFAULT_ROOM_VERSION.to_string());
        let (version_id, rules) = rules_for(&version)?;
        if let Some(alias) = &req.alias
            && self.store.alias(alias).await?.is_some()
        {
            return Err(CoreError::AliasInUse(alias.clone()));
        }
        let room_id = self.new_room_id()?;
        let creator = req.creator.as_str();

        let mut create = req.creation_content.clone().unwrap_or_default();
        create.insert("room_version".into(), json!(version_id.as_str()));
        if rules.authorization.use_room_create_sender {
            create.remove("creator");
        } else {
            create.insert("creator".into(), json!(creator));
        }
        let mut events = vec![EventTemplate::state("m.room.create", "", Value::Object(create))];

        let mut member = json!({ "membership": "join" });
        if let Some(n) = &req.creator_profile.0 {
            member["displayname"] = json!(n);
        }
        if let Some(a) = &req.creator_profile.1 {
            member["avatar_url"] = json!(a);
        }
        events.push(EventTemplate::state("m.room.member", creator, member));

        let mut users = Map::new();
        users.insert(creator.to_owned(), json!(100));
        if req.preset == Preset::TrustedPrivateChat {
            for u in &req.invite {
                users.insert(u.to_string(), json!(100));
            }
        }
        let mut power = json!({
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
                "m.room.server_acl": 100, "m.room.encryption": 100
            },
            "events_default": 0,
            "state_default": 50,
            "ban": 50,
            "kick": 50,
            "redact": 50,
            "invite": 0,
            "historical": 100,
            "notifications": { "room": 50 }
        });
        if let (Some(over), Value::Object(p)) = (&req.power_level_content_override, &mut power) {
            for (k, v) in over {
                p.insert(k.clone(), v.clone());
            }
        }
        // The override is applied as asked, but an override that takes the creator's power
        // away would make the rest of the creation fail half-way (a room with some of its
        // initial state). So the creator keeps 100 while the room is built, and the
        // override's exact levels come last, once everything else is in.
        let creator_level = power["users"][creator].as_i64();
        let mut final_power = None;
        if creator_level != Some(100) {
            final_power = Some(power.clone());
            if !power["users"].is_object() {
                power["users"] = json!({});
            }
            power["users"][creator] = json!(100);
        }
        events.push(EventTemplate::state("m.room.power_levels", "", power));
        if let Some(alias) = &req.alias {
            events.push(EventTemplate::state(
                "m.room.canonical_alias",
                "",
                json!({ "alias": alias }),
            ));
        }

        // Preset state, then initial_state (which overrides the preset for the same key).
        let (join_rule, guest) = match req.preset {
            Preset::PublicChat => ("public", "forbidden"),
            Preset::PrivateChat | Preset::TrustedPrivateChat => ("invite", "can_join"),
        };
        let mut preset = vec![
            EventTemplate::state("m.room.join_rules", "", json!({ "join_rule": join_rule })),
            EventTemplate::state(
                "m.room.history_visibility",
                "",
                json!({ "history_visibility": "shared" }),
            ),
            EventTemplate::state("m.room.guest_access", "", json!({ "guest_access": guest })),
        ];
        if req.encrypt {
            preset.push(EventTemplate::state(
                "m.room.encryption",
                "",
                json!({ "algorithm": MEGOLM }),
            ));
        }
        let given: HashSet<(String, String)> = req
            .initial_state
            .iter()
            .map(|t| (t.kind.clone(), t.state_key.clone().unwrap_or_default()))
            .collect();
        for t in preset {
            if !given.contains(&(t.kind.clone(), t.state_key.clone().unwrap_or_default())) {
                events.push(t);
            }
        }
        for t in &req.initial_state {
            if matches!(
                t.kind.as_str(),
                "m.room.create" | "m.room.member" | "m.room.power_levels"
            ) {
                return Err(CoreError::InvalidParam(format!(
                    "initial_state may not contain {}",
                    t.kind
                )));
            }
            events.push(EventTemplate {
                state_key: Some(t.state_key.clone().unwrap_or_default()),
                ..t.clone()
            });
        }
        if let Some(name) = &req.name {
            events.push(EventTemplate::state("m.room.name", "", json!({ "name": name })));
        }
        if let Some(topic) = &req.topic {
            events.push(EventTemplate::state("m.room.topic", "", json!({ "topic": topic })));
        }
        for u in &req.invite {
            let mut content = json!({ "membership": "invite" });
            if req.is_direct {
                content["is_direct"] = json!(true);
            }
            events.push(EventTemplate::state("m.room.member", u.as_str(), content));
        }
        if let Some(power) = final_power {
            events.push(EventTemplate::state("m.room.power_levels", "", power));
        }

        let record = RoomRecord {
            room_id: room_id.to_string(),
            room_version: version_id.to_string(),
            creator: creator.to_owned(),
            created_at: now_ms(),
            published: req.publish,
        };
        // Every initial event is built on the state the ones before it make, and the room is
        // stored with all of them in one transaction, or not at all: a crash or a refused
        // event never leaves a room without its power levels or its encryption.
        let guard = self.room_lock(&room_id).lock_owned().await;
        let mut built = Vec::with_capacity(events.len());
        let mut current = RoomState::from_current(Vec::new());
        for t in &events {
            let tip = built.last().map(|e: &NewEvent| vec![(e.event_id.clone(), e.depth)]);
            let (new, _) = self
                .build(
                    &room_id,
                    &rules,
                    &req.creator,
                    t,
                    &current,
                    tip.unwrap_or_default(),
                    None,
                )
                .await?;
            current.insert(as_stored(&new, built.len()));
            current.follow(&new);
            built.push(new);
        }
        let room = NewRoom {
            record,
            alias: req.alias.clone(),
        };
        self.writer
            .create(room, built, guard)
            .await
            .map_err(|e| match (e, &req.alias) {
                (CoreError::Store(estuary_store::StoreError::Conflict), Some(alias)) => {
                    CoreError::AliasInUse(alias.clone())
                }
                (e, _) => e,
            })?;
        tracing::info!(room = %room_id, version = %version_id, "room created");
        Ok(room_id)
    }
}

/// An event of a room being created, as the next one's auth checks look it up.
fn as_stored(e: &NewEvent, position: usize) -> StoredEvent {
    e.stored_at(i64::try_from(position).unwrap_or(i64::MAX))
}
