"""The peer of guided_cost.py: llama.cpp (llama-cpp-python) decoding the same prompt with the
same long schema (its JSON-schema-to-GBNF grammar) against free decoding with end-of-sequence
masked, greedy, 256 tokens, paired and alternated; decode rate = tokens after the first / time
from the first streamed chunk to the last.

Usage: guided_cost_llamacpp.py MODEL.gguf [RUNS] [THREADS]
"""

import json
import statistics
import sys
import time

import llama_cpp

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from guided_cost import LONG, PROMPT  # noqa: E402


def main():
    path = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    llm = llama_cpp.Llama(path, n_ctx=1024, n_threads=threads, verbose=False)
    eos = llm.token_eos()
    eot = [t for t in (eos, llm.tokenize(b"<|im_end|>", add_bos=False, special=True)[0])]

    def no_eos(_ids, logits):
        for t in eot:
            logits[t] = -float("inf")
        return logits

    def run(guided):
        kw = dict(messages=[{"role": "user", "content": PROMPT}], max_tokens=256,
                  temperature=0, stream=True)
        if guided:
            kw["response_format"] = {"type": "json_object", "schema": LONG}
        else:
            kw["logits_processor"] = llama_cpp.LogitsProcessorList([no_eos])
        first = last = None
        n = 0
        for c in llm.create_chat_completion(**kw):
            if c["choices"][0]["delta"].get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
                n += 1
        return (n - 1) / (last - first)

    run(True)
    rates = {"free": [], "guided": []}
    for _ in range(runs):
        rates["free"].append(run(False))
        rates["guided"].append(run(True))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(json.dumps({"decode_tokens_per_s": {k: round(v, 1) for k, v in med.items()},
                      "guided_over_free": round(med["guided"] / med["free"], 3)}))


if __name__ == "__main__":
    main()
