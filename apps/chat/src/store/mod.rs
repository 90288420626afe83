//! The embedded store: accounts and message history on local disk, one store
//! per shard, with no server to install and no lock shared by shards.
//!
//! # Layout
//!
//! A data directory (`--data-dir`, `[storage] dir`; see [`default_data_dir`])
//! holds a lock file and one append-only log per **partition**:
//!
//! ```text
//! DIR/lock        pid of the holder; exclusive flock (see DataDir)
//! DIR/p00.log     partition 0
//! ...
//! DIR/p63.log     partition 63
//! ```
//!
//! There are always [`PARTITIONS`] (64) partitions. Every record has a key —
//! an account ([`account_key`]), a channel ([`channel_key`]) or a private
//! conversation ([`conversation_key`]: both account names, casefolded and
//! sorted, so one record set serves both sides) — and lives in partition
//! [`partition_of`]`(key)`, FNV-1a 64 of the key modulo 64. The chat makes a
//! name's owner shard `partition % shards`, so a shard owns whole partitions
//! and opens exactly the `p` with `p % shards == shard`. Nothing on disk
//! depends on the shard count: restarting with another count just hands the
//! same files to other shards.
//!
//! # Format
//!
//! Each log starts with a 20-byte header: magic `SLCHATST`, format version
//! (u32, now 1), the partition number (u16) and count (u16), and a CRC-32 of
//! those 16 bytes (all little-endian). A bad magic, checksum, version or
//! partition is refused at open with an error naming the file.
//!
//! Then records, each framed as
//!
//! ```text
//! len: u32 LE | crc: u32 LE (CRC-32 of the 4 len bytes, then the payload) | payload: len bytes
//! ```
//!
//! with `1 <= len <= 64 KiB`. A payload is a kind byte and fields: integers as
//! LEB128 varints, strings as a varint length and UTF-8 bytes.
//!
//! | kind | record        | fields |
//! |------|---------------|--------|
//! | 1    | AccountPut    | name, password hash (PHC string), created (ms), flags, certificate fingerprints (count, then each) |
//! | 2    | AccountDelete | name |
//! | 3    | Message       | target key, target as sent, msgid, time (ms), source `nick!user@host`, account, command (0 PRIVMSG, 1 NOTICE, 2 TAGMSG), tags, text |
//!
//! Readers ignore bytes after the fields they know, so a later version can
//! add fields at the end of a record without a new format version; a new
//! record kind or layout needs one. Compaction needs no record of its own: it
//! rewrites a log as its live records (below). A hand-written encoding rather
//! than serde: a dozen lines per record, no dependency, a layout written down
//! here and checked by round-trip property tests.
//!
//! # Recovery
//!
//! [`Store::open`] reads each owned log and replays it into memory. Reading
//! stops at the first frame that runs past the end of the file or fails its
//! checksum. If no valid record follows it, that is a **torn tail** (a write
//! cut short by `kill -9` or a power loss): the file is truncated there, with
//! a warning giving the offset and the bytes dropped. If a valid record does
//! follow, it is damage in the middle, and open fails with
//! [`StoreError::Corrupt`] naming the file, the offset and the next valid
//! record — rather than silently dropping a good suffix. (Power loss in the
//! `batch` and `none` modes can in principle leave a hole of zeros inside the
//! unsynced tail; an operator who accepts losing that tail opens with
//! [`StoreOptions::salvage`].) An unfinished compaction's temporary file is
//! deleted.
//!
//! # In memory, per shard
//!
//! [`Store`] holds its partitions' accounts and, per history key, a bounded
//! deque of messages ([`HistoryLimits`]: messages per channel, per
//! conversation, maximum age), enforced on every append and by
//! [`Store::expire`], which the chat calls periodically (its cost is one pass
//! over the histories). Each history is kept in time order: a message stamped
//! earlier than the history's last is raised to that time. The CHATHISTORY
//! queries ([`Store::latest`], [`Store::before`], [`Store::after`],
//! [`Store::around`], [`Store::between`], [`Store::targets`]) follow the IRCv3
//! `draft/chathistory` semantics and return borrowed messages in ascending time
//! order.
//!
//! # Threading: writes never block the shard
//!
//! - **The shard** calls [`Store::put_account`], [`Store::delete_account`] and
//!   [`Store::append_message`]: memory changes at once, and the record is
//!   encoded into this turn's per-partition batch and given a sequence number.
//!   Once per loop turn it calls [`Store::end_turn`], which hands the batch to
//!   the writer with `try_send` on a bounded channel. If the channel is full
//!   the batch stays in memory and grows; past [`StoreOptions::max_unwritten`]
//!   bytes waiting (in the channel and here), new *history* records are not
//!   stored (kept in memory, counted in `records_dropped`, logged once a
//!   minute). Account records are never dropped.
//! - **The writer thread** (one per store) appends each batch to its logs with
//!   `write(2)` as soon as it arrives, and syncs per the policy below. A sync
//!   round `fdatasync`s every log written since the last round, concurrently on
//!   a few helper threads ([`StoreOptions::sync_threads`]): file systems commit
//!   concurrent syncs together, while 32 syncs one after another cost 32 journal
//!   commits (measured below). It reports progress through the callback given
//!   at open ([`Notify`]; the chat posts it into the shard through a `Remote`),
//!   which the shard passes to [`Store::on_report`]: [`WriterReport::written`]
//!   (every record up to there reached the kernel or failed) and
//!   [`WriterReport::synced`] (every record up to there is on stable storage or
//!   failed). Reports come at most every 5 ms for `written` alone, after every
//!   sync round, and at once when an account write resolves.
//! - **Account tickets**: `put_account`/`delete_account` return a [`Ticket`];
//!   `on_report` returns it [`Completed`] once `synced` covers it — `Ok` when
//!   durable, `Err` when the write failed, in which case the account's
//!   in-memory state is reverted to what is on disk. The chat answers REGISTER
//!   only then.
//! - **Compaction**: when a log is more than twice its live size (the bytes a
//!   rewrite would hold, which the shard tracks exactly and sends with its
//!   batches) and at least [`StoreOptions::compact_min`] (4 MiB), the writer
//!   starts a job on a helper thread: it reads the log up to its current length,
//!   replays it with the same code as recovery, writes the live records to
//!   `pNN.log.compact` and syncs it. The writer keeps appending to the old log
//!   meanwhile; when the job is done it copies the records appended since (the
//!   tail past the length the job read) to the new file, syncs it, renames it
//!   over the log and syncs the directory. Rebuilding from the log rather than
//!   from a snapshot of the shard's memory costs the shard nothing, and the new
//!   file replays to exactly what the old one did, by construction. A failed
//!   compaction leaves the old log and is retried a minute later.
//!
//! # Durability (`[storage] sync`)
//!
//! `kill -9` of the process loses nothing the kernel has received: the page
//! cache outlives the process. Power loss (or a kernel crash) loses what was
//! not yet synced.
//!
//! | [`SyncPolicy`] | `kill -9` may lose | power loss may lose | acknowledged (`synced`) |
//! |---|---|---|---|
//! | `always` | the records of the current loop turn and those queued for the writer — which queue while it waits for a sync round, so about one round's worth — none of them acknowledged | the same: nothing acknowledged | after the fsync of every batch |
//! | `batch` (default, 5 ms) | history not yet handed to the writer — the chat hands history over once per interval (accounts at the end of the loop turn) — plus what waits for the writer during a sync round: at most the interval plus one round (5 ms + 0.3 to 3.5 ms here); never an account | history written since the last sync round plus what was not handed over: at most twice the interval plus one round (10 ms + 0.3 to 3.5 ms on the disk measured below) | at most every interval, at once for account records |
//! | `none` | like `batch`: history of the last 5 ms (the chat's hand-over interval) | all history the kernel has not written back yet (Linux: up to `dirty_expire_centisecs` + `dirty_writeback_centisecs`, 30 + 5 s by default) | only with account records |
//!
//! In every mode an account record is fsynced before its ticket completes,
//! so **no mode loses an acknowledged account**, and `kill -9` loses nothing
//! whose `written` was reported.
//!
//! Why 5 ms: it bounds what a power loss takes to a few milliseconds of
//! history and caps sync rounds at 200 per second per shard, each round
//! syncing the logs written since the last (at most the shard's
//! `64 / shards` partitions). A round costs about one fsync latency since its
//! syncs are concurrent, so a shorter interval buys little once it nears the
//! round's own time, and a longer one only widens the window.
//!
//! Measured with `examples/store_bench.rs` (release build; one shard owning 32
//! partitions, as with 2 shards; 32 messages of 200 bytes per turn spread over
//! all 32 logs; a 2-core VM whose virtual disk other jobs share): the default
//! policy made about 190 sync rounds and 6,000 `fdatasync` calls per second
//! (every round syncs all 32 logs; the 5 ms interval is the limit), with 75,000
//! appends per second at 200 µs between turns and 160,000 with no pause,
//! nothing dropped. This disk's `fdatasync` took about 0.3 ms when idle and 3.5
//! ms while other jobs loaded it; at 3.5 ms, 32 logs synced one after another
//! made 8.5 rounds per second and 4 threads 340 (the file system commits
//! concurrent syncs together) — hence the concurrent rounds.
//!
//! # Errors at run time
//!
//! A failed write, sync or truncation (`ENOSPC`, `EROFS`, `EIO`) is logged once
//! per kind of error per minute, counted ([`StoreStats`]: bytes written, fsyncs,
//! records dropped, write errors, last error), and never panics or stops the
//! shard. The failed bytes are cut off the log again, so a later record never
//! follows a torn one. History records in them are counted as dropped (they
//! stay in memory; they are lost at the next restart); account tickets complete
//! with a [`WriteError`], so the chat refuses the change. A failed sync cuts the
//! log back to its last synced length: an account whose ticket failed can never
//! reappear after a restart.
//!
//! # One process at a time
//!
//! [`DataDir::open`] takes an exclusive `flock` on `DIR/lock` and writes its pid
//! there; another process — a second server, or the operator's account tool
//! while the server runs — gets "data directory DIR is in use by process PID".
//! The shards of one server share one [`DataDir`]. Offline tools use
//! [`open_all`], which opens all 64 partitions in one store on the calling
//! thread and offers a blocking [`OfflineStore::flush`].

