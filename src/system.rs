//! What this installation has: the libtorch it runs on (version, file, build), the CPU's
//! threads and bf16 support, and the CUDA devices — as the NVIDIA driver sees them (name,
//! memory, compute capability, through the driver API in `libcuda.so.1`, loaded at run time so
//! that a machine without the driver runs too) and as libtorch sees them. `inception doctor`
//! prints it.

use std::ffi::{c_char, c_int, c_long, CStr};

use serde::Serialize;
use tch::{Cuda, Device};

extern "C" {
    fn inception_torch_info(what: c_int, buf: *mut c_char, len: c_int) -> c_int;
    fn inception_cuda_version(what: c_int) -> c_long;
}

/// A string from the shim's `inception_torch_info`.
fn torch_info(what: c_int) -> Option<String> {
    let mut buf = vec![0 as c_char; 1 << 16];
    // SAFETY: the shim writes at most `len` bytes, NUL-terminated, into `buf`.
    let n = unsafe { inception_torch_info(what, buf.as_mut_ptr(), buf.len() as c_int) };
    if n < 0 {
        return None;
    }
    // SAFETY: NUL-terminated by the shim.
    let s = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Some(s.to_string_lossy().into_owned())
}

/// The version of libtorch this build runs on (`unknown` when the shim cannot say).
pub fn libtorch_version() -> String {
    torch_info(0).unwrap_or_else(|| "unknown".into())
}

/// The git commit the binary was built from (`None` outside a git checkout).
pub fn git_commit() -> Option<&'static str> {
    option_env!("INCEPTION_GIT_COMMIT").filter(|c| !c.is_empty())
}

/// The libtorch this process runs on.
#[derive(Debug, Clone, Serialize)]
pub struct Libtorch {
    /// The version of the headers the tool was built with (`TORCH_VERSION`).
    pub version: String,
    /// The `libtorch_cpu.so` this process has loaded, from /proc/self/maps.
    pub path: Option<String>,
    /// CPU kernels libtorch dispatches to (`DEFAULT`, `AVX2`, `AVX512`).
    pub cpu_capability: Option<String>,
    /// CUDA runtime and cuDNN versions libtorch was built with, when its CUDA library is loaded.
    pub cuda_runtime: Option<String>,
    pub cudnn: Option<String>,
}

/// A CUDA device as the driver reports it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CudaDevice {
    pub index: usize,
    pub name: String,
    pub memory_bytes: u64,
    /// Compute capability, major and minor.
    pub capability: (i32, i32),
}

/// The NVIDIA driver, when there is one.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Driver {
    /// CUDA version the driver supports, e.g. "12.8".
    pub cuda_version: String,
    pub devices: Vec<CudaDevice>,
}

/// Everything `doctor` reports besides its smoke passes.
#[derive(Debug, Clone, Serialize)]
pub struct System {
    pub tool_version: &'static str,
    pub libtorch: Libtorch,
    /// libtorch's intra-op and inter-op threads.
    pub threads: i32,
    pub interop_threads: i32,
    /// AVX512-BF16 or AMX-BF16 in /proc/cpuinfo.
    pub cpu_bf16: bool,
    /// The NVIDIA driver, if there is one.
    pub driver: Option<Driver>,
    /// Why there is no driver.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_driver: Option<String>,
    /// CUDA devices libtorch can use.
    pub torch_cuda_devices: i64,
    pub cudnn_available: bool,
    /// The c10d backends this build has for multi-process training.
    pub distributed: Distributed,
}

/// c10d backends compiled into this build (src/shim/dist.cpp).
#[derive(Debug, Clone, Serialize)]
pub struct Distributed {
    pub gloo: bool,
    pub nccl: bool,
}

impl System {
    pub fn probe() -> System {
        let (driver, no_driver) = match driver() {
            Ok(d) => (Some(d), None),
            Err(e) => (None, Some(e)),
        };
        System {
            tool_version: env!("CARGO_PKG_VERSION"),
            libtorch: Libtorch {
                version: torch_info(0).unwrap_or_else(|| "unknown".into()),
                path: loaded_library("libtorch_cpu.so"),
                cpu_capability: torch_info(2),
                cuda_runtime: cuda_version(0),
                cudnn: cuda_version(1),
            },
            threads: tch::get_num_threads(),
            interop_threads: tch::get_num_interop_threads(),
            cpu_bf16: cpu_has_bf16(),
            driver,
            no_driver,
            torch_cuda_devices: Cuda::device_count(),
            cudnn_available: Cuda::cudnn_is_available(),
            distributed: Distributed {
                gloo: crate::dist::available(),
                nccl: crate::dist::nccl_available(),
            },
        }
    }

    /// The devices a smoke pass runs on: the CPU and every CUDA device libtorch sees.
    pub fn devices(&self) -> Vec<Device> {
        let mut d = vec![Device::Cpu];
        d.extend((0..self.torch_cuda_devices as usize).map(Device::Cuda));
        d
    }
}

/// Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16), from /proc/cpuinfo.
pub fn cpu_has_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| {
            s.lines().find(|l| l.starts_with("flags")).is_some_and(|l| {
                l.split_whitespace()
                    .any(|f| f == "avx512_bf16" || f == "amx_bf16")
            })
        })
        .unwrap_or(false)
}

/// The compute capability of CUDA device `index` as the NVIDIA driver reports it (asked once
/// per process).
pub fn cuda_capability(index: usize) -> Option<(i32, i32)> {
    static DRIVER: std::sync::OnceLock<Option<Driver>> = std::sync::OnceLock::new();
    DRIVER
        .get_or_init(|| driver().ok())
        .as_ref()?
        .devices
        .iter()
        .find(|d| d.index == index)
        .map(|d| d.capability)
}

/// libtorch's version encoding (major*1000 + minor*10 for CUDA 12+, major*10000 + minor*100
/// for cuDNN 9) as "major.minor".
fn cuda_version(what: c_int) -> Option<String> {
    // SAFETY: a plain query; the shim catches libtorch's exceptions.
    let v = unsafe { inception_cuda_version(what) } as i64;
    if v <= 0 {
        return None;
    }
    Some(if what == 0 {
        format!("{}.{}", v / 1000, (v % 1000) / 10)
    } else if v >= 10000 {
        format!("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100)
    } else {
        format!("{}.{}.{}", v / 1000, (v % 1000) / 100, v % 100)
    })
}

/// The path of a shared library this process has mapped whose file name starts with `name`.
pub fn loaded_library(name: &str) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|file| file.starts_with(name))
        })
        .map(str::to_string)
}

type CuInit = unsafe extern "C" fn(u32) -> c_int;
type CuDriverGetVersion = unsafe extern "C" fn(*mut c_int) -> c_int;
type CuDeviceGetCount = unsafe extern "C" fn(*mut c_int) -> c_int;
type CuDeviceGetName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
type CuDeviceTotalMem = unsafe extern "C" fn(*mut usize, c_int) -> c_int;
type CuDeviceGetAttribute = unsafe extern "C" fn(*mut c_int, c_int, c_int) -> c_int;

const CAPABILITY_MAJOR: c_int = 75;
const CAPABILITY_MINOR: c_int = 76;

/// The devices the NVIDIA driver reports, through its C API (cuInit, cuDeviceGet…).
fn driver() -> Result<Driver, String> {
    // SAFETY: loading the NVIDIA driver library runs its initialisers, as libtorch's CUDA
    // library does when it loads it.
    let lib = unsafe { libloading::Library::new("libcuda.so.1") }
        .map_err(|_| "no NVIDIA driver (libcuda.so.1 not found)".to_string())?;
    let sym = |name: &[u8]| -> Result<*const (), String> {
        // SAFETY: the symbol is only called with the signature of the CUDA driver API.
        unsafe { lib.get::<*const ()>(name) }
            .map(|s| *s)
            .map_err(|e| format!("libcuda.so.1 lacks {}: {e}", String::from_utf8_lossy(name)))
    };
    // SAFETY: these are the driver API's documented C signatures; `lib` outlives every call.
    unsafe {
        let init: CuInit = std::mem::transmute(sym(b"cuInit\0")?);
        let version: CuDriverGetVersion = std::mem::transmute(sym(b"cuDriverGetVersion\0")?);
        let count: CuDeviceGetCount = std::mem::transmute(sym(b"cuDeviceGetCount\0")?);
        let name: CuDeviceGetName = std::mem::transmute(sym(b"cuDeviceGetName\0")?);
        let memory: CuDeviceTotalMem = std::mem::transmute(sym(b"cuDeviceTotalMem_v2\0")?);
        let attribute: CuDeviceGetAttribute = std::mem::transmute(sym(b"cuDeviceGetAttribute\0")?);
        let status = init(0);
        if status != 0 {
            return Err(format!(
                "the NVIDIA driver failed to start (cuInit error {status})"
            ));
        }
        let mut v = 0;
        version(&mut v);
        let mut n = 0;
        count(&mut n);
        let mut devices = vec![];
        for i in 0..n {
            let mut buf = [0 as c_char; 256];
            name(buf.as_mut_ptr(), buf.len() as c_int, i);
            let mut bytes = 0usize;
            memory(&mut bytes, i);
            let (mut major, mut minor) = (0, 0);
            attribute(&mut major, CAPABILITY_MAJOR, i);
            attribute(&mut minor, CAPABILITY_MINOR, i);
            devices.push(CudaDevice {
                index: i as usize,
                name: CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned(),
                memory_bytes: bytes as u64,
                capability: (major, minor),
            });
        }
        Ok(Driver {
            cuda_version: format!("{}.{}", v / 1000, (v % 1000) / 10),
            devices,
        })
    }
}
