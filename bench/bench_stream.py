"""Benchmark: event streaming through the gateway beside a raw grpcio stream, and 1,000 concurrent clients.

Run: ``.venv/bin/python bench/bench_stream.py`` (about 30-40 s on 2 cores). Figures:
- events/s to one streaming client: ``StreamEvents`` of a session's logged events (one message per event, as
  the log stored them) vs a raw grpcio sync server yielding the same events one message each; rounds alternate
  (goal >= 1.0x);
- the same through ``EventStreamService.StreamEventBatches`` (runs of events, each with its own seq);
- events/s total to 1,000 concurrent live ``StreamEvents`` clients (a grpc.aio client in another process),
  with the server's thread count while they stream (no baseline: a sync server needs a thread per stream).
Prints a table and one JSON line per figure.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc

from actors.auth import bearer
from actors.gateway import serve
from actors.runtime import RuntimeOptions, SessionRuntime
from actors.turn import builtin_runner
from protos.supervisor.v1 import events_pb2, session_pb2, session_pb2_grpc, stream_pb2, stream_pb2_grpc

#: Logged events streamed to one client per round, and rounds (ours and raw alternate).
ONE_CLIENT_EVENTS = 20_000
ROUNDS = 3
#: Concurrent live clients, and events each must receive.
MANY_CLIENTS = 1000
MANY_EVENTS = 100
#: Bound on the many-clients run.
MANY_TIMEOUT_S = 120.0

Row = tuple[str, float, float | None, str, bool]


def _event(i: int) -> events_pb2.Event:
    event = events_pb2.Event(session_id="s" * 32, seq=i, agent_path="/root")
    event.warning.message = f"event {i} " + "x" * 60
    return event


def one_client(home: Path) -> tuple[Row, Row]:
    """Logged events to one client: ours per message and batched, vs raw grpcio per message (both over TCP
    loopback without authentication: the API's own cost; bench_auth measures the token check's)."""
    runtime = SessionRuntime(RuntimeOptions(task_runner=builtin_runner, home=home / "one"))
    server = serve(runtime, "127.0.0.1:0", authenticate=False)
    raw_executor = futures.ThreadPoolExecutor(max_workers=4)
    raw_server = grpc.server(raw_executor)
    prebuilt = [_event(i) for i in range(ONE_CLIENT_EVENTS)]

    def raw_stream(request: bytes, context: grpc.ServicerContext) -> Any:
        session_pb2.StreamEventsRequest.FromString(request)
        yield from prebuilt

    raw_server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("raw.v1.Raw", {
        "Stream": grpc.unary_stream_rpc_method_handler(raw_stream, response_serializer=lambda m: m.SerializeToString())
    }),))
    raw_port = raw_server.add_insecure_port("127.0.0.1:0")
    raw_server.start()
    try:
        sid = runtime.start_session(session_pb2.StartSessionRequest(cwd=str(home))).session_id
        actor = runtime.live(sid)
        for i in range(ONE_CLIENT_EVENTS - 1):
            actor.emit(events_pb2.Warning(message=f"event {i} " + "x" * 60))
        runtime.stop_session(sid)
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch, \
                grpc.insecure_channel(f"127.0.0.1:{raw_port}") as raw_ch:
            stub = session_pb2_grpc.SessionServiceStub(ch)
            batches = stream_pb2_grpc.EventStreamServiceStub(ch)
            raw_call = raw_ch.unary_stream("/raw.v1.Raw/Stream", response_deserializer=events_pb2.Event.FromString)
            req = session_pb2.StreamEventsRequest(session_id=sid, no_follow=True)

            def ours() -> int:
                return sum(1 for _ in stub.StreamEvents(req))

            def ours_batched() -> int:
                n = 0
                for batch in batches.StreamEventBatches(stream_pb2.StreamEventBatchesRequest(session_id=sid,
                                                                                             no_follow=True)):
                    assert batch.events[0].seq == n and batch.events[-1].seq == n + len(batch.events) - 1
                    n += len(batch.events)
                return n

            def raw() -> int:
                return sum(1 for _ in raw_call(req.SerializeToString()))

            best = {"ours": 0.0, "batched": 0.0, "raw": 0.0}
            for _ in range(ROUNDS):
                for name, fn in (("raw", raw), ("ours", ours), ("batched", ours_batched)):
                    t0 = time.perf_counter()
                    n = fn()
                    assert n >= ONE_CLIENT_EVENTS, (name, n)
                    best[name] = max(best[name], n / (time.perf_counter() - t0))
    finally:
        server.stop()
        raw_server.stop(0).wait(5)
        raw_executor.shutdown()
        runtime.shutdown()
    return (("events/s to one client: StreamEvents vs raw grpcio per-message stream", best["ours"], best["raw"],
             "events/s", True),
            ("events/s to one client: StreamEventBatches vs raw grpcio per-message stream", best["batched"],
             best["raw"], "events/s", True))


async def _clients(port: int, sid: str, from_seq: int, n: int, m: int) -> dict[str, Any]:
    """Client side of the many-clients figure: ``n`` live streams; each must get ``m`` events after the first."""
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = session_pb2_grpc.SessionServiceStub(channel)
    ready = 0
    all_ready = asyncio.Event()
    done_at: list[float] = []

    async def one() -> None:
        nonlocal ready
        got = 0
        call = stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid, from_seq=from_seq),
                                 metadata=bearer(os.environ["SUPERVISOR_TOKEN"]))
        async for _ in call:
            got += 1
            if got == 1:
                ready += 1
                if ready == n:
                    all_ready.set()
            if got == m + 1:
                done_at.append(time.perf_counter())
                call.cancel()
                return

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    await asyncio.wait_for(all_ready.wait(), MANY_TIMEOUT_S)
    t0 = time.perf_counter()
    print("READY", flush=True)
    await asyncio.wait_for(asyncio.gather(*tasks), MANY_TIMEOUT_S)
    await channel.close()
    return {"elapsed_s": max(done_at) - t0, "events": n * m}


def many_clients(home: Path) -> Row:
    """``MANY_CLIENTS`` live streams of one session; the session emits ``MANY_EVENTS`` after all subscribed."""
    runtime = SessionRuntime(RuntimeOptions(task_runner=builtin_runner, home=home / "many"))
    server = serve(runtime, "127.0.0.1:0")
    try:
        sid = runtime.start_session(session_pb2.StartSessionRequest(cwd=str(home))).session_id
        actor = runtime.live(sid)
        last = runtime.log.last_seq(sid)
        proc = subprocess.Popen([sys.executable, __file__, "--clients", str(server.port), sid, str(last),
                                 str(MANY_CLIENTS), str(MANY_EVENTS)], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                env={**os.environ, "SUPERVISOR_TOKEN": server.token})
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip() == "READY", line
            threads_streaming = threading.active_count()
            subs = runtime.log.hub.subscriber_count(sid)
            for i in range(MANY_EVENTS):
                actor.emit(events_pb2.Warning(message=f"event {i}"))
            out, _ = proc.communicate(timeout=MANY_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        result = json.loads(out.strip().splitlines()[-1])
        runtime.stop_session(sid)
    finally:
        server.stop()
        runtime.shutdown()
    return (f"events/s total to {MANY_CLIENTS} live StreamEvents clients ({subs} subscribed; server threads while "
            f"streaming: {threads_streaming})", result["events"] / result["elapsed_s"], None, "events/s", True)


def main() -> int:
    """Run every figure and print the table and JSON lines."""
    with tempfile.TemporaryDirectory() as tmp:
        rows: list[Row] = [*one_client(Path(tmp)), many_clients(Path(tmp))]
    print(f"{'figure':100} {'ours':>10} {'baseline':>10} {'ratio':>7}  unit")
    for figure, ours, base, unit, _ in rows:
        ratio = f"{ours / base:7.2f}" if base else "      -"
        shown = f"{base:10.1f}" if base else f"{'-':>10}"
        print(f"{figure:100} {ours:10.1f} {shown} {ratio}  {unit}")
    for figure, ours, base, unit, higher in rows:
        print(json.dumps({"bench": "stream", "figure": figure, "ours": round(ours, 3),
                          "baseline": round(base, 3) if base else None,
                          "ratio": round(ours / base, 3) if base else None, "unit": unit,
                          "higher_is_better": higher}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "--clients":
        print(json.dumps(asyncio.run(_clients(int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]),
                                              int(sys.argv[6])))))
        raise SystemExit(0)
    raise SystemExit(main())
