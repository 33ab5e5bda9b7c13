//! A training run's settings ([`TrainConfig`], read from TOML files and `--set`), what
//! changed between a checkpoint's run and now, and the crate's error type.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use gnmt_data::FilterConfig;
use gnmt_model::ModelConfig;
use gnmt_tokenizer::VocabKind;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::Device;

use crate::optim::{LossScaler, Schedule};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Data(#[from] gnmt_data::DataError),
    #[error(transparent)]
    Text(#[from] gnmt_data::text::TextError),
    #[error(transparent)]
    Tokenizer(#[from] gnmt_tokenizer::TokenizerError),
    #[error(transparent)]
    Model(#[from] gnmt_model::ModelError),
    #[error("checkpoint {path}: {msg}")]
    Checkpoint { path: String, msg: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Dist(#[from] gnmt_dist::DistError),
}

pub(crate) fn io_err(p: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: p.display().to_string(),
        source,
    }
}

/// Arithmetic precision of training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    /// bf16 forward/backward, float32 master weights and Adam.
    Bf16,
    /// fp16 forward/backward with dynamic loss scaling, float32 master weights and Adam.
    Fp16,
}

/// The validation score that decides which checkpoint is the best.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BestMetric {
    Bleu,
    Loss,
}

impl BestMetric {
    /// The score to maximise: BLEU, or the negated loss.
    pub(crate) fn score(self, loss: f64, bleu: f64) -> f64 {
        match self {
            BestMetric::Bleu => bleu,
            BestMetric::Loss => -loss,
        }
    }
}

/// Everything a training run needs; the `[train]` TOML file and the command-line flags fill it
/// ([`TrainConfig::from_toml`] refuses keys it does not know).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    pub train_src: PathBuf,
    pub train_tgt: PathBuf,
    /// A corpus from `gnmt prepare` to train on instead of `train_src`/`train_tgt`. Without it
    /// the text is prepared into the run directory's `data/` once and reused.
    pub prepared: Option<PathBuf>,
    pub valid_src: Option<PathBuf>,
    pub valid_tgt: Option<PathBuf>,
    /// A `tokenizer.json`; when absent one is trained on the training data and kept in the run.
    pub vocab: Option<PathBuf>,
    pub vocab_size: usize,
    /// Subword algorithm of the vocabulary trained when `vocab` is absent.
    pub vocab_kind: VocabKind,
    /// Model preset (`gnmt8`, `gnmt4`, `small`, `small8`, `tiny`).
    pub preset: String,
    /// Overrides of model config fields (`dropout`, `residual`, `residual_start`, ...).
    pub model: BTreeMap<String, serde_json::Value>,
    pub out: PathBuf,
    pub max_steps: i64,
    /// `fp32`, `bf16` mixed precision (bf16 forward/backward, float32 master weights and Adam),
    /// or `fp16` (the same with fp16 and dynamic loss scaling).
    pub precision: Precision,
    /// fp16: the loss scale to start from (halved at each overflow, doubled after 2000 good steps).
    pub init_loss_scale: f64,
    /// Stop after this many passes over the data, if that comes before `max_steps`.
    pub epochs: Option<u64>,
    /// Sentences per batch (an upper bound also when `max_tokens` is set).
    pub batch_size: usize,
    /// Batches whose gradients are summed before each optimizer step: one larger batch, every
    /// target token of the group weighted equally.
    pub accum_steps: usize,
    /// CPU: each batch is cut into this many shares (every N-th pair), trained at once on
    /// threads of their own (as many as libtorch has threads, which they divide), their
    /// gradients summed: the recurrent layers' small matrix products leave a second core
    /// mostly idle under libtorch's own threading (2 shares on 2 threads: 1.5-1.8x the bf16
    /// steps per second of 1 share; on one thread 3-13% slower). The count decides the numbers (each
    /// share its dropout seed, a fixed order of summing); any thread count up to it gives the
    /// same ones. Ignored on CUDA.
    pub batch_shares: usize,
    /// Tokens per batch, padding counted; batches also stay within `batch_size` sentences, so
    /// raise `batch_size` for the token budget alone to decide.
    pub max_tokens: Option<usize>,
    pub lr: f64,
    pub schedule: Schedule,
    pub label_smoothing: f64,
    pub clip_norm: f64,
    /// Validate, keep and save an exponential moving average of the weights instead of the raw
    /// ones: after each update `avg = d * avg + (1 - d) * weights`, with `d` this decay (or
    /// less over the first steps). Training goes on from the raw weights (checkpoints keep both).
    pub ema_decay: Option<f64>,
    /// Subword regularization (Kudo, 2018; a unigram vocabulary): each step draws its pairs'
    /// segmentations from the vocabulary's distribution sharpened by this exponent instead of
    /// taking the best one (smaller: more varied; SentencePiece's usual 0.1-0.5). Validation and
    /// translation keep the best segmentation. Batches are cut by the best segmentations'
    /// lengths, so a `max_tokens` batch holds more pieces after the draw (Multi30k's German
    /// side: 3% more at 0.5, 12% at 0.3, 31% at 0.2).
    pub subword_alpha: Option<f64>,
    /// Which training pairs are kept (`max_len`, `max_ratio`, `strict` at the top level);
    /// skipped pairs are counted.
    #[serde(flatten)]
    pub filter: FilterConfig,
    pub save_every: i64,
    pub valid_every: i64,
    /// Sentences of the validation set translated for BLEU (greedy).
    pub valid_bleu_sentences: usize,
    pub keep_last: usize,
    /// What `best/` keeps: the checkpoint with the highest validation `bleu` or the lowest `loss`.
    pub best_metric: BestMetric,
    /// Stop when this many validations in a row have not improved the best score.
    pub patience: Option<usize>,
    pub log_every: i64,
    pub seed: u64,
    pub device: String,
    /// Use only the first N training pairs.
    pub train_limit: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            train_src: PathBuf::new(),
            train_tgt: PathBuf::new(),
            prepared: None,
            valid_src: None,
            valid_tgt: None,
            vocab: None,
            vocab_size: 8000,
            vocab_kind: VocabKind::Unigram,
            preset: "small".into(),
            model: BTreeMap::new(),
            out: PathBuf::from("runs/run"),
            max_steps: 1000,
            precision: Precision::Fp32,
            init_loss_scale: LossScaler::default().scale,
            epochs: None,
            batch_size: 64,
            accum_steps: 1,
            batch_shares: 2,
            max_tokens: None,
            lr: 2e-3,
            schedule: Schedule::Gnmt {
                warmup: 200,
                decay_steps: 4,
            },
            label_smoothing: 0.1,
            clip_norm: 5.0,
            ema_decay: None,
            subword_alpha: None,
            filter: FilterConfig::default(),
            save_every: 500,
            valid_every: 500,
            valid_bleu_sentences: 500,
            keep_last: 3,
            best_metric: BestMetric::Bleu,
            patience: None,
            log_every: 10,
            seed: 1,
            device: "cpu".into(),
            train_limit: None,
        }
    }
}

