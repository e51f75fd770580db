//! The kernel table: the scalar reference fills it, and each SIMD instruction set found on this
//! CPU at run time replaces entries (never `target-cpu=native`, which breaks older CPUs).
//! `EDGECUT_KERNELS=scalar|avx2|avx512vnni|neon` forces a set, for tests and benchmarks.

use super::scalar;

/// Dot product of a Q8_0 weight row with a quantized activation row (see
/// [`scalar::dot_q8_0`]).
pub type DotQ8_0 = fn(w: &[u8], xq: &[i8], xd: &[f32]) -> f32;

/// Four dot products at once: four Q8_0 weight rows with one quantized activation row. Four
/// independent accumulators hide the latency one chain has, and the activation block is loaded
/// once for four outputs.
pub type Dot4Q8_0 = fn(w: [&[u8]; 4], xq: &[i8], xd: &[f32]) -> [f32; 4];

/// One instruction set's kernels.
#[derive(Clone, Copy)]
pub struct Kernels {
    /// The instruction set, as `EDGECUT_KERNELS` names it.
    pub name: &'static str,
    /// Q8_0 x int8 dot product.
    pub dot_q8_0: DotQ8_0,
    /// Four Q8_0 x int8 dot products sharing the activation row.
    pub dot4_q8_0: Dot4Q8_0,
}

impl std::fmt::Debug for Kernels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// The scalar reference set, available everywhere.
pub const SCALAR: Kernels = Kernels {
    name: "scalar",
    dot_q8_0: scalar::dot_q8_0,
    dot4_q8_0: scalar::dot4_q8_0,
};

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

/// The set to use: `EDGECUT_KERNELS` if it names an available set, else the best one.
pub fn best() -> Kernels {
    let all = available();
    if let Ok(want) = std::env::var("EDGECUT_KERNELS") {
        if let Some(k) = all.iter().find(|k| k.name == want) {
            return *k;
        }
        eprintln!(
            "edgecut: EDGECUT_KERNELS={want:?} is not available on this CPU; using {}",
            all[0].name
        );
    }
    all[0]
}
