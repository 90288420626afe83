//! The owner's side: the nicks, channels and client addresses whose names hash to
//! this shard.
//!
//! An owner is the single place where a name's state lives and where everything
//! that happens to it is ordered. It answers each request with exactly one reply to
//! the asking client's shard — or forwards it once to the shard that can finish it,
//! which then replies, or (a nick claim finding the nick held) first asks the
//! holder's shard whether the holder is still there and replies on its answer
//! ([`ChatMsg::HolderCheck`]) — and for channel events posts one delivery per shard that
//! has members, never one per member. It never touches a connection: it knows
//! clients only as [`ClientRef`]s.

mod accounts;
mod channel;
mod cluster;
mod events;
mod modes;
mod remote_whois;
mod sync;

mod history;
mod whowas;

use crate::shard::{has_room, ChatShard, ChatTimer, Outbox};
use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use shardline::{Ctx, ShardId, TimerId};
use tracing::warn;

use self::channel::Channel;
pub use self::modes::{KEYLEN, MAX_BANS};
use crate::{
    casemap::{casefold, owner_of, owner_of_key, NameKey},
    history::History,
    info::ServerInfo,
    mail::{
        ChatMsg, ClientRef, Ident, NickGuard, NoticeKind, Numeric, ReplyBody, Request, Said,
        UserNotice,
    },
    reply::code::*,
    stats::ShardStats,
    store::{conversation_key, Message as Stored, MessageKind},
};
pub(crate) use accounts::from_engine_value as account_from_engine_value;

/// One nick's holder.
#[derive(Debug)]
struct NickEntry {
    client: ClientRef,
    /// The nick as the holder spells it.
    nick: String,
    /// Who the holder is, once registered (kept for WHOWAS when it leaves).
    ident: Option<Arc<Ident>>,
    /// Registration is complete: the nick is visible (messages, WHOIS, INVITE).
    registered: bool,
    /// The holder's account: private messages between two accounts are kept.
    account: Option<Arc<str>>,
    /// Nick protection under way (`[accounts] enforce_nick`): the token of
    /// the grace timer (in [`Owner::guards`]) and the timer.
    guard: Option<(u64, TimerId)>,
}

/// The names this shard owns.
#[derive(Debug)]
pub struct Owner {
    /// The history of the channels and conversations owned here, and the
    /// msgid clock of the messages ordered here.
    pub(crate) history: History,
    /// The accounts owned here: fingerprint index, registrations waiting to
    /// be durable.
    accounts: accounts::OwnerAccounts,
    nicks: HashMap<NameKey, NickEntry>,
    chans: HashMap<NameKey, Channel>,
    /// Open connections per client address (only with a per-IP limit).
    ips: HashMap<IpAddr, u32>,
    /// Clients whose request was refused ("Server busy"): their requests still in
    /// flight are refused too, so what they said is a prefix of what they sent,
    /// never a sequence with holes. Forgotten at their QUIT notice, after which
    /// no request of theirs can arrive.
    refused: HashSet<ClientRef>,
    /// Nick protection grace timers under way: token -> the nick.
    guards: HashMap<u64, NameKey>,
    /// The last guard token handed out.
    guard_seq: u64,
    /// MONITOR watchers of the nicks owned here ([`crate::monitor`]).
    watches: crate::monitor::Watches,
    /// This shard's counters (the MONITOR gauge, set before the reply goes
    /// out, so whoever saw the reply sees it counted).
    stats: Arc<ShardStats>,
    /// Who left the nicks owned here (WHOWAS).
    whowas: whowas::WhowasLog,
    /// Nick claims that found the nick held, waiting for the holder's shard
    /// to say whether the holder is still there: token -> the claim.
    claims: HashMap<u64, PendingClaim>,
    /// The last claim token handed out.
    claim_seq: u64,
    /// A cluster node: nicks are claimed in the engine too
    /// ([`crate::cluster`]).
    pub(crate) cluster: bool,
    /// Nick claims waiting for the engine: token -> the claim.
    engine_waits: HashMap<u64, PendingClaim>,
    /// Nicks with a claim waiting for the engine (no second local claim
    /// goes out for them meanwhile).
    engine_reserved: HashSet<NameKey>,
    /// Claims and releases for the engine, taken by the shard after each
    /// piece of mail.
    pub(crate) engine_out: Vec<EngineOp>,
    /// Registrations and lookups waiting for the engine: token -> what.
    account_waits: HashMap<u64, accounts::AccountWait>,
    /// Both engine links are up: channel events go through the engine.
    pub(crate) engine_live: bool,
    /// This node's name in the cluster.
    pub(crate) node: String,
    /// This process's incarnation in the cluster (a random word).
    pub(crate) incarnation: String,
    /// How many other nodes this node sees up.
    pub(crate) other_nodes: usize,
    /// Channel requests published, waiting for their own event: token ->
    /// who asked and what.
    chan_waits: HashMap<u64, (ClientRef, Request)>,
    /// Private messages to users of other nodes, waiting for the engine to
    /// say whether the nick was held: token -> the sender, what it said.
    direct_waits: HashMap<u64, (ClientRef, Box<Said>)>,
    /// INVITEs of users of other nodes waiting for the engine: token -> the
    /// inviter, the invitee's nick, the channel's name, the inviter's mask.
    invite_waits: HashMap<u64, (ClientRef, String, String, String)>,
    /// Private messages from another node between two accounts, held until
    /// their conversation event is in the engine (token -> the holder's
    /// shard and the message): see `Owner::conv_published`.
    conv_waits: HashMap<u64, (ShardId, ChatMsg)>,
    /// Resyncs this shard asked for, by partition ([`sync`]).
    syncs: HashMap<u16, sync::PartitionSync>,
    /// WHOIS of users of other nodes waiting for their node's answer:
    /// token -> the asker ([`remote_whois`]).
    whois_waits: HashMap<u64, remote_whois::WhoisWait>,
}

