//! What shards tell each other (the handler's `Msg`), and the shared form of an
//! outgoing event line.
//!
//! Every message belongs to one of three roles (see the crate docs for the
//! protocol): a *request* from a client's shard to a name's owner, answered by
//! exactly one *reply*; a *delivery* (channel event, private message, NICK/QUIT
//! notice) that a shard fans out to its local clients; and *acks* that let a
//! client's shard know when the effects of its requests are all done.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::{auth::pool::HashDone, casemap::NameKey, clock, info::ServerInfo, store::WriterReport};

mod request;

pub use request::{
    Counts, HistRef, HistoryError, HistoryQuery, HistorySub, Ident, ModeChange, RegisterError,
    ReplyBody, Request, Said, Viewer,
};

/// A client anywhere on the server: its shard and its id there. Ids are never
/// reused, so a stale reference can only miss, never hit another client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientRef {
    /// The shard that owns the client's connection.
    pub shard: usize,
    /// The client's id on that shard.
    pub id: u64,
}

/// IRCv3 capabilities a client enabled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps(u32);

impl Caps {
    /// `message-tags`: client-only tags are relayed to this client.
    pub const MESSAGE_TAGS: Caps = Caps(1);
    /// `server-time`: events carry `@time=`.
    pub const SERVER_TIME: Caps = Caps(2);
    /// `echo-message`: the client's own PRIVMSG/NOTICE come back to it.
    pub const ECHO_MESSAGE: Caps = Caps(4);
    /// `multi-prefix`: NAMES shows every prefix of a member.
    pub const MULTI_PREFIX: Caps = Caps(8);
    /// `batch`: related lines (a CHATHISTORY answer) come in a `BATCH`.
    pub const BATCH: Caps = Caps(16);
    /// `draft/chathistory`: the client queries history with CHATHISTORY (only
    /// offered while history is on).
    pub const CHATHISTORY: Caps = Caps(32);
    /// `account-tag`: messages (and other events) from a logged-in user carry
    /// `@account=<name>`.
    pub const ACCOUNT_TAG: Caps = Caps(64);
    /// `account-notify`: `ACCOUNT <name>|*` when someone sharing a channel
    /// logs in or out.
    pub const ACCOUNT_NOTIFY: Caps = Caps(128);
    /// `extended-join`: `JOIN <chan> <account>|* :<realname>`.
    pub const EXTENDED_JOIN: Caps = Caps(256);
    /// `away-notify`: `AWAY [:text]` when someone sharing a channel goes
    /// away or comes back (and after the JOIN of someone away).
    pub const AWAY_NOTIFY: Caps = Caps(1 << 9);
    /// `invite-notify`: the INVITE line when a member of a shared channel
    /// invites someone (to members who could invite too).
    pub const INVITE_NOTIFY: Caps = Caps(1 << 10);
    /// `chghost`: `CHGHOST <user> <host>` instead of nothing when someone's
    /// user or host changes.
    pub const CHGHOST: Caps = Caps(1 << 11);
    /// `setname`: `SETNAME` is allowed, and real name changes are relayed.
    pub const SETNAME: Caps = Caps(1 << 12);
    /// `userhost-in-names`: NAMES shows `nick!user@host`.
    pub const USERHOST_IN_NAMES: Caps = Caps(1 << 13);
    /// `cap-notify`: `CAP NEW`/`CAP DEL` when the offered set changes
    /// (implied, and then not removable, by `CAP LS 302`).
    pub const CAP_NOTIFY: Caps = Caps(1 << 16);

    /// `sasl`: the client may `AUTHENTICATE` (only offered while accounts
    /// exist, i.e. the store is open).
    pub const SASL: Caps = Caps(1 << 14);
    /// `draft/account-registration`: `REGISTER` (only offered while
    /// registration is open).
    pub const ACCOUNT_REGISTRATION: Caps = Caps(1 << 15);
    /// `labeled-response` (with `batch`): the responses to a command sent
    /// with `@label=` carry it ([`crate::labels`]).
    pub const LABELED_RESPONSE: Caps = Caps(1 << 17);

