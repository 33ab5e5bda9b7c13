//! The training loop: a [`Trainer`] opened on a run directory, stepping over groups of
//! batches, logging, validating (keeping the best), saving, and ending every run the same way.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use gnmt_bleu::{Bleu, BleuConfig, BleuStats};
use gnmt_data::{epoch_batches, PairCorpus};
use gnmt_model::{Kernels, ModelConfig, Seq2Seq};
use gnmt_tokenizer::{SegmentationSampler, SubwordTokenizer, BOS, EOS};
use gnmt_translate::{cpu_decoder, translate_batch_with, SearchConfig};
use tch::{nn, Device, Kind, Tensor};

use crate::checkpoint::{self, ModelFiles, TrainerState};
use crate::config::io_err;
pub use crate::config::{parse_device, BestMetric, Precision, TrainConfig, TrainError};
use crate::ema::Ema;
pub use crate::loss::{loss_backward, smoothed_loss, smoothed_loss_sum};
use crate::optim::{Adam, LossScaler};
pub use crate::run::RUN_FILES;
use crate::run::{
    follower_data, lead_data, leads, open_validation, resume_state, share_state, write_run_files,
    Validation,
};
use crate::shares::Shares;

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

/// Target tokens of the pairs `idx` (each with its EOS): the loss's denominator.
fn target_tokens(c: &PairCorpus, idx: &[usize]) -> usize {
    idx.iter().map(|&i| c.tgt(i).len() + 1).sum()
}

/// What the forward and backward passes over one group of batches gave.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupLoss {
    /// The label-smoothed loss per target token of the whole group.
    pub loss: f64,
    /// Source and target tokens (for tokens/s).
    pub tokens: i64,
    /// Seconds spent building batches.
    pub data_secs: f64,
}

/// How a group's loss is computed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LossSetup {
    pub device: Device,
    pub label_smoothing: f64,
    /// The factor the loss is multiplied by before backward (fp16 loss scaling; else 1).
    pub loss_scale: f64,
    /// Data-parallel training: this process's share of every batch, `(rank, world_size)`.
    pub shard: (usize, usize),
    /// libtorch threads for the batch's shares ([`Shares::run`]).
    pub threads: usize,
}

/// Rank `rank`'s share of a batch of `world` ranks (every `world`-th pair), and whether it is a
/// stand-in: a rank whose share is empty runs the first pair with weight 0, so that its
/// gradients exist and are zero, as the all-reduce needs.
fn shard_of(idx: &[usize], (rank, world): (usize, usize)) -> (Vec<usize>, bool) {
    let share = crate::shares::every_nth(idx, rank, world);
    match share.is_empty() {
        true => (idx.iter().copied().take(1).collect(), true),
        false => (share, false),
    }
}

/// Forward and backward over a group of batches whose gradients make one optimizer step. The
/// loss of the group is the token-weighted mean over all of it: each batch's summed loss is
/// divided by the group's target tokens, so `accum_steps = N` is the batch of all N (a group
/// cut short at the end of an epoch included). `seed(i)` seeds the dropout of batch `i`;
/// gradients end up in `adam`.
fn backward_group(
    w: &mut Weights,
    corpus: &PairCorpus,
    group: &[Vec<usize>],
    setup: LossSetup,
    seed: impl Fn(usize) -> i64,
) -> Result<GroupLoss, TrainError> {
    let LossSetup {
        device,
        label_smoothing,
        loss_scale,
        shard,
        threads,
    } = setup;
    let total: usize = group.iter().map(|b| target_tokens(corpus, b)).sum();
    let factor = loss_scale / total.max(1) as f64;
    let mut out = GroupLoss {
        loss: 0.0,
        tokens: 0,
        data_secs: 0.0,
    };
    let model = w.work.as_ref().map_or(&w.model, |x| &x.1);
    for (i, idx) in group.iter().enumerate() {
        let (idx, stand_in) = shard_of(idx, shard);
        if idx.is_empty() {
            continue;
        }
        let weight = if stand_in { 0.0 } else { 1.0 };
        let parts = w.shares.split(&idx);
        // Each rank and each share its own dropout masks.
        let seed = seed(i).wrapping_add((shard.0 as i64) << 48);
        let passes = w
            .shares
            .run(model, &mut w.adam, parts.len(), threads, |m, j| {
                let t_data = Instant::now();
                let b = make_batch(corpus, &parts[j], device);
                let data_secs = t_data.elapsed().as_secs_f64();
                let logits =
                    crate::seeded_dropout(device, seed.wrapping_add((j as i64) << 40), || {
                        m.forward(&b.src, &b.src_len, &b.tgt_in, true)
                    });
                let loss_sum =
                    loss_backward(&logits, &b.tgt_out, label_smoothing, factor * weight)?;
                Ok((loss_sum, b.tokens, data_secs))
            })?;
        for (loss_sum, tokens, data_secs) in passes {
            out.loss += weight * loss_sum / total.max(1) as f64;
            out.tokens += (weight as i64) * tokens;
            out.data_secs += data_secs;
        }
    }
    Ok(out)
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

/// How a run starts in its directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Start {
    /// A new run; an error if the directory already holds one.
    #[default]
    Fresh,
    /// Continue from the last checkpoint (a fresh start if there is none). The settings of the
    /// run's course must be those it was trained with, except the ones named here, which the
    /// user changes deliberately (`--set KEY=VALUE`): each change is logged.
    Resume { allow_changed: BTreeSet<String> },
    /// Start over: delete what an earlier run wrote there (and nothing else).
    Overwrite,
}

impl Start {
    /// [`Start::Resume`] allowing no change.
    pub fn resume() -> Self {
        Start::Resume {
            allow_changed: BTreeSet::new(),
        }
    }
}

/// Where the trainer reports progress, and how it is told to stop: the binary's business
/// (signals, progress bars), handed in.
#[derive(Default)]
pub struct Control {
    /// Set (e.g. by a Ctrl-C handler) to stop at the next step: a checkpoint is saved first.
    pub stop: Option<Arc<AtomicBool>>,
    /// Called at every logged step; without it the step is logged through `tracing`.
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("stop", &self.stop)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// What [`Control::progress`] calls.
pub type ProgressFn = Box<dyn FnMut(&Progress)>;

/// One logged step, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub step: i64,
    pub max_steps: i64,
    pub loss: f64,
    pub lr: f64,
    pub tokens_per_s: f64,
}

/// Data-parallel training all-reduces gradients in flat buckets of this size (DDP's default).
const BUCKET_BYTES: usize = 25 << 20;

