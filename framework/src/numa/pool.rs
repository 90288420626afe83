//! A shard's buffer pool: `count` buffers of `buf_size` bytes in one page-aligned
//! region, whose pages live on the shard's NUMA node.
//!
//! Why one region: io_uring's provided-buffer ring wants buffers as addresses in one
//! place (`base() + i * buf_size` is buffer `i`), and binding a single region is one
//! `mbind`. Why the region is mapped here rather than by `hwloc_alloc_membind`:
//! hwlocality ties that allocation's lifetime to a `&Topology` borrow, which a pool
//! owned by a shard cannot carry; hwloc on Linux does the same thing we do — an
//! anonymous `mmap` followed by `hwloc_set_area_membind` (mbind) on the area.
//!
//! Placement, in order of preference:
//! 1. [`Binding::Bound`]: the topology is the running machine and a node was given;
//!    the area is bound to that node (MPOL_BIND, strict) before any page exists, then
//!    every page is touched so that it is allocated now, on that node.
//! 2. [`Binding::FirstTouch`]: binding failed or no node was given; the pages are
//!    touched by the creating thread, so they land on *its* node. Create the pool on
//!    the shard's thread after pinning it, and that is the shard's node.
//! 3. [`Binding::Unbound`]: the topology is a synthetic or XML description, not this
//!    machine; there is nothing to bind to.
//!
//! The reason for 2 and 3 is logged once, when the pool is created.
//!
//! The pool never grows: [`BufferPool::take`] on an empty pool returns `None` and counts
//! the event; the caller must treat it as backpressure (stop reading, retry after a
//! buffer comes back). [`BufferPool::check_locality`] asks hwloc where the pages really
//! are, so that a kernel that migrated or misplaced them shows up as a warning and a
//! number rather than as unexplained latency.

use std::{collections::BTreeSet, fmt, io, ptr::NonNull};

use hwlocality::memory::{
    binding::{MemoryBindingFlags, MemoryBindingPolicy},
    nodeset::NodeSet,
};
use tracing::{debug, info, warn};

use super::{NumaError, Topology};

/// The most buffers a pool holds: io_uring names provided buffers with a `u16`.
const MAX_BUFFERS: usize = 1 << 16;

/// Names one buffer of a [`BufferPool`]; also its io_uring provided-buffer id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufId(u16);

impl BufId {
    /// The buffer with io_uring buffer id `bid` (as a completion reports it).
    pub fn new(bid: u16) -> BufId {
        BufId(bid)
    }

    /// The io_uring buffer id.
    pub fn bid(self) -> u16 {
        self.0
    }

    /// The buffer's position in the pool: it starts at `base() + index() * buf_size()`.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// How a pool's memory was placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Binding {
    /// Bound with hwloc to this NUMA node (logical index).
    Bound {
        /// The node's logical index.
        node: usize,
    },
    /// Placed by the kernel's first-touch policy: on the node of the thread that
    /// created the pool.
    FirstTouch {
        /// Why the pool is not bound.
        reason: String,
    },
    /// Not placed on purpose: the topology describes another machine.
    Unbound {
        /// Why the pool is not bound.
        reason: String,
    },
}

/// Where a pool's pages are, as hwloc reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Locality {
    /// The node the pages should be on (logical index), if the pool has one.
    pub node: Option<usize>,
    /// Pages in the pool's region.
    pub pages: usize,
    /// Pages found on another node than `node`; 0 when all are on it, when the pool has
    /// no node, or when it could not be known (then `unknown` says why).
    pub off_node_pages: usize,
    /// Logical indexes of the nodes holding at least one of the pool's pages.
    pub nodes: Vec<usize>,
    /// Why the location could not be determined, if it could not.
    pub unknown: Option<String>,
}

impl Locality {
    /// True when every resident page is known to be on the pool's node.
    pub fn is_on_node(&self) -> bool {
        self.unknown.is_none() && self.node.is_some() && self.off_node_pages == 0
    }
}

