"""One session's shell on trio: its snapshot capture and the commands that run through it.

Contract:
- ``SessionShell.capture()`` runs the ``ShellSnapshotter`` once (or inherits the parent's snapshot), hands the
  result to the ``CommandRunner`` and marks the shell ready, whatever the outcome.
- ``SessionShell.exec(...)`` waits for that readiness at most ``snapshot_wait_s`` (a command issued while the
  capture is still running), then runs the command, through the snapshot if there is one. The session's
  ``extra_env`` (the network proxy's variables) is applied over the request's ``env``, so a request cannot
  route around the proxy.
- ``exec_request`` maps the gRPC ``ExecRequest`` onto ``exec`` and returns an ``ExecResponse``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from actors.shell._capture import CAPTURE_TIMEOUT_S, ShellSnapshotter, Snapshot
from actors.shell._exec import DEFAULT_EXEC_TIMEOUT_S, CommandRunner, CommandSandbox, ExecResult
from protos.supervisor.v1 import shell_pb2

__all__ = ["SNAPSHOT_WAIT_S", "InheritedShell", "SessionShell"]

logger = logging.getLogger(__name__)

#: How long a command waits for a capture still in progress (a capture with retry takes at most ~3 runs).
SNAPSHOT_WAIT_S = 3 * CAPTURE_TIMEOUT_S
MS_PER_S = 1000.0


class SessionShell:
    """A session's snapshot and command runner; see the module docstring."""

    def __init__(
        self,
        snapshotter: ShellSnapshotter,
        runner: CommandRunner,
        *,
        cwd: Path | str,
        extra_env: Mapping[str, str] | None = None,
        snapshot_wait_s: float = SNAPSHOT_WAIT_S,
        default_timeout_s: float = DEFAULT_EXEC_TIMEOUT_S,
    ) -> None:
        self.snapshotter = snapshotter
        self.runner = runner
        self.cwd = Path(cwd)
        self.extra_env = dict(extra_env or {})
        self.snapshot_wait_s = snapshot_wait_s
        self.default_timeout_s = default_timeout_s
        self._ready = trio.Event()
        self._captured = False

    @property
    def snapshot(self) -> Snapshot | None:
        """The snapshot commands run through (None before the capture ended, or if it failed)."""
        return self.runner.snapshot

    @property
    def ready(self) -> bool:
        """True once the capture ended (successfully or not)."""
        return self._ready.is_set()

    async def capture(self) -> Snapshot | None:
        """Capture (or inherit) the snapshot once; later calls return the first result."""
        if self._captured:
            await self._ready.wait()
            return self.snapshot
        self._captured = True
        try:
            snapshot = await self.snapshotter.capture()
            self.runner.set_snapshot(snapshot)
            return snapshot
        finally:
            self._ready.set()

    def set_cwd(self, cwd: Path | str) -> None:
        """Run later commands in ``cwd`` by default (a settings change; any thread)."""
        self.cwd = Path(cwd)

    async def wait_ready(self) -> None:
        """Wait (at most ``snapshot_wait_s``) until the snapshot capture ended."""
        with trio.move_on_after(self.snapshot_wait_s):
            await self._ready.wait()
        if not self._ready.is_set():
            logger.warning("shell snapshot not ready after %.0f s; running without it", self.snapshot_wait_s)

    async def exec(
        self,
        command: str,
        cwd: Path | str | None = None,
        *,
        timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
        call_id: str | None = None,
        sandboxed: bool = True,
    ) -> ExecResult:
        """Run ``command`` (in ``cwd``, default the session's) once the snapshot is ready or overdue."""
        await self.wait_ready()
        return await self.runner.run(
            command,
            cwd if cwd is not None else self.cwd,
            timeout_s=timeout_s if timeout_s is not None else self.default_timeout_s,
            extra_env={**(env or {}), **self.extra_env},
            call_id=call_id,
            sandboxed=sandboxed,
        )

    async def exec_request(self, request: shell_pb2.ExecRequest) -> shell_pb2.ExecResponse:
        """Serve the Exec RPC: empty cwd and zero timeout mean the session's defaults."""
        result = await self.exec(
            request.command,
            request.cwd or None,
            timeout_s=request.timeout_ms / MS_PER_S if request.timeout_ms else None,
            env=dict(request.env),
        )
        return result.to_response()


class InheritedShell:
    """A subagent's shell: the parent's snapshot, its own runner (its own exec events), no capture process."""

    def __init__(self, snapshot: Any, *, emit: Any, cwd: str, extra_env: Mapping[str, str],
                 shell_program: str | None = None, default_timeout_s: float | None = None,
                 sandbox: CommandSandbox | None = None) -> None:
        self._emit = emit
        self._sandbox = sandbox
        self._shell_program = shell_program
        # built at the first command: most subagents of a big tree never run one
        self._runner: CommandRunner | None = None
        self.cwd = Path(cwd)
        self.extra_env = dict(extra_env)
        self.snapshot = snapshot
        self.default_timeout_s = default_timeout_s

    def set_cwd(self, cwd: Path | str) -> None:
        """Run later commands in ``cwd`` by default (a settings change; any thread)."""
        self.cwd = Path(cwd)

    @property
    def runner(self) -> CommandRunner:
        """The subagent's own ``CommandRunner`` (its own exec events), built on first use."""
        if self._runner is None:
            self._runner = CommandRunner(emit=self._emit, snapshot=self.snapshot, shell=self._shell_program,
                                         sandbox=self._sandbox)
        return self._runner

    async def exec(self, command: str, cwd: Path | str | None = None, *, timeout_s: float | None = None,
                   env: Mapping[str, str] | None = None, call_id: str | None = None,
                   sandboxed: bool = True) -> ExecResult:
        """Run ``command`` like ``SessionShell.exec``."""
        return await self.runner.run(
            command, cwd if cwd is not None else self.cwd,
            timeout_s=timeout_s if timeout_s is not None else (self.default_timeout_s or DEFAULT_EXEC_TIMEOUT_S),
            extra_env={**(env or {}), **self.extra_env}, call_id=call_id, sandboxed=sandboxed,
        )

    async def exec_request(self, request: shell_pb2.ExecRequest) -> shell_pb2.ExecResponse:
        """Serve the Exec RPC for a subagent."""
        result = await self.exec(request.command, request.cwd or None,
                                 timeout_s=request.timeout_ms / 1000 if request.timeout_ms else None,
                                 env=dict(request.env))
        return result.to_response()
