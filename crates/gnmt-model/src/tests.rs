use super::*;

fn tiny() -> (nn::VarStore, Seq2Seq) {
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = ModelConfig::preset("tiny", 24).unwrap();
    let m = Seq2Seq::new(&vs.root(), &cfg).unwrap();
    (vs, m)
}

fn ids(v: &[i64], rows: i64) -> Tensor {
    Tensor::from_slice(v).view([rows, -1])
}

#[test]
fn stepping_equals_teacher_forcing() {
    let (_vs, m) = tiny();
    let src = ids(&[5, 6, 7, 8, 9, 10, 0, 0], 2);
    let len = Tensor::from_slice(&[4i64, 2]);
    let tgt = ids(&[1, 11, 12, 13, 1, 14, 15, 16], 2);
    let enc = m.encode(&src, &len, false);
    let (logits, _, _) = m.decode(&enc, &tgt, None, false);
    let full = logits.log_softmax(-1, Kind::Float);
    let mut state: Option<DecoderState> = None;
    for t in 0..4 {
        let (lp, _, st) = m.step(&enc, state.as_ref(), &tgt.select(1, t));
        let diff = (lp - full.select(1, t)).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "step {t}: {diff}");
        state = Some(st);
    }
}

#[test]
fn padding_does_not_change_results() {
    let (_vs, m) = tiny();
    let alone = m.forward(
        &ids(&[5, 6, 7], 1),
        &Tensor::from_slice(&[3i64]),
        &ids(&[1, 9, 10], 1),
        false,
    );
    let batch = m.forward(
        &ids(&[5, 6, 7, 0, 0, 8, 9, 10, 11, 12], 2),
        &Tensor::from_slice(&[3i64, 5]),
        &ids(&[1, 9, 10, 1, 4, 4], 2),
        false,
    );
    let d = (alone.get(0) - batch.get(0)).abs().max().double_value(&[]);
    assert!(d < 1e-5, "{d}");
}

#[test]
fn gradients_reach_every_parameter() {
    let (vs, m) = tiny();
    let logits = m.forward(
        &ids(&[5, 6, 7, 8], 2),
        &Tensor::from_slice(&[2i64, 2]),
        &ids(&[1, 9, 1, 10], 2),
        true,
    );
    logits.sum(Kind::Float).backward();
    for (name, t) in vs.variables() {
        let g = t.grad();
        assert!(
            g.defined() && g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
            "no gradient for {name}"
        );
    }
}

#[test]
fn presets_parameter_counts() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _m = Seq2Seq::new(&vs.root(), &ModelConfig::preset("gnmt4", 32000).unwrap()).unwrap();
    let total = parameter_counts(&vs).last().unwrap().1;
    // NVIDIA GNMT v2 with a 32k shared vocabulary: 160,015,617 (ours has no separate attention
    // projection bias, and the same LSTM shapes).
    assert!((total - 160_015_617).abs() < 1_100_000, "{total}");
}

#[test]
fn mismatched_weights_name_the_tensor() {
    let (vs, _m) = tiny();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("model.safetensors");
    vs.save(&p).unwrap();
    let mut vs2 = nn::VarStore::new(Device::Cpu);
    let cfg = ModelConfig {
        hidden_size: 32,
        ..ModelConfig::preset("tiny", 24).unwrap()
    };
    let _m2 = Seq2Seq::new(&vs2.root(), &cfg).unwrap();
    let err = load_weights(&mut vs2, &p).unwrap_err().to_string();
    assert!(err.contains("tensor `") && err.contains("shape"), "{err}");
    let mut vs3 = nn::VarStore::new(Device::Cpu);
    let _m3 = Seq2Seq::new(&vs3.root(), &ModelConfig::preset("tiny", 24).unwrap()).unwrap();
    load_weights(&mut vs3, &p).unwrap();
}

