//! AVX-512 builds of the kernels (F, DQ, BW, VL: every AVX-512 CPU since Skylake-SP, and AMD's
//! since Zen 4): the polynomials of [`crate::math`] on sixteen lanes, masked tails instead of
//! scalar ones, and a matrix kernel holding two 16-column panels of up to 12 rows in 24 of the
//! 32 vector registers. Every function here requires such a CPU (the callers check).

#![allow(unsafe_code)]

use std::arch::x86_64::*;

use crate::gemm::{PackedLinear, NR};
use crate::math::{self, EXP_P, LN2_HI, LN2_LO, TANH_ONE, TANH_Q, TANH_SMALL};
use crate::{AttentionShape, Candidate};

/// Lanes of one register.
const L: usize = 16;
/// Rows of `x` per micro-kernel call: 12 x 2 accumulator registers.
const MR: usize = 12;

/// The mask of the first `n` (at most 16) lanes.
#[inline]
fn first(n: usize) -> __mmask16 {
    debug_assert!(n <= L);
    ((1u32 << n) - 1) as __mmask16
}

/// Up to sixteen floats (the lanes beyond `c.len()` are zero).
#[inline]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
fn load(c: &[f32]) -> __m512 {
    assert!(c.len() <= L);
    // SAFETY: the masked load reads only the `c.len()` floats of `c`.
    unsafe { _mm512_maskz_loadu_ps(first(c.len()), c.as_ptr()) }
}

/// Writes the first `c.len()` (at most sixteen) lanes of `v` to `c`.
#[inline]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
pub(crate) fn store(c: &mut [f32], v: __m512) {
    assert!(c.len() <= L);
    // SAFETY: the masked store writes only the `c.len()` floats of `c`.
    unsafe { _mm512_mask_storeu_ps(c.as_mut_ptr(), first(c.len()), v) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
fn splat(x: f32) -> __m512 {
    _mm512_set1_ps(x)
}

/// [`math::exp1`] on sixteen lanes (NaN stays NaN: `max`/`min` return their second operand
/// when one is NaN).
#[inline]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
pub(crate) fn exp16(x: __m512) -> __m512 {
    let x = _mm512_min_ps(splat(88.3), _mm512_max_ps(splat(-87.3), x));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(_mm512_fmadd_ps(
        x,
        splat(std::f32::consts::LOG2_E),
        splat(0.5),
    ));
    let r = _mm512_fnmadd_ps(n, splat(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, splat(LN2_LO), r);
    let mut p = _mm512_setzero_ps();
    for c in EXP_P {
        p = _mm512_fmadd_ps(p, r, splat(c));
    }
    let e = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), splat(1.0));
    // e * 2^n in one instruction: n is an integer in -126..=127 after the clamp, so this is
    // the product by the power of two that the other builds assemble from its bits.
    _mm512_scalef_ps(e, n)
}

/// [`math::tanh1`] on sixteen lanes.
#[inline]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
pub(crate) fn tanh16(x: __m512) -> __m512 {
    let sign = splat(-0.0);
    let a = _mm512_andnot_ps(sign, x);
    let s = _mm512_mul_ps(x, x);
    let mut q = _mm512_setzero_ps();
    for c in TANH_Q {
        q = _mm512_fmadd_ps(q, s, splat(c));
    }
    let small = _mm512_fmadd_ps(_mm512_mul_ps(q, s), x, x);
    let clamped = _mm512_min_ps(splat(TANH_ONE), a);
    let e = exp16(_mm512_add_ps(clamped, clamped));
    let large = _mm512_sub_ps(
        splat(1.0),
        _mm512_div_ps(splat(2.0), _mm512_add_ps(e, splat(1.0))),
    );
    let large = _mm512_or_ps(large, _mm512_and_ps(x, sign));
    let is_small = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(a, splat(TANH_SMALL));
    _mm512_mask_blend_ps(is_small, large, small)
}

#[inline]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
fn sigmoid16(x: __m512) -> __m512 {
    let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
    _mm512_div_ps(splat(1.0), _mm512_add_ps(splat(1.0), e))
}

/// The lanes summed in the order of [`math::hsum`] over two halves (the AVX2 build's order
/// for each half, then the halves): a deterministic reduction.
#[inline]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
fn hsum(v: __m512) -> f32 {
    let mut a = [0f32; L];
    store(&mut a, v);
    let lo: [f32; 8] = [a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]];
    let hi: [f32; 8] = [a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]];
    math::hsum(lo) + math::hsum(hi)
}

