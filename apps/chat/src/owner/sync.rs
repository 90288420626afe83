//! Resync of other nodes' members ([`crate::cluster`], "Resync"): a node
//! that starts, or whose subscriber comes back, asks every other node for
//! its members of each partition this shard owns, through that partition's
//! engine channel, so the answers are ordered with the channels' events.
//!
//! - The asker's own ask coming back marks the point of the order the
//!   answers describe: from there on it notes which (node, channel, nick)
//!   it saw an event of ([`PartitionSync::touched`]).
//! - Each other node, at the ask, publishes, for each of the partition's
//!   channels it has members in, the channel's state ([`Event::SyncChannel`]:
//!   modes, bans, topic) and its own members ([`Event::SyncMembers`], at most
//!   [`MEMBERS_PER_EVENT`] an event), then [`Event::SyncEnd`]. Its events
//!   published before it saw the ask can still come between the ask and the
//!   answer, but never after the answer (one owner, one command link).
//! - At a node's end, its members as answered replace what the asker had
//!   of that node in those channels, except the ones touched since the ask
//!   (their events are newer). A member it did not know is shown to the
//!   local members as a JOIN, one it knew but the answer lacks as a PART.
//! - The first answer's state of a channel is taken, but for the topic or
//!   the modes if a TOPIC or MODE of the channel came since the ask (newer;
//!   the other part is still taken), and `+s` where this node has members
//!   (their shards keep it in their views). Every node applies the same
//!   events, so every answer has the same state.
//!
//! A node that was away may also have missed the asks of others, and they
//! its events: an ask made on coming back has `again` set, and each node
//! that answers it asks in turn (without `again`, so it stops there).
//! Whichever of two nodes came back last asks while the other is there.
//!
//! An ask is forgotten after [`SYNC_WINDOW`] (a node that never answers).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use shardline::Ctx;

use super::{
    channel::{delivery, Ban, Channel, Modes, Topic},
    cluster::{remote_leaves, RemoteMember, NOBODY},
    Owner,
};
use crate::{
    casemap::{casefold, NameKey},
    cluster::events::Event,
    mail::{ClientRef, Membership, Outgoing},
    reply::line,
    shard::{ChatShard, Outbox},
    store::{partition_of, shard_of_partition, PARTITIONS},
};

/// How long an ask waits for answers.
const SYNC_WINDOW: Duration = Duration::from_secs(30);
/// How long at most a JOIN of a channel unknown here makes nobody an
/// operator while answers are awaited (a node that never answers).
const SYNC_PENDING: Duration = Duration::from_secs(5);
/// The most members in one answer event.
const MEMBERS_PER_EVENT: usize = 100;
/// The most answered members kept per ask before its end (then the ask
/// is given up: a partition with more is not resynced).
const MAX_ANSWERED: usize = 200_000;

/// One partition's ask, on the asker.
#[derive(Debug)]
pub(super) struct PartitionSync {
    /// The ask's token (answers to older asks are ignored).
    token: u64,
    /// The ask came back: answers describe the order from here.
    started: bool,
    until: Instant,
    /// (node, channel, nick) of other nodes' membership events seen since
    /// the ask came back: newer than any answer.
    touched: HashSet<(Arc<str>, NameKey, NameKey)>,
    /// Answers under way, by node.
    answers: HashMap<Arc<str>, Vec<(String, RemoteMember)>>,
    answered: usize,
    /// Channels whose topic (`true`) or modes (`false`) changed since the
    /// ask came back: an answer's older state is not applied to them.
    state_touched: HashSet<(NameKey, bool)>,
    /// Channels whose state an answer already gave.
    state_given: HashSet<NameKey>,
    /// When it was asked.
    asked: Instant,
    /// The nodes whose answer ended.
    ended: HashSet<Arc<str>>,
}

impl Owner {
    /// The engine became live for this shard: asks the other nodes for
    /// their members of each partition it owns.
    pub(crate) fn sync_ask(&mut self, shards: usize, me: usize) {
        for p in (0..PARTITIONS).filter(|p| shard_of_partition(*p, shards) == me) {
            self.sync_ask_one(p, true);
        }
    }

    /// Asks for `partition` (`again`: the others ask in turn); a new ask
    /// replaces the one under way.
    fn sync_ask_one(&mut self, partition: u16, again: bool) {
        let node = self.node.clone();
        self.claim_seq += 1;
        let token = self.claim_seq;
        self.syncs.insert(
            partition,
            PartitionSync {
                token,
                started: false,
                until: Instant::now() + SYNC_WINDOW,
                touched: HashSet::new(),
                answers: HashMap::new(),
                answered: 0,
                state_touched: HashSet::new(),
                state_given: HashSet::new(),
                asked: Instant::now(),
                ended: HashSet::new(),
            },
        );
        let ask = Event::SyncAsk { partition, again };
        self.publish_on(&node, token, partition, ask);
    }

