"""``kill -9`` of ``serve`` at random points while clients submit and stream: every round resumes the session,
the streamed events have no gap and no duplicate across reconnects, every acknowledged Submit is in the log,
and nothing the killed server started survives it."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import grpc

from actors.core import OWNER_ENV, owner_token
from protos.supervisor.v1 import session_pb2, shell_pb2
from tests.helpers.chaos import report, rng, scale
from tests.helpers.processes import adopting_orphans, cmdline, descendants, is_running, marked, wait_for
from tests.helpers.serve import ServeProcess

WAIT_S = 30.0
ROUNDS = scale(1, 30)
#: The kill comes this long (uniformly drawn) after the clients started.
KILL_AFTER_S = (0.05, 0.8)
#: Bound on the watchdog's sweep after a kill.
SWEEP_BOUND_S = 10.0
LONG_COMMAND = "sleep 300"
#: How long the submitting client backs off when the session's queue is full (RESOURCE_EXHAUSTED).
BACKOFF_S = 0.05


class _Clients:
    """One streaming client (from a sequence number on) and one submitting client, both until the server dies."""

    def __init__(self, server: ServeProcess, sid: str, from_seq: int, round_: int) -> None:
        self.seen: list[int] = []
        self.acknowledged: list[str] = []
        self.errors: list[str] = []
        self.backpressured = 0
        self._channel = server.channel()
        self._stub = server.stub(self._channel)
        self._sid, self._from, self._round = sid, from_seq, round_
        self._threads = [threading.Thread(target=self._stream), threading.Thread(target=self._submit)]
        self.exec_call = self._stub.Exec.future(shell_pb2.ExecRequest(session_id=sid, command=LONG_COMMAND),
                                                timeout=WAIT_S * 10)
        for thread in self._threads:
            thread.start()

    def _stream(self) -> None:
        try:
            for event in self._stub.StreamEvents(
                    session_pb2.StreamEventsRequest(session_id=self._sid, from_seq=self._from), timeout=WAIT_S * 4):
                self.seen.append(event.seq)
        except grpc.RpcError as exc:
            self._note(exc)

    def _submit(self) -> None:
        n = 0
        try:
            while True:
                try:
                    reply = self._stub.Submit(session_pb2.SubmitRequest(
                        session_id=self._sid, input=f"round {self._round} task {n}"), timeout=WAIT_S)
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:  # type: ignore[attr-defined]
                        raise
                    self.backpressured += 1  # the session's queue is full: a client backs off and tries again
                    time.sleep(BACKOFF_S)
                    continue
                self.acknowledged.append(reply.task_id)
                n += 1
        except grpc.RpcError as exc:
            self._note(exc)

    def _note(self, exc: grpc.RpcError) -> None:
        code = exc.code()  # type: ignore[attr-defined]
        if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
            self.errors.append(f"{code.name}: {exc.details()}")  # type: ignore[attr-defined]

    def join(self) -> None:
        for thread in self._threads:
            thread.join(WAIT_S)
            assert not thread.is_alive(), "a client hung after the server died"
        self._channel.close()


def test_kill_9_at_random_points_loses_nothing_acknowledged(tmp_path: Path) -> None:
    random, seed = rng("kill9")
    home = tmp_path / "home"
    sid = ""
    seen: list[int] = []
    acknowledged: list[str] = []
    resumed = leftover = 0
    errors: list[str] = []
    with adopting_orphans():
        for round_ in range(ROUNDS):
            with ServeProcess(home) as server, server.channel() as channel:
                stub = server.stub(channel)
                request = session_pb2.StartSessionRequest(cwd=str(tmp_path))
                if sid:
                    request.mode, request.session_id = session_pb2.START_MODE_RESUME, sid
                reply = stub.StartSession(request, timeout=WAIT_S)
                if sid:
                    assert reply.session_id == sid
                    resumed += 1
                sid = reply.session_id
                clients = _Clients(server, sid, seen[-1] + 1 if seen else 0, round_)
                wait_for(lambda s=server: any(cmdline(p) == LONG_COMMAND for p in descendants(s.pid)), WAIT_S,
                         "the Exec command")
                time.sleep(random.uniform(*KILL_AFTER_S))  # the random point of the kill (not a wait for state)
                started = descendants(server.pid)
                owner = owner_token(server.pid)
                server.kill9()
                clients.join()
                try:
                    wait_for(lambda s=started, o=owner: not any(is_running(p) for p in s) and not marked(OWNER_ENV, o),
                             SWEEP_BOUND_S, "the killed server's processes to die")
                except AssertionError:
                    leftover += sum(1 for p in started if is_running(p))
                seen += clients.seen
                acknowledged += clients.acknowledged
                errors += clients.errors
        with ServeProcess(home) as server, server.channel() as channel:
            stub = server.stub(channel)
            stub.StartSession(session_pb2.StartSessionRequest(mode=session_pb2.START_MODE_RESUME, session_id=sid),
                              timeout=WAIT_S)  # the resume after the last kill
            resumed += 1
            log = list(stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid, no_follow=True),
                                         timeout=WAIT_S))
            assert server.stop() == 0
    seqs = [event.seq for event in log]
    gaps = sum(1 for a, b in itertools.pairwise(seen) if b > a + 1)
    duplicates = len(seen) - len(set(seen))
    logged = {event.task_id for event in log if event.task_id}
    lost = [task for task in acknowledged if task not in logged]
    began = {event.task_id for event in log if event.WhichOneof("msg") in ("turn_started", "turn_aborted")}
    report("kill9", seed, rounds=ROUNDS, resumed=resumed, acknowledged=len(acknowledged), lost=len(lost),
           gaps=gaps, duplicates=duplicates, leftover_processes=leftover, streamed=len(seen), logged=len(log),
           acknowledged_without_turn_event=sum(1 for task in acknowledged if task not in began))
    assert not errors, errors[:5]
    assert resumed == ROUNDS  # after every kill
    assert seqs == list(range(len(seqs)))
    assert seen == list(range(len(seen))) and gaps == 0 and duplicates == 0
    assert not lost, lost[:5]
    assert all(task in began for task in acknowledged)  # each ran, or was ended by the restart (TurnAborted)
    assert leftover == 0

