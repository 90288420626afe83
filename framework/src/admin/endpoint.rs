//! The admin thread: one mio poll loop over nonblocking sockets.

use std::{
    io::{self, Read, Write},
    net::Shutdown,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use mio::{
    net::{TcpListener, TcpStream},
    Events, Interest, Poll, Token,
};
use slab::Slab;
use tracing::{debug, warn};

use super::{
    http::{answer, head_end, response},
    AdminConfig, MAX_HEAD,
};
use crate::metrics::Metrics;

pub(super) const LISTENER: Token = Token(0);
pub(super) const WAKER: Token = Token(1);
const FIRST_CONN: usize = 2;
/// How long a connection whose response is written may take to send its EOF:
/// closing a socket with unread input resets it, which can destroy the response
/// before the client reads it, so the rest of its input is read and dropped first.
const LINGER: Duration = Duration::from_secs(2);
/// Most input read and dropped while lingering.
const DRAIN_LIMIT: usize = 64 << 10;
/// Back-off after an accept error other than "no more connections" (e.g. EMFILE).
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// The loop wakes at least this often to check the stop flag, even if a wake-up
/// through the waker were lost.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// The admin thread's state.
pub(super) struct Endpoint {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    config: AdminConfig,
    metrics: Option<Metrics>,
    stop: Arc<AtomicBool>,
    /// The listener may have connections waiting (edge-triggered: set by its
    /// event, cleared by `WouldBlock`), and we stopped taking them at the cap.
    accept_ready: bool,
    accept_retry_at: Option<Instant>,
}

impl Endpoint {
    pub(super) fn new(
        poll: Poll,
        listener: TcpListener,
        config: AdminConfig,
        metrics: Option<Metrics>,
        stop: Arc<AtomicBool>,
    ) -> Endpoint {
        Endpoint {
            poll,
            listener,
            conns: Slab::new(),
            config,
            metrics,
            stop,
            accept_ready: true,
            accept_retry_at: None,
        }
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(64);
        while !self.stop.load(Ordering::SeqCst) {
            let timeout = self.next_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                warn!(error = %e, "admin endpoint: poll failed; the endpoint stops");
                return;
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_ready = true,
                    WAKER => {}
                    Token(t) => self.drive(t - FIRST_CONN),
                }
            }
            self.expire();
            self.accept();
        }
        debug!("admin endpoint stopped");
    }

    fn next_timeout(&self) -> Duration {
        let now = Instant::now();
        let conns = self.conns.iter().map(|(_, c)| c.deadline);
        conns
            .chain(self.accept_retry_at)
            .map(|at| at.saturating_duration_since(now))
            .fold(MAX_SLEEP, Duration::min)
    }

    fn accept(&mut self) {
        if let Some(at) = self.accept_retry_at {
            if Instant::now() < at {
                return;
            }
            self.accept_retry_at = None;
            self.accept_ready = true;
        }
        while self.accept_ready && self.conns.len() < self.config.max_connections {
            match self.listener.accept() {
                Ok((mut stream, peer)) => {
                    let entry = self.conns.vacant_entry();
                    let token = Token(entry.key() + FIRST_CONN);
                    // Registering a socket that is already readable reports it: no
                    // edge is lost between accept and here.
                    let registered = self.poll.registry().register(
                        &mut stream,
                        token,
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    match registered {
                        Ok(()) => {
                            let deadline = Instant::now() + self.config.request_timeout;
                            entry.insert(Conn::new(stream, deadline));
                        }
                        Err(e) => debug!(%peer, error = %e, "admin endpoint: register failed"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.accept_ready = false,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted
                            | io::ErrorKind::ConnectionAborted
                            | io::ErrorKind::ConnectionReset
                    ) => {}
                Err(e) => {
                    warn!(error = %e, "admin endpoint: accept failed; retrying shortly");
                    self.accept_retry_at = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
            }
        }
    }

    fn drive(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !conn.advance(&self.config, self.metrics.as_ref()) {
            self.close(key);
        }
    }

    /// Closes every connection past its deadline; one still reading its head is
    /// told 408 first (best effort: one nonblocking write).
    fn expire(&mut self) {
        let now = Instant::now();
        let late: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(k, _)| k)
            .collect();
        for key in late {
            if let Some(c) = self.conns.get_mut(key) {
                if c.phase == Phase::Reading {
                    let resp = response(408, "Request Timeout", "text/plain", b"request timeout\n");
                    let _ = c.stream.write(&resp);
                }
            }
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut c) = self.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut c.stream);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading the request head.
    Reading,
    /// Writing the response.
    Writing,
    /// Response written and write side shut: reading and dropping input until EOF.
    Draining,
}

/// One client connection.
struct Conn {
    stream: TcpStream,
    head: Vec<u8>,
    out: Vec<u8>,
    sent: usize,
    drained: usize,
    phase: Phase,
    deadline: Instant,
}

impl Conn {
    fn new(stream: TcpStream, deadline: Instant) -> Conn {
        Conn {
            stream,
            head: Vec::new(),
            out: Vec::new(),
            sent: 0,
            drained: 0,
            phase: Phase::Reading,
            deadline,
        }
    }

    /// Makes what progress the socket allows; false when the connection is done.
    fn advance(&mut self, config: &AdminConfig, metrics: Option<&Metrics>) -> bool {
        loop {
            match self.phase {
                Phase::Reading => match self.read_head() {
                    Some(true) => {
                        self.out = answer(&self.head, config, metrics);
                        self.phase = Phase::Writing;
                        self.deadline = Instant::now() + config.request_timeout;
                    }
                    Some(false) => return true,
                    None => return false,
                },
                Phase::Writing => {
                    while self.sent < self.out.len() {
                        match self.stream.write(&self.out[self.sent..]) {
                            Ok(0) => return false,
                            Ok(n) => self.sent += n,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => return false,
                        }
                    }
                    let _ = self.stream.shutdown(Shutdown::Write);
                    self.phase = Phase::Draining;
                    self.deadline = Instant::now() + LINGER;
                }
                Phase::Draining => {
                    let mut scratch = [0u8; 4096];
                    loop {
                        match self.stream.read(&mut scratch) {
                            Ok(0) => return false,
                            Ok(n) => {
                                self.drained += n;
                                if self.drained > DRAIN_LIMIT {
                                    return false;
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => return false,
                        }
                    }
                }
            }
        }
    }

    /// Reads what is there: `Some(true)` once the head is complete (or too long
    /// to be), `Some(false)` to wait for more, `None` if the client left or failed.
    fn read_head(&mut self) -> Option<bool> {
        let mut chunk = [0u8; 2048];
        loop {
            let room = MAX_HEAD - self.head.len();
            if room == 0 {
                return Some(true);
            }
            let want = room.min(chunk.len());
            match self.stream.read(&mut chunk[..want]) {
                Ok(0) => return None,
                Ok(n) => {
                    let from = self.head.len();
                    self.head.extend_from_slice(&chunk[..n]);
                    if head_end(&self.head, from).is_some() {
                        return Some(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }
}
