//! The training loop.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use gnmt_bleu::{Bleu, BleuConfig, BleuStats};
use gnmt_data::{epoch_batches, FilterConfig, PairCorpus};
use gnmt_model::{ModelConfig, Seq2Seq};
use gnmt_tokenizer::{SubwordTokenizer, VocabKind, BOS, EOS};
use gnmt_translate::{cpu_decoder, translate_batch_with, SearchConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{nn, Device, Kind, Tensor};

use crate::checkpoint::{self, TrainerState};
use crate::optim::{Adam, LossScaler, Schedule};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Data(#[from] gnmt_data::DataError),
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
}

fn io_err(p: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
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
    fn score(self, loss: f64, bleu: f64) -> f64 {
        match self {
            BestMetric::Bleu => bleu,
            BestMetric::Loss => -loss,
        }
    }
}

/// Everything a training run needs; the `[train]` TOML file and the command-line flags fill it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
    pub batch_size: usize,
    /// Batches whose gradients are summed before each optimizer step (a larger effective batch).
    pub accum_steps: usize,
    pub max_tokens: Option<usize>,
    pub lr: f64,
    pub schedule: Schedule,
    pub label_smoothing: f64,
    pub clip_norm: f64,
    /// Longest training sentence (either side), in pieces; longer pairs are skipped and counted.
    pub max_len: usize,
    /// Largest `longer / shorter` length ratio of a training pair.
    pub max_ratio: f64,
    /// Make a skipped training pair an error naming its line.
    pub strict: bool,
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
            max_tokens: None,
            lr: 2e-3,
            schedule: Schedule::Gnmt {
                warmup: 200,
                decay_steps: 4,
            },
            label_smoothing: 0.1,
            clip_norm: 5.0,
            max_len: 80,
            max_ratio: 9.0,
            strict: false,
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

    /// Fingerprint of what defines the run (not its length or logging).
    /// `data` fingerprints the training data itself: the tokenizer's hash and the prepared
    /// corpus's source stamps and counts, so an edited corpus is not resumed as if unchanged.
    fn run_id(&self, model: &ModelConfig, data: &serde_json::Value) -> String {
        let key = serde_json::json!({
            "train": [self.train_src, self.train_tgt, self.prepared], "data": data, "model": model, "seed": self.seed,
            "batch": [self.batch_size, self.max_tokens, self.accum_steps], "lr": self.lr, "precision": self.precision, "limit": self.train_limit,
        });
        Sha256::digest(key.to_string().as_bytes())
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Parses `cpu`, `cuda`, `cuda:N`.
pub fn parse_device(s: &str) -> Result<Device, TrainError> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        _ if s.starts_with("cuda:") && tch::Cuda::is_available() => s[5..]
            .parse()
            .map(Device::Cuda)
            .map_err(|_| TrainError::Config(format!("bad device `{s}`"))),
        "cuda" | "gpu" => Err(TrainError::Config(
            "--device cuda: CUDA is not available (see `gnmt doctor`)".into(),
        )),
        _ => Err(TrainError::Config(format!(
            "unknown device `{s}` (cpu, cuda, cuda:N)"
        ))),
    }
}

struct Batch {
    src: Tensor,
    src_len: Tensor,
    tgt_in: Tensor,
    tgt_out: Tensor,
    tokens: i64,
}

fn make_batch(c: &PairCorpus, idx: &[usize], device: Device) -> Batch {
    let b = idx.len();
    let s = idx
        .iter()
        .map(|&i| c.src(i).len())
        .max()
        .unwrap_or(1)
        .max(1);
    let t = idx.iter().map(|&i| c.tgt(i).len()).max().unwrap_or(0) + 1;
    let mut src = vec![0i64; b * s];
    let mut tin = vec![0i64; b * t];
    let mut tout = vec![0i64; b * t];
    let mut lens = Vec::with_capacity(b);
    let mut tokens = 0;
    for (r, &i) in idx.iter().enumerate() {
        for (j, &x) in c.src(i).iter().enumerate() {
            src[r * s + j] = x as i64;
        }
        lens.push(c.src(i).len().max(1) as i64);
        tin[r * t] = BOS as i64;
        for (j, &x) in c.tgt(i).iter().enumerate() {
            tin[r * t + j + 1] = x as i64;
            tout[r * t + j] = x as i64;
        }
        tout[r * t + c.tgt(i).len()] = EOS as i64;
        tokens += (c.src(i).len() + c.tgt(i).len() + 1) as i64;
    }
    let mk = |v: Vec<i64>, cols: usize| {
        Tensor::from_slice(&v)
            .view([b as i64, cols as i64])
            .to_device(device)
    };
    Batch {
        src: mk(src, s),
        src_len: Tensor::from_slice(&lens),
        tgt_in: mk(tin, t),
        tgt_out: mk(tout, t),
        tokens,
    }
}

