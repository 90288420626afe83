//! TLS in the proxy, on both I/O backends: HTTPS termination with round-robin over
//! two backends and `X-Forwarded-Proto: https`, TCP mode terminating and relaying
//! plaintext, TLS to backends (CA and server name checked), certificates by SNI,
//! certificate reload under a live connection, junk on the TLS port, an
//! upgraded connection through an HTTPS listener (copied, never spliced).

#[path = "../../../framework/tests/common/certs.rs"]
mod certs;
mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    sync::Arc,
};

use certs::TestCa;
use common::{Answer, HttpBackend, HttpClient, TcpBackend, TestProxy};
use rustls::pki_types::ServerName;
use shardline::{tls::CertFiles, Io};

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_client(proxy: &TestProxy, config: Arc<rustls::ClientConfig>, name: &str) -> Tls {
    let sock = proxy.connect();
    let conn =
        rustls::ClientConnection::new(config, ServerName::try_from(name.to_string()).unwrap())
            .unwrap();
    rustls::StreamOwned::new(conn, sock)
}

fn fingerprint(s: &Tls) -> String {
    let der = &s.conn.peer_certificates().expect("a certificate")[0];
    let d = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn tls_table(files: &CertFiles) -> String {
    format!(
        "[listener.tls]\ncert = {:?}\nkey = {:?}\n",
        files.cert.display().to_string(),
        files.key.display().to_string()
    )
}

/// A server configuration for a TLS test backend.
fn backend_config(files: &CertFiles) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
    Arc::new(
        rustls::ServerConfig::builder_with_provider(certs::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
    )
}

fn https_round_robin_over_two_backends(io: Io) {
    let ca = TestCa::new("proxy-https");
    let site = ca.server("site", &["localhost"]);
    let a = HttpBackend::start("a", Answer::Info);
    let b = HttpBackend::start("b", Answer::Info);
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"p\"\n{}\
         [pool.p]\nbackends = [{{ address = \"{}\" }}, {{ address = \"{}\" }}]\n",
        tls_table(&site),
        a.addr(),
        b.addr()
    );
    let proxy = TestProxy::start(io, 1, &config);
    let cfg = ca.client_config();
    let mut seen = Vec::new();
    // Keep-alive on one connection, then new connections (resumed sessions).
    let mut c = HttpClient::new(tls_client(&proxy, cfg.clone(), "localhost"));
    for i in 0..4 {
        c.send(format!("GET /k{i} HTTP/1.1\r\nHost: site\r\n\r\n").as_bytes());
        let r = c.response(false);
        assert_eq!(r.status, 200, "{}", proxy.label);
        seen.push(r.header("X-Backend").unwrap().to_string());
    }
    assert_eq!(
        c.stream.conn.alpn_protocol(),
        None,
        "the client offered no ALPN"
    );
    for i in 0..4 {
        let mut c = HttpClient::new(tls_client(&proxy, cfg.clone(), "localhost"));
        c.send(format!("GET /n{i} HTTP/1.1\r\nHost: site\r\n\r\n").as_bytes());
        let r = c.response(false);
        assert_eq!(r.status, 200);
        seen.push(r.header("X-Backend").unwrap().to_string());
    }
    // Round-robin: a and b alternate.
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "{}: {seen:?}", proxy.label);
    }
    let reqs = a.requests();
    assert!(!reqs.is_empty());
    assert!(
        reqs.iter()
            .all(|r| r.header("X-Forwarded-Proto") == Some("https")),
        "{}: the backend is told the client used https",
        proxy.label
    );
    let total = proxy.metrics().total();
    assert_eq!(total.tls_handshakes, 5, "{}", proxy.label);
    assert!(total.tls_resumed >= 3, "{}: {total:?}", proxy.label);
    proxy.shutdown().unwrap();
}

