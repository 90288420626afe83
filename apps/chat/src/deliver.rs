//! Incoming mail: requests for the names this shard owns, replies to this shard's
//! clients, deliveries to fan out to them, and acks.
//!
//! Fan-out renders each event once per capability variant per shard (see
//! [`Renderer`]) and hands the same `Bytes` to every local recipient with
//! `send_shared`: no per-member copy. Every delivery made on a client's behalf is
//! acknowledged to that client's shard after it has been queued here.

use shardline::{Ctx, ShardId};
use tracing::warn;

use crate::{
    casemap::owner_of,
    client::Lusers,
    labels::{respond, respond_shared},
    mail::{
        Caps, ChanDelivery, ChatMsg, ClientRef, Membership, NoticeKind, Numeric, Outgoing,
        Renderer, ReplyBody, Request, UserNotice,
    },
    reply::{code::*, write_numeric},
    shard::ChatShard,
    view::{LocalChan, LocalMember},
};

impl ChatShard {
    pub(crate) fn on_mail(&mut self, ctx: &mut Ctx<'_, ChatShard>, msg: ChatMsg) {
        match msg {
            ChatMsg::Request {
                from,
                req:
                    req @ (Request::Stats
                    | Request::StatsQuery { .. }
                    | Request::Who { .. }
                    | Request::WhoisLocal { .. }),
            } => {
                let body = self.answer_local(from, req);
                self.outbox
                    .post(ctx, ShardId(from.shard), ChatMsg::reply(from, body));
            }
            ChatMsg::Request {
                from,
                req:
                    Request::KillLocal {
                        target,
                        nick,
                        mask,
                        reason,
                    },
            } => {
                let body = self.kill_local(ctx, target, &nick, &mask, &reason);
                self.outbox
                    .post(ctx, ShardId(from.shard), ChatMsg::reply(from, body));
            }
            ChatMsg::Request {
                from,
                req: Request::Wallops { line },
            } => {
                for c in self
                    .clients
                    .values()
                    .filter(|c| c.wallops && c.registered && c.alive)
                {
                    let _ = crate::websocket::send_shared(ctx, c, &line);
                }
                self.outbox.post(
                    ctx,
                    ShardId(from.shard),
                    ChatMsg::reply(from, ReplyBody::Done),
                );
            }
            ChatMsg::Request {
                from,
                req:
                    Request::UsersLocal {
                        ison,
                        targets,
                        found,
                    },
            } => self.users_local(ctx, from, ison, targets, found),
            ChatMsg::Request {
                from,
                req:
                    Request::ChghostLocal {
                        target,
                        nick,
                        user,
                        host,
                    },
            } => self.chghost_local(ctx, from, target, &nick, user, host),
            ChatMsg::Request {
                req:
                    Request::WhoisForNode {
                        target,
                        nick,
                        multi_prefix,
                        to_node,
                        client,
                        ask,
                    },
                ..
            } => {
                let nums = self.whois_for_node(target, &nick, multi_prefix);
                let node = self.owner.node.clone();
                self.owner
                    .whois_publish_answer(&node, to_node, &nick, client, ask, nums);
            }
            ChatMsg::Request { from, req } => {
                self.owner
                    .handle(ctx, &self.info, &mut self.outbox, from, req);
            }
            ChatMsg::Reply { to, fanout, body } => self.on_reply(ctx, to, fanout, body),
            ChatMsg::Chan(d) => {
                self.deliver_chan(ctx, &d);
                self.ack(ctx, d.source);
            }
            ChatMsg::Private {
                to,
                out,
                ack,
                notify_away,
                remote_sender,
            } => {
                let mut away = None;
                if let Some(c) = self
                    .clients
                    .get(&to.id)
                    .filter(|c| to.shard == self.me && c.alive && c.registered)
                {
                    let mut r = Renderer::new(&out);
                    if out.wanted_by(c.caps)
                        && crate::websocket::send_shared(ctx, c, r.for_caps(c.caps)).is_ok()
                    {
                        self.stats.deliveries.add(1);
                    }
                    if let (true, Some(text)) = (notify_away, &c.away) {
                        away = Some((c.nick_or_star().to_string(), text.clone()));
                    }
                }
                match (away, remote_sender) {
                    // Another node's sender: its node gives it the 301.
                    (Some((nick, text)), Some(r)) => {
                        let event = crate::cluster::events::Event::AwayReply {
                            to_node: r.node,
                            client: r.client,
                            nick,
                            text,
                        };
                        self.owner.publish_reply(&r.target, event);
                        self.cluster_flush_owner(ctx);
                    }
                    // Before the ack (acks go at the end of the turn), so it
                    // comes before the sender's next PONG.
                    (Some((nick, text)), None) => {
                        self.notify(ctx, ack, vec![Numeric::new(RPL_AWAY, [nick, text])]);
                    }
                    (None, _) => {}
                }
                self.ack(ctx, ack);
            }
            ChatMsg::Notify { to, nums } => {
                if to.shard == self.me {
                    self.send_numerics(ctx, to.id, &nums);
                }
            }
            ChatMsg::Standard(r) => {
                if r.to.shard == self.me {
                    let context: Vec<&str> = r.context.iter().map(String::as_str).collect();
                    self.standard_reply(ctx, r.to.id, r.kind, r.command, r.code, &context, &r.text);
                }
            }
            ChatMsg::Notice(n) => {
                self.owner.on_notice(&n);
                self.deliver_notice(ctx, &n);
                match n.kind {
                    NoticeKind::Quit => {}
                    NoticeKind::Chghost { by, .. } => self.ack(ctx, by),
                    _ => self.ack(ctx, n.who),
                }
            }
            ChatMsg::Guard { to, key, action } => {
                if to.shard == self.me {
                    self.nick_guard(ctx, to.id, key, action);
                }
            }
            ChatMsg::Monitor {
                ids,
                key,
                nick,
                online,
            } => self.monitor_event(ctx, &ids, &key, &nick, online),
            ChatMsg::HolderCheck {
                holder,
                owner,
                token,
            } => {
                let timer = crate::shard::ChatTimer::HolderCheck {
                    holder,
                    owner,
                    token,
                    reaps: None,
                    since: std::time::Instant::now(),
                };
                ctx.set_timer(std::time::Duration::ZERO, timer);
            }
            ChatMsg::HolderAnswer { token, alive } => {
                self.owner
                    .holder_answer(ctx, &self.info, &mut self.outbox, token, alive);
            }
            ChatMsg::SessionCheck {
                session,
                account,
                asker,
            } => {
                let alive = session.shard == self.me && self.session_holds(session.id, &account);
                let msg = ChatMsg::SessionAnswer { to: asker, alive };
                self.outbox.post(ctx, ShardId(asker.shard), msg);
            }
            ChatMsg::SessionAnswer { to, alive } => {
                if to.shard == self.me {
                    self.upload_session_answer(ctx, to.id, alive);
                }
            }
            ChatMsg::ClusterNodes(view) => self.cluster_nodes(ctx, view),
            ChatMsg::Acks(list) => self.apply_acks(ctx, list),
            // Only a Remote (the SIGHUP hook, a store writer, the hashing
            // pool, the OPER checker) sends them; `on_message` takes them there.
            ChatMsg::Rehash(_)
            | ChatMsg::StoreReport(_)
            | ChatMsg::HashDone(_)
            | ChatMsg::Store(_)
            | ChatMsg::OperChecked { .. } => {}
        }
    }

