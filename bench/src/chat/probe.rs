//! The CHATHISTORY probe: one more client, on its own thread and its own
//! connection, that joins room 0 of a load before the window opens and, while
//! the window is open, asks `CHATHISTORY LATEST #room * LIMIT` at a steady rate
//! (one request outstanding at a time) and times each answer from the write of
//! the request to the read of the closing `BATCH -`.
//!
//! It is not one of the load's connections, so nothing it reads counts as a
//! delivery; it is a member of the room (the server fans every message of the
//! room out to it too, with history on or off alike), and it asks for `batch
//! server-time message-tags` wherever they are offered, `draft/chathistory`
//! too where it is (shardline-chat with history). Without `draft/chathistory`
//! it only listens.
//!
//! Every answer is checked ([`check_answer`]): at most the limit, at least as
//! many as the probe had itself received live before it asked (up to the
//! limit: whatever reached a member is in the history), each line with a
//! `msgid` and a `time`, msgids unique, times non-decreasing, and the messages
//! the latest ones in the order the probe saw them live — a run of consecutive
//! live positions ending no earlier than the last one seen before the request,
//! followed only by messages not seen live yet.

use std::{
    collections::HashMap,
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicU8, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde::Serialize;

use super::irc::{parse_line, parse_text, split_space, Line};
use crate::machine;

/// What the probe does.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProbeSpec {
    /// CHATHISTORY requests per second (one outstanding at a time: a request
    /// whose turn comes while the last answer is still out goes right after it).
    pub rate: f64,
    /// The limit asked for: `CHATHISTORY LATEST #room * LIMIT`.
    pub limit: usize,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        ProbeSpec {
            rate: 20.0,
            limit: 100,
        }
    }
}

/// How long an answer may take before the probe gives up on it (and stops
/// asking: it can no longer tell which answer a line belongs to).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Connect, register and join, at most.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// How often the probe looks at its flag while it only listens.
const TICK: Duration = Duration::from_millis(20);

const WAIT: u8 = 0;
const RUN: u8 = 1;
const STOP: u8 = 2;

/// Answer latencies, µs.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ProbeLatency {
    /// Answers timed.
    pub samples: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile (nearest rank).
    pub p99_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl ProbeLatency {
    /// Percentiles of `samples` (µs, any order).
    pub fn of(samples: &[f64]) -> ProbeLatency {
        if samples.is_empty() {
            return ProbeLatency::default();
        }
        let mut v = samples.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        ProbeLatency {
            samples: v.len() as u64,
            p50_us: rank(0.50),
            p99_us: rank(0.99),
            max_us: v[v.len() - 1],
            mean_us: v.iter().sum::<f64>() / v.len() as f64,
        }
    }
}

/// What the probe saw in one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProbeResult {
    /// The server offered `draft/chathistory` and `batch` and acknowledged them:
    /// the probe asked. Otherwise it only listened.
    pub chathistory: bool,
    /// The capabilities the server acknowledged.
    pub caps: Vec<String>,
    /// ISUPPORT `CHATHISTORY=`: the most messages one answer holds.
    pub max_request: Option<usize>,
    /// CHATHISTORY requests sent.
    pub requests: u64,
    /// Answers received whole (closing `BATCH -` read).
    pub answers: u64,
    /// Answers holding as many messages as asked for (the limit, cut to
    /// `max_request`).
    pub full_answers: u64,
    /// History messages over every answer.
    pub messages: u64,
    /// Answers that failed a check, `FAIL` or error replies, and answers that
    /// never came.
    pub bad_answers: u64,
    /// Requests sent later than their turn because the last answer was still out.
    pub late_sends: u64,
    /// Messages of the room the probe received live, as a member.
    pub live_messages: u64,
    /// Request written → closing `BATCH -` read.
    pub latency: ProbeLatency,
    /// The first few problems, in words.
    pub problems: Vec<String>,
    /// Every answer's latency, µs, in order (pooled over rounds for the verdict).
    #[serde(skip)]
    pub samples_us: Vec<f64>,
}

impl ProbeResult {
    fn note(&mut self, s: String) {
        if self.problems.len() < 5 {
            self.problems.push(s);
        }
    }
}

