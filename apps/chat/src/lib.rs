//! `shardline-chat`: an IRC server on Shardline whose channels span shards.
//!
//! Each shard runs one [`ChatShard`]: it owns the connections the kernel (or the
//! acceptor) gave it, and it *owns some names*. Shards share nothing; they talk
//! only through Shardline's bounded mailboxes, in the messages of [`mail`].
//!
//! # Ownership
//!
//! Every nick and every channel has an **owner shard**: the name's store
//! partition (FNV-1a 64 of the name casefolded with the rfc1459 casemapping,
//! modulo 64) modulo the shard count ([`casemap::owner_of`]). Every shard
//! computes the same owner without asking, and a shard owns whole store
//! partitions: the history of the channels it owns is in its own files.
//!
//! - **Nicks**: a client's shard sends `ClaimNick` to the nick's owner, which grants
//!   it only if no other client holds it — so nicks are unique server-wide, also
//!   before registration completes (433). After a change the old nick is released
//!   at its own owner. The owner also knows whether the holder has completed
//!   registration (`Registered`, sent before the client's input goes on): until
//!   then the nick is nobody to PRIVMSG, WHOIS and INVITE (401). A nick freed
//!   by QUIT (or a refused password) is released at its owner before the
//!   client reads the ERROR. One freed by a plain close may still be held at
//!   the owner when a new claim for it comes (the holder's shard has not seen
//!   the close yet): the owner then asks the holder's shard (`HolderCheck`),
//!   which answers (`HolderAnswer`) only after reaping its I/O twice more —
//!   a close that came before the claim was made is seen by then, and its
//!   release reaches the owner first — and 433 goes out only if the holder is
//!   still connected and not leaving. The owner keeps who left each nick for
//!   WHOWAS.
//! - **Channels**: membership, prefixes, topic, modes, bans, invitations and the
//!   member count *per shard* live on the channel's owner only. Each shard keeps a
//!   local view of the channels its clients are in ([`view`]: the fan-out list, the
//!   display name, `+s`, each local member's prefixes), changed only by the owner's
//!   deliveries — JOIN and MODE carry a [`mail::ViewUpdate`] — so it follows the
//!   channel's order, and WHO and WHOIS are answered on the member's own shard.
//! - **Client addresses** (only with `max_connections_per_ip`): accepting spreads
//!   one address over every shard, so the accepting shard asks the address's owner
//!   (the same hash over its text) to count the connection, and the client's input
//!   waits for the verdict; its shard uncounts it when it leaves.
//!
//! # Requests, replies, deliveries, acks
//!
//! A client's command that concerns a name becomes a **request** to its owner. The
//! owner answers each request with exactly one **reply** to the client's shard
//! (numerics, a claim result, ...). For a channel event (JOIN, PART, TOPIC,
//! PRIVMSG, NOTICE) the owner posts **one delivery per shard that has members** —
//! not one per member — and each shard renders the line once per tag variant
//! (`server-time`, `message-tags`) and hands the same `Bytes` to each local member
//! with `send_shared`. A private message goes to the nick's owner, which forwards
//! it to the recipient's shard. NICK changes, QUITs, account changes (ACCOUNT),
//! AWAY, SETNAME and CHGHOST go from the client's shard to every shard, each
//! delivering the line once to each local client sharing a channel
//! (deduplicated locally; ACCOUNT, AWAY, SETNAME and CHGHOST only to clients
//! with `account-notify`, `away-notify`, `setname`, `chghost`) and updating the
//! channels it owns (see `commands/notify.rs`).
//!
//! A request may be **forwarded** once instead of answered: the nick owner
//! resolves INVITE's invitee and passes it to the channel's owner (which checks
//! 442/443/482, records the invitation and delivers the INVITE line, to the
//! invitee and, for `invite-notify`, to the members who could invite too),
//! WHOIS and CHGHOST to the target's shard; the last shard replies. Where a channel owner cannot tell
//! 441 from 401 (KICK or MODE +o/+v of a nick not in the channel) it replies
//! `CheckNicks`, and the client's shard asks each nick's owner with a new request.
//! A recipient's shard that finds it away sends the sender 301 (`Notify`) before
//! acknowledging the delivery, so it too comes before the sender's next PONG.
//!
//! **Merged queries** — WHO (every shard answers for its clients), LIST (every
//! channel owner, or only the owners of the names given), LUSERS, STATS m and L
//! (every shard), USERHOST and ISON (the owners of the nicks, one request each,
//! passed along the shards holding them; one 302/303 line, entries in the order
//! asked) — are gathered on the asker's shard: each part is sent on as it
//! arrives, the end marker (315, 323, 219) after the last, and the client's input
//! waits meanwhile so answers never interleave.
//!
//! # Ordering
//!
//! - *A channel's messages*: every event of a channel is ordered by its owner, and
//!   Shardline's mailboxes are FIFO per (sender, receiver) pair, so every shard —
//!   and so every member — gets the channel's events in the owner's order.
//! - *One client's commands*: a client's requests leave its shard in the order the
//!   commands came, and requests about one name all go to the same owner through
//!   the same FIFO queue. Where a later command depends on the *result* of an
//!   earlier one across owners (NICK, registration, LUSERS) the client's input is
//!   **parked**: its next line waits until the earlier one is fully done.
//!
//! # The PING barrier
//!
//! Each client counts `unreplied` (requests without a reply yet) and `acks_due`
//! (deliveries made on its behalf not yet acknowledged). A reply adds the number
//! of deliveries the owner made for that request; each shard acknowledges every
//! delivery after queueing it to its members (acks are coalesced: one message per
//! shard per loop turn). An ack may overtake the reply that announced it, so
//! `acks_due` can dip below zero, but it can only be zero with `unreplied == 0`
//! once every reply is in — so `unreplied == 0 && acks_due == 0` means every effect
//! of every earlier command has been queued to every recipient. PING, NICK, JOIN 0
//! and the end of a QUIT wait for exactly that: the PONG comes after all earlier
//! effects, a NICK line is seen after everything said under the old nick, and a
//! QUIT after the client's last message.
//!
//! # Backpressure
//!
//! Each client may have at most `in_flight_per_client` requests and deliveries
//! under way (the same counts as the barrier); past that its input is parked until
//! half are done, and past `recvq_bytes` of parked input the shard stops reading
//! its socket, so a bursting client is paced by TCP instead of filling queues.
//!
//! `Ctx::post` returns `Full` when a pair queue is full. The shard then keeps the
//! message in a per-destination `shardline::Outbox` and flushes it, in order, from
//! `on_mailbox_ready`. New work — a client's request, an owner's fan-out — is
//! refused when what waits for a needed shard has reached `outbox_capacity`
//! (`Outbox::pending`; rehashable): the client is
//! disconnected with "Server busy", and the refusing owner refuses that client's
//! requests still in flight too (until its QUIT notice), so what a client said is
//! always a prefix of what it sent, never a sequence with holes. Consequences of
//! accepted work (replies, acks, membership changes) are always queued; they are
//! bounded by the accepted work.
//! A client that does not read its socket is disconnected by the framework's send
//! queue limit ("SendQ exceeded"). Nothing is dropped silently.
//!
//! **Flood control** ([`flood`]) is separate and per client: each command moves
//! its clock ahead; past `max_lag` its input waits on a timer (its lines stay
//! buffered), and a client that piles up more than `max_backlog_bytes` meanwhile is
//! disconnected ("Excess Flood"). Off with `[flood] enabled = false`.
//!
//! # Rehash
//!
//! [`build_with_rehash`] installs a SIGHUP hook (`Server::on_hangup`): on the
//! signal thread it rereads the configuration file, refuses an invalid one (log
//! line, nothing posted), merges the settings that may change at run time into
//! the running ones ([`Config::rehash`]), and posts the resulting
//! [`ServerInfo`] to every shard through a `Remote` ([`ChatMsg::Rehash`], which
//! `on_message` accepts only with `Origin::Remote`). Each shard swaps it in: what
//! it does next — the next welcome's MOTD, the next OPER, the next flood check —
//! uses it. The shards never block or share the new value mutably.
//!
//! # TLS
//!
//! With `[tls] listen` (or `--tls-listen`) every shard also accepts on TLS
//! listeners (Shardline's `listen_tls`: rustls inside the shard). The handshake
//! is over before `on_accept`, so a TLS client is an ordinary client with
//! [`client::ClientTls`] set — the SHA-256 of a verified client certificate
//! included — and nothing else differs: its lines arrive as plaintext and its
//! output is encrypted by the framework. That record lives with the client on its
//! own shard, where WHOIS is answered ([`mail::Request::WhoisLocal`]), so 671
//! (and 276) reach an asker on any shard as numerics. IRCv3 `sts` is advertised
//! on `CAP LS 302`: plaintext clients get the upgrade policy (`port=`), TLS
//! clients the persistence policy (`duration=`, default 0). The one
//! [`shardline::TlsAcceptor`] is shared by every shard; the SIGHUP hook reloads
//! its certificate files (see [`build_with_rehash`]).
//!
//! # WebSocket
//!
//! With `[websocket] listen` / `tls_listen` (`--websocket-listen`,
//! `--websocket-tls-listen`) every shard also accepts on WebSocket listeners:
//! a connection there starts as an HTTP request — the web client's files, or
//! the upgrade to IRC over WebSocket (IRCv3: one IRC line per message) — and
//! after the upgrade is an ordinary client whose input is decoded from frames
//! and whose output is framed line by line ([`websocket`]).
//! With a data directory the same listeners host files (`soju.im/FILEHOST`,
//! [`filehost`]): uploads authenticated with an account's password (the
//! SASL PLAIN path), bounded per file and per account, streamed to and from
//! disk by the shards.
//! # History and the store
//!
//! Every PRIVMSG, NOTICE and TAGMSG gets a `msgid` and a `time` where it is
//! ordered: a channel message at the channel's owner, a private message between
//! two accounts at the owner of their conversation, another private message at
//! the recipient nick's owner ([`history`]). The owner keeps PRIVMSG and NOTICE
//! in the history of the channel or conversation, so the stamped line every
//! recipient sees is the one CHATHISTORY returns. Each shard has its own
//! [`store::Store`] of the partitions it owns (a name's owner shard *is* its
//! partition's shard), opened on the shard's thread in `on_start` in the data
//! directory that [`build`] locked. Appends change memory and are handed to the
//! store's writer thread once per loop turn (a zero-delay timer armed by the
//! turn's first append), so no write or fsync ever runs on a shard; the writer
//! reports back through a `Remote` ([`ChatMsg::StoreReport`]), installed by
//! [`ChatServer::start`] / [`ChatServer::run`] once the server runs (reports
//! that come earlier are kept until then). On a graceful stop each shard's
//! store writes and syncs everything before the shard's thread ends.
//!
//! CHATHISTORY goes to where the history is: a channel's owner checks that the
//! asker may read the channel now (a member, or the channel is neither `+s`,
//! `+i` nor keyed and does not ban them); a nick target goes to that nick's
//! owner, which resolves the other party's account and forwards to the
//! conversation's owner; TARGETS asks every shard and merges. The answer comes
//! back to the asker's shard, which sends it as one batch.
//!
//! # Accounts and SASL
//!
//! Accounts live in the store, so only with history on. An account is owned
//! like a nick: by the owner of its name (`store::account_key`), whose store
//! holds it — so names are unique server-wide, and `REGISTER`s of one name
//! from different shards are ordered by one owner, which creates the record
//! (memory at once) and answers only when its store ticket completed (fsynced;
//! [`store::Store::on_report`]'s completions go to the owner's pending
//! registrations). `AUTHENTICATE` runs the client's [`auth::sasl::Sasl`]
//! machine on the client's shard: account lookups are requests to the owner
//! ([`mail::Request::AccountLookup`]), EXTERNAL's fingerprint lookup goes to
//! every shard (each indexes its own accounts' fingerprints), and argon2
//! verifications and hashes run on [`auth::pool`]'s helper threads with a
//! bounded queue, whose answers come back through a `Remote`
//! ([`ChatMsg::HashDone`], matched to the client id and query; a client that
//! left is ignored). Each of those counts as an unanswered request of the
//! client, so its input waits for it like for any parked command and the PING
//! barrier covers it. A login sets the account through the one place that does
//! it (`ChatShard::set_account`). The offline tool (`shardline-chat account …`,
//! [`auth::cli`]) changes accounts while no server holds the data directory.
//!
//! # Accounts as others see them
//!
//! A client's account lives with the client on its shard; logging in or out
//! ([`ChatShard`]'s `set_account`, which SASL and the test hook `TESTACCOUNT`
//! use) tells the nick's owner (`Request::SetAccount`) and, once the client is
//! registered and in channels, every shard (an ACCOUNT notice, acknowledged like
//! NICK, so it is a barrier). The IRCv3 capabilities built on it:
//!
//! - `account-tag`: [`mail::Outgoing`] carries the source's account, rendered as
//!   `@account=` for clients with the cap — one more bit of the per-shard
//!   render variants, never a per-member copy. Messages carry it from the
//!   sender's shard (`Said`); channel owners keep each member's account (set
//!   at JOIN, updated by the notices) for PART, KICK, TOPIC, MODE and INVITE.
//! - `account-notify`: the ACCOUNT notice above.
//! - `extended-join`: a JOIN's `Outgoing` also holds the extended body
//!   (`JOIN #chan <account>|* :<real name>`), another render variant.
//! - WHOIS 330, answered on the target's shard.
//!
//! **Nick protection** (`[accounts] enforce_nick`): a nick's owner is also the
//! owner of the account of that name (the same casefolded key, so the same
//! store partition), so it alone decides, from its own store, whether the
//! holder of a nick must log in to keep it: it warns the holder's shard
//! ([`mail::ChatMsg::Guard`]), arms a grace timer ([`ChatTimer::NickGuard`]),
//! stops it when the holder logs in or gives up the nick, and when it fires
//! has the holder's shard rename it to a free `Guest` nick through the
//! ordinary claim, after the client's earlier commands.
//!
//! **OPER** against an argon2 hash runs on a helper thread
//! ([`auth::oper::OperChecker`], a bounded queue); the answer comes back
//! through a `Remote` ([`ChatMsg::OperChecked`], accepted only with
//! `Origin::Remote`) while the client's input waits, counted like a request.
//!
//! # MONITOR and labeled responses
//!
//! MONITOR's watch lists live where the nicks do: each nick's owner keeps its
//! watchers ([`monitor::Watches`]), adds one and reads the nick's state in one
//! step, and tells every watcher's shard when the nick becomes visible or is
//! released ([`ChatMsg::Monitor`]); a watcher that leaves is removed at the
//! owners after its other requests ([`monitor`] has the whole protocol). A
//! labelled command ([`labels`]) is a barrier on both sides — it starts once
//! the client is settled and its response is closed once the client is
//! settled again — so exactly the lines its own effects produced, wherever
//! they were answered, carry the label or go in its batch.
//!
//! # Metrics
//!
//! With `[server] admin_listen` (or `--admin`), Shardline's admin endpoint serves
//! Prometheus `/metrics`: the framework's per-shard counters (connections, bytes,
//! mailboxes) and this crate's ([`stats`]: users, channels owned, commands in,
//! lines delivered, cross-shard mail by kind, history appends and hand-overs,
//! SASL outcomes, registrations and refused hashing jobs, and the store's
//! counters), each per shard and kept by that shard (or its
//! store's writer) alone.
//!
//! # Must never
//!
//! Block (a disk write, an fsync or a password hash included), panic on client
//! input, copy a channel message per member, or trust a [`mail::ClientRef`] to
//! still exist (ids are never reused, so a stale one misses).

