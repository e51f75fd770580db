#!/usr/bin/env python3
"""Records CLIP's references (run once; outputs committed): test images, what
`CLIPImageProcessor` (its PIL backend, `CLIPImageProcessorPil`: resize as PIL computes it) makes
of them, and tiny seeded random CLIP checkpoints made by `transformers` with what PyTorch computes
from them.

    ~/.cache/edgecut/refvenv/bin/python tests/reference/make_clip_fixtures.py

Needs torch, transformers, tokenizers, pillow and scikit-image (tests/reference/requirements-fixtures.txt).

Writes, under tests/fixtures/:
  clip-images/          21 images of odd sizes and modes (RGB, RGBA, LA, palette with
                        transparency, grayscale, 16-bit RGB and grayscale PNG, CMYK, progressive,
                        4:2:0 and 4:4:4 JPEG, one with EXIF orientation 6), from scikit-image's
                        sample photographs and synthetic patterns
  clip-images/expected/ per image, the 224x224 crop CLIPImageProcessor makes, as an RGB PNG: its
                        pixel tensor is exactly (crop / 255 - mean) / std (checked here), so the
                        PNG holds it losslessly
  clip-tiny/            CLIPModel, quick_gelu, a byte-level BPE vocabulary with CLIP's `</w>`
                        suffix trained here, a 32x32 image processor
  clip-tiny-gelu/       the same with gelu in both towers
  clip-tiny.json        per model: texts with their ids and normalised text embeddings, images
                        with their 32x32 pixel tensors and normalised image embeddings, the logit
                        scale and one image's zero-shot probabilities over the texts
"""
import io
import json
import os
import shutil
import struct
import zlib

import numpy as np
import torch
from PIL import Image, ImageOps
from skimage import data as skdata

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")
IMAGES = os.path.join(FIXTURES, "clip-images")
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


def png16(arr):
    """A 16-bit PNG (PIL cannot write 16-bit RGB): grey (h, w) or RGB (h, w, 3) uint16."""
    h, w = arr.shape[:2]
    color = 2 if arr.ndim == 3 else 0
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, color, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def photo(name, size):
    im = Image.fromarray(getattr(skdata, name)())
    return im.resize(size, Image.Resampling.LANCZOS) if size else im


def save(im, name, **kw):
    path = os.path.join(IMAGES, name)
    im.save(path, **kw)
    return name


