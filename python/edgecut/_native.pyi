# Types of edgecut's native module (python/src/*.rs). Checked against the built module by
# `python -m mypy.stubtest edgecut` in scripts/test-python.sh.

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union, final, overload

import numpy as np
import numpy.typing as npt

from ._types import RerankResult

__version__: str
__all__ = ["Embedder", "Reranker", "LLM", "Generation", "TextStream", "inspect", "convert", "cpu_kernels", "__version__"]

@final
class Embedder:
    """A sentence embedder (MiniLM, BGE, E5, GTE, XLM-RoBERTa encoders; LLM embedders pooled
    at the last token; CLIP, which embeds pictures too). Thread-safe: several threads may embed
    on one handle at once."""

    def __new__(
        cls,
        path: Union[str, "os.PathLike[str]"],
        *,
        device: str = "auto",
        threads: Optional[int] = None,
        max_seq_len: Optional[int] = None,
        batch_size: int = 32,
        server: Optional[str] = None,
        cut: Optional[int] = None,
        token: Optional[str] = None,
        encoding: str = "int8",
        timeout: float = 10.0,
        tls_ca: Union[str, "os.PathLike[str]", None] = None,
    ) -> "Embedder": ...
    @overload
    def embed(
        self,
        texts: str,
        *,
        batch_size: Optional[int] = None,
        dimensions: Optional[int] = None,
        prefix: Optional[str] = None,
    ) -> npt.NDArray[np.float32]: ...
    @overload
    def embed(
        self,
        texts: Sequence[str],
        *,
        batch_size: Optional[int] = None,
        dimensions: Optional[int] = None,
        prefix: Optional[str] = None,
    ) -> npt.NDArray[np.float32]: ...
    @property
    def dim(self) -> int: ...
    @property
    def max_seq_len(self) -> int: ...
    @property
    def device(self) -> str: ...
    @property
    def last_fallback(self) -> Optional[str]: ...
    def embed_images(
        self,
        images: Sequence[Union[bytes, str, "os.PathLike[str]"]],
        *,
        batch_size: Optional[int] = None,
    ) -> npt.NDArray[np.float32]: ...
    def zero_shot(
        self, image: Union[bytes, str, "os.PathLike[str]"], labels: Sequence[str]
    ) -> List[Dict[str, Any]]: ...
    def tokenize(self, text: str) -> List[int]: ...
    def _facade_seconds(self, texts: List[str], batch_size: int, iters: int) -> List[float]: ...

@final
class Reranker:
    """A cross-encoder reranker (ms-marco-MiniLM, bge-reranker). Thread-safe."""

    def __new__(
        cls,
        path: Union[str, "os.PathLike[str]"],
        *,
        device: str = "auto",
        threads: Optional[int] = None,
        max_seq_len: Optional[int] = None,
        batch_size: int = 32,
    ) -> "Reranker": ...
    def rerank(
        self, query: str, documents: Sequence[str], *, top_n: Optional[int] = None
    ) -> List[RerankResult]: ...
    @property
    def device(self) -> str: ...

@final
class Generation:
    """What a generation produced, and how it went."""

    @property
    def text(self) -> str: ...
    @property
    def tokens(self) -> List[int]: ...
    @property
    def finish_reason(self) -> str: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def cached_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def prefill_seconds(self) -> float: ...
    @property
    def decode_seconds(self) -> float: ...
    @property
    def decode_tokens_per_second(self) -> float: ...
    @property
    def fell_back(self) -> Optional[str]: ...
    @property
    def logprobs(self) -> List[Tuple[int, float, List[Tuple[int, float]]]]: ...

@final
class TextStream:
    """An iterator of generated text pieces; `generation` holds the result once exhausted."""

    def __iter__(self) -> "TextStream": ...
    def __next__(self) -> str: ...
    def close(self) -> None: ...
    @property
    def generation(self) -> Optional[Generation]: ...

@final
class LLM:
    def __new__(
        cls,
        path: Union[str, "os.PathLike[str]"],
        *,
        device: str = "auto",
        threads: Optional[int] = None,
        context: Optional[int] = None,
        server: Optional[str] = None,
        cut: Optional[int] = None,
        token: Optional[str] = None,
        encoding: str = "int8",
        timeout: float = 10.0,
        tls_ca: Union[str, "os.PathLike[str]", None] = None,
    ) -> "LLM": ...
    def run(
        self,
        prompt: Union[str, List[Tuple[str, str]]],
        chat: bool,
        options: Optional[Dict[str, Any]] = None,
    ) -> Generation: ...
    def stream(
        self,
        prompt: Union[str, List[Tuple[str, str]]],
        chat: bool,
        options: Optional[Dict[str, Any]] = None,
    ) -> TextStream: ...
    def _facade_seconds(self, prompt: str, max_tokens: int, iters: int) -> List[float]: ...
    def render_chat(self, messages: List[Tuple[str, str]]) -> str: ...
    def tokenize(self, text: str) -> List[int]: ...
    def detokenize(self, ids: List[int]) -> str: ...
    def reset(self) -> None: ...
    @property
    def context_len(self) -> int: ...
    @property
    def has_chat_template(self) -> bool: ...
    @property
    def device(self) -> str: ...
    @property
    def split(self) -> bool: ...

def inspect(path: Union[str, "os.PathLike[str]"]) -> Dict[str, Any]: ...
def cpu_kernels() -> str: ...
def convert(
    source: Union[str, "os.PathLike[str]"],
    output: Union[str, "os.PathLike[str]"],
    *,
    type: str = "q8_0",
    progress: Optional[Callable[[int, int, str], object]] = None,
) -> Dict[str, Any]: ...
