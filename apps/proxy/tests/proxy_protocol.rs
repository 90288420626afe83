//! PROXY protocol, on both backends: headers accepted on listeners with
//! `proxy_protocol = true` from trusted sources (v1 and v2; the header's
//! source is the client everywhere: X-Forwarded-For, what the backend is
//! told), untrusted sources refused, bad headers closed; headers sent to the
//! backends of pools with `send_proxy_protocol` (TCP and HTTP mode; HTTP
//! upstream connections are then never reused).

mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use common::{sample_sum, wait_until, HttpClient, TcpBackend, TestProxy};
use shardline::{
    proxy_protocol::{self, Parsed},
    Io,
};

/// Reads a PROXY header from `s` a byte at a time (so nothing after it is
/// consumed): its source address (`None`: a header without addresses).
fn read_header(s: &mut TcpStream) -> Option<Option<SocketAddr>> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    loop {
        if s.read(&mut b).ok()? != 1 {
            return None;
        }
        buf.push(b[0]);
        match proxy_protocol::parse(&buf) {
            Ok(Parsed::Incomplete) => continue,
            Ok(Parsed::Complete { header, .. }) => return Some(header.addresses.map(|a| a.source)),
            Err(_) => return None,
        }
    }
}

/// A TCP backend that reads a PROXY header, then answers each line with
/// `<header source> <line>`.
fn tcp_backend(seen: Arc<Mutex<Vec<Option<SocketAddr>>>>) -> TcpBackend {
    TcpBackend::start(move |mut s| {
        let Some(src) = read_header(&mut s) else {
            let _ = s.write_all(b"no header\n");
            return;
        };
        seen.lock().unwrap().push(src);
        let mut line = Vec::new();
        let mut b = [0u8; 1];
        while s.read(&mut b).unwrap_or(0) == 1 {
            line.push(b[0]);
            if b[0] == b'\n' {
                let mut out = format!("{src:?} ").into_bytes();
                out.extend_from_slice(&line);
                let _ = s.write_all(&out);
                line.clear();
            }
        }
    })
}

/// An HTTP backend that reads a PROXY header, then answers each request
/// (keep-alive) with a body `src=<header source> xff=<X-Forwarded-For>`.
fn http_backend() -> TcpBackend {
    TcpBackend::start(move |mut s| {
        let src = read_header(&mut s);
        loop {
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut b).unwrap_or(0) != 1 {
                    return;
                }
                head.push(b[0]);
            }
            let text = String::from_utf8_lossy(&head).to_string();
            let xff = text
                .lines()
                .find_map(|l| {
                    l.strip_prefix("x-forwarded-for: ")
                        .or(l.strip_prefix("X-Forwarded-For: "))
                })
                .unwrap_or("-")
                .to_string();
            let body = format!("src={src:?} xff={xff}");
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
    })
}

fn line(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
        out.push(b[0]);
    }
    String::from_utf8_lossy(&out).to_string()
}

fn closed_without_a_byte(s: &mut TcpStream) -> bool {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out.is_empty()
}

fn tcp_mode_accepts_and_sends(io: Io) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let backend = tcp_backend(seen.clone());
    let proxy = TestProxy::start(
        io,
        2,
        &format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"tcp\"\npool = \"p\"\n\
             proxy_protocol = true\nproxy_protocol_trusted = [\"127.0.0.0/8\"]\n\
             [[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"tcp\"\npool = \"p\"\n\
             proxy_protocol = true\nproxy_protocol_trusted = [\"10.0.0.0/8\", \"::1\"]\n\
             [pool.p]\nbackends = [{{ address = \"{}\" }}]\nsend_proxy_protocol = \"v2\"\n\
             [timeouts]\ntls_hello_ms = 500\n[admin]\nlisten = \"127.0.0.1:0\"\n",
            backend.addr
        ),
    );
    // v1 from a trusted source: the backend gets a v2 header naming the client.
    let client: SocketAddr = "203.0.113.5:4444".parse().unwrap();
    let mut s = proxy.connect_to(0);
    let mut h = Vec::new();
    proxy_protocol::encode_v1(client, proxy.addrs[0], &mut h);
    h.extend_from_slice(b"ping\n");
    s.write_all(&h).unwrap();
    assert_eq!(
        line(&mut s),
        format!("Some({client}) ping"),
        "{}",
        proxy.label
    );
    // v2, split in two writes.
    let client6: SocketAddr = "[2001:db8::77]:999".parse().unwrap();
    let mut s2 = proxy.connect_to(0);
    let mut h = Vec::new();
    proxy_protocol::encode_v2(client6, "[2001:db8::1]:443".parse().unwrap(), &mut h);
    s2.write_all(&h[..7]).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    s2.write_all(&h[7..]).unwrap();
    s2.write_all(b"pong\n").unwrap();
    assert_eq!(line(&mut s2), format!("Some({client6}) pong"));
    // Without a header (the client is trusted but sends data): closed.
    let mut bad = proxy.connect_to(0);
    bad.write_all(b"ping\n").unwrap();
    assert!(closed_without_a_byte(&mut bad));
    // Too slow: closed at tls_hello_ms.
    let mut slow = proxy.connect_to(0);
    slow.write_all(b"PROXY TCP4 ").unwrap();
    assert!(closed_without_a_byte(&mut slow));
    // An untrusted source (127.0.0.1 is not in the second listener's list):
    // refused, whatever it sends.
    let mut untrusted = proxy.connect_to(1);
    let mut h = Vec::new();
    proxy_protocol::encode_v1(client, proxy.addrs[1], &mut h);
    let _ = untrusted.write_all(&h);
    assert!(closed_without_a_byte(&mut untrusted));
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "only the good ones reached the backend"
    );
    let m = proxy.metrics().total();
    assert_eq!(m.preamble_refused, 1);
    assert_eq!(m.proxy_headers, 2);
    assert_eq!(m.proxy_headers_failed, 2);
    let samples = proxy.scrape();
    assert_eq!(
        sample_sum(&samples, "shardline_preamble_refused_total", &[]),
        1.0
    );
    drop(s);
    drop(s2);
}

