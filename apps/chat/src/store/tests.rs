//! Tests of the store: recovery, bounds, queries, shard counts, the sync
//! policies (with a gated fake disk, so ordering is tested without timing),
//! failures (injected and a real full tmpfs), compaction under appends, and the
//! directory lock. Cross-process tests (kill -9, the lock from another process)
//! are in `tests/store.rs`.

use std::{
    collections::HashSet,
    io,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering::SeqCst},
        mpsc::{self, Receiver},
        Arc, Condvar, Mutex,
    },
    time::{Duration, Instant},
};

use proptest::prelude::*;

use super::{
    codec::{self, FRAME_HEADER, HEADER_LEN},
    memory::Memory,
    recover::{scan, ScanEnd},
    *,
};

const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- helpers

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "shardline-store-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn now() -> u64 {
    crate::clock::now_millis()
}

fn msg(target: &str, i: u64, time: u64) -> Message {
    Message {
        target: target.into(),
        to: target.into(),
        msgid: format!("m{i}"),
        time,
        source: "nick!user@host".into(),
        account: "acct".into(),
        kind: MessageKind::Privmsg,
        tags: String::new(),
        text: format!("message number {i}"),
    }
}

fn account(name: &str, hash: &str) -> Account {
    Account {
        name: name.into(),
        password_hash: hash.into(),
        created: 1_700_000_000_000,
        cert_fingerprints: vec!["ab:cd".into()],
        flags: 0,
    }
}

fn no_age_limit() -> HistoryLimits {
    HistoryLimits {
        channel_messages: 100_000,
        conversation_messages: 100_000,
        max_age_ms: 0,
    }
}

fn options() -> StoreOptions {
    StoreOptions {
        limits: no_age_limit(),
        ..StoreOptions::default()
    }
}

fn ids(ms: &[&Message]) -> Vec<String> {
    ms.iter().map(|m| m.msgid.clone()).collect()
}

/// A store as a shard drives it: reports arrive on a channel (the test's
/// stand-in for the chat's `Remote`).
struct Shard {
    store: Store,
    reports: Receiver<WriterReport>,
    done: Vec<Completed>,
}

impl Shard {
    fn open(dir: &DataDir, shard: usize, shards: usize, options: StoreOptions) -> Shard {
        Shard::try_open(dir, shard, shards, options).unwrap()
    }

    fn try_open(
        dir: &DataDir,
        shard: usize,
        shards: usize,
        options: StoreOptions,
    ) -> Result<Shard, StoreError> {
        let (tx, reports) = mpsc::channel();
        let store = Store::open(
            dir,
            shard,
            shards,
            options,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        )?;
        Ok(Shard {
            store,
            reports,
            done: Vec::new(),
        })
    }

    fn drain(&mut self) {
        while let Ok(r) = self.reports.try_recv() {
            self.done.extend(self.store.on_report(r));
        }
    }

    fn turn(&mut self) {
        self.done.extend(self.store.end_turn());
        self.drain();
    }

    /// Runs turns until `cond` holds (bounded).
    fn wait(&mut self, what: &str, cond: impl Fn(&Shard) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            self.done.extend(self.store.end_turn());
            self.drain();
            if cond(self) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            if let Ok(r) = self.reports.recv_timeout(Duration::from_millis(5)) {
                self.done.extend(self.store.on_report(r));
            }
        }
    }

    fn completed(&self, t: Ticket) -> Option<&Completed> {
        self.done.iter().find(|c| c.ticket == t)
    }

    fn wait_ticket(&mut self, t: Ticket) -> Result<(), WriteError> {
        self.wait("a ticket", |s| s.completed(t).is_some());
        self.completed(t).map_or(Ok(()), |c| c.result.clone())
    }
}

/// A gate threads stop at while it is closed.
#[derive(Debug, Default)]
struct Gate {
    state: Mutex<(bool, usize)>,
    cv: Condvar,
}

impl Gate {
    fn set(&self, closed: bool) {
        self.state.lock().unwrap().0 = closed;
        self.cv.notify_all();
    }

    fn pass(&self) {
        let mut s = self.state.lock().unwrap();
        s.1 += 1;
        self.cv.notify_all();
        while s.0 {
            s = self.cv.wait(s).unwrap();
        }
        s.1 -= 1;
    }

    /// Waits until a thread is held at the gate.
    fn wait_for_waiter(&self) {
        let deadline = Instant::now() + WAIT;
        let mut s = self.state.lock().unwrap();
        while s.1 == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "nobody reached the gate");
            s = self.cv.wait_timeout(s, left).unwrap().0;
        }
    }
}

/// Faults and gates shared by a [`TestDisk`] and its files.
#[derive(Debug, Default)]
struct Faults {
    sync_gate: Gate,
    write_gate: Gate,
    create_gate: Gate,
    /// Errno for writes (0: none). A failing write writes half its buffer first.
    write_errno: AtomicI32,
    /// Errno for syncs (0: none).
    sync_errno: AtomicI32,
    syncs: AtomicU64,
}

/// The real disk, with [`Faults`].
#[derive(Debug, Default, Clone)]
struct TestDisk(Arc<Faults>);

#[derive(Debug)]
struct TestFile {
    real: Arc<dyn DiskFile>,
    f: Arc<Faults>,
}

impl DiskFile for TestFile {
    fn write_all(&self, buf: &[u8]) -> io::Result<()> {
        self.f.write_gate.pass();
        match self.f.write_errno.load(SeqCst) {
            0 => self.real.write_all(buf),
            e => {
                self.real.write_all(&buf[..buf.len() / 2])?;
                Err(io::Error::from_raw_os_error(e))
            }
        }
    }

    fn sync(&self) -> io::Result<()> {
        self.f.sync_gate.pass();
        self.f.syncs.fetch_add(1, SeqCst);
        match self.f.sync_errno.load(SeqCst) {
            0 => self.real.sync(),
            e => Err(io::Error::from_raw_os_error(e)),
        }
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.real.truncate(len)
    }
}

impl Disk for TestDisk {
    fn open_append(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        Ok(Arc::new(TestFile {
            real: RealDisk.open_append(path)?,
            f: self.0.clone(),
        }))
    }

