//! What one load run does: the shapes, the room layout, the spec a run gets and
//! the result it returns.

use std::{net::SocketAddr, time::Duration};

use anyhow::bail;
use serde::Serialize;

use super::irc::next_tag;
use crate::client::Latency;

/// Most messages one sender may send (sequence numbers are packed in 24 bits).
pub const MAX_MESSAGES_PER_SENDER: u64 = 1 << 24;

/// Most senders per room (sender indexes are packed in 8 bits).
pub const MAX_SENDERS: usize = 255;

/// The two load shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// Senders write as fast as the server takes it, a bounded count.
    Burst,
    /// Senders at a fixed rate each, open loop, a bounded duration.
    Paced,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Shape::Burst => "burst",
            Shape::Paced => "paced",
        })
    }
}

/// Room layout and load, the same for every server.
#[derive(Debug, Clone, Serialize)]
pub struct Scenario {
    /// Rooms (R).
    pub rooms: usize,
    /// Members per room (S), senders included.
    pub room_size: usize,
    /// burst: senders per room.
    pub burst_senders: usize,
    /// burst: messages per sender.
    pub burst_messages: u64,
    /// paced: senders per room.
    pub paced_senders: usize,
    /// paced: messages per second per sender.
    pub paced_rate: f64,
    /// paced: how long the senders send, seconds.
    pub paced_duration_s: f64,
    /// Bytes of message text (the part after `PRIVMSG #room :`).
    pub text_size: usize,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            rooms: 1,
            room_size: 100,
            burst_senders: 1,
            burst_messages: 10_000,
            paced_senders: 10,
            paced_rate: 100.0,
            paced_duration_s: 3.0,
            text_size: 64,
        }
    }
}

impl Scenario {
    /// The load of one shape against `addr`.
    pub fn load(&self, shape: Shape, addr: SocketAddr, timeout: Duration) -> LoadSpec {
        LoadSpec {
            addr,
            also: Vec::new(),
            rooms: self.rooms,
            room_size: self.room_size,
            senders: match shape {
                Shape::Burst => self.burst_senders,
                Shape::Paced => self.paced_senders,
            },
            text_size: self.text_size,
            pattern: match shape {
                Shape::Burst => Pattern::Burst {
                    messages: self.burst_messages,
                },
                Shape::Paced => Pattern::Paced {
                    rate: self.paced_rate,
                    duration: Duration::from_secs_f64(self.paced_duration_s),
                },
            },
            timeout,
            cpus: Vec::new(),
            tag: next_tag(),
        }
    }
}

/// How senders send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    /// `messages` each, as fast as the server takes them.
    Burst {
        /// Messages per sender.
        messages: u64,
    },
    /// `rate` messages per second each for `duration`.
    Paced {
        /// Messages per second per sender.
        rate: f64,
        /// How long.
        duration: Duration,
    },
}

impl Pattern {
    /// Messages each sender sends.
    pub fn per_sender(&self) -> u64 {
        match *self {
            Pattern::Burst { messages } => messages,
            Pattern::Paced { rate, duration } => (rate * duration.as_secs_f64()).round() as u64,
        }
    }

    pub(super) fn shape(&self) -> Shape {
        match self {
            Pattern::Burst { .. } => Shape::Burst,
            Pattern::Paced { .. } => Shape::Paced,
        }
    }
}

/// One load run against a running server.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The IRC server.
    pub addr: SocketAddr,
    /// More addresses of the same network (a cluster's other nodes): client
    /// *i* connects to `[addr, also...][i % (1 + also.len())]`.
    pub also: Vec<SocketAddr>,
    /// Rooms.
    pub rooms: usize,
    /// Members per room.
    pub room_size: usize,
    /// Senders per room (the room's first members).
    pub senders: usize,
    /// Bytes of message text.
    pub text_size: usize,
    /// Burst or paced.
    pub pattern: Pattern,
    /// How long deliveries may take after the last message was due (burst: after
    /// the window opened).
    pub timeout: Duration,
    /// CPUs the client thread is pinned to (empty: not pinned).
    pub cpus: Vec<usize>,
    /// Prefix of nicks and channel names, unique per run on one server (a letter
    /// first).
    pub tag: String,
}

