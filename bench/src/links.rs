//! `engine-links`: per-shard engine links against one bridge per node (issue
//! 16), for the chat cluster's traffic through Redis 7 pub/sub.
//!
//! Engine side, one Redis started here, the same messages in both layouts
//! (N nodes of S shards; every message goes to `shardline:ev:<p>`, `p` one of
//! the 64 store partitions, and reaches one subscriber per node):
//!
//! - *per-shard* (what shardline-chat does): N×S publisher connections, shard
//!   `s` publishing to the partitions it owns (`p % S == s`) in batches of B;
//!   N×S subscriber connections, each subscribed to its shard's 64/S
//!   partitions.
//! - *bridge* (the alternative, not built): N publisher connections, each
//!   writing its node's S shards' batches merged into one write of S×B; N
//!   subscriber connections subscribed to all 64 partitions.
//!
//! Two loads: *saturated* (closed loop: each publisher writes a batch, reads
//! its replies, writes the next) and *paced* (every source — a shard — emits
//! its batch on a fixed schedule; the bridge writes its shards' batches
//! together, which assumes their turns line up: the most batching a bridge
//! could get). Per run: deliveries/s, Redis CPU per delivery (schedstat),
//! the harness's CPU per delivery (publisher and subscriber threads, a proxy
//! for the node's link work), publish→receive p50/p99.
//!
//! Node side, in the same run: what a bridge adds per delivery is cross-thread
//! hand-offs (shard → bridge for each publish, bridge → shard for each event
//! received). The framework's mailbox is measured here with the `mailbox`
//! bench's code (streaming CPU per message, single and 64 per message; wake
//! latency and CPU when the receiver sleeps) and turned into a cost per
//! delivery; see [`Decomposition`].

use std::{
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use serde::Serialize;
use shardline::Io;

use crate::{
    engines::{self, Conn, Engine, Resp},
    experiment::median,
    machine::MachineInfo,
    mailbox::{self, Batch, BATCH},
    report::{self, round},
};

/// Store partitions, one Redis pub/sub channel each (shardline-chat's
/// `store::PARTITIONS`).
pub const PARTITIONS: usize = 64;

/// The event channel of a partition, as shardline-chat names it.
pub fn channel(partition: usize) -> String {
    format!("shardline:ev:{partition}")
}

/// The partitions shard `shard` of `shards` owns (shardline-chat's
/// `shard_of_partition`: `p % shards`).
pub fn owned_partitions(shard: usize, shards: usize) -> Vec<usize> {
    (0..PARTITIONS)
        .filter(|p| p % shards.max(1) == shard)
        .collect()
}

/// The partition of the `k`-th message shard `shard` publishes: its owned
/// partitions in turn.
pub fn partition_for(shard: usize, k: usize, shards: usize) -> usize {
    let shards = shards.max(1);
    let owned = PARTITIONS.div_ceil(shards).max(1);
    shard + shards * (k % owned)
}

/// Cross-thread hand-offs a bridge adds per delivery with `nodes` nodes: one
/// bridge → shard for every delivery, one shard → bridge for every publish,
/// and a publish is delivered once per node.
pub fn handoffs_per_delivery(nodes: usize) -> f64 {
    1.0 + 1.0 / nodes.max(1) as f64
}

/// Time between one source's batches when `nodes`×`shards` sources share
/// `rate` messages/s, `batch` messages each.
pub fn batch_interval(rate: f64, nodes: usize, shards: usize, batch: usize) -> Duration {
    let per_source = rate / (nodes * shards).max(1) as f64;
    Duration::from_secs_f64(batch as f64 / per_source.max(1e-9))
}

/// `messages` (per node) rounded down to whole batches of `batch` for every
/// shard count in `shards` (at least one such unit), so both layouts publish
/// the same messages.
pub fn whole_batches(messages: usize, batch: usize, shards: &[usize]) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let unit = shards.iter().fold(batch.max(1), |u, &s| {
        let b = s.max(1) * batch.max(1);
        u / gcd(u, b) * b
    });
    messages.max(unit) / unit * unit
}

/// When, within one batch interval `iv`, publisher `i` of `npubs` writes its
/// group `g` of `groups`: all writes spread evenly over the interval.
pub fn phase(iv: Duration, i: usize, npubs: usize, g: usize, groups: usize) -> Duration {
    let slots = (npubs * groups).max(1);
    iv.mul_f64((i * groups + g) as f64 / slots as f64)
}

/// How the engine connections are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Two connections per shard (shardline-chat today).
    PerShard,
    /// Two connections per node, owned by a bridge thread; the shards'
    /// batches merged into one write (their turns line up: the bridge's best
    /// case).
    Bridge,
    /// The same connections, each shard's batch written on its own (paced
    /// loads: the shards' turns fall apart, as at low load).
    BridgeApart,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::PerShard => "per-shard",
            Layout::Bridge => "bridge",
            Layout::BridgeApart => "bridge-apart",
        }
    }
}