    fn create_new(&self, path: &Path) -> io::Result<Arc<dyn DiskFile>> {
        self.0.create_gate.pass();
        Ok(Arc::new(TestFile {
            real: RealDisk.create_new(path)?,
            f: self.0.clone(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        RealDisk.rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        RealDisk.sync_dir(dir)
    }
}

/// Frame start offsets of a log file's records.
fn frame_offsets(buf: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut off = HEADER_LEN;
    while let codec::Frame::Valid { len } = codec::frame_at(buf, off) {
        out.push(off);
        off += FRAME_HEADER + len;
    }
    assert_eq!(off, buf.len(), "test log should be clean");
    out
}

/// Writes `n` messages to `#torn` through an offline store; returns the log's
/// path.
fn write_messages(dir: &Path, n: u64) -> PathBuf {
    let mut s = open_all(dir, options()).unwrap();
    for i in 0..n {
        s.append_message(msg("#torn", i, now())).unwrap();
    }
    for c in s.close().unwrap() {
        assert_eq!(c.result, Ok(()));
    }
    dir.join(format!("p{:02}.log", partition_of("#torn")))
}

fn history_ids(s: &Store, key: &str) -> Vec<String> {
    ids(&s.latest(key, None, usize::MAX).unwrap())
}

// ---------------------------------------------------------------- recovery

#[test]
fn torn_tail_at_every_offset_of_the_last_record_keeps_all_earlier_records() {
    let tmp = TempDir::new("torn");
    let path = write_messages(tmp.path(), 5);
    let full = std::fs::read(&path).unwrap();
    let last = *frame_offsets(&full).last().unwrap();
    for cut in last..full.len() {
        std::fs::write(&path, &full[..cut]).unwrap();
        let s = open_all(tmp.path(), options()).unwrap();
        assert_eq!(
            history_ids(&s, "#torn"),
            ["m0", "m1", "m2", "m3"],
            "cut at {cut}"
        );
        drop(s);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            last as u64,
            "the torn tail is truncated away (cut at {cut})"
        );
    }
    // And appending after a recovered tail works: the next open sees it all.
    let mut s = open_all(tmp.path(), options()).unwrap();
    s.append_message(msg("#torn", 9, now())).unwrap();
    s.close().unwrap();
    let s = open_all(tmp.path(), options()).unwrap();
    assert_eq!(history_ids(&s, "#torn"), ["m0", "m1", "m2", "m3", "m9"]);
}

#[test]
fn a_damaged_last_record_is_a_torn_tail() {
    let tmp = TempDir::new("lastbad");
    let path = write_messages(tmp.path(), 4);
    let mut buf = std::fs::read(&path).unwrap();
    let last = *frame_offsets(&buf).last().unwrap();
    buf[last + FRAME_HEADER + 3] ^= 0x40;
    std::fs::write(&path, &buf).unwrap();
    let s = open_all(tmp.path(), options()).unwrap();
    assert_eq!(history_ids(&s, "#torn"), ["m0", "m1", "m2"]);
}

#[test]
fn a_partial_header_is_a_file_whose_creation_was_cut_short() {
    let tmp = TempDir::new("parthdr");
    let path = write_messages(tmp.path(), 2);
    let full = std::fs::read(&path).unwrap();
    for cut in 0..HEADER_LEN {
        std::fs::write(&path, &full[..cut]).unwrap();
        let s = open_all(tmp.path(), options()).unwrap();
        assert_eq!(s.history_len("#torn"), 0);
        drop(s);
        assert_eq!(std::fs::read(&path).unwrap(), full[..HEADER_LEN]);
    }
}

#[test]
fn a_damaged_record_in_the_middle_is_refused_with_file_and_offset() {
    let tmp = TempDir::new("corrupt");
    let path = write_messages(tmp.path(), 6);
    let mut buf = std::fs::read(&path).unwrap();
    let offs = frame_offsets(&buf);
    // A flipped payload byte, then a damaged length field.
    for damage in [offs[2] + FRAME_HEADER + 5, offs[2] + 1] {
        let mut bad = buf.clone();
        bad[damage] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        let err = open_all(tmp.path(), options()).unwrap_err();
        match &err {
            StoreError::Corrupt {
                path: p,
                offset,
                next_valid,
            } => {
                assert_eq!(p, &path);
                assert_eq!(*offset, offs[2] as u64);
                assert_eq!(*next_valid, offs[3] as u64);
            }
            e => panic!("expected Corrupt, got {e}"),
        }
        let text = err.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains(&format!("byte {}", offs[2])), "{text}");
        // Refusing changed nothing.
        assert_eq!(std::fs::read(&path).unwrap(), bad);
    }
    // Salvage truncates there, keeping what precedes.
    buf[offs[2] + FRAME_HEADER + 5] ^= 0x10;
    std::fs::write(&path, &buf).unwrap();
    let s = open_all(
        tmp.path(),
        StoreOptions {
            salvage: true,
            ..options()
        },
    )
    .unwrap();
    assert_eq!(history_ids(&s, "#torn"), ["m0", "m1"]);
    drop(s);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), offs[2] as u64);
}

#[test]
fn bad_headers_are_refused_naming_the_file() {
    let tmp = TempDir::new("badhdr");
    let path = write_messages(tmp.path(), 1);
    let good = std::fs::read(&path).unwrap();

    std::fs::write(&path, b"this is not a store file at all").unwrap();
    let err = open_all(tmp.path(), options()).unwrap_err();
    assert!(matches!(&err, StoreError::BadHeader { path: p, .. } if p == &path));
    assert!(
        err.to_string().contains("not a shardline-chat store file"),
        "{err}"
    );

    let mut v9 = good.clone();
    v9[8] = 9;
    let crc = super::crc::crc32(&v9[..16]);
    v9[16..20].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &v9).unwrap();
    let err = open_all(tmp.path(), options()).unwrap_err();
    assert!(err.to_string().contains("version 9"), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );

    // Another partition's file under this name.
    let other = tmp
        .path()
        .join(format!("p{:02}.log", (partition_of("#torn") + 1) % 64));
    std::fs::write(&path, std::fs::read(other).unwrap()).unwrap();
    let err = open_all(tmp.path(), options()).unwrap_err();
    assert!(err.to_string().contains("expected"), "{err}");
}

proptest! {
    #[test]
    fn scanning_any_bytes_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..400),
        records in proptest::collection::vec(0u64..1000, 0..4),
    ) {
        let mut buf = codec::header(0).to_vec();
        for i in &records {
            codec::encode_message(&mut buf, &msg("#x", *i, *i)).unwrap();
        }
        let clean = buf.len();
        buf.extend_from_slice(&body);
        let mut n = 0;
        let end = scan(&buf, HEADER_LEN, |_, _| n += 1);
        prop_assert!(n >= records.len());
        if let Ok(ScanEnd::Torn { at } | ScanEnd::Corrupt { at, .. }) = end {
            prop_assert!(at >= clean);
        }
    }
}

// ---------------------------------------------------------------- history

#[test]
fn bounds_apply_on_append_and_expiry_by_age() {
    let tmp = TempDir::new("bounds");
    let dir = DataDir::open(tmp.path()).unwrap();
    let limits = HistoryLimits {
        channel_messages: 3,
        conversation_messages: 2,
        max_age_ms: 1000,
    };
    let mut s = Shard::open(
        &dir,
        0,
        1,
        StoreOptions {
            limits,
            ..options()
        },
    );
    let t0 = now();
    let conv = conversation_key("alice", "bob");
    for i in 0..5 {
        s.store.append_message(msg("#c", i, t0 + i)).unwrap();
        s.store.append_message(msg(&conv, i, t0 + i)).unwrap();
    }
    assert_eq!(history_ids(&s.store, "#c"), ["m2", "m3", "m4"]);
    assert_eq!(history_ids(&s.store, &conv), ["m3", "m4"]);
    // A message stamped earlier than the history's last is kept in order.
    s.store.append_message(msg("#c", 5, t0)).unwrap();
    let latest = s.store.latest("#c", None, 1).unwrap();
    assert_eq!((latest[0].msgid.as_str(), latest[0].time), ("m5", t0 + 4));
    // Appending enforces the age limit at the new message's time.
    s.store.append_message(msg("#c", 6, t0 + 1003)).unwrap();
    assert_eq!(history_ids(&s.store, "#c"), ["m4", "m5", "m6"]);
    // expire() drops what aged out everywhere, and empty histories with it.
    assert_eq!(s.store.expire(t0 + 1005), 4);
    assert_eq!(history_ids(&s.store, "#c"), ["m6"]);
    assert_eq!(s.store.history_len(&conv), 0);
    assert_eq!(s.store.expire(t0 + 5000), 1);
    assert_eq!(s.store.history_len("#c"), 0);
    assert_eq!(s.store.history_len(&conv), 0);
    assert!(
        s.store.mem.live.iter().all(|&l| l == 0),
        "live sizes return to zero"
    );
    // A zero bound keeps nothing, and stores nothing.
    s.store.set_limits(
        HistoryLimits {
            channel_messages: 0,
            ..limits
        },
        now(),
    );
    assert_eq!(s.store.append_message(msg("#c", 7, now())).unwrap(), None);
    assert_eq!(s.store.history_len("#c"), 0);
}