/// Label-smoothed cross-entropy over non-padding targets: `(loss, nll)` per token.
pub fn smoothed_loss(logits: &Tensor, target: &Tensor, eps: f64) -> (Tensor, Tensor) {
    let lp = logits.log_softmax(-1, Kind::Float);
    let nll = -lp.gather(2, &target.unsqueeze(2), false).squeeze_dim(2);
    let smooth = -lp.mean_dim(-1, false, Kind::Float);
    let mask = target.ne(0).to_kind(Kind::Float);
    let n = mask.sum(Kind::Float);
    let loss = (((1.0 - eps) * &nll + eps * smooth) * &mask).sum(Kind::Float) / &n;
    let nll = (nll * &mask).sum(Kind::Float) / n;
    (loss, nll)
}

/// What a finished run reports.
#[derive(Debug, Clone, Default)]
pub struct TrainSummary {
    pub steps: i64,
    pub first_loss: f64,
    pub last_loss: f64,
    pub tokens_per_s: f64,
    /// The best validation BLEU, or the lowest validation loss with `best_metric = "loss"`.
    pub best_score: Option<f64>,
    pub final_model: PathBuf,
    pub interrupted: bool,
    pub early_stopped: bool,
}

struct Validation {
    corpus: PairCorpus,
    refs: Vec<String>,
}

