//! Downloads from a server on 127.0.0.1 serving fixture archives, the conversions of each raw
//! format, the cache left behind by failures, and the subset filters.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::*;

/// What the test server answers for a path: the bytes, or (`cut`) a body shorter than its
/// Content-Length, as a connection that breaks mid-download.
#[derive(Clone)]
struct Served {
    body: Vec<u8>,
    cut: bool,
}

/// A tiny HTTP/1.1 server on 127.0.0.1 counting the requests it answers.
struct Server {
    base: String,
    hits: Arc<AtomicUsize>,
}

fn serve(files: HashMap<String, Served>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let count = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
            }
            count.fetch_add(1, Ordering::SeqCst);
            let path = request.split(' ').nth(1).unwrap_or("").to_string();
            match files.get(&path) {
                Some(f) => {
                    let len = f.body.len();
                    let sent = if f.cut { len / 2 } else { len };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(&f.body[..sent]);
                }
                None => {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            }
        }
    });
    Server { base, hits }
}

fn tgz(files: &[(&str, &str)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, text) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, text.as_bytes()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn md5_hex(bytes: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const SRC_SGM: &str = "<srcset setid=\"t\" srclang=\"any\">\n<doc sysid=\"ref\" docid=\"a.1\" genre=\"news\" origlang=\"en\">\n<seg id=\"1\">Hello ,  world </seg>\n<seg id=\"2\">Second\tline</seg>\n</doc>\n<doc sysid=\"ref\" docid=\"b.2\" genre=\"news\" origlang=\"de\">\n<seg id=\"1\"> Dritte </seg>\n</doc>\n</srcset>\n";
const REF_SGM: &str = "<refset setid=\"t\" srclang=\"any\">\n<doc sysid=\"ref\" docid=\"a.1\" genre=\"news\" origlang=\"en\">\n<seg id=\"1\">Hallo, Welt</seg>\n<seg id=\"2\">Zweite Zeile</seg>\n</doc>\n<doc sysid=\"ref\" docid=\"b.2\" genre=\"news\" origlang=\"de\">\n<seg id=\"1\">Third</seg>\n</doc>\n</refset>\n";

fn catalogue(base: &str, md5: &str) -> Catalogue {
    Catalogue::from_json(&format!(
        r#"{{"sacrebleu_version": "2.6.0", "subsets": {{}}, "datasets": [
        {{"name": "toy/sgml", "kind": "fake_sgml", "data": ["{base}/toy/test.tgz"], "md5": ["{md5}"],
          "description": "toy", "citation": null, "refs": null,
          "langpairs": [["en-de", ["test/src.en.sgm", "test/ref.de.sgm"]]]}}
        ]}}"#
    ))
    .unwrap()
}

fn lines(path: &Path) -> Vec<String> {
    read_text(path).unwrap()
}

#[test]
fn a_test_set_is_downloaded_once_checked_unpacked_and_converted_as_sacrebleu_does() {
    let archive = tgz(&[("test/src.en.sgm", SRC_SGM), ("test/ref.de.sgm", REF_SGM)]);
    let md5 = md5_hex(&archive);
    let server = serve(HashMap::from([(
        "/toy/test.tgz".to_string(),
        Served {
            body: archive,
            cut: false,
        },
    )]));
    let dir = tempfile::tempdir().unwrap();
    let sets = TestSets {
        catalogue: catalogue(&server.base, &md5),
        cache: Cache::new(dir.path()),
    };
    let data = sets.pair("toy/sgml", "en-de").unwrap();
    assert_eq!(
        data.field_names(),
        ["src", "ref", "docid", "genre", "origlang"]
    );
    // sacreBLEU's layout: NAME/raw/NAME_.BASENAME, NAME/NAME_.PAIR.FIELD.
    let set_dir = dir.path().join("toy/sgml");
    assert!(set_dir.join("raw/toy_sgml.test.tgz").is_file());
    assert!(set_dir.join("raw/test/src.en.sgm").is_file());
    assert_eq!(data.source().unwrap(), set_dir.join("toy_sgml.en-de.src"));
    assert_eq!(
        lines(data.source().unwrap()),
        ["Hello , world", "Second line", "Dritte"]
    );
    assert_eq!(data.references(), [set_dir.join("toy_sgml.en-de.ref")]);
    assert_eq!(
        lines(&set_dir.join("toy_sgml.en-de.docid")),
        ["a.1", "a.1", "b.2"]
    );
    assert_eq!(
        lines(&set_dir.join("toy_sgml.en-de.origlang")),
        ["en", "en", "de"]
    );
    assert_eq!(
        data.echo(&["src".into(), "ref".into()]).unwrap(),
        [
            "Hello , world\tHallo, Welt",
            "Second line\tZweite Zeile",
            "Dritte\tThird"
        ]
    );
    assert!(data.echo(&["all".into(), "src".into()]).is_err());
    let err = data.field("hyp").unwrap_err().to_string();
    assert!(err.contains("src, ref, docid"), "{err}");
    // In the cache now: no second request, even for another process's look at it.
    let hits = server.hits.load(Ordering::SeqCst);
    assert_eq!(hits, 1);
    sets.pair("toy/sgml", "en-de").unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), hits);
    // origlang and non-origlang.
    let only = |o: &str| Subset {
        origlang: Some(o.into()),
        subset: None,
    };
    assert_eq!(
        sets.subset_mask("toy/sgml", "en-de", &only("de")).unwrap(),
        [false, false, true]
    );
    assert_eq!(
        sets.subset_mask("toy/sgml", "en-de", &only("non-de"))
            .unwrap(),
        [true, true, false]
    );
    let subset = Subset {
        origlang: None,
        subset: Some("x".into()),
    };
    assert!(sets
        .subset_mask("toy/sgml", "en-de", &subset)
        .unwrap_err()
        .to_string()
        .contains("no subset annotation"));
}

