//! `gnmt plot`: training curves of one or several runs from their `metrics.jsonl`, drawn with
//! plotters to PNG and SVG. Several runs are overlaid in each chart, which is what comparisons
//! such as the residual-connection study need.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use plotters::coord::Shift;
use plotters::prelude::*;

#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Run directories (each holds metrics.jsonl), or metrics.jsonl files.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Names for the runs in the legends, comma-separated (default: the directory names).
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// Output directory (default: the first run's `plots/`).
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Chart width and height in pixels.
    #[arg(long, default_value = "900x560", value_parser = parse_size)]
    size: (u32, u32),
}

fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once('x')
        .ok_or_else(|| format!("`{s}`: expected WIDTHxHEIGHT"))?;
    let p = |v: &str| v.parse::<u32>().map_err(|e| format!("`{s}`: {e}"));
    Ok((p(w)?, p(h)?))
}

/// What one run's metrics.jsonl holds, as series over steps.
#[derive(Debug, Default)]
pub struct RunMetrics {
    pub loss: Vec<(f64, f64)>,
    pub lr: Vec<(f64, f64)>,
    pub valid_loss: Vec<(f64, f64)>,
    pub valid_bleu: Vec<(f64, f64)>,
    pub layer_grad_norms: BTreeMap<String, Vec<(f64, f64)>>,
}

/// Reads a metrics.jsonl, naming the line of anything unreadable.
pub fn read_metrics(path: &Path) -> Result<RunMetrics> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    let mut m = RunMetrics::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a JSON object", path.display(), i + 1))?;
        let Some(step) = v.get("step").and_then(|s| s.as_f64()) else {
            bail!("{}:{}: no `step`", path.display(), i + 1);
        };
        let push = |key: &str, series: &mut Vec<(f64, f64)>| {
            if let Some(x) = v.get(key).and_then(|x| x.as_f64()) {
                if x.is_finite() {
                    series.push((step, x));
                }
            }
        };
        push("loss", &mut m.loss);
        push("lr", &mut m.lr);
        push("valid_loss", &mut m.valid_loss);
        push("valid_bleu", &mut m.valid_bleu);
        if let Some(obj) = v.get("layer_grad_norms").and_then(|x| x.as_object()) {
            for (k, x) in obj {
                if let Some(x) = x.as_f64().filter(|x| x.is_finite() && *x > 0.0) {
                    m.layer_grad_norms
                        .entry(k.clone())
                        .or_default()
                        .push((step, x));
                }
            }
        }
    }
    if m.loss.is_empty() && m.valid_loss.is_empty() {
        bail!("{}: no training metrics in it", path.display());
    }
    Ok(m)
}

/// `encoder.layers.3` -> (0, 3); the embedding, attention and classifier go to the ends.
/// Whether a gradient-norm key is an LSTM layer (the bottom encoder directions included).
fn is_layer(name: &str) -> bool {
    name.contains(".layers.") || name.starts_with("encoder.bottom")
}

fn layer_order(name: &str) -> (u8, i64, String) {
    let parts: Vec<&str> = name.split('.').collect();
    let side = if name.starts_with("encoder") { 0 } else { 1 };
    match parts.as_slice() {
        [_, "layers", n, ..] => (side, n.parse().unwrap_or(0), name.to_string()),
        ["encoder", b, ..] if b.starts_with("bottom") => (side, 0, name.to_string()),
        _ if name.contains("embedding") => (side, -1, name.to_string()),
        _ => (side, 1000, name.to_string()),
    }
}

/// A short name for a layer in legends and axes: `enc 3`, `dec 0`, `decoder.attention`.
fn layer_label(name: &str) -> String {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        [side, "layers", n] => format!("{} {n}", &side[..3]),
        ["encoder", "bottom_fwd"] => "enc 0 fwd".into(),
        ["encoder", "bottom_bwd"] => "enc 0 bwd".into(),
        _ => name.to_string(),
    }
}

/// One line chart: named series of (x, y) points.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

fn bounds(series: &[(String, Vec<(f64, f64)>)]) -> Option<((f64, f64), (f64, f64))> {
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return None;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    Some(((x0, x1.max(x0 + 1.0)), (y0 - pad, y1 + pad)))
}

fn draw<DB: DrawingBackend>(area: DrawingArea<DB, Shift>, chart: &Chart) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    area.fill(&WHITE).map_err(e)?;
    let Some(((x0, x1), (y0, y1))) = bounds(&chart.series) else {
        return Ok(());
    };
    let mut c = ChartBuilder::on(&area)
        .caption(chart.title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;
    c.configure_mesh()
        .x_desc(chart.x_label)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc(chart.y_label)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(e)?;
    for (i, (name, pts)) in chart.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        c.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(e)?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
    }
    if chart.series.len() > 1 {
        c.configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(e)?;
    }
    area.present().map_err(e)
}

