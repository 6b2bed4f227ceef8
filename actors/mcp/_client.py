"""One MCP server connection on the shared trio loop: start, watch, restart, call, stop.

Contract:
- ``McpConnectionService`` is an async context manager (enter and exit in the same trio task); its tasks run
  in its own nursery. Leaving it stops the server: no process, thread, socket or pipe outlives it.
- ``start()`` spawns (or dials) the server, runs the MCP handshake and lists its tools, all within
  ``startup_timeout_sec``; it emits ``McpStartupUpdate`` STARTING then READY, FAILED or CANCELLED, and raises
  ``McpStartupError`` whose message carries a hint (the ``startup_timeout_sec`` field on a timeout, the
  ``bearer_token_env_var`` variable on an authentication failure). An invalid server name or a missing token
  variable fails the start; nothing crashes.
- A stdio server that dies is noticed at once (its stdout ends), reaped, and started again with capped
  exponential backoff (``RestartPolicy``), for ever: each state change is an event (``McpStartupUpdate``
  RESTARTING with the error and ``retry_in_ms`` when it went away and after each failed attempt,
  ``McpServerRestarted`` when it serves again) and one log line (the first failed attempt and the recovery,
  not every attempt). Only with ``max_restart_failures`` (or the policy's ``max_consecutive_failures``) does it
  stay FAILED after that many failed attempts in a row (``McpStartupUpdate`` FAILED, "gave up ..."), until
  ``restart()``. ``stop()`` kills the process group.
- ``call_tool`` waits for a server restarting after a crash, and both the wait and the call are bounded by
  ``tool_timeout_sec`` (``McpToolTimeout``); once a restart attempt failed, calls fail at once with
  ``McpServerUnavailable`` whose ``retry_after_s`` is the time to the next attempt. A call in flight when the
  server dies fails with ``McpCallFailed``. ``on_first_use`` servers start on their first call. Each call is
  an OpenTelemetry span (tracer ``actors.mcp``) that is a child of the caller's traceparent; untraced calls make
  no span.
- Rug-pull guard: the first tool list is accepted as it is; a later listing (after a restart, a
  ``tools/list_changed`` notification or ``list_tools(refresh=True)``) whose description or input schema of a
  tool differs, or that adds a tool, emits ``McpToolsChanged`` and refuses those tools (``McpToolChanged``)
  until ``accept_tools()``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import trio
from google.protobuf.message import Message

from actors.mcp._config import McpServerConfig
from actors.mcp._elicitation import DEFAULT_ELICITATION_TIMEOUT_S, ElicitationBroker
from actors.mcp._errors import (
    McpCallFailed,
    McpServerUnavailable,
    McpStartupError,
    McpToolChanged,
    McpToolDisabled,
    McpToolTimeout,
    McpUnknownTool,
)
from actors.mcp._guard import ToolGuard, call_span, fetch_tools
from actors.mcp._lean import LeanClient
from actors.mcp._results import ToolSpec, to_call_result
from actors.mcp._startup import describe_startup_failure, missing_token_error, timeout_error
from actors.mcp._state import Connection, ConnectionState, RestartPolicy
from actors.mcp._transport import HttpTransport, StdioTransport
from protos.supervisor.v1 import mcp_pb2

__all__ = ["ConnectionState", "McpConnectionService", "RestartPolicy"]

logger = logging.getLogger(__name__)

EmitFn = Callable[[Message], None]

#: Bound on waiting for a stopped connection to wind down (its transport's own waits are shorter).
STOP_TIMEOUT_S = 5.0
CLIENT_NAME = "session-supervisor"
CLIENT_VERSION = "0.1.0"


class McpConnectionService:
    """One MCP server: lifecycle, watchdog and restarts, tool listing, tool calls. Runs on one trio loop."""

    def __init__(
        self,
        config: McpServerConfig,
        emit: EmitFn,
        *,
        approval_policy: str = "on-request",
        elicitation_timeout_s: float = DEFAULT_ELICITATION_TIMEOUT_S,
        restart_policy: RestartPolicy | None = None,
        tracer_provider: Any = None,
        guard: ToolGuard | None = None,
    ) -> None:
        self.config = config
        self._emit = emit
        self._restart_policy = restart_policy or RestartPolicy()
        self._tracer_provider = tracer_provider
        self.elicitation = ElicitationBroker(
            config.name, emit, approval_policy=approval_policy, timeout_s=elicitation_timeout_s
        )
        self._state = ConnectionState.STOPPED
        self._state_changed = trio.Event()
        self._conn: Connection | None = None
        self._lifecycle = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._nursery_manager: Any = None
        self._open_scope: trio.CancelScope | None = None
        self._opening: Connection | None = None
        self._watch_scope: trio.CancelScope | None = None
        self._watch_done = trio.Event()
        self._watch_done.set()
        self._stop_requested = False
        # a guard handed in outlives this service (a restarted actor must not trust a changed list anew)
        self._guard = guard or ToolGuard(config.name, emit, config.tool_enabled)
        self.last_error = ""
        self.restarts = 0
        #: Failed restart attempts in a row since the last crash (0 while none failed).
        self.restart_failures = 0
        self._next_attempt_at = 0.0

    # --- context --------------------------------------------------------------------------------------
    async def __aenter__(self) -> McpConnectionService:
        self.elicitation.bind_loop()
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        with trio.CancelScope(shield=True):
            await self.stop()
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        result: bool | None = await self._nursery_manager.__aexit__(exc_type, exc, tb)
        return result

    # --- state ----------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The server's name."""
        return self.config.name

    @property
    def state(self) -> ConnectionState:
        """The connection's current state."""
        return self._state

    @property
    def pid(self) -> int | None:
        """The stdio server's process id while it runs (None for HTTP servers or when not running)."""
        conn = self._opening or self._conn
        if conn is None or not isinstance(conn.transport, StdioTransport) or conn.finished.is_set():
            return None
        return conn.transport.pid

    def _set_state(self, state: ConnectionState) -> None:
        self._state = state
        self._state_changed.set()
        self._state_changed = trio.Event()

    def _emit_status(self, status: int, error: str = "") -> None:
        self._emit(mcp_pb2.McpStartupUpdate(server=self.name, status=status, error=error))  # type: ignore[arg-type]

    # --- lifecycle ------------------------------------------------------------------------------------
    async def start(self, *, on_starting: Callable[[], None] | None = None) -> None:
        """Start the server (no-op when ready); raises ``McpStartupError`` when it fails. ``on_starting`` is
        called once the state is STARTING (a caller that publishes the service then sees no STOPPED gap)."""
        async with self._lifecycle:
            while self._state is ConnectionState.RESTARTING:
                await self._state_changed.wait()
            if self._state is ConnectionState.READY:
                return
            self._stop_requested = False
            self._set_state(ConnectionState.STARTING)
            if on_starting is not None:
                on_starting()
            self._emit_status(mcp_pb2.MCP_STARTUP_STATUS_STARTING)
            try:
                if self.config.name_error:
                    raise McpStartupError(self.name, self.config.name_error)
                conn = await self._open()
            except McpStartupError as exc:
                self.last_error = exc.reason
                self._set_state(ConnectionState.STOPPED if self._stop_requested else ConnectionState.FAILED)
                if self._stop_requested:
                    self._emit_status(mcp_pb2.MCP_STARTUP_STATUS_CANCELLED)
                else:
                    self._emit_status(mcp_pb2.MCP_STARTUP_STATUS_FAILED, exc.reason)
                raise
            except trio.Cancelled:
                self._set_state(ConnectionState.STOPPED)
                self._emit_status(mcp_pb2.MCP_STARTUP_STATUS_CANCELLED)
                raise
            self._install(conn)
            self._emit_status(mcp_pb2.MCP_STARTUP_STATUS_READY)
            assert self._nursery is not None
            self._watch_done = trio.Event()
            self._nursery.start_soon(self._watch, conn)

    async def stop(self) -> None:
        """Stop the server (cancelling a start in progress); its process group is killed. Idempotent."""
        self._stop_requested = True
        if self._open_scope is not None:
            self._open_scope.cancel()
        if self._watch_scope is not None:
            self._watch_scope.cancel()
        conn = self._conn
        if conn is not None:
            conn.request_stop()
        with trio.CancelScope(shield=True), trio.move_on_after(STOP_TIMEOUT_S) as waited:
            if conn is not None:
                await conn.finished.wait()
            await self._watch_done.wait()
        if waited.cancelled_caught:
            logger.warning("MCP server %s did not stop within %s s", self.name, STOP_TIMEOUT_S)
        async with self._lifecycle:
            if self._stop_requested:
                self._conn = None
                self._set_state(ConnectionState.STOPPED)

    async def settled(self) -> None:
        """Wait until the server is neither starting nor restarting (the caller bounds the wait)."""
        while self._state in (ConnectionState.STARTING, ConnectionState.RESTARTING):
            await self._state_changed.wait()

    async def restart(self) -> None:
        """Stop the server, then start it again."""
        await self.stop()
        await self.start()

    async def _open(self) -> Connection:
        """Spawn/dial, handshake and list tools within ``startup_timeout_sec``; raises ``McpStartupError``."""
        assert self._nursery is not None
        conn = Connection()
        timeout = self.config.startup_timeout_sec
        with trio.move_on_after(timeout) as scope:
            self._open_scope = scope
            self._opening = conn
            try:
                await self._nursery.start(self._run_connection, conn)
            except McpStartupError:
                raise
            except Exception as exc:
                raise McpStartupError(self.name, describe_startup_failure(self.config, conn.transport, exc)) from exc
            finally:
                self._open_scope = None
                self._opening = None
        if scope.cancelled_caught:
            if self._stop_requested:
                raise McpStartupError(self.name, "start cancelled")
            raise McpStartupError(self.name, timeout_error(self.config))
        return conn

    def _make_transport(self, nursery: trio.Nursery, conn: Connection) -> StdioTransport | HttpTransport:
        if self.config.transport == "stdio":
            transport: StdioTransport | HttpTransport = StdioTransport(self.config, nursery)
        else:
            token = None
            var = self.config.bearer_token_env_var
            if var:
                token = os.environ.get(var, "")
                if not token:
                    raise McpStartupError(self.name, missing_token_error(var))
            transport = HttpTransport(self.config, token)
        transport.closed = conn.wake
        return transport

    async def _run_connection(self, conn: Connection, task_status: trio.TaskStatus[None]) -> None:
        """Hold one client open until the server goes away or is stopped (in this one task)."""
        try:
            async with trio.open_nursery() as aux:
                conn.transport = self._make_transport(aux, conn)
                async with self._client(conn.transport) as client:
                    conn.client = client
                    conn.tools = await fetch_tools(client)
                    conn.started = True
                    task_status.started()
                    await conn.wake.wait()
                aux.cancel_scope.cancel()
        except Exception as exc:
            if not conn.started:
                raise
            logger.warning("MCP server %s: connection ended with %r", self.name, exc)
        finally:
            conn.finished.set()

    def _client(self, transport: StdioTransport | HttpTransport) -> Any:
        """The lean client over a stdio server's pipes; the SDK's client over HTTP (imported only then)."""
        if isinstance(transport, StdioTransport):
            def tools_changed() -> None:
                if self._nursery is not None:
                    self._nursery.start_soon(self._refresh_quietly)

            return _stdio_client(transport, LeanClient(transport, client_info=(CLIENT_NAME, CLIENT_VERSION),
                                                       elicit=self.elicitation.answer,
                                                       on_tools_changed=tools_changed))
        from mcp import Client

        return Client(transport, cache=None, elicitation_callback=self.elicitation.callback,
                      message_handler=self._on_message, client_info=_client_info())

    async def _watch(self, conn: Connection) -> None:
        """Restart the server whenever its connection ends without a stop."""
        try:
            with trio.CancelScope() as scope:
                self._watch_scope = scope
                while True:
                    await conn.wake.wait()
                    if not conn.crashed or self._stop_requested:
                        return
                    self._set_state(ConnectionState.RESTARTING)
                    await conn.finished.wait()
                    reason = conn.crash_reason()
                    logger.warning("MCP server %s %s; restarting", self.name, reason)
                    restarted = await self._restart_after_crash(reason)
                    if restarted is None:
                        return
                    conn = restarted
        finally:
            self._watch_scope = None
            if self._state is ConnectionState.RESTARTING:
                self._conn = None
                self._set_state(ConnectionState.STOPPED if self._stop_requested else ConnectionState.FAILED)
            self._watch_done.set()

    def _give_up_after(self) -> int | None:
        if self.config.max_restart_failures is not None:
            return self.config.max_restart_failures
        return self._restart_policy.max_consecutive_failures

    def _emit_restarting(self, error: str, delay_s: float) -> None:
        self._emit(mcp_pb2.McpStartupUpdate(server=self.name, status=mcp_pb2.MCP_STARTUP_STATUS_RESTARTING,
                                            error=error, retry_in_ms=int(delay_s * 1000)))

    async def _restart_after_crash(self, reason: str) -> Connection | None:
        """Try again and again with capped backoff until the server serves (or the configured limit says stop)."""
        self.restart_failures = 0
        self.last_error = reason
        limit = self._give_up_after()
        while True:
            delay = self._restart_policy.delay(self.restart_failures)
            self._next_attempt_at = trio.current_time() + delay
            self._emit_restarting(self.last_error, delay)
            await trio.sleep(delay)
            try:
                conn = await self._open()
            except McpStartupError as exc:
                self.restart_failures += 1
                self.last_error = exc.reason
                self._set_state(ConnectionState.RESTARTING)  # wakes callers waiting for the first attempt
                if limit is not None and self.restart_failures >= limit:
                    self.last_error = f"gave up after {self.restart_failures} failed restarts: {exc.reason}"
                    logger.warning("MCP server %s: %s", self.name, self.last_error)
                    self._emit_status(mcp_pb2.MCP_STARTUP_STATUS_FAILED, self.last_error)
                    self._conn = None
                    self._set_state(ConnectionState.FAILED)
                    return None
                if self.restart_failures == 1:
                    logger.warning("MCP server %s: restart failed (%s); retrying with backoff up to %g s",
                                   self.name, exc.reason, self._restart_policy.max_backoff_s)
                continue
            if self.restart_failures:
                logger.warning("MCP server %s serves again after %d failed restarts", self.name,
                               self.restart_failures)
            self.restart_failures = 0
            self.restarts += 1
            self._install(conn)
            self._emit(mcp_pb2.McpServerRestarted(server=self.name, attempt=self.restarts, reason=reason))
            return conn

    def _install(self, conn: Connection) -> None:
        self._conn = conn
        self.last_error = ""
        self._guard.absorb(conn.tools)
        self._set_state(ConnectionState.READY)

    # --- tools ----------------------------------------------------------------------------------------
    @property
    def pending_tools(self) -> list[str]:
        """Tools refused until ``accept_tools`` because they changed (or appeared) since accepted."""
        return self._guard.pending

    def tools(self, *, include_disabled: bool = False) -> list[ToolSpec]:
        """The enabled (or all) tools of the running server, as last listed (empty when not ready)."""
        conn = self._conn
        if conn is None:
            return []
        return [spec for name, spec in sorted(conn.tools.items()) if include_disabled or self.config.tool_enabled(name)]

    async def list_tools(self, *, refresh: bool = False) -> list[ToolSpec]:
        """The enabled tools; with ``refresh`` they are listed again first (a change is flagged)."""
        conn = self._conn
        if refresh and conn is not None and self._state is ConnectionState.READY:
            try:
                with trio.fail_after(self.config.tool_timeout_sec):
                    conn.tools = await fetch_tools(conn.client)
            except Exception as exc:
                raise McpCallFailed(f"listing tools of MCP server '{self.name}' failed: {exc}") from exc
            self._guard.absorb(conn.tools)
        return self.tools()

    def accept_tools(self) -> list[str]:
        """Accept the current tool list (loop thread); returns the tools that were pending."""
        conn = self._conn
        return self._guard.accept(conn.tools if conn is not None else None)

    async def _on_message(self, message: Any) -> None:
        import mcp_types as types

        if isinstance(message, types.ToolListChangedNotification) and self._nursery is not None:
            self._nursery.start_soon(self._refresh_quietly)

    async def _refresh_quietly(self) -> None:
        try:
            await self.list_tools(refresh=True)
        except Exception as exc:
            logger.warning("MCP server %s: re-listing tools failed: %s", self.name, exc)

    # --- calls ----------------------------------------------------------------------------------------
    async def _wait_ready(self) -> Connection:
        while True:
            conn = self._conn
            if self._state is ConnectionState.READY and conn is not None and not conn.wake.is_set():
                return conn
            if self._state is ConnectionState.FAILED:
                raise McpServerUnavailable(f"MCP server '{self.name}' is not available: {self.last_error}")
            if self._state is ConnectionState.RESTARTING and self.restart_failures:
                wait_s = max(0.0, self._next_attempt_at - trio.current_time())
                raise McpServerUnavailable(
                    f"MCP server '{self.name}' is restarting ({self.restart_failures} failed attempts, last:"
                    f" {self.last_error}); next attempt in {wait_s:.1f} s",
                    retry_after_s=wait_s or None,  # an attempt is running: the default hint
                )
            if self._state is ConnectionState.STOPPED:
                raise McpServerUnavailable(f"MCP server '{self.name}' is stopped")
            await self._state_changed.wait()

    async def call_tool(
        self, tool: str, arguments: dict[str, Any] | None = None, *, traceparent: str = ""
    ) -> mcp_pb2.McpToolCallResult:
        """Call one tool of this server; see the module docstring for waits, bounds and errors."""
        if not self.config.tool_enabled(tool):
            raise McpToolDisabled(f"tool '{tool}' is disabled")
        if self._state is ConnectionState.STOPPED and self.config.start == "on_first_use":
            try:
                await self.start()
            except McpStartupError as exc:
                raise McpServerUnavailable(f"MCP server '{self.name}' failed to start: {exc.reason}") from exc
        timeout = self.config.tool_timeout_sec
        began = time.monotonic()
        span = call_span(self._tracer_provider, self.name, tool, traceparent)
        with span, trio.move_on_after(timeout) as scope:
            conn = await self._wait_ready()
            if tool not in conn.tools:
                raise McpUnknownTool(f"MCP server '{self.name}' has no tool '{tool}'")
            if self._guard.is_flagged(tool):
                raise McpToolChanged(
                    f"tool '{tool}' of MCP server '{self.name}' changed since it was approved;"
                    f" accept the new tool list (accept_tools('{self.name}')) before calling it"
                )
            try:
                result = await conn.client.call_tool(tool, arguments or {})
            except Exception as exc:
                if conn.crashed:
                    raise McpCallFailed(
                        f"MCP server '{self.name}' exited during the call to '{tool}'"
                        f" ({conn.crash_reason()});"
                        " it is being restarted"
                    ) from exc
                raise McpCallFailed(f"MCP server '{self.name}' failed the call to '{tool}': {exc}") from exc
            return to_call_result(self.name, tool, result, time.monotonic() - began)
        assert scope.cancelled_caught
        raise McpToolTimeout(
            f"tool '{tool}' of MCP server '{self.name}' timed out after {timeout:g} s;"
            f" raise tool_timeout_sec in [mcp_servers.{self.name}] if it needs longer"
        )

    def resolve_elicitation(self, request_id: str, action: str | int, content_json: str = "") -> bool:
        """Answer a pending elicitation of this server (any thread); False when it is not pending."""
        return self.elicitation.resolve(request_id, action, content_json)


@asynccontextmanager
async def _stdio_client(transport: StdioTransport, client: LeanClient) -> AsyncIterator[LeanClient]:
    """The server's process (spawned or taken), then the handshake; left in the reverse order."""
    async with transport, client:
        yield client


def _client_info() -> Any:
    import mcp_types as types

    return types.Implementation(name=CLIENT_NAME, version=CLIENT_VERSION)
