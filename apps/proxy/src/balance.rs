//! Picking a backend of a pool. Every shard has its own [`Balancer`] per pool:
//! balancing state is never shared between shards.
//!
//! The algorithms (`balance = ...` in a pool):
//!
//! - **`round-robin`**: each usable backend in turn; weights are ignored.
//! - **`weighted-round-robin`**: nginx's smooth weighted round-robin. Every pick,
//!   each usable backend's `current` grows by its weight; the largest `current`
//!   wins (the lowest index on a tie) and loses the sum of the weights. Weights
//!   5, 1, 1 give `a a b a c a a`: proportional, and interleaved rather than in
//!   bursts. (nginx also lowers a failing peer's effective weight; here a failing
//!   backend is taken out by health checks instead.)
//! - **`least-connections`**: the backend with the fewest active upstream
//!   requests (HTTP) or connections (TCP) relative to its weight
//!   (`active / weight`), ties broken round-robin. The counts are **per shard**:
//!   each shard only knows its own traffic, so with N shards a backend may carry
//!   up to N times the imbalance one shard sees. Sharing them would put an atomic
//!   on every request of every shard; per-shard counts are exact for what each
//!   shard can act on and converge to the same spread under load.
//! - **`power-of-two-choices`**: two distinct usable backends at random (a per
//!   shard xorshift generator), the less loaded of the two (same load measure as
//!   least-connections). Never the more loaded of its two.
//! - **`consistent-hash`**: a hash ring with [`VNODES_PER_WEIGHT`] × weight
//!   virtual nodes per backend, placed by hashing the backend's address; a key
//!   goes to the first point at or after its hash, clockwise, skipping backends
//!   that are down or already tried. When one of N backends leaves only the keys
//!   it held (~1/N) move. The key is the client IP, or in HTTP a named header
//!   (`hash_header`; a request without it hashes its client IP). The ring is
//!   bounded whatever the weights and the number of backends: past
//!   [`MAX_RING_POINTS`] points (a pool of more than 409 weight units) every
//!   backend's virtual nodes are scaled down in proportion to its weight, at
//!   least one each (see [`ring_points`]). A scaled ring keeps the weights'
//!   proportions (to rounding) but a backend joining or leaving such a pool
//!   changes the scale, so somewhat more than its own keys move.
//!
//! "Usable" means healthy (see [`crate::health`]) and not already tried for this
//! request. When no backend of the pool is healthy the pool fails open (every
//! backend is usable) if `fail_open`, else the pick fails with
//! [`NoBackend::AllDown`] (503).

use std::net::IpAddr;

use crate::config::{BalanceKind, Pool};

/// Virtual nodes on the consistent-hash ring per unit of weight.
pub const VNODES_PER_WEIGHT: u32 = 160;

/// Most points on one consistent-hash ring (16 bytes each: 1 MiB per pool per
/// shard), however large the weights and the pool; past it virtual nodes are
/// scaled down ([`ring_points`]). The ring can exceed it only by one point per
/// backend, when a pool has so many backends that some would get none.
pub const MAX_RING_POINTS: u64 = 1 << 16;

/// Why no backend could be picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoBackend {
    /// Every backend is down and the pool does not fail open.
    AllDown,
    /// Every usable backend was already tried for this request.
    AllTried,
}

/// What a pick is made from.
#[derive(Debug, Clone, Copy)]
pub struct PickInput<'a> {
    /// Health of each backend (`true`: up). Shorter than the pool: the rest up.
    pub up: &'a [bool],
    /// Active upstream requests/connections per backend on this shard.
    pub active: &'a [u32],
    /// Backends already tried for this request.
    pub tried: &'a [usize],
    /// Consistent-hash key ([`hash_ip`] / [`hash_bytes`]); ignored otherwise.
    pub key: u64,
}

