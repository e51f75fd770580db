//! The CPU backend under the contract ([`Backend`]): tensors are f32 slices, vectors f32
//! vectors, and the KV cache ([`CpuKvCache`]) in the layout its attention kernel reads. The
//! encoder blocks are fused into row tasks (see [`CpuBackend::encoder_blocks`]).

pub use super::kv_cache::CpuKvCache;
use super::kv_cache::Many;
use super::Attention;
use crate::backend::{Act, Backend, EncoderAttention, KvShape, Op, WeightSource};
use crate::encoder::{self, EncoderBlock, EncoderDims, Qkv, Scratch};
use crate::encoder_rotary::{self, RotaryBlock};
use crate::ops::{OpError, RopeStyle};

use super::{with_scratch, CpuBackend, CpuMatrix, Linear};

/// Token rows from which blocks on several threads run as row tasks. Below this, ops split
/// their columns instead (each task then reads only its share of the weights, which matters
/// more for few rows).
const ROW_TASKS_FROM: usize = 64;
/// Rows per row task: a multiple of the GEMM's 4-row tile, and enough tasks (4 at 128 rows)
/// for a thread that was preempted to be covered by the others.
const ROWS_PER_TASK: usize = 32;

thread_local! {
    /// The blocks' buffers, kept per thread so a steady-state forward pass does not allocate.
    static SCRATCH: std::cell::RefCell<Scratch<CpuBackend>> =
        std::cell::RefCell::new(Scratch::default());
    /// A row task's buffers (`o`, `up`).
    static ROW_SCRATCH: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// CPU buffers start empty (so the thread-local scratch can be made without a backend).
impl Default for Scratch<CpuBackend> {
    fn default() -> Self {
        Scratch {
            qkv: Vec::new(),
            k: Vec::new(),
            v: Vec::new(),
            ctx: Vec::new(),
            o: Vec::new(),
            up: Vec::new(),
        }
    }
}

/// The first error a task met (tasks cannot return one).
struct FirstError(std::sync::Mutex<Option<OpError>>);

impl FirstError {
    fn keep(&self, r: Result<(), OpError>) {
        if let Err(e) = r {
            let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(e);
        }
    }

    fn take(&self) -> Result<(), OpError> {
        match self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl CpuBackend {
    /// Blocks (each with stacked q/k/v) as row tasks, in place. Per block: attention split by
    /// heads, then one task per [`ROWS_PER_TASK`] rows through [`encoder::rows_part`] and the
    /// next block's q/k/v product, every op inside a task on the task's thread. Two fork-joins
    /// a block instead of one or two per op, and no thread idles between small ops.
    #[allow(clippy::too_many_arguments)]
    fn row_task_blocks(
        &self,
        blocks: &[EncoderBlock<CpuBackend>],
        dims: &EncoderDims,
        hidden: &mut [f32],
        mask: &[u8],
        batch: usize,
        seq: usize,
        s: &mut Scratch<CpuBackend>,
    ) -> Result<(), OpError> {
        let (h, ffn) = (dims.hidden, dims.ffn);
        let rows = batch * seq;
        fn stacked(b: &EncoderBlock<CpuBackend>) -> Result<&CpuMatrix, OpError> {
            match &b.qkv {
                Qkv::Stacked(m) => Ok(m),
                Qkv::Separate(_) => Err(OpError::Shape("row tasks need stacked q/k/v".into())),
            }
        }
        let failed = FirstError(std::sync::Mutex::new(None));
        let Some(first) = blocks.first() else {
            return Ok(());
        };
        s.qkv.resize(rows * 3 * h, 0.0);
        // The first block's q/k/v; each later one's comes from the task before it.
        let first = stacked(first)?;
        let x: &[f32] = hidden;
        self.for_chunks(&mut s.qkv, ROWS_PER_TASK * 3 * h, &|t, out| {
            let (r0, n) = (t * ROWS_PER_TASK, out.len() / (3 * h));
            failed.keep(self.linear(&x[r0 * h..(r0 + n) * h], n, &first.linear(), out));
        });
        failed.take()?;
        for (i, blk) in blocks.iter().enumerate() {
            encoder::attend(self, blk, dims, s, mask, batch, seq)?;
            let next = match blocks.get(i + 1) {
                Some(b) => Some(stacked(b)?),
                None => None,
            };
            let ctx: &[f32] = &s.ctx;
            let task = |t: usize, x: &mut [f32], next_qkv: &mut [f32]| {
                let (r0, n) = (t * ROWS_PER_TASK, x.len() / h);
                with_scratch(&ROW_SCRATCH, |(o, up)| {
                    o.resize(n * h, 0.0);
                    up.resize(n * ffn, 0.0);
                    let ctx = &ctx[r0 * h..(r0 + n) * h];
                    failed.keep((|| {
                        encoder::rows_part(self, blk, dims, ctx, x, n, o, up)?;
                        match next {
                            Some(m) => self.linear(x, n, &m.linear(), next_qkv),
                            None => Ok(()),
                        }
                    })())
                })
            };
            let chunk = ROWS_PER_TASK * h;
            self.for_chunk_pairs(hidden, chunk, &mut s.qkv, ROWS_PER_TASK * 3 * h, &task)?;
            failed.take()?;
        }
        Ok(())
    }
}

impl Backend for CpuBackend {
    type Tensor = [f32];
    type Buffer = Vec<f32>;
    type Matrix = CpuMatrix;
    type Vector = Vec<f32>;
    type KvCache = CpuKvCache;

    fn describe(&self) -> String {
        let t = self.threads();
        let s = if t == 1 { "" } else { "s" };
        format!("cpu ({} kernels, {t} thread{s})", self.kernels().name)
    }

    /// Every op of the contract, and every weight type with either activation (int8 products
    /// re-quantize other types to Q8_0 at load; f32 products decode them as stored).
    fn supports(&self, op: Op) -> bool {
        match op {
            Op::Linear(_, dtype) => dtype.format().linear_cpu,
            _ => true,
        }
    }

    fn prepare(&self, w: WeightSource<'_>) -> Result<CpuMatrix, OpError> {
        self.prepare_matrix(w)
    }

    fn vector(&self, v: &[f32]) -> Vec<f32> {
        v.to_vec()
    }

    fn upload(&self, x: Vec<f32>) -> Vec<f32> {
        self.transfers.note();
        x
    }

    fn download(&self, x: Vec<f32>) -> Result<Vec<f32>, OpError> {
        self.transfers.note();
        Ok(x)
    }

    fn transfers(&self) -> u64 {
        self.transfers.get()
    }

    fn buffer(&self, len: usize) -> Vec<f32> {
        vec![0.0; len]
    }

    fn copy(
        &self,
        src: &[f32],
        src_at: usize,
        dst: &mut [f32],
        dst_at: usize,
        len: usize,
    ) -> Result<(), OpError> {
        crate::backend::check_copy(src.len(), src_at, dst.len(), dst_at, len)?;
        dst[dst_at..dst_at + len].copy_from_slice(&src[src_at..src_at + len]);
        Ok(())
    }

    fn resize(&self, b: &mut Vec<f32>, len: usize) {
        b.resize(len, 0.0);
    }

    fn len(&self, x: &[f32]) -> usize {
        x.len()
    }

    fn linear(
        &self,
        x: &[f32],
        rows: usize,
        w: &CpuMatrix,
        out: &mut [f32],
    ) -> Result<(), OpError> {
        CpuBackend::linear(self, x, rows, &w.linear(), out)
    }

    fn linear_seqs(
        &self,
        x: &[f32],
        seqs: &[usize],
        w: &CpuMatrix,
        out: &mut [f32],
    ) -> Result<(), OpError> {
        CpuBackend::linear_seqs(self, x, seqs, &w.linear(), out)
    }

    fn linear_seqs_each(
        &self,
        x: &[f32],
        seqs: &[usize],
        ws: &[&CpuMatrix],
        outs: &mut [&mut [f32]],
    ) -> Result<(), OpError> {
        let lins: Vec<Linear<'_>> = ws.iter().map(|w| w.linear()).collect();
        CpuBackend::linear_seqs_each(self, x, seqs, &lins, outs)
    }

    fn layer_norm(
        &self,
        x: &mut [f32],
        residual: Option<&[f32]>,
        dim: usize,
        gamma: &Vec<f32>,
        beta: &Vec<f32>,
        eps: f32,
    ) -> Result<(), OpError> {
        match residual {
            Some(d) => self.add_layer_norm(x, d, dim, gamma, beta, eps),
            None => CpuBackend::layer_norm(self, x, dim, gamma, beta, eps),
        }
    }

    fn activate(&self, x: &mut [f32], act: Act) -> Result<(), OpError> {
        match act {
            Act::Gelu => self.gelu(x),
            Act::Tanh => x.iter_mut().for_each(|v| *v = v.tanh()),
            Act::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
            Act::QuickGelu => self.quick_gelu(x),
        }
        Ok(())
    }

    fn attention(&self, a: &EncoderAttention<'_, [f32]>, out: &mut [f32]) -> Result<(), OpError> {
        let [qo, ko, vo] = a.offsets;
        fn part<'a>(s: &'a [f32], o: usize, what: &str) -> Result<&'a [f32], OpError> {
            s.get(o..)
                .ok_or_else(|| OpError::Shape(format!("attention {what} offset {o} past its end")))
        }
        let att = Attention {
            q: part(a.q, qo, "q")?,
            k: part(a.k, ko, "k")?,
            v: part(a.v, vo, "v")?,
            stride: a.stride,
            mask: a.mask,
            batch: a.batch,
            seq: a.seq,
            heads: a.heads,
            head_dim: a.head_dim,
            causal: a.causal,
            window: a.window,
        };
        CpuBackend::attention(self, &att, out)
    }

    fn rms_norm(
        &self,
        x: &[f32],
        out: &mut [f32],
        dim: usize,
        gamma: &Vec<f32>,
        eps: f32,
    ) -> Result<(), OpError> {
        OpError::check("rms norm weight", gamma.len(), dim)?;
        CpuBackend::rms_norm(self, x, out, gamma, eps)
    }

    fn silu_mul(&self, gate: &mut [f32], up: &[f32]) -> Result<(), OpError> {
        CpuBackend::silu_mul(self, gate, up)
    }

    fn gelu_tanh_mul(&self, gate: &mut [f32], up: &[f32]) -> Result<(), OpError> {
        CpuBackend::gelu_tanh_mul(self, gate, up)
    }

    fn add(&self, a: &mut [f32], b: &[f32]) -> Result<(), OpError> {
        CpuBackend::add(self, a, b)
    }

    fn mul(&self, a: &mut [f32], b: &[f32]) -> Result<(), OpError> {
        CpuBackend::mul(self, a, b)
    }

    fn argmax(&self, x: &[f32], width: usize) -> Result<Vec<u32>, OpError> {
        if width == 0 || !x.len().is_multiple_of(width) {
            return Err(OpError::Shape(format!(
                "argmax: {} values are not rows of {width}",
                x.len()
            )));
        }
        Ok(x.chunks_exact(width)
            .map(|r| {
                let mut best = 0;
                for (i, &v) in r.iter().enumerate() {
                    if v > r[best] {
                        best = i;
                    }
                }
                best as u32
            })
            .collect())
    }

    fn rope(
        &self,
        x: &mut [f32],
        heads: usize,
        head_dim: usize,
        pos0: usize,
        inv_freq: &Vec<f32>,
        style: RopeStyle,
    ) -> Result<(), OpError> {
        CpuBackend::rope(self, x, heads, head_dim, pos0, inv_freq, style)
    }

    fn rope_texts(
        &self,
        x: &mut [f32],
        stride: usize,
        heads: usize,
        head_dim: usize,
        seq: usize,
        inv_freq: &Vec<f32>,
        style: RopeStyle,
    ) -> Result<(), OpError> {
        CpuBackend::rope_texts(self, x, stride, heads, head_dim, seq, inv_freq, style)
    }

    fn kv_cache(&self, shape: KvShape) -> Result<CpuKvCache, OpError> {
        CpuKvCache::new(shape)
    }

    fn kv_copy(&self, src: &CpuKvCache, dst: &mut CpuKvCache) -> Result<(), OpError> {
        dst.copy_from(src)
    }

    fn kv_append(
        &self,
        cache: &mut CpuKvCache,
        layer: usize,
        pos0: usize,
        k: &[f32],
        v: &[f32],
    ) -> Result<(), OpError> {
        cache.append(layer, pos0, k, v)
    }

    fn causal_attention(
        &self,
        q: &[f32],
        cache: &CpuKvCache,
        layer: usize,
        pos0: usize,
        heads: usize,
        out: &mut [f32],
    ) -> Result<(), OpError> {
        Backend::causal_attention_many(self, &[q], &[cache], layer, &[pos0], heads, &mut [out])
    }

    fn causal_attention_many(
        &self,
        q: &[&[f32]],
        caches: &[&CpuKvCache],
        layer: usize,
        pos0: &[usize],
        heads: usize,
        out: &mut [&mut [f32]],
    ) -> Result<(), OpError> {
        crate::backend::check_many(q.len(), caches.len(), pos0.len(), out.len())?;
        match CpuKvCache::many(caches, q, layer, pos0, heads)? {
            Many::F16(all) => CpuBackend::causal_attention_many(self, &all, out),
            Many::F32(all) => CpuBackend::causal_attention_many(self, &all, out),
        }
    }

    /// Long batches run a few texts at a time (`encoder::GROUP_ROWS` token rows) through every block, as
    /// BERT's below; each op of a group splits across the pool.
    fn rotary_encoder_blocks(
        &self,
        blocks: &[RotaryBlock<CpuBackend>],
        dims: &EncoderDims,
        x: &mut [f32],
        mask: &[u8],
        batch: usize,
        seq: usize,
    ) -> Result<(), OpError> {
        text_groups(x, mask, batch, seq, dims.hidden, |xs, ms, nb| {
            encoder_rotary::rotary_blocks(self, blocks, dims, xs, ms, nb, seq)
        })
    }

    /// Long batches run a few texts at a time (`encoder::GROUP_ROWS` token rows) through every block,
    /// so the intermediates stay in cache. Within a group, on one thread or for few rows, the
    /// contract's op-by-op default runs (each op split across the pool by output columns); from
    /// `ROW_TASKS_FROM` rows on several threads, row tasks (`row_task_blocks`). Both
    /// run the same ops on the same rows: the same result, bit for bit.
    fn encoder_blocks(
        &self,
        blocks: &[EncoderBlock<CpuBackend>],
        dims: &EncoderDims,
        x: &mut [f32],
        mask: &[u8],
        batch: usize,
        seq: usize,
    ) -> Result<(), OpError> {
        let stacked = blocks.iter().all(|b| matches!(b.qkv, Qkv::Stacked(_)));
        with_scratch(&SCRATCH, |s| {
            text_groups(x, mask, batch, seq, dims.hidden, |xs, ms, nb| {
                if stacked && self.threads() > 1 && nb * seq >= ROW_TASKS_FROM {
                    self.row_task_blocks(blocks, dims, xs, ms, nb, seq, s)
                } else {
                    encoder::blocks_with_scratch(self, blocks, dims, xs, ms, nb, seq, s)
                }
            })
        })
    }
}

/// Runs `f(rows, mask, texts)` on groups of whole texts of at most [`encoder::GROUP_ROWS`] token rows (a
/// text longer than that alone) of a padded batch (`x`: rows of `hidden`), so the blocks'
/// intermediates stay in cache.
fn text_groups(
    x: &mut [f32],
    mask: &[u8],
    batch: usize,
    seq: usize,
    hidden: usize,
    mut f: impl FnMut(&mut [f32], &[u8], usize) -> Result<(), OpError>,
) -> Result<(), OpError> {
    OpError::check("encoder input", x.len(), batch * seq * hidden)?;
    OpError::check("encoder mask", mask.len(), batch * seq)?;
    let group = encoder::texts_per_group(seq);
    let mut b0 = 0;
    while b0 < batch {
        let nb = group.min(batch - b0);
        let (r0, r1) = (b0 * seq, (b0 + nb) * seq);
        f(&mut x[r0 * hidden..r1 * hidden], &mask[r0..r1], nb)?;
        b0 += nb;
    }
    Ok(())
}
