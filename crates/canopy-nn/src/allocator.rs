//! Keep freed tensor buffers inside the process.
//!
//! Training and whole-scene inference allocate and free the same large buffers (activations,
//! gradients, im2col blocks of tens of MB) on every step. glibc's `malloc` serves every block
//! larger than its mmap threshold (at most 32 MiB, often far less) with a fresh `mmap` and returns
//! it with `munmap` when it is freed, so each step pays again for page faults and for the kernel
//! zeroing those pages. On this project's benchmark machine that was about a fifth of a U-Net
//! training step (`perf`: `clear_page_erms`, `exc_page_fault` and the rest of the fault path),
//! and turning it off made the step about 20 % faster (docs/benchmarks.md).
//!
//! [`keep_freed_memory`] tells glibc to take all memory from its heap and to keep freed memory
//! for reuse instead of giving it back. It changes process-wide allocator behaviour, so the
//! library never calls it by itself: binaries opt in (the `canopy` CLI and the training examples
//! call it first thing in `main`). The cost is that the process keeps its peak heap size until it
//! exits (up to 2 GiB of free memory is kept before glibc trims). Limit: in threads other than
//! the main thread glibc still maps blocks larger than its 64 MiB per-thread heap directly
//! (its fallback ignores the setting); tensors built on the main thread, as in the CLI and the
//! examples, are not affected by that.

/// Asks glibc's allocator to serve large blocks from its heap and keep freed memory, so
/// repeated tensor allocations do not page-fault again. Returns `true` when every setting was
/// accepted, `false` where it is unavailable (not Linux with glibc, e.g. musl or macOS) or was
/// refused; the program works the same either way, only slower.
///
/// Call it once, at the start of `main`, before threads are started.
pub fn keep_freed_memory() -> bool {
    imp::keep_freed_memory()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    /// Free memory at the top of the heap kept before glibc trims it (2 GiB - 1).
    const TRIM_THRESHOLD: libc::c_int = libc::c_int::MAX;
    /// Extra memory requested with each heap extension (256 MiB), so a growing heap does not
    /// call `brk` for every new activation.
    const TOP_PAD: libc::c_int = 256 << 20;

    pub(super) fn keep_freed_memory() -> bool {
        // SAFETY: `mallopt` only changes allocator tuning parameters; glibc documents it as safe
        // to call at any time (it takes the arena locks itself). Blocks already served by mmap
        // are still released correctly by `free`.
        #[allow(unsafe_code)]
        unsafe {
            let no_mmap = libc::mallopt(libc::M_MMAP_MAX, 0) == 1;
            let trim = libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1;
            let pad = libc::mallopt(libc::M_TOP_PAD, TOP_PAD) == 1;
            no_mmap && trim && pad
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn keep_freed_memory() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::keep_freed_memory;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_accepts_the_settings_and_large_buffers_still_work() {
        assert!(keep_freed_memory(), "glibc refused a mallopt setting");
        // 48 MiB, above any mmap threshold (32 MiB at most) and below the 64 MiB heap size of
        // the per-thread arenas (the test runs on a harness thread, not the main thread): now served from the heap, freed, served again, and
        // the bytes glibc holds in mmap'ed blocks never grow (without the settings they would
        // grow by 48 MiB while the vector lives).
        #[allow(unsafe_code)]
        let mapped = || unsafe { libc::mallinfo2() }.hblkhd;
        let before = mapped();
        for round in 0..3u8 {
            let mut v = vec![round; 48 << 20];
            assert!(mapped() <= before, "a 48 MiB block was served by mmap");
            v[(48 << 20) - 1] = round.wrapping_add(1);
            assert_eq!(v[0], round);
            assert_eq!(v[(48 << 20) - 1], round.wrapping_add(1));
        }
    }

    #[test]
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    fn elsewhere_it_reports_unavailable() {
        assert!(!keep_freed_memory());
    }
}
