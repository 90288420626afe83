//! The handover over a Unix socket: the old process's side ([`UpgradeSocket`])
//! and the new one's ([`Takeover`]). Protocol in the [module doc](super).

use std::{
    net::SocketAddr,
    os::{
        fd::{AsRawFd, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use tracing::{info, warn};

use super::{msg, InheritedListeners};
use crate::{error::Error, server::ShutdownHandle};

const MAGIC: &str = "shardline-upgrade";
const VERSION: u32 = 1;
/// How often the control socket's thread looks whether it should stop.
const POLL: Duration = Duration::from_millis(200);

/// Timeouts of a handover.
#[derive(Debug, Clone, Copy)]
pub struct UpgradeOptions {
    /// How long the old process waits for the new one to start serving (after
    /// sending it the sockets) before it gives up and keeps serving. Default 60 s.
    pub ready_timeout: Duration,
    /// How long either side waits for any other message. Default 10 s.
    pub io_timeout: Duration,
    /// How long the new process waits for the old one to let go of its
    /// application state ([`Takeover::request_state`]: flushing and closing
    /// a store may take a while). Default 60 s.
    pub state_timeout: Duration,
}

impl Default for UpgradeOptions {
    fn default() -> UpgradeOptions {
        UpgradeOptions {
            ready_timeout: Duration::from_secs(60),
            io_timeout: Duration::from_secs(10),
            state_timeout: Duration::from_secs(60),
        }
    }
}

/// Application state only one process may hold at a time — a locked data
/// directory, say — that the old process lets go of when its successor asks
/// ([`Takeover::request_state`]), before the successor starts serving. See
/// the [module doc](super).
pub trait HandoverState: Send {
    /// The new process asks for the state: let go of it (write out, close,
    /// unlock) and return once it may take it. `Err(why)` refuses the upgrade
    /// — the new process is told why and this one keeps serving — and must
    /// leave the state held, as it was.
    fn release(&mut self) -> Result<(), String>;

    /// The upgrade failed after [`release`](HandoverState::release) succeeded
    /// (the new process quit or timed out before serving): take the state
    /// back and go on as before.
    fn reclaim(&mut self);
}

/// What the old process learns when a handover completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandedOver {
    /// The process that took the listeners.
    pub new_pid: u32,
    /// Every shard (and the handoff acceptor) stopped accepting in time.
    pub all_released: bool,
}

fn other(e: impl std::fmt::Display) -> Error {
    Error::Upgrade(e.to_string())
}

/// Binds a control socket at `path`: under a temporary name, then renamed over
/// `path` (atomic: a process connecting meanwhile reaches the old one or this
/// one, never nothing). Returns the socket and the file's identity.
fn bind_control(path: &Path) -> Result<(OwnedFd, (u64, u64)), Error> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let fd = msg::listen_at(&tmp).map_err(|e| {
        other(format!(
            "cannot serve the upgrade socket {}: {e}",
            tmp.display()
        ))
    })?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        other(format!(
            "cannot move the upgrade socket to {}: {e}",
            path.display()
        ))
    })?;
    let meta = std::fs::metadata(path).map_err(|e| other(format!("{}: {e}", path.display())))?;
    Ok((fd, (meta.dev(), meta.ino())))
}

