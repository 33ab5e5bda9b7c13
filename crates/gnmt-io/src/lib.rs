//! # gnmt-io
//!
//! How gnmt-rs writes what a user keeps: outputs, tokenizers, prepared corpora, checkpoints and
//! model directories appear complete or not at all, and two jobs writing next to each other never
//! share a temporary name.
//!
//! - [`temp_path`]: a temporary name beside a destination, unique to this process and call
//!   (`test.de` and `test.fr` never both write `test.partial`).
//! - [`AtomicFile`]: a file written under a temporary name, fsynced and renamed over the
//!   destination on [`AtomicFile::commit`]; dropped uncommitted, the temporary file is removed.
//! - [`write_file`]: the same for a whole buffer.
//! - [`text`]: text files (plain or gzip) line by line, errors naming the file and line.
//! - [`resume::ResumableFile`]: an output that a killed job continues (`gnmt translate --resume`).
//! - [`replace_dir`]: moves a fully written directory over another one without a moment where
//!   neither exists: the old one is renamed aside, the new one renamed in, then the old deleted.

pub mod resume;
pub mod text;

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name beside `dest` that no other process and no other call of this one uses:
/// `dir/.NAME.PID-N.tmp`, the full destination name kept (so `a.de` and `a.fr` differ).
pub fn temp_path(dest: &Path) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = dest
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let file = format!(".{name}.{}-{n}.tmp", std::process::id());
    match dest.parent() {
        Some(p) => p.join(file),
        None => PathBuf::from(file),
    }
}

/// fsyncs a directory, so that renames inside it survive a crash.
pub fn fsync_dir(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

fn parent_or_dot(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// A file being written under a temporary name; it replaces `dest` only on [`commit`](Self::commit).
#[derive(Debug)]
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    file: Option<io::BufWriter<File>>,
}

impl AtomicFile {
    /// Creates the temporary file beside `dest` (which is left untouched until the commit).
    pub fn create(dest: &Path) -> io::Result<Self> {
        let tmp = temp_path(dest);
        let file = File::create(&tmp)?;
        Ok(AtomicFile {
            dest: dest.to_path_buf(),
            tmp,
            file: Some(io::BufWriter::new(file)),
        })
    }

    /// Where the data goes until the commit.
    pub fn temp(&self) -> &Path {
        &self.tmp
    }

    /// Flushes, fsyncs and renames the file over the destination.
    pub fn commit(mut self) -> io::Result<()> {
        let Some(w) = self.file.take() else {
            return Err(io::Error::other("already committed"));
        };
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&self.tmp, &self.dest)?;
        fsync_dir(parent_or_dot(&self.dest))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.write(buf),
            None => Err(io::Error::other("already committed")),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Writes `data` to `dest` atomically (temporary file, fsync, rename).
pub fn write_file(dest: &Path, data: impl AsRef<[u8]>) -> io::Result<()> {
    let mut f = AtomicFile::create(dest)?;
    f.write_all(data.as_ref())?;
    f.commit()
}

/// Moves the fully written directory `new` to `dest`, replacing what is there. Every file in
/// `new` is fsynced first. At every moment either the old or the new directory is at `dest`
/// (or, between the two renames, the old one is at a name beside it): a crash never loses both.
pub fn replace_dir(new: &Path, dest: &Path) -> io::Result<()> {
    for e in std::fs::read_dir(new)? {
        let e = e?;
        if e.file_type()?.is_file() {
            File::open(e.path())?.sync_all()?;
        }
    }
    fsync_dir(new)?;
    let aside = if dest.exists() {
        let aside = temp_path(dest).with_extension("old");
        std::fs::rename(dest, &aside)?;
        Some(aside)
    } else {
        None
    };
    if let Err(e) = std::fs::rename(new, dest) {
        // Put the old one back rather than leave nothing at `dest`.
        if let Some(a) = &aside {
            let _ = std::fs::rename(a, dest);
        }
        return Err(e);
    }
    fsync_dir(parent_or_dot(dest))?;
    if let Some(a) = aside {
        std::fs::remove_dir_all(a)?;
    }
    Ok(())
}

/// A fresh temporary directory beside `dest`, filled by `fill`, then moved over `dest` with
/// [`replace_dir`]. On an error the temporary directory is removed and `dest` is untouched;
/// `io_err` turns this function's own I/O errors into the caller's.
pub fn write_dir<E>(
    dest: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
    io_err: impl Fn(io::Error) -> E,
) -> Result<(), E> {
    let tmp = temp_path(dest);
    std::fs::create_dir_all(&tmp).map_err(&io_err)?;
    let result = fill(&tmp).and_then(|()| replace_dir(&tmp, dest).map_err(&io_err));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_keep_the_full_name_and_never_repeat() {
        let a = temp_path(Path::new("out/test.de"));
        let b = temp_path(Path::new("out/test.fr"));
        let c = temp_path(Path::new("out/test.de"));
        assert_eq!(a.parent(), Some(Path::new("out")));
        let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name(&a).starts_with(".test.de."), "{a:?}");
        assert!(name(&b).starts_with(".test.fr."), "{b:?}");
        assert_ne!(a, c);
        assert_ne!(a.with_extension(""), b.with_extension(""));
    }

    #[test]
    fn two_atomic_files_beside_each_other_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let (p1, p2) = (dir.path().join("test.de"), dir.path().join("test.fr"));
        let mut a = AtomicFile::create(&p1).unwrap();
        let mut b = AtomicFile::create(&p2).unwrap();
        assert_ne!(a.temp(), b.temp());
        for i in 0..1000 {
            writeln!(a, "de {i}").unwrap();
            writeln!(b, "fr {i}").unwrap();
        }
        a.commit().unwrap();
        b.commit().unwrap();
        let de = std::fs::read_to_string(&p1).unwrap();
        let fr = std::fs::read_to_string(&p2).unwrap();
        assert_eq!(de.lines().count(), 1000);
        assert!(de.lines().all(|l| l.starts_with("de ")));
        assert!(fr.lines().all(|l| l.starts_with("fr ")));
        // Nothing else is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn an_uncommitted_file_leaves_the_destination_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keep.txt");
        std::fs::write(&p, "old").unwrap();
        {
            let mut f = AtomicFile::create(&p).unwrap();
            f.write_all(b"half").unwrap();
        }
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        write_file(&p, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
    }

    #[test]
    fn replacing_a_directory_keeps_one_at_every_step() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("best");
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(dest.join("a"), "old").unwrap();
        let new = dir.path().join("new");
        std::fs::create_dir(&new).unwrap();
        std::fs::write(new.join("a"), "new").unwrap();
        replace_dir(&new, &dest).unwrap();
        assert_eq!(std::fs::read_to_string(dest.join("a")).unwrap(), "new");
        assert!(!new.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "old one deleted"
        );
        // A failing fill leaves the destination as it was, and no temporary directory.
        let r: Result<(), io::Error> = write_dir(
            &dest,
            |tmp| {
                std::fs::write(tmp.join("a"), "partial")?;
                Err(io::Error::other("disk full"))
            },
            |e| e,
        );
        assert!(r.is_err());
        assert_eq!(std::fs::read_to_string(dest.join("a")).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A failed rename in puts the old directory back.
        let missing = dir.path().join("never-written");
        assert!(replace_dir(&missing, &dest).is_err());
        assert_eq!(std::fs::read_to_string(dest.join("a")).unwrap(), "new");
    }
}
