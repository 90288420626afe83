//! One shard: a pinned thread that owns a driver, a connection slab, a timer wheel,
//! its listeners and one handler, and runs the loop that ties them together.
//!
//! Each turn: reap completions and dispatch them to the handler -> apply what the
//! handler asked for (registrations, connects, read pauses, closes and their
//! `on_close`) -> fire due timers -> flush outbound queues (one vectored send per
//! connection) -> submit and wait, for at most the time to the next timer.
//!
//! Nothing here says which backend runs: that is the driver's business.

pub(crate) mod conn;
pub(crate) mod core;
mod dispatch;
pub(crate) use dispatch::panic_message as panic_text;
pub(crate) mod doorbell;
pub(crate) mod driver;
pub(crate) mod mailbox;
pub(crate) mod relay;
mod setup;
pub(crate) mod timer;

use std::{
    any::Any,
    os::fd::AsRawFd,
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use socket2::Socket;
use tracing::{debug, error, info, warn};

use self::{
    conn::Phase,
    core::{Core, Notice, TimerPayload},
    dispatch::{accepted, dispatch, guarded, present, with_state, Listeners},
    doorbell::Doorbell,
    driver::Driver,
    mailbox::{Full, Mailboxes},
    timer::TimerKey,
};
use crate::{
    accept::{
        shard::{Listening, ShardAccept},
        Handed,
    },
    error::Error,
    handler::{AppState, CloseReason, ConnId, Handler, Origin, ShardId, TimerId},
    metrics::Metrics,
    numa::Topology,
    server::{Backend, ServerBuilder, ShutdownHandle},
};

/// What travels through the mailboxes: the application's messages, and connections
/// handed to a shard by the handoff acceptor (with the index of their listener).
#[derive(Debug)]
pub(crate) enum Envelope<M> {
    User(M),
    Conn(Handed),
}

/// A shard's end of the mailboxes.
pub(crate) struct Mail<M> {
    pub(crate) boxes: Arc<Mailboxes<Envelope<M>>>,
    /// This shard's index.
    pub(crate) me: usize,
    /// Number of shards (the mailboxes may have one more participant: the acceptor).
    pub(crate) shards: usize,
}

impl<M> Mail<M> {
    pub(crate) fn post(&self, to: usize, msg: M) -> Result<(), Full<M>> {
        match self.boxes.post(self.me, to, Envelope::User(msg)) {
            Ok(()) => Ok(()),
            Err(Full(Envelope::User(m))) => Err(Full(m)),
            Err(Full(Envelope::Conn(_))) => {
                unreachable!("a full mailbox returns the message it was given")
            }
        }
    }
}

/// Everything a shard thread starts from.
pub(crate) struct ShardConfig {
    pub(crate) id: ShardId,
    pub(crate) shards: usize,
    pub(crate) backend: Backend,
    pub(crate) fallback_allowed: bool,
    pub(crate) cpu: Option<core_affinity::CoreId>,
    /// The NUMA node (logical index) this shard's memory is bound to.
    pub(crate) node: usize,
    pub(crate) topology: Arc<Topology>,
    pub(crate) builder: ServerBuilder,
    pub(crate) listening: Listening,
    /// Every listener's bound address and the application's value, builder order.
    pub(crate) listeners: Arc<[(std::net::SocketAddr, Arc<dyn Any + Send + Sync>)]>,
    pub(crate) doorbell: Doorbell,
    pub(crate) shutdown: ShutdownHandle,
    pub(crate) metrics: Metrics,
    pub(crate) ready: mpsc::Sender<Result<(), Error>>,
    /// The mailboxes (type-erased: `Mailboxes<Envelope<H::Msg>>`).
    pub(crate) mailboxes: Arc<dyn Any + Send + Sync>,
    /// The handoff acceptor's doorbell, rung when this shard drops below its cap.
    pub(crate) acceptor_bell: Option<Doorbell>,
}

/// Runs one shard on the current thread until shutdown. `make` builds the handler
/// here, on the shard's own thread.
pub(crate) fn run<H: Handler>(
    cfg: ShardConfig,
    make: impl FnOnce(ShardId) -> H,
) -> Result<(), Error> {
    let id = cfg.id;
    let ready = cfg.ready.clone();
    let shutdown = cfg.shutdown.clone();
    let mut shard = match Shard::start(cfg, make) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(Error::ShardStart {
                shard: id.0,
                source: std::io::Error::other(e.to_string()),
            }));
            return Err(e);
        }
    };
    // `on_start` runs before the shard reports ready, so `Server::start` returning
    // means every shard's `on_start` is done.
    shard.begin();
    let _ = ready.send(Ok(()));
    drop(ready);
    let result = shard.run();
    if let Err(e) = &result {
        error!(shard = id.0, error = %e, "shard failed; stopping the server");
        shutdown.shutdown();
    }
    result
}

