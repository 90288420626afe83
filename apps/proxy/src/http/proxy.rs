//! The HTTP/1.1 proxy handler of one shard.
//!
//! Each client connection has at most one **exchange** (request + response) in
//! flight. Bytes from the client go into the client's buffer; [`ProxyShard::pump`]
//! moves the client forward as far as it can: parse the next request head
//! (strictly), route it, choose an upstream connection (pooled or new), stream
//! the request body out of the buffer, and — once the response is complete —
//! return the upstream connection to the pool and start on the next pipelined
//! request. Response bytes are handled as they arrive from the upstream
//! ([`ProxyShard::on_response_data`]). Every step that waits (connect, backpressure,
//! response) just returns; the callback that ends the wait calls `pump` again.
//!
//! An upgrade request ([`head::RequestHead::upgrade`]: `Connection: upgrade`,
//! an `Upgrade` protocol other than `h2c`, no content) goes to the backend on a
//! fresh connection (never a pooled one), with `Connection: upgrade` and its
//! `Upgrade`. A `101 Switching Protocols` to it goes to the client (with the
//! backend's `Upgrade`), and the client and that upstream become a relaying L4
//! session ([`upgrade`], [`crate::tcp`]): bytes either side sent past its head
//! go first, then both ways as the L4 side relays (splice, half-close,
//! `upgrade_idle_ms`). Any other answer is an ordinary response (the client
//! kept alive by the usual rules, the upstream connection closed after it); a
//! 101 to a request that did not ask for an upgrade, or one naming no
//! protocol, is a bad response (502).

use std::{
    io,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use shardline::{CloseReason, ConnId, Ctx, TimerId};
use slab::Slab;
use tracing::debug;

use super::{
    chunked::ChunkedDecoder,
    head::{self, Framing},
    pool::{UpState, UpstreamPool},
};
use crate::{
    config::Config,
    shard::{ProxyShard, ProxyTimer},
    stats::BackendGauges,
};

mod exchange;
mod queue;
mod response;
mod upgrade;

/// Client bytes not yet processed past which the client is not read (pipelined
/// requests wait here while the response before them is under way).
const PIPELINE_SLACK: usize = 64 << 10;

/// The most request body an idempotent request keeps, as sent, so that it can
/// be sent again when its upstream dies before answering (past this it is not
/// retried once any body byte went out).
const REPLAY_MAX: usize = 64 << 10;

/// What an HTTP connection is (kept in its [`crate::shard::ProxyConn`]): a
/// client (key in `HttpState::clients`) or an upstream (key in the upstream
/// pool). The record names the connection back, so a key reused by a newer
/// connection is told apart ([`HttpState::live`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    Client(usize),
    Upstream(usize),
}

/// The HTTP side's timers (the payload of a [`crate::shard::ProxyTimer`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum TimerKind {
    /// Waiting for a request head (`idle`: none started on a kept-alive connection).
    Head { client: usize, serial: u64 },
    /// Connect or response deadline of an exchange.
    Exchange {
        client: usize,
        serial: u64,
        exchange: u64,
    },
    /// The request body made no progress for a while: whose fault decides
    /// (408 for the client, 504 for a backend that stopped reading it).
    Body {
        client: usize,
        serial: u64,
        exchange: u64,
    },
    /// `Expect: 100-continue` and the backend is silent: the proxy sends the 100.
    Expect {
        client: usize,
        serial: u64,
        exchange: u64,
    },
    /// Close idle pooled connections that outstayed the idle timeout.
    Sweep,
    /// A request waiting for a backend below its connection cap waited
    /// `queue_timeout_ms` (503).
    Queue {
        client: usize,
        serial: u64,
        exchange: u64,
    },
}

#[derive(Debug)]
enum Body {
    Length(u64),
    Chunked(ChunkedDecoder),
}

#[derive(Debug)]
enum Resp {
    /// Waiting for the (next) response head.
    Head,
    /// Forwarding the body; `to_client` is the framing the client sees.
    Body {
        from: Framing,
        to_client: Framing,
        remaining: u64,
        decoder: ChunkedDecoder,
    },
    Done,
}

/// Per pool: its upstream connections are never pooled (they start with a
/// PROXY header naming their first client).
fn unpooled(config: &Config) -> Vec<bool> {
    config
        .pools
        .iter()
        .map(|p| p.send_proxy_protocol.is_some())
        .collect()
}

