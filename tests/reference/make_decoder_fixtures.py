#!/usr/bin/env python3
"""Records the decoder-spec references: tiny seeded random Qwen2, Qwen3 and Llama 3 checkpoints
made by transformers, their logits, and llama.cpp's own GGUF conversions of them (run once;
outputs committed). Needs PyTorch, transformers, tokenizers and gguf (requirements-fixtures.txt),
and llama.cpp's converter from the llama-cpp-python sdist:

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/lcp
    tar xzf /tmp/lcp/llama_cpp_python-0.3.36.tar.gz -C /tmp/lcp
    LLAMA_CPP=/tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp \
        ~/.cache/edgecut/refvenv/bin/python tests/reference/make_decoder_fixtures.py

Writes, for each architecture ARCH in qwen2, qwen3, llama3:
  tests/fixtures/ARCH-tiny/            the checkpoint (f32 safetensors, config.json, a byte-level
                                       BPE tokenizer.json trained here with the architecture's own
                                       pre-tokenizer, tokenizer_config.json with a chat template)
  tests/fixtures/ARCH-tiny.llama-cpp.gguf
                                       llama.cpp's convert_hf_to_gguf.py of it (f32; the
                                       pre-tokenizer named as llama.cpp names the real model's:
                                       qwen2 or llama-bpe, since a tokenizer trained here has no
                                       hash llama.cpp knows)
  tests/fixtures/decoders-tiny.json    per architecture: a 16-token prompt, the logits at every
                                       position, 8 greedy steps with the KV cache (their tokens
                                       and logits); each twice: as transformers computes them
                                       ("plain") and with keys and values rounded to f16 where
                                       they are stored ("f16_kv": edgecut's KV cache keeps f16);
                                       and a chat turn rendered by transformers' template with
                                       its greedy reply (6 tokens, up to the end of turn)
"""
import json
import os
import shutil
import subprocess
import sys

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (AttentionInterface, LlamaConfig, LlamaForCausalLM,
                          PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM)
from transformers.integrations.sdpa_attention import sdpa_attention_forward

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
PROMPT_TOKENS = 16
GREEDY = 8

