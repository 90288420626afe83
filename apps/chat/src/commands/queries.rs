//! WHO, WHOIS, USERHOST, ISON, LIST and STATS: queries whose answer is spread
//! over shards. The
//! client's input waits (parks) until the merged answer and its end marker are
//! out, so answers never interleave.

use shardline::Ctx;

use super::Flow;
use crate::{
    casemap::{casefold, owner_of, valid_channel, valid_nick},
    client::{Gather, Listed},
    mail::{Numeric, Request},
    mask::has_wildcards,
    reply::{code::*, truncate},
    shard::ChatShard,
};

/// Nicks one USERHOST looks at.
const MAX_USERHOST: usize = 5;

/// Longest WHO or LIST mask looked at.
const MAX_MASK: usize = 100;

impl ChatShard {
    pub(super) fn cmd_who(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let mask = truncate(
            p.first().copied().filter(|m| !m.is_empty()).unwrap_or("*"),
            MAX_MASK,
        );
        // `WHO mask o`; WHOX field lists (`%...`) are not supported and ignored.
        let opers_only = p
            .get(1)
            .is_some_and(|f| !f.starts_with('%') && f.contains('o'));
        let Some(viewer) = self.clients.get(&id).map(|c| c.viewer()) else {
            return Flow::Next;
        };
        let end = Numeric::new(RPL_ENDOFWHO, [mask, "End of WHO list"]);
        self.gather_begin(id, vec![end]);
        for s in 0..self.shards {
            let req = Request::Who {
                mask: mask.to_string(),
                opers_only,
                viewer: viewer.clone(),
            };
            if !self.gather_ask(ctx, id, s, req) {
                return Flow::Next;
            }
        }
        Flow::Park
    }

    pub(super) fn cmd_whois(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        // WHOIS [server] nick[,nick]: the last parameter; one nick (TARGMAX).
        let Some(nick) = p
            .last()
            .and_then(|l| l.split(',').next())
            .filter(|n| !n.is_empty())
        else {
            self.numeric(ctx, id, ERR_NONICKNAMEGIVEN, &["No nickname given"]);
            return Flow::Next;
        };
        if !valid_nick(nick, self.info.config.limits.nicklen) {
            let nick = truncate(nick, 64);
            self.numeric(ctx, id, ERR_NOSUCHNICK, &[nick, "No such nick/channel"]);
            self.numeric(ctx, id, RPL_ENDOFWHOIS, &[nick, "End of /WHOIS list."]);
            return Flow::Next;
        }
        let Some(viewer) = self.clients.get(&id).map(|c| c.viewer()) else {
            return Flow::Next;
        };
        let req = Request::Whois {
            nick: nick.to_string(),
            viewer,
        };
        // Answered by whichever shard the target is on: wait for it, so that
        // answers come in the order asked.
        if self.request(ctx, id, owner_of(nick, self.shards), req) {
            Flow::Park
        } else {
            Flow::Next
        }
    }

