//! Chat templates: the Jinja template a model file carries under `tokenizer.chat_template`,
//! rendered the way Hugging Face transformers renders it (`trim_blocks`, `lstrip_blocks`, loop
//! controls, Python string methods, `raise_exception`).

use minijinja::{Environment, ErrorKind};
use serde::Serialize;

use crate::gguf::{GgufFile, Value};
use crate::tokenizer::Tokenizer;

/// Why a chat could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The file has no chat template.
    #[error("model file has no chat template (tokenizer.chat_template)")]
    Missing,
    /// The template does not compile or failed while rendering.
    #[error("chat template: {0}")]
    Render(String),
}

/// One message of a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
    /// An assistant's tool calls, as templates that take tools read them: a list of
    /// `{"type": "function", "function": {"name", "arguments"}}` (arguments an object).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<serde_json::Value>,
    /// A tool message's answer to this call id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    /// A message from `role`.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
            tool_calls: None,
            tool_call_id: None,
        }
    }

    /// With an assistant's tool calls.
    pub fn with_tool_calls(mut self, calls: serde_json::Value) -> Message {
        self.tool_calls = Some(calls);
        self
    }

    /// As the answer to the tool call `id`.
    pub fn with_tool_call_id(mut self, id: impl Into<String>) -> Message {
        self.tool_call_id = Some(id.into());
        self
    }
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
    tools: TemplateTools,
}

/// How a chat template treats the tools a model may call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateTools {
    /// It knows nothing of them: the caller tells the model (in a system message).
    Ignored,
    /// It renders a `tools` list itself (Llama 3.1's).
    Listed,
    /// It renders a `tools` list and asks for calls as JSON in `<tool_call>` tags (Hermes'
    /// format: Qwen 2.5 and 3, SmolLM3).
    Tagged,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatTemplate")
    }
}

/// Published chat templates by `general.architecture`, for files that carry none.
pub const BUILT_IN: &[(&str, &str)] = &[("gemma3", include_str!("chat_templates/gemma3.jinja"))];

impl ChatTemplate {
    /// The template of a model file, with its BOS and EOS token texts for templates that use
    /// `bos_token` / `eos_token`. A file without one gets its architecture's published template
    /// where edgecut carries it ([`BUILT_IN`]: the hub's Gemma 3 files have none, and llama.cpp
    /// falls back the same way).
    pub fn from_gguf(f: &GgufFile, tok: &Tokenizer) -> Result<ChatTemplate, TemplateError> {
        let source = match f.get("tokenizer.chat_template") {
            Some(Value::Str(s)) => s.clone(),
            _ => {
                let arch = f.architecture().unwrap_or_default();
                match BUILT_IN.iter().find(|(a, _)| *a == arch) {
                    Some((_, t)) => t.to_string(),
                    None => return Err(TemplateError::Missing),
                }
            }
        };
        let token = |key: &str| {
            f.get(key)
                .and_then(Value::as_u64)
                .and_then(|id| tok.decode(&[id as u32], false).ok())
                .unwrap_or_default()
        };
        Self::new(
            source,
            token("tokenizer.ggml.bos_token_id"),
            token("tokenizer.ggml.eos_token_id"),
        )
    }

    /// Compiles `source`.
    pub fn new(source: String, bos: String, eos: String) -> Result<ChatTemplate, TemplateError> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| TemplateError::Render(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> Result<String, _> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        let tools = match (source.contains("tools"), source.contains("<tool_call>")) {
            (false, _) => TemplateTools::Ignored,
            (true, false) => TemplateTools::Listed,
            (true, true) => TemplateTools::Tagged,
        };
        env.add_template_owned("chat", source)
            .map_err(|e| TemplateError::Render(e.to_string()))?;
        Ok(ChatTemplate {
            env,
            bos,
            eos,
            tools,
        })
    }

    /// How the template treats tools.
    pub fn tools(&self) -> TemplateTools {
        self.tools
    }

    /// The prompt text for `messages`; with `add_generation_prompt` it ends where the
    /// assistant's reply begins.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// [`ChatTemplate::render`] with the tools the model may call (a list of
    /// `{"type": "function", "function": {...}}`), for templates that take them.
    pub fn render_with_tools(
        &self,
        messages: &[Message],
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let t = self
            .env
            .get_template("chat")
            .map_err(|e| TemplateError::Render(e.to_string()))?;
        let tools = tools.map(|v| minijinja::Value::from(minijinja::value::Serde(v)));
        t.render(minijinja::context! {
            messages => minijinja::Value::from(minijinja::value::Serde(messages)),
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos,
            eos_token => &self.eos,
        })
        .map_err(|e| TemplateError::Render(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nDefault<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_default_system_and_generation_prompt() {
        let t = ChatTemplate::new(CHATML.into(), "<s>".into(), "</s>".into()).unwrap();
        let out = t.render(&[Message::new("user", "Hi")], true).unwrap();
        assert_eq!(
            out,
            "<|im_start|>system\nDefault<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn python_methods_trim_blocks_and_raise_exception_work() {
        let src = "{% for m in messages %}\n  {% if m.role not in ['user'] %}{{ raise_exception('bad role ' + m.role) }}{% endif %}\n{{ bos_token }}{{ m.content.strip() | upper }}{{ eos_token }}\n{% endfor %}";
        let t = ChatTemplate::new(src.into(), "<s>".into(), "</s>".into()).unwrap();
        assert_eq!(
            t.render(&[Message::new("user", "  hi ")], false).unwrap(),
            "<s>HI</s>\n"
        );
        let err = t.render(&[Message::new("tool", "x")], false).unwrap_err();
        assert!(err.to_string().contains("bad role tool"), "{err}");
        assert!(ChatTemplate::new("{% for %}".into(), String::new(), String::new()).is_err());
    }
}
