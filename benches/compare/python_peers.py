#!/usr/bin/env python3
"""The Python package against the Rust facade (overhead) and against the Python peers, in one run.

Overhead (the same work, 2 threads): MiniLM Q8_0, batch 32 x 128 tokens, through
`edgecut.Embedder.embed` against the facade's `Session::embed` called from Rust in the same process
(`Embedder._facade_seconds`), call by call, alternating, the ratio per pair; SmolLM2-135M Q4_1,
a 16-token prompt and 64 generated tokens, through `edgecut.LLM.generate` and `.stream` against
`Context::generate` from Rust the same way. Python's figures are wall clock around the call. The
CLI's `edgecut bench` (a separate process) is printed beside them.

Peers (same texts and prompts, 2 threads):
  - fastembed 0.9.1 on ONNX Runtime INT8 of the same MiniLM checkpoint (exported and quantized as
    benches/compare/compare.py does; fastembed loads it as a custom model from a folder, since it
    cannot fetch its own here), and ONNX Runtime INT8 called directly;
  - llama-cpp-python 0.3.36 on the same SmolLM2 file.
Metrics: embeddings/s (batch 32 x 128 tokens), decode tokens/s and first-token latency (a
16-token prompt; streamed), and fidelity to PyTorch: cosine to sentence-transformers' fp32
vectors on the committed fixture texts (tests/fixtures/minilm.json), and greedy tokens agreeing
with transformers' fp32 run of the same GGUF before the first divergence (tests/fixtures/smollm2.json).

Each system runs in its own process, in turn, for --rounds rounds; each figure is the system's
best round (other guests' load comes and goes over seconds).

    python3 benches/compare/python_peers.py [--rounds 3] [--threads 2]

Needs: the wheel installed in --edgecut-python's venv (scripts/test-python.sh does it), torch,
transformers, onnx, onnxruntime and llama_cpp in --ref-python's (the refvenv), fastembed==0.9.1 in
--fastembed-python's (a venv of its own: `python3 -m venv ~/.cache/edgecut/fastembed-venv &&
~/.cache/edgecut/fastembed-venv/bin/pip install fastembed==0.9.1`), the models
(scripts/fetch-models.sh) and target/release/edgecut.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.environ.get("EDGECUT_MODELS", os.path.expanduser("~/.cache/edgecut/models"))
CACHE = os.path.expanduser("~/.cache/edgecut")
SMOL = os.path.join(MODELS, "SmolLM2-135M-Instruct.Q4_1.gguf")
BATCH, SEQ, PROMPT, GEN = 32, 128, 16, 64


def fixture(name):
    with open(os.path.join(ROOT, "tests/fixtures", name)) as f:
        return json.load(f)


def median_ms(fn, iters, warm=3):
    for _ in range(warm):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def cosines(vecs, cases):
    import numpy as np
    ref = np.array([c["embedding"] for c in cases], dtype=np.float64)
    v = np.asarray(vecs, dtype=np.float64)
    cos = (v * ref).sum(1) / np.linalg.norm(v, axis=1) / np.linalg.norm(ref, axis=1)
    return float(cos.min()), float(cos.mean())


def long_text(count_tokens):
    """'hello ...' of exactly SEQ tokens ([CLS] and [SEP] included), as `edgecut bench` makes it."""
    words = SEQ - 2
    while count_tokens(" ".join(["hello"] * words)) > SEQ:
        words -= 1
    while count_tokens(" ".join(["hello"] * (words + 1))) <= SEQ:
        words += 1
        assert words < 4 * SEQ, "the tokenizer truncates: cannot build the benchmark text"
    return " ".join(["hello"] * words)


def agreement(greedy_of):
    """Greedy tokens equal to PyTorch's before the first divergence, over the fixture prompts."""
    same = total = 0
    for c in fixture("smollm2.json")["cases"]:
        want = c["greedy"]
        got = greedy_of(c["text"], len(want))
        n = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        same += n
        total += len(want)
    return same, total


