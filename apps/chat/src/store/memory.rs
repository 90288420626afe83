//! The in-memory state of some partitions: accounts and bounded histories, the
//! CHATHISTORY queries over them, and the live size of each partition (what a
//! compacted log would hold). Recovery, the shard and the compaction job all
//! replay records through this one type, so a compacted file replays to the
//! same state as the log it replaces.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use super::{
    codec::{self, Account, Message, Record},
    key::{self, PARTITIONS},
};

/// History bounds (`[history]` keys), enforced on every append and by
/// [`super::Store::expire`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Messages kept per channel; 0 keeps no channel history.
    pub channel_messages: usize,
    /// Messages kept per private conversation; 0 keeps none.
    pub conversation_messages: usize,
    /// Messages older than this many milliseconds are dropped; 0: no age limit.
    pub max_age_ms: u64,
}

impl Default for HistoryLimits {
    fn default() -> HistoryLimits {
        HistoryLimits {
            channel_messages: 1000,
            conversation_messages: 1000,
            max_age_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

impl HistoryLimits {
    pub(crate) fn max_for(&self, key: &str) -> usize {
        if key::is_channel_key(key) {
            self.channel_messages
        } else {
            self.conversation_messages
        }
    }

    /// The oldest time kept at `now` (0 if there is no age limit).
    fn cutoff(&self, now: u64) -> u64 {
        if self.max_age_ms == 0 {
            0
        } else {
            now.saturating_sub(self.max_age_ms)
        }
    }
}

/// A message reference in a CHATHISTORY query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgRef<'a> {
    /// `msgid=...`: that message.
    MsgId(&'a str),
    /// `timestamp=...`, in milliseconds since the Unix epoch.
    Time(u64),
}

/// A query's `msgid=` names no message kept in that history (never sent there,
/// or already dropped by the bounds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown msgid")]
pub struct UnknownMsgid;

/// Which histories `CHATHISTORY TARGETS` looks at.
#[derive(Debug, Clone, Copy)]
pub enum TargetFilter<'a> {
    /// These channel keys (the channels the asking client may see).
    Channels(&'a [&'a str]),
    /// The conversations of this account key.
    ConversationsOf(&'a str),
    /// Every history.
    All,
}

/// One history in a `TARGETS` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSummary {
    /// The history's key.
    pub key: Arc<str>,
    /// The target as written in its latest message (a channel's name as sent,
    /// or the nick a private message was sent to).
    pub to: String,
    /// The time of its latest message.
    pub latest: u64,
}

#[derive(Debug)]
struct Entry {
    msg: Message,
    size: u32,
}

#[derive(Debug)]
pub(crate) struct History {
    partition: u16,
    /// Absolute index of `entries[0]` (indexes grow by one per message ever
    /// appended, so an index stays valid while its message is kept).
    base: u64,
    entries: VecDeque<Entry>,
    ids: HashMap<String, u64>,
}

impl History {
    fn pop_front(&mut self, live: &mut [u64]) -> bool {
        let Some(e) = self.entries.pop_front() else {
            return false;
        };
        live[usize::from(self.partition)] -= u64::from(e.size);
        if self.ids.get(&e.msg.msgid) == Some(&self.base) {
            self.ids.remove(&e.msg.msgid);
        }
        self.base += 1;
        true
    }

    /// `(end of what is before r, start of what is after r)`, as indexes into
    /// `entries`: a msgid excludes its message from both sides; a timestamp
    /// excludes the messages at exactly that time.
    fn bounds(&self, r: MsgRef<'_>) -> Result<(usize, usize), UnknownMsgid> {
        match r {
            MsgRef::MsgId(id) => {
                let abs = *self.ids.get(id).ok_or(UnknownMsgid)?;
                let i = (abs - self.base) as usize;
                Ok((i, i + 1))
            }
            MsgRef::Time(t) => Ok((
                self.entries.partition_point(|e| e.msg.time < t),
                self.entries.partition_point(|e| e.msg.time <= t),
            )),
        }
    }

    fn range(&self, from: usize, to: usize) -> Vec<&Message> {
        if from >= to {
            return Vec::new();
        }
        self.entries.range(from..to).map(|e| &e.msg).collect()
    }

    /// The first `limit` of `[from, to)`.
    fn first(&self, from: usize, to: usize, limit: usize) -> Vec<&Message> {
        self.range(from, to.min(from.saturating_add(limit)))
    }

