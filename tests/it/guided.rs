//! Constrained decoding ([`edgecut::Constraint`], [`Llm::guide`]) on SmolLM2: what is generated
//! matches its constraint, checked here without the engine (JSON parsed by serde_json and its
//! fields checked; the regex's shape by its characters); guided turns in one batch give what
//! each gives alone; a reply cut by `max_tokens` says so; constraints the engine cannot take
//! are refused with the reason.

use edgecut::{Constraint, Error, Finish, GenerateOptions, Llm, SamplingParams, Turn};
use serde_json::{json, Value};

fn smollm() -> &'static Llm {
    crate::turns::smollm()
}

fn prompt(llm: &Llm, text: &str) -> Vec<u32> {
    llm.tokenize(
        &llm.render_chat(&[edgecut::Message::new("user", text)])
            .unwrap(),
    )
    .unwrap()
}

fn person() -> Value {
    json!({"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 20},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"enum": ["Paris", "London", "Berlin"]},
        "pets": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 2}},
        "required": ["name", "age", "city", "pets"], "additionalProperties": false})
}

/// Checks `text` against [`person`] by hand.
fn is_person(text: &str) -> bool {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    let Some(o) = v.as_object() else { return false };
    let name = o.get("name").and_then(Value::as_str);
    let age = o.get("age").and_then(Value::as_i64);
    let city = o.get("city").and_then(Value::as_str);
    let pets = o.get("pets").and_then(Value::as_array);
    o.len() == 4
        && name.is_some_and(|n| n.chars().count() <= 20)
        && age.is_some_and(|a| (0..=120).contains(&a))
        && city.is_some_and(|c| ["Paris", "London", "Berlin"].contains(&c))
        && pets.is_some_and(|p| {
            p.len() <= 2
                && p.iter()
                    .all(|x| x.as_str().is_some_and(|s| s.chars().count() <= 10))
        })
}