# --- the systems, each run in a child process -------------------------------------------------


def sys_edgecut_embed(a):
    import edgecut
    emb = edgecut.Embedder(a.minilm, threads=a.threads, batch_size=BATCH)
    text = long_text(lambda t: len(emb.tokenize(t)))
    texts = [text] * BATCH
    ms = median_ms(lambda: emb.embed(texts), a.iters)
    cases = [c for c in fixture("minilm.json")["cases"] if c["max_len"] == 256]
    return {"ms_per_text": ms / BATCH, "fidelity": cosines(emb.embed([c["text"] for c in cases]), cases)}


def paired(rust_once, python_once, pairs):
    """Median of Python's time over the facade's, call by call, alternating (in one process)."""
    rust_once(), python_once()
    ratios, rs, ps = [], [], []
    for i in range(pairs):
        if i % 2:
            p, r = python_once(), rust_once()
        else:
            r, p = rust_once(), python_once()
        ratios.append(p / r)
        rs.append(r * 1e3)
        ps.append(p * 1e3)
    return {"ratio": statistics.median(ratios), "sum_ratio": sum(ps) / sum(rs), "rust_ms": statistics.median(rs),
            "python_ms": statistics.median(ps)}


def wall(fn):
    def once():
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t
    return once


def sys_overhead(a):
    import edgecut
    emb = edgecut.Embedder(a.minilm, threads=a.threads, batch_size=BATCH)
    texts = [long_text(lambda t: len(emb.tokenize(t)))] * BATCH
    out = {"embed": paired(lambda: emb._facade_seconds(texts, BATCH, 1)[0], wall(lambda: emb.embed(texts)), a.pairs)}
    llm = edgecut.LLM(SMOL, threads=a.threads)
    prompt = bench_prompt(llm.tokenize, llm.detokenize)
    kw = dict(max_tokens=GEN, ignore_eos=True, cache_reuse=False)
    rust = lambda: llm._llm._facade_seconds(prompt, GEN, 1)[0]  # noqa: E731
    out["generate"] = paired(rust, wall(lambda: llm.generate(prompt, **kw)), a.pairs)
    out["stream"] = paired(rust, wall(lambda: list(llm.stream(prompt, **kw))), a.pairs)
    return out


def sys_rust_embed(a):
    out = subprocess.run([a.edgecut, "bench", "-m", a.minilm, "--seq", str(SEQ), "--batch", str(BATCH),
                          "--batch-size", str(BATCH), "--threads", str(a.threads), "--iters", str(a.iters)],
                         capture_output=True, text=True, check=True).stdout
    row = next(l for l in out.splitlines() if re.match(rf"\s*{SEQ}\s+{BATCH}\s", l))
    return {"ms_per_text": float(row.split()[2])}


def ort_folder(a):
    """MiniLM exported to ONNX and quantized to INT8 as compare.py does, once, in --work."""
    folder = os.path.join(a.work, "minilm-int8")
    if os.path.exists(os.path.join(folder, "model.onnx")):
        return folder
    sys.path.insert(0, os.path.join(ROOT, "benches/compare"))
    import torch
    from compare import export
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel, AutoTokenizer
    ckpt = os.path.join(MODELS, "all-MiniLM-L6-v2")
    tok = AutoTokenizer.from_pretrained(ckpt)
    os.makedirs(folder, exist_ok=True)
    fp32 = os.path.join(a.work, "minilm.onnx")
    export(torch, AutoModel, ckpt, tok, fp32, os.path.join(folder, "model.onnx"), quantize_dynamic, QuantType)
    for f in ["tokenizer.json", "tokenizer_config.json", "config.json", "special_tokens_map.json", "vocab.txt"]:
        if os.path.exists(os.path.join(ckpt, f)):
            shutil.copy(os.path.join(ckpt, f), folder)
    return folder


