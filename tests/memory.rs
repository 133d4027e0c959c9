//! Decoding in parallel stays within the process-wide decode budget (src/data/image.rs): six
//! 7000×7000 16-bit PNGs, each needing 441 MB to decode (pixels and their RGB copy), decoded by
//! six threads at once, raise the process's peak resident memory by less than the 1 GiB budget;
//! without it they would take 2.6 GB together.
//!
//! Then the same through the tool with a network: `inception predict` on two 9000×9000 16-bit
//! PNGs (729 MB each to decode, read by two threads at once) peaks less than the budget above
//! the same command on one small photo (the network, libtorch and the batch), where without
//! the budget it would be 1.46 GB above.
//!
//! Runs without the test harness (Cargo.toml: `harness = false`): the peak (`ru_maxrss`) is the
//! whole process's, so no other test may share it.

mod common;

use std::fs;
use std::io::Write;

use inception::data::image::{load_rgb, Budget, MAX_ALLOC};
use inception::data::loader::parallel_map;

const SIDE: u32 = 7000;

/// The peak resident memory of this process, or of the largest child waited for so far.
fn peak_rss_bytes(who: libc::c_int) -> u64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(who, &mut usage), 0);
        usage.ru_maxrss as u64 * 1024
    }
}

/// A side×side 16-bit RGB PNG of a gradient, written row by row (never whole in memory).
fn write_png(path: &std::path::Path, side: u32) {
    let file = fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), side, side);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Sixteen);
    enc.set_compression(png::Compression::Fast);
    let mut writer = enc.write_header().unwrap();
    let mut stream = writer.stream_writer().unwrap();
    let mut row = vec![0u8; side as usize * 6];
    for y in 0..side {
        for (x, px) in row.chunks_exact_mut(6).enumerate() {
            let v = ((x as u32 + y) % 65536) as u16;
            px[..2].copy_from_slice(&v.to_be_bytes());
        }
        stream.write_all(&row).unwrap();
    }
    stream.finish().unwrap();
}

fn main() {
    // First, while this process is small: a child's peak includes its parent's at the fork.
    predict_stays_within_the_budget_plus_the_network();
    decoding_in_parallel_stays_within_the_budget();
}

fn decoding_in_parallel_stays_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("0.png");
    write_png(&first, SIDE);
    let paths: Vec<_> = (0..6)
        .map(|i| {
            let p = dir.path().join(format!("{i}.png"));
            if i > 0 {
                fs::copy(&first, &p).unwrap();
            }
            p
        })
        .collect();
    println!("file {} MB", fs::metadata(&first).unwrap().len() >> 20);
    let need = SIDE as u64 * SIDE as u64 * (6 + 3);
    let before = peak_rss_bytes(libc::RUSAGE_SELF);
    let results = parallel_map(&paths, paths.len(), |p| {
        load_rgb(p)
            .map(|img| img.dimensions())
            .map_err(|e| format!("{e:#}"))
    });
    let grown = peak_rss_bytes(libc::RUSAGE_SELF).saturating_sub(before);
    for r in &results {
        assert_eq!(r.as_ref().unwrap().as_ref().unwrap(), &(SIDE, SIDE));
    }
    assert_eq!(Budget::global().used(), 0, "permits were not given back");
    let slack = 128 << 20;
    println!(
        "memory: 6 decodes of {} MB each in parallel raised the peak by {} MB (budget {} MB)",
        need >> 20,
        grown >> 20,
        MAX_ALLOC >> 20
    );
    assert!(
        grown < MAX_ALLOC + slack,
        "peak grew by {} MB, over the {} MB budget (6 × {} MB without it)",
        grown >> 20,
        MAX_ALLOC >> 20,
        need >> 20
    );
}

/// Runs `cmd` (stderr inherited) and returns whether it succeeded, its own peak resident
/// memory (wait4's rusage of that child alone) and its stdout.
fn run_measured(mut cmd: std::process::Command) -> (bool, u64, Vec<u8>) {
    use std::io::Read;
    // Waited for with wait4 below, not `Child::wait`, for its own rusage.
    #[allow(clippy::zombie_processes)]
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut stdout = vec![];
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    // SAFETY: wait4 on our own child's pid, writing into the zeroed structs it is given; the
    // `Child` is not waited on again.
    let (status, usage) = unsafe {
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        let pid = libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage);
        assert_eq!(pid, child.id() as libc::pid_t);
        (status, usage)
    };
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (ok, usage.ru_maxrss as u64 * 1024, stdout)
}

/// `inception predict` (GoogLeNet, fp32 on the CPU) on two large PNGs against one photo.
fn predict_stays_within_the_budget_plus_the_network() {
    const BIG: u32 = 9000;
    let dir = tempfile::tempdir().unwrap();
    let ckpt = common::import_case(dir.path(), "googlenet_2", "a,b", &[]);
    let big: Vec<_> = (0..2)
        .map(|i| dir.path().join(format!("big{i}.png")))
        .collect();
    write_png(&big[0], BIG);
    fs::copy(&big[0], &big[1]).unwrap();
    let predict = |images: &[&std::path::Path]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_inception"));
        cmd.current_dir(dir.path()).args([
            "predict",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--json",
        ]);
        cmd.args(images);
        let (status, peak, stdout) = run_measured(cmd);
        assert!(status, "predict failed on {images:?}");
        let out: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
        assert_eq!(out.as_array().unwrap().len(), images.len());
        peak
    };
    let photo = common::repo().join("data/monkeypox/Others/23_1.jpg");
    let small = predict(&[&photo]);
    // The fork copies this process's resident size into the child's count; the test only
    // measures the child while that is below the child's own peak.
    let parent = peak_rss_bytes(libc::RUSAGE_SELF);
    assert!(
        parent < small,
        "this process peaked at {} MB, above predict's {} MB",
        parent >> 20,
        small >> 20
    );
    let large = predict(&[&big[0], &big[1]]);
    let need = BIG as u64 * BIG as u64 * (6 + 3);
    println!(
        "memory: predict on one photo peaks at {} MB; on two {BIG}² 16-bit PNGs ({} MB each to \
         decode) at {} MB (budget {} MB)",
        small >> 20,
        need >> 20,
        large >> 20,
        MAX_ALLOC >> 20
    );
    let slack = 128 << 20;
    assert!(
        large < small + MAX_ALLOC + slack,
        "predict peaked {} MB above its peak on one photo, over the {} MB budget",
        (large - small) >> 20,
        MAX_ALLOC >> 20
    );
}
