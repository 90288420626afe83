//! Requests and their replies: what a client's shard asks of a name's owner (or of
//! every shard, for queries that merge), and what comes back.
//!
//! Every request is answered by exactly one [`ReplyBody`]. A request may be
//! *forwarded* once — the nick owner resolves a nick to a client and passes the
//! request on to the shard that can finish it (WHOIS to the target's shard, INVITE
//! to the channel's owner) — and then that shard replies instead. USERHOST and
//! ISON, batched, pass along every shard holding one of the nicks asked
//! ([`Request::UsersLocal`]); the last one replies.

use std::{net::IpAddr, sync::Arc};

use super::{ClientRef, Numeric, Outgoing};
use crate::{
    auth::{record::Credentials, sasl::AccountInfo},
    casemap::NameKey,
    store::{Message as Stored, MessageKind, MsgRef, TargetSummary},
};

/// A PRIVMSG, NOTICE or TAGMSG as its sender's shard formatted it, with what
/// its history record needs. The shard that orders it (a channel's owner, a
/// conversation's owner, or the recipient nick's owner) stamps `out` with its
/// time and msgid, keeps it in history, and delivers that same stamped line.
#[derive(Debug)]
pub struct Said {
    /// The line.
    pub out: Outgoing,
    /// PRIVMSG, NOTICE or TAGMSG.
    pub kind: MessageKind,
    /// The sender's `nick!user@host`.
    pub mask: Arc<str>,
    /// The sender's account, if it has one.
    pub account: Option<Arc<str>>,
    /// The target as the sender wrote it (a channel or a nick).
    pub to: String,
    /// The text (empty for TAGMSG).
    pub text: String,
}

/// A message reference in CHATHISTORY (`msgid=…` or `timestamp=…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistRef {
    /// `msgid=…`.
    MsgId(String),
    /// `timestamp=…`, milliseconds since the Unix epoch.
    Time(u64),
}

impl HistRef {
    /// The store's form.
    pub fn as_ref(&self) -> MsgRef<'_> {
        match self {
            HistRef::MsgId(id) => MsgRef::MsgId(id),
            HistRef::Time(t) => MsgRef::Time(*t),
        }
    }
}

/// A CHATHISTORY subcommand that returns messages, with its references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistorySub {
    /// `LATEST` (`*` is `None`).
    Latest(Option<HistRef>),
    /// `BEFORE`.
    Before(HistRef),
    /// `AFTER`.
    After(HistRef),
    /// `AROUND`.
    Around(HistRef),
    /// `BETWEEN`.
    Between(HistRef, HistRef),
}

/// One CHATHISTORY query on one history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    /// What to return.
    pub sub: HistorySub,
    /// At most this many messages (already cut to `CHATHISTORY=`).
    pub limit: usize,
}

/// Why a history query returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryError {
    /// No such target, or the client may not read it now (`INVALID_TARGET`).
    NoAccess,
    /// A `msgid=` the history does not hold (`MESSAGE_ERROR`).
    UnknownMsgid,
    /// This shard keeps no history (its store did not open; `MESSAGE_ERROR`).
    Unavailable,
}

/// One channel mode change as the client asked for it (checked by the owner).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeChange {
    /// `+` (true) or `-`.
    pub adding: bool,
    /// The mode letter (anything the client sent; unknown ones draw 472).
    pub mode: char,
    /// Its parameter, for the modes that take one.
    pub param: Option<String>,
}

/// Who is asking, for queries whose answer depends on it (`+s` channels, `+i`
/// users).
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    /// The asker's channels (keys).
    pub chans: Vec<NameKey>,
    /// Whether the asker is a server operator (sees everything).
    pub oper: bool,
    /// Whether the asker negotiated `multi-prefix`.
    pub multi_prefix: bool,
}

impl Viewer {
    /// Whether the asker is in channel `key`.
    pub fn in_chan(&self, key: &str) -> bool {
        self.chans.iter().any(|k| &**k == key)
    }
}

/// Who a registered client is, as its nick's owner keeps it for WHOWAS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    /// The user name.
    pub user: String,
    /// The host.
    pub host: String,
    /// The real name.
    pub realname: String,
}

