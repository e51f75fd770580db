"""The GPU check's peer: PyTorch on the shapes edgecut runs, on the same machine.

    python peer.py DEVICE   (cuda or cpu)

Prints `key value` lines: MiniLM-shaped encoder sentences/s at batch 1, 32 and 128 x 128
tokens (fp32, and fp16 on CUDA) and a SmolLM2-shaped decoder's prefill (128 tokens) and decode
(greedy, KV cache) tokens/s. Random weights: speed only. Needs torch alone (no transformers).
"""

import sys
import time

import torch
import torch.nn.functional as F

dev = sys.argv[1] if len(sys.argv) > 1 else "cpu"
torch.manual_seed(0)
quick = dev == "cpu"


def timed(fn, reps):
    fn()
    if dev == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    if dev == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def encoder(dtype):
    layer = torch.nn.TransformerEncoderLayer(
        384, 12, 1536, activation="gelu", batch_first=True, norm_first=False
    )
    enc = torch.nn.TransformerEncoder(layer, 6, enable_nested_tensor=False)
    return enc.to(dev, dtype).eval()


class Llama(torch.nn.Module):
    """SmolLM2-135M's shapes: 30 blocks of 576, 9 heads over 3 KV heads of 64, ffn 1536."""

    def __init__(s, layers=30, h=576, heads=9, kvh=3, ffn=1536, vocab=49152):
        super().__init__()
        s.h, s.heads, s.kvh, s.hd = h, heads, kvh, h // heads
        lin = lambda i, o: torch.nn.Linear(i, o, bias=False)
        s.emb = torch.nn.Embedding(vocab, h)
        s.blocks = torch.nn.ModuleList(
            torch.nn.ModuleDict(
                dict(
                    q=lin(h, h), k=lin(h, kvh * s.hd), v=lin(h, kvh * s.hd), o=lin(h, h),
                    gate=lin(h, ffn), up=lin(h, ffn), down=lin(ffn, h),
                    n1=torch.nn.RMSNorm(h), n2=torch.nn.RMSNorm(h),
                )
            )
            for _ in range(layers)
        )
        s.norm, s.out = torch.nn.RMSNorm(h), lin(h, vocab)

    def forward(s, ids, cache):
        x = s.emb(ids)
        b, t, _ = x.shape
        for i, blk in enumerate(s.blocks):
            y = blk["n1"](x)
            q = blk["q"](y).view(b, t, s.heads, s.hd).transpose(1, 2)
            k = blk["k"](y).view(b, t, s.kvh, s.hd).transpose(1, 2)
            v = blk["v"](y).view(b, t, s.kvh, s.hd).transpose(1, 2)
            if cache[i] is not None:
                k, v = torch.cat([cache[i][0], k], 2), torch.cat([cache[i][1], v], 2)
            cache[i] = (k, v)
            a = F.scaled_dot_product_attention(
                q, k, v, is_causal=cache[i][0].shape[2] == t, enable_gqa=True
            )
            x = x + blk["o"](a.transpose(1, 2).reshape(b, t, s.h))
            y = blk["n2"](x)
            x = x + blk["down"](F.silu(blk["gate"](y)) * blk["up"](y))
        return s.out(s.norm(x[:, -1:]))


with torch.inference_mode():
    for dtype, tag in [(torch.float32, "fp32")] + ([(torch.float16, "fp16")] if dev == "cuda" else []):
        enc = encoder(dtype)
        for batch in [1, 32, 128]:
            if quick and batch == 128:
                continue
            x = torch.randn(batch, 128, 384, device=dev, dtype=dtype)
            s = timed(lambda: enc(x), 2 if quick else 10)
            print(f"minilm_b{batch}_{tag} {batch / s:.1f}")
        m = Llama().to(dev, dtype).eval()
        prompt = torch.randint(0, 49152, (1, 128), device=dev)

        def prefill():
            return m(prompt, [None] * 30)

        s = timed(prefill, 1 if quick else 5)
        print(f"prefill_{tag} {128 / s:.1f}")

        def decode(n=16 if quick else 64):
            cache = [None] * 30
            tok = m(prompt, cache).argmax(-1)
            if dev == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(n):
                tok = m(tok, cache).argmax(-1)
            if dev == "cuda":
                torch.cuda.synchronize()
            return n / (time.perf_counter() - t)

        decode()
        print(f"decode_{tag} {decode():.1f}")
