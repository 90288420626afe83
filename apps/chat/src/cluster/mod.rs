//! Several shardline-chat nodes serving one network through Redis 7
//! (`[cluster]`, `--cluster redis://HOST:PORT --node-name NAME`). Without a
//! cluster URL none of this runs and nothing changes.
//!
//! Why Redis and not NATS: `docs/cluster-engine.md` (ordering, failure
//! behaviour and measured cost per message). In short: one Redis instance
//! executes commands one at a time, so a stream (or a pub/sub channel) has
//! one order every reader sees; `SET NX`/`PX` give atomic claims with
//! leases; streams keep what a node missed while it was away.
//!
//! # Protocol
//!
//! Keys are under `shardline:`. Every shard of every node talks to the
//! engine over its own framework connection (a *link*; no thread, no second
//! runtime: RESP2 through the `redis-protocol` codec, [`resp`]), so shared
//! nothing inside a node still holds — no shard waits on another to reach
//! the engine. Measured against one bridge per node (`shardline-bench
//! engine-links`, `docs/cluster-engine.md` "Per-shard links or one bridge
//! per node"): a bridge only saves Redis CPU by merging the shards' writes,
//! which pays where Redis is saturated and nodes have several shards; it
//! adds two cross-thread wake-ups (~78 µs at p50 here) and more node CPU
//! than it saves on a quiet cluster, a thread outside shared-nothing, and
//! one connection whose stall cuts off every shard. Redis is 5–11 % of the
//! cluster's CPU in `chat --nodes 3`, so per-shard links stay.
//!
//! ## Links (built)
//!
//! A shard connects its link in `on_start`. Commands are pipelined; replies
//! come back in order, matched to a FIFO of what was asked ([`Pending`]).
//! A link is *down* when the connection fails, closes, sends something that
//! is not RESP2, or leaves a command unanswered for half the node timeout;
//! the shard then reconnects with a backoff (100 ms doubling to 2 s). When
//! a link that was up goes down the shard tells its registered users in a
//! server NOTICE that cross-node traffic stops while the node keeps serving
//! its own; when it is back, another NOTICE. Gauges:
//! `shardline_chat_cluster_engine_up` (links up) and
//! `shardline_chat_cluster_nodes` (nodes this node sees).
//!
//! ## Membership (built)
//!
//! A node is up while it holds its lease: `shardline:node:<name>` = `<incarnation>
//! <server name>`, set with `PX` = 70 % of `node_timeout_secs` by shard 0
//! every 20 % of it, through a script that sets it only if it is absent or
//! already this process's (a random incarnation per process), so a second
//! live process with the same node name never takes it over (it logs an
//! error each time and stays out of the view; its users' nick claims are
//! refused with `FAIL NICK CLUSTER_NAME_IN_USE <node>` before the 433, so
//! they learn why). Node names are kept in the
//! set `shardline:nodes`; on each renewal shard 0 reads the set and the
//! leases (`SMEMBERS`, then `MGET`), and the names with a lease are the
//! nodes up. Shard 0 logs each node that comes or goes and posts the view
//! to the other shards (`ChatMsg::ClusterNodes`); `LINKS` lists it. A node
//! that stops cleanly deletes its lease (same check) so the others see it go
//! at their next read; one that dies or loses the engine stops renewing and
//! its lease expires 0.7 × timeout after its last renewal, seen by the others
//! at most 0.1 × timeout later — within the node timeout, as the issue asks.
//!
//! ## Nick claims (built)
//!
//! A nick is unique in the cluster: the nick's owner shard, finding it free
//! here, claims `shardline:nick:<casefolded>` = `<node> <incarnation>` in the
//! engine (a script: set if absent or already this process's, and list it in
//! `shardline:claims:<node>`) before it answers; held by another node → 433.
//! A second local claim for a nick whose claim is out gets 433 too. A nick
//! given up is released by a compare-and-delete script. Releases reach the
//! engine right after the owner handled them, so the user who gave it up sees
//! its ERROR or NICK line a moment before another node can take it (the test
//! retries for up to 2 s; measured within a few ms).
//!
//! While the link is down a claim is granted here (the node serves its own
//! users) and releases are not sent; when the link is back every shard
//! claims again each nick it holds — one taken by another node meanwhile
//! gets its holder here renamed to a guest nick — and releases the claims
//! listed for this node whose nick it no longer holds. New claims wait
//! `SETTLE` (3 s) after a link comes back: links retry at most every
//! `MAX_BACKOFF` (2 s), so by then every node has claimed its users'
//! nicks again, and an engine that restarted empty (no persistence) does not
//! hand a held nick to a newcomer (the demo caught exactly that). With Redis
//! persistence on, claims survive an engine restart and re-asserting only
//! confirms them. When shard 0 sees a
//! node go (its lease gone) or restart (a new incarnation), it releases that
//! node's claims still carrying its old value; when it first holds its own
//! lease, it releases claims left by earlier processes with its name. So a
//! node that stops or dies frees its users' nicks within the node timeout.
//!
//! ## Accounts (built)
//!
//! An account lives in its owner shard's store on the node where it was
//! registered, and in the engine as `shardline:account:<key>` =
//! `<name>\n<credentials>` (the argon2 hash and SCRAM verifier, never the
//! password). `REGISTER` of a name free in this node's store puts it in the
//! engine first (a script: set if absent or the same); another node's
//! account of that name gives `ACCOUNT_EXISTS`, an engine that cannot be
//! asked `TEMPORARILY_UNAVAILABLE` (uniqueness could not be promised). A SASL
//! lookup of an account this node's store lacks reads the engine, so a user
//! logs in on any node. When a link comes back each shard puts its store's
//! accounts again (a no-op unless the engine lost them; a name another node
//! registered meanwhile is logged). Not yet: certificate logins (EXTERNAL)
//! for accounts of other nodes, offline changes (`shardline-chat account
//! passwd`) reaching the engine, nick protection of other nodes' accounts.
//!
//! ## Channels across nodes (built: JOIN, PART, QUIT, NICK, TOPIC, KICK, MODE, PRIVMSG, NOTICE, TAGMSG)
//!
//! One order per channel comes from the engine: every channel event goes
//! through one Redis pub/sub channel per store partition
//! (`shardline:ev:<partition>`, the channel's partition, the same on every
//! node). One Redis instance runs commands one at a time and writes a
//! `PUBLISH` to every subscriber inside that command, so every subscriber
//! sees one order (measured: `docs/cluster-engine.md`). Each shard has a
//! second link, subscribed to the partitions it owns; each node's owner shard
//! of a channel so receives every node's events of it in that order, its own
//! included ([`events`] is the format).
//!
//! A local client's JOIN, PART or channel message is checked against this
//! node's state, stamped (msgid and time, the same on every node), kept, and
//! published; it is handled like on a single node — delivered to this node's
//! members, stored in history, answered — when its own event comes back, in
//! the engine's order. Another node's event is applied when it comes: its
//! members are kept per channel (NAMES lists them, with their prefixes), its
//! lines are delivered to this node's members and its messages stored with
//! the origin's msgid. A local user's QUIT is published for each channel,
//! and a node that leaves the view (stopped, dead, or restarted) has its
//! members QUIT every channel here. A local user's NICK change is published for each channel
//! too, and renames the remote member there in the channel's order; so are
//! its AWAY, ACCOUNT, SETNAME and CHGHOST lines, delivered there to the
//! members with the cap for each (ACCOUNT and CHGHOST update the remote
//! member). A user's NICK or QUIT (or one of those) comes once per channel
//! it shares with a node, and
//! the member shards there give each of their clients one line of it: the
//! copies carry one key ([`events::user_event_key`]; the member shard
//! remembers the last 64 keys). Channel events go through the engine only
//! while both links are up and the subscriptions confirmed; a request waiting for its event
//! when that ends is handled here at once, as are requests while the engine
//! is away (users were told by NOTICE that their messages stop reaching the
//! other nodes). A `PUBLISH` that reached no subscriber (not even this
//! node's) is handled here at once too, so no client waits forever.
//!
//! TOPIC (set), KICK and MODE changes go through the engine the same way:
//! checked on the requester's node (its operator status, `+t`), applied on
//! every node in the channel's order; a KICK removes the member from its
//! own node's channel too. Channel state is so replicated: each node
//! applies the same events to the same state. A channel's creator is an
//! operator on every node: the joiner's node decides when it publishes the
//! JOIN (the channel is unknown there, and no resync of its partition is
//! under way: while one is, for at most 5 s, joining makes nobody an
//! operator) and the event carries the decision; a MODE
//! carries the changes as asked and every node applies them with the
//! setter's operator status as it knows it (the same everywhere), so every
//! node takes the same ones (`+o`/`+v` of any node's member, `+k`, `+l`
//! counting every node's members, `+b`, the flags). The answer numerics
//! are the requester's node's.
//!
//! An INVITE of another node's user is checked by the channel's owner on
//! the inviter's node and sent like a private message (below) to the node
//! whose claim the nick is, whose channel owner records the invitation
//! (`+i` is checked on the invitee's node at its JOIN) and gives the
//! invitee the INVITE line; the inviter gets 341, 401 or `FAIL INVITE
//! UNREACHABLE`.
//!
//! An INVITE also goes to the channel's partition as a `Notify` (`I`):
//! each node gives the line to its members with `invite-notify` (on a `+i`
//! channel its operators), as the inviter's node does to its own.
//!
//! Not yet (issue 16 goes on): ban entries carry each node's own time (and, from a resync, the answering
//! node's name as setter); a check that passed here can fail when the
//! event comes back (an event ordered in between, such as a ban): the
//! other nodes show it, this one answers the refusal.
//!
//! ## History catch-up (built)
//!
//! Pub/sub is at-most-once: a node whose subscriber is away misses what is
//! published meanwhile (its senders' nodes warn them, below), and a node
//! that starts late never saw what was said before. So a channel message
//! (not a TAGMSG) is published together with an `XADD` to its partition's
//! stream (`shardline:hist:<p>`, trimmed to about `cluster.catchup_messages`
//! entries, 1000 by default), in one `MULTI`/`EXEC`: the stream's order is
//! the channel's. Each time a shard's links become live it reads, for each
//! partition it owns, the newest entries (`XREVRANGE … COUNT`) — all the
//! stream keeps the first time, else from 30 s before it was cut off — and
//! its history places each message it lacks by its time, the time raised
//! along the stream as every node raised it appending live
//! (`Owner::catch_up`, `Store::insert_message`). msgids name their node
//! (`history`), so a msgid is placed once. Every node so shows the same
//! CHATHISTORY — msgids, times and order — for what the streams keep;
//! messages a node handled alone while the engine was away are its own.
//!
//! ## Resync (built)
//!
//! Each time a shard's links become live (the node started, or its
//! subscriber came back) it asks the other nodes, through each partition it
//! owns, who of theirs is in that partition's channels (and each channel's
//! topic, modes and bans); the answers come in
//! the partition's order and replace what it had of each node there but
//! for members whose events it saw since its ask (newer). A member it did
//! not know shows as a JOIN, one that left meanwhile as a PART. Whoever
//! answers an ask made on coming back asks in turn, since it may have
//! missed the asker's events. So a node that starts late sees who is in
//! the channels already, and membership missed during a cut is repaired.
//! Details: `owner::sync`.
//!
//! ## Private messages across nodes (built)
//!
//! A PRIVMSG, NOTICE or TAGMSG to a nick nobody here holds goes, while the
//! engine is live, to the engine as one script (`DIRECT_SCRIPT`): if the
//! nick's claim is another node's, and that node's process still holds its
//! lease, the message ([`events::Event::Direct`], stamped here) is
//! published on that node's private-message channel of the nick's
//! partition (`shardline:dm:<node>:<partition>`; each shard subscribes its
//! partitions' channels of its own node besides the event channels), and
//! that node's owner of the nick delivers it to the holder. The sender gets
//! its echo when that node took it; 401 when no other live node holds the
//! nick (NOTICE and TAGMSG quietly, as on a single node); `FAIL <command>
//! UNREACHABLE <nick>` when the holder's node is up but its subscriber is
//! away (the `PUBLISH` reached nobody). A holder that left between the
//! check and the delivery: its node publishes [`events::Event::Bounce`]
//! and the sender gets 401 then. A PRIVMSG to a user who is away: the
//! holder's shard publishes [`events::Event::AwayReply`] on the nick's
//! partition, addressed to the sender's node and client, whose owner of
//! the nick there gives the sender 301.
//!
//! A private message between two accounts is kept in their conversation's
//! history on every node: the node that delivers it — the recipient's, or
//! this one when both are here — publishes it ([`events::Event::Conv`],
//! with the sender's msgid and time) on the conversation's partition, into
//! its stream too, and every node's owner of that partition appends it in
//! the engine's order (its own copy skipped by msgid). The recipient's node
//! delivers a message from another node only once the engine has taken its
//! event, so a reply is always published after what it answers and every
//! node keeps them in that order (the first version delivered at once, and
//! a quick reply published by the other node could come first: the test
//! caught it under load). A node that missed some catches up as for
//! channels. `CHATHISTORY <nick>` of a user on another node finds the
//! conversation when the nick is its account's name (the account of a nick
//! held elsewhere is not known here).
//!
//! A WHOIS of a nick nobody here holds goes the same way
//! ([`events::Event::WhoisAsk`], the asker's client parked); the holder's
//! node builds the numerics (311, 319 without `+s` channels, 312 with its
//! server name, 301, 313, 335, 330, 671, 317) and publishes them on the
//! asker's node's private channel of the nick's partition
//! ([`events::Event::WhoisAnswer`], at most 32 numerics; only those codes
//! are taken); the asker gets them and 318. No live node holding the nick,
//! its subscriber away, the holder gone, or no answer within 2 s (or half
//! the node timeout): 401 and 318.
//!
//! ## Delivered, or the sender is told (built)
//!
//! Each node takes a partition's events on one subscriber, so a `PUBLISH`
//! of a channel message reaches as many subscribers as there are nodes
//! with their subscriber there. Fewer than the nodes this node sees up
//! (a node whose subscriber is away: it missed the message, and its users
//! were told by NOTICE that they are cut off) and the sender gets
//! `WARN <command> PARTIAL_DELIVERY <channel>` naming how many missed it.
//! A private message is answered as above. A message that could not be
//! published at all is handled on this node only, and its users were told
//! the engine is away.

