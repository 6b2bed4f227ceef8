"""States, restart policy and the per-process record of one MCP connection.

Contract: ``RestartPolicy.delay(n)`` is the backoff before the next restart attempt after ``n`` consecutive
failed attempts (doubling from ``initial_backoff_s``, capped at ``max_backoff_s``, with +-``jitter``);
``Connection`` is one live SDK client: its ``wake`` event fires when the server went away or a stop was
requested, and ``finished`` once its task has left the client (process reaped, pipes closed).
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field
from typing import Any

import trio

from actors.mcp._results import ToolSpec
from actors.mcp._transport import HttpTransport, StdioTransport

__all__ = ["Connection", "ConnectionState", "RestartPolicy"]


class ConnectionState(enum.Enum):
    """Where a connection stands."""

    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"
    FAILED = "failed"


@dataclass(frozen=True)
class RestartPolicy:
    """How a crashed server is restarted: backoff doubling from ``initial_backoff_s`` up to the maximum, for
    ever unless ``max_consecutive_failures`` (or the server's ``max_restart_failures``) says when to stay down."""

    initial_backoff_s: float = 0.05
    max_backoff_s: float = 5.0
    jitter: float = 0.2
    max_consecutive_failures: int | None = None

    def delay(self, failures: int) -> float:
        """Backoff before the next attempt after ``failures`` consecutive failed attempts."""
        base = min(self.max_backoff_s, self.initial_backoff_s * (2**failures))
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)


@dataclass(eq=False)
class Connection:
    """One live SDK client and its transport."""

    transport: StdioTransport | HttpTransport | None = None
    client: Any = None
    tools: dict[str, ToolSpec] = field(default_factory=dict)
    wake: trio.Event = field(default_factory=trio.Event)
    finished: trio.Event = field(default_factory=trio.Event)
    started: bool = False

    def request_stop(self) -> None:
        """Ask the connection's task to leave the client (a deliberate stop, not a crash)."""
        if self.transport is not None:
            self.transport.stopping = True
        self.wake.set()

    @property
    def crashed(self) -> bool:
        """True when the server went away without a stop being requested."""
        return self.wake.is_set() and not (self.transport is not None and self.transport.stopping)

    def crash_reason(self) -> str:
        """How the server went away, e.g. "server process was killed by signal 9 (SIGKILL)"."""
        transport = self.transport
        if isinstance(transport, StdioTransport) and transport.exit_description:
            return f"server process {transport.exit_description}"
        return "server closed the connection"
