//! PRIVMSG, NOTICE and TAGMSG: the line is formatted once here, with the sender's
//! mask, and sent to the target's owner — the channel's (which stamps it with its
//! msgid and time, keeps it in the channel's history, orders and fans it out) or
//! the nick's (which routes it to the recipient's shard, through the owner of the
//! two accounts' conversation when both have one). TAGMSG carries only tags: it
//! reaches only clients with `message-tags`, and draws no error replies.

use std::sync::Arc;

use shardline::Ctx;

use super::Flow;
use crate::{
    casemap::{is_channel_name, owner_of, valid_channel, valid_nick},
    mail::{Outgoing, Request, Said},
    message::{Message, MAX_CLIENT_TAGS},
    reply::{code::*, line, truncate},
    shard::ChatShard,
    store::MessageKind,
};

impl ChatShard {
    pub(super) fn cmd_message(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        msg: &Message<'_>,
        kind: MessageKind,
    ) -> Flow {
        let command = kind.command();
        // Only PRIVMSG draws errors for what it cannot deliver.
        let notice = kind != MessageKind::Privmsg;
        let p = &msg.params;
        let Some(targets) = p.first().filter(|t| !t.is_empty()) else {
            let text = format!("No recipient given ({command})");
            self.numeric(ctx, id, ERR_NORECIPIENT, &[&text]);
            return Flow::Next;
        };
        let text = match kind {
            MessageKind::Tagmsg => "",
            _ => match p.get(1).filter(|t| !t.is_empty()) {
                Some(t) => t,
                None => {
                    self.numeric(ctx, id, ERR_NOTEXTTOSEND, &["No text to send"]);
                    return Flow::Next;
                }
            },
        };
        let client_tags = msg.client_tags();
        if client_tags
            .as_ref()
            .is_some_and(|t| t.len() > MAX_CLIENT_TAGS)
        {
            self.numeric(ctx, id, ERR_INPUTTOOLONG, &["Input line was too long"]);
            return Flow::Next;
        }
        let Some(c) = self.clients.get_mut(&id) else {
            return Flow::Next;
        };
        // bot-mode: a `+B` client's messages carry the `bot` tag (for
        // clients with `message-tags`, like client-only tags).
        let client_tags: Option<Arc<str>> = match (c.bot, client_tags) {
            (true, Some(t)) => Some(Arc::from(format!("bot;{t}"))),
            (true, None) => Some(Arc::from("bot")),
            (false, t) => t.map(Arc::from),
        };
        if kind != MessageKind::Tagmsg {
            c.last_message = std::time::Instant::now();
        }
        let mask = c.mask.clone();
        let account = c.account.clone();
        let limits = &self.info.config.limits;
        let (max_targets, channellen, nicklen) =
            (limits.max_targets, limits.channellen, limits.nicklen);
        for (i, target) in targets.split(',').filter(|t| !t.is_empty()).enumerate() {
            if i >= max_targets {
                let target = truncate(target, 64);
                let text = "Too many targets. No message delivered";
                self.numeric(ctx, id, ERR_TOOMANYTARGETS, &[target, text]);
                continue;
            }
            let mut out = match kind {
                MessageKind::Tagmsg => Outgoing::new(line(&mask, command, &[target], false)),
                _ => Outgoing::new(line(&mask, command, &[target, text], true)),
            };
            out.client_tags = client_tags.clone();
            out.account = account.clone();
            out.tags_only = kind == MessageKind::Tagmsg;
            let said = Box::new(Said {
                out,
                kind,
                mask: mask.clone(),
                account: account.clone(),
                to: target.to_string(),
                text: text.to_string(),
            });
            let (to, req) = if is_channel_name(target) {
                if !valid_channel(target, channellen) {
                    if !notice {
                        let target = truncate(target, 64);
                        self.numeric(ctx, id, ERR_NOSUCHCHANNEL, &[target, "No such channel"]);
                    }
                    continue;
                }
                let req = Request::ChanMsg {
                    chan: target.to_string(),
                    said,
                };
                (owner_of(target, self.shards), req)
            } else {
                if !valid_nick(target, nicklen) {
                    if !notice {
                        let target = truncate(target, 64);
                        self.numeric(ctx, id, ERR_NOSUCHNICK, &[target, "No such nick/channel"]);
                    }
                    continue;
                }
                let req = Request::NickMsg {
                    target: target.to_string(),
                    said,
                };
                (owner_of(target, self.shards), req)
            };
            if !self.request(ctx, id, to, req) {
                break;
            }
        }
        Flow::Next
    }
}
