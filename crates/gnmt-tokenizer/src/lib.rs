//! # gnmt-tokenizer
//!
//! The shared subword vocabulary of gnmt-rs (GNMT's "wordpieces"): one model for source and
//! target, trained on both sides of a parallel corpus, stored as a standard Hugging Face
//! `tokenizer.json` so other tools can load it. Pure Rust (HF `tokenizers`, no network).
//!
//! - Special ids are fixed: `<pad>` = 0, `<s>` = 1, `</s>` = 2, `<unk>` = 3, then the 256 byte
//!   pieces `<0x00>`..`<0xFF>`, then the learned pieces; the size is rounded up to a multiple of 8.
//! - `wordpiece` (BERT/GNMT-style greedy longest match, continuation pieces marked `##`) works on
//!   the UTF-8 bytes of the text, each byte written as one printable character (GPT-2's byte
//!   alphabet, space = `Ġ`): its ids are the specials, then the 256 word-initial byte characters,
//!   the 256 `##` continuation byte characters, then the learned pieces. Every byte is in the
//!   vocabulary in both positions, so nothing falls to `<unk>` either.
//! - Normalization is NFKC with whitespace runs collapsed to one space and the ends trimmed;
//!   after it, tokenization is lossless: `decode(encode(x)) == normalize(x)` for every line,
//!   including characters the vocabulary never saw (they fall back to their UTF-8 bytes).

use std::path::Path;

pub mod sample;
pub use sample::SegmentationSampler;

use sha2::{Digest, Sha256};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::metaspace::Metaspace as MetaspaceDecoder;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::unigram::{Unigram, UnigramTrainer};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::{Replace, Sequence as NormSequence, Strip, NFKC};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{DecoderWrapper, NormalizerWrapper, Tokenizer};

pub const PAD: u32 = 0;
pub const BOS: u32 = 1;
pub const EOS: u32 = 2;
pub const UNK: u32 = 3;
pub const SPECIALS: [&str; 4] = ["<pad>", "<s>", "</s>", "<unk>"];
/// Learned pieces start after the specials and the 256 byte pieces.
pub const FIRST_PIECE: u32 = 4 + 256;

/// What can go wrong with a vocabulary.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("vocabulary training failed: {0}")]
    Train(String),
    #[error("{0}")]
    Invalid(String),
}

/// Which subword algorithm to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VocabKind {
    /// SentencePiece-style unigram language model (the default).
    #[default]
    Unigram,
    /// Byte-pair encoding (merges learned on the same normalized, metaspace-split text), with
    /// the same byte fallback.
    Bpe,
    /// WordPiece (greedy longest match, `##` continuation pieces) over byte-level text, so
    /// every character is representable.
    Wordpiece,
}

/// Longest run of byte-level characters WordPiece matches as one word: longer runs (text in
/// scripts written without spaces) are cut into chunks of this length first, which keeps its
/// quadratic longest-match search cheap and costs at most a split piece at a chunk boundary.
const WORDPIECE_CHUNK: usize = 48;

/// GPT-2's reversible byte -> printable character map: printable Latin-1 bytes stand for
/// themselves, the others are shifted past U+0100.
fn byte_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, 33..=126 | 161..=172 | 174..=255);
        out[b as usize] = if printable {
            b as char
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).unwrap_or('?')
        };
    }
    out
}

fn wordpiece_pretok() -> Result<tokenizers::PreTokenizerWrapper, TokenizerError> {
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
    use tokenizers::SplitDelimiterBehavior as B;
    let bad = |e: tokenizers::Error| TokenizerError::Invalid(e.to_string());
    let words =
        Split::new(SplitPattern::String("Ġ".into()), B::MergedWithNext, false).map_err(bad)?;
    // The specials are ordinary strings in a WordPiece vocabulary: text "<s>" would match them
    // (and vanish on decoding). A lone `<` starts none of them.
    let angle = Split::new(SplitPattern::String("<".into()), B::Isolated, false).map_err(bad)?;
    let chunks = Split::new(
        SplitPattern::Regex(format!(".{{{WORDPIECE_CHUNK}}}")),
        B::Isolated,
        false,
    )
    .map_err(bad)?;
    Ok(tokenizers::pre_tokenizers::sequence::Sequence::new(vec![
        ByteLevel::new(false, false, false).into(),
        words.into(),
        angle.into(),
        chunks.into(),
    ])
    .into())
}

