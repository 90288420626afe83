//! IRC over WebSocket (IRCv3) and the web client's HTTP side, on a WebSocket
//! listener beside the plain one: a browser-like client (tungstenite) talks
//! with a plain TCP client on another shard, both subprotocols; raw frames
//! that break RFC 6455 get their close code and the connection ends; the
//! static files, the HTTP errors and a stalled head; and none of it disturbs
//! a client connected meanwhile. Both backends, 1 and 4 shards.

mod common;

use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use common::{each_server_with, Client, Line, TestServer, WAIT};
use shardline::Io;
use shardline_chat::{
    websocket::frame::{encode_client, opcode},
    Config,
};
use tungstenite::{client::IntoClientRequest, http::HeaderValue, Message, WebSocket};

const KEY: [u8; 4] = [0xa1, 0xb2, 0xc3, 0xd4];

fn ws_config(c: &mut Config) {
    c.websocket.listen = vec!["127.0.0.1:0".parse().expect("literal")];
}

/// The WebSocket listener's address (added after the test's plain one).
fn ws_addr(srv: &TestServer) -> SocketAddr {
    let addrs = srv.local_addrs();
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    addrs[1]
}

/// What a WebSocket client runs over: TCP, or TLS over it.
trait Rw: Read + Write {}
impl<T: Read + Write> Rw for T {}

/// A tungstenite client: IRC lines as messages.
struct Ws {
    ws: WebSocket<Box<dyn Rw>>,
    shard: usize,
    binary: bool,
    label: String,
}

impl Ws {
    /// Connects offering `protocols`; returns the client and the protocol the
    /// server chose.
    fn connect(srv: &TestServer, protocols: &[&str]) -> (Ws, Option<String>) {
        let addr = ws_addr(srv);
        let (stream, shard) = srv.connect_tcp(addr);
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        Ws::handshake(srv, Box::new(stream), addr, shard, protocols)
    }

    /// Over TLS to `addr`, trusting the test CA.
    fn connect_tls(srv: &TestServer, addr: SocketAddr, protocols: &[&str]) -> (Ws, Option<String>) {
        let (stream, shard) = srv.connect_tcp(addr);
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let config = srv.ca.as_ref().expect("a test CA").client_config();
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let conn = rustls::ClientConnection::new(config, name).expect("tls client");
        let tls = rustls::StreamOwned::new(conn, stream);
        Ws::handshake(srv, Box::new(tls), addr, shard, protocols)
    }

    fn handshake(
        srv: &TestServer,
        stream: Box<dyn Rw>,
        addr: SocketAddr,
        shard: usize,
        protocols: &[&str],
    ) -> (Ws, Option<String>) {
        let mut req = format!("ws://{addr}/")
            .into_client_request()
            .expect("request");
        if !protocols.is_empty() {
            req.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(&protocols.join(", ")).expect("header"),
            );
        }
        let (ws, resp) = tungstenite::client::client(req, stream).expect("handshake");
        let chosen = resp
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().expect("ascii").to_string());
        let binary = chosen.as_deref() == Some("binary.ircv3.net");
        let label = format!("{} ws", srv.label());
        (
            Ws {
                ws,
                shard,
                binary,
                label,
            },
            chosen,
        )
    }

    fn send(&mut self, line: &str) {
        let m = match self.binary {
            true => Message::binary(line.as_bytes().to_vec()),
            false => Message::text(line),
        };
        self.ws.send(m).expect("send");
    }

    /// The next IRC line; asserts the message type matches the subprotocol.
    fn next_line(&mut self) -> Line {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    assert!(!self.binary, "{}: text frame in binary mode", self.label);
                    return self.parse(t.as_str());
                }
                Ok(Message::Binary(b)) => {
                    assert!(self.binary, "{}: binary frame in text mode", self.label);
                    return self.parse(std::str::from_utf8(&b).expect("utf-8 test line"));
                }
                Ok(Message::Ping(_) | Message::Pong(_)) => {}
                other => panic!("{}: unexpected {other:?}", self.label),
            }
        }
    }

    fn parse(&self, s: &str) -> Line {
        assert!(
            !s.contains('\r') && !s.contains('\n'),
            "{}: a line end in a message: {s:?}",
            self.label
        );
        Line::parse(s)
    }

    fn until(&mut self, what: &str, mut pred: impl FnMut(&Line) -> bool) -> Vec<Line> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let l = self.next_line();
            let done = pred(&l);
            seen.push(l);
            if done {
                return seen;
            }
        }
        panic!("{}: no {what}: {seen:?}", self.label);
    }

    fn register(&mut self, nick: &str) {
        self.send(&format!("NICK {nick}"));
        self.send(&format!("USER {nick} 0 * :Web {nick}"));
        self.until("end of MOTD", |l| l.is("376") || l.is("422"));
    }

    fn join(&mut self, chan: &str) {
        self.send(&format!("JOIN {chan}"));
        self.until("366", |l| l.is("366"));
    }
}

