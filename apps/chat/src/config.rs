//! `chat.toml`: what an operator may set. Every field has a default, so an empty
//! file (or none) gives a working server.
//!
//! ```toml
//! [server]
//! name = "irc.example.net"
//! network = "ExampleNet"
//! listen = ["127.0.0.1:6667"]
//! motd = "Welcome!\nBe nice."      # or motd_file = "/etc/shardline/motd.txt"
//! admin_listen = "127.0.0.1:9100"  # Prometheus /metrics; off unless set
//!
//! [limits]
//! nicklen = 30
//! ping_interval_secs = 120
//!
//! [tls]                            # off unless `listen` is set
//! listen = "0.0.0.0:6697"          # or a list
//! cert = "/etc/shardline/fullchain.pem"
//! key = "/etc/shardline/privkey.pem"
//! [websocket]                      # IRC over WebSocket + the web client at /
//! listen = "127.0.0.1:8067"        # --websocket-listen; tls_listen for wss://
//! [storage]
//! dir = "/var/lib/shardline-chat"  # --data-dir; default $STATE_DIRECTORY or ./shardline-chat-data
//! sync = "batch"                   # always | batch | batch:<ms> | none
//!
//! [history]
//! channel_messages = 1000
//!
//! [accounts]
//! registration = "open"            # REGISTER; default "closed"
//! ```

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Deserializer};

use crate::{
    auth::password::OperPassword,
    store::{HistoryLimits, SyncPolicy},
};

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Identity and greeting.
    pub server: ServerSection,
    /// Protocol and resource limits.
    pub limits: LimitsSection,
    /// Flood control (penalty / fake lag).
    pub flood: FloodSection,
    /// Server operators (`[[operators]]`, for OPER).
    pub operators: Vec<Operator>,
    /// TLS listeners and IRCv3 STS (off unless `tls.listen` is set).
    pub tls: TlsSection,
    /// IRC over WebSocket and the web client (off unless `websocket.listen`
    /// or `websocket.tls_listen` is set).
    pub websocket: WebSocketSection,
    /// File uploads (`soju.im/FILEHOST`) on the WebSocket listeners.
    pub filehost: FileHostSection,
    /// Where and how the store writes (`[storage]`).
    pub storage: StorageSection,
    /// Message history (`[history]`).
    pub history: HistorySection,
    /// Accounts (`[accounts]`): in-band registration, the hashing pool and
    /// nick protection.
    pub accounts: AccountsSection,
    /// Several nodes serving one network through an engine (`[cluster]`,
    /// [`crate::cluster`]); off unless `url` is set.
    pub cluster: ClusterSection,
    /// Test builds only: the hidden `TESTACCOUNT <name>|*` command sets or clears
    /// the client's account, standing in for SASL until it exists. Never read
    /// from a file (no TOML key), kept across rehashes.
    #[doc(hidden)]
    #[serde(skip)]
    pub test_account_command: bool,
}

/// Whether clients may register accounts with `REGISTER`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Nobody may (`FAIL REGISTER TEMPORARILY_UNAVAILABLE`; the cap is not
    /// advertised). Accounts come from `shardline-chat account add`.
    #[default]
    Closed,
    /// Anyone may register a free name (`draft/account-registration`).
    Open,
}

/// `[accounts]`: accounts live in the store (so they need history on: no
/// store, no accounts), SASL (`PLAIN`, `SCRAM-SHA-256`, and `EXTERNAL` on TLS
/// listeners with `tls.client_ca`) is always offered when they exist;
/// registration is closed unless opened here; nick protection is off unless
/// turned on here.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountsSection {
    /// `open` or `closed` (default): may clients `REGISTER`?
    pub registration: Registration,
    /// Whether `REGISTER` works before connection registration completes
    /// (`before-connect` in the cap value). Default true.
    pub before_connect: bool,
    /// Whether the account name may differ from the client's nick
    /// (`custom-account-name`). Default false.
    pub custom_account_name: bool,
    /// Whether `REGISTER` needs an email address (`email-required`; it is
    /// checked for form and not kept). Default false.
    pub email_required: bool,
    /// The shortest password `REGISTER` and `account add|passwd` accept, bytes.
    /// Default 8.
    pub min_password_len: usize,
    /// Threads that hash and check passwords (argon2id, ~50 ms of a core
    /// each), off the shards' loops. Default 1.
    pub hash_threads: usize,
    /// Hashing jobs that may wait for a thread; past it SASL answers 904 and
    /// `REGISTER` `TEMPORARILY_UNAVAILABLE`. Default 64.
    pub hash_queue: usize,
    /// Nick protection: a client that holds the nick of a registered account
    /// without being logged in to that account is warned (NOTICE), and renamed
    /// to a `Guest` nick if it has not logged in when the grace period ends.
    /// Needs the store (accounts live there): off with `history.enabled =
    /// false`. Default false.
    pub enforce_nick: bool,
    /// The grace period, seconds (default 30).
    pub enforce_nick_grace_secs: f64,
    /// Tests only: hash new passwords with the cheapest parameters. Never
    /// read from a file.
    #[doc(hidden)]
    #[serde(skip)]
    pub test_cheap_hashes: bool,
}

impl Default for AccountsSection {
    fn default() -> Self {
        AccountsSection {
            registration: Registration::Closed,
            before_connect: true,
            custom_account_name: false,
            email_required: false,
            min_password_len: 8,
            hash_threads: crate::auth::pool::DEFAULT_THREADS,
            hash_queue: crate::auth::pool::DEFAULT_QUEUE,
            enforce_nick: false,
            enforce_nick_grace_secs: 30.0,
            test_cheap_hashes: false,
        }
    }
}

impl AccountsSection {
    /// `enforce_nick_grace_secs` as a duration.
    pub fn enforce_nick_grace(&self) -> Duration {
        Duration::from_secs_f64(self.enforce_nick_grace_secs)
    }

    /// What `REGISTER` checks against.
    pub fn register_config(&self) -> crate::auth::register::RegisterConfig {
        crate::auth::register::RegisterConfig {
            open: self.registration == Registration::Open,
            before_connect: self.before_connect,
            custom_account_name: self.custom_account_name,
            email_required: self.email_required,
            policy: self.password_policy(),
        }
    }

    /// What a new password must be.
    pub fn password_policy(&self) -> crate::auth::password::PasswordPolicy {
        crate::auth::password::PasswordPolicy {
            min_len: self.min_password_len,
            ..crate::auth::password::PasswordPolicy::default()
        }
    }
}

/// `[storage]`: the embedded store (see the `store` module).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// The data directory (`--data-dir` replaces it). Unset: `$STATE_DIRECTORY`
    /// if set (systemd's `StateDirectory=`), else `./shardline-chat-data`.
    pub dir: Option<PathBuf>,
    /// When the store syncs: `always`, `batch` (every 5 ms), `batch:<ms>` or
    /// `none` (see the durability table in the README).
    pub sync: String,
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            dir: None,
            sync: "batch".into(),
        }
    }
}

