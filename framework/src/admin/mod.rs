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
//! #     type Timer = ();
//! #     type Conn = ();
//! #     type Listener = ();
//! #     fn on_accept(&mut self, _: &mut Ctx<'_, Self>, _: ConnId, _: shardline::Listener<'_, ()>, _: std::net::SocketAddr) {}
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
//! render callback reads), block on one client, be starved by clients that hold
//! connections open, or panic on input. It is one thread running a mio poll loop
//! over nonblocking sockets, which accepts every connection at once and holds up
//! to `max_connections` (default 256) with a deadline each:
//!
//! - a request head of at most [`MAX_HEAD`] bytes (431 past it), parsed by
//!   `httparse` (400 for anything that is not an HTTP/1.x request head);
//! - `request_timeout` (default 5 s) from accept to send the whole head (408
//!   after; bytes dribbled in do not extend it), then again to take the response;
//! - at the cap, a new connection evicts the oldest one that has not sent a
//!   complete request (503 to it), rather than waiting in the backlog behind it;
//!   only if every held connection has sent one is the oldest being answered
//!   dropped instead.
//!
//! So idle and slowloris clients cost a slot each for a bounded time and can
//! neither delay a scrape (the loop never waits on one socket) nor lock it out
//! (a scrape is newer than every idle connection, so it is not the one evicted
//! unless `max_connections` more arrive before its request does). One request per
//! connection (`Connection: close`). Answers: 200 for `GET`/`HEAD` of `/metrics`
//! and `/healthz`, 405 for another method on them, 404 for any other path, 500 if
//! the render callback panics (the endpoint goes on).

mod endpoint;
mod http;

use std::{
    fmt, io,
    net::{SocketAddr, TcpListener as StdListener},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::Duration,
};

use mio::{net::TcpListener, Interest, Poll, Waker};
use tracing::{info, warn};

use self::endpoint::{Endpoint, LISTENER, WAKER};
use crate::metrics::Metrics;
pub use crate::metrics::{PromValue, PromWriter};

/// Longest request head (request line and headers) the endpoint reads; a longer
/// one gets 431.
pub const MAX_HEAD: usize = 8 << 10;

/// The `Content-Type` of `/metrics`: Prometheus text exposition format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = crate::metrics::CONTENT_TYPE;

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
    /// [`AdminServer::local_addr`]), with a 5 s request timeout and at most 256
    /// connections held at once.
    pub fn new(addr: SocketAddr) -> AdminConfig {
        AdminConfig {
            addr,
            render: None,
            request_timeout: Duration::from_secs(5),
            max_connections: 256,
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
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Most connections held open at once (at least 1). At the cap a new
    /// connection is still accepted: the oldest connection that has not sent a
    /// complete request is closed (with a 503) to make room, or, if all have,
    /// the oldest still being answered. Default 256.
    #[must_use]
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
        let endpoint = Endpoint::new(poll, listener, self, metrics, stop.clone());
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
