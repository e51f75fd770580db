"""Shared fixtures: the real model files (scripts/fetch-models.sh puts them in
~/.cache/edgecut/models, or $EDGECUT_MODELS), the `edgecut` CLI the package is compared with
($EDGECUT_BIN, default target/release/edgecut), and the PyTorch fixtures in tests/fixtures.

A missing model or CLI fails the test that needs it: nothing here is skipped quietly.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Dict

import pytest

REPO = Path(__file__).resolve().parents[2]


def _need(p: Path, what: str) -> Path:
    if not p.exists():
        pytest.fail(f"{what} is missing at {p}: run scripts/setup.sh (or set the variable that names it)")
    return p


@pytest.fixture(scope="session")
def models() -> Path:
    return _need(Path(os.environ.get("EDGECUT_MODELS", Path.home() / ".cache/edgecut/models")), "the models folder")


@pytest.fixture(scope="session")
def cli() -> Path:
    return _need(Path(os.environ.get("EDGECUT_BIN", REPO / "target/release/edgecut")), "the edgecut CLI")


@pytest.fixture(scope="session")
def minilm(models: Path, cli: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 converted from the Hugging Face checkpoint to Q8_0 by the CLI."""
    src = _need(models / "all-MiniLM-L6-v2", "the all-MiniLM-L6-v2 checkpoint")
    out = tmp_path_factory.mktemp("minilm") / "minilm.q8_0.gguf"
    subprocess.run([str(cli), "convert", str(src), "-o", str(out), "--type", "q8_0"], check=True,
                   capture_output=True)
    return out


@pytest.fixture(scope="session")
def reranker_path(cli: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The committed tiny random BERT cross-encoder (tests/fixtures/bert-rerank-tiny), f32."""
    out = tmp_path_factory.mktemp("rerank") / "bert-rerank-tiny.f32.gguf"
    subprocess.run([str(cli), "convert", str(REPO / "tests/fixtures/bert-rerank-tiny"), "-o", str(out),
                    "--type", "f32"], check=True, capture_output=True)
    return out


@pytest.fixture(scope="session")
def smollm(models: Path) -> Path:
    return _need(models / "SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct Q4_1")


def fixture(name: str) -> Dict[str, Any]:
    with open(REPO / "tests/fixtures" / name) as f:
        data: Dict[str, Any] = json.load(f)
    return data


@pytest.fixture(scope="session")
def minilm_fixture() -> Dict[str, Any]:
    return fixture("minilm.json")


@pytest.fixture(scope="session")
def rerank_fixture() -> Dict[str, Any]:
    """PyTorch's logits for query/document pairs of bert-rerank-tiny."""
    pairs: Dict[str, Any] = fixture("retrieval-tiny.json")["models"]["bert-rerank-tiny"]
    return pairs
