#!/usr/bin/env python3
"""CLIP's image tower at clip-vit-base-patch32's dimensions: edgecut against PyTorch fp32 and
ONNX Runtime INT8 of the same seeded random checkpoint, images/s at batch 1 and 16, 2 threads.

The checkpoint: transformers' `CLIPConfig()` defaults are ViT-B/32's (image tower 768 wide, 12
blocks, patches of 32 on 224x224; projection 512), seeded, with the tiny fixture's vocabulary on
the text side (the text tower is not timed). edgecut converts it (Q8_0, and F32 for fidelity);
PyTorch runs `get_image_features` in fp32; ONNX Runtime runs the same graph exported and
quantized dynamically to INT8 (`quantize_dynamic`, QInt8 weights, as benches/compare/compare.py
does for MiniLM). Every system gets the same preprocessed pixel tensors (CLIPImageProcessor on
scikit-image's sample photographs); edgecut's time is `edgecut bench` (a separate process, pixel
tensors in, normalised vectors out). Each system runs in turn for --rounds rounds and keeps its
best round (other guests' load comes and goes). Fidelity: cosine of each system's vectors to
PyTorch's on the photographs.

    ~/.cache/edgecut/refvenv/bin/python benches/compare/clip_peers.py [--rounds 3] [--threads 2]

Needs torch, transformers, onnx, onnxruntime, pillow and scikit-image (the refvenv), and
target/release/edgecut.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.expanduser("~/.cache/edgecut/models/clip-b32-random")
EDGECUT = os.path.join(ROOT, "target/release/edgecut")
BATCHES = (1, 16)


def checkpoint():
    """The seeded ViT-B/32-sized checkpoint, made once."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    if os.path.exists(os.path.join(CACHE, "model.safetensors")):
        return
    os.makedirs(CACHE, exist_ok=True)
    tiny = os.path.join(ROOT, "tests/fixtures/clip-tiny")
    with open(os.path.join(tiny, "config.json")) as f:
        tc = json.load(f)["text_config"]
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(vocab_size=tc["vocab_size"], bos_token_id=tc["bos_token_id"],
                                      eos_token_id=tc["eos_token_id"], pad_token_id=tc["pad_token_id"]))
    CLIPModel(cfg).eval().save_pretrained(CACHE, safe_serialization=True)
    shutil.copy(os.path.join(tiny, "tokenizer.json"), CACHE)
    CLIPImageProcessorPil().save_pretrained(CACHE)


def pixels(n):
    """n preprocessed 224x224 tensors from scikit-image's photographs (repeated as needed)."""
    from PIL import Image
    from skimage import data
    from transformers import CLIPImageProcessorPil

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.camera()]
    proc = CLIPImageProcessorPil()
    out = proc(images=[Image.fromarray(photos[i % len(photos)]) for i in range(n)], return_tensors="np")
    return out["pixel_values"].astype(np.float32)


def convert(kind):
    out = os.path.join(CACHE, f"clip-b32.{kind}.gguf")
    if not os.path.exists(out):
        subprocess.run([EDGECUT, "convert", CACHE, "-o", out, "--type", kind], check=True,
                       stdout=subprocess.DEVNULL)
    return out


def onnx_int8():
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import CLIPModel

    fp = os.path.join(CACHE, "vision.onnx")
    q = os.path.join(CACHE, "vision.int8.onnx")
    if os.path.exists(q):
        return q
    model = CLIPModel.from_pretrained(CACHE).eval()

    class Vision(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            v = self.m.get_image_features(pixel_values=pixel_values)
            v = v.pooler_output if hasattr(v, "pooler_output") else v
            return torch.nn.functional.normalize(v, dim=-1)

    torch.onnx.export(Vision(model), (torch.zeros(1, 3, 224, 224),), fp, input_names=["pixel_values"],
                      output_names=["embeds"], dynamic_axes={"pixel_values": {0: "b"}, "embeds": {0: "b"}},
                      opset_version=17, dynamo=False)
    quantize_dynamic(fp, q, weight_type=QuantType.QInt8)
    return q


def best_ms(fn, iters):
    for _ in range(2):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2] * 1e3


