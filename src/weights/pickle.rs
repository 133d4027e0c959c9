//! The opcode scan every pickle of a `torch.save` file passes before anything evaluates it:
//! the one rule that decides what the tool reads from strangers. It follows the virtual
//! machine of Python's `pickle` (as `pickletools` documents it) on abstract values — which
//! global a value came from, whether it is a tensor, a storage, a dict — so that every GLOBAL,
//! STACK_GLOBAL, REDUCE, NEWOBJ and BUILD is checked where it stands, whether or not its
//! result would reach the object the file finally holds (a call dropped from the stack or kept
//! only in the memo is checked like any other).
//!
//! What passes is what PyTorch's own `torch.load(weights_only=True)` (its
//! `_weights_only_unpickler`, PyTorch 2.13) accepts for a state_dict, narrowed to what the
//! reader turns into weights: the opcodes that unpickler implements, the globals on
//! [`ALLOWED`] (tensor and parameter rebuilds, typed storages, element types,
//! `OrderedDict`, `set`), REDUCE only of those functions, BUILD only of an `OrderedDict`, a
//! tensor or a parameter, persistent ids only of storages. The one addition: the opcodes
//! protocol 4 frames a pickle with (FRAME, MEMOIZE, SHORT_BINUNICODE, STACK_GLOBAL), so that a
//! state_dict saved at protocol 4, which that unpickler cannot read back, is read when it is
//! as plain as a protocol-2 one.
//!
//! The work is bounded by the pickle's length whatever it declares: one pass, values created
//! and memo slots filled at most [`MAX_VALUES`], the stack bounded by them, strings at most
//! [`MAX_STRING`] each and [`MAX_STRINGS`] together, dict keys at most [`MAX_KEY`] bytes.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Read};
use std::rc::Rc;

use anyhow::{bail, Result};

use crate::text::quote;

/// The most values (numbers, strings, containers, calls) one pickle may create: a state_dict
/// of ten thousand tensors needs about 200,000; a million short strings take the reader about
/// 420 MB (measured).
pub const MAX_VALUES: u64 = 1_000_000;

/// The longest string or bytes value accepted.
pub const MAX_STRING: u64 = 16 << 20;

/// The most string and bytes payload one pickle may hold.
pub const MAX_STRINGS: u64 = 64 << 20;

/// The longest dict key accepted: keys are parameter names.
pub const MAX_KEY: usize = 1024;

/// The deepest nesting of MARKs (containers being built inside each other).
pub const MAX_MARKS: usize = 1000;

/// Strings up to this length are kept by the scan (to check globals, storage ids, keys).
const KEPT: usize = 256;

/// What an allowed global is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `collections.OrderedDict`: called with REDUCE, BUILD gives it its attributes.
    OrderedDict,
    /// `builtins.set`.
    Set,
    /// A tensor rebuild function (`torch._utils._rebuild_tensor*`).
    RebuildTensor,
    /// `torch._utils._rebuild_parameter*`.
    RebuildParameter,
    /// `torch._tensor._rebuild_from_type_v2(func, new_type, args, state)`.
    RebuildFromType,
    /// A class named as a type, never called: `torch.Tensor`, `torch.nn.parameter.Parameter`.
    TensorType,
    /// A typed storage class (`torch.FloatStorage`), named in a storage's persistent id.
    StorageType,
    /// An element type (`torch.float32`), named by `_rebuild_tensor_v3`.
    Dtype,
}

/// The globals a state_dict needs, each as `module.name`: the part of PyTorch's
/// `_get_allowed_globals()` that the reader turns into weights.
pub const ALLOWED: &[&str] = &[
    "collections.OrderedDict",
    "builtins.set",
    "torch._utils._rebuild_tensor",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter",
    "torch._utils._rebuild_parameter_with_state",
    "torch._tensor._rebuild_from_type_v2",
    "torch.Tensor",
    "torch.nn.parameter.Parameter",
    "torch.FloatStorage",
    "torch.DoubleStorage",
    "torch.HalfStorage",
    "torch.BFloat16Storage",
    "torch.LongStorage",
    "torch.IntStorage",
    "torch.ShortStorage",
    "torch.CharStorage",
    "torch.ByteStorage",
    "torch.BoolStorage",
    "torch.float32",
    "torch.float64",
    "torch.float16",
    "torch.bfloat16",
    "torch.int64",
    "torch.int32",
    "torch.int16",
    "torch.int8",
    "torch.uint8",
    "torch.uint16",
    "torch.uint32",
    "torch.uint64",
    "torch.bool",
];

fn role(full: &str) -> Option<Role> {
    if !ALLOWED.contains(&full) {
        return None;
    }
    Some(match full {
        "collections.OrderedDict" => Role::OrderedDict,
        "builtins.set" => Role::Set,
        "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
            Role::RebuildParameter
        }
        "torch._tensor._rebuild_from_type_v2" => Role::RebuildFromType,
        "torch.Tensor" | "torch.nn.parameter.Parameter" => Role::TensorType,
        f if f.starts_with("torch._utils._rebuild_tensor") => Role::RebuildTensor,
        f if f.ends_with("Storage") => Role::StorageType,
        _ => Role::Dtype,
    })
}

/// Which persistent ids a pickle may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ids {
    /// None (the legacy format's header pickles).
    None,
    /// `('storage', storage_type, key, location, numel)`: the zip format's `data.pkl`.
    Zip,
    /// `('storage', storage_type, key, location, numel, view)`: the legacy format's object.
    Legacy,
}

/// The most dimensions a tensor may have.
pub const MAX_DIMS: usize = 64;

