//! `connections`: how many concurrent connections a server holds and serves on
//! this machine, with the memory and CPU that costs.
//!
//! For each server: start it (and its nginx backend for the proxies), open
//! `conns` connections from worker processes (a process may hold 20,000 fds
//! here; each worker holds at most [`PER_WORKER`]) spread over several
//! 127.0.0.x source addresses (~28,000 ephemeral ports per source/destination
//! pair), have each served once (an HTTP request through the proxy, or an IRC
//! registration), then keep `active` of them busy for `hold` while the rest
//! idle. Reported per server: established (the client's connect completed —
//! the kernel completes handshakes into the listen backlog even for a server
//! that never accepts them), served (answered: the server really holds it),
//! still open at the end, RSS per connection (RSS growth over the idle server
//! ÷ served), server CPU % over the hold. Bounded in time: setup gives up
//! after `setup_limit`.

pub mod worker;

use std::{
    io::{BufRead, BufReader, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde::Serialize;
use shardline::Io;

use self::worker::{Proto, WorkerReport};
use crate::{
    machine::{self, MachineInfo},
    servers::{self, NginxRole, ServerProc},
};

/// Most connections one worker process opens (under its 20,000-fd limit).
pub const PER_WORKER: usize = 18_000;
/// Connections per source address (under ~28,000 ports per pair).
pub const PER_SOURCE: usize = 20_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct ConnsConfig {
    pub exe: PathBuf,
    pub proxy_exe: PathBuf,
    pub chat_exe: PathBuf,
    pub nginx_exe: PathBuf,
    pub haproxy_exe: PathBuf,
    pub servers: Vec<String>,
    pub conns: usize,
    pub active: usize,
    pub hold: Duration,
    pub setup_limit: Duration,
    /// Shards of the Shardline servers (threads/workers of the peers).
    pub shards: usize,
}

/// One server's row.
#[derive(Debug, Clone, Serialize)]
pub struct ConnsResult {
    pub server: String,
    pub conns_target: usize,
    pub established: usize,
    pub served: usize,
    /// Connections still open when the run ended.
    pub open_at_end: usize,
    pub rss_per_conn_bytes: Option<f64>,
    pub server_cpu_pct: f64,
    pub active: usize,
    pub active_requests: u64,
    pub errors: usize,
    pub error_samples: Vec<String>,
    /// Where it stopped and why, when it served fewer than asked.
    pub note: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ConnsOutput {
    pub machine: MachineInfo,
    pub conns_target: usize,
    pub active: usize,
    pub hold_secs: f64,
    pub results: Vec<ConnsResult>,
}

struct Workers {
    children: Vec<(Child, Option<ChildStdin>)>,
    lines: mpsc::Receiver<(usize, String)>,
}

fn spawn_workers(cfg: &ConnsConfig, addr: SocketAddr, proto: Proto) -> anyhow::Result<Workers> {
    let workers = cfg.conns.div_ceil(PER_WORKER).max(1);
    let sources = cfg.conns.div_ceil(PER_SOURCE).max(1);
    let (tx, rx) = mpsc::channel();
    let mut children = Vec::new();
    for w in 0..workers {
        let share = cfg.conns / workers + usize::from(w < cfg.conns % workers);
        let active = cfg.active / workers + usize::from(w < cfg.active % workers);
        // Every worker uses every source, so each pair stays under its ports.
        let srcs: Vec<String> = (0..sources)
            .map(|s| IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1 + s as u8)).to_string())
            .collect();
        let mut cmd = Command::new(&cfg.exe);
        cmd.arg("conns-worker")
            .arg("--addr")
            .arg(addr.to_string())
            .arg("--sources")
            .arg(srcs.join(","))
            .arg("--conns")
            .arg(share.to_string())
            .arg("--active")
            .arg(active.to_string())
            .arg("--proto")
            .arg(match proto {
                Proto::Http => "http",
                Proto::Irc => "irc",
            })
            .arg("--nick-prefix")
            .arg(format!("w{w}n"))
            .arg("--setup-secs")
            .arg(cfg.setup_limit.as_secs().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().context("starting a worker")?;
        let stdin = child.stdin.take();
        let out = child.stdout.take().context("worker stdout")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send((w, line)).is_err() {
                    return;
                }
            }
        });
        children.push((child, stdin));
    }
    Ok(Workers {
        children,
        lines: rx,
    })
}

