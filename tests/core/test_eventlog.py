"""The event log: ordering, transactional records, lagging subscribers, and survival of kill -9."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc

from actors.core._eventlog import EventLog
from protos.supervisor.v1 import events_pb2, session_pb2
from tests.helpers.serve import ServeProcess

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 15.0


def warning(i: int) -> events_pb2.Event:
    return events_pb2.Event(warning=events_pb2.Warning(message=str(i)))


def test_sequence_numbers_are_dense_and_records_transactional(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "log.db")
    log.create_session("s1", b"")
    assert [log.append("s1", warning(i)).seq for i in range(3)] == [0, 1, 2]
    assert log.session("s1") is None  # not committed yet: invisible
    log.commit_session("s1")
    assert log.session("s1") is not None and log.session("s1").last_seq == 2  # type: ignore[union-attr]
    log.create_session("s2", b"")
    log.append("s2", warning(0))
    log.discard_session("s2")
    assert log.session("s2") is None and log.read("s2") == []
    log.create_session("s3", b"")  # a start that never finished ...
    log.close()
    reopened = EventLog(tmp_path / "log.db")  # ... is discarded when the log is opened again
    assert [r.session_id for r in reopened.list_sessions()] == ["s1"]
    assert reopened.list_sessions()[0].status == "stopped"  # it was running when the process ended
    reopened.close()


def test_a_lagging_subscriber_loses_nothing(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "log.db")
    log.hub._limit = 8  # a tiny queue so that the follower falls behind
    log.create_session("s", b"")
    log.commit_session("s")
    seen: list[int] = []
    started = threading.Event()

    def follow() -> None:
        for event in log.follow("s", 0):
            if not started.is_set():
                started.set()
            seen.append(event.seq)

    log.append("s", warning(-1))
    reader = threading.Thread(target=follow)
    reader.start()
    assert started.wait(WAIT_S)
    for i in range(2000):
        log.append("s", warning(i))
    log.close_session("s")
    reader.join(WAIT_S)
    assert not reader.is_alive()
    assert seen == list(range(2001))
    log.close()


def test_kill_9_loses_no_acknowledged_event(tmp_path: Path) -> None:
    home = tmp_path / "home"
    acknowledged: list[str] = []
    seen: list[int] = []
    with ServeProcess(home) as server, server.channel() as channel:
        stub = server.stub(channel)
        sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp_path)), timeout=WAIT_S).session_id
        stream = stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid), timeout=WAIT_S)
        for i in range(40):
            acknowledged.append(stub.Submit(session_pb2.SubmitRequest(session_id=sid, input=f"task {i}"),
                                            timeout=WAIT_S).task_id)
        try:
            for event in stream:
                seen.append(event.seq)
                if len(seen) == 50:
                    server.kill9()  # while the client is still streaming
        except grpc.RpcError as exc:
            assert exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL,  # type: ignore[attr-defined]
                                  grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED)
    assert len(seen) >= 50
    with ServeProcess(home) as server, server.channel() as channel:
        stub = server.stub(channel)
        rest = list(stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid, from_seq=seen[-1] + 1),
                                      timeout=WAIT_S))
        everything = list(stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid), timeout=WAIT_S))
        assert server.stop() == 0
    combined = seen + [e.seq for e in rest]
    assert combined == list(range(len(combined)))  # no gap, no duplicate
    logged_tasks = {e.task_id for e in everything if e.task_id}
    assert set(acknowledged) <= logged_tasks  # every acknowledged Submit left its event
    assert [e.seq for e in everything] == list(range(len(everything)))
