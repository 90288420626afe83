//! `proxy`: HTTP/1.1 reverse proxies under wrk. shardline-proxy (io_uring and
//! epoll), HAProxy and nginx, each with the same worker count, in front of the same
//! backend (an nginx answering 13 bytes), keep-alive on both sides; plus a
//! `direct` run of wrk against the backend, to tell what each proxy adds to the
//! latency. Interleaved A B C … A B C over rounds, medians quoted.
//!
//! The headline number is requests per proxy CPU-second: requests wrk completed ÷
//! the proxy's utime + stime over the run (every thread, and every process it
//! forked), from /proc. It depends on the proxy's own work; requests per second
//! also depend on wrk and the backend, which share the other CPU.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde::Serialize;
use shardline::Io;

use crate::{
    experiment::{self, median_of, median_of_some, CpuMark, CpuSpan, Probe, Quiet},
    machine::{self, MachineInfo},
    report::{self, round},
    servers::{self, NginxRole, ServerProc},
};

/// Every proxy the harness knows, in run order.
pub const PROXIES: [&str; 5] = [
    "direct",
    "shardline-uring",
    "shardline-epoll",
    "haproxy",
    "nginx",
];

/// The established proxies shardline-proxy is measured against.
pub const PEERS: [&str; 2] = ["haproxy", "nginx"];

/// The target: requests per proxy CPU-second at least this × the better
/// peer's, with a p99 no worse.
pub const TARGET_RATIO: f64 = 1.05;

/// What wrk runs through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proxy {
    /// No proxy: wrk against the backend itself.
    Direct,
    /// shardline-proxy on this I/O backend.
    Shardline(Io),
    /// HAProxy.
    Haproxy,
    /// nginx as a reverse proxy.
    Nginx,
}

impl Proxy {
    /// Name in reports.
    pub fn name(&self) -> String {
        match self {
            Proxy::Direct => "direct".into(),
            Proxy::Shardline(io) => format!("shardline-{io}"),
            Proxy::Haproxy => "haproxy".into(),
            Proxy::Nginx => "nginx".into(),
        }
    }

    /// Parses one of [`PROXIES`].
    pub fn parse(name: &str) -> Result<Proxy, String> {
        match name.trim() {
            "direct" => Ok(Proxy::Direct),
            "shardline-uring" => Ok(Proxy::Shardline(Io::Uring)),
            "shardline-epoll" => Ok(Proxy::Shardline(Io::Epoll)),
            "haproxy" => Ok(Proxy::Haproxy),
            "nginx" => Ok(Proxy::Nginx),
            other => Err(format!(
                "unknown proxy {other:?} (known: {})",
                PROXIES.join(", ")
            )),
        }
    }
}

// ---------------------------------------------------------------------------
// wrk's report.

/// wrk's socket error counters (`Socket errors: connect N, read N, write N,
/// timeout N`; all 0 when wrk prints no such line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SocketErrors {
    /// Failed connects.
    pub connect: u64,
    /// Failed reads (a connection closed before a complete response included).
    pub read: u64,
    /// Failed writes.
    pub write: u64,
    /// Requests without a response within wrk's `--timeout`.
    pub timeout: u64,
}

impl SocketErrors {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout
    }
}

/// wrk's `--latency` distribution, µs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WrkLatency {
    /// 50th percentile.
    pub p50_us: f64,
    /// 75th percentile.
    pub p75_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
}

/// What one wrk run printed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WrkReport {
    /// Completed responses (`N requests in T`).
    pub requests: u64,
    /// wrk's run time, seconds (`in T`).
    pub duration_s: f64,
    /// `Requests/sec`.
    pub rps: f64,
    /// Mean latency (the `Latency` line of the thread stats), µs.
    pub mean_latency_us: f64,
    /// Largest latency, µs.
    pub max_latency_us: f64,
    /// The distribution (absent without `--latency`).
    pub latency: Option<WrkLatency>,
    /// Responses with a status outside 2xx/3xx (`Non-2xx or 3xx responses`).
    pub non_2xx_3xx: u64,
    /// Socket errors.
    pub socket_errors: SocketErrors,
}

impl WrkReport {
    /// Non-2xx/3xx responses plus socket errors.
    pub fn errors(&self) -> u64 {
        self.non_2xx_3xx + self.socket_errors.total()
    }
}

/// A wrk time (`880.00us`, `1.75ms`, `2.01s`, `1.50m`, `1.00h`) in µs.
pub fn parse_wrk_time_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600e6)
    } else {
        return None;
    };
    let v: f64 = num.trim().parse().ok()?;
    v.is_finite().then_some(v * mult)
}

