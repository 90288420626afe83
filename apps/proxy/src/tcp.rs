//! L4 mode: each client connection is relayed, both ways, to one upstream
//! connection on the same shard.
//!
//! - **Connect**: on accept the client is paused (its bytes wait in the kernel) and
//!   a backend is picked; a refused, failed or timed-out connect tries the next
//!   backend, up to `connect_attempts` (bounded by the pool size). When every
//!   attempt failed the client is closed (FIN, nothing sent).
//! - **Relay**: bytes from one side are queued to the other; a backpressured queue
//!   pauses reading the side that fills it until it drains.
//! - **Half-close**, both ways: a side's EOF reaches the other side as a FIN
//!   (`Ctx::shutdown_write`, after everything it sent was flushed there) while
//!   the other direction goes on; once both sides sent their FIN the pair is
//!   closed (after flushing).

use std::{collections::HashMap, io, net::SocketAddr, sync::Arc, time::Duration};

use shardline::{CloseReason, ConnId, Ctx, Handler, ShardId, TimerId};
use slab::Slab;
use tracing::{debug, info};

use crate::{
    balance::{hash_ip, NoBackend},
    config::Config,
    health::{Health, ProxyMsg, TOKEN_BIT},
    pools::ShardPools,
};

/// Which side of a session a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Upstream,
}

#[derive(Debug, Clone, Copy)]
enum TimerKind {
    /// Connect deadline of a session.
    Connect(usize),
}

/// One proxied client connection and its upstream.
#[derive(Debug)]
struct Session {
    client: ConnId,
    peer: SocketAddr,
    /// The upstream, once a connect was started (`connected` says if it is up).
    upstream: Option<ConnId>,
    /// The backend of `upstream` (counted in `TcpShard::active` while set).
    backend: usize,
    connected: bool,
    /// The client / the upstream sent its FIN (passed on to the other side).
    client_eof: bool,
    upstream_eof: bool,
    attempts: u32,
    /// Backends whose connect failed for this client.
    tried: Vec<usize>,
    connect_timer: Option<(TimerId, u64)>,
}

/// The per-shard L4 handler.
#[derive(Debug)]
pub struct TcpShard {
    config: Arc<Config>,
    pool: usize,
    pools: ShardPools,
    health: Health,
    /// Sessions per backend with an upstream connecting or connected (this
    /// shard's least-connections load).
    active: Vec<u32>,
    sessions: Slab<Session>,
    roles: HashMap<ConnId, (usize, Side)>,
    /// Timers by token.
    timers: HashMap<u64, TimerKind>,
    next_token: u64,
}

impl TcpShard {
    /// The handler for listener `listener` of `config` on `shard`.
    pub fn new(config: Arc<Config>, listener: usize, shard: ShardId) -> TcpShard {
        let pool = config
            .listeners
            .get(listener)
            .and_then(|l| l.pool)
            .expect("validated: a tcp listener has a pool");
        let pools = ShardPools::new(&config, shard.0);
        // Replaced in on_start, when the shard count is known.
        let health = Health::new(config.clone(), shard, 1);
        let active = vec![0; config.pools[pool].backends.len()];
        TcpShard {
            config,
            pool,
            pools,
            health,
            active,
            sessions: Slab::new(),
            roles: HashMap::new(),
            timers: HashMap::new(),
            next_token: 0,
        }
    }

    fn max_attempts(&self) -> u32 {
        let backends = self.config.pools[self.pool].backends.len() as u32;
        self.config.limits.connect_attempts.min(backends).max(1)
    }

