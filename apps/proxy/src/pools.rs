//! One shard's view of every pool: its balancer, the health of each backend
//! as this shard last heard it (see [`crate::health`]), and this shard's
//! outlier ejections. Owned by one shard's handler, never shared.
//!
//! # Outlier ejection (`[pool.NAME.outlier]`)
//!
//! Separate from health checks and decided by each shard alone, from its own
//! traffic: the outcomes [`crate::health`]'s passive accounting sees (a 5xx
//! response, a failed or timed-out connect, a response timeout, an upstream
//! dying before answering are failures; a response below 500 or an
//! established TCP relay a success) are counted per backend, and
//! `consecutive_failures` failures in a row eject the backend from this
//! shard's balancing for `base_ejection_ms × n` (at most `max_ejection_ms`),
//! where `n` counts its recent ejections: it goes up by one at each ejection
//! and down by one per `base_ejection_ms` spent back in service (Envoy's
//! multiplier). A success resets the streak; outcomes of requests that were
//! already under way when it was ejected are ignored. When its time is up the
//! backend is simply used again (the next pick, or the shard's sweep, at most
//! a second later, notices), with a fresh streak.
//!
//! Never more than `max_ejected_percent` of a pool's backends (rounded down)
//! are ejected at once on a shard, so a pool of one backend, or two at 49 %,
//! is never ejected from. And ejection never makes a pool unavailable: if the
//! backends left (healthy, not ejected, not yet tried for this request) are
//! none, the pick is made as if nothing were ejected. A backend health checks
//! call down stays down whatever its ejection; health's passive failure
//! counts go on as before, independently.
//!
//! Approximate, per shard: each shard ejects on what it sees, so a bad
//! backend is ejected shard by shard (each after its own streak) and a
//! backend failing only one shard's requests is ejected only there. A reload
//! starts every ejection afresh.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    balance::{Balancer, NoBackend, PickInput},
    config::{Config, Outlier, Pool},
    stats::BackendGauges,
};

/// One backend's outlier state on this shard.
#[derive(Debug, Clone, Copy, Default)]
struct Streak {
    /// Failures in a row.
    failures: u32,
    /// Recent ejections (the current one included): the multiplier.
    times: u32,
    /// Ejected until then.
    until: Option<Instant>,
    /// When it last came back (for the multiplier's decay).
    back_at: Option<Instant>,
}

#[derive(Debug)]
struct Slot {
    balancer: Balancer,
    up: Vec<bool>,
    /// `up` and not ejected: what the balancer picks from while any backend
    /// is ejected.
    usable: Vec<bool>,
    outlier: Option<Outlier>,
    streaks: Vec<Streak>,
    /// Backends ejected now.
    ejected: usize,
}

impl Slot {
    fn refresh(&mut self, backend: usize) {
        if let (Some(u), Some(&up), Some(s)) = (
            self.usable.get_mut(backend),
            self.up.get(backend),
            self.streaks.get(backend),
        ) {
            *u = up && s.until.is_none();
        }
    }
}

/// Balancers, health and ejections per pool, for one shard.
#[derive(Debug)]
pub struct ShardPools {
    slots: Vec<Slot>,
    /// Where this shard's view is published for `/metrics`.
    gauges: Arc<BackendGauges>,
}

impl ShardPools {
    /// Every pool of `config`, every backend up, for shard `shard`; changes of
    /// the view are written to `gauges`.
    pub fn new(config: &Config, shard: usize, gauges: Arc<BackendGauges>) -> ShardPools {
        ShardPools {
            slots: config
                .pools
                .iter()
                .map(|p| Slot {
                    balancer: Balancer::new(p, shard),
                    up: vec![true; p.backends.len()],
                    usable: vec![true; p.backends.len()],
                    outlier: p.outlier.clone(),
                    streaks: vec![Streak::default(); p.backends.len()],
                    ejected: 0,
                })
                .collect(),
            gauges,
        }
    }

