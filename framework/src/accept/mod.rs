//! How connections reach shards. Three modes, one result: `on_accept` on a shard.
//!
//! - [`AcceptMode::ReusePort`]: every shard binds its own SO_REUSEPORT listener and the
//!   kernel spreads connections by 4-tuple hash. No handoff; uneven with few
//!   long-lived connections.
//! - [`AcceptMode::Exclusive`]: one listener; every shard waits on it through a
//!   private epoll fd with EPOLLEXCLUSIVE, so one shard is woken per connection.
//! - [`AcceptMode::Handoff`]: one acceptor thread accepts and hands each connection to a
//!   shard through its mailbox, round-robin or to the least-loaded shard.
//!
//! Every mode honours a per-shard connection cap by *not accepting* (connections
//! wait in the kernel backlog) rather than accepting and closing, backs off on
//! EMFILE/ENFILE without spinning (one policy for all: [`policy`]), and shuts down without losing a connection the
//! kernel already accepted: every listener stops first (a barrier across shards and
//! the acceptor), then each backlog is drained and served, then listeners close.
//!
//! This module must never close a listener while another participant may still
//! be told to drain it, and never busy-loop on a failing accept.

pub(crate) mod exclusive;
pub(crate) mod handoff;
pub(crate) mod policy;
pub(crate) mod reuseport;
pub(crate) mod shard;

/// An accepted connection and the index of the listener that took it.
pub(crate) type Handed = (usize, std::os::fd::OwnedFd);

use std::{fmt, str::FromStr};

/// How connections reach shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AcceptMode {
    /// One SO_REUSEPORT listener per shard.
    #[default]
    ReusePort,
    /// One listener watched by every shard with EPOLLEXCLUSIVE.
    Exclusive,
    /// One acceptor thread handing connections to shards.
    Handoff(Balance),
}

/// How the handoff acceptor picks a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// Next shard in order (skipping shards at their connection cap).
    #[default]
    RoundRobin,
    /// The shard with the fewest live connections (counting handoffs in flight).
    LeastConnections,
}

impl FromStr for AcceptMode {
    type Err = String;
    fn from_str(s: &str) -> Result<AcceptMode, String> {
        match s.to_ascii_lowercase().as_str() {
            "reuseport" => Ok(AcceptMode::ReusePort),
            "exclusive" => Ok(AcceptMode::Exclusive),
            "handoff" | "handoff-rr" | "handoff:round-robin" => {
                Ok(AcceptMode::Handoff(Balance::RoundRobin))
            }
            "handoff-least" | "handoff:least-connections" => {
                Ok(AcceptMode::Handoff(Balance::LeastConnections))
            }
            other => Err(format!(
                "unknown accept mode {other:?} (expected reuseport, exclusive, handoff \
                 (round-robin) or handoff-least (least connections))"
            )),
        }
    }
}

impl fmt::Display for AcceptMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AcceptMode::ReusePort => "reuseport",
            AcceptMode::Exclusive => "exclusive",
            AcceptMode::Handoff(Balance::RoundRobin) => "handoff",
            AcceptMode::Handoff(Balance::LeastConnections) => "handoff-least",
        })
    }
}