/// Parses what `wrk --latency` prints on stdout. Errors say what is missing
/// (wrk prints nothing there when it cannot connect at all).
pub fn parse_wrk(out: &str) -> Result<WrkReport, String> {
    let mut requests_line = None;
    let mut rps = None;
    let mut mean = None;
    let mut max = None;
    let mut dist: [Option<f64>; 4] = [None; 4];
    let mut in_dist = false;
    let mut non_2xx_3xx = 0;
    let mut socket_errors = SocketErrors::default();
    for line in out.lines() {
        let t = line.trim();
        if t == "Latency Distribution" {
            in_dist = true;
            continue;
        }
        if in_dist {
            if let Some((pct, v)) = t.split_once('%') {
                let slot = match pct.trim() {
                    "50" => Some(0),
                    "75" => Some(1),
                    "90" => Some(2),
                    "99" => Some(3),
                    _ => None,
                };
                if let Some(i) = slot {
                    dist[i] = Some(
                        parse_wrk_time_us(v)
                            .ok_or_else(|| format!("bad latency percentile line {t:?}"))?,
                    );
                    continue;
                }
            }
            in_dist = false;
        }
        if let Some(rest) = t.strip_prefix("Latency ") {
            // Latency  AVG  STDEV  MAX  +/-STDEV
            let f: Vec<&str> = rest.split_whitespace().collect();
            mean = f.first().and_then(|x| parse_wrk_time_us(x));
            max = f.get(2).and_then(|x| parse_wrk_time_us(x));
        } else if let Some(rest) = t.strip_prefix("Requests/sec:") {
            rps = rest.trim().parse::<f64>().ok();
        } else if let Some(rest) = t.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx_3xx = rest.trim().parse().map_err(|_| format!("bad line {t:?}"))?;
        } else if let Some(rest) = t.strip_prefix("Socket errors:") {
            for item in rest.split(',') {
                let mut kv = item.split_whitespace();
                let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
                    return Err(format!("bad line {t:?}"));
                };
                let v: u64 = v.parse().map_err(|_| format!("bad line {t:?}"))?;
                match k {
                    "connect" => socket_errors.connect = v,
                    "read" => socket_errors.read = v,
                    "write" => socket_errors.write = v,
                    "timeout" => socket_errors.timeout = v,
                    _ => return Err(format!("unknown socket error kind in {t:?}")),
                }
            }
        } else if t.contains(" requests in ") {
            requests_line = Some(t.to_owned());
        }
    }
    let line = requests_line.ok_or("no \"N requests in T\" line")?;
    let mut words = line.split_whitespace();
    let requests: u64 = words
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("bad line {line:?}"))?;
    let duration_us = line
        .split(" requests in ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(parse_wrk_time_us)
        .ok_or_else(|| format!("bad line {line:?}"))?;
    let rps = rps.ok_or("no Requests/sec line")?;
    let latency = match dist {
        [Some(p50_us), Some(p75_us), Some(p90_us), Some(p99_us)] => Some(WrkLatency {
            p50_us,
            p75_us,
            p90_us,
            p99_us,
        }),
        [None, None, None, None] => None,
        _ => return Err("incomplete latency distribution".into()),
    };
    Ok(WrkReport {
        requests,
        duration_s: duration_us / 1e6,
        rps,
        mean_latency_us: mean.ok_or("no Latency line")?,
        max_latency_us: max.ok_or("no Latency line")?,
        latency,
        non_2xx_3xx,
        socket_errors,
    })
}

// ---------------------------------------------------------------------------
// The harness.

/// What `proxy` runs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Proxies in run order within a round (`Direct` included if wanted).
    pub proxies: Vec<Proxy>,
    /// The shardline-proxy binary.
    pub proxy_exe: PathBuf,
    /// Build shardline-proxy (`cargo build --release -p shardline-proxy`) if
    /// missing.
    pub build_proxy: bool,
    /// nginx (backend and proxy).
    pub nginx_exe: PathBuf,
    /// HAProxy.
    pub haproxy_exe: PathBuf,
    /// wrk.
    pub wrk_exe: PathBuf,
    /// Workers / threads / shards of every proxy.
    pub workers: usize,
    /// wrk connections (`-c`); also the size of every upstream keep-alive pool.
    pub conns: usize,
    /// wrk threads (`-t`).
    pub wrk_threads: usize,
    /// Rounds (every proxy once per round).
    pub rounds: usize,
    /// Unrecorded wrk run before each measured one, whole seconds (0: none).
    pub warmup_s: u64,
    /// Measured wrk run, whole seconds (wrk's `-d` takes whole seconds).
    pub duration_s: u64,
    /// wrk's `--timeout`, whole seconds.
    pub wrk_timeout_s: u64,
    /// CPUs of the proxy (worker *i* on the *i*-th for shardline-proxy; the
    /// whole process is confined to them for all).
    pub proxy_cpus: Vec<usize>,
    /// CPUs of wrk.
    pub client_cpus: Vec<usize>,
    /// CPUs of the backend nginx.
    pub backend_cpus: Vec<usize>,
    /// A run during which other processes used more than this % of one CPU is
    /// measured again.
    pub max_foreign_pct: f64,
    /// How many times a noisy run is measured again (the quietest is kept).
    pub retries: usize,
}

/// Default pinning for `workers` proxy workers: the proxy on the first `workers`
/// CPUs, wrk on the next one (or the last CPU), the backend on a CPU neither uses,
/// else beside wrk (on a 2-CPU machine the proxy has a CPU to itself; wrk and the
/// backend share the other).
pub fn default_pinning(workers: usize) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let cpus = machine::allowed_cpus();
    let proxy: Vec<usize> = cpus.iter().copied().take(workers.max(1)).collect();
    let client: Vec<usize> = cpus
        .iter()
        .copied()
        .find(|c| !proxy.contains(c))
        .or_else(|| cpus.last().copied())
        .into_iter()
        .collect();
    let backend = cpus
        .iter()
        .copied()
        .find(|c| !proxy.contains(c) && !client.contains(c))
        .map_or_else(|| client.clone(), |c| vec![c]);
    (proxy, client, backend)
}

/// One measured wrk run.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyRun {
    /// Round (from 1).
    pub round: usize,
    /// Proxy name (`direct`: no proxy).
    pub proxy: String,
    /// What wrk printed, parsed (absent if the run failed).
    pub wrk: Option<WrkReport>,
    /// The proxy's CPU seconds over the run (process tree; `null` for direct).
    pub proxy_cpu_s: Option<f64>,
    /// The proxy's CPU over the run ÷ the run, in % of one CPU.
    pub proxy_cpu_pct: Option<f64>,
    /// Requests ÷ the proxy's CPU seconds.
    pub req_per_proxy_cpu_s: Option<f64>,
    /// The backend's CPU ÷ the run, in % of one CPU.
    pub backend_cpu_pct: Option<f64>,
    /// wrk's CPU ÷ the run, in % of one CPU (near 100 × threads: wrk is the
    /// limit).
    pub client_cpu_pct: Option<f64>,
    /// CPU other processes used during the run, in % of one CPU (machine busy
    /// time from /proc/stat, interrupts and steal included, minus the proxy's,
    /// the backend's, wrk's and the harness's).
    pub foreign_cpu_pct: Option<f64>,
    /// Measurements made for this slot (more than 1: earlier ones were noisy).
    pub attempts: usize,
    /// Why the run failed.
    pub error: Option<String>,
}