    /// Every capability, with its IRCv3 name.
    pub const ALL: [(&'static str, Caps); 18] = [
        ("message-tags", Caps::MESSAGE_TAGS),
        ("server-time", Caps::SERVER_TIME),
        ("echo-message", Caps::ECHO_MESSAGE),
        ("multi-prefix", Caps::MULTI_PREFIX),
        ("batch", Caps::BATCH),
        ("draft/chathistory", Caps::CHATHISTORY),
        ("account-tag", Caps::ACCOUNT_TAG),
        ("account-notify", Caps::ACCOUNT_NOTIFY),
        ("extended-join", Caps::EXTENDED_JOIN),
        ("away-notify", Caps::AWAY_NOTIFY),
        ("invite-notify", Caps::INVITE_NOTIFY),
        ("chghost", Caps::CHGHOST),
        ("setname", Caps::SETNAME),
        ("userhost-in-names", Caps::USERHOST_IN_NAMES),
        ("cap-notify", Caps::CAP_NOTIFY),
        ("sasl", Caps::SASL),
        ("draft/account-registration", Caps::ACCOUNT_REGISTRATION),
        ("labeled-response", Caps::LABELED_RESPONSE),
    ];

    /// Whether every capability in `other` is enabled.
    pub fn has(self, other: Caps) -> bool {
        self.0 & other.0 == other.0
    }

    /// Enables or disables `other`.
    pub fn set(&mut self, other: Caps, on: bool) {
        if on {
            self.0 |= other.0;
        } else {
            self.0 &= !other.0;
        }
    }

    /// The capability called `name` (case-sensitive, as capability names
    /// are), if we support it.
    pub fn by_name(name: &str) -> Option<Caps> {
        Caps::ALL.iter().find(|(n, _)| *n == name).map(|&(_, c)| c)
    }

    /// Names of the enabled capabilities, space separated.
    pub fn names(self) -> String {
        Caps::ALL
            .iter()
            .filter(|(_, c)| self.has(*c))
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// One event line as every recipient shares it: the line without tags, plus what
/// the tags would be. Rendering per capability set happens once per shard (see
/// [`Renderer`]), never per member.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// When the event happened (set by the shard that orders it), for `server-time`.
    pub time_ms: Option<u64>,
    /// The message's id (PRIVMSG, NOTICE, TAGMSG: set where the message is
    /// ordered and its history kept), for `message-tags`.
    pub msgid: Option<Arc<str>>,
    /// The account of the user the event comes from, for `account-tag`.
    pub account: Option<Arc<str>>,
    /// Client-only tags to relay (`+a=b;+c`), for `message-tags`.
    pub client_tags: Option<Arc<str>>,
    /// Only for clients with `message-tags` (TAGMSG).
    pub tags_only: bool,
    /// `:source COMMAND params\r\n`.
    pub body: Bytes,
    /// The body clients with `extended-join` get instead (a JOIN with the
    /// account and real name).
    pub ext_body: Option<Bytes>,
}

impl Outgoing {
    /// An event line without tags yet.
    pub fn new(body: Vec<u8>) -> Outgoing {
        Outgoing {
            time_ms: None,
            msgid: None,
            account: None,
            client_tags: None,
            tags_only: false,
            body: Bytes::from(body),
            ext_body: None,
        }
    }

    /// Stamps the event with the current time.
    pub fn stamp(&mut self) {
        self.time_ms = Some(clock::now_millis());
    }

    /// Whether a client with `caps` gets this line at all (TAGMSG needs
    /// `message-tags`).
    pub fn wanted_by(&self, caps: Caps) -> bool {
        !self.tags_only || caps.has(Caps::MESSAGE_TAGS)
    }

    /// Which of the (at most [`VARIANTS`]) renderings a client with `caps`
    /// gets: one bit per tag or body that applies.
    fn variant(&self, caps: Caps) -> usize {
        let time = caps.has(Caps::SERVER_TIME) && self.time_ms.is_some();
        let tags =
            caps.has(Caps::MESSAGE_TAGS) && (self.client_tags.is_some() || self.msgid.is_some());
        let account = caps.has(Caps::ACCOUNT_TAG) && self.account.is_some();
        let ext = caps.has(Caps::EXTENDED_JOIN) && self.ext_body.is_some();
        usize::from(time)
            | usize::from(tags) << 1
            | usize::from(account) << 2
            | usize::from(ext) << 3
    }

    fn render(&self, variant: usize) -> Bytes {
        let body = match (&self.ext_body, variant & 8 != 0) {
            (Some(ext), true) => ext,
            _ => &self.body,
        };
        if variant & 7 == 0 {
            return body.clone();
        }
        let mut tags = String::new();
        write_tags(
            &mut tags,
            None,
            self.time_ms.filter(|_| variant & 1 != 0),
            self.msgid.as_deref().filter(|_| variant & 2 != 0),
            self.account.as_deref().filter(|_| variant & 4 != 0),
            self.client_tags.as_deref().filter(|_| variant & 2 != 0),
        );
        let mut out = BytesMut::with_capacity(tags.len() + 2 + body.len());
        out.put_u8(b'@');
        out.put_slice(tags.as_bytes());
        out.put_u8(b' ');
        out.put_slice(body);
        out.freeze()
    }
}

/// How many renderings one [`Outgoing`] can have (time, message tags,
/// account, extended-join: one bit each).
const VARIANTS: usize = 16;

/// Appends the tags of a line, `;`-separated and in this order: `batch`,
/// `time`, `msgid`, `account` (escaped here: a nick-like name may hold `\\`),
/// then client-only tags (already escaped).
pub fn write_tags(
    out: &mut String,
    batch: Option<&str>,
    time_ms: Option<u64>,
    msgid: Option<&str>,
    account: Option<&str>,
    client_tags: Option<&str>,
) {
    let sep = |out: &mut String| {
        if !out.is_empty() {
            out.push(';');
        }
    };
    if let Some(b) = batch {
        sep(out);
        out.push_str("batch=");
        out.push_str(b);
    }
    if let Some(ms) = time_ms {
        sep(out);
        out.push_str("time=");
        out.push_str(&clock::format_server_time(ms));
    }
    if let Some(id) = msgid {
        sep(out);
        out.push_str("msgid=");
        out.push_str(id);
    }
    if let Some(a) = account {
        sep(out);
        out.push_str("account=");
        crate::message::escape_tag_value(a, out);
    }
    if let Some(client) = client_tags.filter(|t| !t.is_empty()) {
        sep(out);
        out.push_str(client);
    }
}

/// Renders one [`Outgoing`] for many recipients: each variant (tags, and the
/// extended-join body) is built at most once and then shared (`send_shared`)
/// by every recipient that needs it.
#[derive(Debug)]
pub struct Renderer<'a> {
    out: &'a Outgoing,
    variants: [Option<Bytes>; VARIANTS],
}

impl<'a> Renderer<'a> {
    /// A renderer for `out`.
    pub fn new(out: &'a Outgoing) -> Renderer<'a> {
        Renderer {
            out,
            variants: Default::default(),
        }
    }

    /// The bytes a client with `caps` gets.
    pub fn for_caps(&mut self, caps: Caps) -> &Bytes {
        let v = self.out.variant(caps);
        self.variants[v].get_or_insert_with(|| self.out.render(v))
    }
}

/// A numeric reply computed on another shard; the client's own shard adds the
/// server name and the client's current nick when it sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numeric {
    /// The three-digit code.
    pub code: u16,
    /// Parameters after the client's nick; the last is sent as trailing.
    pub params: Vec<String>,
}

impl Numeric {
    /// A numeric from string-like parameters.
    pub fn new<S: Into<String>>(code: u16, params: impl IntoIterator<Item = S>) -> Numeric {
        Numeric {
            code,
            params: params.into_iter().map(Into::into).collect(),
        }
    }
}

/// How a channel delivery changes the receiving shard's view of who is in the
/// channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// No change.
    Same,
    /// The client joined: add it before delivering (it sees its own JOIN).
    Add(ClientRef),
    /// The client left: remove it after delivering (it sees its own PART).
    Remove(ClientRef),
}

