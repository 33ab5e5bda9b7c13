//! Adam's update on float32 slices in one pass over the four arrays. Element-wise libtorch
//! calls make ten passes and as many temporaries the size of the model (40 MB for `small`), a
//! tenth of its training step on a CPU. In mixed precision the same pass refreshes the bf16
//! working copy, and one more moves the working copy's gradients into the float32 accumulators.

use crate::{from_bf16, to_bf16, Isa};

/// The scalars of one Adam update.
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// `1 / sqrt(1 - beta2^t)`.
    pub inv_sqrt_bc2: f32,
    /// `lr / (1 - beta1^t)`.
    pub step_size: f32,
}

impl AdamStep {
    /// One element: `m`, `v` and `p` updated in place (the reference for every code path).
    #[inline(always)]
    pub fn update(&self, p: &mut f32, g: f32, m: &mut f32, v: &mut f32) {
        *m = self.beta1 * *m + (1.0 - self.beta1) * g;
        *v = self.beta2 * *v + (1.0 - self.beta2) * g * g;
        let denom = v.sqrt() * self.inv_sqrt_bc2 + self.eps;
        *p -= self.step_size * *m / denom;
    }
}

/// Updates parameters `p` and moments `m`, `v` with gradient `g` (all of one length).
pub fn adam_update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: &AdamStep) {
    let work = None;
    update_on(Isa::detected(), Slices { p, g, m, v, work }, c)
}

/// [`adam_update`], and each updated parameter rounded to bf16 into `work` (mixed precision's
/// working copy, refreshed in the same pass instead of another one over the weights).
pub fn adam_update_bf16_copy(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    work: &mut [u16],
    c: &AdamStep,
) {
    let work = Some(work);
    update_on(Isa::detected(), Slices { p, g, m, v, work }, c)
}

/// One parameter's arrays in an update.
struct Slices<'a> {
    p: &'a mut [f32],
    g: &'a [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
    work: Option<&'a mut [u16]>,
}

per_isa! {
    /// Adam's update on the best build `isa` and the CPU allow (the same bits on each: no
    /// operation is contracted or reordered).
    fn update_on(s: Slices<'_>, c: &AdamStep) = update_with;
}

#[inline(always)]
fn update_with(Slices { p, g, m, v, work }: Slices<'_>, c: &AdamStep) {
    let each = p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut());
    match work {
        Some(work) => {
            for ((((p, &g), m), v), w) in each.zip(work.iter_mut()) {
                c.update(p, g, m, v);
                *w = to_bf16(*p);
            }
        }
        None => each.for_each(|(((p, &g), m), v)| c.update(p, g, m, v)),
    }
}

/// Mixed precision, after a backward pass: the working copy's bf16 gradient `g`, as float32
/// and divided by the loss scale, added to the float32 accumulator `acc`; `g` zeroed. One pass
/// where libtorch makes three (convert, add, zero) and a float32 temporary.
pub fn accumulate_bf16(acc: &mut [f32], g: &mut [u16], scale: f32) {
    accumulate_on(Isa::detected(), acc, g, scale)
}

per_isa! {
    /// [`accumulate_bf16`] on the best build `isa` and the CPU allow.
    fn accumulate_on(acc: &mut [f32], g: &mut [u16], scale: f32) = accumulate_with;
}

#[inline(always)]
fn accumulate_with(acc: &mut [f32], g: &mut [u16], scale: f32) {
    for (a, g) in acc.iter_mut().zip(g.iter_mut()) {
        *a += from_bf16(*g) / scale;
        *g = 0;
    }
}

/// Each build's update, for the tests: `(p, m, v, work)` after one step from the given state
/// (None where the CPU lacks the build).
#[cfg(test)]
pub(crate) fn update_of_build(isa: Isa, state: [&[f32]; 4], c: &AdamStep) -> Option<[Vec<f32>; 4]> {
    if isa > Isa::supported() {
        return None;
    }
    let [p, g, m, v] = state;
    let (mut p, mut m, mut v) = (p.to_vec(), m.to_vec(), v.to_vec());
    let mut work = vec![0u16; p.len()];
    let s = Slices {
        p: &mut p,
        g,
        m: &mut m,
        v: &mut v,
        work: Some(&mut work),
    };
    update_on(isa, s, c);
    Some([p, m, v, work.into_iter().map(from_bf16).collect()])
}
