//! `MONITOR` (IRCv3): a client asks to be told when nicks come online and go
//! offline, across every shard.
//!
//! # Where the watch lists live
//!
//! A nick's state — held, and visible once its holder completed registration —
//! lives on the nick's owner shard ([`crate::casemap::owner_of`]), so the
//! watchers of a nick live there too: each owner keeps [`Watches`], casefolded
//! nick → the [`ClientRef`]s (shard, client id) watching it. The watcher's own
//! shard keeps the client's list ([`Watching`]: casefolded nick → the nick as
//! the client wrote it) for `MONITOR L`, the per-client limit, the clean-up when
//! it leaves, and to drop a notification that crossed a `MONITOR -`.
//!
//! # The protocol
//!
//! - `MONITOR + a,b`: the watcher's shard checks each target (a valid nick)
//!   against its list and the limit (`[limits] monitor`, advertised as
//!   `MONITOR=<limit>`; 0 turns MONITOR off): the targets past the limit are
//!   answered with one 734 ERR_MONLISTFULL and not added. The others go in its
//!   list and, grouped by owner, as one [`Request::MonitorAdd`] per owner. The
//!   owner adds the watcher — unless its shard-wide total
//!   (`[limits] monitor_shard_total`) is reached: those targets come back in
//!   [`crate::mail::ReplyBody::Monitored`]'s `refused`, and the watcher's shard drops them
//!   from the list and sends 734 for them — and answers with the current state
//!   of each: 730 RPL_MONONLINE (the nick as its holder spells it) or 731
//!   RPL_MONOFFLINE. The client's input is parked until every owner answered.
//! - `MONITOR - a,b` and `MONITOR C`: removed from the list at once, and
//!   [`Request::MonitorDel`] to each owner concerned (no output).
//! - `MONITOR L`: 732 RPL_MONLIST lines from the local list, then 733.
//! - `MONITOR S`: [`Request::MonitorStatus`] to each owner concerned, which
//!   answers 730/731 from its nicks without changing anything.
//! - Changes: when a nick becomes visible at its owner (the holder completes
//!   registration, or a registered client claims it by NICK), the owner sends
//!   730; when a visible nick is released (NICK away from it, QUIT, a dropped
//!   connection), 731. One [`ChatMsg::Monitor`] goes to each shard with
//!   watchers, listing them; that shard sends the numeric to each one that is
//!   still connected and still has the nick in its list. A nick change is a
//!   claim of the new nick (730 from its owner) and then a release of the old
//!   one (731 from its owner).
//! - The watcher leaves: its shard posts [`Request::MonitorDel`] for its whole
//!   list to each owner concerned, after its other requests (like the release
//!   of its nick), so no owner keeps it. Client ids are never reused, so a
//!   notification already in flight misses; a new connection with the same
//!   nick starts with an empty list.
//!
//! # Ordering
//!
//! The owner adds the watcher and reads the nick's state in one step, and its
//! answer and its later notifications travel the same FIFO queue to the
//! watcher's shard: a client that sends `MONITOR +` sees the state at that
//! moment exactly once, then every change after it, in the owner's order.
//!
//! # Bounded memory
//!
//! A client's list holds at most `[limits] monitor` nicks (nothing is allocated
//! for a client that never uses MONITOR); an owner holds at most
//! `[limits] monitor_shard_total` (watcher, nick) pairs.

use std::collections::{BTreeMap, HashMap, HashSet};

use shardline::{Ctx, ShardId};

use crate::{
    casemap::{casefold, owner_of_key, valid_nick, NameKey},
    commands::Flow,
    mail::{ChatMsg, ClientRef, Numeric, Request},
    reply::{code::*, truncate},
    shard::{ChatShard, Outbox},
};

/// A client's monitor list, on its shard: casefolded nick → the nick as the
/// client wrote it.
pub type Watching = BTreeMap<NameKey, String>;

/// Bytes of nicks one 730/731/732/734 line lists (the rest go in more lines).
const LIST_BYTES: usize = 400;

/// The watchers of the nicks one shard owns.
#[derive(Debug, Default)]
pub struct Watches {
    by_nick: HashMap<NameKey, HashSet<ClientRef>>,
    total: usize,
}

impl Watches {
    /// Makes `who` a watcher of `key` unless `cap` (watchers of every nick
    /// together) is reached. Returns whether it watches it now.
    pub fn add(&mut self, key: NameKey, who: ClientRef, cap: usize) -> bool {
        if self.by_nick.get(&key).is_some_and(|set| set.contains(&who)) {
            return true;
        }
        if self.total >= cap {
            return false;
        }
        self.by_nick.entry(key).or_default().insert(who);
        self.total += 1;
        true
    }

