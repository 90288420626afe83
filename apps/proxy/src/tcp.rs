//! L4 mode: each client connection is relayed, both ways, to one upstream
//! connection on the same shard.
//!
//! - **Connect**: on accept the client is paused (its bytes wait in the kernel) and
//!   a backend is picked; a refused, failed or timed-out connect tries the next
//!   backend, up to `connect_attempts` (bounded by the pool size). When every
//!   attempt failed the client is closed (FIN, nothing sent).
//! - **Relay**: bytes from one side are queued to the other; a backpressured queue
//!   pauses reading the side that fills it until it drains.
//! - **Splice** (`[limits] splice`): a direction whose reads come in full
//!   ([`BULK_READ`]: bulk, not request/response chatter) is switched to
//!   kernel-side relaying (`Ctx::splice_into`): its bytes go through a pipe and
//!   never reach the proxy; what was queued before goes first. When the shard's
//!   pipes are all in use the direction keeps copying (and tries again on the
//!   next full read). Backpressure and half-close work the same way: the
//!   framework stops reading a source whose pipe does not drain, and reports its
//!   EOF once the pipe is empty.
//! - **Half-close**, both ways: a side's EOF reaches the other side as a FIN
//!   (`Ctx::shutdown_write`, after everything it sent was flushed there) while
//!   the other direction goes on; once both sides sent their FIN the pair is
//!   closed (after flushing).
//! - **TLS passthrough** (`tls_passthrough = true`): the pool is chosen by the
//!   server name of the client's ClientHello ([`crate::sni`]), so the client is
//!   read before any backend is picked. While the hello is incomplete `on_data`
//!   consumes nothing: the framework holds the bytes and presents them again
//!   with the next ones, and the reader looks only at what is new. It must be
//!   complete within `tls_hello_ms` and [`crate::sni::MAX_INPUT`] bytes. Once it
//!   is, the client is paused and the chosen pool connected exactly as above;
//!   the held bytes, hello included, go to the backend untouched as the first
//!   relayed ones (then splice applies as usual). A client whose first bytes are
//!   not TLS, whose hello is malformed, late or unrouted (no SNI route and no
//!   default pool) is closed, counted by outcome in `/metrics`
//!   ([`crate::stats::TlsOutcome`]) and logged at debug; nothing else is
//!   touched. A FIN that comes while the upstream connects is passed on after
//!   the held bytes.
//! - **Idle timeout** (`[timeouts] tcp_idle_ms`): a relaying session in which
//!   neither side sent a byte for that long is closed, both sides (logged at
//!   info, counted in `shardline_proxy_idle_closed_total`). Spliced bytes never
//!   reach the proxy, so activity is not stamped on the data path at all: each
//!   session has one timer that looks, every quarter of the timeout (at most
//!   every minute), at the bytes the framework received from its two sockets
//!   (`Ctx::bytes_received`, which counts spliced ones too). A look that finds
//!   the sum unchanged for the whole timeout closes the session, so a session is
//!   never closed before `tcp_idle_ms` of silence, and at most a quarter of it
//!   (or a minute) later. Each look reads the running configuration, so a
//!   reload changes the timeout of established sessions too. A
//!   session costs one timer and a few words, and the data path nothing.
//! - **Upgraded HTTP connections** ([`ProxyShard::tcp_tunnel`]): after a `101
//!   Switching Protocols` the HTTP side hands the client and its upstream over
//!   as a relaying session of its own kind: relayed, spliced, half-closed and
//!   shut down exactly as above, with `upgrade_idle_ms` as its idle timeout. Its
//!   upstream stays counted as the HTTP side counts it (least-connections,
//!   `backend_active_connections`) until the tunnel ends, and is counted in
//!   `shardline_proxy_backend_tunnels`. A tunnel that ends is never a backend
//!   failure.

use std::{
    io,
    net::SocketAddr,
    time::{Duration, Instant},
};

use shardline::{CloseReason, ConnId, Ctx, TimerId};
use slab::Slab;
use tracing::{debug, info};

use crate::{
    balance::{hash_ip, NoBackend},
    config::{Config, SpliceMode},
    http::proxy::HttpState,
    shard::{ProxyConn, ProxyShard, ProxyTimer},
    sni::{HelloReader, Sniff},
    stats::{BackendGauges, IdleKind, TlsOutcome},
};

