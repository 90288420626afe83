//! The floor for an epoll server: the smallest single-thread mio echo loop.
//!
//! Edge-triggered (mio registers everything so). On a readable edge: read into one
//! scratch buffer and write it straight back; stop after a short read, because with
//! edge triggering a read that returns less than the buffer drained the socket, and
//! the next arriving byte raises a new edge (this saves the read that would only say
//! WouldBlock). Only when a write is short does the connection keep the unsent rest
//! and watch for writability; it reads nothing more until that rest is sent, so a
//! client that does not read cannot make the server buffer without bound.

use std::{
    io::{self, Read, Write},
    process::ExitCode,
};

use mio::{
    net::{TcpListener, TcpStream},
    Events, Interest, Poll, Registry, Token,
};
use shardline_peers::{pin_current_thread, reuseport_listener, run_shards, Args, Shard};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);
const SCRATCH: usize = 64 * 1024;

fn main() -> ExitCode {
    let args = Args::parse_single_thread(
        "floor-mio",
        "The smallest single-thread mio (edge-triggered epoll) echo loop",
    );
    run_shards(&args, "floor-mio", |shard| {
        serve(shard).map_err(|e| e.to_string())
    })
}

fn serve(shard: Shard) -> io::Result<()> {
    if let Some(cpu) = shard.cpu {
        pin_current_thread(cpu).map_err(io::Error::other)?;
    }
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::from_std(reuseport_listener(shard.addr)?);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    shard.ready.bound(listener.local_addr()?);

    let mut events = Events::with_capacity(1024);
    let mut conns: Slab<Conn> = Slab::new();
    let mut scratch = vec![0u8; SCRATCH];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept_all(&listener, poll.registry(), &mut conns);
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            match conn.drive(&mut scratch, poll.registry(), event.token()) {
                Ok(true) => {}
                // EOF or a broken connection: dropping the stream closes it, which
                // also takes it out of the epoll set.
                Ok(false) | Err(_) => {
                    conns.remove(key);
                }
            }
        }
    }
}

fn accept_all(listener: &TcpListener, registry: &Registry, conns: &mut Slab<Conn>) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let entry = conns.vacant_entry();
                let ok = stream.set_nodelay(true).is_ok()
                    && registry
                        .register(&mut stream, Token(entry.key()), Interest::READABLE)
                        .is_ok();
                if ok {
                    entry.insert(Conn {
                        stream,
                        pending: Vec::new(),
                        sent: 0,
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // Out of fds or a connection reset before accept: the next connection's
            // edge brings us back.
            Err(e) => {
                eprintln!("floor-mio: accept: {e}");
                return;
            }
        }
    }
}

struct Conn {
    stream: TcpStream,
    /// Bytes a short write left unsent; empty on the fast path.
    pending: Vec<u8>,
    /// How much of `pending` is sent.
    sent: usize,
}

impl Conn {
    /// Handles one readiness edge; `Ok(false)` means the peer closed.
    fn drive(&mut self, scratch: &mut [u8], registry: &Registry, token: Token) -> io::Result<bool> {
        if !self.pending.is_empty() {
            if !self.flush()? {
                return Ok(true);
            }
            registry.reregister(&mut self.stream, token, Interest::READABLE)?;
            // Reading stopped while the rest was pending, perhaps before the socket
            // was drained: no new edge would come for what is already there.
        }
        loop {
            let n = match self.stream.read(scratch) {
                Ok(0) => return Ok(false),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let written = match self.stream.write(&scratch[..n]) {
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => return Err(e),
            };
            if written < n {
                self.pending.extend_from_slice(&scratch[written..n]);
                registry.reregister(
                    &mut self.stream,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                return Ok(true);
            }
            if n < scratch.len() {
                return Ok(true);
            }
        }
    }

    /// Writes what is pending; `Ok(true)` once all of it is sent.
    fn flush(&mut self) -> io::Result<bool> {
        while self.sent < self.pending.len() {
            match self.stream.write(&self.pending[self.sent..]) {
                Ok(w) => self.sent += w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pending.clear();
        self.sent = 0;
        Ok(true)
    }
}
