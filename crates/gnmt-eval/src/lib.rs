//! # gnmt-eval
//!
//! `gnmt eval`: sacreBLEU's command line over gnmt-bleu — flags, references and systems, the
//! significance tests, test sets by name (gnmt-testsets) and every tokenizer (MeCab through
//! gnmt-mecab, SentencePiece through gnmt-sentencepiece), with output byte-identical to sacreBLEU
//! 2.6.0. No libtorch: the `gnmt` launcher runs it in-process, and so does the `gnmt-eval` binary.

/// `println!` that hands a failed write back as the function's error: with stdout's reader gone
/// (`gnmt eval ... | head`), the command ends with that error instead of a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?;
    }};
}

mod testsets;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use gnmt_bleu::significance::{self, PairedResult, Seed};
use gnmt_bleu::text::{fmt_fixed, py_float_repr, py_json_str, py_rstrip};
use gnmt_bleu::{
    Bleu, BleuConfig, Chrf, ChrfConfig, Metric, Segments, Smooth, Ter, TercomOptions, Tokenizer,
};
use gnmt_testsets::Subset;

/// sacreBLEU's single-dash long options and what they are called here.
const SACREBLEU_FLAGS: &[(&str, &str)] = &[
    ("-tok", "--tokenize"),
    ("-lc", "--lowercase"),
    ("-nr", "--num-refs"),
    ("-sv", "--smooth-value"),
    ("-cc", "--chrf-char-order"),
    ("-cw", "--chrf-word-order"),
    ("-ci", "--confidence"),
    ("-cin", "--confidence-n"),
    ("-par", "--paired-ar"),
    ("-pbs", "--paired-bs"),
    ("-parn", "--paired-ar-n"),
    ("-pbsn", "--paired-bs-n"),
    ("-sh", "--short"),
    ("-sl", "--sentence-level"),
    ("-nc", "--no-color"),
    ("-ol", "--origlang"),
];

/// Rewrites sacreBLEU's single-dash long flags (`-tok 13a`) into the double-dash form clap
/// parses, so that `sacrebleu` can be swapped for `gnmt eval` in a script. Only after `eval`.
pub fn translate_sacrebleu_flags(args: Vec<OsString>) -> Vec<OsString> {
    let Some(pos) = args.iter().position(|a| a == "eval") else {
        return args;
    };
    translate_after(args, pos)
}

/// The same for `gnmt-eval`, whose every argument is an eval argument.
pub fn translate_sacrebleu_flags_all(args: Vec<OsString>) -> Vec<OsString> {
    translate_after(args, 0)
}

fn translate_after(args: Vec<OsString>, pos: usize) -> Vec<OsString> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            if i > pos {
                if let Some(s) = a.to_str() {
                    if let Some((_, long)) = SACREBLEU_FLAGS.iter().find(|(short, _)| *short == s) {
                        return OsString::from(long);
                    }
                }
            }
            a
        })
        .collect()
}

/// A metric `-m` names.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum MetricName {
    Bleu,
    Chrf,
    Ter,
}

/// BLEU's smoothing methods (`-s`); `-sv` gives floor's and add-k's value.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum SmoothMethod {
    None,
    Floor,
    #[value(name = "add-k")]
    AddK,
    Exp,
}

impl SmoothMethod {
    /// The method with its value (sacreBLEU's defaults: floor 0.1, add-k 1).
    fn with_value(self, value: Option<f64>) -> Smooth {
        match self {
            SmoothMethod::None => Smooth::None,
            SmoothMethod::Floor => Smooth::Floor(value.unwrap_or(0.1)),
            SmoothMethod::AddK => Smooth::AddK(value.unwrap_or(1.0)),
            SmoothMethod::Exp => Smooth::Exp,
        }
    }
}

/// BLEU's tokenizers (`-tok`), in sacreBLEU's order.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum TokenizeName {
    None,
    Zh,
    #[value(name = "13a")]
    T13a,
    Intl,
    Char,
    #[value(name = "ja-mecab")]
    JaMecab,
    #[value(name = "ko-mecab")]
    KoMecab,
    Spm,
    Flores101,
    Flores200,
    #[value(name = "spBLEU-1K")]
    SpBleu1k,
}

impl TokenizeName {
    /// `-tok`, else what sacreBLEU picks for the target language of `-l` (zh, ja-mecab,
    /// ko-mecab; 13a for the rest).
    fn resolve(given: Option<TokenizeName>, langpair: Option<&str>) -> TokenizeName {
        let target = langpair.and_then(|p| p.split('-').nth(1)).unwrap_or("");
        let best = match target {
            "zh" => TokenizeName::Zh,
            "ja" => TokenizeName::JaMecab,
            "ko" => TokenizeName::KoMecab,
            _ => TokenizeName::T13a,
        };
        match given {
            None => best,
            Some(t) => {
                if best != TokenizeName::T13a && t != best {
                    tracing::warn!(
                        "consider the {best:?} tokenizer (-tok) for target language {target:?}"
                    );
                }
                t
            }
        }
    }

