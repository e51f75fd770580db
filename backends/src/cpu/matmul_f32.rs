//! The linear op with f32 activations and block-quantized weights of every type, for
//! [`ActQuant::F32`](crate::ops::ActQuant::F32). The weights are used exactly as stored (no
//! re-quantization). Prompts on CPUs without the int16 kernels decode four weight rows at a time
//! into an L1-resident f32 buffer and multiply them with every activation row (the f32 matmul of
//! the decoded weights up to summation order); the int16 kernels (few rows: `gemv_i16`,
//! `gemv_i16_avx2`; prompts on AVX-512 VNNI: `gemm_i16`) round the activations to int16 per
//! block of 32 instead. With one row (decoding a token) the op is bound by reading the weights.

use std::cell::RefCell;

use super::multiversion::multiversion;
use super::Linear;
use super::{CpuBackend, SharedMut};
use crate::ops::OpError;
use crate::quant::{Q4_0_BYTES, Q4_1_BYTES, Q8_0_BYTES, QK};
use crate::DType;

/// Multiply-adds below which a matmul runs on one thread: this op is worth splitting much
/// earlier than the INT8 GEMM, because with one activation row it is bound by memory, and both
/// threads read weights in parallel.
const MIN_SPLIT_MACS: usize = 1 << 16;

/// Activation rows up to which the int16 one-row kernel runs (decoding tokens); with more rows
/// the weights are decoded once into the buffer and shared by all rows.
const I16_MAX_M: usize = 2;

/// Activation rows up to which the AVX2 int16 kernel runs: every decode step of up to 16
/// conversations stepped together, so each row's result is the one it gets alone, bit for bit
/// (the kernel computes each row on its own); prompts above it take the f32 tile, or on AVX-512
/// VNNI the int16 GEMM ([`super::gemm_i16`]).
#[cfg(target_arch = "x86_64")]
const I16_AVX2_MAX_M: usize = 16;

/// Weight rows decoded and multiplied together.
const ROWS: usize = 4;

/// Activation rows up to which weights are decoded in registers for each group of up to eight
/// rows ([`super::f32_rows_avx512`]: several conversations decoding together); above it (a
/// prompt), a buffer of decoded weights serves every row.
#[cfg(target_arch = "x86_64")]
const FUSED_MAX_M: usize = 16;

/// Writes two weight rows' results (`v[i]` for activation row `i`) into columns `p, p + 1`.
#[cfg(target_arch = "x86_64")]
fn place<const N: usize>(res: &mut [[f32; ROWS]], p: usize, v: [[f32; 2]; N]) {
    for (r, v) in res.iter_mut().zip(v) {
        r[p..p + 2].copy_from_slice(&v);
    }
}

thread_local! {
    /// Decoded weight rows, per thread, reused across calls.
    static BUF: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Activation rows quantized to int16 for the one-row kernel, reused across calls.
    #[cfg(target_arch = "x86_64")]
    static ROWS_I16: RefCell<Vec<super::row_i16::RowI16>> = const { RefCell::new(Vec::new()) };
}

#[inline(always)]
fn f16(b0: u8, b1: u8) -> f32 {
    crate::quant::f16_bits_to_f32(u16::from_le_bytes([b0, b1]))
}

/// Whether the hand-written AVX-512 kernels ([`super::f32_avx512`], [`super::gemv_i16`],
/// [`super::f32_rows_avx512`]) decode this type; the others run the portable loop.
#[cfg(target_arch = "x86_64")]
fn avx512_kernels_decode(dtype: DType) -> bool {
    match dtype {
        DType::Q8_0 | DType::Q4_0 | DType::Q4_1 => true,
        DType::F32
        | DType::F16
        | DType::BF16
        | DType::Q5_0
        | DType::Q5_1
        | DType::Q2_K
        | DType::Q3_K
        | DType::Q4_K
        | DType::Q5_K
        | DType::Q6_K
        | DType::IQ4_NL
        | DType::IQ4_XS => false,
    }
}

