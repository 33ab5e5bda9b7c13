//! `x W^T + b` in 8-bit integers, as GNMT's quantized inference (Wu et al. 2016, section 6):
//! the weights quantized once per output row (symmetric, `scale = max|w| / 127`), each input row
//! quantized dynamically the same way, the products summed exactly in 32-bit integers, then
//! scaled back to float32. A quarter of float32's weight bytes; on CPUs with AVX512-VNNI (Intel
//! since Cascade Lake, AMD since Zen 4) four multiply-adds per 32-bit lane and instruction
//! (`vpdpbusd`), on AMX-INT8 tiles where those are chosen, and on AVX2 two (`vpmaddwd`).
//!
//! `vpdpbusd` multiplies unsigned by signed bytes: the input is stored offset by 128 (`q + 128`,
//! 1..=255) and `128 * sum_k w` is taken back out of each column's sum. The integer sums are
//! exact, so the portable build gives the same bits as the VNNI one.

use crate::gemm::{bias_or_zeros, pack_panels, RowParts, NR};
use crate::Isa;

/// Whether this process runs [`PackedLinearI8`] on AVX512-VNNI (or AMX-INT8), else on AVX2's
/// 16-bit products or portable code ([`int8_faster_than_float32`] says where those still pay).
pub fn int8_dot_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Isa::detected() >= Isa::Avx512 && std::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this process runs [`PackedLinearI8`] on AVX-VNNI where it has no AVX512-VNNI (Intel
/// since Alder Lake without AVX-512, and Sierra Forest): 256-bit `vpdpbusd`, VEX encoded. An
/// AVX2-class extension, so `GNMT_MAX_ISA=avx2` keeps it.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn avx_vnni_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !int8_dot_supported()
            && Isa::detected() >= Isa::Avx2
            && std::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The build this process runs int8 products on where the AMX tiles do not take them (all of
/// them where the tiles are not chosen): [`PackedLinearI8::build`]'s names but the tiles'.
pub fn int8_build() -> &'static str {
    Route::beside_tiles().name()
}

/// Whether int8 products run faster than float32's in this process, so that `--precision int8`
/// is a faster path: on AVX512-VNNI (and AMX-INT8), and on AVX2 where float32's products run at
/// AVX2 width too (`vpmaddwd`, sixteen multiply-adds an instruction against eight fused ones:
/// 1.4-1.5x float32's products on a Zen 4 capped at AVX2). Not on AVX-512 without VNNI, where
/// float32's products are twice as wide and int8's stay AVX2.
pub fn int8_faster_than_float32() -> bool {
    int8_dot_supported() || Isa::detected() == Isa::Avx2
}

/// Symmetric 8-bit quantization of `v`: the scale (`max|v| / 127`, 1 for an all-zero `v`) and
/// `round(v / scale)` in -127..=127.
pub fn quantize(v: &[f32]) -> (f32, Vec<i8>) {
    let scale = scale_of(v);
    (scale, v.iter().map(|&x| quantized(x, scale)).collect())
}

/// [`quantize`]'s scale of `v`.
#[inline(always)]
fn scale_of(v: &[f32]) -> f32 {
    scale_of_max(max_abs(0.0, v))
}

/// The largest of `max` and `|x|` for `x` in `v` (NaNs skipped).
#[inline(always)]
fn max_abs(max: f32, v: &[f32]) -> f32 {
    v.iter().fold(max, |m, x| m.max(x.abs()))
}

/// [`quantize`]'s scale of values whose largest magnitude is `max`.
#[inline(always)]
fn scale_of_max(max: f32) -> f32 {
    if max > 0.0 && max.is_finite() {
        max / 127.0
    } else {
        1.0
    }
}

/// [`quantize`]'s value of `x` (rounded half away from zero).
#[inline(always)]
fn quantized(x: f32, scale: f32) -> i8 {
    quantized_f32(x, scale) as i8
}

/// [`quantized`] as a float: an integer in -127..=127 (0 for NaN, as the cast to i8 makes it).
#[inline(always)]
fn quantized_f32(x: f32, scale: f32) -> f32 {
    let q = (x / scale).round().clamp(-127.0, 127.0);
    if q.is_nan() {
        0.0
    } else {
        q
    }
}

/// [`quantized`] as a 32-bit integer, by a conversion the compiler vectorizes: the safe `as`
/// casts saturate, and their out-of-range and NaN checks were compiled a value at a time (so
/// was an older form that read the integer out of the float's mantissa, once the compiler saw
/// through it): 5-7% of a one-thread int8 search.
#[inline(always)]
fn quantized_i32(x: f32, scale: f32) -> i32 {
    let q = quantized_f32(x, scale);
    // SAFETY: `q` is an integer in -127..=127 (quantized_f32 clamps, and maps NaN to 0):
    // finite and representable in i32, which is all `to_int_unchecked` asks.
    #[allow(unsafe_code)]
    unsafe {
        q.to_int_unchecked::<i32>()
    }
}

/// A matrix `[n, k]` quantized per row ([`quantize`]): what a quantized model file holds, and
/// what [`PackedLinearI8`] packs.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedMatrix {
    pub n: usize,
    pub k: usize,
    /// Row-major `[n, k]`.
    pub values: Vec<i8>,
    /// Per row.
    pub scales: Vec<f32>,
}

