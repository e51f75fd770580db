//! `POST /v1/chat/completions` and `POST /v1/completions`: a prompt (the model's chat template
//! over the messages, or the text as it is) goes to the model's slots ([`super::slots`]); the
//! answer is one JSON object, or with `stream: true` server-sent events ending in `[DONE]`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::sse::KeepAlive;
use axum::response::{IntoResponse, Response};
use axum::Json;
use edgecut::{GenerateOptions, Llm, Message, SamplingParams};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc::unbounded_channel;

use super::admission::Place;
use super::body::Body;
use super::error::ApiError;
use super::reply::{sse, usage, Reply, Shape};
use super::slots::{Event, Job, Slots};
use super::{blocking, tools, ApiState, Kind, Served};

/// `stop`: one string or several.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `stream_options`.
#[derive(Deserialize, Default)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Settings shared by both routes.
#[derive(Deserialize)]
pub(crate) struct Settings {
    // f64, so that the range checks see the number as sent (not rounded to f32).
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    n: Option<u64>,
    /// Keep going past end-of-sequence tokens (llama.cpp's extension; for benchmarks).
    #[serde(default)]
    ignore_eos: Option<bool>,
    /// Divide the logits of tokens already said (vLLM's and llama.cpp's extension; 1: off).
    #[serde(default)]
    repetition_penalty: Option<f64>,
    /// Draw only from the k most likely tokens (vLLM's and llama.cpp's extension; 0: all).
    #[serde(default)]
    top_k: Option<u64>,
    /// Return the tokens' log-probabilities (chat: `true`; completions take a count, refused).
    #[serde(default)]
    logprobs: Option<Value>,
    /// Alternatives per token with `logprobs` (0 to 20).
    #[serde(default)]
    top_logprobs: Option<u64>,
}

/// A message's content: text, or parts of which only text ones are taken.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
pub(crate) struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
    /// An assistant's calls.
    #[serde(default)]
    tool_calls: Option<Vec<tools::CallIn>>,
    /// A tool message's call.
    #[serde(default)]
    tool_call_id: Option<String>,
}

/// The body of `POST /v1/chat/completions`.
#[derive(Deserialize)]
pub(crate) struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    response_format: Option<tools::ResponseFormat>,
    #[serde(default)]
    tools: Option<Vec<tools::Tool>>,
    #[serde(default)]
    tool_choice: Option<tools::ToolChoice>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(flatten)]
    settings: Settings,
}

/// The body of `POST /v1/completions`.
#[derive(Deserialize)]
pub(crate) struct CompletionRequest {
    model: String,
    prompt: super::Input,
    #[serde(flatten)]
    settings: Settings,
}

fn messages(list: Vec<ChatMessage>) -> Result<Vec<Message>, ApiError> {
    if list.is_empty() {
        return Err(ApiError::param("messages", "`messages` is empty"));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, m)| {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                "tool" => "tool",
                r => {
                    return Err(ApiError::param(
                        "messages",
                        format!(
                            "message {i}: role {r:?} is not system, developer, user, assistant \
                             or tool"
                        ),
                    ))
                }
            };
            let text = match m.content {
                None => String::new(),
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => {
                    let mut t = String::new();
                    for p in parts {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(s)) => t.push_str(&s),
                            (k, _) => {
                                return Err(ApiError::param(
                                    "messages",
                                    format!("message {i}: a content part of type {k:?}; only text parts are taken"),
                                ))
                            }
                        }
                    }
                    t
                }
            };
            let mut msg = Message::new(role, text);
            if let Some(calls) = m.tool_calls.filter(|c| !c.is_empty()) {
                msg = msg.with_tool_calls(tools::calls_in(calls, i)?);
            }
            if let Some(id) = m.tool_call_id {
                msg = msg.with_tool_call_id(id);
            }
            Ok(msg)
        })
        .collect()
}

