"""Tests for HooksActor: hooks run in the actor's scope, and stopping the actor kills running hooks."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.message import Message

from actors.core import TaskCancelled, start_actor
from actors.hooks._actor import HooksActor, hooks_child_spec
from actors.hooks._discovery import discover
from actors.hooks._runner import HookRunner
from protos.supervisor.v1 import hooks_pb2
from tests.hook_fixtures.support import BASH, process_gone, wait_until

#: Bound on every wait in these tests.
WAIT_BOUND_S = 10.0


def make_actor(tmp_path: Path, doc: dict[str, Any], sink: list[Message]) -> HooksActor:
    (tmp_path / "layer").mkdir()
    (tmp_path / "layer/hooks.json").write_text(json.dumps(doc))
    (tmp_path / "layer/broken").mkdir()
    registry, warnings = discover([("project", tmp_path / "layer"), ("nonsense", tmp_path)])
    lock = threading.Lock()

    def emit(message: Message) -> None:
        with lock:
            sink.append(message)

    return HooksActor(registry=registry, cwd=tmp_path, emit=emit, session_id="s", shell_program=BASH, warnings=warnings)


def test_run_returns_the_aggregate_and_list_hooks_describes_them(tmp_path: Path) -> None:
    doc = {"hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "exit 2"}]}]}}
    events: list[Message] = []
    ref = start_actor(make_actor(tmp_path, doc, events))
    try:
        proxy = ref.proxy()
        result = proxy.run("PreToolUse", {"tool_name": "Bash"}).get(timeout=WAIT_BOUND_S).result(WAIT_BOUND_S)
        listing = proxy.list_hooks().get(timeout=WAIT_BOUND_S)
        runner = proxy.runner().get(timeout=WAIT_BOUND_S)
    finally:
        ref.stop(timeout=WAIT_BOUND_S)

    assert result.blocked and result.reason == "PreToolUse hook exited with code 2"
    assert [type(e).__name__ for e in events] == ["HookStarted", "HookCompleted"]
    assert [h.command for h in listing.hooks] == ["exit 2"] and not listing.disabled
    assert len(listing.warnings) == 1 and "nonsense" in listing.warnings[0]
    assert isinstance(runner, HookRunner)


def test_stopping_the_actor_kills_running_hooks(tmp_path: Path) -> None:
    command = f"echo $$ > {tmp_path}/shell.pid; sleep 30 & echo $! > {tmp_path}/bg.pid; wait"
    doc = {"hooks": {"Stop": [{"hooks": [{"type": "command", "command": command}]}]}}
    events: list[Message] = []
    ref = start_actor(make_actor(tmp_path, doc, events))
    try:
        future = ref.proxy().run("Stop", {}).get(timeout=WAIT_BOUND_S)
        bg_file, shell_file = tmp_path / "bg.pid", tmp_path / "shell.pid"
        assert wait_until(lambda: bg_file.exists() and bg_file.read_text().strip() != "", WAIT_BOUND_S)
        shell_pid, bg_pid = int(shell_file.read_text()), int(bg_file.read_text())
    finally:
        ref.stop(timeout=WAIT_BOUND_S)

    with pytest.raises(TaskCancelled):
        future.result(WAIT_BOUND_S)
    assert wait_until(lambda: process_gone(shell_pid) and process_gone(bg_pid), WAIT_BOUND_S)
    completed = [e for e in events if isinstance(e, hooks_pb2.HookCompleted)]
    assert len(completed) == 1 and completed[0].outcome == hooks_pb2.HOOK_OUTCOME_ERROR


def test_child_spec_builds_a_hooks_actor(tmp_path: Path) -> None:
    registry, warnings = discover([])
    spec = hooks_child_spec(registry, cwd=tmp_path, emit=lambda _m: None, session_id="s", shell_program=BASH)
    assert (spec.child_id, spec.actor_class, spec.kind) == ("hooks", HooksActor, "hooks")
    actor = spec.actor_class(**spec.kwargs)
    ref = start_actor(actor)
    try:
        assert len(ref.proxy().list_hooks().get(timeout=WAIT_BOUND_S).hooks) == 0
    finally:
        ref.stop(timeout=WAIT_BOUND_S)
    assert warnings == []
