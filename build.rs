//! Build script: gives the binary an rpath to libtorch, so it runs without LD_LIBRARY_PATH.
//!
//! torch-sys (`links = "tch"`) exports the folder of the libtorch it linked as
//! `DEP_TCH_LIBTORCH_LIB`; tch itself sets no rpath.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
