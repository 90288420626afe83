//! HTTP test backends (keep-alive, recording every request, `/health` status
//! under the test's control) and an HTTP client that reads responses
//! independently of the proxy's own parser.

use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicU16, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::Duration,
};

use super::TcpBackend;

/// A request as an HTTP test backend received it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The request arrived chunked.
    pub chunked: bool,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    /// How many fields named `name` (ASCII case-insensitive) it carried.
    pub fn raw_header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }
}

/// The first field `name` (ASCII case-insensitive) among parsed `headers`.
fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// How an HTTP test backend answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// `200`, Content-Length body: "<name> <method> <target> <body bytes>".
    Info,
    /// The request body back, Content-Length.
    EchoBody,
    /// The request body back, chunked in pieces of 1000 bytes.
    EchoChunked,
    /// Never answer (for response timeouts).
    Silent,
    /// Answer Info, then close (Connection: close).
    InfoThenClose,
    /// Answer the first request of a connection (keep-alive); close the
    /// connection on reading the second, unanswered: a keep-alive connection that
    /// dies just as it is reused.
    OnceThenDrop,
    /// Info, after sleeping this many milliseconds (a slow backend).
    SlowInfo(u64),
    /// `500`, with the Info body (a failing backend).
    Error500,
}

/// The path a test backend answers with its [`HttpBackend::health`] status.
pub const HEALTH_PATH: &str = "/health";

/// An HTTP/1.1 backend on std threads: keep-alive, records every request.
pub struct HttpBackend {
    pub tcp: TcpBackend,
    pub seen: Arc<Mutex<Vec<SeenRequest>>>,
    /// Bytes received in total (also bytes of requests it could not parse).
    pub bytes: Arc<AtomicUsize>,
    /// The status `GET /health` gets (200 unless a test changes it).
    pub health: Arc<AtomicU16>,
}

impl HttpBackend {
    pub fn start(name: &str, answer: Answer) -> HttpBackend {
        HttpBackend::start_on("127.0.0.1:0".parse().expect("literal"), name, answer)
    }

    /// On `addr` (e.g. to bring a killed backend back).
    pub fn start_on(addr: SocketAddr, name: &str, answer: Answer) -> HttpBackend {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let bytes = Arc::new(AtomicUsize::new(0));
        let health = Arc::new(AtomicU16::new(200));
        let (s, b, h, name) = (
            seen.clone(),
            bytes.clone(),
            health.clone(),
            name.to_string(),
        );
        let tcp = TcpBackend::start_on(addr, move |stream| {
            serve_http(stream, &name, answer, &s, &b, &h)
        });
        HttpBackend {
            tcp,
            seen,
            bytes,
            health,
        }
    }

    pub fn set_health(&self, status: u16) {
        self.health.store(status, Ordering::SeqCst);
    }

    /// Requests it received other than health checks.
    pub fn traffic(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.target != HEALTH_PATH)
            .count()
    }

    /// Health checks it received.
    pub fn checks(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.target == HEALTH_PATH)
            .count()
    }

    /// See [`TcpBackend::kill`].
    pub fn kill(&mut self) {
        self.tcp.kill();
    }

    pub fn addr(&self) -> SocketAddr {
        self.tcp.addr
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("lock").clone()
    }

    pub fn accepted(&self) -> usize {
        self.tcp.accepted()
    }
}

/// A stream an HTTP test peer talks over: plain TCP, or TLS over it.
pub trait Wire: Read + Write {
    /// Shuts the connection down both ways.
    fn shut(&mut self);
}

