//! End to end through the binary on a slice of Multi30k (a copy lives in tests/fixtures/m30k):
//! vocab -> tokenize/detokenize -> train -> resume -> translate -> eval, and the refusals.

#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use std::path::{Path, PathBuf};

fn data() -> std::path::PathBuf {
    repo().join("tests/fixtures/m30k")
}

fn losses(run: &Path) -> Vec<(i64, f64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            Some((v["step"].as_i64()?, v.get("loss")?.as_f64()?))
        })
        .collect()
}

fn train_cmd(run: &Path, steps: i64) -> std::process::Command {
    let d = data();
    let mut c = gnmt();
    c.arg("train")
        .arg("--train-src")
        .arg(d.join("train.en"))
        .arg("--train-tgt")
        .arg(d.join("train.de"))
        .arg("--valid-src")
        .arg(d.join("valid.en"))
        .arg("--valid-tgt")
        .arg(d.join("valid.de"))
        .arg("--vocab")
        .arg(run.parent().unwrap().join("tokenizer.json"))
        .args([
            "--preset",
            "tiny",
            "--batch-size",
            "16",
            "--save-every",
            "10",
            "--valid-every",
            "10",
            "--lr",
            "0.01",
        ])
        .args([
            "--set",
            "schedule={kind=\"constant\"}",
            "--set",
            "log_every=1",
            "--set",
            "valid_bleu_sentences=10",
        ])
        .args(["--threads", "1", "--max-steps", &steps.to_string(), "--out"])
        .arg(run);
    c
}

