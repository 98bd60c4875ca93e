//! Slowing down key guessing: every call with a wrong or missing key (or
//! for an unknown hook) is a strike against the caller's address. An
//! address may strike [`BURST`] times at once, then once per [`REFILL`];
//! beyond that every call from it, right key or not, gets 429 with
//! `Retry-After` (answering a right key would tell a guesser it guessed).
//! A generic cell rate algorithm: per address one instant, no timers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Strikes an address may make in a row.
pub const BURST: u32 = 10;
/// How often an address earns one strike back.
pub const REFILL: Duration = Duration::from_secs(6);
/// Addresses remembered at most (the oldest are forgotten first).
pub const MAX_ADDRESSES: usize = 100_000;

pub struct Limiter {
    burst: u32,
    refill: Duration,
    max_addresses: usize,
    /// Per address, when its strikes will have run out ("theoretical
    /// arrival time"); an address past it is not remembered.
    until: Mutex<HashMap<IpAddr, Instant>>,
}

impl Default for Limiter {
    fn default() -> Limiter {
        Limiter::new(BURST, REFILL, MAX_ADDRESSES)
    }
}

impl Limiter {
    pub fn new(burst: u32, refill: Duration, max_addresses: usize) -> Limiter {
        Limiter {
            burst: burst.max(1),
            refill,
            max_addresses: max_addresses.max(1),
            until: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(wait)` when `address` has used up its strikes: it may call
    /// again after `wait` (whole seconds, at least one).
    pub fn check(&self, address: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let until = self.until.lock().expect("limiter lock");
        let Some(&until) = until.get(&address) else {
            return Ok(());
        };
        // Room for one more strike: `until` at most (burst - 1) refills out.
        let room = self.refill * (self.burst - 1);
        let ahead = until.saturating_duration_since(now);
        if ahead <= room {
            Ok(())
        } else {
            let wait = ahead - room;
            Err(
                Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
                    .max(Duration::from_secs(1)),
            )
        }
    }

    /// Counts a strike against `address`.
    pub fn strike(&self, address: IpAddr) {
        let now = Instant::now();
        let mut until = self.until.lock().expect("limiter lock");
        if until.len() >= self.max_addresses && !until.contains_key(&address) {
            until.retain(|_, t| *t > now);
            if until.len() >= self.max_addresses {
                if let Some(oldest) = until.iter().min_by_key(|(_, t)| **t).map(|(a, _)| *a) {
                    until.remove(&oldest);
                }
            }
        }
        let from = until
            .get(&address)
            .copied()
            .filter(|t| *t > now)
            .unwrap_or(now);
        until.insert(address, from + self.refill);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_one_strike_per_refill() {
        let limiter = Limiter::new(3, Duration::from_secs(6), 100);
        for _ in 0..3 {
            assert_eq!(limiter.check(ip(1)), Ok(()));
            limiter.strike(ip(1));
        }
        assert_eq!(limiter.check(ip(1)), Err(Duration::from_secs(6)));
        assert_eq!(
            limiter.check(ip(2)),
            Ok(()),
            "other addresses are not slowed"
        );
        tokio::time::advance(Duration::from_millis(4500)).await;
        assert_eq!(
            limiter.check(ip(1)),
            Err(Duration::from_secs(2)),
            "rounded up"
        );
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(limiter.check(ip(1)), Ok(()));
        limiter.strike(ip(1));
        assert_eq!(limiter.check(ip(1)), Err(Duration::from_secs(6)));
        // Long quiet: the address is forgiven entirely.
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..3 {
            assert_eq!(limiter.check(ip(1)), Ok(()));
            limiter.strike(ip(1));
        }
        assert!(limiter.check(ip(1)).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn memory_is_bounded() {
        let limiter = Limiter::new(1, Duration::from_secs(6), 2);
        limiter.strike(ip(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        limiter.strike(ip(2));
        limiter.strike(ip(3));
        let until = limiter.until.lock().unwrap();
        assert_eq!(until.len(), 2);
        assert!(!until.contains_key(&ip(1)), "the oldest went first");
    }
}
