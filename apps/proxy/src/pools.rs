//! One shard's view of every pool: its balancer and the health of each backend
//! as this shard last heard it (see [`crate::health`]). Owned by one shard's
//! handler, never shared.

use std::sync::Arc;

use crate::{
    balance::{Balancer, NoBackend, PickInput},
    config::Config,
    stats::BackendGauges,
};

#[derive(Debug)]
struct Slot {
    balancer: Balancer,
    up: Vec<bool>,
}

/// Balancers and health per pool, for one shard.
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
        let slot = self.slots.get_mut(pool).ok_or(NoBackend::AllDown)?;
        slot.balancer.pick(&PickInput {
            up: &slot.up,
            active,
            tried,
            key,
        })
    }

    /// Records what the health checker said of `(pool, backend)`; `false` if
    /// there is no such backend.
    pub fn set_up(&mut self, pool: usize, backend: usize, up: bool) -> bool {
        match self.slots.get_mut(pool).and_then(|s| s.up.get_mut(backend)) {
            Some(u) => {
                *u = up;
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
