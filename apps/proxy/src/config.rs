//! Configuration: the TOML file (`--config proxy.toml`), the zero-config quick start
//! (`--listen … --backend …`), and their validation into [`Config`], where every
//! pool a listener or route names has been resolved to an index.
//!
//! ```toml
//! [[listener]]
//! address = "127.0.0.1:8080"
//! mode = "http"            # or "tcp"
//! pool = "web"             # tcp: required; http: used when no route matches
//!
//! [[listener.route]]
//! host = "api.example.com" # optional; any host if absent
//! path_prefix = "/v1/"     # optional; "/" if absent
//! pool = "api"
//!
//! [[listener]]
//! address = "127.0.0.1:8443"
//! mode = "tcp"
//! tls_passthrough = true   # route by the ClientHello's server name (SNI)
//! pool = "web"             # optional with sni: no SNI or no match (else close)
//! sni = { "a.example.com" = "api", "*.example.org" = "web" }
//!
//! [pool.web]
//! backends = [{ address = "127.0.0.1:9001", weight = 2 }, { address = "127.0.0.1:9002" }]
//! ```

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::Path, str::FromStr};

use rustc_hash::FxHashMap;
use serde::Deserialize;

use crate::sni;

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Layer 4: bytes relayed both ways to one backend per connection.
    Tcp,
    /// HTTP/1.1 reverse proxy: per request routing, keep-alive pools.
    Http,
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Mode::Tcp),
            "http" => Ok(Mode::Http),
            other => Err(format!("unknown mode {other:?} (expected tcp or http)")),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Tcp => "tcp",
            Mode::Http => "http",
        })
    }
}

/// How a pool picks a backend (see [`crate::balance`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BalanceKind {
    /// Each backend in turn; weights ignored.
    #[default]
    RoundRobin,
    /// nginx's smooth weighted round-robin.
    WeightedRoundRobin,
    /// Fewest active upstream requests/connections per weight, per shard.
    LeastConnections,
    /// The less loaded of two random backends.
    PowerOfTwoChoices,
    /// A hash ring keyed by client IP or a header.
    ConsistentHash,
}

/// A configuration that cannot be used, with what to change.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown keys included).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The configuration has no `[[listener]]`.
    #[error("no listener: add a [[listener]] with an address and a mode (or use --listen)")]
    NoListener,
    /// A listener, route or default names a pool that is not defined.
    #[error("{what} uses pool {pool:?}, which is not defined (add [pool.{pool}])")]
    UnknownPool {
        /// Which listener or route.
        what: String,
        /// The missing name.
        pool: String,
    },
    /// A pool has no backends.
    #[error("pool {0:?} has no backends")]
    EmptyPool(String),
    /// A backend's weight is 0.
    #[error("pool {pool:?}: backend {address} has weight 0 (weights start at 1)")]
    ZeroWeight {
        /// The pool.
        pool: String,
        /// The backend.
        address: SocketAddr,
    },
    /// A backend's weight is over [`MAX_WEIGHT`].
    #[error("pool {pool:?}: backend {address}: weight {weight} is over the limit of {MAX_WEIGHT}")]
    WeightOverLimit {
        /// The pool.
        pool: String,
        /// The backend.
        address: SocketAddr,
        /// The weight given.
        weight: u32,
    },
    /// A TCP listener without a pool (and, with `tls_passthrough`, without
    /// `sni` routes either).
    #[error("tcp listener {0} needs a pool (or, with tls_passthrough = true, sni routes)")]
    TcpWithoutPool(SocketAddr),
    /// `tls_passthrough` or `sni` on an HTTP listener.
    #[error(
        "http listener {0} has tls_passthrough or sni; SNI routing is for tcp listeners \
         (mode = \"tcp\", tls_passthrough = true)"
    )]
    TlsOnHttp(SocketAddr),
    /// `tls_passthrough` and `[listener.tls]` on one listener.
    #[error(
        "listener {0} has both tls_passthrough and [listener.tls]: pass the clients' TLS \
         through (routed by SNI) or terminate it, not both"
    )]
    PassthroughAndTermination(SocketAddr),
    /// A pool of a passthrough listener opens TLS to its backends.
    #[error(
        "tls_passthrough listener {listener} relays to pool {pool:?}, which has tls = true: \
         the clients' TLS would be wrapped in the proxy's; give the listener pools without tls"
    )]
    PassthroughToTlsPool {
        /// The listener.
        listener: SocketAddr,
        /// The pool.
        pool: String,
    },
    /// An `sni` table without `tls_passthrough = true`.
    #[error("tcp listener {0} has sni routes but not tls_passthrough = true")]
    SniWithoutPassthrough(SocketAddr),
    /// An `sni` key that is neither a host name nor `*.` and a host name.
    #[error(
        "listener {listener}: sni pattern {pattern:?} {why} (expected a host name such as \
         \"a.example.com\", or \"*.example.com\" for one more label)"
    )]
    BadSniPattern {
        /// The listener.
        listener: SocketAddr,
        /// The key given.
        pattern: String,
        /// What is wrong with it.
        why: String,
    },
    /// Two `sni` keys naming the same pattern (they differ only in case).
    #[error("listener {listener}: sni patterns {first:?} and {second:?} are the same")]
    DuplicateSniPattern {
        /// The listener.
        listener: SocketAddr,
        /// One key.
        first: String,
        /// The other.
        second: String,
    },
    /// Routes on a TCP listener (they only mean something for HTTP).
    #[error("tcp listener {0} has routes; routes are for http listeners")]
    TcpWithRoutes(SocketAddr),
    /// An HTTP listener that can route nothing.
    #[error("http listener {0} has neither a pool nor routes")]
    HttpWithoutPool(SocketAddr),
    /// A route's path prefix does not start with '/'.
    #[error("listener {listener}: route path_prefix {prefix:?} must start with '/'")]
    BadPrefix {
        /// The listener.
        listener: SocketAddr,
        /// The prefix given.
        prefix: String,
    },
    /// Two listeners on one address.
    #[error("two listeners on {0}")]
    DuplicateListener(SocketAddr),
    /// A limit or timeout out of range.
    #[error("{0}")]
    BadLimit(String),
    /// The quick start was given no backend.
    #[error("no backend: give --backend ADDR (repeatable) or --config FILE")]
    NoBackend,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default, rename = "listener")]
    listeners: Vec<RawListener>,
    #[serde(default, rename = "pool")]
    pools: BTreeMap<String, RawPool>,
    #[serde(default)]
    timeouts: Timeouts,
    #[serde(default)]
    limits: ProxyLimits,
    admin: Option<RawAdmin>,
    #[serde(default)]
    log: crate::access::LogConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: SocketAddr,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListener {
    address: SocketAddr,
    mode: Mode,
    pool: Option<String>,
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
    tls: Option<crate::tls::RawListenerTls>,
    #[serde(default)]
    tls_passthrough: bool,
    #[serde(default)]
    sni: BTreeMap<String, String>,
    #[serde(default)]
    proxy_protocol: bool,
    #[serde(default)]
    proxy_protocol_trusted: Vec<String>,
    rate_limit: Option<RateLimit>,
}