/// The old process's side: serves the control socket at a path until one
/// handover completes (or it is dropped), on its own thread.
#[derive(Debug)]
pub struct UpgradeSocket {
    path: PathBuf,
    id: (u64, u64),
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UpgradeSocket {
    /// Serves the control socket at `path` (replacing a file there: the previous
    /// process's socket after a handover) for the server `server` stops. When a
    /// new process has taken the listeners and serves, every shard of this one
    /// stops accepting ([`ShutdownHandle::release_listeners`]), then
    /// `on_handover` runs on the control socket's thread: the place to start
    /// draining (typically `server.shutdown()`, or a deadline for long-lived
    /// sessions). A failed attempt (the new process quit, timed out, spoke
    /// another version) is logged and this process keeps serving and listening
    /// for the next attempt.
    pub fn serve(
        path: impl AsRef<Path>,
        server: ShutdownHandle,
        options: UpgradeOptions,
        on_handover: impl FnOnce(HandedOver) + Send + 'static,
    ) -> Result<UpgradeSocket, Error> {
        UpgradeSocket::serve_with_state(path, server, options, None, on_handover)
    }

    /// Like [`serve`](UpgradeSocket::serve), with application state the new
    /// process may ask for ([`Takeover::request_state`]); without it (`None`)
    /// such a request is refused.
    pub fn serve_with_state(
        path: impl AsRef<Path>,
        server: ShutdownHandle,
        options: UpgradeOptions,
        state: Option<Box<dyn HandoverState>>,
        on_handover: impl FnOnce(HandedOver) + Send + 'static,
    ) -> Result<UpgradeSocket, Error> {
        let path = path.as_ref().to_path_buf();
        let (fd, id) = bind_control(&path)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let shown = path.clone();
        let thread = std::thread::Builder::new()
            .name("shardline-upgrade".into())
            .spawn(move || {
                let mut state = state;
                serve_loop(
                    &fd,
                    &shown,
                    &server,
                    options,
                    &mut state,
                    &flag,
                    on_handover,
                )
            })
            .map_err(|e| other(format!("cannot start the upgrade thread: {e}")))?;
        info!(path = %path.display(), "serving upgrades");
        Ok(UpgradeSocket {
            path,
            id,
            stop,
            thread: Some(thread),
        })
    }

    /// The control socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UpgradeSocket {
    /// Stops serving (within a fraction of a second) and removes the socket file
    /// if it is still this process's (not a newer process's, renamed over it).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Ok(meta) = std::fs::metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

fn serve_loop(
    listener: &OwnedFd,
    path: &Path,
    server: &ShutdownHandle,
    options: UpgradeOptions,
    state: &mut Option<Box<dyn HandoverState>>,
    stop: &AtomicBool,
    on_handover: impl FnOnce(HandedOver),
) {
    // SAFETY: geteuid never fails.
    let me = unsafe { libc::geteuid() };
    while !stop.load(Ordering::SeqCst) && !server.is_requested() {
        match msg::wait_readable(listener.as_raw_fd(), POLL) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(e) => {
                warn!(error = %e, "upgrade socket: poll failed; no longer serving upgrades");
                return;
            }
        }
        let (conn, uid) = match msg::accept_one(listener.as_raw_fd()) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "upgrade socket: accept failed");
                std::thread::sleep(POLL);
                continue;
            }
        };
        if uid != me && uid != 0 {
            warn!(
                uid,
                path = %path.display(),
                "upgrade socket: refusing a process of another user"
            );
            let _ = msg::send(conn.as_raw_fd(), "error not your process", None);
            continue;
        }
        let mut released = false;
        let result = hand_over(&conn, server, options, state, &mut released);
        if result.is_err() && released {
            if let Some(state) = state.as_mut() {
                info!("upgrade failed after the state was handed over: taking it back");
                state.reclaim();
            }
        }
        match result {
            Ok(done) => {
                info!(
                    new_pid = done.new_pid,
                    all_released = done.all_released,
                    "listeners handed over; this process no longer accepts"
                );
                on_handover(done);
                return;
            }
            Err(e) => warn!(error = %e, "upgrade aborted; still serving"),
        }
    }
}

