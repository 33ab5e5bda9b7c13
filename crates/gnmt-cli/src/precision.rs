//! Precision on the command line: `gnmt translate --precision`, the default it picks, and
//! `gnmt check-precision`, which measures what the pick rests on.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use gnmt_translate::stream::{Engine, OutputOptions, Translator};
use gnmt_translate::{ModelDir, Precision, SearchConfig};
use tch::nn;

/// `gnmt translate --precision`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum TranslatePrecision {
    Fp32,
    Bf16,
    Fp16,
    Int8,
}

impl From<TranslatePrecision> for Precision {
    fn from(p: TranslatePrecision) -> Self {
        match p {
            TranslatePrecision::Fp32 => Precision::Fp32,
            TranslatePrecision::Bf16 => Precision::Bf16,
            TranslatePrecision::Fp16 => Precision::Fp16,
            TranslatePrecision::Int8 => Precision::Int8,
        }
    }
}

/// `--precision`, `--bf16`, `--fp16` of `gnmt translate` and `gnmt serve`.
#[derive(Args, Debug, Clone)]
pub struct PrecisionArgs {
    /// Precision of the model: fp32; bf16 (on a CPU with AVX512-BF16 but no AMX, the encoder's
    /// and decoder's weights and inputs in bf16 with float32 sums on gnmt-kernels, faster than
    /// fp32 on AMD, slower on Intel; elsewhere the model cast to bf16 for libtorch); fp16 (the
    /// model cast, for GPUs); int8 (the weights of the embeddings, encoder, decoder, classifier
    /// and attention query quantized per output row, their inputs per product, summed exactly
    /// in integers on gnmt-kernels with AMX-INT8, AVX512-VNNI, AVX-VNNI or AVX2, whichever the
    /// CPU has: GNMT's quantized inference). Scores, the attention's scores and the search stay
    /// float32. Default: fp32, or the fastest path that `gnmt check-precision` found within 0.2
    /// BLEU of fp32 on this model.
    #[arg(long, value_enum)]
    pub precision: Option<TranslatePrecision>,
    /// Same as --precision bf16.
    #[arg(long, conflicts_with_all = ["precision", "fp16"])]
    pub bf16: bool,
    /// Same as --precision fp16.
    #[arg(long, conflicts_with = "precision")]
    pub fp16: bool,
}

impl PrecisionArgs {
    /// The precision asked for, or the default for `model` on `device`.
    /// An int8 model (`gnmt quantize`) runs in int8: asking for another precision is an error.
    pub fn for_int8_model(&self, model: &Path) -> Result<Precision> {
        match self.asked() {
            Some(p) if p != Precision::Int8 => bail!(
                "{}: an int8 model (gnmt quantize) translates in int8 only, not {}: give the \
                 float32 model for {}",
                model.display(),
                p.name(),
                p.name()
            ),
            _ => Ok(Precision::Int8),
        }
    }

    pub fn resolve(&self, model: &Path, device: tch::Device) -> Result<Precision> {
        match self.asked() {
            Some(p) => Ok(p),
            None => default_precision(model, device),
        }
    }

    /// The precision the flags ask for, if any.
    fn asked(&self) -> Option<Precision> {
        match (self.precision, self.bf16, self.fp16) {
            (Some(p), _, _) => Some(p.into()),
            (None, true, _) => Some(Precision::Bf16),
            (None, _, true) => Some(Precision::Fp16),
            _ => None,
        }
    }
}

/// The precision `gnmt translate` runs when none is asked for: the fastest this CPU has that the
/// model's precision check (if any) found within 0.2 BLEU of fp32.
pub fn default_precision(model: &Path, device: tch::Device) -> Result<Precision> {
    let check = gnmt_translate::PrecisionCheck::read(model)?;
    let faster = Precision::faster_paths(device);
    let (p, why) = gnmt_translate::PrecisionCheck::pick(check.as_ref(), &faster);
    tracing::info!("precision {} by default: {why}", p.name());
    Ok(p)
}

/// The validation data that `gnmt check-precision` and `gnmt tune` measure a model on.
#[derive(Args, Debug)]
pub struct ValidationArgs {
    /// Validation source text (never a test set: what is chosen on it is kept).
    #[arg(long)]
    pub src: PathBuf,
    /// Its reference translations.
    #[arg(long = "ref")]
    pub reference: PathBuf,
    /// Use only the first N lines.
    #[arg(long, default_value_t = 1000)]
    pub sentences: usize,
}

impl ValidationArgs {
    /// The source and reference lines, checked to pair up.
    pub fn read(&self) -> Result<(Vec<String>, Vec<String>)> {
        read_validation(&self.src, &self.reference, self.sentences)
    }

    /// [`validation_translations`] scored (BLEU, 13a, cased) against this reference.
    pub fn bleu(
        &self,
        models: &Models<'_>,
        search: SearchConfig,
        (sources, refs): (&[String], &[String]),
    ) -> Result<f64> {
        let hyps = validation_translations(models, search, sources)?;
        self.score(hyps, refs)
    }

    /// The BLEU (13a, cased) of `hyps` against `refs`, this reference's lines.
    pub fn score(&self, hyps: Vec<String>, refs: &[String]) -> Result<f64> {
        Ok(crate::commands::corpus_bleu(hyps, refs.to_vec())
            .with_context(|| format!("scoring against {}", self.reference.display()))?
            .score)
    }
}

