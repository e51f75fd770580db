#!/usr/bin/env python3
"""Side-by-side decoder speed: edgecut vs llama.cpp (llama-cpp-python) vs PyTorch fp32 on
SmolLM2-135M-Instruct.Q4_1.gguf, in one run, each system in its own process.

Each system runs the same prompt (" the quick brown fox" repeated, cut to --prompt tokens) on the
same number of threads, then generates --gen tokens greedily without stopping at EOS; the script
prints the median prefill and decode tokens/s over --runs runs and the ratios to edgecut. With
--rounds N the systems run N times in alternating order (A B, B A, ...); the ratios printed are
the medians of each round's own ratios, so that a slow spell of a shared machine that lands on
one system of a round does not decide the comparison.
With --busy, a `yes > /dev/null` pinned to the last CPU runs beside every measurement (an edge
device whose other core is taken).

    ~/.cache/edgecut/refvenv/bin/python benches/compare/compare_llm.py [--threads 2] [--busy]

Needs torch, transformers, gguf, accelerate (tests/reference/requirements-fixtures.txt), and
llama-cpp-python built from source (see docs/benchmarks.md), the SmolLM2 file
(scripts/fetch-models.sh) and a release build of the edgecut CLI (cargo build --release -p
edgecut-cli).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.environ.get("EDGECUT_MODELS", os.path.expanduser("~/.cache/edgecut/models"))
GGUF = os.environ.get("EDGECUT_BENCH_GGUF", "SmolLM2-135M-Instruct.Q4_1.gguf")
WORDS = " the quick brown fox"


def prompt_ids(tokenize, n):
    ids = tokenize(WORDS * (n // 4 + 1))
    while len(ids) < n:
        ids.append(ids[len(ids) % 4])
    return ids[:n]


def run_llama_cpp(args):
    from llama_cpp import Llama

    m = Llama(model_path=os.path.join(MODELS, GGUF), n_threads=args.threads,
              n_threads_batch=args.threads, n_ctx=1024, verbose=False)
    import llama_cpp
    import numpy as np

    ids = prompt_ids(lambda t: m.tokenize(t.encode(), add_bos=False), args.prompt)
    vocab = m.n_vocab()

    def greedy():
        # The argmax of the C side's logits: llama-cpp-python's `sample` runs its sampler
        # chain over a copy of the vocabulary's logits in Python (milliseconds per token with
        # Gemma's 262,144), which is not llama.cpp's speed.
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(m.ctx, -1), shape=(vocab,))
        return int(logits.argmax())

    out = []
    for run in range(args.runs + 1):
        m.reset()
        t = time.perf_counter()
        m.eval(ids)
        tok = greedy()
        prefill = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(args.gen - 1):
            m.eval([tok])
            tok = greedy()
        decode = time.perf_counter() - t
        if run > 0:  # the first run warms up
            out.append((prefill, decode))
    return out


def run_torch(args):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(MODELS, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(MODELS, gguf_file=GGUF, dtype=torch.float32).eval()
    ids = prompt_ids(lambda t: tok(t, add_special_tokens=False)["input_ids"], args.prompt)
    out = []
    with torch.inference_mode():
        for run in range(args.runs + 1):
            t = time.perf_counter()
            o = model(torch.tensor([ids]), use_cache=True)
            nxt = int(o.logits[0, -1].argmax())
            prefill = time.perf_counter() - t
            past = o.past_key_values
            t = time.perf_counter()
            for _ in range(args.gen - 1):
                o = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
                past, nxt = o.past_key_values, int(o.logits[0, -1].argmax())
            decode = time.perf_counter() - t
            if run > 0:
                out.append((prefill, decode))
    return out


def run_edgecut(args, exe=None):
    exe = exe or args.edgecut
    cmd = [exe, "bench", "-m", os.path.join(MODELS, GGUF), "--threads", str(args.threads),
           "--prompt-tokens", str(args.prompt), "--gen-tokens", str(args.gen),
           "--iters", str(args.runs)]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    row = [l.split() for l in text.splitlines() if re.match(r"\s*\d", l)][0]
    prefill_ms, ms_per_token = float(row[2]), float(row[4])
    # `edgecut bench` reports medians; expand them to the same shape as the others.
    return [(prefill_ms / 1e3, ms_per_token / 1e3 * (args.gen - 1))]


SYSTEMS = {"edgecut": run_edgecut, "llama.cpp": run_llama_cpp, "pytorch-fp32": run_torch,
           # Another build of edgecut (--edgecut-before), for before/after figures in one run.
           "edgecut-before": lambda args: run_edgecut(args, args.edgecut_before)}


def child(name, args):
    print(json.dumps(SYSTEMS[name](args)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1,
                    help="rounds of every system, in alternating order; ratios per round")
    ap.add_argument("--busy", action="store_true")
    ap.add_argument("--systems", default="edgecut,llama.cpp,pytorch-fp32")
    ap.add_argument("--edgecut", default=os.path.join(ROOT, "target", "release", "edgecut"))
    ap.add_argument("--edgecut-before", help="another edgecut binary, run as system edgecut-before")
    ap.add_argument("--child")
    ap.add_argument("--model", help="another GGUF file (a path; default: SmolLM2 Q4_1 from the "
                    "model cache); PyTorch runs its weights dequantized to f32")
    args = ap.parse_args()
    if args.rounds < 1 or args.runs < 1:
        ap.error("--rounds and --runs take at least 1")
    if args.model:
        global MODELS, GGUF
        MODELS, GGUF = os.path.split(os.path.abspath(args.model))
        os.environ["EDGECUT_MODELS"], os.environ["EDGECUT_BENCH_GGUF"] = MODELS, GGUF
    if args.child:
        return child(args.child, args)
    busy = None
    if args.busy:
        cpu = str(os.cpu_count() - 1)
        busy = subprocess.Popen(["taskset", "-c", cpu, "yes"], stdout=subprocess.DEVNULL)
    names = args.systems.split(",")
    rounds = []  # per round: {system: (prefill tok/s, decode tok/s)}
    try:
        for rnd in range(args.rounds):
            # Rounds alternate the systems' order, and each ratio is taken within a round:
            # another guest's load that lands on one system of a round moves that round only.
            order = names if rnd % 2 == 0 else names[::-1]
            results = {}
            for name in order:
                cmd = [sys.executable, __file__, "--child", name] + [
                    f"--{k}={v}" for k, v in
                    [("threads", args.threads), ("prompt", args.prompt), ("gen", args.gen),
                     ("runs", args.runs), ("edgecut", args.edgecut)]]
                if args.edgecut_before:
                    cmd.append(f"--edgecut-before={args.edgecut_before}")
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                runs = json.loads(out.strip().splitlines()[-1])
                prefill = statistics.median(r[0] for r in runs)
                decode = statistics.median(r[1] for r in runs) / (args.gen - 1)
                results[name] = (args.prompt / prefill, 1.0 / decode)
            rounds.append(results)
    finally:
        if busy:
            busy.kill()
    print(f"{GGUF}, {args.threads} threads, prompt {args.prompt} tokens, "
          f"{args.gen} generated{', other core busy' if args.busy else ''}, "
          f"{args.rounds} round(s) of {args.runs} run(s)")
    if len(rounds) > 1:
        for i, results in enumerate(rounds):
            print(f"round {i + 1}: " + "; ".join(
                f"{n} {p:.1f} / {d:.1f}" for n, (p, d) in results.items()))
    print(f"{'system':<14} {'prefill tok/s':>14} {'decode tok/s':>13} "
          f"{'edgecut / it (prefill)':>23} {'edgecut / it (decode)':>22}")
    for name in names:
        p = statistics.median(r[name][0] for r in rounds)
        d = statistics.median(r[name][1] for r in rounds)
        if "edgecut" in names:
            # The median of the rounds' own ratios (each round's systems ran back to back).
            rp = statistics.median(r["edgecut"][0] / r[name][0] for r in rounds)
            rd = statistics.median(r["edgecut"][1] / r[name][1] for r in rounds)
            ratios = f"{rp:>22.2f}x {rd:>21.2f}x"
        else:
            ratios = f"{'-':>23} {'-':>22}"
        print(f"{name:<14} {p:>14.1f} {d:>13.1f} {ratios}")

if __name__ == "__main__":
    main()
