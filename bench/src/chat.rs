//! `chat`: IRC fan-out load against shardline-chat (io_uring and epoll) and ngircd,
//! interleaved A B C … A B C over rounds, medians quoted.
//!
//! C = R·S clients join R rooms of S members. The first few members of each room
//! are senders; every other member only listens. Each client registers (`NICK`,
//! `USER`, waits for 001), joins its room (waits for 366), and once every client
//! has joined, each sends a `PING` and waits for its `PONG` (a barrier: on
//! shardline-chat the PONG comes after every earlier effect, on every shard). Then
//! the measured window opens and the senders send `PRIVMSG #room :SID SEQ TS xxx…`:
//! SID the sender's client index, SEQ its own sequence number from 0, TS the
//! harness's monotonic clock in ns (one clock for the whole single-process harness).
//!
//! - **burst**: every sender writes its `messages` as fast as the server takes them
//!   (the socket says when it is full); TS is when the line was written.
//! - **paced**: every sender sends `rate` messages per second for `duration`, open
//!   loop: message *k* is due at `start + (k + j/N)/rate` (senders staggered), and
//!   TS is the due time, so a stall (server or client) shows up in every message
//!   that should have left during it.
//!
//! The window closes when every live member has received every message written by
//! the other senders of its room (or on a timeout or a stall). Each member records
//! the order it saw; afterwards every member of a room must have seen every message
//! and all must agree on one order (see [`check_room`]).
//!
//! The client is one thread: edge-triggered mio, one 256 KiB read buffer shared by
//! every connection (only an incomplete last line is kept per connection), lines
//! parsed by hand, and a timerfd for paced sends (epoll timeouts only have
//! millisecond resolution).

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    io::{self, Read, Write},
    net::SocketAddr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use mio::{net::TcpStream, unix::SourceFd, Events, Interest, Poll, Token};
use serde::Serialize;
use shardline::Io;

use crate::{
    client::{Latency, Window},
    experiment::{self, median_of, median_of_some, Probe, Quiet, WindowMarks},
    machine::{self, MachineInfo},
    report::{self, round},
    servers::{self, ServerProc},
};

/// The reference server for the ratio columns.
pub const REFERENCE: &str = "ngircd";

/// The servers `chat` knows, in run order.
pub const SERVERS: [&str; 3] = ["shardline-uring", "shardline-epoll", "ngircd"];

/// Most messages one sender may send (sequence numbers are packed in 24 bits).
pub const MAX_MESSAGES_PER_SENDER: u64 = 1 << 24;

/// Most senders per room (sender indexes are packed in 8 bits).
pub const MAX_SENDERS: usize = 255;

/// Clients between connect and 366 at once (ngircd listens with a backlog of 10).
const SETUP_WINDOW: usize = 8;

/// After everything was sent, how long without a delivery counts as a stall.
const STALL: Duration = Duration::from_secs(3);

/// The two load shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// Senders write as fast as the server takes it, a bounded count.
    Burst,
    /// Senders at a fixed rate each, open loop, a bounded duration.
    Paced,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Shape::Burst => "burst",
            Shape::Paced => "paced",
        })
    }
}

/// Room layout and load, the same for every server.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// Rooms (R).
    pub rooms: usize,
    /// Members per room (S), senders included.
    pub room_size: usize,
    /// burst: senders per room.
    pub burst_senders: usize,
    /// burst: messages per sender.
    pub burst_messages: u64,
    /// paced: senders per room.
    pub paced_senders: usize,
    /// paced: messages per second per sender.
    pub paced_rate: f64,
    /// paced: how long the senders send, seconds.
    pub paced_duration_s: f64,
    /// Bytes of message text (the part after `PRIVMSG #room :`).
    pub text_size: usize,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            rooms: 1,
            room_size: 100,
            burst_senders: 1,
            burst_messages: 10_000,
            paced_senders: 10,
            paced_rate: 100.0,
            paced_duration_s: 3.0,
            text_size: 64,
        }
    }
}

impl Scenario {
    /// The load of one shape against `addr`.
    pub fn load(&self, shape: Shape, addr: SocketAddr, timeout: Duration) -> LoadSpec {
        LoadSpec {
            addr,
            rooms: self.rooms,
            room_size: self.room_size,
            senders: match shape {
                Shape::Burst => self.burst_senders,
                Shape::Paced => self.paced_senders,
            },
            text_size: self.text_size,
            pattern: match shape {
                Shape::Burst => Pattern::Burst {
                    messages: self.burst_messages,
                },
                Shape::Paced => Pattern::Paced {
                    rate: self.paced_rate,
                    duration: Duration::from_secs_f64(self.paced_duration_s),
                },
            },
            timeout,
            cpus: Vec::new(),
            tag: next_tag(),
        }
    }
}

/// How senders send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    /// `messages` each, as fast as the server takes them.
    Burst {
        /// Messages per sender.
        messages: u64,
    },
    /// `rate` messages per second each for `duration`.
    Paced {
        /// Messages per second per sender.
        rate: f64,
        /// How long.
        duration: Duration,
    },
}

impl Pattern {
    /// Messages each sender sends.
    pub fn per_sender(&self) -> u64 {
        match *self {
            Pattern::Burst { messages } => messages,
            Pattern::Paced { rate, duration } => (rate * duration.as_secs_f64()).round() as u64,
        }
    }

    fn shape(&self) -> Shape {
        match self {
            Pattern::Burst { .. } => Shape::Burst,
            Pattern::Paced { .. } => Shape::Paced,
        }
    }
}

/// One load run against a running server.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The IRC server.
    pub addr: SocketAddr,
    /// Rooms.
    pub rooms: usize,
    /// Members per room.
    pub room_size: usize,
    /// Senders per room (the room's first members).
    pub senders: usize,
    /// Bytes of message text.
    pub text_size: usize,
    /// Burst or paced.
    pub pattern: Pattern,
    /// How long deliveries may take after the last message was due (burst: after
    /// the window opened).
    pub timeout: Duration,
    /// CPUs the client thread is pinned to (empty: not pinned).
    pub cpus: Vec<usize>,
    /// Prefix of nicks and channel names, unique per run on one server (a letter
    /// first).
    pub tag: String,
}

impl LoadSpec {
    fn validate(&self) -> anyhow::Result<()> {
        if self.rooms == 0 || self.room_size < 2 {
            bail!("need at least one room of at least two members");
        }
        if self.senders == 0 || self.senders >= self.room_size {
            bail!(
                "senders per room must be between 1 and room size - 1 (one member at least only listens); got {} of {}",
                self.senders,
                self.room_size
            );
        }
        if self.senders > MAX_SENDERS {
            bail!("at most {MAX_SENDERS} senders per room");
        }
        let n = self.pattern.per_sender();
        if n == 0 || n >= MAX_MESSAGES_PER_SENDER {
            bail!("messages per sender must be between 1 and {MAX_MESSAGES_PER_SENDER}; got {n}");
        }
        if let Pattern::Paced { rate, .. } = self.pattern {
            if !(rate.is_finite() && rate > 0.0) {
                bail!("the paced rate must be a positive number of messages per second");
            }
        }
        let overhead = format!("PRIVMSG #{}r{} :\r\n", self.tag, self.rooms).len();
        if self.text_size < 40 || self.text_size + overhead > 510 {
            bail!(
                "text size must be 40..={} bytes (room for the numbers, and a 512-byte line)",
                510 - overhead
            );
        }
        Ok(())
    }
}

