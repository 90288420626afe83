//! `shardline-bench`: echo load, peer comparison, shard scaling, idle memory and
//! mailbox benchmarks for Shardline. See bench/README.md.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use shardline::{AcceptMode, Io};
use shardline_bench::{
    chat,
    client::{self, ClientIo, LoadConfig, Mode},
    compare, engines,
    experiment::{Probe, WindowMarks},
    idle, l4, links,
    machine::{self, MachineInfo},
    mailbox, proxy, report, scale, serve,
    servers::{self, Launch, PeerSelection, ServerProc, ServerSpec},
};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Benchmarks for Shardline: echo load, peer comparison, scaling, idle memory, mailboxes, IRC fan-out, HTTP proxies"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Ping-pong echo load against one server (closed loop, or open loop with --rate).
    Echo(EchoArgs),
    /// Shardline (uring, epoll) against the peers, interleaved over rounds; ratios to
    /// shardline-uring.
    Compare(CompareArgs),
    /// Shardline at 1..=N shards per backend and accept mode; JSON and an SVG plot.
    Scale(ScaleArgs),
    /// Server RSS per idle connection, for Shardline and the peers.
    Idle(IdleArgs),
    /// Cross-shard mailbox throughput and wake latency, beside crossbeam-channel and
    /// std mpsc.
    Mailbox(MailboxArgs),
    /// Per-shard engine links against one bridge per node (issue 16): Redis CPU,
    /// harness CPU and latency per delivery for both layouts, with the framework
    /// mailbox's hand-off cost measured in the same run.
    EngineLinks(EngineLinksArgs),
    /// Cross-shard cost model: a chat message's fan-out projected to 8, 32 and 64
    /// shards from the mailbox and chat results (no measurement of its own).
    Model(ModelArgs),
    /// IRC fan-out: shardline-chat (uring, epoll) against ngircd and InspIRCd, burst and paced,
    /// interleaved over rounds; deliveries/s, server CPU per delivery, latency,
    /// completeness and order.
    Chat(ChatArgs),
    /// HTTP reverse proxies under wrk: shardline-proxy (uring, epoll) against
    /// HAProxy and nginx in front of one nginx backend, interleaved over rounds;
    /// req/s, req/s per proxy CPU-second, latency added over a direct run.
    Proxy(ProxyArgs),
    /// Bulk L4 relaying through shardline-proxy, copy against splice, per I/O
    /// backend, interleaved over rounds: proxy CPU-seconds per GiB and the ratio
    /// splice/copy.
    L4(L4Args),
    /// How many concurrent connections servers hold and serve: 50,000 by
    /// default, from several worker processes and 127.0.x.y source addresses,
    /// through shardline-proxy (HTTP keep-alive to nginx), HAProxy, nginx and
    /// shardline-chat (registered idle IRC clients); RSS per connection and
    /// server CPU with a few connections active.
    Connections(ConnsArgs),
    /// One load process of `connections` (run by it).
    #[command(hide = true)]
    ConnsWorker(ConnsWorkerArgs),
    /// Redis 7 and NATS as the message engine joining shardline-chat nodes
    /// (issue 16): fan-out deliveries/s, latency, engine CPU per delivery, order
    /// across subscribers, atomic claims, and an engine restart mid-stream.
    Engines(EnginesArgs),
    /// The Shardline echo server the other subcommands run (prints `listening on
    /// ADDR`, stops on SIGTERM).
    Serve(ServeArgs),
}

fn secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("{s:?} is not a non-negative number of seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// A CPU list argument (`0,2-3`).
#[derive(Debug, Clone)]
struct CpuList(Vec<usize>);

fn cpu_list(s: &str) -> Result<CpuList, String> {
    machine::parse_cpus(s).map(CpuList)
}

/// A list of message sizes (`100,1k`).
#[derive(Debug, Clone)]
struct Sizes(Vec<usize>);

fn sizes(s: &str) -> Result<Sizes, String> {
    sizes_vec(s).map(Sizes)
}

fn size(s: &str) -> Result<usize, String> {
    match sizes_vec(s)?.as_slice() {
        [one] => Ok(*one),
        _ => Err(format!("{s:?}: give one message size")),
    }
}

fn sizes_vec(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .map(|x| {
            let x = x.trim().to_ascii_lowercase();
            let (num, mult) = match x.strip_suffix('k') {
                Some(n) => (n.to_owned(), 1024),
                None => (x.clone(), 1),
            };
            match num.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n * mult),
                _ => Err(format!("bad message size {x:?} (bytes, or NNk)")),
            }
        })
        .collect()
}

/// Connections of `echo` and `compare` (and `scale` outside --quick).
const DEFAULT_CONNS: usize = 64;
/// Warm-up of `echo` and `compare`.
const DEFAULT_WARMUP: Duration = Duration::from_millis(500);

/// Load options shared by the subcommands that run the echo client.
#[derive(Debug, Args)]
struct LoadArgs {
    /// Concurrent connections (default 64; `scale --quick`: 16 per shard of the
    /// largest shard count run, at least 64).
    #[arg(long)]
    conns: Option<usize>,
    /// Client threads, each with its own share of the connections and its own
    /// event loop; results are merged (default 1; `scale`: one per client CPU).
    #[arg(long)]
    client_threads: Option<usize>,
    /// Warm-up before each measured window, seconds (default 0.5; `scale
    /// --quick`: 1).
    #[arg(long, value_parser = secs)]
    warmup: Option<Duration>,
    /// Measured window, seconds (default 2; `compare`: 1.5, so that its default run
    /// of 9 servers × 2 sizes × 5 rounds stays near 3 minutes; `scale --quick`: 3).
    #[arg(long, value_parser = secs)]
    duration: Option<Duration>,
    /// Client engine.
    #[arg(long, value_enum, default_value_t = ClientIo::Uring)]
    client_io: ClientIo,
    /// compare/scale: a run during which other processes used more than this % of
    /// one CPU is measured again.
    #[arg(long, default_value_t = 10.0)]
    max_foreign_pct: f64,
    /// compare/scale: how many times a noisy run is measured again (the quietest
    /// attempt is kept).
    #[arg(long, default_value_t = 1)]
    retries: usize,
}

