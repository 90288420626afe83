//! Zero-downtime upgrades with a data directory: the running server hands its
//! store over to the new process ([`shardline::upgrade::HandoverState`]).
//!
//! The data directory is locked by the process that writes it, and the new
//! process must open it before it serves (SASL needs the accounts). So the new
//! process asks for it after receiving the listening sockets
//! ([`shardline::upgrade::Takeover::request_state`]), and this process:
//!
//! 1. tells every shard to detach its store ([`crate::store::Store::detach`]):
//!    the shard hands its last records to its writer thread and goes on
//!    serving from memory;
//! 2. waits, here on the upgrade thread, until every writer has written and
//!    synced all it had (compactions included) and stopped;
//! 3. unlocks the directory. The new process opens it and sees everything.
//!
//! Until it exits, this process's remaining sessions keep chatting. CHATHISTORY
//! answers from memory; what is said here from now on is delivered but not
//! stored (the new process owns the files); REGISTER is refused with
//! `FAIL REGISTER TEMPORARILY_UNAVAILABLE`; SASL checks the accounts as they
//! were at the handover. Clients that reconnect reach the new process.
//!
//! If the upgrade fails after that (the new process exits or times out before
//! serving), [`HandoverState::reclaim`] locks the directory again, opens every
//! shard's store from disk (here, off the shards) and hands each to its shard,
//! which appends the messages said meanwhile (held in memory, up to the
//! store's `max_unwritten` bound) and stores again.

use std::{
    sync::{mpsc, Arc},
    time::Duration,
};

use shardline::{upgrade::HandoverState, PostError, Remote, ShardId};
use tracing::{error, info, warn};

use crate::{
    history::Storage,
    mail::{ChatMsg, StoreControl},
    store::{Store, StoreError, StoreOptions},
};

/// How long a shard may take to answer a detach request.
const ANSWER: Duration = Duration::from_secs(30);
/// How long a failed successor may keep the directory locked while it exits.
const RELOCK: Duration = Duration::from_secs(10);

/// The chat's store, to hand over at an upgrade (see the module doc). Made by
/// [`crate::ChatServer::store_handover`], connected to the running server
/// with [`StoreHandover::connect`].
#[derive(Debug)]
pub struct StoreHandover {
    storage: Arc<Storage>,
}

impl StoreHandover {
    pub(crate) fn new(storage: Arc<Storage>) -> StoreHandover {
        StoreHandover { storage }
    }

    /// The handover for the running server whose shards `remote` reaches.
    pub fn connect(self, remote: Remote<ChatMsg>) -> Box<dyn HandoverState> {
        Box::new(Connected {
            storage: self.storage,
            remote,
        })
    }
}

struct Connected {
    storage: Arc<Storage>,
    remote: Remote<ChatMsg>,
}

impl Connected {
    fn post(&self, shard: usize, msg: ChatMsg) -> Result<(), String> {
        match self.remote.post_timeout(ShardId(shard), msg, ANSWER) {
            Ok(()) => Ok(()),
            Err(PostError::Full(_)) => Err(format!("shard {shard}'s mailbox stayed full")),
            Err(_) => Err("the server is stopping".into()),
        }
    }

    /// Opens the stores of `shards` again from disk and hands each to its
    /// shard.
    fn attach(&self, shards: &[usize]) {
        let total = self.remote.shards();
        for &shard in shards {
            let sink = self.storage.sink.clone();
            let notify = Box::new(move |r| sink.notify(shard, r));
            let options: StoreOptions = self.storage.options.clone();
            match Store::open(&self.storage.dir, shard, total, options, notify) {
                Ok(store) => {
                    let msg = ChatMsg::Store(StoreControl::Attach(Box::new(store)));
                    if let Err(e) = self.post(shard, msg) {
                        error!(shard, error = %e, "cannot give the shard its store back; its history is not stored until a restart");
                    }
                }
                Err(e) => {
                    error!(shard, error = %e, "cannot open the store again; this shard's history is not stored until a restart")
                }
            }
        }
    }
}

impl HandoverState for Connected {
    fn release(&mut self) -> Result<(), String> {
        let mut stopping = Vec::new();
        let mut failure = None;
        for shard in 0..self.remote.shards() {
            let (tx, rx) = mpsc::sync_channel(1);
            if let Err(e) = self.post(shard, ChatMsg::Store(StoreControl::Detach(tx))) {
                failure = Some(e);
                break;
            }
            match rx.recv_timeout(ANSWER) {
                Ok(Some(writer)) => stopping.push((shard, writer)),
                Ok(None) => {}
                Err(_) => {
                    failure = Some(format!("shard {shard} did not detach its store in time"));
                    break;
                }
            }
        }
        let detached: Vec<usize> = stopping.iter().map(|(s, _)| *s).collect();
        for (shard, writer) in stopping {
            if let Err(e) = writer.wait() {
                failure.get_or_insert(format!("shard {shard}'s store writer: {e}"));
            }
        }
        if let Some(why) = failure {
            warn!(%why, "cannot hand the data directory over; storing again");
            self.attach(&detached);
            return Err(why);
        }
        self.storage.dir.unlock();
        info!(
            dir = %self.storage.dir.path().display(),
            "data directory written out and unlocked for the new process"
        );
        Ok(())
    }

    fn reclaim(&mut self) {
        // A successor that failed after opening the directory may still be
        // exiting (its descriptors close one after another): let it finish.
        let deadline = std::time::Instant::now() + RELOCK;
        loop {
            match self.storage.dir.relock() {
                Ok(()) => break,
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    error!(error = %e, "cannot take the data directory back; history is not stored until a restart");
                    return;
                }
            }
        }
        info!("data directory locked again: the upgrade failed; reopening the stores");
        let all: Vec<usize> = (0..self.remote.shards()).collect();
        self.attach(&all);
    }
}