/// Runs (or resumes) training with no stop flag and progress logged through `tracing`.
pub fn train(cfg: &TrainConfig, start: Start) -> Result<TrainSummary, TrainError> {
    train_with(cfg, start, Control::default())
}

/// Runs (or resumes) training, reporting to and stopping by `control`.
pub fn train_with(
    cfg: &TrainConfig,
    start: Start,
    control: Control,
) -> Result<TrainSummary, TrainError> {
    Trainer::open(cfg, start)?.run(control)
}

/// Runs (or resumes) one rank of a data-parallel run over `group` (every rank calls this with
/// the same config); rank 0 alone writes the run directory.
pub fn train_parallel(
    cfg: &TrainConfig,
    start: Start,
    control: Control,
    group: gnmt_dist::ProcessGroup,
) -> Result<TrainSummary, TrainError> {
    Trainer::open_parallel(cfg, start, Some(group))?.run(control)
}

/// The model trained, with its float32 master weights and, in mixed precision, the working
/// copy that runs forward and backward.
struct Weights {
    vs: nn::VarStore,
    model: Seq2Seq,
    work: Option<(nn::VarStore, Seq2Seq)>,
    adam: Adam,
    /// `ema_decay`: the average of the weights (rank 0 only: it alone validates and saves).
    ema: Option<Ema>,
    /// `batch_shares`: the replicas that train shares of a batch beside the model.
    shares: Shares,
}

impl Weights {
    /// The weights of a new model, with replicas for `shares` shares of a batch on a CPU.
    /// Draws initial weights from libtorch's generator: call under [`crate::seeded`].
    fn new(
        config: &ModelConfig,
        precision: Precision,
        device: Device,
        shares: usize,
    ) -> Result<Self, TrainError> {
        let vs = nn::VarStore::new(device);
        let model = Seq2Seq::new(&vs.root(), config)?;
        // Mixed precision: a bf16/fp16 working copy runs forward and backward; Adam keeps
        // float32 master weights (what checkpoints hold) and refreshes the copy after every step.
        let (work, adam) = match precision {
            Precision::Fp32 => (None, Adam::new(&vs)),
            Precision::Bf16 | Precision::Fp16 => {
                let mut wvs = nn::VarStore::new(device);
                let wm = Seq2Seq::new(&wvs.root(), config)?;
                let kind = match precision {
                    Precision::Bf16 => Kind::BFloat16,
                    _ => Kind::Half,
                };
                wm.cast(&mut wvs, kind)?;
                let adam = Adam::mixed(&vs, &wvs).map_err(TrainError::Config)?;
                (Some((wvs, wm)), adam)
            }
        };
        let shares = Shares::new(shares, work.as_ref().map_or(&vs, |w| &w.0), config, &adam)?;
        Ok(Weights {
            vs,
            model,
            work,
            adam,
            ema: None,
            shares,
        })
    }

    /// With `ema_decay`, starts the average of the weights (from the weights as they are).
    fn keep_average(
        &mut self,
        cfg: &TrainConfig,
        config: &ModelConfig,
        device: Device,
    ) -> Result<(), TrainError> {
        if let Some(decay) = cfg.ema_decay {
            // Under the generator's lock: building the model draws (discarded) initial weights,
            // which must not land between another trainer's seed and its draws.
            let ema = crate::seeded(cfg.seed as i64, || {
                Ema::new(config, &self.vs, decay, device)
            })?;
            self.ema = Some(ema);
        }
        Ok(())
    }

    /// The model validated and saved: the average of the weights, or the weights.
    fn kept(&self) -> (&nn::VarStore, &Seq2Seq) {
        match &self.ema {
            Some(e) => (&e.vs, &e.model),
            None => (&self.vs, &self.model),
        }
    }
}

/// The bookkeeping of the logging window: the step's tokens/s, data time and (data-parallel)
/// gradient all-reduce time are over it.
struct LogWindow {
    since: Instant,
    tokens_at_start: i64,
    data_secs: f64,
    reduce_secs: f64,
}

impl LogWindow {
    fn new(tokens: i64) -> Self {
        LogWindow {
            since: Instant::now(),
            tokens_at_start: tokens,
            data_secs: 0.0,
            reduce_secs: 0.0,
        }
    }
}

/// The steps at which the run last validated and last saved a checkpoint.
#[derive(Debug, Clone, Copy)]
struct Marks {
    validated: i64,
    saved: i64,
}

/// The state of `cfg`'s run before its first step.
fn fresh_state(cfg: &TrainConfig, run_id: String) -> TrainerState {
    TrainerState {
        step: 0,
        epoch: 0,
        batch: 0,
        seed: cfg.seed,
        best_score: None,
        stale_validations: 0,
        run_id,
        settings: Some(cfg.settings()),
        adam_step: None,
        loss_scaler: (cfg.precision == Precision::Fp16).then(|| LossScaler {
            scale: cfg.init_loss_scale,
            ..LossScaler::default()
        }),
    }
}

/// A training run, opened on its directory.
pub struct Trainer<'a> {
    cfg: &'a TrainConfig,
    device: Device,
    run: PathBuf,
    tok_path: PathBuf,
    tokenizer: SubwordTokenizer,
    corpus: PairCorpus,
    /// `subword_alpha`: draws each step's segmentations.
    sampler: Option<SegmentationSampler>,
    /// Per pair, the longer side plus one: what batching sorts by.
    lengths: Vec<usize>,
    valid: Option<Validation>,
    model_cfg: ModelConfig,
    w: Weights,
    state: TrainerState,
    /// Rank 0 (or a single process) alone writes metrics.
    metrics: Option<std::fs::File>,
    marks: Marks,
    /// Data-parallel training: the other ranks.
    group: Option<gnmt_dist::ProcessGroup>,
    summary: TrainSummary,
    tokens_done: i64,
    window: LogWindow,
}

impl std::fmt::Debug for Trainer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("run", &self.run)
            .field("state", &self.state)
            .finish()
    }
}

impl<'a> Trainer<'a> {
    /// Opens the run directory, the vocabulary, the data and the model (from the last
    /// checkpoint when resuming).
    pub fn open(cfg: &'a TrainConfig, start: Start) -> Result<Self, TrainError> {
        Trainer::open_parallel(cfg, start, None)
    }

