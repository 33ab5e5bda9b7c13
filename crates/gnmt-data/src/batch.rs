//! Sentence pairs as ids, filtering with counted reasons, and deterministic length-bucketed batches.

use std::path::Path;

use gnmt_tokenizer::SubwordTokenizer;
use rayon::prelude::*;

use crate::text::Lines;
use crate::DataError;

/// Limits a pair must respect (keys `max_len`, `max_ratio`, `strict` of a training config).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct FilterConfig {
    /// Longest side, in pieces.
    pub max_len: usize,
    /// Largest `longer / shorter` length ratio.
    pub max_ratio: f64,
    /// Make a skipped pair an error instead.
    pub strict: bool,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            max_len: 80,
            max_ratio: 9.0,
            strict: false,
        }
    }
}

/// How many pairs were kept and why the others were skipped.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FilterReport {
    pub kept: usize,
    pub empty: usize,
    pub too_long: usize,
    pub bad_ratio: usize,
}

impl std::fmt::Display for FilterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "kept {} pairs; skipped {} with an empty side, {} longer than the maximum length, {} beyond the length-ratio bound",
            self.kept, self.empty, self.too_long, self.bad_ratio
        )
    }
}

/// One side of a corpus: all ids back to back, and where each sentence starts.
#[derive(Debug)]
pub(crate) enum Store {
    Owned { ids: Vec<u32>, offsets: Vec<u64> },
    Mapped { ids: Mapped, offsets: Mapped },
}

/// A memory-mapped little-endian array file (or an empty one, which cannot be mapped).
#[derive(Debug)]
pub(crate) struct Mapped(pub(crate) Option<memmap2::Mmap>);

