//! `rate_limit` per client address: HTTP listeners answer 429 with
//! `Retry-After` past the burst and serve again after the interval; TCP
//! listeners close connections over the limit at accept; each source address
//! has its own budget and the table stays within `max_clients`; a reload
//! applies a new limit. Counts, not durations, are asserted (the rates are
//! slow enough that a loaded machine cannot blur them). Both I/O backends,
//! 1 and 4 shards.

mod common;

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    thread,
    time::{Duration, Instant},
};

use common::{
    get, sample_sum, wait_until, Answer, HttpBackend, HttpClient, TcpBackend, TestProxy,
    SHARD_COUNTS, WAIT,
};
use shardline::Io;

/// An HTTP (or TCP) listener limited to `rps` per client with `burst`, to one
/// backend, with the admin endpoint.
fn config(mode: &str, backend: SocketAddr, rps: f64, burst: u32, max_clients: usize) -> String {
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"{mode}\"\npool = \"p\"\n\
         rate_limit = {{ requests_per_second = {rps}, burst = {burst}, max_clients = {max_clients} }}\n\
         [pool.p]\nbackends = [{{ address = \"{backend}\" }}]\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n"
    )
}

/// One GET on a new connection from 127.0.0.1: the status and Retry-After.
fn one_get(proxy: &TestProxy) -> (u16, Option<String>) {
    let mut c = HttpClient::new(proxy.connect());
    c.send(&get("/x"));
    let r = c.response(false);
    (r.status, r.header("Retry-After").map(str::to_string))
}

fn limited(proxy: &TestProxy) -> f64 {
    sample_sum(&proxy.scrape(), "shardline_proxy_rate_limited_total", &[])
}

fn http_answers_429_past_the_burst_and_serves_again_after_the_interval(io: Io) {
    for shards in SHARD_COUNTS {
        let backend = HttpBackend::start("a", Answer::Info);
        // One request every 2 s, 3 at once.
        let cfg = config("http", backend.addr(), 0.5, 3, 1024);
        let proxy = TestProxy::start(io, shards, &cfg);
        let t0 = Instant::now();
        // One keep-alive connection: one shard, so exactly the burst passes.
        let mut c = HttpClient::new(proxy.connect());
        for i in 0..3 {
            c.send(&get("/x"));
            let r = c.response(false);
            assert_eq!(r.status, 200, "{}: request {i} of the burst", proxy.label);
        }
        c.send(&get("/x"));
        let r = c.response(false);
        assert_eq!(r.status, 429, "{}: past the burst", proxy.label);
        let retry: u64 = r
            .header("Retry-After")
            .expect("Retry-After on a 429")
            .parse()
            .expect("Retry-After in seconds");
        assert!(
            (1..=2).contains(&retry),
            "{}: Retry-After {retry}",
            proxy.label
        );
        assert!(c.closed(), "{}: a 429 closes the connection", proxy.label);
        assert_eq!(
            backend.traffic(),
            3,
            "{}: the 429 reached no backend",
            proxy.label
        );
        assert_eq!(limited(&proxy), 1.0, "{}", proxy.label);

        // New connections, as fast as they come: each shard lets at most a
        // burst (plus what the elapsed time earns) through.
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(one_get(&proxy).0);
        }
        // What the rate gave back since the burst began (on each shard).
        let earned = (t0.elapsed().as_secs_f64() * 0.5).ceil() as usize;
        let ok = statuses.iter().filter(|&&s| s == 200).count();
        let refused = statuses.iter().filter(|&&s| s == 429).count();
        assert_eq!(ok + refused, 20, "{}: {statuses:?}", proxy.label);
        assert!(
            ok <= (shards - 1) * (3 + earned) + earned,
            "{}: {ok} allowed: {statuses:?}",
            proxy.label
        );
        if shards == 1 {
            // The first connection's shard: still over the limit.
            assert!(refused >= 20 - earned, "{}: {statuses:?}", proxy.label);
        }
        assert_eq!(limited(&proxy), 1.0 + refused as f64, "{}", proxy.label);

        // After the interval every shard lets the client through again.
        if shards == 1 {
            let back = wait_until(Duration::from_secs(10), || {
                thread::sleep(Duration::from_millis(250));
                one_get(&proxy).0 == 200
            });
            assert!(back, "{}: never served again", proxy.label);
        }

        // A reload to a generous limit applies at once (the table starts afresh).
        let mut c = HttpClient::new(proxy.connect());
        c.send(&get("/x"));
        let before = c.response(false).status;
        proxy
            .reload(&config("http", backend.addr(), 0.5, 100, 1024))
            .expect("reload");
        for i in 0..30 {
            let (status, _) = one_get(&proxy);
            assert_eq!(
                status, 200,
                "{}: request {i} after the reload (before: {before})",
                proxy.label
            );
        }
    }
}

/// A client bound to `ip` (any address of 127/8 is loopback).
fn connect_from(ip: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let s =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    s.bind(&SocketAddr::new(IpAddr::V4(ip), 0).into())
        .expect("bind a loopback source");
    s.connect(&to.into()).expect("connect");
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.set_write_timeout(Some(WAIT)).expect("timeout");
    s
}

