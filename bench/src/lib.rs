//! `shardline-bench`: the benchmark harness of Shardline.
//!
//! - [`client`]: the echo load generator (closed and open loop, HDR histograms).
//! - [`servers`]: Shardline, the peers, shardline-chat, ngircd, shardline-proxy,
//!   HAProxy and nginx as child processes, and what /proc says about them.
//! - [`compare`], [`scale`], [`idle`], [`mailbox`], [`chat`], [`proxy`], [`l4`],
//!   [`engines`] (Redis and NATS as a cluster's message engine), [`model`]
//!   (arithmetic on their results):
//!   the subcommands.
//! - [`serve`]: the Shardline echo server the subcommands run.
//! - [`experiment`]: what the comparing subcommands share: interleaved rounds,
//!   CPU marks around a run, the quiet-machine retry, medians.
//! - [`report`]: tables, JSON; [`machine`]: CPUs, pinning, limits.
//!
//! Timings live here, never in tests: the tests check arithmetic, shapes and that
//! every subcommand runs end to end.
#![deny(missing_debug_implementations, rust_2018_idioms)]

pub mod chat;
pub mod client;
pub mod compare;
pub mod conns;
pub mod engines;
pub mod experiment;
pub mod idle;
pub mod l4;
pub mod links;
pub mod machine;
pub mod mailbox;
pub mod model;
pub mod proxy;
pub mod report;
pub mod scale;
pub mod serve;
pub mod servers;
