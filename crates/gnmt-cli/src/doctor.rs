//! `gnmt doctor`: what libtorch sees on this machine, and with `--smoke` a numerical check that
//! a device computes what the CPU computes (matmul, LSTM forward and backward, a GNMT training
//! step), which is what a GPU machine's first minute should establish.

/// `println!` that ends the command quietly when stdout's reader has gone (`gnmt doctor | head`)
/// instead of panicking: the doctor has nothing half-done to clean up.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            stdout_failed(e)
        }
    }};
}

use std::process::ExitCode;

use clap::Args;
use gnmt_model::{ModelConfig, Seq2Seq};
use tch::nn::{self, RNN};
use tch::{Cuda, Device, Kind, Tensor};

/// Ends the process after a failed write to stdout: quietly with [`crate::common::CLOSED_PIPE`]
/// where its reader has gone, else with the error.
fn stdout_failed(err: std::io::Error) -> ! {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(i32::from(crate::common::CLOSED_PIPE));
    }
    eprintln!("error: writing to stdout: {err}");
    std::process::exit(1)
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Also run the smoke test: the device's results against the CPU's.
    #[arg(long)]
    smoke: bool,
    /// Device for --smoke (default: cuda when available, else cpu).
    #[arg(long)]
    device: Option<gnmt_model::DeviceSpec>,
    /// Model preset for the training step of --smoke.
    #[arg(long, default_value = "small", value_parser = clap::builder::PossibleValuesParser::new(gnmt_model::PRESETS))]
    preset: String,
}

/// The libtorch that is actually loaded (which may differ from the one we built against when
/// LD_LIBRARY_PATH points elsewhere), found through the process's memory map.
fn loaded_libtorch() -> Option<(String, String)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let path = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))?
        .to_string();
    let torch_dir = std::path::Path::new(&path).parent()?.parent()?;
    let version = std::fs::read_to_string(torch_dir.join("version.py"))
        .ok()
        .and_then(|v| {
            v.lines().find_map(|l| {
                l.strip_prefix("__version__ = ")
                    .map(|s| s.trim_matches(['\'', '"']).to_string())
            })
        })
        .or_else(|| {
            std::fs::read_to_string(torch_dir.join("build-version"))
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    Some((version, path))
}

fn bf16_works(device: Device) -> bool {
    std::panic::catch_unwind(|| {
        let a = Tensor::ones([8, 8], (Kind::BFloat16, device));
        let b = a
            .matmul(&a)
            .to_kind(Kind::Float)
            .sum(Kind::Float)
            .double_value(&[]);
        (b - 512.0).abs() < 1e-3
    })
    .unwrap_or(false)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_device(Device::Cpu).to_kind(Kind::Double)
        - b.to_device(Device::Cpu).to_kind(Kind::Double))
    .abs()
    .max()
    .double_value(&[])
}

fn check(name: &str, diff: f64, tol: f64, failures: &mut usize) {
    let ok = diff.is_finite() && diff <= tol;
    say!(
        "smoke: {name}: max |device - cpu| = {diff:.3e} (tolerance {tol:.0e}) {}",
        if ok { "ok" } else { "FAILED" }
    );
    if !ok {
        *failures += 1;
    }
}

/// Runs the same computations on `device` and on the CPU and compares them.
fn smoke(device: Device, preset: &str) -> anyhow::Result<usize> {
    let mut failures = 0;
    smoke_matmul(device, &mut failures);
    smoke_lstm(device, &mut failures)?;
    smoke_training_step(device, preset, &mut failures)?;
    if device.is_cuda() {
        let ok = bf16_works(device);
        say!(
            "smoke: bf16 matmul on {device:?}: {}",
            if ok { "ok" } else { "FAILED" }
        );
        failures += usize::from(!ok);
    }
    Ok(failures)
}