fn each_source_address_has_its_own_budget_and_the_table_stays_bounded(io: Io) {
    for shards in SHARD_COUNTS {
        let backend = HttpBackend::start("a", Answer::Info);
        let max_clients = 8;
        let proxy = TestProxy::start(
            io,
            shards,
            &config("http", backend.addr(), 0.01, 1, max_clients),
        );
        // 60 source addresses, each one keep-alive connection, two requests:
        // the first served (its own budget), the second refused.
        for i in 0..60u8 {
            let ip = Ipv4Addr::new(127, 0, 1, 10 + i);
            let mut c = HttpClient::new(connect_from(ip, proxy.addr));
            c.send(&get("/x"));
            assert_eq!(c.response(false).status, 200, "{}: {ip} first", proxy.label);
            c.send(&get("/x"));
            assert_eq!(
                c.response(false).status,
                429,
                "{}: {ip} second",
                proxy.label
            );
        }
        let samples = proxy.scrape();
        let tracked: Vec<f64> = samples
            .iter()
            .filter(|(k, _)| k.starts_with("shardline_proxy_rate_limit_clients"))
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(tracked.len(), shards, "{}: {tracked:?}", proxy.label);
        assert!(
            tracked.iter().all(|&n| n >= 1.0 && n <= max_clients as f64),
            "{}: tables over max_clients: {tracked:?}",
            proxy.label
        );
        assert_eq!(limited(&proxy), 60.0, "{}", proxy.label);
        assert_eq!(backend.traffic(), 60, "{}", proxy.label);
    }
}

/// Whether a TCP client got through: its bytes echoed back (else the proxy
/// closed it at accept).
fn echoed(proxy: &TestProxy) -> bool {
    let mut s = proxy.connect();
    if s.write_all(b"ping").is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).is_ok() && &buf == b"ping"
}

fn tcp_connections_over_the_limit_are_closed_at_accept(io: Io) {
    for shards in SHARD_COUNTS {
        let backend = TcpBackend::start(|mut s| {
            let mut buf = [0u8; 4096];
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 || s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
        let burst = 2;
        let proxy = TestProxy::start(io, shards, &config("tcp", backend.addr, 0.2, burst, 1024));
        let start = Instant::now();
        let results: Vec<bool> = (0..16).map(|_| echoed(&proxy)).collect();
        let earned = (start.elapsed().as_secs_f64() * 0.2).ceil() as usize + 1;
        let ok = results.iter().filter(|&&r| r).count();
        let refused = 16 - ok;
        assert!(ok >= burst as usize, "{}: {results:?}", proxy.label);
        assert!(
            ok <= (shards - 1) * burst as usize + earned + burst as usize,
            "{}: {ok} let through: {results:?}",
            proxy.label
        );
        assert!(refused > 0, "{}: {results:?}", proxy.label);
        assert!(
            wait_until(WAIT, || backend.accepted() == ok),
            "{}: backend accepted {} for {ok} relayed",
            proxy.label,
            backend.accepted()
        );
        assert_eq!(limited(&proxy), refused as f64, "{}", proxy.label);
    }
}

/// Behind a PROXY-protocol sender the client is the header's source: two
/// header sources from one socket address have separate budgets, and one
/// source keeps its budget across connections (one shard, so one table).
fn the_client_is_the_proxy_protocol_source(io: Io) {
    let backend = HttpBackend::start("a", Answer::Info);
    let cfg = config("http", backend.addr(), 0.01, 1, 1024).replace(
        "pool = \"p\"\n",
        "pool = \"p\"\nproxy_protocol = true\nproxy_protocol_trusted = [\"127.0.0.1\"]\n",
    );
    let proxy = TestProxy::start(io, 1, &cfg);
    let from = |src: &str| {
        let mut c = HttpClient::new(proxy.connect());
        c.send(format!("PROXY TCP4 {src} 127.0.0.1 4000 80\r\n").as_bytes());
        c
    };
    let mut a = from("203.0.113.7");
    a.send(&get("/x"));
    assert_eq!(a.response(false).status, 200, "{}", proxy.label);
    let mut b = from("198.51.100.9");
    b.send(&get("/x"));
    assert_eq!(
        b.response(false).status,
        200,
        "{}: another source",
        proxy.label
    );
    let mut a2 = from("203.0.113.7");
    a2.send(&get("/x"));
    assert_eq!(
        a2.response(false).status,
        429,
        "{}: same source",
        proxy.label
    );
    assert_eq!(limited(&proxy), 1.0, "{}", proxy.label);
}

shardline::per_backend! {
    the_client_is_the_proxy_protocol_source => the_client_is_the_proxy_protocol_source;
    http_answers_429_past_the_burst_and_serves_again_after_the_interval => http_answers_429_past_the_burst_and_serves_again_after_the_interval;
    each_source_address_has_its_own_budget_and_the_table_stays_bounded => each_source_address_has_its_own_budget_and_the_table_stays_bounded;
    tcp_connections_over_the_limit_are_closed_at_accept => tcp_connections_over_the_limit_are_closed_at_accept;
}
