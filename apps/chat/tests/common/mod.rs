//! Helpers for the chat integration tests: start a server on a forced backend and
//! shard count, and drive raw-TCP IRC clients with bounded waits (no timing
//! assertions: a wait that runs out is a failure with everything seen so far).
#![allow(dead_code)]

pub mod binary;
#[path = "../../../../framework/tests/common/certs.rs"]
pub mod certs;

use std::{
    collections::HashMap,
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::Arc,
    time::{Duration, Instant},
};

use certs::TestCa;
use rustls::pki_types::ServerName;
use shardline::{Io, RunningServer, Server};
use shardline_chat::{message::parse, BuildOptions, Config};

/// Every I/O test runs on both backends, forced, one `#[test]` each (made by
/// [`per_backend!`]), and at one shard and at four (channels really spanning
/// shards) inside each.
pub const SHARD_COUNTS: [usize; 2] = [1, 4];
/// Longest any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// Starts a server with the test configuration on `io` at every shard count of
/// [`SHARD_COUNTS`], runs `test` against it, and stops it.
pub fn each_server(io: Io, test: impl FnMut(&TestServer)) {
    each_server_with(io, |_| {}, test);
}

/// Like [`each_server`], with `configure` applied to the test configuration.
pub fn each_server_with(
    io: Io,
    configure: impl Fn(&mut Config),
    mut test: impl FnMut(&TestServer),
) {
    for shards in SHARD_COUNTS {
        let mut config = test_config();
        configure(&mut config);
        let srv = TestServer::start_with(io, shards, config);
        test(&srv);
        srv.stop();
    }
}

/// Joins every client to `chan`, one after another.
pub fn join_all<'a>(chan: &str, clients: impl IntoIterator<Item = &'a mut Client>) {
    for c in clients {
        c.join(chan);
    }
}

/// Syncs every client, one after another.
pub fn sync_all<'a>(clients: impl IntoIterator<Item = &'a mut Client>) {
    for c in clients {
        c.sync();
    }
}

/// The texts `"0"`, `"1"`, … of `n` numbered messages, in order.
pub fn numbered(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

/// `n` raw PRIVMSG lines to `chan` carrying the [`numbered`] texts, as one burst.
pub fn numbered_privmsgs(chan: &str, n: usize) -> String {
    (0..n).map(|i| format!("PRIVMSG {chan} :{i}\r\n")).collect()
}

/// The members (with their prefixes) the 353 lines among `lines` list for
/// `chan`, sorted.
pub fn names_in(lines: &[Line], chan: &str) -> Vec<String> {
    let mut n: Vec<String> = lines
        .iter()
        .filter(|l| l.is("353") && l.params[2].eq_ignore_ascii_case(chan))
        .flat_map(|l| l.last().split(' ').map(str::to_string).collect::<Vec<_>>())
        .collect();
    n.sort();
    n
}

/// One scrape of the admin endpoint's `/metrics`: `name{labels}` -> value.
pub fn scrape(admin: SocketAddr, label: &str) -> HashMap<String, f64> {
    let mut s = TcpStream::connect(admin).unwrap_or_else(|e| panic!("{label}: admin: {e}"));
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("request");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("response head");
    assert!(head.starts_with("HTTP/1.1 200 "), "{label}: {head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{label}: {head}"
    );
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("sample");
            (k.to_string(), v.parse().expect("value"))
        })
        .collect()
}

/// Logs to the test's captured output; `RUST_LOG` controls the level.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The configuration tests start from.
pub fn test_config() -> Config {
    let mut c = Config::default();
    c.server.name = "irc.test".into();
    c.server.network = "TestNet".into();
    // Tests burst far faster than any person types.
    c.flood.enabled = false;
    c
}

/// A port nobody listens on right now (the server binds it with SO_REUSEPORT,
/// once per shard; a race with another process is retried by the caller).
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

/// A directory under the system's temporary directory, removed when dropped
/// (the one the shared test certificates use).
pub use certs::TempDir;

