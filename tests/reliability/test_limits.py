"""The issue-16 findings, each through the real gateway on 127.0.0.1:0: bounded sizes and the right status."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from actors.auth import open_channel
from actors.core import MAX_EVENT_BYTES, TRUNCATION_MARKER
from actors.gateway import MAX_BATCH_BYTES, MAX_MESSAGE_BYTES, RETRY_AFTER_KEY, serve
from actors.limits import FIELD_BYTES, LIST_ENTRY_BYTES
from actors.runtime import EVENT_LOG_FILE, RuntimeOptions, SessionRuntime
from actors.turn import builtin_runner
from protos.supervisor.v1 import (
    config_pb2,
    events_pb2,
    mcp_pb2,
    session_pb2,
    session_pb2_grpc,
    shell_pb2,
    stream_pb2,
    stream_pb2_grpc,
)
from tests.mcp_servers.fixtures import TOOLBOX

WAIT_S = 20.0
Stubs = tuple[session_pb2_grpc.SessionServiceStub, stream_pb2_grpc.EventStreamServiceStub, SessionRuntime, Path]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stubs]:
    runtime = SessionRuntime(RuntimeOptions(task_runner=builtin_runner, home=tmp_path / "home"))
    server = serve(runtime, "127.0.0.1:0")
    channel = open_channel(server.address, server.token, options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.max_send_message_length", 16 << 20)])
    try:
        yield (session_pb2_grpc.SessionServiceStub(channel), stream_pb2_grpc.EventStreamServiceStub(channel),
               runtime, tmp_path)
    finally:
        channel.close()
        server.stop()
        runtime.shutdown()


def _error(call: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()  # type: ignore[operator]
    return info.value


def _stream_all(stub: session_pb2_grpc.SessionServiceStub, sid: str, from_seq: int = 0) -> list[events_pb2.Event]:
    return list(stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid, from_seq=from_seq,
                                                                  no_follow=True), timeout=WAIT_S))


def test_finding1_huge_input_is_refused_naming_field_and_limit(stack: Stubs) -> None:
    stub, _, runtime, tmp = stack
    sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp)), timeout=WAIT_S).session_id
    err = _error(lambda: stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="x" * 4_194_240),
                                     timeout=WAIT_S))
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "input" in str(err.details()) and str(FIELD_BYTES["input"]) in str(err.details())
    # the largest accepted input streams whole, and the stream goes on past it
    stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="y" * FIELD_BYTES["input"]), timeout=WAIT_S)
    stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="after"), timeout=WAIT_S)
    deadline = time.monotonic() + WAIT_S  # both turns end before the stop (a stop drops queued tasks)
    while len(runtime.log.read_kinds(sid, ("turn_completed",))) < 2:
        assert time.monotonic() < deadline, "the two turns did not complete"
        time.sleep(0.01)
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
    events = _stream_all(stub, sid)
    inputs = [e.turn_started.input for e in events if e.WhichOneof("msg") == "turn_started"]
    assert inputs == ["y" * FIELD_BYTES["input"], "after"]
    assert [e.seq for e in events] == list(range(len(events)))


def test_finding1_no_logged_event_exceeds_what_a_stream_sends(stack: Stubs) -> None:
    stub, _, runtime, tmp = stack
    sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp)), timeout=WAIT_S).session_id
    # an event larger than the send limit (e.g. a tool's output) is cut with a marker when logged
    big = events_pb2.Event(exec_end=shell_pb2.ExecEnd(call_id="c", head=b"h" * (5 << 20)))
    logged = runtime.log.append(sid, big)
    assert logged.ByteSize() <= MAX_EVENT_BYTES
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
    # a row an older version logged oversized is served bounded, and the events after it still arrive
    last = runtime.log.session(sid).last_seq  # type: ignore[union-attr]
    poison = events_pb2.Event(session_id=sid, seq=last + 1,
                              turn_started=events_pb2.TurnStarted(input="p" * (MAX_MESSAGE_BYTES + 100)))
    after = events_pb2.Event(session_id=sid, seq=last + 2, agent_message=events_pb2.AgentMessage(text="after"))
    with contextlib.closing(sqlite3.connect(tmp / "home" / EVENT_LOG_FILE)) as db, db:
        for event in (poison, after):
            db.execute("INSERT INTO events (session_id, seq, kind, data) VALUES (?, ?, ?, ?)",
                       (sid, event.seq, event.WhichOneof("msg"), event.SerializeToString()))
    events = _stream_all(stub, sid)
    assert [e.seq for e in events] == list(range(last + 3))
    assert events[-1].agent_message.text == "after"
    cut = events[poison.seq].turn_started.input
    assert cut.startswith("ppp") and TRUNCATION_MARKER.split("{")[0] in cut
    assert TRUNCATION_MARKER.split("{")[0].encode() in events[logged.seq].exec_end.head


def test_finding2_batches_are_capped_in_bytes(stack: Stubs) -> None:
    stub, batches, _, tmp = stack
    sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp)), timeout=WAIT_S).session_id
    for i in range(60):
        stub.Submit(session_pb2.SubmitRequest(session_id=sid, input=f"{i:02d}" + "z" * 150_000), timeout=WAIT_S)
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
    got = list(batches.StreamEventBatches(stream_pb2.StreamEventBatchesRequest(
        session_id=sid, no_follow=True, max_batch=0), timeout=WAIT_S))
    seqs = [e.seq for b in got for e in b.events]
    assert seqs == list(range(len(seqs))) and len(seqs) > 120
    assert all(b.ByteSize() <= MAX_BATCH_BYTES or len(b.events) == 1 for b in got)
    assert len(got) > 1


def _insert_oversized_record(home: Path, sid: str) -> None:
    config = config_pb2.SessionConfiguration(thread_name="t" * 2_162_688)
    with contextlib.closing(sqlite3.connect(home / EVENT_LOG_FILE)) as db, db:
        for i in range(2):
            db.execute("INSERT INTO sessions (id, status, created, config) VALUES (?, 'stopped', ?, ?)",
                       (f"{sid}{i}", 1.0 + i, config.SerializeToString()))


def test_finding3_list_sessions_pages_and_bounds_entries(stack: Stubs) -> None:
    stub, _, _, tmp = stack
    err = _error(lambda: stub.StartSession(session_pb2.StartSessionRequest(
        cwd=str(tmp), thread_name="n" * 2_162_688), timeout=WAIT_S))
    assert err.code() is grpc.StatusCode.RESOURCE_EXHAUSTED and "thread_name" in str(err.details())
    _insert_oversized_record(tmp / "home", "old")  # what an older version let in
    live = [stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp), thread_name=f"s{i}"),
                              timeout=WAIT_S).session_id for i in range(5)]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = stub.ListSessions(session_pb2.ListSessionsRequest(include_stopped=True, page_size=2,
                                                                 page_token=token), timeout=WAIT_S)
        pages += 1
        assert len(page.sessions) <= 2
        assert all(s.ByteSize() <= LIST_ENTRY_BYTES for s in page.sessions)
        seen += [s.session_id for s in page.sessions]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted([*live, "old0", "old1"]) and len(seen) == len(set(seen)) and pages == 4
    old = stub.GetSession(session_pb2.GetSessionRequest(session_id="old1"), timeout=WAIT_S).session
    assert old.configuration.thread_name.startswith("ttt")
    bad = _error(lambda: stub.ListSessions(session_pb2.ListSessionsRequest(page_token="%%%"), timeout=WAIT_S))
    assert bad.code() is grpc.StatusCode.INVALID_ARGUMENT and "page_token" in str(bad.details())
    for sid in live:
        stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)


@pytest.mark.parametrize("mode", [4, 7, -1])
def test_finding4_undefined_enum_is_invalid_argument(stack: Stubs, mode: int) -> None:
    stub, _, _, tmp = stack
    err = _error(lambda: stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp), mode=mode),  # type: ignore[arg-type]
                                           timeout=WAIT_S))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "mode" in str(err.details())


def test_finding4_huge_from_seq_is_out_of_range(stack: Stubs) -> None:
    stub, batches, _, tmp = stack
    sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp)), timeout=WAIT_S).session_id
    for call in (lambda: _stream_all(stub, sid, 2**63),
                 lambda: list(batches.StreamEventBatches(stream_pb2.StreamEventBatchesRequest(
                     session_id=sid, from_seq=2**64 - 1, no_follow=True), timeout=WAIT_S))):
        err = _error(call)
        assert err.code() is grpc.StatusCode.OUT_OF_RANGE and "from_seq" in str(err.details())
    assert _stream_all(stub, sid, 2**63 - 1) == []
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)


def test_finding4_exec_with_missing_cwd_is_invalid_argument(stack: Stubs) -> None:
    stub, _, _, tmp = stack
    sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp)), timeout=WAIT_S).session_id
    err = _error(lambda: stub.Exec(shell_pb2.ExecRequest(session_id=sid, command="true",
                                                         cwd=str(tmp / "missing")), timeout=WAIT_S))
    assert err.code() is grpc.StatusCode.INVALID_ARGUMENT and "cwd" in str(err.details())
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)


def test_finding4_mcp_call_to_a_stopped_server_is_unavailable_with_a_retry_hint(
        stack: Stubs, caplog: pytest.LogCaptureFixture) -> None:
    stub, _, _, tmp = stack
    overrides = [f"mcp_servers.tb.command={json.dumps(sys.executable)}",
                 f"mcp_servers.tb.args=[{json.dumps(TOOLBOX)}]"]
    sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp), config_overrides=overrides),
                            timeout=WAIT_S).session_id
    ok = stub.McpToolCall(mcp_pb2.McpToolCallRequest(session_id=sid, tool="mcp__tb__add",
                                                     arguments_json='{"a": 1, "b": 2}'), timeout=WAIT_S)
    assert not ok.is_error
    stub.McpServerControl(mcp_pb2.McpServerControlRequest(session_id=sid, server="tb",
                                                          action=mcp_pb2.MCP_SERVER_ACTION_STOP), timeout=WAIT_S)
    caplog.clear()
    for _ in range(20):
        call = stub.McpToolCall.with_call
        with pytest.raises(grpc.RpcError) as info:
            call(mcp_pb2.McpToolCallRequest(session_id=sid, tool="mcp__tb__add", arguments_json="{}"),
                 timeout=WAIT_S)
        err = info.value
        assert err.code() is grpc.StatusCode.UNAVAILABLE, err.details()
        assert dict(err.trailing_metadata() or ()).get(RETRY_AFTER_KEY)  # type: ignore[attr-defined]
    assert not [r for r in caplog.records if r.exc_info]  # no traceback per call
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
