//! The io_uring backend: one ring per shard, multishot accept, multishot recv with
//! buffer selection from a provided-buffer ring and a byte cap per arm (so a paused
//! connection takes in at most the cap — the shard's read budget — rounded up to a
//! whole buffer, more; one-shot
//! recv on kernels without the cap), `send`/`sendmsg` straight from the shard's
//! `Bytes`.
//!
//! Split by concern: `probe` (can io_uring be used, ring setup), `ops` (user_data
//! encoding, the memory requests hold, submission, completion routing), `recv`,
//! `splice` (relays), `listen` (multishot accept, fd watches, the doorbell) and
//! `bufring` (the provided-buffer ring); this file holds the driver's state and the
//! `Driver` implementation.
//!
//! Why the `unsafe` here is sound:
//! - Reads land in `BufRing` memory. A buffer named by a CQE is ours until we push it
//!   back, right after the sink has seen it. The memory is freed only once the buffer
//!   group is unregistered; if unregistering fails it is leaked.
//! - Every other SQE points into `ops` (a boxed msghdr + iovecs + `Bytes` clones, or a
//!   boxed `SockAddr`), dropped only when its CQE arrives, or at drop after every
//!   request was cancelled synchronously (leaked if that fails).
//! - An SQE names a raw fd, and the shard closes the fd right after `remove_conn` /
//!   `remove_listener`. An SQE still unsubmitted then could reach a recycled fd number
//!   (perhaps another shard's socket), so those calls submit pending SQEs first.
//!
//! This module must never block in `reap`, never look at a buffer after pushing it
//! back, and never free memory the kernel may still write.

use std::{
    collections::{HashMap, VecDeque},
    fmt, io,
    mem::MaybeUninit,
    os::fd::RawFd,
    time::Duration,
};

use bytes::Bytes;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;
use socket2::SockAddr;
use tracing::{debug, warn};

mod bufring;
mod direct;
mod listen;
mod ops;
mod probe;
mod recv;
mod splice;

pub(crate) use self::probe::probe;
use self::{
    bufring::BufRing,
    direct::{FileTable, FIXED},
    ops::{user_data, Op, SendBufs, CONNECT, RECV, SEND},
    probe::{build_ring, splice_support},
};
use super::{Completion, Driver, Sock, MAX_SEND_CHUNKS};
use crate::{numa::BufferPool, ConnId};

/// `IORING_ENTER_GETEVENTS`: reap (and, with DEFER_TASKRUN, run task work).
const ENTER_GETEVENTS: u32 = 1;
/// CQEs copied out of the ring at a time in `reap`.
const REAP_BATCH: usize = 64;

