"""Streamable-HTTP MCP servers: bearer token from an environment variable, and what its absence looks like."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import pytest
import trio

from actors.mcp._client import McpConnectionService
from actors.mcp._config import parse_mcp_server
from actors.mcp._errors import McpRequiredServersFailed, McpStartupError
from actors.mcp._manager import McpConnectionManager
from tests.mcp_servers.fixtures import HERE, Events

TOKEN = "s3cret-token"
TOKEN_VAR = "TEST_MCP_HTTP_TOKEN"
START_BOUND_S = 20.0


@pytest.fixture
async def http_server_url() -> AsyncIterator[str]:
    """Run tests/mcp_servers/http_server.py on 127.0.0.1 and yield its /mcp URL; kill it afterwards."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(HERE / "http_server.py"), TOKEN], stdout=-1, start_new_session=True
    )
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(START_BOUND_S):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(64)
                assert chunk, "the HTTP test server exited before printing its port"
                line += chunk
        yield f"http://127.0.0.1:{int(line)}/mcp"
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


async def test_bearer_token_from_env_var(http_server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_VAR, TOKEN)
    config = parse_mcp_server("remote", {"url": http_server_url, "bearer_token_env_var": TOKEN_VAR})
    async with McpConnectionService(config, Events()) as service:
        with trio.fail_after(START_BOUND_S):
            await service.start()
        assert {tool.name for tool in service.tools()} == {"add", "echo"}
        assert (await service.call_tool("add", {"a": 20, "b": 22})).text == "42"
        assert service.pid is None  # no process of ours behind an HTTP server


async def test_wrong_token_names_the_variable(http_server_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_VAR, "wrong")
    config = parse_mcp_server("remote", {"url": http_server_url, "bearer_token_env_var": TOKEN_VAR})
    async with McpConnectionService(config, Events()) as service:
        with trio.fail_after(START_BOUND_S), pytest.raises(McpStartupError) as info:
            await service.start()
    assert info.value.reason == (
        f"authentication failed (HTTP 401); set the environment variable {TOKEN_VAR} to a valid token"
    )


async def test_missing_token_variable_fails_that_server_only(
    http_server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_VAR, raising=False)
    configs = [
        parse_mcp_server("remote", {"url": http_server_url, "bearer_token_env_var": TOKEN_VAR, "required": True}),
        parse_mcp_server("open", {"url": http_server_url}),  # no token at all: the server answers 401
    ]
    async with McpConnectionManager(configs, Events()) as manager:
        with trio.fail_after(START_BOUND_S), pytest.raises(McpRequiredServersFailed) as info:
            await manager.start_all()
    assert str(info.value) == (
        f"required MCP servers failed to initialize: remote: environment variable {TOKEN_VAR} (named by"
        f" bearer_token_env_var) is not set or empty; set {TOKEN_VAR} to the server's bearer token"
    )
    monkeypatch.setenv(TOKEN_VAR, "")
    async with McpConnectionService(configs[0], Events()) as service:
        with pytest.raises(McpStartupError, match="is not set or empty"):
            await service.start()
    async with McpConnectionService(configs[1], Events()) as service:
        with pytest.raises(McpStartupError, match=r"authentication failed \(HTTP 401\); the server needs a token"):
            await service.start()
