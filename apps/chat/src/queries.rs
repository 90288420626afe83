//! Queries that merge across shards, from both ends: the asking client's shard
//! gathers parts (each sent on as it comes, the end marker after the last), and
//! every shard answers for its own clients — WHO (352), WHOIS (311–319), STATS and
//! LUSERS counts — from its clients and its local channel views.

use shardline::{Ctx, ShardId};

use crate::{
    casemap::{casefold, is_channel_name},
    client::Gather,
    commands::KNOWN,
    mail::{ChatMsg, ClientRef, Counts, Numeric, ReplyBody, Request, Viewer},
    mask::{has_wildcards, matches_folded},
    message::MAX_BODY,
    reply::code::*,
    shard::ChatShard,
};

impl ChatShard {
    /// Starts gathering a merged answer for client `id`; `end` goes out after the
    /// last part. Ask with [`ChatShard::gather_ask`], then [`ChatShard::gather_check`].
    pub(crate) fn gather_begin(&mut self, id: u64, end: Vec<Numeric>) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.gather = Some(Gather {
                end,
                ..Gather::default()
            });
        }
    }

    /// Asks shard `to` for one part. False if the client was disconnected.
    pub(crate) fn gather_ask(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        to: usize,
        req: Request,
    ) -> bool {
        if let Some(g) = self.clients.get_mut(&id).and_then(|c| c.gather.as_mut()) {
            g.remaining += 1;
        }
        self.request(ctx, id, to, req)
    }

    /// One part came in (or none is due): sends the end once all are in.
    pub(crate) fn gather_check(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if c.gather.as_ref().is_none_or(|g| g.remaining > 0) {
            return;
        }
        let Some(g) = c.gather.take() else {
            return;
        };
        let mut nums: Vec<Numeric> = g
            .counts
            .iter()
            .map(|(cmd, n)| Numeric::new(RPL_STATSCOMMANDS, [cmd.to_string(), n.to_string()]))
            .collect();
        if let Some(listed) = g.listed {
            let mut entries = listed.entries;
            entries.sort_by_key(|(i, _)| *i);
            let line: Vec<String> = entries.into_iter().map(|(_, e)| e).collect();
            nums.push(Numeric::new(listed.code, [line.join(" ")]));
        }
        nums.extend(g.end);
        self.send_numerics(ctx, id, &nums);
    }

    /// Answers a request about this shard's clients (not about owned names).
    pub(crate) fn answer_local(&mut self, from: ClientRef, req: Request) -> ReplyBody {
        match req {
            Request::Stats => ReplyBody::Stats(self.counts()),
            Request::Who {
                mask,
                opers_only,
                viewer,
            } => ReplyBody::Part(self.who_local(&mask, opers_only, &viewer)),
            Request::WhoisLocal {
                target,
                nick,
                viewer,
            } => ReplyBody::Numerics(self.whois_local(from, target, &nick, &viewer)),
            Request::StatsQuery { letter: 'm' } => {
                let counts = KNOWN
                    .iter()
                    .zip(&self.command_counts)
                    .filter(|(_, &n)| n > 0)
                    .map(|(&cmd, &n)| (cmd, n))
                    .collect();
                ReplyBody::CommandCounts(counts)
            }
            Request::StatsQuery { .. } => {
                let conns = self.clients.values().filter(|c| c.alive).count();
                let users = self
                    .clients
                    .values()
                    .filter(|c| c.registered && c.quitting.is_none())
                    .count();
                let text = format!(
                    "shard {}: {conns} connections, {users} users, {} channels owned",
                    self.me,
                    self.owner.channel_count()
                );
                ReplyBody::Part(vec![Numeric::new(RPL_STATSDEBUG, ["L".to_string(), text])])
            }
            // Owner requests never come here; answer so the asker is not stuck.
            _ => ReplyBody::Done,
        }
    }

    /// USERHOST or ISON passing through: adds the entries of the targets on
    /// this shard (`nick[*]=±user@host`, or the nick as spelled), then passes
    /// the rest on to the next target's shard, or replies to the asker when
    /// none are left.
    pub(crate) fn users_local(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        from: ClientRef,
        ison: bool,
        targets: Vec<(usize, ClientRef)>,
        mut found: Vec<(usize, String)>,
    ) {
        let (here, rest): (Vec<_>, Vec<_>) =
            targets.into_iter().partition(|(_, t)| t.shard == self.me);
        for (i, t) in here {
            let Some(c) = self
                .clients
                .get(&t.id)
                .filter(|c| c.registered && c.quitting.is_none())
            else {
                continue;
            };
            let nick = c.nick_or_star();
            let entry = if ison {
                nick.to_string()
            } else {
                format!(
                    "{nick}{}={}{}@{}",
                    if c.oper { "*" } else { "" },
                    if c.away.is_some() { '-' } else { '+' },
                    c.user.as_deref().unwrap_or(""),
                    c.host
                )
            };
            found.push((i, entry));
        }
        let msg = match rest.first() {
            Some(&(_, next)) => {
                let req = Request::UsersLocal {
                    ison,
                    targets: rest,
                    found,
                };
                (next.shard, ChatMsg::Request { from, req })
            }
            None => {
                let body = ReplyBody::Users(found);
                (from.shard, ChatMsg::reply(from, body))
            }
        };
        self.outbox.post(ctx, ShardId(msg.0), msg.1);
    }

    fn counts(&self) -> Counts {
        let mut n = Counts {
            channels: self.owner.channel_count() as u64,
            peak: self.peak_users,
            ..Counts::default()
        };
        for c in self.clients.values().filter(|c| c.quitting.is_none()) {
            if c.registered {
                n.users += 1;
                n.invisible += u64::from(c.invisible);
                n.opers += u64::from(c.oper);
            } else {
                n.unknown += 1;
            }
        }
        n
    }

    /// 352 for each local client `mask` selects that `viewer` may see: a
    /// channel's members (none of a `+s` channel it is not in; `+i` members only
    /// if it is in the channel), or every client whose nick, user, host, real name
    /// or server matches (`+i` ones only for an exact nick or a shared channel).
    fn who_local(&self, mask: &str, opers_only: bool, viewer: &Viewer) -> Vec<Numeric> {
        let server = self.info.name();
        let row = |chan: &str, c: &crate::client::Client, prefix: &str| {
            let mut flags = String::from(if c.away.is_some() { "G" } else { "H" });
            if c.oper {
                flags.push('*');
            }
            flags.push_str(prefix);
            if c.bot {
                // bot-mode: the `BOT=` letter in the flags.
                flags.push('B');
            }
            Numeric::new(
                RPL_WHOREPLY,
                [
                    chan.to_string(),
                    c.user.clone().unwrap_or_default(),
                    c.host.clone(),
                    server.to_string(),
                    c.nick.clone().unwrap_or_default(),
                    flags,
                    format!("0 {}", c.realname),
                ],
            )
        };
        let visible = |c: &&crate::client::Client| {
            c.registered && c.quitting.is_none() && (!opers_only || c.oper)
        };
        let mut out = Vec::new();
        if is_channel_name(mask) {
            let key = casefold(mask);
            let Some(lc) = self.local.get(key.as_str()) else {
                return out;
            };
            let member = viewer.oper || viewer.in_chan(&key);
            if lc.secret && !member {
                return out;
            }
            for m in &lc.members {
                if let Some(c) = self.clients.get(&m.id).filter(visible) {
                    if member || !c.invisible {
                        out.push(row(&lc.name, c, m.prefix(viewer.multi_prefix)));
                    }
                }
            }
            return out;
        }
        let pattern = casefold(if mask == "0" { "*" } else { mask });
        let exact = !has_wildcards(mask);
        for c in self.clients.values().filter(visible) {
            let nick = casefold(c.nick_or_star());
            let hit = matches_folded(&pattern, &nick)
                || (!exact
                    && [
                        c.user.as_deref().unwrap_or(""),
                        &c.host,
                        &c.realname,
                        server,
                    ]
                    .iter()
                    .any(|f| matches_folded(&pattern, &casefold(f))));
            let seen = (exact && hit)
                || !c.invisible
                || viewer.oper
                || c.channels.iter().any(|k| viewer.in_chan(k));
            if hit && seen {
                out.push(row("*", c, ""));
            }
        }
        out
    }

    /// Another node's WHOIS of local client `target` (as asked: `nick`),
    /// seen as by someone in none of its channels and not an operator: no
    /// `+s` channel in 319, no certificate fingerprint.
    pub(crate) fn whois_for_node(
        &self,
        target: ClientRef,
        nick: &str,
        multi_prefix: bool,
    ) -> Vec<Numeric> {
        let viewer = Viewer {
            chans: Vec::new(),
            oper: false,
            multi_prefix,
        };
        // Nobody of this node: never the target itself.
        let asker = ClientRef {
            shard: self.me,
            id: 0,
        };
        self.whois_local(asker, target, nick, &viewer)
    }

    /// WHOIS by `asker` for local client `target`: 311, 319 (its channels
    /// `viewer` may see), 312, 301, 313, 330 (its account), 276 (its client certificate's
    /// fingerprint, to itself and operators), 671 (connected over TLS), 317, 318
    /// — or 401 and 318 if it has left. Answered here, on the target's own shard,
    /// from its [`Client`](crate::client::Client): what it is (TLS included)
    /// never has to travel to the asker's shard except as these numerics.
    fn whois_local(
        &self,
        asker: ClientRef,
        target: ClientRef,
        nick: &str,
        viewer: &Viewer,
    ) -> Vec<Numeric> {
        let end = |nick: &str| Numeric::new(RPL_ENDOFWHOIS, [nick, "End of /WHOIS list."]);
        let Some(c) = self
            .clients
            .get(&target.id)
            .filter(|c| target.shard == self.me && c.registered && c.quitting.is_none())
        else {
            let gone = Numeric::new(ERR_NOSUCHNICK, [nick, "No such nick/channel"]);
            return vec![gone, end(nick)];
        };
        let nick = c.nick_or_star().to_string();
        let mut out = vec![Numeric::new(
            RPL_WHOISUSER,
            [
                nick.clone(),
                c.user.clone().unwrap_or_default(),
                c.host.clone(),
                "*".into(),
                c.realname.clone(),
            ],
        )];
        let mut chans: Vec<String> = Vec::new();
        for key in &c.channels {
            let Some(lc) = self.local.get(key) else {
                continue;
            };
            if lc.secret && !viewer.oper && !viewer.in_chan(key) {
                continue;
            }
            let prefix = lc
                .member(target.id)
                .map_or("", |m| m.prefix(viewer.multi_prefix));
            chans.push(format!("{prefix}{}", lc.name));
        }
        // ":server 319 <asker> <nick> :" around the list.
        let budget = MAX_BODY
            .saturating_sub(self.info.name().len() + 2 * self.info.config.limits.nicklen + 16);
        let mut line = String::new();
        for ch in chans {
            if !line.is_empty() && line.len() + 1 + ch.len() > budget {
                out.push(Numeric::new(
                    RPL_WHOISCHANNELS,
                    [nick.clone(), std::mem::take(&mut line)],
                ));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(&ch);
        }
        if !line.is_empty() {
            out.push(Numeric::new(RPL_WHOISCHANNELS, [nick.clone(), line]));
        }
        out.push(Numeric::new(
            RPL_WHOISSERVER,
            [
                nick.as_str(),
                self.info.name(),
                &self.info.config.server.network,
            ],
        ));
        if let Some(away) = &c.away {
            out.push(Numeric::new(RPL_AWAY, [nick.clone(), away.clone()]));
        }
        if c.oper {
            out.push(Numeric::new(
                RPL_WHOISOPERATOR,
                [nick.as_str(), "is an IRC operator"],
            ));
        }
        if c.bot {
            out.push(Numeric::new(RPL_WHOISBOT, [nick.as_str(), "is a bot"]));
        }
        if let Some(account) = &c.account {
            out.push(Numeric::new(
                RPL_WHOISACCOUNT,
                [nick.clone(), account.to_string(), "is logged in as".into()],
            ));
        }
        if let Some(tls) = &c.tls {
            if let Some(fp) = tls
                .certfp
                .as_ref()
                .filter(|_| asker == target || viewer.oper)
            {
                out.push(Numeric::new(
                    RPL_WHOISCERTFP,
                    [
                        nick.clone(),
                        format!("has client certificate fingerprint {fp}"),
                    ],
                ));
            }
            out.push(Numeric::new(
                RPL_WHOISSECURE,
                [nick.as_str(), "is using a secure connection"],
            ));
        }
        out.push(Numeric::new(
            RPL_WHOISIDLE,
            [
                nick.clone(),
                c.last_message.elapsed().as_secs().to_string(),
                c.signon.to_string(),
                "seconds idle, signon time".into(),
            ],
        ));
        out.push(end(&nick));
        out
    }
}
