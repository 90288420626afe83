//! Per-shard counters, readable from any thread.
//!
//! Each counter is written by exactly one thread (its shard) and read by anyone, so a
//! write is a plain `load` + `store` (no locked read-modify-write on the hot path) and
//! every counter sits on its own cache line so readers never slow the writer's line.
//!
//! - `table.rs`: the framework's per-shard counters, declared once (field,
//!   Prometheus name, type, help), which makes [`ShardMetrics`],
//!   [`ShardMetricsSnapshot`] and their Prometheus rows;
//! - `prom.rs`: [`PromWriter`], the Prometheus text exposition format, which the
//!   admin endpoint and applications write through.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use crossbeam_utils::CachePadded;

mod prom;
mod table;

pub use prom::{PromValue, PromWriter, CONTENT_TYPE};
pub use table::{ShardMetrics, ShardMetricsSnapshot};

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
        let s = m.snapshot();
        match &self.mail {
            Some(mail) => s.with_mailbox(mail(shard)),
            None => s,
        }
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
            .fold(ShardMetricsSnapshot::default(), ShardMetricsSnapshot::sum)
    }

    /// Writes every shard's counters to `w`, each sample labelled `shard`, and the
    /// shard count as `shardline_shards`: one metric per field of
    /// [`ShardMetricsSnapshot`], named as [`ShardMetricsSnapshot::PROMETHEUS_NAMES`]
    /// lists. This is what the admin endpoint serves before the application's
    /// metrics.
    pub fn write_prometheus(&self, w: &mut PromWriter) {
        let shards = self.snapshot();
        w.gauge(
            "shardline_shards",
            "Shards (event-loop threads) this server runs.",
            &[],
            shards.len(),
        );
        for (i, s) in shards.iter().enumerate() {
            let shard = i.to_string();
            s.write_prometheus(w, &[("shard", shard.as_str())]);
        }
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