#[test]
fn bounds_and_age_apply_on_recovery() {
    let tmp = TempDir::new("bounds-recovery");
    {
        let mut s = open_all(tmp.path(), options()).unwrap();
        let t = now();
        s.append_message(msg("#c", 0, t - 10_000)).unwrap();
        for i in 1..6 {
            s.append_message(msg("#c", i, t)).unwrap();
        }
        s.close().unwrap();
    }
    let s = open_all(
        tmp.path(),
        StoreOptions {
            limits: HistoryLimits {
                channel_messages: 10,
                conversation_messages: 10,
                max_age_ms: 5_000,
            },
            ..options()
        },
    )
    .unwrap();
    assert_eq!(history_ids(&s, "#c"), ["m1", "m2", "m3", "m4", "m5"]);
    drop(s);
    let s = open_all(
        tmp.path(),
        StoreOptions {
            limits: HistoryLimits {
                channel_messages: 2,
                ..no_age_limit()
            },
            ..options()
        },
    )
    .unwrap();
    assert_eq!(history_ids(&s, "#c"), ["m4", "m5"]);
}

#[test]
fn caught_up_messages_are_placed_by_time_once_and_recovered_in_place() {
    let tmp = TempDir::new("caught-up");
    let t = now();
    {
        let mut s = open_all(tmp.path(), options()).unwrap();
        // This node's own messages at t+0, t+20, t+40; another node's at
        // t+10, t+30 and t+50 come late.
        for i in [0, 2, 4] {
            s.append_message(msg("#c", i, t + i * 10)).unwrap();
        }
        for i in [3, 1, 5] {
            assert!(s
                .insert_message(msg("#c", i, t + i * 10))
                .unwrap()
                .is_some());
        }
        // Seen already (live, or caught up twice): not placed again; and a
        // plain append of a msgid kept is skipped too.
        assert_eq!(s.insert_message(msg("#c", 1, t + 10)).unwrap(), None);
        assert_eq!(s.append_message(msg("#c", 4, t + 60)).unwrap(), None);
        assert_eq!(history_ids(&s, "#c"), m(0..6));
        // msgid references still find the right messages after the moves.
        use MsgRef::MsgId;
        assert_eq!(ids(&s.before("#c", MsgId("m3"), 2).unwrap()), m(1..3));
        assert_eq!(ids(&s.after("#c", MsgId("m2"), 10).unwrap()), m(3..6));
        // A message at the same time as kept ones goes after them.
        s.insert_message(msg("#c", 9, t + 20)).unwrap();
        assert_eq!(history_ids(&s, "#c")[3], "m9");
        s.close().unwrap();
    }
    // The log holds the late ones after the others; recovery places them
    // where they were.
    let s = open_all(tmp.path(), options()).unwrap();
    assert_eq!(
        history_ids(&s, "#c"),
        ["m0", "m1", "m2", "m9", "m3", "m4", "m5"]
    );
    drop(s);
    // A full history keeps its newest: an older late message is not kept,
    // a newer one pushes the oldest out.
    let mut s = open_all(
        tmp.path(),
        StoreOptions {
            limits: HistoryLimits {
                channel_messages: 3,
                ..no_age_limit()
            },
            ..options()
        },
    )
    .unwrap();
    assert_eq!(history_ids(&s, "#c"), ["m3", "m4", "m5"]);
    s.insert_message(msg("#c", 7, t + 5)).unwrap();
    s.insert_message(msg("#c", 8, t + 45)).unwrap();
    assert_eq!(history_ids(&s, "#c"), ["m4", "m8", "m5"]);
    assert_eq!(
        ids(&s.before("#c", MsgRef::MsgId("m5"), 1).unwrap()),
        ["m8"]
    );
}

/// Ten messages at times 10 20 20 30 40 50 50 50 60 70, msgids m0..m9.
fn known_history() -> Memory {
    let mut mem = Memory::new(no_age_limit());
    for (i, t) in [10, 20, 20, 30, 40, 50, 50, 50, 60, 70]
        .into_iter()
        .enumerate()
    {
        mem.push_message(msg("#q", i as u64, t), 100);
    }
    mem
}

