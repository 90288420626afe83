//! Rate limiting per client address (`rate_limit` on a listener): the generic
//! cell rate algorithm (GCRA), one bounded table per listener per shard.
//!
//! # The algorithm
//!
//! A limit of `R` requests per second with a burst of `B` gives every client a
//! *theoretical arrival time* (TAT): when its next request would be on
//! schedule. With `T = 1/R` (the emission interval), a request at `now` is
//! allowed if `max(TAT, now) + T - now <= B·T`, and then
//! `TAT = max(TAT, now) + T`; otherwise it is refused and its TAT is left
//! alone, so refused requests cost the client nothing more, and it may retry
//! after `max(TAT, now) + T - B·T - now` (the `Retry-After` of a 429, rounded
//! up to whole seconds). A client that has been quiet for `B·T` is back to a
//! full burst of `B`. One number per client, no timers.
//!
//! # Per shard, approximate
//!
//! Each shard keeps its own table and enforces the full `R` and `B` on what it
//! sees, with no lock and no message between shards. A client on one
//! connection (an HTTP keep-alive client) meets exactly `R`/`B`; a client
//! whose connections the kernel (`SO_REUSEPORT`) spreads over several shards
//! can get up to `shards × R` (and `shards × B` at once) before every shard
//! refuses it. So the limit is a per-shard one: exact per connection,
//! between `R` and `shards × R` per client (HAProxy's per-process stick tables
//! behave the same way). For an aggregate ceiling of about `R`, configure
//! `R / shards`.
//!
//! # Bounded memory
//!
//! Clients are keyed by IPv4 address, or by IPv6 /64 prefix (one host gets a
//! whole /64; keying full IPv6 addresses would let it have 2^64 identities).
//! A table holds at most `max_clients` entries (default 65 536 per listener
//! per shard, about 40 bytes each). When a new client finds it full, the
//! table is swept: every entry whose TAT has passed (such a client is
//! indistinguishable from a new one) goes, and if that frees less than an
//! eighth of the table, the eighth of the entries closest to passing go too
//! (they are the ones whose limit is nearest to reset anyway). A client
//! spraying source addresses therefore cannot grow memory, and each sweep
//! frees room for many inserts, so its cost is amortised to a constant per
//! new client. The price of an eviction under such a flood is that an evicted
//! client starts afresh: the limit is approximate there too.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use rustc_hash::FxHashMap;

use crate::config::{Config, RateLimit};

/// The verdict of [`Limiter::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit (counted).
    Allow,
    /// Over it: retry after this long.
    Refuse(Duration),
}

/// The table key of a client: an IPv4 address as its IPv4-mapped IPv6 form,
/// an IPv6 address by its /64 prefix (the low 64 bits zero, which no mapped
/// IPv4 address has, so the two never collide).
pub fn client_key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_ipv6_mapped()),
            None => u128::from(v6) & !u128::from(u64::MAX),
        },
    }
}

/// One listener's limit on one shard.
#[derive(Debug)]
pub struct Limiter {
    limit: RateLimit,
    /// Emission interval `T`, in nanoseconds (at least 1).
    interval: u64,
    /// Burst tolerance `B·T`, in nanoseconds.
    tolerance: u64,
    /// Client key → TAT, in nanoseconds since `epoch`.
    tats: FxHashMap<u128, u64>,
    epoch: Instant,
    /// Scratch for sweeps (kept to avoid an allocation per sweep).
    scratch: Vec<u64>,
    /// Entries removed by sweeps (for tests and the debug log).
    evicted: u64,
}

impl Limiter {
    /// A limiter enforcing `limit`, every client new.
    pub fn new(limit: RateLimit) -> Limiter {
        let interval = (1e9 / limit.requests_per_second).clamp(1.0, 1e18) as u64;
        Limiter {
            interval,
            tolerance: interval.saturating_mul(u64::from(limit.burst)),
            limit,
            tats: FxHashMap::default(),
            epoch: Instant::now(),
            scratch: Vec::new(),
            evicted: 0,
        }
    }