    fn tokenizer(self) -> Result<Tokenizer> {
        if self == TokenizeName::Spm {
            tracing::warn!(
                "tokenizer 'spm' has been changed to 'flores101', and may be removed in the future"
            );
        }
        let mecab = |language| -> Result<Tokenizer> {
            let t = gnmt_mecab::MecabTokenizer::new(language, &gnmt_mecab::default_dir())?;
            Ok(Tokenizer::External(std::sync::Arc::new(t)))
        };
        Ok(match self {
            TokenizeName::None => Tokenizer::None,
            TokenizeName::Zh => Tokenizer::Zh,
            TokenizeName::T13a => Tokenizer::T13a,
            TokenizeName::Intl => Tokenizer::Intl,
            TokenizeName::Char => Tokenizer::Char,
            TokenizeName::JaMecab => mecab(gnmt_mecab::Language::Japanese)?,
            TokenizeName::KoMecab => mecab(gnmt_mecab::Language::Korean)?,
            TokenizeName::Spm | TokenizeName::Flores101 => spm(
                "flores101",
                "https://dl.fbaipublicfiles.com/fairseq/models/flores/sacrebleu_tokenizer_spm.model",
            )?,
            TokenizeName::Flores200 => spm("flores200", "https://tinyurl.com/flores200sacrebleuspm")?,
            TokenizeName::SpBleu1k => spm(
                "spBLEU-1K",
                "https://www.dlnlp.ai/spBLEU-1K/spbleu-1k_tokenizer_spm.model",
            )?,
        })
    }
}

/// sacreBLEU's spm/flores tokenizers: a SentencePiece model from sacreBLEU's cache
/// (`$SACREBLEU/models`, downloaded there once), its pieces joined by spaces.
fn spm(signature: &'static str, url: &str) -> Result<Tokenizer> {
    let path = gnmt_testsets::Cache::from_env().model(url)?;
    let model = gnmt_sentencepiece::SentencePiece::open(&path)?;
    Ok(Tokenizer::External(std::sync::Arc::new(SpmTokenizer {
        model,
        signature,
    })))
}

#[derive(Debug)]
struct SpmTokenizer {
    model: gnmt_sentencepiece::SentencePiece,
    signature: &'static str,
}

impl gnmt_bleu::ExternalTokenizer for SpmTokenizer {
    fn tokenize(&self, line: &str) -> String {
        self.model.encode_as_pieces(line).join(" ")
    }

    fn signature(&self) -> String {
        self.signature.to_string()
    }
}

/// `-f`: sacreBLEU's JSON (the default) or its text lines and tables.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Json,
    Text,
}