fn m(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

#[test]
fn latest_before_after() {
    let s = &known_history();
    use MsgRef::{MsgId, Time};
    assert_eq!(ids(&s.latest("#q", None, 3).unwrap()), m(7..10));
    assert_eq!(ids(&s.latest("#q", None, 100).unwrap()), m(0..10));
    assert_eq!(
        ids(&s.latest("#q", Some(MsgId("m5")), 10).unwrap()),
        m(6..10)
    );
    assert_eq!(
        ids(&s.latest("#q", Some(MsgId("m5")), 2).unwrap()),
        m(8..10)
    );
    assert_eq!(ids(&s.latest("#q", Some(Time(50)), 10).unwrap()), m(8..10));
    assert_eq!(ids(&s.latest("#q", Some(Time(70)), 10).unwrap()), m(0..0));
    assert_eq!(ids(&s.latest("#q", None, 0).unwrap()), m(0..0));

    assert_eq!(ids(&s.before("#q", MsgId("m5"), 2).unwrap()), m(3..5));
    assert_eq!(ids(&s.before("#q", Time(50), 10).unwrap()), m(0..5));
    assert_eq!(ids(&s.before("#q", Time(20), 10).unwrap()), m(0..1));
    assert_eq!(ids(&s.before("#q", MsgId("m0"), 10).unwrap()), m(0..0));
    assert_eq!(ids(&s.before("#q", Time(1000), 3).unwrap()), m(7..10));

    assert_eq!(ids(&s.after("#q", MsgId("m5"), 2).unwrap()), m(6..8));
    assert_eq!(ids(&s.after("#q", Time(20), 3).unwrap()), m(3..6));
    assert_eq!(ids(&s.after("#q", Time(0), 2).unwrap()), m(0..2));
    assert_eq!(ids(&s.after("#q", Time(70), 5).unwrap()), m(0..0));
    assert_eq!(ids(&s.after("#q", MsgId("m9"), 5).unwrap()), m(0..0));

    assert_eq!(s.before("#q", MsgId("nope"), 5), Err(UnknownMsgid));
    assert_eq!(s.latest("#q", Some(MsgId("nope")), 5), Err(UnknownMsgid));
    // No history at all: a timestamp finds nothing, a msgid is unknown.
    assert_eq!(
        s.after("#nothing", Time(5), 5).unwrap(),
        Vec::<&Message>::new()
    );
    assert_eq!(
        s.latest("#nothing", None, 5).unwrap(),
        Vec::<&Message>::new()
    );
    assert_eq!(s.after("#nothing", MsgId("m1"), 5), Err(UnknownMsgid));
}

#[test]
fn around() {
    let s = &known_history();
    use MsgRef::{MsgId, Time};
    assert_eq!(ids(&s.around("#q", MsgId("m5"), 4).unwrap()), m(3..7));
    assert_eq!(ids(&s.around("#q", MsgId("m5"), 5).unwrap()), m(3..8));
    assert_eq!(ids(&s.around("#q", MsgId("m5"), 1).unwrap()), m(5..6));
    // A short side gives its share to the other.
    assert_eq!(ids(&s.around("#q", MsgId("m0"), 4).unwrap()), m(0..4));
    assert_eq!(ids(&s.around("#q", MsgId("m9"), 4).unwrap()), m(6..10));
    assert_eq!(ids(&s.around("#q", MsgId("m5"), 100).unwrap()), m(0..10));
    // A timestamp splits before the messages at that time.
    assert_eq!(ids(&s.around("#q", Time(50), 3).unwrap()), m(4..7));
    assert_eq!(ids(&s.around("#q", Time(55), 2).unwrap()), m(7..9));
    assert_eq!(ids(&s.around("#q", MsgId("m5"), 0).unwrap()), m(0..0));
    assert_eq!(s.around("#q", MsgId("nope"), 3), Err(UnknownMsgid));
}

#[test]
fn between() {
    let s = &known_history();
    use MsgRef::{MsgId, Time};
    // Forwards: counted from the first, both excluded.
    assert_eq!(
        ids(&s.between("#q", MsgId("m1"), MsgId("m6"), 10).unwrap()),
        m(2..6)
    );
    assert_eq!(
        ids(&s.between("#q", MsgId("m1"), MsgId("m6"), 2).unwrap()),
        m(2..4)
    );
    // Backwards: counted from the first (the later one).
    assert_eq!(
        ids(&s.between("#q", MsgId("m6"), MsgId("m1"), 2).unwrap()),
        m(4..6)
    );
    assert_eq!(
        ids(&s.between("#q", MsgId("m6"), MsgId("m1"), 10).unwrap()),
        m(2..6)
    );
    // Timestamps exclude the messages at those times.
    assert_eq!(
        ids(&s.between("#q", Time(20), Time(50), 10).unwrap()),
        m(3..5)
    );
    assert_eq!(
        ids(&s.between("#q", Time(50), Time(20), 1).unwrap()),
        m(4..5)
    );
    // Mixed.
    assert_eq!(
        ids(&s.between("#q", MsgId("m2"), Time(50), 10).unwrap()),
        m(3..5)
    );
    assert_eq!(
        ids(&s.between("#q", Time(60), MsgId("m2"), 2).unwrap()),
        m(6..8)
    );
    // Nothing between a reference and itself.
    assert_eq!(
        ids(&s.between("#q", MsgId("m3"), MsgId("m3"), 5).unwrap()),
        m(0..0)
    );
    assert_eq!(
        ids(&s.between("#q", Time(50), Time(50), 5).unwrap()),
        m(0..0)
    );
    assert_eq!(
        s.between("#q", MsgId("m3"), MsgId("nope"), 5),
        Err(UnknownMsgid)
    );
}

#[test]
fn targets_window_order_and_merge() {
    let mut mem = Memory::new(no_age_limit());
    let ab = conversation_key("alice", "bob");
    let bc = conversation_key("Carol", "bob");
    for (key, t) in [
        ("#a", 50),
        ("#a", 100),
        ("#b", 200),
        (&*ab, 150),
        (&*bc, 300),
    ] {
        let mut x = msg(key, t, t);
        x.to = format!("to-{key}");
        mem.push_message(x, 100);
    }
    let keys = |v: Vec<TargetSummary>| -> Vec<(String, u64)> {
        v.into_iter()
            .map(|t| (t.key.to_string(), t.latest))
            .collect()
    };
    let st = &mem;
    let all = [
        ("#a".to_string(), 100),
        (ab.clone(), 150),
        ("#b".to_string(), 200),
        (bc.clone(), 300),
    ];
    assert_eq!(keys(st.targets(TargetFilter::All, 0, 1000, 10)), all);
    // Counted from the first bound: backwards gives the latest ones.
    assert_eq!(keys(st.targets(TargetFilter::All, 1000, 0, 2)), all[2..]);
    assert_eq!(keys(st.targets(TargetFilter::All, 0, 1000, 2)), all[..2]);
    // Both bounds exclusive.
    assert_eq!(keys(st.targets(TargetFilter::All, 100, 300, 10)), all[1..3]);
    assert_eq!(
        keys(st.targets(TargetFilter::ConversationsOf("bob"), 0, 1000, 10)),
        [all[1].clone(), all[3].clone()]
    );
    assert_eq!(
        keys(st.targets(TargetFilter::ConversationsOf("alice"), 0, 1000, 10)),
        [all[1].clone()]
    );
    assert_eq!(
        keys(st.targets(TargetFilter::Channels(&["#a", "#none"]), 0, 1000, 10)),
        [all[0].clone()]
    );
    let t = st.targets(TargetFilter::Channels(&["#a"]), 0, 1000, 10);
    assert_eq!(t[0].to, "to-#a");
    // Merging answers from several shards applies the same window.
    let part1 = st.targets(TargetFilter::Channels(&["#a", "#b"]), 1000, 0, 10);
    let part2 = st.targets(TargetFilter::ConversationsOf("bob"), 1000, 0, 10);
    let merged = select_targets([part1, part2].concat(), 1000, 0, 3);
    assert_eq!(keys(merged), all[1..]);
}

/// The reference semantics, by filtering: what a message is before/after.
fn reference_sides(times: &[u64], r: MsgRef<'_>) -> Option<(Vec<bool>, Vec<bool>)> {
    let n = times.len();
    match r {
        MsgRef::MsgId(id) => {
            let i: usize = id.strip_prefix('m')?.parse().ok().filter(|&i| i < n)?;
            Some((
                (0..n).map(|j| j < i).collect(),
                (0..n).map(|j| j > i).collect(),
            ))
        }
        MsgRef::Time(t) => Some((
            times.iter().map(|&x| x < t).collect(),
            times.iter().map(|&x| x > t).collect(),
        )),
    }
}

fn pick(set: &[bool], limit: usize, from_end: bool) -> Vec<String> {
    let all: Vec<usize> = (0..set.len()).filter(|&j| set[j]).collect();
    let chosen = if from_end {
        &all[all.len().saturating_sub(limit)..]
    } else {
        &all[..limit.min(all.len())]
    };
    chosen.iter().map(|j| format!("m{j}")).collect()
}

fn arb_ref() -> impl Strategy<Value = (bool, u64)> {
    (any::<bool>(), 0u64..40)
}

fn as_ref(id: &str, (is_id, v): (bool, u64)) -> MsgRef<'_> {
    if is_id {
        MsgRef::MsgId(id)
    } else {
        MsgRef::Time(v)
    }
}