#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod auth;
pub mod casemap;
pub mod client;
pub mod clock;
pub mod cluster;
mod commands;
pub mod config;
mod deliver;
pub mod filehost;
pub mod flood;
pub mod framing;
pub mod history;
pub mod info;
pub mod labels;
pub mod mail;
pub mod mask;
pub mod message;
pub mod monitor;
mod nickguard;
mod owner;
mod queries;
pub mod reply;
mod session;
mod shard;
pub mod stats;
pub mod store;
pub mod upgrade;
pub mod upload_token;
pub mod view;
pub mod websocket;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use auth::oper::OperChecker;
pub use config::{Config, Overrides, TlsSection, WebSocketSection};
use history::{ReportSink, Storage};
pub use info::ServerInfo;
pub use mail::ChatMsg;
pub use shard::{ChatShard, ChatTimer};
use shardline::{
    tls::{CertFiles, ClientAuth, TlsAcceptorOptions},
    AdminConfig, Limits, Remote, RunningServer, Server, ServerBuilder, ShardId, TlsAcceptor,
};
use store::{DataDir, Disk, StoreError, StoreOptions};
use tracing::{error, info, warn};

/// Why the chat server could not be built or started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The framework refused the configuration or could not start.
    #[error(transparent)]
    Server(#[from] shardline::Error),
    /// The data directory could not be opened or locked. (The message says
    /// why; it is not repeated as a source.)
    #[error("history store: {0}")]
    Store(StoreError),
    /// A shard's store could not be opened (a damaged or unreadable log): the
    /// server stopped again.
    #[error("history store of shard {shard}: {error}")]
    ShardStore {
        /// The shard.
        shard: usize,
        /// Why.
        error: StoreError,
    },
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Error {
        Error::Store(e)
    }
}

