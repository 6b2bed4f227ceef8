"""Subagents driven over gRPC without a model: spawn, wait, limits, wake-up, cancel policy, relay, traces."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry import trace

from actors.auth import open_channel
from actors.core import current_traceparent, trace_id_of
from actors.gateway import serve
from actors.runtime import RuntimeOptions, SessionRuntime
from actors.turn import builtin_runner
from protos.supervisor.v1 import agents_pb2, session_pb2, session_pb2_grpc

WAIT_S = 20.0


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[session_pb2_grpc.SessionServiceStub, SessionRuntime, Path]]:
    runtime = SessionRuntime(RuntimeOptions(
        task_runner=builtin_runner, home=tmp_path / "home", managed_dir=tmp_path / "etc"))
    server = serve(runtime, "127.0.0.1:0")
    channel = open_channel(server.address, server.token)
    try:
        yield session_pb2_grpc.SessionServiceStub(channel), runtime, tmp_path
    finally:
        channel.close()
        server.stop()
        runtime.shutdown()


def start(stub: session_pb2_grpc.SessionServiceStub, cwd: Path, *overrides: str) -> str:
    return stub.StartSession(session_pb2.StartSessionRequest(cwd=str(cwd), config_overrides=[
        'shell.program="/bin/bash"', "network.enabled=false", *overrides]), timeout=WAIT_S).session_id


def spawn(stub: session_pb2_grpc.SessionServiceStub, sid: str, message: str, **kw: Any
          ) -> agents_pb2.SpawnAgentResponse:
    return stub.SpawnAgent(agents_pb2.SpawnAgentRequest(session_id=sid, message=message, **kw), timeout=WAIT_S)


def test_spawn_wait_and_relay(stack: Any) -> None:
    stub, runtime, tmp = stack
    sid = start(stub, tmp)
    child = spawn(stub, sid, "hello child")
    assert child.nickname
    waited = stub.WaitAgents(agents_pb2.WaitAgentsRequest(session_id=sid, agent_ids=[child.agent_id],
                                                          timeout_ms=10_000), timeout=WAIT_S)
    assert not waited.timed_out
    assert waited.finished[0].status == agents_pb2.AGENT_STATUS_COMPLETED
    assert waited.finished[0].last_message == "echo: hello child"
    own = [e.WhichOneof("msg") for e in runtime.log.read(child.agent_id, 0)]
    assert own[0] == "session_configured" and "turn_completed" in own
    configured = runtime.log.read(child.agent_id, 0)[0].session_configured
    assert configured.configuration.session_source.parent_session_id == sid
    assert configured.configuration.session_source.depth == 1
    relayed = [e for e in runtime.log.read(sid, 0, limit=1000) if e.agent_path == f"/root/{child.nickname}"]
    assert {"session_configured", "turn_completed"} <= {e.WhichOneof("msg") for e in relayed}
    # a subagent is a session: reachable directly
    info = stub.GetSession(session_pb2.GetSessionRequest(session_id=child.agent_id), timeout=WAIT_S).session
    assert info.status == session_pb2.SESSION_STATUS_RUNNING
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
    assert runtime.live_ids() == []


def test_limits_threads_depth_and_failed_spawn(stack: Any) -> None:
    stub, _, tmp = stack
    sid = start(stub, tmp, "agents.max_threads=2", "agents.max_depth=1")
    a = spawn(stub, sid, "sleep 30")
    spawn(stub, sid, "sleep 30")
    with pytest.raises(grpc.RpcError) as third:
        spawn(stub, sid, "sleep 30")
    assert third.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert "max_threads 2" in third.value.details()  # type: ignore[attr-defined]
    closed = stub.CloseAgent(agents_pb2.CloseAgentRequest(session_id=sid, agent_id=a.agent_id), timeout=WAIT_S)
    # live either way: under load the child's first task may not have started yet
    assert closed.previous in (agents_pb2.AGENT_STATUS_PENDING_INIT, agents_pb2.AGENT_STATUS_RUNNING)
    with pytest.raises(grpc.RpcError) as bad_type:  # fails half-way: the slot count must not change
        spawn(stub, sid, "x", agent_type="no-such-type")
    assert bad_type.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    c = spawn(stub, sid, "sleep 30")  # the closed agent's slot is free at once, the failed spawn kept none
    with pytest.raises(grpc.RpcError) as full_again:
        spawn(stub, sid, "sleep 30")
    assert full_again.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as grandchild:
        spawn(stub, c.agent_id, "too deep")
    assert grandchild.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert "max_depth" in grandchild.value.details()  # type: ignore[attr-defined]
    listed = stub.ListAgents(agents_pb2.ListAgentsRequest(session_id=sid), timeout=WAIT_S).agents
    assert sorted(agents_pb2.AgentStatus.Name(x.status) for x in listed) == [
        "AGENT_STATUS_CLOSED", "AGENT_STATUS_RUNNING", "AGENT_STATUS_RUNNING"]
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)


def test_a_finished_child_notifies_an_idle_parent_without_polling(stack: Any) -> None:
    stub, runtime, tmp = stack
    sid = start(stub, tmp)
    child = spawn(stub, sid, "sleep 0.3")
    t_spawn = time.monotonic()
    seen = threading.Event()
    stop = threading.Event()
    for event in runtime.stream(sid, 0, stop=stop):
        if (event.WhichOneof("msg") == "agent_status_changed"
                and event.agent_status_changed.agent.status == agents_pb2.AGENT_STATUS_COMPLETED):
            seen.set()
            break
        if time.monotonic() - t_spawn > WAIT_S:
            break
    assert seen.is_set()
    assert time.monotonic() - t_spawn < 0.3 + 1.0  # within 1 s of the child finishing
    assert child.agent_id
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)


def test_interrupting_the_parent_cancels_ten_children(stack: Any) -> None:
    stub, runtime, tmp = stack
    sid = start(stub, tmp, "agents.max_threads=10", 'agents.on_parent_end="cancel"')
    stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="sleep 30"), timeout=WAIT_S)
    children = [spawn(stub, sid, "sleep 30") for _ in range(10)]
    assert len(runtime.live_ids()) == 11
    stub.Interrupt(session_pb2.InterruptRequest(session_id=sid), timeout=WAIT_S)
    deadline = time.monotonic() + WAIT_S
    while len(runtime.live_ids()) > 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert runtime.live_ids() == [sid]
    listed = stub.ListAgents(agents_pb2.ListAgentsRequest(session_id=sid), timeout=WAIT_S).agents
    assert {x.agent_id for x in listed} == {c.agent_id for c in children}
    assert all(x.status == agents_pb2.AGENT_STATUS_CLOSED for x in listed)
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)


def test_wait_policy_holds_the_parent_turn_until_children_end(stack: Any) -> None:
    stub, runtime, tmp = stack
    sid = start(stub, tmp)  # on_parent_end = wait is the default
    spawn(stub, sid, "sleep 0.5")
    t0 = time.monotonic()
    stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="quick"), timeout=WAIT_S)
    stop = threading.Event()
    for event in runtime.stream(sid, 0, stop=stop):
        if event.WhichOneof("msg") == "turn_completed" and event.agent_path == "/root":
            break
    assert time.monotonic() - t0 >= 0.4
    kinds = [(e.WhichOneof("msg"), e.agent_path) for e in runtime.log.read(sid, 0, limit=1000)]
    child_done = next(i for i, (k, p) in enumerate(kinds) if k == "turn_completed" and p != "/root")
    parent_done = next(i for i, (k, p) in enumerate(kinds) if k == "turn_completed" and p == "/root")
    assert child_done < parent_done
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)


def test_child_session_spans_are_children_of_the_spawn_span(stack: Any, span_exporter: Any) -> None:
    stub, runtime, tmp = stack
    sid = start(stub, tmp)
    with trace.get_tracer("test").start_as_current_span("orchestrator"):
        tp, _ = current_traceparent()
        child = stub.SpawnAgent(agents_pb2.SpawnAgentRequest(session_id=sid, message="hi", traceparent=tp),
                                timeout=WAIT_S)
    untraced = spawn(stub, sid, "no trace")
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
    spans = {s.name: s for s in span_exporter.get_finished_spans()}
    root = spans["orchestrator"]
    spawn_span = spans["agent.spawn"]
    assert spawn_span.parent.span_id == root.context.span_id
    first = runtime.log.read(child.agent_id, 0)[0]
    assert trace_id_of(first.traceparent) == format(root.context.trace_id, "032x")
    assert runtime.log.read(untraced.agent_id, 0)[0].traceparent == ""  # no orphan trace


def test_a_crashed_subagent_is_reported_to_waiters_by_its_parents_supervision(stack: Any) -> None:
    from protos.supervisor.v1 import envelope_pb2

    stub, runtime, tmp = stack
    sid = start(stub, tmp)
    child = spawn(stub, sid, "sleep 30")
    runtime.live(child.agent_id).actor_ref.tell(envelope_pb2.Envelope(
        task_failed=envelope_pb2.TaskFailed(task="test", error="injected crash")))
    waited = stub.WaitAgents(agents_pb2.WaitAgentsRequest(session_id=sid, agent_ids=[child.agent_id],
                                                          timeout_ms=10_000), timeout=WAIT_S)
    assert not waited.timed_out
    assert waited.finished[0].status == agents_pb2.AGENT_STATUS_ERRORED
    assert "injected crash" in waited.finished[0].last_message
    stopped = [e.child_stopped for e in runtime.log.read(sid, 0, limit=1000) if e.WhichOneof("msg") == "child_stopped"]
    assert any(s.child_id == child.agent_id and "injected crash" in s.reason for s in stopped)
    assert spawn(stub, sid, "still spawning").agent_id  # the parent keeps working
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)


def test_a_subagent_has_its_own_proxy_view_and_exec(stack: Any) -> None:
    import http.server

    from protos.supervisor.v1 import shell_pb2

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"hi")

        def log_message(self, *args: Any) -> None:
            pass

    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    serving = threading.Thread(target=upstream.serve_forever)
    serving.start()
    try:
        stub, runtime, tmp = stack
        port = upstream.server_address[1]
        sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp), config_overrides=[
            'shell.program="/bin/bash"', f'network.allowed_domains=["127.0.0.1:{port}"]',
            "network.allow_local_binding=true"]), timeout=WAIT_S).session_id
        child = spawn(stub, sid, "")
        env = stub.Exec(shell_pb2.ExecRequest(session_id=child.agent_id, command="echo $HTTP_PROXY"), timeout=WAIT_S)
        proxy_url = env.output.strip()
        assert "@127.0.0.1:" in proxy_url  # the subagent's own view token in its proxy URL
        fetched = stub.Exec(shell_pb2.ExecRequest(session_id=child.agent_id,
                                                  command=f"curl -sS http://127.0.0.1:{port}/"), timeout=WAIT_S)
        assert fetched.exit_code == 0 and fetched.output.strip() == "hi"
        audits = [e for e in runtime.log.read(sid, 0, limit=1000)
                  if e.WhichOneof("msg") == "network_connection_audit"]
        assert any(a.network_connection_audit.agent_path == f"/root/{child.nickname}" for a in audits)
        stub.CloseAgent(agents_pb2.CloseAgentRequest(session_id=sid, agent_id=child.agent_id), timeout=WAIT_S)
        refused = stub.Exec(shell_pb2.ExecRequest(session_id=sid, command=(
            f"curl -s -o /dev/null -w '%{{http_code}}' -x '{proxy_url}' http://127.0.0.1:{port}/")), timeout=WAIT_S)
        assert refused.output.strip() == "407"  # a closed subagent's view token is refused
        stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
    finally:
        upstream.shutdown()
        upstream.server_close()
        serving.join(WAIT_S)


def test_a_closed_subagent_resumes_from_its_log_like_a_spawned_one(stack: Any) -> None:
    stub, runtime, tmp = stack
    sid = start(stub, tmp)
    child = spawn(stub, sid, "first")
    stub.WaitAgents(agents_pb2.WaitAgentsRequest(session_id=sid, agent_ids=[child.agent_id], timeout_ms=10_000),
                    timeout=WAIT_S)
    stub.CloseAgent(agents_pb2.CloseAgentRequest(session_id=sid, agent_id=child.agent_id), timeout=WAIT_S)
    resumed = stub.ResumeAgent(agents_pb2.ResumeAgentRequest(session_id=sid, agent_id=child.agent_id),
                               timeout=WAIT_S).agent
    assert resumed.agent_id == child.agent_id and resumed.status == agents_pb2.AGENT_STATUS_COMPLETED
    stub.SendAgentInput(agents_pb2.SendAgentInputRequest(session_id=sid, agent_id=child.agent_id, message="again"),
                        timeout=WAIT_S)
    waited = stub.WaitAgents(agents_pb2.WaitAgentsRequest(session_id=sid, agent_ids=[child.agent_id],
                                                          timeout_ms=10_000), timeout=WAIT_S)
    assert waited.finished[0].last_message == "echo: again"
    events = runtime.log.read(child.agent_id, 0, limit=1000)
    starts = [e.session_configured.start_kind for e in events if e.WhichOneof("msg") == "session_configured"]
    assert starts == ["new", "resume"]
    # resumed like it was spawned: the parent's shell and proxy, no children of its own
    assert not [e for e in events if e.WhichOneof("msg") == "child_started"]
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