/// A registered plain client on a shard other than `not` (when there are
/// several), to watch that nothing disturbs it.
fn bystander(srv: &TestServer, not: usize, nick: &str) -> Client {
    srv.register_on(not + 1, nick)
}

fn ws_and_tcp_talk(io: Io) {
    each_server_with(io, ws_config, |srv| {
        for (offer, want) in [
            (vec!["text.ircv3.net"], "text.ircv3.net"),
            (vec!["binary.ircv3.net"], "binary.ircv3.net"),
            (
                vec!["binary.ircv3.net", "text.ircv3.net"],
                "binary.ircv3.net",
            ),
            (
                vec!["x.example", "text.ircv3.net", "binary.ircv3.net"],
                "text.ircv3.net",
            ),
        ] {
            let (mut w, chosen) = Ws::connect(srv, &offer);
            assert_eq!(chosen.as_deref(), Some(want), "{}: {offer:?}", w.label);
            let nick = format!("web{}", if w.binary { "b" } else { "t" });
            w.register(&nick);
            w.join("#web");
            let mut t = srv.register_on(w.shard + 1, "tcpuser");
            t.join("#web");
            w.until("tcpuser's JOIN", |l| {
                l.is("JOIN") && l.nick() == Some("tcpuser")
            });
            w.send("PRIVMSG #web :h\u{e9}llo from the web");
            let (m, _) = t.until("web PRIVMSG", |l| l.is("PRIVMSG"));
            assert_eq!(m.nick(), Some(nick.as_str()));
            assert_eq!(m.last(), "h\u{e9}llo from the web");
            t.send("PRIVMSG #web :and back");
            let seen = w.until("tcp PRIVMSG", |l| l.is("PRIVMSG"));
            let m = seen.last().expect("line");
            assert_eq!((m.nick(), m.last()), (Some("tcpuser"), "and back"));
            // Private messages both ways, and a trailing CR LF a client adds.
            w.send("PRIVMSG tcpuser :direct\r\n");
            let (m, _) = t.until("direct", |l| l.is("PRIVMSG"));
            assert_eq!(m.last(), "direct");
            t.send(&format!("PRIVMSG {nick} :direct back"));
            let seen = w.until("direct back", |l| l.is("PRIVMSG"));
            assert_eq!(seen.last().expect("line").last(), "direct back");
            // The PING barrier works as for any client.
            w.send("PING :token");
            w.until("PONG", |l| l.is("PONG") && l.last() == "token");
            w.send("QUIT :bye");
            let (q, _) = t.until("QUIT", |l| l.is("QUIT"));
            assert_eq!(q.last(), "Quit: bye");
            t.send("QUIT");
            t.until_closed();
        }
    });
}

/// Raw socket helper: an upgraded connection we write frames to by hand.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    label: String,
}

impl Raw {
    fn connect(srv: &TestServer) -> (Raw, usize) {
        let (s, shard) = srv.connect_tcp(ws_addr(srv));
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let raw = Raw {
            s,
            buf: Vec::new(),
            label: srv.label(),
        };
        (raw, shard)
    }

    /// Upgraded with the text subprotocol.
    fn upgraded(srv: &TestServer) -> (Raw, usize) {
        let (mut r, shard) = Raw::connect(srv);
        r.write(
            b"GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Protocol: text.ircv3.net\r\n\r\n",
        );
        let head = r.head();
        assert!(head.starts_with("HTTP/1.1 101 "), "{}: {head}", r.label);
        assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(head.contains("Sec-WebSocket-Protocol: text.ircv3.net\r\n"));
        (r, shard)
    }

