//! One load-generating process of `connections` (`shardline-bench conns-worker`):
//! opens its share of the connections from its source addresses, has each one
//! served once (an HTTP request, or an IRC registration), keeps `active` of them
//! busy until told to stop, and reports as JSON lines on stdout.
//!
//! A process may hold 20,000 fds here, so the parent runs several of these.
//! Each connection binds its source address with `IP_BIND_ADDRESS_NO_PORT`, so
//! the kernel picks the port at connect time per (source, destination) pair:
//! about 28,000 ports per pair with the default ephemeral range.
//!
//! Protocol with the parent: one `{"phase":"ready",…}` line once every
//! connection was established and served (or the setup deadline passed), then a
//! `{"phase":"done",…}` line when stdin closes, after which it exits.

use std::{
    io::{self, Read, Write},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use mio::{net::TcpStream, unix::SourceFd, Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};

/// What a worker speaks on each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Proto {
    /// `GET /` with keep-alive; served = a whole response.
    Http,
    /// IRC registration (NICK/USER); served = the 001 welcome. Active: PING/PONG.
    Irc,
}

/// A worker's assignment.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub addr: SocketAddr,
    pub sources: Vec<IpAddr>,
    pub conns: usize,
    pub active: usize,
    pub proto: Proto,
    /// Prefix of IRC nicks (unique per worker).
    pub nick_prefix: String,
    /// Give up establishing after this long.
    pub setup_limit: Duration,
    /// Connects in flight at once.
    pub connect_window: usize,
}

/// A worker's counts, as it reports them.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerReport {
    pub phase: String,
    pub established: usize,
    pub served: usize,
    /// Requests (or PINGs) answered on the active connections after `ready`.
    pub active_requests: u64,
    /// Connect failures, resets, closes by the server, bad answers.
    pub errors: usize,
    /// Connections still open when the report was made.
    pub open: usize,
    /// The first few error messages.
    pub error_samples: Vec<String>,
}

const STDIN: Token = Token(usize::MAX);
/// Setup ends when no connection was established or served for this long.
const STALL: Duration = Duration::from_secs(5);

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum State {
    Connecting,
    /// Waiting for the answer to the first request / registration.
    Greeting,
    Idle,
    /// An active connection waiting for its answer.
    Busy,
    Dead,
}

struct Conn {
    stream: TcpStream,
    state: State,
    buf: Vec<u8>,
    active: bool,
}

fn request(proto: Proto, nick: &str) -> Vec<u8> {
    match proto {
        Proto::Http => b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n".to_vec(),
        Proto::Irc => format!("NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n").into_bytes(),
    }
}

fn next_request(proto: Proto) -> &'static [u8] {
    match proto {
        Proto::Http => b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n",
        Proto::Irc => b"PING :bench\r\n",
    }
}

/// Whether `buf` holds one whole answer; consumes it.
fn take_answer(proto: Proto, buf: &mut Vec<u8>, greeting: bool) -> Result<bool, String> {
    match proto {
        Proto::Http => {
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Ok(false);
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(head.lines().next().unwrap_or("").to_owned());
            }
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() < end + 4 + len {
                return Ok(false);
            }
            buf.drain(..end + 4 + len);
            Ok(true)
        }
        Proto::Irc => {
            let want: &[u8] = if greeting { b" 001 " } else { b"PONG" };
            let mut found = false;
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                if line.starts_with(b"PING ") {
                    // Answered by the caller's next write; rare at idle here.
                    continue;
                }
                if line.starts_with(b"ERROR") {
                    return Err(String::from_utf8_lossy(&line).trim().to_owned());
                }
                if line.windows(want.len()).any(|w| w == want) {
                    found = true;
                }
            }
            Ok(found)
        }
    }
}

fn open(addr: SocketAddr, source: IpAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking(),
        Some(Protocol::TCP),
    )?;
    socket.set_tcp_nodelay(true)?;
    crate::client::bind_source(&socket, source)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

