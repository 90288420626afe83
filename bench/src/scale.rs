//! `scale`: Shardline at several shard counts, for each backend and accept mode,
//! with the same echo load; medians over rounds go to JSON and to an SVG plot of
//! throughput and p99 against shard count.
//!
//! Shards at N run on the first N CPUs of the server CPU set (`--server-cpus`,
//! default: the CPUs this process may use), one shard pinned per CPU. The client
//! runs `--client-threads` threads (default: one per client CPU) pinned to the
//! client CPU set (`--client-cpus`, default: the allowed CPUs the shards at N
//! leave free; unpinned, beside the shards, when they leave none — said on
//! stdout and in the JSON). A shard count that does not fit the server CPU set is
//! skipped, never oversubscribed: a shard count past the CPUs measures
//! oversubscription, not scaling. Which counts ran, which were skipped and why,
//! the CPU sets and client threads of each count go to the JSON.
//!
//! `--quick` ([`Profile::quick`]) runs 1, 2, 4, 8 and 12 shards (those that fit),
//! uring and epoll, reuseport only, one round, short windows; [`plan`] computes
//! the run list and its wall time before anything starts, and the test suite
//! checks that the plan for a 16-CPU machine stays under 8 minutes.

use std::{
    path::Path,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _};
use plotters::prelude::*;
use serde::Serialize;
use shardline::{AcceptMode, Io};

use crate::{
    compare::{self, CompareConfig, Medians, RunRecord},
    experiment,
    machine::{self, MachineInfo},
    report,
    servers::{Launch, PeerSelection, ServerProc, ServerSpec},
};

/// The shard counts `--quick` asks for.
pub const QUICK_SHARDS: [usize; 5] = [1, 2, 4, 8, 12];

/// Time budget of `--quick` on a 16-CPU machine.
pub const QUICK_BUDGET: Duration = Duration::from_secs(8 * 60);

/// What one run costs besides its warm-up and window: starting the server
/// (waiting for `listening on`), opening the connections, stopping the server.
/// An over-estimate; a run's setup takes well under a second here.
pub const SETUP_ESTIMATE: Duration = Duration::from_secs(1);

/// Which shard counts to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardChoice {
    /// 1..=N (`None`: as many as the server CPU set has).
    UpTo(Option<usize>),
    /// These counts (those that fit the server CPU set).
    List(Vec<usize>),
}

/// A named set of defaults; command-line flags override each value.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// `full` or `quick`.
    pub name: &'static str,
    /// Shard counts.
    pub shards: ShardChoice,
    /// Backends.
    pub backends: Vec<Io>,
    /// Accept modes.
    pub accept: Vec<AcceptMode>,
    /// Rounds.
    pub rounds: usize,
    /// Warm-up per run.
    pub warmup: Duration,
    /// Measured window per run.
    pub duration: Duration,
}

impl Profile {
    /// The default: 1..=N shards, both backends, every accept mode, 3 rounds.
    pub fn full() -> Profile {
        Profile {
            name: "full",
            shards: ShardChoice::UpTo(None),
            backends: vec![Io::Uring, Io::Epoll],
            accept: vec![
                AcceptMode::ReusePort,
                AcceptMode::Exclusive,
                AcceptMode::Handoff(shardline::Balance::RoundRobin),
            ],
            rounds: 3,
            warmup: Duration::from_millis(500),
            duration: Duration::from_secs(2),
        }
    }

    /// `--quick`: 1, 2, 4, 8, 12 shards (those that fit), uring and epoll,
    /// reuseport, one round, 1 s warm-up + 3 s window.
    pub fn quick() -> Profile {
        Profile {
            name: "quick",
            shards: ShardChoice::List(QUICK_SHARDS.to_vec()),
            backends: vec![Io::Uring, Io::Epoll],
            accept: vec![AcceptMode::ReusePort],
            rounds: 1,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(3),
        }
    }
}

