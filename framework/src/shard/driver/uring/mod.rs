//! The io_uring backend: one ring per shard, multishot accept, multishot recv with
//! buffer selection from a provided-buffer ring and a byte cap per arm (so a paused
//! connection takes in at most the cap — the shard's read budget — rounded up to a
//! whole buffer, more; one-shot
//! recv on kernels without the cap), `send`/`sendmsg` straight from the shard's
//! `Bytes`.
//!
//! user_data is `kind << 56 | payload`: ACCEPT (listener index, generation above bit
//! 32), RECV (`ConnId::to_bits`), SEND and CONNECT (a key into `ops`, which owns what
//! the kernel reads), CANCEL (ignored), DOORBELL.
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
    collections::VecDeque,
    fmt, io,
    mem::MaybeUninit,
    os::fd::{FromRawFd, OwnedFd, RawFd},
    time::{Duration, Instant},
};

use bytes::Bytes;
use io_uring::{cqueue, opcode, squeue, types, IoUring, Probe};
use slab::Slab;
use socket2::SockAddr;
use tracing::{debug, warn};

mod bufring;

use self::bufring::{BufRing, BUF_GROUP};
use super::{Completion, Driver, MAX_SEND_CHUNKS};
use crate::{accept::policy, numa::BufferPool, ConnId};

const KIND_SHIFT: u32 = 56;
const PAYLOAD_MASK: u64 = (1 << KIND_SHIFT) - 1;
const ACCEPT: u8 = 1;
const RECV: u8 = 2;
const SEND: u8 = 3;
const CONNECT: u8 = 4;
const CANCEL: u8 = 5;
const DOORBELL: u8 = 6;
const WATCH: u8 = 7;
/// Relay ops (payload: `ConnId::to_bits`): a POLL_ADD linked to the SPLICE it
/// guards, for a fill (socket -> pipe) and a drain (pipe -> socket).
const FILL_POLL: u8 = 8;
const FILL: u8 = 9;
const DRAIN_POLL: u8 = 10;
const DRAIN: u8 = 11;
/// Offset meaning "none" for the pipe and socket ends of a splice.
const NO_OFFSET: i64 = -1;
/// `IORING_RECVSEND_POLL_FIRST` (sqe->ioprio of a recv or send).
const RECVSEND_POLL_FIRST: u16 = 1;
/// `IORING_ENTER_GETEVENTS`: reap (and, with DEFER_TASKRUN, run task work).
const ENTER_GETEVENTS: u32 = 1;
/// Byte offset of `optlen` in an SQE (the union at 44 with `file_index`,
/// `splice_fd_in`, `addr_len`). For a multishot recv it is the total the request may
/// receive before it ends itself (`IORING_RECV_MSHOT_LIM`, Linux 6.16+); older
/// kernels reject a non-zero value there with EINVAL.
const SQE_OPTLEN_OFFSET: usize = 44;
const _: () = assert!(std::mem::size_of::<squeue::Entry>() == 64);

/// `sqe` with `optlen` set to `cap`. The io-uring crate has no setter for it yet.
fn with_optlen(sqe: squeue::Entry, cap: u32) -> squeue::Entry {
    // SAFETY: `squeue::Entry` is a `repr(C)` wrapper of the 64-byte `io_uring_sqe`,
    // made of integers and unions of integers only, so every bit pattern is valid;
    // the assertion above pins the size.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute(sqe) };
    raw[SQE_OPTLEN_OFFSET..SQE_OPTLEN_OFFSET + 4].copy_from_slice(&cap.to_ne_bytes());
    // SAFETY: as above.
    unsafe { std::mem::transmute::<[u8; 64], squeue::Entry>(raw) }
}

/// Send buffers kept for reuse, so steady-state sends allocate nothing.
const SPARE_SENDS: usize = 256;
/// CQEs copied out of the ring at a time in `reap`.
const REAP_BATCH: usize = 64;

