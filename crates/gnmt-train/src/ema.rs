//! An exponential moving average of the weights (Marian's `--exponential-smoothing`, the
//! "EMA" of many toolkits): the model validated, kept as `best/` and `final/`, and saved in
//! checkpoints, while training itself goes on from the raw weights.
//!
//! On a small corpus the raw weights at the end of a run wander with each batch; their average
//! over the last thousand steps or so translates better, as checkpoint averaging does, but at
//! every validation rather than only once the run has ended.

use gnmt_model::{ModelConfig, Seq2Seq};
use tch::{nn, Device};

use crate::trainer::TrainError;

/// The averaged weights and a model over them.
pub(crate) struct Ema {
    pub vs: nn::VarStore,
    pub model: Seq2Seq,
    decay: f64,
}

/// The decay of the `update`-th update (counted from 1): `decay`, or less for the first
/// updates, so that the average does not stay near the random initial weights for the
/// thousands of steps a decay of 0.999 or 0.9999 would take to forget them.
pub fn decay_at(decay: f64, update: i64) -> f64 {
    let n = update.max(0) as f64;
    decay.min((1.0 + n) / (10.0 + n))
}

/// A decay is a weight of the past in (0, 1).
pub fn check_decay(decay: f64) -> Result<(), TrainError> {
    if decay.is_finite() && decay > 0.0 && decay < 1.0 {
        Ok(())
    } else {
        Err(TrainError::Config(format!(
            "ema_decay = {decay}: the weight of the average's past, greater than 0 and less than 1 \
             (0.999 averages over about the last thousand steps)"
        )))
    }
}

impl Ema {
    /// An average that starts as a copy of `weights`.
    pub fn new(
        config: &ModelConfig,
        weights: &nn::VarStore,
        decay: f64,
        device: Device,
    ) -> Result<Self, TrainError> {
        check_decay(decay)?;
        let mut vs = nn::VarStore::new(device);
        let model = Seq2Seq::new(&vs.root(), config)?;
        vs.copy(weights)?;
        Ok(Ema { vs, model, decay })
    }

    /// Moves the average towards `weights` after the `update`-th optimizer update:
    /// `avg = d * avg + (1 - d) * weights`, on `threads` threads on a CPU ([`crate::lanes`]).
    pub fn update(&mut self, weights: &nn::VarStore, update: i64, threads: usize) {
        let d = decay_at(self.decay, update);
        let raw = weights.variables();
        let jobs = self
            .vs
            .variables()
            .into_iter()
            .filter_map(|(name, avg)| {
                raw.get(&name)
                    .map(|w| (avg.numel(), (avg, w.shallow_clone())))
            })
            .collect();
        let lanes = match self.vs.device() {
            Device::Cpu => threads,
            _ => 1,
        };
        crate::lanes::per_param(jobs, lanes, |(mut avg, w)| {
            let _ = avg.lerp_(&w, 1.0 - d);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn the_decay_ramps_up_to_the_setting() {
        assert!((decay_at(0.999, 1) - 2.0 / 11.0).abs() < 1e-12);
        assert!((decay_at(0.999, 90) - 91.0 / 100.0).abs() < 1e-12);
        assert_eq!(decay_at(0.999, 1_000_000), 0.999);
        assert!(check_decay(0.999).is_ok());
        for bad in [0.0, 1.0, -0.5, f64::NAN] {
            let e = check_decay(bad).unwrap_err().to_string();
            assert!(e.contains("ema_decay"), "{e}");
        }
    }

    #[test]
    fn the_average_follows_the_formula() {
        let cfg = ModelConfig::preset("tiny", 40).unwrap();
        let w = nn::VarStore::new(Device::Cpu);
        let _m = Seq2Seq::new(&w.root(), &cfg).unwrap();
        let mut ema = Ema::new(&cfg, &w, 0.9, Device::Cpu).unwrap();
        let before: Vec<(String, Tensor)> = {
            let mut v: Vec<_> = w.variables().into_iter().collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v.into_iter().map(|(n, t)| (n, t.copy())).collect()
        };
        // The weights move by +1 everywhere; after update 100 (decay 0.9) the average moves by
        // 0.1.
        tch::no_grad(|| {
            for (_, mut t) in w.variables() {
                let _ = t.g_add_scalar_(1.0);
            }
        });
        ema.update(&w, 100, 2);
        let avg = ema.vs.variables();
        assert_eq!(avg.len(), before.len());
        for (name, old) in before {
            let moved = (&avg[&name] - &old).to_kind(Kind::Double);
            let err = (moved - 0.1).abs().max().double_value(&[]);
            assert!(err < 1e-6, "{name}: off by {err}");
        }
    }
}
