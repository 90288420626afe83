//! Picking a backend of a pool. Every shard has its own [`Balancer`] per pool:
//! balancing state is never shared between shards.

use crate::config::{BalanceKind, Pool};

/// One shard's balancing state for one pool.
#[derive(Debug, Clone)]
pub struct Balancer {
    kind: BalanceKind,
    backends: usize,
    next: usize,
}

impl Balancer {
    /// A balancer for `pool` on shard `shard`: round-robin starts at a different
    /// backend on each shard, so shards do not all send their first request to the
    /// same one.
    pub fn new(pool: &Pool, shard: usize) -> Balancer {
        let backends = pool.backends.len().max(1);
        Balancer {
            kind: pool.balance,
            backends,
            next: shard % backends,
        }
    }

    /// The backend (index into the pool) for the next connection or request.
    pub fn pick(&mut self) -> usize {
        match self.kind {
            BalanceKind::RoundRobin => {
                let i = self.next;
                self.next = (self.next + 1) % self.backends;
                i
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backend;

    fn pool(n: usize) -> Pool {
        Pool {
            name: "p".into(),
            backends: (0..n)
                .map(|i| Backend {
                    address: format!("127.0.0.1:{}", 9000 + i).parse().expect("literal"),
                    weight: 1,
                })
                .collect(),
            balance: BalanceKind::RoundRobin,
        }
    }

    #[test]
    fn round_robin_visits_each_backend_once_per_cycle() {
        for shard in 0..4 {
            let mut b = Balancer::new(&pool(3), shard);
            let picks: Vec<usize> = (0..9).map(|_| b.pick()).collect();
            for cycle in picks.chunks(3) {
                let mut c = cycle.to_vec();
                c.sort_unstable();
                assert_eq!(c, vec![0, 1, 2], "shard {shard}: {picks:?}");
            }
            assert_eq!(picks[0], shard % 3, "shards start apart");
        }
    }
}