impl ProxyRun {
    /// Nothing measured yet.
    pub fn new(round: usize, proxy: &str, attempts: usize) -> ProxyRun {
        ProxyRun {
            round,
            proxy: proxy.to_owned(),
            wrk: None,
            proxy_cpu_s: None,
            proxy_cpu_pct: None,
            req_per_proxy_cpu_s: None,
            backend_cpu_pct: None,
            client_cpu_pct: None,
            foreign_cpu_pct: None,
            attempts,
            error: None,
        }
    }
}

/// One proxy: medians over rounds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProxyRow {
    /// Proxy name.
    pub proxy: String,
    /// Runs with a result.
    pub runs: usize,
    /// Median requests per second.
    pub rps: f64,
    /// Median requests per proxy CPU-second (`null` for direct).
    pub req_per_proxy_cpu_s: Option<f64>,
    /// req_per_proxy_cpu_s ÷ the better peer's (HAProxy, nginx).
    pub cpu_efficiency_vs_best_peer: Option<f64>,
    /// rps ÷ the same peer's rps.
    pub rps_vs_best_peer: Option<f64>,
    /// Median proxy CPU, % of one CPU.
    pub proxy_cpu_pct: Option<f64>,
    /// Median wrk CPU, % of one CPU.
    pub client_cpu_pct: Option<f64>,
    /// Median p50 latency, µs.
    pub p50_us: f64,
    /// Median p99 latency, µs.
    pub p99_us: f64,
    /// p50_us − direct's p50_us.
    pub added_p50_us: Option<f64>,
    /// p99_us − direct's p99_us.
    pub added_p99_us: Option<f64>,
    /// Non-2xx/3xx responses over every run.
    pub non_2xx_3xx: u64,
    /// Socket errors over every run.
    pub socket_errors: u64,
}

/// How shardline-proxy fares against the target.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Verdict {
    /// shardline-uring or shardline-epoll.
    pub proxy: String,
    /// The peer with the most requests per CPU-second.
    pub best_peer: String,
    /// Requests per CPU-second ÷ the best peer's.
    pub cpu_efficiency_ratio: f64,
    /// p99 ÷ the best peer's p99.
    pub p99_ratio: f64,
    /// cpu_efficiency_ratio ≥ 1.05, p99_ratio ≤ 1, and no errors.
    pub meets_target: bool,
}

/// What `proxy --json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyOutput {
    /// Medians per proxy.
    pub results: Vec<ProxyRow>,
    /// shardline-proxy against the target.
    pub verdicts: Vec<Verdict>,
    /// Every run.
    pub runs: Vec<ProxyRun>,
    /// Proxies left out, and why.
    pub skipped: Vec<String>,
    /// How the runs were set up.
    pub setup: ProxySetup,
    /// Where they ran.
    pub machine: MachineInfo,
}

/// The setup, echoed into the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct ProxySetup {
    /// Workers / threads / shards of every proxy.
    pub workers: usize,
    /// wrk connections.
    pub conns: usize,
    /// wrk threads.
    pub wrk_threads: usize,
    /// The wrk command line of a measured run (the URL's port varies).
    pub wrk_command: String,
    /// Rounds.
    pub rounds: usize,
    /// Warm-up seconds per run.
    pub warmup_s: u64,
    /// Measured seconds per run.
    pub duration_s: u64,
    /// Proxy CPUs.
    pub proxy_cpus: Vec<usize>,
    /// wrk CPUs.
    pub client_cpus: Vec<usize>,
    /// Backend CPUs.
    pub backend_cpus: Vec<usize>,
    /// The backend's response body, bytes.
    pub backend_body_bytes: usize,
    /// Versions of the programs involved, as they report them.
    pub versions: Vec<String>,
}

/// The wrk arguments of a run (without the program).
pub fn wrk_args(cfg: &ProxyConfig, seconds: u64, addr: SocketAddr) -> Vec<String> {
    vec![
        format!("-t{}", cfg.wrk_threads.max(1)),
        format!("-c{}", cfg.conns),
        format!("-d{}s", seconds.max(1)),
        format!("--timeout={}s", cfg.wrk_timeout_s.max(1)),
        "--latency".into(),
        format!("http://{addr}/"),
    ]
}

/// One plain HTTP/1.1 GET through `addr`; Ok when it answers 200 with the
/// backend's body (the proxy forwards at all, before it is measured).
pub fn check_forwarding(addr: SocketAddr) -> anyhow::Result<()> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench.local\r\nConnection: close\r\n\r\n")?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let n = match s.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if !buf.is_empty() && e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e).context("reading the response"),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let body = &buf[head_end + 4..];
            let len = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            });
            if n == 0 || len.is_some_and(|l| body.len() >= l) {
                let status = head.lines().next().unwrap_or_default();
                if !status.starts_with("HTTP/1.1 200") && !status.starts_with("HTTP/1.0 200") {
                    bail!("answered {status:?}");
                }
                if body != servers::BACKEND_BODY.as_bytes() {
                    bail!(
                        "answered 200 with a body of {} bytes that is not the backend's",
                        body.len()
                    );
                }
                return Ok(());
            }
        }
        if n == 0 {
            bail!(
                "closed after {} bytes, before a complete response",
                buf.len()
            );
        }
        if Instant::now() > deadline {
            bail!("no complete response within 5 s");
        }
    }
}

/// Runs wrk once for `seconds` against `addr`; Ok with its parsed report.
fn run_wrk(cfg: &ProxyConfig, seconds: u64, addr: SocketAddr) -> anyhow::Result<WrkReport> {
    let mut cmd = Command::new(&cfg.wrk_exe);
    cmd.args(wrk_args(cfg, seconds, addr));
    servers::pin_command(&mut cmd, &cfg.client_cpus)?;
    let limit = Duration::from_secs(seconds.max(1) + cfg.wrk_timeout_s + 15);
    let out = servers::run_bounded("wrk", cmd, limit)?;
    let Some(status) = out.status else {
        bail!("wrk ran past {limit:?} and was killed");
    };
    match parse_wrk(&out.stdout) {
        Ok(r) if status.success() => Ok(r),
        Ok(_) => bail!("wrk failed ({status}): {}", out.stderr.trim()),
        Err(why) => bail!(
            "wrk ({status}) printed no usable report ({why}): {} {}",
            out.stdout.trim(),
            out.stderr.trim()
        ),
    }
}

