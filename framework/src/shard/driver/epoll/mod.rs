//! The epoll backend (mio): readiness turned into the completions io_uring gives.
//!
//! mio registers every fd edge-triggered, so readiness must be *remembered*: an edge
//! that arrives while the shard does not want to read (paused, or the connection
//! used up its read budget this turn) is kept in `EConn::readable` and served later.
//!
//! Reads land in one shard-local scratch buffer, handed to the shard as a slice; a
//! read shorter than the buffer means the socket was drained at that moment, so the
//! connection leaves the ready list without the extra `read` that would return
//! EAGAIN. A connection that fills its budget goes to the back of the ready list and
//! the next wait does not block, so one flooding peer cannot starve the others.
//! Completions kept for the next reap (sends done at once) let `wait` skip one
//! poll, never two in a row: a peer whose echo sends on every turn would otherwise
//! keep the kernel from being asked about anyone else.
//!
//! Sends are done at once with one `sendmsg` over the queued chunks; the result is
//! kept as a deferred `Sent` completion. A full socket (EAGAIN) parks the send until
//! the writable edge, which then reports `Sent(Ok(0))`: "retry".

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    os::fd::{BorrowedFd, RawFd},
    time::Duration,
};

mod ready;

use self::ready::Scratch;
use super::{Completion, Driver, Sock, MAX_SEND_CHUNKS};
use crate::{numa::BufferPool, ConnId};
use bytes::Bytes;
use mio::{unix::SourceFd, Events, Interest, Poll, Token};
use socket2::{SockAddr, SockRef};

const DOORBELL: Token = Token(usize::MAX);
/// Listener tokens live just below the doorbell's.
const LISTENER_BASE: usize = usize::MAX - 1 - 4096;
/// `watch_readable` tokens live below the listeners'.
const WATCH_BASE: usize = LISTENER_BASE - (1 << 16);
/// Turns in a row `wait` may return without polling because completions are
/// already waiting; then it polls (without blocking) so new edges are seen.
const MAX_POLLS_SKIPPED: u32 = 1;

/// Sizes of the epoll driver's buffers.
#[derive(Debug)]
pub(crate) struct EpollConfig {
    /// Scratch read buffer (one per shard), when there is no pool.
    pub(crate) scratch_size: usize,
    /// The shard's NUMA-bound pool; one of its buffers is the scratch buffer.
    pub(crate) pool: Option<BufferPool>,
    /// Bytes one connection may read per loop turn before others get their turn.
    pub(crate) read_budget: usize,
}

/// A connection as the driver keeps it. Every connection pays for one, idle or
/// not: 32 bytes (`econn_stays_small`).
#[derive(Debug)]
struct EConn {
    id: ConnId,
    fd: RawFd,
    want_read: bool,
    /// Remembered read-readiness edge (or EOF/error) not yet served.
    readable: bool,
    /// The peer's FIN (or an error) was reported: a short read does not mean the
    /// socket is drained any more — the EOF behind the data still has to be read,
    /// and no further edge will announce it.
    hup: bool,
    /// On `ready`.
    queued: bool,
    /// A send hit EAGAIN and waits for the writable edge.
    send_parked: bool,
    /// A relay fill (pipe write end, most bytes) that met an empty socket and
    /// waits for the readable edge. `u32`: a fill is bounded by a pipe's room,
    /// and every connection pays for this field.
    fill_parked: Option<(RawFd, u32)>,
    connecting: bool,
}

#[derive(Debug)]
struct EListener {
    fd: RawFd,
    /// Connections may be queued: accept until EAGAIN. Cleared by EAGAIN, and by a
    /// failed accept (the shard pauses and re-adds the listener; see
    /// `accept::policy`).
    readable: bool,
}

/// One shard's epoll instance.
pub(crate) struct EpollDriver {
    poll: Poll,
    events: Events,
    scratch: Scratch,
    read_budget: usize,
    conns: Vec<Option<EConn>>,
    ready: VecDeque<u32>,
    listeners: Vec<Option<EListener>>,
    deferred: VecDeque<Deferred>,
    doorbell: Option<RawFd>,
    doorbell_rung: bool,
    /// Watched fds (token -> fd) and which reported readiness since the last reap.
    watches: Vec<Option<RawFd>>,
    watch_ready: Vec<u32>,
    /// Waits in a row that returned at once for completions already waiting,
    /// without asking the kernel (see `wait`).
    polls_skipped: u32,
}

