//! OPER against argon2 hashes, off the shards' loops, and the
//! `--hash-password` command that makes such a hash.
//!
//! A configured operator password is either an argon2 PHC string or
//! plaintext ([`super::password::OperPassword`]). Plaintext is compared on the shard at once
//! (constant time). A hash takes tens of milliseconds to verify (see
//! [`super::password::HASH_COST_NOTE`]), which no shard loop may spend, so
//! the shard hands the check to [`OperChecker`]: one helper thread, started
//! at the first hashed OPER, with a queue of at most [`QUEUE`] checks. A full
//! queue is refused at once (the client gets 263, try again) rather than
//! waiting. The thread posts each result back to the asking shard through the
//! server's `Remote` ([`ChatMsg::OperChecked`]); the client's input waits for
//! it meanwhile, like for any request.
//!
//! [`OperChecker::submit`] is the whole interface the shard uses: a general
//! argon2 worker pool (for SASL) can replace the thread behind it without
//! changing the shard's side.

use std::{
    fmt,
    panic::{catch_unwind, AssertUnwindSafe},
    sync::{
        mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
        Arc, OnceLock,
    },
    thread,
};

use shardline::Remote;
use tracing::error;

use super::{
    cli::{CliError, PasswordSource},
    password::{hash_password, verify_password, Password, PasswordPolicy},
};
use crate::mail::ChatMsg;

/// The most OPER checks waiting for the helper thread.
pub const QUEUE: usize = 16;

/// One check: does `password` match any of `hashes`?
struct Job {
    shard: usize,
    id: u64,
    password: Password,
    hashes: Vec<String>,
}

/// Why a check was not taken: the client should try again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// The OPER checks' helper thread and its way back into the shards. One per
/// server, shared by every shard.
#[derive(Default)]
pub struct OperChecker {
    /// The way back, set once the server runs ([`OperChecker::install`]).
    remote: Arc<OnceLock<Remote<ChatMsg>>>,
    /// The queue to the thread, made with it at the first check (`None` if
    /// the thread could not be started).
    queue: OnceLock<Option<SyncSender<Job>>>,
}

impl fmt::Debug for OperChecker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperChecker")
            .field("installed", &self.remote.get().is_some())
            .field("started", &self.queue.get().is_some())
            .finish()
    }
}

impl OperChecker {
    /// Makes `remote` the way results go back (once the server runs).
    pub fn install(&self, remote: Remote<ChatMsg>) {
        let _ = self.remote.set(remote);
    }

    /// Queues a check of `password` against `hashes` for client `id` of
    /// `shard`; its result comes as [`ChatMsg::OperChecked`] to that shard.
    /// Never blocks. `Err(Busy)` if the queue is full, the thread could not
    /// start, or there is no way back yet (the server does not run).
    pub fn submit(
        &self,
        shard: usize,
        id: u64,
        password: Password,
        hashes: Vec<String>,
    ) -> Result<(), Busy> {
        if self.remote.get().is_none() {
            return Err(Busy);
        }
        let queue = self.queue.get_or_init(|| self.start());
        let Some(queue) = queue else {
            return Err(Busy);
        };
        let job = Job {
            shard,
            id,
            password,
            hashes,
        };
        match queue.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(Busy),
        }
    }

    fn start(&self) -> Option<SyncSender<Job>> {
        let (tx, rx) = sync_channel(QUEUE);
        let remote = self.remote.clone();
        match thread::Builder::new()
            .name("chat-oper-check".into())
            .spawn(move || run(&rx, &remote))
        {
            Ok(_) => Some(tx),
            Err(e) => {
                error!(error = %e, "cannot start the OPER check thread: hashed OPER passwords are refused");
                None
            }
        }
    }
}

/// The helper thread: runs checks until every sender is gone (the server
/// stopped and its shards were dropped).
fn run(rx: &Receiver<Job>, remote: &OnceLock<Remote<ChatMsg>>) {
    for job in rx {
        let password = job.password;
        let hashes = job.hashes;
        let granted = catch_unwind(AssertUnwindSafe(|| {
            hashes
                .iter()
                .any(|h| verify_password(password.as_bytes(), h).unwrap_or(false))
        }))
        .unwrap_or(false);
        // Submit refuses checks before the remote is installed.
        let Some(remote) = remote.get() else {
            continue;
        };
        let msg = ChatMsg::OperChecked {
            id: job.id,
            granted,
        };
        super::pool::post_until_taken(remote, job.shard, msg, "an OPER result");
    }
}

/// `shardline-chat --hash-password`: reads a password from `stdin` (twice
/// when a person types it) and returns its argon2id PHC string, with a
/// newline, for `[[operators]] password`. The password may be anything an
/// OPER line can carry: 1 to 300 bytes, no NUL, CR or LF.
pub fn hash_password_command(stdin: &mut dyn PasswordSource) -> Result<String, CliError> {
    let policy = PasswordPolicy {
        min_len: 1,
        max_len: 300,
    };
    let password = stdin.read_password("Password: ")?;
    policy.check(password.as_bytes())?;
    if stdin.interactive() {
        let again = stdin.read_password("Again: ")?;
        if again != password {
            return Err(CliError::Mismatch);
        }
    }
    let phc = hash_password(password.as_bytes())?;
    Ok(format!("{phc}\n"))
}

/// Reads standard input as [`hash_password_command`] does ([`super::cli::Terminal`]).
pub fn hash_password_stdin() -> Result<String, CliError> {
    hash_password_command(&mut super::cli::Terminal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::password::verify_password;

    #[test]
    fn hash_password_command_makes_a_verifiable_hash() {
        let out = hash_password_command(&mut &b"s3cret pass\n"[..]).unwrap();
        let phc = out.strip_suffix('\n').unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_eq!(verify_password(b"s3cret pass", phc), Ok(true));
        assert_eq!(verify_password(b"s3cret", phc), Ok(false));
        // Nothing, or a NUL, is refused.
        assert!(hash_password_command(&mut &b""[..]).is_err());
        assert!(hash_password_command(&mut &b"\n"[..]).is_err());
        assert!(hash_password_command(&mut &b"a\0b\n"[..]).is_err());
    }

    #[test]
    fn no_checks_before_the_server_runs() {
        let checker = OperChecker::default();
        assert_eq!(
            checker.submit(0, 1, Password::from("x"), vec!["$argon2id$x".into()]),
            Err(Busy)
        );
    }
}
