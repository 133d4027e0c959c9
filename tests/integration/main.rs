//! The integration tests, one module per area, in one binary: libtorch is linked once, and a
//! fixture built once (a trained cv, the parity files) serves every module that needs it.
//! What only the binary shows (exit codes, messages, files) runs `inception` as a user would;
//! the rest calls the library. `tests/memory.rs` and `tests/runtime.rs` run apart, without the
//! harness, since they measure the process itself.

#[path = "../common/mod.rs"]
mod common;

mod benches;
mod checkpoint;
mod cli;
mod cuda;
mod cv;
mod data;
mod dist;
mod docs;
mod explain;
mod export;
mod hostile;
mod metrics;
mod model;
mod onnx;
mod precision;
mod probe;
mod report;
mod serve;
mod train;
mod trust;
mod weights;
