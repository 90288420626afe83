//! Graceful shutdown with clients mid-stream, on 2 shards:
//! - every byte queued before shutdown reaches its client before the close (20 clients,
//!   8 MiB each, byte-exact, then EOF), the shard threads join cleanly, `on_shutdown`
//!   runs once per shard and every connection closes with `CloseReason::Shutdown`;
//! - a client that never reads cannot hold shutdown past `shutdown_timeout`, and the
//!   clients beside it still get all their data;
//! - once shutdown has begun (checked while `on_shutdown` runs, when the listeners are
//!   documented as closed) and after it ended, the port accepts no connection that
//!   gets served.

mod common;

use std::{
    collections::HashSet,
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{mpsc, Arc, Condvar, Mutex, MutexGuard},
    thread,
    time::{Duration, Instant},
};

use shardline::{CloseReason, ConnId, Ctx, Handler, Io, Limits, RunningServer};

const KIB: usize = 1024;
/// Bytes each client asks for. Loopback kernel buffers take about 4 MiB per
/// connection (`tcp_wmem` max), so 8 MiB leaves megabytes in the shard's own queue.
const PAYLOAD: usize = 8 * 1024 * KIB;
/// The handler queues the payload in pieces of this size.
const PIECE: usize = 64 * KIB;
/// What a client reads before shutdown in the mid-stream test.
const PREFIX: usize = 100 * KIB;
const CLIENTS: usize = 20;
/// Client `i` gets `base[i * SHIFT..][..PAYLOAD]`, so streams differ per client.
const SHIFT: usize = 4099;
/// A request: `GO` and the client's index, little-endian.
const REQUEST_LEN: usize = 6;
/// Liveness bound for every wait.
const LIMIT: Duration = Duration::from_secs(60);

fn base() -> Arc<Vec<u8>> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes = (0..PAYLOAD + CLIENTS * SHIFT)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    Arc::new(bytes)
}

fn expected(base: &[u8], client: usize) -> &[u8] {
    &base[client * SHIFT..client * SHIFT + PAYLOAD]
}

fn request(client: usize) -> [u8; REQUEST_LEN] {
    let i = (client as u32).to_le_bytes();
    [b'G', b'O', i[0], i[1], i[2], i[3]]
}

fn limits() -> Limits {
    Limits {
        send_hard_limit: 2 * PAYLOAD,
        ..Limits::default()
    }
}

/// What the handlers saw.
#[derive(Debug, Default)]
struct Log {
    /// Requests served.
    requests: usize,
    /// `(shard, bytes still queued on that shard)` at each `on_shutdown`.
    shutdowns: Vec<(usize, usize)>,
    closes: Vec<CloseReason>,
    /// `ctx.send` refusals while queueing a payload.
    refused: usize,
}

type Shared = Arc<Mutex<Log>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Holds `on_shutdown` until the test opens it, so the test can act while every shard
/// is inside `on_shutdown`.
#[derive(Default)]
struct Gate {
    state: Mutex<(usize, bool)>,
    cv: Condvar,
}