/// Gives a drained work list its buffer back, unless callbacks refilled the slot
/// meanwhile: the per-turn lists then allocate once, not every turn.
fn recycle<T>(slot: &mut Vec<T>, mut list: Vec<T>) {
    if slot.is_empty() {
        list.clear();
        *slot = list;
    }
}

/// Connections accepted from exclusive listeners per loop turn.
const ACCEPT_BUDGET: usize = 64;
/// With a flush delay, output this large is written at once.
const FLUSH_EARLY_BYTES: usize = 16 << 10;

/// Messages taken from the mailboxes per loop turn.
const MAIL_BUDGET: usize = 256;

struct Shard<H: Handler> {
    core: Core,
    mail: Mail<H::Msg>,
    acceptor_bell: Option<Doorbell>,
    was_at_cap: bool,
    ready: Vec<usize>,
    driver: Box<dyn Driver>,
    handler: H,
    /// Per-connection states and timer payloads, typed by the handler.
    app: AppState<H>,
    /// The listeners in the builder's order, with the application's values.
    listeners: Listeners<H::Listener>,
    accept: ShardAccept,
    max_conns: Option<usize>,
    /// Shutdown progress: listeners drained and closed (phase 2 done).
    listeners_closed: bool,
    accepted_fds: Vec<Handed>,
    /// Kept so the eventfd the driver watches outlives the driver.
    _doorbell: Doorbell,
    shutdown: ShutdownHandle,
    shutdown_timeout: Duration,
    /// When shutting down: the moment to stop waiting for queues to flush.
    shutdown_deadline: Option<Instant>,
    fired: Vec<(TimerKey, TimerPayload)>,
}

impl<H: Handler> Shard<H> {
    /// The handler's `on_start`, and what it asked for.
    fn begin(&mut self) {
        let Shard {
            core,
            handler,
            mail,
            app,
            ..
        } = self;
        guarded(core, mail, app, None, |ctx| handler.on_start(ctx));
        self.apply();
    }

