//! Subword regularization (Kudo, 2018): a training pair segmented anew each time it is seen,
//! drawn from the unigram model's distribution over segmentations sharpened by `alpha`,
//! `P(x)^alpha / Z`, instead of always the best one. The translation model sees many
//! segmentations of the same words and over-fits a small corpus less.
//!
//! Segmentations are drawn word by word (a word is a run of pieces starting at a `▁` piece)
//! from the best segmentation's ids, so the text is exactly what it was: the sampled pieces of
//! a word spell the same characters. Words holding byte-fallback pieces or `<unk>` keep their
//! segmentation. The random numbers come from the caller, so runs (and resumed runs) repeat.

use std::collections::HashMap;

use crate::{SubwordTokenizer, TokenizerError, FIRST_PIECE};

/// Draws segmentations of lines from a unigram vocabulary.
#[derive(Debug, Clone)]
pub struct SegmentationSampler {
    /// Learned pieces: text -> (id, log-probability).
    pieces: HashMap<String, (u32, f64)>,
    /// Text of each id (empty for the specials and byte pieces).
    text: Vec<String>,
    /// The longest piece, in characters.
    max_chars: usize,
    alpha: f64,
}

/// One piece that can end at a position of a word's lattice.
struct Arc {
    start: usize,
    id: u32,
    weight: f64,
}

impl SegmentationSampler {
    /// A sampler over `tok`'s unigram vocabulary; `alpha` > 0 sharpens the distribution (large
    /// values approach the best segmentation; SentencePiece's and Marian's usual 0.1-0.5).
    pub fn new(tok: &SubwordTokenizer, alpha: f64) -> Result<Self, TokenizerError> {
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(TokenizerError::Invalid(format!(
                "subword sampling alpha {alpha}: give a number above 0"
            )));
        }
        let tokenizers::ModelWrapper::Unigram(model) = tok.inner.get_model() else {
            return Err(TokenizerError::Invalid(
                "subword sampling needs a unigram vocabulary (`gnmt vocab --kind unigram`, the \
                 default); this one is BPE or WordPiece"
                    .into(),
            ));
        };
        let mut pieces = HashMap::new();
        let mut text = Vec::new();
        let mut max_chars = 1;
        for (id, (piece, score)) in model.iter().enumerate() {
            let learned = id as u32 >= FIRST_PIECE;
            text.push(if learned {
                piece.clone()
            } else {
                String::new()
            });
            if learned && score.is_finite() {
                max_chars = max_chars.max(piece.chars().count());
                pieces.insert(piece.clone(), (id as u32, *score));
            }
        }
        Ok(SegmentationSampler {
            pieces,
            text,
            max_chars,
            alpha,
        })
    }

    /// `ids` (a line's segmentation) with every word's segmentation drawn anew; `uniform`
    /// gives numbers in `[0, 1)`.
    pub fn resample(&self, ids: &[u32], uniform: &mut impl FnMut() -> f64) -> Vec<u32> {
        let mut out = Vec::with_capacity(ids.len() + ids.len() / 2);
        let mut word = 0;
        while word < ids.len() {
            let end = word
                + 1
                + ids[word + 1..]
                    .iter()
                    .take_while(|&&id| !self.starts_word(id))
                    .count();
            let pieces = &ids[word..end];
            match self
                .spelling(pieces)
                .and_then(|w| self.sample_word(&w, uniform))
            {
                Some(drawn) => out.extend(drawn),
                None => out.extend_from_slice(pieces),
            }
            word = end;
        }
        out
    }

    fn piece_text(&self, id: u32) -> &str {
        self.text.get(id as usize).map_or("", String::as_str)
    }

    fn starts_word(&self, id: u32) -> bool {
        self.piece_text(id).starts_with('▁')
    }

    /// The characters of a word's pieces, if all of them are learned pieces.
    fn spelling(&self, pieces: &[u32]) -> Option<String> {
        let mut w = String::new();
        for &id in pieces {
            let t = self.piece_text(id);
            if t.is_empty() {
                return None;
            }
            w.push_str(t);
        }
        Some(w)
    }

    /// Forward-filtering, backward-sampling over the lattice of `word`'s pieces: `forward[e]`
    /// is the log of the summed weights of all segmentations of the first `e` characters;
    /// the last piece is drawn in proportion to `forward[start] + weight`, then the rest of
    /// the word before it in the same way. None if no segmentation spells the word (not for a
    /// word the vocabulary segmented).
    fn sample_word(&self, word: &str, uniform: &mut impl FnMut() -> f64) -> Option<Vec<u32>> {
        let bounds: Vec<usize> = word
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(word.len()))
            .collect();
        let n = bounds.len() - 1;
        let mut arcs: Vec<Vec<Arc>> = (0..=n).map(|_| Vec::new()).collect();
        let mut forward = vec![f64::NEG_INFINITY; n + 1];
        forward[0] = 0.0;
        for e in 1..=n {
            for s in e.saturating_sub(self.max_chars)..e {
                if forward[s] == f64::NEG_INFINITY {
                    continue;
                }
                if let Some(&(id, score)) = self.pieces.get(&word[bounds[s]..bounds[e]]) {
                    let weight = self.alpha * score;
                    forward[e] = log_add(forward[e], forward[s] + weight);
                    arcs[e].push(Arc {
                        start: s,
                        id,
                        weight,
                    });
                }
            }
        }
        let mut drawn = Vec::new();
        let mut e = n;
        while e > 0 {
            let arc = pick(
                &arcs[e],
                |a| forward[a.start] + a.weight - forward[e],
                uniform,
            )?;
            drawn.push(arc.id);
            e = arc.start;
        }
        drawn.reverse();
        Some(drawn)
    }
}