/// `[tls]`: TLS listeners (conventionally port 6697) beside the plaintext ones,
/// and the IRCv3 `sts` policy advertised when they are on.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// Addresses to serve TLS on (one address or a list); empty: no TLS.
    /// `--tls-listen` on the command line replaces them.
    #[serde(deserialize_with = "one_or_many")]
    pub listen: Vec<SocketAddr>,
    /// The certificate chain (PEM: the server's certificate first, then
    /// intermediates). Reread on SIGHUP. `--tls-cert` replaces it.
    pub cert: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, SEC1 or PKCS#1). Reread on SIGHUP.
    /// `--tls-key` replaces it.
    pub key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates are checked against. When
    /// set, clients *may* present a certificate (none is fine; one that does not
    /// verify fails the handshake) and its SHA-256 fingerprint is kept with the
    /// client (WHOIS 276 to itself and operators; SASL EXTERNAL later).
    pub client_ca: Option<PathBuf>,
    /// Whether to advertise the IRCv3 `sts` capability while TLS is on (the spec
    /// requires that it can be turned off). Turn it off while the certificate is
    /// one clients cannot verify (self-signed): STS clients that see the upgrade
    /// policy on the plaintext port reconnect over TLS and verify the certificate.
    pub sts: bool,
    /// The port the plaintext listeners' upgrade policy names (`sts=port=`);
    /// default the port of the first `listen` address. Set it when clients reach
    /// the TLS port under another number (a port forward). No upgrade policy is
    /// advertised while the port is unknown (listening on port 0 without it).
    pub sts_port: Option<u16>,
    /// The persistence policy TLS clients get (`sts=duration=`), in seconds: for
    /// this long after each connection an STS client connects to this host name
    /// only over TLS, and refuses to connect at all if TLS fails (an expired
    /// certificate, TLS turned off). Default 0: no policy is kept, clients are
    /// upgraded each time they come in over plaintext, and a TLS mistake can be
    /// undone without locking anyone out — what the spec suggests as the shipped
    /// default. Raise it (e.g. 2592000, 30 days) once the certificate is from a CA
    /// clients trust and its renewal is automated. At most 10 years.
    pub sts_duration_secs: u64,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            listen: Vec::new(),
            cert: None,
            key: None,
            client_ca: None,
            sts: true,
            sts_port: None,
            sts_duration_secs: 0,
        }
    }
}

impl StorageSection {
    /// The data directory in use: `dir`, or the default.
    pub fn data_dir(&self) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(crate::store::default_data_dir)
    }

    /// `sync` parsed (checked by [`Config::validate`]; the default if invalid).
    pub fn sync_policy(&self) -> SyncPolicy {
        self.sync.parse().unwrap_or_default()
    }
}

/// `[history]`: which messages are kept and for how long (`draft/chathistory`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistorySection {
    /// Whether history is kept and stored at all (`--no-history` turns it
    /// off). Off: no store is opened, CHATHISTORY is an unknown command.
    pub enabled: bool,
    /// Messages kept per channel (0: no channel history).
    pub channel_messages: usize,
    /// Messages kept per private conversation between two accounts (0: none).
    pub conversation_messages: usize,
    /// Messages older than this many seconds are dropped (0: no age limit).
    pub max_age_secs: u64,
    /// The most messages one CHATHISTORY command returns (`CHATHISTORY=`
    /// in ISUPPORT); larger limits are cut to it.
    pub max_request: usize,
}

impl Default for HistorySection {
    fn default() -> Self {
        let l = HistoryLimits::default();
        HistorySection {
            enabled: true,
            channel_messages: l.channel_messages,
            conversation_messages: l.conversation_messages,
            max_age_secs: l.max_age_ms / 1000,
            max_request: 100,
        }
    }
}

impl HistorySection {
    /// The store's bounds.
    pub fn limits(&self) -> HistoryLimits {
        HistoryLimits {
            channel_messages: self.channel_messages,
            conversation_messages: self.conversation_messages,
            max_age_ms: self.max_age_secs.saturating_mul(1000),
        }
    }
}

/// `[filehost]`: file uploads with the `soju.im/FILEHOST` convention, on the
/// WebSocket listeners (see [`crate::filehost`]). Restart-only.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileHostSection {
    /// `true`/`false`; absent: on when there is a data directory (history
    /// on, so accounts exist) and a WebSocket listener.
    pub enabled: Option<bool>,
    /// The largest file, bytes. Default 25 MiB.
    pub max_file_bytes: u64,
    /// What one account may store at once, bytes. Default 200 MiB.
    pub quota_bytes: u64,
    /// Files are deleted this many days after their upload. Default 30.
    pub expire_days: f64,
    /// The public base URL (`https://files.example.net`, no trailing `/`):
    /// uploads go to `<base>/upload`, files are at `<base>/files/...`.
    /// Absent: derived from the first WebSocket TLS listener
    /// (`https://ADDR`), else from a plaintext one on a loopback address
    /// (`http://ADDR`); plain HTTP is never derived for another address.
    pub public_url: Option<String>,
}

impl Default for FileHostSection {
    fn default() -> Self {
        FileHostSection {
            enabled: None,
            max_file_bytes: 25 << 20,
            quota_bytes: 200 << 20,
            expire_days: 30.0,
            public_url: None,
        }
    }
}

impl FileHostSection {
    /// Whether the file host runs with this configuration.
    pub fn on(&self, history: bool, websocket_listeners: usize) -> bool {
        self.enabled.unwrap_or(true) && history && websocket_listeners > 0
    }

    /// How long a file is kept.
    pub fn expiry(&self) -> Duration {
        Duration::from_secs_f64((self.expire_days * 86_400.0).clamp(1.0, 1e10))
    }
}

/// `[cluster]`: this server as one node of several serving one network
/// through Redis ([`crate::cluster`]). Off (a single node, nothing changes)
/// unless `url` is set. Restart to change.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// The engine: `redis://HOST:PORT` (the scheme names the engine; Redis 7
    /// is the one there is). `HOST` is an IP address or `localhost`.
    pub url: Option<String>,
    /// This node's name, unique in the cluster: letters, digits, `-`, `_`,
    /// `.`, at most 64. Default: `server.name`.
    pub node_name: Option<String>,
    /// How long a node that stopped renewing its lease (it stopped, died,
    /// or lost the engine) is counted as up, seconds. Default 10.
    pub node_timeout_secs: f64,
    /// Channel messages each of the 64 partitions keeps in the engine (a
    /// Redis stream, trimmed to about this many) for nodes that missed them
    /// — one started late, or whose subscriber was cut — to place in their
    /// history. 0 keeps none. Default 1000.
    pub catchup_messages: usize,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            url: None,
            node_name: None,
            node_timeout_secs: 10.0,
            catchup_messages: 1000,
        }
    }
}

/// Where a cluster's engine is ([`ClusterSection::engine`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineAddr {
    /// The Redis server.
    pub addr: SocketAddr,
}

impl ClusterSection {
    /// Whether this server is a node of a cluster.
    pub fn on(&self) -> bool {
        self.url.is_some()
    }

    /// The engine's address from `url`, or why it is not one.
    pub fn engine(&self) -> Result<Option<EngineAddr>, String> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let Some(rest) = url.strip_prefix("redis://") else {
            let scheme = url.split_once("://").map_or(url.as_str(), |(s, _)| s);
            return Err(format!(
                "cluster.url: {url:?}: the scheme names the engine, and redis:// is the one \
                 supported (not {scheme:?})"
            ));
        };
        let hostport = rest.strip_suffix('/').unwrap_or(rest);
        if hostport.contains(['/', '@', '?']) {
            return Err(format!(
                "cluster.url: {url:?}: only redis://HOST:PORT (no credentials, database or options)"
            ));
        }
        let host = hostport.replace("localhost", "127.0.0.1");
        let addr = host.parse::<SocketAddr>().ok().or_else(|| {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            bare.parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, 6379))
        });
        let Some(addr) = addr else {
            return Err(format!(
                "cluster.url: {url:?}: HOST must be an IP address or localhost, PORT a number"
            ));
        };
        Ok(Some(EngineAddr { addr }))
    }

    /// This node's name: `node_name`, else the server's.
    pub fn node<'a>(&'a self, server_name: &'a str) -> &'a str {
        self.node_name.as_deref().unwrap_or(server_name)
    }

    /// How long a silent node counts as up.
    pub fn node_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.node_timeout_secs.clamp(0.5, 3600.0))
    }
}