    fn run(mut self) -> Result<(), Error> {
        let shard = self.core.shard.0;
        loop {
            self.core.metrics().loop_turns.add(1);
            {
                let Shard {
                    core,
                    driver,
                    handler,
                    accept,
                    mail,
                    app,
                    listeners,
                    ..
                } = &mut self;
                driver.reap(&mut |c| dispatch(core, mail, app, handler, listeners, accept, c));
            }
            self.apply();
            self.accept_exclusive();
            let mail_taken = self.drain_mail();
            self.fire_timers();
            if self.shutdown_deadline.is_none() && self.shutdown.is_requested() {
                self.begin_shutdown();
            }
            if let Some(deadline) = self.shutdown_deadline {
                // Past the deadline nothing is waited for any more: not the barrier
                // (a participant that died never counts in), not the acceptor.
                let overdue = Instant::now() >= deadline;
                if !self.listeners_closed && (self.shutdown.all_stopped_listening() || overdue) {
                    self.drain_listeners();
                }
                if overdue {
                    for id in self.core.ids() {
                        self.core.close_now(id, CloseReason::Shutdown);
                    }
                    self.apply();
                }
                if self.listeners_closed
                    && self.core.conns.is_empty()
                    && mail_taken == 0
                    && (self.shutdown.acceptor_finished() || overdue)
                {
                    break;
                }
            }
            self.update_accepting()
                .map_err(|source| Error::ShardIo { shard, source })?;
            self.flush();
            let now = Instant::now();
            let wake = [
                self.core.timers.next_deadline(),
                self.shutdown_deadline,
                self.accept.next_wakeup(),
                self.core.flush_due,
            ]
            .into_iter()
            .flatten()
            .min();
            let mut timeout = wake.map(|t| t.saturating_duration_since(now));
            // While shutting down, a turn that took mail may have closed the last
            // connection: take another turn at once to see if the shard can stop.
            let shutting_down = self.shutdown_deadline.is_some();
            if self.accept.has_pending()
                || mail_taken == MAIL_BUDGET
                || (shutting_down && mail_taken > 0)
            {
                timeout = Some(Duration::ZERO);
            }
            // Announce sleep to the mailboxes only when really about to block; a
            // message or room notice that raced in means: don't block.
            let blocking = timeout != Some(Duration::ZERO);
            if blocking && !self.mail.boxes.prepare_sleep(self.mail.me) {
                timeout = Some(Duration::ZERO);
            }
            let waited = self.driver.wait(timeout);
            if blocking {
                self.mail.boxes.woke(self.mail.me);
            }
            let syscalls = waited.map_err(|source| Error::ShardIo { shard, source })?;
            self.core.metrics().syscalls.add(syscalls);
        }
        info!(shard, "shard stopped");
        Ok(())
    }

    /// Takes up to `MAIL_BUDGET` messages from the mailboxes (application messages
    /// and handed-off connections), then tells the handler which full mailboxes it
    /// may post to again. Returns how many messages were taken.
    fn drain_mail(&mut self) -> usize {
        let Shard {
            core,
            handler,
            mail,
            ready,
            app,
            listeners,
            ..
        } = self;
        let taken = mail
            .boxes
            .drain(mail.me, MAIL_BUDGET, |from, env| match env {
                Envelope::User(m) => {
                    let origin = if from < mail.shards {
                        Origin::Shard(ShardId(from))
                    } else {
                        Origin::Remote
                    };
                    guarded(core, mail, app, None, |ctx| {
                        handler.on_message(ctx, origin, m)
                    });
                }
                Envelope::Conn((listener, fd)) => {
                    let s = Socket::from(fd);
                    accepted(core, mail, app, handler, listeners, listener, s, false)
                }
            });
        ready.clear();
        mail.boxes.take_ready(mail.me, ready);
        for &to in ready.iter().filter(|&&to| to < mail.shards) {
            guarded(core, mail, app, None, |ctx| {
                handler.on_mailbox_ready(ctx, ShardId(to))
            });
        }
        if taken > 0 || !ready.is_empty() {
            self.apply();
        }
        taken
    }

    /// Applies what callbacks asked for, until nothing more is pending (callbacks
    /// made here, like `on_close`, may ask for more).
    fn apply(&mut self) {
        for _round in 0..64 {
            let mut did = false;
            let mut list = std::mem::take(&mut self.core.notices);
            for notice in list.drain(..) {
                did = true;
                self.notify(notice);
            }
            recycle(&mut self.core.notices, list);
            let mut list = std::mem::take(&mut self.core.to_release);
            for id in list.drain(..) {
                did = true;
                self.release(id);
            }
            recycle(&mut self.core.to_release, list);
            let mut list = std::mem::take(&mut self.core.to_register);
            for id in list.drain(..) {
                did = true;
                let Some(conn) = self.core.get_mut(id) else {
                    continue;
                };
                let fd = conn.socket.as_raw_fd();
                match self.driver.add_conn(id, fd) {
                    Ok(()) => {
                        conn.registered = true;
                        self.core.read_changes.push(id);
                    }
                    Err(e) => {
                        warn!(conn = %id, error = %e, "cannot register connection");
                        self.core.close_now(id, CloseReason::Io(e.kind()));
                    }
                }
            }
            recycle(&mut self.core.to_register, list);
            let mut list = std::mem::take(&mut self.core.to_connect);
            for (id, addr) in list.drain(..) {
                did = true;
                let Some(conn) = self.core.get_mut(id) else {
                    continue;
                };
                let fd = conn.socket.as_raw_fd();
                match self.driver.add_conn(id, fd) {
                    Ok(()) => {
                        conn.registered = true;
                        self.driver.connect(id, fd, addr);
                    }
                    Err(e) => self.fail_connect(id, e),
                }
            }
            recycle(&mut self.core.to_connect, list);
            let mut list = std::mem::take(&mut self.core.read_changes);
            for id in list.drain(..) {
                let Some(conn) = self.core.get_mut(id) else {
                    continue;
                };
                let want = conn.registered
                    && !conn.eof
                    && match conn.phase {
                        Phase::Connecting => false,
                        // A relay source is read by fills only.
                        Phase::Open => conn.reading && conn.relay_out.is_none(),
                        // Read (and discard) until the peer's EOF.
                        Phase::Closing(_) => true,
                    };
                if want != conn.driver_reading {
                    conn.driver_reading = want;
                    let fd = conn.socket.as_raw_fd();
                    self.driver.set_reading(id, fd, want);
                }
            }
            recycle(&mut self.core.read_changes, list);
            if !did {
                return;
            }
        }
        debug!("apply did not settle in 64 rounds; continuing next turn");
    }

