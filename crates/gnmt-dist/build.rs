//! Compiles the C++ shim over c10d (`cpp/shim.cpp`) against the libtorch that `torch-sys` links,
//! then sets the same link flags as every other libtorch crate (`build/libtorch.rs`).
//!
//! Gloo's headers are not in the torch wheel; Debian's `libgloo-dev` provides them (see
//! `scripts/setup.sh`). Nothing links libgloo itself: `libtorch_cpu.so` carries Gloo.
use std::path::PathBuf;

#[path = "../../build/libtorch.rs"]
mod libtorch;

fn main() {
    libtorch::main();
    println!("cargo:rerun-if-changed=cpp/shim.cpp");
    let Ok(root) = std::env::var("LIBTORCH") else {
        return;
    };
    let root = PathBuf::from(root);
    let root = std::fs::canonicalize(&root).unwrap_or(root);
    let include = root.join("include");
    if !std::path::Path::new("/usr/include/gloo/config.h").exists() {
        println!(
            "cargo:warning=Gloo's headers (/usr/include/gloo) are missing: install Debian's \
             libgloo-dev (scripts/setup.sh does, as root)"
        );
    }
    let mut build = cc::Build::new();
    let nccl = nccl_includes(&root);
    if let Some(dirs) = &nccl {
        build
            .includes(dirs)
            .define("GNMT_NCCL", None)
            .define("USE_C10D_NCCL", None);
        build.define("USE_CUDA", None);
    } else {
        println!(
            "cargo:warning=building gnmt-dist without NCCL: the CUDA headers (nvidia-cuda-crt, \
             nvidia-cuda-cccl, nvidia/nccl in the torch venv) were not found; Gloo only"
        );
    }
    build
        .cpp(true)
        .file("cpp/shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .flag_if_supported("-Wno-interference-size")
        .compile("gnmt_dist_shim");
    // libtorch::main() above already added the library directory to the search path.
    if nccl.is_some() {
        // The NCCL group lives in libtorch_cuda; link it even though only the shim refers to it.
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-lc10_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}

/// The include directories ProcessGroupNCCL.hpp needs, when all are there: the wheel's CUDA
/// headers (`nvidia/cu13/include`, which the header-only wheels nvidia-cuda-crt and
/// nvidia-cuda-cccl complete) and NCCL's (`nvidia/nccl/include`), beside libtorch in the venv's
/// site-packages. `GNMT_NO_NCCL=1` skips it.
fn nccl_includes(libtorch: &std::path::Path) -> Option<Vec<PathBuf>> {
    println!("cargo:rerun-if-env-changed=GNMT_NO_NCCL");
    if std::env::var_os("GNMT_NO_NCCL").is_some_and(|v| v != "0") {
        return None;
    }
    let site = libtorch.parent()?;
    let cuda = site.join("nvidia/cu13/include");
    let nccl = site.join("nvidia/nccl/include");
    let needed = [
        cuda.join("cuda_runtime_api.h"),
        cuda.join("crt/host_config.h"),
        cuda.join("nv/target"),
        nccl.join("nccl.h"),
        libtorch.join("lib/libtorch_cuda.so"),
    ];
    for f in &needed {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    needed.iter().all(|f| f.exists()).then(|| vec![cuda, nccl])
}
