//! The answers of the generation routes: one JSON object, or server-sent events ending in
//! `[DONE]`; in the shape of a chat completion, a tool call, or a text completion.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::response::sse::Event as Sse;
use edgecut::Finish;
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::error::ApiError;
use super::slots::Event;
use super::tools::{read_reply, Reply as ToolReply, ToolFormat};

/// What a reply is.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum Shape {
    /// Chat text.
    Chat,
    /// A chat reply that may hold tool calls ([`super::tools`]), read back into `tool_calls`
    /// or text once whole (streamed as one delta at the end).
    Tools(ToolFormat),
    /// A text completion.
    Completion,
}

/// The request's identity and the shape of its chunks.
pub(crate) struct Reply {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub shape: Shape,
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::MaxTokens | Finish::ContextFull => "length",
        _ => "stop",
    }
}

pub(crate) fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion,
           "total_tokens": prompt + completion})
}

/// A finished reply's message fields (`content`, `tool_calls`) and finish reason. An envelope
/// that ended on its own is read back; one cut short stays text, its finish `length`.
fn message(shape: Shape, id: &str, text: String, finish: Finish) -> (Value, Value, &'static str) {
    let reason = finish_reason(finish);
    let Shape::Tools(format) = shape else {
        return (json!(text), Value::Null, reason);
    };
    if reason != "stop" {
        return (json!(text), Value::Null, reason);
    }
    match read_reply(&text, format) {
        Some(ToolReply::Calls(calls, content)) => {
            let calls: Vec<Value> = calls
                .into_iter()
                .enumerate()
                .map(|(i, (name, arguments))| {
                    json!({"id": format!("call_{id}_{i}"), "type": "function",
                           "function": {"name": name, "arguments": arguments}})
                })
                .collect();
            (json!(content), Value::Array(calls), "tool_calls")
        }
        Some(ToolReply::Text(t)) => (json!(t), Value::Null, reason),
        None => (json!(text), Value::Null, reason),
    }
}

impl Reply {
    fn chat(&self) -> bool {
        self.shape != Shape::Completion
    }

    fn object(&self, chunk: bool) -> &'static str {
        match (self.chat(), chunk) {
            (true, true) => "chat.completion.chunk",
            (true, false) => "chat.completion",
            (false, _) => "text_completion",
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        self.chunk_with(delta, finish, Vec::new())
    }

    /// A chunk, with the log-probabilities of its tokens when there are any.
    fn chunk_with(&self, delta: Value, finish: Option<&str>, logprobs: Vec<Value>) -> Value {
        let logprobs = if logprobs.is_empty() {
            Value::Null
        } else {
            json!({"content": logprobs})
        };
        let choice = if self.chat() {
            json!({"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
        } else {
            let text = delta.get("content").cloned().unwrap_or(json!(""));
            json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
        };
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }

    /// The whole answer.
    pub fn whole(&self, text: String, finish: Finish, usage: Value) -> Value {
        let choice = if self.chat() {
            let (content, calls, reason) = message(self.shape, &self.id, text, finish);
            let mut msg = json!({"role": "assistant", "content": content});
            if !calls.is_null() {
                msg["tool_calls"] = calls;
            }
            json!({"index": 0, "message": msg, "logprobs": null, "finish_reason": reason})
        } else {
            json!({"index": 0, "text": text, "logprobs": null,
                   "finish_reason": finish_reason(finish)})
        };
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
            "usage": usage,
        })
    }
}

/// Where a stream is.
struct Streaming {
    reply: Reply,
    rx: UnboundedReceiver<Event>,
    /// Events taken (the generation stops when they lag too long: the client stopped reading).
    taken: Arc<AtomicU64>,
    /// Whether the end has been seen.
    ended: bool,
    include_usage: bool,
    first: bool,
    /// A tool envelope's text, held until it is whole.
    held: String,
    /// Log-probabilities not yet sent, for the next chunk.
    logprobs: Vec<Value>,
    /// Events left to send after the end, last first.
    tail: Vec<Sse>,
}

