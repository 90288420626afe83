//! The skeleton the comparing subcommands share (`compare`, `scale`, `chat`,
//! `proxy`, `l4`):
//!
//! - [`schedule`]: interleaved rounds, every peer once per round, A B C … A B C
//!   (or A B C, C B A … with [`Schedule::alternating`]), so that slow drift
//!   (thermal, noisy neighbours) touches every peer alike.
//! - [`CpuMark`], [`CpuSpan`], [`WindowMarks`]: CPU time of the processes under
//!   test, of this process and of the whole machine (`/proc/stat`, interrupts
//!   included) at a measured window's edges, and what other processes used in
//!   between.
//! - [`Quiet`]: a run during which other processes used more than
//!   `max_foreign_pct` % of a CPU is measured again, after waiting for quiet, up
//!   to `retries` times; the quietest attempt is kept.
//! - [`median`], [`median_of`], [`median_of_some`]: medians over rounds.

use std::time::{Duration, Instant};

use crate::{client::Window, machine, servers};

// ---------------------------------------------------------------------------
// Interleaved rounds.

/// Rounds 1..=`rounds`, every peer once per round, in the order given.
pub fn schedule<P>(rounds: usize, peers: &[P]) -> Schedule<'_, P> {
    Schedule {
        peers,
        rounds,
        alternate: false,
        next: 0,
    }
}

/// The (round, peer) pairs of an interleaved experiment, round by round; rounds
/// count from 1. See [`schedule`].
#[derive(Debug, Clone)]
pub struct Schedule<'a, P> {
    peers: &'a [P],
    rounds: usize,
    alternate: bool,
    next: usize,
}

impl<P> Schedule<'_, P> {
    /// Every second round runs the peers in reverse order, so that no peer always
    /// goes first.
    pub fn alternating(mut self) -> Self {
        self.alternate = true;
        self
    }
}

impl<'a, P> Iterator for Schedule<'a, P> {
    type Item = (usize, &'a P);

    fn next(&mut self) -> Option<(usize, &'a P)> {
        let n = self.peers.len();
        if n == 0 || self.next >= self.rounds * n {
            return None;
        }
        let (r, i) = (self.next / n, self.next % n);
        self.next += 1;
        let i = if self.alternate && r % 2 == 1 {
            n - 1 - i
        } else {
            i
        };
        Some((r + 1, &self.peers[i]))
    }
}

// ---------------------------------------------------------------------------
// CPU marks.

/// Whose CPU time a [`CpuMark`] reads, besides this process's and the machine's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// One process, every thread (`/proc/PID/stat`); `None`: nothing to read.
    Process(Option<u32>),
    /// A process and every live descendant (a server that forks workers).
    Tree(Option<u32>),
    /// This process's children that have been waited for (a program run to
    /// completion within the window, like wrk).
    ReapedChildren,
}

impl Probe {
    fn read(self) -> Option<Duration> {
        match self {
            Probe::Process(pid) => servers::proc_cpu_time(pid?).ok(),
            Probe::Tree(pid) => servers::proc_tree_cpu_time(pid?).ok(),
            Probe::ReapedChildren => Some(servers::reaped_children_cpu_time()),
        }
    }
}

/// CPU times at one instant.
#[derive(Debug, Clone)]
pub struct CpuMark {
    /// One reading per [`Probe`], in order (`None`: nothing to read, or unreadable).
    pub probes: Vec<Option<Duration>>,
    /// This process (the harness).
    pub me: Option<Duration>,
    /// The machine's busy time, interrupts included
    /// ([`machine::busy_time_with_irq`]).
    pub machine: Option<Duration>,
    /// When.
    pub at: Instant,
}

impl CpuMark {
    /// Reads every probe, this process and the machine.
    pub fn read(probes: &[Probe]) -> CpuMark {
        CpuMark {
            probes: probes.iter().map(|p| p.read()).collect(),
            me: servers::proc_cpu_time(std::process::id()).ok(),
            machine: machine::busy_time_with_irq(),
            at: Instant::now(),
        }
    }
}