mod codec;
mod crc;
mod disk;
mod error;
mod key;
mod lock;
mod memory;
mod recover;
mod stats;
mod writer;

#[cfg(test)]
mod tests;

use std::{
    collections::{HashMap, VecDeque},
    ops::{Deref, DerefMut},
    path::PathBuf,
    str::FromStr,
    sync::{
        atomic::Ordering::Relaxed,
        mpsc::{self, Receiver, SyncSender, TrySendError},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

pub use codec::{Account, Message, MessageKind, MAX_PAYLOAD};
pub use disk::{Disk, DiskFile, RealDisk};
pub use error::{StoreError, WriteError};
pub use key::{
    account_key, channel_key, conversation_key, conversation_parties, conversation_peer,
    is_channel_key, partition_of, shard_of_partition, PARTITIONS,
};
pub use lock::DataDir;
pub use memory::{
    select_targets, HistoryLimits, MsgRef, TargetFilter, TargetSummary, UnknownMsgid,
};
pub use stats::{StatsSnapshot, StoreStats};
use tracing::{error, info, warn};
use writer::{OutBatch, PartState, PartWrite, ToWriter, Writer, WriterSetup};

use self::memory::Memory;

/// When the writer syncs (`[storage] sync`); see the durability table in the
/// module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Sync every batch before acknowledging anything in it.
    Always,
    /// Sync at most every `interval_ms`, and at once for a batch holding account
    /// records.
    Batch {
        /// The longest a written record waits for its sync round.
        interval_ms: u32,
    },
    /// Never sync history (the kernel writes it back when it likes); account
    /// records are still synced before their ticket completes.
    None,
}

/// The default sync interval of [`SyncPolicy::Batch`].
pub const DEFAULT_SYNC_INTERVAL_MS: u32 = 5;

impl Default for SyncPolicy {
    fn default() -> SyncPolicy {
        SyncPolicy::Batch {
            interval_ms: DEFAULT_SYNC_INTERVAL_MS,
        }
    }
}

impl FromStr for SyncPolicy {
    type Err = String;

    /// `always`, `none`, `batch` (every 5 ms) or `batch:<ms>`.
    fn from_str(s: &str) -> Result<SyncPolicy, String> {
        match s {
            "always" => Ok(SyncPolicy::Always),
            "none" => Ok(SyncPolicy::None),
            "batch" => Ok(SyncPolicy::default()),
            _ => s
                .strip_prefix("batch:")
                .and_then(|ms| ms.parse().ok())
                .filter(|&ms| ms > 0)
                .map(|interval_ms| SyncPolicy::Batch { interval_ms })
                .ok_or_else(|| {
                    format!("sync policy {s:?}: expected always, batch, batch:<ms> or none")
                }),
        }
    }
}

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// When to sync.
    pub sync: SyncPolicy,
    /// History bounds.
    pub limits: HistoryLimits,
    /// Bytes of records that may wait for the writer (in the shard's batch and
    /// the channel) before history records are no longer stored.
    pub max_unwritten: u64,
    /// Batches the channel to the writer holds before the shard keeps batching
    /// in memory.
    pub channel_capacity: usize,
    /// A log is compacted once at least this large and more than twice its
    /// live size.
    pub compact_min: u64,
    /// Threads that sync logs concurrently in a sync round (0 or 1: the writer
    /// syncs them one after another).
    pub sync_threads: usize,
    /// Truncate a log at damage followed by valid records (logged) instead of
    /// refusing to open. For an operator who accepts losing the records after
    /// it.
    pub salvage: bool,
    /// The file operations (tests inject failures and gates here).
    pub disk: Arc<dyn Disk>,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            sync: SyncPolicy::default(),
            limits: HistoryLimits::default(),
            max_unwritten: 32 << 20,
            channel_capacity: 16,
            compact_min: 4 << 20,
            sync_threads: 4,
            salvage: false,
            disk: Arc::new(RealDisk),
        }
    }
}