/// [`math::attend`] compiled for this build (its loops vectorized here).
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
pub(crate) fn attend(
    weights: &mut [f32],
    values: &[f32],
    pad: &[bool],
    shape: AttentionShape,
    d: usize,
    context: &mut [f32],
) {
    math::attend(weights, values, pad, shape, d, context)
}

#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
pub(crate) fn scores(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pad: &[bool],
    shape: AttentionShape,
    masked: f32,
    out: &mut [f32],
) {
    math::scores_with(q, k, pad, shape, masked, out, |qrow, krow| {
        let mut acc = _mm512_setzero_ps();
        for ((qc, kc), vc) in qrow.chunks(L).zip(krow.chunks(L)).zip(v.chunks(L)) {
            // Zero lanes of a tail add v (0) * tanh(0) = 0.
            let x = _mm512_add_ps(load(qc), load(kc));
            acc = _mm512_fmadd_ps(load(vc), tanh16(x), acc);
        }
        hsum(acc)
    })
}

/// `(max, ln(sum(exp(x - max))))` of a row (see [`math::log_sum_exp`]).
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
fn log_sum_exp(row: &[f32]) -> (f32, f32) {
    let mut m = splat(f32::NEG_INFINITY);
    for c in row.chunks(L) {
        // SAFETY: the masked load reads only the floats of `c`.
        let x = unsafe { _mm512_mask_loadu_ps(m, first(c.len()), c.as_ptr()) };
        m = _mm512_max_ps(m, x);
    }
    let max = _mm512_reduce_max_ps(m);
    if !max.is_finite() {
        return (max, 0.0);
    }
    let mut acc = _mm512_setzero_ps();
    let mv = splat(max);
    for c in row.chunks(L) {
        let e = exp16(_mm512_sub_ps(load(c), mv));
        acc = _mm512_mask_add_ps(acc, first(c.len()), acc, e);
    }
    (max, hsum(acc).ln())
}

#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
pub(crate) fn top(
    logits: &[f32],
    vocab: usize,
    row_scores: &[f32],
    group: usize,
    want: usize,
) -> Vec<Candidate> {
    math::top_with(logits, vocab, row_scores, group, want, |row, sc, keep| {
        let (max, ln_sum) = log_sum_exp(row);
        if !max.is_finite() {
            return;
        }
        let (mv, lv, sv) = (splat(max), splat(ln_sum), splat(sc));
        for (ci, c) in row.chunks(L).enumerate() {
            // The rounding steps of log_softmax then add: (x - max - ln_sum) + score.
            let cand = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(load(c), mv), lv), sv);
            let over = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(cand, splat(keep.floor())) & first(c.len());
            if over != 0 {
                let mut lanes = [0f32; L];
                store(&mut lanes, cand);
                for (l, &x) in lanes.iter().enumerate().take(c.len()) {
                    keep.offer(x, ci * L + l);
                }
            }
        }
    })
}