/// CPU seconds used between two [`CpuMark`]s.
#[derive(Debug, Clone)]
pub struct CpuSpan {
    /// Per probe (`None` if either mark lacks it).
    pub probes: Vec<Option<f64>>,
    /// This process.
    pub me: Option<f64>,
    /// The machine's busy time.
    pub machine: Option<f64>,
    /// Wall seconds between the marks.
    pub wall: f64,
}

fn secs_between(a: Option<Duration>, b: Option<Duration>) -> Option<f64> {
    Some(b?.saturating_sub(a?).as_secs_f64())
}

impl CpuSpan {
    /// From mark `a` to mark `b` (read with the same probes).
    pub fn between(a: &CpuMark, b: &CpuMark) -> CpuSpan {
        CpuSpan {
            probes: a
                .probes
                .iter()
                .zip(&b.probes)
                .map(|(&x, &y)| secs_between(x, y))
                .collect(),
            me: secs_between(a.me, b.me),
            machine: secs_between(a.machine, b.machine),
            wall: b.at.duration_since(a.at).as_secs_f64(),
        }
    }

    /// CPU seconds of probe `i`.
    pub fn probe(&self, i: usize) -> Option<f64> {
        self.probes.get(i).copied().flatten()
    }

    /// CPU other processes used over `window` seconds, in % of one CPU, rounded:
    /// the machine's busy time minus this process's and every probe's (on a
    /// shared machine another job's compile can take a whole CPU mid-run).
    /// `None` without a reading of the machine or of this process.
    pub fn foreign_pct(&self, window: f64) -> Option<f64> {
        let mut others = self.machine? - self.me?;
        for p in self.probes.iter().flatten() {
            others -= p;
        }
        Some((others.max(0.0) / window.max(1e-9) * 100.0).round())
    }
}

/// [`CpuMark`]s read at a load generator's window edges: pass [`WindowMarks::mark`]
/// as its `on_window` callback, then take the [`WindowMarks::span`].
#[derive(Debug)]
pub struct WindowMarks<'a> {
    probes: &'a [Probe],
    start: Option<CpuMark>,
    end: Option<CpuMark>,
}

impl<'a> WindowMarks<'a> {
    /// Nothing read yet.
    pub fn new(probes: &'a [Probe]) -> Self {
        WindowMarks {
            probes,
            start: None,
            end: None,
        }
    }

    /// Reads a mark for this edge of the window.
    pub fn mark(&mut self, edge: Window) {
        let m = CpuMark::read(self.probes);
        match edge {
            Window::Start => self.start = Some(m),
            Window::End => self.end = Some(m),
        }
    }

    /// The window, once both edges were read.
    pub fn span(&self) -> Option<CpuSpan> {
        Some(CpuSpan::between(self.start.as_ref()?, self.end.as_ref()?))
    }
}

// ---------------------------------------------------------------------------
// The quiet-machine retry.

/// A measurement [`Quiet`] can judge and repeat.
pub trait Attempt {
    /// CPU other processes used during it, in % of one CPU.
    fn foreign_cpu_pct(&self) -> Option<f64>;
    /// Whether it produced a result.
    fn measured(&self) -> bool;
    /// Records how many measurements were made for its slot.
    fn set_attempts(&mut self, n: usize);
}

/// Implements [`Attempt`] for a run record with the fields `foreign_cpu_pct:
/// Option<f64>` and `attempts: usize`, which produced a result when its field
/// `$result` is `Some`.
macro_rules! impl_attempt {
    ($record:ty, $result:ident) => {
        impl $crate::experiment::Attempt for $record {
            fn foreign_cpu_pct(&self) -> Option<f64> {
                self.foreign_cpu_pct
            }

            fn measured(&self) -> bool {
                self.$result.is_some()
            }

            fn set_attempts(&mut self, n: usize) {
                self.attempts = n;
            }
        }
    };
}
pub(crate) use impl_attempt;