/// Runs (or resumes) training. `force` replaces a run directory that holds a different run.
pub fn train(cfg: &TrainConfig, resume: bool, force: bool) -> Result<TrainSummary, TrainError> {
    let device = parse_device(&cfg.device)?;
    let run = &cfg.out;
    let has_ckpt = !checkpoint::list(run).is_empty();
    if has_ckpt && !resume {
        if !force {
            return Err(TrainError::Config(format!(
                "{} already holds a training run: pass --resume to continue it or --force to start over",
                run.display()
            )));
        }
        std::fs::remove_dir_all(run).map_err(io_err(run))?;
    }
    std::fs::create_dir_all(run.join("checkpoints")).map_err(io_err(run))?;

    // Vocabulary.
    let tok_path = run.join("tokenizer.json");
    let tokenizer = match (&cfg.vocab, tok_path.exists() && resume) {
        (_, true) => SubwordTokenizer::load(&tok_path)?,
        (Some(p), false) => SubwordTokenizer::load(p)?,
        (None, false) => {
            tracing::info!(
                "no vocabulary given: training a {}-piece {:?} vocabulary on both sides",
                cfg.vocab_size,
                cfg.vocab_kind
            );
            let mut lines = gnmt_data::text::read_lines(&cfg.train_src)?;
            lines.extend(gnmt_data::text::read_lines(&cfg.train_tgt)?);
            SubwordTokenizer::train(lines.into_iter(), cfg.vocab_size, cfg.vocab_kind)?
        }
    };
    tokenizer.save(&tok_path)?;
    // Work with exactly what the file holds: a freshly trained tokenizer can serialize slightly
    // differently before and after a save/load round trip, and its hash keys the prepared corpus
    // and the run id, which a resumed run (loading the file) must reproduce.
    let tokenizer = SubwordTokenizer::load(&tok_path)?;

    let filter = FilterConfig {
        max_len: cfg.max_len,
        max_ratio: cfg.max_ratio,
        strict: cfg.strict,
    };
    let (corpus, meta) = match &cfg.prepared {
        Some(dir) => gnmt_data::prepare::open(dir, &tokenizer)?,
        None => {
            let dir = run.join("data");
            if gnmt_data::prepare::is_current(
                &dir,
                &cfg.train_src,
                &cfg.train_tgt,
                &tokenizer,
                &filter,
                cfg.train_limit,
            ) {
                tracing::info!("training data: reusing {}", dir.display());
            } else {
                tracing::info!("training data: tokenizing into {}", dir.display());
                gnmt_data::prepare::prepare(
                    &cfg.train_src,
                    &cfg.train_tgt,
                    &tokenizer,
                    &filter,
                    cfg.train_limit,
                    &dir,
                    |n| tracing::debug!("{n} pairs read"),
                )?;
            }
            gnmt_data::prepare::open(&dir, &tokenizer)?
        }
    };
    if cfg.prepared.is_some() && meta.max_len != cfg.max_len {
        tracing::warn!(
            "the prepared corpus was filtered at max_len {}, the config says {}: the corpus wins",
            meta.max_len,
            cfg.max_len
        );
    }
    let report = meta.report;
    tracing::info!("training data: {report}");
    if corpus.is_empty() {
        return Err(TrainError::Config("no usable training pairs".into()));
    }
    let valid = match (&cfg.valid_src, &cfg.valid_tgt) {
        (Some(s), Some(t)) => {
            let vf = FilterConfig {
                max_len: 1000,
                max_ratio: f64::INFINITY,
                strict: false,
            };
            let (c, r) = PairCorpus::load(s, t, &tokenizer, &vf, None)?;
            tracing::info!("validation data: {r}");
            // References for BLEU: the raw target lines of exactly the pairs the filter kept.
            let raw_t = gnmt_data::text::read_lines(t)?;
            let refs = (0..c.len()).map(|i| raw_t[c.line(i)].clone()).collect();
            Some(Validation { corpus: c, refs })
        }
        (None, None) => None,
        _ => {
            return Err(TrainError::Config(
                "give both --valid-src and --valid-tgt, or neither".into(),
            ))
        }
    };

    let model_cfg = cfg.model_config(tokenizer.vocab_size())?;
    let data_fingerprint = serde_json::json!({
        "tokenizer": tokenizer.hash(), "src": meta.src_stamp, "tgt": meta.tgt_stamp,
        "pairs": report.kept, "tokens": [meta.src_tokens, meta.tgt_tokens],
    });
    let run_id = cfg.run_id(&model_cfg, &data_fingerprint);
    tch::manual_seed(cfg.seed as i64);
    let mut vs = nn::VarStore::new(device);
    let model = Seq2Seq::new(&vs.root(), &model_cfg)?;
    // Mixed precision: a bf16/fp16 working copy runs forward and backward; Adam keeps float32
    // master weights (what checkpoints hold) and refreshes the copy after every step.
    let (work, mut adam) = match cfg.precision {
        Precision::Fp32 => (None, Adam::new(&vs)),
        Precision::Bf16 | Precision::Fp16 => {
            let mut wvs = nn::VarStore::new(device);
            let wm = Seq2Seq::new(&wvs.root(), &model_cfg)?;
            if cfg.precision == Precision::Bf16 {
                wvs.bfloat16();
            } else {
                wvs.half();
            }
            let adam = Adam::mixed(&vs, &wvs).map_err(TrainError::Config)?;
            (Some((wvs, wm)), adam)
        }
    };
    let run_model = work.as_ref().map_or(&model, |w| &w.1);
    let mut state = TrainerState {
        step: 0,
        epoch: 0,
        batch: 0,
        seed: cfg.seed,
        best_score: None,
        stale_validations: 0,
        run_id: run_id.clone(),
        adam_step: None,
        loss_scaler: (cfg.precision == Precision::Fp16).then(|| LossScaler {
            scale: cfg.init_loss_scale,
            ..LossScaler::default()
        }),
    };
    if resume {
        if let Some((_, dir)) = checkpoint::list(run).pop() {
            state = load_checkpoint(&dir, &mut vs, &mut adam, &run_id)?;
            tracing::info!("resumed from {} (step {})", dir.display(), state.step);
        }
    }
    std::fs::write(
        run.join("config.toml"),
        toml::to_string(cfg).unwrap_or_default(),
    )
    .map_err(io_err(run))?;
    let params: i64 = vs.variables().values().map(|t| t.numel() as i64).sum();
    tracing::info!(
        "model: preset {}, {params} parameters, device {:?}",
        cfg.preset,
        device
    );

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst));
    }
    let metrics_path = run.join("metrics.jsonl");
    restart_metrics(&metrics_path, state.step)?;
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(io_err(run))?;
    let lengths: Vec<usize> = (0..corpus.len())
        .map(|i| corpus.src(i).len().max(corpus.tgt(i).len()) + 1)
        .collect();
    let bar = progress_bar(cfg.max_steps, state.step);
    let mut summary = TrainSummary {
        first_loss: f64::NAN,
        ..Default::default()
    };
    let start = Instant::now();
    let mut tokens_done = 0i64;
    let mut window = (Instant::now(), 0i64);
    // Time spent building batches in the current logging window: the loader must stay cheap.
    let mut data_secs = 0.0f64;
    let accum = cfg.accum_steps.max(1);
    let mut early_stop = false;
    'outer: while state.step < cfg.max_steps {
        if cfg.epochs.is_some_and(|e| state.epoch >= e) {
            break;
        }
        let batches = epoch_batches(
            &lengths,
            cfg.batch_size,
            cfg.max_tokens,
            cfg.seed,
            state.epoch,
        );
        if state.batch == 0 {
            let waste = batches
                .iter()
                .map(|b| gnmt_data::padding_waste(&lengths, b))
                .sum::<f64>()
                / batches.len().max(1) as f64;
            tracing::info!(
                "epoch {}: {} batches, {:.1}% padding",
                state.epoch,
                batches.len(),
                100.0 * waste
            );
            let line = serde_json::json!({"step": state.step, "epoch": state.epoch,
                "batches": batches.len(), "padding_waste": waste});
            writeln!(metrics, "{line}").map_err(io_err(run))?;
        }
        let mut micro = 0usize;
        let mut loss_sum = 0.0;
        while state.batch < batches.len() {
            if micro == 0 {
                if stop.load(Ordering::SeqCst) {
                    summary.interrupted = true;
                    break 'outer;
                }
                adam.zero_grad();
            }
            let t_data = Instant::now();
            let b = make_batch(&corpus, &batches[state.batch], device);
            data_secs += t_data.elapsed().as_secs_f64();
            // A seed per batch makes dropout reproducible after a resume.
            tch::manual_seed(
                (cfg.seed as i64)
                    .wrapping_mul(1_000_003)
                    .wrapping_add(state.step)
                    .wrapping_add((micro as i64) << 32),
            );
            let logits = run_model.forward(&b.src, &b.src_len, &b.tgt_in, true);
            let (loss, _nll) = smoothed_loss(&logits, &b.tgt_out, cfg.label_smoothing);
            let factor = state.loss_scaler.as_ref().map_or(1.0, |s| s.scale) / accum as f64;
            if factor != 1.0 {
                (&loss * factor).backward();
            } else {
                loss.backward();
            }
            loss_sum += loss.double_value(&[]);
            micro += 1;
            state.batch += 1;
            tokens_done += b.tokens;
            if micro < accum && state.batch < batches.len() {
                continue;
            }
            adam.grad_scale = state.loss_scaler.as_ref().map_or(1.0, |s| s.scale);
            let grad_norm = adam.clip_grad_norm(cfg.clip_norm);
            let lr = cfg.schedule.lr(cfg.lr, state.step + 1, cfg.max_steps);
            // fp16: an overflowed step is skipped (the batch is consumed) and the scale halved.
            let apply = match &mut state.loss_scaler {
                Some(s) => s.update(grad_norm.is_finite()),
                None => true,
            };
            if apply {
                adam.apply(lr);
            } else {
                tracing::debug!(
                    "step {}: fp16 gradients overflowed, step skipped, loss scale now {}",
                    state.step + 1,
                    state.loss_scaler.as_ref().map_or(1.0, |s| s.scale)
                );
            }
            state.step += 1;
            state.adam_step = (adam.step != state.step).then_some(adam.step);
            let loss_v = loss_sum / micro as f64;
            micro = 0;
            loss_sum = 0.0;
            if summary.first_loss.is_nan() {
                summary.first_loss = loss_v;
            }
            summary.last_loss = loss_v;
            if state.step % cfg.log_every.max(1) == 0 || state.step == cfg.max_steps {
                let secs = window.0.elapsed().as_secs_f64().max(1e-9);
                let tps = (tokens_done - window.1) as f64 / secs;
                window = (Instant::now(), tokens_done);
                let data_fraction = data_secs / secs;
                data_secs = 0.0;
                let layers = layer_grad_norms(&adam);
                let mut line = serde_json::json!({"step": state.step, "loss": loss_v, "lr": lr, "grad_norm": grad_norm,
                    "tokens_per_s": tps, "data_fraction": data_fraction, "epoch": state.epoch, "layer_grad_norms": layers});
                if let Some(sc) = &state.loss_scaler {
                    line["loss_scale"] = sc.scale.into();
                }
                writeln!(metrics, "{line}").map_err(io_err(run))?;
                bar.set_position(state.step as u64);
                bar.set_message(format!("loss {loss_v:.3} lr {lr:.2e} {tps:.0} tok/s"));
                if bar.is_hidden() {
                    tracing::info!(
                        "step {} loss {loss_v:.4} lr {lr:.3e} {tps:.0} tokens/s",
                        state.step
                    );
                }
            }
            let do_valid = valid.is_some()
                && cfg.valid_every > 0
                && (state.step % cfg.valid_every == 0 || state.step == cfg.max_steps);
            if do_valid {
                if let Some(v) = &valid {
                    let (vloss, bleu) = validate(&model, v, &tokenizer, cfg, device);
                    let line = serde_json::json!({"step": state.step, "valid_loss": vloss, "valid_ppl": vloss.exp(), "valid_bleu": bleu});
                    writeln!(metrics, "{line}").map_err(io_err(run))?;
                    tracing::info!(
                        "step {}: validation loss {vloss:.4}, ppl {:.2}, BLEU {bleu:.2}",
                        state.step,
                        vloss.exp()
                    );
                    let score = cfg.best_metric.score(vloss, bleu);
                    if state.best_score.is_none_or(|b| score > b) {
                        state.best_score = Some(score);
                        state.stale_validations = 0;
                        write_model_dir(&run.join("best"), &vs, &model_cfg, &tok_path)?;
                    } else {
                        state.stale_validations += 1;
                        if cfg.patience.is_some_and(|p| state.stale_validations >= p) {
                            tracing::info!(
                                "early stopping: {} validations without improvement",
                                state.stale_validations
                            );
                            early_stop = true;
                        }
                    }
                }
            }
            if early_stop || state.step % cfg.save_every.max(1) == 0 || state.step == cfg.max_steps
            {
                save_checkpoint(
                    run,
                    &vs,
                    &adam,
                    &model_cfg,
                    &tok_path,
                    &state,
                    cfg.keep_last,
                )?;
            }
            if early_stop || state.step >= cfg.max_steps {
                break 'outer;
            }
        }
        state.epoch += 1;
        state.batch = 0;
    }
    bar.finish_and_clear();
    if summary.interrupted {
        tracing::warn!("interrupted: saving a checkpoint at step {}", state.step);
        save_checkpoint(
            run,
            &vs,
            &adam,
            &model_cfg,
            &tok_path,
            &state,
            cfg.keep_last,
        )?;
    }
    let final_dir = run.join("final");
    write_model_dir(&final_dir, &vs, &model_cfg, &tok_path)?;
    summary.steps = state.step;
    summary.tokens_per_s = tokens_done as f64 / start.elapsed().as_secs_f64().max(1e-9);
    summary.final_model = final_dir;
    summary.best_score = state.best_score.map(|b| match cfg.best_metric {
        BestMetric::Bleu => b,
        BestMetric::Loss => -b,
    });
    summary.early_stopped = early_stop;
    Ok(summary)
}

