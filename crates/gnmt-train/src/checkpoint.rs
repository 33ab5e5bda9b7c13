//! Checkpoints: a model directory (`config.json`, `tokenizer.json`, `model.safetensors`) plus
//! `optimizer.safetensors` and `trainer.json`, written to a temporary directory, fsynced, then
//! renamed into place, so a killed run never leaves a half-written checkpoint.

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Trainer state: everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub step: i64,
    /// Data position: the next batch is `batch` of `epoch`.
    pub epoch: u64,
    pub batch: usize,
    pub seed: u64,
    pub best_score: Option<f64>,
    /// Validations in a row that did not improve `best_score` (for early stopping).
    #[serde(default)]
    pub stale_validations: usize,
    /// Fingerprint of the run (config + data), so a different run is not resumed by mistake.
    pub run_id: String,
    /// Adam's update count when it differs from `step` (fp16 steps skipped for overflow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adam_step: Option<i64>,
    /// fp16 dynamic loss scaling state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scaler: Option<crate::optim::LossScaler>,
}

pub fn fsync_dir(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

/// Moves a fully written temporary directory into place atomically.
pub fn commit_dir(tmp: &Path, dest: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(tmp)? {
        File::open(e?.path())?.sync_all()?;
    }
    fsync_dir(tmp)?;
    if dest.exists() {
        std::fs::remove_dir_all(dest)?;
    }
    std::fs::rename(tmp, dest)?;
    if let Some(p) = dest.parent() {
        fsync_dir(p)?;
    }
    Ok(())
}

/// Checkpoint directories of a run (`checkpoints/step-000123`), oldest first.
pub fn list(run: &Path) -> Vec<(i64, PathBuf)> {
    let mut v: Vec<(i64, PathBuf)> = std::fs::read_dir(run.join("checkpoints"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            Some((step, e.path()))
        })
        .collect();
    v.sort();
    v
}
