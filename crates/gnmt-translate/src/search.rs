//! Batched beam search: every sentence of a batch times its beam advances as one decoder batch.
//!
//! Each step is three named parts: [`Search::expand`] runs the decoder and picks each sentence's
//! best `2 * beam` continuations, [`Search::finish_or_keep`] ends the hypotheses that emitted EOS
//! (or reached the length limit) and keeps `beam` live ones per sentence still searched, and
//! [`Search::reorder`] moves the decoder state, coverage and encoder rows to the kept
//! hypotheses (and drops the sentences that are done).
//!
//! An ensemble searches several models as one: each keeps its own encoder outputs and decoder
//! state, and a step scores with the weighted mean of their log-probabilities (renormalized:
//! the weighted geometric mean of their distributions) and covers with the weighted mean of
//! their attention.

use gnmt_model::{CpuState, DecoderState, Encoded};
use gnmt_tokenizer::{BOS, EOS};
use tch::{Device, Kind, TchError, Tensor};

use crate::{Hypothesis, Member, SearchConfig};

pub(crate) fn length_penalty(len: usize, alpha: f64) -> f64 {
    ((5.0 + len as f64) / 6.0).powf(alpha)
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

/// A live hypothesis: one row of the decoder's batch.
#[derive(Debug, Clone, Default)]
struct Row {
    /// Output so far (no BOS).
    tokens: Vec<u32>,
    /// Per output piece, the source position attended most.
    alignment: Vec<usize>,
    /// Summed log-probability.
    log_prob: f64,
}

/// Attention summed over the output so far, one `S`-wide row per hypothesis. Only the search
/// reads it, so it lives on the host (the attention comes there every step for the alignments).
struct Coverage {
    width: usize,
    values: Vec<f32>,
}

impl Coverage {
    fn row(&self, r: usize) -> &[f32] {
        &self.values[r * self.width..(r + 1) * self.width]
    }

    /// GNMT's coverage penalty of row `r` over the real source positions `mask`.
    fn penalty(&self, r: usize, mask: &[bool], beta: f64) -> f64 {
        let sum: f64 = self
            .row(r)
            .iter()
            .zip(mask)
            .filter(|(_, &m)| m)
            .map(|(&v, _)| (v as f64).clamp(1e-10, 1.0).ln())
            .sum();
        beta * sum
    }

    fn select(&self, rows: &[i64]) -> Coverage {
        Coverage {
            width: self.width,
            values: rows
                .iter()
                .flat_map(|&r| self.row(r as usize))
                .copied()
                .collect(),
        }
    }
}

/// One step's expansion: per active sentence, `want` candidates (score, `beam * vocab + token`)
/// best first, the attention `[rows, S]` on the host, and the decoder's new state.
struct Expansion {
    want: usize,
    top_v: Vec<f32>,
    top_i: Vec<i64>,
    attn: Vec<f32>,
    /// Per member.
    state: Vec<State>,
}

/// A step's logits: on the host (CPU kernels) or a tensor on the model's device.
enum Logits {
    Host(Vec<f32>),
    Device(Tensor),
}

/// Best candidates of a step: scores, and `beam * vocab + token` indices.
type Candidates = (Vec<f32>, Vec<i64>);

/// One model's step: its best candidates, attention and next state.
type Top = (Candidates, Tensor, State);

/// `acc += w * x`, element by element (`acc` starts empty).
fn add_scaled(acc: &mut Vec<f32>, x: &[f32], w: f32) {
    if acc.is_empty() {
        acc.resize(x.len(), 0.0);
    }
    for (a, v) in acc.iter_mut().zip(x) {
        *a += w * v;
    }
}

/// Log-softmax of each `vocab`-wide row, in place.
fn log_softmax_rows(x: &mut [f32], vocab: usize) {
    for row in x.chunks_mut(vocab.max(1)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = row.iter().map(|&v| ((v - max) as f64).exp()).sum();
        let log_z = max + sum.ln() as f32;
        for v in row.iter_mut() {
            *v -= log_z;
        }
    }
}

/// The members' common vocabulary size (the first's: [`crate::translate_members`] checks
/// they agree).
fn members_vocab(members: &[Member]) -> usize {
    members
        .first()
        .map_or(0, |m| m.model.config.vocab_size as usize)
}

impl Expansion {
    /// The source position row `r` attends to most.
    fn argmax(&self, r: usize, width: usize) -> usize {
        let a = &self.attn[r * width..(r + 1) * width];
        a.iter()
            .enumerate()
            .fold(
                (0, f32::MIN),
                |acc, (j, &v)| if v > acc.1 { (j, v) } else { acc },
            )
            .0
    }
}

/// What [`Search::finish_or_keep`] keeps for the next step.
#[derive(Default)]
struct Kept {
    /// Per kept hypothesis: the row it extends, and itself extended.
    from: Vec<i64>,
    rows: Vec<Row>,
    tokens: Vec<i64>,
    /// The sentences still searched, and their positions among the active ones.
    active: Vec<usize>,
    positions: Vec<i64>,
}

/// The search over one batch of sources.
struct Search<'a> {
    /// The model, or the models of an ensemble (weights summing to 1).
    members: Vec<Member<'a>>,
    cfg: &'a SearchConfig,
    device: Device,
    beam: usize,
    nbest: usize,
    vocab: usize,
    /// Per sentence: its real source positions, and its output length limit.
    src_mask: Vec<Vec<bool>>,
    max_len: Vec<usize>,
    /// The sentences still searched; `group` hypotheses each (1 at the first step, where all
    /// beams would be the same, then `beam`), sentence-major.
    active: Vec<usize>,
    group: usize,
    /// Per member, the encoder outputs, one row per active sentence, shared by its hypotheses.
    enc: Vec<Encoded>,
    rows: Vec<Row>,
    coverage: Coverage,
    tokens: Tensor,
    /// Per member, the decoder state.
    state: Option<Vec<State>>,
    finished: Vec<Vec<Hypothesis>>,
}

