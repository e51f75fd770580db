//! Decoder ops on the CPU: RMSNorm, rotary position embeddings, SwiGLU and causal grouped-query
//! attention over a KV cache.

use std::cell::RefCell;
use std::sync::Arc;

use super::multiversion::multiversion;
use super::nn::{dot_f32, exp_approx, softmax_row};

use super::kv_cache::KvElem;
use super::CausalAttention;
use super::{CpuBackend, SharedMut};
use crate::ops::{OpError, RopeStyle};

multiversion! {
    /// `out = x / rms(x) * gamma`, row by row (rows of `gamma.len()`).
    pub(super) fn rms_norm_rows(x: &[f32], out: &mut [f32], gamma: &[f32], eps: f32) {
        let dim = gamma.len();
        for (row, o) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
            let ss = dot_f32(row, row);
            let inv = 1.0 / (ss / dim as f32 + eps).sqrt();
            for ((o, v), g) in o.iter_mut().zip(row).zip(gamma) {
                *o = v * inv * g;
            }
        }
    }
}

multiversion! {
    /// `gate = silu(gate) * up`, elementwise (SwiGLU's gating).
    pub(super) fn silu_mul(gate: &mut [f32], up: &[f32]) {
        for (g, u) in gate.iter_mut().zip(up) {
            *g = *g / (1.0 + exp_approx(-*g)) * u;
        }
    }
}

multiversion! {
    /// `gate = gelu_tanh(gate) * up`, elementwise (GeGLU's gating): `x / 2 * (1 + tanh(y))` is
    /// `x * sigmoid(2 y)`, so it takes one exponential, as SwiGLU does.
    pub(super) fn gelu_tanh_mul(gate: &mut [f32], up: &[f32]) {
        const C: f32 = 0.797_884_6; // sqrt(2 / pi)
        for (g, u) in gate.iter_mut().zip(up) {
            let x = *g;
            let y2 = -2.0 * C * (x + 0.044_715 * x * x * x);
            *g = x / (1.0 + exp_approx(y2)) * u;
        }
    }
}

/// Where [`rope_with`] finds its rows and their rotations.
#[derive(Clone, Copy)]
pub(super) struct RopeRows {
    /// Values from one row to the next; the first `heads * head_dim` of each are rotated.
    pub stride: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Row `i` takes the table's position `i % period`.
    pub period: usize,
}

/// A rotation table and what it was made for: `(pos0, n, inv_freq)`.
type RopeEntry = (usize, usize, Vec<f32>, Arc<[(f32, f32)]>);

/// Tables kept per thread: a forward pass asks for the same few (queries and keys, every layer
/// of one kind) dozens of times; made afresh each time they were 1% of a Gemma 3 prompt.
const ROPE_TABLES_KEPT: usize = 4;
/// The most rotations a kept table holds (512 KB: 512 positions of 128 pairs).
const ROPE_TABLE_KEPT_MAX: usize = 1 << 16;

thread_local! {
    static ROPE_TABLES: RefCell<Vec<RopeEntry>> = const { RefCell::new(Vec::new()) };
}

/// `(cos, sin)` of each position `pos0..pos0 + n` times each frequency, `[position][pair]`
/// (the last [`ROPE_TABLES_KEPT`] made on this thread are reused).
pub(super) fn rope_table(pos0: usize, n: usize, inv_freq: &[f32]) -> Arc<[(f32, f32)]> {
    ROPE_TABLES.with_borrow_mut(|kept| {
        let same = |e: &RopeEntry| e.0 == pos0 && e.1 == n && e.2 == inv_freq;
        if let Some(at) = kept.iter().position(same) {
            let e = kept.remove(at);
            let table = e.3.clone();
            kept.push(e);
            return table;
        }
        let table: Arc<[(f32, f32)]> = (pos0..pos0 + n)
            .flat_map(|p| {
                inv_freq.iter().map(move |f| {
                    let a = p as f32 * f;
                    (a.cos(), a.sin())
                })
            })
            .collect();
        // Only tables of a prompt chunk's size are kept: a long prompt's would hold memory.
        if table.len() <= ROPE_TABLE_KEPT_MAX {
            if kept.len() == ROPE_TABLES_KEPT {
                kept.remove(0);
            }
            kept.push((pos0, n, inv_freq.to_vec(), table.clone()));
        }
        table
    })
}