/// What `scale` runs.
#[derive(Debug, Clone)]
pub struct ScaleConfig {
    /// This binary (for `serve`).
    pub serve_exe: PathBuf,
    /// `full` or `quick` (for the output).
    pub profile: String,
    /// Shard counts.
    pub shards: ShardChoice,
    /// Backends.
    pub backends: Vec<Io>,
    /// Accept modes.
    pub accept: Vec<AcceptMode>,
    /// Bytes per message.
    pub msg_size: usize,
    /// Connections (`None`: 64; quick: 16 per shard of the largest count run,
    /// at least 64).
    pub conns: Option<usize>,
    /// Rounds.
    pub rounds: usize,
    /// Server CPU set (`None`: the CPUs this process may use).
    pub server_cpus: Option<Vec<usize>>,
    /// Client CPU set (`None`: the allowed CPUs the shards leave free).
    pub client_cpus: Option<Vec<usize>>,
    /// Client threads (`None`: one per client CPU, at least one).
    pub client_threads: Option<usize>,
    /// Warm-up per run.
    pub warmup: Duration,
    /// Measured window per run.
    pub duration: Duration,
    /// Client engine.
    pub client_io: crate::client::ClientIo,
    /// See [`CompareConfig::max_foreign_pct`].
    pub max_foreign_pct: f64,
    /// See [`CompareConfig::retries`].
    pub retries: usize,
}

impl ScaleConfig {
    /// A profile's values, with nothing overridden.
    pub fn from_profile(serve_exe: PathBuf, p: Profile) -> ScaleConfig {
        ScaleConfig {
            serve_exe,
            profile: p.name.to_owned(),
            shards: p.shards,
            backends: p.backends,
            accept: p.accept,
            msg_size: 100,
            conns: None,
            rounds: p.rounds,
            server_cpus: None,
            client_cpus: None,
            client_threads: None,
            warmup: p.warmup,
            duration: p.duration,
            client_io: crate::client::ClientIo::Uring,
            max_foreign_pct: 10.0,
            retries: 1,
        }
    }
}

/// One shard count's setup.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ShardSetup {
    /// Shards.
    pub shards: usize,
    /// Shard i on the i-th of these.
    pub server_cpus: Vec<usize>,
    /// The client threads' CPUs (empty: unpinned).
    pub client_cpus: Vec<usize>,
    /// Whether the client threads are pinned.
    pub client_pinned: bool,
    /// Client threads.
    pub client_threads: usize,
    /// Whether the client's CPUs overlap the shards' (it competes with them).
    pub client_shares_server_cpus: bool,
}

/// A shard count that was not run, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SkippedShards {
    /// Shards.
    pub shards: usize,
    /// Why.
    pub reason: String,
}

/// What will run, decided before anything starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The server CPU set.
    pub server_cpus: Vec<usize>,
    /// Each shard count that fits, in order.
    pub setups: Vec<ShardSetup>,
    /// Shard counts left out.
    pub skipped: Vec<SkippedShards>,
    /// Connections.
    pub conns: usize,
    /// Runs (shard counts × backends × accept modes × rounds).
    pub runs: usize,
    /// runs × (warm-up + window + [`SETUP_ESTIMATE`]).
    pub wall: Duration,
    /// `wall`, plus every run measured again `retries` times after waiting for
    /// quiet (the most the run can take).
    pub wall_max: Duration,
    /// Remarks on the setup (unpinned client, overlaps), for stdout and JSON.
    pub notes: Vec<String>,
}

/// runs × (warm-up + window + setup); and the same plus `retries` repeats of each
/// run's warm-up and window after up to `quiet_wait` of waiting.
pub fn wall_time(
    runs: usize,
    warmup: Duration,
    duration: Duration,
    retries: usize,
    quiet_wait: Duration,
) -> (Duration, Duration) {
    let runs = runs as u32;
    let nominal = (warmup + duration + SETUP_ESTIMATE) * runs;
    let repeats = (quiet_wait + warmup + duration) * (runs * retries as u32);
    (nominal, nominal + repeats)
}

fn check_allowed(what: &str, cpus: &[usize], allowed: &[usize]) -> anyhow::Result<()> {
    if let Some(c) = cpus.iter().find(|c| !allowed.contains(c)) {
        bail!(
            "{what}: CPU {c} is not one this process may use (allowed: {})",
            machine::format_cpus(allowed)
        );
    }
    Ok(())
}