impl Workers {
    /// One report of `phase` from every worker, within `limit`.
    fn collect(&self, phase: &str, limit: Duration) -> anyhow::Result<Vec<WorkerReport>> {
        let deadline = Instant::now() + limit;
        let mut got: Vec<Option<WorkerReport>> = vec![None; self.children.len()];
        while got.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            let (w, line) = self
                .lines
                .recv_timeout(left)
                .with_context(|| format!("workers did not report {phase} in {limit:?}"))?;
            let r: WorkerReport =
                serde_json::from_str(&line).with_context(|| format!("worker {w} said {line:?}"))?;
            if r.phase == phase {
                got[w] = Some(r);
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    fn stop(&mut self) {
        for (_, stdin) in &mut self.children {
            drop(stdin.take());
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
        for (child, _) in &mut self.children {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn sum(reports: &[WorkerReport]) -> WorkerReport {
    let mut t = WorkerReport::default();
    for r in reports {
        t.established += r.established;
        t.served += r.served;
        t.active_requests += r.active_requests;
        t.errors += r.errors;
        t.open += r.open;
        for s in &r.error_samples {
            if t.error_samples.len() < 5 {
                t.error_samples.push(s.clone());
            }
        }
    }
    t
}

/// RSS of a process and its descendants (nginx's workers).
fn tree_rss(pid: u32) -> u64 {
    let mut total = servers::proc_rss_bytes(pid).unwrap_or(0);
    for (d, _) in servers::descendants(pid) {
        total += servers::proc_rss_bytes(d).unwrap_or(0);
    }
    total
}

/// The server under test (and its backend, kept alive with it).
struct Target {
    server: ServerProc,
    _backend: Option<ServerProc>,
    proto: Proto,
}

fn start(cfg: &ConnsConfig, name: &str) -> anyhow::Result<Target> {
    let backend = |cfg: &ConnsConfig| {
        servers::start_nginx(
            &cfg.nginx_exe,
            "nginx-backend",
            NginxRole::Backend,
            1,
            &[],
            // Connections from the proxy: a few per active client, and the
            // first requests of every client racing in (4 × this + 256).
            2_000,
        )
    };
    let threads = cfg.shards;
    Ok(match name {
        "shardline-proxy-uring" | "shardline-proxy-epoll" => {
            let io = if name.ends_with("uring") {
                Io::Uring
            } else {
                Io::Epoll
            };
            let b = backend(cfg)?;
            // The cap is split evenly over the shards and reuseport spreads
            // clients only about evenly: headroom, so the spread never leaves a
            // client waiting at a shard's share.
            let server = servers::start_shardline_proxy_holding(
                &cfg.proxy_exe,
                io,
                b.addr,
                threads,
                cfg.active.max(64),
                cfg.conns + cfg.conns / 4 + 1024,
            )?;
            Target {
                server,
                _backend: Some(b),
                proto: Proto::Http,
            }
        }
        "haproxy" => {
            let b = backend(cfg)?;
            // A client connection is one fd; leave room for the rest.
            let maxconn = (machine::nofile_limit() as usize).saturating_sub(256).max(1024);
            let server =
                servers::start_haproxy_holding(&cfg.haproxy_exe, b.addr, threads, &[], maxconn)?;
            Target {
                server,
                _backend: Some(b),
                proto: Proto::Http,
            }
        }
        "nginx" => {
            let b = backend(cfg)?;
            let role = NginxRole::Proxy {
                upstream: b.addr,
                keepalive: cfg.active.max(64),
            };
            let server =
                servers::start_nginx(&cfg.nginx_exe, "nginx-proxy", role, threads, &[], cfg.conns)?;
            Target {
                server,
                _backend: Some(b),
                proto: Proto::Http,
            }
        }
        "shardline-chat-uring" | "shardline-chat-epoll" => {
            let io = if name.ends_with("uring") {
                Io::Uring
            } else {
                Io::Epoll
            };
            let server = servers::start_shardline_chat(
                &cfg.chat_exe,
                io,
                threads,
                &[],
                None,
                CHAT_CONFIG,
                false,
            )?;
            Target {
                server,
                _backend: None,
                proto: Proto::Irc,
            }
        }
        other => bail!(
            "unknown server {other:?} (shardline-proxy-uring, shardline-proxy-epoll, haproxy, nginx, shardline-chat-uring, shardline-chat-epoll)"
        ),
    })
}

/// The chat as a connection-count run needs it: no per-address cap (the
/// clients come from a few loopback addresses), no registration throttle.
const CHAT_CONFIG: &str = "# generated by shardline-bench connections\n\
    [server]\nname = \"bench.local\"\n\
    [limits]\nmax_connections_per_ip = 0\n";

fn run_one(cfg: &ConnsConfig, name: &str) -> anyhow::Result<ConnsResult> {
    let target = start(cfg, name)?;
    std::thread::sleep(Duration::from_millis(300));
    let pid = target.server.pid;
    let rss_idle = tree_rss(pid);
    let mut workers = spawn_workers(cfg, target.server.addr, target.proto)?;
    let ready = sum(&workers.collect("ready", cfg.setup_limit + Duration::from_secs(30))?);
    let rss_loaded = tree_rss(pid);
    println!(
        "{name}: {} established, {} served ({} errors); holding {:.0} s with {} active",
        ready.established,
        ready.served,
        ready.errors,
        cfg.hold.as_secs_f64(),
        cfg.active
    );
    let cpu0 = servers::proc_tree_cpu_time(pid).unwrap_or_default();
    let t0 = Instant::now();
    std::thread::sleep(cfg.hold);
    let cpu = servers::proc_tree_cpu_time(pid)
        .unwrap_or_default()
        .saturating_sub(cpu0);
    let wall = t0.elapsed();
    workers.stop();
    let done = sum(&workers.collect("done", Duration::from_secs(60))?);
    drop(workers);
    let rss_per_conn = (ready.served > 0)
        .then(|| rss_loaded.saturating_sub(rss_idle) as f64 / ready.served as f64);
    let note = (ready.served < cfg.conns).then(|| {
        format!(
            "served {} of {}: fd limit {} per process{}",
            ready.served,
            cfg.conns,
            machine::nofile_limit(),
            ready
                .error_samples
                .first()
                .map_or(String::new(), |e| format!("; first error: {e}"))
        )
    });
    Ok(ConnsResult {
        server: name.to_owned(),
        conns_target: cfg.conns,
        established: ready.established,
        served: ready.served,
        open_at_end: done.open,
        rss_per_conn_bytes: rss_per_conn,
        server_cpu_pct: 100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(1e-9),
        active: cfg.active,
        active_requests: done.active_requests,
        errors: done.errors,
        error_samples: done.error_samples,
        note,
    })
}

/// Runs every server in turn and prints the table.
pub fn run(cfg: &ConnsConfig) -> anyhow::Result<ConnsOutput> {
    let machine = MachineInfo::announce();
    println!(
        "connections: {} per server ({} worker process(es), {} source address(es)), {} active for {:.0} s; fd limit {} per process",
        cfg.conns,
        cfg.conns.div_ceil(PER_WORKER).max(1),
        cfg.conns.div_ceil(PER_SOURCE).max(1),
        cfg.active,
        cfg.hold.as_secs_f64(),
        machine::nofile_limit()
    );
    let mut results = Vec::new();
    for name in &cfg.servers {
        match run_one(cfg, name) {
            Ok(r) => results.push(r),
            Err(e) => {
                println!("{name}: not measured: {e:#}");
                results.push(ConnsResult {
                    server: name.clone(),
                    conns_target: cfg.conns,
                    established: 0,
                    served: 0,
                    open_at_end: 0,
                    rss_per_conn_bytes: None,
                    server_cpu_pct: 0.0,
                    active: cfg.active,
                    active_requests: 0,
                    errors: 0,
                    error_samples: Vec::new(),
                    note: Some(format!("not measured: {e:#}")),
                });
            }
        }
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "\n{:<22} {:>8} {:>11} {:>8} {:>10} {:>10} {:>7} {:>10} {:>7}",
        "server",
        "target",
        "established",
        "served",
        "open@end",
        "B/conn",
        "CPU %",
        "active req",
        "errors"
    )?;
    for r in &results {
        writeln!(
            out,
            "{:<22} {:>8} {:>11} {:>8} {:>10} {:>10} {:>7.1} {:>10} {:>7}",
            r.server,
            r.conns_target,
            r.established,
            r.served,
            r.open_at_end,
            r.rss_per_conn_bytes
                .map_or("-".to_owned(), |b| format!("{b:.0}")),
            r.server_cpu_pct,
            r.active_requests,
            r.errors
        )?;
        if let Some(n) = &r.note {
            writeln!(out, "    {}: {n}", r.server)?;
        }
    }
    Ok(ConnsOutput {
        machine,
        conns_target: cfg.conns,
        active: cfg.active,
        hold_secs: cfg.hold.as_secs_f64(),
        results,
    })
}
