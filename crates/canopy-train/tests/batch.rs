//! Seeded batching with a prefetching worker thread.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use canopy_train::batch::{BatchConfig, BatchSource, Batcher, Dataset};
use canopy_train::Result;

fn ids(b: &Batcher<Vec<usize>, Vec<usize>>, epoch: usize) -> Vec<Vec<usize>> {
    b.epoch(epoch).map(|r| r.unwrap()).collect()
}

fn batcher(cfg: BatchConfig) -> Batcher<Vec<usize>, Vec<usize>> {
    Batcher::new((0..23).collect::<Vec<usize>>(), Ok, cfg).unwrap()
}

#[test]
fn epochs_are_seeded_permutations_and_threading_does_not_change_them() {
    let cfg = BatchConfig {
        batch_size: 5,
        seed: 42,
        prefetch: 0,
        ..Default::default()
    };
    let inline = batcher(cfg.clone());
    let threaded = batcher(BatchConfig {
        prefetch: 3,
        ..cfg.clone()
    });
    let e0 = ids(&inline, 0);
    assert_eq!(e0.len(), 5);
    assert_eq!(inline.len(), 5);
    assert_eq!(e0.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5, 5, 5, 3]);
    let mut all: Vec<usize> = e0.concat();
    assert_ne!(all, (0..23).collect::<Vec<_>>(), "shuffle changed nothing");
    all.sort_unstable();
    assert_eq!(all, (0..23).collect::<Vec<_>>());
    assert_eq!(ids(&threaded, 0), e0);
    assert_eq!(ids(&threaded, 1), ids(&inline, 1));
    assert_ne!(ids(&inline, 1), e0, "epochs should differ");
    let other_seed = batcher(BatchConfig { seed: 43, ..cfg });
    assert_ne!(ids(&other_seed, 0), e0);
}

#[test]
fn drop_last_and_no_shuffle() {
    let b = batcher(BatchConfig {
        batch_size: 5,
        shuffle: false,
        drop_last: true,
        ..Default::default()
    });
    let e = ids(&b, 3);
    assert_eq!(b.len(), 4);
    assert_eq!(e.len(), 4);
    assert_eq!(e[0], [0, 1, 2, 3, 4]);
    assert_eq!(e[3], [15, 16, 17, 18, 19]);
    assert_eq!(b.num_batches(), Some(4));
    assert!(Batcher::new(
        vec![1usize],
        Ok,
        BatchConfig {
            batch_size: 0,
            ..Default::default()
        }
    )
    .is_err());
}

struct Failing;

impl Dataset for Failing {
    type Item = usize;
    fn len(&self) -> usize {
        10
    }
    fn get(&self, i: usize) -> Result<usize> {
        if i == 7 {
            Err(canopy_train::Error::Io {
                path: "sample7.tif".into(),
                source: std::io::Error::other("unreadable"),
            })
        } else {
            Ok(i)
        }
    }
}

#[test]
fn sample_errors_reach_the_consumer_and_end_the_epoch() {
    for prefetch in [0, 2] {
        let b = Batcher::new(
            Failing,
            Ok,
            BatchConfig {
                batch_size: 4,
                shuffle: false,
                prefetch,
                ..Default::default()
            },
        )
        .unwrap();
        let got: Vec<_> = b.epoch(0).collect();
        assert_eq!(got.len(), 2, "prefetch {prefetch}");
        assert!(got[0].is_ok());
        let err = got[1].as_ref().unwrap_err().to_string();
        assert!(err.contains("sample7.tif"), "{err}");
    }
}

struct Slow;

impl Dataset for Slow {
    type Item = usize;
    fn len(&self) -> usize {
        12
    }
    fn get(&self, i: usize) -> Result<usize> {
        std::thread::sleep(Duration::from_millis(8));
        Ok(i)
    }
}

#[test]
fn prefetching_overlaps_data_preparation_with_the_step() {
    let time = |prefetch| {
        // One sample per batch so that rayon cannot parallelise inside the batch.
        let b = Batcher::new(
            Slow,
            Ok,
            BatchConfig {
                batch_size: 1,
                shuffle: false,
                prefetch,
                ..Default::default()
            },
        )
        .unwrap();
        let t = Instant::now();
        for batch in b.epoch(0) {
            batch.unwrap();
            std::thread::sleep(Duration::from_millis(8)); // the "training step"
        }
        t.elapsed()
    };
    let inline = time(0);
    let threaded = time(2);
    println!("inline {inline:?}, prefetch {threaded:?}");
    assert!(
        threaded.as_secs_f64() < 0.8 * inline.as_secs_f64(),
        "inline {inline:?}, prefetch {threaded:?}"
    );
}

#[test]
fn dropping_an_epoch_early_stops_the_worker() {
    let b = Batcher::new(
        Slow,
        Ok,
        BatchConfig {
            batch_size: 1,
            prefetch: 1,
            ..Default::default()
        },
    )
    .unwrap();
    let t = Instant::now();
    let mut e = b.epoch(0);
    e.next().unwrap().unwrap();
    drop(e);
    // Joining the worker must not wait for the 11 remaining samples (about 90 ms).
    assert!(t.elapsed() < Duration::from_millis(80), "{:?}", t.elapsed());
}
