//! Corpus-level scoring: sentence statistics in parallel, summed in input order.

use rayon::prelude::*;

use crate::{Bleu, BleuStats, Chrf, Error, Score, Signature, Ter};

/// One metric with its options.
#[derive(Debug, Clone)]
pub enum Metric {
    Bleu(Bleu),
    Chrf(Chrf),
    Ter(Ter),
}

/// Hypotheses and their references (`refs[k][i]` is reference `k` of segment `i`).
#[derive(Debug, Clone, Default)]
pub struct Segments {
    pub hyps: Vec<String>,
    pub refs: Vec<Vec<String>>,
}

impl Segments {
    pub fn check(&self) -> Result<(), Error> {
        for (k, r) in self.refs.iter().enumerate() {
            if r.len() != self.hyps.len() {
                return Err(Error::LengthMismatch {
                    what: format!("reference stream {}", k + 1),
                    hyp_count: self.hyps.len(),
                    ref_count: r.len(),
                });
            }
        }
        Ok(())
    }

    fn refs_of(&self, i: usize) -> Vec<&str> {
        self.refs.iter().map(|r| r[i].as_str()).collect()
    }
}

impl Metric {
    /// sacreBLEU's sort key for the output order (BLEU, CHRF, TER).
    pub fn key(&self) -> &'static str {
        match self {
            Metric::Bleu(_) => "BLEU",
            Metric::Chrf(_) => "CHRF",
            Metric::Ter(_) => "TER",
        }
    }

    pub fn signature(&self, nrefs: usize) -> Signature {
        self.signature_resampled(nrefs, None)
    }

    /// The signature with the resampling test's `(kind, count, seed)` (`bs`/`ar`).
    pub fn signature_resampled(
        &self,
        nrefs: usize,
        resampling: Option<(&'static str, usize, String)>,
    ) -> Signature {
        let pairs = match self {
            Metric::Bleu(m) => m.signature_pairs(),
            Metric::Chrf(m) => m.signature_pairs(),
            Metric::Ter(m) => m.signature_pairs(),
        };
        Signature::new(Some(nrefs), resampling, pairs)
    }

    /// The score's display name: `BLEU`, `chrF2`, `chrF2++`, `TER`.
    pub fn name(&self) -> String {
        match self {
            Metric::Bleu(_) => "BLEU".into(),
            Metric::Chrf(m) => m.name(),
            Metric::Ter(_) => "TER".into(),
        }
    }

    /// The corpus score, computed in parallel over sentences.
    pub fn corpus_score(&self, seg: &Segments, short: bool) -> Result<Score, Error> {
        seg.check()?;
        let sig = self.signature(seg.refs.len()).format(short);
        let n = seg.hyps.len();
        Ok(match self {
            Metric::Bleu(m) => {
                let order = m.config.max_ngram_order;
                let st = (0..n)
                    .into_par_iter()
                    .map(|i| m.sentence_stats(&seg.hyps[i], &seg.refs_of(i)))
                    .fold(
                        || BleuStats::zeros(order),
                        |mut a, b| {
                            a.add(&b);
                            a
                        },
                    )
                    .reduce(
                        || BleuStats::zeros(order),
                        |mut a, b| {
                            a.add(&b);
                            a
                        },
                    );
                m.compute(&st).to_score(sig)
            }
            Metric::Chrf(m) => {
                let zero = m.zeros();
                let st = (0..n)
                    .into_par_iter()
                    .map(|i| m.sentence_stats(&seg.hyps[i], &seg.refs_of(i)))
                    .fold(|| zero.clone(), add_vec)
                    .reduce(|| zero.clone(), add_vec);
                m.to_score(&st, sig)
            }
            Metric::Ter(m) => {
                let per: Vec<_> = (0..n)
                    .into_par_iter()
                    .map(|i| m.sentence_stats(&seg.hyps[i], &seg.refs_of(i)))
                    .collect();
                // Float reference lengths are summed left to right, as Python does.
                let mut edits = 0u64;
                let mut len = 0.0f64;
                for s in &per {
                    edits += s.edits;
                    len += s.ref_len;
                }
                m.to_score(edits, len, sig)
            }
        })
    }

    /// The corpus score from per-segment statistics as [`crate::significance::segment_stats`]
    /// gives them: the same score as [`Metric::corpus_score`] on those segments, for callers that
    /// need the statistics anyway (`-ci`) and should not compute them twice.
    pub fn score_from_segment_stats(&self, stats: &[Vec<f64>], nrefs: usize, short: bool) -> Score {
        let sig = self.signature(nrefs).format(short);
        // Counts are integers below 2^53 in float64: summing them as u64 is exact.
        let column_sums = |width: usize| -> Vec<u64> {
            let mut sum = vec![0u64; width];
            for row in stats {
                for (s, &x) in sum.iter_mut().zip(row) {
                    *s += x as u64;
                }
            }
            sum
        };
        match self {
            Metric::Bleu(m) => {
                let o = m.config.max_ngram_order;
                let sum = column_sums(2 + 2 * o);
                let st = BleuStats {
                    hyp_len: sum[0],
                    ref_len: sum[1],
                    correct: sum[2..2 + o].to_vec(),
                    total: sum[2 + o..2 + 2 * o].to_vec(),
                };
                m.compute(&st).to_score(sig)
            }
            Metric::Chrf(m) => m.to_score(&column_sums(m.zeros().len()), sig),
            Metric::Ter(m) => {
                // Float reference lengths are summed left to right, as Python does.
                let (mut edits, mut len) = (0u64, 0.0f64);
                for row in stats {
                    edits += row[0] as u64;
                    len += row[1];
                }
                m.to_score(edits, len, sig)
            }
        }
    }

    /// The score of one segment (`-sl`); BLEU uses effective order as sacreBLEU forces it.
    pub fn sentence_score(&self, hyp: &str, refs: &[&str], short: bool) -> Score {
        let sig = self.signature(refs.len()).format(short);
        match self {
            Metric::Bleu(m) => m.compute(&m.sentence_stats(hyp, refs)).to_score(sig),
            Metric::Chrf(m) => m.to_score(&m.sentence_stats(hyp, refs), sig),
            Metric::Ter(m) => {
                let s = m.sentence_stats(hyp, refs);
                m.to_score(s.edits, s.ref_len, sig)
            }
        }
    }
}

fn add_vec(mut a: Vec<u64>, b: Vec<u64>) -> Vec<u64> {
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
    a
}
