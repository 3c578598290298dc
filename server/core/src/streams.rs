//! Positions in the server's streams (events, account data, receipts, typing, presence) and
//! the notifier sync waits on. A sync token is all positions at once: `s{e}_{a}_{r}_{t}_{p}_{td}_{dl}`;
//! a plain `s{e}` (a pagination token) reads as the events position with the rest at 0.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;

pub use estuary_store::NewestRows;
use tokio::sync::watch;

use crate::Locked;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Positions {
    pub events: i64,
    pub account_data: i64,
    pub receipts: i64,
    /// Typing and presence live in memory: their positions restart at 0 with the server.
    pub typing: i64,
    pub presence: i64,
    pub to_device: i64,
    pub device_lists: i64,
}

impl Positions {
    pub fn token(&self) -> String {
        format!(
            "s{}_{}_{}_{}_{}_{}_{}",
            self.events,
            self.account_data,
            self.receipts,
            self.typing,
            self.presence,
            self.to_device,
            self.device_lists
        )
    }

    /// Parse a token; None if it is not one of ours.
    pub fn parse(token: &str) -> Option<Positions> {
        let mut parts = token
            .strip_prefix('s')?
            .split('_')
            .map(|p| p.parse::<i64>().ok().filter(|n| *n >= 0));
        let mut next = || parts.next().map_or(Some(0), |p| p);
        let p = Positions {
            events: next()?,
            account_data: next()?,
            receipts: next()?,
            typing: next()?,
            presence: next()?,
            to_device: next()?,
            device_lists: next()?,
        };
        Some(p)
    }

    /// True if any position is past the one in `since`.
    pub fn any_after(&self, since: &Positions) -> bool {
        self.events > since.events
            || self.account_data > since.account_data
            || self.receipts > since.receipts
            || self.typing != since.typing
            || self.presence != since.presence
            || self.to_device > since.to_device
            || self.device_lists > since.device_lists
    }
}

/// The newest position of one stream per key (a room, a user, a device), so that `/sync` can
/// tell that a query would come back empty without asking the store. Writers note a row
/// before its stream advances past it: a reader that saw position N finds here every key's
/// rows up to N. Complete only when loaded from the store at start; until then every key may
/// have anything.
pub struct Newest<K> {
    map: Mutex<HashMap<K, i64>>,
    complete: bool,
}

impl<K: Eq + Hash> Newest<K> {
    fn unknown() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            complete: false,
        }
    }

    fn loaded(rows: impl IntoIterator<Item = (K, i64)>) -> Self {
        Self {
            map: Mutex::new(rows.into_iter().collect()),
            complete: true,
        }
    }

    /// A row of `key` at `position`; call before the stream advances to it.
    pub fn note(&self, key: K, position: i64) {
        let mut map = self.map.locked();
        let newest = map.entry(key).or_insert(position);
        *newest = (*newest).max(position);
    }

    /// Whether `key` may have rows after `since`.
    pub fn any_after<Q: Eq + Hash + ?Sized>(&self, key: &Q, since: i64) -> bool
    where
        K: Borrow<Q>,
    {
        match self.rows(key) {
            Rows::Unknown => true,
            Rows::Nothing => false,
            Rows::UpTo(p) => p > since,
        }
    }

    /// What is known of `key`'s rows.
    pub fn rows<Q: Eq + Hash + ?Sized>(&self, key: &Q) -> Rows
    where
        K: Borrow<Q>,
    {
        if !self.complete {
            return Rows::Unknown;
        }
        self.map.locked().get(key).map_or(Rows::Nothing, |&p| Rows::UpTo(p))
    }

    /// `key`'s rows up to `position` are gone: forget it, unless a newer row was noted since.
    pub fn forget<Q: Eq + Hash + ?Sized>(&self, key: &Q, position: i64)
    where
        K: Borrow<Q>,
    {
        let mut map = self.map.locked();
        if map.get(key) == Some(&position) {
            map.remove(key);
        }
    }
}

/// A change count per key (a user, ...) kept in memory only, for values [`HeldWhile`] holds
/// whose rows carry no stream position of their own. Writers bump a key after their commit
/// and before the stream that shows it advances. Complete from the start: a key never bumped
/// since the process started has not changed since anything held for it was read.
pub struct Versions<K> {
    newest: Newest<K>,
    next: std::sync::atomic::AtomicI64,
}