/// One measured wrk run through `proxy` (a process, or none for direct), with the
/// CPU accounting of everything involved.
fn measure(
    cfg: &ProxyConfig,
    name: &str,
    addr: SocketAddr,
    proxy: Option<u32>,
    backend: u32,
    round: usize,
) -> ProxyRun {
    // wrk is reaped within the run: its CPU time is what the harness's reaped
    // children gained.
    let probes = [
        Probe::ReapedChildren,
        Probe::Tree(proxy),
        Probe::Tree(Some(backend)),
    ];
    let a = CpuMark::read(&probes);
    let result = run_wrk(cfg, cfg.duration_s, addr);
    let span = CpuSpan::between(&a, &CpuMark::read(&probes));
    let mut run = ProxyRun::new(round, name, 1);
    let rep = match result {
        Ok(r) => r,
        Err(e) => {
            run.error = Some(format!("{e:#}"));
            return run;
        }
    };
    let window = span.wall.max(1e-9);
    let pct = |s: f64| report::round(s / window * 100.0, 1);
    let wrk_s = span.probe(0).unwrap_or(0.0);
    let proxy_s = span.probe(1);
    let backend_s = span.probe(2);
    if let Some(p) = proxy_s {
        run.proxy_cpu_s = Some(report::round(p, 3));
        run.proxy_cpu_pct = Some(pct(p));
        if p > 0.0 {
            run.req_per_proxy_cpu_s = Some(report::round(rep.requests as f64 / p, 1));
        }
    }
    run.backend_cpu_pct = backend_s.map(pct);
    run.client_cpu_pct = Some(pct(wrk_s));
    run.foreign_cpu_pct = span.foreign_pct(window);
    run.wrk = Some(rep);
    run
}

experiment::impl_attempt!(ProxyRun, wrk);

/// [`measure`], repeated (up to `cfg.retries` more times) while other processes
/// used more than `cfg.max_foreign_pct` % of a CPU during the run; keeps the
/// quietest attempt (see [`Quiet`]).
fn measure_quiet(
    cfg: &ProxyConfig,
    name: &str,
    addr: SocketAddr,
    proxy: Option<u32>,
    backend: u32,
    round: usize,
) -> ProxyRun {
    let label = format!("round {round} {name:<16}");
    Quiet::new(cfg.max_foreign_pct, cfg.retries).measure(&label, "run", || {
        measure(cfg, name, addr, proxy, backend, round)
    })
}

fn version_of(exe: &std::path::Path, arg: &str) -> Option<String> {
    let out = Command::new(exe)
        .arg(arg)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

fn start_proxy(
    cfg: &ProxyConfig,
    proxy: Proxy,
    backend: SocketAddr,
) -> anyhow::Result<Option<ServerProc>> {
    let w = cfg.workers;
    Ok(match proxy {
        Proxy::Direct => None,
        Proxy::Shardline(io) => Some(servers::start_shardline_proxy(
            &cfg.proxy_exe,
            io,
            backend,
            w,
            &cfg.proxy_cpus,
            cfg.conns,
        )?),
        Proxy::Haproxy => Some(servers::start_haproxy(
            &cfg.haproxy_exe,
            backend,
            w,
            &cfg.proxy_cpus,
            cfg.conns,
        )?),
        Proxy::Nginx => Some(servers::start_nginx(
            &cfg.nginx_exe,
            "nginx-proxy",
            NginxRole::Proxy {
                upstream: backend,
                keepalive: cfg.conns,
            },
            w,
            &cfg.proxy_cpus,
            cfg.conns,
        )?),
    })
}

/// Runs every proxy × round, printing progress and the table.
pub fn run(cfg: &ProxyConfig) -> anyhow::Result<ProxyOutput> {
    if cfg.rounds == 0 || cfg.proxies.is_empty() || cfg.duration_s == 0 || cfg.conns == 0 {
        bail!("need at least one round, one proxy, one connection and a duration ≥ 1 s");
    }
    if !cfg.wrk_exe.is_file() {
        bail!(
            "no {}: the load generator is missing (install the Debian package: apt-get install wrk, or ./x bench-deps)",
            cfg.wrk_exe.display()
        );
    }
    if !cfg.nginx_exe.is_file() {
        bail!(
            "no {}: the backend is an nginx (install the Debian package: apt-get install nginx, or ./x bench-deps)",
            cfg.nginx_exe.display()
        );
    }
    let machine_at_start = MachineInfo::announce();
    let mut skipped = Vec::new();
    let mut proxies = Vec::new();
    for &p in &cfg.proxies {
        let missing = match p {
            Proxy::Direct | Proxy::Nginx => None,
            Proxy::Shardline(_) => {
                servers::resolve_workspace_exe(&cfg.proxy_exe, "shardline-proxy", cfg.build_proxy)
                    .err()
            }
            Proxy::Haproxy => (!cfg.haproxy_exe.is_file()).then(|| {
                format!(
                    "no {} (install the Debian package: apt-get install haproxy, or ./x bench-deps)",
                    cfg.haproxy_exe.display()
                )
            }),
        };
        match missing {
            Some(why) => {
                println!("note: skipping {}: {why}", p.name());
                skipped.push(format!("{}: {why}", p.name()));
            }
            None if !proxies.contains(&p) => proxies.push(p),
            None => {}
        }
    }
    if proxies.is_empty() {
        bail!("no proxy to run: {}", skipped.join("; "));
    }
    let mut versions = vec![];
    versions.extend(version_of(&cfg.wrk_exe, "-v"));
    versions.extend(version_of(&cfg.nginx_exe, "-v"));
    if proxies.contains(&Proxy::Haproxy) {
        versions.extend(version_of(&cfg.haproxy_exe, "-v"));
    }
    if proxies.iter().any(|p| matches!(p, Proxy::Shardline(_))) {
        versions.extend(version_of(&cfg.proxy_exe, "--version"));
    }
    let backend = servers::start_nginx(
        &cfg.nginx_exe,
        "nginx-backend",
        NginxRole::Backend,
        1,
        &cfg.backend_cpus,
        cfg.conns,
    )
    .context("starting the backend nginx")?;
    check_forwarding(backend.addr).context("the backend nginx does not answer as expected")?;
    let wrk_command = format!(
        "wrk {}",
        wrk_args(cfg, cfg.duration_s, ([127, 0, 0, 1], 0).into())
            .join(" ")
            .replace("127.0.0.1:0", "127.0.0.1:PORT")
    );
    println!(
        "proxy: {} proxies × {} round(s); {} worker(s) each on CPUs {:?}; backend nginx ({} B body) on CPUs {:?}; {wrk_command} on CPUs {:?}; {} s warm-up + {} s measured per run",
        proxies.len(),
        cfg.rounds,
        cfg.workers,
        cfg.proxy_cpus,
        servers::BACKEND_BODY.len(),
        cfg.backend_cpus,
        cfg.client_cpus,
        cfg.warmup_s,
        cfg.duration_s,
    );
    let mut runs = Vec::new();
    for (round, &p) in experiment::schedule(cfg.rounds, &proxies) {
        let name = p.name();
        let failed = |msg: String| ProxyRun {
            error: Some(msg),
            ..ProxyRun::new(round, &name, 0)
        };
        let proc = match start_proxy(cfg, p, backend.addr) {
            Ok(proc) => proc,
            Err(e) => {
                let msg = format!("failed to start: {e:#}");
                println!("round {round} {name}: {msg}");
                runs.push(failed(msg));
                continue;
            }
        };
        let (addr, pid) = proc
            .as_ref()
            .map_or((backend.addr, None), |s| (s.addr, Some(s.pid)));
        if let Err(e) = check_forwarding(addr) {
            let msg = format!("does not forward a plain GET: {e:#}");
            println!("round {round} {name}: {msg}");
            runs.push(failed(msg));
            continue;
        }
        if cfg.warmup_s > 0 {
            if let Err(e) = run_wrk(cfg, cfg.warmup_s, addr) {
                println!("round {round} {name}: warm-up failed: {e:#}");
            }
        }
        let run = measure_quiet(cfg, &name, addr, pid, backend.pid, round);
        println!("{}", describe(&run));
        runs.push(run);
        drop(proc);
    }
    drop(backend);
    let names: Vec<String> = proxies.iter().map(Proxy::name).collect();
    let results = summarize(&names, &runs);
    let verdicts = verdicts(&results);
    println!();
    print!("{}", render(&results, &verdicts));
    Ok(ProxyOutput {
        results,
        verdicts,
        runs,
        skipped,
        setup: ProxySetup {
            workers: cfg.workers,
            conns: cfg.conns,
            wrk_threads: cfg.wrk_threads,
            wrk_command,
            rounds: cfg.rounds,
            warmup_s: cfg.warmup_s,
            duration_s: cfg.duration_s,
            proxy_cpus: cfg.proxy_cpus.clone(),
            client_cpus: cfg.client_cpus.clone(),
            backend_cpus: cfg.backend_cpus.clone(),
            backend_body_bytes: servers::BACKEND_BODY.len(),
            versions,
        },
        machine: machine_at_start,
    })
}

fn fmt_opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".into(), f)
}

