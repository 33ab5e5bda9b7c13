//! The portable (scalar) kernels, and the polynomials both builds use: Cephes' single-precision
//! exp and tanh (within 3 ulp of f64, checked in the tests).

use crate::{AttentionShape, Candidate};

/// Lanes of the vector builds: one AVX2 register of f32.
pub(crate) const LANES: usize = 8;

/// ln 2 in two parts: `n * LN2_HI` is exact for the `n` of any finite exp result.
pub(crate) const LN2_HI: f32 = 0.693_359_4;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
/// `e^r = 1 + r + r^2 * P(r)` on `|r| <= ln 2 / 2`, P highest degree first (Cephes expf).
pub(crate) const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_6e-1,
    0.5,
];
/// `tanh(x) = x + x^3 * Q(x^2)` below 0.625, Q highest degree first (Cephes tanhf).
pub(crate) const TANH_Q: [f32; 5] = [
    -5.704_988_7e-3,
    2.063_908_8e-2,
    -5.373_971_5e-2,
    1.333_144_2e-1,
    -3.333_328e-1,
];
/// Where tanh switches from the polynomial to `1 - 2 / (e^2x + 1)`.
pub(crate) const TANH_SMALL: f32 = 0.625;
/// tanh(x) rounds to 1 in f32 from x = 9.01: clamping there keeps e^2x finite.
pub(crate) const TANH_ONE: f32 = 9.5;

/// e^x (0 below -87.3; at most e^88.3).
#[inline]
pub(crate) fn exp1(x: f32) -> f32 {
    // e^x = 2^n * e^r, n = round(x / ln 2), |r| <= ln 2 / 2; ln 2 in two parts keeps r exact.
    let x = x.clamp(-87.3, 88.3);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = EXP_P.iter().fold(0.0, |p, &c| p * r + c);
    let e = (p * (r * r) + r) + 1.0;
    e * pow2(n)
}

/// 2^n for an integer-valued `n` in -126..=128 (128 gives infinity). Through the bits of
/// `n + 127 + 2^23`, whose low mantissa bits are `n + 127`: integer operations only, so loops
/// over it vectorize (`n as i32` saturates, which compiles to scalar code).
#[inline(always)]
fn pow2(n: f32) -> f32 {
    const MAGIC: f32 = 8_388_608.0; // 2^23
    let biased = (n + (MAGIC + 127.0)).to_bits();
    f32::from_bits(biased << 23)
}

/// tanh(x): an odd polynomial below 0.625 (where `1 - 2 / (e^2x + 1)` would cancel), that
/// formula above.
#[inline]
pub(crate) fn tanh1(x: f32) -> f32 {
    let a = x.abs();
    if a < TANH_SMALL {
        let s = x * x;
        let q = TANH_Q.iter().fold(0.0, |q, &c| q * s + c);
        (q * s) * x + x
    } else {
        // (Not `min`: NaN must stay NaN.)
        let e = exp1(2.0 * if a > TANH_ONE { TANH_ONE } else { a });
        (1.0 - 2.0 / (e + 1.0)).copysign(x)
    }
}

/// Pairwise, as a vector reduction adds the lanes.
#[inline]
pub(crate) fn hsum(v: [f32; LANES]) -> f32 {
    let a = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (a[0] + a[2]) + (a[1] + a[3])
}

/// e^x for one value with the kernels' polynomial.
pub fn exp(x: f32) -> f32 {
    exp1(x)
}

/// tanh(x) for one value with the kernels' polynomial.
pub fn tanh(x: f32) -> f32 {
    tanh1(x)
}

/// The driver of both builds of `additive_scores`: `dot(q_row, k_row)` for every unpadded
/// query-key pair, `masked` elsewhere.
#[inline]
pub(crate) fn scores_with(
    q: &[f32],
    k: &[f32],
    pad: &[bool],
    shape: AttentionShape,
    masked: f32,
    out: &mut [f32],
    mut dot: impl FnMut(&[f32], &[f32]) -> f32,
) {
    let AttentionShape { b, t, s, u } = shape;
    for bi in 0..b {
        for ti in 0..t {
            let qrow = &q[(bi * t + ti) * u..][..u];
            let orow = &mut out[(bi * t + ti) * s..][..s];
            for (si, o) in orow.iter_mut().enumerate() {
                *o = if pad[bi * s + si] {
                    masked
                } else {
                    dot(qrow, &k[(bi * s + si) * u..][..u])
                };
            }
        }
    }
}

