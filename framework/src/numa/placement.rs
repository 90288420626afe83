//! Shard placement: which PU each shard runs on, where the handoff acceptor goes, and
//! how the plan prints.
//!
//! Both policies give every physical core one shard before any core gets a second
//! (an SMT sibling shares the core's execution units and caches, so it is worth much
//! less than a core of its own). They differ in the order of the cores:
//!
//! - `compact` fills NUMA node 0's cores, then node 1's, … — shards stay close to each
//!   other and to few memory controllers;
//! - `spread` deals cores round-robin over the nodes — memory bandwidth and caches of
//!   every node are used even with few shards. Nodes are dealt alternating between
//!   packages (node of package 0, node of package 1, next node of package 0, …), so two
//!   shards on a two-package machine land on both packages even when each package holds
//!   several nodes.
//!
//! Cores are visited in hwloc logical order within a node, which keeps each node's
//! shards on neighbouring cores.

use std::{collections::BTreeSet, fmt, str::FromStr};

use serde::Serialize;

use super::{
    cpu_list, ranges,
    topology::{PuInfo, Topology},
    NumaError,
};

/// How shards are mapped to PUs. Parses from and prints as `compact`, `spread` or
/// `cpus=0,2-5,8`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    /// Fill one NUMA node's physical cores before the next; SMT siblings last.
    #[default]
    Compact,
    /// Round-robin over NUMA nodes (alternating packages); SMT siblings last.
    Spread,
    /// Exactly these PUs (OS indexes), shard *i* on the *i*-th.
    Cpus(Vec<usize>),
}

impl FromStr for Placement {
    type Err = NumaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| NumaError::InvalidPlacement {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        let text = s.trim();
        match text.to_ascii_lowercase().as_str() {
            "compact" => return Ok(Placement::Compact),
            "spread" => return Ok(Placement::Spread),
            _ => {}
        }
        let Some(list) = text.strip_prefix("cpus=") else {
            return Err(bad("unknown placement"));
        };
        let mut cpus = Vec::new();
        for item in list.split(',').map(str::trim) {
            if item.is_empty() {
                return Err(bad("empty item in the CPU list"));
            }
            let parse = |n: &str| {
                n.trim()
                    .parse::<usize>()
                    .map_err(|_| bad("CPU list items are numbers or ranges a-b"))
            };
            match item.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (parse(lo)?, parse(hi)?);
                    if lo > hi {
                        return Err(bad("a range a-b needs a <= b"));
                    }
                    cpus.extend(lo..=hi);
                }
                None => cpus.push(parse(item)?),
            }
        }
        Ok(Placement::Cpus(cpus))
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Placement::Compact => f.write_str("compact"),
            Placement::Spread => f.write_str("spread"),
            Placement::Cpus(cpus) => write!(f, "cpus={}", ranges(cpus)),
        }
    }
}

/// What to plan for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Number of shards (at least 1).
    pub shards: usize,
    /// Shard-to-PU policy.
    pub placement: Placement,
    /// PUs (OS indexes) the plan may use; `None` = [`Topology::allowed_pus`] (the
    /// calling thread's affinity on the running machine, else every PU).
    pub allowed: Option<Vec<usize>>,
    /// Allow more shards than PUs (or a PU listed twice in `cpus=`): the order wraps
    /// around and PUs are shared. Off by default, because shared PUs halve throughput.
    pub oversubscribe: bool,
    /// Also place a handoff acceptor thread.
    pub acceptor: bool,
}

impl PlanOptions {
    /// `shards` shards, compact, on the allowed PUs, no oversubscription, no acceptor.
    pub fn new(shards: usize) -> PlanOptions {
        PlanOptions {
            shards,
            ..PlanOptions::default()
        }
    }
}

/// Where one shard runs. `pu` is an OS index; `core`, `node` and `package` are hwloc
/// logical indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ShardPlace {
    /// Shard index.
    pub shard: usize,
    /// PU OS index: what to pin the shard's thread to.
    pub pu: usize,
    /// Logical index of the physical core holding the PU.
    pub core: usize,
    /// Logical index of the NUMA node holding the PU: where the shard's memory goes.
    pub node: usize,
    /// Logical index of the package (socket).
    pub package: usize,
}

