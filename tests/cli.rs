//! The `gnmt` binary itself: version, help, doctor, unbuilt subcommands, linking.

#![allow(clippy::unwrap_used)]

mod common;
use common::*;

#[test]
fn version_and_help_list_subcommands() {
    let out = run(gnmt().arg("--version"));
    assert!(out.status.success());
    assert!(stdout(&out).starts_with("gnmt "));
    let out = run(gnmt().arg("--help"));
    let h = stdout(&out);
    for sub in [
        "eval",
        "vocab",
        "tokenize",
        "detokenize",
        "prepare",
        "model-info",
        "train",
        "translate",
        "average",
        "quantize",
        "serve",
        "tune",
        "check-precision",
        "plot",
        "bench",
        "doctor",
    ] {
        assert!(h.contains(sub), "--help lacks {sub}:\n{h}");
    }
}

#[test]
fn doctor_reports_libtorch_and_devices() {
    let out = run(gnmt().arg("doctor"));
    assert!(out.status.success(), "{}", stderr(&out));
    let s = stdout(&out);
    for key in [
        "libtorch version: 2.11.0",
        "cuda available:",
        "cuda devices:",
        "cudnn:",
        "cpu threads:",
        "cpu features:",
        "cpu kernels:",
        "distributed: c10d TCPStore rendezvous, Gloo",
        "bf16 on",
        "cpu translation, fp32: gnmt-kernels, float32",
        "cpu translation, faster",
    ] {
        assert!(s.contains(key), "doctor lacks {key}:\n{s}");
    }
    // The bf16 line the training scripts read agrees with the features listed.
    let features = s.lines().find_map(|l| l.strip_prefix("cpu features: "));
    let has = features.is_some_and(|f| f.split(' ').any(|x| x == "avx512bf16" || x == "amx-bf16"));
    let line = format!("cpu bf16 instructions: {}", if has { "yes" } else { "no" });
    assert!(s.lines().any(|l| l == line), "doctor lacks {line}:\n{s}");
    // The line the training scripts read: bf16 pays only with those instructions, and exactly
    // where translation lists bf16 among its faster paths (not on Intel without AMX).
    let pays = doctor_bf16_beats_fp32(&s);
    assert!(pays.is_some(), "doctor lacks the bf16 speed line:\n{s}");
    let pays = pays == Some(true);
    assert!(!pays || has, "{s}");
    let paths = s
        .lines()
        .find_map(|l| l.strip_prefix("cpu translation, faster"))
        .unwrap_or_default();
    assert_eq!(paths.contains(" bf16: "), pays, "{s}");
    // GNMT_MAX_ISA caps the kernels' build, and doctor says so.
    let out = run(gnmt().arg("doctor").env("GNMT_MAX_ISA", "portable"));
    let s = stdout(&out);
    assert!(
        s.contains("cpu kernels: portable (GNMT_MAX_ISA=portable"),
        "{s}"
    );
    // Capped at AVX2 (on a CPU that has it), int8 is the faster path: on AVX-VNNI where the CPU
    // has it (an AVX2-class extension the cap keeps), else on 16-bit products.
    let out = run(gnmt().arg("doctor").env("GNMT_MAX_ISA", "avx2"));
    let s = stdout(&out);
    if s.contains("cpu kernels: avx2") {
        let features = s.lines().find_map(|l| l.strip_prefix("cpu features: "));
        let avx_vnni = features.is_some_and(|f| f.split(' ').any(|x| x == "avxvnni"));
        let build = if avx_vnni {
            "AVX-VNNI"
        } else {
            "AVX2, 16-bit products"
        };
        let faster = s.lines().find(|l| l.starts_with("cpu translation, faster"));
        let faster = faster.unwrap_or_else(|| panic!("no faster paths line:\n{s}"));
        let want = format!("int8: gnmt-kernels, encoder, decoder and embeddings in int8 ({build})");
        assert!(faster.contains(&want), "{want}:\n{s}");
    }
}

