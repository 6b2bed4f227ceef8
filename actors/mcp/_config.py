"""MCP server configuration, as in Codex's ``[mcp_servers.NAME]`` TOML tables, parsed from plain dicts.

Contract:
- ``parse_mcp_servers(tables)`` keeps the tables' order (it decides who wins a tool-name clash) and returns
  one ``McpServerConfig`` per table. A field of the wrong type or value raises ``McpConfigError`` naming the
  server and the field. An invalid server *name* does not raise: it is recorded in ``name_error`` and becomes
  that server's start failure, so one bad entry never takes the others down.
- A table has either ``command`` (stdio: ``args``, ``env``, ``cwd``) or ``url`` (streamable HTTP:
  ``bearer_token_env_var``, ``http_headers``), never both. Common fields: ``enabled``, ``required``,
  ``startup_timeout_sec`` (default 30), ``tool_timeout_sec`` (default 120), ``enabled_tools``,
  ``disabled_tools``, ``start`` (``"eager"`` or ``"on_first_use"``), ``max_restart_failures`` (ours: after that
  many failed restarts in a row a crashed server stays down until restarted by hand; unset = keep trying).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from actors.mcp._errors import McpConfigError

__all__ = [
    "DEFAULT_STARTUP_TIMEOUT_S",
    "DEFAULT_TOOL_TIMEOUT_S",
    "SERVER_NAME_PATTERN",
    "McpServerConfig",
    "parse_mcp_server",
    "parse_mcp_servers",
]

#: Codex's default for ``startup_timeout_sec``: spawn + handshake + first tool listing.
DEFAULT_STARTUP_TIMEOUT_S = 30.0
#: Codex's default for ``tool_timeout_sec``: one tool call.
DEFAULT_TOOL_TIMEOUT_S = 120.0
#: Server names allowed (they become part of tool names the model sees).
SERVER_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]+$")

StartMode = Literal["eager", "on_first_use"]
_START_MODES: tuple[StartMode, ...] = ("eager", "on_first_use")
_STDIO_FIELDS = frozenset({"command", "args", "env", "cwd"})
_HTTP_FIELDS = frozenset({"url", "bearer_token_env_var", "http_headers"})
_COMMON_FIELDS = frozenset(
    {
        "enabled",
        "required",
        "startup_timeout_sec",
        "tool_timeout_sec",
        "enabled_tools",
        "disabled_tools",
        "start",
        "max_restart_failures",
    }
)
#: Codex 0.169's fields that this runtime accepts and does not act on (approval modes, OAuth, env forwarding).
CODEX_IGNORED_FIELDS = frozenset(
    {"default_tools_approval_mode", "tools", "env_vars", "env_http_headers", "scopes", "oauth_resource"}
)
_KNOWN_FIELDS = _STDIO_FIELDS | _HTTP_FIELDS | _COMMON_FIELDS


@dataclass(frozen=True)
class McpServerConfig:
    """One MCP server's configuration (stdio when ``command`` is set, streamable HTTP when ``url`` is)."""

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    bearer_token_env_var: str | None = None
    http_headers: Mapping[str, str] = field(default_factory=dict)
    enabled: bool = True
    required: bool = False
    startup_timeout_sec: float = DEFAULT_STARTUP_TIMEOUT_S
    tool_timeout_sec: float = DEFAULT_TOOL_TIMEOUT_S
    enabled_tools: tuple[str, ...] | None = None
    disabled_tools: tuple[str, ...] = ()
    start: StartMode = "eager"
    #: Consecutive failed restarts after which a crashed server stays FAILED; None: keep trying with backoff.
    max_restart_failures: int | None = None
    #: Why ``name`` is not a valid server name, or "" when it is; a non-empty value fails the start.
    name_error: str = ""

    @property
    def transport(self) -> Literal["stdio", "streamable_http"]:
        """Which transport the server uses."""
        return "stdio" if self.command is not None else "streamable_http"

    def tool_enabled(self, tool: str) -> bool:
        """True unless ``enabled_tools`` leaves the tool out or ``disabled_tools`` names it."""
        if self.enabled_tools is not None and tool not in self.enabled_tools:
            return False
        return tool not in self.disabled_tools


