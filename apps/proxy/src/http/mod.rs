//! HTTP/1.1 mode: strict request parsing, a streaming chunked decoder, and the
//! per-shard proxy handler.

pub mod chunked;
pub mod head;
mod pool;
pub(crate) mod proxy;