#[derive(Debug, Args)]
struct EchoArgs {
    /// A running echo server to load.
    #[arg(long, conflicts_with = "server")]
    addr: Option<SocketAddr>,
    /// Or start one: shardline-uring, shardline-epoll, or a peer name.
    #[arg(long)]
    server: Option<String>,
    /// Shards/threads of the started server.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// CPUs of the started server (default: the first CPU).
    #[arg(long, value_parser = cpu_list)]
    server_cpus: Option<CpuList>,
    /// Message size in bytes (`1k` = 1024).
    #[arg(long, default_value = "100", value_parser = size)]
    size: usize,
    /// The peers' Cargo workspace (for a peer `--server`).
    #[arg(long)]
    peers_dir: Option<PathBuf>,
    /// Open loop at this many requests per second (all connections together); latency
    /// is measured from each request's due time. Default: closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// CPUs the client threads are pinned to (default: the second CPU if a server is
    /// started, else unpinned).
    #[arg(long, value_parser = cpu_list)]
    client_cpus: Option<CpuList>,
    #[command(flatten)]
    load: LoadArgs,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// Peers: all, none, or a comma-separated list.
    #[arg(long, default_value = "all")]
    peers: PeerSelection,
    /// The peers' Cargo workspace.
    #[arg(long)]
    peers_dir: Option<PathBuf>,
    /// Message sizes (bytes; `1k` = 1024).
    #[arg(long, default_value = "100,1024", value_parser = sizes)]
    sizes: Sizes,
    /// Rounds; every server runs once per round, medians are quoted.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Shards/threads of every server.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Server CPUs (default: the first `threads` CPUs).
    #[arg(long, value_parser = cpu_list)]
    server_cpus: Option<CpuList>,
    /// Client CPUs (default: the next CPU).
    #[arg(long, value_parser = cpu_list)]
    client_cpus: Option<CpuList>,
    #[command(flatten)]
    load: LoadArgs,
    /// Write results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ScaleArgs {
    /// The quick profile: shard counts 1,2,4,8,12 (those that fit the server
    /// CPUs), uring and epoll, reuseport, 1 round, 1 s warm-up + 3 s window; the
    /// other flags override its values.
    #[arg(long)]
    quick: bool,
    /// Largest shard count: runs 1..=N (default: the server CPUs; counts that
    /// do not fit them are skipped). With --quick: its counts up to N.
    #[arg(long, conflicts_with = "shards")]
    max_shards: Option<usize>,
    /// These shard counts (`1,2,4`; those that do not fit the server CPUs are
    /// skipped).
    #[arg(long, value_delimiter = ',')]
    shards: Option<Vec<usize>>,
    /// Backends (default uring,epoll).
    #[arg(long, value_delimiter = ',')]
    backends: Option<Vec<Io>>,
    /// Accept modes (default reuseport,exclusive,handoff; --quick: reuseport).
    #[arg(long, value_delimiter = ',')]
    accept: Option<Vec<AcceptMode>>,
    /// Message size in bytes (`1k` = 1024).
    #[arg(long, default_value = "100", value_parser = size)]
    size: usize,
    /// Rounds (medians are plotted; default 3, --quick: 1).
    #[arg(long)]
    rounds: Option<usize>,
    /// Server CPU set: shards at N run on its first N CPUs, one each (default:
    /// the CPUs this process may use).
    #[arg(long, value_parser = cpu_list)]
    server_cpus: Option<CpuList>,
    /// Client CPU set, for every shard count (default: the allowed CPUs the
    /// shards leave free; unpinned when they take every CPU).
    #[arg(long, value_parser = cpu_list)]
    client_cpus: Option<CpuList>,
    #[command(flatten)]
    load: LoadArgs,
    /// Results as JSON.
    #[arg(long, default_value = "scale.json")]
    json: PathBuf,
    /// The plot (default: the JSON path with .svg).
    #[arg(long)]
    svg: Option<PathBuf>,
}

/// `scale`'s configuration: the profile's values, overridden by every flag given.
fn scale_config(a: &ScaleArgs, exe: PathBuf) -> scale::ScaleConfig {
    let p = if a.quick {
        scale::Profile::quick()
    } else {
        scale::Profile::full()
    };
    let shards = match (&a.shards, a.max_shards, &p.shards) {
        (Some(list), _, _) => scale::ShardChoice::List(list.clone()),
        (None, Some(n), scale::ShardChoice::List(v)) => {
            scale::ShardChoice::List(v.iter().copied().filter(|&c| c <= n).collect())
        }
        (None, Some(n), scale::ShardChoice::UpTo(_)) => scale::ShardChoice::UpTo(Some(n)),
        (None, None, _) => p.shards.clone(),
    };
    let mut cfg = scale::ScaleConfig::from_profile(exe, p);
    cfg.shards = shards;
    if let Some(b) = &a.backends {
        cfg.backends = b.clone();
    }
    if let Some(m) = &a.accept {
        cfg.accept = m.clone();
    }
    if let Some(r) = a.rounds {
        cfg.rounds = r;
    }
    if let Some(w) = a.load.warmup {
        cfg.warmup = w;
    }
    if let Some(d) = a.load.duration {
        cfg.duration = d;
    }
    cfg.msg_size = a.size;
    cfg.conns = a.load.conns;
    cfg.server_cpus = a.server_cpus.as_ref().map(|c| c.0.clone());
    cfg.client_cpus = a.client_cpus.as_ref().map(|c| c.0.clone());
    cfg.client_threads = a.load.client_threads;
    cfg.client_io = a.load.client_io;
    cfg.max_foreign_pct = a.load.max_foreign_pct;
    cfg.retries = a.load.retries;
    cfg
}

