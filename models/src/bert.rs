//! BERT-family encoders: BERT, MiniLM and DistilBERT (post-layer-norm transformer encoders).
//!
//! Paper: Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language
//! Understanding" (2019); DistilBERT: Sanh et al. (2019). Reference implementation matched:
//! Hugging Face transformers' `BertModel` / `DistilBertModel` (eager attention), with
//! sentence-transformers' pooling and normalisation on top.
//!
//! The model is a chain of stages, the unit the split planner cuts between:
//! `embeddings` (token + position + type embeddings, layer norm), `block 0..n-1` (self-attention
//! and feed-forward, each followed by residual add and layer norm), and `head` (pooling and L2
//! normalisation, or the classification head).

use std::ops::Range;
use std::sync::Arc;

use edgecut_backends::cpu::with_scratch;
use edgecut_backends::ops::{l2_normalize, pool, softmax, ActQuant, Attention, Pooling};
use edgecut_backends::Device;
use edgecut_runtime::gguf::{Array, GgufFile, Value};

use crate::error::{ModelError, Result};
use crate::weights::{vector, Matrix, Table};

/// Hyper-parameters and options read from the file.
#[derive(Clone, Debug)]
pub struct BertConfig {
    /// Hidden size.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Encoder blocks.
    pub layers: usize,
    /// Feed-forward size.
    pub ffn: usize,
    /// Position embeddings (the hard limit on tokens per text).
    pub context: usize,
    /// Default truncation length (sentence-transformers' `max_seq_length`, else `context`).
    pub max_seq_len: usize,
    /// Layer norm epsilon.
    pub eps: f32,
    /// Sentence pooling.
    pub pooling: Pooling,
    /// Whether sentence vectors are L2-normalised.
    pub normalize: bool,
    /// Class labels of a classification head (empty without one).
    pub labels: Vec<String>,
    /// Activation of the classification head's first layer: `tanh` (BERT) or `relu`
    /// (DistilBERT).
    pub classifier_activation: String,
}

impl BertConfig {
    /// Reads the configuration of a `bert` file (edgecut's or llama.cpp's).
    pub fn from_gguf(f: &GgufFile) -> Result<BertConfig> {
        let arch = f.architecture()?;
        if arch != "bert" {
            return Err(ModelError::Unsupported(format!(
                "model architecture {arch:?} is not a BERT-family encoder (embed and classify need \
                 general.architecture = \"bert\")"
            )));
        }
        let u = |k: &str| f.get_u64(&format!("bert.{k}")).map(|v| v as usize);
        let (hidden, heads, layers, ffn, context) = (
            u("embedding_length")?,
            u("attention.head_count")?,
            u("block_count")?,
            u("feed_forward_length")?,
            u("context_length")?,
        );
        if heads == 0 || hidden % heads != 0 || layers == 0 || context == 0 {
            return Err(ModelError::Unsupported(format!(
                "bad hyper-parameters: hidden {hidden}, heads {heads}, blocks {layers}, context {context}"
            )));
        }
        let pooling = match f.get_str("edgecut.pooling").ok() {
            Some("cls") => Pooling::Cls,
            Some("mean") => Pooling::Mean,
            Some(other) => return Err(ModelError::Unsupported(format!("pooling {other:?}"))),
            // llama.cpp's converter records pooling as LLAMA_POOLING_TYPE (1 mean, 2 CLS).
            None => match f.get_u64("bert.pooling_type").unwrap_or(2) {
                1 => Pooling::Mean,
                _ => Pooling::Cls,
            },
        };
        let labels = match f.get("edgecut.labels") {
            Some(Value::Array(Array::Str(v))) => v.clone(),
            _ => Vec::new(),
        };
        let act = f.get_str("edgecut.hidden_act").unwrap_or("gelu");
        if act != "gelu" {
            return Err(ModelError::Unsupported(format!(
                "hidden activation {act:?} (edgecut runs gelu)"
            )));
        }
        Ok(BertConfig {
            hidden,
            heads,
            layers,
            ffn,
            context,
            max_seq_len: f
                .get_u64("edgecut.max_seq_len")
                .map_or(context, |v| (v as usize).min(context)),
            eps: f
                .get_f64("bert.attention.layer_norm_epsilon")
                .unwrap_or(1e-12) as f32,
            pooling,
            // llama.cpp normalises embeddings by default; so does edgecut when the file is silent.
            normalize: f
                .get("edgecut.normalize")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            labels,
            classifier_activation: f
                .get_str("edgecut.classifier.activation")
                .unwrap_or("tanh")
                .to_string(),
        })
    }
}

