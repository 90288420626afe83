//! Message history on a shard: msgids and time stamps, the shard's store, and
//! how CHATHISTORY answers are written.
//!
//! # Who stamps and keeps what
//!
//! A PRIVMSG, NOTICE or TAGMSG gets its `msgid` and `time` on the shard that
//! orders it, which is also where its history is kept:
//!
//! - to a **channel**: the channel's owner. It already orders the channel's
//!   events and posts one delivery per shard with members; it stamps the line
//!   once, appends the message to the channel's history in its store, and
//!   every member on every shard — and the echo — gets that very
//!   [`crate::mail::Outgoing`]. So the msgid and time a member saw are those
//!   CHATHISTORY later returns.
//! - to a **nick**, when both sides have an account: the owner of their
//!   conversation ([`crate::store::conversation_key`], a third shard in general:
//!   the recipient nick's owner forwards the message there), the same way.
//! - to a nick otherwise: the recipient nick's owner, which routes it; it is
//!   not kept (private history is per account).
//!
//! Stamping at the sender's shard would not do: two senders on two shards
//! could give one channel's history stamps out of order (the store would then
//! raise the later one, and members would have seen a time the history does
//! not hold), and the owner is the only place where the channel's order is
//! decided.
//!
//! # msgids
//!
//! `<time><shard><seq>` in lowercase Crockford base32, 17 characters: 10 for
//! the milliseconds since the epoch of the shard's clock, 3 for the shard, 4 for
//! a sequence within the millisecond. The shard's clock never goes back (a
//! message in the same or an earlier millisecond than the last takes the last
//! one and the next sequence number), so ids are unique across shards, and
//! across restarts as long as the wall clock does not step back by more than the
//! restart took. The same clock gives the `time` tag, raised to the history's
//! last time if that is later (another process or shard count kept it), so
//! every history is non-decreasing in time and what recipients see is what is
//! stored. A cluster node's ids end in `-<node name>`: the names are unique in
//! the cluster, and every node has a shard 0 stamping in the same milliseconds
//! (a history places a msgid once, so two nodes' ids must differ).
//!
//! # The store on the shard
//!
//! Each shard opens its [`Store`] in `on_start`, on its own thread. Changes
//! (appends, new bounds, accounts) change memory at once and are handed to the
//! store's writer thread in batches: the first change sets a timer
//! ([`crate::ChatTimer::StoreTurn`]) that calls [`Store::end_turn`] — never a
//! write or an fsync on the shard. An account change hands over at the end of
//! the loop turn (its ticket waits for the sync). History alone waits up to one
//! sync interval of the `batch` policy (5 ms by default; nothing with `always`):
//! a busy channel's loop turn often holds a single message, and one hand-over
//! per turn woke the writer about once per message — measured by
//! `shardline-bench chat --history-compare`, the writer's wake-ups were the
//! whole CPU cost of history. Waiting widens what a `kill -9` may lose by that
//! interval (the store's durability table). The writer reports back through
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
    mail::{write_tags, Caps, ChatMsg, HistoryError, HistoryQuery, HistorySub},
    reply::write_line,
    shard::{ChatShard, ChatTimer},
    stats::ShardStats,
    store::{
        Account, Completed, DataDir, Detaching, HistoryLimits, Message, MessageKind, Store,
        StoreError, StoreOptions, SyncPolicy, TargetFilter, TargetSummary, Ticket, WriterReport,
        DEFAULT_SYNC_INTERVAL_MS,
    },
};

/// Crockford's base32 alphabet, lower case.
const BASE32: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Sequence numbers within one millisecond (20 bits).
const SEQ_LIMIT: u32 = 1 << 20;

/// Makes msgids and time stamps for one shard (see the module doc).
#[derive(Debug, Clone)]
pub struct MsgIds {
    shard: u64,
    last_ms: u64,
    seq: u32,
    /// `-<node>` in a cluster: two nodes' shards of the same number stamp
    /// in the same millisecond too.
    node: Option<Box<str>>,
}

impl MsgIds {
    /// The generator of shard `shard`.
    pub fn new(shard: usize) -> MsgIds {
        MsgIds {
            shard: shard as u64 & 0x7fff,
            last_ms: 0,
            seq: 0,
            node: None,
        }
    }