/// Whether `s` may name a node.
pub fn valid_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `[websocket]`: listeners speaking IRC over WebSocket (the IRCv3 WebSocket
/// specification) that also serve the web client at `/` (see
/// [`crate::websocket`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketSection {
    /// Plaintext addresses (one or a list); `--websocket-listen` replaces them.
    #[serde(deserialize_with = "one_or_many")]
    pub listen: Vec<SocketAddr>,
    /// TLS addresses (`wss://`), with the certificate of `[tls]` (`tls.cert`,
    /// `tls.key`, which they need); `--websocket-tls-listen` replaces them.
    #[serde(deserialize_with = "one_or_many")]
    pub tls_listen: Vec<SocketAddr>,
    /// When not empty, a WebSocket handshake whose `Origin` is not one of
    /// these (compared without case, e.g. `"https://chat.example.net"`) is
    /// refused with 403. A handshake without `Origin` (not from a browser) is
    /// allowed. Default: empty, any origin.
    pub allowed_origins: Vec<String>,
    /// Seconds a connection may take to send its whole HTTP request head
    /// before it gets 408 and is closed (slow clients, slowloris).
    pub request_timeout_secs: u64,
}

impl Default for WebSocketSection {
    fn default() -> Self {
        WebSocketSection {
            listen: Vec::new(),
            tls_listen: Vec::new(),
            allowed_origins: Vec::new(),
            request_timeout_secs: 10,
        }
    }
}

impl WebSocketSection {
    /// How long a request head may take.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    /// How many WebSocket listeners there are.
    pub fn listeners(&self) -> usize {
        self.listen.len() + self.tls_listen.len()
    }
}

impl TlsSection {
    /// Whether TLS listeners are configured.
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }

    /// The port a plaintext connection's `sts` upgrade policy names, if STS is
    /// advertised and the port is known.
    pub fn upgrade_port(&self) -> Option<u16> {
        if !self.enabled() || !self.sts {
            return None;
        }
        self.sts_port
            .or_else(|| self.listen.first().map(SocketAddr::port))
            .filter(|&p| p != 0)
    }
}

/// A TOML value that is one item or a list of them.
fn one_or_many<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(t) => vec![t],
        OneOrMany::Many(v) => v,
    })
}

/// `[[operators]]`: one server operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    /// The name given to OPER.
    pub name: String,
    /// The password given to OPER: an argon2 PHC string
    /// (`$argon2id$v=19$m=…`, made by `shardline-chat --hash-password`), checked
    /// off the shards' loops, or — accepted with a warning at load — plaintext,
    /// compared in constant time.
    pub password: String,
    /// Where it may oper from: a mask matched against the client's host
    /// (`*` wildcards); default any.
    #[serde(default = "any_host")]
    pub host: String,
}

fn any_host() -> String {
    "*".into()
}

/// `[flood]`: see the `flood` module.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FloodSection {
    /// Whether flood control is on (turn it off for benchmarks).
    pub enabled: bool,
    /// Milliseconds each command moves the client's clock ahead.
    pub command_cost_ms: u64,
    /// How far ahead (ms) a client may run before its input waits.
    pub max_lag_ms: u64,
    /// Bytes of input a waiting client may pile up before "Excess Flood".
    pub max_backlog_bytes: usize,
}

impl Default for FloodSection {
    fn default() -> Self {
        FloodSection {
            enabled: true,
            command_cost_ms: 500,
            max_lag_ms: 5000,
            max_backlog_bytes: 16 << 10,
        }
    }
}

impl FloodSection {
    /// `command_cost_ms` as a duration.
    pub fn command_cost(&self) -> Duration {
        Duration::from_millis(self.command_cost_ms)
    }

    /// `max_lag_ms` as a duration.
    pub fn max_lag(&self) -> Duration {
        Duration::from_millis(self.max_lag_ms)
    }
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// The server's name: the source of numerics, shown to clients.
    pub name: String,
    /// The network name (`NETWORK` in ISUPPORT, and in the welcome).
    pub network: String,
    /// Addresses to listen on; `--listen` on the command line replaces them.
    pub listen: Vec<SocketAddr>,
    /// Message of the day, inline (lines separated by newlines).
    pub motd: Option<String>,
    /// Message of the day from a file (read at startup); `motd` wins if both are set.
    pub motd_file: Option<String>,
    /// Where to serve Prometheus `/metrics` and `/healthz` over HTTP (off when
    /// unset); `--admin` on the command line sets it.
    pub admin_listen: Option<SocketAddr>,
    /// A server password: when set, a client must send `PASS` with it before
    /// registration completes (else 464 and a close).
    pub password: Option<String>,
    /// Every listener (plaintext and TLS) expects a PROXY protocol header (v1
    /// or v2, before the TLS handshake) from the sources in
    /// `proxy_protocol_trusted`, and refuses other sources (as HAProxy
    /// does). The header's source address is then the client's address
    /// everywhere: its host in the mask, WHOIS, per-IP limits, bans.
    pub proxy_protocol: bool,
    /// Address blocks allowed to send PROXY headers (`"10.0.0.0/8"`,
    /// `"127.0.0.1"`, `"::/0"` for everyone); required with `proxy_protocol`.
    #[serde(deserialize_with = "cidrs")]
    pub proxy_protocol_trusted: Vec<shardline::proxy_protocol::Cidr>,
    /// The whole PROXY header must arrive within this after the accept
    /// (milliseconds), else the connection is closed.
    pub proxy_protocol_timeout_ms: u64,
    /// ADMIN 257: where the server is (first administrative line).
    pub admin_info1: String,
    /// ADMIN 258: who runs it (second administrative line).
    pub admin_info2: String,
    /// ADMIN 259: how to reach its administrator.
    pub admin_email: String,
}

fn cidrs<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<shardline::proxy_protocol::Cidr>, D::Error> {
    let raw = Vec::<String>::deserialize(d)?;
    raw.iter()
        .map(|c| c.parse().map_err(serde::de::Error::custom))
        .collect()
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            name: "shardline.local".into(),
            network: "Shardline".into(),
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 6667))],
            motd: None,
            motd_file: None,
            admin_listen: None,
            password: None,
            proxy_protocol: false,
            proxy_protocol_trusted: Vec::new(),
            proxy_protocol_timeout_ms: 5_000,
            admin_info1: "A Shardline IRC server".into(),
            admin_info2: "Run by its operators".into(),
            admin_email: "No administrative e-mail address configured".into(),
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Longest nick, bytes (`NICKLEN`).
    pub nicklen: usize,
    /// Longest channel name, bytes (`CHANNELLEN`).
    pub channellen: usize,
    /// Longest topic, bytes (`TOPICLEN`); longer topics are cut.
    pub topiclen: usize,
    /// Longest KICK reason, bytes (`KICKLEN`); longer ones are cut.
    pub kicklen: usize,
    /// Longest away message, bytes (`AWAYLEN`); longer ones are cut.
    pub awaylen: usize,
    /// WHOWAS entries each shard keeps for the nicks it owns (the oldest go
    /// first); 0 keeps none.
    pub whowas: usize,
    /// WHOWAS entries kept for one nick (the oldest go first).
    pub whowas_per_nick: usize,
    /// Connections one client address may have open at once; 0 = no limit.
    pub max_connections_per_ip: usize,
    /// Channels one client may be in (`CHANLIMIT`).
    pub max_channels: usize,
    /// Targets of one PRIVMSG/NOTICE (`TARGMAX`).
    pub max_targets: usize,
    /// Nicks one client may MONITOR (`MONITOR=`); 0 turns MONITOR off.
    pub monitor: usize,
    /// (watcher, nick) pairs of MONITOR one shard keeps for the nicks it
    /// owns; past it, `MONITOR +` of those nicks draws 734.
    pub monitor_shard_total: usize,
    /// Seconds a connection has to complete registration.
    pub registration_timeout_secs: f64,
    /// Seconds of silence after which the server sends PING.
    pub ping_interval_secs: f64,
    /// Seconds to wait for any reply to that PING before disconnecting.
    pub ping_timeout_secs: f64,
    /// Bytes queued to one client before it is disconnected ("SendQ exceeded").
    pub sendq_bytes: usize,
    /// Bytes of unprocessed input one client may have buffered before the server
    /// stops reading from it (TCP flow control then slows the client).
    pub recvq_bytes: usize,
    /// Requests and deliveries of one client that may be in flight between shards
    /// before the server stops reading its commands until half are done.
    pub in_flight_per_client: usize,
    /// Messages each shard may hold for another shard whose mailbox is full, beyond
    /// the mailbox itself. Past it, the client whose command needs the space is
    /// disconnected ("Server busy").
    pub outbox_capacity: usize,
    /// Messages each shard-to-shard mailbox holds.
    pub mailbox_capacity: usize,
    /// Write coalescing, microseconds (see `flush_mode`): a busy channel's
    /// traffic goes out in fewer, larger writes — the kernel's per-send TCP work
    /// is most of a chat server's CPU. 0 writes at the end of every loop turn.
    /// Default 2000.
    pub flush_delay_us: u64,
    /// How `flush_delay_us` holds a client's lines: `pace` (default) writes to a
    /// client at most once per interval of its shard — lines to a client not
    /// yet written to in the current interval go at once, lines to one already
    /// written to wait for the interval to end; `delay` holds every line until
    /// the oldest queued has waited the interval.
    pub flush_mode: FlushMode,
}

