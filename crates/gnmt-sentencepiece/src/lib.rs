//! # gnmt-sentencepiece
//!
//! SentencePiece `.model` files, read and used to split text into pieces exactly as Google's
//! sentencepiece (0.2) does in `EncodeAsPieces`: its normalizer, the unigram model's Viterbi
//! search (sentencepiece's optimized encoder, float for float) and the BPE model's merges, byte
//! fallback and user-defined symbols. It exists for sacreBLEU's `spm`, `flores101` and
//! `flores200` BLEU tokenizers; it does not train or decode. Pure Rust.

mod normalizer;
mod proto;

use std::collections::BinaryHeap;
use std::path::Path;

use rustc_hash::FxHashMap;

pub use proto::{ModelProto, ModelType, PieceType};

use normalizer::{char_len, Normalizer};

/// What can go wrong loading a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("SentencePiece model: {0}")]
    Model(String),
}

/// A loaded model.
#[derive(Debug, Clone)]
pub struct SentencePiece {
    proto: ModelProto,
    normalizer: Normalizer,
    /// Normal, user-defined and unused pieces -> id (sentencepiece's `pieces_`).
    pieces: FxHashMap<String, usize>,
    /// Control, unknown and byte pieces -> id.
    reserved: FxHashMap<String, usize>,
    unk_id: usize,
    /// The longest piece in bytes (bounds the unigram search).
    max_piece_len: usize,
    min_score: f32,
    max_score: f32,
}

impl SentencePiece {
    /// Loads a `.model` file.
    pub fn open(path: &Path) -> Result<SentencePiece, Error> {
        let data = std::fs::read(path).map_err(|source| Error::Io {
            path: path.display().to_string(),
            source,
        })?;
        SentencePiece::from_bytes(&data)
    }

    pub fn from_bytes(data: &[u8]) -> Result<SentencePiece, Error> {
        let proto = ModelProto::parse(data)?;
        if !matches!(proto.model_type, ModelType::Unigram | ModelType::Bpe) {
            return Err(Error::Model(format!(
                "{:?} models are not supported (only unigram and BPE)",
                proto.model_type
            )));
        }
        let mut pieces = FxHashMap::default();
        let mut reserved = FxHashMap::default();
        let mut unk_id = None;
        let mut user = Vec::new();
        let (mut min_score, mut max_score) = (f32::MAX, f32::MIN_POSITIVE);
        for (id, p) in proto.pieces.iter().enumerate() {
            if p.text.is_empty() {
                return Err(Error::Model("a piece is empty".into()));
            }
            let normal = matches!(
                p.kind,
                PieceType::Normal | PieceType::UserDefined | PieceType::Unused
            );
            let map = if normal { &mut pieces } else { &mut reserved };
            if map.insert(p.text.clone(), id).is_some() {
                return Err(Error::Model(format!("{} is defined twice", p.text)));
            }
            match p.kind {
                PieceType::UserDefined => user.push(p.text.clone()),
                PieceType::Unknown => unk_id = Some(id),
                PieceType::Normal => {
                    min_score = min_score.min(p.score);
                    max_score = max_score.max(p.score);
                }
                _ => {}
            }
        }
        let unk_id = unk_id.ok_or_else(|| Error::Model("no unknown piece".into()))?;
        let max_piece_len = pieces.keys().map(String::len).max().unwrap_or(1);
        let normalizer = Normalizer::new(&proto, user)?;
        Ok(SentencePiece {
            proto,
            normalizer,
            pieces,
            reserved,
            unk_id,
            max_piece_len,
            min_score,
            max_score,
        })
    }

    pub fn model_type(&self) -> ModelType {
        self.proto.model_type
    }

    /// `EncodeAsPieces`: the normalized text split into pieces; unknown stretches kept as they
    /// are (consecutive ones joined) or, with byte fallback, as `<0xXX>` pieces.
    pub fn encode_as_pieces(&self, text: &str) -> Vec<String> {
        let normalized = self.normalizer.normalize(text);
        let ids = match self.proto.model_type {
            ModelType::Bpe => self.encode_bpe(&normalized),
            _ => self.encode_unigram(&normalized),
        };
        self.surface_pieces(ids)
    }

