#!/usr/bin/env python3
"""Records the Gemma 3 references (run once; outputs committed): a tiny seeded random Gemma 3
checkpoint made by transformers with its logits and llama.cpp's own GGUF conversion of it, and
transformers' fp32 references for the real Gemma 3 270M Q4_K_M GGUF. Needs PyTorch, transformers
and gguf (requirements-fixtures.txt), sentencepiece and llama-cpp-python 0.3.36, and llama.cpp's
converter from the llama-cpp-python sdist:

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d /tmp/lcp
    tar xzf /tmp/lcp/llama_cpp_python-0.3.36.tar.gz -C /tmp/lcp
    LLAMA_CPP=/tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp \
        ~/.cache/edgecut/refvenv/bin/python tests/reference/make_gemma_fixtures.py

(LLAMA_CPP defaults to that path; EDGECUT_MODELS, default ~/.cache/edgecut/models, must hold
gemma-3-270m-q4_k_m.gguf.)

Writes:
  tests/fixtures/gemma3-tiny/          a seeded random Gemma3ForCausalLM (f32 safetensors,
                                       config.json): hidden 64, 4 heads, 1 KV head, head_dim 32
                                       (not hidden / heads = 16), query_pre_attn_scalar = head_dim
                                       (GGUF has no key for it; llama.cpp scales by head_dim),
                                       intermediate 128, 8 layers, layer i sliding iff i % 6 < 5
                                       (llama.cpp's set_swa_pattern(6): layer 5 is the only full
                                       one), sliding window 8, rope theta 1e6 on full layers and
                                       1e4 on sliding ones (transformers 5: rope_parameters per
                                       layer type), GELU (tanh), no softcapping, tied head, every
                                       norm weight random (Gemma's norms scale by 1 + w); a
                                       SentencePiece BPE tokenizer.model trained here (512 pieces,
                                       byte fallback, no dummy prefix; <pad> <eos> <bos> <unk>
                                       <mask> <start_of_turn> <end_of_turn> as control pieces at
                                       0..6, "\n" and "\n\n" as user-defined ones at 7, 8, typed as
                                       Gemma 3's own tokenizer types them), tokenizer_config.json
                                       with Gemma 3's chat template inline
  tests/fixtures/gemma3-tiny.llama-cpp.gguf
                                       llama.cpp's convert_hf_to_gguf.py of it (f32); every
                                       *norm.weight is stored as 1 + w there (attn_norm,
                                       post_attention_norm, ffn_norm, post_ffw_norm, attn_q_norm,
                                       attn_k_norm, output_norm), all else bit for bit (checked)
  tests/fixtures/gemma3-tiny.json      a 20-token prompt (BOS first): the logits at every position
                                       and 8 greedy steps with the KV cache (their tokens and
                                       logits); a 300-token prompt (BOS, then seeded random
                                       ordinary pieces) whose positions pass window + 256, where
                                       edgecut's ring cache for sliding layers wraps: the last
                                       position's logits and 8 greedy steps; each twice: as
                                       transformers computes them ("plain") and with keys and
                                       values rounded to f16 where they are stored ("f16_kv":
                                       edgecut's KV cache keeps f16); a chat turn rendered by
                                       transformers' template with its greedy reply (6 tokens, up
                                       to the end of turn); the config; the GGUF's keys; and, for
                                       information, how far llama.cpp's run of the GGUF (f16 KV
                                       cache) is from "f16_kv"
  tests/fixtures/gemma3-270m.json      gemma-3-270m-q4_k_m.gguf loaded by transformers (its GGUF
                                       loader dequantizes every tensor to f32), token ids from
                                       llama.cpp (the tokenization reference): per prompt (10)
                                       the first step's logits in summary (the top 256; the values
                                       at 4096 seeded random vocabulary indices, recorded once;
                                       max, mean and standard deviation over the whole
                                       vocabulary), 32 greedy tokens (EOS does not stop them) and
                                       the margin each won by; for information, llama.cpp's own
                                       32 greedy tokens, from the file as is ("llama_cpp") and
                                       from llama.cpp's own F32 dequantization of it with an F32
                                       KV cache ("llama_cpp_f32"), with their common prefix with
                                       transformers' and the largest first-step logit difference;
                                       a 4096-token prompt of varied text assembled here (seeded),
                                       its 8 greedy tokens and the first step's top 64 logits,
                                       likewise; the seconds each part took

transformers' GGUF loader gets this file right without any config override (checked below
against the GGUF and llama.cpp's code): it subtracts the 1 llama.cpp's converter adds to Gemma's
norm weights, reads rope.freq_base (1e6) for full layers and keeps Gemma3TextConfig's 1e4 for
sliding ones (llama.cpp's default rope_freq_base_train_swa: the file has no rope.freq_base_swa
key), derives layer_types from the pattern of 6 (llama.cpp's set_swa_pattern(6): the file has
no pattern key), keeps query_pre_attn_scalar at its default 256 = head_dim and no softcapping,
takes the vocabulary (262144) from the token list and scales embeddings by sqrt(hidden) as
llama.cpp does. llama.cpp's F32 run of the same weights agrees with it to about 0.01 per logit
and token for token (asserted); the Q4_K_M file's own llama.cpp run differs by about 1 (its
products quantize activations to 8 bits) and parts from transformers' greedy tokens at close
calls.

The file carries no tokenizer.chat_template key, so the template written for the tiny checkpoint
is Gemma 3's published one (google/gemma-3-*-it tokenizer_config.json), kept below; it would be
read from the GGUF if the key were there.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import sentencepiece as spm
import torch
from transformers import (AttentionInterface, AutoModelForCausalLM, AutoTokenizer, Gemma3ForCausalLM,
                          Gemma3TextConfig)
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
LLAMA_CPP = os.environ.get("LLAMA_CPP", "/tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp")
MODELS = os.environ.get("EDGECUT_MODELS", os.path.expanduser("~/.cache/edgecut/models"))
GGUF = "gemma-3-270m-q4_k_m.gguf"
THREADS = 2

# Gemma 3's chat template as published with google/gemma-3-*-it (tokenizer_config.json).
GEMMA3_CHAT = r"""{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

# ---------------------------------------------------------------------------------------------
# The tiny checkpoint
# ---------------------------------------------------------------------------------------------

TINY = dict(hidden=64, heads=4, kv_heads=1, head_dim=32, intermediate=128, layers=8, window=8,
            rope_theta=1_000_000.0, rope_local_theta=10_000.0, max_positions=512, eps=1e-6)
TINY_SEED = 301
MIN_MARGIN = 0.05
PROMPT_TOKENS = 20
LONG_TOKENS = 300
GREEDY = 8
CHAT = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "Hello!"}]
CHAT_TOKENS = 6
# Control pieces at 0..6 and user-defined pieces at 7, 8, typed as Gemma 3's tokenizer types them.
SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>"]
CONTROL = ["<mask>", "<start_of_turn>", "<end_of_turn>"]
USER_DEFINED = ["\n", "\n\n"]

