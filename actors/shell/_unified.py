"""Unified exec: commands that outlive the tool call that started them (Codex's ``exec_command`` and
``write_stdin``), in a PTY or on pipes.

Contract:
- ``UnifiedExec`` is an async context manager owned by one turn. Entering opens the nursery that reads
  every process's output; leaving (normally, on an interrupt, at session stop) kills every process still
  running (SIGTERM to its group, SIGKILL after a grace), reaps it, emits its ``ExecEnd`` with
  ``interrupted=True``, and returns only when nothing is left: no process outlives the turn.
- ``exec_command(cmd, ...)`` starts ``cmd`` through the session's ``CommandRunner`` (its snapshot, its
  environment, the argv it builds, wrapped by the runner's sandbox like every one-shot command), then waits
  ``yield_time_ms`` (clamped to Codex's 250-30000 ms, default 10000) or until the process exits, whichever is
  first, and returns an ``ExecChunk``: the output produced so far, and either the exit code or the process's
  session id. ``tty=True`` gives the command a PTY (stdin open, echo on); otherwise stdin is closed and
  stdout and stderr share one pipe, as in Codex.
- ``write_stdin(session_id, chars, ...)`` writes ``chars`` (PTY only; on pipes only an empty poll is allowed,
  with Codex's "stdin is closed" error otherwise), then waits like ``exec_command`` (non-empty writes default
  to 250 ms, empty polls wait 5000-300000 ms) and returns the output produced since the previous call. A
  process whose exit has been reported is forgotten: its id is then unknown.
- Output is read continuously (a background process never blocks on a full pipe); what is not yet returned
  is held in a bounded head + tail buffer. Each chunk is cut to ``max_output_tokens`` (4 bytes a token,
  default 10000), head and tail kept around a "…N tokens truncated…" marker.
- Events per process: ``ExecBegin`` (the model's call id, ``process_id`` set), rate-limited
  ``ExecOutputDelta``s, one ``ExecEnd`` when it exits or is killed; ``TerminalInteraction`` for each write.
- At most ``MAX_PROCESSES`` live processes per turn: starting one more kills the least recently used.
"""

from __future__ import annotations

import errno
import fcntl
import os
import random
import secrets
import shlex
import signal
import struct
import termios
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import trio
from google.protobuf.message import Message

from actors.core import GroupProcess, exit_status
from actors.errors import SupervisorError
from actors.shell._exec import CommandRunner
from actors.shell._output import DeltaStreamer, OutputCapture
from protos.supervisor.v1 import shell_pb2, tools_pb2

__all__ = [
    "DEFAULT_EXEC_YIELD_MS",
    "DEFAULT_MAX_OUTPUT_TOKENS",
    "MAX_PROCESSES",
    "ExecChunk",
    "ProcessInfo",
    "UnifiedExec",
    "UnifiedExecError",
]

Emit = Callable[[Message], None]

#: Codex's yield bounds for exec_command ("Defaults to 10000 ms; effective range is 250-30000 ms").
DEFAULT_EXEC_YIELD_MS = 10_000
MIN_YIELD_MS = 250
MAX_YIELD_MS = 30_000
#: write_stdin: "Non-empty writes default to 250 ms and cap at 30000 ms; empty polls wait 5000-300000 ms".
DEFAULT_WRITE_YIELD_MS = 250
MIN_POLL_YIELD_MS = 5_000
MAX_POLL_YIELD_MS = 300_000
#: "Output token budget. Defaults to 10000 tokens".
DEFAULT_MAX_OUTPUT_TOKENS = 10_000
#: Codex's approximation of a token.
BYTES_PER_TOKEN = 4
#: Most live processes of one turn (Codex keeps 64 and prunes the least recently used).
MAX_PROCESSES = 64
#: Output held between two calls for one process (head + tail kept beyond that).
PENDING_OUTPUT_BYTES = 1024 * 1024
#: Head + tail of a process's whole output kept for its ExecEnd event.
END_EVENT_OUTPUT_BYTES = 64 * 1024
#: Session ids the model sees: random, in Codex's range (short numbers the model copies reliably).
PROCESS_ID_MIN = 1_000
PROCESS_ID_MAX = 99_999
#: After the leader exits, how long its output may take to drain before the rest of its group is killed.
DRAIN_GRACE_S = 0.2
#: SIGTERM -> SIGKILL grace when a turn ends with processes still running.
KILL_GRACE_S = 1.0
#: One read of a process's output.
READ_CHUNK_BYTES = 64 * 1024
#: PTY size given to commands.
PTY_ROWS = 24
PTY_COLS = 80
MS_PER_S = 1000.0


