//! Q8_0 weights repacked at load for the AVX-512 VNNI GEMM.
//!
//! Layout: the `n` output rows are grouped in panels of 32 (the last padded with zeros). For each
//! panel and each 32-value block of `k`, 1024 bytes hold the int8 weights ordered
//! `[group of 4 k-values][32 columns][4 bytes]`, so one 64-byte load gives 16 columns' next four
//! weights, ready for `vpdpbusd`. Beside them, per panel and block: the 32 columns' f32 scales,
//! and `-128 * sum(w)` per column, the value each block's int32 accumulator starts from, which
//! removes the +128 offset that turns int8 activations into the unsigned bytes `vpdpbusd`
//! multiplies (no subtraction after the products).
//!
//! Cost: the packed copy takes 32/34 of the Q8_0 bytes plus 8 bytes of scales and sums per 32
//! weights (about 1.2x the Q8_0 size in all), and the mapped Q8_0 pages are no longer read.

use std::sync::OnceLock;

use crate::quant::{Q8_0_BYTES, QK};

/// Columns per panel.
pub const PANEL: usize = 32;
/// Bytes of weights per panel and block.
pub const PANEL_BLOCK_BYTES: usize = PANEL * QK;

/// A Q8_0 matrix `[n, k]` in the VNNI GEMM layout.
#[derive(Debug)]
pub struct PackedQ8_0 {
    /// Output features.
    pub n: usize,
    /// Input features.
    pub k: usize,
    /// Panels of [`PANEL`] output rows (read by the x86-64 GEMM only).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) panels: usize,
    pub(crate) data: Vec<u8>,
    pub(crate) scales: Vec<f32>,
    /// `-128 * sum(w)` per panel, block and column: the int32 accumulators' start.
    pub(crate) sums: Vec<i32>,
    /// Columns of `W` dequantized to f32 on first use as an outlier column (`n` values each).
    /// A model's outlier channels recur from input to input, so few are ever made.
    columns: Vec<OnceLock<Box<[f32]>>>,
}

impl PackedQ8_0 {
    /// Packs Q8_0 blocks (`n` rows of `k / 32` blocks).
    pub fn pack(w: &[u8], n: usize, k: usize) -> PackedQ8_0 {
        assert!(
            k.is_multiple_of(QK) && w.len() == n * k / QK * Q8_0_BYTES,
            "pack: bad Q8_0 shape"
        );
        let kb = k / QK;
        let panels = n.div_ceil(PANEL);
        let mut data = vec![0u8; panels * kb * PANEL_BLOCK_BYTES];
        let mut scales = vec![0f32; panels * kb * PANEL];
        let mut sums = vec![0i32; panels * kb * PANEL];
        for j in 0..n {
            let (p, col) = (j / PANEL, j % PANEL);
            for b in 0..kb {
                let blk = &w[(j * kb + b) * Q8_0_BYTES..][..Q8_0_BYTES];
                let at = (p * kb + b) * PANEL + col;
                scales[at] = half::f16::from_le_bytes([blk[0], blk[1]]).to_f32();
                let mut sum = 0i32;
                let base = (p * kb + b) * PANEL_BLOCK_BYTES;
                for (t, &q) in blk[2..].iter().enumerate() {
                    let (g, lane) = (t / 4, t % 4);
                    data[base + g * PANEL * 4 + col * 4 + lane] = q;
                    sum += q as i8 as i32;
                }
                sums[at] = -128 * sum;
            }
        }
        let columns = (0..k).map(|_| OnceLock::new()).collect();
        PackedQ8_0 {
            n,
            k,
            panels,
            data,
            scales,
            sums,
            columns,
        }
    }

    /// Weight `W[j, c]`, dequantized (read from the packed copy, which the GEMM keeps in cache).
    #[inline]
    pub fn weight(&self, j: usize, c: usize) -> f32 {
        let kb = self.k / QK;
        let (p, col, b, t) = (j / PANEL, j % PANEL, c / QK, c % QK);
        let at = p * kb + b;
        let q = self.data[at * PANEL_BLOCK_BYTES + (t / 4) * PANEL * 4 + col * 4 + t % 4] as i8;
        q as f32 * self.scales[at * PANEL + col]
    }

    /// Column `c` of `W` in f32 (`n` values), made on first use and kept.
    pub fn column(&self, c: usize) -> &[f32] {
        self.columns[c].get_or_init(|| (0..self.n).map(|j| self.weight(j, c)).collect())
    }

    /// Bytes this copy takes.
    pub fn bytes(&self) -> usize {
        let cols: usize = self
            .columns
            .iter()
            .filter_map(|c| c.get())
            .map(|c| c.len() * 4)
            .sum();
        self.data.len() + 4 * (self.scales.len() + self.sums.len()) + cols
    }
}
