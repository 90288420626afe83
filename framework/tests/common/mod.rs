//! Helpers shared by the integration tests: start a server on a forced backend,
//! wait for conditions, capture what handlers saw.
#![allow(dead_code)]

use std::{
    net::{SocketAddr, TcpStream},
    sync::mpsc,
    time::{Duration, Instant},
};

use shardline::{ConnId, Ctx, Handler, Io, RunningServer, Server, ServerBuilder, ShardId};

/// Logs to the test's captured output; `RUST_LOG` controls the level.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A builder listening on 127.0.0.1:0 with `shards` unpinned shards on `io`.
pub fn builder(io: Io, shards: usize) -> ServerBuilder {
    Server::builder()
        .io(io)
        .shards(shards)
        .pin(false)
        .listen("127.0.0.1:0".parse().expect("literal address"))
        .shutdown_timeout(Duration::from_secs(10))
}

/// Starts a server from `builder` and returns it with its address.
pub fn start<H, F>(builder: ServerBuilder, factory: F) -> (RunningServer<H::Msg>, SocketAddr)
where
    H: Handler,
    F: Fn(ShardId) -> H + Send + Sync + 'static,
{
    init_tracing();
    let server = builder
        .build(factory)
        .expect("valid config")
        .start()
        .expect("server starts");
    let addr = server.local_addrs()[0];
    (server, addr)
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held. A
/// liveness bound, not a timing assertion: limits are generous.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// An echo handler that pauses reading a connection whose outbound queue passed the
/// high-water mark and resumes when it drains (like examples/echo.rs).
pub struct Echo;

impl Handler for Echo {
    type Msg = ();
    type Timer = ();
    type Conn = ();
    type Listener = ();

    fn on_accept(
        &mut self,
        _: &mut Ctx<'_, Self>,
        _: ConnId,
        _: shardline::Listener<'_, ()>,
        _: std::net::SocketAddr,
    ) {
    }

    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _state: &mut Self::Conn,
        data: &[u8],
    ) -> usize {
        // An error means the connection is already closing: nothing to echo to.
        let _ = ctx.send(conn, data);
        data.len()
    }

    fn on_backpressure(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _state: &mut Self::Conn) {
        ctx.pause_reading(conn);
    }

    fn on_drained(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _state: &mut Self::Conn) {
        ctx.resume_reading(conn);
    }
}

/// How long a test helper waits on the network or the server before failing.
/// A loopback address where connecting is refused, and what keeps it so: a
/// socket bound to the port without listening. (Binding, noting the port and
/// closing it lets the kernel give the port to the next `bind(:0)` — often the
/// server under test's own listener.) Keep the socket until the test ends.
pub fn refusing_addr() -> (socket2::Socket, SocketAddr) {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    sock.bind(&any.into()).expect("bind");
    let addr = sock
        .local_addr()
        .expect("local addr")
        .as_socket()
        .expect("an IP address");
    (sock, addr)
}

pub const LIMIT: Duration = Duration::from_secs(60);

/// A blocking client whose reads and writes fail after `LIMIT` instead of hanging.
pub fn connect_bounded(addr: SocketAddr, io: Io) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{io}: connect: {e}"));
    s.set_read_timeout(Some(LIMIT)).expect("read timeout");
    s.set_write_timeout(Some(LIMIT)).expect("write timeout");
    s
}

/// Shuts the server down, waiting for it at most `LIMIT`.
pub fn shutdown_within<M: Send + 'static>(server: RunningServer<M>, io: Io) {
    server.shutdown_handle().shutdown();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(server.join());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(result) => result.unwrap_or_else(|e| panic!("{io}: clean shutdown: {e}")),
        Err(_) => panic!("{io}: server did not stop within {LIMIT:?}"),
    }
}
