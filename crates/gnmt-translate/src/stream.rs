//! Translating a stream of lines: read in chunks, sort by length inside a chunk, translate in
//! batches, write back in input order. One output line per input line, always.

use std::io::Write;

use gnmt_model::Seq2Seq;
use gnmt_tokenizer::SubwordTokenizer;
use tch::Device;

use crate::{cpu_decoder, translate_members, Hypothesis, Member, SearchConfig};

#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error("{0}")]
    Input(String),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] gnmt_tokenizer::TokenizerError),
    #[error("search: {0}")]
    Search(#[from] tch::TchError),
    #[error("sharded translation: {0}")]
    Shard(#[from] gnmt_dist::DistError),
}

/// Where translations go: a writer told each time a chunk of input lines is completely written
/// (a resumable output records its progress there).
pub trait Output: Write {
    /// The first `lines` input lines (those of a resumed run included) are completely written.
    fn chunk_done(&mut self, lines: usize) -> std::io::Result<()> {
        let _ = lines;
        Ok(())
    }
}

impl<W: Write> Output for std::io::BufWriter<W> {}
impl Output for gnmt_io::AtomicFile {}
impl Output for Vec<u8> {}
impl Output for std::io::Sink {}

impl Output for gnmt_io::resume::ResumableFile {
    fn chunk_done(&mut self, lines: usize) -> std::io::Result<()> {
        gnmt_io::resume::ResumableFile::chunk_done(self, lines)
    }
}

/// What to print per line.
#[derive(Debug, Clone, Default)]
pub struct OutputOptions {
    /// Print the N best with scores: `index ||| text ||| score`.
    pub nbest: usize,
    /// Append `\t` and, per output piece, the source piece it attends to most.
    pub alignments: bool,
    /// Keep the plain best translation of every line in [`Summary::best`] (to score it,
    /// whatever the output holds).
    pub keep_best: bool,
}

/// Totals for the summary line.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub sentences: usize,
    pub source_tokens: usize,
    pub output_tokens: usize,
    pub truncated: usize,
    /// With [`OutputOptions::keep_best`]: the best translation of each line, plain text.
    pub best: Vec<String>,
}

/// Batched translation of id sequences: a model, search settings and batching.
#[derive(Debug)]
pub struct Engine<'a> {
    pub model: &'a Seq2Seq,
    /// With more models: searched as one ensemble with `model` (see [`Ensemble`]).
    pub ensemble: Ensemble<'a>,
    pub device: Device,
    pub search: SearchConfig,
    /// Sentences per batch.
    pub batch_size: usize,
    /// Source tokens per batch, padding counted (the longest sentence times the batch size);
    /// with it, batches of short sentences grow and batches of long ones shrink.
    pub max_tokens: Option<usize>,
    /// Batches searched at the same time, each on its own thread. On a CPU, small GEMMs scale
    /// better across batches than inside one, so several single-threaded searches beat one
    /// multi-threaded search; on a GPU one is right.
    pub workers: usize,
    /// libtorch threads of each worker (when `workers > 1`).
    pub threads_per_worker: i32,
}

/// The models of an ensemble after an [`Engine`]'s first, and the weights of all of them.
#[derive(Debug, Clone, Default)]
pub struct Ensemble<'a> {
    pub others: Vec<&'a Seq2Seq>,
    /// One per model, the first model's first; empty: equal weights.
    pub weights: Vec<f64>,
}

/// A batch job's index and, per sentence, its hypotheses.
type JobResult = (usize, Vec<Vec<Hypothesis>>);

/// A model and its packed CPU decoder, searched by several threads at once (the search workers
/// of [`Engine`], the batching workers of a server).
#[derive(Debug, Clone)]
pub struct SharedSearch<'a> {
    /// One model, or an ensemble's.
    members: Vec<Member<'a>>,
    device: Device,
}

// SAFETY: `Tensor` is not `Sync` because tch cannot know how a tensor will be used. Through
// `SharedSearch` threads call only `translate_members` and `LiveSearch` (each thread its own),
// which use the models by
// `Seq2Seq::encode` (train = false), `Seq2Seq::step_logits` and `Seq2Seq::step_cpu` (with a
// `CpuDecoder` packed before the threads start), all under `no_grad`: forward passes that read
// the parameters, no dropout, no in-place operation on a weight, no gradient. libtorch supports
// concurrent reads of a tensor from several threads (reference counts are atomic), which is
// how PyTorch runs one module in many threads.
#[allow(unsafe_code)]
unsafe impl Sync for SharedSearch<'_> {}

