"""McpTools: a session's MCP servers as one tool namespace over one ``McpConnection`` actor per server.

Contract:
- Built by the session together with the per-server child specs (``actors.mcp._actor.mcp_child_specs``)
  from the enabled server configurations, and handed to tasks as ``services["mcp"]`` (subagents share their
  parent's). A plain object: it owns no thread, no task and no process.
- Each ``McpConnection`` actor attaches its ``McpConnectionService`` when it holds it open and detaches it
  when it ends; a restarted actor attaches its fresh service under the same name. A call or control request
  for a server whose actor is restarting (or has not attached yet) waits for it, bounded by the server's
  ``tool_timeout_sec`` (``McpServerUnavailable`` after that).
- Start-up: each actor reports its server's first eager start (``report_start``); when every eager server has
  reported, ``McpStartupComplete{ready, failed, cancelled}`` is emitted once (configuration order) and
  ``startup`` resolves with a ``StartupReport`` or fails with ``McpRequiredServersFailed``. A restarted actor
  does not report again. With no eager server it resolves at once.
- One ``ToolGuard`` per server lives here, so an accepted tool list survives an actor restart: a restart is no
  way around the rug-pull check.
- Names, routing, lazy start and control are ``McpRouter``'s. Everything runs on the shared trio loop except
  ``startup`` (a ``concurrent.futures.Future``) and ``resolve_elicitation`` (any thread); a thread that needs
  a call submits it to the loop (``SupervisedActor.run_task``) and waits on the future.
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Sequence

import trio
from google.protobuf.message import Message

from actors.mcp._client import McpConnectionService
from actors.mcp._config import McpServerConfig
from actors.mcp._errors import McpRequiredServersFailed, McpServerUnavailable
from actors.mcp._guard import ToolGuard
from actors.mcp._names import DELIMITER, TOOL_NAME_PREFIX, sanitize
from actors.mcp._router import McpRouter, ServerStart, StartupReport, enabled_configs, finish_startup

__all__ = ["McpTools"]

logger = logging.getLogger(__name__)


class McpTools(McpRouter):
    """The session-wide view of its per-server MCP actors (see the module docstring)."""

    def __init__(self, configs: Sequence[McpServerConfig], emit: Callable[[Message], None]) -> None:
        enabled = enabled_configs(configs)
        super().__init__([config.name for config in enabled])
        self._emit = emit
        #: The enabled configurations by name, in configuration order.
        self.configs: dict[str, McpServerConfig] = {config.name: config for config in enabled}
        self._guards = {config.name: ToolGuard(config.name, emit, config.tool_enabled) for config in enabled}
        self._eager = [config.name for config in enabled if config.start == "eager"]
        self._starts: dict[str, ServerStart] = {}
        self._changed = trio.Event()
        #: Resolves once every eager server has started or failed; see the module docstring.
        self.startup: concurrent.futures.Future[StartupReport] = concurrent.futures.Future()
        if not self._eager:
            self._complete()

    @property
    def required(self) -> bool:
        """Whether any enabled server is ``required`` (the session's start then waits for ``startup``)."""
        return any(config.required for config in self.configs.values())

    def guard(self, server: str) -> ToolGuard:
        """The rug-pull guard of one server, shared by all incarnations of its actor."""
        return self._guards[server]

    # --- called by the per-server actors, on the trio loop ---------------------------------------------
    def attach(self, service: McpConnectionService) -> None:
        """Make a server's (new) service reachable (idempotent)."""
        if self.services.get(service.name) is not service:
            self.services[service.name] = service
            self._notify()

    def detach(self, service: McpConnectionService) -> None:
        """Its actor ended: the service is gone until a restarted actor attaches another."""
        if self.services.get(service.name) is service:
            del self.services[service.name]
            self._notify()

    def report_start(self, start: ServerStart) -> None:
        """Record one eager server's first start; the last one completes ``startup``. Later reports are ignored."""
        if start.server not in self._eager or start.server in self._starts or self.startup.done():
            return
        self._starts[start.server] = start
        if len(self._starts) == len(self._eager):
            self._complete()

    def _complete(self) -> None:
        self._assign_names()
        try:
            report = finish_startup([self._starts[name] for name in self._eager], self._emit)
        except McpRequiredServersFailed as exc:
            self.startup.set_exception(exc)
        else:
            self.startup.set_result(report)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # --- routing --------------------------------------------------------------------------------------
    def service(self, server: str) -> McpConnectionService:
        """The connection of one server now; ``McpServerUnavailable`` when unknown or while it restarts."""
        if server in self.configs and server not in self.services:
            raise McpServerUnavailable(f"MCP server '{server}' is restarting")
        return super().service(server)

    async def reach(self, server: str) -> McpConnectionService:
        """The connection of one server, waiting (up to its ``tool_timeout_sec``) while its actor restarts."""
        config = self.configs.get(server)
        if config is None:
            return super().service(server)  # raises: unknown or disabled
        with trio.move_on_after(config.tool_timeout_sec):
            while server not in self.services:
                await self._changed.wait()
            return self.services[server]
        raise McpServerUnavailable(
            f"MCP server '{server}' did not come back from a restart within {config.tool_timeout_sec:g} s"
        )

    async def _server_awaiting(self, qualified_name: str) -> McpConnectionService | None:
        """The configured server the name's prefix points at, waiting for its actor when it is not attached."""
        for name in self.order:
            if qualified_name.startswith(f"{TOOL_NAME_PREFIX}{DELIMITER}{sanitize(name)}{DELIMITER}"):
                return await self.reach(name)
        return None