def torch_round(px, threads, iters):
    import torch
    from transformers import CLIPModel

    torch.set_num_threads(threads)
    model = CLIPModel.from_pretrained(CACHE).eval()
    out = {}
    with torch.no_grad():
        for b in BATCHES:
            x = torch.from_numpy(px[:b])
            out[b] = best_ms(lambda: model.get_image_features(pixel_values=x), iters) / b
    return out


def ort_round(px, threads, iters, path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return {b: best_ms(lambda: s.run(None, {"pixel_values": px[:b]}), iters) / b for b in BATCHES}


def edgecut_round(threads, iters, gguf):
    r = subprocess.run([EDGECUT, "bench", "-m", gguf, "--device", "cpu", "--threads", str(threads),
                        "--batch", ",".join(map(str, BATCHES)), "--batch-size", str(max(BATCHES)),
                        "--iters", str(iters)], check=True, capture_output=True, text=True)
    out = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\s*(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", line)
        if m:
            out[int(m.group(1))] = float(m.group(2))
    return out


def fidelity(px, gguf, q_onnx):
    """Cosines to PyTorch fp32 on the photographs: edgecut (through `edgecut embed --image` of
    the same pictures as PNG files) and ONNX Runtime INT8 (the same tensors)."""
    import onnxruntime as ort
    import torch
    from PIL import Image
    from skimage import data
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(CACHE).eval()
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.camera()]
    x = pixels(len(photos))
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=torch.from_numpy(x))
        ref = ref.pooler_output if hasattr(ref, "pooler_output") else ref
        ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
    s = ort.InferenceSession(q_onnx, providers=["CPUExecutionProvider"])
    o = s.run(None, {"pixel_values": x})[0]
    tmp = tempfile.mkdtemp()
    files = []
    for i, p in enumerate(photos):
        files.append(os.path.join(tmp, f"{i}.png"))
        Image.fromarray(p).save(files[-1])
    args = [EDGECUT, "embed", "-m", gguf, "--device", "cpu"]
    for f in files:
        args += ["--image", f]
    e = np.array(json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout))
    shutil.rmtree(tmp)
    cos = lambda a, b: float((a * b).sum(-1).min() / 1.0)
    return {"edgecut": cos(e, ref), "onnxruntime-int8": cos(o, ref)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    a = ap.parse_args()
    checkpoint()
    q8 = convert("q8_0")
    q = onnx_int8()
    px = pixels(max(BATCHES))
    best = {"edgecut": {}, "pytorch-fp32": {}, "onnxruntime-int8": {}}
    for r in range(a.rounds):
        rounds = {
            "edgecut": edgecut_round(a.threads, a.iters, q8),
            "pytorch-fp32": torch_round(px, a.threads, a.iters),
            "onnxruntime-int8": ort_round(px, a.threads, a.iters, q),
        }
        for k, v in rounds.items():
            for b, ms in v.items():
                best[k][b] = min(best[k].get(b, 1e9), ms)
        print(f"round {r + 1}: " + "; ".join(
            f"{k} " + ", ".join(f"b{b} {1e3 / ms:.2f} img/s" for b, ms in sorted(v.items()))
            for k, v in rounds.items()), flush=True)
    print(json.dumps({"images_per_s": {k: {b: round(1e3 / ms, 2) for b, ms in v.items()}
                                       for k, v in best.items()},
                      "edgecut_over_ort_int8": {b: round(best["onnxruntime-int8"][b] / best["edgecut"][b], 3)
                                                for b in BATCHES},
                      "cosine_to_pytorch_min": fidelity(px, q8, q)}, indent=1))


if __name__ == "__main__":
    main()