impl Membership {
    /// The change if it concerns a client of shard `me`, else `Same`.
    pub fn filter_shard(self, me: usize) -> Membership {
        match self {
            Membership::Add(c) | Membership::Remove(c) if c.shard != me => Membership::Same,
            other => other,
        }
    }
}

/// One channel event for the members on one shard.
#[derive(Debug)]
pub struct ChanDelivery {
    /// The channel's key.
    pub chan: NameKey,
    /// The line.
    pub out: Outgoing,
    /// Who caused it (skipped unless it has `echo-message`, for messages).
    pub source: ClientRef,
    /// A PRIVMSG/NOTICE: the source only gets it with `echo-message`.
    pub echo_gated: bool,
    /// Membership change that comes with it.
    pub change: Membership,
    /// What changes in the shards' local view of the channel (JOIN, MODE).
    pub view: Option<Arc<ViewUpdate>>,
    /// Only members with these caps get it (`invite-notify`), never the
    /// source when set (it was answered directly).
    pub needs: Caps,
    /// Only members with `@` get it (an INVITE to a `+i` channel: only
    /// those who could invite too).
    pub ops_only: bool,
    /// The JOIN of someone away: members with `away-notify` (not the joiner)
    /// get this AWAY line right after it.
    pub away: Option<Outgoing>,
    /// Another node's user's NICK or QUIT, which comes once per channel: a
    /// member that already got the line of this key (through another
    /// channel) does not get it again.
    pub once: Option<u64>,
}

