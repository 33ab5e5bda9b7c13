//! `x W^T + b` with `W` in bfloat16 and float32 accumulation: half the weight bytes of
//! [`crate::PackedLinear`], and on CPUs with AVX512-BF16 (Intel since Cooper Lake and Sapphire
//! Rapids, AMD since Zen 4) twice the multiply-adds per instruction (`vdpbf16ps`: two bf16
//! products into each float32 lane). The input rows are rounded to bf16 too (round to nearest,
//! ties to even), as that instruction takes them: the results are those of a bf16 model with
//! float32 sums, not float32's.

use crate::gemm::{bias_or_zeros, pack_panels, RowParts, NR};
use crate::Isa;

/// A float32 rounded to bfloat16 (nearest, ties to even; NaN stays NaN), as its 16 bits. Both
/// results are computed and one is selected, without a branch, so that loops over it vectorize.
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16;
    let quiet_nan = (b >> 16) | 0x40;
    (if x.is_nan() { quiet_nan } else { rounded }) as u16
}

/// The float32 value of bfloat16 bits (exact).
#[inline]
pub fn from_bf16(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Whether this process runs [`PackedLinearBf16`] on AVX512-BF16 (else on portable code, much
/// slower than [`crate::PackedLinear`]: callers then take another path).
pub fn bf16_dot_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Isa::detected() >= Isa::Avx512 && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether bf16 matrix products run faster than float32's on this CPU, so that a bf16 path
/// (translation, mixed-precision training) is worth its rounding: AMX-BF16 tiles (libtorch's
/// oneDNN uses them), or AVX512-BF16 on a CPU whose `vdpbf16ps` issues as often as its float32
/// FMA, twice the multiply-adds each.
///
/// That last holds on AMD (Zen 4 and Zen 5: on a Zen 4 core the bf16 kernel ran at 194-211
/// GFLOP/s against float32's 102-110) and not on Intel, whose `vdpbf16ps` issues at half the FMA's
/// rate: on a Xeon (family 6, model 207) without AMX exposed, the bf16 kernel ran at 82-86
/// GFLOP/s against float32's 145-165, and bf16 training of `small` at 0.63x float32's speed.
/// Asked once per process.
pub fn bf16_faster_than_float32() -> bool {
    static FASTER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FASTER.get_or_init(|| {
        crate::amx_bf16_available() || (bf16_dot_supported() && bf16_dot_at_fma_rate())
    })
}

/// Whether this CPU's `vdpbf16ps` is known to issue at its float32 FMA's rate: AMD's.
fn bf16_dot_at_fma_rate() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        cpu_vendor() == *b"AuthenticAMD"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// CPUID leaf 0's vendor string (EBX, EDX, ECX).
#[cfg(target_arch = "x86_64")]
fn cpu_vendor() -> [u8; 12] {
    let r = std::arch::x86_64::__cpuid(0);
    let mut v = [0u8; 12];
    for (i, reg) in [r.ebx, r.edx, r.ecx].into_iter().enumerate() {
        v[4 * i..4 * i + 4].copy_from_slice(&reg.to_le_bytes());
    }
    v
}

/// A weight matrix `W` `[n, k]` in bf16, packed as `ceil(n / 16)` panels of `ceil(k / 2)`
/// rows, each row 16 columns of two consecutive `k` (the pair `vdpbf16ps` multiplies into one
/// lane; zero beyond `n` and `k`).
#[derive(Debug, Clone)]
pub struct PackedLinearBf16 {
    pub(crate) n: usize,
    pub(crate) k: usize,
    /// `k` pairs per panel row: `ceil(k / 2)`.
    pub(crate) k2: usize,
    /// Per pair, the bf16 of `k = 2q` in the low half and `2q + 1` in the high half.
    pub(crate) panels: Vec<u32>,
    pub(crate) bias: Vec<f32>,
}

impl PackedLinearBf16 {
    /// Rounds `w` `[n, k]` to bf16 and packs it, with the optional float32 bias `[n]`.
    ///
    /// # Panics
    /// If the lengths do not match `n` and `k`.
    pub fn new(w: &[f32], bias: Option<&[f32]>, n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight");
        let k2 = k.div_ceil(2);
        PackedLinearBf16 {
            n,
            k,
            k2,
            panels: pack_panels(w.chunks_exact(k.max(1)), n, k2, 2, pack_pair),
            bias: bias_or_zeros(bias, n),
        }
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.k
    }

    /// The build [`PackedLinearBf16::forward`] multiplies on in this process: `"avx512-bf16"`
    /// (`vdpbf16ps`, where [`bf16_dot_supported`]) or `"portable"` (only the inputs' rounding
    /// is vector code there).
    pub fn build(&self) -> &'static str {
        if bf16_dot_supported() {
            "avx512-bf16"
        } else {
            "portable"
        }
    }

    /// `out[m, n] = bf16(x[m, k]) . W^T + b`, row-major, sums in float32.
    ///
    /// # Panics
    /// If `x` is not `m * k` long or `out` not `m * n`.
    pub fn forward(&self, x: &[f32], m: usize, out: &mut [f32]) {
        self.forward_on(bf16_dot_supported(), x, m, out)
    }

    /// [`PackedLinearBf16::forward`] on AVX512-BF16 when `fast` and the CPU has it, else on
    /// portable code.
    pub(crate) fn forward_on(&self, fast: bool, x: &[f32], m: usize, out: &mut [f32]) {
        assert_eq!(x.len(), m * self.k, "input");
        self.parts_on(fast, RowParts::new(&[(x, self.k)]), m, out)
    }

    /// [`PackedLinearBf16::forward`] of the rows `x` gives as parts: the same bits as of their
    /// concatenation (rounded in place where every part but the last is of even width, so no
    /// bf16 pair straddles two parts; else concatenated first).
    ///
    /// # Panics
    /// If the parts are not `m` rows `k` wide in all, or `out` not `m * n`.
    pub fn forward_parts(&self, x: RowParts, m: usize, out: &mut [f32]) {
        let parts = x.widths().count();
        if x.widths().take(parts.saturating_sub(1)).all(|w| w % 2 == 0) {
            self.parts_on(bf16_dot_supported(), x, m, out)
        } else {
            self.forward(&x.concat(m), m, out)
        }
    }

    fn parts_on(&self, fast: bool, x: RowParts, m: usize, out: &mut [f32]) {
        assert!(x.holds(m) && x.width() == self.k, "input");
        assert_eq!(out.len(), m * self.n, "output");
        let xs = pack_rows_on(Isa::detected(), x, m, self.k, self.k2);
        #[cfg(target_arch = "x86_64")]
        if fast && bf16_dot_supported() {
            // SAFETY: the CPU has AVX-512 F, DQ, BW, VL and BF16 (bf16_dot_supported).
            #[allow(unsafe_code)]
            unsafe {
                crate::avx512::linear_bf16(self, &xs, m, out)
            };
            return;
        }
        let _ = fast;
        linear(self, &xs, m, out);
    }
}

/// Two consecutive values (the second 0 when missing) as one bf16 pair (the weights' packing).
#[inline]
fn pack_pair(pair: &[f32]) -> u32 {
    let lo = to_bf16(pair[0]) as u32;
    let hi = pair.get(1).map_or(0, |&x| to_bf16(x) as u32);
    lo | (hi << 16)
}

per_isa! {
    /// The rows `x` (`[m, k]` as parts, every part but the last of even width) as bf16 pairs
    /// `[m, k2]` (the second half 0 for an odd `k`), on the best build `isa` and the CPU allow.
    /// Every input row of every bf16 product goes through here, so it is compiled for the
    /// widest vector unit the CPU has (the same bits from each build: the rounding is integer
    /// arithmetic).
    pub(crate) fn pack_rows_on['a](x: RowParts<'a>, m: usize, k: usize, k2: usize) -> Vec<u32>
        = pack_rows_with;
}

/// [`pack_rows_on`]'s body, inlined into each build: whole pairs in a loop without branches
/// (the compiler vectorizes it), then an odd last part's last value alone.
#[inline(always)]
fn pack_rows_with(x: RowParts, m: usize, k: usize, k2: usize) -> Vec<u32> {
    debug_assert_eq!(k2, k.div_ceil(2));
    let mut out = vec![0u32; m * k2];
    for (r, o) in out.chunks_exact_mut(k2.max(1)).take(m).enumerate() {
        let mut o = o;
        for part in x.row(r) {
            let (here, rest) = o.split_at_mut(part.len().div_ceil(2));
            for (o, pair) in here.iter_mut().zip(part.chunks_exact(2)) {
                *o = to_bf16(pair[0]) as u32 | ((to_bf16(pair[1]) as u32) << 16);
            }
            if part.len() % 2 == 1 {
                here[here.len() - 1] = to_bf16(part[part.len() - 1]) as u32;
            }
            o = rest;
        }
    }
    debug_assert_eq!(x.width(), k);
    out
}

/// The portable build: each lane's pair of products added in `vdpbf16ps`'s order.
pub(crate) fn linear(w: &PackedLinearBf16, xs: &[u32], m: usize, out: &mut [f32]) {
    let (n, k2) = (w.n, w.k2);
    if k2 == 0 {
        for r in 0..m {
            out[r * n..(r + 1) * n].copy_from_slice(&w.bias);
        }
        return;
    }
    let half = |v: u32, hi: bool| from_bf16(if hi { (v >> 16) as u16 } else { v as u16 });
    for r in 0..m {
        let xr = &xs[r * k2..(r + 1) * k2];
        for (p, panel) in w.panels.chunks_exact(k2 * NR).enumerate() {
            let mut acc = [0f32; NR];
            for (q, &xv) in xr.iter().enumerate() {
                let (x0, x1) = (half(xv, false), half(xv, true));
                for (c, a) in acc.iter_mut().enumerate() {
                    let wv = panel[q * NR + c];
                    *a = (*a + x1 * half(wv, true)) + x0 * half(wv, false);
                }
            }
            let cols = NR.min(n - p * NR);
            for c in 0..cols {
                out[r * n + p * NR + c] = acc[c] + w.bias[p * NR + c];
            }
        }
    }
}
