//! Keyed token-bucket rate limiting (login attempts, registrations, messages). Buckets live
//! in memory only: a client address used as a key is never written anywhere.

use crate::Locked;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::RateLimit;

pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Above this many keys, full buckets (idle keys) are dropped.
const MAX_KEYS: usize = 10_000;

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one action for `key`. `Err(retry_after)` when the bucket is empty.
    /// A limit with `per_second <= 0` never limits.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let RateLimit { per_second, burst } = self.limit;
        if per_second <= 0.0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.locked();
        if buckets.len() > MAX_KEYS {
            buckets.retain(|_, b| b.tokens + now.duration_since(b.updated).as_secs_f64() * per_second < burst);
        }
        let b = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.updated).as_secs_f64() * per_second).min(burst);
        b.updated = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refuse_with_retry_after() {
        let rl = RateLimiter::new(RateLimit {
            per_second: 1.0,
            burst: 3.0,
        });
        for _ in 0..3 {
            rl.check("a").unwrap();
        }
        let retry = rl.check("a").unwrap_err();
        assert!(retry > Duration::ZERO && retry <= Duration::from_secs(1), "{retry:?}");
        rl.check("b").unwrap();
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let rl = RateLimiter::new(RateLimit {
            per_second: 0.0,
            burst: 0.0,
        });
        for _ in 0..1000 {
            rl.check("a").unwrap();
        }
    }
}
