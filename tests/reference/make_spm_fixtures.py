#!/usr/bin/env python3
"""Records the references edgecut's SentencePiece ("llama" model) tokenizer is compared against
(run once; output committed). Needs llama_cpp (llama-cpp-python 0.3.36), transformers, gguf,
sentencepiece and protobuf:

    ~/.cache/edgecut/refvenv/bin/python tests/reference/make_spm_fixtures.py

Writes tests/fixtures/gemma3-tokenizer.json:
  cases              per text: llama.cpp's ids (`Llama.tokenize(add_bos=True, special=True)`, the
                     reference), transformers' ids from the same GGUF, and whether they agree
  detokenize         for some id lists: llama.cpp's `llama_detokenize` text without special tokens
                     (remove_special, like edgecut's `decode(ids, true)`) and with them
                     (unparse_special, like `decode(ids, false)`), and `Llama.detokenize`'s bytes
  chat               a system+user conversation rendered by transformers' apply_chat_template with
                     add_generation_prompt, from the GGUF's own `tokenizer.chat_template` or, when
                     the file carries none, Gemma 3's published template (the one in
                     google/gemma-3-*-it tokenizer_config.json)
  sentencepiece_model  a small SentencePiece ModelProto (the GGUF's first pieces, serialised by
                     protobuf) as base64, the pieces/scores/types it holds, and the ids
                     SentencePieceProcessor gives for a few texts with it
"""
import base64
import ctypes
import json
import os

import gguf
import llama_cpp
import sentencepiece as spm
import transformers
from sentencepiece import sentencepiece_model_pb2 as spm_pb2
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.environ.get("EDGECUT_MODELS", os.path.expanduser("~/.cache/edgecut/models"))
GGUF = "gemma-3-270m-q4_k_m.gguf"
OUT = os.path.join(ROOT, "tests", "fixtures", "gemma3-tokenizer.json")

# Gemma 3's chat template as published with the instruction-tuned checkpoints.
GEMMA3_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\\n\\n' -%}
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
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
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
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""

LONG = (
    "Tokenizers split text into pieces a model has learned. SentencePiece treats the input as a "
    "raw stream of Unicode characters, replaces spaces with a visible marker, and merges the pair "
    "of neighbouring pieces whose union scores best, again and again, until no neighbouring pair "
    "forms a piece of the vocabulary. Characters the vocabulary lacks fall back to their UTF-8 "
    "bytes, so nothing is ever lost: 𠀀, \ue000 and \x01 all survive the round trip. "
)


def long_text():
    """About 12,000 characters of mixed prose, code, whitespace and scripts, deterministic."""
    parts = []
    words = ["alpha", "Beta", "γάμμα", "дельта", "epsilon", "zêta", "η", "θήτα", "日本", "🙂",
             "mixed123", "snake_case", "CamelCase", "x", "  ", "\t", "\n", "\n\n", "...", "—"]
    state = 12345
    for i in range(1500):
        state = (state * 1103515245 + 12345) % (1 << 31)
        parts.append(words[state % len(words)])
        if state % 3:
            parts.append(" ")
    return LONG + "".join(parts) + LONG


TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "",
    " ",
    "   ",
    " leading space",
    "trailing space ",
    "  two leading spaces and two trailing  ",
    "multiple    spaces   inside     words",
    "line one\nline two\n\nline four\n",
    "\n\n\n\n",
    "\n" * 40,
    " " * 100 + "x",
    "tabs\tand\t\ttabs\t\t\t",
    "def foo(x):\n    if x > 0:\n        return x * 2\n    return -x\n",
    "fn main() {\n\tlet v = vec![1, 2, 3];\n\tprintln!(\"{:?}\", v);\n}\n",
    " \t \n \r\n  mixed whitespace\r\n",
    "Café naïve résumé façade Ångström São Paulo",
    "日本語のテキストと中文文本，还有한국어 문장.",
    "I ❤️ Rust 🦀🚀 👨‍👩‍👧‍👦 family 👍🏽",
    "مرحبا بالعالم، كيف حالك؟",
    "नमस्ते दुनिया, Русский текст, Ελληνικά, ไทย, עברית",
    "rare CJK 𠀀𪚥𰻞𱍐 and more",
    "private use \ue000\uf8ff\U000f0000 end",
    "controls a\x01b\x07c\x1b[0m\x7f",
    "nul\x00byte",
    "\u0301\u0308 lone combining e\u0301 a\u0308\u0323",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4<end_of_turn>\n",
    "<bos>text with bos inside",
    "<unk> and <mask> and <pad> and <eos>",
    "<unused0><unused99> [multimodal] <start_of_image>",
    "<start_of_turn incomplete <end_of_turn",
    "<table><tr><td>cell</td></tr></table>",
    "<s>not a special</s> token <b>bold</b>",
    "3.14159 1,000,000 2024-01-01 0x1F -42 1e-9",
    "https://example.com/path?query=1&x=y#frag user@example.org",
    "∑∫√∞ ≤ ≥ ≠ α β γ ∂x/∂t",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "literal \u2581 lower one eighth block \u2581\u2581",
    "ALL CAPS SHOUTING, MiXeD cAsE, snake_case_name, kebab-case-name",
    LONG,
    long_text(),
]

