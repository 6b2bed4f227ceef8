"""MCP servers as children of a real session, over gRPC: tool calls, a required server that hangs (the start
fails and leaves no session), an optional one (a warning), one child actor per server (a crashed one restarts
alone), and no server process left behind."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from actors.auth import open_channel
from actors.gateway import serve
from actors.runtime import RuntimeOptions, SessionRuntime
from actors.turn import builtin_runner
from protos.supervisor.v1 import mcp_pb2, session_pb2, session_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
TOOLBOX = ROOT / "tests" / "mcp_servers" / "toolbox.py"
EXAMPLE = ROOT / "examples" / "mcp_example_server.py"
WAIT_S = 30.0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[session_pb2_grpc.SessionServiceStub, SessionRuntime, Path]]:
    runtime = SessionRuntime(RuntimeOptions(task_runner=builtin_runner, home=tmp_path / "home",
                                            managed_dir=tmp_path / "etc"))
    server = serve(runtime, "127.0.0.1:0")
    channel = open_channel(server.address, server.token)
    try:
        yield session_pb2_grpc.SessionServiceStub(channel), runtime, tmp_path
    finally:
        channel.close()
        server.stop()
        runtime.shutdown()


def server(name: str, script: Path, *args: str, **fields: Any) -> list[str]:
    out = [f'mcp_servers.{name}.command="{sys.executable}"',
           f"mcp_servers.{name}.args={json.dumps([str(script), *args])}"]
    out += [f"mcp_servers.{name}.{key}={json.dumps(value)}" for key, value in fields.items()]
    return out


def start(stub: session_pb2_grpc.SessionServiceStub, cwd: Path, *overrides: str) -> str:
    return stub.StartSession(session_pb2.StartSessionRequest(cwd=str(cwd), config_overrides=[
        "network.enabled=false", "shell.enabled=false", *overrides]), timeout=WAIT_S).session_id


def test_tools_of_two_servers_are_called_over_grpc(stack: Any) -> None:
    stub, runtime, tmp = stack
    sid = start(stub, tmp, *server("example", EXAMPLE, required=True),
                'mcp_servers.time.command="' + sys.executable + '"', 'mcp_servers.time.args=["-m", "mcp_server_time"]')
    tools = {t.name for t in stub.McpListTools(mcp_pb2.McpListToolsRequest(session_id=sid), timeout=WAIT_S).tools}
    assert {"mcp__example__word_count", "mcp__example__add"} <= tools
    result = stub.McpToolCall(mcp_pb2.McpToolCallRequest(session_id=sid, tool="mcp__example__word_count",
                                                         arguments_json='{"text": "one two three"}'), timeout=WAIT_S)
    assert not result.is_error and "3" in result.text
    deadline = time.monotonic() + WAIT_S
    while not any(t.startswith("mcp__time__") for t in tools) and time.monotonic() < deadline:
        tools = {t.name for t in stub.McpListTools(mcp_pb2.McpListToolsRequest(session_id=sid),
                                                   timeout=WAIT_S).tools}
    time_tool = sorted(t for t in tools if t.startswith("mcp__time__get_current"))[0]
    now = stub.McpToolCall(mcp_pb2.McpToolCallRequest(session_id=sid, tool=time_tool,
                                                      arguments_json='{"timezone": "UTC"}'), timeout=WAIT_S)
    assert not now.is_error and "UTC" in now.text
    with pytest.raises(grpc.RpcError) as bad_json:
        stub.McpToolCall(mcp_pb2.McpToolCallRequest(session_id=sid, tool="mcp__example__add", arguments_json="{"),
                         timeout=WAIT_S)
    assert bad_json.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
    kinds = [e.WhichOneof("msg") for e in runtime.log.read(sid, 0, limit=1000)]
    assert kinds[0] == "session_configured"
    assert "mcp_startup_complete" in kinds


def test_a_required_server_that_hangs_fails_the_start_and_leaves_nothing(stack: Any) -> None:
    stub, runtime, tmp = stack
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as failed:
        start(stub, tmp, *server("stuck", TOOLBOX, "--hang", required=True, startup_timeout_sec=1.5))
    elapsed = time.monotonic() - t0
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION  # type: ignore[attr-defined]
    assert "required MCP servers failed to initialize: stuck:" in failed.value.details()  # type: ignore[attr-defined]
    assert "startup_timeout_sec" in failed.value.details()  # type: ignore[attr-defined]
    assert 1.0 <= elapsed <= 2.0 + 1.0, elapsed  # its startup timeout, plus process start-up on 2 busy cores
    listed = stub.ListSessions(session_pb2.ListSessionsRequest(include_stopped=True), timeout=WAIT_S).sessions
    assert list(listed) == [] and runtime.live_ids() == []


def test_an_optional_server_that_hangs_is_a_warning(stack: Any) -> None:
    stub, runtime, tmp = stack
    sid = start(stub, tmp, *server("stuck", TOOLBOX, "--hang", startup_timeout_sec=1.0))
    deadline = time.monotonic() + WAIT_S
    warnings: list[str] = []
    while not warnings and time.monotonic() < deadline:
        warnings = [e.warning.message for e in runtime.log.read(sid, 0, limit=1000) if e.WhichOneof("msg") == "warning"]
        time.sleep(0.05)
    assert any("stuck" in w and "startup_timeout_sec" in w for w in warnings), warnings
    stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="works"), timeout=WAIT_S)
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)


def _events(runtime: SessionRuntime, sid: str, kind: str) -> list[Any]:
    return [getattr(e, kind) for e in runtime.log.read(sid, 0, limit=10_000) if e.WhichOneof("msg") == kind]


def _pid(stub: session_pb2_grpc.SessionServiceStub, sid: str, server_name: str) -> int:
    result = stub.McpToolCall(mcp_pb2.McpToolCallRequest(session_id=sid, tool=f"mcp__{server_name}__pid"),
                              timeout=WAIT_S)
    assert not result.is_error, result.text
    return int(result.text)


def test_each_server_is_its_own_child_and_a_crashed_one_restarts_alone(stack: Any) -> None:
    from actors.core import get_host
    from actors.mcp import has_exited

    stub, runtime, tmp = stack
    names = ["a", "b", "c"]
    sid = start(stub, tmp, *[line for name in names for line in server(name, TOOLBOX)])
    started = {e.child_id: e.kind for e in _events(runtime, sid, "child_started")}
    assert {f"mcp:{name}": "mcp" for name in names}.items() <= started.items()
    assert "mcp" not in started
    before = {name: _pid(stub, sid, name) for name in names}
    tools = runtime.live(sid).setup.services["mcp"]
    victim = tools.service("b")

    async def fail_the_connection() -> None:
        async def bug() -> None:
            raise RuntimeError("injected bug in the connection of b")

        victim._nursery.start_soon(bug)  # an unexpected error in one server's tasks fails its actor's task

    get_host().call(fail_the_connection, timeout=WAIT_S)
    # the other servers keep serving, with the same processes, while b's actor is replaced
    assert {name: _pid(stub, sid, name) for name in ("a", "c")} == {"a": before["a"], "c": before["c"]}
    deadline = time.monotonic() + WAIT_S
    while not _events(runtime, sid, "child_restarted") and time.monotonic() < deadline:
        time.sleep(0.02)  # polling a bounded deadline
    restarted = _events(runtime, sid, "child_restarted")
    assert [e.child_id for e in restarted] == ["mcp:b"], restarted
    assert "injected bug" in restarted[0].reason
    after = _pid(stub, sid, "b")  # waits for the new actor's server if it is still starting
    assert after != before["b"] and has_exited(before["b"])
    assert tools.service("b") is not victim
    assert {name: _pid(stub, sid, name) for name in ("a", "c")} == {"a": before["a"], "c": before["c"]}
    assert len(_events(runtime, sid, "mcp_startup_complete")) == 1  # one per session, not per actor start
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
    deadline = time.monotonic() + WAIT_S
    while not all(has_exited(pid) for pid in [*before.values(), after]) and time.monotonic() < deadline:
        time.sleep(0.02)  # polling a bounded deadline: each actor's scope closes just after its stop returns
    assert all(has_exited(pid) for pid in [*before.values(), after])


def test_control_accept_and_elicitation_rpcs_reach_the_per_server_actors(stack: Any) -> None:
    stub, runtime, tmp = stack
    sid = start(stub, tmp, *server("a", TOOLBOX, required=True), *server("lazy", TOOLBOX, start="on_first_use"))
    pid = _pid(stub, sid, "a")
    stopped = stub.McpServerControl(mcp_pb2.McpServerControlRequest(
        session_id=sid, server="a", action=mcp_pb2.MCP_SERVER_ACTION_STOP), timeout=WAIT_S)
    assert stopped.status == mcp_pb2.MCP_STARTUP_STATUS_UNSPECIFIED and stopped.error == ""
    assert not any(t.server == "a" for t in stub.McpListTools(mcp_pb2.McpListToolsRequest(session_id=sid),
                                                              timeout=WAIT_S).tools)
    started = stub.McpServerControl(mcp_pb2.McpServerControlRequest(
        session_id=sid, server="a", action=mcp_pb2.MCP_SERVER_ACTION_START), timeout=WAIT_S)
    assert started.status == mcp_pb2.MCP_STARTUP_STATUS_READY
    assert _pid(stub, sid, "a") != pid
    assert _pid(stub, sid, "lazy") > 0  # started by its first call
    unknown = stub.McpServerControl(mcp_pb2.McpServerControlRequest(
        session_id=sid, server="zz", action=mcp_pb2.MCP_SERVER_ACTION_RESTART), timeout=WAIT_S)
    assert "no enabled MCP server named 'zz'" in unknown.error
    accepted = stub.McpAcceptTools(mcp_pb2.McpAcceptToolsRequest(session_id=sid, server="a"), timeout=WAIT_S)
    assert list(accepted.accepted) == []  # nothing changed, nothing pending
    resolved = stub.McpResolveElicitation(mcp_pb2.McpResolveElicitationRequest(session_id=sid, id="no-such-id"),
                                          timeout=WAIT_S)
    assert not resolved.resolved
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
    children = {e.child_id for e in _events(runtime, sid, "child_started")}
    assert {"mcp:a", "mcp:lazy"} <= children
