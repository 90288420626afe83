//! A channel owner in a cluster ([`crate::cluster`]): JOIN, PART and
//! channel messages of local clients go through the engine, and the events
//! of every node are applied here in the engine's order.
//!
//! - A local client's request is checked against this node's state first
//!   (so nothing another node will show is refused here afterwards, but for
//!   a race with an event ordered in between: see the module doc), then
//!   kept under a token and published; it is handled — exactly as on a
//!   single node, delivery, history and reply included — when its own event
//!   comes back from the engine. So this node's members see the channel's
//!   events in the engine's order, like every other node's.
//! - Another node's event updates the channel's remote members (NAMES) and
//!   is delivered to this node's members (and kept in history with the
//!   origin's msgid and time).
//! - While the engine cannot carry events (either link down), requests are
//!   handled here at once (this node's users were told by NOTICE that their
//!   messages no longer reach the other nodes); requests waiting for their
//!   event when a link goes are handled here then.

use std::{collections::HashMap, sync::Arc};

use shardline::{Ctx, ShardId};

use super::{
    channel::{delivery, Channel, Topic},
    events::{no_such_channel, not_on_channel, not_op},
    reply, Answer, EngineOp, Numeric, Owner, SentMsg,
};

/// What became of a request offered to the engine.
pub(super) enum Published {
    /// Published: answered when its event comes back.
    Waiting,
    /// Refused here (the answer).
    Refused(Answer),
    /// Not carriable: handle it here.
    Here(Request),
}
use crate::{
    casemap::{casefold, owner_of_key, NameKey},
    cluster::events::{user_event_key, Envelope, Event},
    info::ServerInfo,
    mail::{
        ChatMsg, ClientRef, Membership, ModeChange, NoticeKind, Outgoing, ReplyBody, Request, Said,
        StandardReply, UserNotice,
    },
    reply::{
        code::{
            ERR_CANNOTSENDTOCHAN, ERR_NOSUCHCHANNEL, ERR_USERONCHANNEL, RPL_AWAY, RPL_INVITING,
        },
        line, truncate, Standard,
    },
    shard::{ChatShard, Outbox},
    store::{conversation_key, partition_of, Message as Stored, MessageKind},
};

/// A member of a channel connected to another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteMember {
    /// `nick!user@host`.
    pub mask: String,
    /// Its account.
    pub account: Option<String>,
    /// The key of its QUIT lines (from its JOIN).
    pub quit_key: u64,
    /// An operator: it created the channel (its node decided so when it
    /// published the JOIN, and every node takes that decision), or a MODE
    /// +o made it one.
    pub op: bool,
    /// Voiced (`+v`).
    pub voice: bool,
}

impl RemoteMember {
    /// Its nick.
    pub fn nick(&self) -> &str {
        self.mask.split('!').next().unwrap_or(&self.mask)
    }
}

/// The source of deliveries of other nodes' events: no client (acks to it
/// find nobody; ids start at 1).
pub(super) const NOBODY: u64 = 0;

impl Owner {
    /// Whether `req` goes through the engine (a cluster with its links up,
    /// and a channel event).
    pub(super) fn through_engine(&self, req: &Request) -> bool {
        if !(self.cluster && self.engine_live) {
            return false;
        }
        match req {
            Request::Join { .. }
            | Request::Part { .. }
            | Request::ChanMsg { .. }
            | Request::Kick { .. }
            | Request::Topic { set: Some(_), .. } => true,
            Request::Mode { changes, .. } => !changes.is_empty(),
            _ => false,
        }
    }

