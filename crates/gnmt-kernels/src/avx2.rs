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

/// [`math::attend`] compiled for this build (its loops vectorized here).
#[target_feature(enable = "avx2,fma")]
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
pub(crate) fn cell(cell: math::Cell<'_>) {
    let hidden = cell.hidden;
    let split = hidden - hidden % LANES;
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
        if let Some(p) = picked {
            // The scalar tail below updates `c` in place: it starts from the picked row.
            c[split..].copy_from_slice(&p[split..]);
        }
        for j in (0..split).step_by(LANES) {
            let at = |s: &[f32]| load(&s[j..j + LANES]);
            let cn = _mm256_fmadd_ps(
                sigmoid8(at(f)),
                at(picked.unwrap_or(&*c)),
                _mm256_mul_ps(sigmoid8(at(i)), tanh8(at(g))),
            );
            let hn = _mm256_mul_ps(sigmoid8(at(o)), tanh8(cn));
            c[j..j + LANES].copy_from_slice(&store(cn));
            h[j..j + LANES].copy_from_slice(&store(hn));
        }
        for j in split..hidden {
            c[j] = math::sigmoid1(f[j]) * c[j] + math::sigmoid1(i[j]) * math::tanh1(g[j]);
            h[j] = math::sigmoid1(o[j]) * math::tanh1(c[j]);
        }
    }
}

/// `$micro::<R>$args` with the row count `$rows` (1 to [`I8_ROWS`]) as the constant `R`, its
/// accumulators padded to [`I8_ROWS`] rows: each row count has its own copy of the int8
/// micro-kernel, its accumulators in registers.
macro_rules! by_rows {
    ($rows:expr, $micro:ident $args:tt) => {
        match $rows {
            I8_ROWS => $micro::<I8_ROWS> $args,
            5 => pad_rows($micro::<5> $args),
            4 => pad_rows($micro::<4> $args),
            3 => pad_rows($micro::<3> $args),
            2 => pad_rows($micro::<2> $args),
            _ => pad_rows($micro::<1> $args),
        }
    };
}

/// [`crate::PackedLinearI8::forward`] on AVX2 (no VNNI) from the quantized input rows: each
/// panel row's columns of byte quads widened to 16-bit (four columns a register), `vpmaddwd`
/// against the row's input quad (offset bytes, widened to 16-bit once, beforehand, so that each
/// use is one broadcast load), [`I8_ROWS`] rows and [`I8_COLUMNS`] columns at a time; a column's
/// two lanes added at the end, then finished as every int8 build finishes them. The integer sums
/// are exact, so the outputs have the VNNI and portable builds' bits.
#[target_feature(enable = "avx2,fma")]
pub(crate) fn linear_i8(
    w: &crate::PackedLinearI8,
    xs: &[u32],
    row_scales: &[f32],
    m: usize,
    out: &mut [f32],
) {
    use crate::gemm::NR;
    let (n, k4) = (w.n, w.k4);
    let wide = widen_quads(xs);
    for p in 0..n.div_ceil(NR) {
        let panel = &w.panels[p * k4 * NR..(p + 1) * k4 * NR];
        for col in (p * NR..n.min((p + 1) * NR)).step_by(I8_COLUMNS) {
            let columns = I8Columns::of(w, col, I8_COLUMNS.min(n - col));
            let mut r0 = 0;
            while r0 < m {
                let rows = I8_ROWS.min(m - r0);
                let (x, c0) = (&wide[r0 * k4..(r0 + rows) * k4], col - p * NR);
                let acc = by_rows!(rows, micro_i8(panel, c0, x, k4));
                for (r, lanes) in acc.iter().enumerate().take(rows) {
                    let row = &mut out[(r0 + r) * n + col..][..columns.cols];
                    columns.finish(row_scales[r0 + r], column_sums(lanes), row);
                }
                r0 += rows;
            }
        }
    }
}

/// What [`linear_i8`] finishes a row's sums over up to [`I8_COLUMNS`] output columns with,
/// loaded once for all rows (zero beyond `cols`).
struct I8Columns {
    cols: usize,
    offsets: __m256i,
    scales: __m256,
    bias: __m256,
}

