//! Per-shard counters, readable from any thread.
//!
//! Each counter is written by exactly one thread (its shard) and read by anyone, so a
//! write is a plain `load` + `store` (no locked read-modify-write on the hot path) and
//! every counter sits on its own cache line so readers never slow the writer's line.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use crossbeam_utils::CachePadded;

use crate::shard::mailbox::MailboxSnapshot;

/// One single-writer counter on its own cache line: written by one thread (its
/// shard) with a plain load and store, read by any thread. Applications use it for
/// their own per-shard counters (e.g. for the admin endpoint's `/metrics`).
///
/// Only one thread may write a given counter: two writers would lose updates (no
/// undefined behaviour, just wrong counts). Readers see each counter's latest value
/// but no consistent snapshot across counters.
#[derive(Default)]
pub struct Counter(CachePadded<AtomicU64>);

impl Counter {
    /// A counter at zero.
    pub fn new() -> Counter {
        Counter::default()
    }

    /// Adds `n`. Only the owning thread calls this.
    #[inline]
    pub fn add(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_add(n), Ordering::Relaxed);
    }

    /// Subtracts `n` (for gauges). Only the owning thread calls this.
    #[inline]
    pub fn sub(&self, n: u64) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v.wrapping_sub(n), Ordering::Relaxed);
    }

    /// Sets the value (for gauges). Only the owning thread calls this.
    #[inline]
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }

    /// The current value; any thread.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

/// Live counters of one shard. Read them with [`ShardMetrics::snapshot`].
#[derive(Default)]
pub struct ShardMetrics {
    pub(crate) conns_live: Counter,
    pub(crate) conns_accepted: Counter,
    pub(crate) conns_connected: Counter,
    pub(crate) conns_closed: Counter,
    /// Accepted connections closed (the handoff acceptor's view of a shard's load
    /// is what it handed minus this: one read, no torn pair of counters).
    pub(crate) conns_inbound_closed: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) loop_turns: Counter,
    pub(crate) syscalls: Counter,
    pub(crate) handler_panics: Counter,
    pub(crate) closed_send_queue_full: Counter,
    pub(crate) pool_bytes: Counter,
    pub(crate) pool_off_node_pages: Counter,
    pub(crate) relays_started: Counter,
    pub(crate) bytes_spliced: Counter,
}

/// A point-in-time copy of one shard's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardMetricsSnapshot {
    /// Connections open now (accepted or connected, not yet closed).
    pub conns_live: u64,
    /// Connections accepted since start.
    pub conns_accepted: u64,
    /// Outbound connections that connected since start.
    pub conns_connected: u64,
    /// Connections closed since start (for any reason).
    pub conns_closed: u64,
    /// Bytes read from sockets.
    pub bytes_in: u64,
    /// Bytes written to sockets.
    pub bytes_out: u64,
    /// Event-loop turns.
    pub loop_turns: u64,
    /// Blocking waits and submissions into the kernel (io_uring_enter / epoll_wait).
    pub syscalls: u64,
    /// Handler callbacks that panicked.
    pub handler_panics: u64,
    /// Connections closed because their outbound queue passed the hard limit.
    pub closed_send_queue_full: u64,
    /// Bytes of read-buffer pool the shard holds.
    pub pool_bytes: u64,
    /// Pool pages hwloc found on another NUMA node than the shard's (0 is right).
    pub pool_off_node_pages: u64,
    /// Relays started with `Ctx::splice_into` (each got a pipe).
    pub relays_started: u64,
    /// Bytes moved through relay pipes (also counted in `bytes_in`/`bytes_out`).
    pub bytes_spliced: u64,
    /// Cross-shard messages this shard posted.
    pub msgs_sent: u64,
    /// Cross-shard messages (and handed-off connections) this shard took in.
    pub msgs_received: u64,
    /// Doorbell (eventfd) writes this shard made to wake another.
    pub doorbell_writes: u64,
    /// Posts from this shard that met a full mailbox.
    pub mailbox_full: u64,
}

impl ShardMetrics {
    /// Reads every counter (each individually; the set is not one atomic snapshot).
    pub fn snapshot(&self) -> ShardMetricsSnapshot {
        ShardMetricsSnapshot {
            conns_live: self.conns_live.get(),
            conns_accepted: self.conns_accepted.get(),
            conns_connected: self.conns_connected.get(),
            conns_closed: self.conns_closed.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            loop_turns: self.loop_turns.get(),
            syscalls: self.syscalls.get(),
            handler_panics: self.handler_panics.get(),
            closed_send_queue_full: self.closed_send_queue_full.get(),
            pool_bytes: self.pool_bytes.get(),
            pool_off_node_pages: self.pool_off_node_pages.get(),
            relays_started: self.relays_started.get(),
            bytes_spliced: self.bytes_spliced.get(),
            ..ShardMetricsSnapshot::default()
        }
    }
}

impl fmt::Debug for ShardMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.snapshot().fmt(f)
    }
}