proptest! {
    #[test]
    fn queries_match_the_reference_semantics(
        steps in proptest::collection::vec(0u64..3, 0..25),
        a in arb_ref(),
        b in arb_ref(),
        limit in 0usize..12,
    ) {
        let times: Vec<u64> = steps.iter().scan(0, |t, d| { *t += d; Some(*t) }).collect();
        let mut mem = Memory::new(no_age_limit());
        for (i, &t) in times.iter().enumerate() {
            mem.push_message(msg("#p", i as u64, t), 100);
        }
        let (ida, idb) = (format!("m{}", a.1), format!("m{}", b.1));
        let (ra, rb) = (as_ref(&ida, a), as_ref(&idb, b));
        let st = &mem;
        match reference_sides(&times, ra) {
            None => {
                prop_assert_eq!(st.before("#p", ra, limit), Err(UnknownMsgid));
                prop_assert_eq!(st.after("#p", ra, limit), Err(UnknownMsgid));
                prop_assert_eq!(st.around("#p", ra, limit), Err(UnknownMsgid));
            }
            Some((before_a, after_a)) => {
                prop_assert_eq!(ids(&st.before("#p", ra, limit).unwrap()), pick(&before_a, limit, true));
                prop_assert_eq!(ids(&st.after("#p", ra, limit).unwrap()), pick(&after_a, limit, false));
                prop_assert_eq!(ids(&st.latest("#p", Some(ra), limit).unwrap()), pick(&after_a, limit, true));
                // AROUND: a contiguous window of min(limit, n) around the split.
                let got = ids(&st.around("#p", ra, limit).unwrap());
                let split = before_a.iter().filter(|&&x| x).count();
                let n = times.len();
                prop_assert_eq!(got.len(), limit.min(n));
                let nb = (limit / 2).min(split).max(limit.saturating_sub(n - split)).min(split);
                prop_assert_eq!(got, m(split - nb..split - nb + limit.min(n)));
                if let Some((before_b, after_b)) = reference_sides(&times, rb) {
                    let fwd: Vec<bool> = (0..n).map(|j| after_a[j] && before_b[j]).collect();
                    let bwd: Vec<bool> = (0..n).map(|j| before_a[j] && after_b[j]).collect();
                    let want = if fwd.contains(&true) {
                        pick(&fwd, limit, false)
                    } else {
                        pick(&bwd, limit, true)
                    };
                    prop_assert_eq!(ids(&st.between("#p", ra, rb, limit).unwrap()), want);
                }
            }
        }
        prop_assert_eq!(ids(&st.latest("#p", None, limit).unwrap()), pick(&vec![true; times.len()], limit, true));
    }
}

// ---------------------------------------------------------------- shard counts

#[test]
fn restarting_with_another_shard_count_keeps_everything_in_order() {
    let tmp = TempDir::new("reshard");
    let users: Vec<String> = (0..40).map(|i| format!("User{i}")).collect();
    let chans: Vec<String> = (0..20).map(|i| format!("#Chan{i}")).collect();
    let convs: Vec<String> = (0..39)
        .map(|i| conversation_key(&users[i], &users[i + 1]))
        .collect();
    let t = now();
    {
        let dir = DataDir::open(tmp.path()).unwrap();
        let mut shards: Vec<Shard> = (0..4).map(|i| Shard::open(&dir, i, 4, options())).collect();
        let owner = |key: &str| shard_of_partition(partition_of(key), 4);
        for u in &users {
            let s = &mut shards[owner(&account_key(u))];
            s.store.put_account(account(u, "hash")).unwrap();
        }
        for round in 0..5u64 {
            for key in chans
                .iter()
                .map(|c| channel_key(c))
                .chain(convs.iter().cloned())
            {
                let s = &mut shards[owner(&key)];
                assert!(s.store.owns(&key));
                s.store.append_message(msg(&key, round, t + round)).unwrap();
            }
            for s in &mut shards {
                s.turn();
            }
        }
        // The wrong shard refuses a key it does not own.
        let key = channel_key(&chans[0]);
        let wrong = (owner(&key) + 1) % 4;
        assert!(matches!(
            shards[wrong].store.append_message(msg(&key, 9, t)),
            Err(StoreError::NotOwned { .. })
        ));
        for s in shards {
            s.store.close().unwrap();
        }
    }
    for count in [2, 1, 3] {
        let dir = DataDir::open(tmp.path()).unwrap();
        let shards: Vec<Shard> = (0..count)
            .map(|i| Shard::open(&dir, i, count, options()))
            .collect();
        let owner = |key: &str| &shards[shard_of_partition(partition_of(key), count)].store;
        for u in &users {
            let a = owner(&account_key(u))
                .account(u)
                .unwrap_or_else(|| panic!("{u} at {count}"));
            assert_eq!(a.name, *u);
        }
        let total: usize = shards.iter().map(|s| s.store.accounts().count()).sum();
        assert_eq!(total, users.len());
        for key in chans
            .iter()
            .map(|c| channel_key(c))
            .chain(convs.iter().cloned())
        {
            assert_eq!(history_ids(owner(&key), &key), m(0..5), "{key} at {count}");
        }
    }
}

// ---------------------------------------------------------------- policies

fn gated(policy: SyncPolicy) -> (TestDisk, StoreOptions) {
    let disk = TestDisk::default();
    let opts = StoreOptions {
        sync: policy,
        disk: Arc::new(disk.clone()),
        ..options()
    };
    (disk, opts)
}

#[test]
fn an_account_ticket_completes_only_after_its_fsync_in_every_mode() {
    for policy in [
        SyncPolicy::Always,
        SyncPolicy::default(),
        SyncPolicy::Batch {
            interval_ms: 3_600_000,
        },
        SyncPolicy::None,
    ] {
        let tmp = TempDir::new("ticket");
        let dir = DataDir::open(tmp.path()).unwrap();
        let (disk, opts) = gated(policy);
        let mut s = Shard::open(&dir, 0, 1, opts);
        disk.0.sync_gate.set(true);
        s.store.append_message(msg("#c", 0, now())).unwrap();
        let t = s.store.put_account(account("alice", "h")).unwrap();
        s.turn();
        // The writer is inside fsync (held): nothing may be acknowledged.
        disk.0.sync_gate.wait_for_waiter();
        s.drain();
        assert!(
            s.completed(t).is_none(),
            "{policy:?}: completed before its fsync"
        );
        assert!(s.store.synced_seq() < t.0, "{policy:?}");
        disk.0.sync_gate.set(false);
        assert_eq!(s.wait_ticket(t), Ok(()), "{policy:?}");
        assert!(s.store.synced_seq() >= t.0);
        assert!(disk.0.syncs.load(SeqCst) >= 1);
        assert_eq!(
            s.store.account("ALICE").map(|a| a.name.as_str()),
            Some("alice")
        );
    }
}

#[test]
fn batch_mode_syncs_history_on_its_interval_and_accounts_at_once() {
    let tmp = TempDir::new("batch");
    let dir = DataDir::open(tmp.path()).unwrap();
    let (disk, opts) = gated(SyncPolicy::Batch {
        interval_ms: 3_600_000,
    });
    let mut s = Shard::open(&dir, 0, 1, opts);
    // The first write after a quiet spell is synced at once.
    let a = s
        .store
        .append_message(msg("#c", 0, now()))
        .unwrap()
        .unwrap();
    s.wait("first sync", |s| s.store.synced_seq() >= a);
    let syncs = disk.0.syncs.load(SeqCst);
    // The next waits for the interval (an hour): written, not synced.
    let b = s
        .store
        .append_message(msg("#c", 1, now()))
        .unwrap()
        .unwrap();
    s.wait("written", |s| s.store.written_seq() >= b);
    assert!(s.store.synced_seq() < b);
    assert_eq!(disk.0.syncs.load(SeqCst), syncs);
    // An account record forces the round, covering the history before it.
    let t = s.store.put_account(account("bob", "h")).unwrap();
    assert_eq!(s.wait_ticket(t), Ok(()));
    assert!(s.store.synced_seq() >= t.0 && t.0 > b);
    assert!(disk.0.syncs.load(SeqCst) > syncs);
    assert!(s.store.stats().snapshot().sync_rounds >= 2);
}

