//! TLS listeners and outbound TLS, on both backends: byte-exact echo of 1,000
//! concurrent TLS connections, SNI, reload under a live connection, the handshake
//! timeout and cap, hostile input, close_notify, client certificates, resumption
//! across shards, and `Ctx::connect_tls`.

#[path = "common/certs.rs"]
mod certs;
mod common;
#[path = "common/echo_client.rs"]
mod echo_client;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{mpsc, Arc, Mutex},
    time::Duration,
};

use certs::TestCa;
use rustls::pki_types::ServerName;
use shardline::{
    tls::{CertFiles, ClientAuth, TlsAcceptorOptions},
    ConnId, Ctx, Handler, Io, Listener, RunningServer, Server, ServerBuilder, TlsAcceptor,
    TlsConnector, TlsInfo,
};

/// Echoes plaintext; reports each connection's TLS facts; `quit\n` makes it say
/// `bye\n` and close.
#[derive(Clone)]
struct TlsEcho {
    seen: Arc<Mutex<Vec<TlsInfo>>>,
}

impl Handler for TlsEcho {
    type Msg = ();
    type Timer = ();
    type Conn = ();
    type Listener = ();

    fn on_accept(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _: Listener<'_, ()>,
        _: SocketAddr,
    ) {
        let info = ctx
            .tls(conn)
            .cloned()
            .expect("a TLS listener's connection has TLS facts");
        self.seen.lock().unwrap().push(info);
    }

    fn on_data(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _: &mut (), data: &[u8]) -> usize {
        if data == b"quit\n" {
            let _ = ctx.send(conn, b"bye\n");
            ctx.close(conn);
            return data.len();
        }
        let _ = ctx.send(conn, data);
        data.len()
    }

    fn on_backpressure(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _: &mut ()) {
        ctx.pause_reading(conn);
    }

    fn on_drained(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _: &mut ()) {
        ctx.resume_reading(conn);
    }
}

fn tls_builder(io: Io, shards: usize, acceptor: TlsAcceptor) -> ServerBuilder {
    Server::builder()
        .io(io)
        .shards(shards)
        .pin(false)
        .listen_tls("127.0.0.1:0".parse().unwrap(), acceptor)
        .shutdown_timeout(Duration::from_secs(10))
}

fn start_echo(builder: ServerBuilder) -> (RunningServer, SocketAddr, Arc<Mutex<Vec<TlsInfo>>>) {
    common::init_tracing();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let h = TlsEcho { seen: seen.clone() };
    let server = builder
        .build(move |_| h.clone())
        .expect("valid config")
        .start()
        .expect("server starts");
    let addr = server.local_addrs()[0];
    (server, addr, seen)
}

fn name(n: &str) -> ServerName<'static> {
    ServerName::try_from(n.to_string()).unwrap()
}

