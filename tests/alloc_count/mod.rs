//! A counting global allocator for the tests that bound what a piece of
//! code allocates: the largest single allocation and the bytes allocated
//! on the current thread while [`measured`] runs. A test binary that
//! includes this module (`mod alloc_count;`) allocates through it.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static COUNTS: Cell<Option<Alloc>> = const { Cell::new(None) };
}

/// What a measured piece of code allocated.
#[derive(Clone, Copy, Debug, Default)]
pub struct Alloc {
    /// The largest single allocation (or reallocation), in bytes.
    pub largest: usize,
    /// All bytes allocated, reallocations counted at their new size.
    pub total: usize,
}

fn note(size: usize) {
    let _ = COUNTS.try_with(|c| {
        if let Some(a) = c.get() {
            c.set(Some(Alloc {
                largest: a.largest.max(size),
                total: a.total.saturating_add(size),
            }));
        }
    });
}

// SAFETY: every call is passed on to the system allocator unchanged; the
// counting touches only a thread-local cell.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`, counting what it allocates on this thread.
pub fn measured<R>(f: impl FnOnce() -> R) -> (R, Alloc) {
    COUNTS.with(|c| c.set(Some(Alloc::default())));
    let r = f();
    let a = COUNTS.with(|c| c.take()).unwrap_or_default();
    (r, a)
}