    /// Checks `req` against this node's state; publishes it if it would
    /// pass (`None`), else the refusal to answer now.
    pub(super) fn publish_request(
        &mut self,
        info: &ServerInfo,
        node: &str,
        from: ClientRef,
        mut req: Request,
    ) -> Published {
        let event = match &mut req {
            Request::Join {
                chan,
                key,
                mask,
                account,
                realname,
                creator_op,
                ..
            } => {
                let ckey: NameKey = casefold(chan).into();
                // Decided now and carried, so that every node (this one when
                // its event comes back included) makes the same member an
                // operator. A channel unknown here is new, unless this node
                // is still learning the others' channels (a resync under
                // way): then nobody is made an operator by joining.
                let op = !self.chans.contains_key(&ckey) && !self.sync_pending(partition_of(&ckey));
                *creator_op = Some(op);
                if let Some(ch) = self.chans.get(&ckey) {
                    if ch.members.contains_key(&from) {
                        return Published::Refused(reply(ReplyBody::Joined(Vec::new())));
                    }
                    if let Some((code, text)) = ch.refuses_join(from, mask, key.as_deref()) {
                        let e = Numeric::new(code, [ch.name.as_str(), text]);
                        return Published::Refused(reply(ReplyBody::Joined(vec![e])));
                    }
                }
                Event::Join {
                    chan: chan.clone(),
                    mask: mask.to_string(),
                    account: account.as_deref().map(str::to_string),
                    quit_key: self.quit_key(from),
                    op,
                    realname: realname.clone(),
                }
            }
            Request::Part { chan, mask, reason } => {
                let ckey: NameKey = casefold(chan).into();
                let Some(ch) = self.chans.get(&ckey) else {
                    return Published::Refused(no_such_channel(chan));
                };
                if !ch.members.contains_key(&from) {
                    return Published::Refused(not_on_channel(&ch.name));
                }
                Event::Part {
                    chan: chan.clone(),
                    mask: mask.to_string(),
                    reason: reason.clone(),
                }
            }
            Request::ChanMsg { chan, said } => {
                let ckey: NameKey = casefold(chan).into();
                let quiet = said.kind != MessageKind::Privmsg;
                let refuse = |n: Numeric| {
                    let nums = if quiet { Vec::new() } else { vec![n] };
                    Published::Refused(reply(ReplyBody::Numerics(nums)))
                };
                let Some(ch) = self.chans.get(&ckey) else {
                    let n = Numeric::new(ERR_NOSUCHCHANNEL, [chan.as_str(), "No such channel"]);
                    return refuse(n);
                };
                if !ch.may_speak(from, &said.mask) {
                    let n = Numeric::new(
                        ERR_CANNOTSENDTOCHAN,
                        [ch.name.as_str(), "Cannot send to channel"],
                    );
                    return refuse(n);
                }
                // Stamped now: every node keeps the origin's msgid and time.
                let (msgid, time) = self.history.stamp(Some(&ckey));
                said.out.msgid = Some(msgid.clone());
                said.out.time_ms = Some(time);
                Event::Msg {
                    to: said.to.clone(),
                    kind: said.kind,
                    mask: said.mask.to_string(),
                    account: said.account.as_deref().map(str::to_string),
                    msgid: msgid.to_string(),
                    time,
                    tags: said.out.client_tags.as_deref().map(str::to_string),
                    text: said.text.clone(),
                }
            }
            Request::Topic {
                chan,
                mask,
                set: Some(text),
                ..
            } => {
                let ckey: NameKey = casefold(chan).into();
                let Some(ch) = self.chans.get(&ckey) else {
                    return Published::Refused(no_such_channel(chan));
                };
                let Some(member) = ch.members.get(&from) else {
                    return Published::Refused(not_on_channel(&ch.name));
                };
                if ch.modes.topic_lock && !member.op {
                    let nums = vec![not_op(&ch.name)];
                    return Published::Refused(reply(ReplyBody::Numerics(nums)));
                }
                // Cut here, so every node keeps the same text.
                *text = truncate(text, info.config.limits.topiclen).to_string();
                Event::Topic {
                    chan: chan.clone(),
                    mask: mask.to_string(),
                    time: crate::clock::now_secs(),
                    text: text.clone(),
                }
            }
            Request::Kick {
                chan,
                target,
                mask,
                reason,
            } => {
                let ckey: NameKey = casefold(chan).into();
                let Some(ch) = self.chans.get(&ckey) else {
                    return Published::Refused(no_such_channel(chan));
                };
                let Some(kicker) = ch.members.get(&from) else {
                    return Published::Refused(not_on_channel(&ch.name));
                };
                if !kicker.op {
                    let nums = vec![not_op(&ch.name)];
                    return Published::Refused(reply(ReplyBody::Numerics(nums)));
                }
                let folded = casefold(target);
                let known = ch.by_nick.contains_key(folded.as_str())
                    || ch.remote.keys().any(|(_, n)| **n == *folded);
                if !known {
                    // 401 or 441, as on a single node.
                    return Published::Here(req);
                }
                *reason = truncate(reason, info.config.limits.kicklen).to_string();
                Event::Kick {
                    chan: chan.clone(),
                    mask: mask.to_string(),
                    target: target.clone(),
                    reason: reason.clone(),
                }
            }
            Request::Mode {
                chan,
                mask,
                changes,
            } => {
                let ckey: NameKey = casefold(chan).into();
                let Some(ch) = self.chans.get(&ckey) else {
                    return Published::Here(req);
                };
                if !ch.members.get(&from).is_some_and(|m| m.op) {
                    // Refused (482) or only a query: here, as on one node.
                    return Published::Here(req);
                }
                // What can change the channel: known letters, not a ban
                // list query; parameters with spaces are invalid anyway (the
                // origin still answers them when its own event comes back).
                let carried: Vec<(bool, char, Option<String>)> = changes
                    .iter()
                    .filter(|c| "imnstklbov".contains(c.mode))
                    .filter(|c| !(c.mode == 'b' && c.param.is_none()))
                    .filter(|c| {
                        c.param
                            .as_deref()
                            .is_none_or(|p| !p.contains([' ', '\r', '\n', '\0']))
                    })
                    .map(|c| (c.adding, c.mode, c.param.clone()))
                    .collect();
                if carried.is_empty() {
                    return Published::Here(req);
                }
                Event::Mode {
                    chan: chan.clone(),
                    mask: mask.to_string(),
                    changes: carried,
                }
            }
            _ => return Published::Here(req),
        };
        let chan = match &event {
            Event::Join { chan, .. }
            | Event::Part { chan, .. }
            | Event::Quit { chan, .. }
            | Event::Topic { chan, .. }
            | Event::Kick { chan, .. }
            | Event::Mode { chan, .. }
            | Event::Notify { chan, .. }
            | Event::Nick { chan, .. } => chan.clone(),
            _ => match &req {
                Request::ChanMsg { chan, .. } => chan.clone(),
                _ => String::new(),
            },
        };
        self.claim_seq += 1;
        let token = self.claim_seq;
        let env = Envelope {
            node: node.to_string(),
            token,
            event,
        };
        let Some(payload) = env.encode() else {
            // Not carriable (never from a registered client): handled here.
            return Published::Here(req);
        };
        let partition = partition_of(&casefold(&chan));
        let msg = match &req {
            Request::ChanMsg { chan, said } => Some(Box::new(SentMsg {
                from,
                chan: chan.clone(),
                kind: said.kind,
            })),
            _ => None,
        };
        self.chan_waits.insert(token, (from, req));
        self.engine_out.push(EngineOp::Publish {
            token,
            partition,
            payload,
            kept: msg.as_ref().is_some_and(|m| m.kind != MessageKind::Tagmsg),
            msg,
        });
        Published::Waiting
    }

