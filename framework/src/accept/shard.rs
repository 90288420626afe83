//! The accepting side of one shard: which listeners it watches, and when it stops
//! watching them (connection cap reached, out of fds, shutting down).

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

/// What a shard accepts from.
#[derive(Debug)]
pub(crate) enum Listening {
    /// Its own SO_REUSEPORT listeners, accepted by the driver.
    ReusePort(Vec<Socket>),
    /// Shared listeners, each with this shard's private EPOLLEXCLUSIVE watch.
    Exclusive(Vec<(Arc<Socket>, Option<ExclusiveWatch>)>),
    /// Connections arrive from the acceptor thread through the mailbox.
    Handoff,
}

/// A shard's accept state.
#[derive(Debug)]
pub(crate) struct ShardAccept {
    listening: Listening,
    shard: usize,
    /// Registered with the driver right now.
    active: bool,
    at_cap: bool,
    stopped: bool,
    /// Paused after a failed accept, by whichever listener.
    policy: AcceptPolicy,
    /// Exclusive listeners whose backlog may still hold connections (budget ran out).
    pending: Vec<usize>,
}

impl ShardAccept {
    pub(crate) fn new(listening: Listening, shard: usize) -> ShardAccept {
        ShardAccept {
            listening,
            shard,
            active: false,
            at_cap: false,
            stopped: false,
            policy: AcceptPolicy::new(Acceptor::Shard(shard)),
            pending: Vec::new(),
        }
    }

    /// Creates the private epoll fds (exclusive mode) and starts watching.
    pub(crate) fn start(&mut self, driver: &mut dyn Driver) -> io::Result<()> {
        if let Listening::Exclusive(list) = &mut self.listening {
            for (listener, watch) in list.iter_mut() {
                *watch = Some(ExclusiveWatch::new(listener.as_raw_fd())?);
            }
        }
        self.update(driver, Instant::now())
    }

    fn activate(&mut self, driver: &mut dyn Driver) -> io::Result<()> {
        match &mut self.listening {
            Listening::ReusePort(list) => {
                for (i, l) in list.iter().enumerate() {
                    driver.add_listener(i, l.as_raw_fd())?;
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
                for (i, l) in list.iter().enumerate() {
                    driver.remove_listener(i, l.as_raw_fd());
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
            let Some((listener, Some(watch))) = list.get(i) else {
                continue;
            };
            loop {
                if left == 0 {
                    still.push(i);
                    break;
                }
                match accept_now(listener) {
                    Ok(Some(fd)) => {
                        left -= 1;
                        out.push((i, fd));
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

    /// Shutdown, phase 2 (after every participant stopped): take everything queued
    /// in the backlog, then close the listeners.
    pub(crate) fn drain_and_close(&mut self, out: &mut Vec<Handed>) {
        let listening = std::mem::replace(&mut self.listening, Listening::Handoff);
        let mut take_all = |(i, l): (usize, &Socket)| loop {
            match accept_now(l) {
                Ok(Some(fd)) => out.push((i, fd)),
                Ok(None) => break,
                Err(e) => {
                    warn!(shard = self.shard, error = %e, "accept failed while draining the backlog at shutdown");
                    break;
                }
            }
        };
        match listening {
            Listening::ReusePort(list) => {
                list.iter().enumerate().for_each(&mut take_all);
                // Leave the SO_REUSEPORT group now. Closing alone may not: a
                // cancelled io_uring accept can hold the socket open a while
                // longer, and meanwhile the kernel keeps handing it connections that
                // are reset when it finally closes — the other members of the group
                // (a process that joined it for an upgrade) should get them.
                for l in &list {
                    let _ = l.shutdown(std::net::Shutdown::Read);
                }
            }
            Listening::Exclusive(list) => list
                .iter()
                .enumerate()
                .for_each(|(i, (l, _))| take_all((i, l))),
            Listening::Handoff => {}
        }
    }
}