/// A shard's fixed-size buffers in one contiguous, page-aligned region. See the module
/// doc for how its memory is placed.
pub struct BufferPool {
    base: NonNull<u8>,
    mapped_len: usize,
    page_size: usize,
    buf_size: usize,
    count: usize,
    node: Option<usize>,
    binding: Binding,
    free: Vec<u16>,
    taken: Vec<bool>,
    exhausted_events: u64,
}

// SAFETY: the pool owns its mapping exclusively; nothing else holds the pointer, so
// moving the pool to another thread moves sole ownership of the memory with it.
unsafe impl Send for BufferPool {}

impl BufferPool {
    /// Maps `count` buffers of `buf_size` bytes and places them: bound to `node` (a
    /// logical NUMA node index, e.g. [`ShardPlace::node`](super::ShardPlace::node)) if
    /// `topology` is the running machine, else by first touch. Call it on the shard's
    /// thread after pinning, so that the first-touch fallback lands on the right node.
    ///
    /// # Errors
    /// [`NumaError::InvalidPool`] for a zero size or count, more than 65,536 buffers, or
    /// a size overflow; [`NumaError::UnknownNode`] for a node the topology lacks;
    /// [`NumaError::PoolAllocation`] if the OS refuses the memory.
    pub fn new(
        topology: &Topology,
        node: Option<usize>,
        buf_size: usize,
        count: usize,
    ) -> Result<BufferPool, NumaError> {
        if buf_size == 0 || count == 0 {
            return Err(NumaError::InvalidPool {
                reason: format!(
                    "buffer size ({buf_size}) and count ({count}) must both be at least 1"
                ),
            });
        }
        if count > MAX_BUFFERS {
            return Err(NumaError::InvalidPool {
                reason: format!(
                    "{count} buffers is more than io_uring can name ({MAX_BUFFERS}); use \
                     fewer, larger buffers"
                ),
            });
        }
        let page_size = page_size();
        let region_len = buf_size
            .checked_mul(count)
            .and_then(|len| len.checked_next_multiple_of(page_size))
            .filter(|&len| len <= isize::MAX as usize)
            .ok_or_else(|| NumaError::InvalidPool {
                reason: format!("{count} buffers of {buf_size} bytes do not fit in memory"),
            })?;
        let nodes = topology.node_infos();
        if let Some(node) = node {
            if node >= nodes.len() {
                return Err(NumaError::UnknownNode {
                    node,
                    nodes: nodes.len(),
                    topology: topology.description(),
                });
            }
        }

        let base = map_anonymous(region_len).map_err(|source| NumaError::PoolAllocation {
            bytes: region_len,
            source,
        })?;
        let mut pool = BufferPool {
            base,
            mapped_len: region_len,
            page_size,
            buf_size,
            count,
            node,
            binding: Binding::Unbound {
                reason: String::new(),
            },
            free: (0..count)
                .rev()
                .map(|i| u16::try_from(i).expect("count <= 65536, so every index fits a u16"))
                .collect(),
            taken: vec![false; count],
            exhausted_events: 0,
        };

        pool.binding = match node {
            _ if !topology.is_real() => Binding::Unbound {
                reason: format!(
                    "topology is {}, not this machine: memory binding skipped",
                    topology.description()
                ),
            },
            None => Binding::FirstTouch {
                reason: "no NUMA node given: pages go to the node of the creating thread"
                    .to_owned(),
            },
            Some(node) => {
                let mut set = NodeSet::new();
                set.set(nodes[node].os);
                match topology.hwloc().bind_memory_area::<[u8], _>(
                    pool.region(),
                    &set,
                    MemoryBindingPolicy::Bind,
                    MemoryBindingFlags::STRICT,
                ) {
                    Ok(()) => Binding::Bound { node },
                    Err(e) => Binding::FirstTouch {
                        reason: format!(
                            "hwloc could not bind the pool to NUMA node {node}: {e}; pages \
                             go to the node of the creating thread"
                        ),
                    },
                }
            }
        };

        // Fault every page in now, under the binding (or on this thread's node), so that
        // placement is decided at start-up rather than on the first request.
        // SAFETY: base..base+mapped_len is our private, writable mapping.
        unsafe { std::ptr::write_bytes(pool.base.as_ptr(), 0, pool.mapped_len) };

        match &pool.binding {
            Binding::Bound { node } => debug!(
                count,
                buf_size,
                node = *node,
                "buffer pool bound to its NUMA node"
            ),
            Binding::FirstTouch { reason } if pool.node.is_some() => {
                warn!(count, buf_size, %reason, "buffer pool not bound, using first touch")
            }
            Binding::FirstTouch { reason } => {
                info!(count, buf_size, %reason, "buffer pool placed by first touch")
            }
            Binding::Unbound { reason } => {
                debug!(count, buf_size, %reason, "buffer pool not placed")
            }
        }
        Ok(pool)
    }

