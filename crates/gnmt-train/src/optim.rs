//! Adam with owned state, and learning-rate schedules.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

/// Adam (Kingma & Ba) whose moments are plain named tensors: savable, loadable, exact.
///
/// In mixed precision ([`Adam::mixed`]) the forward and backward passes run on a low-precision
/// working copy of the weights. After each backward, [`Adam::accumulate`] moves that copy's
/// gradients into float32 accumulators, unscaled (fp16 loss scaling): micro-batches add up in
/// float32 and clipping sees float32 values, never scaled fp16 ones that a small clipping factor
/// would flush to zero (PyTorch's `GradScaler.unscale_` then `clip_grad_norm_` order). Adam
/// updates the float32 master weights (which checkpoints save) and refreshes the working copy.
#[derive(Debug)]
pub struct Adam {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub step: i64,
    vars: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// The working copy (same order as `vars`), when training in mixed precision.
    work: Option<Vec<Tensor>>,
    /// Mixed precision: the float32, unscaled gradient sums of the working copy's gradients.
    acc: Option<Vec<Tensor>>,
    /// The factor the loss was multiplied by before backward (fp16 loss scaling): gradients
    /// are divided by it (in [`Adam::accumulate`] in mixed precision, else when read). 1 without
    /// loss scaling.
    pub grad_scale: f64,
    /// Threads the passes over the parameters run on, on a CPU ([`crate::lanes`]).
    lanes: usize,
}

// The scalars of one Adam update, and the one-pass CPU update (declining, with false, tensors
// that are not contiguous float32 CPU tensors of their own): gnmt-kernels' own.
use gnmt_kernels::adam::AdamStep as AdamCoefficients;
use gnmt_kernels::tensor::accumulate_bf16_tensors as fused_accumulate;
use gnmt_kernels::tensor::adam_update_tensors as fused_cpu_update;

/// The same update with libtorch operations (GPU tensors), the fewest passes it allows.
fn tensor_update(p: &mut Tensor, g: &Tensor, m: &mut Tensor, v: &mut Tensor, c: &AdamCoefficients) {
    let _ = m.lerp_(g, 1.0 - c.beta1 as f64);
    let _ = v
        .g_mul_scalar_(c.beta2 as f64)
        .addcmul_(&(g * (1.0 - c.beta2 as f64)), g);
    // p += m / denom' with denom' = -(sqrt(v) / sqrt(bc2) + eps) / step_size.
    let mut denom = v.sqrt();
    let _ = denom
        .g_mul_scalar_(c.inv_sqrt_bc2 as f64)
        .g_add_scalar_(c.eps as f64)
        .g_mul_scalar_(-1.0 / c.step_size as f64);
    let _ = p.addcdiv_(m, &denom);
}

/// Mixed precision: `acc += g / scale` in float32, then `g` (low precision) zeroed.
fn add_unscaled(acc: &mut Tensor, g: &mut Tensor, scale: f64) {
    if !g.defined() || fused_accumulate(acc, g, scale as f32) {
        return;
    }
    let g32 = g.to_kind(Kind::Float);
    if scale != 1.0 {
        *acc += g32 / scale;
    } else {
        *acc += g32;
    }
    let _ = g.zero_();
}

/// One parameter's share of an Adam step: its weights, moments and working copy.
struct ParamUpdate {
    p: Tensor,
    m: Tensor,
    v: Tensor,
    work: Option<Tensor>,
}

impl ParamUpdate {
    /// Updates the weights from gradient `g` (none: left as they are), then the working copy:
    /// a bf16 copy by the fused update itself, any other from the new weights.
    fn apply(&mut self, g: Option<&Tensor>, c: &AdamCoefficients) {
        let bf16_work = self.work.as_ref().filter(|w| w.kind() == Kind::BFloat16);
        let mut fresh = false;
        if let Some(g) = g {
            if fused_cpu_update(&self.p, g, &self.m, &self.v, bf16_work, c) {
                fresh = bf16_work.is_some();
            } else {
                tensor_update(&mut self.p, g, &mut self.m, &mut self.v, c);
            }
        }
        if let (Some(w), false) = (&mut self.work, fresh) {
            w.copy_(&self.p);
        }
    }
}

