//! A provided buffer ring (IORING_REGISTER_PBUF_RING): the kernel picks a buffer for each recv
//! when data arrives, so no connection holds a read buffer while it waits.
//!
//! Ownership of buffer `bid`: the kernel's from the moment its entry is published (the ring's
//! tail moved past it) until a completion names it (IORING_CQE_F_BUFFER); then the worker's,
//! until it calls `recycle(bid)`, which publishes it again.

use std::alloc::{alloc_zeroed, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

pub struct BufRing {
    /// `entries` ring entries, page aligned; never freed (the worker runs for the process's
    /// life), so the kernel's registration can never outlive it.
    ring: *mut BufRingEntry,
    /// `entries * size` bytes of buffers, never freed either.
    bufs: *mut u8,
    entries: u16,
    size: usize,
    /// Our copy of the tail: entries published so far.
    tail: u16,
}

impl BufRing {
    /// Allocates `entries` (a power of two) buffers of `size` bytes, registers them as group
    /// `bgid` of the ring behind `submitter` and hands them all to the kernel.
    pub fn new(submitter: &Submitter, bgid: u16, entries: u16, size: usize) -> io::Result<Self> {
        assert!(entries.is_power_of_two());
        let ring_layout = Layout::from_size_align(
            entries as usize * std::mem::size_of::<BufRingEntry>(),
            4096,
        )
        .map_err(io::Error::other)?;
        let bufs_layout =
            Layout::from_size_align(entries as usize * size, 64).map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size (entries > 0, size > 0 by the callers).
        let (ring, bufs) = unsafe { (alloc_zeroed(ring_layout), alloc_zeroed(bufs_layout)) };
        if ring.is_null() || bufs.is_null() {
            return Err(io::ErrorKind::OutOfMemory.into());
        }
        let mut r = BufRing { ring: ring.cast(), bufs, entries, size, tail: 0 };
        // SAFETY: the ring memory is page aligned, `entries` entries long, and lives for the
        // process (never freed), so it outlives the registration.
        unsafe { submitter.register_buf_ring_with_flags(ring as u64, entries, bgid, 0)? };
        for bid in 0..entries {
            r.push(bid);
        }
        r.publish();
        Ok(r)
    }

    /// The first `len` bytes the kernel wrote into buffer `bid` (named by a completion).
    ///
    /// # Safety
    /// `bid` must be a buffer a completion handed over and not yet recycled (the kernel does
    /// not touch it meanwhile), `len` at most what that completion reported; the slice must be
    /// dropped before `recycle(bid)`.
    pub unsafe fn get(&self, bid: u16, len: usize) -> &[u8] {
        debug_assert!(bid < self.entries && len <= self.size);
        std::slice::from_raw_parts(self.bufs.add(bid as usize * self.size), len)
    }

    /// Hands buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        self.push(bid);
        self.publish();
    }

    /// Writes the entry at our tail. The slot is free: at most `entries` buffers exist, and
    /// the one being pushed is not in the ring, so the kernel's published-but-unconsumed
    /// entries (head..tail) number fewer than `entries` and do not include the slot at `tail`.
    fn push(&mut self, bid: u16) {
        let slot = (self.tail & (self.entries - 1)) as usize;
        // SAFETY: `slot` < entries, within the allocation; the kernel does not read it until
        // `publish` moves the tail past it (see above), so this write races with nothing.
        let e = unsafe { &mut *self.ring.add(slot) };
        // SAFETY: bid < entries, so the buffer is within the buffers' allocation.
        e.set_addr(unsafe { self.bufs.add(bid as usize * self.size) } as u64);
        e.set_len(self.size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the pushed entries visible to the kernel (a release store of the tail, after the
    /// entries' writes).
    fn publish(&self) {
        // SAFETY: the tail field lives in the first entry of our ring (io_uring_buf_ring's
        // layout), is u16-aligned, and is written only by us; the kernel reads it with an
        // acquire load, which pairs with this release store.
        unsafe {
            let tail = BufRingEntry::tail(self.ring) as *mut u16;
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}
