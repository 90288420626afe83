//! The I/O driver: one per shard, behind one trait, so nothing above this module ever
//! asks which backend it runs on.
//!
//! The shape is a proactor. The shard asks for work (`send`, `connect`, reading on or
//! off) and later receives [`Completion`]s from [`Driver::reap`]. io_uring completes
//! into it directly; the epoll driver turns readiness into the same completions (it
//! reads into one shard-local scratch buffer and hands out a slice of it). On both
//! backends a `Data` slice is only valid during the sink call: whatever the handler
//! does not consume is copied into the connection by the shard, so an idle
//! connection holds no read buffer.
//!
//! Rules every driver keeps:
//! - at most one `send` per connection is in flight; it yields exactly one `Sent`
//!   (`Ok(0)` means "retry": the socket was full);
//! - after `remove_conn`, completions for that id may still arrive; the shard drops
//!   them by generation check, and the driver releases any buffers they hold;
//! - when `remove_conn` / `remove_listener` return, no unsubmitted request names
//!   that fd: the shard closes it right after, and the number may be reused at once;
//! - a connection held as a direct descriptor (`Sock::Fixed`) has no fd: the shard
//!   passes `-1` as its `fd` and the driver uses what `add_conn` recorded;
//! - `reap` never blocks; `wait` blocks at most `timeout`, less if the driver itself
//!   has work it remembered (epoll's ready list).

use std::{
    io,
    net::SocketAddr,
    os::fd::{OwnedFd, RawFd},
    time::Duration,
};

use bytes::Bytes;
use socket2::SockAddr;

use crate::ConnId;

pub(crate) mod epoll;
pub(crate) mod uring;

/// Most chunks handed to one `send`.
pub(crate) const MAX_SEND_CHUNKS: usize = 64;

/// What the driver reports back to the shard.
#[derive(Debug)]
pub(crate) enum Completion<'a> {
    /// Listener `listener` accepted a connection (or failed to). After a failure
    /// the driver accepts no more on that listener until it is removed and added
    /// again: when is for `accept::policy` to decide. A connection that failed on
    /// its own (`policy::retry_at_once`) is skipped, not reported.
    Accepted {
        listener: usize,
        result: io::Result<Accepted>,
    },
    /// Bytes read from a connection. Valid only during the sink call.
    Data { conn: ConnId, data: &'a [u8] },
    /// The connection's read side ended: `None` is EOF, `Some` an error.
    ReadClosed {
        conn: ConnId,
        error: Option<io::Error>,
    },
    /// The one in-flight send of `conn` finished; `Ok(n)` bytes left the queue.
    Sent {
        conn: ConnId,
        result: io::Result<usize>,
    },
    /// A relay's fill (`splice_in`) finished: `Ok(n)` bytes went into the pipe,
    /// `Ok(0)` is the socket's EOF, `Err(WouldBlock)` means the pipe was full.
    Spliced {
        conn: ConnId,
        result: io::Result<usize>,
    },
    /// An outbound connect finished.
    Connected {
        conn: ConnId,
        result: io::Result<()>,
    },
    /// The answer to `query_unread`: bytes waiting in the connection's
    /// receive queue (an error: it cannot be asked).
    Unread {
        conn: ConnId,
        result: io::Result<usize>,
    },
    /// The shard's doorbell (eventfd) was rung.
    Doorbell,
    /// An fd watched with `watch_readable` became readable (level of the fd is not
    /// tracked: the shard reads until EAGAIN, then waits for the next report).
    Readable { token: u32 },
}

/// A connection's socket as a driver names it: an ordinary descriptor, or a slot
/// in the io_uring driver's registered file table (a *direct descriptor*, which
/// has no number in the process's fd table and so no RLIMIT_NOFILE cost).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sock {
    Fd(RawFd),
    Fixed(u32),
}

/// A connection a driver accepted.
#[derive(Debug)]
pub(crate) enum Accepted {
    /// An ordinary descriptor; the shard asks the socket for its addresses.
    Fd(OwnedFd),
    /// A direct descriptor, with the addresses the driver learned for it (a direct
    /// descriptor cannot be asked: no getpeername/getsockname on a slot). `local`
    /// is `None` when it is the listener's own address (a listener bound to one
    /// address), which the shard knows.
    Fixed {
        slot: u32,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
    },
}

/// One backend. Implementations live beside this file.
pub(crate) trait Driver {
    /// Which backend this is (for logs and metrics).
    fn backend(&self) -> crate::Backend;

    /// Whether connection sockets must be non-blocking (epoll) or blocking
    /// (io_uring, which must wait for readiness itself rather than fail with EAGAIN).
    fn nonblocking_sockets(&self) -> bool {
        true
    }

