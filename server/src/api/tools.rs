//! Structured output and tool calls on `POST /v1/chat/completions`: `response_format`
//! (`json_object`, `json_schema`) becomes a constraint on the reply, and `tools` with
//! `tool_choice` a constrained reply that is read back as `tool_calls`.
//!
//! Tools are shown to the model by its own chat template where the template takes a `tools`
//! list, else in a system message. The reply is made, by constraint, a JSON object of one of two
//! shapes (as llama.cpp's generic tool format does): `{"tool_calls": [{"name", "arguments"}]}`
//! with each call's arguments valid against its function's parameters, or `{"response": ...}`
//! (only under `tool_choice: "auto"`). So a call's arguments always validate, and a reply cut
//! by `max_tokens` is reported as such, never parsed into a call.

use edgecut::{Constraint, Message, TemplateTools};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiError;

/// Most tools in one request (OpenAI's limit).
const MAX_TOOLS: usize = 128;

/// `response_format`.
#[derive(Deserialize)]
pub(crate) struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    json_schema: Option<JsonSchemaFormat>,
}

#[derive(Deserialize)]
struct JsonSchemaFormat {
    #[serde(default)]
    schema: Option<Value>,
}

/// One entry of `tools`.
#[derive(Deserialize)]
pub(crate) struct Tool {
    #[serde(rename = "type")]
    kind: String,
    function: Function,
}

#[derive(Deserialize)]
struct Function {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
}

/// `tool_choice`: a mode, or one function by name.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum ToolChoice {
    Mode(String),
    Named { function: Named },
}

#[derive(Deserialize)]
pub(crate) struct Named {
    name: String,
}

/// A call in an assistant message of the history.
#[derive(Deserialize)]
pub(crate) struct CallIn {
    #[serde(default)]
    id: Option<String>,
    function: CallFunction,
}

#[derive(Deserialize)]
struct CallFunction {
    name: String,
    /// JSON text, as the API sends it.
    arguments: String,
}

/// The parts of a chat request this module reads.
pub(crate) struct Structured<'a> {
    pub response_format: Option<&'a ResponseFormat>,
    pub tools: Option<&'a [Tool]>,
    pub tool_choice: Option<&'a ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
}

/// How a tool reply is written, and so read back.
#[derive(Clone, Copy, PartialEq, Debug)]
pub(crate) enum ToolFormat {
    /// `{"tool_calls": [...]}` or `{"response": ...}`, the whole reply.
    Envelope,
    /// `<tool_call>{"name", "arguments"}</tool_call>` blocks, text around them the content.
    Tags,
}