/// The deepest nesting of tuples.
pub const MAX_TUPLE_DEPTH: usize = 64;

/// What the scan found in a pickle that passed.
#[derive(Debug)]
pub struct Scan {
    /// Bytes from the pickle's first opcode through its STOP.
    pub len: u64,
    /// The bytes each storage key's persistent ids declare (its size times its element's).
    pub storages: BTreeMap<String, u64>,
    /// The storage bytes the reader will read for the tensors, each copy counted.
    pub reads: u64,
    /// The Python type of the pickle's value (`dict`, `int`, …).
    pub root: &'static str,
}

/// What a copy of a value costs the reader, which copies a value deeply for each memo fetch:
/// the values it holds (a tensor counted with its size and stride) and the storage bytes its
/// tensors read, each copy its own.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    values: u64,
    reads: u64,
}

impl Cost {
    const ONE: Cost = Cost {
        values: 1,
        reads: 0,
    };

    fn add(self, o: Cost) -> Cost {
        Cost {
            values: self.values.saturating_add(o.values),
            reads: self.reads.saturating_add(o.reads),
        }
    }
}

/// A tuple: its items; the first forbidden global anywhere inside it, its nesting depth and
/// its cost, found once when it is built (tuples shared through the memo are never walked).
#[derive(Debug)]
struct Tuple {
    items: Vec<V>,
    forbidden: Option<Rc<str>>,
    depth: usize,
    cost: Cost,
}

/// A list, set or dict: what it holds so far, shared with its copies in the memo; for a dict,
/// whether it is an `OrderedDict` and which of an `nn.Module`'s tables (`_parameters`,
/// `_buffers`, `_modules`) it has as keys.
#[derive(Debug, Default)]
struct Container {
    ordered: bool,
    tables: Cell<u8>,
    cost: Cell<Cost>,
}

/// An abstract value on the pickle machine's stack.
#[derive(Debug, Clone)]
enum V {
    None,
    Bool,
    /// An int, its value when it fits an `i64`.
    Int(Option<i64>),
    Float,
    /// A string, kept when short; its length in bytes.
    Str(Option<Rc<str>>, u64),
    Tuple(Rc<Tuple>),
    List(Rc<Container>),
    Set(Rc<Container>),
    Dict(Rc<Container>),
    Global(Role, Rc<str>),
    /// A storage, with the size of its elements.
    Storage(u64),
    /// A tensor or parameter, with what a copy of it costs.
    Tensor(Cost),
    /// Found only after a forbidden global (the scan goes on to say what the file is): the
    /// global itself, and what calling or instantiating it made.
    Forbidden(Rc<str>),
    Object(Rc<str>),
}

impl V {
    fn type_name(&self) -> &'static str {
        match self {
            V::None => "NoneType",
            V::Bool => "bool",
            V::Int(_) => "int",
            V::Float => "float",
            V::Str(..) => "str",
            V::Tuple(_) => "tuple",
            V::List(_) => "list",
            V::Set(_) => "set",
            V::Dict(d) if d.ordered => "collections.OrderedDict",
            V::Dict(_) => "dict",
            V::Global(..) | V::Forbidden(_) => "global",
            V::Storage(_) => "storage",
            V::Tensor(_) => "tensor",
            V::Object(_) => "object",
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            V::Str(Some(s), _) => Some(s),
            _ => None,
        }
    }

    fn forbidden(&self) -> Option<Rc<str>> {
        match self {
            V::Forbidden(n) | V::Object(n) => Some(n.clone()),
            V::Tuple(t) => t.forbidden.clone(),
            _ => None,
        }
    }

    fn cost(&self) -> Cost {
        match self {
            V::Tuple(t) => t.cost,
            V::List(c) | V::Set(c) | V::Dict(c) => c.cost.get().add(Cost::ONE),
            V::Tensor(c) => *c,
            _ => Cost::ONE,
        }
    }

    fn depth(&self) -> usize {
        match self {
            V::Tuple(t) => t.depth,
            _ => 0,
        }
    }

    /// A non-negative int's value.
    fn non_negative(&self) -> Option<u64> {
        match self {
            V::Int(Some(i)) => u64::try_from(*i).ok(),
            _ => None,
        }
    }
}

fn tuple(items: Vec<V>) -> V {
    let forbidden = items.iter().find_map(V::forbidden);
    let depth = 1 + items.iter().map(V::depth).max().unwrap_or(0);
    let cost = items.iter().fold(Cost::ONE, |c, v| c.add(v.cost()));
    V::Tuple(Rc::new(Tuple {
        items,
        forbidden,
        depth,
        cost,
    }))
}

fn container(ordered: bool) -> Rc<Container> {
    Rc::new(Container {
        ordered,
        ..Container::default()
    })
}

/// A LONG1 int's value when it fits an `i64` (little-endian two's complement).
fn long(b: &[u8]) -> Option<i64> {
    if b.is_empty() {
        return Some(0);
    }
    if b.len() > 8 {
        return None;
    }
    let fill = if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
    let mut full = [fill; 8];
    full[..b.len()].copy_from_slice(b);
    Some(i64::from_le_bytes(full))
}

const MODULE_TABLES: [&str; 3] = ["_parameters", "_buffers", "_modules"];

/// A byte reader that counts and refuses to read past a limit.
struct Input<'a, R> {
    r: &'a mut R,
    pos: u64,
    limit: u64,
}

