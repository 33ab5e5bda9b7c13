//! `gnmt doctor`: what libtorch sees on this machine.

use std::process::ExitCode;

use tch::{Cuda, Device, Kind, Tensor};

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

pub fn run() -> anyhow::Result<ExitCode> {
    let (version, path) = loaded_libtorch().unwrap_or_else(|| ("unknown".into(), "unknown".into()));
    println!("gnmt {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch version: {version}");
    println!("libtorch library: {path}");
    let cuda = Cuda::is_available();
    println!("cuda available: {}", if cuda { "yes" } else { "no" });
    let count = Cuda::device_count();
    println!("cuda devices: {count}");
    for i in 0..count {
        println!("  cuda:{i}: {}", cuda_device_name(i));
    }
    let cudnn = Cuda::cudnn_is_available();
    if cudnn {
        println!("cudnn: yes (version {})", tch::utils::version_cudnn());
    } else {
        println!("cudnn: no");
    }
    println!("cpu threads: {}", tch::get_num_threads());
    println!(
        "omp wait policy: {}",
        std::env::var("OMP_WAIT_POLICY").unwrap_or_else(|_| "default".into())
    );
    let best = Device::cuda_if_available();
    let name = if best.is_cuda() { "cuda:0" } else { "cpu" };
    println!(
        "bf16 on {name}: {}",
        if bf16_works(best) { "yes" } else { "no" }
    );
    Ok(ExitCode::SUCCESS)
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
