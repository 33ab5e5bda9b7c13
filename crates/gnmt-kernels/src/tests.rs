use super::*;

fn ulps(a: f32, b: f64) -> f64 {
    let ulp = (b.abs() as f32).max(f32::MIN_POSITIVE);
    let ulp = (f32::from_bits(ulp.to_bits() + 1) - ulp) as f64;
    (a as f64 - b).abs() / ulp
}

/// exp and tanh of `xs` by each vector build this process may use (AVX2: 8 lanes, AVX-512:
/// 16; `xs.len()` a multiple of 16).
#[allow(unsafe_code)]
fn vector_exp_tanh(xs: &[f32]) -> Vec<(Vec<f32>, Vec<f32>)> {
    assert_eq!(xs.len() % 16, 0);
    let mut outs = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        #[target_feature(enable = "avx2,fma")]
        fn run8(xs: &[f32]) -> (Vec<f32>, Vec<f32>) {
            let mut out = (Vec::new(), Vec::new());
            for c in xs.chunks_exact(8) {
                // SAFETY: `c` holds eight floats.
                let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
                for (f, o) in [
                    (avx2::exp8 as fn(_) -> _, &mut out.0),
                    (avx2::tanh8, &mut out.1),
                ] {
                    let mut r = [0f32; 8];
                    // SAFETY: `r` has room for eight floats.
                    unsafe { _mm256_storeu_ps(r.as_mut_ptr(), f(v)) };
                    o.extend(r);
                }
            }
            out
        }
        #[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
        fn run16(xs: &[f32]) -> (Vec<f32>, Vec<f32>) {
            let mut out = (Vec::new(), Vec::new());
            for c in xs.chunks_exact(16) {
                // SAFETY: `c` holds sixteen floats.
                let v = unsafe { _mm512_loadu_ps(c.as_ptr()) };
                for (f, o) in [
                    (avx512::exp16 as fn(_) -> _, &mut out.0),
                    (avx512::tanh16, &mut out.1),
                ] {
                    let mut r = [0f32; 16];
                    // SAFETY: `r` has room for sixteen floats.
                    unsafe { _mm512_storeu_ps(r.as_mut_ptr(), f(v)) };
                    o.extend(r);
                }
            }
            out
        }
        if Isa::available().contains(&Isa::Avx2) {
            // SAFETY: the CPU has AVX2 and FMA (Isa::available).
            outs.push(unsafe { run8(xs) });
        }
        if Isa::available().contains(&Isa::Avx512) {
            // SAFETY: the CPU has AVX-512 F, DQ, BW and VL (Isa::available).
            outs.push(unsafe { run16(xs) });
        }
    }
    outs
}

#[test]
fn exp_and_tanh_are_within_a_few_ulps_of_f64() {
    let xs: Vec<f32> = (-200_000..200_000).map(|i| i as f32 * 4e-4).collect(); // [-80, 80)
    let ys: Vec<f32> = (-200_000..200_000).map(|i| i as f32 * 1e-4).collect(); // [-20, 20)
    let mut exps: Vec<Vec<f32>> = vec![xs.iter().map(|&x| exp(x)).collect()];
    let mut tanhs: Vec<Vec<f32>> = vec![ys.iter().map(|&y| tanh(y)).collect()];
    for ((e, _), (_, t)) in vector_exp_tanh(&xs).into_iter().zip(vector_exp_tanh(&ys)) {
        exps.push(e);
        tanhs.push(t);
    }
    for e in &exps {
        let worst = e
            .iter()
            .zip(&xs)
            .map(|(&a, &x)| ulps(a, (x as f64).exp()))
            .fold(0.0, f64::max);
        assert!(worst <= 3.0, "exp: {worst} ulps");
    }
    for t in &tanhs {
        let worst = t
            .iter()
            .zip(&ys)
            .map(|(&a, &y)| ulps(a, (y as f64).tanh()))
            .fold(0.0, f64::max);
        assert!(worst <= 3.0, "tanh: {worst} ulps");
    }
    let special = [
        1e-30f32,
        -1e-20,
        1e-7,
        0.0,
        40.0,
        -1e9,
        f32::NAN,
        -200.0,
        9.2,
        -0.625,
    ];
    let mut outs = vec![(
        special.iter().map(|&x| exp(x)).collect(),
        special.iter().map(|&x| tanh(x)).collect(),
    )];
    outs.extend(vector_exp_tanh(&[&special[..], &[0.0; 6]].concat()));
    for (e, t) in outs {
        for (i, &y) in special.iter().enumerate().take(4) {
            assert!(ulps(t[i], (y as f64).tanh()) <= 1.0, "tanh({y})");
        }
        assert_eq!((t[4], t[5]), (1.0, -1.0));
        assert!(t[6].is_nan() && e[6].is_nan());
        assert!(e[7] < 1e-37 && e[7] >= 0.0);
        assert!(ulps(t[8], 9.2f64.tanh()) <= 1.0 && ulps(t[9], (-0.625f64).tanh()) <= 3.0);
    }
}

fn reference_scores(q: &[f32], k: &[f32], v: &[f32], pad: &[bool], sh: AttentionShape) -> Vec<f64> {
    let mut out = vec![0f64; sh.b * sh.t * sh.s];
    for b in 0..sh.b {
        for t in 0..sh.t {
            for s in 0..sh.s {
                out[(b * sh.t + t) * sh.s + s] = if pad[b * sh.s + s] {
                    -1e4
                } else {
                    (0..sh.u)
                        .map(|u| {
                            let x = q[(b * sh.t + t) * sh.u + u] as f64
                                + k[(b * sh.s + s) * sh.u + u] as f64;
                            v[u] as f64 * x.tanh()
                        })
                        .sum()
                };
            }
        }
    }
    out
}

#[test]
fn additive_scores_match_the_definition() {
    for (i, &(b, t, s, u)) in [(3, 5, 7, 32), (2, 1, 4, 13), (1, 2, 3, 5), (4, 3, 9, 256)]
        .iter()
        .enumerate()
    {
        let sh = AttentionShape { b, t, s, u };
        let q = noise(b * t * u, 1 + i as u64, 2.0);
        let k = noise(b * s * u, 100 + i as u64, 2.0);
        let v = noise(u, 200 + i as u64, 0.5);
        let pad: Vec<bool> = (0..b * s)
            .map(|j| j % s >= s - j / s % 2 - 1 && j % s != 0)
            .collect();
        assert!(pad.iter().any(|&p| p) && pad.iter().any(|&p| !p));
        let want = reference_scores(&q, &k, &v, &pad, sh);
        for isa in Isa::available() {
            let mut got = vec![0f32; b * t * s];
            additive_scores_on(isa, &q, &k, &v, &pad, sh, -1e4, &mut got);
            for (w, a) in want.iter().zip(&got) {
                assert!(
                    (w - *a as f64).abs() < 1e-5 * (1.0 + w.abs()),
                    "{isa} {sh:?}: {a} vs {w}"
                );
            }
        }
    }
}

