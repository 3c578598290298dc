//! A PDU (persistent data unit): a room event as federation sees it, parsed from its canonical
//! JSON, implementing ruma-state-res's `Event` so the auth rules can run on it.

use ruma::events::TimelineEventType;
use ruma::{EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::CoreError;

#[derive(Debug, Clone)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub content: Box<RawValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    pub redacts: Option<OwnedEventId>,
    pub depth: u64,
}

#[derive(Deserialize)]
struct Wire {
    room_id: OwnedRoomId,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawValue>,
    state_key: Option<String>,
    prev_events: Vec<OwnedEventId>,
    auth_events: Vec<OwnedEventId>,
    redacts: Option<OwnedEventId>,
    depth: UInt,
}

#[derive(Deserialize)]
struct RedactsInContent {
    redacts: Option<OwnedEventId>,
}

impl Pdu {
    /// Parse a PDU's JSON; `event_id` comes from outside (room versions 3+ do not carry it).
    pub fn from_json(event_id: &str, json: &str) -> Result<Pdu, CoreError> {
        let bad = |e: &dyn std::fmt::Display| CoreError::Internal(format!("event {event_id} is malformed: {e}"));
        let w: Wire = serde_json::from_str(json).map_err(|e| bad(&e))?;
        let event_id = EventId::parse(event_id).map_err(|e| bad(&e))?;
        // Room version 11 moved `redacts` into the content (MSC2174).
        let redacts = match w.redacts {
            Some(r) => Some(r),
            None if w.kind == TimelineEventType::RoomRedaction => {
                serde_json::from_str::<RedactsInContent>(w.content.get())
                    .ok()
                    .and_then(|c| c.redacts)
            }
            None => None,
        };
        Ok(Pdu {
            event_id,
            room_id: w.room_id,
            sender: w.sender,
            origin_server_ts: w.origin_server_ts,
            kind: w.kind,
            content: w.content,
            state_key: w.state_key,
            prev_events: w.prev_events,
            auth_events: w.auth_events,
            redacts,
            depth: w.depth.into(),
        })
    }

    pub fn from_stored(e: &estuary_store::StoredEvent) -> Result<Pdu, CoreError> {
        Pdu::from_json(&e.event_id, &e.pdu)
    }

    /// `origin_server_ts` as stored.
    pub fn origin_ts(&self) -> i64 {
        u64::from(self.origin_server_ts.0).try_into().unwrap_or(i64::MAX)
    }

    /// For m.room.member: the membership.
    pub fn membership(&self) -> Option<String> {
        (self.kind == TimelineEventType::RoomMember)
            .then(|| self.content_value()["membership"].as_str().map(str::to_owned))
            .flatten()
    }

    /// The content as a JSON value.
    pub fn content_value(&self) -> serde_json::Value {
        serde_json::from_str(self.content.get()).unwrap_or(serde_json::Value::Null)
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }
    fn room_id(&self) -> Option<&RoomId> {
        Some(&self.room_id)
    }
    fn sender(&self) -> &UserId {
        &self.sender
    }
    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }
    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }
    fn content(&self) -> &RawValue {
        &self.content
    }
    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }
    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }
    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }
    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }
    fn rejected(&self) -> bool {
        false
    }
}
