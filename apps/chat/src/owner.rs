//! The owner's side: the nicks and channels whose names hash to this shard.
//!
//! An owner is the single place where a name's state lives and where everything
//! that happens to it is ordered. It answers each request with exactly one reply to
//! the asking client's shard, and for channel events posts one delivery per shard
//! that has members — never one per member. It never touches a connection: it
//! knows clients only as [`ClientRef`]s.

use std::collections::{HashMap, HashSet};

use shardline::Ctx;
use tracing::warn;

use crate::{
    casemap::{casefold, NameKey},
    clock,
    info::ServerInfo,
    mail::{
        ChanDelivery, ChatMsg, ClientRef, Membership, NoticeKind, Numeric, Outgoing, ReplyBody,
        Request, UserNotice,
    },
    message::MAX_BODY,
    outbox::Outbox,
    reply::{code::*, line, truncate},
};

/// One nick's holder.
#[derive(Debug)]
struct NickEntry {
    client: ClientRef,
}

#[derive(Debug)]
struct Member {
    nick: String,
    op: bool,
}

#[derive(Debug)]
struct Topic {
    text: String,
    setter: String,
    time: u64,
}

/// A channel, on its owner.
#[derive(Debug)]
struct Channel {
    /// The name as its creator wrote it.
    name: String,
    created: u64,
    members: HashMap<ClientRef, Member>,
    /// Members per shard: where deliveries go.
    per_shard: Vec<u32>,
    topic: Option<Topic>,
}

impl Channel {
    fn new(name: String, shards: usize) -> Channel {
        Channel {
            name,
            created: clock::now_secs(),
            members: HashMap::new(),
            per_shard: vec![0; shards],
            topic: None,
        }
    }

    fn member_shards(&self) -> impl Iterator<Item = usize> + '_ {
        self.per_shard
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(s, _)| s)
    }

    /// Whether every shard with members (and `extra`) can take one more message.
    fn room(&self, outbox: &Outbox, extra: Option<usize>) -> bool {
        self.member_shards()
            .chain(extra)
            .all(|s| outbox.has_room(s))
    }

    fn remove(&mut self, who: ClientRef) {
        if self.members.remove(&who).is_some() {
            self.per_shard[who.shard] -= 1;
        }
    }

    /// Posts a copy of `d` to every shard with members; returns how many.
    fn deliver(&self, ctx: &mut Ctx<'_, ChatMsg>, outbox: &mut Outbox, d: ChanDelivery) -> u32 {
        let mut n = 0;
        for s in self.member_shards() {
            let copy = ChanDelivery {
                chan: d.chan.clone(),
                out: d.out.clone(),
                ..d
            };
            outbox.send(ctx, s, ChatMsg::Chan(Box::new(copy)));
            n += 1;
        }
        n
    }

    fn topic_numerics(&self) -> Vec<Numeric> {
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

    /// 353 lines (cut to fit 512 bytes for any nick of up to `nicklen`) and 366.
    fn names_numerics(&self, info: &ServerInfo, multi_prefix: bool) -> Vec<Numeric> {
        // ":server 353 <nick> = <chan> :" around the names.
        let overhead = info.name().len() + info.config.limits.nicklen + self.name.len() + 16;
        let budget = MAX_BODY.saturating_sub(overhead).max(64);
        let mut out = Vec::new();
        let mut chunk = String::new();
        for m in self.members.values() {
            // Only one prefix exists (op), so multi-prefix changes nothing yet.
            let _ = multi_prefix;
            let prefix = if m.op { "@" } else { "" };
            if !chunk.is_empty() && chunk.len() + 1 + prefix.len() + m.nick.len() > budget {
                out.push(Numeric::new(
                    RPL_NAMREPLY,
                    [
                        "=".to_string(),
                        self.name.clone(),
                        std::mem::take(&mut chunk),
                    ],
                ));
            }
            if !chunk.is_empty() {
                chunk.push(' ');
            }
            chunk.push_str(prefix);
            chunk.push_str(&m.nick);
        }
        if !chunk.is_empty() {
            out.push(Numeric::new(
                RPL_NAMREPLY,
                ["=".to_string(), self.name.clone(), chunk],
            ));
        }
        out.push(end_of_names(&self.name));
        out
    }
}

fn delivery(
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
    }
}

fn end_of_names(chan: &str) -> Numeric {
    Numeric::new(RPL_ENDOFNAMES, [chan, "End of /NAMES list."])
}

fn no_such_channel(chan: &str) -> ReplyBody {
    ReplyBody::Numerics(vec![Numeric::new(
        ERR_NOSUCHCHANNEL,
        [chan, "No such channel"],
    )])
}

fn not_on_channel(chan: &str) -> ReplyBody {
    ReplyBody::Numerics(vec![Numeric::new(
        ERR_NOTONCHANNEL,
        [chan, "You're not on that channel"],
    )])
}