/// Where the handoff acceptor runs. Same index conventions as [`ShardPlace`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AcceptorPlace {
    /// PU OS index.
    pub pu: usize,
    /// Logical index of the physical core.
    pub core: usize,
    /// Logical index of the NUMA node.
    pub node: usize,
    /// Logical index of the package.
    pub package: usize,
    /// `Some(0)` when no PU was spare and the acceptor shares shard 0's PU.
    pub shared_with_shard: Option<usize>,
}

/// One NUMA node in the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodePlace {
    /// Logical index of the node.
    pub node: usize,
    /// The node's local memory in bytes (as hwloc reports it).
    pub memory_bytes: u64,
    /// Shards placed on this node.
    pub shards: Vec<usize>,
}

/// Which shard runs where: a value the binaries print with `--print-plan` and the apps
/// and bench log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// One entry per shard, in shard order.
    pub shards: Vec<ShardPlace>,
    /// The handoff acceptor's place, when one was asked for.
    pub acceptor: Option<AcceptorPlace>,
    /// Every NUMA node of the topology with its memory and shards.
    pub nodes: Vec<NodePlace>,
    /// The placement policy, as it parses (`compact`, `spread`, `cpus=…`).
    pub placement: String,
    /// The topology planned for: `this machine`, `synthetic "…"` or `XML PATH`.
    pub topology: String,
}

impl Plan {
    /// Places `options.shards` shards (and the acceptor, if asked) on `topology`.
    ///
    /// # Errors
    /// [`NumaError::NoShards`], [`NumaError::UnknownPu`], [`NumaError::NoAllowedPus`],
    /// [`NumaError::PuNotAllowed`], [`NumaError::DuplicatePu`] or
    /// [`NumaError::TooManyShards`] — see their messages.
    pub fn new(topology: &Topology, options: &PlanOptions) -> Result<Plan, NumaError> {
        if options.shards == 0 {
            return Err(NumaError::NoShards);
        }
        let all = topology.pu_infos();
        let unknown = |pu: usize| NumaError::UnknownPu {
            pu,
            topology: topology.description(),
            pus: cpu_list(all.iter().map(|p| p.os)),
        };
        let allowed: BTreeSet<usize> = match &options.allowed {
            Some(list) => {
                if let Some(&pu) = list.iter().find(|&&pu| !all.iter().any(|p| p.os == pu)) {
                    return Err(unknown(pu));
                }
                list.iter().copied().collect()
            }
            None => topology.allowed_pus().into_iter().collect(),
        };
        let allowed_text = cpu_list(allowed.iter().copied());
        let usable: Vec<PuInfo> = all
            .iter()
            .copied()
            .filter(|p| allowed.contains(&p.os))
            .collect();
        if usable.is_empty() {
            return Err(NumaError::NoAllowedPus {
                allowed: allowed_text,
                topology: topology.description(),
            });
        }

        let order: Vec<PuInfo> = match &options.placement {
            Placement::Compact => compact_order(&usable),
            Placement::Spread => spread_order(&usable),
            Placement::Cpus(cpus) => {
                let mut seen = BTreeSet::new();
                let mut order = Vec::with_capacity(cpus.len());
                for &cpu in cpus {
                    let Some(pu) = all.iter().find(|p| p.os == cpu) else {
                        return Err(unknown(cpu));
                    };
                    if !allowed.contains(&cpu) {
                        return Err(NumaError::PuNotAllowed {
                            pu: cpu,
                            allowed: allowed_text,
                        });
                    }
                    if !seen.insert(cpu) && !options.oversubscribe {
                        return Err(NumaError::DuplicatePu { pu: cpu });
                    }
                    order.push(*pu);
                }
                order
            }
        };
        if order.is_empty() || (options.shards > order.len() && !options.oversubscribe) {
            return Err(NumaError::TooManyShards {
                shards: options.shards,
                available: order.len(),
                allowed: allowed_text,
                placement: options.placement.to_string(),
            });
        }

        let shards: Vec<ShardPlace> = (0..options.shards)
            .map(|shard| {
                let pu = order[shard % order.len()];
                ShardPlace {
                    shard,
                    pu: pu.os,
                    core: pu.core_index(),
                    node: pu.node,
                    package: pu.package,
                }
            })
            .collect();
        let acceptor = options.acceptor.then(|| place_acceptor(&usable, &shards));
        let nodes = topology
            .node_infos()
            .into_iter()
            .map(|node| NodePlace {
                node: node.logical,
                memory_bytes: node.memory_bytes,
                shards: shards
                    .iter()
                    .filter(|s| s.node == node.logical)
                    .map(|s| s.shard)
                    .collect(),
            })
            .collect();
        Ok(Plan {
            shards,
            acceptor,
            nodes,
            placement: options.placement.to_string(),
            topology: topology.description(),
        })
    }

