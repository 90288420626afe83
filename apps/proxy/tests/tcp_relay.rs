//! L4 mode: byte-identical relay both ways with backpressure, the upstream's
//! half-close reaching the client, connect failover, and a clean close when no
//! backend can be reached. Both I/O backends, 1 and 4 shards.

mod common;

use std::{
    io::{Read, Write},
    net::Shutdown,
    sync::mpsc,
    thread,
    time::Duration,
};

use common::{refused_addr, TcpBackend, TestProxy, SHARD_COUNTS, WAIT};
use rand::{rngs::StdRng, RngCore, SeedableRng};
use shardline::Io;

fn tcp_config(backends: &[std::net::SocketAddr]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"tcp\"\npool = \"p\"\n\
         [pool.p]\nbackends = [{}]\n[limits]\nsend_high_water = 65536\n\
         [timeouts]\nconnect_ms = 2000\n",
        list.join(", ")
    )
}

fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Larger than the proxy's hard send-queue limit (16 × 64 KiB) plus what the
/// kernel buffers: without backpressure the proxy would close the connection.
const STREAM: usize = 12 << 20;

/// The client sends a random stream and half-closes; the backend, reading
/// slowly at first, sends another random stream back concurrently and then
/// half-closes. Both arrive byte for byte, and the client sees EOF after the
/// last byte.
fn relays_large_random_streams_both_ways_with_half_close(io: Io) {
    for shards in SHARD_COUNTS {
        let up = random(1, STREAM);
        let down = random(2, STREAM);
        let (got_tx, got_rx) = mpsc::channel();
        let down_for_backend = down.clone();
        let backend = TcpBackend::start(move |mut s| {
            let mut writer = s.try_clone().expect("clone");
            let down = down_for_backend.clone();
            let w = thread::spawn(move || {
                // Slow start: the proxy's queue to the client fills meanwhile.
                thread::sleep(Duration::from_millis(200));
                writer.write_all(&down).expect("backend writes");
            });
            thread::sleep(Duration::from_millis(200));
            let mut got = vec![0u8; STREAM];
            s.read_exact(&mut got)
                .expect("backend reads the whole stream");
            w.join().expect("writer");
            s.shutdown(Shutdown::Write).expect("backend half-closes");
            let _ = got_tx.send(got);
        });
        let proxy = TestProxy::start(io, shards, &tcp_config(&[backend.addr]));
        let mut client = proxy.connect();
        let mut writer = client.try_clone().expect("clone");
        let up_for_client = up.clone();
        let w = thread::spawn(move || {
            writer.write_all(&up_for_client).expect("client writes");
            writer
                .shutdown(Shutdown::Write)
                .expect("client half-closes");
        });
        thread::sleep(Duration::from_millis(100));
        let mut received = Vec::with_capacity(STREAM);
        client
            .read_to_end(&mut received)
            .unwrap_or_else(|e| panic!("{}: client read: {e}", proxy.label));
        w.join().expect("client writer");
        assert!(
            received == down,
            "{}: downstream bytes differ ({} of {STREAM})",
            proxy.label,
            received.len()
        );
        let got = got_rx.recv_timeout(WAIT).expect("backend finished");
        assert!(got == up, "{}: upstream bytes differ", proxy.label);
        assert_eq!(
            proxy.metrics().total().closed_send_queue_full,
            0,
            "{}: backpressure kept every queue under its hard limit",
            proxy.label
        );
    }
}

/// A backend that refuses connections is skipped: every client is served by the
/// other one.
fn refused_backend_fails_over_to_the_next(io: Io) {
    for shards in SHARD_COUNTS {
        let good = TcpBackend::start(|mut s| {
            let mut buf = [0u8; 5];
            if s.read_exact(&mut buf).is_ok() {
                let _ = s.write_all(&buf);
            }
        });
        let proxy = TestProxy::start(io, shards, &tcp_config(&[refused_addr(), good.addr]));
        for i in 0..8 {
            let mut c = proxy.connect();
            c.write_all(b"hello").expect("write");
            let mut back = Vec::new();
            c.read_to_end(&mut back)
                .unwrap_or_else(|e| panic!("{}: conn {i}: {e}", proxy.label));
            assert_eq!(back, b"hello", "{}: conn {i}", proxy.label);
        }
        assert_eq!(good.accepted(), 8, "{}", proxy.label);
    }
}

