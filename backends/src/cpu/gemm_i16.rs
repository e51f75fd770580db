//! The prompt (many-row) kernel of the f32-activation matmul on AVX-512 VNNI, for every block
//! type the int16 token kernels read (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K): the
//! token kernels' scheme (activations as int16 per block of 32, each weight unit `w = d q + m`
//! with `q` int16), laid out as a GEMM. For Q8_0, Q4_0 and Q4_1 it also runs several
//! conversations' tokens at once, with the bits [`super::gemv_i16`] gives each alone.
//!
//! A panel of [`NR`] weight rows is decoded once into int16 and transposed so that one 512-bit
//! load holds one pair of `k` values for 16 weight rows; `vpdpwssd` with a broadcast pair of an
//! activation row then adds 32 products into 16 output columns, with no horizontal sum. Each
//! unit of 32 values ends in int32, and is scaled into the f32 accumulators once per [`MR`]
//! activation rows and 16 columns (`d s`, and `m` times the activation block's sum). The f32
//! tile it replaces did 16 products per instruction, and decoded the weights for every four.

use std::arch::x86_64::*;
use std::cell::RefCell;

use super::row_i16::RowI16;
use super::row_i16_avx512::quantize_row;
use super::units_avx2::{by_layout, unit_facts, Layout};
use super::{CpuBackend, Linear, SharedMut};
use crate::quant::QK;
use crate::DType;

/// Weight rows per panel: two 512-bit vectors of int32 accumulators per activation row.
pub const NR: usize = 32;
/// Activation rows per tile: 4 x 2 int32 and 4 x 2 f32 accumulators, 16 of the 32 registers.
pub const MR: usize = 4;
/// Pairs of values per unit of 32.
const PAIRS: usize = QK / 2;

/// Whether this CPU can run the kernel (AVX-512 VNNI, and the AVX2 unit decoders).
pub fn available() -> bool {
    super::gemv_i16::available() && super::units_avx2::available()
}

/// The largest activation magnitude for `dtype`'s weights: each lane of `vpdpwssd` sums the
/// 32 products of a unit in int32, so `32 * max_q * qmax` must stay below 2^31 (Q6_K, whose
/// values carry their sub-block scale, takes 14 bits; the others the full 15).
pub fn activation_max(dtype: DType) -> f32 {
    let limit = (i32::MAX as i64) / (QK as i64 * unit_facts(dtype).max_q as i64);
    limit.min(i16::MAX as i64) as f32
}

/// [`NR`] weight rows decoded to int16 and transposed: `q[unit][pair][row]` (an i32 is a pair
/// of int16), `d[unit][row]`, `m[unit][row]`; missing rows of a last panel are zero.
#[derive(Default)]
pub struct Panel {
    q: Vec<i32>,
    d: Vec<f32>,
    m: Vec<f32>,
    units: usize,
}

impl Panel {
    /// Decodes the `rows` (at most [`NR`]) rows of `w`, `k` values of `dtype` each.
    ///
    /// # Safety
    /// [`available`] is true; the AVX2 units read `dtype`; `w` holds `rows` rows of `k`.
    pub unsafe fn fill(&mut self, dtype: DType, w: &[u8], rows: usize, k: usize) {
        assert!(
            rows <= NR
                && k.is_multiple_of(QK)
                && w.len() * dtype.block_len() == rows * k * dtype.block_bytes(),
            "Panel::fill: {} bytes of {dtype} for {rows} rows of {k}",
            w.len()
        );
        let units = k / QK;
        self.units = units;
        // Grown, never shrunk: `fill_t` writes every value a panel of `units` uses, and a
        // shrink then a grow zero-filled up to 130 KB per matrix (a Gemma 3 block's widths
        // alternate between 640, 1024 and 2048).
        if self.q.len() < units * PAIRS * NR {
            self.q.resize(units * PAIRS * NR, 0);
            self.d.resize(units * NR, 0.0);
            self.m.resize(units * NR, 0.0);
        }
        // SAFETY: the caller guarantees the features and that the units read dtype; the
        // lengths are asserted above.
        unsafe { by_layout!(dtype, fill_t(self, w, rows, k)) }
    }
}