#[derive(Debug)]
struct Exchange {
    serial: u64,
    /// The configuration generation `pool`, `backend` and `tried` are for.
    gen: u64,
    /// Lengths of the method and the target at the start of `upstream_head`
    /// (`METHOD SP TARGET SP HTTP/1.1`), for the access log.
    method_len: usize,
    target_len: usize,
    client_minor: u8,
    head_request: bool,
    idempotent: bool,
    /// Close the client after this exchange.
    close: bool,
    expect_continue: bool,
    /// The request asks for an upgrade, passed on to the backend: a fresh
    /// upstream connection, never pooled afterwards; a 101 makes a tunnel.
    upgrade: bool,
    /// A `100 Continue` went to the client (the backend's or the proxy's own).
    continue_sent: bool,
    /// Sends the proxy's own `100 Continue` if the backend stays silent.
    expect_timer: Option<TimerId>,
    /// The request body's progress deadline (armed while a body is to come).
    body_timer: Option<TimerId>,
    /// The last time the body moved: a body byte came from the client, the
    /// proxy started forwarding it, the client was told to send it (100) or a
    /// backend that had stopped reading it read again.
    body_progress: Instant,
    pool: usize,
    backend: usize,
    /// Consistent-hash key (client IP or the pool's header).
    key: u64,
    /// Backends that failed this request (not picked again for it).
    tried: Vec<usize>,
    /// The head for the backend (kept so a dead pooled connection can be retried).
    upstream_head: Vec<u8>,
    /// What of the request body is still to come (`None`: no body, or all sent).
    body: Option<Body>,
    body_sent: u64,
    /// The body bytes sent so far, kept for a retry (idempotent requests, up
    /// to [`REPLAY_MAX`]); `None`: not kept (a retry needs `body_sent == 0`).
    replay: Option<Vec<u8>>,
    dispatched: bool,
    /// Waiting in its pool's queue for a backend below its connection cap
    /// (`timer` is then the queue deadline).
    queued: bool,
    upstream: Option<usize>,
    /// The upstream is connected and has the head.
    ready: bool,
    reused: bool,
    /// Connects tried (a pooled connection is not a connect).
    attempts: u32,
    /// Already retried once after a dead pooled connection.
    retried: bool,
    req_done: bool,
    resp: Resp,
    resp_started: bool,
    /// Response body bytes sent to the client (as framed to it), for the
    /// access log.
    resp_bytes: u64,
    status: u16,
    upstream_reusable: bool,
    timer: Option<TimerId>,
    started: Instant,
}

/// Most finished exchanges a shard keeps for reuse.
const SPARE_EXCHANGES: usize = 64;

#[derive(Debug)]
struct Client {
    conn: ConnId,
    peer: SocketAddr,
    /// `peer`'s IP address as text (for X-Forwarded-For), formatted once.
    peer_ip: Box<str>,
    /// Came in over TLS (X-Forwarded-Proto: https).
    https: bool,
    /// The listener that accepted it (index into `Config::listeners`).
    listener: usize,
    /// When the current request's head was parsed (for the latency histogram).
    head_at: Option<Instant>,
    serial: u64,
    /// Input not yet consumed; released while the client is idle.
    buf: Vec<u8>,
    /// Boxed: an idle keep-alive client (most of them, at 50,000 clients)
    /// carries a pointer, not the exchange's ~380 bytes (the boxes are reused,
    /// see `HttpState::spare_exchanges`).
    exchange: Option<Box<Exchange>>,
    head_timer: Option<(TimerId, bool)>,
    reading: bool,
    upstream_full: bool,
    eof: bool,
    closing: bool,
    served: u64,
    /// Draining after the listeners were handed over to a new process: this
    /// idle client may start one more request, answered with `Connection:
    /// close` (closing it while a request may be on its way would lose it).
    last_call: bool,
}