/// One message of a CHATHISTORY answer, as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistLine {
    /// Its `msgid` tag.
    pub msgid: Option<String>,
    /// Its `time` tag (`YYYY-MM-DDThh:mm:ss.sssZ`: sorts as text).
    pub time: Option<String>,
    /// The load's numbers in its text: (sender id, sequence).
    pub key: Option<(u64, u64)>,
}

/// Checks one answer of `CHATHISTORY LATEST … want` (see the module doc):
/// `seen_at_send` messages of the room had been received live when it was
/// asked, `live` holds every message received live so far with its position.
pub fn check_answer(
    lines: &[HistLine],
    want: usize,
    seen_at_send: usize,
    live: &HashMap<(u64, u64), usize>,
) -> Result<(), String> {
    let n = lines.len();
    if n > want {
        return Err(format!("{n} messages, more than the {want} asked for"));
    }
    let least = want.min(seen_at_send);
    if n < least {
        return Err(format!(
            "{n} messages, but {seen_at_send} had been delivered before the request (limit {want})"
        ));
    }
    let mut ids = std::collections::HashSet::new();
    let mut last_time: Option<&str> = None;
    let mut last_seq: HashMap<u64, u64> = HashMap::new();
    let mut last_pos: Option<usize> = None;
    let mut unseen = false;
    for (i, l) in lines.iter().enumerate() {
        let (Some(id), Some(time), Some((sid, seq))) = (&l.msgid, &l.time, l.key) else {
            return Err(format!(
                "message {i} lacks its msgid, its time or the load's numbers: {l:?}"
            ));
        };
        if !ids.insert(id.as_str()) {
            return Err(format!("msgid {id} twice"));
        }
        if last_time.is_some_and(|t| t > time.as_str()) {
            return Err(format!("message {i} at {time}, before the one before it"));
        }
        last_time = Some(time);
        if let Some(&prev) = last_seq.get(&sid) {
            if seq <= prev {
                return Err(format!(
                    "sender {sid}: sequence {seq} after {prev} (out of order)"
                ));
            }
        }
        last_seq.insert(sid, seq);
        match live.get(&(sid, seq)) {
            Some(&pos) => {
                if unseen {
                    return Err(format!(
                        "message {i} ({sid} {seq}) was delivered live, one before it not yet"
                    ));
                }
                if last_pos.is_some_and(|p| pos != p + 1) {
                    return Err(format!(
                        "message {i} ({sid} {seq}) is live message {pos}, the one before it {}: not the room's order",
                        last_pos.unwrap_or(0)
                    ));
                }
                last_pos = Some(pos);
            }
            None => unseen = true,
        }
    }
    if !unseen && n > 0 {
        if let Some(p) = last_pos {
            if p + 1 < seen_at_send {
                return Err(format!(
                    "the latest message is live message {p}, but {seen_at_send} had been delivered before the request"
                ));
            }
        }
    }
    Ok(())
}

/// The value of tag `key` in a tags string (`a=1;b=2`), unescaped only as far
/// as msgids and times need (not at all).
fn tag<'a>(tags: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    tags.split(|&b| b == b';').find_map(|t| {
        let (k, v) = match t.iter().position(|&b| b == b'=') {
            Some(i) => (&t[..i], &t[i + 1..]),
            None => (t, &t[t.len()..]),
        };
        (k == key).then_some(v)
    })
}

/// A line's tags (without `@`), command and parameters.
fn split(line: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let mut rest = line;
    let mut tags: &[u8] = &[];
    if rest.first() == Some(&b'@') {
        let (t, r) = split_space(rest);
        tags = &t[1..];
        rest = r;
    }
    if rest.first() == Some(&b':') {
        rest = split_space(rest).1;
    }
    let (cmd, params) = split_space(rest);
    (tags, cmd, params)
}

