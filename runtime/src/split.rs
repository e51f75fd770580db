//! Split execution of an encoder: the device runs stages `0..cut` and encodes the activation at
//! the cut as a wire request ([`edgecut_wire::Infer`]); the server runs stages `cut..n` on it.
//! A cut is the number of stages on the device (`0`: the raw token ids go to the server).
//! Decoders split token by token: [`SplitDecoder`] on the device, [`ServerDecoder`] on the
//! server.

use edgecut_models::Activation;
use edgecut_wire::{
    decode_ids, decode_values, encode_ids, encode_values, Activation as WireActivation, Encoding,
    Infer, InferResult, InferShape,
};

pub use crate::decode_server::{
    top_logits_for, DecodeStep, ServerDecoder, TopLogitsError, MAX_TOP,
};
pub use crate::decode_split::{DecodeLink, LinkError, SplitDecoder, SplitGeneration};
use crate::{Error, Result, Session};

fn bad(msg: impl Into<String>) -> Error {
    Error::Input(msg.into())
}

impl Session {
    /// Runs stages `0..cut` on `texts` (one padded batch) and returns the request that carries
    /// the activation at the cut, encoded as `encoding` (cut 0 always sends f32 token ids).
    pub fn run_device_part(
        &self,
        texts: &[&str],
        cut: usize,
        encoding: Encoding,
        request_id: u64,
    ) -> Result<Infer> {
        let n = self.stage_count();
        if cut >= n {
            return Err(bad(format!(
                "cut {cut}: a split needs a cut in 0..{n} ({n} runs everything on the device)"
            )));
        }
        if texts.is_empty() || texts.len() > u16::MAX as usize {
            return Err(bad("a split request carries 1 to 65535 texts"));
        }
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<_>>()?;
        let seq = ids.iter().map(Vec::len).max().unwrap_or(1);
        let lengths: Vec<u16> = ids.iter().map(|i| i.len() as u16).collect();
        let batch = texts.len() as u16;
        let (width, encoding, data) = if cut == 0 {
            // The raw input: token ids as integers, padded with 0.
            let mut flat = vec![0u32; texts.len() * seq];
            for (row, t) in flat.chunks_exact_mut(seq).zip(&ids) {
                row[..t.len()].copy_from_slice(t);
            }
            (1, Encoding::U32, encode_ids(&flat))
        } else {
            if encoding == Encoding::U32 {
                return Err(bad("u32 carries token ids (cut 0), not activations"));
            }
            let bert = self.bert()?;
            let mut a = bert.embeddings(&ids)?;
            bert.blocks(self.stages().device_blocks(cut), &mut a)?;
            let data = encode_values(&a.hidden, encoding);
            (bert.cfg.hidden as u32, encoding, data)
        };
        Ok(Infer {
            request_id,
            cut: cut as u16,
            activation: WireActivation {
                batch,
                seq: seq as u16,
                width,
                lengths,
                encoding,
                data,
            },
        })
    }

    /// Runs the image tower's stages `0..cut` on pictures (PNG or JPEG file bytes; one batch)
    /// for a CLIP model and returns the request that carries the activation at the cut, encoded
    /// as `encoding`. At cut 0 the raw input travels: each picture's patches, `3 p^2` values
    /// each (f32, f16 or int8). Texts of a CLIP model embed on the device.
    pub fn run_device_part_images(
        &self,
        images: &[&[u8]],
        cut: usize,
        encoding: Encoding,
        request_id: u64,
    ) -> Result<Infer> {
        let clip = self.clip_model()?;
        let n = self.stage_count();
        if cut >= n {
            return Err(bad(format!(
                "cut {cut}: a split needs a cut in 0..{n} ({n} runs everything on the device)"
            )));
        }
        if images.is_empty() || images.len() > u16::MAX as usize {
            return Err(bad("a split request carries 1 to 65535 pictures"));
        }
        if encoding == Encoding::U32 {
            return Err(bad("u32 carries token ids, not pictures"));
        }
        let mut pixels = Vec::with_capacity(images.len() * clip.cfg.pixels_per_image());
        for (index, bytes) in images.iter().enumerate() {
            pixels.extend(self.image_tensor(bytes).map_err(|e| match e {
                Error::Image { source, .. } => Error::Image { index, source },
                other => other,
            })?);
        }
        let patches = clip.patches(&pixels, images.len())?;
        let (seq, width, values) = if cut == 0 {
            (clip.cfg.patches(), 3 * clip.cfg.patch_size.pow(2), patches)
        } else {
            let mut a = clip.image_embeddings(&patches, images.len())?;
            clip.image_blocks(self.stages().device_blocks(cut), &mut a)?;
            (a.seq, clip.cfg.vision.hidden, a.hidden)
        };
        Ok(Infer {
            request_id,
            cut: cut as u16,
            activation: WireActivation {
                batch: images.len() as u16,
                seq: seq as u16,
                width: width as u32,
                lengths: vec![seq as u16; images.len()],
                encoding,
                data: encode_values(&values, encoding),
            },
        })
    }