/// What one load run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    /// burst or paced.
    pub shape: Shape,
    /// Clients (R·S).
    pub clients: usize,
    /// Rooms.
    pub rooms: usize,
    /// Members per room.
    pub room_size: usize,
    /// Senders per room.
    pub senders: usize,
    /// Messages written completely by all senders.
    pub messages_sent: u64,
    /// Messages received by members (each member's copy counts once; duplicates
    /// and a sender's own messages do not count).
    pub deliveries: u64,
    /// Deliveries a complete run makes: each message × the other members of its
    /// room.
    pub expected_deliveries: u64,
    /// From the first send to the end of the window, seconds.
    pub window_s: f64,
    /// deliveries ÷ window_s.
    pub deliveries_per_s: f64,
    /// Delivery latency: arrival at a member − the message's TS (burst: write time;
    /// paced: due time).
    pub latency: Latency,
    /// Every member saw every message once, and all members of a room one order.
    pub complete: bool,
    /// Expected deliveries that never arrived (disconnected members included).
    pub lost: u64,
    /// Messages a member received more than once.
    pub duplicates: u64,
    /// Members whose order disagrees with the rest of their room.
    pub members_out_of_order: usize,
    /// Members the server disconnected (or that failed) during the window.
    pub disconnected: usize,
    /// Lines the client did not expect during the window (error numerics, a
    /// sender's own message, malformed text), first one in `problems`.
    pub unexpected_lines: u64,
    /// The first few problems, in words.
    pub problems: Vec<String>,
    /// Why the window closed: `complete`, `timeout`, `stall`, `all disconnected`.
    pub stop: String,
    /// Seconds from the first connect to the end of the barrier.
    pub setup_s: f64,
    /// The client thread's CPU time over the window ÷ the window, in percent.
    pub client_cpu_pct: f64,
}

static TAGS: AtomicUsize = AtomicUsize::new(0);

/// A fresh nick/channel prefix: `b1`, `b2`, … (nicks `b1n0`, rooms `#b1r0`).
pub fn next_tag() -> String {
    format!("b{}", TAGS.fetch_add(1, Ordering::Relaxed) + 1)
}

/// A message id as members record it: sender index in the room (8 bits), sequence
/// number (24 bits).
pub fn message_id(sender: usize, seq: u64) -> u32 {
    ((sender as u32) << 24) | (seq as u32 & 0x00ff_ffff)
}

fn id_parts(id: u32) -> (usize, u64) {
    ((id >> 24) as usize, u64::from(id & 0x00ff_ffff))
}

/// Writes one message line: `PRIVMSG #chan :SID SEQ TS ` padded with `x` to
/// `text_size` bytes of text, then CR LF.
pub fn write_message(
    out: &mut Vec<u8>,
    chan: &str,
    sid: usize,
    seq: u64,
    ts: u64,
    text_size: usize,
) {
    out.extend_from_slice(b"PRIVMSG ");
    out.extend_from_slice(chan.as_bytes());
    out.extend_from_slice(b" :");
    let start = out.len();
    push_u64(out, sid as u64);
    out.push(b' ');
    push_u64(out, seq);
    out.push(b' ');
    push_u64(out, ts);
    out.push(b' ');
    let used = out.len() - start;
    out.resize(out.len() + text_size.saturating_sub(used), b'x');
    out.extend_from_slice(b"\r\n");
}

fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The numbers at the start of a message text: (sender id, sequence, timestamp).
pub fn parse_text(text: &[u8]) -> Option<(u64, u64, u64)> {
    let mut it = text.split(|&b| b == b' ');
    let mut num = || -> Option<u64> {
        let t = it.next()?;
        if t.is_empty() || t.len() > 19 {
            return None;
        }
        t.iter().try_fold(0u64, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
        })
    };
    Some((num()?, num()?, num()?))
}

/// What a line from the server means to the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// `PRIVMSG target :text`.
    Privmsg {
        /// The channel (or nick).
        target: &'a [u8],
        /// The text after the colon.
        text: &'a [u8],
    },
    /// `PING params` (answer with `PONG params`).
    Ping(&'a [u8]),
    /// A `PONG`.
    Pong,
    /// 001: registered.
    Welcome,
    /// 366: end of NAMES (after a JOIN).
    EndOfNames,
    /// A 4xx/5xx numeric (but 422, no MOTD) or `ERROR`: something was refused.
    Refusal,
    /// Anything else.
    Other,
}

fn split_space(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == b' ') {
        Some(i) => {
            let mut rest = &s[i + 1..];
            while let [b' ', r @ ..] = rest {
                rest = r;
            }
            (&s[..i], rest)
        }
        None => (s, &[]),
    }
}

/// Classifies one line (without its CR LF). Cheap: no allocation, one pass.
pub fn parse_line(line: &[u8]) -> Line<'_> {
    let mut rest = line;
    if rest.first() == Some(&b'@') {
        rest = split_space(rest).1;
    }
    if rest.first() == Some(&b':') {
        rest = split_space(rest).1;
    }
    let (cmd, params) = split_space(rest);
    match cmd {
        b"PRIVMSG" => {
            let (target, text) = split_space(params);
            Line::Privmsg {
                target,
                text: text.strip_prefix(b":").unwrap_or(text),
            }
        }
        b"PING" => Line::Ping(params),
        b"PONG" => Line::Pong,
        b"001" => Line::Welcome,
        b"366" => Line::EndOfNames,
        b"ERROR" => Line::Refusal,
        // 422 (no MOTD) is an ERR_ numeric in name only: every registration may get it.
        b"422" => Line::Other,
        [a, b, c] if (b'4'..=b'5').contains(a) && b.is_ascii_digit() && c.is_ascii_digit() => {
            Line::Refusal
        }
        _ => Line::Other,
    }
}

/// What [`check_room`] found in one room.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomVerdict {
    /// Each message × the other members.
    pub expected: u64,
    /// Distinct expected messages members received.
    pub received: u64,
    /// expected − received.
    pub lost: u64,
    /// Repeated receptions.
    pub duplicates: u64,
    /// Members whose order disagrees with the reference order.
    pub out_of_order: usize,
    /// Ids outside what was sent, or a sender's own messages.
    pub unexpected: u64,
    /// The first problems, in words.
    pub problems: Vec<String>,
}

/// Checks one room after a run. Member *i* < `sent.len()` is sender *i*, which
/// sent `sent[i]` messages (sequence numbers `0..sent[i]`); `views[m]` is what
/// member *m* received, in order. Every member must receive every message of the
/// other senders exactly once, and all members must agree on one order: the
/// reference is the order of the listener that received the most, and every
/// member's sequence must appear in it in increasing positions.
pub fn check_room(sent: &[u64], views: &[&[u32]]) -> RoomVerdict {
    let mut v = RoomVerdict::default();
    let senders = sent.len();
    let note = |v: &mut RoomVerdict, s: String| {
        if v.problems.len() < 3 {
            v.problems.push(s);
        }
    };
    // Reference: the listener (not a sender) with the longest view.
    let reference = views
        .iter()
        .enumerate()
        .filter(|(m, _)| *m >= senders)
        .max_by_key(|(_, view)| view.len())
        .map(|(_, view)| *view)
        .unwrap_or(&[]);
    let mut position: Vec<Vec<u32>> = sent.iter().map(|&n| vec![u32::MAX; n as usize]).collect();
    for (p, &id) in reference.iter().enumerate() {
        let (s, seq) = id_parts(id);
        if let Some(slot) = position.get_mut(s).and_then(|x| x.get_mut(seq as usize)) {
            if *slot == u32::MAX {
                *slot = p as u32;
            }
        }
    }
    let mut seen: Vec<Vec<bool>> = sent.iter().map(|&n| vec![false; n as usize]).collect();
    for (m, view) in views.iter().enumerate() {
        for x in &mut seen {
            x.fill(false);
        }
        let expected: u64 = (0..senders).filter(|&s| s != m).map(|s| sent[s]).sum();
        v.expected += expected;
        let mut got = 0u64;
        let mut last: Option<u32> = None;
        let mut disorder = false;
        for &id in view.iter() {
            let (s, seq) = id_parts(id);
            if s == m || s >= senders || seq >= sent[s] {
                v.unexpected += 1;
                continue;
            }
            let slot = &mut seen[s][seq as usize];
            if *slot {
                v.duplicates += 1;
                note(
                    &mut v,
                    format!("member {m} received message {s}/{seq} twice"),
                );
                continue;
            }
            *slot = true;
            got += 1;
            let p = position[s][seq as usize];
            if p == u32::MAX {
                continue; // the reference never got it: nothing to compare with
            }
            if let Some(l) = last {
                if p <= l && !disorder {
                    disorder = true;
                    let (ls, lseq) = id_parts(reference[l as usize]);
                    note(
                        &mut v,
                        format!(
                            "member {m} received {s}/{seq} after {ls}/{lseq}; the room's order has it before"
                        ),
                    );
                }
            }
            last = Some(last.map_or(p, |l| l.max(p)));
        }
        v.received += got;
        if got < expected {
            note(
                &mut v,
                format!("member {m} received {got} of {expected} messages"),
            );
        }
        v.out_of_order += usize::from(disorder);
    }
    v.lost = v.expected.saturating_sub(v.received);
    v
}

