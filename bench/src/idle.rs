//! `idle`: what an idle connection costs a server in resident memory. Each server
//! (one shard or thread, pinned) gets K connections that do nothing after an
//! optional single echo; its VmRSS after them minus before, ÷ K, is the cost of one.
//!
//! The server is a separate process, so the client's fds count only against the
//! client: K comes from RLIMIT_NOFILE with headroom. Loopback connections come
//! from several source addresses (127.0.0.2, .3, …, with IP_BIND_ADDRESS_NO_PORT so
//! ports are picked per 4-tuple) to stay clear of the ephemeral-port range. Socket
//! buffers are kernel memory and not in VmRSS: this measures the server's own
//! per-connection state.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;
use shardline::Io;
use socket2::{Domain, Protocol, Socket, Type};

use crate::{
    machine::{self, MachineInfo},
    report,
    servers::{self, Launch, PeerSelection, ServerProc, ServerSpec},
};

/// What `idle` runs.
#[derive(Debug, Clone)]
pub struct IdleConfig {
    /// This binary (for `serve`).
    pub serve_exe: PathBuf,
    /// Connections to hold (`None`: from RLIMIT_NOFILE).
    pub conns: Option<usize>,
    /// Peers.
    pub peers: PeerSelection,
    /// The peers' workspace.
    pub peers_dir: PathBuf,
    /// Source addresses 127.0.0.2 .. 127.0.0.(1+N).
    pub sources: u8,
    /// One echo per connection before measuring.
    pub ping: bool,
    /// Server CPUs.
    pub server_cpus: Vec<usize>,
}

/// One server: the documented row.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IdleRow {
    /// Server name.
    pub server: String,
    /// Connections held.
    pub conns: usize,
    /// (VmRSS after − before) ÷ conns.
    pub rss_per_conn_bytes: f64,
}

/// Details of one server's run.
#[derive(Debug, Clone, Serialize)]
pub struct IdleRun {
    /// Server name.
    pub server: String,
    /// Connections asked for.
    pub asked: usize,
    /// Connections opened.
    pub opened: usize,
    /// Server fds before and after.
    pub server_fds: (usize, usize),
    /// VmRSS before (bytes).
    pub rss_before_bytes: u64,
    /// VmRSS with the connections open (bytes).
    pub rss_after_bytes: u64,
    /// Why fewer connections than asked were opened, or the run failed.
    pub error: Option<String>,
}

/// What `idle --json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct IdleOutput {
    /// One row per server.
    pub results: Vec<IdleRow>,
    /// Details.
    pub runs: Vec<IdleRun>,
    /// Peers left out, and why.
    pub skipped: Vec<String>,
    /// Where it ran.
    pub machine: MachineInfo,
}

/// Fds the client keeps free for everything else.
fn headroom(limit: u64) -> u64 {
    (limit / 10).max(256)
}

/// K: the connections asked for, limited by this process's RLIMIT_NOFILE minus
/// headroom.
pub fn conn_budget(asked: Option<usize>) -> (usize, Option<String>) {
    let limit = machine::nofile_limit();
    let max = limit.saturating_sub(headroom(limit)) as usize;
    match asked {
        None => (max, None),
        Some(k) if k > max => (
            max,
            Some(format!(
                "asked for {k} connections; capped at {max} (RLIMIT_NOFILE {limit} minus headroom)"
            )),
        ),
        Some(k) => (k, None),
    }
}

/// Runs every server.
pub fn run(cfg: &IdleConfig) -> anyhow::Result<IdleOutput> {
    let machine_at_start = MachineInfo::announce();
    let (k, note) = conn_budget(cfg.conns);
    if let Some(n) = &note {
        println!("note: {n}");
    }
    let mut specs = vec![
        ServerSpec::shardline(Io::Uring),
        ServerSpec::shardline(Io::Epoll),
    ];
    let (peers, skipped) = servers::resolve_peers(&cfg.peers, &cfg.peers_dir);
    for n in &skipped {
        println!("note: {n}");
    }
    specs.extend(peers);
    let launch = Launch {
        serve_exe: cfg.serve_exe.clone(),
        threads: 1,
        cpus: cfg.server_cpus.clone(),
    };
    println!(
        "idle: {k} connections per server from {} source address(es){}",
        cfg.sources.max(1),
        if cfg.ping {
            ", one 16-byte echo each"
        } else {
            ""
        }
    );
    let mut results = Vec::new();
    let mut runs = Vec::new();
    for spec in &specs {
        let run = measure(spec, &launch, k, cfg.sources.max(1), cfg.ping);
        match &run.error {
            Some(e) if run.opened == 0 => println!("{spec}: failed: {e}"),
            _ => {
                let per = (run.rss_after_bytes as f64 - run.rss_before_bytes as f64)
                    / run.opened.max(1) as f64;
                println!(
                    "{spec}: {} conns, RSS {:.1} → {:.1} MiB, {:.0} B per connection{}",
                    run.opened,
                    run.rss_before_bytes as f64 / 1048576.0,
                    run.rss_after_bytes as f64 / 1048576.0,
                    per,
                    run.error
                        .as_deref()
                        .map_or_else(String::new, |e| format!(" (stopped early: {e})"))
                );
                results.push(IdleRow {
                    server: spec.name.clone(),
                    conns: run.opened,
                    rss_per_conn_bytes: report::round(per, 1),
                });
            }
        }
        runs.push(run);
    }
    println!();
    let cells: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            vec![
                r.server.clone(),
                r.conns.to_string(),
                format!("{:.0}", r.rss_per_conn_bytes),
            ]
        })
        .collect();
    print!(
        "{}",
        report::table(&["server", "conns", "RSS bytes/conn"], &cells)
    );
    Ok(IdleOutput {
        results,
        runs,
        skipped,
        machine: machine_at_start,
    })
}

