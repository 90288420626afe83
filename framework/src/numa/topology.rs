//! The machine a plan is made for: the running one, a synthetic description, or an
//! hwloc XML export, all read through hwlocality.

use std::{
    collections::BTreeSet,
    fmt,
    path::{Path, PathBuf},
};

use hwlocality::{
    object::{types::ObjectType, TopologyObject},
    topology::export::xml::XMLExportFlags,
};

use super::{cpu_list, NumaError, ENV_TOPOLOGY};

/// Where a [`Topology`] came from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Source {
    ThisMachine,
    Synthetic(String),
    XmlFile(PathBuf),
    XmlString,
}

/// A machine's hardware topology (packages, NUMA nodes, cores, PUs) as hwloc sees it.
///
/// Either the running machine ([`Topology::current`]) — the only kind on which pinning
/// and memory binding mean anything — or a description of another machine
/// ([`Topology::from_synthetic`], [`Topology::from_xml_file`]) for planning and tests.
pub struct Topology {
    hwloc: hwlocality::Topology,
    source: Source,
}

/// One PU with the places it belongs to; see the module doc for index conventions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PuInfo {
    /// OS index.
    pub(crate) os: usize,
    /// Logical index of the Core ancestor; `None` when the topology has no Core level
    /// there, in which case the PU counts as a core of its own.
    pub(crate) core: Option<usize>,
    /// Logical index of the PU (used as its core index when `core` is `None`).
    pub(crate) logical: usize,
    /// Logical index of the first NUMA node whose CPU set holds this PU (0 if none).
    pub(crate) node: usize,
    /// Logical index of the Package ancestor (0 if the topology has no packages).
    pub(crate) package: usize,
}

impl PuInfo {
    /// The core index reported in plans: the Core's logical index, or the PU's own
    /// logical index when there is no Core object above it.
    pub(crate) fn core_index(&self) -> usize {
        self.core.unwrap_or(self.logical)
    }
}

/// One NUMA node: logical index, OS index, local memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NodeInfo {
    pub(crate) logical: usize,
    pub(crate) os: usize,
    pub(crate) memory_bytes: u64,
}

impl Topology {
    /// Discovers the running machine through hwloc.
    ///
    /// # Errors
    /// [`NumaError::Discover`] if hwloc cannot read the machine.
    pub fn current() -> Result<Topology, NumaError> {
        let hwloc = hwlocality::Topology::new().map_err(|e| NumaError::Discover {
            reason: e.to_string(),
        })?;
        Ok(Topology {
            hwloc,
            source: Source::ThisMachine,
        })
    }

