//! `max_connections_per_backend` with its queue: requests beyond the cap wait
//! and then proceed (the backend never sees more than the cap at once); a
//! full queue answers 503 at once; a request that waited `queue_timeout_ms`
//! gets 503 with `Retry-After`; a TCP listener closes clients when every
//! backend is at its cap. The caps and queues are per shard, so the exact
//! counts are checked at one shard and the global bound at four. Both I/O
//! backends.

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use common::{
    get, http_config, wait_until, Answer, HttpBackend, HttpClient, TcpBackend, TestProxy,
    SHARD_COUNTS, WAIT,
};
use shardline::Io;

/// An HTTP backend that answers every request after `ms`, counting the
/// requests it is working on at once (and the most so far).
fn counting_backend(ms: u64) -> (TcpBackend, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let now = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (n, m) = (now.clone(), most.clone());
    let backend = TcpBackend::start(move |mut s: TcpStream| {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => return,
                    Ok(k) => buf.extend_from_slice(&chunk[..k]),
                }
            }
            let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0) + 4;
            buf.drain(..end);
            let cur = n.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(cur, Ordering::SeqCst);
            thread::sleep(Duration::from_millis(ms));
            n.fetch_sub(1, Ordering::SeqCst);
            if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .is_err()
            {
                return;
            }
        }
    });
    (backend, now, most)
}

fn cap(backends: &[SocketAddr], n: u32, queue: usize, timeout_ms: u64) -> String {
    http_config(
        backends,
        &format!(
            "max_connections_per_backend = {n}\nqueue = {queue}\nqueue_timeout_ms = {timeout_ms}\n"
        ),
    )
}

/// `GET /x` on a new connection, in a thread: (status, Retry-After, when).
fn spawn_get(addr: SocketAddr) -> thread::JoinHandle<(u16, Option<String>, Instant)> {
    thread::spawn(move || {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut c = HttpClient::new(s);
        c.send(&get("/x"));
        let r = c.response(false);
        let retry = r.header("Retry-After").map(str::to_string);
        (r.status, retry, Instant::now())
    })
}

fn requests_beyond_the_cap_wait_and_then_proceed(io: Io) {
    for shards in SHARD_COUNTS {
        let (backend, _, most) = counting_backend(400);
        let n = 4;
        let proxy = TestProxy::start(io, shards, &cap(&[backend.addr], n, 100, 20_000));
        let clients: Vec<_> = (0..12).map(|_| spawn_get(proxy.addr)).collect();
        let statuses: Vec<u16> = clients
            .into_iter()
            .map(|h| h.join().expect("client").0)
            .collect();
        assert!(
            statuses.iter().all(|&s| s == 200),
            "{}: {statuses:?}",
            proxy.label
        );
        // Each shard allows ceil(n / shards).
        let per_shard = (n as usize).div_ceil(shards);
        let most = most.load(Ordering::SeqCst);
        assert!(
            most <= per_shard * shards,
            "{}: the backend had {most} requests at once",
            proxy.label
        );
        assert!(most >= 1, "{}", proxy.label);
    }
}

fn a_full_queue_and_a_queue_timeout_answer_503(io: Io) {
    let b = HttpBackend::start("a", Answer::SlowInfo(4000));
    // One shard: one connection slot, one queue place, 1 s of waiting.
    let proxy = TestProxy::start(io, 1, &cap(&[b.addr()], 1, 1, 1000));
    let first = spawn_get(proxy.addr);
    assert!(
        wait_until(WAIT, || b.traffic() == 1),
        "{}: the first request never reached the backend",
        proxy.label
    );
    let queued = spawn_get(proxy.addr);
    // Give the second request time to be queued before the third comes.
    thread::sleep(Duration::from_millis(100));
    let (status, retry, refused_at) = spawn_get(proxy.addr).join().expect("third");
    assert_eq!(status, 503, "{}: queue full", proxy.label);
    assert_eq!(retry.as_deref(), Some("1"), "{}", proxy.label);
    let (status, retry, timed_out_at) = queued.join().expect("second");
    assert_eq!(status, 503, "{}: queue timeout", proxy.label);
    assert_eq!(retry.as_deref(), Some("1"), "{}", proxy.label);
    let (status, _, served_at) = first.join().expect("first");
    assert_eq!(status, 200, "{}", proxy.label);
    assert!(
        refused_at < timed_out_at && timed_out_at < served_at,
        "{}: the full queue refused at once, the queued request timed out before \
         the slot freed",
        proxy.label
    );
    // Neither 503 reached the backend; with the slot free, the next is served.
    assert_eq!(b.traffic(), 1, "{}", proxy.label);
    let (status, _, _) = spawn_get(proxy.addr).join().expect("fourth");
    assert_eq!(status, 200, "{}", proxy.label);
}

fn a_queued_request_proceeds_when_the_slot_frees(io: Io) {
    let (backend, _, most) = counting_backend(600);
    let proxy = TestProxy::start(io, 1, &cap(&[backend.addr], 1, 10, 20_000));
    let first = spawn_get(proxy.addr);
    assert!(
        wait_until(WAIT, || most.load(Ordering::SeqCst) == 1),
        "{}",
        proxy.label
    );
    let second = spawn_get(proxy.addr);
    let (s1, _, t1) = first.join().expect("first");
    let (s2, _, t2) = second.join().expect("second");
    assert_eq!((s1, s2), (200, 200), "{}", proxy.label);
    assert!(
        t1 < t2,
        "{}: the queued request finished first",
        proxy.label
    );
    assert_eq!(most.load(Ordering::SeqCst), 1, "{}", proxy.label);
}

fn tcp_clients_are_closed_when_every_backend_is_at_its_cap(io: Io) {
    let backend = TcpBackend::start(|mut s| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let cfg = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"tcp\"\npool = \"p\"\n\
         [pool.p]\nbackends = [{{ address = \"{}\" }}]\nmax_connections_per_backend = 1\n",
        backend.addr
    );
    let proxy = TestProxy::start(io, 1, &cfg);
    let echo = |s: &mut TcpStream| -> bool {
        if s.write_all(b"ping").is_err() {
            return false;
        }
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).is_ok() && &buf == b"ping"
    };
    let mut first = proxy.connect();
    assert!(echo(&mut first), "{}: first", proxy.label);
    let mut second = proxy.connect();
    assert!(!echo(&mut second), "{}: over the cap, relayed", proxy.label);
    drop(first);
    let back = wait_until(WAIT, || echo(&mut proxy.connect()));
    assert!(back, "{}: the slot never freed", proxy.label);
    assert_eq!(backend.accepted(), 2, "{}", proxy.label);
}

shardline::per_backend! {
    requests_beyond_the_cap_wait_and_then_proceed => requests_beyond_the_cap_wait_and_then_proceed;
    a_full_queue_and_a_queue_timeout_answer_503 => a_full_queue_and_a_queue_timeout_answer_503;
    a_queued_request_proceeds_when_the_slot_frees => a_queued_request_proceeds_when_the_slot_frees;
    tcp_clients_are_closed_when_every_backend_is_at_its_cap => tcp_clients_are_closed_when_every_backend_is_at_its_cap;
}
