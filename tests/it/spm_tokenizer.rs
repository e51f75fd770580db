//! The SentencePiece tokenizer (`format/src/tokenizer/spm.rs`) on Gemma 3's 262,144-piece
//! vocabulary against llama.cpp, from `tests/fixtures/gemma3-tokenizer.json`
//! (`tests/reference/make_spm_fixtures.py`): ids for every fixture text, decoded text, the chat
//! template's rendering, and a SentencePiece `tokenizer.model` read like protobuf reads it.

use std::time::Instant;

use edgecut::GgufFile;
use edgecut_format::tokenizer::read_sentencepiece_model;
use edgecut_format::{ChatTemplate, Message, TextStream, Tokenizer};
use edgecut_tests::{fixture, gemma3_q4_k_m};

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an id array")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

fn gemma() -> (GgufFile, Tokenizer) {
    let f = GgufFile::open(gemma3_q4_k_m()).unwrap();
    let start = Instant::now();
    let tok = Tokenizer::from_gguf(&f).unwrap();
    eprintln!(
        "Gemma 3 tokenizer ({} pieces) built in {:.1} ms",
        tok.vocab_size(),
        start.elapsed().as_secs_f64() * 1e3
    );
    (f, tok)
}

#[test]
fn gemma3_ids_match_llama_cpp() {
    let fx = fixture("gemma3-tokenizer.json");
    let (_f, tok) = gemma();
    assert_eq!(tok.vocab_size(), 262_144);
    assert_eq!(tok.source(), "tokenizer.ggml (llama SentencePiece)");
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want = ids(&c["ids"]);
        let got = tok.encode(text, true, None).unwrap();
        assert_eq!(got.full_len, got.ids.len());
        if got.ids != want {
            let at = got
                .ids
                .iter()
                .zip(&want)
                .take_while(|(a, b)| a == b)
                .count();
            failures.push(format!(
                "{text:?}: first difference at token {at}: edgecut {:?}, llama.cpp {:?}",
                &got.ids[at..(at + 8).min(got.ids.len())],
                &want[at..(at + 8).min(want.len())]
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} texts differ from llama.cpp; the first: {}",
        failures.len(),
        cases.len(),
        failures[0]
    );
    eprintln!("all {} texts match llama.cpp", cases.len());
}

#[test]
fn gemma3_decode_matches_llama_detokenize_and_round_trips() {
    let fx = fixture("gemma3-tokenizer.json");
    let (_f, tok) = gemma();
    for d in fx["detokenize"].as_array().unwrap() {
        let ids = ids(&d["ids"]);
        assert_eq!(tok.decode(&ids, true).unwrap(), d["text"].as_str().unwrap());
        assert_eq!(
            tok.decode(&ids, false).unwrap(),
            d["text_special"].as_str().unwrap()
        );
    }
    for c in fx["cases"].as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        let ids = ids(&c["ids"]);
        // Every piece keeps its text; only a literal U+2581 comes back as the space it encodes.
        let want = format!("<bos>{}", text.replace('\u{2581}', " "));
        assert_eq!(tok.decode(&ids, false).unwrap(), want, "{text:?}");
        // Streaming gives the same text as decoding at once.
        let mut stream = TextStream::new(&tok);
        let mut streamed: String = ids.iter().map(|&id| stream.push(id).unwrap()).collect();
        streamed.push_str(&stream.finish());
        assert_eq!(streamed, tok.decode(&ids, true).unwrap(), "{text:?}");
    }
    assert!(tok.decode(&[262_144], true).is_err());
    assert!(tok.is_special(tok.token_to_id("<end_of_turn>").unwrap()));
    assert!(!tok.is_special(tok.token_to_id("\n").unwrap()));
}

