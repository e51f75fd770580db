"""The official `openai` client against `edgecut serve --http` (cli/tests/api_openai.rs runs
it): embeddings (the client's default base64 and float, and `dimensions`), a streamed greedy chat completion,
a non-streamed one, and a text completion. Prints one JSON object with what it got."""

import json
import sys

import openai

base, embedder, generator, prompt = sys.argv[1:5]
texts = sys.argv[5:]
client = openai.OpenAI(base_url=base + "/v1", api_key="test-key", max_retries=0, timeout=120)

out = {}
# The client asks for base64 unless told otherwise, and decodes it.
e = client.embeddings.create(model=embedder, input=texts)
out["embeddings"] = [d.embedding for d in sorted(e.data, key=lambda d: d.index)]
out["embedding_usage"] = e.usage.prompt_tokens
f = client.embeddings.create(model=embedder, input=texts[0], encoding_format="float")
out["embedding_float"] = f.data[0].embedding
# Matryoshka: the first 64 values, normalised again.
d = client.embeddings.create(model=embedder, input=texts[0], dimensions=64, encoding_format="float")
out["embedding_dims64"] = d.data[0].embedding

chunks = []
finish = None
usage = None
stream = client.chat.completions.create(
    model=generator,
    messages=[{"role": "user", "content": prompt}],
    temperature=0,
    max_tokens=48,
    stream=True,
    stream_options={"include_usage": True},
)
for c in stream:
    if c.usage is not None:
        usage = c.usage.completion_tokens
    for ch in c.choices:
        if ch.delta.content:
            chunks.append(ch.delta.content)
        if ch.finish_reason:
            finish = ch.finish_reason
out["stream_text"] = "".join(chunks)
out["stream_chunks"] = len(chunks)
out["stream_finish"] = finish
out["stream_completion_tokens"] = usage

whole = client.chat.completions.create(
    model=generator,
    messages=[{"role": "user", "content": prompt}],
    temperature=0,
    max_tokens=48,
)
out["chat_text"] = whole.choices[0].message.content
out["chat_finish"] = whole.choices[0].finish_reason

comp = client.completions.create(model=generator, prompt="The capital of France is", max_tokens=8, temperature=0)
out["completion_text"] = comp.choices[0].text
out["completion_finish"] = comp.choices[0].finish_reason
out["models"] = sorted(m.id for m in client.models.list())

try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    out["unknown_model"] = None
except openai.NotFoundError as err:
    out["unknown_model"] = err.status_code
print(json.dumps(out))
