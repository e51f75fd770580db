#!/usr/bin/env python3
"""Records the retrieval models' references (run once; outputs committed): tiny seeded random
checkpoints made by `transformers`, and what PyTorch computes from them.

    ~/.cache/edgecut/refvenv/bin/python tests/reference/make_retrieval_fixtures.py

Writes, under tests/fixtures/:
  xlmr-tiny/            XLMRobertaModel, a SentencePiece Unigram vocabulary trained here on a
                        multilingual corpus (converted to tokenizer.json as XLMRobertaTokenizerFast
                        does), sentence-transformers' mean pooling and normalisation
  xlmr-rerank-tiny/     XLMRobertaForSequenceClassification with one label, same vocabulary
  bert-rerank-tiny/     BertForSequenceClassification with one label, MiniLM's WordPiece
  retrieval-tiny.json   per model: token ids and fp32 sentence vectors of 40 multilingual texts
                        (also for qwen3-tiny as an embedder: last-token pooling, normalised, the
                        shape of Qwen3-Embedding; the test adds sentence-transformers' pooling
                        files to a copy of tests/fixtures/qwen3-tiny),
                        cross-encoder logits of 20 query/document pairs, and the `tokenizers`
                        reference ids of every text
"""
import json
import os
import shutil
import tempfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
MINILM_TOK = os.path.join(FIXTURES, "distilbert-tiny")

# 40 texts: CJK, Arabic, Devanagari, Hebrew, Cyrillic, Thai, emoji, accents, digits, code.
TEXTS = [
    "A man is eating food.",
    "A man is riding a horse.",
    "Edge devices run the first layers; a GPU server runs the rest.",
    "Ünïcödé àccénts: café, naïve, coöperate, Straße, Ærøskøbing.",
    "Ça va? Très bien, merci. ¿Dónde está la biblioteca?",
    "Die Würde des Menschen ist unantastbar.",
    "Привет, как дела? Это тест на русском языке.",
    "Москва — столица России.",
    "مرحبا بالعالم، هذا اختبار.",
    "القاهرة هي عاصمة مصر.",
    "שלום עולם, זו בדיקה.",
    "नमस्ते दुनिया, यह एक परीक्षण है।",
    "भारत की राजधानी नई दिल्ली है।",
    "今天天气很好，我们去公园散步吧。",
    "北京是中国的首都。",
    "東京は日本の首都です。ラーメンが好きです。",
    "안녕하세요, 만나서 반갑습니다.",
    "서울은 한국의 수도입니다.",
    "สวัสดีครับ ยินดีต้อนรับ",
    "Γειά σου Κόσμε, αυτό είναι ένα τεστ.",
    "I love pizza 🍕🍕 and tacos 🌮! 😀😃😄 👍🏽 👨‍👩‍👧‍👦",
    "🙂",
    "",
    "   ",
    "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG",
    "The year 1969: 3.14159, 2^10 = 1024, 1e-12, $4,500.00 and 99.9%.",
    "fn main() { println!(\"hello {}\", x + 1); } // code",
    "https://example.com/path?query=edge&cut=3#fragment user@example.org",
    "ﬁne ligatures, ｆｕｌｌｗｉｄｔｈ ＡＢＣ, ①②③, ™ and ½",
    "Tiếng Việt có dấu: Hà Nội, Sài Gòn.",
    "Türkçe: İstanbul, ığdır, şeker, çiçek.",
    "Polski: zażółć gęślą jaźń.",
    "Kiswahili: habari za asubuhi.",
    "Português: a ação e a emoção do coração.",
    "Paris is the capital of France.",
    "Berlin is the capital of Germany.",
    "The cat sat on the mat.",
    "Quantized encoders rerank documents on the device.",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "Le chat est assis sur le tapis. " * 8,
]
assert len(TEXTS) == 40

# 20 query/document pairs (documents of several lengths, some across languages).
QUERIES = [
    "What is the capital of France?",
    "Wo ist die Katze?",
    "中国的首都是哪里？",
    "how do edge devices split a model",
    "राजधानी",
]
DOCS = [
    "Paris is the capital of France.",
    "The cat sat on the mat.",
    "北京是中国的首都。",
    "Edge devices run the first layers; a GPU server runs the rest. " * 3,
]
PAIRS = [(q, d) for q in QUERIES for d in DOCS]
assert len(PAIRS) == 20

