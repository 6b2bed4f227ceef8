"""A child process in its own process group, supervised on trio: the one runner behind exec, snapshot capture
and hooks (like ``trio.run_process`` over ``trio.Process``, the policy differences are parameters).

Contract:
- ``GroupProcess.start`` spawns ``argv`` with ``start_new_session=True`` (the child's pid is its process group
  id and session id), stdin from /dev/null (or a pipe when ``stdin=True``), no TTY, stdout and stderr on two
  pipes (or one: ``merge_stderr``; or a PTY for unified exec: ``stdio``); a spawn failure raises ``ProcessStartError``.
- ``wait_exit`` waits for the group leader to exit WITHOUT reaping it (a pidfd), so the group id cannot be
  recycled while we may still signal the group: every ``signal_group`` happens before the reap.
- ``supervise`` runs the output pumps, enforces the timeout (SIGTERM to the group, SIGKILL after a grace),
  lets the pumps drain briefly after the leader exits, then SIGKILLs whatever is left of the group (a
  background grandchild included; not with ``kill_leftovers=False``, the hooks' semantics: a hook that exits
  normally may leave a background process) and reaps the leader. It does this in a ``finally`` under a shielded,
  bounded cancel scope, so cancelling the calling task (an interrupt, a session stop) kills the group too.
- ``run_command`` is the convenience over both: stdin bytes in, bounded output out, a timeout.
- ``signal_group`` is the tree's one ``os.killpg``.
- Exit statuses are reported shell-style: ``128 + signal`` for a process killed by a signal.

- With a watchdog installed (``_watchdog.py``), every group is registered with it from its spawn to its reap
  and every child carries the server's ``SESSION_SUPERVISOR_OWNER`` mark, so the group dies with the server even
  on ``kill -9``.

Not covered: a process that calls ``setsid()`` itself leaves the group and escapes the kill while the server
runs (the watchdog's mark sweep still gets it when the server ends); orphans of the group are reparented to
PID 1 (or a subreaper), which must reap them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import signal
import subprocess
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from actors.core._trio_host import collapse_cancelled
from actors.core._watchdog import forget_group, owner_environment, watch_group
from actors.errors import InvalidRequest, ProcessStartError

__all__ = [
    "MAX_OUTPUT_BYTES",
    "SPAWNER_THREAD_NAME",
    "GroupProcess",
    "ProcessOutcome",
    "exit_status",
    "run_command",
    "signal_group",
    "supervise",
]

logger = logging.getLogger(__name__)

#: After the leader exits, how long the pumps may take to reach EOF before the rest of the group is killed.
DRAIN_GRACE_S = 0.2
#: After the group is SIGKILLed, how long the pumps may still take to reach EOF (pipes held by an escaped
#: process never close, so this is bounded).
PIPE_CLOSE_WAIT_S = 1.0
#: Bound on reaping a SIGKILLed leader (it can only be slow in uninterruptible I/O).
REAP_TIMEOUT_S = 5.0
#: Shell convention: a process killed by signal N exits with status 128 + N.
SIGNAL_EXIT_BASE = 128

#: Most bytes ``run_command`` keeps of each of stdout and stderr (hook output is a verdict, not a data channel).
MAX_OUTPUT_BYTES = 1024 * 1024
#: Read size for ``run_command``'s output pipes.
READ_CHUNK_BYTES = 64 * 1024
#: Appended by ``run_command`` to output cut at its limit.
TRUNCATION_MARKER = "\n[output truncated]"

#: The thread that forks every child (process-wide, never exits; see ``_Spawner``).
SPAWNER_THREAD_NAME = "process-spawner"

Pump = Callable[[], Awaitable[None]]


class _Streams:
    """The child's pipes as trio streams (our own fds; ``Popen``'s file objects are closed at once)."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.stdin: trio.lowlevel.FdStream | None = None
        self.stdout: trio.lowlevel.FdStream | None = None
        self.stderr: trio.lowlevel.FdStream | None = None
        for name in ("stdin", "stdout", "stderr"):
            file = getattr(popen, name)
            if file is not None:
                setattr(self, name, trio.lowlevel.FdStream(os.dup(file.fileno())))
                file.close()

    def close_now(self) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    os.close(stream.fileno())

    async def aclose(self) -> None:
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                await stream.aclose()