/// One shard's balancing state for one pool.
#[derive(Debug, Clone)]
pub struct Balancer {
    kind: BalanceKind,
    weights: Vec<u32>,
    fail_open: bool,
    /// Round-robin cursor (also breaks least-connections ties).
    next: usize,
    /// Smooth weighted round-robin: each backend's current weight.
    current: Vec<i64>,
    /// xorshift64 state (power of two choices).
    rng: u64,
    /// Consistent hash: (point, backend), sorted by point.
    ring: Vec<(u64, u32)>,
}

impl Balancer {
    /// A balancer for `pool` on shard `shard`. Shards start apart (round-robin at
    /// a different backend, weighted round-robin `shard` steps in, different
    /// random seeds) so they do not all send their first request to the same one.
    pub fn new(pool: &Pool, shard: usize) -> Balancer {
        let weights: Vec<u32> = pool.backends.iter().map(|b| b.weight.max(1)).collect();
        let n = weights.len().max(1);
        let ring = if pool.balance == BalanceKind::ConsistentHash {
            build_ring(pool)
        } else {
            Vec::new()
        };
        let mut b = Balancer {
            kind: pool.balance,
            current: vec![0; weights.len()],
            weights,
            fail_open: pool.fail_open,
            next: shard % n,
            rng: splitmix64(0x5eed_0000 + shard as u64) | 1,
            ring,
        };
        if b.kind == BalanceKind::WeightedRoundRobin {
            let input = PickInput {
                up: &[],
                active: &[],
                tried: &[],
                key: 0,
            };
            for _ in 0..shard {
                let _ = b.pick(&input);
            }
        }
        b
    }

    /// Backends in the pool.
    pub fn len(&self) -> usize {
        self.weights.len()
    }

    /// Whether the pool has no backend (never, once validated).
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// The backend (index into the pool) for the next connection or request.
    pub fn pick(&mut self, input: &PickInput<'_>) -> Result<usize, NoBackend> {
        let n = self.weights.len();
        let up = |i: usize| input.up.get(i).copied().unwrap_or(true);
        let any_up = (0..n).any(up);
        if !any_up && !self.fail_open {
            return Err(NoBackend::AllDown);
        }
        let usable = |i: usize| (!any_up || up(i)) && !input.tried.contains(&i);
        let load = |i: usize| u64::from(input.active.get(i).copied().unwrap_or(0));
        let picked = match self.kind {
            BalanceKind::RoundRobin => {
                let found = (0..n).map(|s| (self.next + s) % n).find(|&i| usable(i));
                if let Some(i) = found {
                    self.next = (i + 1) % n;
                }
                found
            }
            BalanceKind::WeightedRoundRobin => {
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for i in (0..n).filter(|&i| usable(i)) {
                    let w = i64::from(self.weights[i]);
                    self.current[i] += w;
                    total += w;
                    if best.is_none_or(|b| self.current[i] > self.current[b]) {
                        best = Some(i);
                    }
                }
                if let Some(b) = best {
                    self.current[b] -= total;
                }
                best
            }
            BalanceKind::LeastConnections => {
                let mut best: Option<usize> = None;
                for i in (0..n).map(|s| (self.next + s) % n).filter(|&i| usable(i)) {
                    if best.is_none_or(|b| self.lighter(i, b, &load)) {
                        best = Some(i);
                    }
                }
                if best.is_some() {
                    self.next = (self.next + 1) % n;
                }
                best
            }
            BalanceKind::PowerOfTwoChoices => {
                self.two_choices(&usable).map(
                    |(a, b)| {
                        if self.lighter(b, a, &load) {
                            b
                        } else {
                            a
                        }
                    },
                )
            }
            BalanceKind::ConsistentHash => {
                let start = self.ring.partition_point(|&(p, _)| p < input.key);
                let len = self.ring.len();
                (0..len)
                    .map(|s| self.ring[(start + s) % len].1 as usize)
                    .find(|&i| usable(i))
            }
        };
        picked.ok_or(NoBackend::AllTried)
    }

    /// `a` carries less load than `b` for its weight: `load(a)/w(a) < load(b)/w(b)`.
    fn lighter(&self, a: usize, b: usize, load: &impl Fn(usize) -> u64) -> bool {
        load(a) * u64::from(self.weights[b]) < load(b) * u64::from(self.weights[a])
    }

