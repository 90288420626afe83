//! The servers under test as child processes: Shardline (this binary's `serve`
//! subcommand) and the peers built in `bench/peers`. Launch one, wait for its
//! `listening on ADDR` line, read its CPU time, RSS and open fds from /proc, and
//! kill it.
//!
//! A child must never outlive the harness: [`ServerProc`] kills it on drop (errors
//! and panics included), the child asks the kernel to kill it if the launching
//! thread dies (PR_SET_PDEATHSIG), and [`install_signal_guard`] kills every live
//! child before exiting on SIGINT/SIGTERM.

use std::{
    fmt,
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{mpsc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _};
use shardline::{AcceptMode, Io};

use crate::machine;

/// The peers `bench/peers` builds, in the order they are run.
pub const PEERS: [&str; 7] = [
    "peer-tokio-mt",
    "peer-tokio-ct",
    "peer-monoio-uring",
    "peer-monoio-legacy",
    "peer-glommio",
    "floor-uring",
    "floor-mio",
];

/// How long a server may take to print `listening on`.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerKind {
    /// `shardline-bench serve` with this backend and accept mode.
    Shardline {
        /// I/O backend.
        io: Io,
        /// Accept mode.
        accept: AcceptMode,
    },
    /// A peer binary taking `--addr --threads --cpus`.
    Peer {
        /// Path of the binary.
        exe: PathBuf,
    },
}

/// A named server to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// Name in reports: `shardline-uring`, `shardline-epoll`, `peer-tokio-mt`, …
    pub name: String,
    /// What to run.
    pub kind: ServerKind,
}

impl ServerSpec {
    /// Shardline on `io` with reuseport accept, named `shardline-uring` / `-epoll`.
    pub fn shardline(io: Io) -> ServerSpec {
        ServerSpec::shardline_with(io, AcceptMode::ReusePort)
    }

    /// Shardline on `io` with `accept`; the mode is in the name unless reuseport.
    pub fn shardline_with(io: Io, accept: AcceptMode) -> ServerSpec {
        let mut name = format!("shardline-{io}");
        if accept != AcceptMode::ReusePort {
            name = format!("{name}-{accept}");
        }
        ServerSpec {
            name,
            kind: ServerKind::Shardline { io, accept },
        }
    }
}

impl fmt::Display for ServerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Where and how wide a server runs.
#[derive(Debug, Clone)]
pub struct Launch {
    /// This harness's own binary (for `serve`).
    pub serve_exe: PathBuf,
    /// Shards / threads.
    pub threads: usize,
    /// CPUs to pin to (shard i on the i-th; empty = unpinned).
    pub cpus: Vec<usize>,
}

/// PIDs of live children, killed by the signal guard.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn children() -> std::sync::MutexGuard<'static, Vec<u32>> {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner())
}

/// On SIGINT/SIGTERM/SIGHUP: kill every live child server, then exit (130).
pub fn install_signal_guard() -> anyhow::Result<()> {
    use signal_hook::{consts::signal::*, iterator::Signals};
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).context("installing signals")?;
    std::thread::Builder::new()
        .name("bench-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let pids = children().clone();
                eprintln!(
                    "signal {sig}: stopping {} child server(s) and exiting",
                    pids.len()
                );
                for &pid in &pids {
                    kill(pid, libc::SIGKILL);
                }
                std::process::exit(130);
            }
        })
        .context("spawning the signal thread")?;
    Ok(())
}

fn kill(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we spawned and have not reaped.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// A running server. Dropping it stops it (SIGTERM, then SIGKILL after 2 s).
#[derive(Debug)]
pub struct ServerProc {
    child: Child,
    /// Name of the server.
    pub name: String,
    /// Its process id.
    pub pid: u32,
    /// The address it printed.
    pub addr: SocketAddr,
}

impl ServerProc {
    /// Starts `spec` on a free loopback port and waits until it is listening.
    pub fn start(spec: &ServerSpec, launch: &Launch) -> anyhow::Result<ServerProc> {
        let port = free_port().context("finding a free port")?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let cpus = machine::format_cpus(&launch.cpus);
        let mut cmd = match &spec.kind {
            ServerKind::Shardline { io, accept } => {
                let mut c = Command::new(&launch.serve_exe);
                c.arg("serve")
                    .arg("--io")
                    .arg(io.to_string())
                    .arg("--accept")
                    .arg(accept.to_string())
                    .arg("--shards")
                    .arg(launch.threads.to_string());
                c
            }
            ServerKind::Peer { exe } => {
                let mut c = Command::new(exe);
                c.arg("--threads").arg(launch.threads.to_string());
                c
            }
        };
        cmd.arg("--addr").arg(addr.to_string());
        if !launch.cpus.is_empty() {
            cmd.arg("--cpus").arg(&cpus);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {spec}: {cmd:?}"))?;
        let pid = child.id();
        children().push(pid);
        let stdout = child.stdout.take().expect("stdout was piped");
        let mut proc = ServerProc {
            child,
            name: spec.name.clone(),
            pid,
            addr,
        };
        let (tx, rx) = mpsc::channel();
        // The reader keeps draining stdout after the line so the child never blocks
        // on a full pipe.
        std::thread::Builder::new()
            .name(format!("{}-stdout", spec.name))
            .spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(rest) = line.trim().strip_prefix("listening on ") {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(rest.trim().to_owned());
                        }
                    }
                }
            })
            .context("spawning a stdout reader")?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(printed) => {
                    if let Ok(a) = printed.parse::<SocketAddr>() {
                        proc.addr = a;
                    }
                    return Ok(proc);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = proc.child.try_wait()? {
                        bail!("{spec} exited ({status}) before listening");
                    }
                    if Instant::now() > deadline {
                        bail!("{spec} did not print `listening on` within {START_TIMEOUT:?}");
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = proc.child.wait()?;
                    bail!("{spec} closed its stdout ({status}) before listening");
                }
            }
        }
    }

    /// CPU time (utime + stime, all threads) the server has used so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        proc_cpu_time(self.pid)
    }

    /// Resident memory (VmRSS) in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        proc_rss_bytes(self.pid)
    }

    /// Open file descriptors.
    pub fn fd_count(&self) -> anyhow::Result<usize> {
        Ok(std::fs::read_dir(format!("/proc/{}/fd", self.pid))?.count())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            kill(self.pid, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
        children().retain(|&p| p != self.pid);
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// utime + stime of a process, from /proc/PID/stat.
pub fn proc_cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let ticks = parse_stat_cpu_ticks(&stat).ok_or_else(|| anyhow!("unexpected /proc/PID/stat"))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// utime + stime (fields 14 and 15) in clock ticks. The command name (field 2) is
/// in parentheses and may contain spaces, so fields are counted after its `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")" the first field is field 3 (state): utime is field 14 → index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS of a process in bytes, from /proc/PID/status.
pub fn proc_rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_status_rss(&status).ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// The VmRSS line of /proc/PID/status, in bytes.
pub fn parse_status_rss(status: &str) -> Option<u64> {
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Which peers to run: `all`, `none`, or a comma-separated list of names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerSelection {
    /// Every peer in [`PEERS`].
    All,
    /// No peer.
    None,
    /// These names.
    List(Vec<String>),
}

impl std::str::FromStr for PeerSelection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "all" => Ok(PeerSelection::All),
            "none" | "" => Ok(PeerSelection::None),
            list => {
                let names: Vec<String> = list
                    .split(',')
                    .map(|n| n.trim().to_owned())
                    .filter(|n| !n.is_empty())
                    .collect();
                if let Some(bad) = names.iter().find(|n| !PEERS.contains(&n.as_str())) {
                    return Err(format!(
                        "unknown peer {bad:?} (known: {})",
                        PEERS.join(", ")
                    ));
                }
                Ok(PeerSelection::List(names))
            }
        }
    }
}

