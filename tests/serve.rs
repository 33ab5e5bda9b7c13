//! `gnmt serve` end to end, as a user runs it: a trained model, the binary listening on
//! 127.0.0.1, real HTTP. Translations equal `gnmt translate`'s byte for byte however requests
//! are batched; a load test (16 clients, 400 requests) loses and duplicates nothing, with and
//! without a queue small enough to refuse; bad input gets its status; SIGTERM answers every
//! request in flight, then exits 0.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use gnmt_serve::client;
use std::collections::HashMap;
use std::io::BufRead;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(120);

/// A tiny model trained for a few steps on the fixture (its translations are poor but fixed).
fn train_model(dir: &Path) -> std::path::PathBuf {
    let d = repo().join("tests/fixtures/m30k");
    let tok = dir.join("tokenizer.json");
    let o = run(gnmt()
        .args(["vocab", "--size", "600", "-o"])
        .arg(&tok)
        .arg("--src")
        .arg(d.join("train.en"))
        .arg("--tgt")
        .arg(d.join("train.de")));
    assert!(o.status.success(), "{}", stderr(&o));
    let run_dir = dir.join("run");
    let o = run(gnmt()
        .arg("train")
        .arg("--train-src")
        .arg(d.join("train.en"))
        .arg("--train-tgt")
        .arg(d.join("train.de"))
        .arg("--vocab")
        .arg(&tok)
        .args(["--preset", "tiny", "--batch-size", "32", "--lr", "0.01"])
        .args(["--threads", "2", "--max-steps", "40", "--out"])
        .arg(&run_dir));
    assert!(o.status.success(), "{}", stderr(&o));
    run_dir.join("final")
}

/// A running `gnmt serve` and the address it logged.
struct Served {
    child: Child,
    addr: SocketAddr,
    log: std::sync::mpsc::Receiver<String>,
}

