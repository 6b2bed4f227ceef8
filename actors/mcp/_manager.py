"""All MCP connections of one session held in one trio task: parallel start-up over owned connections.

Contract:
- ``McpConnectionManager`` is an async context manager over one ``McpConnectionService`` per enabled server
  (configuration order kept); leaving it stops every server. It is the in-one-task form of the session's MCP
  layer (tests, benchmarks, embedders); a session runs one ``McpConnection`` actor per server instead and
  routes through ``McpTools`` (``actors.mcp._tools``). Both route through ``McpRouter``.
- ``start_all()`` starts every ``eager`` server in parallel (each bounded by its own ``startup_timeout_sec``),
  emits ``McpStartupComplete{ready, failed, cancelled}``, then raises ``McpRequiredServersFailed`` if a
  ``required`` server failed (message ``required MCP servers failed to initialize: NAME: ERROR; ...``);
  otherwise it returns a ``StartupReport`` whose ``warnings`` hold one line per non-required failure.
- Naming, routing, lazy start and runtime control are ``McpRouter``'s (see ``actors.mcp._router``).
- ``resolve_elicitation`` may be called from any thread; everything else runs on the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any

import trio
from google.protobuf.message import Message

from actors.mcp._client import McpConnectionService, RestartPolicy
from actors.mcp._config import McpServerConfig
from actors.mcp._elicitation import DEFAULT_ELICITATION_TIMEOUT_S
from actors.mcp._errors import McpStartupError
from actors.mcp._router import McpRouter, StartupReport, enabled_configs, finish_startup, startup_outcome

__all__ = ["McpConnectionManager", "StartupReport"]


class McpConnectionManager(McpRouter):
    """The MCP connections of one session, owned and held open by the task that enters the manager."""

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
        enabled = enabled_configs(configs)
        super().__init__([config.name for config in enabled])
        self._emit = emit
        for config in enabled:
            self.services[config.name] = McpConnectionService(
                config,
                emit,
                approval_policy=approval_policy,
                elicitation_timeout_s=elicitation_timeout_s,
                restart_policy=restart_policy,
                tracer_provider=tracer_provider,
            )
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

    async def start_all(self) -> StartupReport:
        """Start every eager server in parallel; see the module docstring for events, errors and warnings."""
        errors: dict[str, str | None] = {}

        async def start_one(service: McpConnectionService) -> None:
            try:
                await service.start()
                errors[service.name] = None
            except McpStartupError as exc:
                errors[service.name] = exc.reason

        eager = [service for service in self._ordered() if service.config.start == "eager"]
        async with trio.open_nursery() as nursery:
            for service in eager:
                nursery.start_soon(start_one, service)
        starts = [startup_outcome(service, errors.get(service.name)) for service in eager]
        self._assign_names()
        return finish_startup(starts, self._emit)
