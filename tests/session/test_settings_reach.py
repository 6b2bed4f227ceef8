"""Settings reach the children, and the shell is the user's: over gRPC against a real ``supervisor.py serve``
with a recording OpenAI-compatible server as the model.

- ``UpdateSettings(cwd)``: the next Exec, the model's ``exec_command`` in the next turn and a subagent spawned
  after it run in the new cwd; model, effort and instructions reach the next model request; thread name and
  approval policy are in force after a stop, a restart of the server and a resume (GetSession shows them).
- The shell snapshot is of the user's login shell with the user's own ``HOME``: variables, aliases and functions
  of ``~/.bashrc`` (bash) or ``~/.zshrc`` (zsh) reach Exec, ``$HOME`` is the user's, and the supervisor's state
  directory only holds the snapshot file (0600).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from protos.supervisor.v1 import agents_pb2, config_pb2, session_pb2, session_pb2_grpc, shell_pb2
from tests.helpers.fake_openai_server import FakeOpenAIServer, Reply, ScriptedCall
from tests.helpers.serve import ServeProcess, run_turn

#: Bound on one RPC (a turn against the local fake model included).
WAIT_S = 30.0
ZSH = shutil.which("zsh")

RC = {
    "bash": ("bashrc", 'export RC_VAR="from rc"\nalias rcalias="echo alias-ran"\nrcfunc() { echo "func-$1"; }\n'),
    "zsh": ("zshrc", 'export RC_VAR="from rc"\nalias rcalias="echo alias-ran"\nrcfunc() { echo "func-$1"; }\n'),
}


@pytest.fixture
def model() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def _state(tmp_path: Path, model: FakeOpenAIServer | None) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    if model is not None:
        (state / "config.toml").write_text(model.config_toml())
    return state


def _env(home: Path, shell: str) -> dict[str, str]:
    return {**os.environ, "HOME": str(home), "SHELL": shell}


def _exec(stub: session_pb2_grpc.SessionServiceStub, sid: str, command: str) -> str:
    reply = stub.Exec(shell_pb2.ExecRequest(session_id=sid, command=command), timeout=WAIT_S)
    assert reply.exit_code == 0, reply
    return str(reply.output)


def _outputs(body: dict[str, object]) -> list[str]:
    items = body["input"]
    assert isinstance(items, list)
    return [str(item.get("output")) for item in items if item.get("type") == "function_call_output"]


def test_new_cwd_reaches_exec_the_shell_tool_and_subagents(tmp_path: Path, model: FakeOpenAIServer) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    model.add_replies(Reply(calls=(ScriptedCall("exec_command", {"cmd": "pwd"}, call_id="call_unified"),
                                   ScriptedCall("shell", {"command": "pwd"}, call_id="call_classic"))),
                      Reply(text_deltas=("done",)))
    with ServeProcess(_state(tmp_path, model)) as server, server.channel() as channel:
        stub = server.stub(channel)
        sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(first)), timeout=WAIT_S).session_id
        assert _exec(stub, sid, "pwd").strip() == str(first)
        stub.UpdateSettings(session_pb2.UpdateSettingsRequest(
            session_id=sid, update=config_pb2.SessionSettingsUpdate(cwd=str(second))), timeout=WAIT_S)
        assert _exec(stub, sid, "pwd").strip() == str(second)
        run_turn(stub, sid, "where are you?")
        outputs = _outputs(model.requests[-1].body)  # exec_command's, then the classic shell tool's
        assert len(outputs) == 2 and all(str(second) in output for output in outputs), outputs
        model.add_replies(Reply(text_deltas=("child done",)))
        agent = stub.SpawnAgent(agents_pb2.SpawnAgentRequest(session_id=sid, message="hi"), timeout=WAIT_S)
        assert _exec(stub, agent.agent_id, "pwd").strip() == str(second)
        stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
        assert server.stop() == 0


def test_model_effort_and_instructions_reach_the_next_request(tmp_path: Path, model: FakeOpenAIServer) -> None:
    model.add_replies(Reply(text_deltas=("one",)), Reply(text_deltas=("two",)))
    with ServeProcess(_state(tmp_path, model)) as server, server.channel() as channel:
        stub = server.stub(channel)
        sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp_path)), timeout=WAIT_S).session_id
        run_turn(stub, sid, "before")
        before = model.requests[-1].body
        assert before["model"] == "fake-model" and "BE TERSE" not in str(before.get("instructions", ""))
        update = config_pb2.SessionSettingsUpdate()
        update.collaboration_mode.CopyFrom(config_pb2.CollaborationMode(
            mode="default", model="other-model", reasoning_effort=config_pb2.REASONING_EFFORT_HIGH,
            developer_instructions="BE TERSE"))
        stub.UpdateSettings(session_pb2.UpdateSettingsRequest(session_id=sid, update=update), timeout=WAIT_S)
        run_turn(stub, sid, "after")
        after = model.requests[-1].body
        assert after["model"] == "other-model"
        assert after.get("reasoning", {}).get("effort") == "high"  # type: ignore[union-attr]
        assert "BE TERSE" in str(after["instructions"])
        stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
        assert server.stop() == 0


def test_thread_name_and_approval_policy_survive_a_restart_and_resume(tmp_path: Path) -> None:
    state = _state(tmp_path, None)
    update = config_pb2.SessionSettingsUpdate(thread_name="papaya thread",
                                              approval_policy=config_pb2.APPROVAL_POLICY_UNTRUSTED)
    with ServeProcess(state) as server, server.channel() as channel:
        stub = server.stub(channel)
        sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp_path)), timeout=WAIT_S).session_id
        default = stub.GetSession(session_pb2.GetSessionRequest(session_id=sid), timeout=WAIT_S).session
        assert default.configuration.approval_policy != config_pb2.APPROVAL_POLICY_UNTRUSTED
        stub.UpdateSettings(session_pb2.UpdateSettingsRequest(session_id=sid, update=update), timeout=WAIT_S)
        stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
        assert server.stop() == 0
    with ServeProcess(state) as server, server.channel() as channel:
        stub = server.stub(channel)
        stub.StartSession(session_pb2.StartSessionRequest(mode=session_pb2.START_MODE_RESUME, session_id=sid),
                          timeout=WAIT_S)
        info = stub.GetSession(session_pb2.GetSessionRequest(session_id=sid), timeout=WAIT_S).session
        assert info.status == session_pb2.SESSION_STATUS_RUNNING
        assert info.configuration.thread_name == "papaya thread"
        assert info.configuration.approval_policy == config_pb2.APPROVAL_POLICY_UNTRUSTED
        stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
        assert server.stop() == 0


@pytest.mark.parametrize("kind", ["bash", pytest.param("zsh", marks=pytest.mark.skipif(
    ZSH is None, reason="zsh is not installed (make setup installs it)"))])
def test_exec_sees_the_users_rc_file_and_home(tmp_path: Path, kind: str) -> None:
    home = tmp_path / "user-home"
    home.mkdir()
    rc_name, body = RC[kind]
    (home / f".{rc_name}").write_text(body)
    shell = shutil.which(kind)
    assert shell is not None
    state = _state(tmp_path, None)
    project = tmp_path / "project"
    project.mkdir()
    with ServeProcess(state, env=_env(home, shell)) as server, server.channel() as channel:
        stub = server.stub(channel)
        sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(project)), timeout=WAIT_S).session_id
        out = _exec(stub, sid, 'echo "$HOME|$RC_VAR"; rcalias; rcfunc x; pwd')
        assert out.split("\n")[:4] == [f"{home}|from rc", "alias-ran", "func-x", str(project)], out
        snapshots = list((state / "shell_snapshots").iterdir())
        assert len(snapshots) == 1 and stat.S_IMODE(snapshots[0].stat().st_mode) == 0o600
        assert sorted(p.name for p in home.iterdir()) == [f".{rc_name}"]  # nothing of ours in the user's home
        stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
        assert not list((state / "shell_snapshots").iterdir())
        assert server.stop() == 0


def test_a_secret_in_the_users_environment_is_not_written_to_the_snapshot(tmp_path: Path) -> None:
    home = tmp_path / "user-home"
    home.mkdir()
    (home / ".bashrc").write_text('export MY_API_KEY="sk-rc-secret-value"\n')
    state = _state(tmp_path, None)
    bash = shutil.which("bash")
    assert bash is not None
    with ServeProcess(state, env={**_env(home, bash), "OTHER_TOKEN": "tok-inherited-secret"}) as server, \
            server.channel() as channel:
        stub = server.stub(channel)
        sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp_path)), timeout=WAIT_S).session_id
        assert _exec(stub, sid, 'echo "$OTHER_TOKEN"').strip() == "tok-inherited-secret"
        (snapshot,) = (state / "shell_snapshots").iterdir()
        text = snapshot.read_text()
        assert "tok-inherited-secret" not in text and "sk-rc-secret-value" not in text
        stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
        assert server.stop() == 0

