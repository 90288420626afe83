//! Backpressure on one shard with small limits (high water 256 KiB, low water 64 KiB,
//! hard limit 1 MiB):
//! - a client that never reads, talking to a handler that ignores backpressure, gets
//!   `on_backpressure` first and is then closed with `CloseReason::SendQueueFull`,
//!   while another connection on the same shard keeps doing request/response rounds
//!   before, during and after; the outbound queue never grows past the hard limit
//!   (plus the one send that crossed it);
//! - a handler that pauses reading on backpressure and resumes on drained moves 8 MiB
//!   through a client that stops reading for a while: every byte comes back, nothing
//!   is closed for a limit, `on_drained` is called, and the client's EOF (sent while
//!   reading was paused) still closes the connection as `PeerClosed`.

mod common;

use std::{
    collections::HashMap,
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::{Arc, Mutex, MutexGuard},
    thread,
};

use shardline::{CloseReason, ConnId, Ctx, Handler, Io, Limits};

const KIB: usize = 1024;
/// What the amplifier sends back for every request byte.
const REPLY: usize = 64 * KIB;
const HIGH_WATER: usize = 256 * KIB;
const LOW_WATER: usize = 64 * KIB;
const HARD_LIMIT: usize = 1024 * KIB;
/// Bytes the slow reader of the pausing-echo test pushes through.
const ECHO_TOTAL: usize = 8 * 1024 * KIB;
/// Upper bound on the never-reading client's requests (4096 x 64 KiB = 256 MiB asked
/// for, far past any kernel buffering plus the hard limit).
const MAX_REQUESTS: usize = 4096;
/// Liveness bound for every wait.
use common::LIMIT;

fn limits() -> Limits {
    Limits {
        send_high_water: HIGH_WATER,
        send_low_water: LOW_WATER,
        send_hard_limit: HARD_LIMIT,
        ..Limits::default()
    }
}

/// The byte at `offset` of a test stream. 251 does not divide 64 KiB, so a stream
/// shifted by a lost or repeated piece does not match.
fn pattern(offset: usize) -> u8 {
    (offset % 251) as u8
}

fn reply() -> Vec<u8> {
    (0..REPLY).map(pattern).collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Backpressure,
    Drained,
    Close(CloseReason),
}

/// What the handlers saw, keyed by the client's address (its `local_addr`).
#[derive(Debug, Default)]
struct Log {
    events: Vec<(SocketAddr, Event)>,
    /// Bytes handed to `on_data`, per client.
    bytes_in: HashMap<SocketAddr, usize>,
    /// Largest `ctx.send_queue_len` seen on any connection.
    max_queued: usize,
}

impl Log {
    fn has(&self, peer: SocketAddr, event: &Event) -> bool {
        self.position(peer, event).is_some()
    }

    fn position(&self, peer: SocketAddr, event: &Event) -> Option<usize> {
        self.events
            .iter()
            .position(|(p, e)| *p == peer && e == event)
    }

    fn close_reason(&self, peer: SocketAddr) -> Option<CloseReason> {
        self.events.iter().find_map(|(p, e)| match e {
            Event::Close(reason) if *p == peer => Some(reason.clone()),
            _ => None,
        })
    }

    fn bytes_in(&self, peer: SocketAddr) -> usize {
        self.bytes_in.get(&peer).copied().unwrap_or(0)
    }
}

type Shared = Arc<Mutex<Log>>;

fn lock(log: &Shared) -> MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bookkeeping shared by both handlers.
struct Observer {
    log: Shared,
    peers: HashMap<ConnId, SocketAddr>,
}

impl Observer {
    fn new(log: Shared) -> Observer {
        Observer {
            log,
            peers: HashMap::new(),
        }
    }

    fn record(&self, conn: ConnId, event: Event) {
        if let Some(peer) = self.peers.get(&conn) {
            lock(&self.log).events.push((*peer, event));
        }
    }

    fn saw_queue<H: Handler>(&self, ctx: &Ctx<'_, H>, conn: ConnId) {
        let queued = ctx.send_queue_len(conn).unwrap_or(0);
        let mut log = lock(&self.log);
        log.max_queued = log.max_queued.max(queued);
    }

    fn saw_data(&self, conn: ConnId, n: usize) {
        if let Some(peer) = self.peers.get(&conn) {
            *lock(&self.log).bytes_in.entry(*peer).or_default() += n;
        }
    }
}

