"""Process-group helpers for stdio MCP servers (Linux ``/proc``).

Contract:
- The SDK's ``stdio_client`` spawns the server in a new session (its own process group, pgid == pid) but does
  not expose the process. ``find_tagged_child`` finds it among this process's children by a unique value of
  ``CONNECTION_TAG_VAR`` in its environment, which the connection sets, so concurrent spawns never mix.
- ``peek_exit`` reads how a child ended without reaping it (``waitid`` with ``WNOWAIT``): the SDK reaps it
  later, so its own bookkeeping stays right.
- ``kill_group`` signals a whole group and ignores a group that is already gone.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import trio

from actors.core import has_environ_entry, signal_group

__all__ = [
    "CONNECTION_TAG_VAR",
    "find_tagged_child",
    "has_exited",
    "kill_group",
    "peek_exit",
    "wait_exited",
    "wait_for_tagged_child",
]

logger = logging.getLogger(__name__)

#: Environment variable that carries a connection's unique tag into its server process.
CONNECTION_TAG_VAR = "SUPERVISOR_MCP_CONNECTION"
#: How often to look whether a process has exited while waiting for it.
EXIT_POLL_INTERVAL_S = 0.01
#: How long a freshly spawned child may take to show its new environment in /proc: the spawning thread
#: resumes as soon as exec replaced the memory map, a moment before the kernel records the new environment.
TAG_LOOKUP_TIMEOUT_S = 1.0
TAG_LOOKUP_INTERVAL_S = 0.002


def _children_of_self() -> set[int]:
    pids: set[int] = set()
    try:
        for task in os.listdir("/proc/self/task"):
            try:
                text = Path(f"/proc/self/task/{task}/children").read_text()
            except OSError:
                continue
            pids.update(int(pid) for pid in text.split())
    except OSError:
        return set()
    return pids


def find_tagged_child(tag: str) -> int | None:
    """The pid of this process's child whose environment holds ``CONNECTION_TAG_VAR=tag``, if any."""
    return next((pid for pid in sorted(_children_of_self()) if has_environ_entry(pid, CONNECTION_TAG_VAR, tag)),
                None)


async def wait_for_tagged_child(tag: str, timeout: float = TAG_LOOKUP_TIMEOUT_S) -> int | None:
    """``find_tagged_child``, retried for up to ``timeout`` (see ``TAG_LOOKUP_TIMEOUT_S``)."""
    with trio.move_on_after(timeout):
        while (pid := find_tagged_child(tag)) is None:
            await trio.sleep(TAG_LOOKUP_INTERVAL_S)
        return pid
    return find_tagged_child(tag)


def has_exited(pid: int) -> bool:
    """True when the process is a zombie or gone (a child stays a zombie until it is reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    state = stat.rsplit(")", 1)[1].split()[0]
    return state in ("Z", "X")


def _child_exited(pid: int) -> bool:
    """True when our child ``pid`` has exited (waitable, not reaped) or is no child of ours any more."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return has_exited(pid)


async def wait_exited(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` for our child process to exit (without reaping it); True when it did."""
    with trio.move_on_after(timeout):
        while not _child_exited(pid):
            await trio.sleep(EXIT_POLL_INTERVAL_S)
        return True
    return _child_exited(pid)


def peek_exit(pid: int) -> str | None:
    """How a child that has exited ended ("exited with code 3", "was killed by signal 9"); None if running."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return None
    if info is None:
        return None
    if info.si_code == os.CLD_EXITED:
        return f"exited with code {info.si_status}"
    try:
        name = signal.Signals(info.si_status).name
    except ValueError:
        name = "unknown signal"
    return f"was killed by signal {info.si_status} ({name})"


def kill_group(pgid: int, sig: signal.Signals = signal.SIGKILL) -> bool:
    """Send ``sig`` to every process of the group; False when the group no longer exists."""
    return signal_group(pgid, sig)
