//! Decoders from Python: the native `_native.LLM` under `edgecut.LLM` (which gives it typed
//! keyword arguments). A handle holds one conversation's KV cache, locally or split with
//! `edgecut serve`; generations on one handle take turns.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use edgecut::split::SplitDecoder;
use edgecut::{Context, LlmOptions, Message, SamplingParams};
use edgecut_split::DecoderLink;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::generate::{settings, Generation, Settings};
use crate::stream::{TextStream, Worker};
use crate::{detached, invalid, to_py, SIGNAL_CHECK};

/// Where a handle's conversation runs.
pub(crate) enum Engine {
    /// On this machine; the context is made on first use.
    Local(Option<Context>),
    /// Split with a server (the device's blocks, and the link to the rest).
    Split {
        conversation: Box<SplitDecoder>,
        link: Box<DecoderLink>,
    },
}

/// A prompt as text, or chat messages to render with the model's template.
pub(crate) enum Prompt {
    Text(String),
    Chat(Vec<Message>),
}

/// One generation to run: the model, its engine and what to do. Owned, so a stream's worker
/// thread can take it.
pub(crate) struct Job {
    pub(crate) llm: edgecut::Llm,
    pub(crate) engine: Arc<Mutex<Engine>>,
    pub(crate) prompt: Prompt,
    pub(crate) settings: Settings,
}

impl Job {
    /// Runs the generation, pieces of text going to `on_text` (`false` stops it). Returns the
    /// generation and, for a split that finished alone, why.
    pub(crate) fn run(
        self,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> edgecut::Result<(edgecut::Generation, Option<String>)> {
        let Job {
            llm,
            engine,
            prompt,
            settings,
        } = self;
        let mut opts = settings.opts;
        if let Some(c) = &settings.constraint {
            opts = opts.with_guide(Some(llm.guide(c)?));
        }
        let text = match prompt {
            Prompt::Text(t) => t,
            Prompt::Chat(m) => llm.render_chat(&m)?,
        };
        let ids = llm.tokenize(&text)?;
        let mut engine = engine.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *engine {
            Engine::Local(ctx) => {
                let ctx = match ctx {
                    Some(c) => c,
                    None => ctx.insert(llm.new_context()?),
                };
                Ok((ctx.generate(&ids, &opts, on_text)?, None))
            }
            Engine::Split { conversation, link } => {
                link.set_sampling(opts.sampling.clone());
                let g = conversation.generate(&ids, &opts, link.as_mut(), on_text)?;
                let why = g
                    .fell_back
                    .map(|(at, why)| format!("after {at} tokens: {why}"));
                Ok((g.generation, why))
            }
        }
    }
}

/// A decoder (Llama, SmolLM2, Qwen2/3, Gemma 3) and one conversation's KV cache.
#[pyclass(frozen, module = "edgecut._native", name = "LLM")]
pub struct Llm {
    llm: edgecut::Llm,
    engine: Arc<Mutex<Engine>>,
    split: bool,
    /// The thread streams generate on.
    worker: Worker,
}

impl Llm {
    /// The job for `prompt` (text, or a list of `(role, content)` pairs with `chat`).
    fn job(
        &self,
        py: Python<'_>,
        prompt: &Bound<'_, PyAny>,
        chat: bool,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Job> {
        let prompt = if chat {
            let pairs: Vec<(String, String)> = prompt.extract()?;
            if pairs.is_empty() {
                return Err(invalid(py, "messages is empty"));
            }
            Prompt::Chat(pairs.into_iter().map(|(r, c)| Message::new(r, c)).collect())
        } else {
            Prompt::Text(prompt.extract()?)
        };
        Ok(Job {
            llm: self.llm.clone(),
            engine: self.engine.clone(),
            prompt,
            settings: settings(py, options)?,
        })
    }
}

#[pymethods]
impl Llm {
    #[new]
    #[pyo3(signature = (path, *, device="auto", threads=None, context=None, server=None,
        cut=None, token=None, encoding="int8", timeout=10.0, tls_ca=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        device: &str,
        threads: Option<usize>,
        context: Option<usize>,
        server: Option<String>,
        cut: Option<usize>,
        token: Option<String>,
        encoding: &str,
        timeout: f64,
        tls_ca: Option<PathBuf>,
    ) -> PyResult<Llm> {
        if context == Some(0) {
            return Err(invalid(py, "context must be at least 1 position"));
        }
        let opts = LlmOptions::default()
            .with_device(crate::device(py, device)?)
            .with_threads(crate::threads(py, threads)?)
            .with_context(context);
        let llm = detached(py, move || edgecut::Llm::open(&path, &opts))?;
        let engine = match server {
            None => {
                if cut.is_some() {
                    return Err(invalid(py, "cut= needs server= (the split's other half)"));
                }
                Engine::Local(None)
            }
            Some(server) => {
                let n = llm.blocks();
                let cut = cut.ok_or_else(|| {
                    invalid(
                        py,
                        format!("server= needs cut= (1..={} blocks here)", n - 1),
                    )
                })?;
                if cut == 0 || cut >= n {
                    return Err(invalid(
                        py,
                        format!("cut={cut}: a split decoder runs 1 to {} blocks here", n - 1),
                    ));
                }
                let cfg =
                    crate::embed::client_config(py, server, cut, token, encoding, timeout, tls_ca)?;
                let conversation = SplitDecoder::new(&llm, cut).map_err(|e| to_py(py, e))?;
                Engine::Split {
                    conversation: Box::new(conversation),
                    link: Box::new(DecoderLink::new(&llm, cfg, SamplingParams::default())),
                }
            }
        };
        Ok(Llm {
            llm,
            split: matches!(engine, Engine::Split { .. }),
            engine: Arc::new(Mutex::new(engine)),
            worker: Worker::default(),
        })
    }

