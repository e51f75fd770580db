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
use super::tools::ToolFormat;

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

    /// A chunk of choice `index`, with the log-probabilities of its tokens when there are any.
    fn chunk(
        &self,
        index: usize,
        delta: Value,
        finish: Option<&str>,
        logprobs: Vec<Value>,
    ) -> Value {
        let logprobs = if logprobs.is_empty() {
            Value::Null
        } else {
            json!({"content": logprobs})
        };
        let choice = if self.chat() {
            json!({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish})
        } else {
            let text = delta.get("content").cloned().unwrap_or(json!(""));
            json!({"index": index, "text": text, "logprobs": null, "finish_reason": finish})
        };
        json!({
            "id": self.id,
            "object": self.object(true),
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        })
    }

    /// The id its calls are named after: the request's, and the choice's past the first.
    fn calls_id(&self, index: usize) -> String {
        match index {
            0 => self.id.clone(),
            i => format!("{}-{i}", self.id),
        }
    }

    /// Choice `index` of a whole answer.
    pub fn choice(&self, index: usize, text: String, finish: Finish) -> Value {
        if self.chat() {
            let (content, calls, reason) = message(self.shape, &self.calls_id(index), text, finish);
            let mut msg = json!({"role": "assistant", "content": content});
            if !calls.is_null() {
                msg["tool_calls"] = calls;
            }
            json!({"index": index, "message": msg, "logprobs": null, "finish_reason": reason})
        } else {
            json!({"index": index, "text": text, "logprobs": null,
                   "finish_reason": finish_reason(finish)})
        }
    }

    /// The whole answer.
    pub fn whole(&self, choices: Vec<Value>, usage: Value) -> Value {
        json!({
            "id": self.id,
            "object": self.object(false),
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage,
        })
    }
}

/// Where one choice of a stream is.
#[derive(Default)]
struct ChoiceState {
    /// No chunk sent yet (the first carries the role).
    started: bool,
    /// A tool envelope's text, held until it is whole.
    held: String,
    /// Log-probabilities not yet sent, for the next chunk.
    logprobs: Vec<Value>,
    ended: bool,
}

/// Where a stream is.
struct Streaming {
    reply: Reply,
    rx: UnboundedReceiver<(usize, Event)>,
    /// Events taken (the generation stops when they lag too long: the client stopped reading).
    taken: Arc<AtomicU64>,
    choices: Vec<ChoiceState>,
    /// Tokens of the prompt and generated by all choices, for the usage chunk.
    prompt_tokens: usize,
    completion_tokens: usize,
    /// Whether the stream is over (every choice ended, or failed).
    ended: bool,
    include_usage: bool,
    /// Events left to send after the end, last first.
    tail: Vec<Sse>,
}

impl Streaming {
    /// A delta of choice `i` with `content`, the role on its first.
    fn delta(&mut self, i: usize, content: Option<&str>) -> Value {
        let mut d = json!({});
        if !std::mem::replace(&mut self.choices[i].started, true) {
            d["role"] = json!("assistant");
        }
        if let Some(t) = content {
            d["content"] = json!(t);
        }
        d
    }

    /// The events after choice `i`'s end: a tool envelope's reply and the finish (the first
    /// returned, the rest queued); after the last choice's, usage and `[DONE]` too.
    fn end(&mut self, i: usize, finish: Finish) -> Sse {
        self.choices[i].ended = true;
        let mut out = Vec::new();
        let mut reason = finish_reason(finish);
        if let Shape::Tools(_) = self.reply.shape {
            let text = std::mem::take(&mut self.choices[i].held);
            let id = self.reply.calls_id(i);
            let (content, calls, r) = message(self.reply.shape, &id, text, finish);
            reason = r;
            let mut d = self.delta(i, content.as_str());
            if let Value::Array(calls) = calls {
                let calls: Vec<Value> = calls
                    .into_iter()
                    .enumerate()
                    .map(|(k, mut c)| {
                        c["index"] = json!(k);
                        c
                    })
                    .collect();
                d["tool_calls"] = json!(calls);
            }
            let lp = std::mem::take(&mut self.choices[i].logprobs);
            out.push(self.reply.chunk(i, d, None, lp));
        }
        let d = if self.choices[i].started {
            json!({})
        } else {
            self.delta(i, None)
        };
        let lp = std::mem::take(&mut self.choices[i].logprobs);
        out.push(self.reply.chunk(i, d, Some(reason), lp));
        if self.choices.iter().all(|c| c.ended) {
            self.ended = true;
            if self.include_usage {
                let mut u = self.reply.chunk(0, json!({}), None, Vec::new());
                u["choices"] = json!([]);
                u["usage"] = usage(self.prompt_tokens, self.completion_tokens);
                out.push(u);
            }
            self.tail.push(Sse::default().data("[DONE]"));
        }
        for c in out.iter().skip(1).rev() {
            self.tail.push(Sse::default().data(c.to_string()));
        }
        Sse::default().data(out[0].to_string())
    }
}

