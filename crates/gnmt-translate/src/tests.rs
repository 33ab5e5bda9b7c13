use super::*;
use gnmt_model::ModelConfig;
use gnmt_tokenizer::{BOS, EOS};
use tch::{nn, Kind, Tensor};

fn model(vocab: i64) -> (nn::VarStore, Seq2Seq) {
    seeded_model(vocab, 3)
}

/// Scores every output sequence of up to `l` tokens exactly as the beam search does, coverage
/// penalty included: `beta * sum_j log(min(sum_i a_ij, 1))` over the attention of every step
/// (the step that emits EOS too).
fn exhaustive(m: &Seq2Seq, src: &[u32], l: usize, alpha: f64, beta: f64) -> (Vec<u32>, f64) {
    exhaustive_ensemble(&[(m, 1.0)], src, l, alpha, beta)
}

/// [`exhaustive`] over an ensemble: each step's log-probabilities are the log-softmax of the
/// models' weighted mean log-probabilities, the attention their weighted mean (weights summing
/// to 1).
fn exhaustive_ensemble(
    models: &[(&Seq2Seq, f64)],
    src: &[u32],
    l: usize,
    alpha: f64,
    beta: f64,
) -> (Vec<u32>, f64) {
    let v = models[0].0.config.vocab_size as u32;
    let mut best = (Vec::new(), f64::NEG_INFINITY);
    let mut stack: Vec<Vec<u32>> = vec![vec![]];
    let s = Tensor::from_slice(&src.iter().map(|&x| x as i64).collect::<Vec<_>>()).view([1, -1]);
    let lens = Tensor::from_slice(&[src.len() as i64]);
    let encs: Vec<_> = models
        .iter()
        .map(|(m, _)| m.encode(&s, &lens, false))
        .collect();
    while let Some(prefix) = stack.pop() {
        let mut inp = vec![BOS as i64];
        inp.extend(prefix.iter().map(|&x| x as i64));
        let inp = Tensor::from_slice(&inp).view([1, -1]);
        let mut mean_lp: Option<Tensor> = None;
        let mut mean_attn: Option<Tensor> = None;
        for ((m, w), enc) in models.iter().zip(&encs) {
            let (logits, attn, _) = m.decode(enc, &inp, None, false);
            let lp = logits.log_softmax(-1, Kind::Float) * *w;
            let attn = attn * *w;
            mean_lp = Some(mean_lp.map_or(lp.shallow_clone(), |x| x + &lp));
            mean_attn = Some(mean_attn.map_or(attn.shallow_clone(), |x| x + &attn));
        }
        let (Some(mean_lp), Some(attn)) = (mean_lp, mean_attn) else {
            return best;
        };
        let lp = if models.len() > 1 {
            mean_lp.log_softmax(-1, Kind::Float)
        } else {
            mean_lp
        };
        let logp: f64 = prefix
            .iter()
            .enumerate()
            .map(|(t, &x)| lp.double_value(&[0, t as i64, x as i64]))
            .sum();
        // Coverage of every source position over the steps so far (this one included).
        let cov = attn.sum_dim_intlist(1, false, Kind::Double);
        let cp: f64 = (0..src.len() as i64)
            .map(|j| cov.double_value(&[0, j]).clamp(1e-10, 1.0).ln())
            .sum::<f64>()
            * beta;
        let last = prefix.len() as i64;
        for tok in 0..v {
            let total = logp + lp.double_value(&[0, last, tok as i64]);
            let forced = prefix.len() + 1 >= l;
            if tok == EOS || forced {
                let mut toks = prefix.clone();
                if tok != EOS {
                    toks.push(tok);
                }
                let score = total / length_penalty(toks.len() + 1, alpha) + cp;
                if score > best.1 {
                    best = (toks, score);
                }
            } else {
                let mut p = prefix.clone();
                p.push(tok);
                stack.push(p);
            }
        }
    }
    best
}

/// Translates with an ensemble of `models` (weights as given), on the CPU.
fn ensemble_translate(
    models: &[(&Seq2Seq, f64)],
    srcs: &[Vec<u32>],
    cfg: &SearchConfig,
) -> Vec<Vec<Hypothesis>> {
    let cpus: Vec<_> = models
        .iter()
        .map(|(m, _)| cpu_decoder(m, Device::Cpu, cfg.kernels))
        .collect();
    let members: Vec<Member> = models
        .iter()
        .zip(&cpus)
        .map(|((m, w), c)| Member {
            model: m,
            cpu: c.as_ref(),
            weight: *w,
        })
        .collect();
    translate_members(&members, srcs, cfg, Device::Cpu).unwrap()
}

