//! The owner's side: the nicks, channels and client addresses whose names hash to
//! this shard.
//!
//! An owner is the single place where a name's state lives and where everything
//! that happens to it is ordered. It answers each request with exactly one reply to
//! the asking client's shard — or forwards it once to the shard that can finish it,
//! which then replies — and for channel events posts one delivery per shard that
//! has members, never one per member. It never touches a connection: it knows
//! clients only as [`ClientRef`]s.

mod channel;
mod events;
mod modes;

use crate::shard::{has_room, ChatShard, Outbox};
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use shardline::{Ctx, ShardId};
use tracing::warn;

use self::channel::Channel;
pub use self::modes::{KEYLEN, MAX_BANS};
use crate::{
    casemap::{casefold, owner_of, NameKey},
    history::History,
    info::ServerInfo,
    mail::{ChatMsg, ClientRef, NoticeKind, Numeric, ReplyBody, Request, UserNotice},
    reply::code::*,
    stats::ShardStats,
};

/// One nick's holder.
#[derive(Debug)]
struct NickEntry {
    client: ClientRef,
    /// Registration is complete: the nick is visible (messages, WHOIS, INVITE).
    registered: bool,
}

/// The names this shard owns.
#[derive(Debug)]
pub struct Owner {
    /// The history of the channels and conversations owned here.
    pub(crate) history: History,
    nicks: HashMap<NameKey, NickEntry>,
    chans: HashMap<NameKey, Channel>,
    /// Open connections per client address (only with a per-IP limit).
    ips: HashMap<IpAddr, u32>,
    /// Clients whose request was refused ("Server busy"): their requests still in
    /// flight are refused too, so what they said is a prefix of what they sent,
    /// never a sequence with holes. Forgotten at their QUIT notice, after which
    /// no request of theirs can arrive.
    refused: HashSet<ClientRef>,
}

/// What an owner does with a request: reply (with the number of deliveries it
/// made), or nothing because it forwarded the request to another shard.
type Answer = (u32, Option<ReplyBody>);

fn reply(body: ReplyBody) -> Answer {
    (0, Some(body))
}

fn numerics(nums: Vec<Numeric>) -> Answer {
    reply(ReplyBody::Numerics(nums))
}

fn no_such_nick(nick: &str) -> Numeric {
    Numeric::new(ERR_NOSUCHNICK, [nick, "No such nick/channel"])
}

impl Owner {
    /// An owner of nothing yet, whose history counts in `stats`.
    pub(crate) fn new(stats: Arc<ShardStats>) -> Owner {
        Owner {
            history: History::new(stats),
            nicks: HashMap::new(),
            chans: HashMap::new(),
            ips: HashMap::new(),
            refused: HashSet::new(),
        }
    }

    /// Channels owned here (for LUSERS).
    pub fn channel_count(&self) -> usize {
        self.chans.len()
    }

    /// Handles one request meant for an owner and sends its reply.
    pub fn handle(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        info: &ServerInfo,
        outbox: &mut Outbox,
        from: ClientRef,
        req: Request,
    ) {
        let work = match &req {
            Request::Join { .. }
            | Request::Part { .. }
            | Request::Kick { .. }
            | Request::InviteTo { .. }
            | Request::ChanMsg { .. }
            | Request::NickMsg { .. } => true,
            Request::Topic { set, .. } => set.is_some(),
            Request::Mode { changes, .. } => !changes.is_empty(),
            _ => false,
        };
        let (fanout, body) = if work && self.refused.contains(&from) {
            reply(ReplyBody::Busy)
        } else {
            self.answer(ctx, info, outbox, from, req)
        };
        let Some(body) = body else {
            return;
        };
        if matches!(body, ReplyBody::Busy) && self.refused.insert(from) {
            let waiting: Vec<usize> = (0..ctx.shards())
                .map(|s| outbox.pending(ShardId(s)))
                .collect();
            warn!(shard = ctx.shard_id().0, client = ?from, ?waiting, "outbox full: refusing a client (Server busy)");
        }
        outbox.post(
            ctx,
            ShardId(from.shard),
            ChatMsg::Reply {
                to: from,
                fanout,
                body,
            },
        );
    }

