//! One measured window against a running IRC server: the senders (burst, or
//! paced from a timerfd), when the window closes, and what it measured.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    io,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use mio::{unix::SourceFd, Events, Interest, Poll};

use super::{
    client::{mono_ns, Client, Phase, BURST_CHUNK, READ_BUF, TIMER},
    irc::write_message,
    scenario::{LoadResult, LoadSpec, Pattern},
    verdict::{check_room, RoomVerdict},
};
use crate::{
    client::{Latency, Window},
    machine,
};

/// After everything was sent, how long without a delivery counts as a stall.
const STALL: Duration = Duration::from_secs(3);

impl Client<'_> {
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
