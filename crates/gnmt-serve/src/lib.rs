//! # gnmt-serve
//!
//! `gnmt serve`: an HTTP translation service over one loaded model. Concurrent requests are
//! batched continuously: the search workers (plain threads, never the async runtime's) take the
//! oldest queued request together with every queued request that shares its search settings,
//! up to a sentence and token budget or a few milliseconds of waiting, and search them as one
//! batch that requests with those settings keep joining between decoder steps; each request
//! gets its own sentences back, in order, at the step its last sentence ends.
//!
//! Everything is bounded: the queue (then `503` with `Retry-After`), the body (`413`), the
//! sentences per request (`413`), the time a request may wait (`504`); bad JSON or fields get
//! `400` naming the field. [`Server::start`] listens at once (`/health` says `loading`),
//! [`Server::run`] serves with the model until [`Stopper::stop`], then finishes every request
//! it accepted. Signals are the binary's business: it calls `stop`.
//!
//! [`client`] is a small blocking HTTP/1.1 client for the load generator and the tests.

mod api;
pub mod client;
mod http;
mod metrics;
mod queue;
mod worker;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use gnmt_tokenizer::SubwordTokenizer;
use gnmt_translate::stream::SharedSearch;
use gnmt_translate::SearchConfig;

pub use api::{RequestLimits, Scored, Settings, TranslateResponse};
pub use queue::BatchLimits;

/// What can stop the server from serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("the HTTP server failed: {0}")]
    Http(String),
}

/// The server's limits and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    pub limits: RequestLimits,
    pub batch: BatchLimits,
    /// Sentences that may wait for a worker; beyond, requests get `503`.
    pub queue_sentences: usize,
    pub max_body_bytes: usize,
    /// How long a request may wait for its translation (`504` after).
    pub deadline: Duration,
    /// The search settings of requests that choose none.
    pub defaults: Settings,
}

/// The model side of the server: what the workers search and the handlers tokenize with.
#[derive(Debug)]
pub struct Model<'a> {
    pub search: SharedSearch<'a>,
    pub tokenizer: SubwordTokenizer,
    /// Length limit, kernels: what requests do not choose.
    pub base: SearchConfig,
    pub workers: usize,
    pub threads_per_worker: i32,
}

/// Stops a running server: it refuses new connections, answers what it accepted, and
/// [`Server::run`] returns. Cheap to clone; callable from any thread (a signal handler's).
#[derive(Debug, Clone)]
pub struct Stopper(Arc<tokio::sync::Notify>);

impl Stopper {
    pub fn stop(&self) {
        // notify_one keeps a permit if nobody waits yet: a stop before run is not lost.
        self.0.notify_one();
    }
}

/// A listening server.
#[derive(Debug)]
pub struct Server {
    runtime: tokio::runtime::Runtime,
    app: Arc<http::AppState>,
    addr: SocketAddr,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
    stopper: Stopper,
    batch: BatchLimits,
}

impl Server {
    /// Listens on `addr` (`host:port`; port 0 picks a free one) and answers at once: `503`
    /// until [`Server::run`] has the model.
    pub fn start(addr: &str, cfg: ServeConfig) -> Result<Server, ServeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("gnmt-http")
            .enable_all()
            .build()
            .map_err(ServeError::Runtime)?;
        let bind_err = |source| ServeError::Bind {
            addr: addr.to_string(),
            source,
        };
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(bind_err)?;
        let local = listener.local_addr().map_err(bind_err)?;
        let app = Arc::new(http::AppState {
            queue: Arc::new(queue::Queue::new(cfg.queue_sentences)),
            metrics: Arc::new(metrics::Metrics::default()),
            vocab: OnceLock::new(),
            limits: cfg.limits,
            defaults: cfg.defaults,
            deadline: cfg.deadline,
        });
        let stopper = Stopper(Arc::new(tokio::sync::Notify::new()));
        let router = http::router(app.clone(), cfg.max_body_bytes);
        let notify = stopper.0.clone();
        let serving = runtime.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { notify.notified().await })
                .await
        });
        Ok(Server {
            runtime,
            app,
            addr: local,
            serving,
            stopper,
            batch: cfg.batch,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Serves translations with `model` until stopped; returns a summary of what was served
    /// once every accepted request is answered.
    pub fn run(self, model: Model<'_>) -> Result<String, ServeError> {
        let max_len = model
            .search
            .model()
            .map_or(1, |m| m.config.max_source_len.max(1) as usize);
        let _ = self.app.vocab.set(http::Vocab {
            tokenizer: model.tokenizer,
            max_len,
        });
        let workers = worker::Workers {
            queue: &self.app.queue,
            search: model.search,
            base: model.base,
            limits: self.batch,
            metrics: &self.app.metrics,
            threads_per_worker: model.threads_per_worker,
        };
        tracing::info!(
            "ready: {} search worker(s) x {} thread(s), batches of up to {} sentences / {} pieces within {} ms",
            model.workers,
            model.threads_per_worker,
            self.batch.sentences,
            self.batch.tokens,
            self.batch.wait.as_millis()
        );
        let served = std::thread::scope(|scope| {
            for _ in 0..model.workers.max(1) {
                scope.spawn(|| workers.work());
            }
            // Returns after a stop, once every connection has had its answer.
            let served = self.runtime.block_on(self.serving);
            self.app.queue.close();
            served
        });
        match served {
            Ok(Ok(())) => Ok(self.app.metrics.summary()),
            Ok(Err(e)) => Err(ServeError::Http(e.to_string())),
            Err(e) => Err(ServeError::Http(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests;
