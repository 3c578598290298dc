//! Positions in the server's streams (events, account data, receipts, typing, presence) and
//! the notifier sync waits on. A sync token is all positions at once: `s{e}_{a}_{r}_{t}_{p}_{td}_{dl}`;
//! a plain `s{e}` (a pagination token) reads as the events position with the rest at 0.

use tokio::sync::watch;

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

pub struct Streams {
    tx: watch::Sender<Positions>,
    /// Writers of a persisted stream hold its lock from insert to publish, so positions become
    /// visible in order (PostgreSQL sequences can commit out of order; a reader that saw N
    /// must never later find a row below N). Events have their own append lock in Rooms.
    pub account_data_writer: tokio::sync::Mutex<()>,
    pub receipts_writer: tokio::sync::Mutex<()>,
    pub to_device_writer: tokio::sync::Mutex<()>,
    pub device_lists_writer: tokio::sync::Mutex<()>,
}

impl Streams {
    pub fn new(start: Positions) -> Self {
        Self {
            tx: watch::channel(start).0,
            account_data_writer: tokio::sync::Mutex::new(()),
            receipts_writer: tokio::sync::Mutex::new(()),
            to_device_writer: tokio::sync::Mutex::new(()),
            device_lists_writer: tokio::sync::Mutex::new(()),
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
}
