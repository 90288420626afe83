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
    time::Instant,
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
///
/// Kept small: every connection pays for every field here, idle or not (see
/// `bench/README.md`, `idle`). Yes/no facts are bits of `flags` (accessors
/// below), state that few connections ever have sits behind one pointer
/// (`rare`), and an empty outbound queue holds no memory.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) generation: u32,
    /// The listener that accepted it (`NO_LISTENER`: outbound, or beyond
    /// `u16`), for the local address of a direct descriptor.
    pub(crate) listener: u16,
    /// The flags set (`conn_flags!` below).
    flags: u32,
    pub(crate) socket: ConnSocket,
    pub(crate) phase: Phase,
    peer: PeerAddr,
    /// Bytes the handler has not consumed yet (`None`: none; boxed, so a
    /// connection without any pays 8 bytes, not a `Vec`'s 24).
    #[allow(clippy::box_collection)]
    pub(crate) input: Option<Box<Vec<u8>>>,
    pub(crate) out: OutQueue,
    /// The TLS session, on a TLS connection (`out` then holds records).
    pub(crate) tls: Option<Box<super::tls::TlsConn>>,
    /// Bytes read from the socket so far, spliced ones included
    /// (`Ctx::bytes_received`).
    pub(crate) received: u64,
    /// What only some connections have, allocated when first needed.
    rare: Option<Box<Rare>>,
}

/// The parts of a connection's state few connections have at any time: one
/// pointer in every connection instead of their full size.
#[derive(Debug, Default)]
struct Rare {
    /// The linger timer of a closing connection.
    linger: Option<TimerKey>,
    /// Key (in `Core::relays`) of the relay this connection's input feeds.
    relay_out: Option<u32>,
    /// Key of the relay that writes into this connection.
    relay_in: Option<u32>,
    /// A PROXY protocol header being read (`Handler::on_preamble`): the
    /// connection is not announced (nor its TLS session fed) until it is whole.
    preamble: Option<Box<PendingPreamble>>,
    /// The PROXY header it came with (`Ctx::proxy_header`).
    proxy: Option<Box<crate::proxy_protocol::Header>>,
}

impl Rare {
    fn is_empty(&self) -> bool {
        self.linger.is_none()
            && self.relay_out.is_none()
            && self.relay_in.is_none()
            && self.preamble.is_none()
            && self.proxy.is_none()
    }
}

