//! Graceful shutdown: a request in flight finishes (with `Connection: close`,
//! then EOF), an idle keep-alive client is closed at once, a pipelined request
//! behind the one in flight is never answered, an L4 session relays until one
//! side finishes, and the shutdown returns without waiting for its deadline.
//! Both I/O backends, 1 and 4 shards.

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::{
    get, http_config, wait_until, Answer, HttpBackend, HttpClient, TcpBackend, TestProxy,
    SHARD_COUNTS, WAIT,
};
use shardline::Io;

/// How long the slow backend sleeps before answering.
const SLOW_MS: u64 = 800;

fn requests_in_flight_finish_and_idle_clients_are_closed(io: Io) {
    for shards in SHARD_COUNTS {
        let b = HttpBackend::start("a", Answer::SlowInfo(SLOW_MS));
        let proxy = TestProxy::start(io, shards, &http_config(&[b.addr()], ""));
        let label = proxy.label.clone();
        // An idle keep-alive client: one request served, connection kept.
        let mut idle = HttpClient::new(proxy.connect());
        idle.send(&get("/warm"));
        let r = idle.response(false);
        assert_eq!(r.status, 200, "{label}");
        assert_eq!(r.header("Connection"), None, "{label}: kept alive");
        // One request in flight, and one in flight with a second pipelined behind.
        let mut single = HttpClient::new(proxy.connect());
        single.send(&get("/single"));
        let mut piped = HttpClient::new(proxy.connect());
        let mut two = get("/first");
        two.extend_from_slice(&get("/second"));
        piped.send(&two);
        assert!(
            wait_until(WAIT, || b.requests().len() >= 3),
            "{label}: the backend got both requests in flight"
        );
        let started = Instant::now();
        proxy.begin_shutdown();
        // The idle client is closed at once, well before the slow answers.
        assert!(idle.closed(), "{label}: idle client closed");
        assert!(
            started.elapsed() < Duration::from_millis(SLOW_MS * 3 / 4),
            "{label}: idle client closed only after {:?}",
            started.elapsed()
        );
        for (c, target) in [(&mut single, "/single"), (&mut piped, "/first")] {
            let r = c.response(false);
            assert_eq!(r.status, 200, "{label} {target}");
            assert_eq!(r.text(), format!("a GET {target} 0"), "{label}");
            assert_eq!(r.header("Connection"), Some("close"), "{label} {target}");
            assert!(c.closed(), "{label} {target}: EOF after the response");
        }
        let mut targets: Vec<String> = b.requests().into_iter().map(|r| r.target).collect();
        targets.sort();
        assert_eq!(
            targets,
            ["/first", "/single", "/warm"],
            "{label}: the pipelined request never reached the backend"
        );
        proxy.shutdown().expect("clean shutdown");
        // TestProxy's shutdown deadline is 5 s: nothing was left to it.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{label}: shutdown took {:?}",
            started.elapsed()
        );
    }
}

fn read_retrying(s: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match s.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// An L4 session open at shutdown keeps relaying until the backend finishes.
fn l4_sessions_relay_until_a_side_finishes(io: Io) {
    for shards in SHARD_COUNTS {
        // Echoes each read; closes after echoing "bye".
        let backend = TcpBackend::start(|mut s| {
            let mut buf = [0u8; 1024];
            while let Ok(n) = read_retrying(&mut s, &mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() || buf[..n].ends_with(b"bye") {
                    return;
                }
            }
        });
        let config = format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"tcp\"\npool = \"p\"\n\
             [pool.p]\nbackends = [{{ address = \"{}\" }}]\n",
            backend.addr
        );
        let proxy = TestProxy::start(io, shards, &config);
        let label = proxy.label.clone();
        let mut c = proxy.connect();
        let mut buf = [0u8; 64];
        let mut echo = |c: &mut TcpStream, what: &[u8]| {
            c.write_all(what).expect("write");
            let mut got = Vec::new();
            while got.len() < what.len() {
                match read_retrying(c, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            got
        };
        assert_eq!(echo(&mut c, b"hello"), b"hello", "{label}");
        let started = Instant::now();
        proxy.begin_shutdown();
        std::thread::sleep(Duration::from_millis(200));
        // Still relaying after the shutdown began.
        assert_eq!(echo(&mut c, b"still here"), b"still here", "{label}");
        assert_eq!(echo(&mut c, b"bye"), b"bye", "{label}");
        // The backend closed: the client gets EOF.
        let mut rest = Vec::new();
        loop {
            match c.read_to_end(&mut rest) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => {
                    other.unwrap_or_else(|e| panic!("{label}: {e}"));
                    break;
                }
            }
        }
        assert!(rest.is_empty(), "{label}");
        proxy.shutdown().expect("clean shutdown");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{label}: shutdown took {:?}",
            started.elapsed()
        );
    }
}

shardline::per_backend! {
    requests_in_flight_finish_and_idle_clients_are_closed => requests_in_flight_finish_and_idle_clients_are_closed;
    l4_sessions_relay_until_a_side_finishes => l4_sessions_relay_until_a_side_finishes;
}
