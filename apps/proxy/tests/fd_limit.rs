//! As many proxied connections as RLIMIT_NOFILE allows, all held open at once
//! and every one served. The test client, the proxy and the backend share this
//! process, so a proxied connection costs four fds here (client socket, the
//! proxy's accepted socket, the proxy's upstream socket, the backend's socket):
//! N = (soft limit − fds already open − a margin) / 4.
//!
//! - L4: every client sends a unique token; the backend echoes none until it
//!   has a token from N connections (so N upstream connections are open at
//!   once), then echoes each on its own connection; every client reads back
//!   its own token.
//! - HTTP: every client sends a request for a unique path; the backend answers
//!   none until it has N requests, then answers each with its path; every
//!   client gets its own response.
//!
//! Client and backend are single-threaded mio loops (thousands of connections);
//! every run ends by itself at a deadline with how many were served. Both I/O
//! backends forced, two shards.

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use common::{wait_until, TestProxy};
use mio::{
    net::{TcpListener, TcpStream},
    Events, Interest, Poll, Token, Waker,
};
use shardline::Io;

/// Fds one proxied connection costs in this process.
const FDS_PER_CONNECTION: usize = 4;
/// Fds kept free for what opens after counting (the proxy's listeners and
/// rings are already counted; this covers the odd file or pipe the test
/// harness, tracing or the runtime may open).
const MARGIN: usize = 100;
const SHARDS: usize = 2;
/// The proxy's default `[limits] max_idle_per_backend`.
const MAX_IDLE_PER_BACKEND: usize = 64;
/// A run that has not served every connection by then fails.
const DEADLINE: Duration = Duration::from_secs(60);
/// Connects in flight at once: the proxy's accept backlog (1024 per listener)
/// is not overrun, so no SYN waits for a retransmission.
const CONNECTING: usize = 256;

/// Each test uses nearly every fd the process may open: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serialize() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn soft_nofile_limit() -> usize {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid, writable rlimit for the call to fill.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    assert_eq!(rc, 0, "getrlimit: {}", std::io::Error::last_os_error());
    // Unlimited would make N unbounded: cap it where the test still runs fast.
    usize::try_from(r.rlim_cur)
        .unwrap_or(usize::MAX)
        .min(1 << 20)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Tcp,
    Http,
}

/// The unique token client `i` sends; the backend puts it in its answer.
fn token(i: usize) -> String {
    format!("/conn-{i:06}")
}

fn request(mode: Mode, i: usize) -> Vec<u8> {
    match mode {
        Mode::Tcp => format!("{}\n", token(i)).into_bytes(),
        Mode::Http => format!("GET {} HTTP/1.1\r\nHost: fd-limit\r\n\r\n", token(i)).into_bytes(),
    }
}

fn answer(mode: Mode, token: &str) -> Vec<u8> {
    match mode {
        Mode::Tcp => format!("{token}\n").into_bytes(),
        Mode::Http => format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{token}",
            token.len()
        )
        .into_bytes(),
    }
}

/// What the backend has seen, readable from the test thread.
#[derive(Debug, Default)]
struct BackendCounts {
    /// How many connections must have delivered before it answers (set once N
    /// is known, before any client connects).
    target: AtomicUsize,
    accepted: AtomicUsize,
    open: AtomicUsize,
    /// Connections whose token (L4) or request (HTTP) is complete.
    received: AtomicUsize,
    /// Connections open when it answered (0 until then).
    open_at_release: AtomicUsize,
    /// Why its loop stopped early, if it did.
    failed: Mutex<Option<String>>,
}

/// A single-threaded mio backend that answers nothing until `target` connections
/// each delivered their token or request, then answers every one.
struct HoldingBackend {
    addr: SocketAddr,
    counts: Arc<BackendCounts>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<Result<(), String>>>,
}

const LISTENER: Token = Token(usize::MAX);
const WAKER: Token = Token(usize::MAX - 1);

struct BackendConn {
    stream: TcpStream,
    input: Vec<u8>,
    /// The token it sent, once complete.
    token: Option<String>,
    out: Vec<u8>,
    written: usize,
}

