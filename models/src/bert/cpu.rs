//! Encoder blocks on the CPU backend.
//!
//! A long batch runs a few texts at a time ([`GROUP_ROWS`] token rows) through every block of
//! the range, so the intermediates stay in cache. Within a group, on one thread or for few rows,
//! the ops run one after another, each split across the pool by output columns. From
//! [`ROW_TASKS_FROM`] rows on several threads, the blocks run as a chain of row tasks (see
//! [`Bert::row_task_blocks`]).

use std::ops::Range;

use edgecut_backends::cpu::with_scratch;
use edgecut_backends::ops::Attention;
use edgecut_backends::Device;

use super::{Activation, Bert, Block, Qkv};
use crate::error::{ModelError, Result};
use crate::weights::Matrix;

/// Token rows an encoder block runs at once when a batch has more (whole texts; a text longer
/// than this runs alone): 256 rows keep MiniLM's ffn_up output (1.5 MiB) within L2/L3 reach.
const GROUP_ROWS: usize = 256;

/// Token rows from which blocks on several threads run as row tasks. Below this, ops split
/// their columns instead (each task then reads only its share of the weights, which matters
/// more for few rows).
const ROW_TASKS_FROM: usize = 64;
/// Rows per row task: a multiple of the GEMM's 4-row tile, and enough tasks (4 at 128 rows)
/// for a thread that was preempted to be covered by the others.
const ROWS_PER_TASK: usize = 32;

/// Intermediate buffers of the blocks, kept per thread so the steady-state forward pass does
/// not allocate.
#[derive(Default)]
struct Scratch {
    qkv: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    ctx: Vec<f32>,
    o: Vec<f32>,
    up: Vec<f32>,
}

/// A row task's buffers.
#[derive(Default)]
struct RowScratch {
    o: Vec<f32>,
    up: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
    static ROW_SCRATCH: std::cell::RefCell<RowScratch> =
        std::cell::RefCell::new(RowScratch::default());
}

/// The first error a task met (tasks cannot return one).
struct FirstError(std::sync::Mutex<Option<ModelError>>);

impl FirstError {
    fn new() -> FirstError {
        FirstError(std::sync::Mutex::new(None))
    }

    fn keep(&self, r: Result<()>) {
        if let Err(e) = r {
            let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(e);
        }
    }