#[test]
fn additive_attention_is_the_softmax_of_the_scores_and_its_weighted_values() {
    // Sentence 1 is all padding but its first key, sentence 2 has a padded key mid-row.
    let sh = AttentionShape {
        b: 3,
        t: 5,
        s: 7,
        u: 40,
    };
    let d = 37;
    let q = noise(sh.b * sh.t * sh.u, 11, 2.0);
    let k = noise(sh.b * sh.s * sh.u, 12, 2.0);
    let v = noise(sh.u, 13, 0.5);
    let values = noise(sh.b * sh.s * d, 14, 3.0);
    let pad: Vec<bool> = (0..sh.b * sh.s)
        .map(|j| (j / sh.s == 1 && j % sh.s > 0) || j == 2 * sh.s + 3)
        .collect();
    let scores = reference_scores(&q, &k, &v, &pad, sh);
    for isa in Isa::available() {
        let mut weights = vec![f32::NAN; sh.b * sh.t * sh.s];
        let mut context = vec![f32::NAN; sh.b * sh.t * d];
        additive_attention_on(
            isa,
            &q,
            &k,
            &values,
            &v,
            &pad,
            sh,
            &mut weights,
            &mut context,
        );
        for r in 0..sh.b * sh.t {
            let b = r / sh.t;
            let unpadded = |s: usize| !pad[b * sh.s + s];
            let row = &scores[r * sh.s..][..sh.s];
            let max = (0..sh.s)
                .filter(|&s| unpadded(s))
                .map(|s| row[s])
                .fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = (0..sh.s)
                .map(|s| {
                    if unpadded(s) {
                        (row[s] - max).exp()
                    } else {
                        0.0
                    }
                })
                .collect();
            let sum: f64 = e.iter().sum();
            for s in 0..sh.s {
                let (want, got) = (e[s] / sum, weights[r * sh.s + s]);
                if unpadded(s) {
                    assert!((want - got as f64).abs() < 1e-5, "{isa} row {r} key {s}");
                } else {
                    assert_eq!(got, 0.0, "{isa} row {r}: padding {s} weighs nothing");
                }
            }
            for j in 0..d {
                let want: f64 = (0..sh.s)
                    .map(|s| e[s] / sum * values[(b * sh.s + s) * d + j] as f64)
                    .sum();
                let got = context[r * d + j] as f64;
                assert!((want - got).abs() < 1e-4, "{isa} row {r} context {j}");
            }
        }
    }
    // The builds share the softmax and the context's order of operations: the same bits for
    // the same scores (the scores themselves differ between builds by rounding).
    let scores_portable = {
        let mut w = vec![0f32; sh.b * sh.t * sh.s];
        additive_scores_on(Isa::Portable, &q, &k, &v, &pad, sh, 0.0, &mut w);
        w
    };
    for isa in Isa::available() {
        let mut weights = scores_portable.clone();
        let mut context = vec![0f32; sh.b * sh.t * d];
        dispatch!(
            isa,
            math::attend(&mut weights, &values, &pad, sh, d, &mut context)
        );
        let mut reference = scores_portable.clone();
        let mut reference_context = vec![0f32; sh.b * sh.t * d];
        math::attend(&mut reference, &values, &pad, sh, d, &mut reference_context);
        assert_eq!(bits(&weights), bits(&reference), "{isa} weights");
        assert_eq!(bits(&context), bits(&reference_context), "{isa} context");
    }
}

#[test]
fn additive_attention_on_tensors_matches_the_slices_and_declines_what_it_cannot() {
    use tch::{Device, Kind, Tensor};
    let (b, group, s, u, d) = (2usize, 3usize, 5usize, 8usize, 6usize);
    let q = noise(b * group * u, 21, 1.0);
    let keys = noise(b * s * u, 22, 1.0);
    let values = noise(b * s * d, 23, 1.0);
    let v = noise(u, 24, 1.0);
    let pad: Vec<bool> = (0..b * s).map(|j| j == 2 * s - 1).collect();
    let sh = AttentionShape { b, t: group, s, u };
    let mut want = tensor::Attended {
        context: vec![0.0; b * group * d],
        weights: vec![0.0; b * group * s],
    };
    additive_attention(
        &q,
        &keys,
        &values,
        &v,
        &pad,
        sh,
        &mut want.weights,
        &mut want.context,
    );
    let t =
        |x: &[f32], n: usize, w: usize| Tensor::from_slice(x).view([b as i64, n as i64, w as i64]);
    let (kt, vt) = (t(&keys, s, u), t(&values, s, d));
    let mask = Tensor::from_slice(&pad).view([b as i64, s as i64]);
    let got = tensor::additive_attention_tensors(&q, group, &kt, &vt, &mask, &v);
    assert_eq!(got.as_ref(), Some(&want));
    // A strided view of the same keys gives the same answer (read through a contiguous copy).
    let strided = kt.transpose(1, 2).contiguous().transpose(1, 2);
    assert!(!strided.is_contiguous());
    let got = tensor::additive_attention_tensors(&q, group, &strided, &vt, &mask, &v);
    assert_eq!(got.as_ref(), Some(&want));
    // Not float32, a query short, a mask of another shape: declined, not misread.
    let double = kt.to_kind(Kind::Double);
    assert!(tensor::additive_attention_tensors(&q, group, &double, &vt, &mask, &v).is_none());
    let short = &q[..q.len() - 1];
    assert!(tensor::additive_attention_tensors(short, group, &kt, &vt, &mask, &v).is_none());
    let wide = Tensor::zeros([b as i64, s as i64 + 1], (Kind::Bool, Device::Cpu));
    assert!(tensor::additive_attention_tensors(&q, group, &kt, &vt, &wide, &v).is_none());
}

/// Sorted (score, index) pairs of log_softmax(row) + score over a group's rows, in f64.
fn reference_top(
    logits: &[f32],
    vocab: usize,
    scores: &[f32],
    group: usize,
    want: usize,
) -> Vec<(f64, i64)> {
    let mut out = Vec::new();
    for g in 0..scores.len() / group {
        let mut all = Vec::new();
        for beam in 0..group {
            let r = g * group + beam;
            let row = &logits[r * vocab..(r + 1) * vocab];
            let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
            let lse = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            for (j, &x) in row.iter().enumerate() {
                let c = x as f64 - lse + scores[r] as f64;
                if c > f64::NEG_INFINITY {
                    all.push((c, (beam * vocab + j) as i64));
                }
            }
        }
        all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        all.resize(want.min(all.len()), (0.0, 0));
        while all.len() < want {
            all.push((f64::NEG_INFINITY, 0));
        }
        out.extend(all);
    }
    out
}

#[test]
fn top_candidates_are_the_best_of_log_softmax_plus_score() {
    for (i, &(groups, group, vocab, want)) in [
        (3, 5, 1000, 10),
        (2, 1, 37, 2),
        (1, 4, 8, 40),
        (4, 2, 3, 6),
        (2, 3, 50, 1),
    ]
    .iter()
    .enumerate()
    {
        let logits = noise(groups * group * vocab, 7 + i as u64, 8.0);
        let mut scores = noise(groups * group, 70 + i as u64, 3.0);
        scores[group - 1] = f32::NEG_INFINITY; // a padding beam: never a candidate
        let want_ref = reference_top(&logits, vocab, &scores, group, want);
        for isa in Isa::available() {
            let got = top_candidates_on(isa, &logits, vocab, &scores, group, want);
            assert_eq!(got.len(), groups * want);
            for (g, w) in got.iter().zip(&want_ref) {
                assert_eq!(
                    g.index, w.1,
                    "{isa} {groups}x{group}x{vocab} want {want}: {got:?}"
                );
                if w.0 == f64::NEG_INFINITY {
                    assert_eq!(g.score, f32::NEG_INFINITY);
                } else {
                    assert!(
                        (g.score as f64 - w.0).abs() < 1e-5 * (1.0 + w.0.abs()),
                        "{} vs {}",
                        g.score,
                        w.0
                    );
                }
            }
        }
    }
}