/// The driver of every build of [`crate::additive_attention`] after the scores: each row of
/// `weights` (`[b * t, s]`, the scores on entry) becomes its softmax over the sentence's unpadded
/// keys (padding weighs exactly 0), and its `context` row (`d` wide) the weighted sum of the
/// sentence's `values` `[b, s, d]`. Plain multiplies and adds in a fixed order: every build
/// rounds alike.
#[inline(always)]
pub(crate) fn attend(
    weights: &mut [f32],
    values: &[f32],
    pad: &[bool],
    shape: AttentionShape,
    d: usize,
    context: &mut [f32],
) {
    let AttentionShape { b, t, s, .. } = shape;
    for bi in 0..b {
        let pad = &pad[bi * s..][..s];
        let values = &values[bi * s * d..][..s * d];
        for ti in 0..t {
            let r = bi * t + ti;
            let w = &mut weights[r * s..][..s];
            softmax_unpadded(w, pad);
            let ctx = &mut context[r * d..][..d];
            ctx.fill(0.0);
            // (`max(1)`: no values at all when `d` is 0, and chunks must not be empty.)
            for ((&wi, &padded), row) in w.iter().zip(pad).zip(values.chunks_exact(d.max(1))) {
                if !padded {
                    for (c, &x) in ctx.iter_mut().zip(row) {
                        *c += wi * x;
                    }
                }
            }
        }
    }
}

/// Softmax of `w` in place over the positions `pad` leaves, 0 at the others (all 0 when every
/// position is padding).
#[inline(always)]
fn softmax_unpadded(w: &mut [f32], pad: &[bool]) {
    let max = w
        .iter()
        .zip(pad)
        .filter(|(_, &padded)| !padded)
        .fold(f32::NEG_INFINITY, |m, (&x, _)| m.max(x));
    let mut sum = 0.0;
    for (x, &padded) in w.iter_mut().zip(pad) {
        *x = if padded { 0.0 } else { exp1(*x - max) };
        sum += *x;
    }
    if sum > 0.0 {
        for x in w.iter_mut() {
            *x /= sum;
        }
    }
}

pub(crate) fn scores(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pad: &[bool],
    shape: AttentionShape,
    masked: f32,
    out: &mut [f32],
) {
    scores_with(q, k, pad, shape, masked, out, |qrow, krow| {
        (0..qrow.len())
            .map(|j| v[j] * tanh1(qrow[j] + krow[j]))
            .sum()
    })
}

/// The best `want` candidates seen so far, best first (equal scores: the first offered first).
pub(crate) struct Keep {
    best: Vec<Candidate>,
    want: usize,
    /// `beam * vocab` of the row being scanned.
    base: i64,
}

impl Keep {
    /// What a candidate must beat to be kept.
    #[inline]
    pub(crate) fn floor(&self) -> f32 {
        if self.best.len() < self.want {
            f32::NEG_INFINITY
        } else {
            self.best[self.want - 1].score
        }
    }

    #[inline]
    pub(crate) fn offer(&mut self, score: f32, token: usize) {
        if score > self.floor() {
            let at = self.best.partition_point(|x| x.score >= score);
            let index = self.base + token as i64;
            self.best.insert(at, Candidate { score, index });
            self.best.truncate(self.want);
        }
    }
}