impl Served {
    fn start(model: &Path, extra: &[&str]) -> Served {
        let mut child = gnmt()
            .args([
                "serve",
                "--port",
                "0",
                "--threads",
                "2",
                "--beam",
                "3",
                "--model",
            ])
            .arg(model)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, log) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + T;
        let addr = loop {
            let line = log
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("gnmt serve never said where it listens");
            if let Some(rest) = line.split("listening on http://").nth(1) {
                break rest.trim().parse::<SocketAddr>().unwrap();
            }
        };
        while client::get(addr, "/health", T).unwrap().status != 200 {
            assert!(Instant::now() < deadline, "never ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        Served { child, addr, log }
    }

    /// SIGTERM, then the exit status and the rest of the log.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let o = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .output()
            .unwrap();
        assert!(o.status.success());
        let status = self.child.wait().unwrap();
        let log: Vec<String> = self.log.try_iter().collect();
        (status, log.join("\n"))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The translations of a `200` answer (the test fails on any other).
fn translations(r: &client::Response) -> Vec<String> {
    r.translations()
        .unwrap_or_else(|| panic!("HTTP {}: {}", r.status, r.body))
}

fn body(sentences: &[&String]) -> String {
    serde_json::json!({ "text": sentences }).to_string()
}

/// 16 clients send `requests` requests of 1-8 sentences of `pool` between them; returns, per
/// request, its sentences' indices and the answer (status, or 0 without a connection, and the
/// translations).
fn load(addr: SocketAddr, pool: &[String], requests: usize) -> Vec<(Vec<usize>, u16, Vec<String>)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|c| {
                s.spawn(move || {
                    let mut out = Vec::new();
                    for r in (c..requests).step_by(16) {
                        let idx: Vec<usize> = (0..r % 8 + 1)
                            .map(|k| (r * 7 + k * 13) % pool.len())
                            .collect();
                        let text: Vec<&String> = idx.iter().map(|&i| &pool[i]).collect();
                        // Status 0: no connection (a stopped server refuses them).
                        let (status, got) =
                            match client::post(addr, "/v1/translate", &body(&text), T) {
                                Ok(r) if r.status == 200 => (200, translations(&r)),
                                Ok(r) => (r.status, Vec::new()),
                                Err(_) => (0, Vec::new()),
                            };
                        out.push((idx, status, got));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    })
}

#[test]
fn serve_translates_as_translate_does_under_load_and_stops_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = train_model(tmp.path());
    // The sentence pool: the validation set, an empty line and one over the length limit.
    let mut pool: Vec<String> =
        std::fs::read_to_string(repo().join("tests/fixtures/m30k/valid.en"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
    pool.push(String::new());
    pool.push(vec!["a dog runs"; 120].join(" "));
    let input = tmp.path().join("pool.en");
    std::fs::write(&input, pool.join("\n") + "\n").unwrap();
    let out = tmp.path().join("pool.de");
    let o = run(gnmt()
        .args(["translate", "--threads", "2", "--beam", "3", "--model"])
        .arg(&model)
        .arg("-i")
        .arg(&input)
        .arg("-o")
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let expected: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(expected.len(), pool.len());

    let server = Served::start(&model, &[]);
    let addr = server.addr;
    // One sentence per request, one at a time.
    for (i, s) in pool.iter().enumerate().take(12) {
        let r = client::post(
            addr,
            "/v1/translate",
            &serde_json::json!({"text": s}).to_string(),
            T,
        )
        .unwrap();
        if s.is_empty() {
            assert_eq!(r.status, 400, "a lone empty text is refused: {}", r.body);
            continue;
        }
        assert_eq!(translations(&r), [expected[i].clone()], "sentence {i}");
    }
    let long = pool.len() - 1;
    let r = client::post(addr, "/v1/translate", &body(&[&pool[long]]), T).unwrap();
    assert_eq!(translations(&r), [expected[long].clone()]);
    assert!(r.body.contains("truncated"), "{}", r.body);
    // Mixed into batches with others: 16 clients, 400 requests of 1-8 sentences.
    let answers = load(addr, &pool, 400);
    assert_eq!(answers.len(), 400, "every request answered exactly once");
    for (idx, status, got) in &answers {
        assert_eq!(*status, 200);
        let want: Vec<&String> = idx.iter().map(|&i| &expected[i]).collect();
        assert_eq!(got.iter().collect::<Vec<_>>(), want, "sentences {idx:?}");
    }
    // Bad input, then still serving.
    for (bytes, status) in [
        (&b"{\"text\": [1, 2]}"[..], 400),
        (b"not json", 400),
        (b"{\"text\": \"\xff\xfe\"}", 400),
        (b"{\"text\": \"a\", \"beam\": 1000}", 400),
        (&vec![b' '; 2 << 20][..], 413),
    ] {
        let r = client::request(addr, "POST", "/v1/translate", bytes, T).unwrap();
        assert_eq!(r.status, status, "{}", r.body);
    }
    let metrics = client::get(addr, "/metrics", T).unwrap().body;
    assert!(metrics.contains("gnmt_batch_sentences_count"), "{metrics}");
    // Requests in flight when SIGTERM comes are answered; then exit 0.
    let (answers, (status, log)) = std::thread::scope(|s| {
        let clients = s.spawn(|| load(addr, &pool, 32));
        std::thread::sleep(Duration::from_millis(150));
        let stopped = server.terminate();
        (clients.join().unwrap(), stopped)
    });
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("stopped:"), "{log}");
    for (idx, status, got) in &answers {
        // Sent after the stop: refused at connect (status 0). Otherwise answered, and whole.
        assert!(
            *status == 200 || *status == 0,
            "status {status} at shutdown"
        );
        if *status == 200 {
            let want: Vec<&String> = idx.iter().map(|&i| &expected[i]).collect();
            assert_eq!(got.iter().collect::<Vec<_>>(), want);
        }
    }
    assert!(
        answers.iter().any(|a| a.1 == 200),
        "nothing was in flight at SIGTERM"
    );
}

#[test]
fn a_small_queue_refuses_some_with_503_and_loses_none() {
    let tmp = tempfile::tempdir().unwrap();
    let model = train_model(tmp.path());
    let pool: Vec<String> = std::fs::read_to_string(repo().join("tests/fixtures/m30k/valid.en"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let server = Served::start(
        &model,
        &[
            "--queue-sentences",
            "8",
            "--workers",
            "1",
            "--batch-size",
            "8",
        ],
    );
    let answers = load(server.addr, &pool, 400);
    assert_eq!(answers.len(), 400);
    let refused = answers.iter().filter(|a| a.1 == 503).count();
    let ok = answers.iter().filter(|a| a.1 == 200).count();
    assert_eq!(ok + refused, 400, "only 200 and 503");
    assert!(refused > 0 && ok > 0, "{ok} answered, {refused} refused");
    // Each answered request got its own sentences: the same text always gets the same answer.
    let mut seen: HashMap<usize, String> = HashMap::new();
    for (idx, _, got) in answers.iter().filter(|a| a.1 == 200) {
        for (i, t) in idx.iter().zip(got) {
            assert_eq!(
                seen.entry(*i).or_insert_with(|| t.clone()),
                t,
                "sentence {i}"
            );
        }
    }
    let r = client::post(server.addr, "/v1/translate", r#"{"text": "a dog"}"#, T).unwrap();
    assert_eq!(r.status, 200, "healthy after the burst: {}", r.body);
    let metrics = client::get(server.addr, "/metrics", T).unwrap().body;
    assert!(
        metrics.contains(&format!("gnmt_requests_total{{code=\"503\"}} {refused}")),
        "{metrics}"
    );
}
