//! Translating a stream of lines: read in chunks, sort by length inside a chunk, translate in
//! batches, write back in input order. One output line per input line, always.

use std::io::Write;

use gnmt_model::Seq2Seq;
use gnmt_tokenizer::SubwordTokenizer;
use tch::Device;

use crate::{translate_batch, Hypothesis, SearchConfig};

#[derive(Debug, thiserror::Error)]
pub enum TranslateError {
    #[error("{0}")]
    Input(String),
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] gnmt_tokenizer::TokenizerError),
}

/// What to print per line.
#[derive(Debug, Clone, Default)]
pub struct OutputOptions {
    /// Print the N best with scores: `index ||| text ||| score`.
    pub nbest: usize,
    /// Append `\t` and, per output piece, the source piece it attends to most.
    pub alignments: bool,
}

/// Totals for the summary line.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub sentences: usize,
    pub source_tokens: usize,
    pub output_tokens: usize,
    pub truncated: usize,
}

/// A model, its vocabulary and search settings.
#[derive(Debug)]
pub struct Translator<'a> {
    pub model: &'a Seq2Seq,
    pub tokenizer: &'a SubwordTokenizer,
    pub device: Device,
    pub search: SearchConfig,
    /// Sentences per batch.
    pub batch_size: usize,
    /// Source tokens per batch, padding counted (the longest sentence times the batch size);
    /// with it, batches of short sentences grow and batches of long ones shrink.
    pub max_tokens: Option<usize>,
    /// Lines read (and held) at a time: memory stays bounded on any file size.
    pub chunk_lines: usize,
}

impl Translator<'_> {
    /// Translates id sequences in length-sorted batches, results in input order.
    pub fn translate_ids(&self, srcs: &[Vec<u32>]) -> Vec<Vec<Hypothesis>> {
        let mut order: Vec<usize> = (0..srcs.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(srcs[i].len()));
        let mut out: Vec<Vec<Hypothesis>> = vec![Vec::new(); srcs.len()];
        for batch in self.batches(&order, srcs) {
            let (empty, full): (Vec<usize>, Vec<usize>) =
                batch.iter().partition(|&&i| srcs[i].is_empty());
            for i in empty {
                out[i] = vec![Hypothesis {
                    tokens: vec![],
                    score: 0.0,
                    log_prob: 0.0,
                    alignment: vec![],
                }];
            }
            let inputs: Vec<Vec<u32>> = full.iter().map(|&i| srcs[i].clone()).collect();
            for (i, h) in full.iter().zip(translate_batch(
                self.model,
                &inputs,
                &self.search,
                self.device,
            )) {
                out[*i] = h;
            }
        }
        out
    }

    /// Splits `order` (longest first) into batches of at most `batch_size` sentences and, with
    /// `max_tokens`, at most that many padded source tokens (but always at least one sentence).
    pub(crate) fn batches<'o>(&self, order: &'o [usize], srcs: &[Vec<u32>]) -> Vec<&'o [usize]> {
        let size = self.batch_size.max(1);
        let mut out = Vec::new();
        let mut rest = order;
        while !rest.is_empty() {
            // Longest first: the first sentence sets the padded width of the batch.
            let n = match self.max_tokens {
                Some(budget) => (budget / srcs[rest[0]].len().max(1)).clamp(1, size),
                None => size,
            }
            .min(rest.len());
            let (head, tail) = rest.split_at(n);
            out.push(head);
            rest = tail;
        }
        out
    }

    /// Translates `lines` into `out`, calling `progress(lines_done)` after every chunk.
    pub fn translate_stream<I, E, W>(
        &self,
        lines: I,
        out: &mut W,
        opts: &OutputOptions,
        mut progress: impl FnMut(usize),
    ) -> Result<Summary, TranslateError>
    where
        I: Iterator<Item = Result<String, E>>,
        E: std::fmt::Display,
        W: Write,
    {
        let mut summary = Summary::default();
        let max_len = self.model.config.max_source_len.max(1) as usize;
        let mut lines = lines.peekable();
        let mut lineno = 0usize;
        while lines.peek().is_some() {
            let mut chunk = Vec::with_capacity(self.chunk_lines);
            for l in lines.by_ref().take(self.chunk_lines.max(1)) {
                chunk.push(l.map_err(|e| TranslateError::Input(e.to_string()))?);
            }
            let mut ids = Vec::with_capacity(chunk.len());
            for line in &chunk {
                lineno += 1;
                let mut v = self.tokenizer.encode(line)?;
                if v.len() > max_len {
                    tracing::warn!(
                        "line {lineno}: {} pieces, truncated to the model's limit of {max_len}",
                        v.len()
                    );
                    v.truncate(max_len);
                    summary.truncated += 1;
                }
                summary.source_tokens += v.len();
                ids.push(v);
            }
            let hyps = self.translate_ids(&ids);
            let mut text = String::new();
            for (k, (h, src)) in hyps.iter().zip(&ids).enumerate() {
                let index = summary.sentences + k;
                if opts.nbest > 0 {
                    for hyp in h.iter().take(opts.nbest) {
                        let t = self.tokenizer.decode(&hyp.tokens)?;
                        text.push_str(&format!(
                            "{index} ||| {} ||| {:.4}\n",
                            t.replace('\n', " "),
                            hyp.score
                        ));
                    }
                } else {
                    let best = &h[0];
                    summary.output_tokens += best.tokens.len() + 1;
                    text.push_str(&self.tokenizer.decode(&best.tokens)?.replace('\n', " "));
                    if opts.alignments {
                        text.push('\t');
                        let a: Vec<String> = best
                            .alignment
                            .iter()
                            .map(|j| j.min(&src.len().saturating_sub(1)).to_string())
                            .collect();
                        text.push_str(&a.join(" "));
                    }
                    text.push('\n');
                }
            }
            out.write_all(text.as_bytes())?;
            summary.sentences += chunk.len();
            progress(summary.sentences);
        }
        out.flush()?;
        Ok(summary)
    }
}