fn tcp_mode_terminates_and_relays_plaintext(io: Io) {
    let ca = TestCa::new("proxy-tcp");
    let site = ca.server("site", &["localhost"]);
    let echo = TcpBackend::start(|mut s| {
        let mut buf = [0u8; 16 << 10];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"tcp\"\npool = \"p\"\n{}\
         [pool.p]\nbackends = [{{ address = \"{}\" }}]\n[limits]\nsplice = \"always\"\n",
        tls_table(&site),
        echo.addr
    );
    let proxy = TestProxy::start(io, 2, &config);
    let mut s = tls_client(&proxy, ca.client_config(), "localhost");
    // Large enough that the plain TCP path would splice: TLS copies instead.
    let payload: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    let writer_payload = payload.clone();
    s.write_all(&writer_payload).unwrap();
    let mut back = vec![0u8; payload.len()];
    s.read_exact(&mut back).unwrap();
    assert!(back == payload, "{}: relayed byte for byte", proxy.label);
    assert_eq!(proxy.metrics().total().relays_started, 0, "{}", proxy.label);
    proxy.shutdown().unwrap();
}

fn tls_to_backends_checks_ca_and_name(io: Io) {
    let ca = TestCa::new("proxy-up");
    let up = ca.server("up", &["backend.test"]);
    let b = HttpBackend::start_tls("secure", Answer::EchoBody, backend_config(&up));
    let config = |name: &str| {
        format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"p\"\n\
             [pool.p]\nbackends = [{{ address = \"{}\" }}]\ntls = true\ntls_ca = {:?}\n\
             tls_server_name = \"{name}\"\n[limits]\nconnect_attempts = 1\n",
            b.addr(),
            ca.ca_pem.display().to_string()
        )
    };
    let proxy = TestProxy::start(io, 1, &config("backend.test"));
    let mut c = HttpClient::new(proxy.connect());
    let body = vec![b'x'; 100_000];
    let mut req = format!(
        "POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    c.send(&req);
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}", proxy.label);
    assert!(
        r.body == body,
        "{}: the body crossed TLS both ways",
        proxy.label
    );
    assert_eq!(b.requests()[0].header("X-Forwarded-Proto"), Some("http"));
    proxy.shutdown().unwrap();

    // A name the backend's certificate does not cover: no request reaches it.
    let before = b.requests().len();
    let proxy = TestProxy::start(io, 1, &config("other.test"));
    let mut c = HttpClient::new(proxy.connect());
    c.send(b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response(false).status, 502, "{}", proxy.label);
    assert_eq!(b.requests().len(), before);
    proxy.shutdown().unwrap();
}

fn sni_certificates_and_junk(io: Io) {
    let ca = TestCa::new("proxy-sni");
    let main = ca.server("main", &["main.test"]);
    let api = ca.server("api", &["api.test"]);
    let a = HttpBackend::start("a", Answer::Info);
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"p\"\n{}\
         [[listener.tls.sni]]\nnames = [\"api.test\"]\ncert = {:?}\nkey = {:?}\n\
         [pool.p]\nbackends = [{{ address = \"{}\" }}]\n",
        tls_table(&main),
        api.cert.display().to_string(),
        api.key.display().to_string(),
        a.addr()
    );
    let proxy = TestProxy::start(io, 1, &config);
    let cfg = ca.client_config();
    let mut good = HttpClient::new(tls_client(&proxy, cfg.clone(), "main.test"));
    good.send(b"GET / HTTP/1.1\r\nHost: main.test\r\n\r\n");
    assert_eq!(good.response(false).status, 200);
    assert_eq!(
        fingerprint(&good.stream),
        certs::fingerprint_hex(&main.cert)
    );
    let mut c = HttpClient::new(tls_client(&proxy, cfg.clone(), "api.test"));
    c.send(b"GET / HTTP/1.1\r\nHost: api.test\r\n\r\n");
    assert_eq!(c.response(false).status, 200);
    assert_eq!(fingerprint(&c.stream), certs::fingerprint_hex(&api.cert));
    assert_eq!(c.stream.conn.alpn_protocol(), None);
    // Plaintext HTTP and garbage on the TLS port: closed, nothing forwarded.
    let before = a.requests().len();
    let mut plain = HttpClient::new(proxy.connect());
    plain.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(plain.try_response(false).is_none(), "{}", proxy.label);
    let mut junk = proxy.connect();
    let _ = junk.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3, 4, 5]);
    let mut sink = Vec::new();
    let _ = junk.read_to_end(&mut sink);
    assert_eq!(a.requests().len(), before);
    // The good connection is untouched.
    good.send(b"GET /again HTTP/1.1\r\nHost: main.test\r\n\r\n");
    assert_eq!(good.response(false).status, 200, "{}", proxy.label);
    proxy.shutdown().unwrap();
}

