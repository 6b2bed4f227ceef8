"""Nothing acknowledged vanishes: ``kill -9`` of a real ``supervisor.py serve`` with tasks queued and running,
then a restart and a resume, round after round.

After each resume, every Submit the server acknowledged has a ``TurnStarted`` or a ``TurnAborted`` in the
session's log, every ``TurnStarted`` an end (``TurnCompleted`` or ``TurnAborted``), and what the crash cut short
ends with a reason saying the server restarted. No RPC fails except by the kill, and the servers print no
traceback. ``SESSION_CRASH_ROUNDS`` sets the number of kills (3 by default; ``make chaos`` runs 20).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import grpc
import pytest

from protos.supervisor.v1 import events_pb2, session_pb2, session_pb2_grpc
from tests.helpers.serve import ServeProcess

#: Kills of ``serve`` in one run.
ROUNDS = int(os.environ.get("SESSION_CRASH_ROUNDS", "3"))
#: Bound on one RPC or one read of the log.
WAIT_S = 30.0
#: Tasks acknowledged before each kill: one long one running, the rest queued behind it (or some finished).
TASKS_PER_ROUND = 6
#: The model-free runner's slow task: still running when the kill comes.
LONG_TASK = "sleep 20"
RESTARTED = "server restarted: "


def _config(state: Path) -> None:
    state.mkdir()
    # the model-free runner; no shell or proxy (a kill -9 would orphan a capture shell: not this test's subject)
    (state / "config.toml").write_text('model_provider = "builtin"\n[shell]\nenabled = false\n'
                                       '[network]\nenabled = false\n')


def _logged(stub: session_pb2_grpc.SessionServiceStub, sid: str) -> list[events_pb2.Event]:
    """The session's own events up to its last logged one (read while it is live)."""
    last = stub.GetSession(session_pb2.GetSessionRequest(session_id=sid), timeout=WAIT_S).session.last_seq
    events = []
    for event in stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid), timeout=WAIT_S):
        events.append(event)
        if event.seq >= last:
            break
    return [e for e in events if e.session_id == sid]


def _check(events: list[events_pb2.Event], acknowledged: list[str]) -> tuple[int, int]:
    """Every acknowledged task started or aborted, every start ended; returns (restart aborts, completions)."""
    started: dict[str, int] = {}
    ended: dict[str, events_pb2.Event] = {}
    for event in events:
        kind = event.WhichOneof("msg")
        if kind == "turn_started":
            assert event.task_id not in started, event
            started[event.task_id] = event.seq
        elif kind in ("turn_completed", "turn_aborted"):
            assert event.task_id not in ended, f"second end for {event}"
            ended[event.task_id] = event
    missing = [task for task in acknowledged if task not in started and task not in ended]
    assert not missing, f"acknowledged tasks with no TurnStarted or TurnAborted: {missing}"
    open_turns = [task for task in started if task not in ended]
    assert not open_turns, f"TurnStarted without an end: {open_turns}"
    assert all(ended[task].seq > seq for task, seq in started.items())
    failed = [e for e in ended.values() if e.turn_aborted.reason.startswith("failed")]
    assert not failed, failed
    restarted = sum(1 for e in ended.values() if e.turn_aborted.reason.startswith(RESTARTED))
    completed = sum(1 for e in ended.values() if e.WhichOneof("msg") == "turn_completed")
    return restarted, completed


def _submit_all(stub: session_pb2_grpc.SessionServiceStub, sid: str, round_no: int) -> list[str]:
    inputs = [LONG_TASK if i == 0 else f"round {round_no} task {i}" for i in range(TASKS_PER_ROUND)]
    if round_no % 2:  # odd rounds: short tasks first, so some finish and one is running at the kill
        inputs = [*inputs[1:3], LONG_TASK, *inputs[3:]]
    return [stub.Submit(session_pb2.SubmitRequest(session_id=sid, input=text), timeout=WAIT_S).task_id
            for text in inputs]


def _submit_during_kill(server: ServeProcess, stub: session_pb2_grpc.SessionServiceStub, sid: str) -> list[str]:
    """Submits racing the kill: those answered are acknowledged, those cut are not."""
    acknowledged: list[str] = []
    unexpected: list[BaseException] = []
    go = threading.Event()

    def client(n: int) -> None:
        go.wait(WAIT_S)
        for i in range(20):
            try:
                acknowledged.append(stub.Submit(session_pb2.SubmitRequest(
                    session_id=sid, input=f"racer {n}.{i}"), timeout=WAIT_S).task_id)
            except grpc.RpcError as exc:
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE,  # type: ignore[attr-defined]
                                      grpc.StatusCode.RESOURCE_EXHAUSTED):  # 64 queued already
                    unexpected.append(exc)
                return

    threads = [threading.Thread(target=client, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    go.set()
    while not acknowledged and all(t.is_alive() for t in threads):
        threading.Event().wait(0.005)  # poll: kill as soon as the race has begun
    server.kill9()
    for thread in threads:
        thread.join(WAIT_S)
    assert not unexpected, unexpected
    return acknowledged


def test_kill_9_with_tasks_queued_and_running_loses_no_acknowledged_task(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    _config(state)
    acknowledged: list[str] = []
    sid = ""
    restarted_before = 0
    for round_no in range(ROUNDS):
        with ServeProcess(state) as server, server.channel() as channel:
            stub = server.stub(channel)
            if not sid:
                sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp_path)),
                                        timeout=WAIT_S).session_id
            else:
                stub.StartSession(session_pb2.StartSessionRequest(mode=session_pb2.START_MODE_RESUME,
                                                                  session_id=sid), timeout=WAIT_S)
                restarted, _ = _check(_logged(stub, sid), acknowledged)
                assert restarted > restarted_before  # at least the long task the kill cut short
                restarted_before = restarted
            acknowledged += _submit_all(stub, sid, round_no)
            if round_no % 3 == 2:
                acknowledged += _submit_during_kill(server, stub, sid)
            else:
                server.kill9()
    with ServeProcess(state) as server, server.channel() as channel:
        stub = server.stub(channel)
        stub.StartSession(session_pb2.StartSessionRequest(mode=session_pb2.START_MODE_RESUME, session_id=sid),
                          timeout=WAIT_S)
        restarted, completed = _check(_logged(stub, sid), acknowledged)
        assert restarted > restarted_before
        after = stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="after the storm"),
                            timeout=WAIT_S).task_id
        for event in stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid), timeout=WAIT_S):
            if event.task_id == after and event.WhichOneof("msg") in ("turn_completed", "turn_aborted"):
                assert event.WhichOneof("msg") == "turn_completed", event
                break
        stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
        assert server.stop() == 0
    assert "Traceback" not in capfd.readouterr().err
    print(f"crash rounds={ROUNDS} acknowledged={len(acknowledged)} completed={completed} "
          f"ended_by_restart={restarted}")
