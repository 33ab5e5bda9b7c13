//! `--model A [--model B ...] [--weights ...]` of `gnmt translate` and `gnmt serve`: one model or
//! an ensemble, loaded on a device at one precision, the vocabularies checked to be one.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use gnmt_model::{CpuDecoder, Kernels};
use gnmt_translate::stream::Ensemble;
use gnmt_translate::{Member, ModelDir, Precision};

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model directory (config.json, tokenizer.json, model.safetensors: a run's final/, best/,
    /// a checkpoint, `gnmt average`'s output). Several (`--model a b`, `--model a --model b`,
    /// `--model run/checkpoints/step-*`) translate as one ensemble: each step scores with the
    /// weighted mean of the models' log-probabilities; they must share the vocabulary.
    #[arg(short, long, required = true, num_args = 1..)]
    pub model: Vec<PathBuf>,
    /// Ensemble weights, one per --model, comma-separated (default: equal).
    #[arg(long, value_delimiter = ',', requires = "model")]
    pub weights: Vec<f64>,
}

/// The loaded models (the first one's tokenizer and config rule) and the search kernels.
#[derive(Debug)]
pub struct Loaded {
    pub dirs: Vec<ModelDir>,
    pub precision: Precision,
    pub kernels: Kernels,
    pub weights: Vec<f64>,
}

impl ModelArgs {
    /// The first model directory (the one whose precision check and settings apply).
    pub fn first(&self) -> &PathBuf {
        &self.model[0]
    }

    /// A description for logs and resume records.
    pub fn describe(&self) -> String {
        let names: Vec<String> = self.model.iter().map(|p| p.display().to_string()).collect();
        match self.weights.is_empty() {
            true => names.join(" + "),
            false => format!("{} (weights {:?})", names.join(" + "), self.weights),
        }
    }

    /// Opens every model on `device` as saved, the vocabularies checked to be one.
    pub fn open(&self, device: tch::Device) -> Result<Vec<ModelDir>> {
        let mut dirs = Vec::with_capacity(self.model.len());
        for path in &self.model {
            let dir = ModelDir::open(path, device)?;
            if let Some(first) = dirs.first() {
                same_vocabulary(first, &dir)?;
            }
            dirs.push(dir);
        }
        Ok(dirs)
    }

    /// Opens every model on `device` at `precision` (or the first model's default).
    pub fn load(
        &self,
        precision: &crate::precision::PrecisionArgs,
        device: tch::Device,
    ) -> Result<Loaded> {
        let weights = self.weights()?;
        let mut dirs = self.open(device)?;
        let precision = match dirs.iter().find(|d| d.model.is_int8()) {
            Some(d) => precision.for_int8_model(&d.path)?,
            None => precision.resolve(self.first(), device)?,
        };
        let mut kernels = Kernels::Fused;
        for d in &mut dirs {
            kernels = crate::precision::cast_for(&mut d.vs, &d.model, precision, device)?;
        }
        if dirs.len() > 1 {
            tracing::info!("an ensemble of {} models: {}", dirs.len(), self.describe());
        }
        Ok(Loaded {
            dirs,
            precision,
            kernels,
            weights,
        })
    }

    /// The weights, checked: one per model, positive and finite.
    pub fn weights(&self) -> Result<Vec<f64>> {
        if self.weights.is_empty() {
            return Ok(vec![1.0; self.model.len()]);
        }
        if self.weights.len() != self.model.len() {
            bail!(
                "--weights: {} weights for {} models",
                self.weights.len(),
                self.model.len()
            );
        }
        if let Some(w) = self.weights.iter().find(|w| !(w.is_finite() && **w > 0.0)) {
            bail!("--weights: {w} is not a positive number");
        }
        Ok(self.weights.clone())
    }
}

/// Models of an ensemble must share the vocabulary: the same pieces mean the same ids.
fn same_vocabulary(a: &ModelDir, b: &ModelDir) -> Result<()> {
    if a.tokenizer.hash() != b.tokenizer.hash() {
        bail!(
            "{} and {} have different vocabularies (their tokenizer.json differ): an ensemble \
             needs models trained with one vocabulary",
            a.path.display(),
            b.path.display()
        );
    }
    Ok(())
}

impl Loaded {
    /// The ensemble after the first model, for an [`gnmt_translate::stream::Engine`].
    pub fn ensemble(&self) -> Ensemble<'_> {
        ensemble_of(&self.dirs, &self.weights)
    }

    /// Every model with its decoder packed for the CPU kernels (where they apply).
    pub fn members<'a>(&'a self, cpus: &'a [Option<CpuDecoder>]) -> Vec<Member<'a>> {
        self.dirs
            .iter()
            .zip(cpus)
            .zip(&self.weights)
            .map(|((d, cpu), &weight)| Member {
                model: &d.model,
                cpu: cpu.as_ref(),
                weight,
            })
            .collect()
    }
}

/// The ensemble after the first of `dirs`, with the weights of all of them.
pub fn ensemble_of<'a>(dirs: &'a [ModelDir], weights: &[f64]) -> Ensemble<'a> {
    Ensemble {
        others: dirs.iter().skip(1).map(|d| &d.model).collect(),
        weights: weights.to_vec(),
    }
}
