"""SessionSupervisor through the runtime: start-up order, tasks, interrupt, resume, fork, transactional start."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actors.core import ChildSpec, SupervisedActor
from actors.errors import SessionStateError, StartupFailed, UnknownSession
from actors.runtime import RuntimeOptions, SessionRuntime
from actors.session._actor import SessionSetup
from actors.turn import builtin_runner
from protos.supervisor.v1 import envelope_pb2, events_pb2, session_pb2

WAIT_S = 10.0


class SlowChild(SupervisedActor):
    def __init__(self, delay: float = 1.0, fail: bool = False, **kw: Any) -> None:
        super().__init__(**kw)
        self.delay = delay
        self.fail = fail

    def on_start(self) -> None:
        if self.delay:
            threading.Event().wait(self.delay)
        if self.fail:
            raise RuntimeError("child refused to start")


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[SessionRuntime]:
    rt = SessionRuntime(RuntimeOptions(
        task_runner=builtin_runner, home=tmp_path / "home", managed_dir=tmp_path / "etc"))
    yield rt
    rt.shutdown()


#: The task-level events these tests follow (children add their own events around them).
TASK_KINDS = {"session_configured", "turn_started", "agent_message", "turn_completed", "turn_aborted",
              "task_queued", "session_stopped", "settings_updated"}


def kinds(rt: SessionRuntime, sid: str, until: str, from_seq: int = 0) -> list[str]:
    out = []
    stop = threading.Event()
    timer = threading.Timer(WAIT_S, stop.set)
    timer.start()
    try:
        for event in rt.stream(sid, from_seq, stop=stop):
            if event.WhichOneof("msg") not in TASK_KINDS:
                continue
            out.append(event.WhichOneof("msg"))
            if out[-1] == until:
                return out
    finally:
        timer.cancel()
    raise AssertionError(f"never saw {until}: {out}")


def submit(rt: SessionRuntime, sid: str, text: str, interrupt: bool = False) -> session_pb2.SubmitResponse:
    env = envelope_pb2.Envelope(submit=session_pb2.SubmitRequest(session_id=sid, input=text, interrupt=interrupt))
    return rt.request(sid, env).submit_reply


def test_session_configured_is_event_zero_and_a_task_echoes(runtime: SessionRuntime, tmp_path: Path) -> None:
    resp = runtime.start_session(session_pb2.StartSessionRequest(cwd=str(tmp_path)))
    assert resp.configured_seq == 0
    reply = submit(runtime, resp.session_id, "hello")
    assert not reply.queued
    seen = kinds(runtime, resp.session_id, "turn_completed")
    assert seen == ["session_configured", "turn_started", "agent_message", "turn_completed"]
    runtime.stop_session(resp.session_id)
    assert kinds(runtime, resp.session_id, "session_stopped")[-1] == "session_stopped"


def test_second_submit_queues_and_interrupt_aborts(runtime: SessionRuntime, tmp_path: Path) -> None:
    sid = runtime.start_session(session_pb2.StartSessionRequest(cwd=str(tmp_path))).session_id
    submit(runtime, sid, "sleep 30")
    assert submit(runtime, sid, "after").queued
    reply = runtime.request(sid, envelope_pb2.Envelope(interrupt=session_pb2.InterruptRequest(session_id=sid)))
    assert reply.interrupt_reply.interrupted
    seen = kinds(runtime, sid, "turn_completed")
    assert seen[:4] == ["session_configured", "turn_started", "task_queued", "turn_aborted"]
    events = list(runtime.stream(sid, 0, follow=False))
    aborted = [e for e in events if e.WhichOneof("msg") == "turn_aborted"]
    assert aborted[0].turn_aborted.reason == "interrupted"
    assert any(e.agent_message.text == "echo: after" for e in events)
    runtime.stop_session(sid)


def test_submit_with_interrupt_replaces_the_running_task(runtime: SessionRuntime, tmp_path: Path) -> None:
    sid = runtime.start_session(session_pb2.StartSessionRequest(cwd=str(tmp_path))).session_id
    submit(runtime, sid, "sleep 30")
    assert not submit(runtime, sid, "now", interrupt=True).queued
    seen = kinds(runtime, sid, "turn_completed")
    # the replacing task is logged (TaskQueued) before the reply, and runs once the aborted one unwound
    assert seen == ["session_configured", "turn_started", "task_queued", "turn_aborted", "turn_started",
                    "agent_message", "turn_completed"]
    runtime.stop_session(sid)


def test_stop_ends_every_queued_task_with_turn_aborted(runtime: SessionRuntime, tmp_path: Path) -> None:
    sid = runtime.start_session(session_pb2.StartSessionRequest(cwd=str(tmp_path))).session_id
    running = submit(runtime, sid, "sleep 30").task_id
    queued = [submit(runtime, sid, f"later {i}").task_id for i in range(3)]
    runtime.stop_session(sid)
    ends = [(e.task_id, e.turn_aborted.reason) for e in runtime.stream(sid, 0, follow=False)
            if e.WhichOneof("msg") == "turn_aborted"]
    assert ends == [(running, "shutdown"), *((task, "session stopped") for task in queued)]


def test_children_start_in_parallel_and_before_configured_events(tmp_path: Path) -> None:
    def four_slow(_: SessionSetup) -> list[ChildSpec]:
        return [ChildSpec(f"slow{i}", SlowChild, {"delay": 1.0}, kind="test") for i in range(4)]

    rt = SessionRuntime(RuntimeOptions(
        task_runner=builtin_runner, home=tmp_path / "h", managed_dir=tmp_path / "etc", extra_children=four_slow))
    try:
        t0 = time.monotonic()
        sid = rt.start_session(session_pb2.StartSessionRequest(cwd=str(tmp_path))).session_id
        elapsed = time.monotonic() - t0
        assert elapsed < 1.5, elapsed
        events = list(rt.stream(sid, 0, follow=False))
        assert events[0].WhichOneof("msg") == "session_configured"
        started = [e.child_started.child_id for e in events[1:] if e.WhichOneof("msg") == "child_started"]
        assert sorted(c for c in started if c.startswith("slow")) == [f"slow{i}" for i in range(4)]
        t0 = time.monotonic()
        rt.stop_session(sid)
        stopped = [e.child_stopped.child_id for e in rt.stream(sid, 0, follow=False)
                   if e.WhichOneof("msg") == "child_stopped"]
        # reverse start order: the phase-two children (in order), then the proxy of phase one
        assert [c for c in stopped if c.startswith("slow")] == ["slow3", "slow2", "slow1", "slow0"]
        assert stopped[-1] == "proxy"
    finally:
        rt.shutdown()


def test_failed_start_leaves_no_session(tmp_path: Path) -> None:
    def failing(_: SessionSetup) -> list[ChildSpec]:
        return [ChildSpec("ok", SlowChild, {"delay": 0}), ChildSpec("bad", SlowChild, {"delay": 0, "fail": True})]

    rt = SessionRuntime(RuntimeOptions(
        task_runner=builtin_runner, home=tmp_path / "h", managed_dir=tmp_path / "etc", extra_children=failing))
    try:
        with pytest.raises(StartupFailed, match="child refused to start"):
            rt.start_session(session_pb2.StartSessionRequest(cwd=str(tmp_path)))
        assert rt.list_sessions(include_stopped=True) == []
        assert rt.live_ids() == []
    finally:
        rt.shutdown()


def test_resume_keeps_id_and_window_generation_fork_gets_new_id(runtime: SessionRuntime, tmp_path: Path) -> None:
    sid = runtime.start_session(session_pb2.StartSessionRequest(cwd=str(tmp_path))).session_id
    submit(runtime, sid, "one")
    kinds(runtime, sid, "turn_completed")
    runtime.live(sid).emit(events_pb2.ContextCompacted(window_generation=1))
    last = runtime.stop_session(sid).last_seq
    with pytest.raises(SessionStateError):
        submit(runtime, sid, "x")
    resumed = runtime.start_session(session_pb2.StartSessionRequest(mode=session_pb2.START_MODE_RESUME,
                                                                    session_id=sid))
    assert resumed.session_id == sid
    assert resumed.configured_seq == last + 1
    first = next(iter(runtime.stream(sid, resumed.configured_seq, follow=False)))
    assert first.session_configured.start_kind == "resume"
    assert first.session_configured.window_generation == 1
    forked = runtime.start_session(session_pb2.StartSessionRequest(mode=session_pb2.START_MODE_FORK, session_id=sid))
    assert forked.session_id != sid
    event0 = next(iter(runtime.stream(forked.session_id, 0, follow=False)))
    assert event0.session_configured.forked_from_id == sid
    assert event0.session_configured.window_generation == 0
    assert event0.session_configured.history_items >= 2
    with pytest.raises(SessionStateError):
        runtime.start_session(session_pb2.StartSessionRequest(mode=session_pb2.START_MODE_RESUME, session_id=sid))
    runtime.stop_session(sid)
    runtime.stop_session(forked.session_id)


def test_unknown_session(runtime: SessionRuntime) -> None:
    with pytest.raises(UnknownSession):
        runtime.get_session("nope")
    with pytest.raises(UnknownSession):
        runtime.start_session(session_pb2.StartSessionRequest(mode=session_pb2.START_MODE_RESUME, session_id="nope"))
