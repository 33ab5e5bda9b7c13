//! The HTTP side: routes, handlers, and the mapping of every failure to a status and a JSON
//! message. Handlers tokenize and detokenize; the search itself runs on the workers.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use gnmt_tokenizer::SubwordTokenizer;
use gnmt_translate::Hypothesis;

use crate::api::{self, Checked, Rejection, RequestLimits, Scored, Settings, TranslateResponse};
use crate::metrics::{Metrics, Served};
use crate::queue::{Job, Queue, Refused};

/// The vocabulary side of a loaded model.
#[derive(Debug)]
pub(crate) struct Vocab {
    pub tokenizer: SubwordTokenizer,
    /// The model's source length limit, in pieces.
    pub max_len: usize,
}

/// What the handlers share.
#[derive(Debug)]
pub(crate) struct AppState {
    pub queue: Arc<Queue>,
    pub metrics: Arc<Metrics>,
    /// Set once the model is loaded: until then the server answers 503.
    pub vocab: OnceLock<Vocab>,
    pub limits: RequestLimits,
    pub defaults: Settings,
    pub deadline: Duration,
}

pub(crate) fn router(app: Arc<AppState>, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/v1/translate", post(translate))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(app)
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        let body = Json(serde_json::json!({ "error": self.message }));
        match status {
            // Busy or loading: the client may try again shortly.
            StatusCode::SERVICE_UNAVAILABLE => {
                (status, [(header::RETRY_AFTER, "1")], body).into_response()
            }
            _ => (status, body).into_response(),
        }
    }
}

fn unavailable(message: &str) -> Rejection {
    Rejection {
        status: 503,
        message: message.into(),
    }
}

async fn health(State(app): State<Arc<AppState>>) -> Response {
    match app.vocab.get() {
        Some(_) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "loading" })),
        )
            .into_response(),
    }
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let text = app
        .metrics
        .render(app.queue.depth(), app.vocab.get().is_some());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn translate(
    State(app): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let start = Instant::now();
    let (status, response, sentences) = match answer(&app, body).await {
        Ok((r, n)) => (200, Json(r).into_response(), n),
        Err(rej) => (rej.status, rej.into_response(), 0),
    };
    let seconds = start.elapsed().as_secs_f64();
    app.metrics.response(status, seconds);
    tracing::debug!(
        "POST /v1/translate {status}: {sentences} sentences in {:.1} ms",
        seconds * 1e3
    );
    response
}

/// The response to a translation request and its number of sentences, or why not.
async fn answer(
    app: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<(TranslateResponse, usize), Rejection> {
    let body = body.map_err(|r| Rejection {
        status: r.status().as_u16(),
        message: r.body_text(),
    })?;
    let vocab = app
        .vocab
        .get()
        .ok_or_else(|| unavailable("the model is still loading"))?;
    let req = api::parse(&body, app.defaults, &app.limits)?;
    let (sources, warnings) = encode(vocab, &req.sentences)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job = Job {
        sources,
        settings: req.settings,
        reply: tx,
        enqueued: Instant::now(),
    };
    // The answer needs only the source lengths: the ids themselves go to the queue.
    let source_lens: Vec<usize> = job.sources.iter().map(Vec::len).collect();
    app.queue.push(job).map_err(|(why, _)| match why {
        Refused::Full => unavailable("the queue is full; retry shortly"),
        Refused::Closed => unavailable("the server is shutting down"),
    })?;
    let hyps = match tokio::time::timeout(app.deadline, rx).await {
        Ok(Ok(Ok(h))) => h,
        Ok(Ok(Err(e))) => {
            return Err(Rejection {
                status: 500,
                message: format!("the search failed: {e}"),
            })
        }
        Ok(Err(_)) => return Err(unavailable("the server is shutting down")),
        Err(_) => {
            return Err(Rejection {
                status: 504,
                message: format!(
                    "not translated within the server's deadline of {:.1} s",
                    app.deadline.as_secs_f64()
                ),
            })
        }
    };
    let n = source_lens.len();
    if hyps.len() != n {
        return Err(Rejection {
            status: 500,
            message: format!("the search answered {} of {n} sentences", hyps.len()),
        });
    }
    let resp = respond(app, vocab, &req, &source_lens, &hyps, warnings)?;
    Ok((resp, n))
}

/// Source pieces of each sentence, cut to the model's limit (with a warning for each cut).
fn encode(vocab: &Vocab, sentences: &[String]) -> Result<(Vec<Vec<u32>>, Vec<String>), Rejection> {
    let mut warnings = Vec::new();
    let mut out = Vec::with_capacity(sentences.len());
    for (i, s) in sentences.iter().enumerate() {
        let mut ids = vocab.tokenizer.encode(s).map_err(|e| Rejection {
            status: 400,
            message: format!("field `text[{i}]`: {e}"),
        })?;
        if ids.len() > vocab.max_len {
            warnings.push(format!(
                "text[{i}]: {} pieces, truncated to the model's limit of {}",
                ids.len(),
                vocab.max_len
            ));
            ids.truncate(vocab.max_len);
        }
        out.push(ids);
    }
    Ok((out, warnings))
}

/// The JSON answer: the best translation of each sentence as `gnmt translate` writes it, and
/// what else the request asked for.
fn respond(
    app: &AppState,
    vocab: &Vocab,
    req: &Checked,
    source_lens: &[usize],
    hyps: &[Vec<Hypothesis>],
    warnings: Vec<String>,
) -> Result<TranslateResponse, Rejection> {
    let decode = |h: &Hypothesis| {
        vocab
            .tokenizer
            .decode(&h.tokens)
            .map(|t| t.replace('\n', " "))
            .map_err(|e| Rejection {
                status: 500,
                message: format!("detokenizing: {e}"),
            })
    };
    let empty = Hypothesis::empty();
    let best: Vec<&Hypothesis> = hyps.iter().map(|h| h.first().unwrap_or(&empty)).collect();
    let translations = best
        .iter()
        .map(|h| decode(h))
        .collect::<Result<Vec<_>, _>>()?;
    let nbest = if req.settings.nbest > 1 {
        let mut all = Vec::with_capacity(hyps.len());
        for h in hyps {
            let scored = h.iter().take(req.settings.nbest).map(|x| {
                decode(x).map(|text| Scored {
                    text,
                    score: x.score,
                })
            });
            all.push(scored.collect::<Result<Vec<_>, _>>()?);
        }
        Some(all)
    } else {
        None
    };
    let alignments = req.alignments.then(|| {
        best.iter()
            .zip(source_lens)
            .map(|(h, len)| {
                let last = len.saturating_sub(1);
                h.alignment.iter().map(|&j| j.min(last)).collect()
            })
            .collect()
    });
    app.metrics.served(Served {
        sentences: source_lens.len(),
        source_tokens: source_lens.iter().sum(),
        output_tokens: best.iter().map(|h| h.tokens.len() + 1).sum(),
        truncated: warnings.len(),
    });
    Ok(TranslateResponse {
        translations,
        nbest,
        alignments,
        warnings,
    })
}
