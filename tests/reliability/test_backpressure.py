"""Backpressure (issue 16, finding 7): a flooded session inbox answers RESOURCE_EXHAUSTED naming its limit
(nothing dropped, nothing hung), the server caps concurrent RPCs, and a burst of calls leaves no threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from actors.auth import open_channel
from actors.core import ElasticThreadPool
from actors.gateway import GatewayServer, serve
from actors.limits import MAX_CONCURRENT_RPCS, MAX_SESSION_INBOX
from actors.runtime import RuntimeOptions, SessionRuntime
from actors.turn import builtin_runner
from protos.supervisor.v1 import envelope_pb2, session_pb2, session_pb2_grpc
from tests.helpers.processes import wait_for

WAIT_S = 30.0
#: The issue's burst: concurrent StartSession calls.
BURST = 200
#: Threads must be back to their baseline this soon after a burst.
SHRINK_BOUND_S = 5.0
#: Messages put in a session's inbox at once, far over its limit.
FLOOD = 20 * MAX_SESSION_INBOX
#: Floods tried before the test gives up on filling the inbox (one is enough under load).
FLOOD_ATTEMPTS = 20


#: The concurrent-RPC limit of the server under test (small, so a test can exceed it cheaply).
RPC_LIMIT = 50


@pytest.fixture
def stack(tmp_path: Path, request: pytest.FixtureRequest
          ) -> Iterator[tuple[SessionRuntime, GatewayServer, session_pb2_grpc.SessionServiceStub]]:
    runtime = SessionRuntime(RuntimeOptions(task_runner=builtin_runner, home=tmp_path / "home"))
    limit = RPC_LIMIT if "over_the_limit" in request.node.name else MAX_CONCURRENT_RPCS
    server = serve(runtime, "127.0.0.1:0", max_concurrent_rpcs=limit)
    channel = open_channel(server.address, server.token)
    try:
        yield runtime, server, session_pb2_grpc.SessionServiceStub(channel)
    finally:
        channel.close()
        server.stop()
        runtime.shutdown()


def _code(call: grpc.Future) -> grpc.StatusCode:
    try:
        call.result(WAIT_S)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[attr-defined, no-any-return]
    return grpc.StatusCode.OK


def test_a_flooded_session_inbox_refuses_with_resource_exhausted_and_serves_again(
        stack: tuple[SessionRuntime, GatewayServer, session_pb2_grpc.SessionServiceStub], tmp_path: Path) -> None:
    runtime, _, stub = stack
    sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp_path)), timeout=WAIT_S).session_id
    ref = runtime.live(sid).actor_ref
    refused: grpc.RpcError | None = None
    for _ in range(FLOOD_ATTEMPTS):  # a quiet machine's session may drain one flood before the call arrives
        for _ in range(FLOOD):  # another client's flood, faster than the session drains it
            ref.tell(envelope_pb2.Envelope(get_session=session_pb2.GetSessionRequest(session_id=sid)))
        try:
            stub.GetSession(session_pb2.GetSessionRequest(session_id=sid), timeout=WAIT_S)
        except grpc.RpcError as exc:
            refused = exc
            break
    assert refused is not None, f"{FLOOD_ATTEMPTS} floods of {FLOOD} never filled the inbox"
    assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
    assert "MAX_SESSION_INBOX = 256" in refused.details()  # type: ignore[attr-defined]
    calls = [stub.GetSession.future(session_pb2.GetSessionRequest(session_id=sid), timeout=WAIT_S)
             for _ in range(FLOOD // 10)]
    codes = [_code(call) for call in calls]
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}  # answered, none lost
    wait_for(ref.actor_inbox.empty, WAIT_S, "the session to drain its inbox")
    assert stub.GetSession(session_pb2.GetSessionRequest(session_id=sid), timeout=WAIT_S).session.session_id == sid
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)


def test_concurrent_rpcs_over_the_limit_are_refused(
        stack: tuple[SessionRuntime, GatewayServer, session_pb2_grpc.SessionServiceStub], tmp_path: Path) -> None:
    _, _, stub = stack
    sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp_path)), timeout=WAIT_S).session_id
    streams = [stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid), timeout=WAIT_S)
               for _ in range(RPC_LIMIT + 10)]  # each holds a slot while it follows
    try:
        firsts: list[grpc.StatusCode] = []
        for stream in streams:
            try:
                next(stream)
                firsts.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                firsts.append(exc.code())  # type: ignore[attr-defined]
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in firsts
        assert set(firsts) == {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
    finally:
        for stream in streams:
            stream.cancel()
    wait_for(lambda: _code(stub.GetSession.future(session_pb2.GetSessionRequest(session_id=sid), timeout=WAIT_S))
             == grpc.StatusCode.OK, WAIT_S, "a free slot once the streams ended")
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)


def test_threads_shrink_back_after_a_burst_of_starts(
        stack: tuple[SessionRuntime, GatewayServer, session_pb2_grpc.SessionServiceStub], tmp_path: Path) -> None:
    _, _, stub = stack
    warm = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp_path)), timeout=WAIT_S).session_id
    stub.StopSession(session_pb2.StopSessionRequest(session_id=warm), timeout=WAIT_S)  # process-wide threads
    wait_for(lambda: not any(t.name.startswith(("grpc-worker", "actor-worker", "Trio thread"))
                             for t in threading.enumerate()), WAIT_S, "an idle server")
    baseline = threading.active_count()
    with ThreadPoolExecutor(max_workers=16) as clients:  # the calls are futures; these only collect
        calls = [stub.StartSession.future(session_pb2.StartSessionRequest(cwd=str(tmp_path)), timeout=WAIT_S * 4)
                 for _ in range(BURST)]
        ids = [reply.session_id for reply in clients.map(lambda call: call.result(WAIT_S * 4), calls)]
        peak = threading.active_count()
        stops = [stub.StopSession.future(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S * 4)
                 for sid in ids]
        list(clients.map(lambda call: call.result(WAIT_S * 4), stops))
    # A live session holds its own actors' threads; what must not stay is what served the burst.
    began = time.monotonic()
    wait_for(lambda: threading.active_count() <= baseline, SHRINK_BOUND_S,
             f"threads back to {baseline} (peak {peak}, now {sorted(t.name for t in threading.enumerate())})")
    print(f"threads: baseline {baseline}, {BURST} sessions {peak}, back to baseline"
          f" {time.monotonic() - began:.2f} s after they stopped")


def test_elastic_pool_runs_in_parallel_up_to_its_maximum_then_queues_and_shrinks() -> None:
    pool = ElasticThreadPool(max_workers=4, idle_exit_s=0.05, thread_name_prefix="test-pool")
    gate = threading.Event()
    running = threading.Semaphore(0)

    def job(n: int) -> int:
        running.release()
        gate.wait(WAIT_S)
        return n

    futures = [pool.submit(job, n) for n in range(10)]
    for _ in range(4):
        assert running.acquire(timeout=WAIT_S)
    assert pool.thread_count() == 4 and not running.acquire(timeout=0.05)  # the rest wait in order
    gate.set()
    assert [f.result(WAIT_S) for f in futures] == list(range(10))
    wait_for(lambda: pool.thread_count() == 0, WAIT_S, "idle threads to exit")
    assert pool.submit(job, 11).result(WAIT_S) == 11  # a new thread for new work
    pool.shutdown(wait=True)
    assert pool.thread_count() == 0
