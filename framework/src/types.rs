//! The plain values every layer uses — ids, the backend, per-connection limits —
//! in a leaf module that depends on nothing else in the crate.

use std::{fmt, time::Duration};

/// Index of a shard, `0..shards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub usize);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A connection on one shard. Ids are generation-checked: an id kept after its
/// connection closed is rejected (`SendError::UnknownConn`), never aliased to a newer
/// connection in the same slot. Only meaningful on the shard that issued it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl ConnId {
    /// Generations are 24 bits so that (index, generation, op) fits an io_uring
    /// `user_data`.
    pub(crate) const GENERATION_MASK: u32 = 0x00ff_ffff;

    /// Packs the id into 56 bits (index in the low 32, generation above): the
    /// drivers' io_uring `user_data` payload and epoll token. Handlers keep ids in
    /// their timer payloads and connection states instead.
    pub(crate) fn to_bits(self) -> u64 {
        u64::from(self.index) | (u64::from(self.generation & Self::GENERATION_MASK) << 32)
    }

    /// Inverse of [`ConnId::to_bits`] (ignores bits 56..64).
    pub(crate) fn from_bits(bits: u64) -> ConnId {
        ConnId {
            index: bits as u32,
            generation: ((bits >> 32) as u32) & Self::GENERATION_MASK,
        }
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}.{}", self.index, self.generation)
    }
}

/// A listener's position in the order the builder was given them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(pub usize);

/// One of the server's listeners as every shard sees it ([`Ctx::listeners`](crate::Ctx::listeners)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerInfo {
    /// Its position in the builder's list.
    pub id: ListenerId,
    /// The address it is bound to (the resolved port when 0 was asked for).
    pub addr: std::net::SocketAddr,
    /// A TLS listener ([`ServerBuilder::listen_tls`](crate::ServerBuilder::listen_tls)).
    pub tls: bool,
}

/// The backend a shard actually runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// io_uring.
    Uring,
    /// epoll (through mio).
    Epoll,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Uring => "io_uring",
            Backend::Epoll => "epoll",
        })
    }
}

/// Write coalescing: when what callbacks queue to a connection is written
/// ([`ServerBuilder::coalesce`](crate::ServerBuilder::coalesce)). In every mode
/// output of 16 KiB or more, and output of a connection that is closing or
/// half-closing, goes at the end of the turn, and a connection with a send in
/// flight waits for it (its next send takes everything queued meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Coalesce {
    /// At the end of the loop turn that queued it (the default).
    #[default]
    Off,
    /// Held until its oldest unwritten byte has waited this long: every message
    /// waits up to the delay, even the first after a quiet spell.
    Delay(std::time::Duration),
    /// Adaptive: a connection gets at most one send per interval of its shard.
    /// Output for a connection not yet sent to in the current interval goes at
    /// the end of the turn (no added latency for a quiet connection); output
    /// for one already sent to waits for the interval to end and then goes in
    /// one send with everything queued meanwhile. A steady stream to a
    /// connection is written about once per interval, each message waiting on
    /// average half an interval (`Delay` makes it wait about one and a half
    /// delays for the same number of sends). Costs no memory per connection
    /// (one flag bit; the shard lists who was sent to).
    Pace(std::time::Duration),
}

impl Coalesce {
    /// The hold, and whether it counts from the last send (pacing) rather than
    /// from the oldest queued byte. A zero hold is no coalescing.
    pub(crate) fn hold(self) -> Option<(std::time::Duration, bool)> {
        match self {
            Coalesce::Off => None,
            Coalesce::Delay(d) => (!d.is_zero()).then_some((d, false)),
            Coalesce::Pace(d) => (!d.is_zero()).then_some((d, true)),
        }
    }
}

/// Per-connection limits. Every buffer a peer can make the server hold is bounded by
/// one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Queued outbound bytes at which `on_backpressure` is called.
    pub send_high_water: usize,
    /// Queued outbound bytes under which `on_drained` follows a backpressure notice.
    pub send_low_water: usize,
    /// Queued outbound bytes past which the connection is closed with
    /// `CloseReason::SendQueueFull`.
    pub send_hard_limit: usize,
    /// Unconsumed input a handler may leave before the connection is closed with
    /// `CloseReason::InputBufferFull`.
    pub max_input: usize,
    /// How long a closing connection may take to flush and see the peer's EOF.
    pub close_linger: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            send_high_water: 1 << 20,
            send_low_water: 256 << 10,
            send_hard_limit: 16 << 20,
            max_input: 1 << 20,
            close_linger: Duration::from_secs(5),
        }
    }
}
