//! Measures the store as one shard drives it: appends per second through
//! `append_message` + `end_turn`, and the sync rounds and `fdatasync` calls per
//! second the policy makes under that load.
//!
//! ```text
//! cargo run --release -p shardline-chat --example store_bench -- \
//!     [--dir DIR] [--secs 3] [--shards 2] [--per-turn 32] [--turn-us 0] [--sync batch]
//!     [--sync-threads 4]
//! ```
//!
//! It runs shard 0 of `--shards` (so it owns `64 / shards` partitions) and
//! spreads each turn's `--per-turn` messages (200 bytes of text) over every
//! partition it owns, sleeping `--turn-us` between turns. `DIR` (default: a
//! fresh directory under the system temp dir, removed afterwards) should be on
//! the disk to measure.

use std::{
    path::PathBuf,
    sync::mpsc,
    time::{Duration, Instant},
};

use shardline_chat::store::{
    channel_key, partition_of, shard_of_partition, DataDir, HistoryLimits, Message, MessageKind,
    Store, StoreOptions, SyncPolicy,
};

fn main() {
    let mut dir: Option<PathBuf> = None;
    let (mut secs, mut shards, mut per_turn, mut turn_us) = (3u64, 2usize, 32usize, 0u64);
    let mut sync = SyncPolicy::default();
    let mut sync_threads = StoreOptions::default().sync_threads;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--dir" => dir = Some(v.into()),
            "--secs" => secs = v.parse().expect("--secs N"),
            "--shards" => shards = v.parse().expect("--shards N"),
            "--per-turn" => per_turn = v.parse().expect("--per-turn N"),
            "--turn-us" => turn_us = v.parse().expect("--turn-us N"),
            "--sync" => sync = v.parse().expect("--sync always|batch|batch:<ms>|none"),
            "--sync-threads" => sync_threads = v.parse().expect("--sync-threads N"),
            _ => panic!("unknown argument {a}"),
        }
    }
    let temp = dir.is_none();
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("shardline-store-bench-{}", std::process::id()))
    });
    let data = DataDir::open(&dir).expect("open the data directory");
    let (tx, reports) = mpsc::channel();
    let options = StoreOptions {
        sync,
        limits: HistoryLimits {
            channel_messages: 1000,
            conversation_messages: 1000,
            max_age_ms: 0,
        },
        sync_threads,
        ..StoreOptions::default()
    };
    let mut store = Store::open(
        &data,
        0,
        shards,
        options,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    )
    .expect("open the store");
    // One channel per owned partition, so every turn touches all of them.
    let owned = store.partitions().count();
    let mut chans: Vec<String> = Vec::new();
    let mut seen = [false; 64];
    for i in 0.. {
        let key = channel_key(&format!("#bench{i}"));
        let p = partition_of(&key);
        if shard_of_partition(p, shards) == 0 && !seen[usize::from(p)] {
            seen[usize::from(p)] = true;
            chans.push(key);
            if chans.len() == owned {
                break;
            }
        }
    }
    let text = "x".repeat(200);
    let start = Instant::now();
    let before = store.stats().snapshot();
    let (mut appended, mut turns) = (0u64, 0u64);
    while start.elapsed() < Duration::from_secs(secs) {
        for j in 0..per_turn {
            let target = &chans[(appended as usize + j) % chans.len()];
            store
                .append_message(Message {
                    target: target.as_str().into(),
                    to: target.clone(),
                    msgid: format!("b{appended}-{j}"),
                    time: shardline_chat::clock::now_millis(),
                    source: "bench!b@localhost".into(),
                    account: String::new(),
                    kind: MessageKind::Privmsg,
                    tags: String::new(),
                    text: text.clone(),
                })
                .expect("append");
        }
        appended += per_turn as u64;
        turns += 1;
        store.end_turn();
        while let Ok(r) = reports.try_recv() {
            store.on_report(r);
        }
        if turn_us > 0 {
            std::thread::sleep(Duration::from_micros(turn_us));
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = store.stats().snapshot();
    let per_s = |a: u64, b: u64| (a - b) as f64 / elapsed;
    println!(
        "shard 0 of {shards} ({owned} partitions), {sync:?}, {sync_threads} sync threads, \
         {per_turn} messages per turn, {turn_us} us between turns, {elapsed:.1} s"
    );
    println!(
        "appends/s {:.0}  turns/s {:.0}  written MB/s {:.1}  sync rounds/s {:.0}  \
         fdatasync/s {:.0}  dropped {}",
        appended as f64 / elapsed,
        turns as f64 / elapsed,
        per_s(after.bytes_written, before.bytes_written) / 1e6,
        per_s(after.sync_rounds, before.sync_rounds),
        per_s(after.fsyncs, before.fsyncs),
        after.records_dropped - before.records_dropped,
    );
    store.close().expect("close");
    drop(data);
    if temp {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
