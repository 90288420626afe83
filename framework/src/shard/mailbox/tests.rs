//! Mailbox tests: per-pair order, Full, room notices, counters, and a
//! thread-level stress test with real doorbells.

use std::{
    io, thread,
    time::{Duration, Instant},
};

use rand::Rng;

use super::*;

fn bells(n: usize) -> Vec<Doorbell> {
    (0..n)
        .map(|_| Doorbell::new().expect("eventfd for a test doorbell"))
        .collect()
}

/// Reads and resets the eventfd: the number of rings since the last read.
fn take_rings(bell: &Doorbell) -> u64 {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into a valid u64 from an eventfd we hold a share of.
    let r = unsafe {
        libc::read(
            bell.raw_fd(),
            (&mut v as *mut u64).cast(),
            std::mem::size_of::<u64>(),
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "eventfd read: {e}");
        return 0;
    }
    v
}

/// Blocks until the doorbell is readable or `timeout` passes; true if rung.
fn wait(bell: &Doorbell, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: bell.raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    loop {
        // SAFETY: one valid pollfd that lives across the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            assert_eq!(e.kind(), io::ErrorKind::Interrupted, "poll: {e}");
            continue;
        }
        return r > 0;
    }
}

fn collect<M>(mb: &Mailboxes<M>, to: usize, budget: usize) -> Vec<(usize, M)> {
    let mut got = Vec::new();
    let n = mb.drain(to, budget, |from, m| got.push((from, m)));
    assert_eq!(n, got.len());
    got
}

#[test]
fn per_pair_order_is_kept() {
    let mb = Mailboxes::new(3, 64, bells(3));
    for i in 0..10 {
        mb.post(0, 2, i).expect("room");
        mb.post(1, 2, 100 + i).expect("room");
    }
    mb.post(2, 2, 1000).expect("a shard may post to itself");
    let got = collect(&mb, 2, 100);
    assert_eq!(got.len(), 21);
    for src in 0..3 {
        let seq: Vec<u64> = got
            .iter()
            .filter(|(f, _)| *f == src)
            .map(|(_, m)| *m)
            .collect();
        let want: Vec<u64> = match src {
            0 => (0..10).collect(),
            1 => (100..110).collect(),
            _ => vec![1000],
        };
        assert_eq!(seq, want, "order from shard {src}");
    }
    assert!(collect(&mb, 2, 100).is_empty());
}

#[test]
fn full_hands_the_message_back_intact() {
    let mb = Mailboxes::new(2, 4, bells(2));
    for i in 0..4 {
        mb.post(0, 1, format!("m{i}")).expect("room");
    }
    let Err(Full(back)) = mb.post(0, 1, "the fifth".to_string()) else {
        panic!("a fifth message fit in a queue of four");
    };
    assert_eq!(back, "the fifth");
    // Other pairs are unaffected.
    mb.post(1, 0, "reply".to_string()).expect("room");
    assert_eq!(mb.metrics(0).snapshot().full, 1);
    let e = mb.post(0, 1, "x".to_string()).expect_err("still full");
    assert_eq!(format!("{e:?}"), "Full(..)");
    assert!(e.to_string().contains("full"));
    assert_eq!(e.into_inner(), "x");
}

#[test]
fn drain_is_fair_across_sources() {
    let mb = Mailboxes::new(4, 256, bells(4));
    for i in 0..100 {
        mb.post(0, 3, (0, i)).expect("room");
    }
    for i in 0..3 {
        mb.post(1, 3, (1, i)).expect("room");
        mb.post(2, 3, (2, i)).expect("room");
    }
    // A small budget is shared: the chatty source does not take it all.
    let got = collect(&mb, 3, 6);
    for src in 0..3 {
        assert_eq!(
            got.iter().filter(|(f, _)| *f == src).count(),
            2,
            "share of {src}: {got:?}"
        );
    }
    // Budget 1 at a time rotates over the sources.
    let firsts: Vec<usize> = (0..3).map(|_| collect(&mb, 3, 1)[0].0).collect();
    assert_eq!(firsts, vec![0, 1, 2]);
    // Once the quiet sources are empty, the rest of the budget goes to the chatty one.
    let got = collect(&mb, 3, 50);
    assert_eq!(got.len(), 50);
    assert!(got.iter().all(|(f, _)| *f == 0));
    let rest = collect(&mb, 3, 1000);
    assert_eq!(rest.len(), 100 - 2 - 1 - 50);
    let order: Vec<u64> = rest.iter().map(|(_, (_, i))| *i).collect();
    assert_eq!(order, (53..100).collect::<Vec<u64>>());
}