/// How [`build_with`] builds the server, beyond the configuration.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Where SIGHUP rereads the configuration (see [`build_with_rehash`]).
    pub rehash: Option<RehashSource>,
    /// The file operations the store writes through; the real disk when
    /// unset. Tests put a disk that fails here.
    pub disk: Option<Arc<dyn Disk>>,
}

/// A built chat server, not yet running: the framework's [`Server`] and the
/// store the shards open as they start. [`ChatServer::start`] and
/// [`ChatServer::run`] connect the stores' writer threads to the shards once
/// the server runs, and stop it again with an error if a shard's store did not
/// open.
#[derive(Debug)]
pub struct ChatServer {
    server: Server<ChatMsg>,
    storage: Option<Arc<Storage>>,
    oper_checker: Arc<OperChecker>,
}

impl ChatServer {
    /// The framework's server (for its placement plan).
    pub fn server(&self) -> &Server<ChatMsg> {
        &self.server
    }

    /// The store to hand over to a new process at an upgrade (`None`: no
    /// history, nothing to hand over). See [`upgrade`].
    pub fn store_handover(&self) -> Option<upgrade::StoreHandover> {
        self.storage.clone().map(upgrade::StoreHandover::new)
    }

    /// Starts every shard and returns once all serve (see [`Server::start`]).
    /// Fails — after stopping the shards — if a shard's store did not open.
    pub fn start(self) -> Result<RunningServer<ChatMsg>, Error> {
        let ChatServer {
            server,
            storage,
            oper_checker,
        } = self;
        let running = server.start()?;
        if let Some(storage) = &storage {
            if let Some((shard, error)) = storage.take_failure() {
                let _ = running.shutdown();
                return Err(Error::ShardStore { shard, error });
            }
            storage.sink.install(running.remote());
            storage.hasher.install(running.remote());
        }
        oper_checker.install(running.remote());
        Ok(running)
    }

