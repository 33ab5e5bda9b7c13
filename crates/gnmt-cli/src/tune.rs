//! `gnmt tune`: a grid over beam width, length normalization (alpha), coverage penalty (beta)
//! and the output length limit (max_len_a * source length + max_len_b) scored by BLEU on
//! validation data; the best settings are written beside the model
//! (`search.json`), where `gnmt translate` and `gnmt serve` start from them. An ensemble
//! (`--model a b c`) is tuned as it translates; its settings go beside its first model.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use gnmt_translate::{SearchConfig, SearchSettings, TunedSearch, TUNED_FILE};

use crate::precision::{validation_translations, Models};

#[derive(Args, Debug)]
pub struct TuneArgs {
    /// The model or the ensemble (the first model's search.json receives the chosen settings).
    #[command(flatten)]
    models: crate::models::ModelArgs,
    /// The validation data.
    #[command(flatten)]
    data: crate::precision::ValidationArgs,
    /// Beam widths to try.
    #[arg(long, value_delimiter = ',', default_value = "1,3,5,8")]
    beams: Vec<usize>,
    /// Length normalization exponents to try.
    #[arg(long, value_delimiter = ',', default_value = "0,0.4,0.6,0.8,1.0,1.5")]
    alphas: Vec<f64>,
    /// Coverage penalty weights to try.
    #[arg(long, value_delimiter = ',', default_value = "0,0.1,0.2,0.4")]
    betas: Vec<f64>,
    /// Output length limits to try: values of max_len_a (the limit is max_len_a * source
    /// length + max_len_b).
    #[arg(long, value_delimiter = ',', default_value = "1.5")]
    max_len_as: Vec<f64>,
    /// Values of max_len_b to try.
    #[arg(long, value_delimiter = ',', default_value = "10")]
    max_len_bs: Vec<usize>,
    /// A point replaces the defaults only when it beats them with a paired bootstrap p-value
    /// (1000 resamples of the validation sentences) below this: on a thousand sentences a few
    /// tenths of BLEU are noise, and settings chosen on noise lose on other text. 1 takes the
    /// best point whatever its p-value.
    #[arg(long, default_value_t = 0.05)]
    p_value: f64,
    /// Print the table only; leave search.json as it is.
    #[arg(long)]
    dry_run: bool,
    /// cpu, cuda or cuda:N: where the grid's translations run.
    #[arg(long, default_value = "cpu")]
    device: gnmt_model::DeviceSpec,
    /// CPU threads for libtorch.
    #[arg(long)]
    threads: Option<i32>,
}

/// One point of the grid and its validation BLEU.
#[derive(Debug, Clone, Copy)]
struct Point {
    s: SearchSettings,
    bleu: f64,
}

pub fn run(a: TuneArgs) -> Result<ExitCode> {
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    check_grid(&a)?;
    let device = a.device.0;
    let dirs = a.models.open(device)?;
    let weights = a.models.weights()?;
    let first = dirs
        .first()
        .ok_or_else(|| anyhow::anyhow!("--model: no model given"))?;
    let models = Models {
        first: &first.model,
        ensemble: crate::models::ensemble_of(&dirs, &weights),
        tokenizer: &first.tokenizer,
        device,
    };
    let (sources, refs) = a.data.read()?;
    let translate = |cfg: SearchConfig| validation_translations(&models, cfg, &sources);
    let defaults = SearchConfig::default();
    let default_hyps = translate(defaults.clone())?;
    let default_bleu = a.data.score(default_hyps.clone(), &refs)?;
    println!(
        "defaults (beam {}, alpha {}, beta {}): BLEU {default_bleu:.2} on {} lines of {}{}",
        defaults.beam,
        defaults.alpha,
        defaults.beta,
        sources.len(),
        a.data.src.display(),
        match dirs.len() {
            1 => String::new(),
            n => format!(", an ensemble of {n}: {}", a.models.describe()),
        }
    );
    let (grid, hyps) = measure(points(&a), |cfg| {
        let h = translate(cfg)?;
        let bleu = a.data.score(h.clone(), &refs)?;
        Ok((h, bleu))
    })?;
    let best = best_point(&grid).ok_or_else(|| anyhow::anyhow!("an empty grid"))?;
    print_table(&grid, best);
    let best_hyps = grid
        .iter()
        .position(|p| p.s == best.s)
        .and_then(|i| hyps.get(i))
        .ok_or_else(|| anyhow::anyhow!("the best point has no translations"))?;
    let metric = gnmt_bleu::Metric::Bleu(gnmt_bleu::Bleu::default());
    let p_value =
        gnmt_bleu::significance::paired_bootstrap_p(&metric, &default_hyps, best_hyps, &refs, 1000);
    // --p-value 1 takes the grid's best whatever it scores against the defaults.
    let significant = a.p_value >= 1.0 || (best.bleu > default_bleu && p_value < a.p_value);
    let chosen = match significant {
        true => best,
        false => Point {
            s: SearchSettings::of(&defaults),
            bleu: default_bleu,
        },
    };
    let tuned = TunedSearch {
        beam: chosen.s.beam,
        alpha: chosen.s.alpha,
        beta: chosen.s.beta,
        max_len_a: chosen.s.max_len_a,
        max_len_b: chosen.s.max_len_b,
        bleu: chosen.bleu,
        default_bleu,
        p_value: Some(p_value),
        source: a.data.src.display().to_string(),
        sentences: sources.len(),
        ensemble: a
            .models
            .model
            .iter()
            .skip(1)
            .map(|p| p.display().to_string())
            .collect(),
    };
    println!(
        "best: beam {}, alpha {}, beta {}, length limit {} * source + {}: BLEU {:.2} ({:+.2} over \
         the defaults, paired bootstrap p = {p_value:.4}){}",
        best.s.beam,
        best.s.alpha,
        best.s.beta,
        best.s.max_len_a,
        best.s.max_len_b,
        best.bleu,
        best.bleu - default_bleu,
        match significant {
            true => String::new(),
            false => format!(
                "; not better than the defaults with p < {}: the defaults are kept",
                a.p_value
            ),
        }
    );
    record(&a, &tuned)?;
    Ok(ExitCode::SUCCESS)
}

