//! # gnmt-kernels
//!
//! CPU kernels for inference (search) and training, where libtorch's eager operators repack
//! weights on every call or make several passes over large temporaries:
//! - [`PackedLinear`]: `x W^T + b` with `W` packed once into column panels (MKL and oneDNN copy
//!   every weight matrix into their own layout on every call: at search's row counts, as long as
//!   the multiplication itself);
//! - [`lstm_cell`]: the LSTM cell's pointwise part over precomputed gates;
//! - [`additive_scores`]: Bahdanau scores `v . tanh(q + k)` for every query and key in one pass,
//!   without the `[B, T, S, U]` sum and tanh tensors (libtorch: add, add, tanh, matmul), and
//!   skipping padded keys;
//! - [`top_candidates`]: log-softmax, the hypotheses' running scores and the top-k over all the
//!   beams of a sentence in one read of the logits (libtorch: log_softmax, add, topk).
//!
//! And for training: Adam's update in one pass ([`adam`]), dropout masks drawn by a vectorized
//! counter-based hash instead of a serial generator ([`fill_dropout_mask`]), and the
//! label-smoothed loss with its gradient in one read of the logits ([`loss`]).
//!
//! They compute the same functions as the libtorch operators, up to float rounding. They run on
//! the calling thread (search workers are the parallelism on a CPU) and use the best build this
//! CPU runs ([`Isa::detected`]): AVX-512, AVX2/FMA, or portable code. [`tensor`] borrows the
//! elements of CPU tensors for them. Callers choose them per search with [`Kernels`]
//! (`Libtorch` measures what they bring).

#[macro_use]
mod builds;
pub mod adam;
#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod bf16;
mod dropout;
mod gemm;
pub(crate) mod int8;
pub mod loss;
mod math;
pub mod tensor;

#[cfg(target_arch = "x86_64")]
pub use amx::{amx_bf16_available, amx_int8_chosen, amx_int8_supported};
pub use bf16::{
    bf16_dot_supported, bf16_faster_than_float32, from_bf16, to_bf16, PackedLinearBf16,
};
pub use dropout::{fill_dropout_mask, DropoutDraw};
pub use gemm::{PackedLinear, RowParts};
pub use int8::{
    int8_build, int8_dot_supported, int8_faster_than_float32, quantize, PackedLinearI8,
    QuantizedMatrix,
};
pub use math::{exp, tanh};

/// `len` deterministic pseudo-random values in `[-scale, scale)` from `seed` (xorshift): the
/// inputs of this crate's tests and of `gnmt bench linear`.
pub fn noise(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Whether a search uses these kernels where they apply, or libtorch's operators alone. A
/// setting of each search (not of the process), so searches side by side can differ; the
/// results are the same up to float rounding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// The kernels on CPU float32 inference; libtorch elsewhere (the default).
    #[default]
    Fused,
    /// As `Fused`, with the decoder's weights in bf16 and float32 sums ([`PackedLinearBf16`]):
    /// where [`bf16_dot_supported`], about twice the multiply-adds per instruction, at bf16's
    /// precision.
    Bf16,
    /// As `Fused`, with the decoder's weights quantized to 8 bits per output row and its inputs
    /// per row at each step, summed exactly in integers ([`PackedLinearI8`]): GNMT's quantized
    /// inference; fast where [`int8_dot_supported`].
    Int8,
    /// libtorch's operators only (`gnmt bench translate --no-fused-kernels`).
    Libtorch,
}

/// The builds of the kernels, by instruction set (ordered: each CPU that runs one runs those
/// before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Scalar Rust, any CPU.
    Portable,
    /// AVX2 and FMA (x86-64 since Haswell and Zen).
    Avx2,
    /// AVX-512 F, DQ, BW and VL (Intel since Skylake-SP, AMD since Zen 4).
    Avx512,
}

/// `GNMT_MAX_ISA=portable|avx2|avx512` caps the build the kernels use, as oneDNN's
/// `ONEDNN_MAX_CPU_ISA` does: to compare builds on one CPU, one process each. Int8 products run
/// on AMX-INT8 tiles where the CPU has them and nothing caps the build ([`amx_int8_chosen`];
/// `amx` names that no-cap explicitly).
pub const MAX_ISA_VARIABLE: &str = "GNMT_MAX_ISA";

impl Isa {
    /// Every build, portable first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// The best build this CPU runs, capped by [`MAX_ISA_VARIABLE`] when that names one;
    /// detected once per process.
    pub fn detected() -> Isa {
        static DETECTED: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *DETECTED.get_or_init(|| Isa::supported().min(Isa::cap().unwrap_or(Isa::Avx512)))
    }

