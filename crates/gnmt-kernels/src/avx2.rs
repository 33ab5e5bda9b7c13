//! AVX2 + FMA builds of the kernels: the same polynomials as [`crate::math`], eight lanes at a
//! time. Every function here requires a CPU with AVX2 and FMA (the callers check).

#![allow(unsafe_code)]

use std::arch::x86_64::*;

use crate::math::{self, EXP_P, LANES, LN2_HI, LN2_LO, TANH_ONE, TANH_Q, TANH_SMALL};
use crate::{AttentionShape, Candidate};

/// Eight floats from a chunk of exactly eight.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load(c: &[f32]) -> __m256 {
    assert_eq!(c.len(), LANES);
    // SAFETY: `c` holds the eight floats read (checked); unaligned loads are allowed.
    unsafe { _mm256_loadu_ps(c.as_ptr()) }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn store(v: __m256) -> [f32; LANES] {
    let mut out = [0f32; LANES];
    // SAFETY: `out` has room for the eight floats written.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
    out
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    math::hsum(store(v))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn splat(x: f32) -> __m256 {
    _mm256_set1_ps(x)
}

/// [`math::exp1`] on eight lanes (NaN stays NaN: `max`/`min` return their second operand when
/// one is NaN).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn exp8(x: __m256) -> __m256 {
    let x = _mm256_min_ps(splat(88.3), _mm256_max_ps(splat(-87.3), x));
    let n = _mm256_floor_ps(_mm256_fmadd_ps(
        x,
        splat(std::f32::consts::LOG2_E),
        splat(0.5),
    ));
    let r = _mm256_fnmadd_ps(n, splat(LN2_HI), x);
    let r = _mm256_fnmadd_ps(n, splat(LN2_LO), r);
    let mut p = _mm256_setzero_ps();
    for c in EXP_P {
        p = _mm256_fmadd_ps(p, r, splat(c));
    }
    let e = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), splat(1.0));
    let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(e, _mm256_castsi256_ps(bits))
}

/// [`math::tanh1`] on eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(crate) fn tanh8(x: __m256) -> __m256 {
    let sign = splat(-0.0);
    let a = _mm256_andnot_ps(sign, x);
    let s = _mm256_mul_ps(x, x);
    let mut q = _mm256_setzero_ps();
    for c in TANH_Q {
        q = _mm256_fmadd_ps(q, s, splat(c));
    }
    let small = _mm256_fmadd_ps(_mm256_mul_ps(q, s), x, x);
    let clamped = _mm256_min_ps(splat(TANH_ONE), a);
    let e = exp8(_mm256_add_ps(clamped, clamped));
    let large = _mm256_sub_ps(
        splat(1.0),
        _mm256_div_ps(splat(2.0), _mm256_add_ps(e, splat(1.0))),
    );
    let large = _mm256_or_ps(large, _mm256_and_ps(x, sign));
    let is_small = _mm256_cmp_ps::<_CMP_LT_OQ>(a, splat(TANH_SMALL));
    _mm256_blendv_ps(large, small, is_small)
}

#[target_feature(enable = "avx2,fma")]
pub(crate) fn scores(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    pad: &[bool],
    shape: AttentionShape,
    masked: f32,
    out: &mut [f32],
) {
    let split = shape.u - shape.u % LANES;
    math::scores_with(q, k, pad, shape, masked, out, |qrow, krow| {
        let mut acc = _mm256_setzero_ps();
        for ((qc, kc), vc) in qrow[..split]
            .chunks_exact(LANES)
            .zip(krow[..split].chunks_exact(LANES))
            .zip(v[..split].chunks_exact(LANES))
        {
            let x = _mm256_add_ps(load(qc), load(kc));
            acc = _mm256_fmadd_ps(load(vc), tanh8(x), acc);
        }
        let mut sum = hsum(acc);
        for j in split..shape.u {
            sum = v[j].mul_add(math::tanh1(qrow[j] + krow[j]), sum);
        }
        sum
    })
}

/// `(max, ln(sum(exp(x - max))))` of a row (see [`math::log_sum_exp`]).
#[target_feature(enable = "avx2,fma")]
fn log_sum_exp(row: &[f32]) -> (f32, f32) {
    let split = row.len() - row.len() % LANES;
    let mut m = splat(f32::NEG_INFINITY);
    for c in row[..split].chunks_exact(LANES) {
        m = _mm256_max_ps(m, load(c));
    }
    let mut max = store(m).iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for &x in &row[split..] {
        max = max.max(x);
    }
    if !max.is_finite() {
        return (max, 0.0);
    }
    let mut acc = _mm256_setzero_ps();
    let mv = splat(max);
    for c in row[..split].chunks_exact(LANES) {
        acc = _mm256_add_ps(acc, exp8(_mm256_sub_ps(load(c), mv)));
    }
    let mut sum = hsum(acc);
    for &x in &row[split..] {
        sum += math::exp1(x - max);
    }
    (max, sum.ln())
}