    /// The limit it enforces.
    pub fn limit(&self) -> &RateLimit {
        &self.limit
    }

    /// Clients tracked now.
    pub fn len(&self) -> usize {
        self.tats.len()
    }

    /// No client tracked.
    pub fn is_empty(&self) -> bool {
        self.tats.is_empty()
    }

    /// Entries evicted by sweeps so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Counts one request (or connection) of `ip` at `now`.
    pub fn check(&mut self, ip: IpAddr, now: Instant) -> Verdict {
        let now =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let key = client_key(ip);
        let tat = match self.tats.get(&key) {
            Some(&t) => t.max(now),
            None => {
                if self.tats.len() >= self.limit.max_clients {
                    self.sweep(now);
                }
                now
            }
        };
        let next = tat.saturating_add(self.interval);
        let ahead = next - now;
        if ahead > self.tolerance {
            return Verdict::Refuse(Duration::from_nanos(ahead - self.tolerance));
        }
        self.tats.insert(key, next);
        Verdict::Allow
    }

    /// Makes room: drops every entry whose TAT has passed, and at least an
    /// eighth of the table (those closest to passing).
    fn sweep(&mut self, now: u64) {
        let before = self.tats.len();
        let want = (before / 8).max(1);
        self.scratch.clear();
        self.scratch.extend(self.tats.values().copied());
        let mut threshold = now;
        if want <= self.scratch.len() {
            let (_, nth, _) = self.scratch.select_nth_unstable(want - 1);
            threshold = threshold.max(*nth);
        }
        self.tats.retain(|_, tat| *tat > threshold);
        // Ties at the threshold may leave it full: drop arbitrary ones.
        if self.tats.len() >= self.limit.max_clients {
            let extra: Vec<u128> = self.tats.keys().take(want).copied().collect();
            for k in extra {
                self.tats.remove(&k);
            }
        }
        self.evicted += (before - self.tats.len()) as u64;
        self.scratch.clear();
        if self.scratch.capacity() > 1 << 16 {
            self.scratch.shrink_to(1 << 16);
        }
    }
}

/// One shard's limiters, one per listener with a `rate_limit`.
#[derive(Debug, Default)]
pub struct Limiters {
    by_listener: Vec<Option<Limiter>>,
}

impl Limiters {
    /// For `config`'s listeners.
    pub fn new(config: &Config) -> Limiters {
        Limiters {
            by_listener: config
                .listeners
                .iter()
                .map(|l| l.rate_limit.clone().map(Limiter::new))
                .collect(),
        }
    }

    /// A reload: listeners whose limit changed start afresh with the new one
    /// (their TATs were computed for the old rate); unchanged ones keep their
    /// clients.
    pub fn reconfigure(&mut self, config: &Config) {
        let old = std::mem::take(&mut self.by_listener);
        let mut old = old.into_iter();
        self.by_listener = config
            .listeners
            .iter()
            .map(|l| {
                let kept = old.next().flatten();
                match (&l.rate_limit, kept) {
                    (Some(new), Some(k)) if k.limit() == new => Some(k),
                    (Some(new), _) => Some(Limiter::new(new.clone())),
                    (None, _) => None,
                }
            })
            .collect();
    }

    /// Counts one request or connection of `ip` on listener `listener`:
    /// the verdict, and how many clients that listener's table now holds.
    pub fn check(&mut self, listener: usize, ip: IpAddr) -> (Verdict, usize) {
        match self.by_listener.get_mut(listener).and_then(Option::as_mut) {
            Some(l) => (l.check(ip, Instant::now()), l.len()),
            None => (Verdict::Allow, 0),
        }
    }

    /// Listener `listener`'s limiter, if it has one.
    pub fn get(&self, listener: usize) -> Option<&Limiter> {
        self.by_listener.get(listener).and_then(Option::as_ref)
    }
}

