//! Cross-shard mailboxes: one bounded queue per ordered pair of shards (sender,
//! receiver), and the wake protocol that lets a shard block in its driver without
//! missing a message and without a doorbell write per message.
//!
//! What this module must never do: grow without bound (a full queue hands the
//! message back to the sender as [`Full`]: backpressure, never a side buffer),
//! block a sender, or lose a wakeup — neither the receiver's "a message is here" nor
//! the sender's "there is room again".
//!
//! # Queues
//!
//! `shards * shards` queues, `crossbeam_queue::ArrayQueue`s of a fixed capacity,
//! allocated up front (memory: `shards² * capacity * (size_of::<M>() + 8)` bytes).
//! Queue (s, d) has one producer, shard s, and one consumer, shard d, so per-pair
//! order is FIFO. A shard may post to itself: its own pair is an ordinary queue,
//! delivered on its next drain. Each shard has one doorbell (the eventfd its driver
//! already watches) and one `sleeping` flag next to it.
//!
//! # The wake protocol
//!
//! This is DESIGN.md §3's protocol. Receiver R, before it blocks (`prepare_sleep`):
//! 1. `sleeping[R] = true`;
//! 2. `fence(SeqCst)`;
//! 3. re-check every inbound queue (and its own room notices, below); if anything is
//!    pending, `sleeping[R] = false` and don't block.
//!
//! Sender S, posting to R (`post`):
//! 1. push;
//! 2. `fence(SeqCst)`;
//! 3. if `sleeping[R].load()` and `sleeping[R].swap(false)` returned true, write R's
//!    eventfd.
//!
//! Why the fences. Each side stores to one location and then loads another: the
//! store-buffering shape. Without a full fence between its store and its load, each
//! load may return the old value — CPUs let a load pass an earlier store to another
//! address (x86 does, through its store buffer) — so R can see every queue empty
//! while S sees `sleeping == false`: R blocks, S does not ring, and the message
//! sits until something unrelated wakes R. That is the lost wakeup. Acquire/Release
//! cannot fix it: they order a store with *later stores* and a load with *later
//! loads*, never a store with a later load. Two SeqCst fences are totally ordered:
//! if R's fence comes first, S's load sees `true` (or a later `false` written by a
//! sender that rang), so S rings or someone already has; if S's fence comes first,
//! R's re-check sees the message and R stays awake. At least one side sees the
//! other; when both do, the price is one spare ring.
//!
//! No wake storms: the `swap(false)` means the first sender to see the flag rings
//! and clears it, and every later message of that batch — from any sender — sees
//! `false` and makes no syscall, until R announces sleeping again. Doorbell writes
//! are therefore at most the number of sleep announcements, not of messages. The
//! plain load before the swap keeps awake receivers' flags out of the senders'
//! write path (the common case costs a fence and a shared-cache-line read).
//!
//! Every write to a flag of this protocol (`sleeping`, and `wants_room` and `room`
//! below) is a `swap`, never a plain store; "`= true`" above means `swap(true)`.
//! C11 would accept plain stores; loom does not model them precisely enough (see
//! the last section), and swaps cost nothing per message: they happen on the way to
//! sleep and after a `Full`, never on a successful post.
//!
//! A spare ring is harmless: the eventfd stays readable, the next wait returns at
//! once, the driver resets it. The driver must reset the eventfd only when it
//! reports the wakeup (after which the loop drains), never between
//! `prepare_sleep` and the blocking wait, or a ring written in that window is lost.
//!
//! # Room notices (retry after `Full`)
//!
//! A sender whose post met `Full` is told when that queue has drained to at most
//! half its capacity, through its own doorbell and the same `sleeping` protocol:
//!
//! - Sender S, on `Full` for (S, R): `wants_room = true`, `fence(SeqCst)`,
//!   re-check the queue's length; if it is already at most half full and
//!   `wants_room.swap(false)` wins, S marks itself ready at once.
//! - Receiver R, at the end of a drain that took something: `fence(SeqCst)`, then
//!   for every inbound pair with `wants_room` set and at most half full, if
//!   `wants_room.swap(false)` wins: set `room[S][R]` (Release), `fence(SeqCst)`,
//!   and wake S exactly as a post wakes a receiver.
//! - S's `prepare_sleep` also refuses to sleep while any `room[S][_]` is set, and
//!   `take_ready` hands those out (Acquire, so a retry after a notice sees the room).
//!
//! The race this closes: R drains the whole queue between S's failed push and S's
//! `wants_room` store, then goes to sleep and never drains that pair again. The two
//! fences are store-buffering again (R stores head, loads `wants_room`; S stores
//! `wants_room`, loads head): either R sees the mark and notifies, or S's re-check
//! sees the room. Both may; the `swap(false)` on `wants_room` lets exactly one of
//! them produce the notice. Both sides use the same threshold (half), and R never
//! sleeps while the queue is non-empty, so a drain that takes the queue to half or
//! below always comes, and one of the two checks fires.
//!
//! # Checked with loom
//!
//! `RUSTFLAGS="--cfg loom" cargo test --lib --release mailbox` runs the model
//! tests at the bottom. Under `cfg(loom)` the queue is a small SPSC ring of loom
//! atomics with Release/Acquire publication (a mutex would add synchronization and
//! hide the bug) and the doorbell is a counter of rings. What loom does and does not
//! model, and what that meant here:
//!
//! - `fence(SeqCst)`: modelled (tokio-rs/loom#220), by joining the thread's
//!   causality with a global one. That is *stronger* than C11 (SeqCst fences
//!   synchronize with each other), so loom proves the "at least one side sees the
//!   other" property this protocol needs, but could not catch code relying on a
//!   fence to publish data. Nothing here does: messages are published by the
//!   queue's Release/Acquire, room notices by their flag's Release/Acquire. So the
//!   protocol is written exactly as in DESIGN.md, with fences.
//! - SeqCst loads and stores: not modelled (treated as AcqRel; loom#180), so they
//!   would give false alarms; the protocol uses Relaxed accesses plus explicit fences.
//! - Modification order: loom keeps it as a partial order and does not enforce RMW
//!   atomicity against a later plain store by another thread. With plain stores for
//!   the flag writes, loom reported a lost wakeup that C11 forbids: a sender's
//!   `swap(false)` consumed announcement 1; the receiver's retract and its
//!   announcement 2 (plain stores) were left unordered with that swap, so the
//!   sender's load after its fence read its own old `false` although announcement 2
//!   happened before it. In C11 the swap read the retract and so sits right after it,
//!   before announcement 2. Making every flag write a swap (which reads the newest
//!   value) gives each flag a total order in loom too; the false alarm went away.
//! - DPOR gaps (loom#166, #392): a load by one thread followed by a load and store
//!   of the same location by another is not seen as a race, and loom may stop
//!   exploring after one execution (it did, for the ring, until each side read its
//!   own index with `unsync_load`, as a real SPSC ring keeps its own index). The
//!   scenarios also run twice with the roles swapped between threads.
//!
//! The scenarios are run again with the fences removed: loom finds the lost wakeup
//! and the lost room notice there, which also shows it explores the interleavings
//! that matter.

