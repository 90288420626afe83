//! The admin thread: one mio poll loop over nonblocking sockets.
//!
//! Every connection is accepted at once and held in a slab with its own deadline
//! (kept ordered in a `BTreeSet`, so the loop sleeps until the earliest and
//! expires in order). Nothing a client does — connect and stay silent, dribble a
//! byte at a time, never read its response — holds up another: the loop never
//! blocks on a socket, a head deadline runs from accept and is not extended by
//! bytes that arrive, and at the connection cap a newcomer evicts the oldest
//! connection instead of waiting behind it (see [`Endpoint::evict`]). A flood of
//! new connections is taken [`ACCEPT_BATCH`] at a time between rounds of serving
//! the ones already open.

use std::{
    collections::BTreeSet,
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
/// Most connections accepted per loop turn, so a connect flood cannot keep the
/// loop from serving the connections it holds.
const ACCEPT_BATCH: usize = 64;
/// The loop wakes at least this often to check the stop flag, even if a wake-up
/// through the waker were lost.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// The admin thread's state.
pub(super) struct Endpoint {
    poll: Poll,
    listener: TcpListener,
    config: AdminConfig,
    metrics: Option<Metrics>,
    stop: Arc<AtomicBool>,
    conns: Slab<Conn>,
    /// (deadline, slab key) of every connection, earliest first.
    deadlines: BTreeSet<(Instant, usize)>,
    /// Accept order, for eviction.
    next_seq: u64,
    /// The listener may have connections waiting (edge-triggered: set by its
    /// event, cleared by `WouldBlock`).
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
            config,
            metrics,
            stop,
            conns: Slab::new(),
            deadlines: BTreeSet::new(),
            next_seq: 0,
            accept_ready: true,
            accept_retry_at: None,
        }
    }

    pub(super) fn run(mut self) {
        let mut events = Events::with_capacity(256);
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
        if self.accept_ready && self.accept_retry_at.is_none() {
            return Duration::ZERO; // more connections waiting past the batch
        }
        let now = Instant::now();
        let first = self.deadlines.first().map(|(at, _)| *at);
        first
            .into_iter()
            .chain(self.accept_retry_at)
            .map(|at| at.saturating_duration_since(now))
            .fold(MAX_SLEEP, Duration::min)
    }

    /// Takes up to [`ACCEPT_BATCH`] waiting connections, evicting one for each
    /// that finds the endpoint at its cap, and reads what each has already sent.
    fn accept(&mut self) {
        if let Some(at) = self.accept_retry_at {
            if Instant::now() < at {
                return;
            }
            self.accept_retry_at = None;
            self.accept_ready = true;
        }
        for _ in 0..ACCEPT_BATCH {
            if !self.accept_ready {
                return;
            }
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if self.conns.len() >= self.config.max_connections {
                        self.evict();
                    }
                    self.admit(stream, peer);
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

    fn admit(&mut self, mut stream: TcpStream, peer: std::net::SocketAddr) {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        // Registering a socket that is already readable reports it: no edge is lost
        // between accept and here.
        let registered = self.poll.registry().register(
            &mut stream,
            Token(key + FIRST_CONN),
            Interest::READABLE | Interest::WRITABLE,
        );
        if let Err(e) = registered {
            debug!(%peer, error = %e, "admin endpoint: register failed");
            return;
        }
        let deadline = Instant::now() + self.config.request_timeout;
        entry.insert(Conn::new(stream, deadline, self.next_seq));
        self.next_seq += 1;
        self.deadlines.insert((deadline, key));
        // A request sent with the connection is usually here already: serve it
        // now rather than after the rest of the batch.
        self.drive(key);
    }

    /// Makes room for one connection by closing the one that has waited longest
    /// to send a complete request; if every connection has sent one, the oldest
    /// lingering after its response, else the oldest still taking its response.
    /// So at the cap an idle or slowloris client is dropped for a newcomer, and a
    /// client being served is dropped only once `max_connections` newer ones
    /// have arrived while it was.
    fn evict(&mut self) {
        let victim = self
            .conns
            .iter()
            .min_by_key(|(_, c)| (c.phase.eviction_rank(), c.seq))
            .map(|(k, c)| (k, c.phase));
        let Some((key, phase)) = victim else {
            return;
        };
        debug!(
            ?phase,
            "admin endpoint: at the connection cap; evicting the oldest"
        );
        if phase == Phase::Reading {
            self.tell(key, 503, "Service Unavailable", b"too many connections\n");
        }
        self.close(key);
    }

    fn drive(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let before = conn.deadline;
        let open = conn.advance(&self.config, self.metrics.as_ref());
        let after = conn.deadline;
        if !open {
            // `close` removes the entry under the current deadline; the set may
            // still hold it under the one from before this step.
            self.deadlines.remove(&(before, key));
            self.close(key);
        } else if after != before {
            self.deadlines.remove(&(before, key));
            self.deadlines.insert((after, key));
        }
    }

    /// Closes every connection past its deadline; one still reading its head is
    /// told 408 first.
    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(&(at, key)) = self.deadlines.first() {
            if at > now {
                break;
            }
            // Taken off first, so an entry that no longer matches its connection
            // (closed, or re-armed under another deadline) can never stall the loop.
            self.deadlines.pop_first();
            let Some(c) = self.conns.get(key).filter(|c| c.deadline == at) else {
                continue;
            };
            if c.phase == Phase::Reading {
                self.tell(key, 408, "Request Timeout", b"request timeout\n");
            }
            self.close(key);
        }
    }

    /// A best-effort short response (one nonblocking write) before a close.
    fn tell(&mut self, key: usize, status: u16, reason: &str, body: &[u8]) {
        if let Some(c) = self.conns.get_mut(key) {
            let _ = c
                .stream
                .write(&response(status, reason, "text/plain", body));
        }
    }

    fn close(&mut self, key: usize) {
        if let Some(mut c) = self.conns.try_remove(key) {
            self.deadlines.remove(&(c.deadline, key));
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

impl Phase {
    /// Lower is evicted first.
    fn eviction_rank(self) -> u8 {
        match self {
            Phase::Reading => 0,
            Phase::Draining => 1,
            Phase::Writing => 2,
        }
    }
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
    /// Accept order.
    seq: u64,
}

impl Conn {
    fn new(stream: TcpStream, deadline: Instant, seq: u64) -> Conn {
        Conn {
            stream,
            head: Vec::new(),
            out: Vec::new(),
            sent: 0,
            drained: 0,
            phase: Phase::Reading,
            deadline,
            seq,
        }
    }

    /// Makes what progress the socket allows; false when the connection is done.
    fn advance(&mut self, config: &AdminConfig, metrics: Option<&Metrics>) -> bool {
        loop {
            match self.phase {
                Phase::Reading => match self.read_head() {
                    Some(true) => {
                        self.out = answer(&self.head, config, metrics);
                        self.head = Vec::new();
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
                    self.out = Vec::new();
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