impl<'a> SharedSearch<'a> {
    /// `model` on `device`, with `cpu` packed from it by [`cpu_decoder`] (or None: libtorch).
    pub fn new(
        model: &'a Seq2Seq,
        cpu: Option<&'a gnmt_model::CpuDecoder>,
        device: Device,
    ) -> Self {
        let members = vec![Member {
            model,
            cpu,
            weight: 1.0,
        }];
        SharedSearch { members, device }
    }

    /// An ensemble of `members` (at least one) on `device`.
    pub fn ensemble(members: Vec<Member<'a>>, device: Device) -> Self {
        SharedSearch { members, device }
    }

    /// [`translate_members`] on the shared model(s).
    pub fn translate(
        &self,
        sources: &[Vec<u32>],
        cfg: &SearchConfig,
    ) -> Result<Vec<Vec<Hypothesis>>, tch::TchError> {
        translate_members(&self.members, sources, cfg, self.device)
    }

    /// A [`LiveSearch`](crate::LiveSearch) on the shared model(s), with `cfg`.
    pub fn live(&self, cfg: SearchConfig) -> Result<crate::LiveSearch<'a>, tch::TchError> {
        crate::LiveSearch::new(self.members.clone(), cfg, self.device)
    }

    /// The (first) model: its configuration is the search's.
    pub fn model(&self) -> Option<&'a Seq2Seq> {
        self.members.first().map(|m| m.model)
    }
}

/// Search threads and libtorch threads per search thread for `device`: on CUDA one search (the
/// GPU is the parallel part); on a CPU `requested` or one search per libtorch thread up to 8,
/// sharing the libtorch threads between them.
pub fn workers_for(device: Device, requested: Option<usize>) -> (usize, i32) {
    let threads = tch::get_num_threads().max(1);
    if device != Device::Cpu {
        return (1, threads);
    }
    let workers = requested.unwrap_or(threads.min(8) as usize).max(1);
    (workers, (threads / workers as i32).max(1))
}

/// libtorch threads for one search given `threads`: one when its products are gnmt-kernels'
/// (`on_kernels`: they run on the search's own thread, and more libtorch threads only add their
/// wake-ups to its small operators; 2 threads against 1, one search: int8 13% slower at batch
/// 64, 2.5x slower at batch 1).
pub fn search_threads(on_kernels: bool, threads: i32) -> i32 {
    match on_kernels {
        true => 1,
        false => threads.max(1),
    }
}

/// Runs `f`, one search on the calling thread, with [`search_threads`] of the caller's
/// libtorch threads; the caller's thread count is restored.
pub fn as_lone_search<T>(on_kernels: bool, f: impl FnOnce() -> T) -> T {
    let all_threads = tch::get_num_threads();
    tch::set_num_threads(search_threads(on_kernels, all_threads));
    let out = f();
    tch::set_num_threads(all_threads);
    out
}

