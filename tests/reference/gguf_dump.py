#!/usr/bin/env python3
"""Dumps a GGUF file as llama.cpp's own reader (the `gguf` PyPI package) sees it, as JSON.

Used by edgecut's tests to check that files edgecut writes are read the same way by llama.cpp:
    python gguf_dump.py model.gguf > dump.json
Output: {"metadata": {key: {"type": name, "elem": name|None, "value": value}},
         "tensors": [{"name", "type", "dims" (innermost first), "n_bytes", "offset"}]}
"""
import json
import sys

from gguf import GGUFReader, GGUFValueType


def main(path: str) -> None:
    r = GGUFReader(path)
    meta = {}
    for key, field in r.fields.items():
        if key.startswith("GGUF."):
            continue  # the reader's pseudo-keys for the header counts
        t = field.types[0]
        elem = field.types[1].name if t == GGUFValueType.ARRAY and len(field.types) > 1 else None
        meta[key] = {"type": t.name, "elem": elem, "value": field.contents()}
    tensors = [
        {
            "name": t.name,
            "type": t.tensor_type.name,
            "dims": [int(d) for d in t.shape],
            "n_bytes": int(t.n_bytes),
            "offset": int(t.data_offset),
        }
        for t in r.tensors
    ]
    json.dump({"metadata": meta, "tensors": tensors}, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