#[test]
fn an_ensemble_of_one_model_twice_is_that_model() {
    let (_vs, m) = seeded_model(40, 11);
    let srcs: Vec<Vec<u32>> = (0..12u32)
        .map(|i| (0..(i % 6 + 1)).map(|j| 4 + (i * 5 + j * 7) % 30).collect())
        .collect();
    for kernels in [Kernels::Fused, Kernels::Libtorch] {
        let cfg = SearchConfig {
            beam: 4,
            nbest: 2,
            kernels,
            ..SearchConfig::default()
        };
        let alone = translate_batch(&m, &srcs, &cfg, Device::Cpu).unwrap();
        let twice = ensemble_translate(&[(&m, 0.3), (&m, 0.7)], &srcs, &cfg);
        for (a, b) in alone.iter().zip(&twice) {
            assert_eq!(a.len(), b.len(), "{kernels:?}");
            for (x, y) in a.iter().zip(b) {
                assert_eq!(x.tokens, y.tokens, "{kernels:?}");
                assert_eq!(x.alignment, y.alignment, "{kernels:?}");
                assert!(
                    (x.score - y.score).abs() < 1e-5,
                    "{kernels:?}: {x:?} vs {y:?}"
                );
            }
        }
    }
}

#[test]
fn a_wide_beam_over_an_ensemble_equals_exhaustive_search_of_its_mean() {
    let (_va, a) = seeded_model(8, 21);
    let (_vb, b) = seeded_model(8, 22);
    let cfg = SearchConfig {
        beam: 64,
        alpha: 0.6,
        beta: 0.2,
        max_len_a: 0.0,
        max_len_b: 3,
        nbest: 1,
        kernels: Kernels::Fused,
    };
    let models = [(&a, 0.25), (&b, 0.75)];
    let mut differs = 0;
    for src in [vec![4u32, 5, 6], vec![7, 3], vec![5], vec![6, 6, 4, 7]] {
        let (toks, score) = exhaustive_ensemble(&models, &src, 3, 0.6, 0.2);
        let got = &ensemble_translate(&models, std::slice::from_ref(&src), &cfg)[0][0];
        assert_eq!(got.tokens, toks, "src {src:?}");
        assert!((got.score - score).abs() < 1e-4, "{} vs {score}", got.score);
        // The ensemble is not one of its models: somewhere, a member alone picks otherwise.
        let alone = exhaustive(&a, &src, 3, 0.6, 0.2);
        differs += usize::from(alone.0 != toks || (alone.1 - score).abs() > 1e-3);
    }
    assert!(
        differs > 0,
        "the ensemble scored as its first model everywhere"
    );
}

#[test]
fn wide_beam_equals_exhaustive_search() {
    let (_vs, m) = model(8);
    let cfg = SearchConfig {
        beam: 64,
        alpha: 0.6,
        beta: 0.0,
        max_len_a: 0.0,
        max_len_b: 3,
        nbest: 1,
        kernels: Kernels::Fused,
    };
    for src in [vec![4u32, 5, 6], vec![7, 3]] {
        let (toks, score) = exhaustive(&m, &src, 3, 0.6, 0.0);
        let got =
            &translate_batch(&m, std::slice::from_ref(&src), &cfg, Device::Cpu).unwrap()[0][0];
        assert_eq!(got.tokens, toks, "src {src:?}");
        assert!((got.score - score).abs() < 1e-4, "{} vs {score}", got.score);
    }
}

#[test]
fn wide_beam_with_coverage_penalty_equals_exhaustive_search() {
    let (_vs, m) = model(8);
    let cfg = SearchConfig {
        beam: 64,
        alpha: 0.6,
        beta: 0.4,
        max_len_a: 0.0,
        max_len_b: 3,
        nbest: 1,
        kernels: Kernels::Fused,
    };
    for src in [vec![4u32, 5, 6, 7, 3], vec![7, 3], vec![6]] {
        let (toks, score) = exhaustive(&m, &src, 3, 0.6, 0.4);
        let got =
            &translate_batch(&m, std::slice::from_ref(&src), &cfg, Device::Cpu).unwrap()[0][0];
        assert_eq!(got.tokens, toks, "src {src:?}");
        assert!((got.score - score).abs() < 1e-4, "{} vs {score}", got.score);
        if src.len() == 1 {
            continue; // one source word always gets all the attention: no penalty
        }
        // The penalty is really in the score: without it the same output scores higher.
        let plain = exhaustive(&m, &src, 3, 0.6, 0.0);
        assert!(plain.1 > score, "coverage penalty had no effect on {src:?}");
        let lp = got.log_prob / length_penalty(got.tokens.len() + 1, 0.6);
        assert!(
            got.score < lp - 1e-6,
            "score {} has no penalty ({lp})",
            got.score
        );
    }
}

