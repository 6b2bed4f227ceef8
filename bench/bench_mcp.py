"""MCP connections: parallel start-up and tool-call round trips, ours beside baselines measured in the same run.

Run: ``.venv/bin/python bench/bench_mcp.py`` (about 50 s on 2 cores; ``--quick`` skips 10 servers,
``--full`` adds the bare SDK starting 10).

Figures (one JSON line each):
- start-up of 0, 1, 3 and 10 servers whose start takes 1 s (plus the SDK import of each server process) through
  ``McpConnectionManager.start_all`` (parallel), against one server alone and against a serial start (serial
  measured for 3; for 10 it is 10x the one-alone time, not run);
- the same start-up the way a session does it: one ``McpConnection`` actor per server, until the shared
  ``McpTools.startup`` resolves, against the manager's one-task parallel start;
- a server actor whose connection task failed, replaced by a real ``Supervisor``: time from the failure until
  the new actor's server answers a call, against a fresh start of the same actor until its first answer;
- tool-call round trips per second through ``McpConnectionService``, through ``McpTools.call_tool`` (the
  session's namespace, as the turn loop calls it) and through the ``McpConnection`` actor (pykka proxy, from
  plain threads), against the bare SDK ``mcp.Client`` on the same server, sequential and with 8 concurrent
  callers.
"""

from __future__ import annotations

import concurrent.futures
import json
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.core import (
    Supervisor,
    get_host,
    start_actor,
)
from actors.mcp import (
    McpConnection,
    McpConnectionManager,
    McpConnectionService,
    McpServerConfig,
    mcp_child_specs,
    parse_mcp_server,
)

TOOLBOX = str(ROOT / "tests" / "mcp_servers" / "toolbox.py")
EXAMPLE = str(ROOT / "examples" / "mcp_example_server.py")
#: Start-up delay of each slow server, on top of its SDK import.
SLOW_START_S = 1.0
#: Calls per round-trip figure, sequential and in total for the concurrent run.
SEQUENTIAL_CALLS = 320
CONCURRENT_CALLS = 640
CONCURRENCY = 8
#: Measured rounds; each runs the bare SDK, our service and our actor one after the other.
ROUNDS = 4
#: Bound on any single measurement.
MEASURE_BOUND_S = 60.0


def _report(figure: str, ours: float, baseline: float, unit: str, note: str = "") -> None:
    ratio = ours / baseline if baseline else 0.0
    print(f"{figure:<38} ours {ours:10.2f} {unit:<6} baseline {baseline:10.2f} {unit:<6} ratio {ratio:5.2f}  {note}")
    print(
        json.dumps(
            {
                "bench": "mcp",
                "figure": figure,
                "ours": round(ours, 4),
                "baseline": round(baseline, 4),
                "ratio": round(ratio, 4),
                "unit": unit,
            }
        )
    )


def _slow(name: str) -> McpServerConfig:
    return parse_mcp_server(name, {"command": sys.executable, "args": [TOOLBOX, "--start-delay", str(SLOW_START_S)]})


def _example() -> McpServerConfig:
    return parse_mcp_server("example", {"command": sys.executable, "args": [EXAMPLE]})


async def _parallel_start(count: int) -> float:
    configs = [_slow(f"slow{i}") for i in range(count)]
    async with McpConnectionManager(configs, lambda _m: None) as manager:
        began = time.monotonic()
        with trio.fail_after(MEASURE_BOUND_S):
            report = await manager.start_all()
        elapsed = time.monotonic() - began
    assert len(report.ready) == count, report
    return elapsed


async def _bare_sdk_parallel_start(count: int) -> float:
    """The same parallel start-up through the bare SDK client: what the machine allows without our layer."""
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=sys.executable, args=[TOOLBOX, "--start-delay", str(SLOW_START_S)])
    all_ready = trio.Event()
    ready: list[float] = []

    async def one() -> None:
        async with Client(params, cache=None) as client:  # each client is entered and left in its own task
            await client.list_tools()
            ready.append(time.monotonic())
            if len(ready) == count:
                all_ready.set()
            await all_ready.wait()

    began = time.monotonic()
    with trio.fail_after(MEASURE_BOUND_S):
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
    return max(ready) - began


