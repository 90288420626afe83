//! The experiment: servers × shapes × rounds, interleaved; starting
//! shardline-chat (with history or without), ngircd and InspIRCd; one measured run with
//! its CPU accounting and, if asked for, the CHATHISTORY probe.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::bail;
use shardline::Io;

use super::{
    load::run_load,
    probe::{HistoryProbe, ProbeSpec},
    results::{
        coalesce_verdicts, describe, history_verdicts, render, render_coalesce, render_history,
        summarize, ChatOutput, ChatRun, ChatSetup, NO_HISTORY_SUFFIX,
    },
    scenario::{LoadSpec, Scenario, Shape},
};
use crate::{
    client::Window,
    experiment::{self, Probe, Quiet, WindowMarks},
    machine::{self, MachineInfo},
    servers::{self, ServerProc},
};

/// The servers `chat` runs by default, in run order.
pub const SERVERS: [&str; 4] = ["shardline-uring", "shardline-epoll", "ngircd", "inspircd"];

/// shardline-chat without history (`--no-history`): the peers of
/// `--history-compare`.
pub const NO_HISTORY_SERVERS: [&str; 2] =
    ["shardline-uring-nohistory", "shardline-epoll-nohistory"];

/// The servers of `--coalesce-compare`: shardline-chat (uring) without write
/// coalescing, paced at three intervals, with the fixed 2 ms delay, and ngircd.
pub const COALESCE_SERVERS: [&str; 6] = [
    "shardline-uring@off",
    "shardline-uring@pace=500",
    "shardline-uring@pace=1000",
    "shardline-uring@pace=2000",
    "shardline-uring@delay=2000",
    "ngircd",
];

/// shardline-chat's write coalescing for one run (`[limits] flush_mode`,
/// `flush_delay_us`), named after `@` in the server name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// `@off`: written at the end of every loop turn.
    Off,
    /// `@pace=US`: at most one write per client per interval.
    Pace(u64),
    /// `@delay=US`: every line waits until the oldest has waited the delay.
    Delay(u64),
}

impl Flush {
    fn parse(s: &str) -> Result<Flush, String> {
        let us = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{v:?} is not a number of microseconds"))
        };
        match s.split_once('=') {
            None if s == "off" => Ok(Flush::Off),
            Some(("pace", v)) => us(v).map(Flush::Pace),
            Some(("delay", v)) => us(v).map(Flush::Delay),
            _ => Err(format!(
                "unknown write coalescing {s:?} (known: off, pace=US, delay=US)"
            )),
        }
    }

    /// The suffix in the server's name.
    fn label(self) -> String {
        match self {
            Flush::Off => "off".into(),
            Flush::Pace(us) => format!("pace={us}"),
            Flush::Delay(us) => format!("delay={us}"),
        }
    }

    /// The `[limits]` lines that set it.
    fn config(self) -> String {
        let (mode, us) = match self {
            Flush::Off => ("pace", 0),
            Flush::Pace(us) => ("pace", us),
            Flush::Delay(us) => ("delay", us),
        };
        format!("\n[limits]\nflush_mode = \"{mode}\"\nflush_delay_us = {us}\n")
    }
}

/// Which server a run uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatServer {
    /// shardline-chat with this write coalescing (on the generated config;
    /// named `shardline-IO@off`, `@pace=US`, `@delay=US`).
    ShardlineFlush(Io, Flush),
    /// `target/release/shardline-chat` on this backend (with history unless
    /// [`ChatConfig::chat_history`] is off).
    Shardline(Io),
    /// The same, always with `--no-history`; named `shardline-IO-nohistory`.
    ShardlineNoHistory(Io),
    /// `nodes` shardline-chat processes joined through a Redis of their own
    /// (`--cluster`, issue 16), the clients spread over them, the shards split
    /// between them; named `shardline-IO-xN`. CPU per delivery counts every
    /// node and Redis; Redis's share is reported too.
    Cluster(Io, usize),
    /// `/usr/sbin/ngircd`.
    Ngircd,
    /// `/usr/sbin/inspircd` (InspIRCd 3).
    Inspircd,
    /// A server already running (no CPU accounting unless `pid` is given).
    External {
        /// Name in reports.
        name: String,
        /// Its address.
        addr: SocketAddr,
        /// Its process, to read CPU time from (must not be this process).
        pid: Option<u32>,
    },
}