    /// The last `limit` of `[from, to)`.
    fn last(&self, from: usize, to: usize, limit: usize) -> Vec<&Message> {
        self.range(from.max(to.saturating_sub(limit)), to)
    }
}

/// Accounts and histories of some partitions.
#[derive(Debug)]
pub(crate) struct Memory {
    pub(crate) limits: HistoryLimits,
    accounts: HashMap<String, (Account, u32)>,
    histories: HashMap<Arc<str>, History>,
    /// Bytes of live records per partition: what a compacted log would hold
    /// after its header.
    pub(crate) live: Vec<u64>,
}

impl Memory {
    pub(crate) fn new(limits: HistoryLimits) -> Memory {
        Memory {
            limits,
            accounts: HashMap::new(),
            histories: HashMap::new(),
            live: vec![0; usize::from(PARTITIONS)],
        }
    }

    /// Applies a record read from a log (`size`: its frame's size).
    pub(crate) fn replay(&mut self, r: Record, size: usize) {
        match r {
            Record::AccountPut(a) => self.put_account(a, size),
            Record::AccountDelete(name) => {
                self.delete_account(&key::account_key(&name));
            }
            Record::Message(m) => {
                self.push_message(m, size);
            }
            Record::CaughtUp(m) => {
                self.insert_message(m, size);
            }
        }
    }

    pub(crate) fn account(&self, key: &str) -> Option<&Account> {
        self.accounts.get(key).map(|(a, _)| a)
    }

    pub(crate) fn accounts(&self) -> impl Iterator<Item = &Account> {
        self.accounts.values().map(|(a, _)| a)
    }

    pub(crate) fn account_count(&self) -> usize {
        self.accounts.len()
    }

    pub(crate) fn put_account(&mut self, a: Account, size: usize) {
        let key = key::account_key(&a.name);
        let p = usize::from(key::partition_of(&key));
        self.live[p] += size as u64;
        if let Some((_, old)) = self.accounts.insert(key, (a, size as u32)) {
            self.live[p] -= u64::from(old);
        }
    }

    pub(crate) fn delete_account(&mut self, key: &str) -> Option<Account> {
        let (a, size) = self.accounts.remove(key)?;
        self.live[usize::from(key::partition_of(key))] -= u64::from(size);
        Some(a)
    }

    /// Appends `m` to its history and applies the bounds (the age limit at the
    /// message's own time). A time earlier than the history's last is raised to
    /// it, so each history is in time order. Returns whether it is kept.
    pub(crate) fn push_message(&mut self, mut m: Message, size: usize) -> bool {
        let max = self.limits.max_for(&m.target);
        if max == 0 {
            return false;
        }
        let cutoff = self.limits.cutoff(m.time);
        let h = match self.histories.get_mut(&m.target) {
            Some(h) => h,
            None => self
                .histories
                .entry(m.target.clone())
                .or_insert_with(|| History {
                    partition: key::partition_of(&m.target),
                    base: 0,
                    entries: VecDeque::new(),
                    ids: HashMap::new(),
                }),
        };
        if let Some(last) = h.entries.back() {
            m.time = m.time.max(last.msg.time);
            // One allocation of the key per history, not per message.
            m.target = last.msg.target.clone();
        }
        let abs = h.base + h.entries.len() as u64;
        h.ids.insert(m.msgid.clone(), abs);
        self.live[usize::from(h.partition)] += size as u64;
        h.entries.push_back(Entry {
            msg: m,
            size: size as u32,
        });
        while h.entries.len() > max {
            h.pop_front(&mut self.live);
        }
        while h.entries.front().is_some_and(|e| e.msg.time < cutoff) {
            h.pop_front(&mut self.live);
        }
        !h.entries.is_empty()
    }

    /// [`Memory::insert_message`] if `caught_up`, else
    /// [`Memory::push_message`].
    pub(crate) fn place_message(&mut self, m: Message, size: usize, caught_up: bool) -> bool {
        if caught_up {
            self.insert_message(m, size)
        } else {
            self.push_message(m, size)
        }
    }

    /// Whether history `key` keeps a message with this msgid.
    pub(crate) fn has_message(&self, key: &str, msgid: &str) -> bool {
        self.histories
            .get(key)
            .is_some_and(|h| h.ids.contains_key(msgid))
    }