impl I8Columns {
    /// The `cols` (at most [`I8_COLUMNS`]) columns of `w` from `col`.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn of(w: &crate::PackedLinearI8, col: usize, cols: usize) -> I8Columns {
        let mut offsets = [0i32; I8_COLUMNS];
        let (mut scales, mut bias) = ([0f32; I8_COLUMNS], [0f32; I8_COLUMNS]);
        offsets[..cols].copy_from_slice(&w.offsets[col..col + cols]);
        scales[..cols].copy_from_slice(&w.scales[col..col + cols]);
        bias[..cols].copy_from_slice(&w.bias[col..col + cols]);
        I8Columns {
            cols,
            // SAFETY: each array holds the eight values read.
            offsets: unsafe { _mm256_loadu_si256(offsets.as_ptr().cast()) },
            scales: load(&scales),
            bias: load(&bias),
        }
    }

    /// `(sums - offsets) * (row_scale * scales) + bias` into `out` (`cols` long): in the one order
    /// every int8 build uses.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn finish(&self, row_scale: f32, sums: __m256i, out: &mut [f32]) {
        let s = _mm256_cvtepi32_ps(_mm256_sub_epi32(sums, self.offsets));
        let scale = _mm256_mul_ps(splat(row_scale), self.scales);
        let v = _mm256_fmadd_ps(s, scale, self.bias);
        if out.len() == LANES {
            // SAFETY: `out` has room for the eight floats written.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
        } else {
            out.copy_from_slice(&store(v)[..out.len()]);
        }
    }
}

/// Rows of input [`linear_i8`]'s micro-kernel takes at a time: six rows' twelve accumulators (of
/// [`I8_COLUMNS`] columns), the panel row's two registers and the broadcast fit in the sixteen.
/// Sixteen columns (four registers a row) left room for two rows only: three spilled, and the
/// reloads stalled the accumulators (1.3x slower).
const I8_ROWS: usize = 6;

/// Columns [`linear_i8`]'s micro-kernel takes at a time: half a panel, two registers.
const I8_COLUMNS: usize = 8;

/// Fewer than [`I8_ROWS`] rows' accumulators in an array of [`I8_ROWS`] (the rest zero).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn pad_rows<const R: usize>(acc: [[__m256i; 2]; R]) -> [[__m256i; 2]; I8_ROWS] {
    let mut all = [[_mm256_setzero_si256(); 2]; I8_ROWS];
    all[..R].copy_from_slice(&acc);
    all
}

/// One row's [`I8_COLUMNS`] column sums from its two registers (two lanes per column), in order.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn column_sums(lanes: &[__m256i; 2]) -> __m256i {
    // `vphaddd` adds neighbouring lanes within each 128-bit half: columns 0-1 and 4-5, then 2-3
    // and 6-7; the permute puts them in order.
    let sums = _mm256_hadd_epi32(lanes[0], lanes[1]);
    _mm256_permute4x64_epi64::<0b11_01_10_00>(sums)
}

/// Input quads (four offset bytes each) as four 16-bit values each: what [`micro_i8`]
/// broadcasts.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn widen_quads(xs: &[u32]) -> Vec<u64> {
    // Filled as it grows: a zeroed vector would be written twice (`memset`, 1.6% of a search).
    let mut wide = Vec::with_capacity(xs.len());
    let chunks = xs.chunks_exact(4);
    let tail = chunks.remainder();
    for x in chunks {
        let mut four = [0u64; 4];
        // SAFETY: `x` is four quads (16 bytes read), `four` has room for the 32 bytes written.
        unsafe {
            let bytes = _mm_loadu_si128(x.as_ptr().cast());
            _mm256_storeu_si256(four.as_mut_ptr().cast(), _mm256_cvtepu8_epi16(bytes));
        }
        wide.extend_from_slice(&four);
    }
    wide.extend(tail.iter().map(|&x| {
        (0..4).fold(0u64, |a, i| {
            a | (((x as u64 >> (8 * i)) & 0xFF) << (16 * i))
        })
    }));
    wide
}

/// `R` rows of widened input quads (`xs`, `R * k4`) times columns `c0..c0 + 8` of one int8 panel
/// (`k4 * 16` quads): per row, two registers of eight 32-bit lanes, two lanes per column.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn micro_i8<const R: usize>(panel: &[u32], c0: usize, xs: &[u64], k4: usize) -> [[__m256i; 2]; R] {
    use crate::gemm::NR;
    assert!(panel.len() >= k4 * NR && c0 + I8_COLUMNS <= NR && xs.len() >= R * k4);
    let mut acc = [[_mm256_setzero_si256(); 2]; R];
    // SAFETY: the loads read `panel[q * NR + c0 + 4 * g..][..4]` (16 bytes) for `q < k4`,
    // `g < 2`, and `xs[r * k4 + q]` for `r < R`: inside the slices (checked above).
    unsafe {
        let (pp, xp) = (panel.as_ptr().add(c0), xs.as_ptr());
        for q in 0..k4 {
            let mut wv = [_mm256_setzero_si256(); 2];
            for (g, v) in wv.iter_mut().enumerate() {
                *v = _mm256_cvtepi8_epi16(_mm_loadu_si128(pp.add(q * NR + 4 * g).cast()));
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_set1_epi64x(*xp.add(r * k4 + q) as i64);
                for (a, v) in acc.iter_mut().zip(&wv) {
                    *a = _mm256_add_epi32(*a, _mm256_madd_epi16(x, *v));
                }
            }
        }
    }
    acc
}

