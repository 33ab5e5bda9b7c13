//! The server in-process, over real HTTP on 127.0.0.1, with a small random model: answers equal
//! the search of the same sentences alone, whatever they were batched with; bounded queue;
//! every bad request its status; a stop answers every accepted request first.

use super::*;
use gnmt_model::{ModelConfig, Seq2Seq};
use std::time::Instant;
use tch::{nn, Device};

const T: Duration = Duration::from_secs(60);

fn tokenizer() -> SubwordTokenizer {
    let lines = [
        "a man in a red shirt is riding a bike",
        "two dogs play in the snow",
        "the woman sells fruit at the market",
        "children are running on the beach",
    ];
    SubwordTokenizer::train(
        lines.iter().map(|s| s.to_string()).cycle().take(200),
        300,
        gnmt_tokenizer::VocabKind::Bpe,
    )
    .unwrap()
}

/// libtorch has one global generator: seeding and drawing the weights under one lock keeps
/// tests (and client threads) that build models at the same time from drawing each other's.
static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn model(vocab: i64) -> (nn::VarStore, Seq2Seq) {
    let _lock = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(7);
    let vs = nn::VarStore::new(Device::Cpu);
    let mut cfg = ModelConfig::preset("tiny", vocab).unwrap();
    cfg.init_range = 1.0;
    let m = Seq2Seq::new(&vs.root(), &cfg).unwrap();
    (vs, m)
}

fn config(queue: usize) -> ServeConfig {
    ServeConfig {
        limits: RequestLimits {
            max_sentences: 16,
            max_beam: 8,
        },
        batch: BatchLimits {
            sentences: 32,
            tokens: 4096,
            wait: Duration::from_millis(5),
            quiet: Duration::from_millis(1),
        },
        queue_sentences: queue,
        max_body_bytes: 4096,
        deadline: Duration::from_secs(60),
        defaults: Settings {
            beam: 3,
            alpha: 0.6,
            beta: 0.1,
            nbest: 1,
        },
    }
}