    /// Runs the server until SIGINT or SIGTERM (see [`Server::run`]).
    pub fn run(self) -> Result<(), Error> {
        self.run_with(|_| {})
    }

    /// Like [`ChatServer::run`], calling `setup` once every shard serves (see
    /// [`Server::run_with`]).
    pub fn run_with(self, setup: impl FnOnce(&RunningServer<ChatMsg>)) -> Result<(), Error> {
        let ChatServer {
            server,
            storage,
            oper_checker,
        } = self;
        let mut failed = None;
        let result = server.run_with(|running| {
            if let Some(storage) = &storage {
                if let Some(failure) = storage.take_failure() {
                    failed = Some(failure);
                    running.shutdown_handle().shutdown();
                    return;
                }
                storage.sink.install(running.remote());
                storage.hasher.install(running.remote());
            }
            oper_checker.install(running.remote());
            setup(running);
        });
        if let Some((shard, error)) = failed {
            return Err(Error::ShardStore { shard, error });
        }
        result.map_err(Error::from)
    }
}

/// The framework limits that follow from `config`: the send queue limit is the
/// IRC SendQ.
pub fn framework_limits(config: &Config) -> Limits {
    let sendq = config.limits.sendq_bytes;
    Limits {
        send_high_water: sendq / 2,
        send_low_water: sendq / 8,
        send_hard_limit: sendq,
        ..Limits::default()
    }
}

