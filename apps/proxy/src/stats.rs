//! The proxy's counters for the admin endpoint's `/metrics` (`[admin] listen`,
//! `--admin`).
//!
//! Each shard writes only its own [`ShardStats`] (Shardline's single-writer
//! [`Counter`]s: a plain load and store, each on its own cache line); the admin
//! thread reads every shard's. The counters are kept where the state changes:
//! responses where an exchange ends or the proxy answers itself, client
//! connections on accept and close, upstream connections where the per-shard
//! active counts change ([`crate::http`]'s upstream pool, [`crate::tcp`]'s
//! sessions), health where a shard's view changes ([`crate::pools`]). Nothing
//! here may make a shard wait for the reader, or count on another shard's
//! behalf.
//!
//! Per-backend gauges are laid out for one configuration ([`BackendGauges`]): a
//! shard that loads a new configuration makes new ones and publishes them under
//! the lock, which only the admin thread and reloads take.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use shardline::{Counter, PerShard, PromWriter};

use crate::{config::Config, health::checker_of};

/// Upper bounds of the latency histogram's buckets, in seconds.
pub const LATENCY_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Status classes as labelled: index `status / 100 - 1`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// How a TLS passthrough listener's client's ClientHello ended (see
/// [`crate::tcp`]): the `outcome` label of
/// `shardline_proxy_tls_hellos_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsOutcome {
    /// A pool was chosen (by SNI route or the listener's default pool).
    Routed,
    /// A valid hello, but no route matched and there is no default pool.
    NoRoute,
    /// The first bytes are not a TLS handshake record (plain HTTP, …).
    NotTls,
    /// TLS records, but not a valid ClientHello (or too large).
    Malformed,
    /// No complete hello within `tls_hello_ms`.
    Timeout,
    /// The client went away before its hello was complete.
    Incomplete,
}

impl TlsOutcome {
    const ALL: [TlsOutcome; 6] = [
        TlsOutcome::Routed,
        TlsOutcome::NoRoute,
        TlsOutcome::NotTls,
        TlsOutcome::Malformed,
        TlsOutcome::Timeout,
        TlsOutcome::Incomplete,
    ];

    /// Its label value.
    pub fn label(self) -> &'static str {
        match self {
            TlsOutcome::Routed => "routed",
            TlsOutcome::NoRoute => "no_route",
            TlsOutcome::NotTls => "not_tls",
            TlsOutcome::Malformed => "malformed",
            TlsOutcome::Timeout => "timeout",
            TlsOutcome::Incomplete => "incomplete",
        }
    }
}

/// Which idle timeout closed a connection: the `kind` label of
/// `shardline_proxy_idle_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleKind {
    /// An L4 session (`tcp_idle_ms`).
    Tcp,
    /// An upgraded HTTP connection (`upgrade_idle_ms`).
    Upgrade,
}

impl IdleKind {
    const ALL: [IdleKind; 2] = [IdleKind::Tcp, IdleKind::Upgrade];

    /// Its label value.
    pub fn label(self) -> &'static str {
        match self {
            IdleKind::Tcp => "tcp",
            IdleKind::Upgrade => "upgrade",
        }
    }
}

/// One shard's gauges per backend of one configuration: `[offset[pool] + backend]`.
#[derive(Debug)]
pub struct BackendGauges {
    /// `(pool name, backend address)` per slot.
    names: Vec<(String, String)>,
    /// Index of each pool's first backend.
    offsets: Vec<usize>,
    /// Whether this shard's view has the backend up (1) or down (0).
    up: Vec<Counter>,
    /// Upstream connections connecting or carrying a request / TCP session.
    active: Vec<Counter>,
    /// Upgraded HTTP connections relaying to the backend (a gauge).
    tunnels: Vec<Counter>,
    /// Upgraded HTTP connections to the backend so far (with this
    /// configuration).
    upgrades: Vec<Counter>,
    /// Pools with health checks (the others are always up).
    checked: Vec<bool>,
    /// Whether this shard has the backend ejected (outlier ejection).
    ejected: Vec<Counter>,
    /// Ejections of the backend by this shard (with this configuration).
    ejections: Vec<Counter>,
}