/// A read at least this long (the framework's default read buffer, filled)
/// marks a direction as bulk: worth switching to splice.
pub const BULK_READ: usize = 16 << 10;

/// Which side of a session a connection is (kept, with the session's key, in
/// the connection's [`crate::shard::ProxyConn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Upstream,
}

/// The L4 side's timers (the payload of a [`crate::shard::ProxyTimer`]).
#[derive(Debug, Clone, Copy)]
pub(crate) enum TimerKind {
    /// Connect deadline of a session.
    Connect(usize),
    /// ClientHello deadline of a TLS passthrough session.
    Hello(usize),
    /// A look at a relaying session's traffic (its idle timeout).
    Idle(usize),
}

/// What a session relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A client of a TCP listener (`tcp_idle_ms`).
    Tcp,
    /// An HTTP connection after a `101 Switching Protocols`
    /// (`upgrade_idle_ms`); its upstream is counted by the HTTP side.
    Upgrade,
}

impl Kind {
    fn idle_kind(self) -> IdleKind {
        match self {
            Kind::Tcp => IdleKind::Tcp,
            Kind::Upgrade => IdleKind::Upgrade,
        }
    }
}

/// A relaying session's idle watch (see the module doc).
#[derive(Debug)]
struct IdleWatch {
    /// The next look.
    timer: TimerId,
    /// Bytes received from both sides at the last look that saw them change.
    seen: u64,
    /// When that look was (or the relay started): no byte came since before it.
    quiet_since: Instant,
}

/// An upgraded HTTP connection handed to the L4 side
/// ([`ProxyShard::tcp_tunnel`]).
#[derive(Debug)]
pub(crate) struct Tunnel {
    pub(crate) client: ConnId,
    pub(crate) peer: SocketAddr,
    pub(crate) upstream: ConnId,
    pub(crate) pool: usize,
    pub(crate) backend: usize,
    /// The configuration generation of `pool` and `backend`.
    pub(crate) gen: u64,
    /// Client bytes read past the request head: the first for the upstream.
    pub(crate) early: Vec<u8>,
    /// The client already sent its FIN (after `early`).
    pub(crate) client_eof: bool,
    /// The upstream's queue is over its high-water mark: the client stays
    /// paused until it drains.
    pub(crate) upstream_full: bool,
}

/// A TLS passthrough session whose ClientHello is still being read.
#[derive(Debug)]
struct PendingHello {
    reader: HelloReader,
    /// Its `tls_hello_ms` deadline.
    timer: TimerId,
    /// The listener (its index in the configuration), whose routes decide.
    listener: usize,
}

/// One proxied client connection and its upstream.
#[derive(Debug)]
struct Session {
    client: ConnId,
    peer: SocketAddr,
    /// The upstream, once a connect was started (`connected` says if it is up).
    upstream: Option<ConnId>,
    /// The pool of its listener.
    pool: usize,
    /// The configuration generation `pool`, `backend` and `tried` are for.
    gen: u64,
    /// The backend of `upstream` (counted in `TcpState::active` while set).
    backend: usize,
    connected: bool,
    /// The client / the upstream sent its FIN (passed on to the other side).
    client_eof: bool,
    upstream_eof: bool,
    attempts: u32,
    /// Backends whose connect failed for this client.
    tried: Vec<usize>,
    connect_timer: Option<TimerId>,
    /// TLS passthrough: the ClientHello being read; no pool is chosen (nor
    /// `pool` meaningful) while set.
    hello: Option<Box<PendingHello>>,
    /// The client was read before its upstream connected (TLS passthrough):
    /// its FIN may come meanwhile, behind bytes held for the upstream.
    read_first: bool,
    /// That FIN came: passed on once the held bytes are relayed.
    eof_held: bool,
    kind: Kind,
    /// Set while relaying (from the upstream's connect until the session ends).
    idle: Option<IdleWatch>,
    /// When relaying started.
    since: Instant,
}

/// One shard's L4 state: its sessions and their timers. Owned by the shard's
/// [`ProxyShard`].
#[derive(Debug)]
pub(crate) struct TcpState {
    /// `[pool][backend]`: sessions with an upstream connecting or connected
    /// (this shard's least-connections load).
    active: Vec<Vec<u32>>,
    sessions: Slab<Session>,
    /// The server is shutting down: a side's EOF ends its session.
    draining: bool,
}

