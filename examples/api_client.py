"""A gRPC client of a running ``supervisor.py serve``: finds it through ``<home>/run/serve.json`` and sends the
token there on every call (``actors.auth.connect``).

    .venv/bin/python supervisor.py serve &                  # unix socket + owner token in serve.json
    .venv/bin/python examples/api_client.py "echo hello"    # starts a session, prints its events, stops it

A principal's token (``supervisor.py token create --principal NAME``) works the same way with
``actors.auth.open_channel(address, token)``; that principal then sees only its own sessions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.auth import connect  # noqa: E402
from actors.config import default_home  # noqa: E402
from protos.supervisor.v1 import session_pb2, session_pb2_grpc  # noqa: E402

CALL_TIMEOUT_S = 30.0


def main() -> int:
    """Start a session on the server, run one task in it, print its events, stop it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default="echo hello from the API")
    parser.add_argument("--home", type=Path, default=None, help="the server's home (default: the usual one)")
    args = parser.parse_args()
    with connect(args.home or default_home()) as channel:
        stub = session_pb2_grpc.SessionServiceStub(channel)
        sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(Path.cwd())),
                                timeout=CALL_TIMEOUT_S).session_id
        stub.Submit(session_pb2.SubmitRequest(session_id=sid, input=args.prompt), timeout=CALL_TIMEOUT_S)
        for event in stub.StreamEvents(session_pb2.StreamEventsRequest(session_id=sid), timeout=CALL_TIMEOUT_S):
            print(event.seq, event.WhichOneof("msg"))
            if event.WhichOneof("msg") in ("turn_completed", "turn_aborted", "error"):
                break
        stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=CALL_TIMEOUT_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