/// A model of `vocab` tokens initialised from `seed`; peaky distributions (a wide init range)
/// make the search non-trivial.
fn seeded_model(vocab: i64, seed: i64) -> (nn::VarStore, Seq2Seq) {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut cfg = ModelConfig::preset("tiny", vocab).unwrap();
    cfg.init_range = 1.0;
    let m = Seq2Seq::new(&vs.root(), &cfg).unwrap();
    (vs, m)
}

#[test]
fn nbest_lists_are_full_and_keep_the_best() {
    let srcs: Vec<Vec<u32>> = (0..24u32)
        .map(|i| (0..(i % 5 + 1)).map(|j| 4 + (i * 7 + j * 3) % 12).collect())
        .collect();
    let cfg = |nbest| SearchConfig {
        beam: 5,
        nbest,
        ..Default::default()
    };
    // Several models, so that the precondition below does not hang on one CPU's rounding.
    let mut short_lists = 0;
    for seed in 3..7 {
        let (_vs, m) = seeded_model(16, seed);
        let one = translate_batch(&m, &srcs, &cfg(1), Device::Cpu).unwrap();
        let five = translate_batch(&m, &srcs, &cfg(5), Device::Cpu).unwrap();
        short_lists += one.iter().filter(|h| h.len() < 5).count();
        for (i, (a, b)) in one.iter().zip(&five).enumerate() {
            assert_eq!(
                b.len(),
                5,
                "seed {seed}, sentence {i}: {} hypotheses",
                b.len()
            );
            assert!(
                b.windows(2).all(|w| w[0].score >= w[1].score),
                "seed {seed}, sentence {i}: not sorted"
            );
            assert_eq!(
                a[0].tokens, b[0].tokens,
                "seed {seed}, sentence {i}: the best changed"
            );
            assert!((a[0].score - b[0].score).abs() < 1e-9);
            let distinct: std::collections::HashSet<&Vec<u32>> =
                b.iter().map(|h| &h.tokens).collect();
            assert_eq!(
                distinct.len(),
                5,
                "seed {seed}, sentence {i}: repeated hypotheses"
            );
        }
    }
    // Stopping once the best is safe leaves short lists: the case the option exists for.
    assert!(short_lists > 0, "every list was full anyway");
}

#[test]
fn empty_sources_give_empty_hypotheses_in_a_batch() {
    let (_vs, m) = model(16);
    let srcs = vec![vec![4u32, 5, 6], vec![], vec![9u32, 10]];
    let cfg = SearchConfig::default();
    let got = translate_batch(&m, &srcs, &cfg, Device::Cpu).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[1], vec![Hypothesis::empty()]);
    for i in [0, 2] {
        let alone = translate_batch(&m, std::slice::from_ref(&srcs[i]), &cfg, Device::Cpu).unwrap();
        assert_eq!(alone[0][0].tokens, got[i][0].tokens, "sentence {i}");
    }
}

#[test]
fn beam_one_is_greedy() {
    let (_vs, m) = model(16);
    let src = vec![4u32, 9, 11, 5];
    let cfg = SearchConfig {
        beam: 1,
        beta: 0.0,
        ..Default::default()
    };
    let got = translate_batch(&m, std::slice::from_ref(&src), &cfg, Device::Cpu).unwrap()[0][0]
        .tokens
        .clone();
    // Greedy by hand: argmax at every step until EOS or the length limit.
    let s = Tensor::from_slice(&src.iter().map(|&x| x as i64).collect::<Vec<_>>()).view([1, -1]);
    let enc = m.encode(&s, &Tensor::from_slice(&[4i64]), false);
    let mut state = None;
    let mut tok = Tensor::from_slice(&[BOS as i64]);
    let mut out = Vec::new();
    for _ in 0..cfg.max_len_b + 6 {
        let (lp, _, st) = m.step(&enc, state.as_ref(), &tok);
        let a = lp.argmax(-1, false).int64_value(&[0]);
        state = Some(st);
        if a == EOS as i64 {
            break;
        }
        out.push(a as u32);
        tok = Tensor::from_slice(&[a]);
    }
    assert_eq!(got, out);
}

