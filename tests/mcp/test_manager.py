"""All MCP connections of a session: parallel start-up, required servers, crashes under load, routing."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import trio

from actors.mcp._client import ConnectionState, RestartPolicy
from actors.mcp._errors import McpError, McpRequiredServersFailed, McpToolDisabled, McpUnknownTool
from actors.mcp._manager import McpConnectionManager
from protos.supervisor.v1 import mcp_pb2
from tests.mcp_servers.fixtures import Events, toolbox

START_BOUND_S = 30.0
#: Hang test: the configured startup timeout and the accepted deviation of the failure time from it.
HANG_TIMEOUT_S = 1.0
HANG_TOLERANCE_S = 0.5
#: Kill test: kills, the victim's tool timeout, and pacing of the load generators (they share 2 cores with
#: the restarting server, so they leave it some CPU).
KILLS = 20
KILL_TOOL_TIMEOUT_S = 10.0
CALL_PACE_S = 0.05
#: One kill in this many hits a ready server; the rest hit a restart in progress (cheaper: no full start-up).
READY_KILL_EVERY = 3


async def test_three_servers_start_in_parallel(tmp_path: Path) -> None:
    # Each server's start-up completes only once all three are starting at the same time (a barrier in a
    # directory): a serial start-up never gets past the first. No timing bound, so load cannot flake it.
    configs = [toolbox(f"slow{i}", "--barrier", f"{tmp_path}:3", startup_timeout_sec=START_BOUND_S)
               for i in range(3)]
    async with McpConnectionManager(configs, Events()) as manager:
        began = time.monotonic()
        with trio.fail_after(START_BOUND_S):
            report = await manager.start_all()
        print(f"three servers behind a barrier ready in {time.monotonic() - began:.2f} s")
    assert report.ready == [config.name for config in configs]
    assert len(list(tmp_path.iterdir())) == 3


async def test_required_hanging_server_fails_the_start_at_its_timeout() -> None:
    events = Events()
    configs = [
        toolbox("hang", "--hang", required=True, startup_timeout_sec=HANG_TIMEOUT_S),
        toolbox("bad.name", required=True),
    ]
    async with McpConnectionManager(configs, events) as manager:
        began = time.monotonic()
        with pytest.raises(McpRequiredServersFailed) as info:
            await manager.start_all()
        elapsed = time.monotonic() - began
    assert abs(elapsed - HANG_TIMEOUT_S) < HANG_TOLERANCE_S, elapsed
    assert str(info.value) == (
        "required MCP servers failed to initialize: hang: timed out after 1 s while starting; if the server needs"
        " longer, add or raise `startup_timeout_sec` in [mcp_servers.hang]; bad.name: invalid server name"
        " 'bad.name': must match ^[a-zA-Z0-9_-]+$"
    )
    complete = events.of(mcp_pb2.McpStartupComplete)
    assert len(complete) == 1
    assert [failure.server for failure in complete[0].failed] == ["hang", "bad.name"]


async def test_hanging_server_not_required_gives_a_warning() -> None:
    events = Events()
    configs = [toolbox("hang", "--hang", startup_timeout_sec=HANG_TIMEOUT_S), toolbox("ok")]
    async with McpConnectionManager(configs, events) as manager:
        with trio.fail_after(START_BOUND_S):
            report = await manager.start_all()
        assert report.ready == ["ok"]
        assert [name for name, _ in report.failed] == ["hang"]
        assert report.warnings == [
            "MCP client for `hang` failed to start: timed out after 1 s while starting; if the server needs"
            " longer, add or raise `startup_timeout_sec` in [mcp_servers.hang]"
        ]
        assert (await manager.call_tool("mcp__ok__add", {"a": 1, "b": 2})).text == "3"
    complete = events.of(mcp_pb2.McpStartupComplete)[0]
    assert list(complete.ready) == ["ok"] and complete.failed[0].server == "hang"


async def test_twenty_kills_during_a_stream_of_calls() -> None:
    events = Events()
    policy = RestartPolicy(initial_backoff_s=0.02, max_backoff_s=0.5, max_consecutive_failures=5)
    configs = [toolbox("victim", tool_timeout_sec=KILL_TOOL_TIMEOUT_S), toolbox("bystander")]
    outcomes: list[tuple[str, float]] = []
    bystander_results: list[str] = []
    done = trio.Event()
    async with McpConnectionManager(configs, events, restart_policy=policy) as manager:
        with trio.fail_after(START_BOUND_S):
            await manager.start_all()
        victim = manager.service("victim")

        async def call_victim() -> None:
            while not done.is_set():
                began = time.monotonic()
                try:
                    result = await manager.call_tool("mcp__victim__add", {"a": 1, "b": 1})
                    outcomes.append(("ok" if result.text == "2" else f"wrong {result.text}", time.monotonic() - began))
                except McpError as exc:  # a clear, narrow error is fine; a hang or anything else is not
                    outcomes.append((type(exc).__name__, time.monotonic() - began))
                await trio.sleep(CALL_PACE_S)

        async def call_bystander() -> None:
            while not done.is_set():
                bystander_results.append((await manager.call_tool("mcp__bystander__add", {"a": 2, "b": 2})).text)
                await trio.sleep(CALL_PACE_S)

        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(call_victim)
            nursery.start_soon(call_bystander)
            killed: set[int] = set()
            with trio.fail_after(START_BOUND_S * 4):
                for round_ in range(KILLS):
                    # Every third round kills a ready server that is serving the stream of calls; the others
                    # kill the next process as soon as it exists, which is mid-start-up (a failed restart).
                    while (
                        (pid := victim.pid) is None
                        or pid in killed
                        or (round_ % READY_KILL_EVERY == 0 and victim.state is not ConnectionState.READY)
                    ):
                        await trio.sleep(0.005)
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                while victim.state is not ConnectionState.READY or victim.pid in killed:
                    await trio.sleep(0.01)
                answer = await manager.call_tool("mcp__victim__pid")
                assert int(answer.text) not in killed  # the restarted server answers again
            done.set()
    assert len(killed) == KILLS
    assert outcomes and all(duration < KILL_TOOL_TIMEOUT_S + 1 for _, duration in outcomes)
    kinds = {kind for kind, _ in outcomes}
    # McpServerUnavailable: a call while a restart attempt had failed (it fails fast with a retry hint)
    assert kinds <= {"ok", "McpCallFailed", "McpToolTimeout", "McpServerUnavailable"}, kinds
    # No "ok" is required during the storm: a caller gets UNAVAILABLE at once while a restart is backing off,
    # and the killer may leave no READY window; the call after the storm shows the server serves again.
    assert bystander_results and set(bystander_results) == {"4"}  # the other server kept serving throughout
    restarts = events.of(mcp_pb2.McpServerRestarted)
    assert len(restarts) == len(range(0, KILLS, READY_KILL_EVERY))  # one per kill of a ready server
    assert all(event.reason == "server process was killed by signal 9 (SIGKILL)" for event in restarts)


async def test_routing_by_qualified_name_and_lazy_start() -> None:
    configs = [
        toolbox("a", disabled_tools=["crash"]),
        toolbox("b"),
        toolbox("lazy", start="on_first_use"),
        toolbox("off", enabled=False),
    ]
    async with McpConnectionManager(configs, Events()) as manager:
        with trio.fail_after(START_BOUND_S):
            report = await manager.start_all()
        assert report.ready == ["a", "b"]
        names = [tool.name for tool in manager.list_tools()]
        assert "mcp__a__add" in names and "mcp__b__add" in names
        assert "mcp__a__crash" not in names and "mcp__b__crash" in names
        assert not any(name.startswith(("mcp__lazy__", "mcp__off__")) for name in names)
        assert (await manager.call_tool("mcp__a__add", {"a": 1, "b": 2})).server == "a"
        assert (await manager.call_tool("mcp__b__add", {"a": 1, "b": 2})).server == "b"
        with pytest.raises(McpToolDisabled, match="tool 'crash' is disabled"):
            await manager.call_tool("mcp__a__crash")
        with pytest.raises(McpUnknownTool, match="unknown MCP tool 'mcp__off__add'"):
            await manager.call_tool("mcp__off__add")
        assert manager.service("lazy").state is ConnectionState.STOPPED
        with trio.fail_after(START_BOUND_S):
            lazy = await manager.call_tool("mcp__lazy__word_count", {"text": "x y"})
        assert lazy.text == "2" and lazy.server == "lazy"
        assert "mcp__lazy__add" in [tool.name for tool in manager.list_tools()]