#[derive(Debug, Args)]
struct IdleArgs {
    /// Idle connections to hold (default: RLIMIT_NOFILE minus headroom).
    #[arg(long)]
    conns: Option<usize>,
    /// Peers: all, none, or a comma-separated list.
    #[arg(long, default_value = "all")]
    peers: PeerSelection,
    /// The peers' Cargo workspace.
    #[arg(long)]
    peers_dir: Option<PathBuf>,
    /// Source addresses 127.0.0.2 .. 127.0.0.(1+N) the connections come from.
    #[arg(long, default_value_t = 4)]
    sources: u8,
    /// Send one 16-byte echo on every connection before measuring (exercises the
    /// read path, so buffers a server keeps after a read are counted).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    ping: bool,
    /// Server CPU.
    #[arg(long, value_parser = cpu_list)]
    server_cpus: Option<CpuList>,
    /// Write results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct MailboxArgs {
    /// Messages streamed per throughput run.
    #[arg(long, default_value_t = 2_000_000)]
    messages: u64,
    /// Ping-pongs per wake-latency run.
    #[arg(long, default_value_t = 1_000)]
    pings: u64,
    /// Backends.
    #[arg(long, value_delimiter = ',', default_value = "uring,epoll")]
    backends: Vec<Io>,
    /// Write results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ModelArgs {
    /// `mailbox --json` output (needs stream_cpu_ns_per_msg, wake_cpu_us_per_msg).
    #[arg(long, default_value = "bench/results/mailbox.json")]
    mailbox: PathBuf,
    /// `chat --json` output (paced and burst rows).
    #[arg(long, default_value = "bench/results/chat.json")]
    chat: PathBuf,
    /// Which backend's rows: uring or epoll.
    #[arg(long, default_value = "uring")]
    backend: String,
}

#[derive(Debug, Args)]
struct ChatArgs {
    /// Servers, run in this order every round: shardline-uring, shardline-epoll,
    /// ngircd, inspircd, shardline-uring-nohistory, shardline-epoll-nohistory
    /// (default: the first four; with --history-compare shardline-uring,
    /// shardline-uring-nohistory). A shardline name may end in @off,
    /// @pace=US or @delay=US: its write coalescing (`[limits] flush_mode`,
    /// `flush_delay_us`; generated config only).
    #[arg(long, value_delimiter = ',', value_parser = chat::ChatServer::parse)]
    servers: Option<Vec<chat::ChatServer>>,
    /// Load a running IRC server instead (no server CPU accounting).
    #[arg(long, conflicts_with = "servers")]
    addr: Option<SocketAddr>,
    /// shardline-chat shards.
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// Server CPUs: shard i of shardline-chat on the i-th, ngircd on the first
    /// (default: the first `shards` CPUs).
    #[arg(long, value_parser = cpu_list)]
    server_cpus: Option<CpuList>,
    /// Client CPUs (default: the CPUs the server leaves free; unpinned if none).
    #[arg(long, value_parser = cpu_list)]
    client_cpus: Option<CpuList>,
    /// Rounds; every server runs once per round (every shape on one process),
    /// medians are quoted.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Load shapes, in order (default: burst,paced; with --history-compare paced).
    #[arg(long, value_delimiter = ',')]
    shapes: Option<Vec<chat::Shape>>,
    /// Rooms (R).
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Members per room (S), senders included; clients C = R·S.
    #[arg(long, default_value_t = 100)]
    room_size: usize,
    /// burst: senders per room.
    #[arg(long, default_value_t = 1)]
    burst_senders: usize,
    /// burst: messages per sender.
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// paced: senders per room.
    #[arg(long, default_value_t = 10)]
    paced_senders: usize,
    /// paced: messages per second per sender.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    /// paced: how long the senders send, seconds.
    #[arg(long, default_value = "3", value_parser = secs)]
    duration: Duration,
    /// Bytes of message text.
    #[arg(long, default_value_t = 64)]
    text_size: usize,
    /// How long deliveries may take after the last message was due, seconds.
    #[arg(long, default_value = "30", value_parser = secs)]
    timeout: Duration,
    /// The shardline-chat binary (default: target/release/shardline-chat, built
    /// with cargo if missing).
    #[arg(long)]
    chat_exe: Option<PathBuf>,
    /// A shardline-chat config file (default: a generated one).
    #[arg(long)]
    chat_config: Option<PathBuf>,
    /// Run shardline-chat without message history (`--no-history`; by default
    /// it keeps history, in a scratch data directory, as it does by default).
    #[arg(long)]
    chat_no_history: bool,
    /// --nodes: the nodes' `cluster.catchup_messages` (the Redis stream per
    /// partition a node catches up from; 0: none, so no XADD per message).
    /// Default: the chat's own (1000).
    #[arg(long, requires = "nodes")]
    cluster_catchup: Option<usize>,
    /// History on against off: shardline-chat with history and without
    /// (`NAME` and `NAME-nohistory`, interleaved), the ratio of their CPU per
    /// delivery against the target (≤ 1.15×), and the CHATHISTORY probe in
    /// every run (it asks where history is on). Defaults to --servers
    /// shardline-uring,shardline-uring-nohistory --shapes paced.
    #[arg(long, conflicts_with_all = ["chat_no_history", "addr"])]
    history_compare: bool,
    /// Write coalescing against the targets (paced p50 ≤ 1.2× ngircd's,
    /// CPU per delivery ≤ 0.5× ngircd's): shardline-chat (uring) without
    /// coalescing, paced at 500, 1000 and 2000 µs, with the fixed 2000 µs
    /// delay, and ngircd. Defaults to --servers shardline-uring@off,
    /// shardline-uring@pace=500, shardline-uring@pace=1000,
    /// shardline-uring@pace=2000, shardline-uring@delay=2000, ngircd --shapes
    /// paced.
    #[arg(long, conflicts_with_all = ["history_compare", "addr", "chat_config"])]
    coalesce_compare: bool,
    /// Cross-node against one node (issue 16): shardline-chat as N nodes
    /// joined through a Redis of their own (`shardline-uring-xN`, clients
    /// spread over the nodes, the shards split between them) against one
    /// node with the same total shards (`--shards`, default N here);
    /// server CPU counts every node and Redis, whose share is shown. Defaults
    /// to --servers shardline-uring,shardline-uring-xN.
    #[arg(long, value_parser = clap::value_parser!(u16).range(2..=16),
          conflicts_with_all = ["history_compare", "coalesce_compare", "addr", "chat_config"])]
    nodes: Option<u16>,
    /// --history-compare: CHATHISTORY requests per second of the probe (one
    /// outstanding at a time; 0: no probe).
    #[arg(long, default_value_t = 20.0)]
    probe_rate: f64,
    /// --history-compare: the probe's limit, `CHATHISTORY LATEST #room * N`.
    #[arg(long, default_value_t = 100)]
    probe_limit: usize,
    /// The ngircd binary.
    #[arg(long, default_value = servers::NGIRCD_EXE)]
    ngircd: PathBuf,
    /// The InspIRCd 3 binary.
    #[arg(long, default_value = servers::INSPIRCD_EXE)]
    inspircd: PathBuf,
    /// A run during which other processes used more than this % of one CPU is
    /// measured again.
    #[arg(long, default_value_t = 10.0)]
    max_foreign_pct: f64,
    /// How many times a noisy run is measured again (the quietest is kept).
    #[arg(long, default_value_t = 1)]
    retries: usize,
    /// Write results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ConnsArgs {
    /// Connections per server.
    #[arg(long, default_value_t = 50_000)]
    conns: usize,
    /// Of which this many stay busy (request after request) during the hold.
    #[arg(long, default_value_t = 100)]
    active: usize,
    /// Servers, in order: shardline-proxy-uring, shardline-proxy-epoll,
    /// haproxy, nginx, shardline-chat-uring, shardline-chat-epoll.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "shardline-proxy-uring,haproxy,nginx,shardline-chat-uring"
    )]
    servers: Vec<String>,
    /// Shards of the Shardline servers, threads of HAProxy, workers of nginx.
    /// io_uring direct descriptors hold up to the fd limit per shard: 3 shards
    /// hold 50,000 here.
    #[arg(long, default_value_t = 3)]
    shards: usize,
    /// How long the connections are held (with the active ones busy), seconds.
    #[arg(long, default_value = "10", value_parser = secs)]
    hold: Duration,
    /// How long opening and serving every connection may take, seconds.
    #[arg(long, default_value = "120", value_parser = secs)]
    setup: Duration,
    /// The shardline-proxy binary (default: target/release, built if missing).
    #[arg(long)]
    proxy_exe: Option<PathBuf>,
    /// The shardline-chat binary (default: target/release, built if missing).
    #[arg(long)]
    chat_exe: Option<PathBuf>,
    /// The nginx binary (backend, and a proxy under test).
    #[arg(long, default_value = servers::NGINX_EXE)]
    nginx: PathBuf,
    /// The HAProxy binary.
    #[arg(long, default_value = servers::HAPROXY_EXE)]
    haproxy: PathBuf,
    /// Write results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ConnsWorkerArgs {
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, value_delimiter = ',')]
    sources: Vec<std::net::IpAddr>,
    #[arg(long)]
    conns: usize,
    #[arg(long)]
    active: usize,
    #[arg(long, value_enum)]
    proto: shardline_bench::conns::worker::Proto,
    #[arg(long, default_value = "n")]
    nick_prefix: String,
    #[arg(long, default_value_t = 120)]
    setup_secs: u64,
}

