//! `gnmt bench`: throughput of training steps and of batched beam search, as JSON on stdout, so
//! runs can be compared with each other and with `scripts/pytorch-compare.py` (the same model
//! and search written in PyTorch eager).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use gnmt_model::{load_model_dir, DeviceSpec, Kernels, ModelConfig, Seq2Seq};
use gnmt_tokenizer::{SubwordTokenizer, BOS, EOS, FIRST_PIECE};
use gnmt_train::optim::Adam;
use gnmt_translate::stream::{workers_for, Engine};
use gnmt_translate::SearchConfig;
use tch::{nn, Device, Tensor};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Subcommand, Debug)]
enum BenchWhat {
    /// Training steps (forward, label-smoothed loss, backward, clipping, Adam) on synthetic batches.
    Train(TrainBench),
    /// Batched beam search over a file or synthetic sentences.
    Translate(TranslateBench),
    /// A running `gnmt serve` under load: clients sending one sentence per request.
    Serve(crate::serve::ServeBench),
    /// The matrix kernels alone: a linear layer's product `x W^T + b` at given shapes, on each
    /// CPU path (libtorch's addmm, gnmt-kernels' float32, bf16 and int8), one thread, with the
    /// achieved GFLOP/s (GOP/s for int8).
    Linear(LinearBench),
}

#[derive(Args, Debug)]
struct LinearBench {
    /// Shapes as ROWSxINxOUT (rows of x, input features, output features), comma-separated. The
    /// default is `small`'s search at beam 5 and batch 64: the classifier (8,000 pieces), the
    /// top decoder layer's gates and the attention-fed layer's, at full and at a tenth of the rows.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "320x256x8000,320x768x1024,320x512x1024,32x256x8000,32x768x1024"
    )]
    shapes: Vec<LinearShape>,
    /// Seconds timed per path and shape.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// The paths to time, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "libtorch,fp32,bf16,int8")]
    paths: Vec<LinearPath>,
}

/// One way to multiply, for `bench linear`.
#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
enum LinearPath {
    /// libtorch's `linear` (addmm) in float32.
    Libtorch,
    /// gnmt-kernels' packed float32 product.
    Fp32,
    /// gnmt-kernels' bf16 product.
    Bf16,
    /// gnmt-kernels' int8 product.
    Int8,
}

/// A product's shape: `m` rows of `k` inputs into `n` outputs.
#[derive(Debug, Clone, Copy)]
struct LinearShape {
    m: usize,
    k: usize,
    n: usize,
}

impl std::str::FromStr for LinearShape {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<usize> = s
            .split('x')
            .map(|p| p.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("shape {s:?}: {e} (expected ROWSxINxOUT, e.g. 320x256x8000)"))?;
        // (Each of x, W and the output stays under 2^30 floats: 4 GB.)
        let fits = |a: usize, b: usize| a.checked_mul(b).is_some_and(|v| v <= 1 << 30);
        match parts[..] {
            [m, k, n] if fits(m, k) && fits(n, k) && fits(m, n) && m * k * n > 0 => {
                Ok(LinearShape { m, k, n })
            }
            _ => Err(format!(
                "shape {s:?}: expected three positive sizes ROWSxINxOUT (each matrix under 2^30 values), e.g. 320x256x8000"
            )),
        }
    }
}

#[derive(Args, Debug)]
struct Common {
    /// A model preset (random weights; see `gnmt model-info`).
    #[arg(long, conflicts_with = "model", value_parser = clap::builder::PossibleValuesParser::new(gnmt_model::PRESETS))]
    preset: Option<String>,
    /// A model directory (config.json, tokenizer.json, model.safetensors).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Vocabulary size for --preset.
    #[arg(long, default_value_t = 8000)]
    vocab_size: i64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// CPU threads for libtorch (default: libtorch's choice).
    #[arg(long)]
    threads: Option<i32>,
    /// Sentences per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Source (and target) length of synthetic sentences, in pieces.
    #[arg(long, default_value_t = 16)]
    len: usize,
    #[arg(long, default_value_t = 1)]
    seed: i64,
    /// bf16 (training: mixed precision with float32 master weights; translation: bf16 model).
    #[arg(long)]
    bf16: bool,
    /// fp16 (training: mixed precision with float32 master weights and loss scaling, as
    /// `gnmt train --precision fp16`; translation: fp16 model).
    #[arg(long, conflicts_with = "bf16")]
    fp16: bool,
}

