//! Search on gnmt-kernels (CPU, inference): the decoder step (every decoder layer and the
//! classifier as [`PackedLinear`] multiplications on weights packed once per translation job,
//! the LSTM cells' pointwise part fused, the state kept on the host, the attention's query
//! projection on the decoder's kernels and its scores, softmax and context in float32) and the
//! encoder (every time step's input product at once, then the recurrence). libtorch still
//! projects the attention's keys (once per batch) and, but for int8, embeds the tokens.
//!
//! It computes what [`Seq2Seq::step_logits`] and [`Seq2Seq::encode`] compute, up to float
//! rounding, without libtorch's per-call weight repacking (oneDNN's LSTM and MKL's GEMM both
//! copy every weight matrix into their own layout on every call: at the row counts of search,
//! a large part of the step, and most of encoding the few sentences a server's batch takes in).

use std::borrow::Cow;
use std::sync::Arc;

use gnmt_kernels::tensor::{additive_attention_tensors, Attended};
use gnmt_kernels::{
    lstm_cell, lstm_cell_picked, Kernels, PackedLinear, PackedLinearBf16, PackedLinearI8,
    QuantizedMatrix, RowParts,
};
use tch::nn::Module;
use tch::{Kind, Tensor};

use crate::{Encoded, Seq2Seq};

/// The decoder's weights packed for [`Seq2Seq::step_cpu`] (for int8, the embeddings and the
/// encoder's too): a copy, valid while the model's weights do not change (pack anew after
/// training on). Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct CpuDecoder(Arc<Packs>);

#[derive(Debug)]
pub(crate) struct Packs {
    /// Per layer: `[W_ih W_hh]` `[4H, in + H]` and `b_ih + b_hh`.
    pub(crate) layers: Vec<Packed>,
    pub(crate) classifier: Packed,
    pub(crate) encoder: CpuEncoder,
    /// int8: the target embedding quantized (else libtorch's float32 table).
    pub(crate) tgt_embedding: Option<Arc<QuantizedMatrix>>,
    /// The attention's query projection (on these kernels) and score vector.
    pub(crate) attention: CpuAttention,
}

/// The attention's query projection (its bias folded in) on the decoder's kernels, and its
/// score vector: the scores, weights and context are computed in float32 by gnmt-kernels'
/// additive attention, on the keys and encoder outputs where libtorch left them.
#[derive(Debug)]
pub(crate) struct CpuAttention {
    query: Packed,
    v: Vec<f32>,
}

impl CpuAttention {
    /// The context `[rows, H]` and the weights `[rows, S]` for the bottom layer's outputs `h0`
    /// (`rows` of them, `group` per sentence of `enc`, which [`Seq2Seq::encode_cpu`] or
    /// [`Seq2Seq::encode`] made: float32 on the CPU), the projected queries into `query`.
    fn attend(
        &self,
        h0: &[f32],
        rows: usize,
        group: usize,
        enc: &Encoded,
        query: &mut Vec<f32>,
    ) -> Result<(Vec<f32>, Tensor), tch::TchError> {
        let q = sized(query, rows * self.query.out_features());
        self.query.forward(h0, rows, q);
        let Attended { context, weights } =
            additive_attention_tensors(q, group, &enc.keys, &enc.outputs, &enc.pad_mask, &self.v)
                .ok_or_else(|| {
                tch::TchError::Kind(format!(
                    "the CPU search attends over float32 CPU encodings of matching shapes, not \
                         {:?} keys {:?} on {:?} for {rows} queries",
                    enc.keys.kind(),
                    enc.keys.size(),
                    enc.keys.device()
                ))
            })?;
        let s = weights.len() / rows.max(1);
        Ok((
            context,
            Tensor::from_slice(&weights).view([rows as i64, s as i64]),
        ))
    }
}