#[test]
fn sleeping_receiver_is_rung_once_per_batch() {
    let bells = bells(2);
    let mb = Mailboxes::new(2, 64, bells.clone());
    assert!(mb.prepare_sleep(1), "nothing pending");
    for i in 0..10 {
        mb.post(0, 1, i).expect("room");
    }
    assert_eq!(take_rings(&bells[1]), 1, "one write for the batch");
    assert_eq!(mb.metrics(0).snapshot().doorbell_writes, 1);
    // Awake (the announcement was consumed): no rings.
    mb.woke(1);
    mb.post(0, 1, 10).expect("room");
    assert_eq!(take_rings(&bells[1]), 0);
    // Pending messages: no sleep, announcement withdrawn, so no ring either.
    assert!(!mb.prepare_sleep(1));
    mb.post(0, 1, 11).expect("room");
    assert_eq!(take_rings(&bells[1]), 0);
    assert_eq!(collect(&mb, 1, 100).len(), 12);
    assert!(mb.prepare_sleep(1));
    mb.woke(1);
    mb.post(0, 1, 12).expect("room");
    assert_eq!(take_rings(&bells[1]), 0, "woke() withdrew the announcement");
}

#[test]
fn room_notice_arrives_once_after_draining_to_half() {
    let bells = bells(2);
    let mb = Mailboxes::new(2, 4, bells.clone());
    for i in 0..4 {
        mb.post(0, 1, i).expect("room");
    }
    assert!(mb.post(0, 1, 4).is_err());
    assert!(mb.post(0, 1, 4).is_err(), "a second Full, same episode");
    let mut ready = Vec::new();
    mb.take_ready(0, &mut ready);
    assert!(ready.is_empty());
    assert!(mb.prepare_sleep(0), "the sender may sleep while it waits");
    assert_eq!(collect(&mb, 1, 1).len(), 1);
    mb.take_ready(0, &mut ready);
    assert!(ready.is_empty(), "3 of 4 is more than half full");
    assert_eq!(take_rings(&bells[0]), 0);
    assert_eq!(collect(&mb, 1, 1).len(), 1);
    assert_eq!(take_rings(&bells[0]), 1, "the sleeping sender is rung");
    assert_eq!(mb.metrics(1).snapshot().doorbell_writes, 1);
    assert!(
        !mb.prepare_sleep(0),
        "a pending notice keeps the sender awake"
    );
    mb.take_ready(0, &mut ready);
    assert_eq!(ready, vec![1]);
    ready.clear();
    mb.take_ready(0, &mut ready);
    assert!(ready.is_empty(), "exactly once");
    mb.post(0, 1, 4).expect("the retry finds room");
    assert_eq!(collect(&mb, 1, 100).len(), 3);
    mb.take_ready(0, &mut ready);
    assert!(ready.is_empty(), "no episode, no notice");
}

#[test]
fn room_notice_with_capacity_one() {
    // Half of one is zero: the notice waits for an empty queue.
    let mb = Mailboxes::new(2, 1, bells(2));
    assert_eq!(mb.capacity(), 1);
    mb.post(0, 1, 0).expect("room");
    assert!(mb.post(0, 1, 1).is_err());
    let mut ready = Vec::new();
    assert_eq!(collect(&mb, 1, 8).len(), 1);
    mb.take_ready(0, &mut ready);
    assert_eq!(ready, vec![1]);
    mb.post(0, 1, 1).expect("the retry finds room");
}

#[test]
fn counters_are_exact() {
    let bells = bells(3);
    let mb = Mailboxes::new(3, 2, bells.clone());
    assert!(mb.prepare_sleep(2));
    mb.post(0, 2, 1).expect("room");
    mb.post(0, 2, 2).expect("room");
    assert!(mb.post(0, 2, 3).is_err());
    mb.post(1, 2, 4).expect("room");
    mb.post(1, 1, 5).expect("self");
    assert!(mb.prepare_sleep(0));
    assert_eq!(collect(&mb, 2, 10).len(), 3);
    assert_eq!(collect(&mb, 1, 10).len(), 1);
    let s: Vec<MailboxSnapshot> = (0..3).map(|i| mb.metrics(i).snapshot()).collect();
    assert_eq!(
        s[0],
        MailboxSnapshot {
            sent: 2,
            received: 0,
            doorbell_writes: 1,
            full: 1
        }
    );
    assert_eq!(
        s[1],
        MailboxSnapshot {
            sent: 2,
            received: 1,
            doorbell_writes: 0,
            full: 0
        }
    );
    // Shard 2's drain gave shard 0 its room notice and rang it.
    assert_eq!(
        s[2],
        MailboxSnapshot {
            sent: 0,
            received: 3,
            doorbell_writes: 1,
            full: 0
        }
    );
    assert_eq!(take_rings(&bells[2]), 1);
    assert_eq!(take_rings(&bells[0]), 1);
}

/// How far a stress shard may run ahead of what it got back from a peer: keeps
/// the shards in lockstep-ish ping-pong so that they run out of work and block
/// all the time (and deadlock-free: two shards can't both be ahead of each other).
const WINDOW: u64 = 256;

