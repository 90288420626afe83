//! The IRC client connections, all on one thread: edge-triggered mio, one shared
//! read buffer, lines parsed by hand; registration, joins and the PING barrier
//! before the window.

use std::{
    io::{self, Read, Write},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use hdrhistogram::Histogram;
use mio::{net::TcpStream, Events, Interest, Poll, Token};

use super::{
    irc::{message_id, parse_line, parse_text, Line},
    scenario::LoadSpec,
};

/// Clients between connect and 366 at once (ngircd listens with a backlog of 10).
const SETUP_WINDOW: usize = 8;

/// Nanoseconds of CLOCK_MONOTONIC (the clock timerfd and `Instant` use).
pub(super) fn mono_ns() -> u64 {
    // SAFETY: a zeroed timespec is valid; clock_gettime fills it.
    unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Registering,
    Joining,
    Joined,
    Barrier,
    Ready,
    Dead,
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) sock: TcpStream,
    pub(super) room: usize,
    /// Member index in the room (senders first).
    pub(super) member: usize,
    pub(super) phase: Phase,
    pub(super) partial: Vec<u8>,
    pub(super) out: Vec<u8>,
    pub(super) out_pos: usize,
    /// Messages in `out` (counted as sent once `out` is flushed).
    pub(super) out_msgs: u64,
    pub(super) writable: bool,
    /// Message ids received, in order.
    pub(super) view: Vec<u32>,
    /// Messages generated (queued) so far, for a sender.
    pub(super) queued: u64,
    /// Messages completely written, for a sender.
    pub(super) flushed: u64,
}

/// Tokens at or above this are not connections.
pub(super) const TIMER: Token = Token(usize::MAX - 1);
pub(super) const READ_BUF: usize = 256 * 1024;
pub(super) const BURST_CHUNK: usize = 32 * 1024;

pub(super) struct Client<'a> {
    pub(super) spec: &'a LoadSpec,
    pub(super) poll: Poll,
    pub(super) conns: Vec<Conn>,
    pub(super) chans: Vec<String>,
    pub(super) buf: Vec<u8>,
    pub(super) hist: Histogram<u64>,
    /// Window is open: PRIVMSGs count.
    pub(super) measuring: bool,
    pub(super) received: u64,
    pub(super) last_delivery: u64,
    pub(super) unexpected: u64,
    pub(super) problems: Vec<String>,
    pub(super) dead: usize,
    pub(super) setup_error: Option<String>,
    pub(super) joined: usize,
    pub(super) ready: usize,
}

impl Client<'_> {
    pub(super) fn note(&mut self, s: String) {
        if self.problems.len() < 5 {
            self.problems.push(s);
        }
    }

    fn nick(&self, i: usize) -> String {
        format!("{}n{i}", self.spec.tag)
    }

    pub(super) fn queue(&mut self, i: usize, line: &[u8]) {
        self.conns[i].out.extend_from_slice(line);
    }

    /// Writes what `out` holds until done or the socket is full.
    pub(super) fn flush(&mut self, i: usize) {
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

    pub(super) fn kill(&mut self, i: usize, why: String) {
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
        let n = 1 + self.spec.also.len();
        let addr = match i % n {
            0 => self.spec.addr,
            k => self.spec.also[k - 1],
        };
        let std = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("client {i}: connecting to {addr}"))?;
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

    pub(super) fn dispatch(&mut self, events: &Events) {
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
    pub(super) fn setup(&mut self, events: &mut Events) -> anyhow::Result<()> {
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
}