#[test]
fn a_bad_checksum_a_broken_connection_or_a_404_leave_nothing_in_the_cache() {
    let archive = tgz(&[("test/src.en.sgm", SRC_SGM), ("test/ref.de.sgm", REF_SGM)]);
    let server = serve(HashMap::from([
        (
            "/toy/test.tgz".to_string(),
            Served {
                body: archive.clone(),
                cut: false,
            },
        ),
        (
            "/cut/toy/test.tgz".to_string(),
            Served {
                body: archive.clone(),
                cut: true,
            },
        ),
    ]));
    let dir = tempfile::tempdir().unwrap();
    let check = |base: String, md5: &str, expect: &str| {
        let sets = TestSets {
            catalogue: catalogue(&base, md5),
            cache: Cache::new(dir.path()),
        };
        let err = sets.pair("toy/sgml", "en-de").unwrap_err().to_string();
        assert!(err.contains(expect), "{err}");
        let raw = dir.path().join("toy/sgml/raw");
        let left: Vec<String> = std::fs::read_dir(&raw)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert!(!dir.path().join("toy/sgml/toy_sgml.en-de.src").exists());
    };
    check(
        server.base.clone(),
        "0123456789abcdef0123456789abcdef",
        "MD5 sum",
    );
    check(
        format!("{}/cut", server.base),
        &md5_hex(&archive),
        "Peer disconnected",
    );
    check(
        format!("{}/missing", server.base),
        &md5_hex(&archive),
        "404",
    );
}

