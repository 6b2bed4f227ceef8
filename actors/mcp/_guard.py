"""Tool-level helpers of one MCP connection: paginated listing, the rug-pull guard, and the call span.

Contract:
- ``fetch_tools`` reads every page of ``tools/list`` (at most ``MAX_TOOL_PAGES``).
- ``ToolGuard`` accepts the first listing it sees as it is (trust on first use). A later listing in which an
  enabled tool's description or input schema differs from what was accepted, or that adds an enabled tool,
  flags those tools: ``McpToolsChanged`` is emitted once per distinct change and ``is_flagged`` is true until
  ``accept``.
- ``call_span`` opens an OpenTelemetry span (tracer ``actors.mcp``) that is a child of the caller's W3C
  traceparent; with no traceparent it opens none (no orphan roots). OpenTelemetry is imported lazily.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from google.protobuf.message import Message

from actors.mcp._results import ToolSpec, tool_spec_from_sdk
from protos.supervisor.v1 import mcp_pb2

__all__ = ["MAX_TOOL_PAGES", "TRACER_NAME", "ToolGuard", "call_span", "fetch_tools"]

#: Pages of ``tools/list`` read at most (a paginator that never ends cannot hang a start).
MAX_TOOL_PAGES = 100
#: Name of the OpenTelemetry tracer for tool calls.
TRACER_NAME = "actors.mcp"


async def fetch_tools(client: Any) -> dict[str, ToolSpec]:
    """Every tool the server lists, by name (an SDK ``Client``)."""
    tools: dict[str, ToolSpec] = {}
    cursor: str | None = None
    for _ in range(MAX_TOOL_PAGES):
        page = await client.list_tools(cursor=cursor)
        for tool in page.tools:
            tools[tool.name] = tool_spec_from_sdk(tool)
        cursor = page.next_cursor
        if not cursor:
            break
    return tools


class ToolGuard:
    """What a server's tools were accepted as, and which differ now."""

    def __init__(self, server: str, emit: Callable[[Message], None], enabled: Callable[[str], bool]) -> None:
        self._server = server
        self._emit = emit
        self._enabled = enabled
        self._accepted: dict[str, str] | None = None
        self._flagged: dict[str, str] = {}

    @property
    def pending(self) -> list[str]:
        """Tools refused until ``accept`` because they changed (or appeared) since accepted."""
        return sorted(self._flagged)

    def is_flagged(self, tool: str) -> bool:
        """True when the tool must not be called until accepted."""
        return tool in self._flagged

    def absorb(self, tools: dict[str, ToolSpec]) -> None:
        """Compare a fresh listing with what was accepted; flag and announce the differences."""
        if self._accepted is None:
            self._accepted = {name: spec.fingerprint for name, spec in tools.items()}
        changed = {
            name: spec
            for name, spec in tools.items()
            if self._accepted.get(name) != spec.fingerprint and self._enabled(name)
        }
        flagged = {name: spec.fingerprint for name, spec in changed.items()}
        if changed and flagged != self._flagged:
            self._emit(
                mcp_pb2.McpToolsChanged(
                    server=self._server,
                    tools=[spec.to_proto(self._server) for _, spec in sorted(changed.items())],
                )
            )
        self._flagged = flagged

    def accept(self, tools: dict[str, ToolSpec] | None) -> list[str]:
        """Accept ``tools`` (the current listing) as they are; returns the tools that were pending."""
        accepted = self.pending
        if tools is not None:
            self._accepted = {name: spec.fingerprint for name, spec in tools.items()}
        self._flagged = {}
        return accepted


@contextmanager
def call_span(tracer_provider: Any, server: str, tool: str, traceparent: str) -> Iterator[None]:
    """A CLIENT span for one tool call under ``traceparent``; nothing when it is empty."""
    if not traceparent:
        yield
        return
    from opentelemetry import propagate, trace

    provider = tracer_provider or trace.get_tracer_provider()
    tracer = provider.get_tracer(TRACER_NAME)
    parent = propagate.extract({"traceparent": traceparent})
    attributes = {"mcp.server": server, "mcp.tool": tool}
    with tracer.start_as_current_span(
        f"mcp.tools/call {tool}", context=parent, kind=trace.SpanKind.CLIENT, attributes=attributes
    ):
        yield
