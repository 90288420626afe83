//! Stalled request bodies (`[timeouts] client_body_ms`): a client that stops
//! sending its body gets 408 and is closed, and that never counts against the
//! backend — eight stalled POSTs used to mark every backend of a checked pool
//! down (`fall = 3`), after which every client got 503. A client slow but
//! steady is served (the timeout is time without progress); a backend that
//! stops reading the body is the backend's fault (504, reported). Both I/O
//! backends.

mod common;

use std::{
    io::Write,
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    thread,
    time::{Duration, Instant},
};

use common::{
    connect_with_timeouts, get, http_config, sample_sum, wait_until, Answer, HttpBackend,
    HttpClient, TcpBackend, TestProxy, SHARD_COUNTS, WAIT,
};
use shardline::Io;

/// Everything the proxy logs (the access log included), for every test of
/// this file: lines are told apart by the client address they name.
fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "warn,shardline_proxy::access=info",
            ))
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .try_init();
        buf
    })
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The access-log lines about client `addr`.
fn logged_for(addr: SocketAddr) -> Vec<String> {
    let text = String::from_utf8_lossy(&log().lock().expect("log")).to_string();
    let needle = format!("client={addr} ");
    text.lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// One GET on a new connection: its status.
fn one_get(proxy: &TestProxy) -> u16 {
    let mut c = HttpClient::new(proxy.connect());
    c.send(&get("/legit"));
    c.response(false).status
}

const STALLED: usize = 8;
const BODY_MS: u64 = 2000;

fn stalled_bodies_get_408_and_never_take_a_backend_down(io: Io) {
    log();
    for shards in SHARD_COUNTS {
        let a = HttpBackend::start("a", Answer::Info);
        let b = HttpBackend::start("b", Answer::Info);
        // Passive accounting on (a checked pool, fall = 3); the active probes
        // rare, so only passive reports could move a backend. The response
        // timeout well under the body timeout: were it running while the
        // proxy waits for the body, it would fire first (504 and a failure
        // reported against the backend).
        let cfg = http_config(
            &[a.addr(), b.addr()],
            &format!(
                "[pool.p.health]\nkind = \"tcp\"\ninterval_ms = 60000\nfall = 3\n\
                 [timeouts]\nclient_body_ms = {BODY_MS}\nbackend_response_ms = 500\n\
                 [admin]\nlisten = \"127.0.0.1:0\"\n"
            ),
        );
        let proxy = TestProxy::start(io, shards, &cfg);
        let label = proxy.label.clone();
        assert_eq!(one_get(&proxy), 200, "{label}");

        // Eight clients send 4 bytes of a 100-byte body, then nothing.
        let sent = Instant::now();
        let mut stalled: Vec<(SocketAddr, HttpClient)> = (0..STALLED)
            .map(|_| {
                let s = proxy.connect();
                let addr = s.local_addr().expect("addr");
                let mut c = HttpClient::new(s);
                c.send(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\nabcd");
                (addr, c)
            })
            .collect();

        // Legitimate GETs meanwhile, past the response timeout: all 200.
        let mut during = 0;
        while sent.elapsed() < Duration::from_millis(BODY_MS * 3 / 4) {
            assert_eq!(one_get(&proxy), 200, "{label}: a GET while bodies stall");
            during += 1;
            thread::sleep(Duration::from_millis(20));
        }
        assert!(during >= 5, "{label}: {during} GETs");

        // Each stalled client: 408, then closed, not before the body timeout.
        for (addr, c) in &mut stalled {
            let r = c.response(false);
            assert_eq!(r.status, 408, "{label}: stalled client {addr}");
            assert!(c.closed(), "{label}: {addr} closed after its 408");
        }
        let waited = sent.elapsed();
        assert!(
            waited >= Duration::from_millis(BODY_MS - 100),
            "{label}: 408 after {waited:?}"
        );

        // And after: still 200, both backends serving.
        for _ in 0..10 {
            assert_eq!(one_get(&proxy), 200, "{label}: a GET after the stalls");
        }
        let samples = proxy.scrape();
        let up = sample_sum(&samples, "shardline_proxy_backend_up", &[]);
        assert_eq!(up, 2.0, "{label}: a backend was marked down");
        let class = |c: &str| {
            sample_sum(
                &samples,
                "shardline_proxy_requests_total",
                &[&format!("class=\"{c}\"")],
            )
        };
        assert_eq!(class("4xx"), STALLED as f64, "{label}");
        assert_eq!(class("5xx"), 0.0, "{label}");
        assert!(a.traffic() > 0 && b.traffic() > 0, "{label}: both serve");

        // The access log says 408 for each stalled client.
        for (addr, _) in &stalled {
            let lines = logged_for(*addr);
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains("status=408") && l.contains("client body timeout")),
                "{label}: no 408 logged for {addr}: {lines:?}"
            );
        }
    }
}