#[test]
fn wmt_xml_gives_sources_references_systems_and_documents_as_sacrebleu_does() {
    let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<dataset id="t">
 <collection id="general">
  <doc id="d1" origlang="en" domain="news">
   <src lang="en"><p><seg id="2">Second &amp; last</seg><seg id="1">First  one</seg><seg id="3">No reference</seg></p></src>
   <ref lang="de" translator="B"><p><seg id="1">Erste B</seg><seg id="2">Zweite B</seg><seg id="3"></seg></p></ref>
   <ref lang="de" translator="A"><p><seg id="1">Erste A</seg><seg id="2"> Zweite   A </seg></p></ref>
   <hyp system="sys1" language="de"><p><seg id="1">h1</seg><seg id="2">h2</seg><seg id="3">h3</seg></p></hyp>
  </doc>
  <doc id="d2" origlang="de" domain="social">
   <src lang="en"><p><seg id="1">Third</seg></p></src>
   <ref lang="de" translator="A"><p><seg id="1">Dritte</seg></p></ref>
   <hyp system="sys1" language="de"><p><seg id="1">h4</seg></p></hyp>
  </doc>
  <doc id="ts" origlang="en" testsuite="x">
   <src lang="en"><p><seg id="1">suite</seg></p></src>
  </doc>
 </collection>
</dataset>
"#;
    let archive = tgz(&[("xml/t.en-de.xml", xml)]);
    let server = serve(HashMap::from([(
        "/x.tgz".to_string(),
        Served {
            body: archive,
            cut: false,
        },
    )]));
    let json = format!(
        r#"{{"sacrebleu_version": "2.6.0", "datasets": [
        {{"name": "toyxml", "kind": "wmt_xml", "data": ["{}/x.tgz"], "md5": null,
          "description": "toy", "citation": null, "refs": ["A"],
          "langpairs": [["en-de", ["xml/t.en-de.xml"]], ["de-en", {{"path": "xml/t.en-de.xml", "refs": ["A", "B"]}}]]}}
        ]}}"#,
        server.base
    );
    let dir = tempfile::tempdir().unwrap();
    let sets = TestSets {
        catalogue: Catalogue::from_json(&json).unwrap(),
        cache: Cache::new(dir.path()),
    };
    let data = sets.pair("toyxml", "en-de").unwrap();
    assert_eq!(
        data.field_names(),
        ["src", "ref:A", "ref:B", "docid", "origlang", "sys1", "domain"]
    );
    assert_eq!(
        data.echo(&["all".into()]).unwrap(),
        [
            "First one\tErste A\tErste B\td1\ten\th1\tnews",
            "Second & last\tZweite A\tZweite B\td1\ten\th2\tnews",
            "Third\tDritte\t\td2\tde\th4\tsocial",
        ]
    );
    assert_eq!(
        data.references(),
        [dir.path().join("toyxml/toyxml.en-de.ref-A")]
    );
    // `ref` means the first named reference.
    assert_eq!(
        data.field("ref").unwrap(),
        dir.path().join("toyxml/toyxml.en-de.ref-A")
    );
    // A pair's own choice of translators.
    assert_eq!(sets.pair("toyxml", "de-en").unwrap().references().len(), 2);
    let domain = Subset {
        origlang: None,
        subset: Some("^soc".into()),
    };
    assert_eq!(
        sets.subset_mask("toyxml", "en-de", &domain).unwrap(),
        [false, false, true]
    );
}

#[test]
fn plain_text_and_tsv_sets_and_files_that_are_not_archives() {
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all("Eins  \nZwei\u{a0}\n".as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let archive = tgz(&[
        ("p/src.en", "One \t\nTwo\n"),
        ("m/a.tsv", "1\tsrc one\tref one\n2\tsrc two\t\n"),
    ]);
    let server = serve(HashMap::from([
        (
            "/p.tgz".to_string(),
            Served {
                body: archive,
                cut: false,
            },
        ),
        (
            "/ref.de.gz".to_string(),
            Served {
                body: gz,
                cut: false,
            },
        ),
    ]));
    let b = &server.base;
    let json = format!(
        r#"{{"sacrebleu_version": "2.6.0", "datasets": [
        {{"name": "plain", "kind": "plain_text", "data": ["{b}/p.tgz", "{b}/ref.de.gz"], "md5": null,
          "description": "toy", "citation": null, "refs": null,
          "langpairs": [["en-de", ["p/src.en", "plain.ref.de.gz"]]]}},
        {{"name": "tab", "kind": "tsv", "data": ["{b}/p.tgz"], "md5": null,
          "description": "toy", "citation": null, "refs": null,
          "langpairs": [["en-fr", ["1:m/a.tsv", "2:m/a.tsv"]], ["x-y", ["m/a.tsv", "m/a.tsv"]]]}}
        ]}}"#
    );
    let dir = tempfile::tempdir().unwrap();
    let sets = TestSets {
        catalogue: Catalogue::from_json(&json).unwrap(),
        cache: Cache::new(dir.path()),
    };
    let plain = sets.pair("plain", "en-de").unwrap();
    assert_eq!(lines(plain.source().unwrap()), ["One", "Two"]);
    assert_eq!(lines(plain.references()[0]), ["Eins", "Zwei"]);
    let tab = sets.pair("tab", "en-fr").unwrap();
    assert_eq!(
        tab.echo(&["src".into(), "ref".into()]).unwrap(),
        ["src one\tref one", "src two\t"]
    );
    let tab = sets.pair("tab", "x-y").unwrap();
    assert_eq!(lines(tab.source().unwrap()), ["1", "2"]);
    assert_eq!(lines(tab.references()[0]), ["src one", "src two"]);
    let err = sets.pair("tab", "fr-en").unwrap_err().to_string();
    assert!(err.contains("en-fr, x-y"), "{err}");
}

