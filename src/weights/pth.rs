//! PyTorch's own weight files (`torch.save`: `.pth`, `.pt`, `.bin`), read without Python and
//! without executing anything: the zip archive of PyTorch ≥ 1.6 and the legacy stream before
//! it (magic number, protocol, sys-info, the object, storage keys, raw storages).
//!
//! Two steps. First the file's containers are checked and every pickle in it is scanned
//! opcode by opcode ([`super::pickle`]): only what `torch.load(weights_only=True)` accepts for
//! a state_dict passes, and the work any file can cause is bounded — the zip archive laid out
//! as torch.save writes it (one folder, no name twice, storages stored as they are, a deflated
//! `data.pkl` not inflating far past its size), the storage bytes the tensors' views reach
//! (each memo copy again) within the file's size and a bound. Then the `pytorch-reader` crate
//! evaluates what passed (the file checked unchanged after),
//! and this module takes what it hands back only as weights: a dict of tensors, at the root or
//! under a `state_dict` or `model` key (the rest may hold plain values: numbers, strings,
//! lists, dicts). A TorchScript archive, the tar format of PyTorch before 0.1.10, a bare
//! pickle, a storage whose declared size does not match its bytes, a view past its storage,
//! tensors that would take far more bytes than the file has, absurd nesting: each is refused
//! with the reason.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use pytorch_reader::{DType, PickleValue, PytorchReader};
use tch::{Kind, Tensor};

use super::pickle::{self, Ids};
use crate::text::{escape, quote};

/// The keys under which training scripts commonly nest a state_dict.
const NESTED_KEYS: [&str; 2] = ["state_dict", "model"];

/// The Python type the reader names for a tensor.
const TENSOR: &str = "torch.Tensor";

/// The most bytes all tensors together may take per byte of the file (views of one storage,
/// tied weights, each take their own copy)…
const MAX_BYTES_PER_FILE_BYTE: u64 = 4;

/// …and at most this many bytes more than the file has.
const MAX_BYTES_PAST_FILE: u64 = 1 << 30;

/// Deepest nesting of plain values accepted beside the weights.
const MAX_DEPTH: usize = 32;

/// The most bytes the names of all tensors together may take.
const MAX_NAME_BYTES: u64 = 64 << 20;

/// The largest pickle read (the reader's own limit).
const MAX_PICKLE: u64 = pytorch_reader::MAX_PICKLE_SIZE;

/// How far a deflated `data.pkl` may inflate: `torch.save` stores every entry as it is, so a
/// pickle that inflates far past its size was not written to be read. (A deflated storage is
/// refused outright: the reader would inflate it again for each of its views.)
const MAX_INFLATION: u64 = 4;

/// The most entries a zip archive may have (one per storage and a few): checked on the
/// archive's last record, before its directory is read.
const MAX_ENTRIES: u64 = 200_000;

/// The legacy format's magic number as protocol 2 writes it (LONG1 of 10 bytes).
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

/// The bytes a file's head needs for [`looks_like_pth`] to tell its format.
pub const HEAD: usize = 262;

/// Whether `head` (a file's first [`HEAD`] bytes) opens like one of `torch.save`'s formats: a
/// zip archive, a pickle stream, or the tar archive of PyTorch before 0.1.10.
pub fn looks_like_pth(head: &[u8]) -> bool {
    head.starts_with(b"PK\x03\x04") || head.first() == Some(&0x80) || is_tar(head)
}

fn is_tar(head: &[u8]) -> bool {
    head.get(257..262) == Some(b"ustar")
}

/// Reads the state_dict of a `torch.save` file, whose first [`HEAD`] bytes (or all, if
/// fewer) are `head`: every tensor by its name, on the CPU.
pub fn read(path: &Path, head: &[u8]) -> Result<BTreeMap<String, Tensor>> {
    read_inner(path, head).with_context(|| escape(&path.display().to_string()))
}

