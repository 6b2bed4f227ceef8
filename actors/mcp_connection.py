"""McpConnection: a session's MCP servers as a supervised child (a thin wrapper over ``_mcp_manager``).

Contract:
- Built from parsed server configurations (``actors._mcp_config.parse_mcp_servers``) plus the session's
  approval policy. Starting the actor starts one trio task in its own scope that holds an
  ``McpConnectionManager`` open and starts every eager server in parallel; ``startup()`` returns a
  ``concurrent.futures.Future`` of the ``StartupReport`` (its ``warnings`` are for the session's Warning
  event), which fails with ``McpRequiredServersFailed`` when a required server failed. That failure does not
  fail the actor: the other servers keep serving and the session decides whether to abort.
- ``call_tool`` / ``list_tools`` / ``accept_tools`` / ``control`` run in the actor's scope and return
  ``concurrent.futures.Future``s (never blocking the actor's thread); ``resolve_elicitation`` answers at once
  from any thread. ``manager()`` hands out the manager itself, for trio code (a turn) that awaits calls in
  its own scope; it must be used on the shared trio loop.
- Stopping the actor cancels its scope: every server is stopped and its process group killed. A restart by
  the supervisor starts fresh server processes; accepted tool lists are not kept.
- Nothing here imports ``mcp`` at module level; the SDK is imported when the first server starts.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from typing import Any

import trio
from google.protobuf.message import Message

from actors._mcp_client import RestartPolicy
from actors._mcp_config import McpServerConfig
from actors._mcp_elicitation import DEFAULT_ELICITATION_TIMEOUT_S
from actors._mcp_errors import McpError, McpRequiredServersFailed
from actors._mcp_manager import McpConnectionManager, StartupReport
from actors.supervision import ChildSpec, Restart, SupervisedActor
from protos.supervisor.v1 import mcp_pb2

__all__ = ["MCP_CHILD_ID", "McpConnection", "mcp_child_spec"]

#: The child id a session gives its MCP actor.
MCP_CHILD_ID = "mcp"

_STATUS_BY_STATE = {
    "starting": mcp_pb2.MCP_STARTUP_STATUS_STARTING,
    "restarting": mcp_pb2.MCP_STARTUP_STATUS_STARTING,
    "ready": mcp_pb2.MCP_STARTUP_STATUS_READY,
    "failed": mcp_pb2.MCP_STARTUP_STATUS_FAILED,
    "stopped": mcp_pb2.MCP_STARTUP_STATUS_UNSPECIFIED,
}


class McpConnection(SupervisedActor):
    """Holds a session's MCP connections open on the shared trio loop."""

    def __init__(
        self,
        *,
        configs: Sequence[McpServerConfig],
        emit: Callable[[Message], None],
        approval_policy: str = "on-request",
        elicitation_timeout_s: float = DEFAULT_ELICITATION_TIMEOUT_S,
        restart_policy: RestartPolicy | None = None,
        tracer_provider: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._manager = McpConnectionManager(
            configs,
            emit,
            approval_policy=approval_policy,
            elicitation_timeout_s=elicitation_timeout_s,
            restart_policy=restart_policy,
            tracer_provider=tracer_provider,
        )
        self._startup: concurrent.futures.Future[StartupReport] = concurrent.futures.Future()

    def on_start(self) -> None:
        """Start the task that holds the connections open and starts the eager servers."""
        self.run_task(self._serve, critical=True, name="mcp:serve")

    async def _serve(self) -> None:
        try:
            async with self._manager:
                try:
                    report = await self._manager.start_all()
                except McpRequiredServersFailed as exc:
                    self._startup.set_exception(exc)
                else:
                    self._startup.set_result(report)
                await trio.sleep_forever()
        finally:
            if not self._startup.done():
                self._startup.set_exception(McpError("MCP connections stopped before start-up completed"))

    def startup(self) -> concurrent.futures.Future[StartupReport]:
        """Resolves when every eager server is ready or failed; fails with ``McpRequiredServersFailed``."""
        return self._startup

    def manager(self) -> McpConnectionManager:
        """The manager, for trio code on the shared loop."""
        return self._manager

    def call_tool(
        self, qualified_name: str, arguments: dict[str, Any] | None = None, traceparent: str = ""
    ) -> concurrent.futures.Future[mcp_pb2.McpToolCallResult]:
        """Call a tool by qualified name in this actor's scope."""

        async def call() -> mcp_pb2.McpToolCallResult:
            return await self._manager.call_tool(qualified_name, arguments, traceparent=traceparent)

        return self.run_task(call, critical=False, name=f"mcp:{qualified_name}")

    def list_tools(self, refresh: bool = False) -> concurrent.futures.Future[mcp_pb2.McpListToolsResponse]:
        """Every callable tool (listed again first with ``refresh``), as an ``McpListToolsResponse``."""

        async def listing() -> mcp_pb2.McpListToolsResponse:
            tools = await self._manager.refresh_tools() if refresh else self._manager.list_tools()
            return mcp_pb2.McpListToolsResponse(tools=tools)

        return self.run_task(listing, critical=False, name="mcp:list_tools")

    def accept_tools(self, server: str) -> concurrent.futures.Future[mcp_pb2.McpAcceptToolsResponse]:
        """Accept a server's changed tool list (after ``McpToolsChanged``)."""

        async def accept() -> mcp_pb2.McpAcceptToolsResponse:
            return mcp_pb2.McpAcceptToolsResponse(accepted=self._manager.accept_tools(server))

        return self.run_task(accept, critical=False, name="mcp:accept_tools")

    def control(
        self, server: str, action: mcp_pb2.McpServerAction.ValueType
    ) -> concurrent.futures.Future[mcp_pb2.McpServerControlResponse]:
        """Start, stop or restart one server; the response carries its status afterwards (or the error)."""

        async def act() -> mcp_pb2.McpServerControlResponse:
            error = ""
            try:
                if action == mcp_pb2.MCP_SERVER_ACTION_START:
                    await self._manager.start_server(server)
                elif action == mcp_pb2.MCP_SERVER_ACTION_STOP:
                    await self._manager.stop_server(server)
                elif action == mcp_pb2.MCP_SERVER_ACTION_RESTART:
                    await self._manager.restart_server(server)
                else:
                    raise McpError(f"unknown MCP server action {action}")
            except McpError as exc:
                error = str(exc)
            service = self._manager.services.get(server)
            status = _STATUS_BY_STATE[service.state.value] if service is not None else 0
            return mcp_pb2.McpServerControlResponse(status=status, error=error)  # type: ignore[arg-type]

        return self.run_task(act, critical=False, name=f"mcp:control:{server}")

    def resolve_elicitation(self, request_id: str, action: str | int, content_json: str = "") -> bool:
        """Answer a pending elicitation (thread-safe, immediate); False when no server has it pending."""
        return self._manager.resolve_elicitation(request_id, action, content_json)


def mcp_child_spec(
    configs: Sequence[McpServerConfig],
    *,
    emit: Callable[[Message], None],
    approval_policy: str = "on-request",
    **options: Any,
) -> ChildSpec:
    """The ``ChildSpec`` of a session's ``McpConnection`` (``options``: elicitation_timeout_s, restart_policy,
    tracer_provider)."""
    return ChildSpec(
        child_id=MCP_CHILD_ID,
        actor_class=McpConnection,
        kwargs={"configs": list(configs), "emit": emit, "approval_policy": approval_policy, **options},
        restart=Restart.PERMANENT,
        kind="mcp",
    )