impl Gate {
    fn enter_and_wait(&self) {
        let mut state = lock(&self.state);
        state.0 += 1;
        let deadline = Instant::now() + LIMIT / 2;
        while !state.1 && Instant::now() < deadline {
            state = self
                .cv
                .wait_timeout(state, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn entered(&self) -> usize {
        lock(&self.state).0
    }

    fn open(&self) {
        lock(&self.state).1 = true;
        self.cv.notify_all();
    }
}

/// On `GO i`, queues client `i`'s whole stream at once, in 64 KiB pieces.
struct Streamer {
    base: Arc<Vec<u8>>,
    log: Shared,
    conns: HashSet<ConnId>,
    gate: Option<Arc<Gate>>,
}

impl Handler for Streamer {
    type Msg = ();
    type Timer = ();
    type Conn = ();
    type Listener = ();

    fn on_accept(
        &mut self,
        _ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _listener: shardline::Listener<'_, Self::Listener>,
        _peer: SocketAddr,
    ) {
        self.conns.insert(conn);
    }

    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _state: &mut Self::Conn,
        data: &[u8],
    ) -> usize {
        if data.len() < REQUEST_LEN {
            return 0;
        }
        let client = u32::from_le_bytes([data[2], data[3], data[4], data[5]]) as usize;
        if &data[..2] != b"GO" || client >= CLIENTS {
            ctx.close(conn);
            return data.len();
        }
        let mut refused = 0;
        for piece in expected(&self.base, client).chunks(PIECE) {
            if ctx.send(conn, piece).is_err() {
                refused += 1;
                break;
            }
        }
        let mut log = lock(&self.log);
        log.requests += 1;
        log.refused += refused;
        data.len()
    }

    fn on_shutdown(&mut self, ctx: &mut Ctx<'_, Self>) {
        let queued = self
            .conns
            .iter()
            .filter_map(|c| ctx.send_queue_len(*c))
            .sum();
        lock(&self.log).shutdowns.push((ctx.shard_id().0, queued));
        if let Some(gate) = &self.gate {
            gate.enter_and_wait();
        }
    }

    fn on_close(
        &mut self,
        _ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _state: Self::Conn,
        reason: &CloseReason,
    ) {
        self.conns.remove(&conn);
        lock(&self.log).closes.push(reason.clone());
    }
}

fn start(
    io: Io,
    shutdown_timeout: Duration,
    gate: Option<Arc<Gate>>,
) -> (RunningServer, SocketAddr, Shared, Arc<Vec<u8>>) {
    let log = Shared::default();
    let base = base();
    let builder = common::builder(io, 2)
        .limits(limits())
        .shutdown_timeout(shutdown_timeout);
    let (server, addr) = {
        let (log, base) = (log.clone(), base.clone());
        common::start(builder, move |_| Streamer {
            base: base.clone(),
            log: log.clone(),
            conns: HashSet::new(),
            gate: gate.clone(),
        })
    };
    (server, addr, log, base)
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(LIMIT))?;
    s.set_write_timeout(Some(LIMIT))?;
    Ok(s)
}

/// A client with a small, fixed receive buffer (no autotuning), so that what it has
/// not read stays on the server side instead of in its own kernel buffer.
fn connect_small_rcvbuf(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_recv_buffer_size(64 * KIB)?;
    socket.connect(&addr.into())?;
    let s = TcpStream::from(socket);
    s.set_read_timeout(Some(LIMIT))?;
    s.set_write_timeout(Some(LIMIT))?;
    Ok(s)
}

/// Joins the server on another thread; the receiver yields its result.
fn join_in_background(server: RunningServer) -> mpsc::Receiver<Result<(), shardline::Error>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(server.join());
    });
    rx
}

fn expect_joined(io: Io, joined: &mpsc::Receiver<Result<(), shardline::Error>>) {
    match joined.recv_timeout(LIMIT) {
        Ok(result) => result.unwrap_or_else(|e| panic!("{io}: join after shutdown: {e}")),
        Err(_) => panic!("{io}: shard threads did not join within {LIMIT:?}"),
    }
}

/// Reads `s` until EOF (or, if `reset_ok`, a reset), checking that what arrives
/// continues `want` from `got`. Returns the total received and how it ended.
fn read_to_end(
    s: &mut TcpStream,
    want: &[u8],
    mut got: usize,
    reset_ok: bool,
) -> Result<(usize, &'static str), String> {
    let mut buf = vec![0u8; 64 * KIB];
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) => return Ok((got, "EOF")),
            Ok(n) => n,
            Err(e) if reset_ok && e.kind() == io::ErrorKind::ConnectionReset => {
                return Ok((got, "reset"))
            }
            Err(e) => return Err(format!("read after {got} B: {e}")),
        };
        if got + n > want.len() {
            return Err(format!("{} B received, more than {}", got + n, want.len()));
        }
        if buf[..n] != want[got..got + n] {
            return Err(format!("stream corrupted within {got}..{}", got + n));
        }
        got += n;
    }
}

