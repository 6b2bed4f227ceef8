"""MCP servers as children of a real session, over gRPC: tool calls, a required server that hangs (the start
fails and leaves no session), an optional one (a warning), and no server process left behind."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from actors._tasks import builtin_runner
from actors.gateway import serve
from actors.runtime import RuntimeOptions, SessionRuntime
from protos.supervisor.v1 import mcp_pb2, session_pb2, session_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
TOOLBOX = ROOT / "tests" / "mcp_servers" / "toolbox.py"
EXAMPLE = ROOT / "examples" / "mcp_example_server.py"
WAIT_S = 30.0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[session_pb2_grpc.SessionServiceStub, SessionRuntime, Path]]:
    runtime = SessionRuntime(RuntimeOptions(task_runner=builtin_runner, home=tmp_path / "home",
                                            managed_dir=tmp_path / "etc"))
    server = serve(runtime, "127.0.0.1:0")
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
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