impl TcpState {
    /// A new configuration: counts sized for it (sessions of the old one are
    /// no longer counted).
    pub(crate) fn reconfigure(&mut self, config: &Config) {
        self.active = config
            .pools
            .iter()
            .map(|p| vec![0; p.backends.len()])
            .collect();
    }

    /// No sessions, counts sized for `config`.
    pub(crate) fn new(config: &Config) -> TcpState {
        TcpState {
            active: config
                .pools
                .iter()
                .map(|p| vec![0; p.backends.len()])
                .collect(),
            sessions: Slab::new(),
            draining: false,
        }
    }
}

/// L4 connections' events, dispatched here by [`ProxyShard`]'s `Handler`.
impl ProxyShard {
    fn max_attempts(&self, pool: usize) -> u32 {
        let backends = self.config.pools.get(pool).map_or(0, |p| p.backends.len()) as u32;
        self.config.limits.connect_attempts.min(backends).max(1)
    }

    /// Starts a connect for session `key` to the next backend, or closes the
    /// client when the attempts are used up.
    fn connect_next(&mut self, ctx: &mut Ctx<'_, ProxyShard>, key: usize) {
        let Some((pool, gen, client)) = self
            .tcp
            .sessions
            .get(key)
            .map(|s| (s.pool, s.gen, s.client))
        else {
            return;
        };
        if gen != self.gen {
            // A retry after a reload: the indices are of the old configuration.
            info!(client = %client, "configuration reloaded while connecting; closing client");
            ctx.close(client);
            return;
        }
        let max = self.max_attempts(pool);
        loop {
            let Some(s) = self.tcp.sessions.get_mut(key) else {
                return;
            };
            if s.attempts >= max {
                info!(client = %s.peer, attempts = s.attempts, "no backend reachable; closing client");
                let client = s.client;
                ctx.close(client);
                return;
            }
            let key_hash = hash_ip(s.peer.ip());
            let active = self.tcp.active.get(pool).map_or(&[][..], Vec::as_slice);
            // Backends at their connection cap are skipped; with all of them
            // there the client is closed (L4 clients do not queue).
            let full = crate::pools::full_backends(
                &self.config.pools[pool],
                self.http.shards,
                active,
                &s.tried,
            );
            let picked = if full.is_empty() {
                self.pools.pick(pool, active, key_hash, &s.tried)
            } else {
                let skip: Vec<usize> = s.tried.iter().chain(&full).copied().collect();
                self.pools.pick(pool, active, key_hash, &skip)
            };
            let backend = match picked {
                Ok(b) => b,
                Err(why) => {
                    let why = match why {
                        NoBackend::AllDown => "every backend is down",
                        NoBackend::AllTried if !full.is_empty() => {
                            "every backend at max_connections_per_backend"
                        }
                        NoBackend::AllTried => "no backend reachable",
                    };
                    info!(client = %s.peer, attempts = s.attempts, why, "closing client");
                    let client = s.client;
                    ctx.close(client);
                    return;
                }
            };
            s.attempts += 1;
            let addr = self.config.pools[pool].backends[backend].address;
            let tls = self.config.pools[pool].tls.as_ref();
            match crate::tls::connect_upstream(ctx, tls, addr, ProxyConn::tcp(key, Side::Upstream))
            {
                Ok(up) => {
                    s.upstream = Some(up);
                    s.backend = backend;
                    s.connected = false;
                    if let Some(n) = self
                        .tcp
                        .active
                        .get_mut(pool)
                        .and_then(|a| a.get_mut(backend))
                    {
                        *n += 1;
                        self.gauges.active(pool, backend, true);
                    }
                    let t = ctx.set_timer(
                        Duration::from_millis(self.config.timeouts.connect_ms),
                        ProxyTimer::tcp(TimerKind::Connect(key)),
                    );
                    if let Some(s) = self.tcp.sessions.get_mut(key) {
                        s.connect_timer = Some(t);
                    }
                    return;
                }
                Err(e) => {
                    debug!(backend = %addr, error = %e, "cannot start connect");
                    s.tried.push(backend);
                }
            }
        }
    }

    /// Whether bulk directions are spliced. `auto` is on for both backends:
    /// measured with `shardline-bench l4`, splice took ~0.64x (epoll) and
    /// ~0.68x (io_uring) the proxy CPU per GiB of copying.
    fn splice_wanted(&self) -> bool {
        self.config.limits.splice != SpliceMode::Never
    }