/// A change to the local view each shard keeps of a channel its clients are in
/// (its display name, `+s`, its members' prefixes), ordered with the channel's
/// events like everything else.
#[derive(Debug, Clone, Default)]
pub struct ViewUpdate {
    /// The channel's display name (with a JOIN: a shard may see it first).
    pub name: Option<String>,
    /// `+s` now on or off.
    pub secret: Option<bool>,
    /// Members whose prefixes are now (op, voice).
    pub prefixes: Vec<(ClientRef, bool, bool)>,
}

/// What a NICK/QUIT/ACCOUNT notice does on each shard.
#[derive(Debug, Clone)]
pub enum NoticeKind {
    /// The client is now called `nick`.
    Nick {
        /// The new nick.
        nick: String,
    },
    /// The client left the server.
    Quit,
    /// The client logged in to `account` (or out): the line goes only to
    /// clients with `account-notify`.
    Account {
        /// The account now, `None` when logged out.
        account: Option<Arc<str>>,
    },
    /// The client went away or came back: only to clients with
    /// `away-notify`.
    Away,
    /// The client's real name changed: only to clients with `setname`.
    Setname,
    /// An operator changed the client's user and host (`CHGHOST`): only to
    /// clients with `chghost`; owners update the member's `user@host`.
    /// Acknowledged to the operator `by`, whose command it is.
    Chghost {
        /// The new `user@host`.
        userhost: Arc<str>,
        /// The operator.
        by: ClientRef,
    },
}

/// A nick change, quit, account, away, real name or host change, sent by the client's shard to every
/// shard: each delivers the line once to each local client sharing a channel with
/// it (that wants it), and updates the channels it owns.
#[derive(Debug)]
pub struct UserNotice {
    /// Who.
    pub who: ClientRef,
    /// The NICK or QUIT line.
    pub out: Outgoing,
    /// The channels (keys) the client is in.
    pub chans: Vec<NameKey>,
    /// Nick change or quit.
    pub kind: NoticeKind,
}

/// A standard reply for a client ([`ChatMsg::Standard`]).
#[derive(Debug)]
pub struct StandardReply {
    /// The client.
    pub to: ClientRef,
    /// `FAIL`, `WARN` or `NOTE`.
    pub kind: crate::reply::Standard,
    /// The command it is about.
    pub command: &'static str,
    /// The code.
    pub code: &'static str,
    /// Context parameters.
    pub context: Vec<String>,
    /// The description.
    pub text: String,
}

/// What a nick's owner tells the shard of a client that holds a registered
/// nick without being logged in to that account (`[accounts] enforce_nick`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NickGuard {
    /// Log in within `grace_ms` or be renamed: a NOTICE to the client.
    Warn {
        /// The grace period, milliseconds.
        grace_ms: u64,
    },
    /// The grace period is over: rename the client to a guest nick.
    Rename,
}

