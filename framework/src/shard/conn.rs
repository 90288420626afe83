//! Per-connection state kept by the shard: the socket, unconsumed input, the bounded
//! outbound queue and where the connection is in its life.
//!
//! The outbound queue is a list of reference-counted chunks plus one growable tail
//! that small copies are appended to. Before a send the tail is sealed into a chunk
//! (no copy), so every send made in one loop turn goes out as one vectored write, and
//! the io_uring driver can keep the chunks alive by cloning them while the kernel
//! reads them, even if the connection is dropped meanwhile.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
};

use bytes::{Buf, Bytes, BytesMut};

use super::{
    driver::{Sock, MAX_SEND_CHUNKS},
    timer::TimerKey,
};
use crate::CloseReason;

/// Where a connection is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Outbound connect in flight.
    Connecting,
    /// Reading and writing.
    Open,
    /// Closing: flush what is queued, then half-close and read until the peer's EOF
    /// (so unread input never turns our FIN into a reset that destroys the tail of
    /// what we sent), then release. Bounded by the linger timer.
    Closing(CloseReason),
}

/// A connection's socket: an ordinary descriptor (closed when dropped), or a
/// direct descriptor — a slot of the io_uring driver's registered file table,
/// which only the driver can close (`Driver::close_fixed`, called where the
/// connection is released).
#[derive(Debug)]
pub(crate) enum ConnSocket {
    Fd(socket2::Socket),
    Fixed(u32),
}

impl ConnSocket {
    /// The fd the driver calls take (`-1` for a direct descriptor: the driver
    /// uses the slot it recorded).
    pub(crate) fn raw_fd(&self) -> RawFd {
        match self {
            ConnSocket::Fd(s) => s.as_raw_fd(),
            ConnSocket::Fixed(_) => -1,
        }
    }

    pub(crate) fn sock(&self) -> Sock {
        match self {
            ConnSocket::Fd(s) => Sock::Fd(s.as_raw_fd()),
            ConnSocket::Fixed(slot) => Sock::Fixed(*slot),
        }
    }

    pub(crate) fn fixed(&self) -> Option<u32> {
        match self {
            ConnSocket::Fd(_) => None,
            ConnSocket::Fixed(slot) => Some(*slot),
        }
    }
}

/// `Conn::listener` of a connection no listener accepted.
pub(crate) const NO_LISTENER: u16 = u16::MAX;

/// One connection on a shard.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) generation: u32,
    pub(crate) socket: ConnSocket,
    /// The listener that accepted it (`NO_LISTENER`: outbound, or beyond
    /// `u16`), for the local address of a direct descriptor.
    pub(crate) listener: u16,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) phase: Phase,
    /// Bytes the handler has not consumed yet.
    pub(crate) input: Vec<u8>,
    /// `input` holds bytes that arrived while reading was paused and that the handler
    /// has not seen yet.
    pub(crate) unpresented: bool,
    /// The handler wants data (not paused).
    pub(crate) reading: bool,
    /// The driver was told to read (registered and reading on).
    pub(crate) driver_reading: bool,
    /// Registered with the driver.
    pub(crate) registered: bool,
    /// The peer sent EOF.
    pub(crate) eof: bool,
    /// We already half-closed our sending side.
    pub(crate) write_shut: bool,
    /// The handler asked for a half-close (`Ctx::shutdown_write`): done once the
    /// queue is flushed; nothing more may be queued.
    pub(crate) shut_pending: bool,
    /// The peer's EOF came while input from a pause was still unpresented;
    /// `on_eof` follows once it has been presented.
    pub(crate) eof_deferred: bool,
    /// The handler closes it itself at shutdown (`Ctx::keep_open_on_shutdown`).
    pub(crate) kept_at_shutdown: bool,
    pub(crate) out: OutQueue,
    /// A send is in flight in the driver.
    pub(crate) sending: bool,
    /// With a flush delay: when the oldest byte not yet handed to the driver was
    /// queued.
    pub(crate) queued_at: Option<std::time::Instant>,
    /// On the shard's flush list.
    pub(crate) flush_listed: bool,
    /// The handler was told about backpressure and not yet about draining.
    pub(crate) backpressured: bool,
    pub(crate) linger: Option<TimerKey>,
    /// Counted in `conns_live` (accepted, or connected successfully).
    pub(crate) live: bool,
    /// Accepted (rather than opened with `Ctx::connect`).
    pub(crate) inbound: bool,
    /// Already on the release list.
    pub(crate) released: bool,
    /// Key (in `Core::relays`) of the relay this connection's input feeds.
    pub(crate) relay_out: Option<u32>,
    /// Key of the relay that writes into this connection.
    pub(crate) relay_in: Option<u32>,
    /// The op in the send slot (`sending`) is a relay's drain (pipe -> socket),
    /// not a send of `out`.
    pub(crate) draining: bool,
    /// Closing a direct descriptor: the driver was asked for its unread bytes
    /// (`Driver::query_unread`), the answer is still to come.
    pub(crate) unread_asked: bool,
    /// The TLS session, on a TLS connection (`out` then holds records).
    pub(crate) tls: Option<Box<super::tls::TlsConn>>,
    /// Bytes read from the socket so far, spliced ones included
    /// (`Ctx::bytes_received`).
    pub(crate) received: u64,
    /// A PROXY protocol header being read (`Handler::on_preamble`): the
    /// connection is not announced (nor its TLS session fed) until it is whole.
    pub(crate) preamble: Option<Box<PendingPreamble>>,
    /// The PROXY header it came with (`Ctx::proxy_header`); boxed, as few
    /// connections have one and every connection pays for this field.
    pub(crate) proxy: Option<Box<crate::proxy_protocol::Header>>,
}