/// The offered load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Load {
    /// Closed loop: as fast as Redis answers; `batch` messages per shard's flush.
    Saturated { batch: usize },
    /// `rate` messages/s over all nodes, each shard flushing `batch` at a time
    /// on a fixed schedule.
    Paced { rate: f64, batch: usize },
}

impl Load {
    pub fn name(self) -> String {
        match self {
            Load::Saturated { batch } => format!("saturated, B={batch}"),
            Load::Paced { rate, batch } => format!("{:.0}k msg/s, B={batch}", rate / 1e3),
        }
    }
    /// Messages per shard's flush.
    pub fn batch(self) -> usize {
        match self {
            Load::Saturated { batch } | Load::Paced { batch, .. } => batch.max(1),
        }
    }
    /// Messages each node publishes in one run: `messages` saturated, `secs`
    /// of the rate paced; whole batches for every shard count.
    pub fn messages(self, cfg: &LinksConfig) -> usize {
        let m = match self {
            Load::Saturated { .. } => cfg.messages,
            Load::Paced { rate, .. } => (rate * cfg.paced_secs / cfg.nodes.max(1) as f64) as usize,
        };
        whole_batches(m, self.batch(), &cfg.shards)
    }
}

/// Parses paced loads: `RATExBATCH` items separated by commas, e.g.
/// `60000x16,6000x1` (messages/s over all nodes, messages per shard's flush).
pub fn parse_paced(s: &str) -> Result<Vec<(f64, usize)>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| {
            let (r, b) = x
                .split_once('x')
                .ok_or_else(|| format!("{x:?}: expected RATExBATCH, e.g. 60000x16"))?;
            let rate: f64 = r.parse().map_err(|_| format!("{x:?}: bad rate {r:?}"))?;
            let batch: usize = b.parse().map_err(|_| format!("{x:?}: bad batch {b:?}"))?;
            if !rate.is_finite() || rate <= 0.0 || batch == 0 {
                return Err(format!("{x:?}: rate and batch must be positive"));
            }
            Ok((rate, batch))
        })
        .collect()
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct LinksConfig {
    pub nodes: usize,
    pub shards: Vec<usize>,
    /// Saturated load: messages per shard's flush (the bridge writes shards ×
    /// this).
    pub batch: usize,
    pub payload: usize,
    /// Saturated load: messages each node publishes per run.
    pub messages: usize,
    pub rounds: usize,
    /// Paced loads: (messages/s over all nodes, messages per shard's flush).
    pub paced: Vec<(f64, usize)>,
    /// Length of a paced run.
    pub paced_secs: f64,
    /// Mailbox part: the framework backend, messages streamed, ping-pongs.
    #[serde(serialize_with = "as_text")]
    pub io: Io,
    pub mailbox_messages: u64,
    pub pings: u64,
}

fn as_text<S: serde::Serializer>(io: &Io, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(io)
}

/// One run of one layout.
#[derive(Debug, Clone, Serialize)]
pub struct LinksRun {
    pub published: u64,
    /// Sum of PUBLISH replies (subscribers reached); should be nodes × published.
    pub receivers_reported: u64,
    pub deliveries: u64,
    pub expected_deliveries: u64,
    pub fifo_violations: u64,
    pub secs: f64,
    pub deliveries_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub redis_cpu_us_per_delivery: f64,
    pub harness_cpu_us_per_delivery: f64,
    pub errors: Vec<String>,
}

/// Medians of one (load, shards, layout) over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct LinksCase {
    pub load: Load,
    pub shards: usize,
    pub layout: Layout,
    pub publisher_connections: usize,
    pub subscriber_connections: usize,
    pub publisher_batch: usize,
    pub runs: Vec<LinksRun>,
    pub median_deliveries_per_sec: f64,
    pub median_redis_cpu_us_per_delivery: f64,
    pub median_harness_cpu_us_per_delivery: f64,
    pub median_p50_us: f64,
    pub median_p99_us: f64,
    pub complete_every_round: bool,
}

/// The framework mailbox, measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct HandoffCost {
    pub io: String,
    /// Both threads' CPU per message, streaming one item per message (ns).
    pub stream_cpu_ns_per_msg: f64,
    pub stream_items_per_s: f64,
    /// The same per item, 64 items per message (a turn's publishes in one post).
    pub batched_cpu_ns_per_item: f64,
    pub batched_items_per_s: f64,
    /// One-way latency to a sleeping receiver (µs).
    pub wake_p50_us: f64,
    pub wake_p99_us: f64,
    /// CPU per message that wakes a sleeping receiver (µs, an upper bound:
    /// includes the sender's timer wake-up).
    pub wake_cpu_us_per_msg: f64,
}

