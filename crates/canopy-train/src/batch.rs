//! Seeded mini-batches from any indexable [`Dataset`], prepared on a worker thread.
//!
//! A [`Batcher`] draws the sample order of epoch `e` from a generator seeded by
//! `(seed, e)`, cuts it into batches (optionally dropping a short last batch) and hands each
//! batch's samples to a collate function. With `prefetch > 0` a worker thread prepares the next
//! `prefetch` batches while the model trains on the current one, loading the samples of a batch
//! in parallel (rayon) and keeping their order; the sequence of batches is the same with or
//! without the thread, so runs stay reproducible.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use crate::error::invalid;
use crate::{Error, Result};

/// A collection of samples addressed by index (PyTorch's map-style `Dataset`).
pub trait Dataset: Send + Sync {
    /// One sample (e.g. a tensor and a label).
    type Item: Send;

    /// Number of samples.
    fn len(&self) -> usize;

    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sample `index` (`< len()`).
    ///
    /// # Errors
    /// When the sample cannot be produced (out of range, unreadable file, ...).
    fn get(&self, index: usize) -> Result<Self::Item>;
}

impl<T: Clone + Send + Sync> Dataset for Vec<T> {
    type Item = T;

    fn len(&self) -> usize {
        <[T]>::len(self)
    }

    fn get(&self, index: usize) -> Result<T> {
        <[T]>::get(self, index).cloned().ok_or_else(|| {
            invalid(
                "Dataset::get",
                format!(
                    "index {index} out of range for {} samples",
                    <[T]>::len(self)
                ),
            )
        })
    }
}

/// How a [`Batcher`] cuts and orders an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    /// Samples per batch (> 0).
    pub batch_size: usize,
    /// Shuffle the samples every epoch (seeded by `seed` and the epoch).
    pub shuffle: bool,
    /// Seed of the shuffling.
    pub seed: u64,
    /// Drop the last batch when it is shorter than `batch_size`.
    pub drop_last: bool,
    /// Batches prepared ahead on a worker thread (0: prepare in the caller's thread).
    pub prefetch: usize,
}

impl Default for BatchConfig {
    /// Batches of 32, shuffled with seed 0, short last batch kept, 2 batches prefetched.
    fn default() -> Self {
        BatchConfig {
            batch_size: 32,
            shuffle: true,
            seed: 0,
            drop_last: false,
            prefetch: 2,
        }
    }
}

type Collate<I, B> = Arc<dyn Fn(Vec<I>) -> Result<B> + Send + Sync>;

/// Turns a [`Dataset`] into batches, epoch by epoch; see the module docs.
pub struct Batcher<D: Dataset, B> {
    dataset: Arc<D>,
    collate: Collate<D::Item, B>,
    cfg: BatchConfig,
}

impl<D: Dataset, B> std::fmt::Debug for Batcher<D, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("len", &self.dataset.len())
            .field("cfg", &self.cfg)
            .finish()
    }
}

/// Where a batch comes from, epoch after epoch (what the trainer consumes).
pub trait BatchSource {
    /// One batch.
    type Batch;

    /// The batches of epoch `epoch` (0-based).
    ///
    /// # Errors
    /// When the epoch cannot be started.
    fn batches(&self, epoch: usize) -> Result<Box<dyn Iterator<Item = Result<Self::Batch>> + '_>>;

    /// Number of batches per epoch, when known (for progress bars).
    fn num_batches(&self) -> Option<usize>;
}

impl<B: Clone> BatchSource for Vec<B> {
    type Batch = B;

    fn batches(&self, _epoch: usize) -> Result<Box<dyn Iterator<Item = Result<B>> + '_>> {
        Ok(Box::new(self.iter().cloned().map(Ok)))
    }

    fn num_batches(&self) -> Option<usize> {
        Some(self.len())
    }
}

