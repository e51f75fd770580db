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