/// The driver of both builds of `top_candidates`: per sentence, `scan(row, score, keep)` offers
/// the candidates of each of its rows with a finite running score.
#[inline]
pub(crate) fn top_with(
    logits: &[f32],
    vocab: usize,
    row_scores: &[f32],
    group: usize,
    want: usize,
    mut scan: impl FnMut(&[f32], f32, &mut Keep),
) -> Vec<Candidate> {
    let groups = row_scores.len() / group;
    let mut out = Vec::with_capacity(groups * want);
    let mut keep = Keep {
        best: Vec::with_capacity(want + 1),
        want,
        base: 0,
    };
    for g in 0..groups {
        keep.best.clear();
        for beam in 0..group {
            let r = g * group + beam;
            if row_scores[r] == f32::NEG_INFINITY || want == 0 {
                continue;
            }
            keep.base = (beam * vocab) as i64;
            scan(&logits[r * vocab..][..vocab], row_scores[r], &mut keep);
        }
        let missing = want - keep.best.len();
        out.append(&mut keep.best);
        out.extend(std::iter::repeat_n(
            Candidate {
                score: f32::NEG_INFINITY,
                index: 0,
            },
            missing,
        ));
    }
    out
}

pub(crate) fn top(
    logits: &[f32],
    vocab: usize,
    row_scores: &[f32],
    group: usize,
    want: usize,
) -> Vec<Candidate> {
    top_with(logits, vocab, row_scores, group, want, |row, sc, keep| {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if !max.is_finite() {
            return;
        }
        let ln_sum = row.iter().map(|&x| exp1(x - max)).sum::<f32>().ln();
        for (j, &x) in row.iter().enumerate() {
            // The rounding steps of log_softmax then add: (x - max - ln_sum) + score.
            keep.offer((x - max - ln_sum) + sc, j);
        }
    })
}

#[inline]
pub(crate) fn sigmoid1(x: f32) -> f32 {
    1.0 / (1.0 + exp1(-x))
}

/// The arguments of every build's `cell`: `gates` `[rows, 4 * hidden]`, `c` and `h`
/// `[rows, hidden]`; with `prev`, row `r`'s previous `c` is row `picks[r]` of `prev` (else `c`
/// itself, updated in place).
pub(crate) struct Cell<'a> {
    pub(crate) gates: &'a [f32],
    pub(crate) prev: Option<(&'a [f32], &'a [usize])>,
    pub(crate) c: &'a mut [f32],
    pub(crate) h: &'a mut [f32],
    pub(crate) hidden: usize,
}

/// One row of a [`Cell`]: its gates (input, forget, cell, output), the previous `c` where the
/// search picked it (`None`: `c` holds it), and the row's new `c` and `h`.
pub(crate) struct CellRow<'a> {
    pub(crate) i: &'a [f32],
    pub(crate) f: &'a [f32],
    pub(crate) g: &'a [f32],
    pub(crate) o: &'a [f32],
    pub(crate) picked: Option<&'a [f32]>,
    pub(crate) c: &'a mut [f32],
    pub(crate) h: &'a mut [f32],
}

impl<'a> Cell<'a> {
    /// The rows, as every build walks them.
    #[inline(always)]
    pub(crate) fn rows(self) -> impl Iterator<Item = CellRow<'a>> {
        let Cell {
            gates,
            prev,
            c,
            h,
            hidden,
        } = self;
        gates
            .chunks_exact(4 * hidden)
            .zip(c.chunks_exact_mut(hidden))
            .zip(h.chunks_exact_mut(hidden))
            .enumerate()
            .map(move |(r, ((gates, c), h))| {
                let (i, rest) = gates.split_at(hidden);
                let (f, rest) = rest.split_at(hidden);
                let (g, o) = rest.split_at(hidden);
                let picked = prev.map(|(v, picks)| &v[picks[r] * hidden..][..hidden]);
                CellRow {
                    i,
                    f,
                    g,
                    o,
                    picked,
                    c,
                    h,
                }
            })
    }
}

/// The LSTM cell of every row of `cell`.
pub(crate) fn cell(cell: Cell<'_>) {
    let hidden = cell.hidden;
    for row in cell.rows() {
        if let Some(p) = row.picked {
            row.c.copy_from_slice(p);
        }
        for j in 0..hidden {
            row.c[j] = sigmoid1(row.f[j]) * row.c[j] + sigmoid1(row.i[j]) * tanh1(row.g[j]);
            row.h[j] = sigmoid1(row.o[j]) * tanh1(row.c[j]);
        }
    }
}