    /// A backend of `pool` for a request or connection with consistent-hash key
    /// `key`, given this shard's `active` counts per backend and the backends
    /// already `tried`.
    pub fn pick(
        &mut self,
        pool: usize,
        active: &[u32],
        key: u64,
        tried: &[usize],
    ) -> Result<usize, NoBackend> {
        if self.slots.get(pool).is_some_and(|s| s.ejected > 0) {
            self.restore(pool, Instant::now());
        }
        let slot = self.slots.get_mut(pool).ok_or(NoBackend::AllDown)?;
        if slot.ejected > 0 {
            let picked = slot.balancer.pick(&PickInput {
                up: &slot.usable,
                active,
                tried,
                key,
            });
            if picked.is_ok() {
                return picked;
            }
            // Ejection never makes the pool unavailable: as if none were.
        }
        slot.balancer.pick(&PickInput {
            up: &slot.up,
            active,
            tried,
            key,
        })
    }

    /// Brings back the backends of `pool` whose ejection is over at `now`.
    fn restore(&mut self, pool: usize, now: Instant) {
        let Some(slot) = self.slots.get_mut(pool) else {
            return;
        };
        for b in 0..slot.streaks.len() {
            let s = &mut slot.streaks[b];
            if s.until.is_some_and(|t| t <= now) {
                s.until = None;
                s.failures = 0;
                s.back_at = Some(now);
                slot.ejected = slot.ejected.saturating_sub(1);
                slot.refresh(b);
                self.gauges.set_ejected(pool, b, false);
            }
        }
    }

    /// Brings back every backend whose ejection is over (the shard's periodic
    /// sweep, so the gauges follow even without traffic).
    pub fn restore_all(&mut self, now: Instant) {
        for p in 0..self.slots.len() {
            if self.slots[p].ejected > 0 {
                self.restore(p, now);
            }
        }
    }

    /// Whether `pool` has outlier ejection (`[pool.NAME.outlier]`): without
    /// it, [`outcome`](ShardPools::outcome) has nothing to count (and the
    /// caller need not read the clock for it).
    pub fn watches_outliers(&self, pool: usize) -> bool {
        self.slots.get(pool).is_some_and(|s| s.outlier.is_some())
    }

    /// This shard's request or connection to `(pool, backend)` (indices of the
    /// configuration this view is for) succeeded (`ok`) or failed: the
    /// outlier accounting. `true` if this ejected the backend.
    pub fn outcome(&mut self, pool: usize, backend: usize, ok: bool, now: Instant) -> bool {
        let Some(slot) = self.slots.get_mut(pool) else {
            return false;
        };
        let Some(o) = slot.outlier.clone() else {
            return false;
        };
        let n = slot.streaks.len();
        let Some(s) = slot.streaks.get_mut(backend) else {
            return false;
        };
        if s.until.is_some() {
            // Under way before the ejection: says nothing new.
            return false;
        }
        if ok {
            s.failures = 0;
            return false;
        }
        s.failures = s.failures.saturating_add(1);
        if s.failures < o.consecutive_failures {
            return false;
        }
        let allowed = n * o.max_ejected_percent.min(100) as usize / 100;
        if slot.ejected >= allowed {
            // At the cap: stays in, its streak kept (ejected once room frees).
            return false;
        }
        // The multiplier decays by one per base period back in service.
        let base = Duration::from_millis(o.base_ejection_ms);
        let served = s
            .back_at
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let decay = (served.as_millis() / u128::from(o.base_ejection_ms.max(1))) as u64;
        let times = u64::from(s.times).saturating_sub(decay).saturating_add(1);
        s.times = u32::try_from(times).unwrap_or(u32::MAX);
        let period = base
            .saturating_mul(s.times)
            .min(Duration::from_millis(o.max_ejection_ms));
        s.until = Some(now + period);
        s.failures = 0;
        slot.ejected += 1;
        slot.refresh(backend);
        self.gauges.set_ejected(pool, backend, true);
        self.gauges.ejection(pool, backend);
        true
    }