    /// Whether this driver can run splice relays here (io_uring: the kernel has
    /// the SPLICE opcode and synchronous cancellation); without, relaying is off
    /// and `Ctx::splice_into` answers `NoPipe`.
    fn splice_supported(&self) -> bool {
        true
    }

    /// Starts accepting on a listening socket owned by the shard.
    fn add_listener(&mut self, listener: usize, fd: RawFd) -> io::Result<()>;

    /// Stops accepting on a listener; the shard closes the fd afterwards.
    fn remove_listener(&mut self, listener: usize, fd: RawFd);

    /// Registers a connected (or connecting) socket. Reading starts with
    /// `set_reading(.., true)`. A driver that keeps connections as direct
    /// descriptors moves an ordinary `Sock::Fd` into its file table and returns
    /// the slot: the caller then closes its descriptor and names the socket by
    /// the slot from now on.
    fn add_conn(&mut self, conn: ConnId, sock: Sock) -> io::Result<Option<u32>>;

    /// Whether connections live in a registered file table (io_uring direct
    /// descriptors) rather than the process's fd table.
    fn direct_descriptors(&self) -> bool {
        false
    }

    /// Half-closes (SHUT_WR) a connection held as a direct descriptor; ordinary
    /// descriptors are shut down by the shard itself.
    fn shutdown_fixed(&mut self, _slot: u32) {}

    /// Asks how many bytes wait unread in a direct descriptor's receive queue
    /// (`FIONREAD`, which has no other form for a slot); `Unread` follows.
    fn query_unread(&mut self, _conn: ConnId) {}

    /// Closes a direct descriptor (after `remove_conn`, if it was registered).
    /// The slot is reused only once the close has completed.
    fn close_fixed(&mut self, _slot: u32) {}

    /// Turns reading on or off for a registered connection.
    fn set_reading(&mut self, conn: ConnId, fd: RawFd, on: bool);

    /// Writes `chunks` (at most [`MAX_SEND_CHUNKS`]) in order. The chunks stay valid
    /// until the `Sent` completion because the driver keeps clones if it needs them.
    fn send(&mut self, conn: ConnId, fd: RawFd, chunks: &[Bytes]);

    /// Moves up to `max` bytes (at most the room left in the pipe) from socket `fd`
    /// into the pipe whose write end is `pipe_w`, once the socket has data; one
    /// `Spliced` follows. At most one per connection in flight, and the connection
    /// is not being read otherwise (reading is off; io_uring waits for an armed
    /// recv to end first).
    fn splice_in(&mut self, conn: ConnId, fd: RawFd, pipe_w: RawFd, max: usize);

    /// Moves `len` bytes (what the pipe holds) from the pipe whose read end is
    /// `pipe_r` into socket `fd`. It takes the connection's one send slot and
    /// completes as `Sent` (`Ok(0)`: retry, the socket was full).
    fn splice_out(&mut self, conn: ConnId, fd: RawFd, pipe_r: RawFd, len: usize);

    /// Ends `conn`'s in-flight `splice_in` or `splice_out`, if any, before its pipe
    /// is closed: when this returns no request names the pipe any more. A
    /// cancelled `splice_out` still completes (as `Sent`, any result); a cancelled
    /// `splice_in` may complete or not.
    fn cancel_splice(&mut self, conn: ConnId);

    /// Connects a registered, non-blocking socket to `addr`.
    fn connect(&mut self, conn: ConnId, fd: RawFd, addr: SockAddr);

    /// Forgets a connection before its fd is closed; cancels its in-flight work.
    fn remove_conn(&mut self, conn: ConnId, fd: RawFd);

    /// Watches the shard's doorbell eventfd; each ring yields `Doorbell`. The driver
    /// resets (reads) the eventfd itself.
    fn watch_doorbell(&mut self, fd: RawFd) -> io::Result<()>;

    /// Reports `Readable { token }` each time `fd` becomes readable, until
    /// `unwatch_readable`. Used for the EPOLLEXCLUSIVE accept watch.
    fn watch_readable(&mut self, token: u32, fd: RawFd) -> io::Result<()>;

    /// Stops a `watch_readable`; the fd may be closed right after.
    fn unwatch_readable(&mut self, token: u32);

    /// Submits queued work and waits up to `timeout` (None: until something
    /// happens) for completions. Returns the number of syscalls made.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<u64>;

    /// Hands every available completion to `sink`. Never blocks.
    fn reap(&mut self, sink: &mut dyn FnMut(Completion<'_>));
}

/// The result of asking for io_uring: usable, or why not.
pub(crate) fn probe_uring() -> Result<(), String> {
    if let Ok(v) = std::env::var(crate::ENV_FORCE_URING_PROBE_FAIL) {
        if !v.is_empty() && v != "0" {
            return Err(format!(
                "probe forced to fail by {}={v}",
                crate::ENV_FORCE_URING_PROBE_FAIL
            ));
        }
    }
    uring::probe()
}