    fn write(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).expect("write");
    }

    fn frame(&mut self, fin: bool, op: u8, payload: &[u8]) {
        let mut v = Vec::new();
        encode_client(&mut v, fin, op, KEY, payload);
        self.write(&v);
    }

    /// Reads more; false at EOF. Panics after WAIT.
    fn fill(&mut self, deadline: Instant) -> bool {
        let mut chunk = [0u8; 4096];
        loop {
            assert!(
                Instant::now() < deadline,
                "{}: timed out; have {:?}",
                self.label,
                String::from_utf8_lossy(&self.buf)
            );
            match self.s.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return false,
                Err(e) => panic!("{}: read: {e}", self.label),
            }
        }
    }

    /// An HTTP response head.
    fn head(&mut self) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return String::from_utf8(head).expect("ascii head");
            }
            assert!(
                self.fill(deadline),
                "{}: EOF before a head: {:?}",
                self.label,
                self.buf
            );
        }
    }

    /// The whole response until the server closes: head and body.
    fn response(&mut self) -> (String, Vec<u8>) {
        let head = self.head();
        let deadline = Instant::now() + WAIT;
        while self.fill(deadline) {}
        (head, std::mem::take(&mut self.buf))
    }

    /// The next server frame: opcode and payload (asserting it is unmasked
    /// and final). `None` at EOF.
    fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.buf.len() >= 2 {
                let (b0, b1) = (self.buf[0], self.buf[1]);
                assert_eq!(b0 & 0xf0, 0x80, "{}: fin, no rsv", self.label);
                assert_eq!(b1 & 0x80, 0, "{}: server frames are unmasked", self.label);
                let (len, at) = match b1 & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => {
                        let mut a = [0; 8];
                        a.copy_from_slice(&self.buf[2..10]);
                        (u64::from_be_bytes(a) as usize, 10)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= at + len {
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return Some((b0 & 0x0f, payload));
                }
            }
            if !self.fill(deadline) {
                assert!(self.buf.is_empty(), "{}: EOF inside a frame", self.label);
                return None;
            }
        }
    }

    /// Skips data frames up to a close frame: its code; then the connection
    /// must end.
    fn expect_close(&mut self, code: u16) {
        loop {
            match self.next_frame() {
                Some((opcode::CLOSE, p)) => {
                    assert!(p.len() >= 2, "{}: close without a code", self.label);
                    assert_eq!(
                        u16::from_be_bytes([p[0], p[1]]),
                        code,
                        "{}: {:?}",
                        self.label,
                        String::from_utf8_lossy(&p[2..])
                    );
                    break;
                }
                Some(_) => {}
                None => panic!("{}: EOF without a close frame", self.label),
            }
        }
        assert_eq!(
            self.next_frame(),
            None,
            "{}: nothing after the close frame",
            self.label
        );
    }
}

/// Writes a frame that breaks a rule.
type Violation = Box<dyn Fn(&mut Raw)>;