/// A blocking TLS client connection.
fn connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    server: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let conn = rustls::ClientConnection::new(config, name(server)).unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// Sends a line, reads the echo.
fn roundtrip(s: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

fn peer_fingerprint(s: &rustls::StreamOwned<rustls::ClientConnection, TcpStream>) -> String {
    let der = &s.conn.peer_certificates().expect("server certificate")[0];
    let d = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn thousand_tls_connections_echo_every_byte(io: Io) {
    let ca = TestCa::new("echo");
    let cert = ca.server("localhost", &["localhost"]);
    let acceptor = TlsAcceptor::new(TlsAcceptorOptions::new(cert)).unwrap();
    // A debug build's handshakes are slow, and 1,000 arrive at once: the timeout
    // (which includes waiting for a slot) is not what this test is about.
    let builder = tls_builder(io, 2, acceptor).tls_handshake_timeout(Duration::from_secs(240));
    let (server, addr, seen) = start_echo(builder);
    let seed = 7;
    let client: echo_client::TlsClient = (ca.client_config(), name("localhost"));
    let report = echo_client::check_with(
        addr,
        Some(&client),
        1000,
        |i| echo_client::size_for(seed, i, 256 << 10),
        seed,
        Duration::from_secs(300),
    )
    .unwrap_or_else(|e| panic!("{io}: {e}"));
    let expected: u64 = (0..1000)
        .map(|i| echo_client::size_for(seed, i, 256 << 10) as u64)
        .sum();
    assert_eq!(report.bytes, expected, "{io}");
    let metrics = server.metrics();
    assert!(
        common::wait_until(Duration::from_secs(30), || metrics.total().conns_closed
            == 1000),
        "{io}: every connection closes: {:?}",
        metrics.total()
    );
    let total = metrics.total();
    assert_eq!(total.tls_handshakes, 1000, "{io}");
    assert_eq!(total.tls_failed, 0, "{io}");
    // Records cost bytes on the wire: more than the plaintext went each way.
    assert!(
        total.bytes_in > expected && total.bytes_out > expected,
        "{io}: {total:?}"
    );
    assert_eq!(seen.lock().unwrap().len(), 1000, "{io}");
    assert_eq!(total.tls_handshaking, 0, "{io}: every slot given back");
    server.shutdown().expect("clean shutdown");
}

fn sni_picks_the_certificate(io: Io) {
    let ca = TestCa::new("sni");
    let default = ca.server("default", &["default.test"]);
    let exact = ca.server("exact", &["chat.example.test"]);
    let wild = ca.server("wild", &["*.apps.test"]);
    let mut opts = TlsAcceptorOptions::new(default.clone());
    opts.sni = vec![
        (vec!["chat.example.test".into()], exact.clone()),
        (vec!["*.apps.test".into()], wild.clone()),
    ];
    opts.alpn = vec![b"irc".to_vec(), b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::new(opts).unwrap();
    let (server, addr, seen) = start_echo(tls_builder(io, 1, acceptor));
    let mut cfg = certs::client_config(&ca.ca_pem, None);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let cfg = Arc::new(cfg);
    for (sni, files) in [
        ("chat.example.test", &exact),
        ("api.apps.test", &wild),
        ("default.test", &default),
    ] {
        let mut s = connect(addr, cfg.clone(), sni);
        roundtrip(&mut s, b"hello\n");
        assert_eq!(
            peer_fingerprint(&s),
            certs::fingerprint_hex(&files.cert),
            "{io}: {sni} got the wrong certificate"
        );
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].server_name.as_deref(), Some("chat.example.test"));
    assert_eq!(seen[1].server_name.as_deref(), Some("api.apps.test"));
    assert_eq!(seen[0].alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(seen[0].version, "TLSv1.3");
    assert!(seen.iter().all(|i| i.peer_cert_sha256.is_none()));
    server.shutdown().unwrap();
}

fn reload_swaps_the_certificate_under_a_live_connection(io: Io) {
    let ca = TestCa::new("reload");
    let cert = ca.server("site", &["localhost"]);
    let acceptor = TlsAcceptor::new(TlsAcceptorOptions::new(cert.clone())).unwrap();
    let (server, addr, _) = start_echo(tls_builder(io, 2, acceptor.clone()));
    let cfg = ca.client_config();
    let mut live = connect(addr, cfg.clone(), "localhost");
    roundtrip(&mut live, b"before\n");
    let old = peer_fingerprint(&live);

    // A broken file is refused; the old certificate stays.
    let good = std::fs::read(&cert.cert).unwrap();
    std::fs::write(&cert.cert, b"-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    let err = acceptor
        .reload()
        .expect_err("a broken certificate is refused");
    assert!(
        err.to_string().contains("site.pem"),
        "error names the file: {err}"
    );
    std::fs::write(&cert.cert, good).unwrap();
    let mut s = connect(addr, ca.client_config(), "localhost");
    roundtrip(&mut s, b"x\n");
    assert_eq!(peer_fingerprint(&s), old);

    // A new certificate in place of the old files: new handshakes get it.
    let fresh = ca.server("fresh", &["localhost"]);
    std::fs::copy(&fresh.cert, &cert.cert).unwrap();
    std::fs::copy(&fresh.key, &cert.key).unwrap();
    acceptor.reload().expect("valid files reload");
    for _ in 0..4 {
        // Several, so both shards are likely asked; a fresh client each time (a
        // resumed session would not show the certificate again).
        let mut s = connect(addr, ca.client_config(), "localhost");
        roundtrip(&mut s, b"after\n");
        assert_eq!(
            peer_fingerprint(&s),
            certs::fingerprint_hex(&fresh.cert),
            "{io}"
        );
    }
    // The connection made before the reload still works.
    roundtrip(&mut live, b"still here\n");
    assert_eq!(server.metrics().total().tls_failed, 0, "{io}");
    server.shutdown().unwrap();
}

fn stalled_and_hostile_handshakes_are_closed(io: Io) {
    let ca = TestCa::new("hostile");
    let cert = ca.server("h", &["localhost"]);
    let acceptor = TlsAcceptor::new(TlsAcceptorOptions::new(cert)).unwrap();
    let builder = tls_builder(io, 1, acceptor).tls_handshake_timeout(Duration::from_millis(500));
    let (server, addr, seen) = start_echo(builder);
    let cfg = ca.client_config();
    let mut good = connect(addr, cfg.clone(), "localhost");
    roundtrip(&mut good, b"good\n");

    // Plaintext HTTP: an alert (or nothing), then EOF.
    let mut http = TcpStream::connect(addr).unwrap();
    http.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = http.read_to_end(&mut got);
    assert!(
        got.is_empty() || got[0] == 0x15,
        "{io}: plaintext gets an alert record at most: {got:?}"
    );
    // Garbage.
    let mut junk = TcpStream::connect(addr).unwrap();
    junk.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rng = echo_client::Stream::new(3);
    let mut bytes = vec![0u8; 4096];
    rng.fill(&mut bytes);
    let _ = junk.write_all(&bytes);
    let mut sink = Vec::new();
    let _ = junk.read_to_end(&mut sink);
    // A truncated ClientHello, then silence: closed by the handshake timeout.
    let hello = client_hello(&cfg);
    let mut trunc = TcpStream::connect(addr).unwrap();
    trunc
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    trunc.write_all(&hello[..hello.len() / 2]).unwrap();
    let mut rest = Vec::new();
    let n = trunc.read_to_end(&mut rest);
    assert!(
        n.is_ok() || rest.is_empty(),
        "{io}: closed, not left hanging"
    );
    // Silence from the start.
    let mut silent = TcpStream::connect(addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut none = Vec::new();
    let _ = silent.read_to_end(&mut none);
    assert!(none.is_empty(), "{io}");

    let total = server.metrics().total();
    assert!(
        total.tls_failed >= 2,
        "{io}: plaintext and garbage fail: {total:?}"
    );
    assert!(
        total.tls_timeouts >= 2,
        "{io}: truncated and silent time out: {total:?}"
    );
    assert_eq!(total.handler_panics, 0);
    // The handler heard of the good connection only; it is untouched.
    assert_eq!(seen.lock().unwrap().len(), 1, "{io}");
    roundtrip(&mut good, b"still good\n");
    server.shutdown().unwrap();
}

/// The first flight of a real client.
fn client_hello(cfg: &Arc<rustls::ClientConfig>) -> Vec<u8> {
    let mut c = rustls::ClientConnection::new(cfg.clone(), name("localhost")).unwrap();
    let mut out = Vec::new();
    c.write_tls(&mut out).unwrap();
    out
}

fn handshake_cap_queues_newcomers_and_serves_established(io: Io) {
    let ca = TestCa::new("cap");
    let cert = ca.server("c", &["localhost"]);
    let acceptor = TlsAcceptor::new(TlsAcceptorOptions::new(cert)).unwrap();
    let builder = tls_builder(io, 1, acceptor)
        .tls_max_handshakes(2)
        .tls_handshake_timeout(Duration::from_secs(60));
    let (server, addr, _) = start_echo(builder);
    let cfg = ca.client_config();
    let mut established = connect(addr, cfg.clone(), "localhost");
    roundtrip(&mut established, b"up\n");
    // A flood of connections that never finish their handshake.
    let stalled: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let metrics = server.metrics();
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            let t = metrics.total();
            t.tls_handshaking == 2 && t.tls_waiting == 18
        }),
        "{io}: two slots taken, the rest wait: {:?}",
        metrics.total()
    );
    // A real client waits behind them...
    let (tx, rx) = mpsc::channel();
    let cfg2 = cfg.clone();
    let waiter = std::thread::spawn(move || {
        let mut s = connect(addr, cfg2, "localhost");
        roundtrip(&mut s, b"late\n");
        tx.send(()).unwrap();
    });
    // ...while the established connection is served as usual.
    for i in 0..50 {
        roundtrip(&mut established, format!("msg {i}\n").as_bytes());
    }
    assert!(
        rx.try_recv().is_err(),
        "{io}: the newcomer waits for a slot"
    );
    drop(stalled);
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{io}: the newcomer gets a slot once the flood leaves"));
    waiter.join().unwrap();
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            let t = metrics.total();
            t.tls_handshaking == 0 && t.tls_waiting == 0
        }),
        "{io}: {:?}",
        metrics.total()
    );
    server.shutdown().unwrap();
}