    /// `WHOWAS <nick> [count]`: answered by the nick's owner, which keeps who
    /// left the nicks it owns. A count that is not a positive number asks for
    /// every entry kept.
    pub(super) fn cmd_whowas(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let Some(nick) = p.first() else {
            return self.need_more_params(ctx, id, "WHOWAS");
        };
        if nick.is_empty() {
            self.numeric(ctx, id, ERR_NONICKNAMEGIVEN, &["No nickname given"]);
            return Flow::Next;
        }
        if !valid_nick(nick, self.info.config.limits.nicklen) {
            let nick = truncate(nick, 64);
            self.numeric(
                ctx,
                id,
                ERR_WASNOSUCHNICK,
                &[nick, "There was no such nickname"],
            );
            self.numeric(ctx, id, RPL_ENDOFWHOWAS, &[nick, "End of WHOWAS"]);
            return Flow::Next;
        }
        let count = p
            .get(1)
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n > 0)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        let req = Request::Whowas {
            nick: nick.to_string(),
            count,
        };
        if self.request(ctx, id, owner_of(nick, self.shards), req) {
            Flow::Park
        } else {
            Flow::Next
        }
    }

    /// USERHOST nick{ nick} (the first 5): one 302 with `nick[*]=±user@host`
    /// for those that exist, in the order asked.
    pub(super) fn cmd_userhost(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        p: &[&str],
    ) -> Flow {
        if p.is_empty() {
            return self.need_more_params(ctx, id, "USERHOST");
        }
        self.ask_users(ctx, id, p, false)
    }

    /// ISON nick{ nick}: one 303 with the nicks online as their holders spell
    /// them, in the order asked.
    pub(super) fn cmd_ison(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        if p.is_empty() {
            return self.need_more_params(ctx, id, "ISON");
        }
        self.ask_users(ctx, id, p, true)
    }

    /// Asks the owners of the nicks in `p` (space-separated words too, as some
    /// clients send ISON's list as one trailing parameter), one request per
    /// owner, and gathers their entries into one 302 or 303.
    fn ask_users(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str], ison: bool) -> Flow {
        let nicklen = self.info.config.limits.nicklen;
        let max = if ison { usize::MAX } else { MAX_USERHOST };
        let mut per_owner: Vec<Vec<(usize, String)>> = vec![Vec::new(); self.shards];
        let words = p
            .iter()
            .flat_map(|w| w.split(' '))
            .filter(|w| !w.is_empty());
        for (i, nick) in words.take(max).enumerate() {
            if valid_nick(nick, nicklen) {
                per_owner[owner_of(nick, self.shards)].push((i, nick.to_string()));
            }
        }
        if let Some(c) = self.clients.get_mut(&id) {
            c.gather = Some(Gather {
                listed: Some(Box::new(Listed {
                    code: if ison { RPL_ISON } else { RPL_USERHOST },
                    entries: Vec::new(),
                })),
                ..Gather::default()
            });
        }
        for (s, nicks) in per_owner.into_iter().enumerate() {
            if !nicks.is_empty() && !self.gather_ask(ctx, id, s, Request::Users { ison, nicks }) {
                return Flow::Next;
            }
        }
        self.gather_check(ctx, id);
        Flow::Park
    }

    /// LIST [masks]: 321, then every owner's 322s, then 323. Plain names ask only
    /// their owners; masks ask every shard.
    pub(super) fn cmd_list(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let masks: Vec<String> = p
            .first()
            .map(|l| {
                l.split(',')
                    .filter(|m| !m.is_empty())
                    .map(|m| casefold(truncate(m, MAX_MASK)))
                    .collect()
            })
            .unwrap_or_default();
        let channellen = self.info.config.limits.channellen;
        let mut shards: Vec<usize> = if !masks.is_empty() && masks.iter().all(|m| !has_wildcards(m))
        {
            masks
                .iter()
                .filter(|m| valid_channel(m, channellen))
                .map(|m| owner_of(m, self.shards))
                .collect()
        } else {
            (0..self.shards).collect()
        };
        shards.sort_unstable();
        shards.dedup();
        self.numeric(ctx, id, RPL_LISTSTART, &["Channel", "Users  Name"]);
        self.gather_begin(id, vec![Numeric::new(RPL_LISTEND, ["End of /LIST"])]);
        for s in shards {
            let req = Request::List {
                masks: masks.clone(),
            };
            if !self.gather_ask(ctx, id, s, req) {
                return Flow::Next;
            }
        }
        self.gather_check(ctx, id);
        Flow::Park
    }

    /// STATS u (uptime), m (command counts, summed over shards), L (each shard's
    /// load: a non-standard 249 line per shard); 219 ends every report.
    pub(super) fn cmd_stats(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, p: &[&str]) -> Flow {
        let Some(letter) = p.first().and_then(|q| q.chars().next()) else {
            return self.need_more_params(ctx, id, "STATS");
        };
        let shown = letter.to_string();
        let end = Numeric::new(RPL_ENDOFSTATS, [shown.as_str(), "End of /STATS report"]);
        self.gather_begin(id, vec![end]);
        match letter {
            'u' => {
                let up = self.info.started.elapsed().as_secs();
                let text = format!(
                    "Server Up {} days {}:{:02}:{:02}",
                    up / 86_400,
                    up % 86_400 / 3600,
                    up % 3600 / 60,
                    up % 60
                );
                self.numeric(ctx, id, RPL_STATSUPTIME, &[&text]);
            }
            'm' | 'L' => {
                for s in 0..self.shards {
                    if !self.gather_ask(ctx, id, s, Request::StatsQuery { letter }) {
                        return Flow::Next;
                    }
                }
            }
            _ => {}
        }
        self.gather_check(ctx, id);
        Flow::Park
    }
}