fn read_inner(path: &Path, head: &[u8]) -> Result<BTreeMap<String, Tensor>> {
    let before = identity(path)?;
    let len = before.1;
    if len == 0 {
        bail!("the file is empty");
    }
    let reads = if head.starts_with(b"PK\x03\x04") {
        check_zip(path, len)?
    } else if is_tar(head) {
        bail!(
            "the tar format of PyTorch before 0.1.10 is not read: load it in PyTorch and save \
             its state_dict with a current torch.save"
        );
    } else if head[..head.len().min(64)]
        .windows(LEGACY_MAGIC.len())
        .any(|w| w == LEGACY_MAGIC)
    {
        check_legacy(path, len, head)?
    } else {
        bail!(
            "a pickle without torch.save's magic number (pickle.dump?), not a torch.save \
             file: refused"
        );
    };
    let budget = len
        .saturating_mul(MAX_BYTES_PER_FILE_BYTE)
        .min(len.saturating_add(MAX_BYTES_PAST_FILE));
    if reads > budget {
        bail!(
            "its tensors would read {reads} bytes of storage (views counted with all they \
             reach, each copy again), far past the file's {len}: refused"
        );
    }
    let out = evaluate(path, len, budget)?;
    // What was scanned is what was read: the reader opens the file by its path again.
    if identity(path)? != before {
        bail!("the file changed while it was read: refused");
    }
    Ok(out)
}

/// The file's device, inode, length and modification time.
fn identity(path: &Path) -> Result<(u64, u64, u64, Option<std::time::SystemTime>)> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    Ok((m.dev(), m.len(), m.ino(), m.modified().ok()))
}

/// Evaluates a file that passed the scan with `pytorch-reader`: the weights as tensors.
fn evaluate(path: &Path, len: u64, budget: u64) -> Result<BTreeMap<String, Tensor>> {
    let root = PytorchReader::read_pickle_data(path, None).map_err(reader_error)?;
    let key = weights_key(&root)?;
    let reader = match key {
        Some(k) => PytorchReader::with_top_level_key(path, k),
        None => PytorchReader::new(path),
    }
    .map_err(reader_error)?;
    let mut out = BTreeMap::new();
    // Views of one storage (tied weights) each take their own copy here, so the whole may
    // exceed the file a little; far beyond it, the file declares sizes it does not hold.
    let mut total: u64 = 0;
    for (name, t) in reader.tensors() {
        let shown = quote(name);
        if t.byte_len() as u64 > len {
            bail!(
                "tensor {shown} ({:?}, shape {:?}) would take {} bytes, more than the whole \
                 file ({len} bytes): refused",
                t.dtype(),
                t.shape(),
                t.byte_len()
            );
        }
        total = total.saturating_add(t.byte_len() as u64);
        if total > budget {
            bail!(
                "its tensors would take more than {budget} bytes, far past the file's {len} \
                 (at tensor {shown}): refused"
            );
        }
        let kind = kind_of(t.dtype()).with_context(|| format!("tensor {shown}"))?;
        let bytes = t
            .read()
            .with_context(|| format!("reading tensor {shown}'s bytes"))?;
        let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
        let tensor = Tensor::f_from_data_size(&bytes, &shape, kind).with_context(|| {
            format!("tensor {shown}: {} bytes for shape {shape:?}", bytes.len())
        })?;
        out.insert(name.clone(), tensor);
    }
    if out.is_empty() {
        bail!("no tensors in it");
    }
    Ok(out)
}