# The Unigram vocabulary's training corpus: the texts, and more of each script.
CORPUS_EXTRA = [
    "The quick brown fox jumps over the lazy dog while the committee debates edge inference.",
    "Split inference sends compressed INT8 activations over the network to a server.",
    "Les modèles multilingues comprennent le français, l'allemand et l'espagnol.",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "El rápido zorro marrón salta sobre el perro perezoso.",
    "Быстрая коричневая лиса прыгает через ленивую собаку.",
    "الثعلب البني السريع يقفز فوق الكلب الكسول.",
    "तेज़ भूरी लोमड़ी आलसी कुत्ते के ऊपर कूदती है।",
    "敏捷的棕色狐狸跳过了懒狗。我们在边缘设备上运行模型。",
    "素早い茶色の狐が怠け者の犬を飛び越える。",
    "빠른 갈색 여우가 게으른 개를 뛰어넘는다.",
    "สุนัขจิ้งจอกสีน้ำตาลกระโดดข้ามสุนัขขี้เกียจ",
    "Η γρήγορη καφέ αλεπού πηδάει πάνω από το τεμπέλικο σκυλί.",
    "השועל החום המהיר קופץ מעל הכלב העצלן.",
]


def rounded(v):
    return [float(f"{x:.7g}") for x in v]


def widen(model, std_w=0.25, std_qk=0.1, std_b=0.05, skip=("LayerNorm",)):
    """Wider weights than the default init, so outputs depend on the text; q and k stay small so
    attention is smooth (a tiny random model with peaky attention flips under any rounding)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(s in name for s in skip):
                continue
            if name.endswith("weight"):
                std = 0.3 if "embeddings" in name else std_w
                if "query" in name or "key" in name:
                    std = std_qk
                p.normal_(0.0, std)
            else:
                p.normal_(0.0, std_b)


def unigram_tokenizer(out_dir):
    """Trains a SentencePiece Unigram model (XLM-R's normaliser, nmt_nfkc) and converts it to
    tokenizer.json as XLMRobertaTokenizerFast does."""
    import sentencepiece as spm
    from transformers import XLMRobertaTokenizerFast
    from transformers.convert_slow_tokenizer import XLMRobertaConverter

    tmp = tempfile.mkdtemp()
    corpus = os.path.join(tmp, "corpus.txt")
    with open(corpus, "w") as f:
        for line in (TEXTS + CORPUS_EXTRA + QUERIES + DOCS) * 3:
            if line.strip():
                f.write(line.strip() + "\n")
    spm.SentencePieceTrainer.train(
        input=corpus, model_prefix=os.path.join(tmp, "sp"), model_type="unigram",
        vocab_size=900, character_coverage=1.0, normalization_rule_name="nmt_nfkc",
        hard_vocab_limit=False, seed_sentencepiece_size=100000, num_threads=1,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2)
    class Spm:
        """What XLMRobertaConverter reads of a slow tokenizer."""
        vocab_file = os.path.join(tmp, "sp.model")

        @staticmethod
        def convert_tokens_to_ids(t):
            return {"<s>": 0, "</s>": 2}[t]

    converted = XLMRobertaConverter(Spm()).converted()
    tok = XLMRobertaTokenizerFast(tokenizer_object=converted, model_max_length=128)
    tok.save_pretrained(out_dir)
    shutil.rmtree(tmp)
    return tok


def st_pooling(out_dir, dim):
    """sentence-transformers' module files: mean pooling, then normalisation."""
    os.makedirs(os.path.join(out_dir, "1_Pooling"), exist_ok=True)
    with open(os.path.join(out_dir, "1_Pooling", "config.json"), "w") as f:
        json.dump({"word_embedding_dimension": dim, "pooling_mode_cls_token": False,
                   "pooling_mode_mean_tokens": True}, f)
    with open(os.path.join(out_dir, "modules.json"), "w") as f:
        json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                   {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}], f)
    with open(os.path.join(out_dir, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": 128, "do_lower_case": False}, f)


def xlmr():
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaModel

    out = {}
    emb_dir = os.path.join(FIXTURES, "xlmr-tiny")
    shutil.rmtree(emb_dir, ignore_errors=True)
    tok = unigram_tokenizer(emb_dir)
    # 128 positions after the padding offset (pad 1: positions start at 2).
    base = dict(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=128, max_position_embeddings=130, type_vocab_size=1,
                pad_token_id=1, bos_token_id=0, eos_token_id=2)
    torch.manual_seed(20261206)
    model = XLMRobertaModel(XLMRobertaConfig(**base), add_pooling_layer=False).eval()
    widen(model)
    model.save_pretrained(emb_dir, safe_serialization=True)
    st_pooling(emb_dir, 64)
    cases = []
    with torch.no_grad():
        for text in TEXTS:
            enc = tok(text, truncation=True, max_length=128, return_tensors="pt")
            h = model(**enc).last_hidden_state[0]
            e = h.mean(0)
            e = e / e.norm()
            cases.append({"text": text, "ids": enc["input_ids"][0].tolist(), "embedding": rounded(e.tolist())})
    out["xlmr-tiny"] = {"pooling": "mean", "normalize": True, "cases": cases}

    rr_dir = os.path.join(FIXTURES, "xlmr-rerank-tiny")
    shutil.rmtree(rr_dir, ignore_errors=True)
    tok.save_pretrained(rr_dir)
    torch.manual_seed(20261207)
    rr = XLMRobertaForSequenceClassification(XLMRobertaConfig(**base, num_labels=1)).eval()
    widen(rr)
    rr.save_pretrained(rr_dir, safe_serialization=True)
    out["xlmr-rerank-tiny"] = {"pairs": pairs_ref(rr, tok)}
    return tok, out


def pairs_ref(model, tok):
    cases = []
    with torch.no_grad():
        for q, d in PAIRS:
            enc = tok(q, d, truncation="only_second", max_length=128, return_tensors="pt")
            logit = model(**enc).logits[0, 0].item()
            cases.append({"query": q, "document": d, "ids": enc["input_ids"][0].tolist(),
                          "logit": float(f"{logit:.7g}")})
    scores = sorted(c["logit"] for c in cases)
    gaps = min(b - a for a, b in zip(scores, scores[1:]))
    print(f"  {len(cases)} pairs, logits {scores[0]:.3f}..{scores[-1]:.3f}, smallest gap {gaps:.4f}")
    return cases


def bert_rerank():
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    out_dir = os.path.join(FIXTURES, "bert-rerank-tiny")
    shutil.rmtree(out_dir, ignore_errors=True)
    torch.manual_seed(20261208)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512, num_labels=1)
    model = BertForSequenceClassification(cfg).eval()
    widen(model)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())
    model.half().save_pretrained(out_dir, safe_serialization=True)
    model.float()
    for name in ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]:
        shutil.copy(os.path.join(MINILM_TOK, name), out_dir)
    tok = AutoTokenizer.from_pretrained(out_dir)
    return {"bert-rerank-tiny": {"pairs": pairs_ref(model, tok)}}