impl ChatServer {
    /// Name in reports.
    pub fn name(&self) -> String {
        match self {
            ChatServer::Shardline(io) => format!("shardline-{io}"),
            ChatServer::ShardlineNoHistory(io) => format!("shardline-{io}{NO_HISTORY_SUFFIX}"),
            ChatServer::ShardlineFlush(io, f) => format!("shardline-{io}@{}", f.label()),
            ChatServer::Cluster(io, n) => format!("shardline-{io}-x{n}"),
            ChatServer::Ngircd => "ngircd".into(),
            ChatServer::Inspircd => "inspircd".into(),
            ChatServer::External { name, .. } => name.clone(),
        }
    }

    /// Parses `shardline-uring`, `shardline-epoll`, `ngircd`, `inspircd`,
    /// `shardline-uring-nohistory` or `shardline-epoll-nohistory`; a shardline
    /// name may end in `@off`, `@pace=US` or `@delay=US` (write coalescing).
    pub fn parse(name: &str) -> Result<ChatServer, String> {
        if let Some((base, flush)) = name.trim().split_once('@') {
            let flush = Flush::parse(flush)?;
            return match ChatServer::parse(base)? {
                ChatServer::Shardline(io) => Ok(ChatServer::ShardlineFlush(io, flush)),
                _ => Err(format!(
                    "{name:?}: write coalescing is a setting of shardline-uring and shardline-epoll"
                )),
            };
        }
        for (prefix, io) in [
            ("shardline-uring-x", Io::Uring),
            ("shardline-epoll-x", Io::Epoll),
        ] {
            if let Some(n) = name.trim().strip_prefix(prefix) {
                return match n.parse::<usize>() {
                    Ok(n) if (2..=16).contains(&n) => Ok(ChatServer::Cluster(io, n)),
                    _ => Err(format!(
                        "{name:?}: a cluster is shardline-IO-xN with N nodes, 2 to 16"
                    )),
                };
            }
        }
        match name.trim() {
            "shardline-uring" => Ok(ChatServer::Shardline(Io::Uring)),
            "shardline-epoll" => Ok(ChatServer::Shardline(Io::Epoll)),
            "shardline-uring-nohistory" => Ok(ChatServer::ShardlineNoHistory(Io::Uring)),
            "shardline-epoll-nohistory" => Ok(ChatServer::ShardlineNoHistory(Io::Epoll)),
            "ngircd" => Ok(ChatServer::Ngircd),
            "inspircd" => Ok(ChatServer::Inspircd),
            other => Err(format!(
                "unknown chat server {other:?} (known: {}, {})",
                SERVERS.join(", "),
                NO_HISTORY_SERVERS.join(", ")
            )),
        }
    }
}

/// What `chat` runs.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Servers, in run order within a round.
    pub servers: Vec<ChatServer>,
    /// The shardline-chat binary.
    pub chat_exe: PathBuf,
    /// Build shardline-chat (`cargo build --release -p shardline-chat`) if missing.
    pub build_chat: bool,
    /// A config file for shardline-chat (default: a generated one).
    pub chat_config: Option<PathBuf>,
    /// shardline-chat keeps message history (its default; in a scratch data
    /// directory), or not (`--no-history`).
    pub chat_history: bool,
    /// Cluster nodes' `cluster.catchup_messages` (`None`: the chat's default).
    pub cluster_catchup: Option<usize>,
    /// The ngircd binary.
    pub ngircd_exe: PathBuf,
    /// The InspIRCd binary.
    pub inspircd_exe: PathBuf,
    /// shardline-chat shards.
    pub shards: usize,
    /// Server CPUs: shardline-chat's shard *i* on the *i*-th, ngircd and
    /// InspIRCd (one thread each) on the first. Empty: unpinned.
    pub server_cpus: Vec<usize>,
    /// Client CPUs (empty: unpinned).
    pub client_cpus: Vec<usize>,
    /// Rounds (every server once per round).
    pub rounds: usize,
    /// Shapes run on each server process, in order.
    pub shapes: Vec<Shape>,
    /// Rooms and load.
    pub scenario: Scenario,
    /// Delivery timeout per run (after the last message was due).
    pub timeout: Duration,
    /// A run during which other processes used more than this % of one CPU is
    /// measured again (fresh clients, same server process).
    pub max_foreign_pct: f64,
    /// How many times a noisy run is measured again (the quietest is kept).
    pub retries: usize,
    /// The CHATHISTORY probe, in every run (`None`: no probe). It asks only
    /// where the server offers `draft/chathistory`, and is a member of room 0
    /// everywhere.
    pub probe: Option<ProbeSpec>,
}