/// Reads one shard's mailbox counters (the mailboxes are typed by the handler's
/// message type, so they are reached through this).
pub(crate) type MailStats = Arc<dyn Fn(usize) -> MailboxSnapshot + Send + Sync>;

/// The counters of every shard of a server, cheap to clone and share.
#[derive(Clone)]
pub struct Metrics {
    pub(crate) shards: Arc<[ShardMetrics]>,
    mail: Option<MailStats>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.snapshot()).finish()
    }
}

impl Metrics {
    pub(crate) fn new(shards: usize, mail: Option<MailStats>) -> Metrics {
        Metrics {
            shards: (0..shards).map(|_| ShardMetrics::default()).collect(),
            mail,
        }
    }

    /// Accepted connections of `shard` closed so far.
    pub(crate) fn inbound_closed(&self, shard: usize) -> u64 {
        self.shards
            .get(shard)
            .map_or(0, |m| m.conns_inbound_closed.get())
    }

    /// One shard's counters.
    pub fn shard(&self, shard: usize) -> Option<&ShardMetrics> {
        self.shards.get(shard)
    }

    /// A snapshot of one shard (mailbox counters included); zeros for an unknown
    /// shard.
    pub fn snapshot_shard(&self, shard: usize) -> ShardMetricsSnapshot {
        let Some(m) = self.shards.get(shard) else {
            return ShardMetricsSnapshot::default();
        };
        let mut s = m.snapshot();
        if let Some(mail) = &self.mail {
            let b = mail(shard);
            s.msgs_sent = b.sent;
            s.msgs_received = b.received;
            s.doorbell_writes = b.doorbell_writes;
            s.mailbox_full = b.full;
        }
        s
    }

    /// Snapshots of every shard, in shard order.
    pub fn snapshot(&self) -> Vec<ShardMetricsSnapshot> {
        (0..self.shards.len())
            .map(|i| self.snapshot_shard(i))
            .collect()
    }

    /// The sum over all shards.
    pub fn total(&self) -> ShardMetricsSnapshot {
        self.snapshot()
            .into_iter()
            .fold(ShardMetricsSnapshot::default(), |a, s| {
                ShardMetricsSnapshot {
                    conns_live: a.conns_live + s.conns_live,
                    conns_accepted: a.conns_accepted + s.conns_accepted,
                    conns_connected: a.conns_connected + s.conns_connected,
                    conns_closed: a.conns_closed + s.conns_closed,
                    bytes_in: a.bytes_in + s.bytes_in,
                    bytes_out: a.bytes_out + s.bytes_out,
                    loop_turns: a.loop_turns + s.loop_turns,
                    syscalls: a.syscalls + s.syscalls,
                    handler_panics: a.handler_panics + s.handler_panics,
                    closed_send_queue_full: a.closed_send_queue_full + s.closed_send_queue_full,
                    pool_bytes: a.pool_bytes + s.pool_bytes,
                    pool_off_node_pages: a.pool_off_node_pages + s.pool_off_node_pages,
                    relays_started: a.relays_started + s.relays_started,
                    bytes_spliced: a.bytes_spliced + s.bytes_spliced,
                    msgs_sent: a.msgs_sent + s.msgs_sent,
                    msgs_received: a.msgs_received + s.msgs_received,
                    doorbell_writes: a.doorbell_writes + s.doorbell_writes,
                    mailbox_full: a.mailbox_full + s.mailbox_full,
                }
            })
    }
}

/// An application's per-shard values (its own counters, say), shared between
/// the shards and the admin thread. Each shard inserts its value once, when
/// its handler is made, and keeps the returned `Arc`; the lock is taken only
/// then and by readers ([`PerShard::snapshot`]), never on a shard's hot path.
#[derive(Debug)]
pub struct PerShard<T> {
    shards: std::sync::Mutex<Vec<(usize, Arc<T>)>>,
}

impl<T> Default for PerShard<T> {
    fn default() -> PerShard<T> {
        PerShard {
            shards: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl<T> PerShard<T> {
    /// Shard `shard`'s value from now on (replacing any it had); returns it
    /// shared.
    pub fn insert(&self, shard: usize, value: T) -> Arc<T> {
        let value = Arc::new(value);
        let mut shards = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        shards.retain(|(id, _)| *id != shard);
        shards.push((shard, value.clone()));
        shards.sort_by_key(|(id, _)| *id);
        value
    }

    /// Every shard's value, by shard number.
    pub fn snapshot(&self) -> Vec<(usize, Arc<T>)> {
        self.shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod per_shard_tests {
    use super::PerShard;

    #[test]
    fn values_are_kept_by_shard_and_replaced() {
        let p = PerShard::default();
        p.insert(2, "two");
        p.insert(0, "zero");
        let old = p.insert(1, "one");
        p.insert(1, "uno");
        let seen: Vec<(usize, &str)> = p.snapshot().iter().map(|(i, v)| (*i, **v)).collect();
        assert_eq!(seen, [(0, "zero"), (1, "uno"), (2, "two")]);
        assert_eq!(*old, "one", "an earlier holder keeps its own value");
    }
}
