//! The servers under test as child processes: Shardline (this binary's `serve`
//! subcommand), the peers built in `bench/peers`, and for `chat` the
//! shardline-chat binary and ngircd. Launch one, wait until it serves, read its
//! CPU time, RSS and open fds from /proc, and kill it.
//!
//! A child must never outlive the harness: [`ServerProc`] kills it on drop (errors
//! and panics included), the child asks the kernel to kill it if the launching
//! thread dies (PR_SET_PDEATHSIG), and [`install_signal_guard`] kills every live
//! child before exiting on SIGINT/SIGTERM.

use std::{
    fmt,
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener, TcpStream},
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
        /// io_uring direct descriptors (off: `SHARDLINE_DIRECT_DESCRIPTORS=0`).
        direct: bool,
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
            kind: ServerKind::Shardline {
                io,
                accept,
                direct: true,
            },
        }
    }

    /// Shardline on io_uring with ordinary fds instead of direct descriptors,
    /// named `shardline-uring-fd`: beside `shardline-uring` it shows what the
    /// file table saves per request (the kernel's fd lookup and reference per
    /// operation).
    pub fn shardline_uring_fd() -> ServerSpec {
        ServerSpec {
            name: "shardline-uring-fd".into(),
            kind: ServerKind::Shardline {
                io: Io::Uring,
                accept: AcceptMode::ReusePort,
                direct: false,
            },
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
                // Forked workers (nginx with a master) first: they do not die with
                // their parent.
                for &pid in &pids {
                    for (d, _) in descendants(pid) {
                        kill(d, libc::SIGKILL);
                    }
                }
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
    /// A directory to remove once the server is gone (its generated config).
    cleanup: Option<PathBuf>,
}

/// How [`ServerProc::spawn`] knows that a child serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// It prints `listening on ADDR` on stdout (the address replaces the one given).
    ListeningLine,
    /// It prints a stdout line containing this text.
    StdoutContains(&'static str),
    /// A TCP connection to the address succeeds (one listener, one process).
    Connect,
}

impl ServerProc {
    /// Starts `spec` on a free loopback port and waits until it is listening.
    pub fn start(spec: &ServerSpec, launch: &Launch) -> anyhow::Result<ServerProc> {
        let port = free_port().context("finding a free port")?;
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let cpus = machine::format_cpus(&launch.cpus);
        let mut cmd = match &spec.kind {
            ServerKind::Shardline { io, accept, direct } => {
                let mut c = Command::new(&launch.serve_exe);
                if !direct {
                    c.env(shardline::ENV_DIRECT_DESCRIPTORS, "0");
                }
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
        cmd.stderr(Stdio::inherit());
        ServerProc::spawn(&spec.name, cmd, addr, Ready::ListeningLine, None)
    }

    /// Runs `cmd` as a child server named `name` that will serve `addr`, and waits
    /// until `ready` says it serves. stdin is null and stdout is piped (and drained
    /// for the child's whole life); stderr is left as the caller set it. The child
    /// gets PR_SET_PDEATHSIG and is registered with the signal guard; `cleanup` (a
    /// directory) is removed when the server is dropped.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        addr: SocketAddr,
        ready: Ready,
        cleanup: Option<PathBuf>,
    ) -> anyhow::Result<ServerProc> {
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                if let Some(dir) = &cleanup {
                    let _ = std::fs::remove_dir_all(dir);
                }
                return Err(e).with_context(|| format!("starting {name}: {cmd:?}"));
            }
        };
        let pid = child.id();
        children().push(pid);
        let stdout = child.stdout.take().expect("stdout was piped");
        let mut proc = ServerProc {
            child,
            name: name.to_owned(),
            pid,
            addr,
            cleanup,
        };
        let (tx, rx) = mpsc::channel();
        let wanted = ready.clone();
        let who = name.to_owned();
        // The reader keeps draining stdout after the line so the child never blocks
        // on a full pipe. A server that logs to stdout (`StdoutContains`) has its
        // warnings and errors passed on to stderr.
        std::thread::Builder::new()
            .name(format!("{name}-stdout"))
            .spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let hit = match &wanted {
                        Ready::ListeningLine => line
                            .trim()
                            .strip_prefix("listening on ")
                            .map(|rest| rest.trim().to_owned()),
                        Ready::StdoutContains(s) => {
                            if line.contains(" WARN ") || line.contains(" ERROR ") {
                                eprintln!("{who}: {line}");
                            }
                            line.contains(s).then(String::new)
                        }
                        Ready::Connect => {
                            if line.contains(" WARN ") || line.contains(" ERROR ") {
                                eprintln!("{who}: {line}");
                            }
                            None
                        }
                    };
                    if let Some(hit) = hit {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(hit);
                        }
                    }
                }
            })
            .context("spawning a stdout reader")?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if ready == Ready::Connect {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    return Ok(proc);
                }
                if let Some(status) = proc.child.try_wait()? {
                    bail!("{name} exited ({status}) before listening");
                }
                if Instant::now() > deadline {
                    bail!("{name} did not accept a connection on {addr} within {START_TIMEOUT:?}");
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(printed) => {
                    if let Ok(a) = printed.parse::<SocketAddr>() {
                        proc.addr = a;
                    }
                    return Ok(proc);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = proc.child.try_wait()? {
                        bail!("{name} exited ({status}) before listening");
                    }
                    if Instant::now() > deadline {
                        bail!("{name} did not say it serves ({ready:?}) within {START_TIMEOUT:?}");
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = proc.child.wait()?;
                    bail!("{name} closed its stdout ({status}) before listening");
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
        // Processes the server forked (nginx workers), with their start times so
        // that a recycled pid is never killed.
        let forked = descendants(self.pid);
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
        for (pid, start) in forked {
            if proc_start_time(pid) == Some(start) {
                kill(pid, libc::SIGKILL);
            }
        }
        children().retain(|&p| p != self.pid);
        if let Some(dir) = self.cleanup.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
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

/// The fields of /proc/PID/stat after the command name: index 0 is field 3
/// (state), so field N is at index N − 3.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat[stat.rfind(')')? + 1..].split_whitespace().collect())
}

/// Parent pid (field 4) of a /proc/PID/stat line.
pub fn parse_stat_ppid(stat: &str) -> Option<u32> {
    stat_fields(stat)?.get(1)?.parse().ok()
}

/// Start time (field 22, clock ticks after boot) of a process, to tell a process
/// from a later one that got its pid.
pub fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_fields(&stat)?.get(19)?.parse().ok()
}

/// Every live descendant of `pid` (children, their children, …) with its start
/// time, from a scan of /proc.
pub fn descendants(pid: u32) -> Vec<(u32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut parent_of = Vec::new();
    for entry in dir.flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            if let (Some(pp), Some(start)) = (
                parse_stat_ppid(&stat),
                stat_fields(&stat).and_then(|f| f.get(19)?.parse::<u64>().ok()),
            ) {
                parent_of.push((p, pp, start));
            }
        }
    }
    let mut out: Vec<(u32, u64)> = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for &(c, pp, start) in &parent_of {
            if pp == p && c != pid && !out.iter().any(|&(o, _)| o == c) {
                out.push((c, start));
                frontier.push(c);
            }
        }
    }
    out
}