/// Default pinning on this machine for `shards` shards: the server on the first
/// `shards` CPUs; the client on the CPUs left, or unpinned when the shards take
/// every CPU (it then competes with them, as it would with ngircd's one thread
/// on a 2-CPU machine only for the second CPU).
pub fn default_pinning(shards: usize) -> (Vec<usize>, Vec<usize>) {
    let cpus = machine::allowed_cpus();
    let server: Vec<usize> = cpus.iter().copied().take(shards.max(1)).collect();
    let client = cpus
        .iter()
        .copied()
        .filter(|c| !server.contains(c))
        .collect();
    (server, client)
}

/// The shardline-chat config the harness passes when none is given: flood control
/// off. (Connections per IP are unlimited by default.)
pub const CHAT_CONFIG: &str =
    "[server]\nname = \"bench.shardline.local\"\n\n[flood]\nenabled = false\n";

/// What `start` started: one server, or a cluster's nodes and engine.
enum Started {
    One(ServerProc),
    Cluster {
        nodes: Vec<ServerProc>,
        engine: ServerProc,
    },
}

/// The processes of a run to account CPU for.
#[derive(Debug, Clone, Default)]
pub struct Procs {
    /// The server (a cluster: its first node), if known.
    pub pid: Option<u32>,
    /// A cluster's other nodes.
    pub others: Vec<u32>,
    /// A cluster's engine.
    pub engine: Option<u32>,
}

fn start(cfg: &ChatConfig, server: &ChatServer) -> anyhow::Result<Option<Started>> {
    if let ChatServer::Cluster(io, n) = server {
        let engine = servers::start_redis()?;
        let url = format!("redis://{}", engine.addr);
        let per_node = (cfg.shards / n).max(1);
        let mut nodes = Vec::new();
        for i in 0..*n {
            let catchup = cfg
                .cluster_catchup
                .map(|n| format!("catchup_messages = {n}\n"))
                .unwrap_or_default();
            let config = format!(
                "{}\n[cluster]\nurl = \"{url}\"\nnode_name = \"n{i}\"\n{catchup}",
                CHAT_CONFIG.replace(
                    "bench.shardline.local",
                    &format!("n{i}.bench.shardline.local")
                )
            );
            nodes.push(servers::start_shardline_chat(
                &cfg.chat_exe,
                *io,
                per_node,
                &[],
                None,
                &config,
                cfg.chat_history,
            )?);
        }
        // Every node must see the others (and its links be up) before
        // the clients come: LINKS lists them once their leases are read.
        servers::wait_cluster(&nodes)?;
        return Ok(Some(Started::Cluster { nodes, engine }));
    }
    start_one(cfg, server).map(|p| p.map(Started::One))
}

fn start_one(cfg: &ChatConfig, server: &ChatServer) -> anyhow::Result<Option<ServerProc>> {
    match server {
        ChatServer::Shardline(io) => servers::start_shardline_chat(
            &cfg.chat_exe,
            *io,
            cfg.shards,
            &cfg.server_cpus,
            cfg.chat_config.as_deref(),
            CHAT_CONFIG,
            cfg.chat_history,
        )
        .map(Some),
        ChatServer::ShardlineNoHistory(io) => servers::start_shardline_chat(
            &cfg.chat_exe,
            *io,
            cfg.shards,
            &cfg.server_cpus,
            cfg.chat_config.as_deref(),
            CHAT_CONFIG,
            false,
        )
        .map(Some),
        ChatServer::ShardlineFlush(io, flush) => {
            if cfg.chat_config.is_some() {
                bail!(
                    "{}: a write coalescing setting in the server name needs the generated \
                     config (drop --chat-config or the @ part)",
                    server.name()
                );
            }
            servers::start_shardline_chat(
                &cfg.chat_exe,
                *io,
                cfg.shards,
                &cfg.server_cpus,
                None,
                &format!("{CHAT_CONFIG}{}", flush.config()),
                cfg.chat_history,
            )
            .map(Some)
        }
        ChatServer::Ngircd => {
            servers::start_ngircd(&cfg.ngircd_exe, &ngircd_cpus(&cfg.server_cpus)).map(Some)
        }
        ChatServer::Inspircd => {
            servers::start_inspircd(&cfg.inspircd_exe, &ngircd_cpus(&cfg.server_cpus)).map(Some)
        }
        ChatServer::External { .. } | ChatServer::Cluster(..) => Ok(None),
    }
}

