//! Per-shard chat counters, for the admin endpoint's `/metrics` (`[server]
//! admin_listen`, `--admin`).
//!
//! Each shard writes only its own [`ShardStats`] (Shardline's single-writer
//! [`Counter`]s: a plain load and store, each on its own cache line), and the admin
//! thread reads them all. They are kept where the shard's state changes: commands in
//! the input pump, users where registration is announced to the nick's owner and
//! where a client is forgotten, channels after each piece of mail (only mail changes
//! what an owner holds), deliveries where `deliver.rs` queues each line, and
//! cross-shard mail as it arrives. This module must never make a shard wait for a
//! reader, or count on another shard's behalf.
//!
//! Bytes in and out, connections and the mailboxes' own counts are the framework's
//! (`shardline_*`, same `shard` label).

use std::sync::{Arc, OnceLock};

use shardline::{Counter, PerShard, PromWriter};

use crate::{mail::ChatMsg, shard::ChatShard, store::StoreStats};

/// The kinds of cross-shard mail, as labelled in
/// `shardline_chat_mail_received_total`.
const MAIL_KINDS: [&str; 7] = [
    "request", "reply", "channel", "private", "notify", "notice", "acks",
];

fn mail_kind(msg: &ChatMsg) -> Option<usize> {
    Some(match msg {
        ChatMsg::Request { .. } => 0,
        ChatMsg::Reply { .. } => 1,
        ChatMsg::Chan(_) => 2,
        ChatMsg::Private { .. } => 3,
        ChatMsg::Notify { .. }
        | ChatMsg::Standard(_)
        | ChatMsg::Guard { .. }
        | ChatMsg::Monitor { .. }
        | ChatMsg::HolderCheck { .. }
        | ChatMsg::HolderAnswer { .. }
        | ChatMsg::SessionCheck { .. }
        | ChatMsg::SessionAnswer { .. }
        | ChatMsg::ClusterNodes(_) => 4,
        ChatMsg::Notice(_) => 5,
        ChatMsg::Acks(_) => 6,
        // Come from the SIGHUP hook and the store's writer, not from a shard.
        ChatMsg::Rehash(_)
        | ChatMsg::StoreReport(_)
        | ChatMsg::HashDone(_)
        | ChatMsg::Store(_)
        | ChatMsg::OperChecked { .. } => return None,
    })
}

/// One shard's counters; only that shard writes them.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Lines received from this shard's clients and handled (every command,
    /// including unknown and malformed ones).
    pub commands: Counter,
    /// Event lines queued to this shard's clients: channel events (messages,
    /// JOIN, PART, KICK, TOPIC, MODE, INVITE), private messages, NICK and QUIT.
    pub deliveries: Counter,
    /// Clients that completed registration here.
    pub registrations: Counter,
    /// Gauge: registered clients on this shard.
    pub users: Counter,
    /// Gauge: clients on this shard, registered or not (including ones leaving).
    pub clients: Counter,
    /// Gauge: channels this shard owns.
    pub channels: Counter,
    /// Gauge: MONITOR (watcher, nick) pairs kept for the nicks this shard owns.
    pub monitor_watches: Counter,
    /// Gauge: 1 while this shard's cluster engine link is up.
    pub cluster_link_up: Counter,
    /// Gauge: the cluster's nodes this node sees up (itself included).
    pub cluster_nodes: Counter,
    /// Chat messages taken from other shards' mail, by kind ([`MAIL_KINDS`]).
    mail_received: [Counter; MAIL_KINDS.len()],
    /// Messages appended to histories this shard keeps.
    pub history_appends: Counter,
    /// Loop turns that handed appended records to the store's writer (at most
    /// one per turn, however many messages it appended).
    pub history_turns: Counter,
    /// SASL exchanges on this shard that logged the client in (903).
    pub sasl_success: Counter,
    /// SASL exchanges on this shard that failed (904).
    pub sasl_failure: Counter,
    /// Accounts registered with `REGISTER` by this shard's clients.
    pub accounts_registered: Counter,
    /// Password checks and hashes this shard's clients asked for that the
    /// hashing pool's full queue refused.
    pub hash_queue_full: Counter,
    /// The store's own counters, once it is open.
    store: OnceLock<Arc<StoreStats>>,
}

impl ShardStats {
    /// Shows the shard's store's counters with the shard's (set once, when
    /// the store opens).
    pub fn set_store(&self, stats: Arc<StoreStats>) {
        let _ = self.store.set(stats);
    }
}