class UnifiedExecError(Exception):
    """A call the model made cannot be served (unknown session id, closed stdin, failed start); the text is
    what the model reads (Codex's wording)."""


@dataclass(frozen=True)
class ExecChunk:
    """One exec_command / write_stdin answer."""

    chunk_id: str
    wall_time_s: float
    #: The output since the previous chunk, cut to the token budget.
    output: str
    #: Tokens of that output before the cut.
    original_token_count: int
    #: The exit code once the process exited (then ``process_id`` is None).
    exit_code: int | None
    #: The session id to write to while the process runs.
    process_id: int | None

    def text(self) -> str:
        """The tool output in Codex's format."""
        lines = [f"Chunk ID: {self.chunk_id}", f"Wall time: {self.wall_time_s:.4f} seconds"]
        if self.exit_code is not None:
            lines.append(f"Process exited with code {self.exit_code}")
        else:
            lines.append(f"Process running with session ID {self.process_id}")
        lines += [f"Original token count: {self.original_token_count}", "Output:"]
        return "\n".join(lines) + "\n" + self.output


@dataclass(frozen=True)
class ProcessInfo:
    """A live process, as ``UnifiedExec.processes()`` lists it."""

    process_id: int
    command: str
    pid: int
    tty: bool
    started_at: float


@dataclass
class _Process:
    process_id: int
    call_id: str
    command: str
    tty: bool
    proc: GroupProcess
    output: trio.abc.ReceiveStream
    stdin: trio.abc.SendStream | None
    streamer: DeltaStreamer
    started: float = field(default_factory=time.monotonic)
    last_used: float = field(default_factory=time.monotonic)
    pending: OutputCapture = field(default_factory=lambda: _capture(PENDING_OUTPUT_BYTES))
    whole: OutputCapture = field(default_factory=lambda: _capture(END_EVENT_OUTPUT_BYTES))
    eof: trio.Event = field(default_factory=trio.Event)
    ended: trio.Event = field(default_factory=trio.Event)
    exit_code: int | None = None
    killed: bool = False

    def take_output(self) -> bytes:
        data = self.pending.head + self.pending.tail
        omitted = self.pending.omitted_bytes
        self.pending = _capture(PENDING_OUTPUT_BYTES)
        if omitted:
            return data[: len(data) // 2] + f"\n[... {omitted} bytes omitted ...]\n".encode() + data[len(data) // 2:]
        return data


def _capture(total: int) -> OutputCapture:
    return OutputCapture(total // 2, total - total // 2)


def _set_controlling_tty() -> None:  # runs in the child, after setsid(), before exec
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def clamp_yield(value: Any, default: int, low: int, high: int) -> int:
    """A model's ``yield_time_ms`` as Codex uses it: default when absent, then clamped."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnifiedExecError("yield_time_ms must be a number")
    return int(min(max(value, low), high))


def truncate_tokens(text: str, max_tokens: int) -> tuple[str, int]:
    """``text`` cut to ``max_tokens`` (head and tail kept), and its token count before the cut."""
    data = text.encode("utf-8", "surrogatepass")
    tokens = -(-len(data) // BYTES_PER_TOKEN)
    budget = max(0, max_tokens) * BYTES_PER_TOKEN
    if len(data) <= budget:
        return text, tokens
    head = data[: budget // 2].decode("utf-8", "ignore")
    tail = data[len(data) - (budget - budget // 2):].decode("utf-8", "ignore") if budget else ""
    removed = tokens - max(0, max_tokens)
    return f"{head}…{removed} tokens truncated…{tail}", tokens


class UnifiedExec:
    """The unified-exec processes of one turn; see the module docstring."""

    def __init__(
        self,
        runner: CommandRunner,
        *,
        cwd: Path | str,
        emit: Emit,
        extra_env: Mapping[str, str] | None = None,
        kill_grace_s: float = KILL_GRACE_S,
        ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._runner = runner
        self._cwd = Path(cwd)
        self._emit = emit
        self._extra_env = dict(extra_env or {})
        self._kill_grace_s = kill_grace_s
        self._ready = ready
        self._processes: dict[int, _Process] = {}
        self._nursery: trio.Nursery | None = None
        self._nursery_cm: Any = None
        self._random = random.Random(secrets.randbits(64))

    async def __aenter__(self) -> UnifiedExec:
        self._nursery_cm = trio.open_nursery()
        self._nursery = await self._nursery_cm.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._nursery is not None
        try:
            with trio.CancelScope(shield=True):
                await self.kill_all()
        finally:
            self._nursery.cancel_scope.cancel()  # the nursery is exited below whatever happened
        nursery_cm, self._nursery_cm, self._nursery = self._nursery_cm, None, None
        try:
            result: bool | None = await nursery_cm.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            if exc is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc:
                return False  # only the body's own exception: let it through unwrapped (a Cancelled stays one)
            raise
        return result

    def processes(self) -> list[ProcessInfo]:
        """The processes still running (or exited but not yet reported to the model)."""
        return [ProcessInfo(p.process_id, p.command, p.proc.pid, p.tty, p.started) for p in self._processes.values()]

    async def exec_command(
        self,
        cmd: str,
        *,
        call_id: str,
        workdir: str | None = None,
        tty: bool = False,
        yield_time_ms: Any = None,
        max_output_tokens: Any = None,
        shell: str | None = None,
        login: bool = True,
    ) -> ExecChunk:
        """Start ``cmd`` and return its first chunk (see the module docstring)."""
        started = time.monotonic()
        if not cmd.strip():
            raise UnifiedExecError("missing command line for unified exec request")
        yield_ms = clamp_yield(yield_time_ms, DEFAULT_EXEC_YIELD_MS, MIN_YIELD_MS, MAX_YIELD_MS)
        cwd = self._cwd / workdir if workdir else self._cwd
        if self._ready is not None:
            await self._ready()
        if len(self._processes) >= MAX_PROCESSES:
            await self._prune()
        process = await self._start(cmd, call_id=call_id, cwd=cwd, tty=tty, shell=shell, login=login)
        return await self._collect(process, started, yield_ms, max_output_tokens)

    async def write_stdin(
        self,
        session_id: Any,
        *,
        call_id: str,
        chars: str = "",
        yield_time_ms: Any = None,
        max_output_tokens: Any = None,
    ) -> ExecChunk:
        """Write ``chars`` to a running process and return the output since the previous chunk."""
        started = time.monotonic()
        process = self._processes.get(_as_id(session_id))
        if process is None:
            raise UnifiedExecError(f"Unknown process id {session_id}")
        process.last_used = started
        if chars:
            yield_ms = clamp_yield(yield_time_ms, DEFAULT_WRITE_YIELD_MS, MIN_YIELD_MS, MAX_YIELD_MS)
            if process.stdin is None:
                raise UnifiedExecError(
                    "stdin is closed for this session; rerun exec_command with tty=true to keep stdin open")
            self._emit(tools_pb2.TerminalInteraction(call_id=call_id, process_id=str(process.process_id),
                                                     stdin=chars))
            try:
                await process.stdin.send_all(chars.encode())
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise UnifiedExecError("failed to write to stdin") from exc
        else:
            yield_ms = clamp_yield(yield_time_ms, MIN_POLL_YIELD_MS, MIN_POLL_YIELD_MS, MAX_POLL_YIELD_MS)
        return await self._collect(process, started, yield_ms, max_output_tokens)

    async def kill_all(self) -> None:
        """Kill every process (their ``ExecEnd`` says interrupted) and wait until each is reaped."""
        for process in list(self._processes.values()):
            await self._kill(process)
        self._processes.clear()

    # --- internals ---------------------------------------------------------------------------------
    async def _collect(self, process: _Process, started: float, yield_ms: int, max_tokens: Any) -> ExecChunk:
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int | float)):
            raise UnifiedExecError("max_output_tokens must be a number")
        budget = int(max_tokens) if max_tokens is not None else DEFAULT_MAX_OUTPUT_TOKENS
        with trio.move_on_at(trio.current_time() - (time.monotonic() - started) + yield_ms / MS_PER_S):
            await process.ended.wait()
        text = process.take_output().decode("utf-8", errors="replace")
        output, tokens = truncate_tokens(text, budget)
        exit_code = process.exit_code if process.ended.is_set() else None
        if exit_code is not None:
            self._processes.pop(process.process_id, None)
        return ExecChunk(
            chunk_id=secrets.token_hex(3),
            wall_time_s=time.monotonic() - started,
            output=output,
            original_token_count=tokens,
            exit_code=exit_code,
            process_id=None if exit_code is not None else process.process_id,
        )

    def _new_id(self) -> int:
        while True:
            candidate = self._random.randint(PROCESS_ID_MIN, PROCESS_ID_MAX)
            if candidate not in self._processes:
                return candidate

    async def _start(self, cmd: str, *, call_id: str, cwd: Path, tty: bool, shell: str | None,
                     login: bool) -> _Process:
        nursery = self._nursery
        if nursery is None:
            raise RuntimeError("UnifiedExec used outside its `async with`")
        if shell:
            argv = [shell, "-lc" if login else "-c", cmd]
            env = self._runner.environment(self._extra_env)
        else:
            argv = self._runner.argv_for(cmd, self._extra_env)
            env = self._runner.environment(self._extra_env)
        process_id = self._new_id()
        flag = "-c" if shell and not login else "-lc"
        self._emit(shell_pb2.ExecBegin(call_id=call_id, command=cmd, cwd=str(cwd), process_id=str(process_id),
                                       command_argv=[shell or self._runner.shell, flag, cmd]))
        try:
            if self._runner.sandbox is not None:  # the session's sandbox, as for every one-shot command
                argv = self._runner.sandbox.wrap(argv, cwd, env)
            proc, output, stdin = await _spawn(argv, cwd=cwd, env=env, tty=tty)
        except (OSError, SupervisorError) as exc:
            self._emit(shell_pb2.ExecEnd(call_id=call_id, exit_code=-1, head=f"could not start: {exc}".encode()))
            raise UnifiedExecError(f"Failed to create unified exec process: {exc}") from exc
        limits = self._runner.limits
        streamer = DeltaStreamer(call_id, self._emit, interval_s=limits.delta_interval_s,
                                 max_chunk_bytes=limits.delta_max_bytes, max_deltas=limits.max_deltas)
        process = _Process(process_id, call_id, cmd, tty, proc, output, stdin, streamer)
        self._processes[process_id] = process
        nursery.start_soon(self._pump, process)
        nursery.start_soon(self._watch, process)
        nursery.start_soon(streamer.run)
        return process

    async def _pump(self, process: _Process) -> None:
        try:
            while True:
                try:
                    chunk = await process.output.receive_some(READ_CHUNK_BYTES)
                except OSError as exc:
                    if exc.errno == errno.EIO:  # a PTY whose every slave end is closed: EOF
                        break
                    raise
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    break
                if not chunk:
                    break
                process.pending.feed(chunk)
                process.whole.feed(chunk)
                process.streamer.feed(shell_pb2.EXEC_STREAM_STDOUT, chunk)
        finally:
            process.eof.set()

    async def _watch(self, process: _Process) -> None:
        """The one place a process is finished: after its leader exits (by itself or killed)."""
        try:
            await process.proc.wait_exit()
            with trio.move_on_after(DRAIN_GRACE_S):
                await process.eof.wait()
        finally:
            with trio.CancelScope(shield=True):
                await self._finish(process)

    async def _kill(self, process: _Process) -> None:
        # Signals only: the process's watcher is the one task waiting on its pidfd (trio allows one waiter).
        if not process.ended.is_set():
            process.killed = True
            process.proc.signal_group(signal.SIGTERM)
            with trio.move_on_after(self._kill_grace_s):
                await process.ended.wait()
            process.proc.signal_group(signal.SIGKILL)
            await process.ended.wait()

    async def _finish(self, process: _Process) -> None:
        interrupted = process.killed or not process.proc.has_exited()
        returncode = await process.proc.aclose(self._kill_grace_s)
        await process.output.aclose()
        if process.stdin is not None and process.stdin is not process.output:
            await process.stdin.aclose()
        process.exit_code = exit_status(returncode)
        process.streamer.flush()
        whole = process.whole
        self._emit(shell_pb2.ExecEnd(
            call_id=process.call_id, exit_code=process.exit_code,
            duration_ms=int((time.monotonic() - process.started) * MS_PER_S), interrupted=interrupted,
            truncated=whole.truncated, total_bytes=whole.total_bytes, head=whole.head, tail=whole.tail))
        process.ended.set()

    async def _prune(self) -> None:
        oldest = min(self._processes.values(), key=lambda p: p.last_used)
        await self._kill(oldest)
        self._processes.pop(oldest.process_id, None)


def _as_id(value: Any) -> int:
    if isinstance(value, bool):
        raise UnifiedExecError(f"Unknown process id {value}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise UnifiedExecError(f"Unknown process id {value}") from None


async def _spawn(argv: list[str], *, cwd: Path, env: Mapping[str, str], tty: bool
                 ) -> tuple[GroupProcess, trio.abc.ReceiveStream, trio.abc.SendStream | None]:
    """Start ``argv`` as a process-group leader: on a PTY (returned as both output and stdin) or on pipes."""
    if not tty:
        proc = await GroupProcess.start(argv, cwd=cwd, env=env, merge_stderr=True)
        return proc, proc.stdout, None
    master, slave = os.openpty()
    try:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", PTY_ROWS, PTY_COLS, 0, 0))
        proc = await GroupProcess.start(argv, cwd=cwd, env=env, stdio=slave, preexec_fn=_set_controlling_tty)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    stream = trio.lowlevel.FdStream(master)
    return proc, stream, stream


def display_command(shell: str, cmd: str) -> str:
    """The command as Codex shows it ran: ``SHELL -lc 'CMD'``."""
    return shlex.join([shell, "-lc", cmd])

