//! edgecut backends: element types, quantization formats, and the devices that run the op
//! contract the models call.
//!
//! Design choices, briefly:
//! 1. Element types follow ggml's numbering ([`DType`]) so a GGUF tensor's type maps straight onto
//!    a kernel without translation tables.
//! 2. A weight format is one row of a table ([`dtype`]'s `BlockFormat`: block length and
//!    bytes, the scalar `decode_row` reference in [`quant`], which backends multiply it); the
//!    files' types (Q8_0, Q4_0/1, Q5_0/1, the K-quants, IQ4, F16/BF16/F32) run from their
//!    stored blocks, and a backend's `supports` refuses what it cannot run before a model
//!    loads.
//! 3. The op contract is the [`Backend`] trait (tensors, prepared matrices, norms, rotary
//!    embedding, KV caches and attention; [`ops`] holds its plain-data descriptions); models
//!    are written once over it, and the [`Device`] enum picks the backend at run time, so no
//!    backend generic leaks out of this crate.
//! 4. Every SIMD kernel has a scalar reference beside it ([`cpu::scalar`]) and is tested against
//!    it; the set is picked at run time ([`cpu::kernels`]).

pub mod backend;
pub mod cpu;
pub mod device;
pub mod dtype;
pub mod encoder;
pub mod encoder_rotary;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub mod gpu;
pub mod kv_shape;
pub mod ops;
pub mod quant;

pub use backend::{
    Act, AttentionPrecision, Backend, KvShape, KvType, Op, PreparedMatrix, SharedStorage, Storage,
    WeightSource,
};
pub use device::{Device, DeviceError, DeviceKind, Instantiate};
pub use dtype::DType;

/// The CPU kernel set `EDGECUT_KERNELS` asks for (the best one when unset), by name, or why it
/// cannot be had (see [`cpu::kernels::from_env`]).
pub fn cpu_kernels_from_env() -> Result<&'static str, UnknownKernels> {
    cpu::kernels::from_env().map(|k| k.name)
}

pub use cpu::kernels::UnknownKernels;