    fn kind(&self, id: usize) -> PieceType {
        self.proto.pieces[id].kind
    }

    /// sentencepiece's `PieceToId`.
    fn piece_to_id(&self, piece: &str) -> usize {
        self.reserved
            .get(piece)
            .or_else(|| self.pieces.get(piece))
            .copied()
            .unwrap_or(self.unk_id)
    }

    /// `PopulateSentencePieceText`, as far as the pieces' text goes.
    fn surface_pieces(&self, encoded: Vec<(&str, usize)>) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(encoded.len());
        let mut prev_unk = false;
        for (piece, id) in encoded {
            let unk = self.kind(id) == PieceType::Unknown;
            if unk && self.proto.byte_fallback {
                out.extend(piece.bytes().map(|b| format!("<0x{b:02X}>")));
            } else if unk && prev_unk {
                if let Some(last) = out.last_mut() {
                    last.push_str(piece);
                }
            } else {
                out.push(piece.to_string());
            }
            prev_unk = unk;
        }
        out
    }

    /// The unigram model's Viterbi search (sentencepiece's `EncodeOptimized`): the best path
    /// ending at each byte position; user-defined symbols get a bonus that always wins; a
    /// character no piece covers becomes an unknown piece.
    fn encode_unigram<'a>(&self, text: &'a str) -> Vec<(&'a str, usize)> {
        #[derive(Clone, Copy)]
        struct Best {
            id: usize,
            score: f32,
            starts_at: Option<usize>,
        }
        let bytes = text.as_bytes();
        let size = bytes.len();
        if size == 0 {
            return Vec::new();
        }
        let unk_score = self.min_score - 10.0;
        let mut best = vec![
            Best {
                id: self.unk_id,
                score: 0.0,
                starts_at: None,
            };
            size + 1
        ];
        let mut start = 0;
        while start < size {
            let here = best[start].score;
            let mblen = char_len(&bytes[start..]);
            let mut single = false;
            let longest = self.max_piece_len.min(size - start);
            for len in 1..=longest {
                let end = start + len;
                // Pieces are whole characters: other ends cannot match.
                let Some(candidate) = text.get(start..end) else {
                    continue;
                };
                let Some(&id) = self.pieces.get(candidate) else {
                    continue;
                };
                if self.kind(id) == PieceType::Unused {
                    continue;
                }
                // In C++ the user bonus is a double, so the sum is one too.
                let score: f64 = if self.kind(id) == PieceType::UserDefined {
                    f64::from(len as f32 * self.max_score) - 0.1
                } else {
                    f64::from(self.proto.pieces[id].score)
                };
                let total = score + f64::from(here);
                let target = &mut best[end];
                if target.starts_at.is_none() || total > f64::from(target.score) {
                    *target = Best {
                        id,
                        score: total as f32,
                        starts_at: Some(start),
                    };
                }
                if len == mblen {
                    single = true;
                }
            }
            if !single {
                let total = unk_score + here;
                let target = &mut best[start + mblen];
                if target.starts_at.is_none() || total > target.score {
                    *target = Best {
                        id: self.unk_id,
                        score: total,
                        starts_at: Some(start),
                    };
                }
            }
            start += mblen;
        }
        let mut out = Vec::new();
        let mut end = size;
        while end > 0 {
            let node = best[end];
            let begin = node.starts_at.unwrap_or(0);
            out.push((&text[begin..end], node.id));
            end = begin;
        }
        out.reverse();
        out
    }

    /// The BPE model: characters (user-defined symbols whole and frozen) merged pair by pair,
    /// the best-scoring pair first (the leftmost among equals); pieces marked unused are split
    /// back into what made them.
    fn encode_bpe<'a>(&self, text: &'a str) -> Vec<(&'a str, usize)> {
        let mut symbols = self.bpe_symbols(text);
        let mut agenda = BinaryHeap::new();
        let mut rev_merge: FxHashMap<&'a str, (&'a str, &'a str)> = FxHashMap::default();
        for i in 1..symbols.len() {
            self.add_pair(text, &symbols, (i - 1, i), &mut agenda, &mut rev_merge);
        }
        while let Some(top) = agenda.pop() {
            let (l, r) = (&symbols[top.left], &symbols[top.right]);
            // A pair whose sides changed since it was queued is stale.
            if l.len == 0 || r.len == 0 || l.len + r.len != top.len {
                continue;
            }
            merge(&mut symbols, top.left, top.right);
            if let Some(prev) = symbols[top.left].prev {
                self.add_pair(
                    text,
                    &symbols,
                    (prev, top.left),
                    &mut agenda,
                    &mut rev_merge,
                );
            }
            if let Some(next) = symbols[top.left].next {
                self.add_pair(
                    text,
                    &symbols,
                    (top.left, next),
                    &mut agenda,
                    &mut rev_merge,
                );
            }
        }
        let mut out = Vec::new();
        let mut index = (!symbols.is_empty()).then_some(0);
        while let Some(i) = index {
            self.resegment(symbols[i].piece(text), &rev_merge, &mut out);
            index = symbols[i].next;
        }
        out
    }

    /// The text split into characters, user-defined symbols kept whole (and never merged).
    fn bpe_symbols(&self, text: &str) -> Vec<Symbol> {
        let bytes = text.as_bytes();
        let mut symbols: Vec<Symbol> = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let (len, freeze) = match self.normalizer.user_symbol_at(&bytes[pos..]) {
                Some(len) => (len, true),
                None => (char_len(&bytes[pos..]), false),
            };
            let index = symbols.len();
            symbols.push(Symbol {
                prev: index.checked_sub(1),
                next: (pos + len < bytes.len()).then_some(index + 1),
                freeze,
                start: pos,
                len,
            });
            pos += len;
        }
        symbols
    }

    /// Queues the merge of two neighbours if their concatenation is a piece; remembers what an
    /// unused piece was made of.
    fn add_pair<'a>(
        &self,
        text: &'a str,
        symbols: &[Symbol],
        (left, right): (usize, usize),
        agenda: &mut BinaryHeap<Pair>,
        rev_merge: &mut FxHashMap<&'a str, (&'a str, &'a str)>,
    ) {
        let (sl, sr) = (&symbols[left], &symbols[right]);
        if sl.freeze || sr.freeze {
            return;
        }
        let merged = &text[sl.start..sl.start + sl.len + sr.len];
        let Some(&id) = self.pieces.get(merged) else {
            return;
        };
        agenda.push(Pair {
            score: self.proto.pieces[id].score,
            left,
            right,
            len: merged.len(),
        });
        if self.kind(id) == PieceType::Unused {
            rev_merge.insert(merged, (sl.piece(text), sr.piece(text)));
        }
    }

    /// A piece marked unused is replaced by the two pieces it was merged from, recursively.
    fn resegment<'a>(
        &self,
        piece: &'a str,
        rev_merge: &FxHashMap<&'a str, (&'a str, &'a str)>,
        out: &mut Vec<(&'a str, usize)>,
    ) {
        let id = self.piece_to_id(piece);
        if self.kind(id) != PieceType::Unused {
            out.push((piece, id));
            return;
        }
        match rev_merge.get(piece) {
            Some(&(left, right)) => {
                self.resegment(left, rev_merge, out);
                self.resegment(right, rev_merge, out);
            }
            None => out.push((piece, id)),
        }
    }
}

/// A stretch of the text during BPE merging, linked to its neighbours (emptied when merged
/// into its left neighbour).
struct Symbol {
    prev: Option<usize>,
    next: Option<usize>,
    freeze: bool,
    start: usize,
    len: usize,
}

impl Symbol {
    fn piece<'a>(&self, text: &'a str) -> &'a str {
        &text[self.start..self.start + self.len]
    }
}

/// Merges `right` into `left`, its left neighbour.
fn merge(symbols: &mut [Symbol], left: usize, right: usize) {
    let right_next = symbols[right].next;
    symbols[left].len += symbols[right].len;
    symbols[left].next = right_next;
    if let Some(n) = right_next {
        symbols[n].prev = Some(left);
    }
    symbols[right].len = 0;
}

/// A candidate merge; the heap pops the highest score, then the smallest left.
#[derive(PartialEq)]
struct Pair {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl Eq for Pair {}

impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pair {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

#[cfg(test)]
mod tests;