#[test]
fn batch_composition_does_not_change_translations() {
    let (_vs, m) = model(16);
    let srcs = vec![vec![4u32, 5, 6, 7, 8], vec![9u32], vec![10u32, 11, 12]];
    let cfg = SearchConfig::default();
    let together = translate_batch(&m, &srcs, &cfg, Device::Cpu).unwrap();
    for (i, s) in srcs.iter().enumerate() {
        let alone = translate_batch(&m, std::slice::from_ref(s), &cfg, Device::Cpu).unwrap();
        assert_eq!(alone[0][0].tokens, together[i][0].tokens, "sentence {i}");
    }
}

#[test]
fn token_budget_batches_and_keeps_results() {
    let (_vs, m) = model(300);
    let lines = ["a b c d e f g h", "a", "a b c", "", "a b c d"];
    let tok = gnmt_tokenizer::SubwordTokenizer::train(
        lines.iter().map(|s| s.to_string()).cycle().take(50),
        300,
        gnmt_tokenizer::VocabKind::Unigram,
    )
    .unwrap();
    let tr = |batch_size, max_tokens| stream::Engine {
        model: &m,
        ensemble: Default::default(),
        device: Device::Cpu,
        search: SearchConfig::default(),
        batch_size,
        max_tokens,
        workers: 1,
        threads_per_worker: 1,
    };
    // Lengths 8, 4, 3, 1 (longest first): a budget of 9 padded tokens gives [8], [4 3], [1].
    let srcs: Vec<Vec<u32>> = [8usize, 1, 3, 4].iter().map(|&n| vec![FIRST; n]).collect();
    let order = [0usize, 3, 2, 1];
    let b = tr(64, Some(9));
    let sizes: Vec<usize> = b.batches(&order, &srcs).iter().map(|x| x.len()).collect();
    assert_eq!(sizes, vec![1, 2, 1]);
    // A budget below the longest sentence still makes progress; batch_size still caps.
    let sizes: Vec<usize> = tr(2, Some(1))
        .batches(&order, &srcs)
        .iter()
        .map(|x| x.len())
        .collect();
    assert_eq!(sizes, vec![1, 1, 1, 1]);
    let sizes: Vec<usize> = tr(2, Some(1000))
        .batches(&order, &srcs)
        .iter()
        .map(|x| x.len())
        .collect();
    assert_eq!(sizes, vec![2, 2]);
    // Same translations, in input order, whatever the batching.
    let ids: Vec<Vec<u32>> = lines.iter().map(|l| tok.encode(l).unwrap()).collect();
    let by_budget = tr(64, Some(5)).translate_ids(&ids).unwrap();
    let one_by_one = tr(1, None).translate_ids(&ids).unwrap();
    // Three search threads taking batches as they come: the same results, in input order.
    let parallel = stream::Engine {
        workers: 3,
        ..tr(1, None)
    }
    .translate_ids(&ids)
    .unwrap();
    assert_eq!(by_budget.len(), lines.len());
    for ((a, b), c) in by_budget.iter().zip(&one_by_one).zip(&parallel) {
        assert_eq!(a[0].tokens, b[0].tokens);
        assert_eq!(a[0], c[0]);
    }
    assert!(
        by_budget[3][0].tokens.is_empty(),
        "empty line, empty output"
    );
}

const FIRST: u32 = gnmt_tokenizer::FIRST_PIECE;

#[test]
fn the_fused_cpu_expansion_equals_libtorch_log_softmax_add_topk() {
    tch::manual_seed(3);
    let (group, vocab, want) = (4usize, 50i64, 8usize);
    let logits = tch::Tensor::randn(
        [3 * group as i64, vocab],
        (tch::Kind::Float, tch::Device::Cpu),
    ) * 4.0;
    let mut scores: Vec<f64> = (0..3 * group).map(|i| -(i as f64) * 0.3).collect();
    // A padding row.
    scores[1] = f64::NEG_INFINITY;
    // The fused kernel on the host copy; libtorch's operators in float64.
    let host = Vec::<f32>::try_from(logits.flatten(0, -1)).unwrap();
    let (fv, fi) = fused_expand(&host, vocab as usize, &scores, group, want);
    let (tv, ti) = expand(&logits.to_kind(tch::Kind::Double), &scores, group, want).unwrap();
    assert_eq!(fi.len(), 3 * want);
    assert_eq!(fi, ti);
    for (a, b) in fv.iter().zip(&tv) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    assert!(
        fi[..want].iter().all(|&i| !(vocab..2 * vocab).contains(&i)),
        "row 1 is padding"
    );
}