    /// [`Trainer::open`] for one rank of a data-parallel run: rank 0 opens the run directory
    /// and hands the vocabulary and the state to the others through the job's store, and every
    /// rank starts from rank 0's weights.
    pub fn open_parallel(
        cfg: &'a TrainConfig,
        start: Start,
        group: Option<gnmt_dist::ProcessGroup>,
    ) -> Result<Self, TrainError> {
        let device = parse_device(&cfg.device)?;
        if let Some(decay) = cfg.ema_decay {
            crate::ema::check_decay(decay)?;
        }
        let run = cfg.out.clone();
        let lead = leads(group.as_ref());
        let (tok_path, tokenizer, corpus, meta) = match &group {
            Some(g) if !lead => follower_data(cfg, &run, g)?,
            _ => lead_data(cfg, &run, &start, group.as_ref())?,
        };
        let valid = match lead {
            true => open_validation(cfg, &tokenizer)?,
            false => None,
        };
        let model_cfg = cfg.model_config(tokenizer.vocab_size())?;
        let sampler = cfg
            .subword_alpha
            .map(|a| SegmentationSampler::new(&tokenizer, a))
            .transpose()
            .map_err(|e| TrainError::Config(format!("subword_alpha: {e}")))?;
        let data_fingerprint = serde_json::json!({
            "tokenizer": tokenizer.hash(), "src": meta.src_stamp, "tgt": meta.tgt_stamp,
            "pairs": meta.report.kept, "tokens": [meta.src_tokens, meta.tgt_tokens],
        });
        let run_id = cfg.run_id(&model_cfg, &data_fingerprint);
        let mut w = crate::seeded(cfg.seed as i64, || {
            Weights::new(&model_cfg, cfg.precision, device, cfg.batch_shares)
        })?;
        if lead {
            w.keep_average(cfg, &model_cfg, device)?;
        }
        let mut state = fresh_state(cfg, run_id);
        if let (Start::Resume { allow_changed }, true) = (&start, lead) {
            if let Some((_, dir)) = checkpoint::list(&run).pop() {
                let legacy = cfg.legacy_run_id(&model_cfg, &data_fingerprint);
                state = resume_state(&dir, &state, &legacy, allow_changed)?;
                let ema = w.ema.as_mut().map(|e| &mut e.vs);
                checkpoint::load_tensors(&dir, &state, &mut w.vs, &mut w.adam, ema)?;
                tracing::info!("resumed from {} (step {})", dir.display(), state.step);
            }
        }
        if let Some(g) = &group {
            state = share_state(g, state)?;
            w.adam.broadcast_state(g, 0)?;
            w.adam.step = state.adam_step.unwrap_or(state.step);
        }
        let metrics = match lead {
            true => Some(write_run_files(cfg, &run, state.step)?),
            false => None,
        };
        let params: i64 = w.vs.variables().values().map(|t| t.numel() as i64).sum();
        tracing::info!(
            "model: preset {}, {params} parameters, device {:?}",
            cfg.preset,
            device
        );
        let lengths = (0..corpus.len())
            .map(|i| corpus.src(i).len().max(corpus.tgt(i).len()) + 1)
            .collect();
        let marks = Marks {
            validated: state.step,
            saved: state.step,
        };
        Ok(Trainer {
            cfg,
            device,
            run,
            tok_path,
            tokenizer,
            corpus,
            sampler,
            lengths,
            valid,
            model_cfg,
            w,
            state,
            metrics,
            marks,
            group,
            summary: TrainSummary {
                first_loss: f64::NAN,
                ..Default::default()
            },
            tokens_done: 0,
            window: LogWindow::new(0),
        })
    }

