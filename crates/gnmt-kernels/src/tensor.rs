//! Borrowing the elements of CPU tensors as slices, for the kernels, and kernels on tensors.

use std::mem::MaybeUninit;

use tch::{Device, Kind, Tensor};

use crate::adam::{adam_update, AdamStep};
use crate::loss::{smoothed_ce, Bf16, LossSums, SmoothedCe};
use crate::{fill_dropout_mask, to_bf16, DropoutDraw};

/// Label-smoothed cross-entropy ([`smoothed_ce`]) of CPU `logits` `[..., V]` (float32 or bf16)
/// against `target` (int64, the logits' leading shape; `c.pad` marks padding), and its
/// gradient with respect to the logits times `c.grad_scale`, of their shape and kind. Runs on
/// libtorch's thread count. None (the caller takes libtorch's path) for other devices or kinds,
/// mismatched shapes, or a target outside `0..V`.
///
/// The trainer calls this on logits it just computed: nothing writes to them while it runs.
pub fn smoothed_ce_tensors(
    logits: &Tensor,
    target: &Tensor,
    c: SmoothedCe,
) -> Option<(LossSums, Tensor)> {
    let kind = logits.kind();
    if logits.device() != Device::Cpu || !matches!(kind, Kind::Float | Kind::BFloat16) {
        return None;
    }
    let v = *logits.size().last()?;
    let targets = Vec::<i64>::try_from(target.flatten(0, -1)).ok()?;
    if v <= 0 || targets.len() as i64 * v != logits.numel() as i64 {
        return None;
    }
    if targets.iter().any(|&y| y < 0 || y >= v) {
        return None;
    }
    let logits = logits.contiguous();
    let mut grad = Tensor::empty(logits.size(), (kind, Device::Cpu));
    let threads = tch::get_num_threads().max(1) as usize;
    let (v, targets) = (v as usize, &targets[..]);
    // SAFETY: `logits` is a contiguous CPU tensor of `kind` (checked) that nothing writes to
    // while this runs (the caller's contract); `grad` was just allocated with its shape and
    // kind, and no other handle to it exists.
    #[allow(unsafe_code)]
    let sums = unsafe {
        match kind {
            Kind::BFloat16 => {
                let (x, g) = (elements::<Bf16>(&logits), fresh_elements(&mut grad));
                smoothed_ce(x, targets, v, c, g, threads)
            }
            _ => {
                let (x, g) = (elements::<f32>(&logits), fresh_elements(&mut grad));
                smoothed_ce(x, targets, v, c, g, threads)
            }
        }
    };
    Some((sums, grad))
}

/// A CPU dropout mask of `size` and `kind`: each element `1 / (1 - p)` or, with probability
/// `p`, 0, as [`DropoutDraw::new`]`(seed, p)` chooses; `x * mask` is dropout. float32 and bf16
/// masks are written directly; other kinds are converted from float32.
#[allow(unsafe_code)]
pub fn dropout_mask(seed: u64, p: f64, size: &[i64], kind: Kind) -> Tensor {
    let draw = DropoutDraw::new(seed, p);
    let scale = if p < 1.0 {
        (1.0 / (1.0 - p)) as f32
    } else {
        0.0
    };
    let mask_kind = if kind == Kind::BFloat16 {
        kind
    } else {
        Kind::Float
    };
    let mut mask = Tensor::empty(size, (mask_kind, Device::Cpu));
    // SAFETY: `mask` was just allocated, contiguous, of `mask_kind` (bf16: two bytes, written
    // as u16 bits; else float32), with no other handle; fill_dropout_mask writes all of it.
    unsafe {
        match mask_kind {
            Kind::BFloat16 => {
                fill_dropout_mask(&draw, to_bf16(scale), 0u16, fresh_elements(&mut mask))
            }
            _ => fill_dropout_mask(&draw, scale, 0.0f32, fresh_elements(&mut mask)),
        }
    }
    if mask_kind == kind {
        mask
    } else {
        mask.to_kind(kind)
    }
}

/// Adam's update ([`adam_update`]) in place on four float32 CPU tensors: parameters `p`,
/// gradient `g`, moments `m` and `v`. Returns false (nothing done) unless all four are
/// contiguous float32 CPU tensors of one size with storage of their own (pairwise disjoint);
/// the caller then takes another path.
///
/// The optimizer calls this under `no_grad`, on tensors it owns, from one thread.
#[allow(unsafe_code)]
pub fn adam_update_tensors(p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, c: &AdamStep) -> bool {
    let n = p.numel();
    let ok = [p, g, m, v].iter().all(|t| {
        t.defined()
            && t.device() == Device::Cpu
            && t.kind() == Kind::Float
            && t.is_contiguous()
            && t.numel() == n
    });
    if !ok || n == 0 {
        return false;
    }
    let ptrs = [p.data_ptr(), g.data_ptr(), m.data_ptr(), v.data_ptr()];
    let bytes = n * std::mem::size_of::<f32>();
    let start = |i: usize| ptrs[i] as usize;
    let disjoint = (0..4)
        .all(|i| (i + 1..4).all(|j| start(i) + bytes <= start(j) || start(j) + bytes <= start(i)));
    if !disjoint || ptrs.iter().any(|x| x.is_null()) {
        return false;
    }
    // SAFETY: each pointer is the start of a live, contiguous float32 CPU buffer of `n`
    // elements (checked above: a contiguous tensor of `n` elements spans exactly `n` floats
    // from its data pointer); the four byte ranges are pairwise disjoint (checked), so the
    // mutable slices do not alias; the tensors are borrowed for the whole call, and the
    // optimizer (this function's one caller) runs it on tensors no other thread touches.
    let (p, g, m, v) = unsafe {
        (
            std::slice::from_raw_parts_mut(ptrs[0] as *mut f32, n),
            std::slice::from_raw_parts(ptrs[1] as *const f32, n),
            std::slice::from_raw_parts_mut(ptrs[2] as *mut f32, n),
            std::slice::from_raw_parts_mut(ptrs[3] as *mut f32, n),
        )
    };
    adam_update(p, g, m, v, c);
    true
}