/// Searches `sources` (none empty) together with `members` (one model, or an ensemble sharing
/// one vocabulary): per sentence, its finished hypotheses best first.
pub(crate) fn search(
    members: &[Member],
    sources: &[Vec<u32>],
    cfg: &SearchConfig,
    device: Device,
) -> Result<Vec<Vec<Hypothesis>>, TchError> {
    if sources.is_empty() || members.is_empty() {
        return Ok(Vec::new());
    }
    let mut s = Search::start(members, sources, cfg, device);
    let steps = s.max_len.iter().copied().max().unwrap_or(1);
    for t in 0..steps {
        if s.active.is_empty() {
            break;
        }
        let expansion = s.expand()?;
        let kept = s.finish_or_keep(t, &expansion);
        if kept.active.is_empty() {
            break;
        }
        s.reorder(kept, expansion.state);
    }
    Ok(s.results())
}

impl<'a> Search<'a> {
    /// Encodes the batch and sets up one hypothesis (BOS) per sentence.
    fn start(
        members: &[Member<'a>],
        sources: &[Vec<u32>],
        cfg: &'a SearchConfig,
        device: Device,
    ) -> Self {
        let b = sources.len();
        let beam = cfg.beam.max(1);
        let width = sources.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut flat = vec![0i64; b * width];
        for (i, src) in sources.iter().enumerate() {
            for (j, &t) in src.iter().enumerate() {
                flat[i * width + j] = t as i64;
            }
        }
        let lens: Vec<i64> = sources.iter().map(|x| x.len().max(1) as i64).collect();
        let src = Tensor::from_slice(&flat)
            .view([b as i64, width as i64])
            .to_device(device);
        let lens = Tensor::from_slice(&lens);
        let enc = members
            .iter()
            .map(|m| m.model.encode(&src, &lens, false))
            .collect();
        let total: f64 = members.iter().map(|m| m.weight).sum();
        let members: Vec<Member> = members
            .iter()
            .map(|m| Member {
                weight: if total > 0.0 {
                    m.weight / total
                } else {
                    1.0 / members.len() as f64
                },
                ..*m
            })
            .collect();
        let vocab = members_vocab(&members);
        Search {
            members,
            cfg,
            device,
            beam,
            nbest: cfg.nbest.clamp(1, beam),
            vocab,
            src_mask: sources
                .iter()
                .map(|x| (0..width).map(|j| j < x.len()).collect())
                .collect(),
            max_len: sources
                .iter()
                .map(|x| (cfg.max_len_a * x.len() as f64).floor() as usize + cfg.max_len_b)
                .collect(),
            active: (0..b).collect(),
            group: 1,
            enc,
            rows: vec![Row::default(); b],
            coverage: Coverage {
                width,
                values: vec![0f32; b * width],
            },
            tokens: Tensor::full([b as i64], BOS as i64, (Kind::Int64, device)),
            state: None,
            finished: vec![Vec::new(); b],
        }
    }

    /// One decoder step for every live hypothesis, the best `2 * beam` candidates of each
    /// sentence (the rest of the 2k keep `beam` live ones when some end), and the coverage.
    fn expand(&mut self) -> Result<Expansion, TchError> {
        let want = (2 * self.beam).min(self.group * self.vocab);
        let scores: Vec<f64> = self.rows.iter().map(|r| r.log_prob).collect();
        let ((top_v, top_i), attn, state) = if self.members.len() == 1 {
            let (top, attn, st) = self.step_one(want, &scores)?;
            (top, host_f32(&attn)?, vec![st])
        } else {
            self.step_ensemble(want, &scores)?
        };
        for (c, a) in self.coverage.values.iter_mut().zip(&attn) {
            *c += a;
        }
        Ok(Expansion {
            want,
            top_v,
            top_i,
            attn,
            state,
        })
    }

    /// Logits `[rows, V]` (on the host for the CPU kernels), attention `[rows, S]` and the next
    /// state of member `i`.
    fn step_member(&self, i: usize) -> Result<(Logits, Tensor, State), TchError> {
        let m = &self.members[i];
        let prev = self.state.as_ref().and_then(|s| s.get(i));
        let group = self.group as i64;
        Ok(match m.cpu {
            Some(dec) => {
                let prev = prev.and_then(State::cpu);
                let (logits, attn, st) =
                    m.model
                        .step_cpu(dec, &self.enc[i], prev, &self.tokens, group)?;
                (Logits::Host(logits), attn, State::Cpu(st))
            }
            None => {
                let prev = prev.and_then(State::torch);
                let (logits, attn, st) =
                    m.model
                        .step_logits(&self.enc[i], prev, &self.tokens, group, self.cfg.kernels);
                (Logits::Device(logits), attn, State::Torch(st))
            }
        })
    }

    /// One model: its log-softmax fused with the top-k where the CPU kernels run.
    fn step_one(&self, want: usize, scores: &[f64]) -> Result<Top, TchError> {
        let (logits, attn, st) = self.step_member(0)?;
        let top = match logits {
            Logits::Host(l) => fused_expand(&l, self.vocab, scores, self.group, want),
            Logits::Device(l) => expand(&l, scores, self.group, want)?,
        };
        Ok((top, attn, st))
    }

    /// An ensemble: the weighted mean of the members' log-probabilities and attention, on the
    /// host, then the same top-k (whose log-softmax renormalizes the mean).
    fn step_ensemble(
        &self,
        want: usize,
        scores: &[f64],
    ) -> Result<(Candidates, Vec<f32>, Vec<State>), TchError> {
        let mut logp: Vec<f32> = Vec::new();
        let mut attn: Vec<f32> = Vec::new();
        let mut states = Vec::with_capacity(self.members.len());
        for i in 0..self.members.len() {
            let (logits, a, st) = self.step_member(i)?;
            let lp = match logits {
                Logits::Host(mut l) => {
                    log_softmax_rows(&mut l, self.vocab);
                    l
                }
                Logits::Device(l) => host_f32(&l.log_softmax(-1, Kind::Float))?,
            };
            let w = self.members[i].weight as f32;
            add_scaled(&mut logp, &lp, w);
            add_scaled(&mut attn, &host_f32(&a)?, w);
            states.push(st);
        }
        let top = fused_expand(&logp, self.vocab, scores, self.group, want);
        Ok((top, attn, states))
    }

    /// Ends the hypotheses that emitted EOS or reached the length limit (only those among a
    /// sentence's top `beam` candidates), keeps `beam` live ones per sentence, and says which
    /// sentences go on.
    fn finish_or_keep(&mut self, t: usize, x: &Expansion) -> Kept {
        let (k, width) = (self.beam, self.coverage.width);
        let mut kept = Kept::default();
        for (ai, &sent) in self.active.iter().enumerate() {
            let mut live: Vec<(usize, i64, f64)> = Vec::with_capacity(k);
            for c in 0..x.want {
                let v = x.top_v[ai * x.want + c] as f64;
                if v == f64::NEG_INFINITY {
                    continue;
                }
                let idx = x.top_i[ai * x.want + c];
                let row = ai * self.group + (idx / self.vocab as i64) as usize;
                let tok = idx % self.vocab as i64;
                if tok == EOS as i64 || t + 1 >= self.max_len[sent] {
                    if c < k && self.finished[sent].len() < k {
                        let h = self.finish(row, sent, tok, v, x);
                        self.finished[sent].push(h);
                    }
                } else if live.len() < k {
                    live.push((row, tok, v));
                }
            }
            if self.sentence_done(sent, t, &live) {
                continue;
            }
            kept.active.push(sent);
            kept.positions.push(ai as i64);
            // Fewer than `beam` live: repeat the best with no chance, to keep `beam` rows.
            while live.len() < k {
                let first = live[0];
                live.push((first.0, first.1, f64::NEG_INFINITY));
            }
            for (row, tok, v) in live {
                let r = &self.rows[row];
                let mut tokens = r.tokens.clone();
                tokens.push(tok as u32);
                let mut alignment = r.alignment.clone();
                alignment.push(x.argmax(row, width));
                kept.from.push(row as i64);
                kept.tokens.push(tok);
                kept.rows.push(Row {
                    tokens,
                    alignment,
                    log_prob: v,
                });
            }
        }
        kept
    }

    /// The finished hypothesis of row `row` ending with `tok` (EOS, or the last token at the
    /// length limit) at log-probability `v`: normalized by length, with the coverage penalty.
    fn finish(&self, row: usize, sent: usize, tok: i64, v: f64, x: &Expansion) -> Hypothesis {
        let r = &self.rows[row];
        let mut tokens = r.tokens.clone();
        let mut alignment = r.alignment.clone();
        if tok != EOS as i64 {
            tokens.push(tok as u32);
            alignment.push(x.argmax(row, self.coverage.width));
        }
        let cp = self
            .coverage
            .penalty(row, &self.src_mask[sent], self.cfg.beta);
        Hypothesis {
            score: v / length_penalty(tokens.len() + 1, self.cfg.alpha) + cp,
            tokens,
            log_prob: v,
            alignment,
        }
    }

    /// Whether sentence `sent` stops after step `t`: `beam` finished, nothing live, the length
    /// limit, or `nbest` finished that no live hypothesis can still enter (a live score only
    /// falls and cp <= 0, so its best case is its score over the largest length penalty).
    fn sentence_done(&self, sent: usize, t: usize, live: &[(usize, i64, f64)]) -> bool {
        let finished = &self.finished[sent];
        let bound = live
            .iter()
            .map(|&(_, _, v)| v / length_penalty(self.max_len[sent] + 1, self.cfg.alpha))
            .fold(f64::NEG_INFINITY, f64::max);
        finished.len() >= self.beam
            || live.is_empty()
            || t + 1 >= self.max_len[sent]
            || nth_best(finished, self.nbest).is_some_and(|s| s >= bound)
    }

    /// Moves everything per row to the kept hypotheses, and the encoder rows to the sentences
    /// still searched.
    fn reorder(&mut self, kept: Kept, state: Vec<State>) {
        if kept.positions.len() < self.active.len() {
            let positions = Tensor::from_slice(&kept.positions).to_device(self.device);
            self.enc = self.enc.iter().map(|e| e.select(&positions)).collect();
        }
        self.group = self.beam;
        self.state = Some(
            state
                .into_iter()
                .map(|s| s.select(&kept.from, self.device))
                .collect(),
        );
        self.coverage = self.coverage.select(&kept.from);
        self.tokens = Tensor::from_slice(&kept.tokens).to_device(self.device);
        self.rows = kept.rows;
        self.active = kept.active;
    }

    /// Per sentence, its finished hypotheses best first (an empty one if none finished).
    fn results(mut self) -> Vec<Vec<Hypothesis>> {
        for f in self.finished.iter_mut() {
            f.sort_by(|a, b| b.score.total_cmp(&a.score));
            if f.is_empty() {
                f.push(Hypothesis::empty());
            }
        }
        self.finished
    }
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
pub(crate) fn fused_expand(
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
pub(crate) fn expand(
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