fn raw_frame_rules(io: Io) {
    each_server_with(io, ws_config, |srv| {
        let label = srv.label();
        let (mut probe, shard) = Raw::upgraded(srv);
        let mut other = bystander(srv, shard, "watcher");
        // Ping -> pong with the payload, also between fragments of a message.
        probe.frame(false, opcode::TEXT, b"NICK fr");
        probe.frame(true, opcode::PING, b"are you there");
        assert_eq!(
            probe.next_frame(),
            Some((opcode::PONG, b"are you there".to_vec())),
            "{label}"
        );
        probe.frame(true, opcode::CONTINUATION, b"ag");
        probe.frame(true, opcode::TEXT, b"USER frag 0 * :x");
        let mut lines = Vec::new();
        while let Some((op, p)) = probe.next_frame() {
            assert_eq!(op, opcode::TEXT, "{label}");
            let l = Line::parse(std::str::from_utf8(&p).expect("utf-8"));
            let end = l.is("376") || l.is("422");
            lines.push(l);
            if end {
                break;
            }
        }
        assert_eq!(lines[0].command, "001", "{label}: {lines:?}");
        assert_eq!(lines[0].params[0], "frag", "{label}: the fragments joined");
        // The close handshake: our close is answered, then the connection ends.
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"done");
        probe.frame(true, opcode::CLOSE, &close);
        probe.expect_close(1000);
        other.sync();

        // Each violation: its close code, then the connection ends.
        let violations: [(&str, Violation, u16); 6] = [
            (
                "unmasked",
                Box::new(|r: &mut Raw| r.write(&[0x81, 0x04, b'P', b'I', b'N', b'G'])),
                1002,
            ),
            (
                "fragmented ping",
                Box::new(|r: &mut Raw| r.frame(false, opcode::PING, b"x")),
                1002,
            ),
            (
                "long ping",
                Box::new(|r: &mut Raw| r.frame(true, opcode::PING, &[b'x'; 126])),
                1002,
            ),
            (
                "reserved opcode",
                Box::new(|r: &mut Raw| {
                    let mut v = Vec::new();
                    encode_client(&mut v, true, 0x3, KEY, b"x");
                    r.write(&v)
                }),
                1002,
            ),
            (
                "bad utf-8",
                Box::new(|r: &mut Raw| r.frame(true, opcode::TEXT, b"PRIVMSG x :\xc3\x28")),
                1007,
            ),
            (
                "two lines",
                Box::new(|r: &mut Raw| r.frame(true, opcode::TEXT, b"PING a\r\nPING b")),
                1007,
            ),
        ];
        for (what, send, code) in &violations {
            let (mut r, _) = Raw::upgraded(srv);
            send(&mut r);
            r.label = format!("{label} {what}");
            r.expect_close(*code);
        }
        // Oversize: one frame announcing more than a line, refused on its
        // header; and fragments adding up to more.
        let (mut r, _) = Raw::upgraded(srv);
        let mut header = vec![0x82, 0xFE];
        header.extend_from_slice(&20_000u16.to_be_bytes());
        header.extend_from_slice(&KEY);
        r.write(&header);
        r.expect_close(1009);
        let (mut r, _) = Raw::upgraded(srv);
        let chunk = vec![b'a'; 4000];
        r.frame(false, opcode::BINARY, &[]);
        for _ in 0..3 {
            r.frame(false, opcode::CONTINUATION, &chunk);
        }
        r.expect_close(1009);
        // A message of exactly the line limit (with its CR LF) is taken: an
        // over-long IRC line gets 417 like over TCP, no close.
        let (mut r, _) = Raw::upgraded(srv);
        let max = shardline_chat::message::MAX_LINE;
        let mut long = b"PRIVMSG x :".to_vec();
        long.resize(max, b'a');
        long.extend_from_slice(b"\r\n");
        r.frame(true, opcode::TEXT, &long);
        r.frame(true, opcode::TEXT, b"PING :alive");
        let (op, p) = r.next_frame().expect("a reply");
        assert_eq!(op, opcode::TEXT, "{label}");
        let text = String::from_utf8(p).expect("utf-8");
        assert!(text.contains(" 417 "), "{label}: 417, got {text}");
        other.sync();
        other.send("QUIT");
        other.until_closed();
    });
}

