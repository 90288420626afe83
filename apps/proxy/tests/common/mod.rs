//! Helpers for the proxy's integration tests: start the proxy on a forced backend
//! and shard count, real TCP backends on std threads (HTTP and raw), and an HTTP
//! client that reads responses independently of the proxy's own parser. Every
//! wait is bounded: a wait that runs out fails the test with what was seen.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    io::ErrorKind,
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use shardline::{Io, Server};

mod http;
#[allow(unused_imports)] // Not every test file uses the HTTP helpers.
pub use http::*;
use shardline_proxy::{Config, RunningProxy};

/// Every I/O test runs on both backends, forced, one `#[test]` per backend
/// (see [`per_backend!`]), and inside each at one shard and at four.
pub const SHARD_COUNTS: [usize; 2] = [1, 4];
/// Longest any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// The `--io` flag's value for `io`.
pub fn io_name(io: Io) -> &'static str {
    match io {
        Io::Auto => "auto",
        Io::Uring => "uring",
        Io::Epoll => "epoll",
    }
}

/// Logs to the test's captured output; `RUST_LOG` controls the level.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A running proxy.
pub struct TestProxy {
    server: Option<RunningProxy>,
    /// Listener 0's address.
    pub addr: SocketAddr,
    /// Every listener's, in configuration order.
    pub addrs: Vec<SocketAddr>,
    pub label: String,
}

impl TestProxy {
    /// Starts the TOML `config` (its listeners should be on port 0).
    pub fn start(io: Io, shards: usize, config: &str) -> TestProxy {
        init_tracing();
        let config = Config::parse(config, "test").expect("valid test config");
        let builder = Server::builder()
            .io(io)
            .shards(shards)
            .pin(false)
            .shutdown_timeout(Duration::from_secs(5));
        let server = shardline_proxy::build(builder, config)
            .expect("builds")
            .start()
            .expect("proxy starts");
        let addrs = server.local_addrs().to_vec();
        TestProxy {
            server: Some(server),
            addr: addrs[0],
            addrs,
            label: format!("{io} x{shards}"),
        }
    }

    /// The admin endpoint's address (the config must have `[admin]`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.server
            .as_ref()
            .and_then(|s| s.admin_addr())
            .expect("an admin endpoint")
    }

    /// `GET /metrics` from the admin endpoint: every sample line as
    /// (`name{labels}`, value).
    pub fn scrape(&self) -> Vec<(String, f64)> {
        let mut c = HttpClient::new(connect_with_timeouts(self.admin_addr()));
        c.send(b"GET /metrics HTTP/1.1\r\nHost: admin\r\n\r\n");
        let r = c.response(false);
        assert_eq!(r.status, 200, "admin /metrics");
        r.text()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }

    /// Reloads with the TOML `config`.
    pub fn reload(&self, config: &str) -> Result<u64, shardline_proxy::ReloadError> {
        let config = Config::parse(config, "test")?;
        self.server.as_ref().expect("running").reload(config)
    }

    /// Reloads from a file (what SIGHUP does).
    pub fn reload_from(&self, path: &std::path::Path) -> Result<u64, shardline_proxy::ReloadError> {
        self.server.as_ref().expect("running").reload_from(path)
    }

    /// Starts the graceful shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        self.server
            .as_ref()
            .expect("running")
            .shutdown_handle()
            .shutdown();
    }

    /// Shuts down and waits for every shard to stop.
    pub fn shutdown(mut self) -> Result<(), shardline::Error> {
        self.server.take().expect("running").shutdown()
    }

    pub fn metrics(&self) -> shardline::Metrics {
        self.server.as_ref().expect("running").metrics()
    }

    pub fn connect(&self) -> TcpStream {
        self.connect_to(0)
    }

    /// A connection to listener `i`.
    pub fn connect_to(&self, i: usize) -> TcpStream {
        connect_with_timeouts(self.addrs[i])
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.shutdown();
        }
    }
}

/// A connection to `addr` with read and write timeouts of [`WAIT`].
pub fn connect_with_timeouts(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to proxy");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.set_write_timeout(Some(WAIT)).expect("timeout");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// Sum of the samples whose `name{labels}` starts with `prefix` and contains
/// every one of `labels` (e.g. `class="2xx"`).
pub fn sample_sum(samples: &[(String, f64)], prefix: &str, labels: &[&str]) -> f64 {
    samples
        .iter()
        .filter(|(k, _)| k.starts_with(prefix) && labels.iter().all(|l| k.contains(l)))
        .map(|(_, v)| v)
        .sum()
}

/// A free loopback address to listen on (bound, then closed).
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

/// An address where connecting is refused, for the life of the test process:
/// a socket bound there without listening is kept open (leaked), so the port
/// cannot go to the next `bind(:0)` — the proxy's own listener, or a backend.
pub fn refused_addr() -> SocketAddr {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    sock.bind(&any.into()).expect("bind");
    let addr = sock
        .local_addr()
        .expect("local addr")
        .as_socket()
        .expect("an IP address");
    std::mem::forget(sock);
    addr
}

/// Polls `cond` every 5 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// A TCP listener on a thread that hands each accepted connection to `serve` on
/// its own thread, counting accepts. Stops accepting when dropped; [`kill`]
/// also cuts every accepted connection.
///
/// [`kill`]: TcpBackend::kill
pub struct TcpBackend {
    pub addr: SocketAddr,
    pub accepts: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// Clones of the open accepted connections (for `kill`), by accept number;
    /// removed when `serve` returns, so the connection closes then.
    conns: Arc<Mutex<HashMap<usize, TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl TcpBackend {
    pub fn start(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> TcpBackend {
        TcpBackend::start_on("127.0.0.1:0".parse().expect("literal"), serve)
    }

    /// On `addr` (e.g. the address of a killed backend, to bring it back).
    pub fn start_on(
        addr: SocketAddr,
        serve: impl Fn(TcpStream) + Send + Sync + 'static,
    ) -> TcpBackend {
        let listener = TcpListener::bind(addr).expect("bind backend");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let accepts = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(HashMap::new()));
        let serve = Arc::new(serve);
        let (a, s, c) = (accepts.clone(), stop.clone(), conns.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let n = a.fetch_add(1, Ordering::SeqCst);
                        stream.set_nonblocking(false).expect("blocking");
                        stream.set_read_timeout(Some(WAIT)).expect("timeout");
                        stream.set_write_timeout(Some(WAIT)).expect("timeout");
                        if let Ok(clone) = stream.try_clone() {
                            c.lock().expect("lock").insert(n, clone);
                        }
                        let (serve, c) = (serve.clone(), c.clone());
                        thread::spawn(move || {
                            serve(stream);
                            c.lock().expect("lock").remove(&n);
                        });
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        TcpBackend {
            addr,
            accepts,
            stop,
            conns,
            thread: Some(thread),
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    /// Stops listening (the port refuses connections once this returns) and
    /// cuts every connection it accepted: a backend that dies.
    pub fn kill(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for (_, c) in self.conns.lock().expect("lock").drain() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for TcpBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