/// utime + stime of a process and every live descendant (a server that forks
/// workers, like nginx with a master process), from /proc.
pub fn proc_tree_cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let mut total = proc_cpu_time(pid)?;
    for (d, _) in descendants(pid) {
        // A descendant may exit between the scan and the read: it then counts as 0.
        total += proc_cpu_time(d).unwrap_or_default();
    }
    Ok(total)
}

/// CPU time (user + system) of this process's children that have been waited
/// for (getrusage RUSAGE_CHILDREN): a child's CPU time is added when it is reaped.
pub fn reaped_children_cpu_time() -> Duration {
    // SAFETY: a zeroed rusage is valid; getrusage fills it.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) != 0 {
            return Duration::ZERO;
        }
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

/// Makes `cmd` pin itself to `cpus` (sched_setaffinity between fork and exec);
/// nothing when `cpus` is empty.
pub fn pin_command(cmd: &mut Command, cpus: &[usize]) -> anyhow::Result<()> {
    if cpus.is_empty() {
        return Ok(());
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if c >= libc::CPU_SETSIZE as usize {
            bail!("CPU {c} is out of range");
        }
        // SAFETY: c is in bounds (checked above).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: sched_setaffinity is async-signal-safe; `set` is a plain copy.
    unsafe {
        cmd.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// What [`run_bounded`] collected from a finished child.
#[derive(Debug, Clone)]
pub struct BoundedOutput {
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
    /// Its exit status (`None`: killed because it ran past the limit).
    pub status: Option<std::process::ExitStatus>,
}

/// Runs `cmd` (a load generator such as wrk) to completion, but for at most
/// `limit`: past it the child is killed and `status` is `None`. Like a server it
/// gets PR_SET_PDEATHSIG and is killed by the signal guard; stdout and stderr are
/// collected.
pub fn run_bounded(name: &str, mut cmd: Command, limit: Duration) -> anyhow::Result<BoundedOutput> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {name}: {cmd:?}"))?;
    let pid = child.id();
    children().push(pid);
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                s = String::from_utf8_lossy(&buf).into_owned();
            }
            s
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn std::io::Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn std::io::Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                // Its own children too: they hold the output pipes open. Found
                // first (orphans are reparented), killed after it: killed before,
                // a shell would report their death on stderr ("Killed").
                let forked = descendants(pid);
                let _ = child.kill();
                for (d, _) in forked {
                    kill(d, libc::SIGKILL);
                }
                let _ = child.wait();
                break None;
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                children().retain(|&p| p != pid);
                return Err(e).with_context(|| format!("waiting for {name}"));
            }
        }
    };
    children().retain(|&p| p != pid);
    Ok(BoundedOutput {
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        status,
    })
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

/// Where the Debian package installs ngircd.
pub const NGIRCD_EXE: &str = "/usr/sbin/ngircd";
/// Where the Debian package installs InspIRCd 3.
pub const INSPIRCD_EXE: &str = "/usr/sbin/inspircd";

/// The workspace root (this crate's manifest directory's parent).
pub fn workspace_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// Where cargo puts the workspace's builds: `$CARGO_TARGET_DIR` if set (relative
/// to the workspace if relative), else `target` in the workspace.
pub fn workspace_target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        Some(d) => workspace_dir().join(d),
        None => workspace_dir().join("target"),
    }
}

/// `release/shardline-chat` in the workspace's [`workspace_target_dir`].
pub fn default_chat_exe() -> PathBuf {
    workspace_target_dir()
        .join("release")
        .join("shardline-chat")
}

/// Makes sure `exe` exists: if it is missing and `build` is set, runs `cargo build
/// --release -p shardline-chat` in the workspace first (and says so). The error
/// says why the server must be skipped.
pub fn resolve_chat_exe(exe: &Path, build: bool) -> Result<(), String> {
    resolve_workspace_exe(exe, "shardline-chat", build)
}

/// `release/shardline-proxy` in the workspace's [`workspace_target_dir`].
pub fn default_proxy_exe() -> PathBuf {
    workspace_target_dir()
        .join("release")
        .join("shardline-proxy")
}

/// Makes sure `exe` exists: if it is missing and `build` is set, runs `cargo build
/// --release -p PACKAGE` in the workspace first (and says so). The error says why
/// the server must be skipped.
pub fn resolve_workspace_exe(exe: &Path, package: &str, build: bool) -> Result<(), String> {
    if exe.is_file() {
        return Ok(());
    }
    if !build {
        return Err(format!("no binary at {}", exe.display()));
    }
    let manifest = workspace_dir().join("Cargo.toml");
    println!(
        "building {package}: cargo build --release -p {package} --manifest-path {}",
        manifest.display()
    );
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "-p", package, "--manifest-path"])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", workspace_target_dir())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status();
    match status {
        Ok(s) if s.success() && exe.is_file() => Ok(()),
        Ok(s) if s.success() => Err(format!(
            "cargo built {package} but there is still no {}",
            exe.display()
        )),
        Ok(s) => Err(format!("building {package} failed ({s})")),
        Err(e) => Err(format!("could not run cargo to build {package} ({e})")),
    }
}

