//! Decoding in parallel stays within the process-wide decode budget (src/data/image.rs): six
//! 7000×7000 16-bit PNGs, each needing 441 MB to decode (pixels and their RGB copy), decoded by
//! six threads at once, raise the process's peak resident memory by less than the 1 GiB budget;
//! without it they would take 2.6 GB together.
//!
//! Runs without the test harness (Cargo.toml: `harness = false`): the peak (`ru_maxrss`) is the
//! whole process's, so no other test may share it.

use std::fs;
use std::io::Write;

use inception::data::image::{load_rgb, Budget, MAX_ALLOC};
use inception::data::loader::parallel_map;

const SIDE: u32 = 7000;

fn peak_rss_bytes() -> u64 {
    // SAFETY: getrusage writes into the zeroed struct it is given.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage.ru_maxrss as u64 * 1024
    }
}

/// A SIDE×SIDE 16-bit RGB PNG of a gradient, written row by row (never whole in memory).
fn write_png(path: &std::path::Path) {
    let file = fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), SIDE, SIDE);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Sixteen);
    enc.set_compression(png::Compression::Fast);
    let mut writer = enc.write_header().unwrap();
    let mut stream = writer.stream_writer().unwrap();
    let mut row = vec![0u8; SIDE as usize * 6];
    for y in 0..SIDE {
        for (x, px) in row.chunks_exact_mut(6).enumerate() {
            let v = ((x as u32 + y) % 65536) as u16;
            px[..2].copy_from_slice(&v.to_be_bytes());
        }
        stream.write_all(&row).unwrap();
    }
    stream.finish().unwrap();
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("0.png");
    write_png(&first);
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
    let before = peak_rss_bytes();
    let results = parallel_map(&paths, paths.len(), |p| {
        load_rgb(p)
            .map(|img| img.dimensions())
            .map_err(|e| format!("{e:#}"))
    });
    let grown = peak_rss_bytes().saturating_sub(before);
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
