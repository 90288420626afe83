//! `scale`: Shardline at 1..=N shards, for each backend and accept mode, with the
//! same echo load; medians over rounds go to JSON and to an SVG plot of throughput
//! and p99 against shard count.
//!
//! N defaults to the CPUs this process may use and is never more: a shard count
//! past the CPUs measures oversubscription, not scaling. When N is capped by the
//! machine this is said on stdout and in the JSON (`capped_by_machine`, `note`),
//! because on a small machine the client shares CPUs with the shards at N and the
//! curve flattens for that reason alone.

use std::{path::Path, path::PathBuf, time::Duration};

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

/// What `scale` runs.
#[derive(Debug, Clone)]
pub struct ScaleConfig {
    /// This binary (for `serve`).
    pub serve_exe: PathBuf,
    /// Largest shard count asked for (`None`: the CPUs available).
    pub max_shards: Option<usize>,
    /// Backends.
    pub backends: Vec<Io>,
    /// Accept modes.
    pub accept: Vec<AcceptMode>,
    /// Bytes per message.
    pub msg_size: usize,
    /// Connections.
    pub conns: usize,
    /// Rounds.
    pub rounds: usize,
    /// Client CPUs (empty: unpinned).
    pub client_cpus: Vec<usize>,
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
    /// CPUs this process may use.
    pub cpus_available: usize,
    /// Shard count asked for (`null`: default).
    pub requested_max_shards: Option<usize>,
    /// Largest shard count run.
    pub max_shards: usize,
    /// Whether N was limited by the CPUs of this machine.
    pub capped_by_machine: bool,
    /// What that means, in words.
    pub note: String,
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

/// The shard range and what to say about it.
pub fn shard_cap(requested: Option<usize>, available: usize) -> (usize, bool, String) {
    let available = available.max(1);
    match requested {
        None => (
            available,
            true,
            format!(
                "N = {available}: capped by this machine, which has {available} CPU(s) available; \
                 at N = {available} the client shares CPUs with the shards"
            ),
        ),
        Some(n) if n > available => (
            available,
            true,
            format!(
                "asked for up to {n} shards; capped at {available} because this machine has \
                 {available} CPU(s) available"
            ),
        ),
        Some(n) => (
            n.max(1),
            false,
            format!("N = {} as asked ({available} CPU(s) available)", n.max(1)),
        ),
    }
}

fn io_name(io: Io) -> String {
    io.to_string()
}

/// Runs every (round, shard count, backend, accept mode), interleaved.
pub fn run(cfg: &ScaleConfig) -> anyhow::Result<ScaleOutput> {
    if cfg.backends.is_empty() || cfg.accept.is_empty() || cfg.rounds == 0 {
        bail!("need at least one backend, one accept mode and one round");
    }
    let machine_at_start = MachineInfo::announce();
    let cpus = machine::allowed_cpus();
    let (max, capped, note) = shard_cap(cfg.max_shards, cpus.len());
    println!("scale: {note}");
    let mut cc = CompareConfig {
        serve_exe: cfg.serve_exe.clone(),
        peers: PeerSelection::None,
        peers_dir: PathBuf::new(),
        sizes: vec![cfg.msg_size],
        conns: cfg.conns,
        rounds: cfg.rounds,
        threads: 1,
        server_cpus: Vec::new(),
        client_cpus: cfg.client_cpus.clone(),
        client_threads: 1,
        warmup: cfg.warmup,
        duration: cfg.duration,
        client_io: cfg.client_io,
        max_foreign_pct: cfg.max_foreign_pct,
        retries: cfg.retries,
    };
    let mut slots = Vec::new();
    for n in 1..=max {
        for &io in &cfg.backends {
            for &mode in &cfg.accept {
                slots.push((n, io, mode));
            }
        }
    }
    let mut runs: Vec<(String, String, usize, RunRecord)> = Vec::new();
    let mut failures = Vec::new();
    for (r, &(n, io, mode)) in experiment::schedule(cfg.rounds, &slots) {
        let spec = ServerSpec::shardline_with(io, mode);
        let launch = Launch {
            serve_exe: cfg.serve_exe.clone(),
            threads: n,
            cpus: cpus.iter().copied().cycle().take(n).collect(),
        };
        // The client gets the CPUs the shards leave free, else runs
        // unpinned beside them (unless told where).
        cc.client_cpus = if cfg.client_cpus.is_empty() {
            cpus.iter()
                .copied()
                .filter(|c| !launch.cpus.contains(c))
                .collect()
        } else {
            cfg.client_cpus.clone()
        };
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
                "{label}: {} rps  p50 {:.1} µs  p99 {:.1} µs  client CPU {:.0} %  others {} %",
                report::krps(l.rps),
                l.latency.p50_us,
                l.latency.p99_us,
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
            for n in 1..=max {
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
    println!("{note}");
    Ok(ScaleOutput {
        cpus_available: cpus.len(),
        requested_max_shards: cfg.max_shards,
        max_shards: max,
        capped_by_machine: capped,
        note,
        msg_size: cfg.msg_size,
        conns: cfg.conns,
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
    let title = format!(
        "Shardline echo, {} B × {} conns{}",
        out.msg_size,
        out.conns,
        if out.capped_by_machine {
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

    #[test]
    fn cap_says_so() {
        let (n, capped, note) = shard_cap(None, 2);
        assert_eq!((n, capped), (2, true));
        assert!(note.contains("capped"), "{note}");
        let (n, capped, note) = shard_cap(Some(8), 2);
        assert_eq!((n, capped), (2, true));
        assert!(note.contains("capped at 2"), "{note}");
        let (n, capped, _) = shard_cap(Some(1), 2);
        assert_eq!((n, capped), (1, false));
    }
}
