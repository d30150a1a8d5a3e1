//! The binary's allocator: mimalloc, called the way the proxy's allocations need.
//!
//! The `mimalloc` crate's `GlobalAlloc` passes every request to `mi_malloc_aligned`, whose
//! fast path only covers blocks of up to 1 KiB; anything larger (a session's attachment
//! to its server, a read buffer) takes the generic aligned path, about four times the
//! instructions of a plain `mi_malloc` (callgrind: ~250 per transaction of pgbench -S).
//! Every mimalloc block is aligned to at least a machine word, so requests with an
//! alignment of 8 or less go to the plain entry points; larger alignments keep the
//! aligned ones.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as ffi;

/// Alignment every mimalloc block has (`MI_INTPTR_SIZE`: blocks are word multiples in
/// word-aligned pages).
const WORD: usize = std::mem::size_of::<usize>();

pub struct MiMalloc;

// SAFETY: mimalloc's entry points are thread-safe and return blocks of at least the
// requested size, aligned as asked (explicitly, or by the word alignment every block has
// when `align <= WORD`), or null on failure; `mi_free` takes any of them.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            ffi::mi_malloc(layout.size()).cast()
        } else {
            ffi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            ffi::mi_zalloc(layout.size()).cast()
        } else {
            ffi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        ffi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            ffi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            ffi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}

extern "C" {
    /// mimalloc's option setter (in the library `libmimalloc-sys` links).
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
}

/// Options in mimalloc.h's option enum.
const MI_OPTION_ARENA_EAGER_COMMIT: std::ffi::c_int = 4;
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// Commit arena memory as it is used, not up front: with eager commit, 1,000 idle clients
/// cost ~31 MiB of RSS instead of ~21 MiB (benches/idle_clients.py). Set from the ELF
/// initialisers, before Rust's runtime makes its first allocation (and so before mimalloc
/// creates its first arena); set later, the option no longer applies to that arena.
extern "C" fn mimalloc_options() {
    // SAFETY: sets a plain integer option; no allocation has happened yet.
    unsafe {
        mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        mi_option_set(MI_OPTION_PURGE_DELAY, 0);
    }
}

#[used]
#[cfg_attr(target_os = "linux", link_section = ".init_array")]
static MIMALLOC_OPTIONS: extern "C" fn() = mimalloc_options;

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks come back aligned as asked, for the plain and the aligned entry points,
    /// sizes on both sides of mimalloc's 1 KiB small-block limit, and through realloc.
    #[test]
    fn blocks_are_aligned_as_asked() {
        let a = MiMalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1, 3, 8, 24, 100, 1024, 1500, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; each block is freed with the layout it was made with.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "alloc {size}/{align}");
                    p.write_bytes(0xab, size);
                    let q = a.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "realloc {size}/{align}");
                    assert_eq!(*q.add(size - 1), 0xab, "realloc keeps the contents");
                    a.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "alloc_zeroed {size}/{align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}
