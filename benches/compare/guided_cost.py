"""What constrained decoding costs: decode tokens/s of one model under a JSON-schema mask
against the same model generating freely, in the same server, paired and alternated; and the
compile time of each schema (the CLI's `[constraint compiled in ...]`).

Usage: guided_cost.py EDGECUT_BINARY MODEL.gguf [RUNS]

Both arms are greedy with 256 tokens: the constrained one under a schema that forces a long
reply of many small fields (every token's mask computed, structure and values alike), the free
one with `ignore_eos` so it runs the same number of tokens. Decode rate = tokens after the
first / time from the first streamed chunk to the last. Prints a JSON summary.
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

PROMPT = "List people with their age, city and favourite colour."
LONG = {
    "type": "array", "minItems": 60, "items": {
        "type": "object", "additionalProperties": False,
        "required": ["name", "age", "city", "colour"],
        "properties": {
            "name": {"type": "string", "maxLength": 16},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "city": {"enum": ["Paris", "London", "Berlin", "Madrid", "Rome"]},
            "colour": {"type": "string", "maxLength": 10}}}}
SCHEMAS = {
    "person": {"type": "object", "required": ["name", "age"], "properties": {
        "name": {"type": "string"}, "age": {"type": "integer"}}},
    "many_small_fields": LONG,
    "nested_with_refs": {"$defs": {"addr": {"type": "object", "properties": {
        "street": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
        "required": ["street", "zip"]}}, "type": "object", "properties": {
        "home": {"$ref": "#/$defs/addr"}, "work": {"$ref": "#/$defs/addr"},
        "tags": {"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 5}},
        "required": ["home"]},
}


def stream(url, model, body):
    body = dict(body, model=model, stream=True, max_tokens=256, temperature=0,
                messages=[{"role": "user", "content": PROMPT}])
    req = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    first = last = None
    chunks = 0
    text = ""
    with urllib.request.urlopen(req, timeout=300) as r:
        for line in r:
            if not line.startswith(b"data: {"):
                continue
            c = json.loads(line[6:])
            d = c["choices"][0]["delta"] if c["choices"] else {}
            if d.get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
                chunks += 1
                text += d["content"]
    return chunks, last - first, text


def main():
    binary, path = sys.argv[1], sys.argv[2]
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    compile_ms = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, schema in SCHEMAS.items():
            f = os.path.join(tmp, name + ".json")
            json.dump(schema, open(f, "w"))
            out = subprocess.run([binary, "generate", "-m", path, "-n", "1", "--json-schema", f,
                                  "--chat", "Hi"], capture_output=True, text=True, check=True)
            compile_ms[name] = float(re.search(r"compiled in ([0-9.]+) ms", out.stderr)[1])
    server = subprocess.Popen([binary, "serve", "--http", "127.0.0.1:0", "--device", "cpu",
                               "-m", path], stderr=subprocess.PIPE, text=True)
    try:
        url = None
        for line in server.stderr:
            m = re.search(r"HTTP API on (http://\S+)", line)
            url = url or (m and m[1])
            if "ready" in line:
                break
        model = os.path.basename(path)[:-len(".gguf")]
        fmt = {"type": "json_schema", "json_schema": {"name": "people", "schema": LONG}}
        arms = {"free": {"ignore_eos": True}, "guided": {"response_format": fmt}}
        stream(url, model, arms["guided"])  # warm up (the vocabulary is read once)
        rates = {k: [] for k in arms}
        for _ in range(runs):
            for k, body in arms.items():
                n, secs, text = stream(url, model, body)
                rates[k].append((n - 1) / secs)
                if k == "guided":
                    assert text.startswith("[{"), text[:80]
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(json.dumps({
            "decode_tokens_per_s": {k: round(v, 1) for k, v in med.items()},
            "runs": {k: [round(x, 1) for x in v] for k, v in rates.items()},
            "guided_over_free": round(med["guided"] / med["free"], 3),
            "compile_ms": compile_ms,
        }, indent=1))
    finally:
        server.kill()


if __name__ == "__main__":
    main()
