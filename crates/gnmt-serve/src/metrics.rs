//! Counters and histograms of the server, rendered in Prometheus' text format at `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A Prometheus histogram: cumulative buckets, a sum and a count.
#[derive(Debug)]
struct Histogram {
    bounds: &'static [f64],
    state: Mutex<(Vec<u64>, f64, u64)>,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            state: Mutex::new((vec![0; bounds.len()], 0.0, 0)),
        }
    }

    fn observe(&self, v: f64) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for (b, c) in self.bounds.iter().zip(st.0.iter_mut()) {
            if v <= *b {
                *c += 1;
            }
        }
        st.1 += v;
        st.2 += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, c) in self.bounds.iter().zip(&st.0) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", st.2);
        let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", st.1, st.2);
    }

    fn totals(&self) -> (f64, u64) {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        (st.1, st.2)
    }
}

const LATENCY: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Everything `GET /metrics` reports.
#[derive(Debug)]
pub struct Metrics {
    /// Requests answered, by HTTP status.
    responses: Mutex<BTreeMap<u16, u64>>,
    sentences: AtomicU64,
    source_tokens: AtomicU64,
    output_tokens: AtomicU64,
    truncated: AtomicU64,
    search_errors: AtomicU64,
    latency: Histogram,
    batch: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            responses: Mutex::new(BTreeMap::new()),
            sentences: AtomicU64::new(0),
            source_tokens: AtomicU64::new(0),
            output_tokens: AtomicU64::new(0),
            truncated: AtomicU64::new(0),
            search_errors: AtomicU64::new(0),
            latency: Histogram::new(LATENCY),
            batch: Histogram::new(BATCH),
        }
    }
}

/// What a translated request adds to the totals.
#[derive(Debug, Clone, Copy, Default)]
pub struct Served {
    pub sentences: usize,
    pub source_tokens: usize,
    pub output_tokens: usize,
    pub truncated: usize,
}

impl Metrics {
    /// One request answered with `status` after `seconds`.
    pub fn response(&self, status: u16, seconds: f64) {
        *self
            .responses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(status)
            .or_insert(0) += 1;
        self.latency.observe(seconds);
    }

    pub fn served(&self, s: Served) {
        self.sentences
            .fetch_add(s.sentences as u64, Ordering::Relaxed);
        self.source_tokens
            .fetch_add(s.source_tokens as u64, Ordering::Relaxed);
        self.output_tokens
            .fetch_add(s.output_tokens as u64, Ordering::Relaxed);
        self.truncated
            .fetch_add(s.truncated as u64, Ordering::Relaxed);
    }

    /// A search batch of `sentences` sentences, from any number of requests.
    pub fn batch(&self, sentences: usize) {
        self.batch.observe(sentences as f64);
    }

    pub fn search_error(&self) {
        self.search_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests answered, sentences translated, batches searched and their mean size.
    pub fn summary(&self) -> String {
        let requests: u64 = self
            .responses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum();
        let (batched, batches) = self.batch.totals();
        format!(
            "{requests} requests, {} sentences, {batches} batches of {:.1} sentences on average",
            self.sentences.load(Ordering::Relaxed),
            if batches > 0 {
                batched / batches as f64
            } else {
                0.0
            }
        )
    }

    /// The Prometheus text exposition, with the queue's depth of the moment.
    pub fn render(&self, queue_sentences: usize, ready: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP gnmt_requests_total Translation requests answered, by HTTP status.\n# TYPE gnmt_requests_total counter"
        );
        for (code, n) in self
            .responses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(out, "gnmt_requests_total{{code=\"{code}\"}} {n}");
        }
        let counters = [
            (
                "gnmt_sentences_total",
                "Sentences translated.",
                &self.sentences,
            ),
            (
                "gnmt_source_tokens_total",
                "Source pieces translated.",
                &self.source_tokens,
            ),
            (
                "gnmt_output_tokens_total",
                "Output pieces of the best translations, end of sentence counted.",
                &self.output_tokens,
            ),
            (
                "gnmt_truncated_sentences_total",
                "Sentences cut to the model's length limit.",
                &self.truncated,
            ),
            (
                "gnmt_search_errors_total",
                "Search batches that failed.",
                &self.search_errors,
            ),
        ];
        for (name, help, value) in counters {
            let v = value.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP gnmt_queue_sentences Sentences waiting for a search worker.\n# TYPE gnmt_queue_sentences gauge\ngnmt_queue_sentences {queue_sentences}"
        );
        let _ = writeln!(
            out,
            "# HELP gnmt_ready Whether the model is loaded.\n# TYPE gnmt_ready gauge\ngnmt_ready {}",
            u8::from(ready)
        );
        self.batch.render(
            &mut out,
            "gnmt_batch_sentences",
            "Sentences in a search batch, each time requests start or join it.",
        );
        self.latency.render(
            &mut out,
            "gnmt_request_duration_seconds",
            "Time from a request's arrival to its answer.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_every_series() {
        let m = Metrics::default();
        m.response(200, 0.02);
        m.response(200, 0.2);
        m.response(503, 0.001);
        m.batch(3);
        m.served(Served {
            sentences: 3,
            source_tokens: 30,
            output_tokens: 33,
            truncated: 1,
        });
        let text = m.render(7, true);
        for line in [
            "gnmt_requests_total{code=\"200\"} 2",
            "gnmt_requests_total{code=\"503\"} 1",
            "gnmt_sentences_total 3",
            "gnmt_source_tokens_total 30",
            "gnmt_truncated_sentences_total 1",
            "gnmt_queue_sentences 7",
            "gnmt_ready 1",
            "gnmt_batch_sentences_bucket{le=\"4\"} 1",
            "gnmt_batch_sentences_bucket{le=\"2\"} 0",
            "gnmt_request_duration_seconds_bucket{le=\"0.025\"} 2",
            "gnmt_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "gnmt_request_duration_seconds_count 3",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
        assert!(m
            .summary()
            .starts_with("3 requests, 3 sentences, 1 batches"));
    }
}
