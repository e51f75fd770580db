#!/usr/bin/env python3
"""Side by side, one run: ModernBERT embedding throughput at ModernBERT-base's shape (hidden 768,
22 blocks, feed-forward 1152, 12 heads, local attention of 128 on two blocks of three; seeded
random weights, the tiny fixture's byte-level BPE vocabulary), edgecut Q8_0 vs ONNX Runtime
fp32 and INT8 (dynamic, per-channel) vs PyTorch fp32 (eager attention), texts of --seq tokens
at batch 1 and 32, mean pooling, tokenization included; ms per text. Each system in a fresh
process, --rounds interleaved rounds, its best round's median. Fidelity: each system's pooled
vectors against PyTorch's (worst cosine over the batch).

    ~/.cache/edgecut/refvenv/bin/python benches/compare/modernbert_peers.py [--threads 2] [--seq 128,512]

Needs torch, transformers, onnx, onnxruntime and a release build of the CLI.
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
TOK = os.path.join(ROOT, "tests/fixtures/modernbert-tiny")


def exe():
    return os.environ.get("EDGECUT_BIN", os.path.join(ROOT, "target/release/edgecut"))


def make(work, threads):
    import shutil

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoTokenizer, ModernBertConfig, ModernBertModel

    torch.set_num_threads(threads)
    d = os.path.join(work, "modernbert-base-random")
    tok = AutoTokenizer.from_pretrained(TOK)
    cfg = ModernBertConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=1152,
                           num_hidden_layers=22, num_attention_heads=12, max_position_embeddings=8192,
                           local_attention=128, global_attn_every_n_layers=3,
                           pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id,
                           eos_token_id=tok.sep_token_id, cls_token_id=tok.cls_token_id,
                           sep_token_id=tok.sep_token_id, attn_implementation="eager")
    torch.manual_seed(20261210)
    ModernBertModel(cfg).eval().save_pretrained(d)
    for f in os.listdir(TOK):
        p = os.path.join(TOK, f)
        if os.path.isfile(p) and f not in ("config.json", "model.safetensors"):
            shutil.copy(p, d)
        elif os.path.isdir(p):
            shutil.copytree(p, os.path.join(d, f), dirs_exist_ok=True)

    class Hidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    e = tok("hello world", return_tensors="pt")
    names = ["input_ids", "attention_mask"]
    torch.onnx.export(Hidden(ModernBertModel.from_pretrained(d, attn_implementation="eager").eval()),
                      (e["input_ids"], e["attention_mask"]), os.path.join(work, "m.onnx"),
                      input_names=names, output_names=["hidden"], opset_version=17, dynamo=False,
                      dynamic_axes={k: {0: "b", 1: "s"} for k in names + ["hidden"]})
    quantize_dynamic(os.path.join(work, "m.onnx"), os.path.join(work, "m.int8.onnx"),
                     weight_type=QuantType.QInt8, per_channel=True)
    subprocess.run([exe(), "convert", d, "-o", os.path.join(work, "m.gguf")], check=True,
                   capture_output=True)


def text_of(tok, n):
    words = n
    while len(tok(" ".join(["hello"] * words))["input_ids"]) > n:
        words -= 1
    return " ".join(["hello"] * words)


def system(name, work, threads):
    """A callable embedding a list of texts (mean-pooled, normalised)."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(TOK)

    def pool(h, m):
        v = (h * m).sum(1) / m.sum(1)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    if name == "PyTorch fp32":
        import torch
        from transformers import ModernBertModel
        torch.set_num_threads(threads)
        m = ModernBertModel.from_pretrained(os.path.join(work, "modernbert-base-random"),
                                            attn_implementation="eager").eval()

        def f(texts):
            with torch.no_grad():
                enc = tok(texts, padding=True, return_tensors="pt")
                h = m(**enc).last_hidden_state.numpy()
                return pool(h, enc["attention_mask"].numpy()[..., None])
        return f
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    path = os.path.join(work, "m.onnx" if name == "ORT fp32" else "m.int8.onnx")
    s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])

    def g(texts):
        enc = tok(texts, padding=True, return_tensors="np")
        h = s.run(None, {k: enc[k].astype(np.int64) for k in ["input_ids", "attention_mask"]})[0]
        return pool(h, enc["attention_mask"][..., None].astype(np.float32))
    return g


