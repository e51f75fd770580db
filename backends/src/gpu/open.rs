//! Finding and opening a GPU: wgpu adapters (software ones only when asked for), CUDA only
//! when its driver library is present (cubecl's CUDA runtime panics on a worker thread without
//! it, and the caller would see only a closed channel).

use std::collections::HashMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

use super::{ops::Gpu, GpuBackend, Runtime};
use crate::device::{DeviceError, DeviceKind};

/// The GPU runtimes edgecut can launch its kernels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GpuKind {
    /// cubecl's wgpu runtime: Vulkan, Metal or DX12.
    Wgpu,
    /// cubecl's CUDA runtime: NVIDIA GPUs.
    Cuda,
}

impl fmt::Display for GpuKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GpuKind::Wgpu => "wgpu",
            GpuKind::Cuda => "cuda",
        })
    }
}

/// A runtime client, its adapter name, and whether the adapter is software and discrete.
type Opened = (Runtime, String, bool, bool);

/// What opening each runtime gave: a client is made once per process, and a runtime that is
/// missing is looked for once (`--device auto` asks on every session it opens).
type Tried = HashMap<(GpuKind, bool), Result<Opened, DeviceError>>;

fn opened() -> &'static Mutex<Tried> {
    static OPENED: std::sync::OnceLock<Mutex<Tried>> = std::sync::OnceLock::new();
    OPENED.get_or_init(Default::default)
}

/// The wgpu device is unavailable for `reason`.
#[cfg(feature = "wgpu")]
fn wgpu_unavailable(reason: String) -> DeviceError {
    DeviceError::Unavailable {
        device: DeviceKind::Wgpu,
        reason,
    }
}

/// The message of a caught panic.
fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

impl GpuBackend {
    /// Opens the GPU runtime `kind`. For wgpu, the best adapter
    /// (discrete, then integrated, then virtual) or, when `allow_software`, a software one such
    /// as lavapipe if nothing else is there. An error says what is missing.
    pub fn open(kind: GpuKind, allow_software: bool) -> Result<Self, DeviceError> {
        let key = (kind, allow_software);
        let mut cache = opened().lock().unwrap_or_else(|e| e.into_inner());
        let (rt, name, software, discrete) = cache
            .entry(key)
            .or_insert_with(|| match kind {
                GpuKind::Wgpu => open_wgpu(allow_software),
                GpuKind::Cuda => open_cuda(),
            })
            .clone()?;
        Ok(GpuBackend {
            rt,
            kind,
            name,
            software,
            discrete,
            transfers: Default::default(),
            max_buffer: None,
        })
    }
}

#[cfg(not(feature = "wgpu"))]
fn open_wgpu(_allow_software: bool) -> Result<Opened, DeviceError> {
    Err(DeviceError::NotBuilt {
        device: DeviceKind::Wgpu,
        feature: "wgpu",
    })
}

#[cfg(feature = "wgpu")]
fn open_wgpu(allow_software: bool) -> Result<Opened, DeviceError> {
    use cubecl::wgpu::{
        init_setup, AutoGraphicsApi, GraphicsApi, RuntimeOptions, WgpuDevice, WgpuRuntime,
    };
    use wgpu::DeviceType;

    let backend = AutoGraphicsApi::backend();
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: backend.into(),
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapters = cubecl::future::block_on(instance.enumerate_adapters(backend.into()));
    let infos: Vec<_> = adapters.iter().map(|a| a.get_info()).collect();
    // cubecl numbers adapters within their type, in enumeration order.
    let rank = |t: DeviceType| match t {
        DeviceType::DiscreteGpu => 0,
        DeviceType::IntegratedGpu => 1,
        DeviceType::VirtualGpu => 2,
        DeviceType::Other => 3,
        DeviceType::Cpu => 4,
    };
    let best = infos
        .iter()
        .filter(|i| allow_software || i.device_type != DeviceType::Cpu)
        .min_by_key(|i| rank(i.device_type));
    let Some(info) = best else {
        let seen: Vec<String> = infos.iter().map(|i| i.name.clone()).collect();
        let reason = if seen.is_empty() {
            format!(
                "no {backend:?} adapter found: install a GPU driver (on Debian, Mesa's \
                 mesa-vulkan-drivers and libvulkan1 packages give a CPU adapter)"
            )
        } else {
            format!(
                "no hardware {backend:?} adapter found, only software ones ({}); the wgpu \
                 device (not auto) runs on them",
                seen.join(", ")
            )
        };
        return Err(wgpu_unavailable(reason));
    };
    let device = match info.device_type {
        DeviceType::DiscreteGpu => WgpuDevice::DiscreteGpu(0),
        DeviceType::IntegratedGpu => WgpuDevice::IntegratedGpu(0),
        DeviceType::VirtualGpu => WgpuDevice::VirtualGpu(0),
        DeviceType::Cpu => WgpuDevice::Cpu,
        DeviceType::Other => WgpuDevice::DefaultDevice,
    };
    let software = info.device_type == DeviceType::Cpu;
    let discrete = info.device_type == DeviceType::DiscreteGpu;
    let client = catch_unwind(AssertUnwindSafe(|| {
        let setup = init_setup::<AutoGraphicsApi>(&device, RuntimeOptions::default());
        let name = setup.adapter.get_info().name;
        (<WgpuRuntime as cubecl::Runtime>::client(&device), name)
    }))
    .map_err(|p| {
        wgpu_unavailable(format!(
            "opening the adapter {} failed: {}",
            info.name,
            panic_text(p)
        ))
    })?;
    let shader = <WgpuRuntime as cubecl::Runtime>::name(&client.0);
    Ok((
        Runtime::Wgpu(Arc::new(Gpu { client: client.0 })),
        format!("{}, {shader}", client.1),
        software,
        discrete,
    ))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda() -> Result<Opened, DeviceError> {
    Err(DeviceError::NotBuilt {
        device: DeviceKind::Cuda,
        feature: "cuda",
    })
}

#[cfg(feature = "cuda")]
fn open_cuda() -> Result<Opened, DeviceError> {
    use cubecl::cuda::{CudaDevice, CudaRuntime};

    // SAFETY: only tries to load the driver library; no CUDA call is made through it.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(DeviceError::Unavailable {
            device: DeviceKind::Cuda,
            reason: "no CUDA driver found (libcuda could not be loaded): install the NVIDIA \
                     driver"
                .into(),
        });
    }
    let client = catch_unwind(|| {
        let device = CudaDevice::new(0);
        let client = <CudaRuntime as cubecl::Runtime>::client(&device);
        // A first allocation proves the context works (errors surface here, not mid-model).
        let _ = client.empty(4);
        client
    })
    .map_err(|p| DeviceError::Unavailable {
        device: DeviceKind::Cuda,
        reason: format!("opening CUDA device 0 failed: {}", panic_text(p)),
    })?;
    Ok((
        Runtime::Cuda(Arc::new(Gpu { client })),
        "cuda:0".into(),
        false,
        true,
    ))
}