fn dedup(cpus: &[usize]) -> Vec<usize> {
    let mut out = Vec::new();
    for &c in cpus {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// The shard counts, CPU sets and client threads `cfg` asks for on a machine
/// whose allowed CPUs are `allowed`, and what it will cost in time. Pure: the
/// run uses it, and so do the tests (with a pretend 16-CPU machine).
pub fn plan(cfg: &ScaleConfig, allowed: &[usize]) -> anyhow::Result<Plan> {
    if cfg.backends.is_empty() || cfg.accept.is_empty() || cfg.rounds == 0 {
        bail!("need at least one backend, one accept mode and one round");
    }
    if allowed.is_empty() {
        bail!("no CPU available");
    }
    let server_set = match &cfg.server_cpus {
        Some(s) => {
            check_allowed("--server-cpus", s, allowed)?;
            dedup(s)
        }
        None => allowed.to_vec(),
    };
    if server_set.is_empty() {
        bail!("--server-cpus: empty CPU list");
    }
    if let Some(c) = &cfg.client_cpus {
        check_allowed("--client-cpus", c, allowed)?;
    }
    if cfg.client_threads == Some(0) {
        bail!("--client-threads: at least one");
    }
    let fit = server_set.len();
    let cpu_list = machine::format_cpus(&server_set);
    let mut skipped = Vec::new();
    let wanted: Vec<usize> = match &cfg.shards {
        ShardChoice::UpTo(n) => (1..=n.unwrap_or(fit).max(1)).collect(),
        ShardChoice::List(v) => {
            let mut v: Vec<usize> = v.clone();
            v.sort_unstable();
            v.dedup();
            for &z in v.iter().filter(|&&n| n == 0) {
                skipped.push(SkippedShards {
                    shards: z,
                    reason: "0 shards is no server".into(),
                });
            }
            v.retain(|&n| n > 0);
            v
        }
    };
    let mut counts = Vec::new();
    for n in wanted {
        if n > fit {
            skipped.push(SkippedShards {
                shards: n,
                reason: format!("needs {n} server CPUs; the server CPU set has {fit} ({cpu_list})"),
            });
        } else {
            counts.push(n);
        }
    }
    if counts.is_empty() {
        bail!(
            "no shard count fits the server CPU set ({cpu_list}): {}",
            skipped
                .iter()
                .map(|s| format!("{}: {}", s.shards, s.reason))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    let largest = *counts.last().expect("not empty");
    let conns = cfg.conns.unwrap_or(if cfg.profile == "quick" {
        (16 * largest).max(64)
    } else {
        64
    });
    if conns == 0 {
        bail!("--conns: at least one connection");
    }
    let mut notes = Vec::new();
    let mut setups = Vec::new();
    for n in counts {
        let server_cpus = server_set[..n].to_vec();
        let client_cpus = match &cfg.client_cpus {
            Some(c) => dedup(c),
            None => allowed
                .iter()
                .copied()
                .filter(|c| !server_cpus.contains(c))
                .collect(),
        };
        let threads = cfg
            .client_threads
            .unwrap_or(client_cpus.len().max(1))
            .min(conns);
        let shares = client_cpus.iter().any(|c| server_cpus.contains(c));
        if client_cpus.is_empty() {
            notes.push(format!(
                "{n} shard(s): no CPU left for the client; its {threads} thread(s) run unpinned, \
                 sharing the shards' CPUs"
            ));
        } else if shares {
            notes.push(format!(
                "{n} shard(s): the client CPUs ({}) overlap the shards' ({})",
                machine::format_cpus(&client_cpus),
                machine::format_cpus(&server_cpus)
            ));
        }
        if !client_cpus.is_empty() && threads > client_cpus.len() {
            notes.push(format!(
                "{n} shard(s): {threads} client threads share {} client CPU(s); time-slicing \
                 between them shows in the tail latency",
                client_cpus.len()
            ));
        }
        setups.push(ShardSetup {
            shards: n,
            server_cpus,
            client_pinned: !client_cpus.is_empty(),
            client_shares_server_cpus: shares || client_cpus.is_empty(),
            client_cpus,
            client_threads: threads,
        });
    }
    let runs = setups.len() * cfg.backends.len() * cfg.accept.len() * cfg.rounds;
    let (wall, wall_max) = wall_time(
        runs,
        cfg.warmup,
        cfg.duration,
        cfg.retries,
        experiment::Quiet::new(cfg.max_foreign_pct, cfg.retries).wait,
    );
    Ok(Plan {
        server_cpus: server_set,
        setups,
        skipped,
        conns,
        runs,
        wall,
        wall_max,
        notes,
    })
}

/// One (backend, accept mode, shard count): medians over rounds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScalePoint {
    /// `uring` or `epoll`.
    pub backend: String,
    /// `reuseport`, `exclusive`, `handoff`.
    pub accept: String,
    /// Shards.
    pub shards: usize,
    /// Median echoes per second.
    pub rps: f64,
    /// Median p50 (µs).
    pub p50_us: f64,
    /// Median p99 (µs).
    pub p99_us: f64,
    /// Median server CPU µs per echo.
    pub server_cpu_us_per_req: Option<f64>,
}

impl ScalePoint {
    /// The series this point belongs to: `uring/reuseport`.
    pub fn series(&self) -> String {
        format!("{}/{}", self.backend, self.accept)
    }
}

/// What `scale` writes.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleOutput {
    /// `full` or `quick`.
    pub profile: String,
    /// CPUs this process may use.
    pub cpus_available: usize,
    /// Shard count asked for with `--max-shards` (`null`: not given).
    pub requested_max_shards: Option<usize>,
    /// Largest shard count run.
    pub max_shards: usize,
    /// Whether shard counts were left out (or N bounded) because the server CPU
    /// set is too small.
    pub capped_by_machine: bool,
    /// What that means, in words.
    pub note: String,
    /// Shard counts run.
    pub shards_run: Vec<usize>,
    /// Shard counts left out, and why.
    pub shards_skipped: Vec<SkippedShards>,
    /// The server CPU set (shards at N on its first N).
    pub server_cpus: Vec<usize>,
    /// Per shard count: server CPUs, client CPUs, client threads.
    pub setups: Vec<ShardSetup>,
    /// Remarks on the setup (an unpinned client, overlapping sets).
    pub setup_notes: Vec<String>,
    /// Backends.
    pub backends: Vec<String>,
    /// Accept modes.
    pub accept: Vec<String>,
    /// Rounds.
    pub rounds: usize,
    /// Warm-up seconds per run.
    pub warmup_s: f64,
    /// Measured seconds per run.
    pub window_s: f64,
    /// Runs planned.
    pub planned_runs: usize,
    /// Planned wall time (runs × (warm-up + window + setup estimate)), seconds.
    pub planned_wall_s: f64,
    /// The most it could take (every run measured again after waiting), seconds.
    pub planned_wall_max_s: f64,
    /// What it took, seconds.
    pub elapsed_s: f64,
    /// Bytes per message.
    pub msg_size: usize,
    /// Connections.
    pub conns: usize,
    /// Medians.
    pub results: Vec<ScalePoint>,
    /// Runs that failed.
    pub failures: Vec<String>,
    /// Where it ran.
    pub machine: MachineInfo,
}

/// The one-line summary of what ran and what did not, for stdout and `note`.
pub fn summary(cfg: &ScaleConfig, plan: &Plan, cpus_available: usize) -> (String, bool) {
    let run: Vec<String> = plan.setups.iter().map(|s| s.shards.to_string()).collect();
    let lacking: Vec<&SkippedShards> = plan
        .skipped
        .iter()
        .filter(|s| s.reason.starts_with("needs"))
        .collect();
    let bounded = matches!(cfg.shards, ShardChoice::UpTo(None));
    let capped = !lacking.is_empty() || bounded;
    let mut note = format!(
        "shard counts {} on server CPUs {} ({cpus_available} CPU(s) available)",
        run.join(", "),
        machine::format_cpus(&plan.server_cpus)
    );
    if !lacking.is_empty() {
        note.push_str(&format!(
            "; skipped {}: they need more CPUs than the server CPU set has ({})",
            lacking
                .iter()
                .map(|s| s.shards.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            plan.server_cpus.len()
        ));
    } else if bounded {
        note.push_str(&format!(
            "; N capped at {} by the CPUs available",
            plan.server_cpus.len()
        ));
    }
    if plan.setups.iter().any(|s| s.client_shares_server_cpus) {
        note.push_str("; where no CPU is left for the client it shares the shards' CPUs");
    }
    (note, capped)
}

fn io_name(io: Io) -> String {
    io.to_string()
}

/// Runs every (round, shard count, backend, accept mode), interleaved.
pub fn run(cfg: &ScaleConfig) -> anyhow::Result<ScaleOutput> {
    let allowed = machine::allowed_cpus();
    let plan = plan(cfg, &allowed)?;
    let machine_at_start = MachineInfo::announce();
    let started = Instant::now();
    let (note, capped) = summary(cfg, &plan, allowed.len());
    println!("scale ({}): {note}", cfg.profile);
    for s in &plan.skipped {
        println!("  skipped {} shard(s): {}", s.shards, s.reason);
    }
    for s in &plan.setups {
        println!(
            "  {} shard(s): server CPUs {}; client {} thread(s) {}",
            s.shards,
            machine::format_cpus(&s.server_cpus),
            s.client_threads,
            if s.client_pinned {
                format!("pinned to CPUs {}", machine::format_cpus(&s.client_cpus))
            } else {
                "unpinned (no CPU left for it)".into()
            }
        );
    }
    for n in &plan.notes {
        println!("  note: {n}");
    }
    println!(
        "plan: {} run(s) ({} shard count(s) × {} backend(s) × {} accept mode(s) × {} round(s)) × ({:.1} s warm-up + {:.1} s window + ~{:.0} s setup) = {:.0} s; at most {:.0} s if every run is measured again; {} conns, {} B",
        plan.runs,
        plan.setups.len(),
        cfg.backends.len(),
        cfg.accept.len(),
        cfg.rounds,
        cfg.warmup.as_secs_f64(),
        cfg.duration.as_secs_f64(),
        SETUP_ESTIMATE.as_secs_f64(),
        plan.wall.as_secs_f64(),
        plan.wall_max.as_secs_f64(),
        plan.conns,
        cfg.msg_size,
    );
    let mut cc = CompareConfig {
        serve_exe: cfg.serve_exe.clone(),
        peers: PeerSelection::None,
        peers_dir: PathBuf::new(),
        sizes: vec![cfg.msg_size],
        conns: plan.conns,
        rounds: cfg.rounds,
        threads: 1,
        server_cpus: Vec::new(),
        client_cpus: Vec::new(),
        client_threads: 1,
        warmup: cfg.warmup,
        duration: cfg.duration,
        client_io: cfg.client_io,
        max_foreign_pct: cfg.max_foreign_pct,
        retries: cfg.retries,
    };
    let mut slots = Vec::new();
    for setup in &plan.setups {
        for &io in &cfg.backends {
            for &mode in &cfg.accept {
                slots.push((setup, io, mode));
            }
        }
    }
    let mut runs: Vec<(String, String, usize, RunRecord)> = Vec::new();
    let mut failures = Vec::new();
    for (r, &(setup, io, mode)) in experiment::schedule(cfg.rounds, &slots) {
        let n = setup.shards;
        let spec = ServerSpec::shardline_with(io, mode);
        let launch = Launch {
            serve_exe: cfg.serve_exe.clone(),
            threads: n,
            cpus: setup.server_cpus.clone(),
        };
        cc.threads = n;
        cc.server_cpus = setup.server_cpus.clone();
        cc.client_cpus = setup.client_cpus.clone();
        cc.client_threads = setup.client_threads;
        let label = format!("round {r} {io}/{mode} × {n}");
        let server = match ServerProc::start(&spec, &launch) {
            Ok(s) => s,
            Err(e) => {
                println!("{label}: failed to start: {e:#}");
                failures.push(format!("{label}: {e:#}"));
                continue;
            }
        };
        let rec = compare::measure_quiet(&cc, &server, cfg.msg_size, r);
        match (&rec.load, &rec.error) {
            (Some(l), _) => println!(
                "{label}: {} rps  p50 {:.1} µs  p99 {:.1} µs  server {} µs/req  client {} thread(s) CPU {:.0} %  others {} %",
                report::krps(l.rps),
                l.latency.p50_us,
                l.latency.p99_us,
                rec.server_cpu_us_per_req
                    .map_or_else(|| "?".into(), |c| format!("{c:.2}")),
                l.client_threads,
                l.client_cpu_pct,
                rec.foreign_cpu_pct
                    .map_or_else(|| "?".into(), |f| format!("{f:.0}"))
            ),
            (None, e) => {
                let e = e.clone().unwrap_or_default();
                println!("{label}: failed: {e}");
                failures.push(format!("{label}: {e}"));
            }
        }
        runs.push((io_name(io), mode.to_string(), n, rec));
    }
    let mut results = Vec::new();
    for &io in &cfg.backends {
        for &mode in &cfg.accept {
            for setup in &plan.setups {
                let n = setup.shards;
                let mine: Vec<&RunRecord> = runs
                    .iter()
                    .filter(|(b, a, s, _)| *b == io_name(io) && *a == mode.to_string() && *s == n)
                    .map(|(_, _, _, r)| r)
                    .collect();
                let Some(m) = Medians::of(&mine) else {
                    continue;
                };
                results.push(ScalePoint {
                    backend: io_name(io),
                    accept: mode.to_string(),
                    shards: n,
                    rps: m.rps,
                    p50_us: m.p50_us,
                    p99_us: m.p99_us,
                    server_cpu_us_per_req: m.server_cpu_us_per_req,
                });
            }
        }
    }
    println!();
    let cells: Vec<Vec<String>> = results
        .iter()
        .map(|p| {
            vec![
                p.series(),
                p.shards.to_string(),
                report::krps(p.rps),
                format!("{:.1}", p.p50_us),
                format!("{:.1}", p.p99_us),
                p.server_cpu_us_per_req
                    .map_or_else(|| "-".into(), |c| format!("{c:.2}")),
            ]
        })
        .collect();
    print!(
        "{}",
        report::table(
            &[
                "backend/accept",
                "shards",
                "rps",
                "p50 µs",
                "p99 µs",
                "server CPU µs/req"
            ],
            &cells
        )
    );
    let elapsed = started.elapsed();
    println!("{note}");
    println!(
        "took {:.0} s (planned {:.0} s)",
        elapsed.as_secs_f64(),
        plan.wall.as_secs_f64()
    );
    let requested_max_shards = match cfg.shards {
        ShardChoice::UpTo(n) => n,
        ShardChoice::List(_) => None,
    };
    Ok(ScaleOutput {
        profile: cfg.profile.clone(),
        cpus_available: allowed.len(),
        requested_max_shards,
        max_shards: plan.setups.last().map_or(0, |s| s.shards),
        capped_by_machine: capped,
        note,
        shards_run: plan.setups.iter().map(|s| s.shards).collect(),
        shards_skipped: plan.skipped.clone(),
        server_cpus: plan.server_cpus.clone(),
        setups: plan.setups.clone(),
        setup_notes: plan.notes.clone(),
        backends: cfg.backends.iter().map(|&io| io_name(io)).collect(),
        accept: cfg.accept.iter().map(|m| m.to_string()).collect(),
        rounds: cfg.rounds,
        warmup_s: cfg.warmup.as_secs_f64(),
        window_s: cfg.duration.as_secs_f64(),
        planned_runs: plan.runs,
        planned_wall_s: report::round(plan.wall.as_secs_f64(), 1),
        planned_wall_max_s: report::round(plan.wall_max.as_secs_f64(), 1),
        elapsed_s: report::round(elapsed.as_secs_f64(), 1),
        msg_size: cfg.msg_size,
        conns: plan.conns,
        results,
        failures,
        machine: machine_at_start,
    })
}

/// What a panel plots of a point.
type Metric = fn(&ScalePoint) -> f64;

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// Draws throughput and p99 against shard count, one line per backend/accept
/// series, into an SVG file.
pub fn plot(out: &ScaleOutput, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut series: Vec<String> = Vec::new();
    for p in &out.results {
        if !series.contains(&p.series()) {
            series.push(p.series());
        }
    }
    let max_n = out.max_shards.max(1) as f64;
    let x_range = 0.8..(max_n + 0.2);
    let max_rps = out.results.iter().map(|p| p.rps / 1e3).fold(1.0, f64::max) * 1.15;
    let max_p99 = out.results.iter().map(|p| p.p99_us).fold(1.0, f64::max) * 1.15;
    let skipped: Vec<String> = out
        .shards_skipped
        .iter()
        .map(|s| s.shards.to_string())
        .collect();
    let title = format!(
        "Shardline echo, {} B × {} conns{}{}",
        out.msg_size,
        out.conns,
        if out.profile == "quick" {
            ", --quick"
        } else {
            ""
        },
        if !skipped.is_empty() {
            format!(" ({} shards skipped: too few CPUs)", skipped.join(", "))
        } else if out.capped_by_machine {
            format!(" (N capped at {} by this machine)", out.max_shards)
        } else {
            String::new()
        }
    );
    let draw = || -> anyhow::Result<()> {
        let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(&title, ("sans-serif", 22))?;
        let (left, right) = root.split_horizontally(600);
        let panels: [(&DrawingArea<_, _>, &str, f64, Metric); 2] = [
            (&left, "throughput (k echoes/s)", max_rps, |p| p.rps / 1e3),
            (&right, "p99 latency (µs)", max_p99, |p| p.p99_us),
        ];
        for (area, what, ymax, value) in panels {
            let mut chart = ChartBuilder::on(area)
                .caption(what, ("sans-serif", 18))
                .margin(15)
                .x_label_area_size(40)
                .y_label_area_size(60)
                // Headroom above the data: the legend goes there, never over a line.
                .build_cartesian_2d(x_range.clone(), 0.0..ymax * 1.5)?;
            chart
                .configure_mesh()
                .x_desc("shards")
                .y_desc(what)
                .x_labels(out.max_shards.clamp(2, 16))
                .y_label_formatter(&|y| format!("{y:.0}"))
                .x_label_formatter(&|x| {
                    if (x - x.round()).abs() < 1e-6 {
                        format!("{}", x.round() as i64)
                    } else {
                        String::new()
                    }
                })
                .draw()?;
            for (i, name) in series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let pts: Vec<(f64, f64)> = out
                    .results
                    .iter()
                    .filter(|p| &p.series() == name)
                    .map(|p| (p.shards as f64, value(p)))
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperMiddle)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow!("drawing {}: {e:#}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick() -> ScaleConfig {
        ScaleConfig::from_profile(PathBuf::new(), Profile::quick())
    }

    fn shards(p: &Plan) -> Vec<usize> {
        p.setups.iter().map(|s| s.shards).collect()
    }

    #[test]
    fn quick_on_16_cpus_runs_every_count_in_under_8_minutes() {
        let allowed: Vec<usize> = (0..16).collect();
        let p = plan(&quick(), &allowed).unwrap();
        assert_eq!(shards(&p), QUICK_SHARDS);
        assert!(p.skipped.is_empty(), "{:?}", p.skipped);
        // 5 counts × uring, epoll × reuseport × 1 round.
        assert_eq!(p.runs, 10);
        assert_eq!(p.wall, Duration::from_secs(10 * (1 + 3 + 1)));
        assert!(p.wall < QUICK_BUDGET, "{:?}", p.wall);
        // Even if every run were noisy and measured again after 10 s of waiting.
        assert!(p.wall_max < QUICK_BUDGET, "{:?}", p.wall_max);
        // 12 shards on CPUs 0-11; the client's 4 threads on 12-15.
        let top = p.setups.last().unwrap();
        assert_eq!(top.server_cpus, (0..12).collect::<Vec<_>>());
        assert_eq!(top.client_cpus, [12, 13, 14, 15]);
        assert_eq!(top.client_threads, 4);
        assert!(top.client_pinned && !top.client_shares_server_cpus);
        // 1 shard on CPU 0; 15 client threads on the rest.
        assert_eq!(p.setups[0].server_cpus, [0]);
        assert_eq!(p.setups[0].client_threads, 15);
        assert_eq!(p.conns, 16 * 12);
        assert!(p.notes.is_empty(), "{:?}", p.notes);
    }

    #[test]
    fn quick_on_2_cpus_runs_what_fits_and_says_why_not_the_rest() {
        let p = plan(&quick(), &[0, 1]).unwrap();
        assert_eq!(shards(&p), [1, 2]);
        let skipped: Vec<usize> = p.skipped.iter().map(|s| s.shards).collect();
        assert_eq!(skipped, [4, 8, 12]);
        assert!(
            p.skipped[0].reason.contains("needs 4 server CPUs")
                && p.skipped[0].reason.contains("has 2"),
            "{:?}",
            p.skipped
        );
        assert_eq!(p.runs, 4);
        // 1 shard on CPU 0, the client on CPU 1; at 2 shards nothing is left.
        assert_eq!(
            (p.setups[0].client_cpus.clone(), p.setups[0].client_threads),
            (vec![1], 1)
        );
        let two = &p.setups[1];
        assert!(two.client_cpus.is_empty() && !two.client_pinned);
        assert!(two.client_shares_server_cpus);
        assert_eq!(two.client_threads, 1);
        assert!(
            p.notes.iter().any(|n| n.contains("unpinned")),
            "{:?}",
            p.notes
        );
        let (note, capped) = summary(&quick(), &p, 2);
        assert!(capped);
        assert!(note.contains("skipped 4, 8, 12"), "{note}");
    }

    #[test]
    fn explicit_cpu_sets_split_servers_and_clients() {
        let mut cfg = quick();
        cfg.server_cpus = Some(vec![2, 3, 4, 5]);
        cfg.client_cpus = Some(vec![6, 7]);
        let allowed: Vec<usize> = (0..8).collect();
        let p = plan(&cfg, &allowed).unwrap();
        assert_eq!(shards(&p), [1, 2, 4]);
        assert_eq!(p.setups[2].server_cpus, [2, 3, 4, 5]);
        assert_eq!(p.setups[1].server_cpus, [2, 3]);
        for s in &p.setups {
            assert_eq!(s.client_cpus, [6, 7]);
            assert_eq!(s.client_threads, 2);
            assert!(!s.client_shares_server_cpus);
        }
        assert_eq!(p.skipped.len(), 2, "8 and 12 do not fit 4 server CPUs");
        // --client-threads overrides one-per-CPU; more threads than client
        // CPUs is said.
        cfg.client_threads = Some(3);
        let p = plan(&cfg, &allowed).unwrap();
        assert!(p.setups.iter().all(|s| s.client_threads == 3));
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("3 client threads share 2")),
            "{:?}",
            p.notes
        );
        // Overlapping sets are allowed, and said.
        cfg.client_cpus = Some(vec![3]);
        let p = plan(&cfg, &allowed).unwrap();
        assert!(!p.setups[0].client_shares_server_cpus);
        assert!(p.setups[1].client_shares_server_cpus);
        assert!(
            p.notes.iter().any(|n| n.contains("overlap")),
            "{:?}",
            p.notes
        );
        // CPUs this process may not use are refused.
        cfg.server_cpus = Some(vec![0, 9]);
        let e = plan(&cfg, &allowed).unwrap_err().to_string();
        assert!(e.contains("CPU 9"), "{e}");
    }

    #[test]
    fn full_profile_runs_1_to_n_and_caps_at_the_cpus() {
        let cfg = ScaleConfig::from_profile(PathBuf::new(), Profile::full());
        let p = plan(&cfg, &[0, 1]).unwrap();
        assert_eq!(shards(&p), [1, 2]);
        assert!(p.skipped.is_empty());
        assert_eq!(p.runs, 2 * 2 * 3 * 3);
        assert_eq!(p.conns, 64);
        let (note, capped) = summary(&cfg, &p, 2);
        assert!(capped && note.contains("capped at 2"), "{note}");
        // --max-shards 8 on 2 CPUs: 3..=8 are skipped, with the reason.
        let mut up_to_8 = cfg.clone();
        up_to_8.shards = ShardChoice::UpTo(Some(8));
        let p = plan(&up_to_8, &[0, 1]).unwrap();
        assert_eq!(shards(&p), [1, 2]);
        assert_eq!(p.skipped.len(), 6);
        // --max-shards 1: as asked, not capped.
        let mut one = cfg.clone();
        one.shards = ShardChoice::UpTo(Some(1));
        let p = plan(&one, &[0, 1]).unwrap();
        assert_eq!(shards(&p), [1]);
        assert!(!summary(&one, &p, 2).1);
    }

    #[test]
    fn nothing_that_fits_is_an_error() {
        let mut cfg = quick();
        cfg.shards = ShardChoice::List(vec![4, 8]);
        let e = plan(&cfg, &[0, 1]).unwrap_err().to_string();
        assert!(e.contains("no shard count fits"), "{e}");
    }

    #[test]
    fn wall_time_is_runs_times_warmup_window_and_setup() {
        let s = Duration::from_secs;
        let (nominal, max) = wall_time(4, s(1), s(3), 1, s(10));
        assert_eq!(nominal, s(4 * 5));
        assert_eq!(max, s(4 * 5 + 4 * 14));
        assert_eq!(wall_time(4, s(1), s(3), 0, s(10)).1, s(20));
    }
}
