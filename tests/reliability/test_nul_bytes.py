"""A NUL byte in an Exec command or environment is the client's mistake: INVALID_ARGUMENT, not INTERNAL (found
by the chaos suite's hostile sweep, seed 4100254582: ``ValueError: embedded null byte`` from the spawn)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from actors.auth import open_channel
from actors.gateway import serve
from actors.runtime import RuntimeOptions, SessionRuntime
from actors.turn import builtin_runner
from protos.supervisor.v1 import session_pb2, session_pb2_grpc, shell_pb2

WAIT_S = 30.0


def test_a_nul_byte_in_exec_is_invalid_argument(tmp_path: Path) -> None:
    runtime = SessionRuntime(RuntimeOptions(task_runner=builtin_runner, home=tmp_path / "home"))
    server = serve(runtime, "127.0.0.1:0")
    channel = open_channel(server.address, server.token)
    try:
        stub = session_pb2_grpc.SessionServiceStub(channel)
        sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp_path)), timeout=WAIT_S).session_id
        for request in (shell_pb2.ExecRequest(session_id=sid, command="echo a\0b"),
                        shell_pb2.ExecRequest(session_id=sid, command="true", env={"A": "x\0y"})):
            with pytest.raises(grpc.RpcError) as info:
                stub.Exec(request, timeout=WAIT_S)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
            assert "null byte" in info.value.details()  # type: ignore[attr-defined]
        assert stub.Exec(shell_pb2.ExecRequest(session_id=sid, command="echo ok"), timeout=WAIT_S).exit_code == 0
        stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
    finally:
        channel.close()
        server.stop()
        runtime.shutdown()
