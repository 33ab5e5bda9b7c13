//! TER (Snover et al. 2006) with tercom's shift heuristics, exactly as sacreBLEU 2.6.0 has them.

use rustc_hash::FxHashMap;

use crate::text::{py_rstrip, py_split};
use crate::tokenize::{tercom, TercomOptions};
use crate::Score;

const MAX_SHIFT_SIZE: usize = 10;
const MAX_SHIFT_DIST: usize = 50;
const BEAM_WIDTH: usize = 25;
const MAX_SHIFT_CANDIDATES: usize = 1000;
const INF: i64 = 10_000_000_000_000_000;

const OP_INS: u8 = b'i';
const OP_DEL: u8 = b'd';
const OP_NOP: u8 = b' ';
const OP_SUB: u8 = b's';
const OP_UNDEF: u8 = b'x';

/// TER options (all off by default: TER lowercases and does not normalize).
pub type TerConfig = TercomOptions;

/// Per-sentence statistics: `(edits, average reference length)`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TerStats {
    pub edits: u64,
    pub ref_len: f64,
}

type Cell = (i64, u8);

/// Edit distance with a diagonal beam. Rows of the last full computation are kept so that
/// the many shifted candidates, which share a prefix with it, only recompute their suffix.
struct BeamEditDistance<'a> {
    refw: &'a [u32],
    base: Vec<u32>,
    rows: Vec<Vec<Cell>>,
    scratch: Vec<Vec<Cell>>,
}

impl<'a> BeamEditDistance<'a> {
    fn new(refw: &'a [u32]) -> Self {
        let initial: Vec<Cell> = (0..=refw.len()).map(|i| (i as i64, OP_INS)).collect();
        BeamEditDistance {
            refw,
            base: Vec::new(),
            rows: vec![initial],
            scratch: Vec::new(),
        }
    }

    fn fill_row(&self, prev: &[Cell], cur: &mut Vec<Cell>, i: usize, n: usize, word: u32) {
        let m = self.refw.len();
        cur.clear();
        cur.resize(m + 1, (INF, OP_UNDEF));
        let ratio = if n > 0 { m as f64 / n as f64 } else { 1.0 };
        let beam = if (BEAM_WIDTH as f64) < ratio / 2.0 {
            (ratio / 2.0 + BEAM_WIDTH as f64).ceil() as i64
        } else {
            BEAM_WIDTH as i64
        };
        let diag = (i as f64 * ratio).floor() as i64;
        let min_j = (diag - beam).max(0) as usize;
        let mut max_j = ((m + 1) as i64).min(diag + beam).max(0) as usize;
        if i == n {
            max_j = m + 1;
        }
        for j in min_j..max_j {
            if j == 0 {
                cur[0] = (prev[0].0 + 1, OP_DEL);
                continue;
            }
            let (cs, os) = if word == self.refw[j - 1] {
                (0, OP_NOP)
            } else {
                (1, OP_SUB)
            };
            let ops = [
                (prev[j - 1].0 + cs, os),
                (prev[j].0 + 1, OP_DEL),
                (cur[j - 1].0 + 1, OP_INS),
            ];
            for (c, o) in ops {
                if cur[j].0 > c {
                    cur[j] = (c, o);
                }
            }
        }
    }

    /// Distance and trace of `words`, which becomes the new base.
    fn full(&mut self, words: &[u32]) -> (i64, Vec<u8>) {
        let n = words.len();
        let lcp = common_prefix(&self.base, words);
        self.rows.truncate(lcp + 1);
        for i in lcp + 1..=n {
            let mut row = Vec::new();
            self.fill_row(&self.rows[i - 1], &mut row, i, n, words[i - 1]);
            self.rows.push(row);
        }
        self.base = words.to_vec();
        let mut trace = Vec::new();
        let (mut i, mut j) = (n, self.refw.len());
        while i > 0 || j > 0 {
            let op = self.rows[i][j].1;
            trace.push(op);
            match op {
                OP_SUB | OP_NOP => {
                    i -= 1;
                    j -= 1;
                }
                OP_INS => j -= 1,
                _ => i -= 1,
            }
        }
        trace.reverse();
        (self.rows[n][self.refw.len()].0, trace)
    }