fn ngircd_cpus(server_cpus: &[usize]) -> Vec<usize> {
    server_cpus.iter().copied().take(1).collect()
}

/// Runs every server × shape × round, printing progress and the table.
pub fn run(cfg: &ChatConfig) -> anyhow::Result<ChatOutput> {
    if cfg.rounds == 0 || cfg.shapes.is_empty() || cfg.servers.is_empty() {
        bail!("need at least one round, one shape and one server");
    }
    let machine_at_start = MachineInfo::announce();
    let mut skipped = Vec::new();
    let mut servers = Vec::new();
    for s in &cfg.servers {
        match s {
            ChatServer::Shardline(_)
            | ChatServer::ShardlineNoHistory(_)
            | ChatServer::ShardlineFlush(..)
            | ChatServer::Cluster(..) => {
                match servers::resolve_chat_exe(&cfg.chat_exe, cfg.build_chat) {
                    Ok(()) => servers.push(s.clone()),
                    Err(why) => {
                        println!("note: skipping {}: {why}", s.name());
                        skipped.push(format!("{}: {why}", s.name()));
                    }
                }
            }
            ChatServer::Ngircd => {
                if cfg.ngircd_exe.is_file() {
                    servers.push(s.clone());
                } else {
                    let why = format!(
                        "no {} (install the Debian package: apt-get install ngircd, or ./x bench-deps)",
                        cfg.ngircd_exe.display()
                    );
                    println!("note: skipping ngircd: {why}");
                    skipped.push(format!("ngircd: {why}"));
                }
            }
            ChatServer::Inspircd => {
                if cfg.inspircd_exe.is_file() {
                    servers.push(s.clone());
                } else {
                    let why = format!(
                        "no {} (install the Debian package: apt-get install inspircd, or ./x bench-deps)",
                        cfg.inspircd_exe.display()
                    );
                    println!("note: skipping inspircd: {why}");
                    skipped.push(format!("inspircd: {why}"));
                }
            }
            ChatServer::External { .. } => servers.push(s.clone()),
        }
    }
    if servers.is_empty() {
        bail!("no server to run: {}", skipped.join("; "));
    }
    let sc = &cfg.scenario;
    println!(
        "chat: {} server(s) × {} shape(s) × {} round(s); {} room(s) × {} members; burst: {} sender(s)/room × {} messages; paced: {} sender(s)/room × {} msg/s × {} s; {} B text",
        servers.len(),
        cfg.shapes.len(),
        cfg.rounds,
        sc.rooms,
        sc.room_size,
        sc.burst_senders,
        sc.burst_messages,
        sc.paced_senders,
        sc.paced_rate,
        sc.paced_duration_s,
        sc.text_size,
    );
    if let Some(p) = cfg.probe {
        println!(
            "probe: one more member of room 0 asks CHATHISTORY LATEST #room * {} at {}/s during each window where the server offers draft/chathistory",
            p.limit, p.rate
        );
    }
    println!(
        "pinning: shardline-chat {} shard(s) on CPUs {:?}, ngircd and inspircd on CPUs {:?}, client {}",
        cfg.shards,
        cfg.server_cpus,
        ngircd_cpus(&cfg.server_cpus),
        if cfg.client_cpus.is_empty() {
            "unpinned".to_owned()
        } else {
            format!("on CPUs {:?}", cfg.client_cpus)
        }
    );
    let mut runs = Vec::new();
    for (round, server) in experiment::schedule(cfg.rounds, &servers) {
        let name = server.name();
        let proc = match start(cfg, server) {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("{e:#}");
                println!("round {round} {name}: failed to start: {msg}");
                for &shape in &cfg.shapes {
                    runs.push(ChatRun::failed(round, &name, shape, 0, msg.clone()));
                }
                continue;
            }
        };
        let (addrs, procs) = match (&proc, server) {
            (Some(Started::One(p)), _) => (
                vec![p.addr],
                Procs {
                    pid: Some(p.pid),
                    ..Procs::default()
                },
            ),
            (Some(Started::Cluster { nodes, engine }), _) => (
                nodes.iter().map(|n| n.addr).collect(),
                Procs {
                    pid: nodes.first().map(|n| n.pid),
                    others: nodes.iter().skip(1).map(|n| n.pid).collect(),
                    engine: Some(engine.pid),
                },
            ),
            (None, ChatServer::External { addr, pid, .. }) => (
                vec![*addr],
                Procs {
                    pid: *pid,
                    ..Procs::default()
                },
            ),
            (None, _) => unreachable!("only external servers are not started"),
        };
        for &shape in &cfg.shapes {
            let run = measure_quiet(cfg, shape, &addrs, &name, &procs, round);
            println!("{}", describe(&run));
            runs.push(run);
        }
        drop(proc);
    }
    let names: Vec<String> = servers.iter().map(ChatServer::name).collect();
    let results = summarize(&names, &cfg.shapes, &runs);
    let history = history_verdicts(&names, &cfg.shapes, &runs, &results, cfg.probe);
    println!();
    print!("{}", render(&results));
    print!("{}", render_history(&history));
    let coalesce = coalesce_verdicts(&results);
    print!("{}", render_coalesce(&coalesce));
    Ok(ChatOutput {
        results,
        history,
        coalesce,
        runs,
        skipped,
        setup: ChatSetup {
            shards: cfg.shards,
            server_cpus: cfg.server_cpus.clone(),
            ngircd_cpus: ngircd_cpus(&cfg.server_cpus),
            client_cpus: cfg.client_cpus.clone(),
            rounds: cfg.rounds,
            scenario: cfg.scenario.clone(),
            timeout_s: cfg.timeout.as_secs_f64(),
            chat_history: cfg.chat_history,
            cluster_catchup: cfg.cluster_catchup,
            probe: cfg.probe,
        },
        machine: machine_at_start,
    })
}