    /// The build [`MAX_ISA_VARIABLE`] caps the kernels at, when it names one (unset, or
    /// `amx`: no cap).
    pub fn cap() -> Option<Isa> {
        std::env::var(MAX_ISA_VARIABLE).ok()?.parse().ok()
    }

    /// The best build the CPU supports, whatever [`MAX_ISA_VARIABLE`] says.
    pub fn supported() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            use std::is_x86_feature_detected as has;
            let avx512 =
                has!("avx512f") && has!("avx512dq") && has!("avx512bw") && has!("avx512vl");
            match (has!("avx2") && has!("fma"), avx512) {
                (true, true) => return Isa::Avx512,
                (true, false) => return Isa::Avx2,
                _ => {}
            }
        }
        Isa::Portable
    }

    /// The builds this process may use ([`Isa::detected`] and those before it).
    pub fn available() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|&i| i <= Isa::detected())
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Isa {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| format!("unknown instruction set `{s}` (portable, avx2, avx512)"))
    }
}

/// Runs the build of a kernel for `$isa` (`avx512::name`, `avx2::name`), or for the best this
/// process may use below it, else the portable one (`module::name`).
macro_rules! dispatch {
    ($isa:expr, $module:ident :: $name:ident($($arg:expr),*)) => {{
        match $isa.min($crate::Isa::detected()) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a `target_feature` function requires only that the CPU has those
            // features; `Isa::detected` returns no build beyond what the CPU has.
            #[allow(unsafe_code)]
            $crate::Isa::Avx512 => unsafe { $crate::avx512::$name($($arg),*) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            #[allow(unsafe_code)]
            $crate::Isa::Avx2 => unsafe { $crate::avx2::$name($($arg),*) },
            _ => $crate::$module::$name($($arg),*),
        }
    }};
}
pub(crate) use dispatch;

/// Shapes of an additive attention: `b` sentences, `t` queries each, `s` keys each, `u` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub b: usize,
    pub t: usize,
    pub s: usize,
    pub u: usize,
}

/// `out[b, t, s] = sum_u v[u] * tanh(q[b, t, u] + k[b, s, u])`, or `masked` where `pad[b * s]`
/// is true (those keys are not computed). `q` `[b, t, u]`, `k` `[b, s, u]`, `pad` `[b, s]`,
/// `out` `[b, t, s]`, all row-major.
///
/// # Panics
/// If a slice's length does not match the shape.
pub fn additive_scores(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pad: &[bool],
    shape: AttentionShape,
    masked: f32,
    out: &mut [f32],
) {
    additive_scores_on(Isa::detected(), q, k, v, pad, shape, masked, out)
}

/// [`additive_scores`] on the build `isa` (or the best below it this process may use).
#[allow(clippy::too_many_arguments)]
pub(crate) fn additive_scores_on(
    isa: Isa,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pad: &[bool],
    shape: AttentionShape,
    masked: f32,
    out: &mut [f32],
) {
    let AttentionShape { b, t, s, u } = shape;
    assert_eq!(q.len(), b * t * u, "queries");
    assert_eq!(k.len(), b * s * u, "keys");
    assert_eq!(v.len(), u, "v");
    assert_eq!(pad.len(), b * s, "padding mask");
    assert_eq!(out.len(), b * t * s, "output");
    dispatch!(isa, math::scores(q, k, v, pad, shape, masked, out))
}

/// Additive attention in search, after the query projection: the scores as
/// [`additive_scores`], each query's softmax over its sentence's keys into `weights` `[b, t, s]`
/// (padding weighs exactly 0), and the `context` `[b, t, d]`, the weighted sum of the sentence's
/// `values` `[b, s, d]`. Every build gives the same context and weights for the same scores.
///
/// # Panics
/// If a slice's length does not match the shape.
#[allow(clippy::too_many_arguments)]
pub fn additive_attention(
    q: &[f32],
    k: &[f32],
    values: &[f32],
    v: &[f32],
    pad: &[bool],
    shape: AttentionShape,
    weights: &mut [f32],
    context: &mut [f32],
) {
    additive_attention_on(
        Isa::detected(),
        q,
        k,
        values,
        v,
        pad,
        shape,
        weights,
        context,
    )
}