#[test]
fn the_search_gives_the_same_translations_with_and_without_the_fused_kernels() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut cfg = ModelConfig::preset("tiny", 300).expect("the tiny preset");
    cfg.init_range = 1.0; // peaky distributions make the search non-trivial
    let m = Seq2Seq::new(&vs.root(), &cfg).expect("a model");
    let srcs: Vec<Vec<u32>> = (0..12u32)
        .map(|i| {
            (0..1 + i % 7)
                .map(|j| 4 + (i * 37 + j * 11) % 290)
                .collect()
        })
        .collect();
    let fused = SearchConfig::default();
    assert_eq!(fused.kernels, Kernels::Fused, "the default");
    let plain = SearchConfig {
        kernels: Kernels::Libtorch,
        ..SearchConfig::default()
    };
    // The choice is the search's: libtorch alone packs no CPU decoder.
    assert!(cpu_decoder(&m, Device::Cpu, Kernels::Fused).is_some());
    assert!(cpu_decoder(&m, Device::Cpu, Kernels::Libtorch).is_none());
    let a = translate_batch(&m, &srcs, &fused, Device::Cpu).unwrap();
    let b = translate_batch(&m, &srcs, &plain, Device::Cpu).unwrap();
    for (f, p) in a.iter().zip(&b) {
        assert_eq!(f.len(), p.len());
        for (x, y) in f.iter().zip(p) {
            assert_eq!(x.tokens, y.tokens);
            assert!(
                (x.score - y.score).abs() < 1e-4,
                "{} vs {}",
                x.score,
                y.score
            );
        }
    }
}

/// Steps a live search until it is empty, letting `later` join at the steps they name; the
/// hypotheses per ticket.
fn run_live(
    live: &mut LiveSearch,
    first: &[Vec<u32>],
    later: &[(usize, Vec<Vec<u32>>)],
) -> std::collections::BTreeMap<Ticket, Vec<Hypothesis>> {
    let mut got = std::collections::BTreeMap::new();
    live.join(first).unwrap();
    let mut step = 0;
    while !live.is_empty() || later.iter().any(|(at, _)| *at >= step) {
        for (at, srcs) in later {
            if *at == step {
                live.join(srcs).unwrap();
            }
        }
        for (ticket, hyps) in live.step().unwrap() {
            assert!(got.insert(ticket, hyps).is_none(), "ticket {ticket} twice");
        }
        step += 1;
    }
    got
}

#[test]
fn sentences_joining_a_live_search_get_what_a_batch_search_gives_them() {
    let (_vs, m) = seeded_model(300, 5);
    let src =
        |i: u32, n: u32| -> Vec<u32> { (0..n).map(|j| 4 + (i * 37 + j * 11) % 290).collect() };
    let first = vec![src(1, 3), src(2, 6)];
    // Joining before the first step, mid-search (wider and narrower sources than the batch's),
    // an empty one, and into a search that has emptied.
    let later = vec![
        (0, vec![src(3, 2)]),
        (2, vec![src(4, 9), vec![], src(5, 1)]),
        (4, vec![src(6, 4)]),
        (40, vec![src(7, 5), src(8, 2)]),
    ];
    let all: Vec<Vec<u32>> = first
        .iter()
        .chain(later.iter().flat_map(|(_, s)| s))
        .cloned()
        .collect();
    for kernels in [Kernels::Fused, Kernels::Libtorch] {
        let cfg = SearchConfig {
            nbest: 3,
            kernels,
            ..SearchConfig::default()
        };
        let cpu = cpu_decoder(&m, Device::Cpu, kernels);
        let member = Member {
            model: &m,
            cpu: cpu.as_ref(),
            weight: 1.0,
        };
        let mut live = LiveSearch::new(vec![member], cfg.clone(), Device::Cpu).unwrap();
        let got = run_live(&mut live, &first, &later);
        assert_eq!(got.len(), all.len(), "{kernels:?}: every sentence once");
        assert_eq!(live.pieces(), 0);
        for (i, s) in all.iter().enumerate() {
            let alone =
                translate_batch_with(&m, cpu.as_ref(), std::slice::from_ref(s), &cfg, Device::Cpu)
                    .unwrap()
                    .remove(0);
            let mine = &got[&i];
            assert_eq!(mine.len(), alone.len(), "{kernels:?} sentence {i}");
            for (x, y) in mine.iter().zip(&alone) {
                assert_eq!(x.tokens, y.tokens, "{kernels:?} sentence {i}");
                assert_eq!(x.alignment, y.alignment, "{kernels:?} sentence {i}");
                assert!(
                    (x.score - y.score).abs() < 1e-5,
                    "{kernels:?} sentence {i}: {} vs {}",
                    x.score,
                    y.score
                );
            }
        }
    }
}