    /// An event from the engine, on the owner of its channel's partition.
    pub(crate) fn cluster_event(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        info: &ServerInfo,
        outbox: &mut Outbox,
        node: &str,
        env: Envelope,
    ) {
        let nobody = ClientRef {
            shard: ctx.shard_id().0,
            id: NOBODY,
        };
        match env.event {
            Event::Direct { .. } if env.node == node => return, // answered by the engine
            Event::Direct {
                to,
                kind,
                mask,
                account,
                msgid,
                time,
                tags,
                from,
                text,
            } => {
                let Some((holder, holder_account)) = self.holder_entry(&to) else {
                    // Gone meanwhile: the sender hears it (PRIVMSG only).
                    if kind == MessageKind::Privmsg {
                        self.publish_event(
                            node,
                            0,
                            &to,
                            Event::Bounce {
                                to_node: env.node,
                                client: from,
                                target: to.clone(),
                            },
                        );
                    }
                    return;
                };
                let mut conv = None;
                if let (Some(peer), Some(sender)) = (&holder_account, &account) {
                    // Between two accounts: every node keeps it in their
                    // conversation (this one when its event comes back).
                    let m = Stored {
                        target: conversation_key(sender, peer).into(),
                        to: to.clone(),
                        msgid: msgid.clone(),
                        time,
                        source: mask.clone(),
                        account: sender.clone(),
                        kind,
                        tags: tags.clone().unwrap_or_default(),
                        text: text.clone(),
                    };
                    conv = Some(m);
                }
                let out = remote_out(kind, &mask, &to, &text, tags, account, msgid, time);
                let private = ChatMsg::Private {
                    to: holder,
                    out,
                    ack: nobody,
                    notify_away: kind == MessageKind::Privmsg,
                    remote_sender: Some(Box::new(crate::mail::RemoteSender {
                        node: env.node,
                        client: from,
                        target: to,
                    })),
                };
                // Delivered once its conversation event is in the engine: a
                // reply the holder makes is then published after it, so
                // every node keeps them in that order.
                self.claim_seq += 1;
                let token = self.claim_seq;
                if conv.is_some_and(|m| self.publish_conv(&m, token)) {
                    self.conv_waits
                        .insert(token, (ShardId(holder.shard), private));
                } else {
                    outbox.post(ctx, ShardId(holder.shard), private);
                }
                return;
            }
            ev @ (Event::SyncAsk { .. }
            | Event::SyncMembers { .. }
            | Event::SyncChannel { .. }
            | Event::SyncEnd { .. }) => {
                let origin: Arc<str> = env.node.as_str().into();
                self.sync_event(ctx, outbox, node, origin, env.token, ev);
                return;
            }
            Event::Invite {
                chan,
                mask,
                target,
                from,
            } => {
                let Some((holder, _)) = self.holder_entry(&target) else {
                    let bounce = Event::Bounce {
                        to_node: env.node,
                        client: from,
                        target: target.clone(),
                    };
                    self.publish_event(node, 0, &target, bounce);
                    return;
                };
                let to = crate::casemap::owner_of(&chan, ctx.shards());
                let req = Request::InviteFromNode {
                    target: holder,
                    nick: target,
                    chan,
                    mask,
                };
                outbox.post(ctx, ShardId(to), ChatMsg::Request { from: nobody, req });
                return;
            }
            Event::WhoisAsk { .. } if env.node == node => return, // answered by the engine
            ev @ Event::WhoisAsk { .. } => {
                self.whois_asked(ctx, outbox, env.node, env.token, ev);
                return;
            }
            ev @ Event::WhoisAnswer { .. } => {
                self.whois_answered(ctx, outbox, node, ev);
                return;
            }
            Event::Bounce {
                to_node,
                client,
                target,
            } => {
                if to_node == node {
                    let to = ClientRef {
                        shard: client.0,
                        id: client.1,
                    };
                    let nums = vec![super::no_such_nick(&target)];
                    outbox.post(ctx, ShardId(to.shard), ChatMsg::Notify { to, nums });
                }
                return;
            }
            Event::AwayReply {
                to_node,
                client,
                nick,
                text,
            } => {
                if to_node == node {
                    let to = ClientRef {
                        shard: client.0,
                        id: client.1,
                    };
                    let nums = vec![Numeric::new(RPL_AWAY, [nick, text])];
                    outbox.post(ctx, ShardId(to.shard), ChatMsg::Notify { to, nums });
                }
                return;
            }
            _ => {}
        }
        if !self.syncs.is_empty() {
            match &env.event {
                Event::Topic { chan, .. } => self.sync_touch_state(chan, true),
                Event::Mode { chan, .. } => self.sync_touch_state(chan, false),
                _ => {}
            }
        }
        if let Event::Conv { .. } = env.event {
            // Every node's copy, this one's included (one it kept already,
            // such as a conversation between two of its users, is skipped),
            // in the engine's order: the recipient's node delivers only once
            // its event is there, so a reply comes after what it answers.
            if let Some(m) = kept_message(env.event).filter(|m| self.keeps_here(ctx, m)) {
                self.history.append(ctx, m);
            }
            return;
        }
        if env.node == node {
            // Our own: handle the request it carried, now, in this order.
            self.chan_echo(ctx, info, outbox, env.token);
            return;
        }
        let shards = ctx.shards();
        // Made only where needed: not for messages, the bulk of events.
        let origin_of = || -> Arc<str> { env.node.as_str().into() };
        match env.event {
            Event::Join {
                chan,
                mask,
                account,
                quit_key,
                op,
                realname,
            } => {
                let ckey: NameKey = casefold(&chan).into();
                let origin = origin_of();
                let member = RemoteMember {
                    mask: mask.clone(),
                    account: account.clone(),
                    quit_key,
                    op,
                    voice: false,
                };
                let nick: NameKey = casefold(member.nick()).into();
                if !self.syncs.is_empty() {
                    self.sync_touch(&origin, &ckey, &nick);
                }
                let ch = self
                    .chans
                    .entry(ckey.clone())
                    .or_insert_with(|| Channel::new(chan, shards));
                if ch.remote.insert((origin, nick), member).is_some() {
                    return;
                }
                let mut out = Outgoing::new(line(&mask, "JOIN", &[&ch.name], false));
                let shown = account.as_deref().unwrap_or("*");
                out.ext_body =
                    Some(line(&mask, "JOIN", &[&ch.name, shown, &realname], true).into());
                out.account = account.map(Into::into);
                out.stamp();
                let d = delivery(&ckey, out, nobody, false, Membership::Same);
                ch.deliver(ctx, outbox, d);
            }
            Event::Notify {
                chan,
                mask,
                kind,
                once,
                body,
            } => {
                let ckey: NameKey = casefold(&chan).into();
                let Some(ch) = self.chans.get_mut(&ckey) else {
                    return;
                };
                let nick: NameKey = casefold(mask.split('!').next().unwrap_or(&mask)).into();
                let Some(member) = ch.remote.get_mut(&(origin_of(), nick)) else {
                    return;
                };
                let words: Vec<&str> = body.split(' ').collect();
                let needs = match kind {
                    'C' => {
                        // `:mask ACCOUNT <name>|*`
                        if let Some(a) = words.get(2) {
                            member.account = (*a != "*").then(|| a.to_string());
                        }
                        crate::mail::Caps::ACCOUNT_NOTIFY
                    }
                    'H' => {
                        // `:mask CHGHOST <user> <host>`
                        if let (Some(u), Some(h)) = (words.get(2), words.get(3)) {
                            let nick = member.nick().to_string();
                            member.mask = format!("{nick}!{u}@{h}");
                        }
                        crate::mail::Caps::CHGHOST
                    }
                    'A' => crate::mail::Caps::AWAY_NOTIFY,
                    'I' => crate::mail::Caps::INVITE_NOTIFY,
                    _ => crate::mail::Caps::SETNAME,
                };
                let ops_only = kind == 'I' && ch.modes.invite_only;
                let account = member.account.clone();
                let mut line = body.into_bytes();
                line.extend_from_slice(b"\r\n");
                let mut out = Outgoing::new(line);
                out.account = account.map(Into::into);
                out.stamp();
                let mut d = delivery(&ckey, out, nobody, false, Membership::Same);
                d.needs = needs;
                d.ops_only = ops_only;
                d.once = Some(once);
                ch.deliver(ctx, outbox, d);
            }
            Event::Topic {
                chan,
                mask,
                time,
                text,
            } => {
                let ckey: NameKey = casefold(&chan).into();
                let Some(ch) = self.chans.get_mut(&ckey) else {
                    return;
                };
                let setter = mask.split('!').next().unwrap_or(&mask).to_string();
                ch.topic = (!text.is_empty()).then(|| Topic {
                    text: text.clone(),
                    setter,
                    time,
                });
                let mut out = Outgoing::new(line(&mask, "TOPIC", &[&ch.name, &text], true));
                out.stamp();
                let d = delivery(&ckey, out, nobody, false, Membership::Same);
                ch.deliver(ctx, outbox, d);
            }
            Event::Kick {
                chan,
                mask,
                target,
                reason,
            } => {
                let ckey: NameKey = casefold(&chan).into();
                let folded: NameKey = casefold(&target).into();
                let Some(ch) = self.chans.get_mut(&ckey) else {
                    return;
                };
                if let Some(&victim) = ch.by_nick.get(&folded) {
                    // One of this node's members.
                    let nick = ch.members.get(&victim).map_or(target, |m| m.nick.clone());
                    let mut out =
                        Outgoing::new(line(&mask, "KICK", &[&ch.name, &nick, &reason], true));
                    out.stamp();
                    let d = delivery(&ckey, out, nobody, false, Membership::Remove(victim));
                    ch.deliver(ctx, outbox, d);
                    ch.remove(victim);
                } else {
                    let key = ch.remote.keys().find(|(_, n)| *n == folded).cloned();
                    let Some(key) = key else {
                        return;
                    };
                    if !self.syncs.is_empty() {
                        self.sync_touch(&key.0, &ckey, &key.1);
                    }
                    let Some(ch) = self.chans.get_mut(&ckey) else {
                        return;
                    };
                    remote_kick(ch, ctx, outbox, &ckey, &key, nobody, &mask, &reason);
                }
                if ch_empty(self.chans.get(&ckey)) {
                    self.chans.remove(&ckey);
                }
            }
            Event::Mode {
                chan,
                mask,
                changes,
            } => {
                let ckey: NameKey = casefold(&chan).into();
                let Some(ch) = self.chans.get_mut(&ckey) else {
                    return;
                };
                // Its operator status as this node knows it: the same as on
                // its own node, since every node applies the same events.
                let setter: NameKey = casefold(mask.split('!').next().unwrap_or(&mask)).into();
                let is_op = ch.remote.get(&(origin_of(), setter)).is_some_and(|m| m.op);
                let changes = changes
                    .into_iter()
                    .map(|(adding, mode, param)| ModeChange {
                        adding,
                        mode,
                        param,
                    })
                    .collect();
                // The numerics are the setter's, answered on its node.
                let _ = super::modes::apply_modes(
                    ch, ctx, outbox, nobody, &ckey, &mask, changes, is_op,
                );
            }
            Event::Part { chan, mask, reason } => {
                self.remote_left(
                    ctx,
                    outbox,
                    nobody,
                    origin_of(),
                    &chan,
                    &mask,
                    None,
                    |name| {
                        let params: &[&str] = if reason.is_empty() {
                            &[name]
                        } else {
                            &[name, &reason]
                        };
                        line(&mask, "PART", params, true)
                    },
                );
            }
            Event::Quit {
                chan,
                mask,
                once,
                reason,
            } => {
                let body = |_: &str| line(&mask, "QUIT", &[&reason], true);
                self.remote_left(
                    ctx,
                    outbox,
                    nobody,
                    origin_of(),
                    &chan,
                    &mask,
                    Some(once),
                    body,
                );
            }
            Event::Nick {
                chan,
                mask,
                nick,
                once,
            } => {
                let ckey: NameKey = casefold(&chan).into();
                let old: NameKey = casefold(mask.split('!').next().unwrap_or(&mask)).into();
                let origin = origin_of();
                if !self.syncs.is_empty() {
                    self.sync_touch(&origin, &ckey, &old);
                    self.sync_touch(&origin, &ckey, &casefold(&nick).into());
                }
                let Some(ch) = self.chans.get_mut(&ckey) else {
                    return;
                };
                let Some(mut member) = ch.remote.remove(&(origin.clone(), old)) else {
                    return;
                };
                let rest = mask.split_once('!').map_or("", |(_, r)| r);
                member.mask = if rest.is_empty() {
                    nick.clone()
                } else {
                    format!("{nick}!{rest}")
                };
                let account = member.account.clone();
                ch.remote.insert((origin, casefold(&nick).into()), member);
                let mut out = Outgoing::new(line(&mask, "NICK", &[&nick], true));
                out.account = account.map(Into::into);
                out.stamp();
                let mut d = delivery(&ckey, out, nobody, false, Membership::Same);
                d.once = Some(once);
                ch.deliver(ctx, outbox, d);
            }
            Event::Msg {
                to,
                kind,
                mask,
                account,
                msgid,
                time,
                tags,
                text,
            } => {
                let ckey: NameKey = casefold(&to).into();
                let Some(ch) = self.chans.get(&ckey) else {
                    return;
                };
                let out = remote_out(
                    kind,
                    &mask,
                    &to,
                    &text,
                    tags.clone(),
                    account.clone(),
                    msgid.clone(),
                    time,
                );
                let d = delivery(&ckey, out, nobody, false, Membership::Same);
                ch.deliver(ctx, outbox, d);
                if kind != MessageKind::Tagmsg && self.history.keeps(&ckey) {
                    let m = Stored {
                        target: ckey.clone(),
                        to,
                        msgid,
                        time,
                        source: mask,
                        account: account.unwrap_or_default(),
                        kind,
                        tags: tags.unwrap_or_default(),
                        text,
                    };
                    self.history.append(ctx, m);
                }
            }
            Event::Conv { .. } => {} // above
            Event::Direct { .. }
            | Event::Bounce { .. }
            | Event::AwayReply { .. }
            | Event::Invite { .. }
            | Event::SyncAsk { .. }
            | Event::SyncMembers { .. }
            | Event::SyncChannel { .. }
            | Event::SyncEnd { .. }
            | Event::WhoisAsk { .. }
            | Event::WhoisAnswer { .. } => {} // above
        }
    }