#[test]
fn tied_output_uses_the_embedding_matrix() {
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut cfg = ModelConfig::preset("tiny", 24).unwrap();
    cfg.embedding_size = cfg.hidden_size;
    cfg.tied_output = true;
    let m = Seq2Seq::new(&vs.root(), &cfg).unwrap();
    let run = || {
        m.forward(
            &ids(&[5, 6, 7, 8], 2),
            &Tensor::from_slice(&[2i64, 2]),
            &ids(&[1, 9, 1, 10], 2),
            false,
        )
    };
    let before = run();
    // The classifier has no matrix of its own to train, count or save...
    let mut vars = vs.variables();
    assert!(!vars.contains_key("decoder.classifier.weight"));
    assert!(vars.contains_key("decoder.classifier.bias"));
    // ...the embedding is its matrix.
    let e = vars.get_mut("embedding.weight").unwrap();
    let _ = tch::no_grad(|| e.g_mul_scalar_(2.0));
    assert!((run() - &before).abs().max().double_value(&[]) > 1e-4);
    // A tied model saved with the unused matrix older versions kept loads (the matrix skipped);
    // an untied model still needs its own.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let mut named: Vec<(String, Tensor)> = vars.into_iter().collect();
    named.push((
        "decoder.classifier.weight".into(),
        Tensor::ones([24, 16], (Kind::Float, Device::Cpu)),
    ));
    Tensor::write_safetensors(&named, &path).unwrap();
    let mut vs2 = nn::VarStore::new(Device::Cpu);
    let m2 = Seq2Seq::new(&vs2.root(), &cfg).unwrap();
    load_weights(&mut vs2, &path).unwrap();
    let (w, _) = m2.classifier_params();
    assert_eq!(w.size(), vec![24, 16]);
    let untied = ModelConfig {
        tied_output: false,
        ..cfg.clone()
    };
    let mut vs3 = nn::VarStore::new(Device::Cpu);
    let _m3 = Seq2Seq::new(&vs3.root(), &untied).unwrap();
    named.retain(|(n, _)| n != "decoder.classifier.weight");
    Tensor::write_safetensors(&named, &path).unwrap();
    let err = load_weights(&mut vs3, &path).unwrap_err().to_string();
    assert!(err.contains("decoder.classifier.weight"), "{err}");
    // And it is refused when the sizes cannot match.
    let bad = ModelConfig {
        embedding_size: cfg.hidden_size + 1,
        ..cfg
    };
    assert!(bad.validate().is_err());
}

#[test]
fn residual_wiring_follows_the_config() {
    let cfg = ModelConfig::preset("small8", 100).unwrap();
    // GNMT: from layer 3 (0-based 2) in both stacks.
    assert!(!cfg.residual_at(1, true) && cfg.residual_at(2, true) && cfg.residual_at(7, true));
    assert!(!cfg.residual_at(1, false) && cfg.residual_at(2, false));
    // From layer 2: only the decoder can (the encoder's layer 2 changes width).
    let from2 = ModelConfig {
        residual_start: 2,
        ..cfg.clone()
    };
    assert!(!from2.residual_at(1, true) && from2.residual_at(1, false));
    let none = ModelConfig {
        residual: false,
        ..cfg
    };
    assert!((0..8).all(|i| !none.residual_at(i, true) && !none.residual_at(i, false)));
    // Turning residuals off changes what the network computes.
    // Same seed, same weights; only the wiring differs.
    let base = ModelConfig::preset("tiny", 24).unwrap();
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let with = Seq2Seq::new(&vs.root(), &base).unwrap();
    tch::manual_seed(5);
    let vs2 = nn::VarStore::new(Device::Cpu);
    let plain = ModelConfig {
        residual: false,
        ..base.clone()
    };
    let without = Seq2Seq::new(&vs2.root(), &plain).unwrap();
    let (s, l, t) = (
        ids(&[5, 6, 7, 8], 1),
        Tensor::from_slice(&[4i64]),
        ids(&[1, 9], 1),
    );
    let d = (with.forward(&s, &l, &t, false) - without.forward(&s, &l, &t, false))
        .abs()
        .max()
        .double_value(&[]);
    assert!(d > 1e-6);
}

