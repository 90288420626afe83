//! Loom models of the wake protocol and the room notice, and of the broken
//! variant without fences (which loom must catch).

//! The wake protocol under loom. Each scenario runs shards as loom threads,
//! replaces "block in the driver" by "stop and record it", and afterwards checks
//! that every shard that stopped with something owed to it was rung. Each runs
//! twice, with the roles swapped between the main and the spawned thread: loom
//! starts every exploration from the schedule "main thread first", and its DPOR
//! misses some races (tokio-rs/loom#166, #392), so two starting points cover more.

use super::*;

/// Runs `f` under loom with at most 3 preemptions (or `LOOM_MAX_PREEMPTIONS`),
/// reporting the number of executions explored (see it with `--nocapture`).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = runs.clone();
    b.check(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    eprintln!(
        "loom: {} executions explored",
        runs.load(std::sync::atomic::Ordering::Relaxed)
    );
}

/// Real eventfds, made once per test: under loom they are never written (the
/// ring counter stands in), only carried.
fn bells() -> Vec<Doorbell> {
    (0..3)
        .map(|_| Doorbell::new().expect("eventfd for a loom doorbell"))
        .collect()
}

fn mailboxes(
    bells: &[Doorbell],
    shards: usize,
    capacity: usize,
    broken: bool,
) -> Arc<Mailboxes<usize>> {
    Mailboxes::build(shards, capacity, bells[..shards].to_vec(), broken)
}

fn rings(mb: &Mailboxes<usize>, shard: usize) -> usize {
    mb.shards[shard]
        .bell
        .rings
        .load(loom::sync::atomic::Ordering::Acquire)
}

/// What a receiver saw before it blocked.
struct Receiver {
    got: Vec<(usize, usize)>,
    announcements: usize,
}

/// The receiver's loop, up to the point where it blocks.
fn run_until_sleep(mb: &Mailboxes<usize>, me: usize) -> Receiver {
    let mut r = Receiver {
        got: Vec::new(),
        announcements: 0,
    };
    loop {
        mb.drain(me, 8, |from, m| r.got.push((from, m)));
        r.announcements += 1;
        if mb.prepare_sleep(me) {
            return r;
        }
    }
}

fn send_two(mb: &Mailboxes<usize>, from: usize, to: usize) {
    for i in 0..2 {
        mb.post(from, to, i).expect("room");
    }
}

/// `senders` shards each post two messages to the last shard, which runs its loop
/// until it blocks. If it blocked with a message it had not seen, it must have
/// been rung; and never more often than it announced sleeping.
fn wakeup_scenario(bells: &[Doorbell], senders: usize, broken: bool, rx_on_main: bool) {
    let rx = senders;
    let mb = mailboxes(bells, senders + 1, 4, broken);
    let spawned_senders = if rx_on_main { 0..senders } else { 1..senders };
    let threads: Vec<_> = spawned_senders
        .map(|s| {
            let mb = mb.clone();
            loom::thread::spawn(move || send_two(&mb, s, rx))
        })
        .collect();
    let mut r = if rx_on_main {
        run_until_sleep(&mb, rx)
    } else {
        let receiver = {
            let mb = mb.clone();
            loom::thread::spawn(move || run_until_sleep(&mb, rx))
        };
        send_two(&mb, 0, rx);
        receiver.join().expect("receiver")
    };
    for t in threads {
        t.join().expect("sender");
    }
    let seen = r.got.len();
    if seen < 2 * senders {
        assert!(
            rings(&mb, rx) > 0,
            "lost wakeup: receiver blocked with {} unseen message(s), never rung",
            2 * senders - seen
        );
    }
    assert!(
        rings(&mb, rx) <= r.announcements,
        "more rings than sleep announcements"
    );
    // Rung (or not needed): the loop wakes and drains.
    mb.woke(rx);
    mb.drain(rx, 64, |from, m| r.got.push((from, m)));
    assert_eq!(r.got.len(), 2 * senders);
    for s in 0..senders {
        let mine: Vec<usize> = r.got.iter().filter(|g| g.0 == s).map(|g| g.1).collect();
        assert_eq!(mine, vec![0, 1]);
    }
}

