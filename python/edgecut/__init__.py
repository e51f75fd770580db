"""edgecut: a compact INT8 inference runtime for the edge, from Python.

One self-contained GGUF file per model, memory-mapped, with its tokenizer inside::

    import edgecut

    emb = edgecut.Embedder("all-MiniLM-L6-v2.q8_0.gguf")
    vectors = emb.embed(["A man is eating food.", "A man is riding a horse."])  # (2, 384) float32

    llm = edgecut.LLM("SmolLM2-135M-Instruct.Q4_1.gguf")
    print(llm.chat([{"role": "user", "content": "What is the capital of France?"}]).text)
    for piece in llm.stream("Once upon a time", max_tokens=32):
        print(piece, end="", flush=True)

Model work releases the GIL; Ctrl-C stops a generation (the handle stays usable). Errors are
the exceptions of this module, all subclasses of :class:`EdgecutError`.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Literal, Mapping, Optional, Sequence, Tuple, Union, overload

from . import _native
from ._errors import (
    ContextFullError,
    DeviceError,
    EdgecutError,
    FallbackWarning,
    InvalidInputError,
    ModelError,
    ModelFileError,
    ModelNotFoundError,
    TokenizerError,
    UnsupportedArchitectureError,
)
from ._native import Embedder, Generation, Reranker, TextStream, convert, cpu_kernels, inspect
from ._types import RerankResult

__version__: str = _native.__version__

__all__ = [
    "LLM",
    "Embedder",
    "Reranker",
    "RerankResult",
    "Generation",
    "TextStream",
    "inspect",
    "convert",
    "cpu_kernels",
    "EdgecutError",
    "ModelFileError",
    "ModelNotFoundError",
    "TokenizerError",
    "ModelError",
    "UnsupportedArchitectureError",
    "ContextFullError",
    "DeviceError",
    "InvalidInputError",
    "FallbackWarning",
]

#: A chat message: ``{"role": "user", "content": "..."}`` (roles: system, user, assistant).
Message = Mapping[str, Any]
#: A JSON schema, as a dict or as JSON text.
JsonSchema = Union[Mapping[str, Any], str]


def _pairs(messages: Iterable[Message]) -> List[Tuple[str, str]]:
    out: List[Tuple[str, str]] = []
    for i, m in enumerate(messages):
        try:
            role, content = m["role"], m.get("content")
        except (KeyError, TypeError, AttributeError):
            raise InvalidInputError(f"messages[{i}] is not a mapping with 'role' and 'content'") from None
        if content is None:
            content = ""
        if not isinstance(role, str) or not isinstance(content, str):
            raise InvalidInputError(f"messages[{i}]: role and content must be strings")
        out.append((role, content))
    return out


class LLM:
    """A decoder (Llama, SmolLM2, Qwen2/3, Gemma 3) with one conversation's KV cache.

    ``path`` is a GGUF file. ``device`` is ``"auto"``, ``"cpu"``, ``"wgpu"`` or ``"cuda"`` (GPU
    devices in builds with the ``gpu`` feature); ``threads`` defaults to every core the process
    may use; ``context`` sizes the KV cache (default: the model's, at most 2048 positions).

    With ``server="host:port"`` and ``cut=K`` the handle runs blocks ``0..K`` here and the rest
    on ``edgecut serve`` running the same file; when the server is unreachable, refuses or fails,
    the device finishes alone (the text is the one a local run gives), a
    :class:`FallbackWarning` says why and :attr:`Generation.fell_back` records it. ``token`` is
    the server's ``--token-file`` secret, ``encoding`` that of the hidden states sent, and
    ``tls_ca`` a CA certificate (PEM) for a server with ``--tls-cert``.

    A prompt that starts with the conversation already in the cache computes only its new
    tokens (``cache_reuse=False`` runs it whole, for results independent of what came before).
    Generations on one handle take turns; make one handle per concurrent conversation.
    """

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"],
        *,
        device: str = "auto",
        threads: Optional[int] = None,
        context: Optional[int] = None,
        server: Optional[str] = None,
        cut: Optional[int] = None,
        token: Optional[str] = None,
        encoding: Literal["int8", "f16", "f32"] = "int8",
        timeout: float = 10.0,
        tls_ca: Union[str, "os.PathLike[str]", None] = None,
    ) -> None:
        self._llm = _native.LLM(
            os.fspath(path),
            device=device,
            threads=threads,
            context=context,
            server=server,
            cut=cut,
            token=token,
            encoding=encoding,
            timeout=timeout,
            tls_ca=None if tls_ca is None else os.fspath(tls_ca),
        )

    @staticmethod
    def _options(
        max_tokens: int,
        temperature: float,
        top_k: int,
        top_p: float,
        repetition_penalty: float,
        seed: int,
        stop: Union[str, Sequence[str], None],
        json_schema: Optional[JsonSchema],
        json_object: bool,
        regex: Optional[str],
        grammar: Optional[str],
        cache_reuse: bool,
        ignore_eos: bool,
        logprobs: Optional[int],
    ) -> Dict[str, Any]:
        return {
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "repetition_penalty": repetition_penalty,
            "seed": seed,
            "stop": [stop] if isinstance(stop, str) else list(stop or []),
            "json_schema": json_schema,
            "json_object": json_object,
            "regex": regex,
            "grammar": grammar,
            "cache_reuse": cache_reuse,
            "ignore_eos": ignore_eos,
            "logprobs": logprobs,
        }

    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: int = 0,
        stop: Union[str, Sequence[str], None] = None,
        json_schema: Optional[JsonSchema] = None,
        json_object: bool = False,
        regex: Optional[str] = None,
        grammar: Optional[str] = None,
        cache_reuse: bool = True,
        ignore_eos: bool = False,
        logprobs: Optional[int] = None,
    ) -> Generation:
        """Continues ``prompt`` (plain text, no chat template); greedy unless ``temperature > 0``.

        ``stop`` strings end the text before them. At most one of ``json_schema``,
        ``json_object``, ``regex`` or ``grammar`` (llguidance's Lark-like syntax) constrains the
        output. ``logprobs=N`` records each token's log-probability and its ``N`` most likely
        alternatives (:attr:`Generation.logprobs`; not on a split handle). Raises
        :class:`ContextFullError` when the prompt does not fit.
        """
        opts = self._options(max_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop,
                             json_schema, json_object, regex, grammar, cache_reuse, ignore_eos, logprobs)
        return self._llm.run(prompt, False, opts)

    def stream(
        self,
        prompt: str,
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: int = 0,
        stop: Union[str, Sequence[str], None] = None,
        json_schema: Optional[JsonSchema] = None,
        json_object: bool = False,
        regex: Optional[str] = None,
        grammar: Optional[str] = None,
        cache_reuse: bool = True,
        ignore_eos: bool = False,
        logprobs: Optional[int] = None,
    ) -> TextStream:
        """As :meth:`generate`, the text's pieces coming as they are made (an iterator)."""
        opts = self._options(max_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop,
                             json_schema, json_object, regex, grammar, cache_reuse, ignore_eos, logprobs)
        return self._llm.stream(prompt, False, opts)

    @overload
    def chat(
        self,
        messages: Iterable[Message],
        *,
        stream: Literal[False] = ...,
        max_tokens: int = ...,
        temperature: float = ...,
        top_k: int = ...,
        top_p: float = ...,
        repetition_penalty: float = ...,
        seed: int = ...,
        stop: Union[str, Sequence[str], None] = ...,
        json_schema: Optional[JsonSchema] = ...,
        json_object: bool = ...,
        regex: Optional[str] = ...,
        grammar: Optional[str] = ...,
        cache_reuse: bool = ...,
        logprobs: Optional[int] = ...,
    ) -> Generation: ...

    @overload
    def chat(
        self,
        messages: Iterable[Message],
        *,
        stream: Literal[True],
        max_tokens: int = ...,
        temperature: float = ...,
        top_k: int = ...,
        top_p: float = ...,
        repetition_penalty: float = ...,
        seed: int = ...,
        stop: Union[str, Sequence[str], None] = ...,
        json_schema: Optional[JsonSchema] = ...,
        json_object: bool = ...,
        regex: Optional[str] = ...,
        grammar: Optional[str] = ...,
        cache_reuse: bool = ...,
        logprobs: Optional[int] = ...,
    ) -> TextStream: ...

    def chat(
        self,
        messages: Iterable[Message],
        *,
        stream: bool = False,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        seed: int = 0,
        stop: Union[str, Sequence[str], None] = None,
        json_schema: Optional[JsonSchema] = None,
        json_object: bool = False,
        regex: Optional[str] = None,
        grammar: Optional[str] = None,
        cache_reuse: bool = True,
        logprobs: Optional[int] = None,
    ) -> Union[Generation, TextStream]:
        """The assistant's reply to ``messages`` (dicts of ``role`` and ``content``), rendered
        with the model's chat template; the other arguments as :meth:`generate`'s. Sending the
        whole history each turn costs only the new tokens: the earlier ones are in the cache.
        """
        opts = self._options(max_tokens, temperature, top_k, top_p, repetition_penalty, seed, stop,
                             json_schema, json_object, regex, grammar, cache_reuse, False, logprobs)
        pairs = _pairs(messages)
        if stream:
            return self._llm.stream(pairs, True, opts)
        return self._llm.run(pairs, True, opts)

    def render_chat(self, messages: Iterable[Message]) -> str:
        """``messages`` rendered with the model's chat template, the assistant's turn opened."""
        return self._llm.render_chat(_pairs(messages))

    def tokenize(self, text: str) -> List[int]:
        """Token ids of ``text``."""
        return self._llm.tokenize(text)

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of token ids."""
        return self._llm.detokenize(list(ids))

    def reset(self) -> None:
        """Forgets the conversation in the KV cache."""
        self._llm.reset()

    @property
    def context_len(self) -> int:
        """Positions in the KV cache."""
        return self._llm.context_len

    @property
    def has_chat_template(self) -> bool:
        """Whether the file carries a chat template."""
        return self._llm.has_chat_template

    @property
    def device(self) -> str:
        """The device in use, in words."""
        return self._llm.device

    @property
    def split(self) -> bool:
        """Whether the handle runs split with a server."""
        return self._llm.split

    def __repr__(self) -> str:
        return f"LLM({self._llm.context_len} positions, {self._llm.device}{', split' if self.split else ''})"
