//! HTTP `Upgrade` pass-through: a WebSocket echo (handshake and framing by
//! hand, RFC 6455) relaying 10 MiB each way byte for byte through the tunnel a
//! `101 Switching Protocols` makes; an answer other than 101 relayed as an
//! ordinary response on a connection kept alive; bytes sent behind either
//! head and a FIN behind the request; half-close both ways; the tunnel's idle
//! timeout; connect retries; `h2c` not passed on; a 101 nobody asked for.
//! Both I/O backends, 1 and 4 shards.

mod common;

use std::{
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use common::{
    get, refused_addr, sample_sum, wait_until, Answer, HttpBackend, HttpClient, TcpBackend,
    TestProxy, SHARD_COUNTS, WAIT,
};
use rand::{rngs::StdRng, RngCore, SeedableRng};
use shardline::Io;

fn config(backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"p\"\n\
         [pool.p]\nbackends = [{}]\n{extra}\n",
        list.join(", ")
    )
}

fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// Reads a head (through the blank line) one byte at a time, so nothing
/// behind it is taken.
fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => panic!(
                "head cut short ({other:?}) after {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
        assert!(head.len() < 64 << 10, "head too long");
    }
    String::from_utf8(head).expect("ASCII head")
}

/// The value of field `name` in `head` (case-insensitive), if any.
fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn status(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"))
}

/// Reads until EOF (a reset counts as one too) and returns what came.
fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
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

// --- WebSocket, by hand (RFC 6455) -------------------------------------------

const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `Sec-WebSocket-Accept` for `key`: base64(SHA-1(key + GUID)).
fn accept_key(key: &str) -> String {
    let d = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{WS_GUID}").as_bytes(),
    );
    base64(d.as_ref())
}