#[derive(Args, Debug)]
struct TrainBench {
    #[command(flatten)]
    common: Common,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Shares each batch is cut into, trained at once on threads of their own (as the
    /// `batch_shares` setting of `gnmt train`, whose default this is).
    #[arg(long, default_value_t = 2)]
    shares: usize,
}

#[derive(Args, Debug)]
struct TranslateBench {
    #[command(flatten)]
    common: Common,
    /// Text to translate (needs --model for its tokenizer); default: synthetic sentences.
    #[arg(short, long, requires = "model")]
    input: Option<PathBuf>,
    /// Synthetic sentences (without --input).
    #[arg(long, default_value_t = 256)]
    sentences: usize,
    #[command(flatten)]
    search: crate::args::SearchArgs,
    /// Batches searched at once on a CPU (as `gnmt translate --workers`).
    #[arg(long)]
    workers: Option<usize>,
    /// libtorch's operators instead of gnmt-kernels (packed decoder layers and classifier,
    /// fused attention scores, log-softmax + top-k; CPU float32), to measure what they bring.
    #[arg(long)]
    no_fused_kernels: bool,
    /// The decoder in 8-bit integers (as `gnmt translate --precision int8`).
    #[arg(long, conflicts_with_all = ["bf16", "fp16", "no_fused_kernels"])]
    int8: bool,
    /// Each sentence searched alone, one after another, timed one by one: adds the latency
    /// percentiles (what a server's single request is measured against).
    #[arg(long)]
    per_sentence: bool,
}

/// The model cast to bf16/fp16 (--bf16, --fp16): training's working copy.
fn build_cast(c: &Common) -> Result<(nn::VarStore, Seq2Seq, Device)> {
    let (mut vs, m, d) = build_fp32(c)?;
    if m.is_int8() {
        bail!("an int8 model (gnmt quantize) only translates: give the float32 model");
    }
    let kind = match (c.bf16, c.fp16) {
        (true, _) => tch::Kind::BFloat16,
        (_, true) => tch::Kind::Half,
        _ => tch::Kind::Float,
    };
    m.cast(&mut vs, kind)?;
    Ok((vs, m, d))
}

/// The model for `bench translate`, readied for --bf16/--fp16 as `gnmt translate` would, with
/// the search's kernels.
fn build_for_search(c: &Common, int8: bool) -> Result<(nn::VarStore, Seq2Seq, Device, Kernels)> {
    let (mut vs, m, d) = build_fp32(c)?;
    if m.is_int8() && (c.bf16 || c.fp16) {
        bail!("an int8 model (gnmt quantize) translates in int8 only");
    }
    let precision = if int8 || m.is_int8() {
        gnmt_translate::Precision::Int8
    } else if c.bf16 {
        gnmt_translate::Precision::Bf16
    } else if c.fp16 {
        gnmt_translate::Precision::Fp16
    } else {
        gnmt_translate::Precision::Fp32
    };
    let kernels = crate::precision::cast_for(&mut vs, &m, precision, d)?;
    Ok((vs, m, d, kernels))
}

fn build_fp32(c: &Common) -> Result<(nn::VarStore, Seq2Seq, Device)> {
    if let Some(t) = c.threads {
        tch::set_num_threads(t);
    }
    let device = c.device.0;
    tch::manual_seed(c.seed);
    match (&c.model, &c.preset) {
        (Some(dir), _) => {
            let (vs, m) = load_model_dir(dir, device)?;
            Ok((vs, m, device))
        }
        (None, p) => {
            let name = p.as_deref().unwrap_or("small");
            let cfg = ModelConfig::preset(name, c.vocab_size).with_context(|| {
                format!(
                    "--preset {name}: known presets are {}",
                    gnmt_model::PRESETS.join(", ")
                )
            })?;
            let vs = nn::VarStore::new(device);
            let m = Seq2Seq::new(&vs.root(), &cfg)?;
            Ok((vs, m, device))
        }
    }
}

/// Deterministic pseudo-random ids of ordinary pieces (no specials, no byte pieces).
fn synthetic(n: usize, len: usize, vocab: i64, seed: u64) -> Vec<Vec<u32>> {
    let span = (vocab as u64).saturating_sub(FIRST_PIECE as u64).max(1);
    let mut rng = gnmt_data::SplitMix64(seed);
    (0..n)
        .map(|_| {
            (0..len)
                .map(|_| FIRST_PIECE + (rng.next_u64() % span) as u32)
                .collect()
        })
        .collect()
}

/// The process's peak resident memory (VmHWM), in MB.
pub fn peak_rss_mb() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn bench_train(a: TrainBench) -> Result<serde_json::Value> {
    let c = &a.common;
    let (vs, model, device) = build_fp32(c)?;
    let work = if c.bf16 || c.fp16 {
        let (wvs, wm, _) = build_cast(c)?;
        Some((wvs, wm))
    } else {
        None
    };
    let mut adam = match &work {
        Some((wvs, _)) => Adam::mixed(&vs, wvs).map_err(anyhow::Error::msg)?,
        None => Adam::new(&vs),
    };
    let mut shares = gnmt_train::shares::Shares::new(
        a.shares,
        work.as_ref().map_or(&vs, |w| &w.0),
        &model.config,
        &adam,
    )?;
    let model = work.as_ref().map_or(&model, |w| &w.1);
    let b = c.batch_size;
    let l = c.len;
    let data = synthetic(2 * b, l, model.config.vocab_size, c.seed as u64);
    let (src, tgt) = data.split_at(b);
    let pairs: Vec<usize> = (0..b).collect();
    let parts = shares.split(&pairs);
    let threads = tch::get_num_threads().max(1) as usize;
    // The trainer's loss and backward pass ([`gnmt_train::trainer::loss_backward`]), per
    // target token, over the shares of the batch.
    let target_tokens = (b * (l + 1)) as f64;
    let mut step = |n: u64| -> Result<f64> {
        adam.zero_grad();
        if c.fp16 {
            // The trainer's dynamic loss scaling at its starting scale (no overflow to skip
            // at this scale on these batches; an overflow would show as a non-finite norm).
            adam.grad_scale = gnmt_train::optim::LossScaler::default().scale;
        }
        let scale = adam.grad_scale / target_tokens;
        let sums = shares.run(model, &mut adam, parts.len(), threads, |m, j| {
            let rows = &parts[j];
            let t = training_tensors(rows.iter().map(|&i| (&src[i], &tgt[i])), device);
            let logits = gnmt_model::with_dropout_seed(n << 8 | j as u64, || {
                m.forward(&t.src, &t.src_len, &t.tgt_in, true)
            });
            gnmt_train::trainer::loss_backward(&logits, &t.tgt_out, 0.1, scale)
        })?;
        adam.clip_grad_norm(5.0);
        adam.apply(1e-3);
        Ok(sums.iter().sum::<f64>() / target_tokens)
    };
    for n in 0..a.warmup {
        step(n as u64)?;
    }
    sync(device);
    let t = Instant::now();
    let mut last = 0.0;
    for n in 0..a.steps.max(1) {
        last = step((a.warmup + n) as u64)?;
    }
    sync(device);
    let secs = t.elapsed().as_secs_f64();
    let steps = a.steps.max(1) as f64;
    // Non-pad tokens per step: source plus target (with its EOS).
    let tokens = (b * l + b * (l + 1)) as f64;
    // The matrix products' work: a forward pass and a backward pass of twice its cost.
    let gflop = 3.0 * b as f64 * model.config.forward_flops(l, l + 1).total() / 1e9;
    Ok(serde_json::json!({
        "bench": "train", "preset": c.preset.clone().unwrap_or_else(|| "small".into()), "bf16": c.bf16, "fp16": c.fp16,
        "model": c.model, "device": c.device, "threads": tch::get_num_threads(),
        "shares": shares.count(), "batch_size": b, "len": l, "steps": a.steps.max(1),
        "ms_per_step": secs * 1000.0 / steps, "tokens_per_s": tokens * steps / secs,
        "final_loss": last, "peak_rss_mb": peak_rss_mb(),
        "gflop_per_step": gflop, "gflop_per_s": gflop * steps / secs,
        "isa": gnmt_model::Isa::detected().name(), "cpu": crate::doctor::cpu_model(),
    }))
}

/// A training batch's tensors: sources `[B, S]`, their lengths, target inputs (BOS first) and
/// outputs (EOS last) `[B, T + 1]`; every sequence of one length.
struct TrainingTensors {
    src: Tensor,
    src_len: Tensor,
    tgt_in: Tensor,
    tgt_out: Tensor,
}

fn training_tensors<'a>(
    pairs: impl Iterator<Item = (&'a Vec<u32>, &'a Vec<u32>)>,
    device: Device,
) -> TrainingTensors {
    let (mut src, mut tgt_in, mut tgt_out, mut lens) = (vec![], vec![], vec![], vec![]);
    for (s, t) in pairs {
        src.extend(s.iter().map(|&x| x as i64));
        lens.push(s.len() as i64);
        tgt_in.extend(std::iter::once(BOS).chain(t.iter().copied()).map(i64::from));
        tgt_out.extend(t.iter().copied().chain(std::iter::once(EOS)).map(i64::from));
    }
    let rows = lens.len() as i64;
    let matrix = |v: &[i64]| Tensor::from_slice(v).view([rows, -1]).to_device(device);
    TrainingTensors {
        src: matrix(&src),
        tgt_in: matrix(&tgt_in),
        tgt_out: matrix(&tgt_out),
        src_len: Tensor::from_slice(&lens),
    }
}

