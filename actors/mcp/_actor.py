"""McpConnection: one MCP server as a supervised child actor of its session (child id ``mcp:NAME``).

Contract:
- ``mcp_child_specs`` turns a session's server configurations into one ``ChildSpec`` per enabled server
  (restart PERMANENT, kind "mcp") plus the session-wide ``McpTools`` (``actors.mcp._tools``) that every one of
  them attaches to: the session hands that object to tasks as ``services["mcp"]`` and waits on its
  ``startup`` future (one ``McpStartupComplete``; a required failure fails the start).
- Starting the actor starts one trio task in the actor's own scope that holds one ``McpConnectionService``
  open, attaches it to the ``McpTools``, and starts the server when it is ``eager`` (``on_first_use`` servers
  start on their first call). The session starts its children in parallel, so its servers start in parallel.
  ``startup()`` returns a ``concurrent.futures.Future`` of this server's ``ServerStart``; a failed start does
  not fail the actor (the session decides; the service keeps retrying a crashed server itself).
- A failure of the task (an unexpected error in the connection) fails the actor; its supervisor starts a
  fresh one with backoff, which attaches a fresh service: calls meanwhile wait for it (see ``McpTools``), the
  other servers' actors keep serving, and the accepted tool list (the rug-pull guard) is kept.
- ``call_tool`` / ``control`` run in the actor's scope and return ``concurrent.futures.Future``s (never
  blocking the actor's thread); ``resolve_elicitation`` answers at once from any thread; ``service()`` hands
  out the service for trio code on the shared loop.
- Stopping the actor cancels its scope: the server is stopped and its process group killed.
- Nothing here imports ``mcp`` at module level; the SDK is imported when the server starts.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio
from google.protobuf.message import Message

from actors.core import ChildSpec, Restart, SupervisedActor
from actors.mcp._client import McpConnectionService, RestartPolicy
from actors.mcp._config import McpServerConfig
from actors.mcp._elicitation import DEFAULT_ELICITATION_TIMEOUT_S
from actors.mcp._errors import McpError, McpStartupError
from actors.mcp._router import ServerStart, startup_outcome
from actors.mcp._tools import McpTools
from protos.supervisor.v1 import mcp_pb2

__all__ = ["MCP_CHILD_PREFIX", "McpChildren", "McpConnection", "mcp_child_id", "mcp_child_specs"]

#: Child ids of MCP actors are this prefix plus the server name.
MCP_CHILD_PREFIX = "mcp:"
#: ``ServerStart.outcome`` of an ``on_first_use`` server, which does not start with its actor.
DEFERRED = "deferred"


def mcp_child_id(server: str) -> str:
    """The child id of one server's actor."""
    return f"{MCP_CHILD_PREFIX}{server}"


class McpConnection(SupervisedActor):
    """Holds one MCP server's connection open on the shared trio loop."""

    def __init__(
        self,
        *,
        config: McpServerConfig,
        emit: Callable[[Message], None],
        tools: McpTools | None = None,
        approval_policy: str = "on-request",
        elicitation_timeout_s: float = DEFAULT_ELICITATION_TIMEOUT_S,
        restart_policy: RestartPolicy | None = None,
        tracer_provider: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.config = config
        #: The session-wide tool namespace this server belongs to (its own when started alone).
        self.tools = tools if tools is not None else McpTools([config], emit)
        self._service = McpConnectionService(
            config,
            emit,
            approval_policy=approval_policy,
            elicitation_timeout_s=elicitation_timeout_s,
            restart_policy=restart_policy,
            tracer_provider=tracer_provider,
            guard=self.tools.guard(config.name),
        )
        self._startup: concurrent.futures.Future[ServerStart] = concurrent.futures.Future()

    def on_start(self) -> None:
        """Start the task that holds the connection open (and starts an eager server)."""
        self.run_task(self._serve, critical=True, name=mcp_child_id(self.config.name))

    async def _serve(self) -> None:
        service, eager = self._service, self.config.start == "eager"
        try:
            async with service:
                try:
                    self._startup.set_result(await self._publish(service, eager))
                    await trio.sleep_forever()
                finally:  # before the stop: calls from now on wait for a replacement instead of failing
                    self.tools.detach(service)
        finally:
            self.tools.detach(service)
            if eager:  # ignored unless this server had not reported yet (stopped during its first start)
                self.tools.report_start(ServerStart(service.name, "cancelled", required=self.config.required))
            if not self._startup.done():
                self._startup.set_exception(McpError(f"MCP server '{service.name}' stopped before it started"))

    async def _publish(self, service: McpConnectionService, eager: bool) -> ServerStart:
        """Attach the service to the namespace; start an eager server first and report how its start went."""
        if not eager:
            self.tools.attach(service)
            return ServerStart(service.name, DEFERRED, required=self.config.required)
        error: str | None = None
        try:  # published once STARTING: a call waiting for this server then waits for its start
            await service.start(on_starting=lambda: self.tools.attach(service))
        except McpStartupError as exc:
            error = exc.reason
        self.tools.attach(service)
        start = startup_outcome(service, error)
        self.tools.report_start(start)
        return start

    def startup(self) -> concurrent.futures.Future[ServerStart]:
        """Resolves when this server's first start returned (at once for ``on_first_use``)."""
        return self._startup

    def service(self) -> McpConnectionService:
        """This server's connection, for trio code on the shared loop."""
        return self._service

    def call_tool(
        self, tool: str, arguments: dict[str, Any] | None = None, traceparent: str = ""
    ) -> concurrent.futures.Future[mcp_pb2.McpToolCallResult]:
        """Call one of this server's tools (its own name, not the qualified one) in this actor's scope."""

        async def call() -> mcp_pb2.McpToolCallResult:
            return await self._service.call_tool(tool, arguments, traceparent=traceparent)

        return self.run_task(call, critical=False, name=f"{mcp_child_id(self.config.name)}:{tool}")

    def control(
        self, action: mcp_pb2.McpServerAction.ValueType
    ) -> concurrent.futures.Future[mcp_pb2.McpServerControlResponse]:
        """Start, stop or restart this server; the response carries its status afterwards (or the error)."""
        return self.run_task(self.tools.control, self.config.name, action, critical=False,
                             name=f"{mcp_child_id(self.config.name)}:control")

    def resolve_elicitation(self, request_id: str, action: str | int, content_json: str = "") -> bool:
        """Answer a pending elicitation of this server (thread-safe, immediate); False when not pending."""
        return self._service.resolve_elicitation(request_id, action, content_json)


@dataclass(frozen=True)
class McpChildren:
    """A session's MCP children: one spec per enabled server and the namespace they share."""

    specs: list[ChildSpec]
    tools: McpTools

    @property
    def required(self) -> bool:
        """Whether any server is ``required``."""
        return self.tools.required


def mcp_child_specs(
    configs: Sequence[McpServerConfig],
    *,
    emit: Callable[[Message], None],
    approval_policy: str = "on-request",
    **options: Any,
) -> McpChildren:
    """One ``McpConnection`` child spec per enabled server (``options``: elicitation_timeout_s,
    restart_policy, tracer_provider), all attached to one new ``McpTools``."""
    tools = McpTools(configs, emit)
    specs = [
        ChildSpec(
            child_id=mcp_child_id(config.name),
            actor_class=McpConnection,
            kwargs={"config": config, "emit": emit, "tools": tools, "approval_policy": approval_policy, **options},
            restart=Restart.PERMANENT,
            kind="mcp",
        )
        for config in tools.configs.values()
    ]
    return McpChildren(specs=specs, tools=tools)
