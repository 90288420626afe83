//! TLS passthrough (`tls_passthrough = true`): TCP clients routed by the server
//! name of their ClientHello, TLS never terminated. Real TLS on both ends: rustls
//! servers on std threads, each with its own certificate from one test CA, and
//! rustls clients that verify them; which backend a client reached is told by
//! the certificate it got and the name the backend echoes before the payload.
//! Both I/O backends, 1 and 4 shards.

mod common;

use std::{
    io::{self, ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use common::{
    connect_with_timeouts, sample_sum, wait_until, TcpBackend, TestProxy, SHARD_COUNTS, WAIT,
};
use rand::{rngs::StdRng, RngCore, SeedableRng};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName},
    ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection, StreamOwned,
};
use shardline::Io;

/// rustls's *ring* provider (deprecated for its lack of post-quantum key
/// exchange, which these tests do not need).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A test CA, and what clients trust: that CA only.
struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    roots: Arc<RootCertStore>,
}

impl Pki {
    fn new() -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "shardline-proxy test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).expect("CA is a trust anchor");
        Pki {
            ca,
            roots: Arc::new(roots),
        }
    }

    /// A server certificate for `names` and its key.
    fn leaf(&self, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().expect("key");
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("leaf params");
        let cert = params.signed_by(&key, &self.ca).expect("leaf certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), key)
    }

    fn client_config(&self, sni: bool) -> Arc<ClientConfig> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(self.roots.clone())
            .with_no_client_auth();
        config.enable_sni = sni;
        Arc::new(config)
    }

    /// A rustls client connection to `name` (SNI sent if `sni`) that has not
    /// sent anything yet.
    fn client(&self, name: &str, sni: bool) -> ClientConnection {
        let server = ServerName::try_from(name.to_string()).expect("server name");
        ClientConnection::new(self.client_config(sni), server).expect("client")
    }
}

/// A TLS echo server: for each connection, a TLS handshake with its
/// certificate, then reads an 8-byte length and that many bytes, and answers
/// its name (one length byte, then the name) and the bytes.
struct TlsBackend {
    name: &'static str,
    cert: CertificateDer<'static>,
    tcp: TcpBackend,
}

impl TlsBackend {
    fn start(pki: &Pki, name: &'static str, sans: &[&str]) -> TlsBackend {
        let (cert, key) = pki.leaf(sans);
        let config = Arc::new(
            ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(vec![cert.clone()], key)
                .expect("server certificate"),
        );
        let tcp = TcpBackend::start(move |stream| {
            let Ok(conn) = ServerConnection::new(config.clone()) else {
                return;
            };
            let mut tls = StreamOwned::new(conn, stream);
            let _ = echo(&mut tls, name);
        });
        TlsBackend { name, cert, tcp }
    }

    fn accepted(&self) -> usize {
        self.tcp.accepted()
    }
}

fn echo(tls: &mut impl ReadWrite, name: &str) -> io::Result<()> {
    let mut len = [0u8; 8];
    tls.read_exact(&mut len)?;
    let len = usize::try_from(u64::from_be_bytes(len)).map_err(io::Error::other)?;
    let mut payload = vec![0u8; len];
    tls.read_exact(&mut payload)?;
    let mut answer = vec![u8::try_from(name.len()).map_err(io::Error::other)?];
    answer.extend_from_slice(name.as_bytes());
    answer.extend_from_slice(&payload);
    tls.write_all(&answer)?;
    tls.flush()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// What a client got back through the proxy.
#[derive(Debug)]
struct Reached {
    /// The backend's certificate.
    cert: CertificateDer<'static>,
    /// The name it answered.
    backend: String,
}

/// Sends `payload` over `tls` (handshake on the way), checks it comes back
/// byte for byte, and says who answered.
fn round_trip(
    tls: &mut StreamOwned<ClientConnection, TcpStream>,
    payload: &[u8],
) -> io::Result<Reached> {
    tls.write_all(&(payload.len() as u64).to_be_bytes())?;
    tls.write_all(payload)?;
    tls.flush()?;
    let mut n = [0u8; 1];
    tls.read_exact(&mut n)?;
    let mut name = vec![0u8; usize::from(n[0])];
    tls.read_exact(&mut name)?;
    let mut back = vec![0u8; payload.len()];
    tls.read_exact(&mut back)?;
    assert!(back == payload, "payload echoed byte for byte");
    let cert = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("a server certificate")
        .clone()
        .into_owned();
    Ok(Reached {
        cert,
        backend: String::from_utf8_lossy(&name).into_owned(),
    })
}

/// A whole session through the proxy at `addr` as `name`.
fn exchange(
    pki: &Pki,
    addr: SocketAddr,
    name: &str,
    sni: bool,
    payload: &[u8],
) -> io::Result<Reached> {
    let mut tls = StreamOwned::new(pki.client(name, sni), connect_with_timeouts(addr));
    round_trip(&mut tls, payload)
}

fn random(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

/// A few hundred KiB: relayed in full reads, so splice (on by default) kicks in.
const PAYLOAD: usize = 300 << 10;

fn assert_reached(r: io::Result<Reached>, want: &TlsBackend, what: &str) {
    let r = r.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(r.backend, want.name, "{what}: answered by");
    assert!(r.cert == want.cert, "{what}: certificate of {}", want.name);
}

/// The proxy closed `c`: EOF or a reset, no byte, never a read timeout.
fn assert_closed(mut c: &TcpStream, what: &str) {
    let mut buf = [0u8; 64];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => panic!("{what}: {n} bytes instead of a close"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
            // A signal the test process got (std's read does not retry).
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("{what}: not closed: {e}"),
        }
    }
}

/// The handshake (or the session) failed because the proxy closed: not a
/// timeout.
fn assert_refused(r: io::Result<Reached>, what: &str) {
    match r {
        Ok(r) => panic!("{what}: reached {} instead of being closed", r.backend),
        Err(e) => assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{what}: closed, not timed out: {e}"
        ),
    }
}