/// One frame, FIN set; masked with `mask` (a client's frames must be).
fn ws_frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let m = if mask.is_some() { 0x80 } else { 0 };
    let n = payload.len();
    if n < 126 {
        f.push(m | n as u8);
    } else if n <= 0xffff {
        f.push(m | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(m | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    match mask {
        Some(k) => {
            f.extend_from_slice(&k);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

/// One frame: (opcode, whether it was masked, payload unmasked).
fn ws_read(s: &mut TcpStream) -> io::Result<(u8, bool, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h)?;
    assert_eq!(h[0] & 0x80, 0x80, "unfragmented frames only");
    let masked = h[1] & 0x80 != 0;
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b)?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b)?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    assert!(len <= 1 << 20, "frame of {len} bytes");
    let mut key = [0u8; 4];
    if masked {
        s.read_exact(&mut key)?;
    }
    let mut payload = vec![0u8; len as usize];
    s.read_exact(&mut payload)?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Ok((h[0] & 0x0f, masked, payload))
}

/// A WebSocket echo server: checks the handshake as forwarded (answers 400 if
/// it is not a WebSocket upgrade), then echoes every data frame unmasked;
/// answers a close frame with one and closes. Sends the request head it got.
fn ws_echo_backend(heads: mpsc::Sender<String>) -> TcpBackend {
    TcpBackend::start(move |mut s| {
        let head = read_head(&mut s);
        let _ = heads.send(head.clone());
        let upgrade = field(&head, "upgrade").unwrap_or("");
        let connection = field(&head, "connection").unwrap_or("");
        let (Some(key), true, true) = (
            field(&head, "sec-websocket-key"),
            upgrade.eq_ignore_ascii_case("websocket"),
            connection.eq_ignore_ascii_case("upgrade"),
        ) else {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
            return;
        };
        let answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(key)
        );
        s.write_all(answer.as_bytes()).expect("backend: 101");
        loop {
            let Ok((op, masked, payload)) = ws_read(&mut s) else {
                return;
            };
            assert!(masked, "backend: a client frame must be masked");
            match op {
                0x8 => {
                    let _ = s.write_all(&ws_frame(0x8, &payload, None));
                    return;
                }
                // Data frames are echoed; a peer gone ends the echo.
                0x1 | 0x2 if s.write_all(&ws_frame(op, &payload, None)).is_err() => return,
                _ => {}
            }
        }
    })
}

/// Opens a WebSocket through the proxy: returns the stream past the 101.
fn ws_connect(proxy: &TestProxy) -> TcpStream {
    let mut s = proxy.connect();
    let key = base64(b"0123456789abcdef");
    let req = format!(
        "GET /chat HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.write_all(req.as_bytes()).expect("handshake");
    let head = read_head(&mut s);
    assert_eq!(status(&head), 101, "{}: {head}", proxy.label);
    assert_eq!(field(&head, "upgrade"), Some("websocket"), "{head}");
    assert_eq!(field(&head, "connection"), Some("upgrade"), "{head}");
    assert_eq!(
        field(&head, "sec-websocket-accept"),
        Some(accept_key(&key).as_str()),
        "{head}"
    );
    s
}

const WS_BYTES: usize = 10 << 20;
const WS_FRAME: usize = 60 << 10;

fn websocket_echo_10_mib_each_way(io: Io) {
    // The RFC's own example, so the test's SHA-1 and base64 are right.
    assert_eq!(
        accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    for shards in SHARD_COUNTS {
        let (heads_tx, heads) = mpsc::channel();
        let backend = ws_echo_backend(heads_tx);
        let proxy = TestProxy::start(io, shards, &config(&[backend.addr], ""));
        let label = proxy.label.clone();
        let mut s = ws_connect(&proxy);
        let head = heads.recv_timeout(WAIT).expect("backend got the head");
        assert!(head.contains("\r\nConnection: upgrade\r\n"), "{head}");
        assert!(head.contains("\r\nUpgrade: websocket\r\n"), "{head}");
        assert!(field(&head, "x-forwarded-for").is_some(), "{head}");

        let labels = [format!("backend=\"{}\"", backend.addr)];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let m = proxy.scrape();
        assert_eq!(
            sample_sum(&m, "shardline_proxy_backend_tunnels", &labels),
            1.0,
            "{label}: one tunnel open"
        );
        assert_eq!(
            sample_sum(&m, "shardline_proxy_backend_upgrades_total", &labels),
            1.0,
            "{label}"
        );
        assert_eq!(
            sample_sum(&m, "shardline_proxy_backend_active_connections", &labels),
            1.0,
            "{label}: the tunnel's upstream counts as active"
        );

        let data = random(7, WS_BYTES);
        let mut w = s.try_clone().expect("clone");
        let up = data.clone();
        let writer = thread::spawn(move || {
            for (i, chunk) in up.chunks(WS_FRAME).enumerate() {
                let mask = (i as u32).wrapping_mul(2_654_435_761).to_be_bytes();
                w.write_all(&ws_frame(0x2, chunk, Some(mask)))
                    .expect("client writes a frame");
            }
        });
        let mut back = Vec::with_capacity(WS_BYTES);
        while back.len() < WS_BYTES {
            let (op, masked, payload) = ws_read(&mut s)
                .unwrap_or_else(|e| panic!("{label}: read after {} bytes: {e}", back.len()));
            assert_eq!((op, masked), (0x2, false), "{label}: a server frame");
            back.extend_from_slice(&payload);
        }
        writer.join().expect("writer");
        assert!(back == data, "{label}: echo differs ({} bytes)", back.len());
        // The closing handshake, then the backend's close reaches the client.
        s.write_all(&ws_frame(0x8, &1000u16.to_be_bytes(), Some([1, 2, 3, 4])))
            .expect("close frame");
        let (op, _, payload) = ws_read(&mut s).expect("close frame back");
        assert_eq!((op, payload.as_slice()), (0x8, &[3, 232][..]), "{label}");
        assert!(read_to_eof(&mut s).is_empty(), "{label}: EOF after close");
        drop(s);

        assert!(
            proxy.metrics().total().relays_started >= 1,
            "{label}: plain on both sides: the tunnel was spliced"
        );
        assert!(
            wait_until(WAIT, || {
                let m = proxy.scrape();
                sample_sum(&m, "shardline_proxy_backend_tunnels", &labels) == 0.0
                    && sample_sum(&m, "shardline_proxy_backend_active_connections", &labels) == 0.0
                    && sample_sum(&m, "shardline_proxy_client_connections", &[]) == 0.0
            }),
            "{label}: the tunnel is gone from the gauges"
        );
        let m = proxy.scrape();
        assert_eq!(
            sample_sum(&m, "shardline_proxy_requests_total", &["class=\"1xx\""]),
            1.0,
            "{label}: the 101 is counted"
        );
        assert_eq!(
            sample_sum(&m, "shardline_proxy_backend_up{", &labels),
            1.0,
            "{label}: a tunnel that ends is no failure"
        );
    }
}

/// A backend that reads one request head, then answers `reply` (and, when
/// `then_read` is set, sends what it reads next to the channel).
fn scripted_backend(
    reply: &'static [u8],
    heads: mpsc::Sender<(String, Vec<u8>)>,
    then_read: bool,
) -> TcpBackend {
    TcpBackend::start(move |mut s| {
        let head = read_head(&mut s);
        s.write_all(reply).expect("backend answers");
        let rest = if then_read {
            read_to_eof(&mut s)
        } else {
            Vec::new()
        };
        let _ = heads.send((head, rest));
    })
}

/// An Upgrade request answered 200: an ordinary response (no Upgrade field to
/// the client), the client kept alive for its next request, which goes on a
/// new upstream connection (the upgrade request's is never pooled).
fn a_non_101_answer_is_an_ordinary_response(io: Io) {
    for shards in SHARD_COUNTS {
        let backend = HttpBackend::start("b", Answer::Info);
        let proxy = TestProxy::start(io, shards, &config(&[backend.addr()], ""));
        let label = proxy.label.clone();
        let mut c = HttpClient::new(proxy.connect());
        c.send(
            b"GET /up HTTP/1.1\r\nHost: test\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        let r = c.response(false);
        assert_eq!(r.status, 200, "{label}");
        assert_eq!(r.text(), "b GET /up 0", "{label}");
        assert_eq!(r.header("upgrade"), None, "{label}");
        assert_eq!(r.header("connection"), None, "{label}: kept alive");
        c.send(&get("/next"));
        let r = c.response(false);
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "b GET /next 0"),
            "{label}"
        );
        let seen = backend.requests();
        assert_eq!(seen.len(), 2, "{label}");
        assert_eq!(seen[0].header("upgrade"), Some("websocket"), "{label}");
        assert_eq!(seen[0].header("connection"), Some("upgrade"), "{label}");
        assert_eq!(seen[1].header("upgrade"), None, "{label}");
        assert_eq!(
            backend.accepted(),
            2,
            "{label}: the upgrade request's connection was not reused"
        );
        // And a 101 to a request that did not ask for it is a bad response.
        let (tx, _rx) = mpsc::channel();
        let rogue = scripted_backend(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
            tx,
            false,
        );
        let proxy = TestProxy::start(io, shards, &config(&[rogue.addr], ""));
        let mut c = HttpClient::new(proxy.connect());
        c.send(&get("/"));
        assert_eq!(c.response(false).status, 502, "{label}: unasked 101");
    }
}

/// The client sends bytes right behind its request head and its FIN before
/// the backend answered; the backend sends bytes right behind its 101 head.
/// Both go first, in order, and the client's FIN follows its bytes.
fn bytes_behind_either_head_go_first_and_a_fin_follows(io: Io) {
    for shards in SHARD_COUNTS {
        let (tx, rx) = mpsc::channel();
        let backend = TcpBackend::start(move |mut s| {
            let head = read_head(&mut s);
            // Late enough that the client's bytes and FIN wait in the proxy.
            thread::sleep(Duration::from_millis(100));
            s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\nserver-first:")
                .expect("101");
            let early = read_to_eof(&mut s);
            s.write_all(&early).expect("echo");
            s.shutdown(Shutdown::Write).expect("FIN");
            let _ = tx.send((head, early));
        });
        let proxy = TestProxy::start(io, shards, &config(&[backend.addr], ""));
        let label = proxy.label.clone();
        let mut s = proxy.connect();
        // Less than the proxy buffers for a client before it stops reading it.
        let early = random(3, 40 << 10);
        let mut req =
            b"GET /e HTTP/1.1\r\nHost: test\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n"
                .to_vec();
        req.extend_from_slice(&early);
        s.write_all(&req).expect("request and early bytes");
        s.shutdown(Shutdown::Write).expect("client FIN");
        let head = read_head(&mut s);
        assert_eq!(status(&head), 101, "{label}: {head}");
        let rest = read_to_eof(&mut s);
        let (got_head, got) = rx.recv_timeout(WAIT).expect("backend done");
        assert!(got_head.contains("Upgrade: echo\r\n"), "{got_head}");
        assert!(
            got == early,
            "{label}: early bytes ({} of {})",
            got.len(),
            early.len()
        );
        let mut want = b"server-first:".to_vec();
        want.extend_from_slice(&early);
        assert!(
            rest == want,
            "{label}: bytes behind the 101 ({})",
            rest.len()
        );
    }
}

/// A backend that answers 101 and then echoes until the client's FIN, then
/// sends `tail` and its own FIN.
fn echo_backend(tail: &'static [u8]) -> TcpBackend {
    TcpBackend::start(move |mut s| {
        read_head(&mut s);
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\n",
        )
        .expect("101");
        let mut buf = [0u8; 16 << 10];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = s.write_all(tail);
        let _ = s.shutdown(Shutdown::Write);
    })
}

fn echo_connect(proxy: &TestProxy) -> TcpStream {
    let mut s = proxy.connect();
    s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        .expect("request");
    let head = read_head(&mut s);
    assert_eq!(status(&head), 101, "{}: {head}", proxy.label);
    s
}

/// The client's FIN reaches the backend while the way back stays open; then
/// the backend's FIN; and the other way round: the backend finishes first and
/// the client still sends.
fn half_close_both_ways(io: Io) {
    for shards in SHARD_COUNTS {
        let backend = echo_backend(b"bye");
        let proxy = TestProxy::start(io, shards, &config(&[backend.addr], ""));
        let label = proxy.label.clone();
        let mut s = echo_connect(&proxy);
        s.write_all(b"hello").expect("write");
        s.shutdown(Shutdown::Write).expect("client FIN");
        assert_eq!(read_to_eof(&mut s), b"hellobye", "{label}");

        // The backend closes its side first; the client's bytes still arrive.
        let (tx, rx) = mpsc::channel();
        let backend = TcpBackend::start(move |mut s| {
            read_head(&mut s);
            s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\ndone")
                .expect("101");
            s.shutdown(Shutdown::Write).expect("backend FIN");
            let _ = tx.send(read_to_eof(&mut s));
        });
        let proxy = TestProxy::start(io, shards, &config(&[backend.addr], ""));
        let mut s = echo_connect(&proxy);
        assert_eq!(read_to_eof(&mut s), b"done", "{label}");
        s.write_all(b"still here")
            .expect("client writes after the backend's FIN");
        s.shutdown(Shutdown::Write).expect("client FIN");
        assert_eq!(
            rx.recv_timeout(WAIT).expect("backend read"),
            b"still here",
            "{label}"
        );
    }
}

const IDLE_MS: u64 = 500;

/// `upgrade_idle_ms`: a tunnel quiet for that long is closed (both sides, and
/// counted), not before; one that trickles a byte every fifth of it stays up.
fn an_idle_tunnel_is_closed_and_a_trickling_one_is_not(io: Io) {
    for shards in SHARD_COUNTS {
        let backend = echo_backend(b"");
        let extra = format!("[timeouts]\nupgrade_idle_ms = {IDLE_MS}\nclient_idle_ms = 60000\n");
        let proxy = TestProxy::start(io, shards, &config(&[backend.addr], &extra));
        let label = proxy.label.clone();
        let mut s = echo_connect(&proxy);
        // Trickle for more than three timeouts.
        let start = Instant::now();
        let mut b = [0u8; 1];
        while start.elapsed() < Duration::from_millis(IDLE_MS * 3 + 200) {
            s.write_all(b"x").expect("tunnel still open");
            s.read_exact(&mut b).expect("echo");
            thread::sleep(Duration::from_millis(IDLE_MS / 5));
        }
        // Then silence.
        s.write_all(b"y").expect("write");
        s.read_exact(&mut b).expect("echo");
        let quiet = Instant::now();
        assert!(read_to_eof(&mut s).is_empty(), "{label}");
        let after = quiet.elapsed();
        assert!(
            after >= Duration::from_millis(IDLE_MS - 20),
            "{label}: closed after {after:?} of silence"
        );
        assert!(
            after < Duration::from_millis(IDLE_MS * 2 + 1500),
            "{label}: closed only after {after:?}"
        );
        let m = proxy.scrape();
        assert_eq!(
            sample_sum(
                &m,
                "shardline_proxy_idle_closed_total",
                &["kind=\"upgrade\""]
            ),
            1.0,
            "{label}"
        );
        assert_eq!(
            sample_sum(&m, "shardline_proxy_idle_closed_total", &["kind=\"tcp\""]),
            0.0,
            "{label}"
        );
    }
}

/// A pool with a backend that refuses connections: upgrade requests go to the
/// other one (a failed connect is retried like any request's). `h2c` is not
/// passed on: such a request is an ordinary one.
fn connects_are_retried_and_h2c_is_not_passed_on(io: Io) {
    for shards in SHARD_COUNTS {
        let backend = echo_backend(b"");
        let proxy = TestProxy::start(
            io,
            shards,
            &config(
                &[refused_addr(), backend.addr],
                "[timeouts]\nconnect_ms = 2000\n",
            ),
        );
        let label = proxy.label.clone();
        for i in 0..4 {
            let mut s = echo_connect(&proxy);
            s.write_all(&[i]).expect("write");
            let mut b = [0u8; 1];
            s.read_exact(&mut b).expect("echo");
            assert_eq!(b[0], i, "{label}");
        }
        let http = HttpBackend::start("h", Answer::Info);
        let proxy = TestProxy::start(io, shards, &config(&[http.addr()], ""));
        let mut c = HttpClient::new(proxy.connect());
        c.send(b"GET /h2 HTTP/1.1\r\nHost: test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n");
        let r = c.response(false);
        assert_eq!(r.status, 200, "{label}");
        let seen = http.requests();
        for gone in ["upgrade", "connection", "http2-settings"] {
            assert_eq!(seen[0].header(gone), None, "{label}: {gone}");
        }
        // An upgrade request with a body is an ordinary request too.
        c.send(b"POST /b HTTP/1.1\r\nHost: test\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 2\r\n\r\nhi");
        let r = c.response(false);
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "h POST /b 2"),
            "{label}"
        );
        assert_eq!(http.requests()[1].header("upgrade"), None, "{label}");
    }
}

shardline::per_backend! {
    websocket_echo_10_mib_each_way => websocket_echo_10_mib_each_way;
    a_non_101_answer_is_an_ordinary_response => a_non_101_answer_is_an_ordinary_response;
    bytes_behind_either_head_go_first_and_a_fin_follows => bytes_behind_either_head_go_first_and_a_fin_follows;
    half_close_both_ways => half_close_both_ways;
    an_idle_tunnel_is_closed_and_a_trickling_one_is_not => an_idle_tunnel_is_closed_and_a_trickling_one_is_not;
    connects_are_retried_and_h2c_is_not_passed_on => connects_are_retried_and_h2c_is_not_passed_on;
}