/// Applies `config`'s limits to `builder` and builds the chat server, with the
/// admin endpoint (`/metrics`: the framework's counters and [`stats`]) if
/// `server.admin_listen` is set, and the TLS listeners of `[tls]` if any (see
/// [`build_with_rehash`]). The plaintext listen addresses, shards, backend and
/// accept mode are the builder's. With history on it opens and locks the data
/// directory (`[storage] dir`; an error naming the problem if it cannot), which
/// stays locked while the server exists. SIGHUP (under [`ChatServer::run`])
/// rereads the TLS certificate files, if any, and logs that there is no
/// configuration file to reload; see [`build_with_rehash`].
pub fn build(builder: ServerBuilder, config: Config) -> Result<ChatServer, Error> {
    build_with(builder, config, BuildOptions::default())
}

/// Where a rehash reads the configuration again: the file the server was started
/// with, and the command-line overrides applied to it.
#[derive(Debug, Clone)]
pub struct RehashSource {
    /// The configuration file.
    pub path: PathBuf,
    /// The command line's settings (`--admin`, `--tls-*`), applied again over
    /// what the file says.
    pub overrides: Overrides,
}

/// The TLS acceptor options `tls` describes: its certificate and key, and with
/// `client_ca` optional client certificates. `None` unless `cert` and `key` are
/// set (a valid configuration sets them only with a TLS listener: `tls.listen`
/// or `websocket.tls_listen`).
pub fn tls_options(tls: &TlsSection) -> Option<TlsAcceptorOptions> {
    let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
        return None;
    };
    let mut options = TlsAcceptorOptions::new(CertFiles::new(cert, key));
    if let Some(ca) = &tls.client_ca {
        options.client_auth = ClientAuth::Optional { ca: ca.clone() };
    }
    Some(options)
}