/// Decodes one row of blocks into `out` (`block_len` values per block).
#[inline(always)]
fn decode_row(dtype: DType, row: &[u8], out: &mut [f32]) {
    match dtype {
        DType::Q8_0 => {
            for (b, o) in row.chunks_exact(Q8_0_BYTES).zip(out.chunks_exact_mut(QK)) {
                let d = f16(b[0], b[1]);
                for (o, &q) in o.iter_mut().zip(&b[2..]) {
                    *o = q as i8 as f32 * d;
                }
            }
        }
        DType::Q4_0 => {
            for (b, o) in row.chunks_exact(Q4_0_BYTES).zip(out.chunks_exact_mut(QK)) {
                let d = f16(b[0], b[1]);
                let (lo, hi) = o.split_at_mut(QK / 2);
                for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&b[2..]) {
                    *l = ((q & 0x0f) as i32 - 8) as f32 * d;
                    *h = ((q >> 4) as i32 - 8) as f32 * d;
                }
            }
        }
        DType::Q4_1 => {
            for (b, o) in row.chunks_exact(Q4_1_BYTES).zip(out.chunks_exact_mut(QK)) {
                let (d, m) = (f16(b[0], b[1]), f16(b[2], b[3]));
                let (lo, hi) = o.split_at_mut(QK / 2);
                for ((l, h), &q) in lo.iter_mut().zip(hi).zip(&b[4..]) {
                    *l = (q & 0x0f) as f32 * d + m;
                    *h = (q >> 4) as f32 * d + m;
                }
            }
        }
        DType::F32
        | DType::F16
        | DType::BF16
        | DType::Q5_0
        | DType::Q5_1
        | DType::Q2_K
        | DType::Q3_K
        | DType::Q4_K
        | DType::Q5_K
        | DType::Q6_K
        | DType::IQ4_NL
        | DType::IQ4_XS => {
            // The table's reference decoder (the row is whole blocks: checked by the caller).
            let _ = dtype.decode(row, out);
        }
    }
}

multiversion! {
    #[cfg(target_arch = "x86_64")]
    /// Decodes the `rows` weight rows of `w` into `buf`, `k` values each, and zeroes the rest
    /// of its [`ROWS`] rows.
    fn decode_rows(dtype: DType, w: &[u8], rows: usize, k: usize, buf: &mut [f32]) {
        let row_bytes = w.len() / rows;
        for (r, o) in buf[..ROWS * k].chunks_exact_mut(k).enumerate() {
            if r < rows {
                decode_row(dtype, &w[r * row_bytes..(r + 1) * row_bytes], o);
            } else {
                o.fill(0.0);
            }
        }
    }
}

multiversion! {
    #[allow(clippy::too_many_arguments)]
    /// Decodes the `rows` weight rows of `w` into `buf` and multiplies them with every activation row,
    /// writing `out[i][j0 + r]` through `set(i, r, value)`.
    fn rows_times_x(
        dtype: DType,
        w: &[u8],
        rows: usize,
        x: &[f32],
        k: usize,
        buf: &mut [f32],
        set: &mut dyn FnMut(usize, usize, f32),
    ) {
        let row_bytes = w.len() / rows;
        for r in 0..rows {
            decode_row(dtype, &w[r * row_bytes..(r + 1) * row_bytes], &mut buf[r * k..(r + 1) * k]);
        }
        for (i, xr) in x.chunks_exact(k).enumerate() {
            if rows == ROWS {
                // Four dot products sharing each activation load, eight lanes each.
                let mut acc = [[0f32; 16]; ROWS];
                let (w0, rest) = buf.split_at(k);
                let (w1, rest) = rest.split_at(k);
                let (w2, w3) = rest.split_at(k);
                let n16 = k / 16 * 16;
                for c in (0..n16).step_by(16) {
                    let xs = &xr[c..c + 16];
                    for (a, wr) in acc.iter_mut().zip([w0, w1, w2, w3]) {
                        let ws = &wr[c..c + 16];
                        for l in 0..16 {
                            a[l] += ws[l] * xs[l];
                        }
                    }
                }
                for (r, (a, wr)) in acc.iter().zip([w0, w1, w2, w3]).enumerate() {
                    let tail: f32 = (n16..k).map(|c| wr[c] * xr[c]).sum();
                    set(i, r, a.iter().sum::<f32>() + tail);
                }
            } else {
                for r in 0..rows {
                    set(i, r, super::nn::dot_f32(&buf[r * k..(r + 1) * k], xr));
                }
            }
        }
    }
}