//! ## Backpressure (built)
//!
//! A published request is in flight until its event comes back, like any
//! request waiting for a reply: past `limits.in_flight_per_client` the
//! client's input is parked, and past `recvq_bytes` its socket is no longer
//! read, so an engine that falls behind slows its senders through TCP, and
//! what this node holds for it is bounded by clients × in-flight requests
//! (tests/cluster.rs stops Redis with SIGSTOP under a 20 MB flood: the server
//! stops reading the sender; after SIGCONT all 50,000 messages arrive, in
//! order). An engine that stops answering for half the node timeout is
//! dropped (the link reconnects) and the waiting requests are handled here.
//! The engine's side is Redis's own: a subscriber that falls 32 MB behind is
//! disconnected (`client-output-buffer-limit pubsub`), which this node sees as
//! a lost link.

pub mod events;
pub mod resp;

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use redis_protocol::resp2::types::OwnedFrame;
use shardline::{ConnId, Ctx, ShardId};
use tracing::{debug, error, info, warn};

use crate::{
    mail::ChatMsg,
    shard::{ChatShard, ChatTimer},
};

/// Keys' prefix.
const PREFIX: &str = "shardline:";
/// The first reconnection delay; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest reconnection delay.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A catch-up reads the streams from this long before the cut: events in
/// flight then, and the engine's clock against this node's.
const CATCHUP_SLACK: Duration = Duration::from_secs(30);
/// After a link comes back, new nick claims wait this long, so that every
/// node — each reconnecting within [`MAX_BACKOFF`] of the engine's return —
/// has claimed again the nicks its users hold before anyone new can take
/// them (an engine that restarted empty forgot every claim).
const SETTLE: Duration = Duration::from_secs(3);

/// Sets the lease if it is absent or this process's (KEYS[1] the lease,
/// ARGV[1] the value, ARGV[2] its time to live in ms). 1 if held now.
const LEASE_SCRIPT: &str = "local v = redis.call('GET', KEYS[1]) \
    if v == false or v == ARGV[1] then \
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end return 0";
/// Deletes the lease if it is this process's.
const RELEASE_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    return redis.call('DEL', KEYS[1]) end return 0";