/// Options as sacreBLEU 2.6.0 has them (single-dash long forms such as `-tok` work too).
#[derive(Args, Debug)]
#[command(after_help = "Example: gnmt eval ref.de -i hyp.de -m bleu chrf ter -f text")]
pub struct EvalArgs {
    /// Reference files (before -i). With -nr N, one file with N tab-separated references a line.
    refs: Vec<PathBuf>,
    /// A test set by name as the references (`--list` lists them; `a,b` concatenates sets),
    /// from sacreBLEU's cache ($SACREBLEU, default ~/.sacrebleu), downloaded there once.
    #[arg(short = 't', long = "test-set")]
    test_set: Option<String>,
    /// The language pair of the test set, SRC-TGT (its target language picks BLEU's tokenizer
    /// where -tok is not given: zh, ja-mecab, ko-mecab, else 13a).
    #[arg(short = 'l', long = "language-pair")]
    langpair: Option<String>,
    /// Print fields of the test set (src, ref, docid, ..., or all), tab-separated, and stop.
    #[arg(long, num_args = 1..)]
    echo: Option<Vec<String>>,
    /// List the test sets (for -l), or with -t the fields of each language pair, and stop.
    #[arg(long)]
    list: bool,
    /// Download a test set into the cache (one pair with -l) and stop.
    #[arg(long, value_name = "TEST_SET")]
    download: Option<String>,
    /// Print the test set's BibTeX citation and stop.
    #[arg(long, alias = "cite")]
    citation: bool,
    /// Score only documents originally in this language (non-XX: in any other) [-ol].
    #[arg(long)]
    origlang: Option<String>,
    /// Score only documents whose domain (or WMT18/19 annotation; country:XX) matches this regex.
    #[arg(long)]
    subset: Option<String>,
    /// After the scores, the scores of each original language and domain of the test set.
    #[arg(short = 'd', long)]
    detail: bool,
    /// Hypothesis files, one per system; without it, hypotheses come from stdin (tab-separated columns = systems).
    #[arg(short = 'i', long = "input", num_args = 1..)]
    input: Option<Vec<PathBuf>>,
    /// Number of tab-separated references in the single reference file [-nr].
    #[arg(long = "num-refs", default_value_t = 1)]
    num_refs: usize,
    /// Metrics to compute.
    #[arg(short = 'm', long = "metrics", num_args = 1.., value_enum, default_values_t = vec![MetricName::Bleu])]
    metrics: Vec<MetricName>,
    /// BLEU smoothing method.
    #[arg(short = 's', long = "smooth-method", value_enum, default_value_t = SmoothMethod::Exp)]
    smooth_method: SmoothMethod,
    /// BLEU smoothing value (floor: 0.1, add-k: 1) [-sv].
    #[arg(long = "smooth-value")]
    smooth_value: Option<f64>,
    /// BLEU tokenizer [-tok] (default: by the target language of -l, else 13a).
    #[arg(long = "tokenize", value_enum)]
    tokenize: Option<TokenizeName>,
    /// Lowercase for BLEU [-lc].
    #[arg(long = "lowercase")]
    lowercase: bool,
    /// Accepted for compatibility (suppresses sacreBLEU's tokenized-period warning).
    #[arg(long)]
    force: bool,
    /// chrF character n-gram order [-cc].
    #[arg(long = "chrf-char-order", default_value_t = 6)]
    chrf_char_order: usize,
    /// chrF word n-gram order; 2 gives chrF++ [-cw].
    #[arg(long = "chrf-word-order", default_value_t = 0)]
    chrf_word_order: usize,
    /// chrF beta (recall weight).
    #[arg(long = "chrf-beta", default_value_t = 2)]
    chrf_beta: u32,
    /// Keep whitespace in chrF character n-grams.
    #[arg(long = "chrf-whitespace")]
    chrf_whitespace: bool,
    /// Lowercase for chrF.
    #[arg(long = "chrf-lowercase")]
    chrf_lowercase: bool,
    /// chrF with epsilon smoothing (as the original chrF++.py).
    #[arg(long = "chrf-eps-smoothing")]
    chrf_eps_smoothing: bool,
    /// Case-sensitive TER (default lowercases).
    #[arg(long = "ter-case-sensitive")]
    ter_case_sensitive: bool,
    /// TER: special treatment of CJK characters.
    #[arg(long = "ter-asian-support")]
    ter_asian_support: bool,
    /// TER: remove punctuation.
    #[arg(long = "ter-no-punct")]
    ter_no_punct: bool,
    /// TER: normalize (tokenize punctuation, split 's).
    #[arg(long = "ter-normalized")]
    ter_normalized: bool,
    /// Bootstrap confidence intervals [-ci] (seed: SACREBLEU_SEED, default 12345).
    #[arg(long = "confidence")]
    confidence: bool,
    /// Bootstrap samples [-cin].
    #[arg(long = "confidence-n", default_value_t = 1000)]
    confidence_n: usize,
    /// Paired approximate randomization test against the first system [-par].
    #[arg(long = "paired-ar", conflicts_with = "paired_bs")]
    paired_ar: bool,
    /// Paired bootstrap resampling test against the first system [-pbs].
    #[arg(long = "paired-bs")]
    paired_bs: bool,
    /// Approximate randomization trials [-parn].
    #[arg(long = "paired-ar-n", default_value_t = 10000)]
    paired_ar_n: usize,
    /// Bootstrap resampling trials [-pbsn].
    #[arg(long = "paired-bs-n", default_value_t = 1000)]
    paired_bs_n: usize,
    /// Short signatures [-sh].
    #[arg(long = "short")]
    short: bool,
    /// Print only the score [-b].
    #[arg(short = 'b', long = "score-only")]
    score_only: bool,
    /// Decimal places of scores.
    #[arg(short = 'w', long = "width", default_value_t = 1)]
    width: usize,
    /// Output format (default json; SACREBLEU_FORMAT sets the default).
    #[arg(short = 'f', long = "format", value_enum)]
    format: Option<Format>,
    /// Score each sentence [-sl].
    #[arg(long = "sentence-level")]
    sentence_level: bool,
    /// No colours [-nc] (gnmt eval prints none).
    #[arg(long = "no-color")]
    no_color: bool,
}

pub(crate) fn read_text_lines(path: &Path) -> Result<Vec<String>> {
    let lines = gnmt_io::text::read_lines(path)?;
    Ok(lines
        .into_iter()
        .map(|l| py_rstrip(&l).to_string())
        .collect())
}

fn build_metrics(a: &EvalArgs, sentence_level: bool) -> Result<Vec<Metric>> {
    let mut ms = Vec::new();
    for m in &a.metrics {
        let metric = match m {
            MetricName::Bleu => Metric::Bleu(Bleu::new(BleuConfig {
                lowercase: a.lowercase,
                tokenizer: TokenizeName::resolve(a.tokenize, a.langpair.as_deref()).tokenizer()?,
                smooth: a.smooth_method.with_value(a.smooth_value),
                max_ngram_order: 4,
                effective_order: sentence_level,
            })),
            MetricName::Chrf => Metric::Chrf(Chrf::new(ChrfConfig {
                char_order: a.chrf_char_order,
                word_order: a.chrf_word_order,
                beta: a.chrf_beta,
                lowercase: a.chrf_lowercase,
                whitespace: a.chrf_whitespace,
                eps_smoothing: a.chrf_eps_smoothing,
            })),
            MetricName::Ter => Metric::Ter(Ter::new(TercomOptions {
                normalized: a.ter_normalized,
                no_punct: a.ter_no_punct,
                asian_support: a.ter_asian_support,
                case_sensitive: a.ter_case_sensitive,
            })),
        };
        if !ms.iter().any(|x: &Metric| x.key() == metric.key()) {
            ms.push(metric);
        }
    }
    ms.sort_by_key(|m| m.key());
    Ok(ms)
}