    /// `who` no longer watches `key`.
    pub fn remove(&mut self, key: &str, who: ClientRef) {
        let Some(set) = self.by_nick.get_mut(key) else {
            return;
        };
        if set.remove(&who) {
            self.total -= 1;
        }
        if set.is_empty() {
            self.by_nick.remove(key);
        }
    }

    /// Who watches `key`, in no particular order.
    pub fn watchers(&self, key: &str) -> impl Iterator<Item = ClientRef> + '_ {
        self.by_nick.get(key).into_iter().flatten().copied()
    }

    /// (watcher, nick) pairs held.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Tells every watcher of `key` that it is now online (730) or offline
    /// (731) as `nick`: one [`ChatMsg::Monitor`] per shard with watchers.
    pub fn notify(
        &self,
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        key: &NameKey,
        nick: &str,
        online: bool,
    ) {
        let mut by_shard: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for w in self.watchers(key) {
            by_shard.entry(w.shard).or_default().push(w.id);
        }
        for (s, ids) in by_shard {
            let msg = ChatMsg::Monitor {
                ids,
                key: key.clone(),
                nick: nick.to_string(),
                online,
            };
            outbox.post(ctx, ShardId(s), msg);
        }
    }
}

/// Numerics `code` listing `items` comma-separated, as many lines as needed to
/// keep each list within `LIST_BYTES` (400); `before` goes before the list in each.
pub fn listed<S: AsRef<str>>(
    code: u16,
    before: &[&str],
    items: &[S],
    after: Option<&str>,
) -> Vec<Numeric> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let flush = |cur: &mut String, out: &mut Vec<Numeric>| {
        if cur.is_empty() {
            return;
        }
        let mut params: Vec<String> = before.iter().map(|s| s.to_string()).collect();
        params.push(std::mem::take(cur));
        params.extend(after.map(str::to_string));
        out.push(Numeric { code, params });
    };
    for item in items {
        let item = item.as_ref();
        if !cur.is_empty() && cur.len() + 1 + item.len() > LIST_BYTES {
            flush(&mut cur, &mut out);
        }
        if !cur.is_empty() {
            cur.push(',');
        }
        cur.push_str(item);
    }
    flush(&mut cur, &mut out);
    out
}

/// 734 for `targets` (as the client wrote them).
fn list_full(limit: usize, targets: &[String]) -> Vec<Numeric> {
    let limit = limit.to_string();
    listed(
        ERR_MONLISTFULL,
        &[&limit],
        targets,
        Some("Monitor list is full."),
    )
}

/// The owner's answer about `nicks`: 730 for those held by a registered client
/// (as `holder` spells them), 731 for the others (as asked).
pub fn status(
    nicks: &[(NameKey, String)],
    holder: impl Fn(&str) -> Option<String>,
) -> Vec<Numeric> {
    let mut on = Vec::new();
    let mut off = Vec::new();
    for (key, asked) in nicks {
        match holder(key) {
            Some(nick) => on.push(nick),
            None => off.push(asked.clone()),
        }
    }
    let mut nums = listed(RPL_MONONLINE, &[], &on, None);
    nums.extend(listed(RPL_MONOFFLINE, &[], &off, None));
    nums
}

/// Groups `keys` by their owner shard.
fn by_owner<T: Clone>(items: &[(NameKey, T)], shards: usize) -> Vec<(usize, Vec<(NameKey, T)>)> {
    let mut groups: Vec<(usize, Vec<(NameKey, T)>)> = Vec::new();
    for (key, v) in items {
        let owner = owner_of_key(key, shards);
        match groups.iter_mut().find(|(o, _)| *o == owner) {
            Some((_, list)) => list.push((key.clone(), v.clone())),
            None => groups.push((owner, vec![(key.clone(), v.clone())])),
        }
    }
    groups
}

