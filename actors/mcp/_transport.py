"""MCP transports that know when their server is gone: the SDK's stdio and streamable-HTTP clients, wrapped.

Contract:
- Both wrappers are SDK ``Transport``s (async context managers yielding a read and a write stream) and set
  ``closed`` as soon as the read stream ends: for stdio that is the moment the server process dies (its stdout
  reaches EOF), which the SDK itself only notices at the next request. This is the connection's watchdog.
- ``StdioTransport`` runs the server through the SDK's ``stdio_client`` (own process group), learns its pid,
  pumps its stderr into ``stderr_tail`` (last ``STDERR_TAIL_BYTES``, each line logged at DEBUG), and on exit
  makes sure the whole process group is gone: after a normal exit (a stop) it sends SIGTERM and, after
  ``STOP_GRACE_S``, SIGKILL; after an error or cancellation (a failed start) it sends SIGKILL at once. The
  SDK's own shutdown (close stdin, reap) then finds the process dead and returns without waiting. Every wait
  is bounded and shielded, so a cancelled caller cannot leak the process.
- ``HttpTransport`` sends the bearer token and extra headers, and records a 401/403 in ``auth_status``.
- Nothing here imports ``mcp`` or ``httpx2`` at module level (``import mcp`` costs ~0.5 s).
"""

from __future__ import annotations

import logging
import os
import signal
import uuid
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import trio

from actors.core import forget_group, owner_environment, watch_group
from actors.mcp._config import McpServerConfig
from actors.mcp._process import CONNECTION_TAG_VAR, kill_group, peek_exit, wait_exited, wait_for_tagged_child

__all__ = ["STDERR_TAIL_BYTES", "HttpTransport", "StdioTransport", "WatchedReadStream"]

logger = logging.getLogger(__name__)

#: Time a stopped server gets to exit after SIGTERM before its group gets SIGKILL.
STOP_GRACE_S = 0.5
#: Time to wait for a server whose stdout ended to show up as exited (for its exit status).
EXIT_PEEK_S = 0.5
#: Bytes of a server's stderr kept for error messages.
STDERR_TAIL_BYTES = 2048
#: Read size of the stderr pump.
STDERR_READ_BYTES = 4096
#: HTTP timeouts: connect/write/pool, and read (a response stream may stay open for long).
HTTP_TIMEOUT_S = 30.0
HTTP_READ_TIMEOUT_S = 300.0
#: HTTP statuses that mean the token is missing or wrong.
AUTH_FAILURE_STATUSES = (401, 403)


def _is_end_of_stream(exc: BaseException) -> bool:
    import anyio

    return isinstance(exc, anyio.EndOfStream | anyio.ClosedResourceError | anyio.BrokenResourceError)