/// One shard's HTTP state: client connections, upstream connections and their
/// keep-alive pools, timers. Owned by the shard's [`ProxyShard`].
#[derive(Debug)]
pub(crate) struct HttpState {
    clients: Slab<Client>,
    /// Finished exchanges' boxes, each with its upstream head buffer, reused by
    /// the next ones: no allocation per request, and kept per shard, not per
    /// idle client (at most [`SPARE_EXCHANGES`]).
    #[allow(clippy::vec_box)]
    spare_exchanges: Vec<Box<Exchange>>,
    pool: UpstreamPool,
    next_serial: u64,
    /// Scratch buffer for response heads to clients and re-encoded chunked
    /// bodies (both directions), reused instead of allocated per read.
    scratch: Vec<u8>,
    /// The server is shutting down: exchanges in flight finish (their clients
    /// then closed), nothing new starts, no upstream goes back to the pool.
    draining: bool,
    /// Per pool: requests waiting for a backend below its connection cap
    /// (see [`queue`]), oldest first.
    queues: Vec<std::collections::VecDeque<queue::Waiting>>,
    /// The server's shard count (each shard allows its share of a pool's
    /// `max_connections_per_backend`).
    pub(crate) shards: usize,
    /// A connection whose state must change once the current callback returns
    /// (the upstream whose 101 made it a tunnel: the callback holds its state),
    /// applied by [`ProxyShard`]'s `on_data`.
    pub(crate) retag: Option<(ConnId, crate::shard::ProxyConn)>,
}

impl HttpState {
    /// Empty, with upstream pools sized for `config` (active counts mirrored in
    /// `gauges`).
    pub(crate) fn new(config: &Config, gauges: Arc<BackendGauges>) -> HttpState {
        let sizes: Vec<usize> = config.pools.iter().map(|p| p.backends.len()).collect();
        let mut pool = UpstreamPool::new(&sizes, config.limits.max_idle_per_backend, gauges);
        pool.set_unpooled(unpooled(config));
        HttpState {
            clients: Slab::new(),
            spare_exchanges: Vec::new(),
            pool,
            next_serial: 0,
            scratch: Vec::new(),
            draining: false,
            queues: config.pools.iter().map(|_| Default::default()).collect(),
            shards: 1,
            retag: None,
        }
    }

    /// An upgraded connection's upstream (see [`UpstreamPool::detach`]) ended.
    pub(crate) fn tunnel_closed(&mut self, pool: usize, backend: usize, gen: u64) {
        self.pool.tunnel_closed(pool, backend, gen);
    }

    /// A new configuration for the upstream pools (see [`UpstreamPool::reconfigure`]);
    /// returns the idle connections to close.
    pub(crate) fn reconfigure(
        &mut self,
        config: &Config,
        gauges: Arc<BackendGauges>,
        gen: u64,
    ) -> Vec<ConnId> {
        let sizes: Vec<usize> = config.pools.iter().map(|p| p.backends.len()).collect();
        let max_idle = config.limits.max_idle_per_backend;
        self.pool.set_unpooled(unpooled(config));
        self.pool.reconfigure(&sizes, max_idle, gauges, gen)
    }

    /// The requests waiting in the queues of the configuration being
    /// replaced, as `(client, serial, exchange)` (the queues are emptied: their
    /// pool indices are the old configuration's).
    pub(crate) fn take_queued(&mut self, config: &Config) -> Vec<queue::Waiting> {
        let old = std::mem::replace(
            &mut self.queues,
            config.pools.iter().map(|_| Default::default()).collect(),
        );
        old.into_iter().flatten().collect()
    }

    /// Exchange `exchange` of client `client` (of connection serial `serial`),
    /// if a timer's target is still there: with the client's connection and
    /// whether its buffer is empty.
    fn exchange_mut(
        &mut self,
        client: usize,
        serial: u64,
        exchange: u64,
    ) -> Option<(ConnId, bool, &mut Exchange)> {
        let c = self
            .clients
            .get_mut(client)
            .filter(|c| c.serial == serial)?;
        let ex = c.exchange.as_mut().filter(|e| e.serial == exchange)?;
        Some((c.conn, c.buf.is_empty(), &mut **ex))
    }

    /// `role`, the state of `conn`, if its record is still `conn`'s (not gone,
    /// nor its key reused by a newer connection).
    pub(crate) fn live(&self, conn: ConnId, role: Role) -> Option<Role> {
        let ours = match role {
            Role::Client(ck) => self.clients.get(ck).is_some_and(|c| c.conn == conn),
            Role::Upstream(u) => self.pool.get(u).is_some_and(|up| up.conn == conn),
        };
        ours.then_some(role)
    }
}

