//! The calling thread as a worker of rayon's global thread pool.
//!
//! canopy's CPU kernels split their work with rayon. A program's main thread is not one of
//! rayon's workers, so every parallel op it calls is handed over to the pool: the op is queued
//! as a job, the workers are woken, and the main thread sleeps on a lock until they are done
//! and wake it again. A training step of a small time-series model runs hundreds of such ops,
//! and on a machine with as many cores as workers the sleeping main thread is one thread more
//! than there are cores. Measured on the 2-core benchmark machine, one process at a time
//! (docs/benchmarks.md, 2026-12-03): a single MS-ResNet 1-D convolution's backward pass
//! took 4.3 ms or, in about half of the processes, 8-12 ms (the threads waiting on each other,
//! not computing: same CPU time, more context switches), and never more than 4.3 ms with the
//! calling thread in the pool; BreizhCrops training steps ran 5-10 % faster.
//!
//! [`use_calling_thread`] builds rayon's global pool with the calling thread as its worker 0,
//! the way OpenMP runs PyTorch's parallel loops on the thread that calls them: the ops start
//! their parallel loops on that thread and it computes its share; one thread fewer is spawned.
//!
//! It changes process-wide behaviour, so the library never calls it by itself: binaries opt in
//! (the `canopy` CLI, the examples and the benchmarks call it first thing in `main`, as they
//! call [`crate::keep_freed_memory`]).
//!
//! candle 0.11 runs its own element-wise ops (binary and unary maps over large tensors: the
//! optimiser's updates, gradient accumulation) on a second pool of its own, whose workers spin
//! for 25,000 iterations after each job before they sleep, on the cores rayon's workers need
//! next. [`use_calling_thread`] therefore also calls [`limit_candle_spinning`]: training steps
//! 5-9 % faster on the 2-core machine (MS-ResNet 209 -> 200 ms, Transformer 246 -> 220 ms,
//! the smp-style ResNet-18 U-Net 1.11 -> 1.05 s; docs/benchmarks.md, 2026-12-03).
//!
//! # Caveats
//! The thread that called it is then part of the pool: it runs rayon jobs while it waits inside
//! a parallel op (as every worker does), and a `rayon::broadcast` started from *another* thread
//! waits until this thread next enters rayon. Do not make it block on a thread that calls
//! `rayon::broadcast` (canopy itself only broadcasts from the thread that writes a GeoTIFF).
//! Ordinary parallel loops started from other threads (canopy-train's prefetching batcher) are
//! run by the other workers, which is why a pool of one thread is left as rayon builds it.

/// Environment variable that turns [`use_calling_thread`] off when set to `0` (to compare, or to
/// rule it out when a program that embeds canopy hangs).
pub const OPT_OUT: &str = "CANOPY_CALLING_THREAD_IN_POOL";

/// candle's environment variable for the spin count of its element-wise worker pool.
pub const CANDLE_SPIN_LIMIT: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

/// Spins after a job before candle's pool workers sleep, when [`limit_candle_spinning`] sets
/// it (candle's default is 25,000; 0 and 2,000 measured the same).
pub const CANDLE_SPINS: u32 = 2000;

/// Sets [`CANDLE_SPIN_LIMIT`] to [`CANDLE_SPINS`] unless the environment already sets it, so
/// that candle's element-wise worker pool sleeps soon after each op instead of spinning on a
/// core the rayon workers need (see the module docs). candle reads the variable once, when its
/// pool starts (at the first large element-wise op): call this first thing in `main`, before
/// other threads exist (it changes the process environment). Returns whether it set the
/// variable. [`use_calling_thread`] calls it.
pub fn limit_candle_spinning() -> bool {
    if std::env::var_os(CANDLE_SPIN_LIMIT).is_some() {
        return false;
    }
    std::env::set_var(CANDLE_SPIN_LIMIT, CANDLE_SPINS.to_string());
    true
}

/// Builds rayon's global thread pool with the calling thread as worker 0 (see the module docs),
/// after [`limit_candle_spinning`].
///
/// The pool gets the number of threads rayon would choose itself (`RAYON_NUM_THREADS` when set
/// to a positive number, else the number of logical CPUs). Returns `true` when the pool was
/// built that way; `false`, changing nothing, when the pool would have a single thread (the
/// calling thread would then be the only one able to run jobs that other threads start), when
/// the global pool already exists (it is built on first use: call this first thing in `main`),
/// or when the environment variable [`OPT_OUT`] is `0`.
pub fn use_calling_thread() -> bool {
    limit_candle_spinning();
    let var = |name| std::env::var(name).ok();
    if var(OPT_OUT).as_deref() == Some("0") {
        return false;
    }
    let threads = pool_threads(
        var("RAYON_NUM_THREADS").as_deref(),
        var("RAYON_RS_NUM_CPUS").as_deref(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    threads >= 2
        && rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .use_current_thread()
            .build_global()
            .is_ok()
}

/// The number of threads rayon's default pool gets (rayon-core 1.13's rule): `RAYON_NUM_THREADS`
/// when it is a positive number, the CPUs when it is 0, else the deprecated `RAYON_RS_NUM_CPUS`
/// when positive, else the CPUs.
fn pool_threads(env: Option<&str>, deprecated: Option<&str>, cpus: usize) -> usize {
    let parse = |v: Option<&str>| v.and_then(|s| s.parse::<usize>().ok());
    match parse(env) {
        Some(0) => cpus,
        Some(n) => n,
        None => parse(deprecated).filter(|&n| n > 0).unwrap_or(cpus),
    }
}

#[cfg(test)]
mod tests {
    use super::pool_threads;

    #[test]
    fn thread_count_follows_rayon_rules() {
        assert_eq!(pool_threads(None, None, 8), 8);
        assert_eq!(pool_threads(Some("3"), None, 8), 3);
        assert_eq!(pool_threads(Some("1"), Some("4"), 8), 1);
        // zero means "the CPUs"; values that do not parse fall through to the old variable
        assert_eq!(pool_threads(Some("0"), Some("4"), 8), 8);
        assert_eq!(pool_threads(Some(" 2 "), None, 8), 8);
        assert_eq!(pool_threads(Some("many"), Some("3"), 4), 3);
        assert_eq!(pool_threads(None, Some("0"), 6), 6);
    }
}
