#!/usr/bin/env python3
"""Greedy fidelity per weight type: SmolLM2-135M-Instruct requantized by llama.cpp's own
quantizer to each type, then, on each file, edgecut and llama.cpp against PyTorch fp32 running
the file's weights dequantized (transformers' GGUF loader, gguf-py's numpy dequantize).

For each of the fixture prompts (tests/fixtures/smollm2.json) every system generates up to --gen
tokens greedily (stopping at end of sequence); the script reports, per type and system, how many
prompts get PyTorch's first token and the mean number of leading tokens equal to PyTorch's.

    ~/.cache/edgecut/refvenv/bin/python benches/compare/quant_fidelity.py \
        [--types q4_k_m,q5_k_m,q6_k,q3_k_m,iq4_xs] [--out DIR]

Needs torch, transformers, gguf (tests/reference/requirements-fixtures.txt), llama-cpp-python
built from source (docs/benchmarks.md), the SmolLM2 file (scripts/fetch-models.sh) and a release
build of the edgecut CLI.
"""
import argparse
import ctypes
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.environ.get("EDGECUT_MODELS", os.path.expanduser("~/.cache/edgecut/models"))
SOURCE = os.path.join(MODELS, "SmolLM2-135M-Instruct.Q4_1.gguf")
FTYPES = {"q4_k_m": 15, "q5_k_m": 17, "q6_k": 18, "q3_k_m": 12, "iq4_xs": 30, "q4_k_s": 14,
          "q5_k_s": 16, "q2_k": 10, "q8_0": 7, "bf16": 32}


def quantize(dst, ftype):
    import llama_cpp

    if os.path.exists(dst):
        return
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.allow_requantize = True  # the source is Q4_1: dequantized to f32, then quantized
    p.nthread = os.cpu_count()
    rc = llama_cpp.llama_model_quantize(SOURCE.encode(), (dst + ".partial").encode(), ctypes.byref(p))
    if rc != 0:
        sys.exit(f"llama_model_quantize to {dst} failed: {rc}")
    os.replace(dst + ".partial", dst)


def run_torch(path, prompts, gen):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(os.cpu_count())
    d, f = os.path.split(path)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    eos = model.config.eos_token_id
    out = []
    with torch.inference_mode():
        for ids in prompts:
            o = model(torch.tensor([ids]), use_cache=True)
            toks = []
            for _ in range(gen):
                nxt = int(o.logits[0, -1].argmax())
                if nxt == eos:
                    break
                toks.append(nxt)
                o = model(torch.tensor([[nxt]]), past_key_values=o.past_key_values, use_cache=True)
            out.append(toks)
    return out


def run_llama_cpp(path, prompts, gen):
    from llama_cpp import Llama

    m = Llama(model_path=path, n_ctx=512, verbose=False, n_threads=os.cpu_count())
    out = []
    for ids in prompts:
        m.reset()
        m.eval(ids)
        toks = []
        for _ in range(gen):
            t = m.sample(temp=0.0)
            if t == m.token_eos():
                break
            toks.append(t)
            m.eval([t])
        out.append(toks)
    return out


def run_edgecut(path, prompts, gen, exe):
    out = []
    for ids in prompts:
        r = subprocess.run([exe, "generate", "-m", path, "-q", "--prompt-ids", "--print-ids",
                            "-n", str(gen), ",".join(map(str, ids))],
                           check=True, capture_output=True, text=True)
        text = r.stdout.strip()
        out.append([int(t) for t in text.split(",")] if text else [])
    return out


def agreement(got, want):
    first = sum(1 for g, w in zip(got, want) if g[:1] == w[:1])
    lead = []
    for g, w in zip(got, want):
        n = 0
        while n < min(len(g), len(w)) and g[n] == w[n]:
            n += 1
        lead.append(n)
    return first, sum(lead) / len(lead)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--types", default="q4_k_m,q5_k_m,q6_k,q3_k_m,iq4_xs")
    ap.add_argument("--gen", type=int, default=32)
    ap.add_argument("--out", default=os.path.join(MODELS, "requantized"))
    ap.add_argument("--edgecut", default=os.path.join(ROOT, "target", "release", "edgecut"))
    ap.add_argument("--file", action="append", default=[],
                    help="a GGUF file to compare as it is (repeatable; e.g. one `edgecut convert "
                         "--type q4_k_m` wrote); --types is then ignored")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    cases = json.load(open(os.path.join(ROOT, "tests", "fixtures", "smollm2.json")))["cases"]
    prompts = [c["ids"] for c in cases]
    rows = []
    todo = ([(os.path.basename(f), f) for f in args.file] if args.file else
            [(t, os.path.join(args.out, f"SmolLM2-135M-Instruct.{t.upper()}.gguf"))
             for t in args.types.split(",")])
    for t, path in todo:
        if not args.file:
            quantize(path, FTYPES[t])
        want = run_torch(path, prompts, args.gen)
        got = {"edgecut": run_edgecut(path, prompts, args.gen, args.edgecut),
               "llama.cpp": run_llama_cpp(path, prompts, args.gen)}
        for name, g in got.items():
            first, lead = agreement(g, want)
            rows.append((t, name, first, lead))
            print(f"{t:<8} {name:<10} first token {first}/{len(prompts)}  "
                  f"leading tokens equal to PyTorch {lead:.1f}/{args.gen}", flush=True)
        first, lead = agreement(got["edgecut"], got["llama.cpp"])
        print(f"{t:<8} edgecut against llama.cpp on the same file: first token "
              f"{first}/{len(prompts)}, leading tokens {lead:.1f}/{args.gen}", flush=True)
    if args.file:
        for name, f in todo:
            print(f"{name}: {os.path.getsize(f)} bytes")
    print(f"\n{'type':<8} {'system':<10} {'first token = PyTorch':>22} {'mean leading tokens = PyTorch':>30}")
    for t, name, first, lead in rows:
        print(f"{t:<8} {name:<10} {first:>19}/{len(prompts)} {lead:>27.1f}/{args.gen}")


if __name__ == "__main__":
    main()