#[test]
fn vocab_kinds_roundtrip_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data();
    let text = "A man rides a bike. Ein Mann fährt Fahrrad. 日本語 ☃ <s> ##\n";
    for (kind, first_piece) in [("bpe", "▁A"), ("wordpiece", "A")] {
        let tok = tmp.path().join(format!("{kind}.json"));
        let out = run(gnmt()
            .args(["vocab", "--size", "800", "--kind", kind, "-o"])
            .arg(&tok)
            .arg("--src")
            .arg(d.join("train.en"))
            .arg("--tgt")
            .arg(d.join("train.de")));
        assert!(out.status.success(), "{kind}: {}", stderr(&out));
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&tok).unwrap()).unwrap();
        let model = json["model"]["type"].as_str().unwrap_or_default();
        assert_eq!(model.to_lowercase(), kind, "{kind}: standard HF model type");
        let pieces = run_stdin(gnmt().args(["tokenize", "--vocab"]).arg(&tok), text);
        assert_eq!(
            pieces.split(' ').next(),
            Some(first_piece),
            "{kind}: {pieces}"
        );
        let back = run_stdin(gnmt().args(["detokenize", "--vocab"]).arg(&tok), &pieces);
        assert_eq!(back, text, "{kind}");
        let ids = run_stdin(
            gnmt().args(["tokenize", "--ids", "--vocab"]).arg(&tok),
            text,
        );
        assert!(
            !ids.split(' ').any(|i| i.trim() == "3"),
            "{kind}: <unk> in {ids}"
        );
        let back = run_stdin(
            gnmt().args(["detokenize", "--ids", "--vocab"]).arg(&tok),
            &ids,
        );
        assert_eq!(back, text, "{kind}");
        // Only a unigram vocabulary has segmentations to draw.
        let out = run(gnmt()
            .args(["tokenize", "--sample-alpha", "0.2", "--vocab"])
            .arg(&tok));
        assert!(!out.status.success(), "{kind}");
        assert!(stderr(&out).contains("unigram"), "{kind}: {}", stderr(&out));
    }
    // A model trains on the wordpiece vocabulary, here in fp16 with dynamic loss scaling.
    std::fs::copy(
        tmp.path().join("wordpiece.json"),
        tmp.path().join("tokenizer.json"),
    )
    .unwrap();
    let run_dir = tmp.path().join("fp16");
    let out = run(train_cmd(&run_dir, 4).args(["--precision", "fp16"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.matches("\"loss_scale\"").count(), 4, "{metrics}");
    assert!(run_dir.join("final/model.safetensors").exists());
    let out = run(train_cmd(&tmp.path().join("x"), 4).args(["--precision", "fp16", "--bf16"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--precision"), "{}", stderr(&out));
}

#[test]
fn subword_sampling_through_tokenize_and_train() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = tmp.path().join("tokenizer.json");
    make_vocab(&tok);
    let text: String = std::fs::read_to_string(data().join("valid.de"))
        .unwrap()
        .lines()
        .take(20)
        .map(|l| format!("{l}\n"))
        .collect();
    let pieces = |extra: &[&str]| {
        run_stdin(
            gnmt().args(["tokenize", "--vocab"]).arg(&tok).args(extra),
            &text,
        )
    };
    let best = pieces(&[]);
    let drawn = pieces(&["--sample-alpha", "0.2", "--seed", "5"]);
    assert_eq!(drawn, pieces(&["--sample-alpha", "0.2", "--seed", "5"]));
    assert_ne!(drawn, best);
    assert_ne!(drawn, pieces(&["--sample-alpha", "0.2", "--seed", "6"]));
    // The same text in other pieces, line for line.
    assert_eq!(drawn.lines().count(), 20);
    let back = run_stdin(gnmt().args(["detokenize", "--vocab"]).arg(&tok), &drawn);
    assert_eq!(back, text);
    // Training draws its pairs' pieces each step.
    let run_dir = tmp.path().join("run");
    let out = run(train_cmd(&run_dir, 3).args(["--set", "subword_alpha=0.3"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(losses(&run_dir).len(), 3);
    let out = run(train_cmd(&tmp.path().join("bad"), 3).args(["--set", "subword_alpha=0"]));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("subword_alpha"), "{}", stderr(&out));
}

#[test]
fn vocab_train_resume_translate_eval() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let d = data();
    // Vocabulary, and lossless tokenization through the CLI.
    make_vocab(&t.join("tokenizer.json"));
    let text = "Ein Mann fährt Fahrrad. 日本語 ☃\n";
    let tok = run_stdin(
        gnmt()
            .args(["tokenize", "--ids", "--vocab"])
            .arg(t.join("tokenizer.json")),
        text,
    );
    let back = run_stdin(
        gnmt()
            .args(["detokenize", "--ids", "--vocab"])
            .arg(t.join("tokenizer.json")),
        &tok,
    );
    assert_eq!(back, text);
    // Pieces too: they are visible subwords, and detokenize puts them back together.
    let pieces = run_stdin(
        gnmt()
            .args(["tokenize", "--vocab"])
            .arg(t.join("tokenizer.json")),
        "A man rides a bike.\n",
    );
    assert!(
        pieces.starts_with('▁') && pieces.split(' ').count() >= 5,
        "{pieces:?}"
    );
    let back = run_stdin(
        gnmt()
            .args(["detokenize", "--vocab"])
            .arg(t.join("tokenizer.json")),
        &pieces,
    );
    assert_eq!(back, "A man rides a bike.\n");

    // Uninterrupted run of 20 steps, and a run stopped at 10 then resumed to 20.
    let a = t.join("a");
    let out = run(&mut train_cmd(&a, 20));
    assert!(out.status.success(), "{}", stderr(&out));
    let la = losses(&a);
    assert_eq!(la.len(), 20);
    let first: f64 = la[..3].iter().map(|x| x.1).sum::<f64>() / 3.0;
    let last: f64 = la[17..].iter().map(|x| x.1).sum::<f64>() / 3.0;
    assert!(last < first, "loss did not go down: {first} -> {last}");
    let b = t.join("b");
    assert!(run(&mut train_cmd(&b, 10)).status.success());
    let out = run(train_cmd(&b, 20).arg("--resume"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        losses(&b),
        la,
        "resumed run differs from the uninterrupted one"
    );

    // Every artifact of a run is there: the prepared corpus, metrics, checkpoints, best and final.
    for f in [
        "data/meta.json",
        "data/src.ids",
        "metrics.jsonl",
        "config.toml",
        "tokenizer.json",
        "best/model.safetensors",
        "final/config.json",
        "final/tokenizer.json",
        "final/model.safetensors",
    ] {
        assert!(a.join(f).exists(), "{f} missing from the run directory");
    }
    assert_eq!(gnmt_checkpoints(&a).len(), 2);

    // A second run into the same directory is refused without --force.
    let out = run(&mut train_cmd(&a, 20));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--resume") && stderr(&out).contains("--force"));

    // Translate: one line out per line in, empty lines kept; --ref agrees with `gnmt eval`.
    let input = t.join("in.en");
    let src = std::fs::read_to_string(d.join("valid.en")).unwrap();
    let mut lines: Vec<&str> = src.lines().take(12).collect();
    lines.insert(3, "");
    let long = "word ".repeat(400);
    lines.insert(7, &long);
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let hyp = t.join("out.de");
    let reference = t.join("ref.de");
    std::fs::write(
        &reference,
        (0..lines.len())
            .map(|i| format!("Ein Mann {i}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let out = run(gnmt()
        .args(["translate", "--beam", "3", "--batch-size", "4", "--model"])
        .arg(a.join("final"))
        .arg("-i")
        .arg(&input)
        .arg("-o")
        .arg(&hyp)
        .arg("--ref")
        .arg(&reference));
    assert!(out.status.success(), "{}", stderr(&out));
    let got = std::fs::read_to_string(&hyp).unwrap();
    assert_eq!(got.lines().count(), lines.len());
    assert_eq!(got.lines().nth(3), Some(""));
    let bleu_line = stderr(&out)
        .lines()
        .find(|l| l.starts_with("BLEU|"))
        .unwrap()
        .to_string();
    let ev = run(gnmt()
        .args(["eval", "-f", "text"])
        .arg(&reference)
        .arg("-i")
        .arg(&hyp));
    assert_eq!(stdout(&ev).trim(), bleu_line);
    // The BLEU line parses: `BLEU|signature = score precisions (BP = ...)`.
    let score: f64 = bleu_line
        .split(" = ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|x| x.parse().ok())
        .unwrap();
    assert!(
        (0.0..=100.0).contains(&score) && bleu_line.contains("tok:13a"),
        "{bleu_line}"
    );
    assert!(
        stderr(&out).contains("line 8") && stderr(&out).contains("truncated"),
        "{}",
        stderr(&out)
    );

    // --ref scores the plain best translations whatever -o holds (alignments, n-best lists),
    // and the n-best lists are full: --nbest 3 gives 3 entries per line.
    for extra in [&["--alignments"][..], &["--nbest", "1"], &["--nbest", "3"]] {
        let decorated = t.join("decorated.txt");
        let o = run(gnmt()
            .args(["translate", "--beam", "3", "--batch-size", "4", "--model"])
            .arg(a.join("final"))
            .arg("-i")
            .arg(&input)
            .arg("-o")
            .arg(&decorated)
            .arg("--ref")
            .arg(&reference)
            .args(extra));
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        let line = stderr(&o)
            .lines()
            .find(|l| l.starts_with("BLEU|"))
            .map(String::from);
        assert_eq!(line.as_deref(), Some(bleu_line.as_str()), "{extra:?}");
        if extra == ["--nbest", "3"] {
            let text = std::fs::read_to_string(&decorated).unwrap();
            for (i, line) in lines.iter().enumerate() {
                let n = text
                    .lines()
                    .filter(|l| l.starts_with(&format!("{i} ||| ")))
                    .count();
                // An empty line is not searched: its one (empty) translation.
                let want = if line.is_empty() { 1 } else { 3 };
                assert_eq!(n, want, "line {i}: {n} entries\n{text}");
            }
        }
    }
    let o = run(gnmt()
        .args(["translate", "--beam", "2", "--nbest", "3", "--model"])
        .arg(a.join("final"))
        .arg("-i")
        .arg(&input));
    assert!(
        !o.status.success() && stderr(&o).contains("--nbest 3"),
        "{}",
        stderr(&o)
    );
    // A missing input is named once, its reason once.
    let o = run(gnmt()
        .args(["translate", "--model"])
        .arg(a.join("final"))
        .arg("-i")
        .arg(t.join("no-such.en")));
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("no-such.en"), "{e}");
    assert_eq!(e.matches("os error 2").count(), 1, "{e}");
    assert_eq!(e.matches("no-such.en").count(), 1, "{e}");

    // Asking for more checkpoints than the run kept says so.
    let o = run(gnmt()
        .args(["average", "--last", "3", "--run"])
        .arg(&a)
        .arg("--out")
        .arg(t.join("avg3")));
    assert!(
        !o.status.success() && stderr(&o).contains("keep_last=3"),
        "{}",
        stderr(&o)
    );
    // Averaging the last two checkpoints (steps 10 and 20) gives a model directory that translates.
    let avg = t.join("avg");
    let out = run(gnmt()
        .args(["average", "--last", "2", "--run"])
        .arg(&a)
        .arg("--out")
        .arg(&avg));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("averaged 2 checkpoints"),
        "{}",
        stderr(&out)
    );
    let out = run_stdin(
        gnmt().args(["translate", "--greedy", "--model"]).arg(&avg),
        "A man rides a bike.\n\nTwo dogs.\n",
    );
    assert_eq!(out.lines().count(), 3);
    // The same model run in bf16 or fp16 still gives one line per line.
    for flag in ["--bf16", "--fp16"] {
        let out = run_stdin(
            gnmt()
                .args(["translate", flag, "--beam", "2", "--model"])
                .arg(&avg),
            "A man rides a bike.\n\nTwo dogs.\n",
        );
        assert_eq!(out.lines().count(), 3, "{flag}");
    }
    // int8 as well; and check-precision records the BLEU of fp32 and of each faster path this
    // CPU has, after which translate without a flag logs the precision it picked and why.
    let out = run_stdin(
        gnmt()
            .args(["translate", "--precision", "int8", "--beam", "2", "--model"])
            .arg(&avg),
        "A man rides a bike.\n\nTwo dogs.\n",
    );
    assert_eq!(out.lines().count(), 3, "int8");
    a_quantized_model_translates_as_int8_does(&avg, t);
    let out = run(gnmt()
        .args([
            "check-precision",
            "--sentences",
            "12",
            "--beam",
            "2",
            "--model",
        ])
        .arg(&avg)
        .arg("--src")
        .arg(data().join("valid.en"))
        .arg("--ref")
        .arg(data().join("valid.de")));
    assert!(out.status.success(), "{}", stderr(&out));
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(avg.join("precision.json")).unwrap())
            .unwrap();
    assert_eq!(record["sentences"], 12);
    assert!(record["bleu"]["fp32"].as_f64().is_some(), "{record}");
    assert!(
        stdout(&out).contains("by default on this CPU"),
        "{}",
        stdout(&out)
    );
    let out = run(gnmt()
        .args(["translate", "--greedy", "--model"])
        .arg(&avg)
        .arg("-i")
        .arg(data().join("valid.en"))
        .arg("-o")
        .arg(t.join("valid.out")));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("by default: BLEU")
            || stderr(&out).contains("by default: no faster path"),
        "{}",
        stderr(&out)
    );
    translate_resumes_after_a_kill(&avg, t);
    sharded_translation_survives_a_killed_rank(&avg, t);
    ensembles_translate_as_one_model(&avg, &a.join("final"), t);
    tune_writes_the_settings_translate_starts_from(&avg, &a.join("final"), t);
    // Averaging different models is refused, naming the odd one out.
    let out = run(gnmt()
        .arg("average")
        .arg(a.join("final"))
        .arg(t.join("missing"))
        .arg("--out")
        .arg(t.join("avg2")));
    assert!(!out.status.success() && stderr(&out).contains("missing"));

    // Plots of the run's metrics: every chart as PNG and SVG.
    let plots = t.join("plots");
    let out = run(gnmt().arg("plot").arg(&a).arg(&b).arg("-o").arg(&plots));
    assert!(out.status.success(), "{}", stderr(&out));
    for stem in [
        "loss",
        "valid_bleu",
        "valid_loss",
        "lr",
        "grad_norm_by_layer",
    ] {
        for ext in ["png", "svg"] {
            let f = plots.join(format!("{stem}.{ext}"));
            assert!(
                std::fs::metadata(&f)
                    .map(|m| m.len() > 1000)
                    .unwrap_or(false),
                "{}",
                f.display()
            );
        }
    }

    // A resume with another setting is refused, naming it; --set makes the change deliberate.
    let o = run(train_cmd(&b, 20).args(["--resume", "--set", "clip_norm=1.0"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(train_cmd(&b, 20).args(["--resume", "--max-tokens", "500"]));
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("max_tokens was null, now 500"),
        "{e}"
    );
    // The vocabulary sets the model's vocabulary size: an override is refused.
    let o = run(train_cmd(&t.join("v"), 2).args(["--set", "model.vocab_size=100"]));
    let e = stderr(&o);
    assert!(!o.status.success() && e.contains("model.vocab_size"), "{e}");
    // --force starts over deleting only what the run wrote: the user's file next to it stays.
    std::fs::write(b.join("notes.txt"), "mine").unwrap();
    let o = run(train_cmd(&b, 10).arg("--force"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(b.join("notes.txt")).unwrap(),
        "mine"
    );
    assert_eq!(
        losses(&b),
        la[..10].to_vec(),
        "the new run starts from scratch"
    );

    // A corrupt checkpoint is refused with its path named, once, and said to be damaged.
    let ck = gnmt_checkpoints(&b).pop().unwrap();
    std::fs::write(ck.join("model.safetensors"), b"garbage").unwrap();
    let out = run(train_cmd(&b, 30).arg("--resume"));
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("model.safetensors") && !e.contains("panicked"),
        "{e}"
    );
    assert!(e.contains("truncated or damaged"), "{e}");
    assert_eq!(e.matches("model.safetensors").count(), 1, "{e}");
}

#[test]
fn misaligned_corpus_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data();
    let out = run(gnmt()
        .arg("train")
        .arg("--train-src")
        .arg(d.join("train.en"))
        .arg("--train-tgt")
        .arg(d.join("valid.de"))
        .args([
            "--preset",
            "tiny",
            "--max-steps",
            "1",
            "--set",
            "vocab_size=400",
            "--out",
        ])
        .arg(tmp.path().join("r")));
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("train.en") && e.contains("valid.de") && e.contains("lines"),
        "{e}"
    );
}

fn gnmt_checkpoints(run: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn run_stdin(cmd: &mut std::process::Command, input: &str) -> String {
    use std::io::Write;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn prepare_once_then_train_on_the_prepared_corpus() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let d = data();
    let vocab = |size: &str, out: &Path| {
        let o = run(gnmt()
            .args(["vocab", "--size", size, "-o"])
            .arg(out)
            .arg("--src")
            .arg(d.join("train.en"))
            .arg("--tgt")
            .arg(d.join("train.de")));
        assert!(o.status.success(), "{}", stderr(&o));
    };
    vocab("600", &t.join("tok.json"));
    let prep = t.join("prep");
    let out = run(gnmt()
        .args(["prepare", "--max-len", "20", "--vocab"])
        .arg(t.join("tok.json"))
        .arg("--src")
        .arg(d.join("train.en"))
        .arg("--tgt")
        .arg(d.join("train.de"))
        .arg("-o")
        .arg(&prep));
    assert!(out.status.success(), "{}", stderr(&out));
    // The summary says how many pairs were kept and why the others were skipped.
    let e = stderr(&out);
    assert!(
        e.contains("prepared") && e.contains("longer than the maximum length"),
        "{e}"
    );
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(prep.join("meta.json")).unwrap()).unwrap();
    let kept = meta["report"]["kept"].as_u64().unwrap();
    assert!(kept > 100 && kept < 1500, "{meta}");

    let train = |vocab: &Path, run_dir: &Path| {
        run(gnmt()
            .arg("train")
            .arg("--prepared")
            .arg(&prep)
            .arg("--vocab")
            .arg(vocab)
            .args(["--preset", "tiny", "--batch-size", "16", "--max-steps", "3"])
            .args(["--set", "log_every=1", "--threads", "1", "--out"])
            .arg(run_dir))
    };
    let out = train(&t.join("tok.json"), &t.join("run"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(losses(&t.join("run")).len(), 3);
    // A corpus prepared with another tokenizer is stale: refused, naming it.
    vocab("800", &t.join("other.json"));
    let out = train(&t.join("other.json"), &t.join("run2"));
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("prep") && e.contains("different tokenizer"),
        "{e}"
    );
    // --strict turns a skipped pair into an error naming its line.
    let out = run(gnmt()
        .args(["prepare", "--strict", "--max-len", "20", "--vocab"])
        .arg(t.join("tok.json"))
        .arg("--src")
        .arg(d.join("train.en"))
        .arg("--tgt")
        .arg(d.join("train.de"))
        .arg("-o")
        .arg(t.join("strict")));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("line ") && !t.join("strict").exists());
}

#[test]
fn wmt_script_prepares_the_wmt_sample() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = repo().join("../shared/data/wmt-sample-en-de");
    // Without the shared sample, one made of the repository's Multi30k slice, with the same
    // empty fifth line: the script is checked either way.
    let (sample, pairs) = if shared.join("train.en").exists() {
        (shared, 10_000)
    } else {
        eprintln!(
            "{} not present: using tests/fixtures/m30k",
            shared.display()
        );
        let dir = tmp.path().join("sample");
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["train.en", "train.de", "valid.en", "valid.de"] {
            let mut lines: Vec<String> = std::fs::read_to_string(data().join(f))
                .unwrap()
                .lines()
                .map(String::from)
                .collect();
            if f == "train.en" {
                lines[4].clear();
            }
            std::fs::write(dir.join(f), lines.join("\n") + "\n").unwrap();
        }
        (dir, 1_500)
    };
    let out = tmp.path().join("wmt");
    let o = run(std::process::Command::new("bash")
        .arg(repo().join("scripts/get-wmt16-en-de.sh"))
        .arg("--text")
        .arg(&sample)
        .args(["--vocab-size", "2000", "--out"])
        .arg(&out)
        .env("GNMT", env!("CARGO_BIN_EXE_gnmt"))
        .env("OMP_WAIT_POLICY", "PASSIVE"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("tokenizer.json").exists() && out.join("valid.de").exists());
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("train.prepared/meta.json")).unwrap(),
    )
    .unwrap();
    // Line 5 of train.en is empty: that pair is skipped and counted, not lost silently.
    assert!(meta["report"]["empty"].as_u64().unwrap() >= 1, "{meta}");
    let r = &meta["report"];
    let n = |k: &str| r[k].as_u64().unwrap();
    assert_eq!(
        n("kept") + n("empty") + n("too_long") + n("bad_ratio"),
        pairs,
        "{meta}"
    );
    assert!(n("kept") > pairs / 5, "{meta}");
}

#[test]
fn a_time_limited_leg_stops_with_a_checkpoint_and_resumes_to_new_steps() {
    let tmp = tempfile::tempdir().unwrap();
    make_vocab(&tmp.path().join("tokenizer.json"));
    let r = tmp.path().join("leg");
    // Three seconds of a run that would take far longer: a checkpoint at the step reached,
    // success, and the step said.
    let o = run(train_cmd(&r, 1_000_000).args(["--stop-after-minutes", "0.05"]));
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    let reached = stopped_at(&e, " of 1000000 after 0.05 minutes: --resume continues");
    assert!(reached > 0 && reached < 1_000_000, "{reached}");
    let last = |r: &Path| gnmt_checkpoints(r).pop().unwrap();
    assert!(last(&r).ends_with(format!("step-{reached:08}")));
    // Resumed with another length, it trains on to that many steps.
    let o = run(train_cmd(&r, reached + 10).arg("--resume"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(last(&r).ends_with(format!("step-{:08}", reached + 10)));
    assert_eq!(losses(&r).last().map(|l| l.0), Some(reached + 10));
    // A run already at its end says so (no training, no made-up losses).
    let o = run(train_cmd(&r, reached + 10).arg("--resume"));
    let e = stderr(&o);
    assert!(o.status.success() && e.contains("nothing to train"), "{e}");
    assert!(!e.contains("NaN"), "{e}");
    // A time that is not a positive number of minutes is refused, naming the option.
    for bad in ["0", "-1", "1e300", "NaN", "soon"] {
        let o =
            run(train_cmd(&tmp.path().join("bad"), 10).arg(format!("--stop-after-minutes={bad}")));
        let e = stderr(&o);
        assert!(
            !o.status.success()
                && e.contains("--stop-after-minutes")
                && e.contains("positive")
                && !e.contains("panicked"),
            "{bad}: {e}"
        );
    }
}

/// The step of `gnmt train`'s "stopped at step N..." line in `log`, with the rest of the line.
fn stop_line(log: &str) -> Option<(i64, &str)> {
    let line = log
        .lines()
        .find_map(|l| l.strip_prefix("stopped at step "))?;
    let digits = line
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(line.len());
    Some((line[..digits].parse().ok()?, &line[digits..]))
}

/// The step at which `log` says `gnmt train` stopped, when the rest of the line is `rest`.
fn stopped_at(log: &str, rest: &str) -> i64 {
    stop_line(log)
        .filter(|(_, r)| *r == rest)
        .map(|(n, _)| n)
        .unwrap_or_else(|| panic!("no stop line ending in {rest:?}:\n{log}"))
}

/// A 600-piece vocabulary of the fixture's training text, at `path`.
fn make_vocab(path: &Path) {
    let d = data();
    let out = run(gnmt()
        .args(["vocab", "--size", "600", "-o"])
        .arg(path)
        .arg("--src")
        .arg(d.join("train.en"))
        .arg("--tgt")
        .arg(d.join("train.de")));
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A free TCP port on 127.0.0.1.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `gnmt train` as rank `rank` of `world`, with the variables torchrun sets.
fn rank_cmd(
    run_dir: &Path,
    steps: i64,
    rank: usize,
    world: usize,
    port: u16,
) -> std::process::Command {
    let mut c = train_cmd(run_dir, steps);
    as_rank(&mut c, rank, world, port, 30)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    c
}

/// `c` as rank `rank` of `world` on this machine, with the variables torchrun sets and a
/// c10d timeout of `timeout_secs`.
fn as_rank(
    c: &mut std::process::Command,
    rank: usize,
    world: usize,
    port: u16,
    timeout_secs: u64,
) -> &mut std::process::Command {
    c.env("WORLD_SIZE", world.to_string())
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("GNMT_DIST_TIMEOUT", timeout_secs.to_string())
}

/// Trains `steps` steps in `dir` as two real rank processes on this machine, each with half of
/// every batch and `extra` arguments, and checks that both succeed (`what` names the case).
fn train_as_two_ranks(dir: &Path, steps: i64, extra: &[&str], what: &str) {
    let port = free_port();
    let ranks: Vec<_> = (0..2)
        .map(|r| {
            rank_cmd(dir, steps, r, 2, port)
                .args(extra)
                .spawn()
                .unwrap()
        })
        .collect();
    for (r, p) in ranks.into_iter().enumerate() {
        let o = p.wait_with_output().unwrap();
        assert!(o.status.success(), "{what} rank {r}: {}", stderr(&o));
    }
}

/// The two runs logged `steps` losses at the same steps, each within `rel` of the other.
fn assert_same_losses(one: &Path, two: &Path, steps: usize, rel: f64, what: &str) {
    let (a, b) = (losses(one), losses(two));
    assert_eq!(a.len(), steps, "{what}");
    assert_eq!(
        a.iter().map(|x| x.0).collect::<Vec<_>>(),
        b.iter().map(|x| x.0).collect::<Vec<_>>(),
        "{what}"
    );
    for ((s, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            (x - y).abs() <= rel * x.abs(),
            "{what} step {s}: {x} vs {y}"
        );
    }
}

#[test]
fn two_processes_train_as_one_and_a_killed_rank_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    make_vocab(&t.join("tokenizer.json"));
    let one = t.join("one");
    let out = run(train_cmd(&one, 8).args(["--set", "model.dropout=0"]));
    assert!(out.status.success(), "{}", stderr(&out));
    // Two real processes, each with half of every batch of 16.
    let two = t.join("two");
    train_as_two_ranks(&two, 8, &["--set", "model.dropout=0"], "fp32");
    assert_same_losses(&one, &two, 8, 1e-5, "fp32");
    assert!(two.join("final/model.safetensors").exists());
    // kill -9 rank 1 mid-run: rank 0 fails within 60 s, naming it, and leaves no partial checkpoint.
    let dead = t.join("dead");
    let port = free_port();
    let r0 = rank_cmd(&dead, 100_000, 0, 2, port).spawn().unwrap();
    let mut r1 = rank_cmd(&dead, 100_000, 1, 2, port).spawn().unwrap();
    let started = std::time::Instant::now();
    let running = |d: &Path| d.join("metrics.jsonl").exists() && losses(d).len() >= 3;
    while !running(&dead) && started.elapsed().as_secs() < 120 {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(running(&dead), "the 2-rank run never got going");
    r1.kill().unwrap();
    let _ = r1.wait();
    let killed = std::time::Instant::now();
    let o = r0.wait_with_output().unwrap();
    assert!(!o.status.success());
    assert!(
        killed.elapsed().as_secs() < 60,
        "rank 0 took {:?}",
        killed.elapsed()
    );
    let err = stderr(&o);
    assert!(err.contains("rank 1"), "{err}");
    let leftovers: Vec<_> = std::fs::read_dir(dead.join("checkpoints"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "partial checkpoint files: {leftovers:?}"
    );
}

/// Two ranks whose time limits run out at different moments stop together at one step, each
/// with a checkpoint-worthy success (exit 0): the one whose own minutes ran out says so, the
/// other that it stopped with its peers.
#[test]
fn two_ranks_stop_together_when_the_first_runs_out_of_minutes() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    make_vocab(&t.join("tokenizer.json"));
    let dir = t.join("timed");
    let port = free_port();
    let ranks: Vec<_> = [("0", "0.05"), ("1", "30")]
        .iter()
        .map(|(r, minutes)| {
            rank_cmd(&dir, 1_000_000, r.parse().unwrap(), 2, port)
                .args(["--stop-after-minutes", minutes])
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<String> = ranks
        .into_iter()
        .enumerate()
        .map(|(r, p)| {
            let o = p.wait_with_output().unwrap();
            let e = stderr(&o);
            assert!(o.status.success(), "rank {r}: {e}");
            e
        })
        .collect();
    let s0 = stopped_at(
        &outs[0],
        " of 1000000 after 0.05 minutes: --resume continues",
    );
    let s1 = stopped_at(
        &outs[1],
        " of 1000000 with the other ranks (out of minutes first): --resume continues",
    );
    assert_eq!(s0, s1);
    assert!(s0 > 0, "{s0}");
    let last = gnmt_checkpoints(&dir).pop().unwrap();
    assert!(last.ends_with(format!("step-{s0:08}")), "{last:?}");
}

/// Mixed precision and gradient accumulation data-parallel: 2 ranks with half of every batch
/// follow the one-process run's losses (bf16 with 2 micro-steps a step, fp16 with loss scaling).
#[test]
fn two_ranks_train_in_bf16_and_fp16_as_one_process_does() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    make_vocab(&t.join("tokenizer.json"));
    for (name, extra) in [
        ("bf16", ["--precision", "bf16", "--set", "accum_steps=2"]),
        ("fp16", ["--precision", "fp16", "--set", "model.dropout=0"]),
    ] {
        let one = t.join(format!("{name}-one"));
        let out = run(train_cmd(&one, 6)
            .args(extra)
            .args(["--set", "model.dropout=0"]));
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        if name == "bf16" {
            // Where bf16 is no faster than float32 on this CPU, training says so (and trains).
            let doctor = stdout(&run(gnmt().arg("doctor")));
            let pays = doctor_bf16_beats_fp32(&doctor) == Some(true);
            let warned = stderr(&out).contains("so fp32 trains faster here");
            assert_eq!(warned, !pays, "{doctor}\n{}", stderr(&out));
        }
        let two = t.join(format!("{name}-two"));
        let args: Vec<&str> = extra
            .iter()
            .copied()
            .chain(["--set", "model.dropout=0"])
            .collect();
        train_as_two_ranks(&two, 6, &args, name);
        // Half batches round differently in 16 bits; the same updates keep the losses together.
        assert_same_losses(&one, &two, 6, 2e-2, name);
        assert!(two.join("final/model.safetensors").exists(), "{name}");
    }
}

/// The torchrun of the venv scripts/setup.sh made (`GNMT_VENV`, `GNMT_CACHE` as there).
fn torchrun() -> std::path::PathBuf {
    let venv = std::env::var_os("GNMT_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("GNMT_CACHE")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| {
                    Path::new(&std::env::var_os("HOME").unwrap()).join(".cache/gnmt")
                });
            cache.join("torch-2.11.0")
        });
    let t = venv.join("bin/torchrun");
    assert!(t.exists(), "{} missing: run scripts/setup.sh", t.display());
    t
}

#[test]
fn torchrun_launches_a_data_parallel_run() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data();
    let run_dir = tmp.path().join("run");
    let out = std::process::Command::new(torchrun())
        .args(["--no-python", "--standalone", "--nproc-per-node", "2"])
        .arg(env!("CARGO_BIN_EXE_gnmt"))
        .arg("train")
        .arg("--train-src")
        .arg(d.join("train.en"))
        .arg("--train-tgt")
        .arg(d.join("train.de"))
        .args([
            "--preset",
            "tiny",
            "--set",
            "vocab_size=400",
            "--set",
            "log_every=1",
        ])
        .args([
            "--batch-size",
            "16",
            "--max-steps",
            "3",
            "--threads",
            "1",
            "--out",
        ])
        .arg(&run_dir)
        .env("OMP_NUM_THREADS", "1")
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .env("GNMT_DIST_TIMEOUT", "60")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("data-parallel: rank 1 of 2"), "{err}");
    assert_eq!(losses(&run_dir).len(), 3, "rank 0 alone writes the metrics");
    // The share of the logging window spent in the gradient all-reduce, on every step line.
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let shares: Vec<f64> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("loss").is_some())
        .map(|v| v["reduce_fraction"].as_f64().unwrap())
        .collect();
    assert!(
        shares.len() == 3 && shares.iter().all(|f| (0.0..=1.0).contains(f)),
        "{shares:?}"
    );
    assert!(run_dir.join("final/model.safetensors").exists());
    sharded_translation_equals_one_process(&run_dir.join("final"), tmp.path());
}