impl Streaming {
    /// A delta with `content`, the role on the first.
    fn delta(&mut self, content: Option<&str>) -> Value {
        let mut d = json!({});
        if std::mem::take(&mut self.first) {
            d["role"] = json!("assistant");
        }
        if let Some(t) = content {
            d["content"] = json!(t);
        }
        d
    }

    /// The events after the generation's end: a tool envelope's reply, the finish, usage and
    /// `[DONE]` (the first returned, the rest queued).
    fn end(&mut self, finish: Finish, prompt: usize, completion: usize) -> Sse {
        self.ended = true;
        let mut out = Vec::new();
        let mut reason = finish_reason(finish);
        if let Shape::Tools(_) = self.reply.shape {
            let text = std::mem::take(&mut self.held);
            let (content, calls, r) = message(self.reply.shape, &self.reply.id, text, finish);
            reason = r;
            let mut d = self.delta(content.as_str());
            if let Value::Array(calls) = calls {
                let calls: Vec<Value> = calls
                    .into_iter()
                    .enumerate()
                    .map(|(i, mut c)| {
                        c["index"] = json!(i);
                        c
                    })
                    .collect();
                d["tool_calls"] = json!(calls);
            }
            let lp = std::mem::take(&mut self.logprobs);
            out.push(self.reply.chunk_with(d, None, lp));
        }
        let d = if self.first {
            self.delta(None)
        } else {
            json!({})
        };
        let lp = std::mem::take(&mut self.logprobs);
        out.push(self.reply.chunk_with(d, Some(reason), lp));
        if self.include_usage {
            let mut u = self.reply.chunk(json!({}), None);
            u["choices"] = json!([]);
            u["usage"] = usage(prompt, completion);
            out.push(u);
        }
        self.tail.push(Sse::default().data("[DONE]"));
        for c in out.iter().skip(1).rev() {
            self.tail.push(Sse::default().data(c.to_string()));
        }
        Sse::default().data(out[0].to_string())
    }
}

/// The answer as server-sent events.
pub(crate) fn sse(
    reply: Reply,
    rx: UnboundedReceiver<Event>,
    taken: Arc<AtomicU64>,
    include_usage: bool,
) -> impl Stream<Item = Result<Sse, Infallible>> {
    let s = Streaming {
        reply,
        rx,
        taken,
        ended: false,
        include_usage,
        first: true,
        held: String::new(),
        logprobs: Vec::new(),
        tail: Vec::new(),
    };
    stream::unfold(s, |mut s| async move {
        if let Some(e) = s.tail.pop() {
            return Some((Ok(e), s));
        }
        if s.ended {
            return None;
        }
        let event = loop {
            let e = s.rx.recv().await;
            s.taken.fetch_add(1, Ordering::Relaxed);
            break match e {
                Some(Event::Text(t)) if matches!(s.reply.shape, Shape::Tools(_)) => {
                    s.held.push_str(&t);
                    continue;
                }
                Some(Event::Logprobs(l)) => {
                    s.logprobs.extend(l);
                    continue;
                }
                Some(Event::Text(t)) => {
                    let d = s.delta(Some(&t));
                    let lp = std::mem::take(&mut s.logprobs);
                    Sse::default().data(s.reply.chunk_with(d, None, lp).to_string())
                }
                Some(Event::Done {
                    finish,
                    prompt_tokens,
                    completion_tokens,
                }) => s.end(finish, prompt_tokens, completion_tokens),
                Some(Event::Failed(e)) => {
                    s.ended = true;
                    s.tail.push(Sse::default().data("[DONE]"));
                    Sse::default().data(ApiError::invalid(e).body().to_string())
                }
                None => {
                    s.ended = true;
                    let e = ApiError::unavailable("the generation thread has stopped");
                    Sse::default().data(e.body().to_string())
                }
            };
        };
        Some((Ok(event), s))
    })
}