    /// Records what the health checker said of `(pool, backend)`; `false` if
    /// there is no such backend.
    pub fn set_up(&mut self, pool: usize, backend: usize, up: bool) -> bool {
        let Some(slot) = self.slots.get_mut(pool) else {
            return false;
        };
        match slot.up.get_mut(backend) {
            Some(u) => {
                *u = up;
                slot.refresh(backend);
                self.gauges.set_up(pool, backend, up);
                true
            }
            None => false,
        }
    }

    /// Whether this shard believes `(pool, backend)` is up.
    pub fn is_up(&self, pool: usize, backend: usize) -> bool {
        self.slots
            .get(pool)
            .and_then(|s| s.up.get(backend))
            .copied()
            .unwrap_or(false)
    }

    /// Whether `(pool, backend)` is ejected on this shard now.
    pub fn is_ejected(&self, pool: usize, backend: usize) -> bool {
        self.slots
            .get(pool)
            .and_then(|s| s.streaks.get(backend))
            .is_some_and(|s| s.until.is_some())
    }
}

/// One shard's cap for each backend of `pool`, served by `shards` shards:
/// `ceil(N / shards)`; `None`: uncapped.
pub fn shard_cap(pool: &Pool, shards: usize) -> Option<u32> {
    let n = pool.max_connections_per_backend?;
    let shards = u32::try_from(shards.max(1)).unwrap_or(u32::MAX);
    Some(n.div_ceil(shards).max(1))
}

/// The backends of `pool` at this shard's cap given its `active` counts,
/// leaving out those in `tried`.
pub fn full_backends(pool: &Pool, shards: usize, active: &[u32], tried: &[usize]) -> Vec<usize> {
    let Some(cap) = shard_cap(pool, shards) else {
        return Vec::new();
    };
    active
        .iter()
        .enumerate()
        .filter(|&(b, &n)| n >= cap && !tried.contains(&b))
        .map(|(b, _)| b)
        .collect()
}

