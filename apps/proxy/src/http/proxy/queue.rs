//! Per-backend connection caps (`max_connections_per_backend`) and the queue of
//! requests waiting for one (`queue`, `queue_timeout_ms`), HAProxy's server
//! `maxconn` and backend queue.
//!
//! A backend's upstream connections *in use* (connecting, carrying a request,
//! or an upgraded connection's; idle pooled ones do not count) are capped per
//! shard at `ceil(N / shards)`, so the whole proxy holds at most about `N`
//! (up to `N + shards - 1`); a shard cannot borrow another's unused share,
//! which is the approximation. A request finding every backend of its pool
//! (healthy, not ejected, not yet tried for it) at its cap waits in its pool's
//! FIFO queue on this shard, at most `queue` of them (more: 503 at once); when
//! a connection to that pool leaves use the oldest waiting request is
//! dispatched; one that waited `queue_timeout_ms` gets 503 with
//! `Retry-After: 1`. A queued request's body is not read meanwhile (beyond
//! the usual input buffer). A reload answers the queued requests 503 (their
//! pool indices are the old configuration's).

use shardline::Ctx;

use super::{ProxyShard, TimerKind};

/// A request in a queue: client `client` of connection serial `serial`,
/// exchange serial `exchange` (serials are never reused, so a stale entry is
/// told apart).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waiting {
    pub(crate) client: usize,
    pub(crate) serial: u64,
    pub(crate) exchange: u64,
}

impl ProxyShard {
    /// Whether the entry still names a live queued exchange.
    fn queued_live(&self, w: &Waiting) -> bool {
        self.http
            .clients
            .get(w.client)
            .filter(|c| c.serial == w.serial)
            .and_then(|c| c.exchange.as_ref())
            .is_some_and(|e| e.serial == w.exchange && e.queued)
    }

    /// Puts client `ck`'s exchange in `pool`'s queue (503 if it is full).
    pub(super) fn enqueue(&mut self, ctx: &mut Ctx<'_, ProxyShard>, ck: usize, pool: usize) {
        let Some(limit) = self.config.pools.get(pool).map(|p| p.queue) else {
            return self.fail(ctx, ck, Some(503), "no such pool");
        };
        let ms = self.config.pools[pool].queue_timeout_ms;
        let len = self.http.queues.get(pool).map_or(0, |q| q.len());
        if len >= limit {
            // Entries of clients gone since are dropped before refusing.
            let mut q = std::mem::take(&mut self.http.queues[pool]);
            q.retain(|w| self.queued_live(w));
            self.http.queues[pool] = q;
        }
        if self.http.queues[pool].len() >= limit {
            return self.fail_with(
                ctx,
                ck,
                Some(503),
                "Retry-After: 1\r\n",
                "every backend at max_connections_per_backend and the queue full",
            );
        }
        let Some(ex) = self
            .http
            .clients
            .get_mut(ck)
            .and_then(|c| c.exchange.as_mut())
        else {
            return;
        };
        ex.queued = true;
        let waiting = self.arm_exchange_timer(ctx, ck, ms, |w| TimerKind::Queue {
            client: w.client,
            serial: w.serial,
            exchange: w.exchange,
        });
        if let Some(w) = waiting {
            self.http.queues[pool].push_back(w);
        }
    }

    /// A queued request's deadline: 503 with `Retry-After` if still waiting.
    pub(super) fn queue_timeout(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        client: usize,
        serial: u64,
        exchange: u64,
    ) {
        let Some((_, _, ex)) = self.http.exchange_mut(client, serial, exchange) else {
            return;
        };
        ex.timer = None;
        if !ex.queued {
            return;
        }
        ex.queued = false;
        let pool = ex.pool;
        if let Some(q) = self.http.queues.get_mut(pool) {
            q.retain(|w| w.exchange != exchange);
        }
        self.fail_with(
            ctx,
            client,
            Some(503),
            "Retry-After: 1\r\n",
            "queue timeout: every backend at max_connections_per_backend",
        );
    }

    /// After an event: pools where an upstream connection left use dispatch
    /// their oldest waiting requests, while they get a backend.
    pub(crate) fn http_service_queues(&mut self, ctx: &mut Ctx<'_, ProxyShard>) {
        if !self.http.pool.any_freed() {
            return;
        }
        if self.http.queues.iter().all(|q| q.is_empty()) {
            // Nothing waits (always so without max_connections_per_backend):
            // what was freed concerns nobody. The marks stay: a request queued
            // later gets one harmless extra look.
            return;
        }
        for pool in 0..self.http.queues.len() {
            if !self.http.pool.take_freed(pool) {
                continue;
            }
            let rounds = self.http.queues.get(pool).map_or(0, |q| q.len());
            for _ in 0..rounds {
                let Some(w) = self.http.queues.get_mut(pool).and_then(|q| q.pop_front()) else {
                    break;
                };
                if !self.queued_live(&w) {
                    continue;
                }
                let timer = self
                    .http
                    .clients
                    .get_mut(w.client)
                    .and_then(|c| c.exchange.as_mut())
                    .and_then(|ex| {
                        ex.queued = false;
                        ex.timer.take()
                    });
                self.cancel(ctx, timer);
                self.pump(ctx, w.client);
                if self.queued_live(&w) {
                    // Queued again (no room after all): back to the front, in
                    // its turn, with its deadline restarted; the rest wait.
                    if let Some(q) = self.http.queues.get_mut(pool) {
                        if let Some(i) = q.iter().rposition(|x| x.exchange == w.exchange) {
                            q.remove(i);
                        }
                        q.push_front(w);
                    }
                    break;
                }
            }
        }
    }

    /// A reload: every queued request is answered 503 (its pool index is the
    /// old configuration's).
    pub(crate) fn http_requeue_on_reload(&mut self, ctx: &mut Ctx<'_, ProxyShard>) {
        let config = self.config.clone();
        for w in self.http.take_queued(&config) {
            if !self.queued_live(&w) {
                continue;
            }
            if let Some(ex) = self
                .http
                .clients
                .get_mut(w.client)
                .and_then(|c| c.exchange.as_mut())
            {
                ex.queued = false;
            }
            self.fail_with(
                ctx,
                w.client,
                Some(503),
                "Retry-After: 1\r\n",
                "configuration reloaded while queued",
            );
        }
    }
}
