"""McpConnection: a session's MCP servers as a supervised pykka child on the shared trio loop."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actors._mcp_errors import McpRequiredServersFailed
from actors._mcp_manager import McpConnectionManager
from actors._mcp_process import has_exited
from actors.mcp_connection import MCP_CHILD_ID, McpConnection, mcp_child_spec
from actors.supervision import start_actor
from actors.trio_host import get_host
from protos.supervisor.v1 import mcp_pb2
from tests.mcp_servers.fixtures import Events, toolbox

REPO_ROOT = str(Path(__file__).resolve().parent.parent)
#: Bound on every wait in these tests (server start-up included).
WAIT_BOUND_S = 30.0


def _wait_for(predicate: object, bound: float = WAIT_BOUND_S) -> bool:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.01)  # polling a bounded deadline
    return False


def test_actor_starts_servers_serves_calls_and_kills_them_on_stop() -> None:
    sink = Events()
    actor = McpConnection(configs=[toolbox("a"), toolbox("b", start="on_first_use")], emit=sink)
    ref = start_actor(actor)
    try:
        proxy = ref.proxy()
        report = proxy.startup().get(timeout=WAIT_BOUND_S).result(WAIT_BOUND_S)
        assert report.ready == ["a"] and report.warnings == []
        result = proxy.call_tool("mcp__a__add", {"a": 2, "b": 3}).get(timeout=WAIT_BOUND_S).result(WAIT_BOUND_S)
        assert result.text == "5"
        lazy = proxy.call_tool("mcp__b__echo", {"text": "hi"}).get(timeout=WAIT_BOUND_S).result(WAIT_BOUND_S)
        assert lazy.text == "hi" and lazy.server == "b"
        listing = proxy.list_tools().get(timeout=WAIT_BOUND_S).result(WAIT_BOUND_S)
        assert {"mcp__a__add", "mcp__b__add"} <= {tool.name for tool in listing.tools}
        manager = proxy.manager().get(timeout=WAIT_BOUND_S)
        assert isinstance(manager, McpConnectionManager)
        pids = [manager.service("a").pid, manager.service("b").pid]
        stopped = proxy.control("b", mcp_pb2.MCP_SERVER_ACTION_STOP).get(timeout=WAIT_BOUND_S).result(WAIT_BOUND_S)
        assert stopped.status == mcp_pb2.MCP_STARTUP_STATUS_UNSPECIFIED and stopped.error == ""
        restarted = proxy.control("b", mcp_pb2.MCP_SERVER_ACTION_RESTART).get(timeout=WAIT_BOUND_S)
        assert restarted.result(WAIT_BOUND_S).status == mcp_pb2.MCP_STARTUP_STATUS_READY
        unknown = proxy.control("zz", mcp_pb2.MCP_SERVER_ACTION_START).get(timeout=WAIT_BOUND_S).result(WAIT_BOUND_S)
        assert "no enabled MCP server named 'zz'" in unknown.error
        pids.append(manager.service("b").pid)
    finally:
        ref.stop(timeout=WAIT_BOUND_S)
    assert all(pid is not None for pid in pids)
    assert _wait_for(lambda: all(has_exited(pid) for pid in pids if pid is not None))
    complete = sink.of(mcp_pb2.McpStartupComplete)
    assert len(complete) == 1 and list(complete[0].ready) == ["a"]


def test_required_failure_is_reported_by_startup_not_by_the_actor() -> None:
    actor = McpConnection(configs=[toolbox("bad", "--exit-on-start", required=True), toolbox("ok")], emit=Events())
    ref = start_actor(actor)
    try:
        startup = ref.proxy().startup().get(timeout=WAIT_BOUND_S)
        with pytest.raises(McpRequiredServersFailed, match="required MCP servers failed to initialize: bad: "):
            startup.result(WAIT_BOUND_S)
        assert ref.is_alive()
        call = ref.proxy().call_tool("mcp__ok__add", {"a": 1, "b": 1}).get(timeout=WAIT_BOUND_S)
        assert call.result(WAIT_BOUND_S).text == "2"
    finally:
        ref.stop(timeout=WAIT_BOUND_S)


def test_elicitation_answered_through_the_actor() -> None:
    sink = Events()
    ref = start_actor(McpConnection(configs=[toolbox("asker")], emit=sink))
    try:
        proxy = ref.proxy()
        proxy.startup().get(timeout=WAIT_BOUND_S).result(WAIT_BOUND_S)
        future = proxy.call_tool("mcp__asker__ask").get(timeout=WAIT_BOUND_S)
        assert _wait_for(lambda: sink.of(mcp_pb2.McpElicitationRequested))
        request = sink.of(mcp_pb2.McpElicitationRequested)[0]
        answered = proxy.resolve_elicitation(
            request.id,
            mcp_pb2.MCP_ELICITATION_ACTION_ACCEPT,
            json.dumps({"name": "Grace"}),
        ).get(timeout=WAIT_BOUND_S)
        assert answered
        assert future.result(WAIT_BOUND_S).text == "hello Grace"
    finally:
        ref.stop(timeout=WAIT_BOUND_S)


def test_child_spec() -> None:
    spec = mcp_child_spec([toolbox("x")], emit=lambda _m: None, approval_policy="never")
    assert spec.child_id == MCP_CHILD_ID == "mcp"
    assert spec.actor_class is McpConnection and spec.kind == "mcp"
    assert spec.kwargs["approval_policy"] == "never"
    get_host()  # the shared loop is what the actor runs on


def test_importing_the_actor_does_not_import_the_sdk() -> None:
    code = "import sys, actors.mcp_connection; print('mcp' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT, timeout=WAIT_BOUND_S
    )
    assert out.stdout.strip() == "False"