    /// `conn`, side `side` of session `key` (its state), if the session is
    /// still its own (not gone, nor the key reused, nor `conn` an upstream it
    /// gave up): with the other side, if there is one to relay to.
    fn other(&self, conn: ConnId, key: usize, side: Side) -> Option<(usize, Side, Option<ConnId>)> {
        let s = self.tcp.sessions.get(key)?;
        let other = match side {
            Side::Client if s.client == conn => s.upstream.filter(|_| s.connected),
            Side::Upstream if s.upstream == Some(conn) => Some(s.client),
            _ => return None,
        };
        Some((key, side, other))
    }
}

/// Session `s` no longer counts on its backend (if its indices are of the
/// current generation `gen`: older sessions were not counted). A tunnel's
/// upstream is counted by the HTTP side (`http`).
fn release(
    active: &mut [Vec<u32>],
    http: &mut HttpState,
    gauges: &BackendGauges,
    gen: u64,
    s: &Session,
) {
    let (pool, backend) = (s.pool, s.backend);
    if s.kind == Kind::Upgrade {
        http.tunnel_closed(pool, backend, s.gen);
        return;
    }
    if s.gen != gen {
        return;
    }
    if let Some(n) = active.get_mut(pool).and_then(|a| a.get_mut(backend)) {
        if *n > 0 {
            gauges.active(pool, backend, false);
        }
        *n = n.saturating_sub(1);
    }
}

impl ProxyShard {
    /// A client connection accepted by a TCP listener whose pool is `pool`;
    /// returns its state.
    pub(crate) fn tcp_accept(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        conn: ConnId,
        peer: SocketAddr,
        pool: usize,
    ) -> ProxyConn {
        // Not read until the upstream is up: a failed connect must not lose bytes.
        ctx.pause_reading(conn);
        let key = self.tcp.sessions.insert(Session {
            client: conn,
            peer,
            upstream: None,
            pool,
            gen: self.gen,
            backend: 0,
            connected: false,
            client_eof: false,
            upstream_eof: false,
            attempts: 0,
            tried: Vec::new(),
            connect_timer: None,
            hello: None,
            read_first: false,
            eof_held: false,
            kind: Kind::Tcp,
            idle: None,
            since: Instant::now(),
        });
        self.connect_next(ctx, key);
        ProxyConn::tcp(key, Side::Client)
    }

    /// A client accepted by TLS passthrough listener `listener`: read until its
    /// ClientHello says which pool (see the module doc); returns its state.
    pub(crate) fn tcp_accept_tls(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        conn: ConnId,
        peer: SocketAddr,
        listener: usize,
    ) -> ProxyConn {
        let key = self.tcp.sessions.vacant_key();
        let timer = ctx.set_timer(
            Duration::from_millis(self.config.timeouts.tls_hello_ms),
            ProxyTimer::tcp(TimerKind::Hello(key)),
        );
        self.tcp.sessions.insert(Session {
            client: conn,
            peer,
            upstream: None,
            pool: 0,
            gen: self.gen,
            backend: 0,
            connected: false,
            client_eof: false,
            upstream_eof: false,
            attempts: 0,
            tried: Vec::new(),
            connect_timer: None,
            hello: Some(Box::new(PendingHello {
                reader: HelloReader::new(),
                timer,
                listener,
            })),
            read_first: false,
            eof_held: false,
            kind: Kind::Tcp,
            idle: None,
            since: Instant::now(),
        });
        ProxyConn::tcp(key, Side::Client)
    }

    /// Client bytes of session `key` while its ClientHello is being read: all
    /// of them so far (nothing was consumed). Returns what `on_data` consumes:
    /// nothing, unless the client is closed.
    fn tcp_hello(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        conn: ConnId,
        key: usize,
        data: &[u8],
    ) -> usize {
        let Some(s) = self.tcp.sessions.get_mut(key) else {
            return data.len();
        };
        let Some(pending) = s.hello.as_mut() else {
            return 0;
        };
        let outcome = match pending.reader.read(data) {
            Sniff::NeedMore => return 0,
            Sniff::Hello(hello) => {
                return match self.route_hello(ctx, key, hello.server_name.as_deref()) {
                    true => 0,
                    false => data.len(),
                };
            }
            Sniff::NotTls(why) => {
                debug!(client = %s.peer, why, "not TLS; closing client");
                TlsOutcome::NotTls
            }
            Sniff::Malformed(e) => {
                debug!(client = %s.peer, error = %e, "malformed ClientHello; closing client");
                TlsOutcome::Malformed
            }
        };
        if let Some(pending) = s.hello.take() {
            ctx.cancel_timer(pending.timer);
        }
        self.stats.tls_hello(outcome);
        ctx.close(conn);
        data.len()
    }

