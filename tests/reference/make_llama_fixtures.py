#!/usr/bin/env python3
"""Records the Llama-family references edgecut's decoder tests compare against (run once; outputs
committed). Needs PyTorch, transformers and gguf (see requirements-fixtures.txt):

    ~/.cache/edgecut/refvenv/bin/python tests/reference/make_llama_fixtures.py

Writes:
  tests/fixtures/smollm2.json     SmolLM2-135M-Instruct.Q4_1.gguf loaded by transformers (its GGUF
                                  loader dequantizes every tensor to fp32): per prompt the rendered
                                  text, the token ids, the top-5 next-token logits and 32 greedy
                                  tokens (EOS does not stop them)
  tests/fixtures/llama-tiny/      a seeded, randomly initialised LlamaForCausalLM checkpoint (f16,
                                  untied output head, rope_theta 10000, GQA 4/2) with the tokenizer
                                  transformers builds from the SmolLM2 GGUF
  tests/fixtures/llama-tiny.json  its token ids and fp32 last-position logits (top 5) per prompt
"""
import json
import os
import shutil

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.environ.get("EDGECUT_MODELS", os.path.expanduser("~/.cache/edgecut/models"))
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
GREEDY = 32

PROMPTS = [
    {"name": "english", "text": "The capital of France is"},
    {"name": "story", "text": "Once upon a time, in a small village by the sea, there lived"},
    {"name": "code", "text": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n"},
    {"name": "rust", "text": "fn main() {\n    let v: Vec<u32> = (1..=10).collect();\n    println!(\"{:?}\", v"},
    {"name": "chinese", "text": "今天天气很好，我们去公园散步吧。北京是"},
    {"name": "numbers", "text": "In 1969, 3 astronauts flew 384,400 km; 2^10 = 1024 and 3.14159"},
    {"name": "emoji", "text": "I love pizza 🍕 and tacos 🌮! Café naïve Straße 😀 👍🏽"},
    {"name": "spaces", "text": "  leading spaces,\ttabs\n\n\nand   runs    of  spaces  "},
    {
        "name": "chat",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    },
    {
        "name": "chat-system",
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Name three primary colors."},
            {"role": "assistant", "content": "Red, yellow, blue."},
            {"role": "user", "content": "And secondary?"},
        ],
    },
]


def top5(logits):
    v, i = torch.topk(logits, 5)
    return {"ids": i.tolist(), "logits": [round(float(x), 5) for x in v]}


@torch.no_grad()
def greedy(model, ids, n):
    out = model(torch.tensor([ids]), use_cache=True)
    past, nxt, toks = out.past_key_values, int(out.logits[0, -1].argmax()), []
    for _ in range(n):
        toks.append(nxt)
        out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past, nxt = out.past_key_values, int(out.logits[0, -1].argmax())
    return toks


def smollm2():
    tok = AutoTokenizer.from_pretrained(MODELS, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(MODELS, gguf_file=GGUF, dtype=torch.float32)
    model.eval()
    cases = []
    for p in PROMPTS:
        case = {"name": p["name"]}
        if "messages" in p:
            case["messages"] = p["messages"]
            text = tok.apply_chat_template(p["messages"], tokenize=False, add_generation_prompt=True)
        else:
            text = p["text"]
        ids = tok(text, add_special_tokens=True)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        g = greedy(model, ids, GREEDY)
        case.update(
            text=text,
            ids=ids,
            top5=top5(logits),
            greedy=g,
            greedy_text=tok.decode(g),
        )
        cases.append(case)
        print(p["name"], len(ids), repr(case["greedy_text"][:60]))
    doc = {
        "source": f"transformers {__import__('transformers').__version__} loading {GGUF} (fp32)",
        "script": "tests/reference/make_llama_fixtures.py",
        "cases": cases,
    }
    with open(os.path.join(FIXTURES, "smollm2.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
    return tok


def llama_tiny(tok):
    torch.manual_seed(7)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=88,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = LlamaForCausalLM(cfg).eval()
    # Random init gives near-uniform logits; scale the weights up so the reference has clear winners.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.mul_(8.0)
    out_dir = os.path.join(FIXTURES, "llama-tiny")
    shutil.rmtree(out_dir, ignore_errors=True)
    model.to(torch.float16).save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    for extra in ["generation_config.json", "tokenizer_config.json", "special_tokens_map.json"]:
        path = os.path.join(out_dir, extra)
        if extra == "generation_config.json" and os.path.exists(path):
            os.remove(path)
    model = model.to(torch.float32)
    cases = []
    for p in PROMPTS:
        if "text" not in p:
            continue
        ids = tok(p["text"], add_special_tokens=True)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
        cases.append({
            "name": p["name"],
            "ids": ids,
            "top5": top5(logits[-1]),
            "first_top5": top5(logits[0]),
        })
    doc = {
        "source": "seeded random LlamaForCausalLM (fp32 outputs of the f16 checkpoint)",
        "script": "tests/reference/make_llama_fixtures.py",
        "cases": cases,
    }
    with open(os.path.join(FIXTURES, "llama-tiny.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    llama_tiny(smollm2())