CORPUS = [
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "Once upon a time, in a small village by the sea, there lived an old fisherman.\nEvery morning he "
    "went out in his boat, and every evening he came back with a basket of fish.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "In 1969, 3 astronauts flew 384,400 km to the Moon; 2^10 = 1024 and 7 * 8 = 56.",
    "What is the capital of France? Name three primary colors: red, yellow, blue.",
    "You are brief. Hello! How are you today? I am fine, thank you, and you?",
    "The user asks a question and the model gives a short answer.\n\nThe system prompt says: be kind.",
    "La vie est belle et le soleil brille sur la mer. Der Hund schläft im Garten.",
    "Quick brown foxes jump over lazy dogs; zebras and wolves judge the vexing quiz.",
    "Shopping list:\n- milk\n- eggs\n- bread\n- apples\n\nRemember to buy them before Sunday!",
    "She said: \"It's a good day to learn something new,\" and opened the book at page 42.",
]
TINY_PROMPT = ("Once upon a time, the capital of France was a small village by the sea, and the "
               "old fisherman said hello.")


def train_tokenizer(out_dir):
    """A SentencePiece BPE model shaped like Gemma 3's: no dummy prefix, whitespace kept as is,
    digits split, byte fallback, the special pieces at Gemma's low ids."""
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 4), model_prefix=os.path.join(out_dir, "tokenizer"),
        model_type="bpe", vocab_size=512, byte_fallback=True, character_coverage=1.0,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
        bos_piece="<bos>", unk_piece="<unk>", control_symbols=CONTROL,
        user_defined_symbols=USER_DEFINED, add_dummy_prefix=False, remove_extra_whitespaces=False,
        normalization_rule_name="identity", split_digits=True, allow_whitespace_only_pieces=True,
        num_threads=1, minloglevel=2)
    os.remove(os.path.join(out_dir, "tokenizer.vocab"))
    sp = spm.SentencePieceProcessor(model_file=os.path.join(out_dir, "tokenizer.model"))
    for i, piece in enumerate(SPECIAL + CONTROL + USER_DEFINED):
        assert sp.id_to_piece(i) == piece, (i, sp.id_to_piece(i))
    return sp


def write_tokenizer_config(out_dir, chat_template):
    """tokenizer_config.json as Gemma 3 checkpoints have it (the template inline, the special
    pieces in added_tokens_decoder: llama.cpp's converter types them from it)."""
    added = {}
    for i, piece in enumerate(SPECIAL + CONTROL + USER_DEFINED):
        added[str(i)] = {"content": piece, "lstrip": False, "normalized": False, "rstrip": False,
                         "single_word": False, "special": piece not in USER_DEFINED}
    cfg = {"add_bos_token": True, "add_eos_token": False, "added_tokens_decoder": added,
           "bos_token": "<bos>", "chat_template": chat_template,
           "clean_up_tokenization_spaces": False, "eos_token": "<eos>", "mask_token": "<mask>",
           "model_max_length": 1000000000000000019884624838656, "pad_token": "<pad>",
           "padding_side": "left", "sp_model_kwargs": {}, "spaces_between_special_tokens": False,
           "tokenizer_class": "GemmaTokenizer", "unk_token": "<unk>",
           "use_default_system_prompt": False}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
        f.write("\n")


def tiny_config(vocab):
    t = TINY
    layer_types = ["sliding_attention" if i % 6 < 5 else "full_attention" for i in range(t["layers"])]
    cfg = Gemma3TextConfig(
        vocab_size=vocab, hidden_size=t["hidden"], intermediate_size=t["intermediate"],
        num_hidden_layers=t["layers"], num_attention_heads=t["heads"],
        num_key_value_heads=t["kv_heads"], head_dim=t["head_dim"],
        query_pre_attn_scalar=t["head_dim"], hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=t["max_positions"], rms_norm_eps=t["eps"],
        sliding_window=t["window"], layer_types=layer_types,
        # transformers 5 names Gemma 3's two rope bases per layer type.
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": t["rope_theta"]},
                         "sliding_attention": {"rope_type": "default",
                                               "rope_theta": t["rope_local_theta"]}},
        final_logit_softcapping=None, attn_logit_softcapping=None, tie_word_embeddings=True,
        pad_token_id=0, eos_token_id=1, bos_token_id=2, attention_bias=False,
        # Not a Gemma3TextConfig field: llama.cpp's converter takes the GGUF's unknown_token_id
        # from here when there is no tokenizer.json (the real file has it: 3).
        unk_token_id=3)
    assert cfg.layer_types == layer_types and cfg.query_pre_attn_scalar == t["head_dim"]
    return cfg


