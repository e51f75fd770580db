//! SmolLM2 against transformers (fp32, the same GGUF): token ids, next-token logits and greedy
//! continuations recorded by `tests/reference/make_llama_fixtures.py`.

use std::sync::Arc;

use edgecut_backends::Device;
use edgecut_models::{Llama, Logits};
use edgecut_runtime::{ChatTemplate, GgufFile, Message, Tokenizer};
use edgecut_tests::{fixture, ids, smollm_gguf};

#[test]
fn smollm2_matches_transformers() {
    let file = Arc::new(GgufFile::open(smollm_gguf()).unwrap());
    let dev = Device::cpu();
    let model = Llama::load(file.clone(), &dev).unwrap();
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let tmpl = ChatTemplate::from_gguf(&file, &tok).unwrap();
    let fx = fixture("smollm2.json");
    for c in fx["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let text = c["text"].as_str().unwrap();
        if let Some(m) = c.get("messages") {
            let msgs: Vec<Message> = m
                .as_array()
                .unwrap()
                .iter()
                .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
                .collect();
            assert_eq!(
                tmpl.render(&msgs, true).unwrap(),
                text,
                "{name}: chat template"
            );
        }
        let got = tok.encode(text, true, None).unwrap().ids;
        assert_eq!(got, ids(&c["ids"]), "{name}: token ids");
        let mut cache = model.new_cache(256).unwrap();
        let mut logits = model.forward(&mut cache, &got, Logits::Last).unwrap();
        let t5 = ids(&c["top5"]["ids"]);
        let tl: Vec<f32> = c["top5"]["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let diffs: Vec<f32> = t5
            .iter()
            .zip(&tl)
            .map(|(&i, &l)| logits[i as usize] - l)
            .collect();
        println!("{name}: top5 diffs {diffs:?}");
        let want = ids(&c["greedy"]);
        let mut agree = 0;
        let mut gen = Vec::new();
        for (i, &w) in want.iter().enumerate() {
            let next = edgecut_models::sampling::argmax(&logits);
            gen.push(next);
            if next != w {
                break;
            }
            agree = i + 1;
            logits = model.forward(&mut cache, &[next], Logits::Last).unwrap();
        }
        println!(
            "{name}: agree {agree}/{} {:?}",
            want.len(),
            tok.decode(&gen, false).unwrap()
        );
    }
}
