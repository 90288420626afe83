//! One shard's upstream connections: the records of every upstream connection the
//! shard opened, and the idle keep-alive lists per backend. Never shared: a
//! pooled connection is only reused by the shard that opened it.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use shardline::ConnId;
use slab::Slab;

use crate::stats::BackendGauges;

/// Who an upstream connection is working for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpState {
    /// Connect in flight for client `(key, serial)`.
    Connecting(usize, u64),
    /// Carrying an exchange of client `(key, serial)`.
    Active(usize, u64),
    /// In the idle list of its backend.
    Idle,
}

/// An upstream connection.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) conn: ConnId,
    pub(crate) pool: usize,
    pub(crate) backend: usize,
    pub(crate) state: UpState,
    pub(crate) idle_since: Instant,
    /// The configuration generation its `pool` and `backend` indices are for.
    pub(crate) gen: u64,
}

/// Upstream records plus idle lists `[pool][backend]` (most recent last), and
/// per backend the count of connections that are not idle (connecting or
/// carrying an exchange): least-connections' load, and the `/metrics` gauge.
#[derive(Debug)]
pub(crate) struct UpstreamPool {
    conns: Slab<Upstream>,
    idle: Vec<Vec<Vec<usize>>>,
    active: Vec<Vec<u32>>,
    /// Pools where a backend's active count went down since
    /// [`take_freed`](UpstreamPool::take_freed) (their queues may move).
    freed: Vec<bool>,
    any_freed: bool,
    max_idle: usize,
    gauges: Arc<BackendGauges>,
    /// The configuration generation the lists and counts are for; records of
    /// older ones are neither counted nor pooled.
    gen: u64,
    /// Pools whose connections are never pooled (`send_proxy_protocol`: a
    /// connection carries its first client's PROXY header).
    unpooled: Vec<bool>,
}

impl UpstreamPool {
    /// `backends[p]` backends in pool `p`; at most `max_idle` idle per backend;
    /// active counts mirrored in `gauges`.
    pub(crate) fn new(
        backends: &[usize],
        max_idle: usize,
        gauges: Arc<BackendGauges>,
    ) -> UpstreamPool {
        UpstreamPool {
            conns: Slab::new(),
            idle: backends.iter().map(|&n| vec![Vec::new(); n]).collect(),
            active: backends.iter().map(|&n| vec![0; n]).collect(),
            freed: vec![false; backends.len()],
            any_freed: false,
            max_idle,
            gauges,
            gen: 0,
            unpooled: Vec::new(),
        }
    }

    /// Which pools (by index, in the current generation) are never pooled.
    pub(crate) fn set_unpooled(&mut self, unpooled: Vec<bool>) {
        self.unpooled = unpooled;
    }

    /// A new configuration (generation `gen`, `backends[p]` backends in pool
    /// `p`): the idle connections are returned (for closing) and forgotten;
    /// those carrying an exchange finish it and are then closed.
    pub(crate) fn reconfigure(
        &mut self,
        backends: &[usize],
        max_idle: usize,
        gauges: Arc<BackendGauges>,
        gen: u64,
    ) -> Vec<ConnId> {
        let idle = self.drain_idle();
        self.idle = backends.iter().map(|&n| vec![Vec::new(); n]).collect();
        self.active = backends.iter().map(|&n| vec![0; n]).collect();
        self.freed = vec![false; backends.len()];
        self.any_freed = false;
        self.max_idle = max_idle;
        self.gauges = gauges;
        self.gen = gen;
        idle
    }

    /// Connections to each backend of `pool` that are not idle.
    pub(crate) fn active(&self, pool: usize) -> &[u32] {
        self.active.get(pool).map(Vec::as_slice).unwrap_or(&[])
    }

    fn count(&mut self, pool: usize, backend: usize, gen: u64, up: bool) {
        if gen != self.gen {
            return;
        }
        if let Some(n) = self.active.get_mut(pool).and_then(|p| p.get_mut(backend)) {
            if up || *n > 0 {
                self.gauges.active(pool, backend, up);
            }
            *n = if up { *n + 1 } else { n.saturating_sub(1) };
            if !up {
                if let Some(f) = self.freed.get_mut(pool) {
                    *f = true;
                    self.any_freed = true;
                }
            }
        }
    }

    /// Whether some pool had an upstream connection leave use since the last
    /// [`take_freed`](UpstreamPool::take_freed).
    pub(crate) fn any_freed(&self) -> bool {
        self.any_freed
    }

    /// Whether an upstream connection of `pool` left use since the last
    /// call for it (cleared); the first call after [`any_freed`] clears that.
    ///
    /// [`any_freed`]: UpstreamPool::any_freed
    pub(crate) fn take_freed(&mut self, pool: usize) -> bool {
        self.any_freed = false;
        self.freed.get_mut(pool).is_some_and(std::mem::take)
    }

    /// The record of upstream `key`.
    pub(crate) fn get(&self, key: usize) -> Option<&Upstream> {
        self.conns.get(key)
    }

