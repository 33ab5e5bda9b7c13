//! BLEU (Papineni et al. 2002) exactly as sacreBLEU 2.6.0 computes it.

use rustc_hash::FxHashMap;

use crate::text::{fmt_fixed, py_rstrip, py_split};
use crate::tokenize::Tokenizer;
use crate::Score;

/// Smoothing of zero n-gram precisions (`-s`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Smooth {
    /// No smoothing.
    None,
    /// A zero count becomes `value` (default 0.1).
    Floor(f64),
    /// `k` added to counts and totals of orders above 1 (default 1).
    AddK(f64),
    /// The NIST "exp" smoothing (sacreBLEU's default).
    #[default]
    Exp,
}

impl Smooth {
    fn signature(self) -> String {
        match self {
            Smooth::None => "none".into(),
            Smooth::Exp => "exp".into(),
            Smooth::Floor(v) => format!("floor[{}]", fmt_fixed(v, 2)),
            Smooth::AddK(v) => format!("add-k[{}]", fmt_fixed(v, 2)),
        }
    }
}

/// BLEU options, with sacreBLEU's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct BleuConfig {
    pub lowercase: bool,
    pub tokenizer: Tokenizer,
    pub smooth: Smooth,
    pub max_ngram_order: usize,
    pub effective_order: bool,
}

impl Default for BleuConfig {
    fn default() -> Self {
        BleuConfig {
            lowercase: false,
            tokenizer: Tokenizer::T13a,
            smooth: Smooth::Exp,
            max_ngram_order: 4,
            effective_order: false,
        }
    }
}

/// Sufficient statistics of one sentence or a whole corpus: they add up, so validation BLEU can be
/// summed over batches. Counts are f64 only because add-k smoothing makes them fractional.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BleuStats {
    pub hyp_len: u64,
    pub ref_len: u64,
    pub correct: Vec<u64>,
    pub total: Vec<u64>,
}

impl BleuStats {
    pub fn zeros(order: usize) -> Self {
        BleuStats {
            hyp_len: 0,
            ref_len: 0,
            correct: vec![0; order],
            total: vec![0; order],
        }
    }

    pub fn add(&mut self, o: &BleuStats) {
        self.hyp_len += o.hyp_len;
        self.ref_len += o.ref_len;
        for (a, b) in self.correct.iter_mut().zip(&o.correct) {
            *a += b;
        }
        for (a, b) in self.total.iter_mut().zip(&o.total) {
            *a += b;
        }
    }
}

/// A BLEU score with the numbers sacreBLEU prints beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct BleuScore {
    pub score: f64,
    pub counts: Vec<f64>,
    pub totals: Vec<f64>,
    pub precisions: Vec<f64>,
    pub bp: f64,
    pub sys_len: u64,
    pub ref_len: u64,
}

impl BleuScore {
    pub fn ratio(&self) -> f64 {
        if self.ref_len > 0 {
            self.sys_len as f64 / self.ref_len as f64
        } else {
            0.0
        }
    }

    /// `70.6/42.9/36.4/37.5 (BP = 1.000 ratio = 1.000 hyp_len = 17 ref_len = 17)`.
    pub fn verbose(&self) -> String {
        let prec: Vec<String> = self.precisions.iter().map(|p| fmt_fixed(*p, 1)).collect();
        format!(
            "{} (BP = {} ratio = {} hyp_len = {} ref_len = {})",
            prec.join("/"),
            fmt_fixed(self.bp, 3),
            fmt_fixed(self.ratio(), 3),
            self.sys_len,
            self.ref_len
        )
    }

    pub fn to_score(&self, signature: String) -> Score {
        Score {
            name: "BLEU".into(),
            score: self.score,
            verbose: Some(self.verbose()),
            signature,
            ci: None,
        }
    }
}

fn my_log(x: f64) -> f64 {
    if x == 0.0 {
        -9999999999.0
    } else {
        x.ln()
    }
}

/// The BLEU metric with fixed options.
#[derive(Debug, Clone, Default)]
pub struct Bleu {
    pub config: BleuConfig,
}

impl Bleu {
    pub fn new(config: BleuConfig) -> Self {
        Bleu { config }
    }

    /// Lowercase (optional), right-strip and tokenize one segment.
    pub fn preprocess(&self, s: &str) -> String {
        if self.config.lowercase {
            self.config
                .tokenizer
                .tokenize(py_rstrip(&crate::text::py_lower(s)))
        } else {
            self.config.tokenizer.tokenize(py_rstrip(s))
        }
    }