/// Whole seconds to put in `Retry-After` for a wait of `d` (rounded up, at
/// least 1).
pub fn retry_after_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rps: f64, burst: u32, max_clients: usize) -> RateLimit {
        RateLimit {
            requests_per_second: rps,
            burst,
            max_clients,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_refused_then_one_per_interval() {
        let mut l = Limiter::new(limit(10.0, 3, 100));
        let t0 = l.epoch + Duration::from_secs(1);
        for _ in 0..3 {
            assert_eq!(l.check(ip("10.0.0.1"), t0), Verdict::Allow);
        }
        let Verdict::Refuse(wait) = l.check(ip("10.0.0.1"), t0) else {
            panic!("fourth request of the burst allowed");
        };
        assert_eq!(wait, Duration::from_millis(100));
        // Refused requests do not push the schedule further.
        assert!(matches!(l.check(ip("10.0.0.1"), t0), Verdict::Refuse(w) if w == wait));
        // Another client is unaffected.
        assert_eq!(l.check(ip("10.0.0.2"), t0), Verdict::Allow);
        // One interval later: exactly one more.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(l.check(ip("10.0.0.1"), t1), Verdict::Allow);
        assert!(matches!(l.check(ip("10.0.0.1"), t1), Verdict::Refuse(_)));
        // Quiet for a whole burst: a whole burst again.
        let t2 = t1 + Duration::from_millis(300);
        for _ in 0..3 {
            assert_eq!(l.check(ip("10.0.0.1"), t2), Verdict::Allow);
        }
        assert!(matches!(l.check(ip("10.0.0.1"), t2), Verdict::Refuse(_)));
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_and_mapped_v4_as_v4() {
        let mut l = Limiter::new(limit(1.0, 1, 100));
        let t = l.epoch;
        assert_eq!(l.check(ip("2001:db8:1:2::1"), t), Verdict::Allow);
        assert!(matches!(
            l.check(ip("2001:db8:1:2:ffff::9"), t),
            Verdict::Refuse(_)
        ));
        assert_eq!(l.check(ip("2001:db8:1:3::1"), t), Verdict::Allow);
        assert_eq!(l.check(ip("192.0.2.1"), t), Verdict::Allow);
        assert!(matches!(
            l.check(ip("::ffff:192.0.2.1"), t),
            Verdict::Refuse(_)
        ));
        assert_ne!(client_key(ip("::")), client_key(ip("0.0.0.0")));
    }

    #[test]
    fn the_table_stays_bounded_under_a_spray_of_addresses() {
        let max = 64;
        let mut l = Limiter::new(limit(0.001, 5, max));
        let t = l.epoch;
        for i in 0..10_000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(l.check(a, t), Verdict::Allow);
            assert!(l.len() <= max, "{} entries after {i}", l.len());
        }
        assert!(l.evicted() > 0);
        // A client with a schedule far ahead survives a sweep that has
        // entries nearer to passing to drop.
        let mut l = Limiter::new(limit(1.0, 10, max));
        let hog = ip("10.9.9.9");
        for _ in 0..10 {
            assert_eq!(l.check(hog, t), Verdict::Allow);
        }
        for i in 0..max as u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            l.check(a, t);
        }
        assert!(l.len() <= max);
        assert!(matches!(l.check(hog, t), Verdict::Refuse(_)));
    }

    #[test]
    fn extreme_rates_do_not_overflow() {
        let mut l = Limiter::new(limit(1e-9, u32::MAX, 4));
        let t = l.epoch + Duration::from_secs(1 << 20);
        assert_eq!(l.check(ip("10.0.0.1"), t), Verdict::Allow);
        // Before the epoch counts as the epoch.
        let early = t.checked_sub(Duration::from_secs(1 << 21)).unwrap_or(t);
        assert_eq!(l.check(ip("10.0.0.2"), early), Verdict::Allow);
        let mut l = Limiter::new(limit(1e9, 1, 4));
        assert_eq!(l.check(ip("10.0.0.1"), l.epoch), Verdict::Allow);
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