/// One load run against a running server, with its CPU accounting.
pub fn measure(spec: &LoadSpec, name: &str, pid: Option<u32>, round: usize) -> ChatRun {
    let procs = Procs {
        pid,
        ..Procs::default()
    };
    measure_probed(spec, None, name, &procs, round)
}

/// [`measure`], with the CHATHISTORY probe in room 0 if `probe` is given: it
/// joins before the load sets up, asks while the window is open (the server's
/// CPU over the window includes its answers), and its result goes into the
/// run's `probe`.
pub fn measure_probed(
    spec: &LoadSpec,
    probe: Option<ProbeSpec>,
    name: &str,
    procs: &Procs,
    round: usize,
) -> ChatRun {
    let shape = spec.pattern.shape();
    let probe = match probe {
        None => None,
        Some(p) => {
            let chan = format!("#{}r0", spec.tag);
            let nick = format!("{}p", spec.tag);
            match HistoryProbe::start(spec.addr, chan, nick, p, spec.cpus.clone()) {
                Ok(h) => Some(h),
                Err(e) => return ChatRun::failed(round, name, shape, 1, format!("{e:#}")),
            }
        }
    };
    let switch = probe.as_ref().map(HistoryProbe::switch);
    // Probe 0 the server (a cluster's first node), then its other nodes, the
    // engine last.
    let mut probes = vec![Probe::Process(procs.pid)];
    probes.extend(procs.others.iter().map(|p| Probe::Process(Some(*p))));
    if procs.engine.is_some() {
        probes.push(Probe::Process(procs.engine));
    }
    let mut marks = WindowMarks::new(&probes);
    let result = run_load(spec, &mut |w| match w {
        Window::Start => {
            marks.mark(w);
            if let Some(s) = &switch {
                s.go();
            }
        }
        Window::End => {
            if let Some(s) = &switch {
                s.stop();
            }
            marks.mark(w);
        }
    });
    let probe = probe.map(HistoryProbe::finish);
    match result {
        Ok(load) => {
            let window = load.window_s.max(1e-9);
            let (mut per, mut pct, mut foreign, mut engine) = (None, None, None, None);
            if let Some(span) = marks.span() {
                // Every process of the server: all must have a reading.
                let all: Option<f64> = (0..probes.len()).map(|i| span.probe(i)).sum();
                if let Some(s) = all {
                    if load.deliveries > 0 {
                        per = Some(s * 1e6 / load.deliveries as f64);
                    }
                    pct = Some((s / window * 100.0).round());
                }
                if procs.engine.is_some() && load.deliveries > 0 {
                    engine = span
                        .probe(probes.len() - 1)
                        .map(|s| s * 1e6 / load.deliveries as f64);
                }
                foreign = span.foreign_pct(window);
            }
            ChatRun {
                round,
                server: name.to_owned(),
                shape: load.shape,
                load: Some(load),
                server_cpu_us_per_delivery: per,
                server_cpu_pct: pct,
                engine_cpu_us_per_delivery: engine,
                foreign_cpu_pct: foreign,
                attempts: 1,
                error: None,
                probe,
            }
        }
        Err(e) => ChatRun::failed(round, name, shape, 1, format!("{e:#}")),
    }
}