#[derive(Debug, Args)]
struct L4Args {
    /// I/O backends to measure.
    #[arg(long = "io", value_delimiter = ',', default_value = "uring,epoll")]
    ios: Vec<Io>,
    /// Concurrent connections, each moving `--mib` up and down at once.
    #[arg(long, default_value_t = 16)]
    conns: usize,
    /// MiB per connection and direction.
    #[arg(long, default_value_t = 32)]
    mib: usize,
    /// Rounds; every variant runs once per round, medians are quoted.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The proxy's CPU (clients and backend run on another).
    #[arg(long, default_value_t = 0)]
    proxy_cpu: usize,
    /// The proxy's `[limits] send_high_water`.
    #[arg(long, default_value_t = 256 << 10)]
    send_high_water: usize,
    /// The shardline-proxy binary (default: target/release/shardline-proxy, built
    /// with cargo if missing).
    #[arg(long)]
    proxy_exe: Option<PathBuf>,
    /// Write results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ProxyArgs {
    /// Proxies, run in this order every round (`direct`: wrk against the backend
    /// itself, for the latency a proxy adds): direct, shardline-uring,
    /// shardline-epoll, haproxy, nginx.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,shardline-uring,shardline-epoll,haproxy,nginx",
        value_parser = proxy::Proxy::parse
    )]
    proxies: Vec<proxy::Proxy>,
    /// Workers of every proxy: shardline-proxy shards, HAProxy threads, nginx
    /// worker processes.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// wrk connections (`-c`); every upstream keep-alive pool is at least this big.
    #[arg(long, default_value_t = 64)]
    conns: usize,
    /// wrk threads (`-t`).
    #[arg(long, default_value_t = 1)]
    wrk_threads: usize,
    /// Rounds; every proxy runs once per round, medians are quoted.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Unrecorded wrk run before each measured one, whole seconds (0: none).
    #[arg(long, default_value_t = 1)]
    warmup: u64,
    /// Measured wrk run, whole seconds.
    #[arg(long, default_value_t = 5)]
    duration: u64,
    /// wrk's --timeout, whole seconds.
    #[arg(long, default_value_t = 2)]
    wrk_timeout: u64,
    /// Proxy CPUs (default: the first `workers` CPUs).
    #[arg(long, value_parser = cpu_list)]
    proxy_cpus: Option<CpuList>,
    /// wrk CPUs (default: the next CPU).
    #[arg(long, value_parser = cpu_list)]
    client_cpus: Option<CpuList>,
    /// Backend nginx CPUs (default: a CPU neither the proxy nor wrk uses, else
    /// wrk's).
    #[arg(long, value_parser = cpu_list)]
    backend_cpus: Option<CpuList>,
    /// The shardline-proxy binary (default: target/release/shardline-proxy, built
    /// with cargo if missing).
    #[arg(long)]
    proxy_exe: Option<PathBuf>,
    /// The nginx binary (backend and proxy).
    #[arg(long, default_value = servers::NGINX_EXE)]
    nginx: PathBuf,
    /// The HAProxy binary.
    #[arg(long, default_value = servers::HAPROXY_EXE)]
    haproxy: PathBuf,
    /// The wrk binary.
    #[arg(long, default_value = servers::WRK_EXE)]
    wrk: PathBuf,
    /// A run during which other processes used more than this % of one CPU is
    /// measured again.
    #[arg(long, default_value_t = 10.0)]
    max_foreign_pct: f64,
    /// How many times a noisy run is measured again (the quietest is kept).
    #[arg(long, default_value_t = 1)]
    retries: usize,
    /// Terminate TLS 1.3 on every proxy (one ECDSA P-256 certificate made for the
    /// run) and measure two modes: connections kept alive (wrk over https), and a
    /// new connection with a full handshake per request. `direct` is left out.
    #[arg(long)]
    tls: bool,
    /// With --tls: connections in flight in the handshake mode (16 keep one
    /// proxy worker busy here; more only lengthens the queue each waits in).
    #[arg(long, default_value_t = 16)]
    handshake_conns: usize,
    /// Write results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct EnginesArgs {
    /// Variants to run: redis (pub/sub), redis-streams (XADD/XREAD), redis-lua
    /// (XADD + PUBLISH in one script, pub/sub subscribers), nats (core), nats-js
    /// (JetStream); an engine whose binary is absent is skipped with a message.
    /// Claims and the restart test run for redis and nats.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "redis,redis-streams,redis-lua,nats,nats-js"
    )]
    variants: Vec<engines::Variant>,
    /// Publishers (one per node), each on its own connection.
    #[arg(long, default_value_t = 3)]
    publishers: usize,
    /// Subscribers (one per node), each on its own connection.
    #[arg(long, default_value_t = 3)]
    subscribers: usize,
    /// Messages per publisher and round.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Messages per write; the publisher waits for the batch's acknowledgement
    /// (Redis replies; NATS PONG) before the next (a shard's flush per loop turn).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Payload bytes (publisher, sequence and send time, then padding).
    #[arg(long, default_value = "100", value_parser = size)]
    payload: usize,
    /// Fan-out rounds, interleaved across variants; medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Atomic claims (Redis SET NX PX; NATS JetStream KV create): this many one
    /// round trip each, as many more --batch per write, then all of them again
    /// (which must lose); 0 skips.
    #[arg(long, default_value_t = 10_000)]
    claims: usize,
    /// Restart test: kill the engine mid-stream and start it again.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    restart: bool,
    /// Restart test: messages of the paced publisher (one per ms).
    #[arg(long, default_value_t = 3000)]
    restart_messages: usize,
    /// Restart test: how long the engine stays down, ms.
    #[arg(long, default_value_t = 500)]
    down_ms: u64,
    /// Write results as JSON here.
    #[arg(long, default_value = "bench/results/engines.json")]
    json: PathBuf,
}

