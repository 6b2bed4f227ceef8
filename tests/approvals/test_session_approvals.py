"""Command approvals end to end: real sessions over gRPC, the playbook model's shell tool, a client answering.

What counts is what the client was asked, what ran (on disk), and what the model got back.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from actors.auth import open_channel
from actors.gateway import serve
from actors.runtime import RuntimeOptions, SessionRuntime
from protos.supervisor.v1 import approvals_pb2, events_pb2, network_pb2, session_pb2, session_pb2_grpc, shell_pb2

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

WAIT_S = 60.0
Answer = Callable[[approvals_pb2.ExecApprovalRequested], "network_pb2.NetworkApprovalDecision.ValueType | None"]


def _calls(commands: list[str]) -> str:
    return ", ".join(f'{{ tool = "shell", arguments = {{ command = {json.dumps(c)} }} }}' for c in commands)


class Stack:
    """A runtime behind a gRPC server on 127.0.0.1:0, a workspace, and a client that answers questions."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.home = tmp_path / "home"
        self.ws = tmp_path / "ws"
        for path in (self.home, self.ws, tmp_path / "etc"):
            path.mkdir()
        self.runtime = SessionRuntime(RuntimeOptions(home=self.home, managed_dir=tmp_path / "etc"))
        self.server = serve(self.runtime, "127.0.0.1:0")
        self.channel = open_channel(self.server.address, self.server.token)
        self.stub = session_pb2_grpc.SessionServiceStub(self.channel)

    def start(self, config: str, playbook: str) -> str:
        (self.tmp / "plan.toml").write_text(playbook)
        (self.home / "config.toml").write_text(
            f'model_provider = "playbook"\nplaybook = {json.dumps(str(self.tmp / "plan.toml"))}\n{config}\n'
            '[shell]\nprogram = "/bin/bash"\n')
        return self.stub.StartSession(session_pb2.StartSessionRequest(cwd=str(self.ws)), timeout=WAIT_S).session_id

    def turn(self, sid: str, answer: Answer) -> list[events_pb2.Event]:
        """Submit, answer each question with ``answer`` (None: leave it), return the root's events of the turn."""
        self.stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="go"), timeout=WAIT_S)
        seen: list[events_pb2.Event] = []
        stream = self.stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid), timeout=WAIT_S)
        try:
            for event in stream:
                seen.append(event)
                kind = event.WhichOneof("msg")
                if kind == "exec_approval_requested":
                    decision = answer(event.exec_approval_requested)
                    if decision is not None:
                        threading.Thread(target=self.stub.ResolveApproval, args=(session_pb2.ResolveApprovalRequest(
                            session_id=sid, approval_id=event.exec_approval_requested.id, decision=decision),),
                            kwargs={"timeout": WAIT_S}).start()
                elif kind in ("turn_completed", "turn_aborted") and event.agent_path == "/root":
                    return seen
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


def _of(events: list[events_pb2.Event], kind: str) -> list[events_pb2.Event]:
    return [e for e in events if e.WhichOneof("msg") == kind]


def _outputs(events: list[events_pb2.Event]) -> list[str]:
    return [e.tool_call_end.output for e in _of(events, "tool_call_end")]


def test_untrusted_asks_for_rm_not_ls_and_a_denial_reaches_the_model(stack: Stack) -> None:
    (stack.ws / "x").write_text("keep me")
    plan = f'[[plans.root.steps]]\ncalls = [{_calls(["ls", "rm x"])}]\n[[plans.root.steps]]\ntext = "done"\n'
    sid = stack.start('approval_policy = "untrusted"', plan)
    events = stack.turn(sid, lambda q: network_pb2.NETWORK_APPROVAL_DECISION_DENY)
    asked = [e.exec_approval_requested.command for e in _of(events, "exec_approval_requested")]
    assert asked == ["rm x"]
    assert (stack.ws / "x").read_text() == "keep me"
    assert any("not approved" in o and "rm x" in o for o in _outputs(events)), _outputs(events)
    assert any(o.startswith("Exit code: 0") for o in _outputs(events))  # ls ran without a question


def test_no_answer_times_out_into_a_denial(stack: Stack) -> None:
    (stack.ws / "x").write_text("keep me")
    plan = f'[[plans.root.steps]]\ncalls = [{_calls(["rm x"])}]\n[[plans.root.steps]]\ntext = "done"\n'
    sid = stack.start('approval_policy = "untrusted"\n[approvals]\ntimeout_sec = 0.5', plan)
    events = stack.turn(sid, lambda q: None)
    (resolved,) = _of(events, "exec_approval_resolved")
    assert resolved.exec_approval_resolved.reviewer == approvals_pb2.APPROVAL_REVIEWER_TIMEOUT
    assert (stack.ws / "x").exists() and "not approved" in _outputs(events)[0]