fn tls_hellos(proxy: &TestProxy, outcome: &str) -> f64 {
    let label = format!("outcome=\"{outcome}\"");
    sample_sum(
        &proxy.scrape(),
        "shardline_proxy_tls_hellos_total",
        &[label.as_str()],
    )
}

/// Listener 0: SNI routes to pools a and b, default pool d. Listener 1: the
/// same routes, no default pool. `[timeouts] tls_hello_ms` = `hello_ms`.
fn config(a: SocketAddr, b: SocketAddr, d: SocketAddr, hello_ms: u64, routes: &str) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"tcp\"\n\
         tls_passthrough = true\npool = \"d\"\nsni = {routes}\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"tcp\"\n\
         tls_passthrough = true\nsni = {routes}\n\
         [pool.a]\nbackends = [{{ address = \"{a}\" }}]\n\
         [pool.b]\nbackends = [{{ address = \"{b}\" }}]\n\
         [pool.d]\nbackends = [{{ address = \"{d}\" }}]\n\
         [timeouts]\ntls_hello_ms = {hello_ms}\n"
    )
}

const ROUTES: &str = "{ \"a.test\" = \"a\", \"b.test\" = \"b\", \"*.w.test\" = \"b\" }";

/// Three TLS backends: A (a.test), B (b.test, *.w.test), D (names no route
/// matches). B and D also name what a reload moves to them (a.test, b.test);
/// each certificate is its own, so it still tells who answered.
fn backends(pki: &Pki) -> (TlsBackend, TlsBackend, TlsBackend) {
    (
        TlsBackend::start(pki, "A", &["a.test"]),
        TlsBackend::start(pki, "B", &["b.test", "*.w.test", "a.test"]),
        TlsBackend::start(pki, "D", &["c.test", "w.test", "deep.x.w.test", "b.test"]),
    )
}

/// Exact names, a one-label wildcard, and everything else to the default pool
/// (no SNI included); each session relays a few hundred KiB both ways byte for
/// byte, the certificate is the routed backend's.
fn routes_by_sni_to_the_backend_whose_certificate_the_client_gets(io: Io) {
    let pki = Pki::new();
    for shards in SHARD_COUNTS {
        let (a, b, d) = backends(&pki);
        let proxy = TestProxy::start(
            io,
            shards,
            &config(a.tcp.addr, b.tcp.addr, d.tcp.addr, 5000, ROUTES),
        );
        let label = proxy.label.clone();
        let cases: [(&str, bool, &TlsBackend); 7] = [
            ("a.test", true, &a),
            ("b.test", true, &b),
            ("x.w.test", true, &b),
            // A wildcard matches exactly one label: not the bare suffix, not two.
            ("w.test", true, &d),
            ("deep.x.w.test", true, &d),
            // No route: the default pool; no SNI at all: the default pool.
            ("c.test", true, &d),
            ("c.test", false, &d),
        ];
        for (i, (name, sni, want)) in cases.iter().enumerate() {
            let payload = random(i as u64, PAYLOAD + i * 1000);
            let what = format!("{label}: {name} (sni {sni})");
            assert_reached(
                exchange(&pki, proxy.addr, name, *sni, &payload),
                want,
                &what,
            );
        }
        assert_eq!(
            (a.accepted(), b.accepted(), d.accepted()),
            (1, 2, 4),
            "{label}"
        );
        assert_eq!(tls_hellos(&proxy, "routed"), 7.0, "{label}");
        assert_eq!(proxy.metrics().total().closed_send_queue_full, 0, "{label}");
    }
}