/// [`Panel::fill`] for layout `T`: unit by unit, each unit's [`NR`] rows decoded into a
/// buffer that stays in L1 and transposed from there (decoding whole rows first put the
/// panel, up to 100 KB, through L2 twice).
#[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
unsafe fn fill_t<T: Layout>(p: &mut Panel, w: &[u8], rows: usize, k: usize) {
    let row_bytes = w.len() / rows.max(1);
    let mut unit = [0i16; NR * QK];
    for u in 0..k / QK {
        let (blk, within) = (u / T::UNITS, u % T::UNITS);
        if within == 0 {
            // The panel's rows lie one after another, read side by side: the next panel is
            // fetched into L2 as one stream, as far into it as this one has come (the panel
            // after the last one's slice is never read: a prefetch does not fault).
            let next = w.as_ptr().wrapping_add((row_bytes + blk * T::BYTES) * NR);
            for line in (0..NR * T::BYTES).step_by(64) {
                _mm_prefetch::<_MM_HINT_T1>(next.wrapping_add(line) as *const i8);
            }
        }
        for r in 0..NR {
            let d = &mut p.d[u * NR + r];
            let m = &mut p.m[u * NR + r];
            // SAFETY: row r's block blk lies in w (asserted by `fill`); the unit's 32 values
            // in `unit`.
            unsafe {
                let out = unit.as_mut_ptr().add(r * QK) as *mut __m256i;
                if r < rows {
                    let at = w.as_ptr().add(r * row_bytes + blk * T::BYTES);
                    let (q, ud, um) = T::unit512(at, within);
                    _mm512_storeu_si512(out as *mut __m512i, q);
                    *d = ud;
                    *m = if T::SHIFT != 0 { 0.0 } else { um };
                } else {
                    _mm256_storeu_si256(out, _mm256_setzero_si256());
                    _mm256_storeu_si256(out.add(1), _mm256_setzero_si256());
                    *d = 0.0;
                    *m = 0.0;
                }
            }
        }
        for half in 0..NR / 16 {
            // SAFETY: rows 16 half.. of `unit`, and q[u][..][16 half..16 half + 16] (sized by
            // `fill`).
            unsafe {
                let mut v: [__m512i; 16] = std::array::from_fn(|r| {
                    _mm512_loadu_si512(unit.as_ptr().add((half * 16 + r) * QK) as *const _)
                });
                transpose16(&mut v);
                for (pr, v) in v.iter().enumerate() {
                    let at = (u * PAIRS + pr) * NR + half * 16;
                    _mm512_storeu_si512(p.q.as_mut_ptr().add(at) as *mut _, *v);
                }
            }
        }
    }
}

/// Transposes 16 x 16 int32 (`v[r]` lane `c` becomes `v[c]` lane `r`): unpacks of 32 and 64
/// bits within 128-bit lanes, then two rounds of 128-bit lane shuffles.
///
/// # Safety
/// AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(v: &mut [__m512i; 16]) {
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(v[2 * i], v[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(v[2 * i], v[2 * i + 1]);
    }
    // Within each 128-bit lane L, u[4 g + c] holds column 4 L + c of rows 4 g..4 g + 4.
    let mut u = [_mm512_setzero_si512(); 16];
    for g in 0..4 {
        let b = 4 * g;
        u[b] = _mm512_unpacklo_epi64(t[b], t[b + 2]);
        u[b + 1] = _mm512_unpackhi_epi64(t[b], t[b + 2]);
        u[b + 2] = _mm512_unpacklo_epi64(t[b + 1], t[b + 3]);
        u[b + 3] = _mm512_unpackhi_epi64(t[b + 1], t[b + 3]);
    }
    // s[8 h + 4 e + c] = lanes (2 e, 2 e + 2) of u[8 h + c] and u[8 h + 4 + c], e = 0 or 1.
    let mut s = [_mm512_setzero_si512(); 16];
    for h in 0..2 {
        for c in 0..4 {
            let (a, b) = (u[8 * h + c], u[8 * h + 4 + c]);
            s[8 * h + c] = _mm512_shuffle_i32x4::<0x88>(a, b);
            s[8 * h + 4 + c] = _mm512_shuffle_i32x4::<0xdd>(a, b);
        }
    }
    for c in 0..8 {
        v[c] = _mm512_shuffle_i32x4::<0x88>(s[c], s[8 + c]);
        v[c + 8] = _mm512_shuffle_i32x4::<0xdd>(s[c], s[8 + c]);
    }
}