/// Nanoseconds of CLOCK_MONOTONIC (the clock timerfd and `Instant` use).
fn mono_ns() -> u64 {
    // SAFETY: a zeroed timespec is valid; clock_gettime fills it.
    unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Registering,
    Joining,
    Joined,
    Barrier,
    Ready,
    Dead,
}

#[derive(Debug)]
struct Conn {
    sock: TcpStream,
    room: usize,
    /// Member index in the room (senders first).
    member: usize,
    phase: Phase,
    partial: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    /// Messages in `out` (counted as sent once `out` is flushed).
    out_msgs: u64,
    writable: bool,
    /// Message ids received, in order.
    view: Vec<u32>,
    /// Messages generated (queued) so far, for a sender.
    queued: u64,
    /// Messages completely written, for a sender.
    flushed: u64,
}

/// Tokens at or above this are not connections.
const TIMER: Token = Token(usize::MAX - 1);
const READ_BUF: usize = 256 * 1024;
const BURST_CHUNK: usize = 32 * 1024;

struct Client<'a> {
    spec: &'a LoadSpec,
    poll: Poll,
    conns: Vec<Conn>,
    chans: Vec<String>,
    buf: Vec<u8>,
    hist: Histogram<u64>,
    /// Window is open: PRIVMSGs count.
    measuring: bool,
    received: u64,
    last_delivery: u64,
    unexpected: u64,
    problems: Vec<String>,
    dead: usize,
    setup_error: Option<String>,
    joined: usize,
    ready: usize,
}

impl Client<'_> {
    fn note(&mut self, s: String) {
        if self.problems.len() < 5 {
            self.problems.push(s);
        }
    }

    fn nick(&self, i: usize) -> String {
        format!("{}n{i}", self.spec.tag)
    }

    fn queue(&mut self, i: usize, line: &[u8]) {
        self.conns[i].out.extend_from_slice(line);
    }

    /// Writes what `out` holds until done or the socket is full.
    fn flush(&mut self, i: usize) {
        let c = &mut self.conns[i];
        if c.phase == Phase::Dead {
            return;
        }
        while c.out_pos < c.out.len() {
            match c.sock.write(&c.out[c.out_pos..]) {
                Ok(0) => break,
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.writable = false;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let msg = format!("client {i}: write failed: {e}");
                    self.kill(i, msg);
                    return;
                }
            }
        }
        c.out.clear();
        c.out_pos = 0;
        c.flushed += c.out_msgs;
        c.out_msgs = 0;
    }

    fn kill(&mut self, i: usize, why: String) {
        let c = &mut self.conns[i];
        if c.phase == Phase::Dead {
            return;
        }
        if !self.measuring && self.setup_error.is_none() {
            self.setup_error = Some(why.clone());
        }
        c.phase = Phase::Dead;
        let _ = self.poll.registry().deregister(&mut c.sock);
        self.dead += 1;
        if self.measuring {
            self.received -= c.view.len() as u64;
        }
        self.note(why);
    }

    /// Reads everything the socket has and handles every complete line.
    fn read(&mut self, i: usize) {
        loop {
            if self.conns[i].phase == Phase::Dead {
                return;
            }
            let keep = self.conns[i].partial.len();
            self.buf[..keep].copy_from_slice(&self.conns[i].partial);
            let space = self.buf.len() - keep;
            let n = match self.conns[i].sock.read(&mut self.buf[keep..]) {
                Ok(0) => {
                    self.kill(i, format!("client {i}: the server closed the connection"));
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.kill(i, format!("client {i}: read failed: {e}"));
                    return;
                }
            };
            let now = mono_ns();
            let end = keep + n;
            let buf = std::mem::take(&mut self.buf);
            let mut start = 0;
            while let Some(nl) = buf[start..end].iter().position(|&b| b == b'\n') {
                let mut line = &buf[start..start + nl];
                if let [l @ .., b'\r'] = line {
                    line = l;
                }
                self.line(i, line, now);
                start += nl + 1;
            }
            let c = &mut self.conns[i];
            c.partial.clear();
            c.partial.extend_from_slice(&buf[start..end]);
            self.buf = buf;
            if c.partial.len() > 8192 {
                self.kill(i, format!("client {i}: a line longer than 8 KiB"));
                return;
            }
            if n < space {
                return; // a short read drained the socket (edge-triggered: safe)
            }
        }
    }

    fn line(&mut self, i: usize, line: &[u8], now: u64) {
        match parse_line(line) {
            Line::Privmsg { target, text } if self.measuring => {
                let c = &self.conns[i];
                let room = c.room;
                let parsed = parse_text(text).filter(|_| target == self.chans[room].as_bytes());
                let Some((sid, seq, ts)) = parsed else {
                    self.unexpected += 1;
                    let l = String::from_utf8_lossy(line).into_owned();
                    self.note(format!("client {i}: unexpected message: {l}"));
                    return;
                };
                let base = (room * self.spec.room_size) as u64;
                let sender = sid.wrapping_sub(base) as usize;
                if sid < base || sender >= self.spec.senders || sender == c.member {
                    self.unexpected += 1;
                    let l = String::from_utf8_lossy(line).into_owned();
                    self.note(format!("client {i}: message from a stranger: {l}"));
                    return;
                }
                let c = &mut self.conns[i];
                c.view.push(message_id(sender, seq));
                self.received += 1;
                self.last_delivery = now;
                let _ = self.hist.record(now.saturating_sub(ts).max(1));
            }
            Line::Privmsg { .. } | Line::Other => {}
            Line::Ping(params) => {
                let mut pong = b"PONG ".to_vec();
                pong.extend_from_slice(params);
                pong.extend_from_slice(b"\r\n");
                self.queue(i, &pong);
                self.flush(i);
            }
            Line::Welcome if self.conns[i].phase == Phase::Registering => {
                self.conns[i].phase = Phase::Joining;
                let join = format!("JOIN {}\r\n", self.chans[self.conns[i].room]);
                self.queue(i, join.as_bytes());
                self.flush(i);
            }
            Line::EndOfNames if self.conns[i].phase == Phase::Joining => {
                self.conns[i].phase = Phase::Joined;
                self.joined += 1;
            }
            Line::Pong if self.conns[i].phase == Phase::Barrier => {
                self.conns[i].phase = Phase::Ready;
                self.ready += 1;
            }
            Line::Welcome | Line::EndOfNames | Line::Pong => {}
            Line::Refusal => {
                let l = String::from_utf8_lossy(line).into_owned();
                if self.measuring {
                    self.unexpected += 1;
                    self.note(format!("client {i}: {l}"));
                } else {
                    self.kill(i, format!("client {i} during setup: {l}"));
                }
            }
        }
    }

    fn connect(&mut self, i: usize) -> anyhow::Result<()> {
        let std = std::net::TcpStream::connect_timeout(&self.spec.addr, Duration::from_secs(5))
            .with_context(|| format!("client {i}: connecting to {}", self.spec.addr))?;
        std.set_nodelay(true)?;
        std.set_nonblocking(true)?;
        let mut sock = TcpStream::from_std(std);
        self.poll.registry().register(
            &mut sock,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let room = i / self.spec.room_size;
        let nick = self.nick(i);
        let mut c = Conn {
            sock,
            room,
            member: i % self.spec.room_size,
            phase: Phase::Registering,
            partial: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            out_msgs: 0,
            writable: true,
            view: Vec::new(),
            queued: 0,
            flushed: 0,
        };
        c.out
            .extend_from_slice(format!("NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n").as_bytes());
        self.conns.push(c);
        self.flush(i);
        Ok(())
    }

    fn dispatch(&mut self, events: &Events) {
        for ev in events.iter() {
            let i = ev.token().0;
            if ev.token() == TIMER || i >= self.conns.len() {
                continue;
            }
            if ev.is_writable() {
                self.conns[i].writable = true;
                if self.conns[i].out_pos < self.conns[i].out.len() {
                    self.flush(i);
                }
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                self.read(i);
            }
        }
    }

    /// Connect, register, join, PING barrier.
    fn setup(&mut self, events: &mut Events) -> anyhow::Result<()> {
        let total = self.spec.rooms * self.spec.room_size;
        let deadline =
            Instant::now() + Duration::from_secs(30) + Duration::from_millis(20) * total as u32;
        let mut pinged = false;
        while self.ready < total {
            if let Some(e) = &self.setup_error {
                bail!("setup failed: {e}");
            }
            if Instant::now() > deadline {
                bail!(
                    "setup timed out: {} connected, {} joined, {} passed the PING barrier, of {total}",
                    self.conns.len(),
                    self.joined,
                    self.ready
                );
            }
            while self.conns.len() < total && self.conns.len() - self.joined < SETUP_WINDOW {
                let i = self.conns.len();
                self.connect(i)?;
            }
            if !pinged && self.joined == total {
                pinged = true;
                for i in 0..total {
                    self.conns[i].phase = Phase::Barrier;
                    let ping = format!("PING :{}\r\n", self.spec.tag);
                    self.queue(i, ping.as_bytes());
                    self.flush(i);
                }
            }
            self.poll
                .poll(events, Some(Duration::from_millis(100)))
                .or_else(|e| {
                    if e.kind() == io::ErrorKind::Interrupted {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })?;
            self.dispatch(events);
        }
        Ok(())
    }

    /// Senders: generate burst chunks and flush; returns whether a sender could
    /// still write right now.
    fn pump_burst(&mut self, messages: u64, now: u64) -> bool {
        let mut more = false;
        let spec = self.spec;
        for room in 0..spec.rooms {
            for s in 0..spec.senders {
                let i = room * spec.room_size + s;
                let mut written = 0;
                loop {
                    let c = &mut self.conns[i];
                    if c.phase == Phase::Dead || !c.writable {
                        break;
                    }
                    if c.out_pos == c.out.len() {
                        if c.queued == messages {
                            break;
                        }
                        if written >= 4 * BURST_CHUNK {
                            more = true;
                            break;
                        }
                        while c.out.len() < BURST_CHUNK && c.queued < messages {
                            write_message(
                                &mut c.out,
                                &self.chans[room],
                                i,
                                c.queued,
                                now,
                                spec.text_size,
                            );
                            c.queued += 1;
                            c.out_msgs += 1;
                        }
                        written += c.out.len();
                    }
                    self.flush(i);
                }
            }
        }
        more
    }

    fn senders_done(&self, per_sender: u64) -> bool {
        let spec = self.spec;
        (0..spec.rooms).all(|room| {
            (0..spec.senders).all(|s| {
                let c = &self.conns[room * spec.room_size + s];
                c.phase == Phase::Dead || (c.flushed == per_sender)
            })
        })
    }

    /// Deliveries the live members should receive, given what was flushed.
    fn expected_live(&self) -> u64 {
        let spec = self.spec;
        let mut total = 0;
        for room in 0..spec.rooms {
            let members = &self.conns[room * spec.room_size..(room + 1) * spec.room_size];
            let live = members.iter().filter(|c| c.phase != Phase::Dead).count() as u64;
            for (s, c) in members.iter().take(spec.senders).enumerate() {
                let others = live - u64::from(members[s].phase != Phase::Dead);
                total += c.flushed * others;
            }
        }
        total
    }
}

fn arm_timer(fd: &OwnedFd, at_ns: u64) {
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: (at_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (at_ns % 1_000_000_000) as libc::c_long,
        },
    };
    // SAFETY: a valid timerfd and a valid itimerspec; the old value is not asked for.
    unsafe {
        libc::timerfd_settime(
            fd.as_raw_fd(),
            libc::TFD_TIMER_ABSTIME,
            &spec,
            std::ptr::null_mut(),
        );
    }
}

