//! A model directory opened for translation: `config.json`, `tokenizer.json` and
//! `model.safetensors`, checked together. (Here rather than in gnmt-model, which does not know
//! the tokenizer.)

use std::path::{Path, PathBuf};

use gnmt_model::{load_model_dir, ModelError, Seq2Seq};
use gnmt_tokenizer::{SubwordTokenizer, TokenizerError};
use tch::{nn, Device};

/// What can be wrong with a model directory.
#[derive(Debug, thiserror::Error)]
pub enum ModelDirError {
    #[error("{}: not a model directory ({file} is missing)", dir.display())]
    Missing { dir: PathBuf, file: &'static str },
    #[error("{}: tokenizer.json has {tokenizer} pieces but config.json says {config}", dir.display())]
    VocabMismatch {
        dir: PathBuf,
        tokenizer: usize,
        config: i64,
    },
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// The files of a model directory.
pub const MODEL_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// A loaded model directory.
#[derive(Debug)]
pub struct ModelDir {
    pub path: PathBuf,
    pub vs: nn::VarStore,
    pub model: Seq2Seq,
    pub tokenizer: SubwordTokenizer,
}

impl ModelDir {
    /// Opens `dir` on `device`: every file present, the weights matching the config, the
    /// tokenizer's size the config's vocabulary size.
    pub fn open(dir: &Path, device: Device) -> Result<Self, ModelDirError> {
        for file in MODEL_FILES {
            // An int8 model (gnmt quantize) has its own weights file.
            let int8 = file == "model.safetensors" && dir.join(gnmt_model::INT8_FILE).exists();
            if !int8 && !dir.join(file).exists() {
                return Err(ModelDirError::Missing {
                    dir: dir.to_path_buf(),
                    file,
                });
            }
        }
        let tokenizer = SubwordTokenizer::load(&dir.join("tokenizer.json"))?;
        let (vs, model) = load_model_dir(dir, device)?;
        if tokenizer.vocab_size() as i64 != model.config.vocab_size {
            return Err(ModelDirError::VocabMismatch {
                dir: dir.to_path_buf(),
                tokenizer: tokenizer.vocab_size(),
                config: model.config.vocab_size,
            });
        }
        Ok(ModelDir {
            path: dir.to_path_buf(),
            vs,
            model,
            tokenizer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gnmt_model::ModelConfig;

    #[test]
    fn a_model_directory_is_checked_as_a_whole() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let err = ModelDir::open(d, Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("config.json is missing"), "{err}");
        let lines = ["a b c d e f g h", "i j k l m n o p"];
        let tok = SubwordTokenizer::train(
            lines.iter().map(|s| s.to_string()).cycle().take(20),
            300,
            gnmt_tokenizer::VocabKind::Bpe,
        )
        .unwrap();
        tok.save(&d.join("tokenizer.json")).unwrap();
        let write = |vocab: i64| {
            let cfg = ModelConfig::preset("tiny", vocab).unwrap();
            let vs = nn::VarStore::new(Device::Cpu);
            Seq2Seq::new(&vs.root(), &cfg).unwrap();
            std::fs::write(d.join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
            vs.save(d.join("model.safetensors")).unwrap();
        };
        write(tok.vocab_size() as i64 + 8);
        let err = ModelDir::open(d, Device::Cpu).unwrap_err().to_string();
        assert!(
            err.contains("tokenizer.json has") && err.contains("config.json says"),
            "{err}"
        );
        write(tok.vocab_size() as i64);
        let m = ModelDir::open(d, Device::Cpu).unwrap();
        assert_eq!(m.model.config.vocab_size, tok.vocab_size() as i64);
    }
}