fn close_sends_close_notify(io: Io) {
    let ca = TestCa::new("notify");
    let cert = ca.server("n", &["localhost"]);
    let acceptor = TlsAcceptor::new(TlsAcceptorOptions::new(cert)).unwrap();
    let (server, addr, _) = start_echo(tls_builder(io, 1, acceptor));
    let mut s = connect(addr, ca.client_config(), "localhost");
    s.write_all(b"quit\n").unwrap();
    let mut got = Vec::new();
    // read_to_end fails with UnexpectedEof if the server closed without
    // close_notify (a truncation attack looks the same).
    s.read_to_end(&mut got)
        .unwrap_or_else(|e| panic!("{io}: clean TLS close expected: {e}"));
    assert_eq!(got, b"bye\n");
    server.shutdown().unwrap();
}

fn client_certificates_are_verified_and_reported(io: Io) {
    let ca = TestCa::new("mtls");
    let other = TestCa::new("mtls-other");
    let cert = ca.server("s", &["localhost"]);
    let mut opts = TlsAcceptorOptions::new(cert);
    opts.client_auth = ClientAuth::Optional {
        ca: ca.ca_pem.clone(),
    };
    let acceptor = TlsAcceptor::new(opts).unwrap();
    let (server, addr, seen) = start_echo(tls_builder(io, 1, acceptor));
    let alice = ca.client("alice");
    let with_cert = Arc::new(certs::client_config(&ca.ca_pem, Some(&alice)));
    let mut s = connect(addr, with_cert, "localhost");
    roundtrip(&mut s, b"hi\n");
    let mut s2 = connect(addr, ca.client_config(), "localhost");
    roundtrip(&mut s2, b"anon\n");
    // A certificate from a CA the listener does not trust fails the handshake.
    let mallory = other.client("mallory");
    let bad = Arc::new(certs::client_config(&ca.ca_pem, Some(&mallory)));
    let mut s3 = connect(addr, bad, "localhost");
    let r = s3.write_all(b"x\n").and_then(|_| {
        let mut b = [0u8; 2];
        s3.read_exact(&mut b)
    });
    assert!(
        r.is_err(),
        "{io}: an untrusted client certificate is refused"
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{io}");
    assert_eq!(
        seen[0].peer_cert_sha256_hex().as_deref(),
        Some(certs::fingerprint_hex(&alice.cert).as_str()),
        "{io}"
    );
    assert_eq!(seen[1].peer_cert_sha256, None, "{io}");
    server.shutdown().unwrap();
}

fn tickets_resume_on_any_shard(io: Io) {
    let ca = TestCa::new("resume");
    let cert = ca.server("r", &["localhost"]);
    let acceptor = TlsAcceptor::new(TlsAcceptorOptions::new(cert)).unwrap();
    let (server, addr, seen) = start_echo(tls_builder(io, 2, acceptor));
    let cfg = ca.client_config();
    for i in 0..6 {
        let mut s = connect(addr, cfg.clone(), "localhost");
        roundtrip(&mut s, format!("{i}\n").as_bytes());
    }
    let seen = seen.lock().unwrap().clone();
    assert!(!seen[0].resumed);
    // Every later connection resumes, whichever shard takes it.
    assert!(seen[1..].iter().all(|i| i.resumed), "{io}: {seen:?}");
    assert_eq!(server.metrics().total().tls_resumed, 5, "{io}");
    server.shutdown().unwrap();
}

/// What a dialer reports: the session's facts and the echoed line, or the error
/// kind `on_connect` got.
type DialReport = Result<(Option<TlsInfo>, Vec<u8>), std::io::ErrorKind>;

/// Connects out over TLS from `on_start`, sends a line, reports what came back.
struct Dialer {
    target: SocketAddr,
    connector: TlsConnector,
    server_name: &'static str,
    report: mpsc::Sender<DialReport>,
}

impl Handler for Dialer {
    type Msg = ();
    type Timer = ();
    type Conn = Vec<u8>;
    type Listener = ();

    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
        let id = ctx
            .connect_tls(self.target, &self.connector, self.server_name, Vec::new())
            .expect("connect starts");
        // Queued before the handshake: held, then encrypted.
        ctx.send(id, b"ping over tls\n").unwrap();
    }

    fn on_accept(
        &mut self,
        _: &mut Ctx<'_, Self>,
        _: ConnId,
        _: Listener<'_, ()>,
        _: SocketAddr,
    ) -> Vec<u8> {
        Vec::new()
    }

    fn on_connect(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _: &mut Vec<u8>,
        result: std::io::Result<()>,
    ) {
        if let Err(e) = result {
            let _ = self.report.send(Err(e.kind()));
            return;
        }
        assert!(ctx.tls(conn).is_some());
    }

    fn on_data(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        got: &mut Vec<u8>,
        data: &[u8],
    ) -> usize {
        got.extend_from_slice(data);
        if got.ends_with(b"\n") {
            let _ = self.report.send(Ok((ctx.tls(conn).cloned(), got.clone())));
            ctx.close(conn);
        }
        data.len()
    }
}

