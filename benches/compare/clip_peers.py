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


TEXTS = ["a photo of a cat", "an astronaut", "a cup of coffee on a table", "a rocket", "coins", ""]


def fidelity(ggufs, q_onnx):
    """Worst cosines to PyTorch fp32: edgecut's F32 and Q8_0 conversions (through `edgecut embed
    --image` of the pictures as PNG files, and of the texts) on the five photographs and two
    synthetic pictures (noise, a gradient) and six texts; ONNX Runtime INT8 on the pictures'
    tensors."""
    import onnxruntime as ort
    import torch
    from PIL import Image
    from skimage import data
    from tokenizers import Tokenizer
    from transformers import CLIPImageProcessorPil, CLIPModel

    model = CLIPModel.from_pretrained(CACHE).eval()
    rng = np.random.RandomState(3)
    y, x = np.mgrid[0:180, 0:260]
    pictures = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.camera(),
                rng.randint(0, 256, (200, 300, 3)).astype(np.uint8),
                np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)]
    ims = [Image.fromarray(p) for p in pictures]
    px = CLIPImageProcessorPil()(images=ims, return_tensors="np")["pixel_values"].astype(np.float32)
    tok = Tokenizer.from_file(os.path.join(CACHE, "tokenizer.json"))
    norm = lambda v: torch.nn.functional.normalize(v.pooler_output if hasattr(v, "pooler_output") else v, dim=-1).numpy()
    with torch.no_grad():
        ref_i = norm(model.get_image_features(pixel_values=torch.from_numpy(px)))
        ref_t = np.concatenate([norm(model.get_text_features(input_ids=torch.tensor([tok.encode(t).ids])))
                                for t in TEXTS])
    s = ort.InferenceSession(q_onnx, providers=["CPUExecutionProvider"])
    o = s.run(None, {"pixel_values": px})[0]
    tmp = tempfile.mkdtemp()
    args = []
    for i, im in enumerate(ims):
        f = os.path.join(tmp, f"{i}.png")
        im.save(f)
        args += ["--image", f]
    cos = lambda a, b: round(float((a * b).sum(-1).min()), 6)
    out = {"onnxruntime-int8 pictures": cos(o, ref_i)}
    for kind, gguf in ggufs.items():
        r = subprocess.run([EDGECUT, "embed", "-m", gguf, "--device", "cpu", *args, "--", *TEXTS],
                           check=True, capture_output=True, text=True)
        e = np.array(json.loads(r.stdout))
        out[f"edgecut {kind} pictures"] = cos(e[:len(ims)], ref_i)
        out[f"edgecut {kind} texts"] = cos(e[len(ims):], ref_t)
    shutil.rmtree(tmp)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--fidelity-only", action="store_true")
    a = ap.parse_args()
    if a.fidelity_only:
        checkpoint()
        print(json.dumps(fidelity({"q8_0": convert("q8_0"), "f32": convert("f32")}, onnx_int8()), indent=1))
        return
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
                      "cosine_to_pytorch_min": fidelity({"q8_0": q8, "f32": convert("f32")}, q)}, indent=1))


if __name__ == "__main__":
    main()