/// A packaged peer (ngircd, nginx, HAProxy) about to start from a generated
/// config: its loopback address, its scratch directory and the config file in it.
struct Generated {
    addr: SocketAddr,
    dir: PathBuf,
    conf: PathBuf,
}

/// Checks that `exe` (Debian package `package`) is installed, picks a free
/// loopback port and a scratch directory named after `name`, and writes
/// `config(port, dir)` to `dir/conf_name`.
fn generate(
    exe: &Path,
    package: &str,
    name: &str,
    conf_name: &str,
    config: impl FnOnce(u16, &Path) -> anyhow::Result<String>,
) -> anyhow::Result<Generated> {
    if !exe.is_file() {
        bail!(
            "no {} (install the Debian package: apt-get install {package}, or ./x bench-deps)",
            exe.display()
        );
    }
    let port = free_port().context("finding a free port")?;
    let dir = scratch_dir(name, port)?;
    let conf = dir.join(conf_name);
    std::fs::write(&conf, config(port, &dir)?)
        .with_context(|| format!("writing {}", conf.display()))?;
    Ok(Generated {
        addr: ([127, 0, 0, 1], port).into(),
        dir,
        conf,
    })
}

/// A fresh directory for a child's generated files, removed with the child.
fn scratch_dir(name: &str, port: u16) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "shardline-bench-{name}-{}-{port}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Starts `exe` (shardline-chat) on a free loopback port with `--shards`, `--io`,
/// reuseport accept and shard *i* pinned to `cpus[i]` (`--placement cpus=…`;
/// `--no-pin` when `cpus` is empty), with `config`, or else a file holding
/// `default_config`; its history store in the scratch directory (removed with
/// it), or none with `history` off (`--no-history`). Ready when it logs
/// `server started` (every shard serves).
pub fn start_shardline_chat(
    exe: &Path,
    io: Io,
    shards: usize,
    cpus: &[usize],
    config: Option<&Path>,
    default_config: &str,
    history: bool,
) -> anyhow::Result<ServerProc> {
    let name = format!("shardline-chat-{io}");
    let port = free_port().context("finding a free port")?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let dir = scratch_dir(&name, port)?;
    let config = match config {
        Some(c) => c.to_path_buf(),
        None => {
            let path = dir.join("chat.toml");
            std::fs::write(&path, default_config)
                .with_context(|| format!("writing {}", path.display()))?;
            path
        }
    };
    let mut cmd = Command::new(exe);
    cmd.arg("--listen")
        .arg(addr.to_string())
        .arg("--config")
        .arg(&config);
    if history {
        cmd.arg("--data-dir").arg(dir.join("data"));
    } else {
        cmd.arg("--no-history");
    }
    shardline_flags(&mut cmd, io, shards, cpus);
    // Its logs go to stdout; `server started` is logged at info once every shard
    // serves.
    cmd.env("RUST_LOG", "info").stderr(Stdio::inherit());
    ServerProc::spawn(
        &name,
        cmd,
        addr,
        Ready::StdoutContains("server started"),
        Some(dir),
    )
}

/// A redis-server of its own (Debian `redis-server`) on a free loopback port,
/// no persistence: a chat cluster's engine.
pub fn start_redis() -> anyhow::Result<ServerProc> {
    let port = free_port().context("finding a free port")?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let dir = scratch_dir("redis", port)?;
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(&dir)
        .stderr(Stdio::inherit());
    ServerProc::spawn("redis-server", cmd, addr, Ready::Connect, Some(dir))
        .context("starting redis-server (Debian package redis-server; ./x deps installs it)")
}