#[test]
fn bf16_model_agrees_with_float32() {
    let (mut vs, m) = tiny();
    let (s, l, t) = (
        ids(&[5, 6, 7, 8, 9, 0], 2),
        Tensor::from_slice(&[3i64, 2]),
        ids(&[1, 9, 10, 1, 11, 12], 2),
    );
    let full = m.forward(&s, &l, &t, false).log_softmax(-1, Kind::Float);
    vs.bfloat16();
    let half = m.forward(&s, &l, &t, false).log_softmax(-1, Kind::Float);
    let d = (half - full).abs().max().double_value(&[]);
    assert!(d < 0.05, "{d}");
}

#[test]
fn grouped_steps_equal_steps_on_repeated_encoder_rows() {
    let (_vs, m) = tiny();
    let src = ids(&[5, 6, 7, 8, 9, 10, 0, 0], 2);
    let enc = m.encode(&src, &Tensor::from_slice(&[4i64, 2]), false);
    // Three hypotheses per sentence.
    let rows = Tensor::from_slice(&[0i64, 0, 0, 1, 1, 1]);
    let tokens = Tensor::from_slice(&[1i64, 11, 12, 1, 13, 14]);
    let (a, att_a, _) = m.step(&enc.select(&rows), None, &tokens);
    let (b, att_b, _) = m.step_grouped(&enc, None, &tokens, 3);
    assert!((a - b).abs().max().double_value(&[]) < 1e-5);
    assert!((att_a - att_b).abs().max().double_value(&[]) < 1e-6);
}

#[test]
fn cpu_kernel_steps_equal_libtorch_steps() {
    // float32 weights: within float rounding; bf16 weights (and inputs): within bf16's.
    for (kernels, tol) in [
        (Kernels::Fused, 1e-4),
        (Kernels::Bf16, 5e-2),
        (Kernels::Int8, 2e-1),
    ] {
        cpu_kernel_steps_equal_libtorch_steps_with(kernels, tol);
    }
}

fn cpu_kernel_steps_equal_libtorch_steps_with(kernels: Kernels, tol: f64) {
    for tied in [false, true] {
        tch::manual_seed(11);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut cfg = ModelConfig::preset("tiny", 40).unwrap();
        cfg.tied_output = tied;
        cfg.embedding_size = cfg.hidden_size;
        cfg.init_range = 0.5;
        let m = Seq2Seq::new(&vs.root(), &cfg).unwrap();
        let dec = m.cpu_decoder(kernels).expect("float32 CPU model");
        let src = ids(&[5, 6, 7, 8, 9, 10, 0, 0], 2);
        let enc = m.encode(&src, &Tensor::from_slice(&[4i64, 2]), false);
        // Two hypotheses per sentence, then reordered (and repeated) rows, as beam search does.
        let steps = [[1i64, 11, 1, 13], [12, 14, 15, 16], [17, 18, 19, 20]];
        let reorder = [1usize, 1, 2, 3];
        let (mut st_t, mut st_c): (Option<DecoderState>, Option<CpuState>) = (None, None);
        // Buffers kept from step to step start with stale values (NaN), longer than a step
        // needs: every one the step reads must be overwritten.
        let mut buffers = StepBuffers {
            logits: vec![f32::NAN; 4096],
            gates: vec![f32::NAN; 4096],
            query: vec![f32::NAN; 4096],
            spare: vec![vec![f32::NAN; 4096]; 3],
        };
        tch::no_grad(|| {
            for (t, tok) in steps.iter().enumerate() {
                let tokens = Tensor::from_slice(tok);
                let (want, att_w, st) =
                    m.step_logits(&enc, st_t.as_ref(), &tokens, 2, Kernels::Libtorch);
                let (att_g, sc) = m
                    .step_cpu(&dec, &enc, st_c.as_ref(), &tokens, 2, &mut buffers)
                    .unwrap();
                let got = Tensor::from_slice(buffers.logits()).view([4, 40]);
                let d = (got - want).abs().max().double_value(&[]);
                assert!(
                    d < tol,
                    "{kernels:?} tied {tied}, step {t}: logits differ by {d}"
                );
                let da = (att_g - att_w).abs().max().double_value(&[]);
                assert!(da < tol / 10.0, "{kernels:?} attention differs by {da}");
                let index = Tensor::from_slice(&reorder.map(|r| r as i64));
                st_t = Some(st.select(&index));
                // Picking rows twice before a step (a search that joins sentences does) picks
                // what the two picks make together: [3, 2, 1, 0] then [2, 2, 1, 0] is `reorder`.
                st_c = Some(match t % 2 {
                    0 => sc.select(&reorder),
                    _ => sc.select(&[3, 2, 1, 0]).select(&[2, 2, 1, 0]),
                });
            }
        });
    }
}