#[test]
fn none_mode_never_syncs_history_but_syncs_accounts() {
    let tmp = TempDir::new("none");
    let dir = DataDir::open(tmp.path()).unwrap();
    let (disk, opts) = gated(SyncPolicy::None);
    let mut s = Shard::open(&dir, 0, 1, opts);
    let mut last = 0;
    for i in 0..20 {
        last = s
            .store
            .append_message(msg("#c", i, now()))
            .unwrap()
            .unwrap();
        s.turn();
    }
    s.wait("written", |s| s.store.written_seq() >= last);
    assert_eq!(disk.0.syncs.load(SeqCst), 0);
    assert_eq!(s.store.synced_seq(), 0);
    // The gauge says what a crash would lose: all 20.
    assert_eq!(s.store.stats().snapshot().unsynced_records, 20);
    let t = s.store.put_account(account("carol", "h")).unwrap();
    assert_eq!(s.wait_ticket(t), Ok(()));
    assert_eq!(s.store.stats().snapshot().unsynced_records, 0);
    // One round: the account's log and the history's, if another.
    let syncs = disk.0.syncs.load(SeqCst);
    let logs = if partition_of("carol") == partition_of("#c") {
        1
    } else {
        2
    };
    assert_eq!(syncs, logs);
    assert_eq!(s.store.synced_seq(), t.0);
}

#[test]
fn always_mode_syncs_every_batch_before_reporting_it() {
    let tmp = TempDir::new("always");
    let dir = DataDir::open(tmp.path()).unwrap();
    let (disk, opts) = gated(SyncPolicy::Always);
    let mut s = Shard::open(&dir, 0, 1, opts);
    for i in 0..5 {
        disk.0.sync_gate.set(true);
        let seq = s
            .store
            .append_message(msg("#c", i, now()))
            .unwrap()
            .unwrap();
        s.turn();
        disk.0.sync_gate.wait_for_waiter();
        s.drain();
        assert!(s.store.written_seq() < seq, "reported before its sync");
        disk.0.sync_gate.set(false);
        s.wait("synced", |s| s.store.synced_seq() >= seq);
        assert_eq!(s.store.written_seq(), s.store.synced_seq());
        assert_eq!(disk.0.syncs.load(SeqCst), i + 1);
    }
}

#[test]
fn sync_policy_parses() {
    assert_eq!("always".parse(), Ok(SyncPolicy::Always));
    assert_eq!("none".parse(), Ok(SyncPolicy::None));
    assert_eq!("batch".parse(), Ok(SyncPolicy::Batch { interval_ms: 5 }));
    assert_eq!(
        "batch:20".parse(),
        Ok(SyncPolicy::Batch { interval_ms: 20 })
    );
    assert!("batch:0".parse::<SyncPolicy>().is_err());
    assert!("sometimes".parse::<SyncPolicy>().is_err());
}

// ---------------------------------------------------------------- backpressure

#[test]
fn a_stalled_writer_never_blocks_the_shard_and_drops_history_not_accounts() {
    let tmp = TempDir::new("stall");
    let dir = DataDir::open(tmp.path()).unwrap();
    let (disk, opts) = gated(SyncPolicy::default());
    let mut s = Shard::open(
        &dir,
        0,
        1,
        StoreOptions {
            max_unwritten: 4096,
            channel_capacity: 1,
            ..opts
        },
    );
    disk.0.write_gate.set(true);
    let mut stored = Vec::new();
    let mut none = 0;
    for i in 0..200 {
        match s.store.append_message(msg("#c", i, now())).unwrap() {
            Some(_) => stored.push(format!("m{i}")),
            None => none += 1,
        }
        s.turn();
        if i == 0 {
            disk.0.write_gate.wait_for_waiter();
        }
    }
    assert!(none > 0, "the bound must have been reached");
    assert!(stored.len() > 1);
    assert_eq!(s.store.stats().snapshot().records_dropped, none);
    // Every message is still served from memory.
    assert_eq!(s.store.history_len("#c"), 200);
    // An account is never dropped.
    let t = s.store.put_account(account("dave", "h")).unwrap();
    s.turn();
    disk.0.write_gate.set(false);
    assert_eq!(s.wait_ticket(t), Ok(()));
    s.store.close().unwrap();
    drop(dir);
    let s = open_all(tmp.path(), options()).unwrap();
    assert_eq!(history_ids(&s, "#c"), stored);
    assert!(s.account("dave").is_some());
}

// ---------------------------------------------------------------- failures

#[test]
fn failing_writes_keep_serving_refuse_accounts_and_leave_a_clean_log() {
    let tmp = TempDir::new("fail");
    let dir = DataDir::open(tmp.path()).unwrap();
    let (disk, opts) = gated(SyncPolicy::default());
    let mut s = Shard::open(&dir, 0, 1, opts);
    let t = s.store.put_account(account("alice", "old")).unwrap();
    assert_eq!(s.wait_ticket(t), Ok(()));
    let m0 = s
        .store
        .append_message(msg("#c", 0, now()))
        .unwrap()
        .unwrap();
    s.wait("m0 synced", |s| s.store.synced_seq() >= m0);

    // Writes fail (half of each is written first): a full or read-only disk.
    for (errno, i) in [(libc::ENOSPC, 1), (libc::EROFS, 2)] {
        disk.0.write_errno.store(errno, SeqCst);
        let dropped_before = s.store.stats().snapshot().records_dropped;
        s.store.append_message(msg("#c", i, now())).unwrap();
        let bob = s.store.put_account(account("bob", "h")).unwrap();
        let alice = s.store.put_account(account("alice", "new")).unwrap();
        let want = io::Error::from_raw_os_error(errno).kind();
        assert_eq!(s.wait_ticket(bob).map_err(|e| e.kind), Err(want));
        assert_eq!(s.wait_ticket(alice).map_err(|e| e.kind), Err(want));
        // Reverted to what is on disk.
        assert!(s.store.account("bob").is_none());
        assert_eq!(s.store.account("alice").unwrap().password_hash, "old");
        let st = s.store.stats().snapshot();
        assert!(st.records_dropped > dropped_before);
        assert!(st.write_errors >= 1);
        assert!(
            st.last_error.starts_with("write ") && st.last_error.contains(".log"),
            "{}",
            st.last_error
        );
        // Still serving, from memory.
        assert_eq!(
            s.store.latest("#c", None, 1).unwrap()[0].msgid,
            format!("m{i}")
        );
        disk.0.write_errno.store(0, SeqCst);
    }

    // A failing sync: what it covered is cut off, the account refused.
    disk.0.sync_errno.store(libc::EIO, SeqCst);
    s.store.append_message(msg("#c", 3, now())).unwrap();
    let erin = s.store.put_account(account("erin", "h")).unwrap();
    let eio = io::Error::from_raw_os_error(libc::EIO).kind();
    assert_eq!(s.wait_ticket(erin).map_err(|e| e.kind), Err(eio));
    assert!(s.store.account("erin").is_none());
    disk.0.sync_errno.store(0, SeqCst);

    // Healed: writes go on.
    s.store.append_message(msg("#c", 4, now())).unwrap();
    let carol = s.store.put_account(account("carol", "h")).unwrap();
    assert_eq!(s.wait_ticket(carol), Ok(()));
    s.store.close().unwrap();
    drop(dir);

    // The log is clean (failed bytes were cut away) and holds exactly what
    // succeeded.
    let s = open_all(tmp.path(), options()).unwrap();
    assert_eq!(history_ids(&s, "#c"), ["m0", "m4"]);
    assert_eq!(s.account("alice").unwrap().password_hash, "old");
    assert!(s.account("carol").is_some());
    assert!(s.account("bob").is_none());
    assert!(s.account("erin").is_none());
}