/// An arc drawn with probability `exp(log_p(arc))`; the last when rounding leaves some over.
fn pick<'a>(
    arcs: &'a [Arc],
    log_p: impl Fn(&Arc) -> f64,
    uniform: &mut impl FnMut() -> f64,
) -> Option<&'a Arc> {
    let u = uniform();
    let mut acc = 0.0;
    let mut last = None;
    for a in arcs {
        let p = log_p(a).exp();
        if p > 0.0 {
            acc += p;
            last = Some(a);
            if u < acc {
                return last;
            }
        }
    }
    last
}

fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::corpus;
    use crate::VocabKind;

    fn counter(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    fn unigram() -> SubwordTokenizer {
        SubwordTokenizer::train(corpus().into_iter(), 400, VocabKind::Unigram).unwrap()
    }

    #[test]
    fn samples_spell_the_same_text_and_repeat_with_the_seed() {
        let tok = unigram();
        let s = SegmentationSampler::new(&tok, 0.2).unwrap();
        let line = "the children are riding bicycles in the snow ünïcode";
        let ids = tok.encode(line).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..30 {
            let a = s.resample(&ids, &mut counter(seed));
            assert_eq!(a, s.resample(&ids, &mut counter(seed)), "seed {seed}");
            assert_eq!(tok.decode(&a).unwrap(), tok.decode(&ids).unwrap());
            assert!(a.iter().all(|&id| id >= FIRST_PIECE || ids.contains(&id)));
            seen.insert(a);
        }
        // Low alpha: the segmentations vary.
        assert!(seen.len() > 5, "{} distinct segmentations", seen.len());
    }

    #[test]
    fn a_sharp_distribution_gives_the_best_segmentation() {
        let tok = unigram();
        let s = SegmentationSampler::new(&tok, 1000.0).unwrap();
        for line in corpus().iter().take(5) {
            let ids = tok.encode(line).unwrap();
            assert_eq!(s.resample(&ids, &mut counter(3)), ids, "{line}");
        }
    }

    #[test]
    fn bad_alpha_and_other_vocabularies_are_refused() {
        let tok = unigram();
        for a in [0.0, -1.0, f64::NAN] {
            let e = SegmentationSampler::new(&tok, a).unwrap_err().to_string();
            assert!(e.contains("alpha"), "{e}");
        }
        let bpe = SubwordTokenizer::train(corpus().into_iter(), 400, VocabKind::Bpe).unwrap();
        let e = SegmentationSampler::new(&bpe, 0.2).unwrap_err().to_string();
        assert!(e.contains("unigram"), "{e}");
    }
}