/// When a run counts as noisy, and how often it is measured again.
#[derive(Debug, Clone, Copy)]
pub struct Quiet {
    /// A run during which other processes used more than this % of one CPU is
    /// measured again.
    pub max_foreign_pct: f64,
    /// How many times a noisy run is measured again (the quietest is kept).
    pub retries: usize,
    /// How long to wait for quiet before measuring again.
    pub wait: Duration,
}

impl Quiet {
    /// At most `retries` repeats of a run noisier than `max_foreign_pct`, each
    /// after waiting up to 10 s for quiet.
    pub fn new(max_foreign_pct: f64, retries: usize) -> Quiet {
        Quiet {
            max_foreign_pct,
            retries,
            wait: Duration::from_secs(10),
        }
    }

    /// Whether other processes used too much CPU during `run`.
    pub fn noisy(&self, run: &impl Attempt) -> bool {
        run.foreign_cpu_pct()
            .is_some_and(|f| f > self.max_foreign_pct)
    }

    /// `measure()`, repeated (up to `retries` more times) while other processes
    /// used more than `max_foreign_pct` % of a CPU during it; keeps the quietest
    /// attempt that produced a result, with its attempts set to the measurements
    /// made. Before a repeat it says why on stdout (`label`: the start of the
    /// progress line; `span`: what was measured, "window" or "run") and waits for
    /// quiet.
    pub fn measure<R: Attempt>(
        &self,
        label: &str,
        span: &str,
        mut measure: impl FnMut() -> R,
    ) -> R {
        let mut best = measure();
        for n in 2..=self.retries + 1 {
            if !self.noisy(&best) {
                break;
            }
            println!(
                "{label}: other processes used {:.0} % of a CPU during the {span}; waiting up to {} s for quiet, then measuring again",
                best.foreign_cpu_pct().unwrap_or(0.0),
                self.wait.as_secs()
            );
            wait_for_quiet(self.max_foreign_pct, self.wait);
            let next = measure();
            let quieter = next.measured()
                && next.foreign_cpu_pct().unwrap_or(f64::MAX)
                    < best.foreign_cpu_pct().unwrap_or(f64::MAX);
            if quieter {
                best = next;
            }
            best.set_attempts(n);
        }
        best
    }
}