/// `ddd-dddd`.
fn is_phone(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 8
        && b.iter().enumerate().all(|(i, c)| {
            if i == 3 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

fn sampled(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: 0.9,
        top_k: 40,
        repetition_penalty: 1.1,
        seed,
        ..SamplingParams::default()
    }
}

#[test]
fn guided_generations_match_and_batch_as_alone() {
    let llm = smollm();
    let json_guide = llm.guide(&Constraint::JsonSchema(person())).unwrap();
    let phone = llm
        .guide(&Constraint::Regex("[0-9]{3}-[0-9]{4}".into()))
        .unwrap();
    println!(
        "compiled: schema {:?}, regex {:?}",
        json_guide.compile_time(),
        phone.compile_time()
    );
    let cases: Vec<(Vec<u32>, GenerateOptions, &str)> = (0..6)
        .map(|i| {
            let base = GenerateOptions::default().with_max_tokens(80);
            let (text, guide, kind) = match i % 3 {
                0 => ("Describe a person.", Some(json_guide.clone()), "json"),
                1 => ("Give me a phone number.", Some(phone.clone()), "phone"),
                _ => ("Say hello.", None, "free"),
            };
            let opts = base.with_guide(guide);
            let opts = if i < 3 {
                opts
            } else {
                opts.with_sampling(sampled(i as u64))
            };
            (prompt(llm, text), opts, kind)
        })
        .collect();
    let alone: Vec<_> = cases
        .iter()
        .map(|(p, o, _)| {
            llm.new_context()
                .unwrap()
                .generate(p, o, &mut |_| true)
                .unwrap()
        })
        .collect();
    for ((_, _, kind), g) in cases.iter().zip(&alone) {
        println!("{kind}: {:?} ({:?})", g.text, g.finish);
        match *kind {
            "json" => assert!(is_person(&g.text), "not a person: {}", g.text),
            "phone" => assert!(is_phone(&g.text), "not a phone number: {}", g.text),
            _ => {}
        }
        if *kind != "free" {
            assert_eq!(
                g.finish,
                Finish::EndOfSequence,
                "a whole match ends the reply"
            );
        }
    }
    // All six in one batch, each with its own matcher, give the same tokens.
    let mut turns: Vec<Turn> = cases
        .iter()
        .map(|(p, o, _)| Turn::new(llm, llm.new_context().unwrap(), p.clone(), o).unwrap())
        .collect();
    while turns.iter().any(|t| t.finished().is_none()) {
        let mut refs: Vec<&mut Turn> = turns.iter_mut().collect();
        for r in llm.step_turns(&mut refs) {
            r.unwrap();
        }
    }
    for (i, (t, a)) in turns.iter().zip(&alone).enumerate() {
        let g = t.generation();
        assert_eq!(g.tokens, a.tokens, "case {i}: tokens batched and alone");
        assert_eq!(g.finish, a.finish, "case {i}: finish");
    }
}

#[test]
fn a_reply_cut_by_max_tokens_says_so() {
    let llm = smollm();
    let guide = llm.guide(&Constraint::JsonSchema(person())).unwrap();
    let opts = GenerateOptions::default()
        .with_max_tokens(5)
        .with_guide(Some(guide));
    let p = prompt(llm, "Describe a person.");
    let g = llm
        .new_context()
        .unwrap()
        .generate(&p, &opts, &mut |_| true)
        .unwrap();
    assert_eq!(g.finish, Finish::MaxTokens);
    assert!(
        serde_json::from_str::<Value>(&g.text).is_err(),
        "{}",
        g.text
    );
}

#[test]
fn constraints_the_engine_cannot_take_are_refused_with_the_reason() {
    let llm = smollm();
    let refused = |c: Constraint, why: &str| match llm.guide(&c) {
        Err(Error::Input(m)) => assert!(m.contains(why), "{m:?} does not say {why:?}"),
        other => panic!("{c:?}: {other:?}"),
    };
    refused(Constraint::Regex("(unclosed".into()), "unclosed group");
    refused(
        Constraint::JsonSchema(json!({"type": "integer", "minimum": 5, "maximum": 1})),
        "minimum (5) is greater than maximum (1)",
    );
    refused(Constraint::JsonSchema(json!({"type": "nope"})), "nope");
    refused(
        Constraint::Grammar("start: missing_rule".into()),
        "missing_rule",
    );
    let huge: serde_json::Map<String, Value> = (0..20_000)
        .map(|i| (format!("field_{i}"), json!({"type": "string"})))
        .collect();
    refused(
        Constraint::JsonSchema(json!({"type": "object", "properties": huge})),
        "at most",
    );
}

/// Log-probabilities recorded while generating are the log-softmax of the logits a fresh
/// context computes for the same tokens (f64 here), alone and batched alike.
#[test]
fn logprobs_are_the_log_softmax_of_the_logits() {
    let llm = smollm();
    let p = prompt(llm, "Name a colour.");
    let opts = GenerateOptions::default()
        .with_max_tokens(6)
        .with_logprobs(Some(3));
    let g = llm
        .new_context()
        .unwrap()
        .generate(&p, &opts, &mut |_| true)
        .unwrap();
    assert_eq!(g.logprobs.len(), g.tokens.len());
    let mut at = p.clone();
    for (i, lp) in g.logprobs.iter().enumerate() {
        let l = llm.new_context().unwrap().last_logits(&at).unwrap();
        let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let norm = max + l.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        let want = l[lp.id as usize] as f64 - norm;
        assert_eq!(lp.id, g.tokens[i]);
        assert!(
            (lp.logprob as f64 - want).abs() < 2e-3,
            "token {i}: {} vs {want}",
            lp.logprob
        );
        assert_eq!(lp.top.len(), 3);
        // Greedy: the token drawn is the most likely, and the list is in order.
        assert_eq!(lp.top[0].0, lp.id);
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
        at.push(lp.id);
    }
    let mut t = Turn::new(llm, llm.new_context().unwrap(), p, &opts).unwrap();
    while t.finished().is_none() {
        llm.step_turns(&mut [&mut t])[0].as_ref().unwrap();
    }
    let b = t.generation();
    assert_eq!(b.tokens, g.tokens);
    for (x, y) in b.logprobs.iter().zip(&g.logprobs) {
        assert!((x.logprob - y.logprob).abs() < 2e-3, "{x:?} vs {y:?}");
    }
}
