//! The per-shard handler: one [`ProxyShard`] per shard serves every listener of
//! the configuration. It is a router: on accept it hands the connection to the
//! L4 side ([`crate::tcp`]) or the HTTP side ([`crate::http`]) of its listener
//! (whose configuration index the listener carries, attached at build),
//! which returns the connection's state ([`ProxyConn`]: its role and record
//! key); every later event is routed on that state, every timer on its payload
//! ([`ProxyTimer`]), every message on its origin. The balancers and the health
//! view ([`ShardPools`]) and the checker ([`Health`]) are shared by both sides,
//! so a pool used by several listeners is balanced and checked once.
//!
//! Must never: serve a connection it cannot attribute to a listener (it is
//! closed), or let an event reach a side that does not own its connection.

use std::{
    io,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use shardline::{CloseReason, ConnId, Ctx, Handler, Origin, Preamble, ShardId, TimerId};
use tracing::{debug, warn};

use crate::{
    config::{Config, Mode},
    health::{self, Health, ProxyMsg},
    http::proxy::{self as http_proxy, HttpState},
    pools::ShardPools,
    stats::{BackendGauges, ShardStats},
    tcp::{self, TcpState},
    Shared,
};

/// What a timer of the proxy carries (the handler's `Handler::Timer`): which
/// side set it and that side's own kind of timer, so `on_timer` routes it by
/// value, with no token table.
#[derive(Debug, Clone, Copy)]
pub struct ProxyTimer(pub(crate) TimerOf);

/// Which side a timer belongs to, with that side's payload.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TimerOf {
    /// The health checker's ([`crate::health`]).
    Health(health::Tick),
    /// The L4 side's ([`crate::tcp`]).
    Tcp(tcp::TimerKind),
    /// The HTTP side's ([`crate::http`]).
    Http(http_proxy::TimerKind),
}

/// A connection's state (the handler's `Handler::Conn`): its role, with the
/// key of its record in the owning side's own slab, so every event is routed
/// by value — no map from `ConnId` is consulted to find the owner. Each side
/// checks that the record still names the connection (a key can be reused
/// once its first owner is gone).
#[derive(Debug, Clone, Copy)]
pub struct ProxyConn(pub(crate) Role);

/// What a connection is to the proxy.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Role {
    /// A health probe of this shard's checker ([`crate::health`]; its record is
    /// keyed by `ConnId` because its deadline timer and a reload look probes
    /// up by connection).
    Probe,
    /// Side `Side` of L4 session `key` ([`crate::tcp`]).
    Tcp(usize, tcp::Side),
    /// An HTTP client or upstream ([`crate::http`]).
    Http(http_proxy::Role),
    /// Attributed to nothing: closed at once.
    Closing,
}

impl ProxyConn {
    pub(crate) fn tcp(key: usize, side: tcp::Side) -> ProxyConn {
        ProxyConn(Role::Tcp(key, side))
    }
    pub(crate) fn http(role: http_proxy::Role) -> ProxyConn {
        ProxyConn(Role::Http(role))
    }
}

impl ProxyTimer {
    pub(crate) fn health(t: health::Tick) -> ProxyTimer {
        ProxyTimer(TimerOf::Health(t))
    }
    pub(crate) fn tcp(t: tcp::TimerKind) -> ProxyTimer {
        ProxyTimer(TimerOf::Tcp(t))
    }
    pub(crate) fn http(t: http_proxy::TimerKind) -> ProxyTimer {
        ProxyTimer(TimerOf::Http(t))
    }
}

/// The per-shard proxy handler: every listener, both modes.
#[derive(Debug)]
pub struct ProxyShard {
    pub(crate) config: Arc<Config>,
    /// The configuration generation `config` is (see [`crate::reload`]).
    pub(crate) gen: u64,
    pub(crate) pools: ShardPools,
    pub(crate) health: Health,
    pub(crate) http: HttpState,
    pub(crate) tcp: TcpState,
    /// This shard's counters for `/metrics`.
    pub(crate) stats: Arc<ShardStats>,
    /// This shard's per-backend gauges (for the configuration it serves).
    pub(crate) gauges: Arc<BackendGauges>,
    /// Health messages of a generation newer than `gen`, from shards that
    /// switched before this one: handled once this shard switches too.
    pub(crate) ahead: Vec<ProxyMsg>,
    /// Untrusted PROXY-protocol sources refused since the last warning, and
    /// when that was (the warning is logged at most once a second per shard).
    refused: (u64, Option<std::time::Instant>),
    /// Where this shard writes combined / JSON access log lines.
    pub(crate) access: crate::access::AccessLog,
    /// Per-listener rate limits, this shard's tables ([`crate::limit`]).
    pub(crate) limits: crate::limit::Limiters,
}

