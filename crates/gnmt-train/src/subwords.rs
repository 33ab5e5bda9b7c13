//! Subword regularization in training (`subword_alpha`): each step's pairs segmented anew
//! ([`gnmt_tokenizer::SegmentationSampler`]), from a generator seeded by the run's seed and the
//! step, so a resumed run draws what the uninterrupted one drew and every data-parallel rank
//! draws the same for the whole group (each then takes its share).

use gnmt_data::{PairCorpus, SplitMix64};
use gnmt_tokenizer::SegmentationSampler;

/// The pairs of `group` (batches of indices into `corpus`) drawn anew, as a corpus of their
/// own and the same batches indexed into it. A side drawn longer than `max_len` pieces (the
/// training filter's bound) keeps its segmentation.
pub(crate) fn resample_group(
    corpus: &PairCorpus,
    group: &[Vec<usize>],
    sampler: &SegmentationSampler,
    max_len: usize,
    seed: u64,
) -> (PairCorpus, Vec<Vec<usize>>) {
    let mut rng = SplitMix64(seed);
    let mut uniform = || rng.next_f64();
    let mut draw = |ids: &[u32]| {
        let d = sampler.resample(ids, &mut uniform);
        match d.len() <= max_len {
            true => d,
            false => ids.to_vec(),
        }
    };
    let mut out = PairCorpus::default();
    let mut batches = Vec::with_capacity(group.len());
    for batch in group {
        let mut b = Vec::with_capacity(batch.len());
        for &i in batch {
            let (s, t) = (draw(corpus.src(i)), draw(corpus.tgt(i)));
            b.push(out.len());
            out.push(corpus.line(i), &s, &t);
        }
        batches.push(b);
    }
    (out, batches)
}

/// The sampling seed of a step.
pub(crate) fn step_seed(run_seed: u64, step: i64) -> u64 {
    SplitMix64(run_seed ^ (step as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use gnmt_tokenizer::{SubwordTokenizer, VocabKind};

    #[test]
    fn a_group_is_drawn_anew_in_the_same_batches_and_repeats_with_its_seed() {
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/m30k/train.en");
        let text = std::fs::read_to_string(&data).unwrap();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let tok =
            SubwordTokenizer::train(lines.clone().into_iter(), 600, VocabKind::Unigram).unwrap();
        let mut corpus = PairCorpus::default();
        for (i, l) in lines.iter().enumerate().take(6) {
            let ids = tok.encode(l).unwrap();
            corpus.push(i, &ids, &ids);
        }
        let sampler = SegmentationSampler::new(&tok, 0.1).unwrap();
        let group = vec![vec![4, 1], vec![0, 5, 2]];
        let (c, g) = resample_group(&corpus, &group, &sampler, 1000, step_seed(1, 7));
        assert_eq!(g, vec![vec![0, 1], vec![2, 3, 4]]);
        let mut changed = 0;
        for (b, batch) in group.iter().zip(&g) {
            for (&i, &j) in b.iter().zip(batch) {
                assert_eq!(c.line(j), corpus.line(i));
                let text = |ids: &[u32]| tok.decode(ids).unwrap();
                assert_eq!(text(c.src(j)), text(corpus.src(i)));
                assert_eq!(text(c.tgt(j)), text(corpus.tgt(i)));
                changed += usize::from(c.src(j) != corpus.src(i));
            }
        }
        assert!(changed > 0, "alpha 0.1 left all five sources as they were");
        let (again, _) = resample_group(&corpus, &group, &sampler, 1000, step_seed(1, 7));
        let (other, _) = resample_group(&corpus, &group, &sampler, 1000, step_seed(1, 8));
        let all = |c: &PairCorpus| (0..c.len()).map(|i| c.src(i).to_vec()).collect::<Vec<_>>();
        assert_eq!(all(&again), all(&c));
        assert_ne!(all(&other), all(&c));
        // Drawn longer than the bound: the side keeps its segmentation.
        let short = corpus.src(0).len();
        let (kept, _) = resample_group(&corpus, &[vec![0]], &sampler, short, step_seed(1, 7));
        assert!(kept.src(0).len() <= short);
    }
}
