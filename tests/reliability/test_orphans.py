"""No orphans: what a session starts (an Exec command, a unified-exec command, an MCP stdio server) dies with the
server, even on ``kill -9``, and a restarted server finds none of it (issue 16, finding 5)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc
import pytest

from actors.core import OWNER_ENV, owner_token
from protos.supervisor.v1 import session_pb2, shell_pb2
from tests.helpers.processes import adopting_orphans, cmdline, descendants, is_running, marked, wait_for
from tests.helpers.serve import ServeProcess
from tests.mcp_servers.fixtures import TOOLBOX

WAIT_S = 30.0
#: Bound on the watchdog's sweep after the server died (one read of every process's environment).
SWEEP_BOUND_S = 10.0
LONG_COMMAND = "sleep 300"

PLAN = """
[[plans.root.steps]]
tool = "exec_command"
arguments = { cmd = "sleep 300", yield_time_ms = 100 }

[[plans.root.steps]]
tool = "mcp__toolbox__sleep"
arguments = { seconds = 300 }

[[plans.root.steps]]
text = "done"
"""


@pytest.fixture
def adopt() -> Iterator[None]:
    """What the killed server leaves is reparented to this test, which reaps it (no zombie under PID 1)."""
    with adopting_orphans():
        yield


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "plan.toml").write_text(PLAN)
    (home / "config.toml").write_text(
        f'playbook = "{tmp_path / "plan.toml"}"\n'
        f'[mcp_servers.toolbox]\ncommand = "{sys.executable}"\nargs = ["{TOOLBOX}"]\n'
    )
    return home


def _long_runners(server: ServeProcess) -> dict[str, set[int]]:
    tree = descendants(server.pid)
    return {
        "sleep": {pid for pid in tree if cmdline(pid) == LONG_COMMAND},
        "toolbox": {pid for pid in tree if TOOLBOX in cmdline(pid)},
    }


def _start_everything(server: ServeProcess, channel: grpc.Channel, cwd: Path) -> tuple[set[int], Future[Any]]:
    """A turn with a unified-exec ``sleep 300`` and an MCP call in flight, plus an Exec ``sleep 300``."""
    stub = server.stub(channel)
    sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(cwd)), timeout=WAIT_S).session_id
    stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="go"), timeout=WAIT_S)
    exec_call = stub.Exec.future(shell_pb2.ExecRequest(session_id=sid, command=LONG_COMMAND), timeout=WAIT_S * 10)
    wait_for(lambda: len(_long_runners(server)["sleep"]) >= 2 and _long_runners(server)["toolbox"], WAIT_S,
             "the Exec and unified-exec sleeps and the MCP server")
    found = _long_runners(server)
    return found["sleep"] | found["toolbox"] | descendants(server.pid), exec_call


def _assert_none_left(pids: set[int], owner: str) -> None:
    wait_for(lambda: not any(is_running(pid) for pid in pids) and not marked(OWNER_ENV, owner), SWEEP_BOUND_S,
             f"every process of the killed server to die (left: {[cmdline(p) for p in pids if is_running(p)]})")


def _owner(server: ServeProcess) -> str:
    return owner_token(server.pid)


def test_kill_9_of_serve_kills_every_process_it_started(tmp_path: Path, adopt: None) -> None:
    home = _home(tmp_path)
    with ServeProcess(home) as server, server.channel() as channel:
        started, exec_call = _start_everything(server, channel, tmp_path)
        owner = _owner(server)
        assert marked(OWNER_ENV, owner) >= _long_runners(server)["sleep"]  # every child carries the mark
        server.kill9()
        _assert_none_left(started, owner)
        with pytest.raises(grpc.RpcError):
            exec_call.result(WAIT_S)
    assert not (home / "processes").exists() or not list((home / "processes").iterdir())
    with ServeProcess(home) as server, server.channel() as channel:
        assert not any(is_running(pid) for pid in started)  # a restarted server finds none of them
        assert server.stop() == 0


def test_a_restart_kills_what_a_dead_server_and_its_dead_watchdog_left(tmp_path: Path, adopt: None) -> None:
    home = _home(tmp_path)
    with ServeProcess(home) as server, server.channel() as channel:
        started, exec_call = _start_everything(server, channel, tmp_path)
        watchdogs = {pid for pid in descendants(server.pid) if "_watchdog.py" in cmdline(pid)}
        assert len(watchdogs) == 1
        os.kill(watchdogs.pop(), signal.SIGKILL)  # both die: only the record in the home is left
        server.kill9()
        with pytest.raises(grpc.RpcError):
            exec_call.result(WAIT_S)
    assert any(is_running(pid) for pid in started)  # nothing killed them yet
    records = list((home / "processes").iterdir())
    assert len(records) == 1
    with ServeProcess(home) as server:
        _assert_none_left(started, records[0].name.removesuffix(".groups"))
        assert not records[0].exists()
        assert server.stop() == 0