/// One handover on `conn`; `Err` leaves this process serving as before (unless
/// the release had begun, which only happens after the new process said ready;
/// `released` says whether the application state was let go of, for the caller
/// to reclaim).
fn hand_over(
    conn: &OwnedFd,
    server: &ShutdownHandle,
    options: UpgradeOptions,
    state: &mut Option<Box<dyn HandoverState>>,
    released: &mut bool,
) -> Result<HandedOver, Error> {
    let fd = conn.as_raw_fd();
    let refuse = |why: String| {
        let _ = msg::send(fd, &format!("error {why}"), None);
        other(why)
    };
    let (hello, _) = msg::recv(fd, options.io_timeout)
        .map_err(other)?
        .ok_or_else(|| other("the new process hung up before saying hello"))?;
    let new_pid = parse_header(&hello, "hello").map_err(&refuse)?;
    let new_pid = field(&new_pid, "pid")
        .and_then(|p| p.parse::<u32>().ok())
        .ok_or_else(|| refuse(format!("bad hello {hello:?}")))?;
    let sockets = server.handover_sockets();
    if sockets.is_empty() {
        return Err(refuse("this server is shutting down".into()));
    }
    info!(
        new_pid,
        sockets = sockets.len(),
        "upgrade: sending listening sockets"
    );
    msg::send(
        fd,
        &format!(
            "{MAGIC} {VERSION} listeners pid={} count={}",
            std::process::id(),
            sockets.len()
        ),
        None,
    )
    .map_err(other)?;
    for (index, addr, socket) in &sockets {
        msg::send(
            fd,
            &format!("listener {index} {addr}"),
            Some(socket.as_raw_fd()),
        )
        .map_err(other)?;
    }
    drop(sockets);
    let ready = loop {
        let (text, _) = msg::recv(fd, options.ready_timeout)
            .map_err(|e| other(format!("waiting for the new process to serve: {e}")))?
            .ok_or_else(|| {
                other(format!(
                    "the new process (pid {new_pid}) quit before serving"
                ))
            })?;
        if text.trim() != "release-state" || *released {
            break text;
        }
        let Some(s) = state.as_mut() else {
            return Err(refuse(
                "this process has no state to hand over (an older version?)".into(),
            ));
        };
        info!(
            new_pid,
            "upgrade: the new process asks for the application state"
        );
        s.release()
            .map_err(|why| refuse(format!("cannot hand the state over: {why}")))?;
        *released = true;
        msg::send(fd, "state-released", None).map_err(other)?;
    };
    if ready.split_whitespace().next() != Some("ready") {
        return Err(other(format!("the new process said {ready:?}, not ready")));
    }
    server.release_listeners();
    let all_released = server.wait_released(options.io_timeout);
    let _ = msg::send(
        fd,
        if all_released {
            "released all"
        } else {
            "released partly"
        },
        None,
    );
    Ok(HandedOver {
        new_pid,
        all_released,
    })
}

/// Checks `MAGIC VERSION kind …`; returns the rest.
fn parse_header(text: &str, kind: &str) -> Result<String, String> {
    if let Some(why) = text.strip_prefix("error ") {
        return Err(format!("the other process refused: {why}"));
    }
    let mut words = text.split_whitespace();
    if words.next() != Some(MAGIC) {
        return Err(format!("not a shardline upgrade message: {text:?}"));
    }
    match words.next().and_then(|v| v.parse::<u32>().ok()) {
        Some(VERSION) => {}
        Some(v) => {
            return Err(format!(
                "upgrade protocol version {v}, this binary speaks {VERSION}"
            ))
        }
        None => return Err(format!("no protocol version in {text:?}")),
    }
    if words.next() != Some(kind) {
        return Err(format!("expected {kind}, got {text:?}"));
    }
    Ok(words.collect::<Vec<_>>().join(" "))
}

/// `key=value` among space-separated words.
fn field<'a>(words: &'a str, key: &str) -> Option<&'a str> {
    words
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// The new process's side: connects to the old process's control socket and
/// receives its listening sockets; [`finish`](Takeover::finish) once serving.
/// Dropped without `finish` (the new process could not start), the old
/// process keeps serving.
#[derive(Debug)]
pub struct Takeover {
    conn: OwnedFd,
    old_pid: u32,
    listeners: Option<InheritedListeners>,
    options: UpgradeOptions,
}

