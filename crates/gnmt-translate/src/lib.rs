//! # gnmt-translate
//!
//! Greedy and batched beam search over GNMT models, and translation of text streams.
//! All sentences of a batch times the beam width advance together as one tensor batch; the
//! encoder outputs and attention keys are computed once per batch and reordered by beam index.
//! Scores follow GNMT: `log P(Y|X) / lp(Y) + cp(X; Y)` with `lp = ((5+|Y|)/6)^alpha` and
//! `cp = beta * sum_j log(min(sum_i a_ij, 1))`.

mod live;
mod model_dir;
mod precision;
mod search;
pub mod stream;
mod tuned;

pub use live::{LiveSearch, Ticket};
pub use model_dir::{ModelDir, ModelDirError, MODEL_FILES};
pub use precision::{
    describe_plan, precision_plan, CheckError, CpuBf16, Precision, PrecisionCheck, CHECK_FILE,
    MAX_BLEU_LOSS,
};
use search::search;
#[cfg(test)]
use search::{expand, fused_expand, length_penalty};
pub use tuned::{SearchSettings, TunedSearch, TUNED_FILE};

use gnmt_model::{CpuDecoder, Kernels, Seq2Seq};
use tch::{Device, TchError};

/// Search settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchConfig {
    pub beam: usize,
    pub alpha: f64,
    pub beta: f64,
    /// Output length limit `a * source_len + b`.
    pub max_len_a: f64,
    pub max_len_b: usize,
    /// Finished hypotheses wanted per sentence (at most `beam`): the search of a sentence
    /// stops early only once this many have finished and no live one can still enter them.
    pub nbest: usize,
    /// gnmt-kernels on a CPU (the default) or libtorch's operators alone.
    pub kernels: Kernels,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            beam: 5,
            alpha: 0.6,
            beta: 0.1,
            max_len_a: 1.5,
            max_len_b: 10,
            nbest: 1,
            kernels: Kernels::Fused,
        }
    }
}

/// One finished translation.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Output ids without BOS/EOS.
    pub tokens: Vec<u32>,
    /// The search score (normalized log-probability plus coverage penalty).
    pub score: f64,
    /// Raw log-probability.
    pub log_prob: f64,
    /// For each output piece, the source position it attends to most.
    pub alignment: Vec<usize>,
}

/// Translates a batch of id sequences; returns, per sentence, its hypotheses best first
/// (at most `beam`, at least `nbest` unless the search space is smaller). An empty source
/// gives one empty hypothesis (score 0) without being searched.
pub fn translate_batch(
    model: &Seq2Seq,
    sources: &[Vec<u32>],
    cfg: &SearchConfig,
    device: Device,
) -> Result<Vec<Vec<Hypothesis>>, TchError> {
    let cpu = cpu_decoder(model, device, cfg.kernels);
    translate_batch_with(model, cpu.as_ref(), sources, cfg, device)
}

/// The decoder packed for the CPU kernels, when they apply (see [`Seq2Seq::cpu_decoder`]);
/// pack once for many batches of one model.
pub fn cpu_decoder(model: &Seq2Seq, device: Device, kernels: Kernels) -> Option<CpuDecoder> {
    // (Seq2Seq::cpu_decoder itself declines Kernels::Libtorch.)
    match device {
        Device::Cpu => model.cpu_decoder(kernels),
        _ => None,
    }
}

/// One model of a search: the model, its decoder packed for the CPU kernels (None: libtorch's
/// operators) and its weight in an ensemble.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub model: &'a Seq2Seq,
    pub cpu: Option<&'a CpuDecoder>,
    pub weight: f64,
}

/// [`translate_batch`] with the decoder already packed ([`cpu_decoder`]; None: libtorch).
pub fn translate_batch_with(
    model: &Seq2Seq,
    cpu: Option<&CpuDecoder>,
    sources: &[Vec<u32>],
    cfg: &SearchConfig,
    device: Device,
) -> Result<Vec<Vec<Hypothesis>>, TchError> {
    let one = [Member {
        model,
        cpu,
        weight: 1.0,
    }];
    translate_members(&one, sources, cfg, device)
}

/// [`translate_batch_with`] for an ensemble: one search whose step scores with the weighted
/// mean of the members' log-probabilities (renormalized) and covers with the weighted mean of
/// their attention. The members must share one vocabulary.
pub fn translate_members(
    members: &[Member],
    sources: &[Vec<u32>],
    cfg: &SearchConfig,
    device: Device,
) -> Result<Vec<Vec<Hypothesis>>, TchError> {
    check_vocabularies(members)?;
    let searched: Vec<usize> = (0..sources.len())
        .filter(|&i| !sources[i].is_empty())
        .collect();
    if searched.len() == sources.len() {
        return tch::no_grad(|| search(members, sources, cfg, device));
    }
    let inputs: Vec<Vec<u32>> = searched.iter().map(|&i| sources[i].clone()).collect();
    let mut out = vec![vec![Hypothesis::empty()]; sources.len()];
    let found = tch::no_grad(|| search(members, &inputs, cfg, device))?;
    for (i, h) in searched.into_iter().zip(found) {
        out[i] = h;
    }
    Ok(out)
}

/// An ensemble's members must share one vocabulary.
fn check_vocabularies(members: &[Member]) -> Result<(), TchError> {
    if let Some(first) = members.first() {
        let v = first.model.config.vocab_size;
        if let Some(m) = members.iter().find(|m| m.model.config.vocab_size != v) {
            return Err(TchError::Shape(format!(
                "ensemble members with vocabularies of {v} and {} pieces",
                m.model.config.vocab_size
            )));
        }
    }
    Ok(())
}

impl Hypothesis {
    /// The translation of an empty source, and the fallback of a search that finished nothing.
    pub fn empty() -> Self {
        Hypothesis {
            tokens: Vec::new(),
            score: 0.0,
            log_prob: 0.0,
            alignment: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
