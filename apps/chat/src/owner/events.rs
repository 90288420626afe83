//! Channel requests on the channel's owner: JOIN, PART, TOPIC, NAMES, KICK,
//! INVITE, PRIVMSG/NOTICE and LIST. MODE is in `modes.rs`.

use crate::shard::{ChatShard, Outbox};
use std::sync::Arc;

use shardline::{Ctx, ShardId};

use super::{
    channel::{delivery, end_of_names, Channel, Member, Topic},
    numerics, quiet_if, reply, Answer, Owner,
};
use crate::{
    casemap::{casefold, NameKey},
    clock,
    info::ServerInfo,
    mail::{Caps, ChatMsg, ClientRef, Membership, Numeric, Outgoing, ReplyBody, Request, Said},
    mask::matches_folded,
    reply::{code::*, line, truncate},
    store::{Message as Stored, MessageKind},
};

pub(super) fn no_such_channel(chan: &str) -> Answer {
    numerics(vec![Numeric::new(
        ERR_NOSUCHCHANNEL,
        [chan, "No such channel"],
    )])
}

pub(super) fn not_on_channel(chan: &str) -> Answer {
    numerics(vec![Numeric::new(
        ERR_NOTONCHANNEL,
        [chan, "You're not on that channel"],
    )])
}

pub(super) fn not_op(chan: &str) -> Numeric {
    Numeric::new(ERR_CHANOPRIVSNEEDED, [chan, "You're not channel operator"])
}