impl Wire for TcpStream {
    fn shut(&mut self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

impl<C, D> Wire for rustls::StreamOwned<C, TcpStream>
where
    C: std::ops::DerefMut + std::ops::Deref<Target = rustls::ConnectionCommon<D>>,
    D: rustls::SideData,
{
    fn shut(&mut self) {
        self.conn.send_close_notify();
        let _ = self.conn.complete_io(&mut self.sock);
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

impl HttpBackend {
    /// An HTTP backend that speaks TLS with `config` (e.g. a pool's `tls = true`).
    pub fn start_tls(name: &str, answer: Answer, config: Arc<rustls::ServerConfig>) -> HttpBackend {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let bytes = Arc::new(AtomicUsize::new(0));
        let health = Arc::new(AtomicU16::new(200));
        let (s, b, h, name) = (
            seen.clone(),
            bytes.clone(),
            health.clone(),
            name.to_string(),
        );
        let tcp = TcpBackend::start(move |stream| {
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                return;
            };
            let tls = rustls::StreamOwned::new(conn, stream);
            serve_http(tls, &name, answer, &s, &b, &h)
        });
        HttpBackend {
            tcp,
            seen,
            bytes,
            health,
        }
    }
}

fn serve_http(
    mut stream: impl Wire,
    name: &str,
    answer: Answer,
    seen: &Mutex<Vec<SeenRequest>>,
    bytes: &AtomicUsize,
    health: &AtomicU16,
) {
    let mut buf = Vec::new();
    let mut answered = 0;
    loop {
        let Some(req) = read_request(&mut stream, &mut buf, bytes) else {
            return;
        };
        seen.lock().expect("lock").push(req.clone());
        if req.target == HEALTH_PATH {
            let status = health.load(Ordering::SeqCst);
            let out = format!("HTTP/1.1 {status} Health\r\nContent-Length: 0\r\n\r\n");
            if stream.write_all(out.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        if answer == Answer::OnceThenDrop && answered == 1 {
            return;
        }
        answered += 1;
        let out = match answer {
            Answer::Silent => {
                // Hold the connection until the peer goes away.
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
            Answer::Info
            | Answer::InfoThenClose
            | Answer::OnceThenDrop
            | Answer::SlowInfo(_)
            | Answer::Error500 => {
                if let Answer::SlowInfo(ms) = answer {
                    thread::sleep(Duration::from_millis(ms));
                }
                let status = if answer == Answer::Error500 {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                let body = format!("{name} {} {} {}", req.method, req.target, req.body.len());
                let close = if answer == Answer::InfoThenClose {
                    "Connection: close\r\n"
                } else {
                    ""
                };
                let mut out = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nX-Backend: {name}\r\n{close}\r\n",
                    body.len()
                )
                .into_bytes();
                if req.method != "HEAD" {
                    out.extend_from_slice(body.as_bytes());
                }
                out
            }
            Answer::EchoBody => {
                let mut out = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Backend: {name}\r\n\r\n",
                    req.body.len()
                )
                .into_bytes();
                out.extend_from_slice(&req.body);
                out
            }
            Answer::EchoChunked => {
                let mut out = format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Backend: {name}\r\n\r\n"
                )
                .into_bytes();
                for piece in req.body.chunks(1000) {
                    out.extend_from_slice(format!("{:x};ext=1\r\n", piece.len()).as_bytes());
                    out.extend_from_slice(piece);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
                out
            }
        };
        if stream.write_all(&out).is_err() {
            return;
        }
        if answer == Answer::InfoThenClose {
            stream.shut();
            return;
        }
    }
}

/// Reads until `buf` holds `\r\n\r\n`; returns the head's length, or `None` at EOF.
fn read_head(stream: &mut impl Read, buf: &mut Vec<u8>, bytes: &AtomicUsize) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        let mut chunk = [0u8; 16 << 10];
        match stream.read(&mut chunk) {
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Ok(0) | Err(_) => return None,
            Ok(n) => {
                bytes.fetch_add(n, Ordering::SeqCst);
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}

fn fill(stream: &mut impl Read, buf: &mut Vec<u8>, want: usize, bytes: &AtomicUsize) -> bool {
    while buf.len() < want {
        let mut chunk = [0u8; 64 << 10];
        match stream.read(&mut chunk) {
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                bytes.fetch_add(n, Ordering::SeqCst);
                buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
    true
}

/// Reads a CRLF-terminated line from the front of `buf` (filling as needed).
fn take_line(stream: &mut impl Read, buf: &mut Vec<u8>, bytes: &AtomicUsize) -> Option<String> {
    loop {
        if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = String::from_utf8_lossy(&buf[..i]).to_string();
            buf.drain(..i + 2);
            return Some(line);
        }
        let have = buf.len();
        if !fill(stream, buf, have + 1, bytes) {
            return None;
        }
    }
}

/// Reads a chunked body (independent of the proxy's decoder).
fn read_chunked(stream: &mut impl Read, buf: &mut Vec<u8>, bytes: &AtomicUsize) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = take_line(stream, buf, bytes)?;
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            // Trailers until the empty line.
            loop {
                if take_line(stream, buf, bytes)?.is_empty() {
                    return Some(body);
                }
            }
        }
        if !fill(stream, buf, size + 2, bytes) {
            return None;
        }
        body.extend_from_slice(&buf[..size]);
        assert_eq!(&buf[size..size + 2], b"\r\n", "chunk data ends with CRLF");
        buf.drain(..size + 2);
    }
}

fn read_request(
    stream: &mut impl Read,
    buf: &mut Vec<u8>,
    bytes: &AtomicUsize,
) -> Option<SeenRequest> {
    let end = read_head(stream, buf, bytes)?;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(&buf[..end]).ok()?;
    let method = req.method?.to_string();
    let target = req.path?.to_string();
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).to_string(),
            )
        })
        .collect();
    buf.drain(..end);
    let find = |n: &str| header_in(&headers, n);
    let chunked = find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        read_chunked(stream, buf, bytes)?
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().ok()?;
        if !fill(stream, buf, len, bytes) {
            return None;
        }
        buf.drain(..len).collect()
    } else {
        Vec::new()
    };
    Some(SeenRequest {
        method,
        target,
        headers,
        body,
        chunked,
    })
}

