//! Build script: gives the binary an rpath to libtorch, so it runs without LD_LIBRARY_PATH, and
//! compiles the small C++ shim that switches libtorch's CPU autocast (src/shim/autocast.cpp),
//! reports its version and build (src/shim/info.cpp) and reaches its distributed layer
//! (src/shim/dist.cpp: with c10d when gloo's headers are found in `GLOO_INCLUDE` or
//! `.deps/gloo/usr/include`, put there by scripts/deps.sh; without, a stub that says so; and
//! with NCCL too when the libtorch is a CUDA build and the CUDA runtime, crt, cccl and NCCL
//! headers are found: in `CUDA_INCLUDE` (folders separated by `:`), or where torch's wheel and
//! scripts/deps.sh put them, `.deps/py/nvidia/*/include` and `.deps/cuda/nvidia/*/include`).
//!
//! torch-sys (`links = "tch"`) exports the folder of the libtorch it linked as
//! `DEP_TCH_LIBTORCH_LIB`; tch itself sets no rpath.
//!
//! It also generates the ONNX protobuf types from `proto/onnx.proto` (protox + prost-build) and
//! records the git commit the binary is built from.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=src/shim/autocast.cpp");
    println!("cargo:rerun-if-changed=src/shim/info.cpp");
    println!("cargo:rerun-if-changed=src/shim/dist.cpp");
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE");
    println!("cargo:rerun-if-env-changed=CUDA_INCLUDE");
    git_commit();
    onnx_proto();
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
        let has_cuda = PathBuf::from(&lib).join("libtorch_cuda.so").exists();
        let nccl_pg = include.join("torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp");
        match cuda_includes() {
            Some(dirs) if has_cuda && nccl_pg.exists() => {
                for d in dirs {
                    build.include(d);
                }
                build
                    .define("INCEPTION_NCCL", None)
                    .define("USE_C10D_NCCL", None);
            }
            _ if has_cuda => println!(
                "cargo:warning=CUDA libtorch but no CUDA/NCCL headers (scripts/deps.sh puts \
                 them in .deps/cuda, or set CUDA_INCLUDE): multi-GPU training will use Gloo"
            ),
            _ => {}
        }
    } else {
        println!(
            "cargo:warning=no gloo headers at {} (scripts/deps.sh): building without \
             multi-process training",
            gloo.display()
        );
    }
    build.compile("inception_shim");
}

/// The folders holding the headers ProcessGroupNCCL.hpp needs (the CUDA runtime's, crt's,
/// cccl's `nv/target` and NCCL's), or `None` when one of them is missing.
fn cuda_includes() -> Option<Vec<PathBuf>> {
    let needed = ["cuda_runtime.h", "crt/host_config.h", "nv/target", "nccl.h"];
    let candidates: Vec<PathBuf> = match std::env::var("CUDA_INCLUDE") {
        Ok(dirs) => std::env::split_paths(&dirs).collect(),
        Err(_) => {
            let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
            let mut found = vec![];
            for base in [".deps/py/nvidia", ".deps/cuda/nvidia"] {
                let Ok(entries) = std::fs::read_dir(root.join(base)) else {
                    continue;
                };
                let mut dirs: Vec<PathBuf> = entries
                    .flatten()
                    .map(|e| e.path().join("include"))
                    .filter(|p| p.is_dir())
                    .collect();
                dirs.sort();
                found.extend(dirs);
            }
            found
        }
    };
    let mut dirs = vec![];
    for file in needed {
        let dir = candidates.iter().find(|d| d.join(file).exists())?;
        println!("cargo:rerun-if-changed={}", dir.join(file).display());
        if !dirs.contains(dir) {
            dirs.push(dir.clone());
        }
    }
    Some(dirs)
}

/// The commit the binary is built from, as `INCEPTION_GIT_COMMIT` (empty outside a git
/// checkout), for the run's record and the report; rebuilt when HEAD or a branch moves.
fn git_commit() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_default();
    println!("cargo:rustc-env=INCEPTION_GIT_COMMIT={commit}");
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        for f in ["HEAD", "refs/heads", "packed-refs"] {
            let p = PathBuf::from(&dir).join(f);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
}

/// The Rust types of the vendored `proto/onnx.proto` (prost), compiled by protox: no `protoc`.
fn onnx_proto() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = match protox::compile(["proto/onnx.proto"], ["proto"]) {
        Ok(fds) => fds,
        Err(e) => {
            eprintln!("compiling proto/onnx.proto: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = prost_build::Config::new().compile_fds(fds) {
        eprintln!("generating the ONNX types: {e}");
        std::process::exit(1);
    }
}
