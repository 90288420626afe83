//! Posting into the shards from any thread: [`Remote`].
//!
//! The shared-nothing rule is that a shard's state is touched only by its own
//! thread. A `Remote` keeps it: it never reaches into a shard, it only posts a
//! message into the shard's mailbox — the same bounded queues and eventfd
//! doorbells the shards use among themselves — and the shard's own thread hands
//! it to [`Handler::on_message`](crate::Handler::on_message) with
//! [`Origin::Remote`](crate::Origin::Remote).
//!
//! Outside threads are one more mailbox participant (after the shards and the
//! handoff acceptor): one queue per destination shard, which every clone of the
//! handle shares. The clones serialize their posts on one mutex, so each of those
//! queues keeps the one-producer shape the wake protocol and its single-writer
//! counters are written for; the mutex is never taken by a shard, so no shard ever
//! waits on it. Posting is never blocking and never drops: a full queue hands the
//! message back.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::ShutdownHandle;
use crate::{
    handler::ShardId,
    shard::{
        mailbox::{Full, Mailboxes},
        Envelope,
    },
};

/// Why [`Remote::post`] did not post. The message is handed back in both cases.
#[non_exhaustive]
pub enum PostError<M> {
    /// The shard's mailbox from outside threads is full: retry later (the shard
    /// drains it every loop turn), or use [`Remote::post_timeout`].
    Full(M),
    /// The server is shutting down or has stopped: nothing will read it.
    Stopped(M),
    /// No such shard (`to.0 >= shards()`).
    NoSuchShard(M),
}

impl<M> PostError<M> {
    /// The message that was not posted.
    pub fn into_inner(self) -> M {
        match self {
            PostError::Full(m) | PostError::Stopped(m) | PostError::NoSuchShard(m) => m,
        }
    }
}

impl<M> fmt::Debug for PostError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PostError::Full(_) => "Full(..)",
            PostError::Stopped(_) => "Stopped(..)",
            PostError::NoSuchShard(_) => "NoSuchShard(..)",
        })
    }
}

impl<M> fmt::Display for PostError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PostError::Full(_) => "the shard's mailbox is full",
            PostError::Stopped(_) => "the server is shutting down",
            PostError::NoSuchShard(_) => "no such shard",
        })
    }
}

impl<M> std::error::Error for PostError<M> {}

/// A handle that posts messages into any shard's
/// [`Handler::on_message`](crate::Handler::on_message) from any thread: `Send`, `Sync`, cheap to clone.
/// Get one from [`RunningServer::remote`](crate::RunningServer::remote); a
/// [`Server::on_hangup`](crate::Server::on_hangup) hook is given one.
pub struct Remote<M> {
    boxes: Arc<Mailboxes<Envelope<M>>>,
    /// The outside participant's index in the mailboxes.
    from: usize,
    shards: usize,
    lock: Arc<Mutex<()>>,
    shutdown: ShutdownHandle,
}

impl<M> Clone for Remote<M> {
    fn clone(&self) -> Self {
        Remote {
            boxes: self.boxes.clone(),
            from: self.from,
            shards: self.shards,
            lock: self.lock.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

impl<M> fmt::Debug for Remote<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

impl<M: Send> Remote<M> {
    pub(crate) fn new(
        boxes: Arc<Mailboxes<Envelope<M>>>,
        from: usize,
        shards: usize,
        shutdown: ShutdownHandle,
    ) -> Self {
        Remote {
            boxes,
            from,
            shards,
            lock: Arc::new(Mutex::new(())),
            shutdown,
        }
    }

    /// How many shards the server runs.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Posts `msg` to shard `to`; it arrives in that shard's `on_message` with
    /// `Origin::Remote`, after the messages this handle's clones posted to it
    /// before. Never blocks on a shard (only, briefly, on other threads posting
    /// through a clone). Refused once shutdown has begun: a message that races the
    /// very end of a shutdown may go down with the stopped server.
    pub fn post(&self, to: ShardId, msg: M) -> Result<(), PostError<M>> {
        if to.0 >= self.shards {
            return Err(PostError::NoSuchShard(msg));
        }
        if self.shutdown.is_requested() {
            return Err(PostError::Stopped(msg));
        }
        // A poisoned lock only means another poster panicked; the queues are fine.
        let _one_producer = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        match self.boxes.post(self.from, to.0, Envelope::User(msg)) {
            Ok(()) => Ok(()),
            Err(Full(Envelope::User(m))) => Err(PostError::Full(m)),
            Err(Full(Envelope::Conn(_))) => {
                unreachable!("a full mailbox returns the message it was given")
            }
        }
    }

    /// Like [`post`](Remote::post), but while the mailbox is full keeps retrying
    /// (sleeping between tries) for up to `timeout`.
    pub fn post_timeout(&self, to: ShardId, msg: M, timeout: Duration) -> Result<(), PostError<M>> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_micros(50);
        let mut msg = msg;
        loop {
            match self.post(to, msg) {
                Err(PostError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(
                        pause.min(deadline.saturating_duration_since(Instant::now())),
                    );
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                other => return other,
            }
        }
    }

    /// Posts a clone of `msg` to every shard, each with `post_timeout(timeout)`.
    /// Returns the shards that did not get theirs, with the reason and the copy.
    pub fn broadcast(&self, msg: M, timeout: Duration) -> Result<(), Vec<(ShardId, PostError<M>)>>
    where
        M: Clone,
    {
        let failed: Vec<_> = (0..self.shards)
            .filter_map(|s| {
                self.post_timeout(ShardId(s), msg.clone(), timeout)
                    .err()
                    .map(|e| (ShardId(s), e))
            })
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed)
        }
    }
}