type Sink<'s> = &'s mut dyn FnMut(Completion<'_>);

/// Sizes of the io_uring driver's ring and read buffers.
#[derive(Debug)]
pub(crate) struct UringConfig {
    /// Submission queue size (the completion queue is four times this).
    pub entries: u32,
    /// Provided read buffers, a power of two (ignored with a pool).
    pub buf_count: u16,
    /// Bytes per read buffer (ignored with a pool).
    pub buf_size: u32,
    /// The shard's NUMA-bound buffer pool; its buffers become the provided-buffer
    /// ring. Without one, the driver allocates its own.
    pub pool: Option<BufferPool>,
    /// Reads: `Some(cap)` keeps a multishot recv armed per connection that ends
    /// itself after `cap` bytes (and is cancelled on pause), falling back to
    /// one-shot recvs if the kernel refuses the cap; `None` always uses one-shot
    /// recvs re-armed per completion.
    pub recv_cap: Option<u32>,
    /// Direct descriptors: `Some(n)` keeps connections in a registered file
    /// table of `n` slots (see `direct`); `None`, or a kernel that refuses the
    /// table, keeps ordinary fds.
    pub direct_files: Option<u32>,
}

/// `ConnSlot::generation` of a slot with no connection (generations are 24 bits).
const VACANT: u32 = u32::MAX;

/// A connection as the driver keeps it, indexed by `ConnId::index`. Every
/// connection pays for one, idle or not: 24 bytes (`slot_stays_small`).
#[derive(Clone, Copy)]
struct ConnSlot {
    /// The generation of the connection in this slot (its index is the
    /// slot's), or `VACANT`.
    generation: u32,
    /// The socket: an fd, or with `fixed` a slot of the file table.
    fd: RawFd,
    /// user_data of the in-flight send or connect, to cancel on removal
    /// (never 0: the kind is in the top byte), 8 bytes with `None`.
    op: Option<std::num::NonZeroU64>,
    fixed: bool,
    want_read: bool,
    recv_armed: bool,
    /// EOF or a read error was reported: never re-arm.
    read_closed: bool,
    /// On `rearm` (the buffer ring ran dry under it).
    rearm_queued: bool,
    /// A relay fill is in flight.
    fill: bool,
    /// A relay drain is in flight.
    drain: bool,
    /// Cancelled fills whose completion is still to come (and to be ignored).
    stale_fills: u8,
}

impl Default for ConnSlot {
    fn default() -> Self {
        ConnSlot {
            generation: VACANT,
            fd: -1,
            op: None,
            fixed: false,
            want_read: false,
            recv_armed: false,
            read_closed: false,
            rearm_queued: false,
            fill: false,
            drain: false,
            stale_fills: 0,
        }
    }
}

impl ConnSlot {
    /// The id of the connection in slot `index`, if any.
    fn id(&self, index: usize) -> Option<ConnId> {
        (self.generation != VACANT).then_some(ConnId {
            index: index as u32,
            generation: self.generation,
        })
    }
}

struct ListenerSlot {
    fd: RawFd,
    generation: u32,
    /// A multishot accept is in flight. Not after a failed accept: the shard
    /// decides when to accept again (see `accept::policy`).
    armed: bool,
    /// With direct descriptors: single-shot accepts in flight.
    inflight: u8,
    /// With direct descriptors: an accept failed (reported); no re-arming
    /// until the shard adds the listener again.
    failed: bool,
    /// Bound to a wildcard address (accepted sockets are asked their address).
    wildcard: bool,
}

struct WatchSlot {
    fd: RawFd,
    generation: u32,
}

/// One shard's io_uring instance and everything the kernel reads or writes for it.
pub(crate) struct UringDriver {
    /// Declared first so it is dropped first; Drop has already cancelled every request
    /// and unregistered the buffers by then.
    ring: IoUring,
    setup: &'static str,
    bufs: BufRing,
    buf_size: u32,
    ops: Slab<Op>,
    /// Boxed: they move into `ops` and back without moving what the kernel reads.
    #[allow(clippy::vec_box)]
    spare_sends: Vec<Box<SendBufs>>,
    conns: Vec<ConnSlot>,
    /// Fills asked for while the connection's recv was still armed, by slot:
    /// (pipe write end, max), issued when the recv ends so no relayed byte
    /// overtakes a received one. Kept here, not in `ConnSlot`: few
    /// connections ever relay.
    pending_fills: HashMap<u32, (RawFd, u32)>,
    listeners: Vec<Option<ListenerSlot>>,
    listener_generation: u32,
    doorbell: Option<RawFd>,
    /// fds watched for readability (`watch_readable`), by token.
    watches: Vec<Option<WatchSlot>>,
    watch_generation: u32,
    /// Connections whose recv ended with ENOBUFS, re-armed at the end of `reap`.
    rearm: Vec<ConnId>,
    /// SQEs that met a full SQ and a failing submit; they go before anything else.
    backlog: VecDeque<squeue::Entry>,
    /// io_uring_enter calls made outside `wait`, reported by the next `wait`.
    enters: u64,
    reap_budget: usize,
    enobufs: u64,
    /// The byte cap of multishot recvs, or None for one-shot recvs.
    recv_cap: Option<u32>,
    /// Recv requests armed so far (tests read it: multishot serves several reads
    /// per arm, and the cap ends an arm).
    recv_arms: u64,
    /// The kernel has what splice relays need (see [`splice_support`]).
    splice: bool,
    /// The registered file table, with direct descriptors on.
    files: Option<FileTable>,
    /// A direct accept found no free slot: re-arm when one frees.
    accept_starved: bool,
}

impl fmt::Debug for UringDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UringDriver")
            .field("setup", &self.setup)
            .field(
                "buffers",
                &format_args!("{} x {} B", self.bufs.count(), self.bufs.buf_size()),
            )
            .field("ops_in_flight", &self.ops.len())
            .field("enobufs", &self.enobufs)
            .field("recv_cap", &self.recv_cap)
            .field("direct_files", &self.files.as_ref().map(FileTable::size))
            .finish_non_exhaustive()
    }
}

