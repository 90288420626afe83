//! `compare`: Shardline (io_uring and epoll) against the peers, with the same shard
//! or thread count, the same client and the same pinning, interleaved A B C … A B C
//! over several rounds so that slow drift (thermal, noisy neighbours) touches every
//! server alike. Medians over rounds are quoted, each as a ratio to
//! shardline-uring's throughput at the same message size, beside the server's CPU
//! time per request (utime + stime over the measured window ÷ echoes).

use std::{path::PathBuf, time::Duration};

use anyhow::bail;
use serde::Serialize;
use shardline::Io;

use crate::{
    client::{self, ClientIo, LoadConfig, LoadReport, Mode},
    experiment::{self, median_of, median_of_some, Probe, Quiet, WindowMarks},
    machine::{self, MachineInfo},
    report::{self, round},
    servers::{self, Launch, PeerSelection, ServerProc, ServerSpec},
};

/// The baseline every ratio is relative to.
pub const BASELINE: &str = "shardline-uring";

/// What `compare` runs.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    /// This binary (for `serve`).
    pub serve_exe: PathBuf,
    /// Which peers.
    pub peers: PeerSelection,
    /// The peers' workspace.
    pub peers_dir: PathBuf,
    /// Message sizes in bytes.
    pub sizes: Vec<usize>,
    /// Connections.
    pub conns: usize,
    /// Rounds (every server once per round).
    pub rounds: usize,
    /// Shards / threads of every server.
    pub threads: usize,
    /// CPUs the server is pinned to.
    pub server_cpus: Vec<usize>,
    /// CPUs the client is pinned to.
    pub client_cpus: Vec<usize>,
    /// Client threads (each with its share of the connections and its own
    /// event loop; see [`LoadConfig::threads`]).
    pub client_threads: usize,
    /// Warm-up before each measured window.
    pub warmup: Duration,
    /// Measured window.
    pub duration: Duration,
    /// Client engine.
    pub client_io: ClientIo,
    /// A run during which other processes used more than this much CPU (% of one
    /// CPU) is measured again.
    pub max_foreign_pct: f64,
    /// How many times a noisy run is measured again (the quietest attempt is kept).
    pub retries: usize,
}

/// One server at one message size: medians over rounds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CompareRow {
    /// Server name.
    pub server: String,
    /// Bytes per message.
    pub msg_size: usize,
    /// Connections.
    pub conns: usize,
    /// Median echoes per second.
    pub rps: f64,
    /// Median of the runs' p50 latency (µs).
    pub p50_us: f64,
    /// Median of the runs' p99 latency (µs).
    pub p99_us: f64,
    /// Median server CPU time per echo (µs).
    pub server_cpu_us_per_req: Option<f64>,
    /// rps ÷ shardline-uring's rps at this size (`null` without that baseline).
    pub ratio: Option<f64>,
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// Round number (from 1).
    pub round: usize,
    /// Server name.
    pub server: String,
    /// Bytes per message.
    pub msg_size: usize,
    /// What the client measured (absent if the run failed).
    pub load: Option<LoadReport>,
    /// Server CPU µs per echo.
    pub server_cpu_us_per_req: Option<f64>,
    /// CPU time other processes used during the window, in % of one CPU (busy
    /// time of the machine from /proc/stat minus the server's and the harness's).
    pub foreign_cpu_pct: Option<f64>,
    /// Measurements made for this slot (more than 1: earlier ones were noisy).
    pub attempts: usize,
    /// Why the run failed.
    pub error: Option<String>,
}

impl RunRecord {
    /// A run that measured nothing, and why.
    pub fn failed(
        round: usize,
        server: &str,
        msg_size: usize,
        attempts: usize,
        error: String,
    ) -> RunRecord {
        RunRecord {
            round,
            server: server.to_owned(),
            msg_size,
            load: None,
            server_cpu_us_per_req: None,
            foreign_cpu_pct: None,
            attempts,
            error: Some(error),
        }
    }
}

/// Everything `compare` found; what `--json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct CompareOutput {
    /// Medians per server and size.
    pub results: Vec<CompareRow>,
    /// Every run.
    pub runs: Vec<RunRecord>,
    /// Peers or runs left out, and why.
    pub skipped: Vec<String>,
    /// How the runs were set up.
    pub setup: Setup,
    /// Where they ran.
    pub machine: MachineInfo,
}

/// The setup, echoed into the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    /// Server shards / threads.
    pub threads: usize,
    /// Server CPUs.
    pub server_cpus: Vec<usize>,
    /// Client CPUs.
    pub client_cpus: Vec<usize>,
    /// Client threads.
    pub client_threads: usize,
    /// Rounds.
    pub rounds: usize,
    /// Warm-up seconds per run.
    pub warmup_s: f64,
    /// Measured seconds per run.
    pub window_s: f64,
    /// Client engine.
    pub client_io: String,
}

/// Default pinning: server on the first CPU, client on the second (both on the
/// only CPU of a one-CPU machine).
pub fn default_pinning(threads: usize) -> (Vec<usize>, Vec<usize>) {
    let cpus = machine::allowed_cpus();
    let server: Vec<usize> = cpus.iter().copied().take(threads.max(1)).collect();
    let client = cpus
        .iter()
        .copied()
        .find(|c| !server.contains(c))
        .or_else(|| cpus.last().copied())
        .into_iter()
        .collect();
    (server, client)
}