/// `$emit($micro::<R>$args, $tile, $finish)` with the row count `$rows` (1 to `MR`) as the
/// constant `R`: each row count has its own copy of the micro-kernel and of the stores after
/// it, so the accumulators go from registers to the output (rather than through an `MR`-row
/// array returned and copied per call).
macro_rules! with_rows {
    ($rows:expr, $micro:ident $args:tt, $tile:expr, $finish:expr) => {
        with_rows!(@ $rows, $micro $args, $tile, $finish, 12 11 10 9 8 7 6 5 4 3 2)
    };
    (@ $rows:expr, $micro:ident $args:tt, $tile:expr, $finish:expr, $($r:literal)*) => {
        match $rows {
            $($r => emit($micro::<$r> $args, $tile, $finish),)*
            _ => emit($micro::<1> $args, $tile, $finish),
        }
    };
}

/// [`PackedLinear::forward`]: two 16-column panels at a time, up to 12 rows of `x` each.
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
pub(crate) fn linear(w: &PackedLinear, x: &[f32], m: usize, out: &mut [f32]) {
    let finish = |_, col, cols, sums| _mm512_add_ps(sums, load(&w.bias[col..col + cols]));
    panels_by_rows(w.n, w.k, &w.panels, x, m, out, |rows, a, b, xs, tile| {
        with_rows!(rows, micro(a, b, xs, w.k), tile, &finish)
    })
}

/// Where a micro-kernel's sums go: rows `r0..` of `out` (`n` columns), from panel `p` on
/// (`used`: one or two panels).
struct Tile<'a> {
    out: &'a mut [f32],
    n: usize,
    r0: usize,
    p: usize,
    used: usize,
}

/// Stores `R` rows of sums for a tile's panels: `finish(row, column, columns, sums)` turns 16
/// sums into outputs (adds the bias).
#[inline]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
fn emit<V: Copy, const R: usize>(
    acc: [[V; 2]; R],
    t: &mut Tile,
    finish: &impl Fn(usize, usize, usize, V) -> __m512,
) {
    for (r, accs) in acc.iter().enumerate() {
        for (j, &v) in accs.iter().enumerate().take(t.used) {
            let col = (t.p + j) * NR;
            let cols = NR.min(t.n - col);
            let row = t.r0 + r;
            store(
                &mut t.out[row * t.n + col..][..cols],
                finish(row, col, cols, v),
            );
        }
    }
}

/// The blocking of the matrix kernels: `out[m, n] = xs . panels` where a panel row and an
/// input row hold `width` 4-byte elements (floats, bf16 pairs, byte quads). The panels go in
/// blocks of ~256 KB (kept in L2 while every row block of `x` passes over them), two at a time
/// through `micro` (rows, panel a, panel b, those rows of `xs`, the tile of `out` they fill).
#[inline]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
fn panels_by_rows<T>(
    n: usize,
    width: usize,
    panels: &[T],
    xs: &[T],
    m: usize,
    out: &mut [f32],
    micro: impl Fn(usize, &[T], &[T], &[T], &mut Tile),
) {
    let count = n.div_ceil(NR);
    let panel = |p: usize| &panels[p * width * NR..(p + 1) * width * NR];
    let per_block = crate::gemm::panels_per_l2_block(width);
    for p0 in (0..count).step_by(per_block) {
        let p1 = (p0 + per_block).min(count);
        let mut r0 = 0;
        while r0 < m {
            let rows = MR.min(m - r0);
            let x = &xs[r0 * width..(r0 + rows) * width];
            let mut p = p0;
            while p < p1 {
                let used = if p + 1 < p1 { 2 } else { 1 };
                let mut tile = Tile {
                    out: &mut *out,
                    n,
                    r0,
                    p,
                    used,
                };
                micro(rows, panel(p), panel(p + used - 1), x, &mut tile);
                p += used;
            }
            r0 += rows;
        }
    }
}

