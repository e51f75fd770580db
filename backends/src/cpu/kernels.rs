//! The kernel table: the scalar reference fills every slot, and each SIMD instruction set found
//! on this CPU at run time plugs its kernels into the slots it has (never `target-cpu=native`,
//! which breaks older CPUs), as tract's `Ops` table is filled by its `plug_*` functions.
//! Every op picks its kernel from the table alone: no op looks at a set's name or detects CPU
//! features to choose, so `EDGECUT_KERNELS=scalar` runs the scalar reference everywhere.
//! `EDGECUT_KERNELS=scalar|avx2|avx512|avx512vnni|neon|dotprod|i8mm` forces a set, for tests
//! and benchmarks.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::scalar;

/// Dot product of a Q8_0 weight row with a quantized activation row (see
/// [`scalar::dot_q8_0`]).
pub type DotQ8_0 = fn(w: &[u8], xq: &[i8], xd: &[f32]) -> f32;

/// Four dot products at once: four Q8_0 weight rows with one quantized activation row. Four
/// independent accumulators hide the latency one chain has, and the activation block is loaded
/// once for four outputs.
pub type Dot4Q8_0 = fn(w: [&[u8]; 4], xq: &[i8], xd: &[f32]) -> [f32; 4];

/// Eight dot products at once: four Q8_0 weight rows with two quantized activation rows
/// (`[activation row][weight row]`), for matrix instructions that take two rows of each
/// (Arm's `smmla`). Sets without such an instruction leave the slot empty and the products run
/// as two [`Dot4Q8_0`]s.
pub type Dot4x2Q8_0 = fn(w: [&[u8]; 4], xq: [&[i8]; 2], xd: [&[f32]; 2]) -> [[f32; 4]; 2];

/// One instruction set's kernels: a function for each dot-product slot, and for each other
/// ISA-specific slot whether this set fills it with its SIMD kernel (`false`: the scalar
/// reference runs). The slots are crate-private, set only by the detection that proves the
/// instructions exist, so a table cannot claim what the CPU lacks.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// The instruction set, as `EDGECUT_KERNELS` names it (for display; nothing branches on it).
    pub name: &'static str,
    /// Q8_0 x int8 dot product.
    pub dot_q8_0: DotQ8_0,
    /// Four Q8_0 x int8 dot products sharing the activation row.
    pub dot4_q8_0: Dot4Q8_0,
    /// Four Q8_0 rows against two activation rows, where a matrix instruction does it in one
    /// pass (`None`: two [`Kernels::dot4_q8_0`] calls).
    pub dot4x2_q8_0: Option<Dot4x2Q8_0>,
    /// Autovectorised loops (norms, softmax, SwiGLU, the portable attention, f32 products) in
    /// their AVX-512 build (`multiversion!`).
    pub(crate) wide: bool,
    /// The same loops in their AVX2 build, where `wide` is off.
    pub(crate) wide_avx2: bool,
    /// Activation quantization (int8 blocks, outlier columns) with AVX-512.
    pub(crate) act_quant: bool,
    /// GELU and quick GELU with AVX-512.
    pub(crate) gelu: bool,
    /// The Q8_0 x int8 GEMM on weights repacked for AVX-512 VNNI.
    pub(crate) gemm_vnni: bool,
    /// Quantized weights x f32 activations: rows decoded and multiplied with AVX-512.
    pub(crate) f32_linear: bool,
    /// Quantized weights x f32 activations: rows decoded and multiplied with AVX2 and FMA
    /// (where the AVX-512 kernels are off).
    pub(crate) f32_linear_avx2: bool,
    /// Quantized weights x f32 activations for few rows: activations as int16, AVX2 `vpmaddwd`
    /// products (where the VNNI kernel is off).
    pub(crate) gemv_i16_avx2: bool,
    /// Quantized weights x f32 activations for few rows: activations as int16, VNNI products.
    pub(crate) gemv_i16: bool,
    /// Quantized weights x f32 activations for many rows (prompts): activations as int16,
    /// weights decoded to int16 panels, VNNI products.
    pub(crate) gemm_i16: bool,
    /// Encoder attention on heads of 32 with AVX-512, f32 products.
    pub(crate) attention_f32: bool,
    /// Encoder attention products in bf16 (AVX-512 BF16), where f32 is not asked for.
    pub(crate) attention_bf16: bool,
    /// Decoder attention over the f16 KV cache with AVX2 and F16C (where the AVX-512 kernel is
    /// off).
    pub(crate) attention_f16_avx2: bool,
    /// Decoder attention over the f16 KV cache with AVX-512 (F16C conversions).
    pub(crate) attention_f16: bool,
    /// Quantized weights x f32 activations over Q5_0, Q5_1 and the K-quants on aarch64:
    /// units decoded with NEON, activations as int16, `smlal` products.
    pub(crate) units_neon: bool,
    /// The same products with the dot-product extension (`sdot` on int8 halves of the int16
    /// activations: the NEON kernel's bits).
    pub(crate) units_sdot: bool,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// The scalar reference set, available everywhere: every slot holds the scalar kernel.