def median_ms(fn, iters):
    fn()
    ts = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq", default="128,512")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    a = ap.parse_args()
    seqs = [int(s) for s in a.seq.split(",")]
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(TOK)
    if a.only:
        f = system(a.only, a.work, a.threads)
        out = []
        for n in seqs:
            t = text_of(tok, n)
            out += [median_ms(lambda: f([t]), a.iters), median_ms(lambda: f([t] * 32), 2) / 32]
        print(json.dumps(out))
        return
    work = tempfile.mkdtemp(prefix="edgecut-modernbert-")
    if os.environ.get("EDGECUT_MODERNBERT_WORK"):
        work = os.environ["EDGECUT_MODERNBERT_WORK"]  # models made by an earlier run
    else:
        make(work, a.threads)
    names = ["PyTorch fp32", "ORT fp32", "ORT INT8"]
    rounds = {n: [] for n in names + ["edgecut Q8_0"]}
    for _ in range(a.rounds):
        for n in names:
            r = subprocess.run([sys.executable, __file__, "--only", n, "--work", work, "--threads",
                                str(a.threads), "--seq", a.seq, "--iters", str(a.iters)],
                               capture_output=True, text=True, check=True)
            rounds[n].append(json.loads(r.stdout.strip().splitlines()[-1]))
        out = subprocess.run([exe(), "bench", "-m", os.path.join(work, "m.gguf"), "--threads",
                              str(a.threads), "--seq", a.seq, "--batch", "1,32", "--batch-size", "32",
                              "--max-seq-len", str(max(seqs)), "--iters", str(a.iters)], capture_output=True, text=True, check=True).stdout
        rows = {(int(l.split()[0]), int(l.split()[1])): float(l.split()[2])
                for l in out.splitlines() if l.strip() and l.split()[0].isdigit()}
        rounds["edgecut Q8_0"].append([rows[(n, b)] for n in seqs for b in (1, 32)])
    best = {n: [min(r[i] for r in rs) for i in range(2 * len(seqs))] for n, rs in rounds.items()}
    # Fidelity: the same 8 texts of mixed lengths through each system against PyTorch.
    texts = [text_of(tok, n) for n in (5, 17, 40, 128, 200, 64, 9, 300)]
    ref = system("PyTorch fp32", work, a.threads)(texts)
    cos = {}
    for n in names[1:]:
        v = system(n, work, a.threads)(texts)
        cos[n] = float(min((v * ref).sum(1)))
    r = subprocess.run([exe(), "embed", "-m", os.path.join(work, "m.gguf"), "--format", "json",
                        "--max-seq-len", "512", "--threads", str(a.threads), *texts], capture_output=True, text=True, check=True)
    v = np.asarray(json.loads(r.stdout), dtype=np.float64)
    cos["edgecut Q8_0"] = float(min((v * ref).sum(1) / np.linalg.norm(v, axis=1)))
    cos["PyTorch fp32"] = 1.0
    print(f"{a.threads} threads, ModernBERT-base shape, random weights, tokenization included, "
          f"median of {a.iters}, best of {a.rounds} interleaved rounds; ms per text")
    for n, rs in rounds.items():
        print(f"  rounds, {n}: " + "; ".join(" / ".join(f"{x:.2f}" for x in r) for r in rs))
    head = "".join(f"{f'seq {n} b1':>12}{f'seq {n} b32':>12}" for n in seqs)
    print(f"{'system':<14}{head}{'worst cosine':>14}")
    for n in names + ["edgecut Q8_0"]:
        print(f"{n:<14}" + "".join(f"{x:>12.2f}" for x in best[n]) + f"{cos[n]:>14.5f}")
    e = best["edgecut Q8_0"]
    for n in names:
        print(f"edgecut vs {n}: " + ", ".join(
            f"seq {s} b{b} {best[n][2 * i + j] / e[2 * i + j]:.2f}x"
            for i, s in enumerate(seqs) for j, b in enumerate((1, 32))))


if __name__ == "__main__":
    main()