/// Dynamic loss scaling for fp16 training: the loss is multiplied by `scale` so that small
/// gradients survive fp16's narrow range; a step whose gradients overflowed is skipped and the
/// scale halved, and after `growth_interval` good steps in a row the scale doubles again
/// (the policy of PyTorch's `GradScaler`, with its defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    pub scale: f64,
    /// Good steps since the last change of `scale`.
    pub good_steps: u32,
    pub growth_interval: u32,
}

impl Default for LossScaler {
    fn default() -> Self {
        LossScaler {
            scale: 65536.0,
            good_steps: 0,
            growth_interval: 2000,
        }
    }
}

impl LossScaler {
    /// Records whether this step's gradients were finite; returns whether to apply the step.
    pub fn update(&mut self, finite: bool) -> bool {
        if finite {
            self.good_steps += 1;
            if self.good_steps >= self.growth_interval {
                // fp16's largest value is 65504: beyond 2^24 the scale only invites overflow.
                self.scale = (self.scale * 2.0).min(16_777_216.0);
                self.good_steps = 0;
            }
        } else {
            // Never below 1: a loss that overflows unscaled is a diverged run, not a range issue.
            self.scale = (self.scale * 0.5).max(1.0);
            self.good_steps = 0;
        }
        finite
    }
}