/// What shards post to each other.
#[derive(Debug)]
pub enum ChatMsg {
    /// Client's shard -> owner.
    Request {
        /// Who asks.
        from: ClientRef,
        /// What.
        req: Request,
    },
    /// Owner -> client's shard. `fanout` deliveries carrying `ack = to` were posted
    /// for this request; each will be acknowledged separately.
    Reply {
        /// The client that asked.
        to: ClientRef,
        /// Deliveries still to be acknowledged.
        fanout: u32,
        /// The answer.
        body: ReplyBody,
    },
    /// Owner -> a shard with members; acknowledged to `source`'s shard.
    Chan(Box<ChanDelivery>),
    /// Nick owner -> target's shard: a private message; acknowledged to `ack`.
    Private {
        /// The recipient (local to the receiving shard).
        to: ClientRef,
        /// The line.
        out: Outgoing,
        /// The sender, to acknowledge.
        ack: ClientRef,
        /// A PRIVMSG: if the recipient is away, the sender gets 301.
        notify_away: bool,
        /// The sender is another node's (`ack` is nobody): where its 301
        /// goes.
        remote_sender: Option<Box<RemoteSender>>,
    },
    /// Numerics for a client of the receiving shard that no request waits for
    /// (301 for a message to an away user); sent before the ack of the delivery
    /// that caused them, so they come before any later PONG.
    Notify {
        /// The client.
        to: ClientRef,
        /// What to send it.
        nums: Vec<Numeric>,
    },
    /// A standard reply (`FAIL`/`WARN`/`NOTE`) for a client of the
    /// receiving shard that no request waits for (a cluster message that
    /// did not reach every node).
    Standard(Box<StandardReply>),
    /// Client's shard -> every shard; acknowledged to `who` for nick and
    /// account changes.
    Notice(Box<UserNotice>),
    /// Nick owner -> the holder's shard: nick protection for client `to`, if
    /// it still holds the nick `key` without being logged in to that account.
    Guard {
        /// The client.
        to: ClientRef,
        /// The casefolded nick (and account name) being protected.
        key: NameKey,
        /// What to do.
        action: NickGuard,
    },
    /// Nick owner -> a shard with MONITOR watchers of nick `key`: it is now
    /// online (730) or offline (731) as `nick` ([`crate::monitor`]).
    Monitor {
        /// The watchers (clients of the receiving shard).
        ids: Vec<u64>,
        /// The casefolded nick.
        key: NameKey,
        /// The nick as its holder spells it.
        nick: String,
        /// Online (730) or offline (731).
        online: bool,
    },
    /// Nick owner -> the shard of a nick's holder, when another client claims
    /// the nick: is `holder` still there? Its connection may have closed
    /// with the close not yet seen. Answered ([`ChatMsg::HolderAnswer`])
    /// only after that shard has reaped its I/O completions twice more
    /// ([`crate::shard::ChatTimer::HolderCheck`]): a close that happened
    /// before the claim was made is seen by then, and releases the nick
    /// (the release reaches the owner before the answer).
    HolderCheck {
        /// The holder (on the receiving shard).
        holder: ClientRef,
        /// The owner's shard, to answer.
        owner: usize,
        /// The owner's token for the claim waiting.
        token: u64,
    },
    /// The holder's shard -> the nick owner: whether the holder is still
    /// connected and not leaving.
    HolderAnswer {
        /// The owner's token.
        token: u64,
        /// Still there.
        alive: bool,
    },
    /// A shard holding a file upload -> the shard of the IRC session whose
    /// token the upload carries ([`crate::upload_token`]): is `session`
    /// still connected, not quitting, and logged in to `account`? Answered
    /// at once with [`ChatMsg::SessionAnswer`].
    SessionCheck {
        /// The session (on the receiving shard).
        session: ClientRef,
        /// The account the token names.
        account: String,
        /// The upload's connection, to answer.
        asker: ClientRef,
    },
    /// The session's shard -> the upload's: whether its token still holds.
    SessionAnswer {
        /// The upload's connection (on the receiving shard).
        to: ClientRef,
        /// The session is there and logged in to the token's account.
        alive: bool,
    },
    /// Shard 0 -> the other shards of a cluster node: the nodes up now
    /// ([`crate::cluster`]).
    ClusterNodes(std::sync::Arc<std::collections::BTreeMap<String, crate::cluster::Node>>),
    /// Acknowledgements for clients of the receiving shard: (client id, count).
    Acks(Vec<(u64, u32)>),
    /// The SIGHUP hook (a `Remote`, never a shard) -> every shard: the rehashed
    /// configuration to use from now on.
    Rehash(Arc<ServerInfo>),
    /// A shard's store writer thread (through a `Remote`, never a shard) -> that
    /// shard: how far its records are written and synced
    /// ([`crate::store::Store::on_report`]).
    StoreReport(WriterReport),
    /// The OPER checker's thread (through a `Remote`, never a shard) -> the
    /// asking client's shard: whether the password matched an operator's hash
    /// ([`crate::auth::oper`]).
    OperChecked {
        /// The client (on the receiving shard).
        id: u64,
        /// Whether the password matched one of the candidate blocks' hashes.
        granted: bool,
    },
    /// The hashing pool (through a `Remote`, never a shard) -> the shard whose
    /// client asked: a password checked or credentials made
    /// ([`crate::auth::pool`]).
    HashDone(HashDone),
    /// The upgrade thread (through a `Remote`, never a shard) -> every shard:
    /// hand the store over or take it back ([`crate::upgrade`]).
    Store(StoreControl),
}