fn wordpiece_decoder() -> Result<DecoderWrapper, TokenizerError> {
    let strip = Replace::new(
        tokenizers::normalizers::replace::ReplacePattern::Regex("^##".into()),
        "",
    )
    .map_err(|e| TokenizerError::Invalid(e.to_string()))?;
    Ok(DecoderSequence::new(vec![
        strip.into(),
        tokenizers::pre_tokenizers::byte_level::ByteLevel::new(false, false, false).into(),
    ])
    .into())
}

/// The shared subword vocabulary.
#[derive(Clone)]
pub struct SubwordTokenizer {
    inner: Tokenizer,
    hash: String,
}

impl std::fmt::Debug for SubwordTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubwordTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("hash", &self.hash)
            .finish()
    }
}

fn normalizer() -> Result<NormalizerWrapper, TokenizerError> {
    let ws = Replace::new(
        tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
        " ",
    )
    .map_err(|e| TokenizerError::Invalid(e.to_string()))?;
    Ok(NormSequence::new(vec![NFKC.into(), ws.into(), Strip::new(true, true).into()]).into())
}

fn pretok() -> Metaspace {
    Metaspace::new('▁', PrependScheme::Always, true)
}

/// A tokenizer with our normalization and `pretok`; `decoder` for a finished model (training
/// needs none).
fn pipeline(
    model: impl Into<tokenizers::ModelWrapper>,
    pretok: impl Into<tokenizers::PreTokenizerWrapper>,
    decoder: Option<DecoderWrapper>,
) -> Result<Tokenizer, TokenizerError> {
    let mut tk = Tokenizer::new(model);
    tk.with_normalizer(Some(normalizer()?))
        .map_err(|e| TokenizerError::Train(e.to_string()))?;
    tk.with_pre_tokenizer(Some(pretok));
    tk.with_decoder(decoder);
    Ok(tk)
}

fn decoder() -> DecoderWrapper {
    DecoderSequence::new(vec![
        ByteFallback::default().into(),
        MetaspaceDecoder::new('▁', PrependScheme::Always, true).into(),
    ])
    .into()
}

/// tokenizers' unigram trainer made deterministic: the same lines give the same vocabulary on
/// every run and machine. Its own `feed` counts words in a hash map seeded per process and
/// trains on them in that map's order, and its EM sums run in one chunk per `rayon` thread
/// (floating-point sums in another order can tip a pruning decision); here the counts are
/// sorted and the training runs on one thread.
struct SortedUnigram {
    trainer: UnigramTrainer,
    words: Vec<(String, u32)>,
}

impl tokenizers::Trainer for SortedUnigram {
    type Model = tokenizers::ModelWrapper;

    fn should_show_progress(&self) -> bool {
        false
    }

    fn train(&self, model: &mut Self::Model) -> tokenizers::Result<Vec<tokenizers::AddedToken>> {
        let tokenizers::ModelWrapper::Unigram(unigram) = model else {
            return Err("unigram training needs a unigram model".into());
        };
        let one_thread = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
        one_thread.install(|| self.trainer.do_train(self.words.clone(), unigram))
    }

    fn feed<I, S, F>(&mut self, lines: I, process: F) -> tokenizers::Result<()>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
        F: Fn(&str) -> tokenizers::Result<Vec<String>> + Sync,
    {
        let mut counts: std::collections::BTreeMap<String, u32> = Default::default();
        for line in lines {
            for word in process(line.as_ref())? {
                *counts.entry(word).or_default() += 1;
            }
        }
        self.words = counts.into_iter().collect();
        Ok(())
    }
}

