"""All MCP connections of one session: parallel start-up, one tool namespace, routing by qualified name.

Contract:
- ``McpConnectionManager`` is an async context manager over one ``McpConnectionService`` per enabled server
  (configuration order kept); leaving it stops every server.
- ``start_all()`` starts every ``eager`` server in parallel (each bounded by its own ``startup_timeout_sec``),
  emits ``McpStartupComplete{ready, failed, cancelled}``, then raises ``McpRequiredServersFailed`` if a
  ``required`` server failed (message ``required MCP servers failed to initialize: NAME: ERROR; ...``);
  otherwise it returns a ``StartupReport`` whose ``warnings`` hold one line per non-required failure.
- Tool names (``mcp__SERVER__TOOL``) are assigned in configuration order and never move once given (see
  ``_mcp_names``). ``call_tool`` routes a qualified name to its server, starting an ``on_first_use`` server
  whose name prefix matches; disabled tools fail with ``tool 'x' is disabled``.
- ``resolve_elicitation`` may be called from any thread; everything else runs on the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import trio
from google.protobuf.message import Message

from actors._mcp_client import ConnectionState, McpConnectionService, RestartPolicy
from actors._mcp_config import McpServerConfig
from actors._mcp_elicitation import DEFAULT_ELICITATION_TIMEOUT_S
from actors._mcp_errors import McpRequiredServersFailed, McpServerUnavailable, McpStartupError, McpUnknownTool
from actors._mcp_names import DELIMITER, TOOL_NAME_PREFIX, ToolRef, assign_tool_names, sanitize
from protos.supervisor.v1 import mcp_pb2

__all__ = ["McpConnectionManager", "StartupReport"]


@dataclass
class StartupReport:
    """How the eager start of all servers went."""

    ready: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    #: One line per non-required server that failed, for the session's Warning event.
    warnings: list[str] = field(default_factory=list)


class McpConnectionManager:
    """The MCP connections of one session."""

    def __init__(
        self,
        configs: Sequence[McpServerConfig],
        emit: Callable[[Message], None],
        *,
        approval_policy: str = "on-request",
        elicitation_timeout_s: float = DEFAULT_ELICITATION_TIMEOUT_S,
        restart_policy: RestartPolicy | None = None,
        tracer_provider: Any = None,
    ) -> None:
        self._emit = emit
        self.services: dict[str, McpConnectionService] = {}
        for config in configs:
            if config.enabled and config.name not in self.services:
                self.services[config.name] = McpConnectionService(
                    config,
                    emit,
                    approval_policy=approval_policy,
                    elicitation_timeout_s=elicitation_timeout_s,
                    restart_policy=restart_policy,
                    tracer_provider=tracer_provider,
                )
        self._names: dict[str, ToolRef] = {}
        self._stack: AsyncExitStack | None = None

    async def __aenter__(self) -> McpConnectionManager:
        async with AsyncExitStack() as stack:
            for service in self.services.values():
                await stack.enter_async_context(service)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._stack is not None
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:  # stop in parallel; each stop is bounded
                for service in self.services.values():
                    nursery.start_soon(service.stop)
        return await self._stack.__aexit__(exc_type, exc, tb)

    def service(self, server: str) -> McpConnectionService:
        """The connection of one server; raises ``McpServerUnavailable`` for an unknown or disabled one."""
        try:
            return self.services[server]
        except KeyError:
            raise McpServerUnavailable(f"no enabled MCP server named '{server}'") from None

    # --- start-up -------------------------------------------------------------------------------------
    async def start_all(self) -> StartupReport:
        """Start every eager server in parallel; see the module docstring for events, errors and warnings."""
        outcome: dict[str, str | None] = {}

        async def start_one(service: McpConnectionService) -> None:
            try:
                await service.start()
                outcome[service.name] = None
            except McpStartupError as exc:
                outcome[service.name] = exc.reason

        eager = [service for service in self.services.values() if service.config.start == "eager"]
        async with trio.open_nursery() as nursery:
            for service in eager:
                nursery.start_soon(start_one, service)
        report = StartupReport()
        required_failures: list[tuple[str, str]] = []
        for service in eager:
            error = outcome.get(service.name)
            if service.state is ConnectionState.READY:
                report.ready.append(service.name)
            elif error is None or service.state is ConnectionState.STOPPED:
                report.cancelled.append(service.name)
            else:
                report.failed.append((service.name, error))
                if service.config.required:
                    required_failures.append((service.name, error))
                else:
                    report.warnings.append(f"MCP client for `{service.name}` failed to start: {error}")
        self._assign_names()
        self._emit(
            mcp_pb2.McpStartupComplete(
                ready=report.ready,
                failed=[mcp_pb2.McpStartupFailure(server=name, error=error) for name, error in report.failed],
                cancelled=report.cancelled,
            )
        )
        if required_failures:
            raise McpRequiredServersFailed(required_failures)
        return report

    async def start_server(self, server: str) -> None:
        """Start one server at runtime (no-op when ready); raises ``McpStartupError``."""
        await self.service(server).start()
        self._assign_names()

    async def stop_server(self, server: str) -> None:
        """Stop one server at runtime; its process group is killed."""
        await self.service(server).stop()

    async def restart_server(self, server: str) -> None:
        """Stop one server, then start it again."""
        await self.service(server).restart()
        self._assign_names()

    # --- tools ----------------------------------------------------------------------------------------
    def _assign_names(self) -> dict[str, ToolRef]:
        listing = [
            (service.name, [spec.name for spec in service.tools(include_disabled=True)])
            for service in self.services.values()
        ]
        self._names = assign_tool_names(listing, self._names)
        return self._names

    def list_tools(self) -> list[mcp_pb2.McpTool]:
        """Every enabled tool of every ready server, with its qualified name, in name order."""
        names = self._assign_names()
        by_ref = {ref: name for name, ref in names.items()}
        tools: list[mcp_pb2.McpTool] = []
        for service in self.services.values():
            for spec in service.tools():
                tools.append(spec.to_proto(service.name, by_ref[ToolRef(service.name, spec.name)]))
        return sorted(tools, key=lambda tool: tool.name)

    async def refresh_tools(self) -> list[mcp_pb2.McpTool]:
        """List every ready server's tools again (flagging changes), then return ``list_tools()``."""

        async def refresh(service: McpConnectionService) -> None:
            if service.state is ConnectionState.READY:
                await service.list_tools(refresh=True)

        async with trio.open_nursery() as nursery:
            for service in self.services.values():
                nursery.start_soon(refresh, service)
        return self.list_tools()

    def resolve_tool(self, qualified_name: str) -> ToolRef | None:
        """The (server, tool) behind a qualified name, or None when no running server offers it."""
        return self._assign_names().get(qualified_name)

    async def call_tool(
        self, qualified_name: str, arguments: dict[str, Any] | None = None, *, traceparent: str = ""
    ) -> mcp_pb2.McpToolCallResult:
        """Call a tool by its qualified name (``mcp__SERVER__TOOL``)."""
        ref = self.resolve_tool(qualified_name)
        if ref is None:
            lazy = self._lazy_server_for(qualified_name)
            if lazy is not None:
                await self.start_server(lazy.name)
                ref = self.resolve_tool(qualified_name)
        if ref is None:
            raise McpUnknownTool(f"unknown MCP tool '{qualified_name}'")
        return await self.services[ref.server].call_tool(ref.tool, arguments, traceparent=traceparent)

    async def call_server_tool(
        self, server: str, tool: str, arguments: dict[str, Any] | None = None, *, traceparent: str = ""
    ) -> mcp_pb2.McpToolCallResult:
        """Call a tool by server and tool name."""
        result = await self.service(server).call_tool(tool, arguments, traceparent=traceparent)
        self._assign_names()
        return result

    def _lazy_server_for(self, qualified_name: str) -> McpConnectionService | None:
        for service in self.services.values():
            prefix = f"{TOOL_NAME_PREFIX}{DELIMITER}{sanitize(service.name)}{DELIMITER}"
            if (
                service.config.start == "on_first_use"
                and service.state is ConnectionState.STOPPED
                and qualified_name.startswith(prefix)
            ):
                return service
        return None

    def accept_tools(self, server: str) -> list[str]:
        """Accept a server's current tool list after ``McpToolsChanged``; returns the tools now callable."""
        return self.service(server).accept_tools()

    def resolve_elicitation(self, request_id: str, action: str | int, content_json: str = "") -> bool:
        """Answer a pending elicitation of any server (any thread); False when none has that id pending."""
        for service in list(self.services.values()):
            if request_id in service.elicitation.pending_ids:
                return service.resolve_elicitation(request_id, action, content_json)
        return False
