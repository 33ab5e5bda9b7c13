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
    cc::Build::new()
        .cpp(true)
        .file("cpp/shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .compile("gnmt_dist_shim");
    // libtorch::main() above already added the library directory to the search path.
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