/// Waits (up to 20 s) until every chat node lists all of them in LINKS.
pub fn wait_cluster(nodes: &[ServerProc]) -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let deadline = Instant::now() + Duration::from_secs(20);
    for (i, n) in nodes.iter().enumerate() {
        loop {
            let mut s = std::net::TcpStream::connect(n.addr)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(s, "NICK w{i}x\r\nUSER w 0 * :w\r\nLINKS\r\nQUIT\r\n")?;
            let seen = BufReader::new(s)
                .lines()
                .map_while(Result::ok)
                .filter(|l| l.split(' ').nth(1) == Some("364"))
                .count();
            if seen >= nodes.len() {
                break;
            }
            if Instant::now() > deadline {
                bail!("node {i} sees {seen} of {} nodes after 20 s", nodes.len());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

/// ngircd's configuration for a benchmark: loopback `port`, no flood penalty
/// (`MaxPenaltyTime = 0`), no limit per IP, no DNS/ident/PAM lookups, a MOTD
/// phrase instead of a file, and no include directory from /etc. It runs as
/// `uid`/`gid` (ours: no credential change, so PR_SET_PDEATHSIG survives).
pub fn ngircd_config(port: u16, include_dir: &Path, uid: u32, gid: u32) -> String {
    format!(
        "[Global]\n\
         Name = bench.ngircd.local\n\
         Info = shardline-bench\n\
         AdminInfo1 = shardline-bench\n\
         AdminInfo2 = loopback benchmark\n\
         AdminEMail = bench@localhost\n\
         Listen = 127.0.0.1\n\
         Ports = {port}\n\
         MotdPhrase = \"shardline-bench\"\n\
         ServerUID = {uid}\n\
         ServerGID = {gid}\n\
         \n\
         [Limits]\n\
         MaxConnections = 0\n\
         MaxConnectionsIP = 0\n\
         MaxJoins = 0\n\
         MaxNickLength = 30\n\
         MaxPenaltyTime = 0\n\
         PingTimeout = 600\n\
         PongTimeout = 600\n\
         \n\
         [Options]\n\
         DNS = no\n\
         Ident = no\n\
         PAM = no\n\
         IncludeDir = {}\n",
        include_dir.display()
    )
}

/// Starts ngircd in the foreground (`-n`) with a generated config in a scratch
/// directory, on a free loopback port, pinned to `cpus` (sched_setaffinity in the
/// child). Ready when a connection succeeds (one listener, one process).
pub fn start_ngircd(exe: &Path, cpus: &[usize]) -> anyhow::Result<ServerProc> {
    let g = generate(exe, "ngircd", "ngircd", "ngircd.conf", |port, dir| {
        let include = dir.join("conf.d");
        std::fs::create_dir_all(&include)?;
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Ok(ngircd_config(port, &include, uid, gid))
    })?;
    let mut cmd = Command::new(exe);
    cmd.arg("-n").arg("-f").arg(&g.conf).stderr(Stdio::null());
    pin_command(&mut cmd, cpus)?;
    ServerProc::spawn("ngircd", cmd, g.addr, Ready::Connect, Some(g.dir))
}

/// InspIRCd 3's configuration for a benchmark: loopback `port`, one connect
/// class with flood control off (`fakelag="no"`, a command rate and penalty
/// threshold no client reaches, send and receive queues of 1 GiB / 1 MiB so
/// neither the burst nor the paced shape quits anybody), no limit per IP, no
/// hostname or ident lookups, room for 1,000 channels and members; every file
/// (pid, log, MOTD) in `dir`. `<power>` gets passwords nobody knows (InspIRCd
/// refuses empty ones).
pub fn inspircd_config(port: u16, dir: &Path) -> String {
    let d = dir.display();
    format!(
        "<server name=\"bench.inspircd.local\" description=\"shardline-bench\" network=\"bench\">\n\
         <admin name=\"shardline-bench\" nick=\"bench\" email=\"bench@localhost\">\n\
         <bind address=\"127.0.0.1\" port=\"{port}\" type=\"clients\">\n\
         <power diepass=\"die-{port}-{pid}\" restartpass=\"restart-{port}-{pid}\">\n\
         <connect name=\"bench\" allow=\"*\" maxchans=\"1000\" timeout=\"60\" pingfreq=\"600\"\n\
         \x20        hardsendq=\"1073741824\" softsendq=\"1073741824\" recvq=\"1048576\"\n\
         \x20        threshold=\"1000000\" commandrate=\"1000000000\" fakelag=\"no\"\n\
         \x20        localmax=\"1000000\" globalmax=\"1000000\" limit=\"1000000\"\n\
         \x20        resolvehostnames=\"no\" useident=\"no\" useconnectban=\"no\" useconnflood=\"no\">\n\
         <channels users=\"1000\" opers=\"1000\">\n\
         <files motd=\"{d}/motd.txt\">\n\
         <dns server=\"127.0.0.1\" timeout=\"1\">\n\
         <pid file=\"{d}/inspircd.pid\">\n\
         <path configdir=\"{d}\" datadir=\"{d}\" logdir=\"{d}\">\n\
         <options prefixquit=\"Quit: \" syntaxhints=\"no\" announcets=\"yes\" hostintopic=\"yes\" pingwarning=\"15\" splitwhois=\"no\" exemptchanops=\"\">\n\
         <security hideserver=\"\" userstats=\"Pu\" customversion=\"\" flatlinks=\"no\" hidesplits=\"no\" hideulines=\"no\" hidebans=\"no\" maxtargets=\"20\">\n\
         <performance quietbursts=\"yes\" softlimit=\"20000\" somaxconn=\"1024\" netbuffersize=\"10240\" clonesonconnect=\"no\">\n\
         <log method=\"file\" type=\"* -USERINPUT -USEROUTPUT\" level=\"default\" target=\"{d}/ircd.log\">\n",
        pid = std::process::id(),
    )
}

/// Starts InspIRCd 3 in the foreground (`--nofork`; `--runasroot` when we are
/// root, which it otherwise refuses) with a generated config in a scratch
/// directory, on a free loopback port, pinned to `cpus`. One thread, like
/// ngircd. Ready when a connection succeeds. (InspIRCd completes a
/// registration on its once-a-second timer, so clients wait up to 1 s for 001;
/// the harness measures after every client has joined.)
pub fn start_inspircd(exe: &Path, cpus: &[usize]) -> anyhow::Result<ServerProc> {
    let g = generate(exe, "inspircd", "inspircd", "inspircd.conf", |port, dir| {
        std::fs::write(dir.join("motd.txt"), "shardline-bench\n")?;
        Ok(inspircd_config(port, dir))
    })?;
    let mut cmd = Command::new(exe);
    cmd.arg("--nofork")
        .arg(format!("--config={}", g.conf.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } == 0 {
        cmd.arg("--runasroot");
    }
    pin_command(&mut cmd, cpus)?;
    ServerProc::spawn("inspircd", cmd, g.addr, Ready::Connect, Some(g.dir))
}

// ---------------------------------------------------------------------------
// HTTP proxies and their backend, for `shardline-bench proxy`.

/// Where the Debian package installs nginx.
pub const NGINX_EXE: &str = "/usr/sbin/nginx";
/// Where the Debian package installs HAProxy.
pub const HAPROXY_EXE: &str = "/usr/sbin/haproxy";
/// Where the Debian package installs wrk.
pub const WRK_EXE: &str = "/usr/bin/wrk";
/// The body the backend nginx answers every request with (13 bytes).
pub const BACKEND_BODY: &str = "Hello, world\n";

/// What an nginx instance of the benchmark does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NginxRole {
    /// The backend: `200` with [`BACKEND_BODY`] for every request.
    Backend,
    /// A reverse proxy to `upstream` with a keep-alive pool of `keepalive` idle
    /// connections (it must be at least the number of concurrent clients, or nginx
    /// opens a new upstream connection for most requests).
    Proxy {
        /// The backend.
        upstream: SocketAddr,
        /// Idle upstream connections kept per worker.
        keepalive: usize,
    },
}

/// An nginx configuration for a benchmark: in the foreground (`daemon off`), one
/// process when `workers` is 1 (`master_process off`: no fork, so the parent-death
/// signal and the CPU accounting cover it), else a master with `workers` workers;
/// every file (pid, error log, temp paths) in `dir`; no access log; keep-alive
/// connections never closed for their request count. Listens on 127.0.0.1:`port`.
pub fn nginx_config(
    role: NginxRole,
    port: u16,
    dir: &Path,
    workers: usize,
    conns: usize,
) -> String {
    nginx_config_with(role, port, dir, workers, conns, None)
}

/// [`nginx_config`] with the listener terminating TLS 1.3 with `tls` (`proxy
/// --tls`): `listen … ssl`, the certificate and key, `ssl_protocols TLSv1.3`.
/// Session cache and tickets stay at nginx's defaults: the harness's clients never
/// resume a session.
pub fn nginx_tls_config(
    role: NginxRole,
    port: u16,
    dir: &Path,
    workers: usize,
    conns: usize,
    tls: &TlsFiles,
) -> String {
    nginx_config_with(role, port, dir, workers, conns, Some(tls))
}

fn nginx_config_with(
    role: NginxRole,
    port: u16,
    dir: &Path,
    workers: usize,
    conns: usize,
    tls: Option<&TlsFiles>,
) -> String {
    let d = dir.display();
    let listen = match tls {
        None => format!("        listen 127.0.0.1:{port};\n"),
        Some(t) => format!(
            "        listen 127.0.0.1:{port} ssl;\n        ssl_certificate {};\n        ssl_certificate_key {};\n        ssl_protocols TLSv1.3;\n",
            t.cert.display(),
            t.key.display()
        ),
    };
    let workers = workers.max(1);
    let process = if workers == 1 {
        "master_process off;\nworker_processes 1;\n".to_owned()
    } else {
        format!("master_process on;\nworker_processes {workers};\n")
    };
    // Client and upstream connections, with room for the benchmark's own checks.
    let worker_connections = (4 * conns + 256).max(1024);
    let body = match role {
        NginxRole::Backend => format!(
            "        location / {{\n            return 200 \"{}\";\n        }}\n",
            BACKEND_BODY.replace('\n', "\\n")
        ),
        NginxRole::Proxy { .. } => "        location / {\n            proxy_pass http://backend;\n            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n        }\n".to_owned(),
    };
    let upstream = match role {
        NginxRole::Backend => String::new(),
        NginxRole::Proxy {
            upstream,
            keepalive,
        } => format!(
            "    upstream backend {{\n        server {upstream};\n        keepalive {keepalive};\n        keepalive_requests 1000000;\n        keepalive_timeout 60s;\n    }}\n"
        ),
    };
    format!(
        "# generated by shardline-bench proxy\n\
         daemon off;\n\
         {process}\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{\n    worker_connections {worker_connections};\n}}\n\
         http {{\n\
         \x20   access_log off;\n\
         \x20   default_type text/plain;\n\
         \x20   keepalive_requests 1000000;\n\
         \x20   keepalive_timeout 60s;\n\
         \x20   client_body_temp_path {d}/client_body;\n\
         \x20   proxy_temp_path {d}/proxy;\n\
         \x20   fastcgi_temp_path {d}/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/uwsgi;\n\
         \x20   scgi_temp_path {d}/scgi;\n\
         {upstream}\
         \x20   server {{\n\
         {listen}\
         {body}\
         \x20   }}\n\
         }}\n"
    )
}

/// Starts nginx (`exe`) in `role` with a generated config in a scratch directory
/// (`-p DIR -e DIR/error.log -c DIR/nginx.conf`: nothing is read or written
/// outside it), on a free loopback port, pinned to `cpus`. Ready when a
/// connection succeeds.
pub fn start_nginx(
    exe: &Path,
    name: &str,
    role: NginxRole,
    workers: usize,
    cpus: &[usize],
    conns: usize,
) -> anyhow::Result<ServerProc> {
    start_nginx_with(exe, name, role, workers, cpus, conns, None)
}

/// [`start_nginx`] terminating TLS 1.3 with `tls` ([`nginx_tls_config`]).
pub fn start_nginx_tls(
    exe: &Path,
    name: &str,
    role: NginxRole,
    workers: usize,
    cpus: &[usize],
    conns: usize,
    tls: &TlsFiles,
) -> anyhow::Result<ServerProc> {
    start_nginx_with(exe, name, role, workers, cpus, conns, Some(tls))
}

fn start_nginx_with(
    exe: &Path,
    name: &str,
    role: NginxRole,
    workers: usize,
    cpus: &[usize],
    conns: usize,
    tls: Option<&TlsFiles>,
) -> anyhow::Result<ServerProc> {
    let g = generate(exe, "nginx", name, "nginx.conf", |port, dir| {
        Ok(nginx_config_with(role, port, dir, workers, conns, tls))
    })?;
    let mut cmd = Command::new(exe);
    cmd.arg("-p")
        .arg(format!("{}/", g.dir.display()))
        .arg("-e")
        .arg(g.dir.join("error.log"))
        .arg("-c")
        .arg(&g.conf)
        .stderr(Stdio::inherit());
    pin_command(&mut cmd, cpus)?;
    ServerProc::spawn(name, cmd, g.addr, Ready::Connect, Some(g.dir))
}

/// An HAProxy configuration for a benchmark: `threads` threads (`nbthread`), HTTP
/// mode, keep-alive both ways with idle server connections shared by every client
/// (`http-reuse always`), timeouts, no logging, 127.0.0.1:`port` in front of
/// `upstream`.
pub fn haproxy_config(port: u16, upstream: SocketAddr, threads: usize, conns: usize) -> String {
    haproxy_config_with(port, upstream, threads, conns, None)
}

/// [`haproxy_config`] with the frontend terminating TLS 1.3 with `tls` (`proxy
/// --tls`): `bind … ssl crt CERT+KEY ssl-min-ver TLSv1.3`. Session cache and
/// tickets stay at HAProxy's defaults: the harness's clients never resume a
/// session.
pub fn haproxy_tls_config(
    port: u16,
    upstream: SocketAddr,
    threads: usize,
    conns: usize,
    tls: &TlsFiles,
) -> String {
    haproxy_config_with(port, upstream, threads, conns, Some(tls))
}

fn haproxy_config_with(
    port: u16,
    upstream: SocketAddr,
    threads: usize,
    conns: usize,
    tls: Option<&TlsFiles>,
) -> String {
    let maxconn = (4 * conns + 256).max(1024);
    let ssl = tls.map_or_else(String::new, |t| {
        format!(" ssl crt {} ssl-min-ver TLSv1.3", t.combined.display())
    });
    format!(
        "# generated by shardline-bench proxy\n\
         global\n\
         \x20   nbthread {}\n\
         \x20   maxconn {maxconn}\n\
         \n\
         defaults\n\
         \x20   mode http\n\
         \x20   option http-keep-alive\n\
         \x20   http-reuse always\n\
         \x20   timeout connect 5s\n\
         \x20   timeout client 60s\n\
         \x20   timeout server 60s\n\
         \x20   timeout http-request 10s\n\
         \x20   timeout http-keep-alive 60s\n\
         \n\
         frontend bench\n\
         \x20   bind 127.0.0.1:{port}{ssl}\n\
         \x20   default_backend upstream\n\
         \n\
         backend upstream\n\
         \x20   server backend1 {upstream}\n",
        threads.max(1)
    )
}

/// Starts HAProxy (`exe`) in the foreground (`-db`) with a generated config, on a
/// free loopback port, pinned to `cpus`. Ready when a connection succeeds.
pub fn start_haproxy(
    exe: &Path,
    upstream: SocketAddr,
    threads: usize,
    cpus: &[usize],
    conns: usize,
) -> anyhow::Result<ServerProc> {
    start_haproxy_with(exe, upstream, threads, cpus, conns, None)
}

/// [`start_haproxy`] terminating TLS 1.3 with `tls` ([`haproxy_tls_config`]).
pub fn start_haproxy_tls(
    exe: &Path,
    upstream: SocketAddr,
    threads: usize,
    cpus: &[usize],
    conns: usize,
    tls: &TlsFiles,
) -> anyhow::Result<ServerProc> {
    start_haproxy_with(exe, upstream, threads, cpus, conns, Some(tls))
}

fn start_haproxy_with(
    exe: &Path,
    upstream: SocketAddr,
    threads: usize,
    cpus: &[usize],
    conns: usize,
    tls: Option<&TlsFiles>,
) -> anyhow::Result<ServerProc> {
    spawn_haproxy(exe, cpus, |port| {
        haproxy_config_with(port, upstream, threads, conns, tls)
    })
}

/// Runs HAProxy in the foreground (`-db`) with `config(port)` on a free
/// loopback port, pinned to `cpus`. Ready when a connection succeeds.
fn spawn_haproxy(
    exe: &Path,
    cpus: &[usize],
    config: impl FnOnce(u16) -> String,
) -> anyhow::Result<ServerProc> {
    let g = generate(exe, "haproxy", "haproxy", "haproxy.cfg", |port, _| {
        Ok(config(port))
    })?;
    let mut cmd = Command::new(exe);
    cmd.arg("-db")
        .arg("-f")
        .arg(&g.conf)
        .stderr(Stdio::inherit());
    pin_command(&mut cmd, cpus)?;
    ServerProc::spawn("haproxy", cmd, g.addr, Ready::Connect, Some(g.dir))
}

/// [`start_haproxy`] for a connection-count run: frontend `maxconn` as given,
/// and `no strict-limits`, so HAProxy runs with the fd limit it has (its own
/// estimate reserves a server-side fd per connection, which idle keep-alive
/// clients never use) instead of refusing to start.
pub fn start_haproxy_holding(
    exe: &Path,
    upstream: SocketAddr,
    threads: usize,
    cpus: &[usize],
    maxconn: usize,
) -> anyhow::Result<ServerProc> {
    spawn_haproxy(exe, cpus, |port| {
        // With no connections asked for, the template's maxconn is its floor.
        haproxy_config_with(port, upstream, threads, 0, None).replacen(
            "    maxconn 1024\n",
            &format!("    maxconn {maxconn}\n    no strict-limits\n"),
            1,
        )
    })
}

/// A shardline-proxy configuration for a benchmark: one HTTP listener on
/// 127.0.0.1:`port` in front of `upstream`, with room for `conns` idle upstream
/// connections per shard (never fewer than its default, 64).
pub fn shardline_proxy_config(port: u16, upstream: SocketAddr, conns: usize) -> String {
    format!(
        "# generated by shardline-bench proxy\n\
         [[listener]]\n\
         address = \"127.0.0.1:{port}\"\n\
         mode = \"http\"\n\
         pool = \"backend\"\n\
         \n\
         [pool.backend]\n\
         backends = [{{ address = \"{upstream}\" }}]\n\
         \n\
         [limits]\n\
         max_idle_per_backend = {}\n",
        conns.max(64)
    )
}

/// The flags every Shardline binary takes, as the harness runs them: `shards`
/// shards on `io`, reuseport accept, one shard per CPU of `cpus` (unpinned when
/// empty).
pub fn shardline_flags(cmd: &mut Command, io: Io, shards: usize, cpus: &[usize]) {
    cmd.arg("--shards")
        .arg(shards.to_string())
        .arg("--io")
        .arg(io.to_string())
        .arg("--accept")
        .arg("reuseport");
    if cpus.is_empty() {
        cmd.arg("--no-pin");
    } else {
        cmd.arg("--placement")
            .arg(format!("cpus={}", machine::format_cpus(cpus)));
    }
}

/// Starts shardline-proxy (`exe`) on `io` with `shards` shards (reuseport accept,
/// shard *i* on `cpus[i]`, or `--no-pin` when `cpus` is empty) and a generated
/// config, logging warnings only (no access log). Ready when a connection
/// succeeds.
pub fn start_shardline_proxy(
    exe: &Path,
    io: Io,
    upstream: SocketAddr,
    shards: usize,
    cpus: &[usize],
    conns: usize,
) -> anyhow::Result<ServerProc> {
    spawn_shardline_proxy(exe, io, shards, cpus, |port| {
        shardline_proxy_config(port, upstream, conns)
    })
}

/// [`start_shardline_proxy`] (unpinned) for a connection-count run: the client
/// cap set to `clients` (by default the proxy derives it from the fd limit,
/// which direct descriptors do not spend).
pub fn start_shardline_proxy_holding(
    exe: &Path,
    io: Io,
    upstream: SocketAddr,
    shards: usize,
    idle_upstreams: usize,
    clients: usize,
) -> anyhow::Result<ServerProc> {
    spawn_shardline_proxy(exe, io, shards, &[], |port| {
        format!(
            "{}max_connections = {clients}\n",
            shardline_proxy_config(port, upstream, idle_upstreams)
        )
    })
}

/// Runs shardline-proxy with `config(port)` on a free loopback port (see
/// [`start_shardline_proxy`]).
fn spawn_shardline_proxy(
    exe: &Path,
    io: Io,
    shards: usize,
    cpus: &[usize],
    config: impl FnOnce(u16) -> String,
) -> anyhow::Result<ServerProc> {
    let name = format!("shardline-proxy-{io}");
    let port = free_port().context("finding a free port")?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let dir = scratch_dir(&name, port)?;
    let conf = dir.join("proxy.toml");
    std::fs::write(&conf, config(port)).with_context(|| format!("writing {}", conf.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--config").arg(&conf);
    shardline_flags(&mut cmd, io, shards, cpus);
    cmd.env("RUST_LOG", "warn").stderr(Stdio::inherit());
    pin_command(&mut cmd, cpus)?;
    ServerProc::spawn(&name, cmd, addr, Ready::Connect, Some(dir))
}

/// The certificate a TLS-terminating proxy of `proxy --tls` serves, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// Chain and key in one file, as HAProxy's `crt` takes them.
    pub combined: PathBuf,
}

/// The flag shardline-proxy takes for a TLS certificate; a binary whose `--help`
/// lacks it has no TLS termination.
pub const PROXY_TLS_CERT_FLAG: &str = "--tls-cert";

/// Whether the shardline-proxy binary `exe` terminates TLS: Ok when its `--help`
/// lists [`PROXY_TLS_CERT_FLAG`], else why not.
pub fn proxy_supports_tls(exe: &Path) -> Result<(), String> {
    let out = Command::new(exe)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} --help: {e}", exe.display()))?;
    let help = String::from_utf8_lossy(&out.stdout);
    if help.contains(PROXY_TLS_CERT_FLAG) {
        Ok(())
    } else {
        Err(format!(
            "{} does not take {PROXY_TLS_CERT_FLAG} (its --help lists no such flag): this build of shardline-proxy has no TLS termination",
            exe.display()
        ))
    }
}

/// The arguments of a TLS-terminating shardline-proxy (quick start: `--listen
/// ADDR --backend UPSTREAM --tls-cert FILE --tls-key FILE`), before the shard
/// flags of [`shardline_flags`]. The quick start keeps shardline-proxy's default
/// upstream pool (64 idle connections per backend).
pub fn shardline_proxy_tls_args(
    listen: SocketAddr,
    upstream: SocketAddr,
    tls: &TlsFiles,
) -> Vec<String> {
    vec![
        "--listen".into(),
        listen.to_string(),
        "--backend".into(),
        upstream.to_string(),
        PROXY_TLS_CERT_FLAG.into(),
        tls.cert.display().to_string(),
        "--tls-key".into(),
        tls.key.display().to_string(),
    ]
}

/// Starts shardline-proxy (`exe`) terminating TLS with `tls` on a free loopback
/// port in front of `upstream` ([`shardline_proxy_tls_args`]), on `io` with
/// `shards` shards as [`start_shardline_proxy`] does. Ready when a TCP connection
/// succeeds.
pub fn start_shardline_proxy_tls(
    exe: &Path,
    io: Io,
    upstream: SocketAddr,
    shards: usize,
    cpus: &[usize],
    tls: &TlsFiles,
) -> anyhow::Result<ServerProc> {
    let name = format!("shardline-proxy-{io}");
    let port = free_port().context("finding a free port")?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cmd = Command::new(exe);
    cmd.args(shardline_proxy_tls_args(addr, upstream, tls));
    shardline_flags(&mut cmd, io, shards, cpus);
    cmd.env("RUST_LOG", "warn").stderr(Stdio::inherit());
    pin_command(&mut cmd, cpus)?;
    ServerProc::spawn(&name, cmd, addr, Ready::Connect, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls_files() -> TlsFiles {
        TlsFiles {
            cert: "/tmp/t/cert.pem".into(),
            key: "/tmp/t/key.pem".into(),
            combined: "/tmp/t/cert+key.pem".into(),
        }
    }

    #[test]
    fn tls_configs_terminate_tls13_only_with_the_runs_certificate() {
        let up: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        let role = NginxRole::Proxy {
            upstream: up,
            keepalive: 64,
        };
        let c = nginx_tls_config(role, 8443, Path::new("/tmp/p"), 1, 64, &tls_files());
        for line in [
            "        listen 127.0.0.1:8443 ssl;",
            "        ssl_certificate /tmp/t/cert.pem;",
            "        ssl_certificate_key /tmp/t/key.pem;",
            "        ssl_protocols TLSv1.3;",
            "            proxy_pass http://backend;",
            "        keepalive 64;",
            "master_process off;",
        ] {
            assert!(c.lines().any(|l| l == line), "{line:?} missing in\n{c}");
        }
        assert_eq!(c.matches('{').count(), c.matches('}').count(), "{c}");
        let plain = nginx_config(role, 8443, Path::new("/tmp/p"), 1, 64);
        assert!(!plain.contains("ssl"), "{plain}");
        assert!(plain.lines().any(|l| l == "        listen 127.0.0.1:8443;"));

        let c = haproxy_tls_config(8443, up, 1, 64, &tls_files());
        for line in [
            "    nbthread 1",
            "    bind 127.0.0.1:8443 ssl crt /tmp/t/cert+key.pem ssl-min-ver TLSv1.3",
            "    server backend1 127.0.0.1:9001",
            "    http-reuse always",
        ] {
            assert!(c.lines().any(|l| l == line), "{line:?} missing in\n{c}");
        }
        assert!(haproxy_config(8443, up, 1, 64)
            .lines()
            .any(|l| l == "    bind 127.0.0.1:8443"));

        let args = shardline_proxy_tls_args("127.0.0.1:8443".parse().unwrap(), up, &tls_files());
        assert_eq!(
            args.join(" "),
            "--listen 127.0.0.1:8443 --backend 127.0.0.1:9001 --tls-cert /tmp/t/cert.pem --tls-key /tmp/t/key.pem"
        );
    }

    #[test]
    fn a_proxy_without_tls_flags_is_told_apart() {
        // `true --help` prints nothing: no --tls-cert.
        let err = proxy_supports_tls(Path::new("/bin/true")).unwrap_err();
        assert!(err.contains("--tls-cert"), "{err}");
        assert!(proxy_supports_tls(Path::new("/nonexistent/proxy")).is_err());
    }

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
    fn ngircd_config_turns_off_what_limits_a_benchmark() {
        let c = ngircd_config(6668, Path::new("/tmp/x/conf.d"), 0, 0);
        for line in [
            "Ports = 6668",
            "Listen = 127.0.0.1",
            "MaxPenaltyTime = 0",
            "MaxConnectionsIP = 0",
            "DNS = no",
            "Ident = no",
            "PAM = no",
            "IncludeDir = /tmp/x/conf.d",
        ] {
            assert!(c.lines().any(|l| l == line), "{line:?} missing in\n{c}");
        }
    }

    #[test]
    fn inspircd_config_turns_off_what_limits_a_benchmark() {
        let c = inspircd_config(6669, Path::new("/tmp/y"));
        for needle in [
            "<bind address=\"127.0.0.1\" port=\"6669\" type=\"clients\">",
            "fakelag=\"no\"",
            "threshold=\"1000000\"",
            "localmax=\"1000000\"",
            "resolvehostnames=\"no\"",
            "useident=\"no\"",
            "<pid file=\"/tmp/y/inspircd.pid\">",
            "target=\"/tmp/y/ircd.log\"",
        ] {
            assert!(c.contains(needle), "{needle:?} missing in\n{c}");
        }
        // Every tag closes on its own line's end (InspIRCd's config is tag
        // per tag; a stray quote would swallow the rest).
        assert_eq!(c.matches('"').count() % 2, 0, "{c}");
    }

    #[test]
    fn a_missing_chat_binary_is_reported_not_built_when_told_not_to() {
        let err = resolve_chat_exe(Path::new("/nonexistent/shardline-chat"), false).unwrap_err();
        assert!(err.contains("/nonexistent/shardline-chat"), "{err}");
    }

    #[test]
    fn missing_peers_are_skipped_not_fatal() {
        let dir = std::env::temp_dir().join(format!("no-peers-{}", std::process::id()));
        let (specs, notes) = resolve_peers(&PeerSelection::All, &dir);
        assert!(specs.is_empty());
        assert_eq!(notes.len(), 1 + PEERS.len(), "{notes:?}");
    }

    #[test]
    fn stat_ppid_and_descendants() {
        let stat = "1234 (my (odd) name) S 77 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 100 1000 50";
        assert_eq!(parse_stat_ppid(stat), Some(77));
        let me = std::process::id();
        assert!(proc_start_time(me).is_some());
        let mut child = Command::new("sleep").arg("5").spawn().expect("sleep runs");
        let found = descendants(me);
        assert!(found.iter().any(|&(p, _)| p == child.id()), "{found:?}");
        let own = proc_cpu_time(me).unwrap();
        assert!(proc_tree_cpu_time(me).unwrap() >= own);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn bounded_runs_are_killed_at_the_limit() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; sleep 5"]);
        let t = Instant::now();
        let out = run_bounded("sleeper", cmd, Duration::from_millis(300)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(3));
        assert_eq!(out.status, None);
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 3"]);
        let out = run_bounded("exit", cmd, Duration::from_secs(5)).unwrap();
        assert_eq!(out.status.and_then(|s| s.code()), Some(3));
    }

    #[test]
    fn nginx_backend_config() {
        let c = nginx_config(NginxRole::Backend, 9001, Path::new("/tmp/b"), 1, 64);
        for line in [
            "daemon off;",
            "master_process off;",
            "worker_processes 1;",
            "pid /tmp/b/nginx.pid;",
            "error_log /tmp/b/error.log warn;",
            "    access_log off;",
            "    keepalive_requests 1000000;",
            "        listen 127.0.0.1:9001;",
            "            return 200 \"Hello, world\\n\";",
        ] {
            assert!(c.lines().any(|l| l == line), "{line:?} missing in\n{c}");
        }
        assert!(!c.contains("proxy_pass"), "{c}");
        assert_eq!(BACKEND_BODY.len(), 13);
        // Braces balance.
        assert_eq!(c.matches('{').count(), c.matches('}').count(), "{c}");
        let c = nginx_config(NginxRole::Backend, 9001, Path::new("/tmp/b"), 2, 64);
        assert!(c.contains("master_process on;\nworker_processes 2;"), "{c}");
    }

    #[test]
    fn nginx_proxy_config_keeps_upstream_connections_alive() {
        let role = NginxRole::Proxy {
            upstream: "127.0.0.1:9001".parse().unwrap(),
            keepalive: 128,
        };
        let c = nginx_config(role, 8080, Path::new("/tmp/p"), 1, 128);
        for line in [
            "    upstream backend {",
            "        server 127.0.0.1:9001;",
            "        keepalive 128;",
            "        listen 127.0.0.1:8080;",
            "            proxy_pass http://backend;",
            "            proxy_http_version 1.1;",
            "            proxy_set_header Connection \"\";",
            "    access_log off;",
        ] {
            assert!(c.lines().any(|l| l == line), "{line:?} missing in\n{c}");
        }
        assert!(!c.contains("return 200"), "{c}");
        assert_eq!(c.matches('{').count(), c.matches('}').count(), "{c}");
    }

    #[test]
    fn haproxy_config_is_one_thread_http_with_reuse() {
        let c = haproxy_config(8080, "127.0.0.1:9001".parse().unwrap(), 1, 64);
        for line in [
            "    nbthread 1",
            "    mode http",
            "    option http-keep-alive",
            "    http-reuse always",
            "    timeout connect 5s",
            "    timeout client 60s",
            "    timeout server 60s",
            "    bind 127.0.0.1:8080",
            "    server backend1 127.0.0.1:9001",
        ] {
            assert!(c.lines().any(|l| l == line), "{line:?} missing in\n{c}");
        }
        assert!(!c.contains("log "), "no logging: {c}");
    }

    #[test]
    fn shardline_proxy_config_sizes_its_pool() {
        let up: SocketAddr = "127.0.0.1:9001".parse().unwrap();
        let c = shardline_proxy_config(8080, up, 256);
        for line in [
            "address = \"127.0.0.1:8080\"",
            "mode = \"http\"",
            "backends = [{ address = \"127.0.0.1:9001\" }]",
            "max_idle_per_backend = 256",
        ] {
            assert!(c.lines().any(|l| l == line), "{line:?} missing in\n{c}");
        }
        assert!(shardline_proxy_config(8080, up, 8).contains("max_idle_per_backend = 64"));
    }
}
