//! Flushing outbound queues (one vectored send per connection, with optional
//! write coalescing) and issuing splice fills.

use std::time::Instant;

use super::{conn::Phase, core::Core, driver::Driver, recycle, Shard, FLUSH_EARLY_BYTES};
use crate::handler::Handler;

impl<H: Handler> Shard<H> {
    /// Issues the fills relays are ready for: source open and read, no fill in
    /// flight, room in the pipe.
    pub(super) fn fill_relays(core: &mut Core, driver: &mut dyn Driver) {
        let mut list = std::mem::take(&mut core.to_fill);
        for id in list.drain(..) {
            let Some(conn) = core.get(id) else { continue };
            let Some(key) = conn.relay_out().map(|k| k as usize) else {
                continue;
            };
            if conn.phase != Phase::Open || !conn.reading() || conn.eof() {
                continue;
            }
            let fd = conn.socket.raw_fd();
            let Some(r) = core.relays.get_mut(key) else {
                continue;
            };
            if r.filling || r.pipe_full || r.eof || r.room() == 0 {
                continue;
            }
            r.filling = true;
            driver.splice_in(id, fd, r.pipe.write_fd(), r.room());
        }
        recycle(&mut core.to_fill, list);
    }

    pub(super) fn flush(&mut self) {
        let Shard { core, driver, .. } = self;
        let mut list = std::mem::take(&mut core.to_flush);
        let hold = core.coalesce;
        let now = hold.map(|_| Instant::now());
        if let (Some(now), Some((interval, true))) = (now, hold) {
            core.roll_pace_interval(now, interval);
        }
        let pace_ends = core.pace_ends;
        let mut due_first: Option<Instant> = None;
        // Keeps (in place, no allocation) the connections held back for a later
        // turn; they stay flush_listed.
        list.retain(|&id| {
            let Some(conn) = core.get_mut(id) else {
                return false;
            };
            if conn.sending() || conn.phase == Phase::Connecting {
                conn.set_flush_listed(false);
                return false;
            }
            // A TLS connection's plaintext counts once its handshake is done.
            let sendable = conn.out.len() + conn.tls.as_ref().map_or(0, |t| t.encryptable());
            if sendable == 0 {
                conn.set_flush_listed(false);
                let (relay_in, fd) = (conn.relay_in().map(|k| k as usize), conn.socket.raw_fd());
                // Nothing queued: the turn of the pipe relayed into it, if any.
                let relay = relay_in.and_then(|k| core.relays.get(k));
                if let Some(r) = relay.filter(|r| r.in_pipe > 0) {
                    let (pipe_r, len) = (r.pipe.read_fd(), r.in_pipe);
                    if let Some(conn) = core.get_mut(id) {
                        conn.set_sending(true);
                        conn.set_draining(true);
                    }
                    driver.splice_out(id, fd, pipe_r, len);
                }
                return false;
            }
            if let (Some(now), Some((delay, pacing))) = (now, hold) {
                // Write coalescing: hold small output until it is due, unless the
                // connection is on its way out. Pacing: due when the interval
                // ends if it was sent to in it, else now. Delay: when its oldest
                // byte has waited the delay.
                let due = if pacing {
                    match pace_ends {
                        Some(end) if conn.paced() => end,
                        _ => now,
                    }
                } else {
                    conn.queued_at().map_or(now, |t| t + delay)
                };
                let urgent = sendable >= FLUSH_EARLY_BYTES
                    || conn.phase != Phase::Open
                    || conn.shut_pending();
                if due > now && !urgent {
                    due_first = Some(due_first.map_or(due, |d| d.min(due)));
                    return true;
                }
            }
            conn.set_flush_listed(false);
            conn.send_queue().clear_queued_at();
            let newly_paced = matches!(hold, Some((_, true))) && !conn.paced();
            conn.set_paced(conn.paced() || newly_paced);
            if let Some(tls) = conn.tls.as_mut() {
                // Everything sent this turn becomes as few records as fit.
                tls.encrypt(&mut conn.out);
            }
            conn.set_sending(true);
            driver.send(id, conn.socket.raw_fd(), conn.out.next_batch());
            if newly_paced {
                core.paced.push(id);
            }
            false
        });
        core.flush_due = due_first;
        Self::fill_relays(core, &mut **driver);
        // Sending queues no callbacks, so nothing was listed meanwhile.
        debug_assert!(core.to_flush.is_empty());
        core.to_flush = list;
    }
}