impl<K: Eq + Hash> Default for Versions<K> {
    fn default() -> Self {
        Self {
            newest: Newest::loaded([]),
            next: std::sync::atomic::AtomicI64::new(1),
        }
    }
}

impl<K: Eq + Hash> Versions<K> {
    /// `key` changed.
    pub fn bump(&self, key: K) {
        let version = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.newest.note(key, version);
    }

    /// The version of `key`, for [`HeldWhile::get`].
    pub fn rows<Q: Eq + Hash + ?Sized>(&self, key: &Q) -> Rows
    where
        K: Borrow<Q>,
    {
        self.newest.rows(key)
    }
}

/// Values read from the store that hold while a [`Newest`] key stays where it was when they
/// were read. The position is taken before the read, so a change racing the read makes the
/// next call read again. A bounded cache (`crate::CACHED_ENTRIES`).
pub struct HeldWhile<K, V> {
    map: Mutex<HashMap<K, (i64, V)>>,
}

impl<K, V> Default for HeldWhile<K, V> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V: Clone> HeldWhile<K, V> {
    /// The value of `key`, whose [`Newest`] rows are `rows` now; `read` reads it if the one
    /// held is stale or missing.
    pub async fn get<E, F: Future<Output = Result<V, E>>>(
        &self,
        key: K,
        rows: Rows,
        read: impl FnOnce() -> F,
    ) -> Result<V, E> {
        let at = match rows {
            Rows::UpTo(p) => Some(p),
            Rows::Nothing => Some(0),
            Rows::Unknown => None,
        };
        if let Some(at) = at
            && let Some((held_at, v)) = self.map.locked().get(&key)
            && *held_at == at
        {
            return Ok(v.clone());
        }
        let v = read().await?;
        if let Some(at) = at {
            crate::bounded_insert(&mut self.map.locked(), key, (at, v.clone()));
        }
        Ok(v)
    }
}

/// What [`Newest`] knows of a key's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    Unknown,
    Nothing,
    /// Rows up to this position.
    UpTo(i64),
}

pub struct Streams {
    tx: watch::Sender<Positions>,
    /// Each room's newest event.
    pub room_events: Newest<String>,
    /// Each room's newest state event or redaction: what may change its state history.
    pub room_state: Newest<String>,
    /// Each room's newest receipt.
    pub room_receipts: Newest<String>,
    /// Each room's newest event relating to another (an edit, a reaction, a thread reply...).
    pub room_relations: Newest<String>,
    /// Each local user's (localpart's) newest account data.
    pub user_account_data: Newest<String>,
    /// Each device's (localpart, device ID) newest to-device message not yet deleted.
    pub device_to_device: Newest<(String, String)>,
    /// Each user's (full user ID's) memberships: bumped by the rooms writer for every member
    /// entry of the current state it changes.
    pub user_memberships: Versions<String>,
    /// Writers of a persisted stream hold its lock from insert to publish, so positions become
    /// visible in order (PostgreSQL sequences can commit out of order; a reader that saw N
    /// must never later find a row below N). Events have their own append lock in Rooms.
    pub account_data_writer: tokio::sync::Mutex<()>,
    pub receipts_writer: tokio::sync::Mutex<()>,
    pub to_device_writer: tokio::sync::Mutex<()>,
    pub device_lists_writer: tokio::sync::Mutex<()>,
}

impl Streams {
    /// Streams starting at `start`, with nothing known of which key holds what.
    pub fn new(start: Positions) -> Self {
        Self {
            room_events: Newest::unknown(),
            room_state: Newest::unknown(),
            room_receipts: Newest::unknown(),
            room_relations: Newest::unknown(),
            user_account_data: Newest::unknown(),
            device_to_device: Newest::unknown(),
            user_memberships: Versions::default(),
            tx: watch::channel(start).0,
            account_data_writer: tokio::sync::Mutex::new(()),
            receipts_writer: tokio::sync::Mutex::new(()),
            to_device_writer: tokio::sync::Mutex::new(()),
            device_lists_writer: tokio::sync::Mutex::new(()),
        }
    }

    /// Streams starting at `start`, knowing each key's newest row.
    pub fn loaded(start: Positions, newest: NewestRows) -> Self {
        Self {
            room_events: Newest::loaded(newest.room_events),
            room_state: Newest::loaded(newest.room_state),
            room_receipts: Newest::loaded(newest.room_receipts),
            room_relations: Newest::loaded(newest.room_relations),
            user_account_data: Newest::loaded(newest.user_account_data),
            device_to_device: Newest::loaded(newest.device_to_device),
            ..Self::new(start)
        }
    }