/// The encoder on gnmt-kernels: its LSTM layers packed (bottom forward, bottom backward, then
/// layers 1 and up), and for int8 the source embedding quantized.
#[derive(Debug)]
pub(crate) struct CpuEncoder {
    pub(crate) embedding: Option<Arc<QuantizedMatrix>>,
    pub(crate) layers: Vec<EncoderLayer>,
}

/// An encoder LSTM layer: `W_ih` with `b_ih + b_hh` (every time step's input at once), and
/// `W_hh` (the recurrence).
#[derive(Debug)]
pub(crate) struct EncoderLayer {
    pub(crate) ih: Packed,
    pub(crate) hh: Packed,
}

impl CpuEncoder {
    fn bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| l.ih.bytes() + l.hh.bytes())
            .sum();
        layers + self.embedding.as_ref().map_or(0, |e| e.bytes())
    }
}

impl CpuDecoder {
    pub(crate) fn new(packs: Packs) -> Self {
        CpuDecoder(Arc::new(packs))
    }

    pub(crate) fn encoder(&self) -> &CpuEncoder {
        &self.0.encoder
    }

    /// Bytes of the packed weights (float32, bf16 or int8, with their scales), the quantized
    /// embeddings included.
    pub fn weight_bytes(&self) -> usize {
        let p = &self.0;
        // A shared embedding table is counted once (with the encoder).
        let src = p.encoder.embedding.as_ref();
        let tgt = p
            .tgt_embedding
            .as_ref()
            .filter(|t| !src.is_some_and(|s| Arc::ptr_eq(t, s)));
        p.layers.iter().map(Packed::bytes).sum::<usize>()
            + p.classifier.bytes()
            + p.attention.query.bytes()
            + p.encoder.bytes()
            + tgt.map_or(0, |t| t.bytes())
    }
}

/// One packed weight matrix: float32, bf16 with float32 sums, or 8-bit integers.
#[derive(Debug)]
pub(crate) enum Packed {
    F32(PackedLinear),
    Bf16(PackedLinearBf16),
    I8(PackedLinearI8),
}

impl Packed {
    pub(crate) fn new(w: &[f32], b: Option<&[f32]>, n: usize, k: usize, kernels: Kernels) -> Self {
        match kernels {
            Kernels::Bf16 => Packed::Bf16(PackedLinearBf16::new(w, b, n, k)),
            Kernels::Int8 => Packed::I8(PackedLinearI8::new(w, b, n, k)),
            _ => Packed::F32(PackedLinear::new(w, b, n, k)),
        }
    }

    pub(crate) fn forward(&self, x: &[f32], m: usize, out: &mut [f32]) {
        match self {
            Packed::F32(p) => p.forward(x, m, out),
            Packed::Bf16(p) => p.forward(x, m, out),
            Packed::I8(p) => p.forward(x, m, out),
        }
    }

    /// [`Packed::forward`] of rows given as parts side by side: bf16 and int8 read them in
    /// place, float32 concatenates them first.
    pub(crate) fn forward_parts(&self, x: RowParts, m: usize, out: &mut [f32]) {
        match self {
            Packed::F32(p) => p.forward(&x.concat(m), m, out),
            Packed::Bf16(p) => p.forward_parts(x, m, out),
            Packed::I8(p) => p.forward_parts(x, m, out),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Packed::F32(p) => 4 * p.out_features() * p.in_features(),
            Packed::Bf16(p) => 2 * p.out_features() * p.in_features(),
            Packed::I8(p) => p.weight_bytes(),
        }
    }

    pub(crate) fn in_features(&self) -> usize {
        match self {
            Packed::F32(p) => p.in_features(),
            Packed::Bf16(p) => p.in_features(),
            Packed::I8(p) => p.in_features(),
        }
    }

    fn out_features(&self) -> usize {
        match self {
            Packed::F32(p) => p.out_features(),
            Packed::Bf16(p) => p.out_features(),
            Packed::I8(p) => p.out_features(),
        }
    }
}

