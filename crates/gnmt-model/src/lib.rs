//! # gnmt-model
//!
//! The GNMT encoder-decoder on tch (libtorch), CPU and CUDA: a bidirectional bottom encoder layer,
//! unidirectional layers above it, residual connections from `residual_start` up, normalized
//! Bahdanau attention queried by the bottom decoder layer (GNMT v2 wiring: the context feeds every
//! higher decoder layer), and a classifier over the shared vocabulary. Dropout follows GNMT v2
//! in the encoder and on the decoder layers' inputs; two more decoder sites (target embedding,
//! classifier input) are on by default and off with `decoder_dropout = "gnmt"`
//! ([`DecoderDropout`]).
//!
//! Teacher-forced training runs each layer over the whole sequence in one call;
//! [`Seq2Seq::encode`] + [`Seq2Seq::step`] decode incrementally for search, with a
//! [`DecoderState`] that can be reordered by beam and shrunk.

pub mod config;
mod cpu;
mod int8;

use std::path::Path;

use gnmt_attention::Attention;
use tch::nn::{self, Module, RNN};
use tch::{Device, Kind, Tensor};

pub use config::{DecoderDropout, ForwardFlops, ModelConfig, PRESETS};
pub use cpu::{pick_rows, CpuDecoder, CpuState, StepBuffers};
pub use gnmt_kernels::{
    amx_bf16_available, amx_int8_chosen, amx_int8_supported, bf16_dot_supported,
    bf16_faster_than_float32, int8_dot_supported, Isa, Kernels, MAX_ISA_VARIABLE,
};
pub use int8::INT8_FILE;

