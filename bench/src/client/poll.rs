//! The mio engine: edge-triggered readiness, read until a short read, write
//! straight from the shared pattern.

use mio::{net::TcpStream as MioStream, Events, Interest, Poll, Token};

use super::*;

#[derive(Clone, Copy, Default)]
struct Conn {
    sent: usize,
    received: usize,
    busy: bool,
    dead: bool,
}

struct Engine<'r, 'a> {
    streams: Vec<MioStream>,
    conns: Vec<Conn>,
    buf: Vec<u8>,
    run: &'r mut Run<'a>,
}

impl Engine<'_, '_> {
    fn kill(&mut self, c: usize) {
        if !self.conns[c].dead {
            self.conns[c].dead = true;
            self.conns[c].busy = false;
            self.run.rec.error();
            let _ = self.streams[c].shutdown(std::net::Shutdown::Both);
        }
    }

    fn start(&mut self, c: usize, now: Nanos) {
        self.conns[c] = Conn {
            busy: true,
            ..Conn::default()
        };
        self.progress(c, now);
    }

    /// Writes what is left to write and reads what has arrived.
    fn progress(&mut self, c: usize, now: Nanos) {
        let size = self.run.cfg.msg_size;
        loop {
            let conn = self.conns[c];
            if conn.dead || !conn.busy {
                return;
            }
            if conn.sent < size {
                match self.streams[c].write(&self.run.pattern[conn.sent..]) {
                    Ok(n) => self.conns[c].sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => return self.kill(c),
                }
            }
            let want = size - self.conns[c].received;
            let start = c * size + self.conns[c].received;
            match self.streams[c].read(&mut self.buf[start..start + want]) {
                Ok(0) => return self.kill(c),
                Ok(n) => {
                    self.conns[c].received += n;
                    if self.conns[c].received < size {
                        if n < want && self.conns[c].sent == size {
                            return; // short read: drained for now
                        }
                        continue;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.kill(c),
            }
            if self.conns[c].sent < size {
                continue;
            }
            if self.buf[c * size..(c + 1) * size] != self.run.pattern[..] {
                self.run.rec.error();
            }
            self.run.rec.record(self.run.sched.due(c), now);
            self.conns[c].busy = false;
            if !self.run.sched.ready(c, now) {
                return;
            }
            self.conns[c] = Conn {
                busy: true,
                ..Conn::default()
            };
        }
    }
}

pub(super) fn run(
    cfg: &LoadConfig,
    streams: Vec<TcpStream>,
    on_window: &mut (dyn FnMut(Window) + Send),
    origin: Instant,
) -> anyhow::Result<Finished> {
    let mut poll = Poll::new().context("creating the client's epoll")?;
    let mut events = Events::with_capacity(1024);
    let mut streams: Vec<MioStream> = streams
        .into_iter()
        .map(|s| {
            s.set_nonblocking(true)?;
            Ok(MioStream::from_std(s))
        })
        .collect::<io::Result<_>>()
        .context("making sockets non-blocking")?;
    for (i, s) in streams.iter_mut().enumerate() {
        poll.registry()
            .register(s, Token(i), Interest::READABLE | Interest::WRITABLE)
            .context("registering a client socket")?;
    }
    let mut run = Run::new(cfg, on_window, origin);
    let mut e = Engine {
        streams,
        conns: vec![Conn::default(); cfg.conns],
        buf: vec![0; cfg.conns * cfg.msg_size],
        run: &mut run,
    };
    let now = e.run.now();
    for c in 0..cfg.conns {
        if e.run.sched.ready(c, now) {
            e.start(c, now);
        }
    }
    loop {
        let now = e.run.now();
        if !e.run.tick(now) {
            break;
        }
        while let Some(c) = e.run.sched.pop_due(now) {
            if !e.conns[c].dead {
                e.start(c, now);
            }
        }
        if e.conns.iter().all(|c| c.dead) {
            bail!("every connection failed");
        }
        let until = e.run.wait_until();
        let left = Duration::from_nanos(until.saturating_sub(now).max(1_000));
        match poll.poll(&mut events, Some(left)) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err).context("epoll_wait"),
        }
        let now = e.run.now();
        for ev in events.iter() {
            e.progress(ev.token().0, now);
        }
    }
    let alive = e.conns.iter().filter(|c| !c.dead).count();
    Ok(run.report(alive))
}