/// Like [`build`], and on SIGHUP (under [`Server::run`]) rereads `source` — see
/// [`Config::rehash`] for what changes at run time. The file is read and checked
/// on the signal thread; an unreadable or invalid one is refused there with a log
/// line and nothing reaches the shards. A valid one is posted to every shard
/// ([`ChatMsg::Rehash`]), which swaps it in for what it does next: the next
/// client's welcome shows the new MOTD, the next OPER checks the new operators.
///
/// With `[tls]` configured, every address of `tls.listen` gets a TLS listener
/// (the certificate files are loaded here: a missing or unusable file, or a key
/// that does not belong to the certificate, is an error naming it). Every SIGHUP
/// then reads the certificate files again (`TlsAcceptor::reload_with`: the paths
/// of the new file if it was accepted, else the running ones — a certificate
/// renewal is not held up by an unrelated mistake in the file), for every new
/// handshake on every shard; established connections keep their session. A file
/// that does not load is refused with an `error` log line and the running
/// certificate stays.
pub fn build_with_rehash(
    builder: ServerBuilder,
    config: Config,
    source: Option<RehashSource>,
) -> Result<ChatServer, Error> {
    let options = BuildOptions {
        rehash: source,
        ..BuildOptions::default()
    };
    build_with(builder, config, options)
}