/// `gnmt translate` under torchrun (and with the variables set by hand, n-best lists): the chunks
/// shared out between 2 ranks, rank 0 writing; byte for byte what one process writes, empty and
/// over-long lines included.
fn sharded_translation_equals_one_process(model: &Path, t: &Path) {
    let src = t.join("shard.en");
    std::fs::write(&src, mixed_input(60, 11)).unwrap();
    let args = |out: &Path, extra: &[&str]| -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = ["translate", "--beam", "2", "--chunk-lines", "7"]
            .iter()
            .chain(extra)
            .map(|s| s.into())
            .collect();
        for x in [
            "--model".as_ref(),
            model.as_os_str(),
            "-i".as_ref(),
            src.as_os_str(),
            "-o".as_ref(),
            out.as_os_str(),
        ] {
            v.push(x.to_os_string());
        }
        v
    };
    let single = t.join("single.de");
    let o = run(gnmt().args(args(&single, &[])));
    assert!(o.status.success(), "{}", stderr(&o));
    let sharded = t.join("sharded.de");
    let o = std::process::Command::new(torchrun())
        .args(["--no-python", "--standalone", "--nproc-per-node", "2"])
        .arg(env!("CARGO_BIN_EXE_gnmt"))
        .args(args(&sharded, &[]))
        .env("OMP_NUM_THREADS", "1")
        .env("OMP_WAIT_POLICY", "PASSIVE")
        .env("GNMT_DIST_TIMEOUT", "60")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("rank 1 of 2"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&sharded).unwrap(),
        std::fs::read(&single).unwrap()
    );
    // The variables set by hand; n-best lists numbered by input line across the ranks' chunks.
    let (single, sharded) = (t.join("single.nbest"), t.join("sharded.nbest"));
    let o = run(gnmt().args(args(&single, &["--nbest", "2"])));
    assert!(o.status.success(), "{}", stderr(&o));
    let port = free_port();
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            as_rank(
                gnmt().args(args(&sharded, &["--nbest", "2"])),
                rank,
                2,
                port,
                60,
            )
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    for r in ranks {
        let o = r.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let text = std::fs::read_to_string(&sharded).unwrap();
    assert_eq!(text, std::fs::read_to_string(&single).unwrap());
    assert!(
        text.lines().last().unwrap().starts_with("59 ||| "),
        "{text}"
    );
}

