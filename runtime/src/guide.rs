//! Constrained decoding: the output made to match a JSON schema, a regular expression or a
//! grammar, by masking at each step the tokens that cannot continue it. The masks come from
//! llguidance (the engine ONNX Runtime GenAI and mistral.rs use), computed incrementally from
//! the model's own vocabulary; a generation computes the next mask on a thread of its own while
//! the forward pass runs ([`Guided::prepare`]), so a step costs little more than unconstrained.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgecut_format::Tokenizer;
use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::toktrie::{self, SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId};
use llguidance::{Matcher, ParserFactory};

use crate::{Error, Result};

/// What a generation's text must match.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Constraint {
    /// Any JSON object (the API's `response_format: {"type": "json_object"}`).
    JsonObject,
    /// JSON valid against this JSON Schema (draft 2020-12; `$ref` within the schema).
    JsonSchema(serde_json::Value),
    /// Text matching this regular expression as a whole.
    Regex(String),
    /// Text of this grammar, in llguidance's Lark-like syntax (`start: ...`; `%json {...}`
    /// embeds a JSON schema).
    Grammar(String),
}

impl Constraint {
    /// The grammar llguidance compiles (JSON schemas as [`guided_schema`] makes them).
    fn grammar(&self) -> TopLevelGrammar {
        let compact = guided_schema;
        match self {
            Constraint::JsonObject => {
                TopLevelGrammar::from_json_schema(compact(serde_json::json!({"type": "object"})))
            }
            Constraint::JsonSchema(s) => TopLevelGrammar::from_json_schema(compact(s.clone())),
            Constraint::Regex(r) => TopLevelGrammar::from_regex(r),
            Constraint::Grammar(g) => TopLevelGrammar::from_lark(g.clone()),
        }
    }

    /// What it is, in words (for errors).
    fn what(&self) -> &'static str {
        match self {
            Constraint::JsonObject | Constraint::JsonSchema(_) => "JSON schema",
            Constraint::Regex(_) => "regular expression",
            Constraint::Grammar(_) => "grammar",
        }
    }
}

/// A JSON schema as edgecut compiles it: JSON written compactly (no free whitespace between
/// tokens: a small model given the choice can spend its whole budget on newlines, and compact
/// JSON is the fewest tokens; the schema's own `x-guidance` options win) and integers it leaves
/// unbounded kept to ±(2^53 - 1). For a schema embedded in a grammar (`%json {...}`).
pub fn guided_schema(mut schema: serde_json::Value) -> serde_json::Value {
    bound_integers(&mut schema);
    if let Some(o) = schema.as_object_mut() {
        o.entry("x-guidance")
            .or_insert_with(|| serde_json::json!({"whitespace_flexible": false}));
    }
    schema
}

/// JSON's interoperable integers (RFC 8259, section 6): +-(2^53 - 1).
const SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Bounds every integer the schema leaves unbounded to [`SAFE_INTEGER`]: without a bound a
/// model can write digits until its token limit (small ones do, given a free integer), and no
/// JSON parser reads such a number as an integer anyway.
fn bound_integers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            let integer = match o.get("type") {
                Some(serde_json::Value::String(t)) => t == "integer",
                Some(serde_json::Value::Array(ts)) => ts.iter().any(|t| t == "integer"),
                _ => false,
            };
            if integer {
                if !o.contains_key("minimum") && !o.contains_key("exclusiveMinimum") {
                    o.insert("minimum".into(), (-SAFE_INTEGER).into());
                }
                if !o.contains_key("maximum") && !o.contains_key("exclusiveMaximum") {
                    o.insert("maximum".into(), SAFE_INTEGER.into());
                }
            }
            o.values_mut().for_each(bound_integers);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(bound_integers),
        _ => {}
    }
}

