//! Shared build script of every crate that links libtorch (set as `build = "../../build/libtorch.rs"`).
//!
//! Two things the `torch-sys` build does not do for us:
//! - it links `libtorch_cuda.so` under `--as-needed`, and since no symbol of it is referenced directly
//!   the linker drops it: CUDA then reports "unavailable" on a GPU machine. Force it with `--no-as-needed`.
//! - it sets no RUNPATH, so binaries and test executables would need LD_LIBRARY_PATH. Add one pointing at
//!   the libtorch we built against; LD_LIBRARY_PATH still overrides it (that is how the binary runs
//!   against the GPU machine's own copy of libtorch 2.11).
use std::path::PathBuf;

pub fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=../../build/libtorch.rs");
    let Ok(libtorch) = std::env::var("LIBTORCH") else {
        println!("cargo:warning=LIBTORCH is not set: run scripts/setup.sh first");
        return;
    };
    let lib = PathBuf::from(libtorch).join("lib");
    // Resolve the `.libtorch` link so the RUNPATH names the real directory.
    let lib = std::fs::canonicalize(&lib).unwrap_or(lib);
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        for arg in ["-Wl,--no-as-needed", "-ltorch_cuda", "-Wl,--as-needed"] {
            link_arg(arg);
        }
    }
}

/// A linker argument for every target that links libtorch. In gnmt-cli that is not all of them:
/// its `gnmt` launcher must stay free of libtorch (forcing `libtorch_cuda` into it would load all
/// of libtorch at its start), so there the argument goes to `gnmt-torch` and the tests only.
fn link_arg(arg: &str) {
    if std::env::var("CARGO_PKG_NAME").as_deref() == Ok("gnmt-cli") {
        println!("cargo:rustc-link-arg-bin=gnmt-torch={arg}");
        println!("cargo:rustc-link-arg-tests={arg}");
    } else {
        println!("cargo:rustc-link-arg={arg}");
    }
}