fn connect_tls_verifies_and_reports(io: Io) {
    let ca = TestCa::new("out");
    let cert = ca.server("backend", &["backend.test"]);
    let acceptor = TlsAcceptor::new(TlsAcceptorOptions::new(cert.clone())).unwrap();
    let (backend, target, _) = start_echo(tls_builder(io, 1, acceptor));
    common::init_tracing();
    let run = |connector: TlsConnector, server_name: &'static str| {
        let (tx, rx) = mpsc::channel();
        let d = Mutex::new(Some((connector, tx)));
        let server = Server::builder()
            .io(io)
            .shards(1)
            .pin(false)
            .build(move |_| {
                let (connector, report) = d.lock().unwrap().take().unwrap();
                Dialer {
                    target,
                    connector,
                    server_name,
                    report,
                }
            })
            .unwrap()
            .start()
            .unwrap();
        let got = rx.recv_timeout(Duration::from_secs(20)).expect("a report");
        server.shutdown().unwrap();
        got
    };
    let trusting = TlsConnector::with_ca_file(&ca.ca_pem).unwrap();
    let (info, echoed) = run(trusting.clone(), "backend.test").expect("handshake succeeds");
    assert_eq!(echoed, b"ping over tls\n", "{io}");
    let info = info.unwrap();
    assert_eq!(info.server_name.as_deref(), Some("backend.test"));
    assert_eq!(
        info.peer_cert_sha256_hex().unwrap(),
        certs::fingerprint_hex(&cert.cert)
    );
    // The certificate does not cover another name.
    assert_eq!(
        run(trusting, "other.test").unwrap_err(),
        std::io::ErrorKind::InvalidData,
        "{io}"
    );
    // A CA that did not sign it.
    let stranger = TestCa::new("out-stranger");
    let wrong = TlsConnector::with_ca_file(&stranger.ca_pem).unwrap();
    assert_eq!(
        run(wrong, "backend.test").unwrap_err(),
        std::io::ErrorKind::InvalidData,
        "{io}"
    );
    backend.shutdown().unwrap();
}

