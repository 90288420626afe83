//! Half-close (`Ctx::shutdown_write`), the end of a paused stream (`on_eof` after
//! held input), `Ctx::redeliver`, `Ctx::local_addr`, and `on_start` before
//! `Server::start` returns — on both backends.

mod common;

use shardline::Io;
use std::{
    io::{Read, Write},
    net::{Shutdown, TcpStream},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use common::{builder, start, wait_until};
use shardline::{CloseReason, ConnId, Ctx, Handler, SendError, TimerId};

const LIMIT: Duration = Duration::from_secs(10);

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    s
}

/// What the half-closing handler saw.
#[derive(Default)]
struct Seen {
    data: Vec<u8>,
    send_after_shutdown: Option<Result<(), SendError>>,
    eof: bool,
    closed: Option<CloseReason>,
}

/// Greets, half-closes at once, then keeps reading until the peer's EOF.
struct HalfClose(Arc<Mutex<Seen>>);

impl Handler for HalfClose {
    type Msg = ();
    type Timer = ();
    type Conn = ();
    type Listener = ();

    fn on_accept(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _listener: shardline::Listener<'_, Self::Listener>,
        _: std::net::SocketAddr,
    ) {
        ctx.send(conn, b"hello, then FIN").expect("queued");
        ctx.shutdown_write(conn).expect("half-close");
        ctx.shutdown_write(conn).expect("twice is harmless");
        self.0.lock().expect("lock").send_after_shutdown = Some(ctx.send(conn, b"late"));
    }

    fn on_data(
        &mut self,
        _: &mut Ctx<'_, Self>,
        _: ConnId,
        _state: &mut Self::Conn,
        data: &[u8],
    ) -> usize {
        self.0.lock().expect("lock").data.extend_from_slice(data);
        data.len()
    }

    fn on_eof(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _state: &mut Self::Conn) {
        self.0.lock().expect("lock").eof = true;
        ctx.close(conn);
    }

    fn on_close(
        &mut self,
        _: &mut Ctx<'_, Self>,
        _: ConnId,
        _state: Self::Conn,
        reason: &CloseReason,
    ) {
        self.0.lock().expect("lock").closed = Some(reason.clone());
    }
}

fn shutdown_write_sends_fin_after_the_queue_and_keeps_reading(io: Io) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s = seen.clone();
    let (server, addr) = start(builder(io, 1), move |_| HalfClose(s.clone()));
    let mut client = connect(addr);
    let mut got = Vec::new();
    client
        .read_to_end(&mut got)
        .expect("EOF from the half-close");
    assert_eq!(got, b"hello, then FIN", "{io:?}");
    // Our direction is still open: the server reads it.
    client
        .write_all(b"still talking")
        .expect("write after the server's FIN");
    assert!(
        wait_until(LIMIT, || seen.lock().expect("lock").data
            == b"still talking"),
        "{io:?}: server read after its half-close"
    );
    assert!(!seen.lock().expect("lock").eof, "{io:?}: no EOF yet");
    client.shutdown(Shutdown::Write).expect("client FIN");
    assert!(
        wait_until(LIMIT, || seen.lock().expect("lock").closed.is_some()),
        "{io:?}: closed after both FINs"
    );
    let seen = seen.lock().expect("lock");
    assert!(seen.eof, "{io:?}");
    assert_eq!(seen.send_after_shutdown, Some(Err(SendError::WriteShut)));
    // Closed by the handler after the peer's EOF: reported as the peer's close.
    assert_eq!(seen.closed, Some(CloseReason::PeerClosed), "{io:?}");
    server.shutdown().expect("clean shutdown");
}

/// Pauses at the first bytes, resumes 200 ms later; counts bytes, and what it had
/// counted when `on_eof` came.
struct PauseOnce {
    total: Arc<AtomicUsize>,
    at_eof: Arc<AtomicUsize>,
    paused: bool,
}

impl Handler for PauseOnce {
    type Msg = ();
    type Timer = ConnId;
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
        self.total.fetch_add(data.len(), Ordering::SeqCst);
        if !std::mem::replace(&mut self.paused, true) {
            ctx.pause_reading(conn);
            ctx.set_timer(Duration::from_millis(200), conn);
        }
        data.len()
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, _: TimerId, conn: ConnId) {
        ctx.resume_reading(conn);
    }

    fn on_eof(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _state: &mut Self::Conn) {
        self.at_eof
            .store(self.total.load(Ordering::SeqCst), Ordering::SeqCst);
        ctx.close(conn);
    }
}

fn eof_comes_after_input_held_by_a_pause(io: Io) {
    // 40 KiB: more than one 16 KiB read but within one read budget, so the reads
    // that go on after the pause (up to the budget) reach the FIN while bytes are
    // held — the case where `on_eof` used to come first and close them away.
    // 256 KiB: the FIN is read only after the resume.
    for len in [40 << 10, 256 << 10] {
        eof_after_pause(io, len);
    }
}