    /// Messages a partition's stream kept, in the channels' order (oldest
    /// first): each one this node's history lacks is placed there by its
    /// time (after those of the same time).
    ///
    /// The time is raised, along the stream, to the latest before it in the
    /// same channel or conversation, as every node that saw them live raised
    /// it appending them in that order (origins' clocks differ): so placing
    /// by time puts them in the engine's order, among what this node has.
    /// Returns how many were new here.
    pub(crate) fn catch_up(&mut self, ctx: &mut Ctx<'_, ChatShard>, envs: Vec<Envelope>) -> usize {
        let mut placed = 0;
        let mut floor: HashMap<Arc<str>, u64> = HashMap::new();
        for env in envs {
            let Some(mut m) = kept_message(env.event) else {
                continue;
            };
            if !self.keeps_here(ctx, &m) {
                continue;
            }
            let last = floor.entry(m.target.clone()).or_insert(0);
            m.time = m.time.max(*last);
            *last = m.time;
            if self.history.catch_up(ctx, m) {
                placed += 1;
            }
        }
        placed
    }

    /// Whether this shard keeps `m`'s history (history on, and the key's
    /// owner here).
    fn keeps_here(&self, ctx: &Ctx<'_, ChatShard>, m: &Stored) -> bool {
        self.history.keeps(&m.target) && owner_of_key(&m.target, ctx.shards()) == ctx.shard_id().0
    }

