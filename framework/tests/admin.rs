//! The admin endpoint over real TCP: `/metrics` shows each shard's counters after
//! echo traffic (both backends), the application's metrics follow, and the HTTP
//! edges hold: 404, 405, 400, an oversized head, slow, silent and slowloris
//! clients, eviction at the connection cap, every shard counter exported, and it
//! stops with the server.

mod common;

use std::{
    collections::HashMap,
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use shardline::{AdminConfig, Io, RunningServer};

/// One parsed response.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a whole response (the endpoint closes after one) and parses it.
fn read_response(s: &mut TcpStream) -> Response {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response to EOF");
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').expect("header line");
            (k.to_string(), v.trim().to_string())
        })
        .collect();
    let r = Response {
        status,
        headers,
        body: body.to_string(),
    };
    if let Some(len) = r.header("content-length") {
        if !r.body.is_empty() {
            assert_eq!(len.parse::<usize>().ok(), Some(r.body.len()), "{r:?}");
        }
    }
    r
}

fn request(addr: SocketAddr, io: Io, raw: &[u8]) -> Response {
    let mut s = common::connect_bounded(addr, io);
    s.write_all(raw).expect("send request");
    read_response(&mut s)
}

fn get(addr: SocketAddr, io: Io, path: &str) -> Response {
    request(
        addr,
        io,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    )
}

/// Samples of a text exposition: `name{labels}` -> value.
fn samples(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').expect("sample line");
            let v = value.parse().unwrap_or_else(|_| panic!("value in {l:?}"));
            (key.to_string(), v)
        })
        .collect()
}

fn start_with_admin(io: Io, shards: usize, admin: AdminConfig) -> (RunningServer, SocketAddr) {
    let builder = common::builder(io, shards).admin(admin);
    let (server, _) = common::start(builder, |_| common::Echo);
    let admin = server.admin_addr().expect("admin configured");
    (server, admin)
}

fn local_admin() -> AdminConfig {
    AdminConfig::new("127.0.0.1:0".parse().expect("literal address"))
}