/// A running chat server.
pub struct TestServer {
    server: Option<RunningServer<shardline_chat::ChatMsg>>,
    pub addr: SocketAddr,
    /// The TLS listener, when started with [`TestServer::start_tls`].
    pub tls_addr: Option<SocketAddr>,
    /// The CA that signed the server's certificate (its directory lives as long).
    pub ca: Option<TestCa>,
    pub io: Io,
    pub shards: usize,
    /// The data directory made for it (history on and none configured);
    /// removed once it stopped.
    data: Option<TempDir>,
}

impl TestServer {
    pub fn start(io: Io, shards: usize) -> TestServer {
        TestServer::start_with(io, shards, test_config())
    }

    pub fn start_with(io: Io, shards: usize, config: Config) -> TestServer {
        TestServer::start_with_options(io, shards, config, BuildOptions::default())
    }

    /// Like [`TestServer::start_with`], built with `options`. With history on
    /// and no `storage.dir`, the store gets a fresh temporary directory (tests
    /// run in parallel; each server locks its own).
    pub fn start_with_options(
        io: Io,
        shards: usize,
        mut config: Config,
        options: BuildOptions,
    ) -> TestServer {
        init_tracing();
        let data = (config.history.enabled && config.storage.dir.is_none()).then(|| {
            let d = TempDir::new("data");
            config.storage.dir = Some(d.path().to_path_buf());
            d
        });
        let builder = Server::builder()
            .io(io)
            .shards(shards)
            .pin(false)
            .listen("127.0.0.1:0".parse().expect("literal address"))
            .shutdown_timeout(Duration::from_secs(10));
        let server = shardline_chat::build_with(builder, config, options)
            .expect("valid config")
            .start()
            .expect("server starts");
        let addr = server.local_addrs()[0];
        TestServer {
            server: Some(server),
            addr,
            tls_addr: None,
            ca: None,
            io,
            shards,
            data,
        }
    }

    /// A server with a plaintext listener and a TLS one (both port 0), serving a
    /// certificate for `localhost` from a fresh test CA; `configure` may change
    /// the rest (e.g. `tls.client_ca`, the `sts` settings).
    pub fn start_tls(
        io: Io,
        shards: usize,
        configure: impl Fn(&mut Config, &TestCa),
    ) -> TestServer {
        let ca = TestCa::new("server");
        let cert = ca.server("server", &["localhost"]);
        let mut config = test_config();
        // Port 0: the plaintext side's `sts=port=` names the port it got.
        config.tls.listen = vec!["127.0.0.1:0".parse().expect("literal address")];
        config.tls.cert = Some(cert.cert.clone());
        config.tls.key = Some(cert.key.clone());
        configure(&mut config, &ca);
        let data = (config.history.enabled && config.storage.dir.is_none()).then(|| {
            let d = TempDir::new("data");
            config.storage.dir = Some(d.path().to_path_buf());
            d
        });
        init_tracing();
        let builder = Server::builder()
            .io(io)
            .shards(shards)
            .pin(false)
            .listen("127.0.0.1:0".parse().expect("literal address"))
            .shutdown_timeout(Duration::from_secs(10));
        let server = shardline_chat::build(builder, config)
            .expect("valid config")
            .start()
            .expect("server starts");
        let addrs = server.local_addrs().to_vec();
        TestServer {
            server: Some(server),
            addr: addrs[0],
            tls_addr: Some(addrs[1]),
            ca: Some(ca),
            io,
            shards,
            data,
        }
    }

    /// A label for assertion messages.
    pub fn label(&self) -> String {
        format!("{} x{}", self.io, self.shards)
    }

    /// Connections accepted so far, per shard.
    pub fn accepted(&self) -> Vec<u64> {
        let m = self.server.as_ref().expect("running").metrics();
        (0..self.shards)
            .map(|s| m.snapshot_shard(s).conns_accepted)
            .collect()
    }

