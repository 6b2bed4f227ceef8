"""Tests for command execution: real shells, real process groups, real pipes."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import TypeVar

import pytest
import trio
from google.protobuf.message import Message

from actors.errors import ProcessStartError
from actors.shell._capture import ShellSnapshotter
from actors.shell._exec import CommandRunner, ExecLimits
from actors.shell._output import OutputCapture, render_output
from protos.supervisor.v1 import shell_pb2

M = TypeVar("M", bound=Message)
BASH = shutil.which("bash") or "/bin/bash"
CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
#: Bound on any single command in these tests (2 loaded cores).
RUN_BOUND_S = 10.0
HUNDRED_MB = 100_000_000
#: Allowed peak RSS growth of the supervisor while a command prints 100 MB.
RSS_GROWTH_LIMIT = 50 * 1024 * 1024


class Events:
    """An emit sink that records events and can wake a waiter on each one."""

    def __init__(self) -> None:
        self.items: list[Message] = []
        self._changed = trio.Event()

    def __call__(self, event: Message) -> None:
        self.items.append(event)
        self._changed.set()
        self._changed = trio.Event()

    def of(self, kind: type[M]) -> list[M]:
        return [e for e in self.items if isinstance(e, kind)]

    def streamed(self) -> bytes:
        return b"".join(d.chunk for d in self.of(shell_pb2.ExecOutputDelta))

    async def wait_for_output(self, count: int, bound_s: float = RUN_BOUND_S) -> list[str]:
        """Wait until the streamed output holds ``count`` whitespace-separated words."""
        with trio.fail_after(bound_s):
            while len(words := self.streamed().split()) < count:
                await self._changed.wait()
        return [w.decode() for w in words]


def _live_group_members(pgid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie is dead; PID 1 here does not reap orphans


async def _wait_dead(pids: list[int], bound_s: float = 3.0) -> None:
    with trio.fail_after(bound_s):
        while any(_alive(p) for p in pids):
            await trio.sleep(0.01)


def _runner(events: Events, **kwargs: object) -> CommandRunner:
    return CommandRunner(emit=events, shell=BASH, env=CLEAN_ENV, **kwargs)  # type: ignore[arg-type]


async def test_run_reports_exit_code_output_and_events(tmp_path: Path) -> None:
    events = Events()
    with trio.fail_after(RUN_BOUND_S):
        result = await _runner(events).run("echo out; echo err >&2; pwd; exit 3", tmp_path, call_id="c1")
    assert result.exit_code == 3 and not result.timed_out and not result.interrupted and not result.truncated
    assert sorted(result.output.split()) == sorted(["out", "err", str(tmp_path)])
    assert result.total_bytes == len(result.head) + len(result.tail) == len(f"out\nerr\n{tmp_path}\n")
    begin, *middle, end = events.items
    assert isinstance(begin, shell_pb2.ExecBegin) and begin.call_id == "c1" and begin.cwd == str(tmp_path)
    assert isinstance(end, shell_pb2.ExecEnd) and end.exit_code == 3 and end.total_bytes == result.total_bytes
    deltas = events.of(shell_pb2.ExecOutputDelta)
    assert len(deltas) == len(middle)
    streams = {d.stream for d in deltas}
    assert streams == {shell_pb2.EXEC_STREAM_STDOUT, shell_pb2.EXEC_STREAM_STDERR}
    response = result.to_response()
    assert response.call_id == "c1" and response.exit_code == 3 and "out" in response.output


async def test_stdin_is_closed_and_no_tty(tmp_path: Path) -> None:
    with trio.fail_after(RUN_BOUND_S):
        result = await _runner(Events()).run("cat; [ -t 0 ] || echo no-tty; tty || true", tmp_path)
    assert result.output.splitlines()[0] == "no-tty"
    assert result.exit_code == 0


async def test_cancellation_kills_the_whole_group_including_a_background_grandchild(tmp_path: Path) -> None:
    events = Events()
    runner = _runner(events)
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.run, "sleep 1000 & echo $$ $!; sleep 1000", tmp_path)
        leader, grandchild = (int(w) for w in await events.wait_for_output(2))
        assert _alive(leader) and _alive(grandchild)
        assert _live_group_members(leader) and grandchild in _live_group_members(leader)
        nursery.cancel_scope.cancel()
    await _wait_dead([leader, grandchild])
    assert not _live_group_members(leader)
    end = events.of(shell_pb2.ExecEnd)
    assert len(end) == 1
    assert end[0].interrupted and not end[0].timed_out
    assert end[0].exit_code == 128 + signal.SIGTERM
    assert 0 < end[0].duration_ms < (time.monotonic() - started) * 1000 + 1


async def test_timeout_kills_group_and_reports(tmp_path: Path) -> None:
    events = Events()
    with trio.fail_after(RUN_BOUND_S):
        result = await _runner(events).run("sleep 1000 & echo $$ $!; sleep 1000", tmp_path, timeout_s=0.5)
    leader, grandchild = (int(w) for w in result.output.split())
    assert result.timed_out and not result.interrupted
    assert result.exit_code == 128 + signal.SIGTERM
    assert 400 <= result.duration_ms < 3000
    await _wait_dead([leader, grandchild])


async def test_term_ignoring_command_is_killed_after_grace(tmp_path: Path) -> None:
    runner = _runner(Events(), limits=ExecLimits(kill_grace_s=0.3))
    started = time.monotonic()
    with trio.fail_after(RUN_BOUND_S):
        result = await runner.run("trap '' TERM; echo $$; while :; do sleep 0.05; done", tmp_path, timeout_s=0.3)
    assert result.timed_out and result.exit_code == 128 + signal.SIGKILL
    assert time.monotonic() - started < 3.0
    await _wait_dead([int(result.output.split()[0])])


async def test_background_leftover_is_killed_after_normal_exit(tmp_path: Path) -> None:
    with trio.fail_after(RUN_BOUND_S):
        result = await _runner(Events()).run("sleep 1000 & echo $!", tmp_path)
    assert result.exit_code == 0 and not result.timed_out
    await _wait_dead([int(result.output.strip())])


async def test_hundred_megabytes_keep_memory_bounded_and_head_tail_exact(tmp_path: Path) -> None:
    events = Events()
    command = f"printf START; head -c {HUNDRED_MB} /dev/zero; printf END"
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS watermark (VmHWM)
    baseline = _status_kib("VmRSS")
    with trio.fail_after(30):
        result = await _runner(events).run(command, tmp_path, timeout_s=30)
    growth = (_status_kib("VmHWM") - baseline) * 1024
    assert growth < RSS_GROWTH_LIMIT, f"peak RSS grew by {growth / 1e6:.1f} MB"
    assert result.exit_code == 0
    assert result.total_bytes == HUNDRED_MB + len("STARTEND")
    assert result.truncated
    limits = ExecLimits()
    assert len(result.head) == limits.head_bytes and len(result.tail) == limits.tail_bytes
    assert result.head.startswith(b"START\0\0") and result.tail.endswith(b"\0\0END")
    assert "bytes of output omitted" in result.output
    deltas = events.of(shell_pb2.ExecOutputDelta)
    assert 1 <= len(deltas) < 1000  # coalesced, not one per read
    assert all(len(d.chunk) <= limits.delta_max_bytes for d in deltas)
    streamed = sum(len(d.chunk) + d.skipped_bytes for d in deltas)
    assert streamed <= result.total_bytes


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/self/status")


async def test_deltas_are_rate_limited_but_complete_for_small_output(tmp_path: Path) -> None:
    events = Events()
    limits = ExecLimits(delta_interval_s=0.05)
    command = "for i in $(seq 1 40); do echo line$i; sleep 0.005; done"
    with trio.fail_after(RUN_BOUND_S):
        result = await _runner(events, limits=limits).run(command, tmp_path)
    deltas = events.of(shell_pb2.ExecOutputDelta)
    assert events.streamed() == result.head  # nothing skipped at this rate
    # 40 writes spread over >= 0.2 s: coalesced into far fewer deltas than writes
    assert len(deltas) < 40
    assert all(d.skipped_bytes == 0 for d in deltas)


async def test_max_deltas_caps_the_stream(tmp_path: Path) -> None:
    events = Events()
    limits = ExecLimits(delta_interval_s=0.001, max_deltas=3)
    with trio.fail_after(RUN_BOUND_S):
        await _runner(events, limits=limits).run("for i in $(seq 1 50); do echo $i; sleep 0.01; done", tmp_path)
    assert len(events.of(shell_pb2.ExecOutputDelta)) == 3


async def test_extra_env_wins_over_snapshot_and_stays_out_of_argv(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("export HTTP_PROXY=http://from-rc:1\nexport KEEP=rc\n")
    snap = await ShellSnapshotter(session_id="e", home=home, emit=Events(), shell=BASH, env=CLEAN_ENV).capture()
    assert snap is not None
    runner = CommandRunner(emit=Events(), snapshot=snap, env=CLEAN_ENV)
    proxy = "http://127.0.0.1:3128"
    argv = runner.argv_for("true", {"HTTP_PROXY": proxy})
    assert not any(proxy in arg for arg in argv)
    with trio.fail_after(RUN_BOUND_S):
        result = await runner.run('printf "%s %s" "$HTTP_PROXY" "$KEEP"', tmp_path, extra_env={"HTTP_PROXY": proxy})
    assert result.output == f"{proxy} rc"
    with pytest.raises(ValueError):
        runner.argv_for("true", {"BAD-NAME": "x"})


async def test_missing_cwd_raises_and_still_ends_the_call(tmp_path: Path) -> None:
    events = Events()
    with pytest.raises(ProcessStartError):
        await _runner(events).run("true", tmp_path / "missing", call_id="m")
    begin, end = events.items
    assert isinstance(begin, shell_pb2.ExecBegin) and isinstance(end, shell_pb2.ExecEnd)
    assert end.call_id == "m" and end.exit_code == -1 and b"could not start" in end.head


def test_output_capture_bounds() -> None:
    cap = OutputCapture(head_bytes=4, tail_bytes=3)
    for chunk in (b"ab", b"cdef", b"g", b"hijkl", b""):
        cap.feed(chunk)
    assert (cap.head, cap.tail, cap.total_bytes, cap.truncated, cap.omitted_bytes) == (
        b"abcd",
        b"jkl",
        12,
        True,
        5,
    )
    small = OutputCapture(head_bytes=4, tail_bytes=3)
    small.feed(b"abcdefg")
    assert (small.head + small.tail, small.truncated) == (b"abcdefg", False)
    assert render_output(b"ab", b"yz", 10) == "ab\n[... 10 bytes of output omitted ...]\nyz"
    assert render_output(b"ab", b"yz", 0) == "abyz"
    no_tail = OutputCapture(head_bytes=2, tail_bytes=0)
    no_tail.feed(b"abc")
    assert (no_tail.head, no_tail.tail, no_tail.truncated) == (b"ab", b"", True)
