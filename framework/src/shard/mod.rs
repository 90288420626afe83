//! One shard: a pinned thread that owns a driver, a connection slab, a timer wheel,
//! its listeners and one handler, and runs the loop that ties them together.
//!
//! Each turn: reap completions and dispatch them to the handler -> apply what the
//! handler asked for (registrations, connects, read pauses, closes and their
//! `on_close`) -> fire due timers -> flush outbound queues (one vectored send per
//! connection) -> submit and wait, for at most the time to the next timer.
//!
//! Nothing here says which backend runs: that is the driver's business.

mod accepting;
mod apply;
pub(crate) mod conn;
pub(crate) mod core;
mod dispatch;
mod flush;
pub(crate) use dispatch::panic_message as panic_text;
pub(crate) mod doorbell;
pub(crate) mod driver;
pub(crate) mod mailbox;
pub(crate) mod relay;
mod setup;
pub(crate) mod timer;
mod tls;

use std::{
    any::Any,
    sync::{mpsc, Arc},
    time::{Duration, Instant},
};

use tracing::{error, info, warn};

use self::{
    core::{Core, TimerPayload},
    dispatch::{accepted, dispatch, guarded, Listeners},
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
    handler::{AppState, CloseReason, Handler, Origin, ShardId},
    metrics::Metrics,
    numa::Topology,
    server::{Backend, ShutdownHandle},
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

/// The configuration a shard runs with: plain values taken from the builder once,
/// so a shard never sees (or clones) the builder itself.
#[derive(Debug, Clone)]
pub(crate) struct ShardSettings {
    pub(crate) limits: crate::types::Limits,
    pub(crate) tcp_nodelay: bool,
    pub(crate) coalesce: crate::types::Coalesce,
    pub(crate) read_buf_size: usize,
    pub(crate) read_budget: usize,
    pub(crate) uring_entries: u32,
    pub(crate) uring_buf_count: u16,
    pub(crate) splice_pipes: usize,
    pub(crate) pipe_size: usize,
    pub(crate) shutdown_timeout: Duration,
    /// Most accepted connections this shard holds.
    pub(crate) max_conns: Option<usize>,
    /// Without `max_conns`: derive it from the shard's sockets at start.
    pub(crate) socket_cap: Option<crate::server::config::SocketCap>,
    pub(crate) tls_handshake_timeout: Duration,
    pub(crate) tls_max_handshakes: usize,
    /// io_uring direct descriptors: the file table's size per shard, or `None`
    /// for ordinary fds.
    pub(crate) direct_files: Option<u32>,
}

/// A listener as the shards get it: bound address, the application's value
/// (type-erased) and its TLS configuration.
pub(crate) type ListenerSpec = (
    std::net::SocketAddr,
    Arc<dyn Any + Send + Sync>,
    Option<crate::tls::TlsAcceptor>,
);

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
    pub(crate) settings: ShardSettings,
    pub(crate) listening: Listening,
    /// Every listener's bound address and the application's value, builder order.
    pub(crate) listeners: Arc<[ListenerSpec]>,
    pub(crate) doorbell: Doorbell,
    pub(crate) shutdown: ShutdownHandle,
    pub(crate) metrics: Metrics,
    /// Reports the shard started (with its id and connection cap) or why not.
    pub(crate) ready: mpsc::Sender<Result<(ShardId, Option<usize>), Error>>,
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
    let _ = ready.send(Ok((id, shard.max_conns)));
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
    /// The listeners were handed over to another process and released here.
    released: bool,
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
            // Read before draining: the acceptor posts its last connection and only
            // then says it is done, so "done" seen here means that connection is
            // already in the mailbox this drain empties. Read after, a connection
            // posted between the drain and the check would be left in the mailbox
            // of a stopped shard, open and never served.
            let acceptor_done = self.shutdown.acceptor_finished();
            let mail_taken = self.drain_mail();
            self.fire_timers();
            if !self.released && self.shutdown.release_requested() {
                self.release_listeners();
            }
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
                    && (acceptor_done || overdue)
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
        self.discard_mail();
        info!(shard, "shard stopped");
        Ok(())
    }

    /// What is still in this shard's mailboxes once it stopped (only after the
    /// shutdown deadline, or posted by a `Remote` racing the end): connections are
    /// closed now rather than held open by the mailboxes, messages are dropped;
    /// both are logged.
    fn discard_mail(&mut self) {
        let (mut conns, mut msgs) = (0usize, 0usize);
        self.mail
            .boxes
            .drain(self.mail.me, usize::MAX, |_, env| match env {
                Envelope::Conn(_) => conns += 1,
                Envelope::User(_) => msgs += 1,
            });
        if conns + msgs > 0 {
            warn!(
                shard = self.core.shard.0,
                conns, msgs, "stopped with mail left: connections closed, messages dropped"
            );
        }
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
                    let a = driver::Accepted::Fd(fd);
                    accepted(core, mail, app, handler, listeners, listener, a, false)
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
}
