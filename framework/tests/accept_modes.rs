//! Every accept mode on both backends: connections scaled to RLIMIT_NOFILE are all
//! served and spread over the shards (the distribution is printed); a per-shard
//! connection cap makes shards stop accepting — connections wait in the backlog —
//! and accepting resumes as connections close; outbound connections are not
//! counted by the cap; a cap derived from the sockets follows each shard's file
//! table with direct descriptors and the shared fd limit without.
//!
//! Runs as one test so that the fd-hungry cases never overlap.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::Mutex,
    time::Duration,
};

use shardline::{AcceptMode, Balance, ConnId, Ctx, Handler, Io, Metrics};

const MODES: [AcceptMode; 4] = [
    AcceptMode::ReusePort,
    AcceptMode::Exclusive,
    AcceptMode::Handoff(Balance::RoundRobin),
    AcceptMode::Handoff(Balance::LeastConnections),
];

fn nofile() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into a valid local struct.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) };
    assert_eq!(rc, 0, "getrlimit");
    r.rlim_cur
}

fn roundtrip(s: &mut TcpStream, i: usize) {
    let msg = (i as u32).to_le_bytes();
    s.write_all(&msg).expect("write");
    let mut back = [0u8; 4];
    s.read_exact(&mut back).expect("echo");
    assert_eq!(back, msg);
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    s
}

fn per_shard(metrics: &Metrics) -> Vec<u64> {
    metrics
        .snapshot()
        .iter()
        .map(|s| s.conns_accepted)
        .collect()
}