impl Adam {
    pub fn new(vs: &nn::VarStore) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let m = vars.iter().map(|(_, t)| t.zeros_like()).collect();
        let v = vars.iter().map(|(_, t)| t.zeros_like()).collect();
        Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            step: 0,
            vars,
            m,
            v,
            work: None,
            acc: None,
            grad_scale: 1.0,
            lanes: 1,
        }
    }

    /// Runs the passes over the parameters (zeroing, adding the shares' gradients up,
    /// clipping, the update) on `threads` threads where the weights are on a CPU. The numbers
    /// are the same for any count.
    pub fn set_threads(&mut self, threads: usize) {
        self.lanes = threads.max(1);
    }

    /// The lanes a pass runs on: one off the CPU, where a thread only queues device work.
    fn lanes(&self) -> usize {
        match self.device() {
            tch::Device::Cpu => self.lanes,
            _ => 1,
        }
    }

    /// Mixed precision: `master` holds the float32 weights, `work` the same names in the
    /// precision the model runs in. The working copy is refreshed from the master now and
    /// after every step.
    pub fn mixed(master: &nn::VarStore, work: &nn::VarStore) -> Result<Self, String> {
        let mut adam = Adam::new(master);
        let wv = work.variables();
        let mut list = Vec::with_capacity(adam.vars.len());
        for (name, p) in &adam.vars {
            let w = wv
                .get(name)
                .ok_or_else(|| format!("working copy lacks `{name}`"))?;
            if w.size() != p.size() {
                return Err(format!("working copy of `{name}` has another shape"));
            }
            list.push(w.shallow_clone());
        }
        adam.acc = Some(adam.vars.iter().map(|(_, p)| p.zeros_like()).collect());
        adam.work = Some(list);
        adam.sync_work();
        Ok(adam)
    }

    /// Refreshes the whole working copy from the master weights.
    fn sync_work(&mut self) {
        if let Some(work) = &mut self.work {
            tch::no_grad(|| {
                for (w, (_, p)) in work.iter_mut().zip(&self.vars) {
                    w.copy_(p);
                }
            });
        }
    }

    /// After each backward pass in mixed precision: adds the working copy's gradients, as
    /// float32 and divided by the loss scale, to the float32 accumulators, and zeroes them.
    /// In float32 training the parameters' own gradients accumulate and this does nothing.
    pub fn accumulate(&mut self) {
        // Without replicas no parameter can lack the gradient one has.
        let _none_missing = self.accumulate_shares(&[]);
    }

    /// The parameters' names, in the order [`Adam::accumulate_shares`] takes their replicas.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.iter().map(|(n, _)| n.as_str())
    }

    /// After the shares of a batch: adds their gradients to this step's, each parameter's in
    /// share order, and zeroes the shares' own. Share 0 is the model itself (in mixed
    /// precision its working copy's gradients, as [`Adam::accumulate`]); `replicas` are the
    /// others' parameters in [`Adam::names`]' order, of the working copy's kind. Their
    /// gradients go into the float32 accumulators in mixed precision, else into the
    /// parameters' own gradients, which share 0 must have made already.
    pub fn accumulate_shares(&mut self, replicas: &[&[Tensor]]) -> Result<(), String> {
        let scale = self.grad_scale;
        let mut jobs = Vec::with_capacity(self.vars.len());
        for (i, (name, p)) in self.vars.iter().enumerate() {
            // The parameters whose gradients add up here: the working copy's, the replicas'.
            let mut sources: Vec<Tensor> = Vec::with_capacity(replicas.len() + 1);
            sources.extend(self.work.as_ref().map(|w| w[i].shallow_clone()));
            sources.extend(
                replicas
                    .iter()
                    .filter_map(|r| r.get(i))
                    .map(Tensor::shallow_clone),
            );
            sources.retain(|s| s.grad().defined());
            if sources.is_empty() {
                continue;
            }
            let into = match &self.acc {
                Some(acc) => acc[i].shallow_clone(),
                None => p.grad(),
            };
            if !into.defined() {
                return Err(format!(
                    "`{name}` has a gradient in a replica but none of its own"
                ));
            }
            jobs.push((p.numel(), (into, sources)));
        }
        let mixed = self.acc.is_some();
        crate::lanes::per_param(jobs, self.lanes(), |(mut into, sources)| {
            for source in sources {
                let mut g = source.grad();
                if mixed {
                    add_unscaled(&mut into, &mut g, scale);
                } else {
                    into += &g;
                }
                // Dropped rather than zeroed: the next backward hands its gradient over.
                gnmt_dist::clear_grad(&source);
            }
        });
        Ok(())
    }

    /// The float32 gradients that clipping and the update read, in place: the accumulators in
    /// mixed precision (already unscaled), the parameters' own gradients otherwise (still
    /// multiplied by [`Adam::pending_scale`]). Undefined tensors where no gradient exists.
    fn master_grads(&self) -> Vec<Tensor> {
        match &self.acc {
            Some(acc) => acc.iter().map(Tensor::shallow_clone).collect(),
            None => self.vars.iter().map(|(_, t)| t.grad()).collect(),
        }
    }

    /// The loss scale still in [`Adam::master_grads`].
    fn pending_scale(&self) -> f64 {
        if self.acc.is_some() {
            1.0
        } else {
            self.grad_scale
        }
    }

    /// The float32, unscaled gradient of parameter `i`.
    pub(crate) fn grad(&self, i: usize) -> Tensor {
        let g = match &self.acc {
            Some(acc) => acc[i].shallow_clone(),
            None => self.vars[i].1.grad(),
        };
        if g.defined() && self.pending_scale() != 1.0 {
            g / self.pending_scale()
        } else {
            g
        }
    }

    /// Clears the step's gradients: autograd's (the parameters' own in float32, the working
    /// copy's in mixed precision) are dropped, so that the next backward hands its gradients
    /// over instead of adding them to zeros; mixed precision's float32 accumulators are zeroed.
    pub fn zero_grad(&mut self) {
        let autograds = match &self.work {
            Some(w) => w,
            None => &self.vars.iter().map(|(_, p)| p.shallow_clone()).collect(),
        };
        for p in autograds {
            gnmt_dist::clear_grad(p);
        }
        let jobs = self
            .acc
            .iter()
            .flatten()
            .map(|a| (a.numel(), a.shallow_clone()))
            .collect();
        crate::lanes::per_param(jobs, self.lanes(), |mut a| {
            let _ = a.zero_();
        });
    }

    /// Global gradient norm (of the unscaled float32 gradients), then clipping to `max_norm`
    /// (if > 0). Returns the norm before clipping; infinite or NaN when a gradient overflowed,
    /// and then nothing is clipped.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let grads: Vec<(usize, Tensor)> = self
            .master_grads()
            .into_iter()
            .filter(Tensor::defined)
            .map(|g| (g.numel(), g))
            .collect();
        if grads.is_empty() {
            return 0.0;
        }
        let lanes = self.lanes();
        let each = grads.iter().map(|(n, g)| (*n, g.shallow_clone())).collect();
        let norms = crate::lanes::per_param(each, lanes, |g| g.to_kind(Kind::Float).norm());
        let total = Tensor::stack(&norms, 0).norm().double_value(&[]) / self.pending_scale();
        if max_norm > 0.0 && total.is_finite() && total > max_norm {
            let scale = max_norm / (total + 1e-6);
            crate::lanes::per_param(grads, lanes, |mut g| {
                let _ = g.g_mul_scalar_(scale);
            });
        }
        total
    }

    /// Per-parameter gradient norms (for the residual study's plots).
    pub fn grad_norms(&self) -> Vec<(String, f64)> {
        let (names, norms): (Vec<String>, Vec<Tensor>) = (0..self.vars.len())
            .filter_map(|i| {
                let g = self.grad(i);
                g.defined().then(|| (self.vars[i].0.clone(), g.norm()))
            })
            .unzip();
        if norms.is_empty() {
            return Vec::new();
        }
        // One transfer for all of them (on a GPU, one synchronization instead of one each).
        let values = Tensor::stack(&norms, 0)
            .to_kind(Kind::Double)
            .to_device(tch::Device::Cpu);
        match Vec::<f64>::try_from(&values) {
            Ok(values) => names.into_iter().zip(values).collect(),
            Err(e) => {
                tracing::warn!("gradient norms unreadable: {e}");
                Vec::new()
            }
        }
    }

    pub fn apply(&mut self, lr: f64) {
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step as i32);
        let bc2 = 1.0 - self.beta2.powi(self.step as i32);
        let c = AdamCoefficients {
            beta1: self.beta1 as f32,
            beta2: self.beta2 as f32,
            eps: self.eps as f32,
            inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
            step_size: (lr / bc1) as f32,
        };
        let pending = self.pending_scale();
        let mut jobs = Vec::with_capacity(self.vars.len());
        for (i, (_, p)) in self.vars.iter().enumerate() {
            let raw = match &self.acc {
                Some(acc) => acc[i].shallow_clone(),
                None => p.grad(),
            };
            let update = ParamUpdate {
                p: p.shallow_clone(),
                m: self.m[i].shallow_clone(),
                v: self.v[i].shallow_clone(),
                work: self.work.as_ref().map(|w| w[i].shallow_clone()),
            };
            // A parameter without a gradient keeps its weights, and its working copy is
            // refreshed all the same.
            jobs.push((p.numel(), (update, raw.defined().then_some(raw))));
        }
        crate::lanes::per_param(jobs, self.lanes(), |(mut u, g)| {
            let g = g.map(|g| if pending != 1.0 { g / pending } else { g });
            u.apply(g.as_ref(), &c);
        });
    }

    /// Data-parallel training: sums every rank's float32 gradients (and `extra`, the step's
    /// loss and counts) in flat buckets of at most `bucket_bytes`, as DDP does, so that every
    /// rank clips and applies the same update. Gradients must be defined on every rank alike.
    pub fn all_reduce_grads(
        &mut self,
        group: &gnmt_dist::ProcessGroup,
        extra: &mut [f64],
        bucket_bytes: usize,
    ) -> Result<(), crate::trainer::TrainError> {
        let grads: Vec<Tensor> = self
            .master_grads()
            .into_iter()
            .filter(Tensor::defined)
            .collect();
        let per_bucket = (bucket_bytes / 4).max(1) as i64;
        let mut buckets: Vec<Vec<Tensor>> = vec![Vec::new()];
        let mut filled = 0i64;
        for g in grads {
            let n = g.numel() as i64;
            if filled > 0 && filled + n > per_bucket {
                buckets.push(Vec::new());
                filled = 0;
            }
            filled += n;
            if let Some(b) = buckets.last_mut() {
                b.push(g);
            }
        }
        let last = buckets.len() - 1;
        for (i, bucket) in buckets.into_iter().enumerate() {
            let mut parts: Vec<Tensor> = bucket
                .iter()
                .map(|g| g.to_kind(Kind::Float).view(-1))
                .collect();
            if i == last {
                let e: Vec<f32> = extra.iter().map(|&x| x as f32).collect();
                parts.push(Tensor::from_slice(&e).to_device(self.device()));
            }
            let mut flat = Tensor::cat(&parts, 0).to_device(group.device());
            group.all_reduce_sum(&mut flat)?;
            let flat = flat.to_device(self.device());
            let mut at = 0i64;
            tch::no_grad(|| {
                for mut g in bucket {
                    let n = g.numel() as i64;
                    g.copy_(&flat.narrow(0, at, n).view_as(&g));
                    at += n;
                }
            });
            if i == last {
                let tail = flat
                    .narrow(0, at, extra.len() as i64)
                    .to_kind(Kind::Double)
                    .to_device(tch::Device::Cpu);
                extra.copy_from_slice(&Vec::<f64>::try_from(&tail)?);
            }
        }
        Ok(())
    }

    /// Data-parallel training: every rank takes `root`'s weights and moments (the same start
    /// everywhere, fresh or resumed), and its working copy follows.
    pub fn broadcast_state(
        &mut self,
        group: &gnmt_dist::ProcessGroup,
        root: usize,
    ) -> Result<(), gnmt_dist::DistError> {
        let tensors = self
            .vars
            .iter()
            .map(|(_, p)| p)
            .chain(&self.m)
            .chain(&self.v);
        for t in tensors {
            let mut cpu = t.detach().to_device(group.device()).contiguous();
            group.broadcast(&mut cpu, root)?;
            tch::no_grad(|| t.detach().copy_(&cpu));
        }
        self.sync_work();
        Ok(())
    }

    fn device(&self) -> tch::Device {
        self.vars
            .first()
            .map_or(tch::Device::Cpu, |(_, p)| p.device())
    }

    pub fn save(&self, path: &Path) -> Result<(), tch::TchError> {
        let mut named: Vec<(String, &Tensor)> = Vec::new();
        for (i, (n, _)) in self.vars.iter().enumerate() {
            named.push((format!("m.{n}"), &self.m[i]));
            named.push((format!("v.{n}"), &self.v[i]));
        }
        Tensor::write_safetensors(&named, path)
    }

    pub fn load(&mut self, path: &Path, step: i64) -> Result<(), String> {
        let t = Tensor::read_safetensors(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let map: std::collections::HashMap<String, Tensor> = t.into_iter().collect();
        for (i, (n, p)) in self.vars.iter().enumerate() {
            for (prefix, dst) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{prefix}.{n}");
                let src = map
                    .get(&key)
                    .ok_or_else(|| format!("{}: optimizer state lacks `{key}`", path.display()))?;
                if src.size() != p.size() {
                    return Err(format!(
                        "{}: `{key}` has shape {:?}, the model {:?}",
                        path.display(),
                        src.size(),
                        p.size()
                    ));
                }
                tch::no_grad(|| dst.copy_(src));
            }
        }
        self.step = step;
        self.sync_work();
        Ok(())
    }
}

