#!/usr/bin/env python3
"""MiniLM's fidelity under int8 schemes for its linear layers, simulated in PyTorch (issue 22:
which scheme an AMX kernel may use). Each linear layer's weights and inputs are quantized and
dequantized as the scheme says; the mean-pooled embeddings of the fixture texts
(tests/fixtures/minilm.json) are compared with fp32 by cosine. "Outliers": each row's columns
above 4.2 x its mean |x| (at most k/16) stay in f32, as edgecut's Int8Outliers does.

    ~/.cache/edgecut/refvenv/bin/python benches/compare/int8_schemes.py
"""
import copy
import json
import os

import torch
import torch.nn.functional as F
from transformers import AutoModel

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.environ.get("EDGECUT_MODELS", os.path.expanduser("~/.cache/edgecut/models"))
MODEL = os.path.join(MODELS, "all-MiniLM-L6-v2")
m = AutoModel.from_pretrained(MODEL).eval()
cases = json.load(open(ROOT + '/tests/fixtures/minilm.json'))['cases']
def embed(model):
    out = []
    with torch.no_grad():
        for c in cases:
            ids = torch.tensor([c['ids']]); am = torch.ones_like(ids)
            h = model(input_ids=ids, attention_mask=am).last_hidden_state
            e = h.mean(1); out.append(F.normalize(e, dim=-1)[0])
    return torch.stack(out)
ref = embed(m)
def q_sym(x, dim_groups):
    # symmetric int8 over groups: returns dequantized tensor
    amax = dim_groups(x.abs()).clamp(min=1e-12); s = amax / 127.0
    return (x / s).round().clamp(-127, 127) * s
def weights_per_channel(w): return q_sym(w, lambda a: a.amax(1, keepdim=True))
def weights_q8_0(w):
    o, k = w.shape; wb = w.reshape(o, k // 32, 32)
    return q_sym(wb, lambda a: a.amax(2, keepdim=True)).reshape(o, k)
def acts_per_row(x): return q_sym(x, lambda a: a.amax(-1, keepdim=True))
def acts_per_32(x):
    sh = x.shape; xb = x.reshape(*sh[:-1], sh[-1] // 32, 32)
    return q_sym(xb, lambda a: a.amax(-1, keepdim=True)).reshape(sh)
def run(wq, aq, name):
    mm = copy.deepcopy(m)
    for mod in mm.modules():
        if isinstance(mod, torch.nn.Linear):
            mod.weight.data = wq(mod.weight.data)
            f = mod.forward
            mod.forward = (lambda f: (lambda x: f(aq(x))))(f)
    e = embed(mm); cos = (e * ref).sum(-1)
    print(f"{name:55s} min cos {cos.min():.5f} mean {cos.mean():.5f}")
run(weights_q8_0, acts_per_32, "Q8_0 weights, activations per 32")
run(weights_per_channel, acts_per_row, "weights per channel, activations per token")
run(weights_q8_0, acts_per_row, "Q8_0 weights, activations per token")
run(weights_per_channel, acts_per_32, "weights per channel, activations per 32")
# With outlier columns (|x| > 4.2 x row mean |x|, at most k/16) kept in f32, on every linear.
def with_outliers(aq):
    def f(x):
        k = x.shape[-1]
        lim = x.abs().mean(-1, keepdim=True) * 4.2
        mask = x.abs() > lim
        # at most k/16 per row: keep the largest
        if mask.sum(-1).max() > k // 16:
            thr = x.abs().topk(k // 16, dim=-1).values[..., -1:]
            mask = mask & (x.abs() >= thr)
        inl = torch.where(mask, torch.zeros_like(x), x)
        return aq(inl) + torch.where(mask, x, torch.zeros_like(x))
    return f
run(weights_q8_0, with_outliers(acts_per_32), "Q8_0 weights, per 32 + outliers (edgecut's scheme)")
run(weights_per_channel, with_outliers(acts_per_row), "weights per channel, per token + outliers")
run(weights_q8_0, with_outliers(acts_per_row), "Q8_0 weights, per token + outliers")
def weights_per(g):
    def f(w):
        o, k = w.shape
        if k % g: return weights_per_channel(w)
        wb = w.reshape(o, k // g, g)
        return q_sym(wb, lambda a: a.amax(2, keepdim=True)).reshape(o, k)
    return f
for g in [64, 128, 384]:
    run(weights_per(g), with_outliers(acts_per_row), f"weights per {g}, per token + outliers")