impl HoldingBackend {
    fn start(mode: Mode) -> HoldingBackend {
        let mut listener =
            TcpListener::bind("127.0.0.1:0".parse().expect("literal")).expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let poll = Poll::new().expect("poll");
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .expect("register");
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).expect("waker"));
        let counts = Arc::new(BackendCounts {
            target: AtomicUsize::new(usize::MAX),
            ..BackendCounts::default()
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (counts.clone(), stop.clone());
        let thread = thread::Builder::new()
            .name("fd-limit-backend".into())
            .spawn(move || {
                let r = run_backend(mode, poll, listener, &c, &s);
                if let Err(e) = &r {
                    *c.failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.clone());
                }
                r
            })
            .expect("spawn backend");
        HoldingBackend {
            addr,
            counts,
            stop,
            waker,
            thread: Some(thread),
        }
    }

    /// Stops the loop and closes every connection; its error, if it had one.
    fn stop(&mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| "backend panicked".to_string())?,
            None => Ok(()),
        }
    }
}

impl Drop for HoldingBackend {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn run_backend(
    mode: Mode,
    mut poll: Poll,
    listener: TcpListener,
    counts: &BackendCounts,
    stop: &AtomicBool,
) -> Result<(), String> {
    let mut conns: slab::Slab<BackendConn> = slab::Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut released = false;
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            r => r.map_err(|e| format!("backend poll: {e}"))?,
        }
        let mut to_write = Vec::new();
        for ev in events.iter() {
            match ev.token() {
                WAKER => {}
                LISTENER => loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let entry = conns.vacant_entry();
                            poll.registry()
                                .register(
                                    &mut stream,
                                    Token(entry.key()),
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .map_err(|e| format!("backend register: {e}"))?;
                            entry.insert(BackendConn {
                                stream,
                                input: Vec::new(),
                                token: None,
                                out: Vec::new(),
                                written: 0,
                            });
                            counts.accepted.fetch_add(1, Ordering::SeqCst);
                            counts.open.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("backend accept: {e}")),
                    }
                },
                Token(k) => {
                    let Some(c) = conns.get_mut(k) else { continue };
                    let mut closed = false;
                    if ev.is_readable() || ev.is_read_closed() {
                        loop {
                            match c.stream.read(&mut buf) {
                                Ok(0) => {
                                    closed = true;
                                    break;
                                }
                                Ok(m) => c.input.extend_from_slice(&buf[..m]),
                                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                                Err(_) => {
                                    closed = true;
                                    break;
                                }
                            }
                        }
                        if c.token.is_none() {
                            if let Some(t) = parse_token(mode, &c.input)? {
                                c.token = Some(t);
                                counts.received.fetch_add(1, Ordering::SeqCst);
                                if released {
                                    to_write.push(k);
                                }
                            }
                        }
                    }
                    if closed {
                        let mut c = conns.remove(k);
                        let _ = poll.registry().deregister(&mut c.stream);
                        counts.open.fetch_sub(1, Ordering::SeqCst);
                    } else if ev.is_writable() && c.written < c.out.len() {
                        to_write.push(k);
                    }
                }
            }
        }
        if !released
            && counts.received.load(Ordering::SeqCst) >= counts.target.load(Ordering::SeqCst)
        {
            released = true;
            counts.open_at_release.store(conns.len(), Ordering::SeqCst);
            to_write.extend(
                conns
                    .iter()
                    .filter(|(_, c)| c.token.is_some())
                    .map(|(k, _)| k),
            );
        }
        for k in to_write {
            let Some(c) = conns.get_mut(k) else { continue };
            if c.out.is_empty() {
                if let Some(t) = &c.token {
                    c.out = answer(mode, t);
                }
            }
            while c.written < c.out.len() {
                match c.stream.write(&c.out[c.written..]) {
                    Ok(m) => c.written += m,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break, // The peer went away; its close comes as an event.
                }
            }
        }
    }
    Ok(())
}

/// The token in a complete L4 line or HTTP request head, if `input` holds one.
fn parse_token(mode: Mode, input: &[u8]) -> Result<Option<String>, String> {
    let text = String::from_utf8_lossy(input);
    match mode {
        Mode::Tcp => Ok(text.split_once('\n').map(|(t, _)| t.to_string())),
        Mode::Http => {
            if !text.contains("\r\n\r\n") {
                return Ok(None);
            }
            let mut fields = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut fields);
            req.parse(input)
                .map_err(|e| format!("backend got a bad request: {e}: {text:?}"))?;
            Ok(req.path.map(str::to_string))
        }
    }
}

/// One test client connection.
struct Client {
    stream: TcpStream,
    connected: bool,
    request: Vec<u8>,
    written: usize,
    reply: Vec<u8>,
    served: bool,
}

