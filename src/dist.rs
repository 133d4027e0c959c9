//! Data-parallel training's process group: libtorch's own c10d (a `TCPStore` rendezvous and a
//! Gloo or NCCL process group, through src/shim/dist.cpp), as PyTorch's DistributedDataParallel
//! uses it: NCCL for CUDA devices when the build has it, Gloo otherwise ([`Backend`]).
//! Processes find each other as torchrun's do: `RANK`, `WORLD_SIZE`, `MASTER_ADDR`,
//! `MASTER_PORT` (and `LOCAL_RANK` for the GPU). Gradients are averaged in buckets of at most
//! [`BUCKET_BYTES`] (flattened, all-reduced, copied back), like DDP's gradient buckets.
//! Before they train, processes check through the store that they were started alike
//! ([`Store::agree`]), which c10d leaves to the user.

use std::ffi::{c_char, c_int, c_void, CString};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tch::Tensor;

extern "C" {
    fn inception_c10d_available() -> c_int;
    fn inception_nccl_available() -> c_int;
    fn inception_store_new(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        size: c_int,
        timeout_ms: c_int,
        err: *mut c_char,
        len: c_int,
    ) -> *mut c_void;
    fn inception_store_set(
        s: *mut c_void,
        key: *const c_char,
        data: *const u8,
        n: c_int,
        err: *mut c_char,
        len: c_int,
    ) -> c_int;
    fn inception_store_get(
        s: *mut c_void,
        key: *const c_char,
        out: *mut *mut u8,
        n: *mut c_int,
        err: *mut c_char,
        len: c_int,
    ) -> c_int;
    fn inception_store_bytes_free(p: *mut u8);
    fn inception_store_free(s: *mut c_void);
    fn inception_pg_new(
        s: *mut c_void,
        host: *const c_char,
        rank: c_int,
        size: c_int,
        timeout_ms: c_int,
        cuda_device: c_int,
        err: *mut c_char,
        len: c_int,
    ) -> *mut c_void;
    fn inception_pg_allreduce_sum(
        g: *mut c_void,
        ts: *const *mut c_void,
        n: c_int,
        err: *mut c_char,
        len: c_int,
    ) -> c_int;
    fn inception_pg_broadcast(
        g: *mut c_void,
        ts: *const *mut c_void,
        n: c_int,
        root: c_int,
        err: *mut c_char,
        len: c_int,
    ) -> c_int;
    fn inception_pg_shutdown(g: *mut c_void, err: *mut c_char, len: c_int) -> c_int;
    fn inception_pg_free(g: *mut c_void);
}

/// The largest gradient bucket all-reduced at once (DDP's default is 25 MiB).
pub const BUCKET_BYTES: usize = 25 << 20;

/// How long a collective (or the rendezvous) waits for the other processes before it fails.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Whether this build has c10d (gloo's headers were there when it was compiled).
pub fn available() -> bool {
    // SAFETY: a constant from the shim.
    unsafe { inception_c10d_available() != 0 }
}

/// Whether this build has c10d's NCCL backend (a CUDA libtorch, and gloo's, the CUDA and the
/// NCCL headers were there when it was compiled).
pub fn nccl_available() -> bool {
    // SAFETY: a constant from the shim.
    unsafe { inception_nccl_available() != 0 }
}

/// The c10d backend that carries the collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Gloo,
    /// NCCL on this process's CUDA device.
    Nccl {
        device: usize,
    },
}

impl Backend {
    /// The variable that overrides the choice, as `init_process_group(backend=…)` does.
    pub const ENV: &'static str = "INCEPTION_DIST_BACKEND";

    /// NCCL for a CUDA device (PyTorch's choice for GPUs) when this build has it and each of the
    /// `processes_here` (the processes on this machine) has a GPU of its own, since NCCL
    /// refuses two processes on one GPU; Gloo otherwise (it all-reduces CUDA tensors too,
    /// through host memory). `INCEPTION_DIST_BACKEND=gloo|nccl` overrides it; NCCL where it
    /// cannot work is an error. Every process of a job must come to the same choice (it
    /// depends on the build, the device kind, the machine's count of processes and GPUs and
    /// the variable), which [`Group::join`] checks. With
    /// the choice comes why NCCL was passed over on a CUDA device, if it was.
    pub fn choose(device: tch::Device, processes_here: usize) -> Result<(Backend, Option<String>)> {
        let forced = std::env::var(Self::ENV).ok();
        Self::choose_with(device, processes_here, forced)
    }