impl Engine<'_> {
    /// Translates id sequences in length-sorted batches, results in input order.
    pub fn translate_ids(&self, srcs: &[Vec<u32>]) -> Result<Vec<Vec<Hypothesis>>, tch::TchError> {
        let mut order: Vec<usize> = (0..srcs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(srcs[i].len()));
        let mut out: Vec<Vec<Hypothesis>> = vec![Vec::new(); srcs.len()];
        let mut jobs: Vec<(Vec<usize>, Vec<Vec<u32>>)> = Vec::new();
        for batch in self.batches(&order, srcs) {
            let (empty, full): (Vec<usize>, Vec<usize>) =
                batch.iter().partition(|&&i| srcs[i].is_empty());
            for i in empty {
                out[i] = vec![Hypothesis::empty()];
            }
            if !full.is_empty() {
                let inputs = full.iter().map(|&i| srcs[i].clone()).collect();
                jobs.push((full, inputs));
            }
        }
        let workers = self.workers.clamp(1, jobs.len().max(1));
        let models: Vec<&Seq2Seq> = std::iter::once(self.model)
            .chain(self.ensemble.others.iter().copied())
            .collect();
        // Packed once for all the batches (and search threads) of this call.
        let cpus: Vec<Option<gnmt_model::CpuDecoder>> = models
            .iter()
            .map(|m| match jobs.is_empty() {
                true => None,
                false => cpu_decoder(m, self.device, self.search.kernels),
            })
            .collect();
        let members: Vec<Member> = models
            .iter()
            .zip(&cpus)
            .enumerate()
            .map(|(i, (m, cpu))| Member {
                model: m,
                cpu: cpu.as_ref(),
                weight: self.ensemble.weights.get(i).copied().unwrap_or(1.0),
            })
            .collect();
        let shared = SharedSearch::ensemble(members, self.device);
        let on_kernels = cpus.iter().all(Option::is_some);
        let results: Vec<JobResult> = if workers == 1 {
            as_lone_search(on_kernels, || {
                jobs.iter()
                    .enumerate()
                    .map(|(j, (_, inputs))| shared.translate(inputs, &self.search).map(|h| (j, h)))
                    .collect::<Result<_, _>>()
            })?
        } else {
            let threads = search_threads(on_kernels, self.threads_per_worker);
            self.parallel(&jobs, workers, threads, &shared)?
        };
        for (j, hyps) in results {
            for (&i, h) in jobs[j].0.iter().zip(hyps) {
                out[i] = h;
            }
        }
        Ok(out)
    }

    /// Runs the jobs on `workers` threads of `threads` libtorch threads each, each taking the
    /// next job (longest first) when free.
    fn parallel(
        &self,
        jobs: &[(Vec<usize>, Vec<Vec<u32>>)],
        workers: usize,
        threads: i32,
        shared: &SharedSearch,
    ) -> Result<Vec<JobResult>, tch::TchError> {
        let next = std::sync::atomic::AtomicUsize::new(0);
        // Not `self`: it holds the model, which only `shared` may carry across threads.
        let search = &self.search;
        let all_threads = tch::get_num_threads();
        let mut results = Vec::with_capacity(jobs.len());
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    let next = &next;
                    scope.spawn(move || {
                        tch::set_num_threads(threads);
                        let mut done = Vec::new();
                        loop {
                            let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some((_, inputs)) = jobs.get(j) else {
                                break;
                            };
                            let hyps = shared.translate(inputs, search)?;
                            done.push((j, hyps));
                        }
                        Ok::<_, tch::TchError>(done)
                    })
                })
                .collect();
            for h in handles {
                match h.join() {
                    Ok(done) => results.push(done),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        });
        // MKL's thread count may be process-wide: give the caller back its own.
        tch::set_num_threads(all_threads);
        let mut all = Vec::with_capacity(jobs.len());
        for done in results {
            all.extend(done?);
        }
        Ok(all)
    }

    /// Splits `order` (longest first) into batches of at most `batch_size` sentences and, with
    /// `max_tokens`, at most that many padded source tokens (but always at least one sentence).
    pub(crate) fn batches<'o>(&self, order: &'o [usize], srcs: &[Vec<u32>]) -> Vec<&'o [usize]> {
        let size = self.batch_size.max(1);
        let mut out = Vec::new();
        let mut rest = order;
        while !rest.is_empty() {
            // Longest first: the first sentence sets the padded width of the batch.
            let n = match self.max_tokens {
                Some(budget) => (budget / srcs[rest[0]].len().max(1)).clamp(1, size),
                None => size,
            }
            .min(rest.len());
            let (head, tail) = rest.split_at(n);
            out.push(head);
            rest = tail;
        }
        out
    }
}

/// An [`Engine`] with its vocabulary: translates text streams.
#[derive(Debug)]
pub struct Translator<'a> {
    pub engine: Engine<'a>,
    pub tokenizer: &'a SubwordTokenizer,
    /// Lines read (and held) at a time: memory stays bounded on any file size.
    pub chunk_lines: usize,
    /// Several processes (torchrun) translating one stream: chunk `c` is translated by rank
    /// `c % world`, and rank 0 gathers every chunk's text through the job's store and writes
    /// them in input order; the other ranks write nothing.
    pub shard: Option<&'a gnmt_dist::ProcessGroup>,
}