impl ChatShard {
    /// `MONITOR + targets`, `- targets`, `C`, `L`, `S`.
    pub(crate) fn cmd_monitor(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        p: &[&str],
    ) -> Flow {
        let Some(op) = p.first() else {
            return self.need_more_params(ctx, id, "MONITOR");
        };
        let targets = || -> Vec<&str> {
            p.get(1)
                .map(|t| t.split(',').filter(|n| !n.is_empty()).collect())
                .unwrap_or_default()
        };
        match *op {
            "+" | "-" if p.len() < 2 => self.need_more_params(ctx, id, "MONITOR"),
            "+" => self.monitor_add(ctx, id, &targets()),
            "-" => {
                let Some(c) = self.clients.get_mut(&id) else {
                    return Flow::Next;
                };
                let mut gone = Vec::new();
                if let Some(list) = c.monitor.as_mut() {
                    for t in targets() {
                        let key = casefold(t);
                        if let Some((k, _)) = list.remove_entry(key.as_str()) {
                            gone.push((k, ()));
                        }
                    }
                }
                self.monitor_drop(ctx, id, &gone)
            }
            "C" | "c" => {
                let Some(c) = self.clients.get_mut(&id) else {
                    return Flow::Next;
                };
                let gone: Vec<(NameKey, ())> = c
                    .monitor
                    .take()
                    .map(|l| l.into_keys().map(|k| (k, ())).collect())
                    .unwrap_or_default();
                self.monitor_drop(ctx, id, &gone)
            }
            "L" | "l" => {
                let Some(c) = self.clients.get(&id) else {
                    return Flow::Next;
                };
                let nicks: Vec<&String> = c.monitor.iter().flat_map(|l| l.values()).collect();
                let mut nums = listed(RPL_MONLIST, &[], &nicks, None);
                nums.push(Numeric::new(RPL_ENDOFMONLIST, ["End of MONITOR list"]));
                self.send_numerics(ctx, id, &nums);
                Flow::Next
            }
            "S" | "s" => {
                let Some(c) = self.clients.get(&id) else {
                    return Flow::Next;
                };
                let all: Vec<(NameKey, String)> = c
                    .monitor
                    .iter()
                    .flat_map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())))
                    .collect();
                self.request_each_owner(ctx, id, &all, |nicks| Request::MonitorStatus { nicks })
            }
            other => {
                let shown = truncate(other, 32).to_string();
                self.numeric(
                    ctx,
                    id,
                    ERR_UNKNOWNERROR,
                    &[
                        "MONITOR",
                        &shown,
                        "Unknown MONITOR subcommand (use + - C L S)",
                    ],
                );
                Flow::Next
            }
        }
    }

    fn monitor_add(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, targets: &[&str]) -> Flow {
        let limit = self.info.config.limits.monitor;
        let nicklen = self.info.config.limits.nicklen;
        let Some(c) = self.clients.get_mut(&id) else {
            return Flow::Next;
        };
        let list = c.monitor.get_or_insert_with(Box::default);
        let mut add: Vec<(NameKey, String)> = Vec::new();
        let mut full: Vec<String> = Vec::new();
        let mut invalid: Vec<String> = Vec::new();
        for &t in targets {
            if !valid_nick(t, nicklen) {
                invalid.push(truncate(t, 64).to_string());
                continue;
            }
            let key: NameKey = casefold(t).into();
            if add.iter().any(|(k, _)| *k == key) {
                continue;
            }
            if !list.contains_key(&key) {
                if list.len() >= limit {
                    full.push(t.to_string());
                    continue;
                }
                list.insert(key.clone(), t.to_string());
            }
            // Already listed: asked again, its state is answered again.
            add.push((key, t.to_string()));
        }
        if list.is_empty() {
            c.monitor = None;
        }
        for nick in invalid {
            self.numeric(
                ctx,
                id,
                ERR_ERRONEUSNICKNAME,
                &[&nick, "Erroneous nickname"],
            );
        }
        if !full.is_empty() {
            self.send_numerics(ctx, id, &list_full(limit, &full));
        }
        self.request_each_owner(ctx, id, &add, |nicks| Request::MonitorAdd { nicks })
    }

    /// Sends client `id`'s request about `items` to each owner of some of them
    /// (one request per owner, made by `req` from its share); parks the client
    /// until they answer, or goes on when there was nothing to ask (or a
    /// request was refused: the client was told).
    fn request_each_owner<T: Clone>(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        items: &[(NameKey, T)],
        req: impl Fn(Vec<(NameKey, T)>) -> Request,
    ) -> Flow {
        let mut parked = false;
        for (owner, share) in by_owner(items, self.shards) {
            if !self.request(ctx, id, owner, req(share)) {
                return Flow::Next;
            }
            parked = true;
        }
        if parked {
            Flow::Park
        } else {
            Flow::Next
        }
    }

    /// Tells the owners of `gone` (removed from the client's list) to forget it.
    fn monitor_drop(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        gone: &[(NameKey, ())],
    ) -> Flow {
        self.request_each_owner(ctx, id, gone, |keys| Request::MonitorDel {
            keys: keys.into_iter().map(|(k, ())| k).collect(),
        })
    }

    /// An owner answered `MONITOR +`: the targets it `refused` (its shard-wide
    /// total is reached) leave the list and draw 734; then the states.
    pub(crate) fn monitored(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        nums: Vec<Numeric>,
        refused: Vec<(NameKey, String)>,
    ) {
        let limit = self.info.config.limits.monitor;
        if !refused.is_empty() {
            if let Some(c) = self.clients.get_mut(&id) {
                if let Some(list) = c.monitor.as_mut() {
                    for (k, _) in &refused {
                        list.remove(k);
                    }
                    if list.is_empty() {
                        c.monitor = None;
                    }
                }
            }
            let shown: Vec<String> = refused.into_iter().map(|(_, n)| n).collect();
            self.send_numerics(ctx, id, &list_full(limit, &shown));
        }
        self.send_numerics(ctx, id, &nums);
    }

    /// An owner says nick `key` is now online (or offline) as `nick`: 730/731
    /// to each of `ids` still watching it. Not a response to any command of
    /// theirs (sent outside labeled responses).
    pub(crate) fn monitor_event(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        ids: &[u64],
        key: &str,
        nick: &str,
        online: bool,
    ) {
        let code = if online {
            RPL_MONONLINE
        } else {
            RPL_MONOFFLINE
        };
        let server = self.info.name();
        for id in ids {
            let Some(c) = self
                .clients
                .get(id)
                .filter(|c| c.alive && c.monitor.as_ref().is_some_and(|l| l.contains_key(key)))
            else {
                continue;
            };
            let mut out = Vec::with_capacity(64);
            crate::reply::write_numeric(&mut out, server, code, c.nick_or_star(), &[nick]);
            let _ = crate::websocket::send(ctx, c, &out);
        }
    }

    /// Client `who` is leaving: its owners forget its list (not counted: nobody
    /// waits for it).
    pub(crate) fn monitor_leave(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        who: ClientRef,
        list: Option<Box<Watching>>,
    ) {
        let Some(list) = list else {
            return;
        };
        let all: Vec<(NameKey, ())> = list.into_keys().map(|k| (k, ())).collect();
        for (owner, keys) in by_owner(&all, self.shards) {
            let keys = keys.into_iter().map(|(k, ())| k).collect();
            let req = Request::MonitorDel { keys };
            self.outbox
                .post(ctx, ShardId(owner), ChatMsg::Request { from: who, req });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(id: u64) -> ClientRef {
        ClientRef { shard: 0, id }
    }

    #[test]
    fn watches_are_counted_and_capped() {
        let mut w = Watches::default();
        let a: NameKey = "alice".into();
        assert!(w.add(a.clone(), r(1), 2));
        assert!(w.add(a.clone(), r(1), 2), "again: no new entry");
        assert_eq!(w.total(), 1);
        assert!(w.add(a.clone(), r(2), 2));
        assert!(!w.add("bob".into(), r(1), 2), "cap reached");
        let mut both: Vec<ClientRef> = w.watchers("alice").collect();
        both.sort();
        assert_eq!(both, [r(1), r(2)]);
        w.remove("alice", r(1));
        w.remove("alice", r(1));
        assert_eq!(w.total(), 1);
        w.remove("alice", r(2));
        assert_eq!(w.total(), 0);
        assert!(w.watchers("alice").next().is_none() && w.by_nick.is_empty());
    }

    #[test]
    fn limits_are_configured() {
        use crate::config::Config;
        let c = Config::from_toml("").expect("defaults");
        assert_eq!(
            (c.limits.monitor, c.limits.monitor_shard_total),
            (100, 1_000_000)
        );
        let c = Config::from_toml("[limits]\nmonitor = 0\nmonitor_shard_total = 0\n")
            .expect("MONITOR off needs no total");
        assert_eq!(c.limits.monitor, 0);
        assert!(Config::from_toml("[limits]\nmonitor_shard_total = 0\n").is_err());
    }

    #[test]
    fn long_lists_are_split() {
        let nicks: Vec<String> = (0..100).map(|i| format!("nick{i:05}")).collect();
        let nums = listed(RPL_MONOFFLINE, &[], &nicks, None);
        assert!(nums.len() > 1);
        let mut all = Vec::new();
        for n in &nums {
            assert!(n.params[0].len() <= LIST_BYTES);
            all.extend(n.params[0].split(',').map(str::to_string));
        }
        assert_eq!(all, nicks);
        assert!(listed::<String>(RPL_MONONLINE, &[], &[], None).is_empty());
        let full = list_full(5, &["a".into(), "b".into()]);
        assert_eq!(full[0].params, ["5", "a,b", "Monitor list is full."]);
    }
}
