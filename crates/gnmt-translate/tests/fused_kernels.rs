//! The beam search with and without gnmt-kernels. Its own test binary: the switch is
//! process-wide, and the other tests of the crate (run in parallel threads) compare scores
//! exactly.

use gnmt_model::{ModelConfig, Seq2Seq};
use gnmt_translate::{translate_batch, SearchConfig};
use tch::{nn, Device};

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
    let search = SearchConfig::default();
    let fused = translate_batch(&m, &srcs, &search, Device::Cpu).unwrap();
    gnmt_kernels::set_enabled(false);
    let plain = translate_batch(&m, &srcs, &search, Device::Cpu).unwrap();
    gnmt_kernels::set_enabled(true);
    for (f, p) in fused.iter().zip(&plain) {
        assert_eq!(f.len(), p.len());
        for (a, b) in f.iter().zip(p) {
            assert_eq!(a.tokens, b.tokens);
            assert!(
                (a.score - b.score).abs() < 1e-4,
                "{} vs {}",
                a.score,
                b.score
            );
        }
    }
}
