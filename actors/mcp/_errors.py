"""Narrow errors of the MCP connection layer; each says when it is raised. All are ``SupervisorError``s."""

from __future__ import annotations

from actors.errors import ConfigError, NotFoundError, PreconditionFailed, SupervisorError, Unavailable

__all__ = [
    "McpCallFailed",
    "McpConfigError",
    "McpError",
    "McpRequiredServersFailed",
    "McpServerUnavailable",
    "McpStartupError",
    "McpToolChanged",
    "McpToolDisabled",
    "McpToolTimeout",
    "McpUnknownTool",
]


class McpError(SupervisorError):
    """Base class of the MCP connection errors."""


class McpConfigError(ConfigError, McpError):
    """An ``[mcp_servers.NAME]`` table is invalid; the message names the server and the field."""


class McpStartupError(McpError):
    """One server failed to start (spawn, handshake, tool listing or ``startup_timeout_sec``)."""

    def __init__(self, server: str, message: str) -> None:
        super().__init__(f"{server}: {message}")
        self.server = server
        self.reason = message


class McpRequiredServersFailed(McpError):
    """At least one server marked ``required`` failed to start; the message lists each with its error."""

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        detail = "; ".join(f"{name}: {error}" for name, error in failures)
        super().__init__(f"required MCP servers failed to initialize: {detail}")
        self.failures = failures


class McpServerUnavailable(McpError, Unavailable):
    """A call needs a server that is stopped, failed, or gave up restarting."""


class McpUnknownTool(McpError, NotFoundError):
    """No server offers a tool of that name."""


class McpToolDisabled(McpError, PreconditionFailed):
    """The tool exists but ``enabled_tools`` / ``disabled_tools`` exclude it."""


class McpToolChanged(McpError, PreconditionFailed):
    """The tool's description or schema changed since it was accepted; ``accept_tools`` must approve it."""


class McpToolTimeout(McpError, TimeoutError):
    """A call did not finish within the server's ``tool_timeout_sec`` (waiting for a restart included)."""


class McpCallFailed(McpError, Unavailable):
    """A call reached no result: the server answered with a protocol error or the connection broke."""