    pub fn current(&self) -> Positions {
        *self.tx.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<Positions> {
        self.tx.subscribe()
    }

    /// Move one stream forward (never backwards) and wake the waiters.
    pub fn advance(&self, f: impl FnOnce(&mut Positions)) -> Positions {
        let mut out = Positions::default();
        self.tx.send_modify(|p| {
            f(p);
            out = *p;
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_old_tokens_read() {
        let p = Positions {
            events: 5,
            account_data: 2,
            receipts: 9,
            typing: 1,
            presence: 3,
            to_device: 4,
            device_lists: 6,
        };
        assert_eq!(p.token(), "s5_2_9_1_3_4_6");
        assert_eq!(Positions::parse(&p.token()), Some(p));
        assert_eq!(
            Positions::parse("s42"),
            Some(Positions {
                events: 42,
                ..Default::default()
            })
        );
        assert_eq!(Positions::parse("x1"), None);
        assert_eq!(Positions::parse("s1_x"), None);
        assert_eq!(Positions::parse("s-1"), None);
    }

    #[test]
    fn newest_knows_only_once_loaded() {
        let unknown: Newest<String> = Newest::unknown();
        unknown.note("!a".to_owned(), 3);
        assert!(unknown.any_after("!b", 100), "nothing is known before loading");
        assert_eq!(unknown.rows("!a"), Rows::Unknown);

        let n = Newest::loaded([("!a".to_owned(), 5)]);
        assert!(n.any_after("!a", 4));
        assert!(!n.any_after("!a", 5));
        assert!(!n.any_after("!b", 0));
        n.note("!a".to_owned(), 2);
        assert_eq!(n.rows("!a"), Rows::UpTo(5), "never backwards");
        n.note("!b".to_owned(), 7);
        assert_eq!(n.rows("!b"), Rows::UpTo(7));
        // Forgetting is undone by a newer row noted in between.
        n.note("!a".to_owned(), 9);
        n.forget("!a", 5);
        assert_eq!(n.rows("!a"), Rows::UpTo(9));
        n.forget("!a", 9);
        assert_eq!(n.rows("!a"), Rows::Nothing);
    }

    #[tokio::test]
    async fn versions_move_held_values_of_their_key_only() {
        let versions: Versions<String> = Versions::default();
        let held: HeldWhile<String, i64> = HeldWhile::default();
        let reads = std::sync::atomic::AtomicI64::new(0);
        let read = || async { Ok::<_, ()>(reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1) };
        let get = |k: &str| held.get(k.to_owned(), versions.rows(k), read);
        assert_eq!(versions.rows("@a"), Rows::Nothing, "complete from the start");
        assert_eq!(get("@a").await, Ok(1));
        assert_eq!(get("@a").await, Ok(1), "held");
        versions.bump("@b".to_owned());
        assert_eq!(get("@a").await, Ok(1), "another key moved");
        versions.bump("@a".to_owned());
        assert_eq!(get("@a").await, Ok(2), "its key moved: read again");
        versions.bump("@a".to_owned());
        assert_eq!(get("@a").await, Ok(3));
    }

    #[tokio::test]
    async fn held_values_hold_until_their_key_moves() {
        let held: HeldWhile<&str, i64> = HeldWhile::default();
        let reads = std::sync::atomic::AtomicI64::new(0);
        let read = || async { Ok::<_, ()>(reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1) };
        assert_eq!(held.get("k", Rows::UpTo(4), read).await, Ok(1));
        assert_eq!(held.get("k", Rows::UpTo(4), read).await, Ok(1), "held");
        assert_eq!(held.get("k", Rows::UpTo(6), read).await, Ok(2), "moved: read again");
        assert_eq!(held.get("k", Rows::Unknown, read).await, Ok(3), "unknown: always read");
        assert_eq!(
            held.get("k", Rows::UpTo(6), read).await,
            Ok(2),
            "an unknown read is not held"
        );
        assert_eq!(held.get("j", Rows::Nothing, read).await, Ok(4));
        assert_eq!(held.get("j", Rows::Nothing, read).await, Ok(4));
    }
}
