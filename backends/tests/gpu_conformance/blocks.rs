//! The f32-activation products over stored blocks on a GPU, against the scalar CPU: every
//! block type a K-quant file holds, kept in quantized words.

use edgecut_backends::cpu::CpuBackend;
use edgecut_backends::gpu::GpuBackend;
use edgecut_backends::ops::ActQuant;
use edgecut_backends::DType;

use super::common::{random_blocks, Rng};
use super::{reference, worst};

/// `m x k` f32 activations (each `m` of `rows`) times the `n x k` matrix `data` of `dtype` on
/// the GPU and on `cpu`: within 1e-4 (the f32 sums' order).
pub fn f32_products_match(
    gpu: &GpuBackend,
    cpu: &CpuBackend,
    (dtype, data, n, k): (DType, &[u8], usize, usize),
    rows: &[usize],
    rng: &mut Rng,
) {
    use edgecut_backends::{Backend, WeightSource};
    let src = WeightSource {
        dtype,
        data,
        storage: None,
        n,
        k,
        bias: None,
        act: ActQuant::F32,
    };
    let (wc, wg) = (cpu.prepare(src).unwrap(), gpu.prepare(src).unwrap());
    for &m in rows {
        let x = rng.vec(m * k, 3.0);
        let mut want = vec![0f32; m * n];
        Backend::linear(cpu, &x, m, &wc, &mut want).unwrap();
        let mut out = gpu.empty(m * n);
        Backend::linear(gpu, &gpu.upload(&x), m, &wg, &mut out).unwrap();
        let err = worst(&gpu.download(&out).unwrap(), &want);
        assert!(err <= 1e-4, "{dtype} {m}x{k} . {n}: {err}");
    }
}

/// Every block type a Q4_K_M/Q5_K_M/Q6_K file holds, against the scalar CPU (f32 activations,
/// one row and many, rows past a tile): random blocks (`random_blocks`), held within 1e-4
/// (the f32 sums' order); each kept in quantized words, not decoded to f32 (its bytes on the
/// device at most 40 per 32 values, against 128).
pub fn block_types_match_the_cpu(gpu: &GpuBackend) {
    let cpu = reference();
    let mut rng = Rng(29);
    for dtype in [
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q5_0,
        DType::Q5_1,
        DType::Q4_K,
        DType::Q5_K,
        DType::Q6_K,
    ] {
        for (m, n, k) in [(1, 70, 512), (40, 33, 256), (3, 17, 768)] {
            let data = random_blocks(&mut rng, dtype, n * k);
            let blocks = gpu.upload_blocks(dtype, &data, n, k).unwrap();
            assert!(
                blocks.bytes() * 32 <= 40 * n * k,
                "{dtype}: {} bytes on the device for {} values",
                blocks.bytes(),
                n * k
            );
            f32_products_match(gpu, &cpu, (dtype, &data, n, k), &[m], &mut rng);
        }
    }
}
