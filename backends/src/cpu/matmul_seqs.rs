//! The linear op over the rows of several sequences at once (continuous batching: one
//! conversation's prompt chunk beside others' next tokens). The f32-activation matmul picks its
//! kernels by row count, and the int16 token kernels and the prompt kernels round differently;
//! so each sequence's rows run with the kernels a call of that sequence alone would pick, and a
//! conversation stepped with others gets the bits it gets alone. Rows of one kind share one pass
//! over the weights.

#[cfg(target_arch = "x86_64")]
use super::matmul_f32::check_blocks;
use super::matmul_f32::{stored_blocks, RowsClass};
use super::{CpuBackend, Linear};
use crate::ops::OpError;

impl CpuBackend {
    /// `out = x W^T + bias` for `seqs[i]` rows of each sequence in turn, each row as a call
    /// with its sequence's rows alone computes it.
    pub fn linear_seqs(
        &self,
        x: &[f32],
        seqs: &[usize],
        lin: &Linear<'_>,
        out: &mut [f32],
    ) -> Result<(), OpError> {
        let m: usize = seqs.iter().sum();
        let (n, k) = (lin.n, lin.k);
        // Only the f32-activation matmul over stored blocks picks kernels by row count.
        let Some((dtype, w)) = stored_blocks(lin) else {
            return self.linear(x, m, lin, out);
        };
        OpError::check("linear input", x.len(), m * k)?;
        OpError::check("linear output", out.len(), m * n)?;
        let classes: Vec<RowsClass> = seqs.iter().map(|&r| self.rows_class(dtype, r, k)).collect();
        if classes.windows(2).all(|c| c[0] == c[1]) {
            let class = classes.first().copied();
            return self.linear_dequant(x, m, (dtype, w), lin, out, class);
        }
        for class in [RowsClass::Int16, RowsClass::Prompt] {
            // This kind's rows gathered, multiplied, and put back in their places.
            let mut xs = Vec::new();
            let mut places = Vec::new();
            let mut row = 0;
            for (&r, &c) in seqs.iter().zip(&classes) {
                if c == class {
                    xs.extend_from_slice(&x[row * k..(row + r) * k]);
                    places.push((row, r));
                }
                row += r;
            }
            let rows: usize = places.iter().map(|p| p.1).sum();
            if rows == 0 {
                continue;
            }
            let mut o = vec![0f32; rows * n];
            self.linear_dequant(&xs, rows, (dtype, w), lin, &mut o, Some(class))?;
            let mut from = 0;
            for (row, r) in places {
                out[row * n..(row + r) * n].copy_from_slice(&o[from * n..(from + r) * n]);
                from += r;
            }
        }
        Ok(())
    }

    /// [`CpuBackend::linear_seqs`] of the same rows with several matrices of the same input
    /// width (`outs[i]` for `lins[i]`): where every product takes the int16 GEMM (prompts on
    /// AVX-512 VNNI), the rows are quantized once and all the products run in one pass of the
    /// pool; otherwise one call each. Each row gets the bits a call with one matrix gives.
    pub fn linear_seqs_each(
        &self,
        x: &[f32],
        seqs: &[usize],
        lins: &[Linear<'_>],
        outs: &mut [&mut [f32]],
    ) -> Result<(), OpError> {
        OpError::check("linear_seqs_each outputs", outs.len(), lins.len())?;
        #[cfg(target_arch = "x86_64")]
        if let Some(mut jobs) = self.gemm_jobs(x, seqs, lins, outs) {
            super::kernels::note_simd();
            let m = seqs.iter().sum();
            self.linear_gemm_i16_many(x, m, lins[0].k, &mut jobs);
            return Ok(());
        }
        for (lin, out) in lins.iter().zip(outs.iter_mut()) {
            self.linear_seqs(x, seqs, lin, out)?;
        }
        Ok(())
    }

    /// The int16 GEMM's jobs for [`CpuBackend::linear_seqs_each`], if every product takes it
    /// and every shape holds (`None`: each runs alone, and reports what is wrong).
    #[cfg(target_arch = "x86_64")]
    fn gemm_jobs<'a>(
        &self,
        x: &[f32],
        seqs: &[usize],
        lins: &[Linear<'a>],
        outs: &'a mut [&mut [f32]],
    ) -> Option<Vec<super::gemm_i16::GemmJob<'a>>> {
        let m: usize = seqs.iter().sum();
        let k = lins.first()?.k;
        if lins.len() < 2 || m == 0 || x.len() != m * k {
            return None;
        }
        let mut jobs = Vec::with_capacity(lins.len());
        for (lin, out) in lins.iter().zip(outs.iter_mut()) {
            let (dtype, w) = stored_blocks(lin)?;
            let fits = lin.k == k && check_blocks(dtype, w, lin).is_ok() && out.len() == m * lin.n;
            if !fits || !self.takes_gemm_i16(dtype, seqs, k) {
                return None;
            }
            jobs.push(super::gemm_i16::GemmJob {
                dtype,
                w,
                n: lin.n,
                bias: lin.bias,
                out,
            });
        }
        Some(jobs)
    }
}
