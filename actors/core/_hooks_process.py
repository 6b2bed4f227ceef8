"""Run one hook command as a child process on trio, bounded in time and output.

Contract:
- The command runs in a new session (its own process group) with the given argv, cwd and environment;
  ``stdin`` is written to it and then closed; stdout and stderr are read concurrently, each capped at
  ``MAX_OUTPUT_BYTES`` (the rest is drained and dropped, so a chatty hook never blocks on a full pipe).
- On timeout, or when the caller's scope is cancelled, the whole process group gets SIGKILL (children and
  background grandchildren too) and the process is reaped before ``run_command`` returns or re-raises.
- A hook that exits normally is not killed: a background process it started may live on. Output still
  arriving after the exit is read for at most ``OUTPUT_DRAIN_GRACE_S`` (a background child holding the pipe
  open cannot hold the hook run open).
- Every pipe is closed before return; a spawn failure raises ``HookSpawnError``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import trio

__all__ = ["HookSpawnError", "ProcessOutcome", "run_command"]

logger = logging.getLogger(__name__)

#: Most bytes kept from each of stdout and stderr; hook output is a verdict, not a data channel.
MAX_OUTPUT_BYTES = 1024 * 1024
#: Read size for the output pipes.
READ_CHUNK_BYTES = 64 * 1024
#: How long to keep reading output after the hook exited (a background child may hold the pipe open).
OUTPUT_DRAIN_GRACE_S = 0.5
#: Bound on reaping a process after SIGKILL; the kernel normally takes milliseconds.
KILL_REAP_TIMEOUT_S = 5.0
#: Appended to output that was cut at ``MAX_OUTPUT_BYTES``.
TRUNCATION_MARKER = "\n[output truncated]"


class HookSpawnError(Exception):
    """Raised when the hook's shell could not be started (missing shell, bad cwd, ...)."""


@dataclass(frozen=True)
class ProcessOutcome:
    """How the command ended: exit code (None after a timeout kill), decoded output, timeout flag."""

    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool


class _Capture:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: list[bytes | bytearray] = []
        self._size = 0
        self.truncated = False
        self.done = trio.Event()

    def add(self, chunk: bytes | bytearray) -> None:
        room = self._limit - self._size
        if room <= 0:
            self.truncated = True
            return
        if len(chunk) > room:
            chunk = chunk[:room]
            self.truncated = True
        self._chunks.append(chunk)
        self._size += len(chunk)

    def text(self) -> str:
        text = b"".join(self._chunks).decode("utf-8", errors="replace")
        return text + TRUNCATION_MARKER if self.truncated else text


async def run_command(
    argv: Sequence[str],
    *,
    stdin: bytes,
    cwd: str,
    env: Mapping[str, str],
    timeout_s: float,
) -> ProcessOutcome:
    """Run ``argv`` to completion or until ``timeout_s`` (see the module docstring)."""
    try:
        process = await trio.lowlevel.open_process(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    except OSError as exc:
        raise HookSpawnError(f"could not start hook shell {argv[0]!r} in {cwd!r}: {exc}") from exc
    out = _Capture(MAX_OUTPUT_BYTES)
    err = _Capture(MAX_OUTPUT_BYTES)
    exited = False
    try:
        with trio.move_on_after(timeout_s) as deadline:
            async with trio.open_nursery() as nursery:
                assert process.stdin is not None and process.stdout is not None and process.stderr is not None
                nursery.start_soon(_feed, process.stdin, stdin)
                nursery.start_soon(_drain, process.stdout, out)
                nursery.start_soon(_drain, process.stderr, err)
                await process.wait()
                exited = True
                with trio.move_on_after(OUTPUT_DRAIN_GRACE_S):
                    await out.done.wait()
                    await err.done.wait()
                nursery.cancel_scope.cancel()
        timed_out = deadline.cancelled_caught and not exited
    finally:
        with trio.CancelScope(shield=True):
            if not exited:
                _kill_group(process.pid)
                with trio.move_on_after(KILL_REAP_TIMEOUT_S):
                    await process.wait()
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    await stream.aclose()
    return ProcessOutcome(
        exit_code=None if timed_out else process.returncode,
        stdout=out.text(),
        stderr=err.text(),
        timed_out=timed_out,
    )


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:  # the group leader's id was reused by a process we do not own
        logger.warning("could not kill hook process group %d", pgid)


async def _feed(stream: trio.abc.SendStream, data: bytes) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the hook exited or closed stdin without reading its input; that is its choice
    finally:
        await stream.aclose()


async def _drain(stream: trio.abc.ReceiveStream, capture: _Capture) -> None:
    try:
        while chunk := await stream.receive_some(READ_CHUNK_BYTES):
            capture.add(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        capture.done.set()
