"""The escape corpus, end to end over gRPC: through the Exec RPC and through the model's shell tool.

Every attempt is a real command in a real session (bash, bubblewrap, the session's proxy); what counts is what
reached the disk or the listener: 0 escapes, and 0 over-blocked (the allowed writes work, full access works,
the proxy stays reachable under network limited).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from actors.auth import open_channel
from actors.gateway import serve
from actors.runtime import RuntimeOptions, SessionRuntime
from protos.supervisor.v1 import session_pb2, session_pb2_grpc, shell_pb2

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

WAIT_S = 60.0
PY = sys.executable

Start = Callable[[str], str]


class Stack:
    """A runtime behind a real gRPC server on 127.0.0.1:0, and the directories of one test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.home = tmp_path / "home"
        self.ws = tmp_path / "ws"
        self.other = tmp_path / "other"
        for path in (self.home, self.ws, self.other, tmp_path / "etc"):
            path.mkdir()
        self.runtime = SessionRuntime(RuntimeOptions(home=self.home, managed_dir=tmp_path / "etc"))
        self.server = serve(self.runtime, "127.0.0.1:0")
        self.channel = open_channel(self.server.address, self.server.token)
        self.stub = session_pb2_grpc.SessionServiceStub(self.channel)

    def start(self, config: str, plan: list[str] | None = None) -> str:
        """A session in ``ws`` with ``config``; ``plan``: shell commands the playbook model runs in one turn."""
        text = 'model_provider = "playbook"\n' + config + '\n[shell]\nprogram = "/bin/bash"\n'
        if plan is not None:
            calls = ", ".join(f'{{ tool = "shell", arguments = {{ command = {json.dumps(c)} }} }}' for c in plan)
            (self.tmp / "plan.toml").write_text(
                f"[[plans.root.steps]]\ncalls = [{calls}]\n\n[[plans.root.steps]]\ntext = \"done\"\n")
            text = f"playbook = {json.dumps(str(self.tmp / 'plan.toml'))}\n" + text
        (self.home / "config.toml").write_text(text)
        started = self.stub.StartSession(session_pb2.StartSessionRequest(cwd=str(self.ws)), timeout=WAIT_S)
        return started.session_id

    def exec(self, sid: str, command: str) -> shell_pb2.ExecResponse:
        """One command through the Exec RPC."""
        return self.stub.Exec(shell_pb2.ExecRequest(session_id=sid, command=command), timeout=WAIT_S)

    def turn(self, sid: str) -> list[str]:
        """Run the playbook's turn; returns the shell tool's outputs (in completion order)."""
        self.stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="go"), timeout=WAIT_S)
        outputs = []
        stream = self.stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid), timeout=WAIT_S)
        try:
            for event in stream:
                kind = event.WhichOneof("msg")
                if kind == "tool_call_end":
                    outputs.append(event.tool_call_end.output)
                elif kind in ("turn_completed", "turn_aborted"):
                    return outputs
        finally:
            stream.cancel()
        raise AssertionError("the turn did not end")

    def close(self) -> None:
        self.channel.close()
        self.server.stop()
        self.runtime.shutdown()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    built = Stack(tmp_path)
    try:
        yield built
    finally:
        built.close()


@pytest.fixture
def home_target() -> Iterator[Path]:
    """A name in the real ``$HOME`` that must never be created (removed afterwards if it was)."""
    target = Path(os.environ.get("HOME", "/root")) / f"escape-{uuid.uuid4().hex}"
    try:
        yield target
    finally:
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _writes(target: Path, tag: str) -> list[str]:
    """Every way the corpus tries to create something below ``target`` (names end in ``tag``)."""
    return [
        f"touch {target}/touched-{tag}",
        f"echo x > {target}/redirected-{tag}",
        f"cp /etc/hostname {target}/copied-{tag}",
        f"{PY} -c \"open('{target}/opened-{tag}', 'w').write('x')\"",
        f"mkdir {target}/made-{tag}",
    ]


