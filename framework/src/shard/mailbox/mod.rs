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
mod tests;

#[cfg(all(test, loom))]
mod loom_tests;