fn a_slow_but_steady_body_is_served(io: Io) {
    log();
    let a = HttpBackend::start("a", Answer::Info);
    let cfg = http_config(&[a.addr()], "[timeouts]\nclient_body_ms = 600\n");
    let proxy = TestProxy::start(io, 2, &cfg);
    let label = proxy.label.clone();
    let mut c = HttpClient::new(proxy.connect());
    // 100 bytes in five pieces 300 ms apart: 1.2 s in all, twice the body
    // timeout, but never 600 ms without a byte.
    c.send(b"POST /slow HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\n");
    for _ in 0..5 {
        thread::sleep(Duration::from_millis(300));
        c.send(&[b'x'; 20]);
    }
    let r = c.response(false);
    assert_eq!(r.status, 200, "{label}");
    assert_eq!(r.text(), "a POST /slow 100", "{label}");
    // The connection goes on: the next request on it is served too.
    c.send(&get("/next"));
    assert_eq!(c.response(false).status, 200, "{label}");
}

fn a_stalled_chunked_body_gets_408_before_any_backend_is_chosen(io: Io) {
    log();
    let a = HttpBackend::start("a", Answer::Info);
    let cfg = http_config(&[a.addr()], "[timeouts]\nclient_body_ms = 300\n");
    let proxy = TestProxy::start(io, 2, &cfg);
    let label = proxy.label.clone();
    let mut c = HttpClient::new(proxy.connect());
    // The head, and not even a first chunk size.
    c.send(b"POST /c HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 408, "{label}");
    assert!(c.closed(), "{label}");
    assert_eq!(a.accepted(), 0, "{label}: a backend was bothered");
}

fn a_backend_that_stops_reading_the_body_is_the_backends_fault(io: Io) {
    log();
    // Accepts and never reads: the body backs up into the proxy, which
    // stops reading the client (backpressure), so the client is not slow.
    let sink = TcpBackend::start(|s| {
        thread::sleep(WAIT);
        drop(s);
    });
    let cfg = http_config(
        &[sink.addr],
        "[pool.p.health]\nkind = \"tcp\"\ninterval_ms = 60000\nfall = 1\n\
             [timeouts]\nclient_body_ms = 300\nbackend_response_ms = 800\n\
             [limits]\nsend_high_water = 65536\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    let proxy = TestProxy::start(io, 1, &cfg);
    let label = proxy.label.clone();
    let body = 256usize << 20;
    let s = connect_with_timeouts(proxy.addr);
    let mut writer = s.try_clone().expect("clone");
    let head = format!("POST /big HTTP/1.1\r\nHost: test\r\nContent-Length: {body}\r\n\r\n");
    let pusher = thread::spawn(move || {
        let _ = writer.write_all(head.as_bytes());
        let chunk = vec![b'z'; 1 << 20];
        for _ in 0..(body >> 20) {
            if writer.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let mut c = HttpClient::new(s);
    let r = c.response(false);
    assert_eq!(
        r.status, 504,
        "{label}: the backend's stall, not the client's"
    );
    let up = || {
        let samples = proxy.scrape();
        sample_sum(&samples, "shardline_proxy_backend_up", &[])
    };
    assert!(
        wait_until(WAIT, || up() == 0.0),
        "{label}: the failure was reported against the backend"
    );
    drop(c);
    pusher.join().expect("pusher");
}

/// Sanity: a stalled client's address is what the access log names (so the
/// checks above look at the right lines).
fn the_access_log_names_the_client_address(io: Io) {
    log();
    let a = HttpBackend::start("a", Answer::Info);
    let proxy = TestProxy::start(io, 1, &http_config(&[a.addr()], ""));
    let s = connect_with_timeouts(proxy.addr);
    let addr = s.local_addr().expect("addr");
    let mut c = HttpClient::new(s);
    c.send(&get("/named"));
    assert_eq!(c.response(false).status, 200);
    assert!(
        wait_until(WAIT, || logged_for(addr)
            .iter()
            .any(|l| l.contains("status=200"))),
        "{:?}",
        logged_for(addr)
    );
}

shardline::per_backend! {
    the_access_log_names_the_client_address => the_access_log_names_the_client_address;
    stalled_bodies_get_408_and_never_take_a_backend_down => stalled_bodies_get_408_and_never_take_a_backend_down;
    a_slow_but_steady_body_is_served => a_slow_but_steady_body_is_served;
    a_stalled_chunked_body_gets_408_before_any_backend_is_chosen => a_stalled_chunked_body_gets_408_before_any_backend_is_chosen;
    a_backend_that_stops_reading_the_body_is_the_backends_fault => a_backend_that_stops_reading_the_body_is_the_backends_fault;
}