/// Keeps the lines of `metrics.jsonl` up to `step`, the step training restarts from: a fresh
/// run (step 0) starts an empty file, and a run resumed after `kill -9` drops what the killed
/// process logged after its last checkpoint, which the resumed run logs again.
fn restart_metrics(path: &Path, step: i64) -> Result<(), TrainError> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            let s = v.get("step").and_then(|s| s.as_i64()).unwrap_or(i64::MAX);
            // An epoch header at the restart step belongs to the new run.
            step > 0 && (s < step || (s == step && v.get("padding_waste").is_none()))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, kept).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

fn progress_bar(total: i64, pos: i64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total.max(0) as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] step {pos}/{len} {msg} ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_position(pos.max(0) as u64);
    bar
}

/// Gradient norm per layer (`encoder.layers.3`, `decoder.attention`, ...).
fn layer_grad_norms(adam: &Adam) -> BTreeMap<String, f64> {
    let mut acc: BTreeMap<String, f64> = BTreeMap::new();
    for (name, n) in adam.grad_norms() {
        let parts: Vec<&str> = name.split('.').collect();
        let key = if parts.len() > 2 && parts[1] == "layers" {
            parts[..3].join(".")
        } else {
            parts[..parts.len().min(2)].join(".")
        };
        *acc.entry(key).or_default() += n * n;
    }
    acc.into_iter().map(|(k, v)| (k, v.sqrt())).collect()
}