impl Mapped {
    fn bytes(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl Store {
    fn new() -> Self {
        Store::Owned {
            ids: Vec::new(),
            offsets: vec![0],
        }
    }

    pub(crate) fn ids(&self) -> &[u32] {
        match self {
            Store::Owned { ids, .. } => ids,
            // A map is page-aligned; a length that is not a multiple of 4 gives an empty slice,
            // which `prepare::open` rejects as truncated.
            Store::Mapped { ids, .. } => bytemuck::try_cast_slice(ids.bytes()).unwrap_or(&[]),
        }
    }

    pub(crate) fn offsets(&self) -> &[u64] {
        match self {
            Store::Owned { offsets, .. } => offsets,
            Store::Mapped { offsets, .. } => {
                bytemuck::try_cast_slice(offsets.bytes()).unwrap_or(&[])
            }
        }
    }

    fn get(&self, i: usize) -> &[u32] {
        let o = self.offsets();
        &self.ids()[o[i] as usize..o[i + 1] as usize]
    }

    fn push(&mut self, s: &[u32]) {
        if let Store::Owned { ids, offsets } = self {
            ids.extend_from_slice(s);
            offsets.push(ids.len() as u64);
        }
    }
}

/// Aligned sentence pairs as ids (no BOS/EOS), held in memory or memory-mapped from a corpus
/// written by [`crate::prepare::prepare`].
#[derive(Debug)]
pub struct PairCorpus {
    pub(crate) src: Store,
    pub(crate) tgt: Store,
    /// 0-based line number (in both files) of each kept pair.
    pub(crate) lines: Vec<u64>,
}

impl Default for PairCorpus {
    fn default() -> Self {
        PairCorpus {
            src: Store::new(),
            tgt: Store::new(),
            lines: Vec::new(),
        }
    }
}

/// Why a pair is skipped, if it is.
pub(crate) fn check_pair(
    s: &[u32],
    t: &[u32],
    filter: &FilterConfig,
    report: &mut FilterReport,
) -> Option<&'static str> {
    if s.is_empty() || t.is_empty() {
        report.empty += 1;
        Some("one side is empty")
    } else if s.len() > filter.max_len || t.len() > filter.max_len {
        report.too_long += 1;
        Some("longer than the maximum length")
    } else if (s.len().max(t.len()) as f64) / (s.len().min(t.len()) as f64) > filter.max_ratio {
        report.bad_ratio += 1;
        Some("beyond the length-ratio bound")
    } else {
        None
    }
}

/// Reads two aligned files in lockstep, `chunk` pairs at a time, tokenizes each chunk in
/// parallel, filters, and hands every kept pair (0-based line, source ids, target ids) to `sink`.
/// Memory stays bounded by the chunk, whatever the size of the files.
pub(crate) fn tokenize_pairs(
    src_path: &Path,
    tgt_path: &Path,
    tok: &SubwordTokenizer,
    filter: &FilterConfig,
    limit: Option<usize>,
    chunk: usize,
    mut sink: impl FnMut(usize, &[u32], &[u32]) -> Result<(), DataError>,
) -> Result<FilterReport, DataError> {
    let take = limit.unwrap_or(usize::MAX);
    let mut src = Lines::open(src_path)?.take(take);
    let mut tgt = Lines::open(tgt_path)?.take(take);
    let mut report = FilterReport::default();
    let mut line = 0usize;
    let enc = |lines: &[String]| -> Result<Vec<Vec<u32>>, DataError> {
        lines
            .par_iter()
            .map(|l| tok.encode(l).map_err(|e| DataError::Other(e.to_string())))
            .collect()
    };
    loop {
        let s: Vec<String> = src.by_ref().take(chunk.max(1)).collect::<Result<_, _>>()?;
        let t: Vec<String> = tgt.by_ref().take(chunk.max(1)).collect::<Result<_, _>>()?;
        if s.len() != t.len() {
            // Count the whole files so the message gives the real line counts.
            let full = |p: &Path| Lines::open(p).map(|l| l.count());
            return Err(DataError::Misaligned {
                src: src_path.to_path_buf(),
                tgt: tgt_path.to_path_buf(),
                src_lines: full(src_path)?,
                tgt_lines: full(tgt_path)?,
            });
        }
        if s.is_empty() {
            break;
        }
        let (s_ids, t_ids) = rayon::join(|| enc(&s), || enc(&t));
        for (s, t) in s_ids?.iter().zip(&t_ids?) {
            match check_pair(s, t, filter, &mut report) {
                Some(reason) if filter.strict => {
                    return Err(DataError::BadPair {
                        path: src_path.to_path_buf(),
                        line: line + 1,
                        reason: reason.into(),
                    })
                }
                Some(_) => {}
                None => {
                    report.kept += 1;
                    sink(line, s, t)?;
                }
            }
            line += 1;
        }
    }
    Ok(report)
}

impl PairCorpus {
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Source ids of pair `i`.
    pub fn src(&self, i: usize) -> &[u32] {
        self.src.get(i)
    }

    /// Target ids of pair `i`.
    pub fn tgt(&self, i: usize) -> &[u32] {
        self.tgt.get(i)
    }

    /// 0-based line number (in both files) of pair `i`.
    pub fn line(&self, i: usize) -> usize {
        self.lines[i] as usize
    }

    /// Adds a pair (in-memory corpora only).
    pub fn push(&mut self, line: usize, src: &[u32], tgt: &[u32]) {
        self.src.push(src);
        self.tgt.push(tgt);
        self.lines.push(line as u64);
    }

    /// Reads, tokenizes (in parallel) and filters two aligned files into memory.
    pub fn load(
        src_path: &Path,
        tgt_path: &Path,
        tok: &SubwordTokenizer,
        filter: &FilterConfig,
        limit: Option<usize>,
    ) -> Result<(Self, FilterReport), DataError> {
        let mut out = PairCorpus::default();
        let report = tokenize_pairs(
            src_path,
            tgt_path,
            tok,
            filter,
            limit,
            100_000,
            |l, s, t| {
                out.push(l, s, t);
                Ok(())
            },
        )?;
        Ok((out, report))
    }
}

/// SplitMix64: a tiny, seedable, portable generator, so batches are identical everywhere.
#[derive(Debug, Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[0, 1)` (the top 53 bits).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
}