def sys_ort_int8(a):
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoTokenizer
    folder = ort_folder(a)
    tok = AutoTokenizer.from_pretrained(folder)
    o = ort.SessionOptions()
    o.intra_op_num_threads = a.threads
    o.inter_op_num_threads = 1
    s = ort.InferenceSession(os.path.join(folder, "model.onnx"), o, providers=["CPUExecutionProvider"])

    def embed(texts):
        enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="np")
        h = s.run(None, {k: enc[k].astype(np.int64) for k in ["input_ids", "attention_mask", "token_type_ids"]})[0]
        m = enc["attention_mask"][..., None].astype(np.float32)
        e = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    text = long_text(lambda t: len(tok(t)["input_ids"]))
    ms = median_ms(lambda: embed([text] * BATCH), a.iters)
    cases = [c for c in fixture("minilm.json")["cases"] if c["max_len"] == 256]
    return {"ms_per_text": ms / BATCH, "fidelity": cosines(embed([c["text"] for c in cases]), cases)}


def sys_fastembed(a):
    import numpy as np
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType
    folder = a.fastembed_model
    TextEmbedding.add_custom_model(model="edgecut-bench/all-MiniLM-L6-v2-int8", pooling=PoolingType.MEAN,
                                   normalization=True, sources=ModelSource(hf="edgecut-bench/none"), dim=384,
                                   model_file="model.onnx")
    m = TextEmbedding("edgecut-bench/all-MiniLM-L6-v2-int8", specific_model_path=folder, threads=a.threads)
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
    tok.no_truncation()
    text = long_text(lambda t: len(tok.encode(t).ids))
    ms = median_ms(lambda: list(m.embed([text] * BATCH, batch_size=BATCH)), a.iters)
    cases = [c for c in fixture("minilm.json")["cases"] if c["max_len"] == 256]
    vecs = np.array(list(m.embed([c["text"] for c in cases], batch_size=BATCH)))
    return {"ms_per_text": ms / BATCH, "fidelity": cosines(vecs, cases)}


def bench_prompt(tokenize, detokenize):
    ids = tokenize(" the quick brown fox" * 5)[:PROMPT]
    text = detokenize(ids)
    assert tokenize(text) == ids, "the benchmark prompt does not tokenize back to itself"
    return text


def sys_edgecut_llm(a):
    import edgecut
    llm = edgecut.LLM(SMOL, threads=a.threads)
    prompt = bench_prompt(llm.tokenize, llm.detokenize)
    kw = dict(max_tokens=GEN, ignore_eos=True, cache_reuse=False)
    total = median_ms(lambda: llm.generate(prompt, **kw), a.llm_iters, warm=1)
    streamed = median_ms(lambda: list(llm.stream(prompt, **kw)), a.llm_iters, warm=1)
    firsts, decodes = [], []
    for _ in range(a.llm_iters):
        t = time.perf_counter()
        s = llm.stream(prompt, **kw)
        next(s)
        first = time.perf_counter() - t
        rest = sum(1 for _ in s)
        firsts.append(first * 1e3)
        decodes.append(rest / (time.perf_counter() - t - first))
    same, n = agreement(lambda text, k: llm.generate(text, max_tokens=k, ignore_eos=True, cache_reuse=False).tokens)
    return {"total_ms": total, "stream_total_ms": streamed, "first_ms": statistics.median(firsts),
            "decode_tps": statistics.median(decodes), "agree": [same, n]}


def sys_rust_llm(a):
    out = subprocess.run([a.edgecut, "bench", "-m", SMOL, "--prompt-tokens", str(PROMPT), "--gen-tokens", str(GEN),
                          "--threads", str(a.threads), "--iters", str(a.llm_iters)],
                         capture_output=True, text=True, check=True).stdout
    row = next(l for l in out.splitlines() if re.match(rf"\s*{PROMPT}\s+{GEN}\s", l)).split()
    prefill_ms, ms_per_token = float(row[2]), float(row[4])
    return {"total_ms": prefill_ms + (GEN - 1) * ms_per_token, "first_ms": prefill_ms, "decode_tps": 1e3 / ms_per_token}