/// `rate_limit = { requests_per_second = R, burst = B }` on a listener: per
/// client address (IPv6: per /64), per shard, GCRA ([`crate::limit`]). HTTP
/// listeners count requests (over the limit: 429 with `Retry-After`), TCP
/// listeners connections (over the limit: closed at accept).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained rate per client, per shard (0.001 ..= 1 000 000).
    pub requests_per_second: f64,
    /// Requests a quiet client may make at once (1 ..= 1 000 000).
    pub burst: u32,
    /// Clients tracked per shard for this listener (1 ..= 16 777 216;
    /// default 65 536): past it the table evicts (see [`crate::limit`]).
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
}

fn default_queue() -> usize {
    100
}

fn default_queue_timeout_ms() -> u64 {
    5_000
}

fn default_max_clients() -> usize {
    65_536
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    host: Option<String>,
    path_prefix: Option<String>,
    pool: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    backends: Vec<Backend>,
    #[serde(default)]
    balance: BalanceKind,
    hash_header: Option<String>,
    #[serde(default)]
    fail_open: bool,
    health: Option<HealthCheck>,
    outlier: Option<Outlier>,
    max_connections_per_backend: Option<u32>,
    #[serde(default = "default_queue")]
    queue: usize,
    #[serde(default = "default_queue_timeout_ms")]
    queue_timeout_ms: u64,
    // TLS to the backends (crate::tls).
    #[serde(default)]
    tls: bool,
    tls_ca: Option<std::path::PathBuf>,
    tls_server_name: Option<String>,
    tls_client_cert: Option<std::path::PathBuf>,
    tls_client_key: Option<std::path::PathBuf>,
    send_proxy_protocol: Option<ProxyVersion>,
}

/// Which PROXY protocol header a pool's upstream connections start with
/// (`send_proxy_protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    /// The text line (`PROXY TCP4 ...`).
    V1,
    /// The binary header.
    V2,
}

/// What an active health check does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// A TCP connect that succeeds.
    #[default]
    Tcp,
    /// `GET path` answered with a 2xx status.
    Http,
}

/// `[pool.NAME.health]`: active checks (and passive accounting) for a pool.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    /// TCP connect or HTTP GET.
    pub kind: CheckKind,
    /// HTTP: the path to GET.
    pub path: String,
    /// Time between probes of a backend.
    pub interval_ms: u64,
    /// A probe not done within this failed.
    pub timeout_ms: u64,
    /// Consecutive successful probes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures (probes or passive) that take an up backend down.
    pub fall: u32,
}

