//! `engines`: Redis 7 and NATS as the message engine between shardline-chat nodes
//! (issue 16), measured with loads shaped like the cluster's traffic.
//!
//! - fan-out: P publishers (one per node) each publish M messages to ONE
//!   channel/subject in batches of B (a shard flushing once per loop turn: the
//!   batch is written in one `write`, then its acknowledgements are read: Redis's
//!   B integer replies, NATS's PONG to one PING after the batch); S subscribers
//!   (one per node) receive them. Deliveries/s, publish→receive latency, engine
//!   CPU per delivery (utime+stime from /proc), the harness's own CPU per
//!   delivery.
//! - ordering: whether every subscriber saw the same total order of all P×M
//!   messages (a hash of the whole sequence), and per-publisher FIFO.
//! - claims: N atomic claims of distinct keys, one round trip each (Redis `SET k v
//!   NX PX 30000`; NATS JetStream KV create = publish with
//!   `Nats-Expected-Last-Subject-Sequence: 0` to a memory-stored KV stream), then
//!   the same N again, which must all lose.
//! - restart: one publisher paced at 1 message/ms, S subscribers; the engine is
//!   SIGKILLed mid-stream and started again on the same port; what each side saw.
//!
//! Both protocols are written by hand here (RESP2 and the NATS text protocol;
//! blocking `TcpStream`, a thread per client): the harness needs a handful of
//! commands and no crate was added.

use std::{
    collections::hash_map::DefaultHasher,
    hash::Hasher,
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{
    experiment::median,
    machine::MachineInfo,
    report::{self, round},
    servers::{self, proc_cpu_time, Ready, ServerProc},
};

/// The channel / subject of the fan-out.
const CHANNEL: &str = "shardline.cluster.chan";

/// An engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Redis,
    Nats,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Redis => "redis",
            Engine::Nats => "nats",
        }
    }
    fn exe(self) -> &'static str {
        match self {
            Engine::Redis => "redis-server",
            Engine::Nats => "nats-server",
        }
    }
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct EnginesConfig {
    pub engines: Vec<Engine>,
    pub publishers: usize,
    pub subscribers: usize,
    pub messages: usize,
    pub batch: usize,
    pub payload: usize,
    pub rounds: usize,
    pub claims: usize,
    pub restart: bool,
    /// Restart test: messages of the paced publisher (1 per ms).
    pub restart_messages: usize,
    /// Restart test: how long the engine stays down.
    pub down_ms: u64,
}

/// One fan-out run.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutRun {
    pub published: u64,
    pub deliveries: u64,
    pub expected_deliveries: u64,
    pub secs: f64,
    pub deliveries_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    pub engine_cpu_us_per_delivery: f64,
    pub engine_cpu_us_per_publish: f64,
    pub client_cpu_us_per_delivery: f64,
    /// Hash of each subscriber's full order.
    pub order_hashes: Vec<String>,
    /// All subscribers received the same sequence.
    pub same_total_order: bool,
    /// Positions at which subscriber i differs from subscriber 0.
    pub positions_differing_from_first: Vec<u64>,
    /// Messages received out of per-publisher order (all subscribers).
    pub fifo_violations: u64,
    /// Messages never received (all subscribers).
    pub missing: u64,
    pub subscriber_errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClaimResult {
    pub what: String,
    pub claims: u64,
    pub won_first_pass: u64,
    pub lost_second_pass: u64,
    pub secs: f64,
    pub claims_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub engine_cpu_us_per_claim: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RestartResult {
    pub attempted: u64,
    /// Publishes the publisher saw succeed (Redis: a reply; NATS: the PONG after).
    pub acked: u64,
    /// Redis: the sum of PUBLISH replies (receivers per message); absent for NATS.
    pub receivers_reported: Option<u64>,
    pub publish_failures: u64,
    pub publisher_errors: Vec<String>,
    pub publisher_outage_ms: f64,
    pub received: Vec<u64>,
    /// Acknowledged messages a subscriber never got.
    pub acked_but_lost: Vec<u64>,
    pub subscriber_errors: Vec<String>,
    pub subscriber_reconnects: Vec<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EngineResult {
    pub engine: Engine,
    pub version: String,
    pub fanout: Vec<FanoutRun>,
    pub median_deliveries_per_sec: f64,
    pub median_p50_us: f64,
    pub median_p99_us: f64,
    pub median_engine_cpu_us_per_delivery: f64,
    pub median_client_cpu_us_per_delivery: f64,
    pub same_total_order_every_round: bool,
    pub fifo_every_round: bool,
    pub claims: Option<ClaimResult>,
    pub restart: Option<RestartResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnginesOutput {
    pub config: EnginesConfig,
    pub results: Vec<EngineResult>,
    pub skipped: Vec<String>,
    pub machine: MachineInfo,
}

// ---------------------------------------------------------------- engines

struct Running {
    proc: ServerProc,
    port: u16,
    dir: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_engine(engine: Engine, port: u16, dir: &std::path::Path) -> anyhow::Result<ServerProc> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = Command::new(engine.exe());
    match engine {
        Engine::Redis => {
            cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(["--protected-mode", "no", "--logfile", ""])
                .arg("--dir")
                .arg(dir);
        }
        Engine::Nats => {
            cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                .arg(dir);
        }
    }
    cmd.stderr(Stdio::null());
    ServerProc::spawn(
        engine.name(),
        cmd,
        ([127, 0, 0, 1], port).into(),
        Ready::Connect,
        None,
    )
}

fn launch(engine: Engine) -> anyhow::Result<Running> {
    let port = servers::free_port()?;
    let dir = std::env::temp_dir().join(format!(
        "shardline-bench-{}-{}-{port}",
        engine.name(),
        std::process::id()
    ));
    let proc = start_engine(engine, port, &dir)?;
    Ok(Running { proc, port, dir })
}

fn version(engine: Engine) -> String {
    let out = Command::new(engine.exe()).arg("--version").output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        Err(e) => format!("unknown ({e})"),
    }
}

fn which(exe: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(exe).is_file()))
        .unwrap_or(false)
}

