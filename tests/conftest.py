"""Shared fixtures: every test proves that nothing it started outlives it."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pykka
import pytest

from actors.core import HOST_THREAD_NAME, SPAWNER_THREAD_NAME, WORKER_THREAD_PREFIX, get_host

#: The user's home for this test process: an empty one, so that the sessions' shell snapshots capture a known
#: login shell (the real user's rc files are theirs, and slow), and nothing a test writes to ``~`` escapes.
_PRIVATE_HOME = tempfile.mkdtemp(prefix="session-supervisor-home-")
os.environ["HOME"] = _PRIVATE_HOME
atexit.register(shutil.rmtree, _PRIVATE_HOME, True)

#: A private temporary directory for this test process, so that a test leaving a temp file behind is seen
#: (and other processes' temp files are not mistaken for ours).
_PRIVATE_TMP = tempfile.mkdtemp(prefix="session-supervisor-tests-")
os.environ["TMPDIR"] = _PRIVATE_TMP
tempfile.tempdir = _PRIVATE_TMP
atexit.register(shutil.rmtree, _PRIVATE_TMP, True)

#: How long a test's threads, processes and sockets may take to wind down after it ends.
LEAK_GRACE_S = 5.0
#: Threads that are process-wide by design, not owned by any session.
#: (actor-worker: the shared pool that runs parked actors' messages; an actor still alive is caught by the
#: actor registry check, and an idle worker exits by itself.)
PROCESS_WIDE_THREAD_PREFIXES = (HOST_THREAD_NAME, SPAWNER_THREAD_NAME, "Trio thread", "ThreadPoolExecutor-", "asyncio_",
                                WORKER_THREAD_PREFIX)


def _child_pids() -> set[int]:
    """Every live descendant process of this one (zombies included: a zombie is a leak too)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents[int(entry)] = ppid
    me = os.getpid()
    found: set[int] = set()
    frontier = {me}
    while frontier:
        nxt = {pid for pid, ppid in parents.items() if ppid in frontier and pid not in found}
        found |= nxt
        frontier = nxt
    return found


def _socket_fds() -> set[str]:
    out: set[str] = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            out.add(target)
    return out


def _session_threads() -> set[threading.Thread]:
    return {
        t
        for t in threading.enumerate()
        if t is not threading.main_thread() and not t.name.startswith(PROCESS_WIDE_THREAD_PREFIXES)
    }


def _fd_targets() -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return sorted(out)


#: grpc's event engine adds pollers (an epoll and an eventfd each) on demand, process-wide, and keeps them.
PROCESS_WIDE_FD_TARGETS = ("anon_inode:[eventfd]", "anon_inode:[eventpoll]")


def _fd_count() -> int:
    return sum(1 for target in _fd_targets() if target not in PROCESS_WIDE_FD_TARGETS)


@pytest.fixture(scope="session", autouse=True)
def shared_trio_host() -> None:
    """Start the process-wide trio loop and grpc's event engine before any leak baseline is taken.

    Both keep process-wide sockets, pollers and threads by design: they are not a session's leak.
    """
    get_host()
    _warm_up_grpc()


def _warm_up_grpc() -> None:
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    executor = futures.ThreadPoolExecutor(max_workers=2)
    server = grpc.server(executor)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
        try:  # an aborted call: grpc adds process-wide pollers the first time it takes this path
            stub.Check(health_pb2.HealthCheckRequest(service="unknown"), timeout=10)
        except grpc.RpcError:
            pass
    server.stop(0).wait(5)
    executor.shutdown(wait=True)


@pytest.fixture(autouse=True)
def no_leaks(shared_trio_host: None) -> Iterator[None]:
    """Fail a test that leaves an actor, thread, child process, socket or file descriptor behind."""
    threads_before = _session_threads()
    pids_before = _child_pids()
    sockets_before = _socket_fds()
    fds_before = _fd_count()
    fd_targets_before = _fd_targets()
    temp_before = set(os.listdir(_PRIVATE_TMP))
    yield
    alive = pykka.ActorRegistry.get_all()
    pykka.ActorRegistry.stop_all(block=True, timeout=LEAK_GRACE_S)
    deadline = time.monotonic() + LEAK_GRACE_S
    while True:
        threads = {t for t in _session_threads() - threads_before if t.is_alive()}
        pids = _child_pids() - pids_before
        sockets = _socket_fds() - sockets_before
        fds = _fd_count() - fds_before
        if not (threads or pids or sockets or fds > 0) or time.monotonic() > deadline:
            break
        time.sleep(0.02)  # polling a bounded deadline, not waiting for a fixed time
    assert not alive, f"actors still running after the test: {alive}"
    temp_left = {n for n in set(os.listdir(_PRIVATE_TMP)) - temp_before if not n.startswith("pytest-")}
    assert not temp_left, f"temporary files outlived the test: {sorted(temp_left)}"
    assert not threads, f"threads outlived the test: {sorted(t.name for t in threads)}"
    assert not pids, f"processes outlived the test: {sorted(pids)}"
    assert not sockets, f"sockets outlived the test: {sorted(sockets)}"
    if fds > 0:
        from collections import Counter

        new = Counter(_fd_targets()) - Counter(fd_targets_before)
        raise AssertionError(f"{fds} file descriptors outlived the test: {sorted(new.elements())}")


@pytest.fixture(scope="session")
def _span_exporter_once() -> Any:
    """Install the OpenTelemetry SDK with an in-memory exporter, once per process (it is global)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


@pytest.fixture
def span_exporter(_span_exporter_once: Any) -> Any:
    """The in-memory span exporter, emptied for this test."""
    _span_exporter_once.clear()
    return _span_exporter_once