// Until the shard loop calls every entry point; integration removes this (and the
// loom build, which skips the unit tests, may keep `any(loom)` of it).
#![cfg_attr(loom, allow(dead_code))]

use std::{fmt, sync::Arc};

use crossbeam_utils::CachePadded;

use self::sync::{fence, AtomicBool, Ordering, Queue};
use super::doorbell::Doorbell;
use crate::metrics::Counter;

/// The atomics the protocol runs on: std normally, loom's under `cfg(loom)`.
mod sync {
    #[cfg(loom)]
    pub(super) use loom::sync::atomic::{fence, AtomicBool, Ordering};
    #[cfg(not(loom))]
    pub(super) use std::sync::atomic::{fence, AtomicBool, Ordering};

    #[cfg(loom)]
    pub(super) use super::ring::Ring as Queue;
    #[cfg(not(loom))]
    pub(super) type Queue<M> = crossbeam_queue::ArrayQueue<M>;
}

/// A message that could not be posted because the destination shard's mailbox
/// from this shard is full. The message is handed back untouched; the sender is
/// told when it may retry.
pub struct Full<M>(pub M);

impl<M> Full<M> {
    /// The message that was not posted.
    pub fn into_inner(self) -> M {
        self.0
    }
}

// Not derived: `Full<M>` stays `Debug` (so `.expect()` works) for any message type.
impl<M> fmt::Debug for Full<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Full(..)")
    }
}

impl<M> fmt::Display for Full<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the destination shard's mailbox is full; keep the message and retry once told there is room")
    }
}

impl<M> std::error::Error for Full<M> {}

/// Mailbox counters of one shard. Each is written only by that shard: `sent`,
/// `full` and the `doorbell_writes` for its posts as a sender, `received` and the
/// `doorbell_writes` for its room notices as a receiver.
#[derive(Default)]
pub(crate) struct MailboxMetrics {
    pub(crate) sent: Counter,
    pub(crate) received: Counter,
    pub(crate) doorbell_writes: Counter,
    pub(crate) full: Counter,
}

/// A copy of one shard's [`MailboxMetrics`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MailboxSnapshot {
    /// Messages this shard posted successfully.
    pub(crate) sent: u64,
    /// Messages this shard drained.
    pub(crate) received: u64,
    /// Eventfd writes this shard made to wake another shard.
    pub(crate) doorbell_writes: u64,
    /// Posts from this shard that met a full queue.
    pub(crate) full: u64,
}

impl MailboxMetrics {
    pub(crate) fn snapshot(&self) -> MailboxSnapshot {
        MailboxSnapshot {
            sent: self.sent.get(),
            received: self.received.get(),
            doorbell_writes: self.doorbell_writes.get(),
            full: self.full.get(),
        }
    }
}

/// The queue of one ordered pair (from, to).
struct Pair<M> {
    queue: Queue<M>,
    /// Set by the sender after `Full`; taken (swapped to false) by whoever produces
    /// the room notice.
    wants_room: CachePadded<AtomicBool>,
}

/// What the other shards need of one shard.
struct ShardSlot {
    /// "Ring me": set by the shard before it blocks, taken by the one who rings.
    sleeping: CachePadded<AtomicBool>,
    /// `room[to]`: the queue (this shard -> to) has room again after a `Full`.
    room: Box<[AtomicBool]>,
    /// First source the next drain visits. Only the owning shard touches it, so it
    /// is not part of the protocol (std even under loom).
    cursor: std::sync::atomic::AtomicUsize,
    bell: Bell,
    metrics: MailboxMetrics,
}

/// The shard's doorbell; under loom, a counter of rings the model can check.
struct Bell {
    #[cfg_attr(loom, allow(dead_code))]
    doorbell: Doorbell,
    #[cfg(loom)]
    rings: loom::sync::atomic::AtomicUsize,
}

impl Bell {
    fn ring(&self) {
        #[cfg(not(loom))]
        self.doorbell.ring();
        #[cfg(loom)]
        self.rings.fetch_add(1, Ordering::Release);
    }
}

/// Every shard's inbound and outbound queues, wake flags and doorbells, shared by
/// all shards (one `Arc`).
pub(crate) struct Mailboxes<M> {
    shards: Box<[ShardSlot]>,
    /// Indexed `from * shards + to`.
    pairs: Box<[Pair<M>]>,
    capacity: usize,
    /// Models the protocol without its fences, to show loom finds what they prevent.
    #[cfg(loom)]
    skip_fences: bool,
}