    /// Sends `nums` to client `to`, wherever it is (nobody waits for them).
    fn notify(&mut self, ctx: &mut Ctx<'_, ChatShard>, to: ClientRef, nums: Vec<Numeric>) {
        if to.shard == self.me {
            self.send_numerics(ctx, to.id, &nums);
        } else {
            self.outbox
                .post(ctx, ShardId(to.shard), ChatMsg::Notify { to, nums });
        }
    }

    fn deliver_chan(&mut self, ctx: &mut Ctx<'_, ChatShard>, d: &ChanDelivery) {
        if let Membership::Add(who) = d.change.filter_shard(self.me) {
            match self.clients.get_mut(&who.id) {
                Some(c) => {
                    c.channels.push(d.chan.clone());
                    let name = d.view.as_ref().and_then(|v| v.name.clone());
                    let lc = self.local.entry(d.chan.clone()).or_insert_with(|| {
                        LocalChan::new(name.unwrap_or_else(|| d.chan.to_string()))
                    });
                    lc.members.push(LocalMember {
                        id: who.id,
                        op: false,
                        voice: false,
                    });
                }
                // Cannot happen: a client stays until its JOIN is answered, and the
                // Add comes before that answer on the same queue.
                None => warn!(
                    shard = self.me,
                    client = who.id,
                    "join for a client that left"
                ),
            }
        }
        if let (Some(v), Some(lc)) = (&d.view, self.local.get_mut(&d.chan)) {
            lc.apply(v, self.me);
        }
        if let Some(lc) = self.local.get(&d.chan) {
            let mut r = Renderer::new(&d.out);
            let mut away = d.away.as_ref().map(Renderer::new);
            for &LocalMember { id, op, .. } in &lc.members {
                let Some(c) = self.clients.get(&id).filter(|c| c.alive) else {
                    continue;
                };
                if !d.out.wanted_by(c.caps) || !c.caps.has(d.needs) || (d.ops_only && !op) {
                    continue;
                }
                if d.needs != Caps::default() && d.source == (ClientRef { shard: self.me, id }) {
                    continue;
                }
                if d.once.is_some_and(|k| !self.once_seen.first(k, id)) {
                    continue;
                }
                let own = d.source == (ClientRef { shard: self.me, id });
                if d.echo_gated && own && !c.caps.has(Caps::ECHO_MESSAGE) {
                    continue;
                }
                // What it caused itself is part of its command's response.
                let sent = if own {
                    respond_shared(ctx, c, self.info.name(), r.for_caps(c.caps))
                } else {
                    crate::websocket::send_shared(ctx, c, r.for_caps(c.caps))
                };
                if sent.is_ok() {
                    self.stats.deliveries.add(1);
                }
                if let Some(away) = away.as_mut().filter(|_| {
                    c.caps.has(Caps::AWAY_NOTIFY) && d.source != ClientRef { shard: self.me, id }
                }) {
                    let _ = crate::websocket::send_shared(ctx, c, away.for_caps(c.caps));
                }
            }
        }
        if let Membership::Remove(who) = d.change.filter_shard(self.me) {
            if let Some(lc) = self.local.get_mut(&d.chan) {
                lc.members.retain(|m| m.id != who.id);
                if lc.members.is_empty() {
                    self.local.remove(&d.chan);
                }
            }
            if let Some(c) = self.clients.get_mut(&who.id) {
                c.channels.retain(|k| *k != d.chan);
            }
        }
    }

