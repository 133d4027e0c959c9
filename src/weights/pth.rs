//! PyTorch's own weight files (`torch.save`: `.pth`, `.pt`, `.bin`), read without Python and
//! without executing anything: the zip archive of PyTorch ≥ 1.6 and the legacy stream before
//! it (magic number, protocol, sys-info, the object, storage keys, raw storages), parsed by the
//! `pytorch-reader` crate, which never runs pickle code and keeps a call it does not know as an
//! opaque object. On top of it this module accepts only what `torch.load(weights_only=True)`
//! would hand back as weights: a dict of tensors, at the root or under a `state_dict` or
//! `model` key (the rest of such a checkpoint may hold plain values: numbers, strings, lists,
//! dicts). Anything else — a call of `os.system` or any other global, a TorchScript archive,
//! a storage whose declared size does not match its bytes, a view past its storage, a tensor
//! that would take more bytes than the file has, absurd nesting — is refused with the reason.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use pytorch_reader::{DType, PickleValue, PytorchReader};
use tch::{Kind, Tensor};

/// The keys under which training scripts commonly nest a state_dict.
const NESTED_KEYS: [&str; 2] = ["state_dict", "model"];

/// The Python type the reader names for a tensor.
const TENSOR: &str = "torch.Tensor";

/// The most bytes all tensors together may take per byte of the file.
const MAX_BYTES_PER_FILE_BYTE: u64 = 4;

/// Deepest nesting of plain values accepted beside the weights.
const MAX_DEPTH: usize = 32;

/// Whether `head` (a file's first bytes) opens like one of `torch.save`'s formats: a zip
/// archive or a pickle stream.
pub fn looks_like_pth(head: &[u8]) -> bool {
    head.starts_with(b"PK\x03\x04") || head.first() == Some(&0x80)
}

/// Reads the state_dict of a `torch.save` file: every tensor by its name, on the CPU.
pub fn read(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    read_inner(path).with_context(|| format!("{}", path.display()))
}

fn read_inner(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let len = fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len == 0 {
        bail!("the file is empty");
    }
    let mut head = [0u8; 4];
    let n = fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .with_context(|| format!("reading {}", path.display()))?;
    if head[..n].starts_with(b"PK\x03\x04") {
        refuse_torchscript(path)?;
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
    let budget = len.saturating_mul(MAX_BYTES_PER_FILE_BYTE);
    let mut total: u64 = 0;
    for (name, t) in reader.tensors() {
        if t.byte_len() as u64 > len {
            bail!(
                "tensor {name} ({:?}, shape {:?}) would take {} bytes, more than the whole \
                 file ({len} bytes): refused",
                t.dtype(),
                t.shape(),
                t.byte_len()
            );
        }
        total = total.saturating_add(t.byte_len() as u64);
        if total > budget {
            bail!(
                "its tensors would take more than {MAX_BYTES_PER_FILE_BYTE} times the file's \
                 {len} bytes (at tensor {name}): refused"
            );
        }
        let kind = kind_of(t.dtype()).with_context(|| format!("tensor {name}"))?;
        let bytes = t
            .read()
            .with_context(|| format!("reading tensor {name}'s bytes"))?;
        let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
        let tensor = Tensor::f_from_data_size(&bytes, &shape, kind)
            .with_context(|| format!("tensor {name}: {} bytes for shape {shape:?}", bytes.len()))?;
        out.insert(name.clone(), tensor);
    }
    if out.is_empty() {
        bail!("no tensors in it");
    }
    Ok(out)
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
    check_plain(root, "", 0)?;
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

/// Refuses a value that is neither a tensor nor plain data (numbers, strings, bytes, lists
/// and dicts of them), naming where it is (`at`, a dotted path) and what it is.
fn check_plain(v: &PickleValue, at: &str, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        bail!("{at}: nested deeper than {MAX_DEPTH} levels: refused");
    }
    let join = |k: &str| match at {
        "" => k.to_string(),
        _ => format!("{at}.{k}"),
    };
    match v {
        PickleValue::List(items) => {
            for (i, item) in items.iter().enumerate() {
                check_plain(item, &format!("{at}[{i}]"), depth + 1)?;
            }
            Ok(())
        }
        PickleValue::Dict(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            for k in keys {
                check_plain(&m[k], &join(k), depth + 1)?;
            }
            Ok(())
        }
        PickleValue::Unsupported(t) if t == TENSOR => Ok(()),
        PickleValue::Unsupported(t) => {
            let at = if at.is_empty() { "the root" } else { at };
            bail!(
                "{at} is a {t} object, not a tensor: only tensors and plain values are read \
                 (what torch.load(weights_only=True) allows); nothing in the file was run"
            )
        }
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
        PickleValue::Unsupported(t) => format!("a {t} object"),
    }
}

/// A TorchScript archive (`torch.jit.save`) holds code, which this reader does not run.
fn refuse_torchscript(path: &Path) -> Result<()> {
    let file = fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let Ok(mut zip) = zip::ZipArchive::new(file) else {
        // A damaged archive: the reader below says what is wrong with it.
        return Ok(());
    };
    let scripted = (0..zip.len()).any(|i| {
        zip.by_index_raw(i).is_ok_and(|e| {
            e.name()
                .is_ok_and(|n| n.ends_with("/constants.pkl") || n.contains("/code/"))
        })
    });
    if scripted {
        bail!(
            "a TorchScript archive (torch.jit.save), not a state_dict: its code is not run \
             here; in PyTorch, save torch.jit.load(...).state_dict() with torch.save"
        );
    }
    Ok(())
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
