//! chrF and chrF++ (Popović 2015, 2017) exactly as sacreBLEU 2.6.0 computes them.

use rustc_hash::FxHashMap;

use crate::text::py_split;
use crate::tokenize::strip_all_ws;
use crate::Score;

/// chrF options, with sacreBLEU's defaults (`-cc 6 -cw 0 --chrf-beta 2`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChrfConfig {
    pub char_order: usize,
    pub word_order: usize,
    pub beta: u32,
    pub lowercase: bool,
    pub whitespace: bool,
    pub eps_smoothing: bool,
}

impl Default for ChrfConfig {
    fn default() -> Self {
        ChrfConfig {
            char_order: 6,
            word_order: 0,
            beta: 2,
            lowercase: false,
            whitespace: false,
            eps_smoothing: false,
        }
    }
}

/// Per-order `[hyp count, ref count, matches]`, flattened; they add up over a corpus.
pub type ChrfStats = Vec<u64>;

const PUNCTS: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// The chrF metric with fixed options.
#[derive(Debug, Clone, Default)]
pub struct Chrf {
    pub config: ChrfConfig,
}

fn char_ngrams<'a>(line: &'a str, bounds: &[usize], n: usize, out: &mut FxHashMap<&'a str, u32>) {
    out.clear();
    if bounds.len() > n {
        for i in 0..bounds.len() - n {
            *out.entry(&line[bounds[i]..bounds[i + n]]).or_default() += 1;
        }
    }
}

