"""MiniLM fidelity for the GPU check: `edgecut embed` on every fixture text of
tests/fixtures/minilm.json on one device, against the fixture's PyTorch fp32 embeddings.

    python fidelity.py EDGECUT MODEL DEVICE FIXTURE

Prints `min_cosine VALUE`, or `error MESSAGE` when the device cannot run (exit 0 either way:
the table reports it). Standard library only.
"""

import json
import math
import subprocess
import sys

exe, model, device, fixture = sys.argv[1:5]
cases = json.load(open(fixture))["cases"]
worst = 1.0
for max_len in sorted({c["max_len"] for c in cases}):
    group = [c for c in cases if c["max_len"] == max_len]
    r = subprocess.run(
        [exe, "embed", "-m", model, "--device", device, "--max-seq-len", str(max_len),
         "--f32-attention", "--format", "json", "--"] + [c["text"] for c in group],
        capture_output=True, text=True,
    )
    if r.returncode != 0:
        print("error", r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode)
        sys.exit(0)
    for v, c in zip(json.loads(r.stdout), group):
        w = c["embedding"]
        dot = sum(a * b for a, b in zip(v, w))
        cos = dot / math.sqrt(sum(a * a for a in v) * sum(b * b for b in w))
        worst = min(worst, cos)
print(f"min_cosine {worst:.5f}")