    /// A new id and its time: `now_ms`, or the last time given if that is
    /// later (the shard's clock never goes back).
    pub fn next(&mut self, now_ms: u64) -> (Arc<str>, u64) {
        if now_ms > self.last_ms {
            self.last_ms = now_ms;
            self.seq = 0;
        } else {
            self.seq += 1;
            if self.seq >= SEQ_LIMIT {
                self.last_ms += 1;
                self.seq = 0;
            }
        }
        let mut id = [0u8; 17];
        encode(&mut id[..10], self.last_ms);
        encode(&mut id[10..13], self.shard);
        encode(&mut id[13..], u64::from(self.seq));
        let id = std::str::from_utf8(&id).unwrap_or_default();
        let id = match &self.node {
            Some(node) => Arc::from(format!("{id}-{node}")),
            None => Arc::from(id),
        };
        (id, self.last_ms)
    }

    /// Ids from now on end in `-<node>` (a cluster's node names are unique,
    /// and made of letters, digits, `-`, `_` and `.`).
    pub fn set_node(&mut self, node: &str) {
        self.node = Some(node.into());
    }
}

/// Writes the low `5 * out.len()` bits of `v` in base32, most significant first.
fn encode(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = BASE32[(v & 31) as usize];
        v >>= 5;
    }
}

/// What every shard needs to open its store; made in `build`, once.
#[derive(Debug)]
pub(crate) struct Storage {
    /// The data directory, locked for the life of the server.
    pub(crate) dir: DataDir,
    /// How each shard opens its store (the bounds come from the config).
    pub(crate) options: StoreOptions,
    /// Where the writers' reports go.
    pub(crate) sink: Arc<ReportSink>,
    /// The threads that hash passwords for every shard (accounts live in the
    /// store, so they exist only with it).
    pub(crate) hasher: crate::auth::pool::HashPool,
    /// The file host (`[filehost]` on), whose files live in the data
    /// directory too.
    pub(crate) filehost: Option<Arc<crate::filehost::FileHost>>,
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
    ids: MsgIds,
    store: Option<Store>,
    /// The `StoreTurn` timer, if set, and whether it is the immediate kind
    /// (an account waits) rather than the delayed one (only history waits).
    turn: Option<(TimerId, bool)>,
    /// How long history-only changes wait to be handed over (see the module
    /// doc, "The store on the shard").
    handover: Duration,
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

/// How long history-only changes wait on the shard before they are handed to
/// the writer: nothing with `always` (each turn's batch is synced before it is
/// acknowledged anyway), one sync interval with `batch` (the writer then wakes
/// about once per interval to write and sync, instead of once per loop turn),
/// the default interval with `none`. Account changes never wait.
fn handover_delay(sync: SyncPolicy) -> Duration {
    match sync {
        SyncPolicy::Always => Duration::ZERO,
        SyncPolicy::Batch { interval_ms } => Duration::from_millis(u64::from(interval_ms)),
        SyncPolicy::None => Duration::from_millis(u64::from(DEFAULT_SYNC_INTERVAL_MS)),
    }
}

impl History {
    pub(crate) fn new(shard: usize, stats: Arc<ShardStats>) -> History {
        History {
            ids: MsgIds::new(shard),
            store: None,
            turn: None,
            handover: Duration::ZERO,
            expire_timer: None,
            expire_every: None,
            stats,
        }
    }

    /// Whether this shard keeps history.
    pub(crate) fn on(&self) -> bool {
        self.store.is_some()
    }

    /// Whether this process owns the data directory's files now (a store,
    /// not handed over to a new process at an upgrade).
    pub(crate) fn owns_files(&self) -> bool {
        self.store.as_ref().is_some_and(|s| !s.is_detached())
    }

    /// Whether an account named `name` (any casing) exists in this shard's
    /// store (only the owner of the name's partition can know; `false`
    /// without a store).
    pub(crate) fn account_exists(&self, name: &str) -> bool {
        self.store
            .as_ref()
            .is_some_and(|s| s.account(name).is_some())
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
        self.handover = handover_delay(options.sync);
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
        self.arm_turn(ctx, false);
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

    /// This shard is a cluster node's: its msgids name the node.
    pub(crate) fn set_node(&mut self, node: &str) {
        self.ids.set_node(node);
    }

    /// A msgid and time for a message to history `key` (`None`: not kept).
    pub(crate) fn stamp(&mut self, key: Option<&str>) -> (Arc<str>, u64) {
        let (id, mut ms) = self.ids.next(clock::now_millis());
        if let (Some(key), Some(store)) = (key, &self.store) {
            if let Some(last) = store.last_time(key) {
                ms = ms.max(last);
            }
        }
        (id, ms)
    }

    /// Whether messages of history `key` are kept (history on, bound not 0).
    pub(crate) fn keeps(&self, key: &str) -> bool {
        self.store.as_ref().is_some_and(|s| {
            let l = s.limits();
            if crate::store::is_channel_key(key) {
                l.channel_messages > 0
            } else {
                l.conversation_messages > 0
            }
        })
    }

    /// Appends `m` to its history; handed to the writer at the end of the
    /// turn.
    pub(crate) fn append(&mut self, ctx: &mut Ctx<'_, ChatShard>, m: Message) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        match store.append_message(m) {
            Ok(_) => {
                self.stats.history_appends.add(1);
                self.arm_turn(ctx, false);
            }
            // A key of another shard's partition would be a routing bug; a
            // message is far below the record limit. Neither comes from input.
            Err(e) => warn!(error = %e, "history: message not kept"),
        }
    }