    /// The PU (OS index) of each shard, in shard order: what to pin thread *i* to.
    pub fn pus(&self) -> Vec<usize> {
        self.shards.iter().map(|s| s.pu).collect()
    }

    /// A human-readable table for `--print-plan`: shard → PU → core → node → package,
    /// each node's memory and shards, and the acceptor's place.
    pub fn table(&self) -> String {
        let mut out = format!(
            "plan: {} shard{} on {}, placement {}\n",
            self.shards.len(),
            if self.shards.len() == 1 { "" } else { "s" },
            self.topology,
            self.placement
        );
        out.push_str("shard    pu  core  node  package\n");
        for s in &self.shards {
            out.push_str(&format!(
                "{:>5} {:>5} {:>5} {:>5} {:>8}\n",
                s.shard, s.pu, s.core, s.node, s.package
            ));
        }
        let shared: Vec<usize> = {
            let mut seen = BTreeSet::new();
            self.shards
                .iter()
                .filter(|s| !seen.insert(s.pu))
                .map(|s| s.shard)
                .collect()
        };
        if !shared.is_empty() {
            out.push_str(&format!(
                "oversubscribed: shards {} share a PU with an earlier shard\n",
                ranges(&shared)
            ));
        }
        out.push_str(" node     memory  shards\n");
        for n in &self.nodes {
            out.push_str(&format!(
                "{:>5} {:>10}  {}\n",
                n.node,
                human_bytes(n.memory_bytes),
                ranges(&n.shards)
            ));
        }
        match &self.acceptor {
            None => out.push_str("acceptor: none\n"),
            Some(a) => {
                let why = match a.shared_with_shard {
                    Some(shard) => format!("no spare PU, shares shard {shard}'s PU"),
                    None => match self.shards.iter().find(|s| s.core == a.core) {
                        Some(s) => format!("spare PU, SMT sibling of shard {}'s PU", s.shard),
                        None => "spare core".to_owned(),
                    },
                };
                out.push_str(&format!(
                    "acceptor: pu {} (core {}, node {}, package {}): {why}\n",
                    a.pu, a.core, a.node, a.package
                ));
            }
        }
        out
    }

    /// The plan as pretty-printed JSON for `--print-plan=json`:
    /// `{"shards": [{"shard": 0, "pu": 0, "core": 0, "node": 0, "package": 0}, …],
    /// "acceptor": {…} | null, "nodes": […], "placement": "…", "topology": "…"}`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan holds only numbers and strings")
    }
}

/// Groups PUs by physical core, keeping PU logical order inside each core and cores in
/// the order of their first PU.
fn cores_of(pus: &[PuInfo]) -> Vec<Vec<PuInfo>> {
    let mut cores: Vec<Vec<PuInfo>> = Vec::new();
    for pu in pus {
        let key = (pu.core.is_some(), pu.core_index());
        match cores
            .iter_mut()
            .find(|c| (c[0].core.is_some(), c[0].core_index()) == key)
        {
            Some(core) => core.push(*pu),
            None => cores.push(vec![*pu]),
        }
    }
    for core in &mut cores {
        core.sort_by_key(|pu| pu.logical);
    }
    cores.sort_by_key(|core| (core[0].node, core[0].core_index(), core[0].logical));
    cores
}

/// Node by node, core by core; first PUs of every core, then second PUs, and so on.
fn compact_order(pus: &[PuInfo]) -> Vec<PuInfo> {
    let cores = cores_of(pus);
    let depth = cores.iter().map(Vec::len).max().unwrap_or(0);
    (0..depth)
        .flat_map(|rank| cores.iter().filter_map(move |core| core.get(rank).copied()))
        .collect()
}