fn http_mode_accepts_and_sends(io: Io) {
    let backend = http_backend();
    for (version, header_version) in [("v1", 2), ("v2", 1)] {
        let proxy = TestProxy::start(
            io,
            1,
            &format!(
                "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"p\"\n\
                 proxy_protocol = true\nproxy_protocol_trusted = [\"127.0.0.1\"]\n\
                 [pool.p]\nbackends = [{{ address = \"{}\" }}]\nsend_proxy_protocol = \"{version}\"\n",
                backend.addr
            ),
        );
        let before = backend.accepted();
        let client: SocketAddr = "198.51.100.23:5000".parse().unwrap();
        let mut s = proxy.connect();
        let mut h = Vec::new();
        match header_version {
            1 => proxy_protocol::encode_v1(client, proxy.addr, &mut h),
            _ => proxy_protocol::encode_v2(client, proxy.addr, &mut h),
        }
        s.write_all(&h).unwrap();
        let mut c = HttpClient::new(s);
        for _ in 0..3 {
            c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
            let r = c.response(false);
            assert_eq!(r.status, 200);
            assert_eq!(
                r.text(),
                format!("src=Some(Some({client})) xff=198.51.100.23"),
                "{} {version}",
                proxy.label
            );
        }
        // A client behind the same proxy, from another address: its own
        // header, on its own upstream connection (none is reused).
        let other: SocketAddr = "198.51.100.99:6000".parse().unwrap();
        let mut s = proxy.connect();
        let mut h = Vec::new();
        proxy_protocol::encode_v2(other, proxy.addr, &mut h);
        s.write_all(&h).unwrap();
        let mut c2 = HttpClient::new(s);
        c2.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(
            c2.response(false).text(),
            format!("src=Some(Some({other})) xff=198.51.100.99")
        );
        assert!(
            wait_until(Duration::from_secs(5), || backend.accepted() == before + 4),
            "one upstream connection per request: {}",
            backend.accepted() - before
        );
    }
}

fn http_without_header_sending_keeps_pooling(io: Io) {
    // A listener with proxy_protocol whose pool does not send: the header's
    // address is X-Forwarded-For, upstream connections are pooled as usual.
    let backend = TcpBackend::start(move |mut s| loop {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).unwrap_or(0) != 1 {
                return;
            }
            head.push(b[0]);
        }
        let text = String::from_utf8_lossy(&head).to_lowercase();
        let xff = text
            .lines()
            .find_map(|l| l.strip_prefix("x-forwarded-for: "))
            .unwrap_or("-")
            .to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{xff}",
            xff.len()
        );
        if s.write_all(resp.as_bytes()).is_err() {
            return;
        }
    });
    let proxy = TestProxy::start(
        io,
        1,
        &format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"p\"\n\
             proxy_protocol = true\nproxy_protocol_trusted = [\"0.0.0.0/0\"]\n\
             [pool.p]\nbackends = [{{ address = \"{}\" }}]\n",
            backend.addr
        ),
    );
    let mut s = proxy.connect();
    s.write_all(b"PROXY TCP4 192.0.2.200 127.0.0.1 1000 80\r\n")
        .unwrap();
    let mut c = HttpClient::new(s);
    for _ in 0..3 {
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n");
        assert_eq!(c.response(false).text(), "1.1.1.1, 192.0.2.200");
    }
    assert_eq!(backend.accepted(), 1, "pooled");
}

fn health_checks_send_a_local_header(io: Io) {
    for (version, want) in [
        ("v1", b"PROXY UNKNOWN\r\nGET /healthz ".to_vec()),
        ("v2", {
            let mut h = Vec::new();
            proxy_protocol::encode_v2_local(&mut h);
            h.extend_from_slice(b"GET /healthz ");
            h
        }),
    ] {
        let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let s2 = seen.clone();
        let backend = TcpBackend::start(move |mut s| {
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            // (The v2 signature itself starts with CRLF CRLF: read up to the
            // end of the request head, after "GET".)
            let done = |h: &[u8]| h.ends_with(b"\r\n\r\n") && h.windows(3).any(|w| w == b"GET");
            while !done(&head) && head.len() < 4096 {
                if s.read(&mut b).unwrap_or(0) != 1 {
                    break;
                }
                head.push(b[0]);
            }
            s2.lock().unwrap().push(head);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        });
        let proxy = TestProxy::start(
            io,
            1,
            &format!(
                "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"p\"\n\
                 [pool.p]\nbackends = [{{ address = \"{}\" }}]\nsend_proxy_protocol = \"{version}\"\n\
                 [pool.p.health]\nkind = \"http\"\npath = \"/healthz\"\ninterval_ms = 50\n",
                backend.addr
            ),
        );
        assert!(
            wait_until(Duration::from_secs(5), || !seen.lock().unwrap().is_empty()),
            "{}: a check came",
            proxy.label
        );
        let first = seen.lock().unwrap()[0].clone();
        assert!(
            first.starts_with(&want),
            "{} {version}: {:?}",
            proxy.label,
            String::from_utf8_lossy(&first)
        );
    }
}

shardline::per_backend! {
    health_checks_send_a_local_header => health_checks_send_a_local_header;
    tcp_mode_accepts_and_sends => tcp_mode_accepts_and_sends;
    http_mode_accepts_and_sends => http_mode_accepts_and_sends;
    http_without_header_sending_keeps_pooling => http_without_header_sending_keeps_pooling;
}