/// The names this shard owns.
#[derive(Debug, Default)]
pub struct Owner {
    nicks: HashMap<NameKey, NickEntry>,
    chans: HashMap<NameKey, Channel>,
    /// Clients whose request was refused ("Server busy"): their requests still in
    /// flight are refused too, so what they said is a prefix of what they sent,
    /// never a sequence with holes. Forgotten at their QUIT notice, after which
    /// no request of theirs can arrive.
    refused: HashSet<ClientRef>,
}

impl Owner {
    /// Channels owned here (for LUSERS).
    pub fn channel_count(&self) -> usize {
        self.chans.len()
    }

    /// Handles one request (anything but `Stats`) and sends its reply.
    pub fn handle(
        &mut self,
        ctx: &mut Ctx<'_, ChatMsg>,
        info: &ServerInfo,
        outbox: &mut Outbox,
        from: ClientRef,
        req: Request,
    ) {
        let work = matches!(
            req,
            Request::Join { .. }
                | Request::Part { .. }
                | Request::Topic { set: Some(_), .. }
                | Request::ChanMsg { .. }
                | Request::NickMsg { .. }
        );
        let (fanout, body) = if work && self.refused.contains(&from) {
            (0, ReplyBody::Busy)
        } else {
            self.answer(ctx, info, outbox, from, req)
        };
        if matches!(body, ReplyBody::Busy) && self.refused.insert(from) {
            let waiting: Vec<usize> = (0..ctx.shards()).map(|s| outbox.waiting(s)).collect();
            warn!(shard = ctx.shard_id().0, client = ?from, ?waiting, "outbox full: refusing a client (Server busy)");
        }
        outbox.send(
            ctx,
            from.shard,
            ChatMsg::Reply {
                to: from,
                fanout,
                body,
            },
        );
    }