fn readelf(binary: &str) -> String {
    let out = std::process::Command::new("readelf")
        .arg("-d")
        .arg(binary)
        .output();
    // readelf comes with binutils, which the build's linker needs: it is always there.
    let out = out.unwrap_or_else(|e| panic!("readelf (binutils) is needed for this test: {e}"));
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

#[test]
fn the_launcher_links_no_libtorch_and_gnmt_torch_links_it_with_cuda_and_runpath() {
    let launcher = readelf(env!("CARGO_BIN_EXE_gnmt"));
    assert!(launcher.contains("[libc.so.6]"), "{launcher}");
    assert!(
        !launcher.contains("libtorch") && !launcher.contains("libc10"),
        "{launcher}"
    );
    let s = readelf(env!("CARGO_BIN_EXE_gnmt-torch"));
    assert!(s.contains("RUNPATH") || s.contains("RPATH"), "{s}");
    assert!(s.contains("libtorch_cpu.so"), "{s}");
    // The torch wheel from PyPI carries CUDA; the binary must keep libtorch_cuda as NEEDED.
    let lib_dir = repo().join(".libtorch/lib/libtorch_cuda.so");
    if lib_dir.exists() {
        assert!(
            s.contains("[libtorch_cuda.so]"),
            "libtorch_cuda.so not NEEDED:\n{s}"
        );
    }
}

#[test]
fn bench_prints_json_with_throughput() {
    let train = |extra: &[&str]| {
        let out = run(gnmt()
            .args(["bench", "train", "--preset", "tiny", "--vocab-size", "300"])
            .args([
                "--batch-size",
                "4",
                "--steps",
                "2",
                "--warmup",
                "1",
                "--threads",
                "1",
            ])
            .args(extra));
        assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
        serde_json::from_str::<serde_json::Value>(stdout(&out).trim()).unwrap()
    };
    let v = train(&[]);
    assert_eq!(v["bench"], "train");
    assert!(v["tokens_per_s"].as_f64().unwrap() > 0.0 && v["ms_per_step"].as_f64().unwrap() > 0.0);
    // The products' work per step, and its rate at the measured step time.
    let (gflop, rate, ms) = (
        v["gflop_per_step"].as_f64().unwrap(),
        v["gflop_per_s"].as_f64().unwrap(),
        v["ms_per_step"].as_f64().unwrap(),
    );
    assert!(gflop > 0.0, "{v}");
    assert!((rate - gflop * 1000.0 / ms).abs() <= 1e-6 * rate, "{v}");
    // Mixed precision runs (here on the CPU) and still learns something finite.
    for flag in ["--bf16", "--fp16"] {
        let v = train(&[flag]);
        assert_eq!(v[&flag[2..]], true);
        assert!(v["final_loss"].as_f64().unwrap().is_finite(), "{flag}: {v}");
    }
    // `GNMT_MAX_ISA` as given (None: unset), then the flags.
    let translate_capped = |cap: Option<&str>, extra: &[&str]| {
        let mut cmd = gnmt();
        if let Some(cap) = cap {
            cmd.env("GNMT_MAX_ISA", cap);
        }
        let out = run(cmd
            .args([
                "bench",
                "translate",
                "--preset",
                "tiny",
                "--vocab-size",
                "300",
            ])
            .args([
                "--sentences",
                "6",
                "--batch-size",
                "4",
                "--beam",
                "2",
                "--threads",
                "1",
            ])
            .args(extra));
        assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
        serde_json::from_str::<serde_json::Value>(stdout(&out).trim()).unwrap()
    };
    let translate = |extra: &[&str]| translate_capped(None, extra);
    let v = translate(&[]);
    assert_eq!(v["sentences"], 6);
    assert_eq!(v["fused_kernels"], true);
    assert!(v["generated_tokens"].as_u64().unwrap() >= 6);
    // Without the kernels: the same search through libtorch's operators, the same output.
    let w = translate(&["--no-fused-kernels"]);
    assert_eq!(w["fused_kernels"], false);
    assert_eq!(w["generated_tokens"], v["generated_tokens"]);
    assert_eq!(
        (v["kernels"].as_str(), w["kernels"].as_str()),
        (Some("Fused"), Some("Libtorch"))
    );
    // bf16: the bf16 kernels where the CPU has AVX512-BF16 but no AMX (and the kernels may use
    // AVX-512), else the model cast to bf16 for libtorch (oneDNN's AMX path, or emulated).
    // doctor lists the kernels among the faster paths only where bf16 beats float32 (AMD).
    let doctor = stdout(&run(gnmt().arg("doctor")));
    let bf16_dot = doctor.contains(" avx512bf16")
        && !doctor.contains(" amx-bf16")
        && doctor.contains("cpu kernels: avx512");
    let faster = doctor_bf16_beats_fp32(&doctor) == Some(true);
    assert_eq!(
        bf16_dot && faster,
        doctor.contains("bf16: gnmt-kernels, encoder and decoder weights in bf16 (AVX512-BF16)"),
        "{doctor}"
    );
    let b = translate(&["--bf16"]);
    assert_eq!(
        b["kernels"],
        if bf16_dot { "Bf16" } else { "Fused" },
        "{doctor}"
    );
    assert_eq!(b["sentences"], 6);
    let i = translate(&["--int8"]);
    assert_eq!(
        (i["kernels"].as_str(), i["sentences"].as_u64()),
        (Some("Int8"), Some(6))
    );
    // One by one, timed: latency percentiles, and the same translations as the batches'.
    let p = translate(&["--per-sentence"]);
    let (p50, p99) = (
        p["latency_ms"]["p50"].as_f64().unwrap(),
        p["latency_ms"]["p99"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p99, "{p}");
    assert_eq!(p["generated_tokens"], v["generated_tokens"]);
    assert!(v["latency_ms"].is_null());
    // Capped at AVX2 (one process per build): the same translations as the best build.
    let c = translate_capped(Some("avx2"), &[]);
    assert_ne!(c["isa"], "avx512");
    assert_eq!(c["generated_tokens"], v["generated_tokens"]);
    // A bad preset is an error naming the option.
    let out = run(gnmt().args(["bench", "train", "--preset", "huge"]));
    let e = stderr(&out);
    assert!(
        !out.status.success()
            && e.contains("'huge'")
            && e.contains("--preset")
            && e.contains("small8"),
        "{e}"
    );
}

/// `bench linear`: each asked path at each shape, with its build and a rate that matches its
/// time; and a malformed shape is refused naming it.
#[test]
fn bench_linear_times_each_path_at_each_shape() {
    let out = run(gnmt().args([
        "bench",
        "linear",
        "--shapes",
        "8x64x40,3x100x17",
        "--paths",
        "fp32,int8,libtorch",
        "--seconds",
        "0.01",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["bench"], "linear");
    let results = v["results"].as_array().unwrap();
    let got: Vec<(&str, &str)> = results
        .iter()
        .map(|r| (r["shape"].as_str().unwrap(), r["path"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("8x64x40", "fp32"),
            ("8x64x40", "int8"),
            ("8x64x40", "libtorch fp32 (addmm)"),
            ("3x100x17", "fp32"),
            ("3x100x17", "int8"),
            ("3x100x17", "libtorch fp32 (addmm)"),
        ]
    );
    for r in results {
        let (ms, rate) = (
            r["ms_per_call"].as_f64().unwrap(),
            r["gflops"].as_f64().unwrap(),
        );
        let m: Vec<f64> = r["shape"]
            .as_str()
            .unwrap()
            .split('x')
            .map(|x| x.parse().unwrap())
            .collect();
        let ops = 2.0 * m[0] * m[1] * m[2];
        assert!(
            ms > 0.0 && (rate - ops / (ms * 1e6)).abs() <= 1e-6 * rate,
            "{r}"
        );
        assert!(r["calls"].as_u64().unwrap() >= 3 && !r["build"].as_str().unwrap().is_empty());
    }
    for bad in ["8x64", "8x0x40", "8xtwox40", "100000x100000x8"] {
        let out = run(gnmt().args(["bench", "linear", "--shapes", bad]));
        let e = stderr(&out);
        assert!(
            !out.status.success() && e.contains(bad) && e.contains("--shapes"),
            "{e}"
        );
    }
}

#[test]
fn doctor_smoke_test_runs_on_cpu() {
    let out = run(gnmt().args(["doctor", "--smoke", "--device", "cpu", "--preset", "tiny"]));
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let s = stdout(&out);
    for check in [
        "matmul",
        "lstm forward",
        "lstm backward",
        "tiny loss",
        "all checks passed",
    ] {
        assert!(s.contains(check), "{s}");
    }
}

/// `gnmt eval ... | head -1`: the reader leaves after one line of far more output than a pipe
/// holds. The command must end as a C tool killed by SIGPIPE would (status 141, nothing said),
/// not panic (status 101) or print an error; gnmt-torch's commands go through the same exit.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(&text, "a small test sentence .\n".repeat(20_000)).unwrap();
    let mut child = gnmt()
        .arg("eval")
        .arg(&text)
        .arg("-i")
        .arg(&text)
        .arg("--sentence-level")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("BLEU"), "{first}");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141), "{}", stderr(&out));
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn model_info_json_gives_the_preset_config_and_parameter_counts() {
    let out = run(gnmt().args([
        "model-info",
        "--preset",
        "gnmt4",
        "--vocab",
        "32000",
        "--json",
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let c = &v["config"];
    assert_eq!(
        (c["encoder_layers"].as_i64(), c["hidden_size"].as_i64()),
        (Some(4), Some(1024))
    );
    assert_eq!(c["vocab_size"].as_i64(), Some(32000));
    // NVIDIA's GNMT v2 at a 32k vocabulary: about 160M parameters.
    let total = v["parameters"]["total"].as_i64().unwrap();
    assert!((155_000_000..165_000_000).contains(&total), "{total}");
}

#[test]
fn bad_devices_and_metrics_are_refused_by_the_parser() {
    for args in [
        &["translate", "--model", "m", "--device", "tpu"][..],
        &[
            "bench",
            "translate",
            "--preset",
            "tiny",
            "--device",
            "cuda:x",
        ][..],
        &["eval", "r.txt", "-m", "meteor"][..],
        &["eval", "r.txt", "--tokenize", "mecab"][..],
        &["eval", "r.txt", "-f", "xml"][..],
    ] {
        let out = run(gnmt().args(args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("invalid value"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
}
