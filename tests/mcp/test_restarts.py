"""A crash-looping MCP server is never given up on silently (issue 16, finding 6): capped backoff for ever, an
event at every state change, UNAVAILABLE with a retry hint meanwhile; or down for good when configured so."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from actors.mcp._client import ConnectionState, McpConnectionService, RestartPolicy
from actors.mcp._errors import McpCallFailed, McpServerUnavailable
from protos.supervisor.v1 import mcp_pb2
from tests.mcp_servers.fixtures import Events, toolbox

START_BOUND_S = 20.0
#: More failed restarts in a row than the old give-up limit (5).
CRASH_LOOP = 8
POLICY = RestartPolicy(initial_backoff_s=0.02, max_backoff_s=0.2, jitter=0.2)
MAX_DELAY_MS = 0.2 * 1.2 * 1000


def _restarting(events: Events) -> list[mcp_pb2.McpStartupUpdate]:
    return [e for e in events.of(mcp_pb2.McpStartupUpdate) if e.status == mcp_pb2.MCP_STARTUP_STATUS_RESTARTING]


async def _crash(service: McpConnectionService) -> None:
    with pytest.raises(McpCallFailed):
        await service.call_tool("crash")


async def test_a_crash_loop_backs_off_and_keeps_trying_until_the_server_serves(tmp_path: Path) -> None:
    events = Events()
    config = toolbox("loop", "--fail-restarts", str(CRASH_LOOP), "--counter", str(tmp_path / "starts"))
    unavailable: list[McpServerUnavailable] = []
    async with McpConnectionService(config, events, restart_policy=POLICY) as service:
        with trio.fail_after(START_BOUND_S):
            await service.start()
        await _crash(service)
        with trio.fail_after(START_BOUND_S * 3):
            while True:
                try:
                    result = await service.call_tool("pid")
                    break
                except McpServerUnavailable as exc:  # only while an attempt has failed
                    unavailable.append(exc)
                    await trio.sleep(exc.retry_after_s)
        assert result.text == str(service.pid)
        assert service.state is ConnectionState.READY and service.restarts == 1
    assert int((tmp_path / "starts").read_text()) == CRASH_LOOP + 2
    restarting = _restarting(events)
    assert len(restarting) == 1 + CRASH_LOOP  # the crash, then every failed attempt
    assert "killed by signal" in restarting[0].error or "exited" in restarting[0].error
    assert all("code 3" in e.error for e in restarting[1:])
    assert all(0 < e.retry_in_ms <= MAX_DELAY_MS for e in restarting)
    assert restarting[-1].retry_in_ms > restarting[0].retry_in_ms  # it backed off
    assert not [e for e in events.of(mcp_pb2.McpStartupUpdate) if e.status == mcp_pb2.MCP_STARTUP_STATUS_FAILED]
    assert [r.attempt for r in events.of(mcp_pb2.McpServerRestarted)] == [1]
    assert unavailable, "a call during the crash loop must fail fast with a retry hint"
    assert all(0 < exc.retry_after_s <= 1.0 and "restarting" in str(exc) for exc in unavailable)


async def test_max_restart_failures_keeps_a_crash_looping_server_down_until_restarted(tmp_path: Path) -> None:
    events = Events()
    config = toolbox("loop", "--fail-restarts", "2", "--counter", str(tmp_path / "starts"), max_restart_failures=2)
    async with McpConnectionService(config, events, restart_policy=POLICY) as service:
        with trio.fail_after(START_BOUND_S):
            await service.start()
        await _crash(service)
        with trio.fail_after(START_BOUND_S):
            while service.state is not ConnectionState.FAILED:
                await service.settled()
                await trio.sleep(0.01)
        with pytest.raises(McpServerUnavailable, match="gave up after 2 failed restarts"):
            await service.call_tool("pid")
        failed = events.of(mcp_pb2.McpStartupUpdate)[-1]
        assert failed.status == mcp_pb2.MCP_STARTUP_STATUS_FAILED and "gave up after 2" in failed.error
        with trio.fail_after(START_BOUND_S):
            await service.restart()  # by hand: the fourth start serves
        assert (await service.call_tool("pid")).text == str(service.pid)
    assert len(_restarting(events)) == 2
