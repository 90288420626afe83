//! Flood control by penalty ("fake lag", as in ircd-hybrid and ngircd).
//!
//! Each command a client sends moves its own clock ahead of real time by a fixed
//! cost. While it is less than `max_lag` ahead its commands run at once, so a
//! short burst (a paste, a reconnect's JOINs) costs nothing; past that its input
//! waits — unread lines stay buffered — until real time catches up, which paces
//! it to one command per cost. A client that keeps sending while it waits fills
//! that buffer, and past `max_backlog_bytes` it is disconnected ("Excess Flood").
//! Operators are exempt, and so is PONG. Off entirely when `[flood] enabled =
//! false` (benchmarks).

use std::time::{Duration, Instant};

/// A client's fake-lag clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct Penalty {
    /// How far its commands have run ahead: the instant its clock shows.
    until: Option<Instant>,
}

impl Penalty {
    /// Charges one command of `cost` run at `now`.
    pub fn charge(&mut self, now: Instant, cost: Duration) {
        let base = self.until.map_or(now, |u| u.max(now));
        self.until = Some(base + cost);
    }

    /// How long the client's next command must wait, if it is more than
    /// `max_lag` ahead of `now`.
    pub fn wait(&self, now: Instant, max_lag: Duration) -> Option<Duration> {
        let ahead = self.until?.checked_duration_since(now)?;
        (ahead > max_lag).then(|| ahead - max_lag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_free_then_paced() {
        let (cost, lag) = (Duration::from_millis(500), Duration::from_secs(2));
        let t0 = Instant::now();
        let mut p = Penalty::default();
        for _ in 0..4 {
            assert_eq!(p.wait(t0, lag), None);
            p.charge(t0, cost);
        }
        // Exactly max_lag ahead: still fine; one more and it waits one cost.
        assert_eq!(p.wait(t0, lag), None);
        p.charge(t0, cost);
        assert_eq!(p.wait(t0, lag), Some(cost));
        assert_eq!(p.wait(t0 + cost, lag), None);
        // Idle time is not banked: after a long pause the burst is the same.
        let later = t0 + Duration::from_secs(60);
        p.charge(later, cost);
        assert_eq!(p.wait(later, lag), None);
    }
}