def test_a_forbidden_rule_never_runs(stack: Stack) -> None:
    (stack.home / "rules").mkdir()
    (stack.home / "rules" / "default.rules").write_text(
        'prefix_rule(pattern = ["touch"], decision = "forbidden", justification = "no touching here")\n')
    plan = f'[[plans.root.steps]]\ncalls = [{_calls(["touch made-by-tool"])}]\n[[plans.root.steps]]\ntext = "d"\n'
    sid = stack.start('approval_policy = "never"', plan)
    with pytest.raises(grpc.RpcError) as refused:
        stack.stub.Exec(shell_pb2.ExecRequest(session_id=sid, command="echo a && touch made-by-rpc"), timeout=WAIT_S)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "no touching here" in (refused.value.details() or "")
    events = stack.turn(sid, lambda q: None)
    assert "no touching here" in _outputs(events)[0]
    assert not (stack.ws / "made-by-tool").exists() and not (stack.ws / "made-by-rpc").exists()
    assert _of(events, "exec_begin") == []  # refused before anything was spawned


def test_approve_for_session_asks_once_for_identical_commands_across_subagents(stack: Stack) -> None:
    plan = """
[[plans.root.steps]]
name = "spawn"
tool = "spawn_agent"
repeat = 3
arguments = { message = "job", agent_type = "worker" }

[[plans.root.steps]]
tool = "wait"
arguments = { agent_ids = "{result.spawn.agent_id}", timeout_ms = 50000, all = true }

[[plans.root.steps]]
text = "done"

[[plans."worker*".steps]]
tool = "shell"
repeat = 4
arguments = { command = "touch shared-marker" }

[[plans."worker*".steps]]
text = "worked"
"""
    config = 'approval_policy = "untrusted"\n[agents]\nmax_threads = 4\n[agent_types.worker]\nrole = "worker"'
    sid = stack.start(config, plan)
    events = stack.turn(sid, lambda q: network_pb2.NETWORK_APPROVAL_DECISION_APPROVE_FOR_SESSION)
    questions = _of(events, "exec_approval_requested")
    assert len(questions) == 1 and questions[0].agent_path.startswith("/root/")  # a subagent asked, root saw it
    ends = [e for e in _of(events, "exec_end") if e.agent_path != "/root"]
    assert len(ends) == 12 and all(e.exec_end.exit_code == 0 for e in ends)
    assert (stack.ws / "shared-marker").exists()


GUARDIAN = """
[[plans.root.steps]]
calls = [{calls}]

[[plans.root.steps]]
text = "done"

[[plans.guardian.steps]]
text = '{answer}'
"""


@pytest.mark.parametrize(("outcome", "command", "exists"), [
    ("allow", "echo hi > harmless.txt", True),
    ("deny", "rm -rf victim", True),
])
def test_guardian_decides_instead_of_the_client(stack: Stack, outcome: str, command: str, exists: bool) -> None:
    (stack.ws / "victim").mkdir()
    answer = '{{"outcome": "%s", "risk_level": "low", "rationale": "reviewed"}}' % outcome  # noqa: UP031
    plan = GUARDIAN.format(calls=_calls([command]), answer=answer)
    sid = stack.start('approval_policy = "untrusted"\napprovals_reviewer = "guardian_subagent"', plan)
    events = stack.turn(sid, lambda q: None)  # the question is shown, but the client does not answer it
    (resolved,) = _of(events, "exec_approval_resolved")
    assert resolved.exec_approval_resolved.reviewer == approvals_pb2.APPROVAL_REVIEWER_GUARDIAN
    assert resolved.exec_approval_resolved.rationale == "reviewed"
    if outcome == "allow":
        assert (stack.ws / "harmless.txt").read_text() == "hi\n"
    else:
        assert (stack.ws / "victim").is_dir() and "not approved" in _outputs(events)[0]


def test_guardian_circuit_breaker_aborts_the_turn(stack: Stack) -> None:
    for name in ("a", "b", "c"):
        (stack.ws / name).mkdir()
    steps = "".join(f'[[plans.root.steps]]\ncalls = [{_calls([f"rm -rf {n}"])}]\n\n' for n in ("a", "b", "c"))
    plan = steps + ('[[plans.root.steps]]\ntext = "done"\n\n[[plans.guardian.steps]]\n'
                    "text = '{{\"outcome\": \"deny\", \"rationale\": \"destructive\"}}'\n")
    config = ('approval_policy = "untrusted"\napprovals_reviewer = "guardian_subagent"\n'
              "[approvals]\nguardian_max_denials = 2")
    sid = stack.start(config, plan)
    events = stack.turn(sid, lambda q: None)
    (aborted,) = _of(events, "turn_aborted")
    assert aborted.turn_aborted.reason.startswith("aborted")
    assert len(_of(events, "exec_approval_requested")) == 2  # the third command was never put to anyone
    assert all((stack.ws / n).is_dir() for n in ("a", "b", "c"))
