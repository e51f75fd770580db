#!/usr/bin/env python3
"""Records ModernBERT's references (run once; outputs committed): a tiny seeded random
ModernBertModel made by `transformers`, and what PyTorch computes from it.

    ~/.cache/edgecut/refvenv/bin/python tests/reference/make_modernbert_fixtures.py

Writes, under tests/fixtures/:
  modernbert-tiny/       ModernBertModel (4 blocks, global attention on blocks 0 and 3, local
                         attention of 8 positions, 4 on either side, on 1 and 2; rotary bases
                         160000 and 10000; no norm shifts, no biases: ModernBERT's defaults), a
                         byte-level BPE vocabulary trained here with [CLS] ... [SEP] around a
                         text (ModernBERT's tokenizer is that shape), sentence-transformers' mean
                         pooling and normalisation
  modernbert-rerank-tiny/ ModernBertForSequenceClassification with one label (a reranker of
                         gte-reranker-modernbert's shape: mean pooling, then the prediction head's
                         dense, GELU and norm, then the classifier), same vocabulary
  modernbert-tiny.json   token ids and fp32 sentence vectors of the 40 multilingual texts of
                         make_retrieval_fixtures.py (most longer than the local window), the
                         same texts' ids from `tokenizers`, and the reranker's logits of the 20
                         query/document pairs
"""
import json
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_retrieval_fixtures import (CORPUS_EXTRA, DOCS, FIXTURES, QUERIES, TEXTS,  # noqa: E402
                                     pairs_ref, rounded, st_pooling)

OUT = os.path.join(FIXTURES, "modernbert-tiny")
SPECIAL = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]


def bpe_tokenizer():
    """A byte-level BPE vocabulary with ModernBERT's special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [t for t in (TEXTS + CORPUS_EXTRA + QUERIES + DOCS) * 3 if t.strip()]
    tok.train_from_iterator(corpus, trainer=trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]",
                                   model_max_length=128)
    fast.save_pretrained(OUT)
    return fast


def widen(model):
    """Wider weights than the default init, so outputs depend on the text; q and k small so
    attention is smooth; norm scales around 1, so they are not all ones."""
    h = model.config.hidden_size
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.1)
            elif "Wqkv" in name:
                p.normal_(0.0, 0.25)
                p[: 2 * h].normal_(0.0, 0.1)
            elif "embeddings" in name:
                p.normal_(0.0, 0.3)
            else:
                p.normal_(0.0, 0.25)


def main():
    import tokenizers
    import transformers
    from transformers import ModernBertConfig, ModernBertModel

    torch.set_num_threads(2)
    shutil.rmtree(OUT, ignore_errors=True)
    tok = bpe_tokenizer()
    cfg = ModernBertConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=4,
        num_attention_heads=4, max_position_embeddings=256, local_attention=8,
        global_attn_every_n_layers=3, pad_token_id=tok.pad_token_id,
        bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
        cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
        attn_implementation="eager")
    assert cfg.layer_types == ["full_attention", "sliding_attention", "sliding_attention",
                               "full_attention"], cfg.layer_types
    torch.manual_seed(20261209)
    model = ModernBertModel(cfg).eval()
    widen(model)
    model.save_pretrained(OUT, safe_serialization=True)
    st_pooling(OUT, 64)
    cases = []
    longer = 0
    with torch.no_grad():
        for text in TEXTS:
            enc = tok(text, truncation=True, max_length=128, return_tensors="pt")
            h = model(**enc).last_hidden_state[0]
            e = h.mean(0)
            e = e / e.norm()
            ids = enc["input_ids"][0].tolist()
            longer += len(ids) > 9
            cases.append({"text": text, "ids": ids, "embedding": rounded(e.tolist())})
    rr_dir = os.path.join(FIXTURES, "modernbert-rerank-tiny")
    shutil.rmtree(rr_dir, ignore_errors=True)
    tok.save_pretrained(rr_dir)
    from transformers import ModernBertForSequenceClassification
    torch.manual_seed(20261211)
    rr = ModernBertForSequenceClassification(
        ModernBertConfig(**{**{k: v for k, v in cfg.to_dict().items()
                               if k not in ("id2label", "label2id")},
                            "num_labels": 1, "classifier_pooling": "mean"})).eval()
    widen(rr)
    rr.save_pretrained(rr_dir, safe_serialization=True)
    pairs = pairs_ref(rr, tok)
    doc = {"made_by": f"tests/reference/make_modernbert_fixtures.py (torch {torch.__version__}, "
                      f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__})",
           "pooling": "mean", "normalize": True, "cases": cases,
           "tokenization": [{"text": t, "ids": tok(t)["input_ids"]} for t in TEXTS],
           "rerank": pairs}
    with open(os.path.join(FIXTURES, "modernbert-tiny.json"), "w") as f:
        json.dump(doc, f, ensure_ascii=False)
    print(f"vocabulary {len(tok)}; {longer} of {len(TEXTS)} texts longer than the window; "
          "wrote tests/fixtures/modernbert-tiny.json")


if __name__ == "__main__":
    main()