#[derive(Debug, Args)]
struct EngineLinksArgs {
    /// Nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Shards per node; each count runs both layouts.
    #[arg(long, value_delimiter = ',', default_value = "2,4")]
    shards: Vec<usize>,
    /// Messages per shard's flush (the bridge writes shards × this at once).
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// Payload bytes (source, sequence and send time, then padding).
    #[arg(long, default_value = "100", value_parser = size)]
    payload: usize,
    /// Messages each node publishes per run (split over its shards).
    #[arg(long, default_value_t = 24_000)]
    messages: usize,
    /// Rounds, all cases interleaved in each; medians are reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Paced loads, RATExBATCH: messages/s over all nodes and messages per
    /// shard's flush ("" for none). Each paced run lasts --paced-secs.
    #[arg(long, default_value = "60000x16,6000x1", value_parser = links::parse_paced)]
    paced: std::vec::Vec<(f64, usize)>,
    /// Length of each paced run, seconds.
    #[arg(long, default_value_t = 1.0)]
    paced_secs: f64,
    /// Framework backend of the mailbox (hand-off) measurement.
    #[arg(long, default_value = "uring")]
    io: Io,
    /// Messages streamed per mailbox throughput run.
    #[arg(long, default_value_t = 2_000_000)]
    mailbox_messages: u64,
    /// Ping-pongs of the mailbox wake-latency run.
    #[arg(long, default_value_t = 1_000)]
    pings: u64,
    /// Write results as JSON here.
    #[arg(long, default_value = "bench/results/engine-links.json")]
    json: PathBuf,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// I/O backend: uring, epoll or auto.
    #[arg(long, default_value = "uring")]
    io: Io,
    /// Shards.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Accept mode: reuseport, exclusive, handoff, handoff-least.
    #[arg(long, default_value = "reuseport")]
    accept: AcceptMode,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:7000")]
    addr: SocketAddr,
    /// Pin shard i to the i-th CPU of this list.
    #[arg(long, value_parser = cpu_list)]
    cpus: Option<CpuList>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if !matches!(cli.cmd, Cmd::Serve(_)) {
        servers::install_signal_guard()?;
    }
    let exe = std::env::current_exe().context("finding this binary")?;
    match cli.cmd {
        Cmd::Serve(a) => serve::run(&serve::ServeConfig {
            io: a.io,
            shards: a.shards,
            accept: a.accept,
            addr: a.addr,
            cpus: a.cpus.map(|c| c.0).unwrap_or_default(),
        }),
        Cmd::Echo(a) => echo(a, exe),
        Cmd::Compare(a) => {
            let (server, client) = compare::default_pinning(a.threads);
            let cfg = compare::CompareConfig {
                serve_exe: exe,
                peers: a.peers,
                peers_dir: a.peers_dir.unwrap_or_else(servers::default_peers_dir),
                sizes: a.sizes.0,
                conns: a.load.conns.unwrap_or(DEFAULT_CONNS),
                rounds: a.rounds,
                threads: a.threads,
                server_cpus: a.server_cpus.map_or(server, |c| c.0),
                client_cpus: a.client_cpus.map_or(client, |c| c.0),
                client_threads: a.load.client_threads.unwrap_or(1),
                warmup: a.load.warmup.unwrap_or(DEFAULT_WARMUP),
                duration: a.load.duration.unwrap_or(Duration::from_millis(1500)),
                client_io: a.load.client_io,
                max_foreign_pct: a.load.max_foreign_pct,
                retries: a.load.retries,
            };
            let out = compare::run(&cfg)?;
            report::save_json(a.json.as_deref(), &out)
        }
        Cmd::Scale(a) => {
            let svg = a
                .svg
                .clone()
                .unwrap_or_else(|| a.json.with_extension("svg"));
            let cfg = scale_config(&a, exe);
            let out = scale::run(&cfg)?;
            report::write_json(&a.json, &out)?;
            scale::plot(&out, &svg)?;
            println!("wrote {} and {}", a.json.display(), svg.display());
            Ok(())
        }
        Cmd::Idle(a) => {
            let cfg = idle::IdleConfig {
                serve_exe: exe,
                conns: a.conns,
                peers: a.peers,
                peers_dir: a.peers_dir.unwrap_or_else(servers::default_peers_dir),
                sources: a.sources,
                ping: a.ping,
                server_cpus: a
                    .server_cpus
                    .map_or_else(|| compare::default_pinning(1).0, |c| c.0),
            };
            let out = idle::run(&cfg)?;
            report::save_json(a.json.as_deref(), &out)
        }
        Cmd::Chat(mut a) => {
            if let (Some(n), false) = (a.nodes, shards_given()) {
                a.shards = usize::from(n);
            }
            // Nodes run unpinned (several processes share the CPUs), and
            // so does the one node they are compared with, and the client.
            let (server, client) = if a.nodes.is_some() {
                (Vec::new(), Vec::new())
            } else {
                chat::default_pinning(a.shards)
            };
            let explicit = a.chat_exe.is_some();
            let coalesce_servers = chat::COALESCE_SERVERS.join(",");
            let node_servers = a
                .nodes
                .map(|n| format!("shardline-uring,shardline-uring-x{n}"))
                .unwrap_or_default();
            let (default_servers, default_shapes) = if a.nodes.is_some() {
                (node_servers.as_str(), "burst,paced")
            } else if a.history_compare {
                ("shardline-uring,shardline-uring-nohistory", "paced")
            } else if a.coalesce_compare {
                (coalesce_servers.as_str(), "paced")
            } else {
                (
                    "shardline-uring,shardline-epoll,ngircd,inspircd",
                    "burst,paced",
                )
            };
            let servers = match a.servers {
                Some(s) => s,
                None => default_servers
                    .split(',')
                    .map(chat::ChatServer::parse)
                    .collect::<Result<_, _>>()
                    .map_err(anyhow::Error::msg)?,
            };
            let shapes = a.shapes.unwrap_or_else(|| {
                default_shapes
                    .split(',')
                    .map(|s| {
                        <chat::Shape as clap::ValueEnum>::from_str(s, false)
                            .expect("the default shapes parse")
                    })
                    .collect()
            });
            let probe = (a.history_compare && a.probe_rate > 0.0).then_some(chat::ProbeSpec {
                rate: a.probe_rate,
                limit: a.probe_limit,
            });
            let cfg = chat::ChatConfig {
                servers: match a.addr {
                    Some(addr) => vec![chat::ChatServer::External {
                        name: addr.to_string(),
                        addr,
                        pid: None,
                    }],
                    None => servers,
                },
                chat_exe: a.chat_exe.unwrap_or_else(servers::default_chat_exe),
                build_chat: !explicit,
                chat_config: a.chat_config,
                chat_history: !a.chat_no_history,
                cluster_catchup: a.cluster_catchup,
                ngircd_exe: a.ngircd,
                inspircd_exe: a.inspircd,
                shards: a.shards,
                server_cpus: a.server_cpus.map_or(server, |c| c.0),
                client_cpus: a.client_cpus.map_or(client, |c| c.0),
                rounds: a.rounds,
                shapes,
                scenario: chat::Scenario {
                    rooms: a.rooms,
                    room_size: a.room_size,
                    burst_senders: a.burst_senders,
                    burst_messages: a.messages,
                    paced_senders: a.paced_senders,
                    paced_rate: a.rate,
                    paced_duration_s: a.duration.as_secs_f64(),
                    text_size: a.text_size,
                },
                timeout: a.timeout,
                max_foreign_pct: a.max_foreign_pct,
                retries: a.retries,
                probe,
            };
            let out = chat::run(&cfg)?;
            report::save_json(a.json.as_deref(), &out)
        }
        Cmd::Proxy(a) => {
            let (p, c, b) = proxy::default_pinning(a.workers);
            let explicit = a.proxy_exe.is_some();
            let cfg = proxy::ProxyConfig {
                proxies: a.proxies,
                proxy_exe: a.proxy_exe.unwrap_or_else(servers::default_proxy_exe),
                build_proxy: !explicit,
                nginx_exe: a.nginx,
                haproxy_exe: a.haproxy,
                wrk_exe: a.wrk,
                workers: a.workers,
                conns: a.conns,
                wrk_threads: a.wrk_threads,
                rounds: a.rounds,
                warmup_s: a.warmup,
                duration_s: a.duration,
                wrk_timeout_s: a.wrk_timeout,
                proxy_cpus: a.proxy_cpus.map_or(p, |x| x.0),
                client_cpus: a.client_cpus.map_or(c, |x| x.0),
                backend_cpus: a.backend_cpus.map_or(b, |x| x.0),
                max_foreign_pct: a.max_foreign_pct,
                retries: a.retries,
            };
            if a.tls {
                let out = proxy::run_tls(&cfg, a.handshake_conns)?;
                report::save_json(a.json.as_deref(), &out)
            } else {
                let out = proxy::run(&cfg)?;
                report::save_json(a.json.as_deref(), &out)
            }
        }
        Cmd::Connections(a) => {
            let proxy_exe = a
                .proxy_exe
                .clone()
                .unwrap_or_else(servers::default_proxy_exe);
            let chat_exe = a.chat_exe.clone().unwrap_or_else(servers::default_chat_exe);
            let wants = |p: &str| a.servers.iter().any(|s| s.starts_with(p));
            if wants("shardline-proxy") {
                servers::resolve_workspace_exe(
                    &proxy_exe,
                    "shardline-proxy",
                    a.proxy_exe.is_none(),
                )
                .map_err(anyhow::Error::msg)?;
            }
            if wants("shardline-chat") {
                servers::resolve_chat_exe(&chat_exe, a.chat_exe.is_none())
                    .map_err(anyhow::Error::msg)?;
            }
            let cfg = shardline_bench::conns::ConnsConfig {
                exe: exe.clone(),
                proxy_exe,
                chat_exe,
                nginx_exe: a.nginx,
                haproxy_exe: a.haproxy,
                servers: a.servers,
                conns: a.conns,
                active: a.active,
                hold: a.hold,
                setup_limit: a.setup,
                shards: a.shards,
            };
            let out = shardline_bench::conns::run(&cfg)?;
            report::save_json(a.json.as_deref(), &out)
        }
        Cmd::ConnsWorker(a) => {
            shardline_bench::conns::worker::run(shardline_bench::conns::worker::WorkerConfig {
                addr: a.addr,
                sources: a.sources,
                conns: a.conns,
                active: a.active,
                proto: a.proto,
                nick_prefix: a.nick_prefix,
                setup_limit: Duration::from_secs(a.setup_secs),
                connect_window: 256,
            })
        }
        Cmd::L4(a) => {
            let explicit = a.proxy_exe.is_some();
            let cfg = l4::L4Config {
                proxy_exe: a.proxy_exe.unwrap_or_else(servers::default_proxy_exe),
                build_proxy: !explicit,
                ios: a.ios,
                conns: a.conns,
                mib: a.mib,
                rounds: a.rounds,
                proxy_cpu: a.proxy_cpu,
                send_high_water: a.send_high_water,
            };
            let out = l4::run(&cfg)?;
            report::save_json(a.json.as_deref(), &out)
        }
        Cmd::Model(a) => {
            let inputs = shardline_bench::model::inputs(&a.mailbox, &a.chat, &a.backend)?;
            print!("{}", shardline_bench::model::render(&inputs));
            Ok(())
        }
        Cmd::Engines(a) => {
            let cfg = engines::EnginesConfig {
                variants: a.variants,
                publishers: a.publishers.max(1),
                subscribers: a.subscribers.max(1),
                messages: a.messages,
                batch: a.batch.max(1),
                payload: a.payload.max(32),
                rounds: a.rounds.max(1),
                claims: a.claims,
                restart: a.restart,
                restart_messages: a.restart_messages.max(100),
                down_ms: a.down_ms,
            };
            let out = engines::run(&cfg)?;
            print!("{}", engines::render(&out));
            report::save_json(Some(&a.json), &out)
        }
        Cmd::EngineLinks(a) => {
            let shards: Vec<usize> = a.shards.iter().map(|&s| s.clamp(1, 64)).collect();
            let cfg = links::LinksConfig {
                nodes: a.nodes.max(1),
                batch: a.batch.max(1),
                payload: a.payload.max(32),
                // Whole batches for every shard count.
                messages: links::whole_batches(a.messages, a.batch.max(1), &shards),
                shards,
                rounds: a.rounds.max(1),
                paced: a.paced,
                paced_secs: a.paced_secs.clamp(0.1, 10.0),
                io: a.io,
                mailbox_messages: a.mailbox_messages.max(mailbox::BATCH as u64),
                pings: a.pings.max(10),
            };
            let out = links::run(&cfg)?;
            print!("{}", links::render(&out));
            report::save_json(Some(&a.json), &out)
        }
        Cmd::Mailbox(a) => {
            let cfg = mailbox::MailboxConfig {
                messages: a.messages,
                pings: a.pings,
                backends: a.backends,
            };
            let out = mailbox::run(&cfg)?;
            report::save_json(a.json.as_deref(), &out)
        }
    }
}

