//! The allocator a load-bench process runs on, so that one run can measure every
//! server on both: `ERIC_LOAD_ALLOCATOR=system` for the system allocator, anything else
//! (or nothing) for jemalloc, which the `eric` binary ships with. Read at the process's
//! first allocation, before any thread exists, and kept: every block is freed by the
//! allocator that made it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::CStr;
use std::sync::atomic::{AtomicU8, Ordering};

use tikv_jemallocator::Jemalloc;

/// The environment variable that chooses.
pub(crate) const VAR: &str = "ERIC_LOAD_ALLOCATOR";

const UNDECIDED: u8 = 0;
const SYSTEM: u8 = 1;
const JEMALLOC: u8 = 2;

static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// The system allocator or jemalloc, as [`VAR`] says.
pub(crate) struct Switch;

fn system() -> bool {
    let mut choice = CHOICE.load(Ordering::Relaxed);
    if choice == UNDECIDED {
        // `std::env` would allocate, here of all places; getenv does not. The first
        // allocation happens before `main`, on the only thread.
        // SAFETY: a NUL-terminated name; the result is NULL or a NUL-terminated string
        // that nothing changes while it is read.
        let system = unsafe {
            let value = libc::getenv(c"ERIC_LOAD_ALLOCATOR".as_ptr());
            !value.is_null() && CStr::from_ptr(value) == c"system"
        };
        choice = if system { SYSTEM } else { JEMALLOC };
        CHOICE.store(choice, Ordering::Relaxed);
    }
    choice == SYSTEM
}

/// `system` or `jemalloc`: what this process allocates with.
pub(crate) fn name() -> &'static str {
    if system() { "system" } else { "jemalloc" }
}

fn chosen() -> &'static dyn GlobalAlloc {
    if system() { &System } else { &Jemalloc }
}

// SAFETY: every call goes to one allocator for the life of the process (see `system`),
// which upholds GlobalAlloc's contract itself.
unsafe impl GlobalAlloc for Switch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        unsafe { chosen().alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as received.
        unsafe { chosen().alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from the same allocator.
        unsafe { chosen().dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from the same allocator.
        unsafe { chosen().realloc(ptr, layout, new_size) }
    }
}