/// Runs the comparison, printing progress and the ratio table to stdout.
pub fn run(cfg: &CompareConfig) -> anyhow::Result<CompareOutput> {
    if cfg.sizes.is_empty() || cfg.rounds == 0 {
        bail!("need at least one message size and one round");
    }
    let machine_at_start = MachineInfo::announce();
    let mut servers = vec![
        ServerSpec::shardline(Io::Uring),
        ServerSpec::shardline_uring_fd(),
        ServerSpec::shardline(Io::Epoll),
    ];
    let (peers, mut skipped) = servers::resolve_peers(&cfg.peers, &cfg.peers_dir);
    for note in &skipped {
        println!("note: {note}");
    }
    servers.extend(peers);
    let launch = Launch {
        serve_exe: cfg.serve_exe.clone(),
        threads: cfg.threads,
        cpus: cfg.server_cpus.clone(),
    };
    println!(
        "compare: {} server(s) × {} size(s) × {} round(s), {} conns, server on CPUs {:?}, client ({} thread(s)) on CPUs {:?}, {:.1} s warm-up + {:.1} s window",
        servers.len(),
        cfg.sizes.len(),
        cfg.rounds,
        cfg.conns,
        cfg.server_cpus,
        cfg.client_threads,
        cfg.client_cpus,
        cfg.warmup.as_secs_f64(),
        cfg.duration.as_secs_f64()
    );
    let mut runs = Vec::new();
    for (r, spec) in experiment::schedule(cfg.rounds, &servers) {
        let server = match ServerProc::start(spec, &launch) {
            Ok(s) => s,
            Err(e) => {
                let msg = format!("{e:#}");
                println!("round {r} {spec}: failed to start: {msg}");
                for &size in &cfg.sizes {
                    runs.push(RunRecord::failed(r, &spec.name, size, 0, msg.clone()));
                }
                continue;
            }
        };
        for &size in &cfg.sizes {
            let run = measure_quiet(cfg, &server, size, r);
            println!("{}", describe(&run));
            runs.push(run);
        }
    }
    let results = summarize(&servers, &cfg.sizes, cfg.conns, &runs);
    for s in &servers {
        if !results.iter().any(|row| row.server == s.name) {
            skipped.push(format!("{}: every run failed (see above)", s.name));
        }
    }
    println!();
    print!("{}", render(&results, &runs));
    Ok(CompareOutput {
        results,
        runs,
        skipped,
        setup: Setup {
            threads: cfg.threads,
            server_cpus: cfg.server_cpus.clone(),
            client_cpus: cfg.client_cpus.clone(),
            client_threads: cfg.client_threads,
            rounds: cfg.rounds,
            warmup_s: cfg.warmup.as_secs_f64(),
            window_s: cfg.duration.as_secs_f64(),
            client_io: format!("{:?}", cfg.client_io).to_lowercase(),
        },
        machine: machine_at_start,
    })
}

/// One closed-loop run against a running server, reading CPU times at the window's
/// edges: the server's (per request) and everyone else's (`foreign_cpu_pct`).
pub fn measure(cfg: &CompareConfig, server: &ServerProc, size: usize, round: usize) -> RunRecord {
    let load = LoadConfig {
        addr: server.addr,
        conns: cfg.conns,
        msg_size: size,
        mode: Mode::Closed,
        warmup: cfg.warmup,
        duration: cfg.duration,
        cpus: cfg.client_cpus.clone(),
        io: cfg.client_io,
        threads: cfg.client_threads,
    };
    let probes = [Probe::Process(Some(server.pid))];
    let mut marks = WindowMarks::new(&probes);
    let result = client::run_load(&load, &mut |w| marks.mark(w));
    match result {
        Ok(rep) => {
            let span = marks.span();
            let cpu = span
                .as_ref()
                .map(|s| (s.probe(0), s.foreign_pct(rep.window_s)));
            let (per_req, foreign) = match cpu {
                Some((Some(server), Some(foreign))) if rep.requests > 0 => {
                    (Some(server * 1e6 / rep.requests as f64), Some(foreign))
                }
                _ => (None, None),
            };
            RunRecord {
                round,
                server: server.name.clone(),
                msg_size: size,
                load: Some(rep),
                server_cpu_us_per_req: per_req,
                foreign_cpu_pct: foreign,
                attempts: 1,
                error: None,
            }
        }
        Err(e) => RunRecord::failed(round, &server.name, size, 1, format!("{e:#}")),
    }
}

experiment::impl_attempt!(RunRecord, load);

/// [`measure`], repeated (up to `cfg.retries` more times) while other processes
/// used more than `cfg.max_foreign_pct` % of a CPU during the window; keeps the
/// quietest attempt (see [`Quiet`]).
pub fn measure_quiet(
    cfg: &CompareConfig,
    server: &ServerProc,
    size: usize,
    round: usize,
) -> RunRecord {
    let label = format!("round {round} {:<20} {size:>5} B", server.name);
    Quiet::new(cfg.max_foreign_pct, cfg.retries)
        .measure(&label, "window", || measure(cfg, server, size, round))
}