#[test]
fn decoder_dropout_sites_follow_the_config() {
    for (sites, dropped) in [
        (DecoderDropout::Extended, true),
        (DecoderDropout::Gnmt, false),
    ] {
        tch::manual_seed(4);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut cfg = ModelConfig::preset("tiny", 40).unwrap();
        cfg.dropout = 0.5;
        cfg.decoder_dropout = sites;
        let m = Seq2Seq::new(&vs.root(), &cfg).unwrap();
        let src = ids(&[5, 6, 7, 8, 9, 10, 0, 0], 2);
        let enc = m.encode(&src, &Tensor::from_slice(&[4i64, 2]), true);
        let tgt = ids(&[1, 11, 12, 13, 1, 14, 15, 16], 2);
        let (out, _, _) = m.decode_hidden(&enc, &tgt, None, true, 1, Kernels::Fused);
        // Dropout before the classifier zeroes about half of the top layer's outputs; an LSTM
        // output (plus its residual) is never exactly zero.
        let zeros = out.eq(0.0).sum(Kind::Int64).int64_value(&[]) as f64 / out.numel() as f64;
        if dropped {
            assert!((0.3..0.7).contains(&zeros), "{sites:?}: {zeros}");
        } else {
            assert_eq!(zeros, 0.0, "{sites:?}");
        }
        // Either way, nothing is dropped outside training.
        let (eval, _, _) = m.decode_hidden(&enc, &tgt, None, false, 1, Kernels::Fused);
        assert_eq!(eval.eq(0.0).sum(Kind::Int64).int64_value(&[]), 0);
    }
    // Model directories written before the setting existed read as the extended sites.
    let old: ModelConfig = serde_json::from_str(r#"{"vocab_size": 100}"#).unwrap();
    assert_eq!(old.decoder_dropout, DecoderDropout::Extended);
}

#[test]
fn device_specs_parse_or_say_why_not() {
    assert_eq!("cpu".parse::<DeviceSpec>().unwrap().0, Device::Cpu);
    for bad in ["tpu", "cuda:x"] {
        let e = bad.parse::<DeviceSpec>().unwrap_err();
        assert!(e.contains(bad) && e.contains("cuda:N"), "{e}");
    }
    if !tch::Cuda::is_available() {
        let e = "cuda:1".parse::<DeviceSpec>().unwrap_err();
        assert!(e.contains("gnmt doctor"), "{e}");
    }
}

/// A float32 model whose encoder has a residual layer, for the int8 tests.
fn int8_test_model(preset: &str, vocab: i64, shared: bool) -> (nn::VarStore, Seq2Seq) {
    tch::manual_seed(13);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut cfg = ModelConfig::preset(preset, vocab).unwrap();
    cfg.encoder_layers = 4;
    cfg.shared_embeddings = shared;
    cfg.init_range = 0.5;
    let m = Seq2Seq::new(&vs.root(), &cfg).unwrap();
    (vs, m)
}

#[test]
fn the_encoder_on_gnmt_kernels_follows_libtorch_s() {
    // float32 within float rounding; bf16 within bf16's; int8 within its quantization.
    for (kernels, tol) in [
        (Kernels::Fused, 1e-4),
        (Kernels::Bf16, 0.03),
        (Kernels::Int8, 0.05),
    ] {
        for shared in [true, false] {
            encoder_on_kernels_follows_libtorch(kernels, tol, shared);
        }
    }
}

fn encoder_on_kernels_follows_libtorch(kernels: Kernels, tol: f64, shared: bool) {
    let (_vs, m) = int8_test_model("tiny", 40, shared);
    assert!(m.config.residual_at(3, true), "a residual encoder layer");
    let dec = m.cpu_decoder(kernels).expect("a float32 CPU model");
    let sources = vec![
        vec![5u32, 6, 7, 8],
        vec![9, 10],
        vec![11, 12, 13, 14, 15, 16],
    ];
    tch::no_grad(|| {
        let want = m.encode_sources(None, &sources, Device::Cpu).unwrap();
        let got = m.encode_sources(Some(&dec), &sources, Device::Cpu).unwrap();
        assert_eq!(got.outputs.size(), want.outputs.size());
        assert!(got.pad_mask.equal(&want.pad_mask), "padding");
        // Real positions only: padding is masked out of the attention.
        for (i, s) in sources.iter().enumerate() {
            let n = s.len() as i64;
            let (g, w) = (
                got.outputs.get(i as i64).narrow(0, 0, n),
                want.outputs.get(i as i64).narrow(0, 0, n),
            );
            let d = (&g - &w).abs().max().double_value(&[]);
            let scale = w.abs().max().double_value(&[]);
            assert!(
                d < tol * scale.max(1.0),
                "{kernels:?} shared {shared}, sentence {i}: {d} (values up to {scale})"
            );
            let (g, w) = (
                got.keys.get(i as i64).narrow(0, 0, n),
                want.keys.get(i as i64).narrow(0, 0, n),
            );
            let d = (&g - &w).abs().max().double_value(&[]);
            assert!(
                d < tol * w.abs().max().double_value(&[]).max(1.0),
                "keys: {d}"
            );
        }
    });
}

#[test]
fn an_int8_model_file_loads_at_a_quarter_of_the_memory_and_runs_as_int8() {
    let (vs, m) = int8_test_model("small", 2000, true);
    let dir = std::env::temp_dir().join(format!("gnmt-int8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string(&m.config).unwrap(),
    )
    .unwrap();
    m.save_int8(&vs, &dir.join(INT8_FILE)).unwrap();
    let (vs8, m8) = load_model_dir(&dir, Device::Cpu).unwrap();
    assert!(m8.is_int8() && !m.is_int8());
    // Every float32 copy of a quantized matrix is released; what stays is the attention.
    let float_bytes =
        |vs: &nn::VarStore| -> usize { vs.variables().values().map(|t| t.numel() * 4).sum() };
    let dec8 = m8
        .cpu_decoder(Kernels::Fused)
        .expect("an int8 model packs itself");
    let resident = float_bytes(&vs8) + dec8.weight_bytes();
    let full = float_bytes(&vs);
    assert!(
        resident * 10 <= full * 3,
        "int8 model {resident} bytes, float32 {full}"
    );
    // The same steps as the float32 model at int8, bit for bit.
    let dec = m.cpu_decoder(Kernels::Int8).unwrap();
    let sources = vec![vec![5u32, 6, 7, 8], vec![9, 10, 1999]];
    tch::no_grad(|| {
        let e = m.encode_sources(Some(&dec), &sources, Device::Cpu).unwrap();
        let e8 = m8
            .encode_sources(Some(&dec8), &sources, Device::Cpu)
            .unwrap();
        assert!(e.outputs.equal(&e8.outputs), "encoder outputs");
        let tokens = Tensor::from_slice(&[1i64, 1]);
        let (mut a, mut b) = (StepBuffers::default(), StepBuffers::default());
        let (att_a, _) = m.step_cpu(&dec, &e, None, &tokens, 1, &mut a).unwrap();
        let (att_b, _) = m8.step_cpu(&dec8, &e8, None, &tokens, 1, &mut b).unwrap();
        assert_eq!(a.logits(), b.logits(), "logits");
        assert!(att_a.equal(&att_b), "attention");
    });
    // A damaged file is refused, naming it.
    let path = dir.join(INT8_FILE);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_model_dir(&dir, Device::Cpu).unwrap_err().to_string();
    assert!(err.contains(INT8_FILE) && err.contains("damaged"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn cpu_dropout_scales_what_it_keeps_follows_the_seed_and_passes_gradients_through_its_mask() {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut cfg = ModelConfig::preset("tiny", 40).unwrap();
    cfg.dropout = 0.25;
    let m = Seq2Seq::new(&vs.root(), &cfg).unwrap();
    for kind in [Kind::Float, Kind::BFloat16] {
        let x = Tensor::rand([32, 16, 64], (Kind::Float, Device::Cpu))
            .g_add_scalar(0.5)
            .to_kind(kind)
            .set_requires_grad(true);
        let run = |seed: i64| {
            tch::manual_seed(seed);
            m.dropout(x.shallow_clone(), true)
        };
        let (a, b, c) = (run(3), run(3), run(4));
        assert!(a.equal(&b), "{kind:?}: the same seed, another mask");
        assert!(!a.equal(&c), "{kind:?}: another seed, the same mask");
        assert_eq!(a.kind(), kind);
        // Each element is dropped (0) or scaled by 1 / (1 - p), about a quarter dropped.
        let kept = a.ne(0.0);
        let scaled = (&x * (1.0 / 0.75)).to_kind(Kind::Float);
        let tol = if kind == Kind::Float { 1e-6 } else { 2e-2 };
        let err = (a.to_kind(Kind::Float) - &scaled * kept.to_kind(Kind::Float))
            .abs()
            .max()
            .double_value(&[]);
        assert!(err < tol, "{kind:?}: {err}");
        let dropped = 1.0
            - kept
                .to_kind(Kind::Float)
                .mean(Kind::Float)
                .double_value(&[]);
        assert!((dropped - 0.25).abs() < 0.02, "{kind:?}: {dropped}");
        // The gradient is the mask: 1 / (1 - p) where kept, 0 where dropped.
        a.sum(Kind::Float).backward();
        let grad = x.grad().to_kind(Kind::Float);
        let expect = kept.to_kind(Kind::Float) * (1.0 / 0.75);
        let err = (grad - expect).abs().max().double_value(&[]);
        assert!(err < tol, "{kind:?}: gradient off by {err}");
        // Outside training, nothing changes.
        assert!(m.dropout(x.shallow_clone(), false).equal(&x));
    }
}

#[test]
fn forward_flops_count_each_weight_once_per_position() {
    let (vs, m) = tiny();
    let (src, tgt) = (7usize, 5usize);
    let f = m.config.forward_flops(src, tgt);
    // An LSTM's or the classifier's weight matrix is one multiply-add per entry and position.
    let weights = |prefix: &str| -> f64 {
        vs.variables()
            .iter()
            .filter(|(n, _)| n.starts_with(prefix) && n.contains("weight"))
            .map(|(_, t)| t.numel() as f64)
            .sum()
    };
    assert_eq!(f.encoder, 2.0 * src as f64 * weights("encoder."));
    assert_eq!(f.decoder, 2.0 * tgt as f64 * weights("decoder.layers."));
    assert_eq!(
        f.classifier,
        2.0 * tgt as f64 * weights("decoder.classifier.")
    );
    // tiny: hidden 16, 8 units: keys 7*16*8, per target position query 16*8, scores 7*8,
    // context 7*16.
    let (h, a, s, t) = (16.0, 8.0, 7.0, 5.0);
    assert_eq!(f.attention, 2.0 * (s * h * a + t * (h * a + s * a + s * h)));
    assert_eq!(
        f.total(),
        f.encoder + f.attention + f.decoder + f.classifier
    );
}

#[test]
fn word_dropout_zeroes_whole_embeddings_in_training_only() {
    let vs = nn::VarStore::new(Device::Cpu);
    let mut cfg = ModelConfig::preset("tiny", 40).unwrap();
    cfg.word_dropout = 0.3;
    let m = Seq2Seq::new(&vs.root(), &cfg).unwrap();
    let x = Tensor::rand([16, 40, 8], (Kind::Float, Device::Cpu)).g_add_scalar(0.5);
    tch::manual_seed(5);
    let y = m.word_dropout(x.shallow_clone(), true);
    // A word's vector is either all zero or all scaled by 1 / (1 - p): never partly dropped.
    let zero_rows = y.eq(0.0).all_dim(2, false);
    let kept_rows = y.ne(0.0).all_dim(2, false);
    let whole = zero_rows.logical_or(&kept_rows).all().int64_value(&[]);
    assert_eq!(whole, 1, "a word dropped in part");
    let dropped = zero_rows
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[]);
    assert!((dropped - 0.3).abs() < 0.06, "{dropped}");
    let scaled = &x * (1.0 / 0.7) * kept_rows.unsqueeze(2).to_kind(Kind::Float);
    let err = (&y - scaled).abs().max().double_value(&[]);
    assert!(err < 1e-6, "{err}");
    assert!(m.word_dropout(x.shallow_clone(), false).equal(&x));
    // The encoder applies it to its source: with p near 1 almost every word is unseen, so the
    // training encoding differs from the evaluation one although element dropout is off.
    let mut cfg = cfg.clone();
    cfg.word_dropout = 0.9;
    let vs = nn::VarStore::new(Device::Cpu);
    let m = Seq2Seq::new(&vs.root(), &cfg).unwrap();
    let src = ids(&[5, 6, 7, 8, 9, 10, 0, 0], 2);
    let lens = Tensor::from_slice(&[4i64, 2]);
    let train = m.encode(&src, &lens, true).outputs;
    let eval = m.encode(&src, &lens, false).outputs;
    assert!(!train.allclose(&eval, 1e-6, 1e-6, false));
    assert!(eval.equal(&m.encode(&src, &lens, false).outputs));
    // And the decoder to its target inputs, whatever its dropout sites.
    let enc = m.encode(&src, &lens, false);
    let tgt = ids(&[1, 11, 12, 13, 1, 14, 15, 16], 2);
    let hidden = |train| {
        m.decode_hidden(&enc, &tgt, None, train, 1, Kernels::Fused)
            .0
    };
    assert!(!hidden(true).allclose(&hidden(false), 1e-6, 1e-6, false));
    // Configs written before the setting existed read as off; a bad value is refused.
    let old: ModelConfig = serde_json::from_str(r#"{"vocab_size": 100}"#).unwrap();
    assert_eq!(old.word_dropout, 0.0);
    cfg.word_dropout = 1.0;
    assert!(cfg.validate().unwrap_err().contains("word_dropout"));
}

/// `zero_state` is tch's initial LSTM state (zeros, `[layers, B, H]`, the weights' kind) on the
/// batch's device, so running from it equals tch's own `seq`. (The device is what it fixes: a
/// model built on the CPU and moved to a GPU; scripts/gpu-check.sh runs that through
/// `gnmt doctor --smoke`, which no CPU-only test can.)
#[test]
fn zero_state_is_tchs_initial_state_on_the_batchs_device() {
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let l = nn::lstm(vs.root(), 6, 4, Default::default());
    let x = Tensor::randn([3, 5, 6], (Kind::Float, Device::Cpu));
    let s = zero_state(&l, &x);
    for t in [s.h(), s.c()] {
        assert_eq!(t.size(), [1, 3, 4]);
        assert_eq!((t.device(), t.kind()), (x.device(), Kind::Float));
        assert_eq!(t.abs().sum(Kind::Float).double_value(&[]), 0.0);
    }
    let (ours, _) = l.seq_init(&x, &s);
    let (theirs, _) = l.seq(&x);
    assert!(ours.equal(&theirs));
}
