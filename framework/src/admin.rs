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
//! # use shardline::{ConnId, Ctx, Handler, Listener};
//! # struct Echo;
//! # impl Handler for Echo {
//! #     type Msg = ();
//! #     type Timer = ();
//! #     type Conn = ();
//! #     type Listener = ();
//! #     fn on_accept(&mut self, _: &mut Ctx<'_, Self>, _: ConnId, _: Listener<'_, ()>, _: std::net::SocketAddr) {}
//! #     fn on_data(&mut self, _: &mut Ctx<'_, Self>, _: ConnId, _: &mut (), data: &[u8]) -> usize {
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
    collections::HashMap,
    fmt::{self, Write as _},
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

use crate::metrics::{Metrics, ShardMetricsSnapshot};

/// Longest request head (request line and headers) the endpoint reads; a longer
/// one gets 431.
pub const MAX_HEAD: usize = 8 << 10;

/// The `Content-Type` of `/metrics`: Prometheus text exposition format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

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

/// A sample value in the exposition format.
pub trait PromValue {
    /// Appends the value as Prometheus writes it.
    fn write_value(&self, out: &mut String);
}

macro_rules! integer_values {
    ($($t:ty),*) => {$(
        impl PromValue for $t {
            fn write_value(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
integer_values!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

impl PromValue for f64 {
    fn write_value(&self, out: &mut String) {
        if self.is_nan() {
            out.push_str("NaN");
        } else if self.is_infinite() {
            out.push_str(if *self > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            // Debug keeps it short (1e300, not 300 digits) and Go parses it.
            let _ = write!(out, "{self:?}");
        }
    }
}

impl PromValue for f32 {
    fn write_value(&self, out: &mut String) {
        f64::from(*self).write_value(out);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Debug)]
struct Family {
    name: String,
    help: String,
    kind: Kind,
    samples: String,
}

/// Builds a Prometheus text exposition (format 0.0.4).
///
/// Samples of one metric may be written in any order, interleaved with others
/// (e.g. every metric of shard 0, then of shard 1): each metric's `# HELP` and
/// `# TYPE` are written once, its samples grouped under them, metrics in the order
/// first seen. Label values are escaped (`\\`, `\"`, `\n`). A sample with an
/// invalid metric or label name, or a metric written once as a counter and once as
/// a gauge, is left out with a warning: the output is always valid. By convention
/// counter names end in `_total`.
#[derive(Debug, Default)]
pub struct PromWriter {
    families: Vec<Family>,
    index: HashMap<String, usize>,
}

impl PromWriter {
    /// An empty exposition.
    pub fn new() -> PromWriter {
        PromWriter::default()
    }

    /// Writes one sample of counter `name` (a value that only goes up).
    pub fn counter(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: impl PromValue,
    ) {
        self.sample(Kind::Counter, name, help, labels, &value);
    }

    /// Writes one sample of gauge `name` (a value that goes up and down).
    pub fn gauge(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: impl PromValue,
    ) {
        self.sample(Kind::Gauge, name, help, labels, &value);
    }

    /// Writes one histogram `name` (labelled `labels`): `counts[i]` observations
    /// fell in bucket `i` — at most `bounds[i]` and above `bounds[i - 1]` — and
    /// `counts[bounds.len()]`, if given, above the last bound; `sum` is the sum
    /// of every observation. Written as Prometheus expects: cumulative
    /// `name_bucket{le="…"}` samples ending with `le="+Inf"`, then `name_sum` and
    /// `name_count` (the `+Inf` value). Bounds must be finite and increasing, and
    /// `counts` as long as `bounds` or one longer, and `le` is not a label the
    /// caller may use; otherwise the histogram is left out with a warning.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
    ) {
        let increasing =
            bounds.iter().all(|b| b.is_finite()) && bounds.windows(2).all(|w| w[0] < w[1]);
        let sized = counts.len() == bounds.len() || counts.len() == bounds.len() + 1;
        if !increasing || !sized || labels.iter().any(|(l, _)| *l == "le") {
            warn!(name, "metrics: malformed histogram; left out");
            return;
        }
        let Some(i) = self.family(Kind::Histogram, name, help, labels) else {
            return;
        };
        let s = &mut self.families[i].samples;
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0u64;
        let mut le = String::new();
        for (j, bound) in bounds.iter().enumerate() {
            cumulative = cumulative.saturating_add(counts[j]);
            le.clear();
            bound.write_value(&mut le);
            write_sample(s, &bucket, labels, Some(&le), &cumulative);
        }
        if let Some(above) = counts.get(bounds.len()) {
            cumulative = cumulative.saturating_add(*above);
        }
        write_sample(s, &bucket, labels, Some("+Inf"), &cumulative);
        write_sample(s, &format!("{name}_sum"), labels, None, &sum);
        write_sample(s, &format!("{name}_count"), labels, None, &cumulative);
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }

    /// The exposition text.
    pub fn finish(self) -> String {
        let mut out = String::with_capacity(
            self.families
                .iter()
                .map(|f| f.samples.len() + f.help.len() + 2 * f.name.len() + 24)
                .sum(),
        );
        for f in &self.families {
            out.push_str("# HELP ");
            out.push_str(&f.name);
            out.push(' ');
            for c in f.help.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    c => out.push(c),
                }
            }
            out.push_str("\n# TYPE ");
            out.push_str(&f.name);
            out.push_str(match f.kind {
                Kind::Counter => " counter\n",
                Kind::Gauge => " gauge\n",
                Kind::Histogram => " histogram\n",
            });
            out.push_str(&f.samples);
        }
        out
    }

    fn sample(
        &mut self,
        kind: Kind,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: &dyn PromValue,
    ) {
        if let Some(i) = self.family(kind, name, help, labels) {
            write_sample(&mut self.families[i].samples, name, labels, None, value);
        }
    }

    /// The family `name` of `kind` (created if new), or `None` with a warning if
    /// a name is invalid or `name` is already another kind.
    fn family(
        &mut self,
        kind: Kind,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
    ) -> Option<usize> {
        if !valid_metric_name(name) {
            warn!(name, "metrics: invalid metric name; sample left out");
            return None;
        }
        if let Some((label, _)) = labels.iter().find(|(l, _)| !valid_label_name(l)) {
            warn!(name, label, "metrics: invalid label name; sample left out");
            return None;
        }
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.families.push(Family {
                    name: name.to_string(),
                    help: help.to_string(),
                    kind,
                    samples: String::new(),
                });
                self.index.insert(name.to_string(), self.families.len() - 1);
                self.families.len() - 1
            }
        };
        if self.families[i].kind != kind {
            warn!(
                name,
                "metrics: written as two kinds (counter, gauge, histogram); sample left out"
            );
            return None;
        }
        Some(i)
    }
}

/// Appends one sample line: `name{labels,le="…"} value`.
fn write_sample(
    s: &mut String,
    name: &str,
    labels: &[(&str, &str)],
    le: Option<&str>,
    value: &dyn PromValue,
) {
    s.push_str(name);
    let extra = le.map(|v| ("le", v));
    if !labels.is_empty() || extra.is_some() {
        s.push('{');
        for (j, (label, v)) in labels.iter().chain(extra.iter()).enumerate() {
            if j > 0 {
                s.push(',');
            }
            s.push_str(label);
            s.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => s.push_str("\\\\"),
                    '"' => s.push_str("\\\""),
                    '\n' => s.push_str("\\n"),
                    c => s.push(c),
                }
            }
            s.push('"');
        }
        s.push('}');
    }
    s.push(' ');
    value.write_value(s);
    s.push('\n');
}