struct Worker {
    cfg: WorkerConfig,
    poll: Poll,
    conns: Vec<Conn>,
    report: WorkerReport,
    pending_connects: usize,
}

impl Worker {
    fn fail(&mut self, i: usize, why: String) {
        let c = &mut self.conns[i];
        if c.state == State::Dead {
            return;
        }
        if c.state == State::Connecting {
            self.pending_connects -= 1;
        }
        c.state = State::Dead;
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.report.errors += 1;
        if self.report.error_samples.len() < 5 {
            self.report.error_samples.push(format!("conn {i}: {why}"));
        }
    }

    fn open_more(&mut self) {
        while self.pending_connects < self.cfg.connect_window && self.conns.len() < self.cfg.conns {
            let i = self.conns.len();
            let source = self.cfg.sources[i % self.cfg.sources.len()];
            match open(self.cfg.addr, source) {
                Ok(mut stream) => {
                    let reg = self.poll.registry().register(
                        &mut stream,
                        Token(i),
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    let active = i < self.cfg.active;
                    self.conns.push(Conn {
                        stream,
                        state: State::Connecting,
                        buf: Vec::new(),
                        active,
                    });
                    self.pending_connects += 1;
                    if let Err(e) = reg {
                        self.fail(i, format!("register: {e}"));
                    }
                }
                Err(e) => {
                    // Keep a placeholder so indexes stay tokens: a dead slot.
                    self.report.errors += 1;
                    if self.report.error_samples.len() < 5 {
                        self.report
                            .error_samples
                            .push(format!("conn {i}: connect: {e}"));
                    }
                    // Stop opening: the machine refuses (ports, fds).
                    self.cfg.conns = self.conns.len();
                    return;
                }
            }
        }
    }

    fn write_all(&mut self, i: usize, data: &[u8]) {
        // Small writes on an idle socket: one send does it; anything else is an
        // error for a load generator that never queues.
        match self.conns[i].stream.write(data) {
            Ok(n) if n == data.len() => {}
            Ok(n) => self.fail(i, format!("short write {n}/{}", data.len())),
            Err(e) => self.fail(i, format!("write: {e}")),
        }
    }

    fn on_event(&mut self, i: usize, writable: bool, readable: bool, active_phase: bool) {
        if self.conns[i].state == State::Connecting && (writable || readable) {
            match self.conns[i].stream.peer_addr() {
                Ok(_) => {
                    self.pending_connects -= 1;
                    self.report.established += 1;
                    self.conns[i].state = State::Greeting;
                    let nick = format!("{}{i}", self.cfg.nick_prefix);
                    let req = request(self.cfg.proto, &nick);
                    self.write_all(i, &req);
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    let err = self.conns[i]
                        .stream
                        .take_error()
                        .ok()
                        .flatten()
                        .map_or_else(|| "not connected".to_owned(), |e| e.to_string());
                    self.fail(i, format!("connect: {err}"));
                    return;
                }
                Err(e) => {
                    self.fail(i, format!("connect: {e}"));
                    return;
                }
            }
        }
        if !readable || self.conns[i].state == State::Dead {
            return;
        }
        let mut chunk = [0u8; 4096];
        loop {
            match self.conns[i].stream.read(&mut chunk) {
                Ok(0) => return self.fail(i, "closed by the server".into()),
                Ok(n) => self.conns[i].buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.fail(i, format!("read: {e}")),
            }
        }
        let proto = self.cfg.proto;
        loop {
            let c = &mut self.conns[i];
            let greeting = c.state == State::Greeting;
            match take_answer(proto, &mut c.buf, greeting) {
                Ok(false) => break,
                Err(e) => return self.fail(i, format!("bad answer: {e}")),
                Ok(true) => {
                    match c.state {
                        State::Greeting => self.report.served += 1,
                        State::Busy => self.report.active_requests += 1,
                        _ => {}
                    }
                    let c = &mut self.conns[i];
                    c.state = State::Idle;
                    if c.active && active_phase {
                        c.state = State::Busy;
                        self.write_all(i, next_request(proto));
                    }
                }
            }
        }
    }

    /// Starts the active connections' request loops.
    fn start_active(&mut self) {
        for i in 0..self.conns.len() {
            if self.conns[i].active && self.conns[i].state == State::Idle {
                self.conns[i].state = State::Busy;
                self.write_all(i, next_request(self.cfg.proto));
            }
        }
    }

    fn open_count(&self) -> usize {
        self.conns.iter().filter(|c| c.state != State::Dead).count()
    }
}

fn emit(report: &WorkerReport) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, report)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Runs a worker until stdin closes.
pub fn run(cfg: WorkerConfig) -> anyhow::Result<()> {
    if cfg.sources.is_empty() {
        bail!("no source addresses");
    }
    let poll = Poll::new().context("epoll")?;
    let stdin = libc::STDIN_FILENO;
    poll.registry()
        .register(&mut SourceFd(&stdin), STDIN, Interest::READABLE)
        .context("watching stdin")?;
    let mut w = Worker {
        conns: Vec::with_capacity(cfg.conns),
        cfg,
        poll,
        report: WorkerReport::default(),
        pending_connects: 0,
    };
    let mut events = Events::with_capacity(1024);
    let started = Instant::now();
    let mut ready = false;
    let mut stop = false;
    // Progress (connections established or served) seen last at.
    let mut progress = (0, 0, Instant::now());
    while !stop {
        if !ready {
            w.open_more();
            let now = Instant::now();
            if (w.report.established, w.report.served) != (progress.0, progress.1) {
                progress = (w.report.established, w.report.served, now);
            }
            let settled = w.conns.len() == w.cfg.conns
                && w.pending_connects == 0
                && w.conns.iter().all(|c| c.state != State::Greeting);
            // A server at its limit leaves the rest waiting in its backlog:
            // established, never served. Stop waiting once nothing moves.
            let stalled = w.conns.len() == w.cfg.conns && now - progress.2 > STALL;
            if settled || stalled || started.elapsed() > w.cfg.setup_limit {
                ready = true;
                w.report.phase = "ready".into();
                w.report.open = w.open_count();
                emit(&w.report)?;
                w.start_active();
            }
        }
        match w.poll.poll(&mut events, Some(Duration::from_millis(50))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("epoll_wait"),
        }
        for ev in events.iter() {
            if ev.token() == STDIN {
                let mut b = [0u8; 64];
                // SAFETY: reads into a valid local buffer.
                let n = unsafe { libc::read(stdin, b.as_mut_ptr().cast(), b.len()) };
                if n <= 0 {
                    stop = true;
                }
                continue;
            }
            let i = ev.token().0;
            if i < w.conns.len() {
                w.on_event(
                    i,
                    ev.is_writable(),
                    ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                    ready,
                );
            }
        }
    }
    w.report.phase = "done".into();
    w.report.open = w.open_count();
    emit(&w.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_answer_is_taken_whole_and_only_whole() {
        let mut buf = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel".to_vec();
        assert_eq!(take_answer(Proto::Http, &mut buf, true), Ok(false));
        buf.extend_from_slice(b"loHTTP/1.1");
        assert_eq!(take_answer(Proto::Http, &mut buf, true), Ok(true));
        assert_eq!(buf, b"HTTP/1.1");
        let mut bad = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n".to_vec();
        assert!(take_answer(Proto::Http, &mut bad, true).is_err());
    }

    #[test]
    fn irc_registration_is_served_at_the_welcome() {
        let mut buf = b":srv NOTICE * :hi\r\n:srv 001 n1 :Welcome\r\n".to_vec();
        assert_eq!(take_answer(Proto::Irc, &mut buf, true), Ok(true));
        let mut buf = b":srv PONG srv :bench\r\n".to_vec();
        assert_eq!(take_answer(Proto::Irc, &mut buf, false), Ok(true));
        let mut buf = b"ERROR :Closing link\r\n".to_vec();
        assert!(take_answer(Proto::Irc, &mut buf, true).is_err());
    }
}