impl ProxyShard {
    fn serial(&mut self) -> u64 {
        self.http.next_serial += 1;
        self.http.next_serial
    }

    fn timer(&mut self, ctx: &mut Ctx<'_, ProxyShard>, ms: u64, kind: TimerKind) -> TimerId {
        ctx.set_timer(Duration::from_millis(ms), ProxyTimer::http(kind))
    }

    fn cancel(&mut self, ctx: &mut Ctx<'_, ProxyShard>, t: Option<TimerId>) {
        if let Some(id) = t {
            ctx.cancel_timer(id);
        }
    }

    fn cancel_head_timer(&mut self, ctx: &mut Ctx<'_, ProxyShard>, ck: usize) {
        let t = self
            .http
            .clients
            .get_mut(ck)
            .and_then(|c| c.head_timer.take());
        self.cancel(ctx, t.map(|(id, _)| id));
    }

    /// (Re)arms the exchange deadline of client `ck`.
    fn arm_exchange(&mut self, ctx: &mut Ctx<'_, ProxyShard>, ck: usize, ms: u64) {
        self.arm_exchange_timer(ctx, ck, ms, |w| TimerKind::Exchange {
            client: w.client,
            serial: w.serial,
            exchange: w.exchange,
        });
    }

    /// (Re)arms client `ck`'s exchange timer (the one slot an exchange has:
    /// its deadline, or its queue deadline while it waits) in `ms`, of the
    /// kind `kind` makes from the exchange's names, which it returns (`None`:
    /// no such exchange).
    fn arm_exchange_timer(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        ck: usize,
        ms: u64,
        kind: impl FnOnce(&queue::Waiting) -> TimerKind,
    ) -> Option<queue::Waiting> {
        let c = self.http.clients.get_mut(ck)?;
        let serial = c.serial;
        let ex = c.exchange.as_mut()?;
        let old = ex.timer.take();
        let names = queue::Waiting {
            client: ck,
            serial,
            exchange: ex.serial,
        };
        self.cancel(ctx, old);
        let t = self.timer(ctx, ms, kind(&names));
        if let Some(ex) = self
            .http
            .clients
            .get_mut(ck)
            .and_then(|c| c.exchange.as_mut())
        {
            ex.timer = Some(t);
        }
        Some(names)
    }

    /// (Re)arms the request body's progress deadline of client `ck`.
    fn arm_body(&mut self, ctx: &mut Ctx<'_, ProxyShard>, ck: usize, ms: u64) {
        let Some(c) = self.http.clients.get_mut(ck) else {
            return;
        };
        let serial = c.serial;
        let Some(ex) = c.exchange.as_mut() else {
            return;
        };
        let old = ex.body_timer.take();
        let exchange = ex.serial;
        self.cancel(ctx, old);
        let kind = TimerKind::Body {
            client: ck,
            serial,
            exchange,
        };
        let t = self.timer(ctx, ms, kind);
        if let Some(ex) = self
            .http
            .clients
            .get_mut(ck)
            .and_then(|c| c.exchange.as_mut())
        {
            ex.body_timer = Some(t);
        }
    }

    fn drop_upstream(&mut self, ctx: &mut Ctx<'_, ProxyShard>, key: usize) {
        if let Some(up) = self.http.pool.remove(key) {
            ctx.close(up.conn);
        }
    }

    fn update_reading(&mut self, ctx: &mut Ctx<'_, ProxyShard>, ck: usize) {
        let cap = self.config.limits.max_header_bytes + PIPELINE_SLACK;
        let Some(c) = self.http.clients.get_mut(ck) else {
            return;
        };
        let want = !c.closing && !c.upstream_full && c.buf.len() < cap;
        if want != c.reading {
            c.reading = want;
            if want {
                ctx.resume_reading(c.conn);
            } else {
                ctx.pause_reading(c.conn);
            }
        }
    }
}

/// HTTP connections' events, dispatched here by [`ProxyShard`]'s `Handler`.
impl ProxyShard {
    /// Starts the sweep of idle pooled upstream connections.
    pub(crate) fn http_start(&mut self, ctx: &mut Ctx<'_, ProxyShard>) {
        self.http.shards = ctx.shards().max(1);
        let every = (self.config.timeouts.upstream_idle_ms / 2).clamp(10, 1000);
        ctx.set_interval(
            Duration::from_millis(every),
            ProxyTimer::http(TimerKind::Sweep),
        );
    }

