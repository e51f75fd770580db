"""Generation through Python against `edgecut generate` (the same facade, through the CLI):
greedy text equal, streaming equal, structured output valid, Ctrl-C leaving the model usable,
split decoding with `edgecut serve` and its fallback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import warnings
from pathlib import Path
from typing import Iterator, List

import pytest

import edgecut

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
]


def cli_generate(cli: Path, model: Path, prompt: str, n: int, chat: bool = False) -> str:
    args = [str(cli), "generate", "-m", str(model), "-n", str(n), "-q", "--threads", "2", "--seed", "0"]
    if chat:
        args.append("--chat")
    out = subprocess.run(args + [prompt], capture_output=True, check=True).stdout.decode()
    # The CLI ends its output with a line break of its own.
    assert out.endswith("\n")
    return out[:-1]


@pytest.fixture(scope="module")
def llm(smollm: Path) -> edgecut.LLM:
    return edgecut.LLM(smollm, threads=2)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_generation_equals_the_cli(cli: Path, smollm: Path, llm: edgecut.LLM, prompt: str) -> None:
    want = cli_generate(cli, smollm, prompt, 48)
    # cache_reuse=False: the prompt runs whole, as in the CLI's fresh context.
    got = llm.generate(prompt, max_tokens=48, cache_reuse=False)
    assert got.text == want
    assert got.finish_reason in ("stop", "length")
    assert got.completion_tokens == len(got.tokens) > 0
    assert got.prompt_tokens == len(llm.tokenize(prompt))
    streamed = llm.stream(prompt, max_tokens=48, cache_reuse=False)
    pieces = list(streamed)
    assert "".join(pieces) == want
    assert len(pieces) > 1
    assert streamed.generation is not None and streamed.generation.text == want


def test_chat_equals_the_cli(cli: Path, smollm: Path, llm: edgecut.LLM) -> None:
    q = "What is the capital of France?"
    want = cli_generate(cli, smollm, q, 40, chat=True)
    msgs = [{"role": "user", "content": q}]
    assert llm.chat(msgs, max_tokens=40, cache_reuse=False).text == want
    assert "".join(llm.chat(msgs, max_tokens=40, cache_reuse=False, stream=True)) == want
    assert llm.render_chat(msgs).endswith("assistant\n")


def test_second_turn_reuses_the_cache(llm: edgecut.LLM) -> None:
    llm.reset()
    msgs = [{"role": "user", "content": "Name a colour."}]
    first = llm.chat(msgs, max_tokens=12)
    msgs += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "Another one."}]
    second = llm.chat(msgs, max_tokens=12)
    assert second.cached_tokens > 10, second


def test_structured_output_is_valid(llm: edgecut.LLM) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    g = llm.chat([{"role": "user", "content": "Describe a person as JSON."}], json_schema=schema, max_tokens=64)
    v = json.loads(g.text)
    assert set(v) == {"name", "age"} and isinstance(v["age"], int)
    r = llm.generate("The year is", regex=r" [0-9]{4}", max_tokens=8)
    assert len(r.text) == 5 and r.text[1:].isdigit() and r.finish_reason == "stop"


def interrupt_after(seconds: float) -> threading.Timer:
    # Python's own Ctrl-C handler, also where this process was started with SIGINT ignored
    # (a job run in the background with `&` or nohup inherits that, and the signal is lost).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    t = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
    t.start()
    return t


def test_keyboard_interrupt_stops_a_generation_and_leaves_the_model_usable(llm: edgecut.LLM) -> None:
    want = llm.generate("Hello", max_tokens=16, cache_reuse=False).text
    t0 = time.monotonic()
    timer = interrupt_after(0.5)
    with pytest.raises(KeyboardInterrupt):
        llm.generate("Tell me a long story.", max_tokens=100_000, ignore_eos=True)
    timer.join()
    # Stopped within a few tokens of the signal, not at max_tokens.
    assert time.monotonic() - t0 < 5
    assert llm.generate("Hello", max_tokens=16, cache_reuse=False).text == want
    # The same while streaming.
    timer = interrupt_after(0.5)
    got: List[str] = []
    with pytest.raises(KeyboardInterrupt):
        for piece in llm.stream("Tell me a long story.", max_tokens=100_000, ignore_eos=True):
            got.append(piece)
    timer.join()
    assert got
    assert llm.generate("Hello", max_tokens=16, cache_reuse=False).text == want


def test_breaking_out_of_a_stream_stops_it(llm: edgecut.LLM) -> None:
    s = llm.stream("Count:", max_tokens=100_000, ignore_eos=True)
    for i, _ in enumerate(s):
        if i == 3:
            break
    s.close()
    del s
    # The next generation waits for the worker to stop, then runs.
    t0 = time.monotonic()
    assert llm.generate("Hi", max_tokens=4).completion_tokens >= 1
    assert time.monotonic() - t0 < 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(cli: Path, smollm: Path) -> Iterator[str]:
    port = free_port()
    p = subprocess.Popen([str(cli), "serve", "-m", str(smollm), "--listen", f"127.0.0.1:{port}", "--threads", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert p.poll() is None, p.stderr.read() if p.stderr else ""
            time.sleep(0.2)
    yield f"127.0.0.1:{port}"
    p.terminate()
    p.wait(10)


def test_split_generation_equals_local_and_falls_back(cli: Path, smollm: Path, server: str) -> None:
    prompt = PROMPTS[0]
    want = cli_generate(cli, smollm, prompt, 24)
    split = edgecut.LLM(smollm, threads=1, server=server, cut=10, encoding="f32")
    assert split.split
    with warnings.catch_warnings():
        warnings.simplefilter("error", edgecut.FallbackWarning)
        g = split.generate(prompt, max_tokens=24)
    assert g.fell_back is None and g.text == want
    # Nobody listening: the device finishes alone, says so, and the text is the same.
    gone = edgecut.LLM(smollm, threads=1, server=f"127.0.0.1:{free_port()}", cut=10, timeout=2.0)
    with pytest.warns(edgecut.FallbackWarning):
        g = gone.generate(prompt, max_tokens=24)
    assert g.fell_back and g.text == want


def test_split_embedding_falls_back(minilm: Path) -> None:
    local = edgecut.Embedder(minilm, threads=1)
    emb = edgecut.Embedder(minilm, threads=1, server=f"127.0.0.1:{free_port()}", cut=3, timeout=2.0)
    with pytest.warns(edgecut.FallbackWarning):
        v = emb.embed(["A man is eating food."])
    assert emb.last_fallback
    assert (v == local.embed(["A man is eating food."])).all()


def test_logprobs(llm: edgecut.LLM) -> None:
    g = llm.generate("The capital of France is", max_tokens=8, logprobs=3, cache_reuse=False)
    assert len(g.logprobs) == g.completion_tokens == 8
    for (id_, lp, top), tok in zip(g.logprobs, g.tokens):
        assert id_ == tok and lp <= 0.0 and len(top) == 3
        # Greedy: the chosen token is the most likely one.
        assert top[0][0] == tok and abs(top[0][1] - lp) < 1e-6
        assert [t[1] for t in top] == sorted((t[1] for t in top), reverse=True)
    assert llm.generate("x", max_tokens=2).logprobs == []
    with pytest.raises(edgecut.InvalidInputError, match="logprobs"):
        llm.generate("x", logprobs=21)
