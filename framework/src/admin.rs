//! The admin endpoint: a small HTTP/1.1 listener, on its own thread, that serves
//! Prometheus metrics (`GET /metrics`) and a liveness check (`GET /healthz`).
//!
//! Every Shardline binary gets the same endpoint: give an [`AdminConfig`] to
//! [`ServerBuilder::admin`](crate::ServerBuilder::admin) and the server starts it
//! before its shards and stops it once they have all stopped; or start one alone
//! with [`AdminConfig::start`]. `/metrics` shows every shard's framework counters
//! ([`Metrics::write_prometheus`]: connections, bytes, loop turns, mailboxes, ...,
//! labelled `shard`) followed by whatever the application's render callback writes
//! through a [`PromWriter`], which does the exposition format (`# HELP`, `# TYPE`,
//! grouping, label escaping) so applications never hand-format it.
//!
//! ```no_run
//! use shardline::{AdminConfig, Server};
//! # use shardline::{ConnId, Ctx, Handler};
//! # struct Echo;
//! # impl Handler for Echo {
//! #     type Msg = ();
//! #     fn on_data(&mut self, _: &mut Ctx<'_>, _: ConnId, data: &[u8]) -> usize {
//! #         data.len()
//! #     }
//! # }
//! let admin = AdminConfig::new("127.0.0.1:9100".parse().unwrap())
//!     .render(|w| w.gauge("myapp_rooms", "Rooms open now.", &[], 3u64));
//! Server::builder()
//!     .listen("127.0.0.1:7000".parse().unwrap())
//!     .admin(admin)
//!     .build(|_shard| Echo)
//!     .expect("valid config")
//!     .run()
//!     .expect("server ran");
//! ```
//!
//! # What it must never do
//!
//! Touch a shard's state (it only reads single-writer counters and whatever the
//! render callback reads), block on one client, or panic on input. It is one
//! thread running a mio poll loop over nonblocking sockets: at most
//! `max_connections` connections at once (more wait in the kernel's backlog), a
//! request head of at most [`MAX_HEAD`] bytes (431 past it), and each connection
//! has `request_timeout` to send its head (408 after) and again to take its
//! response, so a slow or silent client holds one slot for a bounded time and never
//! delays the others. One request per connection (`Connection: close`). Answers:
//! 200 for `GET`/`HEAD` of `/metrics` and `/healthz`, 405 for another method on
//! them, 404 for any other path, 400 for anything that is not an HTTP/1.x request
//! head, 500 if the render callback panics (the endpoint goes on).

use std::{
    fmt,
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener as StdListener},
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use mio::{
    net::{TcpListener, TcpStream},
    Events, Interest, Poll, Token, Waker,
};
use slab::Slab;
use tracing::{debug, info, warn};

use crate::metrics::{Metrics, CONTENT_TYPE};
pub use crate::metrics::{PromValue, PromWriter};

/// Longest request head (request line and headers) the endpoint reads; a longer
/// one gets 431.
pub const MAX_HEAD: usize = 8 << 10;

/// The `Content-Type` of `/metrics`: Prometheus text exposition format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = CONTENT_TYPE;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;
/// How long a connection whose response is written may take to send its EOF:
/// closing a socket with unread input resets it, which can destroy the response
/// before the client reads it, so the rest of its input is read and dropped first.
const LINGER: Duration = Duration::from_secs(2);
/// Most input read and dropped while lingering.
const DRAIN_LIMIT: usize = 64 << 10;
/// Back-off after an accept error other than "no more connections" (e.g. EMFILE).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// The loop wakes at least this often to check the stop flag, even if a wake-up
/// through the waker were lost.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// The application's part of `/metrics`.
type Render = Arc<dyn Fn(&mut PromWriter) + Send + Sync>;

/// What the admin endpoint listens on and serves. Cheap to clone.
#[derive(Clone)]
pub struct AdminConfig {
    addr: SocketAddr,
    render: Option<Render>,
    request_timeout: Duration,
    max_connections: usize,
}

impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("addr", &self.addr)
            .field("render", &self.render.is_some())
            .field("request_timeout", &self.request_timeout)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl AdminConfig {
    /// An endpoint on `addr` (port 0 picks a free port; see
    /// [`AdminServer::local_addr`]), with a 5 s request timeout and at most 4
    /// connections served at once.
    pub fn new(addr: SocketAddr) -> AdminConfig {
        AdminConfig {
            addr,
            render: None,
            request_timeout: Duration::from_secs(5),
            max_connections: 4,
        }
    }

    /// The address asked for.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The application's metrics: `render` is called on the admin thread for each
    /// scrape, after the framework's own metrics are written. It must only read
    /// what other threads may read (atomics, locks), never wait on a shard.
    pub fn render(mut self, render: impl Fn(&mut PromWriter) + Send + Sync + 'static) -> Self {
        self.render = Some(Arc::new(render));
        self
    }

    /// How long a client has to send its request head, and again to take its
    /// response, before the connection is closed (408 for the head). Default 5 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Most connections served at once (at least 1); more wait in the listen
    /// backlog. Default 4.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Binds the address and starts serving on a new thread, with `metrics`'
    /// counters (if any) before the render callback's. Stop it with
    /// [`AdminServer::stop`] or by dropping it.
    pub fn start(self, metrics: Option<Metrics>) -> io::Result<AdminServer> {
        let std_listener = StdListener::bind(self.addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let mut listener = TcpListener::from_std(std_listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stop = Arc::new(AtomicBool::new(false));
        let endpoint = Endpoint {
            poll,
            listener,
            conns: Slab::new(),
            config: self,
            metrics,
            stop: stop.clone(),
            accept_ready: true,
            accept_retry_at: None,
        };
        let thread = std::thread::Builder::new()
            .name("shardline-admin".into())
            .spawn(move || endpoint.run())?;
        info!(%addr, "admin endpoint serving /metrics and /healthz");
        Ok(AdminServer {
            addr,
            stop,
            waker,
            thread: Some(thread),
        })
    }
}

/// A running admin endpoint. Dropping it (or [`AdminServer::stop`]) stops the
/// thread and waits for it.
pub struct AdminServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminServer")
            .field("addr", &self.addr)
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl AdminServer {
    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving: connections in progress are closed, the listener too, and
    /// the thread is joined.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // A failed wake only delays the stop until the loop's next MAX_SLEEP.
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                warn!("admin endpoint thread panicked");
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The admin thread's state.
struct Endpoint {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    config: AdminConfig,
    metrics: Option<Metrics>,
    stop: Arc<AtomicBool>,
    /// The listener may have connections waiting (edge-triggered: set by its
    /// event, cleared by `WouldBlock`), and we stopped taking them at the cap.
    accept_ready: bool,
    accept_retry_at: Option<Instant>,
}

impl Endpoint {
    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        while !self.stop.load(Ordering::SeqCst) {
            let timeout = self.next_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                warn!(error = %e, "admin endpoint: poll failed; the endpoint stops");
                return;
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_ready = true,
                    WAKER => {}
                    Token(t) => self.drive(t - FIRST_CONN),
                }
            }
            self.expire();
            self.accept();
        }
        debug!("admin endpoint stopped");
    }

    fn next_timeout(&self) -> Duration {
        let now = Instant::now();
        let conns = self.conns.iter().map(|(_, c)| c.deadline);
        conns
            .chain(self.accept_retry_at)
            .map(|at| at.saturating_duration_since(now))
            .fold(MAX_SLEEP, Duration::min)
    }

    fn accept(&mut self) {
        if let Some(at) = self.accept_retry_at {
            if Instant::now() < at {
                return;
            }
            self.accept_retry_at = None;
            self.accept_ready = true;
        }
        while self.accept_ready && self.conns.len() < self.config.max_connections {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    let entry = self.conns.vacant_entry();
                    let token = Token(entry.key() + FIRST_CONN);
                    // Registering a socket that is already readable reports it: no
                    // edge is lost between accept and here.
                    let registered = self.poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    match registered {
                        Ok(()) => {
                            let deadline = Instant::now() + self.config.request_timeout;
                            entry.insert(Conn::new(stream, deadline));
                        }
                        Err(e) => debug!(%peer, error = %e, "admin endpoint: register failed"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.accept_ready = false,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => {
                    warn!(error = %e, "admin endpoint: accept failed; retrying shortly");
                    self.accept_retry_at = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    fn drive(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !conn.advance(&self.config, self.metrics.as_ref()) {
            self.close(key);
        }
    }

    /// Closes every connection past its deadline; one still reading its head is
    /// told 408 first (best effort: one nonblocking write).
    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(k, _)| k)
            .collect();
        for key in late {
            if let Some(c) = self.conns.get_mut(key) {
                if c.phase == Phase::Reading {
                    let resp = response(408, "Request Timeout", "text/plain", b"request timeout\n");
                    let _ = c.stream.write(&resp);
                }
            }
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut c) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the request head.
    Reading,
    /// Writing the response.
    Writing,
    /// Response written and write side shut: reading and dropping input until EOF.
    Draining,
}

/// One client connection.
struct Conn {
    stream: TcpStream,
    head: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    drained: usize,
    phase: Phase,
    deadline: Instant,
}

impl Conn {
    fn new(stream: TcpStream, deadline: Instant) -> Conn {
        Conn {
            stream,
            head: Vec::new(),
            out: Vec::new(),
            sent: 0,
            drained: 0,
            phase: Phase::Reading,
            deadline,
        }
    }

    /// Makes what progress the socket allows; false when the connection is done.
    fn advance(&mut self, config: &AdminConfig, metrics: Option<&Metrics>) -> bool {
        loop {
            match self.phase {
                Phase::Reading => match self.read_head() {
                    Some(true) => {
                        self.out = answer(&self.head, config, metrics);
                        self.phase = Phase::Writing;
                        self.deadline = Instant::now() + config.request_timeout;
                    }
                    Some(false) => return true,
                    None => return false,
                },
                Phase::Writing => {
                    while self.sent < self.out.len() {
                        match self.stream.write(&self.out[self.sent..]) {
                            Ok(0) => return false,
                            Ok(n) => self.sent += n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => return false,
                        }
                    }
                    let _ = self.stream.shutdown(Shutdown::Write);
                    self.phase = Phase::Draining;
                    self.deadline = Instant::now() + LINGER;
                }
                Phase::Draining => {
                    let mut scratch = [0u8; 4096];
                    loop {
                        match self.stream.read(&mut scratch) {
                            Ok(0) => return false,
                            Ok(n) => {
                                self.drained += n;
                                if self.drained > DRAIN_LIMIT {
                                    return false;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => return false,
                        }
                    }
                }
            }
        }
    }

    /// Reads what is there: `Some(true)` once the head is complete (or too long
    /// to be), `Some(false)` to wait for more, `None` if the client left or failed.
    fn read_head(&mut self) -> Option<bool> {
        let mut chunk = [0u8; 2048];
        loop {
            let room = MAX_HEAD - self.head.len();
            if room == 0 {
                return Some(true);
            }
            let want = room.min(chunk.len());
            match self.stream.read(&mut chunk[..want]) {
                Ok(0) => return None,
                Ok(n) => {
                    let from = self.head.len();
                    self.head.extend_from_slice(&chunk[..n]);
                    if head_end(&self.head, from).is_some() {
                        return Some(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }
}

/// Where the head in `buf` ends (after its blank line), looking only at what
/// arrived from `from` on (and the few bytes before it a terminator may span).
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let start = from.saturating_sub(3);
    (start..buf.len()).find_map(|i| {
        let rest = &buf[i..];
        if rest.starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if rest.starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// The whole response to one request head.
fn answer(head: &[u8], config: &AdminConfig, metrics: Option<&Metrics>) -> Vec<u8> {
    let Some(end) = head_end(head, 0) else {
        return response(
            431,
            "Request Header Fields Too Large",
            "text/plain",
            b"request head too large\n",
        );
    };
    let Some((method, path)) = parse_head(&head[..end]) else {
        return response(400, "Bad Request", "text/plain", b"bad request\n");
    };
    let known = matches!(path, "/metrics" | "/healthz");
    if !known {
        return response(404, "Not Found", "text/plain", b"not found\n");
    }
    if !matches!(method, "GET" | "HEAD") {
        return response_with(
            405,
            "Method Not Allowed",
            "text/plain",
            "Allow: GET, HEAD\r\n",
            b"method not allowed\n",
        );
    }
    let mut r = if path == "/healthz" {
        response(200, "OK", "text/plain", b"ok\n")
    } else {
        match catch_unwind(AssertUnwindSafe(|| render(config, metrics))) {
            Ok(body) => response(200, "OK", METRICS_CONTENT_TYPE, body.as_bytes()),
            Err(_) => {
                warn!("admin endpoint: the metrics render callback panicked");
                response(
                    500,
                    "Internal Server Error",
                    "text/plain",
                    b"render failed\n",
                )
            }
        }
    };
    if method == "HEAD" {
        let at = head_end(&r, 0).unwrap_or(r.len());
        r.truncate(at);
    }
    r
}

/// The request line's method and path (query dropped), if `head` is a plausible
/// HTTP/1.x request head.
fn parse_head(head: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut parts = lines.next()?.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if method.is_empty() || !method.bytes().all(tchar) {
        return None;
    }
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") {
        return None;
    }
    if !target.starts_with('/') || target.bytes().any(|b| b.is_ascii_control()) {
        return None;
    }
    for line in lines {
        if line.is_empty() {
            break;
        }
        let name = line.split_once(':')?.0;
        if name.is_empty() || !name.bytes().all(tchar) {
            return None;
        }
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Some((method, path))
}

/// The `/metrics` body: the framework's counters, then the application's.
fn render(config: &AdminConfig, metrics: Option<&Metrics>) -> String {
    let mut w = PromWriter::new();
    if let Some(m) = metrics {
        m.write_prometheus(&mut w);
    }
    if let Some(r) = &config.render {
        r(&mut w);
    }
    w.finish()
}

fn response(status: u16, reason: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    response_with(status, reason, content_type, "", body)
}

/// A response with `extra` header lines (each ending in CR LF).
fn response_with(
    status: u16,
    reason: &str,
    content_type: &str,
    extra: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n{extra}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_strictly() {
        fn ok(h: &str) -> Option<(&str, &str)> {
            parse_head(h.as_bytes())
        }
        assert_eq!(
            ok("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(ok("HEAD /healthz HTTP/1.0\n\n"), Some(("HEAD", "/healthz")));
        for bad in [
            "\r\n\r\n",
            "GET\r\n\r\n",
            "GET /metrics\r\n\r\n",
            "GET /metrics HTTP/2.0\r\n\r\n",
            "GET  /metrics HTTP/1.1\r\n\r\n",
            "GET metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1 x\r\n\r\n",
            "G(T /metrics HTTP/1.1\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nno colon\r\n\r\n",
            "GET /metrics HTTP/1.1\r\n folded: x\r\n\r\n",
            "GET /metrics HTTP/1.1\r\nbad name: x\r\n\r\n",
        ] {
            assert_eq!(ok(bad), None, "{bad:?}");
        }
        assert_eq!(parse_head(b"GET /\xff HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn head_end_spans_chunks() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n", 16), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n", 17), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n", 0), None);
        assert_eq!(head_end(b"a\n\nb", 0), Some(3));
    }
}