/// `gnmt translate --greedy` of `src` into `out` in chunks of 25 lines: the interrupted jobs.
fn chunked_translate(model: &Path, src: &Path, out: &Path) -> std::process::Command {
    let mut c = gnmt();
    c.args(["translate", "--greedy", "--chunk-lines", "25", "--model"])
        .arg(model)
        .arg("-i")
        .arg(src)
        .arg("-o")
        .arg(out);
    c
}

/// Waits until `path` exists, or `deadline`.
fn wait_for_file(path: &Path, deadline: std::time::Instant) {
    while !path.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// A translation killed mid-way (kill -9) and continued with --resume writes exactly what an
/// uninterrupted run writes: nothing lost, nothing twice.
fn translate_resumes_after_a_kill(model: &Path, t: &Path) {
    let src = t.join("resume.en");
    std::fs::write(&src, mixed_input(3000, 50)).unwrap();
    let translate = |out: &Path| chunked_translate(model, &src, out);
    let whole = t.join("whole.de");
    let o = run(&mut translate(&whole));
    assert!(o.status.success(), "{}", stderr(&o));
    let killed = t.join("killed.de");
    let record = t.join(".killed.de.partial.json");
    let mut child = translate(&killed)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    wait_for_file(&record, deadline);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        record.exists() && !killed.exists(),
        "killed before the first chunk or after the last: make the input longer"
    );
    let o = run(translate(&killed).arg("--resume"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&killed).unwrap(),
        std::fs::read(&whole).unwrap(),
        "resumed output differs from the uninterrupted one"
    );
    assert!(
        !record.exists(),
        "the progress record is removed at the end"
    );
    // An input edited since the killed run is not resumed: the job differs. (A deadline of its
    // own: on a loaded machine the first one may be spent already.)
    let mut child = translate(&killed)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    wait_for_file(&record, deadline);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(record.exists(), "the second run was not interrupted");
    std::fs::write(&src, mixed_input(3001, 50)).unwrap();
    let o = run(translate(&killed).arg("--resume"));
    assert!(
        !o.status.success() && stderr(&o).contains("another job"),
        "{}",
        stderr(&o)
    );
    // Resuming another job's output is refused; without --resume it starts over.
    std::fs::write(t.join(".other.de.partial"), "x\n").unwrap();
    std::fs::write(
        t.join(".other.de.partial.json"),
        r#"{"lines":1,"bytes":2,"job":"something else"}"#,
    )
    .unwrap();
    let o = run(translate(&t.join("other.de")).arg("--resume"));
    assert!(
        !o.status.success() && stderr(&o).contains("another job"),
        "{}",
        stderr(&o)
    );
}

