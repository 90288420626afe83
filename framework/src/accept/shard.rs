//! The accepting side of one shard: which listeners it watches, and when it stops
//! watching them (connection cap reached, out of fds, shutting down, listeners
//! handed over to a new process).
//!
//! A shard may hold several sockets for one listener (a new process that inherited
//! more SO_REUSEPORT sockets per address than it has shards, see
//! [`crate::upgrade`]), and one socket may be shared by several shards (fewer
//! inherited than shards). Each entry therefore names its listener (the index into
//! the builder's addresses); the driver knows entries by position.

use std::{io, os::fd::AsRawFd, sync::Arc, time::Instant};

use socket2::Socket;
use tracing::warn;

use super::{
    exclusive::ExclusiveWatch,
    policy::{AcceptPolicy, Acceptor},
    reuseport::accept_now,
    Handed,
};
use crate::shard::driver::Driver;

/// One listening socket as a shard holds it.
#[derive(Debug)]
pub(crate) struct Bound {
    /// Index of the listener (the builder's address) it accepts for.
    pub(crate) listener: usize,
    pub(crate) socket: Arc<Socket>,
    /// Bound by this process and held by this shard alone: at shutdown it may be
    /// shut down (leaving its SO_REUSEPORT group at once). Never for a socket
    /// that is shared, inherited, or was handed over: shutting a listening socket
    /// down stops it for every process and shard that holds it.
    pub(crate) own: bool,
}

/// What a shard accepts from.
#[derive(Debug)]
pub(crate) enum Listening {
    /// SO_REUSEPORT listeners, accepted by the driver.
    ReusePort(Vec<Bound>),
    /// Shared listeners, each with this shard's private EPOLLEXCLUSIVE watch.
    Exclusive(Vec<(Bound, Option<ExclusiveWatch>)>),
    /// Connections arrive from the acceptor thread through the mailbox.
    Handoff,
}

/// A shard's accept state.
#[derive(Debug)]
pub(crate) struct ShardAccept {
    listening: Listening,
    /// The listener of each driver entry (entry = position in `listening`); kept
    /// after the sockets are gone, for completions that arrive late.
    entries: Vec<usize>,
    shard: usize,
    /// Registered with the driver right now.
    active: bool,
    at_cap: bool,
    stopped: bool,
    /// Paused after a failed accept, by whichever listener.
    policy: AcceptPolicy,
    /// Exclusive entries whose backlog may still hold connections (budget ran out).
    pending: Vec<usize>,
}

impl ShardAccept {
    pub(crate) fn new(listening: Listening, shard: usize) -> ShardAccept {
        let entries = match &listening {
            Listening::ReusePort(list) => list.iter().map(|b| b.listener).collect(),
            Listening::Exclusive(list) => list.iter().map(|(b, _)| b.listener).collect(),
            Listening::Handoff => Vec::new(),
        };
        ShardAccept {
            listening,
            entries,
            shard,
            active: false,
            at_cap: false,
            stopped: false,
            policy: AcceptPolicy::new(Acceptor::Shard(shard)),
            pending: Vec::new(),
        }
    }

    /// The listener that driver entry `entry` accepts for.
    pub(crate) fn listener_of(&self, entry: usize) -> usize {
        self.entries.get(entry).copied().unwrap_or(usize::MAX)
    }

    /// Creates the private epoll fds (exclusive mode) and starts watching.
    pub(crate) fn start(&mut self, driver: &mut dyn Driver) -> io::Result<()> {
        if let Listening::Exclusive(list) = &mut self.listening {
            for (bound, watch) in list.iter_mut() {
                *watch = Some(ExclusiveWatch::new(bound.socket.as_raw_fd())?);
            }
        }
        self.update(driver, Instant::now())
    }

    fn activate(&mut self, driver: &mut dyn Driver) -> io::Result<()> {
        match &mut self.listening {
            Listening::ReusePort(list) => {
                for (i, b) in list.iter().enumerate() {
                    driver.add_listener(i, b.socket.as_raw_fd())?;
                }
            }
            Listening::Exclusive(list) => {
                for (i, (_, watch)) in list.iter_mut().enumerate() {
                    if let Some(w) = watch {
                        w.register()?;
                        driver.watch_readable(i as u32, w.epoll_fd())?;
                        // Connections may have queued while we were not watching.
                        if !self.pending.contains(&i) {
                            self.pending.push(i);
                        }
                    }
                }
            }
            Listening::Handoff => {}
        }
        Ok(())
    }

    fn deactivate(&mut self, driver: &mut dyn Driver) {
        match &mut self.listening {
            Listening::ReusePort(list) => {
                for (i, b) in list.iter().enumerate() {
                    driver.remove_listener(i, b.socket.as_raw_fd());
                }
            }
            Listening::Exclusive(list) => {
                for (i, (_, watch)) in list.iter_mut().enumerate() {
                    if let Some(w) = watch {
                        driver.unwatch_readable(i as u32);
                        w.deregister();
                    }
                }
                self.pending.clear();
            }
            Listening::Handoff => {}
        }
    }