/// Rotates the first `2 * half` values of each head of each row of `x` by the rotations of
/// [`rope_table`] (`table`, `half` pairs per position; row `i` takes position `i % period`).
pub(super) fn rope_with(
    x: &mut [f32],
    r: RopeRows,
    table: &[(f32, f32)],
    half: usize,
    style: RopeStyle,
) {
    for (i, row) in x.chunks_exact_mut(r.stride).enumerate() {
        let cs = &table[(i % r.period) * half..][..half];
        for h in row[..r.heads * r.head_dim].chunks_exact_mut(r.head_dim) {
            for (p, &(cos, sin)) in cs.iter().enumerate() {
                let (a, b) = match style {
                    RopeStyle::Interleaved => (2 * p, 2 * p + 1),
                    RopeStyle::Halves => (p, p + half),
                };
                let (x0, x1) = (h[a], h[b]);
                h[a] = x0 * cos - x1 * sin;
                h[b] = x0 * sin + x1 * cos;
            }
        }
    }
}

/// One query row of one head against slots `first..first + len` of its KV head (`kt`: keys
/// transposed, `[head_dim][slots]`; `v`: `[slots][head_dim]`), softmax-weighted. The SIMD
/// kernels read f16 caches; an f32 cache runs the portable loop.
#[allow(clippy::too_many_arguments)]
fn attend_row<T: KvElem>(
    fast: bool,
    avx2: bool,
    q: &[f32],
    kt: &[T],
    v: &[T],
    first: usize,
    len: usize,
    scale: f32,
    s: &mut [f32],
    o: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(kt), Some(v)) = (fast, T::as_f16(kt), T::as_f16(v)) {
        // SAFETY: `fast` is set only where `attn_f16::available()` holds and head_dim % 16 == 0;
        // the caller checked the cache sizes and first + len <= slots.
        unsafe { super::attn_f16::attend_row(q, kt, v, first, len, scale, s, o) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let (true, Some(kt), Some(v)) = (avx2, T::as_f16(kt), T::as_f16(v)) {
        // SAFETY: `avx2` is set only where `attn_avx2::available()` holds and head_dim % 8 == 0;
        // the caller checked the cache sizes and first + len <= slots.
        unsafe { super::attn_avx2::attend_row(q, kt, v, first, len, scale, s, o) };
        return;
    }
    let _ = (fast, avx2);
    // The portable version: scores accumulated one key dimension at a time along positions.
    let hd = q.len();
    let cap = kt.len() / hd;
    let s = &mut s[..len];
    s.fill(0.0);
    for (d, &qd) in q.iter().enumerate() {
        let qd = qd * scale;
        let row = d * cap + first;
        for (sj, k) in s.iter_mut().zip(&kt[row..row + len]) {
            *sj += qd * k.to_f32();
        }
    }
    softmax_row(s);
    o.iter_mut().for_each(|x| *x = 0.0);
    for (j, &w) in s.iter().enumerate() {
        let at = (first + j) * hd;
        for (x, vv) in o.iter_mut().zip(&v[at..at + hd]) {
            *x += w * vv.to_f32();
        }
    }
}

impl CpuBackend {
    /// RMS normalisation: `out = x / sqrt(mean(x^2) + eps) * gamma`, rows of `gamma.len()`.
    pub fn rms_norm(
        &self,
        x: &[f32],
        out: &mut [f32],
        gamma: &[f32],
        eps: f32,
    ) -> Result<(), OpError> {
        let dim = gamma.len();
        OpError::check("rms norm output", out.len(), x.len())?;
        if dim == 0 || !x.len().is_multiple_of(dim) {
            return Err(OpError::Shape(format!(
                "rms norm: {} values are not rows of {dim}",
                x.len()
            )));
        }
        // Rows split across the threads where a prompt's make it worth it (row by row, so
        // the split changes no bit).
        // (One task runs inline on the calling thread.)
        let rows = x.len() / dim;
        let tasks = self
            .tasks_for(x.len() * super::ELEMENTWISE_MACS)
            .min(rows)
            .max(1);
        let per = rows.div_ceil(tasks) * dim;
        self.for_chunks(out, per, &|t, o| {
            rms_norm_rows(&self.kernels, &x[t * per..t * per + o.len()], o, gamma, eps)
        });
        Ok(())
    }

    /// SwiGLU gating, `gate = silu(gate) * up`, in place.
    pub fn silu_mul(&self, gate: &mut [f32], up: &[f32]) -> Result<(), OpError> {
        OpError::check("swiglu up", up.len(), gate.len())?;
        self.gated(gate, up, &|g, u| silu_mul(&self.kernels, g, u));
        Ok(())
    }

    /// GeGLU gating (GELU's tanh form), `gate = gelu_tanh(gate) * up`, in place.
    pub fn gelu_tanh_mul(&self, gate: &mut [f32], up: &[f32]) -> Result<(), OpError> {
        OpError::check("geglu up", up.len(), gate.len())?;
        self.gated(gate, up, &|g, u| gelu_tanh_mul(&self.kernels, g, u));
        Ok(())
    }

    /// `f(gate, up)` over equal chunks of both, split across the threads when a prompt's rows
    /// make it worth it (an exponential per value: a 128-row prompt's feed-forward gating was
    /// 1% of a Gemma 3 prompt on the main thread while the other waited). Elementwise, so
    /// the split does not change a bit.
    fn gated(&self, gate: &mut [f32], up: &[f32], f: &(dyn Fn(&mut [f32], &[f32]) + Sync)) {
        /// Work of one value, in multiply-adds (the exponential's polynomial and the rest).
        const GATE_MACS: usize = 16;
        let tasks = self.tasks_for(gate.len() * GATE_MACS);
        if tasks <= 1 {
            return f(gate, up);
        }
        // Whole 64-value runs per task, so each keeps the SIMD loop.
        let chunk = gate.len().div_ceil(tasks).next_multiple_of(64);
        self.for_chunks(gate, chunk, &|t, g| {
            f(g, &up[t * chunk..t * chunk + g.len()])
        });
    }

    /// Rotary position embeddings on rows of `heads * head_dim` values (row `i` at position
    /// `pos0 + i`): the first `2 * inv_freq.len()` values of each head are rotated in pairs.
    pub fn rope(
        &self,
        x: &mut [f32],
        heads: usize,
        head_dim: usize,
        pos0: usize,
        inv_freq: &[f32],
        style: RopeStyle,
    ) -> Result<(), OpError> {
        let width = heads * head_dim;
        if width == 0 || !x.len().is_multiple_of(width) || 2 * inv_freq.len() > head_dim {
            return Err(OpError::Shape(format!(
                "rope: {} values, {heads} heads of {head_dim}, {} frequencies",
                x.len(),
                inv_freq.len()
            )));
        }
        let rows = x.len() / width;
        let r = RopeRows {
            stride: width,
            heads,
            head_dim,
            period: rows.max(1),
        };
        // A prompt's rows split across the threads (its rope ran on one while the other
        // waited), each task reading its rows' part of one table (one task runs inline).
        let tasks = self
            .tasks_for(x.len() * super::ELEMENTWISE_MACS)
            .min(rows)
            .max(1);
        let table = rope_table(pos0, rows, inv_freq);
        let (per, half) = (rows.div_ceil(tasks), inv_freq.len());
        self.for_chunks(x, per * width, &|t, xs| {
            rope_with(xs, r, &table[t * per * half..], half, style)
        });
        Ok(())
    }

    /// Rotary embeddings of an encoder's padded batch (see [`crate::Backend::rope_texts`]),
    /// a text per pool task.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_texts(
        &self,
        x: &mut [f32],
        stride: usize,
        heads: usize,
        head_dim: usize,
        seq: usize,
        inv_freq: &[f32],
        style: RopeStyle,
    ) -> Result<(), OpError> {
        let width = heads * head_dim;
        if width == 0
            || seq == 0
            || width > stride
            || !x.len().is_multiple_of(stride * seq)
            || 2 * inv_freq.len() > head_dim
        {
            return Err(OpError::Shape(format!(
                "rope: {} values, rows of {stride}, texts of {seq}, {heads} heads of \
                 {head_dim}, {} frequencies",
                x.len(),
                inv_freq.len()
            )));
        }
        let r = RopeRows {
            stride,
            heads,
            head_dim,
            period: seq,
        };
        // Every text has the same positions: their rotations are computed once.
        let table = rope_table(0, seq, inv_freq);
        let half = inv_freq.len();
        self.for_chunks(x, seq * stride, &|_, text| {
            rope_with(text, r, &table, half, style)
        });
        Ok(())
    }

    /// Causal grouped-query attention of new query rows against a KV cache that already holds
    /// their keys and values (see [`CausalAttention`]). `out` is `[rows, heads * head_dim]`.
    pub fn causal_attention(
        &self,
        a: &CausalAttention<'_>,
        out: &mut [f32],
    ) -> Result<(), OpError> {
        self.causal_attention_many(std::slice::from_ref(a), &mut [out])
    }

    /// [`Self::causal_attention`] of several conversations (`a[i]` into `out[i]`), all checked
    /// before any runs, in one parallel region over every conversation's heads: a decode step
    /// of several conversations has a few rows each, too little work per call to share out.
    /// Each result is the one the single call gives, bit for bit.
    pub fn causal_attention_many<T: KvElem>(
        &self,
        a: &[CausalAttention<'_, T>],
        out: &mut [&mut [f32]],
    ) -> Result<(), OpError> {
        OpError::check("attention outputs", out.len(), a.len())?;
        // The SIMD kernels read f16 caches.
        let f16_cache = T::TYPE == crate::KvType::F16;
        #[cfg(target_arch = "x86_64")]
        let fast = f16_cache && self.kernels.attention_f16 && super::attn_f16::available();
        #[cfg(target_arch = "x86_64")]
        if fast {
            super::kernels::note_simd();
        }
        #[cfg(target_arch = "x86_64")]
        let avx2 =
            !fast && f16_cache && self.kernels.attention_f16_avx2 && super::attn_avx2::available();
        #[cfg(target_arch = "x86_64")]
        if avx2 {
            super::kernels::note_simd();
        }
        #[cfg(not(target_arch = "x86_64"))]
        let (fast, avx2) = {
            let _ = f16_cache;
            (false, false)
        };
        let plans = a
            .iter()
            .zip(out.iter())
            .map(|(a, o)| AttentionPlan::new(a, o, self.threads(), fast))
            .collect::<Result<Vec<_>, _>>()?;
        // Task t of the whole region: conversation i's task t - first[i].
        let mut first = Vec::with_capacity(plans.len() + 1);
        first.push(0);
        for p in &plans {
            first.push(first.last().copied().unwrap_or(0) + p.tasks);
        }
        let tasks = first.last().copied().unwrap_or(0);
        let work: usize = plans.iter().map(|p| p.work).sum();
        let outs: Vec<SharedMut<f32>> = out.iter_mut().map(|o| SharedMut::new(o)).collect();
        let run = |span: std::ops::Range<usize>| {
            let mut s = Vec::new();
            for task in span {
                let i = first.partition_point(|&f| f <= task) - 1;
                let (a, p) = (&a[i], &plans[i]);
                let fast = fast && a.head_dim.is_multiple_of(16);
                let avx2 = avx2 && a.head_dim.is_multiple_of(8);
                p.run(a, task - first[i], fast, avx2, &mut s, &outs[i]);
            }
        };
        if tasks <= 1 || work < 1 << 15 {
            run(0..tasks);
        } else {
            self.parallel(tasks, &|t| run(t..t + 1));
        }
        Ok(())
    }
}

/// Whether heads of `head_dim` can share a task and run rows in pairs
/// ([`super::attn_f16::attend_group`], [`super::attn_f16::attend_pair`]).
#[cfg(target_arch = "x86_64")]
fn groups_heads(head_dim: usize) -> bool {
    head_dim.is_multiple_of(16) && head_dim <= super::attn_f16::GROUP_MAX_HEAD_DIM
}
#[cfg(not(target_arch = "x86_64"))]
fn groups_heads(_: usize) -> bool {
    false
}

/// One conversation's attention, checked, cut into tasks over heads (and over row blocks when
/// there are many rows, so both threads work in prefill too). With the AVX-512 kernel a task
/// takes up to four query heads of one KV head ([`super::attn_f16::attend_group`]: each key
/// and value converted once for all of them).
struct AttentionPlan {
    rows: usize,
    /// Tasks per head group; task `b` takes rows `b, b + row_blocks, ...`.
    row_blocks: usize,
    /// Query heads per task (all of one KV head).
    heads: usize,
    /// A task's rows run two at a time ([`super::attn_f16::attend_pair`]; x86-64 only).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pairs: bool,
    tasks: usize,
    /// The most positions a row reads.
    longest: usize,
    work: usize,
}

impl AttentionPlan {
    fn new<T: KvElem>(
        a: &CausalAttention<'_, T>,
        out: &[f32],
        threads: usize,
        fast: bool,
    ) -> Result<Self, OpError> {
        let (hd, heads, kvh) = (a.head_dim, a.heads, a.kv_heads);
        if hd == 0 || kvh == 0 || heads % kvh != 0 {
            return Err(OpError::Shape(format!(
                "attention: {heads} heads over {kvh} kv heads of {hd}"
            )));
        }
        let rows = a.q.len() / (heads * hd).max(1);
        OpError::check("attention q", a.q.len(), rows * heads * hd)?;
        OpError::check("attention output", out.len(), a.q.len())?;
        let shape = a.shape();
        let plane = shape.slots() * hd;
        OpError::check("attention k cache", a.k.len(), kvh * plane)?;
        OpError::check("attention v cache", a.v.len(), kvh * plane)?;
        shape.check_positions(a.pos0, rows)?;
        let row_blocks = if rows >= 8 { threads } else { 1 };
        let group = heads / kvh;
        // The most heads per task (up to four, all of one KV head) that still leave a task for
        // every thread (rows split between threads leave one whatever the heads).
        let grouped = fast && groups_heads(hd);
        let per_task = if !grouped {
            1
        } else {
            (1..=4)
                .rev()
                .find(|&g| group % g == 0 && heads / g * row_blocks >= threads)
                .unwrap_or(1)
        };
        Ok(AttentionPlan {
            rows,
            row_blocks,
            heads: per_task,
            pairs: grouped,
            tasks: heads / per_task * row_blocks,
            longest: shape.longest_span(a.pos0, rows),
            work: heads * rows * shape.longest_span(a.pos0, rows) * hd,
        })
    }

    /// Task `task`: `self.heads` query heads over one block of rows, into `out` (the kernels
    /// write the task's rows of it directly: through a buffer, a row's copy was a `memmove`
    /// call per row and head group, 1.5% of a Gemma 3 prompt).
    #[allow(clippy::too_many_arguments)]
    // Rows are taken in pairs with `peek` on x86-64 only.
    #[cfg_attr(not(target_arch = "x86_64"), allow(clippy::while_let_on_iterator))]
    fn run<T: KvElem>(
        &self,
        a: &CausalAttention<'_, T>,
        task: usize,
        fast: bool,
        avx2: bool,
        s: &mut Vec<f32>,
        out: &SharedMut<f32>,
    ) {
        let (hd, heads, n) = (a.head_dim, a.heads, self.heads);
        let shape = a.shape();
        let plane = shape.slots() * hd;
        let scale = 1.0 / (hd as f32).sqrt();
        let (h0, blk) = (task / self.row_blocks * n, task % self.row_blocks);
        let g = h0 / (heads / a.kv_heads);
        let k = &a.k[g * plane..(g + 1) * plane];
        let v = &a.v[g * plane..(g + 1) * plane];
        s.resize(s.len().max(2 * n * self.longest), 0.0);
        // Rows dealt out in turn: a causal row's work grows with its position, so contiguous
        // halves left one thread a quarter of a prompt's attention and the other three quarters.
        let mut mine = (blk..self.rows).step_by(self.row_blocks).peekable();
        while let Some(i) = mine.next() {
            let at = (i * heads + h0) * hd;
            let q = &a.q[at..at + n * hd];
            let (first, len) = shape.span(a.pos0 + i);
            #[cfg(target_arch = "x86_64")]
            if let Some(&i2) = mine.peek() {
                if self.pair(a, (k, v), h0, [i, i2], s, out) {
                    mine.next();
                    continue;
                }
            }
            // SAFETY: (row i, heads h0..h0 + n) of this conversation belong to one task.
            let o = unsafe { out.slice(at, n * hd) };
            #[cfg(target_arch = "x86_64")]
            if let (true, Some(k), Some(v)) = (n > 1, T::as_f16(k), T::as_f16(v)) {
                // SAFETY: `n > 1` only with the AVX-512 kernel available (`fast`, an f16
                // cache), head_dim a multiple of 16 up to GROUP_MAX_HEAD_DIM and n up to 4
                // (`new`); the cache sizes and first + len <= slots were checked.
                unsafe {
                    use super::attn_f16::attend_group;
                    match n {
                        2 => attend_group::<2>(q, k, v, first, len, scale, s, o),
                        3 => attend_group::<3>(q, k, v, first, len, scale, s, o),
                        _ => attend_group::<4>(q, k, v, first, len, scale, s, o),
                    }
                }
            } else {
                attend_row(fast, avx2, q, k, v, first, len, scale, s, o);
            }
            #[cfg(not(target_arch = "x86_64"))]
            attend_row(fast, avx2, q, k, v, first, len, scale, s, o);
        }
    }

    /// Rows `i[0]` and `i[1]` of heads `h0..h0 + self.heads` through
    /// [`super::attn_f16::attend_pair`], into `out`, where the plan pairs rows, the cache is
    /// f16 and both rows read from the same first slot; false (nothing done) otherwise.
    #[cfg(target_arch = "x86_64")]
    #[allow(clippy::too_many_arguments)]
    fn pair<T: KvElem>(
        &self,
        a: &CausalAttention<'_, T>,
        (k, v): (&[T], &[T]),
        h0: usize,
        i: [usize; 2],
        s: &mut [f32],
        out: &SharedMut<f32>,
    ) -> bool {
        let (Some(k), Some(v)) = (T::as_f16(k), T::as_f16(v)) else {
            return false;
        };
        let (hd, n, shape) = (a.head_dim, self.heads, a.shape());
        let [(first, len0), (first1, len1)] = i.map(|i| shape.span(a.pos0 + i));
        if !self.pairs || first1 != first || len1 < len0 {
            return false;
        }
        let at = i.map(|i| (i * a.heads + h0) * hd);
        let qs = at.map(|at| &a.q[at..at + n * hd]);
        // SAFETY: (rows i, heads h0..h0 + n) belong to this task alone, and the two rows
        // differ (the plan's rows are distinct).
        let (o0, o1) = unsafe { (out.slice(at[0], n * hd), out.slice(at[1], n * hd)) };
        let (l, scale) = ([len0, len1], 1.0 / (hd as f32).sqrt());
        // SAFETY: `pairs` only with the AVX-512 kernel available (`fast`, an f16 cache),
        // head_dim a multiple of 16 up to the group maximum and n up to 4 (`new`); the cache
        // sizes and first + len <= slots were checked.
        unsafe {
            use super::attn_f16::attend_pair;
            match n {
                1 => attend_pair::<1, 4>(qs, k, v, first, l, scale, s, [o0, o1]),
                2 => attend_pair::<2, 4>(qs, k, v, first, l, scale, s, [o0, o1]),
                3 => attend_pair::<3, 4>(qs, k, v, first, l, scale, s, [o0, o1]),
                _ => attend_pair::<4, 2>(qs, k, v, first, l, scale, s, [o0, o1]),
            }
        }
        true
    }
}