impl Default for HealthCheck {
    fn default() -> HealthCheck {
        HealthCheck {
            kind: CheckKind::Tcp,
            path: "/".into(),
            interval_ms: 2000,
            timeout_ms: 1000,
            rise: 2,
            fall: 3,
        }
    }
}

/// `[pool.NAME.outlier]`: outlier ejection, per shard ([`crate::pools`]).
/// `consecutive_failures` failures in a row of one backend on one shard (5xx
/// responses, connect failures and timeouts, as health's passive accounting
/// counts them) take it out of that shard's balancing for
/// `base_ejection_ms × (times ejected)`, at most `max_ejection_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outlier {
    /// Failures in a row (on one shard) that eject a backend.
    pub consecutive_failures: u32,
    /// The first ejection's length; the n-th lasts n times this.
    pub base_ejection_ms: u64,
    /// The longest ejection.
    pub max_ejection_ms: u64,
    /// At most this share of the pool's backends is ejected at once (on one
    /// shard), rounded down.
    pub max_ejected_percent: u32,
}

impl Default for Outlier {
    fn default() -> Outlier {
        Outlier {
            consecutive_failures: 5,
            base_ejection_ms: 10_000,
            max_ejection_ms: 300_000,
            max_ejected_percent: 50,
        }
    }
}

/// The largest backend weight accepted (HAProxy's limit too): weights are
/// relative shares, and 1..=256 expresses any useful ratio between two
/// backends while keeping what a weight sizes (the consistent-hash ring, see
/// [`crate::balance::MAX_RING_POINTS`]) small.
pub const MAX_WEIGHT: u32 = 256;

/// One upstream server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Where it listens.
    pub address: SocketAddr,
    /// Relative share of the traffic (used by weighted balancing; default 1;
    /// 1..=[`MAX_WEIGHT`]).
    #[serde(default = "one", deserialize_with = "weight")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// A weight as TOML gives it (an i64): one past `u32` is refused here, naming
/// the limit (the rest of the range is checked with the pool's name in
/// [`Config::validate`]).
fn weight<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let w = i64::deserialize(d)?;
    u32::try_from(w).map_err(|_| {
        serde::de::Error::custom(format!("weight {w} is out of range 1..={MAX_WEIGHT}"))
    })
}

/// Timeouts, in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// A client must send a complete request head within this (else 408).
    pub client_header_ms: u64,
    /// A backend must answer (response head) within this after the request was
    /// sent (else 504).
    pub backend_response_ms: u64,
    /// An outbound connect that takes longer is abandoned (next backend, else 504).
    pub connect_ms: u64,
    /// An idle pooled upstream connection is closed after this.
    pub upstream_idle_ms: u64,
    /// An idle client keep-alive connection is closed after this.
    pub client_idle_ms: u64,
    /// A request with `Expect: 100-continue` whose backend has sent neither a
    /// `100 Continue` nor a final response this long after it got the head gets
    /// a `100 Continue` from the proxy, so the client sends its body.
    pub expect_continue_ms: u64,
    /// A client that sends no byte of its request body for this long while the
    /// proxy waits for it gets 408 and is closed (nginx's
    /// `client_body_timeout`: time without progress, not for the whole body).
    /// Never counted against the backend.
    pub client_body_ms: u64,
    /// A TLS passthrough listener's client must send its whole ClientHello
    /// within this after it connected, else it is closed. Also the deadline
    /// for the whole PROXY protocol header on a listener with
    /// `proxy_protocol = true` (counted from the accept).
    pub tls_hello_ms: u64,
    /// An L4 session (tcp listener) in which neither side sent a byte for this
    /// long is closed, both sides (nginx stream's `proxy_timeout`, HAProxy's
    /// `timeout client`/`server` in TCP mode). Spliced traffic counts.
    pub tcp_idle_ms: u64,
    /// The same for an HTTP connection upgraded by a `101 Switching
    /// Protocols` (a WebSocket, say): HAProxy's `timeout tunnel`.
    pub upgrade_idle_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            client_header_ms: 10_000,
            backend_response_ms: 30_000,
            connect_ms: 5_000,
            upstream_idle_ms: 60_000,
            client_idle_ms: 60_000,
            expect_continue_ms: 300,
            client_body_ms: 60_000,
            tls_hello_ms: 5_000,
            tcp_idle_ms: 600_000,
            upgrade_idle_ms: 3_600_000,
        }
    }
}

