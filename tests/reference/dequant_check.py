#!/usr/bin/env python3
"""gguf-py's numpy `dequantize` (an implementation independent of edgecut's and ggml's C) as the
reference for edgecut's block decoders.

    python dequant_check.py random DIR N SEED   writes, for each type edgecut reads, DIR/T.blocks
                                                (N random blocks, every byte random: NaN and
                                                infinite scales included) and DIR/T.f32 (their
                                                values, little-endian f32)
    python dequant_check.py file MODEL.gguf     prints JSON {tensor name: sha256 of its values as
                                                little-endian f32, every NaN as 0x7fc00000}
"""
import hashlib
import json
import os
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

TYPES = ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K",
         "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]


def canonical(values: np.ndarray) -> bytes:
    bits = values.astype("<f4").view("<u4").copy()
    bits[np.isnan(values)] = 0x7FC00000
    return bits.tobytes()


def random_blocks(out_dir: str, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    os.makedirs(out_dir, exist_ok=True)
    for name in TYPES:
        qtype = T[name]
        block_len, block_bytes = GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(n, block_bytes), dtype=np.uint8)
        with np.errstate(all="ignore"):
            values = dequantize(raw, qtype).reshape(-1).astype(np.float32)
        assert values.size == n * block_len, name
        with open(os.path.join(out_dir, f"{name}.blocks"), "wb") as f:
            f.write(raw.tobytes())
        with open(os.path.join(out_dir, f"{name}.f32"), "wb") as f:
            f.write(values.astype("<f4").tobytes())


def file_hashes(path: str) -> None:
    r = GGUFReader(path)
    out = {}
    for t in r.tensors:
        with np.errstate(all="ignore"):
            values = dequantize(t.data, t.tensor_type).reshape(-1)
        out[t.name] = hashlib.sha256(canonical(values)).hexdigest()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    if sys.argv[1] == "random":
        random_blocks(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "file":
        file_hashes(sys.argv[2])
    else:
        sys.exit(f"unknown mode {sys.argv[1]!r}")