#[derive(Debug)]
enum Deferred {
    Sent(ConnId, io::Result<usize>),
    Spliced(ConnId, io::Result<usize>),
    Connected(ConnId, io::Result<()>),
}

impl std::fmt::Debug for EpollDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpollDriver")
            .field("ready", &self.ready.len())
            .field("deferred", &self.deferred.len())
            .finish_non_exhaustive()
    }
}

fn conn_token(id: ConnId) -> Token {
    Token(id.to_bits() as usize)
}

impl EpollDriver {
    pub(crate) fn new(config: EpollConfig) -> io::Result<EpollDriver> {
        let scratch = match config.pool {
            Some(mut pool) => match pool.take() {
                Some(id) => Scratch::Pool(pool, id),
                None => return Err(io::Error::other("buffer pool has no buffer for epoll")),
            },
            None => Scratch::Owned(vec![0u8; config.scratch_size.max(4096)].into_boxed_slice()),
        };
        Ok(EpollDriver {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            scratch,
            read_budget: config.read_budget.max(1),
            conns: Vec::new(),
            ready: VecDeque::new(),
            listeners: Vec::new(),
            deferred: VecDeque::new(),
            doorbell: None,
            doorbell_rung: false,
            watches: Vec::new(),
            watch_ready: Vec::new(),
            polls_skipped: 0,
        })
    }

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut EConn> {
        self.conns
            .get_mut(id.index as usize)
            .and_then(Option::as_mut)
            .filter(|c| c.id == id)
    }

    fn mark_readable(&mut self, index: u32) {
        if let Some(Some(c)) = self.conns.get_mut(index as usize) {
            c.readable = true;
            if c.want_read && !c.queued {
                c.queued = true;
                self.ready.push_back(index);
            }
        }
    }

    fn handle_event(&mut self, token: Token, readable: bool, hup: bool, writable: bool) {
        if token == DOORBELL {
            if let Some(fd) = self.doorbell {
                let mut v: u64 = 0;
                // SAFETY: reads 8 bytes into a local u64 from the shard's eventfd,
                // which outlives the driver; EAGAIN (already drained) is fine.
                let _ = unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
            }
            self.doorbell_rung = true;
            return;
        }
        if (WATCH_BASE..LISTENER_BASE).contains(&token.0) {
            let t = (token.0 - WATCH_BASE) as u32;
            if !self.watch_ready.contains(&t) {
                self.watch_ready.push(t);
            }
            return;
        }
        if token.0 >= LISTENER_BASE {
            if let Some(Some(l)) = self.listeners.get_mut(token.0 - LISTENER_BASE) {
                l.readable = true;
            }
            return;
        }
        let id = ConnId::from_bits(token.0 as u64);
        let Some(c) = self.conn_mut(id) else { return };
        if hup {
            c.hup = true;
        }
        let parked_fill = if readable {
            c.fill_parked
                .take()
                .map(|(pipe_w, max)| (c.fd, pipe_w, max as usize))
        } else {
            None
        };
        if writable {
            if c.connecting {
                c.connecting = false;
                let result = match SockRef::from(&borrow(c.fd)).take_error() {
                    Ok(None) => Ok(()),
                    Ok(Some(e)) | Err(e) => Err(e),
                };
                self.deferred.push_back(Deferred::Connected(id, result));
            } else if c.send_parked {
                c.send_parked = false;
                self.deferred.push_back(Deferred::Sent(id, Ok(0)));
            }
        }
        if let Some((fd, pipe_w, max)) = parked_fill {
            self.fill(id, fd, pipe_w, max);
        }
        if readable {
            self.mark_readable(id.index);
        }
    }