    /// A sync event (`SyncAsk`, `SyncMembers`, `SyncEnd`) from `origin`.
    pub(super) fn sync_event(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        node: &str,
        origin: Arc<str>,
        token: u64,
        event: Event,
    ) {
        match event {
            Event::SyncAsk { partition, .. } if &*origin == node => {
                if let Some(s) = self.syncs.get_mut(&partition) {
                    if s.token == token {
                        s.started = true;
                    }
                }
            }
            Event::SyncAsk { partition, again } => {
                if partition >= PARTITIONS {
                    return;
                }
                self.sync_answer(node, &origin, token, partition);
                if again {
                    // It was away: what it did meanwhile may be missing here.
                    self.sync_ask_one(partition, false);
                }
            }
            Event::SyncMembers {
                to_node,
                chan,
                members,
            } if to_node == node => {
                let p = partition_of(&casefold(&chan));
                let Some(s) = self.syncs.get_mut(&p) else {
                    return;
                };
                if s.token != token || !s.started {
                    return;
                }
                s.answered += members.len();
                if s.answered > MAX_ANSWERED {
                    tracing::warn!(partition = p, node = %origin, "cluster: resync answer too large; given up");
                    self.syncs.remove(&p);
                    return;
                }
                let list = s.answers.entry(origin).or_default();
                for (mask, account, quit_key, flags) in members {
                    let m = RemoteMember {
                        mask,
                        account,
                        quit_key,
                        op: flags & 1 != 0,
                        voice: flags & 2 != 0,
                    };
                    list.push((chan.clone(), m));
                }
            }
            Event::SyncChannel {
                to_node,
                chan,
                flags,
                key,
                limit,
                bans,
                topic,
            } if to_node == node => {
                let ckey: NameKey = casefold(&chan).into();
                let p = partition_of(&ckey);
                let Some(s) = self.syncs.get_mut(&p) else {
                    return;
                };
                if s.token != token || !s.started || !s.state_given.insert(ckey.clone()) {
                    return;
                }
                let (topic_new, modes_new) = (
                    !s.state_touched.contains(&(ckey.clone(), true)),
                    !s.state_touched.contains(&(ckey.clone(), false)),
                );
                let shards = ctx.shards();
                let ch = self
                    .chans
                    .entry(ckey)
                    .or_insert_with(|| Channel::new(chan, shards));
                if topic_new {
                    ch.topic = topic.map(|(setter, time, text)| Topic { text, setter, time });
                }
                if modes_new {
                    let m = &mut ch.modes;
                    // +s is in the views of this node's members' shards:
                    // left as it is when there are any.
                    let secret = if ch.members.is_empty() {
                        flags.contains('s')
                    } else {
                        m.secret
                    };
                    *m = Modes {
                        invite_only: flags.contains('i'),
                        moderated: flags.contains('m'),
                        no_external: flags.contains('n'),
                        secret,
                        topic_lock: flags.contains('t'),
                        key,
                        limit: (limit > 0).then_some(limit),
                    };
                    ch.bans = bans
                        .into_iter()
                        .map(|mask| Ban {
                            folded: casefold(&mask).to_string(),
                            mask,
                            setter: origin.to_string(),
                            time: crate::clock::now_secs(),
                        })
                        .collect();
                }
            }
            Event::SyncEnd { to_node, partition } if to_node == node => {
                let Some(s) = self.syncs.get_mut(&partition) else {
                    return;
                };
                if s.token != token || !s.started {
                    return;
                }
                s.ended.insert(origin.clone());
                let answer = s.answers.remove(&origin).unwrap_or_default();
                let touched: HashSet<(NameKey, NameKey)> = s
                    .touched
                    .iter()
                    .filter(|(o, _, _)| *o == origin)
                    .map(|(_, c, n)| (c.clone(), n.clone()))
                    .collect();
                self.sync_apply(ctx, outbox, origin, partition, answer, &touched);
            }
            _ => {}
        }
    }

    /// Another node's membership event of (`origin`, `chan`, `nick`) came:
    /// newer than any answer still to come from it.
    pub(super) fn sync_touch(&mut self, origin: &Arc<str>, chan: &NameKey, nick: &NameKey) {
        if self.syncs.is_empty() {
            return;
        }
        let p = partition_of(chan);
        let Some(s) = self.syncs.get_mut(&p) else {
            return;
        };
        if Instant::now() >= s.until {
            self.syncs.remove(&p);
            return;
        }
        if s.started {
            s.touched
                .insert((origin.clone(), chan.clone(), nick.clone()));
        }
    }

    /// Whether this shard is still learning the other nodes' channels of
    /// `partition`: its ask is under way, not every node it sees answered
    /// it, and it is younger than [`SYNC_PENDING`].
    pub(super) fn sync_pending(&self, partition: u16) -> bool {
        self.syncs
            .get(&partition)
            .is_some_and(|s| s.ended.len() < self.other_nodes && s.asked.elapsed() < SYNC_PENDING)
    }