    /// Places `m`, a message another node kept while this one missed it, in
    /// its history by its time (unless its msgid is there already); handed
    /// to the writer like an append. Returns whether it was new here.
    pub(crate) fn catch_up(&mut self, ctx: &mut Ctx<'_, ChatShard>, m: Message) -> bool {
        let Some(store) = self.store.as_mut() else {
            return false;
        };
        if store.has_message(&m.target, &m.msgid) {
            return false;
        }
        match store.insert_message(m) {
            Ok(_) => {
                self.stats.history_appends.add(1);
                self.arm_turn(ctx, false);
                true
            }
            Err(e) => {
                warn!(error = %e, "history: message not kept");
                false
            }
        }
    }

    /// Makes sure what changed is handed to the writer: at the end of this
    /// loop turn if `urgent` (an account waits for its sync), else within
    /// `handover`.
    fn arm_turn(&mut self, ctx: &mut Ctx<'_, ChatShard>, urgent: bool) {
        match self.turn {
            Some((_, true)) => {}
            Some((_, false)) if !urgent => {}
            Some((timer, false)) => {
                ctx.cancel_timer(timer);
                self.turn = Some((ctx.set_timer(Duration::ZERO, ChatTimer::StoreTurn), true));
            }
            None => {
                let after = if urgent {
                    Duration::ZERO
                } else {
                    self.handover
                };
                self.turn = Some((ctx.set_timer(after, ChatTimer::StoreTurn), urgent));
            }
        }
    }

    /// The store, if open (accounts are read from it).
    pub(crate) fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Creates or replaces an account: memory now, disk with this turn's
    /// batch; the ticket completes (from [`History::end_turn`] or
    /// [`History::on_report`]) once it is durable.
    pub(crate) fn put_account(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        a: Account,
    ) -> Result<Ticket, StoreError> {
        let store = self.store.as_mut().ok_or(StoreError::WriterGone)?;
        let ticket = store.put_account(a)?;
        self.arm_turn(ctx, true);
        Ok(ticket)
    }

    /// The `StoreTurn` timer: hands this turn's records to the writer.
    /// Returns account tickets that completed (only if the writer is gone).
    pub(crate) fn end_turn(&mut self, ctx: &mut Ctx<'_, ChatShard>) -> Vec<Completed> {
        self.turn = None;
        let Some(store) = self.store.as_mut() else {
            return Vec::new();
        };
        self.stats.history_turns.add(1);
        let done = store.end_turn();
        if !done.is_empty() {
            debug!(tickets = done.len(), "store tickets completed");
        }
        if store.unsent() {
            // The writer's queue was full: try again shortly rather than wait
            // for the next append.
            let timer = ctx.set_timer(Duration::from_millis(1), ChatTimer::StoreTurn);
            self.turn = Some((timer, false));
        }
        done
    }

    /// A report from the store's writer thread; returns the account tickets
    /// it completed.
    pub(crate) fn on_report(&mut self, r: WriterReport) -> Vec<Completed> {
        let Some(store) = self.store.as_mut() else {
            return Vec::new();
        };
        let done = store.on_report(r);
        if !done.is_empty() {
            debug!(tickets = done.len(), "store tickets completed");
        }
        done
    }

    /// Lets go of the disk for an upgrade's new process ([`Store::detach`]):
    /// the writer writes and syncs everything it has and stops (wait for it
    /// with the returned handle, off this thread); from then on history is
    /// kept in memory only and account changes are refused. `None`: no store.
    pub(crate) fn detach(&mut self, ctx: &mut Ctx<'_, ChatShard>) -> Option<Detaching> {
        let store = self.store.as_mut()?;
        if let Some((timer, _)) = self.turn.take() {
            ctx.cancel_timer(timer);
        }
        let pending = store.last_seq().saturating_sub(store.written_seq());
        info!(
            shard = ctx.shard_id().0,
            records_to_write = pending,
            "history store: handing the data directory over; history is kept in memory only from now on"
        );
        Some(store.detach())
    }