/// The model's vocabulary as llguidance reads it: each token's bytes, special tokens marked
/// (so that no text can spell them), and the model's tokenizer for forced text.
struct Vocabulary {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl toktrie::TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        match std::str::from_utf8(s) {
            Ok(text) => match self.tokenizer.encode(text, false, None) {
                Ok(e) => e.ids,
                Err(_) => self.trie.greedy_tokenize(s),
            },
            // Part of a character: the vocabulary's bytes, longest first.
            Err(_) => self.trie.greedy_tokenize(s),
        }
    }
}

/// Compiles constraints for one model (its vocabulary, read once).
pub(crate) struct Guides {
    factory: ParserFactory,
}

/// Most bytes of a constraint's source (a schema as JSON, a regex, a grammar): past this it is
/// refused before compiling, however simple.
pub const MAX_CONSTRAINT_BYTES: usize = 256 * 1024;

impl Guides {
    /// The vocabulary of `tokenizer` (`vocab` tokens; `stop_ids` end a generation).
    pub(crate) fn new(tokenizer: Arc<Tokenizer>, stop_ids: &[u32]) -> Result<Guides> {
        let n = tokenizer.vocab_size();
        let words: Vec<Vec<u8>> = (0..n as u32)
            .map(|id| {
                let bytes = tokenizer.token_bytes(id);
                if tokenizer.is_special(id) || bytes.is_none() {
                    // Special: marked, so that no text spells it (its name kept for grammars
                    // that name special tokens).
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    match bytes {
                        Some(b) if !b.is_empty() => w.extend(b),
                        _ => w.extend(format!("<[{id}]>").bytes()),
                    }
                    w
                } else {
                    bytes.unwrap_or_default()
                }
            })
            .collect();
        let eos = stop_ids.first().copied().unwrap_or(0);
        let info = TokRxInfo::new(n as u32, eos);
        let trie = TokTrie::from(&info, &words).with_eos_tokens(stop_ids);
        let env: TokEnv = Arc::new(Vocabulary { trie, tokenizer });
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| Error::Input(format!("the vocabulary cannot be guided: {e}")))?;
        factory.quiet();
        // Bounds on the work of one grammar: its size, its lexer, and each step's mask.
        *factory.limits_mut() = ParserLimits {
            max_grammar_size: 100_000,
            ..ParserLimits::default()
        };
        Ok(Guides { factory })
    }

    /// Compiles `c`; a constraint that cannot be compiled, or is too large, is an
    /// [`Error::Input`] saying why.
    pub(crate) fn compile(&self, c: &Constraint) -> Result<Guide> {
        let size = match c {
            Constraint::JsonObject => 0,
            Constraint::JsonSchema(s) => s.to_string().len(),
            Constraint::Regex(r) => r.len(),
            Constraint::Grammar(g) => g.len(),
        };
        if size > MAX_CONSTRAINT_BYTES {
            return Err(Error::Input(format!(
                "the {} is {size} bytes; at most {MAX_CONSTRAINT_BYTES}",
                c.what()
            )));
        }
        let start = Instant::now();
        // The engine reports bad input as errors; a panic on some input it did not foresee is
        // still a refused constraint, not a failed server.
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.factory.create_parser(c.grammar())
        }))
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the engine failed on it")));
        let parser =
            made.map_err(|e| Error::Input(format!("the {} cannot be used: {e}", c.what())))?;
        let mut matcher = Matcher::new(Ok(parser));
        // The first mask: a grammar that matches nothing shows here, not mid-generation.
        let first = matcher
            .compute_mask()
            .map_err(|e| Error::Input(format!("the {} cannot be used: {e}", c.what())))?;
        if first.is_zero() {
            return Err(Error::Input(format!("the {} matches no text", c.what())));
        }
        Ok(Guide {
            matcher,
            first: Arc::new(first),
            compile: start.elapsed(),
        })
    }
}

/// A compiled constraint, ready to guide generations: each generation takes a copy of it in its
/// start state (cheap: the compiled grammar is shared).
#[derive(Clone)]
pub struct Guide {
    matcher: Matcher,
    first: Arc<SimpleVob>,
    compile: Duration,
}