#[test]
fn top_candidates_agree_with_libtorch() {
    let (groups, group, vocab, want) = (4usize, 5usize, 300usize, 10usize);
    let logits = noise(groups * group * vocab, 3, 10.0);
    let scores = noise(groups * group, 4, 5.0);
    let t = tch::Tensor::from_slice(&logits).view([(groups * group) as i64, vocab as i64]);
    let cand = (t.log_softmax(-1, tch::Kind::Float)
        + tch::Tensor::from_slice(&scores).unsqueeze(1))
    .view([groups as i64, (group * vocab) as i64]);
    let (v, ix) = cand.topk(want as i64, -1, true, true);
    let v = Vec::<f32>::try_from(v.flatten(0, -1)).unwrap_or_default();
    let ix = Vec::<i64>::try_from(ix.flatten(0, -1)).unwrap_or_default();
    let got = top_candidates(&logits, vocab, &scores, group, want);
    assert_eq!(got.iter().map(|c| c.index).collect::<Vec<_>>(), ix);
    for (g, w) in got.iter().zip(&v) {
        assert!(
            (g.score - w).abs() <= 2e-6 * (1.0 + w.abs()),
            "{} vs {w}",
            g.score
        );
    }
}

#[test]
fn empty_and_zero_sized_inputs() {
    assert!(top_candidates(&[], 5, &[], 1, 3).is_empty());
    let got = top_candidates(&[0.0; 4], 4, &[0.0], 1, 0);
    assert!(got.is_empty());
    let sh = AttentionShape {
        b: 1,
        t: 1,
        s: 2,
        u: 0,
    };
    let mut out = [1f32; 2];
    additive_scores(&[], &[], &[], &[false, false], sh, -1.0, &mut out);
    assert_eq!(out, [0.0, 0.0]);
}