#[derive(Args, Debug)]
pub struct CheckPrecisionArgs {
    /// Model directory; the result is recorded beside it (precision.json).
    #[arg(short, long)]
    model: PathBuf,
    #[command(flatten)]
    data: ValidationArgs,
    #[command(flatten)]
    search: crate::args::SearchArgs,
    /// CPU threads for libtorch.
    #[arg(long)]
    threads: Option<i32>,
}

/// `gnmt check-precision`: the BLEU of fp32 and of each faster CPU path on the same sentences,
/// printed and written to the model's precision.json.
pub fn check_precision(a: CheckPrecisionArgs) -> Result<ExitCode> {
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    let device = tch::Device::Cpu;
    let ModelDir {
        model, tokenizer, ..
    } = ModelDir::open(&a.model, device)?;
    if model.is_int8() {
        bail!(
            "{}: an int8 model (gnmt quantize) has one precision: check the float32 model",
            a.model.display()
        );
    }
    let (sources, refs) = a.data.read()?;
    let faster = Precision::faster_paths(device);
    let mut bleu = std::collections::BTreeMap::new();
    for &precision in [Precision::Fp32].iter().chain(&faster) {
        // A path that casts the model (bf16 on AMX) translates a cast copy, as translate would.
        let (kernels, cast) = gnmt_translate::precision_plan(precision, device);
        let mut copy = match cast {
            Some(_) => Some(ModelDir::open(&a.model, device)?),
            None => None,
        };
        let first = match copy.as_mut() {
            Some(dir) => {
                cast_for(&mut dir.vs, &dir.model, precision, device)?;
                &dir.model
            }
            None => &model,
        };
        let models = Models {
            first,
            ensemble: Default::default(),
            tokenizer: &tokenizer,
            device,
        };
        let search = SearchConfig {
            kernels,
            ..SearchConfig::from(&a.search)
        };
        let t = Instant::now();
        let score = a.data.bleu(&models, search, (&sources, &refs))?;
        println!(
            "{:<5} BLEU {score:6.2}  ({:.1}s; {})",
            precision.name(),
            t.elapsed().as_secs_f64(),
            gnmt_translate::describe_plan(precision, device)
        );
        bleu.insert(precision.name().to_string(), score);
    }
    let check = gnmt_translate::PrecisionCheck {
        source: a.data.src.display().to_string(),
        sentences: sources.len(),
        bleu,
    };
    let (pick, why) = gnmt_translate::PrecisionCheck::pick(Some(&check), &faster);
    let path = a.model.join(gnmt_translate::CHECK_FILE);
    gnmt_io::write_file(&path, serde_json::to_string_pretty(&check)? + "\n")
        .with_context(|| path.display().to_string())?;
    println!(
        "gnmt translate will run {} by default on this CPU: {why} (recorded in {})",
        pick.name(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Readies a float32 model for translating at `precision` on `device` (casting its weights
/// where that is the plan) and returns the search's kernels; logs the path taken.
pub fn cast_for(
    vs: &mut nn::VarStore,
    model: &gnmt_model::Seq2Seq,
    precision: Precision,
    device: tch::Device,
) -> Result<gnmt_model::Kernels> {
    let (kernels, cast) = gnmt_translate::precision_plan(precision, device);
    if let Some(kind) = cast {
        model.cast(vs, kind)?;
    }
    let path = gnmt_translate::describe_plan(precision, device);
    tracing::info!(
        "precision {} on {}: {path} (CPU kernels: {})",
        precision.name(),
        gnmt_model::DeviceSpec(device),
        gnmt_model::Isa::detected()
    );
    Ok(kernels)
}

/// The first `n` lines of a validation source and of its reference, checked to pair up.
fn read_validation(src: &Path, reference: &Path, n: usize) -> Result<(Vec<String>, Vec<String>)> {
    let mut sources = gnmt_data::text::read_lines(src)?;
    let mut refs = gnmt_data::text::read_lines(reference)?;
    if sources.len() != refs.len() {
        bail!(
            "{} has {} lines, {} has {}",
            src.display(),
            sources.len(),
            reference.display(),
            refs.len()
        );
    }
    sources.truncate(n);
    refs.truncate(n);
    Ok((sources, refs))
}

/// What validation data is translated with: one model or an ensemble, and the vocabulary.
#[derive(Debug)]
pub(crate) struct Models<'a> {
    pub first: &'a gnmt_model::Seq2Seq,
    pub ensemble: gnmt_translate::stream::Ensemble<'a>,
    pub tokenizer: &'a gnmt_tokenizer::SubwordTokenizer,
    /// Where the models were loaded, and so where the search runs.
    pub device: tch::Device,
}

/// The best translations of `sources` as `gnmt translate` makes them with `search` on the
/// models' device.
pub(crate) fn validation_translations(
    models: &Models<'_>,
    search: SearchConfig,
    sources: &[String],
) -> Result<Vec<String>> {
    let device = models.device;
    let (workers, threads_per_worker) = gnmt_translate::stream::workers_for(device, None);
    let tr = Translator {
        engine: Engine {
            model: models.first,
            ensemble: models.ensemble.clone(),
            device,
            search,
            batch_size: 64,
            max_tokens: None,
            workers,
            threads_per_worker,
        },
        tokenizer: models.tokenizer,
        chunk_lines: sources.len().max(1),
        shard: None,
    };
    let keep_best = OutputOptions {
        keep_best: true,
        ..OutputOptions::default()
    };
    let lines = sources
        .iter()
        .cloned()
        .map(Ok::<_, std::convert::Infallible>);
    let summary = tr.translate_stream(lines, 0, &mut std::io::sink(), &keep_best, |_| {})?;
    Ok(summary.best)
}