impl Translator<'_> {
    /// Translates `lines` after the first `skip` (those an interrupted run wrote already) into
    /// `out`, telling it and `progress(lines_done)` after every chunk. The summary counts the
    /// lines this process translated.
    pub fn translate_stream<I, E, W>(
        &self,
        lines: I,
        skip: usize,
        out: &mut W,
        opts: &OutputOptions,
        mut progress: impl FnMut(usize),
    ) -> Result<Summary, TranslateError>
    where
        I: Iterator<Item = Result<String, E>>,
        E: std::fmt::Display,
        W: Output,
    {
        let (rank, world) = self.shard.map_or((0, 1), |g| (g.rank(), g.world_size()));
        let mut summary = Summary::default();
        let mut lines = lines.peekable();
        for l in lines.by_ref().take(skip) {
            l.map_err(|e| TranslateError::Input(e.to_string()))?;
        }
        let (mut done, mut c) = (skip, 0usize);
        while lines.peek().is_some() {
            let mut chunk = Vec::with_capacity(self.chunk_lines);
            for l in lines.by_ref().take(self.chunk_lines.max(1)) {
                chunk.push(l.map_err(|e| TranslateError::Input(e.to_string()))?);
            }
            let text = if c % world == rank {
                Some(self.translate_chunk(&chunk, done, opts, &mut summary)?)
            } else {
                None
            };
            let key = format!("translate/chunk/{c}");
            match (rank, text, self.shard) {
                (0, Some(text), _) => out.write_all(text.as_bytes())?,
                (0, None, Some(g)) => {
                    out.write_all(&g.store_get(&key)?)?;
                    // Written: the store need not hold it (its memory stays a few chunks).
                    g.store_delete(&key)?;
                }
                (_, Some(text), Some(g)) => g.store_set(&key, text.as_bytes())?,
                _ => {}
            }
            done += chunk.len();
            c += 1;
            if rank == 0 {
                out.chunk_done(done)?;
            }
            progress(done);
        }
        out.flush()?;
        if let Some(g) = self.shard {
            g.barrier()?;
        }
        Ok(summary)
    }

    /// The output text of one chunk whose first line is input line `first` (0-based).
    fn translate_chunk(
        &self,
        chunk: &[String],
        first: usize,
        opts: &OutputOptions,
        summary: &mut Summary,
    ) -> Result<String, TranslateError> {
        let max_len = self.engine.model.config.max_source_len.max(1) as usize;
        let mut ids = Vec::with_capacity(chunk.len());
        for (k, line) in chunk.iter().enumerate() {
            let mut v = self.tokenizer.encode(line)?;
            if v.len() > max_len {
                tracing::warn!(
                    "line {}: {} pieces, truncated to the model's limit of {max_len}",
                    first + k + 1,
                    v.len()
                );
                v.truncate(max_len);
                summary.truncated += 1;
            }
            summary.source_tokens += v.len();
            ids.push(v);
        }
        let hyps = self.engine.translate_ids(&ids)?;
        let mut text = String::new();
        for (k, (h, src)) in hyps.iter().zip(&ids).enumerate() {
            let empty = Hypothesis::empty();
            let best = h.first().unwrap_or(&empty);
            let best_text = self.tokenizer.decode(&best.tokens)?.replace('\n', " ");
            summary.output_tokens += best.tokens.len() + 1;
            if opts.nbest > 0 {
                for hyp in h.iter().take(opts.nbest) {
                    let t = self.tokenizer.decode(&hyp.tokens)?;
                    text.push_str(&format!(
                        "{} ||| {} ||| {:.4}\n",
                        first + k,
                        t.replace('\n', " "),
                        hyp.score
                    ));
                }
            } else {
                text.push_str(&best_text);
                if opts.alignments {
                    text.push('\t');
                    let a: Vec<String> = best
                        .alignment
                        .iter()
                        .map(|j| j.min(&src.len().saturating_sub(1)).to_string())
                        .collect();
                    text.push_str(&a.join(" "));
                }
                text.push('\n');
            }
            if opts.keep_best {
                summary.best.push(best_text);
            }
        }
        summary.sentences += chunk.len();
        Ok(text)
    }
}