/// Without a default pool, a hello with no matching route (or no SNI) is
/// closed; the routed ones still work on the same listener.
fn unrouted_hellos_are_closed_without_a_default_pool(io: Io) {
    let pki = Pki::new();
    for shards in SHARD_COUNTS {
        let (a, b, d) = backends(&pki);
        let proxy = TestProxy::start(
            io,
            shards,
            &config(a.tcp.addr, b.tcp.addr, d.tcp.addr, 5000, ROUTES),
        );
        let label = proxy.label.clone();
        let no_default = proxy.addrs[1];
        let payload = random(9, 4096);
        assert_refused(
            exchange(&pki, no_default, "c.test", true, &payload),
            &format!("{label}: unknown name"),
        );
        assert_refused(
            exchange(&pki, no_default, "a.test", false, &payload),
            &format!("{label}: no SNI"),
        );
        assert_reached(
            exchange(&pki, no_default, "a.test", true, &payload),
            &a,
            &format!("{label}: a.test"),
        );
        assert_reached(
            exchange(&pki, no_default, "y.w.test", true, &payload),
            &b,
            &format!("{label}: y.w.test"),
        );
        assert_eq!(
            (a.accepted(), b.accepted(), d.accepted()),
            (1, 1, 0),
            "{label}"
        );
        assert_eq!(tls_hellos(&proxy, "no_route"), 2.0, "{label}");
        assert_eq!(tls_hellos(&proxy, "routed"), 2.0, "{label}");
    }
}

/// Plain HTTP, random bytes, a TLS record that is not a valid ClientHello and
/// one announcing a hello over the size cap are each closed (nothing sent back, no backend connected) while a TLS
/// session opened before them goes on undisturbed.
fn non_tls_and_malformed_clients_are_closed_without_disturbing_a_session(io: Io) {
    let pki = Pki::new();
    for shards in SHARD_COUNTS {
        let (a, b, d) = backends(&pki);
        let proxy = TestProxy::start(
            io,
            shards,
            &config(a.tcp.addr, b.tcp.addr, d.tcp.addr, 5000, ROUTES),
        );
        let label = proxy.label.clone();
        // The good session: handshake done and half the payload sent first.
        let payload = random(3, PAYLOAD);
        let mut good = StreamOwned::new(pki.client("a.test", true), proxy.connect());
        good.write_all(&(payload.len() as u64).to_be_bytes())
            .expect("length");
        let (first, second) = payload.split_at(PAYLOAD / 2);
        good.write_all(first).expect("first half");
        good.flush().expect("flush");
        assert!(!good.conn.is_handshaking(), "{label}: handshake done");

        let mut garbage = random(4, 4096);
        garbage[0] = 0x42;
        let mut bad_record = b"\x16\x03\x01\x00\x40\x01\x00\x00\x3c\x03\x03".to_vec();
        bad_record.extend_from_slice(&[0xff; 64]);
        let bad: [(&str, Vec<u8>); 4] = [
            (
                "plain HTTP",
                b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n".to_vec(),
            ),
            ("random bytes", garbage),
            ("malformed hello", bad_record),
            // A hello announcing 16 KiB + 1 with its header: over the cap,
            // refused from its first 9 bytes.
            (
                "oversized hello",
                b"\x16\x03\x01\x40\x00\x01\x00\x3f\xfd".to_vec(),
            ),
        ];
        for (what, bytes) in &bad {
            let mut c = proxy.connect();
            c.write_all(bytes).expect("write");
            assert_closed(&c, &format!("{label}: {what}"));
        }

        good.write_all(second).expect("second half");
        good.flush().expect("flush");
        let mut n = [0u8; 1];
        good.read_exact(&mut n).expect("answer");
        let mut name = vec![0u8; usize::from(n[0])];
        good.read_exact(&mut name).expect("name");
        assert_eq!(name, b"A", "{label}");
        let mut back = vec![0u8; PAYLOAD];
        good.read_exact(&mut back).expect("echo");
        assert!(back == payload, "{label}: the good session's bytes");

        assert_eq!(
            (a.accepted(), b.accepted(), d.accepted()),
            (1, 0, 0),
            "{label}"
        );
        assert_eq!(tls_hellos(&proxy, "not_tls"), 2.0, "{label}");
        assert_eq!(tls_hellos(&proxy, "malformed"), 2.0, "{label}");
        assert_eq!(tls_hellos(&proxy, "routed"), 1.0, "{label}");
    }
}