    /// A private message to `target`, a nick nobody here holds: published
    /// for the node whose claim it is, if another node's (the engine checks
    /// the claim and publishes in one step); the sender is answered when
    /// the engine says which (`direct_published`).
    pub(super) fn publish_direct(
        &mut self,
        from: ClientRef,
        target: String,
        mut said: Box<Said>,
    ) -> Answer {
        let (msgid, time) = self.history.stamp(None);
        said.out.msgid = Some(msgid.clone());
        said.out.time_ms = Some(time);
        let env = Envelope {
            node: self.node.clone(),
            token: 0,
            event: Event::Direct {
                to: target.clone(),
                kind: said.kind,
                mask: said.mask.to_string(),
                account: said.account.as_deref().map(str::to_string),
                msgid: msgid.to_string(),
                time,
                tags: said.out.client_tags.as_deref().map(str::to_string),
                from: (from.shard, from.id),
                text: said.text.clone(),
            },
        };
        let Some(payload) = env.encode() else {
            // Not carriable (never from a registered client).
            let quiet = said.kind != MessageKind::Privmsg;
            return reply(super::quiet_if(quiet, vec![super::no_such_nick(&target)]));
        };
        let token = self.direct_out(casefold(&target).into(), payload);
        self.direct_waits.insert(token, (from, said));
        (0, None)
    }

    /// Sends `payload` to the node whose claim nick `key` is
    /// ([`crate::cluster`]'s direct script); the engine's answer comes to
    /// `direct_published` with the token returned.
    fn direct_out(&mut self, key: NameKey, payload: String) -> u64 {
        self.claim_seq += 1;
        let token = self.claim_seq;
        let partition = partition_of(&key);
        self.engine_out.push(EngineOp::Direct {
            token,
            key,
            partition,
            payload,
        });
        token
    }

    /// Tells `from` that what it sent (`command` to `target`) did not
    /// reach the node of `target`: its subscriber is away.
    fn post_unreachable(
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        from: ClientRef,
        command: &'static str,
        target: String,
    ) {
        let r = StandardReply {
            to: from,
            kind: Standard::Fail,
            command,
            code: "UNREACHABLE",
            context: vec![target],
            text: "Not delivered: that user's server is cut off from the cluster engine"
                .to_string(),
        };
        outbox.post(ctx, ShardId(from.shard), ChatMsg::Standard(Box::new(r)));
    }