/// Checks a zip-format file before anything reads it: at most [`MAX_ENTRIES`] entries, no
/// name twice, the layout torch.save writes (every entry in one folder, `data.pkl` and
/// `version` in it), no TorchScript; storages stored, a deflated `data.pkl` within
/// [`MAX_INFLATION`]; `data.pkl` within the reader's limit and passing the opcode scan.
/// Returns the storage bytes its tensors read.
fn check_zip(path: &Path, len: u64) -> Result<u64> {
    let entries = zip_entries(path, len)?;
    if entries > MAX_ENTRIES {
        bail!("a zip archive of {entries} entries (more than {MAX_ENTRIES}): refused");
    }
    let file = fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let raw = file
        .try_clone()
        .with_context(|| format!("reading {}", path.display()))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| anyhow::anyhow!("not a readable zip archive: {e}"))?;
    let mut sizes: HashMap<String, u64> = HashMap::new();
    let mut folder: Option<String> = None;
    for i in 0..zip.len() {
        let e = zip
            .by_index_raw(i)
            .map_err(|e| anyhow::anyhow!("zip entry {i}: {e}"))?;
        // PyTorch reads names as UTF-8 (the zip format would take others as code page 437).
        let Ok(name) = std::str::from_utf8(e.name_raw()).map(str::to_string) else {
            bail!("zip entry {i} has a name that is not UTF-8: refused");
        };
        if name.ends_with("/constants.pkl") || name.contains("/code/") {
            bail!(
                "a TorchScript archive (torch.jit.save), not a state_dict: its code is not run \
                 here; in PyTorch, save torch.jit.load(...).state_dict() with torch.save"
            );
        }
        // torch.load takes the folder of the first entry as the archive's.
        let top = match name.split_once('/') {
            Some((top, rest)) if !top.is_empty() && !rest.is_empty() => format!("{top}/"),
            _ => bail!(
                "zip entry {} is not in a folder, as torch.save writes every entry: refused",
                quote(&name)
            ),
        };
        let folder = folder.get_or_insert(top.clone());
        if *folder != top {
            bail!(
                "zip entries in two folders ({} and {}), where torch.save writes one: refused",
                quote(folder),
                quote(&top)
            );
        }
        local_header(
            &raw,
            e.header_start(),
            &name,
            e.compression(),
            e.encrypted(),
            e.compressed_size(),
            len,
        )?;
        central_header(&raw, e.central_header_start(), &name)?;
        let size = e.size();
        match e.compression() {
            zip::CompressionMethod::Stored => {
                if e.compressed_size() != size || size > len {
                    bail!(
                        "zip entry {} declares {size} bytes but stores {}",
                        quote(&name),
                        e.compressed_size()
                    );
                }
            }
            zip::CompressionMethod::Deflated if name.ends_with("/data.pkl") => {
                let cap = e.compressed_size().min(len);
                if size > cap.saturating_mul(MAX_INFLATION).saturating_add(1 << 20) {
                    bail!(
                        "its data.pkl would inflate from {cap} to {size} bytes, far past what \
                         torch.save writes (it stores entries as they are): refused"
                    );
                }
            }
            zip::CompressionMethod::Deflated => bail!(
                "zip entry {} is deflated, where torch.save stores entries as they are (a \
                 deflated storage would be inflated again for each of its views): refused; \
                 save the state_dict again with torch.save",
                quote(&name)
            ),
            other => bail!(
                "zip entry {} is compressed with {other} (torch.save stores entries as they \
                 are): refused",
                quote(&name)
            ),
        }
        if sizes.insert(name.clone(), size).is_some() {
            bail!(
                "zip entry {} is in the archive twice: refused",
                quote(&name)
            );
        }
    }
    let root = folder.unwrap_or_default();
    if !sizes.contains_key(&format!("{root}version"))
        && !sizes.contains_key(&format!("{root}.data/version"))
    {
        bail!("a zip archive without the version record torch.save writes: refused");
    }
    // The records PyTorch reads as text: numbers, and the byte order.
    for record in [
        "version",
        ".data/version",
        ".format_version",
        ".storage_alignment",
        ".data/serialization_id",
        "byteorder",
    ] {
        let name = format!("{root}{record}");
        let Some(&size) = sizes.get(&name) else {
            continue;
        };
        let mut text = String::new();
        let read = match (size <= 64, zip.index_for_name(&name)) {
            (true, Some(i)) => zip
                .by_index(i)
                .ok()
                .and_then(|mut e| e.read_to_string(&mut text).ok()),
            _ => None,
        };
        let text = text.trim();
        let ok = read.is_some()
            && match record {
                "byteorder" => text == "little",
                _ => !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()),
            };
        if !ok {
            bail!(
                "zip entry {} is not what torch.save writes there ({}): refused",
                quote(&name),
                if record == "byteorder" {
                    "little"
                } else {
                    "a number"
                }
            );
        }
    }
    let pkl = format!("{root}data.pkl");
    let Some(&size) = sizes.get(&pkl) else {
        bail!(
            "a zip archive without {}: not a torch.save file",
            quote(&pkl)
        );
    };
    // The reader takes the shortest `…data.pkl` as the archive's: it must be this one.
    if sizes
        .keys()
        .any(|n| n.ends_with("data.pkl") && n.len() < pkl.len())
    {
        bail!("a zip archive with a data.pkl outside its folder: refused");
    }
    if size > MAX_PICKLE {
        bail!("its data.pkl is {size} bytes, more than the {MAX_PICKLE} read: refused");
    }
    let index = zip
        .index_for_name(&pkl)
        .with_context(|| format!("zip entry {}: not found", quote(&pkl)))?;
    let entry = zip
        .by_index(index)
        .map_err(|e| anyhow::anyhow!("zip entry {}: {e}", quote(&pkl)))?;
    let scan =
        pickle::scan(&mut BufReader::new(entry), 0, size, Ids::Zip).with_context(|| quote(&pkl))?;
    // As torch.load does: each storage's record holds exactly the bytes its ids declare.
    for (key, &bytes) in &scan.storages {
        let name = format!("{root}data/{key}");
        match sizes.get(&name) {
            Some(&size) if size == bytes => {}
            Some(&size) => bail!(
                "zip entry {} holds {size} bytes where data.pkl declares {bytes}: refused",
                quote(&name)
            ),
            None => bail!(
                "data.pkl names storage {}, which is not in the archive",
                quote(key)
            ),
        }
    }
    Ok(scan.reads)
}

