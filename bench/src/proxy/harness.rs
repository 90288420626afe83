//! The experiment: proxies × rounds, interleaved, in front of one backend nginx;
//! starting the proxies, running wrk, one measured run with its CPU accounting.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use super::{
    parse_wrk, render, results::describe, summarize, tls::TlsSeen, verdicts, Proxy, ProxyOutput,
    ProxyRun, ProxySetup, WrkReport,
};
use crate::{
    experiment::{self, CpuMark, CpuSpan, Probe, Quiet},
    machine::{self, MachineInfo},
    report,
    servers::{self, NginxRole, ServerProc},
};

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

/// The wrk arguments of a run (without the program).
pub fn wrk_args(cfg: &ProxyConfig, seconds: u64, addr: SocketAddr) -> Vec<String> {
    wrk_args_url(cfg, seconds, &format!("http://{addr}/"))
}

/// The wrk arguments of a run against `url` (`https://…` for `proxy --tls`).
pub fn wrk_args_url(cfg: &ProxyConfig, seconds: u64, url: &str) -> Vec<String> {
    vec![
        format!("-t{}", cfg.wrk_threads.max(1)),
        format!("-c{}", cfg.conns),
        format!("-d{}s", seconds.max(1)),
        format!("--timeout={}s", cfg.wrk_timeout_s.max(1)),
        "--latency".into(),
        url.to_owned(),
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
    run_wrk_url(cfg, seconds, &format!("http://{addr}/"), None)
}

/// Runs wrk once for `seconds` against `url`, with `OPENSSL_CONF=openssl_conf`
/// when given; Ok with its parsed report.
pub(super) fn run_wrk_url(
    cfg: &ProxyConfig,
    seconds: u64,
    url: &str,
    openssl_conf: Option<&std::path::Path>,
) -> anyhow::Result<WrkReport> {
    let mut cmd = Command::new(&cfg.wrk_exe);
    cmd.args(wrk_args_url(cfg, seconds, url));
    if let Some(conf) = openssl_conf {
        cmd.env("OPENSSL_CONF", conf);
    }
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
    measure_load(name, proxy, backend, round, || {
        Ok(Load::of(run_wrk(cfg, cfg.duration_s, addr)?))
    })
}

/// What a measured load produced.
#[derive(Debug)]
pub(super) struct Load {
    /// Requests, rate, latency, errors.
    pub report: WrkReport,
    /// The load's TLS connections, when it made them itself.
    pub seen: Option<TlsSeen>,
    /// The load generator's CPU seconds, when it ran in this process (a child
    /// such as wrk is counted when it is reaped).
    pub client_cpu_s: Option<f64>,
}

impl Load {
    /// A report of wrk, a reaped child.
    pub fn of(report: WrkReport) -> Load {
        Load {
            report,
            seen: None,
            client_cpu_s: None,
        }
    }
}

/// One measured run of `load` through `proxy` (a process, or none for direct),
/// with the CPU accounting of everything involved.
pub(super) fn measure_load(
    name: &str,
    proxy: Option<u32>,
    backend: u32,
    round: usize,
    load: impl FnOnce() -> anyhow::Result<Load>,
) -> ProxyRun {
    // wrk is reaped within the run: its CPU time is what the harness's reaped
    // children gained.
    let probes = [
        Probe::ReapedChildren,
        Probe::Tree(proxy),
        Probe::Tree(Some(backend)),
    ];
    let a = CpuMark::read(&probes);
    let result = load();
    let span = CpuSpan::between(&a, &CpuMark::read(&probes));
    let mut run = ProxyRun::new(round, name, 1);
    let (rep, client_s) = match result {
        Ok(l) => {
            run.tls = l.seen;
            (l.report, l.client_cpu_s)
        }
        Err(e) => {
            run.error = Some(format!("{e:#}"));
            return run;
        }
    };
    let window = span.wall.max(1e-9);
    let pct = |s: f64| report::round(s / window * 100.0, 1);
    let wrk_s = client_s.unwrap_or_else(|| span.probe(0).unwrap_or(0.0));
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

/// The versions of wrk, nginx and of the proxies in the run, for the report.
pub(super) fn tool_versions(cfg: &ProxyConfig, proxies: &[Proxy]) -> Vec<String> {
    let mut versions = vec![];
    versions.extend(version_of(&cfg.wrk_exe, "-v"));
    versions.extend(version_of(&cfg.nginx_exe, "-v"));
    if proxies.contains(&Proxy::Haproxy) {
        versions.extend(version_of(&cfg.haproxy_exe, "-v"));
    }
    if proxies.iter().any(|p| matches!(p, Proxy::Shardline(_))) {
        versions.extend(version_of(&cfg.proxy_exe, "--version"));
    }
    versions
}

/// The plaintext nginx backend every proxy forwards to, checked to answer.
pub(super) fn start_backend(cfg: &ProxyConfig) -> anyhow::Result<ServerProc> {
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
    Ok(backend)
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
    let versions = tool_versions(cfg, &proxies);
    let backend = start_backend(cfg)?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let tls = wrk_args_url(&cfg(), 5, "https://127.0.0.1:8443/");
        assert_eq!(
            tls.last().map(String::as_str),
            Some("https://127.0.0.1:8443/")
        );
        assert_eq!(tls[..5], args[..5]);
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