fn http_side(io: Io) {
    each_server_with(io, ws_config, |srv| {
        let label = srv.label();
        let (probe, shard) = Raw::connect(srv);
        drop(probe);
        let mut other = bystander(srv, shard, "watcher");
        let get = |path: &str| {
            let (mut r, _) = Raw::connect(srv);
            r.write(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:1234\r\n\r\n").as_bytes());
            r.response()
        };
        let index = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/web/index.html"))
            .expect("index.html");
        for (path, file, ctype) in [
            ("/", "index.html", "text/html; charset=utf-8"),
            ("/app.js", "app.js", "text/javascript; charset=utf-8"),
            ("/style.css", "style.css", "text/css; charset=utf-8"),
        ] {
            let (head, body) = get(path);
            let want =
                std::fs::read(format!("{}/web/{file}", env!("CARGO_MANIFEST_DIR"))).expect("file");
            assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{label}: {head}");
            assert!(
                head.contains(&format!("\r\nContent-Type: {ctype}\r\n")),
                "{label}: {head}"
            );
            assert!(
                head.contains(&format!("\r\nContent-Length: {}\r\n", want.len())),
                "{label}: {head}"
            );
            assert!(
                head.contains("\r\nX-Content-Type-Options: nosniff\r\n"),
                "{label}: {head}"
            );
            let csp = head
                .lines()
                .find(|l| l.starts_with("Content-Security-Policy: "))
                .expect("CSP");
            assert!(
                csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
                "{label}: {csp}"
            );
            assert!(
                csp.contains("connect-src 'self' ws://127.0.0.1:1234 wss://127.0.0.1:1234;"),
                "{label}: {csp}"
            );
            assert_eq!(body, want, "{label}: {path}");
        }
        assert!(!index.is_empty());
        let status = |raw: &[u8]| {
            let (mut r, _) = Raw::connect(srv);
            r.write(raw);
            let (head, _) = r.response();
            head.split(' ').nth(1).expect("status").to_string()
        };
        assert_eq!(
            status(b"GET /nope HTTP/1.1\r\nHost: h\r\n\r\n"),
            "404",
            "{label}"
        );
        assert_eq!(
            status(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"),
            "405",
            "{label}"
        );
        assert_eq!(
            status(b"DELETE /app.js HTTP/1.1\r\nHost: h\r\n\r\n"),
            "405",
            "{label}"
        );
        assert_eq!(
            status(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"),
            "400",
            "{label}: junk"
        );
        assert_eq!(
            status(b"GET / HTTP/1.1\nHost: h\n\n"),
            "400",
            "{label}: bare LF"
        );
        assert_eq!(
            status(b"SSH-2.0-OpenSSH_9.6\r\n"),
            "400",
            "{label}: junk line"
        );
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        while big.len() < 9000 {
            big.extend_from_slice(
                b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        assert_eq!(status(&big), "431", "{label}");
        // A refused upload still being sent: the 405 arrives, and the rest
        // of the body is read and dropped (a lingering close), not answered
        // with a reset that could destroy the response on the way.
        let (mut r, _) = Raw::connect(srv);
        let mut writer = r.s.try_clone().expect("clone");
        let uploader = std::thread::spawn(move || {
            let head = b"POST /chat HTTP/1.1\r\nHost: h\r\nContent-Length: 4194304\r\n\r\n";
            writer.write_all(head)?;
            let chunk = vec![b'x'; 65536];
            for _ in 0..64 {
                writer.write_all(&chunk)?;
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok::<(), std::io::Error>(())
        });
        let head = r.head();
        assert!(head.starts_with("HTTP/1.1 405 "), "{label}: {head}");
        assert!(head.contains("\r\nAllow: GET, HEAD\r\n"), "{label}: {head}");
        let sent = uploader.join().expect("uploader");
        assert!(sent.is_ok(), "{label}: upload reset: {sent:?}");
        // Bad handshakes: no key; another version (named 13 back).
        let hs = "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
        let (mut r, _) = Raw::connect(srv);
        r.write(format!("{hs}Sec-WebSocket-Version: 13\r\n\r\n").as_bytes());
        let (head, _) = r.response();
        assert!(head.starts_with("HTTP/1.1 400 "), "{label}: {head}");
        let (mut r, _) = Raw::connect(srv);
        r.write(format!("{hs}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n").as_bytes());
        let (head, _) = r.response();
        assert!(head.starts_with("HTTP/1.1 400 "), "{label}: {head}");
        assert!(
            head.contains("\r\nSec-WebSocket-Version: 13\r\n"),
            "{label}: {head}"
        );
        // The plain listener still speaks IRC, not HTTP.
        let mut plain = srv.connect();
        plain.register("plain");
        other.sync();
        other.send("QUIT");
        other.until_closed();
    });
}

fn stalled_head_times_out(io: Io) {
    let config = |c: &mut Config| {
        ws_config(c);
        c.websocket.request_timeout_secs = 1;
    };
    each_server_with(io, config, |srv| {
        let label = srv.label();
        // Before the connection: its timer starts at the accept.
        let start = Instant::now();
        let (mut r, shard) = Raw::connect(srv);
        let mut other = bystander(srv, shard, "watcher");
        r.write(b"GET / HTTP/1.1\r\nHost: h\r\nX-Slow: ");
        std::thread::sleep(Duration::from_millis(300));
        r.write(b"a");
        let (head, _) = r.response();
        assert!(head.starts_with("HTTP/1.1 408 "), "{label}: {head}");
        assert!(
            start.elapsed() >= Duration::from_millis(950),
            "{label}: not before the timeout"
        );
        // An upgraded client is on the registration timeout from then on, not
        // the request's.
        let (mut w, _) = Ws::connect(srv, &["text.ircv3.net"]);
        std::thread::sleep(Duration::from_millis(1500));
        w.register("slowweb");
        other.sync();
        other.send("QUIT");
        other.until_closed();
    });
}

/// `wss://` and `https://` with the `[tls]` certificate: a
/// secure connection (WHOIS 671) talking with a plain client.
fn secure_websocket(io: Io) {
    for shards in common::SHARD_COUNTS {
        let srv = TestServer::start_tls(io, shards, |c, _| {
            c.websocket.tls_listen = vec!["127.0.0.1:0".parse().expect("literal")];
        });
        let addrs = srv.local_addrs();
        assert_eq!(addrs.len(), 3, "plain, IRC TLS, wss: {addrs:?}");
        let (mut w, chosen) = Ws::connect_tls(&srv, addrs[2], &["binary.ircv3.net"]);
        assert_eq!(chosen.as_deref(), Some("binary.ircv3.net"));
        // No sts for a WebSocket client: it names the IRC TLS port.
        w.send("CAP LS 302");
        let caps = w.until("CAP LS", |l| {
            l.is("CAP") && l.params.get(2).map(String::as_str) != Some("*")
        });
        assert!(
            !caps.iter().any(|l| l.raw.contains("sts")),
            "{}: {caps:?}",
            srv.label()
        );
        w.send("CAP END");
        w.register("secure");
        let mut t = srv.register_on(w.shard + 1, "plainpal");
        // While a plain client is offered it.
        t.send("CAP LS 302");
        let (last, mut caps) = t.until("CAP LS", |l| {
            l.is("CAP") && l.params.get(2).map(String::as_str) != Some("*")
        });
        caps.push(last);
        assert!(
            caps.iter().any(|l| l.raw.contains("sts=port=")),
            "{}: {caps:?}",
            srv.label()
        );
        t.send("WHOIS secure");
        let (_, whois) = t.until("318", |l| l.is("318"));
        assert!(
            whois.iter().any(|l| l.is("671")),
            "{}: {whois:?}",
            srv.label()
        );
        t.send("PRIVMSG secure :over tls");
        let seen = w.until("PRIVMSG", |l| l.is("PRIVMSG"));
        assert_eq!(seen.last().expect("line").last(), "over tls");
        // The web client's page over https too.
        let (stream, _) = srv.connect_tcp(addrs[2]);
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let config = srv.ca.as_ref().expect("a test CA").client_config();
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let conn = rustls::ClientConnection::new(config, name).expect("tls client");
        let mut tls = rustls::StreamOwned::new(conn, stream);
        tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("write");
        let mut page = Vec::new();
        let _ = tls.read_to_end(&mut page);
        let page = String::from_utf8_lossy(&page);
        assert!(
            page.starts_with("HTTP/1.1 200 OK\r\n"),
            "{}: {page}",
            srv.label()
        );
        assert!(page.contains("connect-src 'self' ws://localhost wss://localhost;"));
        srv.stop();
    }
}

/// `allowed_origins`: a browser's handshake from another site gets 403; an
/// allowed one and one without `Origin` get through.
fn origin_allow_list(io: Io) {
    let config = |c: &mut Config| {
        ws_config(c);
        c.websocket.allowed_origins = vec!["https://chat.example".into()];
    };
    each_server_with(io, config, |srv| {
        let label = srv.label();
        let hs = |origin: &str| {
            let (mut r, _) = Raw::connect(srv);
            r.write(
                format!(
                    "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
                )
                .as_bytes(),
            );
            r.head()
        };
        assert!(
            hs("Origin: https://evil.example\r\n").starts_with("HTTP/1.1 403 "),
            "{label}"
        );
        assert!(
            hs("Origin: https://CHAT.example\r\n").starts_with("HTTP/1.1 101 "),
            "{label}"
        );
        assert!(hs("").starts_with("HTTP/1.1 101 "), "{label}");
    });
}

/// A shutdown tells WebSocket clients in an IRC ERROR, then closes with 1001.
fn shutdown_closes_with_going_away(io: Io) {
    for shards in common::SHARD_COUNTS {
        let mut config = common::test_config();
        ws_config(&mut config);
        let srv = TestServer::start_with(io, shards, config);
        let (mut r, _) = Raw::upgraded(&srv);
        r.frame(true, opcode::TEXT, b"NICK bye");
        r.frame(true, opcode::TEXT, b"USER bye 0 * :x");
        loop {
            let (_, p) = r.next_frame().expect("welcome");
            let l = Line::parse(std::str::from_utf8(&p).expect("utf-8"));
            if l.is("376") || l.is("422") {
                break;
            }
        }
        srv.stop();
        let (op, p) = r.next_frame().expect("ERROR");
        assert_eq!(op, opcode::TEXT);
        assert_eq!(p, b"ERROR :Server shutting down");
        r.expect_close(1001);
    }
}

shardline::per_backend! {
    origin_allow_list => origin_allow_list;
    shutdown_closes_with_going_away => shutdown_closes_with_going_away;
    secure_websocket => secure_websocket;
    ws_and_tcp_talk => ws_and_tcp_talk;
    raw_frame_rules => raw_frame_rules;
    http_side => http_side;
    stalled_head_times_out => stalled_head_times_out;
}