fn metrics_show_each_shards_counters_and_the_apps(io: Io) {
    let scrapes = Arc::new(AtomicU64::new(0));
    let seen = scrapes.clone();
    let admin = local_admin().render(move |w| {
        let n = seen.fetch_add(1, Ordering::Relaxed) + 1;
        w.counter("app_scrapes_total", "Scrapes so far.", &[], n);
        w.gauge(
            "app_odd_label",
            "A label value that needs escaping.",
            &[("v", "a\"b\\c\nd")],
            1u64,
        );
    });
    let (server, admin_addr) = start_with_admin(io, 2, admin);
    let addr = server.local_addrs()[0];
    let metrics = server.metrics();
    let mut sent = 0u64;
    let mut clients = Vec::new();
    for i in 0..6 {
        let mut c = common::connect_bounded(addr, io);
        let msg = vec![b'a' + i as u8; 100 + 10 * i];
        c.write_all(&msg).expect("write");
        let mut back = vec![0; msg.len()];
        c.read_exact(&mut back).expect("echo");
        assert_eq!(back, msg, "{io}");
        sent += msg.len() as u64;
        clients.push(c);
    }
    drop(clients.pop());
    assert!(
        common::wait_until(common::LIMIT, || {
            let t = metrics.total();
            t.conns_closed == 1 && t.bytes_out == sent
        }),
        "{io}: {:?}",
        metrics.total()
    );

    let r = get(admin_addr, io, "/metrics");
    assert_eq!(r.status, 200, "{io}: {r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "{io}"
    );
    assert_eq!(r.header("connection"), Some("close"), "{io}");
    let s = samples(&r.body);
    assert_eq!(s.get("shardline_shards"), Some(&2.0), "{io}: {}", r.body);
    for shard in 0..2 {
        let want = metrics.snapshot_shard(shard);
        let at = |name: &str| {
            *s.get(&format!("{name}{{shard=\"{shard}\"}}"))
                .unwrap_or_else(|| panic!("{io}: no {name} for shard {shard}: {}", r.body))
        };
        assert_eq!(
            at("shardline_connections_accepted_total"),
            want.conns_accepted as f64,
            "{io}"
        );
        assert_eq!(at("shardline_connections"), want.conns_live as f64, "{io}");
        assert_eq!(
            at("shardline_received_bytes_total"),
            want.bytes_in as f64,
            "{io}"
        );
        assert_eq!(
            at("shardline_sent_bytes_total"),
            want.bytes_out as f64,
            "{io}"
        );
        for name in [
            "shardline_connections_connected_total",
            "shardline_connections_closed_total",
            "shardline_connections_closed_send_queue_full_total",
            "shardline_loop_turns_total",
            "shardline_syscalls_total",
            "shardline_handler_panics_total",
            "shardline_mailbox_sent_total",
            "shardline_mailbox_received_total",
            "shardline_mailbox_doorbell_writes_total",
            "shardline_mailbox_full_total",
            "shardline_read_pool_bytes",
            "shardline_read_pool_off_node_pages",
        ] {
            at(name);
        }
        assert!(at("shardline_loop_turns_total") > 0.0, "{io}");
    }
    let sum = |name: &str| -> f64 {
        (0..2)
            .map(|i| s.get(&format!("{name}{{shard=\"{i}\"}}")).copied())
            .map(|v| v.unwrap_or_else(|| panic!("{io}: {name}")))
            .sum()
    };
    assert_eq!(sum("shardline_connections_accepted_total"), 6.0, "{io}");
    assert_eq!(sum("shardline_connections_closed_total"), 1.0, "{io}");
    assert_eq!(sum("shardline_connections"), 5.0, "{io}");
    assert_eq!(sum("shardline_received_bytes_total"), sent as f64, "{io}");
    assert_eq!(sum("shardline_sent_bytes_total"), sent as f64, "{io}");
    // One HELP and one TYPE per family, before its samples.
    for family in ["shardline_connections_accepted_total", "app_scrapes_total"] {
        let help = format!("# HELP {family} ");
        let kind = format!("# TYPE {family} counter");
        assert_eq!(r.body.matches(&help).count(), 1, "{io}: {}", r.body);
        assert_eq!(
            r.body.lines().filter(|l| *l == kind).count(),
            1,
            "{io}: {}",
            r.body
        );
        let first_sample = r.body.find(&format!("\n{family}")).expect("a sample");
        assert!(r.body.find(&kind).expect("TYPE") < first_sample, "{io}");
    }
    assert!(
        r.body.contains("# TYPE shardline_connections gauge\n"),
        "{io}"
    );
    assert_eq!(s.get("app_scrapes_total"), Some(&1.0), "{io}");
    assert!(
        r.body.contains("app_odd_label{v=\"a\\\"b\\\\c\\nd\"} 1\n"),
        "{io}: {}",
        r.body
    );
    // The application's metrics are rendered afresh on each scrape.
    let again = samples(&get(admin_addr, io, "/metrics").body);
    assert_eq!(again.get("app_scrapes_total"), Some(&2.0), "{io}");
    drop(clients);
    common::shutdown_within(server, io);
}

fn paths_methods_and_garbage(io: Io) {
    let (server, admin) = start_with_admin(io, 1, local_admin());
    let r = get(admin, io, "/healthz");
    assert_eq!((r.status, r.body.as_str()), (200, "ok\n"), "{io}");
    let r = get(admin, io, "/metrics?debug=1");
    assert_eq!(r.status, 200, "{io}");
    assert!(r.body.contains("shardline_shards 1\n"), "{io}: {}", r.body);

    let r = get(admin, io, "/nope");
    assert_eq!(r.status, 404, "{io}");
    let r = get(admin, io, "/metrics/x");
    assert_eq!(r.status, 404, "{io}");

    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let raw = format!("{method} /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        let r = request(admin, io, raw.as_bytes());
        assert_eq!(r.status, 405, "{io}: {method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"), "{io}");
    }

    let r = request(admin, io, b"HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200, "{io}");
    assert!(r.body.is_empty(), "{io}: HEAD has no body");
    let len: usize = r
        .header("content-length")
        .and_then(|l| l.parse().ok())
        .expect("content-length");
    assert!(len > 0, "{io}");

    for garbage in [
        &b"hello\r\n\r\n"[..],
        b"\r\n\r\n",
        b"GET /metrics HTTP/9.9\r\n\r\n",
        b"GET metrics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n\n",
        b"\xff\xfe\xfd\r\n\r\n",
    ] {
        let r = request(admin, io, garbage);
        assert_eq!(r.status, 400, "{io}: {garbage:?}");
    }
    // A client that leaves mid-head costs nothing.
    {
        let mut s = common::connect_bounded(admin, io);
        s.write_all(b"GET /met").expect("write");
    }
    let r = get(admin, io, "/healthz");
    assert_eq!(r.status, 200, "{io}");
    common::shutdown_within(server, io);
}