/// The x86 kernels a product over one weight type can run ([`CpuBackend::paths`]).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Paths {
    /// The AVX-512 f32 kernels read the type.
    fast: bool,
    /// The AVX-512 VNNI int16 token kernel runs ([`super::gemv_i16`]): for the types the
    /// AVX-512 f32 kernels read, and those whose units decode in 512-bit registers of their
    /// own (Q5_0, Q5_1; the K-quants' units, joined from AVX2 halves, decode too slowly for it
    /// to beat the AVX2 kernel sharing them between two rows).
    i16_rows: bool,
    /// The AVX2 f32 tile (where `fast` is off).
    avx2: bool,
    /// ... and the AVX2 int16 units read the type.
    avx2_decode: bool,
    /// The AVX-512 VNNI int16 GEMM runs the type's prompts.
    gemm: bool,
}

/// The two kinds of kernels the f32-activation matmul picks between by row count. Within a
/// kind, each row's result is the same whatever rows share the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RowsClass {
    /// The int16 one-row kernels (decoding tokens).
    Int16,
    /// The prompt kernels (the f32 tile, the fused f32 rows, the int16 GEMM).
    Prompt,
}

/// `lin`'s weights as stored blocks with f32 activations (`WeightData::Blocks`, or Q8_0 bytes
/// with [`ActQuant::F32`](crate::ops::ActQuant::F32)); `None` for the int8 and f32 products.
pub(super) fn stored_blocks<'a>(lin: &Linear<'a>) -> Option<(DType, &'a [u8])> {
    match lin.w {
        super::WeightData::Blocks(dtype, w) => Some((dtype, w)),
        super::WeightData::Q8_0(w) | super::WeightData::Packed(_, w)
            if lin.act == crate::ops::ActQuant::F32 =>
        {
            Some((DType::Q8_0, w))
        }
        _ => None,
    }
}

/// The bytes of one weight row, after checking that `w` is `lin.n` rows of `lin.k` values of
/// `dtype` in whole blocks and that the bias (if any) has `lin.n` values.
pub(super) fn check_blocks(dtype: DType, w: &[u8], lin: &Linear<'_>) -> Result<usize, OpError> {
    let (n, k) = (lin.n, lin.k);
    if !dtype.is_quantized() {
        return Err(OpError::Shape(format!(
            "{dtype} weights cannot be decoded by blocks"
        )));
    }
    let (bl, bb) = (dtype.block_len(), dtype.block_bytes());
    if !k.is_multiple_of(bl) {
        return Err(OpError::Shape(format!(
            "{dtype} rows of {k} are not whole blocks of {bl}"
        )));
    }
    let row_bytes = k / bl * bb;
    OpError::check(&format!("{dtype} weight bytes"), w.len(), n * row_bytes)?;
    if let Some(b) = lin.bias {
        OpError::check("linear bias", b.len(), n)?;
    }
    Ok(row_bytes)
}

impl CpuBackend {
    /// The x86 kernels that can multiply rows of `k` values with `dtype` weights (the kernel
    /// table's slots and the CPU's features), for [`CpuBackend::rows_class`] and
    /// [`CpuBackend::linear_dequant`] alike.
    #[cfg(target_arch = "x86_64")]
    fn paths(&self, dtype: DType, k: usize) -> Paths {
        let fast = self.kernels.f32_linear
            && avx512_kernels_decode(dtype)
            && super::f32_avx512::available()
            && k.is_multiple_of(16);
        let avx2 = !fast
            && self.kernels.f32_linear_avx2
            && super::f32_avx2::available()
            && k.is_multiple_of(8);
        let units = super::gemv_i16_avx2::decodes(dtype) && super::gemv_i16_avx2::available();
        let native = units && super::units_avx2::unit_facts(dtype).native_512;
        Paths {
            fast,
            i16_rows: (fast || native) && self.kernels.gemv_i16 && super::gemv_i16::available(),
            avx2,
            avx2_decode: avx2 && self.kernels.gemv_i16_avx2 && units,
            // Every type the units read, those the AVX-512 f32 kernels read too (Q8_0, Q4_0,
            // Q4_1): for them the GEMM gives the token kernel's bits, so their rows get the
            // same bits at any row count (a Q8_0 attn_v took 1.5% of a SmolLM2 Q4_K_M prompt
            // in the f32 tile, 0.4% in the GEMM).
            gemm: self.kernels.gemm_i16 && units && super::gemm_i16::available(),
        }
    }