/// A mounted tmpfs, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs(at.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_degrades_to_history_not_stored() {
    let tmp = TempDir::new("tmpfs");
    let mnt = tmp.path().join("mnt");
    let _fs = match Tmpfs::mount(&mnt, "400k") {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!(
                "SKIPPED a_full_disk_degrades_to_history_not_stored: cannot mount a tmpfs: {e}"
            );
            return;
        }
    };
    let data = mnt.join("data");
    let dir = DataDir::open(&data).unwrap();
    let mut s = Shard::open(&dir, 0, 1, options());
    let alice = s.store.put_account(account("alice", "h")).unwrap();
    assert_eq!(s.wait_ticket(alice), Ok(()));
    let errors = |s: &Shard| s.store.stats().snapshot().write_errors;
    let mut i = 0;
    let mut append = |s: &mut Shard| {
        let mut m = msg("#full", i, now());
        m.text = "x".repeat(400);
        i += 1;
        assert!(i < 100_000, "the tmpfs never filled");
        s.store.append_message(m).unwrap().unwrap()
    };
    // An account too big for what is left is refused, and never half kept.
    // Filling is racy at the page level (a failed write's truncation can
    // free a page, and an account may land where a message did not fit), so
    // an account that still fits is kept and the disk is filled again.
    let mut kept = Vec::new();
    let mut refused = None;
    for attempt in 0..5 {
        // Fill fast until a write fails (a batch of many turns may fail with
        // pages still free)...
        let start = errors(&s);
        while errors(&s) == start {
            append(&mut s);
            s.turn();
        }
        // ...then one message at a time until a lone one does not fit.
        loop {
            let before = errors(&s);
            let seq = append(&mut s);
            s.wait("a write", |s| s.store.written_seq() >= seq);
            if errors(&s) > before {
                break;
            }
        }
        // Several pages: more than the page a failed write's truncation may free.
        let name = format!("bob{attempt}");
        let mut big = account(&name, "h");
        big.cert_fingerprints = vec!["f".repeat(100); 150];
        let ticket = s.store.put_account(big).unwrap();
        match s.wait_ticket(ticket).map_err(|e| e.kind) {
            Ok(()) => {
                assert!(s.store.account(&name).is_some());
                kept.push(name);
            }
            Err(kind) => {
                assert_eq!(kind, io::ErrorKind::StorageFull);
                assert!(s.store.account(&name).is_none());
                refused = Some(name);
                break;
            }
        }
    }
    let refused = refused.expect("an account on a full disk was refused");
    assert!(s.store.account("alice").is_some());
    // Still serving: the history is all in memory.
    assert!(s.store.history_len("#full") > 300);
    let stats = s.store.stats().clone();
    s.store.close().unwrap();
    drop(dir);
    let st = stats.snapshot();
    assert!(st.last_error.contains("No space left"), "{}", st.last_error);
    // The full store opens cleanly and holds, in order, every message but those
    // counted as dropped. (A lone message may fit where a bigger failed batch
    // did not, so while the disk is full the stored history can have holes.)
    let appended = i;
    let dropped = st.records_dropped;
    let s = open_all(&data, options()).unwrap();
    assert!(s.account("alice").is_some() && s.account(&refused).is_none());
    assert!(kept.iter().all(|name| s.account(name).is_some()));
    let got: Vec<u64> = history_ids(&s, "#full")
        .iter()
        .map(|id| id[1..].parse().unwrap())
        .collect();
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order");
    assert_eq!(got.len() as u64, appended - dropped);
}

// ---------------------------------------------------------------- compaction

/// A channel, a conversation and an account name in one partition.
fn same_partition_keys() -> (String, String, String) {
    let chan = "#gc".to_string();
    let p = partition_of(&chan);
    let conv = (0..)
        .map(|i| conversation_key(&format!("u{i}"), "v"))
        .find(|k| partition_of(k) == p)
        .unwrap_or_default();
    let acct = (0..)
        .map(|i| format!("acct{i}"))
        .find(|k| partition_of(k) == p)
        .unwrap_or_default();
    (chan, conv, acct)
}

#[test]
fn compaction_keeps_records_appended_while_it_runs() {
    let tmp = TempDir::new("compact");
    let dir = DataDir::open(tmp.path()).unwrap();
    let (chan, conv, acct) = same_partition_keys();
    let path = dir.log_path(partition_of(&chan));
    let (disk, opts) = gated(SyncPolicy::default());
    let opts = StoreOptions {
        compact_min: 4096,
        limits: HistoryLimits {
            channel_messages: 5,
            conversation_messages: 100_000,
            max_age_ms: 0,
        },
        ..opts
    };
    // The first job is held before it writes its file, so everything below is
    // appended to the old log while it runs.
    disk.0.create_gate.set(true);
    let mut s = Shard::open(&dir, 0, 1, opts.clone());
    let t = now();
    let mut last = 0;
    for i in 0..300 {
        let mut x = msg(&chan, i, t);
        x.text = "y".repeat(100);
        last = s.store.append_message(x).unwrap().unwrap();
        if i % 10 == 0 {
            s.turn();
        }
    }
    s.wait("written", |s| s.store.written_seq() >= last);
    disk.0.create_gate.wait_for_waiter();
    for i in 0..50 {
        s.store.append_message(msg(&conv, i, t)).unwrap();
        s.turn();
    }
    let ticket = s.store.put_account(account(&acct, "h")).unwrap();
    assert_eq!(s.wait_ticket(ticket), Ok(()));
    let big = std::fs::metadata(&path).unwrap().len();
    assert!(big > 30_000);
    assert_eq!(s.store.stats().snapshot().compactions, 0);
    // Released: the held job finishes (its file plus the tail appended
    // meanwhile), and the garbage in that tail is compacted by the next one.
    disk.0.create_gate.set(false);
    s.wait("compaction", |s| {
        s.store.stats().snapshot().compactions >= 1
            && std::fs::metadata(&path).unwrap().len() * 3 < big
    });
    for i in 50..60 {
        s.store.append_message(msg(&conv, i, t)).unwrap();
    }
    s.store.close().unwrap();
    assert!(!dir.compact_path(partition_of(&chan)).exists());
    drop(dir);
    let s = open_all(tmp.path(), opts).unwrap();
    assert_eq!(history_ids(&s, &chan), m(295..300));
    assert_eq!(history_ids(&s, &conv), m(0..60));
    assert!(s.account(&acct).is_some());
}