impl ProxyShard {
    /// The handler of shard `shard`, serving `shared`'s configuration.
    pub fn new(shared: Arc<Shared>, shard: ShardId) -> ProxyShard {
        let config = shared.config.clone();
        let stats = shared.stats.add_shard(shard.0, &config);
        let gauges = stats.backends();
        ProxyShard {
            access: crate::access::AccessLog::new(&config.log),
            limits: crate::limit::Limiters::new(&config),
            pools: ShardPools::new(&config, shard.0, gauges.clone()),
            // Replaced in on_start, when the shard count is known.
            health: Health::new(config.clone(), 0, shard, 1),
            http: HttpState::new(&config, gauges.clone()),
            tcp: TcpState::new(&config),
            config,
            gen: 0,
            ahead: Vec::new(),
            refused: (0, None),
            stats,
            gauges,
        }
    }

    /// Counts a request or connection of `ip` against listener `listener`'s
    /// rate limit ([`crate::limit`]), keeping the metrics current.
    pub(crate) fn rate_check(
        &mut self,
        listener: usize,
        ip: std::net::IpAddr,
    ) -> crate::limit::Verdict {
        let (verdict, tracked) = self.limits.check(listener, ip);
        if self
            .config
            .listeners
            .get(listener)
            .is_some_and(|l| l.rate_limit.is_some())
        {
            self.stats.rate_clients(listener, tracked);
            if verdict != crate::limit::Verdict::Allow {
                self.stats.rate_limited(listener);
            }
        }
        verdict
    }

    /// Backpressure (`full`) or its end on `conn`, for the side it belongs to.
    fn queue_full(&mut self, ctx: &mut Ctx<'_, ProxyShard>, conn: ConnId, role: Role, full: bool) {
        match role {
            Role::Tcp(key, side) => self.tcp_queue_full(ctx, conn, (key, side), full),
            Role::Http(role) => self.http_queue_full(ctx, conn, role, full),
            Role::Probe | Role::Closing => {}
        }
    }
}

impl Handler for ProxyShard {
    type Msg = ProxyMsg;
    type Timer = ProxyTimer;
    type Conn = ProxyConn;
    /// The listener's index in `Config::listeners` (attached with
    /// `listen_with`; listeners are fixed at start, a reload cannot change them).
    type Listener = usize;

    fn on_start(&mut self, ctx: &mut Ctx<'_, ProxyShard>) {
        self.health = Health::new(self.config.clone(), self.gen, ctx.shard_id(), ctx.shards());
        self.health.start(ctx);
        self.http_start(ctx);
    }

