//! The writer thread of one store: appends the shard's batches to the
//! partition logs, syncs them per the [`SyncPolicy`], reports durability back,
//! and compacts logs (the rewrite on a helper thread). See the module doc of
//! [`super`] for the protocol.

use std::{
    collections::HashMap,
    io::{self, Read, Seek, SeekFrom},
    path::PathBuf,
    sync::{
        atomic::Ordering::Relaxed,
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tracing::{error, info, warn};

use super::{
    codec,
    disk::{Disk, DiskFile},
    error::WriteError,
    lock::DataDir,
    memory::{HistoryLimits, Memory},
    recover,
    stats::StoreStats,
    SyncPolicy, WriterReport,
};

/// A report carrying only progress of `written` waits at most this long after
/// the previous report, so the shard gets at most a few hundred per second.
const REPORT_GAP: Duration = Duration::from_millis(5);
/// How long a failing kind of error stays quiet in the log after it was
/// logged (it is still counted).
const LOG_EVERY: Duration = Duration::from_secs(60);
/// How long a partition waits before another compaction after one failed.
const COMPACT_BACKOFF: Duration = Duration::from_secs(60);

/// The records of one partition in a batch.
#[derive(Debug, Default)]
pub(crate) struct PartWrite {
    pub(crate) part: u16,
    pub(crate) data: Vec<u8>,
    /// Sequence numbers of the account records in `data` (their tickets).
    pub(crate) accounts: Vec<u64>,
    /// How many history records `data` holds.
    pub(crate) history: u64,
}

/// What the shard hands over at the end of a loop turn.
#[derive(Debug, Default)]
pub(crate) struct OutBatch {
    pub(crate) parts: Vec<PartWrite>,
    /// Every record up to this sequence number is in this batch or an earlier
    /// one.
    pub(crate) last_seq: u64,
    /// Live sizes that changed: `(partition, bytes)`.
    pub(crate) live: Vec<(u16, u64)>,
    /// Bytes of `parts` (counted in the shared unwritten gauge).
    pub(crate) bytes: u64,
    /// Whether it holds account records (which force a sync).
    pub(crate) accounts: bool,
}

/// Messages to the writer thread.
#[derive(Debug)]
pub(crate) enum ToWriter {
    Batch(OutBatch),
    Limits(HistoryLimits),
    /// Sync everything written and report, even if nothing is dirty.
    Sync,
    Compacted(Compacted),
    Shutdown,
}

/// A compaction job's result.
#[derive(Debug)]
pub(crate) struct Compacted {
    idx: usize,
    /// The log length the job read.
    from_len: u64,
    /// The partition's truncation count when the job started.
    truncations: u64,
    tmp: PathBuf,
    result: Result<(Arc<dyn DiskFile>, u64), String>,
}

/// The writer's view of one partition log.
#[derive(Debug)]
pub(crate) struct PartState {
    pub(crate) part: u16,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<dyn DiskFile>,
    /// Bytes written (where the next record goes).
    pub(crate) len: u64,
    /// Bytes known durable.
    pub(crate) synced_len: u64,
    /// Live bytes as the shard last reported.
    pub(crate) live: u64,
    dirty: bool,
    /// A failed write could not be truncated away: retry before writing.
    broken: bool,
    truncations: u64,
    unsynced_accounts: Vec<u64>,
    unsynced_history: u64,
    compact_not_before: Option<Instant>,
}

impl PartState {
    pub(crate) fn new(
        part: u16,
        path: PathBuf,
        file: Arc<dyn DiskFile>,
        len: u64,
        live: u64,
    ) -> Self {
        PartState {
            part,
            path,
            file,
            len,
            synced_len: len,
            live,
            dirty: false,
            broken: false,
            truncations: 0,
            unsynced_accounts: Vec::new(),
            unsynced_history: 0,
            compact_not_before: None,
        }
    }
}

/// Logs each kind of failure once per [`LOG_EVERY`], with how many were
/// suppressed meanwhile.
#[derive(Debug, Default)]
struct ErrorLog {
    last: HashMap<(&'static str, io::ErrorKind), (Instant, u64)>,
}

impl ErrorLog {
    fn log(&mut self, op: &'static str, path: &std::path::Path, e: &io::Error) {
        let now = Instant::now();
        let entry = self.last.entry((op, e.kind())).or_insert((now, u64::MAX));
        if entry.1 == u64::MAX || now.duration_since(entry.0) >= LOG_EVERY {
            let suppressed = if entry.1 == u64::MAX { 0 } else { entry.1 };
            let what = match op {
                "compact" => "log compaction failed: keeping the old log, retrying in a minute",
                "sync directory" => "could not sync the data directory after a compaction",
                _ => {
                    "store write failed: history is not being stored and account changes are \
                     refused until writes succeed again"
                }
            };
            error!(
                op,
                path = %path.display(),
                error = %e,
                suppressed_since_last_logged = suppressed,
                "{what}"
            );
            *entry = (now, 0);
        } else {
            entry.1 += 1;
        }
    }
}

/// Threads that `fdatasync` files concurrently: file systems commit concurrent
/// syncs together (one journal commit and one cache flush for the lot), where
/// syncing 32 files one after the other costs 32 of each.
#[derive(Debug)]
struct SyncPool {
    jobs: Option<mpsc::Sender<(usize, Arc<dyn DiskFile>)>>,
    results: Receiver<(usize, io::Result<()>)>,
    threads: Vec<JoinHandle<()>>,
}

impl SyncPool {
    fn new(threads: usize, name: &str) -> io::Result<SyncPool> {
        let (jobs, job_rx) = mpsc::channel::<(usize, Arc<dyn DiskFile>)>();
        let (res_tx, results) = mpsc::channel();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut handles = Vec::new();
        for i in 0..threads {
            let job_rx = job_rx.clone();
            let res_tx = res_tx.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("{name}-sync{i}"))
                    .spawn(move || loop {
                        let job = job_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok((idx, file)) = job else { return };
                        if res_tx.send((idx, file.sync())).is_err() {
                            return;
                        }
                    })?,
            );
        }
        Ok(SyncPool {
            jobs: Some(jobs),
            results,
            threads: handles,
        })
    }

    /// Syncs every file, concurrently when there are threads and more than one
    /// file; returns each result with its index.
    fn sync_all(&self, files: Vec<(usize, Arc<dyn DiskFile>)>) -> Vec<(usize, io::Result<()>)> {
        let jobs = match &self.jobs {
            Some(j) if files.len() > 1 && !self.threads.is_empty() => j,
            _ => return files.into_iter().map(|(i, f)| (i, f.sync())).collect(),
        };
        let n = files.len();
        let mut out = Vec::with_capacity(n);
        for (i, f) in files {
            if let Err(mpsc::SendError((i, f))) = jobs.send((i, f)) {
                out.push((i, f.sync()));
            }
        }
        while out.len() < n {
            match self.results.recv() {
                Ok(r) => out.push(r),
                Err(_) => break,
            }
        }
        out
    }
}

impl Drop for SyncPool {
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Everything the writer thread owns.
pub(crate) struct Writer {
    name: String,
    dir: DataDir,
    disk: Arc<dyn Disk>,
    policy: SyncPolicy,
    limits: HistoryLimits,
    compact_min: u64,
    parts: Vec<PartState>,
    index: Vec<Option<usize>>,
    rx: Receiver<ToWriter>,
    /// For compaction jobs to send their result.
    tx: SyncSender<ToWriter>,
    notify: super::Notify,
    stats: Arc<StoreStats>,
    pool: SyncPool,
    errors: ErrorLog,
    written: u64,
    synced: u64,
    reported_written: u64,
    reported_synced: u64,
    failed: Vec<(u64, WriteError)>,
    last_sync: Option<Instant>,
    last_report: Instant,
    job: bool,
    /// Writes and syncs that succeeded (to tell when failures stop).
    ok_ops: u64,
    /// Something failed since the last clean pass.
    failing: bool,
    recovery_logged: Option<Instant>,
    force_sync: bool,
    force_report: bool,
    shutdown: bool,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("dir", &self.dir)
            .field("written", &self.written)
            .field("synced", &self.synced)
            .finish_non_exhaustive()
    }
}

/// What [`Writer::spawn`] needs.
pub(crate) struct WriterSetup {
    pub(crate) dir: DataDir,
    pub(crate) disk: Arc<dyn Disk>,
    pub(crate) policy: SyncPolicy,
    pub(crate) limits: HistoryLimits,
    pub(crate) compact_min: u64,
    pub(crate) sync_threads: usize,
    pub(crate) parts: Vec<PartState>,
    pub(crate) notify: super::Notify,
    pub(crate) stats: Arc<StoreStats>,
    /// Prefix of the thread names (`store3`: `store3-writer`, `store3-sync0`,
    /// `store3-compact`; Linux keeps 15 bytes of a name).
    pub(crate) name: String,
    pub(crate) capacity: usize,
}

impl Writer {
    /// Starts the writer thread; returns its sender and handle.
    pub(crate) fn spawn(s: WriterSetup) -> io::Result<(SyncSender<ToWriter>, JoinHandle<()>)> {
        let (tx, rx) = mpsc::sync_channel(s.capacity.max(1));
        let mut index = vec![None; usize::from(super::key::PARTITIONS)];
        for (i, p) in s.parts.iter().enumerate() {
            index[usize::from(p.part)] = Some(i);
        }
        let threads = s.sync_threads.min(s.parts.len());
        let pool = SyncPool::new(if threads > 1 { threads } else { 0 }, &s.name)?;
        let writer = Writer {
            name: s.name,
            dir: s.dir,
            disk: s.disk,
            policy: s.policy,
            limits: s.limits,
            compact_min: s.compact_min,
            parts: s.parts,
            index,
            rx,
            tx: tx.clone(),
            notify: s.notify,
            stats: s.stats,
            pool,
            errors: ErrorLog::default(),
            written: 0,
            synced: 0,
            reported_written: 0,
            reported_synced: 0,
            failed: Vec::new(),
            last_sync: None,
            last_report: Instant::now(),
            job: false,
            ok_ops: 0,
            failing: false,
            recovery_logged: None,
            force_sync: false,
            force_report: false,
            shutdown: false,
        };
        let handle = std::thread::Builder::new()
            .name(format!("{}-writer", writer.name))
            .spawn(move || writer.run())?;
        Ok((tx, handle))
    }

    fn run(mut self) {
        self.maybe_compact();
        loop {
            let first = match self.deadline() {
                None => self.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(d) => self
                    .rx
                    .recv_timeout(d.saturating_duration_since(Instant::now())),
            };
            let errors_before = self.stats.write_errors.load(Relaxed);
            let ok_before = self.ok_ops;
            match first {
                Ok(m) => self.handle(m),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.shutdown = true,
            }
            // Group commit: write whatever else is queued before syncing.
            while let Ok(m) = self.rx.try_recv() {
                self.handle(m);
            }
            if self.sync_due() {
                self.sync_round();
            }
            if !self.parts.iter().any(|p| p.dirty) {
                // Nothing waits for a sync: every record written is durable or
                // has failed.
                self.synced = self.written;
            }
            let unsynced: u64 = self
                .parts
                .iter()
                .map(|p| p.unsynced_history + p.unsynced_accounts.len() as u64)
                .sum();
            self.stats.unsynced_records.store(unsynced, Relaxed);
            if self.failing
                && self.stats.write_errors.load(Relaxed) == errors_before
                && self.ok_ops > ok_before
            {
                // A clean pass after failures; said at most once a minute, like
                // the failures themselves.
                self.failing = false;
                let now = Instant::now();
                if self
                    .recovery_logged
                    .is_none_or(|t| now.duration_since(t) >= LOG_EVERY)
                {
                    info!(dir = %self.dir.path().display(), "store writes are succeeding again");
                    self.recovery_logged = Some(now);
                }
            }
            self.maybe_compact();
            self.maybe_report();
            if self.shutdown && !self.job {
                if self.parts.iter().any(|p| p.dirty) {
                    self.sync_round();
                }
                self.force_report = true;
                self.maybe_report();
                return;
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let mut d = None;
        if let SyncPolicy::Batch { interval_ms } = self.policy {
            if self.parts.iter().any(|p| p.dirty) {
                let since = self.last_sync.map_or_else(Instant::now, |t| {
                    t + Duration::from_millis(u64::from(interval_ms))
                });
                d = Some(since);
            }
        }
        if self.written > self.reported_written {
            let r = self.last_report + REPORT_GAP;
            d = Some(d.map_or(r, |d: Instant| d.min(r)));
        }
        d
    }

    fn sync_due(&self) -> bool {
        if !self.parts.iter().any(|p| p.dirty) {
            return false;
        }
        match self.policy {
            SyncPolicy::Always => true,
            SyncPolicy::Batch { interval_ms } => {
                self.force_sync
                    || self.last_sync.is_none_or(|t| {
                        t.elapsed() >= Duration::from_millis(u64::from(interval_ms))
                    })
            }
            SyncPolicy::None => self.force_sync,
        }
    }

    fn handle(&mut self, m: ToWriter) {
        match m {
            ToWriter::Batch(b) => self.write_batch(b),
            ToWriter::Limits(l) => self.limits = l,
            ToWriter::Sync => {
                self.force_sync = true;
                self.force_report = true;
            }
            ToWriter::Compacted(c) => self.finish_compaction(c),
            ToWriter::Shutdown => self.shutdown = true,
        }
    }

    fn fail(
        &mut self,
        op: &'static str,
        idx: usize,
        e: &io::Error,
        accounts: &[u64],
        history: u64,
    ) {
        let path = self.parts[idx].path.clone();
        self.failing = true;
        self.errors.log(op, &path, e);
        StoreStats::add(&self.stats.write_errors, 1);
        StoreStats::add(&self.stats.records_dropped, history);
        let we = WriteError::new(op, &path, e);
        self.stats.set_error(we.message.to_string());
        self.failed
            .extend(accounts.iter().map(|&s| (s, we.clone())));
    }

    /// Cuts partition `idx` back to `to` bytes after a failure.
    fn cut(&mut self, idx: usize, to: u64) {
        let p = &mut self.parts[idx];
        p.truncations += 1;
        p.len = to;
        p.synced_len = p.synced_len.min(to);
        match p.file.truncate(to) {
            Ok(()) => p.broken = false,
            Err(e) => {
                p.broken = true;
                self.failing = true;
                let path = p.path.clone();
                self.errors.log("truncate", &path, &e);
                StoreStats::add(&self.stats.write_errors, 1);
            }
        }
    }

    fn write_batch(&mut self, b: OutBatch) {
        for pw in b.parts {
            let Some(idx) = self.index.get(usize::from(pw.part)).copied().flatten() else {
                // The shard only batches partitions it opened; count, never panic.
                let e = io::Error::other(format!("partition {} is not open", pw.part));
                self.failed.extend(pw.accounts.iter().map(|&s| {
                    (
                        s,
                        WriteError {
                            kind: e.kind(),
                            message: e.to_string().into(),
                        },
                    )
                }));
                StoreStats::add(&self.stats.records_dropped, pw.history);
                continue;
            };
            if self.parts[idx].broken {
                let to = self.parts[idx].len;
                self.cut(idx, to);
                if self.parts[idx].broken {
                    let e = io::Error::other("an earlier failed write could not be truncated away");
                    self.fail("write", idx, &e, &pw.accounts, pw.history);
                    continue;
                }
            }
            let p = &mut self.parts[idx];
            match p.file.write_all(&pw.data) {
                Ok(()) => {
                    self.ok_ops += 1;
                    p.len += pw.data.len() as u64;
                    p.dirty = true;
                    p.unsynced_accounts.extend_from_slice(&pw.accounts);
                    p.unsynced_history += pw.history;
                    StoreStats::add(&self.stats.bytes_written, pw.data.len() as u64);
                    StoreStats::add(
                        &self.stats.records_written,
                        pw.history + pw.accounts.len() as u64,
                    );
                }
                Err(e) => {
                    let to = p.len;
                    self.fail("write", idx, &e, &pw.accounts, pw.history);
                    self.cut(idx, to);
                }
            }
        }
        for (part, live) in b.live {
            if let Some(idx) = self.index.get(usize::from(part)).copied().flatten() {
                self.parts[idx].live = live;
            }
        }
        self.stats.unwritten_bytes.fetch_sub(b.bytes, Relaxed);
        self.written = self.written.max(b.last_seq);
        if b.accounts {
            self.force_sync = true;
        }
    }

    fn sync_round(&mut self) {
        self.force_sync = false;
        self.last_sync = Some(Instant::now());
        let files: Vec<_> = self
            .parts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.dirty)
            .map(|(i, p)| (i, p.file.clone()))
            .collect();
        StoreStats::add(&self.stats.sync_rounds, 1);
        StoreStats::add(&self.stats.fsyncs, files.len() as u64);
        for (idx, r) in self.pool.sync_all(files) {
            let p = &mut self.parts[idx];
            let accounts = std::mem::take(&mut p.unsynced_accounts);
            let history = std::mem::take(&mut p.unsynced_history);
            match r {
                Ok(()) => {
                    p.synced_len = p.len;
                    p.dirty = false;
                    self.ok_ops += 1;
                }
                Err(e) => {
                    // What was written since the last good sync may or may not
                    // be on disk: remove it, so a refused account can never
                    // come back after a restart. The next round syncs the cut.
                    let to = p.synced_len;
                    self.fail("sync", idx, &e, &accounts, history);
                    self.cut(idx, to);
                }
            }
        }
        self.synced = self.written;
    }

    fn maybe_report(&mut self) {
        let now = Instant::now();
        let due = self.force_report
            || self.synced > self.reported_synced
            || !self.failed.is_empty()
            || (self.written > self.reported_written
                && now.duration_since(self.last_report) >= REPORT_GAP);
        if !due {
            return;
        }
        self.force_report = false;
        self.reported_written = self.written;
        self.reported_synced = self.synced;
        self.last_report = now;
        (self.notify)(WriterReport {
            written: self.written,
            synced: self.synced,
            failed: std::mem::take(&mut self.failed),
        });
    }

    fn maybe_compact(&mut self) {
        if self.job || self.shutdown {
            return;
        }
        let now = Instant::now();
        let min = self.compact_min;
        let Some(idx) = self.parts.iter().position(|p| {
            p.len >= min
                && p.len > 2 * (p.live + codec::HEADER_LEN as u64)
                && !p.broken
                && p.compact_not_before.is_none_or(|t| now >= t)
        }) else {
            return;
        };
        let p = &self.parts[idx];
        let (path, part, from_len, truncations) = (p.path.clone(), p.part, p.len, p.truncations);
        let tmp = self.dir.compact_path(part);
        let (disk, limits, tx) = (self.disk.clone(), self.limits, self.tx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("{}-compact", self.name))
            .spawn(move || {
                let result = compact(&path, part, from_len, limits, &*disk, &tmp);
                let _ = tx.send(ToWriter::Compacted(Compacted {
                    idx,
                    from_len,
                    truncations,
                    tmp,
                    result,
                }));
            });
        match spawned {
            Ok(_) => self.job = true,
            Err(e) => {
                warn!(error = %e, "could not start a compaction thread");
                self.parts[idx].compact_not_before = Some(now + COMPACT_BACKOFF);
            }
        }
    }

    fn finish_compaction(&mut self, c: Compacted) {
        self.job = false;
        let p = &self.parts[c.idx];
        if p.truncations != c.truncations || p.broken {
            // A failed write was cut out of the log meanwhile: what the job read
            // may not be the log's prefix any more (and it may have failed for
            // that). Not an error; the next check starts a new job.
            let _ = std::fs::remove_file(&c.tmp);
            return;
        }
        let (file, new_len) = match c.result {
            Ok(r) => r,
            Err(e) => return self.compaction_failed(c.idx, &c.tmp, e),
        };
        let (path, len) = (p.path.clone(), p.len);
        // Copy what was appended while the job ran, then swap the files.
        let tail = (|| -> io::Result<Vec<u8>> {
            let mut f = std::fs::File::open(&path)?;
            f.seek(SeekFrom::Start(c.from_len))?;
            let mut tail = Vec::new();
            f.take(len - c.from_len).read_to_end(&mut tail)?;
            if tail.len() as u64 != len - c.from_len {
                return Err(io::Error::other("log shorter than written"));
            }
            Ok(tail)
        })();
        let swapped = tail.and_then(|tail| {
            file.write_all(&tail)?;
            file.sync()?;
            self.disk.rename(&c.tmp, &path)?;
            Ok(tail.len() as u64)
        });
        let tail_len = match swapped {
            Ok(n) => n,
            Err(e) => return self.compaction_failed(c.idx, &c.tmp, e.to_string()),
        };
        if let Err(e) = self.disk.sync_dir(self.dir.path()) {
            // The rename is done; only its durability is in doubt, and either
            // file holds every record.
            self.errors.log("sync directory", self.dir.path(), &e);
        }
        let p = &mut self.parts[c.idx];
        let before = p.len;
        p.file = file;
        p.len = new_len + tail_len;
        p.synced_len = p.len;
        p.dirty = false;
        // Everything in the new file is synced.
        p.unsynced_accounts.clear();
        p.unsynced_history = 0;
        StoreStats::add(&self.stats.compactions, 1);
        info!(
            path = %path.display(),
            before,
            after = p.len,
            "compacted partition log"
        );
    }

    fn compaction_failed(&mut self, idx: usize, tmp: &std::path::Path, e: String) {
        self.failing = true;
        let _ = std::fs::remove_file(tmp);
        StoreStats::add(&self.stats.compaction_errors, 1);
        StoreStats::add(&self.stats.write_errors, 1);
        let p = &mut self.parts[idx];
        p.compact_not_before = Some(Instant::now() + COMPACT_BACKOFF);
        let path = p.path.clone();
        self.errors
            .log("compact", &path, &io::Error::other(e.clone()));
        self.stats
            .set_error(format!("compact {}: {e}", path.display()));
    }
}

/// The compaction job (on its own thread): rebuilds partition `part`'s live
/// records from the first `upto` bytes of its log, with the same replay as
/// recovery, and writes them to `tmp`, synced. Returns the new file (open for
/// appending) and its length.
fn compact(
    path: &std::path::Path,
    part: u16,
    upto: u64,
    limits: HistoryLimits,
    disk: &dyn Disk,
    tmp: &std::path::Path,
) -> Result<(Arc<dyn DiskFile>, u64), String> {
    let mut mem = Memory::new(limits);
    recover::replay_exact(path, part, upto, &mut mem)?;
    mem.expire(crate::clock::now_millis());
    let mut out = codec::header(part).to_vec();
    mem.encode_partition(part, &mut out);
    let _ = std::fs::remove_file(tmp);
    let file = disk
        .create_new(tmp)
        .map_err(|e| format!("create {}: {e}", tmp.display()))?;
    file.write_all(&out)
        .and_then(|()| file.sync())
        .map_err(|e| format!("write {}: {e}", tmp.display()))?;
    Ok((file, out.len() as u64))
}