def _created(directory: Path, tag: str) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(tag)) if directory.exists() else []


def test_read_only_blocks_every_write_over_exec_and_the_shell_tool(stack: Stack, home_target: Path) -> None:
    home_target.mkdir()  # a directory in the real $HOME the command knows about
    targets = [stack.ws, home_target, stack.other]
    plan = [c for t in targets for c in _writes(t, "tool")]
    sid = stack.start('sandbox_mode = "read-only"\n', plan)
    for target in targets:
        for command in _writes(target, "rpc"):
            assert stack.exec(sid, command).exit_code != 0, command
    outputs = stack.turn(sid)
    assert len(outputs) == len(plan) and all("Exit code: 0" not in o for o in outputs), outputs
    escapes = [name for t in targets for tag in ("rpc", "tool") for name in _created(t, tag)]
    assert escapes == []
    assert stack.exec(sid, "echo ok > /dev/null && echo fine").output.strip() == "fine"  # not over-blocked


def test_workspace_write_allows_the_workspace_only(stack: Stack) -> None:
    (stack.ws / "out").symlink_to(stack.other)
    config = ('sandbox_mode = "workspace-write"\n[sandbox_workspace_write]\n'
              "exclude_slash_tmp = true\nexclude_tmpdir_env_var = true\n")
    plan = _writes(stack.other, "tool") + _writes(stack.ws / "out", "tool2") + _writes(stack.ws, "toolok")
    sid = stack.start(config, plan)
    for command in _writes(stack.other, "rpc") + _writes(stack.ws / "out", "rpc2"):
        assert stack.exec(sid, command).exit_code != 0, command
    for command in _writes(stack.ws, "rpcok"):
        assert stack.exec(sid, command).exit_code == 0, command
    outputs = stack.turn(sid)
    assert sum("Exit code: 0" in o for o in outputs) == 5, outputs  # the calls run concurrently: any order
    assert [n for tag in ("rpc", "tool", "rpc2", "tool2") for n in _created(stack.other, tag)] == []
    assert len(_created(stack.ws, "rpcok")) == 5 and len(_created(stack.ws, "toolok")) == 5  # 0 over-blocked


def test_full_access_writes_anywhere(stack: Stack) -> None:
    sid = stack.start('sandbox_mode = "danger-full-access"\n', _writes(stack.other, "tool"))
    for command in _writes(stack.other, "rpc"):
        assert stack.exec(sid, command).exit_code == 0, command
    stack.turn(sid)
    assert len(_created(stack.other, "rpc")) == 5 and len(_created(stack.other, "tool")) == 5


def _pending(listener: socket.socket) -> int:
    listener.setblocking(False)
    count = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def _connects(port: int) -> list[str]:
    return [
        f"{PY} -c \"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)\"",
        f"curl -s --noproxy '*' --max-time 2 http://127.0.0.1:{port}/",
        f"exec 3<>/dev/tcp/127.0.0.1/{port}",
    ]


@pytest.mark.parametrize("mode", ["off", "limited"])
def test_network_off_and_limited_reach_no_listener(stack: Stack, mode: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        config = f'[network]\nmode = "{mode}"\ndenied_domains = ["blocked.example"]\n'
        sid = stack.start(config, _connects(port))
        for command in _connects(port):
            assert stack.exec(sid, command).exit_code != 0, command
        outputs = stack.turn(sid)
        assert all("Exit code: 0" not in o for o in outputs), outputs
        assert _pending(listener) == 0
        proxy = stack.exec(sid, "curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://blocked.example/")
        if mode == "limited":  # the proxy itself still answers (and refuses the denied host)
            assert proxy.output.strip() == "403", proxy.output
        else:
            assert proxy.exit_code != 0


def test_full_network_reaches_the_listener(stack: Stack) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        sid = stack.start('[network]\nmode = "full"\n')
        for command in _connects(port):
            stack.exec(sid, command)
        assert _pending(listener) == len(_connects(port))  # the corpus does connect when allowed: it bites