/// The answer of `n` choices as server-sent events.
pub(crate) fn sse(
    reply: Reply,
    n: usize,
    rx: UnboundedReceiver<(usize, Event)>,
    taken: Arc<AtomicU64>,
    include_usage: bool,
) -> impl Stream<Item = Result<Sse, Infallible>> {
    let s = Streaming {
        reply,
        rx,
        taken,
        choices: (0..n).map(|_| ChoiceState::default()).collect(),
        prompt_tokens: 0,
        completion_tokens: 0,
        ended: false,
        include_usage,
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
                Some((i, Event::Logprobs(l))) => {
                    s.choices[i].logprobs.extend(l);
                    continue;
                }
                Some((i, Event::Text(t))) if matches!(s.reply.shape, Shape::Tools(_)) => {
                    s.choices[i].held.push_str(&t);
                    continue;
                }
                Some((i, Event::Text(t))) => {
                    let d = s.delta(i, Some(&t));
                    let lp = std::mem::take(&mut s.choices[i].logprobs);
                    Sse::default().data(s.reply.chunk(i, d, None, lp).to_string())
                }
                Some((
                    i,
                    Event::Done {
                        finish,
                        prompt_tokens,
                        completion_tokens,
                    },
                )) => {
                    s.prompt_tokens = prompt_tokens;
                    s.completion_tokens += completion_tokens;
                    s.end(i, finish)
                }
                Some((_, Event::Failed(e))) => {
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

/// What a tool reply says.
pub(crate) enum ToolReply {
    /// Calls: `(name, arguments as JSON text)`, and text beside them.
    Calls(Vec<(String, String)>, Option<String>),
    /// An answer.
    Text(String),
}

/// Reads a finished reply in `format` (`None`: it is not one, as when it was cut short).
pub(crate) fn read_reply(text: &str, format: ToolFormat) -> Option<ToolReply> {
    match format {
        ToolFormat::Envelope => read_envelope(text),
        ToolFormat::Tags => read_tags(text),
    }
}

/// Calls in `<tool_call>` tags; the text outside them is the content. `None` when a tag's JSON
/// is not a call (the reply is then text as written).
fn read_tags(text: &str) -> Option<ToolReply> {
    const OPEN: &str = "<tool_call>";
    const CLOSE: &str = "</tool_call>";
    let mut calls = Vec::new();
    let mut content = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(OPEN) {
        content.push_str(&rest[..at]);
        let body = &rest[at + OPEN.len()..];
        let end = body.find(CLOSE)?;
        let v: Value = serde_json::from_str(body[..end].trim()).ok()?;
        let name = v.get("name")?.as_str()?.to_string();
        let args = v.get("arguments").or_else(|| v.get("parameters"))?;
        let args = match args {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        calls.push((name, args));
        rest = &body[end + CLOSE.len()..];
    }
    content.push_str(rest);
    if calls.is_empty() {
        return Some(ToolReply::Text(text.to_string()));
    }
    let content = content.trim();
    Some(ToolReply::Calls(
        calls,
        (!content.is_empty()).then(|| content.to_string()),
    ))
}

/// Reads a finished envelope reply.
fn read_envelope(text: &str) -> Option<ToolReply> {
    let v: Value = serde_json::from_str(text).ok()?;
    if let Some(calls) = v.get("tool_calls").and_then(Value::as_array) {
        let calls = calls
            .iter()
            .map(|c| {
                let name = c.get("name")?.as_str()?.to_string();
                Some((name, c.get("arguments")?.to_string()))
            })
            .collect::<Option<Vec<_>>>()?;
        return Some(ToolReply::Calls(calls, None));
    }
    match v.get("response")? {
        Value::String(s) => Some(ToolReply::Text(s.clone())),
        other => Some(ToolReply::Text(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_replies_are_read_in_their_format() {
        let env = ToolFormat::Envelope;
        match read_reply(
            r#"{"tool_calls":[{"name":"add","arguments":{"a":1}}]}"#,
            env,
        ) {
            Some(ToolReply::Calls(c, None)) => {
                assert_eq!(c, [("add".to_string(), r#"{"a":1}"#.to_string())])
            }
            _ => panic!("calls"),
        }
        assert!(
            matches!(read_reply(r#"{"response":"hi"}"#, env), Some(ToolReply::Text(t)) if t == "hi")
        );
        assert!(read_reply(r#"{"tool_calls":[{"name":"add","#, env).is_none());
        let tagged = "Let me add.\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": 1}}\n</tool_call>";
        match read_reply(tagged, ToolFormat::Tags) {
            Some(ToolReply::Calls(c, Some(t))) => {
                assert_eq!(c, [("add".to_string(), r#"{"a":1}"#.to_string())]);
                assert_eq!(t, "Let me add.");
            }
            _ => panic!("tagged calls"),
        }
        assert!(matches!(
            read_reply("no calls", ToolFormat::Tags),
            Some(ToolReply::Text(_))
        ));
        assert!(read_reply("<tool_call>{\"name\": ", ToolFormat::Tags).is_none());
    }
}
