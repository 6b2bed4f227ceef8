"""The lifecycle hooks a session fires itself, each with a real hook script that records (and checks) its stdin
JSON: SubagentStart and SubagentStop for a subagent (whose end of turn is not the root's Stop), SessionEnd
before a root session's stop returns, PreCompact before a compaction (the Compact RPC's, trigger manual),
PermissionRequest answering an approval question in the client's place."""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.auth import open_channel
from actors.gateway import serve
from actors.runtime import RuntimeOptions, SessionRuntime
from actors.turn import COMPACT_PROMPT
from protos.supervisor.v1 import agents_pb2, session_pb2, session_pb2_grpc
from tests.helpers.fake_openai_server import FakeOpenAIServer, Reply
from tests.hook_fixtures.support import FIXTURES

WAIT_S = 30.0
EVENTS = ("Stop", "SubagentStart", "SubagentStop", "SessionEnd", "PreCompact")


@pytest.fixture
def model() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def stack(tmp_path: Path, model: FakeOpenAIServer) -> Iterator[tuple[session_pb2_grpc.SessionServiceStub, Path]]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(model.config_toml())
    record = f"{sys.executable} {FIXTURES / 'record_input.py'} {tmp_path / 'hooks.jsonl'}"
    (home / "hooks.json").write_text(json.dumps({"hooks": {
        event: [{"hooks": [{"type": "command", "command": record}]}] for event in EVENTS}}))
    runtime = SessionRuntime(RuntimeOptions(home=home, managed_dir=tmp_path / "etc"))
    server = serve(runtime, "127.0.0.1:0")
    channel = open_channel(server.address, server.token)
    try:
        yield session_pb2_grpc.SessionServiceStub(channel), tmp_path
    finally:
        channel.close()
        server.stop()
        runtime.shutdown()


def recorded(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "hooks.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_recorded(tmp: Path, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        got = recorded(tmp)
        if len(got) >= count:
            return got
        time.sleep(0.02)
    raise AssertionError(f"only {recorded(tmp)} after {WAIT_S}s")


def test_a_subagent_fires_subagent_start_and_stop_not_the_roots_stop(stack: Any, model: FakeOpenAIServer) -> None:
    stub, tmp = stack
    model.add_replies(Reply(text_deltas=("child done",)))
    sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp)), timeout=WAIT_S).session_id
    child = stub.SpawnAgent(agents_pb2.SpawnAgentRequest(session_id=sid, message="hello child"), timeout=WAIT_S)
    waited = stub.WaitAgents(agents_pb2.WaitAgentsRequest(session_id=sid, agent_ids=[child.agent_id],
                                                          timeout_ms=20_000), timeout=WAIT_S)
    assert waited.finished[0].last_message == "child done"
    by_event = {r["hook_event_name"]: r for r in wait_recorded(tmp, 2)}  # SubagentStart is not waited for
    start, stop = by_event["SubagentStart"], by_event["SubagentStop"]
    assert start["agent_id"] == child.agent_id and start["agent_type"] == "worker"
    assert start["session_id"] == sid  # hooks speak of the root session; the agent is named by agent_id
    assert stop["agent_id"] == child.agent_id and stop["stop_hook_active"] is False
    # the root's own end of turn is Stop
    model.add_replies(Reply(text_deltas=("root done",)))
    stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="hi"), timeout=WAIT_S)
    root_stop = wait_recorded(tmp, 3)[2]
    assert root_stop["hook_event_name"] == "Stop" and "agent_id" not in root_stop
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
    ends = [r for r in recorded(tmp) if r["hook_event_name"] == "SessionEnd"]
    assert len(ends) == 1  # the subagent's stop fires none


def test_session_end_runs_before_the_stop_returns(stack: Any) -> None:
    stub, tmp = stack
    sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp)), timeout=WAIT_S).session_id
    assert recorded(tmp) == []
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
    (end,) = recorded(tmp)  # no polling: the stop waited for the hook
    assert end["hook_event_name"] == "SessionEnd"
    assert end["session_id"] == sid and end["reason"] == "requested" and end["cwd"] == str(tmp)


