//! The search workers: plain threads (never the async runtime's) that take batches from the
//! queue and search them as [`LiveSearch`]es: between two steps, queued requests with the same
//! settings join the search under way, and every request is answered at the step its last
//! sentence ends (continuous batching).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;

use gnmt_translate::stream::SharedSearch;
use gnmt_translate::{Hypothesis, LiveSearch, SearchConfig, Ticket};

use crate::api::Settings;
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

/// A request being searched: its sentences' hypotheses as they end.
#[derive(Debug)]
struct Open {
    job: Job,
    found: Vec<Option<Vec<Hypothesis>>>,
    left: usize,
}

/// The requests of one live search, and which request and sentence each ticket is.
#[derive(Debug, Default)]
struct Requests {
    open: HashMap<usize, Open>,
    tickets: HashMap<Ticket, (usize, usize)>,
    next: usize,
}

impl Requests {
    fn add(&mut self, job: Job, tickets: Vec<Ticket>) {
        let key = self.next;
        self.next += 1;
        for (i, t) in tickets.into_iter().enumerate() {
            self.tickets.insert(t, (key, i));
        }
        let n = job.sources.len();
        self.open.insert(
            key,
            Open {
                job,
                found: vec![None; n],
                left: n,
            },
        );
    }

    /// Files a sentence's hypotheses; answers its request once all of its sentences are in.
    fn deliver(&mut self, ticket: Ticket, hyps: Vec<Hypothesis>) {
        let Some((key, i)) = self.tickets.remove(&ticket) else {
            return;
        };
        let Some(open) = self.open.get_mut(&key) else {
            return;
        };
        open.found[i] = Some(hyps);
        open.left -= 1;
        if open.left == 0 {
            if let Some(open) = self.open.remove(&key) {
                let found = open.found.into_iter().map(Option::unwrap_or_default);
                // The client may have gone meanwhile: nobody to tell.
                let _ = open.job.reply.send(Ok(found.collect()));
            }
        }
    }

    /// Answers every open request with `error`; how many of their sentences were open.
    fn fail(&mut self, error: &str) -> usize {
        let open = self.tickets.len();
        self.tickets.clear();
        for (_, o) in self.open.drain() {
            let _ = o.job.reply.send(Err(error.to_string()));
        }
        open
    }
}

impl Workers<'_> {
    /// One worker's loop, until the queue is closed and drained.
    pub fn work(&self) {
        tch::set_num_threads(self.threads_per_worker.max(1));
        self.queue.add_worker();
        while let Some(jobs) = self.queue.next_batch(&self.limits) {
            self.search_live(jobs);
            self.queue.batch_done();
        }
    }

    /// Searches `jobs` and, step by step, the queued jobs with their settings that join; each
    /// answered when its sentences are done. A failure fails the requests of this search only.
    fn search_live(&self, jobs: Vec<Job>) {
        let Some(settings) = jobs.first().map(|j| j.settings) else {
            return;
        };
        let mut requests = Requests::default();
        let found =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.run(settings, jobs, &mut requests)));
        let error = match found {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the search panicked".to_string(),
        };
        let open = requests.fail(&error);
        tracing::error!("a search of {open} sentences failed: {error}");
        self.metrics.search_error();
        self.queue.sentences_done(open);
    }

    fn run(
        &self,
        settings: Settings,
        jobs: Vec<Job>,
        requests: &mut Requests,
    ) -> Result<(), tch::TchError> {
        let cfg = SearchConfig {
            beam: settings.beam,
            alpha: settings.alpha,
            beta: settings.beta,
            nbest: settings.nbest,
            ..self.base.clone()
        };
        let mut live = match self.search.live(cfg) {
            Ok(live) => live,
            Err(e) => return Err(self.refuse(jobs, e)),
        };
        self.join(&mut live, jobs, requests)?;
        while !live.is_empty() {
            let done = live.step()?;
            self.queue.sentences_done(done.len());
            for (ticket, hyps) in done {
                requests.deliver(ticket, hyps);
            }
            let more = self
                .queue
                .join_batch(&settings, live.len(), live.pieces(), &self.limits);
            self.join(&mut live, more, requests)?;
        }
        Ok(())
    }

    /// Answers `jobs`, which never joined a search, with `error` (and gives it back).
    fn refuse(&self, jobs: Vec<Job>, error: tch::TchError) -> tch::TchError {
        let sentences: usize = jobs.iter().map(|j| j.sources.len()).sum();
        for job in jobs {
            let _ = job.reply.send(Err(error.to_string()));
        }
        self.queue.sentences_done(sentences);
        error
    }

    fn join(
        &self,
        live: &mut LiveSearch,
        jobs: Vec<Job>,
        requests: &mut Requests,
    ) -> Result<(), tch::TchError> {
        if jobs.is_empty() {
            return Ok(());
        }
        // One encoder batch for all of them.
        let sources: Vec<Vec<u32>> = jobs
            .iter()
            .flat_map(|j| j.sources.iter().cloned())
            .collect();
        let mut tickets = match live.join(&sources) {
            Ok(t) => t.into_iter(),
            Err(e) => return Err(self.refuse(jobs, e)),
        };
        for job in jobs {
            let mine = tickets.by_ref().take(job.sources.len()).collect();
            requests.add(job, mine);
        }
        self.metrics.batch(live.len());
        Ok(())
    }
}
