//! One connected client, as its own shard sees it.

use std::{net::IpAddr, sync::Arc, time::Instant};

use shardline::{ConnId, TimerId};

use crate::{
    auth::sasl::{AccountInfo, Sasl},
    casemap::NameKey,
    clock,
    flood::Penalty,
    framing::LineReader,
    mail::{Caps, Counts, Numeric, Viewer},
    store::TargetSummary,
};

/// LUSERS counts being gathered from every shard.
#[derive(Debug, Default)]
pub struct Lusers {
    /// Shards that have not answered yet.
    pub remaining: usize,
    /// The sums so far (`peak`: the highest).
    pub counts: Counts,
    /// Part of the welcome burst: send the MOTD after the counts.
    pub then_motd: bool,
}

/// A merged answer being gathered (WHO, LIST, STATS): each part is sent as it
/// comes; `end` goes out after the last.
#[derive(Debug, Default)]
pub struct Gather {
    /// Parts not in yet.
    pub remaining: usize,
    /// Sent after the last part.
    pub end: Vec<Numeric>,
    /// STATS m: command counts summed over the shards.
    pub counts: Vec<(&'static str, u64)>,
    /// USERHOST or ISON: its one line, sent before `end` (boxed: rare, and
    /// every client has room for a gather).
    pub listed: Option<Box<Listed>>,
}

/// A USERHOST or ISON answer being gathered.
#[derive(Debug, Default)]
pub struct Listed {
    /// 302 or 303: sent as one line of every entry in the order asked.
    pub code: u16,
    /// The entries so far, each with its place in the command.
    pub entries: Vec<(usize, String)>,
}

/// What a client connected over TLS brought with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// SHA-256 of the client certificate it presented, lowercase hex, if it sent
    /// one and it verified against `tls.client_ca` (for SASL EXTERNAL; shown by
    /// WHOIS 276 to the client itself and to operators).
    pub certfp: Option<String>,
}

/// A CHATHISTORY command waiting for its answer (the client's input waits too).
#[derive(Debug)]
pub struct PendingHistory {
    /// The subcommand as named in FAIL replies (`LATEST`, ...).
    pub sub: &'static str,
    /// TARGETS: the parts from every shard being gathered.
    pub targets: Option<TargetsGather>,
}

/// CHATHISTORY TARGETS being gathered from every shard.
#[derive(Debug, Default)]
pub struct TargetsGather {
    /// Shards that have not answered yet.
    pub remaining: usize,
    /// The bounds and limit asked for.
    pub a: u64,
    /// See `a`.
    pub b: u64,
    /// See `a`.
    pub limit: usize,
    /// The parts so far.
    pub found: Vec<TargetSummary>,
}

/// SASL EXTERNAL's lookup by certificate fingerprint, asked of every shard.
#[derive(Debug)]
pub struct CertGather {
    /// The SASL query it answers.
    pub query: u64,
    /// Shards that have not answered yet.
    pub remaining: usize,
    /// Accounts found so far.
    pub found: Vec<AccountInfo>,
}

/// A client's account work in progress (SASL, REGISTER).
#[derive(Debug, Default)]
pub struct ClientAuth {
    /// Its SASL state, made at its first `AUTHENTICATE`.
    pub sasl: Option<Box<Sasl>>,
    /// EXTERNAL's lookup being gathered.
    pub cert_lookup: Option<CertGather>,
    /// A `REGISTER` whose credentials the hashing pool is making: its query
    /// and the account name.
    pub registering: Option<(u64, String)>,
    /// The last query number given to the hashing pool for REGISTER.
    pub next_query: u64,
}

