//! Data-parallel training's process group: libtorch's own c10d (a `TCPStore` rendezvous and a
//! Gloo process group, through src/shim/dist.cpp), as PyTorch's DistributedDataParallel uses it.
//! Processes find each other as torchrun's do: `RANK`, `WORLD_SIZE`, `MASTER_ADDR`,
//! `MASTER_PORT` (and `LOCAL_RANK` for the GPU). Gradients are averaged in buckets of at most
//! [`BUCKET_BYTES`] (flattened, all-reduced, copied back), like DDP's gradient buckets.

use std::ffi::{c_char, c_int, c_void, CString};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tch::Tensor;

extern "C" {
    fn inception_c10d_available() -> c_int;
    fn inception_pg_new(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        size: c_int,
        timeout_ms: c_int,
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

/// Where this process stands among the training processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct World {
    pub rank: usize,
    pub size: usize,
    /// Rank 0's address and port (the rendezvous).
    pub addr: String,
    pub port: u16,
}

impl World {
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
        }))
    }
}

/// A c10d process group; collectives block until every process has joined them.
#[derive(Debug)]
pub struct Group {
    ptr: *mut c_void,
    pub rank: usize,
    pub size: usize,
}

// SAFETY: the c10d process group is used from one thread at a time (the training loop); the
// pointer only moves with the `Group` that owns it.
unsafe impl Send for Group {}

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
    /// Joins the group `world` describes; waits up to `timeout` for the others, there and in
    /// every collective.
    pub fn join(world: &World, timeout: Duration) -> Result<Group> {
        if !available() {
            bail!(
                "this build has no multi-process training: gloo's headers were missing when \
                 it was compiled (scripts/deps.sh puts them in .deps/gloo; then rebuild)"
            );
        }
        let host = CString::new(world.addr.as_str()).context("MASTER_ADDR holds a NUL")?;
        let mut ptr = std::ptr::null_mut();
        let ms = timeout.as_millis().min(i32::MAX as u128) as c_int;
        checked(
            &format!(
                "rank {} of {}: joining the process group at {}:{}",
                world.rank, world.size, world.addr, world.port
            ),
            |err, len| {
                // SAFETY: `host` outlives the call; the shim copies what it keeps.
                ptr = unsafe {
                    inception_pg_new(
                        host.as_ptr(),
                        world.port as c_int,
                        world.rank as c_int,
                        world.size as c_int,
                        ms,
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
        })
    }

    /// Sums each tensor in place across the processes.
    pub fn all_reduce_sum(&self, tensors: &[Tensor]) -> Result<()> {
        let ptrs: Vec<*mut c_void> = tensors.iter().map(|t| t.as_ptr() as *mut c_void).collect();
        checked(&format!("rank {}: all-reduce", self.rank), |err, len| {
            // SAFETY: the tensors outlive the call, which blocks until it is done.
            unsafe {
                inception_pg_allreduce_sum(self.ptr, ptrs.as_ptr(), ptrs.len() as c_int, err, len)
            }
        })
    }

    /// Copies rank `root`'s tensors into every process's, in place.
    pub fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<()> {
        let ptrs: Vec<*mut c_void> = tensors.iter().map(|t| t.as_ptr() as *mut c_void).collect();
        checked(&format!("rank {}: broadcast", self.rank), |err, len| {
            // SAFETY: as in `all_reduce_sum`.
            unsafe {
                inception_pg_broadcast(
                    self.ptr,
                    ptrs.as_ptr(),
                    ptrs.len() as c_int,
                    root as c_int,
                    err,
                    len,
                )
            }
        })
    }

    /// Replaces each defined gradient of `params` by its mean over the processes, in buckets
    /// of at most [`BUCKET_BYTES`] (one all-reduce each, on a flattened copy).
    pub fn average_gradients(&self, params: &[Tensor]) -> Result<()> {
        let _guard = tch::no_grad_guard();
        let grads: Vec<Tensor> = params
            .iter()
            .map(|p| p.grad())
            .filter(|g| g.defined())
            .collect();
        let mut start = 0;
        while start < grads.len() {
            let (kind, device) = (grads[start].kind(), grads[start].device());
            let mut end = start;
            let mut bytes = 0;
            while end < grads.len()
                && grads[end].kind() == kind
                && grads[end].device() == device
                && (end == start || bytes + grads[end].numel() * 4 <= BUCKET_BYTES)
            {
                bytes += grads[end].numel() * 4;
                end += 1;
            }
            let bucket = &grads[start..end];
            let flat = Tensor::f_cat(
                &bucket
                    .iter()
                    .map(|g| g.f_reshape([-1]))
                    .collect::<Result<Vec<_>, _>>()?,
                0,
            )?;
            self.all_reduce_sum(std::slice::from_ref(&flat))?;
            let flat = flat.f_div_scalar(self.size as f64)?;
            let mut offset = 0;
            for g in bucket {
                let n = g.numel() as i64;
                let mut g = g.shallow_clone();
                g.f_copy_(&flat.f_narrow(0, offset, n)?.f_view(g.size().as_slice())?)?;
                offset += n;
            }
            start = end;
        }
        Ok(())
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `inception_pg_new` and is freed once.
        unsafe { inception_pg_free(self.ptr) }
    }
}