    fn answer(
        &mut self,
        ctx: &mut Ctx<'_, ChatMsg>,
        info: &ServerInfo,
        outbox: &mut Outbox,
        from: ClientRef,
        req: Request,
    ) -> (u32, ReplyBody) {
        let shards = ctx.shards();
        match req {
            Request::ClaimNick { nick } => {
                let key: NameKey = casefold(&nick).into();
                let ok = match self.nicks.get(&key) {
                    Some(e) => e.client == from,
                    None => true,
                };
                if ok {
                    self.nicks.insert(key, NickEntry { client: from });
                }
                (0, ReplyBody::NickClaimed { nick, ok })
            }
            Request::ReleaseNick { key } => {
                if self.nicks.get(&key).is_some_and(|e| e.client == from) {
                    self.nicks.remove(&key);
                }
                (0, ReplyBody::Done)
            }
            Request::Join {
                chan,
                nick,
                mask,
                multi_prefix,
            } => {
                let key: NameKey = casefold(&chan).into();
                let fresh = !self.chans.contains_key(&key);
                let ch = self
                    .chans
                    .entry(key.clone())
                    .or_insert_with(|| Channel::new(chan, shards));
                if ch.members.contains_key(&from) {
                    return (0, ReplyBody::Joined(Vec::new()));
                }
                if !ch.room(outbox, Some(from.shard)) {
                    if fresh {
                        self.chans.remove(&key);
                    }
                    return (0, ReplyBody::Busy);
                }
                ch.members.insert(from, Member { nick, op: fresh });
                ch.per_shard[from.shard] += 1;
                let mut out = Outgoing::new(line(&mask, "JOIN", &[&ch.name], false));
                out.stamp();
                let n = ch.deliver(
                    ctx,
                    outbox,
                    delivery(&key, out, from, false, Membership::Add(from)),
                );
                let mut nums = Vec::new();
                if ch.topic.is_some() {
                    nums.extend(ch.topic_numerics());
                }
                nums.extend(ch.names_numerics(info, multi_prefix));
                (n, ReplyBody::Joined(nums))
            }
            Request::Part { chan, mask, reason } => {
                let key: NameKey = casefold(&chan).into();
                let Some(ch) = self.chans.get_mut(&key) else {
                    return (0, no_such_channel(&chan));
                };
                if !ch.members.contains_key(&from) {
                    return (0, not_on_channel(&ch.name));
                }
                if !ch.room(outbox, None) {
                    return (0, ReplyBody::Busy);
                }
                let params: &[&str] = if reason.is_empty() {
                    &[&ch.name]
                } else {
                    &[&ch.name, &reason]
                };
                let mut out = Outgoing::new(line(&mask, "PART", params, !reason.is_empty()));
                out.stamp();
                let n = ch.deliver(
                    ctx,
                    outbox,
                    delivery(&key, out, from, false, Membership::Remove(from)),
                );
                ch.remove(from);
                if ch.members.is_empty() {
                    self.chans.remove(&key);
                }
                (n, ReplyBody::Done)
            }
            Request::Topic {
                chan,
                mask,
                nick,
                set,
            } => {
                let key: NameKey = casefold(&chan).into();
                let Some(ch) = self.chans.get_mut(&key) else {
                    return (0, no_such_channel(&chan));
                };
                let Some(member) = ch.members.get(&from) else {
                    return (0, not_on_channel(&ch.name));
                };
                let Some(text) = set else {
                    return (0, ReplyBody::Numerics(ch.topic_numerics()));
                };
                // +t is always on.
                if !member.op {
                    return (
                        0,
                        ReplyBody::Numerics(vec![Numeric::new(
                            ERR_CHANOPRIVSNEEDED,
                            [ch.name.as_str(), "You're not channel operator"],
                        )]),
                    );
                }
                if !ch.room(outbox, None) {
                    return (0, ReplyBody::Busy);
                }
                let text = truncate(&text, info.config.limits.topiclen).to_string();
                let mut out = Outgoing::new(line(&mask, "TOPIC", &[&ch.name, &text], true));
                out.stamp();
                ch.topic = (!text.is_empty()).then(|| Topic {
                    text,
                    setter: nick,
                    time: clock::now_secs(),
                });
                let n = ch.deliver(
                    ctx,
                    outbox,
                    delivery(&key, out, from, false, Membership::Same),
                );
                (n, ReplyBody::Done)
            }
            Request::Names { chan, multi_prefix } => {
                let key: NameKey = casefold(&chan).into();
                let nums = match self.chans.get(&key) {
                    Some(ch) => ch.names_numerics(info, multi_prefix),
                    None => vec![end_of_names(&chan)],
                };
                (0, ReplyBody::Numerics(nums))
            }
            Request::ModeQuery { chan } => {
                let key: NameKey = casefold(&chan).into();
                let Some(ch) = self.chans.get(&key) else {
                    return (0, no_such_channel(&chan));
                };
                (
                    0,
                    ReplyBody::Numerics(vec![
                        Numeric::new(RPL_CHANNELMODEIS, [ch.name.as_str(), "+nt"]),
                        Numeric::new(RPL_CREATIONTIME, [ch.name.clone(), ch.created.to_string()]),
                    ]),
                )
            }
            Request::ChanMsg {
                chan,
                mut out,
                notice,
            } => {
                let key: NameKey = casefold(&chan).into();
                let Some(ch) = self.chans.get(&key) else {
                    return (0, quiet_if(notice, no_such_channel(&chan)));
                };
                // +n is always on.
                if !ch.members.contains_key(&from) {
                    let e = Numeric::new(
                        ERR_CANNOTSENDTOCHAN,
                        [ch.name.as_str(), "Cannot send to channel"],
                    );
                    return (0, quiet_if(notice, ReplyBody::Numerics(vec![e])));
                }
                if !ch.room(outbox, None) {
                    return (0, ReplyBody::Busy);
                }
                out.stamp();
                let n = ch.deliver(
                    ctx,
                    outbox,
                    delivery(&key, out, from, true, Membership::Same),
                );
                (n, ReplyBody::Done)
            }
            Request::NickMsg {
                target,
                mut out,
                notice,
            } => {
                let key = casefold(&target);
                let Some(entry) = self.nicks.get(key.as_str()) else {
                    let e = Numeric::new(ERR_NOSUCHNICK, [target.as_str(), "No such nick/channel"]);
                    return (0, quiet_if(notice, ReplyBody::Numerics(vec![e])));
                };
                let to = entry.client;
                if !outbox.has_room(to.shard) {
                    return (0, ReplyBody::Busy);
                }
                out.stamp();
                let private = ChatMsg::Private {
                    to,
                    out: out.clone(),
                    ack: from,
                };
                outbox.send(ctx, to.shard, private);
                (1, ReplyBody::Echo(out))
            }
            Request::Stats => (0, ReplyBody::Done),
        }
    }

    /// Applies a NICK/QUIT notice to the channels owned here.
    pub fn on_notice(&mut self, notice: &UserNotice) {
        if matches!(notice.kind, NoticeKind::Quit) {
            self.refused.remove(&notice.who);
        }
        for key in &notice.chans {
            let Some(ch) = self.chans.get_mut(key) else {
                continue;
            };
            match &notice.kind {
                NoticeKind::Nick { nick } => {
                    if let Some(m) = ch.members.get_mut(&notice.who) {
                        m.nick.clone_from(nick);
                    }
                }
                NoticeKind::Quit => {
                    ch.remove(notice.who);
                    if ch.members.is_empty() {
                        self.chans.remove(key);
                    }
                }
            }
        }
    }
}

/// NOTICE never gets an error reply.
fn quiet_if(notice: bool, body: ReplyBody) -> ReplyBody {
    if notice {
        ReplyBody::Done
    } else {
        body
    }
}