def sys_llama_cpp(a):
    from llama_cpp import Llama
    m = Llama(model_path=SMOL, n_threads=a.threads, n_threads_batch=a.threads, n_ctx=2048, verbose=False)
    ids = m.tokenize((" the quick brown fox" * 5).encode(), add_bos=False)[:PROMPT]

    def run(stream_first=False):
        m.reset()
        t = time.perf_counter()
        first = None
        n = 0
        for tok in m.generate(ids, temp=0.0, top_k=1, reset=True):
            n += 1
            if first is None:
                first = time.perf_counter() - t
            if n == GEN:
                break
        return first, time.perf_counter() - t

    run()
    totals, firsts, decodes = [], [], []
    for _ in range(a.llm_iters):
        first, total = run()
        totals.append(total * 1e3)
        firsts.append(first * 1e3)
        decodes.append((GEN - 1) / (total - first))

    def greedy(text, k):
        m.reset()
        out = []
        for tok in m.generate(m.tokenize(text.encode(), add_bos=False), temp=0.0, top_k=1, reset=True):
            out.append(tok)
            if len(out) == k:
                break
        return out

    same, n = agreement(greedy)
    return {"total_ms": statistics.median(totals), "first_ms": statistics.median(firsts),
            "decode_tps": statistics.median(decodes), "agree": [same, n]}