class _Spawner:
    """One thread that forks every child, for the whole life of the process.

    A child that asks for ``PR_SET_PDEATHSIG`` (bubblewrap's ``--die-with-parent``) is signalled when the
    *thread* that forked it exits; trio's worker threads exit after 10 s idle, which killed sandboxed commands
    at random. This thread never exits.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=SPAWNER_THREAD_NAME, daemon=True)
                self._thread.start()
        self._jobs.put(job)

    def _loop(self) -> None:
        while True:
            self._jobs.get()()


_SPAWNER = _Spawner()


async def _spawn(start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    """Run ``start`` on the spawner thread; shielded, so a spawned child always reaches its owner."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    outcome: list[subprocess.Popen[bytes] | BaseException] = []

    def job() -> None:
        try:
            outcome.append(start())
        except BaseException as exc:  # handed to the trio task, raised there
            outcome.append(exc)
        token.run_sync_soon(done.set)

    _SPAWNER.submit(job)
    with trio.CancelScope(shield=True):
        await done.wait()
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to every process of the group ``pgid``; False when the group is gone (or not ours)."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # the id was reused by a process we do not own
        logger.warning("no permission to signal process group %d", pgid)
        return False
    return True


def exit_status(returncode: int) -> int:
    """A ``Popen.returncode`` as a shell exit status (``128 + signal`` for a signal death)."""
    return SIGNAL_EXIT_BASE - returncode if returncode < 0 else returncode


