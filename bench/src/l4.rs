//! `shardline-bench l4`: what splice saves on bulk L4 relaying. shardline-proxy
//! (one shard, pinned) relays `conns` connections, each moving `mib` MiB up and
//! `mib` MiB down at once, between clients and a sink/source backend that both
//! live in this process (pinned to another CPU). For each I/O backend it runs
//! the proxy with `splice = "never"` (copy) and `splice = "always"`, interleaved
//! over rounds, and reports the proxy's CPU-seconds per GiB relayed (from /proc:
//! every thread of the proxy, io_uring's io-wq workers included) and the ratio
//! splice/copy of the medians. The machine is shared: quote the ratio.

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde::Serialize;
use shardline::Io;

use crate::{
    experiment::{self, median_of},
    machine, report,
    servers::{self, Ready, ServerProc},
};

/// What to run.
#[derive(Debug, Clone)]
pub struct L4Config {
    /// The shardline-proxy binary.
    pub proxy_exe: PathBuf,
    /// Build it first when missing.
    pub build_proxy: bool,
    /// Backends to measure.
    pub ios: Vec<Io>,
    /// Concurrent connections.
    pub conns: usize,
    /// MiB each connection moves each way.
    pub mib: usize,
    /// Rounds (every variant runs once per round).
    pub rounds: usize,
    /// The proxy's CPU; the clients and backend use the others.
    pub proxy_cpu: usize,
    /// `[limits] send_high_water` of the proxy (bounds the copy path's queues).
    pub send_high_water: usize,
}

/// One measured transfer.
#[derive(Debug, Clone, Serialize)]
pub struct L4Run {
    /// 0-based round.
    pub round: usize,
    /// "uring" / "epoll".
    pub io: String,
    /// "copy" / "splice".
    pub mode: String,
    /// Proxy CPU-seconds used during the transfer.
    pub proxy_cpu_s: f64,
    /// Wall time of the transfer.
    pub wall_s: f64,
    /// Proxy CPU-seconds per GiB relayed (both directions counted).
    pub cpu_s_per_gib: f64,
}

/// Medians per variant and the ratio splice/copy per backend.
#[derive(Debug, Clone, Serialize)]
pub struct L4Row {
    /// Backend.
    pub io: String,
    /// Median CPU-s/GiB copying.
    pub copy_cpu_s_per_gib: f64,
    /// Median CPU-s/GiB splicing.
    pub splice_cpu_s_per_gib: f64,
    /// splice / copy (below 1: splice saves CPU).
    pub ratio: f64,
    /// Median wall seconds, copy and splice.
    pub copy_wall_s: f64,
    /// Median wall seconds splicing.
    pub splice_wall_s: f64,
}

/// Everything `l4` measured.
#[derive(Debug, Clone, Serialize)]
pub struct L4Output {
    /// Connections, MiB each way per connection, rounds.
    pub conns: usize,
    /// MiB each way per connection.
    pub mib: usize,
    /// Rounds.
    pub rounds: usize,
    /// Every run.
    pub runs: Vec<L4Run>,
    /// The summary.
    pub rows: Vec<L4Row>,
}

const CHUNK: usize = 64 << 10;