impl<D, B> Batcher<D, B>
where
    D: Dataset + 'static,
    B: Send + 'static,
{
    /// A batcher over `dataset` using `collate` to assemble batches.
    ///
    /// # Errors
    /// When `cfg.batch_size` is 0.
    pub fn new(
        dataset: D,
        collate: impl Fn(Vec<D::Item>) -> Result<B> + Send + Sync + 'static,
        cfg: BatchConfig,
    ) -> Result<Self> {
        if cfg.batch_size == 0 {
            return Err(invalid("Batcher", "batch_size must be at least 1"));
        }
        Ok(Batcher {
            dataset: Arc::new(dataset),
            collate: Arc::new(collate),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BatchConfig {
        &self.cfg
    }

    /// The dataset.
    pub fn dataset(&self) -> &D {
        &self.dataset
    }

    /// The sample indices of epoch `epoch` in the order they are served (before cutting).
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.dataset.len()).collect();
        if self.cfg.shuffle {
            let mix = (epoch as u64)
                .wrapping_add(1)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut rng = StdRng::seed_from_u64(self.cfg.seed ^ mix);
            idx.shuffle(&mut rng);
        }
        idx
    }

    fn chunks(&self, epoch: usize) -> Vec<Vec<usize>> {
        let bs = self.cfg.batch_size;
        self.order(epoch)
            .chunks(bs)
            .filter(|c| !self.cfg.drop_last || c.len() == bs)
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// Number of batches in an epoch.
    pub fn len(&self) -> usize {
        let (n, bs) = (self.dataset.len(), self.cfg.batch_size);
        if self.cfg.drop_last {
            n / bs
        } else {
            n.div_ceil(bs)
        }
    }

    /// Whether an epoch has no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batches of epoch `epoch`, prepared ahead on a worker thread when `prefetch > 0`.
    pub fn epoch(&self, epoch: usize) -> Batches<B> {
        let chunks = self.chunks(epoch);
        let total = chunks.len();
        let dataset = Arc::clone(&self.dataset);
        let collate = Arc::clone(&self.collate);
        let make = move |chunk: &[usize]| -> Result<B> {
            let items = chunk
                .par_iter()
                .map(|&i| dataset.get(i))
                .collect::<Result<Vec<_>>>()?;
            collate(items)
        };
        if self.cfg.prefetch == 0 {
            let mut it = chunks.into_iter();
            return Batches {
                inner: Inner::Inline(Box::new(move || it.next().map(|c| make(&c)))),
                delivered: 0,
                total,
            };
        }
        let (tx, rx) = sync_channel(self.cfg.prefetch);
        let handle = std::thread::spawn(move || {
            for c in chunks {
                let b = make(&c);
                let stop = b.is_err();
                if tx.send(b).is_err() || stop {
                    break;
                }
            }
        });
        Batches {
            inner: Inner::Thread {
                rx: Some(rx),
                handle: Some(handle),
            },
            delivered: 0,
            total,
        }
    }
}

type NextFn<B> = Box<dyn FnMut() -> Option<Result<B>> + Send>;

enum Inner<B> {
    Inline(NextFn<B>),
    Thread {
        rx: Option<Receiver<Result<B>>>,
        handle: Option<JoinHandle<()>>,
    },
}

/// The batches of one epoch (an iterator of `Result<B>`). Dropping it early stops the worker.
pub struct Batches<B> {
    inner: Inner<B>,
    delivered: usize,
    total: usize,
}

impl<B> std::fmt::Debug for Batches<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches")
            .field("delivered", &self.delivered)
            .field("total", &self.total)
            .finish()
    }
}

impl<B> Iterator for Batches<B> {
    type Item = Result<B>;

    fn next(&mut self) -> Option<Result<B>> {
        if self.delivered >= self.total {
            return None;
        }
        let next = match &mut self.inner {
            Inner::Inline(f) => f(),
            Inner::Thread { rx, .. } => match rx.as_ref().map(Receiver::recv) {
                Some(Ok(b)) => Some(b),
                _ => Some(Err(Error::Worker(format!(
                    "stopped after {} of {} batches",
                    self.delivered, self.total
                )))),
            },
        };
        match &next {
            Some(Ok(_)) => self.delivered += 1,
            // After an error the epoch is over.
            _ => self.delivered = self.total,
        }
        next
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.total - self.delivered;
        (left, Some(left))
    }
}

impl<B> Drop for Batches<B> {
    fn drop(&mut self) {
        if let Inner::Thread { rx, handle } = &mut self.inner {
            // Closing the channel makes the worker's next send fail, so it returns.
            drop(rx.take());
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
        }
    }
}

impl<D, B> BatchSource for Batcher<D, B>
where
    D: Dataset + 'static,
    B: Send + 'static,
{
    type Batch = B;

    fn batches(&self, epoch: usize) -> Result<Box<dyn Iterator<Item = Result<B>> + '_>> {
        Ok(Box::new(self.epoch(epoch)))
    }

    fn num_batches(&self) -> Option<usize> {
        Some(self.len())
    }
}