    /// The store opened again after a failed upgrade replaces the detached
    /// one: what was said meanwhile is appended to it (in order), and the
    /// bounds in force (a rehash may have changed them) apply.
    pub(crate) fn attach(&mut self, ctx: &mut Ctx<'_, ChatShard>, mut store: Store) {
        let shard = ctx.shard_id().0;
        let (held, dropped) = match self.store.as_mut() {
            Some(old) => {
                store.continue_after(old);
                let limits = old.limits();
                if store.limits() != limits {
                    store.set_limits(limits, clock::now_millis());
                }
                old.take_held()
            }
            None => (Vec::new(), 0),
        };
        let kept = held.len();
        for m in held {
            if let Err(e) = store.append_message(m) {
                warn!(shard, error = %e, "history: a held message was not kept");
            }
        }
        self.stats.set_store(store.stats().clone());
        self.store = Some(store);
        if dropped > 0 {
            warn!(shard, dropped, "history: messages said while the data directory was handed over did not fit in memory and are not stored");
        }
        info!(
            shard,
            held = kept,
            "history store: the data directory is back; storing again"
        );
        self.arm_turn(ctx, true);
    }

    /// Hands everything to the writer, which writes and syncs it, and waits
    /// for it (the shard is stopping).
    pub(crate) fn close(&mut self, shard: usize) {
        if let Some(mut store) = self.store.take() {
            if store.is_detached() {
                let (held, dropped) = store.take_held();
                info!(
                    shard,
                    not_stored = held.len() as u64 + dropped,
                    "history store was handed to a new process; messages said here since are not stored"
                );
                return;
            }
            let messages_unsynced = store.last_seq().saturating_sub(store.synced_seq());
            match store.close() {
                Ok(()) => info!(shard, messages_unsynced, "history store closed and synced"),
                Err(e) => error!(shard, error = %e, "history store did not close cleanly"),
            }
        }
    }

    /// Runs `q` on history `key`, messages in ascending time order.
    pub(crate) fn query(&self, key: &str, q: &HistoryQuery) -> Result<Vec<Message>, HistoryError> {
        let Some(store) = &self.store else {
            return Err(HistoryError::Unavailable);
        };
        let limit = q.limit;
        let found = match &q.sub {
            HistorySub::Latest(r) => store.latest(key, r.as_ref().map(|r| r.as_ref()), limit),
            HistorySub::Before(r) => store.before(key, r.as_ref(), limit),
            HistorySub::After(r) => store.after(key, r.as_ref(), limit),
            HistorySub::Around(r) => store.around(key, r.as_ref(), limit),
            HistorySub::Between(a, b) => store.between(key, a.as_ref(), b.as_ref(), limit),
        };
        found
            .map(|v| {
                v.into_iter()
                    .filter(|m| m.kind != MessageKind::Tagmsg)
                    .cloned()
                    .collect()
            })
            .map_err(|_| HistoryError::UnknownMsgid)
    }

