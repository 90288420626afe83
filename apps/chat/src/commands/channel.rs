//! Channel commands: JOIN, PART, TOPIC, NAMES, MODE. Each is checked for syntax
//! here and then sent to the channel's owner, which decides and answers.

use shardline::Ctx;

use super::Flow;
use crate::{
    casemap::{casefold, is_channel_name, owner_of, owner_of_key, valid_channel},
    mail::{Caps, ChatMsg, Request},
    reply::{code::*, line, truncate},
    shard::ChatShard,
};

impl ChatShard {
    fn no_such_channel(&self, ctx: &mut Ctx<'_, ChatMsg>, id: u64, chan: &str) {
        let chan = truncate(chan, 64);
        self.numeric(ctx, id, ERR_NOSUCHCHANNEL, &[chan, "No such channel"]);
    }

    pub(super) fn cmd_join(&mut self, ctx: &mut Ctx<'_, ChatMsg>, id: u64, p: &[&str]) -> Flow {
        let Some(list) = p.first().filter(|l| !l.is_empty()) else {
            return self.need_more_params(ctx, id, "JOIN");
        };
        if *list == "0" {
            return self.part_all(ctx, id);
        }
        let limits = &self.info.config.limits;
        let (channellen, max) = (limits.channellen, limits.max_channels);
        for chan in list.split(',').filter(|c| !c.is_empty()) {
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
                nick: c.nick.clone().unwrap_or_default(),
                mask: c.mask.clone(),
                multi_prefix: c.caps.has(Caps::MULTI_PREFIX),
            };
            if !self.request(ctx, id, owner_of_key(&key, self.shards), req) {
                return Flow::Next;
            }
        }
        Flow::Next
    }

    /// `JOIN 0`: leave every channel. A barrier, so that the list is exact.
    fn part_all(&mut self, ctx: &mut Ctx<'_, ChatMsg>, id: u64) -> Flow {
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

    pub(super) fn cmd_part(&mut self, ctx: &mut Ctx<'_, ChatMsg>, id: u64, p: &[&str]) -> Flow {
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

    pub(super) fn cmd_topic(&mut self, ctx: &mut Ctx<'_, ChatMsg>, id: u64, p: &[&str]) -> Flow {
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

    pub(super) fn cmd_names(&mut self, ctx: &mut Ctx<'_, ChatMsg>, id: u64, p: &[&str]) -> Flow {
        let Some(list) = p.first().filter(|l| !l.is_empty()) else {
            // Listing every channel is not supported (yet): the end marker only.
            self.numeric(ctx, id, RPL_ENDOFNAMES, &["*", "End of /NAMES list."]);
            return Flow::Next;
        };
        let multi_prefix = self
            .clients
            .get(&id)
            .is_some_and(|c| c.caps.has(Caps::MULTI_PREFIX));
        for chan in list.split(',').filter(|c| !c.is_empty()) {
            if !valid_channel(chan, self.info.config.limits.channellen) {
                let chan = truncate(chan, 64);
                self.numeric(ctx, id, RPL_ENDOFNAMES, &[chan, "End of /NAMES list."]);
                continue;
            }
            let req = Request::Names {
                chan: chan.to_string(),
                multi_prefix,
            };
            if !self.request(ctx, id, owner_of(chan, self.shards), req) {
                break;
            }
        }
        Flow::Next
    }

    pub(super) fn cmd_mode(&mut self, ctx: &mut Ctx<'_, ChatMsg>, id: u64, p: &[&str]) -> Flow {
        let Some(target) = p.first().filter(|t| !t.is_empty()) else {
            return self.need_more_params(ctx, id, "MODE");
        };
        if is_channel_name(target) {
            if !valid_channel(target, self.info.config.limits.channellen) {
                self.no_such_channel(ctx, id, target);
                return Flow::Next;
            }
            match p.get(1).copied() {
                None => {
                    let req = Request::ModeQuery {
                        chan: target.to_string(),
                    };
                    self.request(ctx, id, owner_of(target, self.shards), req);
                }
                Some("b" | "+b") if p.len() == 2 => {
                    let end = "End of channel ban list";
                    self.numeric(ctx, id, RPL_ENDOFBANLIST, &[target, end]);
                }
                Some(modes) => {
                    // Channel mode changes are not implemented yet (+nt is fixed).
                    let ch = modes
                        .chars()
                        .find(|c| !matches!(c, '+' | '-'))
                        .unwrap_or('?')
                        .to_string();
                    let text = "is unknown mode char to me";
                    self.numeric(ctx, id, ERR_UNKNOWNMODE, &[&ch, text]);
                }
            }
            return Flow::Next;
        }
        self.user_mode(ctx, id, target, p.get(1).copied())
    }

    /// User modes: only +i exists.
    fn user_mode(
        &mut self,
        ctx: &mut Ctx<'_, ChatMsg>,
        id: u64,
        target: &str,
        modes: Option<&str>,
    ) -> Flow {
        let Some(c) = self.clients.get_mut(&id) else {
            return Flow::Next;
        };
        if casefold(target) != casefold(c.nick_or_star()) {
            let text = "Can't change mode for other users";
            self.numeric(ctx, id, ERR_USERSDONTMATCH, &[text]);
            return Flow::Next;
        }
        let Some(modes) = modes else {
            let current = if c.invisible { "+i" } else { "+" };
            self.numeric(ctx, id, RPL_UMODEIS, &[current]);
            return Flow::Next;
        };
        let (mut adding, mut unknown, mut changed) = (true, false, None);
        for ch in modes.chars() {
            match ch {
                '+' => adding = true,
                '-' => adding = false,
                'i' => {
                    if c.invisible != adding {
                        c.invisible = adding;
                        changed = Some(adding);
                    }
                }
                _ => unknown = true,
            }
        }
        if let Some(on) = changed {
            let nick = c.nick_or_star().to_string();
            let change = if on { "+i" } else { "-i" };
            let out = line(&c.mask, "MODE", &[&nick, change], true);
            self.send_line(ctx, id, &out);
        }
        if unknown {
            self.numeric(ctx, id, ERR_UMODEUNKNOWNFLAG, &["Unknown MODE flag"]);
        }
        Flow::Next
    }
}