/// The data directory used when none is configured: `$STATE_DIRECTORY` (set
/// by systemd's `StateDirectory=`) if set, else `./shardline-chat-data`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("shardline-chat-data"), PathBuf::from)
}

/// An account write's claim check: its record's sequence number. It completes
/// (in [`Store::on_report`]) when the record is durable or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(pub u64);

/// A ticket's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// The ticket.
    pub ticket: Ticket,
    /// `Ok`: durable. `Err`: not written; the account change was reverted in
    /// memory.
    pub result: Result<(), WriteError>,
}

/// What the writer thread tells the shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterReport {
    /// Every record with a sequence number up to this one reached the kernel
    /// (survives `kill -9`) or failed.
    pub written: u64,
    /// Every record up to this one is on stable storage (survives power loss)
    /// or failed.
    pub synced: u64,
    /// Account records that failed, by sequence number.
    pub failed: Vec<(u64, WriteError)>,
}

/// The callback through which the writer thread reports (called on the writer
/// thread, at most every few milliseconds). The chat posts the report into the
/// shard, which hands it to [`Store::on_report`].
pub type Notify = Box<dyn FnMut(WriterReport) + Send>;

/// This turn's records, per partition, not yet handed to the writer.
#[derive(Debug)]
struct Pending {
    parts: Vec<PartWrite>,
    slot: Vec<usize>,
    bytes: u64,
    accounts: bool,
}

impl Pending {
    fn new() -> Pending {
        Pending {
            parts: Vec::new(),
            slot: vec![usize::MAX; usize::from(PARTITIONS)],
            bytes: 0,
            accounts: false,
        }
    }

