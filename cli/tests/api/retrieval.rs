//! Retrieval over HTTP: reranking (`/rerank` in text-embeddings-inference's shape, `/v1/rerank`
//! in Cohere's and Jina's) with a tiny BERT cross-encoder against PyTorch's logits, its
//! refusals, a 429 past the places; an LLM embedder (a Qwen3 pooled at its last token) on
//! `/v1/embeddings`; and concurrent requests of several texts each getting their own results
//! back from shared batches.

use std::process::Command;

use edgecut::WeightType;
use edgecut_tests::{
    cli_exe, converted, fixture, http, minilm, qwen3_embedder_dir, repo_root, spawn_http_api,
};
use serde_json::{json, Value};

use super::Server;

fn reranker() -> std::path::PathBuf {
    converted(
        &repo_root().join("tests/fixtures/bert-rerank-tiny"),
        "bert-rerank-tiny",
        WeightType::F32,
    )
}

fn llm_embedder() -> std::path::PathBuf {
    converted(&qwen3_embedder_dir(), "qwen3-embed-tiny", WeightType::F32)
}

/// `edgecut serve --http` with the reranker, MiniLM and the LLM embedder, and `extra` flags.
fn serve(extra: &[&str]) -> Server {
    let mut cmd = Command::new(cli_exe());
    cmd.args(["serve", "--http", "127.0.0.1:0", "--device", "cpu", "-m"])
        .arg(reranker())
        .arg("-m")
        .arg(minilm(WeightType::Q8_0))
        .arg("-m")
        .arg(llm_embedder())
        .args(extra);
    let (child, url, log) = spawn_http_api(cmd);
    Server { child, url, log }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The fixture's pairs of its first query: (query, documents, PyTorch logits).
fn first_query() -> (String, Vec<String>, Vec<f64>) {
    let fx = fixture("retrieval-tiny.json");
    let pairs = fx["models"]["bert-rerank-tiny"]["pairs"]
        .as_array()
        .unwrap();
    let q = pairs[0]["query"].as_str().unwrap().to_string();
    let mine: Vec<&Value> = pairs.iter().filter(|p| p["query"] == q).collect();
    let docs = mine
        .iter()
        .map(|p| p["document"].as_str().unwrap().to_string())
        .collect();
    let logits = mine.iter().map(|p| p["logit"].as_f64().unwrap()).collect();
    (q, docs, logits)
}

#[test]
fn both_rerank_routes_give_pytorchs_scores_best_first() {
    let s = serve(&[]);
    let (q, docs, logits) = first_query();
    // TEI: sigmoid scores (or raw), best first, texts on request; the model may be left out.
    let r = http(
        &format!("{}/rerank", s.url),
        None,
        Some(&json!({"query": q, "texts": docs, "return_text": true}).to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let got = r.json();
    let rows = got.as_array().unwrap();
    assert_eq!(rows.len(), docs.len());
    let mut prev = f64::INFINITY;
    for row in rows {
        let i = row["index"].as_u64().unwrap() as usize;
        let score = row["score"].as_f64().unwrap();
        assert!(
            (score - sigmoid(logits[i])).abs() <= 1e-3,
            "{row} vs {}",
            logits[i]
        );
        assert!(score <= prev, "best first");
        prev = score;
        assert_eq!(row["text"], json!(docs[i]));
    }
    let raw = http(
        &format!("{}/rerank", s.url),
        None,
        Some(&json!({"query": q, "texts": docs, "raw_scores": true}).to_string()),
    )
    .json();
    for row in raw.as_array().unwrap() {
        let i = row["index"].as_u64().unwrap() as usize;
        assert!((row["score"].as_f64().unwrap() - logits[i]).abs() <= 1e-3);
        assert!(row.get("text").is_none());
    }
    // Cohere/Jina: top_n, documents as strings or objects, returned by default, usage.
    let name = "bert-rerank-tiny";
    let model = served_name(&s, name);
    let docs_mixed: Vec<Value> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 0 {
                json!(d)
            } else {
                json!({"text": d})
            }
        })
        .collect();
    let r = http(
        &format!("{}/v1/rerank", s.url),
        None,
        Some(&json!({"model": model, "query": q, "documents": docs_mixed, "top_n": 2}).to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let got = r.json();
    let results = got["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "top_n");
    let best = (0..docs.len())
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap();
    assert_eq!(results[0]["index"], json!(best));
    assert_eq!(results[0]["document"]["text"], json!(docs[best]));
    let rel = results[0]["relevance_score"].as_f64().unwrap();
    assert!((rel - sigmoid(logits[best])).abs() <= 1e-3);
    assert_eq!(got["model"], json!(model));
    assert!(got["usage"]["total_tokens"].as_u64().unwrap() > docs.len() as u64 * 4);
}

/// The name the server gives the converted file whose name starts with `prefix`.
fn served_name(s: &Server, prefix: &str) -> String {
    let models = http(&format!("{}/v1/models", s.url), None, None).json();
    models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .find(|id| id.starts_with(prefix))
        .unwrap()
}

#[test]
fn rerank_refusals_are_400s_that_say_what_is_wrong() {
    let s = serve(&["--max-seq-len", "32"]);
    let embedder = served_name(&s, "minilm");
    let post = |route: &str, body: Value| {
        http(&format!("{}{route}", s.url), None, Some(&body.to_string()))
    };
    let cases = [
        (
            "/v1/rerank",
            json!({"model": embedder, "query": "q", "documents": ["d"]}),
            "not a reranker",
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": []}),
            "holds no text",
        ),
        (
            "/v1/rerank",
            json!({"query": "q", "documents": ["d"], "top_n": 0}),
            "top_n",
        ),
        (
            "/rerank",
            json!({"query": "q", "texts": ["word ".repeat(64)]}),
            "set truncate",
        ),
        (
            "/rerank",
            json!({"query": "word ".repeat(64), "texts": ["d"], "truncate": true}),
            "no room",
        ),
        ("/rerank", json!({"query": "q", "texts": "d"}), ""),
    ];
    for (route, body, says) in cases {
        let r = post(route, body.clone());
        assert!(
            r.status == 400 || r.status == 422,
            "{route} {body}: {} {}",
            r.status,
            r.body
        );
        assert!(r.body.contains(says), "{route} {body}: {}", r.body);
    }
    // Documents past the length are cut when asked (the query kept whole).
    let r = post(
        "/rerank",
        json!({"query": "q", "texts": ["word ".repeat(64), "d"], "truncate": true}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // The server is still serving.
    let r = post("/v1/rerank", json!({"query": "q", "documents": ["d"]}));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_rerank_burst_past_the_places_gets_429_and_nothing_else_fails() {
    let s = serve(&["--http-max-concurrent", "1", "--http-max-queue", "1"]);
    let doc = "the cat sat on the mat ".repeat(15);
    let body = json!({"query": "where is the cat", "documents": vec![doc; 64]}).to_string();
    let url = format!("{}/v1/rerank", s.url);
    let replies: Vec<_> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..12)
            .map(|_| sc.spawn(|| http(&url, None, Some(&body))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let busy = replies.iter().filter(|r| r.status == 429).count();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok + busy, replies.len(), "only 200 or 429: {replies:?}");
    assert!(busy >= 1 && ok >= 1, "{ok} served, {busy} refused");
    assert!(replies
        .iter()
        .filter(|r| r.status == 429)
        .all(|r| r.retry_after.is_some()));
}

#[test]
fn concurrent_requests_of_several_texts_get_their_own_results_from_shared_batches() {
    // A small token budget and a long wait: every batch holds texts of several requests.
    let s = serve(&["--http-batch-tokens", "64", "--max-wait-ms", "50"]);
    let embedder = served_name(&s, "minilm");
    let texts: Vec<Vec<String>> = (0..6)
        .map(|r| {
            (0..4)
                .map(|i| format!("request {r} text {i} about topic {}", r * 7 + i))
                .collect()
        })
        .collect();
    let embed = |t: &Vec<String>| {
        let b = json!({"model": embedder, "input": t, "encoding_format": "float"});
        let r = http(
            &format!("{}/v1/embeddings", s.url),
            None,
            Some(&b.to_string()),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["data"].clone()
    };
    let (q, docs, _) = first_query();
    let rerank = || {
        let b = json!({"query": q, "texts": docs, "raw_scores": true});
        http(&format!("{}/rerank", s.url), None, Some(&b.to_string())).json()
    };
    // One after another first, then all at once.
    let alone: Vec<Value> = texts.iter().map(embed).collect();
    let alone_rerank = rerank();
    let together: Vec<Value> = std::thread::scope(|sc| {
        let hs: Vec<_> = texts.iter().map(|t| sc.spawn(move || embed(t))).collect();
        let r = sc.spawn(rerank);
        let mut out: Vec<Value> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        out.push(r.join().unwrap());
        out
    });
    for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
        for (x, y) in a.as_array().unwrap().iter().zip(b.as_array().unwrap()) {
            let (x, y) = (&x["embedding"], &y["embedding"]);
            let dot: f64 = x
                .as_array()
                .unwrap()
                .iter()
                .zip(y.as_array().unwrap())
                .map(|(p, q)| p.as_f64().unwrap() * q.as_f64().unwrap())
                .sum();
            assert!(dot > 0.9999, "request {i}: its own vectors (cosine {dot})");
        }
    }
    let (a, b) = (
        alone_rerank.as_array().unwrap(),
        together[6].as_array().unwrap(),
    );
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x["index"], y["index"]);
        assert!((x["score"].as_f64().unwrap() - y["score"].as_f64().unwrap()).abs() < 1e-4);
    }
}

#[test]
fn an_llm_embedder_serves_embeddings_as_the_facade_computes_them() {
    let s = serve(&[]);
    let name = served_name(&s, "qwen3-embed-tiny");
    let texts = [
        "The cat sat on the mat.",
        "北京是中国的首都。",
        "edge inference",
    ];
    let b = json!({"model": name, "input": texts, "encoding_format": "float", "dimensions": 32});
    let r = http(
        &format!("{}/v1/embeddings", s.url),
        None,
        Some(&b.to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let session = edgecut::Session::open(llm_embedder(), &Default::default()).unwrap();
    let mut want = session.embed(&texts).unwrap().vectors;
    session.shorten(&mut want, 32).unwrap();
    for (d, w) in r.json()["data"].as_array().unwrap().iter().zip(&want) {
        let got: Vec<f32> = d["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got.len(), 32);
        assert!(edgecut::cosine(&got, w) > 0.99999);
    }
    // It is no generator: chat is refused by name.
    let b = json!({"model": name, "messages": [{"role": "user", "content": "hi"}]});
    let r = http(
        &format!("{}/v1/chat/completions", s.url),
        None,
        Some(&b.to_string()),
    );
    assert_eq!(r.status, 400, "{}", r.body);
}