    fn notify(&mut self, notice: Notice) {
        let Shard {
            core,
            handler,
            mail,
            app,
            ..
        } = self;
        match notice {
            Notice::Backpressure(id) => {
                if core.get(id).is_some_and(|c| !c.is_closing()) {
                    with_state(core, mail, app, handler, id, |h, ctx, st| {
                        h.on_backpressure(ctx, id, st)
                    });
                }
            }
            Notice::Drained(id) => {
                if core.get(id).is_some_and(|c| !c.is_closing()) {
                    with_state(core, mail, app, handler, id, |h, ctx, st| {
                        h.on_drained(ctx, id, st)
                    });
                }
            }
            Notice::Eof(id) => {
                let Some(conn) = core.get_mut(id).filter(|c| !c.is_closing()) else {
                    return;
                };
                if conn.unpresented {
                    // Bytes that came in while reading was paused have not been
                    // offered yet: the end of the stream waits for them (resume).
                    conn.eof_deferred = true;
                    return;
                }
                with_state(core, mail, app, handler, id, |h, ctx, st| {
                    h.on_eof(ctx, id, st)
                });
            }
            Notice::Redeliver(id) => present(core, mail, app, handler, id, &[]),
        }
    }

    /// A connect that never completed: no `on_close`, the handler hears `on_connect`.
    fn fail_connect(&mut self, id: ConnId, err: std::io::Error) {
        let Some(conn) = self.core.remove(id) else {
            return;
        };
        if conn.registered {
            self.driver.remove_conn(id, conn.socket.as_raw_fd());
        }
        drop(conn);
        let Shard {
            core,
            handler,
            mail,
            app,
            ..
        } = self;
        if let Some(mut st) = app.take(id) {
            guarded(core, mail, app, None, |ctx| {
                handler.on_connect(ctx, id, &mut st, Err(err))
            });
        }
    }

    /// Ends the relays `id` takes part in (it is being released): their ops are
    /// cancelled before the pipe may be closed.
    fn end_relays(&mut self, id: ConnId) {
        let Some(conn) = self.core.get(id) else {
            return;
        };
        for key in [conn.relay_out, conn.relay_in].into_iter().flatten() {
            let Some(r) = self.core.relays.get(key) else {
                continue;
            };
            let (from, to, filling) = (r.from, r.to, r.filling);
            if filling {
                self.driver.cancel_splice(from);
            }
            if self.core.get(to).is_some_and(|t| t.draining) {
                self.driver.cancel_splice(to);
            }
            self.core.relay_detach(key);
        }
    }

