#!/usr/bin/env python3
"""Side-by-side: edgecut vs ONNX Runtime (fp32 and INT8) vs PyTorch fp32 on MiniLM-L6, in one run.

Every system embeds the same texts at batch 1 with tokenization included, on the same number of
threads; the script prints median ms per sentence, ratios to edgecut, and each system's cosine to
PyTorch fp32 on the committed fixture texts. Timing runs in rounds that take every system in
turn; each system's figure is its best round's median, and every round's figures are printed.

    ~/.cache/edgecut/refvenv/bin/python benches/compare/compare.py [--threads 2] [--seq 16,128] [--rounds 3]

Needs torch, transformers, onnx, onnxruntime (tests/reference/requirements-fixtures.txt plus
onnxruntime and onnx), the MiniLM checkpoint (scripts/fetch-models.sh) and a release build of the
edgecut CLI (cargo build --release -p edgecut-cli).
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


def text_of(tok, n):
    """A text of exactly n tokens ([CLS] and [SEP] included), as `edgecut bench` builds it."""
    words = max(n - 2, 0)
    while True:
        t = " ".join(["hello"] * words)
        got = len(tok(t)["input_ids"])
        if got == n or words == 0:
            return t
        words += -1 if got > n else 1


def timed(fn, text, iters):
    for _ in range(3):
        fn(text)
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn(text)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def mean_pool(hidden, mask):
    m = mask[..., None].astype(np.float32)
    e = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def export(torch, AutoModel, ckpt, tok, fp32_path, int8_path, quantize_dynamic, QuantType):
    """MiniLM to ONNX, and ONNX Runtime's dynamic INT8 (per-channel) quantization of it."""
    dummy = tok("hello world", return_tensors="pt")

    class Hidden(torch.nn.Module):
        """The encoder with keyword arguments only (transformers' forward signature moves)."""

        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state

    # Export from a separate instance: tracing leaves the exported module's mask handling altered.
    torch.onnx.export(Hidden(AutoModel.from_pretrained(ckpt).eval()), (dummy["input_ids"], dummy["attention_mask"], dummy["token_type_ids"]),
                      fp32_path, input_names=["input_ids", "attention_mask", "token_type_ids"],
                      output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                      dynamic_axes={k: {0: "b", 1: "s"} for k in ["input_ids", "attention_mask", "token_type_ids", "last_hidden_state"]})
    quantize_dynamic(fp32_path, int8_path, weight_type=QuantType.QInt8, per_channel=True)



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq", default="16,128")
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3,
                    help="timing rounds; each round times every system once, in turn, and each system's "
                         "figure is its best round's median (load from other guests comes and goes over "
                         "seconds, so interleaved rounds give every system the same chance of a quiet one)")
    ap.add_argument("--gguf", default=os.path.join(MODELS, "all-MiniLM-L6-v2.q8_0.gguf"))
    ap.add_argument("--edgecut", default=os.path.join(ROOT, "target/release/edgecut"))
    ap.add_argument("--only", help=argparse.SUPPRESS)  # time one system in this process
    ap.add_argument("--work", help=argparse.SUPPRESS)
    a = ap.parse_args()

    import torch
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(a.threads)
    ckpt = os.path.join(MODELS, "all-MiniLM-L6-v2")
    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModel.from_pretrained(ckpt).eval()

    work = a.work or tempfile.mkdtemp(prefix="edgecut-compare-")
    fp32_path = os.path.join(work, "minilm.onnx")
    int8_path = os.path.join(work, "minilm.int8.onnx")
    dummy = tok("hello world", return_tensors="pt")
    if a.work:
        pass  # the parent exported already
    else:
        export(torch, AutoModel, ckpt, tok, fp32_path, int8_path, quantize_dynamic, QuantType)
    seqs = [int(s) for s in a.seq.split(",")]

    def ort_session(path):
        o = ort.SessionOptions()
        o.intra_op_num_threads = a.threads
        o.inter_op_num_threads = 1
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])

    sessions = {"ORT fp32": ort_session(fp32_path), "ORT INT8": ort_session(int8_path)}

    def ort_embed(s):
        def f(texts):
            enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="np")
            out = s.run(None, {k: enc[k].astype(np.int64) for k in ["input_ids", "attention_mask", "token_type_ids"]})[0]
            return mean_pool(out, enc["attention_mask"])
        return f

    def torch_embed(texts):
        with torch.no_grad():
            enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
            out = model(**enc).last_hidden_state.numpy()
            return mean_pool(out, enc["attention_mask"].numpy())

    systems = {"PyTorch fp32": torch_embed}
    systems.update({k: ort_embed(v) for k, v in sessions.items()})

    if a.only:
        # Timing of one system, alone in this process (no other runtime's threads spinning).
        n_ms = [timed(lambda t: systems[a.only]([t]), text_of(tok, n), a.iters) for n in seqs]
        print(json.dumps(n_ms))
        return

    rounds = {name: [] for name in list(systems) + ["edgecut Q8_0"]}
    for _ in range(max(a.rounds, 1)):
        for name in systems:
            # Each system is timed in a fresh process, so no runtime's idle threads (OpenMP and
            # ONNX Runtime spin after a run) steal the cores from the next.
            out = subprocess.run([sys.executable, __file__, "--only", name, "--work", work, "--threads",
                                  str(a.threads), "--seq", a.seq, "--iters", str(a.iters)],
                                 capture_output=True, text=True, check=True)
            rounds[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
        bench = subprocess.run([a.edgecut, "bench", "-m", a.gguf, "--threads", str(a.threads), "--seq", a.seq,
                                "--batch", "1", "--iters", str(a.iters)], capture_output=True, text=True, check=True)
        rows = [l.split() for l in bench.stdout.splitlines() if l.strip() and l.split()[0].isdigit()]
        rounds["edgecut Q8_0"].append([float(r[2]) for r in rows])
    # Per system and length: the best round's median.
    ms = {name: [min(r[i] for r in rs) for i in range(len(seqs))] for name, rs in rounds.items()}
    # Fidelity: cosine to PyTorch fp32 on the fixture texts (max_length 256).
    fx = json.load(open(os.path.join(ROOT, "tests/fixtures/minilm.json")))
    texts = [c["text"] for c in fx["cases"] if c["max_len"] == 256]
    ref = np.concatenate([torch_embed([t]) for t in texts])
    cos = {}
    for name, f in systems.items():
        got = np.concatenate([f([t]) for t in texts])
        cos[name] = (got * ref).sum(1)
    out = subprocess.run([a.edgecut, "embed", "-m", a.gguf, "--threads", str(a.threads), "--batch-size", "1", "--"] + texts,
                         capture_output=True, text=True, check=True)
    got = np.array(json.loads(out.stdout))
    got /= np.linalg.norm(got, axis=1, keepdims=True)
    cos["edgecut Q8_0"] = (got * ref).sum(1)

    print(f"MiniLM-L6, batch 1, {a.threads} threads, tokenization included, median of {a.iters}, "
          f"best of {max(a.rounds, 1)} interleaved rounds")
    for name, rs in rounds.items():
        print(f"  rounds, {name}: " + "; ".join(" / ".join(f"{v:.3f}" for v in r) for r in rs))
    print(f"{'system':<14} " + " ".join(f"{'seq ' + s + ' ms':>12}" for s in a.seq.split(",")) + f" {'min cos':>9} {'mean cos':>9}")
    for name in ["PyTorch fp32", "ORT fp32", "ORT INT8", "edgecut Q8_0"]:
        c = cos[name]
        print(f"{name:<14} " + " ".join(f"{v:>12.3f}" for v in ms[name]) + f" {c.min():>9.5f} {c.mean():>9.5f}")
    print("speed-up of edgecut over ORT INT8: " + ", ".join(
        f"seq {n}: {o / e:.2f}x" for n, o, e in zip(seqs, ms["ORT INT8"], ms["edgecut Q8_0"])))


if __name__ == "__main__":
    main()
