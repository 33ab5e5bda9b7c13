//! # gnmt-attention
//!
//! Additive (Bahdanau) attention for gnmt-rs, on tch: the normalized variant of NVIDIA's GNMT v2
//! (the default: `v` weight-normalized with a learned gain initialised to `1/sqrt(units)`, a bias
//! inside the tanh) and the plain one. Keys are projected once per sentence ([`Attention::keys`]),
//! not once per decoder step; padding is masked with a value that is safe in fp16 and bf16; the
//! weights are returned because coverage penalties and alignments need them.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Which scoring function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKind {
    /// `g * v/|v| . tanh(Wq q + Wk k + b)` (NVIDIA GNMT v2).
    #[default]
    NormalizedBahdanau,
    /// `v . tanh(Wq q + Wk k)` (Bahdanau et al. 2015).
    Bahdanau,
}

/// The most negative finite fp16 value: masked scores stay finite in every precision.
pub const MASK_VALUE: f64 = -65504.0;

#[derive(Debug)]
pub struct Attention {
    kind: AttentionKind,
    query: nn::Linear,
    key: nn::Linear,
    v: Tensor,
    gain: Option<Tensor>,
    bias: Option<Tensor>,
}

impl Attention {
    /// `query_dim`: decoder state size; `key_dim`: encoder output size; `units`: hidden size.
    /// Weights start uniform in `[-init_range, init_range]`.
    pub fn new(
        vs: &nn::Path,
        kind: AttentionKind,
        query_dim: i64,
        key_dim: i64,
        units: i64,
        init_range: f64,
    ) -> Self {
        let u = nn::Init::Uniform {
            lo: -init_range,
            up: init_range,
        };
        let nobias = nn::LinearConfig {
            bias: false,
            ws_init: u,
            bs_init: None,
        };
        let query = nn::linear(vs / "query", query_dim, units, nobias);
        let key = nn::linear(vs / "key", key_dim, units, nobias);
        let v = vs.var("v", &[units], u);
        let (gain, bias) = match kind {
            AttentionKind::NormalizedBahdanau => (
                Some(vs.var("gain", &[1], nn::Init::Const(1.0 / (units as f64).sqrt()))),
                Some(vs.var("bias", &[units], nn::Init::Const(0.0))),
            ),
            AttentionKind::Bahdanau => (None, None),
        };
        Attention {
            kind,
            query,
            key,
            v,
            gain,
            bias,
        }
    }

    pub fn kind(&self) -> AttentionKind {
        self.kind
    }

    /// Projected keys `[B, S, units]`, computed once per batch of sentences.
    pub fn keys(&self, encoder_out: &Tensor) -> Tensor {
        self.key.forward(encoder_out)
    }

    /// Attends with queries `[B, T, Dq]` over `values` `[B, S, Dv]` whose projected `keys` are
    /// given; `pad_mask` `[B, S]` is true at padding. Returns the context `[B, T, Dv]` and the
    /// weights `[B, T, S]`.
    pub fn forward(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        pad_mask: &Tensor,
    ) -> (Tensor, Tensor) {
        let q = self.query.forward(queries).unsqueeze(2); // [B,T,1,U]
        let k = keys.unsqueeze(1); // [B,1,S,U]
        let mut sum = q + k;
        if let Some(b) = &self.bias {
            sum += b;
        }
        let v = match &self.gain {
            Some(g) => &self.v * g / self.v.norm(),
            None => self.v.shallow_clone(),
        };
        let scores = sum.tanh().matmul(&v.to_kind(sum.kind())); // [B,T,S]
        let scores = scores.masked_fill(&pad_mask.unsqueeze(1), MASK_VALUE);
        let weights = scores.softmax(-1, Kind::Float).to_kind(values.kind());
        let context = weights.bmm(values);
        (context, weights)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn masked_positions_get_no_weight_and_rows_sum_to_one() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        for kind in [AttentionKind::NormalizedBahdanau, AttentionKind::Bahdanau] {
            let att = Attention::new(&(vs.root() / format!("{kind:?}")), kind, 6, 4, 5, 0.1);
            let values = Tensor::randn([2, 3, 4], (Kind::Float, Device::Cpu));
            let q = Tensor::randn([2, 2, 6], (Kind::Float, Device::Cpu));
            let mask = Tensor::from_slice(&[false, false, true, false, false, false]).view([2, 3]);
            let (ctx, w) = att.forward(&q, &att.keys(&values), &values, &mask);
            assert_eq!(ctx.size(), [2, 2, 4]);
            assert!(w.get(0).get(0).get(2).double_value(&[]) < 1e-12);
            let sums = w.sum_dim_intlist(-1, false, Kind::Float);
            assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-6);
        }
    }
}