    /// Starts a connect for session `key` to the next backend, or closes the
    /// client when the attempts are used up.
    fn connect_next(&mut self, ctx: &mut Ctx<'_, ProxyMsg>, key: usize) {
        let max = self.max_attempts();
        loop {
            let Some(s) = self.sessions.get_mut(key) else {
                return;
            };
            if s.attempts >= max {
                info!(client = %s.peer, attempts = s.attempts, "no backend reachable; closing client");
                let client = s.client;
                ctx.close(client);
                return;
            }
            let key_hash = hash_ip(s.peer.ip());
            let backend = match self.pools.pick(self.pool, &self.active, key_hash, &s.tried) {
                Ok(b) => b,
                Err(why) => {
                    let why = match why {
                        NoBackend::AllDown => "every backend is down",
                        NoBackend::AllTried => "no backend reachable",
                    };
                    info!(client = %s.peer, attempts = s.attempts, why, "closing client");
                    let client = s.client;
                    ctx.close(client);
                    return;
                }
            };
            s.attempts += 1;
            let addr = self.config.pools[self.pool].backends[backend].address;
            match ctx.connect(addr) {
                Ok(up) => {
                    s.upstream = Some(up);
                    s.backend = backend;
                    s.connected = false;
                    if let Some(n) = self.active.get_mut(backend) {
                        *n += 1;
                    }
                    self.roles.insert(up, (key, Side::Upstream));
                    let token = self.next_token;
                    self.next_token += 1;
                    let t = ctx.set_timer(
                        Duration::from_millis(self.config.timeouts.connect_ms),
                        token,
                    );
                    if let Some(s) = self.sessions.get_mut(key) {
                        s.connect_timer = Some((t, token));
                    }
                    self.timers.insert(token, TimerKind::Connect(key));
                    return;
                }
                Err(e) => {
                    debug!(backend = %addr, error = %e, "cannot start connect");
                    s.tried.push(backend);
                }
            }
        }
    }

    fn other(&self, conn: ConnId) -> Option<(usize, Side, Option<ConnId>)> {
        let &(key, side) = self.roles.get(&conn)?;
        let s = self.sessions.get(key)?;
        let other = match side {
            Side::Client => s.upstream.filter(|_| s.connected),
            Side::Upstream => Some(s.client),
        };
        Some((key, side, other))
    }
}

fn release(active: &mut [u32], backend: usize) {
    if let Some(n) = active.get_mut(backend) {
        *n = n.saturating_sub(1);
    }
}

impl Handler for TcpShard {
    type Msg = ProxyMsg;

    fn on_start(&mut self, ctx: &mut Ctx<'_, ProxyMsg>) {
        self.health = Health::new(self.config.clone(), ctx.shard_id(), ctx.shards());
        self.health.start(ctx);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, ProxyMsg>, _from: ShardId, msg: ProxyMsg) {
        self.health.on_message(ctx, &mut self.pools, msg);
    }

    fn on_mailbox_ready(&mut self, ctx: &mut Ctx<'_, ProxyMsg>, to: ShardId) {
        self.health.on_mailbox_ready(ctx, to);
    }

    fn on_accept(&mut self, ctx: &mut Ctx<'_, ProxyMsg>, conn: ConnId, peer: SocketAddr) {
        // Not read until the upstream is up: a failed connect must not lose bytes.
        ctx.pause_reading(conn);
        let key = self.sessions.insert(Session {
            client: conn,
            peer,
            upstream: None,
            backend: 0,
            connected: false,
            client_eof: false,
            upstream_eof: false,
            attempts: 0,
            tried: Vec::new(),
            connect_timer: None,
        });
        self.roles.insert(conn, (key, Side::Client));
        self.connect_next(ctx, key);
    }

    fn on_connect(&mut self, ctx: &mut Ctx<'_, ProxyMsg>, conn: ConnId, result: io::Result<()>) {
        if self.health.owns(conn) {
            return self.health.on_connect(ctx, &mut self.pools, conn, result);
        }
        let Some(&(key, _)) = self.roles.get(&conn) else {
            // Its session is gone (client left while connecting).
            if result.is_ok() {
                ctx.close(conn);
            }
            return;
        };
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        if let Some((t, token)) = s.connect_timer.take() {
            ctx.cancel_timer(t);
            self.timers.remove(&token);
        }
        match result {
            Ok(()) => {
                s.connected = true;
                let (client, backend) = (s.client, s.backend);
                ctx.resume_reading(client);
                // Bytes that came before the pause took effect were left
                // unconsumed: offer them now, not only with the next bytes (the
                // client may have sent everything already, FIN included).
                ctx.redeliver(client);
                self.health
                    .passive(ctx, &mut self.pools, self.pool, backend, true);
            }
            Err(e) => {
                debug!(client = %s.peer, error = %e, "upstream connect failed; trying the next backend");
                s.upstream = None;
                s.tried.push(s.backend);
                release(&mut self.active, s.backend);
                let backend = s.backend;
                self.health
                    .passive(ctx, &mut self.pools, self.pool, backend, false);
                self.roles.remove(&conn);
                self.connect_next(ctx, key);
            }
        }
    }