    /// A listener with `proxy_protocol = true` reads a PROXY header first
    /// (within `tls_hello_ms`) from a trusted source and refuses any other
    /// (as HAProxy does): counted by the framework
    /// (`shardline_preamble_refused_total`), warned about at most once a
    /// second per shard with the count since the last warning.
    fn on_preamble(
        &mut self,
        listener: shardline::Listener<'_, usize>,
        peer: SocketAddr,
    ) -> Preamble {
        let Some(trusted) = self
            .config
            .listeners
            .get(*listener.value)
            .and_then(|l| l.proxy_protocol.as_ref())
        else {
            return Preamble::None;
        };
        if trusted.iter().any(|c| c.contains(peer.ip())) {
            return Preamble::ProxyProtocol {
                timeout: Duration::from_millis(self.config.timeouts.tls_hello_ms),
            };
        }
        self.refused.0 += 1;
        let now = Instant::now();
        if self
            .refused
            .1
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            warn!(client = %peer, listener = %listener.addr, refused = self.refused.0,
                "PROXY protocol listener: source not in proxy_protocol_trusted; refused");
            self.refused = (0, Some(now));
        }
        Preamble::Refuse
    }

    fn on_accept(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        conn: ConnId,
        listener: shardline::Listener<'_, usize>,
        peer: SocketAddr,
    ) -> ProxyConn {
        let i = *listener.value;
        let config = self.config.clone();
        let Some(l) = config.listeners.get(i) else {
            debug!(client = %peer, listener = i, "connection to no known listener; closing");
            ctx.close(conn);
            return ProxyConn(Role::Closing);
        };
        // TCP listeners limit connections: one over the limit is closed at once.
        if l.mode == Mode::Tcp {
            if let crate::limit::Verdict::Refuse(wait) = self.rate_check(i, peer.ip()) {
                debug!(client = %peer, listener = %l.address, retry_ms = wait.as_millis() as u64,
                    "rate limited: connection refused");
                ctx.close(conn);
                return ProxyConn(Role::Closing);
            }
        }
        // TLS passthrough: the pool comes from the ClientHello.
        let passthrough = l.mode == Mode::Tcp && l.sni.is_some();
        if l.mode == Mode::Http || l.pool.is_some() || passthrough {
            self.stats.clients.add(1);
        }
        match (l.mode, l.pool) {
            (Mode::Tcp, _) if passthrough => self.tcp_accept_tls(ctx, conn, peer, i),
            (Mode::Tcp, Some(pool)) => self.tcp_accept(ctx, conn, peer, pool),
            (Mode::Tcp, None) => {
                ctx.close(conn);
                ProxyConn(Role::Closing)
            }
            (Mode::Http, _) => ProxyConn::http(self.http_accept(ctx, conn, peer, i)),
        }
    }

    fn on_connect(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        conn: ConnId,
        state: &mut ProxyConn,
        result: io::Result<()>,
    ) {
        match state.0 {
            Role::Probe => self.health.on_connect(ctx, &mut self.pools, conn, result),
            Role::Tcp(key, _) => self.tcp_connect(ctx, conn, key, result),
            Role::Http(role) => self.http_connect(ctx, conn, role, result),
            Role::Closing => {
                if result.is_ok() {
                    ctx.close(conn);
                }
            }
        }
        self.http_service_queues(ctx);
    }

    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        conn: ConnId,
        state: &mut ProxyConn,
        data: &[u8],
    ) -> usize {
        match state.0 {
            Role::Probe => self.health.on_data(ctx, &mut self.pools, conn, data),
            Role::Tcp(key, side) => self.tcp_data(ctx, conn, (key, side), data),
            Role::Http(role) => {
                let used = self.http_data(ctx, conn, role, data);
                // An upstream whose 101 made it a tunnel is now the L4 side's.
                if let Some((c, new)) = self.http.retag.take() {
                    if c == conn {
                        *state = new;
                    }
                }
                self.http_service_queues(ctx);
                used
            }
            Role::Closing => data.len(),
        }
    }

    fn on_eof(&mut self, ctx: &mut Ctx<'_, ProxyShard>, conn: ConnId, state: &mut ProxyConn) {
        match state.0 {
            Role::Probe => self.health.on_close(ctx, &mut self.pools, conn),
            Role::Tcp(key, side) => self.tcp_eof(ctx, conn, (key, side)),
            Role::Http(role) => self.http_eof(ctx, conn, role),
            Role::Closing => ctx.close(conn),
        }
        self.http_service_queues(ctx);
    }

    fn on_close(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        conn: ConnId,
        state: ProxyConn,
        reason: &CloseReason,
    ) {
        match state.0 {
            Role::Probe => self.health.on_close(ctx, &mut self.pools, conn),
            Role::Tcp(key, side) => self.tcp_close(ctx, conn, (key, side), reason),
            Role::Http(role) => self.http_close(ctx, conn, role, reason),
            Role::Closing => {}
        }
        self.http_service_queues(ctx);
    }

    fn on_backpressure(
        &mut self,
        ctx: &mut Ctx<'_, ProxyShard>,
        conn: ConnId,
        state: &mut ProxyConn,
    ) {
        self.queue_full(ctx, conn, state.0, true);
    }

    fn on_drained(&mut self, ctx: &mut Ctx<'_, ProxyShard>, conn: ConnId, state: &mut ProxyConn) {
        self.queue_full(ctx, conn, state.0, false);
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, ProxyShard>, _timer: TimerId, timer: ProxyTimer) {
        match timer.0 {
            TimerOf::Health(tick) => self.health.on_timer(ctx, &mut self.pools, tick),
            TimerOf::Tcp(kind) => self.tcp_timer(ctx, kind),
            TimerOf::Http(kind) => self.http_timer(ctx, kind),
        }
        self.http_service_queues(ctx);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, ProxyShard>, from: Origin, msg: ProxyMsg) {
        match (from, msg) {
            // Only the reloader posts from outside the shards, and only this.
            (Origin::Remote, ProxyMsg::Reload(new)) => self.on_reload(ctx, &new),
            (Origin::Remote, msg) => {
                debug!(?msg, "unexpected message from outside the shards; ignored");
            }
            (Origin::Shard(from), ProxyMsg::Reload(_)) => {
                debug!(%from, "a reload posted by a shard; ignored");
            }
            // The sender switched first: kept until this shard switches too.
            (Origin::Shard(_), msg) if msg.gen() > self.gen => self.ahead.push(msg),
            (Origin::Shard(_), msg) => self.health.on_message(ctx, &mut self.pools, msg),
        }
    }

    fn on_mailbox_ready(&mut self, ctx: &mut Ctx<'_, ProxyShard>, to: ShardId) {
        self.health.on_mailbox_ready(ctx, to);
    }

    fn on_shutdown(&mut self, ctx: &mut Ctx<'_, ProxyShard>) {
        self.http_shutdown(ctx);
        self.tcp_shutdown(ctx);
    }
}
