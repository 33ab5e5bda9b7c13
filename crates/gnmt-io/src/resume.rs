//! An output file that survives a kill: written under a stable name beside its destination,
//! with a record of how many input lines it holds completely, so that a second run continues
//! after the last complete chunk, losing nothing and writing nothing twice.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Where a resumable output stands: the input lines it holds completely, the bytes they take,
/// and what the job was (a resume of another job is refused).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    pub lines: usize,
    pub bytes: u64,
    pub job: String,
}

/// A file written at `.NAME.partial` beside `dest`, its progress at `.NAME.partial.json`;
/// [`ResumableFile::commit`] renames it over `dest` and removes the record.
#[derive(Debug)]
pub struct ResumableFile {
    dest: PathBuf,
    data: PathBuf,
    record: PathBuf,
    job: String,
    file: io::BufWriter<File>,
    done: Progress,
}

/// Why an output cannot be resumed.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{0}: the interrupted output was made by another job ({1}); run without --resume to start over")]
    OtherJob(String, String),
    #[error("{0}: damaged progress record ({1}); run without --resume to start over")]
    Damaged(String, String),
}

fn hidden(dest: &Path, suffix: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    dest.with_file_name(format!(".{name}{suffix}"))
}

impl ResumableFile {
    /// Opens the output for `dest`. With `resume`, continues an interrupted output of the same
    /// `job` (a description of input and settings) if there is one; otherwise starts empty.
    pub fn open(dest: &Path, job: &str, resume: bool) -> Result<Self, ResumeError> {
        let data = hidden(dest, ".partial");
        let record = hidden(dest, ".partial.json");
        let io_err = |p: &Path| {
            let path = p.display().to_string();
            move |source| ResumeError::Io { path, source }
        };
        let done = match (resume, std::fs::read_to_string(&record)) {
            (true, Ok(text)) => {
                let p: Progress = serde_json::from_str(&text).map_err(|e| {
                    ResumeError::Damaged(record.display().to_string(), e.to_string())
                })?;
                if p.job != job {
                    return Err(ResumeError::OtherJob(dest.display().to_string(), p.job));
                }
                p
            }
            _ => Progress {
                lines: 0,
                bytes: 0,
                job: job.to_string(),
            },
        };
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&data)
            .map_err(io_err(&data))?;
        // What came after the last complete chunk (a chunk cut by the kill) goes.
        f.set_len(done.bytes).map_err(io_err(&data))?;
        f.seek(SeekFrom::End(0)).map_err(io_err(&data))?;
        Ok(ResumableFile {
            dest: dest.to_path_buf(),
            data,
            record,
            job: job.to_string(),
            file: io::BufWriter::new(f),
            done,
        })
    }

    /// Input lines already in the file (to skip in the input).
    pub fn lines_done(&self) -> usize {
        self.done.lines
    }

    /// Records that the file now holds `lines` input lines completely: flushes, fsyncs, then
    /// writes the record atomically.
    pub fn chunk_done(&mut self, lines: usize) -> io::Result<()> {
        self.file.flush()?;
        let f = self.file.get_ref();
        f.sync_data()?;
        self.done = Progress {
            lines,
            bytes: f.metadata()?.len(),
            job: self.job.clone(),
        };
        let text = serde_json::to_string(&self.done).map_err(io::Error::other)?;
        crate::write_file(&self.record, text)
    }

    /// Renames the complete output over the destination and removes the record.
    pub fn commit(mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file.get_ref().sync_all()?;
        std::fs::rename(&self.data, &self.dest)?;
        crate::fsync_dir(crate::parent_or_dot(&self.dest))?;
        match std::fs::remove_file(&self.record) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl Write for ResumableFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_output_resumes_after_its_last_complete_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.de");
        let mut f = ResumableFile::open(&dest, "job A", false).unwrap();
        f.write_all(b"a\nb\n").unwrap();
        f.chunk_done(2).unwrap();
        f.write_all(b"c\nd").unwrap(); // a chunk cut short by the kill
        f.flush().unwrap();
        drop(f);
        assert!(
            !dest.exists(),
            "nothing at the destination before the commit"
        );
        // Another job's output is not resumed; a damaged record is named.
        let e = ResumableFile::open(&dest, "job B", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("another job"), "{e}");
        let mut f = ResumableFile::open(&dest, "job A", true).unwrap();
        assert_eq!(f.lines_done(), 2);
        f.write_all(b"c\nd\n").unwrap();
        f.chunk_done(4).unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "a\nb\nc\nd\n");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "the partial file and its record are gone");
        // Without --resume a leftover is started over.
        let mut f = ResumableFile::open(&dest, "job A", false).unwrap();
        f.write_all(b"x\n").unwrap();
        drop(f);
        let f = ResumableFile::open(&dest, "job A", false).unwrap();
        assert_eq!(f.lines_done(), 0);
        f.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&dest).unwrap(), "");
        std::fs::write(hidden(&dest, ".partial.json"), "{").unwrap();
        let e = ResumableFile::open(&dest, "job A", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("damaged"), "{e}");
    }
}
