//! The store's counters, one set per store (per shard), for `/metrics`.

use std::sync::{
    atomic::{AtomicU64, Ordering::Relaxed},
    Mutex,
};

use shardline::PromWriter;

/// One store's counters. The writer thread and the shard each add to their
/// own; the admin thread reads. Atomics, never a lock on a write path (the
/// last error's text is behind a mutex taken only when a write fails).
#[derive(Debug, Default)]
pub struct StoreStats {
    pub(crate) bytes_written: AtomicU64,
    pub(crate) records_written: AtomicU64,
    pub(crate) fsyncs: AtomicU64,
    pub(crate) sync_rounds: AtomicU64,
    pub(crate) records_dropped: AtomicU64,
    pub(crate) write_errors: AtomicU64,
    pub(crate) compactions: AtomicU64,
    pub(crate) compaction_errors: AtomicU64,
    pub(crate) unwritten_bytes: AtomicU64,
    pub(crate) unsynced_records: AtomicU64,
    last_error_ms: AtomicU64,
    last_error: Mutex<String>,
}

/// A copy of a store's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Bytes appended to the logs.
    pub bytes_written: u64,
    /// Records appended to the logs.
    pub records_written: u64,
    /// `fdatasync` calls on log files.
    pub fsyncs: u64,
    /// Sync rounds (each syncs every file written since the last).
    pub sync_rounds: u64,
    /// History records not stored: refused because too much was waiting for
    /// the writer, or lost to a failed write.
    pub records_dropped: u64,
    /// Failed writes, syncs, truncations and compactions.
    pub write_errors: u64,
    /// Compactions done.
    pub compactions: u64,
    /// Compactions that failed (the old log is kept).
    pub compaction_errors: u64,
    /// Bytes handed to the writer and not yet written.
    pub unwritten_bytes: u64,
    /// Records written to the logs and not yet synced (lost if the machine
    /// fails now).
    pub unsynced_records: u64,
    /// When the last error happened (ms since the Unix epoch; 0: never).
    pub last_error_ms: u64,
    /// The last error's text (empty: none).
    pub last_error: String,
}

impl StoreStats {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub(crate) fn set_error(&self, text: String) {
        self.last_error_ms
            .store(crate::clock::now_millis(), Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = text;
    }

    /// The current values.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            bytes_written: self.bytes_written.load(Relaxed),
            records_written: self.records_written.load(Relaxed),
            fsyncs: self.fsyncs.load(Relaxed),
            sync_rounds: self.sync_rounds.load(Relaxed),
            records_dropped: self.records_dropped.load(Relaxed),
            write_errors: self.write_errors.load(Relaxed),
            compactions: self.compactions.load(Relaxed),
            compaction_errors: self.compaction_errors.load(Relaxed),
            unwritten_bytes: self.unwritten_bytes.load(Relaxed),
            unsynced_records: self.unsynced_records.load(Relaxed),
            last_error_ms: self.last_error_ms.load(Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Writes the counters labelled `shard`.
    pub fn render(&self, w: &mut PromWriter, shard: usize) {
        let s = self.snapshot();
        let shard = shard.to_string();
        let l = [("shard", shard.as_str())];
        let counters: [(&str, &str, u64); 8] = [
            (
                "shardline_chat_store_bytes_written_total",
                "Bytes appended to the store's logs.",
                s.bytes_written,
            ),
            (
                "shardline_chat_store_records_written_total",
                "Records appended to the store's logs.",
                s.records_written,
            ),
            (
                "shardline_chat_store_fsyncs_total",
                "fdatasync calls on the store's log files.",
                s.fsyncs,
            ),
            (
                "shardline_chat_store_sync_rounds_total",
                "Sync rounds (each syncs every log file written since the last).",
                s.sync_rounds,
            ),
            (
                "shardline_chat_store_records_dropped_total",
                "History records not stored (writer backlog full, or a failed write).",
                s.records_dropped,
            ),
            (
                "shardline_chat_store_write_errors_total",
                "Failed store writes, syncs, truncations and compactions.",
                s.write_errors,
            ),
            (
                "shardline_chat_store_compactions_total",
                "Log compactions done.",
                s.compactions,
            ),
            (
                "shardline_chat_store_compaction_errors_total",
                "Log compactions that failed (the old log is kept).",
                s.compaction_errors,
            ),
        ];
        for (name, help, v) in counters {
            w.counter(name, help, &l, v);
        }
        w.gauge(
            "shardline_chat_store_unwritten_bytes",
            "Bytes handed to the store's writer thread and not yet written.",
            &l,
            s.unwritten_bytes,
        );
        w.gauge(
            "shardline_chat_store_unsynced_records",
            "Records written to the store's logs and not yet synced to disk.",
            &l,
            s.unsynced_records,
        );
        w.gauge(
            "shardline_chat_store_last_error_timestamp_seconds",
            "When the store last failed a write (0: never).",
            &l,
            s.last_error_ms / 1000,
        );
    }
}