/// Cores dealt round-robin over nodes (nodes alternating between packages); first PUs
/// of every core, then second PUs, and so on.
fn spread_order(pus: &[PuInfo]) -> Vec<PuInfo> {
    // Cores per node, nodes in logical order (cores_of sorts by node).
    let mut per_node: Vec<Vec<Vec<PuInfo>>> = Vec::new();
    for core in cores_of(pus) {
        match per_node.last_mut() {
            Some(node) if node[0][0].node == core[0].node => node.push(core),
            _ => per_node.push(vec![core]),
        }
    }
    // Deal nodes alternating between packages.
    let mut per_package: Vec<Vec<Vec<Vec<PuInfo>>>> = Vec::new();
    for node in per_node {
        let package = node[0][0].package;
        match per_package
            .iter_mut()
            .find(|p| p[0][0][0].package == package)
        {
            Some(p) => p.push(node),
            None => per_package.push(vec![node]),
        }
    }
    let most_nodes = per_package.iter().map(Vec::len).max().unwrap_or(0);
    let nodes: Vec<&Vec<Vec<PuInfo>>> = (0..most_nodes)
        .flat_map(|i| per_package.iter().filter_map(move |p| p.get(i)))
        .collect();

    let most_cores = nodes.iter().map(|n| n.len()).max().unwrap_or(0);
    let depth = nodes
        .iter()
        .flat_map(|n| n.iter().map(Vec::len))
        .max()
        .unwrap_or(0);
    let mut order = Vec::with_capacity(pus.len());
    for rank in 0..depth {
        for i in 0..most_cores {
            for node in &nodes {
                if let Some(pu) = node.get(i).and_then(|core| core.get(rank)) {
                    order.push(*pu);
                }
            }
        }
    }
    order
}

/// A spare PU for the acceptor, best first: on a core no shard uses (shard 0's node
/// first), then any PU no shard uses (shard 0's node first), else shard 0's PU.
fn place_acceptor(usable: &[PuInfo], shards: &[ShardPlace]) -> AcceptorPlace {
    let home = shards[0];
    let used_pus: BTreeSet<usize> = shards.iter().map(|s| s.pu).collect();
    let used_cores: BTreeSet<(usize, usize)> = shards.iter().map(|s| (s.package, s.core)).collect();
    let best = compact_order(usable)
        .into_iter()
        .filter(|pu| !used_pus.contains(&pu.os))
        .min_by_key(|pu| {
            (
                used_cores.contains(&(pu.package, pu.core_index())),
                pu.node != home.node,
            )
        });
    match best {
        Some(pu) => AcceptorPlace {
            pu: pu.os,
            core: pu.core_index(),
            node: pu.node,
            package: pu.package,
            shared_with_shard: None,
        },
        None => AcceptorPlace {
            pu: home.pu,
            core: home.core,
            node: home.node,
            package: home.package,
            shared_with_shard: Some(home.shard),
        },
    }
}

/// Bytes as `1.0 GiB`, `512.0 MiB`, or `unknown` for 0 (hwloc reports 0 when it does
/// not know a node's memory).
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if bytes == 0 {
        return "unknown".to_owned();
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_parses_and_prints() {
        assert_eq!(
            "compact".parse::<Placement>().ok(),
            Some(Placement::Compact)
        );
        assert_eq!(
            " Spread ".parse::<Placement>().ok(),
            Some(Placement::Spread)
        );
        let cpus: Placement = "cpus=0,2-5,8".parse().expect("valid list");
        assert_eq!(cpus, Placement::Cpus(vec![0, 2, 3, 4, 5, 8]));
        assert_eq!(cpus.to_string(), "cpus=0,2-5,8");
        assert_eq!(Placement::Cpus(vec![3, 1, 2]).to_string(), "cpus=3,1-2");
        for bad in ["", "dense", "cpus=", "cpus=1,,2", "cpus=5-2", "cpus=a"] {
            assert!(
                bad.parse::<Placement>().is_err(),
                "{bad:?} should not parse"
            );
        }
        assert_eq!(Placement::default(), Placement::Compact);
    }

    #[test]
    fn human_bytes_reads_well() {
        assert_eq!(human_bytes(0), "unknown");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        assert_eq!(human_bytes(3 << 19), "1.5 MiB");
    }
}