    /// Generates on this thread with the GIL released; Ctrl-C stops it (the handle stays
    /// usable) and raises `KeyboardInterrupt`.
    #[pyo3(signature = (prompt, chat, options=None))]
    fn run(
        &self,
        py: Python<'_>,
        prompt: &Bound<'_, PyAny>,
        chat: bool,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Generation> {
        let job = self.job(py, prompt, chat, options)?;
        let mut interrupted: Option<PyErr> = None;
        let out = detached(py, || {
            let mut last = Instant::now();
            job.run(&mut |_| {
                if last.elapsed() < SIGNAL_CHECK {
                    return true;
                }
                last = Instant::now();
                match Python::attach(|py| py.check_signals()) {
                    Ok(()) => true,
                    Err(e) => {
                        interrupted = Some(e);
                        false
                    }
                }
            })
        });
        if let Some(e) = interrupted {
            return Err(e);
        }
        let (g, fell_back) = out?;
        if let Some(why) = &fell_back {
            crate::embed::warn_fallback(py, why)?;
        }
        Ok(Generation::new(g, fell_back))
    }

    /// Generates on the handle's generation thread, the pieces coming through the returned
    /// iterator.
    #[pyo3(signature = (prompt, chat, options=None))]
    fn stream(
        &self,
        py: Python<'_>,
        prompt: &Bound<'_, PyAny>,
        chat: bool,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<TextStream> {
        TextStream::start(self.job(py, prompt, chat, options)?, &self.worker)
            .map_err(|e| invalid(py, format!("cannot start the generation thread: {e}")))
    }

    /// Seconds of each of `iters` greedy generations of `max_tokens` tokens (end of sequence
    /// ignored) after `prompt` in a fresh context, made from Rust as the facade's users make
    /// them (the Python overhead benchmark's other half: benches/compare/python_peers.py).
    fn _facade_seconds(
        &self,
        py: Python<'_>,
        prompt: String,
        max_tokens: usize,
        iters: usize,
    ) -> PyResult<Vec<f64>> {
        let llm = &self.llm;
        detached(py, || {
            let opts = edgecut::GenerateOptions::default()
                .with_max_tokens(max_tokens)
                .with_ignore_eos(true);
            let ids = llm.tokenize(&prompt)?;
            let mut ctx = llm.new_context()?;
            (0..iters)
                .map(|_| {
                    let t = Instant::now();
                    ctx.clear();
                    ctx.generate(&ids, &opts, &mut |_| true)
                        .map(|_| t.elapsed().as_secs_f64())
                })
                .collect()
        })
    }

    /// `messages` rendered with the model's chat template, ready to generate after.
    fn render_chat(&self, py: Python<'_>, messages: Vec<(String, String)>) -> PyResult<String> {
        let m: Vec<Message> = messages
            .into_iter()
            .map(|(r, c)| Message::new(r, c))
            .collect();
        self.llm.render_chat(&m).map_err(|e| to_py(py, e))
    }

    /// Token ids of `text`.
    fn tokenize(&self, py: Python<'_>, text: &str) -> PyResult<Vec<u32>> {
        self.llm.tokenize(text).map_err(|e| to_py(py, e))
    }

    /// Text of token ids.
    fn detokenize(&self, py: Python<'_>, ids: Vec<u32>) -> PyResult<String> {
        self.llm.detokenize(&ids).map_err(|e| to_py(py, e))
    }

    /// Forgets the conversation held in the KV cache (a local handle; a split one keeps it).
    fn reset(&self, py: Python<'_>) {
        py.detach(|| {
            let mut e = self.engine.lock().unwrap_or_else(|e| e.into_inner());
            if let Engine::Local(Some(ctx)) = &mut *e {
                ctx.clear();
            }
        })
    }

    /// Positions in the KV cache.
    #[getter]
    fn context_len(&self) -> usize {
        self.llm.context_len()
    }

    /// Whether the file has a chat template.
    #[getter]
    fn has_chat_template(&self) -> bool {
        self.llm.has_chat_template()
    }

    /// The device in use, in words.
    #[getter]
    fn device(&self) -> String {
        self.llm.device()
    }

    /// Whether the handle runs split with a server.
    #[getter]
    fn split(&self) -> bool {
        self.split
    }
}