impl std::fmt::Debug for Guide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Guide(compiled in {:?})", self.compile)
    }
}

impl Guide {
    /// How long compiling took (the grammar, its lexer and the first mask).
    pub fn compile_time(&self) -> Duration {
        self.compile
    }

    /// Whether the tokens `ids` are a whole match: every one accepted and the constraint able
    /// to end after them.
    pub fn accepts(&self, ids: &[u32]) -> bool {
        let mut m = self.matcher.clone();
        m.consume_tokens(ids).is_ok() && m.is_accepting().unwrap_or(false)
    }

    /// A generation's state under this guide.
    pub(crate) fn start(&self) -> Guided {
        Guided {
            matcher: self.matcher.clone(),
            mask: Some((*self.first).clone()),
            done: false,
        }
    }
}

/// One generation's place in its constraint.
pub(crate) struct Guided {
    matcher: Matcher,
    /// The mask of the next step, once computed.
    mask: Option<SimpleVob>,
    /// The constraint is complete and nothing may follow: the generation ends.
    done: bool,
}

impl Guided {
    /// Computes the next step's mask if it is not yet known: run beside the forward pass.
    pub(crate) fn prepare(&mut self) {
        if self.mask.is_none() && !self.done {
            if let Ok(m) = self.matcher.compute_mask_or_eos() {
                self.mask = Some(m);
            }
        }
    }

    /// Leaves only the tokens the constraint allows in `logits` (the others at -inf; rows
    /// past the vocabulary too).
    pub(crate) fn apply(&mut self, logits: &mut [f32]) -> Result<()> {
        self.prepare();
        let Some(mask) = self.mask.take() else {
            let why = self.matcher.get_error().unwrap_or_else(|| "no mask".into());
            return Err(Error::Input(format!("the constraint failed: {why}")));
        };
        let n = mask.len().min(logits.len());
        let mut any = false;
        for (i, l) in logits.iter_mut().enumerate() {
            if i >= n || !mask.is_allowed(i as TokenId) {
                *l = f32::NEG_INFINITY;
            } else if *l > f32::NEG_INFINITY {
                // Allowed and drawable (a split's logits hold only the server's largest).
                any = true;
            }
        }
        if !any {
            return Err(Error::Input(
                "the constraint allows none of the tokens that can be drawn here".into(),
            ));
        }
        Ok(())
    }

    /// Whether some token the constraint allows next has a logit in `logits` (a split's logits
    /// hold only the server's largest; the others are -inf).
    pub(crate) fn allows_any(&mut self, logits: &[f32]) -> bool {
        self.prepare();
        let Some(mask) = self.mask.as_ref() else {
            return false;
        };
        let n = mask.len().min(logits.len());
        (0..n).any(|i| logits[i] > f32::NEG_INFINITY && mask.is_allowed(i as TokenId))
    }

    /// The one token the constraint allows next, when it allows only one (a JSON object's
    /// opening brace, the rest of a key): drawable without any logits.
    pub(crate) fn forced(&mut self) -> Option<u32> {
        self.prepare();
        let mask = self.mask.as_ref()?;
        (mask.num_set() == 1).then(|| mask.first_bit_set().map(|t| t as u32))?
    }

    /// Takes the token drawn under the mask (a stop token ends the generation and is not
    /// taken). After it, the constraint may be complete with nothing able to follow.
    pub(crate) fn consume(&mut self, t: u32, stop_ids: &[u32]) -> Result<()> {
        self.mask = None;
        if stop_ids.contains(&t) {
            self.done = true;
            return Ok(());
        }
        self.matcher
            .consume_token(t)
            .map_err(|e| Error::Input(format!("the constraint failed: {e}")))?;
        self.done = self.matcher.is_stopped();
        Ok(())
    }

    /// Whether the constraint is complete and nothing may follow.
    pub(crate) fn done(&self) -> bool {
        self.done
    }
}