    fn answer(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        info: &ServerInfo,
        outbox: &mut Outbox,
        from: ClientRef,
        req: Request,
    ) -> Answer {
        match req {
            Request::ClaimNick { nick, registered } => {
                let key: NameKey = casefold(&nick).into();
                let ok = self.nicks.get(&key).is_none_or(|e| e.client == from);
                if ok {
                    let entry = NickEntry {
                        client: from,
                        registered,
                    };
                    self.nicks.insert(key, entry);
                }
                reply(ReplyBody::NickClaimed { nick, ok })
            }
            Request::ReleaseNick { key } => {
                if self.nicks.get(&key).is_some_and(|e| e.client == from) {
                    self.nicks.remove(&key);
                }
                reply(ReplyBody::Done)
            }
            Request::Registered { key } => {
                if let Some(e) = self.nicks.get_mut(&key).filter(|e| e.client == from) {
                    e.registered = true;
                }
                reply(ReplyBody::Done)
            }
            Request::NickCheck { nick, chan } => {
                let num = match self.holder(&nick) {
                    Some(_) => Numeric::new(
                        ERR_USERNOTINCHANNEL,
                        [nick, chan, "They aren't on that channel".into()],
                    ),
                    None => no_such_nick(&nick),
                };
                numerics(vec![num])
            }
            Request::Invite { nick, chan, mask } => {
                let Some(target) = self.holder(&nick) else {
                    return numerics(vec![no_such_nick(&nick)]);
                };
                let to = owner_of(&chan, ctx.shards());
                let req = Request::InviteTo {
                    target,
                    nick,
                    chan,
                    mask,
                };
                outbox.post(ctx, ShardId(to), ChatMsg::Request { from, req });
                (0, None)
            }
            Request::Whois { nick, viewer } => {
                let Some(target) = self.holder(&nick) else {
                    let end = Numeric::new(RPL_ENDOFWHOIS, [nick.as_str(), "End of /WHOIS list."]);
                    return numerics(vec![no_such_nick(&nick), end]);
                };
                let req = Request::WhoisLocal {
                    target,
                    nick,
                    viewer,
                };
                outbox.post(ctx, ShardId(target.shard), ChatMsg::Request { from, req });
                (0, None)
            }
            Request::NickMsg {
                target,
                mut out,
                notice,
            } => {
                let Some(to) = self.holder(&target) else {
                    return reply(quiet_if(notice, vec![no_such_nick(&target)]));
                };
                if !has_room(outbox, info, to.shard) {
                    return reply(ReplyBody::Busy);
                }
                out.stamp();
                let private = ChatMsg::Private {
                    to,
                    out: out.clone(),
                    ack: from,
                    notify_away: !notice,
                };
                outbox.post(ctx, ShardId(to.shard), private);
                (1, Some(ReplyBody::Echo(out)))
            }
            Request::IpConnect { ip } => {
                let limit = info.config.limits.max_connections_per_ip;
                let count = self.ips.entry(ip).or_insert(0);
                let ok = limit == 0 || (*count as usize) < limit;
                if ok {
                    *count += 1;
                }
                reply(ReplyBody::IpChecked { ok })
            }
            Request::IpDisconnect { ip } => {
                if let Some(n) = self.ips.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.ips.remove(&ip);
                    }
                }
                reply(ReplyBody::Done)
            }
            other => self.channel_request(ctx, info, outbox, from, other),
        }
    }

    /// The registered client holding `nick`.
    fn holder(&self, nick: &str) -> Option<ClientRef> {
        let key = casefold(nick);
        self.nicks
            .get(key.as_str())
            .filter(|e| e.registered)
            .map(|e| e.client)
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
                NoticeKind::Nick { nick } => ch.rename(notice.who, nick),
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
fn quiet_if(notice: bool, nums: Vec<Numeric>) -> ReplyBody {
    if notice {
        ReplyBody::Done
    } else {
        ReplyBody::Numerics(nums)
    }
}