/// `R` rows of `x` (`xs`, `R * k` floats) times two packed panels (`k * 16` floats each).
#[inline]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
fn micro<const R: usize>(a: &[f32], b: &[f32], xs: &[f32], k: usize) -> [[__m512; 2]; R] {
    assert!(a.len() >= k * NR && b.len() >= k * NR && xs.len() >= R * k);
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    // SAFETY: the loads read `a[kk * NR..][..16]`, `b[kk * NR..][..16]` and the broadcasts
    // `xs[r * k + kk]` for `kk < k`, `r < R`: inside the slices (checked above).
    unsafe {
        let (ap, bp, xp) = (a.as_ptr(), b.as_ptr(), xs.as_ptr());
        for kk in 0..k {
            let va = _mm512_loadu_ps(ap.add(kk * NR));
            let vb = _mm512_loadu_ps(bp.add(kk * NR));
            for (r, acc) in acc.iter_mut().enumerate() {
                let xv = _mm512_set1_ps(*xp.add(r * k + kk));
                acc[0] = _mm512_fmadd_ps(xv, va, acc[0]);
                acc[1] = _mm512_fmadd_ps(xv, vb, acc[1]);
            }
        }
    }
    acc
}

#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
pub(crate) fn cell(cell: math::Cell<'_>) {
    let hidden = cell.hidden;
    for row in cell.rows() {
        let math::CellRow {
            i,
            f,
            g,
            o,
            picked,
            c,
            h,
        } = row;
        for j in (0..hidden).step_by(L) {
            let end = (j + L).min(hidden);
            let at = |s: &[f32]| load(&s[j..end]);
            let cn = _mm512_fmadd_ps(
                sigmoid16(at(f)),
                at(picked.unwrap_or(&*c)),
                _mm512_mul_ps(sigmoid16(at(i)), tanh16(at(g))),
            );
            let hn = _mm512_mul_ps(sigmoid16(at(o)), tanh16(cn));
            store(&mut c[j..end], cn);
            store(&mut h[j..end], hn);
        }
    }
}

/// [`crate::PackedLinearBf16::forward`] on AVX512-BF16: as [`linear`], with `vdpbf16ps` adding
/// two bf16 products into each float32 lane; `xs` are the input rows as bf16 pairs `[m, k2]`.
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx512bf16")]
pub(crate) fn linear_bf16(w: &crate::PackedLinearBf16, xs: &[u32], m: usize, out: &mut [f32]) {
    let finish = |_, col, cols, sums| _mm512_add_ps(sums, load(&w.bias[col..col + cols]));
    panels_by_rows(w.n, w.k2, &w.panels, xs, m, out, |rows, a, b, x, tile| {
        with_rows!(rows, micro_bf16(a, b, x, w.k2), tile, &finish)
    })
}

/// `R` rows of bf16 pairs (`xs`, `R * k2`) times two packed bf16 panels (`k2 * 16` pairs each).
#[inline]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx512bf16")]
fn micro_bf16<const R: usize>(a: &[u32], b: &[u32], xs: &[u32], k2: usize) -> [[__m512; 2]; R] {
    assert!(a.len() >= k2 * NR && b.len() >= k2 * NR && xs.len() >= R * k2);
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    // SAFETY: the loads read `a[q * NR..][..16]`, `b[q * NR..][..16]` and `xs[r * k2 + q]` for
    // `q < k2`, `r < R`: inside the slices (checked above). `__m512i` and `__m512bh` are both
    // 64 bytes of plain bits, so reinterpreting one as the other is sound.
    unsafe {
        let (ap, bp, xp) = (a.as_ptr(), b.as_ptr(), xs.as_ptr());
        for q in 0..k2 {
            let va: __m512bh = std::mem::transmute(_mm512_loadu_si512(ap.add(q * NR).cast()));
            let vb: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(q * NR).cast()));
            for (r, acc) in acc.iter_mut().enumerate() {
                let xv: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*xp.add(r * k2 + q) as i32));
                acc[0] = _mm512_dpbf16_ps(acc[0], xv, va);
                acc[1] = _mm512_dpbf16_ps(acc[1], xv, vb);
            }
        }
    }
    acc
}