impl BackendGauges {
    /// Every backend of `config`, up, no connections.
    pub fn new(config: &Config) -> BackendGauges {
        let mut names = Vec::new();
        let mut offsets = Vec::with_capacity(config.pools.len());
        for p in &config.pools {
            offsets.push(names.len());
            for b in &p.backends {
                names.push((p.name.clone(), b.address.to_string()));
            }
        }
        let up: Vec<Counter> = names.iter().map(|_| Counter::new()).collect();
        for c in &up {
            c.set(1);
        }
        BackendGauges {
            active: names.iter().map(|_| Counter::new()).collect(),
            tunnels: names.iter().map(|_| Counter::new()).collect(),
            upgrades: names.iter().map(|_| Counter::new()).collect(),
            ejected: names.iter().map(|_| Counter::new()).collect(),
            ejections: names.iter().map(|_| Counter::new()).collect(),
            up,
            names,
            offsets,
            checked: config.pools.iter().map(|p| p.health.is_some()).collect(),
        }
    }

    fn slot(&self, pool: usize, backend: usize) -> Option<usize> {
        let i = self.offsets.get(pool)? + backend;
        let end = self
            .offsets
            .get(pool + 1)
            .copied()
            .unwrap_or(self.names.len());
        (i < end).then_some(i)
    }

    /// One more (`true`) or one fewer active upstream connection to `(pool, backend)`.
    pub fn active(&self, pool: usize, backend: usize, more: bool) {
        if let Some(c) = self.slot(pool, backend).and_then(|i| self.active.get(i)) {
            if more {
                c.add(1);
            } else {
                c.sub(1);
            }
        }
    }

    /// An upgraded connection to `(pool, backend)` started (`open`) or ended;
    /// `current`: its indices are of the configuration these gauges are for
    /// (else nothing is counted: the gauges it was counted in are gone).
    pub fn tunnel(&self, pool: usize, backend: usize, open: bool, current: bool) {
        let Some(i) = self.slot(pool, backend).filter(|_| current) else {
            return;
        };
        if let (Some(t), Some(u)) = (self.tunnels.get(i), self.upgrades.get(i)) {
            if open {
                t.add(1);
                u.add(1);
            } else {
                t.sub(1);
            }
        }
    }

    /// This shard ejected `(pool, backend)` (`true`) or brought it back.
    pub fn set_ejected(&self, pool: usize, backend: usize, ejected: bool) {
        if let Some(c) = self.slot(pool, backend).and_then(|i| self.ejected.get(i)) {
            c.set(u64::from(ejected));
        }
    }

    /// This shard ejected `(pool, backend)` once more.
    pub fn ejection(&self, pool: usize, backend: usize) {
        if let Some(c) = self.slot(pool, backend).and_then(|i| self.ejections.get(i)) {
            c.add(1);
        }
    }

    /// This shard's view of `(pool, backend)` changed.
    pub fn set_up(&self, pool: usize, backend: usize, up: bool) {
        if let Some(c) = self.slot(pool, backend).and_then(|i| self.up.get(i)) {
            c.set(u64::from(up));
        }
    }
}

/// One shard's counters; only that shard writes them.
#[derive(Debug)]
pub struct ShardStats {
    /// Final responses sent to clients, by status class (the proxy's own
    /// answers included).
    requests: [Counter; 5],
    /// Latency histogram: `[bucket]` per [`LATENCY_BOUNDS`], then above them.
    latency: [Counter; LATENCY_BOUNDS.len() + 1],
    /// Sum of the observed latencies, in microseconds.
    latency_sum_us: Counter,
    /// Gauge: client connections (HTTP and TCP) open on this shard.
    pub clients: Counter,
    /// TLS passthrough clients by how their ClientHello ended, by
    /// [`TlsOutcome`] (in [`TlsOutcome::ALL`]'s order).
    tls_hellos: [Counter; 6],
    /// Connections closed by an idle timeout, by [`IdleKind`] (in
    /// [`IdleKind::ALL`]'s order).
    idle_closed: [Counter; 2],
    /// Requests (HTTP) or connections (TCP) refused by `rate_limit`, per
    /// listener (listeners are fixed at start), with the listener's configured
    /// address.
    rate_limited: Vec<(String, Counter)>,
    /// Gauge per listener: clients this shard's rate-limit table tracks.
    rate_clients: Vec<Counter>,
    /// The per-backend gauges of the configuration this shard serves.
    backends: Mutex<Arc<BackendGauges>>,
}

impl ShardStats {
    /// Zero, with gauges for `config`.
    pub fn new(config: &Config) -> ShardStats {
        ShardStats {
            requests: Default::default(),
            latency: Default::default(),
            latency_sum_us: Counter::new(),
            clients: Counter::new(),
            tls_hellos: Default::default(),
            idle_closed: Default::default(),
            rate_limited: config
                .listeners
                .iter()
                .map(|l| (l.address.to_string(), Counter::new()))
                .collect(),
            rate_clients: config.listeners.iter().map(|_| Counter::new()).collect(),
            backends: Mutex::new(Arc::new(BackendGauges::new(config))),
        }
    }