pub const SCALAR: Kernels = Kernels {
    name: "scalar",
    dot_q8_0: scalar::dot_q8_0,
    dot4_q8_0: scalar::dot4_q8_0,
    dot4x2_q8_0: None,
    wide: false,
    wide_avx2: false,
    act_quant: false,
    gelu: false,
    gemm_vnni: false,
    f32_linear: false,
    f32_linear_avx2: false,
    gemv_i16: false,
    gemm_i16: false,
    gemv_i16_avx2: false,
    attention_f32: false,
    attention_bf16: false,
    attention_f16: false,
    attention_f16_avx2: false,
    units_neon: false,
    units_sdot: false,
};

impl Kernels {
    /// Whether any slot holds a SIMD kernel (every set but the scalar reference).
    pub fn is_simd(&self) -> bool {
        let k = self;
        !std::ptr::fn_addr_eq(k.dot_q8_0, SCALAR.dot_q8_0)
            || k.dot4x2_q8_0.is_some()
            || k.wide
            || k.wide_avx2
            || k.act_quant
            || k.gelu
            || k.gemm_vnni
            || k.f32_linear
            || k.f32_linear_avx2
            || k.gemv_i16
            || k.gemm_i16
            || k.gemv_i16_avx2
            || k.attention_f32
            || k.attention_bf16
            || k.attention_f16
            || k.attention_f16_avx2
            || k.units_neon
            || k.units_sdot
    }
}

/// Every set this CPU can run, best first; the scalar reference is always last.
pub fn available() -> Vec<Kernels> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    v.extend(super::x86::available());
    #[cfg(target_arch = "aarch64")]
    v.extend(super::neon::available());
    v.push(SCALAR);
    v
}

/// Why `EDGECUT_KERNELS` was not followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EDGECUT_KERNELS={wanted:?} is not available on this CPU (available: {available})")]
pub struct UnknownKernels {
    /// The set asked for.
    pub wanted: String,
    /// The sets this CPU has, comma-separated.
    pub available: String,
}

/// The set `EDGECUT_KERNELS` names, the best one when it is unset, or an error when it names
/// a set this CPU does not have (for the caller to report; a library prints nothing).
pub fn from_env() -> Result<Kernels, UnknownKernels> {
    let all = available();
    match std::env::var("EDGECUT_KERNELS") {
        Ok(want) if !want.is_empty() => {
            all.iter()
                .find(|k| k.name == want)
                .copied()
                .ok_or_else(|| UnknownKernels {
                    wanted: want,
                    available: all.iter().map(|k| k.name).collect::<Vec<_>>().join(", "),
                })
        }
        _ => Ok(all[0]),
    }
}

/// The set to use: `EDGECUT_KERNELS` if it names an available set, else the best one
/// ([`from_env`] says when the variable was not followed).
pub fn best() -> Kernels {
    from_env().unwrap_or_else(|_| available()[0])
}

/// Held by the unit tests that read [`simd_calls`], so that no other test's kernels run while
/// they count.
#[cfg(all(test, target_arch = "aarch64"))]
pub(crate) static COUNT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Whether SIMD kernel calls are counted (off unless a diagnostic asks: some are made per row,
/// and one shared counter written from every thread would cost the hot paths).
static COUNTING: AtomicBool = AtomicBool::new(false);
/// Calls of SIMD kernels (any slot but the dot products) while counting.
static SIMD_CALLS: AtomicU64 = AtomicU64::new(0);

/// Counts one call of a SIMD kernel picked from a table, when counting is on (a load of a flag
/// no thread writes otherwise).
#[inline]
pub(crate) fn note_simd() {
    if COUNTING.load(Ordering::Relaxed) {
        SIMD_CALLS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Turns the count of [`simd_calls`] on or off (process-wide; off by default).
pub fn count_simd_calls(on: bool) {
    COUNTING.store(on, Ordering::Relaxed);
}

/// How many times an op has run a SIMD kernel from a table slot other than the dot products
/// (which are function pointers the caller can compare) while [`count_simd_calls`] was on: a
/// diagnostic, with which a test shows that the scalar set takes no SIMD path.
pub fn simd_calls() -> u64 {
    SIMD_CALLS.load(Ordering::Relaxed)
}
