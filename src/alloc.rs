//! The engine's allocator: mimalloc, for the engine's own allocations (tokio's task and
//! I/O registration per connection, buffers, boxed futures); Python's objects stay with
//! Python's allocator.
//!
//! glibc's `malloc` is slow for what the engine allocates per connection: tokio's
//! 128-byte-aligned blocks go through `posix_memalign`, and it consolidates its bins.
//! mimalloc is built v2 (v3 keeps more of an idle worker's heap resident), without
//! transparent huge pages (with them, a few pages touched in 2 MiB of heap make the whole
//! 2 MiB resident), and with dynamic TLS, as a library loaded by `dlopen` needs. The
//! measurements: bench/README.md, "History of the measurements".

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// Every mimalloc block of at least this size is aligned to it (`MI_MAX_ALIGN_SIZE`).
const MALLOC_ALIGN: usize = 16;

/// Plain `mi_malloc` where its blocks are aligned enough, which is nearly every Rust
/// allocation: `mi_malloc_aligned` for all of them (as the `mimalloc` crate does) takes a
/// slower path that checks and adjusts the alignment on every call, and a request makes
/// several allocations.
pub(crate) struct Mimalloc;

fn plain(align: usize, size: usize) -> bool {
    align <= MALLOC_ALIGN && align <= size
}

// SAFETY: mimalloc returns blocks of at least the requested size and alignment (plain
// `mi_malloc` only where its own guarantee covers the alignment), or null.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation functions may be called with any size and a
        // power-of-two alignment, which `Layout` guarantees.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: the caller passes a block this allocator returned (GlobalAlloc's
        // contract); mimalloc frees any of its blocks whatever their alignment.
        unsafe {
            mi::mi_free(ptr.cast::<c_void>());
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` is a block of this allocator of `layout` (GlobalAlloc's contract),
        // and the aligned variant keeps `layout`'s alignment.
        unsafe {
            if plain(layout.align(), new_size) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every layout gets a block aligned as asked, zeroed when asked, and realloc keeps the
    /// contents and the alignment, on both sides of the plain/aligned split (align 16,
    /// size < align, tokio's 128).
    #[test]
    fn blocks_are_aligned_and_keep_their_contents() {
        let a = Mimalloc;
        for align in [1, 2, 8, 16, 32, 128, 4096] {
            for size in [1, 8, 15, 16, 24, 100, 128, 384, 5000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: each block is used within its size and freed once, with the
                // layout it was made with.
                unsafe {
                    let p = a.alloc_zeroed(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    assert!((0..size).all(|i| *p.add(i) == 0));
                    for i in 0..size {
                        *p.add(i) = i as u8;
                    }
                    let q = a.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "realloc size {size} align {align}");
                    assert!((0..size).all(|i| *q.add(i) == i as u8));
                    a.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                    let r = a.alloc(layout);
                    assert_eq!(r as usize % align, 0);
                    a.dealloc(r, layout);
                }
            }
        }
    }
}
