//! What a failed accept means, decided here once for every accept mode, both
//! drivers and the handoff acceptor. Whoever calls accept only reports a failure;
//! [`AcceptPolicy`] decides when to accept again.
//!
//! - A connection that failed on its own (EINTR, ECONNABORTED: the peer gave up
//!   while queued) is not a failure of the listener: accept again at once
//!   ([`retry_at_once`]), nothing is reported.
//! - Anything else pauses accepting on every listener of the caller for [`BACKOFF`].
//!   Above all running out of fds (EMFILE/ENFILE) or memory: the next accept would
//!   fail the same way at once, a busy loop, while the existing connections — served
//!   meanwhile — free fds as they close. An error not known to be transient is
//!   treated the same way rather than retried in a loop. A driver stops accepting on
//!   a listener whose accept failed; the caller resumes it when the pause ends.
//! - One warning when a failing episode begins, one line when accepting works again.

use std::{
    fmt, io,
    time::{Duration, Instant},
};

use tracing::{info, warn};

/// How long accepting pauses after a failed accept.
pub(crate) const BACKOFF: Duration = Duration::from_millis(100);

/// Whether an accept error concerns only the connection being accepted: accept the
/// next one at once, and report nothing.
pub(crate) fn retry_at_once(errno: i32) -> bool {
    matches!(errno, libc::EINTR | libc::ECONNABORTED)
}

/// Who accepts, for the logs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Acceptor {
    Shard(usize),
    Handoff,
}

impl fmt::Display for Acceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Acceptor::Shard(n) => write!(f, "shard {n}"),
            Acceptor::Handoff => f.write_str("handoff acceptor"),
        }
    }
}

/// One accepting party's failure state: whether it is paused, and the episode of
/// failures it is in.
#[derive(Debug)]
pub(crate) struct AcceptPolicy {
    who: Acceptor,
    paused_until: Option<Instant>,
    /// Failed accepts in the current episode (0: not in one).
    failing: u64,
}

impl AcceptPolicy {
    pub(crate) fn new(who: Acceptor) -> AcceptPolicy {
        AcceptPolicy {
            who,
            paused_until: None,
            failing: 0,
        }
    }

    /// An accept failed at `now`: pause accepting (see the module doc).
    pub(crate) fn on_error(&mut self, err: &io::Error, now: Instant) {
        if err.raw_os_error().is_some_and(retry_at_once) {
            return;
        }
        if self.failing == 0 {
            warn!(
                acceptor = %self.who,
                error = %err,
                "accept failing; pausing accepts and serving existing connections"
            );
        }
        self.failing += 1;
        self.paused_until = Some(now + BACKOFF);
    }

    /// An accept succeeded: ends a failing episode.
    pub(crate) fn on_success(&mut self) {
        if self.failing > 0 {
            info!(
                acceptor = %self.who,
                failed = self.failing,
                "accepting again after accept failures"
            );
            self.failing = 0;
        }
    }

    /// Whether accepting is paused at `now` (a pause that ended is forgotten).
    pub(crate) fn paused(&mut self, now: Instant) -> bool {
        if self.paused_until.is_some_and(|t| now >= t) {
            self.paused_until = None;
        }
        self.paused_until.is_some()
    }

    /// When the current pause ends: the caller must look again then.
    pub(crate) fn resume_at(&self) -> Option<Instant> {
        self.paused_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_fds_pauses_until_the_backoff_ends() {
        let mut p = AcceptPolicy::new(Acceptor::Shard(0));
        let t0 = Instant::now();
        assert!(!p.paused(t0));
        p.on_error(&io::Error::from_raw_os_error(libc::EMFILE), t0);
        assert!(p.paused(t0));
        assert_eq!(p.resume_at(), Some(t0 + BACKOFF));
        assert!(p.paused(t0 + BACKOFF / 2));
        assert!(!p.paused(t0 + BACKOFF));
        assert_eq!(p.resume_at(), None);
        assert_eq!(p.failing, 1);
        p.on_success();
        assert_eq!(p.failing, 0);
    }

    #[test]
    fn a_connection_that_failed_alone_does_not_pause() {
        let mut p = AcceptPolicy::new(Acceptor::Handoff);
        let t0 = Instant::now();
        p.on_error(&io::Error::from_raw_os_error(libc::ECONNABORTED), t0);
        assert!(!p.paused(t0));
        assert_eq!(p.failing, 0);
    }

    #[test]
    fn every_other_error_pauses_too() {
        let mut p = AcceptPolicy::new(Acceptor::Shard(1));
        let t0 = Instant::now();
        p.on_error(&io::Error::from_raw_os_error(libc::EINVAL), t0);
        assert!(p.paused(t0));
        p.on_error(&io::Error::from_raw_os_error(libc::ENFILE), t0 + BACKOFF);
        assert_eq!(p.resume_at(), Some(t0 + 2 * BACKOFF));
        assert_eq!(p.failing, 2);
    }
}
