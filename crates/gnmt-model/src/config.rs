//! Model hyper-parameters (`config.json` in model directories) and presets.

use gnmt_attention::AttentionKind;
use serde::{Deserialize, Serialize};

/// Where the decoder applies dropout (the encoder always drops its embedding and every layer's
/// input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderDropout {
    /// NVIDIA's GNMT v2: the inputs of decoder layers 2 and up only.
    Gnmt,
    /// Those, plus the target embedding and the classifier's input. The default: on Multi30k
    /// (`small`, 2000 steps, one shared vocabulary) it reached validation BLEU 32.3 against
    /// GNMT v2's 31.6 and test2016 BLEU 34.8 against 34.6 (p = 0.25), with the same validation
    /// loss; the small CPU models over-fit a 29k-pair corpus quickly, and the two extra sites
    /// regularize them (training loss 2.71 against 2.64). See the README.
    #[default]
    Extended,
}

/// GNMT model configuration. Defaults follow NVIDIA's GNMT v2 (except
/// [`ModelConfig::decoder_dropout`], see [`DecoderDropout`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// Shared source/target vocabulary size.
    pub vocab_size: i64,
    pub encoder_layers: i64,
    pub decoder_layers: i64,
    pub hidden_size: i64,
    pub embedding_size: i64,
    pub attention_units: i64,
    pub attention: AttentionKind,
    pub dropout: f64,
    /// Word dropout: the probability that a whole source or target input embedding is zeroed
    /// in training (0 = off).
    pub word_dropout: f64,
    /// Dropout sites of the decoder: `gnmt` (NVIDIA GNMT v2) or `extended` (also on the target
    /// embedding and before the classifier).
    pub decoder_dropout: DecoderDropout,
    /// Residual connections between layers.
    pub residual: bool,
    /// 1-based index of the first layer whose input is added to its output (GNMT: 3). In the
    /// encoder, layer 2 reads the 2H-wide bidirectional output, so its residuals start at 3 at the
    /// earliest.
    pub residual_start: i64,
    /// One embedding for source and target (the vocabulary is shared).
    pub shared_embeddings: bool,
    /// Output projection tied to the target embedding (needs embedding_size == hidden_size).
    pub tied_output: bool,
    /// Uniform init range `[-init, init]`.
    pub init_range: f64,
    /// Longest source (in pieces) the model is used with; longer lines are truncated with a warning.
    pub max_source_len: i64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            vocab_size: 32000,
            encoder_layers: 4,
            decoder_layers: 4,
            hidden_size: 1024,
            embedding_size: 1024,
            attention_units: 1024,
            attention: AttentionKind::NormalizedBahdanau,
            dropout: 0.2,
            word_dropout: 0.0,
            decoder_dropout: DecoderDropout::Extended,
            residual: true,
            residual_start: 3,
            shared_embeddings: true,
            tied_output: false,
            init_range: 0.1,
            max_source_len: 256,
        }
    }
}

/// Flops of a forward pass by part ([`ModelConfig::forward_flops`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ForwardFlops {
    pub encoder: f64,
    pub attention: f64,
    pub decoder: f64,
    pub classifier: f64,
}

impl ForwardFlops {
    pub fn total(&self) -> f64 {
        self.encoder + self.attention + self.decoder + self.classifier
    }
}

/// Names of the presets.
pub const PRESETS: &[&str] = &["gnmt8", "gnmt4", "small", "small8", "tiny"];

impl ModelConfig {
    /// A preset by name: `gnmt8` (the paper), `gnmt4` (NVIDIA GNMT v2), `small` (CPU workhorse),
    /// `small8` (8+8 layers for the residual study), `tiny` (tests).
    pub fn preset(name: &str, vocab_size: i64) -> Option<Self> {
        let base = ModelConfig {
            vocab_size,
            ..Default::default()
        };
        Some(match name {
            "gnmt8" => ModelConfig {
                encoder_layers: 8,
                decoder_layers: 8,
                ..base
            },
            "gnmt4" => base,
            "small" => ModelConfig {
                hidden_size: 256,
                embedding_size: 256,
                attention_units: 256,
                ..base
            },
            "small8" => ModelConfig {
                encoder_layers: 8,
                decoder_layers: 8,
                hidden_size: 256,
                embedding_size: 256,
                attention_units: 256,
                ..base
            },
            "tiny" => ModelConfig {
                encoder_layers: 3,
                decoder_layers: 3,
                hidden_size: 16,
                embedding_size: 8,
                attention_units: 8,
                dropout: 0.0,
                ..base
            },
            _ => return None,
        })
    }

    /// The matrix products of a teacher-forced forward pass over one sentence pair of `src`
    /// source and `tgt` target positions, in flops (two per multiply-add), by part. What is
    /// left out (gate nonlinearities, softmaxes, the loss, dropout) is element-wise work, a few
    /// percent of a step. Backward passes cost about twice the forward (each product has two
    /// gradients), so a training step is about three times [`ForwardFlops::total`].
    pub fn forward_flops(&self, src: usize, tgt: usize) -> ForwardFlops {
        let (h, e, a, v) = (
            self.hidden_size as f64,
            self.embedding_size as f64,
            self.attention_units as f64,
            self.vocab_size as f64,
        );
        let (s, t) = (src as f64, tgt as f64);
        // One LSTM layer per position: the four gates from its input and its last state.
        let gates = |input: f64| 4.0 * h * (input + h);
        let upper_encoder: f64 = (1..self.encoder_layers)
            .map(|i| gates(if i == 1 { 2.0 * h } else { h }))
            .sum();
        let encoder = s * (2.0 * gates(e) + upper_encoder);
        // Keys once per source position; per target position its query, a score over every
        // key (units wide) and the context (the encoder's width) over every position.
        let attention = s * h * a + t * (h * a + s * a + s * h);
        let decoder = t * (gates(e) + (self.decoder_layers - 1).max(0) as f64 * gates(2.0 * h));
        let classifier = t * h * v;
        let flops = |macs: f64| 2.0 * macs;
        ForwardFlops {
            encoder: flops(encoder),
            attention: flops(attention),
            decoder: flops(decoder),
            classifier: flops(classifier),
        }
    }

    /// Whether 0-based layer `i` of a stack gets a residual connection.
    pub fn residual_at(&self, i: i64, encoder: bool) -> bool {
        let start = if encoder {
            self.residual_start.max(3)
        } else {
            self.residual_start.max(2)
        };
        self.residual && i + 1 >= start
    }

    /// Whether a model file's tensor `name` is one this model does not have: the classifier
    /// matrix tied models saved before it was left out carry unused (loading and averaging
    /// skip it).
    pub fn unused_tensor(&self, name: &str) -> bool {
        self.tied_output && name == crate::CLASSIFIER_WEIGHT
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.encoder_layers < 2 || self.decoder_layers < 2 {
            return Err("encoder_layers and decoder_layers must be at least 2".into());
        }
        if self.tied_output && self.embedding_size != self.hidden_size {
            return Err("tied_output needs embedding_size == hidden_size".into());
        }
        if self.vocab_size < 8 || self.hidden_size < 1 || self.embedding_size < 1 {
            return Err("vocab_size, hidden_size and embedding_size must be positive".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        if !(0.0..1.0).contains(&self.word_dropout) {
            return Err(format!(
                "word_dropout {} is not in [0, 1)",
                self.word_dropout
            ));
        }
        Ok(())
    }
}