/// Checks an entry's local header against its directory record, as PyTorch's own reader does:
/// its signature, its name and compression method the same, and neither encrypted nor masked.
fn local_header(
    file: &fs::File,
    at: u64,
    name: &str,
    method: zip::CompressionMethod,
    encrypted: bool,
    stored: u64,
    file_len: u64,
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let mut h = [0u8; 30];
    let bad = |why: &str| anyhow::anyhow!("zip entry {}: {why}: refused", quote(name));
    file.read_exact_at(&mut h, at)
        .map_err(|_| bad("its local header lies past the end of the file"))?;
    let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
    if !h.starts_with(b"PK\x03\x04") {
        return Err(bad("no local header where the directory says"));
    }
    if encrypted || u16_at(6) & !FLAGS != 0 {
        return Err(bad("flags torch.save does not write (encryption, patches)"));
    }
    let local_method = match method {
        zip::CompressionMethod::Stored => 0,
        zip::CompressionMethod::Deflated => 8,
        _ => u16::MAX,
    };
    if u16_at(8) != local_method {
        return Err(bad("its local header names another compression"));
    }
    let mut local_name = vec![0u8; u16_at(26) as usize];
    file.read_exact_at(&mut local_name, at + 30)
        .map_err(|_| bad("its local header lies past the end of the file"))?;
    if local_name != name.as_bytes() {
        return Err(bad("its local header names another file"));
    }
    let end = (at + 30 + u16_at(26) as u64 + u16_at(28) as u64).saturating_add(stored);
    if end > file_len {
        return Err(bad("its data reaches past the end of the file"));
    }
    Ok(())
}

/// The flags of a zip entry torch.save writes: deflate options, sizes after the data, UTF-8.
const FLAGS: u16 = 0x080e;

