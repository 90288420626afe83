//! `Handler::on_preamble`, on both backends: a PROXY header (v1, v2, split
//! byte by byte, with payload behind it) read before `on_accept`, whose source
//! becomes the peer; a header in front of a TLS ClientHello; bad, oversize,
//! late and cut-short headers closed unannounced; refused sources; a listener
//! without preamble unchanged.

#[path = "common/certs.rs"]
mod certs;
mod common;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use certs::TestCa;
use shardline::{
    proxy_protocol, tls::TlsAcceptorOptions, ConnId, Ctx, Handler, Io, Listener, Preamble,
    RunningServer, Server, ServerBuilder, TlsAcceptor,
};

/// Listener value: what `on_preamble` answers.
#[derive(Debug, Clone, Copy)]
enum Want {
    Plain,
    Proxy,
    Refuse,
}

/// Says `peer=<peer> local=<local>\n` on accept, then echoes.
#[derive(Clone)]
struct Greeter {
    accepted: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Handler for Greeter {
    type Msg = ();
    type Timer = ();
    type Conn = ();
    type Listener = Want;

    fn on_preamble(&mut self, listener: Listener<'_, Want>, _peer: SocketAddr) -> Preamble {
        match listener.value {
            Want::Plain => Preamble::None,
            Want::Proxy => Preamble::ProxyProtocol {
                timeout: Duration::from_millis(400),
            },
            Want::Refuse => Preamble::Refuse,
        }
    }

    fn on_accept(
        &mut self,
        ctx: &mut Ctx<'_, Self>,
        conn: ConnId,
        _: Listener<'_, Want>,
        peer: SocketAddr,
    ) {
        self.accepted.lock().unwrap().push(peer);
        assert_eq!(ctx.peer_addr(conn), Some(peer));
        let local = ctx.local_addr(conn).unwrap();
        let _ = ctx.send(conn, format!("peer={peer} local={local}\n").as_bytes());
    }

    fn on_data(&mut self, ctx: &mut Ctx<'_, Self>, conn: ConnId, _: &mut (), data: &[u8]) -> usize {
        let _ = ctx.send(conn, data);
        data.len()
    }
}

fn start(builder: ServerBuilder) -> (RunningServer, Vec<SocketAddr>, Arc<Mutex<Vec<SocketAddr>>>) {
    common::init_tracing();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let h = Greeter {
        accepted: accepted.clone(),
    };
    let server = builder
        .build(move |_| h.clone())
        .expect("valid config")
        .start()
        .expect("server starts");
    let addrs = server.local_addrs().to_vec();
    (server, addrs, accepted)
}

fn builder(io: Io) -> ServerBuilder {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    Server::builder()
        .io(io)
        .shards(2)
        .pin(false)
        .listen_with(any, Want::Plain)
        .listen_with(any, Want::Proxy)
        .listen_with(any, Want::Refuse)
        .shutdown_timeout(Duration::from_secs(10))
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn line(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap_or(0) == 1 && b[0] != b'\n' {
        out.push(b[0]);
    }
    String::from_utf8(out).unwrap()
}

/// Reads until EOF (or a reset): what the server sent.
fn rest(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn headers_give_the_real_peer(io: Io) {
    let (server, addrs, accepted) = start(builder(io));
    let (plain, proxy, refuse) = (addrs[0], addrs[1], addrs[2]);
    let src: SocketAddr = "203.0.113.7:40000".parse().unwrap();
    let dst: SocketAddr = "198.51.100.1:443".parse().unwrap();

    // v2 and its payload in one write.
    let mut s = connect(proxy);
    let mut h = Vec::new();
    proxy_protocol::encode_v2(src, dst, &mut h);
    h.extend_from_slice(b"hello\n");
    s.write_all(&h).unwrap();
    assert_eq!(line(&mut s), format!("peer={src} local={dst}"));
    assert_eq!(line(&mut s), "hello");

    // v1 (IPv6), a byte at a time.
    let src6: SocketAddr = "[2001:db8::9]:5555".parse().unwrap();
    let dst6: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
    let mut h = Vec::new();
    proxy_protocol::encode_v1(src6, dst6, &mut h);
    let mut s = connect(proxy);
    s.set_nodelay(true).unwrap();
    for b in &h {
        s.write_all(&[*b]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(line(&mut s), format!("peer={src6} local={dst6}"));
    s.write_all(b"x\n").unwrap();
    assert_eq!(line(&mut s), "x");

    // LOCAL: the socket's own addresses.
    let mut s = connect(proxy);
    let mut h = Vec::new();
    proxy_protocol::encode_v2_local(&mut h);
    s.write_all(&h).unwrap();
    let me = s.local_addr().unwrap();
    assert_eq!(line(&mut s), format!("peer={me} local={proxy}"));

    // A listener without preamble takes the header as data.
    let mut s = connect(plain);
    let me = s.local_addr().unwrap();
    assert_eq!(line(&mut s), format!("peer={me} local={plain}"));
    s.write_all(b"PROXY UNKNOWN\r\n").unwrap();
    assert_eq!(line(&mut s), "PROXY UNKNOWN\r");

    let before = accepted.lock().unwrap().len();
    // Not a header, a bad one, an oversize one, one cut short by EOF, one
    // too slow: closed, never announced.
    for bad in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",
        &[b'P', b'R', b'O', b'X', b'Y', b' '].repeat(30),
    ] {
        let mut s = connect(proxy);
        s.write_all(bad).unwrap();
        assert_eq!(rest(&mut s), b"", "{:?}", String::from_utf8_lossy(bad));
    }
    let mut s = connect(proxy);
    s.write_all(b"PROXY TCP4 1.2.3.4").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(rest(&mut s), b"");
    let mut s = connect(proxy);
    s.write_all(b"PROXY TCP4 1.2.3.4").unwrap();
    let t = std::time::Instant::now();
    assert_eq!(rest(&mut s), b"");
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "closed at the deadline, not before"
    );
    let mut s = connect(refuse);
    assert_eq!(rest(&mut s), b"");
    assert_eq!(accepted.lock().unwrap().len(), before, "none announced");

    let m = server.metrics().total();
    assert_eq!(m.proxy_headers, 3);
    assert_eq!(m.proxy_headers_failed, 5);
    assert_eq!(m.preamble_refused, 1);
    common::shutdown_within(server, io);
}

fn header_before_the_tls_handshake(io: Io) {
    let ca = TestCa::new("preamble");
    let cert = ca.server("localhost", &["localhost"]);
    let acceptor = TlsAcceptor::new(TlsAcceptorOptions::new(cert)).unwrap();
    let b = Server::builder()
        .io(io)
        .shards(1)
        .pin(false)
        .listen_tls_with("127.0.0.1:0".parse().unwrap(), acceptor, Want::Proxy)
        .shutdown_timeout(Duration::from_secs(10));
    let (server, addrs, _) = start(b);
    let src: SocketAddr = "192.0.2.44:1234".parse().unwrap();
    let mut sock = connect(addrs[0]);
    let mut h = Vec::new();
    proxy_protocol::encode_v1(src, addrs[0], &mut h);
    sock.write_all(&h).unwrap();
    let conn =
        rustls::ClientConnection::new(ca.client_config(), "localhost".try_into().unwrap()).unwrap();
    let mut s = rustls::StreamOwned::new(conn, sock);
    let mut l = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        l.push(b[0]);
    }
    assert_eq!(
        String::from_utf8(l).unwrap(),
        format!("peer={src} local={}", addrs[0])
    );
    s.write_all(b"tls\n").unwrap();
    let mut back = [0u8; 4];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"tls\n");

    // The header and the ClientHello in one write.
    let mut sock = connect(addrs[0]);
    let mut conn =
        rustls::ClientConnection::new(ca.client_config(), "localhost".try_into().unwrap()).unwrap();
    let mut first = Vec::new();
    proxy_protocol::encode_v2(src, addrs[0], &mut first);
    conn.write_tls(&mut first).unwrap();
    sock.write_all(&first).unwrap();
    let mut s = rustls::StreamOwned::new(conn, sock);
    let mut l = Vec::new();
    while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
        l.push(b[0]);
    }
    assert!(String::from_utf8(l)
        .unwrap()
        .starts_with(&format!("peer={src} ")));
    common::shutdown_within(server, io);
}

shardline::per_backend! {
    headers_give_the_real_peer => headers_give_the_real_peer;
    header_before_the_tls_handshake => header_before_the_tls_handshake;
}