#[test]
fn packed_linear_is_x_w_transposed_plus_b() {
    for (i, &(m, k, n, bias)) in [
        (7, 13, 37, true),
        (1, 256, 16, false),
        (13, 5, 3, true),
        (6, 40, 33, true),
        (0, 4, 4, true),
        (3, 0, 20, true),
        (7, 256, 300, true), // several blocks of panels
    ]
    .iter()
    .enumerate()
    {
        let w = noise(n * k, 300 + i as u64, 1.0);
        let b = noise(n, 400 + i as u64, 1.0);
        let x = noise(m * k, 500 + i as u64, 1.0);
        let p = PackedLinear::new(&w, bias.then_some(&b[..]), n, k);
        assert_eq!((p.out_features(), p.in_features()), (n, k));
        let outs: Vec<(Isa, Vec<f32>)> = Isa::available()
            .into_iter()
            .map(|isa| {
                let mut out = vec![f32::NAN; m * n];
                p.forward_on(isa, &x, m, &mut out);
                (isa, out)
            })
            .collect();
        for r in 0..m {
            for j in 0..n {
                let want: f64 = (0..k)
                    .map(|kk| x[r * k + kk] as f64 * w[j * k + kk] as f64)
                    .sum::<f64>()
                    + if bias { b[j] as f64 } else { 0.0 };
                for (isa, out) in &outs {
                    let got = out[r * n + j];
                    assert!(
                        (got as f64 - want).abs() < 1e-4,
                        "{isa} {m}x{k}x{n} [{r},{j}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn lstm_cell_matches_the_definition_and_libtorch() {
    for (i, &(rows, hidden)) in [(3usize, 16usize), (2, 13), (1, 1), (4, 256)]
        .iter()
        .enumerate()
    {
        let gates = noise(rows * 4 * hidden, 600 + i as u64, 6.0);
        let c0 = noise(rows * hidden, 700 + i as u64, 2.0);
        let sig = |x: f64| 1.0 / (1.0 + (-x).exp());
        let outs: Vec<(Vec<f32>, Vec<f32>)> = Isa::available()
            .into_iter()
            .map(|isa| {
                let (mut c, mut h) = (c0.clone(), vec![0f32; rows * hidden]);
                lstm_cell_on(isa, &gates, None, &mut c, &mut h, hidden);
                // The previous c picked from other rows, out of place into a stale buffer: the
                // same bits as those rows gathered and updated in place.
                let held = noise((rows + 2) * hidden, 750 + i as u64, 2.0);
                let picks: Vec<usize> = (0..rows).map(|r| (r * 3 + 1) % (rows + 2)).collect();
                let mut gathered: Vec<f32> = picks
                    .iter()
                    .flat_map(|&r| held[r * hidden..(r + 1) * hidden].iter().copied())
                    .collect();
                let mut gathered_h = vec![0f32; rows * hidden];
                lstm_cell_on(isa, &gates, None, &mut gathered, &mut gathered_h, hidden);
                let mut out = vec![f32::NAN; rows * hidden];
                let mut out_h = vec![f32::NAN; rows * hidden];
                lstm_cell_on(
                    isa,
                    &gates,
                    Some((&held, &picks)),
                    &mut out,
                    &mut out_h,
                    hidden,
                );
                assert_eq!(bits(&out), bits(&gathered), "{isa} c, picked");
                assert_eq!(bits(&out_h), bits(&gathered_h), "{isa} h, picked");
                (c, h)
            })
            .collect();
        for r in 0..rows {
            for j in 0..hidden {
                let g = |q: usize| gates[r * 4 * hidden + q * hidden + j] as f64;
                let cw = sig(g(1)) * c0[r * hidden + j] as f64 + sig(g(0)) * g(2).tanh();
                let hw = sig(g(3)) * cw.tanh();
                for (cc, hh) in outs
                    .iter()
                    .map(|(c, h)| (c[r * hidden + j], h[r * hidden + j]))
                {
                    assert!(
                        (cc as f64 - cw).abs() < 1e-5 * (1.0 + cw.abs()),
                        "c: {cc} vs {cw}"
                    );
                    assert!((hh as f64 - hw).abs() < 1e-5, "h: {hh} vs {hw}");
                }
            }
        }
    }
}

#[test]
fn builds_are_ordered_and_named() {
    assert_eq!(Isa::available()[0], Isa::Portable);
    assert_eq!(Isa::available().last().copied(), Some(Isa::detected()));
    assert!(Isa::detected() <= Isa::supported());
    for isa in Isa::ALL {
        assert_eq!(isa.name().parse::<Isa>(), Ok(isa));
    }
    assert!("sse2".parse::<Isa>().is_err());
}

#[test]
fn every_build_gives_the_same_candidates_on_search_shapes() {
    // Beam 5 over an 8000-piece vocabulary, rows with the tails a 16-lane build masks.
    for vocab in [8000usize, 8003, 13] {
        let logits = noise(2 * 5 * vocab, vocab as u64, 6.0);
        let scores = noise(10, 9, 2.0);
        let base = top_candidates_on(Isa::Portable, &logits, vocab, &scores, 5, 10);
        for isa in Isa::available() {
            let got = top_candidates_on(isa, &logits, vocab, &scores, 5, 10);
            let ix = |v: &[Candidate]| v.iter().map(|c| c.index).collect::<Vec<_>>();
            assert_eq!(ix(&got), ix(&base), "{isa} vocab {vocab}");
        }
    }
}

#[test]
fn bf16_rounds_to_nearest_even() {
    assert_eq!(to_bf16(1.0), 0x3F80);
    assert_eq!(from_bf16(0x3F80), 1.0);
    // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even (1.0).
    assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3F80);
    // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up to the even.
    assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3F82);
    assert_eq!(to_bf16(1.0 + 1.5 / 256.0), 0x3F81);
    assert_eq!(to_bf16(-2.0), 0xC000);
    assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    assert_eq!(
        from_bf16(to_bf16(f32::MAX)),
        f32::INFINITY,
        "rounds past the largest bf16"
    );
    assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    for x in noise(1000, 5, 100.0) {
        let r = from_bf16(to_bf16(x));
        assert!((r - x).abs() <= x.abs() / 256.0, "{x} -> {r}");
    }
}

#[test]
fn bf16_input_rows_pack_as_to_bf16_rounds_on_every_build() {
    // Odd and even widths, ties, infinities, NaN (made quiet) and a value rounding past the
    // largest bf16.
    let special = [
        1.0 + 1.0 / 256.0,
        1.0 + 3.0 / 256.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MAX,
        -0.0,
    ];
    for k in [1usize, 2, 7, 16, 37] {
        let m = 3;
        let mut x = noise(m * k, k as u64, 50.0);
        for (v, s) in x.iter_mut().step_by(3).zip(special) {
            *v = s;
        }
        let k2 = k.div_ceil(2);
        let want: Vec<u32> = (0..m)
            .flat_map(|r| {
                let row = &x[r * k..(r + 1) * k];
                (0..k2).map(move |q| {
                    let hi = row.get(2 * q + 1).map_or(0, |&v| to_bf16(v) as u32);
                    to_bf16(row[2 * q]) as u32 | (hi << 16)
                })
            })
            .collect();
        for isa in Isa::ALL.into_iter().filter(|&i| i <= Isa::supported()) {
            assert_eq!(
                bf16::pack_rows_on(isa, RowParts::new(&[(&x, k)]), m, k, k2),
                want,
                "{isa:?}, k {k}"
            );
        }
    }
}

/// The bit patterns of `v` (to compare floats exactly, NaN included).
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `(m, k, n, bias)` of the bf16 and int8 matrix tests: odd sizes, empty ones, several blocks.
const LOW_PRECISION_CASES: [(usize, usize, usize, bool); 8] = [
    (7, 13, 37, true),
    (1, 256, 16, false),
    (13, 5, 3, true),
    (14, 40, 33, true),
    (0, 4, 4, true),
    (3, 0, 20, true),
    (25, 256, 300, true),
    (5, 1024, 70, true),
];

#[test]
fn packed_linear_bf16_is_the_bf16_product_with_float32_sums() {
    let fast = bf16_dot_supported();
    for (i, &(m, k, n, bias)) in LOW_PRECISION_CASES.iter().enumerate() {
        let w = noise(n * k, 800 + i as u64, 1.0);
        let b = noise(n, 900 + i as u64, 1.0);
        let x = noise(m * k, 1000 + i as u64, 1.0);
        let p = PackedLinearBf16::new(&w, bias.then_some(&b[..]), n, k);
        assert_eq!((p.out_features(), p.in_features()), (n, k));
        let round = |v: f32| from_bf16(to_bf16(v)) as f64;
        let mut outs = Vec::new();
        for on in [false, fast] {
            let mut out = vec![f32::NAN; m * n];
            p.forward_on(on, &x, m, &mut out);
            outs.push(out);
        }
        for r in 0..m {
            for j in 0..n {
                let terms = (0..k).map(|kk| round(x[r * k + kk]) * round(w[j * k + kk]));
                let want = terms.sum::<f64>() + if bias { b[j] as f64 } else { 0.0 };
                let scale: f64 = (0..k)
                    .map(|kk| (x[r * k + kk] * w[j * k + kk]).abs() as f64)
                    .sum();
                for out in &outs {
                    let got = out[r * n + j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-6 * (1.0 + scale),
                        "{m}x{k}x{n} [{r},{j}]: {got} vs {want}"
                    );
                }
                // And the float32 product within bf16's precision.
                let exact: f64 = (0..k)
                    .map(|kk| x[r * k + kk] as f64 * w[j * k + kk] as f64)
                    .sum::<f64>()
                    + if bias { b[j] as f64 } else { 0.0 };
                assert!((outs[0][r * n + j] as f64 - exact).abs() <= 0.01 * (1.0 + scale));
            }
        }
    }
}

#[test]
fn quantize_is_symmetric_per_row() {
    let (s, q) = quantize(&[0.5, -1.27, 0.0, 1.27]);
    assert!((s - 0.01).abs() < 1e-7, "{s}");
    assert_eq!(q, vec![50, -127, 0, 127]);
    assert_eq!(quantize(&[0.0, 0.0]), (1.0, vec![0, 0]));
    assert_eq!(quantize(&[]), (1.0, vec![]));
}

#[test]
fn packed_linear_int8_sums_the_quantized_product_exactly() {
    let fast = int8_dot_supported();
    for (i, &(m, k, n, bias)) in LOW_PRECISION_CASES.iter().enumerate() {
        let w = noise(n * k, 1100 + i as u64, 1.0);
        let b = noise(n, 1200 + i as u64, 1.0);
        let x = noise(m * k, 1300 + i as u64, 3.0);
        let p = PackedLinearI8::new(&w, bias.then_some(&b[..]), n, k);
        assert_eq!((p.out_features(), p.in_features()), (n, k));
        let mut portable = vec![f32::NAN; m * n];
        p.forward_on(false, &x, m, &mut portable);
        let mut vnni = vec![f32::NAN; m * n];
        p.forward_on(fast, &x, m, &mut vnni);
        // Exact integer sums, the same rounding after: the same bits.
        assert_eq!(
            portable.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            vnni.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{m}x{k}x{n}"
        );
        for r in 0..m {
            let (sx, xq) = quantize(&x[r * k..(r + 1) * k]);
            for j in 0..n {
                let (sw, wq) = quantize(&w[j * k..(j + 1) * k]);
                let dot: i64 = xq.iter().zip(&wq).map(|(&a, &b)| a as i64 * b as i64).sum();
                let bj = if bias { b[j] as f64 } else { 0.0 };
                let want = dot as f64 * sx as f64 * sw as f64 + bj;
                let got = portable[r * n + j] as f64;
                assert!(
                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{got} vs {want}"
                );
                // And the float product within the quantization error.
                let exact: f64 = (0..k)
                    .map(|kk| x[r * k + kk] as f64 * w[j * k + kk] as f64)
                    .sum::<f64>()
                    + bj;
                let bound = (k as f64) * (sx as f64 * 1.0 + sw as f64 * 3.0);
                assert!((got - exact).abs() <= bound + 1e-6, "{got} vs {exact}");
            }
        }
    }
    // A quarter of float32's bytes (plus a scale and an offset per column).
    let p = PackedLinearI8::new(&noise(512 * 256, 1, 1.0), None, 512, 256);
    assert!(
        p.weight_bytes() <= 512 * 256 * 4 * 3 / 10,
        "{}",
        p.weight_bytes()
    );
}

#[test]
fn every_build_sums_int8_products_to_the_same_integers() {
    for (i, &(m, k, n)) in [
        (7, 13, 37),
        (1, 256, 16),
        (5, 1024, 70),
        (3, 4, 1),
        (25, 64, 33),
        // Every remainder of the AVX2 kernel's six rows, and of its eight columns.
        (2, 40, 20),
        (10, 24, 9),
    ]
    .iter()
    .enumerate()
    {
        let w = noise(n * k, 1400 + i as u64, 1.0);
        let x = noise(m * k, 1500 + i as u64, 2.0);
        let b = noise(n, 1600 + i as u64, 1.0);
        let p = PackedLinearI8::new(&w, Some(&b), n, k);
        let (xs, row_scales) = int8::quantize_rows(&x, m, k, p.k4);
        let mut portable = vec![0i32; m * n];
        int8::sums_portable(&p, &xs, m, &mut portable);
        // The AVX2 build finishes its sums itself: the portable build's outputs, bit for bit.
        #[cfg(target_arch = "x86_64")]
        if Isa::available().contains(&Isa::Avx2) {
            let mut want = vec![0f32; m * n];
            p.forward_on(false, &x, m, &mut want);
            let mut avx2 = vec![f32::NAN; m * n];
            // SAFETY: the CPU has AVX2 and FMA (Isa::available).
            #[allow(unsafe_code)]
            unsafe {
                avx2::linear_i8(&p, &xs, &row_scales, m, &mut avx2)
            };
            assert_eq!(bits(&avx2), bits(&want), "{m}x{k}x{n}");
            // The 256-bit `vpdpbusd` loop: AVX-VNNI's build where the CPU has it, and its
            // AVX512-VNNI twin (the same operation, EVEX encoded) where that is what it has.
            let mut vnni = vec![f32::NAN; m * n];
            if std::is_x86_feature_detected!("avxvnni") {
                // SAFETY: the CPU has AVX-VNNI (checked), AVX2 and FMA (Isa::available).
                #[allow(unsafe_code)]
                unsafe {
                    avx2::linear_i8_avx_vnni(&p, &xs, &row_scales, m, &mut vnni)
                };
                assert_eq!(bits(&vnni), bits(&want), "avx-vnni, {m}x{k}x{n}");
            }
            let evex = ["avx512f", "avx512vl", "avx512vnni"];
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx512vnni")
            {
                vnni.fill(f32::NAN);
                // SAFETY: the CPU has AVX-512 F, VL and VNNI (checked), AVX2 and FMA.
                #[allow(unsafe_code)]
                unsafe {
                    avx2::evex::linear_i8_vnni256(&p, &xs, &row_scales, m, &mut vnni)
                };
                assert_eq!(bits(&vnni), bits(&want), "{evex:?}, {m}x{k}x{n}");
            }
        }
        // And the sums are the products of the quantized values plus 128 times the weights' sums.
        for r in 0..m {
            let (_, xq) = quantize(&x[r * k..(r + 1) * k]);
            for j in 0..n {
                let (_, wq) = quantize(&w[j * k..(j + 1) * k]);
                let want: i32 = xq
                    .iter()
                    .zip(&wq)
                    .map(|(&a, &b)| (a as i32 + 128) * b as i32)
                    .sum();
                assert_eq!(portable[r * n + j], want);
            }
        }
    }
}

#[test]
fn quantized_matrices_pack_as_the_float_ones_and_rows_read_back() {
    let (n, k) = (5, 7);
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
        .collect();
    let q = QuantizedMatrix::quantize(&w, n, k);
    assert!(q.is_consistent());
    // Each row within half a step of its scale.
    for r in 0..n {
        let mut row = Vec::new();
        q.row_f32(r, &mut row);
        for (a, b) in row.iter().zip(&w[r * k..(r + 1) * k]) {
            assert!(
                (a - b).abs() <= q.scales[r] / 2.0 + 1e-6,
                "row {r}: {a} vs {b}"
            );
        }
    }
    // A row beyond the table (or an absurd index) reads as zeros.
    for r in [n, usize::MAX] {
        let mut row = Vec::new();
        q.row_f32(r, &mut row);
        assert_eq!(row, vec![0.0; k]);
    }
    // Packing quantized weights gives what quantizing and packing the float ones gives.
    let bias: Vec<f32> = (0..n).map(|i| i as f32 / 10.0).collect();
    let x: Vec<f32> = (0..3 * k).map(|i| (i as f32 * 0.37).sin()).collect();
    let (mut a, mut b) = (vec![0f32; 3 * n], vec![0f32; 3 * n]);
    PackedLinearI8::new(&w, Some(&bias), n, k).forward(&x, 3, &mut a);
    PackedLinearI8::from_quantized(&q, Some(&bias)).forward(&x, 3, &mut b);
    assert_eq!(a, b);
}

#[test]
fn input_rows_quantize_as_quantize_does_alike_on_every_build() {
    let k: usize = 7;
    let rows: [[f32; 7]; 5] = [
        // Scale 1: halves round away from zero.
        [127.0, 0.5, -0.5, 1.5, -2.5, 63.5, -126.5],
        [0.0; 7],
        [f32::NAN, 1.0, -3.0, 2.0, 0.25, -0.0, 7.0],
        [f32::INFINITY, 1.0, -1.0, 0.5, 0.0, -8.0, 3.0],
        [0.3, -1.7, 2.2, 9.9, -4.4, 0.01, -0.06],
    ];
    let x: Vec<f32> = rows.iter().flatten().copied().collect();
    let k4 = k.div_ceil(4);
    let (packed, scales) = int8::quantize_rows(&x, rows.len(), k, k4);
    assert_eq!(quantize(&rows[0]).1, [127, 1, -1, 2, -3, 64, -127]);
    for (r, row) in rows.iter().enumerate() {
        let (scale, q) = quantize(row);
        assert_eq!(scales[r].to_bits(), scale.to_bits(), "row {r}");
        let bytes: Vec<u8> = packed[r * k4..(r + 1) * k4]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let want: Vec<u8> = q.iter().map(|&v| (v as i16 + 128) as u8).collect();
        assert_eq!(bytes[..k], want[..], "row {r}");
        assert!(bytes[k..].iter().all(|&b| b == 128), "row {r}: padding");
    }
    for isa in Isa::ALL.into_iter().filter(|&i| i <= Isa::supported()) {
        let (p, s) = int8::quantize_rows_on(isa, RowParts::new(&[(&x, k)]), rows.len(), k, k4);
        assert_eq!(p, packed, "{isa:?}");
        assert_eq!(bits(&s), bits(&scales), "{isa:?}");
        // A buffer kept from a larger product, its values stale: every byte is written again.
        let mut used = int8::QuantizedRows {
            quads: vec![u32::MAX; 4 * packed.len()],
            scales: vec![f32::NAN; 2 * rows.len()],
        };
        int8::quantize_rows_into(isa, RowParts::new(&[(&x, k)]), rows.len(), k, k4, &mut used);
        assert_eq!(used.quads, packed, "{isa:?}: a used buffer");
        assert_eq!(bits(&used.scales), bits(&scales), "{isa:?}: a used buffer");
    }
}

#[test]
fn dropout_masks_keep_the_right_share_independently_and_alike_on_every_build() {
    let n = 1 << 20;
    for p in [0.1, 0.3, 0.5] {
        let draw = DropoutDraw::new(0x5EED_0000_0000_0017, p);
        let mask = dropout::mask_of_build(Isa::Portable, &draw, n).unwrap();
        // Binomial: the kept share's standard deviation is below 0.0005 at this size.
        let kept = mask.iter().sum::<f32>() as f64 / n as f64;
        assert!((kept - (1.0 - p)).abs() < 0.003, "p {p}: kept {kept}");
        // Neighbours are independent: pairs kept together at the product of the shares.
        let both = mask
            .windows(2)
            .filter(|w| w[0] == 1.0 && w[1] == 1.0)
            .count() as f64;
        let expected = (1.0 - p) * (1.0 - p);
        assert!(
            (both / (n - 1) as f64 - expected).abs() < 0.003,
            "p {p}: pairs {both}"
        );
        for isa in Isa::ALL {
            if let Some(other) = dropout::mask_of_build(isa, &draw, n) {
                assert!(other == mask, "{isa:?} differs from the portable build");
            }
        }
    }
    // The seed decides: the same seed gives the same mask, another a different one.
    let a = dropout::mask_of_build(Isa::Portable, &DropoutDraw::new(1, 0.3), 4096).unwrap();
    let b = dropout::mask_of_build(Isa::Portable, &DropoutDraw::new(1, 0.3), 4096).unwrap();
    let c = dropout::mask_of_build(Isa::Portable, &DropoutDraw::new(2, 0.3), 4096).unwrap();
    let d = dropout::mask_of_build(Isa::Portable, &DropoutDraw::new(1 << 32, 0.3), 4096).unwrap();
    assert_eq!(a, b);
    assert!(a != c && a != d && c != d);
    // The edges: nothing dropped at p = 0, everything at p = 1.
    let none = dropout::mask_of_build(Isa::Portable, &DropoutDraw::new(3, 0.0), 4096).unwrap();
    let all = dropout::mask_of_build(Isa::Portable, &DropoutDraw::new(3, 1.0), 4096).unwrap();
    assert!(none.iter().all(|&x| x == 1.0) && all.iter().all(|&x| x == 0.0));
}

#[test]
fn dropout_mask_tensors_hold_the_scale_or_zero_in_their_kind() {
    use tch::Kind;
    let f = tensor::dropout_mask(9, 0.3, &[64, 17, 256], Kind::Float);
    assert_eq!((f.size(), f.kind()), (vec![64, 17, 256], Kind::Float));
    let scale = (1.0 / 0.7) as f32;
    let values = Vec::<f32>::try_from(f.flatten(0, -1)).unwrap();
    assert!(values.iter().all(|&x| x == 0.0 || x == scale));
    let kept = values.iter().filter(|&&x| x != 0.0).count() as f64 / values.len() as f64;
    assert!((kept - 0.7).abs() < 0.01, "kept {kept}");
    // bf16 and fp16 masks drop the same elements, with the scale in their precision.
    for kind in [Kind::BFloat16, Kind::Half] {
        let h = tensor::dropout_mask(9, 0.3, &[64, 17, 256], kind);
        assert_eq!(h.kind(), kind);
        let back = h.to_kind(Kind::Float);
        assert!(back.ne(0.0).equal(&f.ne(0.0)), "{kind:?}");
        let max = back.max().double_value(&[]);
        assert!((max - 1.0 / 0.7).abs() < 0.01, "{kind:?}: {max}");
    }
    assert_eq!(
        tensor::dropout_mask(9, 0.3, &[0, 5], Kind::Float).numel(),
        0
    );
}

/// The label-smoothed loss through libtorch's operators (as the trainer computed it before the
/// fused kernel), its value and gradient with respect to the logits.
fn libtorch_smoothed_ce(
    logits: &tch::Tensor,
    target: &tch::Tensor,
    eps: f64,
) -> (f64, f64, tch::Tensor) {
    use tch::Kind;
    let x = logits.to_kind(Kind::Float).detach().set_requires_grad(true);
    let lp = x.log_softmax(-1, Kind::Float);
    let nll = -lp.gather(2, &target.unsqueeze(2), false).squeeze_dim(2);
    let smooth = -lp.mean_dim(-1, false, Kind::Float);
    let mask = target.ne(0).to_kind(Kind::Float);
    let loss = (((1.0 - eps) * &nll + eps * smooth) * &mask).sum(Kind::Float);
    let nll = (nll * &mask).sum(Kind::Float);
    loss.backward();
    (loss.double_value(&[]), nll.double_value(&[]), x.grad())
}

#[test]
fn fused_smoothed_loss_and_gradient_match_libtorch() {
    use tch::{Device, Kind, Tensor};
    tch::manual_seed(11);
    let (b, t, v) = (5i64, 7i64, 1003i64);
    let logits = Tensor::randn([b, t, v], (Kind::Float, Device::Cpu)) * 3.0;
    let mut ids =
        Vec::<i64>::try_from(Tensor::randint(v, [b * t], (Kind::Int64, Device::Cpu))).unwrap();
    // Padding at the ends of some rows, and a target that is the padding id's neighbour.
    for i in [6, 13, 20, 27, 34] {
        ids[i] = 0;
    }
    ids[3] = 1;
    let target = Tensor::from_slice(&ids).view([b, t]);
    let (eps, scale) = (0.1, 0.37);
    let (want_loss, want_nll, want_grad) = libtorch_smoothed_ce(&logits, &target, eps);
    let want_grad = want_grad * scale;
    for threads in [1, 3] {
        tch::set_num_threads(threads);
        for kind in [Kind::Float, Kind::BFloat16] {
            let x = logits.to_kind(kind);
            let c = loss::SmoothedCe {
                eps: eps as f32,
                grad_scale: scale as f32,
                pad: 0,
            };
            let (sums, grad) = tensor::smoothed_ce_tensors(&x, &target, c).unwrap();
            assert_eq!((grad.size(), grad.kind()), (x.size(), kind));
            // bf16 logits are rounded before either side sees them: compare with the loss of
            // the rounded logits, and the gradient within bf16's 8 significant bits.
            let (ref_loss, ref_nll, ref_grad, tol) = match kind {
                Kind::Float => (want_loss, want_nll, want_grad.shallow_clone(), 1e-6),
                _ => {
                    let (l, n, g) = libtorch_smoothed_ce(&x, &target, eps);
                    (l, n, g * scale, 4e-3)
                }
            };
            assert!(
                (sums.loss - ref_loss).abs() < 1e-4 * ref_loss.abs(),
                "{kind:?}: loss {} vs {ref_loss}",
                sums.loss
            );
            assert!(
                (sums.nll - ref_nll).abs() < 1e-4 * ref_nll.abs(),
                "{kind:?}: nll {} vs {ref_nll}",
                sums.nll
            );
            let err = (grad.to_kind(Kind::Float) - &ref_grad)
                .abs()
                .max()
                .double_value(&[]);
            let top = ref_grad.abs().max().double_value(&[]);
            assert!(
                err < tol * top.max(1e-3) + 1e-7,
                "{kind:?}, {threads} threads: gradient off by {err} (max {top})"
            );
            // Padding rows: nothing in the loss, zero gradient.
            let pad_rows = grad
                .view([b * t, v])
                .index_select(0, &Tensor::from_slice(&[6i64, 13]));
            assert_eq!(pad_rows.abs().sum(Kind::Float).double_value(&[]), 0.0);
        }
    }
    tch::set_num_threads(1);
    // What the kernel does not take is left to libtorch: a target outside the vocabulary,
    // another kind, a shape that does not match.
    let c = loss::SmoothedCe {
        eps: 0.1,
        grad_scale: 1.0,
        pad: 0,
    };
    let bad = Tensor::from_slice(&[v; 35]).view([b, t]);
    assert!(tensor::smoothed_ce_tensors(&logits, &bad, c).is_none());
    assert!(tensor::smoothed_ce_tensors(&logits.to_kind(Kind::Double), &target, c).is_none());
    assert!(tensor::smoothed_ce_tensors(&logits.narrow(1, 0, 3), &target, c).is_none());
}

#[test]
fn adam_updates_alike_on_every_build_and_the_working_copy_is_rounded_as_libtorch_does() {
    use tch::{Kind, Tensor};
    let n = 1003; // not a multiple of any vector width
    let c = adam::AdamStep {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        inv_sqrt_bc2: 31.6,
        step_size: 2e-3,
    };
    let wave = |k: f32| (0..n).map(|i| ((i as f32) * k).sin()).collect::<Vec<f32>>();
    let (p, g, m) = (wave(0.37), wave(1.3), wave(0.11));
    let v: Vec<f32> = wave(0.7).iter().map(|x| x * x * 0.01).collect();
    let want = adam::update_of_build(Isa::Portable, [&p, &g, &m, &v], &c).unwrap();
    let rounded = Tensor::from_slice(&want[0])
        .to_kind(Kind::BFloat16)
        .to_kind(Kind::Float);
    assert_eq!(Vec::<f32>::try_from(&rounded).unwrap(), want[3]);
    for isa in Isa::ALL {
        if let Some(got) = adam::update_of_build(isa, [&p, &g, &m, &v], &c) {
            let bits =
                |x: &[Vec<f32>; 4]| x.iter().flatten().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert!(
                bits(&got) == bits(&want),
                "{isa:?} differs from the portable build"
            );
        }
    }
}

#[test]
fn bf16_gradients_accumulate_into_float32_as_libtorch_adds_them_and_are_zeroed() {
    use tch::{Device, Kind, Tensor};
    let n = 517;
    let g0 = Tensor::from_slice(
        &(0..n)
            .map(|i| ((i as f32) * 0.9).cos() * 3.0)
            .collect::<Vec<_>>(),
    )
    .to_kind(Kind::BFloat16);
    let acc0 = Tensor::from_slice(&(0..n).map(|i| (i as f32) * 1e-3).collect::<Vec<_>>());
    for scale in [1.0f32, 1024.0] {
        let (acc, g) = (acc0.copy(), g0.copy());
        assert!(tensor::accumulate_bf16_tensors(&acc, &g, scale));
        let want = &acc0 + g0.to_kind(Kind::Float) / scale as f64;
        assert!(acc.equal(&want), "scale {scale}");
        assert_eq!(g.abs().sum(Kind::Float).double_value(&[]), 0.0);
    }
    // Other kinds, other sizes, views that are not contiguous: declined, nothing written.
    let acc = acc0.copy();
    let half = g0.to_kind(Kind::Half);
    assert!(!tensor::accumulate_bf16_tensors(&acc, &half, 1.0));
    assert!(!tensor::accumulate_bf16_tensors(
        &acc,
        &g0.narrow(0, 0, 10),
        1.0
    ));
    let strided = Tensor::zeros([n, 2], (Kind::BFloat16, Device::Cpu)).select(1, 0);
    assert!(!tensor::accumulate_bf16_tensors(&acc, &strided, 1.0));
    assert!(acc.equal(&acc0));
}

/// Every build quantizes input rows to the bytes `quantize` gives (plus the offset 128), ties,
/// the clamp at 127, infinities and NaN (as 0) included: the vectorized conversion must agree.
#[test]
fn every_build_quantizes_input_rows_as_quantize_does() {
    let (k, k4) = (21, 6);
    let mut x = noise(3 * k, 1600, 3.0);
    // Row 1: exact halves of the scale (ties round away from zero) and the extremes.
    for (i, v) in [127.0f32, -127.0, 0.5, -0.5, 1.5, -2.5, 126.5, 0.0]
        .iter()
        .enumerate()
    {
        x[k + i] = *v;
    }
    // Row 2: infinities and NaN.
    x[2 * k] = f32::INFINITY;
    x[2 * k + 1] = f32::NEG_INFINITY;
    x[2 * k + 2] = f32::NAN;
    for isa in Isa::available() {
        let (xs, scales) = int8::quantize_rows_on(isa, RowParts::new(&[(&x, k)]), 3, k, k4);
        for r in 0..3 {
            let (scale, want) = quantize(&x[r * k..(r + 1) * k]);
            assert_eq!(scales[r], scale, "{isa:?} row {r}");
            for (j, &q) in want.iter().enumerate() {
                let got = (xs[r * k4 + j / 4] >> (8 * (j % 4))) as u8;
                assert_eq!(got as i32, q as i32 + 128, "{isa:?} row {r} column {j}");
            }
            for j in k..k4 * 4 {
                assert_eq!(
                    (xs[r * k4 + j / 4] >> (8 * (j % 4))) as u8,
                    128,
                    "{isa:?} padding"
                );
            }
        }
    }
}

/// The first CPU's flags line in /proc/cpuinfo, and whether it lists each of `names`.
#[cfg(target_os = "linux")]
fn linux_lists(names: &[&str]) -> (String, bool) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let flags = info.lines().find(|l| l.starts_with("flags")).unwrap();
    let all = names
        .iter()
        .all(|n| flags.split_whitespace().any(|f| f == *n));
    (flags.to_string(), all)
}

/// Linux lists `amx_bf16` among a CPU's flags only where the CPU has it and the kernel enabled
/// its state: CPUID and XCR0 read directly must agree (no on AMD, yes on AMX Xeons).
#[test]
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn amx_is_detected_where_linux_lists_it() {
    let (flags, listed) = linux_lists(&["amx_bf16", "amx_tile"]);
    assert_eq!(amx_bf16_available(), listed, "{flags}");
}

/// bf16 counts as faster than float32 where Linux lists AMX-BF16, or where an AMD CPU has
/// AVX512-BF16 in use; never on Intel's AVX512-BF16 alone (half the FMA's rate there).
#[test]
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn bf16_is_faster_on_amx_tiles_or_amds_avx512_bf16() {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let amd = info
        .lines()
        .any(|l| l.starts_with("vendor_id") && l.trim_end().ends_with("AuthenticAMD"));
    let (flags, amx) = linux_lists(&["amx_bf16", "amx_tile"]);
    let want = amx || (amd && bf16_dot_supported());
    assert_eq!(bf16_faster_than_float32(), want, "amd {amd}, {flags}");
}

/// Where Linux lists AMX-INT8 (and nothing caps the build), the process can use the tiles, and
/// `forward` does unless `GNMT_MAX_ISA` names a build; there they give exactly the VNNI build's
/// bits, over row counts that fill, split and pad the 32-row blocks and column counts with odd
/// and partial panels.
#[test]
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn amx_int8_is_used_where_listed_and_gives_the_vnni_builds_bits() {
    let (flags, listed) = linux_lists(&["amx_int8", "amx_tile"]);
    if std::env::var(MAX_ISA_VARIABLE).is_err() && int8_dot_supported() {
        assert_eq!(amx_int8_supported(), listed, "{flags}");
    }
    if !amx_int8_supported() {
        return;
    }
    assert_eq!(amx_int8_chosen(), Isa::cap().is_none());
    let cases = [
        (1, 64, 16),
        (5, 384, 40),
        (32, 128, 32),
        (45, 768, 100),
        (320, 384, 8000),
    ];
    for (i, &(m, k, n)) in cases.iter().enumerate() {
        let w = noise(n * k, 1100 + i as u64, 1.0);
        let b = noise(n, 1200 + i as u64, 1.0);
        let x = noise(m * k, 1300 + i as u64, 3.0);
        let p = PackedLinearI8::new(&w, Some(&b), n, k);
        assert!(amx::fits(&p));
        let (xs, scales) = int8::quantize_rows(&x, m, k, p.k4);
        let mut vnni = vec![f32::NAN; m * n];
        let mut tiles = vec![f32::NAN; m * n];
        // SAFETY: the CPU has AVX512-VNNI and AMX-INT8, the process the tiles (checked above).
        #[allow(unsafe_code)]
        unsafe {
            avx512::linear_i8(&p, &xs, &scales, m, &mut vnni);
            amx::linear_i8(&p, &xs, &scales, m, &mut tiles);
        }
        assert_eq!(bits(&vnni), bits(&tiles), "m {m}, k {k}, n {n}");
        let mut forward = vec![f32::NAN; m * n];
        p.forward(&x, m, &mut forward);
        assert_eq!(bits(&forward), bits(&tiles), "forward, m {m}, k {k}, n {n}");
    }
}

/// `build` names the code each matrix's product takes here: for int8 the tiles only for
/// weights whose `k` is a multiple of 64 (where they are chosen), else the best vector build
/// the CPU has; bf16 multiplies on `vdpbf16ps` or portable code; float32 on the process's build.
#[test]
fn each_product_names_its_build() {
    let (w, b) = (noise(8 * 64, 1400, 1.0), noise(8, 1401, 1.0));
    let fp32 = PackedLinear::new(&w, Some(&b), 8, 64);
    assert_eq!(fp32.build(), Isa::detected().name());
    let bf16 = PackedLinearBf16::new(&w, Some(&b), 8, 64);
    let bf16_build = if bf16_dot_supported() {
        "avx512-bf16"
    } else {
        "portable"
    };
    assert_eq!(bf16.build(), bf16_build);
    let general = if int8_dot_supported() {
        "avx512-vnni"
    } else if int8::avx_vnni_supported() {
        "avx-vnni"
    } else if Isa::detected() >= Isa::Avx2 {
        "avx2"
    } else {
        "portable"
    };
    let tiles = if amx_int8_chosen() {
        "amx-int8 tiles"
    } else {
        general
    };
    for (k, expected) in [(64, tiles), (384, tiles), (60, general), (100, general)] {
        let p = PackedLinearI8::new(&noise(8 * k, 1400, 1.0), None, 8, k);
        assert_eq!(p.build(), expected, "k {k}");
    }
}

/// Rows given as parts side by side (a decoder layer's input, attention context and previous
/// state) give the int8 and bf16 products exactly the bits of the concatenated rows, on every
/// build: even parts, an odd last part, and odd parts in the middle (bf16 concatenates those).
#[test]
fn products_of_rows_in_parts_have_the_bits_of_the_concatenated_rows() {
    for (c, widths) in [
        vec![64usize, 64, 64],
        vec![6, 10, 7],
        vec![5, 8, 3],
        vec![9],
    ]
    .into_iter()
    .enumerate()
    {
        let (m, n) = (7, 37);
        let k: usize = widths.iter().sum();
        // A different magnitude per part, so the row scale comes from any of them.
        let parts: Vec<Vec<f32>> = widths
            .iter()
            .enumerate()
            .map(|(i, &w)| noise(m * w, 1600 + 10 * c as u64 + i as u64, 1.0 + 2.0 * i as f32))
            .collect();
        let given: Vec<(&[f32], usize)> = parts
            .iter()
            .zip(&widths)
            .map(|(p, &w)| (&p[..], w))
            .collect();
        let x = RowParts::new(&given);
        let whole = x.concat(m);
        assert_eq!(whole.len(), m * k);
        let w = noise(n * k, 1700 + c as u64, 1.0);
        let b = noise(n, 1800 + c as u64, 1.0);
        let int8 = PackedLinearI8::new(&w, Some(&b), n, k);
        let bf16 = PackedLinearBf16::new(&w, Some(&b), n, k);
        let (mut want, mut got) = (vec![0f32; m * n], vec![f32::NAN; m * n]);
        int8.forward(&whole, m, &mut want);
        int8.forward_parts(x, m, &mut got);
        assert_eq!(bits(&got), bits(&want), "int8, widths {widths:?}");
        bf16.forward(&whole, m, &mut want);
        bf16.forward_parts(x, m, &mut got);
        assert_eq!(bits(&got), bits(&want), "bf16, widths {widths:?}");
        for isa in Isa::ALL.into_iter().filter(|&i| i <= Isa::supported()) {
            let k4 = k.div_ceil(4);
            let (p, s) = int8::quantize_rows_on(isa, x, m, k, k4);
            let (pw, sw) = int8::quantize_rows_on(isa, RowParts::new(&[(&whole, k)]), m, k, k4);
            assert_eq!((p, bits(&s)), (pw, bits(&sw)), "{isa:?}, widths {widths:?}");
        }
        // The last part read through a row map (a state the search picked rows of, some
        // twice, some not at all) gives the bits of those rows gathered.
        let last = widths.len() - 1;
        let wl = widths[last];
        let held = noise((m + 3) * wl, 1900 + c as u64, 3.0);
        let picks: Vec<usize> = (0..m).map(|r| (r * 5 + 2) % (m + 3)).rev().collect();
        let gathered: Vec<f32> = picks
            .iter()
            .flat_map(|&r| held[r * wl..(r + 1) * wl].iter().copied())
            .collect();
        let (mut from_held, mut from_gathered) = (given.clone(), given.clone());
        from_held[last] = (&held[..], wl);
        from_gathered[last] = (&gathered[..], wl);
        let picked = RowParts::new(&from_held).picking(last, &picks);
        let copied = RowParts::new(&from_gathered);
        assert!(picked.holds(m) && !picked.picking(last, &picks[1..]).holds(m));
        assert_eq!(bits(&picked.concat(m)), bits(&copied.concat(m)));
        int8.forward_parts(copied, m, &mut want);
        int8.forward_parts(picked, m, &mut got);
        assert_eq!(bits(&got), bits(&want), "int8 picked, widths {widths:?}");
        bf16.forward_parts(copied, m, &mut want);
        bf16.forward_parts(picked, m, &mut got);
        assert_eq!(bits(&got), bits(&want), "bf16 picked, widths {widths:?}");
    }
}

/// Weights quantized per row on every build have the scalar rule's values and scales, special
/// values included (NaN to 0, infinities and all-zero rows).
#[test]
fn weight_matrices_quantize_alike_on_every_build() {
    let (n, k) = (9, 37);
    let mut w = noise(n * k, 1900, 5.0);
    w[3] = f32::NAN;
    w[k + 2] = f32::INFINITY;
    w[2 * k..3 * k].fill(0.0);
    w[3 * k + 5] = -0.0;
    for isa in Isa::ALL.into_iter().filter(|&i| i <= Isa::supported()) {
        let (values, scales) = int8::quantize_matrix_on(isa, &w, n, k);
        for r in 0..n {
            let (scale, q) = quantize(&w[r * k..(r + 1) * k]);
            assert_eq!(scales[r].to_bits(), scale.to_bits(), "{isa:?} row {r}");
            assert_eq!(values[r * k..(r + 1) * k], q[..], "{isa:?} row {r}");
        }
    }
    let m = QuantizedMatrix::quantize(&w, n, k);
    assert!(m.is_consistent() && m.values.len() == n * k);
}
