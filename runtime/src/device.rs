//! A device shared by models: one thread pool (or one GPU client) for an embedder and an LLM
//! in the same app, instead of a pool of all cores each.

use edgecut_backends::{Device, DeviceKind};

use crate::Result;

/// A device opened once and handed to several models through their options
/// ([`crate::SessionOptions::with_shared_device`], [`crate::LlmOptions::with_shared_device`]):
/// they then share its thread pool. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SharedDevice {
    pub(crate) device: Device,
}

impl SharedDevice {
    /// Opens `kind` with `threads` threads (0: one per core this process may use).
    pub fn open(kind: DeviceKind, threads: usize) -> Result<SharedDevice> {
        Ok(SharedDevice {
            device: Device::open(kind, threads)?,
        })
    }

    /// The device in words.
    pub fn describe(&self) -> String {
        self.device.to_string()
    }

    /// Whether this is a GPU.
    pub fn is_gpu(&self) -> bool {
        self.device.is_gpu()
    }
}

/// The device a model runs on: the shared one when the application handed one over, else
/// `kind` opened with `threads` threads. `Auto` is decided here, once for the house: an
/// encoder takes CUDA, then a discrete GPU, else the CPU (batches of texts gain on a GPU); a
/// decoder stays on the CPU, which decodes one conversation faster than the GPU kernels
/// measured so far (docs/benchmarks-gpu.md). A GPU asked for by name and missing is an error.
pub(crate) fn open_for(
    model: edgecut_models::Kind,
    kind: DeviceKind,
    threads: usize,
    shared: Option<&SharedDevice>,
) -> Result<Device> {
    if let Some(d) = shared {
        return Ok(d.device.clone());
    }
    let kind = match (model, kind) {
        (edgecut_models::Kind::Decoder, DeviceKind::Auto) => DeviceKind::Cpu,
        (_, kind) => kind,
    };
    Ok(Device::open(kind, threads)?)
}