    /// A shard that has accepted more connections than `before` (an earlier
    /// [`TestServer::accepted`]) says, if any.
    pub fn newly_accepted(&self, before: &[u64]) -> Option<usize> {
        let now = self.accepted();
        (0..self.shards).find(|&s| now[s] > before[s])
    }

    /// The admin endpoint's address, when the configuration asked for one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().expect("running").admin_addr()
    }

    /// The server's counters.
    pub fn metrics(&self) -> shardline::Metrics {
        self.server.as_ref().expect("running").metrics()
    }

    /// Live connections over all shards.
    pub fn live(&self) -> u64 {
        let m = self.server.as_ref().expect("running").metrics();
        m.total().conns_live
    }

    /// Connects a client and finds out (from the shards' accept counters) which
    /// shard took it. Connect one client at a time.
    pub fn connect(&self) -> Client {
        let (stream, shard) = self.connect_tcp(self.addr);
        Client::new(stream, shard, self.label())
    }

    /// Every listener's address, in the order they were added (the test
    /// listener first, then what the configuration adds).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.server
            .as_ref()
            .expect("running")
            .local_addrs()
            .to_vec()
    }

    /// A TCP connection to `addr` and the shard that accepted it.
    pub fn connect_tcp(&self, addr: SocketAddr) -> (TcpStream, usize) {
        let before = self.accepted();
        let stream = TcpStream::connect(addr).expect("connect");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(s) = self.newly_accepted(&before) {
                return (stream, s);
            }
            assert!(
                Instant::now() < deadline,
                "{}: no shard accepted",
                self.label()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Connects until a connection lands on `shard % shards` (others are closed).
    pub fn connect_on(&self, shard: usize) -> Client {
        let want = shard % self.shards;
        for _ in 0..500 {
            let c = self.connect();
            if c.shard == want {
                return c;
            }
        }
        panic!("{}: no connection landed on shard {want}", self.label());
    }

    /// A client of the TLS listener, handshake done, trusting the test CA and
    /// presenting no certificate.
    pub fn connect_tls(&self) -> Client {
        let ca = self.ca.as_ref().expect("started with start_tls");
        self.connect_tls_with(ca.client_config())
    }

    /// A client of the TLS listener with the client configuration `config`.
    pub fn connect_tls_with(&self, config: Arc<rustls::ClientConfig>) -> Client {
        let addr = self.tls_addr.expect("started with start_tls");
        let (stream, shard) = self.connect_tcp(addr);
        Client::new_tls(stream, shard, self.label(), config)
    }

    /// Like [`TestServer::connect_on`], over TLS (the handshake is only made on
    /// the connection that landed there).
    pub fn connect_tls_on(&self, shard: usize, config: Arc<rustls::ClientConfig>) -> Client {
        let want = shard % self.shards;
        let addr = self.tls_addr.expect("started with start_tls");
        for _ in 0..500 {
            let (stream, s) = self.connect_tcp(addr);
            if s == want {
                return Client::new_tls(stream, s, self.label(), config);
            }
        }
        panic!("{}: no TLS connection landed on shard {want}", self.label());
    }

    /// A registered client on `shard % shards`, burst consumed.
    pub fn register_on(&self, shard: usize, nick: &str) -> Client {
        let mut c = self.connect_on(shard);
        c.register(nick);
        c
    }

    /// Registered clients, the i-th named `nicks[i]` and on shard `i % shards`,
    /// registered in that order.
    pub fn register_each<const N: usize>(&self, nicks: [&str; N]) -> [Client; N] {
        let mut shard = 0;
        nicks.map(|nick| {
            let c = self.register_on(shard, nick);
            shard += 1;
            c
        })
    }

    /// `n` clients `m0`, `m1`, … on shards `i % shards`, registered with `caps`,
    /// joined to `chan` one after another, then synced.
    pub fn members(&self, n: usize, caps: &str, chan: &str) -> Vec<Client> {
        let mut all: Vec<Client> = (0..n)
            .map(|i| {
                let mut c = self.connect_on(i);
                c.register_with_caps(&format!("m{i}"), caps);
                c
            })
            .collect();
        join_all(chan, &mut all);
        sync_all(&mut all);
        all
    }

    /// Stops the server and waits for it.
    pub fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().expect("clean shutdown");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            let _ = s.shutdown();
        }
        // After the shards stopped: their stores are closed.
        drop(self.data.take());
    }
}

