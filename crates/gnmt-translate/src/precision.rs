//! Which precision a translation runs in, and how `gnmt translate` picks one when none is asked
//! for: the fastest path this CPU has whose BLEU stayed within [`MAX_BLEU_LOSS`] of float32's on
//! the data `gnmt check-precision` translated with each (recorded beside the model, in
//! [`CHECK_FILE`]). Without such a record, float32.

use std::collections::BTreeMap;
use std::path::Path;

use gnmt_model::Kernels;
use tch::Device;

/// The record of a precision check, in the model directory.
pub const CHECK_FILE: &str = "precision.json";

/// The most BLEU a faster path may lose against float32 to be picked by default.
pub const MAX_BLEU_LOSS: f64 = 0.2;

/// The precision a translation runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub enum Precision {
    #[default]
    Fp32,
    /// bf16 weights and activations, float32 sums and scores.
    Bf16,
    /// fp16 weights and activations (for GPUs), float32 scores.
    Fp16,
    /// Every large matrix (embeddings, encoder, decoder, classifier) and its inputs quantized to
    /// 8 bits (CPU); the attention in float32.
    Int8,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
        }
    }

    /// The CPU paths faster than float32 that this process runs on fast instructions, fastest
    /// first (int8 on AVX512-VNNI, AVX-VNNI or AVX2-only CPUs; bf16 on AMX-BF16, or on AMD's
    /// AVX512-BF16, not on Intel's: [`gnmt_kernels::bf16_faster_than_float32`]); none on a GPU.
    pub fn faster_paths(device: Device) -> Vec<Precision> {
        let mut out = Vec::new();
        if device == Device::Cpu {
            if gnmt_kernels::int8_faster_than_float32() {
                out.push(Precision::Int8);
            }
            if gnmt_kernels::bf16_faster_than_float32() {
                out.push(Precision::Bf16);
            }
        }
        out
    }
}

/// Where bf16 translation runs on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuBf16 {
    /// libtorch's operators (oneDNN on the AMX-BF16 tiles) on the model cast to bf16. On a Xeon
    /// with AMX (family 6, model 207) that ran 1.0-1.3x gnmt-kernels' float32 and 1.5-1.7x its
    /// AVX512-BF16 kernels, which there were slower than float32 (0.6-0.8x; README, Speed).
    Amx,
    /// gnmt-kernels' AVX512-BF16 dot products, the model kept in float32: faster than float32
    /// on AMD's Zen 4 and Zen 5, about half its speed on Intel's Xeons without AMX (their
    /// `vdpbf16ps` issues at half the FMA's rate), where bf16 is then no faster path.
    Avx512Bf16,
    /// Neither: libtorch's operators on the cast model, emulating bf16 (slower than float32).
    Emulated,
}

impl CpuBf16 {
    pub fn detected() -> CpuBf16 {
        if gnmt_kernels::amx_bf16_available() {
            CpuBf16::Amx
        } else if gnmt_kernels::bf16_dot_supported() {
            CpuBf16::Avx512Bf16
        } else {
            CpuBf16::Emulated
        }
    }
}

/// How `precision` runs on `device`: the search's kernels, and the dtype to cast the model's
/// weights to (None: they stay float32). bf16 on a CPU goes where [`CpuBf16`] says: gnmt-kernels'
/// bf16 kernels on the float32 model ([`Kernels::Bf16`]), or libtorch on the cast model; on a
/// GPU, bf16 and fp16 cast the model for libtorch's operators. int8 quantizes the model on
/// gnmt-kernels ([`Kernels::Int8`]; on a GPU it runs as float32).
pub fn precision_plan(precision: Precision, device: Device) -> (Kernels, Option<tch::Kind>) {
    plan_with(precision, device, CpuBf16::detected())
}

fn plan_with(precision: Precision, device: Device, bf16: CpuBf16) -> (Kernels, Option<tch::Kind>) {
    match precision {
        Precision::Fp32 => (Kernels::Fused, None),
        Precision::Bf16 if device == Device::Cpu && bf16 == CpuBf16::Avx512Bf16 => {
            (Kernels::Bf16, None)
        }
        Precision::Bf16 => (Kernels::Fused, Some(tch::Kind::BFloat16)),
        Precision::Fp16 => (Kernels::Fused, Some(tch::Kind::Half)),
        Precision::Int8 if device == Device::Cpu => (Kernels::Int8, None),
        Precision::Int8 => (Kernels::Fused, None),
    }
}

