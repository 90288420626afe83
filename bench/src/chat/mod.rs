//! `chat`: IRC fan-out load against shardline-chat (io_uring and epoll), ngircd and
//! InspIRCd, interleaved A B C … A B C over rounds, medians quoted.
//!
//! C = R·S clients join R rooms of S members. The first few members of each room
//! are senders; every other member only listens. Each client registers (`NICK`,
//! `USER`, waits for 001), joins its room (waits for 366), and once every client
//! has joined, each sends a `PING` and waits for its `PONG` (a barrier: on
//! shardline-chat the PONG comes after every earlier effect, on every shard). Then
//! the measured window opens and the senders send `PRIVMSG #room :SID SEQ TS xxx…`:
//! SID the sender's client index, SEQ its own sequence number from 0, TS the
//! harness's monotonic clock in ns (one clock for the whole single-process harness).
//!
//! - **burst**: every sender writes its `messages` as fast as the server takes them
//!   (the socket says when it is full); TS is when the line was written.
//! - **paced**: every sender sends `rate` messages per second for `duration`, open
//!   loop: message *k* is due at `start + (k + j/N)/rate` (senders staggered), and
//!   TS is the due time, so a stall (server or client) shows up in every message
//!   that should have left during it.
//!
//! The window closes when every live member has received every message written by
//! the other senders of its room (or on a timeout or a stall). Each member records
//! the order it saw; afterwards every member of a room must have seen every message
//! and all must agree on one order (see [`check_room`]).
//!
//! The client is one thread: edge-triggered mio, one 256 KiB read buffer shared by
//! every connection (only an incomplete last line is kept per connection), lines
//! parsed by hand, and a timerfd for paced sends (epoll timeouts only have
//! millisecond resolution).
//!
//! - `scenario`: the load shapes, the spec of one run and its result;
//! - `irc`: message lines and the classifier of what the server sends;
//! - `client`: the connections, registration, joins, the PING barrier;
//! - `load`: the measured window ([`run_load`]);
//! - `verdict`: completeness and order ([`check_room`]);
//! - `probe`: the CHATHISTORY probe ([`HistoryProbe`]), a member of room 0 that
//!   asks `CHATHISTORY LATEST` at a steady rate while the window is open;
//! - `harness`: servers × shapes × rounds ([`run`]);
//! - `results`: run records, medians, history on against off, the tables, the
//!   JSON.

mod client;
mod harness;
mod irc;
mod load;
mod probe;
mod results;
mod scenario;
mod verdict;

pub use self::{
    harness::{
        default_pinning, measure, measure_probed, run, ChatConfig, ChatServer, Flush, Procs,
        CHAT_CONFIG, COALESCE_SERVERS, NO_HISTORY_SERVERS, SERVERS,
    },
    irc::{message_id, next_tag, parse_line, parse_text, write_message, Line},
    load::run_load,
    probe::{
        check_answer, HistLine, HistoryProbe, ProbeLatency, ProbeResult, ProbeSpec, ProbeSwitch,
    },
    results::{
        coalesce_verdicts, history_verdicts, render, render_coalesce, render_history, summarize,
        ChatOutput, ChatRow, ChatRun, ChatSetup, CoalesceVerdict, HistoryVerdict, ProbeSummary,
        COALESCE_CPU_TARGET, COALESCE_P50_TARGET, HISTORY_CPU_TARGET, NO_HISTORY_SUFFIX,
        PROBE_P99_TARGET_MS, REFERENCE,
    },
    scenario::{
        LoadResult, LoadSpec, Pattern, Scenario, Shape, MAX_MESSAGES_PER_SENDER, MAX_SENDERS,
    },
    verdict::{check_room, RoomVerdict},
};
