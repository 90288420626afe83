//! WHOIS of a user of another node ([`crate::cluster`], "Private messages
//! across nodes").
//!
//! - The asker's node: the nick's owner, finding nobody here holding it
//!   while the engine is live, sends [`Event::WhoisAsk`] through the direct
//!   script (the nick's claim must be another live node's) and keeps the
//!   asker waiting (its client is parked) under the ask's token, with a
//!   timer ([`ask_timeout`]). The holder's node answers with
//!   [`Event::WhoisAnswer`] on this node's private channel of the nick's
//!   partition: its numerics (only those a WHOIS has) and 318 go to the
//!   asker. Nobody holding the nick, a node that cannot take the ask, no
//!   answer in time, or an empty answer: 401 and 318.
//! - The holder's node: the nick's owner finds the holder and asks its shard
//!   (`Request::WhoisForNode`), which builds the numerics as for a local
//!   WHOIS by someone in none of its channels and not an operator (so no
//!   `+s` channel in 319, no certificate fingerprint) and publishes the
//!   answer; the holder gone, an empty answer.

use std::time::Duration;

use shardline::{Ctx, ShardId, TimerId};

use super::{no_such_nick, reply, Answer, EngineOp, Owner};
use crate::{
    casemap::{casefold, NameKey},
    cluster::events::{Envelope, Event, MAX_WHOIS_NUMERICS},
    info::ServerInfo,
    mail::{ChatMsg, ClientRef, Numeric, ReplyBody, Request},
    reply::code::*,
    shard::{ChatShard, ChatTimer, Outbox},
    store::partition_of,
};

/// The numerics an answer may give the asker (any other is dropped).
const WHOIS_CODES: [u16; 9] = [
    RPL_WHOISUSER,
    RPL_WHOISCHANNELS,
    RPL_WHOISSERVER,
    RPL_AWAY,
    RPL_WHOISOPERATOR,
    RPL_WHOISBOT,
    RPL_WHOISACCOUNT,
    RPL_WHOISSECURE,
    RPL_WHOISIDLE,
];

/// A WHOIS waiting for another node's answer.
#[derive(Debug)]
pub(super) struct WhoisWait {
    /// The asker.
    from: ClientRef,
    /// The nick as asked.
    nick: String,
    /// The timeout's timer.
    timer: TimerId,
}

/// How long an asker waits for another node's answer: 2 s, or half the
/// node timeout if that is shorter.
pub(crate) fn ask_timeout(info: &ServerInfo) -> Duration {
    (info.config.cluster.node_timeout() / 2).min(Duration::from_secs(2))
}

/// 401 and 318 for `nick`.
fn not_found(nick: &str) -> Vec<Numeric> {
    vec![no_such_nick(nick), end(nick)]
}

fn end(nick: &str) -> Numeric {
    Numeric::new(RPL_ENDOFWHOIS, [nick, "End of /WHOIS list."])
}

impl Owner {
    /// A WHOIS of `nick`, which nobody here holds, while the engine is live:
    /// asked of the node whose claim it is; answered when that node does,
    /// or with 401 (the engine finds no other live node holding it, or no
    /// answer comes in time).
    pub(super) fn whois_remote(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        info: &ServerInfo,
        from: ClientRef,
        nick: String,
        multi_prefix: bool,
    ) -> Answer {
        self.claim_seq += 1;
        let token = self.claim_seq;
        let env = Envelope {
            node: self.node.clone(),
            token,
            event: Event::WhoisAsk {
                nick: nick.clone(),
                from: (from.shard, from.id),
                multi_prefix,
            },
        };
        let Some(payload) = env.encode() else {
            // Not carriable (never a valid nick).
            return reply(ReplyBody::Numerics(not_found(&nick)));
        };
        let key: NameKey = casefold(&nick).into();
        self.engine_out.push(EngineOp::Direct {
            token,
            partition: partition_of(&key),
            key,
            payload,
        });
        let timer = ctx.set_timer(ask_timeout(info), ChatTimer::WhoisDue(token));
        self.whois_waits
            .insert(token, WhoisWait { from, nick, timer });
        (0, None)
    }

    /// The engine's answer to ask `token` (if it is one): sent, the answer
    /// or the timeout finishes it; otherwise 401 now.
    pub(super) fn whois_sent(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        token: u64,
        outcome: super::DirectOutcome,
    ) {
        if outcome != super::DirectOutcome::Sent {
            self.whois_finish(ctx, outbox, token, None);
        }
    }

    /// Ask `token` had no answer in time: 401.
    pub(crate) fn whois_due(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        token: u64,
    ) {
        if let Some(w) = self.whois_waits.remove(&token) {
            let body = ReplyBody::Numerics(not_found(&w.nick));
            outbox.post(ctx, ShardId(w.from.shard), ChatMsg::reply(w.from, body));
        }
    }

