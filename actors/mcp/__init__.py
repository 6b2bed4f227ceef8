"""The MCP wing: one supervised connection actor per server (official ``mcp`` SDK), the session's tool namespace.
"""

from __future__ import annotations

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
from actors.mcp._tools import McpTools

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
    "has_exited",
    "mcp_child_specs",
    "parse_mcp_server",
    "parse_mcp_servers",
]