/// `acc + a . b` by pairs of int16 (`vpdpwssd`), as one instruction: through the intrinsic,
/// LLVM splits most of them into `vpmaddwd` and `vpaddd` (twice the instructions) to shorten
/// an accumulator's chain, which the tile's eight independent chains do not need.
///
/// # Safety
/// AVX-512 VNNI.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
unsafe fn dpwssd(acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    let mut acc = acc;
    // SAFETY: a register-only instruction the caller's features provide.
    unsafe {
        std::arch::asm!(
            "vpdpwssd {acc}, {a}, {b}",
            acc = inout(zmm_reg) acc,
            a = in(zmm_reg) a,
            b = in(zmm_reg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
    }
    acc
}

/// `R` activation rows (1 to [`MR`]) times the panel: `res[i][c]` is row `i`'s product with
/// panel row `c`. `OFF`: the type has offsets (`m`), added as `m` times the block's sum.
///
/// # Safety
/// AVX-512 VNNI; each row holds the panel's `units * 32` values.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile<const R: usize, const OFF: bool>(
    p: &Panel,
    xs: [&RowI16; R],
    res: &mut [[f32; NR]; MR],
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for u in 0..p.units {
        // SAFETY: unit u of the panel and of every row is in bounds (the caller's lengths).
        unsafe {
            let wq = p.q.as_ptr().add(u * PAIRS * NR);
            let xq: [*const i32; R] = std::array::from_fn(|i| xs[i].q.as_ptr().add(u * QK) as _);
            let mut ci = [[_mm512_setzero_si512(); 2]; R];
            // Four pairs per pass: the loop's own instructions were a tenth of the tile's.
            for p4 in 0..PAIRS / 4 {
                for pr in 4 * p4..4 * p4 + 4 {
                    let w0 = _mm512_loadu_si512(wq.add(pr * NR) as *const _);
                    let w1 = _mm512_loadu_si512(wq.add(pr * NR + 16) as *const _);
                    for i in 0..R {
                        let xb = _mm512_set1_epi32(xq[i].add(pr).read_unaligned());
                        ci[i][0] = dpwssd(ci[i][0], w0, xb);
                        ci[i][1] = dpwssd(ci[i][1], w1, xb);
                    }
                }
            }
            let d = [
                _mm512_loadu_ps(p.d.as_ptr().add(u * NR)),
                _mm512_loadu_ps(p.d.as_ptr().add(u * NR + 16)),
            ];
            let m = [
                _mm512_loadu_ps(p.m.as_ptr().add(u * NR)),
                _mm512_loadu_ps(p.m.as_ptr().add(u * NR + 16)),
            ];
            for i in 0..R {
                let s = _mm512_set1_ps(*xs[i].s.get_unchecked(u));
                let sum = _mm512_set1_ps(*xs[i].sum.get_unchecked(u));
                for h in 0..2 {
                    let ds = _mm512_mul_ps(d[h], s);
                    acc[i][h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ci[i][h]), ds, acc[i][h]);
                    if OFF {
                        acc[i][h] = _mm512_fmadd_ps(m[h], sum, acc[i][h]);
                    }
                }
            }
        }
    }
    for (r, acc) in res.iter_mut().zip(acc) {
        for (h, a) in acc.into_iter().enumerate() {
            // SAFETY: 16 floats at r[16 h..].
            unsafe { _mm512_storeu_ps(r.as_mut_ptr().add(16 * h), a) };
        }
    }
}

/// The tile for `r` rows starting at `xs[0]`.
///
/// # Safety
/// As [`tile`]; `xs` holds at least `r` rows.
unsafe fn run_tile(p: &Panel, off: bool, r: usize, xs: &[RowI16], res: &mut [[f32; NR]; MR]) {
    macro_rules! go {
        ($r:literal) => {{
            let rows: [&RowI16; $r] = std::array::from_fn(|i| &xs[i]);
            // SAFETY: as the caller guarantees.
            unsafe {
                if off {
                    tile::<$r, true>(p, rows, res)
                } else {
                    tile::<$r, false>(p, rows, res)
                }
            }
        }};
    }
    match r {
        4 => go!(4),
        3 => go!(3),
        2 => go!(2),
        _ => go!(1),
    }
}