/// `[limits] flush_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FlushMode {
    /// At most one write per client per interval; a quiet client's lines at once.
    #[default]
    Pace,
    /// Every line waits until the oldest queued has waited the interval.
    Delay,
}

impl LimitsSection {
    /// The framework's write coalescing for these settings.
    pub fn coalesce(&self) -> shardline::Coalesce {
        let d = std::time::Duration::from_micros(self.flush_delay_us);
        match self.flush_mode {
            FlushMode::Pace => shardline::Coalesce::Pace(d),
            FlushMode::Delay => shardline::Coalesce::Delay(d),
        }
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            nicklen: 30,
            channellen: 50,
            topiclen: 390,
            kicklen: 255,
            awaylen: 200,
            whowas: 100,
            whowas_per_nick: 10,
            max_connections_per_ip: 0,
            max_channels: 50,
            max_targets: 4,
            monitor: 100,
            monitor_shard_total: 1_000_000,
            registration_timeout_secs: 60.0,
            ping_interval_secs: 120.0,
            ping_timeout_secs: 60.0,
            sendq_bytes: 4 << 20,
            recvq_bytes: 64 << 10,
            in_flight_per_client: 256,
            outbox_capacity: 16_384,
            mailbox_capacity: 4096,
            flush_delay_us: 2000,
            flush_mode: FlushMode::Pace,
        }
    }
}

/// What the command line sets over the configuration file. Applied when the
/// server starts and again to the file a rehash reads, so a SIGHUP never undoes
/// a flag.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--admin`: replaces `server.admin_listen`.
    pub admin_listen: Option<SocketAddr>,
    /// `--tls-listen` (repeatable): replaces `tls.listen` unless empty.
    pub tls_listen: Vec<SocketAddr>,
    /// `--tls-cert`: replaces `tls.cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`: replaces `tls.key`.
    pub tls_key: Option<PathBuf>,
    /// `--websocket-listen` (repeatable): replaces `websocket.listen` unless
    /// empty.
    pub websocket_listen: Vec<SocketAddr>,
    /// `--websocket-tls-listen` (repeatable): replaces `websocket.tls_listen`
    /// unless empty.
    pub websocket_tls_listen: Vec<SocketAddr>,
    /// `--data-dir`: replaces `storage.dir`.
    pub data_dir: Option<PathBuf>,
    /// `--no-history`: turns `history.enabled` off.
    pub no_history: bool,
    /// `--cluster`: replaces `cluster.url`.
    pub cluster: Option<String>,
    /// `--node-name`: replaces `cluster.node_name`.
    pub node_name: Option<String>,
}

impl Overrides {
    /// Sets in `config` what the command line gave.
    pub fn apply(&self, config: &mut Config) {
        if let Some(addr) = self.admin_listen {
            config.server.admin_listen = Some(addr);
        }
        if let Some(dir) = &self.data_dir {
            config.storage.dir = Some(dir.clone());
        }
        if self.no_history {
            config.history.enabled = false;
        }
        if let Some(url) = &self.cluster {
            config.cluster.url = Some(url.clone());
        }
        if let Some(name) = &self.node_name {
            config.cluster.node_name = Some(name.clone());
        }
        if !self.tls_listen.is_empty() {
            config.tls.listen = self.tls_listen.clone();
        }
        if let Some(cert) = &self.tls_cert {
            config.tls.cert = Some(cert.clone());
        }
        if let Some(key) = &self.tls_key {
            config.tls.key = Some(key.clone());
        }
        if !self.websocket_listen.is_empty() {
            config.websocket.listen = self.websocket_listen.clone();
        }
        if !self.websocket_tls_listen.is_empty() {
            config.websocket.tls_listen = self.websocket_tls_listen.clone();
        }
    }
}