#[derive(Debug, Default)]
struct StressReport {
    sleeps: u64,
    announcements: u64,
    timeouts: u64,
    fulls: u64,
}

/// One stress shard: posts `per_pair` numbered messages to every other shard,
/// checks what it receives, blocks on its real eventfd whenever it has nothing
/// to do. Every wait has a 10 s timeout; a wait that times out means a lost
/// wakeup (the shard only blocks when it is not finished, and the run is
/// deadlock-free, so someone owes it a ring).
fn stress_shard(me: usize, mb: Arc<Mailboxes<u64>>, bell: Doorbell, per_pair: u64) -> StressReport {
    let n = mb.shards();
    let mut rng = rand::rng();
    let mut sent = vec![0u64; n];
    let mut received = vec![0u64; n];
    let mut blocked = vec![false; n];
    let mut ready = Vec::new();
    let mut report = StressReport::default();
    let peers: Vec<usize> = (0..n).filter(|&p| p != me).collect();
    loop {
        mb.drain(me, 256, |from, seq| {
            assert_eq!(seq, received[from], "shard {me}: from {from} out of order");
            received[from] += 1;
        });
        ready.clear();
        mb.take_ready(me, &mut ready);
        for &to in &ready {
            blocked[to] = false;
        }
        let mut can_send = false;
        for &to in &peers {
            if blocked[to] {
                continue;
            }
            let limit = per_pair.min(received[to] + WINDOW);
            let burst = rng.random_range(1..=96);
            let mut k = 0;
            while sent[to] < limit && k < burst {
                match mb.post(me, to, sent[to]) {
                    Ok(()) => {
                        sent[to] += 1;
                        k += 1;
                    }
                    Err(Full(_)) => {
                        report.fulls += 1;
                        blocked[to] = true;
                        break;
                    }
                }
            }
            can_send |= !blocked[to] && sent[to] < limit;
        }
        if peers
            .iter()
            .all(|&p| sent[p] == per_pair && received[p] == per_pair)
        {
            return report;
        }
        if can_send {
            // Now and then, be busy elsewhere so that others catch up and sleep.
            if rng.random_ratio(1, 2048) {
                thread::sleep(Duration::from_micros(rng.random_range(1..100)));
            }
            continue;
        }
        report.announcements += 1;
        if !mb.prepare_sleep(me) {
            continue;
        }
        report.sleeps += 1;
        if !wait(&bell, Duration::from_secs(10)) {
            report.timeouts += 1;
        }
        take_rings(&bell);
        mb.woke(me);
    }
}

/// Four threads as shards, each posting 1,000,000 numbered messages to each
/// other one (12 million in all; a few seconds even in a debug build), blocking
/// on real eventfds: every message arrives once and in order, no wait ever
/// times out, and doorbell writes are far fewer than messages.
#[test]
fn stress_four_shards_every_message_once_in_order() {
    const SHARDS: usize = 4;
    let per_pair: u64 = 1_000_000;
    let bells = bells(SHARDS);
    // Small queues: Full and room notices happen all the time.
    let mb = Mailboxes::new(SHARDS, 64, bells.clone());
    let started = Instant::now();
    let handles: Vec<_> = (0..SHARDS)
        .map(|me| {
            let mb = mb.clone();
            let bell = bells[me].clone();
            thread::Builder::new()
                .name(format!("stress-shard-{me}"))
                .spawn(move || stress_shard(me, mb, bell, per_pair))
                .expect("spawn a stress shard")
        })
        .collect();
    let reports: Vec<StressReport> = handles
        .into_iter()
        .map(|h| h.join().expect("stress shard panicked"))
        .collect();
    let elapsed = started.elapsed();
    let messages = per_pair * (SHARDS * (SHARDS - 1)) as u64;
    let mut writes = 0;
    for (i, r) in reports.iter().enumerate() {
        let m = mb.metrics(i).snapshot();
        assert_eq!(r.timeouts, 0, "shard {i}: a wait timed out: lost wakeup");
        assert_eq!(m.sent, per_pair * (SHARDS as u64 - 1));
        assert_eq!(m.received, per_pair * (SHARDS as u64 - 1));
        assert_eq!(m.full, r.fulls, "shard {i}");
        writes += m.doorbell_writes;
    }
    let announcements: u64 = reports.iter().map(|r| r.announcements).sum();
    let sleeps: u64 = reports.iter().map(|r| r.sleeps).sum();
    let fulls: u64 = reports.iter().map(|r| r.fulls).sum();
    eprintln!(
        "mailbox stress: {messages} messages in {elapsed:?}; {writes} doorbell writes, \
         {sleeps} sleeps ({announcements} announcements), {fulls} Full"
    );
    assert!(writes <= announcements, "a ring needs an announcement");
    assert!(
        writes * 20 < messages,
        "{writes} doorbell writes for {messages} messages: not batching"
    );
    assert!(
        sleeps > 100,
        "the shards should have blocked often ({sleeps})"
    );
}
