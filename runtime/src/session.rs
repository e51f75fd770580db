//! A model opened once and run many times, from any number of threads.

use std::path::Path;
use std::sync::Arc;

use edgecut_backends::AttentionPrecision;
use edgecut_backends::{Device, DeviceKind};
use edgecut_format::image::ImageLimits;
use edgecut_format::{GgufFile, Tokenizer};
use edgecut_models::{probabilities, Clip, Decoder, Encoder};

pub(crate) use crate::net::Net;

use crate::{Error, Result, SharedDevice};

/// How to open a session: `SessionOptions::default()` and `with_*` setters (fields may be added
/// in later versions).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionOptions {
    /// Device to run on.
    pub device: DeviceKind,
    /// Threads per op; 0 picks `EDGECUT_THREADS` when set, else one per core this process may
    /// use.
    pub threads: usize,
    /// Texts run together in one padded batch (1: each text alone).
    pub batch_size: usize,
    /// Tokens per text before truncation; `None` uses the model's default (sentence-transformers'
    /// `max_seq_length` when the file records it, else the context length).
    pub max_seq_len: Option<usize>,
    /// Attention precision on the CPU: `Fast` (bf16 products where the CPU has AVX-512 BF16,
    /// fidelity unchanged) or `F32`.
    pub attention: AttentionPrecision,
    /// A device shared with other models (its thread pool); `device` and `threads` are then
    /// unused.
    pub shared_device: Option<SharedDevice>,
    /// What a picture given to [`Session::embed_images`] may be (file bytes, pixels).
    pub image_limits: ImageLimits,
}

impl SessionOptions {
    /// The device to run on.
    pub fn with_device(mut self, device: DeviceKind) -> Self {
        self.device = device;
        self
    }

    /// Threads per op (0: one per core).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads;
        self
    }

    /// Texts run together in one padded batch.
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Tokens per text before truncation (`None`: the model's default).
    pub fn with_max_seq_len(mut self, max_seq_len: Option<usize>) -> Self {
        self.max_seq_len = max_seq_len;
        self
    }

    /// Attention precision on the CPU.
    pub fn with_attention(mut self, attention: AttentionPrecision) -> Self {
        self.attention = attention;
        self
    }

    /// Bounds pictures by `limits`.
    pub fn with_image_limits(mut self, limits: ImageLimits) -> Self {
        self.image_limits = limits;
        self
    }

    /// Runs on a device shared with other models.
    pub fn with_shared_device(mut self, device: SharedDevice) -> Self {
        self.shared_device = Some(device);
        self
    }
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            device: DeviceKind::Auto,
            threads: 0,
            batch_size: 8,
            max_seq_len: None,
            attention: AttentionPrecision::Fast,
            shared_device: None,
            image_limits: ImageLimits::default(),
        }
    }
}

/// A text cut to fit the model.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Truncated {
    /// Index of the text in the input.
    pub index: usize,
    /// Its tokens before the cut.
    pub tokens: usize,
    /// Tokens kept.
    pub kept: usize,
}

impl Truncated {
    /// The cut of text `index` from `tokens` to `kept` tokens, if it was cut.
    pub(crate) fn of(index: usize, tokens: usize, kept: usize) -> Option<Truncated> {
        (tokens > kept).then_some(Truncated {
            index,
            tokens,
            kept,
        })
    }
}

/// Sentence vectors, in input order.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Embeddings {
    /// One vector per input text.
    pub vectors: Vec<Vec<f32>>,
    /// Vector length.
    pub dim: usize,
    /// Texts that were truncated.
    pub truncated: Vec<Truncated>,
}

/// Cross-encoder scores, in input order.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Reranked {
    /// One raw score (the logit) per document.
    pub scores: Vec<f32>,
    /// Documents that were cut to fit.
    pub truncated: Vec<Truncated>,
}

