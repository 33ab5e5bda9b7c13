//! The search settings `gnmt tune` found best on validation data, kept beside the model
//! (`search.json`): `gnmt translate` and `gnmt serve` start from them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::precision::{read_record, CheckError};
use crate::SearchConfig;

/// The file beside a model that holds its tuned search settings.
pub const TUNED_FILE: &str = "search.json";

/// Beam, length normalization, coverage penalty and output length limit chosen by BLEU on
/// validation data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunedSearch {
    pub beam: usize,
    pub alpha: f64,
    pub beta: f64,
    /// The output length limit `max_len_a * source length + max_len_b` (records written before
    /// it was tuned hold the defaults).
    #[serde(default = "default_max_len_a")]
    pub max_len_a: f64,
    #[serde(default = "default_max_len_b")]
    pub max_len_b: usize,
    /// Validation BLEU with these settings, and with the built-in defaults.
    pub bleu: f64,
    pub default_bleu: f64,
    /// The paired bootstrap p-value of the grid's best point against the defaults (the
    /// defaults are kept when it is not small enough).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// The validation source tuned on, and how many of its lines.
    pub source: String,
    pub sentences: usize,
    /// The models after this one when an ensemble was tuned (as given to `gnmt tune`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ensemble: Vec<String>,
}

fn default_max_len_a() -> f64 {
    SearchConfig::default().max_len_a
}

fn default_max_len_b() -> usize {
    SearchConfig::default().max_len_b
}

impl TunedSearch {
    /// The record in `model_dir`, if there is one.
    pub fn read(model_dir: &Path) -> Result<Option<Self>, CheckError> {
        let t: Option<TunedSearch> = read_record(model_dir, TUNED_FILE, "tune")?;
        match t {
            Some(t) if !t.is_search() => Err(CheckError {
                path: model_dir.join(TUNED_FILE).display().to_string(),
                msg: format!(
                    "beam {}, alpha {}, beta {}, max_len_a {}: not search settings",
                    t.beam, t.alpha, t.beta, t.max_len_a
                ),
                command: "tune",
            }),
            t => Ok(t),
        }
    }

    /// Whether the record holds settings a search can run with.
    fn is_search(&self) -> bool {
        self.beam > 0
            && self.alpha.is_finite()
            && self.beta.is_finite()
            && self.max_len_a.is_finite()
            && self.max_len_a >= 0.0
    }

    /// The settings it holds.
    pub fn settings(&self) -> SearchSettings {
        SearchSettings {
            beam: self.beam,
            alpha: self.alpha,
            beta: self.beta,
            max_len_a: self.max_len_a,
            max_len_b: self.max_len_b,
        }
    }

    /// `base` with these settings.
    pub fn apply(&self, base: SearchConfig) -> SearchConfig {
        self.settings().apply(base)
    }
}

/// The part of a [`SearchConfig`] that `gnmt tune` chooses: beam, length normalization,
/// coverage penalty and output length limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchSettings {
    pub beam: usize,
    pub alpha: f64,
    pub beta: f64,
    pub max_len_a: f64,
    pub max_len_b: usize,
}

impl SearchSettings {
    /// Those of `cfg`.
    pub fn of(cfg: &SearchConfig) -> Self {
        SearchSettings {
            beam: cfg.beam,
            alpha: cfg.alpha,
            beta: cfg.beta,
            max_len_a: cfg.max_len_a,
            max_len_b: cfg.max_len_b,
        }
    }

    /// `base` with these settings.
    pub fn apply(self, base: SearchConfig) -> SearchConfig {
        SearchConfig {
            beam: self.beam,
            alpha: self.alpha,
            beta: self.beta,
            max_len_a: self.max_len_a,
            max_len_b: self.max_len_b,
            ..base
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(TunedSearch::read(dir.path()).unwrap(), None);
        let t = TunedSearch {
            beam: 8,
            alpha: 1.0,
            beta: 0.2,
            max_len_a: 1.2,
            max_len_b: 5,
            bleu: 35.1,
            default_bleu: 34.2,
            p_value: Some(0.01),
            source: "valid.en".into(),
            sentences: 1014,
            ensemble: vec!["run2/best".into()],
        };
        std::fs::write(
            dir.path().join(TUNED_FILE),
            serde_json::to_string(&t).unwrap(),
        )
        .unwrap();
        assert_eq!(TunedSearch::read(dir.path()).unwrap(), Some(t.clone()));
        let cfg = t.apply(SearchConfig::default());
        assert_eq!((cfg.beam, cfg.alpha, cfg.beta), (8, 1.0, 0.2));
        assert_eq!((cfg.max_len_a, cfg.max_len_b), (1.2, 5));
        assert_eq!(SearchSettings::of(&cfg), t.settings());
        // A record from before the length limit was tuned keeps the default limit.
        std::fs::write(
            dir.path().join(TUNED_FILE),
            r#"{"beam": 3, "alpha": 0.8, "beta": 0.0, "bleu": 30.0, "default_bleu": 29.0,
                "source": "valid.en", "sentences": 10}"#,
        )
        .unwrap();
        let old = TunedSearch::read(dir.path()).unwrap().unwrap();
        let d = SearchConfig::default();
        assert_eq!((old.max_len_a, old.max_len_b), (d.max_len_a, d.max_len_b));
        assert!(old.ensemble.is_empty());
        std::fs::write(dir.path().join(TUNED_FILE), r#"{"beam": 0}"#).unwrap();
        let e = TunedSearch::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("search.json") && e.contains("gnmt tune"), "{e}");
    }
}
