//! Cross-shard mailboxes through the public API, on both backends: every message
//! arrives exactly once and in per-pair order while receivers really go to sleep;
//! a stalled receiver makes `post` return `Full` (nothing lost) and
//! `on_mailbox_ready` says when to retry; `broadcast` reaches every other shard.
//!
//! The module-level stress test in `shard/mailbox.rs` pushes 1,000,000 messages per
//! pair through the queues and real doorbells; here the count is smaller because
//! every message also goes through a shard loop and a handler callback in a debug
//! build.

mod common;

use shardline::Io;
use std::{
    sync::mpsc,
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng};
use shardline::{ConnId, Ctx, Full, Handler, Server, ShardId};

const SHARDS: usize = 4;

fn per_pair() -> u64 {
    if cfg!(debug_assertions) {
        100_000
    } else {
        1_000_000
    }
}

/// Posts `per_pair()` numbered messages to every other shard, in bursts separated by
/// random pauses (so receivers run dry and sleep), retrying after `Full` only when
/// told to; checks that what it receives is in order per sender.
struct Stress {
    me: usize,
    next: Vec<u64>,
    blocked: Vec<bool>,
    expect: Vec<u64>,
    received: u64,
    fulls: u64,
    rng: rand::rngs::StdRng,
    report: mpsc::Sender<(usize, u64, u64, Result<(), String>)>,
    reported: bool,
}

impl Stress {
    fn send_burst(&mut self, ctx: &mut Ctx<'_, Self>) {
        let burst = self.rng.random_range(1..2_000u64);
        for to in 0..SHARDS {
            if to == self.me || self.blocked[to] {
                continue;
            }
            let end = (self.next[to] + burst).min(per_pair());
            while self.next[to] < end {
                match ctx.post(ShardId(to), (self.me, self.next[to])) {
                    Ok(()) => self.next[to] += 1,
                    Err(Full((_, seq))) => {
                        assert_eq!(seq, self.next[to], "Full hands the message back");
                        self.fulls += 1;
                        self.blocked[to] = true;
                        break;
                    }
                }
            }
        }
        let pause = if self.rng.random_bool(0.1) {
            Duration::from_millis(self.rng.random_range(1..3))
        } else {
            Duration::ZERO
        };
        if !self.done_sending() {
            ctx.set_timer(pause, ());
        }
        self.maybe_report();
    }

    fn done_sending(&self) -> bool {
        (0..SHARDS).all(|to| to == self.me || self.next[to] == per_pair())
    }

    fn maybe_report(&mut self) {
        let all_in = self.received == per_pair() * (SHARDS as u64 - 1);
        if all_in && self.done_sending() && !self.reported {
            self.reported = true;
            let _ = self
                .report
                .send((self.me, self.received, self.fulls, Ok(())));
        }
    }
}

impl Handler for Stress {
    type Msg = (usize, u64);
    type Timer = ();
    type Conn = ();
    type Listener = ();

    fn on_accept(
        &mut self,
        _: &mut Ctx<'_, Self>,
        _: ConnId,
        _: shardline::Listener<'_, ()>,
        _: std::net::SocketAddr,
    ) {
    }

    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
        self.send_burst(ctx);
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, _t: shardline::TimerId, _: ()) {
        self.send_burst(ctx);
    }

    fn on_mailbox_ready(&mut self, ctx: &mut Ctx<'_, Self>, to: ShardId) {
        self.blocked[to.0] = false;
        self.send_burst(ctx);
    }

    fn on_message(&mut self, _ctx: &mut Ctx<'_, Self>, from: shardline::Origin, msg: Self::Msg) {
        let shardline::Origin::Shard(from) = from else {
            panic!("only shards post in this test");
        };
        let (sender, seq) = msg;
        if sender != from.0 || seq != self.expect[from.0] {
            let _ = self.report.send((
                self.me,
                self.received,
                self.fulls,
                Err(format!(
                    "shard {}: from {from}: got ({sender}, {seq}), expected ({}, {})",
                    self.me, from.0, self.expect[from.0]
                )),
            ));
            self.reported = true;
            return;
        }
        self.expect[from.0] += 1;
        self.received += 1;
        self.maybe_report();
    }

    fn on_data(
        &mut self,
        _ctx: &mut Ctx<'_, Self>,
        _c: ConnId,
        _state: &mut Self::Conn,
        data: &[u8],
    ) -> usize {
        data.len()
    }
}