/// When every backend refuses, the client is closed cleanly (EOF, no bytes).
fn client_is_closed_when_every_backend_fails(io: Io) {
    for shards in SHARD_COUNTS {
        let proxy = TestProxy::start(io, shards, &tcp_config(&[refused_addr(), refused_addr()]));
        for _ in 0..3 {
            let mut c = proxy.connect();
            let _ = c.write_all(b"anyone?");
            let mut back = Vec::new();
            let r = c.read_to_end(&mut back);
            assert!(r.is_ok(), "{}: clean EOF, not {r:?}", proxy.label);
            assert!(back.is_empty(), "{}: nothing sent", proxy.label);
        }
    }
}

/// The client's FIN reaches the backend while the way back stays open: a
/// backend that reads until EOF before answering (`wc`-style) is served.
fn client_half_close_reaches_the_backend(io: Io) {
    for shards in SHARD_COUNTS {
        let backend = TcpBackend::start(|mut s| {
            let mut all = Vec::new();
            if s.read_to_end(&mut all).is_ok() {
                let _ = s.write_all(format!("got {} bytes", all.len()).as_bytes());
            }
        });
        let proxy = TestProxy::start(io, shards, &tcp_config(&[backend.addr]));
        let mut c = proxy.connect();
        c.write_all(&random(3, 100_000)).expect("write");
        c.shutdown(Shutdown::Write).expect("half-close");
        let mut back = String::new();
        c.read_to_string(&mut back)
            .unwrap_or_else(|e| panic!("{}: {e}", proxy.label));
        assert_eq!(back, "got 100000 bytes", "{}", proxy.label);
    }
}

/// The backend's FIN reaches the client while the client's way in stays open:
/// what the client sends after reading EOF still reaches the backend.
fn backend_half_close_reaches_the_client_and_the_client_goes_on(io: Io) {
    for shards in SHARD_COUNTS {
        let (tx, rx) = mpsc::channel();
        let backend = TcpBackend::start(move |mut s| {
            s.write_all(b"banner").expect("backend writes");
            s.shutdown(Shutdown::Write).expect("backend half-closes");
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            let _ = tx.send(rest);
        });
        let proxy = TestProxy::start(io, shards, &tcp_config(&[backend.addr]));
        let mut c = proxy.connect();
        let mut banner = [0u8; 6];
        c.read_exact(&mut banner).expect("banner");
        assert_eq!(&banner, b"banner");
        let mut b = [0u8; 1];
        assert_eq!(
            c.read(&mut b).expect("EOF"),
            0,
            "{}: EOF after the banner",
            proxy.label
        );
        c.write_all(b"after the backend's FIN")
            .expect("client goes on");
        c.shutdown(Shutdown::Write).expect("half-close");
        let rest = rx.recv_timeout(WAIT).expect("backend read to the end");
        assert_eq!(rest, b"after the backend's FIN", "{}", proxy.label);
        // Both FINs seen: the proxy closes the client.
        let mut tail = Vec::new();
        assert!(c.read_to_end(&mut tail).is_ok() && tail.is_empty());
    }
}

shardline::per_backend! {
    relays_large_random_streams_both_ways_with_half_close => relays_large_random_streams_both_ways_with_half_close;
    refused_backend_fails_over_to_the_next => refused_backend_fails_over_to_the_next;
    client_is_closed_when_every_backend_fails => client_is_closed_when_every_backend_fails;
    client_half_close_reaches_the_backend => client_half_close_reaches_the_backend;
    backend_half_close_reaches_the_client_and_the_client_goes_on => backend_half_close_reaches_the_client_and_the_client_goes_on;
}
