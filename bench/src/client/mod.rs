//! The echo load generator: C connections, each sending an S-byte message and
//! waiting for its echo before the next (ping-pong), from one pinned thread or
//! from T threads (`threads`), each with its own share of the connections and its
//! own event loop, whose results are merged (latency histograms added, never
//! percentiles averaged).
//!
//! The client must cost as little CPU per request as possible, because on a 2-CPU
//! machine it runs on the only CPU the server does not have. Two engines share the
//! bookkeeping in [`Schedule`] and [`Recorder`]:
//!
//! - `uring` (default): each connection keeps one multishot receive armed on a
//!   provided-buffer ring for its whole life and sends each message with one
//!   `SEND`; one `io_uring_enter` per loop turn submits everything the last batch
//!   of completions asked for and waits for the next batch (with DEFER_TASKRUN,
//!   the completion work runs inside that one call).
//! - `mio`: an edge-triggered epoll loop that stops reading after a short read.
//!
//! Closed loop sends the next message as soon as the echo arrives (maximum
//! throughput). Open loop sends at a fixed total rate: request *k* of connection *c*
//! is due at `start + (k·C + c) / rate`, and its latency is measured from that due
//! time, not from when it could actually be sent. A stalled server therefore shows
//! up in every request that should have been sent during the stall (the correction
//! for coordinated omission that wrk2 makes), not in one slow sample.
//!
//! This module must never keep running past its deadline, and never touch an
//! address it was not given.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::machine;

/// Binds `socket` to `source` with `IP_BIND_ADDRESS_NO_PORT`: the address now,
/// the port at connect time, per destination — so every source/destination
/// pair has the whole ephemeral range (~28,000 ports here).
pub fn bind_source(socket: &socket2::Socket, source: std::net::IpAddr) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int from a valid pointer, on a valid fd.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    socket.bind(&SocketAddr::new(source, 0).into())
}

/// Closed loop (next message right after the echo) or open loop (fixed total rate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Each connection sends again as soon as its echo arrives.
    Closed,
    /// Requests are due at a fixed total rate (requests per second over all
    /// connections); latency counts from the due time.
    Open {
        /// Requests per second, all connections together.
        rate: f64,
    },
}

/// Which I/O engine the client runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ClientIo {
    /// io_uring: one `io_uring_enter` per batch of completions.
    #[default]
    Uring,
    /// Edge-triggered epoll through mio.
    Mio,
}

/// What one load run does.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The echo server.
    pub addr: SocketAddr,
    /// Concurrent connections.
    pub conns: usize,
    /// Bytes per message.
    pub msg_size: usize,
    /// Closed or open loop.
    pub mode: Mode,
    /// Load before the measured window (not recorded).
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// CPUs the client threads are pinned to (empty: not pinned); see
    /// [`thread_cpus`].
    pub cpus: Vec<usize>,
    /// I/O engine.
    pub io: ClientIo,
    /// Client threads, each with its own share of the connections and its own
    /// event loop (at least 1, at most `conns`).
    pub threads: usize,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest sample.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl Latency {
    /// Percentiles of a histogram of nanoseconds.
    pub fn from_hist(h: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1_000.0;
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1_000.0,
        }
    }
}

/// What one load run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// `closed` or `open@RATE`.
    pub mode: String,
    /// Connections asked for.
    pub conns: usize,
    /// Bytes per message.
    pub msg_size: usize,
    /// Echoes completed inside the measured window.
    pub requests: u64,
    /// Length of the measured window in seconds.
    pub window_s: f64,
    /// Echoes per second over the window.
    pub rps: f64,
    /// Latency of the echoes completed in the window.
    pub latency: Latency,
    /// Failed connects, reads, writes, early EOFs and echoes that differed from
    /// what was sent (over the whole run, warm-up included).
    pub errors: u64,
    /// Connections still working at the end.
    pub conns_alive: usize,
    /// The client threads' CPU time over the window ÷ the window, in percent of
    /// one CPU (summed over the threads).
    pub client_cpu_pct: f64,
    /// Open loop: due requests that could not be sent on time because their
    /// connection was still waiting for an earlier echo, at the end of the run.
    pub backlog: u64,
    /// Client threads that ran the load.
    pub client_threads: usize,
}