/// The unigram trainer keeps every character the text needs; those its model dropped get the
/// lowest score plus 1e-4 per character, counted in the order a hash set gives them (another
/// each run). The single characters in that band keep the band's scores, handed out in the
/// order of the characters.
fn canonical_rare_characters(pieces: &mut [(String, f64)]) {
    const STEP: f64 = 1e-4;
    let single = |s: &str| s.chars().count() == 1;
    let min = pieces.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let n_single = pieces.iter().filter(|p| single(&p.0)).count();
    let top = min + STEP * n_single as f64 + STEP / 2.0;
    let mut band: Vec<usize> = (0..pieces.len())
        .filter(|&i| single(&pieces[i].0) && pieces[i].1 <= top)
        .collect();
    let mut scores: Vec<f64> = band.iter().map(|&i| pieces[i].1).collect();
    scores.sort_by(|a, b| b.total_cmp(a));
    band.sort_by(|&a, &b| pieces[a].0.cmp(&pieces[b].0));
    for (i, score) in band.into_iter().zip(scores) {
        pieces[i].1 = score;
    }
}

impl SubwordTokenizer {
    /// Trains a vocabulary of (about) `size` entries on the given lines (both languages).
    pub fn train<I>(lines: I, size: usize, kind: VocabKind) -> Result<Self, TokenizerError>
    where
        I: Iterator<Item = String> + Send,
    {
        if size < FIRST_PIECE as usize + 16 {
            return Err(TokenizerError::Invalid(format!(
                "vocabulary size {size} is too small: at least {} (4 specials, 256 byte pieces, some pieces)",
                FIRST_PIECE + 16
            )));
        }
        let target = size.div_ceil(8) * 8;
        let learned = (target - FIRST_PIECE as usize) as u32;
        match kind {
            VocabKind::Bpe => return Self::train_bpe(lines, target, learned),
            VocabKind::Wordpiece => return Self::train_wordpiece(lines, target),
            VocabKind::Unigram => {}
        }
        let mut tk = pipeline(Unigram::default(), pretok(), None)?;
        let trainer = UnigramTrainer::builder()
            .show_progress(false)
            .vocab_size(learned)
            .unk_token(Some("<unk>".into()))
            .special_tokens(vec![tokenizers::AddedToken::from("<unk>", true)])
            .build()
            .map_err(|e| TokenizerError::Train(e.to_string()))?;
        let mut trainer = SortedUnigram {
            trainer,
            words: Vec::new(),
        };
        tk.train(&mut trainer, lines)
            .map_err(|e| TokenizerError::Train(e.to_string()))?;
        let vocab = tk.get_vocab(false);
        let model = tk.get_model();
        let mut pieces: Vec<(String, f64)> = Vec::new();
        let mut by_id: Vec<(u32, String)> = vocab.into_iter().map(|(s, i)| (i, s)).collect();
        by_id.sort();
        let scores: std::collections::HashMap<String, f64> = match model {
            tokenizers::ModelWrapper::Unigram(u) => {
                u.iter().map(|(s, sc)| (s.clone(), *sc)).collect()
            }
            _ => Default::default(),
        };
        for (_, s) in by_id {
            if SPECIALS.contains(&s.as_str()) || is_byte_piece(&s) {
                continue;
            }
            let sc = scores.get(&s).copied().unwrap_or(-20.0);
            pieces.push((s, sc));
        }
        canonical_rare_characters(&mut pieces);
        pieces.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Self::assemble(pieces, target)
    }