    /// A NICK or QUIT line goes once to each local client sharing a channel with
    /// `who` (never to `who` itself: its own shard told it directly); an
    /// ACCOUNT, AWAY, SETNAME or CHGHOST line only to those with the cap
    /// for it.
    fn deliver_notice(&mut self, ctx: &mut Ctx<'_, ChatShard>, n: &UserNotice) {
        let needs = match n.kind {
            NoticeKind::Account { .. } => Caps::ACCOUNT_NOTIFY,
            NoticeKind::Away => Caps::AWAY_NOTIFY,
            NoticeKind::Setname => Caps::SETNAME,
            NoticeKind::Chghost { .. } => Caps::CHGHOST,
            NoticeKind::Nick { .. } | NoticeKind::Quit => Caps::default(),
        };
        let mut ids: Vec<u64> = n
            .chans
            .iter()
            .filter_map(|k| self.local.get(k))
            .flat_map(|lc| lc.members.iter().map(|m| m.id))
            .filter(|&id| n.who != ClientRef { shard: self.me, id })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut r = Renderer::new(&n.out);
        for id in ids {
            if let Some(c) = self
                .clients
                .get(&id)
                .filter(|c| c.alive && c.caps.has(needs))
            {
                if crate::websocket::send_shared(ctx, c, r.for_caps(c.caps)).is_ok() {
                    self.stats.deliveries.add(1);
                }
            }
        }
    }

    pub(crate) fn send_numerics(&self, ctx: &mut Ctx<'_, ChatShard>, id: u64, nums: &[Numeric]) {
        let Some(c) = self.clients.get(&id).filter(|c| c.alive) else {
            return;
        };
        let mut out = Vec::with_capacity(nums.len() * 80);
        for n in nums {
            let params: Vec<&str> = n.params.iter().map(String::as_str).collect();
            write_numeric(
                &mut out,
                self.info.name(),
                n.code,
                c.nick_or_star(),
                &params,
            );
        }
        let _ = respond(ctx, c, self.info.name(), &out);
    }

