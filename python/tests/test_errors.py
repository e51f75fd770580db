"""Each failure raises its named exception, with a message naming what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

import edgecut


def test_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "absent.gguf"
    for open_ in (edgecut.Embedder, edgecut.Reranker, edgecut.LLM, edgecut.inspect):
        with pytest.raises(edgecut.ModelNotFoundError) as e:
            open_(p)
        assert isinstance(e.value, FileNotFoundError) and e.value.errno == 2
        assert str(p) in str(e.value)


@pytest.mark.parametrize(
    "data, words",
    [
        (b"", "not a GGUF file"),
        (b"GGUF\x03\0", "truncated"),
        (b"NOPE" + b"\0" * 60, "not a GGUF file"),
        (b"GGUF\x03\0\0\0" + b"\xff" * 40, "impossible"),
    ],
)
def test_corrupt_file(tmp_path: Path, data: bytes, words: str) -> None:
    p = tmp_path / "bad.gguf"
    p.write_bytes(data)
    for open_ in (edgecut.Embedder, edgecut.LLM):
        with pytest.raises(edgecut.ModelFileError, match=words):
            open_(p)


def test_truncated_real_file(tmp_path: Path, smollm: Path) -> None:
    p = tmp_path / "cut.gguf"
    p.write_bytes(smollm.read_bytes()[: 3_000_000])
    with pytest.raises(edgecut.ModelFileError):
        edgecut.LLM(p)


def test_wrong_kind_of_model(smollm: Path, minilm: Path) -> None:
    with pytest.raises(edgecut.UnsupportedArchitectureError):
        edgecut.LLM(minilm)


def test_context_full(smollm: Path) -> None:
    llm = edgecut.LLM(smollm, context=16, threads=2)
    with pytest.raises(edgecut.ContextFullError) as e:
        llm.generate("one two three four five six seven eight nine ten " * 4)
    assert e.value.capacity == 16 and e.value.tokens > 16
    # Still usable, and a prompt that fits runs.
    assert llm.generate("Hi", max_tokens=4).completion_tokens >= 1


def test_bad_arguments(smollm: Path) -> None:
    with pytest.raises(edgecut.DeviceError, match="tpu"):
        edgecut.LLM(smollm, device="tpu")
    with pytest.raises(edgecut.InvalidInputError, match="threads"):
        edgecut.LLM(smollm, threads=0)
    with pytest.raises(edgecut.InvalidInputError, match="server"):
        edgecut.LLM(smollm, cut=3)
    llm = edgecut.LLM(smollm, threads=2, context=64)
    with pytest.raises(edgecut.InvalidInputError, match="at most one"):
        llm.generate("x", regex="a+", json_object=True)
    with pytest.raises(edgecut.InvalidInputError, match="top-p"):
        llm.generate("x", top_p=2.0)
    with pytest.raises(edgecut.InvalidInputError, match="json_schema|schema"):
        llm.generate("x", json_schema='{"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}')
    with pytest.raises(edgecut.InvalidInputError, match="messages"):
        llm.chat([{"content": "no role"}])