    fn part(&mut self, p: u16) -> &mut PartWrite {
        let s = &mut self.slot[usize::from(p)];
        if *s == usize::MAX {
            *s = self.parts.len();
            self.parts.push(PartWrite {
                part: p,
                ..PartWrite::default()
            });
        }
        &mut self.parts[*s]
    }

    fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    fn take(&mut self) -> (Vec<PartWrite>, u64, bool) {
        for pw in &self.parts {
            self.slot[usize::from(pw.part)] = usize::MAX;
        }
        let mut parts = std::mem::take(&mut self.parts);
        parts.retain(|pw| !pw.data.is_empty());
        let r = (parts, self.bytes, self.accounts);
        self.bytes = 0;
        self.accounts = false;
        r
    }

    /// Puts back a batch the channel had no room for.
    fn restore(&mut self, parts: Vec<PartWrite>, bytes: u64, accounts: bool) {
        debug_assert!(self.parts.is_empty());
        for (i, pw) in parts.iter().enumerate() {
            self.slot[usize::from(pw.part)] = i;
        }
        self.parts = parts;
        self.bytes = bytes;
        self.accounts = accounts;
    }
}

/// An account's changes not yet resolved, and its state on disk before them.
#[derive(Debug)]
struct AccountOps {
    base: Option<Account>,
    ops: VecDeque<(u64, Option<Account>)>,
}

/// One shard's store: its partitions' accounts and histories in memory, and a
/// writer thread that makes them durable. See the module doc.
pub struct Store {
    dir: DataDir,
    shard: usize,
    shards: usize,
    owned: Vec<bool>,
    mem: Memory,
    max_unwritten: u64,
    next_seq: u64,
    written: u64,
    synced: u64,
    pending: Pending,
    live_sent: Vec<u64>,
    limits_dirty: bool,
    tx: Option<SyncSender<ToWriter>>,
    writer: Option<JoinHandle<()>>,
    stats: Arc<StoreStats>,
    /// Unresolved account changes, in sequence order.
    ops: VecDeque<(u64, String)>,
    account_ops: HashMap<String, AccountOps>,
    failures: HashMap<u64, WriteError>,
    dropped_unlogged: u64,
    drop_logged: Option<Instant>,
    /// Detached for an upgrade ([`Store::detach`]): what was said since.
    detached: Option<Held>,
}

/// The messages a detached store kept in memory only, in order (bounded by
/// [`StoreOptions::max_unwritten`] bytes; `dropped` counts what did not fit).
#[derive(Debug, Default)]
struct Held {
    messages: Vec<Message>,
    bytes: u64,
    dropped: u64,
}

/// A store's writer finishing its work after [`Store::detach`]: wait for it
/// off the shard's thread.
#[derive(Debug)]
pub struct Detaching {
    writer: Option<JoinHandle<()>>,
}

impl Detaching {
    /// Blocks until the writer has written and synced everything handed to it
    /// and stopped.
    pub fn wait(mut self) -> Result<(), StoreError> {
        match self.writer.take() {
            Some(h) => h.join().map_err(|_| StoreError::WriterGone),
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir.path())
            .field("shard", &self.shard)
            .field("shards", &self.shards)
            .field("next_seq", &self.next_seq)
            .field("written", &self.written)
            .field("synced", &self.synced)
            .finish_non_exhaustive()
    }
}

fn account_frame_size(a: &Account) -> usize {
    let mut v = Vec::new();
    codec::encode_account_put(&mut v, a).unwrap_or(0)
}