/// Generation options from the request's settings, checked against the limits.
fn options(
    st: &ApiState,
    s: &Settings,
    default_max: u64,
    prompt: usize,
    llm: &Llm,
    chat: bool,
) -> Result<GenerateOptions, ApiError> {
    let temperature = s.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::param(
            "temperature",
            format!("temperature {temperature} is outside 0..=2"),
        ));
    }
    let top_p = s.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::param(
            "top_p",
            format!("top_p {top_p} is outside (0, 1]"),
        ));
    }
    let logprobs = match (&s.logprobs, chat) {
        (None | Some(Value::Null) | Some(Value::Bool(false)), _) => None,
        (Some(Value::Bool(true)), true) => Some(s.top_logprobs.unwrap_or(0)),
        (Some(_), true) => return Err(ApiError::param("logprobs", "logprobs is true or false")),
        (Some(_), false) => {
            return Err(ApiError::param(
                "logprobs",
                "log-probabilities are returned by /v1/chat/completions only",
            ))
        }
    };
    if let Some(k) = logprobs.or(s.top_logprobs) {
        if k > 20 {
            return Err(ApiError::param(
                "top_logprobs",
                format!("top_logprobs {k} is outside 0..=20"),
            ));
        }
    }
    if s.top_logprobs.is_some() && logprobs.is_none() {
        return Err(ApiError::param(
            "top_logprobs",
            "top_logprobs needs logprobs: true",
        ));
    }
    let penalty = s.repetition_penalty.unwrap_or(1.0);
    if !(penalty > 0.0 && penalty <= 10.0) {
        return Err(ApiError::param(
            "repetition_penalty",
            format!("repetition_penalty {penalty} is outside (0, 10]"),
        ));
    }
    let (max, param) = match (s.max_completion_tokens, s.max_tokens) {
        (Some(m), _) => (m, "max_completion_tokens"),
        (None, Some(m)) => (m, "max_tokens"),
        (None, None) => (default_max, "max_tokens"),
    };
    if max == 0 || max > st.cfg.max_tokens as u64 {
        return Err(ApiError::param(
            param,
            format!(
                "{param} {max} is outside 1..={} (--http-max-tokens)",
                st.cfg.max_tokens
            ),
        ));
    }
    let what = if chat { "messages" } else { "prompt" };
    if prompt == 0 {
        return Err(ApiError::param(what, "the prompt has no tokens"));
    }
    if prompt >= llm.context_len() {
        return Err(ApiError {
            code: Some("context_length_exceeded"),
            ..ApiError::param(
                what,
                format!(
                    "the prompt is {prompt} tokens; the context holds {} (with one for the reply)",
                    llm.context_len()
                ),
            )
        });
    }
    let stop = match &s.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    if stop.len() > 16 {
        return Err(ApiError::param(
            "stop",
            format!("{} stop strings; at most 16", stop.len()),
        ));
    }
    let seed = match s.seed {
        Some(s) => s as u64,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    };
    Ok(GenerateOptions::default()
        // A seed asks for the same reply to the same request: the whole prompt runs, whatever
        // a slot's context holds.
        .with_cache_reuse(s.seed.is_none())
        .with_logprobs(logprobs.map(|k| k as usize))
        .with_max_tokens(max as usize)
        .with_ignore_eos(s.ignore_eos.unwrap_or(false))
        .with_stop(stop)
        .with_sampling(SamplingParams {
            temperature: temperature as f32,
            // A top_p too small for f32 keeps the most likely token, as the smallest f32 does.
            top_p: (top_p as f32).max(f32::MIN_POSITIVE),
            top_k: s.top_k.unwrap_or(0).min(u32::MAX as u64) as usize,
            repetition_penalty: penalty as f32,
            seed,
            ..SamplingParams::default()
        }))
}

/// The choices asked for (`n`): 1 to the model's slots.
fn choices(st: &ApiState, s: &Settings) -> Result<u32, ApiError> {
    let n = s.n.unwrap_or(1);
    let most = st.cfg.slots.max(1) as u64;
    if n == 0 || n > most {
        return Err(ApiError::param(
            "n",
            format!("n {n} is outside 1..={most} (--http-slots: a choice takes a slot)"),
        ));
    }
    Ok(n as u32)
}

/// The generation model named `model`: the model, its decoder and its slots.
fn generator<'a>(
    st: &'a ApiState,
    model: &str,
) -> Result<(&'a Served, &'a Llm, &'a Slots), ApiError> {
    let served = st.model(model)?;
    match &served.kind {
        Kind::Generator { llm, slots } => Ok((served, llm, slots)),
        Kind::Embedder { .. } => Err(ApiError::param(
            "model",
            format!("{model} is an embedding model; generation needs a decoder"),
        )),
    }
}

/// Refuses, before any tokenizing, text that cannot fit the context however it tokenizes.
fn fits(llm: &Llm, bytes: usize, what: &'static str) -> Result<(), ApiError> {
    let most = llm.max_prompt_bytes();
    if bytes > most {
        return Err(ApiError {
            code: Some("context_length_exceeded"),
            ..ApiError::param(
                what,
                format!(
                    "the prompt is {bytes} bytes; no text over {most} bytes fits the context of \
                     {} tokens",
                    llm.context_len()
                ),
            )
        });
    }
    Ok(())
}