/// Per decoder layer, `h` and `c` `[rows, H]`, row-major; and the rows the search picked from
/// them since the last step, which the next step reads in place of a copy made here.
#[derive(Debug, Clone)]
pub struct CpuState {
    h: Vec<Vec<f32>>,
    c: Vec<Vec<f32>>,
    hidden: usize,
    /// The rows of `h` and `c` this state is, in order; None: all of them as they are.
    picked: Option<Vec<usize>>,
}

impl CpuState {
    /// With `n` rows of zeros (a fresh hypothesis' state) after the others.
    pub fn with_zero_rows(&self, n: usize) -> CpuState {
        let grow = |v: &Vec<f32>| {
            let mut v = self.rows_of(v).into_owned();
            v.resize(v.len() + n * self.hidden, 0.0);
            v
        };
        CpuState {
            h: self.h.iter().map(grow).collect(),
            c: self.c.iter().map(grow).collect(),
            hidden: self.hidden,
            picked: None,
        }
    }

    /// Rows picked (and repeated) by `rows`: for beams and for shrinking the batch. Nothing is
    /// copied here: the next step reads `h` and `c` through the picks (where picking them here
    /// and the step's own copy of `c` took two copies).
    pub fn select(self, rows: &[usize]) -> CpuState {
        let picked = match &self.picked {
            Some(old) => rows.iter().map(|&r| old[r]).collect(),
            None => rows.to_vec(),
        };
        CpuState {
            picked: Some(picked),
            ..self
        }
    }

    /// `v` (one layer's `h` or `c`) as this state's rows.
    fn rows_of<'v>(&self, v: &'v [f32]) -> Cow<'v, [f32]> {
        match &self.picked {
            Some(rows) => pick_rows(v, rows.iter().copied(), self.hidden).into(),
            None => v.into(),
        }
    }
}

/// The `width`-wide rows of `v` named by `rows`, in that order (a copy each step: sized once,
/// row by row).
pub fn pick_rows(v: &[f32], rows: impl ExactSizeIterator<Item = usize>, width: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows.len() * width);
    for r in rows {
        out.extend_from_slice(&v[r * width..(r + 1) * width]);
    }
    out
}

/// A tensor's elements as float32, copied (a step's small inputs and outputs; weights once per
/// packing).
pub(crate) fn host(t: &Tensor) -> Result<Vec<f32>, tch::TchError> {
    Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1))
}

