//! `gnmt serve`: the HTTP translation server (gnmt-serve) with the model, precision, threads
//! and workers chosen as `gnmt translate` chooses them, stopped by SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use gnmt_model::DeviceSpec;
use gnmt_serve::{BatchLimits, Model, RequestLimits, ServeConfig, Server, Settings};
use gnmt_translate::stream::SharedSearch;
use gnmt_translate::{ModelDir, SearchConfig};

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Model directory (a training run's final/ or best/, or `gnmt average`'s output).
    #[arg(short, long)]
    model: PathBuf,
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port, logged at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The search settings of requests that set none (they may set beam, alpha, beta, nbest).
    #[command(flatten)]
    search: crate::args::SearchArgs,
    #[command(flatten)]
    precision: crate::precision::PrecisionArgs,
    /// cpu, cuda or cuda:N (one search stream on the GPU, batching across requests).
    #[arg(long, default_value = "cpu")]
    device: DeviceSpec,
    /// CPU threads for libtorch (default: one per core).
    #[arg(long)]
    threads: Option<i32>,
    /// Batches searched at once on a CPU, each on its own thread (default: one per libtorch
    /// thread, at most 8; always 1 on CUDA).
    #[arg(long)]
    workers: Option<usize>,
    /// Sentences per search batch, from however many requests.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Source pieces per search batch.
    #[arg(long, default_value_t = 2048)]
    max_batch_tokens: usize,
    /// How long the first request of a batch may wait for others to join it, in milliseconds.
    #[arg(long, default_value_t = 5)]
    batch_wait_ms: u64,
    /// Sentences that may wait for a search worker; beyond, requests get 503 with Retry-After.
    #[arg(long, default_value_t = 2048)]
    queue_sentences: usize,
    /// Sentences one request may send (more: 413).
    #[arg(long, default_value_t = 256)]
    max_request_sentences: usize,
    /// Bytes of one request body (more: 413).
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// The widest beam a request may ask for.
    #[arg(long, default_value_t = 16)]
    max_beam: usize,
    /// Seconds a request may wait for its translation (then 504).
    #[arg(long, default_value_t = 60)]
    deadline_secs: u64,
}

impl ServeArgs {
    fn config(&self, defaults: &SearchConfig) -> ServeConfig {
        ServeConfig {
            limits: RequestLimits {
                max_sentences: self.max_request_sentences.max(1),
                max_beam: self.max_beam.max(1),
            },
            batch: BatchLimits {
                sentences: self.batch_size.max(1),
                tokens: self.max_batch_tokens.max(1),
                wait: Duration::from_millis(self.batch_wait_ms),
            },
            queue_sentences: self.queue_sentences.max(1),
            max_body_bytes: self.max_body_bytes.max(64),
            deadline: Duration::from_secs(self.deadline_secs.max(1)),
            defaults: Settings {
                beam: defaults.beam,
                alpha: defaults.alpha,
                beta: defaults.beta,
                nbest: 1,
            },
        }
    }
}

pub fn run(a: ServeArgs) -> Result<ExitCode> {
    if let Some(t) = a.threads {
        tch::set_num_threads(t);
    }
    let device = a.device.0;
    let defaults = SearchConfig::from(&a.search);
    if defaults.beam > a.max_beam {
        bail!(
            "--beam {} is above --max-beam {}",
            defaults.beam,
            a.max_beam
        );
    }
    // Listening before the model loads: /health answers `loading` meanwhile.
    let addr = format!("{}:{}", a.host, a.port);
    let server = Server::start(&addr, a.config(&defaults))?;
    tracing::info!("listening on http://{}", server.local_addr());
    let stopper = server.stopper();
    ctrlc::set_handler(move || stopper.stop())
        .context("cannot install the SIGTERM / Ctrl-C handler")?;
    let ModelDir {
        mut vs,
        model,
        tokenizer,
        ..
    } = ModelDir::open(&a.model, device)?;
    let precision = a.precision.resolve(&a.model, device)?;
    let kernels = crate::precision::cast_for(&mut vs, precision, device);
    let base = SearchConfig {
        kernels,
        ..defaults
    };
    let cpu = gnmt_translate::cpu_decoder(&model, device, kernels);
    let (workers, threads_per_worker) = gnmt_translate::stream::workers_for(device, a.workers);
    let summary = server.run(Model {
        search: SharedSearch::new(&model, cpu.as_ref(), device),
        tokenizer,
        base,
        workers,
        threads_per_worker,
    })?;
    tracing::info!("stopped: {summary}");
    Ok(ExitCode::SUCCESS)
}