impl ChatMsg {
    /// A [`ChatMsg::Reply`] to `to` with no deliveries to acknowledge.
    pub(crate) fn reply(to: ClientRef, body: ReplyBody) -> ChatMsg {
        ChatMsg::Reply {
            to,
            fanout: 0,
            body,
        }
    }
}

/// What the upgrade thread asks of a shard's store ([`crate::upgrade`]).
#[derive(Debug)]
pub enum StoreControl {
    /// Let go of the disk ([`crate::store::Store::detach`]); the writer's
    /// handle (`None`: no store) goes back on the channel.
    Detach(std::sync::mpsc::SyncSender<Option<crate::store::Detaching>>),
    /// A store opened again on the same directory (the upgrade failed)
    /// replaces the detached one.
    Attach(Box<crate::store::Store>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[Caps]) -> Caps {
        let mut c = Caps::default();
        for &cap in list {
            c.set(cap, true);
        }
        c
    }

    #[test]
    fn caps_have_names_and_room() {
        assert_eq!(Caps::by_name("account-tag"), Some(Caps::ACCOUNT_TAG));
        assert_eq!(
            Caps::by_name("ACCOUNT-TAG"),
            None,
            "names are case-sensitive"
        );
        assert_eq!(Caps::by_name("extended-join"), Some(Caps::EXTENDED_JOIN));
        let all = caps(&Caps::ALL.map(|(_, c)| c));
        assert_eq!(all.names().split(' ').count(), Caps::ALL.len());
        let mut c = all;
        c.set(Caps::ACCOUNT_NOTIFY, false);
        assert!(!c.has(Caps::ACCOUNT_NOTIFY) && c.has(Caps::EXTENDED_JOIN));
    }

    #[test]
    fn account_tag_and_extended_join_variants() {
        let mut out = Outgoing::new(b":n!u@h JOIN #c\r\n".to_vec());
        out.ext_body = Some(Bytes::from_static(b":n!u@h JOIN #c acct :Real Name\r\n"));
        out.account = Some(Arc::from("acct"));
        let mut r = Renderer::new(&out);
        assert_eq!(&r.for_caps(Caps::default())[..], b":n!u@h JOIN #c\r\n");
        assert_eq!(
            &r.for_caps(caps(&[Caps::ACCOUNT_TAG]))[..],
            b"@account=acct :n!u@h JOIN #c\r\n"
        );
        assert_eq!(
            &r.for_caps(caps(&[Caps::EXTENDED_JOIN]))[..],
            b":n!u@h JOIN #c acct :Real Name\r\n"
        );
        assert_eq!(
            &r.for_caps(caps(&[Caps::EXTENDED_JOIN, Caps::ACCOUNT_TAG]))[..],
            b"@account=acct :n!u@h JOIN #c acct :Real Name\r\n"
        );
        // Rendered once per variant: the same bytes are shared.
        let a = r.for_caps(caps(&[Caps::ACCOUNT_TAG])).clone();
        let b = r
            .for_caps(caps(&[Caps::ACCOUNT_TAG, Caps::MULTI_PREFIX]))
            .clone();
        assert_eq!(a.as_ptr(), b.as_ptr());

        // Tag order: time, msgid, account, client tags; an account is escaped.
        let mut msg = Outgoing::new(b":n!u@h PRIVMSG #c :hi\r\n".to_vec());
        msg.time_ms = Some(0);
        msg.msgid = Some(Arc::from("id1"));
        msg.client_tags = Some(Arc::from("+x=1"));
        msg.account = Some(Arc::from("a\\b"));
        let mut r = Renderer::new(&msg);
        let all = caps(&[Caps::SERVER_TIME, Caps::MESSAGE_TAGS, Caps::ACCOUNT_TAG]);
        assert_eq!(
            &r.for_caps(all)[..],
            &b"@time=1970-01-01T00:00:00.000Z;msgid=id1;account=a\\\\b;+x=1 :n!u@h PRIVMSG #c :hi\r\n"[..]
        );
        // Without an account nobody gets the tag.
        msg.account = None;
        let mut r = Renderer::new(&msg);
        assert_eq!(
            &r.for_caps(caps(&[Caps::ACCOUNT_TAG]))[..],
            b":n!u@h PRIVMSG #c :hi\r\n"
        );
    }
}

/// The sender of a private message from another cluster node: where a reply
/// to it (301) is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSender {
    /// Its node.
    pub node: String,
    /// It on its node (shard, client id).
    pub client: (usize, u64),
    /// The nick it wrote to (the reply goes on that nick's partition, whose
    /// owner on its node sent the message).
    pub target: String,
}
