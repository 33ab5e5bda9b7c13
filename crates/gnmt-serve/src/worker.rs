//! The search workers: plain threads (never the async runtime's) that take batches from the
//! queue, search them on the shared model and hand every request its own sentences back.

use std::panic::AssertUnwindSafe;

use gnmt_translate::stream::SharedSearch;
use gnmt_translate::SearchConfig;

use crate::metrics::Metrics;
use crate::queue::{BatchLimits, Job, Queue};

/// What every worker shares.
#[derive(Debug)]
pub(crate) struct Workers<'a> {
    pub queue: &'a Queue,
    pub search: SharedSearch<'a>,
    /// Settings the requests do not choose (length limit, kernels).
    pub base: SearchConfig,
    pub limits: BatchLimits,
    pub metrics: &'a Metrics,
    pub threads_per_worker: i32,
}

impl Workers<'_> {
    /// One worker's loop, until the queue is closed and drained.
    pub fn work(&self) {
        tch::set_num_threads(self.threads_per_worker.max(1));
        while let Some(jobs) = self.queue.next_batch(&self.limits) {
            self.search_batch(jobs);
            self.queue.batch_done();
        }
    }

    /// Searches the sentences of `jobs` as one batch and answers each job with its share.
    fn search_batch(&self, jobs: Vec<Job>) {
        let Some(first) = jobs.first() else {
            return;
        };
        let s = first.settings;
        let cfg = SearchConfig {
            beam: s.beam,
            alpha: s.alpha,
            beta: s.beta,
            nbest: s.nbest,
            ..self.base.clone()
        };
        let sources: Vec<Vec<u32>> = jobs
            .iter()
            .flat_map(|j| j.sources.iter().cloned())
            .collect();
        self.metrics.batch(sources.len());
        // A failure of one batch fails its requests, not the worker or anyone else's request.
        let found =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.search.translate(&sources, &cfg)));
        let error = match found {
            Ok(Ok(hyps)) => {
                let mut hyps = hyps.into_iter();
                for j in jobs {
                    let mine: Vec<_> = hyps.by_ref().take(j.sources.len()).collect();
                    // The client may have gone meanwhile: nobody to tell.
                    let _ = j.reply.send(Ok(mine));
                }
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the search panicked".to_string(),
        };
        tracing::error!(
            "search of a batch of {} sentences failed: {error}",
            sources.len()
        );
        self.metrics.search_error();
        for j in jobs {
            let _ = j.reply.send(Err(error.clone()));
        }
    }
}