    /// Trains until `max_steps`, the epoch limit, early stopping or a stop request, then ends
    /// the run (validation and checkpoint at its last step, `final/`).
    pub fn run(mut self, mut control: Control) -> Result<TrainSummary, TrainError> {
        let start = Instant::now();
        let accum = self.cfg.accum_steps.max(1);
        'outer: while self.state.step < self.cfg.max_steps {
            if self.cfg.epochs.is_some_and(|e| self.state.epoch >= e) {
                break;
            }
            let batches = epoch_batches(
                &self.lengths,
                self.cfg.batch_size,
                self.cfg.max_tokens,
                self.cfg.seed,
                self.state.epoch,
            );
            if self.state.batch == 0 {
                self.log_epoch(&batches)?;
            }
            while self.state.batch < batches.len() {
                let stop = control
                    .stop
                    .as_ref()
                    .is_some_and(|s| s.load(Ordering::SeqCst));
                // Data-parallel ranks agree on stopping through the step's all-reduce.
                if stop && self.group.is_none() {
                    self.summary.interrupted = true;
                    break 'outer;
                }
                let end = (self.state.batch + accum).min(batches.len());
                let (loss, lr, grad_norm) = self.step(&batches[self.state.batch..end], stop)?;
                self.state.batch = end;
                self.log_step(loss, lr, grad_norm, &mut control)?;
                if self.validation_due() {
                    self.validate_and_keep_best()?;
                    self.share_early_stop()?;
                }
                if self.summary.interrupted {
                    break 'outer;
                }
                let c = self.cfg;
                if self.summary.early_stopped
                    || self.state.step % c.save_every.max(1) == 0
                    || self.state.step == c.max_steps
                {
                    self.save()?;
                }
                if self.summary.early_stopped || self.state.step >= c.max_steps {
                    break 'outer;
                }
            }
            self.state.epoch += 1;
            self.state.batch = 0;
        }
        self.finish(start)
    }

    /// One optimizer step over a group of batches: `(loss, lr, grad_norm)`.
    /// With several ranks, `stop` (this rank's stop request) is summed with the others': a
    /// request on any rank ends the run on all after this step.
    fn step(&mut self, group: &[Vec<usize>], stop: bool) -> Result<(f64, f64, f64), TrainError> {
        let cfg = self.cfg;
        let w = &mut self.w;
        let scale = self.state.loss_scaler.as_ref().map_or(1.0, |s| s.scale);
        let threads = tch::get_num_threads().max(1) as usize;
        w.adam.set_threads(threads);
        w.adam.zero_grad();
        w.adam.grad_scale = scale;
        let step = self.state.step;
        // A seed per batch makes dropout reproducible after a resume.
        let seed = |micro: usize| {
            (cfg.seed as i64)
                .wrapping_mul(1_000_003)
                .wrapping_add(step)
                .wrapping_add((micro as i64) << 32)
        };
        let shard = self
            .group
            .as_ref()
            .map_or((0, 1), |g| (g.rank(), g.world_size()));
        let drawn = self.sampler.as_ref().map(|s| {
            let seed = crate::subwords::step_seed(cfg.seed, step);
            crate::subwords::resample_group(&self.corpus, group, s, cfg.filter.max_len, seed)
        });
        let (corpus, group) = match &drawn {
            Some((c, g)) => (c, g.as_slice()),
            None => (&self.corpus, group),
        };
        let mut g = backward_group(
            w,
            corpus,
            group,
            LossSetup {
                device: self.device,
                label_smoothing: cfg.label_smoothing,
                loss_scale: scale,
                shard,
                threads,
            },
            seed,
        )?;
        // Data-parallel: each rank's gradients are of its share of the group, already divided
        // by the whole group's target tokens, so their sum is the gradient of the whole group;
        // every rank then clips and applies the same update.
        if let Some(pg) = &self.group {
            let mut extra = [g.loss, g.tokens as f64, f64::from(u8::from(stop))];
            let t_reduce = Instant::now();
            w.adam.all_reduce_grads(pg, &mut extra, BUCKET_BYTES)?;
            self.window.reduce_secs += t_reduce.elapsed().as_secs_f64();
            g.loss = extra[0];
            g.tokens = extra[1].round() as i64;
            self.summary.interrupted |= extra[2] > 0.0;
        }
        self.tokens_done += g.tokens;
        self.window.data_secs += g.data_secs;
        let grad_norm = w.adam.clip_grad_norm(cfg.clip_norm);
        let lr = cfg.schedule.lr(cfg.lr, step + 1, cfg.max_steps);
        // fp16: an overflowed step is skipped (the batches are consumed) and the scale halved.
        let apply = match &mut self.state.loss_scaler {
            Some(s) => s.update(grad_norm.is_finite()),
            None => true,
        };
        if apply {
            w.adam.apply(lr);
            if let Some(e) = &mut w.ema {
                e.update(&w.vs, w.adam.step, threads);
            }
        } else {
            tracing::debug!(
                "step {}: fp16 gradients overflowed, step skipped, loss scale now {}",
                step + 1,
                self.state.loss_scaler.as_ref().map_or(1.0, |s| s.scale)
            );
        }
        self.state.step += 1;
        self.state.adam_step = (w.adam.step != self.state.step).then_some(w.adam.step);
        if self.summary.first_loss.is_nan() {
            self.summary.first_loss = g.loss;
        }
        self.summary.last_loss = g.loss;
        Ok((g.loss, lr, grad_norm))
    }

    /// Rank 0 decides early stopping on its validation; the other ranks follow.
    fn share_early_stop(&mut self) -> Result<(), TrainError> {
        if let Some(pg) = &self.group {
            let mut flag = Tensor::from_slice(&[f32::from(u8::from(self.summary.early_stopped))])
                .to_device(pg.device());
            pg.broadcast(&mut flag, 0)?;
            self.summary.early_stopped = flag.double_value(&[0]) > 0.0;
        }
        Ok(())
    }

    /// Data-parallel: every rank must hold the same weights (one update everywhere); a cheap
    /// checksum compared at every logged step says so, or warns.
    fn check_weights_in_sync(&self) -> Result<(), TrainError> {
        let Some(pg) = &self.group else {
            return Ok(());
        };
        let sums: Vec<Tensor> = self
            .w
            .vs
            .trainable_variables()
            .iter()
            .map(|t| t.sum(Kind::Double))
            .collect();
        let total = Tensor::stack(&sums, 0)
            .sum(Kind::Double)
            .to_device(pg.device());
        let all = pg.all_gather(&total.view([1]))?;
        let values: Vec<f64> = all.iter().map(|t| t.double_value(&[0])).collect();
        let reference = values.first().copied().unwrap_or(0.0);
        if values
            .iter()
            .any(|v| (v - reference).abs() > 1e-6 * reference.abs().max(1.0))
        {
            tracing::warn!(
                "step {}: the ranks' weights differ (checksums {values:?})",
                self.state.step
            );
        } else {
            tracing::debug!("step {}: weights in sync on every rank", self.state.step);
        }
        Ok(())
    }

    fn lead(&self) -> bool {
        leads(self.group.as_ref())
    }

    fn metric(&mut self, line: serde_json::Value) -> Result<(), TrainError> {
        let path = self.run.join("metrics.jsonl");
        match &mut self.metrics {
            Some(m) => writeln!(m, "{line}").map_err(io_err(&path)),
            None => Ok(()),
        }
    }

    fn log_epoch(&mut self, batches: &[Vec<usize>]) -> Result<(), TrainError> {
        let waste = batches
            .iter()
            .map(|b| gnmt_data::padding_waste(&self.lengths, b))
            .sum::<f64>()
            / batches.len().max(1) as f64;
        tracing::info!(
            "epoch {}: {} batches, {:.1}% padding",
            self.state.epoch,
            batches.len(),
            100.0 * waste
        );
        self.metric(
            serde_json::json!({"step": self.state.step, "epoch": self.state.epoch,
            "batches": batches.len(), "padding_waste": waste}),
        )
    }

    fn log_step(
        &mut self,
        loss: f64,
        lr: f64,
        grad_norm: f64,
        control: &mut Control,
    ) -> Result<(), TrainError> {
        let step = self.state.step;
        if step % self.cfg.log_every.max(1) != 0 && step != self.cfg.max_steps {
            return Ok(());
        }
        let secs = self.window.since.elapsed().as_secs_f64().max(1e-9);
        let tps = (self.tokens_done - self.window.tokens_at_start) as f64 / secs;
        let data_fraction = self.window.data_secs / secs;
        let reduce_fraction = self.window.reduce_secs / secs;
        self.window = LogWindow::new(self.tokens_done);
        self.check_weights_in_sync()?;
        let layers = layer_grad_norms(&self.w.adam);
        let mut line = serde_json::json!({"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
            "tokens_per_s": tps, "data_fraction": data_fraction, "epoch": self.state.epoch, "layer_grad_norms": layers});
        if let Some(sc) = &self.state.loss_scaler {
            line["loss_scale"] = sc.scale.into();
        }
        if self.group.is_some() {
            // Includes waiting for the slowest rank: the all-reduce starts when all arrive.
            line["reduce_fraction"] = reduce_fraction.into();
        }
        self.metric(line)?;
        let p = Progress {
            step,
            max_steps: self.cfg.max_steps,
            loss,
            lr,
            tokens_per_s: tps,
        };
        match &mut control.progress {
            _ if !self.lead() => {}
            Some(f) => f(&p),
            None => tracing::info!("step {step} loss {loss:.4} lr {lr:.3e} {tps:.0} tokens/s"),
        }
        Ok(())
    }

    fn validation_due(&self) -> bool {
        let c = self.cfg;
        // From the config, not `self.valid`: every rank must agree (only rank 0 validates).
        c.valid_src.is_some()
            && c.valid_tgt.is_some()
            && c.valid_every > 0
            && (self.state.step % c.valid_every == 0 || self.state.step == c.max_steps)
    }

    /// Validation loss and BLEU; a new best is written to `best/`; patience counts the rest.
    fn validate_and_keep_best(&mut self) -> Result<(), TrainError> {
        let Some(v) = &self.valid else {
            return Ok(());
        };
        let (vloss, bleu) = validate(self.w.kept().1, v, &self.tokenizer, self.cfg, self.device)?;
        let step = self.state.step;
        self.marks.validated = step;
        self.metric(serde_json::json!({"step": step, "valid_loss": vloss, "valid_ppl": vloss.exp(), "valid_bleu": bleu}))?;
        tracing::info!(
            "step {step}: validation loss {vloss:.4}, ppl {:.2}, BLEU {bleu:.2}",
            vloss.exp()
        );
        let score = self.cfg.best_metric.score(vloss, bleu);
        if self.state.best_score.is_none_or(|b| score > b) {
            self.state.best_score = Some(score);
            self.state.stale_validations = 0;
            self.model_files().write(&self.run.join("best"))?;
        } else {
            self.state.stale_validations += 1;
            if self
                .cfg
                .patience
                .is_some_and(|p| self.state.stale_validations >= p)
            {
                tracing::info!(
                    "early stopping: {} validations without improvement",
                    self.state.stale_validations
                );
                self.summary.early_stopped = true;
            }
        }
        Ok(())
    }

    fn model_files(&self) -> ModelFiles<'_> {
        ModelFiles {
            vs: self.w.kept().0,
            config: &self.model_cfg,
            tokenizer: &self.tok_path,
        }
    }

    fn save(&mut self) -> Result<(), TrainError> {
        if !self.lead() {
            self.marks.saved = self.state.step;
            return Ok(());
        }
        checkpoint::save(
            &self.run,
            &self.model_files(),
            checkpoint::Training {
                weights: self.w.ema.as_ref().map(|_| &self.w.vs),
                adam: &self.w.adam,
                state: &self.state,
            },
            self.cfg.keep_last,
        )?;
        self.marks.saved = self.state.step;
        Ok(())
    }

    /// Ends every run the same way: a step not yet saved gets its validation (unless
    /// interrupted: the user is waiting) and its checkpoint; then `final/`.
    fn finish(mut self, start: Instant) -> Result<TrainSummary, TrainError> {
        if self.summary.interrupted {
            tracing::warn!(
                "interrupted: saving a checkpoint at step {}",
                self.state.step
            );
        }
        if self.state.step > self.marks.saved {
            let validate = !self.summary.interrupted
                && self.valid.is_some()
                && self.cfg.valid_every > 0
                && self.state.step > self.marks.validated;
            if validate {
                self.validate_and_keep_best()?;
            }
            self.save()?;
        }
        let final_dir = self.run.join("final");
        if self.lead() {
            self.model_files().write(&final_dir)?;
        }
        // The other ranks exit once rank 0 has written everything.
        if let Some(pg) = &self.group {
            pg.barrier()?;
        }
        let mut s = self.summary;
        s.steps = self.state.step;
        s.tokens_per_s = self.tokens_done as f64 / start.elapsed().as_secs_f64().max(1e-9);
        s.final_model = final_dir;
        s.best_score = self.state.best_score.map(|b| match self.cfg.best_metric {
            BestMetric::Bleu => b,
            BestMetric::Loss => -b,
        });
        Ok(s)
    }
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