    /// [`Backend::choose`] with the variable's value given (`forced`), not read.
    pub fn choose_with(
        device: tch::Device,
        processes_here: usize,
        forced: Option<String>,
    ) -> Result<(Backend, Option<String>)> {
        let gpus = tch::Cuda::device_count().max(0) as usize;
        let nccl_fits = |index: usize| -> Result<Backend> {
            if !nccl_available() {
                bail!(
                    "this build has no NCCL: the CUDA and NCCL headers were missing when it was \
                     compiled (scripts/deps.sh puts them in .deps/cuda; then rebuild)"
                );
            }
            if processes_here > gpus {
                bail!(
                    "{processes_here} processes on this machine share {gpus} GPU(s), and NCCL \
                     needs one GPU per process (gloo shares)"
                );
            }
            Ok(Backend::Nccl { device: index })
        };
        let forced = forced.filter(|v| !v.is_empty());
        match (forced.as_deref(), device) {
            (None, tch::Device::Cuda(i)) => Ok(match nccl_fits(i) {
                Ok(b) => (b, None),
                Err(e) => (Backend::Gloo, Some(format!("{e:#}"))),
            }),
            (None, _) => Ok((Backend::Gloo, None)),
            (Some("gloo"), d) => Ok((
                Backend::Gloo,
                d.is_cuda().then(|| format!("{}=gloo", Self::ENV)),
            )),
            (Some("nccl"), tch::Device::Cuda(i)) => Ok((
                nccl_fits(i).with_context(|| format!("{}=nccl", Self::ENV))?,
                None,
            )),
            (Some("nccl"), _) => bail!(
                "{}=nccl: NCCL needs CUDA devices, and this process computes on the CPU (gloo \
                 works on both)",
                Self::ENV
            ),
            (Some(other), _) => bail!("{}={other:?}: expected gloo or nccl", Self::ENV),
        }
    }

    /// As c10d names it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "Gloo",
            Backend::Nccl { .. } => "NCCL",
        }
    }
}

/// An error unless this build has c10d, saying how to get it.
pub fn require() -> Result<()> {
    if !available() {
        bail!(
            "this build has no multi-process training: gloo's headers were missing when it was \
             compiled (scripts/deps.sh puts them in .deps/gloo; then rebuild)"
        );
    }
    Ok(())
}

/// Where this process stands among the training processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    pub rank: usize,
    pub size: usize,
    /// Rank 0's address and port (the rendezvous).
    pub addr: String,
    pub port: u16,
    /// The processes on this machine (`LOCAL_WORLD_SIZE`; 1 when unset, as when each machine
    /// runs one).
    pub local_size: usize,
}

impl World {
    /// Whether the process `world` places (none: a process alone) is rank 0, the one that
    /// writes and speaks.
    pub fn leads(world: Option<&World>) -> bool {
        world.is_none_or(|w| w.rank == 0)
    }

