//! `gnmt quantize`: an int8 model directory from a float32 one. Every large matrix quantized
//! per row (what `--precision int8` does at load time), saved as `model-int8.safetensors`
//! beside the same config, vocabulary and tuned search settings: about a quarter of the
//! float32 model's size on disk and in memory, and the same translations as the float32 model
//! at `--precision int8`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use gnmt_model::INT8_FILE;
use gnmt_translate::{ModelDir, TUNED_FILE};

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// The float32 model directory.
    #[arg(short, long)]
    model: PathBuf,
    /// The int8 model directory to write (a new directory, or an earlier int8 model's).
    #[arg(short, long)]
    out: PathBuf,
}

pub fn run(a: QuantizeArgs) -> Result<ExitCode> {
    check_out(&a)?;
    let dir = ModelDir::open(&a.model, tch::Device::Cpu)?;
    if dir.model.is_int8() {
        bail!("{}: the model is int8 already", a.model.display());
    }
    let copied = ["config.json", "tokenizer.json", TUNED_FILE];
    gnmt_io::write_dir(
        &a.out,
        |tmp| -> Result<()> {
            for file in copied {
                let from = a.model.join(file);
                if from.exists() {
                    std::fs::copy(&from, tmp.join(file))
                        .with_context(|| format!("copying {}", from.display()))?;
                }
            }
            dir.model.save_int8(&dir.vs, &tmp.join(INT8_FILE))?;
            Ok(())
        },
        |e| anyhow::Error::new(e).context(format!("writing {}", a.out.display())),
    )?;
    let bytes = |p: PathBuf| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let (before, after) = (
        bytes(a.model.join("model.safetensors")),
        bytes(a.out.join(INT8_FILE)),
    );
    tracing::info!(
        "wrote {} ({:.1} MB, {:.0}% of the float32 weights' {:.1} MB)",
        a.out.join(INT8_FILE).display(),
        after as f64 / 1e6,
        100.0 * after as f64 / before.max(1) as f64,
        before as f64 / 1e6
    );
    Ok(ExitCode::SUCCESS)
}

/// The output must be a new directory or an int8 model's: replacing it never deletes a
/// user's other files, nor the model being read.
fn check_out(a: &QuantizeArgs) -> Result<()> {
    let same = match (a.model.canonicalize(), a.out.canonicalize()) {
        (Ok(m), Ok(o)) => m == o,
        _ => false,
    };
    if same {
        bail!(
            "--out {}: that is the model being quantized",
            a.out.display()
        );
    }
    if a.out.exists() && !a.out.join(INT8_FILE).exists() {
        bail!(
            "--out {}: exists and is not an int8 model directory (give a new directory)",
            a.out.display()
        );
    }
    Ok(())
}