fn every_message_arrives_once_in_order(io: Io) {
    common::init_tracing();
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    let server = Server::builder()
        .io(io)
        .shards(SHARDS)
        .pin(false)
        .mailbox_capacity(256)
        .build(move |id| Stress {
            me: id.0,
            next: vec![0; SHARDS],
            blocked: vec![false; SHARDS],
            expect: vec![0; SHARDS],
            received: 0,
            fulls: 0,
            rng: rand::rngs::StdRng::seed_from_u64(id.0 as u64 + 1),
            report: tx.clone(),
            reported: false,
        })
        .expect("config")
        .start()
        .expect("start");
    let mut fulls = 0;
    for _ in 0..SHARDS {
        let (shard, received, f, result) = rx
            .recv_timeout(Duration::from_secs(240))
            .unwrap_or_else(|_| panic!("{io}: a shard never got all its messages"));
        result.unwrap_or_else(|e| panic!("{io}: {e}"));
        assert_eq!(
            received,
            per_pair() * (SHARDS as u64 - 1),
            "{io}: shard {shard}"
        );
        fulls += f;
    }
    let total = per_pair() * (SHARDS * (SHARDS - 1)) as u64;
    let metrics = server.metrics();
    // A drain counts what it took after its callbacks: let the last one finish.
    common::wait_until(Duration::from_secs(10), || {
        metrics.total().msgs_received == total
    });
    let t = metrics.total();
    assert_eq!(t.msgs_sent, total, "{io}: {t:?}");
    assert_eq!(t.msgs_received, total, "{io}: {t:?}");
    assert_eq!(t.mailbox_full, fulls, "{io}: {t:?}");
    assert!(
        t.doorbell_writes * 10 < total,
        "{io}: doorbell writes are batched: {t:?}"
    );
    println!(
        "{io}: {total} messages in {:.2?}, {} doorbell writes, {} full",
        started.elapsed(),
        t.doorbell_writes,
        t.mailbox_full
    );
    server.shutdown().expect("clean shutdown");
}

/// Shard 1 stalls (its handler sleeps in a timer) while shard 0 posts: `Full`
/// comes back with the message, and after the stall the notice arrives and the
/// retry goes through; every message arrives.
struct Stall {
    me: usize,
    sent: u64,
    fulls: u64,
    got: u64,
    report: mpsc::Sender<(&'static str, u64)>,
}

const STALL_TOTAL: u64 = 1_000;

impl Stall {
    fn pump(&mut self, ctx: &mut Ctx<'_, Self>) {
        while self.sent < STALL_TOTAL {
            match ctx.post(ShardId(1), self.sent) {
                Ok(()) => self.sent += 1,
                Err(Full(n)) => {
                    assert_eq!(n, self.sent);
                    self.fulls += 1;
                    let _ = self.report.send(("full", self.sent));
                    return;
                }
            }
        }
        let _ = self.report.send(("sent", self.sent));
    }
}

impl Handler for Stall {
    type Msg = u64;
    type Timer = ();
    type Conn = ();
    type Listener = ();

    fn on_accept(
        &mut self,
        _: &mut Ctx<'_, Self>,
        _: ConnId,
        _: shardline::Listener<'_, ()>,
        _: std::net::SocketAddr,
    ) {
    }

    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
        if self.me == 1 {
            ctx.set_timer(Duration::ZERO, ());
        } else {
            // Let shard 1 start stalling first.
            ctx.set_timer(Duration::from_millis(50), ());
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, _t: shardline::TimerId, _: ()) {
        if self.me == 1 {
            std::thread::sleep(Duration::from_millis(500));
        } else {
            self.pump(ctx);
        }
    }