    /// A response with `status` was sent; `latency`: from the request head to
    /// the response's end (`None`: the head never completed, not observed).
    pub fn response(&self, status: u16, latency: Option<Duration>) {
        if let Some(c) = (status / 100)
            .checked_sub(1)
            .and_then(|i| self.requests.get(usize::from(i)))
        {
            c.add(1);
        }
        if let Some(d) = latency {
            let s = d.as_secs_f64();
            let i = LATENCY_BOUNDS
                .iter()
                .position(|&b| s <= b)
                .unwrap_or(LATENCY_BOUNDS.len());
            self.latency[i].add(1);
            self.latency_sum_us
                .add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        }
    }

    /// A TLS passthrough client's ClientHello ended with `outcome`.
    pub fn tls_hello(&self, outcome: TlsOutcome) {
        if let Some(i) = TlsOutcome::ALL.iter().position(|&o| o == outcome) {
            self.tls_hellos[i].add(1);
        }
    }

    /// A session was closed by the idle timeout of `kind`.
    pub fn idle_closed(&self, kind: IdleKind) {
        if let Some(i) = IdleKind::ALL.iter().position(|&k| k == kind) {
            self.idle_closed[i].add(1);
        }
    }

    /// A request or connection of listener `listener` was refused by its
    /// `rate_limit`.
    pub fn rate_limited(&self, listener: usize) {
        if let Some((_, c)) = self.rate_limited.get(listener) {
            c.add(1);
        }
    }

    /// This shard's rate-limit table of listener `listener` holds `n` clients.
    pub fn rate_clients(&self, listener: usize, n: usize) {
        if let Some(c) = self.rate_clients.get(listener) {
            c.set(n as u64);
        }
    }

    /// The gauges this shard writes now.
    pub fn backends(&self) -> Arc<BackendGauges> {
        self.backends
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Publishes gauges for a new configuration (the shard then writes those).
    pub fn replace_backends(&self, gauges: Arc<BackendGauges>) {
        *self.backends.lock().unwrap_or_else(|e| e.into_inner()) = gauges;
    }
}

/// Every shard's counters, shared by the shards and the admin endpoint. Each
/// shard adds its own when its handler is made (on its thread, before the
/// server reports it started).
#[derive(Debug, Default)]
pub struct ProxyStats {
    shards: PerShard<ShardStats>,
}

impl ProxyStats {
    /// New counters for shard `i` (replacing any it had), for `config`.
    pub fn add_shard(&self, i: usize, config: &Config) -> Arc<ShardStats> {
        self.shards.insert(i, ShardStats::new(config))
    }

