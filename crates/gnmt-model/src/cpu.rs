//! The decoder step of search on gnmt-kernels (CPU, float32, inference): every decoder layer
//! and the classifier as [`PackedLinear`] multiplications on weights packed once per
//! translation job, the LSTM cells' pointwise part fused, the state kept on the host. libtorch
//! still embeds the tokens and runs the attention (itself on the fused scores kernel).
//!
//! It computes what [`Seq2Seq::step_logits`] computes, up to float rounding, without libtorch's
//! per-call weight repacking (oneDNN's LSTM and MKL's GEMM both copy every weight matrix into
//! their own layout on every call: at the row counts of search, a large part of the step).

use std::sync::Arc;

use gnmt_kernels::{lstm_cell, Kernels, PackedLinear, PackedLinearBf16, PackedLinearI8};
use tch::nn::Module;
use tch::{Kind, Tensor};

use crate::int8::Int8Parts;
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
    pub(crate) int8: Option<Int8Parts>,
}

impl CpuDecoder {
    pub(crate) fn new(packs: Packs) -> Self {
        CpuDecoder(Arc::new(packs))
    }

    /// The int8 encoder and embeddings, where everything is quantized.
    pub(crate) fn int8(&self) -> Option<&Int8Parts> {
        self.0.int8.as_ref()
    }

