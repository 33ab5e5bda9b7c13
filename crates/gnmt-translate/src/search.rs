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

use gnmt_model::{CpuState, DecoderState, Encoded, StepBuffers};
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

    /// With `n` fresh (zero) rows after the others.
    fn with_zero_rows(&self, n: usize) -> State {
        match self {
            State::Torch(s) => State::Torch(s.with_zero_rows(n as i64)),
            State::Cpu(s) => State::Cpu(s.with_zero_rows(n)),
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

    /// GNMT's coverage penalty of row `r` over its sentence's `len` real source positions.
    fn penalty(&self, r: usize, len: usize, beta: f64) -> f64 {
        let sum: f64 = self.row(r)[..len.min(self.width)]
            .iter()
            .map(|&v| (v as f64).clamp(1e-10, 1.0).ln())
            .sum();
        beta * sum
    }

    /// The same rows, `width` wide: padding added, or cut (positions no sentence has).
    fn resized(&self, width: usize) -> Coverage {
        let old = self.width.max(1);
        let mut values = Vec::with_capacity(self.values.len() / old * width);
        for row in self.values.chunks(old) {
            let keep = row.len().min(width);
            values.extend_from_slice(&row[..keep]);
            values.resize(values.len() + width - keep, 0.0);
        }
        Coverage { width, values }
    }

    fn select(&self, rows: &[i64]) -> Coverage {
        Coverage {
            width: self.width,
            values: gnmt_model::pick_rows(
                &self.values,
                rows.iter().map(|&r| r as usize),
                self.width,
            ),
        }
    }
}

impl Row {
    /// This row and `beam - 1` copies that cannot be extended (log-probability -inf): a
    /// sentence's rows before its first step, where all beams would be the same.
    fn with_dead_copies(self, beam: usize) -> impl Iterator<Item = Row> {
        let dead = Row {
            log_prob: f64::NEG_INFINITY,
            ..self.clone()
        };
        std::iter::once(self).chain(std::iter::repeat_n(dead, beam.saturating_sub(1)))
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

/// A step's logits: on the host (CPU kernels; in the search's [`StepBuffers`]) or a tensor
/// on the model's device.
enum Logits {
    Host,
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

/// Each member's encoding of `sources` (none empty).
fn encode(
    members: &[Member],
    sources: &[Vec<u32>],
    device: Device,
) -> Result<Vec<Encoded>, TchError> {
    members
        .iter()
        .map(|m| m.model.encode_sources(m.cpu, sources, device))
        .collect()
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
    /// The positions of the sentences still searched among the active ones.
    positions: Vec<i64>,
}

/// A sentence being searched.
pub(crate) struct Sentence {
    /// Its index among the sources of a batch, or its ticket in a [`LiveSearch`].
    id: usize,
    /// Real source positions (the coverage penalty's), and the output length limit.
    pub(crate) src_len: usize,
    max_len: usize,
    /// Steps searched so far.
    steps: usize,
    finished: Vec<Hypothesis>,
}

impl Sentence {
    fn new(id: usize, src_len: usize, cfg: &SearchConfig) -> Self {
        Sentence {
            id,
            src_len,
            max_len: (cfg.max_len_a * src_len as f64).floor() as usize + cfg.max_len_b,
            steps: 0,
            finished: Vec::new(),
        }
    }

    /// Its finished hypotheses best first (an empty one if none finished).
    fn results(mut self) -> (usize, Vec<Hypothesis>) {
        self.finished.sort_by(|a, b| b.score.total_cmp(&a.score));
        if self.finished.is_empty() {
            self.finished.push(Hypothesis::empty());
        }
        (self.id, self.finished)
    }
}

/// The search over one batch of sources.
pub(crate) struct Search<'a> {
    /// The model, or the models of an ensemble (weights summing to 1).
    members: Vec<Member<'a>>,
    cfg: SearchConfig,
    device: Device,
    beam: usize,
    nbest: usize,
    vocab: usize,
    /// The sentences still searched, one encoder row each; `group` hypotheses each (1 at the
    /// first step of a batch, where all beams would be the same, then `beam`), sentence-major.
    pub(crate) sentences: Vec<Sentence>,
    group: usize,
    /// Per member, the encoder outputs, one row per active sentence, shared by its hypotheses.
    enc: Vec<Encoded>,
    rows: Vec<Row>,
    coverage: Coverage,
    tokens: Tensor,
    /// Per member, the decoder state (None: zeros, before the first step).
    state: Option<Vec<State>>,
    /// The CPU kernels' logits and scratch, kept from step to step.
    buffers: StepBuffers,
    /// Sentences searched to the end: their ids and hypotheses best first.
    pub(crate) done: Vec<(usize, Vec<Hypothesis>)>,
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
    let ids: Vec<usize> = (0..sources.len()).collect();
    let mut s = Search::start(members, &ids, sources, cfg, device)?;
    while !s.sentences.is_empty() {
        s.step()?;
    }
    s.done.sort_by_key(|d| d.0);
    Ok(s.done.into_iter().map(|d| d.1).collect())
}

impl<'a> Search<'a> {
    /// Encodes the batch and sets up one hypothesis (BOS) per sentence; `ids` name them.
    pub(crate) fn start(
        members: &[Member<'a>],
        ids: &[usize],
        sources: &[Vec<u32>],
        cfg: &SearchConfig,
        device: Device,
    ) -> Result<Self, TchError> {
        let b = sources.len();
        let beam = cfg.beam.max(1);
        let enc = encode(members, sources, device)?;
        let width = enc.first().map_or(1, |e| e.width().max(1) as usize);
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
        Ok(Search {
            members,
            cfg: cfg.clone(),
            device,
            beam,
            nbest: cfg.nbest.clamp(1, beam),
            vocab,
            sentences: ids
                .iter()
                .zip(sources)
                .map(|(&id, x)| Sentence::new(id, x.len(), cfg))
                .collect(),
            group: 1,
            enc,
            rows: vec![Row::default(); b],
            coverage: Coverage {
                width,
                values: vec![0f32; b * width],
            },
            tokens: Tensor::full([b as i64], BOS as i64, (Kind::Int64, device)),
            state: None,
            buffers: StepBuffers::default(),
            done: Vec::new(),
        })
    }

    /// One step of every sentence: expand, end or keep hypotheses, move the state along.
    pub(crate) fn step(&mut self) -> Result<(), TchError> {
        let expansion = self.expand()?;
        let kept = self.finish_or_keep(&expansion);
        self.reorder(kept, expansion.state);
        Ok(())
    }

    /// Sentences join the search under way: encoded, padded to the batch's source width (or
    /// the batch to theirs), `beam` fresh rows each, of which only the first can be extended
    /// (as a batch's first step extends one row per sentence).
    pub(crate) fn join(&mut self, ids: &[usize], sources: &[Vec<u32>]) -> Result<(), TchError> {
        self.widen_to_beam_rows();
        let fresh = sources.len() * self.beam;
        let enc = encode(&self.members, sources, self.device)?;
        self.enc = self
            .enc
            .iter()
            .zip(&enc)
            .map(|(a, b)| a.concat(b))
            .collect();
        let width = self.enc.first().map_or(1, |e| e.width().max(1) as usize);
        self.coverage = self.coverage.resized(width);
        self.coverage
            .values
            .resize(self.coverage.values.len() + fresh * width, 0.0);
        for _ in sources {
            self.rows.extend(Row::default().with_dead_copies(self.beam));
        }
        let bos = Tensor::full([fresh as i64], BOS as i64, (Kind::Int64, self.device));
        self.tokens = Tensor::cat(&[&self.tokens, &bos], 0);
        if let Some(state) = &self.state {
            self.state = Some(state.iter().map(|s| s.with_zero_rows(fresh)).collect());
        }
        let cfg = &self.cfg;
        self.sentences.extend(
            ids.iter()
                .zip(sources)
                .map(|(&id, x)| Sentence::new(id, x.len(), cfg)),
        );
        Ok(())
    }

    /// Cuts the source positions that only sentences gone had: the attention's work is
    /// proportional to them (a long sentence that joined a live search and left would
    /// otherwise widen every later step).
    fn narrow_to_sources(&mut self) {
        let width = self
            .sentences
            .iter()
            .map(|s| s.src_len)
            .max()
            .unwrap_or(1)
            .max(1);
        if width >= self.coverage.width {
            return;
        }
        self.enc = self.enc.iter().map(|e| e.narrowed(width as i64)).collect();
        self.coverage = self.coverage.resized(width);
    }

    /// Before the first step a sentence has one row; joining needs `beam` each: the copies
    /// cannot be extended (log-probability -inf).
    fn widen_to_beam_rows(&mut self) {
        if self.group == self.beam {
            return;
        }
        let from: Vec<i64> = (0..self.rows.len() as i64)
            .flat_map(|r| std::iter::repeat_n(r, self.beam))
            .collect();
        let beam = self.beam;
        self.rows = std::mem::take(&mut self.rows)
            .into_iter()
            .flat_map(|r| r.with_dead_copies(beam))
            .collect();
        self.coverage = self.coverage.select(&from);
        let index = Tensor::from_slice(&from).to_device(self.device);
        self.tokens = self.tokens.index_select(0, &index);
        if let Some(state) = self.state.take() {
            self.state = Some(
                state
                    .into_iter()
                    .map(|s| s.select(&from, self.device))
                    .collect(),
            );
        }
        self.group = self.beam;
    }

    /// One decoder step for every live hypothesis, the best `2 * beam` candidates of each
    /// sentence (the rest of the 2k keep `beam` live ones when some end), and the coverage.
    fn expand(&mut self) -> Result<Expansion, TchError> {
        let want = (2 * self.beam).min(self.group * self.vocab);
        let scores: Vec<f64> = self.rows.iter().map(|r| r.log_prob).collect();
        let mut buffers = std::mem::take(&mut self.buffers);
        let ((top_v, top_i), attn, state) = if self.members.len() == 1 {
            let (top, attn, st) = self.step_one(want, &scores, &mut buffers)?;
            (top, host_f32(&attn)?, vec![st])
        } else {
            self.step_ensemble(want, &scores, &mut buffers)?
        };
        self.buffers = buffers;
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
    fn step_member(
        &self,
        i: usize,
        buffers: &mut StepBuffers,
    ) -> Result<(Logits, Tensor, State), TchError> {
        let m = &self.members[i];
        let prev = self.state.as_ref().and_then(|s| s.get(i));
        let group = self.group as i64;
        Ok(match m.cpu {
            Some(dec) => {
                let prev = prev.and_then(State::cpu);
                let (attn, st) =
                    m.model
                        .step_cpu(dec, &self.enc[i], prev, &self.tokens, group, buffers)?;
                (Logits::Host, attn, State::Cpu(st))
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
    fn step_one(
        &self,
        want: usize,
        scores: &[f64],
        buffers: &mut StepBuffers,
    ) -> Result<Top, TchError> {
        let (logits, attn, st) = self.step_member(0, buffers)?;
        let top = match logits {
            Logits::Host => fused_expand(buffers.logits(), self.vocab, scores, self.group, want),
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
        buffers: &mut StepBuffers,
    ) -> Result<(Candidates, Vec<f32>, Vec<State>), TchError> {
        let mut logp: Vec<f32> = Vec::new();
        let mut attn: Vec<f32> = Vec::new();
        let mut states = Vec::with_capacity(self.members.len());
        for i in 0..self.members.len() {
            let (logits, a, st) = self.step_member(i, buffers)?;
            let w = self.members[i].weight as f32;
            match logits {
                Logits::Host => {
                    log_softmax_rows(buffers.logits_mut(), self.vocab);
                    add_scaled(&mut logp, buffers.logits(), w);
                }
                Logits::Device(l) => {
                    add_scaled(&mut logp, &host_f32(&l.log_softmax(-1, Kind::Float))?, w)
                }
            }
            add_scaled(&mut attn, &host_f32(&a)?, w);
            states.push(st);
        }
        let top = fused_expand(&logp, self.vocab, scores, self.group, want);
        Ok((top, attn, states))
    }

    /// Ends the hypotheses that emitted EOS or reached the length limit (only those among a
    /// sentence's top `beam` candidates), keeps `beam` live ones per sentence, and says which
    /// sentences go on.
    fn finish_or_keep(&mut self, x: &Expansion) -> Kept {
        let (k, width) = (self.beam, self.coverage.width);
        let mut kept = Kept::default();
        for ai in 0..self.sentences.len() {
            let (t, max_len) = (self.sentences[ai].steps, self.sentences[ai].max_len);
            let mut live: Vec<(usize, i64, f64)> = Vec::with_capacity(k);
            for c in 0..x.want {
                let v = x.top_v[ai * x.want + c] as f64;
                if v == f64::NEG_INFINITY {
                    continue;
                }
                let idx = x.top_i[ai * x.want + c];
                let row = ai * self.group + (idx / self.vocab as i64) as usize;
                let tok = idx % self.vocab as i64;
                if tok == EOS as i64 || t + 1 >= max_len {
                    if c < k && self.sentences[ai].finished.len() < k {
                        let h = self.finish(row, ai, tok, v, x);
                        self.sentences[ai].finished.push(h);
                    }
                } else if live.len() < k {
                    live.push((row, tok, v));
                }
            }
            if self.sentence_done(&self.sentences[ai], &live) {
                continue;
            }
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
    fn finish(&self, row: usize, ai: usize, tok: i64, v: f64, x: &Expansion) -> Hypothesis {
        let r = &self.rows[row];
        let mut tokens = r.tokens.clone();
        let mut alignment = r.alignment.clone();
        if tok != EOS as i64 {
            tokens.push(tok as u32);
            alignment.push(x.argmax(row, self.coverage.width));
        }
        let cp = self
            .coverage
            .penalty(row, self.sentences[ai].src_len, self.cfg.beta);
        Hypothesis {
            score: v / length_penalty(tokens.len() + 1, self.cfg.alpha) + cp,
            tokens,
            log_prob: v,
            alignment,
        }
    }

    /// Whether sentence `s` stops after this step: `beam` finished, nothing live, the length
    /// limit, or `nbest` finished that no live hypothesis can still enter (a live score only
    /// falls and cp <= 0, so its best case is its score over the largest length penalty).
    fn sentence_done(&self, s: &Sentence, live: &[(usize, i64, f64)]) -> bool {
        let bound = live
            .iter()
            .map(|&(_, _, v)| v / length_penalty(s.max_len + 1, self.cfg.alpha))
            .fold(f64::NEG_INFINITY, f64::max);
        s.finished.len() >= self.beam
            || live.is_empty()
            || s.steps + 1 >= s.max_len
            || nth_best(&s.finished, self.nbest).is_some_and(|b| b >= bound)
    }

    /// Moves everything per row to the kept hypotheses, the encoder rows to the sentences
    /// still searched, and the others to `done`.
    fn reorder(&mut self, kept: Kept, state: Vec<State>) {
        if kept.positions.len() < self.sentences.len() {
            let mut keep = vec![false; self.sentences.len()];
            for &p in &kept.positions {
                keep[p as usize] = true;
            }
            let mut going = Vec::with_capacity(kept.positions.len());
            for (s, k) in std::mem::take(&mut self.sentences).into_iter().zip(keep) {
                match k {
                    true => going.push(s),
                    false => self.done.push(s.results()),
                }
            }
            self.sentences = going;
            if self.sentences.is_empty() {
                // Nothing left to select from (zero-row tensors are best not made).
                self.state = None;
                self.rows.clear();
                self.coverage.values.clear();
                self.group = 1;
                return;
            }
            let positions = Tensor::from_slice(&kept.positions).to_device(self.device);
            self.enc = self.enc.iter().map(|e| e.select(&positions)).collect();
            self.narrow_to_sources();
        }
        for s in &mut self.sentences {
            s.steps += 1;
        }
        self.group = self.beam;
        let kept_state = state
            .into_iter()
            .map(|s| s.select(&kept.from, self.device))
            .collect();
        // The step's input state is done with: its vectors take the next step's outputs.
        for old in self.state.replace(kept_state).into_iter().flatten() {
            if let State::Cpu(s) = old {
                self.buffers.recycle(s);
            }
        }
        self.coverage = self.coverage.select(&kept.from);
        self.tokens = Tensor::from_slice(&kept.tokens).to_device(self.device);
        self.rows = kept.rows;
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
