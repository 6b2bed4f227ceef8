"""MCP transports that know when their server is gone: a stdio server's own pipes, and the SDK's HTTP client.

Contract:
- Both set ``closed`` as soon as the server's output ends: for stdio that is the moment the server process
  dies (its stdout reaches EOF), noticed at once rather than at the next request. This is the connection's
  watchdog.
- ``StdioTransport`` (for ``actors.mcp._lean.LeanClient``) takes the process spawned for its configuration at
  process start, if any, else spawns it (``actors.mcp._spawn``: own process group, piped stdio); it pumps the
  server's stderr into ``stderr_tail`` (last ``STDERR_TAIL_BYTES``, each line logged at DEBUG), and on exit
  makes sure the whole process group is gone: after a normal exit (a stop) it sends SIGTERM and, after
  ``STOP_GRACE_S``, SIGKILL; after an error or cancellation (a failed start) it sends SIGKILL at once; then
  it reaps the process. Every wait is bounded and shielded, so a cancelled caller cannot leak the process.
- ``HttpTransport`` is an SDK ``Transport`` (read and write streams, ``WatchedReadStream``); it sends the
  bearer token and extra headers, and records a 401/403 in ``auth_status``.
- Nothing here imports ``mcp`` or ``httpx2`` at module level (``import mcp`` costs 1-2.5 s).
"""

from __future__ import annotations

import logging
import signal
import uuid
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import trio

from actors.core import forget_group, owner_environment, watch_group
from actors.mcp._config import McpServerConfig
from actors.mcp._process import CONNECTION_TAG_VAR, kill_group, peek_exit, wait_exited
from actors.mcp._spawn import ServerProcess, spawn_server, take_prespawned

__all__ = ["STDERR_TAIL_BYTES", "HttpTransport", "StdioTransport", "WatchedReadStream"]

logger = logging.getLogger(__name__)

#: Time a stopped server gets to exit after SIGTERM before its group gets SIGKILL.
STOP_GRACE_S = 0.5
#: Time to wait for a server whose stdout ended to show up as exited (for its exit status).
EXIT_PEEK_S = 0.5
#: Bound on reaping a stopped server after its group got SIGKILL, and how often to look.
REAP_TIMEOUT_S = 2.0
EXIT_POLL_S = 0.005
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
    """A stdio server's process and pipes for ``LeanClient``: pid, a stderr tail, a process-group kill on exit."""

    def __init__(self, config: McpServerConfig, nursery: trio.Nursery) -> None:
        self._config = config
        self._nursery = nursery
        self.closed = trio.Event()
        self.pid: int | None = None
        #: Set by the owner before a deliberate stop, so the end of the stream is not taken for a crash.
        self.stopping = False
        #: How the process ended ("exited with code 1"), once known.
        self.exit_description: str | None = None
        #: Whether the process was spawned at process start (``actors.mcp._spawn.prespawn``).
        self.prespawned = False
        self.stderr_tail = bytearray()
        self._server: ServerProcess | None = None
        self._stdin: trio.lowlevel.FdStream | None = None
        self._stdout: trio.lowlevel.FdStream | None = None
        self._stderr: trio.lowlevel.FdStream | None = None

    async def __aenter__(self) -> StdioTransport:
        server = take_prespawned(self._config)
        self.prespawned = server is not None
        if server is None:
            server = spawn_server(self._config, {CONNECTION_TAG_VAR: uuid.uuid4().hex, **owner_environment()})
        self._server = server
        self.pid = server.pid
        watch_group(server.pid)  # its own session: pgid == pid (a prespawned one was registered at start-up)
        # the streams own the fds from here on
        self._stdin = trio.lowlevel.FdStream(server.stdin_fd)
        self._stdout = trio.lowlevel.FdStream(server.stdout_fd)
        self._stderr = trio.lowlevel.FdStream(server.stderr_fd)
        server.stdin_fd = server.stdout_fd = server.stderr_fd = -1
        self._nursery.start_soon(self._pump_stderr, self._stderr)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        with trio.CancelScope(shield=True):  # every wait below is bounded; a cancel must not leak the process
            try:
                await self._end_process(graceful=exc_type is None)
            finally:
                if self.pid is not None:
                    kill_group(self.pid)  # descendants that left the leader behind
                for stream in (self._stdin, self._stdout, self._stderr):
                    if stream is not None:
                        await stream.aclose()
                await self._reap()
                if self.pid is not None:
                    forget_group(self.pid)
        return None

    # --- the pipes (``LineStreams``) -------------------------------------------------------------------
    async def receive_some(self, max_bytes: int) -> bytes:
        """Bytes the server wrote to its stdout (b"" at its end)."""
        assert self._stdout is not None
        return await self._stdout.receive_some(max_bytes)

    async def send_all(self, data: bytes) -> None:
        """Write to the server's stdin."""
        assert self._stdin is not None
        await self._stdin.send_all(data)

    def output_ended(self) -> None:
        """The server's stdout ended: for stdio that is the moment the process died (or was stopped)."""
        self.closed.set()

    # --- the process -----------------------------------------------------------------------------------
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

    async def _reap(self) -> None:
        server = self._server
        if server is None:
            return
        with trio.move_on_after(REAP_TIMEOUT_S):
            while server.process.poll() is None:
                await trio.sleep(EXIT_POLL_S)
        if server.process.returncode is None:
            logger.warning("mcp server %s (pid %s) did not exit after SIGKILL", self._config.name, server.pid)

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