# Indices into TEXTS whose ids are also detokenized (none starts with a space: Llama.detokenize
# drops one after BOS, which llama_detokenize does not).
DETOKENIZE = [0, 17, 19, 22, 25, 28, 34]

SPM_TEXTS = ["Hello world", "the cat sat on the mat", "abc xyz 123", "日本"]


def dump(v, depth=0):
    """JSON with one line per number array, so that the file stays reviewable."""
    pad, inner = " " * depth, " " * (depth + 1)
    numbers = isinstance(v, list) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    if numbers:
        return json.dumps(v)
    if isinstance(v, dict):
        items = [f"{inner}{json.dumps(k)}: {dump(x, depth + 1)}" for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(v, list):
        return "[\n" + ",\n".join(inner + dump(x, depth + 1) for x in v) + "\n" + pad + "]"
    return json.dumps(v, ensure_ascii=False)


def detokenize(model, ids, remove_special, unparse_special):
    vocab = llama_cpp.llama_model_get_vocab(model.model)
    arr = (llama_cpp.llama_token * len(ids))(*ids)
    size = 4 * sum(8 for _ in ids) + 64
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, size, remove_special, unparse_special)
    assert 0 <= n <= size, n
    return buf.raw[:n].decode("utf-8", errors="replace")


def small_sentencepiece_model(reader):
    """A BPE ModelProto from the GGUF's first pieces: normal pieces keep the default type
    (unset on the wire), the rest say theirs."""
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    scores = reader.fields["tokenizer.ggml.scores"].contents()
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    n = 1000
    m = spm_pb2.ModelProto()
    for i in range(n):
        p = m.pieces.add()
        p.piece = tokens[i]
        p.score = scores[i]
        if types[i] != 1:
            p.type = types[i]
    m.trainer_spec.model_type = spm_pb2.TrainerSpec.BPE
    m.trainer_spec.vocab_size = n
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.unk_id = 3
    m.trainer_spec.bos_id = 2
    m.trainer_spec.eos_id = 1
    m.trainer_spec.pad_id = 0
    m.trainer_spec.input.append("corpus.txt")
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = False
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.precompiled_charsmap = b""
    blob = m.SerializeToString()
    sp = spm.SentencePieceProcessor(model_proto=blob)
    return {
        "b64": base64.b64encode(blob).decode(),
        "pieces": [tokens[i] for i in range(n)],
        "scores": [float(scores[i]) for i in range(n)],
        "types": [int(types[i]) for i in range(n)],
        "bos_id": 2,
        "eos_id": 1,
        "unk_id": 3,
        "add_dummy_prefix": False,
        "cases": [{"text": t, "ids": sp.encode(t)} for t in SPM_TEXTS],
    }


def main():
    path = os.path.join(MODELS, GGUF)
    reader = gguf.GGUFReader(path)
    llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
    hf = AutoTokenizer.from_pretrained(MODELS, gguf_file=GGUF)

    cases = []
    disagree = []
    for t in TEXTS:
        ids = llm.tokenize(t.encode("utf-8"), add_bos=True, special=True)
        hf_ids = hf.encode(t, add_special_tokens=True)
        case = {"text": t, "ids": ids, "transformers_agrees": hf_ids == ids}
        if hf_ids != ids:
            case["transformers_ids"] = hf_ids
            disagree.append(t)
        cases.append(case)

    detok = []
    for i in DETOKENIZE:
        ids = cases[i]["ids"]
        detok.append({
            "ids": ids,
            "text": detokenize(llm, ids, True, False),
            "text_special": detokenize(llm, ids, False, True),
            "llama_detokenize": llm.detokenize(ids).decode("utf-8", errors="replace"),
        })

    field = reader.fields.get("tokenizer.chat_template")
    if field is not None:
        template, source = field.contents(), "the GGUF's tokenizer.chat_template"
    else:
        template, source = GEMMA3_TEMPLATE, "Gemma 3's published template (the GGUF has none)"
    messages = [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": "  What is the capital of France?  "},
    ]
    rendered = hf.apply_chat_template(messages, chat_template=template, tokenize=False,
                                      add_generation_prompt=True)
    chat_ids = llm.tokenize(rendered.encode("utf-8"), add_bos=False, special=True)

    out = {
        "model": GGUF,
        "llama_cpp_python": llama_cpp.__version__,
        "transformers": transformers.__version__,
        "cases": cases,
        "transformers_disagrees_on": disagree,
        "detokenize": detok,
        "chat": {
            "template": template,
            "template_source": source,
            "messages": messages,
            "add_generation_prompt": True,
            "rendered": rendered,
            "ids": chat_ids,
        },
        "sentencepiece_model": small_sentencepiece_model(reader),
    }
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(dump(out) + "\n")
    print(f"{len(cases)} texts, transformers disagrees on {len(disagree)}: {disagree!r}")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