def make_images():
    """Writes the test images; returns [(file name, what a sane loader should see)], where the
    second is None when PIL's own reading is the reference, else the 8-bit image to compare."""
    os.makedirs(IMAGES, exist_ok=True)
    rng = np.random.RandomState(7)
    out = []
    out.append((save(photo("astronaut", (301, 199)), "01-astronaut.jpg", quality=92), None))
    out.append((save(photo("coffee", (97, 61)), "02-coffee.png"), None))
    out.append((save(photo("chelsea", None), "03-chelsea.jpg", quality=90), None))
    out.append((save(photo("rocket", (213, 320)), "04-rocket.png"), None))
    out.append((save(photo("camera", (257, 257)), "05-camera-grey.png"), None))
    out.append((save(photo("coins", (384, 303)), "06-coins-grey.jpg", quality=90), None))
    out.append((save(photo("logo", (250, 250)).convert("RGBA"), "07-logo-rgba.png"), None))
    y, x = np.mgrid[0:29, 0:31]
    grad = np.stack([x * 8, y * 8, (x + y) * 4], -1).astype(np.uint8)
    out.append((save(Image.fromarray(grad), "08-gradient-31x29.png"), None))
    noise = rng.randint(0, 256, (224, 224, 3)).astype(np.uint8)
    out.append((save(Image.fromarray(noise), "09-noise-224.png"), None))
    noise = rng.randint(0, 256, (224, 225, 3)).astype(np.uint8)
    out.append((save(Image.fromarray(noise), "10-noise-225x224.png"), None))
    out.append((save(photo("astronaut", (640, 48)), "11-wide-640x48.png"), None))
    # 16-bit RGB: PIL keeps the high byte of each sample, as a sane loader does.
    rgb16 = np.asarray(photo("chelsea", (120, 90))).astype(np.uint16) * 257 + rng.randint(0, 200, (90, 120, 3)).astype(np.uint16)
    with open(os.path.join(IMAGES, "12-chelsea-rgb16.png"), "wb") as f:
        f.write(png16(rgb16))
    out.append(("12-chelsea-rgb16.png", None))
    # 16-bit grey: PIL's convert("RGB") clips every sample above 255 to white; edgecut keeps the
    # high byte, so the reference is the processor on that 8-bit image.
    g16 = np.asarray(photo("camera", (100, 77))).astype(np.uint16) * 256 + 128
    with open(os.path.join(IMAGES, "13-camera-grey16.png"), "wb") as f:
        f.write(png16(g16))
    out.append(("13-camera-grey16.png", Image.fromarray((g16 >> 8).astype(np.uint8))))
    out.append((save(photo("chelsea", (180, 120)).convert("CMYK"), "14-chelsea-cmyk.jpg", quality=95), None))
    pal = photo("coffee", (64, 96)).convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    pal.info["transparency"] = 3
    out.append((save(pal, "15-coffee-palette-trns.png", transparency=3), None))
    la = Image.merge("LA", [photo("camera", (90, 70)), Image.fromarray(
        (np.mgrid[0:70, 0:90][1] * 2.8).astype(np.uint8))])
    out.append((save(la, "16-camera-la.png"), None))
    out.append((save(photo("immunohistochemistry", (333, 333)), "17-ihc-420.jpg", quality=88), None))
    out.append((save(photo("astronaut", (150, 230)), "18-astronaut-444.jpg", quality=93, subsampling=0), None))
    out.append((save(photo("coffee", (200, 150)), "19-coffee-progressive.jpg", quality=85, progressive=True), None))
    out.append((save(photo("rocket", (7, 300)), "20-rocket-7x300.png"), None))
    # EXIF orientation 6 (rotate 90 clockwise to view): edgecut applies it, the reference is the
    # processor on the transposed image.
    im = photo("chelsea", (160, 100))
    exif = Image.Exif()
    exif[0x0112] = 6
    name = save(im, "21-chelsea-exif6.jpg", quality=92, exif=exif.tobytes())
    out.append((name, ImageOps.exif_transpose(Image.open(os.path.join(IMAGES, name)))))
    return out


def processor(size):
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def pixels(proc, im):
    return proc(images=im, return_tensors="np")["pixel_values"][0]


def to_u8(px):
    """The 8-bit crop behind a pixel tensor, checked to map back to it exactly."""
    mean = np.array(MEAN, np.float32)[:, None, None]
    std = np.array(STD, np.float32)[:, None, None]
    u8 = np.rint((px * std + mean) * 255).astype(np.int64)
    assert u8.min() >= 0 and u8.max() <= 255
    u8 = u8.astype(np.uint8)
    back = ((u8.astype(np.float64) * (1 / 255)).astype(np.float32) - mean) / std
    assert np.array_equal(back, px), np.abs(back - px).max()
    return u8


def record_preprocessing(images):
    os.makedirs(os.path.join(IMAGES, "expected"), exist_ok=True)
    proc = processor(224)
    rows = []
    for name, ref in images:
        im = ref if ref is not None else Image.open(os.path.join(IMAGES, name))
        mode = Image.open(os.path.join(IMAGES, name)).mode
        u8 = to_u8(pixels(proc, im))
        out = os.path.splitext(name)[0] + ".png"
        Image.fromarray(np.moveaxis(u8, 0, -1)).save(os.path.join(IMAGES, "expected", out))
        w, h = Image.open(os.path.join(IMAGES, name)).size
        rows.append({"file": name, "expected": out, "pil_mode": mode, "width": w, "height": h,
                     "reference": "pil" if ref is None else "adjusted"})
    with open(os.path.join(IMAGES, "expected", "index.json"), "w") as f:
        json.dump({"size": 224, "mean": MEAN, "std": STD, "images": rows}, f, indent=1)


TEXTS = [
    "a photo of a cat",
    "a photo of a dog",
    "an astronaut in a white suit",
    "a cup of coffee on a table",
    "a rocket on the launch pad",
    "A grey-scale picture of a cameraman!",
    "coins",
    "Ünïcödé àccénts, café and naïve",
    "",
    "the quick brown fox jumps over the lazy dog " * 12,
]

CORPUS = [
    "a photo of a {} on a {}".format(a, b)
    for a in ["cat", "dog", "car", "bird", "person", "rocket", "cup", "coin", "astronaut", "fox"]
    for b in ["table", "street", "beach", "mat", "launch pad", "desk", "grass", "moon"]
] + TEXTS + ["the quick brown fox jumps over the lazy dog", "grey scale picture of a cameraman"]