/// Opens one connection from `src`, letting the kernel pick the port per 4-tuple.
fn connect_from(src: Ipv4Addr, dst: SocketAddr) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    crate::client::bind_source(&s, src.into())?;
    s.connect_timeout(&dst.into(), Duration::from_secs(5))?;
    s.set_tcp_nodelay(true)?;
    Ok(s.into())
}

fn measure(spec: &ServerSpec, launch: &Launch, k: usize, sources: u8, ping: bool) -> IdleRun {
    let mut run = IdleRun {
        server: spec.name.clone(),
        asked: k,
        opened: 0,
        server_fds: (0, 0),
        rss_before_bytes: 0,
        rss_after_bytes: 0,
        error: None,
    };
    let server = match ServerProc::start(spec, launch) {
        Ok(s) => s,
        Err(e) => {
            run.error = Some(format!("{e:#}"));
            return run;
        }
    };
    let result = (|| -> anyhow::Result<()> {
        // Let startup allocations settle, and touch the server once so that lazily
        // set-up state is in the baseline, not in the per-connection figure.
        std::thread::sleep(Duration::from_millis(300));
        {
            let mut s = TcpStream::connect(server.addr)?;
            echo_once(&mut s)?;
        }
        std::thread::sleep(Duration::from_millis(200));
        run.rss_before_bytes = server.rss_bytes()?;
        run.server_fds.0 = server.fd_count()?;
        let mut held = Vec::with_capacity(k);
        let started = Instant::now();
        for i in 0..k {
            let src = Ipv4Addr::new(127, 0, 0, 2 + (i % sources as usize) as u8);
            let opened = connect_from(src, server.addr)
                .with_context(|| format!("connection {} from {src}", i + 1))
                .and_then(|mut s| {
                    if ping {
                        echo_once(&mut s)
                            .with_context(|| format!("echo on connection {}", i + 1))?;
                    }
                    Ok(s)
                });
            match opened {
                Ok(s) => held.push(s),
                Err(e) => {
                    run.error = Some(format!("{e:#}"));
                    break;
                }
            }
        }
        run.opened = held.len();
        // Wait until the server holds them all (accepts may lag the handshakes).
        // A connection that answered a ping is held already; counting fds
        // shows the rest, except where sockets are not fds (io_uring direct
        // descriptors), where the wait ends at its deadline.
        let want = run.server_fds.0 + held.len();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ping && server.fd_count()? < want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
        run.server_fds.1 = server.fd_count()?;
        run.rss_after_bytes = server.rss_bytes()?;
        println!(
            "{spec}: opened {} connections in {:.1} s",
            held.len(),
            started.elapsed().as_secs_f64()
        );
        drop(held);
        Ok(())
    })();
    if let Err(e) = result {
        run.error = Some(format!("{e:#}"));
    }
    run
}

fn echo_once(s: &mut TcpStream) -> anyhow::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let msg = *b"idle-bench-ping!";
    s.write_all(&msg)?;
    let mut back = [0u8; 16];
    s.read_exact(&mut back)?;
    anyhow::ensure!(back == msg, "the echo differed from what was sent");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_respects_the_fd_limit() {
        let limit = machine::nofile_limit() as usize;
        let (k, note) = conn_budget(None);
        assert!(k < limit && k > 0);
        assert!(note.is_none());
        let (k2, note) = conn_budget(Some(usize::MAX));
        assert_eq!(k2, k);
        assert!(note.is_some());
        assert_eq!(conn_budget(Some(10)).0, 10);
    }
}