    /// Places `m` in its history by its time — after every message of the
    /// same or an earlier time — rather than at the end (a message another
    /// node kept while this one missed it, [`Record::CaughtUp`]), and applies
    /// the bounds: one older than all kept in a full history, or past the
    /// age limit, is not kept. A msgid the history keeps already is not
    /// placed again. Returns whether it is kept.
    pub(crate) fn insert_message(&mut self, m: Message, size: usize) -> bool {
        let at_end = match self.histories.get(&m.target) {
            None => true,
            Some(h) if h.ids.contains_key(&m.msgid) => return false,
            Some(h) => h.entries.back().is_none_or(|e| e.msg.time <= m.time),
        };
        if at_end {
            return self.push_message(m, size);
        }
        let max = self.limits.max_for(&m.target);
        let cutoff = self.limits.cutoff(m.time);
        let Some(h) = self.histories.get_mut(&m.target) else {
            return false;
        };
        if max == 0 || m.time < cutoff {
            return false;
        }
        let at = h.entries.partition_point(|e| e.msg.time <= m.time);
        // The messages after it move one place on.
        for e in h.entries.range(at..) {
            if let Some(abs) = h.ids.get_mut(&e.msg.msgid) {
                *abs += 1;
            }
        }
        let id = m.msgid.clone();
        h.ids.insert(id.clone(), h.base + at as u64);
        self.live[usize::from(h.partition)] += size as u64;
        h.entries.insert(
            at,
            Entry {
                msg: m,
                size: size as u32,
            },
        );
        while h.entries.len() > max {
            h.pop_front(&mut self.live);
        }
        h.ids.contains_key(&id)
    }

    /// Drops every message older than the age limit at `now`, and the bounds
    /// after a change of limits. Returns how many were dropped.
    pub(crate) fn expire(&mut self, now: u64) -> usize {
        let cutoff = self.limits.cutoff(now);
        let limits = self.limits;
        let live = &mut self.live;
        let mut dropped = 0;
        self.histories.retain(|key, h| {
            let max = limits.max_for(key);
            while h.entries.len() > max && h.pop_front(live) {
                dropped += 1;
            }
            while h.entries.front().is_some_and(|e| e.msg.time < cutoff) && h.pop_front(live) {
                dropped += 1;
            }
            !h.entries.is_empty()
        });
        dropped
    }

    pub(crate) fn last_time(&self, key: &str) -> Option<u64> {
        self.histories
            .get(key)
            .and_then(|h| h.entries.back())
            .map(|e| e.msg.time)
    }

    pub(crate) fn history_len(&self, key: &str) -> usize {
        self.histories.get(key).map_or(0, |h| h.entries.len())
    }

    pub(crate) fn message_count(&self) -> usize {
        self.histories.values().map(|h| h.entries.len()).sum()
    }

    /// Encodes every live record of partition `p`: accounts (by key), then each
    /// history in order. What compaction writes.
    pub(crate) fn encode_partition(&self, p: u16, out: &mut Vec<u8>) {
        let mut accounts: Vec<_> = self
            .accounts
            .iter()
            .filter(|(k, _)| key::partition_of(k) == p)
            .collect();
        accounts.sort_by(|a, b| a.0.cmp(b.0));
        for (_, (a, _)) in accounts {
            // Read from a log, so within the size limit.
            let _ = codec::encode_account_put(out, a);
        }
        let mut keys: Vec<_> = self
            .histories
            .iter()
            .filter(|(_, h)| h.partition == p)
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        for k in keys {
            for e in &self.histories[k].entries {
                let _ = codec::encode_message(out, &e.msg);
            }
        }
    }