    /// From torchrun's variables; `None` when `WORLD_SIZE` is unset or 1.
    pub fn from_env() -> Result<Option<World>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`World::from_env`] with the variables looked up by `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<World>> {
        let Some(size) = var("WORLD_SIZE") else {
            return Ok(None);
        };
        let size: usize = size
            .parse()
            .with_context(|| format!("WORLD_SIZE={size:?} is not a number"))?;
        if size <= 1 {
            return Ok(None);
        }
        let rank: usize = var("RANK")
            .context("WORLD_SIZE is set but RANK is not")?
            .parse()
            .context("RANK is not a number")?;
        if rank >= size {
            bail!("RANK={rank} is not below WORLD_SIZE={size}");
        }
        let addr = var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into());
        let local_size = match var("LOCAL_WORLD_SIZE") {
            Some(n) => n
                .parse()
                .ok()
                .filter(|&n: &usize| (1..=size).contains(&n))
                .with_context(|| {
                    format!("LOCAL_WORLD_SIZE={n:?} is not a number from 1 to WORLD_SIZE={size}")
                })?,
            None => 1,
        };
        let port = match var("MASTER_PORT") {
            Some(p) => p
                .parse()
                .with_context(|| format!("MASTER_PORT={p:?} is not a port"))?,
            None => 29500,
        };
        Ok(Some(World {
            rank,
            size,
            addr,
            port,
            local_size,
        }))
    }
}

/// The rendezvous: c10d's `TCPStore`, served by rank 0's process, a key-value store every
/// process reaches.
#[derive(Debug)]
pub struct Store {
    ptr: *mut c_void,
    pub rank: usize,
    pub size: usize,
}

// SAFETY: as for `Group`: c10d's TCPStore takes calls from any thread.
unsafe impl Send for Store {}
unsafe impl Sync for Store {}

impl Store {
    /// Connects to the store of the processes `world` describes (rank 0 starts it and waits,
    /// up to `timeout`, until every process has connected); gets wait up to `timeout` too.
    pub fn connect(world: &World, timeout: Duration) -> Result<Store> {
        require()?;
        let host = CString::new(world.addr.as_str()).context("MASTER_ADDR holds a NUL")?;
        let mut ptr = std::ptr::null_mut();
        checked("the rendezvous store", |err, len| {
            // SAFETY: `host` outlives the call; the shim copies what it keeps.
            ptr = unsafe {
                inception_store_new(
                    host.as_ptr(),
                    world.port as c_int,
                    world.rank as c_int,
                    world.size as c_int,
                    millis(timeout),
                    err,
                    len,
                )
            };
            if ptr.is_null() {
                -1
            } else {
                0
            }
        })?;
        Ok(Store {
            ptr,
            rank: world.rank,
            size: world.size,
        })
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        let k = CString::new(key).context("a store key holds a NUL")?;
        let n = c_int::try_from(value.len()).context("a store value over 2 GiB")?;
        checked(&format!("setting {key}"), |err, len| {
            // SAFETY: `k` and `value` outlive the call, which copies them.
            unsafe { inception_store_set(self.ptr, k.as_ptr(), value.as_ptr(), n, err, len) }
        })
    }

    /// The value of `key`, waiting until some process sets it (up to the store's timeout).
    pub fn get(&self, key: &str) -> Result<Vec<u8>> {
        let k = CString::new(key).context("a store key holds a NUL")?;
        let (mut out, mut n) = (std::ptr::null_mut(), 0 as c_int);
        checked(&format!("waiting for {key}"), |err, len| {
            // SAFETY: `k` outlives the call; on success the shim hands over `n` bytes at `out`.
            unsafe { inception_store_get(self.ptr, k.as_ptr(), &mut out, &mut n, err, len) }
        })?;
        // SAFETY: `out` holds `n` bytes from the shim's malloc, given back right after copying.
        let bytes = unsafe { std::slice::from_raw_parts(out, n as usize).to_vec() };
        unsafe { inception_store_bytes_free(out) };
        Ok(bytes)
    }

    /// Every process publishes `mine` (lines saying how it was started, under `topic`) and
    /// compares it with every other's; if any two differ, every process fails at once, naming
    /// the first line where they do. Rank 0, whose process serves the store, returns only once
    /// every process has read.
    pub fn agree(&self, topic: &str, mine: &str) -> Result<()> {
        let key = |what: &str, rank: usize| format!("inception/{topic}/{what}/{rank}");
        self.set(&key("says", self.rank), mine.as_bytes())?;
        let mut mismatch = None;
        for r in (0..self.size).filter(|&r| r != self.rank) {
            let theirs = String::from_utf8_lossy(&self.get(&key("says", r))?).into_owned();
            if mismatch.is_none() && theirs != mine {
                mismatch = Some(match r < self.rank {
                    true => disagreement((r, &theirs), (self.rank, mine)),
                    false => disagreement((self.rank, mine), (r, &theirs)),
                });
            }
        }
        self.set(&key("read", self.rank), b"1")?;
        if self.rank == 0 {
            for r in 1..self.size {
                self.get(&key("read", r))?;
            }
        }
        match mismatch {
            Some(m) => bail!(
                "the processes were not started alike: {m} (every process must run the same \
                 build with the same flags, config, data and INCEPTION_DIST_BACKEND)"
            ),
            None => Ok(()),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `inception_store_new` and is freed once.
        unsafe { inception_store_free(self.ptr) }
    }
}

/// The first line where two ranks' descriptions differ, each cut to 200 characters.
fn disagreement((a, va): (usize, &str), (b, vb): (usize, &str)) -> String {
    let (mut la, mut lb) = (va.lines(), vb.lines());
    let (x, y) = loop {
        match (la.next(), lb.next()) {
            (x, y) if x != y => break (x, y),
            (None, None) => break (None, None),
            _ => {}
        }
    };
    let show = |l: Option<&str>| match l {
        None => "(nothing)".to_string(),
        Some(l) if l.chars().count() > 200 => {
            format!("{}…", l.chars().take(200).collect::<String>())
        }
        Some(l) => l.to_string(),
    };
    format!("rank {a} has {} where rank {b} has {}", show(x), show(y))
}

fn millis(d: Duration) -> c_int {
    d.as_millis().min(i32::MAX as u128) as c_int
}

/// A c10d process group. Over Gloo a collective returns once every process has joined it;
/// over NCCL once the GPU's current stream waits for it (a peer that never joins then ends
/// this process through NCCL's watchdog after the timeout, not through an error here).
#[derive(Debug)]
pub struct Group {
    ptr: *mut c_void,
    pub rank: usize,
    pub size: usize,
    pub backend: Backend,
    /// The rendezvous store, for later checks ([`Store::agree`]).
    pub store: Store,
}

// SAFETY: the pointer only moves with the `Group` that owns it, and c10d's process groups take
// calls from any thread (they queue their work under a mutex); collectives must
// still come in the same order on every process, which the training loop's single thread does.
unsafe impl Send for Group {}
unsafe impl Sync for Group {}

/// Calls a shim function with an error buffer, turning -1 into the message.
fn checked(what: &str, f: impl FnOnce(*mut c_char, c_int) -> c_int) -> Result<()> {
    let mut buf = vec![0 as c_char; 2048];
    if f(buf.as_mut_ptr(), buf.len() as c_int) == 0 {
        return Ok(());
    }
    // SAFETY: the shim wrote a NUL-terminated message into the buffer.
    let msg = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    bail!("{what}: {}", msg.to_string_lossy())
}

impl Group {
    /// Joins the group `world` describes over `backend`; waits up to `timeout` for the others,
    /// there and in every collective. With NCCL a collective that hangs past it ends the
    /// process (NCCL's watchdog), and a collective only orders the GPU's work, so waiting
    /// costs the host nothing.
    ///
    /// Before the group is made, the processes compare the backend and their `agreement`
    /// (lines saying how each was started: the settings that must match) with
    /// [`Store::agree`]: started apart, they would otherwise hang in the group's rendezvous
    /// or train apart.
    pub fn join(
        world: &World,
        backend: Backend,
        timeout: Duration,
        agreement: &str,
    ) -> Result<Group> {
        let what = format!(
            "rank {} of {}: joining the {} process group at {}:{}",
            world.rank,
            world.size,
            backend.name(),
            world.addr,
            world.port
        );
        let store = Store::connect(world, timeout).with_context(|| what.clone())?;
        store
            .agree("start", &format!("backend={}\n{agreement}", backend.name()))
            .with_context(|| what.clone())?;
        let host = CString::new(world.addr.as_str()).context("MASTER_ADDR holds a NUL")?;
        let mut ptr = std::ptr::null_mut();
        checked(&what, |err, len| {
            // SAFETY: `host` outlives the call, and the store its handle; the shim keeps its
            // own reference to the store.
            ptr = unsafe {
                inception_pg_new(
                    store.ptr,
                    host.as_ptr(),
                    world.rank as c_int,
                    world.size as c_int,
                    millis(timeout),
                    match backend {
                        Backend::Gloo => -1,
                        Backend::Nccl { device } => device as c_int,
                    },
                    err,
                    len,
                )
            };
            if ptr.is_null() {
                -1
            } else {
                0
            }
        })?;
        Ok(Group {
            ptr,
            rank: world.rank,
            size: world.size,
            backend,
            store,
        })
    }

    /// Sums each tensor in place across the processes (in buckets, as [`Group::bucketed`]).
    pub fn all_reduce_sum(&self, tensors: &[Tensor]) -> Result<()> {
        self.bucketed(tensors, |flat| self.all_reduce_one(flat), Ok)
    }

    /// Copies rank `root`'s tensors into every process's, in place.
    pub fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<()> {
        self.bucketed(tensors, |flat| self.broadcast_one(flat, root), Ok)
    }

    /// Replaces each defined gradient of `params` by its mean over the processes.
    pub fn average_gradients(&self, params: &[Tensor]) -> Result<()> {
        let grads: Vec<Tensor> = params
            .iter()
            .map(|p| p.grad())
            .filter(|g| g.defined())
            .collect();
        let n = self.size as f64;
        self.bucketed(
            &grads,
            |flat| self.all_reduce_one(flat),
            |t| Ok(t.f_div_scalar(n)?),
        )
    }

    /// Runs `collective` on flattened copies of `tensors`, in buckets of consecutive tensors
    /// of one kind and device of at most [`BUCKET_BYTES`] (a larger tensor is a bucket of its
    /// own), like DDP's gradient buckets, and copies `then(result)` back into them.
    fn bucketed(
        &self,
        tensors: &[Tensor],
        collective: impl Fn(&Tensor) -> Result<()>,
        then: impl Fn(Tensor) -> Result<Tensor>,
    ) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let mut start = 0;
        while start < tensors.len() {
            let (kind, device) = (tensors[start].kind(), tensors[start].device());
            let bytes_of = |t: &Tensor| t.numel() * t.kind().elt_size_in_bytes();
            let (mut end, mut bytes) = (start, 0);
            while end < tensors.len()
                && tensors[end].kind() == kind
                && tensors[end].device() == device
                && (end == start || bytes + bytes_of(&tensors[end]) <= BUCKET_BYTES)
            {
                bytes += bytes_of(&tensors[end]);
                end += 1;
            }
            let bucket = &tensors[start..end];
            let flat = Tensor::f_cat(
                &bucket
                    .iter()
                    .map(|t| t.f_reshape([-1]))
                    .collect::<Result<Vec<_>, _>>()?,
                0,
            )?;
            collective(&flat)?;
            let flat = then(flat)?;
            let mut offset = 0;
            for t in bucket {
                let n = t.numel() as i64;
                let mut t = t.shallow_clone();
                t.f_copy_(&flat.f_narrow(0, offset, n)?.f_view(t.size().as_slice())?)?;
                offset += n;
            }
            start = end;
        }
        Ok(())
    }

    /// Ends the group as `destroy_process_group()` does, after the last collective of a
    /// successful run (a group only dropped, after a failure, is torn down without waiting
    /// for peers that may never come).
    pub fn shutdown(&self) -> Result<()> {
        checked(
            &format!("rank {}: shutting the process group down", self.rank),
            |err, len| {
                // SAFETY: `ptr` is live until drop.
                unsafe { inception_pg_shutdown(self.ptr, err, len) }
            },
        )
    }

    fn all_reduce_one(&self, t: &Tensor) -> Result<()> {
        let ptrs = [t.as_ptr() as *mut c_void];
        checked(&format!("rank {}: all-reduce", self.rank), |err, len| {
            // SAFETY: the tensor outlives the call, which blocks until it is done (NCCL: until
            // the current stream waits for it; the work holds the tensor until then).
            unsafe { inception_pg_allreduce_sum(self.ptr, ptrs.as_ptr(), 1, err, len) }
        })
    }

    fn broadcast_one(&self, t: &Tensor, root: usize) -> Result<()> {
        let ptrs = [t.as_ptr() as *mut c_void];
        checked(&format!("rank {}: broadcast", self.rank), |err, len| {
            // SAFETY: as in `all_reduce_one`.
            unsafe { inception_pg_broadcast(self.ptr, ptrs.as_ptr(), 1, root as c_int, err, len) }
        })
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `inception_pg_new` and is freed once.
        unsafe { inception_pg_free(self.ptr) }
    }
}

/// `inception train --nproc N`: runs this same command in N processes on this machine, as
/// torchrun does (RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, WORLD_SIZE, MASTER_ADDR=127.0.0.1, a
/// free MASTER_PORT and
/// OMP_NUM_THREADS = cores / N unless set),
/// rank 0 speaking on stdout and every rank's errors on stderr. When one process fails the
/// others are stopped, and the error says which rank failed and how.
pub fn launch(n: usize) -> Result<()> {
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().context("finding this program to start its processes")?;
    let mut args: Vec<String> = vec![];
    let mut given = std::env::args().skip(1);
    while let Some(a) = given.next() {
        if a == "--nproc" {
            given.next();
        } else if !a.starts_with("--nproc=") {
            args.push(a);
        }
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port for the rendezvous")?
        .port();
    // Each process computes on its share of the cores (torchrun's OMP_NUM_THREADS), unless set.
    let threads = std::env::var("OMP_NUM_THREADS").unwrap_or_else(|_| {
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        (cores / n).max(1).to_string()
    });
    let mut children = Vec::with_capacity(n);
    for rank in 0..n {
        let child = Command::new(&exe)
            .args(&args)
            .env("OMP_NUM_THREADS", &threads)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("LOCAL_WORLD_SIZE", n.to_string())
            .env("WORLD_SIZE", n.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .stdout(if rank == 0 {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .with_context(|| format!("starting process {rank} of {n}"))?;
        children.push(Some(child));
    }
    let mut failure: Option<String> = None;
    while children.iter().any(Option::is_some) {
        for (rank, slot) in children.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            let Some(status) = child.try_wait().context("waiting for a training process")? else {
                continue;
            };
            *slot = None;
            if !status.success() && failure.is_none() {
                failure = Some(match status.code() {
                    Some(c) => format!("process {rank} of {n} exited with code {c}"),
                    None => format!("process {rank} of {n} was killed by a signal"),
                });
            }
        }
        if failure.is_some() {
            for child in children.iter_mut().flatten() {
                let _ = child.kill();
                let _ = child.wait();
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    match failure {
        Some(f) => bail!("{f}; the other processes were stopped"),
        None => Ok(()),
    }
}