#[derive(Debug)]
pub(crate) struct Norm {
    pub(crate) gamma: Vec<f32>,
    pub(crate) beta: Vec<f32>,
}

impl Norm {
    fn load(f: &GgufFile, prefix: &str, dim: usize) -> Result<Norm> {
        Ok(Norm {
            gamma: vector(f, &format!("{prefix}.weight"), dim)?,
            beta: vector(f, &format!("{prefix}.bias"), dim)?,
        })
    }

    /// BERT's post-norm residual: `x = LayerNorm(x + delta)`, rows of `dim`.
    fn residual(
        &self,
        dev: &Device,
        x: &mut [f32],
        delta: &[f32],
        dim: usize,
        eps: f32,
    ) -> Result<()> {
        dev.backend()
            .add_layer_norm(x, delta, dim, &self.gamma, &self.beta, eps)
            .map_err(op)
    }
}

#[derive(Debug)]
pub(crate) enum Qkv {
    Stacked(Matrix),
    Separate(Box<[Matrix; 3]>),
}

#[derive(Debug)]
pub(crate) struct Block {
    /// q, k and v, stacked (3 x hidden rows) when their storage allows, else separate.
    pub(crate) qkv: Qkv,
    pub(crate) o: Matrix,
    pub(crate) attn_norm: Norm,
    pub(crate) up: Matrix,
    pub(crate) down: Matrix,
    pub(crate) out_norm: Norm,
}

/// The activation between stages: token vectors of a padded batch and its mask.
#[derive(Clone, Debug)]
pub struct Activation {
    /// `[batch * seq, hidden]`.
    pub hidden: Vec<f32>,
    /// `[batch * seq]`: 1 for tokens, 0 for padding.
    pub mask: Vec<u8>,
    /// Texts in the batch.
    pub batch: usize,
    /// Tokens per text (padded).
    pub seq: usize,
}

/// Token rows an encoder block runs at once when a batch has more (whole texts; a text longer
/// than this runs alone): 256 rows keep MiniLM's ffn_up output (1.5 MiB) within L2/L3 reach.
const GROUP_ROWS: usize = 256;

/// Token rows from which a block on several threads runs as row tasks: each task takes
/// [`ROWS_PER_TASK`] rows through the q/k/v product, then (after attention, split by heads)
/// through the attention output, both residual norms, the feed-forward layers and GELU, with
/// every op inside the task on the task's thread. Three fork-joins a block instead of one or two
/// per op, and no thread idles between small ops. Below this, ops split their columns instead
/// (each task then reads only its share of the weights, which matters more for few rows).
const ROW_TASKS_FROM: usize = 64;
/// Rows per row task: a multiple of the GEMM's 4-row tile, and enough tasks (4 at 128 rows)
/// for a thread that was preempted to be covered by the others.
const ROWS_PER_TASK: usize = 32;

/// Intermediate buffers of one encoder block, kept per thread so the steady-state forward pass
/// does not allocate.
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

/// A row task's buffers (see [`ROW_TASKS_FROM`]).
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

/// A loaded BERT-family encoder.
pub struct Bert {
    /// Configuration.
    pub cfg: BertConfig,
    file: Arc<GgufFile>,
    tok: Table,
    pos: Table,
    types: Option<Table>,
    emb_norm: Norm,
    blocks: Vec<Block>,
    head: Option<(Matrix, Matrix)>,
    /// The blocks uploaded, when loaded for a GPU device.
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    gpu: Option<crate::bert_gpu::GpuEncoder>,
}

impl std::fmt::Debug for Bert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Bert({} blocks, hidden {})",
            self.cfg.layers, self.cfg.hidden
        )
    }
}

