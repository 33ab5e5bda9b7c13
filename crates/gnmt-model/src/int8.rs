//! int8 models, as GNMT's quantized inference (Wu et al. 2016, section 6) and further: every
//! large matrix (the embeddings, the encoder's and decoder's LSTM weights, the classifier)
//! quantized per row to 8 bits, run on gnmt-kernels' int8 multiplication ([`PackedLinearI8`]);
//! the attention's few float32 weights stay as they are.
//!
//! `--precision int8` quantizes a float32 model when it loads; `gnmt quantize` saves the same
//! quantized matrices as [`INT8_FILE`], and a model directory holding that file instead of
//! `model.safetensors` loads straight into int8 without float32 copies of those matrices
//! (about a quarter of the float32 model's memory) and translates exactly as the float32 model
//! does at `--precision int8`.
//!
//! The quantized units are the matrices as the kernels multiply them: a decoder layer's
//! `[W_ih W_hh]` with `b_ih + b_hh` (one step's gates in one product), an encoder layer's `W_ih`
//! with both biases (all time steps' inputs in one product) and `W_hh` apart (the recurrence).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use gnmt_kernels::{Kernels, PackedLinearI8, QuantizedMatrix};
use tch::{nn, Kind, Tensor};

use crate::cpu::{host, CpuAttention, CpuEncoder, EncoderLayer, Packed, Packs};
use crate::{safetensors_error, CpuDecoder, ModelConfig, ModelError, Seq2Seq};

/// The weights file of an int8 model directory.
pub const INT8_FILE: &str = "model-int8.safetensors";

/// A quantized matrix and its float32 bias, if it has one.
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    pub q: QuantizedMatrix,
    pub bias: Option<Vec<f32>>,
}

/// The model's quantized units by name (`embedding`, `decoder.embedding`,
/// `encoder.bottom_fwd.ih`, `encoder.bottom_fwd.hh`, ..., `decoder.layers.0`, ...,
/// `decoder.classifier`).
#[derive(Debug, Default)]
pub(crate) struct Units(BTreeMap<String, Unit>);

/// The rows `ids` of an embedding table, in float32, `[ids, E]` (an id beyond the table gives
/// zeros: the search never asks for one).
pub(crate) fn lookup(table: &QuantizedMatrix, ids: &[i64]) -> Vec<f32> {
    let mut out = Vec::with_capacity(ids.len() * table.k);
    for &id in ids {
        table.row_f32(usize::try_from(id).unwrap_or(usize::MAX), &mut out);
    }
    out
}

/// The names of the encoder's LSTM layers, bottom first.
fn encoder_names(config: &ModelConfig) -> Vec<String> {
    let mut names = vec![
        "encoder.bottom_fwd".to_string(),
        "encoder.bottom_bwd".into(),
    ];
    names.extend((1..config.encoder_layers).map(|i| format!("encoder.layers.{i}")));
    names
}

/// A float tensor's values and its `[n, k]`.
fn matrix(t: &Tensor) -> Result<(Vec<f32>, usize, usize), tch::TchError> {
    let (n, k) = t.size2()?;
    Ok((host(t)?, n as usize, k as usize))
}

/// What a unit is made of in the float32 model: column blocks side by side (a decoder layer's
/// `W_ih` and `W_hh`) and bias terms to sum.
struct Source {
    name: String,
    blocks: Vec<Tensor>,
    biases: Vec<Tensor>,
}

impl Source {
    fn new(name: String, blocks: &[&Tensor], biases: &[&Tensor]) -> Self {
        let shallow = |ts: &[&Tensor]| ts.iter().map(|t| t.shallow_clone()).collect();
        Source {
            name,
            blocks: shallow(blocks),
            biases: shallow(biases),
        }
    }

    /// `[n, k]` of the quantized matrix, and its bias length.
    fn shape(&self) -> ((usize, usize), Option<usize>) {
        let dim = |t: &Tensor, i: usize| t.size().get(i).copied().unwrap_or(0) as usize;
        let n = self.blocks.first().map_or(0, |t| dim(t, 0));
        let k = self.blocks.iter().map(|t| dim(t, 1)).sum();
        ((n, k), self.biases.first().map(|b| b.numel()))
    }

    fn quantize(&self) -> Result<Unit, tch::TchError> {
        let w = Tensor::cat(&self.blocks, 1);
        let (values, n, k) = matrix(&w)?;
        let bias = match self.biases.split_first() {
            Some((first, rest)) => {
                let sum = rest.iter().fold(first.shallow_clone(), |acc, b| acc + b);
                Some(host(&sum)?)
            }
            None => None,
        };
        let q = QuantizedMatrix::quantize(&values, n, k);
        Ok(Unit { q, bias })
    }
}