    /// A TOPIC (`topic`) or MODE event of `chan` came (any node's, this
    /// one's included): newer than the state any answer still to come has.
    pub(super) fn sync_touch_state(&mut self, chan: &str, topic: bool) {
        let ckey: NameKey = casefold(chan).into();
        if let Some(s) = self.syncs.get_mut(&partition_of(&ckey)) {
            if s.started {
                s.state_touched.insert((ckey, topic));
            }
        }
    }

    /// Answers `asker`'s ask `token`: this node's members of the channels of
    /// `partition` (each channel's state first), then the end.
    fn sync_answer(&mut self, node: &str, asker: &str, token: u64, partition: u16) {
        let mut events = Vec::new();
        for (ckey, ch) in &self.chans {
            if partition_of(ckey) != partition || ch.members.is_empty() {
                continue;
            }
            let all: Vec<(String, Option<String>, u64, u8)> = ch
                .members
                .iter()
                .map(|(who, m)| {
                    (
                        format!("{}!{}", m.nick, m.userhost),
                        m.account.as_deref().map(str::to_string),
                        self.quit_key(*who),
                        u8::from(m.op) | (u8::from(m.voice) << 1),
                    )
                })
                .collect();
            let m = &ch.modes;
            events.push(Event::SyncChannel {
                to_node: asker.to_string(),
                chan: ch.name.clone(),
                flags: m.flag_letters(),
                key: m.key.clone(),
                limit: m.limit.unwrap_or(0),
                bans: ch.bans.iter().map(|b| b.mask.clone()).collect(),
                topic: ch
                    .topic
                    .as_ref()
                    .map(|t| (t.setter.clone(), t.time, t.text.clone())),
            });
            for chunk in all.chunks(MEMBERS_PER_EVENT) {
                events.push(Event::SyncMembers {
                    to_node: asker.to_string(),
                    chan: ch.name.clone(),
                    members: chunk.to_vec(),
                });
            }
        }
        events.push(Event::SyncEnd {
            to_node: asker.to_string(),
            partition,
        });
        for e in events {
            self.publish_on(node, token, partition, e);
        }
    }

    /// Node `origin`'s answer for `partition` is complete: its members
    /// there are `answer`, but for those `touched` since the ask.
    fn sync_apply(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        origin: Arc<str>,
        partition: u16,
        answer: Vec<(String, RemoteMember)>,
        touched: &HashSet<(NameKey, NameKey)>,
    ) {
        let shards = ctx.shards();
        let nobody = ClientRef {
            shard: ctx.shard_id().0,
            id: NOBODY,
        };
        let mut listed: HashSet<(NameKey, NameKey)> = HashSet::new();
        for (chan, member) in answer {
            let ckey: NameKey = casefold(&chan).into();
            let nick: NameKey = casefold(member.nick()).into();
            let key = (ckey.clone(), nick.clone());
            if touched.contains(&key) {
                continue;
            }
            listed.insert(key);
            let ch = self
                .chans
                .entry(ckey.clone())
                .or_insert_with(|| Channel::new(chan, shards));
            let rkey = (origin.clone(), nick);
            if let Some(known) = ch.remote.get_mut(&rkey) {
                *known = member;
                continue;
            }
            // Someone it did not know of: its JOIN, late.
            let mut out = Outgoing::new(line(&member.mask, "JOIN", &[&ch.name], false));
            let shown = member.account.as_deref().unwrap_or("*");
            out.ext_body = Some(line(&member.mask, "JOIN", &[&ch.name, shown, ""], true).into());
            out.account = member.account.as_deref().map(Into::into);
            out.stamp();
            ch.remote.insert(rkey, member);
            let d = delivery(&ckey, out, nobody, false, Membership::Same);
            ch.deliver(ctx, outbox, d);
        }
        let mut empty = Vec::new();
        for (ckey, ch) in self.chans.iter_mut() {
            if partition_of(ckey) != partition {
                continue;
            }
            let stale: Vec<_> = ch
                .remote
                .keys()
                .filter(|(o, n)| {
                    *o == origin && {
                        let key = (ckey.clone(), n.clone());
                        !listed.contains(&key) && !touched.contains(&key)
                    }
                })
                .cloned()
                .collect();
            for k in stale {
                remote_leaves(ch, ctx, outbox, ckey, &k, nobody, None, |name, mask| {
                    line(
                        mask,
                        "PART",
                        &[name, "Left while this server was away"],
                        true,
                    )
                });
            }
            if ch.members.is_empty() && ch.remote.is_empty() {
                empty.push(ckey.clone());
            }
        }
        for k in empty {
            self.chans.remove(&k);
        }
    }
}