fn reload_swaps_certificates(io: Io) {
    let ca = TestCa::new("proxy-reload");
    let site = ca.server("site", &["localhost"]);
    let a = HttpBackend::start("a", Answer::Info);
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"p\"\n{}\
         [pool.p]\nbackends = [{{ address = \"{}\" }}]\n",
        tls_table(&site),
        a.addr()
    );
    let proxy = TestProxy::start(io, 2, &config);
    let mut live = HttpClient::new(tls_client(&proxy, ca.client_config(), "localhost"));
    live.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(live.response(false).status, 200);
    let old = fingerprint(&live.stream);
    // A key that does not match: refused, the old certificate stays.
    let other = ca.server("other", &["localhost"]);
    let good_key = std::fs::read(&site.key).unwrap();
    std::fs::copy(&other.key, &site.key).unwrap();
    let err = proxy.reload(&config).expect_err("mismatched key refused");
    assert!(err.to_string().contains("site.pem"), "{err}");
    std::fs::write(&site.key, good_key).unwrap();
    let mut c = HttpClient::new(tls_client(&proxy, ca.client_config(), "localhost"));
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(c.response(false).status, 200);
    assert_eq!(fingerprint(&c.stream), old);
    // Renewed files: new handshakes see them, the live connection goes on.
    std::fs::copy(&other.cert, &site.cert).unwrap();
    std::fs::copy(&other.key, &site.key).unwrap();
    proxy.reload(&config).expect("renewed certificate reloads");
    for _ in 0..3 {
        let mut c = HttpClient::new(tls_client(&proxy, ca.client_config(), "localhost"));
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(c.response(false).status, 200);
        assert_eq!(fingerprint(&c.stream), certs::fingerprint_hex(&other.cert));
    }
    live.send(b"GET /still HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(live.response(false).status, 200, "{}", proxy.label);
    // TLS cannot be turned off on a running listener.
    let plain = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"p\"\n\
         [pool.p]\nbackends = [{{ address = \"{}\" }}]\n",
        a.addr()
    );
    assert!(proxy.reload(&plain).is_err());
    proxy.shutdown().unwrap();
}

