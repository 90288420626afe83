//! The floor for an io_uring server: the smallest hand-written single-thread echo
//! loop, no framework.
//!
//! One ring set up SINGLE_ISSUER + DEFER_TASKRUN (COOP_TASKRUN where the kernel
//! refuses that). One multishot accept; one multishot recv per connection, which
//! picks buffers from a provided buffer ring; each received buffer is sent back as
//! it is and returns to the ring when its send completes. One `submit_and_wait(1)`
//! per turn. TCP_NODELAY is set on the listener: Linux copies it to accepted sockets.
//!
//! Order: a connection has at most one send in flight, and buffers received while
//! it runs wait in its queue. Two sends in flight on one socket can complete out of
//! order when the first has to wait for socket space, so the queue is what keeps
//! the echo byte-exact; on the ping-pong path it is always empty.
//!
//! Running dry: when every buffer is held by a pending send, a recv ends with
//! ENOBUFS; the connection is re-armed once a send gives a buffer back.

use std::{
    alloc::{alloc_zeroed, dealloc, Layout},
    collections::VecDeque,
    io,
    os::fd::AsRawFd,
    process::ExitCode,
    sync::atomic::{AtomicU16, Ordering},
};

use io_uring::{
    cqueue, opcode, squeue, types::BufRingEntry, types::Fd, IoUring, SubmissionQueue, Submitter,
};
use shardline_peers::{pin_current_thread, reuseport_listener, run_shards, Args, Shard};

/// Buffers in the provided ring (a power of two).
const BUF_COUNT: u16 = 1024;
/// Bytes per buffer.
const BUF_SIZE: usize = 16 * 1024;
/// The provided-buffer group the recvs pick from.
const GROUP: u16 = 0;
const SQ_ENTRIES: u32 = 1024;
const CQ_ENTRIES: u32 = 8192;

// user_data: the operation in the high 32 bits, the fd in the low ones.
const ACCEPT: u64 = 1;
const RECV: u64 = 2;
const SEND: u64 = 3;

fn tag(op: u64, fd: i32) -> u64 {
    (op << 32) | u64::from(fd as u32)
}

fn untag(data: u64) -> (u64, i32) {
    (data >> 32, data as u32 as i32)
}

fn main() -> ExitCode {
    let args = Args::parse_single_thread(
        "floor-uring",
        "The smallest single-thread io_uring echo loop (multishot accept and recv, \
         provided buffer ring)",
    );
    run_shards(&args, "floor-uring", |shard| {
        serve(shard).map_err(|e| e.to_string())
    })
}