/// [`crate::PackedLinearI8::forward`] on AVX512-VNNI: as [`linear`], with `vpdpbusd` adding four
/// byte products into each 32-bit lane; `xs` are the input rows as offset byte quads `[m, k4]`
/// with their scales `row_scales`. The sums are exact; `(sum - offset) * scales + bias` after.
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx512vnni")]
pub(crate) fn linear_i8(
    w: &crate::PackedLinearI8,
    xs: &[u32],
    row_scales: &[f32],
    m: usize,
    out: &mut [f32],
) {
    let finish = |row: usize, col: usize, cols: usize, sums: __m512i| {
        finish_i8(w, row_scales[row], col, cols, sums)
    };
    panels_by_rows(w.n, w.k4, &w.panels, xs, m, out, |rows, a, b, x, tile| {
        with_rows!(rows, micro_i8(a, b, x, w.k4), tile, &finish)
    })
}

/// One row's 32-bit sums over the `cols` (at most 16) output columns from `col`, as floats:
/// `(sums - offsets) * (row_scale * scales) + bias`, in the one order every int8 build uses.
#[inline]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
pub(crate) fn finish_i8(
    w: &crate::PackedLinearI8,
    row_scale: f32,
    col: usize,
    cols: usize,
    sums: __m512i,
) -> __m512 {
    Columns::of(w, col, cols).finish(row_scale, sums)
}

/// What [`finish_i8`] needs of up to 16 output columns, loaded once for many rows.
pub(crate) struct Columns {
    offsets: __m512i,
    scales: __m512,
    bias: __m512,
}

impl Columns {
    /// The `cols` (at most 16) columns of `w` from `col`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
    pub(crate) fn of(w: &crate::PackedLinearI8, col: usize, cols: usize) -> Columns {
        let offsets = &w.offsets[col..col + cols];
        Columns {
            // SAFETY: the masked load reads only the `cols` (at most 16) integers of `offsets`.
            offsets: unsafe { _mm512_maskz_loadu_epi32(first(offsets.len()), offsets.as_ptr()) },
            scales: load(&w.scales[col..col + cols]),
            bias: load(&w.bias[col..col + cols]),
        }
    }

    /// One row's sums finished.
    #[inline]
    #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
    pub(crate) fn finish(&self, row_scale: f32, sums: __m512i) -> __m512 {
        let s = _mm512_sub_epi32(sums, self.offsets);
        let scale = _mm512_mul_ps(splat(row_scale), self.scales);
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, self.bias)
    }
}

/// `R` rows of offset byte quads (`xs`, `R * k4`) times two packed int8 panels (`k4 * 16` quads
/// each): 32-bit integer sums.
#[inline]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl,avx512vnni")]
fn micro_i8<const R: usize>(a: &[u32], b: &[u32], xs: &[u32], k4: usize) -> [[__m512i; 2]; R] {
    assert!(a.len() >= k4 * NR && b.len() >= k4 * NR && xs.len() >= R * k4);
    let mut acc = [[_mm512_setzero_si512(); 2]; R];
    // SAFETY: the loads read `a[q * NR..][..16]`, `b[q * NR..][..16]` and `xs[r * k4 + q]` for
    // `q < k4`, `r < R`: inside the slices (checked above).
    unsafe {
        let (ap, bp, xp) = (a.as_ptr(), b.as_ptr(), xs.as_ptr());
        for q in 0..k4 {
            let va = _mm512_loadu_si512(ap.add(q * NR).cast());
            let vb = _mm512_loadu_si512(bp.add(q * NR).cast());
            for (r, acc) in acc.iter_mut().enumerate() {
                // Unsigned input bytes times signed weight bytes.
                let xv = _mm512_set1_epi32(*xp.add(r * k4 + q) as i32);
                acc[0] = _mm512_dpbusd_epi32(acc[0], xv, va);
                acc[1] = _mm512_dpbusd_epi32(acc[1], xv, vb);
            }
        }
    }
    acc
}
