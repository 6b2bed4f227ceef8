"""One tool namespace over several MCP server connections: names, listing, routing, runtime control.

Contract:
- ``McpRouter`` routes over ``services`` (one ``McpConnectionService`` per server name). Subclasses decide where
  the services come from: ``McpConnectionManager`` owns them, ``McpTools`` has them attached by per-server
  actors. ``order`` is the configuration order; it decides which server's tool keeps a clashing name.
- Tool names (``mcp__SERVER__TOOL``) are assigned in configuration order and never move once given (see
  ``_mcp_names``). ``call_tool`` routes a qualified name to its server, starting an ``on_first_use`` server
  whose name prefix matches, or waiting (up to its ``startup_timeout_sec``) for a matching server that is still
  starting; disabled tools fail with ``tool 'x' is disabled``.
- ``startup_outcome`` / ``finish_startup`` classify the eager start of each server and emit the one
  ``McpStartupComplete{ready, failed, cancelled}``; required failures become ``McpRequiredServersFailed``
  (``required MCP servers failed to initialize: NAME: ERROR; ...``), the others warnings.
- ``resolve_elicitation`` may be called from any thread; everything else runs on the trio loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import trio
from google.protobuf.message import Message

from actors.mcp._client import ConnectionState, McpConnectionService
from actors.mcp._config import McpServerConfig
from actors.mcp._errors import McpError, McpRequiredServersFailed, McpServerUnavailable, McpUnknownTool
from actors.mcp._names import DELIMITER, TOOL_NAME_PREFIX, ToolRef, assign_tool_names, sanitize
from protos.supervisor.v1 import mcp_pb2

__all__ = ["McpRouter", "ServerStart", "StartupReport", "enabled_configs", "finish_startup", "startup_outcome"]

_STATUS_BY_STATE = {
    ConnectionState.STARTING: mcp_pb2.MCP_STARTUP_STATUS_STARTING,
    ConnectionState.RESTARTING: mcp_pb2.MCP_STARTUP_STATUS_STARTING,
    ConnectionState.READY: mcp_pb2.MCP_STARTUP_STATUS_READY,
    ConnectionState.FAILED: mcp_pb2.MCP_STARTUP_STATUS_FAILED,
    ConnectionState.STOPPED: mcp_pb2.MCP_STARTUP_STATUS_UNSPECIFIED,
}


@dataclass
class StartupReport:
    """How the eager start of all servers went."""

    ready: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    #: One line per non-required server that failed, for the session's Warning event.
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ServerStart:
    """How the eager start of one server went: ``outcome`` is "ready", "failed" or "cancelled"."""

    server: str
    outcome: str
    error: str = ""
    required: bool = False


def startup_outcome(service: McpConnectionService, error: str | None) -> ServerStart:
    """Classify one server after its start returned (``error`` is the ``McpStartupError`` reason, if any)."""
    required = service.config.required
    if service.state is ConnectionState.READY:
        return ServerStart(service.name, "ready", required=required)
    if error is None or service.state is ConnectionState.STOPPED:
        return ServerStart(service.name, "cancelled", required=required)
    return ServerStart(service.name, "failed", error, required=required)


def finish_startup(starts: Sequence[ServerStart], emit: Callable[[Message], None]) -> StartupReport:
    """Emit ``McpStartupComplete`` for ``starts`` (configuration order); raise if a required server failed."""
    report = StartupReport()
    required_failures: list[tuple[str, str]] = []
    for start in starts:
        if start.outcome == "ready":
            report.ready.append(start.server)
        elif start.outcome == "cancelled":
            report.cancelled.append(start.server)
        else:
            report.failed.append((start.server, start.error))
            if start.required:
                required_failures.append((start.server, start.error))
            else:
                report.warnings.append(f"MCP client for `{start.server}` failed to start: {start.error}")
    emit(
        mcp_pb2.McpStartupComplete(
            ready=report.ready,
            failed=[mcp_pb2.McpStartupFailure(server=name, error=error) for name, error in report.failed],
            cancelled=report.cancelled,
        )
    )
    if required_failures:
        raise McpRequiredServersFailed(required_failures)
    return report


class McpRouter:
    """Routing and naming over the services of several servers (see the module docstring)."""

    def __init__(self, order: Sequence[str]) -> None:
        #: Server names in configuration order.
        self.order = list(order)
        #: The services that can be reached now, by server name.
        self.services: dict[str, McpConnectionService] = {}
        self._names: dict[str, ToolRef] = {}

    def _ordered(self) -> list[McpConnectionService]:
        services = self.services
        return [services[name] for name in self.order if name in services]

    def service(self, server: str) -> McpConnectionService:
        """The connection of one server; raises ``McpServerUnavailable`` for an unknown or disabled one."""
        try:
            return self.services[server]
        except KeyError:
            raise McpServerUnavailable(f"no enabled MCP server named '{server}'") from None

    async def reach(self, server: str) -> McpConnectionService:
        """The connection of one server, for a call that may wait (subclasses wait for a restarting one)."""
        return self.service(server)

    # --- runtime control ------------------------------------------------------------------------------
    async def start_server(self, server: str) -> None:
        """Start one server at runtime (no-op when ready); raises ``McpStartupError``."""
        await (await self.reach(server)).start()
        self._assign_names()

    async def stop_server(self, server: str) -> None:
        """Stop one server at runtime; its process group is killed."""
        await (await self.reach(server)).stop()

    async def restart_server(self, server: str) -> None:
        """Stop one server, then start it again."""
        await (await self.reach(server)).restart()
        self._assign_names()

    async def control(
        self, server: str, action: mcp_pb2.McpServerAction.ValueType
    ) -> mcp_pb2.McpServerControlResponse:
        """Start, stop or restart one server; the response carries its status afterwards (or the error)."""
        error = ""
        try:
            if action == mcp_pb2.MCP_SERVER_ACTION_START:
                await self.start_server(server)
            elif action == mcp_pb2.MCP_SERVER_ACTION_STOP:
                await self.stop_server(server)
            elif action == mcp_pb2.MCP_SERVER_ACTION_RESTART:
                await self.restart_server(server)
            else:
                raise McpError(f"unknown MCP server action {action}")
        except McpError as exc:
            error = str(exc)
        service = self.services.get(server)
        status = _STATUS_BY_STATE[service.state] if service is not None else 0
        return mcp_pb2.McpServerControlResponse(status=status, error=error)  # type: ignore[arg-type]

    # --- tools ----------------------------------------------------------------------------------------
    def _assign_names(self) -> dict[str, ToolRef]:
        listing = [
            (service.name, [spec.name for spec in service.tools(include_disabled=True)])
            for service in self._ordered()
        ]
        self._names = assign_tool_names(listing, self._names)
        return self._names

    def list_tools(self) -> list[mcp_pb2.McpTool]:
        """Every enabled tool of every ready server, with its qualified name, in name order."""
        names = self._assign_names()
        by_ref = {ref: name for name, ref in names.items()}
        tools: list[mcp_pb2.McpTool] = []
        for service in self._ordered():
            for spec in service.tools():
                tools.append(spec.to_proto(service.name, by_ref[ToolRef(service.name, spec.name)]))
        return sorted(tools, key=lambda tool: tool.name)

    async def refresh_tools(self) -> list[mcp_pb2.McpTool]:
        """List every ready server's tools again (flagging changes), then return ``list_tools()``."""

        async def refresh(service: McpConnectionService) -> None:
            if service.state is ConnectionState.READY:
                await service.list_tools(refresh=True)

        async with trio.open_nursery() as nursery:
            for service in self._ordered():
                nursery.start_soon(refresh, service)
        return self.list_tools()

    def resolve_tool(self, qualified_name: str) -> ToolRef | None:
        """The (server, tool) behind a qualified name, or None when no server has offered it."""
        return self._assign_names().get(qualified_name)

    async def call_tool(
        self, qualified_name: str, arguments: dict[str, Any] | None = None, *, traceparent: str = ""
    ) -> mcp_pb2.McpToolCallResult:
        """Call a tool by its qualified name (``mcp__SERVER__TOOL``)."""
        ref = self.resolve_tool(qualified_name)
        if ref is None:  # maybe a tool of a server that has not listed its tools yet
            pending = await self._server_awaiting(qualified_name)
            if pending is not None:
                if pending.config.start == "on_first_use" and pending.state is ConnectionState.STOPPED:
                    await self.start_server(pending.name)
                else:
                    with trio.move_on_after(pending.config.startup_timeout_sec):
                        await pending.settled()
                ref = self.resolve_tool(qualified_name)
        if ref is None:
            raise McpUnknownTool(f"unknown MCP tool '{qualified_name}'")
        service = await self.reach(ref.server)
        return await service.call_tool(ref.tool, arguments, traceparent=traceparent)

    async def call_server_tool(
        self, server: str, tool: str, arguments: dict[str, Any] | None = None, *, traceparent: str = ""
    ) -> mcp_pb2.McpToolCallResult:
        """Call a tool by server and tool name."""
        result = await (await self.reach(server)).call_tool(tool, arguments, traceparent=traceparent)
        self._assign_names()
        return result

    def _server_for(self, qualified_name: str) -> McpConnectionService | None:
        """The first server (configuration order) whose qualified-name prefix ``qualified_name`` carries."""
        for service in self._ordered():
            prefix = f"{TOOL_NAME_PREFIX}{DELIMITER}{sanitize(service.name)}{DELIMITER}"
            if qualified_name.startswith(prefix):
                return service
        return None

    async def _server_awaiting(self, qualified_name: str) -> McpConnectionService | None:
        """``_server_for``; a subclass may first wait for the server to become reachable."""
        return self._server_for(qualified_name)

    def accept_tools(self, server: str) -> list[str]:
        """Accept a server's current tool list after ``McpToolsChanged``; returns the tools now callable."""
        return self.service(server).accept_tools()

    def resolve_elicitation(self, request_id: str, action: str | int, content_json: str = "") -> bool:
        """Answer a pending elicitation of any server (any thread); False when none has that id pending."""
        for service in list(self.services.values()):
            if request_id in service.elicitation.pending_ids:
                return service.resolve_elicitation(request_id, action, content_json)
        return False


def enabled_configs(configs: Sequence[McpServerConfig]) -> list[McpServerConfig]:
    """The enabled configurations, first of each name, in configuration order."""
    seen: dict[str, McpServerConfig] = {}
    for config in configs:
        if config.enabled and config.name not in seen:
            seen[config.name] = config
    return list(seen.values())
