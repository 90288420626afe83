//! A channel as its owner holds it: members (with their prefixes), modes, bans,
//! invitations and topic, and the numerics that describe them.

use crate::shard::{has_room, ChatShard, Outbox};
use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use shardline::{Ctx, ShardId};

use crate::{
    casemap::{casefold, NameKey},
    clock,
    info::ServerInfo,
    mail::{ChanDelivery, ChatMsg, ClientRef, Membership, Numeric, Outgoing, ViewUpdate},
    mask::matches_folded,
    message::MAX_BODY,
    reply::code::*,
};

/// Invitations a channel remembers (the oldest is forgotten first).
const MAX_INVITES: usize = 64;

#[derive(Debug)]
pub(super) struct Member {
    pub nick: String,
    /// `user@host`, to rebuild the mask after a nick change.
    pub userhost: Arc<str>,
    /// The member's account (`account-tag` on its channel events), kept up
    /// to date by the account notices.
    pub account: Option<Arc<str>>,
    pub op: bool,
    pub voice: bool,
}

impl Member {
    /// `nick!user@host`, casefolded, for ban matching.
    pub fn folded_mask(&self) -> String {
        casefold(&format!("{}!{}", self.nick, self.userhost))
    }

    pub fn prefix(&self, multi: bool) -> &'static str {
        crate::view::prefix(self.op, self.voice, multi)
    }
}

#[derive(Debug)]
pub(super) struct Topic {
    pub text: String,
    pub setter: String,
    pub time: u64,
}

/// One ban: the mask as set, casefolded for matching, who set it and when.
#[derive(Debug)]
pub(super) struct Ban {
    pub mask: String,
    pub folded: String,
    pub setter: String,
    pub time: u64,
}

/// Flag modes (`imnst`) and the key and limit.
#[derive(Debug, Default)]
pub(super) struct Modes {
    pub invite_only: bool,
    pub moderated: bool,
    pub no_external: bool,
    pub secret: bool,
    pub topic_lock: bool,
    pub key: Option<String>,
    pub limit: Option<u32>,
}

impl Modes {
    /// The flags set, as their letters (`imnst` order).
    pub fn flag_letters(&self) -> String {
        [
            (self.invite_only, 'i'),
            (self.moderated, 'm'),
            (self.no_external, 'n'),
            (self.secret, 's'),
            (self.topic_lock, 't'),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, c)| *c)
        .collect()
    }

    /// The flag for letter `m`, if it is one of `imnst`.
    pub fn flag(&mut self, m: char) -> Option<&mut bool> {
        Some(match m {
            'i' => &mut self.invite_only,
            'm' => &mut self.moderated,
            'n' => &mut self.no_external,
            's' => &mut self.secret,
            't' => &mut self.topic_lock,
            _ => return None,
        })
    }
}

/// A channel, on its owner.
#[derive(Debug)]
pub(super) struct Channel {
    /// The name as its creator wrote it.
    pub name: String,
    pub created: u64,
    pub members: HashMap<ClientRef, Member>,
    /// Casefolded nick -> member, for KICK and MODE +o/+v.
    pub by_nick: HashMap<NameKey, ClientRef>,
    /// Members per shard: where deliveries go.
    pub per_shard: Vec<u32>,
    pub topic: Option<Topic>,
    pub modes: Modes,
    pub bans: Vec<Ban>,
    /// Clients invited (they may join past +i), oldest first.
    pub invites: VecDeque<ClientRef>,
    /// Members connected to other nodes of a cluster, by (node, casefolded
    /// nick) ([`super::cluster`]).
    pub remote: std::collections::BTreeMap<(Arc<str>, NameKey), super::cluster::RemoteMember>,
}

impl Channel {
    /// A new channel: `+nt`, like most networks.
    pub fn new(name: String, shards: usize) -> Channel {
        Channel {
            name,
            created: clock::now_secs(),
            members: HashMap::new(),
            by_nick: HashMap::new(),
            per_shard: vec![0; shards],
            topic: None,
            modes: Modes {
                no_external: true,
                topic_lock: true,
                ..Modes::default()
            },
            bans: Vec::new(),
            invites: VecDeque::new(),
            remote: std::collections::BTreeMap::new(),
        }
    }