/// The PROXY header an upstream connection of a pool with
/// `send_proxy_protocol` starts with: the client `client` (the real one, a
/// received PROXY header's source included) connected to `local` (the
/// address it reached, a received header's destination included).
pub fn proxy_header(
    version: crate::config::ProxyVersion,
    client: std::net::SocketAddr,
    local: Option<std::net::SocketAddr>,
) -> Vec<u8> {
    use shardline::proxy_protocol as pp;
    let local = local.unwrap_or_else(|| match client {
        std::net::SocketAddr::V4(_) => std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        std::net::SocketAddr::V6(_) => std::net::SocketAddr::from(([0u16; 8], 0)),
    });
    let mut out = Vec::with_capacity(64);
    match version {
        crate::config::ProxyVersion::V1 => pp::encode_v1(client, local, &mut out),
        crate::config::ProxyVersion::V2 => pp::encode_v2(client, local, &mut out),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(backends: usize, outlier: &str) -> ShardPools {
        let list: Vec<String> = (0..backends)
            .map(|i| format!("{{ address = \"127.0.0.1:{}\" }}", 9000 + i))
            .collect();
        let text = format!(
            "[[listener]]\naddress = \"127.0.0.1:8080\"\nmode = \"http\"\npool = \"p\"\n\
             [pool.p]\nbackends = [{}]\n[pool.p.outlier]\n{outlier}\n",
            list.join(", ")
        );
        let config = Config::parse(&text, "t").expect("valid");
        let gauges = Arc::new(BackendGauges::new(&config));
        ShardPools::new(&config, 0, gauges)
    }

    fn picks(p: &mut ShardPools, n: usize) -> Vec<usize> {
        (0..n).map(|_| p.pick(0, &[], 0, &[]).unwrap()).collect()
    }

    #[test]
    fn consecutive_failures_eject_for_a_growing_capped_period() {
        let mut p = pools(
            3,
            "consecutive_failures = 3\nbase_ejection_ms = 1000\nmax_ejection_ms = 2500\n\
             max_ejected_percent = 50",
        );
        let t = Instant::now();
        // A success in between resets the streak.
        assert!(!p.outcome(0, 1, false, t));
        assert!(!p.outcome(0, 1, false, t));
        assert!(!p.outcome(0, 1, true, t));
        assert!(!p.outcome(0, 1, false, t));
        assert!(!p.outcome(0, 1, false, t));
        assert!(p.outcome(0, 1, false, t));
        assert!(p.is_ejected(0, 1));
        assert!(!picks(&mut p, 10).contains(&1));
        // Outcomes while ejected change nothing.
        assert!(!p.outcome(0, 1, false, t));
        // Back after the base period.
        p.restore(0, t + Duration::from_millis(1000));
        assert!(!p.is_ejected(0, 1));
        assert!(picks(&mut p, 3).contains(&1));
        // Ejected again right away: twice the base.
        let t2 = t + Duration::from_millis(1000);
        for _ in 0..3 {
            p.outcome(0, 1, false, t2);
        }
        p.restore(0, t2 + Duration::from_millis(1999));
        assert!(p.is_ejected(0, 1));
        p.restore(0, t2 + Duration::from_millis(2000));
        assert!(!p.is_ejected(0, 1));
        // Third time: capped at max_ejection_ms.
        let t3 = t2 + Duration::from_millis(2000);
        for _ in 0..3 {
            p.outcome(0, 1, false, t3);
        }
        p.restore(0, t3 + Duration::from_millis(2499));
        assert!(p.is_ejected(0, 1));
        p.restore(0, t3 + Duration::from_millis(2500));
        assert!(!p.is_ejected(0, 1));
        // Long in service: the multiplier decays back to one base period.
        let t4 = t3 + Duration::from_secs(60);
        for _ in 0..3 {
            p.outcome(0, 1, false, t4);
        }
        p.restore(0, t4 + Duration::from_millis(1000));
        assert!(!p.is_ejected(0, 1));
    }

    #[test]
    fn max_ejected_percent_and_health_are_respected() {
        // 50 % of 3 is 1.
        let mut p = pools(3, "consecutive_failures = 1\nmax_ejected_percent = 50");
        let t = Instant::now();
        assert!(p.outcome(0, 0, false, t));
        assert!(!p.outcome(0, 1, false, t));
        assert!(!p.is_ejected(0, 1));
        // One backend: never ejected below 100 %.
        let mut one = pools(1, "consecutive_failures = 1\nmax_ejected_percent = 99");
        assert!(!one.outcome(0, 0, false, t));
        // At 100 % everything may go, but the pool still serves.
        let mut all = pools(2, "consecutive_failures = 1\nmax_ejected_percent = 100");
        assert!(all.outcome(0, 0, false, t));
        assert!(all.outcome(0, 1, false, t));
        assert_eq!(picks(&mut all, 4).len(), 4);
        // A backend down by health stays down when it comes back from ejection,
        // and the ejected healthy one is used rather than none.
        let mut p = pools(2, "consecutive_failures = 1\nmax_ejected_percent = 50");
        assert!(p.set_up(0, 1, false));
        assert!(p.outcome(0, 0, false, t));
        assert_eq!(picks(&mut p, 3), vec![0, 0, 0]);
        p.restore(0, t + Duration::from_secs(3600));
        assert!(!p.is_ejected(0, 0));
        assert_eq!(picks(&mut p, 3), vec![0, 0, 0]);
    }

    #[test]
    fn no_outlier_section_never_ejects() {
        let text = "[[listener]]\naddress = \"127.0.0.1:8080\"\nmode = \"http\"\npool = \"p\"\n\
                    [pool.p]\nbackends = [{ address = \"127.0.0.1:9000\" }, \
                    { address = \"127.0.0.1:9001\" }]\n";
        let config = Config::parse(text, "t").expect("valid");
        let mut p = ShardPools::new(&config, 0, Arc::new(BackendGauges::new(&config)));
        for _ in 0..100 {
            assert!(!p.outcome(0, 0, false, Instant::now()));
        }
        assert!(!p.is_ejected(0, 0));
    }
}
