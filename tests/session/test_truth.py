"""Session truth through the runtime, with a recording OpenAI-compatible server as the model: the conversation
and the settings survive stop + resume and fork (the model's next request holds the earlier turns)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.errors import ConfigError
from actors.runtime import RuntimeOptions, SessionRuntime
from protos.supervisor.v1 import config_pb2, envelope_pb2, session_pb2
from tests.helpers.fake_openai_server import FakeOpenAIServer, Reply, ScriptedCall

#: Bound on one turn against the local fake model.
TURN_WAIT_S = 30.0


@pytest.fixture
def model() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def runtime(tmp_path: Path, model: FakeOpenAIServer) -> Iterator[SessionRuntime]:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(model.config_toml())
    rt = SessionRuntime(RuntimeOptions(home=home, managed_dir=tmp_path / "etc"))
    yield rt
    rt.shutdown()


def start(rt: SessionRuntime, cwd: Path, **fields: Any) -> str:
    return rt.start_session(session_pb2.StartSessionRequest(cwd=str(cwd), **fields)).session_id


def turn(rt: SessionRuntime, sid: str, text: str) -> str:
    """Submit ``text`` and wait (bounded) for its turn to end; the end event's kind."""
    reply = rt.request(sid, envelope_pb2.Envelope(submit=session_pb2.SubmitRequest(session_id=sid, input=text)))
    task_id = reply.submit_reply.task_id
    stop = threading.Event()
    timer = threading.Timer(TURN_WAIT_S, stop.set)
    timer.start()
    try:
        for event in rt.stream(sid, 0, stop=stop):
            kind = event.WhichOneof("msg")
            if event.task_id == task_id and kind in ("turn_completed", "turn_aborted"):
                assert kind == "turn_completed", event
                return kind
    finally:
        timer.cancel()
    raise AssertionError(f"turn {text!r} never ended")


def said(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """A request's input items as (kind, text) pairs: messages by role, calls and outputs by call id."""
    out = []
    for item in items:
        if item.get("type") == "function_call":
            out.append(("function_call", item["call_id"]))
        elif item.get("type") == "function_call_output":
            out.append(("function_call_output", item["call_id"]))
        else:
            content = item.get("content")
            out.append((item.get("role", ""), content if isinstance(content, str) else str(content)))
    return out


def test_resume_sends_the_earlier_conversation_with_tool_pairs(runtime: SessionRuntime, model: FakeOpenAIServer,
                                                               tmp_path: Path) -> None:
    model.add_replies(
        Reply(calls=(ScriptedCall("no_such_tool", {"x": 1}, call_id="call_1"),)),
        Reply(text_deltas=("noted ", "PAPAYA")),
        Reply(text_deltas=("PAPAYA",)),
    )
    sid = start(runtime, tmp_path)
    turn(runtime, sid, "remember the word PAPAYA")
    runtime.stop_session(sid)
    resumed = runtime.start_session(session_pb2.StartSessionRequest(mode=session_pb2.START_MODE_RESUME,
                                                                    session_id=sid))
    assert resumed.session_id == sid
    turn(runtime, sid, "which word?")
    assert said(model.requests[-1].body["input"]) == [
        ("user", "remember the word PAPAYA"),
        ("function_call", "call_1"),
        ("function_call_output", "call_1"),
        ("assistant", "noted PAPAYA"),
        ("user", "which word?"),
    ]
    runtime.stop_session(sid)


def test_fork_after_turn_one_of_three_holds_turn_one_only(runtime: SessionRuntime, model: FakeOpenAIServer,
                                                          tmp_path: Path) -> None:
    model.add_replies(*(Reply(text_deltas=(f"answer {n}",)) for n in range(1, 6)))
    sid = start(runtime, tmp_path)
    for text in ("one", "two", "three"):
        turn(runtime, sid, text)
    whole = runtime.start_session(session_pb2.StartSessionRequest(mode=session_pb2.START_MODE_FORK, session_id=sid))
    turn(runtime, whole.session_id, "four")
    assert [t for _, t in said(model.requests[-1].body["input"])] == [
        "one", "answer 1", "two", "answer 2", "three", "answer 3", "four"]
    early = runtime.start_session(session_pb2.StartSessionRequest(mode=session_pb2.START_MODE_FORK, session_id=sid,
                                                                  fork_after_turn=1))
    assert early.session_id not in (sid, whole.session_id)
    turn(runtime, early.session_id, "again")
    assert said(model.requests[-1].body["input"]) == [("user", "one"), ("assistant", "answer 1"), ("user", "again")]
    # the fork's own resume keeps what it inherited (its log holds the inherited entries as its own)
    runtime.stop_session(early.session_id)
    model.add_replies(Reply(text_deltas=("ok",)))
    runtime.start_session(session_pb2.StartSessionRequest(mode=session_pb2.START_MODE_RESUME,
                                                          session_id=early.session_id))
    turn(runtime, early.session_id, "more")
    assert [t for _, t in said(model.requests[-1].body["input"])] == ["one", "answer 1", "again", "answer 5", "more"]
    for session in (sid, whole.session_id, early.session_id):
        runtime.stop_session(session)


def test_fork_past_the_last_turn_is_a_clear_error(runtime: SessionRuntime, model: FakeOpenAIServer,
                                                  tmp_path: Path) -> None:
    model.add_replies(Reply(text_deltas=("a",)))
    sid = start(runtime, tmp_path)
    turn(runtime, sid, "one")
    with pytest.raises(ConfigError, match="fork_after_turn: the source has 1 finished turns"):
        runtime.start_session(session_pb2.StartSessionRequest(mode=session_pb2.START_MODE_FORK, session_id=sid,
                                                              fork_after_turn=2))
    runtime.stop_session(sid)


def test_settings_updated_are_in_force_after_resume(runtime: SessionRuntime, model: FakeOpenAIServer,
                                                    tmp_path: Path) -> None:
    sid = start(runtime, tmp_path)
    update = config_pb2.SessionSettingsUpdate(thread_name="papaya thread",
                                              approval_policy=config_pb2.APPROVAL_POLICY_NEVER)
    update.collaboration_mode.CopyFrom(config_pb2.CollaborationMode(mode="default", model="other-model"))
    runtime.request(sid, envelope_pb2.Envelope(update_settings=session_pb2.UpdateSettingsRequest(
        session_id=sid, update=update)))
    runtime.stop_session(sid)
    runtime.start_session(session_pb2.StartSessionRequest(mode=session_pb2.START_MODE_RESUME, session_id=sid))
    info = runtime.get_session(sid)
    assert info.configuration.thread_name == "papaya thread"
    assert info.configuration.approval_policy == config_pb2.APPROVAL_POLICY_NEVER
    model.add_replies(Reply(text_deltas=("hi",)))
    turn(runtime, sid, "hello")
    assert model.requests[-1].body["model"] == "other-model"
    runtime.stop_session(sid)