/// Writes `stem.png` and `stem.svg` in `dir`.
pub fn save_chart(dir: &Path, stem: &str, size: (u32, u32), chart: &Chart) -> Result<()> {
    let png = dir.join(format!("{stem}.png"));
    draw(BitMapBackend::new(&png, size).into_drawing_area(), chart)
        .map_err(|e| anyhow::anyhow!("{}: {e}", png.display()))?;
    let svg = dir.join(format!("{stem}.svg"));
    draw(SVGBackend::new(&svg, size).into_drawing_area(), chart)
        .map_err(|e| anyhow::anyhow!("{}: {e}", svg.display()))?;
    Ok(())
}

/// Plotters draws text with a font we register ourselves, so plots look the same everywhere and
/// need no system fonts.
fn register_font() {
    static FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");
    // Only fails for an unparsable font, which the test of this module would catch.
    let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
}

/// Moving average over `w` points, so noisy training losses read as curves.
fn smooth(pts: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    if w <= 1 {
        return pts.to_vec();
    }
    (0..pts.len())
        .map(|i| {
            let lo = i.saturating_sub(w - 1);
            let n = (i - lo + 1) as f64;
            (pts[i].0, pts[lo..=i].iter().map(|p| p.1).sum::<f64>() / n)
        })
        .collect()
}

/// Draws every chart for `runs` (label, metrics) into `out`; returns the files' stems.
pub fn plot_runs(
    runs: &[(String, RunMetrics)],
    out: &Path,
    size: (u32, u32),
) -> Result<Vec<String>> {
    register_font();
    std::fs::create_dir_all(out).with_context(|| format!("{}", out.display()))?;
    let mut written = plot_metric_charts(runs, out, size)?;
    written.extend(plot_grad_norms_per_run(runs, out, size)?);
    written.extend(plot_grad_norm_by_layer(runs, out, size)?);
    Ok(written)
}

/// Loss, validation loss and BLEU, learning rate: one chart each, every run a series.
fn plot_metric_charts(
    runs: &[(String, RunMetrics)],
    out: &Path,
    size: (u32, u32),
) -> Result<Vec<String>> {
    let mut written = Vec::new();
    let per_run = |f: &dyn Fn(&RunMetrics) -> Vec<(f64, f64)>| -> Vec<(String, Vec<(f64, f64)>)> {
        runs.iter()
            .map(|(l, m)| (l.clone(), f(m)))
            .filter(|s| !s.1.is_empty())
            .collect()
    };
    let charts = [
        (
            "loss",
            "Training loss (label-smoothed, moving average of 10)",
            "loss",
            per_run(&|m| smooth(&m.loss, 10)),
        ),
        (
            "valid_loss",
            "Validation loss",
            "cross-entropy",
            per_run(&|m| m.valid_loss.clone()),
        ),
        (
            "valid_bleu",
            "Validation BLEU (greedy)",
            "BLEU",
            per_run(&|m| m.valid_bleu.clone()),
        ),
        (
            "lr",
            "Learning rate",
            "learning rate",
            per_run(&|m| m.lr.clone()),
        ),
    ];
    for (stem, title, y, series) in charts {
        if series.is_empty() {
            continue;
        }
        save_chart(
            out,
            stem,
            size,
            &Chart {
                title,
                x_label: "step",
                y_label: y,
                series,
            },
        )?;
        written.push(stem.to_string());
    }
    Ok(written)
}

/// Per-layer gradient norms over training, one chart per run.
fn plot_grad_norms_per_run(
    runs: &[(String, RunMetrics)],
    out: &Path,
    size: (u32, u32),
) -> Result<Vec<String>> {
    let mut written = Vec::new();
    for (label, m) in runs {
        if m.layer_grad_norms.is_empty() {
            continue;
        }
        let mut layers: Vec<&String> = m.layer_grad_norms.keys().collect();
        layers.sort_by_key(|k| layer_order(k));
        let series = layers
            .iter()
            .filter(|k| is_layer(k))
            .map(|k| {
                let pts = smooth(&m.layer_grad_norms[*k], 10);
                (
                    layer_label(k),
                    pts.iter().map(|&(x, y)| (x, y.log10())).collect(),
                )
            })
            .collect();
        let title = format!("Gradient norm per LSTM layer: {label}");
        let stem = if runs.len() == 1 {
            "grad_norms".to_string()
        } else {
            format!("grad_norms-{}", sanitize(label))
        };
        save_chart(
            out,
            &stem,
            size,
            &Chart {
                title: &title,
                x_label: "step",
                y_label: "log10 gradient norm",
                series,
            },
        )?;
        written.push(stem);
    }
    Ok(written)
}