/// A 512 x 512 product.
fn smoke_matmul(device: Device, failures: &mut usize) {
    tch::manual_seed(7);
    let a = Tensor::randn([512, 512], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([512, 512], (Kind::Float, Device::Cpu));
    // TF32 matmuls on Ampere and later round inputs to 10 bits of mantissa.
    check(
        "matmul 512x512",
        max_diff(
            &a.to_device(device).matmul(&b.to_device(device)),
            &a.matmul(&b),
        ) / 22.6,
        5e-3,
        failures,
    );
}

/// An LSTM's forward and backward, the same weights on both devices.
fn smoke_lstm(device: Device, failures: &mut usize) -> anyhow::Result<()> {
    let run = |dev: Device| -> anyhow::Result<(Tensor, Vec<Tensor>)> {
        tch::manual_seed(11);
        let init = nn::VarStore::new(Device::Cpu);
        let _ = nn::lstm(init.root(), 32, 64, Default::default());
        let x = Tensor::randn([4, 9, 32], (Kind::Float, Device::Cpu));
        // Built on `dev` itself, then given the CPU's weights: on a GPU tch packs a new
        // LSTM's weights into cuDNN's one buffer, and copying into them keeps that (a VarStore
        // moved after it was built leaves them apart, and cuDNN repacks and warns per call).
        let mut vs = nn::VarStore::new(dev);
        let l = nn::lstm(vs.root(), 32, 64, Default::default());
        vs.copy(&init)?;
        let x = x.to_device(dev);
        let (y, _) = l.seq_init(&x, &gnmt_model::zero_state(&l, &x));
        y.square().sum(Kind::Float).backward();
        let mut names: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        names.sort_by(|p, q| p.0.cmp(&q.0));
        Ok((
            y.to_device(Device::Cpu),
            names
                .into_iter()
                .map(|(_, t)| t.grad().to_device(Device::Cpu))
                .collect(),
        ))
    };
    let (yd, gd) = run(device)?;
    let (yc, gc) = run(Device::Cpu)?;
    // cuDNN may use TF32 for RNNs: loose tolerances, this catches gross failures.
    check("lstm forward", max_diff(&yd, &yc), 5e-3, failures);
    let g = gd
        .iter()
        .zip(&gc)
        .map(|(p, q)| max_diff(p, q) / (q.abs().max().double_value(&[]) + 1e-6))
        .fold(0.0, f64::max);
    check("lstm backward (relative)", g, 1e-2, failures);
    Ok(())
}

/// One GNMT training step of `preset`: its loss and gradient norm.
fn smoke_training_step(device: Device, preset: &str, failures: &mut usize) -> anyhow::Result<()> {
    let run = |dev: Device| -> anyhow::Result<(f64, f64)> {
        tch::manual_seed(13);
        let cfg = ModelConfig::preset(preset, 1000)
            .ok_or_else(|| anyhow::anyhow!("--preset {preset}: unknown"))?;
        let mut vs = nn::VarStore::new(Device::Cpu);
        let m = Seq2Seq::new(&vs.root(), &cfg)?;
        vs.set_device(dev);
        m.pack_for_cudnn()?;
        let src = Tensor::randint_low(4, 1000, [8, 12], (Kind::Int64, Device::Cpu));
        let tgt = Tensor::randint_low(4, 1000, [8, 11], (Kind::Int64, Device::Cpu));
        let lens = Tensor::from_slice(&[12i64, 12, 11, 10, 9, 8, 7, 6]);
        let src = src.masked_fill(
            &Tensor::arange(12, (Kind::Int64, Device::Cpu))
                .unsqueeze(0)
                .ge_tensor(&lens.unsqueeze(1)),
            0,
        );
        let logits = m.forward(&src.to_device(dev), &lens, &tgt.to_device(dev), false);
        let (loss, _) = gnmt_train::trainer::smoothed_loss(&logits, &tgt.to_device(dev), 0.1);
        loss.backward();
        let norm: f64 = vs
            .trainable_variables()
            .iter()
            .map(|v| v.grad().square().sum(Kind::Double).double_value(&[]))
            .sum::<f64>()
            .sqrt();
        Ok((loss.double_value(&[]), norm))
    };
    let (ld, nd) = run(device)?;
    let (lc, nc) = run(Device::Cpu)?;
    check(&format!("{preset} loss"), (ld - lc).abs(), 1e-2, failures);
    check(
        &format!("{preset} gradient norm (relative)"),
        (nd - nc).abs() / nc.max(1e-9),
        1e-2,
        failures,
    );
    Ok(())
}

/// The CPU's model name with its family and model numbers (Linux: /proc/cpuinfo). The name
/// alone does not tell hosts apart that run the kernels at different speeds: a VM's "AMD EPYC"
/// may be family 25 (Zen 4: 512-bit operations in two halves) or 26 (Zen 5: full width).
pub fn cpu_model() -> Option<String> {
    cpu_model_of(&std::fs::read_to_string("/proc/cpuinfo").ok()?)
}

/// [`cpu_model`] from the text of /proc/cpuinfo (its first processor).
fn cpu_model_of(info: &str) -> Option<String> {
    let field = |key: &str| {
        info.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_string())
    };
    let name = field("model name")?;
    Some(match (field("cpu family"), field("model")) {
        (Some(family), Some(model)) => format!("{name} (family {family}, model {model})"),
        _ => name,
    })
}