/// The trailing parameter (after ` :`), or the last one.
fn trailing(params: &[u8]) -> &[u8] {
    if let Some(t) = params.strip_prefix(b":") {
        return t;
    }
    match params.windows(2).position(|w| w == b" :") {
        Some(i) => &params[i + 2..],
        None => params.rsplit(|&b| b == b' ').next().unwrap_or(params),
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The request in flight.
#[derive(Debug)]
struct Pending {
    sent: Instant,
    seen_at_send: usize,
    batch: Option<Vec<u8>>,
    lines: Vec<HistLine>,
    done: Option<Instant>,
    failed: Option<String>,
}

/// The probe's side of the conversation.
struct Session {
    chan: String,
    out: Vec<u8>,
    live: HashMap<(u64, u64), usize>,
    pending: Option<Pending>,
    cap_ls: Option<Vec<String>>,
    cap_ls_done: bool,
    cap_answered: bool,
    registered: bool,
    joined: bool,
    setup_error: Option<String>,
    result: ProbeResult,
}

impl Session {
    fn line(&mut self, line: &[u8], at: Instant) {
        let (tags, cmd, params) = split(line);
        match cmd {
            b"PING" => {
                self.out.extend_from_slice(b"PONG ");
                self.out.extend_from_slice(params);
                self.out.extend_from_slice(b"\r\n");
            }
            b"PRIVMSG" => {
                let Line::Privmsg { target, text } = parse_line(line) else {
                    return;
                };
                let key = parse_text(text).map(|(sid, seq, _)| (sid, seq));
                let batch = tag(tags, b"batch");
                if let Some(p) = self.pending.as_mut() {
                    if batch.is_some() && p.batch.as_deref() == batch {
                        p.lines.push(HistLine {
                            msgid: tag(tags, b"msgid").map(lossy),
                            time: tag(tags, b"time").map(lossy),
                            key,
                        });
                        return;
                    }
                }
                if target == self.chan.as_bytes() {
                    if let Some(k) = key {
                        let n = self.live.len();
                        self.live.entry(k).or_insert(n);
                    }
                }
            }
            b"BATCH" => {
                let (r, rest) = split_space(params);
                let Some(p) = self.pending.as_mut() else {
                    return;
                };
                if let Some(r) = r.strip_prefix(b"+") {
                    if p.batch.is_none() && split_space(rest).0 == b"chathistory" {
                        p.batch = Some(r.to_vec());
                    }
                } else if let Some(r) = r.strip_prefix(b"-") {
                    if p.batch.as_deref() == Some(r) {
                        p.done = Some(at);
                    }
                }
            }
            b"CAP" => {
                let (_nick, rest) = split_space(params);
                let (sub, rest) = split_space(rest);
                match sub {
                    b"LS" => {
                        let more = rest.starts_with(b"* ");
                        let caps = self.cap_ls.get_or_insert_with(Vec::new);
                        for c in trailing(rest).split(|&b| b == b' ') {
                            if !c.is_empty() {
                                // `name=value` under CAP LS 302: the name.
                                let name = c.split(|&b| b == b'=').next().unwrap_or(c);
                                caps.push(lossy(name));
                            }
                        }
                        self.cap_ls_done = !more;
                    }
                    b"ACK" => {
                        self.cap_answered = true;
                        self.result.caps = trailing(rest)
                            .split(|&b| b == b' ')
                            .filter(|c| !c.is_empty())
                            .map(lossy)
                            .collect();
                    }
                    b"NAK" => self.cap_answered = true,
                    _ => {}
                }
            }
            b"001" => self.registered = true,
            b"005" => {
                for t in params.split(|&b| b == b' ') {
                    if let Some(v) = t.strip_prefix(b"CHATHISTORY=") {
                        self.result.max_request =
                            std::str::from_utf8(v).ok().and_then(|v| v.parse().ok());
                    }
                }
            }
            b"366" => self.joined = true,
            b"FAIL" => self.refused(line, at),
            // No CAP at all: registration goes on without it.
            b"421" if !self.registered && split_space(split_space(params).1).0 == b"CAP" => {
                self.cap_ls_done = true;
                self.cap_answered = true;
            }
            // No MOTD is no error.
            b"422" => {}
            b"ERROR" => self.refused(line, at),
            [a, b, c] if (b'4'..=b'5').contains(a) && b.is_ascii_digit() && c.is_ascii_digit() => {
                self.refused(line, at)
            }
            _ => {}
        }
    }

    fn refused(&mut self, line: &[u8], at: Instant) {
        if !self.joined {
            self.setup_error.get_or_insert_with(|| lossy(line));
        } else if let Some(p) = self.pending.as_mut().filter(|p| p.done.is_none()) {
            p.failed = Some(lossy(line));
            p.done = Some(at);
        } else {
            self.result.note(format!("unexpected: {}", lossy(line)));
        }
    }
}

/// The connection: a reader with a line buffer, and the writer.
struct Conn {
    sock: TcpStream,
    buf: Vec<u8>,
    len: usize,
}

impl Conn {
    /// Writes what `s` queued, waits (at most until `until`) for what the
    /// server sends, hands every complete line to `s`, and writes what that
    /// queued (PONGs).
    fn pump(&mut self, s: &mut Session, until: Instant) -> anyhow::Result<()> {
        self.write(s)?;
        let wait = until.saturating_duration_since(Instant::now());
        self.sock
            .set_read_timeout(Some(wait.max(Duration::from_micros(100))))?;
        if self.len == self.buf.len() {
            if self.buf.len() >= 1 << 20 {
                bail!("a line longer than 1 MiB");
            }
            self.buf.resize(self.buf.len() * 2, 0);
        }
        match self.sock.read(&mut self.buf[self.len..]) {
            Ok(0) => bail!("the server closed the connection"),
            Ok(n) => {
                let at = Instant::now();
                self.len += n;
                let mut start = 0;
                while let Some(nl) = self.buf[start..self.len].iter().position(|&b| b == b'\n') {
                    let mut line = &self.buf[start..start + nl];
                    if let [l @ .., b'\r'] = line {
                        line = l;
                    }
                    s.line(line, at);
                    start += nl + 1;
                }
                self.buf.copy_within(start..self.len, 0);
                self.len -= start;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e).context("reading"),
        }
        self.write(s)
    }

    /// Writes what `s` queued.
    fn write(&mut self, s: &mut Session) -> anyhow::Result<()> {
        if !s.out.is_empty() {
            self.sock.write_all(&s.out).context("writing")?;
            s.out.clear();
        }
        Ok(())
    }

    /// [`Conn::pump`] until `done(s)`, a setup error, or `deadline`.
    fn until(
        &mut self,
        s: &mut Session,
        deadline: Instant,
        what: &str,
        done: impl Fn(&Session) -> bool,
    ) -> anyhow::Result<()> {
        while !done(s) {
            if let Some(e) = &s.setup_error {
                bail!("{what}: {e}");
            }
            if Instant::now() > deadline {
                bail!("{what}: timed out");
            }
            self.pump(s, deadline)?;
        }
        Ok(())
    }
}

/// A probe running on its own thread; see the module doc.
#[derive(Debug)]
pub struct HistoryProbe {
    state: Arc<AtomicU8>,
    thread: JoinHandle<ProbeResult>,
}

/// Opens and closes a probe's window from the load's `on_window` callback.
#[derive(Debug, Clone)]
pub struct ProbeSwitch(Arc<AtomicU8>);

impl ProbeSwitch {
    /// The window opened: start asking.
    pub fn go(&self) {
        let _ = self
            .0
            .compare_exchange(WAIT, RUN, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The window closed: stop asking (an answer still out is waited for).
    pub fn stop(&self) {
        self.0.store(STOP, Ordering::Release);
    }
}

impl HistoryProbe {
    /// Connects as `nick`, registers, joins `chan` and waits there for
    /// [`ProbeSwitch::go`]; returns once it has joined (or why it could not).
    pub fn start(
        addr: SocketAddr,
        chan: String,
        nick: String,
        spec: ProbeSpec,
        cpus: Vec<usize>,
    ) -> anyhow::Result<HistoryProbe> {
        if !(spec.rate.is_finite() && spec.rate > 0.0) || spec.limit == 0 {
            bail!("the probe needs a positive rate and limit");
        }
        let state = Arc::new(AtomicU8::new(WAIT));
        let (ready_tx, ready_rx) = mpsc::channel();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("chat-probe".into())
            .spawn(move || {
                if !cpus.is_empty() {
                    if let Err(e) = machine::pin_current_thread(&cpus) {
                        let _ = ready_tx.send(Err(e.context("pinning the probe")));
                        return ProbeResult::default();
                    }
                }
                let (mut conn, mut s) = match setup(addr, &chan, &nick) {
                    Ok(x) => {
                        let _ = ready_tx.send(Ok(()));
                        x
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return ProbeResult::default();
                    }
                };
                probe(&mut conn, &mut s, spec, &st);
                let mut r = s.result;
                r.latency = ProbeLatency::of(&r.samples_us);
                r.live_messages = s.live.len() as u64;
                r
            })
            .context("spawning the probe thread")?;
        match ready_rx.recv_timeout(SETUP_TIMEOUT + Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(HistoryProbe { state, thread }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                state.store(STOP, Ordering::Release);
                bail!("the probe did not set up in time")
            }
        }
    }

    /// What opens and closes its window.
    pub fn switch(&self) -> ProbeSwitch {
        ProbeSwitch(self.state.clone())
    }

    /// Stops it (if it still runs) and returns what it saw.
    pub fn finish(self) -> ProbeResult {
        self.state.store(STOP, Ordering::Release);
        self.thread.join().unwrap_or_else(|_| ProbeResult {
            problems: vec!["the probe thread panicked".into()],
            ..ProbeResult::default()
        })
    }
}

fn setup(addr: SocketAddr, chan: &str, nick: &str) -> anyhow::Result<(Conn, Session)> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("probe: connecting to {addr}"))?;
    sock.set_nodelay(true)?;
    let mut conn = Conn {
        sock,
        buf: vec![0; 64 * 1024],
        len: 0,
    };
    let mut s = Session {
        chan: chan.to_owned(),
        out: format!("CAP LS 302\r\nNICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n").into_bytes(),
        live: HashMap::new(),
        pending: None,
        cap_ls: None,
        cap_ls_done: false,
        cap_answered: false,
        registered: false,
        joined: false,
        setup_error: None,
        result: ProbeResult::default(),
    };
    conn.until(&mut s, deadline, "probe: CAP LS", |s| {
        s.cap_ls_done || s.registered
    })?;
    let offered = s.cap_ls.clone().unwrap_or_default();
    let has = |c: &str| offered.iter().any(|o| o == c);
    let mut want: Vec<&str> = ["batch", "server-time", "message-tags"]
        .into_iter()
        .filter(|c| has(c))
        .collect();
    if has("draft/chathistory") && has("batch") {
        want.push("draft/chathistory");
    }
    if !s.registered && s.cap_ls.is_some() {
        if !want.is_empty() {
            s.out
                .extend_from_slice(format!("CAP REQ :{}\r\n", want.join(" ")).as_bytes());
            conn.until(&mut s, deadline, "probe: CAP REQ", |s| s.cap_answered)?;
        }
        s.out.extend_from_slice(b"CAP END\r\n");
    }
    conn.until(&mut s, deadline, "probe: registering", |s| s.registered)?;
    s.out
        .extend_from_slice(format!("JOIN {chan}\r\n").as_bytes());
    conn.until(&mut s, deadline, "probe: joining", |s| s.joined)?;
    let acked = |c: &str| s.result.caps.iter().any(|a| a == c);
    s.result.chathistory = acked("draft/chathistory") && acked("batch");
    Ok((conn, s))
}

/// Listens until the window opens, asks at `spec.rate` while it is open (or
/// only listens without `draft/chathistory`), and returns when it closes.
fn probe(conn: &mut Conn, s: &mut Session, spec: ProbeSpec, state: &AtomicU8) {
    let listen = |conn: &mut Conn, s: &mut Session| -> bool {
        match conn.pump(s, Instant::now() + TICK) {
            Ok(()) => true,
            Err(e) => {
                s.result.note(format!("probe: {e:#}"));
                false
            }
        }
    };
    while state.load(Ordering::Acquire) == WAIT {
        if !listen(conn, s) {
            return;
        }
    }
    let interval = Duration::from_secs_f64(1.0 / spec.rate);
    let want = spec.limit.min(s.result.max_request.unwrap_or(usize::MAX));
    let mut asking = s.result.chathistory;
    let mut due = Instant::now();
    while state.load(Ordering::Acquire) == RUN {
        let now = Instant::now();
        if !asking || now < due {
            let until = if asking {
                due.min(now + TICK)
            } else {
                now + TICK
            };
            if let Err(e) = conn.pump(s, until) {
                s.result.note(format!("probe: {e:#}"));
                return;
            }
            continue;
        }
        // Ask.
        s.out.extend_from_slice(
            format!("CHATHISTORY LATEST {} * {}\r\n", s.chan, spec.limit).as_bytes(),
        );
        let seen_at_send = s.live.len();
        let sent = Instant::now();
        if let Err(e) = conn.write(s) {
            s.result.note(format!("probe: {e:#}"));
            return;
        }
        s.pending = Some(Pending {
            sent,
            seen_at_send,
            batch: None,
            lines: Vec::new(),
            done: None,
            failed: None,
        });
        s.result.requests += 1;
        let deadline = sent + ANSWER_TIMEOUT;
        while s.pending.as_ref().is_some_and(|p| p.done.is_none()) {
            if Instant::now() > deadline {
                break;
            }
            if let Err(e) = conn.pump(s, deadline) {
                s.result.bad_answers += 1;
                s.result.note(format!("probe: {e:#}"));
                return;
            }
        }
        let p = s.pending.take().expect("a request is pending");
        let Some(done) = p.done else {
            s.result.bad_answers += 1;
            s.result.note(format!(
                "request {}: no answer within {} s; the probe stops asking",
                s.result.requests,
                ANSWER_TIMEOUT.as_secs()
            ));
            asking = false;
            continue;
        };
        if let Some(f) = p.failed {
            s.result.bad_answers += 1;
            s.result.note(format!("request {}: {f}", s.result.requests));
        } else {
            s.result.answers += 1;
            s.result.messages += p.lines.len() as u64;
            if p.lines.len() == want {
                s.result.full_answers += 1;
            }
            s.result
                .samples_us
                .push(done.duration_since(p.sent).as_secs_f64() * 1e6);
            if let Err(e) = check_answer(&p.lines, want, p.seen_at_send, &s.live) {
                s.result.bad_answers += 1;
                let n = s.result.requests;
                s.result.note(format!("answer {n}: {e}"));
            }
        }
        due += interval;
        let now = Instant::now();
        if due < now {
            s.result.late_sends += 1;
            due = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hl(id: &str, time: &str, sid: u64, seq: u64) -> HistLine {
        HistLine {
            msgid: Some(id.into()),
            time: Some(time.into()),
            key: Some((sid, seq)),
        }
    }

    fn live(keys: &[(u64, u64)]) -> HashMap<(u64, u64), usize> {
        keys.iter().enumerate().map(|(i, &k)| (k, i)).collect()
    }

    #[test]
    fn answers_are_checked() {
        let t = "2026-01-01T00:00:00.000Z";
        let t2 = "2026-01-01T00:00:00.001Z";
        let seen = live(&[(0, 0), (1, 0), (0, 1), (1, 1)]);
        // The latest 3 of 4 seen, in order.
        let ok = [hl("b", t, 1, 0), hl("c", t, 0, 1), hl("d", t2, 1, 1)];
        assert_eq!(check_answer(&ok, 3, 4, &seen), Ok(()));
        // Plus one not seen live yet.
        let more = [hl("c", t, 0, 1), hl("d", t2, 1, 1), hl("e", t2, 0, 2)];
        assert_eq!(check_answer(&more, 3, 4, &seen), Ok(()));
        // Fewer than exist (as many as were delivered before asking is fine).
        assert_eq!(check_answer(&ok[..2], 3, 2, &seen), Ok(()));
        assert!(check_answer(&ok[..2], 3, 4, &seen).is_err());
        // More than asked.
        assert!(check_answer(&ok, 2, 4, &seen).is_err());
        // Stale: not the latest.
        let old = [hl("a", t, 0, 0), hl("b", t, 1, 0)];
        assert!(check_answer(&old, 2, 4, &seen).is_err());
        // A gap, a swap, a repeat, a missing tag, time going back.
        let gap = [hl("a", t, 0, 0), hl("c", t, 0, 1), hl("d", t, 1, 1)];
        assert!(check_answer(&gap, 3, 4, &seen).is_err());
        let swap = [hl("c", t, 0, 1), hl("b", t, 1, 0), hl("d", t, 1, 1)];
        assert!(check_answer(&swap, 3, 4, &seen).is_err());
        let twice = [hl("c", t, 0, 1), hl("c", t, 1, 1)];
        assert!(check_answer(&twice, 2, 2, &seen).is_err());
        let mut untagged = ok.clone();
        untagged[1].msgid = None;
        assert!(check_answer(&untagged, 3, 4, &seen).is_err());
        let back = [hl("b", t2, 1, 0), hl("c", t, 0, 1), hl("d", t2, 1, 1)];
        assert!(check_answer(&back, 3, 4, &seen).is_err());
        // An unseen one before a seen one.
        let early = [hl("x", t, 0, 9), hl("d", t, 1, 1)];
        assert!(check_answer(&early, 2, 2, &seen).is_err());
        // Per sender, sequences only grow even among unseen ones.
        let unseen = [hl("x", t, 5, 2), hl("y", t, 5, 1)];
        assert!(check_answer(&unseen, 2, 0, &seen).is_err());
        assert_eq!(check_answer(&[], 100, 0, &seen), Ok(()));
    }

    #[test]
    fn lines_split_and_tags_read() {
        let line =
            b"@batch=h0x1;time=2026-01-01T00:00:00.000Z;msgid=abc :n!u@h PRIVMSG #c :1 2 3 x";
        let (tags, cmd, params) = split(line);
        assert_eq!(cmd, b"PRIVMSG");
        assert_eq!(params, b"#c :1 2 3 x");
        assert_eq!(tag(tags, b"batch"), Some(&b"h0x1"[..]));
        assert_eq!(tag(tags, b"msgid"), Some(&b"abc"[..]));
        assert_eq!(tag(tags, b"nope"), None);
        assert_eq!(trailing(b"* LS :a b=1 c"), b"a b=1 c");
        assert_eq!(trailing(b":x y"), b"x y");
        assert_eq!(trailing(b"x y"), b"y");
    }

    #[test]
    fn a_session_follows_an_answer() {
        let mut s = Session {
            chan: "#c".into(),
            out: Vec::new(),
            live: HashMap::new(),
            pending: None,
            cap_ls: None,
            cap_ls_done: false,
            cap_answered: false,
            registered: false,
            joined: false,
            setup_error: None,
            result: ProbeResult::default(),
        };
        let now = Instant::now();
        s.line(b":srv CAP * LS * :batch server-time", now);
        assert!(!s.cap_ls_done);
        s.line(b":srv CAP * LS :message-tags draft/chathistory sts=x", now);
        assert!(s.cap_ls_done);
        assert_eq!(
            s.cap_ls.as_deref().unwrap(),
            [
                "batch",
                "server-time",
                "message-tags",
                "draft/chathistory",
                "sts"
            ]
        );
        s.line(b":srv CAP p ACK :batch draft/chathistory", now);
        assert_eq!(s.result.caps, ["batch", "draft/chathistory"]);
        s.line(b":srv 001 p :Welcome", now);
        s.line(b":srv 005 p CHATHISTORY=50 NICKLEN=30 :are supported", now);
        assert_eq!(s.result.max_request, Some(50));
        s.line(b":srv 366 p #c :End of /NAMES list", now);
        assert!(s.registered && s.joined);
        s.line(b"@time=x;msgid=m1 :a!a@h PRIVMSG #c :0 0 123 xx", now);
        s.line(b"PING :srv", now);
        assert_eq!(s.out, b"PONG :srv\r\n");
        s.pending = Some(Pending {
            sent: now,
            seen_at_send: 1,
            batch: None,
            lines: Vec::new(),
            done: None,
            failed: None,
        });
        s.line(b":srv BATCH +h1 chathistory #c", now);
        s.line(
            b"@batch=h1;time=t;msgid=m1 :a!a@h PRIVMSG #c :0 0 123 xx",
            now,
        );
        s.line(b"@time=y;msgid=m2 :a!a@h PRIVMSG #c :0 1 124 xx", now);
        s.line(b":srv BATCH -h1", now);
        let p = s.pending.take().unwrap();
        assert!(p.done.is_some() && p.failed.is_none());
        assert_eq!(p.lines.len(), 1);
        assert_eq!(p.lines[0].key, Some((0, 0)));
        assert_eq!(s.live.len(), 2, "live messages are not history");
        assert_eq!(check_answer(&p.lines, 50, 1, &s.live), Ok(()));
    }

    #[test]
    fn latency_percentiles() {
        let l = ProbeLatency::of(&(1..=200).map(f64::from).collect::<Vec<_>>());
        assert_eq!(
            (l.samples, l.p50_us, l.p99_us, l.max_us),
            (200, 100.0, 198.0, 200.0)
        );
        assert_eq!(ProbeLatency::of(&[]), ProbeLatency::default());
        assert_eq!(ProbeLatency::of(&[7.0]).p99_us, 7.0);
    }
}