impl PeerSelection {
    fn names(&self) -> Vec<&str> {
        match self {
            PeerSelection::All => PEERS.to_vec(),
            PeerSelection::None => Vec::new(),
            PeerSelection::List(l) => l.iter().map(String::as_str).collect(),
        }
    }
}

/// The peers' workspace: `bench/peers` beside this crate's manifest.
pub fn default_peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// Resolves the selected peers to binaries under `dir/target/release`, building
/// them first if any is missing. Returns the runnable peers and one message per
/// peer skipped (never an error: a missing peer must not stop a run).
pub fn resolve_peers(sel: &PeerSelection, dir: &Path) -> (Vec<ServerSpec>, Vec<String>) {
    let names = sel.names();
    if names.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let exe = |n: &str| dir.join("target").join("release").join(n);
    let mut notes = Vec::new();
    if names.iter().any(|n| !exe(n).is_file()) {
        let manifest = dir.join("Cargo.toml");
        if manifest.is_file() {
            println!(
                "building peers: cargo build --release --manifest-path {}",
                manifest.display()
            );
            let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
                .args(["build", "--release", "--manifest-path"])
                .arg(&manifest)
                .env_remove("CARGO_TARGET_DIR")
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit())
                .status();
            match status {
                Ok(s) if s.success() => {}
                Ok(s) => notes.push(format!(
                    "building the peers failed ({s}); peers without a binary are skipped"
                )),
                Err(e) => notes.push(format!(
                    "could not run cargo to build the peers ({e}); peers without a binary are skipped"
                )),
            }
        } else {
            notes.push(format!(
                "no peers workspace at {} (no Cargo.toml); peers are skipped",
                dir.display()
            ));
        }
    }
    let mut specs = Vec::new();
    for n in names {
        let path = exe(n);
        if path.is_file() {
            specs.push(ServerSpec {
                name: n.to_owned(),
                kind: ServerKind::Peer { exe: path },
            });
        } else {
            notes.push(format!("skipping {n}: no binary at {}", path.display()));
        }
    }
    (specs, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_name_with_spaces() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 100 1000 50";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(325));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_rss() {
        let status = "Name:\tx\nVmPeak:\t  100 kB\nVmRSS:\t    2048 kB\nThreads: 1\n";
        assert_eq!(parse_status_rss(status), Some(2048 * 1024));
        assert_eq!(parse_status_rss("Name: x\n"), None);
    }

    #[test]
    fn own_process_is_readable() {
        let pid = std::process::id();
        assert!(proc_rss_bytes(pid).unwrap() > 0);
        proc_cpu_time(pid).unwrap();
    }

    #[test]
    fn peer_selection_parses() {
        assert_eq!("all".parse(), Ok(PeerSelection::All));
        assert_eq!("none".parse(), Ok(PeerSelection::None));
        assert_eq!(
            "peer-tokio-mt, floor-mio".parse(),
            Ok(PeerSelection::List(vec![
                "peer-tokio-mt".into(),
                "floor-mio".into()
            ]))
        );
        assert!("peer-nginx".parse::<PeerSelection>().is_err());
    }

    #[test]
    fn missing_peers_are_skipped_not_fatal() {
        let dir = std::env::temp_dir().join(format!("no-peers-{}", std::process::id()));
        let (specs, notes) = resolve_peers(&PeerSelection::All, &dir);
        assert!(specs.is_empty());
        assert_eq!(notes.len(), 1 + PEERS.len(), "{notes:?}");
    }
}
