"""ShellSnapshotActor: a session's shell as a supervised child (a thin wrapper over ``_shell_session``).

Contract:
- ``on_start`` starts the snapshot capture in the actor's own trio scope and returns at once (a session
  start never waits for the user's rc files); the capture emits ``ShellSnapshotReady`` or
  ``ShellSnapshotFailed``. With ``inherited`` (a subagent) no capture process runs.
- ``snapshot()`` returns a ``concurrent.futures.Future[Snapshot | None]`` that resolves when the capture ended
  (a parent hands the result to its subagents as their ``inherited`` snapshot).
- ``exec(...)`` / ``exec_request(ExecRequest)`` run a command in the actor's scope and return a
  ``concurrent.futures.Future`` of the ``ExecResult`` / ``ExecResponse``; ``shell()`` hands out the
  ``SessionShell`` for trio code (a turn) that awaits commands in its own scope, so aborting the turn kills
  them. Stopping the actor cancels its scope: every running command's process group is killed.
- However the actor ends (stop, crash, restart), its own snapshot file is removed after its trio work has
  exited; an inherited snapshot belongs to the parent and is left alone.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from actors.core import ChildSpec, Restart, SupervisedActor
from actors.shell._capture import CAPTURE_TIMEOUT_S, ShellSnapshotter, Snapshot
from actors.shell._exec import CommandRunner, CommandSandbox, ExecLimits, ExecResult
from actors.shell._files import SNAPSHOT_DIR_NAME, cleanup_stale, remove_snapshot
from actors.shell._scripts import DEFAULT_SECRET_PATTERNS
from actors.shell._session import SNAPSHOT_WAIT_S, SessionShell
from protos.supervisor.v1 import shell_pb2

__all__ = ["SHELL_SNAPSHOT_CHILD_ID", "ShellSnapshotActor", "shell_snapshot_child_spec"]

logger = logging.getLogger(__name__)

#: The child id a session gives its shell actor.
SHELL_SNAPSHOT_CHILD_ID = "shell_snapshot"


class ShellSnapshotActor(SupervisedActor):
    """Captures a session's shell snapshot and runs its commands on the shared trio loop."""

    def __init__(
        self,
        *,
        session_id: str,
        emit: Callable[[Message], None],
        cwd: str | os.PathLike[str],
        home: str | os.PathLike[str] | None = None,
        shell: str | None = None,
        env: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        snapshot_root: str | os.PathLike[str] | None = None,
        capture_timeout_s: float = CAPTURE_TIMEOUT_S,
        secret_patterns: Sequence[str] = DEFAULT_SECRET_PATTERNS,
        inherited: Snapshot | None = None,
        exec_limits: ExecLimits | None = None,
        snapshot_wait_s: float = SNAPSHOT_WAIT_S,
        live_session_ids: Callable[[], Collection[str]] | None = None,
        sandbox: CommandSandbox | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        snapshotter = ShellSnapshotter(
            session_id=session_id,
            home=Path(home) if home is not None else None,
            cwd=Path(cwd),
            emit=emit,
            shell=shell,
            env=env,
            snapshot_root=Path(snapshot_root) if snapshot_root is not None else None,
            timeout_s=capture_timeout_s,
            secret_patterns=secret_patterns,
            inherited=inherited,
        )
        runner = CommandRunner(emit=emit, shell=snapshotter.shell, env=env, limits=exec_limits, sandbox=sandbox)
        self._shell = SessionShell(
            snapshotter, runner, cwd=Path(cwd), extra_env=extra_env, snapshot_wait_s=snapshot_wait_s
        )
        self._live_session_ids = live_session_ids
        self._captured: concurrent.futures.Future[Snapshot | None] | None = None

    def on_start(self) -> None:
        """Start the capture (and, if asked, the stale-snapshot clean-up) without waiting for it."""
        self._captured = self.run_task(self._start_job, critical=False, name="shell-snapshot")

    async def _start_job(self) -> Snapshot | None:
        if self._live_session_ids is not None:
            directory = self._shell.snapshotter.snapshot_root / SNAPSHOT_DIR_NAME
            live = {*self._live_session_ids(), self._shell.snapshotter.session_id}
            cleanup_stale(directory, live)
        return await self._shell.capture()

    def snapshot(self) -> concurrent.futures.Future[Snapshot | None]:
        """Resolves with the snapshot (None if the capture failed) once the capture ended."""
        assert self._captured is not None
        return self._captured

    def shell(self) -> SessionShell:
        """The trio-level shell, for callers that await commands in their own scope."""
        return self._shell

    def exec(
        self,
        command: str,
        cwd: str | os.PathLike[str] | None = None,
        *,
        timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
        call_id: str | None = None,
    ) -> concurrent.futures.Future[ExecResult]:
        """Run ``command`` in this actor's scope; the future holds its ``ExecResult``."""
        job = functools.partial(
            self._shell.exec, command, Path(cwd) if cwd is not None else None,
            timeout_s=timeout_s, env=env, call_id=call_id,
        )  # fmt: skip
        return self.run_task(job, critical=False, name="exec")

    def exec_request(self, request: shell_pb2.ExecRequest) -> concurrent.futures.Future[shell_pb2.ExecResponse]:
        """Serve the Exec RPC in this actor's scope; the future holds the ``ExecResponse``."""
        return self.run_task(self._shell.exec_request, request, critical=False, name="exec")

    def on_stop(self) -> None:
        """Kill running commands and the capture, then remove this session's snapshot."""
        self._release()

    def _after_exit(self) -> None:
        super()._after_exit()
        self._release()  # also after a crash, where ``on_stop`` does not run

    def _release(self) -> None:
        self._close_task_scope()  # the capture must have ended before its file is judged
        snapshot = self._shell.snapshot
        if snapshot is not None and not snapshot.inherited:
            remove_snapshot(snapshot.path)


def shell_snapshot_child_spec(
    *,
    session_id: str,
    emit: Callable[[Message], None],
    cwd: str | os.PathLike[str],
    **options: Any,
) -> ChildSpec:
    """The ``ChildSpec`` for a session's ``ShellSnapshotActor`` (``options``: see its ``__init__``; ``home`` is
    the user's home, default the environment's ``HOME``; ``snapshot_root`` the state directory)."""
    return ChildSpec(
        child_id=SHELL_SNAPSHOT_CHILD_ID,
        actor_class=ShellSnapshotActor,
        kwargs={"session_id": session_id, "emit": emit, "cwd": cwd, **options},
        restart=Restart.PERMANENT,
        kind="shell_snapshot",
    )