    /// The engine's answer to a private message for another node: sent
    /// gets the sender its echo; nobody holding the nick, 401 (PRIVMSG
    /// only, as on a single node); a holder whose node cannot take it now
    /// (its subscriber is away), `FAIL <command> UNREACHABLE <nick>`.
    pub(crate) fn direct_published(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        token: u64,
        outcome: super::DirectOutcome,
    ) {
        let Some((from, said)) = self.direct_waits.remove(&token) else {
            if let Some((from, nick, chan, mask)) = self.invite_waits.remove(&token) {
                self.invite_sent(ctx, outbox, from, nick, chan, &mask, outcome);
            } else {
                self.whois_sent(ctx, outbox, token, outcome);
            }
            return;
        };
        let quiet = said.kind != MessageKind::Privmsg;
        let body = match outcome {
            super::DirectOutcome::Sent => ReplyBody::Echo(said.out),
            super::DirectOutcome::NoSuchNick => {
                super::quiet_if(quiet, vec![super::no_such_nick(&said.to)])
            }
            super::DirectOutcome::Unreachable => {
                Self::post_unreachable(ctx, outbox, from, said.kind.command(), said.to.clone());
                ReplyBody::Done
            }
        };
        outbox.post(ctx, ShardId(from.shard), ChatMsg::reply(from, body));
    }

    /// An INVITE of `nick`, held by nobody here, into `chan`: checked as on
    /// a single node (the inviter is a member, an operator on a `+i`
    /// channel, the invitee not a member), then sent to the node whose claim
    /// the nick is (as a private message is), answered when the engine says.
    pub(super) fn invite_remote(
        &mut self,
        from: ClientRef,
        nick: String,
        chan: &str,
        mask: &str,
    ) -> Answer {
        let ckey: NameKey = casefold(chan).into();
        let Some(ch) = self.chans.get(&ckey) else {
            return no_such_channel(chan);
        };
        let Some(inviter) = ch.members.get(&from) else {
            return not_on_channel(&ch.name);
        };
        let folded = casefold(&nick);
        if ch.remote.keys().any(|(_, n)| **n == *folded) {
            let text = "is already on channel";
            let e = Numeric::new(ERR_USERONCHANNEL, [nick.as_str(), &ch.name, text]);
            return reply(ReplyBody::Numerics(vec![e]));
        }
        if ch.modes.invite_only && !inviter.op {
            return reply(ReplyBody::Numerics(vec![not_op(&ch.name)]));
        }
        let name = ch.name.clone();
        let env = Envelope {
            node: self.node.clone(),
            token: 0,
            event: Event::Invite {
                chan: name.clone(),
                mask: mask.to_string(),
                target: nick.clone(),
                from: (from.shard, from.id),
            },
        };
        let Some(payload) = env.encode() else {
            return reply(ReplyBody::Numerics(vec![super::no_such_nick(&nick)]));
        };
        let token = self.direct_out(folded.into(), payload);
        self.invite_waits
            .insert(token, (from, nick, name, mask.to_string()));
        (0, None)
    }

    /// The engine's answer to an INVITE for another node: 341 when that
    /// node took it, 401 when no live node holds the nick, `FAIL INVITE
    /// UNREACHABLE` when its node's subscriber is away.
    #[allow(clippy::too_many_arguments)]
    fn invite_sent(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        from: ClientRef,
        nick: String,
        chan: String,
        mask: &str,
        outcome: super::DirectOutcome,
    ) {
        let body = match outcome {
            super::DirectOutcome::Sent => {
                // invite-notify here and on the other nodes.
                let ckey: NameKey = casefold(&chan).into();
                if let Some(ch) = self.chans.get(&ckey) {
                    let mut out = Outgoing::new(line(mask, "INVITE", &[&nick, &ch.name], false));
                    out.account = ch.account_of(from);
                    out.stamp();
                    // No request counts these deliveries: acknowledged to
                    // nobody.
                    let nobody = ClientRef {
                        shard: ctx.shard_id().0,
                        id: NOBODY,
                    };
                    let mut d = delivery(&ckey, out, nobody, false, Membership::Same);
                    d.needs = crate::mail::Caps::INVITE_NOTIFY;
                    d.ops_only = ch.modes.invite_only;
                    ch.deliver(ctx, outbox, d);
                }
                self.publish_invite_notify(&chan, mask, &nick);
                ReplyBody::Numerics(vec![Numeric::new(RPL_INVITING, [nick, chan])])
            }
            super::DirectOutcome::NoSuchNick => {
                ReplyBody::Numerics(vec![super::no_such_nick(&nick)])
            }
            super::DirectOutcome::Unreachable => {
                Self::post_unreachable(ctx, outbox, from, "INVITE", nick);
                ReplyBody::Done
            }
        };
        outbox.post(ctx, ShardId(from.shard), ChatMsg::reply(from, body));
    }

    /// A published channel message reached `missed` fewer nodes than the
    /// `up` this node sees (their subscribers are away): its sender hears
    /// it (`WARN <command> PARTIAL_DELIVERY <channel>`), since those nodes'
    /// members will not see it. TAGMSG quietly.
    pub(crate) fn chan_partial(
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        msg: SentMsg,
        missed: usize,
        up: usize,
    ) {
        let SentMsg { from, chan, kind } = msg;
        if kind == MessageKind::Tagmsg {
            return;
        }
        let r = StandardReply {
            to: from,
            kind: Standard::Warn,
            command: kind.command(),
            code: "PARTIAL_DELIVERY",
            context: vec![chan],
            text: format!(
                "Not delivered to {missed} of the {up} servers: their link to the cluster engine is down"
            ),
        };
        let to = from.shard;
        outbox.post(ctx, ShardId(to), ChatMsg::Standard(Box::new(r)));
    }

