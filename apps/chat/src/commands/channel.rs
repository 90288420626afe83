//! Channel commands: JOIN, PART, TOPIC, NAMES, KICK, INVITE. Each is checked for syntax
//! here and then sent to the channel's owner, which decides and answers.

use shardline::Ctx;

use super::Flow;
use crate::{
    casemap::{casefold, owner_of, owner_of_key, valid_channel, valid_nick},
    mail::{Caps, Request},
    reply::{code::*, truncate},
    shard::ChatShard,
};

impl ChatShard {
    fn no_such_channel(&self, ctx: &mut Ctx<'_, ChatShard>, id: u64, chan: &str) {
        let chan = truncate(chan, 64);
        self.numeric(ctx, id, ERR_NOSUCHCHANNEL, &[chan, "No such channel"]);
    }

    pub(super) fn cmd_join(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let Some(list) = p.first().filter(|l| !l.is_empty()) else {
            return self.need_more_params(ctx, id, "JOIN");
        };
        if *list == "0" {
            return self.part_all(ctx, id);
        }
        let limits = &self.info.config.limits;
        let (channellen, max) = (limits.channellen, limits.max_channels);
        let mut keys = p.get(1).map(|k| k.split(',')).into_iter().flatten();
        for chan in list.split(',') {
            let given_key = keys.next().filter(|k| !k.is_empty()).map(str::to_string);
            if chan.is_empty() {
                continue;
            }
            if !valid_channel(chan, channellen) {
                self.no_such_channel(ctx, id, chan);
                continue;
            }
            let Some(c) = self.clients.get_mut(&id) else {
                return Flow::Next;
            };
            let key = casefold(chan);
            if c.channels.iter().any(|k| **k == *key) {
                continue;
            }
            if c.channels.len() + c.pending_joins >= max {
                let msg = "You have joined too many channels";
                self.numeric(ctx, id, ERR_TOOMANYCHANNELS, &[chan, msg]);
                continue;
            }
            c.pending_joins += 1;
            let req = Request::Join {
                chan: chan.to_string(),
                key: given_key,
                nick: c.nick.clone().unwrap_or_default(),
                mask: c.mask.clone(),
                multi_prefix: c.caps.has(Caps::MULTI_PREFIX),
                userhost_in_names: c.caps.has(Caps::USERHOST_IN_NAMES),
                away: c.away.clone(),
                account: c.account.clone(),
                realname: c.realname.clone(),
                creator_op: None,
            };
            if !self.request(ctx, id, owner_of_key(&key, self.shards), req) {
                return Flow::Next;
            }
        }
        Flow::Next
    }

    /// `JOIN 0`: leave every channel. A barrier, so that the list is exact.
    fn part_all(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64) -> Flow {
        let Some(c) = self.clients.get(&id) else {
            return Flow::Next;
        };
        if !c.settled() {
            return Flow::Retry;
        }
        let mask = c.mask.clone();
        for key in c.channels.clone() {
            let req = Request::Part {
                chan: key.to_string(),
                mask: mask.clone(),
                reason: String::new(),
            };
            if !self.request(ctx, id, owner_of_key(&key, self.shards), req) {
                return Flow::Next;
            }
        }
        Flow::Park
    }

    pub(super) fn cmd_part(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let Some(list) = p.first().filter(|l| !l.is_empty()) else {
            return self.need_more_params(ctx, id, "PART");
        };
        let reason = truncate(p.get(1).copied().unwrap_or(""), 300).to_string();
        let Some(mask) = self.clients.get(&id).map(|c| c.mask.clone()) else {
            return Flow::Next;
        };
        for chan in list.split(',').filter(|c| !c.is_empty()) {
            if !valid_channel(chan, self.info.config.limits.channellen) {
                self.no_such_channel(ctx, id, chan);
                continue;
            }
            let req = Request::Part {
                chan: chan.to_string(),
                mask: mask.clone(),
                reason: reason.clone(),
            };
            if !self.request(ctx, id, owner_of(chan, self.shards), req) {
                break;
            }
        }
        Flow::Next
    }