/// A client of this shard.
#[derive(Debug)]
pub struct Client {
    /// Its connection.
    pub conn: ConnId,
    /// Whether the connection is still open (a quitting client outlives it until its
    /// requests are answered).
    pub alive: bool,
    /// The peer shut down its sending side: once the lines it sent before
    /// are run (flood control and the barrier still apply), it is closed.
    pub peer_eof: bool,
    /// The peer's address, as shown in its mask (until an operator's CHGHOST
    /// changes it).
    pub host: String,
    /// The peer's address as first shown, whatever CHGHOST did: what OPER's
    /// host masks are checked against.
    pub real_host: String,
    /// The peer's address.
    pub ip: IpAddr,
    /// Set if it connected over TLS (WHOIS 671, the `sts` value it is offered).
    pub tls: Option<ClientTls>,
    /// How its bytes travel: plain lines, or HTTP then WebSocket frames.
    pub transport: crate::websocket::Transport,
    /// Counted at the IP's owner (to be uncounted when it leaves).
    pub ip_counted: bool,
    /// The nick it holds (claimed at the nick's owner).
    pub nick: Option<String>,
    /// The user name from USER (prefixed with `~`: no ident lookup).
    pub user: Option<String>,
    /// The real name from USER.
    pub realname: String,
    /// The password from `PASS`, until registration checks it.
    pub pass: Option<String>,
    /// `nick!user@host` once registered.
    pub mask: Arc<str>,
    /// Registration completed (001 sent).
    pub registered: bool,
    /// CAP LS/REQ was sent before registration: wait for CAP END.
    pub cap_negotiating: bool,
    /// Enabled capabilities.
    pub caps: Caps,
    /// It sent `CAP LS 302` (or later): values, multiline replies, and
    /// `cap-notify` for good.
    pub cap_302: bool,
    /// User mode +i.
    pub invisible: bool,
    /// User mode +o (OPER).
    pub oper: bool,
    /// The account it is logged in to: by SASL, by a successful `REGISTER`,
    /// or (tests) the `TESTACCOUNT` hook; private history is kept only between
    /// two clients that have one.
    pub account: Option<Arc<str>>,
    /// Nick protection: the nick's owner says the grace period for nick
    /// `key` is over; it is renamed once its earlier commands are done.
    pub rename_due: Option<NameKey>,
    /// The guest nick being claimed for a forced rename, and how many have
    /// been tried.
    pub guest_claim: Option<(String, u8)>,
    /// An OPER password is being checked against a hash off the loop (it
    /// counts in `unreplied` until the answer comes).
    pub oper_pending: bool,
    /// SASL and REGISTER in progress.
    pub auth: ClientAuth,
    /// A CHATHISTORY command waiting for its answer.
    pub history: Option<PendingHistory>,
    /// The away message (AWAY).
    pub away: Option<String>,
    /// When registration completed (Unix seconds, for WHOIS 317).
    pub signon: u64,
    /// Last PRIVMSG/NOTICE it sent (WHOIS idle time).
    pub last_message: Instant,
    /// Flood control: how far ahead of real time its commands have run.
    pub penalty: Penalty,
    /// Set while its input waits out its penalty (see `flood`).
    pub flood_timer: Option<TimerId>,
    /// Channels it is in (keys), as confirmed by their owners.
    pub channels: Vec<NameKey>,
    /// JOINs sent to owners and not answered yet (for CHANLIMIT).
    pub pending_joins: usize,
    /// Input not processed yet.
    pub inbuf: Vec<u8>,
    /// Framing state of `inbuf`.
    pub reader: LineReader,
    /// Reading was paused because `inbuf` passed the RecvQ limit.
    pub reading_paused: bool,
    /// Processing waits: until every request is answered and acknowledged, or
    /// (with `window_parked`) until fewer are in flight.
    pub parked: bool,
    /// Parked because too much of its work is in flight, not for a barrier.
    pub window_parked: bool,
    /// Requests posted and not yet replied to.
    pub unreplied: u32,
    /// Deliveries made on this client's behalf and not yet acknowledged. May go
    /// negative for a moment: an ack can overtake the reply that announces it.
    pub acks_due: i64,
    /// LUSERS being gathered.
    pub lusers: Option<Lusers>,
    /// WHO, LIST, STATS, USERHOST or ISON being gathered.
    pub gather: Option<Gather>,
    /// An owner refused one of its requests ("Server busy"); owners remember
    /// that until they see its QUIT notice.
    pub refused: bool,
    /// QUIT released its nick at the owner shard already (before the ERROR
    /// went out), so leaving does not release it again.
    pub nick_released: bool,
    /// Set once it is leaving: the quit reason.
    pub quitting: Option<String>,
    /// Last time it sent anything.
    pub last_active: Instant,
    /// A PING was sent and nothing came back yet.
    pub ping_sent: bool,
    /// Its registration or ping timer.
    pub timer: Option<TimerId>,
}

impl Client {
    /// A client that just connected.
    pub fn new(conn: ConnId, ip: IpAddr, host: String, tls: Option<ClientTls>) -> Client {
        Client {
            conn,
            alive: true,
            peer_eof: false,
            real_host: host.clone(),
            host,
            ip,
            tls,
            transport: crate::websocket::Transport::Tcp,
            ip_counted: false,
            nick: None,
            user: None,
            realname: String::new(),
            pass: None,
            mask: Arc::from(""),
            registered: false,
            cap_negotiating: false,
            caps: Caps::default(),
            cap_302: false,
            invisible: false,
            oper: false,
            account: None,
            rename_due: None,
            guest_claim: None,
            oper_pending: false,
            auth: ClientAuth::default(),
            history: None,
            away: None,
            signon: clock::now_secs(),
            last_message: Instant::now(),
            penalty: Penalty::default(),
            flood_timer: None,
            channels: Vec::new(),
            pending_joins: 0,
            inbuf: Vec::new(),
            reader: LineReader::default(),
            reading_paused: false,
            parked: false,
            window_parked: false,
            unreplied: 0,
            acks_due: 0,
            lusers: None,
            gather: None,
            refused: false,
            quitting: None,
            nick_released: false,
            last_active: Instant::now(),
            ping_sent: false,
            timer: None,
        }
    }

    /// Every effect of every command so far is done: all requests answered, all
    /// deliveries acknowledged. The PING barrier.
    pub fn settled(&self) -> bool {
        self.unreplied == 0 && self.acks_due == 0
    }

    /// Requests and deliveries made for it and not yet done. Acks that overtook
    /// their replies are not credited: they would let a fast client run ahead of
    /// replies stuck in a congested queue.
    pub fn in_flight(&self) -> i64 {
        i64::from(self.unreplied) + self.acks_due.max(0)
    }

    /// The nick for numerics: `*` before it has one.
    pub fn nick_or_star(&self) -> &str {
        self.nick.as_deref().unwrap_or("*")
    }

    /// Who this client is when it asks about others.
    pub fn viewer(&self) -> Viewer {
        Viewer {
            chans: self.channels.clone(),
            oper: self.oper,
            multi_prefix: self.caps.has(Caps::MULTI_PREFIX),
        }
    }

    /// Recomputes `mask` from nick, user and host.
    pub fn update_mask(&mut self) {
        if let (Some(nick), Some(user)) = (&self.nick, &self.user) {
            self.mask = Arc::from(format!("{nick}!{user}@{}", self.host));
        }
    }
}
