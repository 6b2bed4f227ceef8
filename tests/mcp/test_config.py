"""MCP server configuration: Codex's [mcp_servers.NAME] tables, parsed with errors that name the field."""

from __future__ import annotations

import pytest

from actors.mcp._config import (
    DEFAULT_STARTUP_TIMEOUT_S,
    DEFAULT_TOOL_TIMEOUT_S,
    parse_mcp_server,
    parse_mcp_servers,
)
from actors.mcp._errors import McpConfigError


def test_stdio_table_with_defaults() -> None:
    config = parse_mcp_server("docs", {"command": "npx", "args": ["-y", "docs-server"], "env": {"A": "1"}})
    assert config.transport == "stdio"
    assert config.command == "npx"
    assert config.args == ("-y", "docs-server")
    assert dict(config.env) == {"A": "1"}
    assert config.startup_timeout_sec == DEFAULT_STARTUP_TIMEOUT_S == 30.0
    assert config.tool_timeout_sec == DEFAULT_TOOL_TIMEOUT_S == 120.0
    assert config.enabled and not config.required
    assert config.start == "eager"
    assert config.name_error == ""


def test_http_table() -> None:
    config = parse_mcp_server(
        "remote",
        {
            "url": "http://127.0.0.1:9/mcp",
            "bearer_token_env_var": "REMOTE_TOKEN",
            "required": True,
            "startup_timeout_sec": 5,
            "tool_timeout_sec": 1.5,
            "start": "on_first_use",
        },
    )
    assert config.transport == "streamable_http"
    assert config.bearer_token_env_var == "REMOTE_TOKEN"
    assert config.required
    assert config.startup_timeout_sec == 5.0
    assert config.tool_timeout_sec == 1.5
    assert config.start == "on_first_use"


def test_tool_filters() -> None:
    config = parse_mcp_server("s", {"command": "x", "enabled_tools": ["a", "b"], "disabled_tools": ["b"]})
    assert config.tool_enabled("a")
    assert not config.tool_enabled("b")  # listed in both: disabled wins
    assert not config.tool_enabled("c")  # not in the allow-list
    open_config = parse_mcp_server("s", {"command": "x", "disabled_tools": ["c"]})
    assert open_config.tool_enabled("anything") and not open_config.tool_enabled("c")


@pytest.mark.parametrize(
    ("table", "field"),
    [
        ({"command": "x", "args": "not-a-list"}, "mcp_servers.s.args"),
        ({"command": "x", "env": {"A": 1}}, "mcp_servers.s.env"),
        ({"command": "x", "startup_timeout_sec": 0}, "mcp_servers.s.startup_timeout_sec"),
        ({"command": "x", "tool_timeout_sec": "10"}, "mcp_servers.s.tool_timeout_sec"),
        ({"command": "x", "required": "yes"}, "mcp_servers.s.required"),
        ({"command": "x", "start": "lazy"}, "mcp_servers.s.start"),
        ({"command": "x", "enabled_tools": [1]}, "mcp_servers.s.enabled_tools"),
        ({"command": ""}, "mcp_servers.s.command"),
        ({"command": "x", "colour": "red"}, "unknown field(s) colour"),
        ({}, "set either `command`"),
        ({"command": "x", "url": "http://127.0.0.1:1/"}, "exclude each other"),
        ({"command": "x", "bearer_token_env_var": "T"}, "bearer_token_env_var do not apply"),
        ({"url": "http://127.0.0.1:1/", "args": ["a"]}, "args do not apply"),
    ],
)
def test_errors_name_the_field(table: dict[str, object], field: str) -> None:
    with pytest.raises(McpConfigError) as info:
        parse_mcp_server("s", table)
    assert field in str(info.value)


def test_invalid_name_is_recorded_not_raised() -> None:
    configs = parse_mcp_servers(
        {"good": {"command": "x"}, "bad name!": {"command": "y"}, "also-ok_1": {"command": "z"}}
    )
    assert [c.name for c in configs] == ["good", "bad name!", "also-ok_1"]  # order kept
    assert configs[0].name_error == "" and configs[2].name_error == ""
    assert "invalid server name 'bad name!'" in configs[1].name_error
    assert "^[a-zA-Z0-9_-]+$" in configs[1].name_error


def test_whole_table_must_be_a_table() -> None:
    with pytest.raises(McpConfigError, match="mcp_servers: expected a table"):
        parse_mcp_servers(["not", "a", "table"])  # type: ignore[arg-type]
    with pytest.raises(McpConfigError, match=r"mcp_servers\.s: expected a table"):
        parse_mcp_servers({"s": "command"})