/// Mean gradient norm by layer position, all runs together: where gradients fade.
fn plot_grad_norm_by_layer(
    runs: &[(String, RunMetrics)],
    out: &Path,
    size: (u32, u32),
) -> Result<Vec<String>> {
    let mut written = Vec::new();
    let by_layer: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .map(|(label, m)| {
            let mut layers: Vec<&String> =
                m.layer_grad_norms.keys().filter(|k| is_layer(k)).collect();
            layers.sort_by_key(|k| layer_order(k));
            let pts = layers
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let v = &m.layer_grad_norms[*k];
                    let mean = v.iter().map(|p| p.1.log10()).sum::<f64>() / v.len().max(1) as f64;
                    (i as f64, mean)
                })
                .collect();
            (label.clone(), pts)
        })
        .filter(|s: &(String, Vec<(f64, f64)>)| !s.1.is_empty())
        .collect();
    if !by_layer.is_empty() {
        save_chart(
            out,
            "grad_norm_by_layer",
            size,
            &Chart {
                title: "Mean gradient norm by layer (encoder bottom..top, then decoder)",
                x_label: "layer position",
                y_label: "mean log10 gradient norm",
                series: by_layer,
            },
        )?;
        written.push("grad_norm_by_layer".into());
    }
    Ok(written)
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub fn run(a: PlotArgs) -> Result<ExitCode> {
    if !a.labels.is_empty() && a.labels.len() != a.runs.len() {
        bail!(
            "--labels: {} labels for {} runs",
            a.labels.len(),
            a.runs.len()
        );
    }
    let mut runs = Vec::new();
    for (i, r) in a.runs.iter().enumerate() {
        let file = if r.is_dir() {
            r.join("metrics.jsonl")
        } else {
            r.clone()
        };
        let label = a.labels.get(i).cloned().unwrap_or_else(|| {
            let dir = if r.is_dir() {
                r.as_path()
            } else {
                r.parent().unwrap_or(r)
            };
            dir.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_else(|| format!("run {}", i + 1))
        });
        runs.push((label, read_metrics(&file)?));
    }
    let out = a.out.clone().unwrap_or_else(|| {
        let first = &a.runs[0];
        let dir = if first.is_dir() {
            first.clone()
        } else {
            first.parent().map(Path::to_path_buf).unwrap_or_default()
        };
        dir.join("plots")
    });
    let written = plot_runs(&runs, &out, a.size)?;
    for stem in &written {
        println!("{}", out.join(format!("{stem}.png")).display());
        println!("{}", out.join(format!("{stem}.svg")).display());
    }
    let table = out.join("summary.md");
    gnmt_io::write_file(&table, summary_table(&runs, SUMMARY_LAST_STEPS))
        .with_context(|| table.display().to_string())?;
    println!("{}", table.display());
    Ok(ExitCode::SUCCESS)
}

/// The training loss in `summary.md` is the mean over this many last steps.
const SUMMARY_LAST_STEPS: f64 = 50.0;