/// What a translation at `precision` on `device` runs on, in words (for logs and `gnmt doctor`).
pub fn describe_plan(precision: Precision, device: Device) -> &'static str {
    let (kernels, cast) = precision_plan(precision, device);
    match (kernels, cast) {
        _ if device != Device::Cpu && precision == Precision::Int8 => {
            "libtorch float32 (int8 runs on CPUs only)"
        }
        (_, Some(tch::Kind::BFloat16)) if device == Device::Cpu => match CpuBf16::detected() {
            CpuBf16::Amx => "libtorch (oneDNN on AMX-BF16), model cast to bf16",
            _ => "libtorch, model cast to bf16 (emulated on this CPU: slower than float32)",
        },
        (Kernels::Bf16, _) if gnmt_kernels::bf16_faster_than_float32() => {
            "gnmt-kernels, encoder and decoder weights in bf16 (AVX512-BF16)"
        }
        (Kernels::Bf16, _) => {
            "gnmt-kernels, encoder and decoder weights in bf16 (AVX512-BF16 at half the float32 FMA's rate on this CPU: slower than float32)"
        }
        (Kernels::Int8, _) if gnmt_kernels::amx_int8_chosen() => {
            "gnmt-kernels, encoder, decoder and embeddings in int8 (AMX-INT8 tiles; AVX512-VNNI where k is not a multiple of 64)"
        }
        // The build gnmt-kernels chose (int8_build), in words.
        (Kernels::Int8, _) => match gnmt_kernels::int8_build() {
            "avx512-vnni" => "gnmt-kernels, encoder, decoder and embeddings in int8 (AVX512-VNNI)",
            "avx-vnni" => "gnmt-kernels, encoder, decoder and embeddings in int8 (AVX-VNNI)",
            "avx2" if gnmt_kernels::int8_faster_than_float32() => {
                "gnmt-kernels, encoder, decoder and embeddings in int8 (AVX2, 16-bit products)"
            }
            "avx2" => {
                "gnmt-kernels, encoder, decoder and embeddings in int8 (AVX2 products without VNNI: not faster than float32's AVX-512 here)"
            }
            _ => "gnmt-kernels, encoder, decoder and embeddings in int8 (portable: slow)",
        },
        (_, Some(_)) => "libtorch, model cast",
        _ if device == Device::Cpu => "gnmt-kernels, float32",
        _ => "libtorch",
    }
}

/// What `gnmt check-precision` measured: the BLEU of each precision on one source file.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PrecisionCheck {
    /// The source file translated, and how many of its lines.
    pub source: String,
    pub sentences: usize,
    /// BLEU (13a, cased) by precision name (`fp32`, `bf16`, `int8`).
    pub bleu: BTreeMap<String, f64>,
}

/// A record that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg} (delete it, or run `gnmt {command}` again)")]
pub struct CheckError {
    pub path: String,
    pub msg: String,
    /// The command that writes the record.
    pub command: &'static str,
}

/// The JSON record `file` beside a model, written by `gnmt command`, if there is one.
pub(crate) fn read_record<T: serde::de::DeserializeOwned>(
    model_dir: &Path,
    file: &str,
    command: &'static str,
) -> Result<Option<T>, CheckError> {
    let path = model_dir.join(file);
    let err = |msg: String| CheckError {
        path: path.display().to_string(),
        msg,
        command,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| err(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(e.to_string())),
    }
}

impl PrecisionCheck {
    /// The record in `model_dir`, if there is one.
    pub fn read(model_dir: &Path) -> Result<Option<Self>, CheckError> {
        read_record(model_dir, CHECK_FILE, "check-precision")
    }

