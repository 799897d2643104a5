//! An opt-in tuning of glibc's malloc for recording loops:
//! [`tune_malloc_for_recording`].
//!
//! Why: a plain forward frees each output as soon as the next exists, so malloc
//! hands the same memory to the next op again and again. A recording keeps every
//! recorded output alive until the run is dropped, so each pass needs fresh memory
//! for all of them. With glibc's defaults, that memory is given back to the kernel
//! when the run is dropped (blocks from 128 KiB up to a sliding threshold are
//! `mmap`ed and unmapped one by one; freed memory at the heap's top beyond twice
//! that threshold is trimmed), so the next pass takes it again page by page: a
//! minor page fault, and a page the kernel zeroes, per 4 KiB recorded. With 1 MB
//! layers that costs ~10 % of the pass (`benches/capture.rs`).
//!
//! The tuning asks glibc to keep freed memory instead: blocks up to 32 MiB come
//! from the heap (`M_MMAP_THRESHOLD`, the largest glibc allows) and up to
//! `keep_bytes` of free memory at a heap's top stay mapped (`M_TRIM_THRESHOLD`).
//! Both are needed: setting the trim threshold alone also turns off glibc's sliding
//! mmap threshold, so every block over 128 KiB is `mmap`ed again.
//!
//! Process-wide and for good: once set, glibc no longer adapts its thresholds,
//! and the process's resident memory stays near its peak (up to `keep_bytes` of it
//! free) after a run is dropped. Layers of more than 32 MiB are still `mmap`ed.
//! The same effect without code: `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=<bytes>`.

/// glibc's largest `M_MMAP_THRESHOLD` on 64-bit targets (`HEAP_MAX_SIZE / 2`).
const MMAP_THRESHOLD_MAX: usize = 32 << 20;

/// Tunes glibc's malloc so that a loop of recorded passes reuses the memory of
/// the previous pass's run instead of faulting in fresh pages: allocations up to
/// 32 MiB come from the heap (`M_MMAP_THRESHOLD`), and up to `keep_bytes` (at most
/// 2 GiB − 1) of freed memory stay mapped (`M_TRIM_THRESHOLD`). Call it once,
/// early, before the loop.
///
/// Why: a plain forward frees each output when the next exists and malloc hands
/// that memory to the next op; a recording keeps every output until the run is
/// dropped, and with glibc's defaults the dropped run goes back to the kernel, so
/// each pass takes a page fault and a zeroed page per 4 KiB recorded (a 20-layer
/// MLP with 1 MiB layers: 1.12–1.30× its plain forward, 1.01× tuned;
/// `benches/capture.rs`).
///
/// Process-wide and permanent: glibc no longer adapts its thresholds, and resident
/// memory stays near its peak (up to `keep_bytes` of it free) after a run is
/// dropped. Layers over 32 MiB are still `mmap`ed.
///
/// Returns `true` when applied; `false` where the allocator is not glibc's (musl,
/// macOS, Windows) or glibc refused a value. A no-op there.
///
/// ```
/// // Keep up to 256 MiB of freed memory for the next pass.
/// let tuned = candlelight::tune_malloc_for_recording(256 << 20);
/// assert_eq!(tuned, cfg!(all(target_os = "linux", target_env = "gnu")));
/// ```
pub fn tune_malloc_for_recording(keep_bytes: usize) -> bool {
    imp::tune(keep_bytes)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    pub fn tune(keep_bytes: usize) -> bool {
        let keep = keep_bytes.min(i32::MAX as usize) as libc::c_int;
        let mmap = super::MMAP_THRESHOLD_MAX as libc::c_int;
        // SAFETY: mallopt only changes the allocator's parameters; it takes its
        // own lock and is safe to call at any time from any thread.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, mmap) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, keep) == 1
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub fn tune(_keep_bytes: usize) -> bool {
        false
    }
}