fn serve(shard: Shard) -> io::Result<()> {
    if let Some(cpu) = shard.cpu {
        pin_current_thread(cpu).map_err(io::Error::other)?;
    }
    let listener = reuseport_listener(shard.addr)?;
    // Declared before the ring so that it is dropped after it: the kernel may use
    // the buffers until the ring is gone.
    let mut bufs = BufRing::new()?;
    let mut ring = build_ring()?;
    // SAFETY: the entries live in `bufs`, which outlives the ring (see above).
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(bufs.entries as u64, BUF_COUNT, GROUP, 0)?;
    }
    for bid in 0..BUF_COUNT {
        bufs.give_back(bid);
    }
    bufs.publish();

    let (submitter, sq, mut cq) = ring.split();
    let mut sub = Submission { submitter, sq };
    let listen_fd = listener.as_raw_fd();
    let accept = opcode::AcceptMulti::new(Fd(listen_fd))
        .flags(libc::SOCK_CLOEXEC)
        .build()
        .user_data(tag(ACCEPT, listen_fd));
    sub.push(&accept)?;
    shard.ready.bound(listener.local_addr()?);

    let mut conns: Vec<Conn> = Vec::new();
    let mut starved: VecDeque<i32> = VecDeque::new();
    loop {
        bufs.publish();
        // Re-arm as many dry connections as there are free buffers, oldest first:
        // re-arming them all for one buffer would only bring back ENOBUFS.
        let mut free = usize::from(BUF_COUNT) - bufs.held;
        while free > 0 {
            let Some(fd) = starved.pop_front() else {
                break;
            };
            let conn = &mut conns[fd as usize];
            // The fd may have been closed (and even reused) since it ran dry.
            if conn.starved {
                conn.starved = false;
                conn.recv_armed = true;
                sub.push(&recv(fd))?;
                free -= 1;
            }
        }
        sub.sq.sync();
        match sub.submitter.submit_and_wait(1) {
            Ok(_) => {}
            // EINTR: a signal; EBUSY: completions must be reaped first.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(e),
        }
        cq.sync();
        for cqe in &mut cq {
            let (op, fd) = untag(cqe.user_data());
            let (res, flags) = (cqe.result(), cqe.flags());
            match op {
                ACCEPT => {
                    if res >= 0 {
                        let conn = conn_slot(&mut conns, res);
                        *conn = Conn {
                            recv_armed: true,
                            ..Conn::default()
                        };
                        sub.push(&recv(res))?;
                    }
                    if !cqueue::more(flags) {
                        sub.push(&accept)?;
                    }
                }
                RECV => {
                    let conn = &mut conns[fd as usize];
                    if res > 0 {
                        let bid = cqueue::buffer_select(flags)
                            .expect("a recv with data from a buffer group names its buffer");
                        bufs.held += 1;
                        if conn.closing {
                            bufs.give_back(bid);
                        } else if conn.in_flight.is_none() {
                            conn.in_flight = Some(InFlight {
                                bid,
                                off: 0,
                                len: res as u32,
                            });
                            sub.push(&send(fd, &bufs, bid, 0, res as u32))?;
                        } else {
                            conn.queued.push_back((bid, res as u32));
                        }
                    }
                    if !cqueue::more(flags) {
                        conn.recv_armed = false;
                        if res > 0 || res == -libc::ENOBUFS {
                            // Ended without EOF or error (the ring ran dry): re-arm
                            // at the top of the loop, once a buffer is free.
                            conn.starved = true;
                            starved.push_back(fd);
                        } else {
                            // EOF or a socket error: send what is queued, then close.
                            conn.closing = true;
                        }
                    }
                    conn.close_if_done(fd);
                }
                SEND => {
                    let conn = &mut conns[fd as usize];
                    let Some(mut sending) = conn.in_flight.take() else {
                        continue;
                    };
                    if res < 0 {
                        bufs.give_back(sending.bid);
                        while let Some((bid, _)) = conn.queued.pop_front() {
                            bufs.give_back(bid);
                        }
                        conn.closing = true;
                        // Ends the armed recv, so the connection can be closed.
                        // SAFETY: fd is open: it is closed only once no operation
                        // on it is in flight, and this recv still is.
                        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                    } else {
                        sending.off += res as u32;
                        if sending.off < sending.len {
                            let rest = sending.len - sending.off;
                            sub.push(&send(fd, &bufs, sending.bid, sending.off, rest))?;
                            conn.in_flight = Some(sending);
                            continue;
                        }
                        bufs.give_back(sending.bid);
                        if let Some((bid, len)) = conn.queued.pop_front() {
                            conn.in_flight = Some(InFlight { bid, off: 0, len });
                            sub.push(&send(fd, &bufs, bid, 0, len))?;
                        }
                    }
                    conn.close_if_done(fd);
                }
                _ => unreachable!("only accept, recv and send are submitted"),
            }
        }
    }
}

fn build_ring() -> io::Result<IoUring> {
    let deferred = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_cqsize(CQ_ENTRIES)
        .build(SQ_ENTRIES);
    match deferred {
        Ok(ring) => Ok(ring),
        // Kernels before 6.1 refuse DEFER_TASKRUN.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => IoUring::builder()
            .setup_coop_taskrun()
            .setup_cqsize(CQ_ENTRIES)
            .build(SQ_ENTRIES),
        Err(e) => Err(e),
    }
}

fn recv(fd: i32) -> squeue::Entry {
    opcode::RecvMulti::new(Fd(fd), GROUP)
        .build()
        .user_data(tag(RECV, fd))
}

