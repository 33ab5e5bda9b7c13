//! Borrowing the elements of CPU tensors as slices, for the kernels, and kernels on tensors.

use std::mem::MaybeUninit;

use tch::{Device, Kind, Tensor};

use crate::adam::{accumulate_bf16, adam_update, adam_update_bf16_copy, AdamStep};
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
/// gradient `g`, moments `m` and `v`; with `work` (mixed precision's bf16 working copy of `p`),
/// the updated parameters rounded into it as well ([`adam_update_bf16_copy`]). Returns false
/// (nothing done) unless all are contiguous CPU tensors of one size, float32 (`work`: bf16),
/// with storage of their own (pairwise disjoint); the caller then takes another path.
///
/// The optimizer calls this under `no_grad`, on tensors it owns, from one thread.
#[allow(unsafe_code)]
pub fn adam_update_tensors(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    work: Option<&Tensor>,
    c: &AdamStep,
) -> bool {
    let n = p.numel();
    let floats = [p, g, m, v].map(|t| (t, Kind::Float));
    let all = floats
        .iter()
        .copied()
        .chain(work.map(|w| (w, Kind::BFloat16)));
    if n == 0 || !own_cpu_buffers(all, n) {
        return false;
    }
    // SAFETY: each is a live, contiguous CPU buffer of `n` elements of its kind (float32,
    // bf16 for `work`), the byte ranges pairwise disjoint (own_cpu_buffers), so the mutable
    // slices alias nothing; the tensors are borrowed for the whole call, and the optimizer
    // (the one caller) runs it on tensors no other thread touches.
    unsafe {
        let (p, g, m, v) = (
            owned_elements::<f32>(p),
            elements::<f32>(g),
            owned_elements::<f32>(m),
            owned_elements::<f32>(v),
        );
        match work {
            Some(w) => adam_update_bf16_copy(p, g, m, v, owned_elements::<u16>(w), c),
            None => adam_update(p, g, m, v, c),
        }
    }
    true
}

/// Mixed precision's accumulation ([`accumulate_bf16`]): `acc += g / scale` into a float32 CPU
/// tensor from a bf16 gradient `g`, which is zeroed. Returns false (nothing done) unless both
/// are contiguous CPU tensors of one size and those kinds with storage of their own.
///
/// The optimizer calls this under `no_grad`, on tensors it owns, from one thread.
#[allow(unsafe_code)]
pub fn accumulate_bf16_tensors(acc: &Tensor, g: &Tensor, scale: f32) -> bool {
    let n = acc.numel();
    if n == 0 || !own_cpu_buffers([(acc, Kind::Float), (g, Kind::BFloat16)].into_iter(), n) {
        return false;
    }
    // SAFETY: as in adam_update_tensors: two live, contiguous, disjoint CPU buffers of `n`
    // elements of their kinds (checked), owned by the one calling thread.
    unsafe { accumulate_bf16(owned_elements::<f32>(acc), owned_elements::<u16>(g), scale) };
    true
}

/// Whether each tensor is defined, on the CPU, contiguous, of its kind and of `n` elements,
/// with a byte range that overlaps no other's.
fn own_cpu_buffers<'a>(tensors: impl Iterator<Item = (&'a Tensor, Kind)>, n: usize) -> bool {
    let mut ranges = Vec::new();
    for (t, kind) in tensors {
        let ok = t.defined()
            && t.device() == Device::Cpu
            && t.kind() == kind
            && t.is_contiguous()
            && t.numel() == n
            && !t.data_ptr().is_null();
        if !ok {
            return false;
        }
        let start = t.data_ptr() as usize;
        ranges.push((start, start + n * kind.elt_size_in_bytes()));
    }
    ranges.sort_unstable();
    ranges.windows(2).all(|w| w[0].1 <= w[1].0)
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

/// What [`additive_attention_tensors`] returns: the context `[rows, D]` and the weights
/// `[rows, S]`, row-major, `group` rows per sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct Attended {
    pub context: Vec<f32>,
    pub weights: Vec<f32>,
}

/// Additive attention ([`crate::additive_attention`]) of `group` projected queries per
/// sentence (`q`, `[B * group, U]` row-major, the bias added) over float32 CPU tensors: keys
/// `[B, S, U]`, `values` `[B, S, D]`, `pad_mask` `[B, S]`, with score vector `v` `[U]`. The
/// keys and values are read in place, not copied. None unless the shapes match and the
/// tensors are float32 on the CPU.
///
/// Search calls this under `no_grad` on an encoding it owns: nothing writes to these tensors
/// while it runs.
#[allow(unsafe_code)]
pub fn additive_attention_tensors(
    q: &[f32],
    group: usize,
    keys: &Tensor,
    values: &Tensor,
    pad_mask: &Tensor,
    v: &[f32],
) -> Option<Attended> {
    let (b, s, u) = keys.size3().ok()?;
    let (vb, vs, d) = values.size3().ok()?;
    let (b, s, u, d) = (b as usize, s as usize, u as usize, d as usize);
    let rows = b * group;
    if (vb as usize, vs as usize) != (b, s) || q.len() != rows * u || v.len() != u {
        return None;
    }
    if pad_mask.size() != [b as i64, s as i64] {
        return None;
    }
    let (keys, values) = (keys.contiguous(), values.contiguous());
    let pad = Vec::<bool>::try_from(pad_mask.flatten(0, -1)).ok()?;
    let mut out = Attended {
        context: vec![0.0; rows * d],
        weights: vec![0.0; rows * s],
    };
    let shape = crate::AttentionShape { b, t: group, s, u };
    // SAFETY: nothing writes to these tensors while the slices live (this function only reads
    // them, and its caller's contract above excludes other writers).
    let (ks, vals) = unsafe { (f32_slice(&keys)?, f32_slice(&values)?) };
    crate::additive_attention(
        q,
        ks,
        vals,
        v,
        &pad,
        shape,
        &mut out.weights,
        &mut out.context,
    );
    Some(out)
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

/// The elements of `t`, to update in place.
///
/// # Safety
/// `t` is a contiguous CPU tensor of `n` initialised elements of `T`'s size and layout, and no
/// other reference to its storage is used while the slice lives.
#[allow(unsafe_code)]
#[allow(clippy::mut_from_ref)]
unsafe fn owned_elements<T>(t: &Tensor) -> &mut [T] {
    let (n, ptr) = (t.numel(), t.data_ptr() as *mut T);
    if n == 0 || ptr.is_null() {
        return &mut [];
    }
    // SAFETY: the caller's contract: `n` initialised elements from the data pointer of a
    // contiguous tensor, reached by nothing else while `t` is borrowed.
    unsafe { std::slice::from_raw_parts_mut(ptr, n) }
}

/// The elements of `t`, just allocated (uninitialised), to write.
///
/// # Safety
/// `t` is a contiguous CPU tensor whose elements have `T`'s size and layout, and no other
/// handle to its storage exists.
#[allow(unsafe_code)]
unsafe fn fresh_elements<T>(t: &mut Tensor) -> &mut [MaybeUninit<T>] {
    // SAFETY: the caller's contract, and MaybeUninit<T> has T's size and layout and needs no
    // initialised contents, which is owned_elements' contract for it.
    unsafe { owned_elements::<MaybeUninit<T>>(t) }
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
