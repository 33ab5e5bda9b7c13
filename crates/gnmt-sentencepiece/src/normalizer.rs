//! SentencePiece's normalizer: the precompiled character map (a darts-clone double-array trie
//! over UTF-8 prefixes, mapping each to a replacement in a string blob), user-defined symbols
//! left as they are, and the whitespace rules (leading, trailing and repeated spaces dropped,
//! spaces escaped as `▁`, a `▁` prefixed).

use crate::proto::ModelProto;
use crate::Error;

/// `▁` (U+2581), SentencePiece's visible space.
pub const SPACE: &str = "\u{2581}";

/// The normalizer of one model.
#[derive(Debug, Clone)]
pub struct Normalizer {
    /// darts-clone units (empty: no character map, every character maps to itself).
    trie: Vec<u32>,
    /// NUL-terminated replacements the trie's values point into.
    replacements: Vec<u8>,
    /// User-defined symbols, longest first: never normalized, never split.
    user_symbols: Vec<String>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
    treat_whitespace_as_suffix: bool,
}

impl Normalizer {
    pub fn new(model: &ModelProto, user_symbols: Vec<String>) -> Result<Normalizer, Error> {
        let (trie, replacements) = decode_charsmap(&model.precompiled_charsmap)?;
        let mut user_symbols = user_symbols;
        user_symbols.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Ok(Normalizer {
            trie,
            replacements,
            user_symbols,
            add_dummy_prefix: model.add_dummy_prefix,
            remove_extra_whitespaces: model.remove_extra_whitespaces,
            escape_whitespaces: model.escape_whitespaces,
            treat_whitespace_as_suffix: model.treat_whitespace_as_suffix,
        })
    }

    /// The longest user-defined symbol `input` starts with.
    pub fn user_symbol_at(&self, input: &[u8]) -> Option<usize> {
        self.user_symbols
            .iter()
            .find(|s| input.starts_with(s.as_bytes()))
            .map(String::len)
    }

    /// The normalized form of a prefix of `input` and how many bytes of it that consumed.
    fn normalize_prefix<'a>(&'a self, input: &'a [u8]) -> (&'a [u8], usize) {
        if let Some(len) = self.user_symbol_at(input) {
            return (&input[..len], len);
        }
        if let Some((len, value)) = self.longest_match(input) {
            if len <= input.len() && value < self.replacements.len() {
                let rest = &self.replacements[value..];
                let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                return (&rest[..end], len);
            }
        }
        // `input` comes from a Rust string: its first character is valid UTF-8.
        let len = char_len(input);
        (&input[..len], len)
    }

    /// darts-clone's `commonPrefixSearch`, keeping the longest match: (length, value).
    fn longest_match(&self, key: &[u8]) -> Option<(usize, usize)> {
        let unit = |pos: usize| self.trie.get(pos).copied();
        let offset = |u: u32| ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize;
        let mut node = offset(unit(0)?);
        let mut best = None;
        for (i, &b) in key.iter().enumerate() {
            node ^= usize::from(b);
            let u = unit(node)?;
            if (u & ((1 << 31) | 0xff)) != u32::from(b) {
                return best;
            }
            node ^= offset(u);
            if (u >> 8) & 1 == 1 {
                let value = unit(node)? & ((1 << 31) - 1);
                best = Some((i + 1, value as usize));
            }
        }
        best
    }

    /// SentencePiece's `Normalizer::Normalize`.
    pub fn normalize(&self, input: &str) -> String {
        let mut input = input.as_bytes();
        let mut out: Vec<u8> = Vec::with_capacity(input.len() * 3);
        if self.remove_extra_whitespaces {
            while !input.is_empty() {
                let (piece, len) = self.normalize_prefix(input);
                if piece != b" " {
                    break;
                }
                input = &input[len..];
            }
        }
        if input.is_empty() {
            return String::new();
        }
        let space: &[u8] = if self.escape_whitespaces {
            SPACE.as_bytes()
        } else {
            b" "
        };
        if !self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            out.extend_from_slice(space);
        }
        let mut prev_space = self.remove_extra_whitespaces;
        while !input.is_empty() {
            let (mut piece, len) = self.normalize_prefix(input);
            if prev_space {
                while let Some(rest) = piece.strip_prefix(b" ") {
                    piece = rest;
                }
            }
            if !piece.is_empty() {
                for &b in piece {
                    if self.escape_whitespaces && b == b' ' {
                        out.extend_from_slice(SPACE.as_bytes());
                    } else {
                        out.push(b);
                    }
                }
                prev_space = piece.ends_with(b" ");
            }
            input = &input[len..];
            if !self.remove_extra_whitespaces {
                prev_space = false;
            }
        }
        if self.remove_extra_whitespaces {
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        if self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            out.extend_from_slice(space);
        }
        // Replacements are UTF-8 and whole characters are copied; a broken character map could
        // still cut one, which becomes U+FFFD rather than a panic.
        match String::from_utf8(out) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }
}

/// The length of the UTF-8 character `s` starts with (SentencePiece's `OneCharLen`, at most
/// what is left).
pub fn char_len(s: &[u8]) -> usize {
    let len = match s.first() {
        Some(b) if *b >= 0xf0 => 4,
        Some(b) if *b >= 0xe0 => 3,
        Some(b) if *b >= 0xc0 => 2,
        _ => 1,
    };
    len.min(s.len()).max(1)
}

/// The precompiled map: a little-endian u32 trie size, the trie's units, then the replacements.
fn decode_charsmap(blob: &[u8]) -> Result<(Vec<u32>, Vec<u8>), Error> {
    if blob.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let broken = || Error::Model("the normalization rule's blob is broken".into());
    let size = blob.get(..4).ok_or_else(broken)?;
    let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]) as usize;
    let trie = blob.get(4..4 + size).ok_or_else(broken)?;
    let trie = trie
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok((trie, blob[4 + size..].to_vec()))
}