    /// Session `key`'s ClientHello is complete and names `server_name`: pick
    /// the pool and connect it (`true`: the held bytes wait for it), or close
    /// the client (`false`).
    fn route_hello(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        key: usize,
        server_name: Option<&str>,
    ) -> bool {
        let Some(s) = self.tcp.sessions.get_mut(key) else {
            return false;
        };
        let Some(pending) = s.hello.take() else {
            return false;
        };
        ctx.cancel_timer(pending.timer);
        let Some(pool) = self.config.sni_route(pending.listener, server_name) else {
            debug!(client = %s.peer, server_name, "no SNI route and no default pool; closing client");
            self.stats.tls_hello(TlsOutcome::NoRoute);
            ctx.close(s.client);
            return false;
        };
        debug!(
            client = %s.peer,
            server_name,
            pool = self.config.pools.get(pool).map_or("", |p| p.name.as_str()),
            "ClientHello routed"
        );
        self.stats.tls_hello(TlsOutcome::Routed);
        s.pool = pool;
        s.gen = self.gen;
        s.read_first = true;
        // As for a plain TCP client from here on: not read until the upstream
        // is up; what was read stays held and is relayed first.
        ctx.pause_reading(s.client);
        self.connect_next(ctx, key);
        true
    }

    pub(crate) fn tcp_connect(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        conn: ConnId,
        key: usize,
        result: io::Result<()>,
    ) {
        let Some(s) = self
            .tcp
            .sessions
            .get_mut(key)
            .filter(|s| s.upstream == Some(conn))
        else {
            // Its session is gone (client left while connecting).
            if result.is_ok() {
                ctx.close(conn);
            }
            return;
        };
        if let Some(t) = s.connect_timer.take() {
            ctx.cancel_timer(t);
        }
        match result {
            Ok(()) => {
                s.connected = true;
                s.since = Instant::now();
                let (client, pool, backend, gen) = (s.client, s.pool, s.backend, s.gen);
                // The PROXY header goes first, before any relayed byte (and
                // before splice can start: the client is read from now on).
                let version = (gen == self.gen)
                    .then(|| self.config.pools.get(pool))
                    .flatten()
                    .and_then(|p| p.send_proxy_protocol);
                if let Some(v) = version {
                    let header = crate::pools::proxy_header(v, s.peer, ctx.local_addr(client));
                    let _ = ctx.send(conn, &header);
                }
                self.watch_idle(ctx, key);
                ctx.resume_reading(client);
                // Bytes that came before the pause took effect were left
                // unconsumed: offer them now, not only with the next bytes (the
                // client may have sent everything already, FIN included).
                ctx.redeliver(client);
                self.health
                    .passive(ctx, &mut self.pools, gen, pool, backend, true);
            }
            Err(e) => {
                debug!(client = %s.peer, error = %e, "upstream connect failed; trying the next backend");
                s.upstream = None;
                s.tried.push(s.backend);
                release(
                    &mut self.tcp.active,
                    &mut self.http,
                    &self.gauges,
                    self.gen,
                    s,
                );
                let (pool, backend, gen) = (s.pool, s.backend, s.gen);
                self.health
                    .passive(ctx, &mut self.pools, gen, pool, backend, false);
                self.connect_next(ctx, key);
            }
        }
    }

