//! Helpers shared by the backend test files.

/// A small deterministic generator (xorshift64*), so failures reproduce.
pub struct Rng(pub u64);

// Each test file uses part of it.
#[allow(dead_code)]
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    pub fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * scale).collect()
    }
}

/// Random valid blocks of `dtype` for `values` weights: small positive f16 scales (and
/// minimums of either sign), every other byte random.
// Used by the files that multiply stored blocks.
#[allow(dead_code)]
pub fn random_blocks(rng: &mut Rng, dtype: edgecut_backends::DType, values: usize) -> Vec<u8> {
    use edgecut_backends::DType;
    // Where each type keeps its f16 scale and minimum.
    let (scale, min): (usize, Option<usize>) = match dtype {
        DType::Q4_1 | DType::Q5_1 | DType::Q4_K | DType::Q5_K => (0, Some(2)),
        DType::Q2_K => (80, Some(82)),
        DType::Q3_K => (108, None),
        DType::Q6_K => (208, None),
        _ => (0, None),
    };
    // Sub-block scales of up to 63 (127 for Q6_K) multiply a K-quant's `d`.
    let unit = if dtype.block_len() == 256 {
        1.0 / 64.0
    } else {
        1.0
    };
    let bytes = dtype.block_bytes();
    let mut out = Vec::new();
    for _ in 0..values / dtype.block_len() {
        let mut b: Vec<u8> = (0..bytes).map(|_| rng.next() as u8).collect();
        let d = half::f16::from_f32(unit * (0.01 + 0.02 * rng.f32().abs()));
        b[scale..scale + 2].copy_from_slice(&d.to_le_bytes());
        if let Some(at) = min {
            let m = half::f16::from_f32(unit * 0.1 * rng.f32());
            b[at..at + 2].copy_from_slice(&m.to_le_bytes());
        }
        out.extend(b);
    }
    out
}