/// `n` lines of the validation source, with an empty line and an over-long one (every
/// validation sentence joined) in each `period` lines.
fn mixed_input(n: usize, period: usize) -> String {
    let text = std::fs::read_to_string(data().join("valid.en")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut input = String::new();
    for i in 0..n {
        match i % period {
            3 => input.push('\n'),
            5 => input.push_str(&format!("{}\n", lines.join(" "))),
            _ => input.push_str(&format!("{}\n", lines[i % lines.len()])),
        }
    }
    input
}

/// kill -9 one rank of a sharded translation: rank 0 fails within a bound, naming it, keeps what
/// it wrote, and one process with --resume completes the output byte for byte.
fn sharded_translation_survives_a_killed_rank(model: &Path, t: &Path) {
    let src = t.join("resume.en");
    let translate = |out: &Path| chunked_translate(model, &src, out);
    let whole = t.join("whole-sharded.de");
    let o = run(&mut translate(&whole));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = t.join("shard-killed.de");
    let record = t.join(".shard-killed.de.partial.json");
    let port = free_port();
    let mut ranks: Vec<_> = (0..2)
        .map(|rank| {
            as_rank(&mut translate(&out), rank, 2, port, 20)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    wait_for_file(&record, deadline);
    let mut r1 = ranks.pop().unwrap();
    r1.kill().unwrap(); // SIGKILL
    r1.wait().unwrap();
    let killed = std::time::Instant::now();
    let o = ranks.pop().unwrap().wait_with_output().unwrap();
    assert!(
        record.exists() && !out.exists(),
        "rank 1 was not killed mid-way: make the input longer"
    );
    assert!(!o.status.success(), "rank 0 succeeded without rank 1");
    assert!(
        killed.elapsed().as_secs() < 60,
        "rank 0 took {:?}",
        killed.elapsed()
    );
    assert!(stderr(&o).contains("rank 1"), "{}", stderr(&o));
    let o = run(translate(&out).arg("--resume"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&whole).unwrap());
}

/// `--model A --model A` translates as A alone (n-best scores included); two models of one
/// vocabulary translate as an ensemble; another vocabulary and a wrong weight count are refused,
/// naming the cause.
fn ensembles_translate_as_one_model(model: &Path, other: &Path, t: &Path) {
    let src = data().join("valid.en");
    let translate = |models: &[&Path], extra: &[&str], out: &Path| {
        let mut c = gnmt();
        c.args(["translate", "--beam", "3", "--nbest", "2"])
            .args(extra);
        for m in models {
            c.arg("--model").arg(m);
        }
        c.arg("-i").arg(&src).arg("-o").arg(out);
        run(&mut c)
    };
    let alone = t.join("alone.nbest");
    let o = translate(&[model], &[], &alone);
    assert!(o.status.success(), "{}", stderr(&o));
    let twice = t.join("twice.nbest");
    let o = translate(&[model, model], &["--weights", "0.4,0.6"], &twice);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("an ensemble of 2 models"),
        "{}",
        stderr(&o)
    );
    let (a, b) = (
        std::fs::read_to_string(&alone).unwrap(),
        std::fs::read_to_string(&twice).unwrap(),
    );
    assert_eq!(a.lines().count(), b.lines().count());
    for (x, y) in a.lines().zip(b.lines()) {
        let (xt, xs) = x.rsplit_once(" ||| ").unwrap();
        let (yt, ys) = y.rsplit_once(" ||| ").unwrap();
        assert_eq!(xt, yt);
        let (xs, ys): (f64, f64) = (xs.parse().unwrap(), ys.parse().unwrap());
        // Printed to 4 decimals; the ensemble's renormalization rounds in the 6th digit.
        assert!((xs - ys).abs() <= 1.5e-4 + 1e-5 * xs.abs(), "{x} vs {y}");
    }
    // Two different models of one vocabulary: one output line per input, n-best lists whole.
    let pair = t.join("pair.nbest");
    let o = translate(&[model, other], &[], &pair);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&pair).unwrap();
    assert_eq!(text.lines().count(), a.lines().count());
    // Weights must match the models.
    let o = translate(&[model, other], &["--weights", "1"], &t.join("w.nbest"));
    assert!(
        !o.status.success() && stderr(&o).contains("1 weights for 2 models"),
        "{}",
        stderr(&o)
    );
    // A model of another vocabulary (same size, other pieces) is refused, both named.
    let alien = t.join("alien");
    std::fs::create_dir_all(&alien).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(model.join(f), alien.join(f)).unwrap();
    }
    let d = data();
    let size = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(model.join("config.json")).unwrap(),
    )
    .unwrap()["vocab_size"]
        .as_i64()
        .unwrap()
        .to_string();
    let o = run(gnmt()
        .args(["vocab", "--kind", "bpe", "--size", &size, "-o"])
        .arg(alien.join("tokenizer.json"))
        .arg("--src")
        .arg(d.join("train.en"))
        .arg("--tgt")
        .arg(d.join("train.de")));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = translate(&[model, &alien], &[], &t.join("alien.nbest"));
    let e = stderr(&o);
    assert!(
        !o.status.success() && e.contains("different vocabularies"),
        "{e}"
    );
    assert!(e.contains("alien"), "{e}");
}

