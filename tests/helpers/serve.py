"""A real ``supervisor.py serve`` in a child process, for the tests that drive the API from outside.

Every test that starts ``serve`` goes through :class:`ServeProcess`, so how a client finds and authenticates to
the server (address, credentials) is decided in one place.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import grpc

from actors.auth import open_channel, read_serve_info
from protos.supervisor.v1 import session_pb2, session_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
#: Bound on the server's start-up and on its exit.
START_BOUND_S = 30.0


def run_turn(stub: session_pb2_grpc.SessionServiceStub, sid: str, text: str,
             timeout: float = START_BOUND_S) -> None:
    """Submit ``text`` and wait (bounded by the stream's deadline) until its turn completed."""
    task_id = stub.Submit(session_pb2.SubmitRequest(session_id=sid, input=text), timeout=timeout).task_id
    for event in stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid), timeout=timeout):
        kind = event.WhichOneof("msg")
        if event.task_id == task_id and kind in ("turn_completed", "turn_aborted"):
            assert kind == "turn_completed", event
            return
    raise AssertionError(f"turn {text!r} never ended")


class ServeProcess:
    """``supervisor.py --home HOME serve ARGS`` as a child process; a context manager that always reaps it.

    ``address`` is a gRPC target (``127.0.0.1:PORT``, or ``unix:PATH`` with ``args=()``) and ``token`` the
    owner token (from ``<home>/run/serve.json``) once :meth:`start` returned; :meth:`channel` sends it.
    """

    def __init__(self, home: Path, args: Sequence[str] = ("--listen", "127.0.0.1:0"),
                 env: dict[str, str] | None = None, cwd: Path = ROOT) -> None:
        self.home = home
        self.args = list(args)
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[str] | None = None
        self.address = ""
        self.token = ""

    def start(self) -> ServeProcess:
        """Start the server and wait (bounded) until it listens."""
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "supervisor.py"), "--home", str(self.home),
                                      "serve", *self.args], stdout=subprocess.PIPE, text=True, cwd=self.cwd,
                                     env=self.env, start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the server prints one line when it listens, or exits
        if "serving" not in line:
            self.proc.kill()
            self.proc.wait(START_BOUND_S)
            raise AssertionError(f"serve did not start: {line!r}")
        self.address = line.split(" on ", 1)[1].strip()
        self.token = read_serve_info(self.home).token
        return self

    def channel(self, options: Sequence[tuple[str, object]] = ()) -> grpc.Channel:
        """A new channel to the server, authenticated with the owner token (the caller closes it)."""
        return open_channel(self.address, self.token, options=options)

    def unauthenticated_channel(self) -> grpc.Channel:
        """A new channel that sends no token (every call but health's is refused UNAUTHENTICATED)."""
        return grpc.insecure_channel(self.address)

    def stub(self, channel: grpc.Channel) -> session_pb2_grpc.SessionServiceStub:
        """The SessionService stub on ``channel``."""
        return session_pb2_grpc.SessionServiceStub(channel)

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    def kill9(self) -> None:
        """``kill -9`` the server (only the server: what it leaves behind is the test's to find) and reap it."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(START_BOUND_S)
        self._close()

    def stop(self) -> int:
        """SIGTERM, then wait (bounded) for a clean exit; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(START_BOUND_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(START_BOUND_S)
            self._close()
        return code

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(START_BOUND_S)
        self._close()
        if self.address.startswith("unix:"):  # a killed server cannot remove its socket (a stopped one did)
            Path(self.address.removeprefix("unix:")).unlink(missing_ok=True)