type Sink<'s> = &'s mut dyn FnMut(Completion<'_>);

fn user_data(kind: u8, payload: u64) -> u64 {
    (u64::from(kind) << KIND_SHIFT) | (payload & PAYLOAD_MASK)
}

fn os_error(res: i32) -> io::Error {
    io::Error::from_raw_os_error(-res)
}

/// A synchronous splice cancel longer than this is logged (it blocks the shard).
const SLOW_SYNC_CANCEL: Duration = Duration::from_millis(10);

/// Opcodes we submit, by the name an operator would search for.
const OPCODES: [(&str, u8); 7] = [
    ("ACCEPT (multishot)", opcode::AcceptMulti::CODE),
    ("RECV (buffer select)", opcode::Recv::CODE),
    ("SENDMSG", opcode::SendMsg::CODE),
    ("CONNECT", opcode::Connect::CODE),
    ("ASYNC_CANCEL", opcode::AsyncCancel::CODE),
    ("POLL_ADD (multishot)", opcode::PollAdd::CODE),
    ("READ", opcode::Read::CODE),
];

/// Whether this process can use io_uring the way this driver does; `Err` says why not.
pub(crate) fn probe() -> Result<(), String> {
    let (ring, _) = build_ring(8).map_err(|e| setup_failure(&e))?;
    let mut probe = Probe::new();
    let probed = ring.submitter().register_probe(&mut probe);
    probed.map_err(|e| format!("io_uring opcode probe failed: {e}"))?;
    if let Some((name, _)) = OPCODES.iter().find(|(_, code)| !probe.is_supported(*code)) {
        return Err(format!("io_uring lacks opcode {name}"));
    }
    if !ring.params().is_feature_ext_arg() {
        return Err("io_uring lacks IORING_FEAT_EXT_ARG (waiting with a timeout)".into());
    }
    let mut bufs = BufRing::with_own_memory(1, 64).map_err(|e| e.to_string())?;
    let no_bufs = |e: io::Error| format!("io_uring provided-buffer rings unusable: {e}");
    bufs.register(&ring).map_err(no_bufs)?;
    bufs.unregister(&ring).map_err(no_bufs)
}

fn setup_failure(e: &io::Error) -> String {
    let knob = "/proc/sys/kernel/io_uring_disabled";
    match e.raw_os_error() {
        Some(libc::ENOSYS) => "kernel has no io_uring (io_uring_setup: ENOSYS)".into(),
        Some(libc::EPERM | libc::EACCES) => match std::fs::read_to_string(knob) {
            Ok(v) => format!(
                "io_uring not permitted ({e}); {knob} is {} (0 on, 1 group only, 2 off)",
                v.trim()
            ),
            Err(_) => format!("io_uring not permitted ({e}); seccomp or a container policy?"),
        },
        _ => format!("io_uring_setup failed: {e}"),
    }
}

/// The best ring this kernel accepts, and which setup that was.
fn build_ring(entries: u32) -> io::Result<(IoUring, &'static str)> {
    let cq = entries.saturating_mul(4);
    let hopeless = |e: &io::Error| {
        matches!(
            e.raw_os_error(),
            Some(libc::ENOSYS | libc::EPERM | libc::EACCES)
        )
    };
    let mut builder = IoUring::builder();
    builder.setup_single_issuer().setup_defer_taskrun();
    let err = match builder.setup_submit_all().setup_cqsize(cq).build(entries) {
        Ok(ring) => return Ok((ring, "single_issuer+defer_taskrun")),
        Err(e) if hopeless(&e) => return Err(e),
        Err(e) => e,
    };
    debug!(error = %err, "io_uring: SINGLE_ISSUER+DEFER_TASKRUN refused; trying COOP_TASKRUN");
    let err = match IoUring::builder()
        .setup_coop_taskrun()
        .setup_cqsize(cq)
        .build(entries)
    {
        Ok(ring) => return Ok((ring, "coop_taskrun")),
        Err(e) => e,
    };
    debug!(error = %err, "io_uring: COOP_TASKRUN refused; trying a plain ring");
    Ok((IoUring::builder().setup_cqsize(cq).build(entries)?, "plain"))
}

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
}

/// What the kernel reads for one `sendmsg`; boxed so its address is stable.
struct SendBufs {
    hdr: libc::msghdr,
    iov: Vec<libc::iovec>,
    chunks: Vec<Bytes>,
}

