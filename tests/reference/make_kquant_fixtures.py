#!/usr/bin/env python3
"""Records the block-type references: a tiny seeded random Qwen3 whose rows are whole K-quant
super-blocks (hidden 256, feed-forward 512, head 64), converted by llama.cpp to f32 and quantized
by llama.cpp's own quantizer to the mixes people download; for each file, transformers' logits
on the file's weights as gguf-py dequantizes them (run once; outputs committed). Needs what
make_decoder_fixtures.py needs, and llama-cpp-python (its `llama_model_quantize`):

    LLAMA_CPP=/tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp \
        ~/.cache/edgecut/refvenv/bin/python tests/reference/make_kquant_fixtures.py

Writes tests/fixtures/kquant/qwen3-k.TYPE.gguf for each TYPE in FTYPES and
tests/fixtures/kquant.json: per file, its tensor types, a 16-token prompt's logits at every
position and 8 greedy steps with the KV cache, keys and values rounded to f16 where edgecut
stores them ("f16_kv", as in decoders-tiny.json).
"""
import ctypes
import json
import os
import shutil
import sys
import tempfile

import torch
from gguf import GGUFReader
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_decoder_fixtures as dec  # noqa: E402  (its tokenizer, prompt and f16-KV attention)

OUT = os.path.join(dec.FIXTURES, "kquant")
# llama.cpp's LLAMA_FTYPE_MOSTLY_* numbers.
FTYPES = {"Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18, "Q3_K_M": 12, "IQ4_XS": 30, "Q2_K": 10,
          "Q5_0": 8, "Q5_1": 9, "IQ4_NL": 25, "BF16": 32}


def quantize(src, dst, ftype):
    import llama_cpp

    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ftype
    p.nthread = os.cpu_count()
    assert llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p)) == 0, dst


def main():
    torch.manual_seed(7)
    a = dec.ARCHS["qwen3"]
    tok = dec.tokenizer(a)
    cfg = Qwen3Config(vocab_size=tok.get_vocab_size(), hidden_size=256, intermediate_size=512,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                      max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=1_000_000.0,
                      tie_word_embeddings=False, use_sliding_window=False,
                      bos_token_id=tok.token_to_id("<|endoftext|>"), eos_token_id=tok.token_to_id(a["eos"]))
    model = Qwen3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.mul_(4.0)
    tmp = tempfile.mkdtemp()
    hf = os.path.join(tmp, "hf")
    model.save_pretrained(hf, safe_serialization=True)
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=a["bos"], eos_token=a["eos"],
                            chat_template=a["template"]).save_pretrained(hf)
    f32 = os.path.join(tmp, "f32.gguf")
    llama_cpp = os.environ["LLAMA_CPP"]
    gguf_py = os.path.join(llama_cpp, "gguf-py")
    code = (f"import sys; sys.path.insert(0, {gguf_py!r}); sys.path.insert(0, {llama_cpp!r}); "
            "import convert_hf_to_gguf as c; import conversion.base as base; "
            "base.TextModel.get_vocab_base_pre = lambda self, tokenizer: 'qwen2'; "
            f"sys.argv = ['convert', {hf!r}, '--outtype', 'f32', '--outfile', {f32!r}]; c.main()")
    import subprocess
    subprocess.run([sys.executable, "-c", code], check=True)

    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    ids = tok.encode(dec.PROMPT).ids[:dec.PROMPT_TOKENS]
    doc = {"source": f"transformers {__import__('transformers').__version__} on each file's "
                     "weights dequantized by gguf-py; files by llama.cpp's llama_model_quantize",
           "script": "tests/reference/make_kquant_fixtures.py", "ids": ids, "files": {}}
    for name, ftype in FTYPES.items():
        path = os.path.join(OUT, f"qwen3-k.{name}.gguf")
        quantize(f32, path, ftype)
        types = sorted({t.tensor_type.name for t in GGUFReader(path).tensors})
        # The checkpoint's own config: transformers' GGUF config mapping misreads Qwen3's
        # explicit head size.
        m = AutoModelForCausalLM.from_pretrained(OUT, gguf_file=os.path.basename(path), config=cfg,
                                                 dtype=torch.float32).eval()
        m.config._attn_implementation = "f16_kv"
        ref = dec.reference(m, ids)
        doc["files"][name] = {"file": os.path.relpath(path, dec.ROOT), "types": types, "f16_kv": ref}
        print(name, os.path.getsize(path), types, ref["greedy"])
    with open(os.path.join(dec.FIXTURES, "kquant.json"), "w", encoding="utf-8") as f:
        json.dump(doc, f)
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