/// The measured window opens or closes: the caller reads server counters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The warm-up is over; counting starts.
    Start,
    /// Counting stopped.
    End,
}

/// Nanoseconds since the run's time origin.
type Nanos = u64;

/// Records the latency of echoes that complete inside the measured window.
#[derive(Debug)]
pub struct Recorder {
    hist: Histogram<u64>,
    window: Option<(Nanos, Option<Nanos>)>,
    completed: u64,
    errors: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// A recorder that counts nothing until [`Recorder::open`].
    pub fn new() -> Recorder {
        Recorder {
            // 1 ns .. 100 s at 3 significant digits.
            hist: Histogram::new_with_bounds(1, 100_000_000_000, 3)
                .expect("constant histogram bounds are valid"),
            window: None,
            completed: 0,
            errors: 0,
        }
    }

    /// Starts counting at `now`.
    pub fn open(&mut self, now: Nanos) {
        self.window = Some((now, None));
    }

    /// Stops counting at `now`.
    pub fn close(&mut self, now: Nanos) {
        if let Some((start, _)) = self.window {
            self.window = Some((start, Some(now)));
        }
    }

    /// An echo that was due (open loop) or sent (closed loop) at `due` completed at
    /// `done`. Counted only while the window is open.
    pub fn record(&mut self, due: Nanos, done: Nanos) {
        if matches!(self.window, Some((_, None))) {
            self.completed += 1;
            self.hist.saturating_record(done.saturating_sub(due).max(1));
        }
    }

    /// Counts one failure.
    pub fn error(&mut self) {
        self.errors += 1;
    }

    /// Echoes counted.
    pub fn completed(&self) -> u64 {
        self.completed
    }

    /// The latency histogram (nanoseconds).
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.hist
    }

    /// Window length in nanoseconds (0 until closed).
    pub fn window_nanos(&self) -> Nanos {
        match self.window {
            Some((s, Some(e))) => e.saturating_sub(s),
            _ => 0,
        }
    }
}

/// When each connection sends next, for both loop modes.
#[derive(Debug)]
pub struct Schedule {
    mode: Mode,
    conns: usize,
    /// Open loop: time origin of the schedule.
    origin: Nanos,
    /// The due (open) or send (closed) time of each connection's message in flight.
    due: Vec<Nanos>,
    /// Open loop: index of each connection's next request.
    next: Vec<u64>,
    /// Open loop: connections waiting for their next due time.
    waiting: BinaryHeap<Reverse<(Nanos, usize)>>,
}

impl Schedule {
    /// A schedule for `conns` connections starting at `origin`.
    pub fn new(mode: Mode, conns: usize, origin: Nanos) -> Schedule {
        Schedule {
            mode,
            conns,
            origin,
            due: vec![0; conns],
            next: vec![0; conns],
            waiting: BinaryHeap::new(),
        }
    }

    /// Open loop: when request `k` of connection `c` is due.
    fn due_time(&self, c: usize, k: u64, rate: f64) -> Nanos {
        let slot = (k as f64) * (self.conns as f64) + c as f64;
        self.origin + (slot * 1e9 / rate) as Nanos
    }

    /// Connection `c` is ready to send (just connected, or its echo just arrived).
    /// Returns true if it should send now; otherwise it is parked until its due time
    /// (see [`Schedule::pop_due`]).
    pub fn ready(&mut self, c: usize, now: Nanos) -> bool {
        match self.mode {
            Mode::Closed => {
                self.due[c] = now;
                true
            }
            Mode::Open { rate } => {
                let k = self.next[c];
                self.next[c] += 1;
                let due = self.due_time(c, k, rate);
                self.due[c] = due;
                if due <= now {
                    true
                } else {
                    self.waiting.push(Reverse((due, c)));
                    false
                }
            }
        }
    }

    /// The due or send time of connection `c`'s message in flight.
    pub fn due(&self, c: usize) -> Nanos {
        self.due[c]
    }