/// Validation loss (per target token) and greedy BLEU on the first `valid_bleu_sentences`.
fn validate(
    model: &Seq2Seq,
    v: &Validation,
    tok: &SubwordTokenizer,
    cfg: &TrainConfig,
    device: Device,
) -> Result<(f64, f64), TrainError> {
    tch::no_grad(|| {
        let mut total = 0.0;
        let mut n = 0.0;
        let idx: Vec<usize> = (0..v.corpus.len()).collect();
        for chunk in idx.chunks(cfg.batch_size.max(1)) {
            let b = make_batch(&v.corpus, chunk, device);
            let logits = model.forward(&b.src, &b.src_len, &b.tgt_in, false);
            let (nll, _) = smoothed_loss_sum(&logits, &b.tgt_out, 0.0);
            total += nll.double_value(&[]);
            n += target_tokens(&v.corpus, chunk) as f64;
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
        let cpu = cpu_decoder(model, device, Kernels::Fused);
        for chunk in idx[..m].chunks(cfg.batch_size.max(1)) {
            let srcs: Vec<Vec<u32>> = chunk.iter().map(|&i| v.corpus.src(i).to_vec()).collect();
            for (&i, h) in chunk.iter().zip(translate_batch_with(
                model,
                cpu.as_ref(),
                &srcs,
                &search,
                device,
            )?) {
                let text = match h.first() {
                    Some(best) => tok.decode(&best.tokens)?,
                    None => String::new(),
                };
                stats.add(&bleu.sentence_stats(&text, &[v.refs[i].as_str()]));
            }
        }
        Ok((total / n.max(1.0), bleu.compute(&stats).score))
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use gnmt_data::FilterConfig;
    use gnmt_tokenizer::VocabKind;

    use super::*;
    use crate::optim::Schedule;

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

    /// The training losses a run logged.
    fn losses(run: &Path) -> Vec<f64> {
        metric_lines(run)
            .iter()
            .filter_map(|l| l["loss"].as_f64())
            .collect()
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
        let s = train(&cfg, Start::Fresh).unwrap();
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
        assert_eq!(train(&cfg, Start::Fresh).unwrap().steps, 8);

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
        let s = train(&cfg, Start::Fresh).unwrap();
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
    fn bf16_resume_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            precision: Precision::Bf16,
            lr: 0.01,
            max_steps: 12,
            valid_every: 0,
            save_every: 6,
            accum_steps: 2,
            ..tiny_run(dir.path())
        };
        train(&cfg, Start::Fresh).unwrap();
        let full = losses(dir.path());
        assert_eq!(full.len(), 12);
        let dir2 = rerun_interrupted(&cfg, dir.path(), 6);
        assert_eq!(losses(dir2.path()), full);
        let a = Tensor::read_safetensors(dir.path().join("final/model.safetensors")).unwrap();
        let b: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(dir2.path().join("final/model.safetensors"))
                .unwrap()
                .into_iter()
                .collect();
        for (name, t) in a {
            assert!(t.equal(&b[&name]), "{name} differs after the resume");
        }
    }

    #[test]
    fn subword_sampling_draws_other_pieces_and_resumes_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            subword_alpha: Some(0.1),
            lr: 0.01,
            max_steps: 8,
            valid_every: 0,
            save_every: 4,
            ..tiny_run(dir.path())
        };
        train(&cfg, Start::Fresh).unwrap();
        let sampled = losses(dir.path());
        assert_eq!(sampled.len(), 8);
        let dir2 = rerun_interrupted(&cfg, dir.path(), 4);
        assert_eq!(losses(dir2.path()), sampled);
        // The same run on the best segmentations sees other pieces from its first step on.
        let plain_dir = tempfile::tempdir().unwrap();
        let plain = TrainConfig {
            subword_alpha: None,
            vocab: Some(dir.path().join("tokenizer.json")),
            out: plain_dir.path().to_path_buf(),
            ..cfg.clone()
        };
        train(&plain, Start::Fresh).unwrap();
        let plain = losses(plain_dir.path());
        assert_ne!(plain[0], sampled[0]);
        // Only a unigram vocabulary has a distribution to draw from.
        let bpe_dir = tempfile::tempdir().unwrap();
        let bpe = TrainConfig {
            vocab_kind: VocabKind::Bpe,
            out: bpe_dir.path().to_path_buf(),
            ..cfg
        };
        let e = train(&bpe, Start::Fresh).unwrap_err().to_string();
        assert!(e.contains("subword_alpha") && e.contains("unigram"), "{e}");
    }

    /// `cfg` run again in a new directory (with `first`'s vocabulary), stopped by hand after
    /// step `at` as a kill would leave it (the checkpoint at that step and the metrics up to
    /// it), then resumed to its end: the second run's directory.
    fn rerun_interrupted(cfg: &TrainConfig, first: &Path, at: i64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            vocab: Some(first.join("tokenizer.json")),
            out: dir.path().to_path_buf(),
            ..cfg.clone()
        };
        let half = train_with(&cfg, Start::Fresh, stopping_after(at)).unwrap();
        assert!(half.interrupted && half.steps == at, "{half:?}");
        train(&cfg, Start::resume()).unwrap();
        dir
    }

    /// Stops a run after `step`, as a kill would leave it (the checkpoint at that step).
    fn stopping_after(step: i64) -> Control {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        Control {
            stop: Some(stop),
            progress: Some(Box::new(move |p: &Progress| {
                if p.step == step {
                    s2.store(true, Ordering::SeqCst);
                }
            })),
        }
    }

    #[test]
    fn an_averaged_run_keeps_the_average_and_resumes_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            lr: 0.01,
            max_steps: 12,
            valid_every: 6,
            save_every: 6,
            ema_decay: Some(0.9),
            ..tiny_run(dir.path())
        };
        train(&cfg, Start::Fresh).unwrap();
        let read = |p: PathBuf| -> std::collections::HashMap<String, Tensor> {
            Tensor::read_safetensors(p).unwrap().into_iter().collect()
        };
        let ck = dir.path().join("checkpoints/step-00000012");
        let (avg, raw) = (
            read(ck.join("model.safetensors")),
            read(ck.join(checkpoint::WEIGHTS_FILE)),
        );
        let fin = read(dir.path().join("final/model.safetensors"));
        assert!(
            avg.iter().all(|(n, t)| t.equal(&fin[n])),
            "final/ is not the average"
        );
        assert!(
            avg.iter().any(|(n, t)| !t.equal(&raw[n])),
            "the average equals the raw weights"
        );
        // Interrupted after step 6 and resumed: the same losses (the raw weights and Adam were
        // restored) and the same average at the end.
        let dir2 = rerun_interrupted(&cfg, dir.path(), 6);
        assert_same_run(dir.path(), dir2.path());
        let raw2 = read(
            dir2.path()
                .join("checkpoints/step-00000012")
                .join(checkpoint::WEIGHTS_FILE),
        );
        for (n, t) in &raw {
            let diff = (t - &raw2[n]).abs().max().double_value(&[]);
            assert!(
                diff < 1e-5,
                "{n}: raw weights differ by {diff} after the resume"
            );
        }
        // A decay that is no weight is refused, naming the setting.
        let bad = TrainConfig {
            ema_decay: Some(1.0),
            out: dir.path().join("bad"),
            ..cfg
        };
        let e = train(&bad, Start::Fresh).unwrap_err().to_string();
        assert!(e.contains("ema_decay = 1"), "{e}");
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
        let s = train(&cfg, Start::Fresh).unwrap();
        assert!(
            s.last_loss.is_finite() && s.last_loss < s.first_loss,
            "{s:?}"
        );
        let w = Tensor::read_safetensors(dir.path().join("final/model.safetensors")).unwrap();
        assert!(w.iter().all(|(_, t)| t.kind() == Kind::Float));
        // Resuming continues from the float32 master weights and the bf16 copy alike.
        // Under the GNMT schedule max_steps shapes the decay: a longer run is a deliberate change.
        let cfg = TrainConfig {
            max_steps: 10,
            ..cfg
        };
        let err = train(&cfg, Start::resume()).unwrap_err().to_string();
        assert!(err.contains("max_steps was 8, now 10"), "{err}");
        let allow = Start::Resume {
            allow_changed: ["max_steps".to_string()].into(),
        };
        assert_eq!(train(&cfg, allow).unwrap().steps, 10);
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
        let s = train(&cfg, Start::Fresh).unwrap();
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
        let full = losses(dir.path());
        // Stopped at 20 and resumed: the same 40 losses (Adam's count and the scale restored).
        let dir2 = tempfile::tempdir().unwrap();
        // (The same vocabulary file, as a user resuming would have.)
        let cfg = TrainConfig {
            vocab: Some(dir.path().join("tokenizer.json")),
            ..cfg
        };
        let half = TrainConfig {
            max_steps: 20,
            out: dir2.path().to_path_buf(),
            ..cfg.clone()
        };
        train(&half, Start::Fresh).unwrap();
        let rest = TrainConfig {
            out: dir2.path().to_path_buf(),
            ..cfg
        };
        train(&rest, Start::resume()).unwrap();
        assert_eq!(losses(dir2.path()), full);
    }

    /// Every gradient of the model, flattened into one vector (in a fixed order).
    fn all_grads(adam: &Adam, n: usize) -> Vec<f64> {
        let mut v = Vec::new();
        for i in 0..n {
            let g = adam.grad(i);
            if g.defined() {
                v.extend(Vec::<f64>::try_from(g.to_kind(Kind::Double).flatten(0, -1)).unwrap());
            }
        }
        v
    }

    /// The fixture's first 40 pairs and a `tiny` model config for them.
    fn fixture_pairs() -> (PairCorpus, ModelConfig) {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/m30k");
        let (src, tgt) = (data.join("train.en"), data.join("train.de"));
        let mut lines = gnmt_data::text::read_lines(&src).unwrap();
        lines.extend(gnmt_data::text::read_lines(&tgt).unwrap());
        let tok = SubwordTokenizer::train(lines.into_iter(), 600, VocabKind::Unigram).unwrap();
        let filter = FilterConfig::default();
        let (corpus, _) = PairCorpus::load(&src, &tgt, &tok, &filter, Some(40)).unwrap();
        let cfg = ModelConfig::preset("tiny", tok.vocab_size() as i64).unwrap();
        (corpus, cfg)
    }

    /// The loss and float32 gradients of one step over `group` of a fresh model (seed 5), its
    /// batches cut into `shares` run on `threads` libtorch threads.
    fn group_grads(
        corpus: &PairCorpus,
        cfg: &ModelConfig,
        group: &[Vec<usize>],
        shares: usize,
        threads: usize,
    ) -> (f64, Vec<f64>) {
        let (loss, grads, _) = group_step(corpus, cfg, group, shares, threads);
        (loss, grads)
    }

    /// [`group_grads`], and the weights after clipping those gradients and an Adam update
    /// (the optimizer's passes on `threads` threads too).
    fn group_step(
        corpus: &PairCorpus,
        cfg: &ModelConfig,
        group: &[Vec<usize>],
        shares: usize,
        threads: usize,
    ) -> (f64, Vec<f64>, Vec<f64>) {
        let mut w = crate::seeded(5, || {
            Weights::new(cfg, Precision::Fp32, Device::Cpu, shares)
        })
        .unwrap();
        let n = w.vs.variables().len();
        w.adam.set_threads(threads);
        w.adam.zero_grad();
        let setup = LossSetup {
            device: Device::Cpu,
            label_smoothing: 0.1,
            loss_scale: 1.0,
            shard: (0, 1),
            threads,
        };
        let g = backward_group(&mut w, corpus, group, setup, |i| i as i64).unwrap();
        let grads = all_grads(&w.adam, n);
        // A norm far above this clips every gradient.
        assert!(w.adam.clip_grad_norm(1e-3) > 1e-3);
        w.adam.apply(1e-3);
        let mut named: Vec<(String, Tensor)> = w.vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let weights = named
            .iter()
            .flat_map(|(_, t)| {
                Vec::<f64>::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap()
            })
            .collect();
        (g.loss, grads, weights)
    }

    fn relative_difference(a: &[f64], b: &[f64]) -> f64 {
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let diff: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        norm(&diff) / norm(b)
    }

    #[test]
    fn shares_of_a_batch_add_up_to_its_gradient_on_any_thread_count() {
        let (corpus, mut cfg) = fixture_pairs();
        let group = [(0..23).collect::<Vec<usize>>()];
        // Without dropout, shares change only the order of summing.
        cfg.dropout = 0.0;
        let (loss1, g1) = group_grads(&corpus, &cfg, &group, 1, 1);
        for (shares, threads) in [(2, 2), (3, 2), (3, 1)] {
            let (loss, g) = group_grads(&corpus, &cfg, &group, shares, threads);
            assert!(
                (loss - loss1).abs() < 1e-6 * loss1,
                "{shares} shares: {loss} vs {loss1}"
            );
            let rel = relative_difference(&g, &g1);
            assert!(
                rel < 1e-6,
                "{shares} shares: relative gradient difference {rel}"
            );
        }
        // With dropout, each share draws its own masks: the same on one thread or two, other
        // masks than one share's.
        cfg.dropout = 0.3;
        // The gradients' sum, their clipping and the update take the same bits on one thread
        // as on two lanes, each parameter on one of them.
        let one_thread = group_step(&corpus, &cfg, &group, 2, 1);
        let two_threads = group_step(&corpus, &cfg, &group, 2, 2);
        assert!(
            one_thread == two_threads,
            "a step with two shares differs between one thread and two"
        );
        assert_ne!(one_thread.1, group_grads(&corpus, &cfg, &group, 1, 1).1);
    }

    #[test]
    fn an_accumulated_group_is_the_batch_of_all_its_sentences() {
        let (corpus, mut cfg) = fixture_pairs();
        // A: 3 pairs; B: 17 pairs. Their target token counts differ several times over, so the
        // mean of the two batch means is far from the mean over all tokens.
        let a: Vec<usize> = (0..3).collect();
        let b: Vec<usize> = (3..20).collect();
        let union: Vec<usize> = (0..20).collect();
        assert!(target_tokens(&corpus, &b) > 3 * target_tokens(&corpus, &a));
        cfg.dropout = 0.0;
        let grads = |group: &[Vec<usize>]| group_grads(&corpus, &cfg, group, 1, 1);
        let (loss_ab, g_ab) = grads(&[a.clone(), b.clone()]);
        let (loss_u, g_u) = grads(&[union]);
        assert!(
            (loss_ab - loss_u).abs() < 1e-6 * loss_u.abs(),
            "{loss_ab} vs {loss_u}"
        );
        let rel = relative_difference(&g_ab, &g_u);
        assert!(rel < 1e-6, "relative gradient difference {rel}");
        // What the old weighting did, the mean of the two batch means, is another gradient:
        // the test tells the two apart.
        let (_, g_a) = grads(&[a]);
        let (_, g_b) = grads(&[b]);
        let old: Vec<f64> = g_a.iter().zip(&g_b).map(|(x, y)| (x + y) / 2.0).collect();
        let rel = relative_difference(&old, &g_u);
        assert!(rel > 1e-2, "{rel}");
    }

    /// Runs `cfg` as a data-parallel job of `world` ranks, one thread each.
    fn train_on_ranks(cfg: &TrainConfig, world: usize, start: Start) -> Vec<TrainSummary> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..world)
                .map(|rank| {
                    let start = start.clone();
                    s.spawn(move || {
                        let launch = gnmt_dist::Launch::local(rank, world, port);
                        let timeout = std::time::Duration::from_secs(60);
                        let g = gnmt_dist::ProcessGroup::connect(&launch, timeout).unwrap();
                        train_parallel(cfg, start, Control::default(), g).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    fn final_weights(run: &Path) -> Vec<(String, Tensor)> {
        let mut w = Tensor::read_safetensors(run.join("final/model.safetensors")).unwrap();
        w.sort_by(|a, b| a.0.cmp(&b.0));
        w
    }

    fn assert_same_run(a: &Path, b: &Path) {
        let (la, lb) = (losses(a), losses(b));
        assert_eq!(la.len(), lb.len());
        for (i, (x, y)) in la.iter().zip(&lb).enumerate() {
            assert!(
                (x - y).abs() <= 1e-5 * x.abs(),
                "{}, step {}: loss {x} vs {y}",
                b.display(),
                i + 1
            );
        }
        for ((n, x), (_, y)) in final_weights(a).iter().zip(&final_weights(b)) {
            let diff = (x - y).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "{n}: weights differ by {diff}");
        }
    }

    #[test]
    fn two_ranks_train_as_one_process_with_their_whole_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut one = tiny_run(&dir.path().join("one"));
        one.max_steps = 12;
        one.valid_every = 6;
        train(&one, Start::Fresh).unwrap();
        // The same vocabulary file.
        let mut two = one.clone();
        two.vocab = Some(one.out.join("tokenizer.json"));
        two.out = dir.path().join("two");
        let s = train_on_ranks(&two, 2, Start::Fresh);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].steps, s[1].steps), (12, 12));
        assert_same_run(&one.out, &two.out);
        // Resume across world sizes, from the step-6 checkpoint of a run of the other size.
        let resumed_by = |first: usize, then: usize, name: &str| {
            let mut c = two.clone();
            c.out = dir.path().join(name);
            c.save_every = 6;
            match first {
                1 => drop(train(&c, Start::Fresh).unwrap()),
                n => drop(train_on_ranks(&c, n, Start::Fresh)),
            }
            std::fs::remove_dir_all(c.out.join("checkpoints/step-00000012")).unwrap();
            match then {
                1 => drop(train(&c, Start::resume()).unwrap()),
                n => drop(train_on_ranks(&c, n, Start::resume())),
            }
            c.out
        };
        assert_same_run(&one.out, &resumed_by(2, 1, "2-then-1"));
        assert_same_run(&one.out, &resumed_by(1, 2, "1-then-2"));
    }

    #[test]
    fn model_vocab_size_cannot_be_overridden() {
        let mut cfg = TrainConfig::default();
        cfg.model
            .insert("vocab_size".into(), serde_json::json!(100));
        let err = cfg.model_config(600).unwrap_err().to_string();
        assert!(
            err.contains("model.vocab_size") && err.contains("600"),
            "{err}"
        );
        // The same number as the vocabulary is harmless.
        cfg.model
            .insert("vocab_size".into(), serde_json::json!(600));
        assert_eq!(cfg.model_config(600).unwrap().vocab_size, 600);
    }

    #[test]
    fn force_deletes_only_what_a_run_wrote() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        std::fs::create_dir_all(&out).unwrap();
        // The user keeps a corpus in the run directory.
        std::fs::write(out.join("corpus.en"), "mine\n").unwrap();
        let cfg = TrainConfig {
            max_steps: 2,
            valid_every: 0,
            ..tiny_run(&out)
        };
        train(&cfg, Start::Fresh).unwrap();
        assert!(
            train(&cfg, Start::Fresh).is_err(),
            "a second fresh run is refused"
        );
        train(&cfg, Start::Overwrite).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("corpus.en")).unwrap(),
            "mine\n"
        );
        assert!(out.join("final/model.safetensors").exists());

        // A directory holding a file of the user's that a run would overwrite is refused, even
        // with Overwrite, and the file is left as it was.
        let other = dir.path().join("mine");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("config.toml"), "# my notes\n").unwrap();
        for start in [Start::Fresh, Start::Overwrite, Start::resume()] {
            let err = train(&tiny_run(&other), start).unwrap_err().to_string();
            assert!(
                err.contains("config.toml") && err.contains("another --out"),
                "{err}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(other.join("config.toml")).unwrap(),
            "# my notes\n"
        );
    }

    #[test]
    fn a_run_ended_by_epochs_validates_and_saves_its_last_step() {
        let dir = tempfile::tempdir().unwrap();
        // 4 batches per epoch: the run ends at step 8, between the save and validation steps.
        let cfg = TrainConfig {
            epochs: Some(2),
            max_steps: 1000,
            save_every: 100,
            valid_every: 100,
            ..tiny_run(dir.path())
        };
        assert_eq!(train(&cfg, Start::Fresh).unwrap().steps, 8);
        assert_eq!(checkpoint::list(dir.path()).pop().unwrap().0, 8);
        let valid: Vec<i64> = metric_lines(dir.path())
            .iter()
            .filter(|l| l.get("valid_loss").is_some())
            .filter_map(|l| l["step"].as_i64())
            .collect();
        assert_eq!(valid, vec![8]);
        assert!(dir.path().join("best/model.safetensors").exists());
        // Resuming it repeats nothing: it is done.
        assert_eq!(train(&cfg, Start::resume()).unwrap().steps, 8);
    }

    #[test]
    fn resume_refuses_changed_settings_unless_named() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            max_steps: 4,
            valid_every: 0,
            save_every: 2,
            schedule: Schedule::Constant,
            ..tiny_run(dir.path())
        };
        train(&cfg, Start::Fresh).unwrap();
        let changed = TrainConfig {
            max_steps: 6,
            label_smoothing: 0.2,
            clip_norm: 1.0,
            ..cfg.clone()
        };
        let err = train(&changed, Start::resume()).unwrap_err().to_string();
        assert!(
            err.contains("label_smoothing was 0.1, now 0.2") && err.contains("clip_norm"),
            "{err}"
        );
        // With a constant schedule max_steps is only where to stop: not a change of course.
        assert!(!err.contains("max_steps"), "{err}");
        let allow = Start::Resume {
            allow_changed: ["label_smoothing".to_string(), "clip_norm".to_string()].into(),
        };
        assert_eq!(train(&changed, allow).unwrap().steps, 6);
        // The changed settings are now the run's: resuming with them needs no allowance.
        let longer = TrainConfig {
            max_steps: 8,
            ..changed
        };
        assert_eq!(train(&longer, Start::resume()).unwrap().steps, 8);
    }
}
