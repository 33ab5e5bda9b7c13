//! Reading text files line by line, plain or gzip, with errors that name the file and line.
//! Here (and not in gnmt-data) so that the libtorch- and tokenizer-free `gnmt-eval` reads its
//! files exactly as training and translation do.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// What can go wrong reading a text file.
#[derive(Debug)]
pub enum TextError {
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    Utf8 {
        path: PathBuf,
        line: usize,
        column: usize,
    },
}

impl std::fmt::Display for TextError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TextError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            TextError::Utf8 { path, line, column } => write!(
                f,
                "{}: line {line}: invalid UTF-8 (at byte {column})",
                path.display()
            ),
        }
    }
}

// The message already holds the I/O error's text: no `source()`, so a report says it once.
impl std::error::Error for TextError {}

/// Opens a file for reading, decompressing `.gz` transparently; `-` is standard input.
pub fn open(path: &Path) -> Result<Box<dyn BufRead + Send>, TextError> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(BufReader::new(std::io::stdin())));
    }
    let f = File::open(path).map_err(|e| TextError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(BufReader::with_capacity(
            1 << 20,
            flate2::read::MultiGzDecoder::new(f),
        )))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 20, f)))
    }
}

/// Iterates over the lines of a text file (split on `\n` only, the newline removed, a `\r`
/// before it kept as Python's `newline="\n"` does). Invalid UTF-8 is an error naming the line.
pub struct Lines {
    path: PathBuf,
    reader: Box<dyn BufRead + Send>,
    lineno: usize,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines")
            .field("path", &self.path)
            .field("lineno", &self.lineno)
            .finish()
    }
}

impl Lines {
    pub fn open(path: &Path) -> Result<Self, TextError> {
        Ok(Lines {
            path: path.to_path_buf(),
            reader: open(path)?,
            lineno: 0,
            buf: Vec::new(),
        })
    }

    /// 1-based number of the line returned last.
    pub fn line_number(&self) -> usize {
        self.lineno
    }
}

impl Iterator for Lines {
    type Item = Result<String, TextError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.buf.clear();
        match self.reader.read_until(b'\n', &mut self.buf) {
            Ok(0) => None,
            Ok(_) => {
                self.lineno += 1;
                if self.buf.last() == Some(&b'\n') {
                    self.buf.pop();
                }
                match std::str::from_utf8(&self.buf) {
                    Ok(s) => Some(Ok(s.to_string())),
                    Err(e) => Some(Err(TextError::Utf8 {
                        path: self.path.clone(),
                        line: self.lineno,
                        column: e.valid_up_to() + 1,
                    })),
                }
            }
            Err(e) => Some(Err(TextError::Io {
                path: self.path.clone(),
                source: e,
            })),
        }
    }
}

/// All lines of a file.
pub fn read_lines(path: &Path) -> Result<Vec<String>, TextError> {
    Lines::open(path)?.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn lines_plain_gz_and_bad_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.txt");
        std::fs::write(&p, b"one\r\ntwo\n\nfour").unwrap();
        assert_eq!(read_lines(&p).unwrap(), ["one\r", "two", "", "four"]);
        let g = dir.path().join("a.txt.gz");
        let mut e =
            flate2::write::GzEncoder::new(File::create(&g).unwrap(), flate2::Compression::fast());
        e.write_all(b"x\ny\n").unwrap();
        e.finish().unwrap();
        assert_eq!(read_lines(&g).unwrap(), ["x", "y"]);
        let b = dir.path().join("bad.txt");
        std::fs::write(&b, b"ok\nbad \xff here\n").unwrap();
        let err = read_lines(&b).unwrap_err().to_string();
        assert!(err.contains("bad.txt") && err.contains("line 2"), "{err}");
    }
}