impl LoadSpec {
    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if self.rooms == 0 || self.room_size < 2 {
            bail!("need at least one room of at least two members");
        }
        if self.senders == 0 || self.senders >= self.room_size {
            bail!(
                "senders per room must be between 1 and room size - 1 (one member at least only listens); got {} of {}",
                self.senders,
                self.room_size
            );
        }
        if self.senders > MAX_SENDERS {
            bail!("at most {MAX_SENDERS} senders per room");
        }
        let n = self.pattern.per_sender();
        if n == 0 || n >= MAX_MESSAGES_PER_SENDER {
            bail!("messages per sender must be between 1 and {MAX_MESSAGES_PER_SENDER}; got {n}");
        }
        if let Pattern::Paced { rate, .. } = self.pattern {
            if !(rate.is_finite() && rate > 0.0) {
                bail!("the paced rate must be a positive number of messages per second");
            }
        }
        let overhead = format!("PRIVMSG #{}r{} :\r\n", self.tag, self.rooms).len();
        if self.text_size < 40 || self.text_size + overhead > 510 {
            bail!(
                "text size must be 40..={} bytes (room for the numbers, and a 512-byte line)",
                510 - overhead
            );
        }
        Ok(())
    }
}

/// What one load run measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    /// burst or paced.
    pub shape: Shape,
    /// Clients (R·S).
    pub clients: usize,
    /// Rooms.
    pub rooms: usize,
    /// Members per room.
    pub room_size: usize,
    /// Senders per room.
    pub senders: usize,
    /// Messages written completely by all senders.
    pub messages_sent: u64,
    /// Messages received by members (each member's copy counts once; duplicates
    /// and a sender's own messages do not count).
    pub deliveries: u64,
    /// Deliveries a complete run makes: each message × the other members of its
    /// room.
    pub expected_deliveries: u64,
    /// From the first send to the end of the window, seconds.
    pub window_s: f64,
    /// deliveries ÷ window_s.
    pub deliveries_per_s: f64,
    /// Delivery latency: arrival at a member − the message's TS (burst: write time;
    /// paced: due time).
    pub latency: Latency,
    /// Every member saw every message once, and all members of a room one order.
    pub complete: bool,
    /// Expected deliveries that never arrived (disconnected members included).
    pub lost: u64,
    /// Messages a member received more than once.
    pub duplicates: u64,
    /// Members whose order disagrees with the rest of their room.
    pub members_out_of_order: usize,
    /// Members the server disconnected (or that failed) during the window.
    pub disconnected: usize,
    /// Lines the client did not expect during the window (error numerics, a
    /// sender's own message, malformed text), first one in `problems`.
    pub unexpected_lines: u64,
    /// The first few problems, in words.
    pub problems: Vec<String>,
    /// Why the window closed: `complete`, `timeout`, `stall`, `all disconnected`.
    pub stop: String,
    /// Seconds from the first connect to the end of the barrier.
    pub setup_s: f64,
    /// The client thread's CPU time over the window ÷ the window, in percent.
    pub client_cpu_pct: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_validated() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let sc = Scenario::default();
        let ok = sc.load(Shape::Burst, addr, Duration::from_secs(1));
        ok.validate().unwrap();
        let mut bad = ok.clone();
        bad.senders = bad.room_size;
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.text_size = 10;
        assert!(bad.validate().is_err());
        let mut bad = ok;
        bad.pattern = Pattern::Paced {
            rate: 0.0,
            duration: Duration::from_secs(1),
        };
        assert!(bad.validate().is_err());
        let p = sc.load(Shape::Paced, addr, Duration::from_secs(1));
        assert_eq!(p.pattern.per_sender(), 300);
    }
}
