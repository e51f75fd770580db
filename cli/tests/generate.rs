//! `edgecut generate`, `chat` and the decoder `bench`, run as a user runs them.

mod common;

use common::{edgecut, ok};

use edgecut_tests::{fixture, smollm_gguf};

#[test]
fn generate_streams_the_greedy_continuation() {
    let m = smollm_gguf();
    let m = m.to_str().unwrap();
    let fx = fixture("smollm2.json");
    let english = fx["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "english")
        .unwrap();
    let want = english["greedy_text"].as_str().unwrap();
    let o = edgecut(
        &["generate", "-m", m, "-n", "8", "The capital of France is"],
        None,
    );
    let out = ok(&o);
    // The first 8 greedy tokens of the reference, then a newline.
    assert!(
        want.starts_with(out.trim_end_matches('\n')),
        "{out:?} vs {want:?}"
    );
    assert!(out.starts_with(" Paris."), "{out:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("prompt 5 tokens") && err.contains("decode"),
        "{err}"
    );
    // The prompt from standard input, wrapped in the chat template, with a stop string.
    let out = ok(&edgecut(
        &["generate", "-m", m, "--chat", "--stop", ".", "-q"],
        Some("What is the capital of France?"),
    ));
    assert_eq!(out, "The capital of France is Paris\n");
}

#[test]
fn chat_keeps_the_history_in_the_cache() {
    let m = smollm_gguf();
    let o = edgecut(
        &["chat", "-m", m.to_str().unwrap(), "-n", "24"],
        Some("What is the capital of France?\n\n/reset\nWhat is the capital of France?\nAnd of Germany?\n"),
    );
    let out = ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    let stats: Vec<&str> = err.lines().filter(|l| l.starts_with("[prompt")).collect();
    assert_eq!(stats.len(), 3, "{err}");
    // After /reset nothing is cached; the next turn reuses the whole first turn.
    assert!(
        stats[0].contains("(0 cached)") && stats[1].contains("(0 cached)"),
        "{err}"
    );
    assert!(!stats[2].contains("(0 cached)"), "{err}");
    assert!(err.contains("[history cleared]"));
    let replies: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        replies[0].contains("Paris") && replies[0] == replies[1],
        "{out}"
    );
}

