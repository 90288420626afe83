//! The handoff acceptor: one thread owns the listeners, accepts, and hands each
//! connection to a shard through that shard's mailbox.
//!
//! Choosing a shard: round-robin (the next shard in order), or least connections
//! (fewest live connections, counting handoffs still in the mailbox). Shards at their
//! connection cap are skipped. When every shard is at its cap the acceptor stops
//! accepting — connections wait in the kernel backlog — and sleeps on its doorbell,
//! which a shard rings when it drops below its cap. A full mailbox is tried on the
//! next candidate; if every mailbox is full the connection is kept (one at most)
//! and retried shortly, never dropped.
//!
//! A failed accept (out of fds, above all) pauses accepting as [`AcceptPolicy`]
//! decides.
//!
//! Shutdown: stop watching the listeners, count in at the shutdown barrier, then —
//! once every participant stopped — drain the backlog and hand those connections
//! out too (the shards serve and close them), close the listeners, and tell the
//! shards the acceptor is done.
//!
//! Handover (an upgrade, [`crate::upgrade`]): stop watching, take what is queued
//! (handed out as usual), close this process's descriptors without shutting the
//! sockets down, count in as released, and go on handing out until shutdown.

use std::{
    collections::VecDeque,
    io,
    os::fd::AsRawFd,
    sync::Arc,
    time::{Duration, Instant},
};

use mio::{unix::SourceFd, Events, Interest, Poll, Token};
use socket2::Socket;
use tracing::{info, warn};

use super::{
    policy::{self, AcceptPolicy},
    reuseport::accept_now,
    Balance, Handed,
};
use crate::{metrics::Metrics, server::ShutdownHandle, shard::doorbell::Doorbell};

const DOORBELL: Token = Token(usize::MAX);
/// Accepts per listener per wakeup before checking the doorbell again.
const BUDGET: usize = 256;
/// How soon to retry a connection no mailbox had room for.
const FULL_RETRY: Duration = Duration::from_millis(1);

/// Hands a connection to a shard's mailbox; gives it back if the mailbox is full.
pub(crate) type Deliver = Box<dyn FnMut(usize, Handed) -> Result<(), Handed> + Send>;

/// Everything the acceptor thread needs.
pub(crate) struct Acceptor {
    /// Each socket with the listener (builder address) it accepts for.
    pub(crate) listeners: Vec<(usize, Arc<Socket>)>,
    pub(crate) balance: Balance,
    pub(crate) shards: usize,
    /// Each shard's connection cap (`None`: none), by shard id.
    pub(crate) max_conns: Vec<Option<usize>>,
    pub(crate) metrics: Metrics,
    pub(crate) doorbell: Doorbell,
    pub(crate) shutdown: ShutdownHandle,
    pub(crate) deliver: Deliver,
    pub(crate) cpu: Option<core_affinity::CoreId>,
}

struct State {
    acceptor: Acceptor,
    poll: Poll,
    /// Connections handed to each shard.
    handed: Vec<u64>,
    next: usize,
    held: VecDeque<Handed>,
    watching: bool,
    policy: AcceptPolicy,
    /// Shutting down: caps no longer apply (queued connections are served and
    /// closed at once).
    finishing: bool,
}

impl Acceptor {
    /// Runs the acceptor until shutdown completes. Errors are logged; the thread
    /// never takes the process down.
    pub(crate) fn run(self) {
        if let Some(cpu) = self.cpu {
            if !core_affinity::set_for_current(cpu) {
                warn!(cpu = cpu.id, "could not pin the handoff acceptor");
            }
        }
        let poll = match Poll::new() {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "handoff acceptor cannot create its poll; stopping the server");
                self.shutdown.shutdown();
                self.shutdown.stopped_listening();
                self.shutdown.acceptor_done();
                return;
            }
        };
        let shards = self.shards;
        let mut state = State {
            acceptor: self,
            poll,
            handed: vec![0; shards],
            next: 0,
            held: VecDeque::new(),
            watching: false,
            policy: AcceptPolicy::new(policy::Acceptor::Handoff),
            finishing: false,
        };
        state.serve();
    }
}

impl State {
    fn set_watching(&mut self, on: bool) {
        if on == self.watching {
            return;
        }
        self.watching = on;
        let registry = self.poll.registry();
        for (i, (_, l)) in self.acceptor.listeners.iter().enumerate() {
            let fd = l.as_raw_fd();
            let result = if on {
                registry.register(&mut SourceFd(&fd), Token(i), Interest::READABLE)
            } else {
                registry.deregister(&mut SourceFd(&fd))
            };
            if let Err(e) = result {
                warn!(error = %e, "handoff acceptor: listener (de)registration failed");
            }
        }
    }

    /// Live connections of `shard` plus those still in its mailbox: everything
    /// handed to it minus what it closed (one counter read, so never torn).
    fn load(&self, shard: usize) -> u64 {
        let closed = self.acceptor.metrics.inbound_closed(shard);
        self.handed[shard].saturating_sub(closed)
    }

    fn has_room(&self, shard: usize) -> bool {
        self.finishing
            || self
                .acceptor
                .max_conns
                .get(shard)
                .copied()
                .flatten()
                .is_none_or(|max| self.load(shard) < max as u64)
    }

    /// Shards to try, best first.
    fn candidates(&mut self) -> Vec<usize> {
        let n = self.acceptor.shards;
        let mut order: Vec<usize> = match self.acceptor.balance {
            Balance::RoundRobin => (0..n).map(|k| (self.next + k) % n).collect(),
            Balance::LeastConnections => {
                let mut v: Vec<(u64, usize)> = (0..n).map(|s| (self.load(s), s)).collect();
                v.sort_unstable();
                v.into_iter().map(|(_, s)| s).collect()
            }
        };
        order.retain(|&s| self.has_room(s));
        order
    }