impl Owner {
    pub(super) fn channel_request(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        info: &ServerInfo,
        outbox: &mut Outbox,
        from: ClientRef,
        req: Request,
    ) -> Answer {
        let shards = ctx.shards();
        match req {
            Request::Join {
                chan,
                key,
                nick,
                mask,
                multi_prefix,
                userhost_in_names,
                away,
                account,
                realname,
                creator_op,
            } => {
                let ckey: NameKey = casefold(&chan).into();
                let fresh = !self.chans.contains_key(&ckey);
                let ch = self
                    .chans
                    .entry(ckey.clone())
                    .or_insert_with(|| Channel::new(chan, shards));
                if ch.members.contains_key(&from) {
                    return reply(ReplyBody::Joined(Vec::new()));
                }
                if let Some((code, text)) = ch.refuses_join(from, &mask, key.as_deref()) {
                    let e = Numeric::new(code, [ch.name.as_str(), text]);
                    return reply(ReplyBody::Joined(vec![e]));
                }
                if !ch.room(outbox, info, Some(from.shard)) {
                    if fresh && ch.remote.is_empty() {
                        self.chans.remove(&ckey);
                    }
                    return reply(ReplyBody::Busy);
                }
                let userhost = mask.split_once('!').map_or("", |(_, uh)| uh);
                let member = Member {
                    nick,
                    userhost: Arc::from(userhost),
                    account: account.clone(),
                    op: creator_op.unwrap_or(fresh),
                    voice: false,
                };
                ch.add(from, member);
                let mut out = Outgoing::new(line(&mask, "JOIN", &[&ch.name], false));
                // extended-join: the same JOIN with the account and real name.
                let shown = account.as_deref().unwrap_or("*");
                let ext = line(&mask, "JOIN", &[&ch.name, shown, &realname], true);
                out.ext_body = Some(ext.into());
                out.account.clone_from(&account);
                out.stamp();
                let mut d = delivery(&ckey, out, from, false, Membership::Add(from));
                if let Some(text) = away {
                    // away-notify: its members learn at once that it is away.
                    let mut a = Outgoing::new(line(&mask, "AWAY", &[&text], true));
                    a.account = account;
                    a.time_ms = d.out.time_ms;
                    d.away = Some(a);
                }
                d.view = Some(ch.join_view(from, creator_op.unwrap_or(fresh)));
                let n = ch.deliver(ctx, outbox, d);
                let mut nums = Vec::new();
                if ch.topic.is_some() {
                    nums.extend(ch.topic_numerics());
                }
                nums.extend(ch.names_numerics(info, from, multi_prefix, userhost_in_names));
                (n, Some(ReplyBody::Joined(nums)))
            }
            Request::Part { chan, mask, reason } => {
                let ckey: NameKey = casefold(&chan).into();
                let Some(ch) = self.chans.get_mut(&ckey) else {
                    return no_such_channel(&chan);
                };
                if !ch.members.contains_key(&from) {
                    return not_on_channel(&ch.name);
                }
                if !ch.room(outbox, info, None) {
                    return reply(ReplyBody::Busy);
                }
                let params: &[&str] = if reason.is_empty() {
                    &[&ch.name]
                } else {
                    &[&ch.name, &reason]
                };
                let mut out = Outgoing::new(line(&mask, "PART", params, !reason.is_empty()));
                out.account = ch.account_of(from);
                out.stamp();
                let d = delivery(&ckey, out, from, false, Membership::Remove(from));
                let n = ch.deliver(ctx, outbox, d);
                ch.remove(from);
                if ch.members.is_empty() && ch.remote.is_empty() {
                    self.chans.remove(&ckey);
                }
                (n, Some(ReplyBody::Done))
            }
            Request::Kick {
                chan,
                target,
                mask,
                reason,
            } => {
                let ckey: NameKey = casefold(&chan).into();
                let Some(ch) = self.chans.get_mut(&ckey) else {
                    return no_such_channel(&chan);
                };
                let Some(kicker) = ch.members.get(&from) else {
                    return not_on_channel(&ch.name);
                };
                if !kicker.op {
                    return numerics(vec![not_op(&ch.name)]);
                }
                let folded = casefold(&target);
                let Some(&victim) = ch.by_nick.get(folded.as_str()) else {
                    // Another node's member (a cluster): its KICK came
                    // through the engine like every node's.
                    let remote = ch.remote.keys().find(|(_, n)| **n == *folded).cloned();
                    if let Some(key) = remote {
                        if !ch.room(outbox, info, None) {
                            return reply(ReplyBody::Busy);
                        }
                        let reason = truncate(&reason, info.config.limits.kicklen).to_string();
                        let n = super::cluster::remote_kick(
                            ch, ctx, outbox, &ckey, &key, from, &mask, &reason,
                        );
                        if ch.members.is_empty() && ch.remote.is_empty() {
                            self.chans.remove(&ckey);
                        }
                        return (n, Some(ReplyBody::Done));
                    }
                    return reply(ReplyBody::CheckNicks {
                        nums: Vec::new(),
                        chan: ch.name.clone(),
                        nicks: vec![target],
                    });
                };
                if !ch.room(outbox, info, None) {
                    return reply(ReplyBody::Busy);
                }
                let nick = ch.members.get(&victim).map_or(target, |m| m.nick.clone());
                let reason = truncate(&reason, info.config.limits.kicklen);
                let mut out = Outgoing::new(line(&mask, "KICK", &[&ch.name, &nick, reason], true));
                out.account = ch.account_of(from);
                out.stamp();
                let d = delivery(&ckey, out, from, false, Membership::Remove(victim));
                let n = ch.deliver(ctx, outbox, d);
                ch.remove(victim);
                if ch.members.is_empty() && ch.remote.is_empty() {
                    self.chans.remove(&ckey);
                }
                (n, Some(ReplyBody::Done))
            }
            Request::InviteTo {
                target,
                nick,
                chan,
                mask,
            } => {
                let ckey: NameKey = casefold(&chan).into();
                let Some(ch) = self.chans.get_mut(&ckey) else {
                    return no_such_channel(&chan);
                };
                let Some(inviter) = ch.members.get(&from) else {
                    return not_on_channel(&ch.name);
                };
                if ch.members.contains_key(&target) {
                    let text = "is already on channel";
                    let e = Numeric::new(ERR_USERONCHANNEL, [nick.as_str(), &ch.name, text]);
                    return numerics(vec![e]);
                }
                if ch.modes.invite_only && !inviter.op {
                    return numerics(vec![not_op(&ch.name)]);
                }
                if !ch.room(outbox, info, Some(target.shard)) {
                    return reply(ReplyBody::Busy);
                }
                ch.invite(target);
                let mut out = Outgoing::new(line(&mask, "INVITE", &[&nick, &ch.name], false));
                out.account = ch.account_of(from);
                out.stamp();
                // invite-notify: members with the cap who could invite too
                // (everyone, or on a +i channel its operators).
                let mut d = delivery(&ckey, out.clone(), from, false, Membership::Same);
                d.needs = Caps::INVITE_NOTIFY;
                d.ops_only = ch.modes.invite_only;
                let n = ch.deliver(ctx, outbox, d);
                let name = ch.name.clone();
                let private = ChatMsg::Private {
                    to: target,
                    out,
                    ack: from,
                    notify_away: true,
                    remote_sender: None,
                };
                outbox.post(ctx, ShardId(target.shard), private);
                self.publish_invite_notify(&name, &mask, &nick);
                let done = Numeric::new(RPL_INVITING, [nick, name]);
                (n + 1, Some(ReplyBody::Numerics(vec![done])))
            }
            Request::InviteRemote { nick, chan, mask } => {
                self.invite_remote(from, nick, &chan, &mask)
            }
            Request::InviteFromNode {
                target,
                nick,
                chan,
                mask,
            } => {
                let ckey: NameKey = casefold(&chan).into();
                let name = match self.chans.get_mut(&ckey) {
                    Some(ch) => {
                        ch.invite(target);
                        ch.name.clone()
                    }
                    None => chan,
                };
                let mut out = Outgoing::new(line(&mask, "INVITE", &[&nick, &name], false));
                out.stamp();
                let private = ChatMsg::Private {
                    to: target,
                    out,
                    ack: from,
                    notify_away: false,
                    remote_sender: None,
                };
                outbox.post(ctx, ShardId(target.shard), private);
                (0, None)
            }
            Request::Topic {
                chan,
                mask,
                nick,
                set,
            } => {
                let ckey: NameKey = casefold(&chan).into();
                let Some(ch) = self.chans.get_mut(&ckey) else {
                    return no_such_channel(&chan);
                };
                let Some(member) = ch.members.get(&from) else {
                    return not_on_channel(&ch.name);
                };
                let Some(text) = set else {
                    return numerics(ch.topic_numerics());
                };
                if ch.modes.topic_lock && !member.op {
                    return numerics(vec![not_op(&ch.name)]);
                }
                if !ch.room(outbox, info, None) {
                    return reply(ReplyBody::Busy);
                }
                let text = truncate(&text, info.config.limits.topiclen).to_string();
                let mut out = Outgoing::new(line(&mask, "TOPIC", &[&ch.name, &text], true));
                out.account = ch.account_of(from);
                out.stamp();
                ch.topic = (!text.is_empty()).then(|| Topic {
                    text,
                    setter: nick,
                    time: clock::now_secs(),
                });
                let d = delivery(&ckey, out, from, false, Membership::Same);
                (ch.deliver(ctx, outbox, d), Some(ReplyBody::Done))
            }
            Request::Names {
                chan,
                multi_prefix,
                userhost_in_names,
            } => {
                let ckey: NameKey = casefold(&chan).into();
                let nums = match self.chans.get(&ckey) {
                    Some(ch) => ch.names_numerics(info, from, multi_prefix, userhost_in_names),
                    None => vec![end_of_names(&chan)],
                };
                numerics(nums)
            }
            Request::Mode {
                chan,
                mask,
                changes,
            } => self.mode(ctx, info, outbox, from, &chan, &mask, changes),
            Request::ChanMsg { chan, said } => {
                let quiet = said.kind != MessageKind::Privmsg;
                let ckey: NameKey = casefold(&chan).into();
                let Some(ch) = self.chans.get(&ckey) else {
                    return reply(quiet_if(quiet, vec![no_such_channel_num(&chan)]));
                };
                if !ch.may_speak(from, &said.mask) {
                    let e = Numeric::new(
                        ERR_CANNOTSENDTOCHAN,
                        [ch.name.as_str(), "Cannot send to channel"],
                    );
                    return reply(quiet_if(quiet, vec![e]));
                }
                if !ch.room(outbox, info, None) {
                    return reply(ReplyBody::Busy);
                }
                let Said {
                    mut out,
                    kind,
                    mask,
                    account,
                    to,
                    text,
                } = *said;
                // Stamped here, where the channel's history is kept: every
                // member (and the echo) gets the msgid and time it holds.
                // Stamped before it was published when it went through a
                // cluster's engine (every node keeps that msgid and time).
                let (msgid, time) = match (out.msgid.clone(), out.time_ms) {
                    (Some(m), Some(t)) => (m, t),
                    _ => self.history.stamp(Some(&ckey)),
                };
                out.msgid = Some(msgid.clone());
                out.time_ms = Some(time);
                // TAGMSG is not kept: without draft/event-playback history only
                // replays PRIVMSG and NOTICE.
                if kind != MessageKind::Tagmsg && self.history.keeps(&ckey) {
                    let m = Stored {
                        target: ckey.clone(),
                        to,
                        msgid: msgid.to_string(),
                        time,
                        source: mask.to_string(),
                        account: account.as_deref().unwrap_or("").to_string(),
                        kind,
                        tags: out.client_tags.as_deref().unwrap_or("").to_string(),
                        text,
                    };
                    self.history.append(ctx, m);
                }
                let Some(ch) = self.chans.get(&ckey) else {
                    return reply(ReplyBody::Done);
                };
                let member = ch.members.contains_key(&from);
                // A sender outside the channel (-n) gets its echo with the reply.
                let echo = (!member).then(|| out.clone());
                let d = delivery(&ckey, out, from, true, Membership::Same);
                let n = ch.deliver(ctx, outbox, d);
                (n, Some(echo.map_or(ReplyBody::Done, ReplyBody::Echo)))
            }
            Request::List { masks } => {
                let nums = self
                    .chans
                    .iter()
                    .filter(|(key, _)| {
                        masks.is_empty() || masks.iter().any(|m| matches_folded(m, key))
                    })
                    .filter(|(_, ch)| !ch.modes.secret || ch.members.contains_key(&from))
                    .map(|(_, ch)| {
                        let topic = ch.topic.as_ref().map_or("", |t| t.text.as_str());
                        Numeric::new(
                            RPL_LIST,
                            [
                                ch.name.clone(),
                                ch.members.len().to_string(),
                                topic.to_string(),
                            ],
                        )
                    })
                    .collect();
                reply(ReplyBody::Part(nums))
            }
            // Not an owner's request (the shard answers those itself).
            _ => reply(ReplyBody::Done),
        }
    }
}

fn no_such_channel_num(chan: &str) -> Numeric {
    Numeric::new(ERR_NOSUCHCHANNEL, [chan, "No such channel"])
}
