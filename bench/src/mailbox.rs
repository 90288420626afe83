//! `mailbox`: cross-shard messaging on a Shardline server with two shards and no
//! listeners (shard 0 on the first CPU, shard 1 on the second), beside
//! crossbeam-channel and std mpsc between two plain pinned threads doing the same.
//!
//! - Throughput: shard 0 streams messages to shard 1, posting until `Full` and
//!   resuming at `on_mailbox_ready` (channels: a bounded channel of the same
//!   capacity, blocking `send`). *single*: one `u64` per message; *batched*: 64
//!   `u64`s per message. Reported as items per second.
//! - Wake latency: shard 0 posts while shard 1 is asleep in its driver (both idle
//!   for ~1 ms between pings), shard 1 answers; one-way time = round trip ÷ 2.
//!   *single*: one message each way; *batched*: 64 messages posted in one go,
//!   answered after the 64th. Channels: the receiver blocks in `recv` (no
//!   spinning of ours; the channel's own brief backoff before parking stays).

use std::{
    marker::PhantomData,
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context as _};
use hdrhistogram::Histogram;
use serde::Serialize;
use shardline::{numa::Placement, ConnId, Ctx, Full, Handler, Io, Server, ShardId, TimerId};

use crate::{
    client::Latency,
    machine::{self, MachineInfo},
    report::{self, round},
};

/// Items per batched message, and messages per batched ping.
pub const BATCH: usize = 64;
/// Capacity of each mailbox / channel.
pub const CAPACITY: usize = 1024;
/// Idle time between pings, so both sides are asleep when one arrives.
const PING_GAP: Duration = Duration::from_millis(1);
/// Upper bound on one run.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// What `mailbox` runs.
#[derive(Debug, Clone)]
pub struct MailboxConfig {
    /// Messages per throughput run (batched runs send this many items).
    pub messages: u64,
    /// Ping-pongs per latency run.
    pub pings: u64,
    /// Shardline backends.
    pub backends: Vec<Io>,
}

/// One implementation's numbers.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MailboxRow {
    /// `shardline-uring`, `shardline-epoll`, `crossbeam-channel`, `std-mpsc`.
    pub implementation: String,
    /// Items/s, one item per message.
    pub throughput_single_items_per_s: f64,
    /// Items/s, 64 items per message.
    pub throughput_batched_items_per_s: f64,
    /// One-way wake latency, one message (µs).
    pub wake_single_p50_us: f64,
    /// p99 of the same (µs).
    pub wake_single_p99_us: f64,
    /// One-way wake latency, 64 messages posted at once (µs).
    pub wake_batched_p50_us: f64,
    /// p99 of the same (µs).
    pub wake_batched_p99_us: f64,
    /// Shardline: `Full` returns during the single-item throughput run.
    pub fulls: Option<u64>,
    /// Shardline: doorbell (eventfd) writes during the single-item throughput run.
    pub doorbell_writes: Option<u64>,
    /// Shardline: CPU time per message of the single-item stream, sender's and
    /// receiver's threads together (ns; user + system, CLOCK_THREAD_CPUTIME_ID).
    pub stream_cpu_ns_per_msg: Option<f64>,
    /// Shardline: CPU time per message of the single-message wake run, both
    /// shards' threads together ÷ 2 messages per ping (µs). Each message finds
    /// its receiver asleep; shard 0's 1 ms timer wake-up between pings is
    /// included, so this is an upper bound on one wake-up message's cost.
    pub wake_cpu_us_per_msg: Option<f64>,
}

/// What `mailbox --json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct MailboxOutput {
    /// One row per implementation.
    pub results: Vec<MailboxRow>,
    /// CPUs the two sides ran on (empty: unpinned, one-CPU machine).
    pub cpus: Vec<usize>,
    /// Where it ran.
    pub machine: MachineInfo,
}

/// A message payload: one item or a batch of them.
pub trait Payload: Send + 'static {
    /// Items it carries.
    const ITEMS: u64;
    /// A payload whose first item is `seq`.
    fn make(seq: u64) -> Self;
    /// Its first item.
    fn first(&self) -> u64;
}