fn bench_translate(a: TranslateBench) -> Result<serde_json::Value> {
    let c = &a.common;
    let (_vs, model, device, kernels) = build_for_search(c, a.int8)?;
    let srcs: Vec<Vec<u32>> = match (&a.input, &c.model) {
        (Some(path), Some(dir)) => {
            let tok = SubwordTokenizer::load(&dir.join("tokenizer.json"))?;
            let lines = gnmt_data::text::read_lines(path)?;
            let max = model.config.max_source_len.max(1) as usize;
            let mut v = Vec::with_capacity(lines.len());
            for l in &lines {
                let mut ids = tok.encode(l)?;
                ids.truncate(max);
                v.push(ids);
            }
            v
        }
        _ => synthetic(a.sentences, c.len, model.config.vocab_size, c.seed as u64),
    };
    if srcs.is_empty() {
        bail!("nothing to translate");
    }
    let search = SearchConfig {
        kernels: if a.no_fused_kernels {
            Kernels::Libtorch
        } else {
            kernels
        },
        ..SearchConfig::from(&a.search)
    };
    // What `gnmt translate` runs: longest first, fixed-size batches, its search workers.
    let (workers, threads_per_worker) = workers_for(device, a.workers);
    let engine = Engine {
        model: &model,
        ensemble: Default::default(),
        device,
        search,
        batch_size: c.batch_size.max(1),
        max_tokens: None,
        workers,
        threads_per_worker,
    };
    // Warm-up on a few of the longest sentences (allocator, thread pools).
    let mut order: Vec<usize> = (0..srcs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(srcs[i].len()));
    let first: Vec<Vec<u32>> = order.iter().take(4).map(|&i| srcs[i].clone()).collect();
    Engine {
        workers: 1,
        search: engine.search.clone(),
        ensemble: engine.ensemble.clone(),
        ..engine
    }
    .translate_ids(&first)?;
    sync(device);
    let t = Instant::now();
    let (found, latency) = match a.per_sentence {
        true => one_by_one(&model, &srcs, &engine.search, device)?,
        false => (engine.translate_ids(&srcs)?, serde_json::Value::Null),
    };
    let generated: usize = found
        .iter()
        .map(|h| h.first().map_or(0, |h| h.tokens.len() + 1))
        .sum();
    sync(device);
    let secs = t.elapsed().as_secs_f64();
    let source: usize = srcs.iter().map(Vec::len).sum();
    Ok(serde_json::json!({
        "per_sentence": a.per_sentence, "latency_ms": latency,
        "bench": "translate", "preset": c.preset, "model": c.model, "input": a.input, "bf16": c.bf16, "fp16": c.fp16,
        "device": c.device, "threads": tch::get_num_threads(), "workers": workers, "beam": engine.search.beam,
        "fused_kernels": !a.no_fused_kernels, "kernels": format!("{:?}", engine.search.kernels),
        "isa": gnmt_model::Isa::detected().name(), "cpu": crate::doctor::cpu_model(),
        "batch_size": c.batch_size, "sentences": srcs.len(), "source_tokens": source,
        "generated_tokens": generated, "seconds": secs,
        "tokens_per_s": (source + generated) as f64 / secs,
        "sentences_per_s": srcs.len() as f64 / secs, "peak_rss_mb": peak_rss_mb(),
    }))
}