def llama_cpp_swa_layers(n_layer):
    """The sliding layers llama.cpp's Gemma 3 loader picks when the GGUF has no pattern key:
    load_swa_pattern(ml, 6) -> set_swa_pattern(6, dense_first=false) (src/llama-hparams.cpp)."""
    src = open(os.path.join(LLAMA_CPP, "src", "models", "gemma3.cpp"), encoding="utf-8").read()
    assert "load_swa_pattern(ml, 6)" in src, "llama.cpp's Gemma 3 sliding pattern changed"
    hp = open(os.path.join(LLAMA_CPP, "src", "llama-hparams.cpp"), encoding="utf-8").read()
    assert "il % n_pattern < (n_pattern - 1)" in hp, "llama.cpp's set_swa_pattern changed"
    return [il % 6 < 5 for il in range(n_layer)]


class F16KV:
    calls = 0


def f16_kv_attention(module, query, key, value, attention_mask, **kw):
    """transformers' SDPA attention with keys and values rounded to f16, as edgecut stores them
    (Gemma 3's attention passes scaling= and sliding_window= through **kw; the sliding window
    itself is in the mask, built by sdpa_mask as registered below)."""
    F16KV.calls += 1
    return sdpa_attention_forward(module, query, key.half().to(key.dtype),
                                  value.half().to(value.dtype), attention_mask, **kw)


AttentionInterface.register("f16_kv", f16_kv_attention)
# Without a mask function of its own an attention name gets no mask at all (masking_utils skips
# it), which would drop Gemma's sliding window: give it SDPA's.
AttentionMaskInterface.register("f16_kv", sdpa_mask)


def top2_margin(logits):
    """The smallest gap between the best and the second best logit over the rows."""
    v = torch.topk(logits, 2, dim=-1).values
    return float((v[..., 0] - v[..., 1]).min())


def r6(t):
    return [round(float(x), 6) for x in t]


@torch.no_grad()
def reference(model, ids, all_rows=True, greedy=GREEDY):
    out = model(torch.tensor([ids]), use_cache=True)
    prompt = out.logits[0]
    cache, nxt = out.cache, int(out.logits[0, -1].argmax())
    toks, steps = [], []
    for _ in range(greedy):
        toks.append(nxt)
        out = model(torch.tensor([[nxt]]), cache=cache, use_cache=True)
        cache = out.cache
        steps.append(out.logits[0, -1])
        nxt = int(out.logits[0, -1].argmax())
    res = {"greedy": toks, "step_logits": [r6(row) for row in steps]}
    if all_rows:
        res = {"prompt_logits": [r6(row) for row in prompt], **res}
    else:
        res = {"last_logits": r6(prompt[-1]), **res}
    return res, prompt, torch.stack(steps)