    /// Distance only, leaving the base as it is.
    fn distance(&mut self, words: &[u32]) -> i64 {
        let n = words.len();
        let lcp = common_prefix(&self.base, words).min(n);
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize_with(n + 1, Vec::new);
        for i in lcp + 1..=n {
            let (done, rest) = scratch.split_at_mut(i);
            let prev: &[Cell] = if i - 1 <= lcp {
                &self.rows[i - 1]
            } else {
                &done[i - 1]
            };
            self.fill_row(prev, &mut rest[0], i, n, words[i - 1]);
        }
        let d = if n <= lcp {
            self.rows[n][self.refw.len()].0
        } else {
            scratch[n][self.refw.len()].0
        };
        self.scratch = scratch;
        d
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn perform_shift(w: &[u32], start: usize, len: usize, target: usize) -> Vec<u32> {
    let sl = |a: usize, b: usize| &w[a.min(w.len())..b.min(w.len()).max(a.min(w.len()))];
    let mut out = Vec::with_capacity(w.len());
    if target < start {
        out.extend_from_slice(sl(0, target));
        out.extend_from_slice(sl(start, start + len));
        out.extend_from_slice(sl(target, start));
        out.extend_from_slice(sl(start + len, usize::MAX));
    } else if target > start + len {
        out.extend_from_slice(sl(0, start));
        out.extend_from_slice(sl(start + len, target));
        out.extend_from_slice(sl(start, start + len));
        out.extend_from_slice(sl(target, usize::MAX));
    } else {
        out.extend_from_slice(sl(0, start));
        out.extend_from_slice(sl(start + len, len + target));
        out.extend_from_slice(sl(start, start + len));
        out.extend_from_slice(sl(len + target, usize::MAX));
    }
    out
}

/// Ranking of a shift candidate: (gain, length, -start in hypothesis, -target index).
type ShiftKey = (i64, usize, i64, i64);

/// One round of tercom's greedy shift search: the best shift and its gain.
fn shift(
    words_h: &[u32],
    words_r: &[u32],
    ed: &mut BeamEditDistance,
    checked: &mut usize,
) -> (i64, Option<Vec<u32>>) {
    let (pre_score, inv_trace) = ed.full(words_h);
    // Flip insertions and deletions: the edit distance is computed from the reference's side.
    let mut align = vec![0i64; words_r.len()];
    let mut ref_err = Vec::new();
    let mut hyp_err = Vec::new();
    let (mut ph, mut pr) = (-1i64, -1i64);
    for op in inv_trace {
        match op {
            OP_NOP | OP_SUB => {
                ph += 1;
                pr += 1;
                align[pr as usize] = ph;
                let e = u8::from(op == OP_SUB);
                hyp_err.push(e);
                ref_err.push(e);
            }
            OP_DEL => {
                // flipped: an insertion
                ph += 1;
                hyp_err.push(1);
            }
            _ => {
                // OP_INS flipped: a deletion
                pr += 1;
                align[pr as usize] = ph;
                ref_err.push(1);
            }
        }
    }
    let any_err = |v: &[u8], a: usize, l: usize| {
        v[a.min(v.len())..(a + l).min(v.len())]
            .iter()
            .any(|&e| e != 0)
    };
    let (nh, nr) = (words_h.len(), words_r.len());
    let mut best: Option<(ShiftKey, Vec<u32>)> = None;
    'outer: for sh in 0..nh {
        for sr in 0..nr {
            if sr.abs_diff(sh) > MAX_SHIFT_DIST {
                continue;
            }
            let mut len = 0;
            while words_h[sh + len] == words_r[sr + len] && len < MAX_SHIFT_SIZE {
                len += 1;
                // candidate (sh, sr, len)
                let skip = !any_err(&hyp_err, sh, len)
                    || !any_err(&ref_err, sr, len)
                    || (sh as i64 <= align[sr] && align[sr] < (sh + len) as i64);
                if !skip {
                    let mut prev_idx = -1i64;
                    for off in -1..len as i64 {
                        let p = sr as i64 + off;
                        let idx = if p == -1 { 0 } else { align[p as usize] + 1 };
                        if idx == prev_idx {
                            continue;
                        }
                        prev_idx = idx;
                        let shifted = perform_shift(words_h, sh, len, idx as usize);
                        let gain = pre_score - ed.distance(&shifted);
                        let cand = (gain, len, -(sh as i64), -idx);
                        *checked += 1;
                        if best.as_ref().is_none_or(|(b, _)| cand > *b) {
                            best = Some((cand, shifted));
                        }
                    }
                    if *checked >= MAX_SHIFT_CANDIDATES {
                        break 'outer;
                    }
                }
                if nh == sh + len || nr == sr + len {
                    break;
                }
            }
        }
    }
    match best {
        None => (0, None),
        Some(((gain, ..), w)) => (gain, Some(w)),
    }
}

/// Number of edits (shifts + edit distance) turning `hyp` into `refw`, and the reference length.
pub fn translation_edit_rate(hyp: &[u32], refw: &[u32]) -> (u64, usize) {
    if refw.is_empty() {
        return (hyp.len() as u64, 0);
    }
    let mut ed = BeamEditDistance::new(refw);
    let mut shifts = 0u64;
    let mut input = hyp.to_vec();
    let mut checked = 0usize;
    loop {
        let (delta, new) = shift(&input, refw, &mut ed, &mut checked);
        if checked >= MAX_SHIFT_CANDIDATES || delta <= 0 {
            break;
        }
        shifts += 1;
        if let Some(n) = new {
            input = n;
        }
    }
    let (d, _) = ed.full(&input);
    (shifts + d as u64, refw.len())
}

/// Words as ids: the shift search compares words many times, ids make it cheap.
fn intern<'a>(vocab: &mut FxHashMap<&'a str, u32>, s: &'a str) -> Vec<u32> {
    py_split(s)
        .map(|w| {
            let n = vocab.len() as u32;
            *vocab.entry(w).or_insert(n)
        })
        .collect()
}