fn valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

fn valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    !name.starts_with("__")
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

type Field = fn(&ShardMetricsSnapshot) -> u64;

/// The framework's counters as Prometheus metrics: (name, help, field).
const COUNTERS: &[(&str, &str, Field)] = &[
    (
        "shardline_connections_accepted_total",
        "Connections accepted.",
        |s| s.conns_accepted,
    ),
    (
        "shardline_connections_connected_total",
        "Outbound connections established.",
        |s| s.conns_connected,
    ),
    (
        "shardline_connections_closed_total",
        "Connections closed, for any reason.",
        |s| s.conns_closed,
    ),
    (
        "shardline_connections_closed_send_queue_full_total",
        "Connections closed because their send queue passed the hard limit.",
        |s| s.closed_send_queue_full,
    ),
    (
        "shardline_received_bytes_total",
        "Bytes read from sockets.",
        |s| s.bytes_in,
    ),
    (
        "shardline_sent_bytes_total",
        "Bytes written to sockets.",
        |s| s.bytes_out,
    ),
    ("shardline_loop_turns_total", "Event-loop turns.", |s| {
        s.loop_turns
    }),
    (
        "shardline_syscalls_total",
        "Blocking waits and submissions into the kernel (io_uring_enter, epoll_wait).",
        |s| s.syscalls,
    ),
    (
        "shardline_handler_panics_total",
        "Handler callbacks that panicked.",
        |s| s.handler_panics,
    ),
    (
        "shardline_mailbox_sent_total",
        "Messages this shard posted to shard mailboxes.",
        |s| s.msgs_sent,
    ),
    (
        "shardline_mailbox_received_total",
        "Messages (and handed-off connections) this shard took from its mailboxes.",
        |s| s.msgs_received,
    ),
    (
        "shardline_mailbox_doorbell_writes_total",
        "Doorbell (eventfd) writes this shard made to wake another.",
        |s| s.doorbell_writes,
    ),
    (
        "shardline_mailbox_full_total",
        "Posts from this shard that met a full mailbox.",
        |s| s.mailbox_full,
    ),
];

const GAUGES: &[(&str, &str, Field)] = &[
    (
        "shardline_connections",
        "Connections open now (accepted or connected, not yet closed).",
        |s| s.conns_live,
    ),
    (
        "shardline_read_pool_bytes",
        "Bytes of read-buffer pool the shard holds.",
        |s| s.pool_bytes,
    ),
    (
        "shardline_read_pool_off_node_pages",
        "Read-buffer pool pages on another NUMA node than the shard's (0 is right).",
        |s| s.pool_off_node_pages,
    ),
];