impl Payload for u64 {
    const ITEMS: u64 = 1;
    fn make(seq: u64) -> u64 {
        seq
    }
    fn first(&self) -> u64 {
        *self
    }
}

/// 64 items in one message.
#[derive(Debug, Clone, Copy)]
pub struct Batch(pub [u64; BATCH]);

impl Payload for Batch {
    const ITEMS: u64 = BATCH as u64;
    fn make(seq: u64) -> Batch {
        let mut b = [seq; BATCH];
        for (i, x) in b.iter_mut().enumerate() {
            *x = seq.wrapping_add(i as u64);
        }
        Batch(b)
    }
    fn first(&self) -> u64 {
        self.0[0]
    }
}

/// The CPUs the two sides use: the first two allowed, or none on a one-CPU machine.
pub(crate) fn two_cpus() -> Vec<usize> {
    let cpus = machine::allowed_cpus();
    if cpus.len() >= 2 {
        cpus[..2].to_vec()
    } else {
        Vec::new()
    }
}

fn two_shards(io: Io, cpus: &[usize]) -> shardline::ServerBuilder {
    let b = Server::builder()
        .io(io)
        .shards(2)
        .mailbox_capacity(CAPACITY);
    if cpus.is_empty() {
        b.pin(false)
    } else {
        b.placement(Placement::Cpus(cpus.to_vec()))
    }
}

// ---- Shardline: streaming ------------------------------------------------------

enum StreamEvent {
    Started(Instant),
    Done(Instant, u64, Result<(), String>),
    Fulls(u64),
    /// A shard's thread CPU time over its part of the stream.
    Cpu(Duration),
}

struct Stream<P> {
    me: usize,
    total: u64,
    sent: u64,
    fulls: u64,
    expect: u64,
    cpu_start: Duration,
    report: mpsc::Sender<StreamEvent>,
    _p: PhantomData<P>,
}

impl<P: Payload> Stream<P> {
    fn pump(&mut self, ctx: &mut Ctx<'_, Self>) {
        while self.sent < self.total {
            match ctx.post(ShardId(1), P::make(self.sent * P::ITEMS)) {
                Ok(()) => self.sent += 1,
                Err(Full(_)) => {
                    self.fulls += 1;
                    return;
                }
            }
        }
        let _ = self.report.send(StreamEvent::Fulls(self.fulls));
        let _ = self.report.send(StreamEvent::Cpu(
            machine::thread_cpu_time().saturating_sub(self.cpu_start),
        ));
    }
}

impl<P: Payload> Handler for Stream<P> {
    type Msg = P;
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
        if self.me == 0 {
            // Both shards are up by the time this fires.
            ctx.set_timer(Duration::from_millis(20), ());
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, _t: TimerId, _: ()) {
        let _ = self.report.send(StreamEvent::Started(Instant::now()));
        self.cpu_start = machine::thread_cpu_time();
        self.pump(ctx);
    }

    fn on_mailbox_ready(&mut self, ctx: &mut Ctx<'_, Self>, _to: ShardId) {
        self.pump(ctx);
    }