/// The batches of one epoch: indices shuffled from `(seed, epoch)`, sorted by length inside
/// windows of 50 batches (length buckets), cut into batches of `batch_size` sentences or
/// `max_tokens` tokens (padding counted), and the batches shuffled. Deterministic.
pub fn epoch_batches(
    lengths: &[usize],
    batch_size: usize,
    max_tokens: Option<usize>,
    seed: u64,
    epoch: u64,
) -> Vec<Vec<usize>> {
    let mut rng = SplitMix64(seed ^ epoch.wrapping_mul(0xA24B_AED4_963E_E407));
    let mut idx: Vec<usize> = (0..lengths.len()).collect();
    rng.shuffle(&mut idx);
    let window = batch_size.max(1) * 50;
    let mut batches = Vec::new();
    for w in idx.chunks_mut(window) {
        w.sort_by_key(|&i| lengths[i]);
        let mut cur: Vec<usize> = Vec::new();
        let mut longest = 0;
        for &i in w.iter() {
            let l = longest.max(lengths[i]);
            let over_tokens =
                max_tokens.is_some_and(|m| l * (cur.len() + 1) > m && !cur.is_empty());
            if cur.len() >= batch_size.max(1) || over_tokens {
                batches.push(std::mem::take(&mut cur));
                longest = 0;
            }
            longest = longest.max(lengths[i]);
            cur.push(i);
        }
        if !cur.is_empty() {
            batches.push(cur);
        }
    }
    rng.shuffle(&mut batches);
    batches
}

/// Fraction of a batch's `[B, maxlen]` tensor that is padding.
pub fn padding_waste(lengths: &[usize], batch: &[usize]) -> f64 {
    let max = batch.iter().map(|&i| lengths[i]).max().unwrap_or(0);
    let real: usize = batch.iter().map(|&i| lengths[i]).sum();
    if max == 0 {
        0.0
    } else {
        1.0 - real as f64 / (max * batch.len()) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_draws_lie_in_the_unit_interval_and_spread_over_it() {
        let mut r = SplitMix64(9);
        let v: Vec<f64> = (0..10_000).map(|_| r.next_f64()).collect();
        assert!(v.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        assert!(v.iter().any(|&x| x < 0.01) && v.iter().any(|&x| x > 0.99));
    }

    #[test]
    fn load_counts_skips_and_remembers_kept_lines() {
        let (_dir, tok, s, t) = crate::test_corpus::small_corpus();
        let f = FilterConfig {
            max_len: 40,
            max_ratio: f64::INFINITY,
            strict: false,
        };
        let (c, r) = PairCorpus::load(&s, &t, &tok, &f, None).unwrap();
        assert_eq!(
            (0..c.len()).map(|i| c.line(i)).collect::<Vec<_>>(),
            [0, 2, 4]
        );
        assert_eq!(c.src(1), tok.encode("the horse").unwrap().as_slice());
        assert_eq!((r.kept, r.empty, r.too_long), (3, 1, 1));
        let strict = FilterConfig { strict: true, ..f };
        let e = PairCorpus::load(&s, &t, &tok, &strict, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("empty"), "{e}");
    }

    #[test]
    fn batches_are_deterministic_complete_and_bucketed() {
        let lengths: Vec<usize> = (0..1000).map(|i| 1 + (i * 7919) % 50).collect();
        let a = epoch_batches(&lengths, 16, None, 42, 0);
        assert_eq!(a, epoch_batches(&lengths, 16, None, 42, 0));
        assert_ne!(a, epoch_batches(&lengths, 16, None, 42, 1));
        let mut all: Vec<usize> = a.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        let waste: f64 = a.iter().map(|b| padding_waste(&lengths, b)).sum::<f64>() / a.len() as f64;
        assert!(waste < 0.1, "{waste}");
        for b in epoch_batches(&lengths, 1000, Some(200), 1, 0) {
            let max = b.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(max * b.len() <= 200 || b.len() == 1);
        }
    }
}
