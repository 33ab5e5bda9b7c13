//! Intel AMX (Sapphire Rapids and later): which tile units the CPU and the OS offer, and the int8
//! product on them. `tdpbusd` multiplies a tile of 16 rows x 64 unsigned input bytes by a tile of
//! 16 quad-rows x 16 columns of signed weight bytes into 16 x 16 exact 32-bit sums: the sums
//! [`crate::PackedLinearI8`]'s `vpdpbusd` build makes, sixteen times the multiply-adds per
//! instruction. The packed int8 panels are already in the tiles' layout (a panel row is 16
//! columns x 4 bytes of `k`, 64 bytes), so the weights load as they are.
//!
//! Stable Rust has no AMX intrinsics: the tile instructions are inline assembly. Linux gives a
//! process the tile registers only after it asks once (`arch_prctl(ARCH_REQ_XCOMP_PERM)`).

#![allow(unsafe_code)]

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use crate::gemm::NR;
use crate::PackedLinearI8;

/// CPUID leaf 7's EDX bits.
const AMX_BF16: u32 = 1 << 22;
const AMX_TILE: u32 = 1 << 24;
const AMX_INT8: u32 = 1 << 25;

/// Whether the CPU has the AMX `units` (CPUID bits) with the tile unit, and the OS saves the
/// tiles' state (XCR0 bits 17 and 18).
fn cpu_and_os_have(units: u32) -> bool {
    if __cpuid(0).eax < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    let want = units | AMX_TILE;
    // (AVX-512 detected means the OS set OSXSAVE: XGETBV is then available.)
    edx & want == want && std::is_x86_feature_detected!("avx512f") && tile_state_enabled()
}

/// Whether XCR0 enables the tile configuration and data state. Call only where OSXSAVE is set.
fn tile_state_enabled() -> bool {
    const XTILE_STATE: u64 = 0b11 << 17;
    #[target_feature(enable = "xsave")]
    fn xcr0() -> u64 {
        // SAFETY: XGETBV with ECX = 0 is defined once the OS has set OSXSAVE (the caller's check).
        unsafe { _xgetbv(0) }
    }
    // SAFETY: the CPU supports XSAVE (OSXSAVE implies it), which `xcr0` is compiled for.
    unsafe { xcr0() & XTILE_STATE == XTILE_STATE }
}

/// Whether the CPU has AMX-BF16 tile units and the OS saves their state. libtorch's oneDNN then
/// runs bf16 matrix products on them, faster than [`crate::PackedLinearBf16`]'s `vdpbf16ps`,
/// which on such Xeons ran slower than float32 (see `gnmt_translate::CpuBf16`).
/// Asked once per process.
pub fn amx_bf16_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| cpu_and_os_have(AMX_BF16))
}

/// Whether this process can run int8 products on AMX-INT8 tiles: the CPU has them, the OS
/// granted the process their state, and the AVX-512 VNNI build is in use
/// ([`crate::int8_dot_supported`]: it finishes the sums).
/// Asked once per process.
pub fn amx_int8_supported() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        crate::int8_dot_supported() && cpu_and_os_have(AMX_INT8) && request_tile_state()
    })
}

/// Whether [`crate::PackedLinearI8`] runs on the tiles: wherever [`amx_int8_supported`],
/// unless `GNMT_MAX_ISA` ([`crate::MAX_ISA_VARIABLE`]) caps the kernels at `avx512` or below. On a Xeon
/// (family 6, model 207) the tiles ran `small`'s products at 2.2-2.8x the VNNI build and a
/// one-thread int8 search at 1.2-1.45x (`gnmt bench linear`, `gnmt bench translate`).
pub fn amx_int8_chosen() -> bool {
    static CHOSEN: OnceLock<bool> = OnceLock::new();
    *CHOSEN.get_or_init(|| crate::Isa::cap().is_none() && amx_int8_supported())
}

/// Asks Linux for the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`),
/// for every thread of the process; without it the first tile load faults.
fn request_tile_state() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes which state the kernel saves for
    // this process; it reads and writes no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

/// The tiles' shapes (`ldtilecfg`'s 64 bytes): palette 1, tiles 0-7 each 16 rows of 64 bytes.
/// Tiles 0-3 hold the sums of two row blocks by two panels, 4-5 the input rows, 6-7 the panels.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn sixteen_by_sixty_four() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
        }
        TileConfig(c)
    }
}

