//! # gnmt-train
//!
//! Training GNMT models: label-smoothed cross-entropy, Adam whose state lives in tensors we own
//! (so it is saved and restored exactly), NVIDIA's GNMT v2 learning-rate schedule, gradient
//! clipping, atomic checkpoints, checkpoint averaging, an exponential moving average of the
//! weights, exact resume, validation loss and BLEU, `metrics.jsonl`. A run's settings are in
//! [`config`], the loss in [`loss`], the loop in [`trainer`] (what it opens first: `run`).

pub mod average;
pub mod checkpoint;
pub mod config;
pub mod ema;
mod lanes;
pub mod loss;
pub mod optim;
mod run;
pub mod shares;
mod subwords;
pub mod trainer;

/// libtorch draws random numbers (initial weights, dropout masks) from one generator per
/// process. `seeded` seeds it and runs `f` under one lock, so that trainers side by side in one
/// process (ranks as threads, parallel tests) each get exactly their seed's numbers: without
/// the lock, another thread's draw between the seed and the draws changes them.
pub fn seeded<T>(seed: i64, f: impl FnOnce() -> T) -> T {
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _only_us = GENERATOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    tch::manual_seed(seed);
    f()
}

/// Runs a training forward pass `f` whose dropout masks `seed` decides: on a CPU through this
/// thread's stream ([`gnmt_model::with_dropout_seed`]), without a lock, so that shares of a
/// batch on several threads run at once; elsewhere libtorch's generator, seeded under
/// [`seeded`]'s lock.
pub(crate) fn seeded_dropout<T>(device: tch::Device, seed: i64, f: impl FnOnce() -> T) -> T {
    match device {
        tch::Device::Cpu => gnmt_model::with_dropout_seed(seed as u64, f),
        _ => seeded(seed, f),
    }
}

pub use config::{Precision, TrainConfig, TrainError};
pub use trainer::{train, train_with, Control, Progress, ProgressFn, Start, Trainer};