/// Declares the connection's flags: one bit of `Conn::flags` each, read with
/// `name()` and written with `set_name(bool)`.
macro_rules! conn_flags {
    ($($(#[$doc:meta])* $bit:literal $get:ident $set:ident;)*) => {
        $(const _: () = assert!($bit < u32::BITS);)*
        impl Conn {
            $(
                $(#[$doc])*
                #[inline]
                pub(crate) fn $get(&self) -> bool {
                    self.flags & (1 << $bit) != 0
                }

                #[doc = concat!("Sets or clears [`Conn::", stringify!($get), "`].")]
                #[inline]
                pub(crate) fn $set(&mut self, on: bool) {
                    if on {
                        self.flags |= 1 << $bit;
                    } else {
                        self.flags &= !(1 << $bit);
                    }
                }
            )*
        }
    };
}

conn_flags! {
    /// `input` holds bytes that arrived while reading was paused and that the
    /// handler has not seen yet.
    0 unpresented set_unpresented;
    /// The handler wants data (not paused).
    1 reading set_reading;
    /// The driver was told to read (registered and reading on).
    2 driver_reading set_driver_reading;
    /// Registered with the driver.
    3 registered set_registered;
    /// The peer sent EOF.
    4 eof set_eof;
    /// We already half-closed our sending side.
    5 write_shut set_write_shut;
    /// The handler asked for a half-close (`Ctx::shutdown_write`): done once
    /// the queue is flushed; nothing more may be queued.
    6 shut_pending set_shut_pending;
    /// The peer's EOF came while input from a pause was still unpresented;
    /// `on_eof` follows once it has been presented.
    7 eof_deferred set_eof_deferred;
    /// The handler closes it itself at shutdown (`Ctx::keep_open_on_shutdown`).
    8 kept_at_shutdown set_kept_at_shutdown;
    /// A send is in flight in the driver.
    9 sending set_sending;
    /// On the shard's flush list.
    10 flush_listed set_flush_listed;
    /// The handler was told about backpressure and not yet about draining.
    11 backpressured set_backpressured;
    /// Counted in `conns_live` (accepted, or connected successfully).
    12 live set_live;
    /// Accepted (rather than opened with `Ctx::connect`).
    13 inbound set_inbound;
    /// Already on the release list.
    14 released set_released;
    /// The op in the send slot (`sending`) is a relay's drain (pipe ->
    /// socket), not a send of `out`.
    15 draining set_draining;
    /// Closing a direct descriptor: the driver was asked for its unread bytes
    /// (`Driver::query_unread`), the answer is still to come.
    16 unread_asked set_unread_asked;
    /// Pacing: sent to in the current interval (listed in `Core::paced`).
    17 paced set_paced;
}

/// A peer address in 16 bytes rather than `Option<SocketAddr>`'s 32: IPv4
/// inline, IPv6 (28 bytes) boxed.
#[derive(Debug)]
enum PeerAddr {
    None,
    V4(std::net::SocketAddrV4),
    V6(Box<std::net::SocketAddrV6>),
}

impl PeerAddr {
    fn new(addr: Option<SocketAddr>) -> PeerAddr {
        match addr {
            None => PeerAddr::None,
            Some(SocketAddr::V4(a)) => PeerAddr::V4(a),
            Some(SocketAddr::V6(a)) => PeerAddr::V6(Box::new(a)),
        }
    }

    fn get(&self) -> Option<SocketAddr> {
        match self {
            PeerAddr::None => None,
            PeerAddr::V4(a) => Some(SocketAddr::V4(*a)),
            PeerAddr::V6(a) => Some(SocketAddr::V6(**a)),
        }
    }
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
        let mut conn = Conn {
            generation,
            listener: NO_LISTENER,
            flags: 0,
            socket,
            phase,
            peer: PeerAddr::new(peer),
            input: None,
            out: OutQueue::default(),
            tls: None,
            received: 0,
            rare: None,
        };
        conn.set_reading(true);
        conn.set_inbound(inbound);
        conn
    }

    pub(crate) fn is_closing(&self) -> bool {
        matches!(self.phase, Phase::Closing(_))
    }

    /// The peer's address (from the accept, or a PROXY header).
    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        self.peer.get()
    }

    pub(crate) fn set_peer(&mut self, peer: SocketAddr) {
        self.peer = PeerAddr::new(Some(peer));
    }

    /// Bytes held in `input`.
    pub(crate) fn input_len(&self) -> usize {
        self.input.as_ref().map_or(0, |i| i.len())
    }

    /// Appends to `input`.
    pub(crate) fn keep_input(&mut self, data: &[u8]) {
        self.input.get_or_insert_default().extend_from_slice(data);
    }

    /// `rare`, allocated if it was not.
    fn rare_mut(&mut self) -> &mut Rare {
        self.rare.get_or_insert_default()
    }

    /// Frees `rare` once nothing is left in it.
    fn tidy_rare(&mut self) {
        if self.rare.as_ref().is_some_and(|r| r.is_empty()) {
            self.rare = None;
        }
    }

    /// Sets one optional field of `rare`: a value allocates `rare` if needed,
    /// clearing the last field frees it.
    fn set_rare<T>(&mut self, value: Option<T>, field: impl Fn(&mut Rare) -> &mut Option<T>) {
        match (value, self.rare.as_deref_mut()) {
            (Some(v), _) => *field(self.rare_mut()) = Some(v),
            (None, Some(rare)) => {
                *field(rare) = None;
                self.tidy_rare();
            }
            (None, None) => {}
        }
    }

    /// The linger timer of a closing connection.
    pub(crate) fn linger(&self) -> Option<TimerKey> {
        self.rare.as_ref().and_then(|r| r.linger)
    }

    pub(crate) fn set_linger(&mut self, key: Option<TimerKey>) {
        self.set_rare(key, |r| &mut r.linger);
    }

    /// Key (in `Core::relays`) of the relay this connection's input feeds.
    pub(crate) fn relay_out(&self) -> Option<u32> {
        self.rare.as_ref().and_then(|r| r.relay_out)
    }

    pub(crate) fn set_relay_out(&mut self, key: Option<u32>) {
        self.set_rare(key, |r| &mut r.relay_out);
    }

    /// Key of the relay that writes into this connection.
    pub(crate) fn relay_in(&self) -> Option<u32> {
        self.rare.as_ref().and_then(|r| r.relay_in)
    }

    pub(crate) fn set_relay_in(&mut self, key: Option<u32>) {
        self.set_rare(key, |r| &mut r.relay_in);
    }

    /// A PROXY protocol header being read (`Handler::on_preamble`): the
    /// connection is not announced (nor its TLS session fed) until it is whole.
    pub(crate) fn preamble(&self) -> Option<&PendingPreamble> {
        self.rare.as_ref()?.preamble.as_deref()
    }

    pub(crate) fn preamble_mut(&mut self) -> Option<&mut PendingPreamble> {
        self.rare.as_mut()?.preamble.as_deref_mut()
    }

    pub(crate) fn set_preamble(&mut self, pending: PendingPreamble) {
        self.rare_mut().preamble = Some(Box::new(pending));
    }

    pub(crate) fn take_preamble(&mut self) -> Option<Box<PendingPreamble>> {
        let pending = self.rare.as_mut()?.preamble.take();
        self.tidy_rare();
        pending
    }

    /// The PROXY header it came with (`Ctx::proxy_header`).
    pub(crate) fn proxy(&self) -> Option<&crate::proxy_protocol::Header> {
        self.rare.as_ref()?.proxy.as_deref()
    }

    pub(crate) fn set_proxy(&mut self, header: crate::proxy_protocol::Header) {
        self.rare_mut().proxy = Some(Box::new(header));
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
    /// With a flush delay: when the oldest byte not yet handed to the driver
    /// was queued (`OutQueue::mark_queued`).
    queued_at: Option<Instant>,
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
        self.queued_at = None;
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

    /// With a flush delay: when the oldest byte not yet handed to the driver
    /// was queued.
    pub(crate) fn queued_at(&self) -> Option<Instant> {
        self.inner.as_ref()?.queued_at
    }

    /// Notes `now()` as the time the oldest byte not yet handed to the driver
    /// was queued, unless a time is noted already (nothing on an empty queue).
    pub(crate) fn mark_queued(&mut self, now: impl FnOnce() -> Instant) {
        if let Some(c) = self.inner.as_mut() {
            c.queued_at.get_or_insert_with(now);
        }
    }

    /// Everything queued is being handed to the driver.
    pub(crate) fn clear_queued_at(&mut self) {
        if let Some(c) = self.inner.as_mut() {
            c.queued_at = None;
        }
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

    /// Every connection pays for every byte of `Conn`, idle or not (the slab
    /// entry is a `Conn`: the vacant variant fits in its niche). 248 bytes
    /// before the flags were packed, rare state and the queue boxed, the
    /// flush time moved into the queue and input and IPv6 peers boxed.
    #[test]
    fn conn_stays_small() {
        assert!(
            std::mem::size_of::<Conn>() <= 80,
            "Conn grew to {} bytes",
            std::mem::size_of::<Conn>()
        );
        assert!(std::mem::size_of::<OutQueue>() <= 8);
        assert!(std::mem::size_of::<PeerAddr>() <= 16);
        // What `slab` stores per key: its entry enum, mirrored.
        #[allow(dead_code)]
        enum SlabEntry {
            Vacant(usize),
            Occupied(Conn),
        }
        assert_eq!(
            std::mem::size_of::<SlabEntry>(),
            std::mem::size_of::<Conn>()
        );
    }

    #[test]
    fn flags_are_independent() {
        let mut conn = Conn::new(1, ConnSocket::Fixed(3), None, Phase::Open);
        assert!(conn.reading() && conn.inbound() && !conn.live());
        conn.set_unread_asked(true);
        conn.set_draining(true);
        conn.set_reading(false);
        assert!(conn.unread_asked() && conn.draining() && !conn.reading());
        assert!(conn.inbound() && !conn.eof() && !conn.released());
        conn.set_draining(false);
        assert!(conn.unread_asked() && !conn.draining());
    }

    #[test]
    fn rare_state_is_freed_when_empty() {
        let mut conn = Conn::new(1, ConnSocket::Fixed(3), None, Phase::Open);
        assert!(conn.rare.is_none());
        conn.set_relay_out(Some(4));
        conn.set_relay_in(Some(5));
        conn.set_relay_out(None);
        assert_eq!((conn.relay_out(), conn.relay_in()), (None, Some(5)));
        conn.set_relay_in(None);
        assert!(conn.rare.is_none());
    }

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