#[test]
fn a_failed_compaction_keeps_the_old_log() {
    let tmp = TempDir::new("compact-fail");
    let dir = DataDir::open(tmp.path()).unwrap();
    let (disk, opts) = gated(SyncPolicy::default());
    let opts = StoreOptions {
        compact_min: 4096,
        limits: HistoryLimits {
            channel_messages: 5,
            ..no_age_limit()
        },
        ..opts
    };
    let mut s = Shard::open(&dir, 0, 1, opts.clone());
    // The job's writes fail; the shard's appends are not affected (they are
    // done before the fault is switched on, and after it is switched off).
    disk.0.create_gate.set(true);
    let mut last = 0;
    for i in 0..300 {
        let mut x = msg("#gc", i, now());
        x.text = "y".repeat(100);
        last = s.store.append_message(x).unwrap().unwrap();
    }
    s.wait("written", |s| s.store.written_seq() >= last);
    disk.0.create_gate.wait_for_waiter();
    disk.0.write_errno.store(libc::ENOSPC, SeqCst);
    disk.0.create_gate.set(false);
    s.wait("the failure", |s| {
        s.store.stats().snapshot().compaction_errors == 1
    });
    disk.0.write_errno.store(0, SeqCst);
    assert_eq!(s.store.stats().snapshot().compactions, 0);
    assert!(!dir.compact_path(partition_of("#gc")).exists());
    s.store.close().unwrap();
    drop(dir);
    let s = open_all(tmp.path(), opts).unwrap();
    assert_eq!(history_ids(&s, "#gc"), m(295..300));
}

// ---------------------------------------------------------------- lock, offline

#[test]
fn a_second_open_of_the_directory_fails_naming_the_holder() {
    let tmp = TempDir::new("lock");
    let dir = DataDir::open(tmp.path()).unwrap();
    let err = DataDir::open(tmp.path()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "data directory {} is in use by process {}",
            tmp.path().display(),
            std::process::id()
        )
    );
    assert!(matches!(
        open_all(tmp.path(), options()),
        Err(StoreError::Locked { .. })
    ));
    // A store keeps the directory locked after its DataDir handle is gone.
    let s = Shard::open(&dir, 0, 1, options());
    drop(dir);
    assert!(DataDir::open(tmp.path()).is_err());
    s.store.close().unwrap();
    drop(s.reports);
    assert!(DataDir::open(tmp.path()).is_ok());
}

#[test]
fn an_unwritable_directory_is_a_clear_error_at_open() {
    let tmp = TempDir::new("unwritable");
    std::fs::write(tmp.path().join("file"), b"").unwrap();
    let err = DataDir::open(tmp.path().join("file").join("data")).unwrap_err();
    assert!(
        err.to_string().starts_with("create data directory"),
        "{err}"
    );
    // A partition path that is a directory cannot be opened as a log.
    let dir = DataDir::open(tmp.path().join("data")).unwrap();
    std::fs::create_dir(dir.log_path(0)).unwrap();
    let err = Shard::try_open(&dir, 0, 1, options())
        .map(|_| ())
        .unwrap_err();
    assert!(err.to_string().contains("p00.log"), "{err}");
}

#[test]
fn offline_store_writes_accounts_durably_and_lists_them() {
    let tmp = TempDir::new("offline");
    let mut s = open_all(tmp.path(), options()).unwrap();
    assert_eq!(s.partitions().count(), 64);
    let t = s.put_account(account("Alice", "h1")).unwrap();
    let done = s.flush().unwrap();
    assert_eq!(
        done,
        [Completed {
            ticket: t,
            result: Ok(())
        }]
    );
    s.put_account(account("bob", "h2")).unwrap();
    s.delete_account("ALICE").unwrap();
    s.close().unwrap();
    let s = open_all(tmp.path(), options()).unwrap();
    let names: HashSet<_> = s.accounts().map(|a| a.name.clone()).collect();
    assert_eq!(names, HashSet::from(["bob".to_string()]));
    assert_eq!(s.account("BOB").unwrap().cert_fingerprints, ["ab:cd"]);
}

// ---------------------------------------------------------------- upgrades

/// An upgrade's hand-over of the directory: `detach` writes out everything
/// (an account whose ticket is unresolved included) so that another holder
/// sees it all; the detached store keeps serving from memory, refuses account
/// changes, and holds what is said meanwhile for a store opened again
/// (a failed upgrade) — within its bound.
#[test]
fn a_detached_store_hands_everything_over_and_holds_what_follows() {
    let tmp = TempDir::new("detach");
    let t = now();
    let dir = DataDir::open(tmp.path()).unwrap();
    let opts = StoreOptions {
        max_unwritten: 4096,
        ..options()
    };
    let mut s = Shard::open(&dir, 0, 1, opts.clone());
    let key = channel_key("#up");
    for i in 0..10 {
        s.store.append_message(msg(&key, i, t + i)).unwrap();
    }
    s.turn();
    // Not yet durable when the upgrade comes: still written out.
    let ticket = s.store.put_account(account("alice", "h1")).unwrap();
    for i in 10..20 {
        s.store.append_message(msg(&key, i, t + i)).unwrap();
    }
    let detaching = s.store.detach();
    assert!(s.store.is_detached());
    detaching.wait().unwrap();
    s.wait("the account's ticket", |s| {
        s.done
            .iter()
            .any(|c| c.ticket == ticket && c.result.is_ok())
    });
    dir.unlock();

    // The new holder sees all of it.
    {
        let other = DataDir::open(tmp.path()).expect("unlocked for the next process");
        let n = Shard::open(&other, 0, 1, options());
        assert_eq!(history_ids(&n.store, &key), m(0..20));
        assert!(n.store.account("alice").is_some());
        drop(n);
        assert!(matches!(dir.relock(), Err(StoreError::Locked { .. })));
    }

    // Meanwhile the detached store serves from memory and refuses accounts.
    assert!(matches!(
        s.store.put_account(account("bob", "h2")),
        Err(StoreError::Detached)
    ));
    assert!(matches!(
        s.store.delete_account("alice"),
        Err(StoreError::Detached)
    ));
    assert!(s.store.account("alice").is_some());
    let mut fitted = 0;
    for i in 20..200 {
        assert_eq!(s.store.append_message(msg(&key, i, t + i)).unwrap(), None);
    }
    s.turn();
    assert_eq!(history_ids(&s.store, &key), m(0..200), "kept in memory");
    let (held, dropped) = s.store.take_held();
    for (k, h) in held.iter().enumerate() {
        assert_eq!(h.msgid, format!("m{}", 20 + k), "in order");
        fitted += 1;
    }
    assert!(
        fitted > 0 && dropped > 0,
        "{fitted} held, {dropped} over 4 KiB"
    );
    assert_eq!(fitted + dropped as usize, 180);

    // A failed upgrade: the lock comes back, a new store appends what was held.
    dir.relock().expect("free again");
    drop(s);
    let mut again = Shard::open(&dir, 0, 1, options());
    for h in held {
        again.store.append_message(h).unwrap();
    }
    again.turn();
    again.store.close().unwrap();
    drop(dir);
    let dir = DataDir::open(tmp.path()).unwrap();
    let last = Shard::open(&dir, 0, 1, options());
    assert_eq!(history_ids(&last.store, &key), m(0..20 + fitted));
}
