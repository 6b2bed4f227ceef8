"""Ephemeral sessions (``ephemeral = true``, Codex's ``config.ephemeral``) persist nothing: over gRPC against a
real ``supervisor.py serve``, such a session streams, runs tasks and commands as any other, and once it ended
the event log holds no row of it and no snapshot file is left; a normal session beside it is logged as ever."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import grpc
import pytest

from protos.supervisor.v1 import session_pb2, session_pb2_grpc, shell_pb2
from tests.helpers.serve import ServeProcess

#: Bound on one RPC.
WAIT_S = 30.0


def _events_until_completed(stub: session_pb2_grpc.SessionServiceStub, sid: str, task_id: str) -> list[str]:
    kinds = []
    for event in stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid), timeout=WAIT_S):
        kinds.append(event.WhichOneof("msg"))
        if event.task_id == task_id and kinds[-1] in ("turn_completed", "turn_aborted"):
            return kinds
    raise AssertionError(f"no end for {task_id}: {kinds}")


def _rows(db: Path, session_id: str) -> tuple[int, int]:
    with closing(sqlite3.connect(db)) as conn:
        events = conn.execute("SELECT COUNT(*) FROM events WHERE session_id=?", (session_id,)).fetchone()[0]
        sessions = conn.execute("SELECT COUNT(*) FROM sessions WHERE id=?", (session_id,)).fetchone()[0]
    return int(events), int(sessions)


def test_an_ephemeral_session_leaves_no_log_rows_and_no_snapshot(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "config.toml").write_text('model_provider = "builtin"\nephemeral = true\n')
    with ServeProcess(state) as server, server.channel() as channel:
        stub = server.stub(channel)
        sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp_path)), timeout=WAIT_S).session_id
        kept = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp_path), config_overrides=[
            "ephemeral=false"]), timeout=WAIT_S).session_id
        for session in (sid, kept):
            assert stub.Exec(shell_pb2.ExecRequest(session_id=session, command="echo hi"),
                             timeout=WAIT_S).output.strip() == "hi"
            task = stub.Submit(session_pb2.SubmitRequest(session_id=session, input="hello"), timeout=WAIT_S).task_id
            kinds = _events_until_completed(stub, session, task)
            assert kinds[0] == "session_configured" and kinds[-1] == "turn_completed"
        assert len(list((state / "shell_snapshots").iterdir())) == 2
        live = stub.GetSession(session_pb2.GetSessionRequest(session_id=sid), timeout=WAIT_S).session
        assert live.status == session_pb2.SESSION_STATUS_RUNNING and live.last_seq > 0
        listed = stub.ListSessions(session_pb2.ListSessionsRequest(include_stopped=True), timeout=WAIT_S)
        assert [s.session_id for s in listed.sessions] == [kept]
        assert _rows(state / "events.sqlite3", sid) == (0, 0)  # not even while it runs
        assert stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S).last_seq > 0
        for call, request in ((stub.GetSession, session_pb2.GetSessionRequest(session_id=sid)),
                              (stub.Submit, session_pb2.SubmitRequest(session_id=sid, input="again"))):
            with pytest.raises(grpc.RpcError) as err:
                call(request, timeout=WAIT_S)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as err:
            stub.StartSession(session_pb2.StartSessionRequest(mode=session_pb2.START_MODE_RESUME, session_id=sid),
                              timeout=WAIT_S)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
        assert len(list((state / "shell_snapshots").iterdir())) == 1  # the normal session's, still running
        stub.StopSession(session_pb2.StopSessionRequest(session_id=kept), timeout=WAIT_S)
        assert server.stop() == 0
    assert _rows(state / "events.sqlite3", sid) == (0, 0)
    events, sessions = _rows(state / "events.sqlite3", kept)
    assert events > 0 and sessions == 1
    assert not list((state / "shell_snapshots").iterdir())