    /// A parked connection whose due time has come, if any.
    pub fn pop_due(&mut self, now: Nanos) -> Option<usize> {
        match self.waiting.peek() {
            Some(Reverse((t, c))) if *t <= now => {
                let c = *c;
                self.waiting.pop();
                Some(c)
            }
            _ => None,
        }
    }

    /// When the next parked connection is due.
    pub fn next_due(&self) -> Option<Nanos> {
        self.waiting.peek().map(|Reverse((t, _))| *t)
    }

    /// Open loop: requests that were due by `now` but not yet sent (connections
    /// still waiting for an earlier echo).
    pub fn backlog(&self, now: Nanos) -> u64 {
        let Mode::Open { rate } = self.mode else {
            return 0;
        };
        let elapsed = now.saturating_sub(self.origin) as f64 / 1e9;
        let due_total = (elapsed * rate) as u64;
        let issued: u64 = self.next.iter().sum();
        due_total.saturating_sub(issued)
    }
}

/// Runs one load against `cfg.addr` on `cfg.threads` new threads pinned to
/// `cfg.cpus` (see [`thread_cpus`]), calling `on_window` when the measured window
/// opens and closes (on the client thread if there is one, else on the calling
/// thread at the same instants the client threads open and close theirs).
pub fn run_load(
    cfg: &LoadConfig,
    on_window: &mut (dyn FnMut(Window) + Send),
) -> anyhow::Result<LoadReport> {
    if cfg.conns == 0 || cfg.msg_size == 0 {
        bail!("need at least one connection and a message of at least one byte");
    }
    if let Mode::Open { rate } = cfg.mode {
        if !(rate.is_finite() && rate > 0.0) {
            bail!("open-loop rate must be a positive number of requests per second");
        }
    }
    let threads = cfg.threads.clamp(1, cfg.conns);
    if threads == 1 {
        return std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("bench-client".into())
                .spawn_scoped(s, || {
                    prepare_thread(&cfg.cpus)?;
                    let conns = connect_all(cfg.addr, cfg.conns)?;
                    run_engine(cfg, conns, on_window, Instant::now())
                })
                .context("spawning the client thread")?
                .join()
                .unwrap_or_else(|_| bail!("the client thread panicked"))
        })
        .map(|f| merge(cfg, vec![f]));
    }
    let shares = split_conns(cfg.conns, threads);
    let origin = std::sync::OnceLock::new();
    let ready = std::sync::Barrier::new(threads + 1);
    let finished = std::thread::scope(|s| -> anyhow::Result<Vec<Finished>> {
        let mut handles = Vec::new();
        for (i, &share) in shares.iter().enumerate() {
            let mine = LoadConfig {
                conns: share,
                mode: match cfg.mode {
                    // Each thread keeps its connections' request interval: its
                    // share of the total rate.
                    Mode::Open { rate } => Mode::Open {
                        rate: rate * share as f64 / cfg.conns as f64,
                    },
                    Mode::Closed => Mode::Closed,
                },
                cpus: thread_cpus(&cfg.cpus, threads, i),
                threads: 1,
                ..cfg.clone()
            };
            let (origin, ready) = (&origin, &ready);
            let h = std::thread::Builder::new()
                .name(format!("bench-client-{i}"))
                .spawn_scoped(s, move || {
                    // Every thread reaches the barrier, whatever happened
                    // before it, so that none waits forever.
                    let conns = prepare_thread(&mine.cpus)
                        .and_then(|()| connect_all(mine.addr, mine.conns));
                    ready.wait();
                    let origin = *origin.get_or_init(Instant::now);
                    run_engine(&mine, conns?, &mut |_| {}, origin)
                })
                .context("spawning a client thread")?;
            handles.push(h);
        }
        ready.wait();
        let origin = *origin.get_or_init(Instant::now);
        // The threads open and close their windows at these same instants.
        let sleep_until =
            |t: Instant| std::thread::sleep(t.saturating_duration_since(Instant::now()));
        sleep_until(origin + cfg.warmup);
        on_window(Window::Start);
        sleep_until(origin + cfg.warmup + cfg.duration);
        on_window(Window::End);
        let mut out = Vec::new();
        for (i, h) in handles.into_iter().enumerate() {
            let f = h
                .join()
                .unwrap_or_else(|_| bail!("client thread {i} panicked"))
                .with_context(|| format!("client thread {i}"))?;
            out.push(f);
        }
        Ok(out)
    })?;
    Ok(merge(cfg, finished))
}