/// An HTTPS client's `Upgrade` request answered 101: the tunnel relays the
/// plaintext both ways by copying (the kernel would splice TLS records).
fn an_upgrade_through_https_is_copied(io: Io) {
    let ca = TestCa::new("proxy-upgrade");
    let site = ca.server("site", &["localhost"]);
    let echo = TcpBackend::start(|mut s| {
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).unwrap_or(0) == 0 {
                return;
            }
            head.push(b[0]);
        }
        let text = String::from_utf8_lossy(&head).to_string();
        assert!(text.contains("\r\nUpgrade: echo\r\n"), "{text}");
        assert!(text.contains("X-Forwarded-Proto: https\r\n"), "{text}");
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: upgrade\r\n\r\n",
        )
        .unwrap();
        let mut buf = [0u8; 16 << 10];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"p\"\n{}\
         [pool.p]\nbackends = [{{ address = \"{}\" }}]\n[limits]\nsplice = \"always\"\n",
        tls_table(&site),
        echo.addr
    );
    let proxy = TestProxy::start(io, 1, &config);
    let mut c = tls_client(&proxy, ca.client_config(), "localhost");
    c.write_all(b"GET /t HTTP/1.1\r\nHost: site\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b).expect("the 101's head");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 101 "), "{}: {head}", proxy.label);
    let chunk: Vec<u8> = (0..64 << 10).map(|i| (i * 7 % 251) as u8).collect();
    for _ in 0..32 {
        c.write_all(&chunk).unwrap();
        let mut back = vec![0u8; chunk.len()];
        c.read_exact(&mut back).expect("echo through the tunnel");
        assert!(back == chunk, "{}: echo differs", proxy.label);
    }
    assert_eq!(
        proxy.metrics().total().relays_started,
        0,
        "{}: a TLS side is never spliced",
        proxy.label
    );
    drop(c);
    proxy.shutdown().unwrap();
}

/// A PROXY header in front of the TLS ClientHello on an HTTPS listener: the
/// handshake reads what follows the header, and the backend is told the
/// header's client in X-Forwarded-For.
fn proxy_header_before_the_client_hello(io: Io) {
    let ca = TestCa::new("proxy-pp-tls");
    let site = ca.server("site", &["localhost"]);
    let a = HttpBackend::start("a", Answer::Info);
    let config = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"p\"\n\
         proxy_protocol = true\nproxy_protocol_trusted = [\"127.0.0.1\"]\n{}\
         [pool.p]\nbackends = [{{ address = \"{}\" }}]\n",
        tls_table(&site),
        a.addr()
    );
    let proxy = TestProxy::start(io, 1, &config);
    for v2 in [false, true] {
        let mut sock = proxy.connect();
        let mut h = Vec::new();
        let client = "192.0.2.77:1234".parse().unwrap();
        if v2 {
            shardline::proxy_protocol::encode_v2(client, proxy.addr, &mut h);
        } else {
            shardline::proxy_protocol::encode_v1(client, proxy.addr, &mut h);
        }
        sock.write_all(&h).unwrap();
        let conn = rustls::ClientConnection::new(
            ca.client_config(),
            ServerName::try_from("localhost".to_string()).unwrap(),
        )
        .unwrap();
        let mut c = HttpClient::new(rustls::StreamOwned::new(conn, sock));
        c.send(b"GET /pp HTTP/1.1\r\nHost: site\r\n\r\n");
        assert_eq!(c.response(false).status, 200, "{}", proxy.label);
    }
    let reqs = a.requests();
    assert_eq!(reqs.len(), 2);
    assert!(
        reqs.iter()
            .all(|r| r.header("X-Forwarded-For") == Some("192.0.2.77")
                && r.header("X-Forwarded-Proto") == Some("https")),
        "{}",
        proxy.label
    );
    // Plain TLS without the header: refused before the handshake.
    let mut c = tls_client(&proxy, ca.client_config(), "localhost");
    assert!(
        c.write_all(b"GET / HTTP/1.1\r\nHost: site\r\n\r\n")
            .is_err()
            || {
                let mut b = [0u8; 1];
                !matches!(c.read(&mut b), Ok(1))
            }
    );
    assert_eq!(proxy.metrics().total().proxy_headers_failed, 1);
    proxy.shutdown().unwrap();
}

shardline::per_backend! {
    proxy_header_before_the_client_hello => proxy_header_before_the_client_hello;
    https_round_robin => https_round_robin_over_two_backends;
    tcp_terminates => tcp_mode_terminates_and_relays_plaintext;
    backend_tls => tls_to_backends_checks_ca_and_name;
    sni_and_junk => sni_certificates_and_junk;
    reload => reload_swaps_certificates;
    upgrade_copied => an_upgrade_through_https_is_copied;
}
