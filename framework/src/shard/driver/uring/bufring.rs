//! The provided-buffer ring (group `BUF_GROUP`): the ring of entries the kernel picks
//! read buffers from, over memory that is either the shard's NUMA-bound
//! [`BufferPool`] (normal operation) or a plain page-aligned allocation (the startup
//! probe and driver unit tests).
//!
//! The kernel takes a buffer when a recv completes and we give it back (push +
//! publish) as soon as the shard has seen its bytes. An empty ring is backpressure:
//! recvs complete with ENOBUFS and are re-armed once buffers return.

use std::{
    alloc::{self, Layout},
    io,
    mem::size_of,
    ptr::NonNull,
    sync::atomic::{AtomicU16, Ordering},
};

use io_uring::{types, IoUring};
use tracing::warn;

use crate::numa::BufferPool;

pub(super) const BUF_GROUP: u16 = 0;
const PAGE: usize = 4096;

/// Where the buffers live.
enum Memory {
    /// Owned only to keep the region alive (and bound) while the ring uses it.
    Pool(#[allow(dead_code)] BufferPool),
    Owned {
        layout: Layout,
    },
}

pub(super) struct BufRing {
    entries: NonNull<types::BufRingEntry>,
    entries_layout: Layout,
    mem: NonNull<u8>,
    memory: Option<Memory>,
    count: u16,
    size: u32,
    /// Our tail; the kernel sees it once published.
    tail: u16,
    registered: bool,
}

fn invalid(count: usize, size: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "io_uring read buffers: {count} x {size} B (need a power of two up to 32768, size 1 B..4 GiB)"
        ),
    )
}

impl BufRing {
    /// A ring over the buffers of `pool` (its whole region, every buffer).
    pub(super) fn from_pool(pool: BufferPool) -> io::Result<BufRing> {
        let (count, size) = (pool.count(), pool.buf_size());
        let (Ok(c), Ok(s)) = (u16::try_from(count), u32::try_from(size)) else {
            return Err(invalid(count, size));
        };
        let mem = pool.base();
        BufRing::with_memory(c, s, mem, Memory::Pool(pool))
    }

    /// A ring over its own zeroed allocation of `count` x `size` bytes.
    pub(super) fn with_own_memory(count: u16, size: u32) -> io::Result<BufRing> {
        let bytes = usize::from(count).saturating_mul(size as usize);
        let layout = Layout::from_size_align(bytes.max(1), PAGE)
            .map_err(|_| invalid(count.into(), size as usize))?;
        // SAFETY: the layout has a non-zero size.
        let mem = NonNull::new(unsafe { alloc::alloc_zeroed(layout) })
            .ok_or(io::ErrorKind::OutOfMemory)?;
        BufRing::with_memory(count, size, mem, Memory::Owned { layout })
    }

    fn with_memory(count: u16, size: u32, mem: NonNull<u8>, memory: Memory) -> io::Result<BufRing> {
        if !count.is_power_of_two() || count > 32768 || size == 0 {
            // Dropping `memory` frees an owned allocation (a pool frees itself).
            if let Memory::Owned { layout } = memory {
                // SAFETY: allocated just above with this layout; nothing else has it.
                unsafe { alloc::dealloc(mem.as_ptr(), layout) };
            }
            return Err(invalid(count.into(), size as usize));
        }
        let ring_bytes = usize::from(count) * size_of::<types::BufRingEntry>();
        let entries_layout = Layout::from_size_align(ring_bytes, PAGE)
            .map_err(|_| invalid(count.into(), size as usize))?;
        // SAFETY: the layout has a non-zero size (count >= 1).
        let entries = NonNull::new(unsafe { alloc::alloc_zeroed(entries_layout) }.cast())
            .ok_or(io::ErrorKind::OutOfMemory)?;
        let mut ring = BufRing {
            entries,
            entries_layout,
            mem,
            memory: Some(memory),
            count,
            size,
            tail: 0,
            registered: false,
        };
        (0..count).for_each(|bid| ring.push(bid));
        ring.publish();
        Ok(ring)
    }

    pub(super) fn register(&mut self, ring: &IoUring) -> io::Result<()> {
        let addr = self.entries.as_ptr() as u64;
        // SAFETY: `entries` holds `count` page-aligned entries and stays allocated while
        // registered (Drop leaks it rather than free a registered ring).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(addr, self.count, BUF_GROUP, 0)
        }?;
        self.registered = true;
        Ok(())
    }

    pub(super) fn unregister(&mut self, ring: &IoUring) -> io::Result<()> {
        if self.registered {
            ring.submitter().unregister_buf_ring(BUF_GROUP)?;
            self.registered = false;
        }
        Ok(())
    }

    /// Puts buffer `bid` back at the tail (visible to the kernel after `publish`).
    pub(super) fn push(&mut self, bid: u16) {
        let slot = usize::from(self.tail & (self.count - 1));
        // SAFETY: slot < count, inside our allocation. The kernel reads only entries
        // between its head and the published tail; this one is past the tail, and the
        // setters leave entry 0's `resv` (the tail itself) untouched.
        let entry = unsafe { &mut *self.entries.as_ptr().add(slot) };
        entry.set_addr(self.buf_ptr(bid) as u64);
        entry.set_len(self.size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    pub(super) fn publish(&self) {
        // SAFETY: the tail is entry 0's u16 `resv` field inside our live, page-aligned
        // allocation; the kernel only reads it (with acquire ordering).
        let tail = unsafe { types::BufRingEntry::tail(self.entries.as_ptr()) };
        // SAFETY: as above; AtomicU16 has the layout of u16.
        unsafe { AtomicU16::from_ptr(tail.cast_mut()) }.store(self.tail, Ordering::Release);
    }

    pub(super) fn buf_ptr(&self, bid: u16) -> *mut u8 {
        // SAFETY: bid < count, so the offset stays inside the buffer memory.
        unsafe { self.mem.as_ptr().add(usize::from(bid) * self.size as usize) }
    }

    pub(super) fn count(&self) -> u16 {
        self.count
    }

    pub(super) fn buf_size(&self) -> u32 {
        self.size
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.registered {
            warn!("io_uring buffer ring still registered at drop; leaking it");
            std::mem::forget(self.memory.take());
            return;
        }
        // SAFETY: allocated in `with_memory` with this layout; the kernel no longer
        // knows it (never registered, or unregistered).
        unsafe { alloc::dealloc(self.entries.as_ptr().cast(), self.entries_layout) };
        if let Some(Memory::Owned { layout }) = self.memory.take() {
            // SAFETY: allocated in `with_own_memory` with this layout, not registered.
            unsafe { alloc::dealloc(self.mem.as_ptr(), layout) };
        }
        // A pool frees its own region when dropped here.
    }
}
