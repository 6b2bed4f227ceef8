"""Byte relays for CONNECT tunnels: zero-copy ``splice(2)`` between sockets, or a plain trio copy loop.

Contract:
- ``relay_tunnel(client, client_stream, upstream, progress_up, progress_down)`` copies bytes both ways until
  both directions reached end of stream (each end of stream is passed on as a half-close), or one side
  breaks (then both stop); ``progress_*(n)`` is called after every ``n`` bytes moved. It returns normally in
  every case except cancellation.
- Bytes the client sent after its CONNECT head (already in ``client``'s buffer) go upstream first.
- When both ends are plain ``trio.SocketStream``s on Linux, each direction moves data socket -> pipe ->
  socket with ``os.splice`` (the bytes never enter Python); otherwise, or when no pipe of useful size can be
  had, it copies through Python. Each direction owns one pipe, closed when the tunnel ends; nothing
  outlives the tunnel.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from collections.abc import Callable

import trio

from actors.proxy._http import READ_CHUNK_BYTES, BufferedReader

__all__ = ["SPLICE_AVAILABLE", "relay_tunnel"]

logger = logging.getLogger(__name__)

#: True where ``os.splice`` exists (Linux, Python >= 3.10).
SPLICE_AVAILABLE = hasattr(os, "splice")
#: Pipe capacities tried for a spliced direction, largest first. Bigger means fewer calls (1 MiB costs about
#: 30% less CPU than 256 KiB here), but an unprivileged user's pipes share ``pipe-user-pages-soft`` (64 MiB
#: by default), so once that budget is spent the kernel refuses the big size and we step down.
SPLICE_PIPE_SIZES = (1024 * 1024, 256 * 1024)
#: A pipe smaller than this (the user's pipe budget is spent) is not worth it: copy through Python instead.
MIN_PIPE_BYTES = 64 * 1024
#: A direction that never has to wait still yields to the loop after this many bytes.
YIELD_EVERY_BYTES = 4 * 1024 * 1024
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
_F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)
_BROKEN = (trio.BrokenResourceError, trio.ClosedResourceError)
#: errno values that mean "the peer went away" on a spliced socket.
_PEER_GONE = {errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ESHUTDOWN}


Progress = Callable[[int], None]


async def relay_tunnel(
    client: BufferedReader,
    client_stream: trio.abc.HalfCloseableStream,
    upstream: trio.abc.HalfCloseableStream,
    progress_up: Progress,
    progress_down: Progress,
) -> None:
    """Copy bytes both ways until both sides ended or one broke (see the module docstring)."""
    early = await client.receive_some(client.buffered) if client.buffered else b""
    try:
        if early:
            await upstream.send_all(early)
            progress_up(len(early))
    except _BROKEN:
        return
    spliced = (
        SPLICE_AVAILABLE
        and isinstance(client_stream, trio.SocketStream)
        and isinstance(upstream, trio.SocketStream)
    )
    pipes = [_open_pipe(), _open_pipe()] if spliced else [None, None]
    try:
        async with trio.open_nursery() as nursery:
            tunnel = nursery.cancel_scope
            up_pipe, down_pipe = pipes
            if up_pipe is not None and down_pipe is not None:
                assert isinstance(client_stream, trio.SocketStream) and isinstance(upstream, trio.SocketStream)
                nursery.start_soon(_splice_pump, client_stream, upstream, up_pipe, progress_up, tunnel)
                nursery.start_soon(_splice_pump, upstream, client_stream, down_pipe, progress_down, tunnel)
            else:
                nursery.start_soon(_copy_pump, client, upstream, progress_up, tunnel)
                nursery.start_soon(_copy_pump, BufferedReader(upstream), client_stream, progress_down, tunnel)
    finally:
        for pipe in pipes:
            if pipe is not None:
                os.close(pipe[0])
                os.close(pipe[1])


async def _copy_pump(
    source: BufferedReader,
    sink: trio.abc.HalfCloseableStream,
    progress: Progress,
    tunnel: trio.CancelScope,
) -> None:
    try:
        while True:
            data = await source.receive_some(READ_CHUNK_BYTES)
            if not data:
                await sink.send_eof()
                return
            await sink.send_all(data)
            progress(len(data))
    except _BROKEN:
        tunnel.cancel()


Pipe = tuple[int, int, int]  # read fd, write fd, capacity


def _open_pipe() -> Pipe | None:
    """A non-blocking pipe of useful capacity, or None (out of descriptors or of pipe budget)."""
    try:
        read_fd, write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    for size in SPLICE_PIPE_SIZES:
        try:
            fcntl.fcntl(write_fd, _F_SETPIPE_SZ, size)
            break
        except OSError:
            continue  # over the user's pipe budget: try smaller, else keep the default size
    capacity = fcntl.fcntl(write_fd, _F_GETPIPE_SZ)
    if capacity < MIN_PIPE_BYTES:
        os.close(read_fd)
        os.close(write_fd)
        return None
    return read_fd, write_fd, capacity


async def _splice_pump(
    source: trio.SocketStream,
    sink: trio.SocketStream,
    pipe: Pipe,
    progress: Progress,
    tunnel: trio.CancelScope,
) -> None:
    flags = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
    src, dst = source.socket.fileno(), sink.socket.fileno()
    read_fd, write_fd, capacity = pipe
    unyielded = 0
    try:
        while True:
            # optimistic: try first, wait only when the kernel has nothing (saves an epoll round trip)
            try:
                moved = os.splice(src, write_fd, capacity, flags=flags)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(src)
                continue
            if moved == 0:
                sink.socket.shutdown(trio.socket.SHUT_WR)
                return
            pending = moved
            while pending:
                try:
                    pending -= os.splice(read_fd, dst, pending, flags=flags)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(dst)
            progress(moved)
            unyielded += moved
            if unyielded >= YIELD_EVERY_BYTES:  # never starve the loop while data keeps coming
                unyielded = 0
                await trio.lowlevel.checkpoint()
    except OSError as exc:
        if exc.errno not in _PEER_GONE:
            logger.info("tunnel relay failed: %s", exc)
        tunnel.cancel()