impl Metrics {
    /// Writes every shard's counters to `w`, each sample labelled `shard`, and the
    /// shard count as `shardline_shards`. This is what the admin endpoint serves
    /// before the application's metrics.
    pub fn write_prometheus(&self, w: &mut PromWriter) {
        let shards = self.snapshot();
        w.gauge(
            "shardline_shards",
            "Shards (event-loop threads) this server runs.",
            &[],
            shards.len(),
        );
        for (i, s) in shards.iter().enumerate() {
            let shard = i.to_string();
            let labels = [("shard", shard.as_str())];
            for (name, help, field) in GAUGES {
                w.gauge(name, help, &labels, field(s));
            }
            for (name, help, field) in COUNTERS {
                w.counter(name, help, &labels, field(s));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_grouped_with_one_help_and_type() {
        let mut w = PromWriter::new();
        w.counter("a_total", "A things.", &[("shard", "0")], 1u64);
        w.gauge("b", "B now.", &[("shard", "0")], -2i64);
        w.counter("a_total", "A things.", &[("shard", "1")], 3u64);
        w.gauge("c", "Line\\one\ntwo", &[], 0.5f64);
        assert_eq!(
            w.finish(),
            "# HELP a_total A things.\n# TYPE a_total counter\n\
             a_total{shard=\"0\"} 1\na_total{shard=\"1\"} 3\n\
             # HELP b B now.\n# TYPE b gauge\nb{shard=\"0\"} -2\n\
             # HELP c Line\\\\one\\ntwo\n# TYPE c gauge\nc 0.5\n"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let mut w = PromWriter::new();
        w.gauge("g", "G.", &[("k", "a\"b\\c\nd"), ("e", "")], 1u8);
        let text = w.finish();
        assert!(
            text.ends_with("g{k=\"a\\\"b\\\\c\\nd\",e=\"\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn invalid_names_and_kind_clashes_are_left_out() {
        let mut w = PromWriter::new();
        w.counter("1bad", "", &[], 1u64);
        w.counter("bad-name", "", &[], 1u64);
        w.counter("", "", &[], 1u64);
        w.counter("ok_total", "", &[("bad-label", "x")], 1u64);
        w.counter("ok_total", "", &[("__reserved", "x")], 1u64);
        assert!(w.is_empty());
        w.counter("ok_total", "", &[("good", "x")], 1u64);
        w.gauge("ok_total", "", &[("good", "y")], 2u64);
        let text = w.finish();
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 1);
        assert!(text.contains("ok_total{good=\"x\"} 1\n"), "{text}");
    }

    #[test]
    fn histograms_are_cumulative_and_end_with_inf_sum_and_count() {
        let mut w = PromWriter::new();
        let bounds = [0.1, 0.5, 1.0];
        w.histogram(
            "lat_seconds",
            "Latency.",
            &[("shard", "0")],
            &bounds,
            &[2, 0, 3, 1],
            4.25,
        );
        w.histogram(
            "lat_seconds",
            "Latency.",
            &[("shard", "1")],
            &bounds,
            &[1, 1, 0],
            0.5,
        );
        assert_eq!(
            w.finish(),
            "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n\
             lat_seconds_bucket{shard=\"0\",le=\"0.1\"} 2\n\
             lat_seconds_bucket{shard=\"0\",le=\"0.5\"} 2\n\
             lat_seconds_bucket{shard=\"0\",le=\"1.0\"} 5\n\
             lat_seconds_bucket{shard=\"0\",le=\"+Inf\"} 6\n\
             lat_seconds_sum{shard=\"0\"} 4.25\n\
             lat_seconds_count{shard=\"0\"} 6\n\
             lat_seconds_bucket{shard=\"1\",le=\"0.1\"} 1\n\
             lat_seconds_bucket{shard=\"1\",le=\"0.5\"} 2\n\
             lat_seconds_bucket{shard=\"1\",le=\"1.0\"} 2\n\
             lat_seconds_bucket{shard=\"1\",le=\"+Inf\"} 2\n\
             lat_seconds_sum{shard=\"1\"} 0.5\n\
             lat_seconds_count{shard=\"1\"} 2\n"
        );
    }

    #[test]
    fn malformed_histograms_are_left_out() {
        let mut w = PromWriter::new();
        w.histogram("h", "", &[], &[1.0, 0.5], &[1, 1], 1.0);
        w.histogram("h", "", &[], &[1.0, f64::INFINITY], &[1, 1], 1.0);
        w.histogram("h", "", &[], &[1.0], &[1, 1, 1], 1.0);
        w.histogram("h", "", &[("le", "x")], &[1.0], &[1], 1.0);
        assert!(w.is_empty());
        w.counter("c_total", "", &[], 1u64);
        w.histogram("c_total", "", &[], &[1.0], &[1], 1.0);
        assert!(!w.finish().contains("histogram"));
    }

    #[test]
    fn special_float_values() {
        let mut out = String::new();
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e300, 2.0] {
            v.write_value(&mut out);
            out.push(' ');
        }
        assert_eq!(out, "NaN +Inf -Inf 1e300 2.0 ");
    }

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