/// An in-flight send or connect: whose, and what the kernel reads for it.
enum Op {
    Send { conn: ConnId, bufs: Box<SendBufs> },
    Connect { conn: ConnId, _addr: Box<SockAddr> },
}

#[derive(Clone, Copy, Default)]
struct ConnSlot {
    id: Option<ConnId>,
    fd: RawFd,
    want_read: bool,
    recv_armed: bool,
    /// EOF or a read error was reported: never re-arm.
    read_closed: bool,
    /// On `rearm` (the buffer ring ran dry under it).
    rearm_queued: bool,
    /// user_data of the in-flight send or connect, to cancel on removal.
    op: Option<u64>,
    /// A relay fill is in flight.
    fill: bool,
    /// A fill asked for while the recv was still armed: (pipe write end, max),
    /// issued when the recv ends so no relayed byte overtakes a received one.
    pending_fill: Option<(RawFd, u32)>,
    /// Cancelled fills whose completion is still to come (and to be ignored).
    stale_fills: u8,
    /// A relay drain is in flight.
    drain: bool,
}

struct ListenerSlot {
    fd: RawFd,
    generation: u32,
    /// A multishot accept is in flight. Not after a failed accept: the shard
    /// decides when to accept again (see `accept::policy`).
    armed: bool,
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
}

