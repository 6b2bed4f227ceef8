"""Command execution through the session's shell snapshot: the service behind the Exec tool and RPC.

Contract:
- ``CommandRunner.run(command, cwd, ...)`` (async, on the shared trio loop) runs ``command`` with the
  snapshot's shell (else the configured shell, ``$SHELL``, /bin/sh) via ``-c``: the snapshot is sourced first
  and the command is run with ``eval``, so aliases from the snapshot expand in it. ``extra_env`` (e.g. the
  network proxy's variables) is in the process environment and is restored after the snapshot is sourced,
  so a snapshot export cannot override it; its values never appear in argv.
- stdin is /dev/null; the command leads its own process group (``start_new_session``).
- Output: stdout and stderr are read from two pipes; their combined output (in arrival order) keeps the
  first ``head_bytes`` and last ``tail_bytes`` with the exact total and a ``truncated`` flag; live output is
  streamed as rate-limited ``ExecOutputDelta`` events (see ``_exec_output``). Memory stays bounded by the
  limits.
- Ending: on timeout the whole group gets SIGTERM, then SIGKILL after ``kill_grace_s``; on cancellation of the
  calling task (an interrupt, a session stop) the same happens before the cancellation propagates; after a
  normal exit, whatever is left of the group (a background grandchild) is killed too. No process of the group
  outlives ``run`` (except one that left the group with ``setsid``).
- Events: ``ExecBegin``, then deltas, then exactly one ``ExecEnd`` (also when interrupted or when the process
  could not start, then with exit code -1 and ``ProcessStartError`` raised). ``run`` returns an ``ExecResult``.
- Sandbox: with a ``sandbox`` (any object with ``wrap(argv, cwd, env) -> argv``; the session gives its
  ``actors.sandbox.Sandbox``), every command's argv goes through it before the spawn, unless the caller passes
  ``sandboxed=False`` (an approved escalation). A ``wrap`` that raises is a start failure: the command never
  runs unsandboxed by accident.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio
from google.protobuf.message import Message

from actors.core import GroupProcess, collapse_cancelled, exit_status, supervise
from actors.errors import SupervisorError
from actors.shell._capture import Snapshot, default_shell
from actors.shell._output import DeltaStreamer, OutputCapture, render_output
from actors.shell._scripts import exec_argv
from protos.supervisor.v1 import shell_pb2

__all__ = ["DEFAULT_EXEC_TIMEOUT_S", "CommandRunner", "CommandSandbox", "ExecLimits", "ExecResult"]

logger = logging.getLogger(__name__)

Emit = Callable[[Message], None]

#: Default bound on one command's run time (Codex's default for the shell tool).
DEFAULT_EXEC_TIMEOUT_S = 10.0
#: Exit code reported when the process could not be started.
START_FAILED_EXIT_CODE = -1


class CommandSandbox(Protocol):
    """What a runner needs of a sandbox: the argv that runs ``argv`` inside it."""

    def wrap(self, argv: Sequence[str], cwd: Path | str, env: Mapping[str, str]) -> list[str]:
        """``argv`` wrapped to run in the sandbox (raises when the sandbox cannot be built)."""
        ...


@dataclass(frozen=True)
class ExecLimits:
    """Output bounds, streaming rate and kill timing for command runs."""

    #: Bytes kept from the start of the combined output.
    head_bytes: int = 64 * 1024
    #: Bytes kept from the end of the combined output.
    tail_bytes: int = 64 * 1024
    #: Minimum time between two output deltas of one command.
    delta_interval_s: float = 0.05
    #: Most bytes of one stream in one delta.
    delta_max_bytes: int = 8 * 1024
    #: Most deltas for one command; output after that is only in the result.
    max_deltas: int = 10_000
    #: Time between SIGTERM and SIGKILL when a command is stopped.
    kill_grace_s: float = 2.0
    #: Size of one read from an output pipe.
    read_chunk_bytes: int = 64 * 1024


@dataclass(frozen=True)
class ExecResult:
    """How one command run ended and its bounded output."""

    call_id: str
    exit_code: int
    duration_ms: int
    timed_out: bool
    interrupted: bool
    truncated: bool
    total_bytes: int
    head: bytes
    tail: bytes

    @property
    def output(self) -> str:
        """Head, an omission marker when truncated, and tail, as text."""
        return render_output(self.head, self.tail, self.total_bytes - len(self.head) - len(self.tail))

    def to_end_event(self) -> shell_pb2.ExecEnd:
        """The ``ExecEnd`` event for this result."""
        return shell_pb2.ExecEnd(
            call_id=self.call_id,
            exit_code=self.exit_code,
            duration_ms=self.duration_ms,
            timed_out=self.timed_out,
            interrupted=self.interrupted,
            truncated=self.truncated,
            total_bytes=self.total_bytes,
            head=self.head,
            tail=self.tail,
        )

    def to_response(self) -> shell_pb2.ExecResponse:
        """The ``ExecResponse`` for the Exec RPC."""
        return shell_pb2.ExecResponse(
            call_id=self.call_id,
            exit_code=self.exit_code,
            duration_ms=self.duration_ms,
            output=self.output,
            truncated=self.truncated,
            total_bytes=self.total_bytes,
            timed_out=self.timed_out,
        )


class CommandRunner:
    """Runs commands for one session; see the module docstring."""

    def __init__(
        self,
        *,
        emit: Emit,
        snapshot: Snapshot | None = None,
        shell: str | None = None,
        env: Mapping[str, str] | None = None,
        limits: ExecLimits | None = None,
        sandbox: CommandSandbox | None = None,
    ) -> None:
        self._emit = emit
        #: Wraps every command's argv (None: commands run as they are).
        self.sandbox = sandbox
        self._env = dict(os.environ if env is None else env)
        self._shell = default_shell(self._env, shell)
        self.snapshot = snapshot
        self.limits = limits or ExecLimits()

    def set_snapshot(self, snapshot: Snapshot | None) -> None:
        """Use ``snapshot`` for later commands (e.g. once the capture finished)."""
        self.snapshot = snapshot

    @property
    def shell(self) -> str:
        """The shell commands run with (the snapshot's, when there is one)."""
        return self.snapshot.shell if self.snapshot is not None else self._shell

    def environment(self, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment a command is started with: the runner's, then ``extra_env`` over it."""
        return {**self._env, **(extra_env or {})}

    def argv_for(self, command: str, extra_env: Mapping[str, str] | None = None) -> list[str]:
        """The argv that runs ``command`` (through the snapshot, if any)."""
        if self.snapshot is None:
            return exec_argv(self._shell, None, command)
        return exec_argv(self.snapshot.shell, self.snapshot.path, command, (extra_env or {}).keys())

    async def run(
        self,
        command: str,
        cwd: Path | str,
        *,
        timeout_s: float | None = DEFAULT_EXEC_TIMEOUT_S,
        extra_env: Mapping[str, str] | None = None,
        call_id: str | None = None,
        sandboxed: bool = True,
    ) -> ExecResult:
        """Run ``command`` in ``cwd``; returns its result (raises ``ProcessStartError`` if it cannot start).

        ``sandboxed=False`` skips the runner's sandbox (for a command approved to run outside it).
        """
        call_id = call_id or uuid.uuid4().hex
        extra = dict(extra_env or {})
        limits = self.limits
        argv = self.argv_for(command, extra)
        self._emit(shell_pb2.ExecBegin(call_id=call_id, command=command, cwd=str(cwd)))
        started = time.monotonic()
        capture = OutputCapture(limits.head_bytes, limits.tail_bytes)

        def result(exit_code: int, *, timed_out: bool = False, interrupted: bool = False) -> ExecResult:
            return ExecResult(
                call_id=call_id,
                exit_code=exit_code,
                duration_ms=int((time.monotonic() - started) * 1000),
                timed_out=timed_out,
                interrupted=interrupted,
                truncated=capture.truncated,
                total_bytes=capture.total_bytes,
                head=capture.head,
                tail=capture.tail,
            )

        env = {**self._env, **extra}
        try:
            if self.sandbox is not None and sandboxed:
                argv = self.sandbox.wrap(argv, cwd, env)
            proc = await GroupProcess.start(argv, cwd=cwd, env=env)
        except SupervisorError as exc:  # ProcessStartError, or the sandbox cannot be built (its own status)
            capture.feed(f"could not start command: {exc}".encode())
            self._emit(result(START_FAILED_EXIT_CODE).to_end_event())
            raise

        streamer = DeltaStreamer(
            call_id,
            self._emit,
            interval_s=limits.delta_interval_s,
            max_chunk_bytes=limits.delta_max_bytes,
            max_deltas=limits.max_deltas,
        )

        def pump(stream: trio.abc.ReceiveStream, kind: int) -> Callable[[], Awaitable[None]]:
            async def read() -> None:
                while chunk := await stream.receive_some(limits.read_chunk_bytes):
                    capture.feed(chunk)
                    streamer.feed(kind, chunk)

            return read

        timed_out = False
        finished = False
        pumps = [
            pump(proc.stdout, shell_pb2.EXEC_STREAM_STDOUT),
            pump(proc.stderr, shell_pb2.EXEC_STREAM_STDERR),
        ]
        try:
            with collapse_cancelled():
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(streamer.run)
                    timed_out = await supervise(proc, pumps, timeout_s=timeout_s, kill_grace_s=limits.kill_grace_s)
                    nursery.cancel_scope.cancel()
            finished = True
        finally:
            if not finished:  # cancelled (interrupt, session stop): the group is already dead and reaped
                streamer.flush()
                code = exit_status(proc.returncode) if proc.returncode is not None else START_FAILED_EXIT_CODE
                self._emit(result(code, interrupted=True).to_end_event())
        streamer.flush()
        assert proc.returncode is not None
        final = result(exit_status(proc.returncode), timed_out=timed_out)
        self._emit(final.to_end_event())
        return final
