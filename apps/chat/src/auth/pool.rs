//! The hashing pool: a few helper threads that run argon2 (and SCRAM's PBKDF2)
//! for the shards, so no shard's loop ever computes one (tens of milliseconds
//! each, see [`super::password`]).
//!
//! - **Bounded.** Jobs wait in one bounded queue (`[accounts] hash_queue`,
//!   default 64) shared by `[accounts] hash_threads` threads (default 1).
//!   [`HashPool::submit`] never blocks: when the queue is full it gives the
//!   job back, and the shard refuses the client at once (SASL 904, `FAIL
//!   REGISTER TEMPORARILY_UNAVAILABLE`) and counts it
//!   (`shardline_chat_hash_queue_full_total`). So a flood of unauthenticated
//!   `AUTHENTICATE`/`REGISTER` costs at most `hash_threads` cores and a
//!   queue of `hash_queue` jobs, never an unbounded backlog of CPU work; and
//!   each connection has at most one job at a time (its input waits for the
//!   answer, see `commands/account.rs`).
//! - **Answers go back through a `Remote`.** A finished job is posted to the
//!   shard that submitted it as [`ChatMsg::HashDone`], carrying the client's
//!   id and the query it answers; the shard drops an answer for a client that
//!   has left (ids are never reused) or a query the client no longer waits
//!   for. The `Remote` exists only once the server runs, so answers that come
//!   earlier are kept and posted by [`HashPool::install`] (under one lock: none
//!   is lost). A shard whose mailbox stays full makes the worker wait: the
//!   pool slows down rather than drop an answer a client waits for.
//! - **Stops cleanly.** Dropping the pool (the last shard handler holding it,
//!   when the server stops) closes the queue; each thread finishes its job,
//!   sees the queue closed and ends, and the drop joins them.
//!
//! Nothing here logs a password, a hash or a result's content.

use std::{
    fmt,
    sync::{
        mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
        Arc, Mutex, OnceLock,
    },
    thread::JoinHandle,
    time::Duration,
};

use shardline::{PostError, Remote, ShardId};
use tracing::{error, warn};

use super::{
    password::{HashError, Password, VerifyJob},
    record::Credentials,
};
use crate::mail::ChatMsg;

/// Default helper threads.
pub const DEFAULT_THREADS: usize = 1;
/// Default queue length (jobs waiting for a thread).
pub const DEFAULT_QUEUE: usize = 64;

/// What to compute.
#[derive(Debug)]
pub enum Work {
    /// Check a password against a stored hash (SASL PLAIN).
    Verify(VerifyJob),
    /// Make an account's credentials from a new password (REGISTER): the
    /// argon2 hash and the SCRAM-SHA-256 credential. `cheap`: test parameters.
    Credentials {
        /// The new password.
        password: Password,
        /// Tests only: the cheapest parameters.
        cheap: bool,
    },
}

/// A job: the work, and where its answer goes.
#[derive(Debug)]
pub struct Job {
    /// The shard that submitted it (the answer goes there).
    pub shard: usize,
    /// The client there.
    pub client: u64,
    /// The client's query this answers.
    pub query: u64,
    /// What to compute.
    pub work: Work,
}

/// What a job computed.
pub enum Outcome {
    /// [`Work::Verify`]: whether the password matched.
    Verified(Result<bool, HashError>),
    /// [`Work::Credentials`]: the new credentials.
    Credentials(Result<Credentials, HashError>),
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Verified(r) => f.debug_tuple("Verified").field(&r.is_ok()).finish(),
            Outcome::Credentials(r) => f.debug_tuple("Credentials").field(&r.is_ok()).finish(),
        }
    }
}

/// A finished job, posted back to its shard ([`ChatMsg::HashDone`]).
#[derive(Debug)]
pub struct HashDone {
    /// The client that asked.
    pub client: u64,
    /// The query it answers.
    pub query: u64,
    /// The result.
    pub outcome: Outcome,
}

/// Where finished jobs go: the server's `Remote` once it runs, and until
/// then a list [`HashPool::install`] posts.
#[derive(Debug, Default)]
struct Sink {
    remote: OnceLock<Remote<ChatMsg>>,
    early: Mutex<Vec<(usize, HashDone)>>,
}

/// How long one try to post into a full mailbox lasts before the next.
const POST_RETRY: Duration = Duration::from_secs(1);

impl Sink {
    fn deliver(&self, shard: usize, done: HashDone) {
        let remote = {
            let mut early = self.early.lock().unwrap_or_else(|p| p.into_inner());
            match self.remote.get() {
                Some(r) => r.clone(),
                None => {
                    early.push((shard, done));
                    return;
                }
            }
        };
        post(&remote, shard, done);
    }
}

fn post(remote: &Remote<ChatMsg>, shard: usize, done: HashDone) {
    post_until_taken(remote, shard, ChatMsg::HashDone(done), "a hashing result");
}