/// [`build`] with [`BuildOptions`].
pub fn build_with(
    builder: ServerBuilder,
    config: Config,
    options: BuildOptions,
) -> Result<ChatServer, Error> {
    let source = options.rehash;
    let storage = match config.history.enabled {
        true => Some(Arc::new(open_storage(&config, options.disk)?)),
        false => {
            info!("history is off: no store, no CHATHISTORY");
            None
        }
    };
    let limits = framework_limits(&config);
    let mailbox = config.limits.mailbox_capacity;
    let coalesce = config.limits.coalesce();
    let tls = match tls_options(&config.tls) {
        Some(options) => Some(
            TlsAcceptor::new(options).map_err(|e| shardline::Error::Config(format!("TLS: {e}")))?,
        ),
        None => None,
    };
    let mut builder = builder;
    if let Some(acceptor) = &tls {
        for addr in &config.tls.listen {
            builder = builder.listen_tls(*addr, acceptor.clone());
        }
    }
    // The WebSocket listeners come last: a shard knows them as the last
    // `websocket.listeners()` of its listener list (see `websocket`).
    for addr in &config.websocket.listen {
        builder = builder.listen(*addr);
    }
    if !config.websocket.tls_listen.is_empty() {
        let Some(acceptor) = &tls else {
            return Err(shardline::Error::Config(
                "websocket.tls_listen needs tls.cert and tls.key".into(),
            )
            .into());
        };
        for addr in &config.websocket.tls_listen {
            builder = builder.listen_tls(*addr, acceptor.clone());
        }
    }
    for warning in config.warnings() {
        warn!("{warning}");
    }
    let info = Arc::new(ServerInfo::new(config));
    let builder = match info.config.server.admin_listen {
        Some(addr) => {
            let shared = info.stats.clone();
            builder.admin(AdminConfig::new(addr).render(move |w| shared.render(w)))
        }
        None => builder,
    };
    let current = Mutex::new(info.clone());
    let shard_storage = storage.clone();
    let oper_checker = Arc::new(OperChecker::default());
    let shard_checker = oper_checker.clone();
    let server = builder
        .limits(limits)
        .mailbox_capacity(mailbox)
        .coalesce(coalesce)
        .build(move |id| {
            ChatShard::with_storage(
                info.clone(),
                id,
                shard_storage.clone(),
                shard_checker.clone(),
            )
        })?;
    let server =
        server.on_hangup(move |remote| rehash(&current, source.as_ref(), tls.as_ref(), remote));
    Ok(ChatServer {
        server,
        storage,
        oper_checker,
    })
}