    /// A CLIP model's request shape: patches of `3 p^2` values at cut 0, the image tower's
    /// rows (class token and patches) of its width at a cut inside it.
    fn check_image_shape(&self, clip: &edgecut_models::Clip, shape: &InferShape) -> Result<()> {
        let cut = shape.cut as usize;
        let (seq, width) = if cut == 0 {
            (clip.cfg.patches(), 3 * clip.cfg.patch_size.pow(2))
        } else {
            (clip.cfg.patches() + 1, clip.cfg.vision.hidden)
        };
        if (shape.seq as usize, shape.width as usize) != (seq, width) {
            return Err(bad(format!(
                "rows of {} values, {} per picture, at cut {cut}: this CLIP model's pictures \
                 are {seq} rows of {width} there",
                shape.width, shape.seq
            )));
        }
        if shape.encoding == Encoding::U32 {
            return Err(bad(
                "encoding u32: a CLIP model's split carries pictures as f32, f16 or int8 values",
            ));
        }
        Ok(())
    }

    /// Checks a request's fixed fields (cut, padded length, width, encoding) against the model:
    /// what a server can refuse from the first bytes of a request, before the activation is
    /// received or anything sized by it is allocated.
    pub fn check_shape(&self, shape: &InferShape) -> Result<()> {
        let (n, cut, seq) = (self.stage_count(), shape.cut as usize, shape.seq as usize);
        if cut >= n {
            return Err(bad(format!("cut {cut} is not in 0..{n}")));
        }
        if let Ok(clip) = self.clip_model() {
            return self.check_image_shape(clip, shape);
        }
        let cfg = &self.bert()?.cfg;
        if seq == 0 || seq > cfg.context {
            return Err(bad(format!(
                "texts of {seq} tokens do not fit the model (context {})",
                cfg.context
            )));
        }
        let want_width = if cut == 0 { 1 } else { cfg.hidden };
        if shape.width as usize != want_width {
            return Err(bad(format!(
                "width {} at cut {cut}; the model has {want_width}",
                shape.width
            )));
        }
        // Cut 0 carries token ids as integers; any other cut, activations as values.
        if (cut == 0) != (shape.encoding == Encoding::U32) {
            return Err(bad(format!(
                "encoding {} at cut {cut}: token ids (cut 0) travel as u32, activations as \
                 f32, f16 or int8",
                shape.encoding
            )));
        }
        Ok(())
    }

    /// Checks every field of a request against the model and decodes its activation (nothing
    /// sized by the request is allocated before its sizes are checked): what the server runs,
    /// alone or merged with other requests of the same cut and length.
    pub fn accept(&self, req: &Infer) -> Result<ServerInput> {
        let a = &req.activation;
        self.check_shape(&InferShape {
            request_id: req.request_id,
            cut: req.cut,
            encoding: a.encoding,
            batch: a.batch,
            seq: a.seq,
            width: a.width,
        })?;
        let (cut, batch, seq) = (req.cut as usize, a.batch as usize, a.seq as usize);
        if a.lengths.len() != batch {
            return Err(bad(format!(
                "{} lengths for {batch} texts",
                a.lengths.len()
            )));
        }
        if a.lengths.iter().any(|&l| l as usize > seq) {
            return Err(bad("a text is longer than the activation's tokens"));
        }
        let want_width = a.width as usize;
        let n_values = batch * seq * want_width;
        let image = self.embeds_images();
        if image && a.lengths.iter().any(|&l| l as usize != seq) {
            return Err(bad("every picture has all its rows"));
        }
        let data = if cut == 0 && !image {
            let flat = decode_ids(&a.data, n_values)
                .ok_or_else(|| bad("activation bytes do not match its shape"))?;
            let vocab = self.inner.tokenizer.vocab_size();
            let mut ids = Vec::with_capacity(batch);
            for (row, &len) in flat.chunks_exact(seq).zip(&a.lengths) {
                let t = &row[..len as usize];
                if t.iter().any(|&id| id as usize >= vocab) {
                    return Err(bad("a token id is outside the vocabulary"));
                }
                ids.push(t.to_vec());
            }
            Input::Ids(ids)
        } else {
            let values = decode_values(&a.data, a.encoding, n_values)
                .ok_or_else(|| bad("activation bytes do not match its shape"))?;
            if values.iter().any(|v| !v.is_finite()) {
                return Err(bad("the activation holds a NaN or an infinity"));
            }
            Input::Hidden(values)
        };
        Ok(ServerInput {
            cut,
            seq,
            lengths: a.lengths.clone(),
            data,
        })
    }