    /// The key the next [`insert_connecting`](UpstreamPool::insert_connecting)
    /// returns (so the connection's state can name it before it exists).
    pub(crate) fn next_key(&self) -> usize {
        self.conns.vacant_key()
    }

    /// Records a connect just started for client `owner`; returns its key.
    pub(crate) fn insert_connecting(
        &mut self,
        conn: ConnId,
        pool: usize,
        backend: usize,
        owner: (usize, u64),
        now: Instant,
    ) -> usize {
        let gen = self.gen;
        self.count(pool, backend, gen, true);
        self.conns.insert(Upstream {
            conn,
            pool,
            backend,
            state: UpState::Connecting(owner.0, owner.1),
            idle_since: now,
            gen,
        })
    }

    /// A connecting upstream is up and now carries its client's exchange.
    pub(crate) fn set_active(&mut self, key: usize, owner: (usize, u64)) {
        if let Some(up) = self.conns.get_mut(key) {
            if up.state == UpState::Idle {
                let (p, b, g) = (up.pool, up.backend, up.gen);
                up.state = UpState::Active(owner.0, owner.1);
                self.count(p, b, g, true);
            } else {
                up.state = UpState::Active(owner.0, owner.1);
            }
        }
    }

    /// The most recently idled connection to `(pool, backend)`, now `Active`.
    pub(crate) fn take_idle(
        &mut self,
        pool: usize,
        backend: usize,
        owner: (usize, u64),
    ) -> Option<usize> {
        let list = self.idle.get_mut(pool)?.get_mut(backend)?;
        while let Some(key) = list.pop() {
            if let Some(up) = self.conns.get_mut(key).filter(|u| u.state == UpState::Idle) {
                up.state = UpState::Active(owner.0, owner.1);
                let gen = up.gen;
                self.count(pool, backend, gen, true);
                return Some(key);
            }
        }
        None
    }

    /// Puts `key` in its backend's idle list; `false` (and nothing changed) when
    /// the list is full: the caller closes the connection.
    pub(crate) fn put_idle(&mut self, key: usize, now: Instant) -> bool {
        let Some(up) = self.conns.get_mut(key).filter(|u| u.gen == self.gen) else {
            return false;
        };
        if self.unpooled.get(up.pool).copied().unwrap_or(false) {
            return false;
        }
        let Some(list) = self
            .idle
            .get_mut(up.pool)
            .and_then(|p| p.get_mut(up.backend))
        else {
            return false;
        };
        if list.len() >= self.max_idle {
            return false;
        }
        let was_active = up.state != UpState::Idle;
        up.state = UpState::Idle;
        up.idle_since = now;
        list.push(key);
        let (p, b, g) = (up.pool, up.backend, up.gen);
        if was_active {
            self.count(p, b, g, false);
        }
        true
    }

    /// Forgets `key` (closed or dropped), from its idle list too.
    pub(crate) fn remove(&mut self, key: usize) -> Option<Upstream> {
        let up = self.conns.try_remove(key)?;
        if up.state == UpState::Idle {
            if let Some(list) = self
                .idle
                .get_mut(up.pool)
                .and_then(|p| p.get_mut(up.backend))
            {
                list.retain(|&k| k != key);
            }
        } else {
            self.count(up.pool, up.backend, up.gen, false);
        }
        Some(up)
    }

    /// Forgets `key`, which leaves the pool as the upstream of an upgraded
    /// connection: it stays counted as active until [`tunnel_closed`].
    ///
    /// [`tunnel_closed`]: UpstreamPool::tunnel_closed
    pub(crate) fn detach(&mut self, key: usize) -> Option<Upstream> {
        if self.conns.get(key)?.state == UpState::Idle {
            return None;
        }
        self.conns.try_remove(key)
    }

    /// An upgraded connection that [`detach`](UpstreamPool::detach) let go
    /// ended: no longer counted (if `gen` is still the current generation).
    pub(crate) fn tunnel_closed(&mut self, pool: usize, backend: usize, gen: u64) {
        self.count(pool, backend, gen, false);
    }

    /// Idle connections idle for longer than `timeout` (removed from the lists).
    pub(crate) fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<ConnId> {
        let mut gone = Vec::new();
        let mut keys = Vec::new();
        for pool in &mut self.idle {
            for list in pool {
                list.retain(|&k| {
                    let old = self
                        .conns
                        .get(k)
                        .is_some_and(|u| now.duration_since(u.idle_since) >= timeout);
                    if old {
                        keys.push(k);
                    }
                    !old
                });
            }
        }
        for k in keys {
            if let Some(up) = self.conns.try_remove(k) {
                gone.push(up.conn);
            }
        }
        gone
    }

    /// Every idle connection (removed).
    pub(crate) fn drain_idle(&mut self) -> Vec<ConnId> {
        self.expire(Instant::now(), Duration::ZERO)
    }
}