/// Per delivery, what one bridge per node saves and adds, for one (load, shards).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Decomposition {
    pub load: Load,
    pub shards: usize,
    /// The bridge layout compared with per-shard.
    pub bridge: Layout,
    /// Redis CPU per delivery, per-shard − bridge (µs; > 0: the bridge saves).
    pub redis_saved_us: f64,
    /// per-shard ÷ bridge Redis CPU per delivery.
    pub redis_ratio: f64,
    /// Harness (client link) CPU per delivery, per-shard − bridge (µs).
    pub link_cpu_saved_us: f64,
    /// Hand-offs per delivery: 1 + 1/nodes.
    pub handoffs_per_delivery: f64,
    /// Their CPU: streaming, one item per post (µs).
    pub handoff_cpu_single_us: f64,
    /// Their CPU: streaming, a batch per post (µs).
    pub handoff_cpu_batched_us: f64,
    /// Their CPU when each wakes a sleeping thread (µs; upper bound).
    pub handoff_cpu_wake_us: f64,
    /// Node CPU net of the bridge per delivery, hand-offs streamed one per
    /// post: hand-off CPU − link CPU saved (µs; > 0: the bridge costs the node).
    pub node_net_single_us: f64,
    /// The same with hand-offs at wake-up cost.
    pub node_net_wake_us: f64,
    /// Measured engine-side p50, bridge − per-shard (µs).
    pub engine_p50_delta_us: f64,
    /// Latency the two hand-offs add when the threads sleep: 2 × wake p50 (µs).
    pub handoff_p50_added_us: f64,
    /// Redis's ceiling (deliveries/s = 1 / Redis CPU per delivery), both layouts.
    pub redis_ceiling_per_shard: f64,
    pub redis_ceiling_bridge: f64,
}

impl Decomposition {
    /// Combines the two layouts' medians with the hand-off cost.
    pub fn new(
        nodes: usize,
        per_shard: &LinksCase,
        bridge: &LinksCase,
        h: &HandoffCost,
    ) -> Decomposition {
        let n = handoffs_per_delivery(nodes);
        let redis_saved =
            per_shard.median_redis_cpu_us_per_delivery - bridge.median_redis_cpu_us_per_delivery;
        let link_saved = per_shard.median_harness_cpu_us_per_delivery
            - bridge.median_harness_cpu_us_per_delivery;
        let single = n * h.stream_cpu_ns_per_msg / 1e3;
        let wake = n * h.wake_cpu_us_per_msg;
        let ceiling = |us: f64| if us > 0.0 { 1e6 / us } else { 0.0 };
        Decomposition {
            load: per_shard.load,
            shards: per_shard.shards,
            bridge: bridge.layout,
            redis_saved_us: round(redis_saved, 4),
            redis_ratio: round(
                per_shard.median_redis_cpu_us_per_delivery
                    / bridge.median_redis_cpu_us_per_delivery.max(1e-9),
                3,
            ),
            link_cpu_saved_us: round(link_saved, 4),
            handoffs_per_delivery: round(n, 4),
            handoff_cpu_single_us: round(single, 4),
            handoff_cpu_batched_us: round(n * h.batched_cpu_ns_per_item / 1e3, 4),
            handoff_cpu_wake_us: round(wake, 4),
            node_net_single_us: round(single - link_saved, 4),
            node_net_wake_us: round(wake - link_saved, 4),
            engine_p50_delta_us: bridge.median_p50_us - per_shard.median_p50_us,
            handoff_p50_added_us: round(2.0 * h.wake_p50_us, 2),
            redis_ceiling_per_shard: round(ceiling(per_shard.median_redis_cpu_us_per_delivery), 0),
            redis_ceiling_bridge: round(ceiling(bridge.median_redis_cpu_us_per_delivery), 0),
        }
    }
}

/// What `engine-links --json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct LinksOutput {
    pub config: LinksConfig,
    pub redis_version: String,
    pub cases: Vec<LinksCase>,
    pub handoff: HandoffCost,
    pub decomposition: Vec<Decomposition>,
    pub machine: MachineInfo,
    pub machine_at_end: MachineInfo,
}

// ---------------------------------------------------------------- clients

/// A source of messages: one shard (`id` = node × shards + shard).
#[derive(Debug, Clone, Copy)]
struct Source {
    id: usize,
    shard: usize,
}

/// A Redis connection subscribed to `partitions`.
fn subscribe(addr: SocketAddr, partitions: &[usize]) -> io::Result<Conn> {
    let mut c = Conn::open(addr)?;
    let names: Vec<String> = partitions.iter().map(|&p| channel(p)).collect();
    let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
    args.extend(names.iter().map(|n| n.as_bytes()));
    engines::resp_cmd(&mut c.out, &args);
    c.flush()?;
    for _ in &names {
        match engines::read_resp(&mut c.r)? {
            Resp::Array(Some(v)) if v.len() == 3 => {}
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("SUBSCRIBE replied {other:?}"),
                ))
            }
        }
    }
    Ok(c)
}

/// A pub/sub message's payload.
fn next_message(c: &mut Conn) -> io::Result<Vec<u8>> {
    match engines::read_resp(&mut c.r)? {
        Resp::Array(Some(mut v)) if v.len() == 3 => match v.pop() {
            Some(Resp::Bulk(Some(p))) => Ok(p),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("message payload {other:?}"),
            )),
        },
        other => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected {other:?}"),
        )),
    }
}

