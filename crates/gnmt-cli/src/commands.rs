//! `vocab`, `tokenize`, `detokenize`, `prepare`, `model-info`, `train`, `translate`, `average`.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use gnmt_data::text::Lines;
use gnmt_data::FilterConfig;
use gnmt_model::{DeviceSpec, ModelConfig, Seq2Seq};
use gnmt_tokenizer::{SubwordTokenizer, VocabKind};
use gnmt_train::{Control, Progress, ProgressFn, Start, TrainConfig};
use gnmt_translate::stream::{Engine, OutputOptions, Translator};
use gnmt_translate::SearchConfig;
use serde::Serialize;
use tch::nn;

fn spinner(msg: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new_spinner();
    b.set_message(msg.to_string());
    b.enable_steady_tick(std::time::Duration::from_millis(120));
    b
}

#[derive(Args, Debug)]
pub struct VocabArgs {
    /// Source-side training text (plain or .gz).
    #[arg(long)]
    src: PathBuf,
    /// Target-side training text (plain or .gz).
    #[arg(long)]
    tgt: PathBuf,
    /// Vocabulary size (rounded up to a multiple of 8).
    #[arg(long, default_value_t = 8000)]
    size: usize,
    /// Subword algorithm.
    #[arg(long, value_enum, default_value = "unigram")]
    kind: Kind,
    /// Threads for training (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Where to write the Hugging Face tokenizer.json.
    #[arg(short, long, default_value = "tokenizer.json")]
    output: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
enum PrecisionArg {
    Fp32,
    Bf16,
    Fp16,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Kind {
    /// SentencePiece-style unigram language model.
    Unigram,
    /// Byte-pair encoding.
    Bpe,
    /// WordPiece (greedy longest match, `##` continuation pieces) over byte-level text.
    Wordpiece,
}

pub fn vocab(a: VocabArgs) -> Result<ExitCode> {
    if let Some(t) = a.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .ok();
    }
    let kind = match a.kind {
        Kind::Unigram => VocabKind::Unigram,
        Kind::Bpe => VocabKind::Bpe,
        Kind::Wordpiece => VocabKind::Wordpiece,
    };
    let bar = spinner("reading corpus");
    let mut lines = gnmt_data::text::read_lines(&a.src)?;
    lines.extend(gnmt_data::text::read_lines(&a.tgt)?);
    bar.set_message(format!(
        "training a {}-piece vocabulary on {} lines",
        a.size,
        lines.len()
    ));
    let t = Instant::now();
    let tok = SubwordTokenizer::train(lines.into_iter(), a.size, kind)?;
    bar.finish_and_clear();
    tok.save(&a.output)?;
    tracing::info!(
        "wrote {} ({} pieces) in {:.1}s",
        a.output.display(),
        tok.vocab_size(),
        t.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// The tokenizer.json.
    #[arg(long)]
    vocab: PathBuf,
    /// Print ids instead of pieces.
    #[arg(long)]
    ids: bool,
}

#[derive(Args, Debug)]
pub struct TokenizeCmd {
    #[command(flatten)]
    common: TokenizeArgs,
    /// Draw each line's segmentation instead of taking the best one, as training's
    /// `subword_alpha` does (a unigram vocabulary; smaller: more varied, e.g. 0.1-0.5).
    #[arg(long)]
    sample_alpha: Option<f64>,
    /// Seed of the draws (the same seed, the same segmentations).
    #[arg(long, default_value_t = 1, requires = "sample_alpha")]
    seed: u64,
}

pub fn tokenize(a: TokenizeCmd) -> Result<ExitCode> {
    let tok = SubwordTokenizer::load(&a.common.vocab)?;
    let sampler = a
        .sample_alpha
        .map(|alpha| gnmt_tokenizer::SegmentationSampler::new(&tok, alpha))
        .transpose()
        .with_context(|| format!("--sample-alpha with {}", a.common.vocab.display()))?;
    let mut rng = gnmt_data::SplitMix64(a.seed);
    let mut uniform = move || rng.next_f64();
    let mut out = BufWriter::new(std::io::stdout().lock());
    for line in Lines::open(Path::new("-"))? {
        let mut ids = tok.encode(&line?)?;
        if let Some(s) = &sampler {
            ids = s.resample(&ids, &mut uniform);
        }
        let words: Vec<String> = match a.common.ids {
            true => ids.iter().map(u32::to_string).collect(),
            false => tok.pieces(&ids),
        };
        writeln!(out, "{}", words.join(" "))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

pub fn detokenize(a: TokenizeArgs) -> Result<ExitCode> {
    let tok = SubwordTokenizer::load(&a.vocab)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    for (n, line) in Lines::open(Path::new("-"))?.enumerate() {
        let line = line?;
        let text = if a.ids {
            let ids: Result<Vec<u32>, _> = line.split_whitespace().map(str::parse).collect();
            tok.decode(&ids.with_context(|| format!("stdin: line {}: not a list of ids", n + 1))?)?
        } else {
            let pieces: Vec<String> = line
                .split(' ')
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect();
            tok.decode_pieces(&pieces)
                .with_context(|| format!("stdin: line {}", n + 1))?
        };
        writeln!(out, "{text}")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct ModelInfoArgs {
    /// A preset.
    #[arg(long, conflicts_with = "model", value_parser = clap::builder::PossibleValuesParser::new(gnmt_model::PRESETS))]
    preset: Option<String>,
    /// Vocabulary size for --preset.
    #[arg(long, default_value_t = 32000)]
    vocab: i64,
    /// A model directory.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Print one JSON object, `{"config": .., "parameters": {part: count}}`, for scripts.
    #[arg(long)]
    json: bool,
}

pub fn model_info(a: ModelInfoArgs) -> Result<ExitCode> {
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let cfg = match (&a.preset, &a.model) {
        (Some(p), _) => ModelConfig::preset(p, a.vocab).with_context(|| {
            format!(
                "unknown preset `{p}` (known: {})",
                gnmt_model::PRESETS.join(", ")
            )
        })?,
        (None, Some(dir)) => {
            let p = dir.join("config.json");
            serde_json::from_str(
                &std::fs::read_to_string(&p).with_context(|| p.display().to_string())?,
            )
            .with_context(|| p.display().to_string())?
        }
        (None, None) => bail!("give --preset NAME or --model DIR"),
    };
    let _m = Seq2Seq::new(&vs.root(), &cfg)?;
    let counts = gnmt_model::parameter_counts(&vs);
    if a.json {
        let parameters: serde_json::Map<String, serde_json::Value> =
            counts.into_iter().map(|(k, n)| (k, n.into())).collect();
        println!(
            "{}",
            serde_json::json!({ "config": cfg, "parameters": parameters })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", serde_json::to_string_pretty(&cfg)?);
    for (part, n) in counts {
        println!("{part:>12}: {n:>13}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `gnmt train`'s flags. Those that are training settings serialize (when given) to the keys of
/// [`TrainConfig`], over the `--config` file's.
#[derive(Args, Debug, Serialize)]
pub struct TrainArgs {
    /// A TOML file of training settings (see data/configs/); flags override it.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    train_src: Option<PathBuf>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    train_tgt: Option<PathBuf>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_src: Option<PathBuf>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_tgt: Option<PathBuf>,
    /// tokenizer.json; without it one is trained and kept in the run directory.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    vocab: Option<PathBuf>,
    /// Model preset (`gnmt model-info --preset NAME` shows one).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(gnmt_model::PRESETS))]
    #[serde(skip_serializing_if = "Option::is_none")]
    preset: Option<String>,
    /// Run directory (checkpoints, metrics.jsonl, best/, final/).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    out: Option<PathBuf>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_steps: Option<i64>,
    /// Stop after this many passes over the training data (whichever of this and --max-steps comes first).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    epochs: Option<u64>,
    /// Sentences per batch (default 64; also the cap on a --max-tokens batch).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    batch_size: Option<usize>,
    /// Tokens per batch, padding counted. Batches stay within --batch-size sentences as well:
    /// raise --batch-size (e.g. to 10000) for the token budget alone to decide.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<usize>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    lr: Option<f64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    save_every: Option<i64>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    valid_every: Option<i64>,
    /// cpu, cuda or cuda:N.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<DeviceSpec>,
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    /// CPU threads for libtorch.
    #[arg(long)]
    #[serde(skip)]
    threads: Option<i32>,
    /// Mixed precision: `bf16` (forward and backward in bf16) or `fp16` (the same in fp16 with
    /// dynamic loss scaling); both keep float32 master weights and Adam state. Default fp32.
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    precision: Option<PrecisionArg>,
    /// Same as --precision bf16.
    #[arg(long, conflicts_with = "precision")]
    #[serde(skip)]
    bf16: bool,
    /// A corpus from `gnmt prepare` (instead of --train-src/--train-tgt).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    prepared: Option<PathBuf>,
    /// Make a skipped training pair (empty side, too long, bad length ratio) an error.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    strict: bool,
    /// Continue the run in --out from its last checkpoint. Its settings must be the ones it
    /// was trained with; a setting given with --set may differ (the change is logged).
    #[arg(long, conflicts_with = "force")]
    #[serde(skip)]
    resume: bool,
    /// Stop after this many minutes of this invocation (at the next step, saving a checkpoint, as
    /// Ctrl-C does) and exit with success; --resume continues. The run's settings are unchanged,
    /// so a time-limited leg and its continuation train as one run would (with --resume, `--set
    /// max_steps=N` re-sizes it while the GNMT schedule is still before its decay).
    #[arg(long, value_name = "MINUTES", value_parser = positive_minutes)]
    #[serde(skip)]
    stop_after_minutes: Option<f64>,
    /// Start over even if --out holds another run: deletes what a run wrote there
    /// (checkpoints/, best/, final/, data/, metrics.jsonl, config.toml, tokenizer.json) and
    /// nothing else.
    #[arg(long)]
    #[serde(skip)]
    force: bool,
    /// Any other setting: `--set key=value` (TOML value), model fields as `model.KEY=value`.
    /// With --resume, the deliberate way to change a setting of the run.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    #[serde(skip)]
    set: Vec<String>,
}

fn build_train_config(a: &TrainArgs) -> Result<TrainConfig> {
    let mut v: toml::Table = match &a.config {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let t: toml::Table = text
                .parse()
                .with_context(|| format!("{}: not valid TOML", p.display()))?;
            t
        }
        None => toml::Table::new(),
    };
    let flags = toml::Table::try_from(a).context("command-line flags")?;
    v.extend(flags);
    if a.bf16 {
        v.insert("precision".into(), toml::Value::String("bf16".into()));
    }
    for s in &a.set {
        let (k, val) = s
            .split_once('=')
            .with_context(|| format!("--set {s}: expected KEY=VALUE"))?;
        let parsed: toml::Value = format!("x = {val}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|t| t.get("x").cloned())
            .unwrap_or_else(|| toml::Value::String(val.to_string()));
        match k.strip_prefix("model.") {
            Some(mk) => {
                let m = v
                    .entry("model")
                    .or_insert_with(|| toml::Value::Table(Default::default()));
                if let toml::Value::Table(t) = m {
                    t.insert(mk.to_string(), parsed);
                }
            }
            None => {
                v.insert(k.to_string(), parsed);
            }
        }
    }
    let cfg = TrainConfig::from_toml(v).context("training settings")?;
    if cfg.prepared.is_none()
        && (cfg.train_src.as_os_str().is_empty() || cfg.train_tgt.as_os_str().is_empty())
    {
        bail!("give the training data: --train-src and --train-tgt, or --prepared (or the same keys in --config)");
    }
    Ok(cfg)
}

pub fn train(a: TrainArgs) -> Result<ExitCode> {
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    let mut cfg = build_train_config(&a)?;
    if let Ok(spec) = cfg.device.parse::<DeviceSpec>() {
        cfg.device = DeviceSpec(rank_device(spec.0)?).to_string();
    }
    let start = if a.force {
        Start::Overwrite
    } else if a.resume {
        let allow_changed = a
            .set
            .iter()
            .filter_map(|s| s.split_once('=').map(|(k, _)| k.trim().to_string()))
            .collect();
        Start::Resume { allow_changed }
    } else {
        Start::Fresh
    };
    let stop = Arc::new(AtomicBool::new(false));
    let ctrl_c = Arc::new(AtomicBool::new(false));
    {
        let (stop, ctrl_c) = (stop.clone(), ctrl_c.clone());
        if let Err(e) = ctrlc::set_handler(move || {
            ctrl_c.store(true, Ordering::SeqCst);
            stop.store(true, Ordering::SeqCst);
        }) {
            tracing::warn!("Ctrl-C will not save a checkpoint: {e}");
        }
    }
    let timed_out = a.stop_after_minutes.map(|m| stop_after(m, stop.clone()));
    let bar = train_progress_bar(cfg.max_steps);
    let progress: Option<ProgressFn> = bar.clone().map(|bar| {
        Box::new(move |p: &Progress| {
            bar.set_position(p.step.max(0) as u64);
            bar.set_message(format!(
                "loss {:.3} lr {:.2e} {:.0} tok/s",
                p.loss, p.lr, p.tokens_per_s
            ));
        }) as ProgressFn
    });
    let control = Control {
        stop: Some(stop),
        progress,
    };
    let device = cfg
        .device
        .parse::<DeviceSpec>()
        .map_or(tch::Device::Cpu, |d| d.0);
    warn_if_slow_precision(&cfg, device);
    let result = match data_parallel_group(device)? {
        Some(group) => gnmt_train::trainer::train_parallel(&cfg, start, control, group),
        None => gnmt_train::train_with(&cfg, start, control),
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let s = result.with_context(|| format!("training into {}", cfg.out.display()))?;
    report_summary(&s, &cfg);
    let why = StopCause::of(&s, a.stop_after_minutes, timed_out.as_deref(), &ctrl_c);
    Ok(why.report(&s, &cfg))
}

/// Why a run ended before its last step, when it did.
enum StopCause {
    /// It ran to its end (or stopped early on validation).
    Finished,
    /// Ctrl-C (or SIGTERM), here or on a peer rank without a time limit: exit 130.
    Interrupted,
    /// This process's `--stop-after-minutes` ran out.
    OutOfTime(f64),
    /// A peer rank's `--stop-after-minutes` ran out first (data-parallel ranks stop together
    /// through the step's all-reduce; their clocks started at slightly different moments), and
    /// this rank was not interrupted itself: the same planned stop, so a success.
    PeerOutOfTime,
}

impl StopCause {
    fn of(
        s: &gnmt_train::trainer::TrainSummary,
        minutes: Option<f64>,
        timed_out: Option<&AtomicBool>,
        ctrl_c: &AtomicBool,
    ) -> StopCause {
        match (s.interrupted, minutes, timed_out) {
            (false, _, _) => StopCause::Finished,
            (true, Some(m), Some(t)) if t.load(Ordering::SeqCst) => StopCause::OutOfTime(m),
            (true, Some(_), _) if !ctrl_c.load(Ordering::SeqCst) => StopCause::PeerOutOfTime,
            (true, _, _) => StopCause::Interrupted,
        }
    }

    /// Says where a planned stop left the run; the exit code.
    fn report(&self, s: &gnmt_train::trainer::TrainSummary, cfg: &TrainConfig) -> ExitCode {
        let at = format!("stopped at step {} of {}", s.steps, cfg.max_steps);
        match self {
            StopCause::Finished => ExitCode::SUCCESS,
            StopCause::Interrupted => ExitCode::from(130),
            StopCause::OutOfTime(m) => {
                eprintln!("{at} after {m} minutes: --resume continues");
                ExitCode::SUCCESS
            }
            StopCause::PeerOutOfTime => {
                eprintln!("{at} with the other ranks (out of minutes first): --resume continues");
                ExitCode::SUCCESS
            }
        }
    }
}

/// What a run did, on stderr (a resumed run that was already at its end trained nothing).
fn report_summary(s: &gnmt_train::trainer::TrainSummary, cfg: &TrainConfig) {
    if s.first_loss.is_nan() && !s.interrupted {
        eprintln!(
            "nothing to train: the run is at step {} (max_steps {}); model in {}",
            s.steps,
            cfg.max_steps,
            s.final_model.display()
        );
        return;
    }
    eprintln!(
        "trained {} steps: loss {:.3} -> {:.3}, {:.0} tokens/s{}; model in {}",
        s.steps,
        s.first_loss,
        s.last_loss,
        s.tokens_per_s,
        s.best_score
            .map(|b| match cfg.best_metric {
                gnmt_train::trainer::BestMetric::Bleu => format!(", best validation BLEU {b:.2}"),
                gnmt_train::trainer::BestMetric::Loss => format!(", best validation loss {b:.4}"),
            })
            .unwrap_or_default()
            + if s.early_stopped {
                " (stopped early)"
            } else {
                ""
            },
        s.final_model.display()
    );
}

/// `--stop-after-minutes`: a positive number of minutes that a `Duration` holds.
fn positive_minutes(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(m) if m > 0.0 && std::time::Duration::try_from_secs_f64(m * 60.0).is_ok() => Ok(m),
        _ => Err(format!("'{s}' is not a positive number of minutes")),
    }
}

/// Raises `stop` after `minutes` (from a thread of its own); the flag returned tells that the
/// time ran out (and not Ctrl-C).
fn stop_after(minutes: f64, stop: Arc<AtomicBool>) -> Arc<AtomicBool> {
    let timed_out = Arc::new(AtomicBool::new(false));
    let flag = timed_out.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs_f64(minutes * 60.0));
        flag.store(true, Ordering::SeqCst);
        stop.store(true, Ordering::SeqCst);
    });
    timed_out
}

/// The training progress bar, on a terminal only (elsewhere the trainer logs each step).
fn train_progress_bar(total: i64) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total.max(0) as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{elapsed_precise} [{bar:30}] step {pos}/{len} {msg} ETA {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    Some(bar)
}

#[derive(Args, Debug)]
pub struct TranslateArgs {
    #[command(flatten)]
    models: crate::models::ModelArgs,
    /// Input file (default: stdin).
    #[arg(short, long)]
    input: Option<PathBuf>,
    /// Output file (default: stdout); written atomically.
    #[arg(short, long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    search: crate::args::SearchArgs,
    /// Sentences per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Source tokens per batch, padding counted (batches then also stay within --batch-size).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Print the N best translations with scores (`index ||| text ||| score`), N <= --beam.
    #[arg(long, default_value_t = 0)]
    nbest: usize,
    /// Append the attended source position of each output piece.
    #[arg(long)]
    alignments: bool,
    #[command(flatten)]
    precision: crate::precision::PrecisionArgs,
    #[command(flatten)]
    compute: crate::args::ComputeArgs,
    /// Score the best translations against this reference with gnmt-bleu (BLEU, 13a),
    /// whatever the output holds (--nbest, --alignments).
    #[arg(long = "ref", conflicts_with = "resume")]
    reference: Option<PathBuf>,
    /// Lines read and translated at a time: memory stays bounded, and a killed run loses at
    /// most the chunk it was in.
    #[arg(long, default_value_t = 10_000)]
    chunk_lines: usize,
    /// Continue an interrupted translation into -o after its last complete chunk (the same
    /// input, model and settings), instead of starting over.
    #[arg(long, requires = "output")]
    resume: bool,
}

pub fn translate(a: TranslateArgs) -> Result<ExitCode> {
    a.compute.set_threads();
    let device = rank_device(a.compute.device.0)?;
    let loaded = a.models.load(&a.precision, device)?;
    let (model, tok) = (&loaded.dirs[0].model, &loaded.dirs[0].tokenizer);
    let search = SearchConfig {
        nbest: a.nbest.max(1),
        kernels: loaded.kernels,
        ..a.search.config_for(&a.models)?
    };
    if a.nbest > search.beam {
        bail!(
            "--nbest {}: the beam keeps only {} hypotheses (raise --beam)",
            a.nbest,
            search.beam
        );
    }
    let (workers, threads_per_worker) = a.compute.workers_on(device);
    if workers > 1 {
        tracing::info!(
            "{workers} search workers, {threads_per_worker} libtorch thread(s) each (--workers)"
        );
    }
    // Under torchrun: the chunks shared out between the ranks, rank 0 writing the output.
    // The ranks trade text through the store only: the Gloo group does.
    let group = data_parallel_group(tch::Device::Cpu)?;
    if group.is_some() && a.reference.is_some() {
        bail!("--ref scores only this process's share in a sharded translation: score -o with `gnmt eval` instead");
    }
    let tr = Translator {
        engine: Engine {
            model,
            ensemble: loaded.ensemble(),
            device,
            search,
            batch_size: a.batch_size,
            max_tokens: a.max_tokens,
            workers,
            threads_per_worker,
        },
        tokenizer: tok,
        chunk_lines: a.chunk_lines.max(1),
        shard: group.as_ref(),
    };
    let input = a.input.clone().unwrap_or_else(|| PathBuf::from("-"));
    let lines = Lines::open(&input)?;
    let opts = OutputOptions {
        nbest: a.nbest,
        alignments: a.alignments,
        keep_best: a.reference.is_some(),
    };
    let t = Instant::now();
    let bar = if std::io::stderr().is_terminal() && a.input.is_some() {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    let progress = |n: usize| bar.set_message(format!("{n} lines"));
    // What a resumed output must have been made from: the same input file (its size and
    // modification time too, so an edited or grown file is not resumed), model and settings.
    let stamp = std::fs::metadata(&input)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| format!(" ({} bytes, modified {:?})", m.len(), m.modified().ok()))
        .unwrap_or_default();
    let job = format!(
        "input {}{stamp}, model {}, {:?}, {:?}, nbest {}, alignments {}",
        input.display(),
        a.models.describe(),
        loaded.precision,
        tr.engine.search,
        a.nbest,
        a.alignments
    );
    let summary = run_translation(&tr, &a, &job, lines, &opts, progress)?;
    bar.finish_and_clear();
    let secs = t.elapsed().as_secs_f64().max(1e-9);
    tracing::info!(
        "translated {} sentences in {secs:.1}s: {:.1} sentences/s, {:.0} tokens/s, peak memory {:.0} MB",
        summary.sentences,
        summary.sentences as f64 / secs,
        (summary.source_tokens + summary.output_tokens) as f64 / secs,
        crate::bench::peak_rss_mb().unwrap_or(0.0)
    );
    if let Some(r) = &a.reference {
        eprintln!("{}", bleu_line(summary.best, r)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `tr` over `lines` into -o or stdout. -o is written beside the output (`.NAME.partial`,
/// its progress in `.NAME.partial.json`) and renamed over it at the end: an error or a kill
/// leaves the old output (if any) as it was, and --resume continues after the last complete
/// chunk. In a sharded run rank 0 alone writes, and tells the others where it resumes.
fn run_translation<I, E>(
    tr: &Translator,
    a: &TranslateArgs,
    job: &str,
    lines: I,
    opts: &OutputOptions,
    progress: impl FnMut(usize),
) -> Result<gnmt_translate::stream::Summary>
where
    I: Iterator<Item = Result<String, E>>,
    E: std::fmt::Display,
{
    const SKIP: &str = "translate/skip";
    let share_skip = |skip: usize| match tr.shard {
        Some(g) => g.store_set(SKIP, skip.to_string().as_bytes()),
        None => Ok(()),
    };
    match (tr.shard, &a.output) {
        (Some(g), _) if g.rank() > 0 => {
            let skip = String::from_utf8_lossy(&g.store_get(SKIP)?)
                .parse::<usize>()
                .context("the skip rank 0 published")?;
            Ok(tr.translate_stream(lines, skip, &mut std::io::sink(), opts, progress)?)
        }
        (_, Some(path)) => {
            let mut w = gnmt_io::resume::ResumableFile::open(path, job, a.resume)?;
            let skip = w.lines_done();
            if skip > 0 {
                tracing::info!("resuming {} after line {skip}", path.display());
            }
            share_skip(skip)?;
            let s = tr.translate_stream(lines, skip, &mut w, opts, progress)?;
            w.commit().with_context(|| path.display().to_string())?;
            Ok(s)
        }
        (_, None) => {
            share_skip(0)?;
            let mut w = BufWriter::new(std::io::stdout().lock());
            Ok(tr.translate_stream(lines, 0, &mut w, opts, progress)?)
        }
    }
}

/// sacreBLEU's BLEU line (13a) of `hyps` against the reference file `reference`.
fn bleu_line(hyps: Vec<String>, reference: &Path) -> Result<String> {
    let refs = gnmt_data::text::read_lines(reference)?;
    let s = corpus_bleu(hyps, refs)
        .with_context(|| format!("scoring against {}", reference.display()))?;
    Ok(s.format_text(1, false))
}

/// sacreBLEU's default BLEU (13a, cased) of `hyps` against one reference per line.
pub(crate) fn corpus_bleu(
    hyps: Vec<String>,
    refs: Vec<String>,
) -> Result<gnmt_bleu::Score, gnmt_bleu::Error> {
    let seg = gnmt_bleu::Segments {
        hyps,
        refs: vec![refs],
    };
    gnmt_bleu::Metric::Bleu(gnmt_bleu::Bleu::default()).corpus_score(&seg, false)
}

#[derive(Args, Debug)]
pub struct AverageArgs {
    /// Checkpoint or model directories to average (same model and vocabulary).
    #[arg(required_unless_present = "last", conflicts_with = "last")]
    checkpoints: Vec<PathBuf>,
    /// Average the last N checkpoints of the run directory given with --run.
    #[arg(long, requires = "run")]
    last: Option<usize>,
    /// The run directory for --last.
    #[arg(long)]
    run: Option<PathBuf>,
    /// The model directory to write (config.json, tokenizer.json, model.safetensors).
    #[arg(short, long)]
    out: PathBuf,
}

pub fn average(a: AverageArgs) -> Result<ExitCode> {
    let dirs = match (a.last, &a.run) {
        (Some(n), Some(run)) => gnmt_train::average::last_checkpoints(run, n)?,
        _ => a.checkpoints.clone(),
    };
    let n = gnmt_train::average::average(&dirs, &a.out)?;
    for d in &dirs {
        tracing::debug!("averaged {}", d.display());
    }
    tracing::info!("averaged {n} checkpoints into {}", a.out.display());
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct PrepareArgs {
    /// The tokenizer.json to tokenize with (the one training will use).
    #[arg(long)]
    vocab: PathBuf,
    /// Source-side text (plain or .gz).
    #[arg(long)]
    src: PathBuf,
    /// Target-side text (plain or .gz), aligned line by line with --src.
    #[arg(long)]
    tgt: PathBuf,
    /// Directory to write (meta.json and the id arrays).
    #[arg(short, long)]
    output: PathBuf,
    /// Longest sentence (either side), in pieces; longer pairs are skipped and counted.
    #[arg(long, default_value_t = FilterConfig::default().max_len)]
    max_len: usize,
    /// Largest longer/shorter length ratio.
    #[arg(long, default_value_t = FilterConfig::default().max_ratio)]
    max_ratio: f64,
    /// Use only the first N pairs.
    #[arg(long)]
    limit: Option<usize>,
    /// Make a pair that would be skipped an error naming its line.
    #[arg(long)]
    strict: bool,
    /// Tokenizer threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn prepare(a: PrepareArgs) -> Result<ExitCode> {
    if let Some(t) = a.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .ok();
    }
    let tok = SubwordTokenizer::load(&a.vocab)?;
    let filter = FilterConfig {
        max_len: a.max_len,
        max_ratio: a.max_ratio,
        strict: a.strict,
    };
    let bar = spinner("tokenizing");
    let t = Instant::now();
    let meta =
        gnmt_data::prepare::prepare(&a.src, &a.tgt, &tok, &filter, a.limit, &a.output, |n| {
            bar.set_message(format!("{n} pairs tokenized"))
        })?;
    bar.finish_and_clear();
    let secs = t.elapsed().as_secs_f64();
    tracing::info!("{}", meta.report);
    eprintln!(
        "prepared {} pairs ({} + {} tokens) into {} in {secs:.1}s",
        meta.report.kept,
        meta.src_tokens,
        meta.tgt_tokens,
        a.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// bf16 mixed precision on a CPU where bf16 products run slower than float32's (Intel without
/// AMX: half the FMA's rate; or no bf16 instructions at all, where libtorch emulates them) trains
/// slower than float32: said once, the user's choice kept.
fn warn_if_slow_precision(cfg: &TrainConfig, device: tch::Device) {
    if device == tch::Device::Cpu
        && cfg.precision == gnmt_train::Precision::Bf16
        && !gnmt_model::bf16_faster_than_float32()
    {
        tracing::warn!(
            "precision bf16: this CPU runs bf16 products slower than float32 (no AMX-BF16, and no AMD AVX512-BF16; `gnmt doctor`), so fp32 trains faster here"
        );
    }
}

/// The device of this process: under torchrun (or its variables) a CUDA device becomes the rank's
/// own GPU, `cuda:LOCAL_RANK`, as PyTorch jobs do; anything else stays as asked.
fn rank_device(device: tch::Device) -> Result<tch::Device> {
    match (device, gnmt_dist::Launch::from_env()?) {
        (tch::Device::Cuda(_), Some(launch)) => Ok(tch::Device::Cuda(launch.local_rank)),
        _ => Ok(device),
    }
}

/// The process group of a data-parallel run when torchrun (or Slurm, or a Kubernetes operator)
/// launched this process: `WORLD_SIZE`, `RANK` and the rest set. `GNMT_DIST_TIMEOUT` (seconds,
/// default 1800 as PyTorch's) bounds the rendezvous and every collective; rank 0 validates while
/// the others wait, so it must exceed a validation.
fn data_parallel_group(device: tch::Device) -> Result<Option<gnmt_dist::ProcessGroup>> {
    let Some(launch) = gnmt_dist::Launch::from_env()? else {
        return Ok(None);
    };
    let secs = match std::env::var("GNMT_DIST_TIMEOUT") {
        Ok(v) => v
            .trim()
            .parse::<u64>()
            .with_context(|| format!("GNMT_DIST_TIMEOUT={v:?}: not a number of seconds"))?,
        Err(_) => 1800,
    };
    let backend = gnmt_dist::Backend::for_device(device);
    if device.is_cuda() && backend == gnmt_dist::Backend::Gloo {
        tracing::warn!(
            "this gnmt was built without NCCL: gradients cross through host memory over Gloo"
        );
    }
    tracing::info!(
        "data-parallel: rank {} of {}, rendezvous at {}:{}, {backend:?}",
        launch.rank,
        launch.world_size,
        launch.master_addr,
        launch.master_port
    );
    let timeout = std::time::Duration::from_secs(secs);
    let group = gnmt_dist::ProcessGroup::connect_with(&launch, timeout, backend)?;
    Ok(Some(group))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        train: TrainArgs,
    }

    fn config(args: &[&str]) -> TrainConfig {
        let cmd = Cmd::try_parse_from(std::iter::once("train").chain(args.iter().copied()));
        build_train_config(&cmd.map_err(|e| e.to_string()).unwrap().train).unwrap()
    }

    #[test]
    fn flags_override_the_config_file_and_absent_flags_leave_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "max_steps = 100\nlr = 0.5\nbatch_size = 8\n").unwrap();
        let f = file.to_str().unwrap();
        let c = config(&[
            "--config",
            f,
            "--train-src",
            "a.en",
            "--train-tgt",
            "a.de",
            "--max-steps",
            "7",
            "--bf16",
            "--strict",
            "--set",
            "label_smoothing=0.2",
            "--set",
            "model.dropout=0.3",
        ]);
        assert_eq!((c.max_steps, c.lr, c.batch_size), (7, 0.5, 8));
        assert_eq!(c.train_src, PathBuf::from("a.en"));
        assert_eq!(c.precision, gnmt_train::Precision::Bf16);
        assert!(c.filter.strict);
        assert_eq!(c.label_smoothing, 0.2);
        assert_eq!(c.model["dropout"], serde_json::json!(0.3));
        // A preset is one of the known names, refused by the parser otherwise.
        let e = match Cmd::try_parse_from(["train", "--preset", "huge"]) {
            Ok(_) => panic!("--preset huge accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("huge") && e.contains("small8"), "{e}");
        // Nothing given: the defaults.
        let d = config(&["--train-src", "a.en", "--train-tgt", "a.de"]);
        assert_eq!(
            d,
            TrainConfig {
                train_src: "a.en".into(),
                train_tgt: "a.de".into(),
                ..TrainConfig::default()
            }
        );
    }
}
