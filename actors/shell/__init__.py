"""The shell wing: the login-shell snapshot actor, and the commands that run through the snapshot.
"""

from __future__ import annotations

from actors.shell._actor import ShellSnapshotActor, shell_snapshot_child_spec
from actors.shell._capture import ShellSnapshotter, Snapshot
from actors.shell._exec import DEFAULT_EXEC_TIMEOUT_S, CommandRunner, CommandSandbox, ExecResult
from actors.shell._session import InheritedShell, SessionShell
from actors.shell._unified import ExecChunk, ProcessInfo, UnifiedExec, UnifiedExecError

__all__ = [
    "DEFAULT_EXEC_TIMEOUT_S",
    "CommandRunner",
    "CommandSandbox",
    "ExecChunk",
    "ExecResult",
    "InheritedShell",
    "ProcessInfo",
    "SessionShell",
    "ShellSnapshotActor",
    "ShellSnapshotter",
    "Snapshot",
    "UnifiedExec",
    "UnifiedExecError",
    "shell_snapshot_child_spec",
]