/// Runs one load against a running IRC server: setup, then the measured window.
/// `on_window` is called when the window opens (just before the first send) and
/// when it closes (the caller reads server CPU time there).
pub fn run_load(
    spec: &LoadSpec,
    on_window: &mut (dyn FnMut(Window) + Send),
) -> anyhow::Result<LoadResult> {
    spec.validate()?;
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("chat-client".into())
            .spawn_scoped(s, || {
                if !spec.cpus.is_empty() {
                    machine::pin_current_thread(&spec.cpus)
                        .with_context(|| format!("pinning the client to CPUs {:?}", spec.cpus))?;
                }
                run_client(spec, on_window)
            })
            .context("spawning the chat client thread")?
            .join()
            .unwrap_or_else(|_| bail!("the chat client thread panicked"))
    })
}

fn run_client(
    spec: &LoadSpec,
    on_window: &mut (dyn FnMut(Window) + Send),
) -> anyhow::Result<LoadResult> {
    let total = spec.rooms * spec.room_size;
    let per_sender = spec.pattern.per_sender();
    let mut client = Client {
        spec,
        poll: Poll::new().context("creating the poller")?,
        conns: Vec::with_capacity(total),
        chans: (0..spec.rooms)
            .map(|r| format!("#{}r{r}", spec.tag))
            .collect(),
        buf: vec![0; READ_BUF],
        hist: Histogram::new_with_bounds(1, 100_000_000_000, 3)
            .expect("constant histogram bounds are valid"),
        measuring: false,
        received: 0,
        last_delivery: 0,
        unexpected: 0,
        problems: Vec::new(),
        dead: 0,
        setup_error: None,
        joined: 0,
        ready: 0,
    };
    let mut events = Events::with_capacity(1024);
    let setup_start = Instant::now();
    client.setup(&mut events)?;
    let setup_s = setup_start.elapsed().as_secs_f64();
    // Every member may receive every message of its room's other senders.
    let per_member = per_sender as usize * spec.senders;
    for c in &mut client.conns {
        c.view.reserve(per_member);
    }

    // SAFETY: timerfd_create has no memory preconditions; the fd is owned below.
    let raw = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error()).context("timerfd_create");
    }
    // SAFETY: `raw` is a fresh fd nobody else owns.
    let timer = unsafe { OwnedFd::from_raw_fd(raw) };
    client
        .poll
        .registry()
        .register(&mut SourceFd(&raw), TIMER, Interest::READABLE)?;

    on_window(Window::Start);
    let cpu0 = machine::thread_cpu_time();
    let t0 = mono_ns();
    client.measuring = true;
    client.last_delivery = t0;
    // Paced: (due ns, client index, sequence).
    let mut due: BinaryHeap<Reverse<(u64, usize, u64)>> = BinaryHeap::new();
    let deadline = match spec.pattern {
        Pattern::Burst { .. } => t0 + spec.timeout.as_nanos() as u64,
        Pattern::Paced { rate, duration } => {
            let n = (spec.rooms * spec.senders) as f64;
            for room in 0..spec.rooms {
                for s in 0..spec.senders {
                    let j = (room * spec.senders + s) as f64;
                    let at = t0 + (j / n / rate * 1e9) as u64;
                    due.push(Reverse((at, room * spec.room_size + s, 0)));
                }
            }
            arm_timer(&timer, t0);
            t0 + (duration + spec.timeout).as_nanos() as u64
        }
    };
    let mut armed = 0u64;
    let stop;
    loop {
        let now = mono_ns();
        // Send what is due.
        let mut busy = false;
        match spec.pattern {
            Pattern::Burst { messages } => busy = client.pump_burst(messages, now),
            Pattern::Paced { rate, .. } => {
                let mut touched = Vec::new();
                while let Some(&Reverse((at, i, seq))) = due.peek() {
                    if at > now {
                        if armed != at {
                            arm_timer(&timer, at);
                            armed = at;
                        }
                        break;
                    }
                    due.pop();
                    let c = &mut client.conns[i];
                    if c.phase != Phase::Dead {
                        write_message(
                            &mut c.out,
                            &client.chans[c.room],
                            i,
                            seq,
                            at,
                            spec.text_size,
                        );
                        c.queued += 1;
                        c.out_msgs += 1;
                        if !touched.contains(&i) {
                            touched.push(i);
                        }
                    }
                    if seq + 1 < per_sender {
                        let next = at + (1e9 / rate) as u64;
                        due.push(Reverse((next.max(at + 1), i, seq + 1)));
                    }
                }
                for i in touched {
                    if client.conns[i].writable {
                        client.flush(i);
                    }
                }
            }
        }
        // Done?
        let all_sent = due.is_empty() && client.senders_done(per_sender);
        if all_sent && client.received >= client.expected_live() {
            stop = "complete";
            break;
        }
        if client.dead == total {
            stop = "all disconnected";
            break;
        }
        if now > deadline {
            stop = "timeout";
            break;
        }
        if all_sent && now.saturating_sub(client.last_delivery) > STALL.as_nanos() as u64 {
            stop = "stall";
            break;
        }
        let wait = if busy {
            Duration::ZERO
        } else {
            Duration::from_millis(100)
        };
        match client.poll.poll(&mut events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("polling"),
        }
        for ev in events.iter() {
            if ev.token() == TIMER {
                let mut b = [0u8; 8];
                // SAFETY: reading 8 bytes into an 8-byte buffer from our timerfd.
                unsafe { libc::read(raw, b.as_mut_ptr().cast(), 8) };
            }
        }
        client.dispatch(&events);
    }
    let t1 = mono_ns();
    on_window(Window::End);
    let cpu = machine::thread_cpu_time().saturating_sub(cpu0);
    client.measuring = false;
    drop(timer);

    // Check every room.
    let mut verdict = RoomVerdict::default();
    let mut sent_total = 0;
    for room in 0..spec.rooms {
        let members = &client.conns[room * spec.room_size..(room + 1) * spec.room_size];
        let sent: Vec<u64> = members
            .iter()
            .take(spec.senders)
            .map(|c| c.flushed)
            .collect();
        sent_total += sent.iter().sum::<u64>();
        let views: Vec<&[u32]> = members.iter().map(|c| c.view.as_slice()).collect();
        let v = check_room(&sent, &views);
        verdict.expected += v.expected;
        verdict.received += v.received;
        verdict.lost += v.lost;
        verdict.duplicates += v.duplicates;
        verdict.out_of_order += v.out_of_order;
        verdict.unexpected += v.unexpected;
        for p in v.problems {
            if verdict.problems.len() < 5 {
                verdict.problems.push(format!("room {room}: {p}"));
            }
        }
    }
    let mut problems = client.problems.clone();
    problems.extend(verdict.problems.iter().cloned());
    problems.truncate(8);
    let unsent: u64 = client
        .conns
        .iter()
        .filter(|c| c.member < spec.senders)
        .map(|c| per_sender - c.flushed)
        .sum();
    if unsent > 0 {
        problems.push(format!(
            "{unsent} messages were not (completely) written by the senders when the window closed"
        ));
    }
    let window_s = (t1 - t0) as f64 / 1e9;
    let complete = verdict.lost == 0
        && verdict.duplicates == 0
        && verdict.out_of_order == 0
        && client.dead == 0
        && unsent == 0
        && stop == "complete";
    Ok(LoadResult {
        shape: spec.pattern.shape(),
        clients: total,
        rooms: spec.rooms,
        room_size: spec.room_size,
        senders: spec.senders,
        messages_sent: sent_total,
        deliveries: verdict.received,
        expected_deliveries: verdict.expected,
        window_s,
        deliveries_per_s: verdict.received as f64 / window_s.max(1e-9),
        latency: Latency::from_hist(&client.hist),
        complete,
        lost: verdict.lost,
        duplicates: verdict.duplicates,
        members_out_of_order: verdict.out_of_order,
        disconnected: client.dead,
        unexpected_lines: client.unexpected + verdict.unexpected,
        problems,
        stop: stop.to_owned(),
        setup_s,
        client_cpu_pct: cpu.as_secs_f64() / window_s.max(1e-9) * 100.0,
    })
}

