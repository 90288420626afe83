//! L4 idle timeout (`[timeouts] tcp_idle_ms`): a session in which neither
//! side sends a byte for that long is closed, both sides, and counted; not
//! before, and not while a byte trickles every fifth of it — whether the
//! session copies or splices (spliced bytes never reach the proxy, and still
//! count as traffic). A reload changes the timeout of established sessions.
//! Both I/O backends, 1 and 4 shards.

mod common;

use std::{
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use common::{sample_sum, wait_until, TcpBackend, TestProxy, SHARD_COUNTS, WAIT};
use shardline::Io;

const IDLE_MS: u64 = 500;

fn config(backend: SocketAddr, splice: &str, idle_ms: u64) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"tcp\"\npool = \"p\"\n\
         [pool.p]\nbackends = [{{ address = \"{backend}\" }}]\n\
         [limits]\nsplice = \"{splice}\"\n\
         [timeouts]\ntcp_idle_ms = {idle_ms}\n"
    )
}

/// Reads until EOF (or a reset) and returns what came.
fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return all,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return all,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e} after {} bytes", all.len()),
        }
    }
}

/// Echoes until EOF; then says how many bytes it echoed.
fn echo_backend(done: mpsc::Sender<usize>) -> TcpBackend {
    TcpBackend::start(move |mut s| {
        let mut buf = [0u8; 16 << 10];
        let mut seen = 0;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen += n;
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = s.shutdown(Shutdown::Write);
        let _ = done.send(seen);
    })
}

/// The client sees EOF, after at least `IDLE_MS` of silence and not much more
/// (one look later, plus a loaded machine's slack).
fn closed_after_silence(label: &str, s: &mut TcpStream, quiet: Instant) {
    assert!(read_to_eof(s).is_empty(), "{label}: nothing more");
    let after = quiet.elapsed();
    assert!(
        after >= Duration::from_millis(IDLE_MS - 20),
        "{label}: closed after {after:?} of silence"
    );
    assert!(
        after < Duration::from_millis(IDLE_MS * 2 + 1500),
        "{label}: closed only after {after:?}"
    );
}

fn idle_closed(proxy: &TestProxy) -> f64 {
    sample_sum(
        &proxy.scrape(),
        "shardline_proxy_idle_closed_total",
        &["kind=\"tcp\""],
    )
}

/// Copying: a byte each way every fifth of the timeout for three timeouts
/// keeps the session; then silence closes it, both sides.
fn a_silent_session_is_closed_and_a_trickling_one_is_not(io: Io) {
    for shards in SHARD_COUNTS {
        let (tx, rx) = mpsc::channel();
        let backend = echo_backend(tx);
        let proxy = TestProxy::start(io, shards, &config(backend.addr, "never", IDLE_MS));
        let label = proxy.label.clone();
        let mut s = proxy.connect();
        let start = Instant::now();
        let mut b = [0u8; 1];
        let mut sent = 0;
        let active = |p: &TestProxy| {
            sample_sum(
                &p.scrape(),
                "shardline_proxy_backend_active_connections",
                &[],
            )
        };
        let quiet = loop {
            if sent == 1 {
                assert_eq!(active(&proxy), 1.0, "{label}: the session's upstream");
            }
            s.write_all(b"x").expect("session still open");
            s.read_exact(&mut b).expect("echo");
            sent += 1;
            if start.elapsed() > Duration::from_millis(IDLE_MS * 3 + 200) {
                break Instant::now();
            }
            thread::sleep(Duration::from_millis(IDLE_MS / 5));
        };
        closed_after_silence(&label, &mut s, quiet);
        assert_eq!(
            rx.recv_timeout(WAIT)
                .expect("the backend's side closed too"),
            sent,
            "{label}"
        );
        assert_eq!(idle_closed(&proxy), 1.0, "{label}");
        assert!(
            wait_until(WAIT, || active(&proxy) == 0.0),
            "{label}: no active upstream once closed"
        );
    }
}

/// Splicing: the client streams to a backend that only reads, for three
/// timeouts; from its first full read the direction is relayed in the kernel
/// (nothing reaches the proxy's handler), yet the session stays open; then
/// silence closes it.
fn spliced_traffic_keeps_a_session_open(io: Io) {
    const BURST: usize = 256 << 10;
    for shards in SHARD_COUNTS {
        let (tx, rx) = mpsc::channel();
        let backend = TcpBackend::start(move |mut s| {
            let _ = tx.send(read_to_eof(&mut s).len());
        });
        let proxy = TestProxy::start(io, shards, &config(backend.addr, "always", IDLE_MS));
        let label = proxy.label.clone();
        let mut s = proxy.connect();
        let start = Instant::now();
        let burst = vec![0x5a; BURST];
        let mut sent = 0;
        let quiet = loop {
            s.write_all(&burst).expect("session still open");
            sent += BURST;
            if start.elapsed() > Duration::from_millis(IDLE_MS * 3 + 200) {
                break Instant::now();
            }
            thread::sleep(Duration::from_millis(IDLE_MS / 6));
        };
        assert!(
            proxy.metrics().total().relays_started >= 1,
            "{label}: the stream was spliced"
        );
        closed_after_silence(&label, &mut s, quiet);
        assert_eq!(
            rx.recv_timeout(WAIT).expect("backend saw its EOF"),
            sent,
            "{label}: every byte arrived before the close"
        );
        assert_eq!(idle_closed(&proxy), 1.0, "{label}");
    }
}

/// A session under a 4 s timeout, quiet, then a reload to 500 ms: closed at
/// the next look (within a quarter of the old timeout), not 4 s later.
fn a_reload_changes_the_timeout_of_established_sessions(io: Io) {
    for shards in SHARD_COUNTS {
        let (tx, _rx) = mpsc::channel();
        let backend = echo_backend(tx);
        let proxy = TestProxy::start(io, shards, &config(backend.addr, "auto", 4000));
        let label = proxy.label.clone();
        let mut s = proxy.connect();
        let mut b = [0u8; 1];
        s.write_all(b"x").expect("write");
        s.read_exact(&mut b).expect("echo");
        let quiet = Instant::now();
        proxy
            .reload(&config(backend.addr, "auto", IDLE_MS))
            .expect("reload");
        assert!(read_to_eof(&mut s).is_empty(), "{label}");
        let after = quiet.elapsed();
        assert!(
            after >= Duration::from_millis(IDLE_MS - 20) && after < Duration::from_millis(2500),
            "{label}: closed after {after:?}"
        );
    }
}

shardline::per_backend! {
    a_silent_session_is_closed_and_a_trickling_one_is_not => a_silent_session_is_closed_and_a_trickling_one_is_not;
    spliced_traffic_keeps_a_session_open => spliced_traffic_keeps_a_session_open;
    a_reload_changes_the_timeout_of_established_sessions => a_reload_changes_the_timeout_of_established_sessions;
}