/// A response as the test client read it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunked: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// An HTTP client connection to the proxy.
pub struct HttpClient<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
    bytes: AtomicUsize,
}

impl<S: Read + Write> HttpClient<S> {
    pub fn new(stream: S) -> HttpClient<S> {
        HttpClient {
            stream,
            buf: Vec::new(),
            bytes: AtomicUsize::new(0),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to proxy");
    }

    /// Reads one response; `head_request`: it answers a HEAD (no body).
    pub fn response(&mut self, head_request: bool) -> Response {
        self.try_response(head_request)
            .expect("a complete response from the proxy")
    }

    pub fn try_response(&mut self, head_request: bool) -> Option<Response> {
        let end = read_head(&mut self.stream, &mut self.buf, &self.bytes)?;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(&self.buf[..end])
            .expect("proxy sent a valid head");
        let status = resp.code.expect("status");
        let headers: Vec<(String, String)> = resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8_lossy(h.value).to_string(),
                )
            })
            .collect();
        self.buf.drain(..end);
        let find = |n: &str| header_in(&headers, n);
        let chunked = find("transfer-encoding").is_some_and(|v| v == "chunked");
        let body = if head_request || status == 204 || status == 304 || status < 200 {
            Vec::new()
        } else if chunked {
            read_chunked(&mut self.stream, &mut self.buf, &self.bytes)?
        } else if let Some(len) = find("content-length") {
            let len: usize = len.parse().expect("numeric length");
            if !fill(&mut self.stream, &mut self.buf, len, &self.bytes) {
                return None;
            }
            self.buf.drain(..len).collect()
        } else {
            let mut rest = std::mem::take(&mut self.buf);
            self.stream.read_to_end(&mut rest).ok()?;
            rest
        };
        Some(Response {
            status,
            headers,
            body,
            chunked,
        })
    }

    /// Whether the proxy closed the connection (EOF, or reset) with nothing more
    /// to read, within the read timeout.
    pub fn closed(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut b = [0u8; 1];
        loop {
            return match self.stream.read(&mut b) {
                Ok(0) => true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => true,
                _ => false,
            };
        }
    }
}

/// A GET request for `target` on host `h`.
pub fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes()
}

/// An HTTP listener on port 0 with one pool `p` of `backends` (round-robin
/// unless `extra` says otherwise), then `extra` TOML: keys of `[pool.p]` (e.g.
/// `balance = ...`) and/or further tables (`[pool.p.health]`, `[timeouts]`,
/// `[limits]`).
pub fn http_config(backends: &[SocketAddr], extra: &str) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("{{ address = \"{a}\" }}"))
        .collect();
    format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\nmode = \"http\"\npool = \"p\"\n\
         [pool.p]\nbackends = [{}]\n{extra}\n",
        list.join(", ")
    )
}