    /// Answers ask `token`, if it still waits, with `numerics` (those a
    /// WHOIS has, then 318), or 401 and 318 when there are none.
    fn whois_finish(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        token: u64,
        numerics: Option<Vec<(u16, Vec<String>)>>,
    ) {
        let Some(w) = self.whois_waits.remove(&token) else {
            return;
        };
        ctx.cancel_timer(w.timer);
        let mut nums: Vec<Numeric> = numerics
            .unwrap_or_default()
            .into_iter()
            .filter(|(code, params)| WHOIS_CODES.contains(code) && !params.is_empty())
            .map(|(code, params)| Numeric { code, params })
            .collect();
        let body = if nums.is_empty() {
            ReplyBody::Numerics(not_found(&w.nick))
        } else {
            // The nick as its holder spells it (311's first parameter).
            let nick = nums
                .iter()
                .find(|n| n.code == RPL_WHOISUSER)
                .map_or(w.nick.clone(), |n| n.params[0].clone());
            nums.push(end(&nick));
            ReplyBody::Numerics(nums)
        };
        outbox.post(ctx, ShardId(w.from.shard), ChatMsg::reply(w.from, body));
    }

    /// Another node's [`Event::WhoisAnswer`] (on this node's private
    /// channel): for an ask of this node's still waiting, from the client
    /// that asked; anything else is ignored.
    pub(super) fn whois_answered(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        node: &str,
        event: Event,
    ) {
        let Event::WhoisAnswer {
            to_node,
            client,
            ask,
            numerics,
        } = event
        else {
            return;
        };
        let ours = self
            .whois_waits
            .get(&ask)
            .is_some_and(|w| (w.from.shard, w.from.id) == client);
        if to_node == node && ours {
            self.whois_finish(ctx, outbox, ask, Some(numerics));
        }
    }

    /// Another node's [`Event::WhoisAsk`] (`token`, from node `asker`):
    /// the holder's shard answers; nobody here holding the nick, an empty
    /// answer now.
    pub(super) fn whois_asked(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        asker: String,
        token: u64,
        event: Event,
    ) {
        let Event::WhoisAsk {
            nick,
            from,
            multi_prefix,
        } = event
        else {
            return;
        };
        let Some(target) = self.holder(&nick) else {
            let node = self.node.clone();
            self.whois_publish_answer(&node, asker, &nick, from, token, Vec::new());
            return;
        };
        let req = Request::WhoisForNode {
            target,
            nick,
            multi_prefix,
            to_node: asker,
            client: from,
            ask: token,
        };
        let nobody = ClientRef {
            shard: ctx.shard_id().0,
            id: super::cluster::NOBODY,
        };
        let to = ShardId(target.shard);
        outbox.post(ctx, to, ChatMsg::Request { from: nobody, req });
    }

    /// Publishes the answer to ask `ask` of client `client` of node
    /// `to_node` (about `nick`) on that node's private channel of the
    /// nick's partition. At most [`MAX_WHOIS_NUMERICS`] go (channel lists
    /// past that are left out); one that cannot be carried empties it.
    pub(crate) fn whois_publish_answer(
        &mut self,
        node: &str,
        to_node: String,
        nick: &str,
        client: (usize, u64),
        ask: u64,
        numerics: Vec<Numeric>,
    ) {
        // Only what a WHOIS of another node's user shows: not its 318
        // (the asker's node ends the answer), nor a 401 (gone: an empty
        // answer says so).
        let numerics: Vec<Numeric> = numerics
            .into_iter()
            .filter(|n| WHOIS_CODES.contains(&n.code))
            .collect();
        let others = numerics
            .iter()
            .filter(|n| n.code != RPL_WHOISCHANNELS)
            .count();
        let mut room = MAX_WHOIS_NUMERICS.saturating_sub(others);
        let mut kept = Vec::with_capacity(numerics.len().min(MAX_WHOIS_NUMERICS));
        for n in numerics {
            if n.code == RPL_WHOISCHANNELS {
                if room == 0 {
                    continue;
                }
                room -= 1;
            }
            kept.push((n.code, n.params));
        }
        kept.truncate(MAX_WHOIS_NUMERICS);
        let mut env = Envelope {
            node: node.to_string(),
            token: 0,
            event: Event::WhoisAnswer {
                to_node: to_node.clone(),
                client,
                ask,
                numerics: kept,
            },
        };
        let payload = env.encode().or_else(|| {
            env.event = Event::WhoisAnswer {
                to_node: to_node.clone(),
                client,
                ask,
                numerics: Vec::new(),
            };
            env.encode()
        });
        if let Some(payload) = payload {
            self.engine_out.push(EngineOp::DirectTo {
                node: to_node,
                partition: partition_of(&casefold(nick)),
                payload,
            });
        }
    }
}
