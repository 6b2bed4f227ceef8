"""Bounded capture and rate-limited streaming of a command's output.

Contract:
- ``OutputCapture`` keeps the first ``head_bytes`` and the last ``tail_bytes`` of everything fed to it, counts
  every byte, and never holds more than ``head_bytes + tail_bytes`` (plus one read chunk while trimming),
  whatever the output size. When nothing was dropped, ``head + tail`` is the whole output.
- ``DeltaStreamer`` turns output into ``ExecOutputDelta`` events: the first chunk goes out at once, later
  ones at most once per ``interval_s`` per command, each delta at most ``max_chunk_bytes`` per stream (bytes
  over that are counted in ``skipped_bytes``, not streamed), and at most ``max_deltas`` per command. So
  100 MB of output costs a few dozen events, and memory stays bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio
from google.protobuf.message import Message

from protos.supervisor.v1 import shell_pb2

__all__ = ["DeltaStreamer", "OutputCapture", "render_output"]

logger = logging.getLogger(__name__)

Emit = Callable[[Message], None]


class OutputCapture:
    """Head and tail of a byte stream, with its exact total size."""

    def __init__(self, head_bytes: int, tail_bytes: int) -> None:
        if head_bytes < 0 or tail_bytes < 0:
            raise ValueError("head_bytes and tail_bytes must be >= 0")
        self._head_limit = head_bytes
        self._tail_limit = tail_bytes
        self._head = bytearray()
        self._tail = bytearray()
        self.total_bytes = 0

    def feed(self, data: bytes | bytearray) -> None:
        """Account for ``data`` (the next bytes of output)."""
        self.total_bytes += len(data)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if not data or self._tail_limit == 0:
            return
        if len(data) >= self._tail_limit:
            self._tail[:] = data[-self._tail_limit :]
            return
        self._tail += data
        excess = len(self._tail) - self._tail_limit
        if excess > 0:
            del self._tail[:excess]

    @property
    def head(self) -> bytes:
        """The first bytes of the output."""
        return bytes(self._head)

    @property
    def tail(self) -> bytes:
        """The last bytes after the head (the whole rest when not truncated)."""
        return bytes(self._tail)

    @property
    def truncated(self) -> bool:
        """True when bytes between head and tail were dropped."""
        return self.total_bytes > len(self._head) + len(self._tail)

    @property
    def omitted_bytes(self) -> int:
        """How many bytes between head and tail were dropped."""
        return self.total_bytes - len(self._head) - len(self._tail)


def render_output(head: bytes, tail: bytes, omitted_bytes: int) -> str:
    """Head, an omission marker line (when something was dropped) and tail, as text for a model or client."""
    text_head = head.decode("utf-8", errors="replace")
    text_tail = tail.decode("utf-8", errors="replace")
    if omitted_bytes <= 0:
        return (head + tail).decode("utf-8", errors="replace")
    return f"{text_head}\n[... {omitted_bytes} bytes of output omitted ...]\n{text_tail}"


class _Pending:
    """Bytes of one stream waiting for the next delta."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.skipped = 0


class DeltaStreamer:
    """Coalesces output chunks into rate-limited ``ExecOutputDelta`` events for one command."""

    def __init__(
        self,
        call_id: str,
        emit: Emit,
        *,
        interval_s: float,
        max_chunk_bytes: int,
        max_deltas: int,
    ) -> None:
        self._call_id = call_id
        self._emit = emit
        self._interval_s = interval_s
        self._max_chunk = max_chunk_bytes
        self._max_deltas = max_deltas
        self._pending: dict[int, _Pending] = {}
        self._wake = trio.Event()
        #: Number of deltas emitted so far.
        self.deltas_emitted = 0

    def feed(self, stream: int, data: bytes | bytearray) -> None:
        """Queue ``data`` from ``stream`` (an ``ExecStream`` value) for the next delta."""
        pending = self._pending.setdefault(stream, _Pending())
        room = self._max_chunk - len(pending.data)
        if room > 0:
            pending.data += data[:room]
        pending.skipped += max(0, len(data) - max(room, 0))
        self._wake.set()

    def flush(self) -> None:
        """Emit what is pending now (one delta per stream), within the per-command cap."""
        for stream, pending in sorted(self._pending.items()):
            if not pending.data:
                continue
            if self.deltas_emitted >= self._max_deltas:
                break
            self._emit(
                shell_pb2.ExecOutputDelta(
                    call_id=self._call_id,
                    chunk=bytes(pending.data),
                    stream=stream,  # type: ignore[arg-type]
                    skipped_bytes=pending.skipped,
                )
            )
            self.deltas_emitted += 1
        self._pending.clear()

    async def run(self) -> None:
        """Flush whenever output is pending, at most once per interval; runs until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            self.flush()
            await trio.sleep(self._interval_s)  # the rate limit itself, not a wait for something