/// Whether `ring`'s kernel has the SPLICE opcode and synchronous cancellation
/// (Linux 6.0), which relays rely on to close a pipe or socket safely.
fn splice_support(ring: &IoUring) -> bool {
    let mut probe = Probe::new();
    if ring.submitter().register_probe(&mut probe).is_err()
        || !probe.is_supported(opcode::Splice::CODE)
    {
        return false;
    }
    // Cancelling nothing: ENOENT if the kernel knows the call.
    let nothing = types::CancelBuilder::user_data(u64::MAX);
    let timeout = types::Timespec::from(Duration::from_millis(1));
    match ring
        .submitter()
        .register_sync_cancel(Some(timeout), nothing)
    {
        Ok(()) => true,
        Err(e) => e.raw_os_error() == Some(libc::ENOENT),
    }
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
        debug!(setup, entries, buf_size, "io_uring ring ready");
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
        })
    }

    /// Queues an SQE; a full SQ is submitted to make room.
    fn push(&mut self, sqe: squeue::Entry) {
        if self.backlog.is_empty() {
            // SAFETY (both pushes): every SQE built here points only at memory that
            // outlives its CQE (see the module doc).
            if unsafe { self.ring.submission().push(&sqe) }.is_ok()
                || (self.submit_now() && unsafe { self.ring.submission().push(&sqe) }.is_ok())
            {
                return;
            }
        }
        self.backlog.push_back(sqe);
    }

    /// Moves backlogged SQEs into the SQ, submitting when it fills.
    fn flush_backlog(&mut self) {
        while let Some(sqe) = self.backlog.front() {
            // SAFETY: as in `push`.
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                self.backlog.pop_front();
            } else if !self.submit_now() || self.ring.submission().is_full() {
                return;
            }
        }
    }

    /// One io_uring_enter without waiting; false if it failed.
    fn submit_now(&mut self) -> bool {
        self.enters += 1;
        let result = self.ring.submit();
        if let Err(e) = &result {
            warn!(error = %e, "io_uring submit failed; keeping requests for the next turn");
        }
        result.is_ok()
    }

    /// Whether an SQE (which may name an fd about to be closed) waits to be submitted.
    fn has_pending(&mut self) -> bool {
        !self.backlog.is_empty() || !self.ring.submission().is_empty()
    }

    fn submit_pending(&mut self) {
        self.flush_backlog();
        if !self.ring.submission().is_empty() {
            self.submit_now();
        }
        self.flush_backlog();
    }

    fn slot_index(&self, conn: ConnId) -> Option<usize> {
        let index = conn.index as usize;
        let id = self.conns.get(index)?.id?;
        (id.to_bits() == conn.to_bits()).then_some(index)
    }

    fn arm_recv(&mut self, index: usize) {
        let slot = &mut self.conns[index];
        let Some(id) = slot.id else { return };
        slot.recv_armed = true;
        self.recv_arms += 1;
        let fd = types::Fd(slot.fd);
        let sqe = match self.recv_cap {
            // Multishot: one arm serves many reads (no SQE, poll arm and hash per
            // read). Without a cap it would keep draining a fast peer into the ring
            // until a pause's cancel lands — megabytes; the cap bounds what a paused
            // connection takes in to `cap` bytes, and the request then ends itself.
            Some(cap) => with_optlen(opcode::RecvMulti::new(fd, BUF_GROUP).build(), cap),
            // One-shot with buffer selection, re-armed after each completion: at
            // most one buffer arrives after the shard stops reading. POLL_FIRST: the
            // socket was just drained (or is new), so skip the non-blocking attempt
            // that would fail with EAGAIN and wait for data.
            None => opcode::Recv::new(fd, std::ptr::null_mut(), self.buf_size)
                .buf_group(BUF_GROUP)
                .ioprio(RECVSEND_POLL_FIRST)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT),
        };
        self.push(sqe.user_data(user_data(RECV, id.to_bits())));
    }

    fn accept_data(index: usize, generation: u32) -> u64 {
        user_data(ACCEPT, index as u64 | (u64::from(generation) << 32))
    }

    fn arm_accept(&mut self, index: usize) {
        let Some(Some(l)) = self.listeners.get_mut(index) else {
            return;
        };
        l.armed = true;
        // Blocking sockets: io_uring waits for readiness itself (internal poll).
        // With O_NONBLOCK a send that meets a full socket can complete with EAGAIN
        // instead of waiting (seen here about once in a dozen backpressure runs).
        let flags = libc::SOCK_CLOEXEC;
        let sqe = opcode::AcceptMulti::new(types::Fd(l.fd))
            .flags(flags)
            .build();
        let ud = Self::accept_data(index, l.generation);
        self.push(sqe.user_data(ud));
    }

    fn watch_data(token: u32, generation: u32) -> u64 {
        user_data(WATCH, u64::from(token) | (u64::from(generation) << 32))
    }

    fn arm_watch(&mut self, token: u32) {
        let Some(Some(w)) = self.watches.get(token as usize) else {
            return;
        };
        let sqe = opcode::PollAdd::new(types::Fd(w.fd), libc::POLLIN as u32).multi(true);
        let ud = Self::watch_data(token, w.generation);
        self.push(sqe.build().user_data(ud));
    }

    fn on_watch(&mut self, payload: u64, res: i32, more: bool, sink: Sink<'_>) {
        let token = payload as u32;
        let generation = (payload >> 32) as u32;
        let current = matches!(
            self.watches.get(token as usize),
            Some(Some(w)) if w.generation == generation
        );
        if !current || res == -libc::ECANCELED {
            return;
        }
        if res < 0 {
            warn!(token, error = %os_error(res), "io_uring fd watch failed; re-arming");
        }
        sink(Completion::Readable { token });
        if !more {
            self.arm_watch(token);
        }
    }

    fn arm_doorbell(&mut self, fd: RawFd) {
        let sqe = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32).multi(true);
        self.push(sqe.build().user_data(user_data(DOORBELL, 0)));
    }

    /// Queues a send or connect, remembering it on the connection for `remove_conn`.
    fn push_op(&mut self, conn: ConnId, sqe: squeue::Entry) {
        if let Some(index) = self.slot_index(conn) {
            self.conns[index].op = Some(sqe.get_user_data());
        }
        self.push(sqe);
    }

    fn cancel(&mut self, target: u64) {
        let sqe = opcode::AsyncCancel::new(target).build();
        self.push(sqe.user_data(user_data(CANCEL, 0)));
    }

    fn complete(&mut self, cqe: &cqueue::Entry, sink: Sink<'_>) {
        let (res, flags) = (cqe.result(), cqe.flags());
        let payload = cqe.user_data() & PAYLOAD_MASK;
        match (cqe.user_data() >> KIND_SHIFT) as u8 {
            RECV => self.on_recv(payload, res, flags, sink),
            SEND | CONNECT => self.on_op(payload as usize, res, sink),
            ACCEPT => self.on_accept(payload, res, cqueue::more(flags), sink),
            DOORBELL => self.on_doorbell(res, cqueue::more(flags), sink),
            WATCH => self.on_watch(payload, res, cqueue::more(flags), sink),
            FILL => self.on_fill(payload, res, sink),
            DRAIN => self.on_drain(payload, res, sink),
            FILL_POLL | DRAIN_POLL => {}
            CANCEL => {}
            kind => warn!(kind, "io_uring completion of unknown kind"),
        }
    }

    fn on_op(&mut self, key: usize, res: i32, sink: Sink<'_>) {
        let Some(op) = self.ops.try_remove(key) else {
            return;
        };
        let conn = match &op {
            Op::Send { conn, .. } | Op::Connect { conn, .. } => *conn,
        };
        if let Some(index) = self.slot_index(conn) {
            self.conns[index].op = None;
        }
        let error = (res < 0).then(|| os_error(res));
        match op {
            Op::Send { mut bufs, .. } => {
                bufs.chunks.clear();
                bufs.iov.clear();
                if self.spare_sends.len() < SPARE_SENDS {
                    self.spare_sends.push(bufs);
                }
                let result = error.map_or(Ok(res as usize), Err);
                sink(Completion::Sent { conn, result });
            }
            Op::Connect { .. } => sink(Completion::Connected {
                conn,
                result: error.map_or(Ok(()), Err),
            }),
        }
    }

    fn on_recv(&mut self, bits: u64, res: i32, flags: u32, sink: Sink<'_>) {
        let index = self.slot_index(ConnId::from_bits(bits));
        // The id as the shard knows it, or None for a removed connection.
        let conn = index.and_then(|i| self.conns[i].id);
        if let Some(bid) = cqueue::buffer_select(flags) {
            if let (Some(conn), true) = (conn, res > 0) {
                let ptr = self.bufs.buf_ptr(bid);
                // SAFETY: the kernel wrote `res` bytes (at most buf_size) into buffer
                // `bid` and will not touch it until we push it back, after the sink.
                let data = unsafe { std::slice::from_raw_parts(ptr, res as usize) };
                sink(Completion::Data { conn, data });
            }
            self.bufs.push(bid);
            self.bufs.publish();
        }
        let (Some(index), Some(conn)) = (index, conn) else {
            return;
        };
        let slot = &mut self.conns[index];
        slot.recv_armed &= cqueue::more(flags);
        if !slot.recv_armed {
            if let Some((pipe_w, max)) = slot.pending_fill.take() {
                self.issue_fill(index, pipe_w, max);
            }
        }
        let slot = &mut self.conns[index];
        match res {
            1.. => {}
            0 => {
                slot.read_closed = true;
                sink(Completion::ReadClosed { conn, error: None });
            }
            e if e == -libc::ENOBUFS => {
                // Serve it after every buffer of this reap went back (end of `reap`).
                self.enobufs += 1;
                if !std::mem::replace(&mut slot.rearm_queued, true) {
                    self.rearm.push(conn);
                }
                return;
            }
            e if e == -libc::ECANCELED => {}
            e if e == -libc::EINVAL && self.recv_cap.is_some() && !cqueue::more(flags) => {
                // This kernel has no byte cap for multishot recv (before 6.16):
                // one-shot recvs from now on, for every connection of this ring.
                debug!("io_uring multishot recv cap unsupported; using one-shot recvs");
                self.recv_cap = None;
            }
            e => {
                slot.read_closed = true;
                sink(Completion::ReadClosed {
                    conn,
                    error: Some(os_error(e)),
                });
            }
        }
        let slot = &self.conns[index];
        if slot.want_read && !slot.recv_armed && !slot.read_closed {
            self.arm_recv(index);
        }
    }

    /// POLL_ADD(POLLIN) linked to SPLICE(socket -> pipe): the splice runs (in an
    /// io-wq worker: the kernel always punts splice) only once the socket has
    /// data, so no worker blocks on an idle socket.
    fn issue_fill(&mut self, index: usize, pipe_w: RawFd, max: u32) {
        let slot = &mut self.conns[index];
        let Some(id) = slot.id else { return };
        slot.fill = true;
        let fd = slot.fd;
        let poll = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(user_data(FILL_POLL, id.to_bits()));
        let splice =
            opcode::Splice::new(types::Fd(fd), NO_OFFSET, types::Fd(pipe_w), NO_OFFSET, max)
                .flags(libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE)
                .build()
                .user_data(user_data(FILL, id.to_bits()));
        self.push_pair(poll, splice);
    }

    /// Same shape as a fill, waiting for POLLOUT: pipe -> socket.
    fn issue_drain(&mut self, index: usize, pipe_r: RawFd, len: u32) {
        let slot = &mut self.conns[index];
        let Some(id) = slot.id else { return };
        slot.drain = true;
        let fd = slot.fd;
        let poll = opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(user_data(DRAIN_POLL, id.to_bits()));
        let splice =
            opcode::Splice::new(types::Fd(pipe_r), NO_OFFSET, types::Fd(fd), NO_OFFSET, len)
                .flags(libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE)
                .build()
                .user_data(user_data(DRAIN, id.to_bits()));
        self.push_pair(poll, splice);
    }

    /// Two linked SQEs must be in the same submission: make room for both first.
    fn push_pair(&mut self, first: squeue::Entry, second: squeue::Entry) {
        let room = {
            let sq = self.ring.submission();
            sq.capacity() - sq.len()
        };
        if room < 2 || !self.backlog.is_empty() {
            self.submit_pending();
        }
        self.push(first);
        self.push(second);
    }

    fn on_fill(&mut self, bits: u64, res: i32, sink: Sink<'_>) {
        let Some(index) = self.slot_index(ConnId::from_bits(bits)) else {
            return;
        };
        let slot = &mut self.conns[index];
        if slot.stale_fills > 0 {
            slot.stale_fills -= 1;
            return;
        }
        slot.fill = false;
        let Some(conn) = slot.id else { return };
        let result = match res {
            0.. => Ok(res as usize),
            // Readable, yet nothing moved: a full pipe (partial pages); the shard
            // retries after the next drain (or at once if the pipe is empty).
            e if e == -libc::EAGAIN => Err(os_error(e)),
            e => Err(os_error(e)),
        };
        sink(Completion::Spliced { conn, result });
    }

    fn on_drain(&mut self, bits: u64, res: i32, sink: Sink<'_>) {
        let Some(index) = self.slot_index(ConnId::from_bits(bits)) else {
            return;
        };
        let slot = &mut self.conns[index];
        slot.drain = false;
        let Some(conn) = slot.id else { return };
        let result = match res {
            0.. => Ok(res as usize),
            e if e == -libc::EAGAIN => Ok(0),
            e => Err(os_error(e)),
        };
        sink(Completion::Sent { conn, result });
    }

    /// Cancels the relay ops of slot `index` and waits until the kernel is done
    /// with them (a splice in an io-wq worker resolves its fds only when it runs:
    /// the pipe and the socket must outlive that). Bounded by one second.
    fn sync_cancel_splices(&mut self, index: usize) {
        let slot = self.conns[index];
        let Some(id) = slot.id else { return };
        let mut targets = Vec::with_capacity(4);
        if slot.fill {
            targets.extend([FILL_POLL, FILL]);
        }
        if slot.drain {
            targets.extend([DRAIN_POLL, DRAIN]);
        }
        if targets.is_empty() {
            return;
        }
        self.submit_pending();
        let started = Instant::now();
        for kind in targets {
            let ud = user_data(kind, id.to_bits());
            let timeout = types::Timespec::from(Duration::from_secs(1));
            let cancel = types::CancelBuilder::user_data(ud).all();
            match self
                .ring
                .submitter()
                .register_sync_cancel(Some(timeout), cancel)
            {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => warn!(conn = %id, error = %e, "io_uring splice cancel failed"),
            }
        }
        // The shard waited here; say so when it was long enough to notice.
        let waited = started.elapsed();
        if waited > SLOW_SYNC_CANCEL {
            warn!(conn = %id, ?waited, "cancelling a splice in flight held the shard");
        }
    }

    fn on_accept(&mut self, payload: u64, res: i32, more: bool, sink: Sink<'_>) {
        let listener = payload as u32 as usize;
        let generation = (payload >> 32) as u32;
        let current =
            matches!(self.listeners.get(listener), Some(Some(l)) if l.generation == generation);
        // The connection failed alone: no failure of the listener (re-armed below).
        let retry = res < 0 && policy::retry_at_once(-res);
        if res >= 0 {
            // SAFETY: a successful accept's result is a new descriptor nobody else owns.
            let result = Ok(unsafe { OwnedFd::from_raw_fd(res) });
            sink(Completion::Accepted { listener, result });
        } else if !retry && (current || res != -libc::ECANCELED) {
            sink(Completion::Accepted {
                listener,
                result: Err(os_error(res)),
            });
        }
        let Some(Some(l)) = self
            .listeners
            .get_mut(listener)
            .filter(|_| current && !more)
        else {
            return;
        };
        l.armed = false;
        // After a failure, reported above, the shard pauses accepting and re-adds
        // the listener when it decides to: no re-arm here.
        if res >= 0 || retry {
            self.arm_accept(listener);
        }
    }

    fn on_doorbell(&mut self, res: i32, more: bool, sink: Sink<'_>) {
        let Some(fd) = self.doorbell else { return };
        if res < 0 {
            warn!(error = %os_error(res), "doorbell watch failed; cross-shard wakeups stall");
            return sink(Completion::Doorbell);
        }
        let mut count = 0u64;
        // SAFETY: reads 8 bytes into a valid u64 from the (non-blocking) eventfd the
        // shard keeps open while watched; EAGAIN (already drained) is fine.
        let _ = unsafe { libc::read(fd, (&mut count as *mut u64).cast(), 8) };
        sink(Completion::Doorbell);
        if !more {
            self.arm_doorbell(fd);
        }
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
        let slot = ListenerSlot {
            fd,
            generation,
            armed: false,
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
        if pending {
            self.submit_pending();
        }
    }

    fn add_conn(&mut self, conn: ConnId, fd: RawFd) -> io::Result<()> {
        let index = conn.index as usize;
        if self.conns.len() <= index {
            self.conns.resize_with(index + 1, ConnSlot::default);
        }
        if self.conns[index].id.is_some() {
            warn!(%conn, "add_conn over a connection that was never removed");
        }
        self.conns[index] = ConnSlot {
            id: Some(conn),
            fd,
            ..ConnSlot::default()
        };
        Ok(())
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
            opcode::Send::new(types::Fd(fd), one.iov_base.cast_const().cast(), len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        } else {
            bufs.hdr.msg_iov = bufs.iov.as_mut_ptr();
            bufs.hdr.msg_iovlen = bufs.iov.len() as _;
            opcode::SendMsg::new(types::Fd(fd), &bufs.hdr)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
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
        let slot = &mut self.conns[index];
        if slot.recv_armed {
            slot.pending_fill = Some((pipe_w, max));
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
        self.conns[index].pending_fill = None;
        self.sync_cancel_splices(index);
        let slot = &mut self.conns[index];
        if std::mem::take(&mut slot.fill) {
            slot.stale_fills = slot.stale_fills.saturating_add(1);
        }
    }

    fn connect(&mut self, conn: ConnId, fd: RawFd, addr: SockAddr) {
        let addr = Box::new(addr);
        let key = self.ops.vacant_key();
        let sqe = opcode::Connect::new(types::Fd(fd), addr.as_ptr().cast(), addr.len()).build();
        self.ops.insert(Op::Connect { conn, _addr: addr });
        self.push_op(conn, sqe.user_data(user_data(CONNECT, key as u64)));
    }

    fn remove_conn(&mut self, conn: ConnId, _fd: RawFd) {
        let Some(index) = self.slot_index(conn) else {
            return;
        };
        self.sync_cancel_splices(index);
        let slot = std::mem::take(&mut self.conns[index]);
        let pending = self.has_pending();
        // In-flight requests hold the file open: cancel them so the socket really closes.
        if slot.recv_armed {
            self.cancel(user_data(RECV, conn.to_bits()));
        }
        if let Some(op) = slot.op {
            self.cancel(op);
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