    pub(super) fn cmd_topic(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let Some(chan) = p.first().filter(|c| !c.is_empty()) else {
            return self.need_more_params(ctx, id, "TOPIC");
        };
        if !valid_channel(chan, self.info.config.limits.channellen) {
            self.no_such_channel(ctx, id, chan);
            return Flow::Next;
        }
        let Some(c) = self.clients.get(&id) else {
            return Flow::Next;
        };
        let req = Request::Topic {
            chan: chan.to_string(),
            mask: c.mask.clone(),
            nick: c.nick.clone().unwrap_or_default(),
            set: p.get(1).map(|t| t.to_string()),
        };
        self.request(ctx, id, owner_of(chan, self.shards), req);
        Flow::Next
    }

    pub(super) fn cmd_names(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let Some(list) = p.first().filter(|l| !l.is_empty()) else {
            // As modern.ircdocs.horse says servers SHOULD: one 366 for `*`,
            // no listing of every channel on the network.
            self.numeric(ctx, id, RPL_ENDOFNAMES, &["*", "End of /NAMES list."]);
            return Flow::Next;
        };
        let caps = self.clients.get(&id).map(|c| c.caps).unwrap_or_default();
        let multi_prefix = caps.has(Caps::MULTI_PREFIX);
        let userhost_in_names = caps.has(Caps::USERHOST_IN_NAMES);
        for chan in list.split(',').filter(|c| !c.is_empty()) {
            if !valid_channel(chan, self.info.config.limits.channellen) {
                let chan = truncate(chan, 64);
                self.numeric(ctx, id, RPL_ENDOFNAMES, &[chan, "End of /NAMES list."]);
                continue;
            }
            let req = Request::Names {
                chan: chan.to_string(),
                multi_prefix,
                userhost_in_names,
            };
            if !self.request(ctx, id, owner_of(chan, self.shards), req) {
                break;
            }
        }
        Flow::Next
    }

    pub(super) fn cmd_kick(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let (Some(chan), Some(targets)) = (p.first(), p.get(1)) else {
            return self.need_more_params(ctx, id, "KICK");
        };
        if chan.is_empty() || targets.is_empty() {
            return self.need_more_params(ctx, id, "KICK");
        }
        if !valid_channel(chan, self.info.config.limits.channellen) {
            self.no_such_channel(ctx, id, chan);
            return Flow::Next;
        }
        let Some(c) = self.clients.get(&id) else {
            return Flow::Next;
        };
        let mask = c.mask.clone();
        let reason = match p.get(2).filter(|r| !r.is_empty()) {
            Some(r) => r.to_string(),
            None => c.nick_or_star().to_string(),
        };
        let max = self.info.config.limits.max_targets;
        for (i, target) in targets.split(',').filter(|t| !t.is_empty()).enumerate() {
            if i >= max {
                let target = truncate(target, 64);
                let text = "Too many targets";
                self.numeric(ctx, id, ERR_TOOMANYTARGETS, &[target, text]);
                continue;
            }
            let req = Request::Kick {
                chan: chan.to_string(),
                target: target.to_string(),
                mask: mask.clone(),
                reason: reason.clone(),
            };
            if !self.request(ctx, id, owner_of(chan, self.shards), req) {
                break;
            }
        }
        Flow::Next
    }

    /// INVITE goes to the invitee's nick owner (401 there), which forwards it to
    /// the channel's owner (442, 443, 482 there), which delivers it.
    pub(super) fn cmd_invite(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let (Some(nick), Some(chan)) = (p.first(), p.get(1)) else {
            return self.need_more_params(ctx, id, "INVITE");
        };
        if !valid_nick(nick, self.info.config.limits.nicklen) {
            let nick = truncate(nick, 64);
            self.numeric(ctx, id, ERR_NOSUCHNICK, &[nick, "No such nick/channel"]);
            return Flow::Next;
        }
        if !valid_channel(chan, self.info.config.limits.channellen) {
            self.no_such_channel(ctx, id, chan);
            return Flow::Next;
        }
        let Some(c) = self.clients.get(&id) else {
            return Flow::Next;
        };
        let req = Request::Invite {
            nick: nick.to_string(),
            chan: chan.to_string(),
            mask: c.mask.clone(),
        };
        // Answered by the nick's or the channel's owner: wait, so that answers
        // come in the order asked.
        if self.request(ctx, id, owner_of(nick, self.shards), req) {
            Flow::Park
        } else {
            Flow::Next
        }
    }
}