thread_local! {
    /// The decoded panel, per thread, reused across calls.
    static PANEL: RefCell<Panel> = RefCell::new(Panel::default());
    /// The activation rows as int16 (for up to two activation ranges), reused across calls.
    static ROWS_I16: RefCell<[Vec<RowI16>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// `o = v + bias` over `o`'s length (the columns of one output row a task computed, at most
/// `W`).
pub(super) fn store<const W: usize>(o: &mut [f32], v: &[f32; W], bias: Option<&[f32]>) {
    match bias {
        Some(b) => {
            for ((o, v), b) in o.iter_mut().zip(v).zip(b) {
                *o = v + b;
            }
        }
        // A whole row of `W` as one fixed-size copy: the slice copy of a length known only at
        // run time was a `memmove` call per row and panel, 2% of a prompt.
        None => match <&mut [f32; W]>::try_from(&mut *o) {
            Ok(o) => *o = *v,
            Err(_) => o.copy_from_slice(&v[..o.len()]),
        },
    }
}

/// One product of [`CpuBackend::linear_gemm_i16_many`]: `n` rows of weights of a type the AVX2
/// unit decoders read, the bias, and the output (`m x n`).
pub(super) struct GemmJob<'a> {
    /// The weights' type.
    pub dtype: DType,
    /// The weights, `n` whole rows.
    pub w: &'a [u8],
    /// Output columns (weight rows).
    pub n: usize,
    /// The bias, `n` values.
    pub bias: Option<&'a [f32]>,
    /// The output, `m` rows of `n`.
    pub out: &'a mut [f32],
}

impl CpuBackend {
    /// `out[m, n] = x[m, k] . W[n, k]^T + bias` for weights of a type the AVX2 unit decoders
    /// read (the caller checks [`available`], the table's slot, and the shapes).
    pub(super) fn linear_gemm_i16(
        &self,
        x: &[f32],
        m: usize,
        dtype: DType,
        w: &[u8],
        lin: &Linear<'_>,
        out: &mut [f32],
    ) {
        let job = GemmJob {
            dtype,
            w,
            n: lin.n,
            bias: lin.bias,
            out,
        };
        self.linear_gemm_i16_many(x, m, lin.k, &mut [job]);
    }

    /// [`CpuBackend::linear_gemm_i16`] for several matrices over the same rows (a block's q, k
    /// and v; its gate and up): the rows are quantized once for every job whose type takes
    /// the same activation range, and the jobs' panels are dealt to the threads together,
    /// one pass of the pool instead of one per matrix (each row's results are the bits a
    /// call with one matrix gives).
    pub(super) fn linear_gemm_i16_many(
        &self,
        x: &[f32],
        m: usize,
        k: usize,
        jobs: &mut [GemmJob<'_>],
    ) {
        // At most two activation ranges: Q6_K's and every other type's.
        let mut ranges: Vec<f32> = Vec::with_capacity(2);
        for j in jobs.iter() {
            let q = activation_max(j.dtype);
            if !ranges.contains(&q) {
                ranges.push(q);
            }
        }
        assert!(
            ranges.len() <= 2,
            "gemm_i16: {} activation ranges",
            ranges.len()
        );
        let mut sets = ROWS_I16.take();
        for set in &mut sets[..ranges.len()] {
            set.resize_with(m, Default::default);
        }
        {
            // Each thread quantizes its share of the rows, for every range.
            let tasks = self.threads().min(m);
            let per = m.div_ceil(tasks);
            let [a, b] = &mut sets;
            let sp = [SharedMut::new(&mut a[..]), SharedMut::new(&mut b[..])];
            let ranges = &ranges;
            self.parallel(tasks, &|t| {
                let (i0, i1) = ((t * per).min(m), ((t + 1) * per).min(m));
                for (sp, &qmax) in sp.iter().zip(ranges) {
                    // SAFETY: task t alone touches rows i0..i1 of each set.
                    let mine = unsafe { sp.slice(i0, i1 - i0) };
                    for (r, xr) in mine.iter_mut().zip(x[i0 * k..i1 * k].chunks_exact(k)) {
                        // SAFETY: AVX-512 (the caller checked `available`); k is whole blocks.
                        unsafe { quantize_row(r, xr, qmax) };
                    }
                }
            });
        }
        // Every job's panels in turn, numbered together.
        let first: Vec<usize> = jobs
            .iter()
            .scan(0, |at, j| {
                let f = *at;
                *at += j.n.div_ceil(NR);
                Some(f)
            })
            .collect();
        let panels: usize = jobs.iter().map(|j| j.n.div_ceil(NR)).sum();
        // Many more tasks than threads (two or three panels each), so that the threads finish
        // together: with four per thread the last one's wait was a few percent of a prompt
        // (paired runs, 128-token prompts: Gemma 3 270M 0.960x of the time, SmolLM2 0.99x).
        let tasks = (self.threads() * 12).min(panels);
        let per = panels.div_ceil(tasks);
        let rows: Vec<&[RowI16]> = jobs
            .iter()
            .map(|j| {
                let r = ranges.iter().position(|&q| q == activation_max(j.dtype));
                &sets[r.expect("a range per job")][..]
            })
            .collect();
        let outs: Vec<SharedMut<f32>> = jobs.iter_mut().map(|j| SharedMut::new(j.out)).collect();
        let jobs = &*jobs;
        self.parallel(tasks, &|t| {
            super::with_scratch(&PANEL, |panel| {
                for g in (t * per).min(panels)..((t + 1) * per).min(panels) {
                    let ji = first
                        .iter()
                        .rposition(|&f| f <= g)
                        .expect("panel 0 is job 0's");
                    let (job, rows, outp) = (&jobs[ji], rows[ji], &outs[ji]);
                    let (n, row_bytes) = (job.n, job.w.len() / job.n);
                    let j = (g - first[ji]) * NR;
                    let cols = (n - j).min(NR);
                    // SAFETY: the caller checked the features and that the decoders read
                    // the type; the slice is `cols` whole rows.
                    unsafe {
                        panel.fill(
                            job.dtype,
                            &job.w[j * row_bytes..(j + cols) * row_bytes],
                            cols,
                            k,
                        )
                    };
                    // Q4_0 and Q5_0 come signed from the decoder (their stored offset taken
                    // off): only Q4_1, Q5_1, Q4_K and Q5_K keep a multiply-add per unit and
                    // row for `m`.
                    let off = unit_facts(job.dtype).offsets;
                    let mut res = [[0f32; NR]; MR];
                    let mut i = 0;
                    while i < m {
                        let r = (m - i).min(MR);
                        // SAFETY: as above; rows i..i + r hold k values each.
                        unsafe { run_tile(panel, off, r, &rows[i..], &mut res) };
                        for (ii, v) in res[..r].iter().enumerate() {
                            // SAFETY: task t writes only columns of its own panels.
                            let o = unsafe { outp.slice((i + ii) * n + j, cols) };
                            store(o, v, job.bias.map(|b| &b[j..j + cols]));
                        }
                        i += r;
                    }
                }
            });
        });
        ROWS_I16.set(sets);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose16_moves_every_lane() {
        if !super::super::x86::runs_here(
            std::is_x86_feature_detected!("avx512f"),
            "the 16 x 16 transpose",
        ) {
            return;
        }
        let rows: Vec<[i32; 16]> = (0..16)
            .map(|r| std::array::from_fn(|c| (r * 100 + c) as i32))
            .collect();
        // SAFETY: AVX-512F was detected; each row is 16 i32.
        let out = unsafe {
            let mut v: [__m512i; 16] =
                std::array::from_fn(|r| _mm512_loadu_si512(rows[r].as_ptr() as *const _));
            transpose16(&mut v);
            v.map(|v| {
                let mut o = [0i32; 16];
                _mm512_storeu_si512(o.as_mut_ptr() as *mut _, v);
                o
            })
        };
        for (c, col) in out.iter().enumerate() {
            for (r, &x) in col.iter().enumerate() {
                assert_eq!(x, (r * 100 + c) as i32, "lane {r} of column {c}");
            }
        }
    }

    #[test]
    fn activations_bounded_so_that_a_unit_sum_fits_in_int32() {
        for dtype in crate::dtype::ALL_DTYPES {
            if !super::super::units_avx2::decodes(dtype) {
                continue;
            }
            let worst = QK as i64 * unit_facts(dtype).max_q as i64 * activation_max(dtype) as i64;
            assert!(worst <= i32::MAX as i64, "{dtype}: {worst}");
        }
        assert_eq!(activation_max(DType::Q4_K), 32767.0);
        assert_eq!(activation_max(DType::Q6_K), 16383.0);
    }
}