impl Store {
    /// Opens shard `shard`'s partitions (those `p` with `p % shards == shard`)
    /// in `dir`, recovering each log, and starts the writer thread, which
    /// reports through `notify`. Blocks while it reads the logs: call it at
    /// startup.
    pub fn open(
        dir: &DataDir,
        shard: usize,
        shards: usize,
        options: StoreOptions,
        notify: Notify,
    ) -> Result<Store, StoreError> {
        if shard >= shards {
            return Err(StoreError::io(
                "open store",
                dir.path(),
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("shard {shard} of {shards}"),
                ),
            ));
        }
        let mut mem = Memory::new(options.limits);
        let mut owned = vec![false; usize::from(PARTITIONS)];
        let mut opened = Vec::new();
        for p in (0..PARTITIONS).filter(|&p| shard_of_partition(p, shards) == shard) {
            let o = recover::recover_partition(dir, p, &*options.disk, &mut mem, options.salvage)?;
            owned[usize::from(p)] = true;
            opened.push((p, o));
        }
        if opened.iter().any(|(_, o)| o.created) {
            options
                .disk
                .sync_dir(dir.path())
                .map_err(|e| StoreError::io("sync directory", dir.path(), e))?;
        }
        mem.expire(crate::clock::now_millis());
        let parts = opened
            .into_iter()
            .map(|(p, o)| {
                PartState::new(p, dir.log_path(p), o.file, o.len, mem.live[usize::from(p)])
            })
            .collect();
        let stats = Arc::new(StoreStats::default());
        let (tx, writer) = Writer::spawn(WriterSetup {
            dir: dir.clone(),
            disk: options.disk.clone(),
            policy: options.sync,
            limits: options.limits,
            compact_min: options.compact_min,
            sync_threads: options.sync_threads,
            parts,
            notify,
            stats: stats.clone(),
            name: format!("store{shard}"),
            capacity: options.channel_capacity,
        })
        .map_err(|e| StoreError::io("start the writer thread for", dir.path(), e))?;
        info!(
            dir = %dir.path().display(),
            shard,
            partitions = owned.iter().filter(|&&o| o).count(),
            accounts = mem.account_count(),
            messages = mem.message_count(),
            "store opened"
        );
        Ok(Store {
            dir: dir.clone(),
            shard,
            shards,
            owned,
            live_sent: mem.live.clone(),
            mem,
            max_unwritten: options.max_unwritten,
            next_seq: 1,
            written: 0,
            synced: 0,
            pending: Pending::new(),
            limits_dirty: false,
            tx: Some(tx),
            writer: Some(writer),
            stats,
            ops: VecDeque::new(),
            account_ops: HashMap::new(),
            failures: HashMap::new(),
            dropped_unlogged: 0,
            drop_logged: None,
            detached: None,
        })
    }

    /// The data directory.
    pub fn dir(&self) -> &DataDir {
        &self.dir
    }

    /// Whether this store holds `key`'s partition.
    pub fn owns(&self, key: &str) -> bool {
        self.owned[usize::from(partition_of(key))]
    }

    /// The partitions this store holds.
    pub fn partitions(&self) -> impl Iterator<Item = u16> + '_ {
        (0..PARTITIONS).filter(|&p| self.owned[usize::from(p)])
    }

    /// The counters (share them with the admin endpoint).
    pub fn stats(&self) -> &Arc<StoreStats> {
        &self.stats
    }

    /// The last sequence number given out (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Whether records (or new bounds) wait for [`Store::end_turn`] to hand
    /// them to the writer — after one whose channel was full, call it again
    /// soon rather than at the next append.
    pub fn unsent(&self) -> bool {
        self.tx.is_some() && (!self.pending.is_empty() || self.limits_dirty)
    }

    /// Every record up to this sequence number reached the kernel or failed.
    pub fn written_seq(&self) -> u64 {
        self.written
    }

    /// Every record up to this sequence number is durable or failed.
    pub fn synced_seq(&self) -> u64 {
        self.synced
    }

    fn owned_partition(&self, key: &str) -> Result<u16, StoreError> {
        let p = partition_of(key);
        if self.owned[usize::from(p)] {
            Ok(p)
        } else {
            Err(StoreError::NotOwned {
                key: key.to_owned(),
                partition: p,
            })
        }
    }

    /// The account named `name` (any casing).
    pub fn account(&self, name: &str) -> Option<&Account> {
        self.mem.account(&account_key(name))
    }

    /// Every account in this store's partitions, in no order.
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.mem.accounts()
    }

    /// Creates or replaces the account `a.name` (any casing): memory at once,
    /// disk with this turn's batch. The ticket completes when it is durable.
    pub fn put_account(&mut self, a: Account) -> Result<Ticket, StoreError> {
        let key = account_key(&a.name);
        let p = self.owned_partition(&key)?;
        self.writable()?;
        let pw = self.pending.part(p);
        let size =
            codec::encode_account_put(&mut pw.data, &a).map_err(|e| StoreError::TooLarge(e.0))?;
        let seq = self.next_seq;
        self.next_seq += 1;
        pw.accounts.push(seq);
        self.pending.bytes += size as u64;
        self.pending.accounts = true;
        self.note_account_op(seq, &key, Some(a.clone()));
        self.mem.put_account(a, size);
        Ok(Ticket(seq))
    }

    /// Deletes the account `name` (any casing; a missing account is deleted all
    /// the same). The ticket completes when the deletion is durable.
    pub fn delete_account(&mut self, name: &str) -> Result<Ticket, StoreError> {
        let key = account_key(name);
        let p = self.owned_partition(&key)?;
        self.writable()?;
        let pw = self.pending.part(p);
        let size = codec::encode_account_delete(&mut pw.data, name)
            .map_err(|e| StoreError::TooLarge(e.0))?;
        let seq = self.next_seq;
        self.next_seq += 1;
        pw.accounts.push(seq);
        self.pending.bytes += size as u64;
        self.pending.accounts = true;
        self.note_account_op(seq, &key, None);
        self.mem.delete_account(&key);
        Ok(Ticket(seq))
    }

    fn writable(&self) -> Result<(), StoreError> {
        match (&self.detached, &self.tx) {
            (Some(_), _) => Err(StoreError::Detached),
            (None, None) => Err(StoreError::WriterGone),
            (None, Some(_)) => Ok(()),
        }
    }

    fn note_account_op(&mut self, seq: u64, key: &str, value: Option<Account>) {
        let mem = &self.mem;
        self.account_ops
            .entry(key.to_owned())
            .or_insert_with(|| AccountOps {
                base: mem.account(key).cloned(),
                ops: VecDeque::new(),
            })
            .ops
            .push_back((seq, value));
        self.ops.push_back((seq, key.to_owned()));
    }

    /// Appends `m` to the history `m.target`: kept in memory at once (unless the
    /// limits keep no history of its kind) and written with this turn's batch.
    /// Returns its sequence number, or `None` if it is not stored on disk (no
    /// history of its kind, or too much waiting for the writer — counted in
    /// `records_dropped`).
    pub fn append_message(&mut self, m: Message) -> Result<Option<u64>, StoreError> {
        self.write_message(m, false)
    }

    /// Places `m` in the history `m.target` by its time rather than at the
    /// end: a message another node kept while this one missed it (a cluster
    /// catching up). A msgid the history keeps already is skipped. Otherwise
    /// as [`Store::append_message`].
    pub fn insert_message(&mut self, m: Message) -> Result<Option<u64>, StoreError> {
        self.write_message(m, true)
    }

    fn write_message(&mut self, m: Message, caught_up: bool) -> Result<Option<u64>, StoreError> {
        let p = self.owned_partition(&m.target)?;
        if self.mem.limits.max_for(&m.target) == 0 || self.mem.has_message(&m.target, &m.msgid) {
            return Ok(None);
        }
        let waiting = self.stats.unwritten_bytes.load(Relaxed) + self.pending.bytes;
        let gone = self.tx.is_none();
        let pw = self.pending.part(p);
        let start = pw.data.len();
        let size = codec::encode_placed(&mut pw.data, &m, caught_up)
            .map_err(|e| StoreError::TooLarge(e.0))?;
        if gone || waiting + size as u64 > self.max_unwritten {
            pw.data.truncate(start);
            if let Some(held) = self.detached.as_mut() {
                // Handed over (an upgrade): kept for a store opened again.
                if held.bytes + size as u64 <= self.max_unwritten {
                    held.bytes += size as u64;
                    held.messages.push(m.clone());
                } else {
                    held.dropped += 1;
                }
            } else {
                self.note_dropped();
            }
            self.mem.place_message(m, size, caught_up);
            return Ok(None);
        }
        pw.history += 1;
        self.pending.bytes += size as u64;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.mem.place_message(m, size, caught_up);
        Ok(Some(seq))
    }

    fn note_dropped(&mut self) {
        StoreStats::add(&self.stats.records_dropped, 1);
        self.dropped_unlogged += 1;
        let now = Instant::now();
        if self
            .drop_logged
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            warn!(
                shard = self.shard,
                dropped = self.dropped_unlogged,
                "history not stored: the store's writer is behind (or stopped)"
            );
            self.drop_logged = Some(now);
            self.dropped_unlogged = 0;
        }
    }

    /// Drops messages older than the age limit at `now` (ms since the Unix
    /// epoch). Returns how many were dropped.
    pub fn expire(&mut self, now: u64) -> usize {
        self.mem.expire(now)
    }

    /// The history bounds in force.
    pub fn limits(&self) -> HistoryLimits {
        self.mem.limits
    }

    /// Changes the history bounds (a rehash): applied to memory at once, and
    /// to compaction from the next turn.
    pub fn set_limits(&mut self, limits: HistoryLimits, now: u64) {
        self.mem.limits = limits;
        self.mem.expire(now);
        self.limits_dirty = true;
    }

    /// Whether history `key` keeps the message `msgid`.
    pub fn has_message(&self, key: &str, msgid: &str) -> bool {
        self.mem.has_message(key, msgid)
    }

    /// Messages kept in history `key`.
    pub fn history_len(&self, key: &str) -> usize {
        self.mem.history_len(key)
    }

    /// The time of the last message kept in history `key`: a new message
    /// stamped earlier would be raised to it.
    pub fn last_time(&self, key: &str) -> Option<u64> {
        self.mem.last_time(key)
    }

    /// `CHATHISTORY LATEST`: the last `limit` messages of `key`, only those
    /// after (excluding) `after` if given (`*` is `None`).
    pub fn latest(
        &self,
        key: &str,
        after: Option<MsgRef<'_>>,
        limit: usize,
    ) -> Result<Vec<&Message>, UnknownMsgid> {
        self.mem.latest(key, after, limit)
    }

    /// `CHATHISTORY BEFORE`: the `limit` messages just before (excluding) `r`.
    pub fn before(
        &self,
        key: &str,
        r: MsgRef<'_>,
        limit: usize,
    ) -> Result<Vec<&Message>, UnknownMsgid> {
        self.mem.before(key, r, limit)
    }

    /// `CHATHISTORY AFTER`: the `limit` messages just after (excluding) `r`.
    pub fn after(
        &self,
        key: &str,
        r: MsgRef<'_>,
        limit: usize,
    ) -> Result<Vec<&Message>, UnknownMsgid> {
        self.mem.after(key, r, limit)
    }

    /// `CHATHISTORY AROUND`: at most `limit` messages around `r` — `limit / 2`
    /// before it, the rest from it on (a msgid's own message included, for a
    /// timestamp the messages at or after it); a side that runs short gives its
    /// share to the other.
    pub fn around(
        &self,
        key: &str,
        r: MsgRef<'_>,
        limit: usize,
    ) -> Result<Vec<&Message>, UnknownMsgid> {
        self.mem.around(key, r, limit)
    }

    /// `CHATHISTORY BETWEEN`: the messages strictly between `a` and `b`, at most
    /// `limit` counted from `a` (the first ones after `a` if `a` is the earlier,
    /// the last ones before it if it is the later).
    pub fn between(
        &self,
        key: &str,
        a: MsgRef<'_>,
        b: MsgRef<'_>,
        limit: usize,
    ) -> Result<Vec<&Message>, UnknownMsgid> {
        self.mem.between(key, a, b, limit)
    }

    /// `CHATHISTORY TARGETS` over this store's histories: those chosen by
    /// `filter` whose latest message is strictly between times `a` and `b`, at
    /// most `limit` counted from `a`, in ascending time order. A client's
    /// conversations are spread over every shard: merge the answers with
    /// [`select_targets`].
    pub fn targets(
        &self,
        filter: TargetFilter<'_>,
        a: u64,
        b: u64,
        limit: usize,
    ) -> Vec<TargetSummary> {
        self.mem.targets(filter, a, b, limit)
    }

    /// Ends the shard's loop turn: hands this turn's records to the writer
    /// (never blocking; if its channel is full they wait for the next turn).
    /// Returns tickets that failed because the writer thread is gone — normally
    /// none; the chat handles them like those of [`Store::on_report`].
    pub fn end_turn(&mut self) -> Vec<Completed> {
        let live_changed = self
            .partitions()
            .any(|p| self.mem.live[usize::from(p)] != self.live_sent[usize::from(p)]);
        if self.pending.is_empty() && !live_changed && !self.limits_dirty {
            return Vec::new();
        }
        let Some(tx) = self.tx.clone() else {
            return Vec::new();
        };
        if self.limits_dirty {
            match tx.try_send(ToWriter::Limits(self.mem.limits)) {
                Ok(()) => self.limits_dirty = false,
                Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => return self.writer_gone(),
            }
        }
        let live: Vec<(u16, u64)> = self
            .partitions()
            .filter(|&p| self.mem.live[usize::from(p)] != self.live_sent[usize::from(p)])
            .map(|p| (p, self.mem.live[usize::from(p)]))
            .collect();
        if self.pending.is_empty() && live.is_empty() {
            return Vec::new();
        }
        let (parts, bytes, accounts) = self.pending.take();
        // Counted before the writer can subtract it.
        self.stats.unwritten_bytes.fetch_add(bytes, Relaxed);
        let batch = OutBatch {
            parts,
            last_seq: self.next_seq - 1,
            live: live.clone(),
            bytes,
            accounts,
        };
        match tx.try_send(ToWriter::Batch(batch)) {
            Ok(()) => {
                for (p, v) in live {
                    self.live_sent[usize::from(p)] = v;
                }
                Vec::new()
            }
            Err(TrySendError::Full(m)) => {
                if let ToWriter::Batch(b) = m {
                    self.stats.unwritten_bytes.fetch_sub(b.bytes, Relaxed);
                    self.pending.restore(b.parts, b.bytes, b.accounts);
                }
                Vec::new()
            }
            Err(TrySendError::Disconnected(m)) => {
                if let ToWriter::Batch(b) = m {
                    self.stats.unwritten_bytes.fetch_sub(b.bytes, Relaxed);
                    let dropped: u64 = b.parts.iter().map(|pw| pw.history).sum();
                    StoreStats::add(&self.stats.records_dropped, dropped);
                }
                self.writer_gone()
            }
        }
    }

    /// The writer thread stopped (it never should): fail every unresolved
    /// account change, and stop writing.
    fn writer_gone(&mut self) -> Vec<Completed> {
        error!(
            shard = self.shard,
            "the store's writer thread has stopped: nothing more is stored"
        );
        self.tx = None;
        let e = WriteError {
            kind: std::io::ErrorKind::BrokenPipe,
            message: "the store's writer thread has stopped".into(),
        };
        let last = self.next_seq - 1;
        let failed = self.ops.iter().map(|(s, _)| (*s, e.clone())).collect();
        self.on_report(WriterReport {
            written: last,
            synced: last,
            failed,
        })
    }

    /// Takes a report from the writer thread (posted by the [`Notify`]
    /// callback); returns the account tickets it completes, in order. A failed
    /// ticket's change is reverted in memory.
    pub fn on_report(&mut self, r: WriterReport) -> Vec<Completed> {
        self.written = self.written.max(r.written);
        self.synced = self.synced.max(r.synced);
        self.failures.extend(r.failed);
        let mut done = Vec::new();
        while let Some((seq, _)) = self.ops.front() {
            if *seq > self.synced {
                break;
            }
            let Some((seq, key)) = self.ops.pop_front() else {
                break;
            };
            let result = match self.failures.remove(&seq) {
                Some(e) => Err(e),
                None => Ok(()),
            };
            if let Some(slot) = self.account_ops.get_mut(&key) {
                let value = slot.ops.pop_front().and_then(|(_, v)| v);
                if result.is_ok() {
                    slot.base = value;
                }
                if slot.ops.is_empty() {
                    let base = slot.base.take();
                    self.account_ops.remove(&key);
                    if result.is_err() {
                        // Back to what is on disk.
                        match base {
                            Some(a) => {
                                let size = account_frame_size(&a);
                                self.mem.put_account(a, size);
                            }
                            None => {
                                self.mem.delete_account(&key);
                            }
                        }
                    }
                }
            }
            done.push(Completed {
                ticket: Ticket(seq),
                result,
            });
        }
        done
    }

    /// Lets go of the disk for an upgrade's new process: hands everything over
    /// and tells the writer to stop once it has written and synced all of it
    /// (wait for that with [`Detaching::wait`], off the shard's thread). From
    /// then on the store serves from memory: reads as before; messages are
    /// kept in memory (and held for [`Store::take_held`]) but not written;
    /// account changes fail with [`StoreError::Detached`]. Unresolved account
    /// tickets complete through the writer's last report as usual.
    pub fn detach(&mut self) -> Detaching {
        if let Some(tx) = self.tx.take() {
            let (parts, bytes, accounts) = self.pending.take();
            self.stats.unwritten_bytes.fetch_add(bytes, Relaxed);
            let _ = tx.send(ToWriter::Limits(self.mem.limits));
            let _ = tx.send(ToWriter::Batch(OutBatch {
                parts,
                last_seq: self.next_seq - 1,
                live: Vec::new(),
                bytes,
                accounts,
            }));
            let _ = tx.send(ToWriter::Shutdown);
        }
        self.detached.get_or_insert_with(Held::default);
        Detaching {
            writer: self.writer.take(),
        }
    }

    /// Numbers this freshly opened store's records after `before`'s (a
    /// detached store of the same shard this one replaces), so that a late
    /// report of the old writer cannot be taken for this one's progress.
    /// Call it before any record is added.
    pub fn continue_after(&mut self, before: &Store) {
        if self.next_seq == 1 {
            self.next_seq = before.next_seq;
            self.written = before.next_seq - 1;
            self.synced = before.next_seq - 1;
        }
    }

    /// Whether [`Store::detach`] was called.
    pub fn is_detached(&self) -> bool {
        self.detached.is_some()
    }

    /// The messages kept in memory only since [`Store::detach`], in order, and
    /// how many did not fit the bound — for a store opened again on the same
    /// directory to append (an upgrade that failed).
    pub fn take_held(&mut self) -> (Vec<Message>, u64) {
        match self.detached.as_mut() {
            Some(h) => {
                h.bytes = 0;
                (
                    std::mem::take(&mut h.messages),
                    std::mem::take(&mut h.dropped),
                )
            }
            None => (Vec::new(), 0),
        }
    }

    /// Hands everything over and stops the writer, which writes and syncs all
    /// of it first. Blocks until then: call it when the shard stops.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), StoreError> {
        if let Some(tx) = self.tx.take() {
            let (parts, bytes, accounts) = self.pending.take();
            self.stats.unwritten_bytes.fetch_add(bytes, Relaxed);
            let last_seq = self.next_seq - 1;
            let _ = tx.send(ToWriter::Limits(self.mem.limits));
            let _ = tx.send(ToWriter::Batch(OutBatch {
                parts,
                last_seq,
                live: Vec::new(),
                bytes,
                accounts,
            }));
            let _ = tx.send(ToWriter::Shutdown);
        }
        match self.writer.take() {
            Some(h) => h.join().map_err(|_| StoreError::WriterGone),
            None => Ok(()),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// A store of all 64 partitions for offline tools (the `account` commands),
/// with a blocking [`OfflineStore::flush`]. Dereferences to [`Store`].
#[derive(Debug)]
pub struct OfflineStore {
    store: Store,
    reports: Receiver<WriterReport>,
}

/// Opens `dir` (locking it) with every partition in one store, for offline
/// tools. Fails with "data directory DIR is in use by process PID" while a
/// server runs on it.
pub fn open_all(
    dir: impl AsRef<std::path::Path>,
    options: StoreOptions,
) -> Result<OfflineStore, StoreError> {
    let dir = DataDir::open(dir)?;
    let (tx, reports) = mpsc::channel();
    let store = Store::open(
        &dir,
        0,
        1,
        options,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    )?;
    Ok(OfflineStore { store, reports })
}

impl OfflineStore {
    /// Writes and syncs everything done so far, and returns the completed
    /// tickets. Blocks until then.
    pub fn flush(&mut self) -> Result<Vec<Completed>, StoreError> {
        let s = &mut self.store;
        let mut done = s.end_turn();
        let tx = s.tx.clone().ok_or(StoreError::WriterGone)?;
        if !s.pending.is_empty() {
            // The channel was full; offline, waiting for room is fine.
            let (parts, bytes, accounts) = s.pending.take();
            s.stats.unwritten_bytes.fetch_add(bytes, Relaxed);
            tx.send(ToWriter::Batch(OutBatch {
                parts,
                last_seq: s.next_seq - 1,
                live: Vec::new(),
                bytes,
                accounts,
            }))
            .map_err(|_| StoreError::WriterGone)?;
        }
        tx.send(ToWriter::Sync)
            .map_err(|_| StoreError::WriterGone)?;
        let target = s.next_seq - 1;
        while s.synced < target || !s.ops.is_empty() {
            let r = self.reports.recv().map_err(|_| StoreError::WriterGone)?;
            done.extend(s.on_report(r));
        }
        Ok(done)
    }

    /// Flushes, then closes the store and releases the directory.
    pub fn close(mut self) -> Result<Vec<Completed>, StoreError> {
        let done = self.flush()?;
        self.store.shutdown()?;
        Ok(done)
    }
}

impl Deref for OfflineStore {
    type Target = Store;

    fn deref(&self) -> &Store {
        &self.store
    }
}

impl DerefMut for OfflineStore {
    fn deref_mut(&mut self) -> &mut Store {
        &mut self.store
    }
}