/// The metrics in the order `-m` named them (sacreBLEU's `--detail` keeps that order).
fn metrics_in_given_order(a: &EvalArgs, metrics: &[Metric]) -> Vec<Metric> {
    let mut out: Vec<Metric> = Vec::new();
    for name in &a.metrics {
        let key = match name {
            MetricName::Bleu => "BLEU",
            MetricName::Chrf => "CHRF",
            MetricName::Ter => "TER",
        };
        if let Some(m) = metrics.iter().find(|m| m.key() == key) {
            if !out.iter().any(|o| o.key() == key) {
                out.push(m.clone());
            }
        }
    }
    out
}

/// A system's name and its lines.
type System = (String, Vec<String>);

/// `gnmt eval`: reads the references and the systems, checks they align, then prints one of
/// three reports: per sentence (`-sl`), one system (with `-ci`), or several (paired tests).
pub fn run(a: EvalArgs) -> Result<ExitCode> {
    if let Some(name) = &a.download {
        testsets::download(name, a.langpair.as_deref())?;
        return Ok(ExitCode::SUCCESS);
    }
    if a.list {
        testsets::list(&a)?;
        return Ok(ExitCode::SUCCESS);
    }
    if a.citation {
        testsets::citation(&a)?;
        return Ok(ExitCode::SUCCESS);
    }
    let paired = a.paired_ar || a.paired_bs;
    let seed = Seed::from_env_value(std::env::var("SACREBLEU_SEED").ok().as_deref())
        .map_err(anyhow::Error::msg)?;
    check_args(&a)?;
    let test = testsets::chosen(&a)?;
    let subset = Subset {
        origlang: a.origlang.clone(),
        subset: a.subset.clone(),
    };
    if let Some(fields) = &a.echo {
        if let Some(test) = &test {
            test.echo(fields, &subset)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if test.is_some() && a.tokenize == Some(TokenizeName::None) {
        tracing::warn!(
            "BLEU's tokenizer is off (-tok none): scores will not compare with published ones"
        );
    }
    // The per-language lines of --detail would spoil JSON: sacreBLEU switches to text.
    let format = match output_format(&a) {
        Format::Json if a.detail => Format::Text,
        f => f,
    };
    let (ref_names, mut refs) = match &test {
        Some(test) => test.references()?,
        None => (reference_names(&a), read_references(&a)?),
    };
    let mut systems = read_systems(&a, paired)?;
    // --detail scores subsets of the whole test set, whatever --origlang keeps.
    let full = match systems.first() {
        Some((_, hyps)) if a.detail => Some((hyps.clone(), refs.clone())),
        _ => None,
    };
    if !subset.is_empty() {
        let Some(test) = &test else {
            bail!("--origlang and --subset need a test set (-t) and a language pair (-l)");
        };
        let keep = test.mask(&subset)?;
        refs = refs
            .into_iter()
            .map(|r| testsets::filter(r, &keep))
            .collect();
        for (_, hyps) in &mut systems {
            *hyps = testsets::filter(std::mem::take(hyps), &keep);
        }
    }
    check_lengths(&ref_names, &systems, &refs)?;
    if paired {
        name_for_paired_tests(&a, &mut systems);
    }
    let metrics = build_metrics(&a, a.sentence_level)?;
    if a.sentence_level {
        return print_sentence_level(&a, paired, &metrics, &systems, &refs);
    }
    if paired && systems.len() == 1 {
        bail!("paired tests (-pbs, -par) need several systems given to --input (-i)");
    }
    if systems.len() > 1 && a.confidence {
        bail!("use paired tests (-pbs, -par) for several systems, not -ci");
    }
    if systems.len() == 1 {
        let (_, hyps) = systems.remove(0);
        print_one_system(&a, &metrics, hyps, refs, format, &seed)?;
        if let Some((hyps, refs)) = full {
            let in_order = metrics_in_given_order(&a, &metrics);
            testsets::print_detail(test.as_ref(), &a, &in_order, &hyps, &refs)?;
        }
    } else if paired {
        print_paired(&a, &metrics, systems, refs, format, &seed)?;
    } else {
        print_multi(&a, &metrics, systems, refs, format)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The combinations of options sacreBLEU refuses before reading anything.
fn check_args(a: &EvalArgs) -> Result<()> {
    if a.echo.is_some() && a.test_set.is_none() {
        bail!("--echo needs a test set (-t) and a language pair (-l)");
    }
    if a.sentence_level && a.metrics.len() > 1 {
        bail!("only one metric can be used in sentence-level mode (-sl)");
    }
    if a.refs.is_empty() && a.test_set.is_none() {
        bail!("no reference files given: references come before -i/--input (or name a test set with -t)");
    }
    if a.num_refs != 1 && a.test_set.is_some() {
        bail!("--num-refs/-nr takes a file of tab-separated references, not a test set (-t)");
    }
    if a.num_refs != 1 && a.refs.len() > 1 {
        bail!("--num-refs/-nr takes one reference file with tab-separated references, not several files");
    }
    Ok(())
}

/// `-f`, else `SACREBLEU_FORMAT`, else json.
fn output_format(a: &EvalArgs) -> Format {
    match a.format {
        Some(f) => f,
        None => match std::env::var("SACREBLEU_FORMAT").map(|v| v.to_lowercase()) {
            Ok(v) if v == "text" => Format::Text,
            _ => Format::Json,
        },
    }
}

/// One stream per reference: a file each, or the tab-separated fields of one file (`-nr N`).
fn read_references(a: &EvalArgs) -> Result<Vec<Vec<String>>> {
    if a.num_refs == 1 {
        return a
            .refs
            .iter()
            .map(|r| {
                read_text_lines(r).with_context(|| format!("reading references {}", r.display()))
            })
            .collect();
    }
    let mut refs = vec![Vec::new(); a.num_refs];
    let lines = read_text_lines(&a.refs[0])?;
    for (i, l) in lines.iter().enumerate() {
        let fields: Vec<&str> = l.splitn(a.num_refs, '\t').collect();
        if fields.len() != a.num_refs {
            bail!(
                "{}: line {}: expected {} tab-separated references, found {}",
                a.refs[0].display(),
                i + 1,
                a.num_refs,
                fields.len()
            );
        }
        for (k, f) in fields.into_iter().enumerate() {
            refs[k].push(f.to_string());
        }
    }
    Ok(refs)
}

/// The systems: the `-i` files (named by path; a baseline given again is skipped), or the
/// tab-separated columns of stdin (`System 1`, `System 2`, ...).
fn read_systems(a: &EvalArgs, paired: bool) -> Result<Vec<System>> {
    let Some(files) = &a.input else {
        return read_stdin_systems();
    };
    let mut systems: Vec<System> = Vec::new();
    for f in files {
        let name = f.display().to_string();
        if systems.iter().any(|(n, _)| *n == name) {
            if paired && systems[0].0 == name {
                tracing::info!("ignoring {name:?} as it was also given as the baseline");
                continue;
            }
            bail!("{name:?} already used to name a system");
        }
        let lines = read_text_lines(f).with_context(|| format!("reading hypotheses {name}"))?;
        systems.push((name, lines));
    }
    Ok(systems)
}

fn read_stdin_systems() -> Result<Vec<System>> {
    let data =
        gnmt_io::text::read_lines(Path::new("-")).context("reading hypotheses from stdin")?;
    let first = data.first().map(String::as_str).unwrap_or("");
    let n = py_rstrip(first).split('\t').count();
    let mut cols: Vec<Vec<String>> = vec![Vec::new(); n];
    for (i, l) in data.iter().enumerate() {
        let fields: Vec<&str> = py_rstrip(l).split('\t').collect();
        if fields.len() != n {
            bail!(
                "stdin: line {}: {} tab-separated systems, the first line has {n}",
                i + 1,
                fields.len()
            );
        }
        for (c, f) in cols.iter_mut().zip(fields) {
            c.push(py_rstrip(f).to_string());
        }
    }
    if data.is_empty() {
        cols = vec![vec![String::new()]];
    }
    Ok(cols
        .into_iter()
        .enumerate()
        .map(|(i, c)| (format!("System {}", i + 1), c))
        .collect())
}

/// The name of each reference stream, for messages: its file, or the one file of `-nr N`.
fn reference_names(a: &EvalArgs) -> Vec<String> {
    (0..a.num_refs.max(a.refs.len()))
        .map(|k| {
            let file = if a.num_refs == 1 {
                a.refs.get(k)
            } else {
                a.refs.first()
            };
            file.map_or_else(String::new, |f| f.display().to_string())
        })
        .collect()
}

/// Every system has sentences, as many as every reference stream.
fn check_lengths(ref_names: &[String], systems: &[System], refs: &[Vec<String>]) -> Result<()> {
    for (name, hyps) in systems {
        if hyps.is_empty() {
            bail!("{name}: no sentences to score");
        }
        for (r, rname) in refs.iter().zip(ref_names) {
            if r.len() != hyps.len() {
                bail!(
                    "{name} has {} lines but {rname} has {}: system and reference streams must have the same length",
                    hyps.len(),
                    r.len()
                );
            }
        }
    }
    Ok(())
}

/// sacreBLEU's names in paired tests: `Baseline: FILE`, or `Baseline`, `System 1`, ... on stdin.
fn name_for_paired_tests(a: &EvalArgs, systems: &mut [System]) {
    match &a.input {
        Some(_) => {
            if let Some(first) = systems.first_mut() {
                first.0 = format!("Baseline: {}", first.0);
            }
        }
        None => {
            for (i, s) in systems.iter_mut().enumerate() {
                s.0 = if i == 0 {
                    "Baseline".into()
                } else {
                    format!("System {i}")
                };
            }
        }
    }
}

/// `-sl`: one line per sentence, one metric, one system, no statistical tests.
fn print_sentence_level(
    a: &EvalArgs,
    paired: bool,
    metrics: &[Metric],
    systems: &[System],
    refs: &[Vec<String>],
) -> Result<ExitCode> {
    if systems.len() > 1 {
        bail!("only one system can be evaluated in sentence-level mode (-sl)");
    }
    if a.confidence || paired {
        bail!("statistical tests are unavailable in sentence-level mode (-sl)");
    }
    let (Some(m), Some((_, hyps))) = (metrics.first(), systems.first()) else {
        bail!("nothing to score");
    };
    let mut out = String::new();
    for (i, h) in hyps.iter().enumerate() {
        let rs: Vec<&str> = refs.iter().map(|r| r[i].as_str()).collect();
        out.push_str(
            &m.sentence_score(h, &rs, a.short)
                .format_text(a.width, a.score_only),
        );
        out.push('\n');
    }
    std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// One system: each metric's corpus score, with its bootstrap interval under `-ci`.
fn print_one_system(
    a: &EvalArgs,
    metrics: &[Metric],
    hyps: Vec<String>,
    refs: Vec<Vec<String>>,
    format: Format,
    seed: &Seed,
) -> Result<()> {
    let seg = Segments { hyps, refs };
    let mut results = Vec::new();
    for m in metrics {
        let short = a.short && format != Format::Json;
        let s = if a.confidence && a.confidence_n > 1 {
            seg.check()?;
            let stats = significance::segment_stats(m, &seg);
            let mut s = m.score_from_segment_stats(&stats, seg.refs.len(), short);
            let (mean, ci) = significance::bootstrap_ci(m, &stats, a.confidence_n, seed);
            s.ci = Some((mean, ci));
            s.signature = m
                .signature_resampled(
                    seg.refs.len(),
                    Some(("bs", a.confidence_n, seed.raw.clone())),
                )
                .format(short);
            s
        } else {
            m.corpus_score(&seg, short)?
        };
        results.push(if a.score_only {
            s.format_text(a.width, true)
        } else if format == Format::Json {
            s.format_json(a.width)
        } else {
            s.format_text(a.width, false)
        });
    }
    print_single(&results, format)?;
    Ok(())
}

fn print_single(results: &[String], format: Format) -> std::io::Result<()> {
    if format == Format::Json {
        if results.len() > 1 {
            say!("[\n{}\n]", results.join(",\n"));
        } else if let Some(r) = results.first() {
            say!("{r}");
        }
        return Ok(());
    }
    if results.len() == 1 {
        say!("{}", results[0]);
        return Ok(());
    }
    // Align the lines on " = " as sacreBLEU does.
    let mut lens = Vec::new();
    for line in results {
        match line.find('=') {
            Some(i) => lens.push(i as isize - 1),
            None => say!("{line}"),
        }
    }
    if let Some(&w) = lens.iter().max() {
        for (l, line) in lens.iter().zip(results.iter().filter(|l| l.contains('='))) {
            // Python slicing with a negative index counts from the end; `=` is never first here.
            let cut = (*l).max(0) as usize;
            let (left, right) = line.split_at(cut);
            let pad = (w as usize).saturating_sub(left.chars().count());
            say!("{}{left}{right}", " ".repeat(pad));
        }
    }
    Ok(())
}

/// Several systems without a paired test: sacreBLEU's JSON list or text table.
fn print_multi(
    a: &EvalArgs,
    metrics: &[Metric],
    systems: Vec<System>,
    refs: Vec<Vec<String>>,
    format: Format,
) -> Result<()> {
    let mut names = Vec::new();
    let mut columns: Vec<(String, Vec<String>)> =
        metrics.iter().map(|m| (m.name(), Vec::new())).collect();
    for (name, hyps) in systems {
        let seg = Segments {
            hyps,
            refs: refs.clone(),
        };
        for (m, col) in metrics.iter().zip(columns.iter_mut()) {
            col.1
                .push(m.corpus_score(&seg, a.short)?.format_text(a.width, true));
        }
        names.push(name);
    }
    if format == Format::Json {
        let out: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut fields = vec![format!("        \"system\": {}", py_json_str(name))];
                for (metric, col) in &columns {
                    fields.push(format!(
                        "        {}: {}",
                        py_json_str(metric),
                        py_json_str(&col[i])
                    ));
                }
                format!("    {{\n{}\n    }}", fields.join(",\n"))
            })
            .collect();
        say!("[\n{}\n]", out.join(",\n"));
        return Ok(());
    }
    let mut headers = vec!["System".to_string()];
    headers.extend(columns.iter().map(|c| c.0.clone()));
    let rows: Vec<Vec<String>> = (0..names.len())
        .map(|i| {
            let mut r = vec![names[i].clone()];
            r.extend(columns.iter().map(|c| c.1[i].clone()));
            r
        })
        .collect();
    say!("{}", fancy_grid(&headers, &rows));
    say!();
    print_signatures(metrics, refs.len(), a.short, None)?;
    Ok(())
}

/// The "Metric signatures" block that ends sacreBLEU's tables.
fn print_signatures(
    metrics: &[Metric],
    nrefs: usize,
    short: bool,
    resampling: Option<(&'static str, usize, String)>,
) -> std::io::Result<()> {
    say!("-----------------");
    say!("Metric signatures");
    say!("-----------------");
    for m in metrics {
        let sig = m
            .signature_resampled(nrefs, resampling.clone())
            .format(short);
        let name = m.name();
        say!(" - {name:<10} {sig}");
    }
    Ok(())
}

/// python-tabulate's `fancy_grid` as sacreBLEU calls it: first column right-aligned, the others
/// centred (Python's `^`: an odd space goes right), multi-line cells, headers padded by 2.
fn fancy_grid(headers: &[String], rows: &[Vec<String>]) -> String {
    let len = |s: &str| s.chars().count();
    let ncol = headers.len();
    let widths: Vec<usize> = (0..ncol)
        .map(|c| {
            let cells = rows
                .iter()
                .flat_map(|r| r[c].split('\n').map(len))
                .max()
                .unwrap_or(0);
            cells.max(len(&headers[c]) + 2)
        })
        .collect();
    let pad = |s: &str, c: usize| -> String {
        let w = widths[c];
        let n = w.saturating_sub(len(s));
        if c == 0 {
            format!("{}{s}", " ".repeat(n))
        } else {
            format!("{}{s}{}", " ".repeat(n / 2), " ".repeat(n - n / 2))
        }
    };
    let rule = |l: &str, m: &str, r: &str, fill: &str| -> String {
        let parts: Vec<String> = widths.iter().map(|w| fill.repeat(w + 2)).collect();
        format!("{l}{}{r}", parts.join(m))
    };
    let line = |cells: Vec<String>| format!("│ {} │", cells.join(" │ "));
    let mut out = vec![rule("╒", "╤", "╕", "═")];
    out.push(line(
        headers.iter().enumerate().map(|(c, h)| pad(h, c)).collect(),
    ));
    out.push(rule("╞", "╪", "╡", "═"));
    for (i, r) in rows.iter().enumerate() {
        let split: Vec<Vec<&str>> = r.iter().map(|c| c.split('\n').collect()).collect();
        let height = split.iter().map(Vec::len).max().unwrap_or(1);
        for k in 0..height {
            out.push(line(
                split
                    .iter()
                    .enumerate()
                    .map(|(c, l)| pad(l.get(k).copied().unwrap_or(""), c))
                    .collect(),
            ));
        }
        if i + 1 < rows.len() {
            out.push(rule("├", "┼", "┤", "─"));
        }
    }
    out.push(rule("╘", "╧", "╛", "═"));
    out.join("\n")
}

/// Paired significance tests against the first system: sacreBLEU's table (text) or JSON.
/// Paired tests (`-pbs`, `-par`) of every system against the first: a JSON list or sacreBLEU's
/// table, its explanation and the signatures.
fn print_paired(
    a: &EvalArgs,
    metrics: &[Metric],
    systems: Vec<System>,
    refs: Vec<Vec<String>>,
    format: Format,
    seed: &Seed,
) -> Result<()> {
    let n = paired_trials(a);
    let results = paired_results(a.paired_bs, metrics, &systems, &refs, n, seed);
    if format == Format::Json {
        print_paired_json(metrics, &systems, &results)?;
    } else {
        print_paired_table(a, metrics, &systems, &results, refs.len(), n, seed)?;
    }
    Ok(())
}

/// Resamples (`-pbsn`, default 1000) or trials (`-parn`, default 10000).
fn paired_trials(a: &EvalArgs) -> usize {
    if a.paired_bs {
        if a.paired_bs_n > 0 {
            a.paired_bs_n
        } else {
            1000
        }
    } else if a.paired_ar_n > 0 {
        a.paired_ar_n
    } else {
        10000
    }
}

/// Per system (the baseline first), per metric: its score, p-value and bootstrap interval.
fn paired_results(
    bs: bool,
    metrics: &[Metric],
    systems: &[System],
    refs: &[Vec<String>],
    n: usize,
    seed: &Seed,
) -> Vec<Vec<PairedResult>> {
    // Statistics and actual scores of every system, per metric.
    let stats_of = |hyps: &[String]| -> Vec<significance::SystemStats> {
        let seg = Segments {
            hyps: hyps.to_vec(),
            refs: refs.to_vec(),
        };
        metrics
            .iter()
            .map(|m| significance::system_stats(m, &seg))
            .collect()
    };
    let bl = stats_of(&systems[0].1);
    let others: Vec<_> = systems[1..]
        .iter()
        .map(|(_, hyps)| stats_of(hyps))
        .collect();
    let (bl_ci, paired) = if bs {
        let (ci, r) = significance::paired_bootstrap(metrics, &bl, &others, n, seed);
        (ci.into_iter().map(Some).collect(), r)
    } else {
        let r = significance::paired_randomization(metrics, &bl, &others, n, seed);
        (vec![None; metrics.len()], r)
    };
    let mut results: Vec<Vec<PairedResult>> = vec![bl
        .iter()
        .zip(bl_ci)
        .map(|((_, score), ci): (_, Option<(f64, f64)>)| PairedResult {
            score: *score,
            p_value: None,
            mean: ci.map(|c| c.0),
            ci: ci.map(|c| c.1),
        })
        .collect()];
    results.extend(paired);
    results
}

fn print_paired_json(
    metrics: &[Metric],
    systems: &[System],
    results: &[Vec<PairedResult>],
) -> std::io::Result<()> {
    let opt = |x: Option<f64>| x.map_or("null".to_string(), py_float_repr);
    let out: Vec<String> = systems
            .iter()
            .zip(results)
            .map(|((name, _), rs)| {
                let mut fields = vec![format!("        \"system\": {}", py_json_str(name))];
                for (m, r) in metrics.iter().zip(rs) {
                    fields.push(format!(
                        "        {}: {{\n            \"score\": {},\n            \"p_value\": {},\n            \"mean\": {},\n            \"ci\": {}\n        }}",
                        py_json_str(&m.name()),
                        py_float_repr(r.score),
                        opt(r.p_value),
                        opt(r.mean),
                        opt(r.ci)
                    ));
                }
                format!("    {{\n{}\n    }}", fields.join(",\n"))
            })
            .collect();
    say!("[\n{}\n]", out.join(",\n"));
    Ok(())
}

/// The paired results as sacreBLEU's table, then its explanation and the signatures.
fn print_paired_table(
    a: &EvalArgs,
    metrics: &[Metric],
    systems: &[System],
    results: &[Vec<PairedResult>],
    nrefs: usize,
    n: usize,
    seed: &Seed,
) -> std::io::Result<()> {
    let bs = a.paired_bs;
    let w = a.width;
    let mut headers = vec!["System".to_string()];
    for m in metrics {
        headers.push(if bs {
            format!("{} (μ ± 95% CI)", m.name())
        } else {
            m.name()
        });
    }
    let rows: Vec<Vec<String>> = systems
        .iter()
        .zip(results)
        .map(|((name, _), rs)| {
            let mut row = vec![name.clone()];
            for r in rs {
                let mut c = fmt_fixed(r.score, w);
                if let (Some(mean), Some(ci)) = (r.mean, r.ci) {
                    c.push_str(&format!(" ({} ± {})", fmt_fixed(mean, w), fmt_fixed(ci, w)));
                }
                if let Some(p) = r.p_value {
                    c.push_str(&format!("\n(p = {})", fmt_fixed(p, 4)));
                    if p <= 0.05 {
                        c.push('*');
                    }
                }
                row.push(c);
            }
            row
        })
        .collect();
    say!("{}", fancy_grid(&headers, &rows));
    say!();
    let (test, trials, kind) = if bs {
        ("bootstrap resampling", a.paired_bs_n, "resampling trials")
    } else {
        ("approximate randomization", a.paired_ar_n, "trials")
    };
    let msg = format!("Paired {test} test with {trials} {kind}");
    let rule = "-".repeat(msg.chars().count());
    say!("{rule}\n{msg}\n{rule}");
    // sacreBLEU names the baseline only when it carries the `Baseline:` prefix (files, not stdin).
    let baseline = if systems[0].0.starts_with("Baseline:") {
        systems[0].0.as_str()
    } else {
        ""
    };
    say!(" - Each system is pairwise compared to {baseline}.");
    if bs {
        say!("   Actual system score / bootstrap estimated true mean / 95% CI are provided for each metric.");
    } else {
        say!("   Actual system score is provided for each metric.");
    }
    say!();
    std::io::Write::write_all(&mut std::io::stdout(), PAIRED_EXPLANATION.as_bytes())?;
    print_signatures(
        metrics,
        nrefs,
        a.short,
        Some((if bs { "bs" } else { "ar" }, n, seed.normalized())),
    )?;
    Ok(())
}

const PAIRED_EXPLANATION: &str =
    " - Null hypothesis: the system and the baseline translations are essentially
   generated by the same underlying process. For a given system and the baseline,
   the p-value is roughly the probability of the absolute score difference (delta)
   or higher occurring due to chance, under the assumption that the null hypothesis is correct.

 - Assuming a significance threshold of 0.05, the null hypothesis can be rejected
   for p-values < 0.05 (marked with \"*\"). This means that the delta is unlikely to be attributed
   to chance, hence the system is significantly \"different\" than the baseline.
   Otherwise, the p-values are highlighted in red.

 - NOTE: Significance does not tell whether a system is \"better\" than the baseline but rather
   emphasizes the \"difference\" of the systems in terms of the replicability of the delta.

";