fn sentence(i: usize) -> String {
    let words = [
        "a", "man", "dogs", "the", "snow", "market", "red", "two", "beach",
    ];
    (0..(i % 7 + 1))
        .map(|k| words[(i * 5 + k * 3) % words.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

fn body(sentences: &[String]) -> String {
    serde_json::json!({ "text": sentences }).to_string()
}

/// Runs a server over the random model while `f` talks to it; returns `f`'s result and the
/// server's summary. `f` gets the address and the stopper.
fn with_server<R: Send>(
    queue: usize,
    workers: usize,
    f: impl FnOnce(SocketAddr, Stopper) -> R + Send,
) -> (R, String) {
    let tok = tokenizer();
    let (_vs, m) = model(tok.vocab_size() as i64);
    let server = Server::start("127.0.0.1:0", config(queue)).unwrap();
    let (addr, stopper) = (server.local_addr(), server.stopper());
    let model = Model {
        search: SharedSearch::new(&m, None, Device::Cpu),
        tokenizer: tok,
        base: SearchConfig::default(),
        workers,
        threads_per_worker: 1,
    };
    std::thread::scope(|s| {
        let client = s.spawn(|| {
            // Stops the server however `f` ends (a failed assertion too), or the test hangs.
            struct StopOnDrop(Stopper);
            impl Drop for StopOnDrop {
                fn drop(&mut self) {
                    self.0.stop();
                }
            }
            let _guard = StopOnDrop(stopper.clone());
            f(addr, stopper.clone())
        });
        let summary = server.run(model).unwrap();
        (client.join().unwrap(), summary)
    })
}

/// The best translations of `sentences` searched alone, one call each, as `gnmt translate`'s
/// search does them.
fn alone(sentences: &[String], beam: usize) -> Vec<String> {
    let tok = tokenizer();
    let (_vs, m) = model(tok.vocab_size() as i64);
    let cfg = SearchConfig {
        beam,
        ..SearchConfig::default()
    };
    sentences
        .iter()
        .map(|s| {
            let ids = tok.encode(s).unwrap();
            let h = gnmt_translate::translate_batch(&m, &[ids], &cfg, Device::Cpu).unwrap();
            tok.decode(&h[0][0].tokens).unwrap().replace('\n', " ")
        })
        .collect()
}

/// Waits until `/health` says the model is loaded.
fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + T;
    while client::get(addr, "/health", T).unwrap().status != 200 {
        assert!(Instant::now() < deadline, "the server never became ready");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The translations of a `200` answer (the test fails on any other).
fn translations(r: &client::Response) -> Vec<String> {
    r.translations()
        .unwrap_or_else(|| panic!("HTTP {}: {}", r.status, r.body))
}

#[test]
fn concurrent_requests_are_batched_and_each_gets_its_own_sentences() {
    let all: Vec<String> = (0..60).map(sentence).collect();
    let expected = alone(&all, 3);
    let (got, summary) = with_server(1000, 2, |addr, _| {
        wait_ready(addr);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|c| {
                    let all = &all;
                    s.spawn(move || {
                        // Client c sends sentences c, c+8, ... in requests of 1 to 3.
                        let mine: Vec<usize> = (c..all.len()).step_by(8).collect();
                        let mut out = Vec::new();
                        for group in mine.chunks(c % 3 + 1) {
                            let text: Vec<String> = group.iter().map(|&i| all[i].clone()).collect();
                            let r = client::post(addr, "/v1/translate", &body(&text), T).unwrap();
                            out.extend(group.iter().copied().zip(translations(&r)));
                        }
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        })
    });
    assert_eq!(got.len(), all.len());
    for (i, t) in got {
        assert_eq!(t, expected[i], "sentence {i}: {:?}", all[i]);
    }
    assert!(summary.contains("60 sentences"), "{summary}");
}

#[test]
fn options_health_metrics_and_bad_requests() {
    let ((), _) = with_server(1000, 1, |addr, _| {
        let r = client::get(addr, "/health", T).unwrap();
        // Ready once run() has the model; the client may be early.
        assert!(r.status == 200 || r.status == 503, "{r:?}");
        wait_ready(addr);
        let r = client::post(
            addr,
            "/v1/translate",
            r#"{"text": ["two dogs", "a man"], "beam": 4, "nbest": 2, "alignments": true}"#,
            T,
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["nbest"].as_array().unwrap().len(), 2, "{v}");
        assert_eq!(v["nbest"][0].as_array().unwrap().len(), 2, "{v}");
        assert_eq!(v["alignments"].as_array().unwrap().len(), 2, "{v}");
        assert_eq!(
            translations(&r),
            alone(&["two dogs".into(), "a man".into()], 4)
        );
        let long = vec!["a"; 400].join(" ");
        let r = client::post(addr, "/v1/translate", &body(&[long]), T).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.body.contains("truncated to the model's limit"),
            "{}",
            r.body
        );
        for (bytes, status, says) in [
            (&b"{"[..], 400, "invalid JSON"),
            (br#"{"text": 3}"#, 400, "field `text`"),
            (br#"{"text": "a", "beam": 0}"#, 400, "field `beam`"),
            (br#"{"text": ""}"#, 400, "empty"),
            (b"{\"text\": \"\xc3\x28\"}", 400, "UTF-8"),
            (&[b'x'; 5000][..], 413, ""),
        ] {
            let r = client::request(addr, "POST", "/v1/translate", bytes, T).unwrap();
            assert_eq!(
                r.status,
                status,
                "{:?}: {}",
                String::from_utf8_lossy(bytes),
                r.body
            );
            assert!(r.body.contains(says), "{}", r.body);
        }
        let many: Vec<String> = (0..17).map(sentence).collect();
        let r = client::post(addr, "/v1/translate", &body(&many), T).unwrap();
        assert_eq!(r.status, 413, "{}", r.body);
        // A client that sends half a body and hangs up.
        {
            use std::io::Write;
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(
                b"POST /v1/translate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"te",
            )
            .unwrap();
        }
        let r = client::post(addr, "/v1/translate", r#"{"text": "a man"}"#, T).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        let m = client::get(addr, "/metrics", T).unwrap();
        assert_eq!(m.status, 200);
        // The five above, and the half body (whose reading fails) may count as a sixth.
        assert!(
            m.body.contains("gnmt_requests_total{code=\"400\"} 5")
                || m.body.contains("gnmt_requests_total{code=\"400\"} 6"),
            "{}",
            m.body
        );
        assert!(
            m.body.contains("gnmt_requests_total{code=\"413\"} 2"),
            "{}",
            m.body
        );
        assert!(
            m.body.contains("gnmt_truncated_sentences_total 1"),
            "{}",
            m.body
        );
        assert_eq!(client::get(addr, "/health", T).unwrap().status, 200);
    });
}

#[test]
fn a_small_queue_refuses_with_503_and_retry_after_and_loses_nothing() {
    let ((ok, busy), summary) = with_server(4, 1, |addr, _| {
        wait_ready(addr);
        let results: Vec<(u16, Option<String>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|c| {
                    s.spawn(move || {
                        let text: Vec<String> = (0..3).map(|k| sentence(c * 3 + k)).collect();
                        let r = client::post(addr, "/v1/translate", &body(&text), T).unwrap();
                        if r.status == 200 {
                            assert_eq!(translations(&r), alone(&text, 3));
                        }
                        (r.status, r.header("retry-after").map(str::to_string))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let ok = results.iter().filter(|r| r.0 == 200).count();
        let busy: Vec<_> = results.iter().filter(|r| r.0 != 200).collect();
        assert!(
            busy.iter()
                .all(|r| r.0 == 503 && r.1.as_deref() == Some("1")),
            "{busy:?}"
        );
        // Still healthy and serving after the burst.
        let r = client::post(addr, "/v1/translate", r#"{"text": "a man"}"#, T).unwrap();
        assert_eq!(r.status, 200);
        (ok, busy.len())
    });
    assert_eq!(ok + busy, 16);
    assert!(
        ok >= 1 && busy >= 1,
        "{ok} answered, {busy} refused: the queue limit did nothing"
    );
    assert!(
        summary.starts_with(&format!("{} requests", 16 + 1)),
        "{summary}"
    );
}

#[test]
fn a_stop_answers_every_accepted_request_first() {
    let (statuses, _) = with_server(1000, 1, |addr, stopper| {
        wait_ready(addr);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..6)
                .map(|c| {
                    s.spawn(move || {
                        let text: Vec<String> = (0..8).map(|k| sentence(c * 8 + k)).collect();
                        client::post(addr, "/v1/translate", &body(&text), T)
                            .map(|r| r.status)
                            .unwrap_or(0)
                    })
                })
                .collect();
            // Stop while they are in flight.
            std::thread::sleep(Duration::from_millis(30));
            stopper.stop();
            handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>()
        })
    });
    // Each request either got in (and its answer) or was refused a connection; none is cut off.
    assert!(statuses.iter().all(|&s| s == 200 || s == 0), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
}