/// Sizes and counts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyLimits {
    /// Largest request head (request line and headers) accepted (else 431).
    pub max_header_bytes: usize,
    /// Most headers in a request or response.
    pub max_headers: usize,
    /// Largest request body (else 413).
    pub max_body_bytes: u64,
    /// Idle upstream connections kept per backend, per shard.
    pub max_idle_per_backend: usize,
    /// Connect attempts per client connection or request, each to the next backend
    /// (bounded by the pool size).
    pub connect_attempts: u32,
    /// Bytes queued to one side before the other side stops being read.
    pub send_high_water: usize,
    /// Most client connections the proxy holds (split evenly over the shards);
    /// at the cap a shard stops accepting and new clients wait in the listen
    /// backlog until some close. `None`: from the sockets each shard may hold
    /// (see [`FD_RESERVE`]).
    pub max_connections: Option<usize>,
    /// L4 relaying through kernel pipes (splice) for bulk transfers.
    pub splice: SpliceMode,
    /// Pipes each shard may use for splice at once (two fds each); a bulk
    /// direction finding none keeps copying. Fixed at start.
    pub splice_pipes: usize,
}

/// Sockets kept aside from the default connection cap for listeners' armed
/// accepts, the admin endpoint, health checks, idle pooled upstreams and the
/// rest. Without `max_connections` each shard holds (its sockets − this) ÷ 2
/// clients (a proxied client costs two sockets: itself and its upstream),
/// where its sockets are its io_uring file table (RLIMIT_NOFILE slots per
/// shard with direct descriptors) or its share of RLIMIT_NOFILE (ordinary fds,
/// shared by the process): see `ServerBuilder::max_connections_from_sockets`.
pub const FD_RESERVE: u64 = 256;

/// When an L4 session relays a direction with splice instead of copying it
/// through the proxy (`[limits] splice`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SpliceMode {
    /// Where it was measured to save CPU (`shardline-bench l4`): today both
    /// backends, for a direction whose reads come in full (bulk).
    #[default]
    Auto,
    /// On every backend, for a direction whose reads come in full.
    Always,
    /// Always copy.
    Never,
}

impl Default for ProxyLimits {
    fn default() -> ProxyLimits {
        ProxyLimits {
            max_header_bytes: 16 << 10,
            max_headers: 100,
            max_body_bytes: 1 << 30,
            max_idle_per_backend: 64,
            connect_attempts: 3,
            send_high_water: 256 << 10,
            max_connections: None,
            splice: SpliceMode::Auto,
            splice_pipes: 64,
        }
    }
}

/// A listener, validated.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Address to listen on.
    pub address: SocketAddr,
    /// What it speaks.
    pub mode: Mode,
    /// Pool used when no route matches (always set for TCP).
    pub pool: Option<usize>,
    /// HTTP routes.
    pub routes: Vec<Route>,
    /// TLS termination (`[listener.tls]`).
    pub tls: Option<crate::tls::ListenerTls>,
    /// TCP with `tls_passthrough`: the pool is chosen by the ClientHello's
    /// server name (`pool` is then the default, if any).
    pub sni: Option<SniRoutes>,
    /// `proxy_protocol = true`: every connection starts with a PROXY header
    /// (v1 or v2), accepted only from these sources
    /// (`proxy_protocol_trusted`); others are refused.
    pub proxy_protocol: Option<Vec<shardline::proxy_protocol::Cidr>>,
    /// `rate_limit`: per client address, per shard ([`crate::limit`]).
    pub rate_limit: Option<RateLimit>,
}

/// A TLS passthrough listener's routes by server name: exact names, and
/// wildcards `*.suffix` that match one more label than `suffix`. An exact
/// name beats a wildcard.
#[derive(Debug, Clone, Default)]
pub struct SniRoutes {
    /// Lower-case host name → pool index.
    exact: FxHashMap<String, usize>,
    /// Lower-case suffix (the pattern without `*.`) → pool index.
    wildcard: FxHashMap<String, usize>,
}

impl SniRoutes {
    /// The pool for `name` (a lower-case host name, as [`crate::sni`] gives
    /// it): its exact route, else the wildcard of its parent domain.
    pub fn lookup(&self, name: &str) -> Option<usize> {
        if let Some(&pool) = self.exact.get(name) {
            return Some(pool);
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).copied()
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// No routes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pools routed to (with repeats).
    pub fn pools(&self) -> impl Iterator<Item = usize> + '_ {
        self.exact.values().chain(self.wildcard.values()).copied()
    }
}

/// An `sni` key: `(is_wildcard, lower-case name or suffix)`, or what is wrong.
fn sni_pattern(pattern: &str) -> Result<(bool, String), String> {
    let (wildcard, name) = match pattern.strip_prefix("*.") {
        Some(suffix) => (true, suffix),
        None => (false, pattern),
    };
    match sni::host_name(name.as_bytes()) {
        Ok(n) => Ok((wildcard, n)),
        Err(sni::NameError::BadByte(b'*')) => {
            Err("has a '*' other than a leading \"*.\"".to_string())
        }
        Err(e) => Err(format!("is not a host name: {e}")),
    }
}

/// An HTTP route: requests for `host` (any if `None`) whose path starts with
/// `path_prefix` go to `pool`. The most specific match wins: a named host over
/// any host, then the longest prefix.
#[derive(Debug, Clone)]
pub struct Route {
    /// Lower-case host without port.
    pub host: Option<String>,
    /// Path prefix, starting with '/'.
    pub path_prefix: String,
    /// Index into [`Config::pools`].
    pub pool: usize,
}