    /// Whether the rows of every sequence of `seqs` over `dtype` weights (rows of `k`) take
    /// the int16 GEMM.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn takes_gemm_i16(&self, dtype: DType, seqs: &[usize], k: usize) -> bool {
        self.paths(dtype, k).gemm
            && seqs
                .iter()
                .all(|&r| self.rows_class(dtype, r, k) == RowsClass::Prompt)
    }

    /// The kernels a call of `m` rows of `k` values over `dtype` weights runs.
    pub(super) fn rows_class(&self, dtype: DType, m: usize, k: usize) -> RowsClass {
        #[cfg(target_arch = "x86_64")]
        {
            let p = self.paths(dtype, k);
            let one_row = if p.fast {
                p.i16_rows && m <= I16_MAX_M
            } else if p.i16_rows {
                // The token kernel, or the int16 GEMM with its bits: the prompt kernel too.
                m <= I16_AVX2_MAX_M
            } else if p.gemm {
                // The AVX2 kernel decodes each unit once per two rows, the GEMM once per call:
                // a prompt of a few tokens (a chat turn) takes the GEMM.
                p.avx2_decode && m <= I16_MAX_M
            } else {
                p.avx2_decode && m <= I16_AVX2_MAX_M
            };
            if one_row {
                return RowsClass::Int16;
            }
        }
        let _ = (dtype, m, k);
        RowsClass::Prompt
    }

    /// `out[m, n] = x[m, k] . W[n, k]^T + bias` for block-quantized `w` of `dtype`, in f32.
    /// `class`: the kernels to use whatever `m` is (`None`: those [`CpuBackend::rows_class`]
    /// picks for `m`).
    pub(super) fn linear_dequant(
        &self,
        x: &[f32],
        m: usize,
        (dtype, w): (DType, &[u8]),
        lin: &Linear<'_>,
        out: &mut [f32],
        class: Option<RowsClass>,
    ) -> Result<(), OpError> {
        let (n, k) = (lin.n, lin.k);
        let class = class.unwrap_or_else(|| self.rows_class(dtype, m, k));
        // Only the x86 kernels differ by class.
        #[cfg(not(target_arch = "x86_64"))]
        let _ = class;
        let row_bytes = check_blocks(dtype, w, lin)?;
        let macs = m * n * k;
        let tasks = if macs < MIN_SPLIT_MACS.min(self.min_task_macs) {
            1
        } else {
            // One task per thread: more (so a thread slowed by another process takes fewer)
            // measured no faster with the other core busy, and slower on an idle machine.
            // With several activation rows each weight row costs more, and a thread that
            // starts late (woken, or slowed by another process) holds the others up more: more
            // tasks than threads let the first free thread take the rest.
            let per_thread = if m > I16_MAX_M { 4 } else { 1 };
            (self.threads() * per_thread).min(n.div_ceil(ROWS))
        };
        #[cfg(target_arch = "x86_64")]
        let Paths {
            fast,
            i16_rows,
            avx2,
            avx2_decode,
            gemm,
        } = self.paths(dtype, k);
        // Prompts on AVX-512 VNNI: the int16 GEMM; tokens over Q8_0, Q4_0 and Q4_1: the
        // int16 token kernel (or the GEMM, with the same bits, for several tokens).
        #[cfg(target_arch = "x86_64")]
        if gemm && class == RowsClass::Prompt {
            super::kernels::note_simd();
            self.linear_gemm_i16(x, m, dtype, w, lin, out);
            return Ok(());
        }
        #[cfg(target_arch = "x86_64")]
        if i16_rows && class == RowsClass::Int16 {
            super::kernels::note_simd();
            self.linear_tokens_i16(x, m, dtype, w, lin, out);
            return Ok(());
        }
        #[cfg(target_arch = "aarch64")]
        if self.kernels.units_neon && super::neon_units::decodes(dtype) {
            super::kernels::note_simd();
            self.linear_units_neon(x, m, (dtype, w), lin, out, tasks);
            return Ok(());
        }
        let chunk = n.div_ceil(tasks).next_multiple_of(ROWS);
        let outp = SharedMut::new(out);
        // The AVX-512 kernels run with the AVX-512 kernel set (the scalar set tests the rest).
        #[cfg(target_arch = "x86_64")]
        let i16_avx2 = avx2_decode && class == RowsClass::Int16;
        #[cfg(target_arch = "x86_64")]
        if fast || avx2 {
            super::kernels::note_simd();
        }
        #[cfg(target_arch = "x86_64")]
        let mut rows_i16 = ROWS_I16.take();
        #[cfg(target_arch = "x86_64")]
        if i16_avx2 {
            rows_i16.resize_with(m, Default::default);
            for (r, xr) in rows_i16.iter_mut().zip(x.chunks_exact(k)) {
                r.quantize(xr);
            }
        }
        self.parallel(tasks, &|t| {
            let (j0, j1) = ((t * chunk).min(n), ((t + 1) * chunk).min(n));
            BUF.with_borrow_mut(|buf| {
                if buf.len() < ROWS * k {
                    buf.resize(ROWS * k, 0.0);
                }
                let mut j = j0;
                while j < j1 {
                    let rows = (j1 - j).min(ROWS);
                    let mut set = |i: usize, r: usize, v: f32| {
                        let b = lin.bias.map_or(0.0, |b| b[j + r]);
                        // SAFETY: task t writes only columns j0..j1, its own.
                        unsafe { outp.set(i * n + j + r, v + b) };
                    };
                    // Activation row i's results for weight rows j..j + rows, plus the bias: a
                    // slice per row, not a call per value (this is the inner loop of a step).
                    #[cfg(target_arch = "x86_64")]
                    let put = |i: usize, v: [f32; ROWS]| {
                        // SAFETY: task t writes only columns j0..j1 (j + rows <= j1), its own.
                        let o = unsafe { outp.slice(i * n + j, rows) };
                        match lin.bias {
                            Some(b) => {
                                for ((o, v), b) in o.iter_mut().zip(v).zip(&b[j..j + rows]) {
                                    *o = v + b;
                                }
                            }
                            None => o.copy_from_slice(&v[..rows]),
                        }
                    };
                    let w = &w[j * row_bytes..(j + rows) * row_bytes];
                    #[cfg(target_arch = "x86_64")]
                    if i16_avx2 && rows == ROWS {
                        // Two activation rows share each unit's decoding; an odd last row
                        // alone (the same sums, bit for bit).
                        use super::gemv_i16_avx2::{dot4, dot4x2};
                        let pairs = m / 2 * 2;
                        for (q, xr) in rows_i16[..pairs].chunks_exact(2).enumerate() {
                            // SAFETY: AVX2 was detected and the kernel decodes dtype
                            // (`i16_avx2`); w holds 4 rows of k values and xr two quantized rows.
                            let v = unsafe { dot4x2(dtype, w, row_bytes, [&xr[0], &xr[1]]) };
                            put(2 * q, v[0]);
                            put(2 * q + 1, v[1]);
                        }
                        if pairs < m {
                            // SAFETY: as above, with one quantized row.
                            put(pairs, unsafe {
                                dot4(dtype, w, row_bytes, &rows_i16[pairs])
                            });
                        }
                        j += rows;
                        continue;
                    }
                    #[cfg(target_arch = "x86_64")]
                    if fast && m <= FUSED_MAX_M && rows == ROWS {
                        use super::f32_rows_avx512::{dot2, MAX_ROWS};
                        let mut i0 = 0;
                        while i0 < m {
                            let take = match m - i0 {
                                8.. => 8,
                                4..=7 => 4,
                                2 | 3 => 2,
                                _ => 1,
                            };
                            let xs = &x[i0 * k..(i0 + take) * k];
                            let mut res = [[0f32; ROWS]; MAX_ROWS];
                            for p in [0, 2] {
                                let wp = &w[p * row_bytes..(p + 2) * row_bytes];
                                // SAFETY: AVX-512 was detected (`fast`); wp holds two rows of
                                // k / 32 blocks and xs `take` rows of k.
                                unsafe {
                                    match take {
                                        8 => place(
                                            &mut res,
                                            p,
                                            dot2::<8>(dtype, wp, row_bytes, xs, k),
                                        ),
                                        4 => place(
                                            &mut res,
                                            p,
                                            dot2::<4>(dtype, wp, row_bytes, xs, k),
                                        ),
                                        2 => place(
                                            &mut res,
                                            p,
                                            dot2::<2>(dtype, wp, row_bytes, xs, k),
                                        ),
                                        _ => place(
                                            &mut res,
                                            p,
                                            dot2::<1>(dtype, wp, row_bytes, xs, k),
                                        ),
                                    }
                                }
                            }
                            for (i, v) in res[..take].iter().enumerate() {
                                put(i0 + i, *v);
                            }
                            i0 += take;
                        }
                        j += rows;
                        continue;
                    }
                    #[cfg(target_arch = "x86_64")]
                    if fast {
                        for r in 0..ROWS {
                            let o = &mut buf[r * k..(r + 1) * k];
                            if r < rows {
                                let wr = &w[r * row_bytes..(r + 1) * row_bytes];
                                // SAFETY: AVX-512 was detected (`fast`); `wr` holds k / 32 blocks.
                                unsafe { super::f32_avx512::decode_row(dtype, wr, o) };
                            } else {
                                o.fill(0.0);
                            }
                        }
                        // Four activation rows at a time share the loads; the rest one by one.
                        let quads = m / 4 * 4;
                        for (q, xq) in x[..quads * k].chunks_exact(4 * k).enumerate() {
                            // SAFETY: AVX-512 was detected; buf and xq hold 4 rows of k,
                            // k % 16 == 0.
                            let v = unsafe { super::f32_avx512::dot4x4(&buf[..ROWS * k], xq, k) };
                            for (i, v) in v.into_iter().enumerate() {
                                put(4 * q + i, v);
                            }
                        }
                        for (i, xr) in x.chunks_exact(k).enumerate().skip(quads) {
                            // SAFETY: AVX-512 was detected; buf holds 4 rows of k, k % 16 == 0.
                            put(i, unsafe { super::f32_avx512::dot4(&buf[..ROWS * k], xr) });
                        }
                        j += rows;
                        continue;
                    }
                    #[cfg(target_arch = "x86_64")]
                    if avx2 {
                        if avx2_decode {
                            for (r, o) in buf[..ROWS * k].chunks_exact_mut(k).enumerate() {
                                if r < rows {
                                    let wr = &w[r * row_bytes..(r + 1) * row_bytes];
                                    // SAFETY: the kernel decodes dtype and its CPU features
                                    // were detected (`avx2_decode`); wr holds k values.
                                    unsafe { super::gemv_i16_avx2::decode_row(dtype, wr, o) };
                                } else {
                                    o.fill(0.0);
                                }
                            }
                        } else {
                            decode_rows(&self.kernels, dtype, w, rows, k, buf);
                        }
                        // Three activation rows at a time share the weight loads; the last one
                        // or two (the same sums, bit for bit).
                        let triples = m / 3 * 3;
                        let wb = &buf[..ROWS * k];
                        for (q, xq) in x[..triples * k].chunks_exact(3 * k).enumerate() {
                            // SAFETY: AVX2/FMA were detected (`avx2`); wb holds 4 rows of k,
                            // xq 3, k % 8 == 0.
                            let v = unsafe { super::f32_avx2::dot4x3(wb, xq, k) };
                            for (i, v) in v.into_iter().enumerate() {
                                put(3 * q + i, v);
                            }
                        }
                        match m - triples {
                            2 => {
                                // SAFETY: as above, with two activation rows.
                                let v =
                                    unsafe { super::f32_avx2::dot4x2(wb, &x[triples * k..], k) };
                                put(triples, v[0]);
                                put(triples + 1, v[1]);
                            }
                            1 => {
                                // SAFETY: as above, with one activation row.
                                put(triples, unsafe {
                                    super::f32_avx2::dot4(wb, &x[triples * k..])
                                });
                            }
                            _ => {}
                        }
                        j += rows;
                        continue;
                    }
                    rows_times_x(&self.kernels, dtype, w, rows, x, k, buf, &mut set);
                    j += rows;
                }
            });
        });
        #[cfg(target_arch = "x86_64")]
        ROWS_I16.set(rows_i16);
        Ok(())
    }
}
