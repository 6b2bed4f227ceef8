"""Provider costs beside baselines measured in the same run (2-core friendly, < 60 s).

Figures:
- cold import: ``import actors.providers`` (+ playbook) vs ``import openai``, in fresh interpreters;
- openai provider: sequential streamed requests/s through the SDK on trio vs a raw httpx2 stream of the
  same bytes from the same local fake server (the floor any client pays);
- playbook: root fan-out steps/s (8 templated calls each) vs an async generator yielding prebuilt items.

Run: ``.venv/bin/python bench/bench_providers.py``. Prints a table, then one JSON line per figure.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.providers import (
    Completed,
    Message,
    ModelRequest,
    StreamItem,
    TextDelta,
    TokenUsage,
    ToolCallItem,
    collect_response,
    create_provider,
)
from tests.helpers.fake_openai_server import FakeOpenAIServer, Reply

#: Fresh interpreters per import figure (median taken).
IMPORT_RUNS = 5
#: Streamed requests per HTTP figure.
HTTP_REQUESTS = 150
#: Playbook steps per figure.
PLAYBOOK_STEPS = 2000
#: Text deltas per scripted reply.
DELTAS = 20
SUBPROCESS_TIMEOUT_S = 30.0


def emit(figure: str, ours: float, baseline: float, unit: str, higher_is_better: bool) -> None:
    ratio = ours / baseline if baseline else float("nan")
    better = "higher" if higher_is_better else "lower"
    print(f"{figure:<42} ours {ours:10.3f}  baseline {baseline:10.3f}  ratio {ratio:6.3f}  {unit}"
          f" ({better} is better)")
    print(json.dumps({"bench": "providers", "figure": figure, "ours": round(ours, 4),
                      "baseline": round(baseline, 4), "ratio": round(ratio, 4), "unit": unit}))


def import_seconds(code: str) -> float:
    times = []
    for _ in range(IMPORT_RUNS):
        done = subprocess.run(
            [sys.executable, "-c", f"import time; t=time.perf_counter(); {code}; print(time.perf_counter() - t)"],
            cwd=ROOT, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, check=True,
        )
        times.append(float(done.stdout.strip()))
    return statistics.median(times)


async def rate(n: int, one: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await one()
    return n / (time.perf_counter() - started)


async def http_figure(api: str, path: str) -> None:
    import httpx2

    reply = Reply(text_deltas=tuple(f"w{i} " for i in range(DELTAS)))
    body = {"model": "m", "stream": True, "input": "hi", "messages": [{"role": "user", "content": "hi"}]}
    request = ModelRequest("m", "be brief", [Message.user("hi")])
    with FakeOpenAIServer() as srv:
        srv.add_replies(*([reply] * (2 * HTTP_REQUESTS + 2)))
        provider = create_provider("openai", {"base_url": srv.base_url, "api_key": "k", "model": "m",
                                              "api": api, "max_retries": 0})
        url = srv.base_url + path

        async def ours() -> None:
            await collect_response(provider, request)

        async with httpx2.AsyncClient() as raw_client:

            async def raw() -> None:
                async with raw_client.stream("POST", url, json=body) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data: ") and line != "data: [DONE]":
                            json.loads(line[6:])

            await ours()
            await raw()  # warm both: SDK import, connection pool
            baseline = await rate(HTTP_REQUESTS, raw)
            measured = await rate(HTTP_REQUESTS, ours)
        await provider.aclose()
    emit(f"openai_{api}_streamed_requests_per_s", measured, baseline, "req/s", True)


async def http_figures() -> None:
    await http_figure("responses", "/responses")
    await http_figure("chat", "/chat/completions")


async def playbook_figure() -> None:
    provider = create_provider("playbook", {"path": str(ROOT / "examples" / "fanout.toml")})
    request = ModelRequest("m", "", [Message.user("count the words")])
    first = await collect_response(provider, request)
    items: list[StreamItem] = [TextDelta(first.text)]
    items += [ToolCallItem(call) for call in first.tool_calls]
    items.append(Completed(TokenUsage(), "tool_calls"))

    async def prebuilt() -> AsyncGenerator[StreamItem, None]:
        for item in items:
            await trio.lowlevel.checkpoint()
            yield item

    async def baseline_one() -> None:
        async with aclosing(prebuilt()) as stream:
            async for _ in stream:
                pass

    async def ours() -> None:
        await collect_response(provider, request)

    baseline = await rate(PLAYBOOK_STEPS, baseline_one)
    measured = await rate(PLAYBOOK_STEPS, ours)
    emit("playbook_fanout_steps_per_s", measured, baseline, "steps/s", True)


def main() -> None:
    ours = import_seconds("import actors.providers, actors.providers.playbook")
    baseline = import_seconds("import openai")
    emit("cold_import_seconds", ours, baseline, "s", False)
    trio.run(http_figures)
    trio.run(playbook_figure)


if __name__ == "__main__":
    main()