// ---------------------------------------------------------------------------
// The harness: servers × shapes × rounds.

/// Which server a run uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatServer {
    /// `target/release/shardline-chat` on this backend.
    Shardline(Io),
    /// `/usr/sbin/ngircd`.
    Ngircd,
    /// A server already running (no CPU accounting unless `pid` is given).
    External {
        /// Name in reports.
        name: String,
        /// Its address.
        addr: SocketAddr,
        /// Its process, to read CPU time from (must not be this process).
        pid: Option<u32>,
    },
}

impl ChatServer {
    /// Name in reports.
    pub fn name(&self) -> String {
        match self {
            ChatServer::Shardline(io) => format!("shardline-{io}"),
            ChatServer::Ngircd => "ngircd".into(),
            ChatServer::External { name, .. } => name.clone(),
        }
    }

    /// Parses `shardline-uring`, `shardline-epoll` or `ngircd`.
    pub fn parse(name: &str) -> Result<ChatServer, String> {
        match name.trim() {
            "shardline-uring" => Ok(ChatServer::Shardline(Io::Uring)),
            "shardline-epoll" => Ok(ChatServer::Shardline(Io::Epoll)),
            "ngircd" => Ok(ChatServer::Ngircd),
            other => Err(format!(
                "unknown chat server {other:?} (known: {})",
                SERVERS.join(", ")
            )),
        }
    }
}

/// What `chat` runs.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// Servers, in run order within a round.
    pub servers: Vec<ChatServer>,
    /// The shardline-chat binary.
    pub chat_exe: PathBuf,
    /// Build shardline-chat (`cargo build --release -p shardline-chat`) if missing.
    pub build_chat: bool,
    /// A config file for shardline-chat (default: a generated one).
    pub chat_config: Option<PathBuf>,
    /// The ngircd binary.
    pub ngircd_exe: PathBuf,
    /// shardline-chat shards.
    pub shards: usize,
    /// Server CPUs: shardline-chat's shard *i* on the *i*-th, ngircd (one thread)
    /// on the first. Empty: unpinned.
    pub server_cpus: Vec<usize>,
    /// Client CPUs (empty: unpinned).
    pub client_cpus: Vec<usize>,
    /// Rounds (every server once per round).
    pub rounds: usize,
    /// Shapes run on each server process, in order.
    pub shapes: Vec<Shape>,
    /// Rooms and load.
    pub scenario: Scenario,
    /// Delivery timeout per run (after the last message was due).
    pub timeout: Duration,
    /// A run during which other processes used more than this % of one CPU is
    /// measured again (fresh clients, same server process).
    pub max_foreign_pct: f64,
    /// How many times a noisy run is measured again (the quietest is kept).
    pub retries: usize,
}

/// Default pinning on this machine for `shards` shards: the server on the first
/// `shards` CPUs; the client on the CPUs left, or unpinned when the shards take
/// every CPU (it then competes with them, as it would with ngircd's one thread
/// on a 2-CPU machine only for the second CPU).
pub fn default_pinning(shards: usize) -> (Vec<usize>, Vec<usize>) {
    let cpus = machine::allowed_cpus();
    let server: Vec<usize> = cpus.iter().copied().take(shards.max(1)).collect();
    let client = cpus
        .iter()
        .copied()
        .filter(|c| !server.contains(c))
        .collect();
    (server, client)
}

/// One measured run.
#[derive(Debug, Clone, Serialize)]
pub struct ChatRun {
    /// Round (from 1).
    pub round: usize,
    /// Server name.
    pub server: String,
    /// burst or paced.
    pub shape: Shape,
    /// What the client measured (absent if the run failed).
    pub load: Option<LoadResult>,
    /// Server utime + stime over the window ÷ deliveries, µs.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Server CPU over the window ÷ the window, in % of one CPU.
    pub server_cpu_pct: Option<f64>,
    /// CPU other processes used during the window, in % of one CPU (machine busy
    /// time from /proc/stat minus the server's and the harness's).
    pub foreign_cpu_pct: Option<f64>,
    /// Measurements made for this slot (more than 1: earlier ones were noisy).
    pub attempts: usize,
    /// Why the run failed.
    pub error: Option<String>,
}

impl ChatRun {
    /// A run that measured nothing, and why.
    pub fn failed(
        round: usize,
        server: &str,
        shape: Shape,
        attempts: usize,
        error: String,
    ) -> ChatRun {
        ChatRun {
            round,
            server: server.to_owned(),
            shape,
            load: None,
            server_cpu_us_per_delivery: None,
            server_cpu_pct: None,
            foreign_cpu_pct: None,
            attempts,
            error: Some(error),
        }
    }
}