#[target_feature(enable = "avx2,fma")]
pub(crate) fn top(
    logits: &[f32],
    vocab: usize,
    row_scores: &[f32],
    group: usize,
    want: usize,
) -> Vec<Candidate> {
    let split = vocab - vocab % LANES;
    math::top_with(logits, vocab, row_scores, group, want, |row, sc, keep| {
        let (max, ln_sum) = log_sum_exp(row);
        let (mv, lv, sv) = (splat(max), splat(ln_sum), splat(sc));
        for (ci, c) in row[..split].chunks_exact(LANES).enumerate() {
            // The rounding steps of log_softmax then add: (x - max - ln_sum) + score.
            let cand = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(load(c), mv), lv), sv);
            let over = _mm256_cmp_ps::<_CMP_GT_OQ>(cand, splat(keep.floor()));
            if _mm256_movemask_ps(over) != 0 {
                for (l, &x) in store(cand).iter().enumerate() {
                    keep.offer(x, ci * LANES + l);
                }
            }
        }
        for (j, &x) in row.iter().enumerate().skip(split) {
            keep.offer((x - max - ln_sum) + sc, j);
        }
    })
}

/// [`crate::gemm::PackedLinear::forward`]: per 16-column panel (kept in L1/L2), 6 rows of `x`
/// at a time into 12 accumulator registers.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn linear(w: &crate::gemm::PackedLinear, x: &[f32], m: usize, out: &mut [f32]) {
    use crate::gemm::{MR, NR};
    let (n, k) = (w.n, w.k);
    if k == 0 {
        for r in 0..m {
            out[r * n..(r + 1) * n].copy_from_slice(&w.bias);
        }
        return;
    }
    // Panels in blocks of ~128 KB (kept in L2 while every row block of `x` passes over them), so
    // that each output row is written a block's width at a time instead of 64 bytes per panel.
    let per_block = ((128 << 10) / (k * NR * 4)).max(1);
    for (bi, block) in w.panels.chunks(per_block * k * NR).enumerate() {
        let mut r0 = 0;
        while r0 < m {
            let rows = MR.min(m - r0);
            let xs = &x[r0 * k..(r0 + rows) * k];
            for (pi, panel) in block.chunks_exact(k * NR).enumerate() {
                let p = bi * per_block + pi;
                let cols = NR.min(n - p * NR);
                // Constant row counts: the accumulators stay in registers.
                let acc = match rows {
                    6 => grow(micro::<6>(panel, xs, k)),
                    5 => grow(micro::<5>(panel, xs, k)),
                    4 => grow(micro::<4>(panel, xs, k)),
                    3 => grow(micro::<3>(panel, xs, k)),
                    2 => grow(micro::<2>(panel, xs, k)),
                    _ => grow(micro::<1>(panel, xs, k)),
                };
                let bias = &w.bias[p * NR..p * NR + cols];
                for (r, a) in acc.iter().enumerate().take(rows) {
                    let mut v = [0f32; NR];
                    v[..8].copy_from_slice(&store(a[0]));
                    v[8..].copy_from_slice(&store(a[1]));
                    let o = &mut out[(r0 + r) * n + p * NR..][..cols];
                    for ((o, v), b) in o.iter_mut().zip(&v).zip(bias) {
                        *o = v + b;
                    }
                }
            }
            r0 += rows;
        }
    }
}

