//! Data-parallel training's process group: libtorch's own c10d (a `TCPStore` rendezvous and a
//! Gloo or NCCL process group, through src/shim/dist.cpp), as PyTorch's DistributedDataParallel
//! uses it: NCCL for CUDA devices when the build has it, Gloo otherwise ([`Backend`]).
//! Processes find each other as torchrun's do: `RANK`, `WORLD_SIZE`, `MASTER_ADDR`,
//! `MASTER_PORT` (and `LOCAL_RANK` for the GPU). Gradients are averaged in buckets of at most
//! [`BUCKET_BYTES`] (flattened, all-reduced, copied back), like DDP's gradient buckets.

use std::ffi::{c_char, c_int, c_void, CString};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tch::Tensor;

extern "C" {
    fn inception_c10d_available() -> c_int;
    fn inception_nccl_available() -> c_int;
    fn inception_pg_new(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        size: c_int,
        timeout_ms: c_int,
        cuda_device: c_int,
        agreement: *const c_char,
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
        let forced = std::env::var(Self::ENV).ok().filter(|v| !v.is_empty());
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
        let var = |name: &str| std::env::var(name).ok();
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

/// A c10d process group. Over Gloo a collective returns once every process has joined it;
/// over NCCL once the GPU's current stream waits for it (a peer that never joins then ends
/// this process through NCCL's watchdog after the timeout, not through an error here).
#[derive(Debug)]
pub struct Group {
    ptr: *mut c_void,
    pub rank: usize,
    pub size: usize,
    pub backend: Backend,
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
    /// Before the group is made, every process compares its `agreement` (lines saying how it
    /// was started: the build, the backend, the settings that must match) with every other's,
    /// and all fail at once, naming the first line that differs, if any two disagree: started
    /// apart, processes would otherwise hang in the group's rendezvous or train apart.
    pub fn join(
        world: &World,
        backend: Backend,
        timeout: Duration,
        agreement: &str,
    ) -> Result<Group> {
        require()?;
        let host = CString::new(world.addr.as_str()).context("MASTER_ADDR holds a NUL")?;
        let agreement = CString::new(format!("backend={}\n{agreement}", backend.name()))
            .context("the processes' agreement holds a NUL")?;
        let mut ptr = std::ptr::null_mut();
        let ms = timeout.as_millis().min(i32::MAX as u128) as c_int;
        checked(
            &format!(
                "rank {} of {}: joining the {} process group at {}:{}",
                world.rank,
                world.size,
                backend.name(),
                world.addr,
                world.port
            ),
            |err, len| {
                // SAFETY: `host` and `agreement` outlive the call; the shim copies what it keeps.
                ptr = unsafe {
                    inception_pg_new(
                        host.as_ptr(),
                        world.port as c_int,
                        world.rank as c_int,
                        world.size as c_int,
                        ms,
                        match backend {
                            Backend::Gloo => -1,
                            Backend::Nccl { device } => device as c_int,
                        },
                        agreement.as_ptr(),
                        err,
                        len,
                    )
                };
                if ptr.is_null() {
                    -1
                } else {
                    0
                }
            },
        )?;
        Ok(Group {
            ptr,
            rank: world.rank,
            size: world.size,
            backend,
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