/// One received line, parsed.
#[derive(Debug, Clone)]
pub struct Line {
    pub raw: String,
    pub tags: Vec<(String, String)>,
    pub source: Option<String>,
    pub command: String,
    pub params: Vec<String>,
}

impl Line {
    pub fn parse(raw: &str) -> Line {
        let m = parse(raw).unwrap_or_else(|e| panic!("server sent a bad line {raw:?}: {e}"));
        Line {
            raw: raw.to_string(),
            tags: m
                .tags
                .iter()
                .map(|t| (t.key.to_string(), t.value.to_string()))
                .collect(),
            source: m.source.map(str::to_string),
            command: m.command.to_string(),
            params: m.params.iter().map(|p| p.to_string()).collect(),
        }
    }

    pub fn is(&self, command: &str) -> bool {
        self.command.eq_ignore_ascii_case(command)
    }

    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn nick(&self) -> Option<&str> {
        self.source.as_deref().and_then(|s| s.split('!').next())
    }

    pub fn last(&self) -> &str {
        self.params.last().map_or("", String::as_str)
    }
}

/// What a test client talks over: the socket, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// An IRC client over raw TCP or TLS.
pub struct Client {
    stream: Stream,
    buf: Vec<u8>,
    pub shard: usize,
    pub nick: String,
    label: String,
    ping_seq: u64,
    /// Bytes written to the server so far.
    pub sent_bytes: u64,
    /// Lines sent with [`Client::send`] so far.
    pub sent_lines: u64,
    /// Set once the server closed the connection.
    pub eof: bool,
}

impl Client {
    fn new(stream: TcpStream, shard: usize, label: String) -> Client {
        Client::over(Stream::Plain(stream), shard, label)
    }

    /// A TLS client on `stream`, with the handshake done (for `localhost`).
    fn new_tls(
        mut stream: TcpStream,
        shard: usize,
        label: String,
        config: Arc<rustls::ClientConfig>,
    ) -> Client {
        let name = ServerName::try_from("localhost").expect("literal name");
        let mut conn = rustls::ClientConnection::new(config, name).expect("TLS client");
        stream.set_read_timeout(Some(WAIT)).expect("set timeout");
        while conn.is_handshaking() {
            conn.complete_io(&mut stream)
                .unwrap_or_else(|e| panic!("{label}: TLS handshake: {e}"));
        }
        let tls = rustls::StreamOwned::new(conn, stream);
        Client::over(Stream::Tls(Box::new(tls)), shard, label)
    }

    fn over(stream: Stream, shard: usize, label: String) -> Client {
        let tcp = stream.tcp();
        tcp.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set timeout");
        tcp.set_nodelay(true).expect("nodelay");
        Client {
            stream,
            buf: Vec::new(),
            shard,
            nick: String::new(),
            label,
            ping_seq: 0,
            sent_bytes: 0,
            sent_lines: 0,
            eof: false,
        }
    }

