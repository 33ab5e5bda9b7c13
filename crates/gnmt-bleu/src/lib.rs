//! # gnmt-bleu
//!
//! BLEU, chrF/chrF++ and TER that give exactly the numbers, signatures and output of
//! sacreBLEU 2.6.0, in pure Rust and parallel over sentences. It is what `gnmt eval` runs and what
//! training uses for validation BLEU: sentence statistics ([`BleuStats`], [`ChrfStats`],
//! [`TerStats`]) add up, so a score can be accumulated batch by batch.
//!
//! ```
//! use gnmt_bleu::{Bleu, BleuConfig};
//! let bleu = Bleu::new(BleuConfig::default());
//! let mut stats = gnmt_bleu::BleuStats::zeros(4);
//! for (h, r) in [("the cat sat on the mat", "the cat sat on the mat")] {
//!     stats.add(&bleu.sentence_stats(h, &[r]));
//! }
//! assert!((bleu.compute(&stats).score - 100.0).abs() < 1e-9);
//! ```

pub mod bleu;
pub mod chrf;
pub mod corpus;
pub mod rng;
pub mod significance;
pub mod ter;
pub mod text;
pub mod tokenize;
mod unicode_classes;

pub use bleu::{compute_bleu, Bleu, BleuConfig, BleuScore, BleuStats, Smooth};
pub use chrf::{Chrf, ChrfConfig, ChrfStats};
pub use corpus::{Metric, Segments};
pub use ter::{Ter, TerConfig, TerStats};
pub use tokenize::{ExternalTokenizer, Tokenizer as BleuTokenizer};
pub use tokenize::{TercomOptions, Tokenizer};

use text::{fmt_fixed, py_float_repr, py_json_str};

/// The version field of every signature: which implementation computed the score.
pub const VERSION: &str = concat!("gnmt-bleu-", env!("CARGO_PKG_VERSION"));

/// What can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Unsupported(String),
    #[error("{what}: {hyp_count} hypotheses but {ref_count} references")]
    LengthMismatch {
        what: String,
        hyp_count: usize,
        ref_count: usize,
    },
}

/// A signature: `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:...`.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    /// `(long name, short name, value)`, in print order.
    pub pairs: Vec<(&'static str, &'static str, String)>,
}

impl Signature {
    /// A signature from the number of references (`None`: varies per segment), the optional
    /// resampling info (`bs`/`ar` count, seed) and the metric's own pairs.
    pub fn new(
        nrefs: Option<usize>,
        resampling: Option<(&'static str, usize, String)>,
        metric_pairs: Vec<(&'static str, &'static str, String)>,
    ) -> Self {
        let mut pairs = vec![(
            "nrefs",
            "#",
            nrefs.map_or("var".to_string(), |n| n.to_string()),
        )];
        if let Some((kind, n, seed)) = resampling {
            pairs.push((kind, kind, n.to_string()));
            pairs.push(("seed", "rs", seed));
        }
        pairs.extend(metric_pairs);
        pairs.push(("version", "v", VERSION.to_string()));
        Signature { pairs }
    }

    pub fn format(&self, short: bool) -> String {
        self.pairs
            .iter()
            .map(|(l, s, v)| format!("{}:{v}", if short { s } else { l }))
            .collect::<Vec<_>>()
            .join("|")
    }
}

/// A final score as sacreBLEU reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub name: String,
    pub score: f64,
    /// BLEU's precisions and brevity penalty.
    pub verbose: Option<String>,
    /// The formatted signature (long or short).
    pub signature: String,
    /// Bootstrap `(mean, half-width of the 95% interval)`.
    pub ci: Option<(f64, f64)>,
}

impl Score {
    fn score_str(&self, width: usize) -> String {
        let mut sc = fmt_fixed(self.score, width);
        if let Some((mean, ci)) = self.ci.filter(|(m, _)| *m > 0.0) {
            sc.push_str(&format!(
                " (μ = {} ± {})",
                fmt_fixed(mean, width),
                fmt_fixed(ci, width)
            ));
        }
        sc
    }

    /// The text line (`BLEU|sig = 45.1 ...`) or, with `score_only`, the number alone.
    pub fn format_text(&self, width: usize, score_only: bool) -> String {
        let sc = self.score_str(width);
        if score_only {
            return sc;
        }
        let mut s = if self.signature.is_empty() {
            self.name.clone()
        } else {
            format!("{}|{}", self.name, self.signature)
        };
        s.push_str(" = ");
        s.push_str(&sc);
        if let Some(v) = &self.verbose {
            s.push(' ');
            s.push_str(v);
        }
        s
    }

    /// sacreBLEU's JSON object (`json.dumps(indent=1, ensure_ascii=False)`).
    pub fn format_json(&self, width: usize) -> String {
        let round =
            |x: f64| -> String { py_float_repr(fmt_fixed(x, width).parse::<f64>().unwrap_or(x)) };
        let mut kv: Vec<(String, String)> = vec![
            ("name".into(), py_json_str(&self.name)),
            ("score".into(), round(self.score)),
            ("signature".into(), py_json_str(&self.signature)),
        ];
        if let Some((mean, ci)) = self.ci.filter(|(m, _)| *m > 0.0) {
            kv.push(("confidence_mean".into(), round(mean)));
            kv.push(("confidence_var".into(), round(ci)));
            let c = format!("μ = {} ± {}", fmt_fixed(mean, width), fmt_fixed(ci, width));
            kv.push(("confidence".into(), py_json_str(&c)));
        }
        if let Some(v) = &self.verbose {
            kv.push(("verbose_score".into(), py_json_str(v)));
        }
        for pair in self.signature.split('|') {
            if let Some((k, v)) = pair.split_once(':') {
                let val = py_json_str(v);
                if let Some(e) = kv.iter_mut().find(|(key, _)| key == k) {
                    e.1 = val;
                } else {
                    kv.push((k.to_string(), val));
                }
            }
        }
        let body: Vec<String> = kv
            .iter()
            .map(|(k, v)| format!(" {}: {}", py_json_str(k), v))
            .collect();
        format!("{{\n{}\n}}", body.join(",\n"))
    }
}