# The pre-tokenizer regexes of the real models' tokenizer.json files.
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+"
               r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
                r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA3_CHAT = ("{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + "
               "message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
               "{% endfor %}{% if add_generation_prompt %}"
               "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

CORPUS = [
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "Once upon a time, in a small village by the sea, there lived an old fisherman.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "In 1969, 3 astronauts flew 384,400 km to the Moon; 2^10 = 1024.",
    "What is the capital of France? Name three primary colors: red, yellow, blue.",
    "It's a model they've said we'll run, and I'd say you're right: it'll work.",
]
PROMPT = "Once upon a time, the capital of France was a small village by the sea."
CHAT = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Hello!"}]
CHAT_TOKENS = 6

ARCHS = {
    "qwen2": dict(split=QWEN2_SPLIT, pre="qwen2", special=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                  bos=None, eos="<|im_end|>", template=CHATML),
    "qwen3": dict(split=QWEN2_SPLIT, pre="qwen2", special=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                  bos=None, eos="<|im_end|>", template=CHATML),
    "llama3": dict(split=LLAMA3_SPLIT, pre="llama-bpe",
                   special=["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                            "<|end_header_id|>", "<|eot_id|>"],
                   bos="<|begin_of_text|>", eos="<|eot_id|>", template=LLAMA3_CHAT),
}


def tokenizer(a):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(a["split"]), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=a["special"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    return tok


def config(arch, vocab, tok):
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  rms_norm_eps=1e-6, bos_token_id=tok.token_to_id(ARCHS[arch]["bos"] or "<|endoftext|>"),
                  eos_token_id=tok.token_to_id(ARCHS[arch]["eos"]))
    if arch == "qwen2":
        # Biases on q, k and v; a tied head, as Qwen2.5-0.5B.
        return Qwen2ForCausalLM, Qwen2Config(**common, rope_theta=1_000_000.0, tie_word_embeddings=True,
                                             use_sliding_window=False)
    if arch == "qwen3":
        # An explicit head size (32, not hidden / heads = 16), q/k norms, an untied head.
        return Qwen3ForCausalLM, Qwen3Config(**common, head_dim=32, rope_theta=1_000_000.0,
                                             tie_word_embeddings=False, use_sliding_window=False)
    # Llama 3's rope scaling, with an original context short enough that a tiny head's
    # frequencies fall in all three bands (kept, smoothed, divided by the factor).
    return LlamaForCausalLM, LlamaConfig(
        **common, rope_theta=500_000.0, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 32})


def f16_kv_attention(module, query, key, value, attention_mask, **kw):
    """transformers' SDPA attention with keys and values rounded to f16, as edgecut stores them."""
    return sdpa_attention_forward(module, query, key.half().float(), value.half().float(),
                                  attention_mask, **kw)


AttentionInterface.register("f16_kv", f16_kv_attention)


@torch.no_grad()
def reference(model, ids):
    out = model(torch.tensor([ids]), use_cache=True)
    prompt = out.logits[0]
    past, nxt = out.past_key_values, int(out.logits[0, -1].argmax())
    toks, steps = [], []
    for _ in range(GREEDY):
        toks.append(nxt)
        out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        steps.append(out.logits[0, -1])
        nxt = int(out.logits[0, -1].argmax())
    r = lambda t: [round(float(x), 6) for x in t]
    return {"prompt_logits": [r(row) for row in prompt], "greedy": toks,
            "step_logits": [r(row) for row in steps]}


def llama_cpp_gguf(arch, out_dir, pre):
    llama_cpp = os.environ["LLAMA_CPP"]
    gguf_py = os.path.join(llama_cpp, "gguf-py")
    out = os.path.join(FIXTURES, f"{arch}-tiny.llama-cpp.gguf")
    # A tokenizer trained here has no hash in llama.cpp's table: name the real model's
    # pre-tokenizer, whose regex it was trained with.
    code = (f"import sys; sys.path.insert(0, {gguf_py!r}); sys.path.insert(0, {llama_cpp!r}); "
            "import convert_hf_to_gguf as c; import conversion.base as base; "
            f"base.TextModel.get_vocab_base_pre = lambda self, tokenizer: {pre!r}; "
            f"sys.argv = ['convert', {out_dir!r}, '--outtype', 'f32', '--outfile', {out!r}]; c.main()")
    subprocess.run([sys.executable, "-c", code], check=True)


def main():
    doc = {"source": f"transformers {__import__('transformers').__version__}, seeded random "
                     "checkpoints (f32)",
           "script": "tests/reference/make_decoder_fixtures.py", "models": {}}
    for seed, (arch, a) in enumerate(ARCHS.items()):
        torch.manual_seed(100 + seed)
        tok = tokenizer(a)
        cls, cfg = config(arch, tok.get_vocab_size(), tok)
        model = cls(cfg).eval()
        # Random init gives near-uniform logits; scale the weights up so greedy choices have
        # clear winners, and norms away from 1 so a missed norm shows.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.copy_(1.0 + 0.3 * torch.randn_like(p))
                else:
                    p.mul_(8.0)
        out_dir = os.path.join(FIXTURES, f"{arch}-tiny")
        shutil.rmtree(out_dir, ignore_errors=True)
        model.save_pretrained(out_dir, safe_serialization=True)
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=a["bos"], eos_token=a["eos"],
                                       chat_template=a["template"])
        fast.save_pretrained(out_dir)
        for extra in ["generation_config.json", "special_tokens_map.json"]:
            if os.path.exists(os.path.join(out_dir, extra)):
                os.remove(os.path.join(out_dir, extra))
        ids = tok.encode(PROMPT).ids
        if a["bos"]:
            ids = [tok.token_to_id(a["bos"])] + ids
            entry_bos = tok.token_to_id(a["bos"])
        else:
            entry_bos = None
        ids = ids[:PROMPT_TOKENS]
        assert len(ids) == PROMPT_TOKENS, (arch, len(ids))
        entry = {"text": PROMPT, "ids": ids, "bos": entry_bos, "vocab": tok.get_vocab_size()}
        entry["plain"] = reference(model, ids)
        model.config._attn_implementation = "f16_kv"
        entry["f16_kv"] = reference(model, ids)
        # A chat turn through transformers' own rendering of the template (keys and values at
        # f16 as above): what edgecut's chat paths must reply, up to the end of turn.
        chat_text = fast.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
        chat_ids = fast(chat_text, add_special_tokens=False)["input_ids"]
        reply = reference(model, list(chat_ids))["greedy"][:CHAT_TOKENS]
        eos = tok.token_to_id(a["eos"])
        if eos in reply:
            reply = reply[:reply.index(eos)]
        entry["chat"] = {"messages": CHAT, "rendered": chat_text, "ids": list(chat_ids), "greedy": reply,
                         "text": tok.decode(reply)}
        doc["models"][arch] = entry
        print(arch, "vocab", tok.get_vocab_size(), "greedy", entry["f16_kv"]["greedy"])
        llama_cpp_gguf(arch, out_dir, a["pre"])
    with open(os.path.join(FIXTURES, "decoders-tiny.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f)


if __name__ == "__main__":
    main()
