"""Tests for ShellSnapshotActor: capture in the actor's scope, exec through it, cleanup when it ends."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf.message import Message

from actors.core import TaskCancelled, start_actor
from actors.shell._actor import ShellSnapshotActor, shell_snapshot_child_spec
from actors.shell._capture import Snapshot
from actors.shell._exec import ExecResult
from actors.shell._files import SNAPSHOT_DIR_NAME
from actors.shell._session import SessionShell
from protos.supervisor.v1 import shell_pb2

BASH = shutil.which("bash") or "/bin/bash"
CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
#: Bound on every wait in these tests.
WAIT_BOUND_S = 10.0


class Sink:
    """A thread-safe emit sink."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[Message] = []

    def __call__(self, message: Message) -> None:
        with self._lock:
            self.items.append(message)

    def names(self) -> list[str]:
        with self._lock:
            return [type(m).__name__ for m in self.items]


def _wait_until(predicate: Callable[[], bool], bound_s: float = WAIT_BOUND_S) -> bool:
    deadline = time.monotonic() + bound_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)  # polling a bounded deadline
    return True


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _home(tmp_path: Path, rc: str) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text(rc)
    return home


def _actor(tmp_path: Path, home: Path, sink: Sink, **options: object) -> ShellSnapshotActor:
    return ShellSnapshotActor(
        session_id="sess",
        home=home,
        emit=sink,
        cwd=tmp_path,
        shell=BASH,
        env=CLEAN_ENV,
        **options,  # type: ignore[arg-type]
    )


def test_capture_exec_and_snapshot_removed_at_stop(tmp_path: Path) -> None:
    home = _home(tmp_path, "alias ll='echo LL-ALIAS'\nexport HTTP_PROXY=http://rc:1\n")
    sink = Sink()
    ref = start_actor(_actor(tmp_path, home, sink, extra_env={"HTTP_PROXY": "http://127.0.0.1:9"}))
    try:
        proxy = ref.proxy()
        snapshot = proxy.snapshot().get(timeout=WAIT_BOUND_S).result(WAIT_BOUND_S)
        assert isinstance(snapshot, Snapshot) and snapshot.path.exists()
        result = proxy.exec("ll; echo $HTTP_PROXY").get(timeout=WAIT_BOUND_S).result(WAIT_BOUND_S)
        request = shell_pb2.ExecRequest(session_id="sess", command="pwd; echo $X", env={"X": "from-request"})
        response = proxy.exec_request(request).get(timeout=WAIT_BOUND_S).result(WAIT_BOUND_S)
        assert isinstance(proxy.shell().get(timeout=WAIT_BOUND_S), SessionShell)
    finally:
        ref.stop(timeout=WAIT_BOUND_S)
    assert isinstance(result, ExecResult) and result.output.split() == ["LL-ALIAS", "http://127.0.0.1:9"]
    assert response.exit_code == 0 and response.output.split() == [str(tmp_path), "from-request"]
    assert not snapshot.path.exists()  # removed when the actor ended
    assert sink.names()[0] == "ShellSnapshotReady"
    assert sink.names().count("ExecBegin") == sink.names().count("ExecEnd") == 2


def test_exec_before_capture_finished_waits_for_the_snapshot(tmp_path: Path) -> None:
    marker = tmp_path / "rc-started"
    home = _home(tmp_path, f"touch {marker}\nsleep 0.3\nalias ll='echo LL-ALIAS'\n")
    sink = Sink()
    ref = start_actor(_actor(tmp_path, home, sink))
    try:
        future = ref.proxy().exec("ll").get(timeout=WAIT_BOUND_S)
        result = future.result(WAIT_BOUND_S)
    finally:
        ref.stop(timeout=WAIT_BOUND_S)
    assert result.output.strip() == "LL-ALIAS"
    assert sink.names().index("ShellSnapshotReady") < sink.names().index("ExecBegin")


def test_stopping_the_actor_kills_running_commands_and_capture(tmp_path: Path) -> None:
    home = _home(tmp_path, "")
    sink = Sink()
    ref = start_actor(_actor(tmp_path, home, sink))
    pid_file = tmp_path / "pids"
    try:
        proxy = ref.proxy()
        proxy.snapshot().get(timeout=WAIT_BOUND_S).result(WAIT_BOUND_S)
        future = proxy.exec(f"sleep 1000 & echo $$ $! > {pid_file}; sleep 1000").get(timeout=WAIT_BOUND_S)
        assert _wait_until(lambda: pid_file.exists() and len(pid_file.read_text().split()) == 2)
        pids = [int(p) for p in pid_file.read_text().split()]
        assert all(_alive(p) for p in pids)
    finally:
        ref.stop(timeout=WAIT_BOUND_S)
    with pytest.raises(TaskCancelled):
        future.result(WAIT_BOUND_S)
    assert _wait_until(lambda: not any(_alive(p) for p in pids))
    ends = [m for m in sink.items if isinstance(m, shell_pb2.ExecEnd)]
    assert len(ends) == 1 and ends[0].interrupted
    assert list((home / SNAPSHOT_DIR_NAME).iterdir()) == []


def test_inherited_snapshot_is_used_and_left_to_its_owner(tmp_path: Path) -> None:
    home = _home(tmp_path, "alias ll='echo LL-ALIAS'\n")
    parent_ref = start_actor(_actor(tmp_path, home, Sink()))
    try:
        parent = parent_ref.proxy().snapshot().get(timeout=WAIT_BOUND_S).result(WAIT_BOUND_S)
        assert parent is not None
        child_sink = Sink()
        child = ShellSnapshotActor(
            session_id="child", home=home, emit=child_sink, cwd=tmp_path, env=CLEAN_ENV, inherited=parent
        )
        child_ref = start_actor(child)
        try:
            snap = child_ref.proxy().snapshot().get(timeout=WAIT_BOUND_S).result(WAIT_BOUND_S)
            result = child_ref.proxy().exec("ll").get(timeout=WAIT_BOUND_S).result(WAIT_BOUND_S)
        finally:
            child_ref.stop(timeout=WAIT_BOUND_S)
        assert snap is not None and snap.inherited and snap.path == parent.path
        assert child._shell.snapshotter.processes_started == 0
        assert result.output.strip() == "LL-ALIAS"
        assert parent.path.exists()  # the child did not remove its parent's snapshot
    finally:
        parent_ref.stop(timeout=WAIT_BOUND_S)
    assert not parent.path.exists()


def test_child_spec_and_stale_cleanup_on_start(tmp_path: Path) -> None:
    home = _home(tmp_path, "")
    directory = home / SNAPSHOT_DIR_NAME
    directory.mkdir(mode=0o700)
    old = time.time() - 4 * 24 * 3600
    stale, live = directory / "gone.1.sh", directory / "other-live.1.sh"
    for path in (stale, live):
        path.write_text("#\n")
        os.utime(path, (old, old))
    sink = Sink()
    spec = shell_snapshot_child_spec(
        session_id="sess", home=home, emit=sink, cwd=tmp_path, shell=BASH, env=CLEAN_ENV,
        live_session_ids=lambda: {"other-live"},
    )  # fmt: skip
    assert (spec.child_id, spec.actor_class, spec.kind) == ("shell_snapshot", ShellSnapshotActor, "shell_snapshot")
    ref = start_actor(spec.actor_class(**spec.kwargs))
    try:
        assert ref.proxy().snapshot().get(timeout=WAIT_BOUND_S).result(WAIT_BOUND_S) is not None
    finally:
        ref.stop(timeout=WAIT_BOUND_S)
    assert not stale.exists() and live.exists()
