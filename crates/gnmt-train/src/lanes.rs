//! The optimizer's passes over the parameters, spread over the CPU's threads.
//!
//! Between the shares of a batch ([`crate::shares`]) and the next step, the optimizer walks
//! every parameter several times: zeroing gradients, adding the shares' gradients up, their
//! norm, Adam, the average of the weights. Each pass is a memory-bound loop, and they ran on
//! one thread while the other cores waited: 23 of 253 ms of a two-thread step of `small`
//! (session 30, on the Intel Xeon without AMX). Parameters are independent of each other, so
//! each thread (a lane) takes whole parameters, balanced by size, and runs libtorch on one
//! thread of its own there. Every parameter's arithmetic is then the same whatever the number
//! of lanes, so the numbers are too.

/// Runs `work` on each job under `no_grad`, on `lanes` threads (the calling one among them)
/// when there is more than one, and returns the results in the jobs' order. `weight` is a
/// job's size (a parameter's element count): lanes are filled largest job first, each onto
/// the lane with the least work so far. A panic in a lane is resumed on the caller.
pub(crate) fn per_param<T: Send, R: Send>(
    jobs: Vec<(usize, T)>,
    lanes: usize,
    work: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let lanes = lanes.clamp(1, jobs.len().max(1));
    if lanes == 1 {
        return tch::no_grad(|| jobs.into_iter().map(|(_, job)| work(job)).collect());
    }
    let mut lane_jobs = assign(jobs, lanes);
    let ours = lane_jobs.remove(0);
    let work = &work;
    let run = move |jobs: Vec<(usize, T)>| -> Vec<(usize, R)> {
        tch::set_num_threads(1);
        tch::no_grad(|| jobs.into_iter().map(|(i, job)| (i, work(job))).collect())
    };
    let callers = tch::get_num_threads();
    let mut done = std::thread::scope(|s| {
        let handles: Vec<_> = lane_jobs
            .into_iter()
            .map(|jobs| s.spawn(move || run(jobs)))
            .collect();
        let mut done = run(ours);
        for h in handles {
            done.extend(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        done
    });
    tch::set_num_threads(callers.max(1));
    done.sort_unstable_by_key(|d| d.0);
    done.into_iter().map(|(_, r)| r).collect()
}

/// The jobs of each lane, each job with its index in `jobs`, in that order within a lane.
fn assign<T>(jobs: Vec<(usize, T)>, lanes: usize) -> Vec<Vec<(usize, T)>> {
    let mut order: Vec<(usize, (usize, T))> = jobs.into_iter().enumerate().collect();
    // Largest first; equal sizes in their given order (a stable sort), so the split is fixed.
    order.sort_by_key(|(_, (weight, _))| std::cmp::Reverse(*weight));
    let mut load = vec![0usize; lanes];
    let mut out: Vec<Vec<(usize, T)>> = (0..lanes).map(|_| Vec::new()).collect();
    for (i, (weight, job)) in order {
        let lightest = (0..lanes).min_by_key(|&l| (load[l], l)).unwrap_or(0);
        load[lightest] += weight;
        out[lightest].push((i, job));
    }
    for lane in &mut out {
        lane.sort_unstable_by_key(|(i, _)| *i);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_balance_by_size_and_results_keep_the_jobs_order() {
        let sizes = [100, 1, 60, 50, 1, 10];
        let split = assign(sizes.iter().map(|&s| (s, s)).collect(), 2);
        let loads: Vec<usize> = split.iter().map(|l| l.iter().map(|j| j.1).sum()).collect();
        assert_eq!(loads.iter().sum::<usize>(), 222);
        assert!(loads.iter().all(|&l| (100..=122).contains(&l)), "{loads:?}");
        for lanes in 1..=8 {
            let out = per_param(
                sizes.iter().enumerate().map(|(i, &s)| (s, i)).collect(),
                lanes,
                |i| {
                    // Each lane runs without autograd, as the optimizer's work must.
                    assert!(
                        !tch::Tensor::ones([1], (tch::Kind::Float, tch::Device::Cpu))
                            .set_requires_grad(true)
                            .g_mul_scalar(2.0)
                            .requires_grad()
                    );
                    i * 10
                },
            );
            assert_eq!(out, vec![0, 10, 20, 30, 40, 50], "{lanes} lanes");
        }
        assert!(per_param(Vec::<(usize, u8)>::new(), 3, |x| x).is_empty());
    }
}
