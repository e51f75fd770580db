//! A model file shaped like another, with random weights: the GPU check's decoder has
//! SmolLM2's shapes, tokenizer and template without carrying its 98 MB to the GPU machine.
//!
//! ```text
//! random_weights skeleton SRC OUT   SRC's metadata and tensor list, no tensor data (~2 MB)
//! random_weights fill SKELETON OUT  a whole file: the listed tensors, random, as stored types
//! ```
//!
//! Random values keep a decoder's activations bounded (norm weights near 1, quantized weights
//! within +-0.08), so its speed is a real model's; its tokens mean nothing.

use std::borrow::Cow;
use std::io::{BufWriter, Write};

use anyhow::{bail, Context};
use edgecut_format::gguf::{Array, GgufFile, GgufWriter, TensorSpec, Value};
use edgecut_format::DType;

/// The metadata key holding a skeleton's tensor list: `name ggml_type dim0 dim1 ..` per tensor.
const KEY: &str = "edgecut.skeleton.tensors";

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }

    /// Uniform in [-1, 1).
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn skeleton(src: &str, out: &str) -> anyhow::Result<()> {
    let f = GgufFile::open(src).with_context(|| format!("opening {src}"))?;
    let mut w = GgufWriter::new();
    for (k, v) in f.metadata() {
        w.set(k.clone(), v.clone());
    }
    let list = f
        .tensors()
        .iter()
        .map(|t| {
            let dims: Vec<String> = t.dims.iter().map(u64::to_string).collect();
            format!("{} {} {}", t.name, t.dtype.ggml_id(), dims.join(" "))
        })
        .collect();
    w.set(KEY, Value::Array(Array::Str(list)));
    let mut o = BufWriter::new(std::fs::File::create(out)?);
    w.write_to(&mut o, |_, _| unreachable!("a skeleton has no tensors"))?;
    o.flush()?;
    Ok(())
}

/// `n` values of `dtype` for tensor `name`, random.
fn data(rng: &mut Rng, name: &str, dtype: DType, n: u64) -> anyhow::Result<Vec<u8>> {
    let n = n as usize;
    let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
    let mut out = Vec::new();
    match dtype {
        DType::F32 => {
            let norm = name.ends_with("norm.weight");
            for _ in 0..n {
                let v = if norm {
                    1.0 + 0.1 * rng.f32()
                } else {
                    0.02 * rng.f32()
                };
                out.extend(v.to_le_bytes());
            }
        }
        DType::F16 => (0..n).for_each(|_| out.extend(f16(0.02 * rng.f32()))),
        DType::Q8_0 => {
            for _ in 0..n / 32 {
                out.extend(f16(0.0005));
                out.extend((0..32).map(|_| (rng.next() % 255) as u8 ^ 0x80));
            }
        }
        DType::Q4_0 | DType::Q4_1 => {
            for _ in 0..n / 32 {
                out.extend(f16(0.01));
                if dtype == DType::Q4_1 {
                    out.extend(f16(-0.08));
                }
                out.extend((0..16).map(|_| rng.next() as u8));
            }
        }
        DType::BF16
        | DType::Q5_0
        | DType::Q5_1
        | DType::Q2_K
        | DType::Q3_K
        | DType::Q4_K
        | DType::Q5_K
        | DType::Q6_K
        | DType::IQ4_NL
        | DType::IQ4_XS => anyhow::bail!(
            "tensor {name:?}: random {dtype} weights are not written (F32, F16, Q8_0, Q4_0 and \
             Q4_1 are; quantize the result with llama.cpp for other types)"
        ),
    }
    Ok(out)
}

fn fill(skel: &str, out: &str) -> anyhow::Result<()> {
    let f = GgufFile::open(skel).with_context(|| format!("opening {skel}"))?;
    let mut w = GgufWriter::new();
    let mut list = None;
    for (k, v) in f.metadata() {
        match (k.as_str(), v) {
            (KEY, Value::Array(Array::Str(l))) => list = Some(l.clone()),
            _ => w.set(k.clone(), v.clone()),
        }
    }
    let Some(list) = list else {
        bail!("{skel} is not a skeleton (no {KEY}): make one with `skeleton`")
    };
    for line in &list {
        let mut it = line.split(' ');
        let (Some(name), Some(ty)) = (it.next(), it.next()) else {
            bail!("bad skeleton entry {line:?}")
        };
        let dtype = ty
            .parse()
            .ok()
            .and_then(DType::from_ggml_id)
            .with_context(|| format!("{name}: tensor type {ty} is not one edgecut writes"))?;
        let dims = it.map(str::parse).collect::<Result<Vec<u64>, _>>()?;
        w.add_tensor(TensorSpec {
            name: name.into(),
            dtype,
            dims,
        })?;
    }
    let mut rng = Rng(0x5eed);
    let mut o = BufWriter::new(std::fs::File::create(out)?);
    w.write_to(&mut o, |_, t| {
        let n = t.dims.iter().product();
        data(&mut rng, &t.name, t.dtype, n)
            .map(Cow::Owned)
            .map_err(Into::into)
    })?;
    o.flush()?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["skeleton", src, out] => skeleton(src, out),
        ["fill", skel, out] => fill(skel, out),
        _ => bail!("usage: random_weights skeleton SRC OUT | random_weights fill SKELETON OUT"),
    }
}