#[test]
fn a_prepared_cache_is_used_without_any_network() {
    // sacreBLEU's own text files in place: nothing is fetched (the URL is unreachable).
    let dir = tempfile::tempdir().unwrap();
    let sets = TestSets {
        catalogue: catalogue("http://127.0.0.1:9", "0"),
        cache: Cache::new(dir.path()),
    };
    let set_dir = dir.path().join("toy/sgml");
    std::fs::create_dir_all(&set_dir).unwrap();
    for field in ["src", "ref", "docid", "genre", "origlang"] {
        std::fs::write(
            set_dir.join(format!("toy_sgml.en-de.{field}")),
            format!("{field}\n"),
        )
        .unwrap();
    }
    let data = sets.pair("toy/sgml", "en-de").unwrap();
    assert_eq!(
        data.echo(&["ref".into(), "src".into()]).unwrap(),
        ["ref\tsrc"]
    );
    let mut buf = String::new();
    std::fs::File::open(data.source().unwrap())
        .unwrap()
        .read_to_string(&mut buf)
        .unwrap();
    assert_eq!(buf, "src\n");
}

#[test]
fn tokenizer_models_are_downloaded_once_into_the_models_directory() {
    let server = serve(HashMap::from([(
        "/flores/sacrebleu_tokenizer_spm.model".to_string(),
        Served {
            body: b"model bytes".to_vec(),
            cut: false,
        },
    )]));
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(dir.path());
    let url = format!("{}/flores/sacrebleu_tokenizer_spm.model", server.base);
    let path = cache.model(&url).unwrap();
    assert_eq!(
        path,
        dir.path().join("models/sacrebleu_tokenizer_spm.model")
    );
    assert_eq!(std::fs::read(&path).unwrap(), b"model bytes");
    cache.model(&url).unwrap();
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    let err = cache
        .model(&format!("{}/missing.model", server.base))
        .unwrap_err()
        .to_string();
    assert!(err.contains("404"), "{err}");
    assert!(!dir.path().join("models/missing.model").exists());
}

#[test]
fn wmt_addition_reads_plain_references_and_wmt08_has_no_document_fields() {
    let archive = tgz(&[
        ("t/src.en.sgm", SRC_SGM),
        ("t/ref.de", "Hallo, Welt  \nZweite Zeile\nThird\n"),
    ]);
    let server = serve(HashMap::from([(
        "/a.tgz".to_string(),
        Served {
            body: archive,
            cut: false,
        },
    )]));
    let b = &server.base;
    let json = format!(
        r#"{{"sacrebleu_version": "2.6.0", "datasets": [
        {{"name": "wmt19/google/x", "kind": "wmt_addition", "data": ["{b}/a.tgz"], "md5": null,
          "description": "toy", "citation": null, "refs": null,
          "langpairs": [["en-de", ["t/src.en.sgm", "t/ref.de"]]]}},
        {{"name": "wmt08x", "kind": "iwslt_xml", "data": ["{b}/a.tgz"], "md5": null,
          "description": "toy", "citation": null, "refs": null,
          "langpairs": [["en-de", ["t/src.en.sgm", "t/src.en.sgm", "t/src.en.sgm"]]]}}
        ]}}"#
    );
    let dir = tempfile::tempdir().unwrap();
    let sets = TestSets {
        catalogue: Catalogue::from_json(&json).unwrap(),
        cache: Cache::new(dir.path()),
    };
    let add = sets.pair("wmt19/google/x", "en-de").unwrap();
    assert_eq!(
        add.field_names(),
        ["src", "ref", "docid", "genre", "origlang"]
    );
    assert_eq!(
        lines(add.references()[0]),
        ["Hallo, Welt", "Zweite Zeile", "Third"]
    );
    assert_eq!(
        add.source().unwrap(),
        dir.path().join("wmt19/google/x/wmt19_google_x.en-de.src")
    );
    // Names starting with wmt08 have no document fields; two references are ref:0 and ref:1.
    let w08 = sets.pair("wmt08x", "en-de").unwrap();
    assert_eq!(w08.field_names(), ["src", "ref:0", "ref:1"]);
    assert_eq!(w08.references().len(), 2);
    assert_eq!(
        w08.field("ref").unwrap(),
        dir.path().join("wmt08x/wmt08x.en-de.ref-0")
    );
}