    /// The history `key`, `None` if there is none. A msgid in `refs` is
    /// unknown if there is no history at all.
    fn history(&self, key: &str, refs: &[MsgRef<'_>]) -> Result<Option<&History>, UnknownMsgid> {
        match self.histories.get(key) {
            Some(h) => Ok(Some(h)),
            None if refs.iter().any(|r| matches!(r, MsgRef::MsgId(_))) => Err(UnknownMsgid),
            None => Ok(None),
        }
    }

    /// `CHATHISTORY LATEST`: the last `limit` messages, only those after
    /// (excluding) `after` if given.
    pub(crate) fn latest(
        &self,
        key: &str,
        after: Option<MsgRef<'_>>,
        limit: usize,
    ) -> Result<Vec<&Message>, UnknownMsgid> {
        let Some(h) = self.history(key, after.as_slice())? else {
            return Ok(Vec::new());
        };
        let from = match after {
            Some(r) => h.bounds(r)?.1,
            None => 0,
        };
        Ok(h.last(from, h.entries.len(), limit))
    }

    /// `CHATHISTORY BEFORE`: the `limit` messages just before (excluding) `r`.
    pub(crate) fn before(
        &self,
        key: &str,
        r: MsgRef<'_>,
        limit: usize,
    ) -> Result<Vec<&Message>, UnknownMsgid> {
        let Some(h) = self.history(key, &[r])? else {
            return Ok(Vec::new());
        };
        Ok(h.last(0, h.bounds(r)?.0, limit))
    }

    /// `CHATHISTORY AFTER`: the `limit` messages just after (excluding) `r`.
    pub(crate) fn after(
        &self,
        key: &str,
        r: MsgRef<'_>,
        limit: usize,
    ) -> Result<Vec<&Message>, UnknownMsgid> {
        let Some(h) = self.history(key, &[r])? else {
            return Ok(Vec::new());
        };
        Ok(h.first(h.bounds(r)?.1, h.entries.len(), limit))
    }

    /// `CHATHISTORY AROUND`: at most `limit` messages around `r`: half before
    /// it (rounded down), the rest from it on — a msgid's own message first,
    /// for a timestamp the messages at or after it — and when one side runs
    /// short the other gets the difference.
    pub(crate) fn around(
        &self,
        key: &str,
        r: MsgRef<'_>,
        limit: usize,
    ) -> Result<Vec<&Message>, UnknownMsgid> {
        let Some(h) = self.history(key, &[r])? else {
            return Ok(Vec::new());
        };
        let split = h.bounds(r)?.0;
        let len = h.entries.len();
        let (have_before, have_after) = (split, len - split);
        let mut take_before = (limit / 2).min(have_before);
        let take_after = (limit - take_before).min(have_after);
        take_before = (limit - take_after).min(have_before);
        Ok(h.range(split - take_before, split + take_after))
    }

    /// `CHATHISTORY BETWEEN`: messages strictly between `a` and `b`, counted from
    /// `a`: the first `limit` after `a` if `a` is the earlier, the last `limit`
    /// before `a` if it is the later.
    pub(crate) fn between(
        &self,
        key: &str,
        a: MsgRef<'_>,
        b: MsgRef<'_>,
        limit: usize,
    ) -> Result<Vec<&Message>, UnknownMsgid> {
        let Some(h) = self.history(key, &[a, b])? else {
            return Ok(Vec::new());
        };
        let (a_end, a_start) = h.bounds(a)?;
        let (b_end, b_start) = h.bounds(b)?;
        Ok(if a_start <= b_end {
            h.first(a_start, b_end, limit)
        } else {
            h.last(b_start, a_end, limit)
        })
    }

    /// `CHATHISTORY TARGETS` on this memory's histories: those selected by
    /// `filter` whose latest message is strictly between `a` and `b`, counted
    /// from `a` (see [`select_targets`]).
    pub(crate) fn targets(
        &self,
        filter: TargetFilter<'_>,
        a: u64,
        b: u64,
        limit: usize,
    ) -> Vec<TargetSummary> {
        let summary = |k: &Arc<str>, h: &History| {
            h.entries.back().map(|e| TargetSummary {
                key: k.clone(),
                to: e.msg.to.clone(),
                latest: e.msg.time,
            })
        };
        let (lo, hi) = (a.min(b), a.max(b));
        let inside = |s: &TargetSummary| lo < s.latest && s.latest < hi;
        let found: Vec<TargetSummary> = match filter {
            TargetFilter::Channels(keys) => keys
                .iter()
                .filter_map(|k| self.histories.get_key_value(*k))
                .filter_map(|(k, h)| summary(k, h))
                .filter(inside)
                .collect(),
            TargetFilter::ConversationsOf(account) => self
                .histories
                .iter()
                .filter(|(k, _)| key::conversation_peer(k, account).is_some())
                .filter_map(|(k, h)| summary(k, h))
                .filter(inside)
                .collect(),
            TargetFilter::All => self
                .histories
                .iter()
                .filter_map(|(k, h)| summary(k, h))
                .filter(inside)
                .collect(),
        };
        select_targets(found, a, b, limit)
    }
}

/// The `TARGETS` window over summaries gathered from anywhere (several shards'
/// answers): those whose latest message is strictly between `a` and `b`, in
/// ascending time order (ties by key), at most `limit` counted from `a` — the
/// earliest if `a < b`, the latest if `a > b` (as `BETWEEN` counts).
pub fn select_targets(
    mut found: Vec<TargetSummary>,
    a: u64,
    b: u64,
    limit: usize,
) -> Vec<TargetSummary> {
    let (lo, hi) = (a.min(b), a.max(b));
    found.retain(|s| lo < s.latest && s.latest < hi);
    found.sort_by(|x, y| x.latest.cmp(&y.latest).then_with(|| x.key.cmp(&y.key)));
    found.dedup_by(|x, y| x.key == y.key);
    if a <= b {
        found.truncate(limit);
    } else {
        let skip = found.len().saturating_sub(limit);
        found.drain(..skip);
    }
    found
}
