"""A child that asks to die with its parent (``PR_SET_PDEATHSIG``, as bubblewrap's ``--die-with-parent`` does)
lives as long as the server, not as long as the thread that forked it: trio's worker threads exit after 10 s
idle, which killed every sandboxed command at ~10 s (exit 137) before every fork moved to one thread."""

from __future__ import annotations

import sys

import trio

from actors.core import GroupProcess, supervise

#: Longer than trio's worker-thread idle timeout (10 s), the old life span of such a child.
OUTLIVE_S = 12
CHILD = f"""
import ctypes, signal, time
ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
time.sleep({OUTLIVE_S})
print("alive", flush=True)
"""


async def test_a_child_with_a_parent_death_signal_outlives_the_forking_thread() -> None:
    proc = await GroupProcess.start([sys.executable, "-c", CHILD], cwd="/", env={})
    out = bytearray()

    async def read() -> None:
        while chunk := await proc.stdout.receive_some(1024):
            out.extend(chunk)

    async def drain() -> None:
        while await proc.stderr.receive_some(1024):
            pass

    with trio.fail_after(OUTLIVE_S * 4):
        await supervise(proc, [read, drain], timeout_s=None, kill_grace_s=1.0)
    assert proc.returncode == 0 and out == b"alive\n"