/// Each point's validation translations and BLEU (`score` translates and scores a search).
fn measure(
    mut grid: Vec<Point>,
    score: impl Fn(SearchConfig) -> Result<(Vec<String>, f64)>,
) -> Result<(Vec<Point>, Vec<Vec<String>>)> {
    let defaults = SearchConfig::default();
    let mut hyps = Vec::with_capacity(grid.len());
    for p in &mut grid {
        let (h, bleu) = score(p.s.apply(defaults.clone()))?;
        p.bleu = bleu;
        hyps.push(h);
        let s = p.s;
        tracing::info!(
            "beam {} alpha {} beta {} length {} * source + {}: BLEU {bleu:.2}",
            s.beam,
            s.alpha,
            s.beta,
            s.max_len_a,
            s.max_len_b,
        );
    }
    Ok((grid, hyps))
}

/// Writes `tuned` to the model's search.json (unless --dry-run), saying what translate will use.
fn record(a: &TuneArgs, tuned: &TunedSearch) -> Result<()> {
    let path = a.models.first().join(TUNED_FILE);
    if a.dry_run {
        println!("--dry-run: {} left as it was", path.display());
        return Ok(());
    }
    gnmt_io::write_file(&path, serde_json::to_string_pretty(tuned)? + "\n")?;
    println!(
        "written to {}: gnmt translate and gnmt serve start from beam {}, alpha {}, beta {}, \
         length limit {} * source + {}",
        path.display(),
        tuned.beam,
        tuned.alpha,
        tuned.beta,
        tuned.max_len_a,
        tuned.max_len_b
    );
    Ok(())
}

/// The grid, every combination once, BLEU still to be measured.
fn points(a: &TuneArgs) -> Vec<Point> {
    let mut grid = Vec::new();
    for &beam in &a.beams {
        for &alpha in &a.alphas {
            for &beta in &a.betas {
                for &max_len_a in &a.max_len_as {
                    for &max_len_b in &a.max_len_bs {
                        let s = SearchSettings {
                            beam,
                            alpha,
                            beta,
                            max_len_a,
                            max_len_b,
                        };
                        grid.push(Point { s, bleu: f64::NAN });
                    }
                }
            }
        }
    }
    grid
}

/// Every value of the grid must be a setting.
fn check_grid(a: &TuneArgs) -> Result<()> {
    if a.beams.is_empty()
        || a.alphas.is_empty()
        || a.betas.is_empty()
        || a.max_len_as.is_empty()
        || a.max_len_bs.is_empty()
    {
        bail!("--beams, --alphas, --betas, --max-len-as and --max-len-bs each need at least one value");
    }
    if let Some(b) = a.beams.iter().find(|&&b| b == 0 || b > 64) {
        bail!("--beams: {b} is not a beam width from 1 to 64");
    }
    for (flag, values) in [("--alphas", &a.alphas), ("--betas", &a.betas)] {
        if let Some(v) = values
            .iter()
            .find(|v| !(v.is_finite() && (0.0..=10.0).contains(*v)))
        {
            bail!("{flag}: {v} is not a weight from 0 to 10");
        }
    }
    if let Some(v) = a
        .max_len_as
        .iter()
        .find(|v| !(v.is_finite() && (0.0..=10.0).contains(*v)))
    {
        bail!("--max-len-as: {v} is not a length ratio from 0 to 10");
    }
    if a.max_len_as.contains(&0.0) && a.max_len_bs.contains(&0) {
        bail!("--max-len-as 0 with --max-len-bs 0 allows no output at all");
    }
    if !(0.0..=1.0).contains(&a.p_value) {
        bail!("--p-value: {} is not a probability from 0 to 1", a.p_value);
    }
    Ok(())
}

/// The best BLEU; among equals (to 0.01), the narrowest beam (the fastest), then the grid's
/// order.
fn best_point(grid: &[Point]) -> Option<Point> {
    let top = grid
        .iter()
        .map(|p| p.bleu)
        .fold(f64::NEG_INFINITY, f64::max);
    grid.iter()
        .filter(|p| p.bleu >= top - 0.005)
        .min_by_key(|p| p.s.beam)
        .copied()
}

fn print_table(grid: &[Point], best: Point) {
    println!("| beam | alpha | beta | max_len_a | max_len_b | BLEU |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for p in grid {
        let mark = if p.s == best.s { " (best)" } else { "" };
        println!(
            "| {} | {} | {} | {} | {} | {:.2}{mark} |",
            p.s.beam, p.s.alpha, p.s.beta, p.s.max_len_a, p.s.max_len_b, p.bleu
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_point_prefers_the_narrowest_beam_among_equals() {
        let p = |beam, alpha, bleu| Point {
            s: SearchSettings {
                beam,
                alpha,
                beta: 0.0,
                max_len_a: 1.5,
                max_len_b: 10,
            },
            bleu,
        };
        let grid = [
            p(8, 0.6, 30.0),
            p(5, 1.0, 30.001),
            p(3, 0.2, 29.0),
            p(12, 0.6, 29.5),
        ];
        let b = best_point(&grid).unwrap();
        assert_eq!((b.s.beam, b.s.alpha), (5, 1.0));
        assert!(best_point(&[]).is_none());
    }
}