    /// How the pool's memory was placed.
    pub fn binding(&self) -> &Binding {
        &self.binding
    }

    /// Start of the region; buffer `i` starts at `base + i * buf_size`. Page-aligned.
    pub fn base(&self) -> NonNull<u8> {
        self.base
    }

    /// Bytes in use by buffers: `buf_size * count` (the mapping itself is rounded up to
    /// whole pages).
    pub fn region_len(&self) -> usize {
        self.buf_size * self.count
    }

    /// Size of each buffer in bytes.
    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Number of buffers.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The NUMA node (logical index) the pool was created for, if any.
    pub fn node(&self) -> Option<usize> {
        self.node
    }

    /// Takes a free buffer, or `None` when all are taken: backpressure, counted in
    /// [`BufferPool::exhausted_events`]. The pool never allocates more.
    pub fn take(&mut self) -> Option<BufId> {
        match self.free.pop() {
            Some(bid) => {
                self.taken[usize::from(bid)] = true;
                Some(BufId(bid))
            }
            None => {
                self.exhausted_events += 1;
                None
            }
        }
    }

    /// Returns a taken buffer. Returning one that is not taken (twice, or from another
    /// pool) is a caller bug; it is logged and ignored so the free list stays sound.
    pub fn give_back(&mut self, id: BufId) {
        match self.taken.get_mut(id.index()) {
            Some(taken) if *taken => {
                *taken = false;
                self.free.push(id.0);
            }
            _ => warn!(
                buf = id.index(),
                count = self.count,
                "buffer given back that was not taken from this pool; ignored"
            ),
        }
    }

    /// The bytes of buffer `id`.
    ///
    /// # Panics
    /// If `id` is not a buffer of this pool (`id.index() >= count()`).
    pub fn buf(&self, id: BufId) -> &[u8] {
        let start = self.offset(id);
        &self.region()[start..start + self.buf_size]
    }

    /// The bytes of buffer `id`, writable.
    ///
    /// # Panics
    /// If `id` is not a buffer of this pool (`id.index() >= count()`).
    pub fn buf_mut(&mut self, id: BufId) -> &mut [u8] {
        let start = self.offset(id);
        let size = self.buf_size;
        &mut self.region_mut()[start..start + size]
    }

    /// Buffers free to take.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// How many times [`BufferPool::take`] found the pool empty.
    pub fn exhausted_events(&self) -> u64 {
        self.exhausted_events
    }

    /// Asks hwloc which NUMA nodes hold the pool's pages and counts the pages that are
    /// not on the pool's node, logging a warning if there are any. The count is 0 when
    /// all pages are on the node, when the pool has no node, or when the location cannot
    /// be known (a topology that is not this machine, or an OS that will not say), and
    /// then [`Locality::unknown`] says why.
    pub fn check_locality(&self, topology: &Topology) -> Locality {
        let pages = self.mapped_len / self.page_size;
        let mut locality = Locality {
            node: self.node,
            pages,
            off_node_pages: 0,
            nodes: Vec::new(),
            unknown: None,
        };
        if !topology.is_real() {
            locality.unknown = Some(format!(
                "topology is {}, not this machine",
                topology.description()
            ));
            return locality;
        }
        let infos = topology.node_infos();
        let logical_of = |os: usize| infos.iter().find(|n| n.os == os).map(|n| n.logical);
        let whole = match self.location(topology, 0, pages) {
            Ok(set) => set,
            Err(reason) => {
                locality.unknown = Some(reason);
                return locality;
            }
        };
        locality.nodes = whole.iter().filter_map(|&os| logical_of(os)).collect();
        locality.nodes.sort_unstable();
        let Some(node) = self.node else {
            return locality;
        };
        if whole.is_empty() {
            locality.unknown = Some("no page of the pool is resident".to_owned());
            return locality;
        }
        let Some(home_os) = infos.get(node).map(|n| n.os) else {
            locality.unknown = Some(format!(
                "NUMA node {node} does not exist in {}",
                topology.description()
            ));
            return locality;
        };
        if whole.iter().all(|&os| os == home_os) {
            return locality;
        }
        match self.count_off_node(topology, home_os, 0, pages) {
            Ok(off) => {
                locality.off_node_pages = off;
                warn!(
                    node,
                    off_node_pages = off,
                    pages,
                    nodes = ?locality.nodes,
                    "buffer pool pages found off the shard's NUMA node"
                );
            }
            Err(reason) => locality.unknown = Some(reason),
        }
        locality
    }

