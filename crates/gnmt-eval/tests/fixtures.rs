//! The libtorch-free `gnmt-eval` binary prints what sacreBLEU 2.6.0 prints (a sample of the
//! fixture command lines that tests/eval.rs runs through `gnmt eval`).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

#[path = "../../../tests/fixtures/bleu/cases.rs"]
mod cases;

#[test]
fn gnmt_eval_binary_matches_sacrebleu_fixtures() {
    let (dir, cases) = cases::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."));
    let sample: Vec<cases::Case> = cases.into_iter().step_by(4).collect();
    assert!(sample.len() >= 25, "{}", sample.len());
    cases::check_all(&sample, |case| {
        let out = Command::new(env!("CARGO_BIN_EXE_gnmt-eval"))
            .current_dir(&dir)
            .args(&case.args)
            .env_remove("SACREBLEU_FORMAT")
            .env_remove("SACREBLEU_SEED")
            .envs(case.env.iter().cloned())
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    });
}