    fn release(&mut self, id: ConnId) {
        self.end_relays(id);
        let Some(conn) = self.core.remove(id) else {
            return;
        };
        if let Some(key) = conn.linger {
            self.core.timers.cancel(key);
        }
        if conn.registered {
            self.driver.remove_conn(id, conn.socket.as_raw_fd());
        }
        let reason = match &conn.phase {
            Phase::Closing(r) => r.clone(),
            _ => CloseReason::Closed,
        };
        let was_live = conn.live;
        let inbound = conn.inbound;
        drop(conn); // closes the socket
        let m = self.core.metrics();
        m.conns_closed.add(1);
        if inbound {
            m.conns_inbound_closed.add(1);
        }
        if was_live {
            m.conns_live.sub(1);
        }
        debug!(conn = %id, %reason, "connection closed");
        let state = self.app.take(id);
        if let (true, Some(state)) = (was_live, state) {
            let Shard {
                core,
                handler,
                mail,
                app,
                ..
            } = self;
            guarded(core, mail, app, None, |ctx| {
                handler.on_close(ctx, id, state, &reason)
            });
        }
    }

    fn fire_timers(&mut self) {
        let mut fired = std::mem::take(&mut self.fired);
        self.core.timers.expire(Instant::now(), &mut fired);
        for (key, payload) in fired.drain(..) {
            match payload {
                TimerPayload::User(slot) => {
                    let Shard {
                        core,
                        handler,
                        mail,
                        app,
                        ..
                    } = self;
                    // An interval hands out a copy and keeps its payload; a one-shot
                    // timer hands over the payload itself.
                    let payload = match app.timers.get(slot).map(|t| t.clone) {
                        Some(Some(clone)) => clone(&app.timers[slot].payload),
                        Some(None) => app.timers.remove(slot).payload,
                        None => continue,
                    };
                    guarded(core, mail, app, None, |ctx| {
                        handler.on_timer(ctx, TimerId(key), payload)
                    });
                }
                TimerPayload::Linger(id) => {
                    if let Some(conn) = self.core.get_mut(id) {
                        conn.linger = None;
                        debug!(conn = %id, "close linger expired; closing without flush");
                        self.core.close_now(id, CloseReason::Closed);
                    }
                }
            }
            self.apply();
        }
        self.fired = fired;
    }

    fn begin_shutdown(&mut self) {
        let shard = self.core.shard.0;
        info!(
            shard,
            conns = self.core.conns.len(),
            timers = self.core.timers.len(),
            "shard shutting down"
        );
        self.shutdown_deadline = Some(Instant::now() + self.shutdown_timeout);
        self.core.shutting_down = true;
        self.accept.stop(&mut *self.driver);
        self.shutdown.stopped_listening();
        {
            let Shard {
                core,
                handler,
                mail,
                app,
                ..
            } = self;
            guarded(core, mail, app, None, |ctx| handler.on_shutdown(ctx));
        }
        for id in self.core.ids() {
            if !self.core.get(id).is_some_and(|c| c.kept_at_shutdown) {
                self.core.close_graceful(id, CloseReason::Shutdown);
            }
        }
        self.apply();
    }

    /// Shutdown phase 2, once every participant stopped listening: take what the
    /// kernel already queued, serve it (it is closed gracefully at once), close the
    /// listeners.
    fn drain_listeners(&mut self) {
        let mut fds = std::mem::take(&mut self.accepted_fds);
        self.accept.drain_and_close(&mut fds);
        if !fds.is_empty() {
            info!(
                shard = self.core.shard.0,
                conns = fds.len(),
                "serving connections queued at shutdown"
            );
        }
        for (listener, fd) in fds.drain(..) {
            let Shard {
                core,
                handler,
                mail,
                app,
                listeners,
                ..
            } = self;
            let s = Socket::from(fd);
            accepted(core, mail, app, handler, listeners, listener, s, false);
        }
        self.accepted_fds = fds;
        self.listeners_closed = true;
        self.apply();
    }