/// A request from a client's shard to the owner of a name (or to every shard).
/// Answered by exactly one [`super::ChatMsg::Reply`].
#[derive(Debug)]
pub enum Request {
    /// Take `nick` for the client (a change of case of its own nick included).
    ClaimNick {
        /// The nick as the client wrote it.
        nick: String,
        /// The client has completed registration (messages may reach it).
        registered: bool,
        /// The client's account, if it has one (private history needs it).
        account: Option<Arc<str>>,
        /// Who it is, once registered (WHOWAS when it leaves the nick).
        ident: Option<Arc<Ident>>,
    },
    /// The holder of nick `key` now has (or no longer has) an account.
    SetAccount {
        /// The casefolded nick.
        key: NameKey,
        /// The account.
        account: Option<Arc<str>>,
    },
    /// Give up `key` (a casefolded nick the client held).
    ReleaseNick {
        /// The casefolded nick.
        key: NameKey,
    },
    /// The client holding `key` completed registration: it is visible from now on.
    Registered {
        /// The casefolded nick.
        key: NameKey,
        /// Who it is (WHOWAS when it leaves the nick).
        ident: Arc<Ident>,
    },
    /// KILL, to the victim's nick owner, which forwards it as `KillLocal`
    /// (401 if nobody registered holds the nick).
    Kill {
        /// The victim's nick.
        nick: String,
        /// The operator's `nick!user@host`.
        mask: Arc<str>,
        /// The reason given.
        reason: String,
    },
    /// KILL, forwarded to the victim's shard: the victim gets the KILL line
    /// and is disconnected (`Killed (<oper> (<reason>))`).
    KillLocal {
        /// The victim.
        target: ClientRef,
        /// The nick as asked (for 401 if it left meanwhile).
        nick: String,
        /// The operator's `nick!user@host`.
        mask: Arc<str>,
        /// The reason given.
        reason: String,
    },
    /// WALLOPS, to every shard: the line goes to each local client with user
    /// mode `+w`.
    Wallops {
        /// `:oper!user@host WALLOPS :text` (shared by every recipient).
        line: bytes::Bytes,
    },
    /// WHOWAS, to the nick's owner: 314/312/330 per entry, newest first, then
    /// 369 (406 first if it keeps none).
    Whowas {
        /// The nick asked about.
        nick: String,
        /// At most this many entries (`None`: all).
        count: Option<usize>,
    },
    /// Join a channel (created if it does not exist).
    Join {
        /// The channel name as written.
        chan: String,
        /// The key given, if any.
        key: Option<String>,
        /// The client's current nick.
        nick: String,
        /// `nick!user@host`.
        mask: Arc<str>,
        /// Whether NAMES should show every prefix.
        multi_prefix: bool,
        /// Whether NAMES should show `nick!user@host` (`userhost-in-names`).
        userhost_in_names: bool,
        /// The client's away message: members with `away-notify` get an
        /// AWAY after its JOIN.
        away: Option<String>,
        /// The client's account (`extended-join`, `account-tag`; kept with
        /// the member for its later events).
        account: Option<Arc<str>>,
        /// The client's real name (`extended-join`).
        realname: String,
        /// Whether the joiner becomes an operator when it creates the
        /// channel: `None` on a single node (decided when handled: the
        /// channel did not exist); in a cluster, decided when the JOIN was
        /// published and carried in its event, so every node agrees.
        creator_op: Option<bool>,
    },
    /// Leave a channel.
    Part {
        /// The channel name or key.
        chan: String,
        /// `nick!user@host`.
        mask: Arc<str>,
        /// The part message (may be empty).
        reason: String,
    },
    /// Query (`set` = None) or set a topic.
    Topic {
        /// The channel name.
        chan: String,
        /// `nick!user@host` of the setter.
        mask: Arc<str>,
        /// The setter's nick (for 333).
        nick: String,
        /// The new topic, or `None` to query.
        set: Option<String>,
    },
    /// The member list.
    Names {
        /// The channel name.
        chan: String,
        /// Whether every prefix should be shown.
        multi_prefix: bool,
        /// Whether `nick!user@host` should be shown (`userhost-in-names`).
        userhost_in_names: bool,
    },
    /// Channel modes: a query (324, 329) when `changes` is empty.
    Mode {
        /// The channel name.
        chan: String,
        /// `nick!user@host` of the setter.
        mask: Arc<str>,
        /// The changes asked for, in order.
        changes: Vec<ModeChange>,
    },
    /// Remove `target` from a channel.
    Kick {
        /// The channel name.
        chan: String,
        /// The nick to remove.
        target: String,
        /// `nick!user@host` of the kicker.
        mask: Arc<str>,
        /// The reason (the kicker's nick if none was given).
        reason: String,
    },
    /// To a nick's owner: 401 if `nick` is nobody, else 441 (not on `chan`).
    NickCheck {
        /// The nick a channel owner did not find among the members.
        nick: String,
        /// The channel, for 441.
        chan: String,
    },
    /// INVITE, to the invitee's nick owner, which forwards it as `InviteTo`.
    Invite {
        /// The invitee's nick.
        nick: String,
        /// The channel name.
        chan: String,
        /// `nick!user@host` of the inviter.
        mask: Arc<str>,
    },
    /// INVITE, forwarded to the channel's owner with the invitee resolved.
    InviteTo {
        /// The invitee.
        target: ClientRef,
        /// The invitee's nick as it holds it.
        nick: String,
        /// The channel name.
        chan: String,
        /// `nick!user@host` of the inviter.
        mask: Arc<str>,
    },
    /// INVITE of a nick nobody on this node holds (a cluster), forwarded by
    /// the nick's owner to the channel's owner: it checks the inviter as for
    /// `InviteTo` and sends the invitation to the node whose claim the nick
    /// is.
    InviteRemote {
        /// The invitee's nick as written.
        nick: String,
        /// The channel name.
        chan: String,
        /// `nick!user@host` of the inviter.
        mask: Arc<str>,
    },
    /// Another node's INVITE for a user here, forwarded by the nick's owner
    /// to the channel's owner: the invitation is recorded (for `+i`) and the
    /// INVITE line goes to the invitee. Answered to nobody.
    InviteFromNode {
        /// The invitee.
        target: ClientRef,
        /// The invitee's nick as it holds it.
        nick: String,
        /// The channel name.
        chan: String,
        /// `nick!user@host` of the inviter.
        mask: String,
    },
    /// PRIVMSG/NOTICE/TAGMSG to a channel. The body is formatted by the sender's
    /// shard; the owner stamps its time and msgid, orders it and keeps it in the
    /// channel's history. Only PRIVMSG draws error replies.
    ChanMsg {
        /// The channel name.
        chan: String,
        /// The message (its `mask` also checks bans on a non-member).
        said: Box<Said>,
    },
    /// PRIVMSG/NOTICE/TAGMSG to a nick, routed through the nick's owner: if
    /// both sides have an account and history is on, it is forwarded to the
    /// conversation's owner as `ConvMsg`; else the nick's owner stamps it.
    NickMsg {
        /// The target nick.
        target: String,
        /// The message.
        said: Box<Said>,
    },
    /// A private message between two accounts, forwarded by the recipient
    /// nick's owner to the owner of their conversation, which stamps it, keeps
    /// it in the conversation's history and delivers it.
    ConvMsg {
        /// The recipient.
        to: ClientRef,
        /// The conversation's key ([`crate::store::conversation_key`]).
        key: String,
        /// The message.
        said: Box<Said>,
    },
    /// CHATHISTORY on a channel, to its owner (which checks that the client may
    /// read it now).
    ChanHistory {
        /// The channel as given.
        chan: String,
        /// The asker's `nick!user@host` (bans).
        mask: Arc<str>,
        /// What to return.
        query: HistoryQuery,
    },
    /// CHATHISTORY on a nick, to the nick's owner: the conversation is with
    /// the holder's account, or (nobody holding it) with the account of that
    /// name. Forwarded as `ConvHistory`.
    NickHistory {
        /// The nick as given.
        nick: String,
        /// The asker's account.
        account: Arc<str>,
        /// What to return.
        query: HistoryQuery,
    },
    /// CHATHISTORY on a conversation, to its owner.
    ConvHistory {
        /// The conversation's key.
        key: String,
        /// The target as given (the batch's name).
        target: String,
        /// What to return.
        query: HistoryQuery,
    },
    /// CHATHISTORY TARGETS, to every shard: the histories it keeps among the
    /// asker's channels and its account's conversations, whose latest message
    /// is strictly between `a` and `b`.
    HistoryTargets {
        /// The asker's channels (keys).
        chans: Vec<NameKey>,
        /// The asker's account.
        account: Option<Arc<str>>,
        /// One bound (ms); counting starts here.
        a: u64,
        /// The other bound (ms).
        b: u64,
        /// At most this many.
        limit: usize,
    },
    /// CHGHOST (an operator's, checked on its shard), to the nick's owner,
    /// which forwards it as `ChghostLocal` to the holder's shard, or answers
    /// 401.
    Chghost {
        /// The nick whose user and host change.
        nick: String,
        /// The new user name (valid).
        user: String,
        /// The new host (valid).
        host: String,
    },
    /// CHGHOST, forwarded to the target's shard: it changes the client's mask,
    /// tells it (`chghost`), sends every shard a [`crate::mail::NoticeKind::Chghost`]
    /// acknowledged to the operator, and replies with that fan-out.
    ChghostLocal {
        /// The client.
        target: ClientRef,
        /// The nick as asked (for 401 if it left meanwhile).
        nick: String,
        /// The new user name.
        user: String,
        /// The new host.
        host: String,
    },
    /// WHOIS, to the nick's owner, which forwards it as `WhoisLocal`.
    Whois {
        /// The nick asked about.
        nick: String,
        /// The asker.
        viewer: Viewer,
    },
    /// WHOIS, forwarded to the target's shard.
    WhoisLocal {
        /// The client asked about.
        target: ClientRef,
        /// The nick as asked (for 401 if it left meanwhile).
        nick: String,
        /// The asker.
        viewer: Viewer,
    },
    /// USERHOST or ISON, to the owner of every nick in `nicks` (one request per
    /// owner): it resolves the registered holders and forwards the request as
    /// `UsersLocal` to the first holder's shard, or replies
    /// [`ReplyBody::Users`] at once when none holds any.
    Users {
        /// ISON (the nick as its holder spells it) rather than USERHOST
        /// (`nick[*]=±user@host`).
        ison: bool,
        /// The nicks, each with its place in the command.
        nicks: Vec<(usize, String)>,
    },
    /// USERHOST or ISON, passed along the shards of `targets`: each fills in
    /// the entries of its own clients and passes the rest on to the next
    /// target's shard; the last one replies [`ReplyBody::Users`].
    UsersLocal {
        /// ISON rather than USERHOST.
        ison: bool,
        /// The holders not answered for yet, each with its place.
        targets: Vec<(usize, ClientRef)>,
        /// The entries so far, each with its place.
        found: Vec<(usize, String)>,
    },
    /// WHO, to every shard: 352 for each matching local client.
    Who {
        /// A channel name, or a mask matched against nick, user, host, real name
        /// and server.
        mask: String,
        /// Only server operators (`WHO mask o`).
        opers_only: bool,
        /// The asker.
        viewer: Viewer,
    },
    /// LIST, to channel owners: 322 for each owned channel matching a mask.
    List {
        /// Casefolded masks (empty: every channel).
        masks: Vec<String>,
    },
    /// This shard's user and channel counts, for LUSERS.
    Stats,
    /// STATS with a letter that needs every shard (`m`, `L`).
    StatsQuery {
        /// The letter.
        letter: char,
    },
    /// MONITOR +, to the owner of every nick in `nicks` (one request per
    /// owner): watch them, and answer [`ReplyBody::Monitored`] with their
    /// state ([`crate::monitor`]).
    MonitorAdd {
        /// Casefolded nick and the nick as the client wrote it.
        nicks: Vec<(NameKey, String)>,
    },
    /// MONITOR - or C, or the watcher left: stop watching `keys`.
    MonitorDel {
        /// Casefolded nicks.
        keys: Vec<NameKey>,
    },
    /// MONITOR S: the state of `nicks` (730/731), nothing changed.
    MonitorStatus {
        /// Casefolded nick and the nick as the client wrote it.
        nicks: Vec<(NameKey, String)>,
    },
    /// A connection from `ip` opened; to the IP's owner, which counts them.
    IpConnect {
        /// The peer address.
        ip: IpAddr,
    },
    /// A counted connection from `ip` closed (no reply expected).
    IpDisconnect {
        /// The peer address.
        ip: IpAddr,
    },
    /// SASL: the account `name` (any casing), to its owner; answered with
    /// [`ReplyBody::AccountFound`].
    AccountLookup {
        /// The name the client gave.
        name: String,
        /// The client's SASL query, passed back.
        query: u64,
    },
    /// SASL EXTERNAL: the accounts with this certificate fingerprint, to every
    /// shard (each indexes its own accounts'); answered with
    /// [`ReplyBody::CertFound`].
    CertLookup {
        /// 64 lowercase hex digits.
        fingerprint: String,
        /// The client's SASL query, passed back.
        query: u64,
    },
    /// REGISTER: create account `name` with `credentials` unless it exists,
    /// to the account's owner. Answered with [`ReplyBody::AccountRegistered`]
    /// once the record is durable (its store ticket completed), or at once if
    /// the name is taken.
    RegisterAccount {
        /// The account name as the client gave it.
        name: String,
        /// Its argon2 hash and SCRAM credential.
        credentials: Box<Credentials>,
    },
    /// Another node's WHOIS of a user of this node, from the nick's owner
    /// to the holder's shard, which publishes the answer for that node
    /// (`cluster::events::Event::WhoisAnswer`); nothing is replied to the
    /// owner.
    WhoisForNode {
        /// The client asked about.
        target: ClientRef,
        /// The nick as asked.
        nick: String,
        /// The asker negotiated `multi-prefix`.
        multi_prefix: bool,
        /// The asker's node.
        to_node: String,
        /// The asker on it.
        client: (usize, u64),
        /// The ask's token.
        ask: u64,
    },
}