/// Opens and locks the data directory; the shards open their stores in it.
fn open_storage(config: &Config, disk: Option<Arc<dyn Disk>>) -> Result<Storage, Error> {
    let path = config.storage.data_dir();
    let dir = DataDir::open(&path)?;
    let shown = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
    let sync = config.storage.sync_policy();
    info!(dir = %shown.display(), ?sync, "history store: data directory locked");
    let mut options = StoreOptions {
        sync,
        limits: config.history.limits(),
        ..StoreOptions::default()
    };
    if let Some(disk) = disk {
        options.disk = disk;
    }
    let accounts = &config.accounts;
    let hasher = crate::auth::pool::HashPool::new(accounts.hash_threads, accounts.hash_queue)
        .map_err(|e| {
            Error::Server(shardline::Error::Config(format!(
                "cannot start the password hashing threads: {e}"
            )))
        })?;
    let filehost = match config.filehost.on(true, config.websocket.listeners()) {
        true => Some(Arc::new(
            crate::filehost::FileHost::open(&path, &config.filehost).map_err(|e| {
                Error::Server(shardline::Error::Config(format!(
                    "file host directory {}: {e}",
                    path.join("files").display()
                )))
            })?,
        )),
        false => None,
    };
    Ok(Storage {
        filehost,
        dir,
        options,
        sink: Arc::new(ReportSink::default()),
        hasher,
        failures: Mutex::new(Vec::new()),
    })
}

/// How long the SIGHUP hook waits for a shard whose mailbox is full.
const REHASH_POST_TIMEOUT: Duration = Duration::from_secs(5);

/// The SIGHUP hook: reread, check, merge with what runs, reload the TLS
/// certificates, post to every shard.
fn rehash(
    current: &Mutex<Arc<ServerInfo>>,
    source: Option<&RehashSource>,
    tls: Option<&TlsAcceptor>,
    remote: &Remote<ChatMsg>,
) {
    let new = match source {
        None if tls.is_none() => {
            info!("SIGHUP: started without a configuration file; nothing to reload");
            return;
        }
        None => {
            info!(
                "SIGHUP: started without a configuration file; rereading the TLS certificates only"
            );
            None
        }
        Some(source) => match Config::load_with(&source.path, &source.overrides) {
            Ok(config) => {
                for warning in config.warnings() {
                    warn!("rehash: {warning}");
                }
                Some(config)
            }
            Err(e) => {
                error!(
                    path = %source.path.display(),
                    error = %e,
                    "rehash refused: keeping the running configuration"
                );
                None
            }
        },
    };
    // Only this hook takes the lock (one SIGHUP at a time); never a shard.
    let mut current = current.lock().unwrap_or_else(|p| p.into_inner());
    let mut next = new.map(|new| {
        let (next, kept) = current.rehashed(new);
        if !kept.is_empty() {
            warn!(settings = ?kept, "rehash: these settings need a restart; keeping their running values");
        }
        next
    });
    if let Some(acceptor) = tls {
        let tls_config = next.as_ref().map_or(&current.config.tls, |n| &n.config.tls);
        if let Some(options) = tls_options(tls_config) {
            if let Err(e) = acceptor.reload_with(options) {
                error!(error = %e, "TLS reload refused: keeping the running certificate");
                if let Some(n) = next.as_mut() {
                    // What the shards are told is what is served.
                    n.config.tls.cert = current.config.tls.cert.clone();
                    n.config.tls.key = current.config.tls.key.clone();
                    n.config.tls.client_ca = current.config.tls.client_ca.clone();
                }
            }
        }
    }
    let (Some(next), Some(source)) = (next, source) else {
        return;
    };
    let next = Arc::new(next);
    let mut missed = Vec::new();
    for s in 0..remote.shards() {
        if let Err(e) = remote.post_timeout(
            ShardId(s),
            ChatMsg::Rehash(next.clone()),
            REHASH_POST_TIMEOUT,
        ) {
            missed.push((s, e.to_string()));
        }
    }
    *current = next;
    if missed.is_empty() {
        info!(path = %source.path.display(), shards = remote.shards(), "rehashed configuration");
    } else {
        error!(
            ?missed,
            "rehash: some shards did not get the new configuration"
        );
    }
}
