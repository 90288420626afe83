//! Message history on a shard: the shard's store, opened on its thread and
//! written once per loop turn through its writer thread.
//!
//! # The store on the shard
//!
//! Each shard opens its [`Store`] in `on_start`, on its own thread. Changes
//! (appends, new bounds) change memory at once and are handed to the store's
//! writer thread once per loop turn: the first change of a turn sets a
//! zero-delay timer ([`crate::ChatTimer::StoreTurn`]), which fires after the
//! turn's mail and calls [`Store::end_turn`] — one hand-over per turn, never one
//! per message, and never a write or an fsync on the shard. The writer reports back through
//! a `Remote` ([`crate::ChatMsg::StoreReport`]). An interval timer drops
//! messages past the age limit.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use shardline::{Ctx, PostError, Remote, ShardId, TimerId};
use tracing::{debug, error, info, warn};

use crate::{
    clock,
    mail::ChatMsg,
    shard::{ChatShard, ChatTimer},
    stats::ShardStats,
    store::{DataDir, HistoryLimits, Store, StoreError, StoreOptions, WriterReport},
};

/// What every shard needs to open its store; made in `build`, once.
#[derive(Debug)]
pub(crate) struct Storage {
    /// The data directory, locked for the life of the server.
    pub(crate) dir: DataDir,
    /// How each shard opens its store (the bounds come from the config).
    pub(crate) options: StoreOptions,
    /// Where the writers' reports go.
    pub(crate) sink: Arc<ReportSink>,
    /// Shards whose store did not open: the server stops with this error.
    pub(crate) failures: Mutex<Vec<(usize, StoreError)>>,
}

impl Storage {
    /// The first store that failed to open, if any.
    pub(crate) fn take_failure(&self) -> Option<(usize, StoreError)> {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if f.is_empty() {
            None
        } else {
            Some(f.remove(0))
        }
    }
}

/// How long a writer thread retries posting a report into a full mailbox.
const REPORT_POST_TIMEOUT: Duration = Duration::from_secs(1);

/// Carries the store writers' reports into the shards through a `Remote`.
///
/// The `Remote` exists only once the server runs, and the stores open (in each
/// shard's `on_start`) before that, so a report may come first: it is kept in
/// `early`, under the same lock that [`ReportSink::install`] takes after it
/// sets the `Remote` and before it posts what was kept — so a report is either
/// kept and posted by `install`, or posted by the writer itself, never lost. A
/// report that still finds the shard's mailbox full after a second is merged
/// into that shard's next one (reports are cumulative: `written` and `synced`
/// only grow, `failed` is kept whole).
#[derive(Debug, Default)]
pub(crate) struct ReportSink {
    remote: OnceLock<Remote<ChatMsg>>,
    early: Mutex<Vec<(usize, WriterReport)>>,
    carried: Mutex<HashMap<usize, WriterReport>>,
}

impl ReportSink {
    /// Called on a writer thread.
    pub(crate) fn notify(&self, shard: usize, r: WriterReport) {
        let remote = {
            let mut early = self.early.lock().unwrap_or_else(|p| p.into_inner());
            match self.remote.get() {
                Some(remote) => remote,
                None => {
                    early.push((shard, r));
                    return;
                }
            }
        };
        self.post(remote, shard, r);
    }

    /// Makes `remote` the way in, and posts what came before it.
    pub(crate) fn install(&self, remote: Remote<ChatMsg>) {
        let _ = self.remote.set(remote);
        let early = std::mem::take(&mut *self.early.lock().unwrap_or_else(|p| p.into_inner()));
        if let Some(remote) = self.remote.get() {
            for (shard, r) in early {
                self.post(remote, shard, r);
            }
        }
    }

    fn post(&self, remote: &Remote<ChatMsg>, shard: usize, mut r: WriterReport) {
        if let Some(old) = self
            .carried
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&shard)
        {
            r = merge(old, r);
        }
        let msg = ChatMsg::StoreReport(r);
        match remote.post_timeout(ShardId(shard), msg, REPORT_POST_TIMEOUT) {
            Ok(()) => {}
            Err(PostError::Full(ChatMsg::StoreReport(r))) => {
                warn!(
                    shard,
                    "the shard's mailbox stayed full: its store report waits for the next"
                );
                let mut carried = self.carried.lock().unwrap_or_else(|p| p.into_inner());
                let r = match carried.remove(&shard) {
                    Some(old) => merge(old, r),
                    None => r,
                };
                carried.insert(shard, r);
            }
            // Shutting down: the shard closes its store itself.
            Err(_) => {}
        }
    }
}

fn merge(mut a: WriterReport, b: WriterReport) -> WriterReport {
    a.written = a.written.max(b.written);
    a.synced = a.synced.max(b.synced);
    a.failed.extend(b.failed);
    a
}

