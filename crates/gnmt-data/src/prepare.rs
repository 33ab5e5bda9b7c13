//! Prepared corpora: a parallel corpus tokenized once and stored as flat little-endian arrays
//! that are memory-mapped when read, so training never re-tokenizes and a corpus of millions of
//! pairs does not need its text, or even its ids, in RAM.
//!
//! A prepared directory holds `meta.json` (format, the tokenizer's hash, the filter options, the
//! source files' sizes and times, the filter report) and five arrays: `src.ids`/`tgt.ids` (u32
//! ids back to back), `src.offsets`/`tgt.offsets` (u64, one more than pairs) and `lines.u64`
//! (the 0-based line of each kept pair). A tokenizer or source file that changed makes the
//! directory stale, which [`open`] reports and [`is_current`] detects.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use gnmt_tokenizer::SubwordTokenizer;
use serde::{Deserialize, Serialize};

use crate::batch::{tokenize_pairs, Mapped, Store};
use crate::{DataError, FilterConfig, FilterReport, PairCorpus};

pub const FORMAT: &str = "gnmt-corpus-1";

/// What `meta.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreparedMeta {
    pub format: String,
    pub tokenizer_hash: String,
    pub src: PathBuf,
    pub tgt: PathBuf,
    /// Size and modification time of each source file, to notice when they change.
    pub src_stamp: String,
    pub tgt_stamp: String,
    pub max_len: usize,
    /// The length-ratio bound; `null` for none.
    pub max_ratio: Option<f64>,
    pub limit: Option<usize>,
    pub report: FilterReport,
    pub src_tokens: u64,
    pub tgt_tokens: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn stamp(path: &Path) -> Result<String, DataError> {
    let m = std::fs::metadata(path).map_err(io(path))?;
    let t = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{} bytes, mtime {t}", m.len()))
}

struct ArrayWriter {
    path: PathBuf,
    w: BufWriter<File>,
}

impl ArrayWriter {
    fn create(path: PathBuf) -> Result<Self, DataError> {
        let f = File::create(&path).map_err(io(&path))?;
        Ok(ArrayWriter {
            w: BufWriter::with_capacity(1 << 20, f),
            path,
        })
    }

    fn put_u32(&mut self, xs: &[u32]) -> Result<(), DataError> {
        for x in xs {
            self.w.write_all(&x.to_le_bytes()).map_err(io(&self.path))?;
        }
        Ok(())
    }

    fn put_u64(&mut self, x: u64) -> Result<(), DataError> {
        self.w.write_all(&x.to_le_bytes()).map_err(io(&self.path))
    }

    fn finish(self) -> Result<(), DataError> {
        let f = self.w.into_inner().map_err(|e| DataError::Io {
            path: self.path.clone(),
            source: e.into_error(),
        })?;
        f.sync_all().map_err(io(&self.path))
    }
}