// ---------------------------------------------------------------- RESP

#[derive(Debug)]
enum Resp {
    Simple(String),
    #[allow(dead_code)] // shown through Debug in error messages
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

fn resp_cmd(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn read_line(r: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<()> {
    line.clear();
    if r.read_until(b'\n', line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed",
        ));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(())
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn num<T: std::str::FromStr>(b: &[u8]) -> io::Result<T> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(format!("bad number {:?}", String::from_utf8_lossy(b))))
}

fn read_resp(r: &mut impl BufRead) -> io::Result<Resp> {
    let mut line = Vec::new();
    read_line(r, &mut line)?;
    let (&kind, rest) = line.split_first().ok_or_else(|| bad("empty RESP line"))?;
    Ok(match kind {
        b'+' => Resp::Simple(String::from_utf8_lossy(rest).into_owned()),
        b'-' => Resp::Error(String::from_utf8_lossy(rest).into_owned()),
        b':' => Resp::Int(num(rest)?),
        b'$' => {
            let n: i64 = num(rest)?;
            if n < 0 {
                Resp::Bulk(None)
            } else {
                let mut v = vec![0; n as usize + 2];
                r.read_exact(&mut v)?;
                v.truncate(n as usize);
                Resp::Bulk(Some(v))
            }
        }
        b'*' => {
            let n: i64 = num(rest)?;
            if n < 0 {
                Resp::Array(None)
            } else {
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(read_resp(r)?);
                }
                Resp::Array(Some(v))
            }
        }
        _ => return Err(bad(format!("bad RESP type {}", kind as char))),
    })
}

// ---------------------------------------------------------------- clients

/// A connection: a buffered reader and a writer on the same socket.
struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
    out: Vec<u8>,
    line: Vec<u8>,
}

impl Conn {
    fn open(addr: SocketAddr) -> io::Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let w = s.try_clone()?;
        Ok(Conn {
            r: BufReader::with_capacity(256 * 1024, s),
            w,
            out: Vec::with_capacity(64 * 1024),
            line: Vec::new(),
        })
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }
    fn set_timeout(&self, d: Duration) -> io::Result<()> {
        self.r.get_ref().set_read_timeout(Some(d))
    }
}

/// A publishing client of either engine.
struct Publisher {
    engine: Engine,
    c: Conn,
}

impl Publisher {
    fn connect(engine: Engine, addr: SocketAddr) -> io::Result<Publisher> {
        let mut c = Conn::open(addr)?;
        if engine == Engine::Nats {
            nats_handshake(&mut c)?;
        }
        Ok(Publisher { engine, c })
    }