def test_pre_compact_runs_before_the_compact_rpcs_summary_request(stack: Any, model: FakeOpenAIServer) -> None:
    stub, tmp = stack
    model.add_replies(Reply(text_deltas=("answer 1",)), Reply(text_deltas=("SUMMARY",)))
    sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp)), timeout=WAIT_S).session_id
    stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="one"), timeout=WAIT_S)
    task = stub.Compact(session_pb2.CompactRequest(session_id=sid, instructions="keep the numbers"),
                        timeout=WAIT_S)
    ended = None
    for event in stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid), timeout=WAIT_S):
        if event.task_id == task.task_id and event.WhichOneof("msg") in ("turn_completed", "turn_aborted"):
            ended = event
            break
    assert ended is not None and ended.WhichOneof("msg") == "turn_completed", ended
    assert ended.turn_completed.last_agent_message == "SUMMARY"
    stop, pre = recorded(tmp)  # the compaction task is no turn: no Stop hook after it
    assert stop["hook_event_name"] == "Stop"
    assert pre["hook_event_name"] == "PreCompact"
    assert pre["trigger"] == "manual" and pre["custom_instructions"] == "keep the numbers"
    last = model.requests[-1].body["input"][-1]
    assert last["role"] == "user" and COMPACT_PROMPT in str(last["content"]) and "keep the numbers" in str(last)
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
@pytest.mark.parametrize("behavior", ["allow", "deny"])
def test_permission_request_hooks_answer_an_approval_question(tmp_path: Path, behavior: str) -> None:
    home, ws = tmp_path / "home", tmp_path / "ws"
    home.mkdir()
    ws.mkdir()
    (ws / "x").write_text("keep me")
    (tmp_path / "plan.toml").write_text(
        '[[plans.root.steps]]\ntool = "shell"\narguments = { command = "rm x" }\n'
        '[[plans.root.steps]]\ntext = "{results[0][0]}"\n')
    (home / "config.toml").write_text(
        f'model_provider = "playbook"\nplaybook = {json.dumps(str(tmp_path / "plan.toml"))}\n'
        'approval_policy = "untrusted"\n[shell]\nprogram = "/bin/bash"\n')
    log = tmp_path / "permission.jsonl"
    answer = f"{sys.executable} {FIXTURES / 'permission_answer.py'} {log} {behavior}"
    (home / "hooks.json").write_text(json.dumps({"hooks": {"PermissionRequest": [
        {"matcher": "shell", "hooks": [{"type": "command", "command": answer}]}]}}))
    runtime = SessionRuntime(RuntimeOptions(home=home, managed_dir=tmp_path / "etc"))
    server = serve(runtime, "127.0.0.1:0")
    channel = open_channel(server.address, server.token)
    try:
        stub = session_pb2_grpc.SessionServiceStub(channel)
        sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(ws)), timeout=WAIT_S).session_id
        task_id = stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="go"), timeout=WAIT_S).task_id
        seen = []
        for event in stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid), timeout=WAIT_S):
            seen.append(event.WhichOneof("msg"))
            if event.task_id == task_id and seen[-1] in ("turn_completed", "turn_aborted"):
                last = event.turn_completed.last_agent_message
                break
        assert "exec_approval_requested" not in seen  # the hook answered: the client was never asked
        (hook_input,) = [json.loads(line) for line in log.read_text().splitlines()]
        assert hook_input["tool_name"] == "shell" and hook_input["tool_input"]["command"] == "rm x"
        assert (ws / "x").exists() == (behavior == "deny")
        if behavior == "deny":
            assert "denied by a PermissionRequest hook (the hook said deny)" in last
        stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
    finally:
        channel.close()
        server.stop()
        runtime.shutdown()