/// Rows per block: two input tiles.
const ROWS: usize = 32;
/// `k` quads per tile: 64 bytes.
const QUADS: usize = 16;

/// Whether [`linear_i8`] takes `w`: `k` a multiple of 64 (whole tiles; other shapes run on
/// VNNI).
pub(crate) fn fits(w: &PackedLinearI8) -> bool {
    w.k4 > 0 && w.k4.is_multiple_of(QUADS)
}

/// [`crate::PackedLinearI8::forward`] on AMX-INT8: the same sums as the `vpdpbusd` build, and
/// the same finishing arithmetic as [`crate::avx512::finish_i8`], so the same bits. Blocks of 32
/// rows (the last padded with zero rows) by two panels, over panel blocks sized for L2 as the
/// vector builds are.
///
/// The tiles' sums leave through memory, and a load of what a tile store wrote waits until the
/// store is done; so each block's sums are finished while the next block multiplies (its
/// `tdpbusd`s are issued first, the previous block's vector work fills the wait), from the
/// other of two buffers.
///
/// # Safety
/// The CPU must have AMX-INT8 and AVX-512 VNNI, and the process the tile state
/// ([`amx_int8_supported`]); `w` must [fit](fits).
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
pub(crate) unsafe fn linear_i8(
    w: &PackedLinearI8,
    xs: &[u32],
    row_scales: &[f32],
    m: usize,
    out: &mut [f32],
) {
    let (n, k4) = (w.n, w.k4);
    assert!(fits(w) && xs.len() >= m * k4 && row_scales.len() >= m && out.len() >= m * n);
    let count = n.div_ceil(NR);
    assert!(w.panels.len() >= count * k4 * NR);
    let per_block = crate::gemm::panels_per_l2_block(k4);
    let config = TileConfig::sixteen_by_sixty_four();
    // Two buffers of the four tiles' sums, 16 x 16 each: rows 0-15 by panels p and p + 1, then
    // rows 16-31.
    let mut sums = Box::new([[0i32; 4 * 256]; 2]);
    let mut padded = Vec::new();
    // SAFETY: the configuration is 64 readable bytes.
    unsafe { asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly)) };
    for p0 in (0..count).step_by(per_block) {
        let p1 = (p0 + per_block).min(count);
        for r0 in (0..m).step_by(ROWS) {
            let rows = ROWS.min(m - r0);
            let x = if rows == ROWS {
                &xs[r0 * k4..(r0 + ROWS) * k4]
            } else {
                padded.clear();
                padded.extend_from_slice(&xs[r0 * k4..(r0 + rows) * k4]);
                padded.resize(ROWS * k4, 0);
                &padded[..]
            };
            let mut pending: Option<Block> = None;
            let mut p = p0;
            let mut buffer = 0;
            while p < p1 {
                let used = if p + 1 < p1 { 2 } else { 1 };
                let a = &w.panels[p * k4 * NR..(p + 1) * k4 * NR];
                let b = &w.panels[(p + used - 1) * k4 * NR..(p + used) * k4 * NR];
                // SAFETY: `x` holds 32 rows of `k4` quads, `a` and `b` `k4` rows of 16 quads, and
                // `k4` is a multiple of 16 (checked above).
                unsafe { multiply(x, a, b, k4) };
                if let Some(prev) = pending.take() {
                    finish(w, &sums[prev.buffer], row_scales, &prev, out);
                }
                // SAFETY: the buffer holds four 16 x 16 tiles, and the tiles this block's sums.
                unsafe { store_sums(&mut sums[buffer]) };
                pending = Some(Block {
                    r0,
                    rows,
                    p,
                    used,
                    buffer,
                });
                buffer ^= 1;
                p += used;
            }
            if let Some(prev) = pending {
                finish(w, &sums[prev.buffer], row_scales, &prev, out);
            }
        }
    }
    // SAFETY: releases this thread's tiles (configured above).
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// Where one block's sums go: rows `r0..r0 + rows` of the output, panels `p..p + used`; its
/// sums are in buffer `buffer`.
struct Block {
    r0: usize,
    rows: usize,
    p: usize,
    used: usize,
    buffer: usize,
}