fn describe(run: &ProxyRun) -> String {
    match (&run.wrk, &run.error) {
        (Some(w), _) => {
            let lat = w.latency.as_ref();
            format!(
                "round {} {:<16}: {:>9} req/s  {} req/proxy-CPU-s (proxy {} % CPU)  p50 {} ms  p99 {} ms  backend {} %  wrk {} %  others {} %{}",
                run.round,
                run.proxy,
                report::krps(w.rps),
                fmt_opt(run.req_per_proxy_cpu_s, report::krps),
                fmt_opt(run.proxy_cpu_pct, |c| format!("{c:.0}")),
                fmt_opt(lat.map(|l| l.p50_us), |x| format!("{:.2}", x / 1e3)),
                fmt_opt(lat.map(|l| l.p99_us), |x| format!("{:.2}", x / 1e3)),
                fmt_opt(run.backend_cpu_pct, |c| format!("{c:.0}")),
                fmt_opt(run.client_cpu_pct, |c| format!("{c:.0}")),
                fmt_opt(run.foreign_cpu_pct, |c| format!("{c:.0}")),
                if w.errors() > 0 {
                    format!(
                        "  ERRORS: {} non-2xx/3xx, socket {:?}",
                        w.non_2xx_3xx, w.socket_errors
                    )
                } else {
                    String::new()
                }
            )
        }
        (None, e) => format!(
            "round {} {:<16}: failed: {}",
            run.round,
            run.proxy,
            e.as_deref().unwrap_or("unknown error")
        ),
    }
}