/// Each of `srcs` searched alone in turn on this thread (the decoder packed once): the
/// hypotheses, and the p50, p99 and mean of the times.
fn one_by_one(
    model: &Seq2Seq,
    srcs: &[Vec<u32>],
    search: &SearchConfig,
    device: Device,
) -> Result<(Vec<Vec<gnmt_translate::Hypothesis>>, serde_json::Value)> {
    let cpu = gnmt_translate::cpu_decoder(model, device, search.kernels);
    let shared = gnmt_translate::stream::SharedSearch::new(model, cpu.as_ref(), device);
    let mut found = Vec::with_capacity(srcs.len());
    let mut ms = Vec::with_capacity(srcs.len());
    gnmt_translate::stream::as_lone_search(cpu.is_some(), || {
        for src in srcs {
            let t = Instant::now();
            found.extend(shared.translate(std::slice::from_ref(src), search)?);
            sync(device);
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok::<_, tch::TchError>(())
    })?;
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    let mean = ms.iter().sum::<f64>() / ms.len().max(1) as f64;
    let latency = serde_json::json!({ "p50": at(0.5), "p99": at(0.99), "mean": mean });
    Ok((found, latency))
}

/// Each path's product timed at each shape, one thread (gnmt-kernels' products are
/// single-threaded; the search runs one per worker), on deterministic pseudo-random values.
fn bench_linear(a: LinearBench) -> Result<serde_json::Value> {
    tch::set_num_threads(1);
    let mut results = Vec::new();
    for s in &a.shapes {
        let (w, b, x) = (
            gnmt_kernels::noise(s.n * s.k, 1, 0.1),
            gnmt_kernels::noise(s.n, 2, 1.0),
            gnmt_kernels::noise(s.m * s.k, 3, 1.0),
        );
        let mut out = vec![0f32; s.m * s.n];
        let tw = Tensor::from_slice(&w).view([s.n as i64, s.k as i64]);
        let (tb, tx) = (
            Tensor::from_slice(&b),
            Tensor::from_slice(&x).view([s.m as i64, s.k as i64]),
        );
        let fp32 = gnmt_kernels::PackedLinear::new(&w, Some(&b), s.n, s.k);
        let bf16 = gnmt_kernels::PackedLinearBf16::new(&w, Some(&b), s.n, s.k);
        let int8 = gnmt_kernels::PackedLinearI8::new(&w, Some(&b), s.n, s.k);
        let ops = 2.0 * (s.m * s.k * s.n) as f64;
        let x_ = &x;
        for &path in &a.paths {
            let (name, build, (calls, secs)) = match path {
                LinearPath::Fp32 => (
                    "fp32",
                    fp32.build(),
                    time_calls(a.seconds, &mut || fp32.forward(x_, s.m, &mut out)),
                ),
                LinearPath::Bf16 => (
                    "bf16",
                    bf16.build(),
                    time_calls(a.seconds, &mut || bf16.forward(x_, s.m, &mut out)),
                ),
                LinearPath::Int8 => (
                    "int8",
                    int8.build(),
                    time_calls(a.seconds, &mut || int8.forward(x_, s.m, &mut out)),
                ),
                LinearPath::Libtorch => (
                    "libtorch fp32 (addmm)",
                    "libtorch",
                    time_calls(a.seconds, &mut || drop(tx.linear(&tw, Some(&tb)))),
                ),
            };
            let ms = 1e3 * secs / calls as f64;
            results.push(serde_json::json!({
                "shape": format!("{}x{}x{}", s.m, s.k, s.n), "path": name, "build": build,
                "calls": calls, "ms_per_call": ms, "gflops": ops / (ms * 1e6),
            }));
        }
    }
    Ok(serde_json::json!({
        "bench": "linear", "cpu": crate::doctor::cpu_model(), "isa": gnmt_model::Isa::detected().name(),
        "threads": 1, "results": results,
    }))
}

/// Calls `f` once untimed, then for about `seconds` (at least three calls): the calls and
/// the seconds they took.
fn time_calls(seconds: f64, f: &mut dyn FnMut()) -> (usize, f64) {
    f();
    let t = Instant::now();
    let mut calls = 0;
    while calls < 3 || t.elapsed().as_secs_f64() < seconds {
        f();
        calls += 1;
    }
    (calls, t.elapsed().as_secs_f64())
}

pub fn run(a: BenchArgs) -> Result<ExitCode> {
    let v = match a.what {
        BenchWhat::Train(t) => bench_train(t)?,
        BenchWhat::Translate(t) => bench_translate(t)?,
        BenchWhat::Serve(t) => crate::serve::bench(t)?,
        BenchWhat::Linear(t) => bench_linear(t)?,
    };
    println!("{v}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_ids_are_ordinary_pieces_and_deterministic() {
        let a = synthetic(3, 5, 300, 7);
        assert_eq!(a, synthetic(3, 5, 300, 7));
        assert!(a.iter().flatten().all(|&x| (FIRST_PIECE..300).contains(&x)));
        assert_eq!(a.iter().map(Vec::len).collect::<Vec<_>>(), vec![5, 5, 5]);
    }
}