/// A private message for a user of another node: if nick KEYS[1] is
/// claimed by a node other than this one (ARGV[3]) whose process still
/// holds its lease (the claim's incarnation is the lease's; leases are
/// under ARGV[4]), publishes ARGV[1] on that node's private-message channel
/// of the nick's partition (ARGV[2] .. node .. ARGV[5]) and returns how
/// many received it (1, or 0 when that node's subscriber is away); -1 when
/// no other live node holds the nick. One step in the engine, so a release
/// ordered before it is seen and one after it finds the message already on
/// its way (the holder's node then bounces it). The lease and channel
/// names are built here: a single Redis, not a Redis Cluster.
const DIRECT_SCRIPT: &str = "local v = redis.call('GET', KEYS[1]) \
    if v == false then return -1 end \
    local n, inc = string.match(v, '^(%S+) (%S+)') \
    if n == nil or n == ARGV[3] then return -1 end \
    local l = redis.call('GET', ARGV[4] .. n) \
    if l == false or string.match(l, '^%S+') ~= inc then return -1 end \
    return redis.call('PUBLISH', ARGV[2] .. n .. ARGV[5], ARGV[1])";

/// Claims nick KEYS[1] for this node (ARGV[1]: `<node> <incarnation>`) if
/// free or already this process's, listing it in the node's claims
/// (KEYS[2]). 1 if held now. A node claims only while it holds its lease
/// (KEYS[3], value ARGV[2]): one that lapsed (an engine restarted empty) is
/// leased again here (ARGV[3] ms), so that no reaper takes a claim made by
/// a live node; another process's lease on the name refuses.
const CLAIM_SCRIPT: &str = "local l = redis.call('GET', KEYS[3]) \
    if l == false then redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3]) \
    elseif l ~= ARGV[2] then return -1 end \
    local v = redis.call('GET', KEYS[1]) \
    if v == false or v == ARGV[1] then redis.call('SET', KEYS[1], ARGV[1]) \
    redis.call('SADD', KEYS[2], KEYS[1]) return 1 end return 0";
/// Releases nick KEYS[1] if this process holds it.
const UNCLAIM_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
    redis.call('DEL', KEYS[1]) redis.call('SREM', KEYS[2], KEYS[1]) return 1 end return 0";
/// Releases the claims listed in KEYS[1] (a node's) whose value is ARGV[1]
/// (`same`: a node gone — unless its lease KEYS[2] exists again) or, with
/// `other`, that are this node's (prefix ARGV[3]) but of another incarnation
/// than ARGV[1] (a restart's leftovers). Entries whose nick another node
/// holds are only unlisted. The count released.
const REAP_SCRIPT: &str =
    "if ARGV[2] == 'same' and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end \
    local n = 0 \
    for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do \
      local v = redis.call('GET', k) \
      if v == false then redis.call('SREM', KEYS[1], k) \
      elseif (ARGV[2] == 'same' and v == ARGV[1]) or (ARGV[2] == 'other' and v ~= ARGV[1] \
          and string.sub(v, 1, #ARGV[3]) == ARGV[3]) then \
        redis.call('DEL', k) redis.call('SREM', KEYS[1], k) n = n + 1 \
      elseif string.sub(v, 1, #ARGV[3]) ~= ARGV[3] then redis.call('SREM', KEYS[1], k) end \
    end return n";

/// Puts account KEYS[1] (ARGV[1]: `<name>\n<credentials>`) if absent or
/// the same: 1; another node's account of that name: 0.
const ACCOUNT_SCRIPT: &str = "local v = redis.call('GET', KEYS[1]) \
    if v == false then redis.call('SET', KEYS[1], ARGV[1]) return 1 end \
    if v == ARGV[1] then return 1 end return 0";

/// A node of the cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Its node name.
    pub name: String,
    /// Its server name (what IRC shows).
    pub server: String,
    /// Its process's incarnation (a restart changes it).
    pub incarnation: String,
}

/// What a reply on a link answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
    /// The lease script.
    Lease,
    /// `SADD` of this node's name.
    Register,
    /// `SMEMBERS` of the node names.
    Members,
    /// `MGET` of these nodes' leases.
    Leases(Vec<String>),
    /// A `PING` (liveness of the link).
    Ping,
    /// The release script (a clean stop).
    Release,
    /// A client's nick claim (the owner's token).
    Claim(u64),
    /// A held nick claimed again after the link came back.
    Assert(crate::casemap::NameKey, crate::mail::ClientRef),
    /// A nick release, or a reap of claims.
    Unclaim,
    /// `SMEMBERS` of this node's claims, after the link came back.
    OwnClaims,
    /// A registration's claim of an account name (the owner's token).
    AccountClaim(u64),
    /// A lookup of an account registered on another node (the token).
    AccountGet(u64),
    /// An account of this node's store claimed again after the link came
    /// back (its name, to log a conflict).
    AccountAssert(String),
    /// A channel event published (the owner's token, 0: none waits; a
    /// channel message's sender).
    Publish(u64, Option<Box<crate::owner::SentMsg>>),
    /// A private message for another node's user (the owner's token).
    Direct(u64),
    /// A command whose reply is not needed (a message added to its
    /// partition's stream, the link's name).
    Ignored,
    /// The messages a partition's stream kept since this shard was cut off
    /// (`XREVRANGE`), for its history.
    CatchUp(u16),
}

/// How a link is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected; a reconnection timer is set.
    Down,
    /// Connecting.
    Connecting,
    /// Connected: commands go through.
    Up,
}

/// Which of a shard's two connections to the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// Commands and their replies (claims, leases, PUBLISH).
    Commands,
    /// The subscriber: this shard's partitions' channel events (a subscribed
    /// RESP2 connection takes no other commands).
    Events,
}

/// One of a shard's connections to the engine.
#[derive(Debug)]
pub struct Link {
    /// Its id among the shard's connections (`ChatShard::next_id`).
    pub id: u64,
    /// The framework's connection, while there is one.
    pub conn: Option<ConnId>,
    /// How it is.
    pub state: LinkState,
    /// Replies or pushes not yet whole.
    inbuf: Vec<u8>,
    /// The next reconnection delay.
    backoff: Duration,
    /// Commands: what each reply to come answers, oldest first, and when it
    /// was asked.
    pending: VecDeque<(Pending, Instant)>,
    /// Commands: whether it was ever up (users are told about losing it only
    /// then).
    was_up: bool,
    /// Events: channels subscribed to, and confirmations seen.
    wanted: usize,
    confirmed: usize,
}

impl Link {
    fn new(id: u64) -> Link {
        Link {
            id,
            conn: None,
            state: LinkState::Down,
            inbuf: Vec::new(),
            backoff: MIN_BACKOFF,
            pending: VecDeque::new(),
            was_up: false,
            wanted: 0,
            confirmed: 0,
        }
    }

    /// The connection is gone: forget it and what was half read; returns the
    /// delay before the next attempt (and doubles the one after).
    fn down(&mut self) -> Duration {
        self.state = LinkState::Down;
        self.conn = None;
        self.inbuf.clear();
        self.confirmed = 0;
        let wait = self.backoff;
        self.backoff = (wait * 2).min(MAX_BACKOFF);
        wait
    }

    /// Connected.
    fn up(&mut self) {
        self.state = LinkState::Up;
        self.backoff = MIN_BACKOFF;
    }

    /// `data` arrived: the whole frames there are now (taken from the
    /// buffer), and why the stream cannot be read on, if it cannot.
    fn frames(&mut self, data: &[u8]) -> (Vec<OwnedFrame>, Option<String>) {
        self.inbuf.extend_from_slice(data);
        let mut at = 0;
        let mut frames = Vec::new();
        let broken = loop {
            match resp::decode_reply(&self.inbuf[at..]) {
                resp::Decoded::Frame(frame, used) => {
                    at += used;
                    frames.push(frame);
                }
                resp::Decoded::Incomplete => break None,
                resp::Decoded::Broken(why) => break Some(why),
            }
        };
        self.inbuf.drain(..at);
        (frames, broken)
    }
}