/// A PROXY header not yet whole.
#[derive(Debug)]
pub(crate) struct PendingPreamble {
    /// The bytes so far (at most `proxy_protocol::MAX_HEADER_LEN` plus one read).
    pub(crate) buf: Vec<u8>,
    pub(crate) timer: Option<TimerKey>,
    /// The listener that took it (announced as its connection once whole).
    pub(crate) listener: usize,
}

impl Conn {
    pub(crate) fn new(
        generation: u32,
        socket: ConnSocket,
        peer: Option<SocketAddr>,
        phase: Phase,
    ) -> Conn {
        let inbound = phase == Phase::Open;
        Conn {
            generation,
            socket,
            listener: NO_LISTENER,
            peer,
            phase,
            input: Vec::new(),
            unpresented: false,
            reading: true,
            driver_reading: false,
            registered: false,
            eof: false,
            write_shut: false,
            shut_pending: false,
            eof_deferred: false,
            kept_at_shutdown: false,
            out: OutQueue::default(),
            sending: false,
            queued_at: None,
            flush_listed: false,
            backpressured: false,
            linger: None,
            live: false,
            inbound,
            released: false,
            relay_out: None,
            relay_in: None,
            draining: false,
            unread_asked: false,
            tls: None,
            received: 0,
            preamble: None,
            proxy: None,
        }
    }

    pub(crate) fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing(_))
    }
}

/// Bounded list of bytes waiting to be written, oldest first.
///
/// An empty queue holds no memory (one null pointer in the connection): the
/// chunks live in a boxed [`Chunks`] taken when bytes are queued and given up
/// as soon as the queue drains, so an idle connection pays 8 bytes here, not
/// the chunk list and a tail buffer kept from its last reply. Given-up boxes
/// go to a small per-thread pool (a shard is one thread) with their buffers'
/// capacity, so a busy connection's queue-drain-queue cycle allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    inner: Option<Box<Chunks>>,
}

/// The contents of a non-empty [`OutQueue`].
#[derive(Debug, Default)]
struct Chunks {
    /// Sealed chunks, oldest first.
    chunks: VecDeque<Bytes>,
    /// Small copies appended since the last seal.
    tail: BytesMut,
    /// Bytes queued, including the unsealed tail.
    len: usize,
    /// The largest capacity `tail` had since it was last emptied for the pool
    /// (its buffer may be held on, shared with sealed chunks, after a seal).
    tail_peak: usize,
}

/// `Chunks` kept per thread for reuse (at most this many).
const POOL_MAX: usize = 128;
/// A pooled `Chunks` keeps a tail buffer at most this large; a larger one is
/// freed (memory held by the pool stays bounded: `POOL_MAX` × this).
const POOL_TAIL_MAX: usize = 16 << 10;

thread_local! {
    /// Drained queues' boxes, ready for the next queue that gets bytes.
    #[allow(clippy::vec_box)]
    static POOL: std::cell::RefCell<Vec<Box<Chunks>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Chunks {
    /// A box from the pool, or a new one.
    fn take() -> Box<Chunks> {
        POOL.try_with(|p| p.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Hands an empty box back to the pool (or frees it).
    fn give_back(mut self: Box<Chunks>) {
        debug_assert!(self.len == 0 && self.chunks.is_empty() && self.tail.is_empty());
        if self.tail_peak > POOL_TAIL_MAX {
            self.tail = BytesMut::new();
            self.tail_peak = 0;
        }
        if self.chunks.capacity() > MAX_SEND_CHUNKS {
            self.chunks = VecDeque::new();
        }
        let _ = POOL.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_MAX {
                p.push(self);
            }
        });
    }

    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            let chunk = self.tail.split().freeze();
            self.chunks.push_back(chunk);
        }
    }
}

