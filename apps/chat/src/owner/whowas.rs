//! WHOWAS on the nick's owner: who held a nick this shard owns and gave it up
//! (QUIT, a closed connection, a NICK change, a holder found gone when
//! another client claimed the nick), newest first, bounded per shard
//! (`[limits] whowas`) and per nick (`[limits] whowas_per_nick`), oldest
//! dropped first.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use crate::casemap::NameKey;

/// One holder that left a nick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Was {
    /// The nick as it was spelt.
    pub nick: String,
    /// Its user name.
    pub user: String,
    /// Its host.
    pub host: String,
    /// Its real name.
    pub realname: String,
    /// The account it was logged in to.
    pub account: Option<Arc<str>>,
    /// When it left the nick, Unix milliseconds.
    pub when_ms: u64,
}

/// The bounded history of the nicks one shard owns.
#[derive(Debug, Default)]
pub struct WhowasLog {
    /// Per nick, oldest first, each with its sequence number.
    by_nick: HashMap<NameKey, VecDeque<(u64, Was)>>,
    /// Every entry in the order it came, to drop the oldest; entries already
    /// dropped for their nick's own bound are skipped (and compacted away).
    order: VecDeque<(NameKey, u64)>,
    /// Entries held.
    live: usize,
    seq: u64,
}

impl WhowasLog {
    /// Notes that `was` left nick `key`, keeping at most `per_nick` entries
    /// for it and `limit` in all.
    pub fn push(&mut self, key: NameKey, was: Was, limit: usize, per_nick: usize) {
        if limit == 0 {
            return;
        }
        self.seq += 1;
        let list = self.by_nick.entry(key.clone()).or_default();
        list.push_back((self.seq, was));
        self.live += 1;
        while list.len() > per_nick.max(1) {
            list.pop_front();
            self.live -= 1;
        }
        self.order.push_back((key, self.seq));
        while self.live > limit {
            let Some((k, seq)) = self.order.pop_front() else {
                break;
            };
            let Some(list) = self.by_nick.get_mut(&k) else {
                continue;
            };
            if list.front().is_some_and(|(s, _)| *s == seq) {
                list.pop_front();
                self.live -= 1;
                if list.is_empty() {
                    self.by_nick.remove(&k);
                }
            }
        }
        if self.order.len() > 2 * limit + 16 {
            // Mostly entries a nick's own bound dropped: keep the live ones.
            let by_nick = &self.by_nick;
            self.order.retain(|(k, seq)| {
                by_nick
                    .get(k)
                    .is_some_and(|l| l.iter().any(|(s, _)| s == seq))
            });
        }
    }

    /// Up to `count` entries for nick `key` (all with `None`), newest first.
    pub fn get(&self, key: &str, count: Option<usize>) -> Vec<&Was> {
        let Some(list) = self.by_nick.get(key) else {
            return Vec::new();
        };
        let n = count.unwrap_or(usize::MAX);
        list.iter().rev().take(n).map(|(_, w)| w).collect()
    }

    /// Entries held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn was(nick: &str, n: u64) -> Was {
        Was {
            nick: nick.into(),
            user: "~u".into(),
            host: "h".into(),
            realname: format!("r{n}"),
            account: None,
            when_ms: n,
        }
    }

    #[test]
    fn newest_first_and_bounded_per_nick() {
        let mut log = WhowasLog::default();
        for n in 0..5 {
            log.push("a".into(), was("A", n), 100, 3);
        }
        let got: Vec<u64> = log.get("a", None).iter().map(|w| w.when_ms).collect();
        assert_eq!(got, [4, 3, 2]);
        let got: Vec<u64> = log.get("a", Some(1)).iter().map(|w| w.when_ms).collect();
        assert_eq!(got, [4]);
        assert!(log.get("b", None).is_empty());
        assert_eq!(log.len(), 3);
    }

    #[test]
    fn the_oldest_go_first_past_the_shard_limit() {
        let mut log = WhowasLog::default();
        for n in 0..10 {
            log.push(format!("n{n}").as_str().into(), was("x", n), 4, 10);
        }
        assert_eq!(log.len(), 4);
        assert!(log.get("n5", None).is_empty());
        assert_eq!(log.get("n6", None).len(), 1);
        // Churn on one nick keeps the order list bounded too.
        for n in 0..10_000 {
            log.push("busy".into(), was("busy", n), 4, 2);
        }
        assert_eq!(log.len(), 4);
        assert!(log.order.len() <= 2 * 4 + 16, "{}", log.order.len());
        assert_eq!(log.get("busy", None).len(), 2);
        assert_eq!(log.get("n9", None).len(), 1);
        // Off.
        let mut off = WhowasLog::default();
        off.push("a".into(), was("a", 1), 0, 10);
        assert!(off.get("a", None).is_empty());
    }
}
