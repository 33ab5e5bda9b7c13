//! # gnmt-translate
//!
//! Greedy and batched beam search over GNMT models, and translation of text streams.
//! All sentences of a batch times the beam width advance together as one tensor batch; the
//! encoder outputs and attention keys are computed once per batch and reordered by beam index.
//! Scores follow GNMT: `log P(Y|X) / lp(Y) + cp(X; Y)` with `lp = ((5+|Y|)/6)^alpha` and
//! `cp = beta * sum_j log(min(sum_i a_ij, 1))`.

pub mod stream;

use gnmt_model::{CpuDecoder, CpuState, DecoderState, Seq2Seq};
use gnmt_tokenizer::{BOS, EOS};
use tch::{Device, Kind, TchError, Tensor};

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

fn length_penalty(len: usize, alpha: f64) -> f64 {
    ((5.0 + len as f64) / 6.0).powf(alpha)
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
    let cpu = cpu_decoder(model, device);
    translate_batch_with(model, cpu.as_ref(), sources, cfg, device)
}

/// The decoder packed for the CPU kernels, when they apply (see [`Seq2Seq::cpu_decoder`]);
/// pack once for many batches of one model.
pub fn cpu_decoder(model: &Seq2Seq, device: Device) -> Option<CpuDecoder> {
    if device == Device::Cpu {
        model.cpu_decoder()
    } else {
        None
    }
}