/// Sends 64 KiB back for every byte it receives and ignores backpressure.
struct Amplifier {
    obs: Observer,
    reply: Vec<u8>,
}

impl Handler for Amplifier {
    type Msg = ();
    type Timer = ();
    type Conn = ();
    type Listener = ();

    fn on_accept(
        &mut self,
        _ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _listener: shardline::Listener<'_, Self::Listener>,
        peer: SocketAddr,
    ) {
        self.obs.peers.insert(conn, peer);
    }

    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _state: &mut Self::Conn,
        data: &[u8],
    ) -> usize {
        for _ in data {
            // Refused once the hard limit closed the connection; keep going anyway,
            // like a careless application would.
            let _ = ctx.send(conn, &self.reply);
            self.obs.saw_queue(ctx, conn);
        }
        self.obs.saw_data(conn, data.len());
        data.len()
    }

    fn on_backpressure(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _state: &mut Self::Conn) {
        self.obs.saw_queue(ctx, conn);
        self.obs.record(conn, Event::Backpressure);
    }

    fn on_drained(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _state: &mut Self::Conn) {
        self.obs.saw_queue(ctx, conn);
        self.obs.record(conn, Event::Drained);
    }

    fn on_close(
        &mut self,
        _ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _state: Self::Conn,
        reason: &CloseReason,
    ) {
        self.obs.record(conn, Event::Close(reason.clone()));
        self.obs.peers.remove(&conn);
    }
}

/// Echoes, pausing reads on backpressure and resuming them once drained.
struct PausingEcho {
    obs: Observer,
}

impl Handler for PausingEcho {
    type Msg = ();
    type Timer = ();
    type Conn = ();
    type Listener = ();

    fn on_accept(
        &mut self,
        _ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _listener: shardline::Listener<'_, Self::Listener>,
        peer: SocketAddr,
    ) {
        self.obs.peers.insert(conn, peer);
    }

    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _state: &mut Self::Conn,
        data: &[u8],
    ) -> usize {
        // A refusal closes the connection; the test sees it in `on_close`.
        let _ = ctx.send(conn, data);
        self.obs.saw_queue(ctx, conn);
        self.obs.saw_data(conn, data.len());
        data.len()
    }

    fn on_backpressure(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _state: &mut Self::Conn) {
        self.obs.saw_queue(ctx, conn);
        self.obs.record(conn, Event::Backpressure);
        ctx.pause_reading(conn);
    }

    fn on_drained(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _state: &mut Self::Conn) {
        self.obs.saw_queue(ctx, conn);
        self.obs.record(conn, Event::Drained);
        ctx.resume_reading(conn);
    }

    fn on_close(
        &mut self,
        _ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _state: Self::Conn,
        reason: &CloseReason,
    ) {
        self.obs.record(conn, Event::Close(reason.clone()));
        self.obs.peers.remove(&conn);
    }
}

/// `n` request/response rounds on `b`: one byte out, exactly one 64 KiB reply back.
fn rounds(io: Io, b: &mut TcpStream, n: usize, done: &mut usize, phase: &str, reply: &[u8]) {
    let mut buf = vec![0u8; REPLY];
    for _ in 0..n {
        b.write_all(b"?")
            .and_then(|()| b.read_exact(&mut buf))
            .unwrap_or_else(|e| {
                panic!(
                    "{io}: B round {} ({phase}) failed after {done} rounds: {e}",
                    *done + 1
                )
            });
        assert!(
            buf == reply,
            "{io}: B round {} ({phase}): reply differs from the expected 64 KiB",
            *done + 1
        );
        *done += 1;
    }
}

/// Sends one request byte on `a` and waits until the handler has seen it or `a` is
/// closed. Returns false once `a` is closed or can no longer be written.
fn request(io: Io, log: &Shared, a: &mut TcpStream, a_peer: SocketAddr, sent: &mut usize) -> bool {
    if lock(log).close_reason(a_peer).is_some() || a.write_all(b"!").is_err() {
        return false;
    }
    *sent += 1;
    let seen = common::wait_until(LIMIT, || {
        let log = lock(log);
        log.bytes_in(a_peer) >= *sent || log.close_reason(a_peer).is_some()
    });
    assert!(seen, "{io}: request {sent} of A was never handled");
    lock(log).close_reason(a_peer).is_none()
}