    /// A local member's NICK, QUIT, AWAY, ACCOUNT, SETNAME or CHGHOST
    /// (`notice`) in channel `chan`, for the other nodes: one event per
    /// channel, all with the same key, so that a member of several of them
    /// there gets one line.
    pub(super) fn publish_user_event(&mut self, notice: &UserNotice, chan: &str) {
        let body = String::from_utf8_lossy(&notice.out.body);
        let body = body.trim_end_matches(['\r', '\n']);
        let Some(mask) = body.strip_prefix(':').and_then(|b| b.split(' ').next()) else {
            return;
        };
        let event = match &notice.kind {
            NoticeKind::Quit => Event::Quit {
                chan: chan.to_string(),
                mask: mask.to_string(),
                once: self.quit_key(notice.who),
                reason: body
                    .split_once(" QUIT :")
                    .map_or("", |(_, r)| r)
                    .to_string(),
            },
            NoticeKind::Nick { nick } => {
                // Every copy of one change has the same time.
                let who = format!("{}.{}", notice.who.shard, notice.who.id);
                let time = notice.out.time_ms.unwrap_or(0).to_string();
                Event::Nick {
                    chan: chan.to_string(),
                    mask: mask.to_string(),
                    nick: nick.clone(),
                    once: user_event_key(&[&self.node, &self.incarnation, &who, &time, nick]),
                }
            }
            kind => {
                let letter = match kind {
                    NoticeKind::Away => 'A',
                    NoticeKind::Account { .. } => 'C',
                    NoticeKind::Setname => 'S',
                    NoticeKind::Chghost { .. } => 'H',
                    _ => return,
                };
                // Every copy of one change has the same time.
                let who = format!("{}.{}", notice.who.shard, notice.who.id);
                let time = notice.out.time_ms.unwrap_or(0).to_string();
                let l = letter.to_string();
                Event::Notify {
                    chan: chan.to_string(),
                    mask: mask.to_string(),
                    kind: letter,
                    once: user_event_key(&[&self.node, &self.incarnation, &who, &time, &l]),
                    body: body.to_string(),
                }
            }
        };
        let node = self.node.clone();
        self.publish_event(&node, 0, chan, event);
    }

    /// An INVITE of `nick` to `chan` by local member `mask`, for the other
    /// nodes' members with `invite-notify` (not while the engine is away).
    pub(super) fn publish_invite_notify(&mut self, chan: &str, mask: &str, nick: &str) {
        if !(self.cluster && self.engine_live) {
            return;
        }
        self.claim_seq += 1;
        let seq = self.claim_seq.to_string();
        let event = Event::Notify {
            chan: chan.to_string(),
            mask: mask.to_string(),
            kind: 'I',
            once: user_event_key(&[&self.node, &self.incarnation, &seq, "I"]),
            body: format!(":{mask} INVITE {nick} {chan}"),
        };
        let node = self.node.clone();
        self.publish_event(&node, 0, chan, event);
    }

    /// The key of local client `who`'s QUIT lines on the other nodes, the
    /// same from every shard: its JOIN events carry it, so the other nodes
    /// show one QUIT line whether the QUIT comes from here or from this
    /// node leaving the view (some channels the one, some the other, when
    /// it stops). The incarnation keeps a restarted node's ids apart.
    pub(super) fn quit_key(&self, who: ClientRef) -> u64 {
        let who = format!("{}.{}", who.shard, who.id);
        user_event_key(&[&self.node, &self.incarnation, &who, "Q"])
    }

    /// Publishes a reply to another node's user (`event`, addressed to it)
    /// on the partition of nick `target`, whose owner on that node sent
    /// what it answers.
    pub(crate) fn publish_reply(&mut self, target: &str, event: Event) {
        let node = self.node.clone();
        self.publish_event(&node, 0, target, event);
    }

    /// Publishes `event` (no request waits for it) on the partition of
    /// `name` (a channel or a nick).
    fn publish_event(&mut self, node: &str, token: u64, name: &str, event: Event) {
        self.publish_on(node, token, partition_of(&casefold(name)), event);
    }

    /// Publishes `event` with `token` on `partition`'s engine channel.
    pub(super) fn publish_on(&mut self, node: &str, token: u64, partition: u16, event: Event) {
        self.publish_with(node, token, partition, event, false);
    }

    /// A private message between two accounts (`m`, as this node keeps
    /// it), for the other nodes' history of the conversation, and its
    /// stream: every node shows the same conversation. Not while the engine
    /// is away (nor a TAGMSG, never kept).
    /// Returns whether it was published.
    pub(super) fn publish_conv(&mut self, m: &Stored, token: u64) -> bool {
        if !(self.cluster && self.engine_live) || m.kind == MessageKind::Tagmsg {
            return false;
        }
        let Some((lo, hi)) = crate::store::conversation_parties(&m.target) else {
            return false;
        };
        let peer = if *lo == *casefold(&m.account) { hi } else { lo };
        let event = Event::Conv {
            to: m.to.clone(),
            peer: peer.to_string(),
            kind: m.kind,
            mask: m.source.clone(),
            account: m.account.clone(),
            msgid: m.msgid.clone(),
            time: m.time,
            tags: (!m.tags.is_empty()).then(|| m.tags.clone()),
            text: m.text.clone(),
        };
        let node = self.node.clone();
        self.publish_with(&node, token, partition_of(&m.target), event, true)
    }

    /// The engine answered (or will not answer) the `PUBLISH` of token
    /// `token`: a private message held for its conversation event goes to
    /// its holder now.
    pub(crate) fn conv_published(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        token: u64,
    ) {
        if let Some((to, private)) = self.conv_waits.remove(&token) {
            let _ = outbox.post(ctx, to, private);
        }
    }

    /// Publishes `event`; into the partition's stream too if `kept`.
    /// Whether it could be carried.
    fn publish_with(
        &mut self,
        node: &str,
        token: u64,
        partition: u16,
        event: Event,
        kept: bool,
    ) -> bool {
        let env = Envelope {
            node: node.to_string(),
            token,
            event,
        };
        let Some(payload) = env.encode() else {
            return false;
        };
        self.engine_out.push(EngineOp::Publish {
            token,
            partition,
            payload,
            msg: None,
            kept,
        });
        true
    }

    /// Another node's member of `chan` left (PART or QUIT, the line `body`
    /// makes from the channel's name); an emptied channel is forgotten.
    #[allow(clippy::too_many_arguments)]
    fn remote_left(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        nobody: ClientRef,
        origin: Arc<str>,
        chan: &str,
        mask: &str,
        once: Option<u64>,
        body: impl FnOnce(&str) -> Vec<u8>,
    ) {
        let ckey: NameKey = casefold(chan).into();
        let nick: NameKey = casefold(mask.split('!').next().unwrap_or(mask)).into();
        if !self.syncs.is_empty() {
            self.sync_touch(&origin, &ckey, &nick);
        }
        let Some(ch) = self.chans.get_mut(&ckey) else {
            return;
        };
        remote_leaves(
            ch,
            ctx,
            outbox,
            &ckey,
            &(origin, nick),
            nobody,
            once,
            |name, _| body(name),
        );
        if ch.members.is_empty() && ch.remote.is_empty() {
            self.chans.remove(&ckey);
        }
    }

