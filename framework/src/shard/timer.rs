//! Per-shard hashed timer wheel.
//!
//! Each shard thread owns one [`TimerWheel`]; the event loop asks it how long it may
//! block ([`TimerWheel::next_deadline`]) and, after waking, collects every due timer
//! ([`TimerWheel::expire`]). It is single-threaded by design (no `Send`/`Sync` needed).
//!
//! # Design
//!
//! Time is cut into ticks of `tick` (the shard uses 1 ms) counted from the origin
//! given to [`TimerWheel::new`]. A timer whose deadline falls in tick `t` is linked
//! into slot `t & (slots - 1)` through an intrusive doubly linked list threaded
//! through a [`Slab`], so insert and cancel are O(1) and allocate nothing once the
//! slab has grown. Far-future timers (beyond `slots * tick`) need no overflow list:
//! they share a slot with nearer timers ("rounds") and are told apart by their stored
//! real deadline. `expire(now)` walks the slots from the current tick up to now's tick
//! (at most one revolution) and selects entries whose real `Instant` deadline is
//! `<= now`, so a timer never fires early, whatever the tick rounding. Due entries are
//! sorted by `(deadline, insertion sequence)` in a reused scratch buffer, which yields
//! deadline order with ties in insertion order. A periodic timer keeps its key and is
//! re-armed (with a fresh insertion sequence) at `deadline + period`; if the loop fell
//! behind, it fires once and is re-armed at the first `deadline + k * period > now`
//! (no catch-up burst). Deadlines in the past are kept in the current tick and fire on
//! the next `expire`. Keys carry a per-slab-index generation so stale keys are
//! rejected even after the index is reused (a false match needs 2^32 reuses of one
//! index while the stale key is held).
//!
//! # Never
//!
//! The wheel never allocates per tick (the scratch buffer and the slab only grow),
//! never fires a cancelled timer (cancel unlinks immediately, and due entries are only
//! collected inside `expire`), and never fires out of order within one `expire` call.

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

use slab::Slab;

/// End-of-list marker for the intrusive slot lists.
const NIL: usize = usize::MAX;

/// Handle to a timer; stays valid across periodic re-arms, goes stale on fire/cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct TimerKey {
    index: u32,
    generation: u32,
}

struct Entry<T> {
    deadline: Instant,
    period: Option<Duration>,
    /// Tick the entry is filed under: `max(tick_of(deadline), current at filing)`.
    tick: u64,
    /// Insertion sequence number, breaks deadline ties.
    seq: u64,
    prev: usize,
    next: usize,
    payload: T,
}

/// Hashed timer wheel owned by one shard thread.
pub(crate) struct TimerWheel<T> {
    origin: Instant,
    tick: Duration,
    mask: u64,
    /// Every live entry has `entry.tick >= current`.
    current: u64,
    heads: Box<[usize]>,
    entries: Slab<Entry<T>>,
    generations: Vec<u32>,
    next_seq: u64,
    due: Vec<(Instant, u64, usize)>,
    /// Cached lower bound of the earliest live deadline; `None` = must recompute.
    cached_next: Cell<Option<Instant>>,
}