impl Bert {
    /// Loads the encoder from an open file for `dev`, checking every tensor's shape.
    pub fn load(file: Arc<GgufFile>, dev: &Device) -> Result<Bert> {
        let f = &*file;
        let cfg = BertConfig::from_gguf(f)?;
        let h = cfg.hidden;
        let tok = Table::load(f, "token_embd.weight", h)?;
        let pos = Table::load(f, "position_embd.weight", h)?;
        if pos.vocab < cfg.context {
            return Err(ModelError::Input(format!(
                "position_embd.weight has {} rows, the context length is {}",
                pos.vocab, cfg.context
            )));
        }
        let types = match f.tensor("token_types.weight") {
            Some(_) => Some(Table::load(f, "token_types.weight", h)?),
            None => None,
        };
        let emb_norm = Norm::load(f, "token_embd_norm", h)?;
        let blocks = (0..cfg.layers)
            .map(|i| {
                let p = |n: &str| format!("blk.{i}.{n}");
                // Layer-norm outputs carry outlier channels that make int8 per 32 values coarse
                // (MiniLM's worst cosine to PyTorch 0.9981); q, k, v and ffn_up read them, so
                // their outlier columns run in f32 (worst cosine 0.9993). The attention output
                // and ffn_down inputs gain little from it.
                let x2 = |mut m: Matrix| {
                    m.act = ActQuant::Int8Outliers;
                    m
                };
                Ok(Block {
                    qkv: {
                        let parts = ["attn_q", "attn_k", "attn_v"]
                            .iter()
                            .map(|n| Matrix::load(f, dev, &p(n), h, h, true).map(x2))
                            .collect::<Result<Vec<_>>>()?;
                        match Matrix::stack(parts, f, dev) {
                            Ok(m) => Qkv::Stacked(m),
                            Err(parts) => {
                                Qkv::Separate(Box::new(parts.try_into().expect("three parts")))
                            }
                        }
                    },
                    o: Matrix::load(f, dev, &p("attn_output"), h, h, true)?,
                    attn_norm: Norm::load(f, &p("attn_output_norm"), h)?,
                    up: x2(Matrix::load(f, dev, &p("ffn_up"), cfg.ffn, h, true)?),
                    down: Matrix::load(f, dev, &p("ffn_down"), h, cfg.ffn, true)?,
                    out_norm: Norm::load(f, &p("layer_output_norm"), h)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let head = match f.tensor("cls.output.weight") {
            None => None,
            Some(t) => {
                let n_labels = t.info.dims.get(1).copied().unwrap_or(0) as usize;
                Some((
                    Matrix::load(f, dev, "cls", h, h, true)?,
                    Matrix::load(f, dev, "cls.output", n_labels, h, true)?,
                ))
            }
        };
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        let gpu = match dev.gpu() {
            Some(g) => Some(crate::bert_gpu::GpuEncoder::upload(g, &file, &blocks)?),
            None => None,
        };
        Ok(Bert {
            cfg,
            file,
            tok,
            pos,
            types,
            emb_norm,
            blocks,
            head,
            #[cfg(any(feature = "wgpu", feature = "cuda"))]
            gpu,
        })
    }

    /// The file the model was loaded from.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }

    /// Number of classes of the classification head, if the model has one.
    pub fn n_classes(&self) -> Option<usize> {
        self.head.as_ref().map(|(_, o)| o.n)
    }

    /// Stage `embeddings`: token ids of a batch (each at most `context` long) to token vectors.
    pub fn embeddings(&self, dev: &Device, ids: &[Vec<u32>]) -> Result<Activation> {
        let h = self.cfg.hidden;
        let batch = ids.len();
        let seq = ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
        if seq > self.cfg.context {
            return Err(ModelError::Input(format!(
                "{seq} tokens exceed the context length {}",
                self.cfg.context
            )));
        }
        let mut flat = vec![0u32; batch * seq];
        let mut mask = vec![0u8; batch * seq];
        for (b, row) in ids.iter().enumerate() {
            flat[b * seq..b * seq + row.len()].copy_from_slice(row);
            mask[b * seq..b * seq + row.len()].fill(1);
        }
        let mut hidden = vec![0f32; batch * seq * h];
        self.tok.gather(&self.file, &flat, &mut hidden)?;
        let positions: Vec<u32> = (0..seq as u32).collect();
        let mut pos = vec![0f32; seq * h];
        self.pos.gather(&self.file, &positions, &mut pos)?;
        let mut ty = vec![0f32; h];
        if let Some(t) = &self.types {
            t.gather(&self.file, &[0], &mut ty)?;
        }
        for row in hidden.chunks_exact_mut(seq * h) {
            for (x, (p, t)) in row.iter_mut().zip(pos.iter().zip(ty.iter().cycle())) {
                *x += p + t;
            }
        }
        let cpu = dev.backend();
        cpu.layer_norm(
            &mut hidden,
            h,
            &self.emb_norm.gamma,
            &self.emb_norm.beta,
            self.cfg.eps,
        )
        .map_err(op)?;
        Ok(Activation {
            hidden,
            mask,
            batch,
            seq,
        })
    }

    /// Stage `block i`: one encoder block, in place.
    pub fn block(&self, dev: &Device, i: usize, a: &mut Activation) -> Result<()> {
        self.blocks(dev, i..i + 1, a)
    }

    /// Stages `block range.start` to `block range.end - 1`, in place. On a GPU device the
    /// activation crosses to the GPU and back once for the whole run.
    pub fn blocks(&self, dev: &Device, range: Range<usize>, a: &mut Activation) -> Result<()> {
        if range.end > self.blocks.len() {
            return Err(ModelError::Input(format!(
                "no block {} (the model has {})",
                range.end - 1,
                self.blocks.len()
            )));
        }
        #[cfg(any(feature = "wgpu", feature = "cuda"))]
        if let (Some(g), Some(enc)) = (dev.gpu(), &self.gpu) {
            return enc.run(g, &self.cfg, range, a);
        }
        for i in range {
            self.cpu_block(dev, i, a)?;
        }
        Ok(())
    }

    /// One encoder block on the CPU, in place.
    fn cpu_block(&self, dev: &Device, i: usize, a: &mut Activation) -> Result<()> {
        let blk = self
            .blocks
            .get(i)
            .ok_or_else(|| ModelError::Input(format!("no block {i}")))?;
        // Texts are independent within a block: a long batch runs a few texts at a time, so the
        // intermediates (ffn_up is 4x the hidden size) stay in cache instead of streaming
        // through memory.
        let h = self.cfg.hidden;
        let group = (GROUP_ROWS / a.seq.max(1)).max(1);
        let mut b0 = 0;
        while b0 < a.batch {
            let nb = group.min(a.batch - b0);
            let (r0, r1) = (b0 * a.seq, (b0 + nb) * a.seq);
            self.block_rows(
                dev,
                blk,
                &mut a.hidden[r0 * h..r1 * h],
                &a.mask[r0..r1],
                nb,
                a.seq,
            )?;
            b0 += nb;
        }
        Ok(())
    }

    /// One encoder block over `batch` texts of `seq` tokens (`hidden`: their rows), in place.
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
        if let Qkv::Stacked(qkv) = &blk.qkv {
            if cpu.threads() > 1 && rows >= ROW_TASKS_FROM {
                return self.block_row_tasks(dev, blk, qkv, hidden, mask, batch, seq);
            }
        }
        let lin = |m: &Matrix, x: &[f32], out: &mut Vec<f32>| {
            out.resize(rows * m.n, 0.0);
            cpu.linear(x, rows, &m.linear(f), out).map_err(op)
        };
        with_scratch(
            &SCRATCH,
            |Scratch {
                 qkv,
                 q,
                 k,
                 v,
                 ctx,
                 o,
                 up,
             }| {
                let (qs, ks, vs, stride): (&[f32], &[f32], &[f32], usize) = match &blk.qkv {
                    Qkv::Stacked(m) => {
                        // Attention reads q, k and v in place from the stacked product's rows.
                        lin(m, hidden, qkv)?;
                        (&qkv[..], &qkv[h..], &qkv[2 * h..], 3 * h)
                    }
                    Qkv::Separate(parts) => {
                        let [mq, mk, mv] = &**parts;
                        lin(mq, hidden, q)?;
                        lin(mk, hidden, k)?;
                        lin(mv, hidden, v)?;
                        (&q[..], &k[..], &v[..], h)
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
                ctx.resize(rows * h, 0.0);
                cpu.attention(&att, ctx).map_err(op)?;
                lin(&blk.o, ctx, o)?;
                blk.attn_norm.residual(dev, hidden, o, h, self.cfg.eps)?;
                lin(&blk.up, hidden, up)?;
                cpu.gelu(up);
                lin(&blk.down, up, o)?;
                blk.out_norm.residual(dev, hidden, o, h, self.cfg.eps)
            },
        )
    }

    /// [`Self::block_rows`] as row tasks (see [`ROW_TASKS_FROM`]); the same operations on the
    /// same rows, so the same result.
    #[allow(clippy::too_many_arguments)]
    fn block_row_tasks(
        &self,
        dev: &Device,
        blk: &Block,
        qkv_w: &Matrix,
        hidden: &mut [f32],
        mask: &[u8],
        batch: usize,
        seq: usize,
    ) -> Result<()> {
        let (h, ffn, f, eps) = (self.cfg.hidden, self.cfg.ffn, &*self.file, self.cfg.eps);
        let rows = batch * seq;
        let cpu = dev.backend();
        let failed = std::sync::Mutex::new(None);
        let fail = |e: edgecut_backends::ops::OpError| {
            let mut slot = failed.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(e);
        };
        with_scratch(&SCRATCH, |s| {
            s.qkv.resize(rows * 3 * h, 0.0);
            let x: &[f32] = hidden;
            cpu.for_chunks(&mut s.qkv, ROWS_PER_TASK * 3 * h, &|t, out| {
                let r0 = t * ROWS_PER_TASK;
                let n = out.len() / (3 * h);
                let lin = qkv_w.linear(f);
                if let Err(e) = cpu.linear(&x[r0 * h..(r0 + n) * h], n, &lin, out) {
                    fail(e);
                }
            });
            if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Err(op(e));
            }
            let att = Attention {
                q: &s.qkv,
                k: &s.qkv[h..],
                v: &s.qkv[2 * h..],
                stride: 3 * h,
                mask,
                batch,
                seq,
                heads: self.cfg.heads,
                head_dim: h / self.cfg.heads,
            };
            s.ctx.resize(rows * h, 0.0);
            cpu.attention(&att, &mut s.ctx).map_err(op)?;
            let ctx: &[f32] = &s.ctx;
            cpu.for_chunks(hidden, ROWS_PER_TASK * h, &|t, x| {
                let r0 = t * ROWS_PER_TASK;
                let n = x.len() / h;
                with_scratch(&ROW_SCRATCH, |RowScratch { o, up }| {
                    o.resize(n * h, 0.0);
                    up.resize(n * ffn, 0.0);
                    let mut run = || -> std::result::Result<(), edgecut_backends::ops::OpError> {
                        cpu.linear(&ctx[r0 * h..(r0 + n) * h], n, &blk.o.linear(f), o)?;
                        let (an, on) = (&blk.attn_norm, &blk.out_norm);
                        cpu.add_layer_norm(x, o, h, &an.gamma, &an.beta, eps)?;
                        cpu.linear(x, n, &blk.up.linear(f), up)?;
                        cpu.gelu(up);
                        cpu.linear(up, n, &blk.down.linear(f), o)?;
                        cpu.add_layer_norm(x, o, h, &on.gamma, &on.beta, eps)
                    };
                    if let Err(e) = run() {
                        fail(e);
                    }
                })
            });
            match failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
                Some(e) => Err(op(e)),
                None => Ok(()),
            }
        })
    }

    /// Every stage but the head.
    pub fn encode(&self, dev: &Device, ids: &[Vec<u32>]) -> Result<Activation> {
        let mut a = self.embeddings(dev, ids)?;
        self.blocks(dev, 0..self.cfg.layers, &mut a)?;
        Ok(a)
    }

    /// Stage `head` for embeddings: pooled (and normalised) sentence vectors, `[batch, hidden]`.
    pub fn pool(&self, a: &Activation) -> Result<Vec<f32>> {
        let h = self.cfg.hidden;
        let mut out = vec![0f32; a.batch * h];
        pool(
            &a.hidden,
            &a.mask,
            a.batch,
            a.seq,
            h,
            self.cfg.pooling,
            &mut out,
        )
        .map_err(op)?;
        if self.cfg.normalize {
            l2_normalize(&mut out, h);
        }
        Ok(out)
    }

    /// Stage `head` for classification: logits `[batch, classes]` from the first token.
    pub fn classify(&self, dev: &Device, a: &Activation) -> Result<Vec<f32>> {
        let (pre, out) = self.head.as_ref().ok_or_else(|| {
            ModelError::Unsupported(
                "this model has no classification head (cls.output.weight)".into(),
            )
        })?;
        let h = self.cfg.hidden;
        let mut first = vec![0f32; a.batch * h];
        pool(
            &a.hidden,
            &a.mask,
            a.batch,
            a.seq,
            h,
            Pooling::Cls,
            &mut first,
        )
        .map_err(op)?;
        let cpu = dev.backend();
        let mut x = vec![0f32; a.batch * h];
        cpu.linear(&first, a.batch, &pre.linear(&self.file), &mut x)
            .map_err(op)?;
        match self.cfg.classifier_activation.as_str() {
            "relu" => x.iter_mut().for_each(|v| *v = v.max(0.0)),
            _ => x.iter_mut().for_each(|v| *v = v.tanh()),
        }
        let mut logits = vec![0f32; a.batch * out.n];
        cpu.linear(&x, a.batch, &out.linear(&self.file), &mut logits)
            .map_err(op)?;
        Ok(logits)
    }
}

/// Softmax over each row of `logits` (rows of `n`).
pub fn probabilities(logits: &[f32], n: usize) -> Vec<f32> {
    let mut p = logits.to_vec();
    p.chunks_exact_mut(n).for_each(softmax);
    p
}

fn op(e: edgecut_backends::ops::OpError) -> ModelError {
    ModelError::Input(e.to_string())
}