/// `R` rows of `x` (`xs`, `R * k` floats) times one packed panel (`k * 16` floats).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn micro<const R: usize>(panel: &[f32], xs: &[f32], k: usize) -> [[__m256; 2]; R] {
    use crate::gemm::NR;
    assert!(panel.len() >= k * NR && xs.len() >= R * k);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    // SAFETY: the loads read `panel[kk * NR..][..16]` and the broadcasts `xs[r * k + kk]` for
    // `kk < k`, `r < R`: inside both slices (checked above).
    unsafe {
        let bp = panel.as_ptr();
        let xp = xs.as_ptr();
        for kk in 0..k {
            let b0 = _mm256_loadu_ps(bp.add(kk * NR));
            let b1 = _mm256_loadu_ps(bp.add(kk * NR + 8));
            for (r, a) in acc.iter_mut().enumerate() {
                let xv = _mm256_broadcast_ss(&*xp.add(r * k + kk));
                a[0] = _mm256_fmadd_ps(xv, b0, a[0]);
                a[1] = _mm256_fmadd_ps(xv, b1, a[1]);
            }
        }
    }
    acc
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn grow<const R: usize>(a: [[__m256; 2]; R]) -> [[__m256; 2]; crate::gemm::MR] {
    let mut out = [[_mm256_setzero_ps(); 2]; crate::gemm::MR];
    out[..R].copy_from_slice(&a);
    out
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn sigmoid8(x: __m256) -> __m256 {
    let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
    _mm256_div_ps(splat(1.0), _mm256_add_ps(splat(1.0), e))
}

#[target_feature(enable = "avx2,fma")]
pub(crate) fn cell(gates: &[f32], c: &mut [f32], h: &mut [f32], hidden: usize) {
    let split = hidden - hidden % LANES;
    for ((g, c), h) in gates
        .chunks_exact(4 * hidden)
        .zip(c.chunks_exact_mut(hidden))
        .zip(h.chunks_exact_mut(hidden))
    {
        let (gi, rest) = g.split_at(hidden);
        let (gf, rest) = rest.split_at(hidden);
        let (gg, go) = rest.split_at(hidden);
        for j in (0..split).step_by(LANES) {
            let at = |s: &[f32]| load(&s[j..j + LANES]);
            let cn = _mm256_fmadd_ps(
                sigmoid8(at(gf)),
                at(c),
                _mm256_mul_ps(sigmoid8(at(gi)), tanh8(at(gg))),
            );
            let hn = _mm256_mul_ps(sigmoid8(at(go)), tanh8(cn));
            c[j..j + LANES].copy_from_slice(&store(cn));
            h[j..j + LANES].copy_from_slice(&store(hn));
        }
        for j in split..hidden {
            c[j] = math::sigmoid1(gf[j]) * c[j] + math::sigmoid1(gi[j]) * math::tanh1(gg[j]);
            h[j] = math::sigmoid1(go[j]) * math::tanh1(c[j]);
        }
    }
}

/// [`crate::PackedLinearI8`]'s integer sums on AVX2 (no VNNI): each panel row's 16 columns of
/// byte quads widened to 16-bit in four registers, `vpmaddwd` against the row's input quad
/// (offset bytes, 16-bit), two rows at a time; a column's two lanes added at the end. The sums
/// are exact: the same as the VNNI and portable builds'.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn sums_i8(w: &crate::PackedLinearI8, xs: &[u32], m: usize, sums: &mut [i32]) {
    use crate::gemm::NR;
    let (n, k4) = (w.n, w.k4);
    if k4 == 0 {
        return;
    }
    for (p, panel) in w.panels.chunks_exact(k4 * NR).enumerate() {
        let cols = NR.min(n - p * NR);
        let mut r0 = 0;
        while r0 < m {
            let rows = 2.min(m - r0);
            let acc = micro_i8(panel, &xs[r0 * k4..(r0 + rows) * k4], k4, rows);
            for (r, lanes) in acc.iter().enumerate().take(rows) {
                let mut all = [0i32; 32];
                for (g, v) in lanes.iter().enumerate() {
                    // SAFETY: `all[8 * g..]` has room for the eight integers written.
                    unsafe { _mm256_storeu_si256(all[8 * g..].as_mut_ptr().cast(), *v) };
                }
                let out = &mut sums[(r0 + r) * n + p * NR..][..cols];
                for (c, o) in out.iter_mut().enumerate() {
                    *o = all[2 * c] + all[2 * c + 1];
                }
            }
            r0 += rows;
        }
    }
}

/// One or two rows of input quads (`xs`, `rows * k4`) times one int8 panel (`k4 * 16` quads):
/// per row, four registers of eight 32-bit lanes, two lanes per column.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn micro_i8(panel: &[u32], xs: &[u32], k4: usize, rows: usize) -> [[__m256i; 4]; 2] {
    use crate::gemm::NR;
    assert!(panel.len() >= k4 * NR && xs.len() >= rows * k4 && (1..=2).contains(&rows));
    let mut acc = [[_mm256_setzero_si256(); 4]; 2];
    // The input quad as four 16-bit values, repeated over the register.
    let quad = |v: u32| {
        let w = (0..4).fold(0i64, |a, i| {
            a | ((((v >> (8 * i)) & 0xFF) as i64) << (16 * i))
        });
        _mm256_set1_epi64x(w)
    };
    // SAFETY: the loads read `panel[q * NR + 4 * g..][..4]` (16 bytes) for `q < k4`, `g < 4`, and
    // `xs[r * k4 + q]` for `r < rows`: inside the slices (checked above).
    unsafe {
        let pp = panel.as_ptr();
        for q in 0..k4 {
            let mut wv = [_mm256_setzero_si256(); 4];
            for (g, v) in wv.iter_mut().enumerate() {
                let bytes = _mm_loadu_si128(pp.add(q * NR + 4 * g).cast());
                *v = _mm256_cvtepi8_epi16(bytes);
            }
            for (r, acc) in acc.iter_mut().enumerate().take(rows) {
                let x = quad(*xs.as_ptr().add(r * k4 + q));
                for (a, v) in acc.iter_mut().zip(&wv) {
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(x, *v));
                }
            }
        }
    }
    acc
}