/// Waits (at most `limit`) until other processes use less than `max_pct` % of a
/// CPU over 200 ms (the server under test is idle meanwhile).
pub fn wait_for_quiet(max_pct: f64, limit: Duration) {
    let start = Instant::now();
    while start.elapsed() < limit {
        let me = std::process::id();
        let (Some(a), Ok(m0)) = (machine::busy_time_with_irq(), servers::proc_cpu_time(me)) else {
            return;
        };
        std::thread::sleep(Duration::from_millis(200));
        let (Some(b), Ok(m1)) = (machine::busy_time_with_irq(), servers::proc_cpu_time(me)) else {
            return;
        };
        let others = b.saturating_sub(a).saturating_sub(m1.saturating_sub(m0));
        if others.as_secs_f64() / 0.2 * 100.0 <= max_pct {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// Medians.

/// The median (mean of the middle two for an even count); `None` when empty or
/// when any value is NaN.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The [`median`] of `f` over `items`.
pub fn median_of<T>(items: &[T], f: impl Fn(&T) -> f64) -> Option<f64> {
    median(&items.iter().map(f).collect::<Vec<_>>())
}

/// The [`median`] of `f` over the `items` that have it.
pub fn median_of_some<T>(items: &[T], f: impl Fn(&T) -> Option<f64>) -> Option<f64> {
    median(&items.iter().filter_map(f).collect::<Vec<_>>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[1.0, f64::NAN]), None);
        let pairs = [(1.0, None), (5.0, Some(2.0)), (3.0, Some(4.0))];
        assert_eq!(median_of(&pairs, |p| p.0), Some(3.0));
        assert_eq!(median_of_some(&pairs, |p| p.1), Some(3.0));
    }

    #[test]
    fn rounds_interleave() {
        let got: Vec<(usize, char)> = schedule(2, &['a', 'b', 'c'])
            .map(|(r, &p)| (r, p))
            .collect();
        assert_eq!(
            got,
            [(1, 'a'), (1, 'b'), (1, 'c'), (2, 'a'), (2, 'b'), (2, 'c')]
        );
        let got: Vec<(usize, char)> = schedule(3, &['a', 'b'])
            .alternating()
            .map(|(r, &p)| (r, p))
            .collect();
        assert_eq!(
            got,
            [(1, 'a'), (1, 'b'), (2, 'b'), (2, 'a'), (3, 'a'), (3, 'b')]
        );
        assert_eq!(schedule::<u8>(3, &[]).count(), 0);
        assert_eq!(schedule(0, &[1]).count(), 0);
    }

    #[test]
    fn foreign_cpu_is_what_the_machine_did_beyond_us() {
        let span = CpuSpan {
            probes: vec![Some(0.5), None, Some(0.25)],
            me: Some(0.1),
            machine: Some(1.0),
            wall: 2.0,
        };
        // 1.0 − 0.1 − 0.5 − 0.25 = 0.15 s over 0.5 s.
        assert_eq!(span.foreign_pct(0.5), Some(30.0));
        assert_eq!(span.probe(0), Some(0.5));
        assert_eq!(span.probe(1), None);
        assert_eq!(span.probe(7), None);
        let busy = CpuSpan {
            machine: Some(0.2),
            ..span.clone()
        };
        assert_eq!(busy.foreign_pct(1.0), Some(0.0), "never negative");
        let blind = CpuSpan { me: None, ..span };
        assert_eq!(blind.foreign_pct(1.0), None);
        let m = CpuMark::read(&[Probe::Process(Some(std::process::id())), Probe::Tree(None)]);
        assert!(m.probes[0].is_some() && m.probes[1].is_none() && m.me.is_some());
    }

    #[derive(Debug, PartialEq)]
    struct Run {
        foreign: Option<f64>,
        ok: bool,
        attempts: usize,
    }

    impl Attempt for Run {
        fn foreign_cpu_pct(&self) -> Option<f64> {
            self.foreign
        }
        fn measured(&self) -> bool {
            self.ok
        }
        fn set_attempts(&mut self, n: usize) {
            self.attempts = n;
        }
    }

    fn retry(quiet: Quiet, results: &[(Option<f64>, bool)]) -> (Run, usize) {
        let mut made = 0;
        let best = quiet.measure("test", "window", || {
            let (foreign, ok) = results[made];
            made += 1;
            Run {
                foreign,
                ok,
                attempts: 1,
            }
        });
        (best, made)
    }

    #[test]
    fn noisy_runs_are_measured_again_and_the_quietest_kept() {
        let quiet = Quiet {
            wait: Duration::ZERO,
            ..Quiet::new(10.0, 2)
        };
        // Quiet at once: one measurement.
        let (best, made) = retry(quiet, &[(Some(5.0), true)]);
        assert_eq!((best.foreign, best.attempts, made), (Some(5.0), 1, 1));
        // Unknown counts as quiet.
        let (_, made) = retry(quiet, &[(None, true)]);
        assert_eq!(made, 1);
        // Noisy, noisier, quiet: the quiet one, 3 attempts.
        let (best, made) = retry(
            quiet,
            &[(Some(50.0), true), (Some(60.0), true), (Some(2.0), true)],
        );
        assert_eq!((best.foreign, best.attempts, made), (Some(2.0), 3, 3));
        // A quieter attempt that failed is not kept; retries run out.
        let (best, made) = retry(
            quiet,
            &[(Some(50.0), true), (Some(1.0), false), (Some(40.0), true)],
        );
        assert_eq!(
            (best.foreign, best.ok, best.attempts, made),
            (Some(40.0), true, 3, 3)
        );
        // No retries: the first, however noisy.
        let none = Quiet {
            retries: 0,
            ..quiet
        };
        let (best, made) = retry(none, &[(Some(90.0), true)]);
        assert_eq!((best.foreign, best.attempts, made), (Some(90.0), 1, 1));
    }
}
