//! The device a model runs on, chosen at run time.

use std::fmt;
use std::str::FromStr;

use crate::backend::Backend;
use crate::cpu::CpuBackend;

/// Where to run: parsed from `--device cpu|wgpu|cuda|auto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// The CPU backend.
    Cpu,
    /// The GPU backend on wgpu (Vulkan, Metal, DX12): the best adapter wgpu finds, a software
    /// one such as lavapipe included.
    Wgpu,
    /// The GPU backend on CUDA.
    Cuda,
    /// CUDA if present, else a discrete GPU through wgpu, else the CPU (never a software
    /// adapter). Only GPU backends this build has are tried.
    #[default]
    Auto,
}

impl FromStr for DeviceKind {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<Self, DeviceError> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceKind::Cpu),
            "wgpu" | "vulkan" | "metal" | "dx12" => Ok(DeviceKind::Wgpu),
            "cuda" => Ok(DeviceKind::Cuda),
            "auto" => Ok(DeviceKind::Auto),
            _ => Err(DeviceError::Unknown(s.to_string())),
        }
    }
}

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Wgpu => "wgpu",
            DeviceKind::Cuda => "cuda",
            DeviceKind::Auto => "auto",
        })
    }
}

/// Why a device cannot be had. Messages say what is missing, in terms of the library (no
/// command-line flags: the caller may be an app).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// This build has no backend for the device.
    #[error("device {device} is not available in this build (edgecut was built without its `{feature}` feature)")]
    NotBuilt {
        /// The device asked for.
        device: DeviceKind,
        /// The cargo feature that adds it.
        feature: &'static str,
    },
    /// The device is absent or failed to open.
    #[error("device {device} is unavailable: {reason}")]
    Unavailable {
        /// The device asked for.
        device: DeviceKind,
        /// What is missing or what failed.
        reason: String,
    },
    /// A name that is no device.
    #[error("unknown device {0:?} (cpu, wgpu, cuda or auto)")]
    Unknown(String),
}

/// A device ready to run ops. Enum dispatch: no backend generic leaks past this crate.
#[derive(Clone, Debug)]
pub enum Device {
    /// The CPU, with its SIMD kernels picked for this machine.
    Cpu(CpuBackend),
    /// A GPU (with a CPU backend for host-side work).
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    Gpu(crate::gpu::GpuBackend),
}

/// The error for a GPU kind this build does not have.
#[cfg_attr(all(feature = "wgpu", feature = "cuda"), allow(dead_code))]
fn not_built(device: DeviceKind, feature: &'static str) -> DeviceError {
    DeviceError::NotBuilt { device, feature }
}

/// Something built for one backend: a model monomorphised over the backend it runs on. The
/// [`Device`] enum calls [`Instantiate::on`] with its backend: the one place a device is
/// matched on.
pub trait Instantiate {
    /// What is built.
    type Output;
    /// Builds it on `backend`.
    fn on<B: Backend>(self, backend: &B) -> Self::Output;
}

impl Device {
    /// Builds `what` for this device's backend.
    pub fn instantiate<I: Instantiate>(&self, what: I) -> I::Output {
        match self {
            Device::Cpu(c) => what.on(c),
            #[cfg(any(feature = "wgpu", feature = "cuda"))]
            Device::Gpu(g) => what.on(g),
        }
    }

    /// Opens the device `kind`; a CPU with `threads` threads (0: one per core this process may
    /// use). A GPU that is asked for and missing is an error saying what is missing.
    pub fn open(kind: DeviceKind, threads: usize) -> Result<Device, DeviceError> {
        // The CPU's pool is made only when the CPU is the device.
        let cpu = || CpuBackend::new(threads);
        match kind {
            DeviceKind::Cpu => Ok(Device::Cpu(cpu())),
            DeviceKind::Wgpu => {
                #[cfg(feature = "wgpu")]
                return crate::gpu::GpuBackend::open(crate::gpu::GpuKind::Wgpu, true)
                    .map(Device::Gpu);
                #[cfg(not(feature = "wgpu"))]
                Err(not_built(DeviceKind::Wgpu, "wgpu"))
            }
            DeviceKind::Cuda => {
                #[cfg(feature = "cuda")]
                return crate::gpu::GpuBackend::open(crate::gpu::GpuKind::Cuda, false)
                    .map(Device::Gpu);
                #[cfg(not(feature = "cuda"))]
                Err(not_built(DeviceKind::Cuda, "cuda"))
            }
            DeviceKind::Auto => {
                #[cfg(feature = "cuda")]
                if let Ok(g) = crate::gpu::GpuBackend::open(crate::gpu::GpuKind::Cuda, false) {
                    return Ok(Device::Gpu(g));
                }
                #[cfg(feature = "wgpu")]
                if let Ok(g) = crate::gpu::GpuBackend::open(crate::gpu::GpuKind::Wgpu, false) {
                    if g.is_discrete() {
                        return Ok(Device::Gpu(g));
                    }
                }
                Ok(Device::Cpu(cpu()))
            }
        }
    }

    /// This device with its CPU backend computing attention at precision `p` (a GPU device's
    /// encoder blocks run on the GPU, in f32, either way).
    pub fn with_attention(self, p: crate::AttentionPrecision) -> Device {
        match self {
            Device::Cpu(c) => Device::Cpu(c.with_attention(p)),
            #[cfg(any(feature = "wgpu", feature = "cuda"))]
            other => other,
        }
    }

    /// The CPU device with default threads.
    pub fn cpu() -> Device {
        Device::Cpu(CpuBackend::new(0))
    }

    /// The GPU, when this is one.
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    pub fn gpu(&self) -> Option<&crate::gpu::GpuBackend> {
        match self {
            Device::Gpu(g) => Some(g),
            Device::Cpu(_) => None,
        }
    }

    /// Host-device transfers its backend has made so far ([`Backend::transfers`]).
    pub fn transfers(&self) -> u64 {
        match self {
            Device::Cpu(c) => c.transfers(),
            #[cfg(any(feature = "wgpu", feature = "cuda"))]
            Device::Gpu(g) => g.transfers(),
        }
    }

    /// Whether this is a GPU.
    pub fn is_gpu(&self) -> bool {
        !matches!(self, Device::Cpu(_))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu(c) => f.write_str(&c.describe()),
            #[cfg(any(feature = "wgpu", feature = "cuda"))]
            Device::Gpu(g) => f.write_str(&g.describe()),
        }
    }
}
