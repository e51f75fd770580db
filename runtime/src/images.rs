//! Pictures in the facade: a CLIP session embeds texts ([`Session::embed`], its text tower) and
//! pictures ([`Session::embed_images`], its image tower) into one space, and scores labels for a
//! picture ([`Session::zero_shot`]) as CLIP's zero-shot classification does.

use edgecut_format::image::{decode, pixel_tensor, resize_and_crop, ImageError, Processing};
use edgecut_models::Clip;

use crate::session::{Net, Truncated};
use crate::{Error, Result, Session};

/// One label's score for a picture.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelScore {
    /// The label, as given.
    pub label: String,
    /// Cosine similarity of the picture's and the label's embeddings.
    pub similarity: f32,
    /// Softmax over the labels of the similarities times the model's scale (CLIP's
    /// `logits_per_image`).
    pub probability: f32,
}

impl Session {
    /// Whether the model embeds pictures (CLIP).
    pub fn embeds_images(&self) -> bool {
        matches!(self.inner.model, Net::Clip(_))
    }

    /// The CLIP model, for what only it runs.
    pub(crate) fn clip_model(&self) -> Result<&Clip> {
        match &self.inner.model {
            Net::Clip(c) => Ok(c),
            _ => Err(Error::Input(
                "this model embeds texts only; pictures need a CLIP model".into(),
            )),
        }
    }

    /// The normalised `3 x S x S` pixel tensor a picture (PNG or JPEG file bytes) becomes for
    /// the model: decoded within [`crate::SessionOptions::image_limits`], turned upright,
    /// resized and cropped as `CLIPImageProcessor` does. One picture is decoded at a time per
    /// session (others wait), so memory holds one decoded picture however many callers.
    pub fn image_tensor(&self, image: &[u8]) -> Result<Vec<f32>> {
        let c = self.clip_model()?;
        let p = processing(c);
        let _one = self
            .inner
            .decoding
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let img = decode(image, &self.inner.opts.image_limits)?;
        Ok(pixel_tensor(&resize_and_crop(&img, &p)?, &p))
    }

    /// Embeddings of pictures (PNG or JPEG file bytes), in input order, L2-normalised, in the
    /// space [`Session::embed`] puts texts in. A picture that cannot be read is
    /// [`Error::Image`], naming which.
    pub fn embed_images(&self, images: &[&[u8]]) -> Result<Vec<Vec<f32>>> {
        self.embed_images_in_batches(images, self.inner.opts.batch_size)
    }

    /// [`Session::embed_images`] with `batch_size` pictures run together.
    pub fn embed_images_in_batches(
        &self,
        images: &[&[u8]],
        batch_size: usize,
    ) -> Result<Vec<Vec<f32>>> {
        if batch_size == 0 {
            return Err(Error::Input(
                "batch size 0: at least one picture per batch".into(),
            ));
        }
        let c = self.clip_model()?;
        let dim = c.cfg.projection;
        let mut out = Vec::with_capacity(images.len());
        for (b, chunk) in images.chunks(batch_size).enumerate() {
            // Decoded a batch at a time: one batch's pictures are in memory at once.
            let mut pixels = Vec::with_capacity(chunk.len() * c.cfg.pixels_per_image());
            for (i, bytes) in chunk.iter().enumerate() {
                let index = b * batch_size + i;
                let t = self.image_tensor(bytes).map_err(|e| match e {
                    Error::Image { source, .. } => Error::Image { index, source },
                    other => other,
                })?;
                pixels.extend(t);
            }
            let v = c.embed_images(&pixels, chunk.len())?;
            out.extend(v.chunks_exact(dim).map(<[f32]>::to_vec));
        }
        Ok(out)
    }

    /// Embeddings of `n` pixel tensors already preprocessed (each `3 x S x S`, channel-major,
    /// normalised as [`Session::image_tensor`] makes them), one after another in `pixels`: for
    /// callers with their own preprocessing, such as camera frames.
    pub fn embed_pixel_tensors(&self, pixels: &[f32], n: usize) -> Result<Vec<Vec<f32>>> {
        let c = self.clip_model()?;
        let dim = c.cfg.projection;
        let per = c.cfg.pixels_per_image();
        if pixels.len() != n * per {
            return Err(Error::Input(format!(
                "{} values are not {n} pixel tensors of {per} (3x{s}x{s})",
                pixels.len(),
                s = c.cfg.image_size
            )));
        }
        let mut out = Vec::with_capacity(n);
        for chunk in pixels.chunks(per * self.inner.opts.batch_size.max(1)) {
            let v = c.embed_images(chunk, chunk.len() / per)?;
            out.extend(v.chunks_exact(dim).map(<[f32]>::to_vec));
        }
        Ok(out)
    }

    /// The size of the model's square pictures in pixels (CLIP), for pixel tensors of
    /// `3 x size x size`.
    pub fn image_size(&self) -> Option<usize> {
        self.clip_model().ok().map(|c| c.cfg.image_size)
    }

    /// The labels scored for a picture, in the order given: each label's cosine similarity to
    /// the picture and its probability among them (CLIP's zero-shot classification; labels
    /// are used as written, such as "a photo of a dog").
    pub fn zero_shot(&self, image: &[u8], labels: &[&str]) -> Result<Vec<LabelScore>> {
        let c = self.clip_model()?;
        if labels.is_empty() {
            return Err(Error::Input(
                "no labels to score the picture against".into(),
            ));
        }
        let picture = self.embed_images(&[image])?.remove(0);
        let texts = self.embed(labels)?;
        let sims: Vec<f32> = texts
            .vectors
            .iter()
            .map(|t| t.iter().zip(&picture).map(|(a, b)| a * b).sum())
            .collect();
        let logits: Vec<f32> = sims.iter().map(|s| s * c.similarity_scale()).collect();
        let probs = edgecut_models::probabilities(&logits, logits.len());
        Ok(labels
            .iter()
            .zip(sims.iter().zip(probs))
            .map(|(l, (&similarity, probability))| LabelScore {
                label: l.to_string(),
                similarity,
                probability,
            })
            .collect())
    }

    /// CLIP's text tower over `texts` in batches of similar length.
    pub(crate) fn embed_clip_texts(
        &self,
        c: &Clip,
        texts: &[&str],
        batch: usize,
    ) -> Result<(Vec<Vec<f32>>, Vec<Truncated>)> {
        let mut encoded = Vec::with_capacity(texts.len());
        let mut truncated = Vec::new();
        for (index, t) in texts.iter().enumerate() {
            let e = self
                .inner
                .tokenizer
                .encode(t, true, Some(self.max_seq_len()))?;
            if e.ids.is_empty() {
                return Err(Error::Input(format!("text {index} has no tokens")));
            }
            truncated.extend(Truncated::of(index, e.full_len, e.ids.len()));
            encoded.push(e.ids);
        }
        let dim = c.cfg.projection;
        let out = self.batched(encoded, batch, Vec::len, |ids| {
            Ok(c.embed_texts(&ids)?
                .chunks_exact(dim)
                .map(<[f32]>::to_vec)
                .collect())
        })?;
        Ok((out, truncated))
    }
}

fn processing(c: &Clip) -> Processing {
    let p = &c.cfg.processing;
    Processing {
        shortest_edge: p.shortest_edge,
        crop: p.crop,
        mean: p.mean,
        std: p.std,
        rescale: p.rescale,
    }
}

impl From<ImageError> for Error {
    /// A picture that cannot be read; [`Session::embed_images`] says which.
    fn from(source: ImageError) -> Error {
        Error::Image { index: 0, source }
    }
}
