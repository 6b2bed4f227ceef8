"""Shared real parts for the proxy tests (no tests here): an h11 upstream on 127.0.0.1 (plain and TLS with a
trustme CA), a connector that only ever dials loopback and records every dial, a resolver that never touches
real DNS, a running proxy, and a raw HTTP client."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import h11
import trio
import trustme
from google.protobuf.message import Message

from actors.proxy import NetworkPolicy, ProxyServer

#: Bound on any single wait in these tests (loaded 2-core machine).
WAIT_S = 5.0
UPSTREAM_BODY = b"hello from upstream"


class DialRefused(ConnectionRefusedError):
    """Raised by the test connector for anything outside 127.0.0.0/8 and ::1."""


def is_test_loopback(ip: str) -> bool:
    """True only for 127.0.0.0/8 and ::1 (mapped forms do not count)."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv4Address):
        return addr in ipaddress.IPv4Network("127.0.0.0/8")
    return addr == ipaddress.IPv6Address("::1")


@dataclass
class RecordingConnector:
    """Dials loopback only; records every (ip, port) it was asked for."""

    dials: list[tuple[str, int]] = field(default_factory=list)

    async def __call__(self, ip: str, port: int) -> trio.abc.HalfCloseableStream:
        self.dials.append((ip, port))
        if not is_test_loopback(ip):
            raise DialRefused(f"test connector refuses {ip}:{port}")
        return await trio.open_tcp_stream(ip, port)


@dataclass
class StaticResolver:
    """Answers from a table (or a per-name callable); unknown names fail like NXDOMAIN. Never real DNS."""

    table: dict[str, list[str] | Callable[[], list[str]]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)

    async def __call__(self, host: str) -> list[str]:
        self.lookups.append(host)
        entry = self.table.get(host)
        if entry is None:
            raise OSError(f"test resolver: no such name {host!r}")
        return list(entry() if callable(entry) else entry)


@dataclass
class SeenRequest:
    """A request as the upstream received it."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class Upstream:
    """A tiny h11 HTTP/1.1 origin server on 127.0.0.1 (optionally TLS) that records what it receives.

    Paths: ``/hello`` (fixed body), ``/echo`` (body back), ``/chunked`` (chunked response), ``/close``
    (body delimited by close), ``/redirect`` (302 to a sentinel address), ``/big?n=BYTES``.
    """

    def __init__(self, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        self.ssl_context = ssl_context
        self.host = host
        self.port = 0
        self.requests: list[SeenRequest] = []
        self.connections = 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        if self.ssl_context is not None:
            listeners = [trio.SSLListener(lst, self.ssl_context) for lst in listeners]  # type: ignore[misc]
        async with trio.open_nursery() as nursery:
            task_status.started(self.port)
            await trio.serve_listeners(self._serve, listeners, handler_nursery=nursery)

    async def _serve(self, stream: trio.abc.Stream) -> None:
        self.connections += 1
        conn = h11.Connection(h11.SERVER)
        try:
            async with stream:
                while True:
                    request, body = await _read_request(conn, stream)
                    if request is None:
                        return
                    await self._respond(conn, stream, request, body)
                    if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                        return
                    conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
            return

    async def _respond(self, conn: h11.Connection, stream: trio.abc.Stream, req: Any, body: bytes) -> None:
        target = req.target.decode()
        headers = {k.decode().lower(): v.decode() for k, v in req.headers}
        self.requests.append(SeenRequest(req.method.decode(), target, headers, body))
        path = target.split("?")[0]
        if path == "/echo":
            await _send(conn, stream, 200, [("Content-Length", str(len(body)))], [body])
        elif path == "/chunked":
            await _send(conn, stream, 200, [("Transfer-Encoding", "chunked")], [b"part1-", b"part2-", b"end"])
        elif path == "/close":  # a body delimited by the end of the connection (h11 would chunk it)
            await stream.send_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + UPSTREAM_BODY)
            raise trio.ClosedResourceError
        elif path == "/redirect":
            redirect = [("Location", "http://127.0.0.2/next"), ("Content-Length", "0")]
            await _send(conn, stream, 302, redirect, [])
        elif path == "/big":
            size = int(target.split("n=")[1])
            await _send(conn, stream, 200, [("Content-Length", str(size))], [b"x" * size])
        else:
            await _send(conn, stream, 200, [("Content-Length", str(len(UPSTREAM_BODY)))], [UPSTREAM_BODY])


async def _read_request(conn: h11.Connection, stream: trio.abc.Stream) -> tuple[Any, bytes]:
    request = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = bytes(await stream.receive_some(65536))
            conn.receive_data(data)
            if not data and conn.their_state is h11.IDLE:
                return None, b""
            continue
        if isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return request, body
        elif isinstance(event, h11.ConnectionClosed):
            return None, b""


async def _send(
    conn: h11.Connection,
    stream: trio.abc.Stream,
    status: int,
    headers: list[tuple[str, str]],
    parts: list[bytes],
) -> None:
    await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
    for part in parts:
        await stream.send_all(conn.send(h11.Data(data=part)) or b"")
    await stream.send_all(conn.send(h11.EndOfMessage()) or b"")


def tls_contexts(*names: str) -> tuple[trustme.CA, ssl.SSLContext, ssl.SSLContext]:
    """A CA, a server context with a certificate for ``names``, and a client context trusting the CA."""
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return ca, server, client


@asynccontextmanager
async def running(server_or_upstream: ProxyServer | Upstream) -> AsyncIterator[int]:
    """Serve a proxy or an upstream in the background for the block; yields its port."""
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server_or_upstream.serve)
        try:
            yield port
        finally:
            nursery.cancel_scope.cancel()


@dataclass
class Events:
    """An ``emit`` sink that keeps what it gets."""

    items: list[Message] = field(default_factory=list)

    def __call__(self, event: Message) -> None:
        self.items.append(event)

    def of(self, kind: type[Message]) -> list[Any]:
        """Events of one message type, in order."""
        return [e for e in self.items if isinstance(e, kind)]


def make_proxy(policy: NetworkPolicy, **kwargs: Any) -> tuple[ProxyServer, Events, RecordingConnector]:
    """A proxy with a recording loopback-only connector and an events sink (resolver from kwargs or none)."""
    events = Events()
    connector = kwargs.pop("connector", None) or RecordingConnector()
    kwargs.setdefault("resolver", StaticResolver())
    return ProxyServer(policy, events, connector=connector, **kwargs), events, connector


@dataclass
class RawResponse:
    """What a raw client got back: status (0 if the connection closed without a response), headers, body."""

    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes


def parse_raw(data: bytes) -> RawResponse:
    """Split the first response out of ``data`` (body = the rest)."""
    if not data:
        return RawResponse(0, {}, b"", data)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(parts[1]), headers, body, data)


async def raw_exchange(port: int, data: bytes, *, half_close: bool = True) -> RawResponse:
    """Send ``data`` on a fresh connection to 127.0.0.1:port and read until the server closes."""
    with trio.fail_after(WAIT_S):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            try:
                await stream.send_all(data)
                if half_close:
                    await stream.send_eof()
            except trio.BrokenResourceError:
                pass
            received = bytearray()
            try:
                while chunk := await stream.receive_some(65536):
                    received += chunk
            except trio.BrokenResourceError:
                pass
    return parse_raw(bytes(received))


def get_request(url: str, extra: str = "") -> bytes:
    """An absolute-form GET with ``Connection: close``."""
    return f"GET {url} HTTP/1.1\r\nHost: ignored.invalid\r\n{extra}Connection: close\r\n\r\n".encode()