    /// BPE: learn merges, then rebuild the model with our fixed ids (specials, bytes, the
    /// learned tokens in their order) and byte fallback.
    fn train_bpe<I>(lines: I, target: usize, learned: u32) -> Result<Self, TokenizerError>
    where
        I: Iterator<Item = String> + Send,
    {
        let err = |e: tokenizers::Error| TokenizerError::Train(e.to_string());
        let mut tk = pipeline(BPE::default(), pretok(), None)?;
        let trainer = BpeTrainerBuilder::new()
            .show_progress(false)
            .vocab_size(learned as usize)
            .min_frequency(2)
            .build();
        let mut trainer = TrainerWrapper::BpeTrainer(trainer);
        tk.train(&mut trainer, lines).map_err(err)?;
        let tokenizers::ModelWrapper::BPE(bpe) = tk.get_model() else {
            return Err(TokenizerError::Train(
                "BPE training gave another model".into(),
            ));
        };
        let mut learned_tokens: Vec<(String, u32)> = bpe.get_vocab().into_iter().collect();
        learned_tokens.sort_by_key(|(_, id)| *id);
        let mut vocab: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
        vocab.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
        vocab.extend(
            learned_tokens
                .into_iter()
                .map(|(t, _)| t)
                .filter(|t| !SPECIALS.contains(&t.as_str()) && !is_byte_piece(t)),
        );
        let total = vocab.len().div_ceil(8).max(target / 8) * 8;
        let ids = numbered(vocab, total);
        // The merges, as token pairs, in the order they were learned. A serialization this
        // code cannot read is an error, not a vocabulary without merges.
        let json = serde_json::to_value(bpe).map_err(|e| TokenizerError::Train(e.to_string()))?;
        let merges = json["merges"]
            .as_array()
            .ok_or_else(|| TokenizerError::Train("BPE training gave no list of merges".into()))?
            .iter()
            .map(|x| {
                merge_pair(x)
                    .ok_or_else(|| TokenizerError::Train(format!("unreadable BPE merge {x}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let model = BPE::builder()
            .vocab_and_merges(ids, merges)
            .unk_token("<unk>".into())
            .byte_fallback(true)
            .build()
            .map_err(|e| TokenizerError::Train(e.to_string()))?;
        Self::from_tokenizer(pipeline(model, pretok(), Some(decoder()))?)
    }

    /// WordPiece: learn pieces (HF's trainer, BPE merges read as a vocabulary), then rebuild
    /// with our fixed ids and every byte character present word-initially and as `##` piece.
    fn train_wordpiece<I>(lines: I, target: usize) -> Result<Self, TokenizerError>
    where
        I: Iterator<Item = String> + Send,
    {
        use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
        let err = |e: tokenizers::Error| TokenizerError::Train(e.to_string());
        let base = SPECIALS.len() + 512;
        if target < base + 16 {
            return Err(TokenizerError::Invalid(format!(
                "vocabulary size {target} is too small for wordpiece: at least {} (4 specials, 512 byte pieces, some pieces)",
                base + 16
            )));
        }
        let bytes = byte_chars();
        let mut tk = pipeline(WordPiece::default(), wordpiece_pretok()?, None)?;
        let trainer = WordPieceTrainer::builder()
            .show_progress(false)
            .vocab_size(target)
            .min_frequency(2)
            .initial_alphabet(bytes.iter().copied().collect())
            .continuing_subword_prefix("##".into())
            .build();
        let mut trainer = TrainerWrapper::WordPieceTrainer(trainer);
        tk.train(&mut trainer, lines).map_err(err)?;
        let mut trained: Vec<(String, u32)> = tk.get_vocab(false).into_iter().collect();
        trained.sort_by_key(|(_, id)| *id);
        let mut vocab: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
        vocab.extend(bytes.iter().map(|c| c.to_string()));
        vocab.extend(bytes.iter().map(|c| format!("##{c}")));
        let mut seen: std::collections::HashSet<String> = vocab.iter().cloned().collect();
        for (t, _) in trained {
            if vocab.len() == target {
                break;
            }
            if seen.insert(t.clone()) {
                vocab.push(t);
            }
        }
        let ids = numbered(vocab, target);
        let model = WordPiece::builder()
            .vocab(ids)
            .unk_token("<unk>".into())
            .continuing_subword_prefix("##".into())
            .max_input_chars_per_word(WORDPIECE_CHUNK)
            .build()
            .map_err(err)?;
        Self::from_tokenizer(pipeline(
            model,
            wordpiece_pretok()?,
            Some(wordpiece_decoder()?),
        )?)
    }

    /// Builds the final model: specials, bytes, pieces, padding up to `target` (a multiple of 8).
    fn assemble(pieces: Vec<(String, f64)>, target: usize) -> Result<Self, TokenizerError> {
        let mut vocab: Vec<(String, f64)> =
            SPECIALS.iter().map(|s| (s.to_string(), -1e4)).collect();
        vocab.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), -1e4)));
        vocab.extend(pieces);
        let total = vocab.len().div_ceil(8).max(target / 8) * 8;
        let mut k = 0;
        while vocab.len() < total {
            vocab.push((format!("<extra_{k}>"), -1e4));
            k += 1;
        }
        let model = Unigram::from(vocab, Some(UNK as usize), true)
            .map_err(|e| TokenizerError::Train(e.to_string()))?;
        Self::from_tokenizer(pipeline(model, pretok(), Some(decoder()))?)
    }

    fn from_tokenizer(inner: Tokenizer) -> Result<Self, TokenizerError> {
        let json = inner
            .to_string(false)
            .map_err(|e| TokenizerError::Invalid(e.to_string()))?;
        let hash = hex(&Sha256::digest(json.as_bytes()));
        let t = SubwordTokenizer { inner, hash };
        for (i, s) in SPECIALS.iter().enumerate() {
            if t.inner.token_to_id(s) != Some(i as u32) {
                return Err(TokenizerError::Invalid(format!(
                    "not a gnmt vocabulary: `{s}` must have id {i} (was it trained by `gnmt vocab`?)"
                )));
            }
        }
        Ok(t)
    }

    /// Loads a `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self, TokenizerError> {
        let file_err = |msg: String| TokenizerError::File {
            path: path.display().to_string(),
            msg,
        };
        let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
        Self::from_json(&text, &path.display().to_string())
    }