impl UringDriver {
    pub(crate) fn new(config: UringConfig) -> io::Result<UringDriver> {
        let (ring, setup) = build_ring(config.entries)?;
        let mut bufs = match config.pool {
            Some(pool) => BufRing::from_pool(pool)?,
            None => BufRing::with_own_memory(config.buf_count, config.buf_size)?,
        };
        bufs.register(&ring).map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::OutOfMemory {
                " (RLIMIT_MEMLOCK?)"
            } else {
                ""
            };
            io::Error::new(
                e.kind(),
                format!("registering the io_uring buffer ring: {e}{hint}"),
            )
        })?;
        let (entries, buf_size) = (config.entries, bufs.buf_size());
        let splice = splice_support(&ring);
        if !splice {
            debug!("io_uring: no SPLICE or sync cancel here; splice relays are off");
        }
        let files = match config.direct_files {
            None => None,
            Some(size) => match FileTable::register(&ring, size) {
                Ok(table) => Some(table),
                Err(e) => {
                    warn!(size, error = %e, "io_uring: cannot register a file table; connections use ordinary fds");
                    None
                }
            },
        };
        debug!(setup, entries, buf_size, direct_files = ?config.direct_files, "io_uring ring ready");
        Ok(UringDriver {
            reap_budget: 4 * ring.params().sq_entries() as usize,
            splice,
            ring,
            setup,
            bufs,
            buf_size,
            ops: Slab::new(),
            spare_sends: Vec::new(),
            conns: Vec::new(),
            pending_fills: HashMap::new(),
            listeners: Vec::new(),
            listener_generation: 0,
            doorbell: None,
            watches: Vec::new(),
            watch_generation: 0,
            rearm: Vec::new(),
            backlog: VecDeque::new(),
            enters: 0,
            enobufs: 0,
            recv_cap: config.recv_cap.filter(|&cap| cap > 0),
            recv_arms: 0,
            files,
            accept_starved: false,
        })
    }

    /// The fd field and flags of an SQE naming slot `index`'s socket.
    fn target(&self, index: usize) -> (types::Fd, squeue::Flags) {
        let slot = &self.conns[index];
        let flags = if slot.fixed {
            FIXED
        } else {
            squeue::Flags::empty()
        };
        (types::Fd(slot.fd), flags)
    }

    /// Slots of the file table in use (tests).
    #[cfg(test)]
    fn fixed_in_use(&self) -> u32 {
        self.files.as_ref().map_or(0, FileTable::in_use)
    }

    fn slot_index(&self, conn: ConnId) -> Option<usize> {
        let index = conn.index as usize;
        let id = self.conns.get(index)?.id(index)?;
        (id.to_bits() == conn.to_bits()).then_some(index)
    }
}

impl Drop for UringDriver {
    fn drop(&mut self) {
        // Unsubmitted SQEs never reach the kernel; wait (bounded) for the rest to end.
        let timeout = types::Timespec::from(Duration::from_secs(1));
        let cancel = types::CancelBuilder::any();
        match self
            .ring
            .submitter()
            .register_sync_cancel(Some(timeout), cancel)
        {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                warn!(error = %e, "io_uring cancel at drop failed; leaking send buffers");
                std::mem::forget(std::mem::take(&mut self.ops));
            }
            _ => {}
        }
        if let Err(e) = self.bufs.unregister(&self.ring) {
            warn!(error = %e, "io_uring buffer ring unregister failed; leaking its memory");
        }
    }
}

impl Driver for UringDriver {
    fn backend(&self) -> crate::Backend {
        crate::Backend::Uring
    }

