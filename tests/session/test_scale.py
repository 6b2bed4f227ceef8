"""Invariants the scale benchmark relies on, at small N: parked sessions hold no thread, a stopped tree of 1,000
leaves nothing behind, open event streams hold no server thread, and a slow client neither grows server memory
nor loses events."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest

from actors.auth import open_channel
from actors.core import get_pool
from actors.gateway import serve
from actors.runtime import RuntimeOptions, SessionRuntime
from actors.turn import builtin_runner
from protos.supervisor.v1 import agents_pb2, envelope_pb2, events_pb2, session_pb2, session_pb2_grpc

TREE = 1000
WAIT_S = 20.0
#: Threads a tree of parked sessions may use beyond the process's own (the worker pool's busy and idle ones).
PARKED_THREAD_ALLOWANCE = 40
STREAMS = 100
SLOW_EVENTS = 4000
EVENT_PAYLOAD = "x" * 4096
#: A subscriber queue this small makes the slow client fall behind quickly.
SMALL_QUEUE = 64


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _child_count() -> int:
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            count += int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid()
    return count


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[SessionRuntime]:
    rt = SessionRuntime(RuntimeOptions(task_runner=builtin_runner, home=tmp_path / "home",
                                       managed_dir=tmp_path / "etc"))
    try:
        yield rt
    finally:
        rt.shutdown()


def _start(rt: SessionRuntime, cwd: Path, *overrides: str) -> str:
    return rt.start_session(session_pb2.StartSessionRequest(cwd=str(cwd), config_overrides=[
        'shell.program="/bin/bash"', "network.enabled=false", *overrides])).session_id


def test_a_tree_of_1000_parks_and_stops_leaving_nothing(runtime: SessionRuntime, tmp_path: Path) -> None:
    root = _start(runtime, tmp_path, f"agents.max_threads={TREE}")
    threads0, fds0, children0 = threading.active_count(), len(os.listdir("/proc/self/fd")), _child_count()
    spawn = envelope_pb2.Envelope(opaque=envelope_pb2.Opaque(
        type_url=agents_pb2.SpawnAgentRequest.DESCRIPTOR.full_name,
        data=agents_pb2.SpawnAgentRequest(session_id=root).SerializeToString()))
    for _ in range(TREE):
        runtime.request_feature(root, spawn, timeout=WAIT_S)
    assert len(runtime.live_ids()) == TREE + 1
    assert threading.active_count() - threads0 < PARKED_THREAD_ALLOWANCE  # not one thread per session
    some = runtime.live_ids()[-1]
    assert runtime.get_session(some).status == session_pb2.SESSION_STATUS_RUNNING  # a parked session answers
    runtime.stop_session(root)
    assert runtime.live_ids() == []
    assert pykka.ActorRegistry.get_all() == []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and (threading.active_count() > threads0 or get_pool().thread_count()):
        time.sleep(0.05)  # idle workers exit on their own after WORKER_IDLE_EXIT_S
    assert get_pool().thread_count() == 0
    assert threading.active_count() <= threads0
    assert len(os.listdir("/proc/self/fd")) <= fds0
    assert _child_count() <= children0
    record = runtime.log.session(some)
    assert record is not None and record.status == "stopped"


@pytest.fixture
def served(runtime: SessionRuntime) -> Iterator[tuple[SessionRuntime, session_pb2_grpc.SessionServiceStub]]:
    server = serve(runtime, "127.0.0.1:0")
    channel = open_channel(server.address, server.token)
    try:
        yield runtime, session_pb2_grpc.SessionServiceStub(channel)
    finally:
        channel.close()
        server.stop()


def test_open_streams_hold_no_server_thread(served: tuple[SessionRuntime, session_pb2_grpc.SessionServiceStub],
                                            tmp_path: Path) -> None:
    runtime, stub = served
    sid = _start(runtime, tmp_path)
    threads0 = threading.active_count()
    calls = [stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid), timeout=WAIT_S)
             for _ in range(STREAMS)]
    try:
        for call in calls:
            assert next(call).WhichOneof("msg") == "session_configured"
        deadline = time.monotonic() + WAIT_S
        while runtime.log.hub.subscriber_count(sid) < STREAMS and time.monotonic() < deadline:
            time.sleep(0.01)
        assert runtime.log.hub.subscriber_count(sid) == STREAMS
        assert threading.active_count() - threads0 < STREAMS // 4
        runtime.live(sid).emit(events_pb2.Warning(message="to everyone"))
        for call in calls:  # after any start-up events logged meanwhile
            assert any(event.warning.message == "to everyone" for event in call)
    finally:
        for call in calls:
            call.cancel()
    runtime.stop_session(sid)


def test_a_slow_client_neither_grows_server_memory_nor_loses_events(
        served: tuple[SessionRuntime, session_pb2_grpc.SessionServiceStub], tmp_path: Path) -> None:
    runtime, stub = served
    runtime.log.hub._limit = SMALL_QUEUE
    sid = _start(runtime, tmp_path)
    call = stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid), timeout=WAIT_S)
    first = next(call)  # subscribed; now the client stops reading
    deadline = time.monotonic() + WAIT_S
    while runtime.log.hub.subscriber_count(sid) < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    actor = runtime.live(sid)
    rss0 = _rss_bytes()
    peak_queue = 0
    for i in range(SLOW_EVENTS):
        actor.emit(events_pb2.Warning(message=f"{i} {EVENT_PAYLOAD}"))
        if i % 100 == 0:
            with runtime.log.hub._lock:
                subs = list(runtime.log.hub._by_id.values())
            peak_queue = max([peak_queue, *(s.queue.qsize() for s in subs)])
    grown = _rss_bytes() - rss0
    emitted = SLOW_EVENTS * len(EVENT_PAYLOAD)
    assert peak_queue <= SMALL_QUEUE
    assert grown < emitted // 2, f"server memory grew {grown} bytes for {emitted} bytes of events nobody read"
    runtime.stop_session(sid)
    seqs = [first.seq] + [event.seq for event in call]  # the client catches up: every event, once, in order
    assert seqs == list(range(len(seqs)))
    assert sum(1 for s in seqs if s > 0) >= SLOW_EVENTS
