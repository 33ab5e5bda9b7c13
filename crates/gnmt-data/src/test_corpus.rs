//! A small corpus for the unit tests: a tokenizer and five aligned lines holding a kept pair,
//! an empty side, a kept pair, an over-long source and a kept pair.

use std::path::PathBuf;

use gnmt_tokenizer::SubwordTokenizer;

pub(crate) fn small_corpus() -> (tempfile::TempDir, SubwordTokenizer, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let words = "a man rides a horse in the park near the river ";
    let train: Vec<String> = (0..100).map(|i| format!("{words}{i}")).collect();
    let tok = SubwordTokenizer::train(train.into_iter(), 300, gnmt_tokenizer::VocabKind::Unigram)
        .unwrap();
    let (s, t) = (dir.path().join("s.txt"), dir.path().join("t.txt"));
    let long = words.repeat(20);
    std::fs::write(&s, format!("a man\n\nthe horse\n{long}\nthe river\n")).unwrap();
    std::fs::write(&t, "ein mann\nnicht leer\ndas pferd\nkurz\nder fluss\n").unwrap();
    (dir, tok, s, t)
}