fn every_queued_byte_is_delivered_before_the_shutdown_close(io: Io) {
    // The deadline is not what this test is about: keep it out of the way.
    let (server, addr, log, base) = start(io, LIMIT / 2, None);
    let metrics = server.metrics();
    let (ready_tx, ready_rx) = mpsc::channel::<usize>();
    let mut go = Vec::new();
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let (go_tx, go_rx) = mpsc::channel::<()>();
        go.push(go_tx);
        let (ready_tx, base) = (ready_tx.clone(), base.clone());
        clients.push(thread::spawn(move || -> Result<usize, String> {
            let want = expected(&base, i);
            let mut s = connect_small_rcvbuf(addr).map_err(|e| format!("connect: {e}"))?;
            s.write_all(&request(i))
                .map_err(|e| format!("request: {e}"))?;
            let mut prefix = vec![0u8; PREFIX];
            s.read_exact(&mut prefix)
                .map_err(|e| format!("first {PREFIX} B: {e}"))?;
            if prefix[..] != want[..PREFIX] {
                return Err("first bytes corrupted".into());
            }
            let _ = ready_tx.send(i);
            go_rx
                .recv_timeout(LIMIT)
                .map_err(|_| "never told to read on".to_string())?;
            let (got, _) = read_to_end(&mut s, want, PREFIX, false)?;
            Ok(got)
        }));
    }
    drop(ready_tx);
    for n in 0..CLIENTS {
        ready_rx.recv_timeout(LIMIT).unwrap_or_else(|_| {
            panic!("{io}: only {n} of {CLIENTS} clients read their first {PREFIX} B")
        });
    }

    server.shutdown_handle().shutdown();
    let joined = join_in_background(server);
    for tx in &go {
        let _ = tx.send(());
    }
    for (i, c) in clients.into_iter().enumerate() {
        let got = c
            .join()
            .expect("client thread")
            .unwrap_or_else(|e| panic!("{io}: client {i}: {e}"));
        assert_eq!(got, PAYLOAD, "{io}: client {i} got every byte, then EOF");
    }
    expect_joined(io, &joined);

    let log = lock(&log);
    eprintln!(
        "{io}: queued at on_shutdown (shard, bytes): {:?}",
        log.shutdowns
    );
    let mut shards: Vec<usize> = log.shutdowns.iter().map(|(s, _)| *s).collect();
    shards.sort_unstable();
    assert_eq!(shards, [0, 1], "{io}: on_shutdown once per shard");
    let queued: usize = log.shutdowns.iter().map(|(_, q)| q).sum();
    assert!(
        queued > 0,
        "{io}: nothing was left in the shards' queues at shutdown: the test did not \
         exercise the flush"
    );
    assert_eq!(log.requests, CLIENTS, "{io}: requests served");
    assert_eq!(log.refused, 0, "{io}: sends refused");
    assert_eq!(
        log.closes,
        vec![CloseReason::Shutdown; CLIENTS],
        "{io}: close reasons"
    );
    let total = metrics.total();
    assert_eq!(total.conns_accepted, CLIENTS as u64, "{io}: {total:?}");
    assert_eq!(total.conns_live, 0, "{io}: {total:?}");
    assert_eq!(
        total.bytes_out,
        (CLIENTS * PAYLOAD) as u64,
        "{io}: {total:?}"
    );
    assert_eq!(total.handler_panics, 0, "{io}: {total:?}");
    assert_eq!(total.closed_send_queue_full, 0, "{io}: {total:?}");
}

fn a_client_that_never_reads_cannot_hold_shutdown_past_its_deadline(io: Io) {
    const READERS: usize = 3;
    let (server, addr, log, base) = start(io, Duration::from_millis(500), None);
    let metrics = server.metrics();
    let mut readers = Vec::new();
    for i in 0..READERS {
        let mut s = connect(addr).unwrap_or_else(|e| panic!("{io}: connect: {e}"));
        s.write_all(&request(i))
            .unwrap_or_else(|e| panic!("{io}: request: {e}"));
        let mut all = vec![0u8; PAYLOAD];
        s.read_exact(&mut all)
            .unwrap_or_else(|e| panic!("{io}: reader {i}: {e}"));
        assert!(
            all == expected(&base, i),
            "{io}: reader {i} got a corrupted stream"
        );
        readers.push(s);
    }
    let stuck_id = READERS;
    let mut stuck = connect_small_rcvbuf(addr).unwrap_or_else(|e| panic!("{io}: connect: {e}"));
    stuck
        .write_all(&request(stuck_id))
        .unwrap_or_else(|e| panic!("{io}: request: {e}"));
    assert!(
        common::wait_until(LIMIT, || lock(&log).requests == READERS + 1),
        "{io}: the stuck client's request was never served"
    );

    server.shutdown_handle().shutdown();
    let joined = join_in_background(server);
    for (i, s) in readers.iter_mut().enumerate() {
        let end = read_to_end(s, &[], 0, false);
        assert_eq!(
            end,
            Ok((0, "EOF")),
            "{io}: reader {i} sees EOF after its data"
        );
    }
    drop(readers);
    // The stuck client is still open and has read nothing: only the deadline can
    // end its connection.
    expect_joined(io, &joined);

    let (got, end) = read_to_end(&mut stuck, expected(&base, stuck_id), 0, true)
        .unwrap_or_else(|e| panic!("{io}: stuck client: {e}"));
    let log = lock(&log);
    eprintln!(
        "{io}: stuck client got {got} B then {end}; queued at on_shutdown: {:?}",
        log.shutdowns
    );
    let mut shards: Vec<usize> = log.shutdowns.iter().map(|(s, _)| *s).collect();
    shards.sort_unstable();
    assert_eq!(shards, [0, 1], "{io}: on_shutdown once per shard");
    assert_eq!(
        log.closes,
        vec![CloseReason::Shutdown; READERS + 1],
        "{io}: close reasons"
    );
    // The bytes still queued at on_shutdown were the stuck client's (the others
    // had read everything): the deadline dropped them.
    let queued: usize = log.shutdowns.iter().map(|(_, q)| q).sum();
    if queued > 0 {
        assert!(
            got < PAYLOAD,
            "{io}: {queued} B were queued at shutdown, yet the stuck client got all"
        );
    }
    let total = metrics.total();
    assert_eq!(
        total.conns_accepted,
        (READERS + 1) as u64,
        "{io}: {total:?}"
    );
    assert_eq!(total.conns_live, 0, "{io}: {total:?}");
    assert_eq!(total.handler_panics, 0, "{io}: {total:?}");
}

