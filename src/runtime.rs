//! Process-wide settings: what keeps libtorch's CPU work from waiting on the kernel, and how
//! output into a closed pipe ends the process.
//!
//! libtorch allocates every CPU tensor with glibc's `posix_memalign`. A training step allocates
//! and frees the same activation buffers each time, many of them larger than glibc's mmap
//! threshold (32 MiB at most), so by default each is a fresh `mmap` whose pages the kernel
//! zero-fills on first touch and which `munmap` gives back on free: tens of thousands of page
//! faults per step of the seed network at batch 32. Serving large blocks from the heap and never
//! trimming it lets each step reuse the memory of the one before: the process keeps about its
//! peak (1.49 GB resident at most for `inception train` on MSLD, 1.44 GB without), and the bf16
//! channels-last training step runs 1.2× and inference 1.3× faster on 2 cores (README, Speed).
//! glibc only; elsewhere a no-op.

/// Makes glibc's malloc keep freed memory for reuse instead of unmapping it. Call once at
/// start, before the first large allocation. Returns whether the settings were applied.
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Gives SIGPIPE its default action back (Rust's runtime ignores it, so that a write into a
/// closed pipe fails, and `println!` then panics): `inception predict … | head` ends quietly
/// once `head` has read enough, as `cat` does. Not for the commands that talk over sockets
/// (serve's clients, c10d's peers in training), where a peer that goes away must be an error,
/// not the end of the process.
pub fn end_quietly_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default is async-signal-safe and has no
    // other effect on this process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Minor page faults of this process so far (all threads), the cost
/// [`retain_freed_memory`] removes; benches and tests read it.
pub fn page_faults() -> i64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return 0;
        }
        usage.ru_minflt
    }
}
