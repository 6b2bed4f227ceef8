"""History is the log, seen from outside: over gRPC against a real ``supervisor.py serve`` whose model is a
recording OpenAI-compatible server. After a turn, a stop, a restart of the server and a resume, the next model
request holds the earlier user message and the earlier answer; the same for a fork, for a ``fork_context``
subagent the model spawns, for a fork after turn 1 of 3 (turn 1 only) and for a subagent resumed with
ResumeAgent (its own history). A long conversation against a small context limit compacts (ContextCompacted,
window generation 1, the next request starts from the summary) and its resume keeps window generation 1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.turn import COMPACT_PROMPT, SUMMARY_PREFIX
from protos.supervisor.v1 import agents_pb2, session_pb2, session_pb2_grpc
from tests.helpers.fake_openai_server import FakeOpenAIServer, RecordedRequest, Reply, ScriptedCall
from tests.helpers.serve import ServeProcess, run_turn

#: Bound on one RPC (a turn against the local fake model included).
WAIT_S = 30.0

Stub = session_pb2_grpc.SessionServiceStub


@pytest.fixture
def model() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def state(tmp_path: Path, model: FakeOpenAIServer) -> Path:
    state = tmp_path / "state"
    state.mkdir()
    (state / "config.toml").write_text(model.config_toml())
    return state


def said(request: RecordedRequest) -> list[tuple[str, str]]:
    """A request's input as (role or item type, text or call id) pairs."""
    out = []
    for item in request.body["input"]:
        kind = item.get("type")
        if kind in ("function_call", "function_call_output"):
            out.append((str(kind), str(item["call_id"])))
        else:
            content = item.get("content")
            if isinstance(content, list):
                content = "".join(str(part.get("text", "")) for part in content)
            out.append((str(item.get("role", "")), str(content)))
    return out


def start(stub: Stub, cwd: Path, **fields: Any) -> str:
    return str(stub.StartSession(session_pb2.StartSessionRequest(cwd=str(cwd), **fields), timeout=WAIT_S).session_id)


def test_resume_after_a_server_restart_sends_the_earlier_turn(state: Path, model: FakeOpenAIServer,
                                                              tmp_path: Path) -> None:
    model.add_replies(Reply(text_deltas=("noted ", "PAPAYA")), Reply(text_deltas=("PAPAYA",)))
    with ServeProcess(state) as serve, serve.channel() as channel:
        stub = serve.stub(channel)
        sid = start(stub, tmp_path)
        run_turn(stub, sid, "remember the word PAPAYA")
        stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
        assert serve.stop() == 0
    with ServeProcess(state) as serve, serve.channel() as channel:
        stub = serve.stub(channel)
        assert start(stub, tmp_path, mode=session_pb2.START_MODE_RESUME, session_id=sid) == sid
        run_turn(stub, sid, "which word?")
        assert said(model.requests[-1]) == [
            ("user", "remember the word PAPAYA"), ("assistant", "noted PAPAYA"), ("user", "which word?")]
        stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)


def test_fork_whole_and_after_turn_one_of_three(state: Path, model: FakeOpenAIServer, tmp_path: Path) -> None:
    model.add_replies(*(Reply(text_deltas=(f"answer {n}",)) for n in range(1, 6)))
    with ServeProcess(state) as serve, serve.channel() as channel:
        stub = serve.stub(channel)
        sid = start(stub, tmp_path)
        for text in ("one", "two", "three"):
            run_turn(stub, sid, text)
        whole = start(stub, tmp_path, mode=session_pb2.START_MODE_FORK, session_id=sid)
        run_turn(stub, whole, "four")
        assert said(model.requests[-1]) == [
            ("user", "one"), ("assistant", "answer 1"), ("user", "two"), ("assistant", "answer 2"),
            ("user", "three"), ("assistant", "answer 3"), ("user", "four")]
        early = start(stub, tmp_path, mode=session_pb2.START_MODE_FORK, session_id=sid, fork_after_turn=1)
        assert early not in (sid, whole)
        run_turn(stub, early, "again")
        assert said(model.requests[-1]) == [("user", "one"), ("assistant", "answer 1"), ("user", "again")]
        for session in (sid, whole, early):
            stub.StopSession(session_pb2.StopSessionRequest(session_id=session), timeout=WAIT_S)


def test_a_fork_context_subagent_the_model_spawns_gets_the_parents_turns(state: Path, model: FakeOpenAIServer,
                                                                         tmp_path: Path) -> None:
    def route(request: RecordedRequest) -> Reply | None:
        if said(request)[-1] == ("user", "child task"):
            return Reply(text_deltas=("child saw PAPAYA",))
        return None

    model.router = route
    model.add_replies(
        Reply(text_deltas=("noted PAPAYA",)),
        Reply(calls=(ScriptedCall("spawn_agent", {"message": "child task", "fork_context": True},
                                  call_id="call_spawn"),)),
        Reply(text_deltas=("spawned",)),
    )
    with ServeProcess(state) as serve, serve.channel() as channel:
        stub = serve.stub(channel)
        sid = start(stub, tmp_path)
        run_turn(stub, sid, "remember the word PAPAYA")
        run_turn(stub, sid, "ask a helper")
        agents = stub.ListAgents(agents_pb2.ListAgentsRequest(session_id=sid), timeout=WAIT_S).agents
        assert len(agents) == 1
        waited = stub.WaitAgents(agents_pb2.WaitAgentsRequest(session_id=sid, agent_ids=[agents[0].agent_id],
                                                              timeout_ms=20_000), timeout=WAIT_S)
        assert waited.finished[0].last_message == "child saw PAPAYA"
        (child_request,) = [r for r in model.requests if said(r)[-1] == ("user", "child task")]
        assert said(child_request)[:3] == [
            ("user", "remember the word PAPAYA"), ("assistant", "noted PAPAYA"), ("user", "ask a helper")]
        stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)