class GroupProcess:
    """One spawned child that leads its own process group; see the module docstring."""

    def __init__(self, popen: subprocess.Popen[bytes], streams: _Streams, pidfd: int) -> None:
        self._popen = popen
        self._streams = streams
        self._pidfd: int | None = pidfd
        self._exited = False
        self._closed = False
        #: The leader's raw ``returncode`` once reaped (negative: killed by that signal).
        self.returncode: int | None = None

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        cwd: Path | str,
        env: Mapping[str, str],
        stdin: bool = False,
        merge_stderr: bool = False,
        stdio: int | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> GroupProcess:
        """Spawn ``argv`` as the leader of a new session and process group (with a stdin pipe when ``stdin``);
        raises ``ProcessStartError`` naming the program and the cwd on failure.

        ``merge_stderr`` sends stderr into the stdout pipe (one stream, arrival order); ``stdio`` is a file
        descriptor (a PTY's slave end) used as stdin, stdout and stderr instead of /dev/null and pipes (then
        ``stdout``/``stderr`` are not available here); ``preexec_fn`` runs in the child after ``setsid()``
        (e.g. to make that PTY its controlling terminal).
        """
        try:
            popen = await _spawn(lambda: subprocess.Popen(
                list(argv),
                stdin=(subprocess.PIPE if stdin else subprocess.DEVNULL) if stdio is None else stdio,
                stdout=subprocess.PIPE if stdio is None else stdio,
                stderr=(subprocess.STDOUT if merge_stderr else subprocess.PIPE) if stdio is None else stdio,
                start_new_session=True,
                cwd=str(cwd),
                env={**env, **owner_environment()},
                close_fds=True,
                preexec_fn=preexec_fn,  # noqa: PLW1509 - only unified exec's TIOCSCTTY ioctl: no lock, no allocation
            ))
        except (OSError, subprocess.SubprocessError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ProcessStartError(f"could not start {argv[0]!r} in {str(cwd)!r}: {reason}") from exc
        except ValueError as exc:  # a NUL byte in the command line, the environment or the cwd: the caller's
            raise InvalidRequest(f"could not start {argv[0]!r}: {exc} (in the command, env or cwd)") from exc
        # No checkpoint between the spawn and the object that owns the cleanup.
        streams = _Streams(popen)
        try:
            pidfd = os.pidfd_open(popen.pid)
        except OSError:
            signal_group(popen.pid, signal.SIGKILL)
            streams.close_now()
            popen.wait()
            raise
        watch_group(popen.pid)
        return cls(popen, streams, pidfd)

    @property
    def pid(self) -> int:
        """The leader's pid, which is also the process group id."""
        return self._popen.pid

    @property
    def stdin(self) -> trio.abc.SendStream:
        """The write end of the child's stdin pipe (started with ``stdin=True``)."""
        assert self._streams.stdin is not None
        return self._streams.stdin

    @property
    def stdout(self) -> trio.abc.ReceiveStream:
        """The read end of the child's stdout pipe."""
        assert self._streams.stdout is not None
        return self._streams.stdout

    @property
    def stderr(self) -> trio.abc.ReceiveStream:
        """The read end of the child's stderr pipe."""
        assert self._streams.stderr is not None
        return self._streams.stderr

    def has_exited(self) -> bool:
        """True once the leader has exited (it may not be reaped yet); never blocks."""
        if not self._exited and self._pidfd is not None:
            readable, _, _ = select.select([self._pidfd], [], [], 0)
            self._exited = bool(readable)
        return self._exited

    async def wait_exit(self) -> None:
        """Wait until the leader exits, leaving it unreaped so the group id stays reserved."""
        if self._pidfd is not None and not self._exited:
            await trio.lowlevel.wait_readable(self._pidfd)
            self._exited = True

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to every process of the group; a group already gone is fine."""
        if self.returncode is not None:
            return  # reaped: the group id may belong to someone else now
        signal_group(self.pid, sig)

    async def terminate(self, grace_s: float) -> None:
        """SIGTERM the group, wait up to ``grace_s`` for the leader, then SIGKILL the group."""
        self.signal_group(signal.SIGTERM)
        with trio.move_on_after(grace_s):
            await self.wait_exit()
        self.signal_group(signal.SIGKILL)

    async def aclose(self, grace_s: float, *, kill_leftovers: bool = True) -> int:
        """Kill what is left of the group (only a live leader's with ``kill_leftovers=False``), close the pipes
        and reap the leader; returns its returncode."""
        if self._closed:
            assert self.returncode is not None
            return self.returncode
        with trio.CancelScope(shield=True):
            if not self.has_exited():
                await self.terminate(grace_s)
            elif kill_leftovers:
                self.signal_group(signal.SIGKILL)
            await self._streams.aclose()
            with trio.move_on_after(REAP_TIMEOUT_S) as reap_scope:
                await self.wait_exit()
                self.returncode = self._popen.wait()  # exited: returns at once
            if reap_scope.cancelled_caught:
                logger.error("process %d did not die after SIGKILL; leaving it unreaped", self.pid)
                self.returncode = -signal.SIGKILL
            else:
                forget_group(self.pid)
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None
            self._closed = True
        assert self.returncode is not None
        return self.returncode


async def supervise(
    proc: GroupProcess,
    pumps: Sequence[Pump],
    *,
    timeout_s: float | None,
    kill_grace_s: float,
    drain_grace_s: float = DRAIN_GRACE_S,
    kill_leftovers: bool = True,
) -> bool:
    """Run ``pumps`` (stream readers) until the process ends; returns True when it was killed at its timeout.

    Whatever happens (normal exit, timeout, cancellation of the caller), on return or on the way out the whole
    group has been killed and the leader reaped (``proc.returncode`` is set).
    """
    timed_out = False
    try:
        pumps_done = trio.Event()
        remaining = len(pumps)

        async def run_pump(pump: Pump) -> None:
            nonlocal remaining
            try:
                await pump()
            finally:
                remaining -= 1
                if remaining == 0:
                    pumps_done.set()

        if not pumps:
            pumps_done.set()
        with collapse_cancelled():
            async with trio.open_nursery() as nursery:
                for pump in pumps:
                    nursery.start_soon(run_pump, pump)
                deadline = trio.current_time() + timeout_s if timeout_s is not None else float("inf")
                with trio.move_on_at(deadline) as timeout_scope:
                    await proc.wait_exit()
                if timeout_scope.cancelled_caught:
                    timed_out = True
                    await proc.terminate(kill_grace_s)
                with trio.move_on_after(drain_grace_s):
                    await pumps_done.wait()
                if kill_leftovers or timed_out:
                    proc.signal_group(signal.SIGKILL)  # background leftovers of the group
                    with trio.move_on_after(PIPE_CLOSE_WAIT_S):
                        await pumps_done.wait()
                nursery.cancel_scope.cancel()
    finally:
        await proc.aclose(kill_grace_s, kill_leftovers=kill_leftovers or timed_out)
    return timed_out


@dataclass(frozen=True)
class ProcessOutcome:
    """How ``run_command`` ended: exit code (None after a timeout kill), decoded output, timeout flag."""

    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool


class _Capture:
    """Bytes read from one pipe, kept up to a limit (the rest is read and dropped, so the writer never blocks)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: list[bytes | bytearray] = []
        self._size = 0
        self.truncated = False

    def add(self, chunk: bytes | bytearray) -> None:
        room = self._limit - self._size
        if len(chunk) > room:
            chunk = chunk[: max(room, 0)]
            self.truncated = True
        if chunk:
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
    max_output_bytes: int = MAX_OUTPUT_BYTES,
    drain_grace_s: float = DRAIN_GRACE_S,
    kill_leftovers: bool = True,
) -> ProcessOutcome:
    """Run ``argv`` with ``stdin`` to completion or until ``timeout_s`` (then SIGKILL to the group at once)."""
    proc = await GroupProcess.start(argv, cwd=cwd, env=env, stdin=True)
    out, err = _Capture(max_output_bytes), _Capture(max_output_bytes)

    async def feed() -> None:
        try:
            await proc.stdin.send_all(stdin)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the command exited or closed stdin without reading its input: its choice
        finally:
            await proc.stdin.aclose()

    def drain(stream: trio.abc.ReceiveStream, capture: _Capture) -> Pump:
        async def pump() -> None:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while chunk := await stream.receive_some(READ_CHUNK_BYTES):
                    capture.add(chunk)
        return pump

    timed_out = await supervise(proc, [feed, drain(proc.stdout, out), drain(proc.stderr, err)],
                                timeout_s=timeout_s, kill_grace_s=0, drain_grace_s=drain_grace_s,
                                kill_leftovers=kill_leftovers)
    return ProcessOutcome(exit_code=None if timed_out else proc.returncode, stdout=out.text(), stderr=err.text(),
                          timed_out=timed_out)