/// Pins the calling client thread (if `cpus` is not empty) and takes timer slack
/// out of its waits.
fn prepare_thread(cpus: &[usize]) -> anyhow::Result<()> {
    // Open-loop sends are timed by the wait's timeout: take timer slack (50 µs by
    // default) out of the client's lateness.
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    if !cpus.is_empty() {
        machine::pin_current_thread(cpus)
            .with_context(|| format!("pinning the client to CPUs {cpus:?}"))?;
    }
    Ok(())
}

fn run_engine(
    cfg: &LoadConfig,
    conns: Vec<TcpStream>,
    on_window: &mut (dyn FnMut(Window) + Send),
    origin: Instant,
) -> anyhow::Result<Finished> {
    match cfg.io {
        ClientIo::Uring => uring::run(cfg, conns, on_window, origin),
        ClientIo::Mio => poll::run(cfg, conns, on_window, origin),
    }
}

/// `conns` connections over `threads` threads: as even as it goes, the first
/// threads taking one more.
pub fn split_conns(conns: usize, threads: usize) -> Vec<usize> {
    let threads = threads.clamp(1, conns.max(1));
    (0..threads)
        .map(|i| conns / threads + usize::from(i < conns % threads))
        .collect()
}

/// The CPUs client thread `i` of `threads` is pinned to: its own CPU when the
/// list has one for each thread, else the whole list (the threads share it),
/// none when the list is empty (unpinned).
pub fn thread_cpus(cpus: &[usize], threads: usize, i: usize) -> Vec<usize> {
    if cpus.len() >= threads.max(1) {
        vec![cpus[i % cpus.len()]]
    } else {
        cpus.to_vec()
    }
}

/// What one client thread measured: its report and its latency histogram.
#[derive(Debug)]
pub struct Finished {
    /// The thread's own report.
    pub report: LoadReport,
    /// Its latencies (nanoseconds), for merging.
    pub hist: Histogram<u64>,
}

/// One report from the threads' reports: counts and CPU added, rates added
/// (each over its own window), latency from the sum of the histograms.
pub fn merge(cfg: &LoadConfig, parts: Vec<Finished>) -> LoadReport {
    let mut hist = Recorder::new().hist;
    let n = parts.len().max(1);
    let mut out = LoadReport {
        mode: match cfg.mode {
            Mode::Closed => "closed".into(),
            Mode::Open { rate } => format!("open@{rate}"),
        },
        conns: 0,
        msg_size: cfg.msg_size,
        requests: 0,
        window_s: 0.0,
        rps: 0.0,
        latency: Latency::default(),
        errors: 0,
        conns_alive: 0,
        client_cpu_pct: 0.0,
        backlog: 0,
        client_threads: parts.len(),
    };
    for p in parts {
        let r = p.report;
        out.conns += r.conns;
        out.requests += r.requests;
        out.window_s += r.window_s / n as f64;
        out.rps += r.rps;
        out.errors += r.errors;
        out.conns_alive += r.conns_alive;
        out.client_cpu_pct += r.client_cpu_pct;
        out.backlog += r.backlog;
        hist.add(&p.hist)
            .expect("client histograms share their bounds");
    }
    out.latency = Latency::from_hist(&hist);
    out
}

/// Opens `n` connections with TCP_NODELAY.
fn connect_all(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    (0..n)
        .map(|i| {
            let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                .with_context(|| format!("connection {i} to {addr}"))?;
            s.set_nodelay(true).context("TCP_NODELAY")?;
            Ok(s)
        })
        .collect()
}

