//! Build script: gives the binary an rpath to libtorch, so it runs without LD_LIBRARY_PATH, and
//! compiles the small C++ shim that switches libtorch's CPU autocast (src/shim/autocast.cpp) and
//! reports its version and build (src/shim/info.cpp).
//!
//! torch-sys (`links = "tch"`) exports the folder of the libtorch it linked as
//! `DEP_TCH_LIBTORCH_LIB`; tch itself sets no rpath.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=src/shim/autocast.cpp");
    println!("cargo:rerun-if-changed=src/shim/info.cpp");
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
    cc::Build::new()
        .cpp(true)
        .file("src/shim/autocast.cpp")
        .file("src/shim/info.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .warnings(false)
        .compile("inception_shim");
}