def test_resume_agent_restores_the_subagents_own_history(state: Path, model: FakeOpenAIServer,
                                                         tmp_path: Path) -> None:
    model.add_replies(Reply(text_deltas=("root answer",)), Reply(text_deltas=("child answer",)),
                      Reply(text_deltas=("again",)))
    with ServeProcess(state) as serve, serve.channel() as channel:
        stub = serve.stub(channel)
        sid = start(stub, tmp_path)
        run_turn(stub, sid, "root question")
        child = stub.SpawnAgent(agents_pb2.SpawnAgentRequest(session_id=sid, message="child question"),
                                timeout=WAIT_S).agent_id
        waited = stub.WaitAgents(agents_pb2.WaitAgentsRequest(session_id=sid, agent_ids=[child],
                                                              timeout_ms=20_000), timeout=WAIT_S)
        assert waited.finished[0].last_message == "child answer"
        stub.CloseAgent(agents_pb2.CloseAgentRequest(session_id=sid, agent_id=child), timeout=WAIT_S)
        stub.ResumeAgent(agents_pb2.ResumeAgentRequest(session_id=sid, agent_id=child), timeout=WAIT_S)
        run_turn(stub, child, "child follow-up")
        assert said(model.requests[-1]) == [
            ("user", "child question"), ("assistant", "child answer"), ("user", "child follow-up")]
        stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)


def test_a_long_conversation_compacts_and_resume_keeps_the_window(state: Path, model: FakeOpenAIServer,
                                                                  tmp_path: Path) -> None:
    config = state / "config.toml"
    config.write_text("model_auto_compact_token_limit = 100\n" + config.read_text())
    model.add_replies(
        Reply(text_deltas=("answer 1",), input_tokens=30, output_tokens=10),
        Reply(text_deltas=("answer 2",), input_tokens=90, output_tokens=20),  # 110 tokens: past the limit
        Reply(text_deltas=("SUMMARY-XYZ",)),
        Reply(text_deltas=("answer 3",)),
        Reply(text_deltas=("answer 4",)),
    )
    summary = f"{SUMMARY_PREFIX}\nSUMMARY-XYZ"
    with ServeProcess(state) as serve, serve.channel() as channel:
        stub = serve.stub(channel)
        sid = start(stub, tmp_path)
        for text in ("one", "two", "three"):
            run_turn(stub, sid, text)
        before, asked, after = model.requests[1:4]
        assert before.headers["x-codex-window-id"] == f"{sid}:0"
        assert said(asked)[:-1] == [("user", "one"), ("assistant", "answer 1"), ("user", "two"),
                                    ("assistant", "answer 2")]
        assert said(asked)[-1] == ("user", COMPACT_PROMPT) and not asked.body.get("tools")
        assert said(after) == [("user", "one"), ("user", "two"), ("user", summary), ("user", "three")]
        assert after.headers["x-codex-window-id"] == f"{sid}:1"
        events = list(stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid, no_follow=True),
                                        timeout=WAIT_S))
        compacted = [e.compacted for e in events if e.WhichOneof("msg") == "compacted"]
        assert [(c.window_generation, c.summary) for c in compacted] == [(1, "SUMMARY-XYZ")]
        info = stub.GetSession(session_pb2.GetSessionRequest(session_id=sid), timeout=WAIT_S).session
        assert info.window_generation == 1
        stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
    with ServeProcess(state) as serve, serve.channel() as channel:
        stub = serve.stub(channel)
        stopped = stub.GetSession(session_pb2.GetSessionRequest(session_id=sid), timeout=WAIT_S).session
        assert stopped.status == session_pb2.SESSION_STATUS_STOPPED and stopped.window_generation == 1
        start(stub, tmp_path, mode=session_pb2.START_MODE_RESUME, session_id=sid)
        info = stub.GetSession(session_pb2.GetSessionRequest(session_id=sid), timeout=WAIT_S).session
        assert info.window_generation == 1
        logged = stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid, no_follow=True), timeout=WAIT_S)
        starts = [e.session_configured for e in logged if e.WhichOneof("msg") == "session_configured"]
        assert [(c.start_kind, c.window_generation) for c in starts] == [("new", 0), ("resume", 1)]
        run_turn(stub, sid, "four")
        resumed = model.requests[-1]
        assert said(resumed) == [("user", "one"), ("user", "two"), ("user", summary), ("user", "three"),
                                 ("assistant", "answer 3"), ("user", "four")]
        assert resumed.headers["x-codex-window-id"] == f"{sid}:1"
        stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