fn many_connections(io: Io, mode: AcceptMode, n: usize) -> Vec<u64> {
    // Mailboxes larger than the connection count: the handoff acceptor gives a
    // connection to another shard when the chosen one's mailbox is full (it never
    // stalls accepting), which on a loaded machine made the exact-balance check
    // below fail (seen: least-connections [4622, 4378] of 9000). The policy is
    // what is checked here, so the fallback must not come into play.
    let builder = common::builder(io, 2)
        .accept_mode(mode)
        .backlog(4096)
        .mailbox_capacity(n.next_power_of_two());
    let (server, addr) = common::start(builder, |_| common::Echo);
    let mut clients: Vec<TcpStream> = (0..n).map(|_| connect(addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        roundtrip(c, i);
    }
    let metrics = server.metrics();
    let dist = per_shard(&metrics);
    assert_eq!(dist.iter().sum::<u64>(), n as u64, "{io} {mode}: {dist:?}");
    if let AcceptMode::Handoff(_) = mode {
        // Sequential connects with no closes: round-robin is exact, and least
        // connections follows the (equal) live counts.
        let (lo, hi) = (dist.iter().min(), dist.iter().max());
        assert!(
            hi.zip(lo).is_some_and(|(h, l)| h - l <= 1),
            "{io} {mode}: {dist:?}"
        );
    }
    if mode == AcceptMode::Handoff(Balance::LeastConnections) {
        least_connections_follows_live_counts(&metrics, addr, &mut clients, io);
    }
    drop(clients);
    assert!(
        common::wait_until(Duration::from_secs(60), || metrics.total().conns_live == 0),
        "{io} {mode}: {:?}",
        metrics.total()
    );
    server.shutdown().expect("clean shutdown");
    dist
}

/// Closes every third client (uneven across shards), then opens exactly as many
/// connections as the shards' live counts differ by: all go to the emptier shard.
fn least_connections_follows_live_counts(
    metrics: &Metrics,
    addr: SocketAddr,
    clients: &mut Vec<TcpStream>,
    io: Io,
) {
    let before = clients.len();
    let mut i = 0;
    clients.retain(|_| {
        i += 1;
        i % 3 != 0 && i % 7 != 0
    });
    let live_total = |m: &Metrics| m.snapshot().iter().map(|s| s.conns_live).sum::<u64>();
    assert!(
        common::wait_until(Duration::from_secs(30), || live_total(metrics)
            == clients.len() as u64),
        "{io}: closes settle"
    );
    let live: Vec<u64> = metrics.snapshot().iter().map(|s| s.conns_live).collect();
    let gap = live.iter().max().unwrap_or(&0) - live.iter().min().unwrap_or(&0);
    for k in 0..gap as usize {
        let mut c = connect(addr);
        roundtrip(&mut c, before + k);
        clients.push(c);
    }
    let after: Vec<u64> = metrics.snapshot().iter().map(|s| s.conns_live).collect();
    assert!(
        after.iter().all(|&l| l == after[0]),
        "{io}: live {live:?} + {gap} new connections -> {after:?}, not level"
    );
}

fn cap_pauses_and_resumes(io: Io, mode: AcceptMode) {
    const CAP: usize = 20;
    // One shard: with reuseport the kernel's hash, not the cap, would otherwise
    // decide which shard a waiting connection waits for.
    let builder = common::builder(io, 1)
        .accept_mode(mode)
        .max_connections_per_shard(CAP);
    let (server, addr) = common::start(builder, |_| common::Echo);
    let metrics = server.metrics();
    let mut served = Vec::new();
    // Fill the shard one connection at a time (each answered before the next).
    for i in 0..CAP {
        let mut c = connect(addr);
        roundtrip(&mut c, i);
        served.push(c);
    }
    // Over the cap: the kernel completes the handshakes, nobody accepts.
    let mut waiting: Vec<TcpStream> = (0..5).map(|_| connect(addr)).collect();
    for (i, w) in waiting.iter_mut().enumerate() {
        w.write_all(&(i as u32).to_le_bytes()).expect("write");
    }
    std::thread::sleep(Duration::from_millis(300));
    let live = metrics.total().conns_live;
    assert_eq!(live, CAP as u64, "{io} {mode}: no shard goes past its cap");
    // Close five served connections: the waiting ones get served.
    served.truncate(CAP - 5);
    for (i, w) in waiting.iter_mut().enumerate() {
        let mut back = [0u8; 4];
        w.read_exact(&mut back).expect("served after others closed");
        assert_eq!(back, (i as u32).to_le_bytes(), "{io} {mode}");
    }
    let accepted = metrics.total().conns_accepted;
    assert_eq!(
        accepted,
        CAP as u64 + 5,
        "{io} {mode}: no accept-then-close"
    );
    drop(served);
    drop(waiting);
    server.shutdown().expect("clean shutdown");
}

/// `max_connections_from_sockets`: with direct descriptors each shard's cap
/// comes from its own file table, on ordinary fds the shards share the
/// process's limit. The reserve is chosen so the expected caps are small:
/// (limit − reserve) ÷ 2 = 12, so 12 per shard with direct descriptors, 6 per
/// shard (12 in all) without. Reuseport is left out: the kernel's hash, not
/// the cap, decides which shard a waiting connection waits for; in the other
/// modes a connection goes to a shard with room.
fn cap_follows_the_sockets(io: Io, mode: AcceptMode) {
    const SHARDS: usize = 2;
    const ROOM: u64 = 12;
    let limit = nofile().min(1 << 20);
    let builder = common::builder(io, SHARDS)
        .accept_mode(mode)
        .max_connections_from_sockets(2, (limit - 2 * ROOM) as usize);
    let direct = io == Io::Uring
        && !std::env::var(shardline::ENV_DIRECT_DESCRIPTORS).is_ok_and(|v| v.trim() == "0");
    let expected = if direct { ROOM * SHARDS as u64 } else { ROOM };
    let (server, addr) = common::start(builder, |_| common::Echo);
    let metrics = server.metrics();
    let clients: Vec<TcpStream> = (0..expected + 8).map(|_| connect(addr)).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while metrics.total().conns_live < expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // Room for a shard to go past its cap, if it would.
    std::thread::sleep(Duration::from_millis(300));
    let live: Vec<u64> = metrics.snapshot().iter().map(|s| s.conns_live).collect();
    assert_eq!(
        live.iter().sum::<u64>(),
        expected,
        "{io} {mode} (direct descriptors: {direct}): live per shard {live:?}"
    );
    drop(clients);
    server.shutdown().expect("clean shutdown");
}

/// Echoes, and opens an outbound connection (to `sink`) for every accepted one.
struct EchoWithUpstream {
    sink: SocketAddr,
}

impl Handler for EchoWithUpstream {
    type Msg = ();
    type Timer = ();
    type Conn = ();
    type Listener = ();

    fn on_accept(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        _conn: ConnId,
        _listener: shardline::Listener<'_, Self::Listener>,
        _peer: SocketAddr,
    ) {
        ctx.connect(self.sink, ()).expect("connect starts");
    }

    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _state: &mut Self::Conn,
        data: &[u8],
    ) -> usize {
        let _ = ctx.send(conn, data);
        data.len()
    }
}