    fn on_message(&mut self, _ctx: &mut Ctx<'_, Self>, _from: shardline::Origin, msg: P) {
        if self.expect == 0 {
            self.cpu_start = machine::thread_cpu_time();
        }
        if msg.first() != self.expect * P::ITEMS {
            let _ = self.report.send(StreamEvent::Done(
                Instant::now(),
                self.expect,
                Err(format!(
                    "out of order: got {}, expected {}",
                    msg.first(),
                    self.expect * P::ITEMS
                )),
            ));
            self.expect = u64::MAX / 2;
            return;
        }
        self.expect += 1;
        if self.expect == self.total {
            let _ = self.report.send(StreamEvent::Cpu(
                machine::thread_cpu_time().saturating_sub(self.cpu_start),
            ));
            let _ = self
                .report
                .send(StreamEvent::Done(Instant::now(), self.expect, Ok(())));
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

/// What one streaming run measured.
pub(crate) struct StreamResult {
    pub(crate) items_per_s: f64,
    pub(crate) fulls: u64,
    pub(crate) doorbell_writes: u64,
    /// Both shards' thread CPU time per message (ns).
    pub(crate) cpu_ns_per_msg: Option<f64>,
}

/// Items per second, `Full`s, doorbell writes and CPU of one streaming run.
pub(crate) fn shardline_stream<P: Payload>(
    io: Io,
    cpus: &[usize],
    messages: u64,
) -> anyhow::Result<StreamResult> {
    let (tx, rx) = mpsc::channel();
    let server = two_shards(io, cpus)
        .build(move |id| Stream::<P> {
            me: id.0,
            total: messages,
            sent: 0,
            fulls: 0,
            expect: 0,
            cpu_start: Duration::ZERO,
            report: tx.clone(),
            _p: PhantomData,
        })
        .context("configuring the mailbox server")?
        .start()
        .context("starting the mailbox server")?;
    let metrics = server.metrics();
    let before = metrics.total();
    let mut start = None;
    let mut fulls = 0;
    let mut cpu = Vec::new();
    let outcome = loop {
        match rx.recv_timeout(RUN_LIMIT) {
            Ok(StreamEvent::Started(t)) => start = Some(t),
            Ok(StreamEvent::Fulls(f)) => fulls = f,
            Ok(StreamEvent::Cpu(c)) => cpu.push(c),
            Ok(StreamEvent::Done(t, n, r)) => break r.map(|()| (t, n)),
            Err(_) => break Err(format!("no result within {RUN_LIMIT:?}")),
        }
    };
    let after = metrics.total();
    // The sender reports its CPU when it has posted the last message, which
    // may come after the receiver's Done.
    while cpu.len() < 2 {
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(StreamEvent::Cpu(c)) => cpu.push(c),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    server.shutdown().context("stopping the mailbox server")?;
    let (end, n) = outcome.map_err(|e| anyhow!("{io}: {e}"))?;
    let start = start.ok_or_else(|| anyhow!("{io}: never started"))?;
    let secs = end.duration_since(start).as_secs_f64().max(1e-9);
    Ok(StreamResult {
        items_per_s: (n * P::ITEMS) as f64 / secs,
        fulls,
        doorbell_writes: after.doorbell_writes - before.doorbell_writes,
        cpu_ns_per_msg: (cpu.len() == 2 && n > 0)
            .then(|| cpu.iter().map(|c| c.as_nanos() as f64).sum::<f64>() / n as f64),
    })
}

// ---- Shardline: ping-pong ------------------------------------------------------

struct PingPong {
    me: usize,
    burst: u64,
    pings: u64,
    done: u64,
    got: u64,
    sent_at: Instant,
    rtts: Vec<Duration>,
    /// Shard 1: pongs sent.
    replies: u64,
    cpu_start: Duration,
    report: mpsc::Sender<Result<Vec<Duration>, String>>,
    cpu: mpsc::Sender<Duration>,
}

impl PingPong {
    fn post(&mut self, ctx: &mut Ctx<'_, Self>, to: usize, n: u64) {
        for i in 0..n {
            if ctx.post(ShardId(to), i).is_err() {
                let _ = self
                    .report
                    .send(Err("mailbox full during a ping (capacity too small)".into()));
                return;
            }
        }
    }
}

impl Handler for PingPong {
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
        if self.me == 0 {
            ctx.set_timer(Duration::from_millis(20), ());
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_, Self>, _t: TimerId, _: ()) {
        if self.done == 0 {
            self.cpu_start = machine::thread_cpu_time();
        }
        self.sent_at = Instant::now();
        self.post(ctx, 1, self.burst);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_, Self>, _from: shardline::Origin, _msg: u64) {
        if self.me == 1 {
            if self.replies == 0 && self.got == 0 {
                self.cpu_start = machine::thread_cpu_time();
            }
            self.got += 1;
            if self.got == self.burst {
                self.got = 0;
                self.post(ctx, 0, 1);
                self.replies += 1;
                if self.replies == self.pings {
                    let _ = self
                        .cpu
                        .send(machine::thread_cpu_time().saturating_sub(self.cpu_start));
                }
            }
            return;
        }
        self.rtts.push(self.sent_at.elapsed());
        self.done += 1;
        if self.done < self.pings {
            ctx.set_timer(PING_GAP, ());
        } else {
            let _ = self
                .cpu
                .send(machine::thread_cpu_time().saturating_sub(self.cpu_start));
            let _ = self.report.send(Ok(std::mem::take(&mut self.rtts)));
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

/// One-way wake latency, and both shards' thread CPU time per ping-pong (µs).
pub(crate) fn shardline_wake(
    io: Io,
    cpus: &[usize],
    pings: u64,
    burst: u64,
) -> anyhow::Result<(Latency, Option<f64>)> {
    let (tx, rx) = mpsc::channel();
    let (cpu_tx, cpu_rx) = mpsc::channel();
    let server = two_shards(io, cpus)
        .build(move |id| PingPong {
            me: id.0,
            burst,
            pings,
            done: 0,
            got: 0,
            sent_at: Instant::now(),
            rtts: Vec::with_capacity(pings as usize),
            replies: 0,
            cpu_start: Duration::ZERO,
            report: tx.clone(),
            cpu: cpu_tx.clone(),
        })
        .context("configuring the mailbox server")?
        .start()
        .context("starting the mailbox server")?;
    let rtts = rx
        .recv_timeout(RUN_LIMIT)
        .map_err(|_| anyhow!("{io}: no result within {RUN_LIMIT:?}"));
    let cpu: Vec<Duration> = (0..2)
        .map_while(|_| cpu_rx.recv_timeout(Duration::from_secs(5)).ok())
        .collect();
    server.shutdown().context("stopping the mailbox server")?;
    let per_ping = (cpu.len() == 2 && pings > 0)
        .then(|| cpu.iter().map(|c| c.as_secs_f64()).sum::<f64>() * 1e6 / pings as f64);
    Ok((one_way(&rtts?.map_err(anyhow::Error::msg)?), per_ping))
}

/// Percentiles of round trip ÷ 2.
pub fn one_way(rtts: &[Duration]) -> Latency {
    let mut h = Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3)
        .expect("constant histogram bounds are valid");
    for r in rtts {
        h.saturating_record((r.as_nanos() as u64 / 2).max(1));
    }
    Latency::from_hist(&h)
}

// ---- Channels ------------------------------------------------------------------

/// The two ends of a bounded channel, for crossbeam-channel and std mpsc alike.
trait Chan<T: Send + 'static> {
    type Tx: Send + 'static;
    type Rx: Send + 'static;
    fn bounded(cap: usize) -> (Self::Tx, Self::Rx);
    fn send(tx: &Self::Tx, v: T) -> bool;
    fn recv(rx: &Self::Rx) -> Option<T>;
}

struct Crossbeam;
struct StdMpsc;

impl<T: Send + 'static> Chan<T> for Crossbeam {
    type Tx = crossbeam_channel::Sender<T>;
    type Rx = crossbeam_channel::Receiver<T>;
    fn bounded(cap: usize) -> (Self::Tx, Self::Rx) {
        crossbeam_channel::bounded(cap)
    }
    fn send(tx: &Self::Tx, v: T) -> bool {
        tx.send(v).is_ok()
    }
    fn recv(rx: &Self::Rx) -> Option<T> {
        rx.recv().ok()
    }
}

impl<T: Send + 'static> Chan<T> for StdMpsc {
    type Tx = mpsc::SyncSender<T>;
    type Rx = mpsc::Receiver<T>;
    fn bounded(cap: usize) -> (Self::Tx, Self::Rx) {
        mpsc::sync_channel(cap)
    }
    fn send(tx: &Self::Tx, v: T) -> bool {
        tx.send(v).is_ok()
    }
    fn recv(rx: &Self::Rx) -> Option<T> {
        rx.recv().ok()
    }
}

fn pin(cpus: &[usize], i: usize) {
    if let Some(&c) = cpus.get(i) {
        let _ = machine::pin_current_thread(&[c]);
    }
}

fn chan_stream<C: Chan<P>, P: Payload>(cpus: &[usize], messages: u64) -> anyhow::Result<f64> {
    let (tx, rx) = C::bounded(CAPACITY);
    let rcpus = cpus.to_vec();
    let receiver = std::thread::spawn(move || {
        pin(&rcpus, 1);
        let mut expect = 0;
        while let Some(m) = C::recv(&rx) {
            if m.first() != expect * P::ITEMS {
                return Err(format!("out of order at {expect}"));
            }
            expect += 1;
        }
        Ok((Instant::now(), expect))
    });
    let scpus = cpus.to_vec();
    let sender = std::thread::spawn(move || {
        pin(&scpus, 0);
        let start = Instant::now();
        for i in 0..messages {
            if !C::send(&tx, P::make(i * P::ITEMS)) {
                break;
            }
        }
        start
    });
    let start = sender.join().map_err(|_| anyhow!("sender panicked"))?;
    let (end, n) = receiver
        .join()
        .map_err(|_| anyhow!("receiver panicked"))?
        .map_err(anyhow::Error::msg)?;
    Ok((n * P::ITEMS) as f64 / end.duration_since(start).as_secs_f64().max(1e-9))
}

fn chan_wake<C: Chan<u64>>(cpus: &[usize], pings: u64, burst: u64) -> anyhow::Result<Latency> {
    let (ping_tx, ping_rx) = C::bounded(CAPACITY);
    let (pong_tx, pong_rx) = C::bounded(CAPACITY);
    let rcpus = cpus.to_vec();
    let responder = std::thread::spawn(move || {
        pin(&rcpus, 1);
        let mut got = 0;
        while C::recv(&ping_rx).is_some() {
            got += 1;
            if got == burst {
                got = 0;
                if !C::send(&pong_tx, 0) {
                    break;
                }
            }
        }
    });
    let scpus = cpus.to_vec();
    let pinger = std::thread::spawn(move || {
        pin(&scpus, 0);
        let mut rtts = Vec::with_capacity(pings as usize);
        for _ in 0..pings {
            std::thread::sleep(PING_GAP);
            let t = Instant::now();
            for i in 0..burst {
                if !C::send(&ping_tx, i) {
                    return Err("the responder went away");
                }
            }
            if C::recv(&pong_rx).is_none() {
                return Err("the responder went away");
            }
            rtts.push(t.elapsed());
        }
        Ok(rtts)
    });
    let rtts = pinger.join().map_err(|_| anyhow!("pinger panicked"))?;
    let _ = responder.join();
    Ok(one_way(&rtts.map_err(anyhow::Error::msg)?))
}

// ---- The subcommand ------------------------------------------------------------

/// Runs every implementation and prints the table.
pub fn run(cfg: &MailboxConfig) -> anyhow::Result<MailboxOutput> {
    let machine_at_start = MachineInfo::announce();
    let cpus = two_cpus();
    if cpus.is_empty() {
        println!("note: fewer than 2 CPUs: both sides share one, unpinned");
    } else {
        println!(
            "mailbox: sender on CPU {}, receiver on CPU {}",
            cpus[0], cpus[1]
        );
    }
    let batches = (cfg.messages / BATCH as u64).max(1);
    let mut results = Vec::new();
    for &io in &cfg.backends {
        let name = format!("shardline-{io}");
        println!("{name} …");
        let single = shardline_stream::<u64>(io, &cpus, cfg.messages)?;
        let batched = shardline_stream::<Batch>(io, &cpus, batches)?;
        let (ws, wake_cpu_per_ping) = shardline_wake(io, &cpus, cfg.pings, 1)?;
        let (wb, _) = shardline_wake(io, &cpus, cfg.pings, BATCH as u64)?;
        let mut r = row(
            name,
            single.items_per_s,
            batched.items_per_s,
            ws,
            wb,
            Some(single.fulls),
            Some(single.doorbell_writes),
        );
        r.stream_cpu_ns_per_msg = single.cpu_ns_per_msg.map(|c| round(c, 1));
        // Two messages per ping, each waking its receiver.
        r.wake_cpu_us_per_msg = wake_cpu_per_ping.map(|c| round(c / 2.0, 2));
        results.push(r);
    }
    println!("crossbeam-channel …");
    results.push(row(
        "crossbeam-channel".into(),
        chan_stream::<Crossbeam, u64>(&cpus, cfg.messages)?,
        chan_stream::<Crossbeam, Batch>(&cpus, batches)?,
        chan_wake::<Crossbeam>(&cpus, cfg.pings, 1)?,
        chan_wake::<Crossbeam>(&cpus, cfg.pings, BATCH as u64)?,
        None,
        None,
    ));
    println!("std mpsc …");
    results.push(row(
        "std-mpsc".into(),
        chan_stream::<StdMpsc, u64>(&cpus, cfg.messages)?,
        chan_stream::<StdMpsc, Batch>(&cpus, batches)?,
        chan_wake::<StdMpsc>(&cpus, cfg.pings, 1)?,
        chan_wake::<StdMpsc>(&cpus, cfg.pings, BATCH as u64)?,
        None,
        None,
    ));
    println!();
    print!("{}", render(&results));
    Ok(MailboxOutput {
        results,
        cpus,
        machine: machine_at_start,
    })
}

fn row(
    implementation: String,
    single: f64,
    batched: f64,
    ws: Latency,
    wb: Latency,
    fulls: Option<u64>,
    doorbell_writes: Option<u64>,
) -> MailboxRow {
    MailboxRow {
        implementation,
        throughput_single_items_per_s: round(single, 0),
        throughput_batched_items_per_s: round(batched, 0),
        wake_single_p50_us: round(ws.p50_us, 2),
        wake_single_p99_us: round(ws.p99_us, 2),
        wake_batched_p50_us: round(wb.p50_us, 2),
        wake_batched_p99_us: round(wb.p99_us, 2),
        fulls,
        doorbell_writes,
        stream_cpu_ns_per_msg: None,
        wake_cpu_us_per_msg: None,
    }
}

/// The results table.
pub fn render(rows: &[MailboxRow]) -> String {
    let m = |x: f64| format!("{:.2}M", x / 1e6);
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.implementation.clone(),
                m(r.throughput_single_items_per_s),
                m(r.throughput_batched_items_per_s),
                format!("{:.1} / {:.1}", r.wake_single_p50_us, r.wake_single_p99_us),
                format!(
                    "{:.1} / {:.1}",
                    r.wake_batched_p50_us, r.wake_batched_p99_us
                ),
            ]
        })
        .collect();
    let mut out = report::table(
        &[
            "implementation",
            "items/s, 1 per msg",
            &format!("items/s, {BATCH} per msg"),
            "wake 1 msg p50/p99 µs",
            &format!("wake {BATCH} msgs p50/p99 µs"),
        ],
        &cells,
    );
    out.push_str("wake = one-way time (round trip ÷ 2) to a receiver that was asleep\n");
    for r in rows {
        if let (Some(s), Some(w)) = (r.stream_cpu_ns_per_msg, r.wake_cpu_us_per_msg) {
            out.push_str(&format!(
                "{}: CPU per cross-shard message (both shards' threads): {s:.0} ns streaming, \
                 ≤ {w:.2} µs when it wakes a sleeping shard\n",
                r.implementation
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_way_halves_round_trips() {
        let rtts: Vec<Duration> = (1..=100).map(|i| Duration::from_micros(i * 2)).collect();
        let l = one_way(&rtts);
        assert!((l.p50_us - 50.0).abs() < 0.1, "{l:?}");
        assert!((l.max_us - 100.0).abs() < 0.1, "{l:?}");
    }

    #[test]
    fn batches_carry_their_sequence() {
        let b = Batch::make(128);
        assert_eq!(b.first(), 128);
        assert_eq!(b.0[63], 191);
        assert_eq!(<u64 as Payload>::make(7).first(), 7);
    }
}
