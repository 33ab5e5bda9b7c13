//! `gnmt eval`: sacreBLEU's command line over gnmt-bleu.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use gnmt_bleu::text::py_rstrip;
use gnmt_bleu::{
    Bleu, BleuConfig, Chrf, ChrfConfig, Metric, Segments, Smooth, Ter, TercomOptions, Tokenizer,
};

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
];

/// Rewrites sacreBLEU's single-dash long flags (`-tok 13a`) into the double-dash form clap
/// parses, so that `sacrebleu` can be swapped for `gnmt eval` in a script. Only after `eval`.
pub fn translate_sacrebleu_flags(args: Vec<OsString>) -> Vec<OsString> {
    let Some(pos) = args.iter().position(|a| a == "eval") else {
        return args;
    };
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

/// Options as sacreBLEU 2.6.0 has them (single-dash long forms such as `-tok` work too).
#[derive(Args, Debug)]
#[command(after_help = "Example: gnmt eval ref.de -i hyp.de -m bleu chrf ter -f text")]
pub struct EvalArgs {
    /// Reference files (before -i). With -nr N, one file with N tab-separated references a line.
    refs: Vec<PathBuf>,
    /// Hypothesis files, one per system; without it, hypotheses come from stdin (tab-separated columns = systems).
    #[arg(short = 'i', long = "input", num_args = 1..)]
    input: Option<Vec<PathBuf>>,
    /// Number of tab-separated references in the single reference file [-nr].
    #[arg(long = "num-refs", default_value_t = 1)]
    num_refs: usize,
    /// Metrics to compute.
    #[arg(short = 'm', long = "metrics", num_args = 1.., default_values_t = vec!["bleu".to_string()], value_parser = ["bleu", "chrf", "ter"])]
    metrics: Vec<String>,
    /// BLEU smoothing method.
    #[arg(short = 's', long = "smooth-method", default_value = "exp", value_parser = ["none", "floor", "add-k", "exp"])]
    smooth_method: String,
    /// BLEU smoothing value (floor: 0.1, add-k: 1) [-sv].
    #[arg(long = "smooth-value")]
    smooth_value: Option<f64>,
    /// BLEU tokenizer [-tok].
    #[arg(long = "tokenize", default_value = "13a", value_parser = ["none", "zh", "13a", "intl", "char"])]
    tokenize: String,
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
    /// Bootstrap confidence intervals [-ci] (not yet supported by gnmt-bleu).
    #[arg(long = "confidence")]
    confidence: bool,
    /// Bootstrap samples [-cin].
    #[arg(long = "confidence-n", default_value_t = 1000)]
    confidence_n: usize,
    /// Paired approximate randomization test [-par] (not yet supported by gnmt-bleu).
    #[arg(long = "paired-ar", conflicts_with = "paired_bs")]
    paired_ar: bool,
    /// Paired bootstrap resampling test [-pbs] (not yet supported by gnmt-bleu).
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
    #[arg(short = 'f', long = "format", value_parser = ["json", "text"])]
    format: Option<String>,
    /// Score each sentence [-sl].
    #[arg(long = "sentence-level")]
    sentence_level: bool,
    /// No colours [-nc] (gnmt eval prints none).
    #[arg(long = "no-color")]
    no_color: bool,
}

fn read_text_lines(path: &Path) -> Result<Vec<String>> {
    let lines = gnmt_data::text::read_lines(path)?;
    Ok(lines
        .into_iter()
        .map(|l| py_rstrip(&l).to_string())
        .collect())
}

fn build_metrics(a: &EvalArgs, sentence_level: bool) -> Result<Vec<Metric>> {
    let mut ms = Vec::new();
    for m in &a.metrics {
        let metric = match m.as_str() {
            "bleu" => Metric::Bleu(Bleu::new(BleuConfig {
                lowercase: a.lowercase,
                tokenizer: Tokenizer::from_name(&a.tokenize)?,
                smooth: Smooth::from_name(&a.smooth_method, a.smooth_value)?,
                max_ngram_order: 4,
                effective_order: sentence_level,
            })),
            "chrf" => Metric::Chrf(Chrf::new(ChrfConfig {
                char_order: a.chrf_char_order,
                word_order: a.chrf_word_order,
                beta: a.chrf_beta,
                lowercase: a.chrf_lowercase,
                whitespace: a.chrf_whitespace,
                eps_smoothing: a.chrf_eps_smoothing,
            })),
            "ter" => Metric::Ter(Ter::new(TercomOptions {
                normalized: a.ter_normalized,
                no_punct: a.ter_no_punct,
                asian_support: a.ter_asian_support,
                case_sensitive: a.ter_case_sensitive,
            })),
            other => bail!("unknown metric `{other}`"),
        };
        if !ms.iter().any(|x: &Metric| x.key() == metric.key()) {
            ms.push(metric);
        }
    }
    ms.sort_by_key(|m| m.key());
    Ok(ms)
}

pub fn run(a: EvalArgs) -> Result<ExitCode> {
    if a.confidence || a.paired_ar || a.paired_bs {
        bail!("confidence intervals and paired significance tests (-ci, -pbs, -par) are not implemented in gnmt-bleu yet");
    }
    if a.sentence_level && a.metrics.len() > 1 {
        bail!("only one metric can be used in sentence-level mode (-sl)");
    }
    if a.refs.is_empty() {
        bail!("no reference files given: references come before -i/--input");
    }
    if a.num_refs != 1 && a.refs.len() > 1 {
        bail!("--num-refs/-nr takes one reference file with tab-separated references, not several files");
    }
    let format = match &a.format {
        Some(f) => f.clone(),
        None => match std::env::var("SACREBLEU_FORMAT").map(|v| v.to_lowercase()) {
            Ok(v) if v == "json" || v == "text" => v,
            _ => "json".into(),
        },
    };
    // References.
    let mut refs: Vec<Vec<String>> = Vec::new();
    if a.num_refs == 1 {
        for r in &a.refs {
            refs.push(
                read_text_lines(r)
                    .with_context(|| format!("reading references {}", r.display()))?,
            );
        }
    } else {
        refs = vec![Vec::new(); a.num_refs];
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
    }
    // Hypotheses.
    let mut systems: Vec<(String, Vec<String>)> = Vec::new();
    match &a.input {
        Some(files) => {
            for f in files {
                let name = f.display().to_string();
                if systems.iter().any(|(n, _)| *n == name) {
                    bail!("{name:?} already used to name a system");
                }
                let lines =
                    read_text_lines(f).with_context(|| format!("reading hypotheses {name}"))?;
                systems.push((name, lines));
            }
        }
        None => {
            let data = gnmt_data::text::read_lines(Path::new("-"))
                .context("reading hypotheses from stdin")?;
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
            systems = cols
                .into_iter()
                .enumerate()
                .map(|(i, c)| (format!("System {}", i + 1), c))
                .collect();
        }
    }
    for (name, hyps) in &systems {
        if hyps.is_empty() {
            bail!("{name}: no sentences to score");
        }
        for (k, r) in refs.iter().enumerate() {
            if r.len() != hyps.len() {
                let rname = if a.num_refs == 1 {
                    a.refs[k].display().to_string()
                } else {
                    a.refs[0].display().to_string()
                };
                bail!(
                    "{name} has {} lines but {rname} has {}: system and reference streams must have the same length",
                    hyps.len(),
                    r.len()
                );
            }
        }
    }
    let metrics = build_metrics(&a, a.sentence_level)?;
    let short = a.short;
    if a.sentence_level {
        if systems.len() > 1 {
            bail!("only one system can be evaluated in sentence-level mode (-sl)");
        }
        let m = &metrics[0];
        let mut out = String::new();
        for (i, h) in systems[0].1.iter().enumerate() {
            let rs: Vec<&str> = refs.iter().map(|r| r[i].as_str()).collect();
            out.push_str(
                &m.sentence_score(h, &rs, short)
                    .format_text(a.width, a.score_only),
            );
            out.push('\n');
        }
        print!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    if systems.len() == 1 {
        let seg = Segments {
            hyps: systems.pop().map(|s| s.1).unwrap_or_default(),
            refs,
        };
        let mut results = Vec::new();
        for m in &metrics {
            let s = m.corpus_score(&seg, short && format != "json")?;
            results.push(if a.score_only {
                s.format_text(a.width, true)
            } else if format == "json" {
                s.format_json(a.width)
            } else {
                s.format_text(a.width, false)
            });
        }
        print_single(&results, &format);
    } else {
        print_multi(&a, &metrics, systems, refs, &format)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_single(results: &[String], format: &str) {
    if format == "json" {
        if results.len() > 1 {
            println!("[\n{}\n]", results.join(",\n"));
        } else if let Some(r) = results.first() {
            println!("{r}");
        }
        return;
    }
    if results.len() == 1 {
        println!("{}", results[0]);
        return;
    }
    // Align the lines on " = " as sacreBLEU does.
    let mut lens = Vec::new();
    for line in results {
        match line.find('=') {
            Some(i) => lens.push(i as isize - 1),
            None => println!("{line}"),
        }
    }
    if let Some(&w) = lens.iter().max() {
        for (l, line) in lens.iter().zip(results.iter().filter(|l| l.contains('='))) {
            // Python slicing with a negative index counts from the end; `=` is never first here.
            let cut = (*l).max(0) as usize;
            let (left, right) = line.split_at(cut);
            let pad = (w as usize).saturating_sub(left.chars().count());
            println!("{}{left}{right}", " ".repeat(pad));
        }
    }
}

/// Several systems without a paired test: sacreBLEU's JSON list (the text table is not built yet).
fn print_multi(
    a: &EvalArgs,
    metrics: &[Metric],
    systems: Vec<(String, Vec<String>)>,
    refs: Vec<Vec<String>>,
    format: &str,
) -> Result<()> {
    if format != "json" {
        bail!("the text table for several systems is not implemented yet; use -f json");
    }
    let mut out = Vec::new();
    for (name, hyps) in systems {
        let seg = Segments {
            hyps,
            refs: refs.clone(),
        };
        let mut fields = vec![format!(
            "        \"system\": {}",
            gnmt_bleu::text::py_json_str(&name)
        )];
        for m in metrics {
            let s = m.corpus_score(&seg, a.short)?;
            fields.push(format!(
                "        {}: {}",
                gnmt_bleu::text::py_json_str(&s.name),
                gnmt_bleu::text::py_json_str(&s.format_text(a.width, true))
            ));
        }
        out.push(format!("    {{\n{}\n    }}", fields.join(",\n")));
    }
    println!("[\n{}\n]", out.join(",\n"));
    Ok(())
}
