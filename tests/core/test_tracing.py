"""Trace context: client span -> RPC -> session start -> child start, one trace; the no-parent case."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opentelemetry import trace

from actors.auth import open_channel
from actors.core import _tracing
from actors.core._supervision import ChildSpec, SupervisedActor
from actors.gateway import serve
from actors.runtime import RuntimeOptions, SessionRuntime
from actors.session import SessionSetup
from actors.turn import builtin_runner
from protos.supervisor.v1 import session_pb2, session_pb2_grpc

WAIT_S = 10.0


class QuickChild(SupervisedActor):
    pass


def by_name(spans: Any) -> dict[str, Any]:
    return {s.name: s for s in spans}


def test_client_span_rpc_session_start_and_child_start_share_one_trace(tmp_path: Path, span_exporter: Any) -> None:
    def children(_: SessionSetup) -> list[ChildSpec]:
        return [ChildSpec("helper", QuickChild, kind="test")]

    runtime = SessionRuntime(RuntimeOptions(
        task_runner=builtin_runner, home=tmp_path / "h", managed_dir=tmp_path / "e", extra_children=children))
    server = serve(runtime, "127.0.0.1:0")
    try:
        with open_channel(server.address, server.token) as channel:
            stub = session_pb2_grpc.SessionServiceStub(channel)
            with trace.get_tracer("test-client").start_as_current_span("client"):
                tp, _ = _tracing.current_traceparent()
                started = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp_path)),
                                            metadata=[("traceparent", tp)], timeout=WAIT_S)
            stub.StopSession(session_pb2.StopSessionRequest(session_id=started.session_id), timeout=WAIT_S)
        events = list(runtime.log.read(started.session_id, 0))
    finally:
        server.stop()
        runtime.shutdown()
    spans = by_name(span_exporter.get_finished_spans())
    client = spans["client"]
    rpc = spans["supervisor.v1.SessionService/StartSession"]
    start = spans["session.start"]
    child = spans["child.start helper"]
    assert {s.context.trace_id for s in (client, rpc, start, child)} == {client.context.trace_id}
    assert rpc.parent.span_id == client.context.span_id
    assert start.parent.span_id == rpc.context.span_id
    assert child.parent.span_id == start.context.span_id
    # SessionConfigured carries the session's trace
    assert _tracing.trace_id_of(events[0].traceparent) == format(client.context.trace_id, "032x")


def test_a_child_of_an_untraced_parent_has_no_trace(span_exporter: Any) -> None:
    with _tracing.span("child.session", "", new_root_if_untraced=False) as tp:
        assert tp == ""
    assert span_exporter.get_finished_spans() == ()


def test_a_child_of_a_traced_parent_is_its_child(span_exporter: Any) -> None:
    with _tracing.span("parent.spawn") as parent_tp, \
            _tracing.span("child.session", parent_tp, new_root_if_untraced=False) as child_tp:
        assert _tracing.trace_id_of(child_tp) == _tracing.trace_id_of(parent_tp)
    spans = by_name(span_exporter.get_finished_spans())
    assert spans["child.session"].parent.span_id == spans["parent.spawn"].context.span_id


def test_flags_03_traceparent_is_accepted(span_exporter: Any) -> None:
    incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03"
    with _tracing.span("rpc", incoming) as tp:
        assert _tracing.trace_id_of(tp) == "0af7651916cd43dd8448eb211c80319c"