fn oversized_head_gets_431(io: Io) {
    let (server, admin) = start_with_admin(io, 1, local_admin());
    let mut raw = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    raw.resize(raw.len() + 20_000, b'a');
    raw.extend_from_slice(b"\r\n\r\n");
    let mut s = common::connect_bounded(admin, io);
    // The endpoint answers after 8 KiB and drops the rest; the write may or may
    // not see it close, so only the response matters.
    let _ = s.write_all(&raw);
    let r = read_response(&mut s);
    assert_eq!(r.status, 431, "{io}");
    // Just under the limit is fine.
    let mut raw = b"GET /healthz HTTP/1.1\r\nX-Pad: ".to_vec();
    raw.resize(shardline::admin::MAX_HEAD - 4, b'a');
    raw.extend_from_slice(b"\r\n\r\n");
    let r = request(admin, io, &raw);
    assert_eq!(r.status, 200, "{io}");
    common::shutdown_within(server, io);
}

fn a_slow_client_does_not_hold_up_others(io: Io) {
    // A timeout far longer than the test: the slow client must not delay the
    // fast one at all, and must still be served when it finishes.
    let admin = local_admin().request_timeout(Duration::from_secs(600));
    let (server, admin) = start_with_admin(io, 1, admin);
    let mut slow = common::connect_bounded(admin, io);
    slow.write_all(b"GET /heal").expect("write");
    let mut silent = common::connect_bounded(admin, io);
    let r = get(admin, io, "/healthz");
    assert_eq!(r.status, 200, "{io}");
    slow.write_all(b"thz HTTP/1.1\r\n\r\n").expect("write");
    assert_eq!(read_response(&mut slow).status, 200, "{io}");
    silent
        .write_all(b"GET /healthz HTTP/1.1\r\n\r\n")
        .expect("write");
    assert_eq!(read_response(&mut silent).status, 200, "{io}");
    common::shutdown_within(server, io);
}

fn clients_past_the_timeout_get_408_and_are_closed(io: Io) {
    let admin = local_admin().request_timeout(Duration::from_millis(300));
    let (server, admin) = start_with_admin(io, 1, admin);
    let mut slow = common::connect_bounded(admin, io);
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost:")
        .expect("write");
    assert_eq!(read_response(&mut slow).status, 408, "{io}");
    // Silent from the start: closed too (a 408 with nothing asked).
    let mut silent = common::connect_bounded(admin, io);
    let mut rest = Vec::new();
    silent.read_to_end(&mut rest).expect("closed by the server");
    assert!(rest.starts_with(b"HTTP/1.1 408 "), "{io}: {rest:?}");
    common::shutdown_within(server, io);
}

/// Whether the server has closed `s` (EOF or reset) without sending anything,
/// looking without waiting.
fn open_and_silent(s: &TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut byte = [0u8; 1];
    let open = loop {
        match s.peek(&mut byte) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break true,
            _ => break false,
        }
    };
    s.set_nonblocking(false).expect("blocking");
    open
}

/// Reads until the server closes `s`; what it sent (a reset counts as a close).
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("not closed: {e}"),
        }
    }
}

/// `GET /metrics` on a fresh connection, answered within `within`.
fn scrape_within(admin: SocketAddr, io: Io, within: Duration) -> Response {
    let started = Instant::now();
    let mut s = TcpStream::connect_timeout(&admin, within).expect("connect");
    s.set_read_timeout(Some(within)).expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("write");
    let r = read_response(&mut s);
    assert!(
        started.elapsed() < within,
        "{io}: scrape took {:?}",
        started.elapsed()
    );
    r
}