    /// Two distinct usable backends at random (the same one twice if only one is
    /// usable), or `None` when none is.
    fn two_choices(&mut self, usable: &impl Fn(usize) -> bool) -> Option<(usize, usize)> {
        let n = self.weights.len();
        let m = (0..n).filter(|&i| usable(i)).count();
        if m == 0 {
            return None;
        }
        let r1 = (self.random() % m as u64) as usize;
        let mut r2 = r1;
        if m > 1 {
            r2 = (self.random() % (m as u64 - 1)) as usize;
            if r2 >= r1 {
                r2 += 1;
            }
        }
        let nth = |r: usize| (0..n).filter(|&i| usable(i)).nth(r).unwrap_or(0);
        Some((nth(r1), nth(r2)))
    }

    fn random(&mut self) -> u64 {
        // xorshift64: plenty for spreading load, no dependency, no syscall.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// How many ring points each backend of `weights` gets: [`VNODES_PER_WEIGHT`]
/// × weight while the ring stays within [`MAX_RING_POINTS`]; otherwise
/// `MAX_RING_POINTS` shared in proportion to the weights (rounded down, at
/// least one each, so every backend stays reachable). A weight of 0 counts as 1.
pub fn ring_points(weights: impl Iterator<Item = u32> + Clone) -> impl Iterator<Item = u64> {
    let per = u64::from(VNODES_PER_WEIGHT);
    let total: u64 = weights.clone().map(|w| u64::from(w.max(1))).sum();
    let scaled = total.saturating_mul(per) > MAX_RING_POINTS;
    weights.map(move |w| {
        let w = u64::from(w.max(1));
        if scaled {
            // w ≤ 2^32 and MAX_RING_POINTS = 2^16: no overflow.
            (w * MAX_RING_POINTS / total).max(1)
        } else {
            w * per
        }
    })
}

fn build_ring(pool: &Pool) -> Vec<(u64, u32)> {
    use std::fmt::Write as _;
    let counts: Vec<u64> = ring_points(pool.backends.iter().map(|b| b.weight)).collect();
    let mut ring = Vec::with_capacity(counts.iter().sum::<u64>() as usize);
    let mut label = String::new();
    for (i, (b, &points)) in pool.backends.iter().zip(&counts).enumerate() {
        for v in 0..points {
            label.clear();
            let _ = write!(label, "{}#{v}", b.address);
            ring.push((hash_bytes(label.as_bytes()), i as u32));
        }
    }
    // Equal points (vanishingly rare) are ordered by backend so every shard
    // builds the same ring.
    ring.sort_unstable();
    ring
}

/// A 64-bit hash of `bytes` (FNV-1a, then a splitmix64 finaliser so that
/// similar inputs spread over the whole ring). Stable across runs and builds.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix64(h)
}

/// The consistent-hash key of a client address.
pub fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => hash_bytes(&v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => hash_bytes(&v4.octets()),
            None => hash_bytes(&v6.octets()),
        },
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backend;

    fn pool(weights: &[u32], balance: BalanceKind) -> Pool {
        Pool {
            name: "p".into(),
            backends: weights
                .iter()
                .enumerate()
                .map(|(i, &weight)| Backend {
                    address: format!("127.0.0.1:{}", 9000 + i).parse().expect("literal"),
                    weight,
                })
                .collect(),
            balance,
            ..Pool::default()
        }
    }

