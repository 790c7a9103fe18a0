"""Validation speed: the pydantic-based checkers against the hand-written ones they replaced.

    .venv/bin/python benchmarks/bench_validation.py                 # against 2637cbe
    .venv/bin/python benchmarks/bench_validation.py --base HEAD --quick

The default base, 2637cbe, is the last revision with the hand-written checkers. Its
``messages.py`` and ``params.py`` are read with ``git show`` into a temporary directory and
imported next to the working tree's modules, so both run in this process on the same inputs.
Each case alternates old and new in rounds and keeps each side's fastest round (the least
disturbed by the machine); the figure to read is the ratio new/old, at most 1.0 meaning no
slower.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from chatledger import messages as new_messages
from chatledger import params as new_params

ROOT = Path(__file__).resolve().parent.parent
BASE = "2637cbe"  # the last revision with the hand-written messages.py and params.py


def load_base(rev: str, tmp: Path) -> tuple[ModuleType, ModuleType]:
    """The base revision's messages and params modules, imported under private names."""
    out = []
    for name in ("messages", "params"):
        source = subprocess.run(
            ["git", "show", f"{rev}:src/chatledger/{name}.py"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        file = tmp / f"base_{name}.py"
        file.write_text(source)
        spec = importlib.util.spec_from_file_location(f"_base_{name}", file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        out.append(module)
    return out[0], out[1]


# --- Inputs: what an agent's conversation and request look like ------------------------------


def call(cid: str, name: str, args: str) -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


PNG = "data:image/png;base64," + base64.b64encode(bytes(range(256)) * 64).decode()
PLAIN = {"role": "user", "content": "What's the weather like in Paris today, and should I bike?"}
NAMED = {"role": "user", "content": "Same question for Oslo.", "name": "alice"}
PARTS = {
    "role": "user",
    "content": [
        {"type": "text", "text": "What is in this picture? Describe it in two sentences."},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
    ],
}
DATA_IMAGE = {
    "role": "user",
    "content": [
        {"type": "text", "text": "And this one?"},
        {"type": "image_url", "image_url": {"url": PNG}},
    ],
}
TOOL_CALLS = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        call("call_a1", "get_weather", '{"city": "Paris", "unit": "celsius"}'),
        call("call_a2", "get_forecast", '{"city": "Paris", "days": 3, "hourly": false}'),
    ],
}
RESULT = {"role": "tool", "tool_call_id": "call_a1", "content": '{"temp": 12, "sky": "rain"}'}
RESULT_PARTS = {
    "role": "tool",
    "tool_call_id": "call_a2",
    "content": [{"type": "text", "text": '{"days": [11, 13, 15]}'}],
}
ANSWER = {"role": "assistant", "content": "Paris is 12°C with rain: take the metro today. " * 4}

TURN = [PLAIN, TOOL_CALLS, RESULT, RESULT_PARTS, ANSWER, PARTS, ANSWER, NAMED, ANSWER]
CONVERSATION = [
    {"role": "system", "content": "You are a concise travel assistant."},
    *(TURN * 10),
    DATA_IMAGE,
    ANSWER,
]


def function_tool(name: str, props: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name.replace('_', ' ')} for a city.",
            "parameters": {"type": "object", "properties": props, "required": list(props)},
            "strict": True,
        },
    }


CITY = {"city": {"type": "string", "description": "City name, e.g. Paris"}}
TOOLS_REQUEST: dict[str, Any] = {
    "model": "gpt-4o",
    "tools": [
        function_tool("get_weather", {**CITY, "unit": {"enum": ["celsius", "fahrenheit"]}}),
        function_tool("get_forecast", {**CITY, "days": {"type": "integer"}}),
        function_tool("book_bike", {**CITY, "station": {"type": "string"}}),
        function_tool("search_web", {"query": {"type": "string"}}),
        {"type": "custom", "custom": {"name": "run_sql", "description": "Runs SQL."}},
    ],
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "temperature": 0.2,
    "max_completion_tokens": 1024,
    "stream": True,
    "stream_options": {"include_usage": True},
    "metadata": {"tenant": "acme", "session": "s-123"},
    "seed": 7,
    "user": "user-42",
}
SMALL_REQUEST = {"model": "gpt-4o-mini", "temperature": 0.7, "max_completion_tokens": 256}
SCHEMA_REQUEST = {
    "model": "gpt-4o",
    "response_format": {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "schema": {"type": "object", "properties": {"text": {"type": "string"}}},
            "strict": True,
        },
    },
}


# --- Timing ----------------------------------------------------------------------------------


def per_call(fn: Callable[[], object], number: int) -> float:
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def compare(
    old: Callable[[], object], new: Callable[[], object], rounds: int
) -> tuple[float, float]:
    """Best per-call seconds of each, over alternating rounds of about 5 ms.

    The minimum over many short rounds is the figure least disturbed by other processes;
    alternating keeps a slow spell of the machine from falling on one side only.
    """
    assert old() == new(), "old and new disagree on this input"
    number = max(1, int(0.005 / max(per_call(old, 3), 1e-7)))
    best_old = best_new = float("inf")
    for _ in range(rounds):
        best_old = min(best_old, per_call(old, number))
        best_new = min(best_new, per_call(new, number))
    return best_old, best_new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default=BASE, help=f"git revision of the old code ({BASE})")
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds = 30 if args.quick else 200
    with tempfile.TemporaryDirectory() as tmp:
        old_messages, old_params = load_base(args.base, Path(tmp))
    new_messages.validate_messages(CONVERSATION)  # build the validators before timing

    def messages_case(msgs: list[Any]) -> tuple[Callable[[], object], Callable[[], object]]:
        return (
            lambda: old_messages.validate_messages(msgs, allow_pending_tool_calls=True),
            lambda: new_messages.validate_messages(msgs, allow_pending_tool_calls=True),
        )

    def params_case(p: dict[str, Any]) -> tuple[Callable[[], object], Callable[[], object]]:
        return (lambda: old_params.validate_params(p), lambda: new_params.validate_params(p))

    cases = {
        f"validate_messages: conversation of {len(CONVERSATION)}": messages_case(CONVERSATION),
        "validate_messages: plain text": messages_case([PLAIN]),
        "validate_messages: text + image parts": messages_case([PARTS]),
        "validate_messages: data: image (22 KB)": messages_case([DATA_IMAGE]),
        "validate_messages: 2 tool calls": messages_case([TOOL_CALLS]),
        "validate_messages: tool calls + 2 results": messages_case(TURN[1:4]),
        "validate_params: request with 5 tools": params_case(TOOLS_REQUEST),
        "validate_params: json_schema response": params_case(SCHEMA_REQUEST),
        "validate_params: small request": params_case(SMALL_REQUEST),
    }
    print(f"base {args.base}, {rounds} rounds; best per call")
    print(f"{'case':45} {'old µs':>9} {'new µs':>9} {'new/old':>8}")
    worst = 0.0
    for label, (old, new) in cases.items():
        t_old, t_new = compare(old, new, rounds)
        worst = max(worst, t_new / t_old)
        print(f"{label:45} {t_old * 1e6:9.2f} {t_new * 1e6:9.2f} {t_new / t_old:8.2f}")
    print(f"worst ratio: {worst:.2f}")


if __name__ == "__main__":
    main()