/// The cap counts accepted connections only: a handler's outbound connections
/// (a proxy's upstreams) neither use up its room nor are refused by it.
fn cap_counts_accepted_only(io: Io, mode: AcceptMode) {
    const CAP: usize = 4;
    let sink = TcpListener::bind("127.0.0.1:0").expect("bind sink");
    let sink_addr = sink.local_addr().expect("addr");
    let builder = common::builder(io, 1)
        .accept_mode(mode)
        .max_connections_per_shard(CAP);
    let (server, addr) = common::start(builder, move |_| EchoWithUpstream { sink: sink_addr });
    let metrics = server.metrics();
    let mut served = Vec::new();
    for i in 0..CAP {
        let mut c = connect(addr);
        roundtrip(&mut c, i);
        served.push(c);
    }
    // Each has its outbound connection: twice the cap is open, all served.
    let upstreams: Vec<TcpStream> = (0..CAP)
        .map(|_| sink.accept().expect("upstream").0)
        .collect();
    assert_eq!(metrics.total().conns_accepted, CAP as u64, "{io} {mode}");
    // One more waits for room.
    let mut waiting = connect(addr);
    waiting.write_all(&7u32.to_le_bytes()).expect("write");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        metrics.total().conns_accepted,
        CAP as u64,
        "{io} {mode}: at the cap"
    );
    served.pop();
    let mut back = [0u8; 4];
    waiting
        .read_exact(&mut back)
        .expect("served once one closed");
    assert_eq!(back, 7u32.to_le_bytes(), "{io} {mode}");
    drop((served, waiting, upstreams));
    server.shutdown().expect("clean shutdown");
}

/// Connections waiting in the backlog when shutdown begins are accepted and closed
/// cleanly (FIN, so the client reads EOF), not reset by a closing listener.
fn queued_at_shutdown_are_closed_cleanly(io: Io, mode: AcceptMode) {
    let builder = common::builder(io, 1)
        .accept_mode(mode)
        .max_connections_per_shard(1);
    let (server, addr) = common::start(builder, |_| common::Echo);
    let metrics = server.metrics();
    let mut first = connect(addr);
    roundtrip(&mut first, 0);
    let mut queued: Vec<TcpStream> = (0..5).map(|_| connect(addr)).collect();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        metrics.total().conns_accepted,
        1,
        "{io} {mode}: the rest wait"
    );
    server.shutdown().expect("clean shutdown");
    for (i, q) in queued.iter_mut().enumerate() {
        let mut buf = [0u8; 16];
        match q.read(&mut buf) {
            Ok(0) => {}
            other => panic!("{io} {mode}: queued connection {i}: expected EOF, got {other:?}"),
        }
    }
    let mut buf = [0u8; 16];
    assert_eq!(first.read(&mut buf).expect("EOF"), 0, "{io} {mode}");
    assert_eq!(
        metrics.total().conns_accepted,
        6,
        "{io} {mode}: all were accepted"
    );
}

/// Each backend's test sizes its connection count to the whole fd limit, which the
/// process shares: one at a time, or the two run out of fds together.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn every_mode(io: Io) {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Each loopback connection costs two fds here (client and server side).
    let n = ((nofile().saturating_sub(1000)) / 2).clamp(100, 9000) as usize;
    for mode in MODES {
        let small = many_connections(io, mode, 64);
        let large = many_connections(io, mode, n);
        println!("{io} {mode}: 64 conns -> {small:?}; {n} conns -> {large:?}");
        cap_pauses_and_resumes(io, mode);
        cap_counts_accepted_only(io, mode);
        if mode != AcceptMode::ReusePort {
            cap_follows_the_sockets(io, mode);
        }
        queued_at_shutdown_are_closed_cleanly(io, mode);
    }
}

shardline::per_backend! {
    every_mode => every_mode;
}