thread_local! {
    /// This thread's dropout stream: its seed and the masks drawn from it so far.
    static DROPOUT_STREAM: std::cell::Cell<Option<(u64, u64)>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` with the CPU dropout masks of this thread's training passes decided by `seed`
/// alone: the `n`-th mask drawn is a function of `(seed, n)`. Threads training shares of one
/// batch at once get reproducible masks this way, where draws from libtorch's one generator
/// would interleave in whatever order the threads reach it. Nests; the outer stream resumes
/// afterwards.
pub fn with_dropout_seed<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<(u64, u64)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DROPOUT_STREAM.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(DROPOUT_STREAM.with(|s| s.replace(Some((seed, 0)))));
    f()
}

/// The next seed of this thread's dropout stream, if one is set.
fn next_dropout_seed() -> Option<u64> {
    DROPOUT_STREAM.with(|s| {
        let (seed, n) = s.get()?;
        s.set(Some((seed, n + 1)));
        // SplitMix64's output function over the n-th step of its sequence from `seed`.
        let mut z = seed.wrapping_add((n + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Some(z ^ (z >> 31))
    })
}

/// A device named on a command line or in a config: `cpu`, `cuda` (or `gpu`), `cuda:N`.
/// CUDA is refused with a pointer to `gnmt doctor` where libtorch sees no GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSpec(pub Device);

impl std::str::FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let cuda = |n: usize| {
            if tch::Cuda::is_available() {
                Ok(DeviceSpec(Device::Cuda(n)))
            } else {
                Err("CUDA is not available (see `gnmt doctor`)".to_string())
            }
        };
        match s {
            "cpu" => Ok(DeviceSpec(Device::Cpu)),
            "cuda" | "gpu" => cuda(0),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => cuda(n),
                Some(Err(_)) => Err(format!("bad device `{s}` (cpu, cuda, cuda:N)")),
                None => Err(format!("unknown device `{s}` (cpu, cuda, cuda:N)")),
            },
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            _ => f.write_str("cpu"),
        }
    }
}

/// As its name (`cpu`, `cuda:N`): command-line flags serialize into config keys.
impl serde::Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What can go wrong loading or building a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("{path}: {msg}")]
    File { path: String, msg: String },
    #[error("{path}: tensor `{name}`: {msg}")]
    Tensor {
        path: String,
        name: String,
        msg: String,
    },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// The zero state of LSTM layer `l` for a batch `x` (`[B, ...]`), on `x`'s device. tch's
/// `seq` and `zero_state` put it on the device the layer was created on, which
/// `VarStore::set_device` does not update: a model built on the CPU and moved to a GPU (as
/// `gnmt doctor --smoke` compares them) then fed cuDNN a CPU state.
pub fn zero_state(l: &nn::LSTM, x: &Tensor) -> nn::LSTMState {
    let s = l.zero_state(x.size().first().copied().unwrap_or(0));
    let zeros = s.h().to_device(x.device());
    nn::LSTMState((zeros.shallow_clone(), zeros))
}

/// uniform(-r, r) for every weight and bias, as GNMT v2 initialises them.
fn lstm(vs: nn::Path, input: i64, hidden: i64, r: f64) -> nn::LSTM {
    let u = nn::Init::Uniform { lo: -r, up: r };
    let c = nn::RNNConfig {
        batch_first: true,
        w_ih_init: u,
        w_hh_init: u,
        b_ih_init: Some(u),
        b_hh_init: Some(u),
        ..Default::default()
    };
    nn::lstm(vs, input, hidden, c)
}

/// Encoder outputs and what the decoder needs from them, computed once per batch.
#[derive(Debug)]
pub struct Encoded {
    /// `[B, S, H]` top encoder layer outputs.
    pub outputs: Tensor,
    /// `[B, S, U]` projected attention keys.
    pub keys: Tensor,
    /// `[B, S]` true at padding.
    pub pad_mask: Tensor,
}

impl Encoded {
    /// Rows picked (and repeated) by `index`: for beams and for shrinking the batch.
    pub fn select(&self, index: &Tensor) -> Encoded {
        Encoded {
            outputs: self.outputs.index_select(0, index),
            keys: self.keys.index_select(0, index),
            pad_mask: self.pad_mask.index_select(0, index),
        }
    }

    /// The rows of `self` then those of `other`, both padded to the wider source: sentences
    /// joining a search under way. Padding is what [`Seq2Seq::encode`] leaves there (masked
    /// out of the attention), so a sentence attends the same however wide its batch is.
    pub fn concat(&self, other: &Encoded) -> Encoded {
        let width = self.width().max(other.width());
        let (a, b) = (self.padded_to(width), other.padded_to(width));
        Encoded {
            outputs: Tensor::cat(&[a.outputs, b.outputs], 0),
            keys: Tensor::cat(&[a.keys, b.keys], 0),
            pad_mask: Tensor::cat(&[a.pad_mask, b.pad_mask], 0),
        }
    }

    /// Source positions `S`.
    pub fn width(&self) -> i64 {
        self.pad_mask.size().get(1).copied().unwrap_or(0)
    }

    /// The first `width` source positions (the others padding of every row).
    pub fn narrowed(&self, width: i64) -> Encoded {
        Encoded {
            outputs: self.outputs.narrow(1, 0, width).contiguous(),
            keys: self.keys.narrow(1, 0, width).contiguous(),
            pad_mask: self.pad_mask.narrow(1, 0, width).contiguous(),
        }
    }

    /// Padded with masked positions up to `width`.
    fn padded_to(&self, width: i64) -> Encoded {
        let extra = width - self.width();
        if extra <= 0 {
            return Encoded {
                outputs: self.outputs.shallow_clone(),
                keys: self.keys.shallow_clone(),
                pad_mask: self.pad_mask.shallow_clone(),
            };
        }
        let rows = self.pad_mask.size().first().copied().unwrap_or(0);
        let masked = Tensor::ones([rows, extra], (Kind::Bool, self.pad_mask.device()));
        Encoded {
            outputs: with_zeros(&self.outputs, extra),
            keys: with_zeros(&self.keys, extra),
            pad_mask: Tensor::cat(&[self.pad_mask.shallow_clone(), masked], 1),
        }
    }
}

/// `t` with `n` more entries of zeros along dimension 1.
fn with_zeros(t: &Tensor, n: i64) -> Tensor {
    let mut size = t.size();
    size[1] = n;
    let zeros = Tensor::zeros(size.as_slice(), (t.kind(), t.device()));
    Tensor::cat(&[t.shallow_clone(), zeros], 1)
}

/// Per-layer `(h, c)` of the decoder, each `[1, B, H]`.
#[derive(Debug)]
pub struct DecoderState {
    pub layers: Vec<nn::LSTMState>,
}

impl DecoderState {
    /// With `n` rows of zeros (a fresh hypothesis' state) after the others.
    pub fn with_zero_rows(&self, n: i64) -> DecoderState {
        DecoderState {
            layers: self
                .layers
                .iter()
                .map(|s| nn::LSTMState((with_zeros(&s.h(), n), with_zeros(&s.c(), n))))
                .collect(),
        }
    }

    pub fn select(&self, index: &Tensor) -> DecoderState {
        DecoderState {
            layers: self
                .layers
                .iter()
                .map(|s| {
                    nn::LSTMState((s.h().index_select(1, index), s.c().index_select(1, index)))
                })
                .collect(),
        }
    }
}

/// The GNMT sequence-to-sequence model.
#[derive(Debug)]
pub struct Seq2Seq {
    pub config: ModelConfig,
    src_embedding: nn::Embedding,
    tgt_embedding: Option<nn::Embedding>,
    enc_fwd: nn::LSTM,
    enc_bwd: nn::LSTM,
    enc_layers: Vec<nn::LSTM>,
    dec_layers: Vec<nn::LSTM>,
    /// The decoder layers' `[w_ih, w_hh, b_ih, b_hh]` (shared with `dec_layers`).
    dec_params: Vec<[Tensor; 4]>,
    /// The encoder's, bottom forward, bottom backward, then layers 1 and up.
    enc_params: Vec<[Tensor; 4]>,
    attention: Attention,
    classifier: Classifier,
    /// An int8 model's packed weights (its float32 matrices are released: only the CPU
    /// kernels can run it).
    int8: Option<CpuDecoder>,
}

/// The output layer: `decoder.classifier.bias`, and `decoder.classifier.weight` `[V, H]` unless
/// the model ties it to the target embedding (a tied model has no matrix of its own to train,
/// count or save).
#[derive(Debug)]
struct Classifier {
    weight: Option<Tensor>,
    bias: Tensor,
}

/// The name of an untied classifier's matrix. Tied models saved before it was left out carry an
/// unused copy under this name, which loading skips ([`ModelConfig::unused_tensor`]).
const CLASSIFIER_WEIGHT: &str = "decoder.classifier.weight";

/// An LSTM layer's `[w_ih, w_hh, b_ih, b_hh]` under `p`.
fn lstm_params(p: &nn::Path) -> Result<[Tensor; 4], ModelError> {
    let get = |name: &str| {
        p.get(name)
            .ok_or_else(|| ModelError::Config(format!("no parameter {}", p.path(name))))
    };
    Ok([
        get("weight_ih_l0")?,
        get("weight_hh_l0")?,
        get("bias_ih_l0")?,
        get("bias_hh_l0")?,
    ])
}

impl Seq2Seq {
    /// Casts this model's weights in `vs` (the VarStore it was built in) to `kind`: bf16 or
    /// fp16 (training's working copy, translation's cast model), or float32 as they are; then
    /// packs the LSTM weights for cuDNN again ([`Seq2Seq::pack_for_cudnn`]).
    pub fn cast(&self, vs: &mut nn::VarStore, kind: Kind) -> Result<(), ModelError> {
        match kind {
            Kind::BFloat16 => vs.bfloat16(),
            Kind::Half => vs.half(),
            Kind::Float => return Ok(()),
            other => return Err(ModelError::Config(format!("no model in {other:?}"))),
        }
        self.pack_for_cudnn()
    }

    /// Packs each LSTM layer's weights into one cuDNN buffer again, where they live on a CUDA
    /// device and cuDNN is there (elsewhere it does nothing). tch packs a layer's weights when
    /// it is created on a GPU, but casting the VarStore (bf16/fp16: training's working copy,
    /// translation's cast model) gives each weight its own storage, and cuDNN then copies them
    /// into a buffer at every call, warning each time (seen on an H200: 9 warnings a step).
    pub fn pack_for_cudnn(&self) -> Result<(), ModelError> {
        let on_gpu = self
            .enc_params
            .first()
            .is_some_and(|p| p[0].device().is_cuda());
        if !on_gpu || !tch::Cuda::cudnn_is_available() {
            return Ok(());
        }
        let _no_grad = tch::no_grad_guard();
        for p in self.enc_params.iter().chain(&self.dec_params) {
            let size = |t: &Tensor| t.size().get(1).copied().unwrap_or(0);
            // (2: cuDNN's LSTM mode; 4 tensors a layer, one layer, batch first, one direction)
            let _packed = Tensor::f_internal_cudnn_rnn_flatten_weight(
                p,
                4,
                size(&p[0]),
                2,
                size(&p[1]),
                0,
                1,
                true,
                false,
            )?;
        }
        Ok(())
    }

    /// Builds the model's parameters under `vs` (names like `encoder.layers.3.weight_ih_l0`).
    pub fn new(vs: &nn::Path, config: &ModelConfig) -> Result<Self, ModelError> {
        config.validate().map_err(ModelError::Config)?;
        let c = config;
        let (h, e) = (c.hidden_size, c.embedding_size);
        let u = nn::Init::Uniform {
            lo: -c.init_range,
            up: c.init_range,
        };
        let emb_cfg = nn::EmbeddingConfig {
            padding_idx: 0,
            ws_init: u,
            ..Default::default()
        };
        let src_embedding = nn::embedding(vs / "embedding", c.vocab_size, e, emb_cfg);
        let tgt_embedding = (!c.shared_embeddings)
            .then(|| nn::embedding(vs / "decoder" / "embedding", c.vocab_size, e, emb_cfg));
        let enc = vs / "encoder";
        let enc_fwd = lstm(&enc / "bottom_fwd", e, h, c.init_range);
        let enc_bwd = lstm(&enc / "bottom_bwd", e, h, c.init_range);
        let mut enc_layers = Vec::new();
        for i in 1..c.encoder_layers {
            let input = if i == 1 { 2 * h } else { h };
            enc_layers.push(lstm(&enc / "layers" / i, input, h, c.init_range));
        }
        let dec = vs / "decoder";
        let mut dec_layers = vec![lstm(&dec / "layers" / 0, e, h, c.init_range)];
        for i in 1..c.decoder_layers {
            dec_layers.push(lstm(&dec / "layers" / i, 2 * h, h, c.init_range));
        }
        let mut dec_params = Vec::with_capacity(dec_layers.len());
        for i in 0..dec_layers.len() {
            dec_params.push(lstm_params(&(&dec / "layers" / i))?);
        }
        let mut enc_params = vec![
            lstm_params(&(&enc / "bottom_fwd"))?,
            lstm_params(&(&enc / "bottom_bwd"))?,
        ];
        for i in 1..c.encoder_layers {
            enc_params.push(lstm_params(&(&enc / "layers" / i))?);
        }
        let attention = Attention::new(
            &(&dec / "attention"),
            c.attention,
            h,
            h,
            c.attention_units,
            c.init_range,
        );
        let cls = &dec / "classifier";
        let classifier = Classifier {
            weight: (!c.tied_output).then(|| cls.var("weight", &[c.vocab_size, h], u)),
            bias: cls.var("bias", &[c.vocab_size], u),
        };
        let model = Seq2Seq {
            config: c.clone(),
            src_embedding,
            tgt_embedding,
            enc_fwd,
            enc_bwd,
            enc_layers,
            dec_layers,
            dec_params,
            enc_params,
            attention,
            classifier,
            int8: None,
        };
        Ok(model)
    }

    fn tgt_emb(&self) -> &nn::Embedding {
        self.tgt_embedding.as_ref().unwrap_or(&self.src_embedding)
    }

    /// Dropout in training (the mask from [`Seq2Seq::dropout_mask`]).
    fn dropout(&self, x: Tensor, train: bool) -> Tensor {
        Self::drop(x, self.config.dropout, train, false)
    }

    /// Word dropout in training: whole embedding vectors of `x` `[B, T, E]` zeroed with
    /// probability `word_dropout` (the rest scaled by 1/(1-p)), so the model learns to
    /// translate with some words of its input unseen (Sennrich & Zhang 2019, for small
    /// corpora). Off at 0, where no seed is drawn, so runs without it are as before.
    fn word_dropout(&self, x: Tensor, train: bool) -> Tensor {
        Self::drop(x, self.config.word_dropout, train, true)
    }

    /// `x` times a dropout mask of probability `p` in training: one draw per element, or per
    /// vector of the last dimension (`whole`). Unchanged outside training or at `p` 0.
    fn drop(x: Tensor, p: f64, train: bool, whole: bool) -> Tensor {
        if !train || p <= 0.0 {
            return x;
        }
        let mut size = x.size();
        if whole {
            if let Some(last) = size.last_mut() {
                *last = 1;
            }
        }
        let mask = Self::dropout_mask(p, &size, x.kind(), x.device());
        x * mask
    }

    /// A dropout mask of `size` (0 or 1/(1-p)). On a CPU it comes from gnmt-kernels (a
    /// vectorized hash of a seed; libtorch draws it element by element, 5% of a bf16 training
    /// step): the seed is the next of this thread's [`with_dropout_seed`] stream, or else drawn
    /// from libtorch's generator (so `tch::manual_seed` still decides it). Elsewhere libtorch's
    /// dropout of ones.
    fn dropout_mask(p: f64, size: &[i64], kind: Kind, device: Device) -> Tensor {
        let libtorch = || Tensor::ones(size, (kind, device)).dropout(p, true);
        if device != Device::Cpu {
            return libtorch();
        }
        let seed = next_dropout_seed().map(Ok).unwrap_or_else(|| {
            Tensor::f_randint(i64::MAX, [1], (Kind::Int64, Device::Cpu))
                .and_then(|t| t.f_int64_value(&[0]))
                .map(|s| s as u64)
        });
        match seed {
            Ok(seed) => gnmt_kernels::tensor::dropout_mask(seed, p, size, kind),
            Err(_) => libtorch(),
        }
    }

    /// Encodes `sources` (none empty) as one batch on `device`: on gnmt-kernels with `cpu`'s
    /// packed encoder (float32, bf16 or int8: the decoder's kernels), else with libtorch
    /// ([`Seq2Seq::encode`]).
    pub fn encode_sources(
        &self,
        cpu: Option<&CpuDecoder>,
        sources: &[Vec<u32>],
        device: Device,
    ) -> Result<Encoded, tch::TchError> {
        if let Some(dec) = cpu {
            return self.encode_cpu(dec.encoder(), sources);
        }
        let batch = cpu::SourceBatch::new(sources);
        let src = Tensor::from_slice(&batch.ids)
            .view([batch.rows as i64, batch.width as i64])
            .to_device(device);
        let lens: Vec<i64> = batch.lens.iter().map(|&l| l as i64).collect();
        Ok(self.encode(&src, &Tensor::from_slice(&lens), false))
    }

    /// Encodes `src` `[B, S]` (ids, 0 = padding) with lengths `[B]` (int64, CPU).
    pub fn encode(&self, src: &Tensor, src_len: &Tensor, train: bool) -> Encoded {
        let (b, s) = src.size2().unwrap_or((0, 0));
        let device = src.device();
        let pad_mask = src.eq(0);
        let x = self.word_dropout(self.src_embedding.forward(src), train);
        let x = self.dropout(x, train);
        // The backward direction must start at each sentence's last real token: reverse every
        // sentence within its own length, run forward, reverse back.
        let pos = Tensor::arange(s, (Kind::Int64, device))
            .unsqueeze(0)
            .expand([b, s], false);
        let lens = src_len.to_device(device).unsqueeze(1);
        let rev_idx = (&lens - 1 - &pos).where_self(&pos.lt_tensor(&lens), &pos);
        let gather = |t: &Tensor| t.gather(1, &rev_idx.unsqueeze(2).expand_as(t), false);
        let (fwd, _) = self.enc_fwd.seq_init(&x, &zero_state(&self.enc_fwd, &x));
        let (bwd, _) = self
            .enc_bwd
            .seq_init(&gather(&x), &zero_state(&self.enc_bwd, &x));
        let mut out = Tensor::cat(&[fwd, gather(&bwd)], 2);
        for (k, layer) in self.enc_layers.iter().enumerate() {
            let i = k as i64 + 1;
            let inp = self.dropout(out.shallow_clone(), train);
            let (y, _) = layer.seq_init(&inp, &zero_state(layer, &inp));
            out = if self.config.residual_at(i, true) {
                y + out
            } else {
                y
            };
        }
        let keys = self.attention.keys(&out);
        Encoded {
            outputs: out,
            keys,
            pad_mask,
        }
    }

    /// Runs the decoder over `tgt_in` `[B, T]` from `state` (None: zeros). Returns logits
    /// `[B, T, V]`, attention `[B, T, S]` and the new state.
    pub fn decode(
        &self,
        enc: &Encoded,
        tgt_in: &Tensor,
        state: Option<&DecoderState>,
        train: bool,
    ) -> (Tensor, Tensor, DecoderState) {
        self.decode_grouped(enc, tgt_in, state, train, 1, Kernels::Fused)
    }

    /// [`Seq2Seq::decode`] where `group` consecutive rows of `tgt_in` (the beams of one
    /// sentence, `T` = 1) share row `i / group` of `enc`: beam search never copies the encoder
    /// outputs per beam, the beams are the attention's queries.
    fn decode_grouped(
        &self,
        enc: &Encoded,
        tgt_in: &Tensor,
        state: Option<&DecoderState>,
        train: bool,
        group: i64,
        kernels: Kernels,
    ) -> (Tensor, Tensor, DecoderState) {
        let (out, attn, state) = self.decode_hidden(enc, tgt_in, state, train, group, kernels);
        (self.classify(&out), attn, state)
    }

    /// The decoder up to its top layer's output `[B, T, H]` (dropout applied), before the
    /// classifier.
    fn decode_hidden(
        &self,
        enc: &Encoded,
        tgt_in: &Tensor,
        state: Option<&DecoderState>,
        train: bool,
        group: i64,
        kernels: Kernels,
    ) -> (Tensor, Tensor, DecoderState) {
        let b = tgt_in.size()[0];
        let mut new_state = Vec::with_capacity(self.dec_layers.len());
        let extended = self.config.decoder_dropout == DecoderDropout::Extended;
        let x = self.word_dropout(self.tgt_emb().forward(tgt_in), train);
        let x = self.dropout(x, train && extended);
        let init = |i: usize| -> nn::LSTMState {
            match state {
                Some(s) => nn::LSTMState((s.layers[i].h(), s.layers[i].c())),
                None => zero_state(&self.dec_layers[i], tgt_in),
            }
        };
        let (h0, s0) = self.dec_layers[0].seq_init(&x, &init(0));
        new_state.push(s0);
        let (ctx, attn) = if group > 1 {
            // [B*g, 1, H] -> [B, g, H]: the g beams are g queries over one sentence.
            let (rows, _, hid) = h0.size3().unwrap_or((b, 1, 0));
            let q = h0.view([rows / group, group, hid]);
            let (c, a) =
                self.attention
                    .forward(&q, &enc.keys, &enc.outputs, &enc.pad_mask, kernels);
            let s = a.size()[2];
            (c.reshape([rows, 1, -1]), a.reshape([rows, 1, s]))
        } else {
            self.attention
                .forward(&h0, &enc.keys, &enc.outputs, &enc.pad_mask, kernels)
        };
        let mut out = h0;
        for (k, layer) in self.dec_layers.iter().enumerate().skip(1) {
            let inp = Tensor::cat(
                &[
                    self.dropout(out.shallow_clone(), train),
                    ctx.shallow_clone(),
                ],
                2,
            );
            let (y, st) = layer.seq_init(&inp, &init(k));
            new_state.push(st);
            out = if self.config.residual_at(k as i64, false) {
                y + out
            } else {
                y
            };
        }
        (
            self.dropout(out, train && extended),
            attn,
            DecoderState { layers: new_state },
        )
    }

    /// The classifier's weight `[V, H]` (the target embedding when tied) and bias.
    pub(crate) fn classifier_params(&self) -> (&Tensor, &Tensor) {
        let w = match &self.classifier.weight {
            Some(w) => w,
            None => &self.tgt_emb().ws,
        };
        (w, &self.classifier.bias)
    }

    /// Logits `[.., V]` of decoder outputs `[.., H]`.
    fn classify(&self, out: &Tensor) -> Tensor {
        let (w, b) = self.classifier_params();
        out.linear(w, Some(b))
    }

    /// Teacher-forced forward pass: logits `[B, T, V]`.
    pub fn forward(&self, src: &Tensor, src_len: &Tensor, tgt_in: &Tensor, train: bool) -> Tensor {
        let enc = self.encode(src, src_len, train);
        self.decode(&enc, tgt_in, None, train).0
    }

    /// One decoder step for search: `tokens` `[B]` -> log-probabilities `[B, V]` (float32),
    /// attention `[B, S]` and the next state.
    pub fn step(
        &self,
        enc: &Encoded,
        state: Option<&DecoderState>,
        tokens: &Tensor,
    ) -> (Tensor, Tensor, DecoderState) {
        self.step_grouped(enc, state, tokens, 1)
    }

    /// One decoder step for `group` hypotheses per sentence: `tokens` `[B * group]`, `enc` one
    /// row per sentence.
    pub fn step_grouped(
        &self,
        enc: &Encoded,
        state: Option<&DecoderState>,
        tokens: &Tensor,
        group: i64,
    ) -> (Tensor, Tensor, DecoderState) {
        let (logits, attn, st) = self.step_logits(enc, state, tokens, group, Kernels::Fused);
        (logits.log_softmax(-1, Kind::Float), attn, st)
    }

    /// [`Seq2Seq::step_grouped`] before the log-softmax: logits `[B * group, V]` in the
    /// model's precision (search fuses the log-softmax with its top-k on a CPU). `kernels`
    /// says whether the attention may score on gnmt-kernels.
    pub fn step_logits(
        &self,
        enc: &Encoded,
        state: Option<&DecoderState>,
        tokens: &Tensor,
        group: i64,
        kernels: Kernels,
    ) -> (Tensor, Tensor, DecoderState) {
        let (out, attn, st) = self.decode_hidden(
            enc,
            &tokens.unsqueeze(1),
            state,
            false,
            group.max(1),
            kernels,
        );
        (
            self.classify(&out.squeeze_dim(1)),
            attn.squeeze_dim(1).to_kind(Kind::Float),
            st,
        )
    }
}

/// Parameter count per part (embedding, encoder, decoder, attention, classifier) and in total.
pub fn parameter_counts(vs: &nn::VarStore) -> Vec<(String, i64)> {
    let mut parts: Vec<(String, i64)> = Vec::new();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, t) in vars {
        let part = if name.contains("attention") {
            "attention"
        } else if name.contains("classifier") {
            "classifier"
        } else if name.contains("embedding") {
            "embedding"
        } else if name.starts_with("encoder") {
            "encoder"
        } else {
            "decoder"
        };
        let n = t.numel() as i64;
        match parts.iter_mut().find(|(p, _)| p == part) {
            Some(e) => e.1 += n,
            None => parts.push((part.to_string(), n)),
        }
    }
    let total = parts.iter().map(|p| p.1).sum();
    parts.push(("total".into(), total));
    parts
}

/// What went wrong reading a safetensors file, in words: the path once (the caller names it),
/// and "truncated or damaged" for the parser's header errors (`MetadataIncompleteBuffer`,
/// `InvalidHeader...`, `HeaderTooLarge`...).
pub fn safetensors_error(msg: &str, path: &str) -> String {
    let msg = msg.replace(&format!("\"{path}\""), "").replace(path, "");
    let damaged = [
        "MetadataIncompleteBuffer",
        "InvalidHeader",
        "HeaderTooLarge",
        "HeaderTooSmall",
        "InvalidOffset",
        "TensorInvalidInfo",
        "unexpected end of file",
    ];
    match damaged.iter().find(|d| msg.contains(*d)) {
        Some(d) => format!("truncated or damaged safetensors file ({d})"),
        None => {
            let m = msg.trim_matches(|c: char| c == ' ' || c == ':' || c == ',');
            if m.is_empty() {
                "unreadable safetensors file".into()
            } else {
                m.to_string()
            }
        }
    }
}

/// Loads `model.safetensors` into `vs`, checking that every name and shape matches (a tied
/// model's unused classifier matrix, which older versions saved, is skipped).
pub fn load_weights(vs: &mut nn::VarStore, path: &Path) -> Result<(), ModelError> {
    let p = path.display().to_string();
    let tensors = Tensor::read_safetensors(path).map_err(|e| ModelError::File {
        path: p.clone(),
        msg: safetensors_error(&e.to_string(), &p),
    })?;
    let mut by_name: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
    let vars = vs.variables();
    if !vars.contains_key(CLASSIFIER_WEIGHT) {
        by_name.remove(CLASSIFIER_WEIGHT);
    }
    for (name, mut var) in vars {
        let Some(t) = by_name.remove(&name) else {
            return Err(ModelError::Tensor {
                path: p,
                name,
                msg: "missing from the file".into(),
            });
        };
        if t.size() != var.size() {
            return Err(ModelError::Tensor {
                path: p,
                name,
                msg: format!(
                    "shape {:?} in the file, {:?} in the model config",
                    t.size(),
                    var.size()
                ),
            });
        }
        tch::no_grad(|| var.copy_(&t));
    }
    if let Some(name) = by_name.into_keys().next() {
        return Err(ModelError::Tensor {
            path: p,
            name,
            msg: "in the file but not in the model config".into(),
        });
    }
    Ok(())
}

/// A loaded model directory: `config.json` + `model.safetensors` (+ `tokenizer.json`, loaded by the caller).
pub fn load_model_dir(dir: &Path, device: Device) -> Result<(nn::VarStore, Seq2Seq), ModelError> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::File {
        path: cfg_path.display().to_string(),
        msg: e.to_string(),
    })?;
    let config: ModelConfig = serde_json::from_str(&text).map_err(|e| ModelError::File {
        path: cfg_path.display().to_string(),
        msg: e.to_string(),
    })?;
    let mut vs = nn::VarStore::new(device);
    let mut model = Seq2Seq::new(&vs.root(), &config)?;
    let (float, int8) = (dir.join("model.safetensors"), dir.join(INT8_FILE));
    if !float.exists() && int8.exists() {
        if device != Device::Cpu {
            return Err(ModelError::File {
                path: int8.display().to_string(),
                msg: format!("an int8 model runs on the CPU only, not on {device:?}"),
            });
        }
        int8::load_int8(&mut vs, &mut model, &int8)?;
    } else {
        load_weights(&mut vs, &float)?;
    }
    Ok((vs, model))
}

#[cfg(test)]
mod tests;
