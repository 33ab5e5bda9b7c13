//! Properties over arbitrary text: no panic on any Unicode input, with any tokenizer or metric,
//! and the same scores (and resampling results) whatever the number of threads; scores from
//! per-segment statistics equal the corpus scores.

#![allow(clippy::unwrap_used)]

use gnmt_bleu::significance::{bootstrap_ci, segment_stats, Seed};
use gnmt_bleu::{Bleu, BleuConfig, Chrf, ChrfConfig, Metric, Segments, Ter, Tokenizer};
use proptest::prelude::*;

fn metrics() -> Vec<Metric> {
    let mut v = Vec::new();
    for tok in ["13a", "intl", "zh", "char", "none"] {
        v.push(Metric::Bleu(Bleu::new(BleuConfig {
            tokenizer: Tokenizer::from_name(tok).unwrap(),
            ..Default::default()
        })));
    }
    v.push(Metric::Chrf(Chrf::new(ChrfConfig {
        word_order: 2,
        ..Default::default()
    })));
    v.push(Metric::Ter(Ter::default()));
    v
}

fn scores(seg: &Segments, threads: usize) -> Vec<(f64, (f64, f64))> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        metrics()
            .iter()
            .map(|m| {
                let s = m.corpus_score(seg, false).unwrap();
                let st = segment_stats(m, seg);
                // -ci scores from the statistics it resamples: the same text as corpus_score.
                let again = m.score_from_segment_stats(&st, seg.refs.len(), false);
                assert_eq!(again.format_text(1, false), s.format_text(1, false));
                let seed = Seed::from_env_value(Some("5")).unwrap();
                (s.score, bootstrap_ci(m, &st, 50, &seed))
            })
            .collect()
    })
}

fn line() -> impl Strategy<Value = String> {
    // Any Unicode scalar values, with spaces and some punctuation weighted in.
    prop::collection::vec(
        prop_oneof![
            any::<char>(),
            Just(' '),
            Just('.'),
            Just(','),
            Just('\u{3000}'),
            Just('é')
        ],
        0..40,
    )
    .prop_map(|c| c.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    #[test]
    fn any_unicode_scores_without_panic_and_threads_do_not_matter(
        pairs in prop::collection::vec((line(), line()), 1..12)
    ) {
        let seg = Segments {
            hyps: pairs.iter().map(|p| p.0.clone()).collect(),
            refs: vec![pairs.iter().map(|p| p.1.clone()).collect()],
        };
        let one = scores(&seg, 1);
        let many = scores(&seg, 4);
        for ((a, ca), (b, cb)) in one.iter().zip(&many) {
            prop_assert!(a.is_finite() && *a >= 0.0, "score {}", a);
            prop_assert_eq!(a.to_bits(), b.to_bits());
            prop_assert_eq!(ca.0.to_bits(), cb.0.to_bits());
            prop_assert_eq!(ca.1.to_bits(), cb.1.to_bits());
        }
    }
}