struct SubResult {
    got: u64,
    fifo_violations: u64,
    hist: Histogram<u64>,
    last_at: Instant,
    error: Option<String>,
}

fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant bounds")
}

/// One run of one layout.
fn run_once(
    cfg: &LinksConfig,
    addr: SocketAddr,
    redis_pid: u32,
    layout: Layout,
    shards: usize,
    load: Load,
) -> anyhow::Result<LinksRun> {
    let nodes = cfg.nodes;
    let per_source = load.messages(cfg) / shards;
    let sources = nodes * shards;
    // Subscribers: what each expects.
    let mut subs = Vec::new();
    for _node in 0..nodes {
        match layout {
            Layout::PerShard => {
                for s in 0..shards {
                    let c = subscribe(addr, &owned_partitions(s, shards)).context("subscribing")?;
                    // Every node's shard s publishes to exactly these partitions.
                    subs.push((c, (nodes * per_source) as u64));
                }
            }
            Layout::Bridge | Layout::BridgeApart => {
                let all: Vec<usize> = (0..PARTITIONS).collect();
                let c = subscribe(addr, &all).context("subscribing")?;
                subs.push((c, (sources * per_source) as u64));
            }
        }
    }
    // Publishers: the sources each writes for.
    let mut pubs = Vec::new();
    for node in 0..nodes {
        let mine: Vec<Source> = (0..shards)
            .map(|s| Source {
                id: node * shards + s,
                shard: s,
            })
            .collect();
        // Each publisher connection: groups of sources, a group per write.
        match layout {
            Layout::PerShard => {
                for src in mine {
                    pubs.push((Conn::open(addr)?, vec![vec![src]]));
                }
            }
            Layout::Bridge => pubs.push((Conn::open(addr)?, vec![mine])),
            Layout::BridgeApart => pubs.push((
                Conn::open(addr)?,
                mine.into_iter().map(|s| vec![s]).collect(),
            )),
        }
    }
    let expected: u64 = subs.iter().map(|(_, e)| e).sum();
    let base = Instant::now();
    let deadline = base + Duration::from_secs(60);
    let done = Arc::new(AtomicBool::new(false));
    let sub_handles: Vec<_> = subs
        .into_iter()
        .map(|(mut c, want)| {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut out = SubResult {
                    got: 0,
                    fifo_violations: 0,
                    hist: new_hist(),
                    last_at: Instant::now(),
                    error: None,
                };
                let mut next_seq = vec![0usize; sources];
                let _ = c.set_timeout(Duration::from_millis(200));
                let mut idle_since: Option<Instant> = None;
                while out.got < want && Instant::now() < deadline {
                    match next_message(&mut c) {
                        Ok(p) => {
                            let now = Instant::now();
                            idle_since = None;
                            if let Some((src, seq, t)) = engines::parse_payload(&p) {
                                let lat = now.duration_since(base).as_nanos() as u64;
                                out.hist.saturating_record(lat.saturating_sub(t) / 1000);
                                if let Some(n) = next_seq.get_mut(src) {
                                    if seq < *n {
                                        out.fifo_violations += 1;
                                    } else {
                                        *n = seq + 1;
                                    }
                                }
                            }
                            out.got += 1;
                            out.last_at = now;
                        }
                        Err(e) if engines::is_timeout(&e) => {
                            if done.load(Ordering::Relaxed) {
                                let since = *idle_since.get_or_insert_with(Instant::now);
                                if since.elapsed() > Duration::from_secs(2) {
                                    break;
                                }
                            }
                        }
                        Err(e) => {
                            out.error = Some(e.to_string());
                            break;
                        }
                    }
                }
                out
            })
        })
        .collect();
    let sched0 = engines::sched_cpu_ns(redis_pid);
    let cpu0 = crate::servers::proc_cpu_time(redis_pid)?;
    let self0 = engines::self_cpu();
    let start = Instant::now();
    let published = Arc::new(AtomicU64::new(0));
    let receivers = Arc::new(AtomicU64::new(0));
    let npubs = pubs.len();
    let pub_handles: Vec<_> = pubs
        .into_iter()
        .enumerate()
        .map(|(i, (mut c, groups))| {
            let (batch, size) = (load.batch(), cfg.payload);
            let (published, receivers) = (published.clone(), receivers.clone());
            let names: Vec<String> = (0..PARTITIONS).map(channel).collect();
            let interval = match load {
                Load::Paced { rate, .. } => Some(batch_interval(rate, nodes, shards, batch)),
                Load::Saturated { .. } => None,
            };
            std::thread::spawn(move || -> io::Result<()> {
                let mut seq = 0;
                let mut k = 0u32;
                while seq < per_source {
                    let n = batch.min(per_source - seq);
                    for (g, group) in groups.iter().enumerate() {
                        if let Some(iv) = interval {
                            // Writes spread over one interval, not in lockstep.
                            let at = start + phase(iv, i, npubs, g, groups.len()) + iv * k;
                            let now = Instant::now();
                            if at > now {
                                std::thread::sleep(at - now);
                            }
                        }
                        let t = base.elapsed().as_nanos() as u64;
                        for src in group {
                            for q in seq..seq + n {
                                let p = partition_for(src.shard, q, shards);
                                let m = engines::payload(size, src.id, q, t);
                                engines::resp_cmd(
                                    &mut c.out,
                                    &[b"PUBLISH", names[p].as_bytes(), &m],
                                );
                            }
                        }
                        c.flush()?;
                        let mut got = 0;
                        for _ in 0..n * group.len() {
                            match engines::read_resp(&mut c.r)? {
                                Resp::Int(r) => got += r as u64,
                                other => {
                                    return Err(io::Error::new(
                                        io::ErrorKind::InvalidData,
                                        format!("PUBLISH replied {other:?}"),
                                    ))
                                }
                            }
                        }
                        receivers.fetch_add(got, Ordering::Relaxed);
                        published.fetch_add((n * group.len()) as u64, Ordering::Relaxed);
                    }
                    seq += n;
                    k += 1;
                }
                Ok(())
            })
        })
        .collect();
    let mut errors = Vec::new();
    for h in pub_handles {
        if let Err(e) = h.join().expect("publisher panicked") {
            errors.push(format!("publisher: {e}"));
        }
    }
    done.store(true, Ordering::Relaxed);
    let outs: Vec<SubResult> = sub_handles
        .into_iter()
        .map(|h| h.join().expect("subscriber panicked"))
        .collect();
    let sched1 = engines::sched_cpu_ns(redis_pid);
    let cpu1 = crate::servers::proc_cpu_time(redis_pid)?;
    let self1 = engines::self_cpu();
    errors.extend(
        outs.iter()
            .filter_map(|o| o.error.as_ref().map(|e| format!("subscriber: {e}"))),
    );
    let end = outs.iter().map(|o| o.last_at).max().unwrap_or(start);
    let secs = end.saturating_duration_since(start).as_secs_f64().max(1e-9);
    let deliveries: u64 = outs.iter().map(|o| o.got).sum();
    let mut hist = new_hist();
    for o in &outs {
        hist.add(&o.hist).expect("same bounds");
    }
    let redis_us = match (sched0, sched1) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e3,
        _ => (cpu1 - cpu0).as_secs_f64() * 1e6,
    };
    let harness_us = self1.saturating_sub(self0).as_secs_f64() * 1e6;
    let d = deliveries.max(1) as f64;
    Ok(LinksRun {
        published: published.load(Ordering::Relaxed),
        receivers_reported: receivers.load(Ordering::Relaxed),
        deliveries,
        expected_deliveries: expected,
        fifo_violations: outs.iter().map(|o| o.fifo_violations).sum(),
        secs: round(secs, 4),
        deliveries_per_sec: round(deliveries as f64 / secs, 0),
        p50_us: hist.value_at_quantile(0.5) as f64,
        p99_us: hist.value_at_quantile(0.99) as f64,
        redis_cpu_us_per_delivery: round(redis_us / d, 4),
        harness_cpu_us_per_delivery: round(harness_us / d, 4),
        errors,
    })
}

