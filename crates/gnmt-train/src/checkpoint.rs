//! Checkpoints and model directories, read and written here only.
//!
//! A checkpoint is a model directory (`config.json`, `tokenizer.json`, `model.safetensors`)
//! plus `optimizer.safetensors` and `trainer.json`; with an average of the weights
//! (`ema_decay`), `model.safetensors` holds the average and `weights.safetensors` the raw
//! weights training goes on from. Every directory is written under a unique
//! temporary name, fsynced, then moved over the old one ([`gnmt_io::write_dir`]): a killed run
//! never leaves a half-written checkpoint, and never loses `best/` or `final/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gnmt_model::ModelConfig;
use serde::{Deserialize, Serialize};
use tch::nn;

use crate::config::{io_err, TrainError};
use crate::optim::Adam;

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
    /// Fingerprint of the run (model, data, seed), so a different run is not resumed by mistake.
    pub run_id: String,
    /// The settings that shape the run's course (learning rate and schedule, batching, loss,
    /// clipping, precision...), compared one by one on resume. Absent in checkpoints written
    /// before they were recorded (their `run_id` then covers some of them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<BTreeMap<String, serde_json::Value>>,
    /// Adam's update count when it differs from `step` (fp16 steps skipped for overflow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adam_step: Option<i64>,
    /// fp16 dynamic loss scaling state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_scaler: Option<crate::optim::LossScaler>,
}

pub(crate) fn ckpt_err(path: &Path, msg: impl Into<String>) -> TrainError {
    TrainError::Checkpoint {
        path: path.display().to_string(),
        msg: msg.into(),
    }
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

/// What a model directory is made of.
pub struct ModelFiles<'a> {
    pub vs: &'a nn::VarStore,
    pub config: &'a ModelConfig,
    /// The `tokenizer.json` to copy in.
    pub tokenizer: &'a Path,
}

impl ModelFiles<'_> {
    fn fill(&self, dir: &Path) -> Result<(), TrainError> {
        let json = serde_json::to_string_pretty(self.config)
            .map_err(|e| TrainError::Config(e.to_string()))?;
        std::fs::write(dir.join("config.json"), json).map_err(io_err(dir))?;
        std::fs::copy(self.tokenizer, dir.join("tokenizer.json"))
            .map_err(io_err(self.tokenizer))?;
        self.vs.save(dir.join("model.safetensors"))?;
        Ok(())
    }

    /// Writes the model directory `dir` (config.json, tokenizer.json, model.safetensors)
    /// atomically.
    pub fn write(&self, dir: &Path) -> Result<(), TrainError> {
        gnmt_io::write_dir(dir, |tmp| self.fill(tmp), io_err(dir))
    }
}

/// The raw weights of a run that keeps an average of them.
pub const WEIGHTS_FILE: &str = "weights.safetensors";

/// What a checkpoint holds besides its model directory: the state training resumes from.
pub struct Training<'a> {
    /// The raw weights, when the model directory holds their average.
    pub weights: Option<&'a nn::VarStore>,
    pub adam: &'a Adam,
    pub state: &'a TrainerState,
}

/// Writes `checkpoints/step-N` of `run`, then deletes the oldest beyond `keep`.
pub fn save(
    run: &Path,
    model: &ModelFiles,
    training: Training,
    keep: usize,
) -> Result<(), TrainError> {
    let Training {
        weights,
        adam,
        state,
    } = training;
    let dest = run
        .join("checkpoints")
        .join(format!("step-{:08}", state.step));
    gnmt_io::write_dir(
        &dest,
        |tmp| {
            model.fill(tmp)?;
            if let Some(w) = weights {
                w.save(tmp.join(WEIGHTS_FILE))?;
            }
            adam.save(&tmp.join("optimizer.safetensors"))?;
            let st = serde_json::to_string_pretty(state)
                .map_err(|e| TrainError::Config(e.to_string()))?;
            std::fs::write(tmp.join("trainer.json"), st).map_err(io_err(tmp))
        },
        io_err(&dest),
    )?;
    let all = list(run);
    if all.len() > keep.max(1) {
        for (_, old) in &all[..all.len() - keep.max(1)] {
            if let Err(e) = std::fs::remove_dir_all(old) {
                tracing::warn!("{}: not deleted: {e}", old.display());
            }
        }
    }
    Ok(())
}

/// Reads a checkpoint's `trainer.json`.
pub fn read_state(dir: &Path) -> Result<TrainerState, TrainError> {
    let path = dir.join("trainer.json");
    let text =
        std::fs::read_to_string(&path).map_err(|e| ckpt_err(dir, format!("trainer.json: {e}")))?;
    serde_json::from_str(&text).map_err(|e| ckpt_err(dir, format!("trainer.json: {e}")))
}

/// Loads a checkpoint's raw weights into `vs`, its optimizer state into `adam`, and its model
/// into `average` (the average of the weights, or the weights where it kept none).
pub fn load_tensors(
    dir: &Path,
    state: &TrainerState,
    vs: &mut nn::VarStore,
    adam: &mut Adam,
    average: Option<&mut nn::VarStore>,
) -> Result<(), TrainError> {
    let load = |vs: &mut nn::VarStore, file: &str| {
        gnmt_model::load_weights(vs, &dir.join(file)).map_err(|e| ckpt_err(dir, e.to_string()))
    };
    let raw = match dir.join(WEIGHTS_FILE).exists() {
        true => WEIGHTS_FILE,
        false => "model.safetensors",
    };
    load(vs, raw)?;
    if let Some(avg) = average {
        load(avg, "model.safetensors")?;
    }
    adam.load(
        &dir.join("optimizer.safetensors"),
        state.adam_step.unwrap_or(state.step),
    )
    .map_err(|e| ckpt_err(dir, e))
}

/// The last `n` checkpoints of a run directory, oldest first. Fewer than `n` is an error that
/// says why (the run kept only `keep_last`).
pub fn last(run: &Path, n: usize) -> Result<Vec<PathBuf>, TrainError> {
    let all = list(run);
    if all.is_empty() {
        return Err(ckpt_err(run, "holds no checkpoints (checkpoints/step-N)"));
    }
    let n = n.max(1);
    if all.len() < n {
        return Err(ckpt_err(
            run,
            format!(
                "holds {} checkpoint(s), not the {n} asked for: training keeps the last `keep_last` \
                 (default 3); train with --set keep_last={n} to keep enough, or ask for fewer",
                all.len()
            ),
        ));
    }
    let skip = all.len() - n;
    Ok(all.into_iter().skip(skip).map(|(_, p)| p).collect())
}
