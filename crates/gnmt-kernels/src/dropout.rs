//! Dropout masks for training on a CPU. libtorch draws its masks with `bernoulli_`, one call
//! of a serial random-number generator per element, then divides them by the keep
//! probability in a second pass: about 5% of a `small` training step in bf16. Here each
//! element is a hash of its index and a seed (counter-based, as Philox is on GPUs), a loop the
//! compiler vectorizes, written once with the scale already in it.

use std::mem::MaybeUninit;

use crate::Isa;

/// What one mask is drawn with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropoutDraw {
    /// The two 32-bit keys of the hash.
    keys: [u32; 2],
    /// An element is kept when the top 24 bits of its hash are below this.
    keep_below: u32,
}

impl DropoutDraw {
    /// Drops each element with probability `p` (clamped to `0..=1`, rounded to a multiple of
    /// 2^-24), the choices a function of `seed` and the element's index alone.
    pub fn new(seed: u64, p: f64) -> Self {
        let keep = (1.0 - p).clamp(0.0, 1.0);
        DropoutDraw {
            keys: [seed as u32, (seed >> 32) as u32],
            keep_below: (keep * (1u32 << 24) as f64).round() as u32,
        }
    }

    /// Whether element `i` (of the chunk with keys `keys`) is kept.
    #[inline(always)]
    fn kept(keys: [u32; 2], keep_below: u32, i: u32) -> bool {
        let h = fmix32(fmix32(i ^ keys[0]).wrapping_add(keys[1]));
        (h >> 8) < keep_below
    }

    /// The keys of the `c`-th run of 2^32 elements: the 32-bit counter repeats from run to run,
    /// the keys do not.
    fn chunk_keys(&self, c: usize) -> [u32; 2] {
        [
            self.keys[0],
            self.keys[1] ^ fmix32(c as u32).wrapping_mul(0x9E37_79B9),
        ]
    }
}

/// MurmurHash3's 32-bit finalizer: a bijection whose every output bit depends on every input
/// bit.
#[inline(always)]
fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

/// Writes `kept` where [`DropoutDraw`] keeps an element of `out` and `dropped` elsewhere (the
/// mask's `1 / (1 - p)` and 0 in its element type); `out` may be uninitialised memory, all of
/// it is written. Every build gives the same bits (integer operations only).
pub fn fill_dropout_mask<T: Copy>(
    draw: &DropoutDraw,
    kept: T,
    dropped: T,
    out: &mut [MaybeUninit<T>],
) {
    fill_on(Isa::detected(), draw, kept, dropped, out)
}

per_isa! {
    /// [`fill_dropout_mask`] on the best build `isa` and the CPU allow.
    fn fill_on[T: Copy](draw: &DropoutDraw, kept: T, dropped: T, out: &mut [MaybeUninit<T>])
        = fill_with;
}

/// [`fill_dropout_mask`]'s body, inlined into each build.
#[inline(always)]
fn fill_with<T: Copy>(draw: &DropoutDraw, kept: T, dropped: T, out: &mut [MaybeUninit<T>]) {
    let chunk = usize::try_from(1u64 << 32).unwrap_or(usize::MAX);
    for (c, run) in out.chunks_mut(chunk).enumerate() {
        let (keys, below) = (draw.chunk_keys(c), draw.keep_below);
        for (i, x) in run.iter_mut().enumerate() {
            x.write(if DropoutDraw::kept(keys, below, i as u32) {
                kept
            } else {
                dropped
            });
        }
    }
}

/// Each build's mask of 1s and 0s, for the tests (None where the CPU lacks the build).
#[cfg(test)]
pub(crate) fn mask_of_build(isa: Isa, draw: &DropoutDraw, n: usize) -> Option<Vec<f32>> {
    if isa > Isa::supported() {
        return None;
    }
    let mut out = vec![MaybeUninit::uninit(); n];
    fill_on(isa, draw, 1.0f32, 0.0, &mut out);
    Some(
        out.into_iter()
            .map(|x| {
                // SAFETY: fill_with wrote every element.
                #[allow(unsafe_code)]
                unsafe {
                    x.assume_init()
                }
            })
            .collect(),
    )
}