def _server_name_error(name: str) -> str:
    if SERVER_NAME_PATTERN.fullmatch(name):
        return ""
    return f"invalid server name {name!r}: must match {SERVER_NAME_PATTERN.pattern}"


class _Fields:
    """Typed access to one table's fields; every error names the server and the field."""

    def __init__(self, server: str, table: Mapping[str, Any]) -> None:
        self.server = server
        self.table = table

    def error(self, key: str, expected: str) -> McpConfigError:
        value = self.table.get(key)
        return McpConfigError(
            f"mcp_servers.{self.server}.{key}: expected {expected}, got {type(value).__name__} {value!r}"
        )

    def string(self, key: str) -> str | None:
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise self.error(key, "a non-empty string")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "true or false")
        return value

    def seconds(self, key: str, default: float) -> float:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.error(key, "a positive number of seconds")
        return float(value)

    def count(self, key: str) -> int | None:
        value = self.table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.error(key, "a positive integer")
        return value

    def strings(self, key: str) -> tuple[str, ...] | None:
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
            raise self.error(key, "a list of strings")
        return tuple(value)

    def string_map(self, key: str) -> dict[str, str]:
        value = self.table.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise self.error(key, "a table of strings")
        return dict(value)


def parse_mcp_server(name: str, table: Mapping[str, Any]) -> McpServerConfig:
    """Parse one ``[mcp_servers.NAME]`` table; raises ``McpConfigError`` naming the bad field."""
    if not isinstance(table, Mapping):
        raise McpConfigError(f"mcp_servers.{name}: expected a table, got {type(table).__name__}")
    unknown = sorted(set(table) - _KNOWN_FIELDS - CODEX_IGNORED_FIELDS)
    if unknown:
        raise McpConfigError(
            f"mcp_servers.{name}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(_KNOWN_FIELDS))}"
        )
    fields = _Fields(name, table)
    command = fields.string("command")
    url = fields.string("url")
    if command is None and url is None:
        raise McpConfigError(f"mcp_servers.{name}: set either `command` (stdio) or `url` (streamable HTTP)")
    if command is not None and url is not None:
        raise McpConfigError(f"mcp_servers.{name}: `command` and `url` exclude each other; set only one")
    wrong_side = sorted(set(table) & (_HTTP_FIELDS if command is not None else _STDIO_FIELDS))
    if wrong_side:
        kind = "stdio (command)" if command is not None else "streamable HTTP (url)"
        raise McpConfigError(f"mcp_servers.{name}: field(s) {', '.join(wrong_side)} do not apply to a {kind} server")
    start = table.get("start", "eager")
    if start not in _START_MODES:
        raise fields.error("start", '"eager" or "on_first_use"')
    return McpServerConfig(
        name=name,
        command=command,
        args=fields.strings("args") or (),
        env=fields.string_map("env"),
        cwd=fields.string("cwd"),
        url=url,
        bearer_token_env_var=fields.string("bearer_token_env_var"),
        http_headers=fields.string_map("http_headers"),
        enabled=fields.boolean("enabled", True),
        required=fields.boolean("required", False),
        startup_timeout_sec=fields.seconds("startup_timeout_sec", DEFAULT_STARTUP_TIMEOUT_S),
        tool_timeout_sec=fields.seconds("tool_timeout_sec", DEFAULT_TOOL_TIMEOUT_S),
        enabled_tools=fields.strings("enabled_tools"),
        disabled_tools=fields.strings("disabled_tools") or (),
        start=start,
        max_restart_failures=fields.count("max_restart_failures"),
        name_error=_server_name_error(name),
    )


def parse_mcp_servers(tables: Mapping[str, Any]) -> list[McpServerConfig]:
    """Parse the whole ``mcp_servers`` table, keeping its order."""
    if not isinstance(tables, Mapping):
        raise McpConfigError(f"mcp_servers: expected a table of servers, got {type(tables).__name__}")
    return [parse_mcp_server(str(name), table) for name, table in tables.items()]