    /// `CHATHISTORY TARGETS` on this shard: those of `chans` whose history is
    /// here, and `account`'s conversations kept here. A conversation's name is
    /// the other party's account (casefolded).
    pub(crate) fn targets(
        &self,
        chans: &[&str],
        account: Option<&str>,
        a: u64,
        b: u64,
        limit: usize,
    ) -> Vec<TargetSummary> {
        let Some(store) = &self.store else {
            return Vec::new();
        };
        let mut found = store.targets(TargetFilter::Channels(chans), a, b, limit);
        if let Some(account) = account {
            let me = crate::store::account_key(account);
            let mut convs = store.targets(TargetFilter::ConversationsOf(&me), a, b, limit);
            for t in &mut convs {
                if let Some(peer) = crate::store::conversation_peer(&t.key, &me) {
                    t.to = peer.to_string();
                }
            }
            found.extend(convs);
        }
        found
    }
}

/// Appends one history message as a client with `caps` gets it in a
/// CHATHISTORY answer (with `batch` if the answer is a batch).
pub(crate) fn write_history_line(out: &mut Vec<u8>, m: &Message, caps: Caps, batch: Option<&str>) {
    let mut tags = String::new();
    let tag_caps = caps.has(Caps::MESSAGE_TAGS);
    write_tags(
        &mut tags,
        batch,
        caps.has(Caps::SERVER_TIME).then_some(m.time),
        tag_caps.then_some(m.msgid.as_str()),
        Some(m.account.as_str()).filter(|a| !a.is_empty() && caps.has(Caps::ACCOUNT_TAG)),
        tag_caps.then_some(m.tags.as_str()),
    );
    if !tags.is_empty() {
        out.push(b'@');
        out.extend_from_slice(tags.as_bytes());
        out.push(b' ');
    }
    let params: Vec<&str> = if m.kind == MessageKind::Tagmsg {
        vec![&m.to]
    } else {
        vec![&m.to, &m.text]
    };
    write_line(
        out,
        &m.source,
        m.kind.command(),
        &params,
        m.kind != MessageKind::Tagmsg,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msgids_are_unique_sortable_and_monotonic() {
        let mut a = MsgIds::new(0);
        let mut b = MsgIds::new(1);
        let mut seen = std::collections::HashSet::new();
        let mut last = String::new();
        let mut last_ms = 0;
        for i in 0..5000u64 {
            // The clock stalls, jumps and even goes back.
            let now = 1_700_000_000_000 + i / 7 - if i % 500 == 0 { 40 } else { 0 };
            for g in [&mut a, &mut b] {
                let (id, ms) = g.next(now);
                assert_eq!(id.len(), 17);
                assert!(id.bytes().all(|c| BASE32.contains(&c)));
                assert!(seen.insert(id.to_string()), "{id} twice");
                if g.shard == 0 {
                    assert!(*id > *last, "{id} after {last}");
                    assert!(ms >= last_ms);
                    last = id.to_string();
                    last_ms = ms;
                }
            }
        }
    }

    #[test]
    fn a_millisecond_holds_a_million_ids() {
        let mut g = MsgIds::new(3);
        let (_, first) = g.next(1000);
        for _ in 1..SEQ_LIMIT {
            assert_eq!(g.next(1000).1, first);
        }
        // The next borrows the next millisecond rather than repeat an id.
        assert_eq!(g.next(1000).1, first + 1);
    }

    #[test]
    fn cluster_nodes_stamp_apart() {
        let (mut a, mut b) = (MsgIds::new(0), MsgIds::new(0));
        a.set_node("irc-1");
        b.set_node("irc-2");
        let (ida, ta) = a.next(1000);
        let (idb, tb) = b.next(1000);
        assert_eq!(ta, tb);
        assert_ne!(ida, idb);
        assert!(ida.ends_with("-irc-1") && ida.len() == 17 + 6, "{ida}");
    }

    #[test]
    fn history_lines_carry_the_tags_the_client_asked_for() {
        let m = Message {
            target: "#c".into(),
            to: "#C".into(),
            msgid: "abc".into(),
            time: 1_700_000_000_123,
            source: "n!u@h".into(),
            account: String::new(),
            kind: MessageKind::Privmsg,
            tags: "+x=1".into(),
            text: "hi there".into(),
        };
        let mut out = Vec::new();
        write_history_line(&mut out, &m, Caps::default(), None);
        assert_eq!(out, b":n!u@h PRIVMSG #C :hi there\r\n");
        out.clear();
        let mut caps = Caps::default();
        caps.set(Caps::SERVER_TIME, true);
        write_history_line(&mut out, &m, caps, Some("B1"));
        assert_eq!(
            out,
            b"@batch=B1;time=2023-11-14T22:13:20.123Z :n!u@h PRIVMSG #C :hi there\r\n"
        );
        out.clear();
        caps.set(Caps::MESSAGE_TAGS, true);
        write_history_line(&mut out, &m, caps, None);
        assert_eq!(
            out,
            b"@time=2023-11-14T22:13:20.123Z;msgid=abc;+x=1 :n!u@h PRIVMSG #C :hi there\r\n"
        );
        // account-tag: only for a sender that had an account, escaped.
        caps.set(Caps::ACCOUNT_TAG, true);
        out.clear();
        write_history_line(&mut out, &m, caps, None);
        assert!(!String::from_utf8_lossy(&out).contains("account="));
        let m = Message {
            account: "a\\b".into(),
            ..m
        };
        out.clear();
        write_history_line(&mut out, &m, caps, None);
        assert_eq!(
            out,
            b"@time=2023-11-14T22:13:20.123Z;msgid=abc;account=a\\\\b;+x=1 :n!u@h PRIVMSG #C :hi there\r\n"
        );
    }
}