/// The logistic function: a cross-encoder's logit as a 0..1 relevance (what
/// sentence-transformers' `CrossEncoder` and text-embeddings-inference report by default).
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// One text's classification.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Classification {
    /// Index of the most probable class.
    pub class: usize,
    /// Its label (from the file's `edgecut.labels`, else `LABEL_<i>`).
    pub label: String,
    /// Raw logits.
    pub logits: Vec<f32>,
    /// Softmax probabilities.
    pub probs: Vec<f32>,
    /// Whether the text was truncated.
    pub truncated: bool,
}

/// The longest input an LLM embedder takes by default when its file names none: its context
/// can be far longer, and a text's KV cache grows with it (`--max-seq-len` raises it).
const LAST_TOKEN_DEFAULT_LEN: usize = 2048;

/// An open model: a cheap handle (`Clone` shares the one loaded model, as [`crate::Llm`]
/// does), `Send + Sync`, for any number of threads.
#[derive(Clone)]
pub struct Session {
    pub(crate) inner: Arc<Loaded>,
}

/// What a [`Session`] shares among its clones.
pub(crate) struct Loaded {
    pub(crate) model: Net,
    pub(crate) tokenizer: Tokenizer,
    pub(crate) device: Device,
    pub(crate) opts: SessionOptions,
    max_len: usize,
    /// The model file's identity, hashed on first use.
    id: std::sync::OnceLock<edgecut_format::ModelId>,
    /// Held while a picture is decoded and resized: one at a time per session, so that many
    /// callers with large pictures hold one decoded picture, not one each.
    pub(crate) decoding: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Session({:?} on {})",
            self.inner.model, self.inner.device
        )
    }
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        (dot / (na * nb)) as f32
    }
}

impl Session {
    /// Opens a model file on a device.
    pub fn open(path: impl AsRef<Path>, opts: &SessionOptions) -> Result<Session> {
        Self::from_file(Arc::new(GgufFile::open(path.as_ref())?), opts)
    }

    /// A session on a model file already open (for callers that read the file first, such as
    /// to dispatch on its architecture).
    pub fn from_file(file: Arc<GgufFile>, opts: &SessionOptions) -> Result<Session> {
        let device = crate::device::open_for(
            edgecut_models::Kind::Encoder,
            opts.device,
            opts.threads,
            opts.shared_device.as_ref(),
        )?
        .with_attention(opts.attention);
        let (model, default_len, context) = if edgecut_models::pools_last_token(&file)? {
            let decoder = Decoder::load(file.clone(), &device)?;
            let context = decoder.config.context;
            let default_len = file
                .get_u64("edgecut.max_seq_len")
                .map_or(LAST_TOKEN_DEFAULT_LEN, |v| v as usize)
                .min(context);
            let normalize = file
                .get("edgecut.normalize")
                .and_then(edgecut_format::gguf::Value::as_bool)
                .unwrap_or(true);
            let decoder = Box::new(decoder);
            (Net::Last { decoder, normalize }, default_len, context)
        } else if edgecut_models::embeds_images(&file)? {
            let c = Clip::load(file.clone(), &device)?;
            let context = c.cfg.context;
            (Net::Clip(Box::new(c)), context, context)
        } else {
            let e = Encoder::load(file.clone(), &device)?;
            let (default_len, context) = (e.cfg.max_seq_len, e.cfg.context);
            (Net::Bert(Box::new(e)), default_len, context)
        };
        let tokenizer = Tokenizer::from_gguf(&file)?;
        let max_len = match opts.max_seq_len {
            None => default_len,
            Some(n) if (2..=context).contains(&n) => n,
            Some(n) => {
                return Err(Error::Input(format!(
                    "max sequence length {n} is outside 2..={context} (the model's context length)"
                )))
            }
        };
        if opts.batch_size == 0 {
            return Err(Error::Input("batch size must be at least 1".into()));
        }
        Ok(Session {
            inner: Arc::new(Loaded {
                model,
                tokenizer,
                device,
                opts: opts.clone(),
                max_len,
                id: std::sync::OnceLock::new(),
                decoding: std::sync::Mutex::new(()),
            }),
        })
    }