/// [`additive_attention`] on the build `isa` (or the best below it this process may use).
#[allow(clippy::too_many_arguments)]
pub(crate) fn additive_attention_on(
    isa: Isa,
    q: &[f32],
    k: &[f32],
    values: &[f32],
    v: &[f32],
    pad: &[bool],
    shape: AttentionShape,
    weights: &mut [f32],
    context: &mut [f32],
) {
    let AttentionShape { b, t, s, .. } = shape;
    let d = context.len() / (b * t).max(1);
    assert_eq!(context.len(), b * t * d, "context");
    assert_eq!(values.len(), b * s * d, "values");
    additive_scores_on(isa, q, k, v, pad, shape, f32::NEG_INFINITY, weights);
    dispatch!(isa, math::attend(weights, values, pad, shape, d, context))
}

/// One search candidate: its score and where it comes from (`beam * vocab + token`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub score: f32,
    pub index: i64,
}

/// Beam search's expansion step, fused. `logits` is `[groups * group, vocab]`: `group`
/// consecutive rows are the hypotheses of one sentence, with running scores `row_scores`.
/// For every sentence, the `want` best of `log_softmax(logits[r]) + row_scores[r]` over its
/// rows, best first (equal scores: lower index first), as `want` entries per sentence, padded
/// with `-inf` candidates when fewer are finite. Rows scored `-inf` are skipped.
///
/// # Panics
/// If the lengths do not match `vocab` and `group`.
pub fn top_candidates(
    logits: &[f32],
    vocab: usize,
    row_scores: &[f32],
    group: usize,
    want: usize,
) -> Vec<Candidate> {
    top_candidates_on(Isa::detected(), logits, vocab, row_scores, group, want)
}

/// [`top_candidates`] on the build `isa` (or the best below it this process may use).
pub(crate) fn top_candidates_on(
    isa: Isa,
    logits: &[f32],
    vocab: usize,
    row_scores: &[f32],
    group: usize,
    want: usize,
) -> Vec<Candidate> {
    assert!(vocab > 0 && group > 0, "empty vocabulary or group");
    assert_eq!(logits.len(), row_scores.len() * vocab, "logits");
    assert_eq!(row_scores.len() % group, 0, "rows per group");
    dispatch!(isa, math::top(logits, vocab, row_scores, group, want))
}

/// The LSTM cell's pointwise part, PyTorch's gate order (input, forget, cell, output): for each
/// row, `c = sigmoid(f) * c + sigmoid(i) * tanh(g)` (in place) and `h = sigmoid(o) * tanh(c)`.
/// `gates` `[rows, 4 * hidden]`, `c` and `h` `[rows, hidden]`.
///
/// # Panics
/// If the lengths do not match.
pub fn lstm_cell(gates: &[f32], c: &mut [f32], h: &mut [f32], hidden: usize) {
    lstm_cell_on(Isa::detected(), gates, None, c, h, hidden)
}

/// [`lstm_cell`] whose previous `c` of row `r` is row `picks[r]` of `prev` (the rows a search
/// kept, read where they lie): the new `c` goes into `c`, whose values are not read.
///
/// # Panics
/// If the lengths do not match, or a pick is not a row of `prev`.
pub fn lstm_cell_picked(
    gates: &[f32],
    prev: &[f32],
    picks: &[usize],
    c: &mut [f32],
    h: &mut [f32],
    hidden: usize,
) {
    lstm_cell_on(Isa::detected(), gates, Some((prev, picks)), c, h, hidden)
}

/// [`lstm_cell`] (or with `prev`, [`lstm_cell_picked`]) on the build `isa` (or the best below it
/// this process may use).
pub(crate) fn lstm_cell_on(
    isa: Isa,
    gates: &[f32],
    prev: Option<(&[f32], &[usize])>,
    c: &mut [f32],
    h: &mut [f32],
    hidden: usize,
) {
    assert_eq!(c.len(), h.len(), "cell and hidden state");
    assert_eq!(gates.len(), 4 * c.len(), "gates");
    if hidden == 0 {
        return;
    }
    if let Some((v, picks)) = prev {
        assert_eq!(picks.len() * hidden, c.len(), "picked rows");
        assert!(
            picks.iter().all(|&r| (r + 1) * hidden <= v.len()),
            "picked rows"
        );
    }
    let cell = math::Cell {
        gates,
        prev,
        c,
        h,
        hidden,
    };
    dispatch!(isa, math::cell(cell))
}

/// AMX exists on x86-64 only.
#[cfg(not(target_arch = "x86_64"))]
pub fn amx_bf16_available() -> bool {
    false
}

/// AMX exists on x86-64 only.
#[cfg(not(target_arch = "x86_64"))]
pub fn amx_int8_supported() -> bool {
    false
}

/// AMX exists on x86-64 only.
#[cfg(not(target_arch = "x86_64"))]
pub fn amx_int8_chosen() -> bool {
    false
}

#[cfg(test)]
mod tests;