    /// A tokenizer from the text of a `tokenizer.json` (as another process sent it); `origin`
    /// names where the text came from in errors.
    pub fn from_json(text: &str, origin: &str) -> Result<Self, TokenizerError> {
        let file_err = |msg: String| TokenizerError::File {
            path: origin.to_string(),
            msg,
        };
        let inner: Tokenizer = text
            .parse()
            .map_err(|e: tokenizers::Error| file_err(format!("not a tokenizer.json: {e}")))?;
        Self::from_tokenizer(inner).map_err(|e| file_err(e.to_string()))
    }

    /// Writes the standard Hugging Face `tokenizer.json` (atomically).
    pub fn save(&self, path: &Path) -> Result<(), TokenizerError> {
        let file_err = |msg: String| TokenizerError::File {
            path: path.display().to_string(),
            msg,
        };
        let json = self
            .inner
            .to_string(true)
            .map_err(|e| file_err(e.to_string()))?;
        gnmt_io::write_file(path, json).map_err(|e| file_err(e.to_string()))
    }

    /// SHA-256 of the serialized tokenizer: identifies the vocabulary in binarized corpora.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The normalization every line goes through (NFKC, whitespace collapsed, trimmed).
    pub fn normalize(&self, text: &str) -> String {
        match self.inner.get_normalizer() {
            Some(n) => {
                let mut s = tokenizers::NormalizedString::from(text);
                use tokenizers::Normalizer;
                if n.normalize(&mut s).is_ok() {
                    s.get().to_string()
                } else {
                    text.to_string()
                }
            }
            None => text.to_string(),
        }
    }

    fn encoding(&self, text: &str) -> Result<tokenizers::Encoding, TokenizerError> {
        self.inner
            .encode_fast(text, false)
            .map_err(|e| TokenizerError::Invalid(e.to_string()))
    }

    /// Ids of a line (no BOS/EOS).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        Ok(self.encoding(text)?.get_ids().to_vec())
    }

    /// Pieces of a line.
    pub fn encode_pieces(&self, text: &str) -> Result<Vec<String>, TokenizerError> {
        // `encode_fast` leaves the token strings empty: map the ids.
        Ok(self.pieces(&self.encode(text)?))
    }

    /// The pieces of ids (an id outside the vocabulary: an empty piece).
    pub fn pieces(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .map(|&id| self.inner.id_to_token(id).unwrap_or_default())
            .collect()
    }

    /// Text of ids; special ids are dropped.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let ids: Vec<u32> = ids.iter().copied().filter(|&i| i >= UNK).collect();
        self.inner
            .decode(&ids, false)
            .map_err(|e| TokenizerError::Invalid(e.to_string()))
    }

    /// Text of pieces.
    pub fn decode_pieces(&self, pieces: &[String]) -> Result<String, TokenizerError> {
        let ids: Result<Vec<u32>, _> = pieces
            .iter()
            .map(|p| {
                self.inner
                    .token_to_id(p)
                    .ok_or_else(|| TokenizerError::Invalid(format!("unknown piece `{p}`")))
            })
            .collect();
        self.decode(&ids?)
    }

    pub fn id_to_piece(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}

