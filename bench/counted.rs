//! image-bouncer with a counting global allocator, for bench/run.sh's
//! allocations per review: the same `image_bouncer::run` as the real
//! binary, with every allocation and reallocation counted. Every 10 ms the
//! total is written to the file `ALLOCATIONS_FILE` names (replaced whole,
//! so a reader never sees half a number).
//!
//!   ALLOCATIONS_FILE=/tmp/allocs cargo run --release --example counted -- serve ...
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// The system allocator, counting.
struct Counting;

// SAFETY: every call goes unchanged to the system allocator, which upholds
// GlobalAlloc's contract; counting is an atomic add and allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() -> ExitCode {
    if let Some(path) = std::env::var_os("ALLOCATIONS_FILE") {
        let path = std::path::PathBuf::from(path);
        let tmp = path.with_extension("tmp");
        std::thread::spawn(move || {
            loop {
                // Formatted on the stack: the counter counts no allocation
                // of its own.
                let mut digits = [0u8; 24];
                let mut out = &mut digits[..];
                let _ = write!(out, "{}", ALLOCATIONS.load(Ordering::Relaxed));
                let len = 24 - out.len();
                if std::fs::write(&tmp, &digits[..len]).is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    image_bouncer::run(&args)
}
