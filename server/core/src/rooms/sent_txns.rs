//! The transaction IDs each device has sent events under, kept so that a send under a new
//! transaction ID (nearly every send) need not ask the store whether it is a repeat.
//!
//! A device's set is *complete* once the transaction IDs the store held for it have been
//! read into it; from before that read on, the writer adds each committed one (see
//! `writer::Memo::appended`, which does so before the event stops counting as pending). A
//! transaction ID missing from a complete set was therefore never committed: the send is new.
//! Anything else (a set not read yet, a device with too many to keep, an ID in the set) is
//! answered by the store as before. IDs kept that the store lacks (a commit that failed, a
//! deleted device) only cost that store read.
//!
//! Emptying the sets (memory is bounded) gives each new set a new number, and a read begun
//! for an emptied set is not merged into its successor: the successor may lack an ID
//! committed between that read and its own start.

use crate::Locked;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Transaction IDs kept for all devices together; all sets are emptied when there are more.
const MAX_KEPT: usize = 50_000;
/// A device whose store holds more than this many is not kept: the store answers for it.
pub(super) const MAX_PER_DEVICE: usize = 10_000;

/// What memory says of a transaction ID.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Known {
    /// Never committed: the send is new.
    New,
    /// Perhaps committed: ask the store.
    Maybe,
    /// The device's set is not read yet: read the store's IDs of the device, then pass them
    /// to [`SentTxns::loaded`] with this number.
    Load(u64),
}

#[derive(Default)]
pub(super) struct SentTxns {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// (localpart, device ID) -> its set.
    devices: HashMap<(String, String), Device>,
    kept: usize,
    next_number: u64,
}

struct Device {
    number: u64,
    txns: HashSet<String>,
    state: Read,
}

#[derive(PartialEq, Eq)]
enum Read {
    NotYet,
    Complete,
    /// The store holds more than [`MAX_PER_DEVICE`]: never complete.
    TooMany,
}

impl SentTxns {
    pub(super) fn known(&self, localpart: &str, device_id: &str, txn_id: &str) -> Known {
        let mut inner = self.inner.locked();
        let key = (localpart.to_owned(), device_id.to_owned());
        if let Some(d) = inner.devices.get(&key) {
            return match d.state {
                Read::Complete if !d.txns.contains(txn_id) => Known::New,
                Read::NotYet => Known::Load(d.number),
                _ => Known::Maybe,
            };
        }
        let number = inner.next_number;
        inner.next_number += 1;
        let device = Device {
            number,
            txns: HashSet::new(),
            state: Read::NotYet,
        };
        inner.devices.insert(key, device);
        Known::Load(number)
    }

    /// The store's transaction IDs of a device, read after [`SentTxns::known`] answered
    /// `Load(number)`; more than [`MAX_PER_DEVICE`] mark the device as not kept.
    pub(super) fn loaded(&self, localpart: &str, device_id: &str, number: u64, stored: Vec<String>) {
        let mut inner = self.inner.locked();
        let key = (localpart.to_owned(), device_id.to_owned());
        let Some(d) = inner.devices.get_mut(&key) else { return };
        if d.number != number || d.state != Read::NotYet {
            return;
        }
        if stored.len() > MAX_PER_DEVICE {
            d.state = Read::TooMany;
            let dropped = std::mem::take(&mut d.txns).len();
            inner.kept -= dropped;
            return;
        }
        let before = d.txns.len();
        d.txns.extend(stored);
        d.state = Read::Complete;
        let added = d.txns.len() - before;
        inner.kept += added;
        inner.empty_if_full();
    }

    /// An event sent under this transaction ID is committed.
    pub(super) fn committed(&self, localpart: &str, device_id: &str, txn_id: &str) {
        let mut inner = self.inner.locked();
        let key = (localpart.to_owned(), device_id.to_owned());
        let Some(d) = inner.devices.get_mut(&key) else { return };
        if d.state == Read::TooMany || !d.txns.insert(txn_id.to_owned()) {
            return;
        }
        inner.kept += 1;
        inner.empty_if_full();
    }
}

impl Inner {
    fn empty_if_full(&mut self) {
        if self.kept > MAX_KEPT {
            self.devices.clear();
            self.kept = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(sent: &SentTxns, txn: &str) -> u64 {
        match sent.known("a", "D", txn) {
            Known::Load(n) => n,
            other => panic!("expected a read of the store, got {other:?}"),
        }
    }

    #[test]
    fn a_complete_set_answers_new_and_a_kept_id_needs_the_store() {
        let sent = SentTxns::default();
        let n = load(&sent, "t1");
        // Until the read is in, every ask reads the store.
        assert_eq!(sent.known("a", "D", "t1"), Known::Load(n));
        sent.loaded("a", "D", n, vec!["t0".to_owned()]);
        assert_eq!(sent.known("a", "D", "t1"), Known::New);
        assert_eq!(sent.known("a", "D", "t0"), Known::Maybe);
        sent.committed("a", "D", "t1");
        assert_eq!(sent.known("a", "D", "t1"), Known::Maybe);
        // Another device of the same account has its own set.
        assert!(matches!(sent.known("a", "E", "t1"), Known::Load(_)));
    }

    #[test]
    fn commits_during_the_read_are_kept() {
        let sent = SentTxns::default();
        let n = load(&sent, "x");
        // Committed after the set began, perhaps after the store was read.
        sent.committed("a", "D", "late");
        sent.loaded("a", "D", n, vec![]);
        assert_eq!(sent.known("a", "D", "late"), Known::Maybe);
        assert_eq!(sent.known("a", "D", "x"), Known::New);
    }

    #[test]
    fn a_read_of_an_emptied_set_is_not_merged_into_the_next() {
        let sent = SentTxns::default();
        let old = load(&sent, "x");
        sent.inner.locked().kept = MAX_KEPT;
        let other = match sent.known("b", "D", "y") {
            Known::Load(n) => n,
            k => panic!("{k:?}"),
        };
        sent.loaded("b", "D", other, vec!["y0".to_owned(), "y1".to_owned()]);
        assert!(sent.inner.locked().devices.is_empty(), "over the bound: all emptied");
        let new = load(&sent, "x");
        assert_ne!(old, new);
        sent.loaded("a", "D", old, vec![]);
        assert_eq!(sent.known("a", "D", "x"), Known::Load(new), "the stale read is dropped");
    }

    #[test]
    fn a_device_with_too_many_is_left_to_the_store() {
        let sent = SentTxns::default();
        let n = load(&sent, "x");
        let many = (0..=MAX_PER_DEVICE).map(|i| format!("t{i}")).collect();
        sent.loaded("a", "D", n, many);
        assert_eq!(sent.known("a", "D", "x"), Known::Maybe);
        sent.committed("a", "D", "y");
        assert_eq!(sent.inner.locked().kept, 0);
    }
}
