//! edgecut backends: the element types and quantization formats that weights come in, and the
//! kernels the models call.
//!
//! Design choices, briefly:
//! 1. Element types follow ggml's numbering ([`DType`]) so a GGUF tensor's type maps straight onto a
//!    kernel without translation tables.
//! 2. Q8_0 (32 int8 values + one f16 scale) is the working weight format; other quantized types are
//!    decoded or re-quantized on load ([`quant`]).
//! 3. Every SIMD kernel has a scalar reference beside it and is tested against it.

pub mod dtype;
pub mod quant;

pub use dtype::DType;