    fn nonblocking_sockets(&self) -> bool {
        false
    }

    fn splice_supported(&self) -> bool {
        self.splice
    }

    fn add_listener(&mut self, listener: usize, fd: RawFd) -> io::Result<()> {
        if listener > u32::MAX as usize {
            return Err(io::Error::other("too many listeners"));
        }
        if self.listeners.len() <= listener {
            self.listeners.resize_with(listener + 1, || None);
        }
        if self.listeners[listener].is_some() {
            return Err(io::Error::other(format!(
                "listener {listener} already registered"
            )));
        }
        let generation = self.listener_generation.wrapping_add(1) & ConnId::GENERATION_MASK;
        self.listener_generation = generation;
        let wildcard = self.files.is_some() && {
            // SAFETY: the shard keeps the listening fd open while it is added.
            let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            socket2::SockRef::from(&borrowed)
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .is_none_or(|a| a.ip().is_unspecified())
        };
        let slot = ListenerSlot {
            fd,
            generation,
            armed: false,
            inflight: 0,
            failed: false,
            wildcard,
        };
        self.listeners[listener] = Some(slot);
        self.arm_accept(listener);
        Ok(())
    }

    fn remove_listener(&mut self, listener: usize, _fd: RawFd) {
        let Some(l) = self.listeners.get_mut(listener).and_then(Option::take) else {
            return;
        };
        let pending = self.has_pending();
        if l.armed {
            self.cancel(Self::accept_data(listener, l.generation));
        }
        if l.inflight > 0 {
            // Cancelled by fd, which the kernel looks up when the cancel is
            // issued: submitted now, before the shard closes its fd (else the
            // accepts stay armed on a socket another process now accepts on —
            // an upgrade's old process would keep taking connections).
            self.cancel_direct_accepts(l.fd);
            self.submit_pending();
        } else if pending {
            self.submit_pending();
        }
    }

    fn add_conn(&mut self, conn: ConnId, sock: Sock) -> io::Result<Option<u32>> {
        let (fd, fixed, adopted) = match sock {
            Sock::Fixed(slot) => (slot as RawFd, true, None),
            Sock::Fd(fd) if self.files.is_some() => {
                let slot = self.install(fd)?;
                (slot as RawFd, true, Some(slot))
            }
            Sock::Fd(fd) => (fd, false, None),
        };
        let index = conn.index as usize;
        if self.conns.len() <= index {
            self.conns.resize_with(index + 1, ConnSlot::default);
        }
        if self.conns[index].generation != VACANT {
            warn!(%conn, "add_conn over a connection that was never removed");
        }
        self.pending_fills.remove(&conn.index);
        self.conns[index] = ConnSlot {
            generation: conn.generation,
            fd,
            fixed,
            ..ConnSlot::default()
        };
        Ok(adopted)
    }

    fn direct_descriptors(&self) -> bool {
        self.files.is_some()
    }

    fn shutdown_fixed(&mut self, slot: u32) {
        self.shutdown_slot(slot);
    }

    fn close_fixed(&mut self, slot: u32) {
        self.close_slot(slot);
    }

    fn query_unread(&mut self, conn: ConnId) {
        self.query_unread_slot(conn);
    }

    fn set_reading(&mut self, conn: ConnId, _fd: RawFd, on: bool) {
        let Some(index) = self.slot_index(conn) else {
            return;
        };
        let slot = &mut self.conns[index];
        slot.want_read = on;
        if on && !slot.recv_armed && !slot.read_closed && !slot.rearm_queued {
            self.arm_recv(index);
        } else if !on && slot.recv_armed && self.recv_cap.is_some() {
            // A multishot recv goes on until cancelled (or its cap is reached);
            // whatever it delivers meanwhile the shard keeps for resume. Its
            // ECANCELED completion re-arms it if reading is back on by then. An
            // armed one-shot recv completes at most once more: no cancel needed.
            self.cancel(user_data(RECV, conn.to_bits()));
        }
    }