    /// The device in use, in words.
    pub fn device(&self) -> String {
        self.inner.device.to_string()
    }

    /// The model file.
    pub fn file(&self) -> &GgufFile {
        self.inner.model.file()
    }

    /// The model file's identity (a hash of its metadata and tensors, computed once per
    /// session): what split clients and servers compare.
    pub fn model_id(&self) -> edgecut_format::ModelId {
        *self
            .inner
            .id
            .get_or_init(|| self.inner.model.file().identity())
    }

    /// Tokens per text before truncation.
    pub fn max_seq_len(&self) -> usize {
        self.inner.max_len
    }

    /// Length of the sentence vectors [`Session::embed`] returns.
    pub fn embedding_dim(&self) -> usize {
        self.inner.model.hidden()
    }

    /// Cuts sentence vectors to their first `dims` values (Matryoshka embeddings, the API's
    /// `dimensions`), L2-normalised again when the model normalises its vectors.
    pub fn shorten(&self, vectors: &mut [Vec<f32>], dims: usize) -> Result<()> {
        let full = self.embedding_dim();
        if dims == 0 || dims > full {
            return Err(Error::Input(format!(
                "dimensions {dims} is outside 1..={full} (the model's embedding size)"
            )));
        }
        for v in vectors.iter_mut() {
            v.truncate(dims);
            if self.inner.model.normalize() {
                edgecut_backends::ops::l2_normalize(v, dims);
            }
        }
        Ok(())
    }

    /// Classes of the classification head (`None` for a model without one).
    pub fn n_classes(&self) -> Option<usize> {
        self.inner.model.n_classes()
    }

    /// The BERT-family encoder, for what only it runs (split, stage timing, heads).
    pub(crate) fn bert(&self) -> Result<&Encoder> {
        match &self.inner.model {
            Net::Bert(e) => Ok(e),
            Net::Clip(_) => Err(Error::Input(
                "this is CLIP: its texts embed on the device (pictures split, through \
                 run_device_part_images), and it has no classification head"
                    .into(),
            )),
            Net::Last { .. } => Err(Error::Input(
                "this is a decoder pooled at its last token (an LLM embedder): it embeds whole, \
                 without split stages or a classification head"
                    .into(),
            )),
        }
    }