fn validate(
    model: &Seq2Seq,
    v: &Validation,
    tok: &SubwordTokenizer,
    cfg: &TrainConfig,
    device: Device,
) -> (f64, f64) {
    tch::no_grad(|| {
        let mut total = 0.0;
        let mut n = 0.0;
        let idx: Vec<usize> = (0..v.corpus.len()).collect();
        for chunk in idx.chunks(cfg.batch_size.max(1)) {
            let b = make_batch(&v.corpus, chunk, device);
            let logits = model.forward(&b.src, &b.src_len, &b.tgt_in, false);
            let (_, nll) = smoothed_loss(&logits, &b.tgt_out, 0.0);
            let toks = b.tgt_out.ne(0).sum(Kind::Int64).int64_value(&[]) as f64;
            total += nll.double_value(&[]) * toks;
            n += toks;
        }
        let bleu = Bleu::new(BleuConfig::default());
        let mut stats = BleuStats::zeros(4);
        let search = SearchConfig {
            beam: 1,
            ..Default::default()
        };
        let m = cfg
            .valid_bleu_sentences
            .min(v.corpus.len())
            .min(v.refs.len());
        // The CPU kernels' packed weights: once for all the validation batches.
        let cpu = cpu_decoder(model, device);
        for chunk in idx[..m].chunks(cfg.batch_size.max(1)) {
            let srcs: Vec<Vec<u32>> = chunk.iter().map(|&i| v.corpus.src(i).to_vec()).collect();
            for (&i, h) in chunk.iter().zip(translate_batch_with(
                model,
                cpu.as_ref(),
                &srcs,
                &search,
                device,
            )) {
                let text = tok.decode(&h[0].tokens).unwrap_or_default();
                stats.add(&bleu.sentence_stats(&text, &[v.refs[i].as_str()]));
            }
        }
        (total / n.max(1.0), bleu.compute(&stats).score)
    })
}