/// The vector and matrix extensions the kernels and libtorch can use, as the CPU reports them.
fn cpu_features() -> Vec<&'static str> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! have {
            ($($f:tt)*) => {
                $(if std::is_x86_feature_detected!($f) {
                    out.push($f);
                })*
            };
        }
        have!("avx2" "fma" "avx512f" "avx512bw" "avx512vl" "avx512vnni" "avx512bf16" "avxvnni");
        // AMX is not in std's detection yet: the kernel's flags say whether it is usable.
        let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        for (flag, name) in [("amx_bf16", "amx-bf16"), ("amx_int8", "amx-int8")] {
            if flags.split_whitespace().any(|f| f == flag) {
                out.push(name);
            }
        }
    }
    if out.is_empty() {
        out.push("none of the vector extensions gnmt uses");
    }
    out
}

pub fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let (version, path) = loaded_libtorch().unwrap_or_else(|| ("unknown".into(), "unknown".into()));
    say!("gnmt {}", env!("CARGO_PKG_VERSION"));
    say!("libtorch version: {version}");
    say!("libtorch library: {path}");
    let cuda = Cuda::is_available();
    say!("cuda available: {}", if cuda { "yes" } else { "no" });
    let count = Cuda::device_count();
    say!("cuda devices: {count}");
    for i in 0..count {
        say!("  cuda:{i}: {}", cuda_device_name(i));
    }
    let cudnn = Cuda::cudnn_is_available();
    if cudnn {
        say!("cudnn: yes (version {})", tch::utils::version_cudnn());
    } else {
        say!("cudnn: no");
    }
    say!("cpu: {}", cpu_model().unwrap_or_else(|| "unknown".into()));
    let features = cpu_features();
    say!("cpu features: {}", features.join(" "));
    // Without these instructions libtorch emulates bf16, slower than float32.
    let bf16 = features
        .iter()
        .any(|f| matches!(*f, "avx512bf16" | "amx-bf16"));
    say!("cpu bf16 instructions: {}", if bf16 { "yes" } else { "no" });
    // What the training scripts ask before choosing bf16 mixed precision on a CPU: with the
    // instructions, bf16 still runs slower than float32 on Intel without AMX.
    let faster = match (
        gnmt_model::bf16_faster_than_float32(),
        bf16,
        gnmt_model::bf16_dot_supported(),
    ) {
        (true, ..) => "yes",
        (false, true, true) => "no (no AMX, and bf16 dot products at half the float32 FMA's rate)",
        (false, true, false) => "no (the kernels are capped below AVX-512)",
        (false, false, _) => "no",
    };
    say!("cpu bf16 faster than fp32: {faster}");
    let isa = gnmt_model::Isa::detected();
    say!(
        "cpu kernels: {isa}{}{}",
        match (
            gnmt_model::amx_int8_chosen(),
            gnmt_model::amx_int8_supported()
        ) {
            (true, _) => " + amx-int8 tiles",
            (false, true) => " (amx-int8 tiles off: capped)",
            _ => "",
        },
        match std::env::var(gnmt_model::MAX_ISA_VARIABLE) {
            Ok(v) => format!(
                " ({}={v}; the CPU has {})",
                gnmt_model::MAX_ISA_VARIABLE,
                gnmt_model::Isa::supported()
            ),
            Err(_) => String::new(),
        }
    );
    print_cpu_paths();
    say!("cpu threads: {}", tch::get_num_threads());
    // What `gnmt train` and `gnmt translate` use when torchrun launches them.
    let nccl = if gnmt_dist::nccl_built() {
        "NCCL process group (CUDA tensors, cuda:LOCAL_RANK)"
    } else {
        "NCCL not in this build (CUDA tensors staged through the CPU)"
    };
    say!("distributed: c10d TCPStore rendezvous, Gloo process group (CPU), {nccl}");
    say!(
        "omp wait policy: {}",
        std::env::var("OMP_WAIT_POLICY").unwrap_or_else(|_| "default".into())
    );
    let best = Device::cuda_if_available();
    let name = if best.is_cuda() { "cuda:0" } else { "cpu" };
    say!(
        "bf16 on {name}: {}",
        if bf16_works(best) { "yes" } else { "no" }
    );
    if args.smoke {
        let device = args.device.map_or(best, |d| d.0);
        let failures = smoke(device, &args.preset)?;
        if failures > 0 {
            say!("smoke: {failures} check(s) FAILED on {device:?}");
            return Ok(ExitCode::FAILURE);
        }
        say!("smoke: all checks passed on {device:?}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The translation paths on this CPU: float32's, and the faster ones `gnmt translate` takes by
/// default once `gnmt check-precision` has found them within 0.2 BLEU of float32's on a model.
fn print_cpu_paths() {
    use gnmt_translate::{describe_plan, Precision, MAX_BLEU_LOSS};
    let cpu = Device::Cpu;
    say!(
        "cpu translation, fp32: {}",
        describe_plan(Precision::Fp32, cpu)
    );
    let faster = Precision::faster_paths(cpu);
    let list: Vec<String> = faster
        .iter()
        .map(|&p| format!("{}: {}", p.name(), describe_plan(p, cpu)))
        .collect();
    say!(
        "cpu translation, faster (the default where `gnmt check-precision` finds one within {MAX_BLEU_LOSS} BLEU of fp32): {}",
        if list.is_empty() { "none".to_string() } else { list.join("; ") }
    );
}

/// tch exposes no device-name call; nvidia-smi is on every machine with the driver.
fn cuda_device_name(i: i64) -> String {
    std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total",
            "--format=csv,noheader",
            &format!("--id={i}"),
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown (nvidia-smi not found)".into())
}

#[cfg(test)]
mod tests {
    use super::cpu_model_of;

    #[test]
    fn the_cpu_is_named_with_its_family_and_model() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n\
                    model name\t: AMD EPYC\n\nprocessor\t: 1\ncpu family\t: 26\n";
        assert_eq!(
            cpu_model_of(info).as_deref(),
            Some("AMD EPYC (family 25, model 17)")
        );
        assert_eq!(
            cpu_model_of("model name : Some CPU\n").as_deref(),
            Some("Some CPU")
        );
        assert_eq!(cpu_model_of("flags : avx2\n"), None);
    }
}
