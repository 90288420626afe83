//! What every peer echo server shares: the command line, pinning, starting one
//! listener per thread, and the `listening on ADDR` line a harness waits for.
//!
//! The servers themselves live in `src/bin/`, one file each, written the way their
//! own project's documentation writes an echo server. Nothing here may add work to a
//! connection's path: it runs before the first accept and never after.
#![deny(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod cli;
mod listener;
pub mod monoio_echo;
mod shards;

pub use cli::{Args, CpuList};
pub use listener::reuseport_listener;
pub use shards::{announce, pin_current_thread, run_shards, Ready, Shard};