/// A block's sums (`[rows 0-15 | 16-31] x [panel p | p + 1]` tiles of 16 x 16) finished into
/// `out`: `(sums - offsets) * (row_scale * scales) + bias`, in [`crate::avx512::finish_i8`]'s
/// order (the same bits), with each panel's column values loaded once. Row by row, both panels
/// at once, so each output row gets 128 contiguous bytes: at 320 rows this ran 1.1-1.5x as fast
/// as finishing one panel's 32 rows before the other's (`gnmt bench linear` on the Xeon).
#[inline]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
fn finish(w: &PackedLinearI8, sums: &[i32; 1024], row_scales: &[f32], b: &Block, out: &mut [f32]) {
    let n = w.n;
    let columns = [0, 1].map(|t| {
        let col = (b.p + t.min(b.used - 1)) * NR;
        let cols = NR.min(n - col);
        (col, cols, crate::avx512::Columns::of(w, col, cols))
    });
    for r in 0..b.rows {
        let row = (b.r0 + r) * n;
        let row_scale = row_scales[b.r0 + r];
        for (t, (col, cols, columns)) in columns.iter().enumerate().take(b.used) {
            let at = ((r / 16) * 2 + t) * 256 + (r % 16) * 16;
            // SAFETY: 16 integers from `at`, inside the tile's row.
            let s = unsafe { _mm512_loadu_si512(sums[at..at + 16].as_ptr().cast()) };
            let v = columns.finish(row_scale, s);
            crate::avx512::store(&mut out[row + col..row + col + cols], v);
        }
    }
}

/// Stores the four sum tiles (tmm0-3) into `sums`, 16 rows of 64 bytes each.
///
/// # Safety
/// Tiles configured as [`TileConfig::sixteen_by_sixty_four`], holding a block's sums
/// ([`multiply`]).
#[inline]
unsafe fn store_sums(sums: &mut [i32; 1024]) {
    // SAFETY: four stores of 16 rows of 64 bytes into the 4 KB of `sums`.
    unsafe {
        asm!(
            "tilestored [{s} + {ws}*1], tmm0",
            "tilestored [{s} + {ws}*1 + 1024], tmm1",
            "tilestored [{s} + {ws}*1 + 2048], tmm2",
            "tilestored [{s} + {ws}*1 + 3072], tmm3",
            s = in(reg) sums.as_mut_ptr(),
            ws = in(reg) 64usize,
            options(nostack),
        );
    }
}

/// The sums of 32 rows of `x` (`[32, k4]` quads) by the panels `a` and `b` (`[k4, 16]` quads
/// each), left in tiles 0-3 (rows 0-15 by `a`, by `b`, rows 16-31 by `a`, by `b`).
///
/// The tile registers are state no Rust code touches: what this leaves in them, the next
/// [`store_sums`] reads.
///
/// # Safety
/// Tiles configured as [`TileConfig::sixteen_by_sixty_four`]; the slices as [`linear_i8`] says.
#[inline]
unsafe fn multiply(x: &[u32], a: &[u32], b: &[u32], k4: usize) {
    debug_assert!(x.len() >= ROWS * k4 && a.len() >= k4 * NR && b.len() >= k4 * NR);
    let row_stride = k4 * 4;
    // SAFETY: each step loads 16 rows of 64 bytes from `x` (rows 0-15 and 16-31, at the step's
    // 64-byte column) and 16 rows of 64 bytes from `a` and `b` (the step's 16 quad-rows), all
    // inside the slices for the k4 / 16 steps.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            "2:",
            "tileloadd tmm4, [{x0} + {xs}*1]",
            "tileloadd tmm6, [{a} + {ws}*1]",
            "tdpbusd tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{b} + {ws}*1]",
            "tdpbusd tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{x1} + {xs}*1]",
            "tdpbusd tmm2, tmm5, tmm6",
            "tdpbusd tmm3, tmm5, tmm7",
            "add {x0}, 64",
            "add {x1}, 64",
            "add {a}, 1024",
            "add {b}, 1024",
            "dec {steps}",
            "jnz 2b",
            x0 = inout(reg) x.as_ptr() => _,
            x1 = inout(reg) x.as_ptr().add(16 * k4) => _,
            a = inout(reg) a.as_ptr() => _,
            b = inout(reg) b.as_ptr() => _,
            steps = inout(reg) k4 / QUADS => _,
            xs = in(reg) row_stride,
            ws = in(reg) 64usize,
            options(nostack),
        );
    }
}
