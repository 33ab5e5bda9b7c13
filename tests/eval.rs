//! `gnmt eval` gives byte-for-byte sacreBLEU 2.6.0 output (version field aside) on the fixtures
//! that `scripts/bleu-fixtures.sh` generated with sacreBLEU itself.

#![allow(clippy::unwrap_used)]

mod common;
use common::*;
#[path = "fixtures/bleu/cases.rs"]
mod cases;

#[test]
fn eval_matches_sacrebleu_fixtures() {
    let (dir, cases) = cases::load(&repo());
    cases::check_all(&cases, |case| {
        let out = run(gnmt()
            .current_dir(&dir)
            .arg("eval")
            .args(&case.args)
            .envs(case.env.iter().cloned()));
        (out.status.code(), stdout(&out), stderr(&out))
    });
}

#[test]
fn eval_reads_stdin_and_honours_sacrebleu_format() {
    let dir = repo().join("tests/fixtures/bleu");
    let mut child = gnmt()
        .current_dir(&dir)
        .args(["eval", "ref.de", "-b"])
        .env("SACREBLEU_FORMAT", "text")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let data = std::fs::read(dir.join("ref.de")).unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&out).trim(), "100.0");
}

#[test]
fn eval_refuses_mismatched_lengths_and_bad_files() {
    let dir = repo().join("tests/fixtures/bleu");
    let out = run(gnmt()
        .current_dir(&dir)
        .args(["eval", "ref.de", "-i", "wmt.hyp"]));
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("wmt.hyp") && e.contains("50") && e.contains("ref.de") && e.contains("400"),
        "{e}"
    );

    let out = run(gnmt()
        .current_dir(&dir)
        .args(["eval", "ref.de", "-i", "does-not-exist.txt"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("does-not-exist.txt"));

    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.txt");
    std::fs::write(&bad, b"fine\nnot \xff utf8\n").unwrap();
    let out = run(gnmt()
        .current_dir(&dir)
        .args(["eval", "adv.ref", "-i"])
        .arg(&bad));
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("bad.txt") && e.contains("line 2"), "{e}");
    assert!(!e.contains("panicked"));
}