    /// OS indexes of the nodes holding pages `first..first + pages` of the region.
    fn location(
        &self,
        topology: &Topology,
        first: usize,
        pages: usize,
    ) -> Result<BTreeSet<usize>, String> {
        let start = first * self.page_size;
        let area = &self.region_all()[start..start + pages * self.page_size];
        topology
            .hwloc()
            .area_memory_location::<[u8], NodeSet>(area, MemoryBindingFlags::empty())
            .map(|set| set.iter_set().map(usize::from).collect())
            .map_err(|e| format!("hwloc could not locate the pool's pages: {e}"))
    }

    /// Pages of `first..first + pages` not on `home_os`, by halving only the ranges
    /// whose pages are not all at home (one query when everything is fine).
    fn count_off_node(
        &self,
        topology: &Topology,
        home_os: usize,
        first: usize,
        pages: usize,
    ) -> Result<usize, String> {
        let set = self.location(topology, first, pages)?;
        if set.iter().all(|&os| os == home_os) {
            return Ok(0);
        }
        if pages == 1 {
            return Ok(1);
        }
        let half = pages / 2;
        Ok(self.count_off_node(topology, home_os, first, half)?
            + self.count_off_node(topology, home_os, first + half, pages - half)?)
    }

    fn offset(&self, id: BufId) -> usize {
        assert!(
            id.index() < self.count,
            "buffer {} is not in this pool of {} buffers",
            id.index(),
            self.count
        );
        id.index() * self.buf_size
    }

    /// The buffers' bytes.
    fn region(&self) -> &[u8] {
        &self.region_all()[..self.region_len()]
    }

    fn region_mut(&mut self) -> &mut [u8] {
        let len = self.region_len();
        // SAFETY: base..base+mapped_len is our mapping, initialised (zeroed) at creation;
        // `&mut self` guarantees no other reference into it exists.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), len) }
    }

    /// The whole mapping, including the tail that rounds it up to a page.
    fn region_all(&self) -> &[u8] {
        // SAFETY: base..base+mapped_len is our mapping (zero-filled by the kernel and by
        // `new`); shared access is tied to `&self`.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.mapped_len) }
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        // SAFETY: base/mapped_len are exactly what mmap returned; no reference into the
        // mapping outlives `self`.
        let rc = unsafe { libc::munmap(self.base.as_ptr().cast(), self.mapped_len) };
        if rc != 0 {
            warn!(error = %io::Error::last_os_error(), "munmap of a buffer pool failed");
        }
    }
}

impl fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferPool")
            .field("base", &self.base)
            .field("buf_size", &self.buf_size)
            .field("count", &self.count)
            .field("available", &self.free.len())
            .field("exhausted_events", &self.exhausted_events)
            .field("node", &self.node)
            .field("binding", &self.binding)
            .finish()
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size)
        .ok()
        .filter(|&s| s > 0)
        .unwrap_or(4096)
}

/// A private, anonymous, read-write mapping of `len` bytes (a multiple of the page
/// size). The kernel allocates pages on first touch, which is what lets a binding set
/// before the first touch decide where they go.
fn map_anonymous(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a fresh anonymous mapping at an address of the kernel's choosing touches
    // no existing memory.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))
}

#[cfg(test)]
mod tests;