    fn on_mailbox_ready(&mut self, ctx: &mut Ctx<'_, Self>, to: ShardId) {
        assert_eq!(to, ShardId(1));
        let _ = self.report.send(("ready", self.sent));
        self.pump(ctx);
    }

    fn on_message(&mut self, _ctx: &mut Ctx<'_, Self>, _from: shardline::Origin, n: u64) {
        assert_eq!(n, self.got, "in order");
        self.got += 1;
        if self.got == STALL_TOTAL {
            let _ = self.report.send(("received", self.got));
        }
    }

    fn on_data(
        &mut self,
        _ctx: &mut Ctx<'_, Self>,
        _c: ConnId,
        _state: &mut Self::Conn,
        data: &[u8],
    ) -> usize {
        data.len()
    }
}

fn stalled_receiver_means_full_then_retry(io: Io) {
    let (tx, rx) = mpsc::channel();
    let server = Server::builder()
        .io(io)
        .shards(2)
        .pin(false)
        .mailbox_capacity(64)
        .build(move |id| Stall {
            me: id.0,
            sent: 0,
            fulls: 0,
            got: 0,
            report: tx.clone(),
        })
        .expect("config")
        .start()
        .expect("start");
    let mut events = Vec::new();
    loop {
        let e = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{io}: stuck after {events:?}"));
        events.push(e);
        if events.contains(&("received", STALL_TOTAL)) && events.contains(&("sent", STALL_TOTAL)) {
            break;
        }
    }
    assert_eq!(
        events[0],
        ("full", 64),
        "{io}: the 65th post meets a full mailbox"
    );
    assert!(
        events.contains(&("ready", 64)),
        "{io}: retry notice: {events:?}"
    );
    let metrics = server.metrics();
    common::wait_until(Duration::from_secs(10), || {
        metrics.total().msgs_received == STALL_TOTAL
    });
    let t = metrics.total();
    assert_eq!(t.msgs_received, STALL_TOTAL, "{io}: nothing lost: {t:?}");
    assert!(t.mailbox_full >= 1, "{io}: {t:?}");
    server.shutdown().expect("clean shutdown");
}

struct Bcast {
    me: usize,
    report: mpsc::Sender<(usize, usize)>,
}

impl Handler for Bcast {
    type Msg = usize;
    type Timer = ();
    type Conn = ();
    type Listener = ();

    fn on_accept(
        &mut self,
        _: &mut Ctx<'_, Self>,
        _: ConnId,
        _: shardline::Listener<'_, ()>,
        _: std::net::SocketAddr,
    ) {
    }

    fn on_start(&mut self, ctx: &mut Ctx<'_, Self>) {
        ctx.broadcast(self.me).expect("empty mailboxes have room");
    }

    fn on_message(&mut self, _ctx: &mut Ctx<'_, Self>, from: shardline::Origin, m: usize) {
        assert_eq!(from, shardline::Origin::Shard(ShardId(m)));
        let _ = self.report.send((self.me, m));
    }

    fn on_data(
        &mut self,
        _ctx: &mut Ctx<'_, Self>,
        _c: ConnId,
        _state: &mut Self::Conn,
        data: &[u8],
    ) -> usize {
        data.len()
    }
}

fn broadcast_reaches_every_other_shard(io: Io) {
    let (tx, rx) = mpsc::channel();
    let server = Server::builder()
        .io(io)
        .shards(3)
        .pin(false)
        .build(move |id| Bcast {
            me: id.0,
            report: tx.clone(),
        })
        .expect("config")
        .start()
        .expect("start");
    let mut got: Vec<(usize, usize)> = (0..6)
        .map(|_| rx.recv_timeout(Duration::from_secs(30)).expect("delivery"))
        .collect();
    got.sort_unstable();
    assert_eq!(
        got,
        [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)],
        "{io}"
    );
    server.shutdown().expect("clean shutdown");
}

shardline::per_backend! {
    stalled_receiver_means_full_then_retry => stalled_receiver_means_full_then_retry;
    every_message_arrives_once_in_order => every_message_arrives_once_in_order;
    broadcast_reaches_every_other_shard => broadcast_reaches_every_other_shard;
}