    fn on_reply(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        to: ClientRef,
        fanout: u32,
        body: ReplyBody,
    ) {
        let id = to.id;
        let Some(c) = self.clients.get_mut(&id).filter(|_| to.shard == self.me) else {
            return;
        };
        c.unreplied = c.unreplied.saturating_sub(1);
        c.acks_due += i64::from(fanout);
        match body {
            ReplyBody::Done => {}
            ReplyBody::Numerics(nums) => self.send_numerics(ctx, id, &nums),
            ReplyBody::CheckNicks { nums, chan, nicks } => {
                self.send_numerics(ctx, id, &nums);
                for nick in nicks {
                    let to = owner_of(&nick, self.shards);
                    let req = Request::NickCheck {
                        nick,
                        chan: chan.clone(),
                    };
                    if !self.request(ctx, id, to, req) {
                        break;
                    }
                }
            }
            ReplyBody::Part(nums) => {
                if let Some(g) = c.gather.as_mut() {
                    g.remaining = g.remaining.saturating_sub(1);
                }
                self.send_numerics(ctx, id, &nums);
                self.gather_check(ctx, id);
            }
            ReplyBody::Users(entries) => {
                if let Some(g) = c.gather.as_mut() {
                    if let Some(listed) = g.listed.as_mut() {
                        listed.entries.extend(entries);
                    }
                    g.remaining = g.remaining.saturating_sub(1);
                }
                self.gather_check(ctx, id);
            }
            ReplyBody::CommandCounts(list) => {
                if let Some(g) = c.gather.as_mut() {
                    for (cmd, n) in list {
                        match g.counts.iter_mut().find(|(c, _)| *c == cmd) {
                            Some((_, total)) => *total += n,
                            None => g.counts.push((cmd, n)),
                        }
                    }
                    g.remaining = g.remaining.saturating_sub(1);
                }
                self.gather_check(ctx, id);
            }
            ReplyBody::IpChecked { ok } => {
                if ok {
                    c.ip_counted = true;
                } else {
                    self.begin_quit(ctx, id, "Too many connections from your host".into());
                }
            }
            ReplyBody::Joined(nums) => {
                c.pending_joins = c.pending_joins.saturating_sub(1);
                self.send_numerics(ctx, id, &nums);
            }
            ReplyBody::NickClaimed { nick, ok } => self.nick_claimed(ctx, id, nick, ok),
            ReplyBody::Echo(out) => {
                if c.alive && c.caps.has(Caps::ECHO_MESSAGE) && out.wanted_by(c.caps) {
                    let mut r = Renderer::new(&out);
                    let _ = respond_shared(ctx, c, self.info.name(), r.for_caps(c.caps));
                }
            }
            ReplyBody::Stats(n) => {
                if let Some(l) = c.lusers.as_mut() {
                    let sum = &mut l.counts;
                    sum.users += n.users;
                    sum.invisible += n.invisible;
                    sum.opers += n.opers;
                    sum.unknown += n.unknown;
                    sum.channels += n.channels;
                    sum.peak = sum.peak.max(n.peak);
                    l.remaining = l.remaining.saturating_sub(1);
                    if l.remaining == 0 {
                        let mut l = c.lusers.take().unwrap_or_default();
                        l.counts.peak = l.counts.peak.max(l.counts.users);
                        self.peak_users = self.peak_users.max(l.counts.peak);
                        self.send_lusers(ctx, id, &l);
                    }
                }
            }
            ReplyBody::Monitored { nums, refused } => self.monitored(ctx, id, nums, refused),
            ReplyBody::Busy => {
                c.refused = true;
                self.begin_quit(ctx, id, "Server busy".into());
            }
            ReplyBody::History { target, result } => {
                if let Some(h) = c.history.take() {
                    self.send_history(ctx, id, h.sub, target, result);
                }
            }
            ReplyBody::Targets(part) => self.targets_part(ctx, id, part),
            ReplyBody::AccountFound { query, info } => {
                self.sasl_account_found(ctx, id, query, info.map(|i| *i));
            }
            ReplyBody::CertFound { query, found } => self.sasl_cert_found(ctx, id, query, found),
            ReplyBody::AccountRegistered { name, result } => {
                self.account_registered(ctx, id, name, result);
            }
        }
        self.settle(ctx, id);
    }