impl<R: BufRead> Input<'_, R> {
    fn need(&self, n: u64) -> Result<()> {
        if self.pos.saturating_add(n) > self.limit {
            bail!(
                "byte {}: the pickle ends (at {} bytes) before the {n} bytes an opcode needs",
                self.pos,
                self.limit
            );
        }
        Ok(())
    }

    fn bytes(&mut self, n: u64) -> Result<Vec<u8>> {
        self.need(n)?;
        let mut buf = Vec::with_capacity(n as usize);
        self.r.by_ref().take(n).read_to_end(&mut buf)?;
        if (buf.len() as u64) < n {
            bail!(
                "byte {}: the pickle is cut short",
                self.pos + buf.len() as u64
            );
        }
        self.pos += n;
        Ok(buf)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    fn le(&mut self, n: u64) -> Result<u64> {
        let b = self.bytes(n)?;
        Ok(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    }

    /// A GLOBAL's line, without its newline; bounded.
    fn line(&mut self) -> Result<String> {
        let start = self.pos;
        let mut out = Vec::new();
        loop {
            let b = self.u8()?;
            if b == b'\n' {
                break;
            }
            if out.len() >= KEPT {
                bail!("byte {start}: a GLOBAL's name runs past {KEPT} bytes");
            }
            out.push(b);
        }
        String::from_utf8(out)
            .map_err(|_| anyhow::anyhow!("byte {start}: a GLOBAL's name is not UTF-8"))
    }
}

/// The scanner's state for one pickle.
struct Machine {
    ids: Ids,
    stack: Vec<V>,
    marks: Vec<Vec<V>>,
    memo: HashMap<u64, V>,
    values: u64,
    reads: u64,
    string_bytes: u64,
    storages: BTreeMap<String, u64>,
    proto: u8,
    /// The first forbidden global and its offset, once seen: the scan goes on only to tell a
    /// pickled module from other objects.
    forbidden: Option<(u64, Rc<str>)>,
    /// The last BUILD that gave an object the tables of an `nn.Module`: its offset and class.
    module: Option<(u64, Rc<str>)>,
}

/// Scans one pickle from `r`, which starts at byte `base` of its file or entry, reading at
/// most `limit` bytes, with the persistent ids `ids` allows. Errors name the byte offset
/// (counted from `base`'s origin) and what is refused there.
pub fn scan<R: BufRead>(r: &mut R, base: u64, limit: u64, ids: Ids) -> Result<Scan> {
    let mut input = Input {
        r,
        pos: base,
        limit: base.saturating_add(limit),
    };
    let mut m = Machine {
        ids,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        values: 0,
        reads: 0,
        string_bytes: 0,
        storages: BTreeMap::new(),
        proto: 0,
        forbidden: None,
        module: None,
    };
    loop {
        let at = input.pos;
        let step = m.step(&mut input, at);
        let done = match step {
            Ok(None) => continue,
            Ok(Some(root)) => Ok(root),
            Err(e) => Err(e),
        };
        return match (done, m.refusal()) {
            (_, Some(refusal)) => Err(refusal),
            (Ok(root), None) => Ok(Scan {
                len: input.pos - base,
                storages: m.storages,
                reads: m.reads,
                root,
            }),
            (Err(e), None) => Err(e),
        };
    }
}

impl Machine {
    /// Why the pickle is refused, once a forbidden global was seen.
    fn refusal(&self) -> Option<anyhow::Error> {
        let (at, global) = self.forbidden.as_ref()?;
        let first = format!("global {} at byte {at}", quote(global));
        Some(match &self.module {
            Some((build, class)) => anyhow::anyhow!(
                "a whole pickled object with an nn.Module's tables (BUILD at byte {build} of a \
                 {} object; {first} is not allowed), as torch.save(model) writes, not a \
                 state_dict: refused, nothing in it was run. Where you trust the file, make a \
                 state_dict of it in PyTorch: torch.save(torch.load(FILE, \
                 weights_only=False).state_dict(), \"weights.pth\")",
                quote(class)
            ),
            None => anyhow::anyhow!(
                "byte {at}: global {} is not one a state_dict needs (tensors, storages, \
                 parameters, OrderedDict: what torch.load(weights_only=True) allows): refused; \
                 nothing in the file was run",
                quote(global)
            ),
        })
    }

    fn push(&mut self, v: V, at: u64) -> Result<()> {
        self.count(at)?;
        if v.depth() > MAX_TUPLE_DEPTH {
            bail!("byte {at}: tuples nested deeper than {MAX_TUPLE_DEPTH}: refused");
        }
        self.stack.push(v);
        Ok(())
    }

    /// Counts one value made against [`MAX_VALUES`].
    fn count(&mut self, at: u64) -> Result<()> {
        self.charge(Cost::ONE, at)
    }

    /// Counts what the reader will make: values against [`MAX_VALUES`], storage bytes read.
    fn charge(&mut self, c: Cost, at: u64) -> Result<()> {
        self.values = self.values.saturating_add(c.values);
        self.reads = self.reads.saturating_add(c.reads);
        if self.values > MAX_VALUES {
            bail!(
                "byte {at}: more than {MAX_VALUES} values in one pickle (memo copies counted): \
                 refused"
            );
        }
        Ok(())
    }

    fn pop(&mut self, at: u64, op: &str) -> Result<V> {
        match self.stack.pop() {
            None => bail!("byte {at}: {op} finds the stack empty"),
            Some(v) => Ok(v),
        }
    }

    fn top(&mut self, at: u64, op: &str) -> Result<&mut V> {
        match self.stack.last_mut() {
            None => bail!("byte {at}: {op} finds the stack empty"),
            Some(v) => Ok(v),
        }
    }

    fn pop_mark(&mut self, at: u64, op: &str) -> Result<Vec<V>> {
        let Some(outer) = self.marks.pop() else {
            bail!("byte {at}: {op} without a MARK");
        };
        Ok(std::mem::replace(&mut self.stack, outer))
    }

    fn string(&mut self, input: &mut Input<impl BufRead>, n: u64, at: u64) -> Result<()> {
        if n > MAX_STRING {
            bail!("byte {at}: a string of {n} bytes (more than {MAX_STRING}): refused");
        }
        self.string_bytes += n;
        if self.string_bytes > MAX_STRINGS {
            bail!("byte {at}: more than {MAX_STRINGS} bytes of strings in one pickle: refused");
        }
        let b = input.bytes(n)?;
        let Ok(text) = std::str::from_utf8(&b) else {
            bail!("byte {at}: a string that is not UTF-8: refused");
        };
        let v = V::Str((b.len() <= KEPT).then(|| Rc::from(text)), n);
        self.push(v, at)
    }

    /// Refuses (or, after a first refusal, notes) a global that is not allowed.
    fn global(&mut self, module: &str, name: &str, at: u64) -> Result<()> {
        let module = match module {
            "__builtin__" => "builtins",
            m => m,
        };
        let full = format!("{module}.{name}");
        match role(&full) {
            Some(r) => self.push(V::Global(r, Rc::from(full.as_str())), at),
            None => {
                let full: Rc<str> = Rc::from(full.as_str());
                if self.forbidden.is_none() {
                    self.forbidden = Some((at, full.clone()));
                }
                self.push(V::Forbidden(full), at)
            }
        }
    }

    /// One opcode; `Some(root type)` at STOP.
    fn step(&mut self, input: &mut Input<impl BufRead>, at: u64) -> Result<Option<&'static str>> {
        let op = input.u8()?;
        match op {
            // PROTO
            0x80 => {
                self.proto = input.u8()?;
                if !(2..=5).contains(&self.proto) {
                    bail!(
                        "byte {at}: pickle protocol {} (2 to 5 are read)",
                        self.proto
                    );
                }
            }
            // FRAME: a length prefix for the opcodes that follow.
            0x95 if self.proto >= 4 => {
                input.le(8)?;
            }
            b'.' => {
                let root = self.pop(at, "STOP")?;
                if !self.stack.is_empty() || !self.marks.is_empty() {
                    bail!("byte {at}: STOP leaves values on the stack");
                }
                return Ok(Some(root.type_name()));
            }
            // MARK
            b'(' => {
                if self.marks.len() >= MAX_MARKS {
                    bail!("byte {at}: MARKs nested deeper than {MAX_MARKS}: refused");
                }
                let inner = std::mem::take(&mut self.stack);
                self.marks.push(inner);
            }
            b'N' => self.push(V::None, at)?,
            0x88 | 0x89 => self.push(V::Bool, at)?,
            // BININT, BININT1, BININT2, LONG1
            b'J' => {
                let v = input.le(4)? as u32 as i32;
                self.push(V::Int(Some(v.into())), at)?
            }
            b'K' => {
                let v = input.le(1)?;
                self.push(V::Int(Some(v as i64)), at)?
            }
            b'M' => {
                let v = input.le(2)?;
                self.push(V::Int(Some(v as i64)), at)?
            }
            0x8a => {
                let n = input.u8()? as u64;
                let b = input.bytes(n)?;
                self.push(V::Int(long(&b)), at)?
            }
            // BINFLOAT
            b'G' => {
                input.bytes(8)?;
                self.push(V::Float, at)?
            }
            // BINUNICODE, SHORT_BINSTRING, SHORT_BINUNICODE, BINUNICODE8
            b'X' => {
                let n = input.le(4)?;
                self.string(input, n, at)?
            }
            b'U' => {
                let n = input.u8()? as u64;
                self.string(input, n, at)?
            }
            0x8c if self.proto >= 4 => {
                let n = input.u8()? as u64;
                self.string(input, n, at)?
            }
            0x8d if self.proto >= 4 => {
                let n = input.le(8)?;
                self.string(input, n, at)?
            }
            b')' => self.push(tuple(Vec::new()), at)?,
            b']' => self.push(V::List(container(false)), at)?,
            b'}' => self.push(V::Dict(container(false)), at)?,
            0x8f => self.push(V::Set(container(false)), at)?,
            // TUPLE, TUPLE1..3
            b't' => {
                let items = self.pop_mark(at, "TUPLE")?;
                self.push(tuple(items), at)?
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if self.stack.len() < n {
                    bail!("byte {at}: TUPLE{n} finds fewer than {n} values");
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(tuple(items), at)?
            }
            // APPEND, APPENDS
            b'a' => {
                let item = self.pop(at, "APPEND")?;
                self.append_to(item.cost(), at)?;
            }
            b'e' => {
                let items = self.pop_mark(at, "APPENDS")?;
                let cost = items.iter().fold(Cost::default(), |c, v| c.add(v.cost()));
                self.append_to(cost, at)?;
            }
            // SETITEM, SETITEMS
            b's' => {
                let v = self.pop(at, "SETITEM")?;
                let k = self.pop(at, "SETITEM")?;
                self.set_items(&[k, v], at)?;
            }
            b'u' => {
                let items = self.pop_mark(at, "SETITEMS")?;
                if items.len() % 2 != 0 {
                    bail!("byte {at}: SETITEMS with an odd number of values");
                }
                self.set_items(&items, at)?;
            }
            // BINGET, LONG_BINGET
            b'h' | b'j' => {
                let idx = input.le(if op == b'h' { 1 } else { 4 })?;
                let Some(v) = self.memo.get(&idx).cloned() else {
                    bail!("byte {at}: memo slot {idx} was never stored");
                };
                // The reader copies the value, tensors and all, each of which reads again.
                self.charge(v.cost(), at)?;
                self.stack.push(v);
            }
            // BINPUT, LONG_BINPUT, MEMOIZE
            b'q' | b'r' | 0x94 => {
                let idx = match op {
                    b'q' => input.le(1)?,
                    b'r' => input.le(4)?,
                    _ if self.proto >= 4 => self.memo.len() as u64,
                    _ => bail!("byte {at}: MEMOIZE before protocol 4"),
                };
                let v = self.top(at, "PUT")?.clone();
                self.charge(
                    Cost {
                        values: v.cost().values,
                        reads: 0,
                    },
                    at,
                )?;
                self.memo.insert(idx, v);
            }
            // GLOBAL, STACK_GLOBAL
            b'c' => {
                let module = input.line()?;
                let name = input.line()?;
                self.global(&module, &name, at)?
            }
            0x93 if self.proto >= 4 => {
                let name = self.pop(at, "STACK_GLOBAL")?;
                let module = self.pop(at, "STACK_GLOBAL")?;
                match (module.text(), name.text()) {
                    (Some(m), Some(n)) => {
                        let (m, n) = (m.to_string(), n.to_string());
                        self.global(&m, &n, at)?
                    }
                    _ => bail!(
                        "byte {at}: STACK_GLOBAL of a {} and a {}, not two short strings",
                        module.type_name(),
                        name.type_name()
                    ),
                }
            }
            b'R' => {
                let args = self.pop(at, "REDUCE")?;
                let func = self.pop(at, "REDUCE")?;
                let v = self.reduce(func, args, at)?;
                self.push(v, at)?
            }
            0x81 => {
                let args = self.pop(at, "NEWOBJ")?;
                let cls = self.pop(at, "NEWOBJ")?;
                match cls.forbidden().or_else(|| args.forbidden()) {
                    Some(n) if self.forbidden.is_some() => self.push(V::Object(n), at)?,
                    _ => bail!(
                        "byte {at}: NEWOBJ of {}: a state_dict creates no objects that way \
                         (torch.load(weights_only=True) allows it only for a Parameter): refused",
                        describe(&cls)
                    ),
                }
            }
            b'b' => {
                let state = self.pop(at, "BUILD")?;
                let inst = self.top(at, "BUILD")?.clone();
                self.build(inst, state, at)?
            }
            b'Q' => {
                let pid = self.pop(at, "BINPERSID")?;
                let size = self.persistent_id(&pid, at)?;
                self.push(V::Storage(size), at)?
            }
            _ => bail!(
                "byte {at}: opcode {} ({}) is not one torch.load(weights_only=True) reads: \
                 refused",
                op_name(op),
                byte(op)
            ),
        }
        if self.stack.len() + self.marks.len() > MAX_VALUES as usize {
            bail!("byte {at}: the stack holds more than {MAX_VALUES} values: refused");
        }
        Ok(None)
    }

    fn append_to(&mut self, cost: Cost, at: u64) -> Result<()> {
        let target = self.top(at, "APPEND")?;
        let V::List(list) = target else {
            bail!("byte {at}: APPEND to a {}, not a list", target.type_name());
        };
        list.cost.set(list.cost.get().add(cost));
        Ok(())
    }

    fn set_items(&mut self, items: &[V], at: u64) -> Result<()> {
        let target = self.top(at, "SETITEM")?.clone();
        let V::Dict(dict) = &target else {
            bail!("byte {at}: SETITEM on a {}, not a dict", target.type_name());
        };
        for pair in items.chunks(2) {
            match &pair[0] {
                V::Str(s, n) => {
                    if *n as usize > MAX_KEY {
                        bail!(
                            "byte {at}: a dict key of {n} bytes (more than {MAX_KEY}; keys are \
                             parameter names): refused"
                        );
                    }
                    if let Some(i) = MODULE_TABLES.iter().position(|t| s.as_deref() == Some(*t)) {
                        dict.tables.set(dict.tables.get() | 1 << i);
                    }
                }
                V::Int(_) | V::Bool | V::None | V::Float => {}
                other => bail!("byte {at}: a dict key that is a {}", other.type_name()),
            }
            let cost = pair.iter().fold(Cost::default(), |c, v| c.add(v.cost()));
            dict.cost.set(dict.cost.get().add(cost));
        }
        Ok(())
    }

    fn reduce(&mut self, func: V, args: V, at: u64) -> Result<V> {
        if let Some(n) = func.forbidden().or_else(|| args.forbidden()) {
            if self.forbidden.is_some() {
                return Ok(V::Object(n));
            }
        }
        let V::Tuple(t) = &args else {
            bail!(
                "byte {at}: REDUCE with a {} for arguments, not a tuple",
                args.type_name()
            );
        };
        let items = &t.items;
        let V::Global(role, name) = &func else {
            bail!(
                "byte {at}: REDUCE calls a {}, not a function",
                func.type_name()
            );
        };
        let made = |ordered| {
            let c = container(ordered);
            c.cost.set(args.cost());
            c
        };
        Ok(match role {
            Role::OrderedDict => V::Dict(made(true)),
            Role::Set => V::Set(made(false)),
            Role::RebuildTensor => self.tensor(name, items, at)?,
            Role::RebuildParameter => {
                let with_state = name.ends_with("_with_state");
                let ok = items.len() == 3 + with_state as usize
                    && matches!(items[1], V::Bool)
                    && hooks(&items[2])
                    && items.get(3).is_none_or(state);
                match items.first() {
                    Some(t @ V::Tensor(_)) if ok => t.clone(),
                    _ => bail!(
                        "byte {at}: {} takes a tensor, requires_grad and its hooks; this call \
                         has other arguments: refused",
                        quote(name)
                    ),
                }
            }
            Role::RebuildFromType => match (items.first(), items.get(1), items.get(2)) {
                (
                    Some(V::Global(Role::RebuildTensor, inner_name)),
                    Some(V::Global(Role::TensorType, _)),
                    Some(V::Tuple(inner)),
                ) if items.len() == 4 && state(&items[3]) => {
                    let inner_name = inner_name.clone();
                    self.tensor(&inner_name, &inner.items, at)?
                }
                _ => bail!(
                    "byte {at}: _rebuild_from_type_v2 takes a tensor rebuild, a tensor type, \
                     its arguments and a state; this call has other arguments: refused"
                ),
            },
            Role::TensorType | Role::StorageType | Role::Dtype => bail!(
                "byte {at}: REDUCE calls {}, which a state_dict only names: refused",
                quote(name)
            ),
        })
    }

    /// A tensor rebuilt by `name` from `(storage, offset, size, stride, …)`: the storage bytes
    /// its view reaches are what the reader reads for it, charged here and for each copy.
    fn tensor(&mut self, name: &str, args: &[V], at: u64) -> Result<V> {
        // The arguments after the stride, as torch.save writes them and torch.load takes them.
        let rest = &args[args.len().min(4)..];
        let ok = match name.rsplit('.').next() {
            Some("_rebuild_tensor") => rest.is_empty(),
            Some("_rebuild_tensor_v2") => {
                matches!(rest, [V::Bool, h] | [V::Bool, h, V::None | V::Dict(_)] if hooks(h))
            }
            _ => matches!(
                rest,
                [V::Bool, h, V::Global(Role::Dtype, _)]
                    | [V::Bool, h, V::Global(Role::Dtype, _), V::None | V::Dict(_)] if hooks(h)
            ),
        };
        if !ok {
            bail!(
                "byte {at}: {} with arguments after the stride that are not (requires_grad, \
                 hooks[, …]) as torch.save writes them: refused",
                quote(name)
            );
        }
        let (Some(V::Storage(element)), Some(_), Some(V::Tuple(size)), Some(V::Tuple(stride))) = (
            args.first(),
            args.get(1).and_then(V::non_negative),
            args.get(2),
            args.get(3),
        ) else {
            bail!(
                "byte {at}: a tensor rebuilt from other than (storage, offset, size, stride): \
                 refused"
            );
        };
        let rank = size.items.len();
        if rank > MAX_DIMS || stride.items.len() != rank {
            bail!(
                "byte {at}: a tensor of {rank} dimensions and {} strides (at most {MAX_DIMS}): \
                 refused",
                stride.items.len()
            );
        }
        let dims: Option<Vec<(u64, u64)>> = size
            .items
            .iter()
            .zip(&stride.items)
            .map(|(a, b)| Some((a.non_negative()?, b.non_negative()?)))
            .collect();
        let Some(dims) = dims else {
            bail!("byte {at}: a tensor whose size or stride is not a non-negative int: refused");
        };
        let reads = match dims.iter().any(|&(n, _)| n == 0) {
            true => 0,
            false => dims
                .iter()
                .fold(1u64, |e, &(n, s)| {
                    e.saturating_add((n - 1).saturating_mul(s))
                })
                .saturating_mul(*element),
        };
        let cost = Cost {
            values: 1 + 2 * rank as u64,
            reads,
        };
        self.charge(Cost { values: 0, reads }, at)?;
        Ok(V::Tensor(cost))
    }

    fn build(&mut self, inst: V, state: V, at: u64) -> Result<()> {
        if let (V::Object(class), V::Dict(d)) = (&inst, &state) {
            if d.tables.get() != 0 {
                self.module = Some((at, class.clone()));
            }
        }
        if self.forbidden.is_some() && (inst.forbidden().is_some() || state.forbidden().is_some()) {
            return Ok(());
        }
        match (&inst, &state) {
            (V::Dict(d), V::Dict(_)) if d.ordered => {
                d.cost.set(d.cost.get().add(state.cost()));
                Ok(())
            }
            (V::Tensor(_), _) => Ok(()),
            (V::Object(_), _) if self.forbidden.is_some() => Ok(()),
            _ => bail!(
                "byte {at}: BUILD of a {} with a {} (only an OrderedDict, a tensor or a \
                 parameter is built): refused",
                inst.type_name(),
                state.type_name()
            ),
        }
    }

    /// Checks a storage's persistent id; its element size.
    fn persistent_id(&mut self, pid: &V, at: u64) -> Result<u64> {
        let fields = match self.ids {
            Ids::None => bail!("byte {at}: a persistent id where this pickle has none: refused"),
            Ids::Zip => 5,
            Ids::Legacy => 6,
        };
        if self.forbidden.is_some() && pid.forbidden().is_some() {
            return Ok(1);
        }
        let V::Tuple(t) = pid else {
            bail!(
                "byte {at}: a persistent id that is a {}, not a storage's tuple",
                pid.type_name()
            );
        };
        let f = &t.items;
        let plain = |v: &V| matches!(v, V::Int(_) | V::None | V::Str(..) | V::Bool);
        let element = match f.get(1) {
            Some(V::Global(Role::StorageType, name)) => element_size(name),
            _ => None,
        };
        let ok = f.len() == fields
            && f[0].text() == Some("storage")
            && element.is_some()
            && matches!(f[2], V::Str(Some(_), _))
            && f[3].text().is_some_and(location)
            && f[4].non_negative().is_some()
            && f.get(5).is_none_or(|v| match v {
                V::None => true,
                V::Tuple(t) => t.items.iter().all(plain),
                _ => false,
            });
        if !ok {
            let what: Vec<&str> = f.iter().map(V::type_name).collect();
            bail!(
                "byte {at}: a persistent id ({}) that is not a storage's ('storage', storage \
                 type, key, location, size{}): refused",
                what.join(", "),
                if fields == 6 { ", view" } else { "" }
            );
        }
        let key = f[2].text().unwrap_or_default().to_string();
        let element = element.unwrap_or(1);
        let bytes = f[4].non_negative().unwrap_or(0).saturating_mul(element);
        if *self.storages.entry(key.clone()).or_insert(bytes) != bytes {
            bail!(
                "byte {at}: storage {} declared with two sizes: refused",
                quote(&key)
            );
        }
        Ok(element)
    }
}

/// Whether `v` is a tensor's backward hooks as torch.save writes them: an `OrderedDict`.
fn hooks(v: &V) -> bool {
    matches!(v, V::Dict(d) if d.ordered)
}

/// Whether `v` is an object's state as torch.save writes it: None, a dict, or a pair of them.
fn state(v: &V) -> bool {
    matches!(v, V::None | V::Dict(_) | V::Tuple(_))
}

/// The bytes of an element of a typed storage class.
fn element_size(class: &str) -> Option<u64> {
    Some(match class.strip_prefix("torch.")? {
        "DoubleStorage" | "LongStorage" => 8,
        "FloatStorage" | "IntStorage" => 4,
        "HalfStorage" | "BFloat16Storage" | "ShortStorage" => 2,
        "CharStorage" | "ByteStorage" | "BoolStorage" => 1,
        _ => return None,
    })
}

/// Whether `s` is a device torch.save records as a storage's location.
fn location(s: &str) -> bool {
    let (kind, index) = s.split_once(':').unwrap_or((s, "0"));
    matches!(kind, "cpu" | "cuda" | "mps" | "xpu" | "meta")
        && !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
}

fn describe(v: &V) -> String {
    match v {
        V::Global(_, n) | V::Forbidden(n) => quote(n),
        other => format!("a {}", other.type_name()),
    }
}

fn byte(op: u8) -> String {
    match op {
        0x21..=0x7e => format!("'{}'", op as char),
        _ => format!("0x{op:02x}"),
    }
}

fn op_name(op: u8) -> &'static str {
    match op {
        b'0' => "POP",
        b'1' => "POP_MARK",
        b'2' => "DUP",
        b'F' => "FLOAT",
        b'I' => "INT",
        b'L' => "LONG",
        b'P' => "PERSID",
        b'S' => "STRING",
        b'T' => "BINSTRING",
        b'V' => "UNICODE",
        b'd' => "DICT",
        b'g' => "GET",
        b'i' => "INST",
        b'l' => "LIST",
        b'o' => "OBJ",
        b'p' => "PUT",
        b'B' => "BINBYTES",
        b'C' => "SHORT_BINBYTES",
        0x82..=0x84 => "EXT",
        0x8b => "LONG4",
        0x8c => "SHORT_BINUNICODE",
        0x8d => "BINUNICODE8",
        0x8e => "BINBYTES8",
        0x90 => "ADDITEMS",
        0x91 => "FROZENSET",
        0x92 => "NEWOBJ_EX",
        0x93 => "STACK_GLOBAL",
        0x94 => "MEMOIZE",
        0x95 => "FRAME",
        0x96 => "BYTEARRAY8",
        0x97 => "NEXT_BUFFER",
        0x98 => "READONLY_BUFFER",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8], ids: Ids) -> Result<Scan> {
        scan(&mut &bytes[..], 0, bytes.len() as u64, ids)
    }

    fn err(bytes: &[u8]) -> String {
        format!("{:#}", run(bytes, Ids::Zip).unwrap_err())
    }

    const OD: &[u8] = b"ccollections\nOrderedDict\n)R";

    #[test]
    fn a_plain_dict_at_protocol_2_and_4_passes() {
        let mut p2 = b"\x80\x02".to_vec();
        p2.extend_from_slice(OD);
        p2.extend_from_slice(b"q\x00(X\x01\x00\x00\x00aK\x01u.");
        let s = run(&p2, Ids::None).unwrap();
        assert_eq!(
            (s.root, s.len),
            ("collections.OrderedDict", p2.len() as u64)
        );
        // Protocol 4: FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL.
        let p4 = b"\x80\x04\x95\x20\x00\x00\x00\x00\x00\x00\x00\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93\x94)R\x94.";
        assert_eq!(run(p4, Ids::None).unwrap().root, "collections.OrderedDict");
    }

    #[test]
    fn a_forbidden_global_is_refused_wherever_its_result_goes() {
        let call = b"cposix\nsystem\nX\x04\x00\x00\x00true\x85R";
        for (tail, what) in [(&b"0N."[..], "POP"), (b"q\x050N.", "memo"), (b".", "root")] {
            let mut p = b"\x80\x02".to_vec();
            p.extend_from_slice(call);
            p.extend_from_slice(tail);
            let e = err(&p);
            assert!(
                e.contains("byte 2: global posix.system is not one"),
                "{what}: {e}"
            );
        }
        // STACK_GLOBAL names the same global from strings.
        let p = b"\x80\x04\x8c\x05posix\x8c\x06system\x93N.";
        assert!(err(p).contains("global posix.system"), "{}", err(p));
    }

    #[test]
    fn a_pickled_module_is_named_as_one_with_how_to_make_a_state_dict() {
        let p = b"\x80\x02c__main__\nNet\n)\x81}(X\x0b\x00\x00\x00_parametersccollections\nOrderedDict\n)Rub.";
        let e = err(p);
        assert!(e.contains("nn.Module's tables"), "{e}");
        assert!(e.contains("BUILD at byte"), "{e}");
        assert!(e.contains(".state_dict()"), "{e}");
    }

    #[test]
    fn calls_builds_and_ids_outside_a_state_dict_are_refused() {
        let cases: [(&[u8], &str); 7] = [
            (
                b"\x80\x02ctorch\nFloatStorage\n)R.",
                "which a state_dict only names",
            ),
            (b"\x80\x02]N\x85b.", "BUILD of a list"),
            (b"\x80\x02N0N.", "opcode POP"),
            (b"\x80\x02(X\x03\x00\x00\x00cpuK\x01tQ.", "not a storage's"),
            (b"\x80\x02I1\n.", "opcode INT"),
            (b"\x80\x02h\x07.", "memo slot 7 was never stored"),
            (b"\x80\x02]", "the pickle ends"),
        ];
        for (p, want) in cases {
            let e = err(p);
            assert!(e.contains(want), "{want}: {e}");
        }
        let pid = b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ.";
        assert!(format!("{:#}", run(pid, Ids::None).unwrap_err()).contains("has none"));
        assert_eq!(run(pid, Ids::Zip).unwrap().storages["0"], 16);
    }

    /// `_rebuild_tensor_v2` of a 4-element FloatStorage `0` with `size` and `stride`.
    fn rebuild(size: &[u8], stride: &[u8]) -> Vec<u8> {
        let mut p = b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00".to_vec();
        p.extend_from_slice(size);
        p.extend_from_slice(stride);
        p.extend_from_slice(b"\x89ccollections\nOrderedDict\n)RtR");
        p
    }

    #[test]
    fn a_view_is_charged_every_byte_it_reaches_and_each_copy_again() {
        // Size (2,), stride (1000,): it reaches 1001 floats.
        let mut p = b"\x80\x02]q\x02(".to_vec();
        p.extend(rebuild(b"K\x02\x85", b"M\xe8\x03\x85"));
        p.extend_from_slice(b"q\x01h\x01eh\x02\x86.");
        let s = run(&p, Ids::Zip).unwrap();
        // Built once, fetched once into the list, the list of both fetched once.
        assert_eq!(s.reads, 4004 * 4, "{s:?}");
        // An empty tensor reads nothing; a negative stride is refused.
        let mut empty = b"\x80\x02".to_vec();
        empty.extend(rebuild(b"K\x00\x85", b"K\x01\x85"));
        empty.push(b'.');
        assert_eq!(run(&empty, Ids::Zip).unwrap().reads, 0);
        let mut negative = b"\x80\x02".to_vec();
        negative.extend(rebuild(b"K\x02\x85", b"J\xff\xff\xff\xff\x85"));
        negative.push(b'.');
        assert!(
            err(&negative).contains("not a non-negative int"),
            "{}",
            err(&negative)
        );
    }

    #[test]
    fn a_persistent_id_has_the_fields_of_its_format() {
        let zip = b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ.";
        assert!(run(zip, Ids::Zip).is_ok());
        let e = format!("{:#}", run(zip, Ids::Legacy).unwrap_err());
        assert!(e.contains("size, view"), "{e}");
        let bogus = b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x05\x00\x00\x00bogusK\x04tQ.";
        assert!(err(bogus).contains("not a storage's"));
        assert!(err(b"\x80\x02U\x01\xff.").contains("not UTF-8"));
    }

    #[test]
    fn work_is_bounded_whatever_the_pickle_declares() {
        let mut many = b"\x80\x02](".to_vec();
        many.extend(std::iter::repeat_n(b']', MAX_VALUES as usize + 1));
        many.extend_from_slice(b"e.");
        assert!(err(&many).contains("values in one pickle"));
        let deep: Vec<u8> = std::iter::repeat_n(b'(', MAX_MARKS + 1).collect();
        assert!(err(&deep).contains("MARKs nested deeper"));
        assert!(err(b"\x80\x02X\xff\xff\xff\x7f").contains("a string of 2147483647 bytes"));
        let mut deep = b"\x80\x02N".to_vec();
        deep.extend(std::iter::repeat_n(0x85, 100_000));
        deep.push(b'.');
        assert!(err(&deep).contains("tuples nested deeper than 64"));
        // Memo slots count: a million PUTs of one value.
        let mut puts = b"\x80\x02N".to_vec();
        for i in 0..MAX_VALUES as u32 + 1 {
            puts.push(b'r');
            puts.extend_from_slice(&i.to_le_bytes());
        }
        assert!(err(&puts).contains("values in one pickle"));
        // Tuples of tuples shared through the memo, 2^200 leaves: the reader would copy every
        // one; the scan counts them without walking them.
        let mut nested = b"\x80\x02Nq\x00".to_vec();
        for _ in 0..200 {
            nested.extend_from_slice(b"h\x00h\x00\x86q\x00");
        }
        nested.extend_from_slice(b"ccollections\nOrderedDict\nh\x00R.");
        assert!(
            err(&nested).contains("values in one pickle"),
            "{}",
            err(&nested)
        );
    }
}
