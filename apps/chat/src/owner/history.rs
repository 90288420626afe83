//! CHATHISTORY on the owner's side: a channel's history is answered by the
//! channel's owner, which decides there and then whether the asker may read it;
//! a conversation's by the conversation's owner, found through the other
//! party's nick owner; TARGETS by every shard for what it keeps.

use std::sync::Arc;

use shardline::{Ctx, ShardId};

use super::{reply, Answer, Owner};
use crate::{
    casemap::{casefold, owner_of_key, NameKey},
    mail::{ChatMsg, ClientRef, HistoryError, ReplyBody, Request},
    shard::{ChatShard, Outbox},
    store::conversation_key,
};

fn answer(target: String, result: Result<Vec<crate::store::Message>, HistoryError>) -> Answer {
    reply(ReplyBody::History { target, result })
}

impl Owner {
    /// Whether `from` (`mask`) may read channel `key`'s history now: a member,
    /// or anyone if the channel is neither `+s`, `+i` nor keyed and does not
    /// ban them. A channel that does not exist now (nobody in it) is readable
    /// by nobody: its modes are unknown.
    pub(super) fn may_read(&self, key: &str, from: ClientRef, mask: &str) -> Option<String> {
        let ch = self.chans.get(key)?;
        if ch.members.contains_key(&from) {
            return Some(ch.name.clone());
        }
        let m = &ch.modes;
        let closed = m.secret || m.invite_only || m.key.is_some();
        (!closed && !ch.banned(&casefold(mask))).then(|| ch.name.clone())
    }

    pub(super) fn history_request(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        from: ClientRef,
        req: Request,
    ) -> Answer {
        match req {
            Request::ChanHistory { chan, mask, query } => {
                let key: NameKey = casefold(&chan).into();
                match self.may_read(&key, from, &mask) {
                    Some(name) => {
                        let result = self.history.query(&key, &query);
                        answer(name, result)
                    }
                    None => answer(chan, Err(HistoryError::NoAccess)),
                }
            }
            Request::NickHistory {
                nick,
                account,
                query,
            } => {
                // The holder's account; with nobody (or nobody logged in)
                // holding the nick, the account of that name: a conversation
                // with someone offline stays reachable.
                let peer: Arc<str> = self
                    .holder_entry(&nick)
                    .and_then(|(_, a)| a)
                    .unwrap_or_else(|| Arc::from(nick.as_str()));
                let key = conversation_key(&account, &peer);
                let to = owner_of_key(&key, ctx.shards());
                let req = Request::ConvHistory {
                    key,
                    target: nick,
                    query,
                };
                outbox.post(ctx, ShardId(to), ChatMsg::Request { from, req });
                (0, None)
            }
            Request::ConvHistory { key, target, query } => {
                let result = self.history.query(&key, &query);
                answer(target, result)
            }
            Request::HistoryTargets {
                chans,
                account,
                a,
                b,
                limit,
            } => {
                let (me, shards) = (ctx.shard_id().0, ctx.shards());
                let owned: Vec<&str> = chans
                    .iter()
                    .filter(|k| owner_of_key(k, shards) == me)
                    .map(|k| &**k)
                    .collect();
                let found = self
                    .history
                    .targets(&owned, account.as_deref(), a, b, limit);
                reply(ReplyBody::Targets(found))
            }
            _ => reply(ReplyBody::Done),
        }
    }
}
