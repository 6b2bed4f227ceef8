"""Servers spawned at process start (``actors.mcp._spawn``) and taken over by their connections; the lean
stdio client against a raw JSON-RPC server."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import trio

from actors.mcp import _spawn
from actors.mcp._client import ConnectionState, McpConnectionService
from actors.mcp._config import parse_mcp_server
from actors.mcp._errors import McpCallFailed
from actors.mcp._process import has_exited
from actors.mcp._spawn import discard_prespawned, prespawn, take_prespawned
from tests.mcp_servers.fixtures import Events, toolbox

START_BOUND_S = 20.0

#: A server without the SDK that records every message it gets and answers a few methods.
RAW_SERVER = r'''
import json, sys
log = open(sys.argv[1], "a")
for line in sys.stdin:
    msg = json.loads(line)
    log.write(line); log.flush()
    if "id" not in msg:
        continue
    method = msg.get("method")
    if method == "initialize":
        result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                  "serverInfo": {"name": "raw", "version": "1"}}
    elif method == "tools/list":
        if not msg.get("params", {}).get("cursor"):
            result = {"tools": [{"name": "one", "inputSchema": {"type": "object"}}], "nextCursor": "p2"}
        else:
            result = {"tools": [{"name": "two", "description": "second page", "inputSchema": {"type": "object"}}]}
    elif method == "tools/call" and msg["params"]["name"] == "one":
        print("not json at all", flush=True)  # skipped by the client
        result = {"content": [{"type": "text", "text": "first"}, {"type": "image", "mimeType": "image/png",
                                                                  "data": "AAAA"}],
                  "structuredContent": {"n": 1}}
    else:
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "error": {"code": -32602, "message": "no such tool"}}),
              flush=True)
        continue
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
'''


def _raw_config(tmp_path: Path, **fields: object) -> tuple[object, Path]:
    script = tmp_path / "raw_server.py"
    script.write_text(RAW_SERVER)
    log = tmp_path / "messages.jsonl"
    return parse_mcp_server("raw", {"command": sys.executable, "args": ["-I", str(script), str(log)],
                                    **fields}), log


async def test_a_prespawned_server_is_taken_over_not_spawned_again() -> None:
    config = toolbox()
    assert prespawn([config]) == 1
    try:
        async with McpConnectionService(config, Events()) as service:
            with trio.fail_after(START_BOUND_S):
                await service.start()
            transport = service._conn.transport  # type: ignore[union-attr]
            assert transport.prespawned  # type: ignore[union-attr]
            pid = service.pid
            assert pid is not None and take_prespawned(config) is None  # taken once
            assert (await service.call_tool("add", {"a": 1, "b": 2})).text == "3"
        assert has_exited(pid)
    finally:
        discard_prespawned()


async def test_a_restart_spawns_afresh() -> None:
    config = toolbox()
    prespawn([config])
    try:
        async with McpConnectionService(config, Events()) as service:
            with trio.fail_after(START_BOUND_S):
                await service.start()
            first = service.pid
            await service.restart()
            assert service.state is ConnectionState.READY
            assert service.pid != first
            assert not service._conn.transport.prespawned  # type: ignore[union-attr]
    finally:
        discard_prespawned()


def _waiting_pids() -> list[int]:
    return [server.pid for queue in _spawn._waiting.values() for server in queue]


def test_only_matching_eager_stdio_servers_are_spawned_and_leftovers_are_killed() -> None:
    other_env = toolbox(env={"TOOLBOX_GREETING": "x"})
    lazy = toolbox("lazy", start="on_first_use")
    http = parse_mcp_server("web", {"url": "http://127.0.0.1:9/mcp"})
    disabled = toolbox("off", enabled=False)
    try:
        assert prespawn([other_env, lazy, http, disabled]) == 1
        assert take_prespawned(toolbox()) is None  # a different env is a different server
        pids = _waiting_pids()
        assert len(pids) == 1 and not has_exited(pids[0])
    finally:
        discard_prespawned()
    assert take_prespawned(other_env) is None
    with pytest.raises(ChildProcessError):  # killed and reaped
        os.waitpid(pids[0], os.WNOHANG)


def test_a_command_that_cannot_start_is_left_to_the_connection() -> None:
    missing = parse_mcp_server("nope", {"command": "/nonexistent/mcp-server-binary"})
    assert prespawn([missing]) == 0


async def test_lean_client_handshake_pages_results_and_errors(tmp_path: Path) -> None:
    config, log = _raw_config(tmp_path)
    async with McpConnectionService(config, Events()) as service:  # type: ignore[arg-type]
        with trio.fail_after(START_BOUND_S):
            await service.start()
        assert [tool.name for tool in service.tools()] == ["one", "two"]  # both pages
        result = await service.call_tool("one", {"x": 1})
        assert result.text == "first\n[image: image/png, 4 base64 characters]"
        assert json.loads(result.structured_content_json) == {"n": 1}
        with pytest.raises(McpCallFailed, match="no such tool"):
            await service.call_tool("two")
    sent = [json.loads(line) for line in log.read_text().splitlines()]
    assert [m.get("method") for m in sent[:2]] == ["initialize", "notifications/initialized"]
    assert sent[0]["params"]["protocolVersion"] == "2025-06-18"
    assert sent[0]["params"]["clientInfo"]["name"] == "session-supervisor"
    assert sent[3]["params"] == {"cursor": "p2"}