    /// Hands `fd` to the best shard with room; gives it back if none took it.
    fn hand_off(&mut self, mut fd: Handed) -> Result<(), Handed> {
        for shard in self.candidates() {
            match (self.acceptor.deliver)(shard, fd) {
                Ok(()) => {
                    self.handed[shard] += 1;
                    if self.acceptor.balance == Balance::RoundRobin {
                        self.next = (shard + 1) % self.acceptor.shards;
                    }
                    return Ok(());
                }
                Err(back) => fd = back,
            }
        }
        Err(fd)
    }

    fn flush_held(&mut self) -> bool {
        while let Some(fd) = self.held.pop_front() {
            if let Err(fd) = self.hand_off(fd) {
                self.held.push_front(fd);
                return false;
            }
        }
        true
    }

    /// Accepts up to `BUDGET` per listener. Returns true if a listener may still
    /// have connections queued (budget spent, or stopped early): the listener is
    /// edge-triggered, so the caller must come back without waiting for an event.
    fn accept_some(&mut self) -> bool {
        let mut more = false;
        for i in 0..self.acceptor.listeners.len() {
            let mut drained = false;
            for _ in 0..BUDGET {
                if !self.held.is_empty() || self.candidates().is_empty() {
                    return true;
                }
                let (listener, socket) = &self.acceptor.listeners[i];
                match accept_now(socket) {
                    Ok(Some(fd)) => {
                        let fd = (*listener, fd);
                        self.policy.on_success();
                        if let Err(fd) = self.hand_off(fd) {
                            self.held.push_back(fd);
                        }
                    }
                    Ok(None) => {
                        drained = true;
                        break;
                    }
                    Err(e) => {
                        self.policy.on_error(&e, Instant::now());
                        return true;
                    }
                }
            }
            more |= !drained;
        }
        more
    }

    fn serve(&mut self) {
        let mut events = Events::with_capacity(64);
        let bell = self.acceptor.doorbell.raw_fd();
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut SourceFd(&bell), DOORBELL, Interest::READABLE)
        {
            warn!(error = %e, "handoff acceptor cannot watch its doorbell");
        }
        let mut released = false;
        while !self.acceptor.shutdown.is_requested() {
            if !released && self.acceptor.shutdown.release_requested() {
                released = true;
                self.release();
            }
            let now = Instant::now();
            let paused = self.policy.paused(now);
            let flushed = self.flush_held();
            let room = !self.candidates().is_empty();
            // (Re)registering reports a listener's current readiness; while watching,
            // `more` remembers a backlog the budget left behind.
            self.set_watching(flushed && room && !paused);
            let more = self.watching && self.accept_some();
            let paused = self.policy.paused(now);
            let timeout = if more && self.held.is_empty() && !paused {
                Some(Duration::ZERO)
            } else if !self.held.is_empty() {
                Some(FULL_RETRY)
            } else if let Some(t) = self.policy.resume_at() {
                Some(t.saturating_duration_since(now))
            } else if !room {
                // Shards ring when they drop below the cap; this is a safety net.
                Some(Duration::from_millis(100))
            } else if self.watching {
                // Edge-triggered: accept until EAGAIN happened above, so sleep.
                None
            } else {
                Some(Duration::from_millis(100))
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!(error = %e, "handoff acceptor poll failed; stopping the server");
                    self.acceptor.shutdown.shutdown();
                    break;
                }
            }
            for ev in events.iter() {
                if ev.token() == DOORBELL {
                    self.acceptor.doorbell.drain();
                }
            }
        }
        self.finish();
    }

    /// The listeners were handed over: stop watching, queue what is in the
    /// backlogs for the shards, close our descriptors (never shut them down: the
    /// new process accepts on the same sockets) and count in as released.
    fn release(&mut self) {
        self.set_watching(false);
        let listeners = std::mem::take(&mut self.acceptor.listeners);
        for (i, l) in &listeners {
            while let Ok(Some(fd)) = accept_now(l) {
                self.held.push_back((*i, fd));
            }
        }
        drop(listeners);
        info!(
            queued = self.held.len(),
            "handoff acceptor: listeners handed over; no longer accepting"
        );
        self.acceptor.shutdown.released_listeners();
    }

    /// Shutdown: stop, barrier, drain the backlog to the shards, close, report done.
    fn finish(&mut self) {
        self.finishing = true;
        self.set_watching(false);
        self.acceptor.shutdown.stopped_listening();
        // Bounded: a shard that died never counts in.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.acceptor.shutdown.all_stopped_listening() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        let listeners = std::mem::take(&mut self.acceptor.listeners);
        for (i, l) in &listeners {
            while let Ok(Some(fd)) = accept_now(l) {
                self.held.push_back((*i, fd));
            }
        }
        if !self.held.is_empty() {
            info!(
                conns = self.held.len(),
                "handing out connections queued at shutdown"
            );
        }
        // Shards are still running (they wait for `acceptor_done`), so mailboxes drain.
        while !self.flush_held() && Instant::now() < deadline {
            std::thread::sleep(FULL_RETRY);
        }
        if !self.held.is_empty() {
            warn!(
                conns = self.held.len(),
                "closing connections no shard could take at shutdown"
            );
        }
        drop(listeners);
        self.acceptor.shutdown.acceptor_done();
    }
}