/// Checks an entry's directory record as PyTorch's reader does: no flags but [`FLAGS`], on
/// disk 0, no comment, no extra field but zip64's.
fn central_header(file: &fs::File, at: u64, name: &str) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let mut h = [0u8; 46];
    let bad = |why: &str| anyhow::anyhow!("zip entry {}: {why}: refused", quote(name));
    file.read_exact_at(&mut h, at)
        .map_err(|_| bad("its directory record lies past the end of the file"))?;
    let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
    if !h.starts_with(b"PK\x01\x02") {
        return Err(bad("no directory record where the archive says"));
    }
    if u16_at(8) & !FLAGS != 0 {
        return Err(bad("flags torch.save does not write (encryption, patches)"));
    }
    if u16_at(34) != 0 {
        return Err(bad("on another disk"));
    }
    if u16_at(32) != 0 {
        return Err(bad("a comment, which torch.save does not write"));
    }
    // A DOS directory attribute makes PyTorch's reader take the entry for a folder.
    if h[38] & 0x10 != 0 || name.ends_with('/') {
        return Err(bad("marked as a folder"));
    }
    let extra_len = u16_at(30) as usize;
    if extra_len != 0 {
        let mut extra = vec![0u8; extra_len];
        file.read_exact_at(&mut extra, at + 46 + u16_at(28) as u64)
            .map_err(|_| bad("its directory record lies past the end of the file"))?;
        let zip64 = extra.len() >= 4
            && extra[..2] == [1, 0]
            && u16::from_le_bytes([extra[2], extra[3]]) as usize == extra.len() - 4
            && matches!(extra.len() - 4, 8 | 16 | 24 | 28);
        if !zip64 {
            return Err(bad("an extra field torch.save does not write"));
        }
    }
    Ok(())
}

/// The number of entries a zip archive's last record declares (its zip64 record's, where it
/// has one), read before the directory itself.
fn zip_entries(path: &Path, len: u64) -> Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let tail_len = len.min(22 + 65535);
    let mut tail = vec![0u8; tail_len as usize];
    f.seek(SeekFrom::Start(len - tail_len))
        .and_then(|_| f.read_exact(&mut tail))
        .with_context(|| format!("reading {}", path.display()))?;
    let Some(eocd) = tail.windows(4).rposition(|w| w == b"PK\x05\x06") else {
        bail!("not a readable zip archive: no end of central directory");
    };
    let u16_at = |b: &[u8], i: usize| b.get(i..i + 2).map(|x| u16::from_le_bytes([x[0], x[1]]));
    let field = |i: usize| u16_at(&tail, eocd + i);
    let (Some(disk), Some(cd_disk), Some(here), Some(entries)) =
        (field(4), field(6), field(8), field(10))
    else {
        bail!("not a readable zip archive: its last record is cut short");
    };
    if disk != 0 || cd_disk != 0 || here != entries {
        bail!("a zip archive that spans several disks: refused");
    }
    let u32_at = |i: usize| {
        tail.get(eocd + i..eocd + i + 4)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]) as u64)
    };
    let (Some(cd_size), Some(cd_offset)) = (u32_at(12), u32_at(16)) else {
        bail!("not a readable zip archive: its last record is cut short");
    };
    // The directory ends where the last record starts, or where a zip64 record (56 bytes)
    // and its locator (20) do, as torch.save writes them even for small files.
    let eocd_at = len - tail_len + eocd as u64;
    let gap = eocd_at.checked_sub(cd_offset + cd_size);
    if entries != 0xffff
        && cd_offset != 0xffff_ffff
        && (!matches!(gap, Some(0 | 76)) || cd_size < entries as u64 * 46)
    {
        bail!("not a readable zip archive: its directory is not where its last record says");
    }
    // Zip64: the locator just before the record gives where the zip64 record is; PyTorch's
    // reader checks it wherever it is there, so it must agree with the last record.
    let locator = eocd.checked_sub(20).map(|i| &tail[i..i + 20]);
    let Some(loc) = locator.filter(|l| l.starts_with(b"PK\x06\x07")) else {
        if entries == 0xffff {
            bail!("not a readable zip archive: 65535 entries and no zip64 record");
        }
        return Ok(entries as u64);
    };
    let le = |b: &[u8]| b.iter().rev().fold(0u64, |a, &x| (a << 8) | x as u64);
    if le(&loc[4..8]) != 0 || le(&loc[16..20]) != 1 {
        bail!("a zip archive that spans several disks: refused");
    }
    let mut record = [0u8; 56];
    f.seek(SeekFrom::Start(le(&loc[8..16])))
        .and_then(|_| f.read_exact(&mut record))
        .map_err(|_| anyhow::anyhow!("not a readable zip archive: its zip64 record is missing"))?;
    let r = |i: usize, n: usize| le(&record[i..i + n]);
    if !record.starts_with(b"PK\x06\x06") || r(4, 8) != 44 {
        bail!("not a readable zip archive: its zip64 record is missing");
    }
    if r(16, 4) != 0 || r(20, 4) != 0 || r(24, 8) != r(32, 8) {
        bail!("a zip archive that spans several disks: refused");
    }
    let agree = |small: u64, full: u64, none: u64| small == none || small == full;
    if !agree(entries as u64, r(32, 8), 0xffff)
        || !agree(cd_size, r(40, 8), 0xffff_ffff)
        || !agree(cd_offset, r(48, 8), 0xffff_ffff)
    {
        bail!("not a readable zip archive: its zip64 record and its last record disagree");
    }
    Ok(r(32, 8))
}

