//! The libtorch-free `gnmt-eval` binary prints what sacreBLEU 2.6.0 prints (a sample of the
//! fixture command lines that tests/eval.rs runs through `gnmt eval`).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

#[test]
fn gnmt_eval_binary_matches_sacrebleu_fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bleu");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let version = format!("gnmt-bleu-{}", env!("CARGO_PKG_VERSION"));
    let all = cases.as_array().unwrap();
    let mut n = 0;
    for case in all.iter().step_by(4) {
        let args: Vec<&str> = case["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let expected = case["stdout"]
            .as_str()
            .unwrap()
            .replace(":2.6.0", &format!(":{version}"))
            .replace("\"2.6.0\"", &format!("\"{version}\""));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_gnmt-eval"));
        cmd.current_dir(&dir)
            .args(&args)
            .env_remove("SACREBLEU_FORMAT")
            .env_remove("SACREBLEU_SEED");
        if let Some(env) = case.get("env").and_then(|e| e.as_object()) {
            for (k, v) in env {
                cmd.env(k, v.as_str().unwrap());
            }
        }
        let out = cmd.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(case["code"].as_i64().unwrap() as i32),
            "{args:?}"
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            expected,
            "gnmt-eval {}",
            args.join(" ")
        );
        n += 1;
    }
    assert!(n >= 25, "{n}");
}