    /// Bytes of the packed weights (float32, bf16 or int8, with their scales).
    pub fn weight_bytes(&self) -> usize {
        let p = &self.0;
        p.layers.iter().map(Packed::bytes).sum::<usize>()
            + p.classifier.bytes()
            + p.int8.as_ref().map_or(0, Int8Parts::bytes)
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
    fn new(w: &[f32], b: Option<&[f32]>, n: usize, k: usize, kernels: Kernels) -> Self {
        match kernels {
            Kernels::Bf16 => Packed::Bf16(PackedLinearBf16::new(w, b, n, k)),
            Kernels::Int8 => Packed::I8(PackedLinearI8::new(w, b, n, k)),
            _ => Packed::F32(PackedLinear::new(w, b, n, k)),
        }
    }

    fn forward(&self, x: &[f32], m: usize, out: &mut [f32]) {
        match self {
            Packed::F32(p) => p.forward(x, m, out),
            Packed::Bf16(p) => p.forward(x, m, out),
            Packed::I8(p) => p.forward(x, m, out),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Packed::F32(p) => 4 * p.out_features() * p.in_features(),
            Packed::Bf16(p) => 2 * p.out_features() * p.in_features(),
            Packed::I8(p) => p.weight_bytes(),
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

/// Per decoder layer, `h` and `c` `[rows, H]`, row-major.
#[derive(Debug, Clone)]
pub struct CpuState {
    h: Vec<Vec<f32>>,
    c: Vec<Vec<f32>>,
    hidden: usize,
}

impl CpuState {
    /// With `n` rows of zeros (a fresh hypothesis' state) after the others.
    pub fn with_zero_rows(&self, n: usize) -> CpuState {
        let grow = |v: &Vec<f32>| {
            let mut v = v.clone();
            v.resize(v.len() + n * self.hidden, 0.0);
            v
        };
        CpuState {
            h: self.h.iter().map(grow).collect(),
            c: self.c.iter().map(grow).collect(),
            hidden: self.hidden,
        }
    }

    /// Rows picked (and repeated) by `rows`: for beams and for shrinking the batch.
    pub fn select(&self, rows: &[usize]) -> CpuState {
        let pick = |v: &Vec<f32>| {
            rows.iter()
                .flat_map(|&r| &v[r * self.hidden..(r + 1) * self.hidden])
                .copied()
                .collect()
        };
        CpuState {
            h: self.h.iter().map(pick).collect(),
            c: self.c.iter().map(pick).collect(),
            hidden: self.hidden,
        }
    }
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
            return self.int8_units().ok()?.pack(&self.config);
        }
        let pack = |w: &Tensor, b: Option<Tensor>| {
            if w.device() != tch::Device::Cpu || w.kind() != Kind::Float {
                return None;
            }
            let (n, k) = w.size2().ok()?;
            // A weight that does not copy out is left to libtorch's path (which reads it itself).
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
        };
        let layers = self
            .dec_params
            .iter()
            .map(|[w_ih, w_hh, b_ih, b_hh]| pack(&Tensor::cat(&[w_ih, w_hh], 1), Some(b_ih + b_hh)))
            .collect::<Option<Vec<_>>>()?;
        let (w, b) = self.classifier_params();
        let classifier = pack(w, b.map(Tensor::shallow_clone))?;
        Some(CpuDecoder::new(Packs {
            layers,
            classifier,
            int8: None,
        }))
    }

    /// One decoder step for `group` hypotheses per sentence on the CPU kernels: logits
    /// `[B * group, V]` (row-major), attention `[B * group, S]` and the next state.
    pub fn step_cpu(
        &self,
        dec: &CpuDecoder,
        enc: &Encoded,
        state: Option<&CpuState>,
        tokens: &Tensor,
        group: i64,
    ) -> Result<(Vec<f32>, Tensor, CpuState), tch::TchError> {
        let rows = tokens.size().first().copied().unwrap_or(0) as usize;
        let hid = self.config.hidden_size as usize;
        let zeros = vec![0f32; rows * hid];
        let prev = |i: usize| match state {
            Some(s) => (&s.h[i], &s.c[i]),
            None => (&zeros, &zeros),
        };
        let dec = &dec.0;
        let layers = dec.layers.len();
        let mut new = CpuState {
            h: Vec::with_capacity(layers),
            c: Vec::with_capacity(layers),
            hidden: hid,
        };
        // One layer: gates = [inputs.., h] [W_ih W_hh]^T + b, then the cell.
        let mut run = |i: usize, inputs: &[(&[f32], usize)]| -> Vec<f32> {
            let (h_prev, c_prev) = prev(i);
            let width: usize = inputs.iter().map(|x| x.1).sum::<usize>() + hid;
            let mut x = Vec::with_capacity(rows * width);
            for r in 0..rows {
                for &(v, w) in inputs {
                    x.extend_from_slice(&v[r * w..(r + 1) * w]);
                }
                x.extend_from_slice(&h_prev[r * hid..(r + 1) * hid]);
            }
            let mut gates = vec![0f32; rows * 4 * hid];
            dec.layers[i].forward(&x, rows, &mut gates);
            let mut c = c_prev.clone();
            let mut h = vec![0f32; rows * hid];
            lstm_cell(&gates, &mut c, &mut h, hid);
            new.h.push(h.clone());
            new.c.push(c);
            h
        };
        let emb = self.config.embedding_size as usize;
        let x = match &dec.int8 {
            Some(int8) => crate::int8::lookup(&int8.tgt_embedding, &Vec::<i64>::try_from(tokens)?),
            None => host(&self.tgt_emb().forward(tokens))?,
        };
        let h0 = run(0, &[(&x, emb)]);
        let group = group.max(1);
        let q = Tensor::from_slice(&h0).view([rows as i64 / group, group, hid as i64]);
        let (ctx, attn) =
            self.attention
                .forward(&q, &enc.keys, &enc.outputs, &enc.pad_mask, Kernels::Fused);
        let s = attn.size().last().copied().unwrap_or(0);
        let attn = attn.reshape([rows as i64, s]).to_kind(Kind::Float);
        let ctx = host(&ctx)?;
        let mut out = h0;
        for i in 1..layers {
            let mut y = run(i, &[(&out, hid), (&ctx, hid)]);
            if self.config.residual_at(i as i64, false) {
                for (y, o) in y.iter_mut().zip(&out) {
                    *y += o;
                }
            }
            out = y;
        }
        let vocab = dec.classifier.out_features();
        let mut logits = vec![0f32; rows * vocab];
        dec.classifier.forward(&out, rows, &mut logits);
        Ok((logits, attn, new))
    }
}
