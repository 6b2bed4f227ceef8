"""A lean HTTP/1.1 client on trio for streaming model APIs: ``h11`` over trio sockets, nothing else.

Why not the SDK's stack (``openai`` on httpx + anyio + pydantic): importing it costs ~0.7 s and its first
stream builds pydantic models for ~0.5 s on the shared trio thread. This client imports in ~15 ms and hands
the body to the caller as bytes the moment they arrive.

Contract:
- ``HttpClient(base_url)`` sends ``POST`` requests with a JSON body to paths under ``base_url`` (``http`` or
  ``https``; TLS verifies with the system's trust store, ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` honoured) and
  yields a ``StreamingResponse`` whose ``chunks()`` iterate the body as it arrives.
- Connections are kept alive and reused (at most ``MAX_IDLE_CONNECTIONS`` idle). A request sent on a reused
  connection that the server had already closed is sent once more on a fresh one.
- Every network wait is bounded: ``connect_timeout_s`` for name resolution + connect (+ TLS), and
  ``read_timeout_s`` for each read (the longest silence allowed between two pieces of a response).
- Failures are provider errors: the server cannot be reached, or the connection breaks or times out ->
  ``ProviderUnavailable``; a malformed response -> ``ProviderError``. A status >= 400 is not an error here:
  the caller reads ``status`` and ``read_error_body()``.
- Cancellation (a trio cancel scope) closes the connection at once; a response left before its end is never
  reused. ``aclose()`` closes the idle connections (idempotent).
- ``HTTP_PROXY`` / ``HTTPS_PROXY`` are not honoured (the model endpoint is reached directly).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

import h11
import trio

from actors.providers.base import ProviderError, ProviderUnavailable

__all__ = ["HttpClient", "StreamingResponse"]

#: Idle keep-alive connections kept per client (a session streams one request at a time; subagents share).
MAX_IDLE_CONNECTIONS = 8
#: Bytes asked of the socket per read.
READ_BYTES = 65536
#: Most bytes of an error body read (error bodies are small JSON objects).
MAX_ERROR_BODY_BYTES = 65536
#: h11's bound on a response's status line + headers.
MAX_HEADER_BYTES = 65536
USER_AGENT = "session-supervisor"


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int
    prefix: str  # the base URL's path, without a trailing slash

    @classmethod
    def parse(cls, base_url: str) -> _Origin:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ProviderError(f"base_url must be an http:// or https:// URL, not {base_url!r}")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise ProviderError(f"bad port in base_url {base_url!r}") from exc
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


@dataclass
class _Connection:
    stream: trio.abc.Stream
    h11: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT, max_incomplete_event_size=
                                                                       MAX_HEADER_BYTES))
    reused: bool = False
    eof: bool = False

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


class _StaleConnection(Exception):
    """A reused keep-alive connection turned out closed before any byte of the response came back."""


class StreamingResponse:
    """A response whose body is read as it arrives; valid inside ``HttpClient.post``'s context only."""

    def __init__(self, client: HttpClient, conn: _Connection, response: h11.Response) -> None:
        self._client = client
        self._conn = conn
        self.status: int = response.status_code
        #: Header names lower-cased; a repeated header keeps its last value.
        self.headers: dict[str, str] = {k.decode("latin-1").lower(): v.decode("latin-1")
                                        for k, v in response.headers}
        self.complete = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, piece by piece, until its end (a connection that breaks first raises)."""
        while not self.complete:
            event = await self._client._next_event(self._conn)
            if isinstance(event, h11.Data):
                if event.data:
                    yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self.complete = True
            else:  # h11 emits only Data or EndOfMessage after the response head
                raise ProviderError(f"unexpected HTTP event {type(event).__name__} in a response body")

    async def read_error_body(self) -> bytes:
        """The whole (bounded) body, for error statuses."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            parts.append(chunk)
            size += len(chunk)
            if size >= MAX_ERROR_BODY_BYTES:
                break
        return b"".join(parts)[:MAX_ERROR_BODY_BYTES]