/// Bookkeeping common to both engines: time, schedule, recorder, window phases.
struct Run<'a> {
    cfg: &'a LoadConfig,
    t0: Instant,
    warm_end: Nanos,
    end: Nanos,
    sched: Schedule,
    rec: Recorder,
    pattern: Vec<u8>,
    in_window: bool,
    cpu_at_start: Duration,
    client_cpu_pct: f64,
    on_window: &'a mut (dyn FnMut(Window) + Send),
}

impl<'a> Run<'a> {
    fn new(
        cfg: &'a LoadConfig,
        on_window: &'a mut (dyn FnMut(Window) + Send),
        t0: Instant,
    ) -> Run<'a> {
        let warm_end = cfg.warmup.as_nanos() as Nanos;
        let end = warm_end + cfg.duration.as_nanos() as Nanos;
        Run {
            cfg,
            t0,
            warm_end,
            end,
            sched: Schedule::new(cfg.mode, cfg.conns, 0),
            rec: Recorder::new(),
            pattern: (0..cfg.msg_size).map(|i| (i % 251) as u8 ^ 0x5a).collect(),
            in_window: false,
            cpu_at_start: Duration::ZERO,
            client_cpu_pct: 0.0,
            on_window,
        }
    }

    fn now(&self) -> Nanos {
        self.t0.elapsed().as_nanos() as Nanos
    }

    /// Opens or closes the window when its time has come; false once the run is over.
    fn tick(&mut self, now: Nanos) -> bool {
        if !self.in_window && now >= self.warm_end {
            (self.on_window)(Window::Start);
            self.in_window = true;
            self.cpu_at_start = machine::thread_cpu_time();
            self.rec.open(self.now());
        }
        if now >= self.end {
            let now = self.now();
            self.rec.close(now);
            let cpu = machine::thread_cpu_time().saturating_sub(self.cpu_at_start);
            (self.on_window)(Window::End);
            let window = self.rec.window_nanos().max(1) as f64;
            self.client_cpu_pct = cpu.as_nanos() as f64 / window * 100.0;
            return false;
        }
        true
    }

    /// How long the engine may wait: to the next phase change or parked send.
    fn wait_until(&self) -> Nanos {
        let phase = if self.in_window {
            self.end
        } else {
            self.warm_end
        };
        self.sched.next_due().map_or(phase, |t| t.min(phase))
    }

    fn report(self, alive: usize) -> Finished {
        let now = self.now();
        let window = self.rec.window_nanos() as f64 / 1e9;
        let report = LoadReport {
            mode: match self.cfg.mode {
                Mode::Closed => "closed".into(),
                Mode::Open { rate } => format!("open@{rate}"),
            },
            conns: self.cfg.conns,
            msg_size: self.cfg.msg_size,
            requests: self.rec.completed(),
            window_s: window,
            rps: if window > 0.0 {
                self.rec.completed() as f64 / window
            } else {
                0.0
            },
            latency: Latency::from_hist(self.rec.histogram()),
            errors: self.rec.errors,
            conns_alive: alive,
            client_cpu_pct: self.client_cpu_pct,
            backlog: self.sched.backlog(now),
            client_threads: 1,
        };
        Finished {
            report,
            hist: self.rec.hist,
        }
    }
}