SYSTEMS = {
    "overhead": ("edgecut", sys_overhead),
    "edgecut-embed": ("edgecut", sys_edgecut_embed),
    "rust-embed": ("edgecut", sys_rust_embed),
    "fastembed": ("fastembed", sys_fastembed),
    "ort-int8": ("ref", sys_ort_int8),
    "edgecut-llm": ("edgecut", sys_edgecut_llm),
    "rust-llm": ("edgecut", sys_rust_llm),
    "llama-cpp": ("ref", sys_llama_cpp),
}
BETTER_LOW = {"ms_per_text", "total_ms", "stream_total_ms", "first_ms"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=20, help="embedding calls per system per round")
    ap.add_argument("--llm-iters", type=int, default=5, help="generations per system per round")
    ap.add_argument("--pairs", type=int, default=40, help="overhead: alternating pairs per round")
    ap.add_argument("--edgecut", default=os.path.join(ROOT, "target/release/edgecut"))
    ap.add_argument("--edgecut-python", default=os.path.join(CACHE, "venv/bin/python"))
    ap.add_argument("--ref-python", default=os.path.join(CACHE, "refvenv/bin/python"))
    ap.add_argument("--fastembed-python", default=os.path.join(CACHE, "fastembed-venv/bin/python"))
    ap.add_argument("--only", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    ap.add_argument("--minilm", help=argparse.SUPPRESS)
    ap.add_argument("--fastembed-model", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.only:
        os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
        print("RESULT " + json.dumps(SYSTEMS[a.only][1](a)))
        return
    work = tempfile.mkdtemp(prefix="edgecut-python-peers-")
    minilm = os.path.join(work, "minilm.q8_0.gguf")
    subprocess.run([a.edgecut, "convert", os.path.join(MODELS, "all-MiniLM-L6-v2"), "-o", minilm, "--type", "q8_0"],
                   check=True, capture_output=True)
    pythons = {"edgecut": a.edgecut_python, "ref": a.ref_python, "fastembed": a.fastembed_python}
    common = ["--threads", str(a.threads), "--iters", str(a.iters), "--llm-iters", str(a.llm_iters), "--pairs", str(a.pairs),
              "--edgecut", a.edgecut, "--work", work, "--minilm", minilm]
    # The INT8 export once (the refvenv has torch), then fastembed loads the same folder.
    subprocess.run([a.ref_python, __file__, "--only", "ort-int8"] + common + ["--iters", "1"], check=True,
                   capture_output=True)
    common += ["--fastembed-model", os.path.join(work, "minilm-int8")]
    best = {}
    for r in range(a.rounds):
        for name, (venv, _) in SYSTEMS.items():
            out = subprocess.run([pythons[venv], __file__, "--only", name] + common, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"{name} failed:\n{out.stderr[-3000:]}")
            res = json.loads(next(l for l in out.stdout.splitlines() if l.startswith("RESULT "))[7:])
            print(f"round {r + 1} {name:14} {json.dumps(res)}", flush=True)
            if name == "overhead":
                best.setdefault(name, []).append(res)
                continue
            b = best.setdefault(name, dict(res))
            for k, v in res.items():
                if isinstance(v, float):
                    b[k] = min(b[k], v) if k in BETTER_LOW else max(b[k], v)
    e, rs = best["edgecut-embed"], best["rust-embed"]
    l, rl = best["edgecut-llm"], best["rust-llm"]
    print(f"\n## Overhead of Python ({a.threads} threads; Python / Rust facade, call by call in one process, "
          f"median ratio per round)")
    for what, label in [("embed", f"MiniLM embed, batch {BATCH} x {SEQ} tokens"),
                        ("generate", f"SmolLM2 generate, {PROMPT}+{GEN} tokens"),
                        ("stream", f"SmolLM2 stream, {PROMPT}+{GEN} tokens")]:
        rounds = [r[what] for r in best["overhead"]]
        print(f"{label}: " + ", ".join(f"{r['ratio']:.4f} (all pairs' time {r['sum_ratio']:.4f}; medians "
                                       f"{r['python_ms']:.1f} / {r['rust_ms']:.1f} ms)" for r in rounds)
              + f"; median {statistics.median(r['ratio'] for r in rounds):.4f}")
    print(f"\n## The same work in separate processes (the CLI's `edgecut bench`; best round of each)")
    print(f"MiniLM batch {BATCH} x {SEQ} tokens: Python {e['ms_per_text']:.3f} ms/text, Rust {rs['ms_per_text']:.3f}: "
          f"{e['ms_per_text'] / rs['ms_per_text']:.3f}")
    print(f"SmolLM2 {PROMPT}+{GEN} tokens: Python generate {l['total_ms']:.1f} ms, stream {l['stream_total_ms']:.1f} ms, "
          f"Rust {rl['total_ms']:.1f} ms: {l['total_ms'] / rl['total_ms']:.3f} / {l['stream_total_ms'] / rl['total_ms']:.3f}")
    print(f"\n## Against the peers ({a.threads} threads)")
    print("| system | embeddings/s (32 x 128) | cosine to PyTorch min / mean |")
    print("|---|---|---|")
    for name, label in [("edgecut-embed", "edgecut (Python)"), ("fastembed", "fastembed 0.9.1 (ORT INT8)"),
                        ("ort-int8", "ONNX Runtime INT8 direct")]:
        b = best[name]
        print(f"| {label} | {1e3 / b['ms_per_text']:.1f} | {b['fidelity'][0]:.5f} / {b['fidelity'][1]:.5f} |")
    print("\n| system | decode tok/s | first token ms (16-token prompt) | greedy tokens agreeing with PyTorch |")
    print("|---|---|---|---|")
    for name, label in [("edgecut-llm", "edgecut (Python, streamed)"), ("llama-cpp", "llama-cpp-python 0.3.36")]:
        b = best[name]
        print(f"| {label} | {b['decode_tps']:.1f} | {b['first_ms']:.1f} | {b['agree'][0]}/{b['agree'][1]} |")
    print(f"\nedgecut / fastembed embeddings/s: {best['fastembed']['ms_per_text'] / e['ms_per_text']:.2f}; "
          f"edgecut / llama-cpp-python decode: {l['decode_tps'] / best['llama-cpp']['decode_tps']:.2f}, "
          f"first token: {best['llama-cpp']['first_ms'] / l['first_ms']:.2f}x faster")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
