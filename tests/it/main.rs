//! edgecut's integration tests on real models, in one binary.

mod gguf_compat;
mod mutated_files;
mod requantize;
