//! Room event filters (spec: `RoomEventFilter`, as in `/messages?filter=` and a sync
//! filter's `room.timeline` / `room.state`): event types and senders to include or leave out
//! (`*` wildcards in types), `contains_url`, and lazy loading of members.

use estuary_core::StoredEvent;
use serde_json::Value;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    types: Option<Vec<String>>,
    not_types: Vec<String>,
    senders: Option<Vec<String>>,
    not_senders: Vec<String>,
    contains_url: Option<bool>,
    /// Send only the membership events of the senders of the events sent (and the user's).
    pub lazy_load_members: bool,
    pub limit: Option<i64>,
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
}

/// Spec: `*` matches any sequence of characters.
fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, rest)) => {
            let Some(tail) = s.strip_prefix(head) else { return false };
            (0..=tail.len())
                .filter(|i| tail.is_char_boundary(*i))
                .any(|i| glob(rest, &tail[i..]))
        }
    }
}

impl EventFilter {
    /// From the JSON of a RoomEventFilter (missing or malformed fields filter nothing).
    pub fn from_json(v: &Value) -> Self {
        Self {
            types: strings(&v["types"]),
            not_types: strings(&v["not_types"]).unwrap_or_default(),
            senders: strings(&v["senders"]),
            not_senders: strings(&v["not_senders"]).unwrap_or_default(),
            contains_url: v["contains_url"].as_bool(),
            lazy_load_members: v["lazy_load_members"].as_bool().unwrap_or(false),
            limit: v["limit"].as_i64(),
        }
    }

    /// Whether an event passes the filter.
    pub fn matches(&self, e: &StoredEvent) -> bool {
        if self.not_types.iter().any(|t| glob(t, &e.kind)) || self.not_senders.contains(&e.sender) {
            return false;
        }
        if self
            .types
            .as_ref()
            .is_some_and(|ts| !ts.iter().any(|t| glob(t, &e.kind)))
        {
            return false;
        }
        if self.senders.as_ref().is_some_and(|ss| !ss.contains(&e.sender)) {
            return false;
        }
        if let Some(want) = self.contains_url {
            let has = serde_json::from_str::<Value>(&e.pdu)
                .ok()
                .is_some_and(|p| p["content"]["url"].is_string());
            if has != want {
                return false;
            }
        }
        true
    }

    /// Whether it lets every event through.
    pub fn passes_everything(&self) -> bool {
        self.types.is_none()
            && self.not_types.is_empty()
            && self.senders.is_none()
            && self.not_senders.is_empty()
            && self.contains_url.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, sender: &str, content: Value) -> StoredEvent {
        StoredEvent {
            stream_ordering: 1,
            event_id: "$e".into(),
            room_id: "!r:x".into(),
            depth: 1,
            sender: sender.into(),
            kind: kind.into(),
            state_key: None,
            origin_server_ts: 0,
            pdu: json!({ "content": content }).to_string(),
            redacted_by: None,
            replaces_state: None,
            prev_content: None,
            redacted_because: None,
        }
    }

    #[test]
    fn types_senders_urls() {
        let f = EventFilter::from_json(&json!({ "types": ["m.room.*"], "not_senders": ["@spam:x"] }));
        assert!(f.matches(&event("m.room.message", "@a:x", json!({}))));
        assert!(!f.matches(&event("m.reaction", "@a:x", json!({}))));
        assert!(!f.matches(&event("m.room.message", "@spam:x", json!({}))));
        let f = EventFilter::from_json(&json!({ "contains_url": true, "not_types": ["*.redaction"] }));
        assert!(f.matches(&event("m.room.message", "@a:x", json!({ "url": "mxc://x/y" }))));
        assert!(!f.matches(&event("m.room.message", "@a:x", json!({}))));
        assert!(!f.matches(&event("m.room.redaction", "@a:x", json!({ "url": "mxc://x/y" }))));
        assert!(EventFilter::from_json(&json!({})).passes_everything());
        assert!(glob("a*b*c", "aXXbYc") && !glob("a*b", "ac") && glob("*", ""));
    }
}
