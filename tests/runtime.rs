//! Process-wide allocator settings (src/runtime.rs): once `retain_freed_memory` has run, a large
//! tensor allocated again after being freed reuses memory instead of faulting in fresh pages.
//!
//! Runs without the test harness (Cargo.toml: `harness = false`) so that it allocates on the
//! main thread, as the `inception` binary does, and so that no other test shares the process.

use inception::runtime::{page_faults, retain_freed_memory};
use tch::{Device, Kind, Tensor};

/// Page faults taken while a 64 MiB tensor (above glibc's largest mmap threshold) is allocated
/// and filled; the tensor is freed before returning.
fn faults_for_64_mib() -> i64 {
    let before = page_faults();
    let t = Tensor::ones([16 << 20], (Kind::Float, Device::Cpu));
    let faults = page_faults() - before;
    assert_eq!(t.sum(Kind::Double).double_value(&[]), (16 << 20) as f64);
    faults
}

fn main() {
    faults_for_64_mib();
    let default = faults_for_64_mib();
    assert!(
        default >= 16,
        "premise: by default a freed 64 MiB block is unmapped, so filling it again faults \
         (got {default} faults)"
    );
    assert!(retain_freed_memory(), "mallopt refused the settings");
    faults_for_64_mib();
    let retained = faults_for_64_mib();
    assert!(
        retained * 10 <= default,
        "with freed memory retained, a second 64 MiB tensor should reuse it: {retained} page \
         faults, against {default} by default"
    );
    println!("runtime: retain_freed_memory: {default} page faults by default, {retained} after");
}