mod poll;
mod uring;

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Nanos = 1_000_000;
    const US: Nanos = 1_000;

    fn hist_of(values: &[u64]) -> Histogram<u64> {
        let mut h = Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3).unwrap();
        for &v in values {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        // 1..=10_000 µs, one each: p50 = 5 ms, p99 = 9.9 ms, max = 10 ms.
        let values: Vec<u64> = (1..=10_000).map(|i| i * US).collect();
        let l = Latency::from_hist(&hist_of(&values));
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.001 + 0.01;
        assert!(close(l.p50_us, 5_000.0), "{l:?}");
        assert!(close(l.p90_us, 9_000.0), "{l:?}");
        assert!(close(l.p99_us, 9_900.0), "{l:?}");
        assert!(close(l.p999_us, 9_990.0), "{l:?}");
        assert!(close(l.max_us, 10_000.0), "{l:?}");
        assert!(close(l.mean_us, 5_000.5), "{l:?}");
    }

    #[test]
    fn empty_histogram_reports_zeros() {
        let l = Latency::from_hist(&hist_of(&[]));
        assert_eq!(l, Latency::default());
    }

    #[test]
    fn recorder_counts_only_inside_the_window() {
        let mut r = Recorder::new();
        r.record(0, 10 * US); // warm-up: ignored
        r.open(100 * US);
        r.record(100 * US, 150 * US);
        r.record(150 * US, 250 * US);
        r.close(1_000 * US);
        r.record(1_000 * US, 1_100 * US); // after the window: ignored
        assert_eq!(r.completed(), 2);
        assert_eq!(r.window_nanos(), 900 * US);
        let l = Latency::from_hist(r.histogram());
        assert!((l.max_us - 100.0).abs() < 0.1, "{l:?}");
        assert!((l.p50_us - 50.0).abs() < 0.1, "{l:?}");
    }

    /// Plays an open-loop schedule (1 connection, 1,000 requests/s for 10 s) against
    /// a simulated server that answers in 100 µs but stalls once for one second.
    /// Returns (latency measured from the due time, latency measured from the
    /// actual send time: what an uncorrected client would report).
    fn play(rate: f64, stall_at: Nanos, stall: Nanos) -> (Histogram<u64>, Histogram<u64>) {
        let mut sched = Schedule::new(Mode::Open { rate }, 1, 0);
        let mut corrected = Recorder::new();
        let mut naive = hist_of(&[]);
        corrected.open(0);
        let end = 10_000 * MS;
        let mut now = 0;
        let mut ready = sched.ready(0, now);
        while now < end {
            if !ready {
                now = sched.next_due().expect("parked");
                assert_eq!(sched.pop_due(now), Some(0));
            }
            let sent = now;
            let service = if sent <= stall_at && stall_at < sent + stall {
                stall
            } else {
                100 * US
            };
            now = sent + service;
            corrected.record(sched.due(0), now);
            naive.record(now - sent).unwrap();
            ready = sched.ready(0, now);
        }
        (corrected.histogram().clone(), naive)
    }

    #[test]
    fn open_loop_corrects_for_coordinated_omission() {
        let (corrected, naive) = play(1_000.0, 5_000 * MS, 1_000 * MS);
        let c = Latency::from_hist(&corrected);
        let n = Latency::from_hist(&naive);
        // The uncorrected view hides the stall in a single sample: its p99 is the
        // normal service time.
        assert!((n.p99_us - 100.0).abs() < 1.0, "naive {n:?}");
        assert!(n.max_us >= 999_000.0, "naive {n:?}");
        // Corrected, every request due during the stall waited: ~1,000 of ~10,000
        // samples are between 0 and 1 s late, so p99 is ~900 ms and p90 is above
        // the service time.
        assert_eq!(corrected.len(), naive.len());
        assert!(c.p99_us > 850_000.0 && c.p99_us < 1_001_000.0, "{c:?}");
        assert!(c.p90_us > 100.0, "{c:?}");
        assert!(c.p50_us < 200.0, "{c:?}");
        // hdrhistogram's own correction of the naive samples (expected interval =
        // 1 ms) gives a tail of the same shape.
        let mut fixed = hist_of(&[]);
        for v in naive.iter_recorded() {
            for _ in 0..v.count_at_value() {
                fixed
                    .record_correct(v.value_iterated_to(), MS)
                    .expect("in range");
            }
        }
        let f = Latency::from_hist(&fixed);
        assert!((f.p99_us / c.p99_us - 1.0).abs() < 0.05, "{f:?} vs {c:?}");
    }

    #[test]
    fn open_loop_spreads_connections_over_the_interval() {
        // 4 connections at 4,000/s: each connection every 1 ms, staggered 250 µs.
        let mut s = Schedule::new(Mode::Open { rate: 4_000.0 }, 4, 0);
        for c in 0..4 {
            let now_ready = s.ready(c, 0);
            assert_eq!(now_ready, c == 0, "conn {c}");
        }
        let order: Vec<(Nanos, usize)> = std::iter::from_fn(|| {
            let t = s.next_due()?;
            s.pop_due(t).map(|c| (t, c))
        })
        .collect();
        assert_eq!(order, vec![(250 * US, 1), (500 * US, 2), (750 * US, 3)]);
        // Connection 0's next request is due 1 ms after its first.
        assert!(!s.ready(0, 10 * US));
        assert_eq!(s.next_due(), Some(MS));
        // 2 ms in, 8 requests were due and 5 issued.
        assert_eq!(s.backlog(2 * MS), 3);
    }

    #[test]
    fn connections_split_evenly_over_threads() {
        assert_eq!(split_conns(64, 4), [16, 16, 16, 16]);
        assert_eq!(split_conns(10, 4), [3, 3, 2, 2]);
        assert_eq!(
            split_conns(3, 8),
            [1, 1, 1],
            "never a thread without a connection"
        );
        assert_eq!(split_conns(5, 0), [5]);
        assert_eq!(split_conns(10, 4).iter().sum::<usize>(), 10);
    }

    #[test]
    fn each_thread_gets_its_own_cpu_when_there_are_enough() {
        assert_eq!(thread_cpus(&[4, 5, 6], 3, 1), [5]);
        assert_eq!(thread_cpus(&[4, 5, 6, 7], 2, 1), [5]);
        // Fewer CPUs than threads: all threads share the whole list.
        assert_eq!(thread_cpus(&[4, 5], 3, 2), [4, 5]);
        // No list: unpinned.
        assert!(thread_cpus(&[], 3, 0).is_empty());
    }

    fn part(latencies_us: &[u64], window_s: f64, cpu: f64) -> Finished {
        let hist = hist_of(&latencies_us.iter().map(|u| u * US).collect::<Vec<_>>());
        let requests = latencies_us.len() as u64;
        Finished {
            report: LoadReport {
                mode: "closed".into(),
                conns: 2,
                msg_size: 100,
                requests,
                window_s,
                rps: requests as f64 / window_s,
                latency: Latency::from_hist(&hist),
                errors: 1,
                conns_alive: 2,
                client_cpu_pct: cpu,
                backlog: 0,
                client_threads: 1,
            },
            hist,
        }
    }

    #[test]
    fn merging_adds_histograms_not_percentiles() {
        let cfg = LoadConfig {
            addr: "127.0.0.1:1".parse().unwrap(),
            conns: 4,
            msg_size: 100,
            mode: Mode::Closed,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            cpus: vec![],
            io: ClientIo::Uring,
            threads: 2,
        };
        // A fast thread (980 echoes at 100 µs) and a slow one (20 at 10 ms).
        let fast = part(&[100; 980], 1.0, 40.0);
        let slow = part(&[10_000; 20], 1.0, 10.0);
        let averaged_p99 = (fast.report.latency.p99_us + slow.report.latency.p99_us) / 2.0;
        let m = merge(&cfg, vec![fast, slow]);
        assert_eq!(m.requests, 1_000);
        assert_eq!(m.conns, 4);
        assert_eq!(m.conns_alive, 4);
        assert_eq!(m.errors, 2);
        assert_eq!(m.client_threads, 2);
        assert!((m.rps - 1_000.0).abs() < 1e-9, "{m:?}");
        assert!((m.client_cpu_pct - 50.0).abs() < 1e-9, "{m:?}");
        // 2 % of all echoes took 10 ms: the merged p99 is 10 ms and p50 100 µs;
        // averaging the threads' p99s would say ~5 ms.
        assert!((m.latency.p99_us - 10_000.0).abs() < 10.0, "{m:?}");
        assert!((m.latency.p50_us - 100.0).abs() < 0.1, "{m:?}");
        assert!((averaged_p99 - 5_050.0).abs() < 10.0);
        assert!((m.latency.mean_us - (0.98 * 100.0 + 0.02 * 10_000.0)).abs() < 1.0);
    }

    #[test]
    fn closed_loop_sends_at_once() {
        let mut s = Schedule::new(Mode::Closed, 2, 0);
        assert!(s.ready(1, 42));
        assert_eq!(s.due(1), 42);
        assert_eq!(s.next_due(), None);
        assert_eq!(s.backlog(1_000_000), 0);
    }
}