/// A channel message published (the PUBLISH's reply may come after its own
/// event, when nothing waits for it any more: what to warn its sender).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMsg {
    /// Its sender.
    pub from: ClientRef,
    /// The channel, as named.
    pub chan: String,
    /// PRIVMSG, NOTICE or TAGMSG.
    pub kind: crate::store::MessageKind,
}

/// A claim or release for the cluster's engine ([`Owner::engine_out`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineOp {
    /// Claim nick `key` for the waiting claim `token`.
    Claim {
        /// The waiting claim.
        token: u64,
        /// The casefolded nick.
        key: NameKey,
    },
    /// Release nick `key` (its holder here gave it up).
    Release {
        /// The casefolded nick.
        key: NameKey,
    },
    /// Claim account name `key` (`store::account_key`) for a registration,
    /// storing `value` (`<name>\n<credentials>`) for the other nodes' logins.
    AccountClaim {
        /// The waiting registration.
        token: u64,
        /// The account's key.
        key: String,
        /// What the engine keeps.
        value: String,
    },
    /// Publish a channel event (`payload`) on partition `partition`'s
    /// engine channel; its own copy coming back hands the request `token`
    /// (0: none waits) to the owner.
    Publish {
        /// The waiting request.
        token: u64,
        /// The channel's partition.
        partition: u16,
        /// The event ([`crate::cluster::events::Envelope`]).
        payload: String,
        /// A channel message: its sender is warned if some node misses it.
        msg: Option<Box<SentMsg>>,
        /// A message history keeps: it goes into the partition's stream
        /// too, for the nodes that miss it.
        kept: bool,
    },
    /// Look account `key` up in the engine (not in this node's store).
    AccountGet {
        /// The waiting lookup.
        token: u64,
        /// The account's key.
        key: String,
    },
    /// Publish a private message (`payload`) on the target nick's
    /// partition if another node holds the nick's claim (`key`); the
    /// owner learns which with `token`.
    Direct {
        /// The waiting message.
        token: u64,
        /// The casefolded target nick.
        key: NameKey,
        /// Its partition.
        partition: u16,
        /// The event ([`crate::cluster::events::Envelope`]).
        payload: String,
    },
    /// Publish `payload` on node `node`'s private-message channel of
    /// `partition` (an answer to that node's ask).
    DirectTo {
        /// The node.
        node: String,
        /// The partition.
        partition: u16,
        /// The event ([`crate::cluster::events::Envelope`]).
        payload: String,
    },
}