    pub fn member_shards(&self) -> impl Iterator<Item = usize> + '_ {
        self.per_shard
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(s, _)| s)
    }

    /// Whether every shard with members (and `extra`) can take one more message.
    pub fn room(&self, outbox: &Outbox, info: &ServerInfo, extra: Option<usize>) -> bool {
        self.member_shards()
            .chain(extra)
            .all(|s| has_room(outbox, info, s))
    }

    pub fn add(&mut self, who: ClientRef, member: Member) {
        self.by_nick.insert(casefold(&member.nick).into(), who);
        self.members.insert(who, member);
        self.per_shard[who.shard] += 1;
        self.invites.retain(|&c| c != who);
    }

    pub fn remove(&mut self, who: ClientRef) {
        if let Some(m) = self.members.remove(&who) {
            self.per_shard[who.shard] -= 1;
            let key = casefold(&m.nick);
            if self.by_nick.get(key.as_str()) == Some(&who) {
                self.by_nick.remove(key.as_str());
            }
        }
    }

    pub fn rename(&mut self, who: ClientRef, nick: &str) {
        if let Some(m) = self.members.get_mut(&who) {
            let old = casefold(&m.nick);
            if self.by_nick.get(old.as_str()) == Some(&who) {
                self.by_nick.remove(old.as_str());
            }
            m.nick = nick.to_string();
            self.by_nick.insert(casefold(nick).into(), who);
        }
    }

    /// Member `who`'s account (for `account-tag` on its events).
    pub fn account_of(&self, who: ClientRef) -> Option<Arc<str>> {
        self.members.get(&who).and_then(|m| m.account.clone())
    }

    /// Member `who` logged in to `account` (or out).
    pub fn set_account(&mut self, who: ClientRef, account: &Option<Arc<str>>) {
        if let Some(m) = self.members.get_mut(&who) {
            m.account = account.clone();
        }
    }

    /// Member `who`'s user and host changed (CHGHOST).
    pub fn set_userhost(&mut self, who: ClientRef, userhost: &Arc<str>) {
        if let Some(m) = self.members.get_mut(&who) {
            m.userhost = userhost.clone();
        }
    }

    pub fn invite(&mut self, who: ClientRef) {
        if !self.invites.contains(&who) {
            if self.invites.len() >= MAX_INVITES {
                self.invites.pop_front();
            }
            self.invites.push_back(who);
        }
    }

    /// Whether a casefolded `nick!user@host` matches a ban.
    pub fn banned(&self, folded_mask: &str) -> bool {
        self.bans
            .iter()
            .any(|b| matches_folded(&b.folded, folded_mask))
    }

    /// Whether `who` may speak: members with a prefix always; others unless `+m`,
    /// a ban, or (non-members) `+n`.
    pub fn may_speak(&self, who: ClientRef, mask: &str) -> bool {
        match self.members.get(&who) {
            Some(m) if m.op || m.voice => true,
            Some(m) => {
                !self.modes.moderated && (self.bans.is_empty() || !self.banned(&m.folded_mask()))
            }
            None => {
                !self.modes.no_external
                    && !self.modes.moderated
                    && (self.bans.is_empty() || !self.banned(&casefold(mask)))
            }
        }
    }

    /// Posts a copy of `d` to every shard with members; returns how many.
    pub fn deliver(
        &self,
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        d: ChanDelivery,
    ) -> u32 {
        let mut n = 0;
        for s in self.member_shards() {
            let copy = ChanDelivery {
                chan: d.chan.clone(),
                out: d.out.clone(),
                view: d.view.clone(),
                away: d.away.clone(),
                ..d
            };
            outbox.post(ctx, ShardId(s), ChatMsg::Chan(Box::new(copy)));
            n += 1;
        }
        n
    }

    /// The mode string and its parameters for 324; the key only for members.
    pub fn mode_params(&self, show_key: bool) -> Vec<String> {
        let m = &self.modes;
        let mut letters = format!("+{}", m.flag_letters());
        let mut params = Vec::new();
        if let Some(k) = &m.key {
            letters.push('k');
            params.push(if show_key { k.clone() } else { "*".into() });
        }
        if let Some(l) = m.limit {
            letters.push('l');
            params.push(l.to_string());
        }
        let mut out = vec![self.name.clone(), letters];
        out.extend(params);
        out
    }

    pub fn topic_numerics(&self) -> Vec<Numeric> {
        match &self.topic {
            Some(t) => vec![
                Numeric::new(RPL_TOPIC, [self.name.clone(), t.text.clone()]),
                Numeric::new(
                    RPL_TOPICWHOTIME,
                    [self.name.clone(), t.setter.clone(), t.time.to_string()],
                ),
            ],
            None => vec![Numeric::new(
                RPL_NOTOPIC,
                [self.name.as_str(), "No topic is set"],
            )],
        }
    }

    /// 367 for every ban, then 368.
    pub fn ban_numerics(&self) -> Vec<Numeric> {
        let mut out: Vec<Numeric> = self
            .bans
            .iter()
            .map(|b| {
                Numeric::new(
                    RPL_BANLIST,
                    [
                        self.name.clone(),
                        b.mask.clone(),
                        b.setter.clone(),
                        b.time.to_string(),
                    ],
                )
            })
            .collect();
        out.push(Numeric::new(
            RPL_ENDOFBANLIST,
            [self.name.as_str(), "End of channel ban list"],
        ));
        out
    }

    /// 353 lines (cut to fit 512 bytes for any nick of up to `nicklen`) and 366.
    /// A `+s` channel shows nobody to a non-member. `userhost`: entries are
    /// `nick!user@host` (`userhost-in-names`).
    pub fn names_numerics(
        &self,
        info: &ServerInfo,
        viewer: ClientRef,
        multi: bool,
        userhost: bool,
    ) -> Vec<Numeric> {
        if self.modes.secret && !self.members.contains_key(&viewer) {
            return vec![end_of_names(&self.name)];
        }
        let symbol = if self.modes.secret { "@" } else { "=" };
        // ":server 353 <nick> = <chan> :" around the names.
        let overhead = info.name().len() + info.config.limits.nicklen + self.name.len() + 16;
        let budget = MAX_BODY.saturating_sub(overhead).max(64);
        let mut out = Vec::new();
        let mut chunk = String::new();
        let flush = |chunk: &mut String, out: &mut Vec<Numeric>| {
            out.push(Numeric::new(
                RPL_NAMREPLY,
                [symbol.to_string(), self.name.clone(), std::mem::take(chunk)],
            ));
        };
        let local = self
            .members
            .values()
            .map(|m| (m.prefix(multi), m.nick.as_str(), &*m.userhost));
        // Other nodes' members, with the prefixes every node agrees on.
        let remote = self.remote.values().map(|r| {
            let uh = r.mask.split_once('!').map_or("", |(_, uh)| uh);
            (crate::view::prefix(r.op, r.voice, multi), r.nick(), uh)
        });
        for (prefix, nick, uh) in local.chain(remote) {
            let uh_len = if userhost { 1 + uh.len() } else { 0 };
            let len = prefix.len() + nick.len() + uh_len;
            if !chunk.is_empty() && chunk.len() + 1 + len > budget {
                flush(&mut chunk, &mut out);
            }
            if !chunk.is_empty() {
                chunk.push(' ');
            }
            chunk.push_str(prefix);
            chunk.push_str(nick);
            if userhost {
                chunk.push('!');
                chunk.push_str(uh);
            }
        }
        if !chunk.is_empty() {
            flush(&mut chunk, &mut out);
        }
        out.push(end_of_names(&self.name));
        out
    }

    /// The view a shard needs when one of its clients joins.
    pub fn join_view(&self, who: ClientRef, op: bool) -> Arc<ViewUpdate> {
        Arc::new(ViewUpdate {
            name: Some(self.name.clone()),
            secret: Some(self.modes.secret),
            prefixes: vec![(who, op, false)],
        })
    }
}

pub(super) fn delivery(
    chan: &NameKey,
    out: Outgoing,
    source: ClientRef,
    echo_gated: bool,
    change: Membership,
) -> ChanDelivery {
    ChanDelivery {
        chan: chan.clone(),
        out,
        source,
        echo_gated,
        change,
        view: None,
        needs: crate::mail::Caps::default(),
        ops_only: false,
        away: None,
        once: None,
    }
}

pub(super) fn end_of_names(chan: &str) -> Numeric {
    Numeric::new(RPL_ENDOFNAMES, [chan, "End of /NAMES list."])
}
