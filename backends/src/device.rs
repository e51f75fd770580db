//! The device a model runs on, chosen at run time.

use std::fmt;
use std::str::FromStr;

use crate::cpu::CpuBackend;

/// Where to run: parsed from `--device cpu|auto` (GPU kinds join when their backend lands).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// The CPU backend.
    Cpu,
    /// The best available device; today that is the CPU.
    #[default]
    Auto,
}

impl FromStr for DeviceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(DeviceKind::Cpu),
            "auto" => Ok(DeviceKind::Auto),
            "wgpu" | "cuda" | "vulkan" | "metal" => Err(format!(
                "device {s:?} is not available in this build: edgecut was built without GPU \
                 support (use cpu or auto)"
            )),
            _ => Err(format!("unknown device {s:?} (use cpu or auto)")),
        }
    }
}

/// A device ready to run ops. Enum dispatch: no backend generic leaks past this crate.
#[derive(Clone, Debug)]
pub enum Device {
    /// The CPU, with its SIMD kernels picked for this machine.
    Cpu(CpuBackend),
}

impl Device {
    /// Opens the device `kind` with `threads` worker threads (0: one per core this process may
    /// use).
    pub fn open(kind: DeviceKind, threads: usize) -> Result<Device, String> {
        match kind {
            DeviceKind::Cpu | DeviceKind::Auto => Ok(Device::Cpu(CpuBackend::new(threads))),
        }
    }

    /// The CPU device with default threads.
    pub fn cpu() -> Device {
        Device::Cpu(CpuBackend::new(0))
    }

    /// The CPU backend, for the ops.
    pub fn backend(&self) -> &CpuBackend {
        match self {
            Device::Cpu(c) => c,
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu(c) => write!(
                f,
                "cpu ({} kernels, {} thread{})",
                c.kernels().name,
                c.threads(),
                if c.threads() == 1 { "" } else { "s" }
            ),
        }
    }
}