/// The framework mailbox's cost, with the `mailbox` bench's code.
fn handoff_cost(cfg: &LinksConfig) -> anyhow::Result<HandoffCost> {
    let cpus = mailbox::two_cpus();
    let single = mailbox::shardline_stream::<u64>(cfg.io, &cpus, cfg.mailbox_messages)?;
    let batched = mailbox::shardline_stream::<Batch>(
        cfg.io,
        &cpus,
        (cfg.mailbox_messages / BATCH as u64).max(1),
    )?;
    let (wake, wake_cpu_per_ping) = mailbox::shardline_wake(cfg.io, &cpus, cfg.pings, 1)?;
    let (Some(s), Some(b), Some(w)) = (
        single.cpu_ns_per_msg,
        batched.cpu_ns_per_msg,
        wake_cpu_per_ping,
    ) else {
        bail!("the mailbox runs did not report their CPU time");
    };
    Ok(HandoffCost {
        io: cfg.io.to_string(),
        stream_cpu_ns_per_msg: round(s, 1),
        stream_items_per_s: round(single.items_per_s, 0),
        batched_cpu_ns_per_item: round(b / BATCH as f64, 2),
        batched_items_per_s: round(batched.items_per_s, 0),
        wake_p50_us: round(wake.p50_us, 2),
        wake_p99_us: round(wake.p99_us, 2),
        // Two messages per ping-pong, each waking its receiver.
        wake_cpu_us_per_msg: round(w / 2.0, 3),
    })
}