/// One shard's counts, for LUSERS.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Registered clients.
    pub users: u64,
    /// Registered clients with user mode +i.
    pub invisible: u64,
    /// Registered clients with user mode +o.
    pub opers: u64,
    /// Connections not yet registered.
    pub unknown: u64,
    /// Channels the shard owns.
    pub channels: u64,
    /// The most users this shard has seen the whole server have.
    pub peak: u64,
}

/// The answer to one [`Request`].
#[derive(Debug)]
pub enum ReplyBody {
    /// Done, nothing to say.
    Done,
    /// Numerics to send to the client, in order.
    Numerics(Vec<Numeric>),
    /// Numerics, then a [`Request::NickCheck`] for each of `nicks` (members the
    /// channel owner did not find: 441 or 401 is for their nick owners to say).
    CheckNicks {
        /// Numerics to send first.
        nums: Vec<Numeric>,
        /// The channel.
        chan: String,
        /// Nicks not on it.
        nicks: Vec<String>,
    },
    /// The result of a JOIN: numerics (topic, names, or an error).
    Joined(Vec<Numeric>),
    /// The result of a nick claim.
    NickClaimed {
        /// The nick as requested.
        nick: String,
        /// Whether the client now holds it.
        ok: bool,
    },
    /// A private message was routed: echo it (if the client has `echo-message`).
    Echo(Outgoing),
    /// One shard's part of a merged answer (WHO, LIST, STATS): numerics to send
    /// now; the end marker goes out when the last part is in.
    Part(Vec<Numeric>),
    /// Entries of a USERHOST or ISON answer, each with its place in the
    /// command (nicks nobody holds are left out).
    Users(Vec<(usize, String)>),
    /// One shard's command counts, for STATS m.
    CommandCounts(Vec<(&'static str, u64)>),
    /// One shard's counts, for LUSERS.
    Stats(Counts),
    /// The IP's owner counted the connection (`ok`) or found too many.
    IpChecked {
        /// Whether the connection may stay.
        ok: bool,
    },
    /// The answer to [`Request::MonitorAdd`]: the states (730/731), and the
    /// nicks not watched because the owner's shard-wide total is reached.
    Monitored {
        /// 730 and 731.
        nums: Vec<Numeric>,
        /// Casefolded nick and the nick as the client wrote it.
        refused: Vec<(NameKey, String)>,
    },
    /// The owner could not take the request on (another shard's queue is full).
    Busy,
    /// A CHATHISTORY answer: messages in ascending time order.
    History {
        /// The history's name for the batch (a channel's name as its owner
        /// knows it, or the nick as given).
        target: String,
        /// The messages, or why there are none.
        result: Result<Vec<Stored>, HistoryError>,
    },
    /// One shard's part of a CHATHISTORY TARGETS answer.
    Targets(Vec<TargetSummary>),
    /// The answer to [`Request::AccountLookup`]: the account, if it exists.
    AccountFound {
        /// The query asked.
        query: u64,
        /// What the SASL machine needs of it (`Debug` hides the credentials).
        info: Option<Box<AccountInfo>>,
    },
    /// One shard's answer to [`Request::CertLookup`]: its accounts with the
    /// fingerprint (normally none or one).
    CertFound {
        /// The query asked.
        query: u64,
        /// The accounts found.
        found: Vec<AccountInfo>,
    },
    /// The answer to [`Request::RegisterAccount`].
    AccountRegistered {
        /// The account's name as registered (or as asked, on failure).
        name: String,
        /// Done (durable), or why not.
        result: Result<(), RegisterError>,
    },
}

/// Why an account was not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError {
    /// The name is taken (`ACCOUNT_EXISTS`).
    Exists,
    /// The store could not write it (`TEMPORARILY_UNAVAILABLE`).
    Unavailable,
}