/// Writes a model directory (config.json, tokenizer.json, model.safetensors) atomically.
pub fn write_model_dir(
    dir: &Path,
    vs: &nn::VarStore,
    cfg: &ModelConfig,
    tok: &Path,
) -> Result<(), TrainError> {
    write_dir_atomically(&dir.with_extension("tmp"), dir, |tmp| {
        fill_model_dir(tmp, vs, cfg, tok)
    })
}

/// Fills a fresh temporary directory with `fill`, then moves it to `dest` (fsync, rename).
pub(crate) fn write_dir_atomically(
    tmp: &Path,
    dest: &Path,
    fill: impl FnOnce(&Path) -> Result<(), TrainError>,
) -> Result<(), TrainError> {
    let _ = std::fs::remove_dir_all(tmp);
    std::fs::create_dir_all(tmp).map_err(io_err(tmp))?;
    fill(tmp)?;
    checkpoint::commit_dir(tmp, dest).map_err(io_err(dest))
}

fn fill_model_dir(
    dir: &Path,
    vs: &nn::VarStore,
    cfg: &ModelConfig,
    tok: &Path,
) -> Result<(), TrainError> {
    let json = serde_json::to_string_pretty(cfg).map_err(|e| TrainError::Config(e.to_string()))?;
    std::fs::write(dir.join("config.json"), json).map_err(io_err(dir))?;
    std::fs::copy(tok, dir.join("tokenizer.json")).map_err(io_err(tok))?;
    vs.save(dir.join("model.safetensors"))?;
    Ok(())
}

fn save_checkpoint(
    run: &Path,
    vs: &nn::VarStore,
    adam: &Adam,
    cfg: &ModelConfig,
    tok: &Path,
    state: &TrainerState,
    keep: usize,
) -> Result<(), TrainError> {
    let dest = run
        .join("checkpoints")
        .join(format!("step-{:08}", state.step));
    let tmp = run
        .join("checkpoints")
        .join(format!(".step-{:08}.tmp", state.step));
    write_dir_atomically(&tmp, &dest, |tmp| {
        fill_model_dir(tmp, vs, cfg, tok)?;
        adam.save(&tmp.join("optimizer.safetensors"))?;
        let st =
            serde_json::to_string_pretty(state).map_err(|e| TrainError::Config(e.to_string()))?;
        std::fs::write(tmp.join("trainer.json"), st).map_err(io_err(tmp))
    })?;
    let all = checkpoint::list(run);
    if all.len() > keep.max(1) {
        for (_, old) in &all[..all.len() - keep.max(1)] {
            let _ = std::fs::remove_dir_all(old);
        }
    }
    Ok(())
}