impl QuantizedMatrix {
    /// `w` `[n, k]` quantized row by row.
    ///
    /// # Panics
    /// If `w` is not `n * k` long.
    pub fn quantize(w: &[f32], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight");
        let (values, scales) = quantize_matrix_on(Isa::detected(), w, n, k);
        QuantizedMatrix {
            n,
            k,
            values,
            scales,
        }
    }

    /// Whether the lengths agree with `n` and `k` (a file's tensors may not).
    pub fn is_consistent(&self) -> bool {
        self.values.len() == self.n * self.k && self.scales.len() == self.n
    }

    /// Row `r` in float32 (an embedding lookup).
    pub fn row_f32(&self, r: usize, out: &mut Vec<f32>) {
        let scale = self.scales.get(r).copied().unwrap_or(0.0);
        let row = r
            .checked_mul(self.k)
            .and_then(|a| self.values.get(a..a.checked_add(self.k)?))
            .unwrap_or(&[]);
        out.extend(row.iter().map(|&q| q as f32 * scale));
        out.resize(out.len() + self.k - row.len(), 0.0);
    }

    /// Bytes of the values and scales.
    pub fn bytes(&self) -> usize {
        self.values.len() + 4 * self.scales.len()
    }
}

/// A weight matrix `W` `[n, k]` quantized per row and packed as `ceil(n / 16)` panels of
/// `ceil(k / 4)` rows, each row 16 columns of four consecutive `k` (one `vpdpbusd` lane; zero
/// beyond `n` and `k`).
#[derive(Debug, Clone)]
pub struct PackedLinearI8 {
    pub(crate) n: usize,
    pub(crate) k: usize,
    /// `k` quads per panel row: `ceil(k / 4)`.
    pub(crate) k4: usize,
    /// Per quad, the four signed bytes of `k = 4q..4q + 3`, lowest first.
    pub(crate) panels: Vec<u32>,
    /// Per output column: its weights' scale, and `128 * sum_k w_q` (the input offset's share).
    pub(crate) scales: Vec<f32>,
    pub(crate) offsets: Vec<i32>,
    pub(crate) bias: Vec<f32>,
}

impl PackedLinearI8 {
    /// Quantizes `w` `[n, k]` per row and packs it, with the optional float32 bias `[n]`.
    ///
    /// # Panics
    /// If the lengths do not match `n` and `k`.
    pub fn new(w: &[f32], bias: Option<&[f32]>, n: usize, k: usize) -> Self {
        Self::from_quantized(&QuantizedMatrix::quantize(w, n, k), bias)
    }