    /// Statistics of one hypothesis against its references. Everything borrows from the
    /// tokenized strings of this one segment: no per-n-gram allocation.
    pub fn sentence_stats(&self, hyp: &str, refs: &[&str]) -> BleuStats {
        let n = self.config.max_ngram_order;
        let ref_toks: Vec<String> = refs.iter().map(|r| self.preprocess(r)).collect();
        let mut ref_counts: FxHashMap<&[&str], u32> = FxHashMap::default();
        let mut lens = Vec::with_capacity(refs.len());
        let ref_words: Vec<Vec<&str>> = ref_toks.iter().map(|r| py_split(r).collect()).collect();
        let mut this: FxHashMap<&[&str], u32> = FxHashMap::default();
        for (k, toks) in ref_words.iter().enumerate() {
            lens.push(toks.len() as u64);
            let target = if k == 0 { &mut ref_counts } else { &mut this };
            target.clear();
            for order in 1..=n {
                for w in toks.windows(order) {
                    *target.entry(w).or_default() += 1;
                }
            }
            if k > 0 {
                for (g, c) in this.drain() {
                    let e = ref_counts.entry(g).or_default();
                    *e = (*e).max(c);
                }
            }
        }
        let h = self.preprocess(hyp);
        let toks: Vec<&str> = py_split(&h).collect();
        let mut st = BleuStats::zeros(n);
        st.hyp_len = toks.len() as u64;
        st.ref_len = closest_ref_len(st.hyp_len, &lens);
        let mut counts: FxHashMap<&[&str], u32> = FxHashMap::default();
        for order in 1..=n {
            for w in toks.windows(order) {
                *counts.entry(w).or_default() += 1;
            }
        }
        for (g, c) in counts {
            let o = g.len() - 1;
            st.total[o] += c as u64;
            if let Some(&rc) = ref_counts.get(g) {
                st.correct[o] += c.min(rc) as u64;
            }
        }
        st
    }

    /// The score of (summed) statistics.
    pub fn compute(&self, st: &BleuStats) -> BleuScore {
        compute_bleu(
            &st.correct.iter().map(|&x| x as f64).collect::<Vec<_>>(),
            &st.total.iter().map(|&x| x as f64).collect::<Vec<_>>(),
            st.hyp_len,
            st.ref_len,
            self.config.smooth,
            self.config.effective_order,
            self.config.max_ngram_order,
        )
    }

    /// Signature pairs after `nrefs` (and before `version`).
    pub fn signature_pairs(&self) -> Vec<(&'static str, &'static str, String)> {
        vec![
            (
                "case",
                "c",
                if self.config.lowercase { "lc" } else { "mixed" }.into(),
            ),
            (
                "eff",
                "e",
                if self.config.effective_order {
                    "yes"
                } else {
                    "no"
                }
                .into(),
            ),
            ("tok", "tok", self.config.tokenizer.name().into()),
            ("smooth", "s", self.config.smooth.signature()),
        ]
    }
}

fn closest_ref_len(hyp_len: u64, lens: &[u64]) -> u64 {
    let mut best: Option<(u64, u64)> = None;
    for &r in lens {
        let d = hyp_len.abs_diff(r);
        match best {
            None => best = Some((d, r)),
            Some((bd, bl)) => {
                if d < bd || (d == bd && r < bl) {
                    best = Some((d, r));
                }
            }
        }
    }
    best.map(|b| b.1).unwrap_or(0)
}

/// sacreBLEU's `BLEU.compute_bleu`.
pub fn compute_bleu(
    correct: &[f64],
    total: &[f64],
    sys_len: u64,
    ref_len: u64,
    smooth: Smooth,
    effective_order: bool,
    max_order: usize,
) -> BleuScore {
    let mut correct = correct.to_vec();
    let mut total = total.to_vec();
    let mut bp = 1.0;
    if sys_len < ref_len {
        bp = if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        };
    }
    let mut precisions = vec![0.0; max_order];
    if correct.iter().all(|&c| c == 0.0) {
        return BleuScore {
            score: 0.0,
            counts: correct,
            totals: total,
            precisions,
            bp,
            sys_len,
            ref_len,
        };
    }
    let mut smooth_mteval = 1.0;
    let mut eff_order = max_order;
    for n in 1..=max_order {
        if let Smooth::AddK(k) = smooth {
            if n > 1 {
                correct[n - 1] += k;
                total[n - 1] += k;
            }
        }
        if total[n - 1] == 0.0 {
            break;
        }
        if effective_order {
            eff_order = n;
        }
        if correct[n - 1] == 0.0 {
            match smooth {
                Smooth::Exp => {
                    smooth_mteval *= 2.0;
                    precisions[n - 1] = 100.0 / (smooth_mteval * total[n - 1]);
                }
                Smooth::Floor(v) => precisions[n - 1] = 100.0 * v / total[n - 1],
                _ => {}
            }
        } else {
            precisions[n - 1] = 100.0 * correct[n - 1] / total[n - 1];
        }
    }
    // Python's sum() adds left to right; keep that order for identical rounding.
    let mut s = 0.0;
    for p in &precisions[..eff_order] {
        s += my_log(*p);
    }
    let score = bp * (s / eff_order as f64).exp();
    BleuScore {
        score,
        counts: correct,
        totals: total,
        precisions,
        bp,
        sys_len,
        ref_len,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_bleu_known_value() {
        // From sacreBLEU's own test suite.
        let s = compute_bleu(
            &[9.0, 7.0, 5.0, 3.0],
            &[10.0, 8.0, 6.0, 4.0],
            11,
            11,
            Smooth::None,
            false,
            4,
        );
        assert!((s.score - 83.75922397086269).abs() < 1e-12);
    }

    #[test]
    fn sentence_bleu_effective_order() {
        let b = Bleu::new(BleuConfig {
            effective_order: true,
            ..Default::default()
        });
        let st = b.sentence_stats("test", &["a test"]);
        assert!((b.compute(&st).score - 36.78794411714425).abs() < 1e-12);
    }

    #[test]
    fn closest_ref_prefers_shorter_on_ties() {
        assert_eq!(closest_ref_len(5, &[7, 3]), 3);
        assert_eq!(closest_ref_len(5, &[6, 9]), 6);
    }
}