class WatchedReadStream:
    """A read stream that sets ``closed`` when it ends; everything else is delegated to the wrapped stream."""

    def __init__(self, inner: Any, closed: trio.Event) -> None:
        self._inner = inner
        self._closed = closed

    async def receive(self) -> Any:
        """Receive the next item; sets ``closed`` at the end of the stream."""
        try:
            return await self._inner.receive()
        except Exception as exc:
            if _is_end_of_stream(exc):
                self._closed.set()
            raise

    def __aiter__(self) -> WatchedReadStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._inner.__anext__()
        except StopAsyncIteration:
            self._closed.set()
            raise
        except Exception as exc:
            if _is_end_of_stream(exc):
                self._closed.set()
            raise

    async def aclose(self) -> None:
        """Close the wrapped stream."""
        await self._inner.aclose()

    async def __aenter__(self) -> WatchedReadStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class StdioTransport:
    """The SDK's stdio transport plus the server's pid, a stderr tail, and a process-group kill on exit."""

    def __init__(self, config: McpServerConfig, nursery: trio.Nursery) -> None:
        self._config = config
        self._nursery = nursery
        self.closed = trio.Event()
        self.pid: int | None = None
        #: Set by the owner before a deliberate stop, so the end of the stream is not taken for a crash.
        self.stopping = False
        #: How the process ended ("exited with code 1"), once known.
        self.exit_description: str | None = None
        self.stderr_tail = bytearray()
        self._inner: Any = None
        self._stderr: trio.lowlevel.FdStream | None = None

    async def __aenter__(self) -> tuple[Any, Any]:
        from mcp.client.stdio import StdioServerParameters, stdio_client

        assert self._config.command is not None
        tag = uuid.uuid4().hex
        params = StdioServerParameters(
            command=self._config.command,
            args=list(self._config.args),
            env={**self._config.env, CONNECTION_TAG_VAR: tag, **owner_environment()},
            cwd=self._config.cwd,
        )
        read_fd, write_fd = os.pipe()
        self._stderr = trio.lowlevel.FdStream(read_fd)
        with os.fdopen(write_fd, "w") as errlog:  # the child keeps its own copy; ours closes after the spawn
            self._inner = stdio_client(params, errlog=errlog)
            try:
                read_stream, write_stream = await self._inner.__aenter__()
            except BaseException:
                await self._close_stderr()
                raise
        with trio.CancelScope(shield=True):  # bounded; a cancel here would leave the SDK's context half-entered
            self.pid = await wait_for_tagged_child(tag)
        if self.pid is None:
            logger.warning("mcp server %s: could not find its process; stop relies on the SDK", self._config.name)
        else:
            watch_group(self.pid)  # the SDK starts it in a session of its own: pgid == pid
        self._nursery.start_soon(self._pump_stderr, self._stderr)
        return WatchedReadStream(read_stream, self.closed), write_stream

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        # The SDK's exit shields its own shutdown; it must not run inside a scope opened here (its task group
        # was entered outside of it), so only our own steps are shielded.
        try:
            with trio.CancelScope(shield=True):
                await self._end_process(graceful=exc_type is None)
            return await self._inner.__aexit__(exc_type, exc, tb)
        finally:
            if self.pid is not None:
                kill_group(self.pid)  # descendants that left the leader behind
                forget_group(self.pid)
            with trio.CancelScope(shield=True):
                await self._close_stderr()

    async def _end_process(self, *, graceful: bool) -> None:
        pid = self.pid
        if pid is None:
            return
        if self.closed.is_set() and not self.stopping:
            await wait_exited(pid, EXIT_PEEK_S)  # it ended on its own: learn how before anyone reaps it
        self.exit_description = peek_exit(pid)
        if self.exit_description is None and graceful:
            kill_group(pid, signal.SIGTERM)
            await wait_exited(pid, STOP_GRACE_S)
        kill_group(pid)

    async def _pump_stderr(self, stream: trio.lowlevel.FdStream) -> None:
        pending = b""
        try:
            while chunk := await stream.receive_some(STDERR_READ_BYTES):
                self.stderr_tail += chunk
                del self.stderr_tail[:-STDERR_TAIL_BYTES]
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    logger.debug("mcp server %s stderr: %s", self._config.name, line.decode(errors="replace"))
        except (trio.ClosedResourceError, trio.BrokenResourceError, OSError):
            pass

    async def _close_stderr(self) -> None:
        if self._stderr is not None:
            await self._stderr.aclose()

    def stderr_text(self) -> str:
        """The last stderr bytes of the server, decoded, stripped."""
        return self.stderr_tail.decode(errors="replace").strip()


class HttpTransport:
    """The SDK's streamable-HTTP transport with a bearer token and a record of authentication failures."""

    def __init__(self, config: McpServerConfig, token: str | None) -> None:
        self._config = config
        self._token = token
        self.closed = trio.Event()
        self.stopping = False
        #: The last 401/403 status seen, or None.
        self.auth_status: int | None = None
        self._http: Any = None
        self._inner: Any = None

    def headers(self) -> dict[str, str]:
        """Headers sent with every request (extra headers, then ``Authorization`` when a token is set)."""
        headers: dict[str, str] = dict(self._config.http_headers)
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    async def _on_response(self, response: Any) -> None:
        if response.status_code in AUTH_FAILURE_STATUSES:
            self.auth_status = response.status_code

    async def __aenter__(self) -> tuple[Any, Any]:
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        assert self._config.url is not None
        hooks: Mapping[str, list[Callable[..., Any]]] = {"response": [self._on_response]}
        self._http = httpx2.AsyncClient(
            headers=self.headers(),
            timeout=httpx2.Timeout(HTTP_TIMEOUT_S, read=HTTP_READ_TIMEOUT_S),
            event_hooks=hooks,
        )
        await self._http.__aenter__()
        try:
            self._inner = streamable_http_client(self._config.url, http_client=self._http)
            read_stream, write_stream = await self._inner.__aenter__()
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await self._http.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return WatchedReadStream(read_stream, self.closed), write_stream

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        try:
            return await self._inner.__aexit__(exc_type, exc, tb)
        finally:
            with trio.CancelScope(shield=True):
                await self._http.__aexit__(None, None, None)