/// How the reply is made and read.
pub(crate) struct Plan {
    /// The constraint on the reply (and the request parameter it came from, for errors).
    pub constraint: Option<(Constraint, &'static str)>,
    /// The reply may hold tool calls, written so.
    pub tools: Option<ToolFormat>,
    /// The tools as the template takes them, when it takes them.
    pub template_tools: Option<Value>,
}

fn param(name: &'static str, msg: impl Into<String>) -> ApiError {
    ApiError::param(name, msg)
}

/// The JSON schema `response_format` asks for (`None`: free text).
fn response_schema(f: Option<&ResponseFormat>) -> Result<Option<Value>, ApiError> {
    let Some(f) = f else { return Ok(None) };
    match f.kind.as_str() {
        "text" => Ok(None),
        "json_object" => Ok(Some(json!({"type": "object"}))),
        "json_schema" => {
            let s = f.json_schema.as_ref().ok_or_else(|| {
                param(
                    "response_format",
                    "type json_schema needs a `json_schema` object",
                )
            })?;
            match &s.schema {
                None => Ok(Some(json!({"type": "object"}))),
                Some(v @ (Value::Object(_) | Value::Bool(_))) => Ok(Some(v.clone())),
                Some(_) => Err(param(
                    "response_format",
                    "json_schema.schema must be a JSON Schema (an object)",
                )),
            }
        }
        k => Err(param(
            "response_format",
            format!("type {k:?} is not text, json_object or json_schema"),
        )),
    }
}

impl Structured<'_> {
    /// The plan for this request, and the messages as the template gets them.
    pub fn plan(
        &self,
        mut messages: Vec<Message>,
        template: TemplateTools,
    ) -> Result<(Plan, Vec<Message>), ApiError> {
        let template_takes_tools = template != TemplateTools::Ignored;
        let schema = response_schema(self.response_format)?;
        let tools = self.tools.unwrap_or(&[]);
        let mode = match self.tool_choice {
            None if tools.is_empty() => "none",
            None => "auto",
            Some(ToolChoice::Mode(m)) => match m.as_str() {
                "none" | "auto" | "required" => m.as_str(),
                m => {
                    return Err(param(
                        "tool_choice",
                        format!("{m:?} is not none, auto, required or a named function"),
                    ))
                }
            },
            Some(ToolChoice::Named { .. }) => "named",
        };
        if tools.len() > MAX_TOOLS {
            return Err(param(
                "tools",
                format!("{} tools; at most {MAX_TOOLS}", tools.len()),
            ));
        }
        let mut names: Vec<&str> = Vec::new();
        for (i, t) in tools.iter().enumerate() {
            if t.kind != "function" {
                return Err(param(
                    "tools",
                    format!("tool {i} is of type {:?}; only function tools", t.kind),
                ));
            }
            let n = t.function.name.as_str();
            if n.is_empty()
                || n.len() > 64
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(param(
                    "tools",
                    format!("tool {i}: name {n:?} is not 1 to 64 of a-z, A-Z, 0-9, _ and -"),
                ));
            }
            if names.contains(&n) {
                return Err(param("tools", format!("tool name {n:?} appears twice")));
            }
            match &t.function.parameters {
                None | Some(Value::Object(_)) => {}
                Some(_) => {
                    return Err(param(
                        "tools",
                        format!("tool {n:?}: parameters must be a JSON Schema (an object)"),
                    ))
                }
            }
            names.push(n);
        }
        let called: Vec<&Tool> = match (mode, self.tool_choice) {
            ("none", _) => Vec::new(),
            (_, _) if tools.is_empty() => {
                return Err(param(
                    "tool_choice",
                    "tool_choice asks for a tool call but `tools` is empty",
                ))
            }
            ("named", Some(ToolChoice::Named { function })) => {
                let t = tools
                    .iter()
                    .find(|t| t.function.name == function.name)
                    .ok_or_else(|| {
                        param(
                            "tool_choice",
                            format!("no tool named {:?} in `tools`", function.name),
                        )
                    })?;
                vec![t]
            }
            _ => tools.iter().collect(),
        };
        if called.is_empty() {
            let plan = Plan {
                constraint: schema.map(|s| (Constraint::JsonSchema(s), "response_format")),
                tools: None,
                template_tools: None,
            };
            return Ok((plan, fold_history(messages, false)));
        }
        let calls: Vec<Value> = called
            .iter()
            .map(|t| {
                json!({
                    "type": "object",
                    "properties": {
                        "name": {"const": t.function.name},
                        "arguments": t.function.parameters.clone()
                            .unwrap_or_else(|| json!({"type": "object"})),
                    },
                    "required": ["name", "arguments"],
                    "additionalProperties": false,
                })
            })
            .collect();
        // One call unless parallel calls are asked for (llama.cpp's default too): a small model
        // offered a list tends to repeat its call until the token limit.
        let one = self.parallel_tool_calls != Some(true) || mode == "named";
        let listed: Vec<Value> = called
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.function.name,
                    "description": t.function.description.clone().unwrap_or_default(),
                    "parameters": t.function.parameters.clone()
                        .unwrap_or_else(|| json!({"type": "object"})),
                }})
            })
            .collect();
        if template == TemplateTools::Tagged {
            // The model's own format; under `auto` it writes freely and tagged calls are read
            // from its text, else its reply is calls in tags.
            let constraint = (mode != "auto").then(|| {
                let call = edgecut::guided_schema(json!({"anyOf": calls}));
                let start = if one {
                    "start: call"
                } else {
                    "start: call (\"\\n\" call)*"
                };
                let grammar =
                    format!("{start}\ncall: \"<tool_call>\\n\" %json {call} \"\\n</tool_call>\"\n");
                (Constraint::Grammar(grammar), "tools")
            });
            let plan = Plan {
                constraint,
                tools: Some(ToolFormat::Tags),
                template_tools: Some(Value::Array(listed)),
            };
            return Ok((plan, messages));
        }
        let mut list = json!({"type": "array", "items": {"anyOf": calls}, "minItems": 1});
        if one {
            list["maxItems"] = json!(1);
        }
        let call_shape = json!({
            "type": "object",
            "properties": {"tool_calls": list},
            "required": ["tool_calls"],
            "additionalProperties": false,
        });
        let envelope = if mode == "auto" {
            let answer = schema.unwrap_or_else(|| json!({"type": "string"}));
            json!({"anyOf": [call_shape, {
                "type": "object",
                "properties": {"response": answer},
                "required": ["response"],
                "additionalProperties": false,
            }]})
        } else {
            call_shape
        };
        let template_tools = if template_takes_tools {
            Some(Value::Array(listed))
        } else {
            messages = with_tool_prompt(messages, &listed, mode == "auto");
            None
        };
        let plan = Plan {
            constraint: Some((Constraint::JsonSchema(envelope), "tools")),
            tools: Some(ToolFormat::Envelope),
            template_tools,
        };
        Ok((plan, fold_history(messages, template_takes_tools)))
    }
}