    /// Tokenizes `text` as the model sees it (special tokens included, truncated).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .tokenizer
            .encode(text, true, Some(self.inner.max_len))?
            .ids)
    }

    /// Tokens of `text` as the model sees it, special tokens included, before any truncation
    /// (more than [`Session::max_seq_len`] means [`Session::embed`] would truncate it).
    pub fn count_tokens(&self, text: &str) -> Result<usize> {
        Ok(self.inner.tokenizer.encode(text, true, None)?.full_len)
    }

    /// Runs `texts` in batches of similar length through `run` (a batch's token ids and
    /// types to one row per text: the encoder and a head); rows come back in input order.
    fn run<T>(
        &self,
        texts: &[&str],
        batch: usize,
        run: impl Fn(&[Vec<u32>], Option<&[Vec<u32>]>) -> Result<Vec<T>>,
    ) -> Result<(Vec<T>, Vec<Truncated>)> {
        let mut encoded = Vec::with_capacity(texts.len());
        let mut truncated = Vec::new();
        for (index, t) in texts.iter().enumerate() {
            let e = self
                .inner
                .tokenizer
                .encode(t, true, Some(self.inner.max_len))?;
            truncated.extend(Truncated::of(index, e.full_len, e.ids.len()));
            encoded.push((e.ids, None));
        }
        Ok((self.run_encoded(encoded, batch, run)?, truncated))
    }

    /// [`Session::run`] on texts already tokenized, each with its token types or none.
    fn run_encoded<T>(
        &self,
        encoded: Vec<(Vec<u32>, Option<Vec<u32>>)>,
        batch: usize,
        run: impl Fn(&[Vec<u32>], Option<&[Vec<u32>]>) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        self.batched(
            encoded,
            batch,
            |(ids, _)| ids.len(),
            |batch| {
                let (ids, types): (Vec<Vec<u32>>, Vec<Option<Vec<u32>>>) =
                    batch.into_iter().unzip();
                let typed = types.iter().any(Option::is_some).then(|| {
                    types
                        .into_iter()
                        .zip(&ids)
                        .map(|(t, i)| t.unwrap_or_else(|| vec![0; i.len()]))
                        .collect::<Vec<_>>()
                });
                run(&ids, typed.as_deref())
            },
        )
    }

    /// Runs `items` in batches of `batch` items, longest first (so each batch pads little),
    /// `run` giving one result per item of its batch; results come back in input order.
    pub(crate) fn batched<I, T>(
        &self,
        items: Vec<I>,
        batch: usize,
        len: impl Fn(&I) -> usize,
        run: impl Fn(Vec<I>) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(len(&items[i])));
        let mut items: Vec<Option<I>> = items.into_iter().map(Some).collect();
        let mut slots: Vec<Option<T>> = (0..items.len()).map(|_| None).collect();
        for chunk in order.chunks(batch.max(1)) {
            let batch = chunk
                .iter()
                .map(|&i| items[i].take().expect("once"))
                .collect();
            for (&i, row) in chunk.iter().zip(run(batch)?) {
                slots[i] = Some(row);
            }
        }
        Ok(slots
            .into_iter()
            .map(|s| s.expect("every text ran"))
            .collect())
    }

    /// Sentence embeddings of `texts`, in input order. An empty list gives no vectors; an empty
    /// or all-whitespace text gives the embedding of `[CLS] [SEP]`, as the reference does. Texts
    /// longer than [`Session::max_seq_len`] tokens are truncated and listed in
    /// [`Embeddings::truncated`].
    pub fn embed(&self, texts: &[&str]) -> Result<Embeddings> {
        self.embed_in_batches(texts, self.inner.opts.batch_size)
    }

    /// [`Session::embed`] with `batch_size` texts in each padded batch instead of the
    /// session's [`SessionOptions::batch_size`] (the vectors may differ from another batching
    /// in their last bits: padding changes the order of sums).
    pub fn embed_in_batches(&self, texts: &[&str], batch_size: usize) -> Result<Embeddings> {
        if batch_size == 0 {
            return Err(Error::Input(
                "batch size 0: at least one text per batch".into(),
            ));
        }
        let dim = self.inner.model.hidden();
        let (vectors, truncated) = match &self.inner.model {
            Net::Bert(e) => self.run(texts, batch_size, |ids, types| {
                let pooled = e.pool(&e.encode_typed(ids, types)?)?;
                Ok(pooled.chunks_exact(dim).map(<[f32]>::to_vec).collect())
            })?,
            Net::Last { decoder, normalize } => {
                self.embed_last(decoder, *normalize, texts, batch_size)?
            }
            Net::Clip(c) => self.embed_clip_texts(c, texts, batch_size)?,
        };
        Ok(Embeddings {
            vectors,
            dim,
            truncated,
        })
    }

    /// Relevance of each document to `query` by a cross-encoder (a classifier with one output,
    /// such as ms-marco-MiniLM or bge-reranker): raw scores in input order (logits; see
    /// [`sigmoid`] for 0..1). The query is kept whole; documents are cut to fit
    /// [`Session::max_seq_len`] and listed in [`Reranked::truncated`].
    pub fn rerank(&self, query: &str, documents: &[&str]) -> Result<Reranked> {
        let pairs: Vec<(&str, &str)> = documents.iter().map(|d| (query, *d)).collect();
        self.score_pairs(&pairs)
    }

    /// [`Session::rerank`] over pairs that need not share a query (batches of several
    /// requests).
    pub fn score_pairs(&self, pairs: &[(&str, &str)]) -> Result<Reranked> {
        match self.inner.model.n_classes() {
            Some(1) => {}
            Some(n) => {
                return Err(Error::Input(format!(
                    "this model classifies into {n} classes; reranking needs a cross-encoder \
                     with one output"
                )))
            }
            None => return Err(Error::NoClassifier),
        }
        let mut encoded = Vec::with_capacity(pairs.len());
        let mut truncated = Vec::new();
        for (index, (q, d)) in pairs.iter().enumerate() {
            let e = self
                .inner
                .tokenizer
                .encode_pair(q, d, Some(self.inner.max_len))?;
            truncated.extend(Truncated::of(index, e.full_len, e.ids.len()));
            encoded.push((e.ids, Some(e.type_ids)));
        }
        let bert = self.bert()?;
        let scores = self.run_encoded(encoded, self.inner.opts.batch_size, |ids, types| {
            Ok(bert.classify_ids(ids, types)?)
        })?;
        Ok(Reranked { scores, truncated })
    }

    /// Tokens of a query/document pair as [`Session::rerank`] joins them, before any cut.
    pub fn count_pair_tokens(&self, query: &str, document: &str) -> Result<usize> {
        Ok(self
            .inner
            .tokenizer
            .encode_pair(query, document, None)?
            .full_len)
    }

    /// Last-token pooling of a decoder: each text's final hidden state at its last token (a
    /// text with no tokens is refused: it has none), in batches of similar length.
    fn embed_last(
        &self,
        decoder: &Decoder,
        normalize: bool,
        texts: &[&str],
        batch: usize,
    ) -> Result<(Vec<Vec<f32>>, Vec<Truncated>)> {
        let mut encoded = Vec::with_capacity(texts.len());
        let mut truncated = Vec::new();
        for (index, t) in texts.iter().enumerate() {
            let e = self
                .inner
                .tokenizer
                .encode(t, true, Some(self.inner.max_len))?;
            if e.ids.is_empty() {
                return Err(Error::Input(format!(
                    "text {index} has no tokens, so no last token to pool"
                )));
            }
            truncated.extend(Truncated::of(index, e.full_len, e.ids.len()));
            encoded.push(e.ids);
        }
        let dim = decoder.config.hidden;
        let out = self.batched(encoded, batch, Vec::len, |ids| {
            let mut vectors = decoder.last_hidden(&ids)?;
            if normalize {
                vectors
                    .iter_mut()
                    .for_each(|v| edgecut_backends::ops::l2_normalize(v, dim));
            }
            Ok(vectors)
        })?;
        Ok((out, truncated))
    }

    /// Classifies `texts` with the model's sequence-classification head.
    pub fn classify(&self, texts: &[&str]) -> Result<Vec<Classification>> {
        let n = self.inner.model.n_classes().ok_or(Error::NoClassifier)?;
        let bert = self.bert()?;
        let labels = &bert.cfg.labels;
        let (mut out, truncated) = self.run(texts, self.inner.opts.batch_size, |ids, types| {
            let logits = bert.classify_ids(ids, types)?;
            let probs = probabilities(&logits, n);
            Ok(logits
                .chunks_exact(n)
                .zip(probs.chunks_exact(n))
                .map(|(l, p)| {
                    let class = p
                        .iter()
                        .enumerate()
                        .fold(0, |best, (i, v)| if *v > p[best] { i } else { best });
                    let label = labels
                        .get(class)
                        .cloned()
                        .unwrap_or_else(|| format!("LABEL_{class}"));
                    Classification {
                        class,
                        label,
                        logits: l.to_vec(),
                        probs: p.to_vec(),
                        truncated: false,
                    }
                })
                .collect())
        })?;
        for t in truncated {
            out[t.index].truncated = true;
        }
        Ok(out)
    }
}