/// A shard's history: its msgid clock and its store (none while history is
/// off, or if it failed to open).
#[derive(Debug)]
pub(crate) struct History {
    store: Option<Store>,
    /// A `StoreTurn` timer is set: the turn's appends will be handed over.
    turn_armed: bool,
    expire_timer: Option<TimerId>,
    expire_every: Option<Duration>,
    stats: Arc<ShardStats>,
}

/// How often messages past the age limit are dropped: an eighth of the limit,
/// within 1 s..=60 s; never without an age limit (`None`). (A history that is
/// written to drops its old messages at each append anyway; this is for the
/// quiet ones.)
fn expire_interval(limits: &HistoryLimits) -> Option<Duration> {
    (limits.max_age_ms > 0).then(|| {
        Duration::from_millis(limits.max_age_ms / 8)
            .clamp(Duration::from_secs(1), Duration::from_secs(60))
    })
}

impl History {
    pub(crate) fn new(stats: Arc<ShardStats>) -> History {
        History {
            store: None,
            turn_armed: false,
            expire_timer: None,
            expire_every: None,
            stats,
        }
    }

    /// Whether this shard keeps history.
    pub(crate) fn on(&self) -> bool {
        self.store.is_some()
    }

    /// Opens this shard's store (on its thread, at start). On failure the
    /// error is recorded for `start` to report, and the shard keeps no history.
    pub(crate) fn open(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        storage: &Arc<Storage>,
        limits: HistoryLimits,
    ) {
        let shard = ctx.shard_id().0;
        let sink = storage.sink.clone();
        let options = StoreOptions {
            limits,
            ..storage.options.clone()
        };
        let notify = Box::new(move |r| sink.notify(shard, r));
        match Store::open(&storage.dir, shard, ctx.shards(), options, notify) {
            Ok(store) => {
                self.stats.set_store(store.stats().clone());
                self.store = Some(store);
                self.arm_expiry(ctx, &limits);
            }
            Err(e) => {
                error!(shard, error = %e, "cannot open the history store");
                storage
                    .failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((shard, e));
            }
        }
    }

    fn arm_expiry(&mut self, ctx: &mut Ctx<'_, ChatShard>, limits: &HistoryLimits) {
        let every = expire_interval(limits);
        if self.expire_timer.is_some() && every == self.expire_every {
            return;
        }
        if let Some(t) = self.expire_timer.take() {
            ctx.cancel_timer(t);
        }
        self.expire_every = every;
        self.expire_timer = every.map(|every| ctx.set_interval(every, ChatTimer::HistoryExpire));
    }

    /// New bounds (a rehash): applied at once.
    pub(crate) fn set_limits(&mut self, ctx: &mut Ctx<'_, ChatShard>, limits: HistoryLimits) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        if store.limits() == limits {
            return;
        }
        store.set_limits(limits, clock::now_millis());
        info!(shard = ctx.shard_id().0, ?limits, "history bounds changed");
        self.arm_turn(ctx);
        self.arm_expiry(ctx, &limits);
    }

    /// The expiry timer fired.
    pub(crate) fn expire(&mut self) {
        if let Some(store) = self.store.as_mut() {
            let dropped = store.expire(clock::now_millis());
            if dropped > 0 {
                debug!(dropped, "history: messages past the age limit dropped");
            }
        }
    }

    fn arm_turn(&mut self, ctx: &mut Ctx<'_, ChatShard>) {
        if !self.turn_armed {
            self.turn_armed = true;
            ctx.set_timer(Duration::ZERO, ChatTimer::StoreTurn);
        }
    }

    /// The `StoreTurn` timer: hands this turn's records to the writer.
    pub(crate) fn end_turn(&mut self, ctx: &mut Ctx<'_, ChatShard>) {
        self.turn_armed = false;
        let Some(store) = self.store.as_mut() else {
            return;
        };
        self.stats.history_turns.add(1);
        let done = store.end_turn();
        if !done.is_empty() {
            debug!(tickets = done.len(), "store tickets completed");
        }
        if store.unsent() {
            // The writer's queue was full: try again shortly rather than wait
            // for the next append.
            self.turn_armed = true;
            ctx.set_timer(Duration::from_millis(1), ChatTimer::StoreTurn);
        }
    }

    /// A report from the store's writer thread.
    pub(crate) fn on_report(&mut self, r: WriterReport) {
        if let Some(store) = self.store.as_mut() {
            let done = store.on_report(r);
            if !done.is_empty() {
                debug!(tickets = done.len(), "store tickets completed");
            }
        }
    }

    /// Hands everything to the writer, which writes and syncs it, and waits
    /// for it (the shard is stopping).
    pub(crate) fn close(&mut self, shard: usize) {
        if let Some(store) = self.store.take() {
            let messages_unsynced = store.last_seq().saturating_sub(store.synced_seq());
            match store.close() {
                Ok(()) => info!(shard, messages_unsynced, "history store closed and synced"),
                Err(e) => error!(shard, error = %e, "history store did not close cleanly"),
            }
        }
    }
}