def qwen3_last_token():
    """qwen3-tiny as Qwen3-Embedding runs: the final norm's output at the last token,
    L2-normalised."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = os.path.join(FIXTURES, "qwen3-tiny")
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    cases = []
    with torch.no_grad():
        for text in TEXTS:
            ids = tok(text)["input_ids"]
            if not ids:
                continue  # an empty text has no last token
            h = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
            cases.append({"text": text, "ids": ids, "embedding": rounded((h / h.norm()).tolist())})
    return {"qwen3-tiny-last": {"pooling": "last", "normalize": True, "cases": cases}}


def tokenization(tok):
    """The `tokenizers` library's ids of every text (what edgecut must reproduce)."""
    return [{"text": t, "ids": tok(t)["input_ids"]} for t in TEXTS]


if __name__ == "__main__":
    import tokenizers
    import transformers

    torch.set_num_threads(2)
    tok, out = xlmr()
    out.update(bert_rerank())
    out.update(qwen3_last_token())
    doc = {"made_by": f"tests/reference/make_retrieval_fixtures.py (torch {torch.__version__}, "
                      f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__})",
           "models": out, "xlmr_tokenization": tokenization(tok)}
    with open(os.path.join(FIXTURES, "retrieval-tiny.json"), "w") as f:
        json.dump(doc, f, ensure_ascii=False)
    print(f"vocabulary {len(tok)}; wrote tests/fixtures/retrieval-tiny.json")