    pub(crate) fn tcp_data(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        conn: ConnId,
        (key, side): (usize, Side),
        data: &[u8],
    ) -> usize {
        let Some(s) = self.tcp.sessions.get_mut(key) else {
            return data.len();
        };
        if side == Side::Client && s.client == conn && s.hello.is_some() {
            return self.tcp_hello(ctx, conn, key, data);
        }
        let eof_held = side == Side::Client && s.client == conn && s.connected && s.eof_held;
        match self.other(conn, key, side) {
            Some((_, _, Some(to))) if eof_held => {
                // Every byte the client sent before its FIN (held while the
                // upstream connected): relay it, then the FIN.
                let _ = ctx.send(to, data);
                if let Some(s) = self.tcp.sessions.get_mut(key) {
                    s.eof_held = false;
                }
                self.forward_eof(ctx, conn, key, Side::Client, to);
                data.len()
            }
            Some((_, _, Some(to))) => {
                // An error means the other side is closing; its on_close ends the pair.
                let _ = ctx.send(to, data);
                // TLS on either side: the kernel would move records, not the
                // plaintext; keep copying.
                let plain = ctx.tls(conn).is_none() && ctx.tls(to).is_none();
                if data.len() >= BULK_READ && plain && self.splice_wanted() {
                    // From now on in the kernel, behind what was just queued. No
                    // pipe (all in use): keep copying.
                    if let Err(e) = ctx.splice_into(conn, to) {
                        debug!(conn = %conn, error = %e, "not spliced; copying");
                    }
                }
                data.len()
            }
            // Client bytes that came before the pause took effect: keep them (the
            // framework presents them again once reading resumes).
            Some((_, Side::Client, None)) => 0,
            _ => data.len(),
        }
    }

    pub(crate) fn tcp_eof(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        conn: ConnId,
        (key, side): (usize, Side),
    ) {
        // Every byte `conn` sent has been relayed (the framework presents held
        // input before the EOF); pass the FIN on once the other side's queue is
        // flushed, and keep relaying the other way. Both FINs seen: the pair is
        // done (each closed after its queue is flushed).
        match self.other(conn, key, side) {
            Some((key, side, Some(other))) => self.forward_eof(ctx, conn, key, side, other),
            Some((key, Side::Client, None)) => {
                let Some(s) = self.tcp.sessions.get_mut(key) else {
                    return;
                };
                if s.read_first && s.upstream.is_some() && !self.tcp.draining {
                    // TLS passthrough: the FIN came behind the hello while the
                    // upstream connects; it follows the held bytes there.
                    s.eof_held = true;
                } else {
                    // A client that never connected through (a hello cut
                    // short included) is simply closed.
                    ctx.close(conn);
                }
            }
            _ => ctx.close(conn),
        }
    }

    /// `conn` (side `side` of session `key`) sent its FIN and every byte
    /// before it was relayed to `other`: pass it on, or end the session.
    fn forward_eof(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        conn: ConnId,
        key: usize,
        side: Side,
        other: ConnId,
    ) {
        let Some(s) = self.tcp.sessions.get_mut(key) else {
            return;
        };
        match side {
            Side::Client => s.client_eof = true,
            Side::Upstream => s.upstream_eof = true,
        }
        if (s.client_eof && s.upstream_eof) || self.tcp.draining {
            // Done, or shutting down: a side that finished ends the
            // session (each side flushed, then closed).
            ctx.close(conn);
            ctx.close(other);
        } else if ctx.shutdown_write(other).is_err() {
            // The other side is already going: its on_close ends the pair.
            ctx.close(conn);
        }
    }

    pub(crate) fn tcp_close(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        conn: ConnId,
        (key, side): (usize, Side),
        _reason: &CloseReason,
    ) {
        if self.other(conn, key, side).is_none() {
            return;
        }
        match side {
            Side::Upstream => {
                if let Some(s) = self.tcp.sessions.get_mut(key) {
                    if s.upstream.take().is_some() {
                        release(
                            &mut self.tcp.active,
                            &mut self.http,
                            &self.gauges,
                            self.gen,
                            s,
                        );
                    }
                    ctx.close(s.client);
                }
            }
            Side::Client => {
                let Some(s) = self.tcp.sessions.try_remove(key) else {
                    return;
                };
                self.stats.clients.sub(1);
                if let Some(t) = s.connect_timer {
                    ctx.cancel_timer(t);
                }
                if let Some(w) = &s.idle {
                    ctx.cancel_timer(w.timer);
                }
                if s.kind == Kind::Upgrade {
                    self.gauges
                        .tunnel(s.pool, s.backend, false, s.gen == self.gen);
                    debug!(client = %s.peer, secs = s.since.elapsed().as_secs(), "upgraded connection closed");
                }
                if let Some(pending) = &s.hello {
                    // Gone (FIN, reset, shutdown) before its hello was whole.
                    ctx.cancel_timer(pending.timer);
                    self.stats.tls_hello(TlsOutcome::Incomplete);
                    debug!(client = %s.peer, seen = pending.reader.examined(), "client left before its ClientHello was complete");
                }
                if let Some(up) = s.upstream {
                    release(
                        &mut self.tcp.active,
                        &mut self.http,
                        &self.gauges,
                        self.gen,
                        &s,
                    );
                    // Flushes what the client sent, then FIN; a connect still in
                    // flight is abandoned. The session's key may be reused before
                    // the upstream's own close comes: that close finds a session
                    // that is not its own, and does nothing.
                    ctx.close(up);
                }
            }
        }
    }

