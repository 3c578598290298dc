//! Ephemeral data that is never stored: typing notifications and presence. Both exist to be
//! shown live and are forgotten on restart (privacy: no activity history is kept).

use crate::Locked;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::streams::Streams;

/// Longest typing timeout a client may ask for (Synapse caps it too).
pub const MAX_TYPING: Duration = Duration::from_secs(120);

#[derive(Default)]
struct RoomTyping {
    users: HashMap<String, Instant>,
    changed_at: i64,
}

pub struct Typing {
    rooms: Mutex<HashMap<String, RoomTyping>>,
    streams: Arc<Streams>,
}

impl Typing {
    pub fn new(streams: Arc<Streams>) -> Arc<Self> {
        Arc::new(Self {
            rooms: Mutex::new(HashMap::new()),
            streams,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, RoomTyping>> {
        self.rooms.locked()
    }

    /// Start (for `timeout`) or stop typing.
    pub fn set(&self, room_id: &str, user_id: &str, typing: Option<Duration>) {
        let mut rooms = self.lock();
        let room = rooms.entry(room_id.to_owned()).or_default();
        let changed = match typing {
            Some(t) => room
                .users
                .insert(user_id.to_owned(), Instant::now() + t.min(MAX_TYPING))
                .is_none(),
            None => room.users.remove(user_id).is_some(),
        };
        if changed {
            let pos = self.streams.advance(|p| p.typing += 1).typing;
            room.changed_at = pos;
        }
    }

    /// Who is typing in a room, if that changed after position `since`.
    pub fn changed_since(&self, room_id: &str, since: i64) -> Option<Vec<String>> {
        let rooms = self.lock();
        let room = rooms.get(room_id)?;
        (room.changed_at > since || since > self.streams.current().typing).then(|| {
            let mut users: Vec<String> = room.users.keys().cloned().collect();
            users.sort();
            users
        })
    }

    /// Every room whose typing changed after position `since`, with who is typing in it now.
    pub fn rooms_changed_since(&self, since: i64) -> Vec<(String, Vec<String>)> {
        let rooms = self.lock();
        rooms
            .iter()
            .filter(|(_, r)| r.changed_at > since)
            .map(|(id, r)| (id.clone(), r.users.keys().cloned().collect()))
            .collect()
    }

    /// Drop expired typing entries; each room that changes bumps the stream.
    pub fn expire(&self) {
        let now = Instant::now();
        let mut rooms = self.lock();
        for room in rooms.values_mut() {
            let before = room.users.len();
            room.users.retain(|_, until| *until > now);
            if room.users.len() != before {
                room.changed_at = self.streams.advance(|p| p.typing += 1).typing;
            }
        }
        rooms.retain(|_, r| !r.users.is_empty() || r.changed_at > 0);
    }

    /// Expire typing notifications every second until the process ends.
    pub fn spawn_expiry(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                match me.upgrade() {
                    Some(t) => t.expire(),
                    None => return,
                }
            }
        });
    }
}

/// A client that long-polls syncs at least every 30 s (the longest sync timeout clients use);
/// one quiet for this long has gone away.
pub const GONE_AFTER_MS: i64 = 90_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceState {
    pub presence: String,
    pub status_msg: Option<String>,
    pub last_active_ms: i64,
    pub changed_at: i64,
}

pub struct Presence {
    users: Mutex<HashMap<String, PresenceState>>,
    /// Users whose presence a live connection holds (an XMPP session): they do not expire.
    kept: Mutex<HashSet<String>>,
    streams: Arc<Streams>,
}

