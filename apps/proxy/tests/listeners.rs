//! One server for every listener: an HTTP and a TCP listener served by the same
//! shards, and a pool shared by two listeners health-checked once per interval
//! (counted at the backend). Both I/O backends, 1 and 4 shards.

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::SocketAddr,
    thread,
    time::{Duration, Instant},
};

use common::{
    get, wait_until, Answer, HttpBackend, HttpClient, TcpBackend, TestProxy, SHARD_COUNTS, WAIT,
};
use shardline::Io;

/// Echoes every byte back until EOF.
fn echo_backend() -> TcpBackend {
    TcpBackend::start(|mut s| {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    })
}

fn an_http_and_a_tcp_listener_are_served_by_one_server(io: Io) {
    for shards in SHARD_COUNTS {
        let web = HttpBackend::start("web", Answer::Info);
        let echo = echo_backend();
        let config = format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"web\"\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"tcp\"\npool = \"echo\"\n\
             [pool.web]\nbackends = [{{ address = \"{}\" }}]\n\
             [pool.echo]\nbackends = [{{ address = \"{}\" }}]\n",
            web.addr(),
            echo.addr
        );
        let proxy = TestProxy::start(io, shards, &config);
        assert_eq!(proxy.addrs.len(), 2, "{}", proxy.label);
        assert_ne!(proxy.addrs[0], proxy.addrs[1]);
        // Several connections each, so that every shard takes some.
        for i in 0..8 {
            let mut c = HttpClient::new(proxy.connect_to(0));
            c.send(&get(&format!("/h{i}")));
            let r = c.response(false);
            assert_eq!(r.status, 200, "{}", proxy.label);
            assert_eq!(r.text(), format!("web GET /h{i} 0"), "{}", proxy.label);

            let mut t = proxy.connect_to(1);
            let msg = format!("hello {i} through the tcp listener");
            t.write_all(msg.as_bytes()).expect("write");
            let mut back = vec![0u8; msg.len()];
            read_exact_retrying(&mut t, &mut back);
            assert_eq!(back, msg.as_bytes(), "{}", proxy.label);
        }
        assert_eq!(web.traffic(), 8, "{}", proxy.label);
        assert_eq!(echo.accepted(), 8, "{}", proxy.label);
    }
}

fn read_exact_retrying(s: &mut std::net::TcpStream, buf: &mut [u8]) {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => panic!("EOF after {got} bytes"),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Two HTTP listeners on one pool with checks every `INTERVAL`: the backend is
/// probed once per interval, not once per listener (or per shard).
fn a_pool_shared_by_two_listeners_is_probed_once_per_interval(io: Io) {
    const INTERVAL: u64 = 100;
    for shards in SHARD_COUNTS {
        let b = HttpBackend::start("b", Answer::Info);
        let config = shared_pool_config(b.addr(), INTERVAL);
        let proxy = TestProxy::start(io, shards, &config);
        // Both listeners serve.
        for i in 0..2 {
            let mut c = HttpClient::new(proxy.connect_to(i));
            c.send(&get("/x"));
            assert_eq!(c.response(false).status, 200, "{}", proxy.label);
        }
        assert!(
            wait_until(WAIT, || b.checks() >= 2),
            "{}: probes start",
            proxy.label
        );
        let (c0, t0) = (b.checks(), Instant::now());
        thread::sleep(Duration::from_millis(1500));
        let (probes, elapsed) = (b.checks() - c0, t0.elapsed());
        let intervals = elapsed.as_millis() as usize / INTERVAL as usize;
        // Once per interval is `intervals` (a late timer only makes fewer, never
        // more); twice — a checker per listener — would be 2 × that.
        assert!(
            probes <= intervals + 2,
            "{}: {probes} probes in {intervals} intervals",
            proxy.label
        );
        assert!(
            probes >= intervals / 3,
            "{}: only {probes} probes in {intervals} intervals",
            proxy.label
        );
    }
}

fn shared_pool_config(backend: SocketAddr, interval_ms: u64) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"p\"\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"p\"\n\
         [pool.p]\nbackends = [{{ address = \"{backend}\" }}]\n\
         [pool.p.health]\nkind = \"http\"\npath = \"/health\"\ninterval_ms = {interval_ms}\n\
         timeout_ms = 1000\n"
    )
}

shardline::per_backend! {
    an_http_and_a_tcp_listener_are_served_by_one_server => an_http_and_a_tcp_listener_are_served_by_one_server;
    a_pool_shared_by_two_listeners_is_probed_once_per_interval => a_pool_shared_by_two_listeners_is_probed_once_per_interval;
}