impl Units {
    fn get(&self, name: &str) -> Option<&Unit> {
        self.0.get(name)
    }

    fn packed(&self, name: &str) -> Option<PackedLinearI8> {
        let u = self.get(name)?;
        Some(PackedLinearI8::from_quantized(&u.q, u.bias.as_deref()))
    }

    /// Everything packed for the CPU kernels, or None if a unit is missing.
    pub(crate) fn pack(&self, config: &ModelConfig, attention: CpuAttention) -> Option<CpuDecoder> {
        let layers = (0..config.decoder_layers)
            .map(|i| self.packed(&format!("decoder.layers.{i}")).map(Packed::I8))
            .collect::<Option<Vec<_>>>()?;
        let classifier = Packed::I8(self.packed("decoder.classifier")?);
        let src_embedding = Arc::new(self.get("embedding")?.q.clone());
        let tgt_embedding = match self.get("decoder.embedding") {
            Some(u) => Arc::new(u.q.clone()),
            None => src_embedding.clone(),
        };
        let encoder = encoder_names(config)
            .iter()
            .map(|name| {
                Some(EncoderLayer {
                    ih: Packed::I8(self.packed(&format!("{name}.ih"))?),
                    hh: Packed::I8(self.packed(&format!("{name}.hh"))?),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(CpuDecoder::new(Packs {
            layers,
            classifier,
            encoder: CpuEncoder {
                embedding: Some(src_embedding),
                layers: encoder,
            },
            tgt_embedding: Some(tgt_embedding),
            attention,
        }))
    }
}

/// Writes `units` and the `floats` (name, tensor) as a safetensors file: `NAME.q` (int8
/// `[n, k]`), `NAME.scale` (`[n]`) and `NAME.bias` per unit.
fn write(units: &Units, floats: Vec<(String, Tensor)>, path: &Path) -> Result<(), tch::TchError> {
    let mut tensors = floats;
    for (name, u) in &units.0 {
        let q = Tensor::from_slice(&u.q.values).view([u.q.n as i64, u.q.k as i64]);
        tensors.push((format!("{name}.q"), q));
        tensors.push((format!("{name}.scale"), Tensor::from_slice(&u.q.scales)));
        if let Some(b) = &u.bias {
            tensors.push((format!("{name}.bias"), Tensor::from_slice(b)));
        }
    }
    Tensor::write_safetensors(&tensors, path)
}

/// Whether variable `name` is one the units replace (not kept in float32 by an int8 model).
fn quantized_var(name: &str) -> bool {
    name == "embedding.weight"
        || name.starts_with("encoder.")
        || name.starts_with("decoder.layers.")
        || name.starts_with("decoder.classifier.")
        || name == "decoder.embedding.weight"
}

impl Seq2Seq {
    /// Whether this is an int8 model (only the CPU kernels can run it).
    pub fn is_int8(&self) -> bool {
        self.int8.is_some()
    }

    /// The quantized units' float32 sources.
    fn unit_sources(&self) -> Vec<Source> {
        let mut out = vec![Source::new(
            "embedding".into(),
            &[&self.src_embedding.ws],
            &[],
        )];
        if let Some(e) = &self.tgt_embedding {
            out.push(Source::new("decoder.embedding".into(), &[&e.ws], &[]));
        }
        for (name, [w_ih, w_hh, b_ih, b_hh]) in
            encoder_names(&self.config).iter().zip(&self.enc_params)
        {
            out.push(Source::new(format!("{name}.ih"), &[w_ih], &[b_ih, b_hh]));
            out.push(Source::new(format!("{name}.hh"), &[w_hh], &[]));
        }
        for (i, [w_ih, w_hh, b_ih, b_hh]) in self.dec_params.iter().enumerate() {
            out.push(Source::new(
                format!("decoder.layers.{i}"),
                &[w_ih, w_hh],
                &[b_ih, b_hh],
            ));
        }
        let (w, b) = self.classifier_params();
        out.push(Source::new("decoder.classifier".into(), &[w], &[b]));
        out
    }

    /// The model's matrices quantized (from float32 on the CPU).
    pub(crate) fn int8_units(&self) -> Result<Units, tch::TchError> {
        let mut u = Units::default();
        for source in self.unit_sources() {
            u.0.insert(source.name.clone(), source.quantize()?);
        }
        Ok(u)
    }

    /// Saves this float32 model, quantized, as an int8 model's [`INT8_FILE`] at `path`.
    pub fn save_int8(&self, vs: &nn::VarStore, path: &Path) -> Result<(), ModelError> {
        let p = path.display().to_string();
        let err = |e: tch::TchError| ModelError::File {
            path: p.clone(),
            msg: e.to_string(),
        };
        if self.is_int8() {
            return Err(ModelError::File {
                path: p.clone(),
                msg: "the model is int8 already".into(),
            });
        }
        let units = tch::no_grad(|| self.int8_units()).map_err(err)?;
        let mut floats: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(name, _)| !quantized_var(name))
            .map(|(name, t)| (name, t.to_kind(Kind::Float)))
            .collect();
        floats.sort_by(|a, b| a.0.cmp(&b.0));
        write(&units, floats, path).map_err(err)
    }
}

/// Loads an int8 model's [`INT8_FILE`] into `model` (built from its config): the float32
/// weights it keeps into `vs`, the quantized units packed; the float32 copies of the
/// quantized matrices are released.
pub(crate) fn load_int8(
    vs: &mut nn::VarStore,
    model: &mut Seq2Seq,
    path: &Path,
) -> Result<(), ModelError> {
    let p = path.display().to_string();
    let tensor_err = |name: &str, msg: String| ModelError::Tensor {
        path: p.clone(),
        name: name.to_string(),
        msg,
    };
    let tensors = Tensor::read_safetensors(path).map_err(|e| ModelError::File {
        path: p.clone(),
        msg: safetensors_error(&e.to_string(), &p),
    })?;
    let mut by_name: BTreeMap<String, Tensor> = tensors.into_iter().collect();
    let mut units = Units::default();
    // The names and shapes: what the float32 model would quantize.
    for source in model.unit_sources() {
        let (name, ((n, k), bias_len)) = (&source.name, source.shape());
        let q = take(&mut by_name, &format!("{name}.q"), Kind::Int8, &[n, k])
            .map_err(|m| tensor_err(&format!("{name}.q"), m))?;
        let scales = take(&mut by_name, &format!("{name}.scale"), Kind::Float, &[n])
            .map_err(|m| tensor_err(&format!("{name}.scale"), m))?;
        let bias = match bias_len {
            Some(len) => Some(
                take(&mut by_name, &format!("{name}.bias"), Kind::Float, &[len])
                    .map_err(|m| tensor_err(&format!("{name}.bias"), m))?,
            ),
            None => None,
        };
        let values =
            Vec::<i8>::try_from(q.flatten(0, -1)).map_err(|e| tensor_err(name, e.to_string()))?;
        let scales = Vec::<f32>::try_from(scales).map_err(|e| tensor_err(name, e.to_string()))?;
        let bias = bias
            .map(Vec::<f32>::try_from)
            .transpose()
            .map_err(|e| tensor_err(name, e.to_string()))?;
        let q = QuantizedMatrix {
            n,
            k,
            values,
            scales,
        };
        units.0.insert(name.clone(), Unit { q, bias });
    }
    for (name, mut var) in vs.variables() {
        if quantized_var(&name) {
            // Released: an int8 model keeps only the quantized copy.
            tch::no_grad(|| var.set_data(&Tensor::zeros([0], (Kind::Float, tch::Device::Cpu))));
            continue;
        }
        let size: Vec<usize> = var.size().iter().map(|&d| d as usize).collect();
        let t = take(&mut by_name, &name, Kind::Float, &size).map_err(|m| tensor_err(&name, m))?;
        tch::no_grad(|| var.copy_(&t));
    }
    if let Some(name) = by_name.into_keys().next() {
        return Err(tensor_err(
            &name,
            "in the file but not in the model config".into(),
        ));
    }
    let packed = model
        .cpu_attention(Kernels::Int8)
        .and_then(|attention| units.pack(&model.config, attention));
    model.int8 = Some(packed.ok_or_else(|| tensor_err("", "incomplete".into()))?);
    Ok(())
}

/// Tensor `name` of the file, checked for its kind and shape.
fn take(
    by_name: &mut BTreeMap<String, Tensor>,
    name: &str,
    kind: Kind,
    size: &[usize],
) -> Result<Tensor, String> {
    let t = by_name.remove(name).ok_or("missing from the file")?;
    let got: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
    if t.kind() != kind || got != size {
        return Err(format!(
            "{:?} {got:?} in the file, {kind:?} {size:?} in the model config",
            t.kind()
        ));
    }
    Ok(t)
}
