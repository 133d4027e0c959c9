//! PyTorch's own weight files (`torch.save`: `.pth`, `.pt`, `.bin`), read without Python and
//! without executing anything: the zip archive of PyTorch ≥ 1.6 and the legacy stream before
//! it (magic number, protocol, sys-info, the object, storage keys, raw storages).
//!
//! Two steps. First the file's containers are checked and every pickle in it is scanned
//! opcode by opcode ([`super::pickle`]): only what `torch.load(weights_only=True)` accepts for
//! a state_dict passes, and the work any file can cause is bounded — a deflated entry may not
//! inflate far past its size (torch.save stores entries as they are), nor be inflated again
//! for every view of it beyond a bound. Then the `pytorch-reader` crate evaluates what passed,
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

/// How far deflated entries may inflate in all: `torch.save` stores every entry as it is, and
/// weights compress little, so a file that inflates far past its size was not written to be
/// read.
const MAX_INFLATION: u64 = 4;

/// The most bytes the views of deflated storages may inflate together: each view of a
/// deflated entry inflates it again from its start.
const MAX_REINFLATED: u64 = 1 << 30;

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

/// Reads the state_dict of a `torch.save` file: every tensor by its name, on the CPU.
pub fn read(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    read_inner(path).with_context(|| escape(&path.display().to_string()))
}

fn read_inner(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let len = fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len == 0 {
        bail!("the file is empty");
    }
    let mut head = Vec::with_capacity(HEAD);
    fs::File::open(path)
        .and_then(|f| f.take(HEAD as u64).read_to_end(&mut head))
        .with_context(|| format!("reading {}", path.display()))?;
    if head.starts_with(b"PK\x03\x04") {
        check_zip(path, len)?;
    } else if is_tar(&head) {
        bail!(
            "the tar format of PyTorch before 0.1.10 is not read: load it in PyTorch and save \
             its state_dict with a current torch.save"
        );
    } else if head[..head.len().min(64)]
        .windows(LEGACY_MAGIC.len())
        .any(|w| w == LEGACY_MAGIC)
    {
        check_legacy(path, len)?;
    } else {
        bail!(
            "a pickle without torch.save's magic number (pickle.dump?), not a torch.save \
             file: refused"
        );
    }
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
    let budget = len
        .saturating_mul(MAX_BYTES_PER_FILE_BYTE)
        .min(len.saturating_add(MAX_BYTES_PAST_FILE));
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

/// Checks a zip-format file before anything reads it: no TorchScript; entries stored or
/// deflated, and deflated ones within [`MAX_INFLATION`]; `data.pkl` within the reader's
/// limit and passing the opcode scan; deflated storages not inflated again per view past
/// [`MAX_REINFLATED`].
fn check_zip(path: &Path, len: u64) -> Result<()> {
    let file = fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(file))
        .map_err(|e| anyhow::anyhow!("not a readable zip archive: {e}"))?;
    let mut entries: HashMap<String, (bool, u64)> = HashMap::new();
    let (mut deflated, mut inflated) = (0u64, 0u64);
    for i in 0..zip.len() {
        let e = zip
            .by_index_raw(i)
            .map_err(|e| anyhow::anyhow!("zip entry {i}: {e}"))?;
        let name = e
            .name()
            .map_err(|e| anyhow::anyhow!("zip entry {i}: {e}"))?
            .to_string();
        if name.ends_with("/constants.pkl") || name.contains("/code/") {
            bail!(
                "a TorchScript archive (torch.jit.save), not a state_dict: its code is not run \
                 here; in PyTorch, save torch.jit.load(...).state_dict() with torch.save"
            );
        }
        let compressed = match e.compression() {
            zip::CompressionMethod::Stored => {
                if e.compressed_size() != e.size() || e.size() > len {
                    bail!(
                        "zip entry {} declares {} bytes but stores {}",
                        quote(&name),
                        e.size(),
                        e.compressed_size()
                    );
                }
                false
            }
            zip::CompressionMethod::Deflated => {
                deflated = deflated.saturating_add(e.compressed_size());
                inflated = inflated.saturating_add(e.size());
                true
            }
            other => bail!(
                "zip entry {} is compressed with {other} (torch.save stores entries as they \
                 are): refused",
                quote(&name)
            ),
        };
        entries.insert(name, (compressed, e.size()));
    }
    if inflated
        > deflated
            .saturating_mul(MAX_INFLATION)
            .saturating_add(1 << 20)
    {
        bail!(
            "its deflated entries would inflate from {deflated} to {inflated} bytes, far past \
             what torch.save writes (it stores entries as they are): refused"
        );
    }
    // The entry the reader evaluates: the shortest `…data.pkl` at the root or in a folder.
    let Some(root) = entries
        .keys()
        .filter_map(|n| n.strip_suffix("data.pkl"))
        .filter(|r| r.is_empty() || r.ends_with('/'))
        .min_by_key(|r| r.len())
        .map(str::to_string)
    else {
        bail!("a zip archive without data.pkl: not a torch.save file");
    };
    if !entries.contains_key(&format!("{root}version"))
        && !entries.contains_key(&format!("{root}.data/version"))
    {
        bail!("a zip archive without the version record torch.save writes: refused");
    }
    let pkl = format!("{root}data.pkl");
    let size = entries[&pkl].1;
    if size > MAX_PICKLE {
        bail!("its data.pkl is {size} bytes, more than the {MAX_PICKLE} read: refused");
    }
    let index = zip
        .index_for_name(&pkl)
        .with_context(|| format!("zip entry {}: not found", quote(&pkl)))?;
    let entry = zip
        .by_index(index)
        .map_err(|e| anyhow::anyhow!("zip entry {}: {e}", quote(&pkl)))?;
    let scan = pickle::scan(&mut BufReader::new(entry), 0, size, Ids::Storages)
        .with_context(|| quote(&pkl))?;
    let mut reinflated = 0u64;
    for (key, views) in &scan.storages {
        if let Some(&(true, size)) = entries.get(&format!("{root}data/{key}")) {
            reinflated = reinflated.saturating_add(views.saturating_mul(size));
        }
    }
    if reinflated > MAX_REINFLATED {
        bail!(
            "its deflated storages would be inflated again for each of their views, \
             {reinflated} bytes in all (torch.save stores entries as they are): refused"
        );
    }
    Ok(())
}

/// Scans the five pickles of the legacy format: magic number, protocol, system info, the
/// object (with storages as persistent ids) and the storage key list.
fn check_legacy(path: &Path, len: u64) -> Result<()> {
    let file = fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut r = BufReader::new(file);
    let mut at = 0u64;
    let parts = [
        ("magic number", Ids::None, "int"),
        ("protocol version", Ids::None, "int"),
        ("system info", Ids::None, "dict"),
        ("object", Ids::Storages, ""),
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
        at += scan.len;
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