/// One server and shape: medians over rounds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatRow {
    /// Server name.
    pub server: String,
    /// burst or paced.
    pub shape: Shape,
    /// Runs with a result.
    pub runs: usize,
    /// Median deliveries per second.
    pub deliveries_per_s: f64,
    /// Median server CPU µs per delivery.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Median p50 delivery latency, µs.
    pub p50_us: f64,
    /// Median p99 delivery latency, µs.
    pub p99_us: f64,
    /// Every run complete (all messages to all members, one order).
    pub complete: bool,
    /// Sum over runs.
    pub lost: u64,
    /// Sum over runs.
    pub members_out_of_order: usize,
    /// deliveries_per_s ÷ ngircd's (same shape).
    pub deliveries_vs_ngircd: Option<f64>,
    /// server CPU per delivery ÷ ngircd's (same shape; < 1: cheaper).
    pub cpu_vs_ngircd: Option<f64>,
}

/// What `chat --json` writes.
#[derive(Debug, Clone, Serialize)]
pub struct ChatOutput {
    /// Medians per server and shape.
    pub results: Vec<ChatRow>,
    /// Every run.
    pub runs: Vec<ChatRun>,
    /// Servers left out, and why.
    pub skipped: Vec<String>,
    /// How the runs were set up.
    pub setup: ChatSetup,
    /// Where they ran.
    pub machine: MachineInfo,
}

/// The setup, echoed into the JSON.
#[derive(Debug, Clone, Serialize)]
pub struct ChatSetup {
    /// shardline-chat shards.
    pub shards: usize,
    /// shardline-chat's CPUs.
    pub server_cpus: Vec<usize>,
    /// ngircd's CPU.
    pub ngircd_cpus: Vec<usize>,
    /// The client's CPUs (empty: unpinned).
    pub client_cpus: Vec<usize>,
    /// Rounds.
    pub rounds: usize,
    /// Rooms and load.
    pub scenario: Scenario,
    /// Delivery timeout, seconds.
    pub timeout_s: f64,
}

/// The shardline-chat config the harness passes when none is given: flood control
/// off. (Connections per IP are unlimited by default.)
pub const CHAT_CONFIG: &str =
    "[server]\nname = \"bench.shardline.local\"\n\n[flood]\nenabled = false\n";

fn start(cfg: &ChatConfig, server: &ChatServer) -> anyhow::Result<Option<ServerProc>> {
    match server {
        ChatServer::Shardline(io) => servers::start_shardline_chat(
            &cfg.chat_exe,
            *io,
            cfg.shards,
            &cfg.server_cpus,
            cfg.chat_config.as_deref(),
            CHAT_CONFIG,
        )
        .map(Some),
        ChatServer::Ngircd => {
            servers::start_ngircd(&cfg.ngircd_exe, &ngircd_cpus(&cfg.server_cpus)).map(Some)
        }
        ChatServer::External { .. } => Ok(None),
    }
}

fn ngircd_cpus(server_cpus: &[usize]) -> Vec<usize> {
    server_cpus.iter().copied().take(1).collect()
}

/// Runs every server × shape × round, printing progress and the table.
pub fn run(cfg: &ChatConfig) -> anyhow::Result<ChatOutput> {
    if cfg.rounds == 0 || cfg.shapes.is_empty() || cfg.servers.is_empty() {
        bail!("need at least one round, one shape and one server");
    }
    let machine_at_start = MachineInfo::announce();
    let mut skipped = Vec::new();
    let mut servers = Vec::new();
    for s in &cfg.servers {
        match s {
            ChatServer::Shardline(_) => {
                match servers::resolve_chat_exe(&cfg.chat_exe, cfg.build_chat) {
                    Ok(()) => servers.push(s.clone()),
                    Err(why) => {
                        println!("note: skipping {}: {why}", s.name());
                        skipped.push(format!("{}: {why}", s.name()));
                    }
                }
            }
            ChatServer::Ngircd => {
                if cfg.ngircd_exe.is_file() {
                    servers.push(s.clone());
                } else {
                    let why = format!(
                        "no {} (install the Debian package: apt-get install ngircd, or ./x bench-deps)",
                        cfg.ngircd_exe.display()
                    );
                    println!("note: skipping ngircd: {why}");
                    skipped.push(format!("ngircd: {why}"));
                }
            }
            ChatServer::External { .. } => servers.push(s.clone()),
        }
    }
    if servers.is_empty() {
        bail!("no server to run: {}", skipped.join("; "));
    }
    let sc = &cfg.scenario;
    println!(
        "chat: {} server(s) × {} shape(s) × {} round(s); {} room(s) × {} members; burst: {} sender(s)/room × {} messages; paced: {} sender(s)/room × {} msg/s × {} s; {} B text",
        servers.len(),
        cfg.shapes.len(),
        cfg.rounds,
        sc.rooms,
        sc.room_size,
        sc.burst_senders,
        sc.burst_messages,
        sc.paced_senders,
        sc.paced_rate,
        sc.paced_duration_s,
        sc.text_size,
    );
    println!(
        "pinning: shardline-chat {} shard(s) on CPUs {:?}, ngircd on CPUs {:?}, client {}",
        cfg.shards,
        cfg.server_cpus,
        ngircd_cpus(&cfg.server_cpus),
        if cfg.client_cpus.is_empty() {
            "unpinned".to_owned()
        } else {
            format!("on CPUs {:?}", cfg.client_cpus)
        }
    );
    let mut runs = Vec::new();
    for (round, server) in experiment::schedule(cfg.rounds, &servers) {
        let name = server.name();
        let proc = match start(cfg, server) {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("{e:#}");
                println!("round {round} {name}: failed to start: {msg}");
                for &shape in &cfg.shapes {
                    runs.push(ChatRun::failed(round, &name, shape, 0, msg.clone()));
                }
                continue;
            }
        };
        let (addr, pid) = match (&proc, server) {
            (Some(p), _) => (p.addr, Some(p.pid)),
            (None, ChatServer::External { addr, pid, .. }) => (*addr, *pid),
            (None, _) => unreachable!("only external servers are not started"),
        };
        for &shape in &cfg.shapes {
            let run = measure_quiet(cfg, shape, addr, &name, pid, round);
            println!("{}", describe(&run));
            runs.push(run);
        }
        drop(proc);
    }
    let names: Vec<String> = servers.iter().map(ChatServer::name).collect();
    let results = summarize(&names, &cfg.shapes, &runs);
    println!();
    print!("{}", render(&results));
    Ok(ChatOutput {
        results,
        runs,
        skipped,
        setup: ChatSetup {
            shards: cfg.shards,
            server_cpus: cfg.server_cpus.clone(),
            ngircd_cpus: ngircd_cpus(&cfg.server_cpus),
            client_cpus: cfg.client_cpus.clone(),
            rounds: cfg.rounds,
            scenario: cfg.scenario.clone(),
            timeout_s: cfg.timeout.as_secs_f64(),
        },
        machine: machine_at_start,
    })
}

/// One load run against a running server, with its CPU accounting.
pub fn measure(spec: &LoadSpec, name: &str, pid: Option<u32>, round: usize) -> ChatRun {
    let probes = [Probe::Process(pid)];
    let mut marks = WindowMarks::new(&probes);
    let result = run_load(spec, &mut |w| marks.mark(w));
    match result {
        Ok(load) => {
            let window = load.window_s.max(1e-9);
            let (mut per, mut pct, mut foreign) = (None, None, None);
            if let Some(span) = marks.span() {
                if let Some(s) = span.probe(0) {
                    if load.deliveries > 0 {
                        per = Some(s * 1e6 / load.deliveries as f64);
                    }
                    pct = Some((s / window * 100.0).round());
                }
                foreign = span.foreign_pct(window);
            }
            ChatRun {
                round,
                server: name.to_owned(),
                shape: load.shape,
                load: Some(load),
                server_cpu_us_per_delivery: per,
                server_cpu_pct: pct,
                foreign_cpu_pct: foreign,
                attempts: 1,
                error: None,
            }
        }
        Err(e) => ChatRun::failed(round, name, spec.pattern.shape(), 1, format!("{e:#}")),
    }
}