impl Takeover {
    /// Connects to the control socket at `path`, introduces this process and
    /// receives every listening socket of the old one (checked: listening TCP
    /// sockets bound to the addresses it names).
    pub fn connect(path: impl AsRef<Path>, options: UpgradeOptions) -> Result<Takeover, Error> {
        let path = path.as_ref();
        let conn = msg::connect_to(path).map_err(|e| {
            other(format!(
                "cannot reach the running process at {}: {e}",
                path.display()
            ))
        })?;
        let fd = conn.as_raw_fd();
        msg::send(
            fd,
            &format!("{MAGIC} {VERSION} hello pid={}", std::process::id()),
            None,
        )
        .map_err(other)?;
        let (head, _) = msg::recv(fd, options.io_timeout)
            .map_err(other)?
            .ok_or_else(|| other("the running process hung up"))?;
        let rest = parse_header(&head, "listeners").map_err(other)?;
        let old_pid = field(&rest, "pid").and_then(|p| p.parse::<u32>().ok());
        let count = field(&rest, "count").and_then(|c| c.parse::<usize>().ok());
        let (Some(old_pid), Some(count)) = (old_pid, count) else {
            return Err(other(format!("bad listeners message {head:?}")));
        };
        let mut listeners = InheritedListeners::new(format!("pid {old_pid}"));
        for _ in 0..count {
            let (text, mut fds) = msg::recv(fd, options.io_timeout)
                .map_err(other)?
                .ok_or_else(|| other("the running process hung up while sending sockets"))?;
            let mut words = text.split_whitespace();
            let addr = match (words.next(), words.next(), words.next()) {
                (Some("listener"), Some(_index), Some(a)) => a.parse::<SocketAddr>().ok(),
                _ => None,
            };
            let (Some(addr), 1) = (addr, fds.len()) else {
                return Err(other(format!(
                    "bad listener message {text:?} with {} descriptors",
                    fds.len()
                )));
            };
            let Some(socket) = fds.pop() else {
                return Err(other("a listener message without its socket"));
            };
            listeners.push(socket, Some(addr))?;
        }
        info!(old_pid, sockets = count, addrs = ?listeners.addrs(), "upgrade: received listening sockets");
        Ok(Takeover {
            conn,
            old_pid,
            listeners: Some(listeners),
            options,
        })
    }

    /// The old process's pid.
    pub fn old_pid(&self) -> u32 {
        self.old_pid
    }

    /// Asks the old process for its application state ([`HandoverState`]:
    /// a data directory's lock, say) and waits until it has let go of it
    /// ([`UpgradeOptions::state_timeout`]). Call it before opening that state,
    /// and before [`finish`](Takeover::finish). If this process fails
    /// afterwards (drops the takeover without `finish`), the old one takes the
    /// state back and keeps serving.
    pub fn request_state(&mut self) -> Result<(), Error> {
        let fd = self.conn.as_raw_fd();
        msg::send(fd, "release-state", None).map_err(other)?;
        match msg::recv(fd, self.options.state_timeout) {
            Ok(Some((text, _))) if text.trim() == "state-released" => {
                info!(
                    old_pid = self.old_pid,
                    "upgrade: the old process let go of its state"
                );
                Ok(())
            }
            Ok(Some((text, _))) => Err(other(match text.strip_prefix("error ") {
                Some(why) => format!("the old process (pid {}) refused: {why}", self.old_pid),
                None => format!("the old process said {text:?}, not state-released"),
            })),
            Ok(None) => Err(other(format!(
                "the old process (pid {}) hung up instead of handing its state over",
                self.old_pid
            ))),
            Err(e) => Err(other(format!(
                "the old process (pid {}) did not hand its state over: {e}",
                self.old_pid
            ))),
        }
    }

    /// The sockets received, for
    /// [`ServerBuilder::inherit_listeners`](crate::ServerBuilder::inherit_listeners)
    /// (once; `None` after).
    pub fn take_listeners(&mut self) -> Option<InheritedListeners> {
        self.listeners.take()
    }

    /// Tells the old process this one serves (call it once every shard runs:
    /// in `Server::run_with`'s setup, or after `Server::start`) and waits until it
    /// stopped accepting. `Ok(true)`: every part of it stopped accepting;
    /// `Ok(false)`: it answered late or partly (it still stops; this process
    /// serves either way).
    pub fn finish(self) -> Result<bool, Error> {
        let fd = self.conn.as_raw_fd();
        msg::send(fd, &format!("ready pid={}", std::process::id()), None).map_err(other)?;
        match msg::recv(fd, self.options.io_timeout) {
            Ok(Some((text, _))) => {
                let all = text.trim() == "released all";
                info!(old_pid = self.old_pid, %text, "upgrade: the old process stopped accepting");
                Ok(all)
            }
            Ok(None) => Err(other(format!(
                "the old process (pid {}) hung up before confirming",
                self.old_pid
            ))),
            Err(e) => Err(other(format!(
                "no confirmation from the old process (pid {}): {e}",
                self.old_pid
            ))),
        }
    }
}
