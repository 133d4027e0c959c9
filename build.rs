//! Build script: gives the binary an rpath to libtorch, so it runs without LD_LIBRARY_PATH, and
//! compiles the small C++ shim that switches libtorch's CPU autocast (src/shim/autocast.cpp).
//!
//! torch-sys (`links = "tch"`) exports the folder of the libtorch it linked as
//! `DEP_TCH_LIBTORCH_LIB`; tch itself sets no rpath.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=src/shim/autocast.cpp");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let include = PathBuf::from(&lib).join("..").join("include");
    cc::Build::new()
        .cpp(true)
        .file("src/shim/autocast.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .warnings(false)
        .compile("inception_shim");
}