    /// A client connection accepted by HTTP listener `listener`; returns its
    /// role (the connection's state).
    pub(crate) fn http_accept(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        conn: ConnId,
        peer: SocketAddr,
        listener: usize,
    ) -> Role {
        let serial = self.serial();
        let ck = self.http.clients.insert(Client {
            conn,
            peer,
            peer_ip: peer.ip().to_string().into_boxed_str(),
            https: ctx.tls(conn).is_some(),
            listener,
            head_at: None,
            serial,
            buf: Vec::new(),
            exchange: None,
            head_timer: None,
            reading: true,
            upstream_full: false,
            eof: false,
            closing: false,
            served: 0,
            last_call: self.http.draining && ctx.listeners_handed_over(),
        });
        if self.http.draining && ctx.listeners_handed_over() {
            ctx.keep_open_on_shutdown(conn);
        }
        self.pump(ctx, ck);
        Role::Client(ck)
    }

    pub(crate) fn http_connect(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        conn: ConnId,
        role: Role,
        result: io::Result<()>,
    ) {
        let Some(Role::Upstream(u)) = self.http.live(conn, role) else {
            if result.is_ok() {
                // Nobody waits for it any more.
                ctx.close(conn);
            }
            return;
        };
        let Some(up) = self.http.pool.get(u) else {
            return;
        };
        let UpState::Connecting(ck, serial) = up.state else {
            return;
        };
        let owner = self
            .http
            .clients
            .get(ck)
            .filter(|c| c.serial == serial)
            .and_then(|c| c.exchange.as_ref())
            .is_some_and(|e| e.upstream == Some(u));
        match result {
            Ok(()) if owner => {
                self.http.pool.set_active(u, (ck, serial));
                self.upstream_ready(ctx, ck);
                self.pump(ctx, ck);
            }
            Ok(()) => {
                // Its client left meanwhile: keep the connection for the next one
                // (not when shutting down: nothing will use it).
                if self.http.draining || !self.http.pool.put_idle(u, Instant::now()) {
                    self.drop_upstream(ctx, u);
                }
            }
            Err(e) => {
                debug!(error = %e, "upstream connect failed");
                let (pool, backend, gen) = (up.pool, up.backend, up.gen);
                self.health
                    .passive(ctx, &mut self.pools, gen, pool, backend, false);
                // Released by the framework already: forget it, no close.
                self.http.pool.remove(u);
                if owner {
                    if let Some(ex) = self
                        .http
                        .clients
                        .get_mut(ck)
                        .and_then(|c| c.exchange.as_mut())
                    {
                        ex.upstream = None;
                        ex.dispatched = false;
                        ex.tried.push(ex.backend);
                    }
                    self.pump(ctx, ck);
                }
            }
        }
    }

    pub(crate) fn http_data(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        conn: ConnId,
        role: Role,
        data: &[u8],
    ) -> usize {
        match self.http.live(conn, role) {
            Some(Role::Client(ck)) => {
                let Some(c) = self.http.clients.get_mut(ck) else {
                    return data.len();
                };
                if c.closing {
                    return data.len();
                }
                if let Some(ex) = c.exchange.as_mut().filter(|e| e.body.is_some()) {
                    ex.body_progress = Instant::now();
                }
                c.buf.extend_from_slice(data);
                self.pump(ctx, ck);
                data.len()
            }
            Some(Role::Upstream(u)) => self.on_response_data(ctx, u, data),
            None => data.len(),
        }
    }

    pub(crate) fn http_eof(&mut self, ctx: &mut Ctx<'_, ProxyShard>, conn: ConnId, role: Role) {
        // Every byte before the EOF was presented already (the framework holds
        // the EOF until input kept during a pause has been offered).
        self.eof_now(ctx, conn, role);
    }

