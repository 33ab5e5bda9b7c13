//! Command-line argument groups shared by several subcommands.

use clap::Args;
use gnmt_translate::SearchConfig;

/// Beam search settings (`gnmt translate`, `gnmt bench translate`); the defaults are
/// [`SearchConfig::default`]'s.
#[derive(Args, Debug, Clone)]
pub struct SearchArgs {
    /// Beam width [default: the model's search.json from `gnmt tune`, else 5].
    #[arg(long)]
    pub beam: Option<usize>,
    /// Length normalization exponent: scores are divided by ((5 + |Y|) / 6)^alpha [default: the
    /// model's search.json, else 0.6].
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Coverage penalty weight: beta * sum over source words of log(min(attention sum, 1))
    /// [default: the model's search.json, else 0.1].
    #[arg(long)]
    pub beta: Option<f64>,
    /// Output length limit: max_len_a * source length + max_len_b [default: the model's
    /// search.json, else 1.5].
    #[arg(long)]
    pub max_len_a: Option<f64>,
    /// See --max-len-a [default: the model's search.json, else 10].
    #[arg(long)]
    pub max_len_b: Option<usize>,
    /// Greedy search (beam 1).
    #[arg(long)]
    pub greedy: bool,
}

impl From<&SearchArgs> for SearchConfig {
    fn from(a: &SearchArgs) -> Self {
        a.config(None)
    }
}

impl SearchArgs {
    /// The settings: each flag given, else the tuned settings (if any), else the defaults.
    pub fn config(&self, tuned: Option<&gnmt_translate::TunedSearch>) -> SearchConfig {
        let base = SearchConfig::default();
        let base = tuned.map_or(base.clone(), |t| t.apply(base));
        let beam = if self.greedy {
            1
        } else {
            self.beam.unwrap_or(base.beam).max(1)
        };
        SearchConfig {
            beam,
            alpha: self.alpha.unwrap_or(base.alpha),
            beta: self.beta.unwrap_or(base.beta),
            max_len_a: self.max_len_a.unwrap_or(base.max_len_a),
            max_len_b: self.max_len_b.unwrap_or(base.max_len_b),
            ..base
        }
    }

    /// [`SearchArgs::config`] with the tuned settings beside the first of `models`, saying so in
    /// the log (and when they were tuned for another number of models).
    pub fn config_for(&self, models: &crate::models::ModelArgs) -> anyhow::Result<SearchConfig> {
        let model_dir = models.first();
        let tuned = gnmt_translate::TunedSearch::read(model_dir)?;
        if let Some(t) = &tuned {
            tracing::info!(
                "search settings tuned by `gnmt tune` ({}): beam {}, alpha {}, beta {}, \
                 length limit {} * source + {} (validation BLEU {:.2}, defaults {:.2}); flags \
                 override them",
                model_dir.join(gnmt_translate::TUNED_FILE).display(),
                t.beam,
                t.alpha,
                t.beta,
                t.max_len_a,
                t.max_len_b,
                t.bleu,
                t.default_bleu
            );
            let (tuned_for, given) = (t.ensemble.len() + 1, models.model.len());
            if tuned_for != given {
                tracing::warn!(
                    "those settings were tuned for {tuned_for} model(s) ({}), this run has \
                     {given}: run `gnmt tune` with these models to tune them",
                    std::iter::once(model_dir.display().to_string())
                        .chain(t.ensemble.iter().cloned())
                        .collect::<Vec<_>>()
                        .join(" + ")
                );
            }
        }
        Ok(self.config(tuned.as_ref()))
    }
}

/// Where a translation runs: `gnmt translate` and `gnmt serve`.
#[derive(Args, Debug, Clone)]
pub struct ComputeArgs {
    /// cpu, cuda or cuda:N (on CUDA one search stream, batching as on a CPU).
    #[arg(long, default_value = "cpu")]
    pub device: gnmt_model::DeviceSpec,
    /// CPU threads for libtorch (default: libtorch's choice, one per core).
    #[arg(long)]
    pub threads: Option<i32>,
    /// Batches searched at once on a CPU, each on its own thread with threads/workers libtorch
    /// threads (default: one per libtorch thread, at most 8; always 1 on CUDA).
    #[arg(long)]
    pub workers: Option<usize>,
}

impl ComputeArgs {
    /// The search workers, and libtorch threads per worker, for `device`.
    pub fn workers_on(&self, device: tch::Device) -> (usize, i32) {
        gnmt_translate::stream::workers_for(device, self.workers)
    }

    /// Applies --threads to libtorch.
    pub fn set_threads(&self) {
        if let Some(t) = self.threads {
            tch::set_num_threads(t);
        }
    }
}
