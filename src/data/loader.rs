//! Getting images to the model without making it wait.
//!
//! [`prepare`] decodes every image once, on all cores, checks that it can be read (a file that
//! cannot is an error naming it, or with `skip_bad` is listed and left out), and keeps it in
//! memory at working size ([`to_working_size`]: shorter side image_size·256/224, as u8) while the
//! memory budget lasts; images past the budget are decoded again when needed.
//!
//! A [`Loader`] assembles batches on worker threads that run ahead of the consumer through
//! bounded queues (one per worker, `prefetch` batches deep, batch `i` made by worker `i mod W`,
//! so batches arrive in order). The randomness of an epoch comes from the run's seed alone: the
//! shuffle from (seed, epoch), each sample's augmentation from (seed, epoch, sample), so results
//! do not depend on the number of workers and an epoch can be replayed exactly.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Result};
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

use super::duplicates::{dhash, Hash};
use super::folder::Sample;
use super::image::load_rgb;
use super::transform::{to_working_size, EvalTransform, TrainTransform};
use crate::rng::mix;

/// The default memory budget for decoded images: 4 GiB.
pub const DEFAULT_CACHE_BYTES: u64 = 4 << 30;

/// A file that could not be decoded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFile {
    pub path: PathBuf,
    pub reason: String,
}

/// Decoded images at working size, by sample index, as far as the budget allowed.
#[derive(Debug)]
pub struct Store {
    image_size: u32,
    cached: Vec<Option<Arc<RgbImage>>>,
    /// Bytes held by the cached images.
    pub cached_bytes: u64,
}

impl Store {
    /// How many images are held in memory.
    pub fn cached_count(&self) -> usize {
        self.cached.iter().filter(|c| c.is_some()).count()
    }

    /// Sample `i` at working size: from memory, or decoded now.
    pub fn working(&self, samples: &[Sample], i: usize) -> Result<Arc<RgbImage>> {
        match self.cached.get(i).and_then(Clone::clone) {
            Some(img) => Ok(img),
            None => Ok(Arc::new(to_working_size(
                &load_rgb(&samples[i].path)?,
                self.image_size,
            ))),
        }
    }
}

/// What [`prepare`] found.
#[derive(Debug)]
pub struct Prepared {
    pub store: Arc<Store>,
    /// Sample indices that decoded, in order.
    pub good: Vec<usize>,
    /// Files that did not (only with `skip_bad`; otherwise they are an error).
    pub bad: Vec<BadFile>,
    /// Each sample's difference hash (of its working-size image; `None` when unreadable).
    pub hashes: Vec<Option<Hash>>,
    /// Smallest and largest original image (by area), as (width, height).
    pub smallest: (u32, u32),
    pub largest: (u32, u32),
}

/// How many threads to use: all cores.
pub fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// `f` applied to every item on `threads` threads, in the items' order. An item is `None` only
/// when the thread that took it panicked.
pub fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<Option<R>> {
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<R>> = std::iter::repeat_with(|| None).take(items.len()).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads.clamp(1, items.len().max(1)))
            .map(|_| {
                scope.spawn(|| {
                    let mut out = vec![];
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= items.len() {
                            break out;
                        }
                        out.push((i, f(&items[i])));
                    }
                })
            })
            .collect();
        for h in handles {
            if let Ok(out) = h.join() {
                for (i, r) in out {
                    results[i] = Some(r);
                }
            }
        }
    });
    results
}

/// The image size whose working copy the near-duplicate hash is computed from, for every
/// training size (224: the partitions recorded since near-duplicates were grouped).
pub const HASH_IMAGE_SIZE: u32 = 224;

/// Decodes every sample once, in parallel; see the module documentation.
pub fn prepare(
    samples: &[Sample],
    image_size: u32,
    budget_bytes: u64,
    skip_bad: bool,
    threads: usize,
) -> Result<Prepared> {
    let reserved = AtomicU64::new(0);
    let results = parallel_map(samples, threads, |sample| match load_rgb(&sample.path) {
        Ok(img) => {
            let dims = img.dimensions();
            let working = to_working_size(&img, image_size);
            // At one resolution whatever the training size, so that the near-duplicate sets,
            // and with them the split and the folds, depend on the data alone.
            let hash = match image_size == HASH_IMAGE_SIZE {
                true => dhash(&working),
                false => dhash(&to_working_size(&img, HASH_IMAGE_SIZE)),
            };
            let bytes = working.as_raw().len() as u64;
            let fits = reserved.fetch_add(bytes, Ordering::Relaxed) + bytes <= budget_bytes;
            if !fits {
                reserved.fetch_sub(bytes, Ordering::Relaxed);
            }
            Ok((dims, hash, fits.then(|| Arc::new(working))))
        }
        Err(e) => Err(crate::text::error_line(&e)),
    });
    let mut cached = Vec::with_capacity(samples.len());
    let mut hashes = Vec::with_capacity(samples.len());
    let (mut good, mut bad) = (vec![], vec![]);
    let (mut smallest, mut largest) = ((u32::MAX, u32::MAX), (0u32, 0u32));
    let area = |d: (u32, u32)| d.0 as u64 * d.1 as u64;
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Some(Ok((dims, hash, img))) => {
                good.push(i);
                hashes.push(Some(hash));
                if area(dims) < area(smallest) {
                    smallest = dims;
                }
                if area(dims) > area(largest) {
                    largest = dims;
                }
                cached.push(img);
            }
            Some(Err(reason)) => {
                bad.push(BadFile {
                    path: samples[i].path.clone(),
                    reason,
                });
                cached.push(None);
                hashes.push(None);
            }
            None => bail!(
                "a decoding thread died before {}",
                samples[i].path.display()
            ),
        }
    }
    if !bad.is_empty() && !skip_bad {
        let list: Vec<String> = bad.iter().take(10).map(|b| b.reason.clone()).collect();
        let more = if bad.len() > 10 {
            format!("; and {} more", bad.len() - 10)
        } else {
            String::new()
        };
        bail!(
            "{} image{} cannot be read: {}{more} (--skip-bad leaves such files out)",
            bad.len(),
            if bad.len() == 1 { "" } else { "s" },
            list.join("; ")
        );
    }
    let cached_bytes = cached
        .iter()
        .flatten()
        .map(|c| c.as_raw().len() as u64)
        .sum();
    Ok(Prepared {
        store: Arc::new(Store {
            image_size,
            cached,
            cached_bytes,
        }),
        good,
        bad,
        hashes,
        smallest,
        largest,
    })
}