/// Every shard's counters, shared by the shards and the admin endpoint. Each
/// shard adds its own when its handler is made (on its thread, before the server
/// reports it started) and keeps an `Arc` to it, so the lock is only taken at
/// startup and by the admin thread, never on a shard's hot path.
#[derive(Debug, Default)]
pub struct ChatStats {
    shards: PerShard<ShardStats>,
}

impl ChatStats {
    /// No shards yet.
    pub fn new() -> ChatStats {
        ChatStats::default()
    }

    /// New counters for shard `i` (replacing any it had), shared with the admin
    /// endpoint.
    pub fn add_shard(&self, i: usize) -> Arc<ShardStats> {
        self.shards.insert(i, ShardStats::default())
    }

    /// Writes every shard's counters, labelled `shard` (what `/metrics` shows after
    /// the framework's).
    pub fn render(&self, w: &mut PromWriter) {
        for (i, s) in self.shards.snapshot() {
            let shard = i.to_string();
            let l = [("shard", shard.as_str())];
            // Gauges kept with add/sub read as signed, so a bookkeeping slip would
            // show as a negative number rather than as 2^64.
            w.gauge(
                "shardline_chat_users",
                "Registered clients connected to this shard.",
                &l,
                s.users.get() as i64,
            );
            w.gauge(
                "shardline_chat_clients",
                "Clients connected to this shard, registered or not.",
                &l,
                s.clients.get(),
            );
            w.gauge(
                "shardline_chat_channels",
                "Channels this shard owns.",
                &l,
                s.channels.get(),
            );
            w.gauge(
                "shardline_chat_monitor_watches",
                "MONITOR (watcher, nick) pairs kept for the nicks this shard owns.",
                &l,
                s.monitor_watches.get(),
            );
            w.gauge(
                "shardline_chat_cluster_engine_up",
                "1 while this shard's link to the cluster engine is up (0 without a cluster).",
                &l,
                s.cluster_link_up.get(),
            );
            w.gauge(
                "shardline_chat_cluster_nodes",
                "The cluster's nodes this node sees up, itself included (0 without a cluster).",
                &l,
                s.cluster_nodes.get(),
            );
            w.counter(
                "shardline_chat_registrations_total",
                "Clients that completed registration on this shard.",
                &l,
                s.registrations.get(),
            );
            w.counter(
                "shardline_chat_commands_total",
                "Lines received from this shard's clients and handled (messages in).",
                &l,
                s.commands.get(),
            );
            w.counter(
                "shardline_chat_deliveries_total",
                "Event lines (channel events, private messages, NICK, QUIT) queued to this \
                 shard's clients (messages out).",
                &l,
                s.deliveries.get(),
            );
            for (k, kind) in MAIL_KINDS.iter().enumerate() {
                w.counter(
                    "shardline_chat_mail_received_total",
                    "Chat messages this shard took from other shards' mail, by kind.",
                    &[("shard", shard.as_str()), ("kind", kind)],
                    s.mail_received[k].get(),
                );
            }
            if let Some(store) = s.store.get() {
                w.counter(
                    "shardline_chat_sasl_success_total",
                    "SASL exchanges that logged a client of this shard in (903).",
                    &l,
                    s.sasl_success.get(),
                );
                w.counter(
                    "shardline_chat_sasl_failure_total",
                    "SASL exchanges of this shard's clients that failed (904).",
                    &l,
                    s.sasl_failure.get(),
                );
                w.counter(
                    "shardline_chat_accounts_registered_total",
                    "Accounts registered with REGISTER by this shard's clients.",
                    &l,
                    s.accounts_registered.get(),
                );
                w.counter(
                    "shardline_chat_hash_queue_full_total",
                    "Password checks or hashes refused because the hashing queue was full.",
                    &l,
                    s.hash_queue_full.get(),
                );
                w.counter(
                    "shardline_chat_history_appends_total",
                    "Messages appended to the histories this shard keeps.",
                    &l,
                    s.history_appends.get(),
                );
                w.counter(
                    "shardline_chat_history_turns_total",
                    "Loop turns that handed appended history to the store's writer thread.",
                    &l,
                    s.history_turns.get(),
                );
                store.render(w, i);
            }
        }
    }
}

impl ChatShard {
    /// Counts mail from shard `from` (deliveries are counted where they are queued,
    /// in `deliver.rs`).
    pub(crate) fn count_mail(&self, from: usize, msg: &ChatMsg) {
        if let Some(kind) = mail_kind(msg).filter(|_| from != self.me) {
            self.stats.mail_received[kind].add(1);
        }
    }
}