    fn all_up<'a>(active: &'a [u32], key: u64) -> PickInput<'a> {
        PickInput {
            up: &[],
            active,
            tried: &[],
            key,
        }
    }

    fn picks(b: &mut Balancer, n: usize) -> Vec<usize> {
        (0..n)
            .map(|_| b.pick(&all_up(&[], 0)).expect("a backend"))
            .collect()
    }

    #[test]
    fn round_robin_visits_each_backend_once_per_cycle() {
        for shard in 0..4 {
            let mut b = Balancer::new(&pool(&[1, 1, 1], BalanceKind::RoundRobin), shard);
            let picks = picks(&mut b, 9);
            for cycle in picks.chunks(3) {
                let mut c = cycle.to_vec();
                c.sort_unstable();
                assert_eq!(c, vec![0, 1, 2], "shard {shard}: {picks:?}");
            }
            assert_eq!(picks[0], shard % 3, "shards start apart");
        }
    }

    #[test]
    fn round_robin_skips_down_and_tried_backends() {
        let mut b = Balancer::new(&pool(&[1, 1, 1], BalanceKind::RoundRobin), 0);
        let up = [true, false, true];
        let got: Vec<usize> = (0..4)
            .map(|_| {
                b.pick(&PickInput {
                    up: &up,
                    active: &[],
                    tried: &[],
                    key: 0,
                })
                .expect("up")
            })
            .collect();
        assert_eq!(got, vec![0, 2, 0, 2]);
        let tried = [0, 2];
        let input = PickInput {
            up: &up,
            active: &[],
            tried: &tried,
            key: 0,
        };
        assert_eq!(b.pick(&input), Err(NoBackend::AllTried));
    }

    #[test]
    fn smooth_weighted_round_robin_matches_nginx() {
        // nginx's own example: weights 5, 1, 1 → a a b a c a a.
        let mut b = Balancer::new(&pool(&[5, 1, 1], BalanceKind::WeightedRoundRobin), 0);
        let seq = picks(&mut b, 14);
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
        // 2, 1: a b a, repeating.
        let mut b = Balancer::new(&pool(&[2, 1], BalanceKind::WeightedRoundRobin), 0);
        assert_eq!(picks(&mut b, 6), vec![0, 1, 0, 0, 1, 0]);
        // 4, 3, 2, 1 over one cycle of 10: exactly the weights.
        let mut b = Balancer::new(&pool(&[4, 3, 2, 1], BalanceKind::WeightedRoundRobin), 0);
        let seq = picks(&mut b, 10);
        assert_eq!(seq, vec![0, 1, 2, 0, 1, 3, 0, 2, 1, 0]);
        for (i, w) in [4, 3, 2, 1].into_iter().enumerate() {
            assert_eq!(seq.iter().filter(|&&x| x == i).count(), w);
        }
    }

    #[test]
    fn smooth_weighted_round_robin_shards_start_apart_with_the_same_spread() {
        let p = pool(&[5, 1, 1], BalanceKind::WeightedRoundRobin);
        let mut shard0 = Balancer::new(&p, 0);
        let cycle = picks(&mut shard0, 7);
        let mut shard2 = Balancer::new(&p, 2);
        let seq = picks(&mut shard2, 7);
        // The same cycle, two steps in.
        let rotated: Vec<usize> = (0..7).map(|i| cycle[(i + 2) % 7]).collect();
        assert_eq!(seq, rotated);
    }

    #[test]
    fn least_connections_picks_the_least_loaded() {
        let mut b = Balancer::new(&pool(&[1, 1, 1], BalanceKind::LeastConnections), 0);
        assert_eq!(b.pick(&all_up(&[3, 1, 2], 0)), Ok(1));
        assert_eq!(b.pick(&all_up(&[0, 1, 2], 0)), Ok(0));
        assert_eq!(b.pick(&all_up(&[5, 4, 0], 0)), Ok(2));
        // Ties go round-robin.
        let mut seen: Vec<usize> = (0..6)
            .map(|_| b.pick(&all_up(&[2, 2, 2], 0)).expect("a"))
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 0, 1, 1, 2, 2]);
        // Weighted: 4 active on weight 4 is lighter than 2 on weight 1.
        let mut w = Balancer::new(&pool(&[4, 1], BalanceKind::LeastConnections), 0);
        assert_eq!(w.pick(&all_up(&[4, 2], 0)), Ok(0));
        assert_eq!(w.pick(&all_up(&[5, 1], 0)), Ok(1));
        // A down backend is never picked, however idle.
        let input = PickInput {
            up: &[false, true, true],
            active: &[0, 9, 8],
            tried: &[],
            key: 0,
        };
        assert_eq!(b.pick(&input), Ok(2));
    }

    #[test]
    fn power_of_two_never_picks_the_more_loaded_of_its_two() {
        let mut b = Balancer::new(&pool(&[1; 6], BalanceKind::PowerOfTwoChoices), 3);
        let active = [7, 0, 3, 9, 1, 5];
        let mut picked = [0usize; 6];
        for _ in 0..2000 {
            // The same generator state shows which two the pick will draw.
            let (x, y) = b.clone().two_choices(&|_| true).expect("two");
            assert_ne!(x, y, "two distinct backends");
            let got = b.pick(&all_up(&active, 0)).expect("a backend");
            assert!(got == x || got == y, "picked one of its two");
            let other = if got == x { y } else { x };
            assert!(active[got] <= active[other], "{got} over {other}");
            picked[got] += 1;
        }
        // The most loaded backend is the more loaded of every pair it is in.
        assert_eq!(picked[3], 0);
        // The least loaded wins every pair it is drawn in: about 2/6 of picks.
        assert!(picked[1] > 500, "{picked:?}");
        // With equal loads every backend gets a share.
        let equal = picks(&mut b, 600);
        for i in 0..6 {
            assert!(equal.iter().filter(|&&x| x == i).count() > 50, "{i}");
        }
    }

    fn owners(b: &mut Balancer, keys: &[u64], up: &[bool]) -> Vec<usize> {
        keys.iter()
            .map(|&key| {
                b.pick(&PickInput {
                    up,
                    active: &[],
                    tried: &[],
                    key,
                })
                .expect("a backend")
            })
            .collect()
    }

    #[test]
    fn consistent_hash_moves_only_the_keys_of_a_backend_that_leaves() {
        let n = 10;
        let keys: Vec<u64> = (0..20_000u32)
            .map(|i| hash_bytes(&i.to_be_bytes()))
            .collect();
        let full = pool(&[1; 10], BalanceKind::ConsistentHash);
        let before = owners(&mut Balancer::new(&full, 0), &keys, &[]);
        // Stable: the same key, the same backend, on every shard.
        assert_eq!(before, owners(&mut Balancer::new(&full, 3), &keys, &[]));
        // Spread: every backend holds roughly 1/N.
        for i in 0..n {
            let share = before.iter().filter(|&&x| x == i).count();
            assert!((1200..2900).contains(&share), "backend {i}: {share}");
        }
        // Backend 3 leaves the configuration: a ring of the other nine.
        let mut smaller = full.clone();
        smaller.backends.remove(3);
        let after = owners(&mut Balancer::new(&smaller, 0), &keys, &[]);
        let mut moved = 0;
        for (b, a) in before.iter().zip(&after) {
            // Indices past 3 shift down by one in the smaller pool.
            let a = if *a >= 3 { a + 1 } else { *a };
            if *b != a {
                moved += 1;
                assert_eq!(*b, 3, "only keys of the backend that left move");
            }
        }
        let held = before.iter().filter(|&&x| x == 3).count();
        assert_eq!(moved, held);
        let frac = moved as f64 / keys.len() as f64;
        assert!((0.06..0.15).contains(&frac), "moved {frac}");
        // Backend 3 marked down instead: exactly its keys move, to the others.
        let mut up = vec![true; n];
        up[3] = false;
        let down = owners(&mut Balancer::new(&full, 0), &keys, &up);
        for (b, d) in before.iter().zip(&down) {
            assert!(*b == *d || *b == 3, "a key of an up backend moved");
            assert_ne!(*d, 3);
        }
    }

    #[test]
    fn consistent_hash_weights_scale_shares() {
        let p = pool(&[3, 1], BalanceKind::ConsistentHash);
        let keys: Vec<u64> = (0..20_000u32)
            .map(|i| hash_bytes(&i.to_le_bytes()))
            .collect();
        let got = owners(&mut Balancer::new(&p, 0), &keys, &[]);
        let heavy = got.iter().filter(|&&x| x == 0).count() as f64 / keys.len() as f64;
        assert!((0.68..0.82).contains(&heavy), "{heavy}");
        assert_eq!(
            hash_ip("10.0.0.1".parse().expect("ip")),
            hash_ip("::ffff:10.0.0.1".parse().expect("ip"))
        );
    }

    #[test]
    fn ring_size_is_bounded_whatever_the_weights_and_backends() {
        // Small pools: 160 points per weight unit, exactly.
        let b = Balancer::new(&pool(&[3, 1], BalanceKind::ConsistentHash), 0);
        assert_eq!(b.ring.len(), 4 * VNODES_PER_WEIGHT as usize);
        // At the weight limit: scaled down to the cap, proportions kept.
        let p = pool(&[256, 128, 64, 1], BalanceKind::ConsistentHash);
        let b = Balancer::new(&p, 0);
        assert!(b.ring.len() as u64 <= MAX_RING_POINTS, "{}", b.ring.len());
        assert!(
            b.ring.len() as u64 > MAX_RING_POINTS - 4,
            "{}",
            b.ring.len()
        );
        let count = |i: u32| b.ring.iter().filter(|&&(_, x)| x == i).count();
        let ratio = count(0) as f64 / count(1) as f64;
        assert!((ratio - 2.0).abs() < 0.001, "{ratio}");
        assert!(count(3) >= 1, "every backend keeps a point");
        let keys: Vec<u64> = (0..20_000u32)
            .map(|i| hash_bytes(&i.to_be_bytes()))
            .collect();
        let got = owners(&mut Balancer::new(&p, 1), &keys, &[]);
        let heavy = got.iter().filter(|&&x| x == 0).count() as f64 / keys.len() as f64;
        assert!((0.52..0.64).contains(&heavy), "{heavy}");
        // Weights past any validation (4294967295 each): still the cap.
        let huge = pool(&[u32::MAX, u32::MAX, 7], BalanceKind::ConsistentHash);
        let b = Balancer::new(&huge, 0);
        assert!(b.ring.len() as u64 <= MAX_RING_POINTS, "{}", b.ring.len());
        assert_eq!(b.ring.iter().filter(|&&(_, x)| x == 2).count(), 1);
        // More backends than the cap: one point each, every one reachable.
        let n = MAX_RING_POINTS as usize + 500;
        let mut many = pool(&[1], BalanceKind::ConsistentHash);
        many.backends = (0..n)
            .map(|i| Backend {
                address: std::net::SocketAddr::from((
                    [10, (i >> 16) as u8, (i >> 8) as u8, i as u8],
                    80,
                )),
                weight: 1,
            })
            .collect();
        let b = Balancer::new(&many, 0);
        assert_eq!(b.ring.len(), n);
        // `ring_points` itself, for any mix.
        for weights in [vec![256u32; 1000], vec![1; 409], vec![1; 410], vec![0, 5]] {
            let total: u64 = ring_points(weights.iter().copied()).sum();
            let n = weights.len() as u64;
            assert!(total <= MAX_RING_POINTS.max(n), "{total} for {n} backends");
        }
        assert_eq!(ring_points([1u32; 409].into_iter()).sum::<u64>(), 409 * 160);
    }

    #[test]
    fn all_down_fails_closed_or_open() {
        let mut closed = Balancer::new(&pool(&[1, 1], BalanceKind::RoundRobin), 0);
        let down = PickInput {
            up: &[false, false],
            active: &[],
            tried: &[],
            key: 0,
        };
        assert_eq!(closed.pick(&down), Err(NoBackend::AllDown));
        let mut p = pool(&[1, 1], BalanceKind::RoundRobin);
        p.fail_open = true;
        let mut open = Balancer::new(&p, 0);
        assert_eq!(open.pick(&down), Ok(0));
        assert_eq!(open.pick(&down), Ok(1));
    }
}