impl<M> fmt::Debug for Mailboxes<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailboxes")
            .field("shards", &self.shards.len())
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// Finishes a drain even if the callback unwinds: counts what was taken and gives
/// the room notices owed for it (skipping that could strand a waiting sender).
struct DrainGuard<'a, M> {
    mailboxes: &'a Mailboxes<M>,
    to: usize,
    taken: usize,
}

impl<M> Drop for DrainGuard<'_, M> {
    fn drop(&mut self) {
        if self.taken > 0 {
            let mb = self.mailboxes;
            mb.shards[self.to].metrics.received.add(self.taken as u64);
            mb.give_room(self.to);
        }
    }
}

impl<M> Mailboxes<M> {
    /// Mailboxes for `shards` shards, every queue holding up to `capacity` messages;
    /// `doorbells[i]` wakes shard `i`.
    pub(crate) fn new(shards: usize, capacity: usize, doorbells: Vec<Doorbell>) -> Arc<Self> {
        Self::build(shards, capacity, doorbells, false)
    }

    fn build(
        shards: usize,
        capacity: usize,
        doorbells: Vec<Doorbell>,
        skip_fences: bool,
    ) -> Arc<Self> {
        assert!(shards > 0, "mailboxes need at least one shard");
        assert!(
            capacity > 0,
            "a mailbox needs room for at least one message"
        );
        assert_eq!(doorbells.len(), shards, "one doorbell per shard");
        #[cfg(not(loom))]
        let _ = skip_fences;
        let slots = doorbells
            .into_iter()
            .map(|doorbell| ShardSlot {
                sleeping: CachePadded::new(AtomicBool::new(false)),
                room: (0..shards).map(|_| AtomicBool::new(false)).collect(),
                cursor: std::sync::atomic::AtomicUsize::new(0),
                bell: Bell {
                    doorbell,
                    #[cfg(loom)]
                    rings: loom::sync::atomic::AtomicUsize::new(0),
                },
                metrics: MailboxMetrics::default(),
            })
            .collect();
        let pairs = (0..shards * shards)
            .map(|_| Pair {
                queue: Queue::new(capacity),
                wants_room: CachePadded::new(AtomicBool::new(false)),
            })
            .collect();
        Arc::new(Mailboxes {
            shards: slots,
            pairs,
            capacity,
            #[cfg(loom)]
            skip_fences,
        })
    }

    /// Number of shards.
    #[cfg(test)]
    pub(crate) fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Messages each queue holds at most.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The mailbox counters of `shard`.
    pub(crate) fn metrics(&self, shard: usize) -> &MailboxMetrics {
        &self.shards[shard].metrics
    }

    /// Posts `msg` from shard `from` to shard `to` (`from == to` is allowed) and
    /// rings `to` if it announced it is sleeping. `from` must be the calling shard:
    /// each queue has one producer and the counters one writer.
    ///
    /// On `Full` the message comes back; `from` is then owed one room notice for
    /// `to`, which [`take_ready`](Self::take_ready) hands out once the queue is at
    /// most half full.
    pub(crate) fn post(&self, from: usize, to: usize, msg: M) -> Result<(), Full<M>> {
        let pair = self.pair(from, to);
        match pair.queue.push(msg) {
            Ok(()) => {
                self.shards[from].metrics.sent.add(1);
                // Push, then look at the flag: see the module doc.
                self.full_fence();
                self.wake(from, to);
                Ok(())
            }
            Err(msg) => {
                self.shards[from].metrics.full.add(1);
                // Already marked: that mark's re-check ran, and the receiver either
                // still sees the mark or has already taken it and set the notice.
                if !pair.wants_room.load(Ordering::Relaxed) {
                    pair.wants_room.swap(true, Ordering::Relaxed);
                    // Mark, then look at the queue: the receiver may have drained it
                    // between the failed push and the mark, and may never drain this
                    // pair again.
                    self.full_fence();
                    if pair.queue.len() <= self.low_water()
                        && pair.wants_room.swap(false, Ordering::Relaxed)
                    {
                        self.shards[from].room[to].swap(true, Ordering::Release);
                    }
                }
                Err(Full(msg))
            }
        }
    }

    /// Drains up to `budget` messages for shard `to`, calling `f(from, msg)` for
    /// each, and returns how many. Sources are served round-robin in equal shares
    /// per pass (a source that gives less than its share is empty and drops out),
    /// starting after the last source served by the previous drain, so one chatty
    /// sender cannot starve the others. Room notices owed for what was taken are
    /// given before returning.
    pub(crate) fn drain(&self, to: usize, budget: usize, mut f: impl FnMut(usize, M)) -> usize {
        let n = self.shards.len();
        let cursor = &self.shards[to].cursor;
        let start = cursor.load(std::sync::atomic::Ordering::Relaxed) % n;
        let mut guard = DrainGuard {
            mailboxes: self,
            to,
            taken: 0,
        };
        let mut next_start = start;
        let mut active = n;
        while guard.taken < budget {
            let share = ((budget - guard.taken) / active).max(1);
            let mut gave_full_share = 0;
            let mut taken_this_pass = 0;
            for i in 0..n {
                if guard.taken == budget {
                    break;
                }
                let from = (start + i) % n;
                let queue = &self.pair(from, to).queue;
                let mut got = 0;
                while got < share && guard.taken < budget {
                    let Some(msg) = queue.pop() else { break };
                    got += 1;
                    guard.taken += 1;
                    f(from, msg);
                }
                if got > 0 {
                    next_start = (from + 1) % n;
                    taken_this_pass += got;
                }
                if got == share {
                    gave_full_share += 1;
                }
            }
            if taken_this_pass == 0 || gave_full_share == 0 {
                break;
            }
            active = gave_full_share;
        }
        cursor.store(next_start, std::sync::atomic::Ordering::Relaxed);
        guard.taken
        // `guard` drops here: counters, then room notices.
    }

