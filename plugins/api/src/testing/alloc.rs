//! A counting allocator for test binaries: counts allocations made by the current thread, so
//! a test can prove a path allocates nothing (deterministic, unlike timings). A test crate
//! installs it once:
//!
//! ```ignore
//! #[cfg(test)]
//! #[global_allocator]
//! static ALLOC: ringsmtpd_plugin_api::testing::CountingAlloc =
//!     ringsmtpd_plugin_api::testing::CountingAlloc;
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, counting each thread's allocations.
pub struct CountingAlloc;

// SAFETY: forwards to `System` unchanged; the counter is a const-initialised thread-local
// without destructor, so touching it never allocates or re-enters.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` above with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations made by this thread so far (0 unless [`CountingAlloc`] is the global
/// allocator).
pub fn allocations() -> usize {
    COUNT.with(|c| c.get())
}