/// Token -> id by position, padded with `<extra_k>` entries up to `total` (the same map type
/// serves BPE and WordPiece, whose own alias is private).
fn numbered(mut vocab: Vec<String>, total: usize) -> tokenizers::models::bpe::Vocab {
    let mut k = 0;
    while vocab.len() < total {
        vocab.push(format!("<extra_{k}>"));
        k += 1;
    }
    vocab
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i as u32))
        .collect()
}

/// One merge of a serialized BPE model: `"a b"` (older files) or `["a", "b"]`.
fn merge_pair(x: &serde_json::Value) -> Option<(String, String)> {
    match x {
        serde_json::Value::String(s) => s
            .split_once(' ')
            .map(|(a, b)| (a.to_string(), b.to_string())),
        serde_json::Value::Array(a) if a.len() == 2 => {
            Some((a[0].as_str()?.to_string(), a[1].as_str()?.to_string()))
        }
        _ => None,
    }
}

fn is_byte_piece(s: &str) -> bool {
    s.len() == 6 && s.starts_with("<0x") && s.ends_with('>')
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 200 lines of English and German (the sampler's tests train on it too).
    pub(crate) fn corpus() -> Vec<String> {
        let base = [
            "a man is riding a horse",
            "ein mann reitet ein pferd",
            "two dogs play in the snow",
            "zwei hunde spielen im schnee",
            "the woman reads a book",
            "die frau liest ein buch",
        ];
        (0..200)
            .map(|i| format!("{} {}", base[i % base.len()], i))
            .collect()
    }

    #[test]
    fn bpe_merges_are_read_in_both_serializations_and_trained_bpe_uses_them() {
        let pair = |a: &str, b: &str| Some((a.to_string(), b.to_string()));
        assert_eq!(merge_pair(&serde_json::json!("▁re ad")), pair("▁re", "ad"));
        assert_eq!(
            merge_pair(&serde_json::json!(["▁re", "ad"])),
            pair("▁re", "ad")
        );
        assert_eq!(merge_pair(&serde_json::json!("nospace")), None);
        assert_eq!(merge_pair(&serde_json::json!(["a"])), None);
        assert_eq!(merge_pair(&serde_json::json!(7)), None);
        // With its merges, a trained BPE vocabulary writes a frequent word as one piece.
        let t = SubwordTokenizer::train(corpus().into_iter(), 400, VocabKind::Bpe).unwrap();
        assert_eq!(t.encode_pieces("horse").unwrap().len(), 1);
    }

    #[test]
    fn unigram_training_gives_the_same_vocabulary_every_time() {
        // Rare characters too, which the trainer keeps with scores in hash order.
        let mut lines = corpus();
        lines.extend(
            "äöüßéèçñžšćłøåæœ"
                .chars()
                .map(|c| format!("wort{c} mit {c}")),
        );
        let train = || SubwordTokenizer::train(lines.clone().into_iter(), 320, VocabKind::Unigram);
        let first = train().unwrap();
        for _ in 0..3 {
            assert_eq!(train().unwrap().hash, first.hash);
        }
    }

    #[test]
    fn rare_characters_get_their_band_of_scores_in_character_order() {
        let m = -14.0;
        let ladder = |order: &[&str]| -> Vec<(String, f64)> {
            let mut p: Vec<(String, f64)> = vec![("ab".into(), -3.0), ("c".into(), -5.0)];
            for (k, c) in order.iter().enumerate() {
                p.push((c.to_string(), m + 1e-4 * k as f64));
            }
            canonical_rare_characters(&mut p);
            p.sort_by(|a, b| a.0.cmp(&b.0));
            p
        };
        let a = ladder(&["x", "y", "z"]);
        assert_eq!(a, ladder(&["z", "x", "y"]));
        assert_eq!(a, ladder(&["y", "z", "x"]));
        // The band's scores are kept, the first character with the highest; others untouched.
        let score = |c: &str| a.iter().find(|p| p.0 == c).unwrap().1;
        assert_eq!((score("ab"), score("c")), (-3.0, -5.0));
        assert!(score("x") > score("y") && score("y") > score("z"));
        assert!((score("z") - m).abs() < 1e-12);
    }

    #[test]
    fn train_fixed_specials_and_roundtrip() {
        for kind in [VocabKind::Unigram, VocabKind::Bpe, VocabKind::Wordpiece] {
            specials_and_roundtrip(kind);
        }
    }

    fn specials_and_roundtrip(kind: VocabKind) {
        let size = if kind == VocabKind::Wordpiece {
            600
        } else {
            300
        };
        let t = SubwordTokenizer::train(corpus().into_iter(), size, kind).unwrap();
        assert_eq!(t.vocab_size() % 8, 0);
        // Learned pieces are used: a frequent word is not spelled out in bytes.
        let n = t.encode_pieces("a man is riding").unwrap();
        assert!(
            n.len() <= 12 && n.iter().all(|p| !p.is_empty()),
            "{kind:?}: {n:?}"
        );
        assert!(n.iter().any(|p| p.chars().count() > 2), "{kind:?}: {n:?}");
        assert_eq!(t.decode_pieces(&n).unwrap(), "a man is riding");
        for (i, s) in SPECIALS.iter().enumerate() {
            assert_eq!(t.id_to_piece(i as u32).as_deref(), Some(*s));
        }
        for line in [
            "a man reads  a book",
            "Ünïcödé 日本語 😀 ‽ never seen",
            "  spaced\tout  ",
            "",
            "ﬁ ligature ①",
        ] {
            let ids = t.encode(line).unwrap();
            assert_eq!(t.decode(&ids).unwrap(), t.normalize(line), "line {line:?}");
        }
        assert!(
            t.encode("日本").unwrap().iter().all(|&i| i != UNK),
            "byte fallback must avoid <unk>"
        );
    }

    #[test]
    fn wordpiece_long_runs_and_hashes_roundtrip() {
        let t = SubwordTokenizer::train(corpus().into_iter(), 600, VocabKind::Wordpiece).unwrap();
        let long_cjk: String = "日本語の文章には空白がありません".repeat(20);
        let long_word = "x".repeat(500);
        for line in [
            long_cjk.as_str(),
            long_word.as_str(),
            "## ### a##b #",
            "riding ##riding ridingriding",
            "<unk> <s> </s> <pad>",
        ] {
            let ids = t.encode(line).unwrap();
            assert!(!ids.contains(&UNK), "{line:?}: {ids:?}");
            assert_eq!(t.decode(&ids).unwrap(), t.normalize(line), "line {line:?}");
        }
        // Learned pieces: frequent words are whole pieces, continuation pieces carry `##`.
        let p = t.encode_pieces("a riding horse").unwrap();
        assert_eq!(p, ["a", "Ġriding", "Ġhorse"], "{p:?}");
        let p = t.encode_pieces("a ridingx").unwrap();
        assert_eq!(p, ["a", "Ġriding", "##x"], "{p:?}");
        assert_eq!(
            t.id_to_piece(4).as_deref(),
            Some("Ā"),
            "byte 0 is the first byte piece"
        );
        assert_eq!(t.vocab_size(), 600);
    }

    #[test]
    fn save_load_keeps_hash() {
        let t = SubwordTokenizer::train(corpus().into_iter(), 300, VocabKind::Unigram).unwrap();
        let dir = std::env::temp_dir().join(format!("gnmt-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("tokenizer.json");
        t.save(&p).unwrap();
        let u = SubwordTokenizer::load(&p).unwrap();
        assert_eq!(u.encode("a man").unwrap(), t.encode("a man").unwrap());
        std::fs::write(&p, "{not json").unwrap();
        assert!(SubwordTokenizer::load(&p)
            .unwrap_err()
            .to_string()
            .contains("tokenizer.json"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