#[derive(Debug, Serialize)]
struct EchoOutput {
    server: Option<String>,
    addr: SocketAddr,
    #[serde(flatten)]
    report: client::LoadReport,
    server_cpu_us_per_req: Option<f64>,
    machine: MachineInfo,
}

fn echo(a: EchoArgs, exe: PathBuf) -> anyhow::Result<()> {
    let (default_server, default_client) = compare::default_pinning(a.threads);
    let server = match &a.server {
        None => None,
        Some(name) => {
            let spec = match name.as_str() {
                "shardline-uring" => ServerSpec::shardline(Io::Uring),
                "shardline-uring-fd" => ServerSpec::shardline_uring_fd(),
                "shardline-epoll" => ServerSpec::shardline(Io::Epoll),
                peer => {
                    let sel: PeerSelection = peer.parse().map_err(anyhow::Error::msg)?;
                    let (mut specs, notes) = servers::resolve_peers(
                        &sel,
                        &a.peers_dir
                            .clone()
                            .unwrap_or_else(servers::default_peers_dir),
                    );
                    for n in &notes {
                        println!("note: {n}");
                    }
                    specs
                        .pop()
                        .with_context(|| format!("peer {peer} is not available"))?
                }
            };
            let launch = Launch {
                serve_exe: exe,
                threads: a.threads,
                cpus: a.server_cpus.clone().map_or(default_server, |c| c.0),
            };
            Some(ServerProc::start(&spec, &launch)?)
        }
    };
    let addr = match (&server, a.addr) {
        (Some(s), _) => s.addr,
        (None, Some(addr)) => addr,
        (None, None) => bail!("give --addr of a running echo server, or --server NAME"),
    };
    let client_cpus = match (a.client_cpus, &server) {
        (Some(c), _) => c.0,
        (None, Some(_)) => default_client,
        (None, None) => Vec::new(),
    };
    let cfg = LoadConfig {
        addr,
        conns: a.load.conns.unwrap_or(DEFAULT_CONNS),
        msg_size: a.size,
        mode: a.rate.map_or(Mode::Closed, |rate| Mode::Open { rate }),
        warmup: a.load.warmup.unwrap_or(DEFAULT_WARMUP),
        duration: a.load.duration.unwrap_or(Duration::from_secs(2)),
        cpus: client_cpus,
        io: a.load.client_io,
        threads: a.load.client_threads.unwrap_or(1),
    };
    let probes = [Probe::Process(server.as_ref().map(|s| s.pid))];
    let mut marks = WindowMarks::new(&probes);
    let rep = client::run_load(&cfg, &mut |w| marks.mark(w))?;
    let per_req = match marks.span().and_then(|s| s.probe(0)) {
        Some(server) if rep.requests > 0 => Some(server * 1e6 / rep.requests as f64),
        _ => None,
    };
    let l = &rep.latency;
    println!(
        "echo {addr}{}: {} conns, {} B, {}",
        a.server
            .as_deref()
            .map_or_else(String::new, |s| format!(" ({s})")),
        rep.conns,
        rep.msg_size,
        rep.mode
    );
    print!(
        "{}",
        report::table(
            &[
                "rps",
                "p50 µs",
                "p90 µs",
                "p99 µs",
                "p99.9 µs",
                "max µs",
                "errors",
                "client CPU %",
                "server CPU µs/req",
            ],
            &[vec![
                format!("{:.0}", rep.rps),
                format!("{:.1}", l.p50_us),
                format!("{:.1}", l.p90_us),
                format!("{:.1}", l.p99_us),
                format!("{:.1}", l.p999_us),
                format!("{:.1}", l.max_us),
                rep.errors.to_string(),
                format!("{:.0}", rep.client_cpu_pct),
                per_req.map_or_else(|| "-".into(), |c| format!("{c:.2}")),
            ]]
        )
    );
    if rep.backlog > 0 {
        println!(
            "open loop fell behind: {} requests were due but not yet sent at the end (the server, or the client, cannot keep this rate)",
            rep.backlog
        );
    }
    if let Some(p) = a.json {
        let out = EchoOutput {
            server: a.server.clone(),
            addr,
            report: rep,
            server_cpu_us_per_req: per_req,
            machine: MachineInfo::read(),
        };
        report::write_json(&p, &out)?;
        println!("wrote {}", p.display());
    }
    Ok(())
}