fn load_checkpoint(
    dir: &Path,
    vs: &mut nn::VarStore,
    adam: &mut Adam,
    run_id: &str,
) -> Result<TrainerState, TrainError> {
    let err = |msg: String| TrainError::Checkpoint {
        path: dir.display().to_string(),
        msg,
    };
    let text = std::fs::read_to_string(dir.join("trainer.json"))
        .map_err(|e| err(format!("trainer.json: {e}")))?;
    let state: TrainerState =
        serde_json::from_str(&text).map_err(|e| err(format!("trainer.json: {e}")))?;
    if state.run_id != run_id {
        return Err(err(
            "belongs to a different run (model, data or seed differ); use --force to start over"
                .into(),
        ));
    }
    gnmt_model::load_weights(vs, &dir.join("model.safetensors")).map_err(|e| err(e.to_string()))?;
    adam.load(
        &dir.join("optimizer.safetensors"),
        state.adam_step.unwrap_or(state.step),
    )
    .map_err(err)?;
    Ok(state)
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
            let cfg: TrainConfig = toml::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
            cfg.model_config(8000)
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
        assert!(n >= 5);
    }

    #[test]
    fn smoothed_loss_ignores_padding() {
        let logits = Tensor::randn([2, 3, 5], (Kind::Float, Device::Cpu));
        let t1 = Tensor::from_slice(&[1i64, 2, 0, 3, 0, 0]).view([2, 3]);
        let (a, _) = smoothed_loss(&logits, &t1, 0.1);
        // Changing the logits at padded positions changes nothing.
        let mask = t1.eq(0).unsqueeze(2).to_kind(Kind::Float);
        let (b, _) = smoothed_loss(&(&logits + mask * 100.0), &t1, 0.1);
        assert!((a.double_value(&[]) - b.double_value(&[])).abs() < 1e-6);
    }

    fn tiny_run(out: &Path) -> TrainConfig {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/m30k");
        let mut model = BTreeMap::new();
        model.insert("dropout".to_string(), serde_json::json!(0.0));
        TrainConfig {
            train_src: data.join("train.en"),
            train_tgt: data.join("train.de"),
            valid_src: Some(data.join("valid.en")),
            valid_tgt: Some(data.join("valid.de")),
            vocab_size: 600,
            preset: "tiny".into(),
            model,
            out: out.to_path_buf(),
            batch_size: 16,
            train_limit: Some(64),
            valid_bleu_sentences: 8,
            log_every: 1,
            ..Default::default()
        }
    }

    fn metric_lines(run: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn gradient_accumulation_takes_one_step_per_group_of_batches() {
        let dir = tempfile::tempdir().unwrap();
        // 64 pairs in batches of 16: 4 batches per epoch, 2 optimizer steps per epoch with accum 2.
        let cfg = TrainConfig {
            accum_steps: 2,
            max_steps: 3,
            valid_every: 0,
            save_every: 100,
            ..tiny_run(dir.path())
        };
        let s = train(&cfg, false, false).unwrap();
        assert_eq!(s.steps, 3);
        let last = checkpoint::list(dir.path()).pop().unwrap().1;
        let st: TrainerState =
            serde_json::from_str(&std::fs::read_to_string(last.join("trainer.json")).unwrap())
                .unwrap();
        assert_eq!(
            (st.epoch, st.batch),
            (1, 2),
            "3 steps of 2 batches = 1 epoch + 2 batches"
        );
        let lines = metric_lines(dir.path());
        let steps: Vec<i64> = lines
            .iter()
            .filter(|l| l.get("loss").is_some())
            .filter_map(|l| l["step"].as_i64())
            .collect();
        assert_eq!(steps, vec![1, 2, 3]);
        // Each epoch reports its batches and padding; each step how long batching took.
        let epochs: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| l.get("padding_waste").is_some())
            .collect();
        assert_eq!(epochs.len(), 2);
        assert_eq!(epochs[0]["batches"], 4);
        let w = epochs[0]["padding_waste"].as_f64().unwrap();
        assert!((0.0..0.5).contains(&w), "{w}");
        assert!(lines
            .iter()
            .all(|l| l.get("loss").is_none() || l["data_fraction"].as_f64().is_some()));
    }

    #[test]
    fn epochs_and_patience_stop_training() {
        let dir = tempfile::tempdir().unwrap();
        // 4 batches per epoch: 2 epochs = 8 steps, well before max_steps.
        let cfg = TrainConfig {
            epochs: Some(2),
            max_steps: 1000,
            valid_every: 0,
            ..tiny_run(dir.path())
        };
        assert_eq!(train(&cfg, false, false).unwrap().steps, 8);

        // With a zero learning rate nothing improves: patience 2 stops at the third validation.
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            lr: 0.0,
            max_steps: 1000,
            valid_every: 2,
            patience: Some(2),
            best_metric: BestMetric::Loss,
            ..tiny_run(dir.path())
        };
        let s = train(&cfg, false, false).unwrap();
        assert!(s.early_stopped);
        assert_eq!(s.steps, 6);
        let valid: Vec<f64> = metric_lines(dir.path())
            .iter()
            .filter_map(|l| l["valid_loss"].as_f64())
            .collect();
        assert_eq!(valid.len(), 3);
        assert!((s.best_score.unwrap() - valid[0]).abs() < 1e-12);
        // The early stop left a checkpoint at its step.
        assert_eq!(checkpoint::list(dir.path()).pop().unwrap().0, 6);
    }

    #[test]
    fn bf16_mixed_precision_trains_and_saves_float32_weights() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            precision: Precision::Bf16,
            lr: 0.01,
            max_steps: 8,
            valid_every: 0,
            save_every: 8,
            ..tiny_run(dir.path())
        };
        let s = train(&cfg, false, false).unwrap();
        assert!(
            s.last_loss.is_finite() && s.last_loss < s.first_loss,
            "{s:?}"
        );
        let w = Tensor::read_safetensors(dir.path().join("final/model.safetensors")).unwrap();
        assert!(w.iter().all(|(_, t)| t.kind() == Kind::Float));
        // Resuming continues from the float32 master weights and the bf16 copy alike.
        let cfg = TrainConfig {
            max_steps: 10,
            ..cfg
        };
        assert_eq!(train(&cfg, true, false).unwrap().steps, 10);
    }

    #[test]
    fn fp16_loss_scaling_skips_overflows_and_resumes_exactly() {
        let dir = tempfile::tempdir().unwrap();
        // 2^40 overflows fp16 (max 65504) at once: the first steps must be skipped and the scale
        // come down until gradients fit, then training proceeds.
        let cfg = TrainConfig {
            precision: Precision::Fp16,
            init_loss_scale: 2f64.powi(40),
            lr: 0.01,
            max_steps: 40,
            valid_every: 0,
            save_every: 20,
            schedule: Schedule::Constant,
            ..tiny_run(dir.path())
        };
        let s = train(&cfg, false, false).unwrap();
        assert!(
            s.last_loss.is_finite() && s.last_loss < s.first_loss,
            "{s:?}"
        );
        let lines = metric_lines(dir.path());
        let scales: Vec<f64> = lines
            .iter()
            .filter_map(|l| l["loss_scale"].as_f64())
            .collect();
        assert_eq!(scales.len(), 40);
        assert!(
            scales[0] < 2f64.powi(40),
            "first step overflowed: {scales:?}"
        );
        assert!(scales.windows(2).all(|w| w[1] <= w[0]), "{scales:?}");
        let last = scales[scales.len() - 1];
        // It settles where this model's gradients fit (about 2^20 for `tiny`), far below 2^40.
        assert!((1.0..=2f64.powi(24)).contains(&last), "{scales:?}");
        let st: TrainerState = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("checkpoints/step-00000040/trainer.json"))
                .unwrap(),
        )
        .unwrap();
        let skipped = 40 - st.adam_step.unwrap();
        assert!(skipped >= 1, "{st:?}");
        assert_eq!(st.loss_scaler.as_ref().map(|s| s.scale), Some(last));
        let w = Tensor::read_safetensors(dir.path().join("final/model.safetensors")).unwrap();
        assert!(w.iter().all(|(_, t)| t.kind() == Kind::Float));
        let losses = |run: &Path| -> Vec<f64> {
            metric_lines(run)
                .iter()
                .filter_map(|l| l["loss"].as_f64())
                .collect()
        };
        let full = losses(dir.path());
        // Stopped at 20 and resumed: the same 40 losses (Adam's count and the scale restored).
        let dir2 = tempfile::tempdir().unwrap();
        // (The same vocabulary: unigram training is not bit-reproducible between runs.)
        let cfg = TrainConfig {
            vocab: Some(dir.path().join("tokenizer.json")),
            ..cfg
        };
        let half = TrainConfig {
            max_steps: 20,
            out: dir2.path().to_path_buf(),
            ..cfg.clone()
        };
        train(&half, false, false).unwrap();
        let rest = TrainConfig {
            out: dir2.path().to_path_buf(),
            ..cfg
        };
        train(&rest, true, false).unwrap();
        assert_eq!(losses(dir2.path()), full);
    }

    #[test]
    fn metrics_restart_at_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let lines = [
            r#"{"step":0,"epoch":0,"padding_waste":0.1}"#,
            r#"{"step":10,"loss":3.0}"#,
            r#"{"step":10,"valid_loss":2.0}"#,
            r#"{"step":10,"epoch":1,"padding_waste":0.1}"#,
            r#"{"step":15,"loss":2.5}"#,
        ];
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        // Resuming from the step-10 checkpoint keeps what led to it, drops what came after.
        restart_metrics(&p, 10).unwrap();
        let kept = std::fs::read_to_string(&p).unwrap();
        assert_eq!(kept, lines[..3].join("\n") + "\n");
        // A fresh run starts empty.
        restart_metrics(&p, 0).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
    }
}
