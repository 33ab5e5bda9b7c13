//! # gnmt-attention
//!
//! Additive (Bahdanau) attention for gnmt-rs, on tch: the normalized variant of NVIDIA's GNMT v2
//! (the default: `v` weight-normalized with a learned gain initialised to `1/sqrt(units)`, a bias
//! inside the tanh) and the plain one. Keys are projected once per sentence ([`Attention::keys`]),
//! not once per decoder step; padding is masked with a value that is safe in fp16 and bf16; the
//! weights are returned because coverage penalties and alignments need them.

use gnmt_kernels::Kernels;
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
    /// weights `[B, T, S]`. With [`Kernels::Fused`] the scores come from gnmt-kernels when
    /// nothing needs gradients and everything is float32 on the CPU (search).
    pub fn forward(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        pad_mask: &Tensor,
        kernels: Kernels,
    ) -> (Tensor, Tensor) {
        // The bias joins the queries ([B, T, U]), not every query-key sum ([B, T, S, U]).
        let q = self.query.forward(queries);
        let q = match &self.bias {
            Some(b) => q + b,
            None => q,
        };
        let v = self.score_vector();
        let fused = match kernels {
            Kernels::Fused | Kernels::Bf16 | Kernels::Int8 => fused_scores(&q, keys, &v, pad_mask),
            Kernels::Libtorch => None,
        };
        let scores = match fused {
            Some(scores) => scores,
            None => (q.unsqueeze(2) + keys.unsqueeze(1)) // [B,T,S,U]
                .tanh()
                .matmul(&v.to_kind(q.kind()))
                .masked_fill(&pad_mask.unsqueeze(1), MASK_VALUE),
        };
        let weights = scores.softmax(-1, Kind::Float).to_kind(values.kind());
        let context = weights.bmm(values);
        (context, weights)
    }
}

/// What a search on the CPU kernels needs of an [`Attention`], detached: the query projection
/// `[units, query_dim]`, the bias every projected query gets (normalized Bahdanau), and the
/// score vector `[units]` (weight-normalized with its gain where the kind has one).
#[derive(Debug)]
pub struct SearchWeights {
    pub query: Tensor,
    pub bias: Option<Tensor>,
    pub v: Tensor,
}

impl Attention {
    /// The weights as [`Attention::forward`] uses them, for search outside libtorch.
    pub fn search_weights(&self) -> SearchWeights {
        tch::no_grad(|| SearchWeights {
            query: self.query.ws.detach(),
            bias: self.bias.as_ref().map(Tensor::detach),
            v: self.score_vector().detach(),
        })
    }
}

impl Attention {
    /// The score vector `v` as this call uses it: weight-normalized with its gain, or as it
    /// is. Always the result of an operation (a copy of `U` values for plain Bahdanau), so that
    /// it requires gradients exactly when gradients are recorded: under `no_grad` (search) the
    /// fused CPU kernel takes it. (A shallow clone or a view of the parameter would keep
    /// `requires_grad` and turn the kernel away.)
    fn score_vector(&self) -> Tensor {
        match &self.gain {
            Some(g) => &self.v * g / self.v.norm(),
            None => &self.v * 1.0,
        }
    }
}

/// The masked scores `[B, T, S]` by [`gnmt_kernels::tensor::additive_scores_tensors`] when
/// nothing needs gradients and everything is float32 on the CPU (search), else None.
fn fused_scores(q: &Tensor, keys: &Tensor, v: &Tensor, pad_mask: &Tensor) -> Option<Tensor> {
    if q.requires_grad() || keys.requires_grad() || v.requires_grad() {
        return None;
    }
    gnmt_kernels::tensor::additive_scores_tensors(q, keys, v, pad_mask, MASK_VALUE as f32)
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
            let (ctx, w) = att.forward(&q, &att.keys(&values), &values, &mask, Kernels::Fused);
            assert_eq!(ctx.size(), [2, 2, 4]);
            assert!(w.get(0).get(0).get(2).double_value(&[]) < 1e-12);
            let sums = w.sum_dim_intlist(-1, false, Kind::Float);
            assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-6);
        }
    }

    #[test]
    fn the_fused_cpu_search_path_equals_the_tensor_path() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        for kind in [AttentionKind::NormalizedBahdanau, AttentionKind::Bahdanau] {
            let att = Attention::new(&(vs.root() / format!("{kind:?}")), kind, 12, 10, 19, 0.5);
            let values = Tensor::randn([3, 6, 10], (Kind::Float, Device::Cpu));
            let q = Tensor::randn([3, 4, 12], (Kind::Float, Device::Cpu));
            let lens = Tensor::from_slice(&[6i64, 2, 4]).unsqueeze(1);
            let mask = Tensor::arange(6, (Kind::Int64, Device::Cpu))
                .unsqueeze(0)
                .ge_tensor(&lens);
            // Under no_grad every input qualifies for the fused kernel, for both kinds.
            tch::no_grad(|| {
                let qp = att.query.forward(&q);
                let qp = match &att.bias {
                    Some(b) => qp + b,
                    None => qp,
                };
                let fused = fused_scores(&qp, &att.keys(&values), &att.score_vector(), &mask);
                assert!(fused.is_some(), "{kind:?}: the fused kernel declined");
            });
            assert!(
                att.score_vector().requires_grad(),
                "{kind:?}: training keeps gradients"
            );
            // With gradients (training): libtorch's operators.
            let (ctx, w) = att.forward(&q, &att.keys(&values), &values, &mask, Kernels::Fused);
            assert!(w.requires_grad());
            // Without (search): the fused kernel.
            let (ctx2, w2) = tch::no_grad(|| {
                att.forward(&q, &att.keys(&values), &values, &mask, Kernels::Fused)
            });
            assert!(!w2.requires_grad());
            let diff = |a: &Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
            assert!(diff(&w, &w2) < 1e-6, "{kind:?} weights");
            assert!(diff(&ctx, &ctx2) < 1e-5, "{kind:?} context");
            assert_eq!(w2.get(1).get(0).get(3).double_value(&[]), 0.0, "padding");
            // Without gradients but told to use libtorch: the tensor path, same numbers.
            let (ctx3, w3) = tch::no_grad(|| {
                att.forward(&q, &att.keys(&values), &values, &mask, Kernels::Libtorch)
            });
            assert!(
                diff(&w, &w3) < 1e-6 && diff(&ctx, &ctx3) < 1e-5,
                "{kind:?} libtorch"
            );
        }
    }
}