/// Additive attention scores ([`crate::additive_scores`]) of queries `q` `[B, T, U]` over
/// projected keys `[B, S, U]` with score vector `v` `[U]`, `mask_value` where `pad_mask`
/// `[B, S]` is true: `[B, T, S]`. None unless all are float32 CPU tensors of matching shapes.
///
/// The attention calls this in search, under `no_grad`: nothing writes to these tensors while
/// it runs (a search thread owns its queries; the keys and `v` are read-only in search).
#[allow(unsafe_code)]
pub fn additive_scores_tensors(
    q: &Tensor,
    keys: &Tensor,
    v: &Tensor,
    pad_mask: &Tensor,
    mask_value: f32,
) -> Option<Tensor> {
    let cpu_f32 = |t: &Tensor| t.device() == Device::Cpu && t.kind() == Kind::Float;
    if !(cpu_f32(q) && cpu_f32(keys) && cpu_f32(v)) {
        return None;
    }
    let (b, t, u) = q.size3().ok()?;
    let (kb, s, ku) = keys.size3().ok()?;
    if kb != b || ku != u || pad_mask.size() != [b, s] || v.numel() as i64 != u {
        return None;
    }
    let (q, keys, v) = (q.contiguous(), keys.contiguous(), v.contiguous());
    let pad = Vec::<bool>::try_from(pad_mask.flatten(0, -1)).ok()?;
    let mut out = vec![0f32; (b * t * s) as usize];
    let shape = crate::AttentionShape {
        b: b as usize,
        t: t as usize,
        s: s as usize,
        u: u as usize,
    };
    // SAFETY: nothing writes to these tensors while the slices live (this function only reads
    // them, and its caller's contract above excludes other writers).
    let (qs, ks, vs) = unsafe { (f32_slice(&q)?, f32_slice(&keys)?, f32_slice(&v)?) };
    crate::additive_scores(qs, ks, vs, &pad, shape, mask_value, &mut out);
    Some(Tensor::from_slice(&out).view([b, t, s]))
}

/// The elements of `t` as `T`.
///
/// # Safety
/// `t` is a contiguous CPU tensor whose elements have `T`'s size and layout, and nothing
/// writes to its storage while the slice lives.
#[allow(unsafe_code)]
unsafe fn elements<T>(t: &Tensor) -> &[T] {
    let (n, ptr) = (t.numel(), t.data_ptr() as *const T);
    if n == 0 || ptr.is_null() {
        return &[];
    }
    // SAFETY: the caller's contract: `n` initialised elements of `T` from the data pointer of a
    // contiguous tensor, valid while `t` (borrowed for the slice's lifetime) holds the storage.
    unsafe { std::slice::from_raw_parts(ptr, n) }
}

/// The elements of `t`, just allocated (uninitialised), to write.
///
/// # Safety
/// `t` is a contiguous CPU tensor whose elements have `T`'s size and layout, and no other
/// handle to its storage exists.
#[allow(unsafe_code)]
unsafe fn fresh_elements<T>(t: &mut Tensor) -> &mut [MaybeUninit<T>] {
    let (n, ptr) = (t.numel(), t.data_ptr() as *mut MaybeUninit<T>);
    if n == 0 || ptr.is_null() {
        return &mut [];
    }
    // SAFETY: the caller's contract: `n` elements' room from the data pointer of a contiguous
    // tensor that nothing else reaches, valid while `t` is borrowed; MaybeUninit needs no
    // initialised contents.
    unsafe { std::slice::from_raw_parts_mut(ptr, n) }
}

/// The elements of `t` if it is a contiguous float32 CPU tensor, else None.
///
/// # Safety
/// The slice aliases the tensor's storage, which other handles (shallow clones, views) may
/// share: nothing may write to that storage while the slice lives.
#[allow(unsafe_code)]
unsafe fn f32_slice(t: &Tensor) -> Option<&[f32]> {
    if !t.defined() || t.device() != Device::Cpu || t.kind() != Kind::Float || !t.is_contiguous() {
        return None;
    }
    // SAFETY: a contiguous float32 CPU tensor (checked); writes through other handles are
    // excluded by the caller's contract.
    Some(unsafe { elements(t) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(unsafe_code)]
    fn borrows_only_contiguous_float_cpu_tensors() {
        let t = Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6.]).view([2, 3]);
        // SAFETY: no other handle writes to these tensors.
        unsafe {
            assert_eq!(f32_slice(&t), Some(&[1f32, 2., 3., 4., 5., 6.][..]));
            assert_eq!(f32_slice(&t.tr()), None);
            assert_eq!(f32_slice(&t.to_kind(Kind::Double)), None);
            assert_eq!(f32_slice(&t.narrow(0, 1, 1)), Some(&[4f32, 5., 6.][..]));
        }
    }
}