/// One shard's part of the cluster.
#[derive(Debug)]
pub struct Cluster {
    /// This node's name.
    pub node: String,
    /// This process's incarnation: random, made at start.
    pub incarnation: String,
    /// The engine.
    pub engine: SocketAddr,
    /// How long a node counts as up without renewing its lease.
    pub timeout: Duration,
    /// This shard's command link.
    pub link: Link,
    /// The nodes up, by name, as shard 0 last saw them.
    pub nodes: Arc<BTreeMap<String, Node>>,
    /// Shard 0: whether the last lease attempt found another process holding
    /// this node name.
    conflict: bool,
    /// Shard 0: the lease has been held once (the stale claims of earlier
    /// processes with this name were reaped then).
    leased: bool,
    /// New claims wait until then after the link came back (`SETTLE`).
    settle_until: Option<Instant>,
    /// The subscriber link: this shard's partitions' channel events.
    pub sub: Link,
    /// The engine channel of each partition (`shardline:ev:<p>`), made once.
    event_channels: Vec<String>,
    /// This node's private-message channels, one per partition
    /// (`shardline:dm:<node>:<partition>`).
    dm_channels: Vec<String>,
    /// Each partition's stream of kept messages (`shardline:hist:<p>`).
    hist_keys: Vec<String>,
    /// How many messages a stream keeps (`cluster.catchup_messages`,
    /// as the argument of `MAXLEN ~` and `COUNT`); `None`: none.
    catchup: Option<String>,
    /// Where the next catch-up starts, ms since the epoch (0: the
    /// beginning); `None`: nothing to catch up. Set when the shard is cut
    /// off (kept if it was set already: an earlier cut whose catch-up did
    /// not finish), cleared when every partition's catch-up came back.
    catch_from: Option<u64>,
    /// Partitions whose catch-up has not come back.
    catch_waiting: usize,
    /// Where commands are encoded (kept: no allocation per command).
    scratch: Vec<u8>,
    /// Claims waiting for that.
    deferred: Vec<crate::owner::EngineOp>,
}

/// The cluster's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterTimer {
    /// Connect a link again.
    Reconnect(Which),
    /// Renew the lease and read the view (shard 0), check the link.
    Tick,
    /// The settling after a reconnection is over: send the claims that
    /// waited.
    Settled,
}

impl Cluster {
    fn link_mut(&mut self, which: Which) -> &mut Link {
        match which {
            Which::Commands => &mut self.link,
            Which::Events => &mut self.sub,
        }
    }

    /// The lease's key.
    fn lease_key(&self) -> String {
        format!("{PREFIX}node:{}", self.node)
    }

    /// The lease's value.
    fn lease_value(&self, server: &str) -> String {
        format!("{} {server}", self.incarnation)
    }

    /// How often shard 0 renews and reads.
    pub fn tick(&self) -> Duration {
        self.timeout / 10
    }

    /// A nick's claim key.
    fn nick_key(key: &str) -> String {
        format!("{PREFIX}nick:{key}")
    }

    /// The set listing node `node`'s claims.
    fn claims_key(node: &str) -> String {
        format!("{PREFIX}claims:{node}")
    }

    /// The value of this process's claims.
    fn claim_value(&self) -> String {
        format!("{} {}", self.node, self.incarnation)
    }

    /// The arguments of [`CLAIM_SCRIPT`] for nick `key` (casefolded).
    fn claim_args(&self, key: &str, server: &str) -> [String; 6] {
        [
            Cluster::nick_key(key),
            Cluster::claims_key(&self.node),
            self.lease_key(),
            self.claim_value(),
            self.lease_value(server),
            self.lease_ttl().as_millis().max(1).to_string(),
        ]
    }

    /// The lease's time to live.
    fn lease_ttl(&self) -> Duration {
        self.timeout * 7 / 10
    }
}

