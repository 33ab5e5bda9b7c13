//! Helpers shared by the end-to-end tests: run the `gnmt` binary as a user would.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn gnmt() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gnmt"));
    c.env("OMP_WAIT_POLICY", "PASSIVE")
        .env_remove("SACREBLEU_FORMAT")
        .env_remove("SACREBLEU_SEED")
        .env_remove("RUST_LOG")
        .env_remove("GNMT_MAX_ISA");
    c
}

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("failed to start gnmt")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Whether `gnmt doctor`'s output says bf16 beats float32 on this CPU (its `cpu bf16 faster
/// than fp32` line, the one the recipe scripts read); None where the line is missing.
pub fn doctor_bf16_beats_fp32(doctor: &str) -> Option<bool> {
    doctor
        .lines()
        .find_map(|l| l.strip_prefix("cpu bf16 faster than fp32: "))
        .map(|v| v == "yes")
}
