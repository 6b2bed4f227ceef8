"""The MCP wing: one supervised connection actor per server (official ``mcp`` SDK), the session's tool namespace.

This face is lazy: a name loads its module on first use;
a session without MCP servers never loads the wing's ~15 modules (cold start).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors.mcp._actor import McpChildren, McpConnection, mcp_child_specs
    from actors.mcp._client import McpConnectionService
    from actors.mcp._config import McpServerConfig, parse_mcp_server, parse_mcp_servers
    from actors.mcp._errors import (
        McpCallFailed,
        McpConfigError,
        McpError,
        McpRequiredServersFailed,
        McpServerUnavailable,
        McpStartupError,
        McpToolChanged,
        McpToolDisabled,
        McpToolTimeout,
        McpUnknownTool,
    )
    from actors.mcp._manager import McpConnectionManager
    from actors.mcp._names import DELIMITER, TOOL_NAME_PREFIX
    from actors.mcp._process import has_exited
    from actors.mcp._router import McpRouter
    from actors.mcp._spawn import discard_prespawned, prespawn, prespawned_pids
    from actors.mcp._tools import McpTools

_WHERE = {
    "DELIMITER": "actors.mcp._names",
    "McpCallFailed": "actors.mcp._errors",
    "McpChildren": "actors.mcp._actor",
    "McpConfigError": "actors.mcp._errors",
    "McpConnection": "actors.mcp._actor",
    "McpConnectionManager": "actors.mcp._manager",
    "McpConnectionService": "actors.mcp._client",
    "McpError": "actors.mcp._errors",
    "McpRequiredServersFailed": "actors.mcp._errors",
    "McpRouter": "actors.mcp._router",
    "McpServerConfig": "actors.mcp._config",
    "McpServerUnavailable": "actors.mcp._errors",
    "McpStartupError": "actors.mcp._errors",
    "McpToolChanged": "actors.mcp._errors",
    "McpToolDisabled": "actors.mcp._errors",
    "McpToolTimeout": "actors.mcp._errors",
    "McpTools": "actors.mcp._tools",
    "McpUnknownTool": "actors.mcp._errors",
    "TOOL_NAME_PREFIX": "actors.mcp._names",
    "discard_prespawned": "actors.mcp._spawn",
    "has_exited": "actors.mcp._process",
    "mcp_child_specs": "actors.mcp._actor",
    "parse_mcp_server": "actors.mcp._config",
    "parse_mcp_servers": "actors.mcp._config",
    "prespawn": "actors.mcp._spawn",
    "prespawned_pids": "actors.mcp._spawn",
}

__all__ = [
    "DELIMITER",
    "TOOL_NAME_PREFIX",
    "McpCallFailed",
    "McpChildren",
    "McpConfigError",
    "McpConnection",
    "McpConnectionManager",
    "McpConnectionService",
    "McpError",
    "McpRequiredServersFailed",
    "McpRouter",
    "McpServerConfig",
    "McpServerUnavailable",
    "McpStartupError",
    "McpToolChanged",
    "McpToolDisabled",
    "McpToolTimeout",
    "McpTools",
    "McpUnknownTool",
    "discard_prespawned",
    "has_exited",
    "mcp_child_specs",
    "parse_mcp_server",
    "parse_mcp_servers",
    "prespawn",
    "prespawned_pids",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