    /// Builds a topology from an hwloc synthetic description, e.g.
    /// `"pack:2 numa:2 core:8 pu:2"` (each level's count is per parent). PU OS indexes
    /// follow logical order.
    ///
    /// # Errors
    /// [`NumaError::Synthetic`] if hwloc rejects the description.
    pub fn from_synthetic(spec: &str) -> Result<Topology, NumaError> {
        let bad = |reason: String| NumaError::Synthetic {
            spec: spec.to_owned(),
            reason,
        };
        let hwloc = hwlocality::Topology::builder()
            .from_synthetic(spec)
            .map_err(|e| bad(e.to_string()))?
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Topology {
            hwloc,
            source: Source::Synthetic(spec.to_owned()),
        })
    }

    /// Loads an hwloc XML export (`lstopo FILE.xml`, or [`Topology::export_xml`]).
    ///
    /// # Errors
    /// [`NumaError::Xml`] if the file cannot be read or is not an hwloc topology.
    pub fn from_xml_file(path: &Path) -> Result<Topology, NumaError> {
        let bad = |reason: String| NumaError::Xml {
            path: path.to_owned(),
            reason,
        };
        if !path.is_file() {
            return Err(bad("no such file".to_owned()));
        }
        let hwloc = hwlocality::Topology::builder()
            .from_xml_file(path)
            .map_err(|e| bad(e.to_string()))?
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Topology {
            hwloc,
            source: Source::XmlFile(path.to_owned()),
        })
    }

    /// Loads an hwloc XML export held in memory.
    ///
    /// # Errors
    /// [`NumaError::Xml`] (with path `-`) if hwloc cannot parse it.
    pub fn from_xml_str(xml: &str) -> Result<Topology, NumaError> {
        let bad = |reason: String| NumaError::Xml {
            path: PathBuf::from("-"),
            reason,
        };
        let hwloc = hwlocality::Topology::builder()
            .from_xml(xml)
            .map_err(|e| bad(e.to_string()))?
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Topology {
            hwloc,
            source: Source::XmlString,
        })
    }

    /// Reads `SPEC|PATH` as given to `--topology`: an existing file is an XML export;
    /// anything that looks like a path (contains `/` or ends in `.xml`) but does not
    /// exist is an error; everything else is a synthetic description.
    ///
    /// # Errors
    /// [`NumaError::Xml`] or [`NumaError::Synthetic`].
    pub fn from_arg(arg: &str) -> Result<Topology, NumaError> {
        let arg = arg.trim();
        let path = Path::new(arg);
        if path.is_file() || arg.contains('/') || arg.ends_with(".xml") {
            Topology::from_xml_file(path)
        } else {
            Topology::from_synthetic(arg)
        }
    }

    /// The topology a binary should use: `arg` (its `--topology` value) if given, else
    /// [`ENV_TOPOLOGY`] if set and non-empty, else the running machine.
    ///
    /// # Errors
    /// As [`Topology::from_arg`] or [`Topology::current`].
    pub fn from_arg_or_env(arg: Option<&str>) -> Result<Topology, NumaError> {
        if let Some(arg) = arg {
            return Topology::from_arg(arg);
        }
        match std::env::var(ENV_TOPOLOGY) {
            Ok(value) if !value.trim().is_empty() => Topology::from_arg(&value),
            _ => Topology::current(),
        }
    }

    /// Whether this is the running machine, so that pinning and memory binding mean
    /// something. False for synthetic and XML topologies, even an export of this machine.
    pub fn is_real(&self) -> bool {
        self.source == Source::ThisMachine && self.hwloc.is_this_system()
    }

    /// Where the topology came from, for plans and logs: `this machine`,
    /// `synthetic "…"`, or `XML PATH`.
    pub fn description(&self) -> String {
        match &self.source {
            Source::ThisMachine => "this machine".to_owned(),
            Source::Synthetic(spec) => format!("synthetic {spec:?}"),
            Source::XmlFile(path) => format!("XML {}", path.display()),
            Source::XmlString => "XML (in memory)".to_owned(),
        }
    }

    /// Exports the topology as hwloc XML (v2), loadable by [`Topology::from_xml_file`]
    /// and by `lstopo -i`.
    ///
    /// # Errors
    /// [`NumaError::Export`] if hwloc fails to export.
    pub fn export_xml(&self) -> Result<String, NumaError> {
        let xml = self
            .hwloc
            .export_xml(XMLExportFlags::empty())
            .map_err(|e| NumaError::Export {
                reason: e.to_string(),
            })?;
        Ok(xml.as_str().to_owned())
    }

    /// The underlying hwlocality topology, for what this type does not wrap.
    pub fn hwloc(&self) -> &hwlocality::Topology {
        &self.hwloc
    }

    /// Number of packages (sockets); 0 if the topology has no Package level.
    pub fn package_count(&self) -> usize {
        self.hwloc.objects_with_type(ObjectType::Package).len()
    }

    /// Number of NUMA nodes (at least 1 on any hwloc topology).
    pub fn node_count(&self) -> usize {
        self.hwloc.objects_with_type(ObjectType::NUMANode).len()
    }

    /// Number of physical cores; PUs without a Core above them count as cores.
    pub fn core_count(&self) -> usize {
        let cores: BTreeSet<(bool, usize)> = self
            .pu_infos()
            .iter()
            .map(|pu| (pu.core.is_some(), pu.core_index()))
            .collect();
        cores.len()
    }

    /// OS indexes of all PUs, ascending.
    pub fn pus(&self) -> Vec<usize> {
        let mut pus: Vec<usize> = self.pu_infos().iter().map(|pu| pu.os).collect();
        pus.sort_unstable();
        pus
    }

    /// OS indexes of the PUs a plan may use when none are given, ascending: on the
    /// running machine, the calling thread's affinity mask (`sched_getaffinity`, which
    /// reflects taskset and the cgroup cpuset — call it before pinning the thread);
    /// otherwise the topology's allowed CPU set (all PUs, unless an XML export says
    /// otherwise).
    pub fn allowed_pus(&self) -> Vec<usize> {
        let allowed = self.hwloc.allowed_cpuset();
        let mut pus: Vec<usize> = self
            .pus()
            .into_iter()
            .filter(|&pu| allowed.is_set(pu))
            .collect();
        if self.is_real() {
            if let Some(mask) = thread_affinity() {
                pus.retain(|pu| mask.contains(pu));
            }
        }
        pus
    }

    /// Every PU with its core, node and package, in PU logical order.
    pub(crate) fn pu_infos(&self) -> Vec<PuInfo> {
        let nodes: Vec<&TopologyObject> =
            self.hwloc.objects_with_type(ObjectType::NUMANode).collect();
        self.hwloc
            .objects_with_type(ObjectType::PU)
            .filter_map(|pu| {
                let os = pu.os_index()?;
                let node = nodes
                    .iter()
                    .find(|node| node.cpuset().is_some_and(|set| set.is_set(os)))
                    .map_or(0, |node| node.logical_index());
                Some(PuInfo {
                    os,
                    core: pu
                        .first_ancestor_with_type(ObjectType::Core)
                        .map(TopologyObject::logical_index),
                    logical: pu.logical_index(),
                    node,
                    package: pu
                        .first_ancestor_with_type(ObjectType::Package)
                        .map_or(0, TopologyObject::logical_index),
                })
            })
            .collect()
    }

    /// Every NUMA node, in logical order.
    pub(crate) fn node_infos(&self) -> Vec<NodeInfo> {
        self.hwloc
            .objects_with_type(ObjectType::NUMANode)
            .map(|node| NodeInfo {
                logical: node.logical_index(),
                os: node.os_index().unwrap_or_else(|| node.logical_index()),
                memory_bytes: node.total_memory(),
            })
            .collect()
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topology")
            .field("source", &self.description())
            .field("packages", &self.package_count())
            .field("nodes", &self.node_count())
            .field("cores", &self.core_count())
            .field("pus", &cpu_list(self.pus()))
            .finish()
    }
}

/// The calling thread's CPU affinity mask, or `None` if the kernel would not say.
fn thread_affinity() -> Option<BTreeSet<usize>> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is a valid (empty) value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; the pointer and size describe `set`, which
    // lives for the whole call.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return None;
    }
    let max = usize::try_from(libc::CPU_SETSIZE).unwrap_or(1024);
    // SAFETY: CPU_ISSET only reads `set`, with indexes below CPU_SETSIZE.
    Some(
        (0..max)
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect(),
    )
}
