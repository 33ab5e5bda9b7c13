//! sacreBLEU's cache, laid out as sacreBLEU lays it out so that either tool uses the other's
//! downloads: `$SACREBLEU/NAME/raw/` holds each download (`NAME.BASENAME`, `/` in the name as
//! `_`) and what its archive unpacks to; `$SACREBLEU/NAME/NAME.PAIR.FIELD` the plain text.
//!
//! A download is complete once its file is at its name: it is fetched under a temporary name,
//! its MD5 checked, its archive unpacked, and only then renamed into place, so a failed or
//! interrupted download leaves nothing sacreBLEU or gnmt would take for a finished one. The same
//! `.lock` files as sacreBLEU's (flock) keep two processes from fetching one file at once.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

use crate::catalogue::Dataset;
use crate::Error;

/// How long to wait for another process's download of the same file (sacreBLEU waits 60 s).
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    /// `$SACREBLEU`, else `~/.sacrebleu`, as sacreBLEU decides.
    pub fn from_env() -> Cache {
        let root = match std::env::var_os("SACREBLEU") {
            Some(dir) => PathBuf::from(dir),
            None => std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("."))
                .join(".sacrebleu"),
        };
        Cache { root }
    }

    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `$SACREBLEU/NAME`: the plain-text files.
    pub fn set_dir(&self, set: &Dataset) -> PathBuf {
        self.root.join(&set.name)
    }

    /// `$SACREBLEU/NAME/raw`: the downloads and what they unpack to.
    pub fn raw_dir(&self, set: &Dataset) -> PathBuf {
        self.set_dir(set).join("raw")
    }

    /// Where the download from `url` is kept.
    pub fn download_path(&self, set: &Dataset, url: &str) -> PathBuf {
        let base = url.rsplit('/').next().unwrap_or(url);
        self.raw_dir(set)
            .join(format!("{}.{base}", set.name.replace('/', "_")))
    }

    /// `$SACREBLEU/NAME/NAME.PAIR.FIELD` (`:` in a field as `-`).
    pub fn text_path(&self, set: &Dataset, pair: &str, field: &str) -> PathBuf {
        self.set_dir(set).join(format!(
            "{}.{pair}.{}",
            set.name.replace('/', "_"),
            field.replace(':', "-")
        ))
    }

    /// A tokenizer model sacreBLEU keeps at `$SACREBLEU/models/BASENAME` (its spm/flores
    /// SentencePiece models), downloaded there first if missing.
    pub fn model(&self, url: &str) -> Result<PathBuf, Error> {
        let dir = self.root.join("models");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let base = url.rsplit('/').next().unwrap_or(url);
        let path = dir.join(base);
        self.ensure_file(url, &path, None, &dir)?;
        Ok(path)
    }

    /// Makes sure every download of `set` is in the cache: fetched, checked and unpacked.
    pub fn ensure_downloaded(&self, set: &Dataset) -> Result<(), Error> {
        let raw = self.raw_dir(set);
        std::fs::create_dir_all(&raw).map_err(|e| Error::io(&raw, e))?;
        for (i, url) in set.data.iter().enumerate() {
            let md5 = set.md5.as_ref().and_then(|m| m.get(i)).map(String::as_str);
            self.ensure_file(url, &self.download_path(set, url), md5, &raw)?;
        }
        Ok(())
    }

    /// One download, under its lock; an empty file counts as missing, as in sacreBLEU.
    fn ensure_file(
        &self,
        url: &str,
        dest: &Path,
        md5: Option<&str>,
        raw: &Path,
    ) -> Result<(), Error> {
        if is_nonempty(dest) {
            return Ok(());
        }
        let _lock = lock(dest)?;
        if is_nonempty(dest) {
            return Ok(()); // another process fetched it while we waited
        }
        tracing::info!("downloading {url} to {}", dest.display());
        let tmp = gnmt_io::temp_path(dest);
        let result = fetch(url, &tmp)
            .and_then(|sum| check_md5(url, &sum, md5))
            .and_then(|()| unpack(&tmp, dest, raw))
            .and_then(|()| std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e)));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

fn is_nonempty(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.len() > 0)
}

/// sacreBLEU's `DEST.lock`, held (flock, as portalocker takes it) until dropped.
fn lock(dest: &Path) -> Result<File, Error> {
    let mut name = dest.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    let file = File::options()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let start = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if start.elapsed() < LOCK_WAIT => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::io(
                    &path,
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        "another process has held this lock for 60 s",
                    ),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&path, e)),
        }
    }
}

/// GETs `url` into `dest`, returning the MD5 sum of what was written.
fn fetch(url: &str, dest: &Path) -> Result<String, Error> {
    let fail = |reason: String| Error::Download {
        url: url.to_string(),
        reason,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut response = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let mut body = response.body_mut().as_reader();
    let mut out = File::create(dest).map_err(|e| Error::io(dest, e))?;
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = body.read(&mut buf).map_err(|e| fail(e.to_string()))?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| Error::io(dest, e))?;
    }
    out.sync_all().map_err(|e| Error::io(dest, e))?;
    Ok(hex(&md5.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn check_md5(url: &str, got: &str, expected: Option<&str>) -> Result<(), Error> {
    match expected {
        Some(want) if want != got => Err(Error::Checksum {
            url: url.to_string(),
            got: got.to_string(),
            expected: want.to_string(),
        }),
        _ => Ok(()),
    }
}

/// Unpacks a `.tar.gz`, `.tgz` or `.zip` download (named by `dest`, held at `file`) into `raw`;
/// other downloads are used as they are.
fn unpack(file: &Path, dest: &Path, raw: &Path) -> Result<(), Error> {
    let name = dest.to_string_lossy();
    let bad = |reason: String| Error::Archive {
        path: dest.to_path_buf(),
        reason,
    };
    if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        let f = File::open(file).map_err(|e| Error::io(file, e))?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(f));
        archive.set_preserve_permissions(false);
        archive.set_overwrite(true);
        // `unpack` refuses entries that would land outside `raw` (absolute paths, `..`).
        archive.unpack(raw).map_err(|e| bad(e.to_string()))?;
    } else if name.ends_with(".zip") {
        let f = File::open(file).map_err(|e| Error::io(file, e))?;
        let mut archive = zip::ZipArchive::new(f).map_err(|e| bad(e.to_string()))?;
        // `extract` refuses entries that would land outside `raw`.
        archive.extract(raw).map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}