fn word_ngrams<'a>(words: &'a [&'a str], n: usize) -> FxHashMap<&'a [&'a str], u32> {
    let mut m = FxHashMap::default();
    for w in words.windows(n) {
        *m.entry(w).or_default() += 1;
    }
    m
}

/// Splits a word's leading or trailing ASCII punctuation off, as chrF++ does.
fn remove_punctuation(sent: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for w in py_split(sent) {
        let mut cs = w.chars();
        let first = cs.next();
        // `None` for a one-character word: it stays whole.
        let last = cs.next_back();
        if last.is_none() {
            out.push(w);
        } else if let Some(l) = last.filter(|c| PUNCTS.contains(*c)) {
            let cut = w.len() - l.len_utf8();
            out.push(&w[..cut]);
            out.push(&w[cut..]);
        } else if let Some(f) = first.filter(|c| PUNCTS.contains(*c)) {
            out.push(&w[..f.len_utf8()]);
            out.push(&w[f.len_utf8()..]);
        } else {
            out.push(w);
        }
    }
    out
}

fn match_stats<K: std::hash::Hash + Eq>(
    h: &FxHashMap<K, u32>,
    r: &FxHashMap<K, u32>,
    out: &mut Vec<u64>,
) {
    let mut m = 0u64;
    let mut hc = 0u64;
    for (g, c) in h {
        hc += *c as u64;
        if let Some(rc) = r.get(g) {
            m += (*c).min(*rc) as u64;
        }
    }
    let rc: u64 = r.values().map(|&v| v as u64).sum();
    out.extend([if r.is_empty() { 0 } else { hc }, rc, m]);
}

impl Chrf {
    pub fn new(config: ChrfConfig) -> Self {
        Chrf { config }
    }

    /// `chrF2`, `chrF2++`, ...
    pub fn name(&self) -> String {
        format!(
            "chrF{}{}",
            self.config.beta,
            "+".repeat(self.config.word_order)
        )
    }

    fn prep(&self, s: &str) -> String {
        if self.config.lowercase {
            crate::text::py_lower(s)
        } else {
            s.to_string()
        }
    }

    /// Statistics of the best-matching reference (highest sentence chrF, first on ties).
    pub fn sentence_stats(&self, hyp: &str, refs: &[&str]) -> ChrfStats {
        let c = &self.config;
        let hyp = self.prep(hyp);
        let hyp_chars = if c.whitespace {
            hyp.clone()
        } else {
            strip_all_ws(&hyp)
        };
        let hb: Vec<usize> = hyp_chars
            .char_indices()
            .map(|(i, _)| i)
            .chain([hyp_chars.len()])
            .collect();
        let hwords = remove_punctuation(&hyp);
        let hyp_word_ngrams: Vec<_> = (1..=c.word_order)
            .map(|n| word_ngrams(&hwords, n))
            .collect();
        let mut hyp_char_ngrams: Vec<FxHashMap<&str, u32>> = Vec::with_capacity(c.char_order);
        for n in 1..=c.char_order {
            let mut m = FxHashMap::default();
            char_ngrams(&hyp_chars, &hb, n, &mut m);
            hyp_char_ngrams.push(m);
        }
        let mut best: Option<(f64, ChrfStats)> = None;
        for r in refs {
            let mut rm: FxHashMap<&str, u32> = FxHashMap::default();
            let r = self.prep(r);
            let rchars = if c.whitespace {
                r.clone()
            } else {
                strip_all_ws(&r)
            };
            let rb: Vec<usize> = rchars
                .char_indices()
                .map(|(i, _)| i)
                .chain([rchars.len()])
                .collect();
            let mut stats = Vec::with_capacity(3 * (c.char_order + c.word_order));
            for (n, hm) in (1..=c.char_order).zip(&hyp_char_ngrams) {
                char_ngrams(&rchars, &rb, n, &mut rm);
                match_stats(hm, &rm, &mut stats);
            }
            if c.word_order > 0 {
                let rwords = remove_punctuation(&r);
                for (n, hm) in (1..=c.word_order).zip(&hyp_word_ngrams) {
                    match_stats(hm, &word_ngrams(&rwords, n), &mut stats);
                }
            }
            let f = self.f_score(&stats);
            if best.as_ref().is_none_or(|(bf, _)| f > *bf) {
                best = Some((f, stats));
            }
        }
        best.map(|b| b.1).unwrap_or_default()
    }

    /// The chrF score of (summed) statistics.
    pub fn f_score(&self, st: &[u64]) -> f64 {
        let eps = 1e-16;
        let factor = (self.config.beta as f64).powi(2);
        let order = self.config.char_order + self.config.word_order;
        let mut score = 0.0;
        let mut eff = 0usize;
        let (mut avg_p, mut avg_r) = (0.0, 0.0);
        for i in 0..order {
            let (nh, nr, nm) = (st[3 * i] as f64, st[3 * i + 1] as f64, st[3 * i + 2] as f64);
            let p = if nh > 0.0 { nm / nh } else { eps };
            let r = if nr > 0.0 { nm / nr } else { eps };
            let denom = factor * p + r;
            score += if denom > 0.0 {
                (1.0 + factor) * p * r / denom
            } else {
                eps
            };
            if nh > 0.0 && nr > 0.0 {
                avg_p += p;
                avg_r += r;
                eff += 1;
            }
        }
        if self.config.eps_smoothing {
            return 100.0 * score / order as f64;
        }
        if eff == 0 {
            avg_p = 0.0;
            avg_r = 0.0;
        } else {
            avg_p /= eff as f64;
            avg_r /= eff as f64;
        }
        if avg_p + avg_r != 0.0 {
            let mut s = (1.0 + factor) * avg_p * avg_r;
            s /= factor * avg_p + avg_r;
            100.0 * s
        } else {
            0.0
        }
    }

    pub fn zeros(&self) -> ChrfStats {
        vec![0; 3 * (self.config.char_order + self.config.word_order)]
    }

    pub fn signature_pairs(&self) -> Vec<(&'static str, &'static str, String)> {
        let c = &self.config;
        vec![
            ("case", "c", if c.lowercase { "lc" } else { "mixed" }.into()),
            (
                "eff",
                "e",
                if c.eps_smoothing { "no" } else { "yes" }.into(),
            ),
            ("nc", "nc", c.char_order.to_string()),
            ("nw", "nw", c.word_order.to_string()),
            ("space", "s", if c.whitespace { "yes" } else { "no" }.into()),
        ]
    }

    pub fn to_score(&self, stats: &[u64], signature: String) -> Score {
        Score {
            name: self.name(),
            score: self.f_score(stats),
            verbose: None,
            signature,
            ci: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_split() {
        assert_eq!(
            remove_punctuation("Hello, (world) a ."),
            ["Hello", ",", "(world", ")", "a", "."]
        );
    }

    #[test]
    fn identical_is_100() {
        let c = Chrf::default();
        let st = c.sentence_stats("the cat sat", &["the cat sat"]);
        assert!((c.f_score(&st) - 100.0).abs() < 1e-9);
    }
}