/// The tools and the reply's shape, told in the system message (for a template that does not
/// take tools).
fn with_tool_prompt(mut messages: Vec<Message>, tools: &[Value], auto: bool) -> Vec<Message> {
    let list: Vec<String> = tools.iter().map(Value::to_string).collect();
    let mut text = format!(
        "You can call these tools:\n{}\nTo call tools, reply with JSON: \
         {{\"tool_calls\": [{{\"name\": <tool name>, \"arguments\": {{...}}}}]}}.",
        list.join("\n")
    );
    if auto {
        text.push_str(" To answer directly, reply with JSON: {\"response\": <your answer>}.");
    }
    match messages.first_mut() {
        Some(m) if m.role == "system" => {
            m.content = format!("{}\n\n{text}", m.content);
        }
        _ => messages.insert(0, Message::new("system", text)),
    }
    messages
}

/// How a tool's result starts when it is told as a user message.
const TOOL_RESULT: &str = "Tool result:";

/// The history's tool calls and tool results as the template can render them: kept as they are
/// for a template that takes tools; otherwise an assistant's calls become its reply's JSON (what
/// it said) and a tool's result a user message, so that templates that insist on alternating
/// user and assistant turns (Gemma's) take them.
fn fold_history(messages: Vec<Message>, template_takes_tools: bool) -> Vec<Message> {
    if template_takes_tools {
        return messages;
    }
    let mut out: Vec<Message> = Vec::with_capacity(messages.len());
    // Call ids to function names, so that a result names its tool.
    let mut named: Vec<(String, String)> = Vec::new();
    for m in messages {
        if m.role == "assistant" {
            if let Some(calls) = &m.tool_calls {
                for c in calls.as_array().into_iter().flatten() {
                    let id = c["id"].as_str().unwrap_or_default().to_string();
                    let name = c["function"]["name"].as_str().unwrap_or_default();
                    named.push((id, name.to_string()));
                }
                let calls: Vec<Value> = calls
                    .as_array()
                    .map(|a| a.iter().map(|c| c["function"].clone()).collect())
                    .unwrap_or_default();
                out.push(Message::new(
                    "assistant",
                    json!({"tool_calls": calls}).to_string(),
                ));
                continue;
            }
        }
        if m.role == "tool" {
            let id = m.tool_call_id.clone().unwrap_or_default();
            let tool = named
                .iter()
                .find(|(i, _)| *i == id)
                .map_or("the tool", |(_, n)| n.as_str());
            let text = format!("{TOOL_RESULT} {tool} returned: {}", m.content);
            match out.last_mut() {
                // Several results of one turn's calls in one user message.
                Some(prev) if prev.role == "user" && prev.content.starts_with(TOOL_RESULT) => {
                    prev.content = format!("{}\n{text}", prev.content);
                }
                _ => out.push(Message::new("user", text)),
            }
            continue;
        }
        out.push(m);
    }
    out
}