/// Writes an int8 product on 256-bit `vpdpbusd` (`$dot`, under `$features`): [`linear_i8`]'s
/// loop with each panel row's byte quads used as they are stored (one 32-bit lane per column, no
/// widening) and each input quad broadcast as its four offset bytes; a lane's sum is its
/// column's, exact, so the outputs have every other build's bits.
macro_rules! vnni256 {
    ($(#[$attr:meta])* $name:ident, $micro:ident, $features:literal, $dot:ident) => {
        $(#[$attr])*
        #[target_feature(enable = $features)]
        pub(crate) fn $name(
            w: &crate::PackedLinearI8,
            xs: &[u32],
            row_scales: &[f32],
            m: usize,
            out: &mut [f32],
        ) {
            use crate::gemm::NR;
            let (n, k4) = (w.n, w.k4);
            for p in 0..n.div_ceil(NR) {
                let panel = &w.panels[p * k4 * NR..(p + 1) * k4 * NR];
                // The panel's two halves of eight columns, where they exist (the second may not).
                let halves = [p * NR, p * NR + I8_COLUMNS]
                    .map(|col| (col < n).then(|| (col, I8Columns::of(w, col, I8_COLUMNS.min(n - col)))));
                let mut r0 = 0;
                while r0 < m {
                    let rows = I8_ROWS.min(m - r0);
                    let x = &xs[r0 * k4..(r0 + rows) * k4];
                    let acc = by_rows!(rows, $micro(panel, x, k4));
                    for (r, lanes) in acc.iter().enumerate().take(rows) {
                        for ((col, half), sums) in halves.iter().flatten().zip(lanes) {
                            let row = &mut out[(r0 + r) * n + col..][..half.cols];
                            half.finish(row_scales[r0 + r], *sums, row);
                        }
                    }
                    r0 += rows;
                }
            }
        }

        /// `R` rows of offset input quads (`xs`, `R * k4`) times one int8 panel (`k4 * 16`
        /// quads): per row, two registers of eight 32-bit lanes, one lane per column.
        #[inline]
        #[target_feature(enable = $features)]
        fn $micro<const R: usize>(panel: &[u32], xs: &[u32], k4: usize) -> [[__m256i; 2]; R] {
            use crate::gemm::NR;
            assert!(panel.len() >= k4 * NR && xs.len() >= R * k4);
            let mut acc = [[_mm256_setzero_si256(); 2]; R];
            // SAFETY: the loads read `panel[q * NR..][..16]` for `q < k4`, and `xs[r * k4 + q]`
            // for `r < R`: inside the slices (checked above).
            unsafe {
                let (pp, xp) = (panel.as_ptr(), xs.as_ptr());
                for q in 0..k4 {
                    let w0 = _mm256_loadu_si256(pp.add(q * NR).cast());
                    let w1 = _mm256_loadu_si256(pp.add(q * NR + I8_COLUMNS).cast());
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let x = _mm256_set1_epi32(*xp.add(r * k4 + q) as i32);
                        acc[0] = $dot(acc[0], x, w0);
                        acc[1] = $dot(acc[1], x, w1);
                    }
                }
            }
            acc
        }
    };
}

vnni256!(
    /// [`crate::PackedLinearI8::forward`] on AVX-VNNI (Intel since Alder Lake, AMD since Zen 5:
    /// the VEX-encoded `vpdpbusd` on 256 bits) from the quantized input rows.
    linear_i8_avx_vnni, micro_i8_avx_vnni, "avx2,fma,avxvnni", _mm256_dpbusd_avx_epi32
);

/// [`linear_i8_avx_vnni`]'s loop with AVX512-VNNI's 256-bit `vpdpbusd` (the same operation,
/// EVEX encoded): the tests' stand-in on CPUs without AVX-VNNI.
#[cfg(test)]
pub(crate) mod evex {
    use super::*;

    vnni256!(
        /// [`super::linear_i8_avx_vnni`] on AVX512-VNNI and AVX512-VL.
        linear_i8_vnni256, micro_i8_vnni256, "avx2,fma,avx512f,avx512vl,avx512vnni", _mm256_dpbusd_epi32
    );
}