#[test]
fn gemma3_chat_template_renders_like_transformers() {
    let fx = fixture("gemma3-tokenizer.json");
    let chat = &fx["chat"];
    let (f, tok) = gemma();
    // This hub file carries no template: `from_gguf` takes edgecut's copy of Gemma 3's
    // published one, which the fixture's rendering (by transformers) checks.
    assert!(f.get("tokenizer.chat_template").is_none());
    let template = ChatTemplate::from_gguf(&f, &tok).unwrap();
    let messages: Vec<Message> = chat["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    let rendered = template.render(&messages, true).unwrap();
    assert_eq!(rendered, chat["rendered"].as_str().unwrap());
    // The rendered prompt starts with BOS text: encoded without adding another.
    assert_eq!(
        tok.encode(&rendered, false, None).unwrap().ids,
        ids(&chat["ids"])
    );
}

/// Standard base64 (with padding), for the fixture's `tokenizer.model` bytes.
fn base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    for chunk in s.as_bytes().chunks(4) {
        let n = chunk.iter().take_while(|&&c| c != b'=').count();
        let mut acc = 0u32;
        for (i, &c) in chunk[..n].iter().enumerate() {
            acc |= u32::from(val(c)) << (18 - 6 * i);
        }
        out.extend_from_slice(&acc.to_be_bytes()[1..n]);
    }
    out
}

#[test]
fn a_sentencepiece_model_file_reads_as_protobuf_wrote_it() {
    let fx = fixture("gemma3-tokenizer.json");
    let m = &fx["sentencepiece_model"];
    let bytes = base64(m["b64"].as_str().unwrap());
    let v = read_sentencepiece_model(&bytes).unwrap();
    let strs: Vec<&str> = m["pieces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(v.pieces, strs);
    let scores: Vec<f32> = m["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(v.scores, scores);
    let types: Vec<i32> = m["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_i64().unwrap() as i32)
        .collect();
    assert_eq!(v.types, types);
    assert_eq!((v.bos_id, v.eos_id, v.unk_id), (Some(2), Some(1), Some(3)));
    assert_eq!(v.add_dummy_prefix, m["add_dummy_prefix"].as_bool().unwrap());

    // SentencePiece's own BPE encoder agrees with llama.cpp's algorithm on this vocabulary.
    let tok = Tokenizer::from_sentencepiece_model(&bytes, false, v.add_dummy_prefix).unwrap();
    assert_eq!(tok.source(), "tokenizer.model (SentencePiece)");
    for c in m["cases"].as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, true, None).unwrap().ids,
            ids(&c["ids"]),
            "{text:?}"
        );
    }
    assert!(Tokenizer::from_sentencepiece_model(&bytes[..bytes.len() / 2], true, false).is_err());
}

#[test]
fn gemma3_encodes_long_texts_fast() {
    let (_f, tok) = gemma();
    let unit = "The quick brown fox — 日本語 🦀 — jumps over\tthe lazy dog.\n  Lorem ipsum <b>dolor</b> sit amet, 3.14159; ";
    let text = unit.repeat(20_000 / unit.chars().count() + 1);
    let chars = text.chars().count();
    // Warm up once, then time a few runs.
    let n = tok.encode(&text, true, None).unwrap().ids.len();
    let runs = 5;
    let start = Instant::now();
    for _ in 0..runs {
        assert_eq!(tok.encode(&text, true, None).unwrap().ids.len(), n);
    }
    let secs = start.elapsed().as_secs_f64() / runs as f64;
    eprintln!(
        "encoded {chars} characters into {n} tokens in {:.2} ms ({:.1} M chars/s)",
        secs * 1e3,
        chars as f64 / secs / 1e6
    );
    // Quadratic merging of a 20,000-character text would take seconds.
    assert!(secs < 1.0, "{secs} s");
    // Long runs of one character: merges cascade ("a"), or every position starts 30
    // overlapping user-defined pieces (spaces, newlines), or a special-piece prefix ("<").
    for unit in ["a", " ", "\n", "<", "<b>"] {
        let run = unit.repeat(20_000);
        let start = Instant::now();
        let ids = tok.encode(&run, false, None).unwrap().ids;
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(tok.decode(&ids, true).unwrap(), run);
        eprintln!(
            "{unit:?} x 20,000: {} tokens in {:.2} ms",
            ids.len(),
            secs * 1e3
        );
        assert!(secs < 1.0, "{unit:?} x 20,000: {secs} s");
    }
}