/// `gnmt quantize` writes an int8 model directory, a fraction of the float32 weights' size,
/// that translates byte for byte as the float32 model at `--precision int8`, and runs in int8
/// only; the output never replaces a directory of the user's.
fn a_quantized_model_translates_as_int8_does(model: &Path, t: &Path) {
    let q8 = t.join("q8");
    let out = run(gnmt()
        .args(["quantize", "--model"])
        .arg(model)
        .arg("--out")
        .arg(&q8));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!q8.join("model.safetensors").exists());
    let size = |p: PathBuf| std::fs::metadata(p).unwrap().len();
    let (float, int8) = (
        size(model.join("model.safetensors")),
        size(q8.join("model-int8.safetensors")),
    );
    // This test model is tiny: scales, the float32 attention and the file's header weigh more
    // than in a real one (the 30% bound is gnmt-model's test, on the `small` preset).
    assert!(int8 * 2 < float, "int8 {int8} bytes, float32 {float}");
    let translate = |m: &Path, extra: &[&str], to: &str| {
        let o = run(gnmt()
            .args(["translate", "--beam", "3", "--model"])
            .arg(m)
            .args(extra)
            .arg("-i")
            .arg(data().join("valid.en"))
            .arg("-o")
            .arg(t.join(to)));
        assert!(o.status.success(), "{}", stderr(&o));
        std::fs::read_to_string(t.join(to)).unwrap()
    };
    let want = translate(model, &["--precision", "int8"], "valid.int8");
    assert_eq!(translate(&q8, &[], "valid.q8"), want);
    assert!(!want.is_empty());
    let o = run(gnmt()
        .args(["translate", "--precision", "fp32", "--model"])
        .arg(&q8)
        .arg("-i")
        .arg(data().join("valid.en")));
    assert!(
        !o.status.success() && stderr(&o).contains("int8 only"),
        "{}",
        stderr(&o)
    );
    // An existing directory that is not an int8 model is not replaced.
    let mine = t.join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep").unwrap();
    let o = run(gnmt()
        .args(["quantize", "--model"])
        .arg(model)
        .arg("--out")
        .arg(&mine));
    assert!(
        !o.status.success() && stderr(&o).contains("not an int8 model"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "keep"
    );
}

/// `gnmt tune` of `models` (one, or an ensemble) on the fixture's validation data.
fn tune_on_valid(models: &[&Path], extra: &[&str]) -> std::process::Output {
    let d = data();
    let mut c = gnmt();
    c.args(["tune", "--threads", "1", "--model"])
        .args(models)
        .arg("--src")
        .arg(d.join("valid.en"))
        .arg("--ref")
        .arg(d.join("valid.de"))
        .args(extra);
    run(&mut c)
}

/// `gnmt translate` of the fixture's validation source by `models`, in float32 (one precision
/// for every run compared: a model's precision.json may pick another by default).
fn translate_valid(models: &[&Path], extra: &[&str], out: &Path) -> std::process::Output {
    let mut c = gnmt();
    c.args(["translate", "--precision", "fp32", "--model"])
        .args(models)
        .args(extra)
        .arg("-i")
        .arg(data().join("valid.en"))
        .arg("-o")
        .arg(out);
    run(&mut c)
}

/// `gnmt tune` tries its grid on validation data, writes the best to search.json, and translate
/// then runs with exactly those settings (flags still override); --dry-run writes nothing; a
/// grid value that is no setting is refused; `--device` names where the grid runs. An ensemble
/// (`model` and `other`) is tuned as one.
fn tune_writes_the_settings_translate_starts_from(model: &Path, other: &Path, t: &Path) {
    let dir = t.join("tuned");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(model.join(f), dir.join(f)).unwrap();
    }
    let tune = |extra: &[&str]| tune_on_valid(&[&dir], extra);
    let o = tune(&[
        "--beams",
        "2",
        "--alphas",
        "0.6",
        "--betas",
        "0,0.3",
        "--dry-run",
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("| 2 | 0.6 | 0.3 |"), "{}", stdout(&o));
    assert!(
        !dir.join("search.json").exists(),
        "--dry-run wrote search.json"
    );
    let o = tune(&[
        "--beams",
        "1,2",
        "--alphas",
        "0.2,1.0",
        "--betas",
        "0.3",
        "--max-len-as",
        "0.5,1.5",
        "--max-len-bs",
        "2",
        "--p-value",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("search.json")).unwrap()).unwrap();
    let (beam, alpha) = (
        rec["beam"].as_u64().unwrap(),
        rec["alpha"].as_f64().unwrap(),
    );
    assert!(
        [1, 2].contains(&beam) && [0.2, 1.0].contains(&alpha),
        "{rec}"
    );
    assert_eq!(rec["beta"].as_f64(), Some(0.3), "{rec}");
    let max_len_a = rec["max_len_a"].as_f64().unwrap();
    assert!([0.5, 1.5].contains(&max_len_a), "{rec}");
    assert_eq!(rec["max_len_b"].as_u64(), Some(2), "{rec}");
    let translate = |m: &Path, extra: &[&str], out: &Path| translate_valid(&[m], extra, out);
    let tuned_out = t.join("tuned.de");
    let o = translate(&dir, &[], &tuned_out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("tuned by `gnmt tune`"),
        "{}",
        stderr(&o)
    );
    let flags_out = t.join("flags.de");
    let (b, a, la) = (beam.to_string(), alpha.to_string(), max_len_a.to_string());
    let o = translate(
        model,
        &[
            "--beam",
            &b,
            "--alpha",
            &a,
            "--beta",
            "0.3",
            "--max-len-a",
            &la,
            "--max-len-b",
            "2",
        ],
        &flags_out,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&tuned_out).unwrap(),
        std::fs::read(&flags_out).unwrap()
    );
    // A best point not significantly better than the defaults leaves the defaults in
    // search.json (with p < 0 nothing is).
    let o = tune(&[
        "--beams",
        "2",
        "--alphas",
        "1.0",
        "--betas",
        "0.3",
        "--p-value",
        "0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("the defaults are kept"),
        "{}",
        stdout(&o)
    );
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("search.json")).unwrap()).unwrap();
    assert_eq!(
        (
            rec["beam"].as_u64(),
            rec["alpha"].as_f64(),
            rec["beta"].as_f64()
        ),
        (Some(5), Some(0.6), Some(0.1)),
        "{rec}"
    );
    assert!(rec["p_value"].as_f64().is_some(), "{rec}");
    let o = tune(&["--beams", "0"]);
    assert!(
        !o.status.success() && stderr(&o).contains("--beams: 0"),
        "{}",
        stderr(&o)
    );
    let o = tune(&["--max-len-as=-1"]);
    assert!(
        !o.status.success() && stderr(&o).contains("--max-len-as: -1"),
        "{}",
        stderr(&o)
    );
    tune_takes_an_ensemble(&dir, model, other, t);
}