/// [`translate_batch`] with the decoder already packed ([`cpu_decoder`]; None: libtorch).
pub fn translate_batch_with(
    model: &Seq2Seq,
    cpu: Option<&CpuDecoder>,
    sources: &[Vec<u32>],
    cfg: &SearchConfig,
    device: Device,
) -> Result<Vec<Vec<Hypothesis>>, TchError> {
    let searched: Vec<usize> = (0..sources.len())
        .filter(|&i| !sources[i].is_empty())
        .collect();
    if searched.len() == sources.len() {
        return tch::no_grad(|| search(model, cpu, sources, cfg, device));
    }
    let inputs: Vec<Vec<u32>> = searched.iter().map(|&i| sources[i].clone()).collect();
    let mut out = vec![vec![Hypothesis::empty()]; sources.len()];
    let found = tch::no_grad(|| search(model, cpu, &inputs, cfg, device))?;
    for (i, h) in searched.into_iter().zip(found) {
        out[i] = h;
    }
    Ok(out)
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

/// The decoder state of either implementation of the step.
enum State {
    Torch(DecoderState),
    Cpu(CpuState),
}

impl State {
    fn torch(&self) -> Option<&DecoderState> {
        match self {
            State::Torch(s) => Some(s),
            State::Cpu(_) => None,
        }
    }

    fn cpu(&self) -> Option<&CpuState> {
        match self {
            State::Cpu(s) => Some(s),
            State::Torch(_) => None,
        }
    }

    /// The hypotheses' rows for the next step.
    fn select(self, rows: &[i64], device: Device) -> State {
        match self {
            State::Torch(s) => State::Torch(s.select(&Tensor::from_slice(rows).to_device(device))),
            State::Cpu(s) => {
                let rows: Vec<usize> = rows.iter().map(|&r| r as usize).collect();
                State::Cpu(s.select(&rows))
            }
        }
    }
}

fn search(
    model: &Seq2Seq,
    cpu: Option<&CpuDecoder>,
    sources: &[Vec<u32>],
    cfg: &SearchConfig,
    device: Device,
) -> Result<Vec<Vec<Hypothesis>>, TchError> {
    let b = sources.len();
    let k = cfg.beam.max(1);
    let nbest = cfg.nbest.clamp(1, k);
    if b == 0 {
        return Ok(Vec::new());
    }
    let s = sources.iter().map(Vec::len).max().unwrap_or(1).max(1);
    let mut flat = vec![0i64; b * s];
    for (i, src) in sources.iter().enumerate() {
        for (j, &t) in src.iter().enumerate() {
            flat[i * s + j] = t as i64;
        }
    }
    let lens: Vec<i64> = sources.iter().map(|x| x.len().max(1) as i64).collect();
    let src = Tensor::from_slice(&flat)
        .view([b as i64, s as i64])
        .to_device(device);
    let enc = model.encode(&src, &Tensor::from_slice(&lens), false);
    let vocab = model.config.vocab_size;
    let max_len: Vec<usize> = sources
        .iter()
        .map(|x| (cfg.max_len_a * x.len() as f64).floor() as usize + cfg.max_len_b)
        .collect();
    let global_max = max_len.iter().copied().max().unwrap_or(1);

    // Rows: sentence-major, `group` hypotheses each: one at the first step (all beams would be
    // the same), `k` afterwards. `active` lists the sentences still searched; the encoder
    // outputs stay one row per active sentence, shared by its hypotheses.
    let mut active: Vec<usize> = (0..b).collect();
    let mut group = 1usize;
    let mut enc_active = enc;
    let mut scores: Vec<f64> = vec![0.0; b];
    let mut hist: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut align: Vec<Vec<usize>> = vec![Vec::new(); b];
    // Attention summed over the output so far, `[rows, S]`: only the search reads it, so it
    // lives on the host (the attention comes here every step anyway, for the alignments).
    let mut coverage = vec![0f32; b * s];
    let mut tokens = Tensor::full([b as i64], BOS as i64, (Kind::Int64, device));
    let mut state: Option<State> = None;
    let mut finished: Vec<Vec<Hypothesis>> = vec![Vec::new(); b];
    let src_mask: Vec<Vec<bool>> = (0..b)
        .map(|i| (0..s).map(|j| j < sources[i].len()).collect())
        .collect();

    for t in 0..global_max {
        if active.is_empty() {
            break;
        }
        let rows = active.len() * group;
        let want = (2 * k).min(group * vocab as usize);
        let prev = state.as_ref();
        let ((top_v, top_i), attn, st) = match cpu {
            Some(dec) => {
                let (logits, attn, st) = model.step_cpu(
                    dec,
                    &enc_active,
                    prev.and_then(State::cpu),
                    &tokens,
                    group as i64,
                )?;
                let top = fused_expand(&logits, vocab as usize, &scores, group, want);
                (top, attn, State::Cpu(st))
            }
            None => {
                let (logits, attn, st) = model.step_logits(
                    &enc_active,
                    prev.and_then(State::torch),
                    &tokens,
                    group as i64,
                );
                let top = expand(&logits, &scores, group, want)?;
                (top, attn, State::Torch(st))
            }
        };
        let attn_cpu = host_f32(&attn)?;
        for (c, a) in coverage.iter_mut().zip(&attn_cpu) {
            *c += a;
        }
        let argmax = |row: usize| -> usize {
            let a = &attn_cpu[row * s..(row + 1) * s];
            a.iter()
                .enumerate()
                .fold(
                    (0, f32::MIN),
                    |acc, (j, &v)| if v > acc.1 { (j, v) } else { acc },
                )
                .0
        };
        let cov_penalty = |row: usize, sent: usize| -> f64 {
            let c = &coverage[row * s..(row + 1) * s];
            let sum: f64 = c
                .iter()
                .zip(&src_mask[sent])
                .filter(|(_, &m)| m)
                .map(|(&v, _)| (v as f64).clamp(1e-10, 1.0).ln())
                .sum();
            cfg.beta * sum
        };
        let mut next_rows: Vec<i64> = Vec::with_capacity(rows);
        let mut next_tokens: Vec<i64> = Vec::with_capacity(rows);
        let mut next_scores: Vec<f64> = Vec::with_capacity(rows);
        let mut next_hist = Vec::with_capacity(rows);
        let mut next_align = Vec::with_capacity(rows);
        let mut still_active = Vec::with_capacity(active.len());
        let mut kept_pos: Vec<i64> = Vec::with_capacity(active.len());
        for (ai, &sent) in active.iter().enumerate() {
            let mut live: Vec<(usize, i64, f64)> = Vec::with_capacity(k);
            for c in 0..want {
                let v = top_v[ai * want + c] as f64;
                if v == f64::NEG_INFINITY {
                    continue;
                }
                let idx = top_i[ai * want + c];
                let beam = (idx / vocab) as usize;
                let tok = idx % vocab;
                let row = ai * group + beam;
                if tok == EOS as i64 || t + 1 >= max_len[sent] {
                    // Only an end among the top `k` candidates finishes a hypothesis (the rest
                    // of the 2k are there to keep `k` live ones).
                    if c < k && finished[sent].len() < k {
                        let mut toks = hist[row].clone();
                        let mut al = align[row].clone();
                        if tok != EOS as i64 {
                            toks.push(tok as u32);
                            al.push(argmax(row));
                        }
                        let norm =
                            v / length_penalty(toks.len() + 1, cfg.alpha) + cov_penalty(row, sent);
                        finished[sent].push(Hypothesis {
                            tokens: toks,
                            score: norm,
                            log_prob: v,
                            alignment: al,
                        });
                    }
                } else if live.len() < k {
                    live.push((row, tok, v));
                }
            }
            // Stop when no live hypothesis can enter the `nbest` finished ones: a live score
            // only falls, and cp <= 0, so its best case is its score divided by the largest
            // length penalty. Fewer than `nbest` finished: keep searching.
            let bound = live
                .iter()
                .map(|&(_, _, v)| v / length_penalty(max_len[sent] + 1, cfg.alpha))
                .fold(f64::NEG_INFINITY, f64::max);
            let done = finished[sent].len() >= k
                || live.is_empty()
                || t + 1 >= max_len[sent]
                || nth_best(&finished[sent], nbest).is_some_and(|s| s >= bound);
            if done {
                continue;
            }
            still_active.push(sent);
            kept_pos.push(ai as i64);
            while live.len() < k {
                let first = live[0];
                live.push((first.0, first.1, f64::NEG_INFINITY));
            }
            for (row, tok, v) in live {
                let mut h = hist[row].clone();
                h.push(tok as u32);
                let mut a = align[row].clone();
                a.push(argmax(row));
                next_rows.push(row as i64);
                next_tokens.push(tok);
                next_scores.push(v);
                next_hist.push(h);
                next_align.push(a);
            }
        }
        if still_active.is_empty() {
            break;
        }
        // Reorder (and shrink) everything per row by the surviving rows.
        if kept_pos.len() < active.len() {
            enc_active = enc_active.select(&Tensor::from_slice(&kept_pos).to_device(device));
        }
        group = k;
        state = Some(st.select(&next_rows, device));
        coverage = next_rows
            .iter()
            .flat_map(|&r| &coverage[r as usize * s..(r as usize + 1) * s])
            .copied()
            .collect();
        tokens = Tensor::from_slice(&next_tokens).to_device(device);
        scores = next_scores;
        hist = next_hist;
        align = next_align;
        active = still_active;
    }
    for f in finished.iter_mut() {
        f.sort_by(|a, b| b.score.total_cmp(&a.score));
        if f.is_empty() {
            f.push(Hypothesis::empty());
        }
    }
    Ok(finished)
}

/// The score of the `n`-th best finished hypothesis, if `n` have finished.
fn nth_best(finished: &[Hypothesis], n: usize) -> Option<f64> {
    if finished.len() < n {
        return None;
    }
    let mut scores: Vec<f64> = finished.iter().map(|h| h.score).collect();
    scores.sort_by(|a, b| b.total_cmp(a));
    scores.get(n - 1).copied()
}

/// For every sentence (`group` consecutive rows of `logits` `[rows, vocab]`), the `want` best
/// of `log_softmax(logits) + scores` over its rows, best first: scores and `beam * vocab +
/// token`. One fused pass ([`gnmt_kernels::top_candidates`]).
fn fused_expand(
    logits: &[f32],
    vocab: usize,
    scores: &[f64],
    group: usize,
    want: usize,
) -> (Vec<f32>, Vec<i64>) {
    let sc: Vec<f32> = scores.iter().map(|&x| x as f32).collect();
    let top = gnmt_kernels::top_candidates(logits, vocab, &sc, group, want);
    top.iter().map(|c| (c.score, c.index)).unzip()
}

/// [`fused_expand`] with libtorch's log_softmax, add and topk, on the logits' device.
fn expand(
    logits: &Tensor,
    scores: &[f64],
    group: usize,
    want: usize,
) -> Result<(Vec<f32>, Vec<i64>), TchError> {
    let sentences = scores.len() / group.max(1);
    let sc = Tensor::from_slice(scores)
        .to_device(logits.device())
        .to_kind(Kind::Float)
        .unsqueeze(1);
    let cand = (logits.log_softmax(-1, Kind::Float) + sc).view([sentences as i64, -1]);
    let (top_v, top_i) = cand.topk(want as i64, -1, true, true);
    Ok((host_f32(&top_v)?, host_i64(&top_i)?))
}

/// A float tensor's values on the host, as float32.
fn host_f32(t: &Tensor) -> Result<Vec<f32>, TchError> {
    Vec::<f32>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1))
}

/// An index tensor's values on the host.
fn host_i64(t: &Tensor) -> Result<Vec<i64>, TchError> {
    Vec::<i64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Int64).flatten(0, -1))
}

#[cfg(test)]
mod tests;