def _actors_parallel_start(count: int) -> float:
    """One actor per server, started as a session starts its children, until the shared startup resolves."""
    children = mcp_child_specs([_slow(f"actor{i}") for i in range(count)], emit=lambda _m: None)
    began = time.monotonic()
    refs = [start_actor(spec.actor_class(child_id=spec.child_id, **spec.kwargs)) for spec in children.specs]
    try:
        report = children.tools.startup.result(MEASURE_BOUND_S)
        elapsed = time.monotonic() - began
    finally:
        for ref in reversed(refs):
            ref.stop(timeout=MEASURE_BOUND_S)
    assert len(report.ready) == count, report
    return elapsed


async def _serial_start(count: int) -> float:
    began = time.monotonic()
    for i in range(count):
        async with McpConnectionService(_slow(f"serial{i}"), lambda _m: None) as service:
            with trio.fail_after(MEASURE_BOUND_S):
                await service.start()
    return time.monotonic() - began


class _Held:
    """A bare SDK client and one of our services, held open in one task of the shared loop between rounds."""

    def __init__(self) -> None:
        self.client: Any = None
        self.service: McpConnectionService | None = None
        self.stop: trio.Event | None = None
        self.ready = threading.Event()

    async def hold(self) -> None:
        from mcp import Client, StdioServerParameters

        params = StdioServerParameters(command=sys.executable, args=[EXAMPLE])
        async with Client(params, cache=None) as client, McpConnectionService(_example(), lambda _m: None) as svc:
            await svc.start()
            self.client, self.service, self.stop = client, svc, trio.Event()
            self.ready.set()
            await self.stop.wait()


async def _timed_batch(call: Callable[[], Awaitable[Any]], calls: int, concurrency: int) -> float:
    per_worker = calls // concurrency

    async def worker() -> None:
        for _ in range(per_worker):
            await call()

    began = time.monotonic()
    with trio.fail_after(MEASURE_BOUND_S):
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
    return time.monotonic() - began