impl<T> fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("tick", &self.tick)
            .field("slots", &self.heads.len())
            .field("current_tick", &self.current)
            .field("live", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl<T: Clone> TimerWheel<T> {
    /// Creates a wheel of `slots` slots (rounded up to a power of two, capped at
    /// 2^30) of `tick` each (a zero tick is clamped to 1 ns); `now` is the origin.
    pub(crate) fn new(tick: Duration, slots: usize, now: Instant) -> Self {
        let tick = tick.max(Duration::from_nanos(1));
        let slots = slots.clamp(1, 1 << 30).next_power_of_two();
        Self {
            origin: now,
            tick,
            mask: slots as u64 - 1,
            current: 0,
            heads: vec![NIL; slots].into_boxed_slice(),
            entries: Slab::new(),
            generations: Vec::new(),
            next_seq: 0,
            due: Vec::new(),
            cached_next: Cell::new(None),
        }
    }

    /// Arms a one-shot (`period == None`) or periodic timer; a zero period is
    /// clamped to one tick. A deadline in the past fires on the next `expire`.
    pub(crate) fn insert(
        &mut self,
        deadline: Instant,
        period: Option<Duration>,
        payload: T,
    ) -> TimerKey {
        let idx = self.entries.vacant_key();
        // Keys store the index as u32 (see `key_of`); check it before any mutation.
        u32::try_from(idx)
            .expect("more than u32::MAX live timers cannot fit in memory (>= 48 bytes each)");
        let entry = Entry {
            deadline,
            period: period.map(|p| p.max(self.tick)),
            tick: self.tick_of(deadline).max(self.current),
            seq: self.bump_seq(),
            prev: NIL,
            next: NIL,
            payload,
        };
        self.entries.insert(entry);
        if idx == self.generations.len() {
            self.generations.push(0);
        }
        self.link(idx);
        if let Some(cached) = self.cached_next.get() {
            self.cached_next.set(Some(cached.min(deadline)));
        }
        self.key_of(idx)
    }

    /// Cancels a live timer and returns its payload; `None` for a stale key.
    pub(crate) fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let idx = key.index as usize;
        let live = self.generations.get(idx) == Some(&key.generation) && self.entries.contains(idx);
        live.then(|| self.remove(idx).payload)
    }

    /// Earliest instant the loop must wake to serve timers, `None` when no timer is
    /// live. Never later than the true earliest deadline (the computed value is exact;
    /// a cached one may be earlier after a cancel). Allocation-free; a recompute walks
    /// at most one revolution of slots and is cached until the next `expire`.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        if self.entries.is_empty() {
            return None;
        }
        if let Some(cached) = self.cached_next.get() {
            return Some(cached);
        }
        // Scanning ticks in order, the first slot holding an entry filed under the
        // scanned tick contains the minimum: later slots only hold later ticks, and the
        // later-round entries already seen are included in `best`. With no such slot,
        // every live entry has been visited and `best` is the exact minimum.
        let mut best: Option<Instant> = None;
        for i in 0..=self.mask {
            let tick = self.current.wrapping_add(i);
            let (mut idx, mut hit) = (self.heads[self.slot_of(tick)], false);
            while idx != NIL {
                let e = &self.entries[idx];
                best = Some(best.map_or(e.deadline, |b| b.min(e.deadline)));
                hit |= e.tick == tick;
                idx = e.next;
            }
            if hit {
                break;
            }
        }
        self.cached_next.set(best);
        best
    }

    /// Appends every timer with `deadline <= now` to `out` as `(key, payload)`, in
    /// deadline order (ties in insertion order), re-arming periodic timers. A `now`
    /// earlier than a previous one is accepted (it only fires what is due at `now`).
    pub(crate) fn expire(&mut self, now: Instant, out: &mut Vec<(TimerKey, T)>) {
        let end = self.tick_of(now).max(self.current);
        if self.entries.is_empty() {
            self.cached_next.set(None);
            self.current = end;
            return;
        }
        // The cached earliest deadline is never later than the true one: if it is
        // still ahead, nothing is due, and the cache stays valid (so a loop turn
        // with only far-away timers, e.g. TLS handshake deadlines, scans nothing).
        if self.cached_next.get().is_some_and(|next| next > now) {
            self.current = end;
            return;
        }
        self.cached_next.set(None);
        // Every entry with deadline <= now is filed under a tick in current..=end.
        let span = (end - self.current).saturating_add(1).min(self.mask + 1);
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        for i in 0..span {
            let mut idx = self.heads[self.slot_of(self.current.wrapping_add(i))];
            while idx != NIL {
                let e = &self.entries[idx];
                if e.deadline <= now {
                    due.push((e.deadline, e.seq, idx));
                }
                idx = e.next;
            }
        }
        self.current = end;
        due.sort_unstable_by_key(|&(deadline, seq, _)| (deadline, seq));
        for &(_, _, idx) in &due {
            self.fire(idx, now, out);
        }
        due.clear();
        self.due = due;
    }

    /// Number of live timers.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no timer is live.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn fire(&mut self, idx: usize, now: Instant, out: &mut Vec<(TimerKey, T)>) {
        let key = self.key_of(idx);
        let (deadline, period) = (self.entries[idx].deadline, self.entries[idx].period);
        let rearm = period.and_then(|p| next_occurrence(deadline, p, now));
        match rearm {
            Some(next) => {
                self.unlink(idx);
                let tick = self.tick_of(next).max(self.current);
                let seq = self.bump_seq();
                let e = &mut self.entries[idx];
                e.deadline = next;
                e.tick = tick;
                e.seq = seq;
                out.push((key, e.payload.clone()));
                self.link(idx);
            }
            // One-shot, or a periodic whose next deadline overflows `Instant`.
            None => out.push((key, self.remove(idx).payload)),
        }
    }

    fn key_of(&self, idx: usize) -> TimerKey {
        TimerKey {
            index: idx as u32, // `insert` checked that every slab index fits in u32
            generation: self.generations[idx],
        }
    }

    fn remove(&mut self, idx: usize) -> Entry<T> {
        self.unlink(idx);
        let entry = self.entries.remove(idx);
        self.generations[idx] = self.generations[idx].wrapping_add(1);
        if self.cached_next.get() == Some(entry.deadline) {
            self.cached_next.set(None);
        }
        entry
    }

    fn link(&mut self, idx: usize) {
        let slot = self.slot_of(self.entries[idx].tick);
        let head = self.heads[slot];
        let e = &mut self.entries[idx];
        e.prev = NIL;
        e.next = head;
        if head != NIL {
            self.entries[head].prev = idx;
        }
        self.heads[slot] = idx;
    }

    fn unlink(&mut self, idx: usize) {
        let e = &self.entries[idx];
        let (prev, next, tick) = (e.prev, e.next, e.tick);
        if prev == NIL {
            let slot = self.slot_of(tick);
            self.heads[slot] = next;
        } else {
            self.entries[prev].next = next;
        }
        if next != NIL {
            self.entries[next].prev = prev;
        }
    }

    fn tick_of(&self, at: Instant) -> u64 {
        let ticks = at.saturating_duration_since(self.origin).as_nanos() / self.tick.as_nanos();
        u64::try_from(ticks).unwrap_or(u64::MAX)
    }

    fn slot_of(&self, tick: u64) -> usize {
        (tick & self.mask) as usize // mask < 2^30, fits in usize
    }

    fn bump_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }
}