    /// The queue to `conn` is full (`full`) or drained: stop or restart reading
    /// the side that fills it.
    pub(crate) fn tcp_queue_full(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        conn: ConnId,
        (key, side): (usize, Side),
        full: bool,
    ) {
        match self.other(conn, key, side) {
            Some((_, _, Some(other))) if full => ctx.pause_reading(other),
            Some((_, _, Some(other))) => ctx.resume_reading(other),
            _ => {}
        }
    }

    /// A timer of the L4 side fired (a session's timer is cancelled when the
    /// session ends, so its key still names it).
    pub(crate) fn tcp_timer(&mut self, ctx: &mut Ctx<'_, ProxyShard>, kind: TimerKind) {
        let key = match kind {
            TimerKind::Connect(key) => key,
            TimerKind::Idle(key) => return self.idle_look(ctx, key),
            TimerKind::Hello(key) => {
                let Some(s) = self.tcp.sessions.get_mut(key) else {
                    return;
                };
                if let Some(pending) = s.hello.take() {
                    debug!(
                        client = %s.peer,
                        seen = pending.reader.examined(),
                        "no complete ClientHello in time; closing client"
                    );
                    self.stats.tls_hello(TlsOutcome::Timeout);
                    ctx.close(s.client);
                }
                return;
            }
        };
        let Some(s) = self.tcp.sessions.get_mut(key) else {
            return;
        };
        s.connect_timer = None;
        if s.connected {
            return;
        }
        if let Some(up) = s.upstream.take() {
            debug!(client = %s.peer, "upstream connect timed out; trying the next backend");
            s.tried.push(s.backend);
            release(
                &mut self.tcp.active,
                &mut self.http,
                &self.gauges,
                self.gen,
                s,
            );
            let (pool, backend, gen) = (s.pool, s.backend, s.gen);
            self.health
                .passive(ctx, &mut self.pools, gen, pool, backend, false);
            // Closing a connect in flight releases it without on_connect/on_close.
            ctx.close(up);
        }
        self.connect_next(ctx, key);
    }

    /// Graceful shutdown: every relaying session (upstream connected) is kept
    /// open, both sides (`Ctx::keep_open_on_shutdown`), until either side
    /// finishes (its EOF or close ends the session: both sides are flushed and
    /// closed) or the shutdown deadline. Sessions still connecting are closed
    /// by the shutdown like any other connection.
    pub(crate) fn tcp_shutdown(&mut self, ctx: &mut Ctx<'_, ProxyShard>) {
        self.tcp.draining = true;
        for (_, s) in self.tcp.sessions.iter() {
            if let (true, Some(up)) = (s.connected, s.upstream) {
                if s.client_eof || s.upstream_eof {
                    // Already half-closed: one side finished.
                    continue;
                }
                ctx.keep_open_on_shutdown(s.client);
                ctx.keep_open_on_shutdown(up);
            }
        }
    }

    /// The idle timeout of a session of `kind`, as configured now.
    fn idle_limit(&self, kind: Kind) -> Duration {
        Duration::from_millis(match kind {
            Kind::Tcp => self.config.timeouts.tcp_idle_ms,
            Kind::Upgrade => self.config.timeouts.upgrade_idle_ms,
        })
    }

    /// Bytes received so far from both sides of session `key`.
    fn received(&self, ctx: &Ctx<'_, ProxyShard>, key: usize) -> u64 {
        self.tcp.sessions.get(key).map_or(0, |s| {
            let up = s.upstream.and_then(|u| ctx.bytes_received(u));
            ctx.bytes_received(s.client)
                .unwrap_or(0)
                .wrapping_add(up.unwrap_or(0))
        })
    }

