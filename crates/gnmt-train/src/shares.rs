//! Training a batch as shares on threads of their own (CPU).
//!
//! A recurrent model's matrix products are small (a time step's batch of rows at a time), and
//! libtorch's intra-op threading (OpenMP in oneDNN's LSTM and MKL's GEMM) gains little from a
//! second core on them: session 16 measured a second thread adding a few percent to a bf16
//! step. Cutting the batch into shares whose forward and backward passes run at once, each on
//! one libtorch thread, keeps every core on its own large-enough work.
//!
//! Share 0 runs on the trained model itself; share `j > 0` on a replica whose parameters share
//! the model's storage (so every update reaches it) but keep gradients of their own, added to
//! the step's in share order afterwards. The numbers therefore depend on the share count alone
//! (each share's dropout masks come from its own seed, its gradients are summed in a fixed
//! order), never on how many threads ran them: a run resumes exactly under another
//! `--threads`.

use gnmt_model::{ModelConfig, Seq2Seq};
use tch::{nn, Tensor};

use crate::optim::Adam;
use crate::trainer::TrainError;

/// A model replica for one share: its own gradients, the trained model's weights.
struct Replica {
    /// Holds the replica's variables alive; they are reached through `model` and `params`.
    _vs: nn::VarStore,
    model: Seq2Seq,
    /// The replica's parameters in [`Adam::names`]' order.
    params: Vec<Tensor>,
}

/// The replicas of a run that cuts its batches into shares.
pub struct Shares {
    /// Share `j`'s replica at `j - 1`; taken out while a thread runs it.
    replicas: Vec<Option<Replica>>,
}

impl Shares {
    /// Replicas for `count` shares (none for 1; one share off the CPU, where a batch's passes
    /// fill the device alone) of the model whose parameters are `source`'s (the working copy
    /// in mixed precision), in `adam`'s order. Building them draws initial
    /// weights (discarded) from libtorch's generator: a trainer calls this under
    /// [`crate::seeded`], so that the draws land nowhere between another's seed and its draws.
    pub fn new(
        count: usize,
        source: &nn::VarStore,
        config: &ModelConfig,
        adam: &Adam,
    ) -> Result<Self, TrainError> {
        let by_name = source.variables();
        let count = match source.device() {
            tch::Device::Cpu => count.max(1),
            _ => 1,
        };
        let replicas = (1..count)
            .map(|_| {
                let vs = nn::VarStore::new(source.device());
                let model = Seq2Seq::new(&vs.root(), config)?;
                let own = vs.variables();
                let mut params = Vec::with_capacity(own.len());
                for name in adam.names() {
                    let (Some(p), Some(src)) = (own.get(name), by_name.get(name)) else {
                        return Err(TrainError::Config(format!(
                            "the model replica lacks parameter `{name}`"
                        )));
                    };
                    let mut p = p.shallow_clone();
                    // The replica's parameter becomes a view of the model's storage: a leaf
                    // of its own (own gradient), the same numbers always.
                    tch::no_grad(|| p.f_set_data(src))?;
                    params.push(p);
                }
                Ok(Some(Replica {
                    _vs: vs,
                    model,
                    params,
                }))
            })
            .collect::<Result<_, TrainError>>()?;
        Ok(Shares { replicas })
    }

    /// How many shares each batch is cut into.
    pub fn count(&self) -> usize {
        self.replicas.len() + 1
    }

    /// Share `j` of `count` of a batch: every `count`-th pair from the `j`-th. Empty shares
    /// (a batch smaller than the count) are left out.
    pub fn split(&self, idx: &[usize]) -> Vec<Vec<usize>> {
        let n = self.count();
        (0..n)
            .map(|j| every_nth(idx, j, n))
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Runs `pass(model, j)` (a forward and backward pass) for shares `0..n` (`n` at most
    /// [`Shares::count`]) on `threads` libtorch threads in all: as many shares at once as
    /// there are threads, each with its part of them. Then adds the replicas' gradients to
    /// `adam`'s ([`Adam::accumulate_shares`]). Returns the passes' results in share order. Up
    /// to `threads = n`, every pass runs on one libtorch thread, so the results are the same
    /// bit for bit whatever `threads` is.
    pub fn run<T: Send>(
        &mut self,
        model: &Seq2Seq,
        adam: &mut Adam,
        n: usize,
        threads: usize,
        pass: impl Fn(&Seq2Seq, usize) -> Result<T, TrainError> + Sync,
    ) -> Result<Vec<T>, TrainError> {
        let n = n.clamp(1, self.count());
        let lanes = threads.clamp(1, n);
        let per_lane = (threads / lanes).max(1) as i32;
        let callers = tch::get_num_threads();
        // Lane `l` runs shares l + lanes * k with their replicas (taken out meanwhile); lane 0,
        // the calling thread, runs share 0 on the model itself.
        let mut lanes_work: Vec<Vec<(usize, Option<Replica>)>> = (0..lanes)
            .map(|l| {
                (l..n)
                    .step_by(lanes)
                    .map(|j| (j, j.checked_sub(1).and_then(|r| self.replicas[r].take())))
                    .collect()
            })
            .collect();
        let ours = lanes_work.remove(0);
        let pass = &pass;
        tch::set_num_threads(per_lane);
        let finished = std::thread::scope(|s| {
            let handles: Vec<_> = lanes_work
                .into_iter()
                .map(|work| {
                    s.spawn(move || {
                        tch::set_num_threads(per_lane);
                        run_lane(pass, None, work)
                    })
                })
                .collect();
            let mut done = run_lane(pass, Some(model), ours);
            for h in handles {
                done.extend(h.join().map_err(|_| {
                    TrainError::Config("a thread training a share of the batch panicked".into())
                })?);
            }
            Ok::<_, TrainError>(done)
        });
        tch::set_num_threads(callers.max(1));
        let mut finished = finished?;
        finished.sort_by_key(|d| d.0);
        // The replicas go back before any error returns: the next step needs them.
        let mut outs = Vec::with_capacity(finished.len());
        for (j, replica, out) in finished {
            if let Some(r) = replica {
                self.replicas[j - 1] = Some(r);
            }
            outs.push(out);
        }
        let outs = outs.into_iter().collect::<Result<Vec<T>, TrainError>>()?;
        let replicas: Vec<&[Tensor]> = self
            .replicas
            .iter()
            .take(n - 1)
            .flatten()
            .map(|r| r.params.as_slice())
            .collect();
        adam.accumulate_shares(&replicas)
            .map_err(TrainError::Config)?;
        Ok(outs)
    }
}

/// Every `n`-th pair of a batch from the `first`-th: a share of it, as the shares of a batch
/// and the data-parallel ranks cut it.
pub(crate) fn every_nth(idx: &[usize], first: usize, n: usize) -> Vec<usize> {
    idx.iter().copied().skip(first).step_by(n.max(1)).collect()
}

/// One thread's shares, in order: share 0 on `model`, the others on their replicas.
type LaneResult<T> = Vec<(usize, Option<Replica>, Result<T, TrainError>)>;

fn run_lane<T>(
    pass: &(impl Fn(&Seq2Seq, usize) -> Result<T, TrainError> + Sync),
    model: Option<&Seq2Seq>,
    work: Vec<(usize, Option<Replica>)>,
) -> LaneResult<T> {
    work.into_iter()
        .map(|(j, replica)| {
            let out = match (&replica, model) {
                (Some(r), _) => pass(&r.model, j),
                (None, Some(m)) if j == 0 => pass(m, j),
                (None, _) => Err(TrainError::Config(format!("share {j} has no replica"))),
            };
            (j, replica, out)
        })
        .collect()
}