/// Posts a result a client waits for (from a helper thread), retrying while
/// the shard's mailbox stays full, so that it is never dropped while the server
/// runs; gives up only when the shard is gone (shutting down: nobody waits).
pub(crate) fn post_until_taken(
    remote: &Remote<ChatMsg>,
    shard: usize,
    mut msg: ChatMsg,
    what: &'static str,
) {
    loop {
        match remote.post_timeout(ShardId(shard), msg, POST_RETRY) {
            Ok(()) => return,
            Err(PostError::Full(m)) => {
                warn!(
                    shard,
                    what, "the shard's mailbox stays full: a result waits"
                );
                msg = m;
            }
            Err(_) => return,
        }
    }
}

/// The pool (see the module doc). Shared by the shards in an `Arc`.
pub struct HashPool {
    tx: Mutex<Option<SyncSender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    sink: Arc<Sink>,
    size: usize,
    capacity: usize,
}

impl fmt::Debug for HashPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashPool")
            .field("threads", &self.size)
            .field("queue", &self.capacity)
            .finish()
    }
}

impl HashPool {
    /// Starts `threads` helper threads (at least 1) with a queue of `queue`
    /// jobs (at least 1).
    pub fn new(threads: usize, queue: usize) -> std::io::Result<HashPool> {
        let (size, capacity) = (threads.max(1), queue.max(1));
        let (tx, rx) = sync_channel::<Job>(capacity);
        let rx = Arc::new(Mutex::new(rx));
        let sink = Arc::new(Sink::default());
        let mut handles = Vec::with_capacity(size);
        for i in 0..size {
            let (rx, sink) = (rx.clone(), sink.clone());
            let h = std::thread::Builder::new()
                .name(format!("chat-hash-{i}"))
                .spawn(move || worker(&rx, &sink))?;
            handles.push(h);
        }
        Ok(HashPool {
            tx: Mutex::new(Some(tx)),
            threads: Mutex::new(handles),
            sink,
            size,
            capacity,
        })
    }

    /// Connects the pool to the running server: answers go through `remote`
    /// from now on, and those that came before are posted now.
    pub fn install(&self, remote: Remote<ChatMsg>) {
        let early = {
            let mut early = self.sink.early.lock().unwrap_or_else(|p| p.into_inner());
            let _ = self.sink.remote.set(remote);
            std::mem::take(&mut *early)
        };
        if let Some(remote) = self.sink.remote.get() {
            for (shard, done) in early {
                post(remote, shard, done);
            }
        }
    }

    /// Queues `job` without blocking; gives it back if the queue is full (or
    /// the pool is stopping).
    #[allow(clippy::result_large_err)]
    pub fn submit(&self, job: Job) -> Result<(), Job> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = tx.as_ref() else {
            return Err(job);
        };
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => Err(job),
        }
    }
}

fn worker(rx: &Mutex<Receiver<Job>>, sink: &Sink) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            match rx.recv() {
                Ok(job) => job,
                // The pool was dropped: the queue is closed and empty.
                Err(_) => return,
            }
        };
        let Job {
            shard,
            client,
            query,
            work,
        } = job;
        let outcome = match work {
            Work::Verify(v) => Outcome::Verified(v.run()),
            Work::Credentials { password, cheap } => Outcome::Credentials(if cheap {
                Credentials::from_password_cheap(&password)
            } else {
                Credentials::from_password(&password)
            }),
        };
        if let Outcome::Verified(Err(e)) | Outcome::Credentials(Err(e)) = &outcome {
            // The error names the stored hash's problem, never the password.
            error!(shard, client, error = %e, "password hashing failed");
        }
        sink.deliver(
            shard,
            HashDone {
                client,
                query,
                outcome,
            },
        );
    }
}

impl Drop for HashPool {
    fn drop(&mut self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        let me = std::thread::current().id();
        for t in threads {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_gives_the_job_back_and_the_threads_stop() {
        let pool = HashPool::new(1, 1).unwrap();
        // Eight jobs submitted in microseconds, each taking milliseconds:
        // the thread has one, the queue holds one, the rest come back.
        let job = |q| Job {
            shard: 0,
            client: 1,
            query: q,
            work: Work::Credentials {
                password: Password::from("correct horse battery"),
                cheap: true,
            },
        };
        let mut refused = 0;
        for q in 0..8 {
            if pool.submit(job(q)).is_err() {
                refused += 1;
            }
        }
        // One running, one queued at most: the rest refused.
        assert!(refused >= 6, "refused {refused}");
        // Dropping joins the thread once it has finished what it took.
        drop(pool);
    }

    #[test]
    fn results_before_install_are_kept() {
        let pool = HashPool::new(2, 4).unwrap();
        for q in 0..3 {
            pool.submit(Job {
                shard: 0,
                client: 7,
                query: q,
                work: Work::Credentials {
                    password: Password::from("correct horse battery"),
                    cheap: true,
                },
            })
            .unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let n = pool.sink.early.lock().unwrap().len();
            if n == 3 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{n} results");
            std::thread::sleep(Duration::from_millis(5));
        }
        let early = pool.sink.early.lock().unwrap();
        assert!(early.iter().all(|(s, d)| *s == 0
            && d.client == 7
            && matches!(d.outcome, Outcome::Credentials(Ok(_)))));
    }
}
