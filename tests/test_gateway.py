"""End to end through the generated stub on 127.0.0.1:0: every RPC, health, reflection, every error status."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from actors.auth import open_channel
from actors.gateway import MAX_MESSAGE_BYTES, serve
from actors.runtime import RuntimeOptions, SessionRuntime
from actors.turn import builtin_runner
from protos.supervisor.v1 import config_pb2, session_pb2, session_pb2_grpc, shell_pb2

WAIT_S = 10.0
TASK_KINDS = {"session_configured", "turn_started", "agent_message", "turn_completed", "turn_aborted",
              "task_queued", "session_stopped", "settings_updated"}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[session_pb2_grpc.SessionServiceStub, grpc.Channel, Path]]:
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "requirements.toml").write_text('allowed_approval_policies = ["on-request", "untrusted"]\n')
    runtime = SessionRuntime(RuntimeOptions(task_runner=builtin_runner, home=tmp_path / "home", managed_dir=etc))
    server = serve(runtime, "127.0.0.1:0")
    channel = open_channel(server.address, server.token)
    try:
        yield session_pb2_grpc.SessionServiceStub(channel), channel, tmp_path
    finally:
        channel.close()
        server.stop()
        runtime.shutdown()


def events_until(stub: session_pb2_grpc.SessionServiceStub, sid: str, until: str, from_seq: int = 0) -> list[str]:
    out = []
    stream = stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid, from_seq=from_seq), timeout=WAIT_S)
    try:
        for event in stream:
            if event.WhichOneof("msg") not in TASK_KINDS:
                continue
            out.append(event.WhichOneof("msg"))
            if out[-1] == until:
                return out
    finally:
        stream.cancel()
    raise AssertionError(out)


def test_full_lifecycle_through_the_stub(stack: tuple[session_pb2_grpc.SessionServiceStub, grpc.Channel, Path]
                                         ) -> None:
    stub, _, tmp = stack
    started = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp), client_name="pytest"), timeout=WAIT_S)
    sid = started.session_id
    assert started.configuration.app_server_client_name == "pytest"
    updated = stub.UpdateSettings(session_pb2.UpdateSettingsRequest(
        session_id=sid, update=config_pb2.SessionSettingsUpdate(thread_name="renamed")), timeout=WAIT_S)
    assert updated.configuration.thread_name == "renamed"
    assert not stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="sleep 30"), timeout=WAIT_S).queued
    interrupted = stub.Interrupt(session_pb2.InterruptRequest(session_id=sid), timeout=WAIT_S)
    assert interrupted.interrupted and interrupted.task_id
    stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="hi"), timeout=WAIT_S)
    # "hi" may queue behind the task that is still unwinding from the interrupt (a TaskQueued event then)
    seen = [k for k in events_until(stub, sid, "turn_completed") if k != "task_queued"]
    assert seen[0] == "session_configured"
    assert seen[1:] == ["settings_updated", "turn_started", "turn_aborted", "turn_started", "agent_message",
                        "turn_completed"]
    info = stub.GetSession(session_pb2.GetSessionRequest(session_id=sid), timeout=WAIT_S).session
    assert info.status == session_pb2.SESSION_STATUS_RUNNING and info.configuration.thread_name == "renamed"
    listed = stub.ListSessions(session_pb2.ListSessionsRequest(), timeout=WAIT_S).sessions
    assert [s.session_id for s in listed] == [sid]
    last = stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S).last_seq
    tail = list(stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid, from_seq=last), timeout=WAIT_S))
    assert [e.WhichOneof("msg") for e in tail] == ["session_stopped"]
    assert stub.ListSessions(session_pb2.ListSessionsRequest(), timeout=WAIT_S).sessions == []
    assert len(stub.ListSessions(session_pb2.ListSessionsRequest(include_stopped=True), timeout=WAIT_S).sessions) == 1


def test_health_and_reflection(stack: tuple[session_pb2_grpc.SessionServiceStub, grpc.Channel, Path]) -> None:
    _, channel, _ = stack
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "supervisor.v1.SessionService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=WAIT_S)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = refl.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                          timeout=WAIT_S)
    names = [s.name for r in responses for s in r.list_services_response.service]
    assert "supervisor.v1.SessionService" in names


def code_of(call: object) -> grpc.StatusCode:
    assert isinstance(call, grpc.RpcError)
    return call.code()  # type: ignore[no-any-return, attr-defined]


def test_error_statuses(stack: tuple[session_pb2_grpc.SessionServiceStub, grpc.Channel, Path]) -> None:
    stub, channel, tmp = stack
    with pytest.raises(grpc.RpcError) as bad_config:
        stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp), config_overrides=['approval_policy="maybe"']),
                          timeout=WAIT_S)
    assert code_of(bad_config.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert "approval_policy" in bad_config.value.details()  # type: ignore[attr-defined]

    with pytest.raises(grpc.RpcError) as unknown:
        stub.Submit(session_pb2.SubmitRequest(session_id="no-such-session", input="x"), timeout=WAIT_S)
    assert code_of(unknown.value) == grpc.StatusCode.NOT_FOUND

    sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp)), timeout=WAIT_S).session_id
    with pytest.raises(grpc.RpcError) as constrained:
        stub.UpdateSettings(session_pb2.UpdateSettingsRequest(session_id=sid, update=config_pb2.SessionSettingsUpdate(
            approval_policy=config_pb2.APPROVAL_POLICY_NEVER)), timeout=WAIT_S)
    assert code_of(constrained.value) == grpc.StatusCode.FAILED_PRECONDITION
    assert "approval_policy" in constrained.value.details()  # type: ignore[attr-defined]

    with pytest.raises(grpc.RpcError) as too_big:
        stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="x" * (MAX_MESSAGE_BYTES + 10)), timeout=WAIT_S)
    assert code_of(too_big.value) == grpc.StatusCode.RESOURCE_EXHAUSTED

    raw = channel.unary_unary("/supervisor.v1.SessionService/Submit")
    with pytest.raises(grpc.RpcError) as malformed:
        raw(b"\x0a\xff\xff\xff\xff\x0f", timeout=WAIT_S)
    assert code_of(malformed.value) == grpc.StatusCode.INVALID_ARGUMENT

    with pytest.raises(grpc.RpcError) as bad_cwd:
        stub.UpdateSettings(session_pb2.UpdateSettingsRequest(session_id=sid, update=config_pb2.SessionSettingsUpdate(
            cwd="")), timeout=WAIT_S)
    assert code_of(bad_cwd.value) == grpc.StatusCode.INVALID_ARGUMENT

    for relative in ("a", "../../etc"):  # was accepted, resolved against the server's own cwd
        with pytest.raises(grpc.RpcError) as relative_cwd:
            stub.StartSession(session_pb2.StartSessionRequest(cwd=relative), timeout=WAIT_S)
        assert code_of(relative_cwd.value) == grpc.StatusCode.INVALID_ARGUMENT
        assert "absolute" in relative_cwd.value.details()  # type: ignore[attr-defined]

    with pytest.raises(grpc.RpcError) as exec_cwd:  # was INTERNAL: a client's mistake, not the server's
        stub.Exec(shell_pb2.ExecRequest(session_id=sid, command="pwd", cwd=str(tmp / "missing")), timeout=WAIT_S)
    assert code_of(exec_cwd.value) == grpc.StatusCode.INVALID_ARGUMENT
    assert "cwd" in exec_cwd.value.details()  # type: ignore[attr-defined]

    # none of that harmed the session or its log
    stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="still here"), timeout=WAIT_S)
    assert events_until(stub, sid, "turn_completed")[0] == "session_configured"
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
    with pytest.raises(grpc.RpcError) as stopped:
        stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="x"), timeout=WAIT_S)
    assert code_of(stopped.value) == grpc.StatusCode.FAILED_PRECONDITION


def test_stream_resumes_without_gap_or_duplicate(stack: tuple[session_pb2_grpc.SessionServiceStub, grpc.Channel,
                                                               Path]) -> None:
    stub, _, tmp = stack
    sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp)), timeout=WAIT_S).session_id
    for i in range(5):
        stub.Submit(session_pb2.SubmitRequest(session_id=sid, input=f"m{i}"), timeout=WAIT_S)
    seqs: list[int] = []
    stream = stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid), timeout=WAIT_S)
    for event in stream:
        seqs.append(event.seq)
        if len(seqs) == 4:
            stream.cancel()  # the client drops the stream mid-way
            break
    done = threading.Event()
    stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="late"), timeout=WAIT_S)
    stream = stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid, from_seq=seqs[-1] + 1),
                               timeout=WAIT_S)
    for event in stream:
        seqs.append(event.seq)
        if event.agent_message.text == "echo: late":
            done.set()
            stream.cancel()
            break
    assert done.is_set()
    assert seqs == list(range(len(seqs)))
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