fn eof_after_pause(io: shardline::Io, len: usize) {
    {
        let (total, at_eof) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (t, e) = (total.clone(), at_eof.clone());
        let (server, addr) = start(builder(io, 1), move |_| PauseOnce {
            total: t.clone(),
            at_eof: e.clone(),
            paused: false,
        });
        let mut client = connect(addr);
        // Everything, then FIN, while the server is paused: the driver may take in
        // a read budget more before the pause lands, and the FIN with it.
        client.write_all(&vec![5u8; len]).expect("write");
        client.shutdown(Shutdown::Write).expect("FIN");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).expect("server closes");
        assert_eq!(
            at_eof.load(Ordering::SeqCst),
            len,
            "{io:?} {len}: every byte was offered before on_eof"
        );
        assert_eq!(total.load(Ordering::SeqCst), len, "{io:?} {len}");
        server.shutdown().expect("clean shutdown");
    }
}

/// Consumes one line per `on_data` call, echoing it, and asks for the rest again.
struct OneLineAtATime;

impl Handler for OneLineAtATime {
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
        let Some(end) = data.iter().position(|&b| b == b'\n') else {
            return 0;
        };
        let _ = ctx.send(conn, &data[..=end]);
        if end + 1 < data.len() {
            ctx.redeliver(conn);
        }
        end + 1
    }
}

fn redeliver_offers_held_input_without_new_bytes(io: Io) {
    let (server, addr) = start(builder(io, 1), |_| OneLineAtATime);
    let mut client = connect(addr);
    // One write: without redeliver only the first line would be answered until
    // more bytes came.
    client.write_all(b"one\ntwo\nthree\n").expect("write");
    let mut got = [0u8; 14];
    client.read_exact(&mut got).expect("all three lines back");
    assert_eq!(&got, b"one\ntwo\nthree\n", "{io:?}");
    server.shutdown().expect("clean shutdown");
}

/// Records `local_addr` of each accepted connection and counts `on_start`s.
struct Where {
    local: Arc<Mutex<Vec<std::net::SocketAddr>>>,
}

impl Handler for Where {
    type Msg = ();
    type Timer = ();
    type Conn = ();
    type Listener = ();

    fn on_accept(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _listener: shardline::Listener<'_, Self::Listener>,
        _: std::net::SocketAddr,
    ) {
        let addr = ctx.local_addr(conn).expect("a live connection has one");
        self.local.lock().expect("lock").push(addr);
    }

    fn on_data(
        &mut self,
        _: &mut Ctx<'_, Self>,
        _: ConnId,
        _state: &mut Self::Conn,
        data: &[u8],
    ) -> usize {
        data.len()
    }
}

fn local_addr_names_the_listener(io: Io) {
    let local = Arc::new(Mutex::new(Vec::new()));
    let l = local.clone();
    let (server, addr) = start(builder(io, 2), move |_| Where { local: l.clone() });
    let _clients: Vec<TcpStream> = (0..4).map(|_| connect(addr)).collect();
    assert!(
        wait_until(LIMIT, || local.lock().expect("lock").len() == 4),
        "{io:?}"
    );
    assert!(local.lock().expect("lock").iter().all(|a| *a == addr));
    server.shutdown().expect("clean shutdown");
}

struct Starts(Arc<AtomicUsize>);

impl Handler for Starts {
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

    fn on_start(&mut self, _: &mut Ctx<'_, Self>) {
        // Slow on purpose: `start` must still wait for it.
        std::thread::sleep(Duration::from_millis(50));
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn on_data(
        &mut self,
        _: &mut Ctx<'_, Self>,
        _: ConnId,
        _state: &mut Self::Conn,
        data: &[u8],
    ) -> usize {
        data.len()
    }
}

fn start_returns_after_every_on_start(io: Io) {
    let started = Arc::new(AtomicUsize::new(0));
    let s = started.clone();
    let (server, _) = start(builder(io, 3), move |_| Starts(s.clone()));
    assert_eq!(started.load(Ordering::SeqCst), 3, "{io:?}");
    server.shutdown().expect("clean shutdown");
}

shardline::per_backend! {
    eof_comes_after_input_held_by_a_pause => eof_comes_after_input_held_by_a_pause;
    shutdown_write_sends_fin_after_the_queue_and_keeps_reading => shutdown_write_sends_fin_after_the_queue_and_keeps_reading;
    redeliver_offers_held_input_without_new_bytes => redeliver_offers_held_input_without_new_bytes;
    local_addr_names_the_listener => local_addr_names_the_listener;
    start_returns_after_every_on_start => start_returns_after_every_on_start;
}
