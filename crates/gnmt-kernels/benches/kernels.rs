//! The fused kernels against the libtorch operators they replace, at the shapes of a beam-5,
//! batch-64 search step of the `small` model (one thread, as a search worker runs them).
//!
//!     cargo bench -p gnmt-kernels
//!     GNMT_MAX_ISA=avx2 cargo bench -p gnmt-kernels -- linear    # the AVX2 builds
use criterion::{criterion_group, criterion_main, Criterion};
use gnmt_kernels::{
    additive_scores, top_candidates, AttentionShape, PackedLinear, PackedLinearBf16, PackedLinearI8,
};
use tch::{Kind, Tensor};

fn attention(c: &mut Criterion) {
    tch::set_num_threads(1);
    let sh = AttentionShape {
        b: 64,
        t: 5,
        s: 20,
        u: 256,
    };
    tch::manual_seed(0);
    let q = Tensor::randn(
        [sh.b as i64, sh.t as i64, sh.u as i64],
        (Kind::Float, tch::Device::Cpu),
    );
    let k = Tensor::randn(
        [sh.b as i64, sh.s as i64, sh.u as i64],
        (Kind::Float, tch::Device::Cpu),
    );
    let v = Tensor::randn([sh.u as i64], (Kind::Float, tch::Device::Cpu)) * 0.1;
    let bias = Tensor::randn([sh.u as i64], (Kind::Float, tch::Device::Cpu)) * 0.1;
    let pad = vec![false; sh.b * sh.s];
    let (qv, kv, vv) = (
        Vec::<f32>::try_from(q.flatten(0, -1)).unwrap_or_default(),
        Vec::<f32>::try_from(k.flatten(0, -1)).unwrap_or_default(),
        Vec::<f32>::try_from(&v).unwrap_or_default(),
    );
    let mut g = c.benchmark_group("attention scores 64x5x20x256");
    g.bench_function("libtorch add, add, tanh, matmul", |bch| {
        bch.iter(|| {
            ((q.unsqueeze(2) + k.unsqueeze(1)) + &bias)
                .tanh()
                .matmul(&v)
        })
    });
    let mut out = vec![0f32; sh.b * sh.t * sh.s];
    g.bench_function("fused", |bch| {
        bch.iter(|| additive_scores(&qv, &kv, &vv, &pad, sh, -1e4, &mut out))
    });
    g.finish();
}

fn expansion(c: &mut Criterion) {
    tch::set_num_threads(1);
    let (groups, beam, vocab) = (64i64, 5i64, 8000i64);
    tch::manual_seed(0);
    let logits = Tensor::randn([groups * beam, vocab], (Kind::Float, tch::Device::Cpu)) * 3.0;
    let scores = Tensor::randn([groups * beam], (Kind::Float, tch::Device::Cpu));
    let (lv, sv) = (
        Vec::<f32>::try_from(logits.flatten(0, -1)).unwrap_or_default(),
        Vec::<f32>::try_from(&scores).unwrap_or_default(),
    );
    let mut g = c.benchmark_group("expansion 64x5x8000, top 10");
    g.bench_function("libtorch log_softmax, add, topk", |bch| {
        bch.iter(|| {
            (logits.log_softmax(-1, Kind::Float) + scores.unsqueeze(1))
                .view([groups, beam * vocab])
                .topk(10, -1, true, true)
        })
    });
    g.bench_function("fused", |bch| {
        bch.iter(|| top_candidates(&lv, vocab as usize, &sv, beam as usize, 10))
    });
    g.finish();
}

fn linear(c: &mut Criterion) {
    tch::set_num_threads(1);
    tch::manual_seed(0);
    for (m, k, n) in [(320i64, 256i64, 8000i64), (8, 256, 8000), (320, 768, 1024)] {
        let w = Tensor::randn([n, k], (Kind::Float, tch::Device::Cpu)) * 0.1;
        let b = Tensor::randn([n], (Kind::Float, tch::Device::Cpu));
        let x = Tensor::randn([m, k], (Kind::Float, tch::Device::Cpu));
        let packed = PackedLinear::new(
            &Vec::<f32>::try_from(w.flatten(0, -1)).unwrap_or_default(),
            Some(&Vec::<f32>::try_from(&b).unwrap_or_default()),
            n as usize,
            k as usize,
        );
        let xv = Vec::<f32>::try_from(x.flatten(0, -1)).unwrap_or_default();
        let mut out = vec![0f32; (m * n) as usize];
        let mut g = c.benchmark_group(format!("linear {m}x{k} -> {n}"));
        g.bench_function("libtorch linear (addmm)", |bch| {
            bch.iter(|| x.linear(&w, Some(&b)))
        });
        g.bench_function("packed", |bch| {
            bch.iter(|| packed.forward(&xv, m as usize, &mut out))
        });
        // The same weights in bf16 (AVX512-BF16 where the CPU has it) and in int8 (VNNI, AVX2).
        let wv = Vec::<f32>::try_from(w.flatten(0, -1)).unwrap_or_default();
        let bv = Vec::<f32>::try_from(&b).unwrap_or_default();
        let bf16 = PackedLinearBf16::new(&wv, Some(&bv), n as usize, k as usize);
        g.bench_function("packed bf16", |bch| {
            bch.iter(|| bf16.forward(&xv, m as usize, &mut out))
        });
        let int8 = PackedLinearI8::new(&wv, Some(&bv), n as usize, k as usize);
        g.bench_function("packed int8", |bch| {
            bch.iter(|| int8.forward(&xv, m as usize, &mut out))
        });
        g.finish();
    }
}

criterion_group!(benches, attention, expansion, linear);
criterion_main!(benches);
