//! Tiny random models written by the tests themselves with the GGUF writer: BERT and Llama
//! files whose shapes exercise the kernels (heads of 32 and 16, row counts past the row-task
//! threshold) and that load without any downloaded checkpoint.

use std::borrow::Cow;
use std::sync::Arc;

use edgecut_backends::{quant, DType};
use edgecut_format::gguf::{GgufFile, GgufWriter, TensorSpec, Value};

/// A small deterministic generator (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn f32(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545F4914F6CDD1D);
        (v >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f32() * scale).collect()
    }
}

/// Tensors and metadata being collected for one file.
struct Builder {
    w: GgufWriter,
    data: Vec<Vec<u8>>,
    rng: Rng,
}

impl Builder {
    fn new(seed: u64) -> Builder {
        Builder {
            w: GgufWriter::new(),
            data: Vec::new(),
            rng: Rng(seed),
        }
    }

    fn meta(&mut self, k: &str, v: Value) {
        self.w.set(k, v);
    }

    /// A tensor of `dims` (innermost first) with random values of `scale` around `offset`.
    fn tensor(&mut self, name: &str, dtype: DType, dims: &[u64], scale: f32, offset: f32) {
        let n = dims.iter().product::<u64>() as usize;
        let vals: Vec<f32> = self.rng.vec(n, scale).iter().map(|v| v + offset).collect();
        let bytes = match dtype {
            DType::Q8_0 => quant::quantize_q8_0_vec(&vals).unwrap(),
            DType::F32 => quant::f32_to_bytes(&vals),
            other => panic!("tiny models write Q8_0 and F32, not {other}"),
        };
        self.w
            .add_tensor(TensorSpec {
                name: name.into(),
                dtype,
                dims: dims.to_vec(),
            })
            .unwrap();
        self.data.push(bytes);
    }

    /// A matrix `[n, k]` in Q8_0 with an f32 bias when asked.
    fn matrix(&mut self, prefix: &str, n: usize, k: usize, bias: bool) {
        let scale = 1.0 / (k as f32).sqrt() * 1.7;
        self.tensor(
            &format!("{prefix}.weight"),
            DType::Q8_0,
            &[k as u64, n as u64],
            scale,
            0.0,
        );
        if bias {
            self.tensor(
                &format!("{prefix}.bias"),
                DType::F32,
                &[n as u64],
                0.05,
                0.0,
            );
        }
    }

    fn norm(&mut self, prefix: &str, dim: usize, bias: bool) {
        self.tensor(
            &format!("{prefix}.weight"),
            DType::F32,
            &[dim as u64],
            0.1,
            1.0,
        );
        if bias {
            self.tensor(
                &format!("{prefix}.bias"),
                DType::F32,
                &[dim as u64],
                0.05,
                0.0,
            );
        }
    }

    fn finish(self) -> Arc<GgufFile> {
        let mut out = Vec::new();
        let data = self.data;
        self.w
            .write_to(&mut out, |i, _| Ok(Cow::Borrowed(&data[i][..])))
            .unwrap();
        Arc::new(GgufFile::from_bytes(out).unwrap())
    }
}

/// The tiny BERT's sizes: hidden 64 in 2 heads of 32, 3 blocks, ffn 128, 64 positions,
/// a vocabulary of 100.
pub const BERT: (usize, usize, usize, usize) = (64, 2, 3, 128);

/// A tiny random BERT (Q8_0 matrices, f32 norms and biases, mean pooling, a 3-class head).
pub fn tiny_bert(seed: u64) -> Arc<GgufFile> {
    let (h, heads, layers, ffn) = BERT;
    let (vocab, context) = (100u64, 64u64);
    let mut b = Builder::new(seed);
    b.meta("general.architecture", Value::Str("bert".into()));
    for (k, v) in [
        ("bert.embedding_length", h as u32),
        ("bert.attention.head_count", heads as u32),
        ("bert.block_count", layers as u32),
        ("bert.feed_forward_length", ffn as u32),
        ("bert.context_length", context as u32),
    ] {
        b.meta(k, Value::U32(v));
    }
    b.meta("bert.attention.layer_norm_epsilon", Value::F32(1e-12));
    b.meta("edgecut.pooling", Value::Str("mean".into()));
    b.tensor(
        "token_embd.weight",
        DType::Q8_0,
        &[h as u64, vocab],
        0.5,
        0.0,
    );
    b.tensor(
        "position_embd.weight",
        DType::F32,
        &[h as u64, context],
        0.2,
        0.0,
    );
    b.tensor("token_types.weight", DType::F32, &[h as u64, 2], 0.1, 0.0);
    b.norm("token_embd_norm", h, true);
    for i in 0..layers {
        let p = |n: &str| format!("blk.{i}.{n}");
        for m in ["attn_q", "attn_k", "attn_v", "attn_output"] {
            b.matrix(&p(m), h, h, true);
        }
        b.norm(&p("attn_output_norm"), h, true);
        b.matrix(&p("ffn_up"), ffn, h, true);
        b.matrix(&p("ffn_down"), h, ffn, true);
        b.norm(&p("layer_output_norm"), h, true);
    }
    b.matrix("cls", h, h, true);
    b.matrix("cls.output", 3, h, true);
    b.finish()
}

/// The tiny Llama's sizes: hidden 64, 4 query heads over 2 KV heads of 16, 4 blocks, ffn 96,
/// a vocabulary of 120, 64 positions.
pub const LLAMA: (usize, usize, usize, usize, usize) = (64, 4, 2, 4, 96);

/// A tiny random Llama (Q8_0 matrices, tied output, f32 norms).
pub fn tiny_llama(seed: u64) -> Arc<GgufFile> {
    let (h, heads, kv_heads, layers, ffn) = LLAMA;
    let hd = h / heads;
    let (vocab, context) = (120u64, 64u64);
    let mut b = Builder::new(seed);
    b.meta("general.architecture", Value::Str("llama".into()));
    for (k, v) in [
        ("llama.embedding_length", h as u32),
        ("llama.attention.head_count", heads as u32),
        ("llama.attention.head_count_kv", kv_heads as u32),
        ("llama.block_count", layers as u32),
        ("llama.feed_forward_length", ffn as u32),
        ("llama.context_length", context as u32),
    ] {
        b.meta(k, Value::U32(v));
    }
    b.tensor(
        "token_embd.weight",
        DType::Q8_0,
        &[h as u64, vocab],
        0.5,
        0.0,
    );
    for i in 0..layers {
        let p = |n: &str| format!("blk.{i}.{n}");
        b.norm(&p("attn_norm"), h, false);
        b.matrix(&p("attn_q"), heads * hd, h, false);
        b.matrix(&p("attn_k"), kv_heads * hd, h, false);
        b.matrix(&p("attn_v"), kv_heads * hd, h, false);
        b.matrix(&p("attn_output"), h, heads * hd, false);
        b.norm(&p("ffn_norm"), h, false);
        b.matrix(&p("ffn_gate"), ffn, h, false);
        b.matrix(&p("ffn_up"), ffn, h, false);
        b.matrix(&p("ffn_down"), h, ffn, false);
    }
    b.norm("output_norm", h, false);
    b.finish()
}
