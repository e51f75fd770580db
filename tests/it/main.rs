//! edgecut's integration tests on real models, in one binary.

mod bert_fidelity;
mod block_types;
mod clip;
mod clip_hostile;
mod clip_split;
mod decoder_spec;
mod dequant;
mod gemma3;
mod gguf_compat;
mod gpu_clip;
mod gpu_llama;
mod gpu_minilm;
mod guided;
mod llama_convert;
mod llama_fidelity;
mod llama_generation;
mod modern_bert;
mod mutated_files;
mod requantize;
mod retrieval;
mod split;
mod split_decode;
mod spm_tokenizer;
mod stages;
mod tokenizer_fast;
mod turns;
