//! The search settings `gnmt tune` found best on validation data, kept beside the model
//! (`search.json`): `gnmt translate` and `gnmt serve` start from them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::precision::{read_record, CheckError};
use crate::SearchConfig;

/// The file beside a model that holds its tuned search settings.
pub const TUNED_FILE: &str = "search.json";

/// Beam, length normalization and coverage penalty chosen by BLEU on validation data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunedSearch {
    pub beam: usize,
    pub alpha: f64,
    pub beta: f64,
    /// Validation BLEU with these settings, and with the built-in defaults.
    pub bleu: f64,
    pub default_bleu: f64,
    /// The validation source tuned on, and how many of its lines.
    pub source: String,
    pub sentences: usize,
}

impl TunedSearch {
    /// The record in `model_dir`, if there is one.
    pub fn read(model_dir: &Path) -> Result<Option<Self>, CheckError> {
        let t: Option<TunedSearch> = read_record(model_dir, TUNED_FILE, "tune")?;
        match t {
            Some(t) if t.beam == 0 || !t.alpha.is_finite() || !t.beta.is_finite() => {
                Err(CheckError {
                    path: model_dir.join(TUNED_FILE).display().to_string(),
                    msg: format!(
                        "beam {}, alpha {}, beta {}: not search settings",
                        t.beam, t.alpha, t.beta
                    ),
                    command: "tune",
                })
            }
            t => Ok(t),
        }
    }

    /// `base` with these settings.
    pub fn apply(&self, base: SearchConfig) -> SearchConfig {
        SearchConfig {
            beam: self.beam,
            alpha: self.alpha,
            beta: self.beta,
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
            bleu: 35.1,
            default_bleu: 34.2,
            source: "valid.en".into(),
            sentences: 1014,
        };
        std::fs::write(
            dir.path().join(TUNED_FILE),
            serde_json::to_string(&t).unwrap(),
        )
        .unwrap();
        assert_eq!(TunedSearch::read(dir.path()).unwrap(), Some(t.clone()));
        let cfg = t.apply(SearchConfig::default());
        assert_eq!((cfg.beam, cfg.alpha, cfg.beta), (8, 1.0, 0.2));
        std::fs::write(dir.path().join(TUNED_FILE), r#"{"beam": 0}"#).unwrap();
        let e = TunedSearch::read(dir.path()).unwrap_err().to_string();
        assert!(e.contains("search.json") && e.contains("gnmt tune"), "{e}");
    }
}
