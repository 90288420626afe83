//! `engines`: Redis 7 and NATS as the message engine between shardline-chat nodes
//! (issue 16), measured with loads shaped like the cluster's traffic.
//!
//! - fan-out, per [`Variant`] (Redis pub/sub, Redis Streams, XADD + PUBLISH in
//!   one Lua script, NATS core, NATS JetStream): P publishers (one per node)
//!   each publish M messages to ONE channel/subject/stream in batches of B (a
//!   shard flushing once per loop turn: the batch is written in one `write`,
//!   then its acknowledgements are read: Redis's B replies, NATS's PONG to one
//!   PING after the batch, JetStream's B pub-acks); S subscribers (one per
//!   node) receive them. Deliveries/s, publish→receive latency, engine CPU per
//!   delivery (schedstat; utime+stime from /proc/PID/stat beside it), the
//!   harness's own CPU per delivery.
//! - ordering: whether every subscriber saw the same total order of all P×M
//!   messages (a hash of the whole sequence), and per-publisher FIFO.
//! - claims: N atomic claims of distinct keys one round trip each, N more B per
//!   write (Redis `SET k v NX PX 30000`; NATS JetStream KV create = publish with
//!   `Nats-Expected-Last-Subject-Sequence: 0` to a memory-stored KV stream),
//!   then all 2N again, which must all lose.
//! - restart: one publisher paced at 1 message/ms, S subscribers; the engine is
//!   SIGKILLed mid-stream and started again on the same port; what each side saw.
//!
//! Both protocols are written by hand here (RESP2 and the NATS text protocol;
//! blocking `TcpStream`, a thread per client): the harness needs a handful of
//! commands and no crate was added.

use std::{
    collections::{hash_map::DefaultHasher, VecDeque},
    hash::Hasher,
    io::{self, BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    ops::Range,
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

/// An engine process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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

/// How the fan-out goes through an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// Redis pub/sub: PUBLISH / SUBSCRIBE on one channel.
    Redis,
    /// Redis Streams: XADD to one stream, each subscriber XREAD BLOCK from 0.
    RedisStreams,
    /// Redis, both: one Lua script (EVALSHA) does XADD to the channel's stream
    /// and PUBLISH to its channel, so the replay order is the live order;
    /// subscribers use pub/sub.
    RedisLua,
    /// NATS core: PUB / SUB on one subject.
    Nats,
    /// NATS JetStream: acknowledged publishes to a memory stream, one push
    /// consumer (deliver all, no acks) per subscriber.
    NatsJs,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Redis => "redis",
            Variant::RedisStreams => "redis-streams",
            Variant::RedisLua => "redis-lua",
            Variant::Nats => "nats",
            Variant::NatsJs => "nats-js",
        }
    }
    pub fn engine(self) -> Engine {
        match self {
            Variant::Redis | Variant::RedisStreams | Variant::RedisLua => Engine::Redis,
            Variant::Nats | Variant::NatsJs => Engine::Nats,
        }
    }
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct EnginesConfig {
    pub variants: Vec<Variant>,
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
    /// Engine on-CPU time per delivery, from schedstat (utime+stime if absent).
    pub engine_cpu_us_per_delivery: f64,
    pub engine_cpu_us_per_publish: f64,
    /// The same from utime+stime in /proc/PID/stat (10 ms ticks).
    pub engine_cpu_us_per_delivery_stat: f64,
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
    /// Fresh keys claimed: N one round trip each, then N pipelined.
    pub claims: u64,
    /// Of those, claims won (all should be).
    pub won: u64,
    /// The same keys claimed again, pipelined: claims lost (all should be).
    pub lost_again: u64,
    /// Pass 1 (one round trip each): duration, rate, latency, engine CPU.
    pub secs: f64,
    pub claims_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub engine_cpu_us_per_claim: f64,
    /// The second pass: N more keys, `batch` claims per write.
    pub pipeline_batch: u64,
    pub pipelined_claims_per_sec: f64,
    pub pipelined_engine_cpu_us_per_claim: f64,
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
    pub variant: Variant,
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
    /// Redis: `CONFIG GET client-output-buffer-limit` (what disconnects a slow
    /// subscriber).
    pub output_buffer_limits: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnginesOutput {
    pub config: EnginesConfig,
    pub results: Vec<EngineResult>,
    pub skipped: Vec<String>,
    pub machine: MachineInfo,
}

// ---------------------------------------------------------------- engines

pub(crate) struct Running {
    pub(crate) proc: ServerProc,
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
    if std::env::var_os("ENGINES_LOG").is_some() {
        cmd.stderr(Stdio::inherit());
    } else {
        cmd.stderr(Stdio::null());
    }
    ServerProc::spawn(
        engine.name(),
        cmd,
        ([127, 0, 0, 1], port).into(),
        Ready::Connect,
        None,
    )
}

pub(crate) fn launch(engine: Engine) -> anyhow::Result<Running> {
    let port = servers::free_port()?;
    let dir = std::env::temp_dir().join(format!(
        "shardline-bench-{}-{}-{port}",
        engine.name(),
        std::process::id()
    ));
    let proc = start_engine(engine, port, &dir)?;
    Ok(Running { proc, port, dir })
}

pub(crate) fn version(engine: Engine) -> String {
    let out = Command::new(engine.exe()).arg("--version").output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        Err(e) => format!("unknown ({e})"),
    }
}

