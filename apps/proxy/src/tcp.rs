//! L4 mode: each client connection is relayed, both ways, to one upstream
//! connection on the same shard.
//!
//! - **Connect**: on accept the client is paused (its bytes wait in the kernel) and
//!   a backend is picked; a refused, failed or timed-out connect tries the next
//!   backend, up to `connect_attempts` (bounded by the pool size). When every
//!   attempt failed the client is closed (FIN, nothing sent).
//! - **Relay**: bytes from one side are queued to the other; a backpressured queue
//!   pauses reading the side that fills it until it drains.
//! - **Half-close**: the upstream's EOF is passed on — everything it sent is
//!   flushed to the client, then the client gets a FIN (and the pair closes). The
//!   client's EOF *cannot* be passed on as a FIN to the upstream with this
//!   framework: Shardline has no "shut down my sending side but keep reading"
//!   action (`Ctx::close` stops reading). So after a client's EOF the upstream
//!   stays open and everything it sends still reaches the client, until the
//!   upstream closes; an upstream that waits for the client's FIN before it
//!   answers is not served. See the crate README.

use std::{collections::HashMap, io, net::SocketAddr, sync::Arc, time::Duration};

use shardline::{CloseReason, ConnId, Ctx, Handler, ShardId, TimerId};
use slab::Slab;
use tracing::{debug, info};

use crate::{balance::Balancer, config::Config};

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
    /// Act on the upstream's EOF (see `on_eof`).
    UpstreamEof(ConnId),
}

/// One proxied client connection and its upstream.
#[derive(Debug)]
struct Session {
    client: ConnId,
    peer: SocketAddr,
    /// The upstream, once a connect was started (`connected` says if it is up).
    upstream: Option<ConnId>,
    connected: bool,
    attempts: u32,
    connect_timer: Option<(TimerId, u64)>,
}

/// The per-shard L4 handler.
#[derive(Debug)]
pub struct TcpShard {
    config: Arc<Config>,
    pool: usize,
    balancer: Balancer,
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
        let balancer = Balancer::new(&config.pools[pool], shard.0);
        TcpShard {
            config,
            pool,
            balancer,
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
    fn connect_next(&mut self, ctx: &mut Ctx<'_>, key: usize) {
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
            s.attempts += 1;
            let backend = self.balancer.pick();
            let addr = self.config.pools[self.pool].backends[backend].address;
            match ctx.connect(addr) {
                Ok(up) => {
                    s.upstream = Some(up);
                    s.connected = false;
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
                Err(e) => debug!(backend = %addr, error = %e, "cannot start connect"),
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

impl Handler for TcpShard {
    type Msg = ();

    fn on_accept(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, peer: SocketAddr) {
        // Not read until the upstream is up: a failed connect must not lose bytes.
        ctx.pause_reading(conn);
        let key = self.sessions.insert(Session {
            client: conn,
            peer,
            upstream: None,
            connected: false,
            attempts: 0,
            connect_timer: None,
        });
        self.roles.insert(conn, (key, Side::Client));
        self.connect_next(ctx, key);
    }

    fn on_connect(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, result: io::Result<()>) {
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
                let client = s.client;
                ctx.resume_reading(client);
            }
            Err(e) => {
                debug!(client = %s.peer, error = %e, "upstream connect failed; trying the next backend");
                s.upstream = None;
                self.roles.remove(&conn);
                self.connect_next(ctx, key);
            }
        }
    }

    fn on_data(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, data: &[u8]) -> usize {
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

    fn on_eof(&mut self, ctx: &mut Ctx<'_>, conn: ConnId) {
        match self.other(conn) {
            // The upstream finished: flush to the client, FIN, and end the pair.
            // Not at once: if reading it was paused, bytes that arrived meanwhile
            // wait in the framework, unpresented, and closing now would lose them.
            // Resuming presents them (within this loop turn); the timer then fires
            // after them.
            Some((_, Side::Upstream, Some(_))) => {
                ctx.resume_reading(conn);
                let token = self.next_token;
                self.next_token += 1;
                self.timers.insert(token, TimerKind::UpstreamEof(conn));
                ctx.set_timer(Duration::ZERO, token);
            }
            // The client finished sending. Keep relaying the upstream's answer; the
            // FIN cannot be forwarded (see the module doc). A client that never
            // connected through is simply closed.
            Some((_, Side::Client, Some(_))) => {}
            _ => ctx.close(conn),
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, _reason: &CloseReason) {
        let Some((key, side)) = self.roles.remove(&conn) else {
            return;
        };
        match side {
            Side::Upstream => {
                if let Some(s) = self.sessions.get_mut(key) {
                    s.upstream = None;
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
                    // Flushes what the client sent, then FIN; a connect still in
                    // flight is abandoned. Its role goes now: the session's key may
                    // be reused before the upstream's own close comes.
                    ctx.close(up);
                    self.roles.remove(&up);
                }
            }
        }
    }

    fn on_backpressure(&mut self, ctx: &mut Ctx<'_>, conn: ConnId) {
        // The queue to `conn` is full: stop reading the side that fills it.
        if let Some((_, _, Some(other))) = self.other(conn) {
            ctx.pause_reading(other);
        }
    }

    fn on_drained(&mut self, ctx: &mut Ctx<'_>, conn: ConnId) {
        if let Some((_, _, Some(other))) = self.other(conn) {
            ctx.resume_reading(other);
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, _timer: TimerId, token: u64) {
        let key = match self.timers.remove(&token) {
            Some(TimerKind::Connect(key)) => key,
            Some(TimerKind::UpstreamEof(up)) => {
                if let Some((_, Side::Upstream, Some(client))) = self.other(up) {
                    ctx.close(client);
                    ctx.close(up);
                }
                return;
            }
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
            // Closing a connect in flight releases it without on_connect/on_close.
            ctx.close(up);
            self.roles.remove(&up);
        }
        self.connect_next(ctx, key);
    }
}