    /// Shard `to` is about to block in its driver. Returns true if it may: it is now
    /// announced as sleeping and nothing was pending. Returns false (announcement
    /// withdrawn) if a message or a room notice is pending: the loop must not block
    /// (wait with timeout zero).
    pub(crate) fn prepare_sleep(&self, to: usize) -> bool {
        let me = &self.shards[to];
        me.sleeping.swap(true, Ordering::Relaxed);
        // Announce, then look at the queues: see the module doc.
        self.full_fence();
        let pending = (0..self.shards.len()).any(|from| !self.pair(from, to).queue.is_empty())
            || me.room.iter().any(|r| r.load(Ordering::Relaxed));
        if pending {
            me.sleeping.swap(false, Ordering::Relaxed);
        }
        !pending
    }

    /// Shard `to` is awake again: withdraw its announcement so that senders stop
    /// looking at its doorbell. Harmless if none was made.
    pub(crate) fn woke(&self, to: usize) {
        // Only this shard sets the flag, so `false` here is current: skip the write.
        let sleeping = &self.shards[to].sleeping;
        if sleeping.load(Ordering::Relaxed) {
            sleeping.swap(false, Ordering::Relaxed);
        }
    }

    /// Appends to `out` every destination shard `from` may retry after a `Full`
    /// (its queue is at most half full), and clears those notices: each `Full`
    /// episode yields one notice. A retry after a notice finds the room the
    /// receiver made (the notice is published with Release/Acquire).
    pub(crate) fn take_ready(&self, from: usize, out: &mut Vec<usize>) {
        for (to, room) in self.shards[from].room.iter().enumerate() {
            if room.load(Ordering::Relaxed) && room.swap(false, Ordering::Acquire) {
                out.push(to);
            }
        }
    }

    /// Room notices owed by shard `to` after it took messages: for every sender
    /// waiting on a queue that is now at most half full, exactly one notice.
    fn give_room(&self, to: usize) {
        // Drained, then look at the marks: see "Room notices" in the module doc.
        self.full_fence();
        for from in 0..self.shards.len() {
            let pair = self.pair(from, to);
            if pair.wants_room.load(Ordering::Relaxed)
                && pair.queue.len() <= self.low_water()
                && pair.wants_room.swap(false, Ordering::Relaxed)
            {
                self.shards[from].room[to].swap(true, Ordering::Release);
                // Notice, then look at the sender's flag.
                self.full_fence();
                self.wake(to, from);
            }
        }
    }

    /// Rings shard `who` if it announced sleeping; `by` is the calling shard.
    fn wake(&self, by: usize, who: usize) {
        let slot = &self.shards[who];
        // The load keeps awake shards' flags out of the senders' write path; the
        // swap makes one ring serve every message until the next announcement.
        if slot.sleeping.load(Ordering::Relaxed) && slot.sleeping.swap(false, Ordering::Relaxed) {
            slot.bell.ring();
            self.shards[by].metrics.doorbell_writes.add(1);
        }
    }

    /// A queue at or below this length gives a waiting sender its room notice.
    fn low_water(&self) -> usize {
        self.capacity / 2
    }

    fn pair(&self, from: usize, to: usize) -> &Pair<M> {
        &self.pairs[from * self.shards.len() + to]
    }

    fn full_fence(&self) {
        #[cfg(loom)]
        if self.skip_fences {
            return;
        }
        fence(Ordering::SeqCst);
    }
}

/// Under loom, a bounded single-producer single-consumer ring of loom atomics, in
/// place of `ArrayQueue` (whose atomics loom cannot see). Publication is the usual
/// Release store of the index / Acquire load by the other side; no locks, which
/// would add synchronization the real queue does not promise to the wake protocol.
/// Each side reads its own index with `unsync_load` (it is the only writer), which
/// also keeps loom's DPOR from losing the race between one side's load of an index
/// and the other's store (see "Checked with loom" above).
#[cfg(loom)]
mod ring {
    use loom::{
        cell::UnsafeCell,
        sync::atomic::{
            AtomicUsize,
            Ordering::{Acquire, Release},
        },
    };

    pub(crate) struct Ring<M> {
        slots: Box<[UnsafeCell<Option<M>>]>,
        /// Next slot to pop; written only by the consumer.
        head: AtomicUsize,
        /// Next slot to push; written only by the producer.
        tail: AtomicUsize,
    }

    // SAFETY: a slot is written only by the producer while it lies outside
    // [head, tail) and read only by the consumer while inside; the Release stores
    // and Acquire loads of head and tail order those accesses (loom checks each
    // `UnsafeCell` access for races). Messages move between threads, hence `M: Send`.
    unsafe impl<M: Send> Sync for Ring<M> {}
    // SAFETY: as above; the ring owns its messages.
    unsafe impl<M: Send> Send for Ring<M> {}

    impl<M> Ring<M> {
        pub(crate) fn new(capacity: usize) -> Ring<M> {
            Ring {
                slots: (0..capacity).map(|_| UnsafeCell::new(None)).collect(),
                head: AtomicUsize::new(0),
                tail: AtomicUsize::new(0),
            }
        }

        pub(crate) fn push(&self, msg: M) -> Result<(), M> {
            // SAFETY: only the producer (this thread) stores to `tail`.
            let tail = unsafe { self.tail.unsync_load() };
            let head = self.head.load(Acquire);
            if tail - head == self.slots.len() {
                return Err(msg);
            }
            self.slots[tail % self.slots.len()].with_mut(|slot| {
                // SAFETY: only the producer writes; the slot is outside [head, tail),
                // and the consumer's take of it happened-before our Acquire of head.
                unsafe { *slot = Some(msg) }
            });
            self.tail.store(tail + 1, Release);
            Ok(())
        }

        pub(crate) fn pop(&self) -> Option<M> {
            // SAFETY: only the consumer (this thread) stores to `head`.
            let head = unsafe { self.head.unsync_load() };
            let tail = self.tail.load(Acquire);
            if head == tail {
                return None;
            }
            let msg = self.slots[head % self.slots.len()].with_mut(|slot| {
                // SAFETY: only the consumer reads; the slot is inside [head, tail),
                // and its write happened-before our Acquire of tail.
                unsafe { (*slot).take() }
            });
            self.head.store(head + 1, Release);
            msg
        }

