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
//! | `batch` (default, 5 ms) | the same as `always`: the last turn, or the turns of one sync round (0.3 to 3.5 ms here), of history; never an account | history written since the last sync round: at most the interval plus one round (5 ms + 0.3 to 3.5 ms on the disk measured below) | at most every interval, at once for account records |
//! | `none` | the same as `always` | all history the kernel has not written back yet (Linux: up to `dirty_expire_centisecs` + `dirty_writeback_centisecs`, 30 + 5 s by default) | only with account records |
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
mod key;
mod memory;

pub use codec::{Account, Message, MessageKind, MAX_PAYLOAD};
pub use key::{
    account_key, channel_key, conversation_key, conversation_parties, conversation_peer,
    is_channel_key, partition_of, shard_of_partition, PARTITIONS,
};
pub use memory::{
    select_targets, HistoryLimits, MsgRef, TargetFilter, TargetSummary, UnknownMsgid,
};