#[test]
fn bad_generation_input_is_named() {
    let m = smollm_gguf();
    let m = m.to_str().unwrap();
    for (args, needle) in [
        (vec!["generate", "-m", m, "--top-p", "0", "x"], "top-p"),
        (
            vec!["generate", "-m", m, "--context", "99999", "x"],
            "context",
        ),
        (
            vec!["generate", "-m", m, "--context", "8", &"word ".repeat(20)],
            "of 8 positions",
        ),
        (
            vec!["generate", "-m", "/nonexistent.gguf", "x"],
            "nonexistent",
        ),
    ] {
        let o = edgecut(&args, None);
        assert!(!o.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // An encoder is not a decoder.
    let minilm = edgecut_tests::minilm(edgecut::WeightType::Q8_0);
    let o = edgecut(&["generate", "-m", minilm.to_str().unwrap(), "x"], None);
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a decoder edgecut runs"));
}

#[test]
fn bench_on_a_decoder_prints_prefill_and_decode_rates() {
    let m = smollm_gguf();
    let out = ok(&edgecut(
        &[
            "bench",
            "-m",
            m.to_str().unwrap(),
            "--prompt-tokens",
            "8,32",
            "--gen-tokens",
            "8",
            "--iters",
            "1",
        ],
        None,
    ));
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.trim_start().starts_with(char::is_numeric))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{out}");
    for (row, p) in rows.iter().zip(["8", "32"]) {
        assert_eq!(row[0], p);
        assert_eq!(row[1], "8");
        assert!(row[3].parse::<f64>().unwrap() > 0.0 && row[5].parse::<f64>().unwrap() > 0.0);
    }
    assert!(
        out.contains("KV cache") && out.contains("peak RSS"),
        "{out}"
    );
}

/// A tiny Qwen3 (q/k norms, NeoX rope, ChatML) runs through `generate` and `chat` unchanged
/// from SmolLM2's path: transformers' greedy tokens for the fixture's prompt, and its greedy
/// reply to a chat turn rendered by its own template.
#[test]
fn qwen3_generates_and_chats_as_transformers_does() {
    let path = edgecut_tests::tiny_decoder("qwen3", edgecut::WeightType::F32);
    let m = path.to_str().unwrap();
    let fx = &fixture("decoders-tiny.json")["models"]["qwen3"];
    let ids = edgecut_tests::ids(&fx["ids"]);
    let greedy = edgecut_tests::ids(&fx["f16_kv"]["greedy"]);
    // The fixture's 16 prompt tokens as text (they tokenize back to themselves).
    let llm = edgecut::Llm::open(&path, &edgecut::LlmOptions::default()).unwrap();
    let prompt = llm.detokenize(&ids).unwrap();
    assert_eq!(llm.tokenize(&prompt).unwrap(), ids);
    let want = llm.detokenize(&greedy).unwrap();
    let n = greedy.len().to_string();
    let out = ok(&edgecut(
        &["generate", "-m", m, "-n", &n, "-q", &prompt],
        None,
    ));
    assert_eq!(out.trim_end_matches('\n'), want);
    // A chat turn.
    let chat = &fx["chat"];
    let msgs = chat["messages"].as_array().unwrap();
    let n = chat["greedy"].as_array().unwrap().len().to_string();
    let system = msgs[0]["content"].as_str().unwrap();
    let user = format!("{}\n", msgs[1]["content"].as_str().unwrap());
    let o = edgecut(
        &["chat", "-m", m, "-n", &n, "--system", system],
        Some(&user),
    );
    let out = ok(&o);
    assert!(
        out.contains(chat["text"].as_str().unwrap()),
        "{out:?} vs {}",
        chat["text"]
    );
    let err = String::from_utf8_lossy(&o.stderr);
    let turn = chat["ids"].as_array().unwrap().len();
    assert!(err.contains(&format!("[prompt {turn} tokens")), "{err}");
}

/// Files as llama.cpp's quantizer writes them (`tests/fixtures/kquant.json`): `inspect` names
/// their block types and the backends that multiply them, `generate` gives transformers' greedy
/// tokens on each file's dequantized weights (token ids in and out), `bench` runs.
#[test]
fn block_typed_files_inspect_generate_and_bench() {
    let fx = fixture("kquant.json");
    let prompt = edgecut_tests::ids(&fx["ids"])
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    for (name, f) in fx["files"].as_object().unwrap() {
        let path = edgecut_tests::repo_root().join(f["file"].as_str().unwrap());
        let m = path.to_str().unwrap();
        let out = ok(&edgecut(&["inspect", m], None));
        for t in f["types"].as_array().unwrap() {
            let t = t.as_str().unwrap();
            assert!(
                out.lines()
                    .any(|l| l.trim_start().starts_with(t) && l.contains("cpu")),
                "{name}: inspect lists no {t} row:\n{out}"
            );
        }
        let greedy = edgecut_tests::ids(&f["f16_kv"]["greedy"]);
        let n = greedy.len().to_string();
        let out = ok(&edgecut(
            &[
                "generate",
                "-m",
                m,
                "-n",
                &n,
                "-q",
                "--prompt-ids",
                "--print-ids",
                &prompt,
            ],
            None,
        ));
        let want = greedy
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(out.trim_end(), want, "{name}: greedy ids");
    }
    let path = edgecut_tests::repo_root().join(fx["files"]["Q4_K_M"]["file"].as_str().unwrap());
    let out = ok(&edgecut(
        &[
            "bench",
            "-m",
            path.to_str().unwrap(),
            "--threads",
            "1",
            "--prompt-tokens",
            "16",
            "--gen-tokens",
            "4",
            "--iters",
            "1",
        ],
        None,
    ));
    assert!(
        out.lines().any(|l| l.trim_start().starts_with("16")),
        "bench printed no row for 16 prompt tokens:\n{out}"
    );
}