    /// LUSERS numerics, then the MOTD if this is the welcome burst.
    pub(crate) fn send_lusers(&self, ctx: &mut Ctx<'_, ChatShard>, id: u64, l: &Lusers) {
        let n = &l.counts;
        let visible = n.users - n.invisible.min(n.users);
        let (users, peak) = (n.users.to_string(), n.peak.to_string());
        let nums = [
            Numeric::new(
                RPL_LUSERCLIENT,
                [format!(
                    "There are {visible} users and {} invisible on 1 servers",
                    n.invisible
                )],
            ),
            Numeric::new(
                RPL_LUSEROP,
                [n.opers.to_string(), "operator(s) online".into()],
            ),
            Numeric::new(
                RPL_LUSERUNKNOWN,
                [n.unknown.to_string(), "unknown connection(s)".into()],
            ),
            Numeric::new(
                RPL_LUSERCHANNELS,
                [n.channels.to_string(), "channels formed".into()],
            ),
            Numeric::new(
                RPL_LUSERME,
                [format!("I have {users} clients and 0 servers")],
            ),
            // The shards are one server: local and global are the same.
            Numeric::new(
                RPL_LOCALUSERS,
                [
                    users.clone(),
                    peak.clone(),
                    format!("Current local users {users}, max {peak}"),
                ],
            ),
            Numeric::new(
                RPL_GLOBALUSERS,
                [
                    users.clone(),
                    peak.clone(),
                    format!("Current global users {users}, max {peak}"),
                ],
            ),
        ];
        self.send_numerics(ctx, id, &nums);
        if l.then_motd {
            self.send_motd(ctx, id);
        }
    }

    /// Broadcasts a registered client's nick change to every shard (each acks).
    pub(crate) fn broadcast_nick(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        out: Outgoing,
        nick: String,
    ) {
        self.broadcast_notice(ctx, id, out, NoticeKind::Nick { nick });
    }

    /// Broadcasts a registered client's NICK or ACCOUNT change to every shard
    /// if it is in a channel (each shard delivers it to the local clients
    /// sharing one, updates the channels it owns, and acks).
    pub(crate) fn broadcast_notice(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        out: Outgoing,
        kind: NoticeKind,
    ) {
        let who = self.me_ref(id);
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if c.channels.is_empty() {
            return;
        }
        c.acks_due += self.shards as i64;
        let chans = c.channels.clone();
        for s in 0..self.shards {
            let notice = UserNotice {
                who,
                out: out.clone(),
                chans: chans.clone(),
                kind: kind.clone(),
            };
            self.outbox
                .post(ctx, ShardId(s), ChatMsg::Notice(Box::new(notice)));
        }
    }
}

/// The keys of other nodes' users' NICK and QUIT lines this shard delivered
/// lately, with the clients that got each: such a line comes once per
/// channel the user shares with this node, and a client in several of them
/// gets it once. Bounded: the oldest key is forgotten past [`OnceSeen::KEEP`].
#[derive(Debug, Default)]
pub(crate) struct OnceSeen {
    recent: std::collections::VecDeque<(u64, std::collections::HashSet<u64>)>,
}

impl OnceSeen {
    /// Keys remembered.
    const KEEP: usize = 64;

    /// Whether client `id` gets the line of `key`: the first time, and then
    /// it is remembered.
    pub(crate) fn first(&mut self, key: u64, id: u64) -> bool {
        if let Some((_, ids)) = self.recent.iter_mut().rev().find(|(k, _)| *k == key) {
            return ids.insert(id);
        }
        if self.recent.len() == Self::KEEP {
            self.recent.pop_front();
        }
        self.recent
            .push_back((key, std::collections::HashSet::from([id])));
        true
    }
}

#[cfg(test)]
mod once_tests {
    use super::OnceSeen;

    #[test]
    fn each_client_gets_a_key_once_and_old_keys_are_forgotten() {
        let mut o = OnceSeen::default();
        assert!(o.first(7, 1));
        assert!(o.first(7, 2));
        assert!(!o.first(7, 1));
        assert!(o.first(8, 1));
        for k in 100..100 + OnceSeen::KEEP as u64 {
            o.first(k, 1);
        }
        assert_eq!(o.recent.len(), OnceSeen::KEEP);
        // 7 was forgotten: bounded memory over exactness.
        assert!(o.first(7, 1));
    }
}