    /// One splice socket -> pipe; parks on an empty socket (see `splice_in`).
    fn fill(&mut self, conn: ConnId, fd: RawFd, pipe_w: RawFd, max: usize) {
        match splice(fd, pipe_w, max) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Empty socket, or a pipe full below its byte capacity (partial
                // pages): only the first waits for the readable edge.
                if unread_bytes(fd) > 0 {
                    self.deferred.push_back(Deferred::Spliced(conn, Err(e)));
                } else if let Some(c) = self.conn_mut(conn) {
                    c.fill_parked = Some((pipe_w, u32::try_from(max).unwrap_or(u32::MAX)));
                    c.readable = false;
                }
            }
            other => self.deferred.push_back(Deferred::Spliced(conn, other)),
        }
    }
}

/// splice(2) of up to `len` bytes, non-blocking on both ends (the sockets are
/// non-blocking too); EINTR is retried.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: plain syscall on descriptors the shard keeps open while they are
        // registered (sockets) or in use by a relay (pipes); null offsets.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Bytes waiting in a socket's receive queue (0 if it cannot be asked).
fn unread_bytes(fd: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through a valid pointer to a local.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    if rc == 0 {
        n.max(0) as usize
    } else {
        0
    }
}

fn borrow<'a>(fd: RawFd) -> BorrowedFd<'a> {
    // SAFETY: only used for the duration of one call on an fd the shard keeps open
    // while it is registered with this driver.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

impl Driver for EpollDriver {
    fn backend(&self) -> crate::Backend {
        crate::Backend::Epoll
    }

    fn add_listener(&mut self, listener: usize, fd: RawFd) -> io::Result<()> {
        if listener >= DOORBELL.0 - LISTENER_BASE {
            return Err(io::Error::other("too many listeners"));
        }
        self.poll.registry().register(
            &mut SourceFd(&fd),
            Token(LISTENER_BASE + listener),
            Interest::READABLE,
        )?;
        if self.listeners.len() <= listener {
            self.listeners.resize_with(listener + 1, || None);
        }
        // Connections may already be queued: start as readable.
        self.listeners[listener] = Some(EListener { fd, readable: true });
        Ok(())
    }

    fn remove_listener(&mut self, listener: usize, fd: RawFd) {
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        if let Some(slot) = self.listeners.get_mut(listener) {
            *slot = None;
        }
    }

    fn add_conn(&mut self, conn: ConnId, sock: Sock) -> io::Result<Option<u32>> {
        let Sock::Fd(fd) = sock else {
            return Err(io::Error::other(
                "the epoll driver has no file table for direct descriptors",
            ));
        };
        self.poll.registry().register(
            &mut SourceFd(&fd),
            conn_token(conn),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let index = conn.index as usize;
        if self.conns.len() <= index {
            self.conns.resize_with(index + 1, || None);
        }
        self.conns[index] = Some(EConn {
            id: conn,
            fd,
            want_read: false,
            // The registration reports current readiness, but a connection that
            // already had data before it was registered is served at once.
            readable: true,
            hup: false,
            queued: false,
            send_parked: false,
            fill_parked: None,
            connecting: false,
        });
        Ok(None)
    }

    fn set_reading(&mut self, conn: ConnId, _fd: RawFd, on: bool) {
        let Some(c) = self.conn_mut(conn) else { return };
        c.want_read = on;
        if on && c.readable {
            self.mark_readable(conn.index);
        }
    }

    fn send(&mut self, conn: ConnId, fd: RawFd, chunks: &[Bytes]) {
        let n = chunks.len().min(MAX_SEND_CHUNKS);
        let bfd = borrow(fd);
        let sock = SockRef::from(&bfd);
        let result = loop {
            // MSG_NOSIGNAL: a closed peer is EPIPE, not a process-killing SIGPIPE.
            let r = if n == 1 {
                // One chunk (the usual reply): plain send, no msghdr to import.
                sock.send_with_flags(&chunks[0], libc::MSG_NOSIGNAL)
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_SEND_CHUNKS];
                for (slot, chunk) in slices.iter_mut().zip(chunks) {
                    *slot = IoSlice::new(chunk);
                }
                sock.send_vectored_with_flags(&slices[..n], libc::MSG_NOSIGNAL)
            };
            match r {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match result {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Some(c) = self.conn_mut(conn) {
                    c.send_parked = true;
                }
            }
            other => self.deferred.push_back(Deferred::Sent(conn, other)),
        }
    }

    fn splice_in(&mut self, conn: ConnId, fd: RawFd, pipe_w: RawFd, max: usize) {
        self.fill(conn, fd, pipe_w, max);
    }

    fn splice_out(&mut self, conn: ConnId, fd: RawFd, pipe_r: RawFd, len: usize) {
        match splice(pipe_r, fd, len) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if let Some(c) = self.conn_mut(conn) {
                    c.send_parked = true;
                }
            }
            other => self.deferred.push_back(Deferred::Sent(conn, other)),
        }
    }

    fn cancel_splice(&mut self, conn: ConnId) {
        // Splices run inside the calls above; only a parked fill remembers a pipe.
        // A parked drain keeps its send slot: the writable edge reports "retry".
        if let Some(c) = self.conn_mut(conn) {
            c.fill_parked = None;
        }
    }

    fn connect(&mut self, conn: ConnId, fd: RawFd, addr: SockAddr) {
        match SockRef::from(&borrow(fd)).connect(&addr) {
            Ok(()) => self.deferred.push_back(Deferred::Connected(conn, Ok(()))),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                if let Some(c) = self.conn_mut(conn) {
                    c.connecting = true;
                }
            }
            Err(e) => self.deferred.push_back(Deferred::Connected(conn, Err(e))),
        }
    }

    fn remove_conn(&mut self, conn: ConnId, fd: RawFd) {
        if self.conn_mut(conn).is_some() {
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            self.conns[conn.index as usize] = None;
        }
    }

    fn watch_doorbell(&mut self, fd: RawFd) -> io::Result<()> {
        self.doorbell = Some(fd);
        self.poll
            .registry()
            .register(&mut SourceFd(&fd), DOORBELL, Interest::READABLE)
    }

    fn watch_readable(&mut self, token: u32, fd: RawFd) -> io::Result<()> {
        let index = token as usize;
        if index >= LISTENER_BASE - WATCH_BASE {
            return Err(io::Error::other("watch token out of range"));
        }
        self.poll.registry().register(
            &mut SourceFd(&fd),
            Token(WATCH_BASE + index),
            Interest::READABLE,
        )?;
        if self.watches.len() <= index {
            self.watches.resize(index + 1, None);
        }
        self.watches[index] = Some(fd);
        Ok(())
    }

    fn unwatch_readable(&mut self, token: u32) {
        if let Some(fd) = self.watches.get_mut(token as usize).and_then(Option::take) {
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
        self.watch_ready.retain(|&t| t != token);
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<u64> {
        let waiting =
            !self.deferred.is_empty() || self.doorbell_rung || !self.watch_ready.is_empty();
        let mut timeout = timeout;
        if waiting {
            // Completions are already waiting: hand them out before sleeping, and
            // save the syscall once. Not twice in a row: a connection that sends on
            // every turn (a flood being echoed) always leaves a `Sent` behind, and
            // skipping every poll would keep every other socket's edge unseen.
            if self.polls_skipped < MAX_POLLS_SKIPPED {
                self.polls_skipped += 1;
                return Ok(0);
            }
            timeout = Some(Duration::ZERO);
        }
        self.polls_skipped = 0;
        // A listener still readable spent its accept budget: edge-triggered, it
        // gets no new event for the connections still queued.
        if !self.ready.is_empty() || self.listeners.iter().flatten().any(|l| l.readable) {
            timeout = Some(Duration::ZERO);
        }
        let mut syscalls = 0;
        loop {
            syscalls += 1;
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => break,
                // EINTR: a signal, or (seen here) the first poll after an io_uring
                // ring was dropped on this thread. Nothing happened; wait again once.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    if syscalls > 1 {
                        break;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for e in events.iter() {
            self.handle_event(
                e.token(),
                e.is_readable() || e.is_read_closed() || e.is_error(),
                e.is_read_closed() || e.is_error(),
                e.is_writable() || e.is_write_closed() || e.is_error(),
            );
        }
        self.events = events;
        Ok(syscalls)
    }

    fn reap(&mut self, sink: &mut dyn FnMut(Completion<'_>)) {
        while let Some(d) = self.deferred.pop_front() {
            match d {
                Deferred::Sent(conn, result) => sink(Completion::Sent { conn, result }),
                Deferred::Spliced(conn, result) => sink(Completion::Spliced { conn, result }),
                Deferred::Connected(conn, result) => {
                    if result.is_err() {
                        if let Some(c) = self.conn_mut(conn) {
                            c.readable = false;
                        }
                    }
                    sink(Completion::Connected { conn, result })
                }
            }
        }
        if std::mem::take(&mut self.doorbell_rung) {
            sink(Completion::Doorbell);
        }
        for token in std::mem::take(&mut self.watch_ready) {
            sink(Completion::Readable { token });
        }
        self.accept_ready(sink);
        self.read_ready(sink);
    }
}

#[cfg(test)]
mod size_tests {
    /// Every connection pays for its slot; 48 bytes before `fill_parked`
    /// shrank.
    #[test]
    fn econn_stays_small() {
        let size = std::mem::size_of::<Option<super::EConn>>();
        assert!(size <= 32, "Option<EConn> grew to {size} bytes");
    }
}

#[cfg(test)]
mod fairness_tests {
    use std::{
        io::{Read, Write},
        net::{TcpListener, TcpStream},
        os::fd::AsRawFd,
        time::Duration,
    };

    use bytes::Bytes;

    use super::{EpollConfig, EpollDriver};
    use crate::{
        shard::driver::{Completion, Driver, Sock},
        ConnId,
    };

    fn pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        (client, server)
    }

    /// A connection that reads a full budget and sends on every turn leaves a
    /// `Sent` waiting after every reap. Another connection's data must still be
    /// seen within a few turns: `wait` may skip the poll for waiting completions,
    /// but not on every turn.
    #[test]
    fn a_connection_sending_every_turn_does_not_hide_other_edges() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut flood_peer, flood) = pair(&listener);
        let (mut quiet_peer, quiet) = pair(&listener);
        flood_peer.set_nonblocking(true).unwrap();
        let mut d = EpollDriver::new(EpollConfig {
            scratch_size: 4096,
            read_budget: 4096,
            pool: None,
        })
        .unwrap();
        let (fid, qid) = (
            ConnId {
                index: 0,
                generation: 1,
            },
            ConnId {
                index: 1,
                generation: 1,
            },
        );
        d.add_conn(fid, Sock::Fd(flood.as_raw_fd())).unwrap();
        d.add_conn(qid, Sock::Fd(quiet.as_raw_fd())).unwrap();
        d.set_reading(fid, flood.as_raw_fd(), true);
        d.set_reading(qid, quiet.as_raw_fd(), true);

        let chunk = vec![7u8; 4096];
        let reply = Bytes::from_static(b"ok");
        let mut sink_buf = vec![0u8; 1 << 16];
        let mut quiet_sent_at = None;
        let mut quiet_seen_at = None;
        for turn in 0..200 {
            // Keep the flood's socket full enough for a whole budget every turn,
            // and drain what it gets back so its sends never park.
            let _ = flood_peer.write(&chunk);
            let _ = flood_peer.write(&chunk);
            let _ = flood_peer.read(&mut sink_buf);
            if turn == 5 {
                quiet_peer.write_all(b"hello").unwrap();
                quiet_sent_at = Some(turn);
            }
            // Give loopback a moment to deliver before the wait asks.
            if turn == 5 {
                std::thread::sleep(Duration::from_millis(20));
            }
            d.wait(Some(Duration::from_millis(100))).unwrap();
            let mut flood_read = false;
            let mut quiet_read = false;
            d.reap(&mut |c| match c {
                Completion::Data { conn, .. } if conn == fid => flood_read = true,
                Completion::Data { conn, .. } if conn == qid => quiet_read = true,
                _ => {}
            });
            if flood_read {
                d.send(fid, flood.as_raw_fd(), std::slice::from_ref(&reply));
            }
            if quiet_read {
                quiet_seen_at = Some(turn);
                break;
            }
        }
        let (sent, seen) = (quiet_sent_at.unwrap(), quiet_seen_at);
        assert!(
            seen.is_some_and(|t| t <= sent + 3),
            "the quiet connection's data, written before turn {sent}, was seen at {seen:?}"
        );
    }
}
