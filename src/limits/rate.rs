//! Token buckets, without IO. [`Bucket`] is the algorithm (the same one the Redis Lua script
//! in [`super::shared`] runs atomically for all replicas); [`Lease`] is a replica's local
//! share of a shared bucket: tokens taken from Redis in small batches so that most
//! statements are admitted without a round trip.

use std::time::{Duration, Instant};

/// A token bucket refilled at `rate` tokens per second up to `burst`.
#[derive(Debug, Clone)]
pub struct Bucket {
    pub rate: f64,
    pub burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        Bucket {
            rate,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        self.at = now;
    }

    /// Take up to `want` whole tokens; returns how many were taken and, when none, how long
    /// until one is available.
    pub fn take(&mut self, want: u32, now: Instant) -> (u32, Duration) {
        self.refill(now);
        let n = (self.tokens.floor() as u32).min(want);
        self.tokens -= f64::from(n);
        if n > 0 {
            return (n, Duration::ZERO);
        }
        let missing = 1.0 - self.tokens;
        (0, Duration::from_secs_f64(missing / self.rate.max(1e-9)))
    }

    /// Change the rate (plan change), keeping the tokens.
    pub fn set_rate(&mut self, rate: f64, burst: f64) {
        self.rate = rate;
        self.burst = burst;
        self.tokens = self.tokens.min(burst);
    }
}

/// Burst allowed for a rate: one second's worth.
pub fn burst_for(rate: u32) -> f64 {
    f64::from(rate.max(1))
}

/// Tokens a replica takes from the shared bucket at once: a twentieth of a second's worth,
/// so a replica holds little that others could have used, and at most 1,000. (The cap
/// was 100, which applied from 2,000 statements a second: at 20,000 a second that meant a
/// Redis round trip per 100 statements, ~1 µs of proxy CPU per statement.) Unused tokens
/// lapse after [`LEASE_TTL`]: a replica with sporadic traffic may let up to a batch lapse
/// unused, which counts against the tenant's rate (never more than the rate is admitted).
pub fn batch_for(rate: u32) -> u32 {
    (rate / 20).clamp(1, 1000)
}

/// Tokens taken from the shared bucket and not used yet. They lapse after `LEASE_TTL`, so
/// an idle replica does not hold on to them.
#[derive(Debug, Default)]
pub struct Lease {
    tokens: u32,
    taken_at: Option<Instant>,
}

pub const LEASE_TTL: Duration = Duration::from_millis(500);

impl Lease {
    /// Use one leased token if there is a live one.
    pub fn take_one(&mut self, now: Instant) -> bool {
        match self.taken_at {
            Some(t) if self.tokens > 0 && now.duration_since(t) < LEASE_TTL => {
                self.tokens -= 1;
                true
            }
            _ => {
                self.tokens = 0;
                false
            }
        }
    }

    /// Tokens granted by the shared bucket; one of them is used right away. Added to the
    /// live ones: statements that found the lease empty at the same moment each fetch a
    /// batch, and a batch that replaced the others would waste them (they are gone from
    /// the shared bucket), so that the tenant would be refused below its rate.
    pub fn granted(&mut self, n: u32, now: Instant) {
        let live = match self.taken_at {
            Some(t) if now.saturating_duration_since(t) < LEASE_TTL => self.tokens,
            _ => 0,
        };
        self.tokens = live.saturating_add(n.saturating_sub(1));
        self.taken_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_limits_rate_and_reports_wait() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10.0, 10.0);
        assert_eq!(b.take(8, t0).0, 8);
        assert_eq!(b.take(8, t0).0, 2);
        let (n, wait) = b.take(1, t0);
        assert_eq!(n, 0);
        assert!(wait > Duration::from_millis(90) && wait <= Duration::from_millis(100));
        // 0.5 s later: 5 tokens.
        assert_eq!(b.take(100, t0 + Duration::from_millis(500)).0, 5);
    }

    #[test]
    fn lease_lapses() {
        let t0 = Instant::now();
        let mut l = Lease::default();
        assert!(!l.take_one(t0));
        l.granted(3, t0);
        assert!(l.take_one(t0));
        assert!(l.take_one(t0));
        assert!(!l.take_one(t0));
        l.granted(5, t0);
        assert!(!l.take_one(t0 + LEASE_TTL));
        // Batches fetched at the same time add up.
        l.granted(3, t0);
        l.granted(3, t0);
        assert_eq!((0..5).filter(|_| l.take_one(t0)).count(), 4);
        // A lapsed lease does not.
        l.granted(3, t0);
        l.granted(2, t0 + LEASE_TTL);
        assert_eq!((0..5).filter(|_| l.take_one(t0 + LEASE_TTL)).count(), 1);
        assert_eq!(batch_for(5), 1);
        assert_eq!(batch_for(2000), 100);
        assert_eq!(batch_for(20_000), 1000);
        assert_eq!(batch_for(1_000_000), 1000);
    }
}
