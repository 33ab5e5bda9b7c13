//! `gnmt eval -t NAME -l PAIR`: on a prepared sacreBLEU cache (tests/fixtures/testsets, made by
//! scripts/testset-fixtures.sh with sacreBLEU 2.6.0 itself), every recorded command line gives
//! sacreBLEU's stdout and exit code, the text files gnmt writes into the cache are the ones
//! sacreBLEU wrote, and nothing is downloaded (the stand-in archives are taken as done).

#![allow(clippy::unwrap_used)]

mod common;
use common::*;
#[path = "fixtures/bleu/cases.rs"]
#[allow(dead_code)]
mod cases;

use std::path::Path;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Every file under `dir` but the raw downloads and locks, relative to it.
fn text_files(dir: &Path, base: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            if name != "raw" {
                text_files(&e.path(), base, out);
            }
        } else if !name.ends_with(".lock") {
            out.push(e.path().strip_prefix(base).unwrap().display().to_string());
        }
    }
}

#[test]
fn test_sets_by_name_match_sacrebleu_on_a_prepared_cache() {
    let (dir, cases) = cases::load_dir(repo().join("tests/fixtures/testsets"));
    assert!(cases.len() >= 20, "the fixture cases are missing");
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    copy_dir(&dir.join("cache"), &cache);
    cases::check_all(&cases, |case| {
        let out = run(gnmt()
            .current_dir(&dir)
            .env("SACREBLEU", &cache)
            .arg("eval")
            .args(&case.args));
        (out.status.code(), stdout(&out), stderr(&out))
    });

    // The text files: the same names and bytes as sacreBLEU's.
    let expected_dir = dir.join("expected-text");
    let (mut want, mut got) = (Vec::new(), Vec::new());
    text_files(&expected_dir, &expected_dir, &mut want);
    text_files(&cache, &cache, &mut got);
    want.sort();
    got.sort();
    assert_eq!(got, want);
    for f in &want {
        assert_eq!(
            std::fs::read(cache.join(f)).unwrap(),
            std::fs::read(expected_dir.join(f)).unwrap(),
            "{f}"
        );
    }
}

#[test]
fn test_set_errors_name_the_problem() {
    let dir = repo().join("tests/fixtures/testsets");
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["-t", "wmt99", "-l", "en-de", "-i", "hyp14.de"],
            "unknown test set \"wmt99\"",
        ),
        (&["-t", "wmt14", "-l", "xx-yy", "-i", "hyp14.de"], "en-de"),
        (&["-t", "wmt14", "-i", "hyp14.de"], "language pair (-l)"),
        (
            &["hyp14.de", "-t", "wmt14", "-l", "en-de", "-i", "hyp14.de"],
            "not both",
        ),
        (&["--echo", "src"], "--echo needs a test set"),
        (
            &["hyp14.de", "-i", "hyp14.de", "-ol", "de"],
            "need a test set",
        ),
        (
            &[
                "-t",
                "wmt17",
                "-l",
                "en-ja",
                "-i",
                "hyp14.de",
                "--download",
                "nothing",
            ],
            "unknown test set \"nothing\"",
        ),
    ];
    for (args, want) in cases {
        let out = run(gnmt()
            .current_dir(&dir)
            .env("SACREBLEU", tmp.path())
            .arg("eval")
            .args(*args));
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
    }
    // A model file that is not one: an error naming it, not a wrong score.
    let cache = tmp.path().join("broken");
    std::fs::create_dir_all(cache.join("models")).unwrap();
    std::fs::write(cache.join("models/flores200sacrebleuspm"), "not a model").unwrap();
    let out = run(gnmt().current_dir(&dir).env("SACREBLEU", &cache).args([
        "eval",
        "hyp14.de",
        "-i",
        "hyp14.de",
        "-tok",
        "flores200",
    ]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("SentencePiece model"),
        "{}",
        stderr(&out)
    );
}
