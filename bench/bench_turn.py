"""Benchmark: what the turn loop costs on top of calling the provider and the tools directly.

Run: ``.venv/bin/python bench/bench_turn.py`` (about 15 s on 2 cores). Prints a table and one JSON line per
figure. Figures (baseline measured in the same run, same provider, same tools):
- a text-only playbook turn through ``make_turn_runner`` vs ``collect_response`` on the same request
  (median per turn): the loop's own overhead per round trip (events, conversation, router build);
- one model step with ``FANOUT`` in-process tool calls (a dynamic tool) through the turn vs the same handler
  awaited ``FANOUT`` times in a bare nursery (median per step): dispatch overhead per tool call;
- one model step with ``SHELL_CALLS`` shell calls of ``sleep SHELL_SLEEP_S`` through the turn vs the same
  commands run concurrently through ``SessionShell.exec`` in a bare nursery, and vs run one after another
  (what a loop without concurrency would take), wall time.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.config import default_configuration
from actors.providers import Message, ModelRequest, collect_response, create_provider
from actors.shell import CommandRunner, SessionShell, ShellSnapshotter
from actors.turn import TaskContext, make_turn_runner
from protos.supervisor.v1 import config_pb2

TURNS = 300
WARMUP = 20
FANOUT = 200
FANOUT_REPEATS = 30
SHELL_CALLS = 8
SHELL_SLEEP_S = 0.2
SHELL_REPEATS = 3
BASH = shutil.which("bash") or "/bin/bash"
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}

TEXT_PLAYBOOK = """
[[plans.root.steps]]
text = "an answer of a few words to {input}"
"""
FANOUT_PLAYBOOK = f"""
[[plans.root.steps]]
tool = "noop"
repeat = {FANOUT}
arguments = {{ n = "{{n}}" }}
[[plans.root.steps]]
text = "done"
"""
SHELL_PLAYBOOK = f"""
[[plans.root.steps]]
tool = "shell"
repeat = {SHELL_CALLS}
arguments = {{ command = "sleep {SHELL_SLEEP_S}" }}
[[plans.root.steps]]
text = "done"
"""


def _discard(_message: Any) -> None:
    pass


def _context(cwd: Path, prompt: str, services: dict[str, Any], **config: Any) -> TaskContext:
    configuration = default_configuration(str(cwd), str(cwd / "home"))
    configuration.dynamic_tools.extend(config.get("dynamic_tools", []))
    return TaskContext("bench", "task", prompt, configuration, "", _discard, services, state={})


async def _median_ms(fn: Callable[[], Awaitable[object]], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        await fn()
    samples = []
    for _ in range(repeats):
        began = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


async def bench_text_turn(cwd: Path) -> tuple[float, float]:
    provider = create_provider("playbook", {"text": TEXT_PLAYBOOK})
    runner = make_turn_runner()

    async def turn() -> None:
        await runner(_context(cwd, "hello", {"provider": provider}))

    configuration = default_configuration(str(cwd), str(cwd))
    request = ModelRequest(model="playbook", instructions=configuration.base_instructions,
                           messages=[Message.user("hello")], agent_role="root")

    async def direct() -> None:
        await collect_response(provider, request)

    return await _median_ms(turn, TURNS, WARMUP), await _median_ms(direct, TURNS, WARMUP)


async def noop(args: dict[str, Any], ctx: Any) -> str:
    await trio.lowlevel.checkpoint()
    return f"ok {args.get('n')}"


async def bench_fanout(cwd: Path) -> tuple[float, float]:
    provider = create_provider("playbook", {"text": FANOUT_PLAYBOOK})
    runner = make_turn_runner()
    tools = [config_pb2.DynamicTool(name="noop")]

    async def turn() -> None:
        await runner(_context(cwd, "fan", {"provider": provider, "dynamic_tools": {"noop": noop}},
                              dynamic_tools=tools))

    async def direct() -> None:
        # the same two model requests and the same handler calls, without the loop
        request = ModelRequest("playbook", "", [Message.user("fan")], agent_role="root")
        first = await collect_response(provider, request)
        results: list[str] = [""] * len(first.tool_calls)

        async def one(index: int, arguments: dict[str, Any]) -> None:
            results[index] = await noop(arguments, None)

        async with trio.open_nursery() as nursery:
            for index, call in enumerate(first.tool_calls):
                nursery.start_soon(one, index, call.arguments)
        messages = [*request.messages, first.as_message(),
                    *(Message.tool_result(c.call_id, r) for c, r in zip(first.tool_calls, results, strict=True))]
        await collect_response(provider, ModelRequest("playbook", "", messages, agent_role="root"))

    return await _median_ms(turn, FANOUT_REPEATS, 3), await _median_ms(direct, FANOUT_REPEATS, 3)


async def bench_shell(cwd: Path) -> tuple[float, float, float]:
    home = cwd / "shell-home"
    home.mkdir()
    (home / ".bashrc").write_text("")
    snapshotter = ShellSnapshotter(session_id="bench", home=home, emit=_discard, shell=BASH, env=ENV)
    shell = SessionShell(snapshotter, CommandRunner(emit=_discard, shell=BASH, env=ENV), cwd=cwd)
    await shell.capture()
    provider = create_provider("playbook", {"text": SHELL_PLAYBOOK})
    runner = make_turn_runner()
    command = f"sleep {SHELL_SLEEP_S}"

    async def turn() -> None:
        await runner(_context(cwd, "sleep", {"provider": provider, "shell": shell}))

    async def concurrent() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(SHELL_CALLS):
                nursery.start_soon(shell.exec, command)

    async def serial() -> None:
        for _ in range(SHELL_CALLS):
            await shell.exec(command)

    return (await _median_ms(turn, SHELL_REPEATS, 1), await _median_ms(concurrent, SHELL_REPEATS, 1),
            await _median_ms(serial, 1, 0))


def report(rows: list[tuple[str, float, float, str]]) -> None:
    """Print a table, then one JSON line per figure."""
    print(f"{'figure':62} {'ours':>10} {'baseline':>10} {'ratio':>7}  unit")
    for figure, ours, base, unit in rows:
        print(f"{figure:62} {ours:10.3f} {base:10.3f} {ours / base:7.2f}  {unit}")
    for figure, ours, base, unit in rows:
        print(json.dumps({"bench": "turn", "figure": figure, "ours": round(ours, 4), "baseline": round(base, 4),
                          "ratio": round(ours / base, 3), "unit": unit}))


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        turn_ms, direct_ms = await bench_text_turn(cwd)
        fan_turn_ms, fan_direct_ms = await bench_fanout(cwd)
        shell_turn_ms, shell_concurrent_ms, shell_serial_ms = await bench_shell(cwd)
    report([
        ("text-only turn vs collect_response (median)", turn_ms, direct_ms, "ms"),
        (f"step with {FANOUT} in-process tool calls vs bare nursery (median)", fan_turn_ms, fan_direct_ms, "ms"),
        (f"{SHELL_CALLS} x sleep {SHELL_SLEEP_S} shell calls vs bare concurrent exec", shell_turn_ms,
         shell_concurrent_ms, "ms"),
        (f"{SHELL_CALLS} x sleep {SHELL_SLEEP_S} shell calls vs serial exec", shell_turn_ms, shell_serial_ms, "ms"),
    ])


if __name__ == "__main__":
    trio.run(main)