/// Scans the five pickles of the legacy format: magic number, protocol, system info, the
/// object (with storages as persistent ids) and the storage key list; the bytes the object's
/// tensors read. `head` is the file's first bytes, where the magic number is.
fn check_legacy(path: &Path, len: u64, head: &[u8]) -> Result<u64> {
    let file = fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut r = BufReader::new(file);
    let mut at = 0u64;
    let mut reads = 0u64;
    let parts = [
        ("magic number", Ids::None, "int"),
        ("protocol version", Ids::None, "int"),
        ("system info", Ids::None, "dict"),
        ("object", Ids::Legacy, ""),
        ("storage key list", Ids::None, "list"),
    ];
    for (what, ids, want) in parts {
        let limit = (len - at).min(MAX_PICKLE);
        let scan = pickle::scan(&mut r, at, limit, ids)
            .with_context(|| format!("the legacy format's {what} pickle"))?;
        if !want.is_empty() && scan.root != want {
            bail!(
                "the legacy format's {what} pickle (at byte {at}) holds a {}, not a {want}",
                scan.root
            );
        }
        if at == 0 {
            magic(head.get(..scan.len as usize))?;
        }
        reads = reads.saturating_add(scan.reads);
        at += scan.len;
    }
    Ok(reads)
}

/// Errors unless the legacy format's first pickle (`first`, its bytes; `None` when it runs
/// past the file's head) is the magic number, as torch.save writes it at any protocol: LONG1
/// of its ten bytes, then STOP.
fn magic(first: Option<&[u8]>) -> Result<()> {
    let mut want = vec![0x8a, 10];
    want.extend_from_slice(&LEGACY_MAGIC);
    want.push(b'.');
    if !first.is_some_and(|f| f.ends_with(&want)) {
        bail!("its first pickle is not torch.save's magic number: refused");
    }
    Ok(())
}

/// Where the weights are: `None` for tensors at the root, else the key they are nested under.
/// Refuses anything anywhere in the file that is not a tensor or plain data.
fn weights_key(root: &PickleValue) -> Result<Option<&'static str>> {
    let PickleValue::Dict(map) = root else {
        bail!(
            "not a state_dict: the file holds {}, not a dict of tensors",
            describe(root)
        );
    };
    let mut at = Vec::new();
    let mut names = 0u64;
    check_plain(root, &mut at, 0, &mut names)?;
    for key in NESTED_KEYS {
        if let Some(v @ PickleValue::Dict(_)) = map.get(key) {
            if holds_tensor(v) {
                return Ok(Some(key));
            }
        }
    }
    if !holds_tensor(root) {
        bail!("no tensors in it");
    }
    Ok(None)
}