/// A configuration that cannot work, or cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("{path}: {source}")]
    Parse {
        /// The path given.
        path: String,
        /// What is wrong, with the line.
        source: toml::de::Error,
    },
    /// A value is out of range; the message names it.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads and checks a TOML file, and loads `motd_file` if set.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &Overrides::default())
    }

    /// Reads a TOML file, applies the command line's `overrides`, then checks the
    /// result (so a file may leave to the command line what it needs, e.g. the
    /// certificate of `tls.listen`) and loads `motd_file` if set.
    pub fn load_with(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: shown.clone(),
            source,
        })?;
        overrides.apply(&mut config);
        config.validate()?;
        config.load_motd_file()?;
        Ok(config)
    }

    /// The defaults with the command line's `overrides`, checked (no file).
    pub fn from_overrides(overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        overrides.apply(&mut config);
        config.validate()?;
        Ok(config)
    }

    /// Parses and checks TOML text (does not read `motd_file`).
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: "<text>".into(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads `motd_file` into `motd` unless `motd` is already set.
    pub fn load_motd_file(&mut self) -> Result<(), ConfigError> {
        if let (None, Some(file)) = (&self.server.motd, &self.server.motd_file) {
            let text = fs::read_to_string(file).map_err(|source| ConfigError::Read {
                path: file.clone(),
                source,
            })?;
            self.server.motd = Some(text);
        }
        Ok(())
    }

    /// Checks ranges and names.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.into()));
        let s = &self.server;
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.len() <= 63
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        };
        if !name_ok(&s.name) || !s.name.contains('.') {
            return bad(
                "server.name must be a host-like name with a dot (letters, digits, '.', '-')",
            );
        }
        if !name_ok(&s.network) {
            return bad("server.network must be letters, digits, '.' or '-'");
        }
        if s.proxy_protocol && s.proxy_protocol_trusted.is_empty() {
            return bad(
                "server.proxy_protocol = true needs server.proxy_protocol_trusted \
                 (the addresses allowed to send headers, e.g. [\"10.0.0.0/8\"])",
            );
        }
        if !s.proxy_protocol && !s.proxy_protocol_trusted.is_empty() {
            return bad("server.proxy_protocol_trusted without server.proxy_protocol = true");
        }
        if s.proxy_protocol_timeout_ms == 0 {
            return bad("server.proxy_protocol_timeout_ms must be at least 1");
        }
        let l = &self.limits;
        if !(1..=64).contains(&l.nicklen) {
            return bad("limits.nicklen must be 1..=64");
        }
        if !(2..=200).contains(&l.channellen) {
            return bad("limits.channellen must be 2..=200");
        }
        if l.topiclen > 400 {
            return bad("limits.topiclen must be at most 400");
        }
        if l.kicklen == 0 || l.kicklen > 400 || l.awaylen == 0 || l.awaylen > 400 {
            return bad("limits.kicklen and limits.awaylen must be 1..=400");
        }
        if l.whowas > 1_000_000 || !(1..=1000).contains(&l.whowas_per_nick) {
            return bad(
                "limits.whowas must be at most 1000000 and limits.whowas_per_nick 1..=1000",
            );
        }
        if l.max_channels == 0 || l.max_targets == 0 {
            return bad("limits.max_channels and limits.max_targets must be at least 1");
        }
        for (name, v) in [
            ("registration_timeout_secs", l.registration_timeout_secs),
            ("ping_interval_secs", l.ping_interval_secs),
            ("ping_timeout_secs", l.ping_timeout_secs),
        ] {
            if !(v.is_finite() && v > 0.0 && v < 1e7) {
                return Err(ConfigError::Invalid(format!(
                    "limits.{name} must be a positive number of seconds"
                )));
            }
        }
        if l.sendq_bytes < 4096 || l.recvq_bytes < 1024 {
            return bad("limits.sendq_bytes must be at least 4096 and recvq_bytes at least 1024");
        }
        if l.monitor > 0 && l.monitor_shard_total == 0 {
            return bad("limits.monitor_shard_total must be at least 1 while MONITOR is on");
        }
        if l.in_flight_per_client < 2 {
            return bad("limits.in_flight_per_client must be at least 2");
        }
        if l.outbox_capacity == 0 || l.mailbox_capacity == 0 {
            return bad("limits.outbox_capacity and limits.mailbox_capacity must be at least 1");
        }
        let f = &self.flood;
        if f.enabled && (f.command_cost_ms == 0 || f.max_backlog_bytes < 1024) {
            return bad("flood.command_cost_ms must be at least 1 and flood.max_backlog_bytes at least 1024");
        }
        if f.command_cost_ms > 3_600_000 || f.max_lag_ms > 86_400_000 {
            return bad("flood.command_cost_ms must be at most an hour and flood.max_lag_ms a day");
        }
        for op in &self.operators {
            if op.name.is_empty() || op.name.contains(' ') || op.password.is_empty() {
                return bad("each [[operators]] needs a name without spaces and a password");
            }
            if let Err(e) = OperPassword::parse(&op.password) {
                return Err(ConfigError::Invalid(format!(
                    "operator {}: password: {e}",
                    op.name
                )));
            }
        }
        let a = &self.accounts;
        let grace = a.enforce_nick_grace_secs;
        if !(grace.is_finite() && grace > 0.0 && grace <= 86_400.0) {
            return bad("accounts.enforce_nick_grace_secs must be a positive number of seconds, at most a day");
        }
        let t = &self.tls;
        if t.enabled() && (t.cert.is_none() || t.key.is_none()) {
            return bad("tls.listen needs tls.cert and tls.key (--tls-cert, --tls-key)");
        }
        let ws = &self.websocket;
        if !ws.tls_listen.is_empty() && (t.cert.is_none() || t.key.is_none()) {
            return bad("websocket.tls_listen needs tls.cert and tls.key (--tls-cert, --tls-key)");
        }
        if !t.enabled()
            && ws.tls_listen.is_empty()
            && (t.cert.is_some() || t.key.is_some() || t.client_ca.is_some())
        {
            return bad(
                "tls.cert, tls.key and tls.client_ca need tls.listen (--tls-listen) or websocket.tls_listen to serve TLS on",
            );
        }
        if !(1..=3600).contains(&ws.request_timeout_secs) {
            return bad("websocket.request_timeout_secs must be 1..=3600");
        }
        if let Some(o) = ws
            .allowed_origins
            .iter()
            .find(|o| o.is_empty() || !o.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(ConfigError::Invalid(format!(
                "websocket.allowed_origins: {o:?} is not an origin (scheme://host[:port])"
            )));
        }
        self.cluster.engine().map_err(ConfigError::Invalid)?;
        let node = self.cluster.node(&self.server.name);
        if !valid_node_name(node) {
            return Err(ConfigError::Invalid(format!(
                "cluster.node_name: {node:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        if !(0.5..=3600.0).contains(&self.cluster.node_timeout_secs) {
            return bad("cluster.node_timeout_secs must be 0.5..=3600");
        }
        if self.cluster.catchup_messages > 1_000_000 {
            return bad("cluster.catchup_messages must be at most 1000000");
        }
        if let Some(url) = &self.filehost.public_url {
            // It goes into ISUPPORT as one token and clients append paths.
            let host = url
                .strip_prefix("https://")
                .or_else(|| url.strip_prefix("http://"))
                .map(|rest| rest.split('/').next().unwrap_or(""));
            let clean =
                url.bytes().all(|b| b.is_ascii_graphic()) && !url.contains(['?', '#', '\\']);
            if !clean || host.is_none_or(str::is_empty) {
                return Err(ConfigError::Invalid(format!(
                    "filehost.public_url: {url:?} is not a base URL (http:// or https://, a host, \
                     an optional path; no spaces, query or fragment)"
                )));
            }
        }
        if t.sts_port == Some(0) {
            return bad("tls.sts_port must be a port number (1-65535)");
        }
        if t.sts_duration_secs > 10 * 365 * 86_400 {
            return bad("tls.sts_duration_secs must be at most 10 years (315360000)");
        }
        if let Err(e) = self.storage.sync.parse::<SyncPolicy>() {
            return Err(ConfigError::Invalid(format!("storage.{e}")));
        }
        if self
            .storage
            .dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return bad("storage.dir must not be empty");
        }
        let a = &self.accounts;
        if !(1..=300).contains(&a.min_password_len) {
            return bad("accounts.min_password_len must be 1..=300");
        }
        if !(1..=64).contains(&a.hash_threads) || !(1..=100_000).contains(&a.hash_queue) {
            return bad("accounts.hash_threads must be 1..=64 and accounts.hash_queue 1..=100000");
        }
        let h = &self.history;
        if !(1..=1000).contains(&h.max_request) {
            return bad("history.max_request must be 1..=1000");
        }
        if h.channel_messages > 10_000_000 || h.conversation_messages > 10_000_000 {
            return bad(
                "history.channel_messages and conversation_messages must be at most 10000000",
            );
        }
        if h.max_age_secs > 100 * 365 * 86_400 {
            return bad("history.max_age_secs must be at most a hundred years");
        }
        Ok(())
    }

    /// What a rehash (SIGHUP) makes of `new`, a validated file read while this
    /// configuration is in use: the settings that can change at run time come from
    /// `new`, those that need a restart stay as they are. Also returns the names of
    /// the restart-only settings `new` would have changed (to log).
    ///
    /// Changeable: the MOTD, `server.password`, `[[operators]]`, `[flood]`, and
    /// `limits.max_connections_per_ip`, `registration_timeout_secs`,
    /// `ping_interval_secs`, `ping_timeout_secs`, `recvq_bytes`,
    /// `in_flight_per_client`, `outbox_capacity`, the history bounds
    /// (`history.channel_messages`, `conversation_messages`, `max_age_secs`);
    /// `[accounts]` but its hashing pool (`registration`, the `REGISTER`
    /// options, `min_password_len`; the pool's `hash_threads` and
    /// `hash_queue` are restart-only);
    /// `tls.cert`, `tls.key`, `tls.client_ca` (the files are read again by the
    /// SIGHUP hook; see [`crate::build_with_rehash`]) and the `sts` settings.
    /// `websocket.allowed_origins` and `request_timeout_secs` change too.
    /// Restart-only: the listen addresses (`tls.listen` and `websocket.listen`,
    /// `websocket.tls_listen` too: TLS cannot be turned
    /// on or off by a rehash — a file without `[tls]` keeps the running
    /// certificate paths) and the admin address, the server's identity (`name`,
    /// `network`), what the welcome advertises in ISUPPORT (`nicklen`,
    /// `channellen`, `topiclen`, `kicklen`, `awaylen`, `max_channels`,
    /// `max_targets`, `monitor`, `history.max_request`: clients registered earlier were told
    /// the old values), what the framework was built with (`sendq_bytes`,
    /// `mailbox_capacity`, `flush_delay_us`, `flush_mode`), the store (`[storage]`,
    /// `history.enabled`: the store is opened at start), and `[cluster]`.
    pub fn rehash(&self, new: Config) -> (Config, Vec<&'static str>) {
        let mut merged = new;
        let mut kept = Vec::new();
        macro_rules! keep {
            ($($section:ident . $field:ident),* $(,)?) => {$(
                if merged.$section.$field != self.$section.$field {
                    kept.push(concat!(stringify!($section), ".", stringify!($field)));
                    merged.$section.$field = self.$section.$field.clone();
                }
            )*};
        }
        keep!(
            server.name,
            server.network,
            server.listen,
            server.admin_listen,
            limits.nicklen,
            limits.channellen,
            limits.topiclen,
            limits.kicklen,
            limits.awaylen,
            limits.max_channels,
            limits.max_targets,
            limits.monitor,
            limits.sendq_bytes,
            limits.mailbox_capacity,
            limits.flush_delay_us,
            limits.flush_mode,
            tls.listen,
            websocket.listen,
            websocket.tls_listen,
            cluster.url,
            cluster.node_name,
            cluster.node_timeout_secs,
            cluster.catchup_messages,
            filehost.enabled,
            filehost.max_file_bytes,
            filehost.quota_bytes,
            filehost.expire_days,
            filehost.public_url,
            storage.dir,
            storage.sync,
            history.enabled,
            history.max_request,
            accounts.hash_threads,
            accounts.hash_queue,
        );
        let tls_on = merged.tls.enabled() || !merged.websocket.tls_listen.is_empty();
        if tls_on && (merged.tls.cert.is_none() || merged.tls.key.is_none()) {
            // The file turned TLS off, which needs a restart: the listeners stay,
            // and so do the certificate files they serve.
            merged.tls.cert = self.tls.cert.clone();
            merged.tls.key = self.tls.key.clone();
            merged.tls.client_ca = self.tls.client_ca.clone();
        }
        merged.test_account_command = self.test_account_command;
        merged.accounts.test_cheap_hashes = self.accounts.test_cheap_hashes;
        (merged, kept)
    }

    /// What is valid but unwise in this configuration, one sentence each (to
    /// log at load and at rehash): operator passwords in plaintext.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.filehost.enabled == Some(true)
            && !self
                .filehost
                .on(self.history.enabled, self.websocket.listeners())
        {
            out.push(
                "filehost.enabled = true, but the file host needs a data directory \
                 (history on) and a WebSocket listener: it is off"
                    .to_string(),
            );
        }
        out.extend(
            self.operators
                .iter()
                .filter(|op| !op.password.starts_with("$argon2"))
                .map(|op| {
                    format!(
                        "operator {}: the password is in plaintext in the configuration; \
                     store an argon2 hash instead (shardline-chat --hash-password)",
                        op.name
                    )
                }),
        );
        out
    }

    /// The message of the day as lines, or `None` if there is none.
    pub fn motd_lines(&self) -> Option<Vec<String>> {
        let text = self.server.motd.as_deref()?;
        Some(text.lines().map(|l| l.trim_end().to_string()).collect())
    }
}