    fn take(&self) -> Result<()> {
        match self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl Bert {
    /// Block `i`'s stacked q/k/v matrix, if it has one (row tasks need it).
    fn stacked_qkv(&self, i: usize) -> Option<&Matrix> {
        match &self.blocks.get(i)?.qkv {
            Qkv::Stacked(m) => Some(m),
            Qkv::Separate(_) => None,
        }
    }

    /// Blocks `range` on the CPU, in place.
    pub(super) fn cpu_blocks(
        &self,
        dev: &Device,
        range: Range<usize>,
        a: &mut Activation,
    ) -> Result<()> {
        let h = self.cfg.hidden;
        let group = (GROUP_ROWS / a.seq.max(1)).max(1);
        let mut b0 = 0;
        while b0 < a.batch {
            let nb = group.min(a.batch - b0);
            let (r0, r1) = (b0 * a.seq, (b0 + nb) * a.seq);
            let (hidden, mask) = (&mut a.hidden[r0 * h..r1 * h], &a.mask[r0..r1]);
            let row_tasks = dev.backend().threads() > 1
                && nb * a.seq >= ROW_TASKS_FROM
                && range.clone().all(|i| self.stacked_qkv(i).is_some());
            if row_tasks {
                self.row_task_blocks(dev, range.clone(), hidden, mask, nb, a.seq)?;
            } else {
                for i in range.clone() {
                    self.block_rows(dev, &self.blocks[i], hidden, mask, nb, a.seq)?;
                }
            }
            b0 += nb;
        }
        Ok(())
    }

    /// One encoder block over `batch` texts of `seq` tokens (`hidden`: their rows), in place,
    /// op by op.
    fn block_rows(
        &self,
        dev: &Device,
        blk: &Block,
        hidden: &mut [f32],
        mask: &[u8],
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        let (h, f) = (self.cfg.hidden, &*self.file);
        let rows = batch * seq;
        let cpu = dev.backend();
        let lin = |m: &Matrix, x: &[f32], out: &mut Vec<f32>| {
            out.resize(rows * m.n, 0.0);
            cpu.linear(x, rows, &m.linear(f), out)
                .map_err(ModelError::from)
        };
        with_scratch(&SCRATCH, |s| {
            let (qs, ks, vs, stride): (&[f32], &[f32], &[f32], usize) = match &blk.qkv {
                Qkv::Stacked(m) => {
                    // Attention reads q, k and v in place from the stacked product's rows.
                    lin(m, hidden, &mut s.qkv)?;
                    (&s.qkv[..], &s.qkv[h..], &s.qkv[2 * h..], 3 * h)
                }
                Qkv::Separate(parts) => {
                    let [mq, mk, mv] = &**parts;
                    lin(mq, hidden, &mut s.q)?;
                    lin(mk, hidden, &mut s.k)?;
                    lin(mv, hidden, &mut s.v)?;
                    (&s.q[..], &s.k[..], &s.v[..], h)
                }
            };
            let att = Attention {
                q: qs,
                k: ks,
                v: vs,
                stride,
                mask,
                batch,
                seq,
                heads: self.cfg.heads,
                head_dim: h / self.cfg.heads,
            };
            s.ctx.resize(rows * h, 0.0);
            dev.backend()
                .attention(&att, &mut s.ctx)
                .map_err(ModelError::from)?;
            lin(&blk.o, &s.ctx, &mut s.o)?;
            blk.attn_norm.residual(dev, hidden, &s.o, h, self.cfg.eps)?;
            lin(&blk.up, hidden, &mut s.up)?;
            cpu.gelu(&mut s.up);
            lin(&blk.down, &s.up, &mut s.o)?;
            blk.out_norm.residual(dev, hidden, &s.o, h, self.cfg.eps)
        })
    }

    /// Blocks `range` (each with stacked q/k/v) as row tasks, in place. Per block: attention
    /// split by heads, then one task per [`ROWS_PER_TASK`] rows through the attention output,
    /// the first residual norm, ffn_up, GELU, ffn_down, the second norm and the next block's
    /// q/k/v product, every op inside a task on the task's thread. Two fork-joins a block
    /// instead of one or two per op, and no thread idles between small ops (layer norm, GELU).
    /// The same operations on the same rows as [`Self::block_rows`], so the same result.
    fn row_task_blocks(
        &self,
        dev: &Device,
        range: Range<usize>,
        hidden: &mut [f32],
        mask: &[u8],
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        let (h, ffn, f, eps) = (self.cfg.hidden, self.cfg.ffn, &*self.file, self.cfg.eps);
        let rows = batch * seq;
        let cpu = dev.backend();
        let qkv_of = |i: usize| {
            self.stacked_qkv(i).ok_or_else(|| {
                ModelError::Input(format!("block {i} has no stacked q/k/v for row tasks"))
            })
        };
        let failed = FirstError::new();
        with_scratch(&SCRATCH, |s| {
            let Scratch { qkv, ctx, .. } = s;
            qkv.resize(rows * 3 * h, 0.0);
            ctx.resize(rows * h, 0.0);
            if range.is_empty() {
                return Ok(());
            }
            // The first block's q/k/v; each later one's comes from the task before it.
            let first = qkv_of(range.start)?;
            let x: &[f32] = hidden;
            cpu.for_chunks(qkv, ROWS_PER_TASK * 3 * h, &|t, out| {
                let (r0, n) = (t * ROWS_PER_TASK, out.len() / (3 * h));
                let r = cpu.linear(&x[r0 * h..(r0 + n) * h], n, &first.linear(f), out);
                failed.keep(r.map_err(ModelError::from));
            });
            failed.take()?;
            for i in range.clone() {
                let blk = &self.blocks[i];
                let att = Attention {
                    q: qkv,
                    k: &qkv[h..],
                    v: &qkv[2 * h..],
                    stride: 3 * h,
                    mask,
                    batch,
                    seq,
                    heads: self.cfg.heads,
                    head_dim: h / self.cfg.heads,
                };
                cpu.attention(&att, ctx).map_err(ModelError::from)?;
                let next = if i + 1 < range.end {
                    Some(qkv_of(i + 1)?)
                } else {
                    None
                };
                let ctx: &[f32] = ctx;
                let chunk = ROWS_PER_TASK * h;
                let task = |t: usize, x: &mut [f32], next_qkv: &mut [f32]| {
                    let (r0, n) = (t * ROWS_PER_TASK, x.len() / h);
                    with_scratch(&ROW_SCRATCH, |RowScratch { o, up }| {
                        o.resize(n * h, 0.0);
                        up.resize(n * ffn, 0.0);
                        let lin = |m: &Matrix, x: &[f32], out: &mut [f32]| {
                            cpu.linear(x, n, &m.linear(f), out)
                                .map_err(ModelError::from)
                        };
                        failed.keep((|| {
                            lin(&blk.o, &ctx[r0 * h..(r0 + n) * h], o)?;
                            blk.attn_norm.residual(dev, x, o, h, eps)?;
                            lin(&blk.up, x, up)?;
                            cpu.gelu(up);
                            lin(&blk.down, up, o)?;
                            blk.out_norm.residual(dev, x, o, h, eps)?;
                            match next {
                                Some(m) => lin(m, x, next_qkv),
                                None => Ok(()),
                            }
                        })())
                    })
                };
                cpu.for_chunk_pairs(hidden, chunk, qkv, ROWS_PER_TASK * 3 * h, &task)
                    .map_err(ModelError::from)?;
                failed.take()?;
            }
            Ok(())
        })
    }
}