pub(crate) fn which(exe: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(exe).is_file()))
        .unwrap_or(false)
}

// ---------------------------------------------------------------- RESP

#[derive(Debug)]
pub(crate) enum Resp {
    Simple(String),
    #[allow(dead_code)] // shown through Debug in error messages
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

pub(crate) fn resp_cmd(out: &mut Vec<u8>, args: &[&[u8]]) {
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

pub(crate) fn read_resp(r: &mut impl BufRead) -> io::Result<Resp> {
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
pub(crate) struct Conn {
    pub(crate) r: BufReader<TcpStream>,
    w: TcpStream,
    pub(crate) out: Vec<u8>,
    line: Vec<u8>,
}

impl Conn {
    pub(crate) fn open(addr: SocketAddr) -> io::Result<Conn> {
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
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.w.write_all(&self.out)?;
        self.out.clear();
        Ok(())
    }
    pub(crate) fn set_timeout(&self, d: Duration) -> io::Result<()> {
        self.r.get_ref().set_read_timeout(Some(d))
    }
}

/// Where a variant's messages go: the Redis channel or stream key, the NATS
/// subject (and JetStream stream name).
#[derive(Debug, Clone)]
struct Target {
    subject: String,
    stream: String,
}

impl Target {
    fn core() -> Target {
        Target {
            subject: CHANNEL.to_owned(),
            stream: String::new(),
        }
    }
}

/// A publishing client of any variant.
struct Publisher {
    kind: Variant,
    c: Conn,
    target: Target,
    /// JetStream: this publisher's own ack inbox prefix.
    inbox: String,
    /// Redis Lua: the SHA1 of [`XADD_PUBLISH`].
    sha: Vec<u8>,
}

/// KEYS[1] = the stream, ARGV[1] = the channel, ARGV[2] = the message.
const XADD_PUBLISH: &str = "redis.call('XADD', KEYS[1], '*', 'd', ARGV[2]) \
                            return redis.call('PUBLISH', ARGV[1], ARGV[2])";

impl Publisher {
    fn connect(kind: Variant, addr: SocketAddr, target: &Target) -> io::Result<Publisher> {
        let mut c = Conn::open(addr)?;
        if kind.engine() == Engine::Nats {
            nats_handshake(&mut c)?;
        }
        let inbox = format!("_INBOX.ack.{}", UNIQUE.fetch_add(1, Ordering::Relaxed));
        if kind == Variant::NatsJs {
            c.out
                .extend_from_slice(format!("SUB {inbox}.* 1\r\nPING\r\n").as_bytes());
            c.flush()?;
            nats_wait_pong(&mut c)?;
        }
        let mut sha = Vec::new();
        if kind == Variant::RedisLua {
            resp_cmd(&mut c.out, &[b"SCRIPT", b"LOAD", XADD_PUBLISH.as_bytes()]);
            c.flush()?;
            match read_resp(&mut c.r)? {
                Resp::Bulk(Some(b)) => sha = b,
                other => return Err(bad(format!("SCRIPT LOAD replied {other:?}"))),
            }
        }
        Ok(Publisher {
            kind,
            c,
            target: target.clone(),
            inbox,
            sha,
        })
    }

    /// Publishes a batch in one write and waits for its acknowledgement. Returns
    /// the receivers Redis pub/sub reported (0 otherwise).
    fn publish(&mut self, msgs: &[Vec<u8>]) -> io::Result<u64> {
        let subject = self.target.subject.as_bytes();
        match self.kind {
            Variant::Redis | Variant::RedisStreams | Variant::RedisLua => {
                let stream = self.target.stream.as_bytes();
                for m in msgs {
                    match self.kind {
                        Variant::Redis => resp_cmd(&mut self.c.out, &[b"PUBLISH", subject, m]),
                        Variant::RedisStreams => {
                            resp_cmd(&mut self.c.out, &[b"XADD", subject, b"*", b"d", m])
                        }
                        _ => resp_cmd(
                            &mut self.c.out,
                            &[b"EVALSHA", &self.sha, b"1", stream, subject, m],
                        ),
                    }
                }
                self.c.flush()?;
                let mut receivers = 0;
                for _ in msgs {
                    match read_resp(&mut self.c.r)? {
                        Resp::Int(n) => receivers += n as u64,
                        Resp::Bulk(Some(_)) => {}
                        other => return Err(bad(format!("publish replied {other:?}"))),
                    }
                }
                Ok(receivers)
            }
            Variant::Nats => {
                for m in msgs {
                    let s = &self.target.subject;
                    self.c
                        .out
                        .extend_from_slice(format!("PUB {s} {}\r\n", m.len()).as_bytes());
                    self.c.out.extend_from_slice(m);
                    self.c.out.extend_from_slice(b"\r\n");
                }
                self.c.out.extend_from_slice(b"PING\r\n");
                self.c.flush()?;
                nats_wait_pong(&mut self.c)?;
                Ok(0)
            }
            Variant::NatsJs => {
                for (k, m) in msgs.iter().enumerate() {
                    let s = &self.target.subject;
                    self.c.out.extend_from_slice(
                        format!("PUB {s} {}.{k} {}\r\n", self.inbox, m.len()).as_bytes(),
                    );
                    self.c.out.extend_from_slice(m);
                    self.c.out.extend_from_slice(b"\r\n");
                }
                self.c.flush()?;
                for _ in msgs {
                    let (_, ack) = nats_next_msg(&mut self.c)?;
                    let has = |k: &[u8]| ack.windows(k.len()).any(|w| w == k);
                    if has(b"\"error\"") || !has(b"\"seq\"") {
                        return Err(bad(String::from_utf8_lossy(&ack).into_owned()));
                    }
                }
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

/// Reads NATS protocol lines until a MSG/HMSG; returns its subject and payload
/// (headers included for HMSG). Answers server PINGs.
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

/// One NATS request (a JetStream API call) on a connection of its own.
fn nats_request(addr: SocketAddr, subject: &str, body: &str) -> anyhow::Result<String> {
    let mut c = Conn::open(addr)?;
    nats_handshake(&mut c)?;
    c.out.extend_from_slice(
        format!(
            "SUB _INBOX.req 1\r\nPUB {subject} _INBOX.req {}\r\n{body}\r\n",
            body.len()
        )
        .as_bytes(),
    );
    c.flush()?;
    let (_, reply) = nats_next_msg(&mut c)?;
    let text = String::from_utf8_lossy(&reply).into_owned();
    if text.contains("\"error\"") {
        bail!("{subject}: {text}");
    }
    Ok(text)
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

/// A subscribing client of any variant.
struct Subscriber {
    kind: Variant,
    c: Conn,
    target: Target,
    /// Redis Streams: entries read but not yet returned, and the last id read.
    pending: VecDeque<Vec<u8>>,
    last_id: String,
    block_ms: u64,
}

impl Subscriber {
    fn connect(kind: Variant, addr: SocketAddr, target: &Target) -> io::Result<Subscriber> {
        let mut c = Conn::open(addr)?;
        let subject = target.subject.as_bytes();
        match kind {
            Variant::Redis | Variant::RedisLua => {
                resp_cmd(&mut c.out, &[b"SUBSCRIBE", subject]);
                c.flush()?;
                match read_resp(&mut c.r)? {
                    Resp::Array(Some(v)) if v.len() == 3 => {}
                    other => return Err(bad(format!("SUBSCRIBE replied {other:?}"))),
                }
            }
            Variant::RedisStreams => {}
            Variant::Nats => {
                nats_handshake(&mut c)?;
                c.out
                    .extend_from_slice(format!("SUB {} 1\r\nPING\r\n", target.subject).as_bytes());
                c.flush()?;
                nats_wait_pong(&mut c)?;
            }
            Variant::NatsJs => {
                // An ephemeral push consumer from the stream's start, no acks:
                // what an ordered consumer does, without its gap-reset logic.
                nats_handshake(&mut c)?;
                let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
                let deliver = format!("_INBOX.deliver.{n}");
                let config = serde_json::json!({
                    "stream_name": target.stream,
                    "config": {
                        "deliver_subject": deliver, "deliver_policy": "all",
                        "ack_policy": "none", "replay_policy": "instant",
                        "mem_storage": true, "max_deliver": -1
                    }
                })
                .to_string();
                c.out.extend_from_slice(
                    format!(
                        "SUB {deliver} 1\r\nSUB _INBOX.cc.{n} 2\r\nPUB $JS.API.CONSUMER.CREATE.{} _INBOX.cc.{n} {}\r\n{config}\r\n",
                        target.stream,
                        config.len()
                    )
                    .as_bytes(),
                );
                c.flush()?;
                let (_, reply) = nats_next_msg(&mut c)?;
                if reply.windows(7).any(|w| w == b"\"error\"") {
                    return Err(bad(String::from_utf8_lossy(&reply).into_owned()));
                }
            }
        }
        Ok(Subscriber {
            kind,
            c,
            target: target.clone(),
            pending: VecDeque::new(),
            last_id: "0-0".to_owned(),
            block_ms: 1000,
        })
    }

    /// How long `next` waits before a timeout error.
    fn set_timeout(&mut self, d: Duration) -> io::Result<()> {
        if self.kind == Variant::RedisStreams {
            // XREAD BLOCK does the waiting; the socket only guards a dead engine.
            self.block_ms = d.as_millis().max(1) as u64;
            self.c.set_timeout(d + Duration::from_secs(5))
        } else {
            self.c.set_timeout(d)
        }
    }

    /// The next message's payload.
    fn next(&mut self) -> io::Result<Vec<u8>> {
        match self.kind {
            Variant::Redis | Variant::RedisLua => match read_resp(&mut self.c.r)? {
                Resp::Array(Some(mut v)) if v.len() == 3 => match v.pop() {
                    Some(Resp::Bulk(Some(p))) => Ok(p),
                    other => Err(bad(format!("message payload {other:?}"))),
                },
                other => Err(bad(format!("unexpected {other:?}"))),
            },
            Variant::RedisStreams => {
                if let Some(p) = self.pending.pop_front() {
                    return Ok(p);
                }
                let block = self.block_ms.to_string();
                resp_cmd(
                    &mut self.c.out,
                    &[
                        b"XREAD",
                        b"COUNT",
                        b"1000",
                        b"BLOCK",
                        block.as_bytes(),
                        b"STREAMS",
                        self.target.subject.as_bytes(),
                        self.last_id.as_bytes(),
                    ],
                );
                self.c.flush()?;
                let entries = match read_resp(&mut self.c.r)? {
                    Resp::Array(None) | Resp::Bulk(None) => {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "XREAD timed out"))
                    }
                    Resp::Array(Some(mut streams)) => match streams.pop() {
                        Some(Resp::Array(Some(mut kv))) if kv.len() == 2 => match kv.pop() {
                            Some(Resp::Array(Some(entries))) => entries,
                            other => return Err(bad(format!("XREAD entries {other:?}"))),
                        },
                        other => return Err(bad(format!("XREAD stream {other:?}"))),
                    },
                    other => return Err(bad(format!("XREAD replied {other:?}"))),
                };
                for e in entries {
                    let Resp::Array(Some(mut e)) = e else {
                        return Err(bad("XREAD entry"));
                    };
                    let fields = e.pop();
                    if let Some(Resp::Bulk(Some(id))) = e.pop() {
                        self.last_id = String::from_utf8_lossy(&id).into_owned();
                    }
                    if let Some(Resp::Array(Some(mut f))) = fields {
                        if let Some(Resp::Bulk(Some(p))) = f.pop() {
                            self.pending.push_back(p);
                        }
                    }
                }
                self.pending
                    .pop_front()
                    .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "XREAD empty"))
            }
            Variant::Nats | Variant::NatsJs => Ok(nats_next_msg(&mut self.c)?.1),
        }
    }
}

// ---------------------------------------------------------------- payloads

pub(crate) fn payload(size: usize, publisher: usize, seq: usize, t_ns: u64) -> Vec<u8> {
    let mut v = format!("{publisher:03} {seq:09} {t_ns:015} ").into_bytes();
    v.resize(size.max(v.len()), b'.');
    v
}

/// (publisher, seq, send time ns) of a payload.
pub(crate) fn parse_payload(p: &[u8]) -> Option<(usize, usize, u64)> {
    let s = std::str::from_utf8(p.get(..30)?).ok()?;
    let mut f = s.split(' ');
    Some((
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
    ))
}

/// On-CPU time of every live thread of `pid` in nanoseconds (the first field of
/// /proc/PID/task/TID/schedstat): the same quantity as utime+stime, without
/// their 10 ms clock-tick granularity. None if schedstat is unavailable.
pub(crate) fn sched_cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = t.ok()?.path().join("schedstat");
        let text = std::fs::read_to_string(path).ok()?;
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

pub(crate) fn self_cpu() -> Duration {
    proc_cpu_time(std::process::id()).unwrap_or_default()
}

pub(crate) fn is_timeout(e: &io::Error) -> bool {
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

fn fanout(
    cfg: &EnginesConfig,
    variant: Variant,
    run: &Running,
    round_no: usize,
) -> anyhow::Result<FanoutRun> {
    let addr = run.proc.addr;
    let pid = std::process::id();
    let target = match variant {
        Variant::Redis | Variant::Nats => Target::core(),
        Variant::RedisStreams => Target {
            subject: format!("shardline.cluster.stream.{pid}.{round_no}"),
            stream: String::new(),
        },
        Variant::RedisLua => Target {
            subject: CHANNEL.to_owned(),
            stream: format!("shardline.cluster.history.{pid}.{round_no}"),
        },
        Variant::NatsJs => Target {
            subject: format!("shardline.js.{pid}.{round_no}"),
            stream: format!("CHAT_{pid}_{round_no}"),
        },
    };
    if variant == Variant::NatsJs {
        let config = serde_json::json!({
            "name": target.stream, "subjects": [target.subject], "storage": "memory",
            "retention": "limits", "discard": "old", "num_replicas": 1
        })
        .to_string();
        nats_request(
            addr,
            &format!("$JS.API.STREAM.CREATE.{}", target.stream),
            &config,
        )?;
    }
    let result = fanout_on(cfg, variant, run, &target);
    match variant {
        Variant::NatsJs => {
            if std::env::var_os("ENGINES_LOG").is_some() {
                let info =
                    nats_request(addr, &format!("$JS.API.STREAM.INFO.{}", target.stream), "")?;
                eprintln!("stream info: {info}");
            }
            nats_request(
                addr,
                &format!("$JS.API.STREAM.DELETE.{}", target.stream),
                "",
            )?;
        }
        Variant::RedisStreams | Variant::RedisLua => {
            let key = if variant == Variant::RedisLua {
                &target.stream
            } else {
                &target.subject
            };
            let mut c = Conn::open(addr)?;
            resp_cmd(&mut c.out, &[b"DEL", key.as_bytes()]);
            c.flush()?;
            read_resp(&mut c.r)?;
        }
        _ => {}
    }
    result
}

fn fanout_on(
    cfg: &EnginesConfig,
    variant: Variant,
    run: &Running,
    target: &Target,
) -> anyhow::Result<FanoutRun> {
    let addr = run.proc.addr;
    let expected_per_sub = (cfg.publishers * cfg.messages) as u64;
    let mut subs = Vec::new();
    for _ in 0..cfg.subscribers {
        subs.push(Subscriber::connect(variant, addr, target).context("subscribing")?);
    }
    let mut pubs = Vec::new();
    for _ in 0..cfg.publishers {
        pubs.push(Publisher::connect(variant, addr, target).context("connecting a publisher")?);
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
                let _ = s.set_timeout(Duration::from_millis(200));
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
    let sched0 = sched_cpu_ns(run.proc.pid);
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
    let sched1 = sched_cpu_ns(run.proc.pid);
    let self1 = self_cpu();
    if !pub_errors.is_empty() {
        bail!(
            "{} publishers failed: {}",
            variant.name(),
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
    let stat_us = (cpu1 - cpu0).as_secs_f64() * 1e6;
    let engine_us = match (sched0, sched1) {
        (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 1e3,
        _ => stat_us,
    };
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
        engine_cpu_us_per_delivery_stat: round(stat_us / deliveries.max(1) as f64, 4),
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

/// Claims of key numbers `keys`, written at once, replies read: how many won.
type ClaimFn = Box<dyn FnMut(&mut Conn, Range<usize>) -> anyhow::Result<u64>>;

fn claims(cfg: &EnginesConfig, engine: Engine, run: &Running) -> anyhow::Result<ClaimResult> {
    let addr = run.proc.addr;
    let mut c = Conn::open(addr)?;
    let n = cfg.claims;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let tag = std::process::id();
    let what;
    // Claims of a range of keys: how many won.
    let mut claim: ClaimFn = match engine {
        Engine::Redis => {
            what = "SET claim:K owner NX PX 30000".to_owned();
            Box::new(move |c: &mut Conn, keys: Range<usize>| {
                for i in keys.clone() {
                    let key = format!("claim:{tag}:{i}");
                    resp_cmd(
                        &mut c.out,
                        &[b"SET", key.as_bytes(), b"node-1", b"NX", b"PX", b"30000"],
                    );
                }
                c.flush()?;
                let mut won = 0;
                for _ in keys {
                    won += match read_resp(&mut c.r)? {
                        Resp::Simple(s) if s == "OK" => 1,
                        Resp::Bulk(None) => 0,
                        other => bail!("SET NX replied {other:?}"),
                    };
                }
                Ok(won)
            })
        }
        Engine::Nats => {
            what = "JetStream KV create: HPUB $KV.claims.K with Nats-Expected-Last-Subject-Sequence: 0, \
                    memory stream, max 1 per subject"
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
            Box::new(move |c: &mut Conn, keys: Range<usize>| {
                let hdr = "NATS/1.0\r\nNats-Expected-Last-Subject-Sequence: 0\r\n\r\n";
                let body = "node-1";
                for i in keys.clone() {
                    c.out.extend_from_slice(
                        format!(
                            "HPUB $KV.claims.k{tag}_{i} _INBOX.claims.r {} {}\r\n{hdr}{body}\r\n",
                            hdr.len(),
                            hdr.len() + body.len()
                        )
                        .as_bytes(),
                    );
                }
                c.flush()?;
                let mut won = 0;
                for _ in keys {
                    let (_, reply) = nats_next_msg(c)?;
                    let text = String::from_utf8_lossy(&reply);
                    if text.contains("\"seq\"") && !text.contains("\"error\"") {
                        won += 1;
                    } else if !text.contains("wrong last sequence") {
                        bail!("KV create replied {text}")
                    }
                }
                Ok(won)
            })
        }
    };
    let pid = run.proc.pid;
    let engine_cpu = move || -> anyhow::Result<f64> {
        Ok(match sched_cpu_ns(pid) {
            Some(ns) => ns as f64 / 1e3,
            None => proc_cpu_time(pid)?.as_secs_f64() * 1e6,
        })
    };
    // Pass 1: keys 0..n, one round trip each.
    let cpu0 = engine_cpu()?;
    let start = Instant::now();
    let mut won = 0;
    for i in 0..n {
        let t = Instant::now();
        won += claim(&mut c, i..i + 1)?;
        hist.saturating_record(t.elapsed().as_micros() as u64);
    }
    let secs = start.elapsed().as_secs_f64();
    let engine_us = engine_cpu()? - cpu0;
    // Pass 2: keys n..2n, `batch` per write (a shard with many claims pending).
    let batch = cfg.batch.max(1);
    let cpu0 = engine_cpu()?;
    let start = Instant::now();
    for lo in (n..2 * n).step_by(batch) {
        won += claim(&mut c, lo..(lo + batch).min(2 * n))?;
    }
    let pipelined_secs = start.elapsed().as_secs_f64();
    let pipelined_us = engine_cpu()? - cpu0;
    // Pass 3: every key again; all must lose.
    let mut lost = 0;
    for lo in (0..2 * n).step_by(batch) {
        let hi = (lo + batch).min(2 * n);
        lost += (hi - lo) as u64 - claim(&mut c, lo..hi)?;
    }
    Ok(ClaimResult {
        what,
        claims: 2 * n as u64,
        won,
        lost_again: lost,
        secs: round(secs, 4),
        claims_per_sec: round(n as f64 / secs.max(1e-9), 0),
        p50_us: hist.value_at_quantile(0.5) as f64,
        p99_us: hist.value_at_quantile(0.99) as f64,
        engine_cpu_us_per_claim: round(engine_us / n.max(1) as f64, 3),
        pipeline_batch: batch as u64,
        pipelined_claims_per_sec: round(n as f64 / pipelined_secs.max(1e-9), 0),
        pipelined_engine_cpu_us_per_claim: round(pipelined_us / n.max(1) as f64, 3),
    })
}

// ---------------------------------------------------------------- restart

fn restart(
    cfg: &EnginesConfig,
    variant: Variant,
    run: &mut Running,
) -> anyhow::Result<RestartResult> {
    let engine = variant.engine();
    let addr = run.proc.addr;
    let total = cfg.restart_messages;
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let subs: Vec<_> = (0..cfg.subscribers)
        .map(|_| {
            let (stop, errors) = (stop.clone(), errors.clone());
            let mut s = Subscriber::connect(variant, addr, &Target::core());
            std::thread::spawn(move || {
                let mut got = vec![false; total];
                let mut reconnects = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let sub = match &mut s {
                        Ok(sub) => sub,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(20));
                            s = Subscriber::connect(variant, addr, &Target::core());
                            if s.is_ok() {
                                reconnects += 1;
                            }
                            continue;
                        }
                    };
                    let _ = sub.set_timeout(Duration::from_millis(100));
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
            let mut p = Publisher::connect(variant, addr, &Target::core());
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
                    p = Publisher::connect(variant, addr, &Target::core());
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
    let mut skipped: Vec<String> = Vec::new();
    let mut running: Vec<(Engine, Running)> = Vec::new();
    for &v in &cfg.variants {
        let e = v.engine();
        if running.iter().any(|(r, _)| *r == e) || skipped.iter().any(|s| s.starts_with(e.name())) {
            continue;
        }
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
    let variants: Vec<Variant> = cfg
        .variants
        .iter()
        .copied()
        .filter(|v| running.iter().any(|(e, _)| *e == v.engine()))
        .collect();
    let slot = |running: &[(Engine, Running)], e: Engine| {
        running.iter().position(|(r, _)| *r == e).expect("running")
    };
    let mut results: Vec<EngineResult> = variants
        .iter()
        .map(|&v| EngineResult {
            variant: v,
            engine: v.engine(),
            version: version(v.engine()),
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
            output_buffer_limits: if v.engine() == Engine::Redis {
                let addr = running[slot(&running, Engine::Redis)].1.proc.addr;
                redis_config(addr, "client-output-buffer-limit")
            } else {
                None
            },
        })
        .collect();
    // Fan-out rounds interleaved across variants (the machine is shared).
    for round_no in 0..cfg.rounds {
        for (i, &v) in variants.iter().enumerate() {
            let f = fanout(cfg, v, &running[slot(&running, v.engine())].1, round_no)
                .with_context(|| format!("{} fan-out", v.name()))?;
            eprintln!(
                "round {}: {:<13} {:>9.0} deliveries/s p50 {:>7} us p99 {:>7} us, same order: {}, fifo violations {}, missing {}",
                round_no + 1,
                v.name(),
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
    for (i, &v) in variants.iter().enumerate() {
        if !matches!(v, Variant::Redis | Variant::Nats) {
            continue;
        }
        let k = slot(&running, v.engine());
        if cfg.claims > 0 {
            results[i].claims = Some(claims(cfg, v.engine(), &running[k].1)?);
        }
        if cfg.restart {
            results[i].restart = Some(restart(cfg, v, &mut running[k].1)?);
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

/// `CONFIG GET name` of a Redis, as `name value`.
fn redis_config(addr: SocketAddr, name: &str) -> Option<String> {
    let mut c = Conn::open(addr).ok()?;
    resp_cmd(&mut c.out, &[b"CONFIG", b"GET", name.as_bytes()]);
    c.flush().ok()?;
    match read_resp(&mut c.r).ok()? {
        Resp::Array(Some(v)) => Some(
            v.iter()
                .filter_map(|x| match x {
                    Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    }
}

/// The table printed after a run.
pub fn render(out: &EnginesOutput) -> String {
    let mut rows = Vec::new();
    for r in &out.results {
        let (claim_rate, claim_cpu, claim_pipe, claim_ok) = match &r.claims {
            Some(c) => (
                format!("{:.0}", c.claims_per_sec),
                format!("{:.1}", c.engine_cpu_us_per_claim),
                format!("{:.1}", c.pipelined_engine_cpu_us_per_claim),
                format!(
                    "{}/{} won, {}/{} lost",
                    c.won, c.claims, c.lost_again, c.claims
                ),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        rows.push(vec![
            r.variant.name().to_owned(),
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
            claim_pipe,
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
            "pipelined",
            "claim check",
        ],
        &rows,
    );
    for r in &out.results {
        if let Some(x) = &r.restart {
            s.push_str(&format!(
                "restart {}: {} paced publishes, {} acked, {} failed (outage {} ms{}); received {:?}, acked but lost {:?}, subscriber reconnects {:?}\n  publisher saw: {}\n  subscribers saw: {}\n",
                r.variant.name(),
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