/// Tokenizes and filters `src`/`tgt` into the prepared directory `out`, streaming (bounded
/// memory) and in parallel. The directory appears complete or not at all (temporary directory,
/// fsync, rename). `progress` gets the number of pairs read so far.
pub fn prepare(
    src: &Path,
    tgt: &Path,
    tok: &SubwordTokenizer,
    filter: &FilterConfig,
    limit: Option<usize>,
    out: &Path,
    mut progress: impl FnMut(usize),
) -> Result<PreparedMeta, DataError> {
    // The output replaces what is there: only ever a prepared corpus, never a directory of
    // the user's.
    if out.exists() && !out.join("meta.json").exists() {
        return Err(DataError::Prepared {
            path: out.to_path_buf(),
            msg: "the output exists and is not a prepared corpus (give a new directory)".into(),
        });
    }
    let tmp = gnmt_io::temp_path(out);
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    let result = prepare_into(src, tgt, tok, filter, limit, &tmp, &mut progress).and_then(|meta| {
        gnmt_io::replace_dir(&tmp, out)
            .map_err(io(out))
            .map(|()| meta)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// [`prepare`]'s work, into the temporary directory `tmp`.
fn prepare_into(
    src: &Path,
    tgt: &Path,
    tok: &SubwordTokenizer,
    filter: &FilterConfig,
    limit: Option<usize>,
    tmp: &Path,
    progress: &mut impl FnMut(usize),
) -> Result<PreparedMeta, DataError> {
    let mut w: Vec<ArrayWriter> = [
        "src.ids",
        "src.offsets",
        "tgt.ids",
        "tgt.offsets",
        "lines.u64",
    ]
    .iter()
    .map(|n| ArrayWriter::create(tmp.join(n)))
    .collect::<Result<_, _>>()?;
    let (mut so, mut to) = (0u64, 0u64);
    w[1].put_u64(0)?;
    w[3].put_u64(0)?;
    let mut seen = 0usize;
    let report = tokenize_pairs(src, tgt, tok, filter, limit, 50_000, |line, s, t| {
        w[0].put_u32(s)?;
        so += s.len() as u64;
        w[1].put_u64(so)?;
        w[2].put_u32(t)?;
        to += t.len() as u64;
        w[3].put_u64(to)?;
        w[4].put_u64(line as u64)?;
        if line + 1 >= seen + 10_000 {
            seen = line + 1;
            progress(seen);
        }
        Ok(())
    })?;
    for a in w {
        a.finish()?;
    }
    let meta = PreparedMeta {
        format: FORMAT.into(),
        tokenizer_hash: tok.hash().to_string(),
        src: src.to_path_buf(),
        tgt: tgt.to_path_buf(),
        src_stamp: stamp(src)?,
        tgt_stamp: stamp(tgt)?,
        max_len: filter.max_len,
        max_ratio: filter.max_ratio.is_finite().then_some(filter.max_ratio),
        limit,
        report,
        src_tokens: so,
        tgt_tokens: to,
    };
    let json = serde_json::to_string_pretty(&meta).map_err(|e| DataError::Other(e.to_string()))?;
    let meta_path = tmp.join("meta.json");
    std::fs::write(&meta_path, json).map_err(io(&meta_path))?;
    Ok(meta)
}

fn stale(dir: &Path, msg: impl Into<String>) -> DataError {
    DataError::Prepared {
        path: dir.to_path_buf(),
        msg: msg.into(),
    }
}

/// Reads `meta.json` of a prepared directory.
pub fn read_meta(dir: &Path) -> Result<PreparedMeta, DataError> {
    let p = dir.join("meta.json");
    let text = std::fs::read_to_string(&p).map_err(io(&p))?;
    let meta: PreparedMeta = serde_json::from_str(&text).map_err(|e| {
        stale(
            dir,
            format!("meta.json is not a prepared-corpus header: {e}"),
        )
    })?;
    if meta.format != FORMAT {
        return Err(stale(
            dir,
            format!("format `{}`, this version reads `{FORMAT}`", meta.format),
        ));
    }
    Ok(meta)
}

/// Whether `dir` holds `src`/`tgt` prepared with this tokenizer and these options, and the
/// files have not changed since.
pub fn is_current(
    dir: &Path,
    src: &Path,
    tgt: &Path,
    tok: &SubwordTokenizer,
    filter: &FilterConfig,
    limit: Option<usize>,
) -> bool {
    let Ok(m) = read_meta(dir) else {
        return false;
    };
    m.tokenizer_hash == tok.hash()
        && m.src == src
        && m.tgt == tgt
        && stamp(src).is_ok_and(|s| s == m.src_stamp)
        && stamp(tgt).is_ok_and(|s| s == m.tgt_stamp)
        && m.max_len == filter.max_len
        && m.max_ratio.unwrap_or(f64::INFINITY) == filter.max_ratio
        && m.limit == limit
}

#[allow(unsafe_code)]
fn map(path: &Path) -> Result<Mapped, DataError> {
    let f = File::open(path).map_err(io(path))?;
    let len = f.metadata().map_err(io(path))?.len();
    if len == 0 {
        return Ok(Mapped(None));
    }
    // SAFETY: the map is read-only and the files are private to gnmt (written once by
    // `prepare`, renamed into place, never modified); every length and offset is validated in
    // `open` before use, so a file truncated behind our back is an error there, not UB here.
    let m = unsafe { memmap2::Mmap::map(&f) }.map_err(io(path))?;
    Ok(Mapped(Some(m)))
}

/// The first id in an id file that is `>= vocab`. Read through a buffer, not the map: scanning
/// every id through the map would leave the whole corpus resident in this process.
fn first_id_outside(path: &Path, vocab: u32) -> Result<Option<u32>, DataError> {
    use std::io::Read;
    let mut f = File::open(path).map_err(io(path))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]).map_err(io(path))? {
                0 => break,
                k => n += k,
            }
        }
        let bad = buf[..n - n % 4]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .find(|&x| x >= vocab);
        if bad.is_some() || n < buf.len() {
            return Ok(bad);
        }
    }
}

