//! Tokenization is lossless on every line of every shared corpus: `decode(encode(x))` equals
//! `x` after the documented normalization (NFKC, whitespace runs collapsed, ends trimmed), for
//! both vocabulary kinds, including languages and scripts the vocabulary never saw (French and
//! Czech text through an English-German vocabulary: unseen characters fall back to bytes).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use gnmt_tokenizer::{SubwordTokenizer, VocabKind, UNK};
use rayon::prelude::*;

fn shared() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    p.join("multi30k/train.en").exists().then_some(p)
}

/// The repository's own slice of Multi30k (tests/fixtures/m30k), checked where the shared
/// corpora are not beside the checkout: the test never passes on nothing.
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn corpus_files(root: &Path, dirs: &[&str]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in dirs {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_none_or(|x| x != "md") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_shared_line_roundtrips_with_every_kind() {
    let (m30k, files, min_lines) = match shared() {
        Some(root) => {
            let dirs = ["multi30k", "tatoeba-en-de", "wmt-sample-en-de"];
            (root.join("multi30k"), corpus_files(&root, &dirs), 400_000)
        }
        None => {
            eprintln!("../shared/data not present: checking tests/fixtures/m30k instead");
            let root = fixture();
            (root.join("m30k"), corpus_files(&root, &["m30k"]), 3_000)
        }
    };
    let mut train = gnmt_data::text::read_lines(&m30k.join("train.en")).unwrap();
    train.extend(gnmt_data::text::read_lines(&m30k.join("train.de")).unwrap());
    assert!(files.len() >= 4, "{files:?}");
    for kind in [VocabKind::Unigram, VocabKind::Bpe, VocabKind::Wordpiece] {
        let tok = SubwordTokenizer::train(train.clone().into_iter(), 4000, kind).unwrap();
        let mut lines = 0usize;
        for f in &files {
            let text = gnmt_data::text::read_lines(f).unwrap();
            lines += text.len();
            let bad: Vec<(usize, String)> = text
                .par_iter()
                .enumerate()
                .filter_map(|(i, l)| {
                    let ids = tok.encode(l).unwrap();
                    let back = tok.decode(&ids).unwrap();
                    let lossless = back == tok.normalize(l) && !ids.contains(&UNK);
                    (!lossless).then(|| (i + 1, l.clone()))
                })
                .collect();
            assert!(
                bad.is_empty(),
                "{kind:?}: {}: lines {:?}",
                f.display(),
                &bad[..bad.len().min(3)]
            );
        }
        assert!(lines > min_lines, "{lines}");
    }
}