/// A fresh random incarnation: 16 hex digits.
fn new_incarnation() -> String {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("the system's random source");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl ChatShard {
    /// `on_start`: with `[cluster]`, connect this shard's link and start
    /// ticking.
    pub(crate) fn cluster_start(&mut self, ctx: &mut Ctx<'_, ChatShard>, incarnation: &str) {
        let config = &self.info.config.cluster;
        let Ok(Some(engine)) = config.engine() else {
            return;
        };
        let id = self.next_id;
        self.next_id += 1;
        let node = config.node(self.info.name()).to_string();
        let cluster = Cluster {
            dm_channels: (0..crate::store::PARTITIONS)
                .map(|p| format!("{PREFIX}dm:{node}:{p}"))
                .collect(),
            node,
            incarnation: incarnation.to_string(),
            engine: engine.addr,
            timeout: config.node_timeout(),
            link: Link::new(id),
            nodes: Arc::default(),
            conflict: false,
            leased: false,
            settle_until: None,
            deferred: Vec::new(),
            sub: Link::new(id + 1),
            event_channels: (0..crate::store::PARTITIONS)
                .map(|p| format!("{PREFIX}ev:{p}"))
                .collect(),
            hist_keys: (0..crate::store::PARTITIONS)
                .map(|p| format!("{PREFIX}hist:{p}"))
                .collect(),
            catchup: (config.catchup_messages > 0).then(|| config.catchup_messages.to_string()),
            catch_from: Some(0),
            catch_waiting: 0,
            scratch: Vec::with_capacity(256),
        };
        self.next_id += 1;
        self.owner.cluster = true;
        self.owner.node = cluster.node.clone();
        self.owner.history.set_node(&cluster.node);
        self.owner.incarnation = cluster.incarnation.clone();
        if self.me == 0 {
            info!(node = %cluster.node, engine = %cluster.engine, incarnation, "cluster node starting");
        }
        ctx.set_interval(cluster.tick(), ChatTimer::Cluster(ClusterTimer::Tick));
        self.cluster = Some(Box::new(cluster));
        self.cluster_connect(ctx, Which::Commands);
        self.cluster_connect(ctx, Which::Events);
    }

    /// Which of this shard's engine links connection `id` is, if one.
    fn which_link(&self, id: u64) -> Option<Which> {
        let cl = self.cluster.as_ref()?;
        if cl.link.id == id {
            Some(Which::Commands)
        } else if cl.sub.id == id {
            Some(Which::Events)
        } else {
            None
        }
    }

    /// Whether connection `id` is one of this shard's engine links.
    pub(crate) fn is_cluster_link(&self, id: u64) -> bool {
        self.which_link(id).is_some()
    }

    /// Channel events go through the engine only while both links are up
    /// and the subscriptions confirmed; when that ends, the requests waiting
    /// for their own event are handled here.
    fn cluster_live_check(&mut self, ctx: &mut Ctx<'_, ChatShard>) {
        let Some(cl) = self.cluster.as_ref() else {
            return;
        };
        let live = cl.link.state == LinkState::Up
            && cl.sub.state == LinkState::Up
            && cl.sub.confirmed >= cl.sub.wanted;
        if self.owner.engine_live && !live {
            self.owner.engine_live = false;
            if let Some(cl) = self.cluster.as_mut() {
                cl.catch_from.get_or_insert_with(crate::clock::now_millis);
            }
            self.owner
                .chan_flush_local(ctx, &self.info, &mut self.outbox);
        }
        if live && !self.owner.engine_live {
            // Events may have been missed (or this node just started):
            // ask the others who is in this shard's channels.
            self.owner.engine_live = true;
            self.owner.sync_ask(self.shards, self.me);
            self.cluster_flush_owner(ctx);
            self.cluster_catch_up(ctx);
        }
        self.owner.engine_live = live;
    }

    fn cluster_connect(&mut self, ctx: &mut Ctx<'_, ChatShard>, which: Which) {
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        let engine = cl.engine;
        let link = cl.link_mut(which);
        match ctx.connect(engine, link.id) {
            Ok(conn) => {
                link.conn = Some(conn);
                link.state = LinkState::Connecting;
            }
            Err(e) => {
                warn!(shard = self.me, error = %e, "cluster: cannot open a socket to the engine");
                self.cluster_link_down(ctx, which);
            }
        }
    }

    /// A link is down: try again after its backoff. Requests the command
    /// link will not answer now are answered here (a nick granted here — the
    /// node serves its own users — and claimed again when the link is back).
    fn cluster_link_down(&mut self, ctx: &mut Ctx<'_, ChatShard>, which: Which) {
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        let link = cl.link_mut(which);
        let wait = link.down();
        let unanswered: Vec<Pending> = link.pending.drain(..).map(|(p, _)| p).collect();
        if !self.shutting_down {
            ctx.set_timer(wait, ChatTimer::Cluster(ClusterTimer::Reconnect(which)));
        }
        for p in unanswered {
            self.cluster_unanswered(ctx, p);
        }
        self.cluster_live_check(ctx);
    }

    /// The subscriber link connected: subscribe to this shard's partitions.
    fn cluster_subscribe(&mut self, ctx: &mut Ctx<'_, ChatShard>) {
        let (shards, me) = (self.shards, self.me);
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
        let mine = || {
            (0..crate::store::PARTITIONS)
                .filter(|p| crate::store::shard_of_partition(*p, shards) == me)
                .map(usize::from)
        };
        args.extend(mine().map(|p| cl.event_channels[p].as_bytes()));
        args.extend(mine().map(|p| cl.dm_channels[p].as_bytes()));
        cl.sub.wanted = args.len() - 1;
        let mut out = Vec::new();
        // Named, for `CLIENT LIST` (an operator's, a test's): `+OK` is not
        // a push, and is skipped.
        let name = format!("{}/{me}/events", cl.node);
        resp::encode_command(&mut out, &[b"CLIENT", b"SETNAME", name.as_bytes()]);
        resp::encode_command(&mut out, &args);
        if let Some(conn) = cl.sub.conn {
            // The engine link is not a client: raw RESP bytes, no framing.
            #[allow(clippy::disallowed_methods)]
            let _ = ctx.send(conn, &out);
        }
    }

    /// The subscriber link's pushes: confirmations, then events.
    fn cluster_pushes(&mut self, ctx: &mut Ctx<'_, ChatShard>, frames: Vec<OwnedFrame>) {
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        let mut events = Vec::new();
        for frame in frames {
            let OwnedFrame::Array(items) = frame else {
                continue;
            };
            match items.first().and_then(resp::text) {
                Some("subscribe") => cl.sub.confirmed += 1,
                Some("message") => {
                    if let Some(env) = items
                        .get(2)
                        .and_then(resp::text)
                        .and_then(events::Envelope::decode)
                    {
                        events.push(env);
                    } else {
                        debug!(
                            shard = self.me,
                            "cluster: an event this node cannot read; ignored"
                        );
                    }
                }
                _ => {}
            }
        }
        self.cluster_live_check(ctx);
        let node = self.owner.node.clone();
        for env in events {
            self.owner
                .cluster_event(ctx, &self.info, &mut self.outbox, &node, env);
        }
        // What the events made the owner publish (a bounce).
        self.cluster_flush_owner(ctx);
    }

    /// A request of the owner's the engine will not answer (the link went
    /// down, or it refused the command): a nick is granted here (claimed
    /// again when the link is back), a registration refused for now, a
    /// lookup answered "not found".
    fn cluster_unanswered(&mut self, ctx: &mut Ctx<'_, ChatShard>, p: Pending) {
        let (info, outbox) = (&self.info, &mut self.outbox);
        match p {
            Pending::Claim(token) => self.owner.engine_claimed(ctx, info, outbox, token, true),
            Pending::AccountClaim(token) => {
                self.owner.engine_account_claimed(ctx, outbox, token, None)
            }
            Pending::AccountGet(token) => self.owner.engine_account_found(ctx, outbox, token, None),
            Pending::Publish(token, _) => {
                self.owner.chan_echo(ctx, info, outbox, token);
                self.owner.conv_published(ctx, outbox, token);
            }
            Pending::Direct(token) => self.owner.direct_published(
                ctx,
                outbox,
                token,
                crate::owner::DirectOutcome::Unreachable,
            ),
            _ => {}
        }
    }

    /// After each piece of mail: the owner's claims and releases go to the
    /// engine (granted here at once while the link is down).
    pub(crate) fn cluster_flush_owner(&mut self, ctx: &mut Ctx<'_, ChatShard>) {
        if self.owner.engine_out.is_empty() {
            return;
        }
        let mut ops = std::mem::take(&mut self.owner.engine_out);
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        let up = cl.link.state == LinkState::Up;
        if up && cl.settle_until.is_some_and(|t| Instant::now() < t) {
            // Claims wait for the others to re-assert theirs; releases
            // keep their place behind them.
            cl.deferred.append(&mut ops);
            return;
        }
        if !cl.deferred.is_empty() {
            let mut all = std::mem::take(&mut cl.deferred);
            all.append(&mut ops);
            ops = all;
        }
        // Each is answered here at once when the link is down (see
        // `cluster_send_scratch`).
        for op in ops {
            match op {
                crate::owner::EngineOp::Claim { token, key } => {
                    self.cluster_claim(ctx, &key, Pending::Claim(token));
                }
                crate::owner::EngineOp::AccountClaim { token, key, value } => {
                    let k = format!("{PREFIX}account:{key}");
                    let args: [&[u8]; 5] = [
                        b"EVAL",
                        ACCOUNT_SCRIPT.as_bytes(),
                        b"1",
                        k.as_bytes(),
                        value.as_bytes(),
                    ];
                    self.cluster_send(ctx, &args, Pending::AccountClaim(token));
                }
                crate::owner::EngineOp::Publish {
                    token,
                    partition,
                    payload,
                    msg,
                    kept,
                } => self.cluster_publish(ctx, partition, &payload, token, msg, kept),
                crate::owner::EngineOp::AccountGet { token, key } => {
                    let k = format!("{PREFIX}account:{key}");
                    self.cluster_send(ctx, &[b"GET", k.as_bytes()], Pending::AccountGet(token));
                }
                crate::owner::EngineOp::Release { key } => self.cluster_unclaim(ctx, &key),
                crate::owner::EngineOp::Direct {
                    token,
                    key,
                    partition,
                    payload,
                } => {
                    let Some(cl) = self.cluster.as_ref() else {
                        continue;
                    };
                    let k = Cluster::nick_key(&key);
                    let (dm, suffix) = (format!("{PREFIX}dm:"), format!(":{partition}"));
                    let (node, leases) = (cl.node.clone(), format!("{PREFIX}node:"));
                    let args: [&[u8]; 9] = [
                        b"EVAL",
                        DIRECT_SCRIPT.as_bytes(),
                        b"1",
                        k.as_bytes(),
                        payload.as_bytes(),
                        dm.as_bytes(),
                        node.as_bytes(),
                        leases.as_bytes(),
                        suffix.as_bytes(),
                    ];
                    self.cluster_send(ctx, &args, Pending::Direct(token));
                }
                crate::owner::EngineOp::DirectTo {
                    node,
                    partition,
                    payload,
                } => {
                    // An answer to that node's ask: nobody waits for it here.
                    let channel = format!("{PREFIX}dm:{node}:{partition}");
                    let args: [&[u8]; 3] = [b"PUBLISH", channel.as_bytes(), payload.as_bytes()];
                    self.cluster_send(ctx, &args, Pending::Publish(0, None));
                }
            }
        }
    }

    /// Releases this process's claim of nick `key` (casefolded), if it holds it.
    fn cluster_unclaim(&mut self, ctx: &mut Ctx<'_, ChatShard>, key: &str) {
        let Some(cl) = self.cluster.as_ref() else {
            return;
        };
        let value = cl.claim_value();
        let claims = Cluster::claims_key(&cl.node);
        let nick = Cluster::nick_key(key);
        let args: [&[u8]; 6] = [
            b"EVAL",
            UNCLAIM_SCRIPT.as_bytes(),
            b"2",
            nick.as_bytes(),
            claims.as_bytes(),
            value.as_bytes(),
        ];
        self.cluster_send(ctx, &args, Pending::Unclaim);
    }

    /// The link is (back) up: claim every nick held here again, and release
    /// this node's claims of nicks it no longer holds (given up while the
    /// link was down).
    fn cluster_reassert(&mut self, ctx: &mut Ctx<'_, ChatShard>) {
        let Some(cl) = self.cluster.as_ref() else {
            return;
        };
        let claims = Cluster::claims_key(&cl.node);
        for (key, holder) in self.owner.held_nicks() {
            let k = key.clone();
            self.cluster_claim(ctx, &k, Pending::Assert(key, holder));
        }
        self.cluster_send(ctx, &[b"SMEMBERS", claims.as_bytes()], Pending::OwnClaims);
        // This shard's accounts, for logins on other nodes (a no-op unless
        // the engine lost them).
        for (key, value) in self.owner.engine_accounts() {
            let k = format!("{PREFIX}account:{key}");
            let name = value.split('\n').next().unwrap_or("").to_string();
            self.cluster_send(
                ctx,
                &[
                    b"EVAL",
                    ACCOUNT_SCRIPT.as_bytes(),
                    b"1",
                    k.as_bytes(),
                    value.as_bytes(),
                ],
                Pending::AccountAssert(name),
            );
        }
    }

    /// Claims nick `key` (casefolded) in the engine for this process.
    fn cluster_claim(&mut self, ctx: &mut Ctx<'_, ChatShard>, key: &str, pending: Pending) {
        let Some(cl) = self.cluster.as_ref() else {
            return;
        };
        let a = cl.claim_args(key, self.info.name());
        let mut args: Vec<&[u8]> = vec![b"EVAL", CLAIM_SCRIPT.as_bytes(), b"3"];
        args.extend(a.iter().map(|s| s.as_bytes()));
        self.cluster_send(ctx, &args, pending);
    }

    /// Shard 0: releases the claims of node `name` whose value is `value`
    /// (`same`), or of this node's earlier processes (`other`).
    fn cluster_reap(&mut self, ctx: &mut Ctx<'_, ChatShard>, name: &str, value: &str, mode: &str) {
        let claims = Cluster::claims_key(name);
        let lease = format!("{PREFIX}node:{name}");
        let prefix = format!("{name} ");
        self.cluster_send(
            ctx,
            &[
                b"EVAL",
                REAP_SCRIPT.as_bytes(),
                b"2",
                claims.as_bytes(),
                lease.as_bytes(),
                value.as_bytes(),
                mode.as_bytes(),
                prefix.as_bytes(),
            ],
            Pending::Unclaim,
        );
    }

    /// `on_connect` for a link.
    pub(crate) fn cluster_connected(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        result: std::io::Result<()>,
    ) {
        let Some(which) = self.which_link(id) else {
            return;
        };
        let me = self.me;
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        if let Err(e) = result {
            let link = cl.link_mut(which);
            if which == Which::Commands && (link.was_up || link.backoff == MIN_BACKOFF) {
                warn!(shard = me, engine = %cl.engine, error = %e, "cluster: cannot reach the engine; retrying");
            } else {
                debug!(shard = me, error = %e, "cluster: engine still unreachable");
            }
            self.cluster_link_down(ctx, which);
            return;
        }
        cl.link_mut(which).up();
        if which == Which::Events {
            self.cluster_subscribe(ctx);
            self.cluster_live_check(ctx);
            return;
        }
        let again = cl.link.was_up;
        cl.link.was_up = true;
        info!(shard = me, engine = %cl.engine, "cluster: engine link up");
        self.stats.cluster_link_up.set(1);
        if again {
            cl.settle_until = Some(Instant::now() + SETTLE);
            ctx.set_timer(SETTLE, ChatTimer::Cluster(ClusterTimer::Settled));
            self.cluster_tell_users(ctx, true);
        }
        let name = format!("{}/{me}/commands", self.owner.node);
        self.cluster_send(
            ctx,
            &[b"CLIENT", b"SETNAME", name.as_bytes()],
            Pending::Ignored,
        );
        if me == 0 {
            self.cluster_renew(ctx);
        }
        self.cluster_reassert(ctx);
        self.cluster_live_check(ctx);
    }

    /// `on_close` for a link.
    pub(crate) fn cluster_closed(&mut self, ctx: &mut Ctx<'_, ChatShard>, id: u64, why: &str) {
        let (Some(which), false) = (self.which_link(id), self.shutting_down) else {
            return;
        };
        let Some(cl) = self.cluster.as_ref() else {
            return;
        };
        let was_up = which == Which::Commands && cl.link.state == LinkState::Up;
        if which == Which::Commands {
            warn!(shard = self.me, engine = %cl.engine, reason = why, "cluster: engine link lost; reconnecting");
            self.stats.cluster_link_up.set(0);
        } else {
            debug!(
                shard = self.me,
                reason = why,
                "cluster: event link lost; reconnecting"
            );
        }
        self.cluster_link_down(ctx, which);
        if was_up {
            self.cluster_tell_users(ctx, false);
        }
    }

    /// Tells this shard's registered users that the engine went or came back.
    fn cluster_tell_users(&mut self, ctx: &mut Ctx<'_, ChatShard>, up: bool) {
        let text = if up {
            "*** The cluster engine is back: messages reach the other nodes again"
        } else {
            "*** Lost the cluster engine: messages no longer reach the other nodes until it is back; this server goes on serving its own users"
        };
        let server = self.info.name().to_string();
        let ids: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| c.registered && c.alive)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let nick = self
                .clients
                .get(&id)
                .and_then(|c| c.nick.clone())
                .unwrap_or_else(|| "*".into());
            let line = crate::reply::line(&server, "NOTICE", &[&nick, text], true);
            if let Some(c) = self.clients.get(&id) {
                let _ = crate::websocket::send(ctx, c, &line);
            }
        }
    }

    /// Sends one command on the link (if up), expecting `pending`'s reply.
    fn cluster_send(&mut self, ctx: &mut Ctx<'_, ChatShard>, args: &[&[u8]], pending: Pending) {
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        cl.scratch.clear();
        resp::encode_command(&mut cl.scratch, args);
        self.cluster_send_scratch(ctx, pending);
    }

    /// Publishes a channel event on its partition's engine channel; a
    /// message history keeps (`kept`: a channel's or a conversation's)
    /// goes into the partition's stream first, for the nodes that miss it.
    ///
    /// Both in one `MULTI`/`EXEC`, so that the stream's order is the
    /// channel's (a node catching up places the messages in that order);
    /// no script: nothing to load again into an engine that restarted,
    /// and no Lua on the engine per message.
    fn cluster_publish(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        partition: u16,
        payload: &str,
        token: u64,
        msg: Option<Box<crate::owner::SentMsg>>,
        kept: bool,
    ) {
        let Some(cl) = self.cluster.as_deref_mut() else {
            return;
        };
        let p = usize::from(partition);
        cl.scratch.clear();
        let queued = match &cl.catchup {
            Some(n) if kept => {
                let args: [&[u8]; 8] = [
                    b"XADD",
                    cl.hist_keys[p].as_bytes(),
                    b"MAXLEN",
                    b"~",
                    n.as_bytes(),
                    b"*",
                    events::STREAM_FIELD.as_bytes(),
                    payload.as_bytes(),
                ];
                resp::encode_command(&mut cl.scratch, &[b"MULTI"]);
                resp::encode_command(&mut cl.scratch, &args);
                true
            }
            _ => false,
        };
        let channel = cl.event_channels[p].as_bytes();
        resp::encode_command(&mut cl.scratch, &[b"PUBLISH", channel, payload.as_bytes()]);
        if queued {
            // +OK, +QUEUED, +QUEUED, then EXEC's [stream id, receivers].
            resp::encode_command(&mut cl.scratch, &[b"EXEC"]);
        }
        let ignored = if queued { 3 } else { 0 };
        self.cluster_send_scratch_after(ctx, ignored, Pending::Publish(token, msg));
    }

    /// The engine became live for this shard again (or at last): ask each
    /// partition's stream for the messages kept since the shard was cut off
    /// (all it keeps, the first time), newest first, at most what a stream
    /// keeps; its history places the ones it lacks. From a little before
    /// the cut (`CATCHUP_SLACK`: events in flight then, and the engine's
    /// clock against this one); what it had already is skipped by msgid.
    fn cluster_catch_up(&mut self, ctx: &mut Ctx<'_, ChatShard>) {
        let (shards, me) = (self.shards, self.me);
        let Some(cl) = self.cluster.as_deref_mut() else {
            return;
        };
        let (Some(n), Some(from)) = (cl.catchup.clone(), cl.catch_from) else {
            return;
        };
        let start = match from {
            0 => "-".to_string(),
            t => t
                .saturating_sub(CATCHUP_SLACK.as_millis() as u64)
                .to_string(),
        };
        let mine: Vec<u16> = (0..crate::store::PARTITIONS)
            .filter(|p| crate::store::shard_of_partition(*p, shards) == me)
            .collect();
        cl.catch_waiting = mine.len();
        for p in mine {
            let Some(cl) = self.cluster.as_deref_mut() else {
                return;
            };
            let key = cl.hist_keys[usize::from(p)].clone();
            let args: [&[u8]; 6] = [
                b"XREVRANGE",
                key.as_bytes(),
                b"+",
                start.as_bytes(),
                b"COUNT",
                n.as_bytes(),
            ];
            self.cluster_send(ctx, &args, Pending::CatchUp(p));
        }
    }

    /// Sends the command encoded in `scratch` on the command link, expecting
    /// `pending`'s reply; if it cannot go, `pending` is answered here.
    fn cluster_send_scratch(&mut self, ctx: &mut Ctx<'_, ChatShard>, pending: Pending) {
        self.cluster_send_scratch_after(ctx, 0, pending);
    }

    /// As [`ChatShard::cluster_send_scratch`], `scratch` holding `ignored`
    /// more commands before the one `pending` answers: their replies come
    /// first and are not needed.
    fn cluster_send_scratch_after(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        ignored: usize,
        pending: Pending,
    ) {
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        let sent = match (cl.link.state, cl.link.conn) {
            // The engine link is not a client: raw RESP bytes, no framing.
            #[allow(clippy::disallowed_methods)]
            (LinkState::Up, Some(conn)) => ctx.send(conn, &cl.scratch).is_ok(),
            _ => false,
        };
        if sent {
            let now = Instant::now();
            for _ in 0..ignored {
                cl.link.pending.push_back((Pending::Ignored, now));
            }
            cl.link.pending.push_back((pending, now));
        } else {
            self.cluster_unanswered(ctx, pending);
        }
    }

    /// Shard 0: renew the lease, register the name, read the names.
    fn cluster_renew(&mut self, ctx: &mut Ctx<'_, ChatShard>) {
        let Some(cl) = self.cluster.as_ref() else {
            return;
        };
        let key = cl.lease_key();
        let value = cl.lease_value(self.info.name());
        let ttl = cl.lease_ttl().as_millis().max(1).to_string();
        let node = cl.node.clone();
        let nodes_key = format!("{PREFIX}nodes");
        self.cluster_send(
            ctx,
            &[
                b"EVAL",
                LEASE_SCRIPT.as_bytes(),
                b"1",
                key.as_bytes(),
                value.as_bytes(),
                ttl.as_bytes(),
            ],
            Pending::Lease,
        );
        self.cluster_send(
            ctx,
            &[b"SADD", nodes_key.as_bytes(), node.as_bytes()],
            Pending::Register,
        );
        self.cluster_send(ctx, &[b"SMEMBERS", nodes_key.as_bytes()], Pending::Members);
    }

    /// The cluster's timers.
    pub(crate) fn cluster_timer(&mut self, ctx: &mut Ctx<'_, ChatShard>, t: ClusterTimer) {
        match t {
            ClusterTimer::Settled => {
                let Some(cl) = self.cluster.as_mut() else {
                    return;
                };
                cl.settle_until = None;
                let mut waiting = std::mem::take(&mut cl.deferred);
                waiting.append(&mut self.owner.engine_out);
                self.owner.engine_out = waiting;
                self.cluster_flush_owner(ctx);
            }
            ClusterTimer::Reconnect(which) => {
                if self
                    .cluster
                    .as_mut()
                    .is_some_and(|c| c.link_mut(which).state == LinkState::Down)
                {
                    self.cluster_connect(ctx, which);
                }
            }
            ClusterTimer::Tick => {
                let Some(cl) = self.cluster.as_ref() else {
                    return;
                };
                if cl.link.state != LinkState::Up {
                    return;
                }
                // An engine that stopped answering (not closing) is as gone.
                let stale = cl
                    .link
                    .pending
                    .front()
                    .is_some_and(|(_, at)| at.elapsed() > cl.timeout / 2);
                if stale {
                    if let Some(conn) = cl.link.conn {
                        warn!(
                            shard = self.me,
                            "cluster: the engine stopped answering; reconnecting"
                        );
                        ctx.close(conn);
                    }
                    return;
                }
                if self.me == 0 {
                    self.cluster_renew(ctx);
                } else if cl.link.pending.is_empty() {
                    self.cluster_send(ctx, &[b"PING"], Pending::Ping);
                }
            }
        }
    }

    /// `on_data` for a link: replies in order, or pushes.
    pub(crate) fn cluster_data(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        id: u64,
        data: &[u8],
    ) -> usize {
        let Some(which) = self.which_link(id) else {
            return data.len();
        };
        let Some(cl) = self.cluster.as_mut() else {
            return data.len();
        };
        let link = cl.link_mut(which);
        let (frames, mut broken) = link.frames(data);
        let mut replies = Vec::with_capacity(frames.len());
        if which == Which::Commands {
            for frame in frames {
                match link.pending.pop_front() {
                    Some((p, _)) => replies.push((p, frame)),
                    None => {
                        broken = Some("a reply to nothing asked".to_string());
                        break;
                    }
                }
            }
        } else if broken.is_none() {
            self.cluster_pushes(ctx, frames);
            return data.len();
        }
        if let Some(why) = broken {
            warn!(shard = self.me, reason = %why, "cluster: the engine sent what this node cannot read; reconnecting");
            if let Some(conn) = link.conn {
                ctx.close(conn);
            }
            return data.len();
        }
        for (p, frame) in replies {
            self.cluster_reply(ctx, p, frame);
        }
        data.len()
    }

    fn cluster_reply(&mut self, ctx: &mut Ctx<'_, ChatShard>, p: Pending, frame: OwnedFrame) {
        if let OwnedFrame::Error(e) = &frame {
            warn!(shard = self.me, asked = ?p, error = %e, "cluster: the engine refused a command");
            // Never left unanswered.
            self.cluster_unanswered(ctx, p);
            return;
        }
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        match p {
            Pending::Lease => {
                let held = frame == OwnedFrame::Integer(1);
                if !held {
                    error!(node = %cl.node, "cluster: another live process holds this node name; \
                        this one stays out of the cluster until it goes (give each node its own --node-name)");
                } else if cl.conflict {
                    info!(node = %cl.node, "cluster: the node name is this process's now");
                }
                cl.conflict = !held;
                if held && !cl.leased {
                    // No other live process has this name: claims made by
                    // earlier ones (a crash, a restart) are stale.
                    cl.leased = true;
                    let (node, value) = (cl.node.clone(), cl.claim_value());
                    self.cluster_reap(ctx, &node, &value, "other");
                }
            }
            Pending::Register | Pending::Ping | Pending::Release | Pending::Unclaim => {}
            Pending::Claim(token) => {
                let ok = frame == OwnedFrame::Integer(1);
                if frame == OwnedFrame::Integer(-1) {
                    // Another live process holds this node's name: no nick
                    // can be promised unique; the user hears why.
                    self.owner.engine_name_in_use(ctx, &mut self.outbox, token);
                }
                self.owner
                    .engine_claimed(ctx, &self.info, &mut self.outbox, token, ok);
            }
            Pending::AccountClaim(token) => {
                let ok = frame == OwnedFrame::Integer(1);
                self.owner
                    .engine_account_claimed(ctx, &mut self.outbox, token, Some(ok));
            }
            Pending::AccountGet(token) => {
                let value = resp::text(&frame).map(str::to_string);
                self.owner
                    .engine_account_found(ctx, &mut self.outbox, token, value.as_deref());
            }
            Pending::Publish(token, msg) => {
                self.owner.conv_published(ctx, &mut self.outbox, token);
                // PUBLISH's reply, or EXEC's with it last.
                let got = match &frame {
                    OwnedFrame::Integer(n) => *n,
                    OwnedFrame::Array(replies) => match replies.last() {
                        Some(OwnedFrame::Integer(n)) => *n,
                        _ => 0,
                    },
                    // EXEC aborted (nil): nothing was published.
                    _ => 0,
                };
                if got <= 0 {
                    // Not even this node's subscriber took it: its own event
                    // will not come back.
                    self.owner
                        .chan_echo(ctx, &self.info, &mut self.outbox, token);
                    return;
                }
                // One subscriber per node takes a partition's events: fewer
                // than the nodes up means some node's subscriber is away.
                let up = self.owner.other_nodes + 1;
                let got = usize::try_from(got).unwrap_or(usize::MAX);
                if let (Some(msg), true) = (msg, got < up) {
                    crate::owner::Owner::chan_partial(ctx, &mut self.outbox, *msg, up - got, up);
                }
            }
            Pending::Ignored => {}
            Pending::CatchUp(p) => {
                // Newest first: placed oldest first, so that messages of
                // one millisecond keep the stream's order.
                let mut envs = events::stream_events(&frame);
                envs.reverse();
                let got = envs.len();
                let placed = self.owner.catch_up(ctx, envs);
                if placed > 0 {
                    info!(
                        shard = self.me,
                        partition = p,
                        placed,
                        read = got,
                        "cluster: history caught up with messages this node missed"
                    );
                }
                if let Some(cl) = self.cluster.as_mut() {
                    cl.catch_waiting = cl.catch_waiting.saturating_sub(1);
                    if cl.catch_waiting == 0 && self.owner.engine_live {
                        cl.catch_from = None;
                    }
                }
            }
            Pending::Direct(token) => {
                let outcome = match frame {
                    OwnedFrame::Integer(n) if n > 0 => crate::owner::DirectOutcome::Sent,
                    OwnedFrame::Integer(0) => crate::owner::DirectOutcome::Unreachable,
                    _ => crate::owner::DirectOutcome::NoSuchNick,
                };
                self.owner
                    .direct_published(ctx, &mut self.outbox, token, outcome);
            }
            Pending::AccountAssert(name) => {
                if frame != OwnedFrame::Integer(1) {
                    warn!(shard = self.me, account = %name,
                        "cluster: another node registered an account of this name while the engine was empty; \
                         each node keeps its own (logins on other nodes find the other one)");
                }
            }
            Pending::Assert(key, holder) => {
                // -1: another process holds this node's name (the log says
                // so); its users are not this node's to rename.
                if frame == OwnedFrame::Integer(0) {
                    // Taken on another node while the link was down: this
                    // node's holder gets a guest nick.
                    info!(shard = self.me, nick = %key, "cluster: a nick held here is another node's now; renaming its holder");
                    let action = crate::mail::NickGuard::Rename;
                    let msg = ChatMsg::Guard {
                        to: holder,
                        key,
                        action,
                    };
                    self.outbox.post(ctx, ShardId(holder.shard), msg);
                }
            }
            Pending::OwnClaims => {
                let OwnedFrame::Array(items) = frame else {
                    return;
                };
                let shards = self.shards;
                let me = self.me;
                let stale: Vec<String> = items
                    .iter()
                    .filter_map(resp::text)
                    .filter_map(|k| {
                        k.strip_prefix(&format!("{PREFIX}nick:"))
                            .map(str::to_string)
                    })
                    .filter(|k| {
                        crate::casemap::owner_of_key(k, shards) == me && !self.owner.holds_nick(k)
                    })
                    .collect();
                for k in stale {
                    self.cluster_unclaim(ctx, &k);
                }
            }
            Pending::Members => {
                let OwnedFrame::Array(items) = frame else {
                    return;
                };
                let mut names: Vec<String> = items
                    .iter()
                    .filter_map(|f| resp::text(f).map(str::to_string))
                    .filter(|n| crate::config::valid_node_name(n))
                    .collect();
                names.sort();
                if names.is_empty() {
                    return;
                }
                let keys: Vec<String> = names.iter().map(|n| format!("{PREFIX}node:{n}")).collect();
                let mut args: Vec<&[u8]> = vec![b"MGET"];
                args.extend(keys.iter().map(|k| k.as_bytes()));
                self.cluster_send(ctx, &args, Pending::Leases(names));
            }
            Pending::Leases(names) => {
                let OwnedFrame::Array(values) = frame else {
                    return;
                };
                let mut view = BTreeMap::new();
                for (name, v) in names.into_iter().zip(values.iter()) {
                    let Some((incarnation, server)) = resp::text(v).and_then(|t| t.split_once(' '))
                    else {
                        continue;
                    };
                    let node = Node {
                        name: name.clone(),
                        server: server.to_string(),
                        incarnation: incarnation.to_string(),
                    };
                    view.insert(name, node);
                }
                self.cluster_view(ctx, view);
            }
        }
    }

    /// Shard 0 read the nodes up: log what changed, tell the other shards.
    fn cluster_view(&mut self, ctx: &mut Ctx<'_, ChatShard>, view: BTreeMap<String, Node>) {
        let Some(cl) = self.cluster.as_ref() else {
            return;
        };
        if *cl.nodes == view {
            return;
        }
        for (name, n) in &view {
            match cl.nodes.get(name) {
                None => info!(node = %name, server = %n.server, "cluster: node up"),
                Some(old) if old.incarnation != n.incarnation => {
                    info!(node = %name, server = %n.server, "cluster: node restarted")
                }
                Some(_) => {}
            }
        }
        let mut gone = Vec::new();
        for (name, n) in cl.nodes.iter() {
            match view.get(name) {
                None => info!(node = %name, server = %n.server, "cluster: node down"),
                Some(now) if now.incarnation != n.incarnation => {}
                Some(_) => continue,
            }
            if *name != cl.node {
                gone.push((name.clone(), format!("{name} {}", n.incarnation)));
            }
        }
        // Their claims go with them (any node may do it: the script only
        // releases what is still theirs).
        for (name, value) in gone {
            self.cluster_reap(ctx, &name, &value, "same");
        }
        let view = Arc::new(view);
        for s in 1..self.shards {
            let msg = ChatMsg::ClusterNodes(view.clone());
            self.outbox.post(ctx, ShardId(s), msg);
        }
        self.cluster_nodes(ctx, view);
    }

    /// The view of the nodes up (from shard 0).
    pub(crate) fn cluster_nodes(
        &mut self,
        ctx: &mut Ctx<'_, ChatShard>,
        view: Arc<BTreeMap<String, Node>>,
    ) {
        self.stats.cluster_nodes.set(view.len() as u64);
        let Some(cl) = self.cluster.as_mut() else {
            return;
        };
        // Nodes gone (or restarted): their members leave this node's
        // channels.
        let gone: Vec<String> = cl
            .nodes
            .iter()
            .filter(|(name, n)| {
                view.get(*name)
                    .is_none_or(|v| v.incarnation != n.incarnation)
            })
            .map(|(name, _)| name.clone())
            .filter(|name| *name != cl.node)
            .collect();
        self.owner.other_nodes = view.keys().filter(|n| **n != cl.node).count();
        cl.nodes = view;
        for name in gone {
            self.owner.node_gone(ctx, &mut self.outbox, &name);
        }
    }

    /// `on_shutdown`: shard 0 gives its lease up so the others see the node
    /// go at their next read.
    pub(crate) fn cluster_stop(&mut self, ctx: &mut Ctx<'_, ChatShard>) {
        if self.me != 0 {
            return;
        }
        let Some(cl) = self.cluster.as_ref() else {
            return;
        };
        let key = cl.lease_key();
        let value = cl.lease_value(self.info.name());
        self.cluster_send(
            ctx,
            &[
                b"EVAL",
                RELEASE_SCRIPT.as_bytes(),
                b"1",
                key.as_bytes(),
                value.as_bytes(),
            ],
            Pending::Release,
        );
    }

    /// The other nodes' servers up, for LINKS (empty without a cluster).
    pub(crate) fn cluster_servers(&self) -> Vec<(String, String)> {
        let Some(cl) = self.cluster.as_ref() else {
            return Vec::new();
        };
        cl.nodes
            .values()
            .filter(|n| n.name != cl.node)
            .map(|n| (n.name.clone(), n.server.clone()))
            .collect()
    }
}

/// A fresh incarnation for this process (one for all its shards).
pub fn incarnation() -> String {
    new_incarnation()
}

/// An account from the engine's record (`<name>\n<credentials>`), as a
/// login on a node without it reads it; `None` if malformed.
pub fn account_from_engine(value: &str) -> Option<crate::auth::sasl::AccountInfo> {
    crate::owner::account_from_engine_value(value)
}