fn describe(run: &RunRecord) -> String {
    match (&run.load, &run.error) {
        (Some(l), _) => format!(
            "round {} {:<20} {:>5} B: {:>9} rps  p50 {:>7.1} µs  p99 {:>7.1} µs  server {} µs/req  client CPU {:.0} %  others {} %{}",
            run.round,
            run.server,
            run.msg_size,
            report::krps(l.rps),
            l.latency.p50_us,
            l.latency.p99_us,
            run.server_cpu_us_per_req
                .map_or_else(|| "?".into(), |c| format!("{c:.2}")),
            l.client_cpu_pct,
            run.foreign_cpu_pct
                .map_or_else(|| "?".into(), |f| format!("{f:.0}")),
            if l.errors > 0 {
                format!("  {} errors", l.errors)
            } else {
                String::new()
            }
        ),
        (None, e) => format!(
            "round {} {:<20} {:>5} B: failed: {}",
            run.round,
            run.server,
            run.msg_size,
            e.as_deref().unwrap_or("unknown error")
        ),
    }
}

/// Medians over a set of echo runs (rounded for the JSON).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Medians {
    /// Echoes per second.
    pub rps: f64,
    /// The runs' p50 latency (µs).
    pub p50_us: f64,
    /// The runs' p99 latency (µs).
    pub p99_us: f64,
    /// Server CPU µs per echo.
    pub server_cpu_us_per_req: Option<f64>,
}

impl Medians {
    /// Over the runs that measured something; `None` if none did.
    pub fn of(runs: &[&RunRecord]) -> Option<Medians> {
        let loads: Vec<&LoadReport> = runs.iter().filter_map(|r| r.load.as_ref()).collect();
        let ok: Vec<&&RunRecord> = runs.iter().filter(|r| r.load.is_some()).collect();
        Some(Medians {
            rps: round(median_of(&loads, |l| l.rps)?, 1),
            p50_us: round(median_of(&loads, |l| l.latency.p50_us).unwrap_or(0.0), 2),
            p99_us: round(median_of(&loads, |l| l.latency.p99_us).unwrap_or(0.0), 2),
            server_cpu_us_per_req: median_of_some(&ok, |r| r.server_cpu_us_per_req)
                .map(|c| round(c, 3)),
        })
    }
}

/// Medians per (server, size) and ratios to the baseline.
pub fn summarize(
    servers: &[ServerSpec],
    sizes: &[usize],
    conns: usize,
    runs: &[RunRecord],
) -> Vec<CompareRow> {
    let mut rows = Vec::new();
    for &size in sizes {
        let mut at_size = Vec::new();
        for s in servers {
            let mine: Vec<&RunRecord> = runs
                .iter()
                .filter(|r| r.server == s.name && r.msg_size == size)
                .collect();
            let Some(m) = Medians::of(&mine) else {
                continue;
            };
            at_size.push(CompareRow {
                server: s.name.clone(),
                msg_size: size,
                conns,
                rps: m.rps,
                p50_us: m.p50_us,
                p99_us: m.p99_us,
                server_cpu_us_per_req: m.server_cpu_us_per_req,
                ratio: None,
            });
        }
        let base = at_size
            .iter()
            .find(|r| r.server == BASELINE)
            .map(|r| r.rps)
            .filter(|&b| b > 0.0);
        for r in &mut at_size {
            r.ratio = base.map(|b| round(r.rps / b, 3));
        }
        rows.extend(at_size);
    }
    rows
}

/// The ratio table, one block per message size.
pub fn render(rows: &[CompareRow], runs: &[RunRecord]) -> String {
    let mut out = String::new();
    let mut sizes: Vec<usize> = rows.iter().map(|r| r.msg_size).collect();
    sizes.dedup();
    for size in sizes {
        out.push_str(&format!(
            "{size} B messages, medians over rounds (ratio = rps ÷ {BASELINE} rps)\n"
        ));
        let cells: Vec<Vec<String>> = rows
            .iter()
            .filter(|r| r.msg_size == size)
            .map(|r| {
                let errors: u64 = runs
                    .iter()
                    .filter(|x| x.server == r.server && x.msg_size == size)
                    .filter_map(|x| x.load.as_ref().map(|l| l.errors))
                    .sum();
                vec![
                    r.server.clone(),
                    report::krps(r.rps),
                    r.ratio.map_or_else(|| "-".into(), |x| format!("{x:.3}")),
                    format!("{:.1}", r.p50_us),
                    format!("{:.1}", r.p99_us),
                    r.server_cpu_us_per_req
                        .map_or_else(|| "-".into(), |c| format!("{c:.2}")),
                    errors.to_string(),
                ]
            })
            .collect();
        out.push_str(&report::table(
            &[
                "server",
                "rps",
                "ratio",
                "p50 µs",
                "p99 µs",
                "server CPU µs/req",
                "errors",
            ],
            &cells,
        ));
        out.push('\n');
    }
    out
}