/// Learning-rate schedules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Schedule {
    Constant,
    /// NVIDIA GNMT v2: linear warmup, then halve `decay_steps` times, starting at 2/3 of training.
    Gnmt {
        warmup: i64,
        decay_steps: i64,
    },
    /// `lr * min(step/warmup, sqrt(warmup/step))`.
    InverseSqrt {
        warmup: i64,
    },
}

impl Schedule {
    pub fn lr(&self, base: f64, step: i64, total: i64) -> f64 {
        let s = step.max(1) as f64;
        match *self {
            Schedule::Constant => base,
            Schedule::Gnmt {
                warmup,
                decay_steps,
            } => {
                if step < warmup {
                    return base * s / warmup as f64;
                }
                let start = total * 2 / 3;
                if step < start || decay_steps <= 0 {
                    return base;
                }
                let interval = ((total - start) / decay_steps).max(1);
                let k = ((step - start) / interval + 1).min(decay_steps);
                base * 0.5f64.powi(k as i32)
            }
            Schedule::InverseSqrt { warmup } => {
                let w = warmup.max(1) as f64;
                base * (s / w).min((w / s).sqrt())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_cpu_adam_equals_the_tensor_path_and_the_formula() {
        let n = 1000;
        let c = AdamCoefficients {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            inv_sqrt_bc2: (1.0 / (1.0f64 - 0.999f64.powi(3)).sqrt()) as f32,
            step_size: (1e-3 / (1.0 - 0.9f64.powi(3))) as f32,
        };
        let (g, p0, m0, v0) = crate::seeded(3, || {
            let r = |s: f64| Tensor::randn([n], (Kind::Float, tch::Device::Cpu)) * s;
            let v0 = Tensor::rand([n], (Kind::Float, tch::Device::Cpu)) * 0.01;
            (r(1.0), r(1.0), r(0.1), v0)
        });
        let (p, m, v) = (p0.copy(), m0.copy(), v0.copy());
        assert!(fused_cpu_update(&p, &g, &m, &v, None, &c));
        let (mut p2, mut m2, mut v2) = (p0.copy(), m0.copy(), v0.copy());
        tensor_update(&mut p2, &g, &mut m2, &mut v2, &c);
        for (a, b) in [(&p, &p2), (&m, &m2), (&v, &v2)] {
            let d = (a - b).abs().max().double_value(&[]);
            assert!(d < 1e-6, "{d}");
        }
        // Element 0 by hand.
        let f = |t: &Tensor| t.double_value(&[0]) as f32;
        let (mut pe, mut me, mut ve) = (f(&p0), f(&m0), f(&v0));
        c.update(&mut pe, f(&g), &mut me, &mut ve);
        assert_eq!((pe, me, ve), (f(&p), f(&m), f(&v)));
        // Not contiguous, or not float32: the fused path declines.
        let t = crate::seeded(4, || Tensor::randn([4, 3], (Kind::Float, tch::Device::Cpu))).tr();
        let o = || Tensor::zeros([3, 4], (Kind::Float, tch::Device::Cpu));
        assert!(!fused_cpu_update(&t, &o(), &o(), &o(), None, &c));
        let d = Tensor::zeros([n], (Kind::Double, tch::Device::Cpu));
        assert!(!fused_cpu_update(&d, &g, &m, &v, None, &c));
        // Overlapping views of one buffer: declined, the slices would alias.
        let buf = Tensor::zeros([n + 1], (Kind::Float, tch::Device::Cpu));
        assert!(!fused_cpu_update(
            &buf.narrow(0, 0, n),
            &buf.narrow(0, 1, n),
            &m,
            &v,
            None,
            &c
        ));
        // Mixed precision: the same update, and the bf16 working copy is the updated weights
        // rounded as libtorch rounds them; an fp16 copy, or one inside another buffer, declined.
        let (p3, m3, v3) = (p0.copy(), m0.copy(), v0.copy());
        let work = Tensor::zeros([n], (Kind::BFloat16, tch::Device::Cpu));
        assert!(fused_cpu_update(&p3, &g, &m3, &v3, Some(&work), &c));
        assert!(p3.equal(&p) && m3.equal(&m) && v3.equal(&v));
        assert!(work.equal(&p.to_kind(Kind::BFloat16)));
        let half = Tensor::zeros([n], (Kind::Half, tch::Device::Cpu));
        assert!(!fused_cpu_update(&p3, &g, &m3, &v3, Some(&half), &c));
        let inside = Tensor::zeros([n * 2], (Kind::Float, tch::Device::Cpu));
        let (p4, w4) = (
            inside.narrow(0, 0, n),
            inside.narrow(0, n / 2, n / 2).view_dtype(Kind::BFloat16),
        );
        assert_eq!(w4.numel(), n as usize);
        assert!(!fused_cpu_update(&p4, &g, &m3, &v3, Some(&w4), &c));
    }

    #[test]
    fn a_mixed_precision_step_refreshes_the_working_copy() {
        for kind in [Kind::BFloat16, Kind::Half] {
            let (master, work, mut adam) = mixed_pair(1000, kind);
            let w = work.variables()["w"].shallow_clone();
            adam.zero_grad();
            let coef = crate::seeded(5, || Tensor::randn([1000], (Kind::Float, tch::Device::Cpu)));
            (&w * coef.to_kind(kind)).sum(Kind::Float).backward();
            adam.accumulate();
            adam.apply(1e-2);
            let m = master.variables()["w"].shallow_clone();
            assert!(
                m.not_equal(1.0).all().int64_value(&[]) == 1,
                "{kind:?}: every weight moved"
            );
            assert!(
                w.equal(&m.to_kind(kind)),
                "{kind:?}: working copy = rounded master"
            );
        }
    }

    #[test]
    fn loss_scaler_halves_on_overflow_and_grows_after_good_steps() {
        let mut s = LossScaler {
            growth_interval: 3,
            ..LossScaler::default()
        };
        assert!(!s.update(false));
        assert_eq!(s.scale, 32768.0);
        assert!(s.update(true) && s.update(true));
        assert_eq!(s.scale, 32768.0);
        assert!(
            !s.update(false),
            "an overflow resets the count of good steps"
        );
        assert_eq!((s.scale, s.good_steps), (16384.0, 0));
        for _ in 0..3 {
            assert!(s.update(true));
        }
        assert_eq!((s.scale, s.good_steps), (32768.0, 0));
        let mut low = LossScaler {
            scale: 1.0,
            ..LossScaler::default()
        };
        low.update(false);
        assert_eq!(low.scale, 1.0, "never below 1");
    }

    #[test]
    fn scaled_gradients_are_read_unscaled() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let w = vs.root().var("w", &[3], nn::Init::Const(1.0));
        let mut adam = Adam::new(&vs);
        (&w * Tensor::from_slice(&[3.0f32, 0.0, 4.0]))
            .sum(Kind::Float)
            .g_mul_scalar(1024.0)
            .backward();
        adam.grad_scale = 1024.0;
        assert!((adam.clip_grad_norm(0.0) - 5.0).abs() < 1e-6);
        let g = adam.grad(0);
        assert_eq!(Vec::<f32>::try_from(&g).unwrap(), [3.0, 0.0, 4.0]);
        // An overflowed gradient gives a non-finite norm and is left alone.
        let _ = w.grad().g_mul_scalar_(f64::INFINITY);
        assert!(!adam.clip_grad_norm(1.0).is_finite());
    }

    /// A float32 master `w` (`n` ones), its working copy in `kind`, and Adam over both.
    fn mixed_pair(n: i64, kind: Kind) -> (nn::VarStore, nn::VarStore, Adam) {
        let master = nn::VarStore::new(tch::Device::Cpu);
        let _ = master.root().var("w", &[n], nn::Init::Const(1.0));
        let mut work = nn::VarStore::new(tch::Device::Cpu);
        let _ = work.root().var("w", &[n], nn::Init::Const(1.0));
        if kind == Kind::BFloat16 {
            work.bfloat16();
        } else {
            work.half();
        }
        let adam = Adam::mixed(&master, &work).unwrap();
        (master, work, adam)
    }

    #[test]
    fn bf16_micro_batch_gradients_add_up_in_float32() {
        let (_m, work, mut adam) = mixed_pair(4, Kind::BFloat16);
        let w = work.variables()["w"].shallow_clone();
        adam.zero_grad();
        // 1 + 0.001 is 1 in bf16 (8 significant bits): summed there, the second batch vanishes.
        for weight in [1.0, 0.001] {
            (&w * weight).sum(Kind::Float).backward();
            adam.accumulate();
        }
        let g = Vec::<f32>::try_from(&adam.grad(0)).unwrap();
        for x in g {
            assert!((x - 1.001).abs() < 1e-5, "{x}");
        }
        // The working copy's own gradient was moved out, and dropped: the next backward
        // hands its gradient over.
        assert!(!w.grad().defined());
    }

    #[test]
    fn fp16_gradients_are_unscaled_into_float32_before_clipping() {
        let (_m, work, mut adam) = mixed_pair(2, Kind::Half);
        let w = work.variables()["w"].shallow_clone();
        adam.zero_grad();
        // True gradient [1000, 1e-3] under a loss scale of 16: [16000, 0.016] in fp16. Clipping
        // to norm 1e-2 multiplies by 1e-5: in fp16, 0.016 * 1e-5 = 1.6e-7 would round to one
        // subnormal step (6e-8) or to zero; in float32 it is 1e-8 exactly enough.
        adam.grad_scale = 16.0;
        let coef = Tensor::from_slice(&[1000.0f32, 1e-3]).to_kind(Kind::Half);
        ((&w * coef).sum(Kind::Float) * 16.0).backward();
        adam.accumulate();
        let norm = adam.clip_grad_norm(1e-2);
        assert!((norm - 1000.0).abs() < 1.0, "{norm}");
        let g = Vec::<f32>::try_from(&adam.grad(0)).unwrap();
        let factor = 1e-2 / (norm + 1e-6);
        // fp16's 1e-3 is 0.0010004; the clipped value keeps it within float32 rounding.
        let small = 0.001_000_4 * factor;
        assert!(
            (g[1] as f64 - small).abs() < small * 1e-3,
            "{g:?}, want {small}"
        );
        assert!((g[0] as f64 - 1000.0 * factor).abs() < 1e-6, "{g:?}");
        // An overflow in the working copy reaches the accumulators and the norm says so.
        adam.zero_grad();
        let big = Tensor::from_slice(&[60000.0f32, 1.0]).to_kind(Kind::Half);
        ((&w * big).sum(Kind::Half) * 4.0).backward();
        adam.accumulate();
        assert!(!adam.clip_grad_norm(1.0).is_finite());
    }

    #[test]
    fn gnmt_schedule_warms_up_then_halves_four_times() {
        let s = Schedule::Gnmt {
            warmup: 10,
            decay_steps: 4,
        };
        assert!((s.lr(1.0, 5, 300) - 0.5).abs() < 1e-12);
        assert_eq!(s.lr(1.0, 100, 300), 1.0);
        assert_eq!(s.lr(1.0, 200, 300), 0.5);
        assert_eq!(s.lr(1.0, 299, 300), 0.0625);
    }
}