pub(crate) async fn chat(
    State(st): State<Arc<ApiState>>,
    Body(req): Body<ChatRequest>,
) -> Result<Response, ApiError> {
    let (served, llm, slots) = generator(&st, &req.model)?;
    let msgs = messages(req.messages)?;
    let structured = tools::Structured {
        response_format: req.response_format.as_ref(),
        tools: req.tools.as_deref(),
        tool_choice: req.tool_choice.as_ref(),
        parallel_tool_calls: req.parallel_tool_calls,
    };
    let (plan, msgs) = structured.plan(msgs, llm.template_tools())?;
    let listed = plan
        .template_tools
        .as_ref()
        .map_or(0, |t| t.to_string().len());
    fits(
        llm,
        msgs.iter().map(|m| m.content.len()).sum::<usize>() + listed,
        "messages",
    )?;
    let n = choices(&st, &req.settings)?;
    // The places first: rendering, tokenizing and compiling are bounded by admission like
    // generation.
    let place = served.enter_many(n).await?;
    let l = llm.clone();
    let (constraint, template_tools) = (plan.constraint, plan.template_tools);
    let (prompt, guide) = blocking(move || -> Result<_, ApiError> {
        let prompt = l.tokenize(&l.render_chat_with_tools(&msgs, template_tools.as_ref())?)?;
        let guide = match constraint {
            None => None,
            Some((c, param)) => Some(
                l.guide(&c)
                    .map_err(|e| ApiError::param(param, e.to_string()))?,
            ),
        };
        Ok((prompt, guide))
    })
    .await?;
    let default_max = st.cfg.max_tokens as u64;
    let opts = options(&st, &req.settings, default_max, prompt.len(), llm, true)?.with_guide(guide);
    let shape = plan.tools.map_or(Shape::Chat, Shape::Tools);
    run(
        &st,
        served,
        slots,
        place,
        prompt,
        opts,
        &req.settings,
        shape,
    )
    .await
}

pub(crate) async fn completion(
    State(st): State<Arc<ApiState>>,
    Body(req): Body<CompletionRequest>,
) -> Result<Response, ApiError> {
    let (served, llm, slots) = generator(&st, &req.model)?;
    let mut texts = req.prompt.texts()?;
    if texts.len() != 1 {
        return Err(ApiError::param("prompt", "one prompt per request"));
    }
    let text = texts.remove(0);
    fits(llm, text.len(), "prompt")?;
    let n = choices(&st, &req.settings)?;
    let place = served.enter_many(n).await?;
    let l = llm.clone();
    let prompt = blocking(move || l.tokenize(&text)).await?;
    // OpenAI's default for completions.
    let opts = options(&st, &req.settings, 16, prompt.len(), llm, false)?;
    run(
        &st,
        served,
        slots,
        place,
        prompt,
        opts,
        &req.settings,
        Shape::Completion,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn run(
    st: &ApiState,
    served: &Served,
    slots: &Slots,
    place: Place,
    prompt: Vec<u32>,
    opts: GenerateOptions,
    settings: &Settings,
    shape: Shape,
) -> Result<Response, ApiError> {
    let queued = Instant::now();
    let (events, rx) = unbounded_channel();
    let taken = Arc::new(AtomicU64::new(0));
    // Choice i draws with the seed plus i (the same request, the same choices).
    let n = settings.n.unwrap_or(1).max(1) as usize;
    let more = (1..n)
        .map(|i| {
            let mut o = opts.clone();
            o.sampling.seed = o.sampling.seed.wrapping_add(i as u64);
            o
        })
        .collect();
    slots.send(Job {
        prompt,
        opts,
        more,
        queued,
        events,
        taken: taken.clone(),
        place,
    })?;
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let reply = Reply {
        id: format!(
            "{}-{:x}",
            if shape == Shape::Completion {
                "cmpl"
            } else {
                "chatcmpl"
            },
            st.next_id()
        ),
        created,
        model: served.name.clone(),
        shape,
    };
    if settings.stream.unwrap_or(false) {
        let include_usage = settings
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let stream = sse(reply, n, rx, taken, include_usage);
        return Ok(axum::response::Sse::new(stream)
            .keep_alive(KeepAlive::default())
            .into_response());
    }
    let mut rx = rx;
    let mut texts = vec![String::new(); n];
    let mut logprobs: Vec<Option<Vec<Value>>> = vec![None; n];
    let mut ends: Vec<Option<edgecut::Finish>> = vec![None; n];
    let (mut prompt_tokens, mut completion) = (0, 0);
    while ends.iter().any(Option::is_none) {
        let e = rx.recv().await;
        taken.fetch_add(1, Ordering::Relaxed);
        match e {
            Some((i, Event::Text(t))) => texts[i].push_str(&t),
            Some((i, Event::Logprobs(l))) => logprobs[i].get_or_insert_with(Vec::new).extend(l),
            Some((
                i,
                Event::Done {
                    finish,
                    prompt_tokens: p,
                    completion_tokens,
                },
            )) => {
                ends[i] = Some(finish);
                prompt_tokens = p;
                completion += completion_tokens;
            }
            Some((_, Event::Failed(e))) => return Err(ApiError::invalid(e)),
            None => return Err(ApiError::unavailable("the generation thread has stopped")),
        }
    }
    let choices = texts
        .into_iter()
        .zip(ends)
        .zip(logprobs)
        .enumerate()
        .map(|(i, ((text, end), lp))| {
            let mut c = reply.choice(i, text, end.expect("every choice ended"));
            if let Some(l) = lp {
                c["logprobs"] = json!({"content": l});
            }
            c
        })
        .collect();
    Ok(Json(reply.whole(choices, usage(prompt_tokens, completion))).into_response())
}
