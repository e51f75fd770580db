#!/usr/bin/env python3
"""Side by side, one run: reranking and multilingual embedding throughput, edgecut vs ONNX
Runtime (fp32 and INT8, dynamic per-channel) vs PyTorch fp32.

1. Reranking: a query against 100 documents, each query/document pair of --seq tokens (128),
   with a seeded random cross-encoder of ms-marco-MiniLM-L-6-v2's shape (BERT, 6 blocks, hidden
   384, one output, MiniLM's WordPiece). PyTorch is sentence-transformers' `CrossEncoder.predict`
   (batches of 32); ONNX Runtime runs the same batches; edgecut is `edgecut bench --rerank` (its
   default batches of 8). Tokenization included everywhere; ms per document.
2. Embedding: the committed tiny XLM-RoBERTa (tests/fixtures/xlmr-tiny, SentencePiece Unigram)
   and tiny ModernBERT (tests/fixtures/modernbert-tiny, byte-level BPE, local attention), texts
   of --seq tokens at batch 1 and 32, mean pooling; ms per text.

Each system is timed in a fresh process, in --rounds interleaved rounds; its figure is its best
round's median. Fidelity: each system's scores against PyTorch's on the committed fixture's 20
real query/document pairs (tests/fixtures/retrieval-tiny.json's queries and documents).

    ~/.cache/edgecut/refvenv/bin/python benches/compare/compare_rerank.py [--threads 2] [--rounds 3]

Needs torch, transformers, sentence-transformers, onnx, onnxruntime
(tests/reference/requirements-fixtures.txt), the MiniLM checkpoint (scripts/fetch-models.sh,
for its vocabulary) and a release build of the CLI (cargo build --release -p edgecut-cli).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.environ.get("EDGECUT_MODELS", os.path.expanduser("~/.cache/edgecut/models"))
QUERY = "what runs on the edge"  # edgecut bench --rerank's query
N_DOCS = 100


def doc_of(count, n):
    """The longest run of "hello" whose count (a function of the text) is at most n tokens."""
    words = max(n - 2, 0)
    while words > 0 and count(" ".join(["hello"] * words)) > n:
        words -= 1
    while count(" ".join(["hello"] * (words + 1))) <= n:
        words += 1
    return " ".join(["hello"] * words)


def make_models(work, threads):
    """The random cross-encoder and the XLM-R embedder, as checkpoints, ONNX fp32 and INT8."""
    import shutil

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel, AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.set_num_threads(threads)
    ce = os.path.join(work, "cross-encoder")
    torch.manual_seed(20261206)
    cfg = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                     intermediate_size=1536, max_position_embeddings=512, num_labels=1)
    BertForSequenceClassification(cfg).eval().save_pretrained(ce)
    for f in ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]:
        shutil.copy(os.path.join(MODELS, "all-MiniLM-L6-v2", f), ce)
    xlmr = os.path.join(ROOT, "tests/fixtures/xlmr-tiny")
    mbert = os.path.join(ROOT, "tests/fixtures/modernbert-tiny")

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).logits

    class Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    tok = AutoTokenizer.from_pretrained(ce)
    d = tok("hello", "world", return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    torch.onnx.export(Logits(BertForSequenceClassification.from_pretrained(ce).eval()),
                      tuple(d[k] for k in names), os.path.join(work, "ce.onnx"), input_names=names,
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={k: {0: "b", 1: "s"} for k in names} | {"logits": {0: "b"}})
    xt = AutoTokenizer.from_pretrained(xlmr)
    d = xt("hello world", return_tensors="pt")
    torch.onnx.export(Hidden(AutoModel.from_pretrained(xlmr).eval()), (d["input_ids"], d["attention_mask"]),
                      os.path.join(work, "xlmr.onnx"), input_names=names[:2], output_names=["hidden"],
                      opset_version=17, dynamo=False,
                      dynamic_axes={k: {0: "b", 1: "s"} for k in names[:2] + ["hidden"]})
    mt = AutoTokenizer.from_pretrained(mbert)
    d = mt("hello world", return_tensors="pt")
    torch.onnx.export(Hidden(AutoModel.from_pretrained(mbert, attn_implementation="eager").eval()),
                      (d["input_ids"], d["attention_mask"]),
                      os.path.join(work, "mbert.onnx"), input_names=names[:2], output_names=["hidden"],
                      opset_version=17, dynamo=False,
                      dynamic_axes={k: {0: "b", 1: "s"} for k in names[:2] + ["hidden"]})
    for m in ["ce", "xlmr", "mbert"]:
        quantize_dynamic(os.path.join(work, f"{m}.onnx"), os.path.join(work, f"{m}.int8.onnx"),
                         weight_type=QuantType.QInt8, per_channel=True)
    exe = a_edgecut()
    for src, dst in [(ce, "ce.q8_0.gguf"), (xlmr, "xlmr.q8_0.gguf"), (mbert, "mbert.q8_0.gguf")]:
        subprocess.run([exe, "convert", src, "-o", os.path.join(work, dst)], check=True,
                       capture_output=True)


def a_edgecut():
    return os.environ.get("EDGECUT_BIN", os.path.join(ROOT, "target/release/edgecut"))


def median_ms(fn, iters):
    for _ in range(2):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def systems(work, threads, seq):
    """Per system: (rerank all documents, embed one batch of XLM-R, of ModernBERT) callables, and
    the inputs."""
    import onnxruntime as ort
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(threads)
    ce = os.path.join(work, "cross-encoder")
    xlmr = os.path.join(ROOT, "tests/fixtures/xlmr-tiny")
    mbert = os.path.join(ROOT, "tests/fixtures/modernbert-tiny")
    tok, xt = AutoTokenizer.from_pretrained(ce), AutoTokenizer.from_pretrained(xlmr)
    mt = AutoTokenizer.from_pretrained(mbert)
    doc = doc_of(lambda t: len(tok(QUERY, t)["input_ids"]), seq)
    text = doc_of(lambda t: len(xt(t)["input_ids"]), seq)
    mtext = doc_of(lambda t: len(mt(t)["input_ids"]), seq)
    pairs = [(QUERY, doc)] * N_DOCS

    def ort_session(path):
        o = ort.SessionOptions()
        o.intra_op_num_threads = threads
        o.inter_op_num_threads = 1
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])

    def ort_rerank(s):
        def f(ps, batch=32):
            out = []
            for i in range(0, len(ps), batch):
                chunk = ps[i:i + batch]
                enc = tok([q for q, _ in chunk], [d for _, d in chunk], padding=True,
                          truncation="only_second", max_length=512, return_tensors="np")
                out.append(s.run(None, {k: enc[k].astype(np.int64) for k in
                                        ["input_ids", "attention_mask", "token_type_ids"]})[0][:, 0])
            return np.concatenate(out)
        return f

    def ort_embed(s, t=xt):
        def f(texts):
            enc = t(texts, padding=True, truncation=True, max_length=128, return_tensors="np")
            h = s.run(None, {k: enc[k].astype(np.int64) for k in ["input_ids", "attention_mask"]})[0]
            m = enc["attention_mask"][..., None].astype(np.float32)
            return (h * m).sum(1) / m.sum(1)
        return f

    def torch_systems():
        from sentence_transformers import CrossEncoder
        from transformers import AutoModel
        cross = CrossEncoder(ce, device="cpu", activation_fn=torch.nn.Identity())
        emb = AutoModel.from_pretrained(xlmr).eval()
        memb = AutoModel.from_pretrained(mbert).eval()

        def rerank(ps):
            return np.asarray(cross.predict(ps, batch_size=32, show_progress_bar=False))

        def embedder(model, t):
            def embed(texts):
                with torch.no_grad():
                    enc = t(texts, padding=True, truncation=True, max_length=128,
                            return_tensors="pt")
                    h = model(input_ids=enc["input_ids"],
                              attention_mask=enc["attention_mask"]).last_hidden_state
                    m = enc["attention_mask"][..., None].float()
                    return ((h * m).sum(1) / m.sum(1)).numpy()
            return embed
        return rerank, embedder(emb, xt), embedder(memb, mt)

    return {
        "PyTorch fp32": torch_systems,
        "ORT fp32": lambda: (ort_rerank(ort_session(os.path.join(work, "ce.onnx"))),
                             ort_embed(ort_session(os.path.join(work, "xlmr.onnx"))),
                             ort_embed(ort_session(os.path.join(work, "mbert.onnx")), mt)),
        "ORT INT8": lambda: (ort_rerank(ort_session(os.path.join(work, "ce.int8.onnx"))),
                             ort_embed(ort_session(os.path.join(work, "xlmr.int8.onnx"))),
                             ort_embed(ort_session(os.path.join(work, "mbert.int8.onnx")), mt)),
    }, pairs, (text, mtext)


def edgecut_times(work, threads, seq, iters):
    """edgecut bench: ms per document (rerank, 100 per call) and per text (batch 1 and 32, XLM-R
    then ModernBERT)."""
    exe = a_edgecut()

    def bench(model, *extra):
        out = subprocess.run([exe, "bench", "-m", os.path.join(work, model), "--threads", str(threads),
                              "--seq", str(seq), "--iters", str(iters), *extra],
                             capture_output=True, text=True, check=True).stdout
        return [float(l.split()[2]) for l in out.splitlines() if l.strip() and l.split()[0].isdigit()]

    rr = bench("ce.q8_0.gguf", "--rerank", "--batch", str(N_DOCS))[0]
    emb = bench("xlmr.q8_0.gguf", "--batch", "1,32", "--batch-size", "32")
    memb = bench("mbert.q8_0.gguf", "--batch", "1,32", "--batch-size", "32")
    return [rr] + emb + memb


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.only:
        sysmap, pairs, (text, mtext) = systems(a.work, a.threads, a.seq)
        rerank, embed, membed = sysmap[a.only]()
        out = [median_ms(lambda: rerank(pairs), a.iters) / N_DOCS,
               median_ms(lambda: embed([text]), a.iters * 5),
               median_ms(lambda: embed([text] * 32), a.iters) / 32,
               median_ms(lambda: membed([mtext]), a.iters * 5),
               median_ms(lambda: membed([mtext] * 32), a.iters) / 32]
        print(json.dumps(out))
        return

    work = tempfile.mkdtemp(prefix="edgecut-rerank-")
    make_models(work, a.threads)
    names = ["PyTorch fp32", "ORT fp32", "ORT INT8"]
    rounds = {n: [] for n in names + ["edgecut Q8_0"]}
    for _ in range(max(a.rounds, 1)):
        for n in names:
            out = subprocess.run([sys.executable, __file__, "--only", n, "--work", work, "--threads",
                                  str(a.threads), "--seq", str(a.seq), "--iters", str(a.iters)],
                                 capture_output=True, text=True, check=True)
            rounds[n].append(json.loads(out.stdout.strip().splitlines()[-1]))
        rounds["edgecut Q8_0"].append(edgecut_times(work, a.threads, a.seq, a.iters))
    best = {n: [min(r[i] for r in rs) for i in range(5)] for n, rs in rounds.items()}

    # Fidelity on real text pairs: each system's logits against PyTorch's.
    fx = json.load(open(os.path.join(ROOT, "tests/fixtures/retrieval-tiny.json")))
    real = [(p["query"], p["document"]) for p in fx["models"]["bert-rerank-tiny"]["pairs"]]
    sysmap, _, _ = systems(work, a.threads, a.seq)
    ref = sysmap["PyTorch fp32"]()[0](real)
    diff = {n: float(np.abs(sysmap[n]()[0](real) - ref).max()) for n in names}
    got = []
    for q in sorted({q for q, _ in real}):
        docs = [d for qq, d in real if qq == q]
        out = subprocess.run([a_edgecut(), "rerank", "--json", "-m", os.path.join(work, "ce.q8_0.gguf"),
                              "--threads", str(a.threads), q, *docs], capture_output=True, text=True, check=True)
        by_index = {r["index"]: r["logit"] for r in json.loads(out.stdout)}
        got += [(q, docs[i], by_index[i]) for i in range(len(docs))]
    want = {(q, d): s for (q, d), s in zip(real, ref)}
    diff["edgecut Q8_0"] = max(abs(s - want[(q, d)]) for q, d, s in got)

    print(f"{a.threads} threads, pairs/texts of {a.seq} tokens, tokenization included, median of "
          f"{a.iters}, best of {max(a.rounds, 1)} interleaved rounds")
    for n, rs in rounds.items():
        print(f"  rounds, {n}: " + "; ".join(" / ".join(f"{v:.3f}" for v in r) for r in rs))
    print(f"{'system':<14} {'rerank ms/doc':>14} {'xlmr b1 ms':>11} {'xlmr b32 ms/text':>17} "
          f"{'mbert b1 ms':>12} {'mbert b32 ms/text':>18} {'max |logit - PyTorch|':>22}")
    for n in names + ["edgecut Q8_0"]:
        b = best[n]
        print(f"{n:<14} {b[0]:>14.3f} {b[1]:>11.3f} {b[2]:>17.3f} {b[3]:>12.3f} {b[4]:>18.3f} "
              f"{diff[n]:>22.4f}")
    e = best["edgecut Q8_0"]
    for n in names:
        b = best[n]
        print(f"edgecut vs {n}: rerank {b[0] / e[0]:.2f}x, xlmr batch 1 {b[1] / e[1]:.2f}x, "
              f"batch 32 {b[2] / e[2]:.2f}x, modernbert batch 1 {b[3] / e[3]:.2f}x, batch 32 "
              f"{b[4] / e[4]:.2f}x")


if __name__ == "__main__":
    main()
