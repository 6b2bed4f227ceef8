"""The session's proxy namespace: a network namespace where only the session's proxy answers.

Network mode ``limited`` means a command reaches the session's proxy and nothing else, loopback included. A
fresh network namespace has only its own loopback, so it reaches nothing; ``ProxyNamespace`` creates one per
session with ``lo`` up and a listening socket on the proxy's own address (``127.0.0.1:PORT``) inside it, and
``serve()`` (a trio task) forwards every connection accepted there to the real proxy in the host's
namespace. A command's ``HTTP_PROXY`` therefore works unchanged, a raw socket to any other address or port
fails (no route, or nothing listening), and the proxy still decides which hosts are allowed.

How: a short-lived thread calls ``unshare(CLONE_NEWNET)`` (it moves only that thread), brings ``lo`` up, opens
the listening socket and a descriptor of the namespace, and exits; the socket and the descriptor keep the
namespace alive, and commands join it with ``nsenter --net=/proc/<our pid>/fd/<fd>``. This needs
``CAP_SYS_ADMIN`` (the supervisor runs as root, as in CI); without it ``create`` raises ``SandboxUnavailable``.
``close()`` closes both, and the kernel frees the namespace once the last command in it ended.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import socket
import struct
import threading
from collections.abc import Mapping
from urllib.parse import urlsplit

import trio

from actors.errors import SandboxUnavailable

__all__ = ["ProxyNamespace", "proxy_address"]

logger = logging.getLogger(__name__)

_CLONE_NEWNET = 0x40000000
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
_IFF_RUNNING = 0x40
_IFREQ_SIZE = 40
#: Bound on the namespace set-up thread (a few syscalls; only a wedged kernel is slower).
SETUP_TIMEOUT_S = 5.0
#: Connections forwarded at once; more wait in the listen backlog (a runaway command must not exhaust fds).
MAX_FORWARDED = 256
#: Listen backlog of the socket inside the namespace.
LISTEN_BACKLOG = 128
#: Size of one read while forwarding.
CHUNK_BYTES = 64 * 1024
_PROXY_KEYS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def proxy_address(env: Mapping[str, str]) -> tuple[str, int] | None:
    """The proxy's ``(host, port)`` named by the proxy variables of ``env`` (None when there are none)."""
    for key in _PROXY_KEYS:
        raw = env.get(key)
        if raw:
            parts = urlsplit(raw if "://" in raw else f"http://{raw}")
            if parts.hostname and parts.port:
                return parts.hostname, parts.port
    return None


def _setup(host: str, port: int) -> tuple[int, socket.socket]:
    """In a new network namespace (this thread only): lo up, a listener on ``host:port``, the namespace's fd."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"unshare(CLONE_NEWNET): {os.strerror(code)}")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ctl:
        request = struct.pack("16sH", b"lo", _IFF_UP | _IFF_LOOPBACK | _IFF_RUNNING).ljust(_IFREQ_SIZE, b"\0")
        fcntl.ioctl(ctl, _SIOCSIFFLAGS, request)
    ns_fd = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.bind((host, port))
            listener.listen(LISTEN_BACKLOG)
        except BaseException:
            listener.close()
            raise
    except BaseException:
        os.close(ns_fd)
        raise
    return ns_fd, listener


class ProxyNamespace:
    """A network namespace in which ``host:port`` is a forwarder to the session's proxy; see the module doc."""

    def __init__(self, ns_fd: int, listener: socket.socket, host: str, port: int) -> None:
        self._ns_fd: int | None = ns_fd
        self._listener: socket.socket | None = listener
        self.host = host
        self.port = port
        #: Connections forwarded so far (for tests and diagnostics).
        self.forwarded = 0

    @classmethod
    def create(cls, host: str, port: int) -> ProxyNamespace:
        """Set up the namespace (blocking, a few milliseconds); raises ``SandboxUnavailable`` when it cannot."""
        box: dict[str, BaseException] = {}
        made: list[tuple[int, socket.socket]] = []

        def work() -> None:
            try:
                made.append(_setup(host, port))
            except BaseException as exc:  # handed back to the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=work, name="sandbox-netns", daemon=True)
        thread.start()
        thread.join(SETUP_TIMEOUT_S)
        if thread.is_alive() or not made:
            error = box.get("error")
            hint = " (needs CAP_SYS_ADMIN: run the supervisor as root)" if getattr(error, "errno", None) in (
                errno.EPERM, errno.EACCES) else ""
            raise SandboxUnavailable(
                f"network mode limited: cannot create the proxy network namespace: {error or 'timed out'}{hint}"
            ) from error
        ns_fd, listener = made[0]
        return cls(ns_fd, listener, host, port)

    @property
    def path(self) -> str:
        """A path that names the namespace, for ``nsenter --net=``."""
        if self._ns_fd is None:
            raise RuntimeError("the proxy namespace is closed")
        return f"/proc/{os.getpid()}/fd/{self._ns_fd}"

    async def serve(self) -> None:
        """Forward connections accepted inside the namespace to the proxy, until cancelled."""
        if self._listener is None:
            raise RuntimeError("the proxy namespace is closed")
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self._listener.dup()))
        slots = trio.Semaphore(MAX_FORWARDED)
        try:
            async with trio.open_nursery() as nursery:
                while True:
                    await slots.acquire()
                    try:
                        stream = await listener.accept()
                    except BaseException:
                        slots.release()
                        raise
                    nursery.start_soon(self._forward, stream, slots)
        finally:
            with trio.CancelScope(shield=True):
                await listener.aclose()

    async def _forward(self, client: trio.SocketStream, slots: trio.Semaphore) -> None:
        self.forwarded += 1
        try:
            async with client:
                try:
                    upstream = await trio.open_tcp_stream(self.host, self.port)
                except OSError as exc:
                    logger.warning("proxy namespace: cannot reach the proxy at %s:%d: %s", self.host, self.port, exc)
                    return
                async with upstream, trio.open_nursery() as nursery:
                    nursery.start_soon(_pump, client, upstream)
                    nursery.start_soon(_pump, upstream, client)
        finally:
            slots.release()

    def close(self) -> None:
        """Close the listener and the namespace descriptor (idempotent)."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._ns_fd is not None:
            os.close(self._ns_fd)
            self._ns_fd = None


async def _pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
    """Copy ``source`` to ``sink`` until EOF, then half-close ``sink``; a reset ends the copy quietly."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        while chunk := await source.receive_some(CHUNK_BYTES):
            await sink.send_all(chunk)
        await sink.send_eof()
