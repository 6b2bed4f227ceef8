"""`supervisor.py run --attach`: run the session in a `serve` of the same home that is up, not in this process.

Contract:
- ``serve_channel(home)`` is an authenticated channel to the server of ``home`` (``<home>/run/serve.json``,
  through ``actors.auth.connect``) when that server answers its health check within ``PROBE_TIMEOUT_S``;
  None when there is none (no file, a stale file, a server that does not answer): the caller then runs the
  session in process.
- ``AttachedRuntime`` offers the part of ``SessionRuntime`` that ``run`` uses (``start_session``, ``request``
  for a Submit, ``stream``, ``stop_session``, ``shutdown``) over that channel, so ``run`` prints the same
  events the same way whichever runs the session. A refused call raises the narrow error the gateway's status
  stands for (``StartupFailed`` for FAILED_PRECONDITION, ``ConfigError`` for INVALID_ARGUMENT, ...), so the
  CLI reports it as it reports an in-process failure.
- The session runs in the server's process: its environment (API keys, ``PATH``) and its MCP servers are the
  server's.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from actors.auth import connect
from actors.errors import (
    ConfigError,
    NotFoundError,
    PreconditionFailed,
    StartupFailed,
    SupervisorError,
    Unavailable,
)
from protos.supervisor.v1 import envelope_pb2, events_pb2, session_pb2, session_pb2_grpc

__all__ = ["PROBE_TIMEOUT_S", "AttachedRuntime", "serve_channel"]

#: How long the health check of a server that ``serve.json`` names may take before `run` works alone.
PROBE_TIMEOUT_S = 1.0
#: Bound on each unary call to the server (a StartSession waits for required MCP servers).
CALL_TIMEOUT_S = 120.0
SERVICE = "supervisor.v1.SessionService"

_ERROR_FOR: dict[grpc.StatusCode, type[SupervisorError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: ConfigError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: StartupFailed,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


def serve_channel(home: Path) -> grpc.Channel | None:
    """A channel to the running server of ``home``, or None when none is up (see the module docstring)."""
    try:
        channel = connect(home)
    except (SupervisorError, OSError, ValueError):
        return None
    try:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE),
                                                  timeout=PROBE_TIMEOUT_S)
    except grpc.RpcError:
        channel.close()
        return None
    return channel


def _narrow(exc: grpc.RpcError) -> SupervisorError:
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return _ERROR_FOR.get(code, PreconditionFailed)(details or code.name)  # the text an in-process run shows


class AttachedRuntime:
    """What `run` needs of a runtime, served by a running `serve` (see the module docstring)."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._channel = channel
        self._stub = session_pb2_grpc.SessionServiceStub(channel)

    def start_session(self, request: session_pb2.StartSessionRequest) -> session_pb2.StartSessionResponse:
        """StartSession on the server."""
        try:
            return self._stub.StartSession(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise _narrow(exc) from None

    def request(self, session_id: str, envelope: envelope_pb2.Envelope) -> envelope_pb2.Envelope:
        """A Submit envelope, sent as the Submit RPC; its reply as an envelope."""
        if envelope.WhichOneof("payload") != "submit":
            raise NotImplementedError("an attached run only submits")
        try:
            reply = self._stub.Submit(envelope.submit, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise _narrow(exc) from None
        return envelope_pb2.Envelope(submit_reply=reply)

    def stream(self, session_id: str, from_seq: int = 0, *, stop: threading.Event | None = None
               ) -> Iterator[events_pb2.Event]:
        """The session's events from ``from_seq``, live, until the caller stops reading or ``stop`` is set."""
        call = self._stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=session_id, from_seq=from_seq))
        ended = threading.Event()

        def cancel_on_stop() -> None:
            if stop is not None:
                while not ended.wait(0.5):
                    if stop.is_set():
                        call.cancel()
                        return

        watcher = threading.Thread(target=cancel_on_stop, name="attach-stop", daemon=True)
        watcher.start()
        try:
            yield from call
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:  # type: ignore[attr-defined]
                raise _narrow(exc) from None
        finally:
            ended.set()
            call.cancel()
            watcher.join()

    def stop_session(self, session_id: str) -> Any:
        """StopSession on the server."""
        try:
            return self._stub.StopSession(session_pb2.StopSessionRequest(session_id=session_id),
                                          timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as exc:
            raise _narrow(exc) from None

    def shutdown(self) -> None:
        """Close the channel (the server and its other sessions go on)."""
        self._channel.close()
