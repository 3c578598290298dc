//! Events in the client format (spec: Client-Server API, "Room Event Format"): the PDU minus
//! federation fields, plus `unsigned`.

use estuary_core::StoredEvent;
use estuary_core::rooms::Pdu;
use serde_json::{Map, Value, json};

/// The client form of a stored event. `room_id` is left out inside sync's per-room sections.
pub fn client_event(e: &StoredEvent, with_room_id: bool) -> Value {
    // Only these two fields of the PDU are read: parsing the rest (hashes, signatures, auth and
    // previous events) into values was most of the cost of every timeline.
    #[derive(serde::Deserialize, Default)]
    struct ClientPart {
        content: Option<Value>,
        redacts: Option<Value>,
    }
    let pdu: ClientPart = serde_json::from_str(&e.pdu).unwrap_or_default();
    let mut out = Map::new();
    out.insert("event_id".into(), json!(e.event_id));
    out.insert("type".into(), json!(e.kind));
    out.insert("sender".into(), json!(e.sender));
    out.insert("origin_server_ts".into(), json!(e.origin_server_ts));
    out.insert("content".into(), pdu.content.unwrap_or_else(|| json!({})));
    if let Some(k) = &e.state_key {
        out.insert("state_key".into(), json!(k));
    }
    if with_room_id {
        out.insert("room_id".into(), json!(e.room_id));
    }
    if let Some(r) = pdu.redacts {
        out.insert("redacts".into(), r);
    }
    let mut unsigned = Map::new();
    let age = estuary_core::now_ms().saturating_sub(e.origin_server_ts).max(0);
    unsigned.insert("age".into(), json!(age));
    if let Some(by) = &e.redacted_by {
        // Redactions applied before the redaction was kept whole have its ID only.
        let because = e
            .redacted_because
            .as_deref()
            .and_then(|b| serde_json::from_str::<Value>(b).ok())
            .unwrap_or_else(|| json!({ "event_id": by }));
        unsigned.insert("redacted_because".into(), because);
    }
    if let Some(prev) = &e.replaces_state {
        unsigned.insert("replaces_state".into(), json!(prev));
        if let Some(content) = e
            .prev_content
            .as_deref()
            .and_then(|c| serde_json::from_str::<Value>(c).ok())
        {
            unsigned.insert("prev_content".into(), content);
        }
    }
    out.insert("unsigned".into(), Value::Object(unsigned));
    Value::Object(out)
}

/// Stripped state (spec: "Stripped state"), as shown with invites.
pub fn stripped(e: &StoredEvent) -> Value {
    let content = Pdu::from_stored(e)
        .map(|p| p.content_value())
        .unwrap_or_else(|_| json!({}));
    json!({ "type": e.kind, "state_key": e.state_key.clone().unwrap_or_default(), "sender": e.sender, "content": content })
}

/// The client form for a given viewer: adds `unsigned.transaction_id` when the viewer's own
/// device sent the event (clients match their local echo with it).
pub fn client_event_for(
    state: &crate::MatrixState,
    viewer: &crate::Caller,
    e: &StoredEvent,
    with_room_id: bool,
) -> Value {
    let mut out = client_event(e, with_room_id);
    if e.sender == viewer.user_id.as_str()
        && let Some(txn) = state
            .core
            .rooms
            .txn_of(&e.event_id, &viewer.localpart, viewer.device_id.as_str())
    {
        out["unsigned"]["transaction_id"] = json!(txn);
    }
    out
}