    /// Writes the proxy's metrics (what `/metrics` shows after the framework's).
    pub fn render(&self, w: &mut PromWriter) {
        let shards = self.shards.snapshot();
        let mut latency = [0u64; LATENCY_BOUNDS.len() + 1];
        let mut sum_us = 0u64;
        for (i, s) in &shards {
            let shard = i.to_string();
            for (class, c) in CLASSES.iter().zip(&s.requests) {
                w.counter(
                    "shardline_proxy_requests_total",
                    "Responses sent to clients by status class (the proxy's own error \
                     answers included), per shard.",
                    &[("shard", shard.as_str()), ("class", class)],
                    c.get(),
                );
            }
            w.gauge(
                "shardline_proxy_client_connections",
                "Client connections (HTTP and TCP) open on this shard.",
                &[("shard", shard.as_str())],
                s.clients.get() as i64,
            );
            for (outcome, c) in TlsOutcome::ALL.iter().zip(&s.tls_hellos) {
                w.counter(
                    "shardline_proxy_tls_hellos_total",
                    "Clients of TLS passthrough listeners by how their ClientHello ended: \
                     routed, no_route (no SNI route and no default pool), not_tls, malformed, \
                     timeout (tls_hello_ms), incomplete (the client left first), per shard.",
                    &[("shard", shard.as_str()), ("outcome", outcome.label())],
                    c.get(),
                );
            }
            for (kind, c) in IdleKind::ALL.iter().zip(&s.idle_closed) {
                w.counter(
                    "shardline_proxy_idle_closed_total",
                    "Connections closed because neither side sent a byte for the idle timeout: \
                     tcp (L4 sessions, tcp_idle_ms) or upgrade (upgraded HTTP connections, \
                     upgrade_idle_ms), per shard.",
                    &[("shard", shard.as_str()), ("kind", kind.label())],
                    c.get(),
                );
            }
            for (i, (addr, c)) in s.rate_limited.iter().enumerate() {
                let index = i.to_string();
                w.counter(
                    "shardline_proxy_rate_limited_total",
                    "Requests (http listeners: answered 429) or connections (tcp listeners: \
                     closed at accept) refused by the listener's rate_limit, per shard; \
                     listener is the listener's index in the configuration, address its \
                     configured address.",
                    &[
                        ("shard", shard.as_str()),
                        ("listener", index.as_str()),
                        ("address", addr.as_str()),
                    ],
                    c.get(),
                );
                let tracked = s.rate_clients.get(i).map_or(0, |c| c.get());
                w.gauge(
                    "shardline_proxy_rate_limit_clients",
                    "Client addresses (IPv6: /64 prefixes) the listener's rate-limit table \
                     holds on this shard (at most its max_clients).",
                    &[
                        ("shard", shard.as_str()),
                        ("listener", index.as_str()),
                        ("address", addr.as_str()),
                    ],
                    tracked as i64,
                );
            }
            for (sum, c) in latency.iter_mut().zip(&s.latency) {
                *sum += c.get();
            }
            sum_us += s.latency_sum_us.get();
        }
        w.histogram(
            "shardline_proxy_request_duration_seconds",
            "From a request's head to the end of its response (or the proxy's own \
             answer), all shards.",
            &[],
            &LATENCY_BOUNDS,
            &latency,
            sum_us as f64 / 1e6,
        );
        render_backends(w, &shards);
    }
}

/// Health as the pool's checker shard sees it, and active upstream connections
/// summed over the shards that serve the same configuration as the checker.
fn render_backends(w: &mut PromWriter, shards: &[(usize, Arc<ShardStats>)]) {
    let gauges: Vec<Arc<BackendGauges>> = shards.iter().map(|(_, s)| s.backends()).collect();
    let Some(first) = gauges.first() else {
        return;
    };
    for (p, &offset) in first.offsets.iter().enumerate() {
        let end = first
            .offsets
            .get(p + 1)
            .copied()
            .unwrap_or(first.names.len());
        let pool = first.names.get(offset).map_or("", |n| n.0.as_str());
        let checker = checker_of(pool, gauges.len());
        for i in offset..end {
            let (pool, backend) = &first.names[i];
            let labels = [("pool", pool.as_str()), ("backend", backend.as_str())];
            // Shards on another configuration (mid-reload) have another layout.
            let same: Vec<&Arc<BackendGauges>> = gauges
                .iter()
                .filter(|g| g.names.get(i) == Some(&first.names[i]))
                .collect();
            let up = if first.checked.get(p).copied().unwrap_or(false) {
                gauges
                    .get(checker)
                    .filter(|g| g.names.get(i) == Some(&first.names[i]))
                    .map_or(1, |g| g.up[i].get())
            } else {
                1
            };
            w.gauge(
                "shardline_proxy_backend_up",
                "Whether the backend is up (1) or down (0), as its pool's health checker sees it.",
                &labels,
                up,
            );
            let active: i64 = same.iter().map(|g| g.active[i].get() as i64).sum();
            w.gauge(
                "shardline_proxy_backend_active_connections",
                "Upstream connections to the backend connecting or carrying a request, a \
                 TCP session or an upgraded connection, all shards.",
                &labels,
                active,
            );
            let tunnels: i64 = same.iter().map(|g| g.tunnels[i].get() as i64).sum();
            w.gauge(
                "shardline_proxy_backend_tunnels",
                "Upgraded HTTP connections (101 Switching Protocols: WebSocket, ...) relaying \
                 to the backend, all shards.",
                &labels,
                tunnels,
            );
            let ejected: i64 = same.iter().map(|g| g.ejected[i].get() as i64).sum();
            w.gauge(
                "shardline_proxy_backend_ejected",
                "Shards that have the backend ejected now (outlier ejection is per shard: \
                 0 ..= shards).",
                &labels,
                ejected,
            );
            let ejections: u64 = same.iter().map(|g| g.ejections[i].get()).sum();
            w.counter(
                "shardline_proxy_backend_ejections_total",
                "Outlier ejections of the backend, all shards (restarts at a reload).",
                &labels,
                ejections,
            );
            let upgrades: u64 = same.iter().map(|g| g.upgrades[i].get()).sum();
            w.counter(
                "shardline_proxy_backend_upgrades_total",
                "HTTP connections the backend upgraded (101 Switching Protocols), all shards \
                 (restarts at a reload).",
                &labels,
                upgrades,
            );
        }
    }
}
