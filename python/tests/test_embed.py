"""Embeddings and reranking through Python against the Rust facade (bit for bit, through the
CLI) and PyTorch (the committed sentence-transformers fixtures)."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

import edgecut

REPO = Path(__file__).resolve().parents[2]


def cli_embed(cli: Path, model: Path, texts: List[str], batch: int, max_len: int) -> np.ndarray:
    out = subprocess.run(
        [str(cli), "embed", "-m", str(model), "--format", "json", "--batch-size", str(batch),
         "--max-seq-len", str(max_len), "--threads", "2", "--", *texts],
        capture_output=True, text=True, check=True,
    )
    # The CLI prints each f32 in its shortest round-trip form: float32 of it is exact.
    return np.array(json.loads(out.stdout), dtype=np.float32)


@pytest.mark.parametrize("max_len", [256, 512])
def test_embeddings_equal_the_facade_bit_for_bit_and_match_pytorch(
    cli: Path, minilm: Path, minilm_fixture: Dict[str, Any], max_len: int
) -> None:
    cases = [c for c in minilm_fixture["cases"] if c["max_len"] == max_len]
    texts = [c["text"] for c in cases]
    assert texts
    emb = edgecut.Embedder(minilm, threads=2, max_seq_len=max_len, batch_size=8)
    got = emb.embed(texts)
    assert got.dtype == np.float32 and got.shape == (len(texts), 384)
    want = cli_embed(cli, minilm, texts, batch=8, max_len=max_len)
    assert got.shape == want.shape
    differ = np.flatnonzero((got != want).any(axis=1))
    assert differ.size == 0, f"rows differing from the CLI: {differ.tolist()}"
    # PyTorch fp32 (sentence-transformers): the threshold the Rust fidelity tests hold Q8_0 to.
    ref = np.array([c["embedding"] for c in cases], dtype=np.float64)
    cos = (got.astype(np.float64) * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    print(f"max_len {max_len}: {len(texts)} texts, cosine to PyTorch min {cos.min():.5f} mean {cos.mean():.5f}")
    assert cos.min() >= 0.999, cos
    # The model normalises its vectors.
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_one_text_gives_a_vector_and_options_apply(minilm: Path) -> None:
    emb = edgecut.Embedder(minilm, threads=2)
    v = emb.embed("A man is eating food.")
    assert v.shape == (384,) and v.flags.writeable
    assert np.array_equal(v, emb.embed(["A man is eating food."])[0])
    short = emb.embed(["A man is eating food."], dimensions=64)
    assert short.shape == (1, 64)
    assert abs(float(np.linalg.norm(short)) - 1.0) < 1e-5
    assert np.allclose(short[0], v[:64] / np.linalg.norm(v[:64]), atol=1e-6)
    assert np.array_equal(emb.embed(["x"], prefix="query: "), emb.embed(["query: x"]))
    assert emb.embed([]).shape == (0, 384)
    with pytest.raises(edgecut.InvalidInputError, match="dimensions"):
        emb.embed(["x"], dimensions=1000)
    with pytest.raises(ValueError):
        emb.embed(["x"], batch_size=0)


def test_two_threads_embedding_at_once_equal_one_after_another(minilm: Path, minilm_fixture: Dict[str, Any]) -> None:
    texts = [c["text"] for c in minilm_fixture["cases"] if c["max_len"] == 256]
    emb = edgecut.Embedder(minilm, threads=1)
    halves = [texts[: len(texts) // 2], texts[len(texts) // 2:]]
    alone = [emb.embed(h) for h in halves]
    together: List[List[np.ndarray]] = [[], []]
    start = threading.Barrier(2)

    def work(i: int) -> None:
        start.wait()
        for _ in range(5):
            together[i].append(emb.embed(halves[i]))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(2):
        assert len(together[i]) == 5
        for got in together[i]:
            assert np.array_equal(got, alone[i])


def test_rerank_equals_the_cli_and_matches_pytorch(
    cli: Path, reranker_path: Path, rerank_fixture: Dict[str, Any], minilm: Path
) -> None:
    rr = edgecut.Reranker(reranker_path, threads=2)
    pairs = rerank_fixture["pairs"]
    query = pairs[0]["query"]
    same = [p for p in pairs if p["query"] == query]
    docs = [p["document"] for p in same]
    assert len(docs) >= 2
    out = rr.rerank(query, docs)
    assert sorted(r["index"] for r in out) == list(range(len(docs)))
    assert [r["logit"] for r in out] == sorted((r["logit"] for r in out), reverse=True)
    cli_out = json.loads(subprocess.run(
        [str(cli), "rerank", "-m", str(reranker_path), "--json", "--threads", "2", query, *docs],
        capture_output=True, text=True, check=True).stdout)
    assert out == cli_out
    # PyTorch's logits, within the tolerance the Rust retrieval tests hold f32 to.
    for r in out:
        assert abs(r["logit"] - same[r["index"]]["logit"]) <= 1e-3, (r, same[r["index"]])
        assert abs(r["score"] - 1 / (1 + np.exp(-r["logit"]))) < 1e-6
    assert rr.rerank(query, docs, top_n=1) == out[:1]
    with pytest.raises(edgecut.InvalidInputError, match="no classification head"):
        edgecut.Reranker(minilm)


def test_convert_writes_the_file_the_cli_writes(cli: Path, tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[2] / "tests/fixtures/bert-rerank-tiny"
    seen: List[int] = []
    report = edgecut.convert(src, tmp_path / "py.gguf", type="q8_0",
                             progress=lambda done, total, name: seen.append(done))
    subprocess.run([str(cli), "convert", str(src), "-o", str(tmp_path / "cli.gguf"), "--type", "q8_0"],
                   check=True, capture_output=True)
    assert (tmp_path / "py.gguf").read_bytes() == (tmp_path / "cli.gguf").read_bytes()
    assert report["tensors"] == len(seen) and seen == list(range(1, len(seen) + 1))
    assert report["bytes"] == (tmp_path / "py.gguf").stat().st_size
    assert edgecut.inspect(tmp_path / "py.gguf")["architecture"] == report["architecture"] == "bert"
    with pytest.raises(edgecut.InvalidInputError, match="q4_0"):
        edgecut.convert(src, tmp_path / "x.gguf", type="q4_0")
    with pytest.raises(FileNotFoundError):
        edgecut.convert(tmp_path / "absent", tmp_path / "x.gguf")
    assert not (tmp_path / "x.gguf").exists()


def test_clip_pictures_equal_the_cli_and_zero_shot_sums_to_one(cli: Path, tmp_path: Path) -> None:
    model = tmp_path / "clip-tiny.gguf"
    subprocess.run([str(cli), "convert", str(REPO / "tests/fixtures/clip-tiny"), "-o", str(model),
                    "--type", "f32"], check=True, capture_output=True)
    pictures = REPO / "tests/fixtures/clip-images"
    png, jpg = pictures / "02-coffee.png", pictures / "03-chelsea.jpg"
    emb = edgecut.Embedder(model, threads=2)
    # A path, its bytes, and a str path: the same vectors; the CLI's to the last bit.
    got = emb.embed_images([png, jpg.read_bytes(), str(png)])
    assert got.dtype == np.float32 and got.shape == (3, emb.dim)
    assert (got[0] == got[2]).all()
    out = subprocess.run([str(cli), "embed", "-m", str(model), "--threads", "2", "--image", str(png),
                          "--image", str(jpg)], capture_output=True, text=True, check=True)
    want = np.array(json.loads(out.stdout), dtype=np.float32)
    assert (got[:2] == want).all()
    # Texts land in the same space: one call each, unit vectors.
    text = emb.embed(["a cup of coffee"])
    assert abs(float(np.linalg.norm(text)) - 1.0) < 1e-5
    scores = emb.zero_shot(jpg, ["a photo of a cat", "a cup of coffee"])
    assert [s["label"] for s in scores] == ["a photo of a cat", "a cup of coffee"]
    assert abs(sum(s["probability"] for s in scores) - 1.0) < 1e-5
    # Not a picture: the package's ValueError naming what is wrong; a missing file likewise.
    with pytest.raises(edgecut.InvalidInputError, match="not a PNG or JPEG"):
        emb.embed_images([b"hello"])
    with pytest.raises(FileNotFoundError):
        emb.embed_images([tmp_path / "nope.png"])