/// Medians per proxy; latency added over direct; ratios to the better peer.
pub fn summarize(proxies: &[String], runs: &[ProxyRun]) -> Vec<ProxyRow> {
    let mut rows = Vec::new();
    for p in proxies {
        let ok: Vec<&ProxyRun> = runs
            .iter()
            .filter(|r| &r.proxy == p && r.wrk.is_some())
            .collect();
        let wrks: Vec<&WrkReport> = ok.iter().filter_map(|r| r.wrk.as_ref()).collect();
        let Some(rps) = median_of(&wrks, |w| w.rps) else {
            continue;
        };
        let pick = |f: &dyn Fn(&ProxyRun) -> Option<f64>| median_of_some(&ok, |r| f(r));
        let lat = |f: &dyn Fn(&WrkLatency) -> f64| {
            median_of_some(&wrks, |w| w.latency.as_ref().map(f)).unwrap_or(0.0)
        };
        rows.push(ProxyRow {
            proxy: p.clone(),
            runs: wrks.len(),
            rps: round(rps, 1),
            req_per_proxy_cpu_s: pick(&|r| r.req_per_proxy_cpu_s).map(|x| round(x, 1)),
            cpu_efficiency_vs_best_peer: None,
            rps_vs_best_peer: None,
            proxy_cpu_pct: pick(&|r| r.proxy_cpu_pct).map(|x| round(x, 1)),
            client_cpu_pct: pick(&|r| r.client_cpu_pct).map(|x| round(x, 1)),
            p50_us: round(lat(&|l| l.p50_us), 1),
            p99_us: round(lat(&|l| l.p99_us), 1),
            added_p50_us: None,
            added_p99_us: None,
            non_2xx_3xx: wrks.iter().map(|w| w.non_2xx_3xx).sum(),
            socket_errors: wrks.iter().map(|w| w.socket_errors.total()).sum(),
        });
    }
    if let Some(direct) = rows.iter().find(|r| r.proxy == "direct").cloned() {
        for r in rows.iter_mut().filter(|r| r.proxy != "direct") {
            r.added_p50_us = Some(round(r.p50_us - direct.p50_us, 1));
            r.added_p99_us = Some(round(r.p99_us - direct.p99_us, 1));
        }
    }
    if let Some(best) = best_peer(&rows).cloned() {
        let b = best.req_per_proxy_cpu_s.unwrap_or(0.0);
        for r in rows.iter_mut().filter(|r| r.proxy != "direct") {
            r.cpu_efficiency_vs_best_peer = r.req_per_proxy_cpu_s.map(|x| round(x / b, 3));
            if best.rps > 0.0 {
                r.rps_vs_best_peer = Some(round(r.rps / best.rps, 3));
            }
        }
    }
    rows
}

/// The peer (HAProxy or nginx) with the most requests per proxy CPU-second.
pub fn best_peer(rows: &[ProxyRow]) -> Option<&ProxyRow> {
    rows.iter()
        .filter(|r| PEERS.contains(&r.proxy.as_str()))
        .filter(|r| r.req_per_proxy_cpu_s.is_some_and(|x| x > 0.0))
        .max_by(|a, b| {
            a.req_per_proxy_cpu_s
                .unwrap_or(0.0)
                .total_cmp(&b.req_per_proxy_cpu_s.unwrap_or(0.0))
        })
}

/// shardline-proxy's rows against the target (needs a peer result).
pub fn verdicts(rows: &[ProxyRow]) -> Vec<Verdict> {
    let Some(best) = best_peer(rows) else {
        return Vec::new();
    };
    rows.iter()
        .filter(|r| r.proxy.starts_with("shardline-"))
        .filter_map(|r| {
            let ratio = r.req_per_proxy_cpu_s? / best.req_per_proxy_cpu_s?;
            let p99 = if best.p99_us > 0.0 {
                r.p99_us / best.p99_us
            } else {
                f64::INFINITY
            };
            Some(Verdict {
                proxy: r.proxy.clone(),
                best_peer: best.proxy.clone(),
                cpu_efficiency_ratio: round(ratio, 3),
                p99_ratio: round(p99, 3),
                meets_target: ratio >= TARGET_RATIO
                    && p99 <= 1.0
                    && r.non_2xx_3xx + r.socket_errors == 0,
            })
        })
        .collect()
}