    fn on_data(&mut self, ctx: &mut Ctx<'_, ProxyMsg>, conn: ConnId, data: &[u8]) -> usize {
        if self.health.owns(conn) {
            return self.health.on_data(ctx, &mut self.pools, conn, data);
        }
        match self.other(conn) {
            Some((_, _, Some(to))) => {
                // An error means the other side is closing; its on_close ends the pair.
                let _ = ctx.send(to, data);
                data.len()
            }
            // Client bytes that came before the pause took effect: keep them (the
            // framework presents them again once reading resumes).
            Some((_, Side::Client, None)) => 0,
            _ => data.len(),
        }
    }

    fn on_eof(&mut self, ctx: &mut Ctx<'_, ProxyMsg>, conn: ConnId) {
        if self.health.owns(conn) {
            return self.health.on_close(ctx, &mut self.pools, conn);
        }
        // Every byte `conn` sent has been relayed (the framework presents held
        // input before the EOF); pass the FIN on once the other side's queue is
        // flushed, and keep relaying the other way. Both FINs seen: the pair is
        // done (each closed after its queue is flushed).
        match self.other(conn) {
            Some((key, side, Some(other))) => {
                let Some(s) = self.sessions.get_mut(key) else {
                    return;
                };
                match side {
                    Side::Client => s.client_eof = true,
                    Side::Upstream => s.upstream_eof = true,
                }
                if s.client_eof && s.upstream_eof {
                    ctx.close(conn);
                    ctx.close(other);
                } else if ctx.shutdown_write(other).is_err() {
                    // The other side is already going: its on_close ends the pair.
                    ctx.close(conn);
                }
            }
            // A client that never connected through is simply closed.
            _ => ctx.close(conn),
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_, ProxyMsg>, conn: ConnId, _reason: &CloseReason) {
        if self.health.owns(conn) {
            return self.health.on_close(ctx, &mut self.pools, conn);
        }
        let Some((key, side)) = self.roles.remove(&conn) else {
            return;
        };
        match side {
            Side::Upstream => {
                if let Some(s) = self.sessions.get_mut(key) {
                    if s.upstream.take().is_some() {
                        release(&mut self.active, s.backend);
                    }
                    ctx.close(s.client);
                }
            }
            Side::Client => {
                let Some(s) = self.sessions.try_remove(key) else {
                    return;
                };
                if let Some((t, token)) = s.connect_timer {
                    ctx.cancel_timer(t);
                    self.timers.remove(&token);
                }
                if let Some(up) = s.upstream {
                    release(&mut self.active, s.backend);
                    // Flushes what the client sent, then FIN; a connect still in
                    // flight is abandoned. Its role goes now: the session's key may
                    // be reused before the upstream's own close comes.
                    ctx.close(up);
                    self.roles.remove(&up);
                }
            }
        }
    }

    fn on_backpressure(&mut self, ctx: &mut Ctx<'_, ProxyMsg>, conn: ConnId) {
        // The queue to `conn` is full: stop reading the side that fills it.
        if let Some((_, _, Some(other))) = self.other(conn) {
            ctx.pause_reading(other);
        }
    }

    fn on_drained(&mut self, ctx: &mut Ctx<'_, ProxyMsg>, conn: ConnId) {
        if let Some((_, _, Some(other))) = self.other(conn) {
            ctx.resume_reading(other);
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, ProxyMsg>, _timer: TimerId, token: u64) {
        if token & TOKEN_BIT != 0 {
            self.health.on_timer(ctx, &mut self.pools, token);
            return;
        }
        let key = match self.timers.remove(&token) {
            Some(TimerKind::Connect(key)) => key,
            None => return,
        };
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        s.connect_timer = None;
        if s.connected {
            return;
        }
        if let Some(up) = s.upstream.take() {
            debug!(client = %s.peer, "upstream connect timed out; trying the next backend");
            s.tried.push(s.backend);
            release(&mut self.active, s.backend);
            let backend = s.backend;
            self.health
                .passive(ctx, &mut self.pools, self.pool, backend, false);
            // Closing a connect in flight releases it without on_connect/on_close.
            ctx.close(up);
            self.roles.remove(&up);
        }
        self.connect_next(ctx, key);
    }
}