/// [`measure`], repeated (up to `cfg.retries` more times, with fresh clients)
/// while other processes used more than `cfg.max_foreign_pct` % of a CPU during
/// the window; keeps the quietest attempt (see [`Quiet`]).
fn measure_quiet(
    cfg: &ChatConfig,
    shape: Shape,
    addrs: &[SocketAddr],
    name: &str,
    procs: &Procs,
    round: usize,
) -> ChatRun {
    let label = format!("round {round} {name:<16} {shape}");
    Quiet::new(cfg.max_foreign_pct, cfg.retries).measure(&label, "window", || {
        let mut spec = cfg.scenario.load(shape, addrs[0], cfg.timeout);
        spec.also = addrs[1..].to_vec();
        spec.cpus = cfg.client_cpus.clone();
        measure_probed(&spec, cfg.probe, name, procs, round)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_parse() {
        assert_eq!(
            ChatServer::parse("shardline-uring"),
            Ok(ChatServer::Shardline(Io::Uring))
        );
        assert_eq!(ChatServer::parse("ngircd"), Ok(ChatServer::Ngircd));
        assert_eq!(ChatServer::parse("inspircd"), Ok(ChatServer::Inspircd));
        assert!(ChatServer::parse("unrealircd").is_err());
        for s in SERVERS.into_iter().chain(NO_HISTORY_SERVERS) {
            assert_eq!(ChatServer::parse(s).unwrap().name(), s);
        }
        assert_eq!(
            ChatServer::parse("shardline-epoll-nohistory"),
            Ok(ChatServer::ShardlineNoHistory(Io::Epoll))
        );
        assert_eq!(
            ChatServer::parse("shardline-uring-x3"),
            Ok(ChatServer::Cluster(Io::Uring, 3))
        );
        assert_eq!(
            ChatServer::Cluster(Io::Epoll, 2).name(),
            "shardline-epoll-x2"
        );
        for bad in [
            "shardline-uring-x1",
            "shardline-uring-x",
            "shardline-epoll-x17",
            "shardline-uring-xx",
        ] {
            assert!(ChatServer::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn write_coalescing_variants_parse_and_name_themselves() {
        assert_eq!(
            ChatServer::parse("shardline-uring@pace=1500"),
            Ok(ChatServer::ShardlineFlush(Io::Uring, Flush::Pace(1500)))
        );
        assert_eq!(
            ChatServer::parse("shardline-epoll@delay=2000"),
            Ok(ChatServer::ShardlineFlush(Io::Epoll, Flush::Delay(2000)))
        );
        for s in COALESCE_SERVERS {
            assert_eq!(ChatServer::parse(s).unwrap().name(), s);
        }
        for bad in [
            "ngircd@off",
            "shardline-uring-nohistory@off",
            "shardline-uring@pace",
            "shardline-uring@pace=x",
            "shardline-uring@nagle=5",
        ] {
            assert!(ChatServer::parse(bad).is_err(), "{bad}");
        }
        // The generated [limits] lines parse as the chat's config would.
        assert!(Flush::Pace(500)
            .config()
            .contains("flush_mode = \"pace\"\nflush_delay_us = 500"));
        assert!(Flush::Off.config().contains("flush_delay_us = 0"));
        assert!(Flush::Delay(7).config().contains("flush_mode = \"delay\""));
    }
}