impl LimitsSection {
    /// `registration_timeout_secs` as a duration.
    pub fn registration_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.registration_timeout_secs)
    }

    /// `ping_interval_secs` as a duration.
    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs_f64(self.ping_interval_secs)
    }

    /// `ping_timeout_secs` as a duration.
    pub fn ping_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.ping_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        let c = Config::from_toml("").expect("defaults are valid");
        assert_eq!(c.server.name, "shardline.local");
        assert_eq!(c.limits.nicklen, 30);
    }

    #[test]
    fn values_and_integer_seconds() {
        let c = Config::from_toml(
            "[server]\nname = \"irc.test\"\nmotd = \"a\\nb\"\n[limits]\nping_interval_secs = 5\n",
        )
        .expect("valid");
        assert_eq!(c.server.name, "irc.test");
        assert_eq!(c.motd_lines(), Some(vec!["a".into(), "b".into()]));
        assert_eq!(c.limits.ping_interval(), Duration::from_secs(5));
        assert_eq!(c.server.admin_listen, None);
        let c = Config::from_toml("[server]\nadmin_listen = \"127.0.0.1:9100\"\n").expect("valid");
        assert_eq!(
            c.server.admin_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9100)))
        );
        assert!(Config::from_toml("[server]\nadmin_listen = \"nowhere\"\n").is_err());
    }

    #[test]
    fn admin_lines() {
        let d = Config::from_toml("").expect("defaults");
        assert!(!d.server.admin_info1.is_empty());
        assert!(!d.server.admin_info2.is_empty());
        assert!(!d.server.admin_email.is_empty());
        let c = Config::from_toml(
            "[server]\nadmin_info1 = \"Here\"\nadmin_info2 = \"Us\"\nadmin_email = \"a@b.c\"\n",
        )
        .expect("valid");
        assert_eq!(
            (
                c.server.admin_info1.as_str(),
                c.server.admin_info2.as_str(),
                c.server.admin_email.as_str()
            ),
            ("Here", "Us", "a@b.c")
        );
        // Changeable by a rehash.
        let (merged, kept) = d.rehash(c);
        assert_eq!(merged.server.admin_email, "a@b.c");
        assert!(kept.is_empty(), "{kept:?}");
    }

    #[test]
    fn write_coalescing_modes() {
        let d = Config::from_toml("").expect("defaults");
        assert_eq!(
            d.limits.coalesce(),
            shardline::Coalesce::Pace(Duration::from_millis(2))
        );
        let c = Config::from_toml("[limits]\nflush_mode = \"delay\"\nflush_delay_us = 500\n")
            .expect("valid");
        assert_eq!(
            c.limits.coalesce(),
            shardline::Coalesce::Delay(Duration::from_micros(500))
        );
        let e = Config::from_toml("[limits]\nflush_mode = \"nagle\"\n").unwrap_err();
        assert!(e.to_string().contains("nagle"), "{e}");
    }

    #[test]
    fn example_file_is_valid() {
        let c = Config::from_toml(include_str!("../chat.example.toml")).expect("valid example");
        assert_eq!(c.server.name, "irc.example.net");
        assert_eq!(c.motd_lines().map(|m| m.len()), Some(2));
        // It shows the defaults of the store, of history and of accounts.
        let d = Config::default();
        assert_eq!((&c.storage, &c.history), (&d.storage, &d.history));
        assert_eq!(c.accounts, d.accounts);
        // Its commented-out [tls] block is valid once uncommented.
        let text = include_str!("../chat.example.toml");
        let start = text.find("# [tls]").expect("a [tls] example");
        let block: String = text[start..]
            .lines()
            .take_while(|l| !l.is_empty())
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
            .collect();
        let c = Config::from_toml(&block).expect("valid [tls] example");
        assert_eq!(c.tls.upgrade_port(), Some(6697));
        assert!(c.tls.client_ca.is_some());
        // And its [websocket] block (tls_listen with that certificate).
        let start = text.find("# [websocket]").expect("a [websocket] example");
        let ws: String = text[start..]
            .lines()
            .take_while(|l| !l.is_empty())
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or(l)))
            .collect();
        let c = Config::from_toml(&format!("{block}{ws}")).expect("valid [websocket] example");
        assert_eq!(c.websocket.listen.len(), 1);
        assert_eq!(c.websocket.tls_listen.len(), 1);
        assert_eq!(c.websocket.allowed_origins.len(), 1);
    }

    #[test]
    fn rehash_takes_runtime_settings_and_keeps_restart_only_ones() {
        let old = Config::from_toml("[server]\nname = \"a.example\"\nmotd = \"old\"\n").unwrap();
        let new = Config::from_toml(
            "[server]\nname = \"b.example\"\nmotd = \"new\"\n\
             [limits]\nnicklen = 9\nping_interval_secs = 5\nsendq_bytes = 8192\n\
             [flood]\nmax_lag_ms = 7\n\
             [[operators]]\nname = \"op\"\npassword = \"pw\"\n",
        )
        .unwrap();
        let (merged, kept) = old.rehash(new);
        assert_eq!(merged.server.motd.as_deref(), Some("new"));
        assert_eq!(merged.limits.ping_interval_secs, 5.0);
        assert_eq!(merged.flood.max_lag_ms, 7);
        assert_eq!(merged.operators.len(), 1);
        assert_eq!(merged.server.name, "a.example");
        assert_eq!(merged.limits.nicklen, 30);
        assert_eq!(merged.limits.sendq_bytes, 4 << 20);
        assert_eq!(
            kept,
            ["server.name", "limits.nicklen", "limits.sendq_bytes"]
        );
    }

    #[test]
    fn tls_section_one_or_several_addresses_and_its_checks() {
        let c = Config::from_toml("").unwrap();
        assert!(!c.tls.enabled());
        assert!(c.tls.sts);
        assert_eq!(c.tls.sts_duration_secs, 0);
        let c = Config::from_toml(
            "[tls]\nlisten = \"0.0.0.0:6697\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
        )
        .expect("one address");
        assert_eq!(c.tls.listen, [SocketAddr::from(([0, 0, 0, 0], 6697))]);
        assert_eq!(c.tls.upgrade_port(), Some(6697));
        let c = Config::from_toml(
            "[tls]\nlisten = [\"127.0.0.1:0\", \"[::1]:6697\"]\ncert = \"c.pem\"\n\
             key = \"k.pem\"\nclient_ca = \"ca.pem\"\nsts_duration_secs = 2592000\n",
        )
        .expect("a list");
        assert_eq!(c.tls.listen.len(), 2);
        assert_eq!(c.tls.upgrade_port(), None, "port 0: unknown until bound");
        assert_eq!(c.tls.client_ca.as_deref(), Some(Path::new("ca.pem")));
        let c = Config::from_toml(
            "[tls]\nlisten = \"127.0.0.1:0\"\ncert = \"c\"\nkey = \"k\"\nsts_port = 6697\n",
        )
        .unwrap();
        assert_eq!(c.tls.upgrade_port(), Some(6697));
        let c = Config::from_toml(
            "[tls]\nlisten = \"127.0.0.1:6697\"\ncert = \"c\"\nkey = \"k\"\nsts = false\n",
        )
        .unwrap();
        assert_eq!(c.tls.upgrade_port(), None);
        for bad in [
            "[tls]\nlisten = \"127.0.0.1:6697\"\n",
            "[tls]\nlisten = \"127.0.0.1:6697\"\ncert = \"c\"\n",
            "[tls]\ncert = \"c\"\nkey = \"k\"\n",
            "[tls]\nlisten = \"nowhere\"\ncert = \"c\"\nkey = \"k\"\n",
            "[tls]\nlisten = \"127.0.0.1:6697\"\ncert = \"c\"\nkey = \"k\"\nsts_port = 0\n",
            "[tls]\nlisten = \"127.0.0.1:6697\"\ncert = \"c\"\nkey = \"k\"\n\
             sts_duration_secs = 999999999999\n",
            "[tls]\nlisten = \"127.0.0.1:6697\"\ncert = \"c\"\nkey = \"k\"\ncafile = \"x\"\n",
        ] {
            assert!(Config::from_toml(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn websocket_section_and_its_checks() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.websocket.listeners(), 0);
        assert_eq!(c.websocket.request_timeout_secs, 10);
        let c = Config::from_toml(
            "[websocket]\nlisten = \"127.0.0.1:8067\"\nallowed_origins = [\"https://a.example\"]\n",
        )
        .unwrap();
        assert_eq!(
            c.websocket.listen,
            [SocketAddr::from(([127, 0, 0, 1], 8067))]
        );
        assert_eq!(c.websocket.allowed_origins, ["https://a.example"]);
        // wss needs the [tls] certificate, and the certificate alone is enough
        // for wss without an IRC TLS listener.
        assert!(Config::from_toml("[websocket]\ntls_listen = \"127.0.0.1:8097\"\n").is_err());
        let c = Config::from_toml(
            "[websocket]\ntls_listen = [\"127.0.0.1:8097\"]\n[tls]\ncert = \"c\"\nkey = \"k\"\n",
        )
        .unwrap();
        assert_eq!(c.websocket.listeners(), 1);
        assert!(crate::tls_options(&c.tls).is_some());
        for bad in [
            "[websocket]\nrequest_timeout_secs = 0\n",
            "[websocket]\nallowed_origins = [\"\"]\n",
            "[websocket]\nallowed_origins = [\"a b\"]\n",
            "[websocket]\nlisten = \"nowhere\"\n",
        ] {
            assert!(Config::from_toml(bad).is_err(), "{bad}");
        }
        let o = Overrides {
            websocket_listen: vec![SocketAddr::from(([127, 0, 0, 1], 1))],
            ..Overrides::default()
        };
        let mut c = Config::from_toml("[websocket]\nlisten = \"127.0.0.1:2\"\n").unwrap();
        o.apply(&mut c);
        assert_eq!(c.websocket.listen, o.websocket_listen);
        // Restart-only: a rehash keeps the listeners.
        let new = Config::from_toml("[websocket]\nlisten = \"127.0.0.1:3\"\n").unwrap();
        let (merged, kept) = c.rehash(new);
        assert_eq!(kept, ["websocket.listen"]);
        assert_eq!(merged.websocket.listen, c.websocket.listen);
    }

    #[test]
    fn overrides_complete_a_file_and_rehash_keeps_tls_listeners() {
        let o = Overrides {
            admin_listen: None,
            tls_listen: vec![SocketAddr::from(([127, 0, 0, 1], 6697))],
            tls_cert: Some("cli.pem".into()),
            tls_key: Some("cli.key".into()),
            data_dir: None,
            no_history: false,
            ..Overrides::default()
        };
        let c = Config::from_overrides(&o).expect("the flags alone");
        assert_eq!(c.tls.cert.as_deref(), Some(Path::new("cli.pem")));
        let half = Overrides {
            tls_key: None,
            ..o.clone()
        };
        assert!(Config::from_overrides(&half).is_err());

        let old = Config::from_overrides(&o).unwrap();
        // New certificate paths and sts settings apply; the listeners stay.
        let new = Config::from_toml(
            "[tls]\nlisten = \"127.0.0.1:7000\"\ncert = \"new.pem\"\nkey = \"new.key\"\n\
             sts_duration_secs = 60\n",
        )
        .unwrap();
        let (merged, kept) = old.rehash(new);
        assert_eq!(kept, ["tls.listen"]);
        assert_eq!(merged.tls.listen, old.tls.listen);
        assert_eq!(merged.tls.cert.as_deref(), Some(Path::new("new.pem")));
        assert_eq!(merged.tls.sts_duration_secs, 60);
        // A file without [tls] cannot turn TLS off: the running files stay.
        let (merged, kept) = old.rehash(Config::from_toml("").unwrap());
        assert_eq!(kept, ["tls.listen"]);
        assert_eq!(merged.tls.cert, old.tls.cert);
        assert_eq!(merged.tls.key, old.tls.key);
    }

    #[test]
    fn storage_and_history_keys() {
        let c = Config::default();
        assert!(c.history.enabled);
        assert_eq!(c.storage.sync_policy(), SyncPolicy::default());
        assert_eq!(c.history.limits(), HistoryLimits::default());
        let c = Config::from_toml(
            "[storage]\ndir = \"/tmp/x\"\nsync = \"batch:20\"\n\
             [history]\nchannel_messages = 5\nconversation_messages = 0\nmax_age_secs = 60\n",
        )
        .expect("valid");
        assert_eq!(c.storage.data_dir(), PathBuf::from("/tmp/x"));
        assert_eq!(
            c.storage.sync_policy(),
            SyncPolicy::Batch { interval_ms: 20 }
        );
        assert_eq!(
            c.history.limits(),
            HistoryLimits {
                channel_messages: 5,
                conversation_messages: 0,
                max_age_ms: 60_000
            }
        );
        for sync in ["always", "none", "batch"] {
            assert!(Config::from_toml(&format!("[storage]\nsync = \"{sync}\"\n")).is_ok());
        }
        for bad in [
            "[storage]\nsync = \"sometimes\"\n",
            "[storage]\nsync = \"batch:0\"\n",
            "[storage]\ndir = \"\"\n",
            "[history]\nmax_request = 0\n",
            "[history]\nlimit = 3\n",
        ] {
            assert!(Config::from_toml(bad).is_err(), "{bad}");
        }
        // Bounds rehash; the store and the advertised maximum need a restart.
        let old = Config::default();
        let new = Config::from_toml(
            "[storage]\nsync = \"always\"\n[history]\nenabled = false\nmax_request = 7\n\
             channel_messages = 3\nmax_age_secs = 9\n",
        )
        .unwrap();
        let (merged, kept) = old.rehash(new);
        assert_eq!(merged.history.channel_messages, 3);
        assert_eq!(merged.history.max_age_secs, 9);
        assert!(merged.history.enabled);
        assert_eq!(merged.history.max_request, 100);
        assert_eq!(merged.storage.sync, "batch");
        assert_eq!(
            kept,
            ["storage.sync", "history.enabled", "history.max_request"]
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!(Config::from_toml("[server]\nnmae = \"x\"\n").is_err());
        assert!(Config::from_toml("[server]\nname = \"no dots\"\n").is_err());
        assert!(Config::from_toml("[limits]\nnicklen = 0\n").is_err());
        assert!(Config::from_toml("[limits]\nwhowas_per_nick = 0\n").is_err());
        assert!(Config::from_toml("[limits]\nwhowas = 1000001\n").is_err());
        assert!(Config::from_toml("[limits]\nwhowas = 0\n").is_ok());
        assert!(Config::from_toml("[limits]\nping_timeout_secs = -1\n").is_err());
        assert!(Config::from_toml("[flood]\ncommand_cost_ms = 0\n").is_err());
        assert!(Config::from_toml("[[operators]]\nname = \"a\"\npassword = \"\"\n").is_err());
    }

    #[test]
    fn filehost_section() {
        let c = Config::from_toml(
            "[filehost]\nmax_file_bytes = 10\nquota_bytes = 20\nexpire_days = 0.5\n\
             public_url = \"https://f.example\"\n",
        )
        .unwrap();
        assert_eq!(
            (c.filehost.max_file_bytes, c.filehost.quota_bytes),
            (10, 20)
        );
        assert_eq!(c.filehost.expiry(), Duration::from_secs(43_200));
        // Default: on with history and a WebSocket listener.
        assert!(c.filehost.on(true, 1));
        assert!(!c.filehost.on(false, 1) && !c.filehost.on(true, 0));
        assert!(c.warnings().is_empty());
        let asked = Config::from_toml("[filehost]\nenabled = true\n").unwrap();
        assert!(asked.warnings()[0].contains("filehost"), "no listener");
        let off = Config::from_toml("[filehost]\nenabled = false\n").unwrap();
        assert!(!off.filehost.on(true, 1));
        assert!(Config::from_toml("[filehost]\nmax_bytes = 1\n").is_err());
        for good in [
            "http://127.0.0.1:8080",
            "https://f.example/chat/",
            "https://[::1]:1",
        ] {
            let text = format!("[filehost]\npublic_url = \"{good}\"\n");
            assert!(Config::from_toml(&text).is_ok(), "{good}");
        }
        for bad in [
            "f.example",
            "ftp://f.example",
            "https://",
            "https:///path",
            "https://f.example/a b",
            "https://f.example/?x=1",
            "https://f.example/#top",
            "",
        ] {
            let text = format!("[filehost]\npublic_url = \"{bad}\"\n");
            let err = Config::from_toml(&text).expect_err(bad).to_string();
            assert!(err.contains("filehost.public_url"), "{bad}: {err}");
        }
    }

    #[test]
    fn operator_passwords_hash_or_plaintext_with_a_warning() {
        let hash = "$argon2id$v=19$m=16384,t=2,p=1$c2FsdHNhbHRzYWx0$aKYGoKS5Dl1OzlEn1ZIXi7M2XGdxu5fG6AtewZsq6nE";
        let text = format!(
            "[[operators]]\nname = \"h\"\npassword = \"{hash}\"\n\
             [[operators]]\nname = \"p\"\npassword = \"plain\"\n"
        );
        let c = Config::from_toml(&text).expect("a hash and a plaintext password");
        let warnings = c.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("operator p") && warnings[0].contains("plaintext"));
        assert!(
            !warnings[0].contains("plain\""),
            "the password is not logged"
        );
        // Something that claims to be a hash must be one.
        let bad = "[[operators]]\nname = \"h\"\npassword = \"$argon2id$nonsense\"\n";
        assert!(Config::from_toml(bad).is_err());
        assert!(Config::from_toml("").unwrap().warnings().is_empty());
    }

    #[test]
    fn accounts_section() {
        let c = Config::default();
        assert!(!c.accounts.enforce_nick);
        assert_eq!(c.accounts.enforce_nick_grace(), Duration::from_secs(30));
        let c = Config::from_toml("[accounts]\nenforce_nick = true\nenforce_nick_grace_secs = 5\n")
            .expect("valid");
        assert!(c.accounts.enforce_nick);
        assert_eq!(c.accounts.enforce_nick_grace(), Duration::from_secs(5));
        for bad in [
            "[accounts]\nenforce_nick_grace_secs = 0\n",
            "[accounts]\nenforce_nick_grace_secs = -1\n",
            "[accounts]\nenforce_nick_grace_secs = 100000\n",
            "[accounts]\nenforce = true\n",
        ] {
            assert!(Config::from_toml(bad).is_err(), "{bad}");
        }
        // It changes at run time.
        let (merged, kept) = Config::default()
            .rehash(Config::from_toml("[accounts]\nenforce_nick = true\n").unwrap());
        assert!(merged.accounts.enforce_nick);
        assert!(kept.is_empty());
    }
}