/// A ClientHello that stops halfway, and a client that sends nothing, are
/// closed at `tls_hello_ms`, not before; one that stops halfway and sends its
/// FIN is closed at once. No backend is connected for any of them.
fn stalled_hellos_are_closed_at_the_deadline(io: Io) {
    const HELLO_MS: u64 = 1000;
    let pki = Pki::new();
    for shards in SHARD_COUNTS {
        let (a, b, d) = backends(&pki);
        let proxy = TestProxy::start(
            io,
            shards,
            &config(a.tcp.addr, b.tcp.addr, d.tcp.addr, HELLO_MS, ROUTES),
        );
        let label = proxy.label.clone();
        let mut hello = Vec::new();
        let mut conn = pki.client("a.test", true);
        while conn.wants_write() {
            conn.write_tls(&mut hello).expect("hello");
        }
        let half = &hello[..hello.len() / 2];

        let started = Instant::now();
        let mut stalled = proxy.connect();
        stalled.write_all(half).expect("half a hello");
        let silent = proxy.connect();
        assert_closed(&stalled, &format!("{label}: stalled hello"));
        assert_closed(&silent, &format!("{label}: silent client"));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(HELLO_MS - 50) && took < Duration::from_secs(4),
            "{label}: closed after {took:?}, deadline {HELLO_MS} ms"
        );

        let mut cut = proxy.connect();
        cut.write_all(half).expect("half a hello");
        cut.shutdown(Shutdown::Write).expect("FIN");
        let started = Instant::now();
        assert_closed(&cut, &format!("{label}: hello cut by FIN"));
        assert!(
            started.elapsed() < Duration::from_millis(HELLO_MS),
            "{label}: a FIN mid-hello closes at once ({:?})",
            started.elapsed()
        );

        assert_eq!(
            (a.accepted(), b.accepted(), d.accepted()),
            (0, 0, 0),
            "{label}"
        );
        assert_eq!(tls_hellos(&proxy, "timeout"), 2.0, "{label}");
        assert!(
            wait_until(WAIT, || tls_hellos(&proxy, "incomplete") == 1.0),
            "{label}: the cut hello counted"
        );
        // The listener still serves.
        assert_reached(
            exchange(&pki, proxy.addr, "b.test", true, &random(5, 1000)),
            &b,
            &label,
        );
    }
}

/// A ClientHello that arrives in two TCP writes, or split over two TLS records
/// (sent in two writes cutting the second record's header), still routes by
/// its name, and the backend gets it as sent.
fn a_hello_split_across_writes_and_records_still_routes(io: Io) {
    let pki = Pki::new();
    for shards in SHARD_COUNTS {
        let (a, b, d) = backends(&pki);
        let proxy = TestProxy::start(
            io,
            shards,
            &config(a.tcp.addr, b.tcp.addr, d.tcp.addr, 5000, ROUTES),
        );
        let label = proxy.label.clone();
        for (i, records) in [false, true].into_iter().enumerate() {
            let mut conn = pki.client("z.w.test", true);
            let mut hello = Vec::new();
            while conn.wants_write() {
                conn.write_tls(&mut hello).expect("hello");
            }
            assert_eq!(hello[0], 22, "one handshake record");
            let msg = hello[5..].to_vec();
            let (wire, cut) = if records {
                // Two records, the message cut inside its extensions; the
                // writes cut the second record's header.
                let split = msg.len() - 40;
                let mut wire = vec![22, 3, 1];
                wire.extend_from_slice(&(split as u16).to_be_bytes());
                wire.extend_from_slice(&msg[..split]);
                let second_header = wire.len();
                wire.extend_from_slice(&[22, 3, 3]);
                wire.extend_from_slice(&((msg.len() - split) as u16).to_be_bytes());
                wire.extend_from_slice(&msg[split..]);
                (wire, second_header + 2)
            } else {
                (hello.clone(), 9)
            };
            let mut tcp = proxy.connect();
            tcp.write_all(&wire[..cut]).expect("first write");
            thread::sleep(Duration::from_millis(50));
            tcp.write_all(&wire[cut..]).expect("second write");
            let mut tls = StreamOwned::new(conn, tcp);
            let payload = random(20 + i as u64, 70_000);
            assert_reached(
                round_trip(&mut tls, &payload),
                &b,
                &format!("{label}: split (records: {records})"),
            );
        }
        assert_eq!(
            (a.accepted(), b.accepted(), d.accepted()),
            (0, 2, 0),
            "{label}"
        );
    }
}

