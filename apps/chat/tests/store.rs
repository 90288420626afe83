//! The store across processes: `kill -9` under traffic, and the directory lock
//! held by another process. Each test re-runs this test binary as the child
//! (an ignored test that does its part only when its environment variable is
//! set) — no fork, no helper binary.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use shardline_chat::store::{
    open_all, Account, DataDir, HistoryLimits, Message, MessageKind, Store, StoreOptions,
    SyncPolicy,
};

const CRASH_DIR: &str = "SHARDLINE_STORE_TEST_CRASH_DIR";
const LOCK_DIR: &str = "SHARDLINE_STORE_TEST_LOCK_DIR";

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p =
            std::env::temp_dir().join(format!("shardline-store-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options() -> StoreOptions {
    StoreOptions {
        sync: SyncPolicy::default(),
        limits: HistoryLimits {
            channel_messages: 10_000_000,
            conversation_messages: 10_000_000,
            max_age_ms: 0,
        },
        ..StoreOptions::default()
    }
}

/// Runs the ignored test `name` of this binary as a child process.
fn child(name: &str, var: &str, dir: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(var, dir);
    c
}

fn message(i: u64) -> Message {
    Message {
        target: "#crash".into(),
        to: "#crash".into(),
        msgid: format!("m{i}"),
        time: shardline_chat::clock::now_millis(),
        source: "load!gen@localhost".into(),
        account: String::new(),
        kind: MessageKind::Privmsg,
        tags: String::new(),
        text: format!("line {i} of the crash test"),
    }
}

/// The child: appends messages (and now and then an account) in a loop like a
/// shard, with the default `batch` policy, and prints what was acknowledged:
/// `W i` (messages up to `i` were written), `S i` (synced), `A n` (account
/// `n`'s ticket completed). Runs until killed.
#[test]
#[ignore = "the child process of kill_9_under_traffic_keeps_every_acknowledged_record"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR) else {
        return;
    };
    let dir = DataDir::open(dir).unwrap();
    let (tx, reports) = mpsc::channel();
    let mut store = Store::open(
        &dir,
        0,
        1,
        options(),
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    )
    .unwrap();
    let mut seqs: Vec<u64> = Vec::new();
    let mut tickets = Vec::new();
    let mut i = 0u64;
    let acked = |seqs: &[u64], upto: u64| seqs.partition_point(|&s| s <= upto).checked_sub(1);
    loop {
        for _ in 0..10 {
            let seq = store.append_message(message(i)).unwrap();
            seqs.push(seq.expect("the writer keeps up: nothing is dropped"));
            i += 1;
        }
        if i % 200 == 0 {
            let n = tickets.len();
            let t = store
                .put_account(Account {
                    name: format!("user{n}"),
                    password_hash: "$argon2id$x".into(),
                    created: 0,
                    cert_fingerprints: Vec::new(),
                    flags: 0,
                })
                .unwrap();
            tickets.push(t);
        }
        assert!(store.end_turn().is_empty());
        while let Ok(r) = reports.try_recv() {
            for c in store.on_report(r) {
                assert_eq!(c.result, Ok(()));
                let n = tickets.iter().position(|&t| t == c.ticket).unwrap();
                println!("A {n}");
            }
            if let Some(w) = acked(&seqs, store.written_seq()) {
                println!("W {w}");
            }
            if let Some(s) = acked(&seqs, store.synced_seq()) {
                println!("S {s}");
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// What the crash child acknowledged.
#[derive(Default)]
struct Acks {
    written: Option<u64>,
    synced: Option<u64>,
    accounts: Vec<u64>,
}

impl Acks {
    fn note(&mut self, line: &str) {
        let (kind, n) = line.split_once(' ').unwrap_or(("", ""));
        let Ok(n) = n.parse::<u64>() else { return };
        match kind {
            "W" => self.written = self.written.max(Some(n)),
            "S" => self.synced = self.synced.max(Some(n)),
            "A" => self.accounts.push(n),
            _ => {}
        }
    }
}

#[test]
fn kill_9_under_traffic_keeps_every_acknowledged_record() {
    let tmp = TempDir::new("crash");
    for round in 0..3 {
        let mut proc = child("crash_child", CRASH_DIR, &tmp.0)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = proc.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut acks = Acks::default();
        // Kill it mid-traffic: once some thousands of messages are synced, at a
        // different moment each round.
        let deadline = Instant::now() + Duration::from_secs(60);
        let want = 2000 + 1500 * round;
        while acks.synced.is_none_or(|s| s < want) {
            assert!(Instant::now() < deadline, "the child made no progress");
            if let Ok(line) = lines.recv_timeout(Duration::from_millis(100)) {
                acks.note(&line);
            }
        }
        std::thread::sleep(Duration::from_millis(7 * round));
        proc.kill().unwrap(); // SIGKILL
        proc.wait().unwrap();
        reader.join().unwrap();
        while let Ok(line) = lines.try_recv() {
            acks.note(&line);
        }
        let written = acks.written.unwrap();
        // What the child's dead process left must open (a torn tail is cut)
        // and hold every acknowledged record, gap-free and in order.
        let s = open_all(&tmp.0, options()).unwrap();
        let got = s.latest("#crash", None, usize::MAX).unwrap();
        eprintln!(
            "round {round}: kept {}, acknowledged written {written}, synced {:?}, accounts {}",
            got.len(),
            acks.synced,
            acks.accounts.len()
        );
        assert!(
            got.len() as u64 > written,
            "round {round}: {} messages kept, {written} acknowledged as written",
            got.len()
        );
        for (i, m) in got.iter().enumerate() {
            assert_eq!(m.msgid, format!("m{i}"), "round {round}: order");
        }
        assert!(!acks.accounts.is_empty());
        for n in &acks.accounts {
            assert!(
                s.account(&format!("user{n}")).is_some(),
                "round {round}: user{n}"
            );
        }
        drop(s);
        // The next round starts from an empty store.
        for e in std::fs::read_dir(&tmp.0).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "log") {
                std::fs::remove_file(p).unwrap();
            }
        }
    }
}

/// The child: tries to open the directory and prints the outcome.
#[test]
#[ignore = "the child process of a_second_process_gets_the_holders_pid"]
fn lock_child() {
    let Some(dir) = std::env::var_os(LOCK_DIR) else {
        return;
    };
    match DataDir::open(dir) {
        Ok(_) => println!("LOCK-OK"),
        Err(e) => println!("LOCK-ERROR: {e}"),
    }
}

#[test]
fn a_second_process_gets_the_holders_pid() {
    let tmp = TempDir::new("lock");
    let dir = DataDir::open(&tmp.0).unwrap();
    let run = || {
        let out = child("lock_child", LOCK_DIR, &tmp.0).output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let out = run();
    let want = format!(
        "LOCK-ERROR: data directory {} is in use by process {}",
        tmp.0.display(),
        std::process::id()
    );
    assert!(out.contains(&want), "{out}");
    drop(dir);
    assert!(run().contains("LOCK-OK"));
}