experiment::impl_attempt!(ChatRun, load);

/// [`measure`], repeated (up to `cfg.retries` more times, with fresh clients)
/// while other processes used more than `cfg.max_foreign_pct` % of a CPU during
/// the window; keeps the quietest attempt (see [`Quiet`]).
fn measure_quiet(
    cfg: &ChatConfig,
    shape: Shape,
    addr: SocketAddr,
    name: &str,
    pid: Option<u32>,
    round: usize,
) -> ChatRun {
    let label = format!("round {round} {name:<16} {shape}");
    Quiet::new(cfg.max_foreign_pct, cfg.retries).measure(&label, "window", || {
        let mut spec = cfg.scenario.load(shape, addr, cfg.timeout);
        spec.cpus = cfg.client_cpus.clone();
        measure(&spec, name, pid, round)
    })
}

fn describe(run: &ChatRun) -> String {
    match (&run.load, &run.error) {
        (Some(l), _) => format!(
            "round {} {:<16} {}: {:>9} deliveries/s  server {} µs/delivery ({} % CPU)  p50 {:.1} µs  p99 {:.1} µs  {}  client CPU {:.0} %  others {} %{}",
            run.round,
            run.server,
            run.shape,
            report::krps(l.deliveries_per_s),
            run.server_cpu_us_per_delivery
                .map_or_else(|| "?".into(), |c| format!("{c:.3}")),
            run.server_cpu_pct
                .map_or_else(|| "?".into(), |c| format!("{c:.0}")),
            l.latency.p50_us,
            l.latency.p99_us,
            if l.complete {
                "complete".to_owned()
            } else {
                format!(
                    "INCOMPLETE ({}: {} of {} deliveries, {} lost, {} duplicates, {} members out of order, {} disconnected)",
                    l.stop, l.deliveries, l.expected_deliveries, l.lost, l.duplicates,
                    l.members_out_of_order, l.disconnected
                )
            },
            l.client_cpu_pct,
            run.foreign_cpu_pct
                .map_or_else(|| "?".into(), |f| format!("{f:.0}")),
            if l.problems.is_empty() {
                String::new()
            } else {
                format!("\n    problems: {}", l.problems.join("\n              "))
            }
        ),
        (None, e) => format!(
            "round {} {:<16} {}: failed: {}",
            run.round,
            run.server,
            run.shape,
            e.as_deref().unwrap_or("unknown error")
        ),
    }
}

/// Medians per (server, shape) and ratios to ngircd.
pub fn summarize(servers: &[String], shapes: &[Shape], runs: &[ChatRun]) -> Vec<ChatRow> {
    let mut rows = Vec::new();
    for &shape in shapes {
        let mut at_shape = Vec::new();
        for s in servers {
            let ok: Vec<&ChatRun> = runs
                .iter()
                .filter(|r| &r.server == s && r.shape == shape && r.load.is_some())
                .collect();
            let loads: Vec<&LoadResult> = ok.iter().filter_map(|r| r.load.as_ref()).collect();
            let Some(rate) = median_of(&loads, |l| l.deliveries_per_s) else {
                continue;
            };
            let failed = runs
                .iter()
                .any(|r| &r.server == s && r.shape == shape && r.load.is_none());
            at_shape.push(ChatRow {
                server: s.clone(),
                shape,
                runs: loads.len(),
                deliveries_per_s: round(rate, 1),
                server_cpu_us_per_delivery: median_of_some(&ok, |r| r.server_cpu_us_per_delivery)
                    .map(|c| round(c, 4)),
                p50_us: round(median_of(&loads, |l| l.latency.p50_us).unwrap_or(0.0), 2),
                p99_us: round(median_of(&loads, |l| l.latency.p99_us).unwrap_or(0.0), 2),
                complete: !failed && loads.iter().all(|l| l.complete),
                lost: loads.iter().map(|l| l.lost).sum(),
                members_out_of_order: loads.iter().map(|l| l.members_out_of_order).sum(),
                deliveries_vs_ngircd: None,
                cpu_vs_ngircd: None,
            });
        }
        let reference = at_shape.iter().find(|r| r.server == REFERENCE).cloned();
        if let Some(base) = reference {
            for r in &mut at_shape {
                if base.deliveries_per_s > 0.0 {
                    r.deliveries_vs_ngircd =
                        Some(round(r.deliveries_per_s / base.deliveries_per_s, 3));
                }
                if let (Some(c), Some(b)) = (
                    r.server_cpu_us_per_delivery,
                    base.server_cpu_us_per_delivery,
                ) {
                    if b > 0.0 {
                        r.cpu_vs_ngircd = Some(round(c / b, 3));
                    }
                }
            }
        }
        rows.extend(at_shape);
    }
    rows
}

