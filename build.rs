//! Build script: gives the binary an rpath to libtorch, so it runs without LD_LIBRARY_PATH, and
//! compiles the small C++ shim that switches libtorch's CPU autocast (src/shim/autocast.cpp),
//! reports its version and build (src/shim/info.cpp) and reaches its distributed layer
//! (src/shim/dist.cpp: with c10d when gloo's headers are found in `GLOO_INCLUDE` or
//! `.deps/gloo/usr/include`, put there by scripts/deps.sh; without, a stub that says so).
//!
//! torch-sys (`links = "tch"`) exports the folder of the libtorch it linked as
//! `DEP_TCH_LIBTORCH_LIB`; tch itself sets no rpath.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=src/shim/autocast.cpp");
    println!("cargo:rerun-if-changed=src/shim/info.cpp");
    println!("cargo:rerun-if-changed=src/shim/dist.cpp");
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    // Nothing in the binary calls into libtorch's CUDA library directly: it registers its CUDA
    // kernels and hooks when loaded. With the linker's default --as-needed it would be dropped
    // and libtorch would see no GPU on any machine, so it is linked as needed regardless.
    for cuda in ["torch_cuda", "c10_cuda"] {
        if PathBuf::from(&lib).join(format!("lib{cuda}.so")).exists() {
            println!("cargo:rustc-link-arg=-Wl,-L{lib},--no-as-needed,-l{cuda},--as-needed");
        }
    }
    let include = PathBuf::from(&lib).join("..").join("include");
    let gloo = std::env::var("GLOO_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
                .join(".deps/gloo/usr/include")
        });
    println!(
        "cargo:rerun-if-changed={}",
        gloo.join("gloo/context.h").display()
    );
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("src/shim/autocast.cpp")
        .file("src/shim/info.cpp")
        .file("src/shim/dist.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .warnings(false);
    if gloo.join("gloo/context.h").exists() {
        build
            .include(&gloo)
            .define("INCEPTION_C10D", None)
            .define("USE_C10D_GLOO", None);
    } else {
        println!(
            "cargo:warning=no gloo headers at {} (scripts/deps.sh): building without \
             multi-process training",
            gloo.display()
        );
    }
    build.compile("inception_shim");
}