/// Opens a prepared directory for `tok`, memory-mapping its arrays. A different tokenizer, a
/// truncated or inconsistent file, or ids outside the vocabulary are errors naming the directory.
pub fn open(dir: &Path, tok: &SubwordTokenizer) -> Result<(PairCorpus, PreparedMeta), DataError> {
    let meta = read_meta(dir)?;
    if meta.tokenizer_hash != tok.hash() {
        return Err(stale(
            dir,
            "prepared with a different tokenizer; run `gnmt prepare` again with this one",
        ));
    }
    let pairs = meta.report.kept;
    let side = |name: &str, tokens: u64| -> Result<Store, DataError> {
        let ids = map(&dir.join(format!("{name}.ids")))?;
        let offsets = map(&dir.join(format!("{name}.offsets")))?;
        let store = Store::Mapped { ids, offsets };
        let (i, o) = (store.ids(), store.offsets());
        if o.len() != pairs + 1 || i.len() as u64 != tokens || o.last() != Some(&tokens) {
            return Err(stale(
                dir,
                format!("{name}.ids or {name}.offsets is truncated or does not match meta.json"),
            ));
        }
        if o.windows(2).any(|w| w[0] > w[1]) {
            return Err(stale(dir, format!("{name}.offsets is not increasing")));
        }
        let vocab = tok.vocab_size() as u32;
        if let Some(bad) = first_id_outside(&dir.join(format!("{name}.ids")), vocab)? {
            return Err(stale(
                dir,
                format!("{name}.ids holds id {bad}, outside the vocabulary of {vocab}"),
            ));
        }
        Ok(store)
    };
    let src = side("src", meta.src_tokens)?;
    let tgt = side("tgt", meta.tgt_tokens)?;
    let lines_path = dir.join("lines.u64");
    let raw = std::fs::read(&lines_path).map_err(io(&lines_path))?;
    if raw.len() != pairs * 8 {
        return Err(stale(dir, "lines.u64 is truncated"));
    }
    let lines = raw
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect();
    Ok((PairCorpus { src, tgt, lines }, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_corpus::small_corpus as setup;

    #[test]
    fn prepared_corpus_equals_the_in_memory_one() {
        let (dir, tok, s, t) = setup();
        let f = FilterConfig {
            max_len: 40,
            max_ratio: f64::INFINITY,
            strict: false,
        };
        let out = dir.path().join("prep");
        let meta = prepare(&s, &t, &tok, &f, None, &out, |_| {}).unwrap();
        assert_eq!(
            (meta.report.kept, meta.report.empty, meta.report.too_long),
            (3, 1, 1)
        );
        assert!(!dir.path().join("prep.partial").exists());
        let (mapped, meta2) = open(&out, &tok).unwrap();
        assert_eq!(meta, meta2);
        let (mem, report) = PairCorpus::load(&s, &t, &tok, &f, None).unwrap();
        assert_eq!(report, meta.report);
        assert_eq!(mapped.len(), mem.len());
        for i in 0..mem.len() {
            assert_eq!(mapped.src(i), mem.src(i));
            assert_eq!(mapped.tgt(i), mem.tgt(i));
            assert_eq!(mapped.line(i), mem.line(i));
        }
        assert!(is_current(&out, &s, &t, &tok, &f, None));
        assert!(!is_current(&out, &s, &t, &tok, &f, Some(2)));
        // A changed source file makes it stale.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&t, "ein mann\nnicht leer\ndas pferd\nkurz\nder fluss!\n").unwrap();
        assert!(!is_current(&out, &s, &t, &tok, &f, None));
        // Preparing again replaces it; a directory of the user's is never replaced.
        prepare(&s, &t, &tok, &f, None, &out, |_| {}).unwrap();
        let mine = dir.path().join("mine");
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::write(mine.join("notes.txt"), "keep").unwrap();
        let e = prepare(&s, &t, &tok, &f, None, &mine, |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a prepared corpus"), "{e}");
        assert_eq!(
            std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
            "keep"
        );
    }

    #[test]
    fn stale_or_damaged_corpora_are_refused() {
        let (dir, tok, s, t) = setup();
        let out = dir.path().join("prep");
        prepare(&s, &t, &tok, &FilterConfig::default(), None, &out, |_| {}).unwrap();
        // Another tokenizer.
        let other = SubwordTokenizer::train(
            (0..50).map(|i| format!("ganz andere woerter {i}")),
            300,
            gnmt_tokenizer::VocabKind::Unigram,
        )
        .unwrap();
        let e = open(&out, &other).unwrap_err().to_string();
        assert!(
            e.contains("different tokenizer") && e.contains("prep"),
            "{e}"
        );
        // A truncated array.
        let ids = out.join("tgt.ids");
        let bytes = std::fs::read(&ids).unwrap();
        std::fs::write(&ids, &bytes[..bytes.len() - 4]).unwrap();
        let e = open(&out, &tok).unwrap_err().to_string();
        assert!(e.contains("tgt.ids") && e.contains("truncated"), "{e}");
        // Garbage header.
        std::fs::write(out.join("meta.json"), "{}").unwrap();
        let e = open(&out, &tok).unwrap_err().to_string();
        assert!(e.contains("meta.json"), "{e}");
    }

    #[test]
    fn misaligned_files_are_refused_with_both_counts() {
        let (dir, tok, s, _) = setup();
        let t = dir.path().join("short.txt");
        std::fs::write(&t, "eins\nzwei\n").unwrap();
        let e = prepare(
            &s,
            &t,
            &tok,
            &FilterConfig::default(),
            None,
            &dir.path().join("p"),
            |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("5 lines") && e.contains("has 2"), "{e}");
        assert!(!dir.path().join("p").exists());
    }
}