impl Presence {
    pub fn new(streams: Arc<Streams>) -> Self {
        Self {
            users: Mutex::new(HashMap::new()),
            kept: Mutex::new(HashSet::new()),
            streams,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, PresenceState>> {
        self.users.locked()
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.kept.locked()
    }

    /// Set a user's presence as a live connection reports it: `kept` while the connection
    /// holds it (the user does not expire however long it stays quiet), not once it let go.
    pub fn set_held(&self, user_id: &str, presence: &str, status_msg: Option<String>, kept: bool) {
        if kept {
            self.kept().insert(user_id.to_owned());
        } else {
            self.kept().remove(user_id);
        }
        self.set(user_id, presence, Some(status_msg));
    }

    /// Set a user's presence; `status_msg` None keeps the current message. A no-op when
    /// nothing changes, so syncing "online" over and over does not wake anyone.
    pub fn set(&self, user_id: &str, presence: &str, status_msg: Option<Option<String>>) {
        let mut users = self.lock();
        let now = crate::now_ms();
        let old = users.get(user_id).cloned();
        let msg = match status_msg {
            Some(m) => m,
            None => old.as_ref().and_then(|o| o.status_msg.clone()),
        };
        let unchanged = old
            .as_ref()
            .is_some_and(|o| o.presence == presence && o.status_msg == msg);
        if unchanged {
            if let Some(o) = users.get_mut(user_id) {
                o.last_active_ms = now;
            }
            return;
        }
        let pos = self.streams.advance(|p| p.presence += 1).presence;
        users.insert(
            user_id.to_owned(),
            PresenceState {
                presence: presence.to_owned(),
                status_msg: msg,
                last_active_ms: now,
                changed_at: pos,
            },
        );
    }

    pub fn get(&self, user_id: &str) -> Option<PresenceState> {
        self.lock().get(user_id).cloned()
    }

    /// Users who were online (or unavailable) but have not synced or set their presence for
    /// [`GONE_AFTER_MS`] before `now_ms` go offline (their clients stopped syncing without
    /// saying so). Each change bumps the stream, so watchers hear of it.
    pub fn expire_at(&self, now_ms: i64) {
        let mut users = self.lock();
        let kept = self.kept();
        for (user, state) in users.iter_mut() {
            if state.presence != "offline" && now_ms - state.last_active_ms > GONE_AFTER_MS && !kept.contains(user) {
                state.presence = "offline".to_owned();
                state.changed_at = self.streams.advance(|p| p.presence += 1).presence;
            }
        }
    }

    /// Check for users gone quiet every few seconds until the process ends.
    pub fn spawn_expiry(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                match me.upgrade() {
                    Some(p) => p.expire_at(crate::now_ms()),
                    None => return,
                }
            }
        });
    }

    /// Every user whose presence changed after `since`, with it.
    pub fn all_changed_since(&self, since: i64) -> Vec<(String, PresenceState)> {
        self.lock()
            .iter()
            .filter(|(_, s)| s.changed_at > since)
            .map(|(u, s)| (u.clone(), s.clone()))
            .collect()
    }

    /// Presence of the given users that changed after `since`.
    pub fn changed_since<'a>(
        &self,
        users: impl IntoIterator<Item = &'a str>,
        since: i64,
    ) -> Vec<(String, PresenceState)> {
        let all = self.lock();
        let reset = since > self.streams.current().presence;
        users
            .into_iter()
            .filter_map(|u| {
                all.get(u)
                    .filter(|s| reset || s.changed_at > since)
                    .map(|s| (u.to_owned(), s.clone()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_users_go_offline() {
        let streams = Arc::new(Streams::new(crate::streams::Positions::default()));
        let presence = Presence::new(streams.clone());
        presence.set("@a:x", "online", None);
        presence.set("@b:x", "unavailable", None);
        let set_at = presence.get("@a:x").unwrap().last_active_ms;
        let before = streams.current().presence;
        presence.expire_at(set_at + GONE_AFTER_MS - 1);
        assert_eq!(presence.get("@a:x").unwrap().presence, "online");
        presence.expire_at(set_at + GONE_AFTER_MS + 1_000);
        assert_eq!(presence.get("@a:x").unwrap().presence, "offline");
        assert_eq!(presence.get("@b:x").unwrap().presence, "offline");
        assert!(streams.current().presence > before, "watchers are woken");
        // Syncing again brings the user back.
        presence.set("@a:x", "online", None);
        assert_eq!(presence.get("@a:x").unwrap().presence, "online");

        // A user a connection holds stays, however quiet; let go, it expires again.
        presence.set_held("@c:x", "unavailable", Some("away".into()), true);
        let set_at = presence.get("@c:x").unwrap().last_active_ms;
        presence.expire_at(set_at + GONE_AFTER_MS * 10);
        assert_eq!(presence.get("@c:x").unwrap().presence, "unavailable");
        let changed: Vec<String> = presence.all_changed_since(before).into_iter().map(|(u, _)| u).collect();
        assert!(
            changed.contains(&"@c:x".to_owned()) && changed.contains(&"@a:x".to_owned()),
            "{changed:?}"
        );
        presence.set_held("@c:x", "online", None, false);
        let set_at = presence.get("@c:x").unwrap().last_active_ms;
        presence.expire_at(set_at + GONE_AFTER_MS + 1_000);
        assert_eq!(presence.get("@c:x").unwrap().presence, "offline");
    }
}