    /// Session `key` starts relaying: its idle watch starts.
    fn watch_idle(&mut self, ctx: &mut Ctx<'_, ProxyShard>, key: usize) {
        let seen = self.received(ctx, key);
        let Some(kind) = self.tcp.sessions.get(key).map(|s| s.kind) else {
            return;
        };
        let limit = self.idle_limit(kind);
        let timer = ctx.set_timer(
            look_after(limit, Duration::ZERO),
            ProxyTimer::tcp(TimerKind::Idle(key)),
        );
        if let Some(s) = self.tcp.sessions.get_mut(key) {
            if let Some(old) = s.idle.take() {
                ctx.cancel_timer(old.timer);
            }
            s.idle = Some(IdleWatch {
                timer,
                seen,
                quiet_since: Instant::now(),
            });
        }
    }

    /// A look at session `key`'s traffic: bytes since the last look restart its
    /// quiet time; a quiet time of the whole timeout closes both sides.
    fn idle_look(&mut self, ctx: &mut Ctx<'_, ProxyShard>, key: usize) {
        let total = self.received(ctx, key);
        let Some(kind) = self.tcp.sessions.get(key).map(|s| s.kind) else {
            return;
        };
        let limit = self.idle_limit(kind);
        let Some(s) = self.tcp.sessions.get_mut(key) else {
            return;
        };
        let Some(w) = s.idle.as_mut() else {
            return;
        };
        let now = Instant::now();
        if total != w.seen {
            w.seen = total;
            w.quiet_since = now;
        }
        let quiet = now.saturating_duration_since(w.quiet_since);
        if quiet < limit {
            w.timer = ctx.set_timer(
                look_after(limit, quiet),
                ProxyTimer::tcp(TimerKind::Idle(key)),
            );
            return;
        }
        s.idle = None;
        let what = match kind {
            Kind::Tcp => "TCP session idle; closing both sides",
            Kind::Upgrade => "upgraded connection idle; closing both sides",
        };
        info!(client = %s.peer, idle_ms = quiet.as_millis() as u64,
            limit_ms = limit.as_millis() as u64, "{what}");
        self.stats.idle_closed(kind.idle_kind());
        // Both closed after their queues are flushed; the client's close ends
        // the session.
        ctx.close(s.client);
        if let Some(up) = s.upstream {
            ctx.close(up);
        }
    }

    /// Takes over an HTTP client and its upstream connection after the
    /// backend's `101 Switching Protocols` (already queued to the client): a
    /// relaying session from now on, whose key is returned (the HTTP side
    /// gives both connections their new state). Client bytes read past the
    /// request head go to the upstream first (and the client's FIN after
    /// them, if it came).
    pub(crate) fn tcp_tunnel(&mut self, ctx: &mut Ctx<'_, ProxyShard>, t: Tunnel) -> usize {
        let key = self.tcp.sessions.insert(Session {
            client: t.client,
            peer: t.peer,
            upstream: Some(t.upstream),
            pool: t.pool,
            gen: t.gen,
            backend: t.backend,
            connected: true,
            client_eof: false,
            upstream_eof: false,
            attempts: 1,
            tried: Vec::new(),
            connect_timer: None,
            hello: None,
            read_first: false,
            eof_held: false,
            kind: Kind::Upgrade,
            idle: None,
            since: Instant::now(),
        });
        self.gauges
            .tunnel(t.pool, t.backend, true, t.gen == self.gen);
        if !t.early.is_empty() {
            let _ = ctx.send(t.upstream, &t.early);
        }
        self.watch_idle(ctx, key);
        if t.client_eof {
            self.forward_eof(ctx, t.client, key, Side::Client, t.upstream);
        } else if !t.upstream_full {
            // The HTTP side may have paused it (its buffer was full); the
            // upstream's backpressure, if any, resumes it when it drains.
            ctx.resume_reading(t.client);
        }
        key
    }
}

/// When to look again at a session quiet for `quiet` of `limit`: at the
/// latest when the timeout would be reached, and at least every quarter of it
/// (at most every minute), so a closing comes at most that late.
fn look_after(limit: Duration, quiet: Duration) -> Duration {
    let step = (limit / 4).clamp(Duration::from_millis(1), Duration::from_secs(60));
    limit
        .saturating_sub(quiet)
        .min(step)
        .max(Duration::from_millis(1))
}