    /// Handles a published request whose event came back (or will not:
    /// the engine dropped it), as a single node would.
    pub(crate) fn chan_echo(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        info: &ServerInfo,
        outbox: &mut Outbox,
        token: u64,
    ) {
        let Some((from, req)) = self.chan_waits.remove(&token) else {
            return;
        };
        self.handle_here(ctx, info, outbox, from, req);
    }

    /// The engine can no longer carry this shard's events: every published
    /// request still waiting is handled here now.
    pub(crate) fn chan_flush_local(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        info: &ServerInfo,
        outbox: &mut Outbox,
    ) {
        let mut waiting: Vec<u64> = self.chan_waits.keys().copied().collect();
        waiting.sort_unstable();
        for token in waiting {
            self.chan_echo(ctx, info, outbox, token);
        }
    }

    /// Another node went: its members leave every channel here (a QUIT
    /// line to this node's members; one per channel).
    pub(crate) fn node_gone(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        node: &str,
    ) {
        let nobody = ClientRef {
            shard: ctx.shard_id().0,
            id: NOBODY,
        };
        let mut empty = Vec::new();
        for (ckey, ch) in self.chans.iter_mut() {
            let gone: Vec<_> = ch
                .remote
                .keys()
                .filter(|(n, _)| &**n == node)
                .cloned()
                .collect();
            let text = format!("{node} left the cluster");
            for k in gone {
                // The key its JOIN gave: one QUIT line a member, even where
                // its node's QUIT came through for some channels.
                let once = ch.remote.get(&k).map(|m| m.quit_key);
                remote_leaves(ch, ctx, outbox, ckey, &k, nobody, once, |_, mask| {
                    line(mask, "QUIT", &[&text], true)
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

/// The message history keeps of a channel message or a conversation's
/// ([`Event::Msg`], [`Event::Conv`]), with its history's key; `None` for
/// anything else (a TAGMSG included).
fn kept_message(event: Event) -> Option<Stored> {
    let (target, to, kind, mask, account, msgid, time, tags, text) = match event {
        Event::Msg {
            to,
            kind,
            mask,
            account,
            msgid,
            time,
            tags,
            text,
        } => {
            let key: Arc<str> = casefold(&to).as_str().into();
            let account = account.unwrap_or_default();
            (key, to, kind, mask, account, msgid, time, tags, text)
        }
        Event::Conv {
            to,
            peer,
            kind,
            mask,
            account,
            msgid,
            time,
            tags,
            text,
        } => {
            let key: Arc<str> = conversation_key(&account, &peer).into();
            (key, to, kind, mask, account, msgid, time, tags, text)
        }
        _ => return None,
    };
    (kind != MessageKind::Tagmsg).then(|| Stored {
        target,
        to,
        msgid,
        time,
        source: mask,
        account,
        kind,
        tags: tags.unwrap_or_default(),
        text,
    })
}

/// Another node's member `key` kicked from `ch` by `mask` (`source` caused
/// it: this node's kicker, or nobody): the KICK line to this node's
/// members; how many shards it went to.
#[allow(clippy::too_many_arguments)]
pub(super) fn remote_kick(
    ch: &mut Channel,
    ctx: &mut Ctx<'_, ChatShard>,
    outbox: &mut Outbox,
    ckey: &NameKey,
    key: &(Arc<str>, NameKey),
    source: ClientRef,
    mask: &str,
    reason: &str,
) -> u32 {
    let Some(gone) = ch.remote.remove(key) else {
        return 0;
    };
    let nick = gone.nick().to_string();
    let mut out = Outgoing::new(line(mask, "KICK", &[&ch.name, &nick, reason], true));
    out.account = ch.account_of(source);
    out.stamp();
    let d = delivery(ckey, out, source, false, Membership::Same);
    ch.deliver(ctx, outbox, d)
}

/// Whether `ch` (if any) has no member on any node.
fn ch_empty(ch: Option<&Channel>) -> bool {
    ch.is_some_and(|c| c.members.is_empty() && c.remote.is_empty())
}

/// The line of another node's message `kind` from `mask` to `to`.
#[allow(clippy::too_many_arguments)]
fn remote_out(
    kind: MessageKind,
    mask: &str,
    to: &str,
    text: &str,
    tags: Option<String>,
    account: Option<String>,
    msgid: String,
    time: u64,
) -> Outgoing {
    let command = kind.command();
    let mut out = match kind {
        MessageKind::Tagmsg => Outgoing::new(line(mask, command, &[to], false)),
        _ => Outgoing::new(line(mask, command, &[to, text], true)),
    };
    out.client_tags = tags.map(Into::into);
    out.tags_only = kind == MessageKind::Tagmsg;
    out.account = account.map(Into::into);
    out.msgid = Some(msgid.into());
    out.time_ms = Some(time);
    out
}

/// Removes another node's member `key` from `ch` and delivers the line `body`
/// makes (from the channel's name and the member's mask) to this node's
/// members; nothing if it was not a member.
#[allow(clippy::too_many_arguments)]
pub(super) fn remote_leaves(
    ch: &mut Channel,
    ctx: &mut Ctx<'_, ChatShard>,
    outbox: &mut Outbox,
    ckey: &NameKey,
    key: &(Arc<str>, NameKey),
    nobody: ClientRef,
    once: Option<u64>,
    body: impl FnOnce(&str, &str) -> Vec<u8>,
) {
    let Some(gone) = ch.remote.remove(key) else {
        return;
    };
    let mut out = Outgoing::new(body(&ch.name, &gone.mask));
    out.account = gone.account.map(Into::into);
    out.stamp();
    let mut d = delivery(ckey, out, nobody, false, Membership::Same);
    d.once = once;
    ch.deliver(ctx, outbox, d);
}