    /// Publishes a batch in one write and waits for its acknowledgement. Returns
    /// the receivers Redis reported (0 for NATS).
    fn publish(&mut self, msgs: &[Vec<u8>]) -> io::Result<u64> {
        match self.engine {
            Engine::Redis => {
                for m in msgs {
                    resp_cmd(&mut self.c.out, &[b"PUBLISH", CHANNEL.as_bytes(), m]);
                }
                self.c.flush()?;
                let mut receivers = 0;
                for _ in msgs {
                    match read_resp(&mut self.c.r)? {
                        Resp::Int(n) => receivers += n as u64,
                        other => return Err(bad(format!("PUBLISH replied {other:?}"))),
                    }
                }
                Ok(receivers)
            }
            Engine::Nats => {
                for m in msgs {
                    self.c
                        .out
                        .extend_from_slice(format!("PUB {CHANNEL} {}\r\n", m.len()).as_bytes());
                    self.c.out.extend_from_slice(m);
                    self.c.out.extend_from_slice(b"\r\n");
                }
                self.c.out.extend_from_slice(b"PING\r\n");
                self.c.flush()?;
                nats_wait_pong(&mut self.c)?;
                Ok(0)
            }
        }
    }
}

fn nats_handshake(c: &mut Conn) -> io::Result<()> {
    read_line(&mut c.r, &mut c.line)?;
    if !c.line.starts_with(b"INFO") {
        return Err(bad("NATS did not start with INFO"));
    }
    c.out.extend_from_slice(
        b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"protocol\":1}\r\nPING\r\n",
    );
    c.flush()?;
    nats_wait_pong(c)
}

fn nats_wait_pong(c: &mut Conn) -> io::Result<()> {
    loop {
        read_line(&mut c.r, &mut c.line)?;
        if c.line.starts_with(b"PONG") {
            return Ok(());
        }
        if c.line.starts_with(b"PING") {
            c.w.write_all(b"PONG\r\n")?;
        } else if c.line.starts_with(b"-ERR") {
            return Err(bad(String::from_utf8_lossy(&c.line).into_owned()));
        }
    }
}

/// Reads NATS protocol lines until a MSG/HMSG; returns its payload (headers
/// included for HMSG) and the subject. Answers server PINGs.
fn nats_next_msg(c: &mut Conn) -> io::Result<(String, Vec<u8>)> {
    loop {
        read_line(&mut c.r, &mut c.line)?;
        let line = String::from_utf8_lossy(&c.line).into_owned();
        let mut f = line.split_ascii_whitespace();
        match f.next() {
            Some("MSG") | Some("HMSG") => {
                let parts: Vec<&str> = f.collect();
                let subject = parts.first().copied().unwrap_or_default().to_owned();
                let len: usize = num(parts.last().copied().unwrap_or_default().as_bytes())?;
                let mut v = vec![0; len + 2];
                c.r.read_exact(&mut v)?;
                v.truncate(len);
                return Ok((subject, v));
            }
            Some("PING") => c.w.write_all(b"PONG\r\n")?,
            Some("-ERR") => return Err(bad(line)),
            _ => {}
        }
    }
}

/// A subscribing client of either engine.
struct Subscriber {
    engine: Engine,
    c: Conn,
}

impl Subscriber {
    fn connect(engine: Engine, addr: SocketAddr) -> io::Result<Subscriber> {
        let mut c = Conn::open(addr)?;
        match engine {
            Engine::Redis => {
                resp_cmd(&mut c.out, &[b"SUBSCRIBE", CHANNEL.as_bytes()]);
                c.flush()?;
                match read_resp(&mut c.r)? {
                    Resp::Array(Some(v)) if v.len() == 3 => {}
                    other => return Err(bad(format!("SUBSCRIBE replied {other:?}"))),
                }
            }
            Engine::Nats => {
                nats_handshake(&mut c)?;
                c.out
                    .extend_from_slice(format!("SUB {CHANNEL} 1\r\nPING\r\n").as_bytes());
                c.flush()?;
                nats_wait_pong(&mut c)?;
            }
        }
        Ok(Subscriber { engine, c })
    }