impl TrainConfig {
    /// The settings of a TOML table (a config file, flags over it). A key it does not know is
    /// an error naming it: serde's `deny_unknown_fields` does not work through the flattened
    /// filter settings, so the known keys are those a serialized config has.
    pub fn from_toml(table: toml::Table) -> Result<Self, TrainError> {
        let known = serde_json::to_value(TrainConfig::default())
            .map_err(|e| TrainError::Config(e.to_string()))?;
        let known = known.as_object().map(|o| o.keys().collect::<Vec<_>>());
        if let Some(key) = table
            .keys()
            .find(|k| !known.as_ref().is_some_and(|known| known.contains(k)))
        {
            return Err(TrainError::Config(format!("unknown setting `{key}`")));
        }
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| TrainError::Config(e.message().to_string()))
    }

    /// The model config: the preset, the vocabulary size, then the overrides.
    pub fn model_config(&self, vocab_size: usize) -> Result<ModelConfig, TrainError> {
        let base = ModelConfig::preset(&self.preset, vocab_size as i64).ok_or_else(|| {
            TrainError::Config(format!(
                "unknown preset `{}` (known: {})",
                self.preset,
                gnmt_model::PRESETS.join(", ")
            ))
        })?;
        let mut v = serde_json::to_value(base).map_err(|e| TrainError::Config(e.to_string()))?;
        if let Some(n) = self.model.get("vocab_size") {
            if n.as_i64() != Some(vocab_size as i64) {
                return Err(TrainError::Config(format!(
                    "model.vocab_size = {n}: the vocabulary sets it ({vocab_size} pieces); \
                     remove the override, or set the top-level vocab_size to train another vocabulary"
                )));
            }
        }
        for (k, val) in &self.model {
            match v.get_mut(k) {
                Some(slot) => *slot = val.clone(),
                None => return Err(TrainError::Config(format!("unknown model setting `{k}`"))),
            }
        }
        let c: ModelConfig = serde_json::from_value(v)
            .map_err(|e| TrainError::Config(format!("model settings: {e}")))?;
        c.validate().map_err(TrainError::Config)?;
        Ok(c)
    }

    /// Fingerprint of what the run is: its model, data and seed. `data` fingerprints the
    /// training data itself (the tokenizer's hash, the prepared corpus's source stamps and
    /// counts), so an edited corpus is not resumed as if unchanged. The settings of its course
    /// are compared by name instead ([`TrainConfig::settings`]).
    pub(crate) fn run_id(&self, model: &ModelConfig, data: &serde_json::Value) -> String {
        fingerprint(&serde_json::json!({
            "train": [self.train_src, self.train_tgt, self.prepared], "data": data, "model": model, "seed": self.seed,
            "limit": self.train_limit,
        }))
    }

    /// The run id of checkpoints written before settings were recorded one by one (it also
    /// covered the batching, the learning rate and the precision).
    pub(crate) fn legacy_run_id(&self, model: &ModelConfig, data: &serde_json::Value) -> String {
        fingerprint(&serde_json::json!({
            "train": [self.train_src, self.train_tgt, self.prepared], "data": data, "model": model, "seed": self.seed,
            "batch": [self.batch_size, self.max_tokens, self.accum_steps], "lr": self.lr, "precision": self.precision, "limit": self.train_limit,
        }))
    }

    /// The settings that shape the course of training, by name: a resume must use the same
    /// ones (or change one deliberately). `max_steps` counts where the schedule depends on it
    /// (GNMT's decay starts at 2/3 of it).
    pub fn settings(&self) -> BTreeMap<String, serde_json::Value> {
        let mut m: BTreeMap<String, serde_json::Value> = [
            ("lr", serde_json::json!(self.lr)),
            ("schedule", serde_json::json!(self.schedule)),
            ("label_smoothing", serde_json::json!(self.label_smoothing)),
            ("clip_norm", serde_json::json!(self.clip_norm)),
            ("ema_decay", serde_json::json!(self.ema_decay)),
            ("subword_alpha", serde_json::json!(self.subword_alpha)),
            ("batch_size", serde_json::json!(self.batch_size)),
            ("max_tokens", serde_json::json!(self.max_tokens)),
            ("accum_steps", serde_json::json!(self.accum_steps.max(1))),
            ("precision", serde_json::json!(self.precision)),
            ("best_metric", serde_json::json!(self.best_metric)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if matches!(self.schedule, Schedule::Gnmt { .. }) {
            m.insert("max_steps".into(), serde_json::json!(self.max_steps));
        }
        // Recorded only when it cuts batches: a run from before the setting had one share.
        if self.batch_shares > 1 {
            m.insert("batch_shares".into(), serde_json::json!(self.batch_shares));
        }
        m
    }
}

fn fingerprint(key: &serde_json::Value) -> String {
    Sha256::digest(key.to_string().as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The settings that differ between a checkpoint's run and now: `(name, then, now)`.
pub(crate) fn changed_settings(
    then: &BTreeMap<String, serde_json::Value>,
    now: &BTreeMap<String, serde_json::Value>,
) -> Vec<(String, serde_json::Value, serde_json::Value)> {
    let keys: BTreeSet<&String> = then.keys().chain(now.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let a = then.get(k).cloned().unwrap_or(serde_json::Value::Null);
            let b = now.get(k).cloned().unwrap_or(serde_json::Value::Null);
            (a != b).then(|| (k.clone(), a, b))
        })
        .collect()
}

/// Parses `cpu`, `cuda`, `cuda:N` ([`gnmt_model::DeviceSpec`]).
pub fn parse_device(s: &str) -> Result<Device, TrainError> {
    s.parse::<gnmt_model::DeviceSpec>()
        .map(|d| d.0)
        .map_err(|e| TrainError::Config(format!("device `{s}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_configs_parse_and_build_model_configs() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/configs");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let table: toml::Table = std::fs::read_to_string(&p).unwrap().parse().unwrap();
            let cfg =
                TrainConfig::from_toml(table).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            cfg.model_config(8000)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
        assert!(n >= 5);
    }

    #[test]
    fn filter_settings_are_top_level_keys_and_unknown_keys_are_refused() {
        let t: toml::Table = "max_len = 50\nstrict = true\nlr = 0.1".parse().unwrap();
        let c = TrainConfig::from_toml(t).unwrap();
        assert_eq!((c.filter.max_len, c.filter.strict), (50, true));
        assert_eq!(c.filter.max_ratio, FilterConfig::default().max_ratio);
        assert_eq!(c.lr, 0.1);
        // What a run writes to config.toml reads back the same.
        let written = toml::to_string(&c).unwrap();
        assert_eq!(TrainConfig::from_toml(written.parse().unwrap()).unwrap(), c);
        for bad in [
            "max_lenn = 50",
            "filter = 3",
            "[model]\nx = 1\n[other]\ny = 2",
        ] {
            let e = TrainConfig::from_toml(bad.parse().unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains("unknown setting"), "{bad}: {e}");
        }
        // A known key of the wrong type names the key.
        let e = TrainConfig::from_toml("max_len = \"long\"".parse().unwrap()).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
    }
}
