//! `gnmt serve`: the HTTP translation server (gnmt-serve) with the model, precision, threads
//! and workers chosen as `gnmt translate` chooses them, stopped by SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use gnmt_serve::{BatchLimits, Model, RequestLimits, ServeConfig, Server, Settings};
use gnmt_translate::stream::SharedSearch;
use gnmt_translate::SearchConfig;

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    models: crate::models::ModelArgs,
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
    #[command(flatten)]
    compute: crate::args::ComputeArgs,
    /// Sentences per search batch, from however many requests.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Source pieces per search batch.
    #[arg(long, default_value_t = 2048)]
    max_batch_tokens: usize,
    /// How long the first request of a batch may wait for others to join it, in milliseconds.
    #[arg(long, default_value_t = 5)]
    batch_wait_ms: u64,
    /// A batch starts earlier once no request has come for this long, in milliseconds (a
    /// burst is in; a lone request waits only this).
    #[arg(long, default_value_t = 1.0)]
    batch_quiet_ms: f64,
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
                quiet: Duration::from_secs_f64(self.batch_quiet_ms.clamp(0.0, 1e6) / 1e3),
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
    a.compute.set_threads();
    let device = a.compute.device.0;
    let defaults = a.search.config_for(&a.models)?;
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
    let loaded = a.models.load(&a.precision, device)?;
    let base = SearchConfig {
        kernels: loaded.kernels,
        ..defaults
    };
    // Packed once, shared by every worker.
    let cpus: Vec<_> = loaded
        .dirs
        .iter()
        .map(|d| gnmt_translate::cpu_decoder(&d.model, device, loaded.kernels))
        .collect();
    let (workers, threads_per_worker) = a.compute.workers_on(device);
    let threads_per_worker = gnmt_translate::stream::search_threads(
        cpus.iter().all(Option::is_some),
        threads_per_worker,
    );
    let summary = server.run(Model {
        search: SharedSearch::ensemble(loaded.members(&cpus), device),
        tokenizer: loaded.dirs[0].tokenizer.clone(),
        base,
        workers,
        threads_per_worker,
    })?;
    tracing::info!("stopped: {summary}");
    Ok(ExitCode::SUCCESS)
}

/// `gnmt bench serve`.
#[derive(Args, Debug)]
pub struct ServeBench {
    /// The server, host:port (as `gnmt serve` logged it).
    #[arg(long)]
    addr: std::net::SocketAddr,
    /// Sentences to send, one per line.
    #[arg(short, long)]
    input: PathBuf,
    /// Concurrent clients of each round, each sending one sentence per request, the next when
    /// answered (comma-separated: one JSON line per round).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64")]
    clients: Vec<usize>,
    /// Sentences per round (default: the whole file).
    #[arg(long)]
    sentences: Option<usize>,
}

/// Throughput and latency of one round: `clients` clients sending `sentences` one by one.
fn bench_round(
    addr: std::net::SocketAddr,
    sentences: &[String],
    clients: usize,
) -> Result<serde_json::Value> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let timeout = Duration::from_secs(300);
    let start = std::time::Instant::now();
    let results: Vec<Result<Vec<f64>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut latencies = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(text) = sentences.get(i) else {
                            return Ok(latencies);
                        };
                        let body = serde_json::json!({ "text": [text] }).to_string();
                        let t = std::time::Instant::now();
                        let r = gnmt_serve::client::post(addr, "/v1/translate", &body, timeout)
                            .with_context(|| format!("POST http://{addr}/v1/translate"))?;
                        if r.status != 200 {
                            bail!("line {}: HTTP {}: {}", i + 1, r.status, r.body);
                        }
                        latencies.push(t.elapsed().as_secs_f64());
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a client thread panicked"))
            })
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = Vec::with_capacity(sentences.len());
    for r in results {
        lat.extend(r?);
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len().max(1)) - 1;
        lat.get(i).copied().unwrap_or(0.0) * 1e3
    };
    Ok(serde_json::json!({
        "bench": "serve", "clients": clients, "sentences": lat.len(), "seconds": secs,
        "sentences_per_s": lat.len() as f64 / secs, "p50_ms": pct(0.5), "p99_ms": pct(0.99),
        "cpu": crate::doctor::cpu_model(),
    }))
}

pub fn bench(a: ServeBench) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(&a.input)
        .with_context(|| format!("reading {}", a.input.display()))?;
    let mut sentences: Vec<String> = text.lines().map(str::to_string).collect();
    sentences.retain(|s| !s.trim().is_empty());
    if let Some(n) = a.sentences {
        sentences.truncate(n);
    }
    if sentences.is_empty() {
        bail!("{}: no sentences", a.input.display());
    }
    let mut rounds = Vec::new();
    for &c in &a.clients {
        let r = bench_round(a.addr, &sentences, c)?;
        eprintln!("{r}");
        rounds.push(r);
    }
    Ok(serde_json::json!({ "bench": "serve", "rounds": rounds }))
}