/// Whether `--shards` was on the command line (for `chat --nodes`, whose
/// default differs).
fn shards_given() -> bool {
    std::env::args().any(|a| a == "--shards" || a.starts_with("--shards="))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scale_args(args: &[&str]) -> ScaleArgs {
        let argv = ["shardline-bench", "scale"].iter().chain(args);
        match Cli::try_parse_from(argv).expect("parses").cmd {
            Cmd::Scale(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn config(args: &[&str]) -> scale::ScaleConfig {
        scale_config(&scale_args(args), PathBuf::from("/x"))
    }

    #[test]
    fn quick_is_a_profile() {
        let c = config(&["--quick"]);
        assert_eq!(c.profile, "quick");
        assert_eq!(
            c.shards,
            scale::ShardChoice::List(scale::QUICK_SHARDS.to_vec())
        );
        assert_eq!(c.backends, [Io::Uring, Io::Epoll]);
        assert_eq!(c.accept, [AcceptMode::ReusePort]);
        assert_eq!(c.rounds, 1);
        assert_eq!(
            (c.warmup, c.duration),
            (Duration::from_secs(1), Duration::from_secs(3))
        );
        assert_eq!((c.conns, c.client_threads), (None, None));
        assert_eq!((c.server_cpus.clone(), c.client_cpus.clone()), (None, None));
    }

    #[test]
    fn flags_override_the_profile() {
        let c = config(&[
            "--quick",
            "--rounds",
            "3",
            "--accept",
            "reuseport,handoff",
            "--backends",
            "epoll",
            "--duration",
            "1.5",
            "--warmup",
            "0.2",
            "--conns",
            "32",
            "--client-threads",
            "4",
            "--server-cpus",
            "0-7",
            "--client-cpus",
            "8-11",
        ]);
        assert_eq!(c.rounds, 3);
        assert_eq!(
            c.accept,
            [
                AcceptMode::ReusePort,
                AcceptMode::Handoff(shardline::Balance::RoundRobin)
            ]
        );
        assert_eq!(c.backends, [Io::Epoll]);
        assert_eq!(c.duration, Duration::from_millis(1500));
        assert_eq!(c.warmup, Duration::from_millis(200));
        assert_eq!((c.conns, c.client_threads), (Some(32), Some(4)));
        assert_eq!(c.server_cpus, Some((0..8).collect()));
        assert_eq!(c.client_cpus, Some(vec![8, 9, 10, 11]));
        // --max-shards keeps the profile's counts up to N.
        let c = config(&["--quick", "--max-shards", "4"]);
        assert_eq!(c.shards, scale::ShardChoice::List(vec![1, 2, 4]));
        // --shards replaces them.
        let c = config(&["--quick", "--shards", "2,6"]);
        assert_eq!(c.shards, scale::ShardChoice::List(vec![2, 6]));
    }

    #[test]
    fn without_quick_the_defaults_are_the_full_run() {
        let c = config(&[]);
        assert_eq!(c.profile, "full");
        assert_eq!(c.shards, scale::ShardChoice::UpTo(None));
        assert_eq!(c.accept.len(), 3);
        assert_eq!(c.rounds, 3);
        assert_eq!(c.duration, Duration::from_secs(2));
        assert_eq!(
            config(&["--max-shards", "2"]).shards,
            scale::ShardChoice::UpTo(Some(2))
        );
        assert!(Cli::try_parse_from([
            "shardline-bench",
            "scale",
            "--shards",
            "1",
            "--max-shards",
            "2"
        ])
        .is_err());
        assert!(Cli::try_parse_from(["shardline-bench", "scale", "--server-cpus", "3-1"]).is_err());
    }
}