    /// Accepts from exclusive listeners that reported connections, within budget
    /// and the connection cap.
    fn accept_exclusive(&mut self) {
        if !self.accept.has_pending() {
            return;
        }
        let room = self
            .max_conns
            .map_or(ACCEPT_BUDGET, |max| max.saturating_sub(self.core.inbound))
            .min(ACCEPT_BUDGET);
        let mut fds = std::mem::take(&mut self.accepted_fds);
        self.accept.accept_pending(room, &mut fds);
        for (listener, fd) in fds.drain(..) {
            let Shard {
                core,
                handler,
                mail,
                app,
                listeners,
                ..
            } = self;
            let s = Socket::from(fd);
            accepted(core, mail, app, handler, listeners, listener, s, false);
        }
        self.accepted_fds = fds;
        self.apply();
    }

    /// Starts or stops accepting to match the connection cap.
    fn update_accepting(&mut self) -> std::io::Result<()> {
        if let Some(max) = self.max_conns {
            let at_cap = self.core.inbound >= max;
            self.accept.set_at_cap(at_cap);
            if self.was_at_cap && !at_cap {
                // A handoff acceptor may be waiting for a shard with room.
                if let Some(bell) = &self.acceptor_bell {
                    bell.ring();
                }
            }
            self.was_at_cap = at_cap;
        }
        self.accept.update(&mut *self.driver, Instant::now())
    }

    /// Issues the fills relays are ready for: source open and read, no fill in
    /// flight, room in the pipe.
    fn fill_relays(core: &mut Core, driver: &mut dyn Driver) {
        let mut list = std::mem::take(&mut core.to_fill);
        for id in list.drain(..) {
            let Some(conn) = core.get(id) else { continue };
            let Some(key) = conn.relay_out else { continue };
            if conn.phase != Phase::Open || !conn.reading || conn.eof {
                continue;
            }
            let fd = conn.socket.as_raw_fd();
            let Some(r) = core.relays.get_mut(key) else {
                continue;
            };
            if r.filling || r.pipe_full || r.eof || r.room() == 0 {
                continue;
            }
            r.filling = true;
            driver.splice_in(id, fd, r.pipe.write_fd(), r.room());
        }
        recycle(&mut core.to_fill, list);
    }

    fn flush(&mut self) {
        let Shard { core, driver, .. } = self;
        let mut list = std::mem::take(&mut core.to_flush);
        let delay = core.flush_delay;
        let now = (!delay.is_zero()).then(Instant::now);
        let mut due_first: Option<Instant> = None;
        // Keeps (in place, no allocation) the connections held back for a later
        // turn; they stay flush_listed.
        list.retain(|&id| {
            let Some(conn) = core.get_mut(id) else {
                return false;
            };
            if conn.sending || conn.phase == Phase::Connecting {
                conn.flush_listed = false;
                return false;
            }
            if conn.out.is_empty() {
                conn.flush_listed = false;
                let (relay_in, fd) = (conn.relay_in, conn.socket.as_raw_fd());
                // Nothing queued: the turn of the pipe relayed into it, if any.
                let relay = relay_in.and_then(|k| core.relays.get(k));
                if let Some(r) = relay.filter(|r| r.in_pipe > 0) {
                    let (pipe_r, len) = (r.pipe.read_fd(), r.in_pipe);
                    if let Some(conn) = core.get_mut(id) {
                        conn.sending = true;
                        conn.draining = true;
                    }
                    driver.splice_out(id, fd, pipe_r, len);
                }
                return false;
            }
            if let Some(now) = now {
                // Write coalescing: hold small output until its oldest byte is due,
                // unless the connection is on its way out.
                let due = conn.queued_at.map_or(now, |t| t + delay);
                let urgent = conn.out.len() >= FLUSH_EARLY_BYTES
                    || conn.phase != Phase::Open
                    || conn.shut_pending;
                if due > now && !urgent {
                    due_first = Some(due_first.map_or(due, |d| d.min(due)));
                    return true;
                }
            }
            conn.flush_listed = false;
            conn.queued_at = None;
            conn.sending = true;
            driver.send(id, conn.socket.as_raw_fd(), conn.out.next_batch());
            false
        });
        core.flush_due = due_first;
        Self::fill_relays(core, &mut **driver);
        // Sending queues no callbacks, so nothing was listed meanwhile.
        debug_assert!(core.to_flush.is_empty());
        core.to_flush = list;
    }
}