fn the_port_serves_no_new_connection_once_shutdown_begins(io: Io) {
    let gate = Arc::new(Gate::default());
    let (server, addr, log, base) = start(io, LIMIT / 2, Some(gate.clone()));
    let metrics = server.metrics();

    // Served before shutdown; left with most of its stream queued, so the server
    // stays in its draining phase until this client goes.
    let mut held = connect(addr).unwrap_or_else(|e| panic!("{io}: connect: {e}"));
    held.write_all(&request(0))
        .unwrap_or_else(|e| panic!("{io}: request: {e}"));
    let mut prefix = vec![0u8; PREFIX];
    held.read_exact(&mut prefix)
        .unwrap_or_else(|e| panic!("{io}: the port serves before shutdown: {e}"));
    assert!(
        prefix[..] == expected(&base, 0)[..PREFIX],
        "{io}: corrupted stream"
    );

    server.shutdown_handle().shutdown();
    let entered = common::wait_until(LIMIT, || gate.entered() == 2);
    if !entered {
        gate.open();
        panic!("{io}: both shards entered on_shutdown");
    }
    // Both shards are inside on_shutdown: they have stopped accepting.
    let during = connect(addr).map(|mut s| {
        let _ = s.write_all(&request(1));
        s
    });
    gate.open();
    drop(held);
    let joined = join_in_background(server);
    expect_joined(io, &joined);
    let after = connect(addr).map(|mut s| {
        let _ = s.write_all(&request(2));
        s
    });

    // A connection that got through must end without ever being served.
    for (when, attempt) in [("during on_shutdown", during), ("after join", after)] {
        match attempt {
            Err(e) => eprintln!("{io}: connect {when}: {e}"),
            Ok(mut s) => {
                let end = read_to_end(&mut s, &[], 0, true);
                eprintln!("{io}: connect {when} succeeded, then {end:?}");
                assert!(
                    matches!(end, Ok((0, _))),
                    "{io}: a connection made {when} was served: {end:?}"
                );
            }
        }
    }
    let total = metrics.total();
    let log = lock(&log);
    assert_eq!(
        log.requests, 1,
        "{io}: only the pre-shutdown client's request was served"
    );
    assert!(
        log.closes.iter().all(|r| *r == CloseReason::Shutdown),
        "{io}: close reasons {:?}",
        log.closes
    );
    assert_eq!(total.conns_live, 0, "{io}: {total:?}");
    assert_eq!(total.conns_closed, total.conns_accepted, "{io}: {total:?}");
    assert_eq!(total.handler_panics, 0, "{io}: {total:?}");
}

shardline::per_backend! {
    a_client_that_never_reads_cannot_hold_shutdown_past_its_deadline => a_client_that_never_reads_cannot_hold_shutdown_past_its_deadline;
    every_queued_byte_is_delivered_before_the_shutdown_close => every_queued_byte_is_delivered_before_the_shutdown_close;
    the_port_serves_no_new_connection_once_shutdown_begins => the_port_serves_no_new_connection_once_shutdown_begins;
}