fn holds_tensor(v: &PickleValue) -> bool {
    match v {
        PickleValue::Unsupported(t) => t == TENSOR,
        PickleValue::List(items) => items.iter().any(holds_tensor),
        PickleValue::Dict(m) => m.values().any(holds_tensor),
        _ => false,
    }
}

/// One step of the path to a value: a dict key or a list index.
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// The dotted path `at` names, built only for a message.
fn path(at: &[Step]) -> String {
    let mut out = String::new();
    for s in at {
        match s {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(&quote(k));
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    if out.is_empty() {
        out.push_str("the root");
    }
    out
}

/// Refuses a value that is neither a tensor nor plain data (numbers, strings, bytes, lists
/// and dicts of them), naming where it is and what it is; and tensors whose names together
/// would take more than [`MAX_NAME_BYTES`]. `at` is the path so far, `names` the bytes of
/// the tensor names counted so far.
fn check_plain<'a>(
    v: &'a PickleValue,
    at: &mut Vec<Step<'a>>,
    name_len: u64,
    names: &mut u64,
) -> Result<()> {
    if at.len() > MAX_DEPTH {
        bail!(
            "{}: nested deeper than {MAX_DEPTH} levels: refused",
            path(at)
        );
    }
    match v {
        PickleValue::List(items) => {
            for (i, item) in items.iter().enumerate() {
                at.push(Step::Index(i));
                check_plain(item, at, name_len + 8, names)?;
                at.pop();
            }
            Ok(())
        }
        PickleValue::Dict(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for k in keys {
                at.push(Step::Key(k));
                check_plain(&m[k], at, name_len + 1 + k.len() as u64, names)?;
                at.pop();
            }
            Ok(())
        }
        PickleValue::Unsupported(t) if t == TENSOR => {
            *names += name_len;
            if *names > MAX_NAME_BYTES {
                bail!(
                    "the names of its tensors would take more than {MAX_NAME_BYTES} bytes (at \
                     {}): refused",
                    path(at)
                );
            }
            Ok(())
        }
        PickleValue::Unsupported(t) => bail!(
            "{} is a {} object, not a tensor: only tensors and plain values are read (what \
             torch.load(weights_only=True) allows); nothing in the file was run",
            path(at),
            quote(t)
        ),
        _ => Ok(()),
    }
}

fn describe(v: &PickleValue) -> String {
    match v {
        PickleValue::None => "None".into(),
        PickleValue::Bool(_) => "a bool".into(),
        PickleValue::Int(_) => "an int".into(),
        PickleValue::Float(_) => "a float".into(),
        PickleValue::String(_) => "a string".into(),
        PickleValue::Bytes(_) => "bytes".into(),
        PickleValue::List(_) => "a list".into(),
        PickleValue::Dict(_) => "a dict".into(),
        PickleValue::Unsupported(t) => format!("a {} object", quote(t)),
    }
}

fn kind_of(d: DType) -> Result<Kind> {
    Ok(match d {
        DType::F64 => Kind::Double,
        DType::F32 => Kind::Float,
        DType::F16 => Kind::Half,
        DType::BF16 => Kind::BFloat16,
        DType::I64 => Kind::Int64,
        DType::I32 => Kind::Int,
        DType::I16 => Kind::Int16,
        DType::I8 => Kind::Int8,
        DType::U8 => Kind::Uint8,
        DType::Bool => Kind::Bool,
        other => bail!("element type {other:?} is not supported"),
    })
}

/// The reader's error, said as what is wrong with the file.
fn reader_error(e: pytorch_reader::PytorchError) -> anyhow::Error {
    anyhow::anyhow!("not a readable PyTorch file: {e}")
}