/// Whether `reply` is complete: `Ok(Some(token))` when it is.
fn parse_reply(mode: Mode, reply: &[u8]) -> Result<Option<String>, String> {
    let text = String::from_utf8_lossy(reply);
    match mode {
        Mode::Tcp => Ok(text.split_once('\n').map(|(t, _)| t.to_string())),
        Mode::Http => {
            let Some(end) = text.find("\r\n\r\n").map(|i| i + 4) else {
                return Ok(None);
            };
            let mut fields = [httparse::EMPTY_HEADER; 16];
            let mut resp = httparse::Response::new(&mut fields);
            resp.parse(reply)
                .map_err(|e| format!("bad response head: {e}: {text:?}"))?;
            if resp.code != Some(200) {
                return Err(format!("status {:?}: {text:?}", resp.code));
            }
            let len: usize = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .ok_or_else(|| format!("no Content-Length: {text:?}"))?;
            if reply.len() < end + len {
                return Ok(None);
            }
            Ok(Some(
                String::from_utf8_lossy(&reply[end..end + len]).to_string(),
            ))
        }
    }
}

/// Progress of the clients, for the failure message.
#[derive(Debug, Default)]
struct ClientCounts {
    opened: usize,
    connected: usize,
    sent: usize,
    served: usize,
}

/// Opens `n` connections to `addr` (at most [`CONNECTING`] connects in flight),
/// sends each its request and reads every reply, holding every connection open
/// to the end. Returns the clients (still open) once all are served.
fn run_clients(
    mode: Mode,
    n: usize,
    addr: SocketAddr,
    backend_failed: impl Fn() -> Option<String>,
    describe: impl Fn(&ClientCounts) -> String,
) -> Vec<Client> {
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(1024);
    let mut clients: Vec<Client> = Vec::with_capacity(n);
    let mut counts = ClientCounts::default();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + DEADLINE;
    let fail = |counts: &ClientCounts, why: String| -> ! {
        panic!(
            "{why}; served {} of {n} ({})",
            counts.served,
            describe(counts)
        )
    };
    while counts.served < n {
        if Instant::now() >= deadline {
            fail(&counts, format!("deadline of {DEADLINE:?} passed"));
        }
        if let Some(e) = backend_failed() {
            fail(&counts, format!("the backend stopped: {e}"));
        }
        while clients.len() < n && counts.opened - counts.connected < CONNECTING {
            let i = clients.len();
            let mut stream = match TcpStream::connect(addr) {
                Ok(s) => s,
                Err(e) => fail(&counts, format!("client {i}: connect: {e}")),
            };
            poll.registry()
                .register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .expect("register client");
            clients.push(Client {
                stream,
                connected: false,
                request: request(mode, i),
                written: 0,
                reply: Vec::new(),
                served: false,
            });
            counts.opened += 1;
        }
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            r => r.expect("client poll"),
        };
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut clients[i];
            if !c.connected && (ev.is_writable() || ev.is_error()) {
                if let Ok(Some(e)) | Err(e) = c.stream.take_error() {
                    fail(&counts, format!("client {i}: connect failed: {e}"));
                }
                match c.stream.peer_addr() {
                    Ok(_) => {
                        c.connected = true;
                        counts.connected += 1;
                    }
                    Err(e) if e.kind() == ErrorKind::NotConnected => continue,
                    Err(e) => fail(&counts, format!("client {i}: connect failed: {e}")),
                }
            }
            if c.connected && c.written < c.request.len() {
                loop {
                    match c.stream.write(&c.request[c.written..]) {
                        Ok(m) => c.written += m,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => fail(&counts, format!("client {i}: write: {e}")),
                    }
                    if c.written == c.request.len() {
                        counts.sent += 1;
                        break;
                    }
                }
            }
            if c.connected && (ev.is_readable() || ev.is_read_closed()) {
                loop {
                    match c.stream.read(&mut buf) {
                        Ok(0) => fail(
                            &counts,
                            format!(
                                "client {i}: the proxy closed the connection after {:?}",
                                String::from_utf8_lossy(&c.reply)
                            ),
                        ),
                        Ok(m) => c.reply.extend_from_slice(&buf[..m]),
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(e) => fail(&counts, format!("client {i}: read: {e}")),
                    }
                }
                if !c.served {
                    match parse_reply(mode, &c.reply) {
                        Ok(None) => {}
                        Ok(Some(t)) if t == token(i) => {
                            c.served = true;
                            counts.served += 1;
                        }
                        Ok(Some(t)) => fail(
                            &counts,
                            format!("client {i} got {t:?}, not its own {:?}", token(i)),
                        ),
                        Err(e) => fail(&counts, format!("client {i}: {e}")),
                    }
                }
            }
        }
    }
    clients
}