impl OutQueue {
    /// Bytes queued, including the unsealed tail.
    pub(crate) fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |c| c.len)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn chunks(&mut self) -> &mut Chunks {
        self.inner.get_or_insert_with(Chunks::take)
    }

    /// Appends a copy of `data` to the tail (coalescing small sends).
    pub(crate) fn push_copy(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let c = self.chunks();
        c.tail.extend_from_slice(data);
        c.tail_peak = c.tail_peak.max(c.tail.capacity());
        c.len += data.len();
    }

    /// Appends a shared buffer without copying it.
    pub(crate) fn push_shared(&mut self, buf: &Bytes) {
        if buf.is_empty() {
            return;
        }
        let c = self.chunks();
        c.seal_tail();
        c.chunks.push_back(buf.clone());
        c.len += buf.len();
    }

    /// The chunks for the next write (oldest first, at most `MAX_SEND_CHUNKS`).
    pub(crate) fn next_batch(&mut self) -> &[Bytes] {
        let Some(c) = self.inner.as_mut() else {
            return &[];
        };
        c.seal_tail();
        let chunks = c.chunks.make_contiguous();
        let n = chunks.len().min(MAX_SEND_CHUNKS);
        &chunks[..n]
    }

    /// Drops `n` written bytes from the front.
    pub(crate) fn advance(&mut self, mut n: usize) {
        let Some(c) = self.inner.as_mut() else {
            return;
        };
        n = n.min(c.len);
        c.len -= n;
        while n > 0 {
            let Some(front) = c.chunks.front_mut() else {
                break;
            };
            if n >= front.len() {
                n -= front.len();
                c.chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
        if c.len == 0 {
            self.release();
        }
    }

    /// Forgets everything queued (abortive close).
    pub(crate) fn clear(&mut self) {
        if let Some(c) = self.inner.as_mut() {
            c.chunks.clear();
            c.tail.clear();
            c.len = 0;
            self.release();
        }
    }

    /// Gives the memory of a drained queue up.
    fn release(&mut self) {
        if let Some(c) = self.inner.take() {
            c.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain_all(q: &mut OutQueue) -> Vec<u8> {
        let mut out = Vec::new();
        while !q.is_empty() {
            let batch: Vec<u8> = q.next_batch().iter().flat_map(|c| c.to_vec()).collect();
            // Write in odd-sized pieces to exercise partial advances.
            let n = batch.len().min(7);
            out.extend_from_slice(&batch[..n]);
            q.advance(n);
        }
        out
    }

    #[test]
    fn copies_and_shared_chunks_come_out_in_order() {
        let mut q = OutQueue::default();
        q.push_copy(b"hello ");
        q.push_shared(&Bytes::from_static(b"shared "));
        q.push_copy(b"world");
        q.push_copy(b"!");
        assert_eq!(q.len(), 19);
        assert_eq!(drain_all(&mut q), b"hello shared world!");
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn batch_is_capped_and_rest_follows() {
        let mut q = OutQueue::default();
        for i in 0..(MAX_SEND_CHUNKS + 10) {
            q.push_shared(&Bytes::from(vec![i as u8; 3]));
        }
        assert_eq!(q.next_batch().len(), MAX_SEND_CHUNKS);
        let expected: Vec<u8> = (0..(MAX_SEND_CHUNKS + 10))
            .flat_map(|i| [i as u8; 3])
            .collect();
        assert_eq!(drain_all(&mut q), expected);
    }

    #[test]
    fn tail_sealed_before_send_is_not_changed_by_later_copies() {
        let mut q = OutQueue::default();
        q.push_copy(b"abc");
        let first: Vec<Bytes> = q.next_batch().to_vec();
        q.push_copy(b"def");
        assert_eq!(&first[0][..], b"abc");
        q.advance(3);
        assert_eq!(drain_all(&mut q), b"def");
    }

    /// Any interleaving of copies, shared chunks, batches and partial writes
    /// comes out as the bytes went in (pooled boxes reused correctly), and a
    /// drained queue holds no memory.
    #[test]
    fn random_interleavings_keep_the_byte_order() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let mut q = OutQueue::default();
            let (mut sent, mut written) = (Vec::new(), Vec::new());
            let mut next = 0u8;
            for _ in 0..rng.random_range(1..60) {
                let len = rng.random_range(1..20);
                let data: Vec<u8> = (0..len)
                    .map(|_| {
                        next = next.wrapping_add(1);
                        next
                    })
                    .collect();
                match rng.random_range(0..4) {
                    0 => q.push_copy(&data),
                    1 => q.push_shared(&Bytes::from(data.clone())),
                    _ => {
                        q.push_copy(&data);
                        let batch: Vec<u8> =
                            q.next_batch().iter().flat_map(|c| c.to_vec()).collect();
                        let n = rng.random_range(0..=batch.len());
                        written.extend_from_slice(&batch[..n]);
                        q.advance(n);
                    }
                }
                sent.extend_from_slice(&data);
                assert_eq!(q.len(), sent.len() - written.len());
            }
            written.extend(drain_all(&mut q));
            assert_eq!(written, sent);
            assert!(q.inner.is_none());
        }
    }
}