def _actor_batch(proxy: Any, calls: int, concurrency: int) -> float:
    def run(count: int) -> None:
        for _ in range(count):
            proxy.call_tool("add", {"a": 1, "b": 2}).get(timeout=MEASURE_BOUND_S).result(MEASURE_BOUND_S)

    began = time.monotonic()
    if concurrency == 1:
        run(calls)
    else:
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            for done in [pool.submit(run, calls // concurrency) for _ in range(concurrency)]:
                done.result(MEASURE_BOUND_S)
    return time.monotonic() - began


def _call_rates(host: Any, concurrency: int, total_calls: int) -> dict[str, float]:
    """Round trips/s of the bare SDK, our service, McpTools and our actor, in alternating rounds (load drifts)."""
    held = _Held()
    holder = host.submit(held.hold)
    connection = McpConnection(config=_example(), emit=lambda _m: None)
    tools = connection.tools
    ref = start_actor(connection)
    try:
        if not held.ready.wait(MEASURE_BOUND_S):
            raise RuntimeError(f"bench servers did not start: {holder.exception(0)}")
        proxy = ref.proxy()
        proxy.startup().get(timeout=MEASURE_BOUND_S).result(MEASURE_BOUND_S)
        assert held.service is not None
        service = held.service

        async def sdk_call() -> None:
            await held.client.call_tool("add", {"a": 1, "b": 2})

        async def service_call() -> None:
            await service.call_tool("add", {"a": 1, "b": 2})

        async def tools_call() -> None:
            await tools.call_tool("mcp__example__add", {"a": 1, "b": 2})

        spent = {"sdk": 0.0, "service": 0.0, "tools": 0.0, "actor": 0.0}
        per_round = total_calls // ROUNDS
        for round_ in range(ROUNDS + 1):  # round 0 warms up and is not counted
            sdk = host.call(_timed_batch, sdk_call, per_round, concurrency)
            ours = host.call(_timed_batch, service_call, per_round, concurrency)
            namespace = host.call(_timed_batch, tools_call, per_round, concurrency)
            actor = _actor_batch(proxy, per_round, concurrency)
            if round_:
                spent["sdk"] += sdk
                spent["service"] += ours
                spent["tools"] += namespace
                spent["actor"] += actor
        return {name: per_round * ROUNDS / seconds for name, seconds in spent.items()}
    finally:
        ref.stop(timeout=MEASURE_BOUND_S)
        if held.stop is not None:
            host.run_sync_soon(held.stop.set)
        holder.result(MEASURE_BOUND_S)


def _restart_after_crash(host: Any) -> tuple[float, float]:
    """(crash to serving again, fresh start to serving) of one server actor under a real ``Supervisor``."""
    supervisor = start_actor(Supervisor())
    try:
        children = mcp_child_specs([_example()], emit=lambda _m: None)
        tools = children.tools
        began = time.monotonic()
        supervisor.proxy().start_children(children.specs).get(timeout=MEASURE_BOUND_S)
        host.call(tools.call_tool, "mcp__example__add", {"a": 1, "b": 2}, timeout=MEASURE_BOUND_S)
        fresh = time.monotonic() - began
        victim = tools.service("example")

        async def fail() -> None:
            async def bug() -> None:
                raise RuntimeError("bench: injected connection failure")

            assert victim._nursery is not None
            victim._nursery.start_soon(bug)

        began = time.monotonic()
        host.call(fail, timeout=MEASURE_BOUND_S)
        deadline = began + MEASURE_BOUND_S
        while time.monotonic() < deadline:
            service = tools.services.get("example")
            if service is not None and service is not victim:
                host.call(tools.call_tool, "mcp__example__add", {"a": 1, "b": 2}, timeout=MEASURE_BOUND_S)
                break
            time.sleep(0.001)  # polling a bounded deadline
        return time.monotonic() - began, fresh
    finally:
        supervisor.stop(timeout=MEASURE_BOUND_S)


def main(argv: list[str]) -> int:
    """Run every figure; see the module docstring."""
    quick = "--quick" in argv
    host = get_host()
    host.call(_import_sdk)
    print(f"# MCP bench: servers take {SLOW_START_S:g} s to start plus their SDK import; 2 cores shared")
    alone = host.call(_parallel_start, 1)
    empty = host.call(_parallel_start, 0)
    _report("startup_0_servers_vs_1_alone", empty, alone, "s", "empty manager")
    three = host.call(_parallel_start, 3)
    serial_three = host.call(_serial_start, 3)
    _report("startup_3_parallel_vs_1_alone", three, alone, "s")
    _report("startup_3_parallel_vs_serial", three, serial_three, "s")
    _report("startup_3_parallel_vs_bare_sdk_parallel", three, host.call(_bare_sdk_parallel_start, 3), "s")
    _report("startup_3_actors_vs_manager_parallel", _actors_parallel_start(3), three, "s", "one actor per server")
    if not quick:
        ten = host.call(_parallel_start, 10)
        _report("startup_10_parallel_vs_1_alone", ten, alone, "s")
        if "--full" in argv:
            _report("startup_10_parallel_vs_bare_sdk_parallel", ten, host.call(_bare_sdk_parallel_start, 10), "s")
        _report("startup_10_parallel_vs_serial_est", ten, 10 * alone, "s", "serial estimated as 10x alone")
        _report("startup_10_actors_vs_manager_parallel", _actors_parallel_start(10), ten, "s",
                "one actor per server")
    crash, fresh = _restart_after_crash(host)
    _report("actor_crash_to_serving_vs_fresh_start", crash, fresh, "s", "supervisor restart of one server actor")
    sequential = _call_rates(host, 1, SEQUENTIAL_CALLS)
    concurrent_ = _call_rates(host, CONCURRENCY, CONCURRENT_CALLS)
    _report("calls_sequential_service_vs_sdk", sequential["service"], sequential["sdk"], "rt/s")
    _report("calls_8_concurrent_service_vs_sdk", concurrent_["service"], concurrent_["sdk"], "rt/s")
    _report("calls_sequential_mcptools_vs_sdk", sequential["tools"], sequential["sdk"], "rt/s", "turn-loop path")
    _report("calls_8_concurrent_mcptools_vs_sdk", concurrent_["tools"], concurrent_["sdk"], "rt/s")
    _report("calls_sequential_actor_vs_sdk", sequential["actor"], sequential["sdk"], "rt/s", "pykka proxy")
    _report("calls_8_concurrent_actor_vs_sdk", concurrent_["actor"], concurrent_["sdk"], "rt/s", "8 threads")
    host.stop()
    return 0


async def _import_sdk() -> None:
    import mcp  # noqa: F401 - so that no figure carries the one-time client import


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