/// Runs everything: the engine layouts interleaved over rounds, then the mailbox.
pub fn run(cfg: &LinksConfig) -> anyhow::Result<LinksOutput> {
    let machine = MachineInfo::announce();
    if !engines::which("redis-server") {
        bail!("no redis-server on PATH (apt-get install redis-server, or ./x bench-deps)");
    }
    let redis = engines::launch(Engine::Redis).context("starting redis-server")?;
    let (addr, pid) = (redis.proc.addr, redis.proc.pid);
    let mut loads = vec![Load::Saturated { batch: cfg.batch }];
    loads.extend(
        cfg.paced
            .iter()
            .map(|&(rate, batch)| Load::Paced { rate, batch }),
    );
    let mut cases = Vec::new();
    for &load in &loads {
        for &shards in &cfg.shards {
            let layouts: &[Layout] = match load {
                Load::Saturated { .. } => &[Layout::PerShard, Layout::Bridge],
                Load::Paced { .. } => &[Layout::PerShard, Layout::Bridge, Layout::BridgeApart],
            };
            for &layout in layouts {
                let (conns, b) = match layout {
                    Layout::PerShard => (cfg.nodes * shards, load.batch()),
                    Layout::Bridge => (cfg.nodes, load.batch() * shards),
                    Layout::BridgeApart => (cfg.nodes, load.batch()),
                };
                cases.push(LinksCase {
                    load,
                    shards,
                    layout,
                    publisher_connections: conns,
                    subscriber_connections: conns,
                    publisher_batch: b,
                    runs: Vec::new(),
                    median_deliveries_per_sec: 0.0,
                    median_redis_cpu_us_per_delivery: 0.0,
                    median_harness_cpu_us_per_delivery: 0.0,
                    median_p50_us: 0.0,
                    median_p99_us: 0.0,
                    complete_every_round: true,
                });
            }
        }
    }
    for round_no in 0..cfg.rounds {
        for case in &mut cases {
            let r = run_once(cfg, addr, pid, case.layout, case.shards, case.load).with_context(
                || {
                    format!(
                        "{} {} S={}",
                        case.load.name(),
                        case.layout.name(),
                        case.shards
                    )
                },
            )?;
            eprintln!(
                "round {}: {:<18} S={} {:<9} {:>9.0} deliv/s  redis {:.3} us/deliv  harness {:.3} us/deliv  p50 {} p99 {} us{}",
                round_no + 1,
                case.load.name(),
                case.shards,
                case.layout.name(),
                r.deliveries_per_sec,
                r.redis_cpu_us_per_delivery,
                r.harness_cpu_us_per_delivery,
                r.p50_us,
                r.p99_us,
                if r.deliveries == r.expected_deliveries && r.errors.is_empty() {
                    String::new()
                } else {
                    format!(
                        "  INCOMPLETE {}/{} {:?}",
                        r.deliveries, r.expected_deliveries, r.errors
                    )
                }
            );
            case.runs.push(r);
        }
    }
    drop(redis);
    for c in &mut cases {
        let med = |f: fn(&LinksRun) -> f64| {
            median(&c.runs.iter().map(f).collect::<Vec<_>>()).unwrap_or(0.0)
        };
        c.median_deliveries_per_sec = med(|r| r.deliveries_per_sec);
        c.median_redis_cpu_us_per_delivery = med(|r| r.redis_cpu_us_per_delivery);
        c.median_harness_cpu_us_per_delivery = med(|r| r.harness_cpu_us_per_delivery);
        c.median_p50_us = med(|r| r.p50_us);
        c.median_p99_us = med(|r| r.p99_us);
        c.complete_every_round = c.runs.iter().all(|r| {
            r.deliveries == r.expected_deliveries
                && r.errors.is_empty()
                && r.fifo_violations == 0
                && r.receivers_reported == r.published * cfg.nodes as u64
        });
    }
    eprintln!("mailbox ({}) …", cfg.io);
    let handoff = handoff_cost(cfg)?;
    let mut decomposition = Vec::new();
    for &load in &loads {
        for &shards in &cfg.shards {
            let find = |l: Layout| {
                cases
                    .iter()
                    .find(|c| c.load == load && c.shards == shards && c.layout == l)
            };
            let per_shard = find(Layout::PerShard).expect("every load runs per-shard");
            for l in [Layout::Bridge, Layout::BridgeApart] {
                if let Some(b) = find(l) {
                    decomposition.push(Decomposition::new(cfg.nodes, per_shard, b, &handoff));
                }
            }
        }
    }
    Ok(LinksOutput {
        config: cfg.clone(),
        redis_version: engines::version(Engine::Redis),
        cases,
        handoff,
        decomposition,
        machine,
        machine_at_end: MachineInfo::read(),
    })
}