fn idle_and_slowloris_clients_do_not_starve_scrapes(io: Io) {
    // A head deadline well past the scrape bound: the scrape must be served
    // while every idle connection is still held, not once they expire.
    let timeout = Duration::from_secs(4);
    let (server, admin) = start_with_admin(io, 1, local_admin().request_timeout(timeout));
    let opened = Instant::now();
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| common::connect_bounded(admin, io))
        .collect();
    // Slowloris: a head that never ends, a byte every 50 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let slow: Vec<_> = (0..8)
        .map(|_| {
            let mut s = common::connect_bounded(admin, io);
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut head = b"GET /metrics HTTP/1.1\r\nX-Slow: ".iter().copied();
                while !stop.load(Ordering::Relaxed) {
                    let b = head.next().unwrap_or(b'a');
                    if s.write_all(&[b]).is_err() {
                        break; // closed by the server
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                s.set_read_timeout(Some(common::LIMIT)).expect("timeout");
                (read_until_closed(&mut s), Instant::now())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));

    for _ in 0..3 {
        let r = scrape_within(admin, io, Duration::from_secs(2));
        assert_eq!(r.status, 200, "{io}");
        assert!(r.body.contains("shardline_shards 1\n"), "{io}");
    }
    assert_eq!(get(admin, io, "/healthz").status, 200, "{io}");
    assert!(
        opened.elapsed() < timeout,
        "{io}: too slow to tell the scrapes from expiry"
    );
    for (i, s) in idle.iter().enumerate() {
        assert!(open_and_silent(s), "{io}: idle connection {i} closed early");
    }

    // Every idle connection is closed by its head deadline, with a 408.
    for mut s in idle {
        let got = read_until_closed(&mut s);
        assert!(got.starts_with(b"HTTP/1.1 408 "), "{io}: {got:?}");
    }
    let closed_by = opened.elapsed();
    assert!(
        closed_by >= timeout && closed_by < timeout + Duration::from_secs(10),
        "{io}: idle connections closed after {closed_by:?}"
    );
    // Dribbling bytes does not extend the deadline either.
    for t in slow {
        let (got, at) = t.join().expect("slowloris thread");
        assert!(got.starts_with(b"HTTP/1.1 408 "), "{io}: {got:?}");
        assert!(
            at.duration_since(opened) < timeout + Duration::from_secs(10),
            "{io}: a slowloris client kept its connection"
        );
    }
    stop.store(true, Ordering::Relaxed);
    common::shutdown_within(server, io);
}

fn at_the_cap_a_newcomer_evicts_the_oldest_idle_connection(io: Io) {
    let admin = local_admin()
        .max_connections(4)
        .request_timeout(Duration::from_secs(600));
    let (server, admin) = start_with_admin(io, 1, admin);
    let mut idle: Vec<TcpStream> = Vec::new();
    for _ in 0..4 {
        idle.push(common::connect_bounded(admin, io));
        // Accept order is the eviction order: let each be accepted in turn.
        std::thread::sleep(Duration::from_millis(50));
    }
    // The cap is held by idle connections; a scrape still gets in, and the
    // oldest idle one is closed (told 503) to make room.
    let r = scrape_within(admin, io, Duration::from_secs(2));
    assert_eq!(r.status, 200, "{io}");
    let got = read_until_closed(&mut idle[0]);
    assert!(got.starts_with(b"HTTP/1.1 503 "), "{io}: {got:?}");
    for (i, s) in idle.iter().enumerate().skip(1) {
        assert!(open_and_silent(s), "{io}: idle connection {i} was evicted");
    }
    // A flood of idle connections far past the cap does not lock scrapes
    // out either, and the survivors are the newest.
    let flood: Vec<TcpStream> = (0..40)
        .map(|_| common::connect_bounded(admin, io))
        .collect();
    let r = scrape_within(admin, io, Duration::from_secs(2));
    assert_eq!(r.status, 200, "{io}");
    for s in &mut idle[1..] {
        read_until_closed(s);
    }
    // The scrape took one of the 4 places from the newest 4 of the flood.
    let open: Vec<usize> = (0..flood.len())
        .filter(|&i| open_and_silent(&flood[i]))
        .collect();
    assert_eq!(open, [37, 38, 39], "{io}: the newest are held");
    // And the endpoint goes on serving.
    assert_eq!(get(admin, io, "/healthz").status, 200, "{io}");
    drop(flood);
    common::shutdown_within(server, io);
}

fn every_shard_counter_is_exported(io: Io) {
    let (server, admin) = start_with_admin(io, 2, local_admin());
    let r = get(admin, io, "/metrics");
    assert_eq!(r.status, 200, "{io}");
    let s = samples(&r.body);
    let names = shardline::ShardMetricsSnapshot::PROMETHEUS_NAMES;
    for name in [
        "shardline_relays_started_total",
        "shardline_spliced_bytes_total",
    ] {
        assert!(names.contains(&name), "{name} is in the table");
    }
    for name in names {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        assert_eq!(
            r.body
                .lines()
                .filter(|l| *l == format!("# TYPE {name} {kind}"))
                .count(),
            1,
            "{io}: {name} as a {kind}:\n{}",
            r.body
        );
        for shard in 0..2 {
            let key = format!("{name}{{shard=\"{shard}\"}}");
            assert!(s.contains_key(&key), "{io}: no {key}:\n{}", r.body);
        }
    }
    // Nothing else from the framework but the shard count.
    let framework = s.keys().filter(|k| k.starts_with("shardline_")).count();
    assert_eq!(framework, 1 + 2 * names.len(), "{io}:\n{}", r.body);
    common::shutdown_within(server, io);
}

fn render_panic_is_a_500_and_the_endpoint_goes_on(io: Io) {
    let admin = local_admin().render(|_| panic!("render bug"));
    let (server, admin) = start_with_admin(io, 1, admin);
    assert_eq!(get(admin, io, "/metrics").status, 500, "{io}");
    assert_eq!(get(admin, io, "/healthz").status, 200, "{io}");
    common::shutdown_within(server, io);
}

fn the_endpoint_stops_with_the_server(io: Io) {
    let (server, admin) = start_with_admin(io, 2, local_admin());
    assert_eq!(get(admin, io, "/healthz").status, 200, "{io}");
    // A connection in progress does not keep it (or the server) alive.
    let _held = common::connect_bounded(admin, io);
    common::shutdown_within(server, io);
    let err = TcpStream::connect(admin).expect_err("admin listener closed");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{io}");
}

fn a_taken_admin_address_is_a_startup_error(io: Io) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let built = common::builder(io, 1)
        .admin(AdminConfig::new(addr))
        .build(|_| common::Echo)
        .expect("valid config");
    match built.start() {
        Err(shardline::Error::Bind { addr: a, .. }) => assert_eq!(a, addr, "{io}"),
        Err(e) => panic!("{io}: wrong error {e}"),
        Ok(s) => {
            let _ = s.shutdown();
            panic!("{io}: started on a taken admin address");
        }
    }
}

