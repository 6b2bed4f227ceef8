"""Helpers for the MCP tests: server configurations for the bundled test servers, and an event recorder."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from actors.mcp import McpServerConfig, parse_mcp_server

HERE = Path(__file__).resolve().parent
TOOLBOX = str(HERE / "toolbox.py")
EXAMPLE = str(HERE.parent.parent / "examples" / "mcp_example_server.py")


def toolbox(name: str = "toolbox", *flags: str, **fields: Any) -> McpServerConfig:
    """A stdio config running tests/mcp_servers/toolbox.py with the given flags and config fields."""
    table: dict[str, Any] = {"command": sys.executable, "args": [TOOLBOX, *flags]}
    table.update(fields)
    return parse_mcp_server(name, table)


def time_server(name: str = "time", **fields: Any) -> McpServerConfig:
    """The PyPI server mcp-server-time, run from this virtualenv."""
    table: dict[str, Any] = {
        "command": sys.executable,
        "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"],
    }
    table.update(fields)
    return parse_mcp_server(name, table)


class Events:
    """A thread-safe event sink that records every message it is given."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[Message] = []

    def __call__(self, message: Message) -> None:
        with self._lock:
            self.items.append(message)

    def of(self, kind: type[Message]) -> list[Any]:
        """The recorded events of one message type, in order."""
        with self._lock:
            return [item for item in self.items if isinstance(item, kind)]