/// The tables printed after a run.
pub fn render(out: &LinksOutput) -> String {
    let cfg = &out.config;
    let mut s = format!(
        "{} nodes, payload {} B, {} messages per node per saturated run, {} s paced runs, {} rounds (medians); {}\n",
        cfg.nodes, cfg.payload, cfg.messages, cfg.paced_secs, cfg.rounds, out.redis_version
    );
    let rows: Vec<Vec<String>> = out
        .cases
        .iter()
        .map(|c| {
            vec![
                c.load.name(),
                c.shards.to_string(),
                c.layout.name().to_owned(),
                format!("{}+{}", c.publisher_connections, c.subscriber_connections),
                c.publisher_batch.to_string(),
                format!("{:.1}k", c.median_deliveries_per_sec / 1e3),
                format!("{:.3}", c.median_redis_cpu_us_per_delivery),
                format!("{:.3}", c.median_harness_cpu_us_per_delivery),
                format!("{:.0}", c.median_p50_us),
                format!("{:.0}", c.median_p99_us),
                if c.complete_every_round { "yes" } else { "NO" }.to_owned(),
            ]
        })
        .collect();
    s.push_str(&report::table(
        &[
            "load",
            "S",
            "layout",
            "conns pub+sub",
            "batch",
            "deliv/s",
            "redis us/deliv",
            "harness us/deliv",
            "p50 us",
            "p99 us",
            "complete",
        ],
        &rows,
    ));
    let h = &out.handoff;
    s.push_str(&format!(
        "mailbox ({}): streaming {:.0} ns CPU per message ({:.1}M/s), {:.2} ns per item at {} per message ({:.0}M items/s); \
         waking a sleeping shard: p50 {:.1} us, p99 {:.1} us, <= {:.2} us CPU per message\n",
        h.io,
        h.stream_cpu_ns_per_msg,
        h.stream_items_per_s / 1e6,
        h.batched_cpu_ns_per_item,
        BATCH,
        h.batched_items_per_s / 1e6,
        h.wake_p50_us,
        h.wake_p99_us,
        h.wake_cpu_us_per_msg
    ));
    let rows: Vec<Vec<String>> = out
        .decomposition
        .iter()
        .map(|d| {
            vec![
                d.load.name(),
                d.shards.to_string(),
                d.bridge.name().to_owned(),
                format!("{:+.3} ({:.2}x)", d.redis_saved_us, d.redis_ratio),
                format!("{:+.3}", d.link_cpu_saved_us),
                format!(
                    "{:.3} / {:.3} / {:.2}",
                    d.handoff_cpu_batched_us, d.handoff_cpu_single_us, d.handoff_cpu_wake_us
                ),
                format!("{:+.3} / {:+.2}", d.node_net_single_us, d.node_net_wake_us),
                format!("{:+.0}", d.engine_p50_delta_us),
                format!("+{:.0}", d.handoff_p50_added_us),
                format!(
                    "{:.2}M -> {:.2}M",
                    d.redis_ceiling_per_shard / 1e6,
                    d.redis_ceiling_bridge / 1e6
                ),
            ]
        })
        .collect();
    s.push_str(&format!(
        "per delivery, bridge against per-shard ({:.2} hand-offs per delivery):\n",
        handoffs_per_delivery(cfg.nodes)
    ));
    s.push_str(&report::table(
        &[
            "load",
            "S",
            "vs per-shard",
            "redis saved us",
            "link cpu saved us",
            "hand-off cpu us batched/single/wake",
            "node net us single/wake",
            "engine p50 delta us",
            "hand-off p50 us",
            "redis ceiling deliv/s",
        ],
        &rows,
    ));
    s.push_str(&format!(
        "machine: {}\nmachine at end: {}\n",
        out.machine.line(),
        out.machine_at_end.line()
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_own_disjoint_partitions_covering_all() {
        for shards in [1, 2, 3, 4, 8] {
            let mut all: Vec<usize> = (0..shards)
                .flat_map(|s| owned_partitions(s, shards))
                .collect();
            all.sort_unstable();
            assert_eq!(all, (0..PARTITIONS).collect::<Vec<_>>(), "S={shards}");
        }
        assert_eq!(owned_partitions(1, 4)[..3], [1, 5, 9]);
    }

    #[test]
    fn a_shard_publishes_only_to_its_partitions_and_to_all_of_them() {
        for shards in [1, 2, 4] {
            for s in 0..shards {
                let owned = owned_partitions(s, shards);
                let used: std::collections::BTreeSet<usize> =
                    (0..1000).map(|k| partition_for(s, k, shards)).collect();
                assert_eq!(
                    used.into_iter().collect::<Vec<_>>(),
                    owned,
                    "S={shards} s={s}"
                );
            }
        }
        assert_eq!(channel(63), "shardline:ev:63");
    }

    #[test]
    fn messages_round_to_whole_batches() {
        assert_eq!(whole_batches(24_000, 16, &[2, 4]), 24_000);
        assert_eq!(whole_batches(1000, 16, &[2, 4]), 960);
        // lcm(16, 48, 64) = 192.
        assert_eq!(whole_batches(1000, 16, &[3, 4]), 960);
        assert_eq!(whole_batches(10, 16, &[2]), 32);
    }

    #[test]
    fn paced_loads_parse() {
        assert_eq!(
            parse_paced("60000x16, 6000x1"),
            Ok(vec![(60_000.0, 16), (6000.0, 1)])
        );
        assert_eq!(parse_paced(""), Ok(vec![]));
        assert!(parse_paced("60000").is_err());
        assert!(parse_paced("0x16").is_err());
        assert!(parse_paced("100x0").is_err());
        assert!(parse_paced("fastx2").is_err());
    }

    #[test]
    fn paced_runs_last_their_seconds_in_whole_batches() {
        let cfg = LinksConfig {
            nodes: 3,
            shards: vec![2, 4],
            batch: 16,
            payload: 100,
            messages: 24_000,
            rounds: 1,
            paced: vec![],
            paced_secs: 1.0,
            io: Io::Epoll,
            mailbox_messages: 1,
            pings: 1,
        };
        assert_eq!(Load::Saturated { batch: 16 }.messages(&cfg), 24_000);
        // 60k/s over 3 nodes for 1 s = 20,000, down to whole 4×16 batches.
        let l = Load::Paced {
            rate: 60_000.0,
            batch: 16,
        };
        assert_eq!(l.messages(&cfg), 19_968);
        assert_eq!(
            Load::Paced {
                rate: 6000.0,
                batch: 1
            }
            .messages(&cfg),
            2000
        );
        assert_eq!(l.name(), "60k msg/s, B=16");
    }

    #[test]
    fn writes_spread_over_the_interval() {
        let iv = Duration::from_micros(1200);
        // 3 bridges × 4 groups = 12 slots of 100 µs.
        assert_eq!(phase(iv, 0, 3, 0, 4), Duration::ZERO);
        assert_eq!(phase(iv, 1, 3, 2, 4), Duration::from_micros(600));
        assert_eq!(phase(iv, 2, 3, 3, 4), Duration::from_micros(1100));
        // 12 per-shard publishers, one group each.
        assert_eq!(phase(iv, 11, 12, 0, 1), Duration::from_micros(1100));
    }

    #[test]
    fn handoffs_and_pacing() {
        assert!((handoffs_per_delivery(3) - 4.0 / 3.0).abs() < 1e-12);
        assert_eq!(handoffs_per_delivery(1), 2.0);
        // 60k msg/s over 3×2 sources = 10k/s each; 16 a batch = one per 1.6 ms.
        assert_eq!(
            batch_interval(60_000.0, 3, 2, 16),
            Duration::from_micros(1600)
        );
    }

    fn case(layout: Layout, redis: f64, harness: f64, p50: f64) -> LinksCase {
        LinksCase {
            load: Load::Saturated { batch: 16 },
            shards: 4,
            layout,
            publisher_connections: 0,
            subscriber_connections: 0,
            publisher_batch: 0,
            runs: Vec::new(),
            median_deliveries_per_sec: 0.0,
            median_redis_cpu_us_per_delivery: redis,
            median_harness_cpu_us_per_delivery: harness,
            median_p50_us: p50,
            median_p99_us: 0.0,
            complete_every_round: true,
        }
    }

    #[test]
    fn decomposition_arithmetic() {
        let h = HandoffCost {
            io: "uring".into(),
            stream_cpu_ns_per_msg: 60.0,
            stream_items_per_s: 0.0,
            batched_cpu_ns_per_item: 3.0,
            batched_items_per_s: 0.0,
            wake_p50_us: 40.0,
            wake_p99_us: 0.0,
            wake_cpu_us_per_msg: 3.0,
        };
        let d = Decomposition::new(
            3,
            &case(Layout::PerShard, 0.8, 1.5, 300.0),
            &case(Layout::Bridge, 0.5, 1.2, 350.0),
            &h,
        );
        assert!((d.redis_saved_us - 0.3).abs() < 1e-9, "{d:?}");
        assert!((d.redis_ratio - 1.6).abs() < 1e-9, "{d:?}");
        assert!((d.link_cpu_saved_us - 0.3).abs() < 1e-9, "{d:?}");
        // 4/3 hand-offs × 60 ns = 0.08 µs; × 3 µs = 4 µs; × 3 ns = 0.004 µs.
        assert!((d.handoff_cpu_single_us - 0.08).abs() < 1e-9, "{d:?}");
        assert!((d.handoff_cpu_wake_us - 4.0).abs() < 1e-9, "{d:?}");
        assert!((d.handoff_cpu_batched_us - 0.004).abs() < 1e-9, "{d:?}");
        assert!((d.node_net_single_us - (0.08 - 0.3)).abs() < 1e-9, "{d:?}");
        assert!((d.node_net_wake_us - 3.7).abs() < 1e-9, "{d:?}");
        assert_eq!(d.engine_p50_delta_us, 50.0);
        assert_eq!(d.handoff_p50_added_us, 80.0);
        assert_eq!(d.redis_ceiling_per_shard, 1_250_000.0);
        assert_eq!(d.redis_ceiling_bridge, 2_000_000.0);
    }
}