    fn send(&mut self, conn: ConnId, fd: RawFd, chunks: &[Bytes]) {
        let (fd, fixed) = match self.slot_index(conn) {
            Some(index) => self.target(index),
            None => (types::Fd(fd), squeue::Flags::empty()),
        };
        debug_assert!(!chunks.is_empty(), "send with nothing to send");
        let mut bufs = self.spare_sends.pop().unwrap_or_else(|| {
            Box::new(SendBufs {
                // SAFETY: msghdr is a plain C struct for which all-zero is valid.
                hdr: unsafe { std::mem::zeroed() },
                iov: Vec::with_capacity(MAX_SEND_CHUNKS),
                chunks: Vec::with_capacity(MAX_SEND_CHUNKS),
            })
        });
        for chunk in chunks.iter().take(MAX_SEND_CHUNKS) {
            let iov_base = chunk.as_ptr().cast_mut().cast();
            bufs.iov.push(libc::iovec {
                iov_base,
                iov_len: chunk.len(),
            });
            bufs.chunks.push(chunk.clone());
        }
        let key = self.ops.vacant_key();
        let sqe = if let [one] = &bufs.iov[..] {
            // One chunk (the common case: a reply per turn): plain SEND skips the
            // msghdr and iovec import SENDMSG pays for in the kernel.
            let len = u32::try_from(one.iov_len).unwrap_or(u32::MAX);
            opcode::Send::new(fd, one.iov_base.cast_const().cast(), len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .flags(fixed)
        } else {
            bufs.hdr.msg_iov = bufs.iov.as_mut_ptr();
            bufs.hdr.msg_iovlen = bufs.iov.len() as _;
            opcode::SendMsg::new(fd, &bufs.hdr)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
                .flags(fixed)
        };
        // Moving the Box moves no heap memory: the pointers above stay valid.
        self.ops.insert(Op::Send { conn, bufs });
        self.push_op(conn, sqe.user_data(user_data(SEND, key as u64)));
    }

    fn splice_in(&mut self, conn: ConnId, _fd: RawFd, pipe_w: RawFd, max: usize) {
        let Some(index) = self.slot_index(conn) else {
            return;
        };
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        if self.conns[index].recv_armed {
            self.pending_fills.insert(conn.index, (pipe_w, max));
            if self.recv_cap.is_some() {
                self.cancel(user_data(RECV, conn.to_bits()));
            }
        } else {
            self.issue_fill(index, pipe_w, max);
        }
    }

    fn splice_out(&mut self, conn: ConnId, _fd: RawFd, pipe_r: RawFd, len: usize) {
        if let Some(index) = self.slot_index(conn) {
            self.issue_drain(index, pipe_r, u32::try_from(len).unwrap_or(u32::MAX));
        }
    }

    fn cancel_splice(&mut self, conn: ConnId) {
        let Some(index) = self.slot_index(conn) else {
            return;
        };
        self.pending_fills.remove(&conn.index);
        self.sync_cancel_splices(index);
        let slot = &mut self.conns[index];
        if std::mem::take(&mut slot.fill) {
            slot.stale_fills = slot.stale_fills.saturating_add(1);
        }
    }

    fn connect(&mut self, conn: ConnId, fd: RawFd, addr: SockAddr) {
        let (fd, fixed) = match self.slot_index(conn) {
            Some(index) => self.target(index),
            None => (types::Fd(fd), squeue::Flags::empty()),
        };
        let addr = Box::new(addr);
        let key = self.ops.vacant_key();
        let sqe = opcode::Connect::new(fd, addr.as_ptr().cast(), addr.len())
            .build()
            .flags(fixed);
        self.ops.insert(Op::Connect { conn, _addr: addr });
        self.push_op(conn, sqe.user_data(user_data(CONNECT, key as u64)));
    }

    fn remove_conn(&mut self, conn: ConnId, _fd: RawFd) {
        let Some(index) = self.slot_index(conn) else {
            return;
        };
        self.sync_cancel_splices(index);
        let slot = std::mem::take(&mut self.conns[index]);
        self.pending_fills.remove(&conn.index);
        let pending = self.has_pending();
        // In-flight requests hold the file open: cancel them so the socket really closes.
        if slot.recv_armed {
            self.cancel(user_data(RECV, conn.to_bits()));
        }
        if let Some(op) = slot.op {
            self.cancel(op.get());
        }
        if pending {
            self.submit_pending();
        }
    }

    fn watch_doorbell(&mut self, fd: RawFd) -> io::Result<()> {
        if self.doorbell.replace(fd).is_none() {
            self.arm_doorbell(fd);
        }
        Ok(())
    }

    fn watch_readable(&mut self, token: u32, fd: RawFd) -> io::Result<()> {
        let index = token as usize;
        if self.watches.len() <= index {
            self.watches.resize_with(index + 1, || None);
        }
        if self.watches[index].is_some() {
            return Err(io::Error::other(format!(
                "watch {token} already registered"
            )));
        }
        let generation = self.watch_generation.wrapping_add(1) & ConnId::GENERATION_MASK;
        self.watch_generation = generation;
        self.watches[index] = Some(WatchSlot { fd, generation });
        self.arm_watch(token);
        Ok(())
    }

    fn unwatch_readable(&mut self, token: u32) {
        let Some(w) = self.watches.get_mut(token as usize).and_then(Option::take) else {
            return;
        };
        let pending = self.has_pending();
        self.cancel(Self::watch_data(token, w.generation));
        if pending {
            self.submit_pending();
        }
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<u64> {
        self.flush_backlog();
        let mut enters = std::mem::take(&mut self.enters);
        let busy = !self.ring.completion().is_empty() || !self.backlog.is_empty();
        let result = match timeout {
            _ if busy && self.ring.submission().is_empty() => return Ok(enters),
            _ if busy => self.ring.submit(),
            // Not waiting (the shard stopped at a budget with work left): submit and
            // run deferred completions without the EXT_ARG timeout setup, which for
            // a zero timeout arms a timer and returns ETIME.
            Some(t) if t.is_zero() => {
                let to_submit = self.ring.submission().len() as u32;
                // SAFETY: no argument pointer; GETEVENTS with min_complete 0 only
                // runs pending task work and returns.
                unsafe {
                    self.ring.submitter().enter::<libc::sigset_t>(
                        to_submit,
                        0,
                        ENTER_GETEVENTS,
                        None,
                    )
                }
            }
            Some(t) => {
                let ts = types::Timespec::from(t);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        enters += 1;
        match result.map_err(|e| (e.raw_os_error(), e)) {
            // Timed out, interrupted, or the CQ must be reaped first: all normal.
            Ok(_) | Err((Some(libc::ETIME | libc::EINTR | libc::EBUSY), _)) => Ok(enters),
            Err((_, e)) => Err(e),
        }
    }

    fn reap(&mut self, sink: Sink<'_>) {
        let mut batch = [const { MaybeUninit::<cqueue::Entry>::uninit() }; REAP_BATCH];
        let mut left = self.reap_budget;
        while left > 0 {
            // The queue view drops at the end of this statement, handing the slots back
            // to the kernel; `cqes` are copies.
            let cqes = self
                .ring
                .completion()
                .fill(&mut batch[..left.min(REAP_BATCH)]);
            if cqes.is_empty() {
                break;
            }
            left -= cqes.len();
            cqes.iter().for_each(|cqe| self.complete(cqe, sink));
        }
        // Every buffer is back in the ring now: re-arm the reads that ran dry.
        let mut rearm = std::mem::take(&mut self.rearm);
        for conn in rearm.drain(..) {
            let Some(index) = self.slot_index(conn) else {
                continue;
            };
            let slot = &mut self.conns[index];
            slot.rearm_queued = false;
            if slot.want_read && !slot.recv_armed && !slot.read_closed {
                self.arm_recv(index);
            }
        }
        self.rearm = rearm;
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod size_tests {
    /// Every connection pays for its slot; 48 bytes before the id became a
    /// generation and pending fills moved to `pending_fills`.
    #[test]
    fn slot_stays_small() {
        let size = std::mem::size_of::<super::ConnSlot>();
        assert!(size <= 24, "ConnSlot grew to {size} bytes");
    }
}