def llama_cpp_gguf(out_dir, out):
    gguf_py = os.path.join(LLAMA_CPP, "gguf-py")
    code = (f"import sys; sys.path.insert(0, {gguf_py!r}); sys.path.insert(0, {LLAMA_CPP!r}); "
            "import convert_hf_to_gguf as c; "
            f"sys.argv = ['convert', {out_dir!r}, '--outtype', 'f32', '--outfile', {out!r}]; c.main()")
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def check_gguf_tensors(model, path):
    """Every tensor of the converted GGUF equals the checkpoint's, but the norms, stored 1 + w."""
    from gguf import GGUFReader
    reader = GGUFReader(path)
    sd = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    per_layer = {"input_layernorm": "attn_norm", "post_attention_layernorm": "post_attention_norm",
                 "pre_feedforward_layernorm": "ffn_norm", "post_feedforward_layernorm": "post_ffw_norm",
                 "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
                 "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                 "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                 "mlp.down_proj": "ffn_down"}
    for i in range(TINY["layers"]):
        for hf, gg in per_layer.items():
            names[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    assert len(tensors) == len(sd) and set(names) == set(sd), (sorted(tensors), sorted(sd))
    plus_one = []
    for hf, gg in names.items():
        w = sd[hf].numpy()
        g = tensors[gg].reshape(w.shape)
        if hf.endswith("norm.weight"):
            assert np.array_equal(g, (sd[hf] + 1.0).numpy()), hf
            plus_one.append(gg.split(".")[2] if gg.startswith("blk.") else gg.split(".")[0])
        else:
            assert np.array_equal(g, w), hf
    keys = {k: reader.fields[k].contents() for k in reader.fields
            if k.startswith("gemma3.") or k.startswith("tokenizer.ggml.") and k.split(".")[-1] in (
                "bos_token_id", "eos_token_id", "unknown_token_id", "padding_token_id",
                "add_bos_token", "add_eos_token", "add_space_prefix", "model", "pre")}
    assert "tokenizer.chat_template" in reader.fields
    assert keys["tokenizer.ggml.unknown_token_id"] == 3 and keys["tokenizer.ggml.add_space_prefix"] is False
    return sorted(set(plus_one)), {k: (v if not isinstance(v, float) else round(v, 9)) for k, v in keys.items()}


def llama_cpp_tiny_run(path, ids, all_rows, greedy_toks):
    """llama.cpp's own run of the converted GGUF (f16 KV cache): its logits, fed the reference's
    greedy tokens, for comparison with "f16_kv"."""
    import llama_cpp
    llm = llama_cpp.Llama(path, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=THREADS,
                          logits_all=True, verbose=False)
    n_vocab = llm.n_vocab()
    llm.reset()
    llm.eval(ids)
    prompt = np.array(llm.scores[:len(ids)]) if all_rows else np.array(llm.scores[len(ids) - 1:len(ids)])
    steps, own = [], []
    for t in greedy_toks:
        llm.eval([t])
        row = np.array(llm.scores[llm.n_tokens - 1])
        steps.append(row)
        own.append(int(row.argmax()))
    del llm
    assert prompt.shape[1] == n_vocab
    return prompt, np.stack(steps), own


def tiny_tokenize_checks(sp, tok, gguf_path, texts):
    import llama_cpp
    vocab = llama_cpp.Llama(gguf_path, vocab_only=True, verbose=False)
    for text in texts:
        ref = [2] + sp.encode(text)
        hf = tok(text, add_special_tokens=True)["input_ids"]
        lc = vocab.tokenize(text.encode(), add_bos=True, special=True)
        assert ref == hf == lc, (text, ref, hf, lc)


def gemma3_tiny(chat_template):
    t0 = time.time()
    torch.manual_seed(TINY_SEED)
    out_dir = os.path.join(FIXTURES, "gemma3-tiny")
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    sp = train_tokenizer(out_dir)
    vocab = sp.get_piece_size()
    cfg = tiny_config(vocab)
    assert [lt == "sliding_attention" for lt in cfg.layer_types] == llama_cpp_swa_layers(TINY["layers"])
    model = Gemma3ForCausalLM(cfg).eval()
    model.config._attn_implementation = "sdpa"
    # Random init gives near-uniform logits. Scale the projections up (x8), draw every norm
    # weight (Gemma scales by 1 + w, w initialised to 0) so a missed norm, or a missed 1 + w,
    # shows; keep the tied embedding small (std 0.1, the pad row included) so the residual is not
    # dominated by the input token (a tied head then just repeats it), and give the final norm
    # 1 + w around 5 so the logits spread (std about 4). The seed is one whose greedy choices all
    # win by at least MIN_MARGIN.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0.0, 0.5)
            elif "embed_tokens" in name:
                p.normal_(0.0, 0.1)
            else:
                p.mul_(8.0)
        model.model.norm.weight.add_(4.0)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model.save_pretrained(out_dir, safe_serialization=True)
    for extra in ["generation_config.json"]:
        if os.path.exists(os.path.join(out_dir, extra)):
            os.remove(os.path.join(out_dir, extra))
    write_tokenizer_config(out_dir, chat_template)
    tok = AutoTokenizer.from_pretrained(out_dir)
    assert len(tok) == vocab, (len(tok), vocab)

    gguf_path = os.path.join(FIXTURES, "gemma3-tiny.llama-cpp.gguf")
    llama_cpp_gguf(out_dir, gguf_path)
    plus_one, gguf_keys = check_gguf_tensors(model, gguf_path)

    # The 20-token prompt.
    ids = ([2] + sp.encode(TINY_PROMPT))[:PROMPT_TOKENS]
    assert len(ids) == PROMPT_TOKENS
    tiny_tokenize_checks(sp, tok, gguf_path, [TINY_PROMPT] + CORPUS)
    # The long prompt: BOS, then seeded random ordinary pieces (no control, unknown, byte or
    # user-defined ones).
    ordinary = [i for i in range(vocab) if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i)
                                                or sp.id_to_piece(i) in USER_DEFINED)]
    rng = random.Random(TINY_SEED)
    long_ids = [2] + [rng.choice(ordinary) for _ in range(LONG_TOKENS - 1)]
    assert LONG_TOKENS + GREEDY > TINY["window"] + 256 + 1

    entry = {"text": TINY_PROMPT, "ids": ids}
    margins = []
    long_entry = {"ids": long_ids, "seed": TINY_SEED}
    for variant in ["plain", "f16_kv"]:
        model.config._attn_implementation = "sdpa" if variant == "plain" else "f16_kv"
        calls = F16KV.calls
        entry[variant], prompt, steps = reference(model, ids)
        long_entry[variant], long_prompt, long_steps = reference(model, long_ids, all_rows=False)
        assert (F16KV.calls > calls) == (variant == "f16_kv")
        # The cached steps agree with one pass over the whole sequence.
        with torch.no_grad():
            full = model(torch.tensor([long_ids + long_entry[variant]["greedy"]]), use_cache=False).logits[0]
        drift = float((full[LONG_TOKENS:] - long_steps).abs().max())
        assert drift < 1e-3, (variant, drift)
        margins.append(min(top2_margin(prompt), top2_margin(steps), top2_margin(long_steps)))
        if variant == "plain":
            plain_last = long_prompt[-1]
        else:
            f16_last = long_prompt[-1]
            f16_prompt, f16_steps, f16_long_prompt, f16_long_steps = prompt, steps, long_prompt, long_steps
    # The same in float64 (keys and values still rounded to f16): the reference without
    # float32's own rounding, which this fixture's weights (a final norm near 5) amplify to
    # about 1e-4 of the largest logit between any two float32 implementations.
    import copy
    model64 = copy.deepcopy(model).double()
    model64.config._attn_implementation = "f16_kv"
    entry["f64_f16_kv"], _, _ = reference(model64, ids)
    long_entry["f64_f16_kv"], _, _ = reference(model64, long_ids, all_rows=False)
    del model64
    # The sliding window really applies: without it the long prompt's logits are elsewhere.
    with torch.no_grad():
        model.config._attn_implementation = "sdpa"
        model.config.sliding_window = 1 << 20
        unwindowed = model(torch.tensor([long_ids]), use_cache=False).logits[0, -1]
        model.config.sliding_window = TINY["window"]
        rewindowed = model(torch.tensor([long_ids]), use_cache=False).logits[0, -1]
    window_effect = float((unwindowed - plain_last).abs().max())
    f16_effect = float((f16_last - plain_last).abs().max())
    assert float((rewindowed - plain_last).abs().max()) < 1e-4
    assert window_effect > 0.5 and f16_effect < 0.05 * window_effect, (window_effect, f16_effect)
    assert min(margins) > MIN_MARGIN, margins

    # A chat turn through transformers' own rendering of the template (keys and values at f16
    # as above): what edgecut's chat paths must reply, up to the end of turn.
    model.config._attn_implementation = "f16_kv"
    chat_text = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    chat_ids = tok(chat_text, add_special_tokens=False)["input_ids"]
    import llama_cpp
    lc_chat = llama_cpp.Llama(gguf_path, vocab_only=True, verbose=False).tokenize(
        chat_text.encode(), add_bos=False, special=True)
    assert list(chat_ids) == lc_chat, (chat_ids, lc_chat)
    reply = reference(model, list(chat_ids), greedy=CHAT_TOKENS)[0]["greedy"]
    for stop in (1, 6):  # <eos>, <end_of_turn>
        if stop in reply:
            reply = reply[:reply.index(stop)]

    # llama.cpp's run of the GGUF against "f16_kv" (information; llama.cpp's GELU goes through
    # an f16 table, so differences of about 1e-3 of the logits' scale are expected).
    lc_prompt, lc_steps, lc_greedy = llama_cpp_tiny_run(gguf_path, ids, True, entry["f16_kv"]["greedy"])
    lc_long_last, lc_long_steps, lc_long_greedy = llama_cpp_tiny_run(
        gguf_path, long_ids, False, long_entry["f16_kv"]["greedy"])
    lc_check = {
        "prompt_max_abs_diff": float(np.abs(lc_prompt - f16_prompt.numpy()).max()),
        "steps_max_abs_diff": float(np.abs(lc_steps - f16_steps.numpy()).max()),
        "long_last_max_abs_diff": float(np.abs(lc_long_last[0] - f16_long_prompt[-1].numpy()).max()),
        "long_steps_max_abs_diff": float(np.abs(lc_long_steps - f16_long_steps.numpy()).max()),
        "greedy_agrees": lc_greedy[:-1] == entry["f16_kv"]["greedy"][1:],
        "long_greedy_agrees": lc_long_greedy[:-1] == long_entry["f16_kv"]["greedy"][1:],
    }
    lc_check["logit_scale"] = float(f16_prompt.abs().max())
    assert max(v for k, v in lc_check.items() if k.endswith("diff")) < 5e-3 * lc_check["logit_scale"], lc_check

    logits_std = float(f16_prompt.std(dim=-1).mean())
    doc = {
        "source": f"transformers {__import__('transformers').__version__}, a seeded random "
                  "Gemma3ForCausalLM (f32)",
        "script": "tests/reference/make_gemma_fixtures.py",
        "config": {"vocab": vocab, "hidden": TINY["hidden"], "heads": TINY["heads"],
                   "kv_heads": TINY["kv_heads"], "head_dim": TINY["head_dim"],
                   "query_pre_attn_scalar": TINY["head_dim"], "intermediate": TINY["intermediate"],
                   "layers": TINY["layers"], "layer_types": cfg.layer_types,
                   "sliding_window": TINY["window"], "rope_theta": TINY["rope_theta"],
                   "rope_local_theta": TINY["rope_local_theta"], "rms_norm_eps": TINY["eps"],
                   "embed_scale": TINY["hidden"] ** 0.5, "activation": "gelu_pytorch_tanh",
                   "tie_word_embeddings": True, "final_logit_softcapping": None,
                   "max_position_embeddings": TINY["max_positions"], "bos": 2, "eos": 1,
                   "end_of_turn": 6, "seed": TINY_SEED},
        "gguf": {"norms_stored_plus_one": plus_one, "keys": gguf_keys},
        "prompt": entry,
        "long": long_entry,
        "window_check": {"max_abs_diff_without_window": window_effect,
                         "max_abs_diff_f16_kv": f16_effect},
        "min_top2_margin": round(min(margins), 6),
        "chat": {"messages": CHAT, "rendered": chat_text, "ids": list(chat_ids), "greedy": reply,
                 "text": tok.decode(reply)},
        "llama_cpp_check": lc_check,
    }
    with open(os.path.join(FIXTURES, "gemma3-tiny.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)
    secs = time.time() - t0
    print(f"gemma3-tiny: vocab {vocab}, logits std {logits_std:.2f}, min margin {min(margins):.3f}, greedy "
          f"{entry['f16_kv']['greedy']}, long greedy {long_entry['f16_kv']['greedy']}, "
          f"window effect {window_effect:.3f}, f16 effect {f16_effect:.5f}, llama.cpp {lc_check}, "
          f"chat {chat_text!r} -> {reply} ({secs:.1f} s)")
    return secs


# ---------------------------------------------------------------------------------------------
# Gemma 3 270M, Q4_K_M
# ---------------------------------------------------------------------------------------------

GREEDY_270M = 32
TOP = 256
SAMPLE_SEED = 270
SAMPLE = 4096
LONG_270M = 4096
LONG_GREEDY = 8
LONG_TOP = 64
LONG_SEED = 4096

PROMPTS = [
    {"name": "question", "text": "What is the capital of France?"},
    {"name": "story", "text": "Once upon a time, in a small village by the sea, there lived"},
    {"name": "code", "text": "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n"},
    {"name": "list", "text": "Things to pack for a weekend hike:\n1. Water\n2. A map\n3."},
    {"name": "chat", "text": "<start_of_turn>user\nWrite a haiku about the sea.<end_of_turn>\n<start_of_turn>model\n"},
    {"name": "french", "text": "Le soleil se lève à l'est et se couche à l'ouest. Le matin, les enfants"},
    {"name": "chinese", "text": "今天天气很好，我们去公园散步吧。北京是"},
    {"name": "maths", "text": "Question: What is 17 * 23?\nAnswer: 17 * 23 = 391.\nQuestion: What is 2^10 + 3.5?\nAnswer:"},
    {"name": "unicode", "text": "I love pizza 🍕 and tacos 🌮! Café naïve Straße 😀 👍🏽 — “quoted”"},
    {"name": "whitespace", "text": "  leading spaces,\ttabs\n\n\nand   runs    of  spaces  "},
]


def long_text(seed):
    """Varied, deterministic prose, lists, dialogue, arithmetic and code (Python's random.Random
    with a fixed seed), long enough for LONG_270M tokens."""
    rng = random.Random(seed)
    names = ["Alice", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Grace", "Hiroshi", "Ingrid",
             "Jamal", "Kavya", "Lucas", "Mei", "Nadia", "Oscar", "Priya"]
    cities = ["Lisbon", "Kyoto", "Nairobi", "Montreal", "Oslo", "Buenos Aires", "Cairo", "Hanoi",
              "Edinburgh", "Vienna", "Santiago", "Perth", "Marrakesh", "Reykjavik", "Seoul", "Lima"]
    things = ["an old map", "a brass compass", "a notebook full of sketches", "a jar of honey",
              "a broken radio", "a letter from her grandmother", "a box of seeds", "a wooden flute",
              "a faded photograph", "a bag of oranges", "a silver key", "a book about the stars"]
    weathers = ["rain was falling softly", "the wind came from the north", "the sky was clear",
                "fog covered the harbour", "snow had begun to settle", "the sun was unusually warm"]
    feelings = ["curious", "tired but happy", "a little nervous", "calm", "impatient", "hopeful"]
    verbs = ["visited the market", "walked along the river", "met an old friend",
             "found a small museum", "missed the last train", "climbed the hill behind the town",
             "wrote a long letter home", "repaired a bicycle", "learned a few local words"]
    rivers = [("Danube", 2850, "ten countries"), ("Nile", 6650, "eleven countries"),
              ("Amazon", 6400, "Peru, Colombia and Brazil"), ("Rhine", 1230, "six countries"),
              ("Mekong", 4900, "six countries"), ("Thames", 346, "southern England")]
    foods = ["bread", "soup", "pancakes", "a vegetable curry", "lemon cake", "tomato sauce"]
    items = ["flour", "sugar", "butter", "eggs", "milk", "salt", "onions", "rice", "garlic", "lemons"]
    paras = []
    chapter = 0
    while sum(len(p) for p in paras) < 24000:
        kind = rng.randrange(6)
        if kind == 0 or not paras:
            chapter += 1
            a, b = rng.sample(names, 2)
            c1, c2 = rng.sample(cities, 2)
            paras.append(f"Chapter {chapter}: {a} in {c2}")
            sents = [f"{a} left {c1} on a {rng.choice(['Monday', 'Tuesday', 'Friday', 'Sunday'])} "
                     f"morning with {rng.choice(things)} and travelled {rng.randrange(200, 9000)} "
                     f"kilometres to {c2}.",
                     f"When {a} arrived, {rng.choice(weathers)}, and "
                     f"{rng.choice(['she', 'he', 'they'])} felt {rng.choice(feelings)}.",
                     f"On the first day {a} {rng.choice(verbs)}; on the second, {b} {rng.choice(verbs)}."]
            rng.shuffle(sents)
            paras.append(" ".join(sents))
        elif kind == 1:
            river, km, where = rng.choice(rivers)
            n = rng.randrange(2, 40)
            paras.append(f"The {river} is about {km:,} kilometres long and flows through {where}. "
                         f"In {rng.randrange(1800, 2024)}, a survey counted {n * 37} boats on it in a "
                         f"single week, which is roughly {n * 37 // 7} a day.")
        elif kind == 2:
            food = rng.choice(foods)
            picked = rng.sample(items, rng.randrange(3, 6))
            lines = [f"- {rng.randrange(1, 500)} {rng.choice(['g', 'ml', 'pieces of'])} {x}" for x in picked]
            paras.append(f"To make {food} for {rng.randrange(2, 9)} people, you need:\n" + "\n".join(lines)
                         + f"\nCook it for {rng.randrange(5, 90)} minutes and let it rest before serving.")
        elif kind == 3:
            a, b = rng.sample(names, 2)
            q = rng.choice(["Where are we going tomorrow?", "Did you bring the tickets?",
                            "Why is the museum closed today?", "How far is the station?",
                            "Have you ever seen the sea in winter?"])
            ans = rng.choice(["I have no idea, but we will find out", "Only if it stops raining",
                              "Not far, maybe twenty minutes on foot", "Yes, once, a long time ago",
                              "Ask the woman at the bakery"])
            paras.append(f"\"{q}\" asked {a}.\n\"{ans},\" replied {b}, smiling.")
        elif kind == 4:
            x, y = rng.randrange(10, 999), rng.randrange(10, 999)
            paras.append(f"A quick check of the numbers: {x} + {y} = {x + y}, {x} - {y} = {x - y}, "
                         f"and {x} × {y} = {x * y}. Half of {x} is {x / 2:g}.")
        else:
            fn = rng.choice(["total_distance", "average_speed", "count_words", "longest_trip"])
            var = rng.choice(["trips", "values", "items", "records"])
            paras.append(f"```python\ndef {fn}({var}):\n    result = 0\n    for x in {var}:\n"
                         f"        result += x * {rng.randrange(2, 10)}\n    return result\n```")
    return "\n\n".join(paras)


def top_k(logits, k):
    v, i = torch.topk(logits, k)
    return {"ids": i.tolist(), "logits": [round(float(x), 5) for x in v]}


@torch.no_grad()
def hf_greedy(model, ids, n):
    """The first step's logits, n greedy tokens and the margin (best - second best logit) by
    which each of them won."""
    out = model(torch.tensor([ids]), use_cache=True, logits_to_keep=1)
    first = out.logits[0, -1].clone()
    cache, toks, margins = out.cache, [], []
    for i in range(n):
        logits = out.logits[0, -1]
        toks.append(int(logits.argmax()))
        margins.append(round(top2_margin(logits), 4))
        if i + 1 < n:
            out = model(torch.tensor([[toks[-1]]]), cache=cache, use_cache=True)
            cache = out.cache
    return first, toks, margins


def lc_greedy(llm, ids, n):
    llm.reset()
    llm.eval(ids)
    first = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).copy()
    toks = []
    for _ in range(n):
        nxt = int(np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).argmax())
        toks.append(nxt)
        llm.eval([nxt])
    return first, toks