/// What the engine did with a private message for another node's user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectOutcome {
    /// Delivered to the holder's node.
    Sent,
    /// The holder's node is up but its subscriber is away: not delivered.
    Unreachable,
    /// No other live node holds the nick.
    NoSuchNick,
}

/// A nick claim waiting for a [`ChatMsg::HolderAnswer`].
#[derive(Debug)]
struct PendingClaim {
    /// Who claims it.
    from: ClientRef,
    /// The holder asked about.
    holder: ClientRef,
    /// The claim's entry, if it is granted.
    entry: NickEntry,
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
    /// The owner of shard `shard`, with nothing yet.
    pub(crate) fn new(shard: usize, stats: Arc<ShardStats>) -> Owner {
        Owner {
            history: History::new(shard, stats.clone()),
            accounts: accounts::OwnerAccounts::default(),
            nicks: HashMap::new(),
            chans: HashMap::new(),
            ips: HashMap::new(),
            refused: HashSet::new(),
            guards: HashMap::new(),
            guard_seq: 0,
            watches: crate::monitor::Watches::default(),
            stats,
            whowas: whowas::WhowasLog::default(),
            claims: HashMap::new(),
            claim_seq: 0,
            cluster: false,
            engine_waits: HashMap::new(),
            engine_reserved: HashSet::new(),
            engine_out: Vec::new(),
            account_waits: HashMap::new(),
            engine_live: false,
            node: String::new(),
            incarnation: String::new(),
            other_nodes: 0,
            chan_waits: HashMap::new(),
            direct_waits: HashMap::new(),
            invite_waits: HashMap::new(),
            conv_waits: HashMap::new(),
            syncs: HashMap::new(),
            whois_waits: HashMap::new(),
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
        if !(is_work(&req) && self.refused.contains(&from)) && self.through_engine(&req) {
            let node = self.node.clone();
            match self.publish_request(info, &node, from, req) {
                cluster::Published::Waiting => {} // answered when its event is back
                cluster::Published::Refused((fanout, body)) => {
                    if let Some(body) = body {
                        post_reply(ctx, outbox, from, fanout, body);
                    }
                }
                cluster::Published::Here(req) => self.handle_here(ctx, info, outbox, from, req),
            }
            return;
        }
        self.handle_here(ctx, info, outbox, from, req);
    }

    /// Handles one request here and sends its reply (as a single node).
    pub(crate) fn handle_here(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        info: &ServerInfo,
        outbox: &mut Outbox,
        from: ClientRef,
        req: Request,
    ) {
        let (fanout, body) = if is_work(&req) && self.refused.contains(&from) {
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
        post_reply(ctx, outbox, from, fanout, body);
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
            Request::ClaimNick {
                nick,
                registered,
                account,
                ident,
            } => {
                let key: NameKey = casefold(&nick).into();
                let entry = NickEntry {
                    client: from,
                    nick: nick.clone(),
                    ident,
                    registered,
                    account,
                    guard: None,
                };
                match self.nicks.get(&key).map(|e| e.client) {
                    Some(holder) if holder != from => {
                        // Held: unless the holder's shard says it is gone
                        // (its close not seen here yet), 433.
                        self.claim_seq += 1;
                        let token = self.claim_seq;
                        let claim = PendingClaim {
                            from,
                            holder,
                            entry,
                        };
                        self.claims.insert(token, claim);
                        let owner = ctx.shard_id().0;
                        let msg = ChatMsg::HolderCheck {
                            holder,
                            owner,
                            token,
                        };
                        outbox.post(ctx, ShardId(holder.shard), msg);
                        (0, None)
                    }
                    _ => match self.grant(ctx, info, outbox, from, key, entry) {
                        Some(ok) => reply(ReplyBody::NickClaimed { nick, ok }),
                        None => (0, None),
                    },
                }
            }
            Request::SetAccount { key, account } => {
                if let Some(e) = self.nicks.get_mut(&key).filter(|e| e.client == from) {
                    e.account = account;
                    self.guard_check(ctx, info, outbox, &key);
                }
                reply(ReplyBody::Done)
            }
            Request::ReleaseNick { key } => {
                if self.nicks.get(&key).is_some_and(|e| e.client == from) {
                    self.guard_stop(ctx, &key);
                    self.remove_nick(ctx, outbox, info, &key);
                }
                reply(ReplyBody::Done)
            }
            Request::Registered { key, ident } => {
                if let Some(e) = self.nicks.get_mut(&key).filter(|e| e.client == from) {
                    let comes_online = !e.registered;
                    e.registered = true;
                    let nick = e.nick.clone();
                    e.ident = Some(ident);
                    self.guard_check(ctx, info, outbox, &key);
                    if comes_online {
                        self.watches.notify(ctx, outbox, &key, &nick, true);
                    }
                }
                reply(ReplyBody::Done)
            }
            Request::Whowas { nick, count } => numerics(self.whowas_numerics(info, &nick, count)),
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
                    if self.cluster && self.engine_live {
                        // Perhaps a user of another node: the channel's
                        // owner checks the inviter and sends it there.
                        let to = owner_of(&chan, ctx.shards());
                        let req = Request::InviteRemote { nick, chan, mask };
                        outbox.post(ctx, ShardId(to), ChatMsg::Request { from, req });
                        return (0, None);
                    }
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
            Request::Chghost { nick, user, host } => {
                let Some(target) = self.holder(&nick) else {
                    return numerics(vec![no_such_nick(&nick)]);
                };
                let req = Request::ChghostLocal {
                    target,
                    nick,
                    user,
                    host,
                };
                outbox.post(ctx, ShardId(target.shard), ChatMsg::Request { from, req });
                (0, None)
            }
            Request::Kill { nick, mask, reason } => {
                let Some(target) = self.holder(&nick) else {
                    return numerics(vec![no_such_nick(&nick)]);
                };
                let req = Request::KillLocal {
                    target,
                    nick,
                    mask,
                    reason,
                };
                outbox.post(ctx, ShardId(target.shard), ChatMsg::Request { from, req });
                (0, None)
            }
            Request::Whois { nick, viewer } => {
                let Some(target) = self.holder(&nick) else {
                    if self.cluster && self.engine_live {
                        // Perhaps a user of another node: asked there.
                        return self.whois_remote(ctx, info, from, nick, viewer.multi_prefix);
                    }
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
            Request::Users { ison, nicks } => {
                let targets: Vec<(usize, ClientRef)> = nicks
                    .iter()
                    .filter_map(|(i, nick)| Some((*i, self.holder(nick)?)))
                    .collect();
                let Some(&(_, first)) = targets.first() else {
                    return reply(ReplyBody::Users(Vec::new()));
                };
                let req = Request::UsersLocal {
                    ison,
                    targets,
                    found: Vec::new(),
                };
                outbox.post(ctx, ShardId(first.shard), ChatMsg::Request { from, req });
                (0, None)
            }
            Request::NickMsg { target, said } => {
                let Some((to, account)) = self.holder_entry(&target) else {
                    if self.cluster && self.engine_live {
                        // Perhaps a user of another node.
                        return self.publish_direct(from, target, said);
                    }
                    let quiet = said.kind != MessageKind::Privmsg;
                    return reply(quiet_if(quiet, vec![no_such_nick(&target)]));
                };
                // Kept when both sides have an account: ordered (stamped and
                // stored) by the owner of their conversation.
                if let (Some(a), Some(b)) = (&said.account, account) {
                    let key = conversation_key(a, &b);
                    if self.history.keeps(&key) && said.kind != MessageKind::Tagmsg {
                        let owner = owner_of_key(&key, ctx.shards());
                        if !has_room(outbox, info, owner) {
                            return reply(ReplyBody::Busy);
                        }
                        let req = Request::ConvMsg { to, key, said };
                        outbox.post(ctx, ShardId(owner), ChatMsg::Request { from, req });
                        return (0, None);
                    }
                }
                self.deliver_private(ctx, info, outbox, from, to, None, *said)
            }
            Request::ConvMsg { to, key, said } => {
                self.deliver_private(ctx, info, outbox, from, to, Some(key), *said)
            }
            Request::MonitorAdd { nicks } => {
                let cap = info.config.limits.monitor_shard_total;
                let (watched, refused): (Vec<_>, Vec<_>) = nicks
                    .into_iter()
                    .partition(|(key, _)| self.watches.add(key.clone(), from, cap));
                let nums = crate::monitor::status(&watched, |k| self.online(k));
                self.stats.monitor_watches.set(self.watches.total() as u64);
                reply(ReplyBody::Monitored { nums, refused })
            }
            Request::MonitorDel { keys } => {
                for key in &keys {
                    self.watches.remove(key, from);
                }
                self.stats.monitor_watches.set(self.watches.total() as u64);
                reply(ReplyBody::Done)
            }
            Request::MonitorStatus { nicks } => {
                numerics(crate::monitor::status(&nicks, |k| self.online(k)))
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
            req @ (Request::ChanHistory { .. }
            | Request::NickHistory { .. }
            | Request::ConvHistory { .. }
            | Request::HistoryTargets { .. }) => self.history_request(ctx, outbox, from, req),
            req @ (Request::AccountLookup { .. }
            | Request::CertLookup { .. }
            | Request::RegisterAccount { .. }) => self.account_request(ctx, from, req),
            other => self.channel_request(ctx, info, outbox, from, other),
        }
    }

    /// Whether the holder of nick `key` should be renamed unless it logs in:
    /// `[accounts] enforce_nick` is on, it completed registration, an account
    /// of that name exists (its record is on this shard: a name's account and
    /// nick have the same owner), and it is not logged in to it.
    fn guarded(&self, info: &ServerInfo, key: &str) -> bool {
        let Some(e) = self.nicks.get(key) else {
            return false;
        };
        info.config.accounts.enforce_nick
            && e.registered
            && e.account.as_deref().is_none_or(|a| casefold(a) != key)
            && self.history.account_exists(key)
    }

    /// Starts nick protection for the holder of `key` if it needs it and none
    /// is under way (a warning NOTICE now, a rename when the grace period
    /// ends), or stops one that it no longer needs (it logged in).
    fn guard_check(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        info: &ServerInfo,
        outbox: &mut Outbox,
        key: &NameKey,
    ) {
        let guarded = self.guarded(info, key);
        let Some(e) = self.nicks.get_mut(key) else {
            return;
        };
        match (guarded, e.guard) {
            (true, None) => {
                self.guard_seq += 1;
                let token = self.guard_seq;
                let grace = info.config.accounts.enforce_nick_grace();
                let timer = ctx.set_timer(grace, ChatTimer::NickGuard(token));
                e.guard = Some((token, timer));
                self.guards.insert(token, key.clone());
                let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
                let to = e.client;
                let msg = ChatMsg::Guard {
                    to,
                    key: key.clone(),
                    action: NickGuard::Warn { grace_ms },
                };
                outbox.post(ctx, ShardId(to.shard), msg);
            }
            (false, Some(_)) => self.guard_stop(ctx, key),
            _ => {}
        }
    }

    /// Ends the nick protection of `key`'s holder, if any.
    fn guard_stop(&mut self, ctx: &mut Ctx<'_, ChatShard>, key: &str) {
        if let Some((token, timer)) = self.nicks.get_mut(key).and_then(|e| e.guard.take()) {
            ctx.cancel_timer(timer);
            self.guards.remove(&token);
        }
    }

    /// A nick protection grace period ended: if the holder still is not
    /// logged in to the account, its shard renames it.
    pub(crate) fn guard_due(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        info: &ServerInfo,
        outbox: &mut Outbox,
        token: u64,
    ) {
        let Some(key) = self.guards.remove(&token) else {
            return;
        };
        let guarded = self.guarded(info, &key);
        let Some(e) = self
            .nicks
            .get_mut(&key)
            .filter(|e| e.guard.is_some_and(|(t, _)| t == token))
        else {
            return;
        };
        e.guard = None;
        if guarded {
            let to = e.client;
            let msg = ChatMsg::Guard {
                to,
                key,
                action: NickGuard::Rename,
            };
            outbox.post(ctx, ShardId(to.shard), msg);
        }
    }

    /// The nick `key` as its holder spells it, if a registered client holds it.
    fn online(&self, key: &str) -> Option<String> {
        self.nicks
            .get(key)
            .filter(|e| e.registered)
            .map(|e| e.nick.clone())
    }

    /// Gives nick `key` to `entry`'s client (free, or already its own: a
    /// change of case keeps a guard under way).
    fn take_nick(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        info: &ServerInfo,
        outbox: &mut Outbox,
        key: NameKey,
        mut entry: NickEntry,
    ) {
        let old = self.nicks.get(&key);
        entry.guard = old.and_then(|e| e.guard);
        let comes_online = entry.registered && !old.is_some_and(|e| e.registered);
        let nick = entry.nick.clone();
        self.nicks.insert(key.clone(), entry);
        self.guard_check(ctx, info, outbox, &key);
        if comes_online {
            self.watches.notify(ctx, outbox, &key, &nick, true);
        }
    }

    /// The holder's shard answered a [`ChatMsg::HolderCheck`]: the claim
    /// waiting on it takes the nick if the holder is gone (or the nick was
    /// released meanwhile), else gets 433.
    pub(crate) fn holder_answer(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        info: &ServerInfo,
        outbox: &mut Outbox,
        token: u64,
        alive: bool,
    ) {
        let Some(PendingClaim {
            from,
            holder,
            entry,
        }) = self.claims.remove(&token)
        else {
            return;
        };
        let nick = entry.nick.clone();
        let key: NameKey = casefold(&nick).into();
        let free = match self.nicks.get(&key).map(|e| e.client) {
            None => true,
            Some(c) if c == from => true,
            Some(c) if c == holder && !alive => {
                // Gone without its release having come: it is released now
                // (its own release, when it comes, no longer matches).
                self.guard_stop(ctx, &key);
                self.remove_nick(ctx, outbox, info, &key);
                true
            }
            Some(_) => false,
        };
        let ok = if free {
            match self.grant(ctx, info, outbox, from, key, entry) {
                Some(ok) => ok,
                None => return, // the engine answers
            }
        } else {
            false
        };
        let body = ReplyBody::NickClaimed { nick, ok };
        outbox.post(ctx, ShardId(from.shard), ChatMsg::reply(from, body));
    }

    /// Gives a nick free here to `from`: at once on a single node (or when
    /// `from` holds it already), else once the engine has granted the
    /// cluster-wide claim (`None`: the answer comes from
    /// [`Owner::engine_claimed`]). `Some(false)` when another claim for it
    /// waits for the engine.
    fn grant(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        info: &ServerInfo,
        outbox: &mut Outbox,
        from: ClientRef,
        key: NameKey,
        entry: NickEntry,
    ) -> Option<bool> {
        let own = self.nicks.get(&key).is_some_and(|e| e.client == from);
        if !self.cluster || own {
            self.take_nick(ctx, info, outbox, key, entry);
            return Some(true);
        }
        if !self.engine_reserved.insert(key.clone()) {
            return Some(false);
        }
        self.claim_seq += 1;
        let token = self.claim_seq;
        let claim = PendingClaim {
            from,
            holder: from,
            entry,
        };
        self.engine_waits.insert(token, claim);
        self.engine_out.push(EngineOp::Claim { token, key });
        None
    }

    /// The engine answered claim `token`: granted cluster-wide (`ok`), or
    /// held by another node (433).
    pub(crate) fn engine_claimed(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        info: &ServerInfo,
        outbox: &mut Outbox,
        token: u64,
        ok: bool,
    ) {
        let Some(PendingClaim { from, entry, .. }) = self.engine_waits.remove(&token) else {
            return;
        };
        let nick = entry.nick.clone();
        let key: NameKey = casefold(&nick).into();
        self.engine_reserved.remove(&key);
        if ok {
            self.take_nick(ctx, info, outbox, key, entry);
        }
        let body = ReplyBody::NickClaimed { nick, ok };
        outbox.post(ctx, ShardId(from.shard), ChatMsg::reply(from, body));
    }

    /// The engine refused claim `token` because another live process holds
    /// this node's name: its client gets `FAIL NICK CLUSTER_NAME_IN_USE`
    /// (then the 433 of the refused claim).
    pub(crate) fn engine_name_in_use(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        token: u64,
    ) {
        let Some(wait) = self.engine_waits.get(&token) else {
            return;
        };
        let from = wait.from;
        let r = crate::mail::StandardReply {
            to: from,
            kind: crate::reply::Standard::Fail,
            command: "NICK",
            code: "CLUSTER_NAME_IN_USE",
            context: vec![self.node.clone()],
            text: "No nick can be given out: another live server uses this server's cluster node name (each server needs its own)".to_string(),
        };
        outbox.post(ctx, ShardId(from.shard), ChatMsg::Standard(Box::new(r)));
    }

    /// Every nick held here, with its holder (to claim again in the engine
    /// when the link is back).
    pub(crate) fn held_nicks(&self) -> Vec<(NameKey, ClientRef)> {
        self.nicks
            .iter()
            .map(|(k, e)| (k.clone(), e.client))
            .collect()
    }

    /// Whether nick `key` is held here (by any client of this node).
    pub(crate) fn holds_nick(&self, key: &str) -> bool {
        self.nicks.contains_key(key)
    }

    /// Forgets the holder of nick `key`; a registered one goes to WHOWAS and
    /// its MONITOR watchers hear it is offline.
    fn remove_nick(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        outbox: &mut Outbox,
        info: &ServerInfo,
        key: &NameKey,
    ) {
        let Some(e) = self.nicks.remove(key) else {
            return;
        };
        if self.cluster {
            self.engine_out.push(EngineOp::Release { key: key.clone() });
        }
        if e.registered {
            self.watches.notify(ctx, outbox, key, &e.nick, false);
        }
        let Some(ident) = e.ident.filter(|_| e.registered) else {
            return;
        };
        let was = whowas::Was {
            nick: e.nick,
            user: ident.user.clone(),
            host: ident.host.clone(),
            realname: ident.realname.clone(),
            account: e.account,
            when_ms: crate::clock::now_millis(),
        };
        let l = &info.config.limits;
        self.whowas
            .push(key.clone(), was, l.whowas, l.whowas_per_nick);
    }

    /// The WHOWAS answer for `nick`: per entry, newest first, 314, 312 (the
    /// server and when it left), 330 if it was logged in; then 369. 406
    /// first when none is kept.
    fn whowas_numerics(&self, info: &ServerInfo, nick: &str, count: Option<usize>) -> Vec<Numeric> {
        let found = self.whowas.get(&casefold(nick), count);
        let mut nums = Vec::with_capacity(found.len() * 3 + 2);
        if found.is_empty() {
            nums.push(Numeric::new(
                ERR_WASNOSUCHNICK,
                [nick, "There was no such nickname"],
            ));
        }
        for w in found {
            nums.push(Numeric::new(
                RPL_WHOWASUSER,
                [&w.nick, &w.user, &w.host, "*", &w.realname],
            ));
            let when = crate::clock::format_server_time(w.when_ms);
            nums.push(Numeric::new(
                RPL_WHOISSERVER,
                [w.nick.as_str(), info.name(), &when],
            ));
            if let Some(account) = &w.account {
                nums.push(Numeric::new(
                    RPL_WHOISACCOUNT,
                    [&w.nick, &**account, "was logged in as"],
                ));
            }
        }
        nums.push(Numeric::new(RPL_ENDOFWHOWAS, [nick, "End of WHOWAS"]));
        nums
    }

    /// The registered client holding `nick`.
    fn holder(&self, nick: &str) -> Option<ClientRef> {
        self.holder_entry(nick).map(|(c, _)| c)
    }

    /// The registered client holding `nick`, and its account.
    fn holder_entry(&self, nick: &str) -> Option<(ClientRef, Option<Arc<str>>)> {
        let key = casefold(nick);
        self.nicks
            .get(key.as_str())
            .filter(|e| e.registered)
            .map(|e| (e.client, e.account.clone()))
    }

    /// Stamps a private message here (and keeps it in history `key`, the
    /// conversation, if given), delivers it to `to`'s shard and answers the
    /// sender with its echo.
    #[allow(clippy::too_many_arguments)]
    fn deliver_private(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        info: &ServerInfo,
        outbox: &mut Outbox,
        from: ClientRef,
        to: ClientRef,
        key: Option<String>,
        said: Said,
    ) -> Answer {
        if !has_room(outbox, info, to.shard) {
            return reply(ReplyBody::Busy);
        }
        let Said {
            mut out,
            kind,
            mask,
            account,
            to: to_name,
            text,
        } = said;
        let (msgid, time) = self.history.stamp(key.as_deref());
        out.msgid = Some(msgid.clone());
        out.time_ms = Some(time);
        if let Some(key) = key {
            let m = Stored {
                target: key.into(),
                to: to_name,
                msgid: msgid.to_string(),
                time,
                source: mask.to_string(),
                account: account.as_deref().unwrap_or("").to_string(),
                kind,
                tags: out.client_tags.as_deref().unwrap_or("").to_string(),
                text,
            };
            // The other nodes keep it too (this one skips its own copy).
            let _ = self.publish_conv(&m, 0);
            if self.history.keeps(&m.target) {
                self.history.append(ctx, m);
            }
        }
        let private = ChatMsg::Private {
            to,
            out: out.clone(),
            ack: from,
            notify_away: kind == MessageKind::Privmsg,
            remote_sender: None,
        };
        outbox.post(ctx, ShardId(to.shard), private);
        (1, Some(ReplyBody::Echo(out)))
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
            // The channel's name when the other nodes are to see this too.
            let shared = (self.cluster && self.engine_live && ch.members.contains_key(&notice.who))
                .then(|| ch.name.clone());
            match &notice.kind {
                NoticeKind::Nick { nick } => {
                    ch.rename(notice.who, nick);
                    if let Some(name) = shared {
                        // The other nodes' members see the new nick too.
                        self.publish_user_event(notice, &name);
                    }
                }
                NoticeKind::Account { .. }
                | NoticeKind::Chghost { .. }
                | NoticeKind::Away
                | NoticeKind::Setname => {
                    match &notice.kind {
                        NoticeKind::Account { account } => ch.set_account(notice.who, account),
                        NoticeKind::Chghost { userhost, .. } => {
                            ch.set_userhost(notice.who, userhost)
                        }
                        _ => {}
                    }
                    if let Some(name) = shared {
                        // The other nodes' members with the cap see it too.
                        self.publish_user_event(notice, &name);
                    }
                }
                NoticeKind::Quit => {
                    if let Some(name) = shared {
                        // The other nodes' members see it leave too.
                        self.publish_user_event(notice, &name);
                    }
                    let Some(ch) = self.chans.get_mut(key) else {
                        continue;
                    };
                    ch.remove(notice.who);
                    if ch.members.is_empty() && ch.remote.is_empty() {
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

/// Whether `req` is new work (refused to a client refused once: see
/// `Owner::refused`).
fn is_work(req: &Request) -> bool {
    match req {
        Request::Join { .. }
        | Request::Part { .. }
        | Request::Kick { .. }
        | Request::InviteTo { .. }
        | Request::InviteRemote { .. }
        | Request::ChanMsg { .. }
        | Request::NickMsg { .. }
        | Request::ConvMsg { .. } => true,
        Request::Topic { set, .. } => set.is_some(),
        Request::Mode { changes, .. } => !changes.is_empty(),
        _ => false,
    }
}

/// Posts the reply to `from`'s request, with the deliveries made for it.
fn post_reply(
    ctx: &mut Ctx<'_, ChatShard>,
    outbox: &mut Outbox,
    from: ClientRef,
    fanout: u32,
    body: ReplyBody,
) {
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
