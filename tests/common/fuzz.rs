//! Mutations of real `torch.save` files for the reader's fuzz test (tests/integration/hostile.rs) and its
//! longer run in a bench (benches/hostile.rs): bit flips, truncations and spliced opcodes, in
//! the pickle itself (a zip file's `data.pkl` is mutated and the archive written again) or in
//! the file's raw bytes.

use std::io::{Read, Write};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Opcode sequences spliced into a pickle: calls, stack and memo tricks, framing, junk.
const SPLICES: &[&[u8]] = &[
    b"0",
    b"1",
    b"2",
    b"(",
    b".",
    b"R",
    b"b",
    b"Q",
    b"cposix\nsystem\n",
    b"cposix\nsystem\nX\x04\x00\x00\x00true\x85R0",
    b"ctorch._utils\n_rebuild_tensor_v2\n",
    b"ccollections\nOrderedDict\n)R",
    b"h\x00",
    b"j\xff\xff\xff\x7f",
    b"q\x00",
    b"\x94",
    b"\x95\xff\xff\xff\xff\xff\xff\xff\x7f",
    b"X\xff\xff\xff\x7f",
    b"J\xff\xff\xff\xff",
    b"\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f",
    b"]",
    b"}",
    b"e",
    b"u",
    b"s",
    b"\x81",
    b"\x93",
];

/// One mutant of a file's `bytes`, chosen by `rng`: a zip file's `data.pkl` most often (the
/// archive written again), else the raw bytes.
pub fn mutate(bytes: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let zipped = bytes.starts_with(b"PK\x03\x04");
    if zipped && rng.random_bool(0.7) {
        if let Some(out) = mutate_zip_pickle(bytes, rng) {
            return out;
        }
    }
    mutate_bytes(bytes, rng)
}

/// Bit flips, a truncation or a splice anywhere in `bytes`.
pub fn mutate_bytes(bytes: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if out.is_empty() {
        return out;
    }
    match rng.random_range(0..3) {
        0 => {
            for _ in 0..rng.random_range(1..=4) {
                let i = rng.random_range(0..out.len());
                out[i] ^= 1 << rng.random_range(0..8);
            }
        }
        1 => out.truncate(rng.random_range(0..out.len())),
        _ => {
            let at = rng.random_range(0..=out.len());
            let s = SPLICES[rng.random_range(0..SPLICES.len())];
            out.splice(at..at, s.iter().copied());
        }
    }
    out
}

/// The zip archive `bytes` with its `data.pkl` mutated, every entry stored again.
fn mutate_zip_pickle(bytes: &[u8], rng: &mut ChaCha8Rng) -> Option<Vec<u8>> {
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).ok()?;
    let mut entries = Vec::new();
    for i in 0..zip.len() {
        let mut e = zip.by_index(i).ok()?;
        let mut data = Vec::new();
        e.read_to_end(&mut data).ok()?;
        entries.push((e.name().ok()?.to_string(), data));
    }
    let mut out = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        let data = match name.ends_with("data.pkl") {
            true => mutate_bytes(&data, rng),
            false => data,
        };
        out.start_file(name, options).ok()?;
        out.write_all(&data).ok()?;
    }
    Some(out.finish().ok()?.into_inner())
}

/// The generator of a run of mutants, from `seed`.
pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}
