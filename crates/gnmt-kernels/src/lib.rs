//! # gnmt-kernels
//!
//! CPU kernels for inference (search), where libtorch's eager operators repack weights on every
//! call or make several passes over large temporaries:
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
//! They compute the same functions as the libtorch operators, up to float rounding. They run on
//! the calling thread (search workers are the parallelism on a CPU) and use AVX2/FMA when the
//! CPU has them, else portable code. [`tensor`] borrows the elements of CPU tensors for them;
//! [`set_enabled`] turns their use off process-wide (to measure what they bring).

#[cfg(target_arch = "x86_64")]
pub mod adam;
mod avx2;
mod gemm;
mod math;
pub mod tensor;

pub use gemm::PackedLinear;
pub use math::{exp, tanh};

use std::sync::atomic::{AtomicBool, Ordering};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Whether callers use the kernels where they apply (the default) or libtorch's operators.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turns the kernels off (or back on) for the whole process: `gnmt bench translate
/// --no-fused-kernels` measures what they bring. The results are the same up to float rounding.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Runs the AVX2+FMA build of a kernel (`avx2::name`) when the CPU has both, else the portable
/// one (`module::name`).
macro_rules! dispatch {
    ($module:ident :: $name:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: a `target_feature` function requires only that the CPU has those
                // features, checked just above.
                #[allow(unsafe_code)]
                return unsafe { $crate::avx2::$name($($arg),*) };
            }
        }
        $crate::$module::$name($($arg),*)
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
    let AttentionShape { b, t, s, u } = shape;
    assert_eq!(q.len(), b * t * u, "queries");
    assert_eq!(k.len(), b * s * u, "keys");
    assert_eq!(v.len(), u, "v");
    assert_eq!(pad.len(), b * s, "padding mask");
    assert_eq!(out.len(), b * t * s, "output");
    dispatch!(math::scores(q, k, v, pad, shape, masked, out))
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
    assert!(vocab > 0 && group > 0, "empty vocabulary or group");
    assert_eq!(logits.len(), row_scores.len() * vocab, "logits");
    assert_eq!(row_scores.len() % group, 0, "rows per group");
    dispatch!(math::top(logits, vocab, row_scores, group, want))
}

/// The LSTM cell's pointwise part, PyTorch's gate order (input, forget, cell, output): for each
/// row, `c = sigmoid(f) * c + sigmoid(i) * tanh(g)` (in place) and `h = sigmoid(o) * tanh(c)`.
/// `gates` `[rows, 4 * hidden]`, `c` and `h` `[rows, hidden]`.
///
/// # Panics
/// If the lengths do not match.
pub fn lstm_cell(gates: &[f32], c: &mut [f32], h: &mut [f32], hidden: usize) {
    assert_eq!(c.len(), h.len(), "cell and hidden state");
    assert_eq!(gates.len(), 4 * c.len(), "gates");
    if hidden == 0 {
        return;
    }
    dispatch!(math::cell(gates, c, h, hidden))
}

#[cfg(test)]
mod tests;