/// The in-process backend: per connection, writes `bytes` while reading to EOF,
/// then FINs.
struct Backend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Backend {
    fn start(bytes: usize, cpu: Option<usize>) -> anyhow::Result<Backend> {
        let listener = TcpListener::bind("127.0.0.1:0").context("backend bind")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        thread::spawn(move || {
            pin(cpu);
            for s in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(s) = s else { continue };
                thread::spawn(move || {
                    pin(cpu);
                    let _ = pump(s, bytes);
                });
            }
        });
        Ok(Backend { addr, stop })
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn pin(cpu: Option<usize>) {
    if let Some(id) = cpu {
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
}

/// Writes `bytes` (then FIN) on one thread while reading to EOF on this one;
/// returns the bytes read.
fn pump(s: TcpStream, bytes: usize) -> std::io::Result<usize> {
    let mut w = s.try_clone()?;
    let writer = thread::spawn(move || -> std::io::Result<()> {
        let buf = vec![0x5au8; CHUNK];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(CHUNK);
            w.write_all(&buf[..n])?;
            left -= n;
        }
        w.shutdown(Shutdown::Write)
    });
    let mut r = s;
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0;
    loop {
        match r.read(&mut buf)? {
            0 => break,
            n => got += n,
        }
    }
    writer
        .join()
        .map_err(|_| std::io::Error::other("writer panicked"))??;
    Ok(got)
}

fn proxy_config(port: u16, backend: SocketAddr, splice: &str, high_water: usize) -> String {
    format!(
        "# generated by shardline-bench l4\n\
         [[listener]]\naddress = \"127.0.0.1:{port}\"\nmode = \"tcp\"\npool = \"b\"\n\n\
         [pool.b]\nbackends = [{{ address = \"{backend}\" }}]\n\n\
         [limits]\nsend_high_water = {high_water}\nsplice = \"{splice}\"\n"
    )
}

fn start_proxy(
    cfg: &L4Config,
    io: Io,
    splice: &str,
    backend: SocketAddr,
) -> anyhow::Result<ServerProc> {
    let name = format!("shardline-proxy-l4-{io}-{splice}");
    let port = servers::free_port().context("finding a free port")?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let dir = std::env::temp_dir().join(format!("{name}-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join("proxy.toml");
    std::fs::write(
        &conf,
        proxy_config(port, backend, splice, cfg.send_high_water),
    )?;
    let mut cmd = Command::new(&cfg.proxy_exe);
    cmd.arg("--config").arg(&conf);
    servers::shardline_flags(&mut cmd, io, 1, &[cfg.proxy_cpu]);
    cmd.env("RUST_LOG", "warn").stderr(Stdio::inherit());
    servers::pin_command(&mut cmd, &[cfg.proxy_cpu])?;
    ServerProc::spawn(&name, cmd, addr, Ready::Connect, Some(dir))
}

/// One transfer through `proxy`: every connection up and down at once.
fn transfer(cfg: &L4Config, proxy: SocketAddr, cpu: Option<usize>) -> anyhow::Result<()> {
    let bytes = cfg.mib << 20;
    let clients: Vec<_> = (0..cfg.conns)
        .map(|_| {
            thread::spawn(move || -> anyhow::Result<()> {
                pin(cpu);
                let s = TcpStream::connect(proxy)?;
                s.set_read_timeout(Some(Duration::from_secs(120)))?;
                let got = pump(s, bytes)?;
                if got != bytes {
                    bail!("client read {got} of {bytes} bytes");
                }
                Ok(())
            })
        })
        .collect();
    for c in clients {
        c.join().map_err(|_| anyhow::anyhow!("client panicked"))??;
    }
    Ok(())
}

fn measure(
    cfg: &L4Config,
    proxy: &ServerProc,
    io: Io,
    mode: &str,
    round: usize,
    cpu: Option<usize>,
) -> anyhow::Result<L4Run> {
    let before = servers::proc_cpu_time(proxy.pid)?;
    let t0 = Instant::now();
    transfer(cfg, proxy.addr, cpu)?;
    let wall = t0.elapsed().as_secs_f64();
    let cpu_s = servers::proc_cpu_time(proxy.pid)?
        .saturating_sub(before)
        .as_secs_f64();
    let gib = (2 * cfg.conns * (cfg.mib << 20)) as f64 / (1u64 << 30) as f64;
    Ok(L4Run {
        round,
        io: io.to_string(),
        mode: mode.to_owned(),
        proxy_cpu_s: report::round(cpu_s, 3),
        wall_s: report::round(wall, 3),
        cpu_s_per_gib: report::round(cpu_s / gib, 4),
    })
}

/// Medians and ratios per backend.
pub fn summarize(runs: &[L4Run]) -> Vec<L4Row> {
    let mut ios: Vec<String> = runs.iter().map(|r| r.io.clone()).collect();
    ios.dedup();
    ios.sort();
    ios.dedup();
    let pick = |io: &str, mode: &str, f: fn(&L4Run) -> f64| {
        let mine: Vec<&L4Run> = runs
            .iter()
            .filter(|r| r.io == io && r.mode == mode)
            .collect();
        median_of(&mine, |r| f(r)).unwrap_or(f64::NAN)
    };
    ios.iter()
        .map(|io| {
            let copy = pick(io, "copy", |r| r.cpu_s_per_gib);
            let splice = pick(io, "splice", |r| r.cpu_s_per_gib);
            L4Row {
                io: io.clone(),
                copy_cpu_s_per_gib: report::round(copy, 4),
                splice_cpu_s_per_gib: report::round(splice, 4),
                ratio: report::round(splice / copy, 3),
                copy_wall_s: report::round(pick(io, "copy", |r| r.wall_s), 3),
                splice_wall_s: report::round(pick(io, "splice", |r| r.wall_s), 3),
            }
        })
        .collect()
}

/// Renders the summary table.
pub fn render(out: &L4Output) -> String {
    let mut s = format!(
        "{} conns x {} MiB each way, {} rounds (medians)\n{:<8} {:>14} {:>16} {:>14} {:>10} {:>12}\n",
        out.conns,
        out.mib,
        out.rounds,
        "backend",
        "copy cpu-s/GiB",
        "splice cpu-s/GiB",
        "splice/copy",
        "copy wall",
        "splice wall"
    );
    for r in &out.rows {
        s.push_str(&format!(
            "{:<8} {:>14.4} {:>16.4} {:>14.3} {:>9.2}s {:>11.2}s\n",
            r.io,
            r.copy_cpu_s_per_gib,
            r.splice_cpu_s_per_gib,
            r.ratio,
            r.copy_wall_s,
            r.splice_wall_s
        ));
    }
    s
}

/// Runs every backend × mode × round, interleaved.
pub fn run(cfg: &L4Config) -> anyhow::Result<L4Output> {
    if cfg.rounds == 0 || cfg.conns == 0 || cfg.mib == 0 || cfg.ios.is_empty() {
        bail!("nothing to run: rounds, conns, mib and the backend list must be non-empty");
    }
    servers::resolve_workspace_exe(&cfg.proxy_exe, "shardline-proxy", cfg.build_proxy)
        .map_err(anyhow::Error::msg)?;
    let others: Vec<usize> = machine::allowed_cpus()
        .into_iter()
        .filter(|&c| c != cfg.proxy_cpu)
        .collect();
    let load_cpu = others.first().copied();
    let backend = Backend::start(cfg.mib << 20, load_cpu)?;
    let mut proxies = Vec::new();
    for &io in &cfg.ios {
        for (mode, splice) in [("copy", "never"), ("splice", "always")] {
            proxies.push((io, mode, start_proxy(cfg, io, splice, backend.addr)?));
        }
    }
    let mut runs = Vec::new();
    // Alternate which variant goes first, so drift does not favour one.
    for (r, (io, mode, proxy)) in experiment::schedule(cfg.rounds, &proxies).alternating() {
        let round = r - 1; // l4 counts rounds from 0
        let r = measure(cfg, proxy, *io, mode, round, load_cpu)
            .with_context(|| format!("round {round} {io} {mode}"))?;
        println!(
            "round {round} {:<6} {:<6}: {:.3} proxy cpu-s, {:.2} s wall, {:.4} cpu-s/GiB",
            r.io, r.mode, r.proxy_cpu_s, r.wall_s, r.cpu_s_per_gib
        );
        runs.push(r);
    }
    let rows = summarize(&runs);
    let out = L4Output {
        conns: cfg.conns,
        mib: cfg.mib,
        rounds: cfg.rounds,
        runs,
        rows,
    };
    print!("{}", render(&out));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(io: &str, mode: &str, cpu: f64) -> L4Run {
        L4Run {
            round: 0,
            io: io.into(),
            mode: mode.into(),
            proxy_cpu_s: cpu,
            wall_s: 1.0,
            cpu_s_per_gib: cpu,
        }
    }

    #[test]
    fn medians_and_ratio_per_backend() {
        let runs = vec![
            run("epoll", "copy", 1.0),
            run("epoll", "copy", 3.0),
            run("epoll", "copy", 2.0),
            run("epoll", "splice", 1.0),
            run("epoll", "splice", 1.0),
            run("epoll", "splice", 5.0),
        ];
        let rows = summarize(&runs);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].copy_cpu_s_per_gib, 2.0);
        assert_eq!(rows[0].splice_cpu_s_per_gib, 1.0);
        assert_eq!(rows[0].ratio, 0.5);
    }

    #[test]
    fn generated_config_parses_as_tcp() {
        let c = proxy_config(1234, ([127, 0, 0, 1], 9).into(), "always", 65536);
        assert!(c.contains("mode = \"tcp\"") && c.contains("splice = \"always\""));
    }
}