/// `gnmt tune --model a b` tunes the ensemble as translate runs it: the settings go beside `a`
/// (naming `b`), translate with that ensemble starts from them, exactly as with the flags, and
/// translate with `a` alone says they were tuned for two models. `dir` is a copy of `model`.
fn tune_takes_an_ensemble(dir: &Path, model: &Path, other: &Path, t: &Path) {
    let grid = ["--beams", "2", "--alphas", "1.0", "--betas", "0.3"];
    let o = tune_on_valid(&[dir, other], &[&grid[..], &["--p-value", "1"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("an ensemble of 2"), "{}", stdout(&o));
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("search.json")).unwrap()).unwrap();
    assert_eq!(rec["beam"].as_u64(), Some(2), "{rec}");
    assert_eq!(
        rec["ensemble"][0].as_str(),
        Some(other.display().to_string().as_str()),
        "{rec}"
    );
    let translate = |models: [&Path; 2], extra: &[&str], out: &Path| {
        let o = translate_valid(&models, extra, out);
        assert!(o.status.success(), "{}", stderr(&o));
        stderr(&o)
    };
    let tuned_out = t.join("ensemble-tuned.de");
    let log = translate([dir, other], &[], &tuned_out);
    assert!(
        log.contains("tuned by `gnmt tune`") && !log.contains("were tuned for"),
        "{log}"
    );
    let flags_out = t.join("ensemble-flags.de");
    let flags = ["--beam", "2", "--alpha", "1.0", "--beta", "0.3"];
    translate([model, other], &flags, &flags_out);
    assert_eq!(
        std::fs::read(&tuned_out).unwrap(),
        std::fs::read(&flags_out).unwrap()
    );
    let o = translate_valid(&[dir], &["--greedy"], &t.join("alone.de"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("were tuned for 2 model(s)"),
        "{}",
        stderr(&o)
    );
}

/// A corpus directory as a user has one: SPLIT.LANG files, the languages in its name, one side
/// gzipped.
fn recipe_corpus(dir: &Path) -> PathBuf {
    let corpus = dir.join("toy-en-de");
    std::fs::create_dir_all(&corpus).unwrap();
    for (split, from) in [("train", "train"), ("valid", "valid"), ("test", "valid")] {
        for lang in ["en", "de"] {
            let text = std::fs::read(data().join(format!("{from}.{lang}"))).unwrap();
            if split == "train" && lang == "de" {
                use std::io::Write;
                let f = std::fs::File::create(corpus.join("train.de.gz")).unwrap();
                let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
                gz.write_all(&text).unwrap();
                gz.finish().unwrap();
            } else {
                std::fs::write(corpus.join(format!("{split}.{lang}")), text).unwrap();
            }
        }
    }
    corpus
}

/// The recipe on the toy corpus: `tiny`, one thread; returns its last line, the test BLEU.
fn run_recipe(corpus: &Path, out: &Path, args: &[&str]) -> String {
    run_recipe_logged(corpus, out, args).0
}

/// [`run_recipe`], with what it wrote to stderr as well.
fn run_recipe_logged(corpus: &Path, out: &Path, args: &[&str]) -> (String, String) {
    let o = run(std::process::Command::new("bash")
        .arg(repo().join("scripts/train-recipe.sh"))
        .arg(corpus)
        .args(args)
        .args(["--preset", "tiny", "--threads", "1", "--out"])
        .arg(out)
        .env("GNMT_BIN", env!("CARGO_BIN_EXE_gnmt"))
        .env("OMP_WAIT_POLICY", "PASSIVE"));
    assert!(o.status.success(), "{}", stderr(&o));
    let last = stdout(&o).lines().last().unwrap_or("").to_string();
    assert!(last.starts_with("TEST BLEU "), "{}", stdout(&o));
    (last, stderr(&o))
}

#[test]
fn the_recipe_script_trains_tunes_and_ends_with_the_test_bleu() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = recipe_corpus(tmp.path());
    let recipe = |out: &Path, args: &[&str]| run_recipe(&corpus, out, args);
    let out = tmp.path().join("out");
    let last = recipe(&out, &["--steps", "12"]);
    assert!(last.contains("toy-en-de en->de"), "{last}");
    // The training time in tenths of a minute (a toy run takes less than one).
    let minutes = last
        .split_once(" min of training")
        .and_then(|(head, _)| head.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no training time: {last}"));
    assert!(
        minutes.contains('.') && minutes.parse::<f64>().is_ok_and(|m| m >= 0.0),
        "{last}"
    );
    let results = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        results.contains("BLEU|nrefs:1") && results.contains("Steps of 64 sentences: 12,"),
        "{results}"
    );
    // The search settings gnmt tune chose sit beside the model the test was translated with.
    let chosen = if last.contains("averaged model") {
        out.join("averaged")
    } else {
        out.join("run/best")
    };
    assert!(chosen.join("search.json").exists(), "{last}");
    // And the precision check that makes the fastest faithful path its default.
    assert!(chosen.join("precision.json").exists(), "{last}");
    assert!(results.contains("by default on this CPU"), "{results}");
    assert_eq!(
        std::fs::read_to_string(out.join("test.hyp"))
            .unwrap()
            .lines()
            .count(),
        60
    );
    // --models 2: two runs of half the steps each (seeds 1 and 2, one vocabulary), translated
    // as one ensemble; --set-model gives the second a setting of its own.
    let ens = tmp.path().join("ensemble");
    recipe(
        &ens,
        &[
            "--steps",
            "24",
            "--models",
            "2",
            "--set-model",
            "2",
            "model.word_dropout=0.1",
        ],
    );
    let results = std::fs::read_to_string(ens.join("results.md")).unwrap();
    assert!(
        results.contains("Steps of 64 sentences: 12/12,")
            && results.contains("the ensemble of the 2: "),
        "{results}"
    );
    // A run's config.toml line setting `key` (it holds what was set beyond the preset).
    let setting = |run: &str, key: &str| {
        let cfg = std::fs::read_to_string(ens.join(run).join("config.toml")).unwrap();
        cfg.lines()
            .find(|l| l.starts_with(&format!("{key} =")))
            .map(str::to_string)
    };
    assert_eq!(setting("run", "seed").as_deref(), Some("seed = 1"));
    assert_eq!(setting("run2", "seed").as_deref(), Some("seed = 2"));
    assert_eq!(setting("run", "word_dropout"), None);
    assert_eq!(
        setting("run2", "word_dropout").as_deref(),
        Some("word_dropout = 0.1")
    );
    assert!(
        results.contains("; model 2 model.word_dropout=0.1 only"),
        "{results}"
    );
    let hyp = std::fs::read_to_string(ens.join("test.hyp")).unwrap();
    assert_eq!(hyp.lines().count(), 60);
    // The ensemble is tuned as one: the settings beside its first model name the second.
    assert!(results.contains("| tuned search |"), "{results}");
    let records: Vec<String> = [ens.join("averaged"), ens.join("run/best")]
        .iter()
        .filter_map(|first| std::fs::read_to_string(first.join("search.json")).ok())
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0].contains("\"ensemble\""), "{}", records[0]);
    // A directory whose name does not tell the languages is refused with what to do.
    let o = run(std::process::Command::new("bash")
        .arg(repo().join("scripts/train-recipe.sh"))
        .arg(tmp.path())
        .env("GNMT_BIN", env!("CARGO_BIN_EXE_gnmt")));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("give --src and --tgt"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_recipe_measures_the_speed_with_model_1_itself_and_trains_it_on_to_the_steps_that_fit() {
    // Under --minutes without --speed, model 1 trains for a sixth of the budget (at least a
    // quarter of a minute) with the epoch limit as its length, is stopped there
    // (--stop-after-minutes), sized by the steps it made and resumed to that many: one run,
    // nothing thrown away, validated each twelfth of its final length.
    let tmp = tempfile::tempdir().unwrap();
    let corpus = recipe_corpus(tmp.path());
    let out = tmp.path().join("measured");
    // (An earlier run in the same directory, started over: its steps are not counted as made.)
    run_recipe(&corpus, &out, &["--steps", "24"]);
    let (last, log) = run_recipe_logged(&corpus, &out, &["--minutes", "1", "--epochs", "10000"]);
    assert!(last.contains("toy-en-de en->de"), "{last}");
    assert!(
        log.contains("model 1 measures this machine's speed"),
        "{log}"
    );
    let leg = stop_line(&log)
        .map(|(n, _)| n as u64)
        .unwrap_or_else(|| panic!("the measuring leg did not stop on time:\n{log}"));
    assert!(
        log.contains(&format!("train-recipe.sh: {leg} steps in ")),
        "the speed was not measured on the leg's {leg} steps:\n{log}"
    );
    let steps: u64 = std::fs::read_to_string(out.join("steps.1"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The decay of the GNMT schedule (from two thirds of the run) starts after the leg.
    assert!(
        steps.is_multiple_of(24) && steps >= 120 && steps * 2 >= leg * 3,
        "leg {leg}, steps {steps}"
    );
    let metrics = std::fs::read_to_string(out.join("run/metrics.jsonl")).unwrap();
    let last_valid = format!("{{\"step\":{steps},\"valid_bleu\"");
    assert!(
        metrics.contains(&last_valid),
        "no validation at step {steps}"
    );
    assert!(out
        .join(format!("run/checkpoints/step-{steps:08}"))
        .exists());
    let results = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        results.contains(&format!("Steps of 64 sentences: {steps}, training "))
            && results.contains(&format!("(the speed measured by model 1: {leg} steps in ")),
        "{results}"
    );
}

#[test]
fn the_recipe_sizes_each_model_of_an_ensemble_by_the_time_left() {
    // Under --minutes, model 1 is sized by the machine's speed (here given: --speed 300, so
    // 1 minute x 300 x 0.9 for validation / 2 models = 135, down to a multiple of 24: 120) and
    // model 2 by the speed model 1 had and the minutes left (at least 24 steps when none are
    // left, as on a loaded machine): each model's steps are kept in OUT/steps.K (for --resume),
    // each run trains its own count, and results.md lists them.
    let tmp = tempfile::tempdir().unwrap();
    let corpus = recipe_corpus(tmp.path());
    let out = tmp.path().join("budget");
    let last = run_recipe(
        &corpus,
        &out,
        &[
            "--minutes",
            "1",
            "--speed",
            "300",
            "--models",
            "2",
            "--epochs",
            "100",
        ],
    );
    assert!(last.contains("toy-en-de en->de"), "{last}");
    let steps: Vec<u64> = (1..=2)
        .map(|k| {
            let f = out.join(format!("steps.{k}"));
            let text = std::fs::read_to_string(&f).unwrap();
            text.trim().parse().unwrap()
        })
        .collect();
    assert_eq!(steps[0], 120, "{steps:?}");
    assert!(steps[1] >= 24 && steps[1].is_multiple_of(24), "{steps:?}");
    let results = std::fs::read_to_string(out.join("results.md")).unwrap();
    let listed = format!("Steps of 64 sentences: {}/{},", steps[0], steps[1]);
    assert!(
        results.contains(&listed) && results.contains("the ensemble of the 2: "),
        "{listed}\n{results}"
    );
    for (run, n) in [("run", steps[0]), ("run2", steps[1])] {
        let metrics = std::fs::read_to_string(out.join(run).join("metrics.jsonl")).unwrap();
        let last_valid = format!("{{\"step\":{n},\"valid_bleu\"");
        assert!(
            metrics.contains(&last_valid),
            "{run}: no validation at step {n}"
        );
    }
}

/// scripts/gpu-check.sh, the one script a rare and short GPU lease runs, runs its `check` part
/// on the CPU (`GNMT_CHECK_DEVICE=cpu`: Gloo for NCCL) on the fixture: doctor's smoke test, a
/// one-rank run under torchrun, a model trained, translated on the device and on the CPU, tuned
/// and served. A broken step would otherwise first show on a GPU, spending its minutes.
#[test]
fn the_gpu_check_script_runs_its_steps_on_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = tmp.path().join("m30k");
    std::fs::create_dir_all(&corpus).unwrap();
    for (from, to) in [
        ("train", "train"),
        ("valid", "valid"),
        ("valid", "test2016"),
    ] {
        for lang in ["en", "de"] {
            std::fs::copy(
                data().join(format!("{from}.{lang}")),
                corpus.join(format!("{to}.{lang}")),
            )
            .unwrap();
        }
    }
    let venv_bin = torchrun().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        venv_bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // The script's PART on the CPU, its files under OUT.
    let gpu_check = |part: &str, out: &Path| {
        let mut c = std::process::Command::new("bash");
        c.arg(repo().join("scripts/gpu-check.sh"))
            .arg(part)
            .env("PATH", &path)
            .env("OUT", out)
            .env("GNMT_BIN", env!("CARGO_BIN_EXE_gnmt"))
            .env("GNMT_CHECK_DEVICE", "cpu")
            .env("OMP_WAIT_POLICY", "PASSIVE");
        c
    };
    let out = tmp.path().join("out");
    let o = run(gpu_check("check", &out)
        .env("GNMT_M30K", &corpus)
        .env("GNMT_MEASURE_MINUTES", "0.1")
        .env("GNMT_TRAIN_MINUTES", "0.2")
        .env("GNMT_CHECK_PRESET", "tiny"));
    let log = stdout(&o);
    assert!(o.status.success(), "{log}\n{}", stderr(&o));
    assert!(log.contains("failed: none"), "{log}");
    assert!(log.contains("Gloo data-parallel run ok"), "{log}");
    assert!(
        log.contains("serve answered 15 of 15 requests, 0 wrongly"),
        "{log}"
    );
    let report = std::fs::read_to_string(out.join("m30k.md")).unwrap();
    assert!(
        report.contains("test2016, search on cpu (beam 5), best checkpoint: ")
            && report.contains("translations differ on 0 lines")
            && report.contains("defaults (beam 5, alpha 0.6, beta 0.1): BLEU"),
        "{report}"
    );
    let hyps = std::fs::read_to_string(out.join("m30k-test.hyp")).unwrap();
    assert_eq!(hyps.lines().count(), 60);
    assert!(std::fs::read_to_string(out.join("doctor.txt"))
        .unwrap()
        .contains("smoke: all checks passed on Cpu"));
    // `cpu`: every precision of both sides at 1 and 2 threads, and training, one tagged JSON
    // line each (synthetic sentences: no model given).
    let cpu_out = tmp.path().join("cpu-out");
    let o = run(gpu_check("cpu", &cpu_out)
        .env("GNMT_CPU_PRESET", "tiny")
        .env("GNMT_CPU_SENTENCES", "8"));
    let log = stdout(&o);
    assert!(o.status.success(), "{log}\n{}", stderr(&o));
    assert!(log.contains("failed: none"), "{log}");
    let lines = std::fs::read_to_string(cpu_out.join("bench-cpu.jsonl")).unwrap();
    let mut runs = Vec::new();
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["tokens_per_s"].as_f64().unwrap() > 0.0, "{line}");
        runs.push(v["run"].as_str().unwrap().to_string());
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let amx = cpuinfo.split_whitespace().any(|f| f == "amx_int8");
    let mut want = Vec::new();
    for t in [1, 2] {
        for p in ["fp32", "bf16", "int8"] {
            want.push(format!("gnmt-translate-{p}-t{t}"));
            want.push(format!("pytorch-translate-{p}-t{t}"));
        }
        if amx {
            want.push(format!("gnmt-translate-int8-vnni-t{t}"));
        }
    }
    // Where the CPU has AVX-VNNI, int8 on that build and float32 on AVX2 (both capped at AVX2).
    if cpuinfo.split_whitespace().any(|f| f == "avx_vnni") {
        want.push("gnmt-translate-int8-avxvnni-t1".to_string());
        want.push("gnmt-translate-fp32-avx2-t1".to_string());
    }
    for p in ["fp32", "bf16"] {
        want.push(format!("gnmt-train-{p}-t1"));
        want.push(format!("pytorch-train-{p}-t1"));
    }
    assert_eq!(runs, want);
}