fn send(fd: i32, bufs: &BufRing, bid: u16, off: u32, len: u32) -> squeue::Entry {
    // SAFETY: off + len is within buffer `bid` (a received length, less what is sent).
    let ptr = unsafe { bufs.buffer(bid).add(off as usize) };
    opcode::Send::new(Fd(fd), ptr, len)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(tag(SEND, fd))
}

fn conn_slot(conns: &mut Vec<Conn>, fd: i32) -> &mut Conn {
    let i = fd as usize;
    if conns.len() <= i {
        conns.resize_with(i + 1, Conn::default);
    }
    &mut conns[i]
}

/// The submission side of the ring: pushes, submitting first when it is full.
struct Submission<'a> {
    submitter: Submitter<'a>,
    sq: SubmissionQueue<'a>,
}

impl Submission<'_> {
    fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every buffer an entry points to is in `BufRing`, which
            // outlives the ring, and is not given back until its send completes.
            if unsafe { self.sq.push(entry) }.is_ok() {
                return Ok(());
            }
            self.sq.sync();
            self.submitter.submit()?;
            self.sq.sync();
        }
    }
}

/// One connection, indexed by its fd.
#[derive(Debug, Default)]
struct Conn {
    /// A multishot recv is armed.
    recv_armed: bool,
    /// The recv ended for want of buffers and waits in the starved list.
    starved: bool,
    /// EOF or an error was seen: close once nothing is in flight.
    closing: bool,
    /// The one send in flight.
    in_flight: Option<InFlight>,
    /// Buffers received while a send was in flight: (buffer id, length).
    queued: VecDeque<(u16, u32)>,
}

impl Conn {
    fn close_if_done(&mut self, fd: i32) {
        if self.closing && !self.recv_armed && self.in_flight.is_none() && self.queued.is_empty() {
            // SAFETY: no operation on fd is in flight, so nothing refers to it.
            unsafe { libc::close(fd) };
            *self = Conn::default();
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    bid: u16,
    off: u32,
    len: u32,
}

/// A provided buffer ring: `BUF_COUNT` entries the kernel picks buffers from, and
/// the buffers themselves.
struct BufRing {
    /// Page-aligned array of `BUF_COUNT` entries; its first entry's last field is
    /// the tail the kernel reads.
    entries: *mut BufRingEntry,
    buffers: Vec<u8>,
    /// Our tail, published with `publish`.
    tail: u16,
    /// Buffers the kernel handed us that are not given back yet.
    held: usize,
}

impl BufRing {
    const LAYOUT: Layout = match Layout::from_size_align(
        BUF_COUNT as usize * std::mem::size_of::<BufRingEntry>(),
        4096,
    ) {
        Ok(layout) => layout,
        Err(_) => panic!("the ring layout is a small power-of-two alignment"),
    };

    fn new() -> io::Result<BufRing> {
        // SAFETY: LAYOUT has a non-zero size.
        let entries = unsafe { alloc_zeroed(Self::LAYOUT) }.cast::<BufRingEntry>();
        if entries.is_null() {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        Ok(BufRing {
            entries,
            buffers: vec![0; BUF_COUNT as usize * BUF_SIZE],
            tail: 0,
            held: usize::from(BUF_COUNT),
        })
    }

    fn buffer(&self, bid: u16) -> *const u8 {
        self.buffers[usize::from(bid) * BUF_SIZE..].as_ptr()
    }

    /// Puts buffer `bid` back at the tail; the kernel sees it after `publish`.
    fn give_back(&mut self, bid: u16) {
        let slot = usize::from(self.tail & (BUF_COUNT - 1));
        // SAFETY: slot < BUF_COUNT, inside the allocation; the kernel reads only
        // entries between its head and the published tail, and this one is past it.
        let entry = unsafe { &mut *self.entries.add(slot) };
        entry.set_addr(self.buffer(bid) as u64);
        entry.set_len(BUF_SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.held -= 1;
    }

    /// Makes the buffers given back so far visible to the kernel.
    fn publish(&self) {
        // SAFETY: the tail is a u16 inside the first entry, naturally aligned,
        // which the kernel only reads; Release orders the entry writes before it.
        unsafe {
            let tail = BufRingEntry::tail(self.entries).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout.
        unsafe { dealloc(self.entries.cast(), Self::LAYOUT) };
    }
}