/// The result table, one block per shape.
pub fn render(rows: &[ChatRow]) -> String {
    let mut out = String::new();
    let mut shapes: Vec<Shape> = rows.iter().map(|r| r.shape).collect();
    shapes.dedup();
    for shape in shapes {
        out.push_str(&format!(
            "{shape}: medians over rounds (× = ÷ {REFERENCE}'s; CPU per delivery below 1× is cheaper)\n"
        ));
        let cells: Vec<Vec<String>> = rows
            .iter()
            .filter(|r| r.shape == shape)
            .map(|r| {
                vec![
                    r.server.clone(),
                    format!("{:.1}k", r.deliveries_per_s / 1e3),
                    r.deliveries_vs_ngircd
                        .map_or_else(|| "-".into(), |x| format!("{x:.2}×")),
                    r.server_cpu_us_per_delivery
                        .map_or_else(|| "-".into(), |c| format!("{c:.3}")),
                    r.cpu_vs_ngircd
                        .map_or_else(|| "-".into(), |x| format!("{x:.2}×")),
                    format!("{:.1}", r.p50_us),
                    format!("{:.1}", r.p99_us),
                    if r.complete {
                        "yes".into()
                    } else {
                        format!(
                            "NO ({} lost, {} out of order)",
                            r.lost, r.members_out_of_order
                        )
                    },
                ]
            })
            .collect();
        out.push_str(&report::table(
            &[
                "server",
                "deliveries/s",
                "×",
                "server CPU µs/delivery",
                "×",
                "p50 µs",
                "p99 µs",
                "complete",
            ],
            &cells,
        ));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_the_parsers() {
        let mut out = Vec::new();
        write_message(&mut out, "#b1r0", 42, 7, 123_456_789_012, 64);
        let line = &out[..out.len() - 2];
        assert!(out.ends_with(b"\r\n"));
        assert_eq!(out.len(), "PRIVMSG #b1r0 :".len() + 64 + 2);
        // As a member receives it: with a prefix (and tags).
        let mut relayed = b"@time=2026-01-01T00:00:00.000Z :b1n42!b1n42@127.0.0.1 ".to_vec();
        relayed.extend_from_slice(line);
        match parse_line(&relayed) {
            Line::Privmsg { target, text } => {
                assert_eq!(target, b"#b1r0");
                assert_eq!(parse_text(text), Some((42, 7, 123_456_789_012)));
            }
            other => panic!("{other:?}"),
        }
        // A long number never overflows, and garbage is refused.
        assert_eq!(parse_text(b"1 2"), None);
        assert_eq!(parse_text(b"1 x 3 "), None);
        assert_eq!(parse_text(b"99999999999999999999 1 1"), None);
        assert_eq!(parse_text(b"0 0 0"), Some((0, 0, 0)));
    }

    #[test]
    fn lines_classify() {
        assert_eq!(
            parse_line(b":srv 001 b1n0 :Welcome to the network"),
            Line::Welcome
        );
        assert_eq!(
            parse_line(b":srv 366 b1n0 #b1r0 :End of /NAMES list"),
            Line::EndOfNames
        );
        assert_eq!(parse_line(b"PING :srv"), Line::Ping(b":srv"));
        assert_eq!(parse_line(b":srv PONG srv :b1"), Line::Pong);
        assert_eq!(
            parse_line(b":srv 433 * b1n0 :Nickname is already in use"),
            Line::Refusal
        );
        assert_eq!(parse_line(b"ERROR :Closing link"), Line::Refusal);
        assert_eq!(
            parse_line(b":srv 422 b1n0 :MOTD File is missing"),
            Line::Other
        );
        assert_eq!(parse_line(b":srv 353 b1n0 = #b1r0 :a b"), Line::Other);
        assert_eq!(parse_line(b":a!b@c JOIN #b1r0"), Line::Other);
        assert_eq!(parse_line(b""), Line::Other);
        assert_eq!(parse_line(b":only-a-prefix"), Line::Other);
    }

    #[test]
    fn ids_pack_sender_and_sequence() {
        let id = message_id(3, 70_000);
        assert_eq!(id_parts(id), (3, 70_000));
        assert_eq!(
            id_parts(message_id(254, (1 << 24) - 1)),
            (254, (1 << 24) - 1)
        );
    }

    fn ids(list: &[(usize, u64)]) -> Vec<u32> {
        list.iter().map(|&(s, q)| message_id(s, q)).collect()
    }

    #[test]
    fn a_complete_room_in_one_order_passes() {
        // Two senders (members 0 and 1), two listeners; each sender sent 2.
        let order = [(0, 0), (1, 0), (0, 1), (1, 1)];
        let all = ids(&order);
        let s0 = ids(&[(1, 0), (1, 1)]);
        let s1 = ids(&[(0, 0), (0, 1)]);
        let views: Vec<&[u32]> = vec![&s0, &s1, &all, &all];
        let v = check_room(&[2, 2], &views);
        assert_eq!(v.expected, 2 + 2 + 4 + 4);
        assert_eq!(v.received, v.expected);
        assert_eq!(
            (v.lost, v.duplicates, v.out_of_order, v.unexpected),
            (0, 0, 0, 0)
        );
        assert!(v.problems.is_empty(), "{:?}", v.problems);
    }

    #[test]
    fn loss_duplicates_disorder_and_strangers_are_found() {
        let reference = ids(&[(0, 0), (1, 0), (0, 1), (1, 1)]);
        // Listener 3 swapped two messages of different senders.
        let swapped = ids(&[(1, 0), (0, 0), (0, 1), (1, 1)]);
        // Sender 0 lost one message of sender 1 and got one twice.
        let s0 = ids(&[(1, 1), (1, 1)]);
        // Sender 1 received its own message and one that was never sent.
        let s1 = ids(&[(0, 0), (1, 0), (0, 1), (0, 9)]);
        let views: Vec<&[u32]> = vec![&s0, &s1, &reference, &swapped];
        let v = check_room(&[2, 2], &views);
        assert_eq!(v.expected, 12);
        assert_eq!(v.lost, 1, "{v:?}");
        assert_eq!(v.duplicates, 1, "{v:?}");
        assert_eq!(v.unexpected, 2, "{v:?}");
        assert_eq!(v.out_of_order, 1, "{v:?}");
        assert!(!v.problems.is_empty());
    }

    #[test]
    fn a_sender_order_differing_from_the_listeners_is_disorder() {
        let reference = ids(&[(0, 0), (1, 0), (2, 0)]);
        // Sender 0 sees 2/0 before 1/0.
        let s0 = ids(&[(2, 0), (1, 0)]);
        let s1 = ids(&[(0, 0), (2, 0)]);
        let s2 = ids(&[(0, 0), (1, 0)]);
        let views: Vec<&[u32]> = vec![&s0, &s1, &s2, &reference];
        let v = check_room(&[1, 1, 1], &views);
        assert_eq!((v.lost, v.out_of_order), (0, 1), "{v:?}");
    }

    #[test]
    fn loss_alone_is_not_disorder() {
        let reference = ids(&[(0, 0), (0, 1), (0, 2)]);
        let gappy = ids(&[(0, 0), (0, 2)]);
        let views: Vec<&[u32]> = vec![&[], &reference, &gappy];
        let v = check_room(&[3], &views);
        assert_eq!((v.lost, v.out_of_order, v.duplicates), (1, 0, 0), "{v:?}");
    }

    #[test]
    fn specs_are_validated() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let sc = Scenario::default();
        let ok = sc.load(Shape::Burst, addr, Duration::from_secs(1));
        ok.validate().unwrap();
        let mut bad = ok.clone();
        bad.senders = bad.room_size;
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.text_size = 10;
        assert!(bad.validate().is_err());
        let mut bad = ok;
        bad.pattern = Pattern::Paced {
            rate: 0.0,
            duration: Duration::from_secs(1),
        };
        assert!(bad.validate().is_err());
        let p = sc.load(Shape::Paced, addr, Duration::from_secs(1));
        assert_eq!(p.pattern.per_sender(), 300);
    }

    fn run_of(server: &str, shape: Shape, rate: f64, cpu: f64, complete: bool) -> ChatRun {
        ChatRun {
            round: 1,
            server: server.into(),
            shape,
            load: Some(LoadResult {
                shape,
                clients: 10,
                rooms: 1,
                room_size: 10,
                senders: 1,
                messages_sent: 10,
                deliveries: 90,
                expected_deliveries: 90,
                window_s: 1.0,
                deliveries_per_s: rate,
                latency: Latency {
                    p50_us: 10.0,
                    p99_us: 20.0,
                    ..Latency::default()
                },
                complete,
                lost: u64::from(!complete),
                duplicates: 0,
                members_out_of_order: 0,
                disconnected: 0,
                unexpected_lines: 0,
                problems: Vec::new(),
                stop: "complete".into(),
                setup_s: 0.1,
                client_cpu_pct: 50.0,
            }),
            server_cpu_us_per_delivery: Some(cpu),
            server_cpu_pct: Some(50.0),
            foreign_cpu_pct: Some(0.0),
            attempts: 1,
            error: None,
        }
    }

    #[test]
    fn medians_and_ratios_to_ngircd() {
        let runs = vec![
            run_of("shardline-uring", Shape::Burst, 2e6, 0.5, true),
            run_of("shardline-uring", Shape::Burst, 4e6, 0.7, true),
            run_of("shardline-uring", Shape::Burst, 3e6, 0.6, false),
            run_of("ngircd", Shape::Burst, 1e6, 1.2, true),
            run_of("ngircd", Shape::Paced, 1e5, 2.0, true),
        ];
        let names = vec!["shardline-uring".to_owned(), "ngircd".to_owned()];
        let rows = summarize(&names, &[Shape::Burst, Shape::Paced], &runs);
        assert_eq!(rows.len(), 3, "{rows:#?}");
        let u = &rows[0];
        assert_eq!(
            (u.server.as_str(), u.shape, u.runs),
            ("shardline-uring", Shape::Burst, 3)
        );
        assert_eq!(u.deliveries_per_s, 3e6);
        assert_eq!(u.server_cpu_us_per_delivery, Some(0.6));
        assert_eq!(u.deliveries_vs_ngircd, Some(3.0));
        assert_eq!(u.cpu_vs_ngircd, Some(0.5));
        assert!(!u.complete);
        assert_eq!(u.lost, 1);
        assert_eq!(rows[1].cpu_vs_ngircd, Some(1.0));
        assert_eq!(rows[2].shape, Shape::Paced);
        let table = render(&rows);
        assert!(table.contains("burst: medians"), "{table}");
        assert!(table.contains("NO (1 lost"), "{table}");
        assert!(table.contains("3000.0k"), "{table}");
        // The JSON shape.
        let json = serde_json::to_value(&rows[0]).unwrap();
        for key in [
            "server",
            "shape",
            "runs",
            "deliveries_per_s",
            "server_cpu_us_per_delivery",
            "p50_us",
            "p99_us",
            "complete",
            "lost",
            "members_out_of_order",
            "deliveries_vs_ngircd",
            "cpu_vs_ngircd",
        ] {
            assert!(json.get(key).is_some(), "{key} missing in {json}");
        }
        assert_eq!(json["shape"], "burst");
    }

    #[test]
    fn server_names_parse() {
        assert_eq!(
            ChatServer::parse("shardline-uring"),
            Ok(ChatServer::Shardline(Io::Uring))
        );
        assert_eq!(ChatServer::parse("ngircd"), Ok(ChatServer::Ngircd));
        assert!(ChatServer::parse("inspircd").is_err());
        for s in SERVERS {
            assert_eq!(ChatServer::parse(s).unwrap().name(), s);
        }
    }
}