fn never_reading_client_is_closed_at_hard_limit_while_others_flow(io: Io) {
    let log = Shared::default();
    let reply = reply();
    let (server, addr) = {
        let (log, reply) = (log.clone(), reply.clone());
        common::start(common::builder(io, 1).limits(limits()), move |_| {
            Amplifier {
                obs: Observer::new(log.clone()),
                reply: reply.clone(),
            }
        })
    };

    let mut b = common::connect_bounded(addr, io);
    let b_peer = b.local_addr().expect("B address");
    let mut b_done = 0;
    rounds(io, &mut b, 10, &mut b_done, "before A", &reply);

    // A asks for 64 KiB at a time, one request per callback (each waits until the
    // handler saw the previous one), and never reads.
    let mut a = common::connect_bounded(addr, io);
    let a_peer = a.local_addr().expect("A address");
    let mut sent = 0;
    while sent < MAX_REQUESTS && !lock(&log).has(a_peer, &Event::Backpressure) {
        if !request(io, &log, &mut a, a_peer, &mut sent) {
            break;
        }
    }
    {
        let log = lock(&log);
        assert!(
            log.has(a_peer, &Event::Backpressure),
            "{io}: A never got on_backpressure after {sent} requests ({} B asked for); \
                 close: {:?}",
            sent * REPLY,
            log.close_reason(a_peer)
        );
        assert_eq!(
            log.close_reason(a_peer),
            None,
            "{io}: A must not be closed before passing the hard limit"
        );
    }

    // A is over high water with a stuck queue: B still flows, and A stays open.
    rounds(io, &mut b, 20, &mut b_done, "A backpressured", &reply);
    assert_eq!(
        lock(&log).close_reason(a_peer),
        None,
        "{io}: backpressure alone must not close A"
    );

    while sent < MAX_REQUESTS && request(io, &log, &mut a, a_peer, &mut sent) {}
    assert!(
        common::wait_until(LIMIT, || lock(&log).close_reason(a_peer).is_some()),
        "{io}: A was never closed after {sent} requests ({} B asked for)",
        sent * REPLY
    );

    // A is gone: B still flows.
    rounds(io, &mut b, 20, &mut b_done, "after A closed", &reply);
    assert_eq!(b_done, 50, "{io}: B finished every round");

    {
        let log = lock(&log);
        assert_eq!(
            log.close_reason(a_peer),
            Some(CloseReason::SendQueueFull),
            "{io}: A's close reason"
        );
        let bp = log.position(a_peer, &Event::Backpressure);
        let closed = log.position(a_peer, &Event::Close(CloseReason::SendQueueFull));
        assert!(
            bp < closed,
            "{io}: on_backpressure ({bp:?}) comes before on_close ({closed:?}) for A"
        );
        assert!(
            log.max_queued <= HARD_LIMIT + REPLY,
            "{io}: outbound queue reached {} B, over the hard limit {HARD_LIMIT} + one \
                 {REPLY} B send",
            log.max_queued
        );
        assert!(
            !log.has(b_peer, &Event::Backpressure),
            "{io}: B (at most one reply queued) never gets backpressure"
        );
        assert_eq!(
            log.close_reason(b_peer),
            None,
            "{io}: B stays open while A is closed"
        );
    }
    let total = server.metrics().total();
    assert_eq!(total.closed_send_queue_full, 1, "{io}: {total:?}");
    assert_eq!(total.handler_panics, 0, "{io}: {total:?}");

    // Now drain A: what reached it is a prefix of the amplified stream, cut short
    // (the queue was dropped), and then the connection ends.
    let asked = lock(&log).bytes_in(a_peer) * REPLY;
    let mut buf = vec![0u8; 64 * KIB];
    let mut received = 0usize;
    let end = loop {
        match a.read(&mut buf) {
            Ok(0) => break "EOF",
            Ok(n) => {
                let bad = (0..n).find(|&i| buf[i] != pattern((received + i) % REPLY));
                assert_eq!(
                    bad.map(|i| received + i),
                    None,
                    "{io}: A received a corrupted stream"
                );
                received += n;
                assert!(
                    received < asked,
                    "{io}: A received {received} B, all of the {asked} B it asked for"
                );
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break "reset",
            Err(e) => panic!("{io}: A never saw the close ({received} B read): {e}"),
        }
    };
    eprintln!(
        "{io}: A asked for {asked} B in {sent} requests, read {received} B then {end}; \
             max queue {} B",
        lock(&log).max_queued
    );

    drop(b);
    common::shutdown_within(server, io);
}

fn pausing_echo_moves_8_mib_through_a_slow_reader_without_closing(io: Io) {
    let log = Shared::default();
    let (server, addr) = {
        let log = log.clone();
        common::start(common::builder(io, 1).limits(limits()), move |_| {
            PausingEcho {
                obs: Observer::new(log.clone()),
            }
        })
    };
    let mut c = common::connect_bounded(addr, io);
    let peer = c.local_addr().expect("client address");
    let mut w = c.try_clone().expect("clone client");
    let writer = thread::spawn(move || -> io::Result<()> {
        let base: Vec<u8> = (0..64 * KIB + 251).map(pattern).collect();
        let mut off = 0;
        while off < ECHO_TOTAL {
            let n = (64 * KIB).min(ECHO_TOTAL - off);
            w.write_all(&base[off % 251..off % 251 + n])?;
            off += n;
        }
        w.shutdown(Shutdown::Write)
    });

    // Do not read until the server had to push back.
    assert!(
        common::wait_until(LIMIT, || {
            let log = lock(&log);
            log.has(peer, &Event::Backpressure) || log.close_reason(peer).is_some()
        }),
        "{io}: the echo of a non-reading client never hit high water"
    );
    {
        let log = lock(&log);
        assert!(
            log.has(peer, &Event::Backpressure),
            "{io}: closed without on_backpressure: {:?} (max queue {} B)",
            log.close_reason(peer),
            log.max_queued
        );
    }
    let mut buf = vec![0u8; 64 * KIB];
    let mut received = 0;
    while received < ECHO_TOTAL {
        let n = c.read(&mut buf).unwrap_or_else(|e| {
            let log = lock(&log);
            panic!(
                "{io}: read after {received} B: {e}; close: {:?}, max queue {} B",
                log.close_reason(peer),
                log.max_queued
            )
        });
        assert!(
            n > 0,
            "{io}: EOF after {received} of {ECHO_TOTAL} B; close: {:?}",
            lock(&log).close_reason(peer)
        );
        assert!(
            received + n <= ECHO_TOTAL,
            "{io}: more bytes echoed than sent"
        );
        let bad = (0..n).find(|&i| buf[i] != pattern(received + i));
        assert_eq!(
            bad.map(|i| received + i),
            None,
            "{io}: echo differs at this offset"
        );
        received += n;
    }
    // The client's FIN arrived while the server had paused reading: once it
    // resumes and reads the rest, it must see the EOF and close.
    match c.read(&mut buf) {
        Ok(0) => {}
        other => panic!(
            "{io}: expected EOF after the whole echo, got {other:?}; server-side \
             close: {:?}, on_data saw {} B",
            lock(&log).close_reason(peer),
            lock(&log).bytes_in(peer)
        ),
    }
    writer
        .join()
        .expect("writer thread")
        .unwrap_or_else(|e| panic!("{io}: writer: {e}"));

    assert!(
        common::wait_until(LIMIT, || lock(&log).close_reason(peer).is_some()),
        "{io}: the connection was never closed after EOF"
    );
    {
        let log = lock(&log);
        assert_eq!(
            log.close_reason(peer),
            Some(CloseReason::PeerClosed),
            "{io}: close reason"
        );
        assert!(
            log.has(peer, &Event::Drained),
            "{io}: on_drained was called"
        );
        assert!(
            log.max_queued <= HARD_LIMIT,
            "{io}: queue reached {} B, over the hard limit",
            log.max_queued
        );
    }
    let total = server.metrics().total();
    assert_eq!(total.closed_send_queue_full, 0, "{io}: {total:?}");
    assert_eq!(total.bytes_in, ECHO_TOTAL as u64, "{io}: {total:?}");
    assert_eq!(total.bytes_out, ECHO_TOTAL as u64, "{io}: {total:?}");
    drop(c);
    common::shutdown_within(server, io);
}

shardline::per_backend! {
    never_reading_client_is_closed_at_hard_limit_while_others_flow => never_reading_client_is_closed_at_hard_limit_while_others_flow;
    pausing_echo_moves_8_mib_through_a_slow_reader_without_closing => pausing_echo_moves_8_mib_through_a_slow_reader_without_closing;
}