/// A client that sends its hello, some bytes and its FIN at once (before the
/// upstream is up): the backend gets every byte, then the FIN, and its answer
/// still comes back. The backend here is plain TCP: it reads to EOF and
/// echoes what it got.
fn a_fin_right_behind_the_hello_follows_it_to_the_backend(io: Io) {
    let pki = Pki::new();
    for shards in SHARD_COUNTS {
        let raw = TcpBackend::start(|mut s| {
            let mut all = Vec::new();
            if s.read_to_end(&mut all).is_ok() {
                let _ = s.write_all(&all);
            }
        });
        let refused = common::refused_addr();
        let proxy = TestProxy::start(
            io,
            shards,
            &config(raw.addr, refused, refused, 5000, "{ \"raw.test\" = \"a\" }"),
        );
        let label = proxy.label.clone();
        let mut conn = pki.client("raw.test", true);
        let mut sent = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut sent).expect("hello");
        }
        sent.extend_from_slice(b"\x17\x03\x03\x00\x05after");
        let mut c = proxy.connect();
        c.write_all(&sent).expect("write");
        c.shutdown(Shutdown::Write).expect("FIN");
        let mut back = Vec::new();
        c.read_to_end(&mut back)
            .unwrap_or_else(|e| panic!("{label}: {e}"));
        assert!(back == sent, "{label}: the backend got the bytes as sent");
        assert_eq!(raw.accepted(), 1, "{label}");
    }
}

/// A reload moves a name to another pool: new sessions follow the new table
/// while one established before keeps relaying to its backend.
fn reload_carries_the_sni_table(io: Io) {
    let pki = Pki::new();
    for shards in SHARD_COUNTS {
        let (a, b, d) = backends(&pki);
        let proxy = TestProxy::start(
            io,
            shards,
            &config(a.tcp.addr, b.tcp.addr, d.tcp.addr, 5000, ROUTES),
        );
        let label = proxy.label.clone();
        let payload = random(30, 50_000);
        // Established before the reload: handshake and length sent.
        let mut kept = StreamOwned::new(pki.client("a.test", true), proxy.connect());
        kept.write_all(&(payload.len() as u64).to_be_bytes())
            .expect("length");
        kept.flush().expect("flush");
        assert!(
            wait_until(WAIT, || a.accepted() == 1),
            "{label}: kept session up"
        );

        let moved = "{ \"a.test\" = \"b\", \"*.w.test\" = \"a\" }";
        proxy
            .reload(&config(a.tcp.addr, b.tcp.addr, d.tcp.addr, 5000, moved))
            .expect("valid reload");
        assert_reached(
            exchange(&pki, proxy.addr, "a.test", true, &payload),
            &b,
            &format!("{label}: a.test after the reload"),
        );
        // The wildcard moved to A; A's certificate does not name v.w.test,
        // so the client refuses it: the route, not the certificate, decided.
        let r = exchange(&pki, proxy.addr, "v.w.test", true, &payload);
        assert!(r.is_err(), "{label}: v.w.test reached A ({r:?})");
        assert_eq!(a.accepted(), 2, "{label}: v.w.test went to A");
        // b.test is gone from the table: the default pool.
        assert_reached(
            exchange(&pki, proxy.addr, "b.test", true, &payload),
            &d,
            &format!("{label}: b.test after the reload"),
        );

        kept.write_all(&payload).expect("kept session goes on");
        kept.flush().expect("flush");
        let mut head = [0u8; 2];
        kept.read_exact(&mut head).expect("answer");
        assert_eq!(&head, b"\x01A", "{label}: kept session still on A");
        let mut back = vec![0u8; payload.len()];
        kept.read_exact(&mut back).expect("echo");
        assert!(back == payload, "{label}: kept session's bytes");
    }
}

shardline::per_backend! {
    routes_by_sni_to_the_backend_whose_certificate_the_client_gets => routes_by_sni_to_the_backend_whose_certificate_the_client_gets;
    unrouted_hellos_are_closed_without_a_default_pool => unrouted_hellos_are_closed_without_a_default_pool;
    non_tls_and_malformed_clients_are_closed_without_disturbing_a_session => non_tls_and_malformed_clients_are_closed_without_disturbing_a_session;
    stalled_hellos_are_closed_at_the_deadline => stalled_hellos_are_closed_at_the_deadline;
    a_hello_split_across_writes_and_records_still_routes => a_hello_split_across_writes_and_records_still_routes;
    a_fin_right_behind_the_hello_follows_it_to_the_backend => a_fin_right_behind_the_hello_follows_it_to_the_backend;
    reload_carries_the_sni_table => reload_carries_the_sni_table;
}