class HttpClient:
    """Keep-alive HTTP/1.1 ``POST`` with streamed responses, on trio (see the module docstring)."""

    def __init__(self, base_url: str, *, headers: Mapping[str, str] | None = None,
                 connect_timeout_s: float, read_timeout_s: float, query: Mapping[str, str] | None = None) -> None:
        self._origin = _Origin.parse(base_url)
        self._query = ("?" + urlencode(dict(query))) if query else ""
        self.base_url = base_url
        self._headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._idle: list[_Connection] = []
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    @asynccontextmanager
    async def post(self, path: str, body: bytes,
                   headers: Mapping[str, str] | None = None) -> AsyncGenerator[StreamingResponse, None]:
        """Send ``POST base_url/path`` with ``body`` (JSON); yield the response once its head arrived."""
        if self._closed:
            raise ProviderError("the HTTP client is closed")
        target = (self._origin.prefix + "/" + path.lstrip("/") + self._query).encode("latin-1")
        head = [
            (b"host", self._origin.host_header.encode("latin-1")),
            (b"user-agent", USER_AGENT.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *self._headers,
            *[(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()],
        ]
        request = h11.Request(method="POST", target=target, headers=head)
        conn, response = await self._send(request, body)
        streaming = StreamingResponse(self, conn, response)
        try:
            yield streaming
        except BaseException:
            await conn.aclose()
            raise
        if not (streaming.complete and self._keep(conn)):
            await conn.aclose()  # a body left unread (or "Connection: close"): it cannot carry another request

    async def warm(self) -> None:
        """Open one connection ahead of the first request (connect + TLS off the request's path)."""
        if not self._idle and not self._closed:
            conn = await self._connect()
            if self._closed or len(self._idle) >= MAX_IDLE_CONNECTIONS:
                await conn.aclose()
            else:
                self._idle.append(conn)

    async def aclose(self) -> None:
        """Close every idle connection; later requests fail (idempotent)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.aclose()

    # --- connections ---------------------------------------------------------------------------------
    async def _send(self, request: h11.Request, body: bytes) -> tuple[_Connection, h11.Response]:
        while self._idle:
            conn = self._idle.pop()
            try:
                return conn, await self._exchange(conn, request, body)
            except _StaleConnection:
                await conn.aclose()  # closed by the server while idle: try the next one
            except BaseException:
                await conn.aclose()
                raise
        conn = await self._connect()
        try:
            return conn, await self._exchange(conn, request, body)
        except _StaleConnection as exc:
            await conn.aclose()
            raise ProviderUnavailable(f"{self.base_url}: the server closed the connection without answering") \
                from exc
        except BaseException:
            await conn.aclose()
            raise

    async def _connect(self) -> _Connection:
        origin = self._origin
        try:
            with trio.fail_after(self.connect_timeout_s):
                stream: trio.abc.Stream = await trio.open_tcp_stream(origin.host, origin.port)
                if origin.scheme == "https":
                    ssl_stream = trio.SSLStream(stream, self._ssl_context(), server_hostname=origin.host,
                                                https_compatible=True)
                    try:
                        await ssl_stream.do_handshake()
                    except BaseException:
                        await trio.aclose_forcefully(ssl_stream)
                        raise
                    stream = ssl_stream
        except trio.TooSlowError as exc:
            raise ProviderUnavailable(
                f"{self.base_url}: no connection within {self.connect_timeout_s:g} s") from exc
        except (OSError, trio.BrokenResourceError) as exc:
            raise ProviderUnavailable(f"{self.base_url}: cannot connect: {_reason(exc)}") from exc
        return _Connection(stream)

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
        return self._ssl

    def _keep(self, conn: _Connection) -> bool:
        """Put a connection whose exchange ended cleanly back into the idle pool, if it can take another."""
        if self._closed or len(self._idle) >= MAX_IDLE_CONNECTIONS:
            return False
        if conn.h11.our_state is not h11.DONE or conn.h11.their_state is not h11.DONE:
            return False
        conn.h11.start_next_cycle()
        conn.reused = True
        self._idle.append(conn)
        return True

    async def _exchange(self, conn: _Connection, request: h11.Request, body: bytes) -> h11.Response:
        data = conn.h11.send(request) + conn.h11.send(h11.Data(data=body)) + conn.h11.send(h11.EndOfMessage())
        try:
            with trio.fail_after(self.read_timeout_s):
                await conn.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            if conn.reused:
                raise _StaleConnection from exc
            raise ProviderUnavailable(f"{self.base_url}: sending the request failed: {_reason(exc)}") from exc
        except trio.TooSlowError as exc:
            raise ProviderUnavailable(f"{self.base_url}: sending the request timed out") from exc
        while True:
            try:
                event = await self._next_event(conn)
            except ProviderUnavailable as exc:
                if conn.reused:  # nothing of a response came back on a kept-alive connection
                    raise _StaleConnection from exc
                raise
            if isinstance(event, h11.InformationalResponse):
                continue  # 100 Continue and friends
            if isinstance(event, h11.Response):
                return event
            raise ProviderError(f"{self.base_url}: unexpected HTTP event {type(event).__name__}")

    async def _next_event(self, conn: _Connection) -> h11.Event:
        while True:
            try:
                event = conn.h11.next_event()
            except h11.RemoteProtocolError as exc:
                if conn.eof:  # h11's "peer closed connection without sending complete message body"
                    raise ProviderUnavailable(f"{self.base_url}: the server closed the connection before the "
                                              "response was complete") \
                        from exc
                raise ProviderError(f"{self.base_url}: malformed HTTP response: {exc}") from exc
            if event is h11.NEED_DATA:
                try:
                    with trio.fail_after(self.read_timeout_s):
                        data = await conn.stream.receive_some(READ_BYTES)
                except trio.TooSlowError as exc:
                    raise ProviderUnavailable(
                        f"{self.base_url}: no data for {self.read_timeout_s:g} s (read timeout)") from exc
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise ProviderUnavailable(f"{self.base_url}: connection lost: {_reason(exc)}") from exc
                conn.eof = not data
                conn.h11.receive_data(bytes(data))  # b"" tells h11 of the end: it decides if the body is whole
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise ProviderUnavailable(f"{self.base_url}: the server closed the connection without answering")
            if event is h11.PAUSED:  # only after a whole response; chunks() never reads that far
                raise ProviderError(f"{self.base_url}: read past the end of a response")
            assert isinstance(event, h11.Event)
            return event


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(exc) or type(exc).__name__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({cause})"
    return text
