"""Structured output and tool calls through the official `openai` client.

Usage: structured_client.py URL MODEL PROMPTS [--structured] [--tools]

With --structured, `chat.completions.parse` with three Pydantic models (nested objects, enums, arrays with bounds,
optional fields) over PROMPTS prompts each, sampled (temperature 0.8, a seed per prompt): every
reply that finished is validated with `jsonschema` against the schema the client sent, and
parsed by Pydantic. With --tools, a two-turn tool round trip (call, tool result, answer) and
`tool_choice: "required"` over PROMPTS prompts, each call's arguments validated against the
function's parameters. Prints one JSON object of counts for the Rust test to assert on.
"""

import enum
import json
import sys
from typing import List, Literal, Optional

import jsonschema
import openai
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field


class Address(BaseModel):
    street: str = Field(max_length=40)
    city: Literal["Paris", "London", "Berlin", "Madrid"]


class Person(BaseModel):
    name: str = Field(max_length=30)
    age: int = Field(ge=0, le=120)
    address: Address
    nickname: Optional[str] = Field(default=None, max_length=20)


class Priority(str, enum.Enum):
    low = "low"
    normal = "normal"
    high = "high"


class Item(BaseModel):
    product: str = Field(max_length=24)
    quantity: int = Field(ge=1, le=9)


class Order(BaseModel):
    items: List[Item] = Field(min_length=1, max_length=3)
    priority: Priority
    gift: bool
    note: Optional[str] = Field(default=None, max_length=30)


class Review(BaseModel):
    title: str = Field(max_length=40)
    stars: int = Field(ge=1, le=5)
    pros: List[str] = Field(max_length=3)
    cons: List[str] = Field(max_length=3)
    verdict: Literal["buy", "skip", "wait"]


SUBJECTS = ["a teacher", "a baker", "a pilot", "a nurse", "a painter", "a farmer", "a coder",
            "a singer", "a doctor", "a student", "a chef", "a writer", "a sailor", "a judge",
            "a dancer", "a miner", "a tailor", "a poet", "a guard", "a driver"]

CASES = [
    (Person, "Describe {} as a person record."),
    (Order, "Write a shop order placed by {}."),
    (Review, "Review a laptop as {} would."),
]


def structured(client, model, prompts):
    out = {}
    for cls, template in CASES:
        schema = to_strict_json_schema(cls)
        counts = {"finished": 0, "valid": 0, "length": 0, "other": 0, "invalid": []}
        for i in range(prompts):
            prompt = template.format(SUBJECTS[i % len(SUBJECTS)])
            try:
                r = client.chat.completions.parse(
                    model=model, messages=[{"role": "user", "content": prompt}],
                    response_format=cls, max_tokens=160, temperature=0.8, seed=i)
            except openai.LengthFinishReasonError:
                counts["length"] += 1
                continue
            c = r.choices[0]
            if c.finish_reason != "stop":
                counts["other"] += 1
                continue
            counts["finished"] += 1
            try:
                jsonschema.validate(json.loads(c.message.content), schema)
                assert isinstance(c.message.parsed, cls)
                counts["valid"] += 1
            except Exception as e:  # noqa: BLE001 - reported, and the test fails on it
                counts["invalid"].append({"text": c.message.content, "error": str(e)[:200]})
        out[cls.__name__] = counts
    return out


WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description":
     "The current weather in a city", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "add", "description": "Adds two integers",
     "parameters": {"type": "object", "properties": {"a": {"type": "integer"},
                                                     "b": {"type": "integer"}},
                    "required": ["a", "b"], "additionalProperties": False}}},
]
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
CITIES = ["Paris", "Tokyo", "Lima", "Oslo", "Cairo", "Delhi", "Quito", "Rome", "Seoul", "Bern"]


def tools(client, model, prompts):
    # The round trip: a call, its result as a `tool` message, and the answer.
    msgs = [{"role": "user", "content": "What is the weather in Paris, in celsius?"}]
    r = client.chat.completions.create(model=model, messages=msgs, tools=TOOLS,
                                       tool_choice="required", max_tokens=60, temperature=0)
    first = r.choices[0]
    assert first.finish_reason == "tool_calls", first
    call = first.message.tool_calls[0]
    jsonschema.validate(json.loads(call.function.arguments), PARAMS[call.function.name])
    msgs.append(first.message.model_dump(exclude_none=True))
    msgs.append({"role": "tool", "tool_call_id": call.id,
                 "content": json.dumps({"temperature": 21, "sky": "sunny"})})
    r = client.chat.completions.create(model=model, messages=msgs, tools=TOOLS,
                                       max_tokens=120, temperature=0)
    answer = r.choices[0]
    again = len(answer.message.tool_calls or [])
    if again:
        # The model called again where it could answer: as an agent loop does, ask for the
        # answer without tools.
        r = client.chat.completions.create(model=model, messages=msgs, tools=TOOLS,
                                           tool_choice="none", max_tokens=120, temperature=0)
        answer = r.choices[0]
    trip = {"call": call.function.name, "arguments": call.function.arguments,
            "answer": answer.message.content, "answer_finish": answer.finish_reason,
            "called_again": again}
    # `required`, sampled over many prompts: always a call, its arguments valid.
    counts = {"calls": 0, "valid": 0, "not_a_call": 0, "invalid": []}
    for i in range(prompts):
        city = CITIES[i % len(CITIES)]
        ask = (f"What is the weather in {city}?" if i % 2 == 0
               else f"What is {i} plus {i * 7}?")
        r = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": ask}], tools=TOOLS,
            tool_choice="required", max_tokens=80, temperature=0.8, seed=i)
        c = r.choices[0]
        if c.finish_reason != "tool_calls" or not c.message.tool_calls:
            counts["not_a_call"] += 1
            continue
        counts["calls"] += 1
        try:
            for tc in c.message.tool_calls:
                jsonschema.validate(json.loads(tc.function.arguments),
                                    PARAMS[tc.function.name])
            counts["valid"] += 1
        except Exception as e:  # noqa: BLE001
            counts["invalid"].append(str(e)[:200])
    # A named function: that one is called.
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Add 2 and 3."}], tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "add"}}, max_tokens=40,
        temperature=0)
    named = r.choices[0].message.tool_calls[0].function.name
    return {"round_trip": trip, "required": counts, "named": named}


def main():
    url, model, prompts = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    out = {}
    if "--structured" in sys.argv:
        out["structured"] = structured(client, model, prompts)
    if "--tools" in sys.argv:
        out["tools"] = tools(client, model, prompts)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
