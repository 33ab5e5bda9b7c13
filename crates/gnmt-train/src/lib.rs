//! # gnmt-train
//!
//! Training GNMT models: label-smoothed cross-entropy, Adam whose state lives in tensors we own
//! (so it is saved and restored exactly), NVIDIA's GNMT v2 learning-rate schedule, gradient
//! clipping, atomic checkpoints, checkpoint averaging, exact resume, validation loss and BLEU, `metrics.jsonl`.

pub mod average;
pub mod checkpoint;
pub mod optim;
pub mod trainer;

pub use trainer::{
    train, train_with, Control, Precision, Progress, ProgressFn, Start, TrainConfig, TrainError,
    Trainer,
};
