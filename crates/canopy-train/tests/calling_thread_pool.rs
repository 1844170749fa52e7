//! `canopy_nn::use_calling_thread` in a process of its own (it builds rayon's global pool):
//! the calling thread becomes worker 0, ops give the same values, and a prefetching batcher,
//! whose thread runs parallel loops from outside the pool, still delivers every batch while
//! the calling thread waits for them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use candle_core::{Device, Tensor};
use canopy_nn::ops::{conv1d, Axis1, Conv1dConfig};
use canopy_train::batch::{BatchConfig, Batcher};

fn conv(x: &Tensor, w: &Tensor) -> Vec<f32> {
    let cfg = Conv1dConfig {
        axis: Axis1 {
            stride: 2,
            padding: 3,
            dilation: 1,
        },
        groups: 1,
    };
    conv1d(x, w, None, cfg)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn calling_thread_is_worker_zero_and_batches_still_arrive() {
    // the only test of this binary: nothing else reads the environment or builds the pool
    std::env::set_var("RAYON_NUM_THREADS", "2");
    std::env::remove_var(canopy_nn::parallel::OPT_OUT);

    // the reference values come from a pool of their own (using the global pool here would
    // build it)
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (64, 16, 45), &dev).unwrap();
    let w = Tensor::randn(0f32, 0.1, (32, 16, 7), &dev).unwrap();
    let separate = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let expected = separate.install(|| conv(&x, &w));

    let preset = std::env::var(canopy_nn::parallel::CANDLE_SPIN_LIMIT).ok();
    assert!(canopy_nn::use_calling_thread());
    // candle's element-wise pool is told to sleep soon after each op, unless the caller said
    // otherwise
    let expected_spins = preset.unwrap_or_else(|| canopy_nn::parallel::CANDLE_SPINS.to_string());
    assert_eq!(
        std::env::var(canopy_nn::parallel::CANDLE_SPIN_LIMIT).ok(),
        Some(expected_spins)
    );
    assert!(!canopy_nn::parallel::limit_candle_spinning());
    assert_eq!(rayon::current_thread_index(), Some(0));
    assert_eq!(rayon::current_num_threads(), 2);
    // the pool exists now: a second call changes nothing
    assert!(!canopy_nn::use_calling_thread());

    assert_eq!(conv(&x, &w), expected);

    let batcher = Batcher::new(
        (0..1000u32).collect::<Vec<_>>(),
        |items: Vec<u32>| Ok(items.iter().map(|&v| u64::from(v)).sum::<u64>()),
        BatchConfig {
            batch_size: 10,
            shuffle: true,
            seed: 7,
            drop_last: false,
            prefetch: 2,
        },
    )
    .unwrap();
    for epoch in 0..3 {
        let mut total = 0;
        let mut batches = 0;
        for batch in batcher.epoch(epoch) {
            total += batch.unwrap();
            batches += 1;
            // parallel work on this thread between batches, as a training step does
            assert_eq!(conv(&x, &w).len(), expected.len());
        }
        assert_eq!((batches, total), (100, 999 * 1000 / 2));
    }
}