/// First `deadline + k * period` (k >= 1) that is `> now`; `None` on overflow.
fn next_occurrence(deadline: Instant, period: Duration, now: Instant) -> Option<Instant> {
    let next = deadline.checked_add(period)?;
    if next > now {
        return Some(next);
    }
    let k = now.duration_since(deadline).as_nanos() / period.as_nanos() + 1;
    let offset = u64::try_from(k.checked_mul(period.as_nanos())?).ok()?;
    deadline.checked_add(Duration::from_nanos(offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, Rng, SeedableRng};
    use std::collections::BTreeMap;

    const MS: Duration = Duration::from_millis(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn fired_keys(w: &mut TimerWheel<u32>, now: Instant) -> Vec<(TimerKey, u32)> {
        let mut out = Vec::new();
        w.expire(now, &mut out);
        out
    }

    fn fired(w: &mut TimerWheel<u32>, now: Instant) -> Vec<u32> {
        fired_keys(w, now).into_iter().map(|(_, p)| p).collect()
    }

    #[test]
    fn fires_in_deadline_order_across_slots_and_revolutions() {
        let base = Instant::now();
        let (mut stepped, mut jumped) =
            (TimerWheel::new(MS, 8, base), TimerWheel::new(MS, 8, base));
        let mut expect: Vec<(u64, u32)> = Vec::new();
        for (i, d) in [3, 100, 3, 9, 1, 17, 1000, 9, 0].into_iter().enumerate() {
            stepped.insert(base + ms(d), None, i as u32);
            jumped.insert(base + ms(d), None, i as u32);
            expect.push((d, i as u32));
        }
        expect.sort(); // by (deadline, insertion index)
        let expect: Vec<u32> = expect.into_iter().map(|(_, i)| i).collect();
        let got: Vec<u32> = (0..=1000)
            .flat_map(|t| fired(&mut stepped, base + ms(t)))
            .collect();
        assert_eq!(got, expect);
        assert_eq!(fired(&mut jumped, base + ms(5000)), expect);
        assert!(stepped.is_empty() && jumped.is_empty());
    }

    #[test]
    fn never_fires_early_far_future_past_deadlines_and_backwards_now() {
        let base = Instant::now();
        let (t10, far) = (base + ms(10), base + Duration::from_secs(3 * 3600));
        let mut w = TimerWheel::new(MS, 16, base);
        w.insert(t10, None, 1);
        w.insert(t10 + Duration::from_micros(500), None, 2);
        w.insert(far, None, 3);
        assert!(fired(&mut w, base + ms(9)).is_empty());
        assert_eq!(fired(&mut w, t10), [1]);
        assert!(fired(&mut w, t10 + Duration::from_nanos(499_999)).is_empty());
        assert_eq!(fired(&mut w, t10 + Duration::from_micros(500)), [2]);
        assert_eq!(w.next_deadline(), Some(far));
        assert!(fired(&mut w, far - Duration::from_nanos(1)).is_empty());
        assert_eq!(fired(&mut w, far), [3]);
        assert_eq!(w.next_deadline(), None);
        // Past deadlines fire on the next expire; a backwards `now` does not panic.
        let mut w = TimerWheel::new(MS, 8, base + ms(50));
        assert!(fired(&mut w, base + ms(100)).is_empty());
        w.insert(base + ms(20), None, 1); // before the origin and the current tick
        w.insert(base + ms(90), None, 2);
        w.insert(base + ms(150), None, 3);
        assert_eq!(fired(&mut w, base + ms(30)), [1]);
        assert_eq!(fired(&mut w, base + ms(100)), [2]);
        assert_eq!(fired(&mut w, base + ms(150)), [3]);
    }

    #[test]
    fn cancelled_timers_never_fire_and_stale_keys_are_rejected() {
        let base = Instant::now();
        let mut w = TimerWheel::new(MS, 8, base);
        let a = w.insert(base + ms(5), None, 1);
        let b = w.insert(base + ms(5), None, 2);
        let p = w.insert(base + ms(2), Some(ms(2)), 3);
        assert_eq!((w.cancel(a), w.cancel(a)), (Some(1), None));
        assert_eq!(w.cancel(p), Some(3)); // due (now > 2ms) but not yet expired
        assert_eq!(fired(&mut w, base + ms(20)), [2]);
        assert_eq!(w.cancel(b), None);
        let c = w.insert(base + ms(30), None, 4); // reuses a freed index
        assert!(c.index == a.index || c.index == b.index);
        assert_eq!((w.cancel(a), w.cancel(b), w.len()), (None, None, 1));
        assert_eq!(w.cancel(c), Some(4));
        assert!(w.is_empty() && w.next_deadline().is_none());
    }

    #[test]
    fn periodic_rearms_keeps_key_and_skips_missed_periods() {
        let base = Instant::now();
        let mut w = TimerWheel::new(MS, 8, base);
        let k = w.insert(base + ms(5), Some(ms(5)), 7);
        for n in 1..=3 {
            assert!(fired(&mut w, base + ms(5 * n) - MS).is_empty());
            assert_eq!(fired_keys(&mut w, base + ms(5 * n)), [(k, 7)]);
        }
        // Fall behind by 10 periods (+2 ms): one event, next at the first slot > now.
        assert_eq!(fired(&mut w, base + ms(15 + 50 + 2)), [7]);
        assert_eq!(w.next_deadline(), Some(base + ms(70)));
        assert!(fired(&mut w, base + ms(69)).is_empty());
        assert_eq!(fired(&mut w, base + ms(70)), [7]);
        assert_eq!(w.cancel(k), Some(7));
        assert!(fired(&mut w, base + ms(1000)).is_empty());
        // A zero period is clamped to one tick: at most one event per expire.
        w.insert(base + ms(1000), Some(Duration::ZERO), 8);
        assert_eq!(fired(&mut w, base + ms(1000)), [8]);
        assert_eq!(w.next_deadline(), Some(base + ms(1001)));
    }

    /// Reference model: one BTreeMap ordered by (deadline, sequence).
    #[derive(Default)]
    struct Model {
        queue: BTreeMap<(Instant, u64), (TimerKey, Option<Duration>, u32)>,
        seq: u64,
    }

    impl Model {
        fn insert(&mut self, key: TimerKey, deadline: Instant, period: Option<Duration>, p: u32) {
            self.seq += 1;
            self.queue.insert((deadline, self.seq), (key, period, p));
        }

        fn cancel(&mut self, key: TimerKey) -> Option<u32> {
            let at = *self.queue.iter().find(|(_, v)| v.0 == key)?.0;
            self.queue.remove(&at).map(|(_, _, p)| p)
        }

        fn expire(&mut self, now: Instant) -> Vec<(TimerKey, u32)> {
            let mut fired = Vec::new();
            while let Some(entry) = self.queue.first_entry().filter(|e| e.key().0 <= now) {
                let ((deadline, _), (key, period, p)) = entry.remove_entry();
                fired.push((key, p));
                if let Some(period) = period {
                    let mut next = deadline + period;
                    while next <= now {
                        next += period;
                    }
                    self.insert(key, next, Some(period), p);
                }
            }
            fired
        }
    }

    #[test]
    fn matches_reference_model_under_random_operations() {
        for seed in 0..40u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let (base, slots) = (Instant::now(), [1usize, 4, 16, 64][seed as usize % 4]);
            let mut w = TimerWheel::new(MS, slots, base);
            let (mut model, mut keys, mut now, mut out) = (Model::default(), vec![], base, vec![]);
            for step in 0..2000u32 {
                match rng.random_range(0..10) {
                    0..=4 => {
                        let ahead = Duration::from_micros(rng.random_range(0..300_000));
                        let deadline = match rng.random_bool(0.1) {
                            true => now.checked_sub(ahead / 10).unwrap_or(now),
                            false => now + ahead,
                        };
                        let period = rng
                            .random_bool(0.3)
                            .then(|| Duration::from_micros(rng.random_range(0..20_000)));
                        let key = w.insert(deadline, period, step);
                        model.insert(key, deadline, period.map(|p| p.max(MS)), step);
                        keys.push(key);
                    }
                    5 | 6 if !keys.is_empty() => {
                        let key = keys[rng.random_range(0..keys.len())];
                        assert_eq!(w.cancel(key), model.cancel(key));
                    }
                    _ => {
                        now = match rng.random_range(0..20) {
                            0 => now.checked_sub(ms(3)).unwrap_or(now),
                            1 => now + Duration::from_secs(2),
                            _ => now + Duration::from_micros(rng.random_range(0..5_000)),
                        };
                        out.clear();
                        w.expire(now, &mut out);
                        assert_eq!(out, model.expire(now), "seed {seed} step {step}");
                    }
                }
                assert_eq!(w.len(), model.queue.len());
                let earliest = model.queue.keys().next().map(|&(d, _)| d);
                match (w.next_deadline(), earliest) {
                    (None, None) => {}
                    (Some(got), Some(min)) => assert!(got <= min, "seed {seed} step {step}"),
                    other => panic!("next_deadline mismatch {other:?} seed {seed}"),
                }
            }
        }
    }
}