/// The TER metric with fixed options.
#[derive(Debug, Clone, Default)]
pub struct Ter {
    pub config: TerConfig,
}

impl Ter {
    pub fn new(config: TerConfig) -> Self {
        Ter { config }
    }

    pub fn sentence_stats(&self, hyp: &str, refs: &[&str]) -> TerStats {
        let h = tercom(py_rstrip(hyp), self.config);
        let rs: Vec<String> = refs
            .iter()
            .map(|r| tercom(py_rstrip(r), self.config))
            .collect();
        let mut vocab: FxHashMap<&str, u32> = FxHashMap::default();
        let hw = intern(&mut vocab, &h);
        let rws: Vec<Vec<u32>> = rs.iter().map(|r| intern(&mut vocab, r)).collect();
        let mut best = u64::MAX;
        let mut total_len = 0usize;
        for rw in &rws {
            let (e, l) = translation_edit_rate(&hw, rw);
            total_len += l;
            best = best.min(e);
        }
        if rws.is_empty() {
            return TerStats {
                edits: 0,
                ref_len: 0.0,
            };
        }
        TerStats {
            edits: best,
            ref_len: total_len as f64 / rws.len() as f64,
        }
    }

    pub fn compute(&self, edits: u64, ref_len: f64) -> f64 {
        let s = if ref_len > 0.0 {
            edits as f64 / ref_len
        } else if edits > 0 {
            1.0
        } else {
            0.0
        };
        100.0 * s
    }

    pub fn signature_pairs(&self) -> Vec<(&'static str, &'static str, String)> {
        let yn = |b: bool| if b { "yes" } else { "no" }.to_string();
        let c = &self.config;
        vec![
            (
                "case",
                "c",
                if c.case_sensitive { "mixed" } else { "lc" }.into(),
            ),
            ("tok", "t", "tercom".into()),
            ("norm", "nr", yn(c.normalized)),
            ("punct", "pn", yn(!c.no_punct)),
            ("asian", "as", yn(c.asian_support)),
        ]
    }

    pub fn to_score(&self, edits: u64, ref_len: f64, signature: String) -> Score {
        Score {
            name: "TER".into(),
            score: self.compute(edits, ref_len),
            verbose: None,
            signature,
            ci: None,
        }
    }
}