impl Seq2Seq {
    /// The decoder packed for [`Seq2Seq::step_cpu`] when the model is float32 on the CPU (its
    /// weights in bf16 for [`Kernels::Bf16`], 8-bit for [`Kernels::Int8`]), else None (and for
    /// [`Kernels::Libtorch`]).
    pub fn cpu_decoder(&self, kernels: Kernels) -> Option<CpuDecoder> {
        // An int8 model has nothing else to run on.
        if let Some(packed) = &self.int8 {
            return Some(packed.clone());
        }
        if kernels == Kernels::Libtorch {
            return None;
        }
        if kernels == Kernels::Int8 {
            let attention = self.cpu_attention(kernels)?;
            return self.int8_units().ok()?.pack(&self.config, attention);
        }
        let layers = self
            .dec_params
            .iter()
            .map(|[w_ih, w_hh, b_ih, b_hh]| {
                pack(&Tensor::cat(&[w_ih, w_hh], 1), Some(b_ih + b_hh), kernels)
            })
            .collect::<Option<Vec<_>>>()?;
        let (w, b) = self.classifier_params();
        let classifier = pack(w, Some(b.shallow_clone()), kernels)?;
        // The encoder on the decoder's kernels: in bf16 its products (a fifth of a beam-5
        // search's, at float32's half speed) were most of what bf16 left to float32.
        let encoder = self
            .enc_params
            .iter()
            .map(|[w_ih, w_hh, b_ih, b_hh]| {
                Some(EncoderLayer {
                    ih: pack(w_ih, Some(b_ih + b_hh), kernels)?,
                    hh: pack(w_hh, None, kernels)?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(CpuDecoder::new(Packs {
            layers,
            classifier,
            encoder: CpuEncoder {
                embedding: None,
                layers: encoder,
            },
            tgt_embedding: None,
            attention: self.cpu_attention(kernels)?,
        }))
    }

    /// The attention's part of a [`CpuDecoder`]: the query projection packed for `kernels`.
    pub(crate) fn cpu_attention(&self, kernels: Kernels) -> Option<CpuAttention> {
        let w = self.attention.search_weights();
        Some(CpuAttention {
            query: pack(&w.query, w.bias, kernels)?,
            v: host(&w.v).ok()?,
        })
    }

    /// Encodes `sources` (none empty) on gnmt-kernels: what [`Seq2Seq::encode`] computes, with
    /// the products on the packed weights (float32, or quantized for int8).
    pub(crate) fn encode_cpu(
        &self,
        encoder: &CpuEncoder,
        sources: &[Vec<u32>],
    ) -> Result<Encoded, tch::TchError> {
        let batch = SourceBatch::new(sources);
        let x = match &encoder.embedding {
            Some(table) => crate::int8::lookup(table, &batch.ids),
            None => host(&self.src_embedding.forward(&Tensor::from_slice(&batch.ids)))?,
        };
        let e = self.config.embedding_size as usize;
        let (mut out, mut width) = encoder.bottom(&x, &batch, e)?;
        for (k, layer) in encoder.layers.iter().skip(2).enumerate() {
            let mut y = run_lstm(layer, &out, batch.rows, batch.width, width);
            if self.config.residual_at(k as i64 + 1, true) {
                for (y, o) in y.iter_mut().zip(&out) {
                    *y += o;
                }
            }
            width = layer.hh.in_features();
            out = y;
        }
        let (b, s) = (batch.rows as i64, batch.width as i64);
        let outputs = Tensor::from_slice(&out).view([b, s, width as i64]);
        let keys = self.attention.keys(&outputs);
        Ok(Encoded {
            outputs,
            keys,
            pad_mask: Tensor::from_slice(&batch.padding).view([b, s]),
        })
    }

    /// One decoder step for `group` hypotheses per sentence on the CPU kernels: the logits
    /// `[B * group, V]` (row-major) into `buffers`, then the attention `[B * group, S]` and the
    /// next state.
    pub fn step_cpu(
        &self,
        dec: &CpuDecoder,
        enc: &Encoded,
        state: Option<&CpuState>,
        tokens: &Tensor,
        group: i64,
        buffers: &mut StepBuffers,
    ) -> Result<(Tensor, CpuState), tch::TchError> {
        let rows = tokens.size().first().copied().unwrap_or(0) as usize;
        let hid = self.config.hidden_size as usize;
        // The first step's previous h and c: one buffer of zeros for every layer.
        let zeros = match state {
            Some(_) => Vec::new(),
            None => vec![0f32; rows * hid],
        };
        let dec = &dec.0;
        let layers = dec.layers.len();
        let (mut hs, mut cs) = (Vec::with_capacity(layers), Vec::with_capacity(layers));
        let StepBuffers {
            logits,
            gates,
            query,
            spare,
        } = buffers;
        let gates = sized(gates, rows * 4 * hid);
        let mut run = |i: usize, inputs: &[(&[f32], usize)]| {
            PrevLayer::of(state, &zeros, i).step(&dec.layers[i], inputs, rows, hid, gates, spare)
        };
        let emb = self.config.embedding_size as usize;
        let x = match &dec.tgt_embedding {
            Some(table) => crate::int8::lookup(table, &Vec::<i64>::try_from(tokens)?),
            None => host(&self.tgt_emb().forward(tokens))?,
        };
        let (h0, c0) = run(0, &[(&x, emb)]);
        let (ctx, attn) = dec
            .attention
            .attend(&h0, rows, group.max(1) as usize, enc, query)?;
        hs.push(h0);
        cs.push(c0);
        // The next layer's input where it is not the last h: that h plus the residual.
        let mut summed: Option<Vec<f32>> = None;
        for i in 1..layers {
            let below: &[f32] = summed.as_deref().unwrap_or(&hs[i - 1]);
            let (h, c) = run(i, &[(below, hid), (&ctx, hid)]);
            let next = self
                .config
                .residual_at(i as i64, false)
                .then(|| h.iter().zip(below).map(|(y, o)| y + o).collect());
            hs.push(h);
            cs.push(c);
            summed = next;
        }
        let out: &[f32] = summed.as_deref().unwrap_or(&hs[layers - 1]);
        let vocab = dec.classifier.out_features();
        let logits = sized(logits, rows * vocab);
        dec.classifier.forward(out, rows, logits);
        let next = CpuState {
            h: hs,
            c: cs,
            hidden: hid,
            picked: None,
        };
        Ok((attn, next))
    }
}

/// `w` `[n, k]` (with bias `b`) packed for `kernels`; None for a weight that is not float32
/// on the CPU or does not copy out (libtorch's path then reads it itself).
fn pack(w: &Tensor, b: Option<Tensor>, kernels: Kernels) -> Option<Packed> {
    if w.device() != tch::Device::Cpu || w.kind() != Kind::Float {
        return None;
    }
    let (n, k) = w.size2().ok()?;
    let b = match b {
        Some(b) => Some(host(&b).ok()?),
        None => None,
    };
    Some(Packed::new(
        &host(w).ok()?,
        b.as_deref(),
        n as usize,
        k as usize,
        kernels,
    ))
}

/// One decoder layer's state as a step reads it: `h` and `c` where they lie, and the rows the
/// search picked from them (None: all, in order).
struct PrevLayer<'a> {
    h: &'a [f32],
    c: &'a [f32],
    picked: Option<&'a [usize]>,
}

impl<'a> PrevLayer<'a> {
    /// Layer `i`'s previous `h` and `c`, read where they lie (through the rows the search
    /// picked, if it picked), or `zeros` at the first step.
    fn of(state: Option<&'a CpuState>, zeros: &'a [f32], i: usize) -> Self {
        match state {
            Some(s) => PrevLayer {
                h: &s.h[i],
                c: &s.c[i],
                picked: s.picked.as_deref(),
            },
            None => PrevLayer {
                h: zeros,
                c: zeros,
                picked: None,
            },
        }
    }

    /// One layer of a step from this state: `gates` = [inputs.., h] [W_ih W_hh]^T + b, then
    /// the cell; the new `h` and `c` (`rows` x `hid`), in spare vectors the cell overwrites whole.
    fn step(
        self,
        layer: &Packed,
        inputs: &[(&[f32], usize)],
        rows: usize,
        hid: usize,
        gates: &mut [f32],
        spare: &mut Vec<Vec<f32>>,
    ) -> (Vec<f32>, Vec<f32>) {
        let parts: Vec<(&[f32], usize)> = inputs.iter().copied().chain([(self.h, hid)]).collect();
        let x = RowParts::new(&parts);
        let x = match self.picked {
            Some(picks) => x.picking(parts.len() - 1, picks),
            None => x,
        };
        layer.forward_parts(x, rows, gates);
        let mut h = spare_of(spare, rows * hid);
        let mut c = spare_of(spare, rows * hid);
        match self.picked {
            Some(picks) => lstm_cell_picked(gates, self.c, picks, &mut c, &mut h, hid),
            None => {
                c.copy_from_slice(self.c);
                lstm_cell(gates, &mut c, &mut h, hid);
            }
        }
        (h, c)
    }
}

/// What [`Seq2Seq::step_cpu`] writes into, kept from step to step by the caller: the logits
/// (`rows x V`, 10 MB at batch 64 x beam 5 and 8,000 pieces), the gates and the attention's
/// projected queries are neither allocated nor zeroed at every step (the products overwrite
/// every value).
#[derive(Debug, Default)]
pub struct StepBuffers {
    pub(crate) logits: Vec<f32>,
    pub(crate) gates: Vec<f32>,
    pub(crate) query: Vec<f32>,
    /// The vectors of states the search is done with ([`StepBuffers::recycle`]): the next
    /// steps write their `h` and `c` into them, with no fill first.
    pub(crate) spare: Vec<Vec<f32>>,
}

/// At most this many spare vectors are kept (a step of an 8-layer decoder takes 16).
const SPARE: usize = 64;

impl StepBuffers {
    /// Keeps the vectors of a state no longer read, for the next steps' outputs.
    pub fn recycle(&mut self, state: CpuState) {
        let room = SPARE.saturating_sub(self.spare.len());
        self.spare
            .extend(state.h.into_iter().chain(state.c).take(room));
    }

    /// The last step's logits, `[rows, V]` row-major.
    pub fn logits(&self) -> &[f32] {
        &self.logits
    }

    /// [`StepBuffers::logits`], to change in place.
    pub fn logits_mut(&mut self) -> &mut [f32] {
        &mut self.logits
    }
}

/// `buf` as `len` values (new ones zero; the old ones are left to be overwritten).
fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.resize(len, 0.0);
    buf
}

/// A vector of `len` values to overwrite: a spare one (its old values left), else new.
fn spare_of(spare: &mut Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut v = spare.pop().unwrap_or_default();
    v.resize(len, 0.0);
    v
}

/// Sources as one batch: `rows` sentences padded to `width`.
pub(crate) struct SourceBatch {
    pub(crate) rows: usize,
    pub(crate) width: usize,
    /// Per sentence, its length (at least 1).
    pub(crate) lens: Vec<usize>,
    /// `[rows, width]`, 0 at padding.
    pub(crate) ids: Vec<i64>,
    /// `[rows, width]`, true at padding.
    padding: Vec<bool>,
}

impl SourceBatch {
    pub(crate) fn new(sources: &[Vec<u32>]) -> Self {
        let width = sources.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let at = |x: &Vec<u32>, j: usize| x.get(j).map(|&t| t as i64);
        SourceBatch {
            rows: sources.len(),
            width,
            lens: sources.iter().map(|x| x.len().max(1)).collect(),
            ids: sources
                .iter()
                .flat_map(|x| (0..width).map(move |j| at(x, j).unwrap_or(0)))
                .collect(),
            padding: sources
                .iter()
                .flat_map(|x| (0..width).map(move |j| j >= x.len()))
                .collect(),
        }
    }
}

impl CpuEncoder {
    /// The bidirectional bottom layer over the embedded batch `x` (`e` wide): its outputs
    /// `[rows, width, 2H]` and `2H`. The backward direction reads each sentence from its last
    /// real token: reversed within its length, run forward, reversed back (padding stays
    /// behind, as in [`Seq2Seq::encode`]).
    fn bottom(
        &self,
        x: &[f32],
        batch: &SourceBatch,
        e: usize,
    ) -> Result<(Vec<f32>, usize), tch::TchError> {
        let (Some(fwd), Some(bwd)) = (self.layers.first(), self.layers.get(1)) else {
            return Err(tch::TchError::Shape(
                "an encoder without its bottom layer".into(),
            ));
        };
        let (b, s) = (batch.rows, batch.width);
        let f = run_lstm(fwd, x, b, s, e);
        let back = run_lstm(bwd, &reverse_within(x, &batch.lens, s, e), b, s, e);
        let back = reverse_within(&back, &batch.lens, s, bwd.hh.in_features());
        let h = fwd.hh.in_features();
        let mut out = Vec::with_capacity(b * s * 2 * h);
        for (a, z) in f.chunks(h).zip(back.chunks(h)) {
            out.extend_from_slice(a);
            out.extend_from_slice(z);
        }
        Ok((out, 2 * h))
    }
}

/// One LSTM layer over `x` `[b, s, width]` from zero state: every step's input product at
/// once, then the recurrence step by step. Outputs `[b, s, H]`.
fn run_lstm(layer: &EncoderLayer, x: &[f32], b: usize, s: usize, width: usize) -> Vec<f32> {
    let h = layer.hh.in_features();
    let g = 4 * h;
    let mut inputs = vec![0f32; b * s * g];
    layer.ih.forward(x, b * s, &mut inputs);
    debug_assert_eq!(x.len(), b * s * width);
    let mut hidden = vec![0f32; b * h];
    let mut cell = vec![0f32; b * h];
    let mut gates = vec![0f32; b * g];
    let mut out = vec![0f32; b * s * h];
    for t in 0..s {
        layer.hh.forward(&hidden, b, &mut gates);
        for r in 0..b {
            let from = &inputs[(r * s + t) * g..(r * s + t + 1) * g];
            for (a, v) in gates[r * g..(r + 1) * g].iter_mut().zip(from) {
                *a += v;
            }
        }
        lstm_cell(&gates, &mut cell, &mut hidden, h);
        for r in 0..b {
            out[(r * s + t) * h..(r * s + t + 1) * h].copy_from_slice(&hidden[r * h..(r + 1) * h]);
        }
    }
    out
}

/// `x` `[b, s, w]` with each row's first `lens[r]` positions reversed (the rest in place).
fn reverse_within(x: &[f32], lens: &[usize], s: usize, w: usize) -> Vec<f32> {
    let mut out = x.to_vec();
    for (r, &len) in lens.iter().enumerate() {
        let len = len.min(s);
        for t in 0..len {
            let (to, from) = ((r * s + t) * w, (r * s + len - 1 - t) * w);
            out[to..to + w].copy_from_slice(&x[from..from + w]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::CpuState;

    /// Two layers of three rows, two wide: row r of layer l's h holds 10 l + r, its c the
    /// negatives.
    fn state() -> CpuState {
        let layer = |l: usize, sign: f32| -> Vec<f32> {
            (0..3)
                .flat_map(|r| [sign * (10 * l + r) as f32; 2])
                .collect()
        };
        CpuState {
            h: (0..2).map(|l| layer(l, 1.0)).collect(),
            c: (0..2).map(|l| layer(l, -1.0)).collect(),
            hidden: 2,
            picked: None,
        }
    }

    /// Each layer's h rows as the next step reads them, by their first value.
    fn h_rows(s: &CpuState) -> Vec<Vec<f32>> {
        s.h.iter()
            .map(|v| s.rows_of(v).chunks(2).map(|row| row[0]).collect())
            .collect()
    }

    #[test]
    fn picked_rows_compose_and_grow_as_copies_would() {
        let picked = state().select(&[2, 0]).select(&[1, 1, 0]);
        assert_eq!(
            h_rows(&picked),
            [vec![0.0, 0.0, 2.0], vec![10.0, 10.0, 12.0]]
        );
        assert_eq!(
            picked.rows_of(&picked.c[1]).as_ref(),
            [-10.0, -10.0, -10.0, -10.0, -12.0, -12.0]
        );
        let grown = picked.with_zero_rows(1);
        assert!(grown.picked.is_none());
        assert_eq!(
            h_rows(&grown),
            [vec![0.0, 0.0, 2.0, 0.0], vec![10.0, 10.0, 12.0, 0.0]]
        );
        assert_eq!(grown.c[0], [-0.0, -0.0, -0.0, -0.0, -2.0, -2.0, 0.0, 0.0]);
    }
}
