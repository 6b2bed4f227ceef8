"""Start-up failure messages for MCP servers: what went wrong, and which setting fixes it.

Contract: every message names the server's configuration field or environment variable to change when one is
to blame: a timeout names ``startup_timeout_sec``; an authentication failure (HTTP 401/403) or a missing token
names the variable given by ``bearer_token_env_var``; a server that exits during start-up says how it ended
and quotes the end of its stderr.
"""

from __future__ import annotations

from typing import Any

from actors.core import leaf_exceptions
from actors.mcp._config import McpServerConfig
from actors.mcp._errors import McpStartupError
from actors.mcp._transport import HttpTransport, StdioTransport

__all__ = ["describe_startup_failure", "missing_token_error", "timeout_error"]

#: Characters of a server's stderr quoted in a start-up error.
STDERR_QUOTE_CHARS = 400


def timeout_error(config: McpServerConfig) -> str:
    """The message for a start that ran past ``startup_timeout_sec``."""
    return (
        f"timed out after {config.startup_timeout_sec:g} s while starting; if the server needs longer,"
        f" add or raise `startup_timeout_sec` in [mcp_servers.{config.name}]"
    )


def missing_token_error(var: str) -> str:
    """The message for a bearer-token variable that is unset or empty."""
    return (
        f"environment variable {var} (named by bearer_token_env_var) is not set or empty;"
        f" set {var} to the server's bearer token"
    )


def _auth_error(config: McpServerConfig, status: int) -> str:
    var = config.bearer_token_env_var
    if var:
        return f"authentication failed (HTTP {status}); set the environment variable {var} to a valid token"
    return (
        f"authentication failed (HTTP {status}); the server needs a token: set bearer_token_env_var in"
        f" [mcp_servers.{config.name}] to the name of an environment variable that holds it"
    )


def _quote_stderr(transport: StdioTransport) -> str:
    text = transport.stderr_text()
    if not text:
        return ""
    if len(text) > STDERR_QUOTE_CHARS:
        text = "..." + text[-STDERR_QUOTE_CHARS:]
    return f"; stderr: {text}"


def describe_startup_failure(config: McpServerConfig, transport: Any, exc: BaseException) -> str:
    """One line saying why a start failed, with the hint that fixes it when there is one."""
    leaves = list(leaf_exceptions(exc))
    for leaf in leaves:
        if isinstance(leaf, McpStartupError):
            return leaf.reason
    if isinstance(transport, HttpTransport) and transport.auth_status is not None:
        return _auth_error(config, transport.auth_status)
    for leaf in leaves:
        if isinstance(leaf, OSError) and (transport is None or getattr(transport, "pid", None) is None):
            what = config.command or config.url
            return f"could not start `{what}`: {leaf.strerror or leaf}"
    if isinstance(transport, StdioTransport) and transport.closed.is_set():
        ended = transport.exit_description or "closed its output"
        return f"server process {ended} during start-up{_quote_stderr(transport)}"
    leaf = leaves[0] if leaves else exc
    text = str(leaf) or type(leaf).__name__
    return f"start-up failed: {type(leaf).__name__}: {text}"