        pub(crate) fn len(&self) -> usize {
            // Head first: a head seen with Acquire is never ahead of a tail loaded
            // after it.
            let head = self.head.load(Acquire);
            let tail = self.tail.load(Acquire);
            tail.saturating_sub(head)
        }

        pub(crate) fn is_empty(&self) -> bool {
            self.len() == 0
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::{
        io, thread,
        time::{Duration, Instant},
    };

    use rand::Rng;

    use super::*;

    fn bells(n: usize) -> Vec<Doorbell> {
        (0..n)
            .map(|_| Doorbell::new().expect("eventfd for a test doorbell"))
            .collect()
    }

    /// Reads and resets the eventfd: the number of rings since the last read.
    fn take_rings(bell: &Doorbell) -> u64 {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from an eventfd we hold a share of.
        let r = unsafe {
            libc::read(
                bell.raw_fd(),
                (&mut v as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "eventfd read: {e}");
            return 0;
        }
        v
    }

    /// Blocks until the doorbell is readable or `timeout` passes; true if rung.
    fn wait(bell: &Doorbell, timeout: Duration) -> bool {
        let mut pfd = libc::pollfd {
            fd: bell.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        loop {
            // SAFETY: one valid pollfd that lives across the call.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                assert_eq!(e.kind(), io::ErrorKind::Interrupted, "poll: {e}");
                continue;
            }
            return r > 0;
        }
    }

    fn collect<M>(mb: &Mailboxes<M>, to: usize, budget: usize) -> Vec<(usize, M)> {
        let mut got = Vec::new();
        let n = mb.drain(to, budget, |from, m| got.push((from, m)));
        assert_eq!(n, got.len());
        got
    }

    #[test]
    fn per_pair_order_is_kept() {
        let mb = Mailboxes::new(3, 64, bells(3));
        for i in 0..10 {
            mb.post(0, 2, i).expect("room");
            mb.post(1, 2, 100 + i).expect("room");
        }
        mb.post(2, 2, 1000).expect("a shard may post to itself");
        let got = collect(&mb, 2, 100);
        assert_eq!(got.len(), 21);
        for src in 0..3 {
            let seq: Vec<u64> = got
                .iter()
                .filter(|(f, _)| *f == src)
                .map(|(_, m)| *m)
                .collect();
            let want: Vec<u64> = match src {
                0 => (0..10).collect(),
                1 => (100..110).collect(),
                _ => vec![1000],
            };
            assert_eq!(seq, want, "order from shard {src}");
        }
        assert!(collect(&mb, 2, 100).is_empty());
    }

    #[test]
    fn full_hands_the_message_back_intact() {
        let mb = Mailboxes::new(2, 4, bells(2));
        for i in 0..4 {
            mb.post(0, 1, format!("m{i}")).expect("room");
        }
        let Err(Full(back)) = mb.post(0, 1, "the fifth".to_string()) else {
            panic!("a fifth message fit in a queue of four");
        };
        assert_eq!(back, "the fifth");
        // Other pairs are unaffected.
        mb.post(1, 0, "reply".to_string()).expect("room");
        assert_eq!(mb.metrics(0).snapshot().full, 1);
        let e = mb.post(0, 1, "x".to_string()).expect_err("still full");
        assert_eq!(format!("{e:?}"), "Full(..)");
        assert!(e.to_string().contains("full"));
        assert_eq!(e.into_inner(), "x");
    }

    #[test]
    fn drain_is_fair_across_sources() {
        let mb = Mailboxes::new(4, 256, bells(4));
        for i in 0..100 {
            mb.post(0, 3, (0, i)).expect("room");
        }
        for i in 0..3 {
            mb.post(1, 3, (1, i)).expect("room");
            mb.post(2, 3, (2, i)).expect("room");
        }
        // A small budget is shared: the chatty source does not take it all.
        let got = collect(&mb, 3, 6);
        for src in 0..3 {
            assert_eq!(
                got.iter().filter(|(f, _)| *f == src).count(),
                2,
                "share of {src}: {got:?}"
            );
        }
        // Budget 1 at a time rotates over the sources.
        let firsts: Vec<usize> = (0..3).map(|_| collect(&mb, 3, 1)[0].0).collect();
        assert_eq!(firsts, vec![0, 1, 2]);
        // Once the quiet sources are empty, the rest of the budget goes to the chatty one.
        let got = collect(&mb, 3, 50);
        assert_eq!(got.len(), 50);
        assert!(got.iter().all(|(f, _)| *f == 0));
        let rest = collect(&mb, 3, 1000);
        assert_eq!(rest.len(), 100 - 2 - 1 - 50);
        let order: Vec<u64> = rest.iter().map(|(_, (_, i))| *i).collect();
        assert_eq!(order, (53..100).collect::<Vec<u64>>());
    }

    #[test]
    fn sleeping_receiver_is_rung_once_per_batch() {
        let bells = bells(2);
        let mb = Mailboxes::new(2, 64, bells.clone());
        assert!(mb.prepare_sleep(1), "nothing pending");
        for i in 0..10 {
            mb.post(0, 1, i).expect("room");
        }
        assert_eq!(take_rings(&bells[1]), 1, "one write for the batch");
        assert_eq!(mb.metrics(0).snapshot().doorbell_writes, 1);
        // Awake (the announcement was consumed): no rings.
        mb.woke(1);
        mb.post(0, 1, 10).expect("room");
        assert_eq!(take_rings(&bells[1]), 0);
        // Pending messages: no sleep, announcement withdrawn, so no ring either.
        assert!(!mb.prepare_sleep(1));
        mb.post(0, 1, 11).expect("room");
        assert_eq!(take_rings(&bells[1]), 0);
        assert_eq!(collect(&mb, 1, 100).len(), 12);
        assert!(mb.prepare_sleep(1));
        mb.woke(1);
        mb.post(0, 1, 12).expect("room");
        assert_eq!(take_rings(&bells[1]), 0, "woke() withdrew the announcement");
    }

    #[test]
    fn room_notice_arrives_once_after_draining_to_half() {
        let bells = bells(2);
        let mb = Mailboxes::new(2, 4, bells.clone());
        for i in 0..4 {
            mb.post(0, 1, i).expect("room");
        }
        assert!(mb.post(0, 1, 4).is_err());
        assert!(mb.post(0, 1, 4).is_err(), "a second Full, same episode");
        let mut ready = Vec::new();
        mb.take_ready(0, &mut ready);
        assert!(ready.is_empty());
        assert!(mb.prepare_sleep(0), "the sender may sleep while it waits");
        assert_eq!(collect(&mb, 1, 1).len(), 1);
        mb.take_ready(0, &mut ready);
        assert!(ready.is_empty(), "3 of 4 is more than half full");
        assert_eq!(take_rings(&bells[0]), 0);
        assert_eq!(collect(&mb, 1, 1).len(), 1);
        assert_eq!(take_rings(&bells[0]), 1, "the sleeping sender is rung");
        assert_eq!(mb.metrics(1).snapshot().doorbell_writes, 1);
        assert!(
            !mb.prepare_sleep(0),
            "a pending notice keeps the sender awake"
        );
        mb.take_ready(0, &mut ready);
        assert_eq!(ready, vec![1]);
        ready.clear();
        mb.take_ready(0, &mut ready);
        assert!(ready.is_empty(), "exactly once");
        mb.post(0, 1, 4).expect("the retry finds room");
        assert_eq!(collect(&mb, 1, 100).len(), 3);
        mb.take_ready(0, &mut ready);
        assert!(ready.is_empty(), "no episode, no notice");
    }

    #[test]
    fn room_notice_with_capacity_one() {
        // Half of one is zero: the notice waits for an empty queue.
        let mb = Mailboxes::new(2, 1, bells(2));
        assert_eq!(mb.capacity(), 1);
        mb.post(0, 1, 0).expect("room");
        assert!(mb.post(0, 1, 1).is_err());
        let mut ready = Vec::new();
        assert_eq!(collect(&mb, 1, 8).len(), 1);
        mb.take_ready(0, &mut ready);
        assert_eq!(ready, vec![1]);
        mb.post(0, 1, 1).expect("the retry finds room");
    }

    #[test]
    fn counters_are_exact() {
        let bells = bells(3);
        let mb = Mailboxes::new(3, 2, bells.clone());
        assert!(mb.prepare_sleep(2));
        mb.post(0, 2, 1).expect("room");
        mb.post(0, 2, 2).expect("room");
        assert!(mb.post(0, 2, 3).is_err());
        mb.post(1, 2, 4).expect("room");
        mb.post(1, 1, 5).expect("self");
        assert!(mb.prepare_sleep(0));
        assert_eq!(collect(&mb, 2, 10).len(), 3);
        assert_eq!(collect(&mb, 1, 10).len(), 1);
        let s: Vec<MailboxSnapshot> = (0..3).map(|i| mb.metrics(i).snapshot()).collect();
        assert_eq!(
            s[0],
            MailboxSnapshot {
                sent: 2,
                received: 0,
                doorbell_writes: 1,
                full: 1
            }
        );
        assert_eq!(
            s[1],
            MailboxSnapshot {
                sent: 2,
                received: 1,
                doorbell_writes: 0,
                full: 0
            }
        );
        // Shard 2's drain gave shard 0 its room notice and rang it.
        assert_eq!(
            s[2],
            MailboxSnapshot {
                sent: 0,
                received: 3,
                doorbell_writes: 1,
                full: 0
            }
        );
        assert_eq!(take_rings(&bells[2]), 1);
        assert_eq!(take_rings(&bells[0]), 1);
    }

    /// How far a stress shard may run ahead of what it got back from a peer: keeps
    /// the shards in lockstep-ish ping-pong so that they run out of work and block
    /// all the time (and deadlock-free: two shards can't both be ahead of each other).
    const WINDOW: u64 = 256;

    #[derive(Debug, Default)]
    struct StressReport {
        sleeps: u64,
        announcements: u64,
        timeouts: u64,
        fulls: u64,
    }

    /// One stress shard: posts `per_pair` numbered messages to every other shard,
    /// checks what it receives, blocks on its real eventfd whenever it has nothing
    /// to do. Every wait has a 10 s timeout; a wait that times out means a lost
    /// wakeup (the shard only blocks when it is not finished, and the run is
    /// deadlock-free, so someone owes it a ring).
    fn stress_shard(
        me: usize,
        mb: Arc<Mailboxes<u64>>,
        bell: Doorbell,
        per_pair: u64,
    ) -> StressReport {
        let n = mb.shards();
        let mut rng = rand::rng();
        let mut sent = vec![0u64; n];
        let mut received = vec![0u64; n];
        let mut blocked = vec![false; n];
        let mut ready = Vec::new();
        let mut report = StressReport::default();
        let peers: Vec<usize> = (0..n).filter(|&p| p != me).collect();
        loop {
            mb.drain(me, 256, |from, seq| {
                assert_eq!(seq, received[from], "shard {me}: from {from} out of order");
                received[from] += 1;
            });
            ready.clear();
            mb.take_ready(me, &mut ready);
            for &to in &ready {
                blocked[to] = false;
            }
            let mut can_send = false;
            for &to in &peers {
                if blocked[to] {
                    continue;
                }
                let limit = per_pair.min(received[to] + WINDOW);
                let burst = rng.random_range(1..=96);
                let mut k = 0;
                while sent[to] < limit && k < burst {
                    match mb.post(me, to, sent[to]) {
                        Ok(()) => {
                            sent[to] += 1;
                            k += 1;
                        }
                        Err(Full(_)) => {
                            report.fulls += 1;
                            blocked[to] = true;
                            break;
                        }
                    }
                }
                can_send |= !blocked[to] && sent[to] < limit;
            }
            if peers
                .iter()
                .all(|&p| sent[p] == per_pair && received[p] == per_pair)
            {
                return report;
            }
            if can_send {
                // Now and then, be busy elsewhere so that others catch up and sleep.
                if rng.random_ratio(1, 2048) {
                    thread::sleep(Duration::from_micros(rng.random_range(1..100)));
                }
                continue;
            }
            report.announcements += 1;
            if !mb.prepare_sleep(me) {
                continue;
            }
            report.sleeps += 1;
            if !wait(&bell, Duration::from_secs(10)) {
                report.timeouts += 1;
            }
            take_rings(&bell);
            mb.woke(me);
        }
    }

    /// Four threads as shards, each posting 1,000,000 numbered messages to each
    /// other one (12 million in all; a few seconds even in a debug build), blocking
    /// on real eventfds: every message arrives once and in order, no wait ever
    /// times out, and doorbell writes are far fewer than messages.
    #[test]
    fn stress_four_shards_every_message_once_in_order() {
        const SHARDS: usize = 4;
        let per_pair: u64 = 1_000_000;
        let bells = bells(SHARDS);
        // Small queues: Full and room notices happen all the time.
        let mb = Mailboxes::new(SHARDS, 64, bells.clone());
        let started = Instant::now();
        let handles: Vec<_> = (0..SHARDS)
            .map(|me| {
                let mb = mb.clone();
                let bell = bells[me].clone();
                thread::Builder::new()
                    .name(format!("stress-shard-{me}"))
                    .spawn(move || stress_shard(me, mb, bell, per_pair))
                    .expect("spawn a stress shard")
            })
            .collect();
        let reports: Vec<StressReport> = handles
            .into_iter()
            .map(|h| h.join().expect("stress shard panicked"))
            .collect();
        let elapsed = started.elapsed();
        let messages = per_pair * (SHARDS * (SHARDS - 1)) as u64;
        let mut writes = 0;
        for (i, r) in reports.iter().enumerate() {
            let m = mb.metrics(i).snapshot();
            assert_eq!(r.timeouts, 0, "shard {i}: a wait timed out: lost wakeup");
            assert_eq!(m.sent, per_pair * (SHARDS as u64 - 1));
            assert_eq!(m.received, per_pair * (SHARDS as u64 - 1));
            assert_eq!(m.full, r.fulls, "shard {i}");
            writes += m.doorbell_writes;
        }
        let announcements: u64 = reports.iter().map(|r| r.announcements).sum();
        let sleeps: u64 = reports.iter().map(|r| r.sleeps).sum();
        let fulls: u64 = reports.iter().map(|r| r.fulls).sum();
        eprintln!(
            "mailbox stress: {messages} messages in {elapsed:?}; {writes} doorbell writes, \
             {sleeps} sleeps ({announcements} announcements), {fulls} Full"
        );
        assert!(writes <= announcements, "a ring needs an announcement");
        assert!(
            writes * 20 < messages,
            "{writes} doorbell writes for {messages} messages: not batching"
        );
        assert!(
            sleeps > 100,
            "the shards should have blocked often ({sleeps})"
        );
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    //! The wake protocol under loom. Each scenario runs shards as loom threads,
    //! replaces "block in the driver" by "stop and record it", and afterwards checks
    //! that every shard that stopped with something owed to it was rung. Each runs
    //! twice, with the roles swapped between the main and the spawned thread: loom
    //! starts every exploration from the schedule "main thread first", and its DPOR
    //! misses some races (tokio-rs/loom#166, #392), so two starting points cover more.

    use super::*;

    /// Runs `f` under loom with at most 3 preemptions (or `LOOM_MAX_PREEMPTIONS`),
    /// reporting the number of executions explored (see it with `--nocapture`).
    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut b = loom::model::Builder::new();
        if b.preemption_bound.is_none() {
            b.preemption_bound = Some(3);
        }
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = runs.clone();
        b.check(move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            f();
        });
        eprintln!(
            "loom: {} executions explored",
            runs.load(std::sync::atomic::Ordering::Relaxed)
        );
    }

    /// Real eventfds, made once per test: under loom they are never written (the
    /// ring counter stands in), only carried.
    fn bells() -> Vec<Doorbell> {
        (0..3)
            .map(|_| Doorbell::new().expect("eventfd for a loom doorbell"))
            .collect()
    }

    fn mailboxes(
        bells: &[Doorbell],
        shards: usize,
        capacity: usize,
        broken: bool,
    ) -> Arc<Mailboxes<usize>> {
        Mailboxes::build(shards, capacity, bells[..shards].to_vec(), broken)
    }

    fn rings(mb: &Mailboxes<usize>, shard: usize) -> usize {
        mb.shards[shard]
            .bell
            .rings
            .load(loom::sync::atomic::Ordering::Acquire)
    }

    /// What a receiver saw before it blocked.
    struct Receiver {
        got: Vec<(usize, usize)>,
        announcements: usize,
    }

    /// The receiver's loop, up to the point where it blocks.
    fn run_until_sleep(mb: &Mailboxes<usize>, me: usize) -> Receiver {
        let mut r = Receiver {
            got: Vec::new(),
            announcements: 0,
        };
        loop {
            mb.drain(me, 8, |from, m| r.got.push((from, m)));
            r.announcements += 1;
            if mb.prepare_sleep(me) {
                return r;
            }
        }
    }

    fn send_two(mb: &Mailboxes<usize>, from: usize, to: usize) {
        for i in 0..2 {
            mb.post(from, to, i).expect("room");
        }
    }

    /// `senders` shards each post two messages to the last shard, which runs its loop
    /// until it blocks. If it blocked with a message it had not seen, it must have
    /// been rung; and never more often than it announced sleeping.
    fn wakeup_scenario(bells: &[Doorbell], senders: usize, broken: bool, rx_on_main: bool) {
        let rx = senders;
        let mb = mailboxes(bells, senders + 1, 4, broken);
        let spawned_senders = if rx_on_main { 0..senders } else { 1..senders };
        let threads: Vec<_> = spawned_senders
            .map(|s| {
                let mb = mb.clone();
                loom::thread::spawn(move || send_two(&mb, s, rx))
            })
            .collect();
        let mut r = if rx_on_main {
            run_until_sleep(&mb, rx)
        } else {
            let receiver = {
                let mb = mb.clone();
                loom::thread::spawn(move || run_until_sleep(&mb, rx))
            };
            send_two(&mb, 0, rx);
            receiver.join().expect("receiver")
        };
        for t in threads {
            t.join().expect("sender");
        }
        let seen = r.got.len();
        if seen < 2 * senders {
            assert!(
                rings(&mb, rx) > 0,
                "lost wakeup: receiver blocked with {} unseen message(s), never rung",
                2 * senders - seen
            );
        }
        assert!(
            rings(&mb, rx) <= r.announcements,
            "more rings than sleep announcements"
        );
        // Rung (or not needed): the loop wakes and drains.
        mb.woke(rx);
        mb.drain(rx, 64, |from, m| r.got.push((from, m)));
        assert_eq!(r.got.len(), 2 * senders);
        for s in 0..senders {
            let mine: Vec<usize> = r.got.iter().filter(|g| g.0 == s).map(|g| g.1).collect();
            assert_eq!(mine, vec![0, 1]);
        }
    }

    #[test]
    fn no_lost_wakeup_one_sender() {
        let bells = bells();
        model(move || wakeup_scenario(&bells, 1, false, true));
        let bells = self::bells();
        model(move || wakeup_scenario(&bells, 1, false, false));
    }

    #[test]
    fn no_lost_wakeup_two_senders() {
        let bells = bells();
        model(move || wakeup_scenario(&bells, 2, false, true));
        let bells = self::bells();
        model(move || wakeup_scenario(&bells, 2, false, false));
    }

    #[test]
    #[should_panic(expected = "lost wakeup")]
    fn without_fences_a_wakeup_is_lost() {
        let bells = bells();
        model(move || wakeup_scenario(&bells, 1, true, true));
    }

    #[test]
    #[should_panic(expected = "lost wakeup")]
    fn without_fences_a_wakeup_is_lost_roles_swapped() {
        let bells = bells();
        model(move || wakeup_scenario(&bells, 1, true, false));
    }

    /// Shard 0 posts three messages into a queue of two; on `Full` it waits for its
    /// room notice like its loop would (take_ready, else prepare_sleep and block).
    /// Returns the message it was blocked on, if it blocked.
    fn room_sender(mb: &Mailboxes<usize>) -> Option<usize> {
        let mut ready = Vec::new();
        let mut next = 0;
        while next < 3 {
            match mb.post(0, 1, next) {
                Ok(()) => next += 1,
                Err(Full(_)) => loop {
                    mb.take_ready(0, &mut ready);
                    if ready.drain(..).any(|to| to == 1) {
                        mb.post(0, 1, next).expect("a room notice means room");
                        next += 1;
                        break;
                    }
                    if mb.prepare_sleep(0) {
                        return Some(next);
                    }
                },
            }
        }
        None
    }

    /// Shard 1 is busy (never blocks) and drains twice while shard 0 runs
    /// `room_sender`, then once more after it stopped. If shard 0 blocked waiting,
    /// it must have been rung, and hear of the room exactly once.
    fn room_scenario(bells: &[Doorbell], broken: bool, sender_on_main: bool) {
        let mb = mailboxes(bells, 2, 2, broken);
        let receive = |mb: &Mailboxes<usize>| {
            let mut got = Vec::new();
            for _ in 0..2 {
                mb.drain(1, 8, |_, m| got.push(m));
            }
            got
        };
        let (blocked_at, mut got) = if sender_on_main {
            let receiver = {
                let mb = mb.clone();
                loom::thread::spawn(move || receive(&mb))
            };
            let blocked_at = room_sender(&mb);
            (blocked_at, receiver.join().expect("receiver"))
        } else {
            let sender = {
                let mb = mb.clone();
                loom::thread::spawn(move || room_sender(&mb))
            };
            let got = receive(&mb);
            (sender.join().expect("sender"), got)
        };
        mb.drain(1, 8, |_, m| got.push(m));
        let Some(next) = blocked_at else {
            assert_eq!(got, vec![0, 1, 2]);
            return;
        };
        assert!(
            rings(&mb, 0) > 0,
            "lost room notice: sender blocked on a full queue, receiver drained it, never rung"
        );
        let mut ready = Vec::new();
        mb.take_ready(0, &mut ready);
        assert_eq!(ready, vec![1]);
        ready.clear();
        mb.take_ready(0, &mut ready);
        assert!(ready.is_empty(), "room notice given twice");
        mb.post(0, 1, next).expect("a room notice means room");
    }

    #[test]
    fn no_lost_room_notice() {
        let bells = bells();
        model(move || room_scenario(&bells, false, false));
        let bells = self::bells();
        model(move || room_scenario(&bells, false, true));
    }

    #[test]
    #[should_panic(expected = "lost room notice")]
    fn without_fences_a_room_notice_is_lost() {
        let bells = bells();
        model(move || room_scenario(&bells, true, false));
    }

    #[test]
    #[should_panic(expected = "lost room notice")]
    fn without_fences_a_room_notice_is_lost_roles_swapped() {
        let bells = bells();
        model(move || room_scenario(&bells, true, true));
    }
}
