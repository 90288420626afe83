//! NUMA layer: where each shard runs and where its memory lives.
//!
//! [`Topology`] describes a machine through hwloc: the running one, or — for planning
//! and tests — a synthetic description (`"pack:2 numa:2 core:8 pu:2"`) or an hwloc XML
//! export of another machine. [`Plan::new`] maps shard *i* to one PU following a
//! [`Placement`] (one shard per physical core first, SMT siblings last), places the
//! optional handoff acceptor, and renders as a table or JSON for `--print-plan`.
//! [`BufferPool`] is a shard's fixed-size buffers in one region, bound to the shard's
//! NUMA node with hwloc, or placed by first touch when binding is not possible.
//!
//! This module must never pin threads or bind memory on behalf of a topology that is
//! not the running machine ([`Topology::is_real`]), never place a shard outside the
//! CPUs the process is allowed to use, and never grow a pool: an empty pool is
//! backpressure for the caller, not a reason to allocate.
//!
//! Index conventions, used everywhere in this module: `pu` is the PU's **OS index**
//! (what `taskset`, `sched_setaffinity` and `core_affinity` use); `core`, `node` and
//! `package` are hwloc **logical indexes** of the Core, NUMANode and Package objects
//! (dense, 0-based, in topology order — what `lstopo` prints as `L#`).

mod placement;
mod pool;
mod topology;

use std::path::PathBuf;

pub use placement::{AcceptorPlace, NodePlace, Placement, Plan, PlanOptions, ShardPlace};
pub use pool::{Binding, BufId, BufferPool, Locality};
pub use topology::Topology;

/// Environment variable read by [`Topology::from_arg_or_env`] when no `--topology` was
/// given: a synthetic description or the path of an hwloc XML export.
pub const ENV_TOPOLOGY: &str = "SHARDLINE_TOPOLOGY";

/// Why a topology could not be loaded, a plan could not be made, or a pool could not be
/// created. Each message says what the user can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NumaError {
    /// hwloc could not discover the running machine.
    #[error(
        "could not read this machine's topology through hwloc: {reason}; give a topology \
         to plan for (a synthetic description or an XML export path, or set {ENV_TOPOLOGY}) \
         instead"
    )]
    Discover {
        /// hwloc's explanation.
        reason: String,
    },
    /// A synthetic description was rejected by hwloc.
    #[error(
        "invalid synthetic topology {spec:?}: {reason}; use hwloc's synthetic syntax, levels \
         from outer to inner ending with pu, e.g. \"pack:2 numa:2 core:8 pu:2\", or give \
         the path of an hwloc XML export"
    )]
    Synthetic {
        /// The description as given.
        spec: String,
        /// hwloc's explanation.
        reason: String,
    },
    /// An hwloc XML export could not be read.
    #[error(
        "could not load the hwloc XML topology {}: {reason}; check the path, or create one \
         with `lstopo FILE.xml` on the machine you want to plan for",
        path.display()
    )]
    Xml {
        /// Where the XML was to be read from (`-` for an in-memory string).
        path: PathBuf,
        /// hwloc's or the file system's explanation.
        reason: String,
    },
    /// hwloc could not export the topology as XML.
    #[error("could not export the topology as XML: {reason}")]
    Export {
        /// hwloc's explanation.
        reason: String,
    },
    /// A placement string did not parse.
    #[error(
        "invalid placement {input:?}: {reason}; use compact, spread or cpus=LIST \
         (e.g. cpus=0,2-5,8)"
    )]
    InvalidPlacement {
        /// The placement as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A plan was asked for zero shards.
    #[error("a plan needs at least one shard")]
    NoShards,
    /// The allowed CPU set contains no PU of the topology.
    #[error(
        "none of the allowed CPUs ({allowed}) is a PU of {topology}; widen the CPU set \
         (taskset, cgroup cpuset) or plan for the topology these CPUs belong to"
    )]
    NoAllowedPus {
        /// The allowed set that was used, as a CPU list.
        allowed: String,
        /// Which topology was used.
        topology: String,
    },
    /// A PU named in an allowed set or a `cpus=` list does not exist.
    #[error(
        "PU {pu} does not exist in {topology} (its PUs are {pus}); name PUs by their OS \
         index, as taskset does"
    )]
    UnknownPu {
        /// The PU's OS index as given.
        pu: usize,
        /// Which topology was used.
        topology: String,
        /// The topology's PUs, as a CPU list.
        pus: String,
    },
    /// A `cpus=` list names a PU the process may not use.
    #[error(
        "PU {pu} is outside the CPUs this process may use ({allowed}); remove it from \
         cpus=, or widen the CPU set (taskset, cgroup cpuset)"
    )]
    PuNotAllowed {
        /// The PU's OS index.
        pu: usize,
        /// The allowed set, as a CPU list.
        allowed: String,
    },
    /// A `cpus=` list names a PU twice without oversubscription.
    #[error(
        "PU {pu} appears twice in cpus=; list each PU once, or allow oversubscription \
         explicitly to put two shards on one PU"
    )]
    DuplicatePu {
        /// The PU's OS index.
        pu: usize,
    },
    /// More shards than PUs to put them on, without oversubscription.
    #[error(
        "{shards} shards do not fit on the {available} PUs available to placement \
         {placement} (allowed CPUs: {allowed}); run {available} shards or fewer, widen \
         the CPU set, or allow oversubscription explicitly"
    )]
    TooManyShards {
        /// Shards asked for.
        shards: usize,
        /// PUs the placement may use.
        available: usize,
        /// The allowed set, as a CPU list.
        allowed: String,
        /// The placement, as given.
        placement: String,
    },
    /// A buffer pool was asked for a NUMA node the topology does not have.
    #[error(
        "NUMA node {node} does not exist in {topology} ({nodes} nodes, logical indexes \
         0..{nodes}); use the node from the plan"
    )]
    UnknownNode {
        /// The node's logical index as given.
        node: usize,
        /// How many NUMA nodes the topology has.
        nodes: usize,
        /// Which topology was used.
        topology: String,
    },
    /// A buffer pool's size or count is unusable.
    #[error("invalid buffer pool: {reason}")]
    InvalidPool {
        /// What is wrong and what would work.
        reason: String,
    },
    /// The OS refused the pool's memory.
    #[error(
        "could not map {bytes} bytes for a buffer pool: {source}; lower the buffer size or \
         count"
    )]
    PoolAllocation {
        /// Bytes asked for.
        bytes: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Formats OS indexes as a CPU list the way taskset and `cpus=` read them: `0,2-5,8`.
pub(crate) fn cpu_list(indexes: impl IntoIterator<Item = usize>) -> String {
    let mut sorted: Vec<usize> = indexes.into_iter().collect();
    sorted.sort_unstable();
    sorted.dedup();
    ranges(&sorted)
}

/// Formats a list keeping its order, folding ascending runs into `a-b`.
pub(crate) fn ranges(list: &[usize]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < list.len() {
        let start = list[i];
        let mut end = start;
        while i + 1 < list.len() && list[i + 1] == end + 1 {
            end += 1;
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if end == start {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    if out.is_empty() {
        out.push_str("none");
    }
    out
}
