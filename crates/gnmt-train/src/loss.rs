//! The training loss: label-smoothed cross-entropy over the non-padding targets, and its
//! backward pass (fused on a CPU).

use tch::{Kind, Tensor};

use crate::TrainError;

/// Label-smoothed cross-entropy over non-padding targets: `(loss, nll)` per token.
pub fn smoothed_loss(logits: &Tensor, target: &Tensor, eps: f64) -> (Tensor, Tensor) {
    let (loss, nll) = smoothed_loss_sum(logits, target, eps);
    let n = target.ne(0).sum(Kind::Float);
    (loss / &n, nll / n)
}

/// [`smoothed_loss`] summed over the non-padding targets instead of averaged: what a group of
/// batches adds up before dividing by the group's tokens.
pub fn smoothed_loss_sum(logits: &Tensor, target: &Tensor, eps: f64) -> (Tensor, Tensor) {
    let lp = logits.log_softmax(-1, Kind::Float);
    let nll = -lp.gather(2, &target.unsqueeze(2), false).squeeze_dim(2);
    let smooth = -lp.mean_dim(-1, false, Kind::Float);
    let mask = target.ne(0).to_kind(Kind::Float);
    let loss = (((1.0 - eps) * &nll + eps * smooth) * &mask).sum(Kind::Float);
    let nll = (nll * &mask).sum(Kind::Float);
    (loss, nll)
}

/// Backpropagates `scale` times the summed label-smoothed loss of `logits` against `target`
/// and returns that sum. On a CPU the loss and its gradient with respect to the logits come
/// from one gnmt-kernels pass, handed to autograd at the logits (a fifth of a bf16 training
/// step went to libtorch's log-softmax, gather, mean and their backward passes and casts);
/// elsewhere through libtorch's operators ([`smoothed_loss_sum`]).
pub fn loss_backward(
    logits: &Tensor,
    target: &Tensor,
    eps: f64,
    scale: f64,
) -> Result<f64, TrainError> {
    let fused = gnmt_kernels::loss::SmoothedCe {
        eps: eps as f32,
        grad_scale: scale as f32,
        pad: i64::from(gnmt_tokenizer::PAD),
    };
    if let Some((sums, grad)) = gnmt_kernels::tensor::smoothed_ce_tensors(logits, target, fused) {
        gnmt_dist::backward_with_grad(logits, &grad)?;
        return Ok(sums.loss);
    }
    let (loss_sum, _nll) = smoothed_loss_sum(logits, target, eps);
    (&loss_sum * scale).f_backward()?;
    Ok(loss_sum.f_double_value(&[])?)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use gnmt_model::{ModelConfig, Seq2Seq};
    use tch::{nn, Device};

    use super::*;

    #[test]
    fn smoothed_loss_ignores_padding() {
        let logits = crate::seeded(0, || Tensor::randn([2, 3, 5], (Kind::Float, Device::Cpu)));
        let t1 = Tensor::from_slice(&[1i64, 2, 0, 3, 0, 0]).view([2, 3]);
        let (a, _) = smoothed_loss(&logits, &t1, 0.1);
        // Changing the logits at padded positions changes nothing.
        let mask = t1.eq(0).unsqueeze(2).to_kind(Kind::Float);
        let (b, _) = smoothed_loss(&(&logits + mask * 100.0), &t1, 0.1);
        assert!((a.double_value(&[]) - b.double_value(&[])).abs() < 1e-6);
    }

    #[test]
    fn the_fused_loss_backpropagates_as_libtorchs_operators_do() {
        let cfg = ModelConfig::preset("tiny", 50).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let model = crate::seeded(2, || Seq2Seq::new(&vs.root(), &cfg).unwrap());
        let src = Tensor::from_slice(&[5i64, 6, 7, 8, 9, 10, 0, 0]).view([2, 4]);
        let len = Tensor::from_slice(&[4i64, 2]);
        let tgt_in = Tensor::from_slice(&[1i64, 11, 12, 13, 1, 14, 15, 0]).view([2, 4]);
        let tgt_out = Tensor::from_slice(&[11i64, 12, 13, 2, 14, 15, 2, 0]).view([2, 4]);
        let scale = 0.25;
        let grads = |fused: bool| {
            for (_, mut v) in vs.variables() {
                let mut g = v.grad();
                if g.defined() {
                    let _ = g.zero_();
                }
                let _ = v.requires_grad_(true);
            }
            let logits = model.forward(&src, &len, &tgt_in, false);
            let loss = if fused {
                loss_backward(&logits, &tgt_out, 0.1, scale).unwrap()
            } else {
                let (sum, _) = smoothed_loss_sum(&logits, &tgt_out, 0.1);
                (&sum * scale).backward();
                sum.double_value(&[])
            };
            let g: Vec<f64> = vs
                .variables()
                .into_iter()
                .collect::<BTreeMap<_, _>>()
                .values()
                .flat_map(|v| {
                    Vec::<f64>::try_from(v.grad().to_kind(Kind::Double).flatten(0, -1)).unwrap()
                })
                .collect();
            (loss, g)
        };
        let (loss_f, g_f) = grads(true);
        let (loss_l, g_l) = grads(false);
        assert!(
            (loss_f - loss_l).abs() < 1e-5 * loss_l.abs(),
            "{loss_f} vs {loss_l}"
        );
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let diff: Vec<f64> = g_f.iter().zip(&g_l).map(|(a, b)| a - b).collect();
        assert!(norm(&g_l) > 0.0);
        assert!(
            norm(&diff) < 1e-5 * norm(&g_l),
            "{} of {}",
            norm(&diff),
            norm(&g_l)
        );
    }
}