    pub(crate) fn http_close(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        conn: ConnId,
        role: Role,
        _reason: &CloseReason,
    ) {
        match self.http.live(conn, role) {
            Some(Role::Client(ck)) => {
                self.cancel_head_timer(ctx, ck);
                if let Some(c) = self.http.clients.try_remove(ck) {
                    self.stats.clients.sub(1);
                    if let Some(ex) = c.exchange {
                        self.cancel(ctx, ex.timer);
                        self.cancel(ctx, ex.body_timer);
                        if let Some(u) = ex.upstream {
                            // Mid-exchange: the upstream connection cannot be reused.
                            self.drop_upstream(ctx, u);
                        }
                    }
                }
            }
            Some(Role::Upstream(u)) => self.upstream_lost(ctx, u, false),
            None => {}
        }
    }

    /// `conn`'s outbound queue passed its high-water mark (`full`) or drained below
    /// the low one: stop or restart reading the side that fills it.
    pub(crate) fn http_queue_full(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        conn: ConnId,
        role: Role,
        full: bool,
    ) {
        match self.http.live(conn, role) {
            // The client reads slowly: its upstream's reading follows.
            Some(Role::Client(ck)) => {
                let upstream = self
                    .http
                    .clients
                    .get(ck)
                    .and_then(|c| c.exchange.as_ref())
                    .and_then(|e| e.upstream)
                    .and_then(|u| self.http.pool.get(u));
                if let Some(up) = upstream {
                    if full {
                        ctx.pause_reading(up.conn);
                    } else {
                        ctx.resume_reading(up.conn);
                    }
                }
            }
            // The backend reads slowly: the client's reading follows.
            Some(Role::Upstream(u)) => {
                if let Some(UpState::Active(ck, _)) = self.http.pool.get(u).map(|up| up.state) {
                    if let Some(c) = self.http.clients.get_mut(ck) {
                        c.upstream_full = full;
                        if let Some(ex) = c.exchange.as_mut().filter(|_| !full) {
                            // The backend reads the body again.
                            ex.body_progress = Instant::now();
                        }
                    }
                    if full {
                        self.update_reading(ctx, ck);
                    } else {
                        self.pump(ctx, ck);
                    }
                }
            }
            None => {}
        }
    }

    /// A timer of the HTTP side fired. One that was cancelled never fires; the
    /// serials tell a timer whose client or exchange is gone (the slab key
    /// reused) from a current one.
    pub(crate) fn http_timer(&mut self, ctx: &mut Ctx<'_, ProxyShard>, kind: TimerKind) {
        match kind {
            TimerKind::Sweep => {
                let timeout = Duration::from_millis(self.config.timeouts.upstream_idle_ms);
                let now = Instant::now();
                for conn in self.http.pool.expire(now, timeout) {
                    ctx.close(conn);
                }
                self.pools.restore_all(now);
            }
            TimerKind::Queue {
                client,
                serial,
                exchange,
            } => self.queue_timeout(ctx, client, serial, exchange),
            TimerKind::Head { client, serial } => {
                let Some(c) = self
                    .http
                    .clients
                    .get_mut(client)
                    .filter(|c| c.serial == serial)
                else {
                    return;
                };
                c.head_timer = None;
                if c.exchange.is_some() {
                    return;
                }
                if c.buf.is_empty() && c.served > 0 {
                    self.fail(ctx, client, None, "idle timeout");
                } else {
                    self.fail(ctx, client, Some(408), "request head timeout");
                }
            }
            TimerKind::Expect {
                client,
                serial,
                exchange,
            } => {
                let Some((conn, nothing_yet, ex)) =
                    self.http.exchange_mut(client, serial, exchange)
                else {
                    return;
                };
                ex.expect_timer = None;
                // Only while the body is still withheld and nothing was answered.
                if !ex.continue_sent && !ex.resp_started && ex.body_sent == 0 && nothing_yet {
                    ex.continue_sent = true;
                    ex.body_progress = Instant::now();
                    debug!(conn = %conn, "backend silent on Expect: 100-continue; sending 100");
                    let _ = ctx.send(conn, head::CONTINUE);
                }
            }
            TimerKind::Body {
                client,
                serial,
                exchange,
            } => {
                self.body_timer(ctx, client, serial, exchange);
            }
            TimerKind::Exchange {
                client,
                serial,
                exchange,
            } => {
                let Some((_, _, ex)) = self.http.exchange_mut(client, serial, exchange) else {
                    return;
                };
                ex.timer = None;
                if !ex.ready {
                    // Connect timeout: abandon it, try the next backend.
                    let attempts = ex.attempts;
                    let backends = self
                        .config
                        .pools
                        .get(ex.pool)
                        .map_or(0, |p| p.backends.len());
                    let backends = backends as u32;
                    let gone = ex.upstream.take();
                    ex.dispatched = false;
                    ex.tried.push(ex.backend);
                    let (pool, backend, gen) = (ex.pool, ex.backend, ex.gen);
                    self.health
                        .passive(ctx, &mut self.pools, gen, pool, backend, false);
                    if let Some(u) = gone {
                        self.drop_upstream(ctx, u);
                    }
                    let max = self.config.limits.connect_attempts.min(backends).max(1);
                    if attempts >= max {
                        return self.fail(ctx, client, Some(504), "connect timeout");
                    }
                    self.pump(ctx, client);
                } else if !ex.resp_started && ex.req_done {
                    // (Never while the body is still coming: the body timer
                    // decides then whose fault a stall is.)
                    let (pool, backend, gen) = (ex.pool, ex.backend, ex.gen);
                    self.health
                        .passive(ctx, &mut self.pools, gen, pool, backend, false);
                    self.fail(ctx, client, Some(504), "backend response timeout");
                }
            }
        }
    }
}