    /// Watches or stops watching to match the cap, a pause after a failed accept,
    /// and shutdown. A pause stops every listener (a driver stops accepting on one
    /// whose accept failed; re-adding it resumes it).
    pub(crate) fn update(&mut self, driver: &mut dyn Driver, now: Instant) -> io::Result<()> {
        let paused = self.policy.paused(now);
        let want = !self.stopped && !self.at_cap && !paused;
        if want != self.active {
            self.active = want;
            if want {
                self.activate(driver)?;
            } else {
                self.deactivate(driver);
            }
        }
        Ok(())
    }

    /// The shard reached (or left) its connection cap.
    pub(crate) fn set_at_cap(&mut self, at_cap: bool) {
        self.at_cap = at_cap;
    }

    /// Whether accepts are pending that need a turn without blocking.
    pub(crate) fn has_pending(&self) -> bool {
        self.active && !self.pending.is_empty()
    }

    /// When the loop must wake to end a pause.
    pub(crate) fn next_wakeup(&self) -> Option<Instant> {
        self.policy.resume_at()
    }

    /// An exclusive watch fired.
    pub(crate) fn on_readable(&mut self, token: u32) {
        let i = token as usize;
        if self.active && !self.pending.contains(&i) {
            self.pending.push(i);
        }
    }

    /// Accepts from exclusive listeners with pending connections, at most `budget`.
    pub(crate) fn accept_pending(&mut self, budget: usize, out: &mut Vec<Handed>) {
        let Listening::Exclusive(list) = &self.listening else {
            self.pending.clear();
            return;
        };
        let mut left = budget;
        let mut still = Vec::new();
        let mut error = None;
        for &i in &self.pending {
            let Some((bound, Some(watch))) = list.get(i) else {
                continue;
            };
            loop {
                if left == 0 {
                    still.push(i);
                    break;
                }
                match accept_now(&bound.socket) {
                    Ok(Some(fd)) => {
                        left -= 1;
                        out.push((bound.listener, fd));
                    }
                    Ok(None) => {
                        watch.reset();
                        break;
                    }
                    Err(e) => {
                        error = Some(e);
                        break;
                    }
                }
            }
        }
        self.pending = still;
        if let Some(e) = error {
            self.on_error(&e, Instant::now());
        }
        if !out.is_empty() {
            self.on_success();
        }
    }

    /// An accept failed: the policy pauses accepting (`update` then stops watching).
    pub(crate) fn on_error(&mut self, err: &io::Error, now: Instant) {
        self.policy.on_error(err, now);
    }

    /// An accept succeeded: ends a failing episode.
    pub(crate) fn on_success(&mut self) {
        self.policy.on_success();
    }

    /// Shutdown, phase 1: stop watching, keep the listeners open.
    pub(crate) fn stop(&mut self, driver: &mut dyn Driver) {
        self.stopped = true;
        let _ = self.update(driver, Instant::now());
    }

    /// Takes everything queued in the backlogs (`out`) and lets go of the
    /// sockets; `shut_own`: shut down the sockets this shard alone bound.
    fn take_and_close(&mut self, out: &mut Vec<Handed>, shut_own: bool) {
        let listening = std::mem::replace(&mut self.listening, Listening::Handoff);
        let shard = self.shard;
        let take_all = |b: &Bound, out: &mut Vec<Handed>| loop {
            match accept_now(&b.socket) {
                Ok(Some(fd)) => out.push((b.listener, fd)),
                Ok(None) => break,
                Err(e) => {
                    warn!(shard, error = %e, "accept failed while draining a backlog");
                    break;
                }
            }
        };
        match listening {
            Listening::ReusePort(list) => {
                list.iter().for_each(|b| take_all(b, out));
                // Leave the SO_REUSEPORT group now. Closing alone may not: a
                // cancelled io_uring accept can hold the socket open a while
                // longer, and meanwhile the kernel keeps handing it connections that
                // are reset when it finally closes — the other members of the group
                // (a process that joined it for an upgrade) should get them.
                if shut_own {
                    for b in list.iter().filter(|b| b.own) {
                        let _ = b.socket.shutdown(std::net::Shutdown::Read);
                    }
                }
            }
            Listening::Exclusive(list) => list.iter().for_each(|(b, _)| take_all(b, out)),
            Listening::Handoff => {}
        }
    }

    /// Shutdown, phase 2 (after every participant stopped): take everything queued
    /// in the backlog, then close the listeners.
    pub(crate) fn drain_and_close(&mut self, out: &mut Vec<Handed>) {
        self.take_and_close(out, true);
    }

    /// The listeners were handed over to a new process, which accepts on the very
    /// same sockets: stop watching first (so a wakeup meant for a watcher goes to
    /// the new process's), then take what is already queued (`out`, to be served
    /// here) and close this shard's descriptors. Never shuts a socket down: that
    /// would stop it in the new process too. Later accept completions (io_uring
    /// requests still in flight) are still served.
    pub(crate) fn release(&mut self, driver: &mut dyn Driver, out: &mut Vec<Handed>) {
        self.stop(driver);
        self.take_and_close(out, false);
    }
}