/// A markdown table, a row per run: the training loss (mean over the `last` steps), the last
/// validation loss, the best validation BLEU, and the mean gradient norm of the bottom and the
/// top LSTM layer of each stack (the encoder's bottom is its forward direction). The residual
/// study reads its results from it.
pub fn summary_table(runs: &[(String, RunMetrics)], last: f64) -> String {
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let mut out = String::from(
        "| run | train loss (last 50 steps) | valid loss | best valid BLEU | mean grad norm, encoder bottom / top layer | decoder bottom / top |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    if last != SUMMARY_LAST_STEPS {
        out = out.replace("last 50 steps", &format!("last {last} steps"));
    }
    for (label, m) in runs {
        let end = m.loss.last().map_or(0.0, |p| p.0);
        let tail: Vec<f64> = m
            .loss
            .iter()
            .filter(|p| p.0 > end - last)
            .map(|p| p.1)
            .collect();
        let norm = |name: Option<&String>| {
            let v: Vec<f64> = name
                .and_then(|n| m.layer_grad_norms.get(n))
                .map(|s| s.iter().map(|p| p.1).collect())
                .unwrap_or_default();
            mean(&v)
        };
        let stack = |side: &str| {
            let mut layers: Vec<&String> = m
                .layer_grad_norms
                .keys()
                .filter(|k| k.starts_with(side) && is_layer(k) && !k.ends_with("bwd"))
                .collect();
            layers.sort_by_key(|k| layer_order(k));
            format!(
                "{:.4} / {:.4}",
                norm(layers.first().copied()),
                norm(layers.last().copied())
            )
        };
        let valid_loss = m.valid_loss.last().map_or(f64::NAN, |p| p.1);
        let best_bleu = m.valid_bleu.iter().map(|p| p.1).fold(f64::NAN, f64::max);
        out.push_str(&format!(
            "| {label} | {:.3} | {valid_loss:.3} | {best_bleu:.2} | {} | {} |\n",
            mean(&tail),
            stack("encoder"),
            stack("decoder"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_every_chart_as_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = String::new();
        for s in 1..=30 {
            lines.push_str(&format!(
                "{{\"step\":{s},\"loss\":{},\"lr\":0.001,\"layer_grad_norms\":{{\"encoder.layers.0\":{},\"decoder.layers.1\":0.5,\"decoder.attention\":0.1}}}}\n",
                10.0 / s as f64,
                1.0 + s as f64
            ));
            if s % 10 == 0 {
                lines.push_str(&format!(
                    "{{\"step\":{s},\"valid_loss\":3.0,\"valid_bleu\":{s}.5}}\n"
                ));
            }
        }
        let f = dir.path().join("metrics.jsonl");
        std::fs::write(&f, lines).unwrap();
        let m = read_metrics(&f).unwrap();
        assert_eq!(m.loss.len(), 30);
        assert_eq!(m.valid_bleu, vec![(10.0, 10.5), (20.0, 20.5), (30.0, 30.5)]);
        assert_eq!(m.layer_grad_norms.len(), 3);
        let out = dir.path().join("plots");
        let written = plot_runs(
            &[("a".into(), m), ("b".into(), read_metrics(&f).unwrap())],
            &out,
            (400, 300),
        )
        .unwrap();
        assert!(
            written.contains(&"grad_norms-a".to_string())
                && written.contains(&"grad_norm_by_layer".to_string())
        );
        for stem in [
            "loss",
            "valid_loss",
            "valid_bleu",
            "lr",
            "grad_norms-a",
            "grad_norms-b",
            "grad_norm_by_layer",
        ] {
            let png = std::fs::read(out.join(format!("{stem}.png"))).unwrap();
            assert_eq!(&png[1..4], b"PNG", "{stem}.png");
            let svg = std::fs::read_to_string(out.join(format!("{stem}.svg"))).unwrap();
            assert!(
                svg.contains("<svg") && svg.contains("<text"),
                "{stem}.svg has no text"
            );
        }
        let svg = std::fs::read_to_string(out.join("valid_bleu.svg")).unwrap();
        assert!(svg.contains("Validation BLEU"));
    }

    #[test]
    fn the_summary_table_has_a_row_of_numbers_per_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = String::new();
        for s in 1..=100 {
            // Loss 2 over the last 50 steps, 4 before; the encoder bottom's norm is 0.25
            // (forward) and 9 (backward, left out), the top's 2; the decoder's 0.5 and 1.
            let loss = if s > 50 { 2.0 } else { 4.0 };
            lines.push_str(&format!(
                "{{\"step\":{s},\"loss\":{loss},\"layer_grad_norms\":{{\"encoder.bottom_fwd\":0.25,\"encoder.bottom_bwd\":9,\"encoder.layers.1\":3,\"encoder.layers.3\":2,\"decoder.layers.0\":0.5,\"decoder.layers.3\":1,\"decoder.attention\":7}}}}\n"
            ));
        }
        lines.push_str("{\"step\":50,\"valid_loss\":3.5,\"valid_bleu\":12.25}\n");
        lines.push_str("{\"step\":100,\"valid_loss\":3.25,\"valid_bleu\":11.5}\n");
        let f = dir.path().join("metrics.jsonl");
        std::fs::write(&f, lines).unwrap();
        let t = summary_table(&[("res3".into(), read_metrics(&f).unwrap())], 50.0);
        let rows: Vec<&str> = t.lines().collect();
        assert_eq!(rows.len(), 3, "{t}");
        assert_eq!(
            rows[2],
            "| res3 | 2.000 | 3.250 | 12.25 | 0.2500 / 2.0000 | 0.5000 / 1.0000 |"
        );
    }

    #[test]
    fn bad_metrics_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("metrics.jsonl");
        std::fs::write(&f, "{\"step\":1,\"loss\":2}\nnot json\n").unwrap();
        let err = format!("{:#}", read_metrics(&f).unwrap_err());
        assert!(err.contains("metrics.jsonl:2"), "{err}");
    }
}