/// Whose turn it is to move a request body that has stalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stall {
    /// The proxy waits for the client's bytes: `client_body_ms`, then 408.
    Client,
    /// The backend does not take the bytes (its queue is full, so the client
    /// is not read): `backend_response_ms`, then 504 and a passive failure.
    Backend,
    /// Nobody's yet: the upstream is connecting (its connect deadline runs),
    /// or an `Expect: 100-continue` client waits for its 100.
    Neither,
}

impl ProxyShard {
    /// The body deadline of an exchange fired: a stall longer than the window
    /// of whoever must act ends the exchange — 408 (the client's fault, never
    /// reported against the backend) or 504 (the backend's, reported); else
    /// the deadline is pushed to the end of the window since the last
    /// progress (progress itself never touches the timer).
    fn body_timer(&mut self, ctx: &mut Ctx<'_, ProxyShard>, ck: usize, serial: u64, exchange: u64) {
        let t = self.config.timeouts.clone();
        let full = self.http.clients.get(ck).is_some_and(|c| c.upstream_full);
        let Some((_, _, ex)) = self.http.exchange_mut(ck, serial, exchange) else {
            return;
        };
        ex.body_timer = None;
        if ex.req_done || ex.body.is_none() {
            return;
        }
        let now = Instant::now();
        // Waiting for a connect, or in the queue for a backend below its cap
        // (`queue`): the proxy is holding the body back, not the client.
        let connecting = (ex.dispatched && !ex.ready) || ex.queued;
        let awaiting_100 = ex.expect_continue && !ex.continue_sent;
        let stall = if connecting || awaiting_100 {
            Stall::Neither
        } else if full && ex.ready {
            Stall::Backend
        } else {
            Stall::Client
        };
        let window = match stall {
            Stall::Neither => {
                ex.body_progress = now;
                t.client_body_ms
            }
            Stall::Client => t.client_body_ms,
            Stall::Backend => t.backend_response_ms,
        };
        let idle = now.saturating_duration_since(ex.body_progress);
        let left = Duration::from_millis(window).saturating_sub(idle);
        if !left.is_zero() {
            let ms = (left.as_millis() as u64).max(1);
            return self.arm_body(ctx, ck, ms);
        }
        match stall {
            Stall::Client => self.fail(ctx, ck, Some(408), "client body timeout"),
            Stall::Backend => {
                let (pool, backend, gen) = (ex.pool, ex.backend, ex.gen);
                self.health
                    .passive(ctx, &mut self.pools, gen, pool, backend, false);
                self.fail(
                    ctx,
                    ck,
                    Some(504),
                    "backend stopped reading the request body",
                )
            }
            Stall::Neither => {}
        }
    }
}

#[cfg(test)]
mod tests {
    /// An idle keep-alive client is what a proxy holds most of: its record
    /// stays small (the exchange is boxed, buffers are per shard or released
    /// while idle). 544 bytes with the exchange inline.
    #[test]
    fn an_idle_client_record_is_small() {
        let size = std::mem::size_of::<super::Client>();
        assert!(size <= 184, "Client is {size} bytes");
    }
}
