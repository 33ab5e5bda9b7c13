//! Against Google's sentencepiece: tests/fixtures/spm holds three models it trained and the
//! pieces its `EncodeAsPieces` gave for 264 lines (scripts/spm-fixtures.sh).

use super::*;

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/spm")
}

#[test]
fn pieces_match_sentencepiece_for_unigram_bpe_and_plain_models() {
    let dir = fixtures();
    let lines: Vec<String> = std::fs::read_to_string(dir.join("lines.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let models = expected["pieces"].as_object().unwrap();
    assert_eq!(models.len(), 3);
    let mut failures = Vec::new();
    for (name, want) in models {
        let sp = SentencePiece::open(&dir.join(format!("{name}.model"))).unwrap();
        let want = want.as_array().unwrap();
        assert_eq!(want.len(), lines.len());
        for (line, want) in lines.iter().zip(want) {
            let got = sp.encode_as_pieces(line).join(" ");
            if got != want.as_str().unwrap() {
                failures.push(format!("{name}: {line:?}\n  want {want}\n  got  {got:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} lines differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn model_types_and_broken_files() {
    let dir = fixtures();
    assert_eq!(
        SentencePiece::open(&dir.join("bpe.model"))
            .unwrap()
            .model_type(),
        ModelType::Bpe
    );
    assert!(SentencePiece::from_bytes(b"not a model").is_err());
    assert!(SentencePiece::from_bytes(&[]).is_err());
    let err = SentencePiece::open(&dir.join("missing.model"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.model"), "{err}");
    // A truncated file is an error, not a panic.
    let data = std::fs::read(dir.join("unigram.model")).unwrap();
    assert!(SentencePiece::from_bytes(&data[..data.len() / 2]).is_err());
}