def llama_cpp_f32(path, out):
    """llama.cpp's own dequantization of the file to F32 (llama_model_quantize, ALL_F32): run
    with F32 weights and an F32 KV cache, llama.cpp quantizes no activations, so its logits can
    be held to transformers' closely; the Q4_K_M file's own run cannot (its products take
    activations at 8 bits)."""
    import llama_cpp
    from llama_cpp._utils import suppress_stdout_stderr
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_ALL_F32
    params.allow_requantize = True
    params.nthread = THREADS
    with suppress_stdout_stderr(disable=False):
        rc = llama_cpp.llama_model_quantize(path.encode(), out.encode(), params)
    assert rc == 0, rc
    return llama_cpp.Llama(out, n_ctx=8192, n_threads=THREADS, n_threads_batch=THREADS,
                           logits_all=False, type_k=llama_cpp.GGML_TYPE_F32,
                           type_v=llama_cpp.GGML_TYPE_F32, verbose=False)


def common_prefix(a, b):
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def check_270m_config(model, path):
    """transformers' reading of the file against llama.cpp's (see the docstring)."""
    from gguf import GGUFReader
    reader = GGUFReader(path)
    f = lambda k: reader.fields[k].contents() if k in reader.fields else None
    c = model.config
    n = c.num_hidden_layers
    assert n == f("gemma3.block_count") and c.hidden_size == f("gemma3.embedding_length")
    assert c.head_dim == f("gemma3.attention.key_length") == f("gemma3.attention.value_length")
    assert c.num_attention_heads == f("gemma3.attention.head_count")
    assert c.num_key_value_heads == f("gemma3.attention.head_count_kv")
    assert c.sliding_window == f("gemma3.attention.sliding_window")
    assert f("gemma3.attention.sliding_window_pattern") is None
    assert [lt == "sliding_attention" for lt in c.layer_types] == llama_cpp_swa_layers(n)
    assert c.rope_parameters["full_attention"]["rope_theta"] == f("gemma3.rope.freq_base")
    assert f("gemma3.rope.freq_base_swa") is None
    assert c.rope_parameters["sliding_attention"]["rope_theta"] == 10000.0  # llama.cpp's default
    assert c.query_pre_attn_scalar == c.head_dim  # llama.cpp: 1/sqrt(head_dim) below 27B
    assert c.final_logit_softcapping is None and f("gemma3.final_logit_softcapping") is None
    assert c.attn_logit_softcapping is None
    assert c.hidden_activation == "gelu_pytorch_tanh"  # ggml's GELU is the tanh form
    assert c.tie_word_embeddings and all(t.name != "output.weight" for t in reader.tensors)
    assert c.vocab_size == len(reader.fields["tokenizer.ggml.tokens"].data)
    assert float(model.model.embed_tokens.embed_scale) == np.float32(c.hidden_size ** 0.5)
    # Norms: the file stores 1 + w, transformers' Gemma3RMSNorm wants w.
    sd = model.state_dict()
    for gg, hf in [("output_norm.weight", "model.norm.weight"),
                   ("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"),
                   ("blk.0.attn_q_norm.weight", "model.layers.0.self_attn.q_norm.weight"),
                   ("blk.0.post_ffw_norm.weight", "model.layers.0.post_feedforward_layernorm.weight")]:
        raw = next(np.array(t.data) for t in reader.tensors if t.name == gg)
        assert np.array_equal(raw, (sd[hf] + 1.0).numpy()), gg
    template = f("tokenizer.chat_template")
    return {"hidden": c.hidden_size, "layers": n, "heads": c.num_attention_heads,
            "kv_heads": c.num_key_value_heads, "head_dim": c.head_dim,
            "intermediate": c.intermediate_size, "vocab": c.vocab_size,
            "sliding_window": c.sliding_window, "layer_types": c.layer_types,
            "rope_theta": c.rope_parameters["full_attention"]["rope_theta"],
            "rope_local_theta": c.rope_parameters["sliding_attention"]["rope_theta"],
            "query_pre_attn_scalar": c.query_pre_attn_scalar, "rms_norm_eps": c.rms_norm_eps,
            "bos": c.bos_token_id, "eos": c.eos_token_id}, template