/// Which transform batches get.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Augmented, in an order shuffled each epoch.
    Train(TrainTransform),
    /// Deterministic, in the given order.
    Eval(EvalTransform),
}

/// One batch: images `[N, 3, S, S]` (f32, normalised), labels `[N]` (i64), sample indices.
#[derive(Debug)]
pub struct Batch {
    pub images: Tensor,
    pub labels: Tensor,
    pub indices: Vec<usize>,
}

/// Assembles batches of samples on worker threads.
#[derive(Debug, Clone)]
pub struct Loader {
    pub store: Arc<Store>,
    pub samples: Arc<Vec<Sample>>,
    pub mode: Arc<Mode>,
    pub batch_size: usize,
    /// Worker threads.
    pub workers: usize,
    /// Batches each worker may have ready ahead of the consumer.
    pub prefetch: usize,
    pub seed: u64,
    /// Leave out a last batch smaller than `batch_size`.
    pub drop_last: bool,
    /// Data-parallel training: (rank, processes). The shuffled order is cut into global
    /// batches of `batch_size × processes` (a last smaller one is left out, so that every
    /// process takes the same number of steps) and this process takes its `batch_size` slice of
    /// each, so that N processes see together what one process with N times the batch sees.
    pub shard: Option<(usize, usize)>,
}

impl Loader {
    /// The order in which an epoch visits `indices`: shuffled by (seed, epoch) in training.
    pub fn order(&self, indices: &[usize], epoch: u64) -> Vec<usize> {
        let mut order = indices.to_vec();
        if matches!(*self.mode, Mode::Train(_)) {
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(&[
                self.seed,
                epoch,
                u64::MAX,
            ])));
        }
        order
    }

    /// The batches of one epoch over `indices` (sample indices), made ahead on worker threads.
    pub fn batches(&self, indices: &[usize], epoch: u64) -> Batches {
        let order = self.order(indices, epoch);
        let bs = self.batch_size.max(1);
        let (rank, world) = self.shard.unwrap_or((0, 1));
        let global = bs * world.max(1);
        let mut chunks: Vec<Vec<usize>> = order.chunks(global).map(<[usize]>::to_vec).collect();
        if (self.drop_last || world > 1) && chunks.last().is_some_and(|c| c.len() < global) {
            chunks.pop();
        }
        if world > 1 {
            for c in &mut chunks {
                *c = c[rank * bs..(rank + 1) * bs].to_vec();
            }
        }
        let chunks = Arc::new(chunks);
        let workers = self.workers.clamp(1, chunks.len().max(1));
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel(self.prefetch.max(1));
            receivers.push(rx);
            let (me, chunks) = (self.clone(), Arc::clone(&chunks));
            handles.push(std::thread::spawn(move || {
                for (b, chunk) in chunks.iter().enumerate().skip(w).step_by(workers) {
                    let batch = me
                        .make_batch(chunk, epoch)
                        .map_err(|e| e.context(format!("batch {b}")));
                    if tx.send(batch).is_err() {
                        return;
                    }
                }
            }));
        }
        Batches {
            receivers,
            handles,
            next: 0,
            count: chunks.len(),
        }
    }

    fn make_batch(&self, chunk: &[usize], epoch: u64) -> Result<Batch> {
        let s = match &*self.mode {
            Mode::Train(t) => t.image_size,
            Mode::Eval(t) => t.image_size,
        } as i64;
        let mut data = Vec::with_capacity(chunk.len() * 3 * (s * s) as usize);
        let mut labels = Vec::with_capacity(chunk.len());
        for &i in chunk {
            let img = self.store.working(&self.samples, i)?;
            match &*self.mode {
                Mode::Train(t) => {
                    let mut rng = ChaCha8Rng::seed_from_u64(mix(&[self.seed, epoch, i as u64]));
                    t.apply_working_into(&img, &mut rng, &mut data);
                }
                Mode::Eval(t) => {
                    let crop = t.crop_working(&img);
                    super::transform::to_chw(&crop, &t.normalization, &mut data);
                }
            }
            labels.push(self.samples[i].label as i64);
        }
        let n = chunk.len() as i64;
        Ok(Batch {
            images: Tensor::f_from_slice(&data)?.f_view([n, 3, s, s])?,
            labels: Tensor::f_from_slice(&labels)?,
            indices: chunk.to_vec(),
        })
    }
}

/// The batches of one epoch, in order. Dropping it stops the workers.
pub struct Batches {
    receivers: Vec<Receiver<Result<Batch>>>,
    handles: Vec<JoinHandle<()>>,
    next: usize,
    count: usize,
}

impl Batches {
    /// Number of batches in the epoch.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.count {
            return None;
        }
        let rx = &self.receivers[self.next % self.receivers.len()];
        self.next += 1;
        Some(
            rx.recv()
                .map_err(|_| anyhow!("a loader thread stopped early"))
                .and_then(|b| b),
        )
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        self.receivers.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}