/// The result table and the verdict lines.
pub fn render(rows: &[ProxyRow], verdicts: &[Verdict]) -> String {
    let mut out = String::from(
        "medians over rounds (× = ÷ the better peer's, by req/s per proxy CPU-second; added = over direct)\n",
    );
    let ms = |us: f64| format!("{:.2}", us / 1e3);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.proxy.clone(),
                report::krps(r.rps),
                fmt_opt(r.rps_vs_best_peer, |x| format!("{x:.2}×")),
                fmt_opt(r.req_per_proxy_cpu_s, report::krps),
                fmt_opt(r.cpu_efficiency_vs_best_peer, |x| format!("{x:.2}×")),
                fmt_opt(r.proxy_cpu_pct, |x| format!("{x:.0}")),
                fmt_opt(r.client_cpu_pct, |x| format!("{x:.0}")),
                ms(r.p50_us),
                ms(r.p99_us),
                fmt_opt(r.added_p99_us, ms),
                format!("{}", r.non_2xx_3xx + r.socket_errors),
            ]
        })
        .collect();
    out.push_str(&report::table(
        &[
            "proxy",
            "req/s",
            "×",
            "req/s per proxy CPU-s",
            "×",
            "proxy CPU %",
            "wrk CPU %",
            "p50 ms",
            "p99 ms",
            "added p99 ms",
            "errors",
        ],
        &cells,
    ));
    for v in verdicts {
        out.push_str(&format!(
            "{}: {:.2}× {}'s req/s per CPU-second (target ≥ {TARGET_RATIO:.2}×), p99 {:.2}× its p99 (target ≤ 1): {}\n",
            v.proxy,
            v.cpu_efficiency_ratio,
            v.best_peer,
            v.p99_ratio,
            if v.meets_target { "meets the target" } else { "BELOW the target" }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = include_str!("../tests/fixtures/wrk/ok-64c.txt");
    const NO_LATENCY: &str = include_str!("../tests/fixtures/wrk/no-latency.txt");
    const NON_2XX: &str = include_str!("../tests/fixtures/wrk/non2xx.txt");
    const READ_ERRORS: &str = include_str!("../tests/fixtures/wrk/read-errors.txt");
    const TIMEOUTS: &str = include_str!("../tests/fixtures/wrk/timeouts.txt");
    const TRUNCATED: &str = include_str!("../tests/fixtures/wrk/truncated-responses.txt");

    #[test]
    fn wrk_times() {
        let near = |s: &str, us: f64| {
            let v = parse_wrk_time_us(s).unwrap_or_else(|| panic!("{s:?} does not parse"));
            assert!((v - us).abs() < 1e-6 * us.max(1.0), "{s:?}: {v} ≠ {us}");
        };
        near("209.00us", 209.0);
        near("0.88ms", 880.0);
        near("2.01s", 2_010_000.0);
        near("1.50m", 90e6);
        near("1.00h", 3600e6);
        assert_eq!(parse_wrk_time_us("-nan%"), None);
        assert_eq!(parse_wrk_time_us("12"), None);
    }

    #[test]
    fn wrk_report_with_latency_distribution() {
        let r = parse_wrk(OK).unwrap();
        assert_eq!(r.requests, 94_077);
        assert!((r.duration_s - 2.01).abs() < 1e-9);
        assert_eq!(r.rps, 46_727.99);
        let near = |a: f64, b: f64| assert!((a - b).abs() < 1e-6, "{a} ≠ {b}");
        near(r.mean_latency_us, 1_150.0);
        near(r.max_latency_us, 7_690.0);
        let l = r.latency.expect("--latency output");
        near(l.p50_us, 880.0);
        near(l.p75_us, 970.0);
        near(l.p90_us, 1_750.0);
        near(l.p99_us, 5_970.0);
        assert_eq!(r.errors(), 0);
    }

    #[test]
    fn wrk_report_without_latency_flag() {
        let r = parse_wrk(NO_LATENCY).unwrap();
        assert_eq!(r.requests, 42_193);
        assert_eq!(r.rps, 41_859.17);
        assert_eq!(r.latency, None);
    }

    #[test]
    fn wrk_errors_are_counted() {
        let r = parse_wrk(NON_2XX).unwrap();
        assert_eq!((r.requests, r.non_2xx_3xx), (12_444, 12_444));
        assert!((r.latency.unwrap().p50_us - 209.0).abs() < 1e-6);
        assert_eq!(r.errors(), 12_444);

        let r = parse_wrk(READ_ERRORS).unwrap();
        assert_eq!(r.requests, 0);
        assert_eq!(
            r.socket_errors,
            SocketErrors {
                connect: 0,
                read: 7_350,
                write: 0,
                timeout: 0
            }
        );

        let r = parse_wrk(TIMEOUTS).unwrap();
        assert_eq!((r.requests, r.socket_errors.timeout), (27, 7));
        assert!((r.latency.unwrap().p99_us - 209_400.0).abs() < 1e-6);
        assert_eq!(r.rps, 6.73);

        let r = parse_wrk(TRUNCATED).unwrap();
        assert_eq!(r.socket_errors.read, 14_437);
        assert_eq!(r.errors(), 14_437);
    }

    #[test]
    fn wrk_failures_are_errors_not_zeros() {
        assert!(parse_wrk("").is_err());
        assert!(parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n").is_err());
        // Cut before Requests/sec.
        let cut = &OK[..OK.find("Requests/sec").unwrap()];
        assert!(parse_wrk(cut).is_err());
        let bad = OK.replace("     99%    5.97ms", "     99%    soon");
        assert!(parse_wrk(&bad).is_err());
    }

    #[test]
    fn proxy_names_parse() {
        for name in PROXIES {
            assert_eq!(Proxy::parse(name).unwrap().name(), name);
        }
        assert!(Proxy::parse("envoy").is_err());
    }

    fn cfg() -> ProxyConfig {
        ProxyConfig {
            proxies: vec![Proxy::Direct],
            proxy_exe: PathBuf::from("/nonexistent"),
            build_proxy: false,
            nginx_exe: PathBuf::from(servers::NGINX_EXE),
            haproxy_exe: PathBuf::from(servers::HAPROXY_EXE),
            wrk_exe: PathBuf::from(servers::WRK_EXE),
            workers: 1,
            conns: 64,
            wrk_threads: 1,
            rounds: 3,
            warmup_s: 1,
            duration_s: 5,
            wrk_timeout_s: 2,
            proxy_cpus: vec![0],
            client_cpus: vec![1],
            backend_cpus: vec![1],
            max_foreign_pct: 10.0,
            retries: 1,
        }
    }

    #[test]
    fn wrk_command_line() {
        let args = wrk_args(&cfg(), 5, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            args.join(" "),
            "-t1 -c64 -d5s --timeout=2s --latency http://127.0.0.1:8080/"
        );
    }

    fn run_of(proxy: &str, rps: f64, per_cpu: Option<f64>, p99: f64, errors: u64) -> ProxyRun {
        ProxyRun {
            round: 1,
            proxy: proxy.into(),
            wrk: Some(WrkReport {
                requests: (rps * 5.0) as u64,
                duration_s: 5.0,
                rps,
                mean_latency_us: p99 / 2.0,
                max_latency_us: p99 * 2.0,
                latency: Some(WrkLatency {
                    p50_us: p99 / 2.0,
                    p75_us: p99 / 1.5,
                    p90_us: p99 / 1.2,
                    p99_us: p99,
                }),
                non_2xx_3xx: errors,
                socket_errors: SocketErrors::default(),
            }),
            proxy_cpu_s: per_cpu.map(|p| rps * 5.0 / p),
            proxy_cpu_pct: per_cpu.map(|p| rps / p * 100.0),
            req_per_proxy_cpu_s: per_cpu,
            backend_cpu_pct: Some(50.0),
            client_cpu_pct: Some(60.0),
            foreign_cpu_pct: Some(0.0),
            attempts: 1,
            error: None,
        }
    }

    #[test]
    fn medians_added_latency_and_ratios() {
        let runs = vec![
            run_of("direct", 100_000.0, None, 1_000.0, 0),
            run_of("direct", 110_000.0, None, 1_200.0, 0),
            run_of("direct", 90_000.0, None, 800.0, 0),
            run_of("shardline-uring", 90_000.0, Some(95_000.0), 1_500.0, 0),
            run_of("shardline-uring", 80_000.0, Some(90_000.0), 1_700.0, 0),
            run_of("haproxy", 70_000.0, Some(72_000.0), 1_800.0, 0),
            run_of("nginx", 80_000.0, Some(83_000.0), 1_700.0, 0),
            ProxyRun {
                wrk: None,
                error: Some("boom".into()),
                ..run_of("nginx", 0.0, None, 0.0, 0)
            },
        ];
        let names: Vec<String> = PROXIES[..4]
            .iter()
            .chain(["nginx"].iter())
            .map(|s| s.to_string())
            .filter(|s| s != "shardline-epoll")
            .collect();
        let rows = summarize(&names, &runs);
        assert_eq!(rows.len(), 4, "{rows:#?}");
        let direct = &rows[0];
        assert_eq!((direct.rps, direct.p99_us), (100_000.0, 1_000.0));
        assert_eq!(direct.added_p99_us, None);
        assert_eq!(direct.cpu_efficiency_vs_best_peer, None);
        let sl = &rows[1];
        assert_eq!(sl.runs, 2);
        assert_eq!(sl.rps, 85_000.0);
        assert_eq!(sl.req_per_proxy_cpu_s, Some(92_500.0));
        assert_eq!(sl.p99_us, 1_600.0);
        assert_eq!(sl.added_p99_us, Some(600.0));
        assert_eq!(sl.added_p50_us, Some(300.0));
        // The better peer is nginx (83k per CPU-second).
        assert_eq!(best_peer(&rows).unwrap().proxy, "nginx");
        assert_eq!(
            sl.cpu_efficiency_vs_best_peer,
            Some(round(92_500.0 / 83_000.0, 3))
        );
        assert_eq!(sl.rps_vs_best_peer, Some(round(85_000.0 / 80_000.0, 3)));
        assert_eq!(rows[3].runs, 1, "the failed nginx run is left out");
        let v = verdicts(&rows);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].best_peer, "nginx");
        assert!(v[0].meets_target, "{v:?}"); // 1.114× and p99 1600 ≤ 1700
        let table = render(&rows, &v);
        assert!(table.contains("meets the target"), "{table}");
        assert!(
            table.lines().any(|l| l.starts_with("shardline-uring")),
            "{table}"
        );

        // Slower p99 than the better peer: below target whatever the CPU.
        let runs = vec![
            run_of("shardline-epoll", 90_000.0, Some(100_000.0), 2_000.0, 0),
            run_of("haproxy", 70_000.0, Some(72_000.0), 1_800.0, 0),
        ];
        let rows = summarize(&["shardline-epoll".into(), "haproxy".into()], &runs);
        let v = verdicts(&rows);
        assert!(!v[0].meets_target);
        assert_eq!(v[0].best_peer, "haproxy");
        // Errors: below target.
        let runs = vec![
            run_of("shardline-epoll", 90_000.0, Some(100_000.0), 1_000.0, 3),
            run_of("haproxy", 70_000.0, Some(72_000.0), 1_800.0, 0),
        ];
        let rows = summarize(&["shardline-epoll".into(), "haproxy".into()], &runs);
        assert!(!verdicts(&rows)[0].meets_target);
        // No peer: no verdict, no ratios.
        let rows = summarize(&["shardline-epoll".into()], &runs[..1]);
        assert!(verdicts(&rows).is_empty());
        assert_eq!(rows[0].cpu_efficiency_vs_best_peer, None);
    }

    #[test]
    fn json_shape() {
        let runs = vec![
            run_of("direct", 100_000.0, None, 1_000.0, 0),
            run_of("shardline-uring", 90_000.0, Some(95_000.0), 1_500.0, 0),
            run_of("haproxy", 70_000.0, Some(72_000.0), 1_800.0, 0),
        ];
        let names: Vec<String> = ["direct", "shardline-uring", "haproxy"]
            .map(String::from)
            .to_vec();
        let results = summarize(&names, &runs);
        let c = cfg();
        let out = ProxyOutput {
            verdicts: verdicts(&results),
            results,
            runs,
            skipped: vec!["nginx: test".into()],
            setup: ProxySetup {
                workers: c.workers,
                conns: c.conns,
                wrk_threads: c.wrk_threads,
                wrk_command: "wrk -t1 -c64 -d5s --timeout=2s --latency http://127.0.0.1:PORT/"
                    .into(),
                rounds: c.rounds,
                warmup_s: c.warmup_s,
                duration_s: c.duration_s,
                proxy_cpus: c.proxy_cpus.clone(),
                client_cpus: c.client_cpus.clone(),
                backend_cpus: c.backend_cpus.clone(),
                backend_body_bytes: 13,
                versions: vec![],
            },
            machine: MachineInfo::read(),
        };
        let v = serde_json::to_value(&out).unwrap();
        for key in ["results", "verdicts", "runs", "skipped", "setup", "machine"] {
            assert!(v.get(key).is_some(), "{key} missing");
        }
        let row = &v["results"][1];
        for key in [
            "proxy",
            "runs",
            "rps",
            "req_per_proxy_cpu_s",
            "cpu_efficiency_vs_best_peer",
            "rps_vs_best_peer",
            "proxy_cpu_pct",
            "client_cpu_pct",
            "p50_us",
            "p99_us",
            "added_p50_us",
            "added_p99_us",
            "non_2xx_3xx",
            "socket_errors",
        ] {
            assert!(row.get(key).is_some(), "results[].{key} missing: {row}");
        }
        assert_eq!(row["proxy"], "shardline-uring");
        assert_eq!(row["added_p99_us"], 500.0);
        assert!(v["results"][0]["req_per_proxy_cpu_s"].is_null());
        let run = &v["runs"][1];
        for key in [
            "round",
            "proxy",
            "wrk",
            "proxy_cpu_s",
            "proxy_cpu_pct",
            "req_per_proxy_cpu_s",
            "backend_cpu_pct",
            "client_cpu_pct",
            "foreign_cpu_pct",
            "attempts",
            "error",
        ] {
            assert!(run.get(key).is_some(), "runs[].{key} missing: {run}");
        }
        assert_eq!(run["wrk"]["latency"]["p99_us"], 1_500.0);
        assert_eq!(run["wrk"]["socket_errors"]["timeout"], 0);
        assert_eq!(v["verdicts"][0]["best_peer"], "haproxy");
        assert_eq!(v["verdicts"][0]["meets_target"], true);
        assert_eq!(v["setup"]["backend_body_bytes"], 13);
    }

    #[test]
    fn pinning_defaults() {
        let (p, c, b) = default_pinning(1);
        assert_eq!(p.len(), 1);
        assert_eq!(c.len(), 1);
        assert!(!b.is_empty());
        if machine::allowed_cpus().len() >= 2 {
            assert_ne!(p, c);
            assert!(
                !b.contains(&p[0]),
                "the backend never shares the proxy's CPU"
            );
        }
    }
}