def gemma3_270m():
    import llama_cpp
    path = os.path.join(MODELS, GGUF)
    times = {}
    t = time.time()
    model = AutoModelForCausalLM.from_pretrained(MODELS, gguf_file=GGUF, dtype=torch.float32).eval()
    model.config._attn_implementation = "sdpa"
    times["load"] = time.time() - t
    config, template = check_270m_config(model, path)
    llm = llama_cpp.Llama(path, n_ctx=8192, n_threads=THREADS, n_threads_batch=THREADS,
                          logits_all=False, verbose=False)
    vocab = llama_cpp.Llama(path, vocab_only=True, verbose=False)
    tmp = tempfile.TemporaryDirectory(prefix="gemma3-270m-f32-")
    t = time.time()
    llm32 = llama_cpp_f32(path, os.path.join(tmp.name, "f32.gguf"))
    times["llama_cpp_f32_requantize"] = time.time() - t
    sample = np.sort(np.random.default_rng(SAMPLE_SEED).choice(config["vocab"], SAMPLE, replace=False))
    sample_t = torch.from_numpy(sample)

    def run(ids, n, key):
        t = time.time()
        res = hf_greedy(model, ids, n)
        times[f"{key}_transformers"] = times.get(f"{key}_transformers", 0.0) + time.time() - t
        info = {}
        for name, runner in [("llama_cpp", llm), ("llama_cpp_f32", llm32)]:
            t = time.time()
            lc_first, lc_toks = lc_greedy(runner, ids, n)
            times[f"{key}_{name}"] = times.get(f"{key}_{name}", 0.0) + time.time() - t
            info[name] = {"greedy": lc_toks, "common_prefix": common_prefix(res[1], lc_toks),
                          "first_top1": int(lc_first.argmax()),
                          "first_max_abs_diff": round(float(np.abs(lc_first - res[0].numpy()).max()), 5)}
        return res, info

    cases, agreement = [], {}
    for p in PROMPTS:
        ids = vocab.tokenize(p["text"].encode(), add_bos=True, special=True)
        (first, toks, margins), info = run(ids, GREEDY_270M, "prompts")
        agreement[p["name"]] = (info["llama_cpp"]["common_prefix"], info["llama_cpp_f32"]["common_prefix"])
        cases.append({
            "name": p["name"], "text": p["text"], "ids": ids,
            "top": top_k(first, TOP),
            "sample_logits": [round(float(x), 5) for x in first[sample_t]],
            "max": round(float(first.max()), 5), "mean": round(float(first.mean()), 6),
            "std": round(float(first.std(unbiased=False)), 6),
            "greedy": toks, "greedy_margins": margins,
            "greedy_text": vocab.detokenize(toks).decode("utf-8", errors="replace"),
            **info,
        })
        print(f"  {p['name']}: {len(ids)} ids, common prefix with llama.cpp "
              f"{agreement[p['name']][0]}/{GREEDY_270M}, F32 {agreement[p['name']][1]}/{GREEDY_270M}, "
              f"max |diff| {info['llama_cpp']['first_max_abs_diff']:.3f} / "
              f"{info['llama_cpp_f32']['first_max_abs_diff']:.4f}; {cases[-1]['greedy_text'][:50]!r}")

    # Long context: the sliding layers (window 512) see a small part of it.
    text = long_text(LONG_SEED)
    ids = vocab.tokenize(text.encode(), add_bos=True, special=True)
    assert len(ids) > LONG_270M and ids[0] == config["bos"], len(ids)
    ids = ids[:LONG_270M]
    (first, toks, margins), info = run(ids, LONG_GREEDY, "long")
    long_case = {"text": text, "seed": LONG_SEED, "ids": ids, "greedy": toks, "greedy_margins": margins,
                 "greedy_text": vocab.detokenize(toks).decode("utf-8", errors="replace"),
                 "top": top_k(first, LONG_TOP), **info}
    agreement["long"] = (info["llama_cpp"]["common_prefix"], info["llama_cpp_f32"]["common_prefix"])
    print(f"  long: {len(ids)} ids, common prefix with llama.cpp {agreement['long'][0]}/{LONG_GREEDY}, "
          f"F32 {agreement['long'][1]}/{LONG_GREEDY}, max |diff| "
          f"{info['llama_cpp']['first_max_abs_diff']:.3f} / {info['llama_cpp_f32']['first_max_abs_diff']:.4f}; "
          f"{long_case['greedy_text']!r}")
    del llm32
    tmp.cleanup()
    doc = {
        "source": f"transformers {__import__('transformers').__version__} loading {GGUF} (f32, "
                  f"dequantized by its GGUF loader); ids and the llama_cpp entries (information: the "
                  f"file as is, and llama_cpp_f32: llama.cpp's own F32 dequantization of it with an "
                  f"F32 KV cache) from llama-cpp-python {llama_cpp.__version__}",
        "script": "tests/reference/make_gemma_fixtures.py",
        "config": config,
        "chat_template_in_gguf": template is not None,
        "sample": {"seed": SAMPLE_SEED, "indices": sample.tolist()},
        "cases": cases,
        "long": long_case,
        "seconds": {k: round(v, 1) for k, v in times.items()},
    }
    with open(os.path.join(FIXTURES, "gemma3-270m.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False)
    # transformers' fp32 run agrees with llama.cpp's own F32 dequantization of the file (the
    # reference is the file's meaning, not an artefact of either loader): greedy tokens part
    # only at a near tie.
    for c in cases + [long_case]:
        n = c["llama_cpp_f32"]["common_prefix"]
        assert n == len(c["greedy"]) or c["greedy_margins"][n] < 0.1, (c.get("name", "long"), n)
        assert c["llama_cpp_f32"]["first_max_abs_diff"] < 0.1, c.get("name", "long")
    return times, agreement, template


def gguf_chat_template():
    from gguf import GGUFReader
    reader = GGUFReader(os.path.join(MODELS, GGUF))
    field = reader.fields.get("tokenizer.chat_template")
    return field.contents() if field is not None else None


def main():
    torch.set_num_threads(THREADS)
    start = time.time()
    template = gguf_chat_template() or GEMMA3_CHAT
    tiny_secs = gemma3_tiny(template)
    if "--tiny-only" in sys.argv:
        return
    times, agreement, in_gguf = gemma3_270m()
    total = time.time() - start
    print("\nSummary")
    for name in ["gemma3-tiny", "gemma3-tiny.llama-cpp.gguf", "gemma3-tiny.json", "gemma3-270m.json"]:
        p = os.path.join(FIXTURES, name)
        size = (sum(os.path.getsize(os.path.join(p, f)) for f in os.listdir(p)) if os.path.isdir(p)
                else os.path.getsize(p))
        print(f"  tests/fixtures/{name}: {size / 1024:.1f} KiB")
    print(f"  chat template: {'from the GGUF' if in_gguf else 'Gemma 3 published one (GGUF has none)'}")
    print(f"  tiny: {tiny_secs:.1f} s; 270m: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    print("  transformers vs llama.cpp greedy common prefix (Q4_K_M file, llama.cpp's F32 of it): "
          + ", ".join(f"{k} {a}/{b}" for k, (a, b) in agreement.items()))
    print(f"  total {total:.1f} s")


if __name__ == "__main__":
    main()