    /// Packs weights quantized already, with the optional float32 bias `[n]`.
    ///
    /// # Panics
    /// If `w` is not [consistent](QuantizedMatrix::is_consistent).
    pub fn from_quantized(w: &QuantizedMatrix, bias: Option<&[f32]>) -> Self {
        assert!(w.is_consistent(), "quantized weight");
        let (n, k) = (w.n, w.k);
        let k4 = k.div_ceil(4);
        let rows: Vec<&[i8]> = w.values.chunks_exact(k.max(1)).take(n).collect();
        let mut scales = vec![1f32; n.div_ceil(NR) * NR];
        let mut offsets = vec![0i32; n.div_ceil(NR) * NR];
        for (j, q) in rows.iter().enumerate() {
            scales[j] = w.scales[j];
            offsets[j] = 128 * q.iter().map(|&x| x as i32).sum::<i32>();
        }
        let quads = |bytes: &[i8]| pack_quad(bytes.iter().map(|&b| b as u8));
        PackedLinearI8 {
            n,
            k,
            k4,
            panels: pack_panels(rows.iter(), n, k4, 4, quads),
            scales,
            offsets,
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

    /// Bytes the packed weights take (a quarter of float32's, plus a scale and an offset per
    /// output column).
    pub fn weight_bytes(&self) -> usize {
        4 * (self.panels.len() + self.scales.len() + self.offsets.len())
    }

    /// `out[m, n] ~ x[m, k] . W^T + b` with both sides quantized to 8 bits (each row of `x` with
    /// its own scale), summed exactly in 32-bit integers.
    ///
    /// # Panics
    /// If `x` is not `m * k` long or `out` not `m * n`.
    pub fn forward(&self, x: &[f32], m: usize, out: &mut [f32]) {
        self.forward_on(true, x, m, out)
    }

    /// [`PackedLinearI8::forward`] on AMX-INT8 tiles when `fast` and they are chosen
    /// ([`crate::amx_int8_chosen`]; `k` a multiple of 64), else on AVX512-VNNI, AVX-VNNI or AVX2
    /// when `fast` and the CPU has it, else on portable code: the same bits from all.
    pub(crate) fn forward_on(&self, fast: bool, x: &[f32], m: usize, out: &mut [f32]) {
        assert_eq!(x.len(), m * self.k, "input");
        self.parts_on(fast, RowParts::new(&[(x, self.k)]), m, out)
    }

    /// [`PackedLinearI8::forward`] of the rows `x` gives as parts: the same bits as of their
    /// concatenation.
    ///
    /// # Panics
    /// If the parts are not `m` rows `k` wide in all, or `out` not `m * n`.
    pub fn forward_parts(&self, x: RowParts, m: usize, out: &mut [f32]) {
        self.parts_on(true, x, m, out)
    }

    /// The build [`PackedLinearI8::forward`] runs these weights on, on this CPU and process:
    /// `"amx-int8 tiles"`, `"avx512-vnni"`, `"avx-vnni"`, `"avx2"` or `"portable"` (the tiles
    /// take only weights whose `k` is a multiple of 64).
    pub fn build(&self) -> &'static str {
        self.route(true).name()
    }

    /// Which build `fast` (else portable) code takes for these weights: the only place the
    /// choice is made, so [`PackedLinearI8::build`] names what runs.
    fn route(&self, fast: bool) -> Route {
        #[cfg(target_arch = "x86_64")]
        if fast && crate::amx_int8_chosen() && crate::amx::fits(self) {
            return Route::Amx;
        }
        if fast {
            Route::beside_tiles()
        } else {
            Route::Portable
        }
    }

    fn parts_on(&self, fast: bool, x: RowParts, m: usize, out: &mut [f32]) {
        assert!(x.holds(m) && x.width() == self.k, "input");
        assert_eq!(out.len(), m * self.n, "output");
        INPUT_ROWS.with(|rows| {
            let mut rows = rows.borrow_mut();
            quantize_rows_into(Isa::detected(), x, m, self.k, self.k4, &mut rows);
            self.sums_on(fast, &rows.quads, &rows.scales, m, out);
        })
    }

    /// The products of the quantized input rows `xs` (`[m, k4]` quads) with these weights, on
    /// the route `fast` picks.
    fn sums_on(&self, fast: bool, xs: &[u32], row_scales: &[f32], m: usize, out: &mut [f32]) {
        match self.route(fast) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: route chose the tiles: the CPU has AMX-INT8 and AVX512-VNNI, the process
            // the tile state (amx_int8_chosen), and `self` fits them.
            #[allow(unsafe_code)]
            Route::Amx => unsafe { crate::amx::linear_i8(self, xs, row_scales, m, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: route chose VNNI: the CPU has AVX-512 F, DQ, BW, VL and VNNI
            // (int8_dot_supported).
            #[allow(unsafe_code)]
            Route::Vnni => unsafe { crate::avx512::linear_i8(self, xs, row_scales, m, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: route chose AVX-VNNI: the CPU has it, and AVX2 and FMA (Isa::detected).
            #[allow(unsafe_code)]
            Route::AvxVnni => unsafe {
                crate::avx2::linear_i8_avx_vnni(self, xs, row_scales, m, out)
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: route chose AVX2: the CPU has AVX2 and FMA (Isa::detected).
            #[allow(unsafe_code)]
            Route::Avx2 => unsafe { crate::avx2::linear_i8(self, xs, row_scales, m, out) },
            _ => {
                let mut sums = vec![0i32; m * self.n];
                sums_portable(self, xs, m, &mut sums);
                self.finish(&sums, row_scales, out);
            }
        }
    }

    /// `(sum - offset) * scales + bias` for every row and column, rounded as the vector builds
    /// round it (the portable build's; baseline x86-64 code calls a library function for each
    /// multiply-add, which the vector builds do not).
    fn finish(&self, sums: &[i32], row_scales: &[f32], out: &mut [f32]) {
        let n = self.n;
        for (r, &sx) in row_scales.iter().enumerate() {
            for j in 0..n {
                let s = (sums[r * n + j] - self.offsets[j]) as f32;
                out[r * n + j] = s.mul_add(sx * self.scales[j], self.bias[j]);
            }
        }
    }
}

/// Where [`PackedLinearI8::forward`] runs ([`PackedLinearI8::route`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum Route {
    Amx,
    Vnni,
    AvxVnni,
    Avx2,
    Portable,
}

impl Route {
    /// Where this process runs the products the AMX tiles do not take (all of them where the
    /// tiles are not chosen).
    fn beside_tiles() -> Route {
        #[cfg(target_arch = "x86_64")]
        {
            if int8_dot_supported() {
                return Route::Vnni;
            }
            if avx_vnni_supported() {
                return Route::AvxVnni;
            }
            if Isa::detected() >= Isa::Avx2 {
                return Route::Avx2;
            }
        }
        Route::Portable
    }

    fn name(self) -> &'static str {
        match self {
            Route::Amx => "amx-int8 tiles",
            Route::Vnni => "avx512-vnni",
            Route::AvxVnni => "avx-vnni",
            Route::Avx2 => "avx2",
            Route::Portable => "portable",
        }
    }
}

/// Four bytes, lowest `k` first (zero for missing ones), as one 32-bit lane.
#[inline]
fn pack_quad(bytes: impl Iterator<Item = u8>) -> u32 {
    bytes
        .enumerate()
        .fold(0u32, |acc, (i, b)| acc | ((b as u32) << (8 * i)))
}

/// Input rows quantized for a product: `[m, k4]` quads (each row's values offset by 128, a
/// missing `k` is 128) and the rows' scales.
#[derive(Debug, Default)]
pub(crate) struct QuantizedRows {
    pub(crate) quads: Vec<u32>,
    pub(crate) scales: Vec<f32>,
}

std::thread_local! {
    /// Each thread's buffer for the input rows of its int8 products: every product of a search
    /// step quantizes its input, and a new buffer each time cost an allocation, a fill and a copy.
    static INPUT_ROWS: std::cell::RefCell<QuantizedRows> =
        std::cell::RefCell::new(QuantizedRows::default());
}

/// [`quantize_rows_into`] of one slice on this process's build (the tests' entry).
#[cfg(test)]
pub(crate) fn quantize_rows(x: &[f32], m: usize, k: usize, k4: usize) -> (Vec<u32>, Vec<f32>) {
    quantize_rows_on(Isa::detected(), RowParts::new(&[(x, k)]), m, k, k4)
}

/// [`quantize_rows_into`] into a new buffer (the tests' entry).
#[cfg(test)]
pub(crate) fn quantize_rows_on(
    isa: Isa,
    x: RowParts,
    m: usize,
    k: usize,
    k4: usize,
) -> (Vec<u32>, Vec<f32>) {
    let mut rows = QuantizedRows::default();
    quantize_rows_into(isa, x, m, k, k4, &mut rows);
    (rows.quads, rows.scales)
}

per_isa! {
    /// Each row of `x` (`[m, k]`, given as parts) quantized with its own scale, offset by 128
    /// into 1..=255 and packed as quads `[m, k4]` into `rows` (a missing `k` is 128: zero after
    /// the offset, and the weights there are zero anyway), with the rows' scales, on the best
    /// build `isa` and the CPU allow. Every input row of every int8 product goes through here,
    /// so it is compiled for the widest vector unit the CPU has (the same bits from each build:
    /// division and rounding are exact operations).
    pub(crate) fn quantize_rows_into['a](x: RowParts<'a>, m: usize, k: usize, k4: usize, rows: &mut QuantizedRows)
        = quantize_rows_with;
}

/// [`quantize_rows_into`]'s body, inlined into each build (plain loops the compiler vectorizes).
/// Every byte of the quads is written, so a buffer kept from an earlier product needs no fill.
#[inline(always)]
fn quantize_rows_with(x: RowParts, m: usize, k: usize, k4: usize, rows: &mut QuantizedRows) {
    rows.quads.resize(m * k4, 0);
    rows.scales.clear();
    let bytes = quad_bytes(&mut rows.quads);
    for r in 0..m {
        let mut max = 0f32;
        for part in x.row(r) {
            max = max_abs(max, part);
        }
        let scale = scale_of_max(max);
        let (mut out, padding) = bytes[r * k4 * 4..(r + 1) * k4 * 4].split_at_mut(k);
        for part in x.row(r) {
            let (here, rest) = out.split_at_mut(part.len());
            for (b, &v) in here.iter_mut().zip(part) {
                *b = (quantized_i32(v, scale) + 128) as u8;
            }
            out = rest;
        }
        padding.fill(128);
        rows.scales.push(scale);
    }
    // Byte `i` of a quad is bits `8 i..` of its lane (pack_quad's order): the bytes were
    // written in memory order, which is that order on little-endian CPUs only.
    if cfg!(target_endian = "big") {
        for q in rows.quads.iter_mut() {
            *q = q.swap_bytes();
        }
    }
}

/// The bytes of `quads`, in memory order.
#[inline(always)]
fn quad_bytes(quads: &mut [u32]) -> &mut [u8] {
    let len = std::mem::size_of_val(quads);
    // SAFETY: the pointer and length cover exactly `quads`' memory, which the returned slice
    // borrows mutably in its place; u8 needs no alignment, and every bit pattern is a valid u32.
    #[allow(unsafe_code)]
    unsafe {
        std::slice::from_raw_parts_mut(quads.as_mut_ptr().cast::<u8>(), len)
    }
}

per_isa! {
    /// [`QuantizedMatrix::quantize`]'s values and scales on the best build `isa` and the CPU
    /// allow: every weight of an int8 model passes through here when it is packed.
    pub(crate) fn quantize_matrix_on(w: &[f32], n: usize, k: usize) -> (Vec<i8>, Vec<f32>)
        = quantize_matrix_with;
}

/// [`quantize_matrix_on`]'s body, inlined into each build: [`quantize`] row by row, converted
/// as [`quantize_rows_with`] converts (the same values as the `as` cast, which the compiler
/// does not vectorize).
#[inline(always)]
fn quantize_matrix_with(w: &[f32], n: usize, k: usize) -> (Vec<i8>, Vec<f32>) {
    let mut values = vec![0i8; n * k];
    let mut scales = vec![1f32; n];
    if k == 0 {
        return (values, scales);
    }
    for ((row, out), scale) in w
        .chunks_exact(k)
        .zip(values.chunks_exact_mut(k))
        .zip(scales.iter_mut())
    {
        *scale = scale_of(row);
        for (b, &v) in out.iter_mut().zip(row) {
            *b = quantized_i32(v, *scale) as i8;
        }
    }
    (values, scales)
}

/// The portable build of the integer sums: `sums[r, j] = sum_k (x_q + 128) * w_q`.
pub(crate) fn sums_portable(w: &PackedLinearI8, xs: &[u32], m: usize, sums: &mut [i32]) {
    let (n, k4) = (w.n, w.k4);
    if k4 == 0 {
        return;
    }
    let unsigned = |v: u32, i: usize| ((v >> (8 * i)) & 0xFF) as i32;
    let signed = |v: u32, i: usize| ((v >> (8 * i)) & 0xFF) as u8 as i8 as i32;
    for r in 0..m {
        let xr = &xs[r * k4..(r + 1) * k4];
        for (p, panel) in w.panels.chunks_exact(k4 * NR).enumerate() {
            let cols = NR.min(n - p * NR);
            for c in 0..cols {
                let mut acc = 0i32;
                for (quad, &xv) in xr.iter().enumerate() {
                    let wv = panel[quad * NR + c];
                    acc += (0..4).map(|i| unsigned(xv, i) * signed(wv, i)).sum::<i32>();
                }
                sums[r * n + p * NR + c] = acc;
            }
        }
    }
}
