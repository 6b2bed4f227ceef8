"""CONNECT tunnels: splice and copy relays, half-close in both directions, pipelined early bytes, byte
accounting, idle timeout, and an IPv6 loopback upstream."""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Awaitable, Callable

import pytest
import trio

from actors.proxy import _tunnel as _proxy_tunnel
from actors.proxy._policy import NetworkPolicy
from actors.proxy._tunnel import SPLICE_AVAILABLE
from protos.supervisor.v1 import network_pb2
from tests.helpers.proxy import WAIT_S, RecordingConnector, make_proxy, running

PAYLOAD_BYTES = 3 * 1024 * 1024 + 17  # several pipe-fulls, not a multiple of any chunk size
#: Idle timeout for the idle test.
SHORT_IDLE_S = 0.3


class WrappedStream(trio.abc.HalfCloseableStream):
    """A stream that is not a ``trio.SocketStream`` (forces the copy relay)."""

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return bytes(await self.inner.receive_some(max_bytes))

    async def aclose(self) -> None:
        await self.inner.aclose()


async def _echo_until_eof(stream: trio.SocketStream) -> None:
    """Read everything, then answer with its length and the bytes reversed, then close."""
    async with stream:
        received = bytearray()
        while chunk := await stream.receive_some(65536):
            received += chunk
        await stream.send_all(f"{len(received)}\n".encode() + bytes(reversed(received)))


async def _serve(
    handler: Callable[[trio.SocketStream], Awaitable[None]], host: str, nursery: trio.Nursery
) -> int:
    listeners = await nursery.start(functools.partial(trio.serve_tcp, handler, 0, host=host))
    return int(listeners[0].socket.getsockname()[1])


async def _read_head(stream: trio.SocketStream) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        assert chunk, "proxy closed before answering CONNECT"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


@pytest.mark.parametrize("relay", ["splice", "copy", "no-pipe-budget"])
async def test_tunnel_relays_half_closes_and_counts_bytes(relay: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if relay == "splice" and not SPLICE_AVAILABLE:
        pytest.skip("os.splice is Linux-only")
    recording = RecordingConnector()
    splices = 0
    real_splice = getattr(os, "splice", None)

    def counting_splice(*args: int, **kwargs: int) -> int:
        nonlocal splices
        splices += 1
        assert real_splice is not None
        return int(real_splice(*args, **kwargs))

    if real_splice is not None:
        monkeypatch.setattr(os, "splice", counting_splice)
    if relay == "no-pipe-budget":  # no pipe of useful size can be had: the tunnel copies instead
        monkeypatch.setattr(_proxy_tunnel, "MIN_PIPE_BYTES", 1 << 40)

    async def connector(ip: str, port: int) -> trio.abc.HalfCloseableStream:
        stream = await recording(ip, port)
        assert isinstance(stream, trio.SocketStream)
        return WrappedStream(stream) if relay == "copy" else stream

    payload = os.urandom(PAYLOAD_BYTES)
    async with trio.open_nursery() as nursery:
        up_port = await _serve(_echo_until_eof, "127.0.0.1", nursery)
        server, events, _ = make_proxy(NetworkPolicy(allowed_domains=(f"127.0.0.1:{up_port}",)), connector=connector)
        async with running(server) as port:
            with trio.fail_after(WAIT_S):
                client = await trio.open_tcp_stream("127.0.0.1", port)
                async with client:
                    early = payload[:1000]  # pipelined right behind the CONNECT head
                    await client.send_all(f"CONNECT 127.0.0.1:{up_port} HTTP/1.1\r\n\r\n".encode() + early)
                    head, rest = await _read_head(client)
                    assert head.startswith(b"HTTP/1.1 200")
                    await client.send_all(payload[1000:])
                    await client.send_eof()
                    received = bytearray(rest)
                    while chunk := await client.receive_some(65536):
                        received += chunk
        nursery.cancel_scope.cancel()
    length, _, body = bytes(received).partition(b"\n")
    assert int(length) == PAYLOAD_BYTES and body == payload[::-1]
    audit = events.of(network_pb2.NetworkConnectionAudit)[0]
    assert audit.bytes_up == PAYLOAD_BYTES
    assert audit.bytes_down == len(received)
    assert (splices > 0) == (relay == "splice")
    assert audit.error == "" and audit.remote_ip == "127.0.0.1"


async def test_tunnel_idle_timeout_closes_both_sides() -> None:
    upstream_closed = trio.Event()

    async def silent(stream: trio.SocketStream) -> None:
        async with stream:
            assert await stream.receive_some(1) == b""
        upstream_closed.set()

    async with trio.open_nursery() as nursery:
        up_port = await _serve(silent, "127.0.0.1", nursery)
        server, events, _ = make_proxy(
            NetworkPolicy(allowed_domains=(f"127.0.0.1:{up_port}",)), idle_timeout_s=SHORT_IDLE_S
        )
        async with running(server) as port:
            with trio.fail_after(WAIT_S):
                client = await trio.open_tcp_stream("127.0.0.1", port)
                async with client:
                    await client.send_all(f"CONNECT 127.0.0.1:{up_port} HTTP/1.1\r\n\r\n".encode())
                    head, _ = await _read_head(client)
                    assert head.startswith(b"HTTP/1.1 200")
                    start = trio.current_time()
                    assert await client.receive_some(65536) == b""
                    assert trio.current_time() - start >= SHORT_IDLE_S * 0.8
                await upstream_closed.wait()
        nursery.cancel_scope.cancel()
    assert events.of(network_pb2.NetworkConnectionAudit)[0].error == "idle-timeout"


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
async def test_ipv6_loopback_upstream_allowed_explicitly() -> None:
    async with trio.open_nursery() as nursery:
        up_port = await _serve(_echo_until_eof, "::1", nursery)
        server, _, connector = make_proxy(NetworkPolicy(allowed_domains=(f"[::1]:{up_port}",)))
        async with running(server) as port:
            with trio.fail_after(WAIT_S):
                client = await trio.open_tcp_stream("127.0.0.1", port)
                async with client:
                    await client.send_all(f"CONNECT [::1]:{up_port} HTTP/1.1\r\n\r\nabc".encode())
                    await client.send_eof()
                    head, rest = await _read_head(client)
                    received = bytearray(rest)
                    while chunk := await client.receive_some(65536):
                        received += chunk
        nursery.cancel_scope.cancel()
    assert head.startswith(b"HTTP/1.1 200") and bytes(received) == b"3\ncba"
    assert connector.dials == [("::1", up_port)]
