//! # gnmt-data
//!
//! Parallel corpora for gnmt-rs, in pure Rust: reading text (plain or gzip) with errors that name
//! the file and line, validating and filtering sentence pairs, preparing corpora once into
//! memory-mapped binary arrays ([`prepare`]), and turning them into id batches.

pub mod batch;
pub mod prepare;
pub use gnmt_io::text;

#[cfg(test)]
mod test_corpus;

pub use batch::{epoch_batches, padding_waste, FilterConfig, FilterReport, PairCorpus, SplitMix64};

use std::path::PathBuf;

/// What can go wrong reading or preparing data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Text(#[from] gnmt_io::text::TextError),
    #[error("{} has {src_lines} lines but {} has {tgt_lines}: the sides of a parallel corpus must align", src.display(), tgt.display())]
    Misaligned {
        src: PathBuf,
        tgt: PathBuf,
        src_lines: usize,
        tgt_lines: usize,
    },
    #[error("{}: line {line}: {reason}", path.display())]
    BadPair {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("prepared corpus {}: {msg}", path.display())]
    Prepared { path: PathBuf, msg: String },
    #[error("{0}")]
    Other(String),
}