#[test]
fn no_lost_wakeup_one_sender() {
    let bells = bells();
    model(move || wakeup_scenario(&bells, 1, false, true));
    let bells = self::bells();
    model(move || wakeup_scenario(&bells, 1, false, false));
}

#[test]
fn no_lost_wakeup_two_senders() {
    let bells = bells();
    model(move || wakeup_scenario(&bells, 2, false, true));
    let bells = self::bells();
    model(move || wakeup_scenario(&bells, 2, false, false));
}

#[test]
#[should_panic(expected = "lost wakeup")]
fn without_fences_a_wakeup_is_lost() {
    let bells = bells();
    model(move || wakeup_scenario(&bells, 1, true, true));
}

#[test]
#[should_panic(expected = "lost wakeup")]
fn without_fences_a_wakeup_is_lost_roles_swapped() {
    let bells = bells();
    model(move || wakeup_scenario(&bells, 1, true, false));
}

/// Shard 0 posts three messages into a queue of two; on `Full` it waits for its
/// room notice like its loop would (take_ready, else prepare_sleep and block).
/// Returns the message it was blocked on, if it blocked.
fn room_sender(mb: &Mailboxes<usize>) -> Option<usize> {
    let mut ready = Vec::new();
    let mut next = 0;
    while next < 3 {
        match mb.post(0, 1, next) {
            Ok(()) => next += 1,
            Err(Full(_)) => loop {
                mb.take_ready(0, &mut ready);
                if ready.drain(..).any(|to| to == 1) {
                    mb.post(0, 1, next).expect("a room notice means room");
                    next += 1;
                    break;
                }
                if mb.prepare_sleep(0) {
                    return Some(next);
                }
            },
        }
    }
    None
}

/// Shard 1 is busy (never blocks) and drains twice while shard 0 runs
/// `room_sender`, then once more after it stopped. If shard 0 blocked waiting,
/// it must have been rung, and hear of the room exactly once.
fn room_scenario(bells: &[Doorbell], broken: bool, sender_on_main: bool) {
    let mb = mailboxes(bells, 2, 2, broken);
    let receive = |mb: &Mailboxes<usize>| {
        let mut got = Vec::new();
        for _ in 0..2 {
            mb.drain(1, 8, |_, m| got.push(m));
        }
        got
    };
    let (blocked_at, mut got) = if sender_on_main {
        let receiver = {
            let mb = mb.clone();
            loom::thread::spawn(move || receive(&mb))
        };
        let blocked_at = room_sender(&mb);
        (blocked_at, receiver.join().expect("receiver"))
    } else {
        let sender = {
            let mb = mb.clone();
            loom::thread::spawn(move || room_sender(&mb))
        };
        let got = receive(&mb);
        (sender.join().expect("sender"), got)
    };
    mb.drain(1, 8, |_, m| got.push(m));
    let Some(next) = blocked_at else {
        assert_eq!(got, vec![0, 1, 2]);
        return;
    };
    assert!(
        rings(&mb, 0) > 0,
        "lost room notice: sender blocked on a full queue, receiver drained it, never rung"
    );
    let mut ready = Vec::new();
    mb.take_ready(0, &mut ready);
    assert_eq!(ready, vec![1]);
    ready.clear();
    mb.take_ready(0, &mut ready);
    assert!(ready.is_empty(), "room notice given twice");
    mb.post(0, 1, next).expect("a room notice means room");
}

#[test]
fn no_lost_room_notice() {
    let bells = bells();
    model(move || room_scenario(&bells, false, false));
    let bells = self::bells();
    model(move || room_scenario(&bells, false, true));
}

#[test]
#[should_panic(expected = "lost room notice")]
fn without_fences_a_room_notice_is_lost() {
    let bells = bells();
    model(move || room_scenario(&bells, true, false));
}

#[test]
#[should_panic(expected = "lost room notice")]
fn without_fences_a_room_notice_is_lost_roles_swapped() {
    let bells = bells();
    model(move || room_scenario(&bells, true, true));
}
