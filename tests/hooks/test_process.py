"""Tests for hook process lifecycles: timeouts kill the process group, output is capped, cancellation kills."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import trio

from actors.core import TaskCancelled, get_host
from actors.hooks._runner import HookRunner, run_hooks
from protos.supervisor.v1 import hooks_pb2
from tests.hook_fixtures.support import (
    BASH,
    PROCESS_GONE_BOUND_S,
    RUN_BOUND_S,
    Events,
    hooks_doc,
    process_gone,
    read_pid,
    registry_for,
    wait_until,
)


async def test_timeout_kills_the_hook_and_its_background_grandchild(tmp_path: Path) -> None:
    command = f"echo $$ > {tmp_path}/shell.pid; sleep 30 & echo $! > {tmp_path}/bg.pid; wait"
    registry = registry_for(tmp_path, hooks_doc("PreToolUse", command, timeout=1))
    events = Events()

    start = time.monotonic()
    with trio.fail_after(RUN_BOUND_S):
        result = await run_hooks(
            registry, "PreToolUse", {"tool_name": "Bash"}, cwd=tmp_path, emit=events, shell_program=BASH
        )
    elapsed = time.monotonic() - start

    (only,) = result.results
    assert only.outcome == "timeout" and only.exit_code is None and not result.blocked
    assert 0.9 < elapsed < 4.0
    shell_pid, bg_pid = read_pid(tmp_path / "shell.pid"), read_pid(tmp_path / "bg.pid")
    assert wait_until(lambda: process_gone(shell_pid) and process_gone(bg_pid), PROCESS_GONE_BOUND_S)
    (completed,) = events.of(hooks_pb2.HookCompleted)
    assert completed.outcome == hooks_pb2.HOOK_OUTCOME_TIMEOUT and not completed.HasField("exit_code")
    assert "timed out" in result.errors[0]


async def test_huge_output_is_capped_and_background_holders_do_not_hold_the_run(tmp_path: Path) -> None:
    command = f"head -c 3000000 /dev/zero | tr '\\0' a; sleep 20 & echo $! > {tmp_path}/bg.pid; exit 0"
    registry = registry_for(tmp_path, hooks_doc("Stop", command))
    try:
        start = time.monotonic()
        with trio.fail_after(RUN_BOUND_S):
            result = await run_hooks(registry, "Stop", {}, cwd=tmp_path, shell_program=BASH)
        elapsed = time.monotonic() - start
        (only,) = result.results
        assert only.outcome == "success"
        assert only.stdout.endswith("[output truncated]") and len(only.stdout) < 1_100_000
        assert elapsed < 3.0  # the background sleep holds stdout open for 20 s
    finally:
        pid_file = tmp_path / "bg.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), 9)
            except ProcessLookupError:
                pass


def test_closing_the_actor_scope_kills_running_hooks(tmp_path: Path) -> None:
    command = f"echo $$ > {tmp_path}/shell.pid; sleep 30 & echo $! > {tmp_path}/bg.pid; wait"
    registry = registry_for(tmp_path, hooks_doc("PreToolUse", command))
    events = Events()
    runner = HookRunner(registry, cwd=tmp_path, emit=events, shell_program=BASH)
    scope = get_host().open_scope("hooks-test")

    future = scope.submit(runner.run, "PreToolUse", {"tool_name": "Bash"})
    shell_pid, bg_pid = read_pid(tmp_path / "shell.pid"), read_pid(tmp_path / "bg.pid")
    assert scope.close(RUN_BOUND_S)

    with pytest.raises(TaskCancelled):
        future.result(RUN_BOUND_S)
    assert wait_until(lambda: process_gone(shell_pid) and process_gone(bg_pid), PROCESS_GONE_BOUND_S)
    (completed,) = events.of(hooks_pb2.HookCompleted)
    assert completed.outcome == hooks_pb2.HOOK_OUTCOME_ERROR and "cancelled" in completed.message