    /// The precision to run when none is asked for, and why (for the log): the first of the
    /// faster paths (fastest first) whose BLEU is within [`MAX_BLEU_LOSS`] of float32's, else
    /// float32.
    pub fn pick(check: Option<&PrecisionCheck>, faster: &[Precision]) -> (Precision, String) {
        let Some(check) = check else {
            return (
                Precision::Fp32,
                "no precision check beside the model (`gnmt check-precision` records one)".into(),
            );
        };
        let Some(&base) = check.bleu.get("fp32") else {
            return (
                Precision::Fp32,
                "the precision check has no fp32 score".into(),
            );
        };
        for &p in faster {
            if let Some(&b) = check.bleu.get(p.name()) {
                if b >= base - MAX_BLEU_LOSS {
                    let why = format!(
                        "BLEU {b:.2} against fp32's {base:.2} on {} sentences of {}",
                        check.sentences, check.source
                    );
                    return (p, why);
                }
            }
        }
        (
            Precision::Fp32,
            format!(
                "no faster path this CPU has kept BLEU within {MAX_BLEU_LOSS} of fp32's {base:.2}"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(scores: &[(&str, f64)]) -> PrecisionCheck {
        PrecisionCheck {
            source: "valid.en".into(),
            sentences: 100,
            bleu: scores.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
        }
    }

    #[test]
    fn picks_the_fastest_path_within_the_bleu_margin() {
        let both = [Precision::Int8, Precision::Bf16];
        let c = check(&[("fp32", 36.0), ("bf16", 35.9), ("int8", 35.7)]);
        assert_eq!(PrecisionCheck::pick(Some(&c), &both).0, Precision::Bf16);
        let c = check(&[("fp32", 36.0), ("bf16", 35.9), ("int8", 35.85)]);
        assert_eq!(PrecisionCheck::pick(Some(&c), &both).0, Precision::Int8);
        // A path this CPU lacks is not picked, whatever its score.
        assert_eq!(
            PrecisionCheck::pick(Some(&c), &[Precision::Bf16]).0,
            Precision::Bf16
        );
        assert_eq!(PrecisionCheck::pick(Some(&c), &[]).0, Precision::Fp32);
        let c = check(&[("fp32", 36.0), ("bf16", 35.7)]);
        assert_eq!(PrecisionCheck::pick(Some(&c), &both).0, Precision::Fp32);
        assert_eq!(PrecisionCheck::pick(None, &both).0, Precision::Fp32);
    }

    #[test]
    fn int8_and_kernel_bf16_are_cpu_paths() {
        let gpu = Device::Cuda(0);
        assert_eq!(precision_plan(Precision::Int8, gpu), (Kernels::Fused, None));
        assert_eq!(
            precision_plan(Precision::Int8, Device::Cpu).0,
            Kernels::Int8
        );
        assert_eq!(
            precision_plan(Precision::Bf16, gpu),
            (Kernels::Fused, Some(tch::Kind::BFloat16))
        );
        assert!(Precision::faster_paths(gpu).is_empty());
        // int8 is offered where its products beat float32's: VNNI, or AVX2 against AVX2.
        let offered = Precision::faster_paths(Device::Cpu).contains(&Precision::Int8);
        let isa = gnmt_kernels::Isa::detected();
        let vnni = gnmt_kernels::int8_dot_supported();
        assert_eq!(offered, vnni || isa == gnmt_kernels::Isa::Avx2, "{isa:?}");
    }

    #[test]
    fn bf16_on_a_cpu_runs_where_it_is_fastest() {
        let cpu = Device::Cpu;
        let bf16 = Some(tch::Kind::BFloat16);
        assert_eq!(
            plan_with(Precision::Bf16, cpu, CpuBf16::Amx),
            (Kernels::Fused, bf16)
        );
        assert_eq!(
            plan_with(Precision::Bf16, cpu, CpuBf16::Avx512Bf16),
            (Kernels::Bf16, None)
        );
        assert_eq!(
            plan_with(Precision::Bf16, cpu, CpuBf16::Emulated),
            (Kernels::Fused, bf16)
        );
        let gpu = Device::Cuda(0);
        for b in [CpuBf16::Amx, CpuBf16::Avx512Bf16, CpuBf16::Emulated] {
            assert_eq!(plan_with(Precision::Bf16, gpu, b), (Kernels::Fused, bf16));
            assert_eq!(plan_with(Precision::Fp32, cpu, b), (Kernels::Fused, None));
        }
        // A faster path is offered only where bf16 has instructions of its own, running faster
        // than float32's (AMX, or AMD's AVX512-BF16).
        let offered = Precision::faster_paths(cpu).contains(&Precision::Bf16);
        assert_eq!(offered, gnmt_kernels::bf16_faster_than_float32());
        if offered {
            assert_ne!(CpuBf16::detected(), CpuBf16::Emulated);
        }
        assert_eq!(
            describe_plan(Precision::Bf16, cpu).contains("slower than float32"),
            !offered,
            "{}",
            describe_plan(Precision::Bf16, cpu)
        );
    }

    #[test]
    fn the_record_round_trips_and_a_damaged_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert!(PrecisionCheck::read(dir.path()).unwrap().is_none());
        let c = check(&[("fp32", 36.0), ("int8", 35.9)]);
        std::fs::write(
            dir.path().join(CHECK_FILE),
            serde_json::to_string(&c).unwrap(),
        )
        .unwrap();
        assert_eq!(PrecisionCheck::read(dir.path()).unwrap(), Some(c));
        std::fs::write(dir.path().join(CHECK_FILE), "{").unwrap();
        let e = PrecisionCheck::read(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains(CHECK_FILE) && e.contains("check-precision"),
            "{e}"
        );
    }
}