fn config(mode: Mode, backend: SocketAddr) -> String {
    let mode = match mode {
        Mode::Tcp => "tcp",
        Mode::Http => "http",
    };
    // Long timeouts: the backend answers only once every connection is open.
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"{mode}\"\npool = \"p\"\n\
         [pool.p]\nbackends = [{{ address = \"{backend}\" }}]\n\
         [timeouts]\nconnect_ms = 30000\nbackend_response_ms = 120000\n\
         client_header_ms = 120000\n"
    )
}

fn held_and_served(io: Io, mode: Mode) {
    let label = format!("{mode:?} {io} x{SHARDS}");
    let limit = soft_nofile_limit();
    let fds_before = open_fds();
    let mut backend = HoldingBackend::start(mode);
    let proxy = TestProxy::start(io, SHARDS, &config(mode, backend.addr));
    // Counted with the backend's listener and poll, and the proxy's
    // listeners, rings and doorbells open: what is left is for connections.
    let in_use = open_fds();
    let n = limit.saturating_sub(in_use + MARGIN) / FDS_PER_CONNECTION;
    assert!(
        n > 0,
        "{label}: no fds left under {limit} with {in_use} open"
    );
    backend.counts.target.store(n, Ordering::SeqCst);
    println!(
        "{label}: RLIMIT_NOFILE {limit}, {in_use} fds open before the connections, \
         N = {n} ({} fds with all N open)",
        in_use + n * FDS_PER_CONNECTION
    );
    let counts = backend.counts.clone();
    let failed = || {
        counts
            .failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    };
    let clients = run_clients(mode, n, proxy.addr, failed, |c| {
        format!(
            "{label}: clients opened {}, connected {}, sent {}; backend accepted {}, \
             open {}, received {}; proxy live connections {}",
            c.opened,
            c.connected,
            c.sent,
            counts.accepted.load(Ordering::SeqCst),
            counts.open.load(Ordering::SeqCst),
            counts.received.load(Ordering::SeqCst),
            proxy.metrics().total().conns_live
        )
    });
    // Every client was served while all N were open: the backend answered only
    // once N connections had each delivered a request, and nothing closed.
    assert_eq!(
        counts.open_at_release.load(Ordering::SeqCst),
        n,
        "{label}: upstream connections open when the backend answered"
    );
    assert_eq!(clients.len(), n);
    let live = || proxy.metrics().total().conns_live as usize;
    match mode {
        // Every session still relays: a client and an upstream connection each.
        Mode::Tcp => assert_eq!(live(), 2 * n, "{label}: the proxy's live connections"),
        // Every client is still open; its upstream went back to the pool,
        // which keeps at most `max_idle_per_backend` per shard and closes the rest.
        Mode::Http => {
            let most = n + MAX_IDLE_PER_BACKEND * SHARDS;
            assert!(
                wait_until(Duration::from_secs(10), || live() <= most),
                "{label}: {} live proxy connections, expected at most {most}",
                live()
            );
            assert!(
                live() >= n,
                "{label}: {} live proxy connections for {n} clients",
                live()
            );
        }
    }
    println!("{label}: all {n} connections held and served");
    drop(clients);
    backend
        .stop()
        .unwrap_or_else(|e| panic!("{label}: backend: {e}"));
    drop(backend);
    proxy
        .shutdown()
        .unwrap_or_else(|e| panic!("{label}: shutdown: {e}"));
    // Every fd comes back.
    assert!(
        wait_until(Duration::from_secs(10), || open_fds() <= fds_before + 2),
        "{label}: {} fds open after the run, {fds_before} before",
        open_fds()
    );
}

fn l4_connections_up_to_the_fd_limit_are_held_and_served(io: Io) {
    let _one = serialize();
    held_and_served(io, Mode::Tcp);
}

fn http_connections_up_to_the_fd_limit_are_held_and_served(io: Io) {
    let _one = serialize();
    held_and_served(io, Mode::Http);
}

shardline::per_backend! {
    l4_connections_up_to_the_fd_limit_are_held_and_served => l4_connections_up_to_the_fd_limit_are_held_and_served;
    http_connections_up_to_the_fd_limit_are_held_and_served => http_connections_up_to_the_fd_limit_are_held_and_served;
}