#[test]
fn standalone_endpoint_without_a_server() {
    let admin = local_admin()
        .render(|w| w.gauge("app_up", "Up.", &[], 1u64))
        .start(None)
        .expect("start");
    let r = get(admin.local_addr(), Io::Epoll, "/metrics");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "# HELP app_up Up.\n# TYPE app_up gauge\napp_up 1\n");
    let addr = admin.local_addr();
    admin.stop();
    assert!(TcpStream::connect(addr).is_err());
}

/// Regression: a client that sends its request and closes at once finishes in one
/// step, moving its deadline on the way; the endpoint then spun forever on the
/// stale deadline entry once it came due, and never answered again.
fn scrapes_go_on_after_clients_that_close_at_once(io: Io) {
    let timeout = Duration::from_millis(300);
    let (server, admin) = start_with_admin(io, 1, local_admin().request_timeout(timeout));
    for _ in 0..5 {
        let mut s = common::connect_bounded(admin, io);
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("write");
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let _ = read_until_closed(&mut s);
    }
    // Past every deadline those connections ever had.
    std::thread::sleep(timeout * 4);
    let r = scrape_within(admin, io, Duration::from_secs(5));
    assert_eq!(r.status, 200, "{io}");
    common::shutdown_within(server, io);
}

shardline::per_backend! {
    idle_and_slowloris_clients_do_not_starve_scrapes => idle_and_slowloris_clients_do_not_starve_scrapes;
    a_taken_admin_address_is_a_startup_error => a_taken_admin_address_is_a_startup_error;
    metrics_show_each_shards_counters_and_the_apps => metrics_show_each_shards_counters_and_the_apps;
    paths_methods_and_garbage => paths_methods_and_garbage;
    oversized_head_gets_431 => oversized_head_gets_431;
    a_slow_client_does_not_hold_up_others => a_slow_client_does_not_hold_up_others;
    clients_past_the_timeout_get_408_and_are_closed => clients_past_the_timeout_get_408_and_are_closed;
    at_the_cap_a_newcomer_evicts_the_oldest_idle_connection => at_the_cap_a_newcomer_evicts_the_oldest_idle_connection;
    every_shard_counter_is_exported => every_shard_counter_is_exported;
    render_panic_is_a_500_and_the_endpoint_goes_on => render_panic_is_a_500_and_the_endpoint_goes_on;
    the_endpoint_stops_with_the_server => the_endpoint_stops_with_the_server;
    closed_clients_then_scrape => scrapes_go_on_after_clients_that_close_at_once;
}