    /// A client of a server at `addr` that this test did not start in-process
    /// (the binary): which shard took it is not known (`shard` is 0).
    pub fn connect_to(addr: SocketAddr, label: &str) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        Client::new(stream, 0, label.to_string())
    }

    /// Like [`Client::connect_to`], over TLS with `config` (handshake done).
    pub fn connect_tls_to(
        addr: SocketAddr,
        label: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        Client::new_tls(stream, 0, label.to_string(), config)
    }

    /// A second handle on the socket, for writing from another thread (raw TCP
    /// clients only).
    pub fn try_clone_stream(&self) -> TcpStream {
        match &self.stream {
            Stream::Plain(s) => s.try_clone().expect("clone socket"),
            Stream::Tls(_) => panic!("{}: a TLS stream cannot be shared", self.label),
        }
    }

    /// Over TLS: SHA-256 of the certificate the server presented, lowercase hex.
    pub fn server_cert_sha256(&self) -> Option<String> {
        match &self.stream {
            Stream::Plain(_) => None,
            Stream::Tls(t) => t
                .conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| certs::sha256_hex(c.as_ref())),
        }
    }

    /// Sends one line (CR LF added).
    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.sent_lines += 1;
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
        self.sent_bytes += bytes.len() as u64;
    }

    /// The next line, waiting at most `limit`; `None` on timeout or EOF.
    pub fn next_line_within(&mut self, limit: Duration) -> Option<Line> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buf.drain(..=end).collect();
                let text = String::from_utf8_lossy(&raw);
                let text = text.trim_end_matches(['\r', '\n']);
                return Some(Line::parse(text));
            }
            if self.eof || Instant::now() >= deadline {
                return None;
            }
            let mut chunk = [0u8; 16 << 10];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => self.eof = true,
                Err(e) => panic!("{}: read: {e}", self.label),
            }
        }
    }

    /// The next line; fails the test if none comes in time.
    pub fn next_line(&mut self) -> Line {
        self.next_line_within(WAIT)
            .unwrap_or_else(|| panic!("{}: {}: no line (eof={})", self.label, self.nick, self.eof))
    }

    /// Reads until a line satisfies `pred`; returns it and the lines before it.
    pub fn until(&mut self, what: &str, mut pred: impl FnMut(&Line) -> bool) -> (Line, Vec<Line>) {
        let mut seen = Vec::new();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            let Some(l) = self.next_line_within(deadline - Instant::now()) else {
                break;
            };
            if pred(&l) {
                return (l, seen);
            }
            seen.push(l);
        }
        let shown: Vec<&str> = seen.iter().map(|l| l.raw.as_str()).collect();
        panic!(
            "{}: {}: waited for {what}; got {shown:#?} (eof={})",
            self.label, self.nick, self.eof
        );
    }

    /// Reads until numeric `code` (or command) arrives and returns it.
    pub fn expect(&mut self, command: &str) -> Line {
        self.until(command, |l| l.is(command)).0
    }

    /// Reads until `command` arrives; returns it and the lines before it.
    pub fn until_command(&mut self, command: &str) -> (Line, Vec<Line>) {
        self.until(command, |l| l.is(command))
    }

    /// Reads until `code` arrives and asserts that its second parameter (what
    /// the reply is about: a channel, a nick, a command) is `subject`.
    pub fn expect_about(&mut self, code: &str, subject: &str) -> Line {
        let l = self.expect(code);
        assert_eq!(
            l.params.get(1).map(String::as_str),
            Some(subject),
            "{}: {}: {}",
            self.label,
            self.nick,
            l.raw
        );
        l
    }

    /// Sends `line` and expects the reply `code` about `subject`, as
    /// [`Client::expect_about`] does.
    pub fn send_expect(&mut self, line: &str, code: &str, subject: &str) -> Line {
        self.send(line);
        self.expect_about(code, subject)
    }

    /// Reads until `n` PRIVMSGs have arrived (other lines are skipped) and
    /// returns their texts.
    pub fn privmsg_texts(&mut self, n: usize) -> Vec<String> {
        self.privmsg_texts_checking(n, |_| {})
    }

    /// Like [`Client::privmsg_texts`], calling `check` on every line read.
    pub fn privmsg_texts_checking(
        &mut self,
        n: usize,
        mut check: impl FnMut(&Line),
    ) -> Vec<String> {
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            let l = self.next_line();
            check(&l);
            if l.is("PRIVMSG") {
                got.push(l.last().to_string());
            }
        }
        got
    }

    /// Syncs and asserts that no `command` line arrived meanwhile; returns what
    /// did.
    pub fn sync_without(&mut self, command: &str) -> Vec<Line> {
        let seen = self.sync();
        assert!(
            !seen.iter().any(|l| l.is(command)),
            "{}: {}: unexpected {command}: {seen:?}",
            self.label,
            self.nick
        );
        seen
    }

    /// Sends NAMES for `chan` and returns its members (with their prefixes),
    /// sorted.
    pub fn names(&mut self, chan: &str) -> Vec<String> {
        self.send(&format!("NAMES {chan}"));
        let (_, lines) = self.until_command("366");
        names_in(&lines, chan)
    }

    /// Sends NAMES for `chan` and returns the text of every 353 reply, one
    /// string a line, as they came.
    pub fn names_lines(&mut self, chan: &str) -> Vec<String> {
        self.send(&format!("NAMES {chan}"));
        let (_, lines) = self.until_command("366");
        lines
            .iter()
            .filter(|l| l.is("353"))
            .map(|l| l.last().to_string())
            .collect()
    }

    /// PING and collect everything that arrives before the PONG.
    pub fn sync(&mut self) -> Vec<Line> {
        self.ping_seq += 1;
        let token = format!("sync-{}", self.ping_seq);
        self.send(&format!("PING :{token}"));
        let t = token.clone();
        let (_, seen) = self.until("PONG", move |l| l.is("PONG") && l.last() == t);
        seen
    }

    /// Asserts nothing but what `sync` would show arrived: returns those lines.
    pub fn drain(&mut self) -> Vec<Line> {
        self.sync()
    }

    /// NICK + USER and wait for the end of the burst (376 or 422).
    pub fn register(&mut self, nick: &str) {
        self.nick = nick.to_string();
        self.send(&format!("NICK {nick}"));
        self.send(&format!("USER {nick} 0 * :Test {nick}"));
        self.until("end of MOTD", |l| l.is("376") || l.is("422"));
    }

    /// Like `register`, negotiating `caps` first.
    pub fn register_with_caps(&mut self, nick: &str, caps: &str) {
        self.nick = nick.to_string();
        self.send("CAP LS 302");
        self.send(&format!("NICK {nick}"));
        self.send(&format!("USER {nick} 0 * :Test {nick}"));
        self.send(&format!("CAP REQ :{caps}"));
        self.send("CAP END");
        let (ack, _) = self.until("CAP ACK", |l| {
            l.is("CAP") && l.params.get(1).is_some_and(|s| s == "ACK" || s == "NAK")
        });
        assert_eq!(ack.params[1], "ACK", "{}: {}", self.label, ack.raw);
        self.until("end of MOTD", |l| l.is("376") || l.is("422"));
    }

    /// JOIN and wait for the end of NAMES.
    pub fn join(&mut self, chan: &str) {
        self.send(&format!("JOIN {chan}"));
        let c = chan.to_string();
        self.until("366", move |l| {
            l.is("366") && l.params.get(1).is_some_and(|p| p.eq_ignore_ascii_case(&c))
        });
    }

    /// Reads until the server closes the connection; returns what came.
    pub fn until_closed(&mut self) -> Vec<Line> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match self.next_line_within(deadline - Instant::now()) {
                Some(l) => seen.push(l),
                None if self.eof => return seen,
                None => {}
            }
        }
        panic!(
            "{}: {}: connection not closed; got {seen:?}",
            self.label, self.nick
        );
    }

    /// Reads until the server closes the connection and asserts that the last
    /// line was an ERROR containing `reason`; returns every line that came.
    pub fn expect_error_close(&mut self, reason: &str) -> Vec<Line> {
        let lines = self.until_closed();
        let err = lines.last().expect("an ERROR before the close");
        assert!(
            err.is("ERROR") && err.last().contains(reason),
            "{}: {}: want ERROR with {reason:?}: {lines:?}",
            self.label,
            self.nick
        );
        lines
    }
}