/// A pool of backends, validated.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    /// The name it was given.
    pub name: String,
    /// Its backends.
    pub backends: Vec<Backend>,
    /// How to pick one.
    pub balance: BalanceKind,
    /// Consistent hash in HTTP mode: hash this request header (lower-case name)
    /// instead of the client IP (a request without it hashes its client IP).
    pub hash_header: Option<String>,
    /// When every backend is down: use them all anyway (`true`) or answer 503 /
    /// close (`false`).
    pub fail_open: bool,
    /// Active and passive health checks; `None`: every backend always up.
    pub health: Option<HealthCheck>,
    /// Outlier ejection (`[pool.NAME.outlier]`); `None`: never ejected.
    pub outlier: Option<Outlier>,
    /// HTTP: upstream connections in use per backend, for the whole proxy
    /// (each shard allows `ceil(N / shards)`, see [`crate::http`]); `None`:
    /// no cap. TCP listeners skip backends at their cap and close the client
    /// when all are.
    pub max_connections_per_backend: Option<u32>,
    /// HTTP requests that wait, per shard, when every backend is at its cap
    /// (past it: 503).
    pub queue: usize,
    /// How long a request may wait in the queue (then 503 with `Retry-After`).
    pub queue_timeout_ms: u64,
    /// TLS to the backends (`tls = true`).
    pub tls: Option<crate::tls::PoolTls>,
    /// Upstream connections start with this PROXY header (the client's
    /// addresses); such connections are never pooled.
    pub send_proxy_protocol: Option<ProxyVersion>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listeners, in file order.
    pub listeners: Vec<Listener>,
    /// Pools, sorted by name.
    pub pools: Vec<Pool>,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Limits.
    pub limits: ProxyLimits,
    /// `[admin] listen`: where the admin endpoint serves `/metrics`.
    pub admin_listen: Option<SocketAddr>,
    /// `[log]`: the access log's format and file ([`crate::access`]).
    pub log: crate::access::LogConfig,
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Config::parse_in(&text, &shown, path.parent())
    }

    /// Parses and validates TOML text; `origin` names it in errors. Relative
    /// file names in it (certificates) are relative to the working directory.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::parse_in(text, origin, None)
    }

    /// [`parse`](Config::parse), with relative file names relative to `base`.
    pub fn parse_in(text: &str, origin: &str, base: Option<&Path>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        Config::validate(raw, base)
    }

    /// Terminates TLS on every listener with one certificate (the quick start's
    /// `--tls-cert` / `--tls-key`).
    pub fn with_tls_everywhere(mut self, cert: &Path, key: &Path) -> Config {
        for l in &mut self.listeners {
            l.tls = Some(crate::tls::ListenerTls::single(cert, key, l.mode));
        }
        self
    }

    /// The quick start: every address in `listen` in `mode`, to one round-robin
    /// pool ("default") of `backends`, each of weight 1.
    pub fn quick_start(
        listen: &[SocketAddr],
        backends: &[SocketAddr],
        mode: Mode,
    ) -> Result<Config, ConfigError> {
        if backends.is_empty() {
            return Err(ConfigError::NoBackend);
        }
        let raw = RawConfig {
            listeners: listen
                .iter()
                .map(|&address| RawListener {
                    address,
                    mode,
                    pool: Some("default".into()),
                    routes: Vec::new(),
                    tls: None,
                    tls_passthrough: false,
                    sni: BTreeMap::new(),
                    proxy_protocol: false,
                    proxy_protocol_trusted: Vec::new(),
                    rate_limit: None,
                })
                .collect(),
            pools: BTreeMap::from([(
                "default".to_string(),
                RawPool {
                    backends: backends
                        .iter()
                        .map(|&address| Backend { address, weight: 1 })
                        .collect(),
                    balance: BalanceKind::RoundRobin,
                    hash_header: None,
                    fail_open: false,
                    health: None,
                    outlier: None,
                    max_connections_per_backend: None,
                    queue: default_queue(),
                    queue_timeout_ms: default_queue_timeout_ms(),
                    tls: false,
                    tls_ca: None,
                    tls_server_name: None,
                    tls_client_cert: None,
                    tls_client_key: None,
                    send_proxy_protocol: None,
                },
            )]),
            timeouts: Timeouts::default(),
            limits: ProxyLimits::default(),
            admin: None,
            log: Default::default(),
        };
        Config::validate(raw, None)
    }

    fn validate(raw: RawConfig, base: Option<&Path>) -> Result<Config, ConfigError> {
        if raw.listeners.is_empty() {
            return Err(ConfigError::NoListener);
        }
        let names: Vec<&String> = raw.pools.keys().collect();
        let index_of = |what: String, pool: &str| -> Result<usize, ConfigError> {
            names
                .iter()
                .position(|n| n.as_str() == pool)
                .ok_or_else(|| ConfigError::UnknownPool {
                    what,
                    pool: pool.to_string(),
                })
        };
        let mut pools = Vec::with_capacity(raw.pools.len());
        for (name, p) in &raw.pools {
            if p.backends.is_empty() {
                return Err(ConfigError::EmptyPool(name.clone()));
            }
            if let Some(b) = p.backends.iter().find(|b| b.weight == 0) {
                return Err(ConfigError::ZeroWeight {
                    pool: name.clone(),
                    address: b.address,
                });
            }
            if let Some(b) = p.backends.iter().find(|b| b.weight > MAX_WEIGHT) {
                return Err(ConfigError::WeightOverLimit {
                    pool: name.clone(),
                    address: b.address,
                    weight: b.weight,
                });
            }
            if p.hash_header.is_some() && p.balance != BalanceKind::ConsistentHash {
                return Err(ConfigError::BadLimit(format!(
                    "pool {name:?}: hash_header needs balance = \"consistent-hash\""
                )));
            }
            if let Some(h) = &p.hash_header {
                if h.is_empty() || !h.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                    return Err(ConfigError::BadLimit(format!(
                        "pool {name:?}: hash_header {h:?} is not a header name"
                    )));
                }
            }
            if let Some(h) = &p.health {
                if h.interval_ms == 0 || h.timeout_ms == 0 || h.rise == 0 || h.fall == 0 {
                    return Err(ConfigError::BadLimit(format!(
                        "pool {name:?}: health interval_ms, timeout_ms, rise and fall must be at least 1"
                    )));
                }
                if !h.path.starts_with('/') || h.path.bytes().any(|b| !b.is_ascii_graphic()) {
                    return Err(ConfigError::BadLimit(format!(
                        "pool {name:?}: health path {:?} must start with '/' and hold no spaces",
                        h.path
                    )));
                }
            }
            if let Some(o) = &p.outlier {
                if !(1..=1_000_000).contains(&o.consecutive_failures) {
                    return Err(ConfigError::BadLimit(format!(
                        "pool {name:?}: outlier.consecutive_failures must be 1..=1000000"
                    )));
                }
                if o.base_ejection_ms == 0 || o.max_ejection_ms < o.base_ejection_ms {
                    return Err(ConfigError::BadLimit(format!(
                        "pool {name:?}: outlier.base_ejection_ms must be at least 1 and \
                         max_ejection_ms at least base_ejection_ms"
                    )));
                }
                if o.max_ejection_ms > 86_400_000 {
                    return Err(ConfigError::BadLimit(format!(
                        "pool {name:?}: outlier.max_ejection_ms must be at most 86400000 (a day)"
                    )));
                }
                if o.max_ejected_percent > 100 {
                    return Err(ConfigError::BadLimit(format!(
                        "pool {name:?}: outlier.max_ejected_percent must be 0..=100"
                    )));
                }
            }
            if p.max_connections_per_backend == Some(0)
                || p.max_connections_per_backend > Some(1_000_000)
            {
                return Err(ConfigError::BadLimit(format!(
                    "pool {name:?}: max_connections_per_backend must be 1..=1000000"
                )));
            }
            if p.queue > 1_000_000 {
                return Err(ConfigError::BadLimit(format!(
                    "pool {name:?}: queue must be 0..=1000000"
                )));
            }
            if p.queue_timeout_ms == 0 {
                return Err(ConfigError::BadLimit(format!(
                    "pool {name:?}: queue_timeout_ms must be at least 1"
                )));
            }
            let tls = crate::tls::RawPoolTls {
                tls: p.tls,
                tls_ca: p.tls_ca.clone(),
                tls_server_name: p.tls_server_name.clone(),
                tls_client_cert: p.tls_client_cert.clone(),
                tls_client_key: p.tls_client_key.clone(),
            }
            .validate(name, base)?;
            if p.send_proxy_protocol.is_some() && tls.is_some() {
                return Err(ConfigError::BadLimit(format!(
                    "pool {name:?}: send_proxy_protocol with tls = true is not supported \
                     (the header would have to precede the TLS handshake)"
                )));
            }
            pools.push(Pool {
                name: name.clone(),
                backends: p.backends.clone(),
                balance: p.balance,
                hash_header: p.hash_header.as_ref().map(|h| h.to_ascii_lowercase()),
                fail_open: p.fail_open,
                health: p.health.clone(),
                outlier: p.outlier.clone(),
                max_connections_per_backend: p.max_connections_per_backend,
                queue: p.queue,
                queue_timeout_ms: p.queue_timeout_ms,
                tls,
                send_proxy_protocol: p.send_proxy_protocol,
            });
        }
        let mut listeners = Vec::with_capacity(raw.listeners.len());
        for l in &raw.listeners {
            if listeners
                .iter()
                .any(|x: &Listener| x.address == l.address && l.address.port() != 0)
            {
                return Err(ConfigError::DuplicateListener(l.address));
            }
            let pool = match &l.pool {
                Some(p) => Some(index_of(format!("listener {}", l.address), p)?),
                None => None,
            };
            let mut routes = Vec::with_capacity(l.routes.len());
            for r in &l.routes {
                let prefix = r.path_prefix.clone().unwrap_or_else(|| "/".into());
                if !prefix.starts_with('/') {
                    return Err(ConfigError::BadPrefix {
                        listener: l.address,
                        prefix,
                    });
                }
                routes.push(Route {
                    host: r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                    path_prefix: prefix,
                    pool: index_of(format!("a route of listener {}", l.address), &r.pool)?,
                });
            }
            let sni = match l.mode {
                Mode::Http if l.tls_passthrough || !l.sni.is_empty() => {
                    return Err(ConfigError::TlsOnHttp(l.address))
                }
                Mode::Tcp if !l.tls_passthrough && !l.sni.is_empty() => {
                    return Err(ConfigError::SniWithoutPassthrough(l.address))
                }
                Mode::Tcp if l.tls_passthrough => {
                    Some(sni_routes(l, |what, pool| index_of(what, pool))?)
                }
                _ => None,
            };
            if l.tls_passthrough && l.tls.is_some() {
                return Err(ConfigError::PassthroughAndTermination(l.address));
            }
            if let Some(routes) = &sni {
                for p in routes.pools().chain(pool) {
                    if let Some(named) = pools.get(p).filter(|named| named.tls.is_some()) {
                        return Err(ConfigError::PassthroughToTlsPool {
                            listener: l.address,
                            pool: named.name.clone(),
                        });
                    }
                }
            }
            let no_sni = sni.as_ref().is_none_or(SniRoutes::is_empty);
            match l.mode {
                Mode::Tcp if pool.is_none() && no_sni => {
                    return Err(ConfigError::TcpWithoutPool(l.address))
                }
                Mode::Tcp if !routes.is_empty() => {
                    return Err(ConfigError::TcpWithRoutes(l.address))
                }
                Mode::Http if pool.is_none() && routes.is_empty() => {
                    return Err(ConfigError::HttpWithoutPool(l.address))
                }
                _ => {}
            }
            let tls = match &l.tls {
                Some(t) => Some(t.validate(l.address, l.mode, base)?),
                None => None,
            };
            let proxy_protocol = match (l.proxy_protocol, l.proxy_protocol_trusted.is_empty()) {
                (false, true) => None,
                (false, false) => {
                    return Err(ConfigError::BadLimit(format!(
                        "listener {}: proxy_protocol_trusted without proxy_protocol = true",
                        l.address
                    )))
                }
                (true, true) => {
                    return Err(ConfigError::BadLimit(format!(
                        "listener {}: proxy_protocol = true needs proxy_protocol_trusted, the \
                         addresses allowed to send headers (e.g. [\"10.0.0.0/8\"]; \
                         \"0.0.0.0/0\" and \"::/0\" trust everyone)",
                        l.address
                    )))
                }
                (true, false) => Some(
                    l.proxy_protocol_trusted
                        .iter()
                        .map(|c| c.parse())
                        .collect::<Result<Vec<_>, String>>()
                        .map_err(|e| {
                            ConfigError::BadLimit(format!(
                                "listener {}: proxy_protocol_trusted: {e}",
                                l.address
                            ))
                        })?,
                ),
            };
            if let Some(r) = &l.rate_limit {
                let rps = r.requests_per_second;
                if !(0.001..=1_000_000.0).contains(&rps) {
                    return Err(ConfigError::BadLimit(format!(
                        "listener {}: rate_limit.requests_per_second must be 0.001..=1000000 \
                         (got {rps})",
                        l.address
                    )));
                }
                if !(1..=1_000_000).contains(&r.burst) {
                    return Err(ConfigError::BadLimit(format!(
                        "listener {}: rate_limit.burst must be 1..=1000000 (got {})",
                        l.address, r.burst
                    )));
                }
                if !(1..=1 << 24).contains(&r.max_clients) {
                    return Err(ConfigError::BadLimit(format!(
                        "listener {}: rate_limit.max_clients must be 1..=16777216 (got {})",
                        l.address, r.max_clients
                    )));
                }
            }
            listeners.push(Listener {
                address: l.address,
                mode: l.mode,
                pool,
                routes,
                tls,
                sni,
                proxy_protocol,
                rate_limit: l.rate_limit.clone(),
            });
        }
        let t = &raw.timeouts;
        for (name, v) in [
            ("client_header_ms", t.client_header_ms),
            ("backend_response_ms", t.backend_response_ms),
            ("connect_ms", t.connect_ms),
            ("upstream_idle_ms", t.upstream_idle_ms),
            ("client_idle_ms", t.client_idle_ms),
            ("expect_continue_ms", t.expect_continue_ms),
            ("client_body_ms", t.client_body_ms),
            ("tls_hello_ms", t.tls_hello_ms),
            ("tcp_idle_ms", t.tcp_idle_ms),
            ("upgrade_idle_ms", t.upgrade_idle_ms),
        ] {
            if v == 0 {
                return Err(ConfigError::BadLimit(format!(
                    "timeouts.{name} must be at least 1 (milliseconds)"
                )));
            }
        }
        let l = &raw.limits;
        if l.max_header_bytes < 64 {
            return Err(ConfigError::BadLimit(
                "limits.max_header_bytes must be at least 64".into(),
            ));
        }
        if l.max_headers == 0 || l.max_headers > 1024 {
            return Err(ConfigError::BadLimit(
                "limits.max_headers must be 1..=1024".into(),
            ));
        }
        if l.connect_attempts == 0 {
            return Err(ConfigError::BadLimit(
                "limits.connect_attempts must be at least 1".into(),
            ));
        }
        if l.max_connections == Some(0) {
            return Err(ConfigError::BadLimit(
                "limits.max_connections must be at least 1".into(),
            ));
        }
        if l.send_high_water < 4096 {
            return Err(ConfigError::BadLimit(
                "limits.send_high_water must be at least 4096 bytes".into(),
            ));
        }
        if raw.log.access_log.is_some()
            && raw.log.access_format == crate::access::AccessFormat::Default
        {
            return Err(ConfigError::BadLimit(
                "log.access_log needs log.access_format = \"combined\" or \"json\" (the default \
                 format goes to the tracing log)"
                    .into(),
            ));
        }
        let log = crate::access::LogConfig {
            access_format: raw.log.access_format,
            access_log: raw.log.access_log.map(|p| match base {
                Some(b) if p.is_relative() => b.join(p),
                _ => p,
            }),
        };
        Ok(Config {
            listeners,
            pools,
            timeouts: raw.timeouts,
            limits: raw.limits,
            admin_listen: raw.admin.map(|a| a.listen),
            log,
        })
    }

    /// The pool for an HTTP request to `host` (lower-case, no port) and `path` on
    /// listener `listener`: the most specific route, else the listener's pool.
    pub fn route(&self, listener: usize, host: Option<&str>, path: &str) -> Option<usize> {
        let l = self.listeners.get(listener)?;
        let mut best: Option<(bool, usize, usize)> = None;
        for r in &l.routes {
            let host_ok = match (&r.host, host) {
                (None, _) => true,
                (Some(want), Some(h)) => want == h,
                (Some(_), None) => false,
            };
            if !host_ok || !path.starts_with(r.path_prefix.as_str()) {
                continue;
            }
            let rank = (r.host.is_some(), r.path_prefix.len(), r.pool);
            if best.is_none_or(|b| (rank.0, rank.1) > (b.0, b.1)) {
                best = Some(rank);
            }
        }
        best.map(|b| b.2).or(l.pool)
    }

    /// The pool for a TLS client of listener `listener` whose ClientHello
    /// names `server_name` (lower-case; `None`: no SNI): its `sni` route, else
    /// the listener's pool. `None`: close the client.
    pub fn sni_route(&self, listener: usize, server_name: Option<&str>) -> Option<usize> {
        let l = self.listeners.get(listener)?;
        let routed = match (&l.sni, server_name) {
            (Some(routes), Some(name)) => routes.lookup(name),
            _ => None,
        };
        routed.or(l.pool)
    }
}

/// A TLS passthrough listener's `sni` table, validated; `index_of` resolves
/// a pool name (naming the route in its error).
fn sni_routes(
    l: &RawListener,
    index_of: impl Fn(String, &str) -> Result<usize, ConfigError>,
) -> Result<SniRoutes, ConfigError> {
    let mut routes = SniRoutes::default();
    // Keys as written, by normalised pattern, to name both of a duplicate.
    let mut written: BTreeMap<(bool, String), &String> = BTreeMap::new();
    for (pattern, pool) in &l.sni {
        let (wildcard, name) = sni_pattern(pattern).map_err(|why| ConfigError::BadSniPattern {
            listener: l.address,
            pattern: pattern.clone(),
            why,
        })?;
        if let Some(first) = written.insert((wildcard, name.clone()), pattern) {
            return Err(ConfigError::DuplicateSniPattern {
                listener: l.address,
                first: first.clone(),
                second: pattern.clone(),
            });
        }
        let what = format!("sni route {pattern:?} of listener {}", l.address);
        let pool = index_of(what, pool)?;
        if wildcard {
            routes.wildcard.insert(name, pool);
        } else {
            routes.exact.insert(name, pool);
        }
    }
    Ok(routes)
}

#[cfg(test)]
mod tests;