    /// The next message's payload.
    fn next(&mut self) -> io::Result<Vec<u8>> {
        match self.engine {
            Engine::Redis => match read_resp(&mut self.c.r)? {
                Resp::Array(Some(mut v)) if v.len() == 3 => match v.pop() {
                    Some(Resp::Bulk(Some(p))) => Ok(p),
                    other => Err(bad(format!("message payload {other:?}"))),
                },
                other => Err(bad(format!("unexpected {other:?}"))),
            },
            Engine::Nats => Ok(nats_next_msg(&mut self.c)?.1),
        }
    }
}

// ---------------------------------------------------------------- payloads

fn payload(size: usize, publisher: usize, seq: usize, t_ns: u64) -> Vec<u8> {
    let mut v = format!("{publisher:03} {seq:09} {t_ns:015} ").into_bytes();
    v.resize(size.max(v.len()), b'.');
    v
}

/// (publisher, seq, send time ns) of a payload.
fn parse_payload(p: &[u8]) -> Option<(usize, usize, u64)> {
    let s = std::str::from_utf8(p.get(..30)?).ok()?;
    let mut f = s.split(' ');
    Some((
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
    ))
}

fn self_cpu() -> Duration {
    proc_cpu_time(std::process::id()).unwrap_or_default()
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

// ---------------------------------------------------------------- fan-out

struct SubOutcome {
    order: Vec<u64>,
    hist: Histogram<u64>,
    last_at: Instant,
    error: Option<String>,
}

fn fanout(cfg: &EnginesConfig, engine: Engine, run: &Running) -> anyhow::Result<FanoutRun> {
    let addr = run.proc.addr;
    let expected_per_sub = (cfg.publishers * cfg.messages) as u64;
    let mut subs = Vec::new();
    for _ in 0..cfg.subscribers {
        subs.push(Subscriber::connect(engine, addr).context("subscribing")?);
    }
    let mut pubs = Vec::new();
    for _ in 0..cfg.publishers {
        pubs.push(Publisher::connect(engine, addr).context("connecting a publisher")?);
    }
    let base = Instant::now();
    let pubs_done = Arc::new(AtomicBool::new(false));
    let deadline = base + Duration::from_secs(120);
    let sub_handles: Vec<_> = subs
        .into_iter()
        .map(|mut s| {
            let done = pubs_done.clone();
            std::thread::spawn(move || {
                let mut out = SubOutcome {
                    order: Vec::with_capacity(expected_per_sub as usize),
                    hist: Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds"),
                    last_at: Instant::now(),
                    error: None,
                };
                let _ = s.c.set_timeout(Duration::from_millis(200));
                let mut idle_since: Option<Instant> = None;
                while (out.order.len() as u64) < expected_per_sub && Instant::now() < deadline {
                    match s.next() {
                        Ok(p) => {
                            let now = Instant::now();
                            idle_since = None;
                            if let Some((pb, seq, t)) = parse_payload(&p) {
                                let lat = now.duration_since(base).as_nanos() as u64;
                                out.hist.saturating_record(lat.saturating_sub(t) / 1000);
                                out.order.push(((pb as u64) << 32) | seq as u64);
                            }
                            out.last_at = now;
                        }
                        Err(e) if is_timeout(&e) => {
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
    let cpu0 = proc_cpu_time(run.proc.pid)?;
    let self0 = self_cpu();
    let start = Instant::now();
    let published = Arc::new(AtomicU64::new(0));
    let pub_handles: Vec<_> = pubs
        .into_iter()
        .enumerate()
        .map(|(id, mut p)| {
            let (m, batch, size) = (cfg.messages, cfg.batch.max(1), cfg.payload);
            let published = published.clone();
            std::thread::spawn(move || -> io::Result<()> {
                let mut seq = 0;
                while seq < m {
                    let n = batch.min(m - seq);
                    let t = base.elapsed().as_nanos() as u64;
                    let msgs: Vec<Vec<u8>> =
                        (seq..seq + n).map(|s| payload(size, id, s, t)).collect();
                    p.publish(&msgs)?;
                    published.fetch_add(n as u64, Ordering::Relaxed);
                    seq += n;
                }
                Ok(())
            })
        })
        .collect();
    let mut pub_errors = Vec::new();
    for h in pub_handles {
        if let Err(e) = h.join().expect("publisher panicked") {
            pub_errors.push(e.to_string());
        }
    }
    pubs_done.store(true, Ordering::Relaxed);
    let outcomes: Vec<SubOutcome> = sub_handles
        .into_iter()
        .map(|h| h.join().expect("subscriber panicked"))
        .collect();
    let cpu1 = proc_cpu_time(run.proc.pid)?;
    let self1 = self_cpu();
    if !pub_errors.is_empty() {
        bail!(
            "{} publishers failed: {}",
            engine.name(),
            pub_errors.join("; ")
        );
    }
    let end = outcomes.iter().map(|o| o.last_at).max().unwrap_or(start);
    let secs = end.saturating_duration_since(start).as_secs_f64().max(1e-9);
    let deliveries: u64 = outcomes.iter().map(|o| o.order.len() as u64).sum();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds");
    for o in &outcomes {
        hist.add(&o.hist).expect("same bounds");
    }
    let published = published.load(Ordering::Relaxed);
    let engine_us = (cpu1 - cpu0).as_secs_f64() * 1e6;
    let client_us = (self1.saturating_sub(self0)).as_secs_f64() * 1e6;
    let hashes: Vec<u64> = outcomes
        .iter()
        .map(|o| {
            let mut h = DefaultHasher::new();
            for &x in &o.order {
                h.write_u64(x);
            }
            h.finish()
        })
        .collect();
    let differing = outcomes
        .iter()
        .map(|o| {
            let first = &outcomes[0].order;
            let common = o.order.len().min(first.len());
            let diff = (0..common).filter(|&i| o.order[i] != first[i]).count();
            (diff + o.order.len().max(first.len()) - common) as u64
        })
        .collect();
    let mut fifo_violations = 0;
    let mut missing = 0;
    for o in &outcomes {
        let mut next = vec![0u64; cfg.publishers];
        for &x in &o.order {
            let (p, s) = ((x >> 32) as usize, x & 0xffff_ffff);
            if p < next.len() {
                if s < next[p] {
                    fifo_violations += 1;
                } else {
                    next[p] = s + 1;
                }
            }
        }
        missing += expected_per_sub.saturating_sub(o.order.len() as u64);
    }
    Ok(FanoutRun {
        published,
        deliveries,
        expected_deliveries: expected_per_sub * cfg.subscribers as u64,
        secs: round(secs, 4),
        deliveries_per_sec: round(deliveries as f64 / secs, 0),
        p50_us: hist.value_at_quantile(0.5) as f64,
        p99_us: hist.value_at_quantile(0.99) as f64,
        max_us: hist.max() as f64,
        engine_cpu_us_per_delivery: round(engine_us / deliveries.max(1) as f64, 4),
        engine_cpu_us_per_publish: round(engine_us / published.max(1) as f64, 4),
        client_cpu_us_per_delivery: round(client_us / deliveries.max(1) as f64, 4),
        same_total_order: hashes.windows(2).all(|w| w[0] == w[1]),
        order_hashes: hashes.iter().map(|h| format!("{h:016x}")).collect(),
        positions_differing_from_first: differing,
        fifo_violations,
        missing,
        subscriber_errors: outcomes.iter().filter_map(|o| o.error.clone()).collect(),
    })
}

// ---------------------------------------------------------------- claims

/// One claim of key number i on a connection: true if won.
type ClaimFn = Box<dyn FnMut(&mut Conn, usize) -> anyhow::Result<bool>>;

fn claims(cfg: &EnginesConfig, engine: Engine, run: &Running) -> anyhow::Result<ClaimResult> {
    let addr = run.proc.addr;
    let mut c = Conn::open(addr)?;
    let n = cfg.claims;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let tag = std::process::id();
    let what;
    // One claim: true if won.
    let mut claim: ClaimFn = match engine {
        Engine::Redis => {
            what = "SET claim:K owner NX PX 30000 (one round trip each)".to_owned();
            Box::new(move |c: &mut Conn, i: usize| {
                let key = format!("claim:{tag}:{i}");
                resp_cmd(
                    &mut c.out,
                    &[b"SET", key.as_bytes(), b"node-1", b"NX", b"PX", b"30000"],
                );
                c.flush()?;
                Ok(match read_resp(&mut c.r)? {
                    Resp::Simple(s) if s == "OK" => true,
                    Resp::Bulk(None) => false,
                    other => bail!("SET NX replied {other:?}"),
                })
            })
        }
        Engine::Nats => {
            what = "JetStream KV create: HPUB $KV.claims.K with Nats-Expected-Last-Subject-Sequence: 0, \
                    memory stream, max 1 per subject (one round trip each)"
                .to_owned();
            nats_handshake(&mut c)?;
            c.out.extend_from_slice(b"SUB _INBOX.claims.* 1\r\n");
            let stream = serde_json::json!({
                "name": "KV_claims", "subjects": ["$KV.claims.>"], "max_msgs_per_subject": 1,
                "discard": "new", "storage": "memory", "num_replicas": 1,
                "allow_rollup_hdrs": true, "deny_delete": true, "allow_direct": true,
                "max_age": 0
            })
            .to_string();
            c.out.extend_from_slice(
                format!(
                    "PUB $JS.API.STREAM.CREATE.KV_claims _INBOX.claims.0 {}\r\n{stream}\r\n",
                    stream.len()
                )
                .as_bytes(),
            );
            c.flush()?;
            let (_, reply) = nats_next_msg(&mut c)?;
            let text = String::from_utf8_lossy(&reply);
            if text.contains("\"error\"") {
                bail!("creating the KV stream: {text}");
            }
            Box::new(move |c: &mut Conn, i: usize| {
                let hdr = "NATS/1.0\r\nNats-Expected-Last-Subject-Sequence: 0\r\n\r\n";
                let body = "node-1";
                c.out.extend_from_slice(
                    format!(
                        "HPUB $KV.claims.k{tag}_{i} _INBOX.claims.r {} {}\r\n{hdr}{body}\r\n",
                        hdr.len(),
                        hdr.len() + body.len()
                    )
                    .as_bytes(),
                );
                c.flush()?;
                let (_, reply) = nats_next_msg(c)?;
                let text = String::from_utf8_lossy(&reply);
                if text.contains("\"seq\"") && !text.contains("\"error\"") {
                    Ok(true)
                } else if text.contains("wrong last sequence") {
                    Ok(false)
                } else {
                    bail!("KV create replied {text}")
                }
            })
        }
    };
    let cpu0 = proc_cpu_time(run.proc.pid)?;
    let start = Instant::now();
    let mut won = 0;
    for i in 0..n {
        let t = Instant::now();
        won += claim(&mut c, i)? as u64;
        hist.saturating_record(t.elapsed().as_micros() as u64);
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu1 = proc_cpu_time(run.proc.pid)?;
    let mut lost = 0;
    for i in 0..n {
        lost += !claim(&mut c, i)? as u64;
    }
    Ok(ClaimResult {
        what,
        claims: n as u64,
        won_first_pass: won,
        lost_second_pass: lost,
        secs: round(secs, 4),
        claims_per_sec: round(n as f64 / secs.max(1e-9), 0),
        p50_us: hist.value_at_quantile(0.5) as f64,
        p99_us: hist.value_at_quantile(0.99) as f64,
        engine_cpu_us_per_claim: round((cpu1 - cpu0).as_secs_f64() * 1e6 / n.max(1) as f64, 3),
    })
}

// ---------------------------------------------------------------- restart

fn restart(
    cfg: &EnginesConfig,
    engine: Engine,
    run: &mut Running,
) -> anyhow::Result<RestartResult> {
    let addr = run.proc.addr;
    let total = cfg.restart_messages;
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let subs: Vec<_> = (0..cfg.subscribers)
        .map(|_| {
            let (stop, errors) = (stop.clone(), errors.clone());
            let mut s = Subscriber::connect(engine, addr);
            std::thread::spawn(move || {
                let mut got = vec![false; total];
                let mut reconnects = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let sub = match &mut s {
                        Ok(sub) => sub,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(20));
                            s = Subscriber::connect(engine, addr);
                            if s.is_ok() {
                                reconnects += 1;
                            }
                            continue;
                        }
                    };
                    let _ = sub.c.set_timeout(Duration::from_millis(100));
                    match sub.next() {
                        Ok(p) => {
                            if let Some((_, seq, _)) = parse_payload(&p) {
                                if seq < total {
                                    got[seq] = true;
                                }
                            }
                        }
                        Err(e) if is_timeout(&e) => {}
                        Err(e) => {
                            errors.lock().unwrap().push(format!("subscriber: {e}"));
                            s = Err(e);
                        }
                    }
                }
                (got, reconnects)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let pub_errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let publisher = {
        let pub_errors = pub_errors.clone();
        let size = cfg.payload;
        std::thread::spawn(move || {
            let mut p = Publisher::connect(engine, addr);
            let mut acked = vec![false; total];
            let (mut failures, mut receivers) = (0u64, 0u64);
            let mut down_since: Option<Instant> = None;
            let mut outage = Duration::ZERO;
            let start = Instant::now();
            for (seq, ack) in acked.iter_mut().enumerate() {
                let due = start + Duration::from_millis(seq as u64);
                if let Some(d) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
                if p.is_err() {
                    p = Publisher::connect(engine, addr);
                }
                let res = match &mut p {
                    Ok(pb) => {
                        let _ = pb.c.set_timeout(Duration::from_millis(500));
                        pb.publish(&[payload(size, 0, seq, 0)])
                    }
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                };
                match res {
                    Ok(r) => {
                        *ack = true;
                        receivers += r;
                        if let Some(d) = down_since.take() {
                            outage += d.elapsed();
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        down_since.get_or_insert_with(Instant::now);
                        let mut errs = pub_errors.lock().unwrap();
                        let msg = format!("{:?}: {e}", e.kind());
                        if errs.last() != Some(&msg) {
                            errs.push(msg);
                        }
                        p = Err(e);
                    }
                }
            }
            (acked, failures, receivers, outage)
        })
    };
    // Kill mid-stream, start again on the same port.
    std::thread::sleep(Duration::from_millis(total as u64 / 3));
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    unsafe { libc::kill(run.proc.pid as libc::pid_t, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(cfg.down_ms));
    let fresh = start_engine(engine, run.port, &run.dir).context("restarting the engine")?;
    run.proc = fresh;
    let (acked, failures, receivers, outage) = publisher.join().expect("publisher panicked");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let outs: Vec<(Vec<bool>, u64)> = subs
        .into_iter()
        .map(|h| h.join().expect("subscriber panicked"))
        .collect();
    let mut sub_errors = errors.lock().unwrap().clone();
    let publisher_errors = pub_errors.lock().unwrap().clone();
    sub_errors.dedup();
    Ok(RestartResult {
        attempted: total as u64,
        acked: acked.iter().filter(|&&a| a).count() as u64,
        receivers_reported: (engine == Engine::Redis).then_some(receivers),
        publish_failures: failures,
        publisher_errors,
        publisher_outage_ms: round(outage.as_secs_f64() * 1e3, 1),
        received: outs
            .iter()
            .map(|(g, _)| g.iter().filter(|&&x| x).count() as u64)
            .collect(),
        acked_but_lost: outs
            .iter()
            .map(|(g, _)| acked.iter().zip(g).filter(|(&a, &r)| a && !r).count() as u64)
            .collect(),
        subscriber_errors: sub_errors,
        subscriber_reconnects: outs.iter().map(|(_, r)| *r).collect(),
    })
}

// ---------------------------------------------------------------- driver

pub fn run(cfg: &EnginesConfig) -> anyhow::Result<EnginesOutput> {
    let mut skipped = Vec::new();
    let mut running = Vec::new();
    for &e in &cfg.engines {
        if !which(e.exe()) {
            let msg = format!(
                "{}: no {} on PATH (apt-get install {}, or ./x bench-deps); skipped",
                e.name(),
                e.exe(),
                e.exe()
            );
            eprintln!("{msg}");
            skipped.push(msg);
            continue;
        }
        running.push((
            e,
            launch(e).with_context(|| format!("starting {}", e.name()))?,
        ));
    }
    let mut results: Vec<EngineResult> = running
        .iter()
        .map(|(e, _)| EngineResult {
            engine: *e,
            version: version(*e),
            fanout: Vec::new(),
            median_deliveries_per_sec: 0.0,
            median_p50_us: 0.0,
            median_p99_us: 0.0,
            median_engine_cpu_us_per_delivery: 0.0,
            median_client_cpu_us_per_delivery: 0.0,
            same_total_order_every_round: true,
            fifo_every_round: true,
            claims: None,
            restart: None,
        })
        .collect();
    // Fan-out rounds interleaved across engines (the machine is shared).
    for round_no in 0..cfg.rounds {
        for (i, (e, r)) in running.iter().enumerate() {
            let f = fanout(cfg, *e, r)?;
            eprintln!(
                "round {}: {:<5} {:>9.0} deliveries/s p50 {:>7} us p99 {:>7} us, same order: {}, fifo violations {}, missing {}",
                round_no + 1,
                e.name(),
                f.deliveries_per_sec,
                f.p50_us,
                f.p99_us,
                f.same_total_order,
                f.fifo_violations,
                f.missing
            );
            results[i].fanout.push(f);
        }
    }
    for (i, (e, r)) in running.iter_mut().enumerate() {
        if cfg.claims > 0 {
            results[i].claims = Some(claims(cfg, *e, r)?);
        }
        if cfg.restart {
            results[i].restart = Some(restart(cfg, *e, r)?);
        }
    }
    for res in &mut results {
        let med = |f: fn(&FanoutRun) -> f64| {
            median(&res.fanout.iter().map(f).collect::<Vec<_>>()).unwrap_or(0.0)
        };
        res.median_deliveries_per_sec = med(|f| f.deliveries_per_sec);
        res.median_p50_us = med(|f| f.p50_us);
        res.median_p99_us = med(|f| f.p99_us);
        res.median_engine_cpu_us_per_delivery = med(|f| f.engine_cpu_us_per_delivery);
        res.median_client_cpu_us_per_delivery = med(|f| f.client_cpu_us_per_delivery);
        res.same_total_order_every_round = res.fanout.iter().all(|f| f.same_total_order);
        res.fifo_every_round = res.fanout.iter().all(|f| f.fifo_violations == 0);
    }
    drop(running);
    Ok(EnginesOutput {
        config: cfg.clone(),
        results,
        skipped,
        machine: MachineInfo::announce(),
    })
}

/// The table printed after a run.
pub fn render(out: &EnginesOutput) -> String {
    let mut rows = Vec::new();
    for r in &out.results {
        let (claim_rate, claim_cpu, claim_ok) = match &r.claims {
            Some(c) => (
                format!("{:.0}", c.claims_per_sec),
                format!("{:.1}", c.engine_cpu_us_per_claim),
                format!(
                    "{}/{} won, {}/{} lost",
                    c.won_first_pass, c.claims, c.lost_second_pass, c.claims
                ),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        rows.push(vec![
            r.engine.name().to_owned(),
            report::krps(r.median_deliveries_per_sec),
            format!("{:.0}", r.median_p50_us),
            format!("{:.0}", r.median_p99_us),
            format!("{:.2}", r.median_engine_cpu_us_per_delivery),
            format!("{:.2}", r.median_client_cpu_us_per_delivery),
            if r.same_total_order_every_round {
                "yes"
            } else {
                "NO"
            }
            .to_owned(),
            if r.fifo_every_round { "yes" } else { "NO" }.to_owned(),
            claim_rate,
            claim_cpu,
            claim_ok,
        ]);
    }
    let mut s = report::table(
        &[
            "engine",
            "deliv/s",
            "p50 us",
            "p99 us",
            "engine us/deliv",
            "client us/deliv",
            "same order",
            "fifo",
            "claims/s",
            "engine us/claim",
            "claim check",
        ],
        &rows,
    );
    for r in &out.results {
        if let Some(x) = &r.restart {
            s.push_str(&format!(
                "restart {}: {} paced publishes, {} acked, {} failed (outage {} ms{}); received {:?}, acked but lost {:?}, subscriber reconnects {:?}\n  publisher saw: {}\n  subscribers saw: {}\n",
                r.engine.name(),
                x.attempted,
                x.acked,
                x.publish_failures,
                x.publisher_outage_ms,
                x.receivers_reported
                    .map(|n| format!(", receivers reported {n}"))
                    .unwrap_or_default(),
                x.received,
                x.acked_but_lost,
                x.subscriber_reconnects,
                x.publisher_errors.join(" | "),
                x.subscriber_errors.join(" | "),
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let p = payload(100, 2, 12345, 987654321);
        assert_eq!(p.len(), 100);
        assert_eq!(parse_payload(&p), Some((2, 12345, 987654321)));
    }

    #[test]
    fn resp_parses_a_message() {
        let mut buf = Vec::new();
        resp_cmd(&mut buf, &[b"message", b"chan", b"hello"]);
        let mut r = io::Cursor::new(buf);
        match read_resp(&mut r).unwrap() {
            Resp::Array(Some(v)) => assert!(matches!(&v[2], Resp::Bulk(Some(p)) if p == b"hello")),
            other => panic!("{other:?}"),
        }
    }
}