def make_tokenizer(path):
    """A byte-level BPE with CLIP's normaliser, pre-tokeniser, `</w>` suffix and post-processor
    (what transformers' CLIPConverter builds from vocab.json and merges.txt)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>", continuing_subword_prefix=""))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                           normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                  end_of_word_suffix="</w>", initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    bos, eos = tok.token_to_id("<|startoftext|>"), tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.RobertaProcessing(("<|endoftext|>", eos), ("<|startoftext|>", bos),
                                                      trim_offsets=False, add_prefix_space=False)
    tok.save(path)
    return tok, bos, eos


def make_model(name, act, seed, tok_path, bos, eos, vocab):
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizerFast

    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, hidden_act=act,
                         bos_token_id=bos, eos_token_id=eos, pad_token_id=eos),
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                           image_size=32, patch_size=8, hidden_act=act),
        projection_dim=32,
    )
    model = CLIPModel(cfg).eval()
    # Random init leaves the norms at 1 and 0 and the logit scale at its default: perturb them
    # so a converter that drops one is caught.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "layer_norm" in n or "layrnorm" in n or "layernorm" in n:
                p.add_(torch.randn_like(p) * 0.1)
            if n == "logit_scale":
                p.fill_(3.1)
    d = os.path.join(FIXTURES, name)
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d, safe_serialization=True)
    shutil.copy(tok_path, os.path.join(d, "tokenizer.json"))
    CLIPTokenizerFast(tokenizer_file=tok_path, bos_token="<|startoftext|>", eos_token="<|endoftext|>",
                      pad_token="<|endoftext|>", unk_token="<|endoftext|>", model_max_length=77).save_pretrained(d)
    processor(32).save_pretrained(d)
    return model


def record_model(model, tok, images, texts):
    proc = processor(32)
    enc = [tok.encode(t).ids[:77] for t in texts]
    for e in enc:
        if len(e) == 77:
            e[-1] = tok.token_to_id("<|endoftext|>")
    rows = []
    with torch.no_grad():
        for t, ids in zip(texts, enc):
            v = model.get_text_features(input_ids=torch.tensor([ids]))
            v = v.pooler_output if hasattr(v, "pooler_output") else v
            v = torch.nn.functional.normalize(v, dim=-1)[0]
            rows.append({"text": t, "ids": ids, "embedding": v.tolist()})
        imgs = []
        for name, ref in images:
            im = ref if ref is not None else Image.open(os.path.join(IMAGES, name))
            px = pixels(proc, im)
            v = model.get_image_features(pixel_values=torch.from_numpy(px)[None])
            v = v.pooler_output if hasattr(v, "pooler_output") else v
            v = torch.nn.functional.normalize(v, dim=-1)[0]
            imgs.append({"file": name, "pixels": px.ravel().tolist(), "embedding": v.tolist()})
        # Zero-shot: the first image against the first five texts, as CLIPModel computes it.
        ti = torch.tensor([rows[i]["embedding"] for i in range(5)])
        ii = torch.tensor([imgs[0]["embedding"]])
        logits = model.logit_scale.exp() * ii @ ti.T
        probs = logits.softmax(-1)[0].tolist()
    return {"texts": rows, "images": imgs, "logit_scale": float(model.logit_scale),
            "zero_shot": {"image": imgs[0]["file"], "texts": texts[:5], "probabilities": probs}}


def main():
    images = make_images()
    record_preprocessing(images)
    tok_path = "/tmp/clip-tiny-tokenizer.json"
    tok, bos, eos = make_tokenizer(tok_path)
    vocab = tok.get_vocab_size()
    out = {}
    quick = make_model("clip-tiny", "quick_gelu", 11, tok_path, bos, eos, vocab)
    out["clip-tiny"] = record_model(quick, tok, images[:8] + images[11:14], TEXTS)
    gelu = make_model("clip-tiny-gelu", "gelu", 12, tok_path, bos, eos, vocab)
    out["clip-tiny-gelu"] = record_model(gelu, tok, images[:4], TEXTS[:6])
    with open(os.path.join(FIXTURES, "clip-tiny.json"), "w") as f:
        json.dump({"models": out}, f)
    print("wrote", len(images), "images and", list(out))


if __name__ == "__main__":
    main()