    /// Runs stages `cut..n` of accepted input and returns one sentence vector per text,
    /// `[texts, embedding_dim]`.
    pub fn run_accepted(&self, input: ServerInput) -> Result<Vec<f32>> {
        let ServerInput {
            cut,
            seq,
            lengths,
            data,
        } = input;
        let batch = lengths.len();
        if let Ok(clip) = self.clip_model() {
            let Input::Hidden(values) = data else {
                return Err(bad("a CLIP model's split carries values"));
            };
            let mut a = if cut == 0 {
                clip.image_embeddings(&values, batch)?
            } else {
                Activation {
                    hidden: values,
                    mask: vec![1; batch * seq],
                    batch,
                    seq,
                }
            };
            clip.image_blocks(self.stages().server_blocks(cut), &mut a)?;
            return Ok(clip.image_head(&a)?);
        }
        let mut act = match data {
            Input::Ids(ids) => self.bert()?.embeddings(&ids)?,
            Input::Hidden(hidden) => {
                let mut mask = vec![0u8; batch * seq];
                for (row, &len) in mask.chunks_exact_mut(seq).zip(&lengths) {
                    row[..len as usize].fill(1);
                }
                Activation {
                    hidden,
                    mask,
                    batch,
                    seq,
                }
            }
        };
        let bert = self.bert()?;
        bert.blocks(self.stages().server_blocks(cut), &mut act)?;
        Ok(bert.pool(&act)?)
    }

    /// Runs stages `cut..n` of a request and returns one sentence vector per text. Every field
    /// is checked against the model first.
    pub fn run_server_part(&self, req: &Infer) -> Result<InferResult> {
        let input = self.accept(req)?;
        let rows = input.texts() as u16;
        let values = self.run_accepted(input)?;
        Ok(InferResult {
            request_id: req.request_id,
            rows,
            cols: self.embedding_dim() as u32,
            server_us: 0,
            values,
        })
    }
}

/// A request's activation, checked against the model and decoded ([`Session::accept`]): what
/// the server runs. Requests of the same cut and length merge into one batch.
#[derive(Debug)]
pub struct ServerInput {
    cut: usize,
    seq: usize,
    lengths: Vec<u16>,
    data: Input,
}

#[derive(Debug)]
enum Input {
    /// Cut 0: each text's token ids.
    Ids(Vec<Vec<u32>>),
    /// A cut inside the model: `[texts * seq, hidden]` values.
    Hidden(Vec<f32>),
}

impl ServerInput {
    /// Texts in the input.
    pub fn texts(&self) -> usize {
        self.lengths.len()
    }

    /// Texts (cut 0) or values (any other cut) held: what a merge appends.
    fn len(&self) -> usize {
        match &self.data {
            Input::Ids(a) => a.len(),
            Input::Hidden(a) => a.len(),
        }
    }

    /// Bytes the decoded input holds: what a server accounts for while it is queued.
    pub fn bytes(&self) -> usize {
        match &self.data {
            Input::Ids(a) => a.iter().map(|t| t.len() * 4 + 24).sum(),
            Input::Hidden(a) => a.len() * 4,
        }
    }

    /// The cut and the padded length: inputs merge only when both agree.
    pub fn shape(&self) -> (usize, usize) {
        (self.cut, self.seq)
    }

    /// One input holding `parts`' texts in order (their activations appended, nothing
    /// re-encoded). All must have one shape.
    pub fn merge(parts: Vec<ServerInput>) -> Result<ServerInput> {
        let total: usize = parts.iter().map(ServerInput::len).sum();
        let mut it = parts.into_iter();
        let mut out = it.next().ok_or_else(|| bad("nothing to merge"))?;
        // One allocation for the whole batch, not a doubling per append.
        match &mut out.data {
            Input::Ids(a) => a.reserve(total.saturating_sub(a.len())),
            Input::Hidden(a) => a.reserve(total.saturating_sub(a.len())),
        }
        for p in it {
            if p.shape() != out.shape() {
                return Err(bad("inputs of different cuts or lengths do not merge"));
            }
            out.lengths.extend_from_slice(&p.lengths);
            match (&mut out.data, p.data) {
                (Input::Ids(a), Input::Ids(b)) => a.extend(b),
                (Input::Hidden(a), Input::Hidden(b)) => a.extend(b),
                _ => return Err(bad("inputs of different cuts do not merge")),
            }
        }
        Ok(out)
    }
}