/// The history's tool calls as templates take them (arguments as an object).
pub(crate) fn calls_in(calls: Vec<CallIn>, i: usize) -> Result<Value, ApiError> {
    let mut out = Vec::with_capacity(calls.len());
    for (k, c) in calls.into_iter().enumerate() {
        let args: Value = serde_json::from_str(&c.function.arguments).map_err(|e| {
            param(
                "messages",
                format!("message {i}: tool call {k}'s arguments are not JSON: {e}"),
            )
        })?;
        out.push(json!({
            "id": c.id.unwrap_or_default(),
            "type": "function",
            "function": {"name": c.function.name, "arguments": args},
        }));
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools() -> Vec<Tool> {
        serde_json::from_value(json!([
            {"type": "function", "function": {"name": "get_weather",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}},
            {"type": "function", "function": {"name": "add",
             "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}
        ]))
        .unwrap()
    }

    fn plan(choice: Option<ToolChoice>, tools: &[Tool]) -> Result<(Plan, Vec<Message>), ApiError> {
        Structured {
            response_format: None,
            tools: Some(tools),
            tool_choice: choice.as_ref(),
            parallel_tool_calls: None,
        }
        .plan(vec![Message::new("user", "hi")], TemplateTools::Ignored)
    }

    #[test]
    fn required_constrains_to_calls_only_and_named_to_one() {
        let t = tools();
        let (p, msgs) = plan(Some(ToolChoice::Mode("required".into())), &t).unwrap();
        let Some((Constraint::JsonSchema(s), "tools")) = p.constraint else {
            panic!("a schema on tools")
        };
        assert!(s.get("anyOf").is_none(), "required: calls only");
        assert_eq!(
            s["properties"]["tool_calls"]["items"]["anyOf"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(msgs[0].role, "system");
        assert!(msgs[0].content.contains("get_weather"));
        let named = ToolChoice::Named {
            function: Named { name: "add".into() },
        };
        let (p, _) = plan(Some(named), &t).unwrap();
        let Some((Constraint::JsonSchema(s), _)) = p.constraint else {
            panic!()
        };
        let items = &s["properties"]["tool_calls"];
        assert_eq!(items["maxItems"], 1);
        assert_eq!(
            items["items"]["anyOf"][0]["properties"]["name"]["const"],
            "add"
        );
        let (p, _) = plan(Some(ToolChoice::Mode("auto".into())), &t).unwrap();
        let Some((Constraint::JsonSchema(s), _)) = p.constraint else {
            panic!()
        };
        assert_eq!(
            s["anyOf"].as_array().unwrap().len(),
            2,
            "auto: calls or an answer"
        );
    }

    #[test]
    fn bad_tool_requests_are_refused_by_name() {
        let t = tools();
        let e = |c: Option<ToolChoice>, t: &[Tool]| plan(c, t).err().unwrap().message;
        assert!(e(Some(ToolChoice::Mode("always".into())), &t).contains("\"always\""));
        let ghost = ToolChoice::Named {
            function: Named {
                name: "nope".into(),
            },
        };
        assert!(e(Some(ghost), &t).contains("no tool named \"nope\""));
        assert!(e(Some(ToolChoice::Mode("required".into())), &[]).contains("empty"));
        let twice: Vec<Tool> = serde_json::from_value(json!([
            {"type": "function", "function": {"name": "a"}},
            {"type": "function", "function": {"name": "a"}}]))
        .unwrap();
        assert!(e(None, &twice).contains("twice"));
    }

    #[test]
    fn history_folds_calls_and_results_for_plain_templates() {
        let calls = json!([{"id": "c1", "type": "function",
                            "function": {"name": "add", "arguments": {"a": 1}}}]);
        let msgs = vec![
            Message::new("user", "add 1"),
            Message::new("assistant", "").with_tool_calls(calls),
            Message::new("tool", "1").with_tool_call_id("c1"),
            Message::new("tool", "2").with_tool_call_id("c2"),
        ];
        let out = fold_history(msgs.clone(), false);
        assert_eq!(out.len(), 3);
        let said: Value = serde_json::from_str(&out[1].content).unwrap();
        assert_eq!(
            said,
            json!({"tool_calls": [{"name": "add", "arguments": {"a": 1}}]})
        );
        assert_eq!(out[2].role, "user");
        assert!(
            out[2].content.contains("add returned: 1"),
            "{}",
            out[2].content
        );
        assert!(
            out[2].content.contains("the tool returned: 2"),
            "{}",
            out[2].content
        );
        assert_eq!(fold_history(msgs.clone(), true), msgs);
    }
}
