//! `gnmt tune`: a grid over beam width, length normalization (alpha) and coverage penalty (beta)
//! scored by BLEU on validation data; the best settings are written beside the model
//! (`search.json`), where `gnmt translate` and `gnmt serve` start from them.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use gnmt_translate::{ModelDir, SearchConfig, TunedSearch, TUNED_FILE};

#[derive(Args, Debug)]
pub struct TuneArgs {
    /// The model (its search.json receives the chosen settings) and the validation data.
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
    /// Print the table only; leave search.json as it is.
    #[arg(long)]
    dry_run: bool,
    /// CPU threads for libtorch.
    #[arg(long)]
    threads: Option<i32>,
}

/// One point of the grid and its validation BLEU.
#[derive(Debug, Clone, Copy)]
struct Point {
    beam: usize,
    alpha: f64,
    beta: f64,
    bleu: f64,
}

pub fn run(a: TuneArgs) -> Result<ExitCode> {
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    check_grid(&a)?;
    let ModelDir {
        model, tokenizer, ..
    } = ModelDir::open(&a.data.model, tch::Device::Cpu)?;
    let (sources, refs) = a.data.read()?;
    let score = |cfg: SearchConfig| a.data.bleu(&model, &tokenizer, cfg, (&sources, &refs));
    let defaults = SearchConfig::default();
    let default_bleu = score(defaults.clone())?;
    println!(
        "defaults (beam {}, alpha {}, beta {}): BLEU {default_bleu:.2} on {} lines of {}",
        defaults.beam,
        defaults.alpha,
        defaults.beta,
        sources.len(),
        a.data.src.display()
    );
    let mut grid = Vec::new();
    for &beam in &a.beams {
        for &alpha in &a.alphas {
            for &beta in &a.betas {
                let cfg = SearchConfig {
                    beam,
                    alpha,
                    beta,
                    ..defaults.clone()
                };
                let bleu = score(cfg)?;
                tracing::info!("beam {beam} alpha {alpha} beta {beta}: BLEU {bleu:.2}");
                grid.push(Point {
                    beam,
                    alpha,
                    beta,
                    bleu,
                });
            }
        }
    }
    let best = best_point(&grid).ok_or_else(|| anyhow::anyhow!("an empty grid"))?;
    print_table(&grid, best);
    let tuned = TunedSearch {
        beam: best.beam,
        alpha: best.alpha,
        beta: best.beta,
        bleu: best.bleu,
        default_bleu,
        source: a.data.src.display().to_string(),
        sentences: sources.len(),
    };
    let path = a.data.model.join(TUNED_FILE);
    if a.dry_run {
        println!("--dry-run: {} left as it was", path.display());
    } else {
        gnmt_io::write_file(&path, serde_json::to_string_pretty(&tuned)? + "\n")?;
        println!(
            "best: beam {}, alpha {}, beta {}: BLEU {:.2} ({:+.2} over the defaults); written to {}: \
             gnmt translate and gnmt serve start from it",
            best.beam,
            best.alpha,
            best.beta,
            best.bleu,
            best.bleu - default_bleu,
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Every value of the grid must be a setting.
fn check_grid(a: &TuneArgs) -> Result<()> {
    if a.beams.is_empty() || a.alphas.is_empty() || a.betas.is_empty() {
        bail!("--beams, --alphas and --betas each need at least one value");
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
        .min_by_key(|p| p.beam)
        .copied()
}

fn print_table(grid: &[Point], best: Point) {
    println!("| beam | alpha | beta | BLEU |");
    println!("| --- | --- | --- | --- |");
    for p in grid {
        let mark = if (p.beam, p.alpha, p.beta) == (best.beam, best.alpha, best.beta) {
            " (best)"
        } else {
            ""
        };
        println!(
            "| {} | {} | {} | {:.2}{mark} |",
            p.beam, p.alpha, p.beta, p.bleu
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_point_prefers_the_narrowest_beam_among_equals() {
        let p = |beam, alpha, bleu| Point {
            beam,
            alpha,
            beta: 0.0,
            bleu,
        };
        let grid = [
            p(8, 0.6, 30.0),
            p(5, 1.0, 30.001),
            p(3, 0.2, 29.0),
            p(12, 0.6, 29.5),
        ];
        let b = best_point(&grid).unwrap();
        assert_eq!((b.beam, b.alpha), (5, 1.0));
        assert!(best_point(&[]).is_none());
    }
}