#[test]
fn bad_configurations_are_refused_with_the_reason() {
    let ca = TestCa::new("config");
    let a = ca.server("a", &["a.test"]);
    let b = ca.server("b", &["b.test"]);
    // Key of another certificate.
    let mixed = CertFiles::new(&a.cert, &b.key);
    let e = TlsAcceptor::new(TlsAcceptorOptions::new(mixed)).unwrap_err();
    assert!(e.to_string().contains("a.pem"), "{e}");
    // Missing file.
    let e = TlsAcceptor::from_files(ca.dir.path().join("nope.pem"), &a.key).unwrap_err();
    assert!(e.to_string().contains("nope.pem"), "{e}");
    // A name the certificate does not cover.
    let mut opts = TlsAcceptorOptions::new(a.clone());
    opts.sni = vec![(vec!["c.test".into()], b.clone())];
    let e = TlsAcceptor::new(opts).unwrap_err();
    assert!(e.to_string().contains("c.test"), "{e}");
    // A key file with no key in it.
    let e = TlsAcceptor::from_files(&a.cert, &a.cert).unwrap_err();
    assert!(e.to_string().contains("private key"), "{e}");
}

shardline::per_backend! {
    thousand_tls_echo => thousand_tls_connections_echo_every_byte;
    sni => sni_picks_the_certificate;
    reload => reload_swaps_the_certificate_under_a_live_connection;
    hostile => stalled_and_hostile_handshakes_are_closed;
    handshake_cap => handshake_cap_queues_newcomers_and_serves_established;
    close_notify => close_sends_close_notify;
    client_certs => client_certificates_are_verified_and_reported;
    resumption => tickets_resume_on_any_shard;
    connect_tls => connect_tls_verifies_and_reports;
}
