"""A session's real children working together: proxy + shell (Exec through the snapshot and the proxy),
network approvals over gRPC, hooks at SessionStart (startup and resume)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from actors.auth import open_channel
from actors.gateway import serve
from actors.runtime import RuntimeOptions, SessionRuntime
from actors.turn import builtin_runner
from protos.supervisor.v1 import hooks_pb2, network_pb2, session_pb2, session_pb2_grpc, shell_pb2

WAIT_S = 20.0


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello through the proxy"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, name="upstream")
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT_S)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[session_pb2_grpc.SessionServiceStub, SessionRuntime, Path]]:
    home = tmp_path / "home"
    home.mkdir()
    runtime = SessionRuntime(RuntimeOptions(task_runner=builtin_runner, home=home, managed_dir=tmp_path / "etc"))
    server = serve(runtime, "127.0.0.1:0")
    channel = open_channel(server.address, server.token)
    try:
        yield session_pb2_grpc.SessionServiceStub(channel), runtime, tmp_path
    finally:
        channel.close()
        server.stop()
        runtime.shutdown()


def start(stub: session_pb2_grpc.SessionServiceStub, cwd: Path, *overrides: str) -> str:
    request = session_pb2.StartSessionRequest(cwd=str(cwd), config_overrides=['shell.program="/bin/bash"',
                                                                              *overrides])
    return stub.StartSession(request, timeout=WAIT_S).session_id


def test_exec_runs_through_the_snapshot_and_the_proxy(stack: Any, upstream: int) -> None:
    stub, runtime, tmp = stack
    sid = start(stub, tmp, 'network.allowed_domains=["127.0.0.1"]', "network.allow_local_binding=true")
    proxy = stub.GetNetworkProxy(session_pb2.SessionNetworkProxyRequest(session_id=sid), timeout=WAIT_S)
    assert proxy.port > 0 and proxy.env["HTTP_PROXY"].endswith(f":{proxy.port}")
    echoed = stub.Exec(shell_pb2.ExecRequest(session_id=sid, command="echo $HTTP_PROXY; pwd"), timeout=WAIT_S)
    assert echoed.exit_code == 0
    assert f":{proxy.port}" in echoed.output and str(tmp) in echoed.output
    fetched = stub.Exec(shell_pb2.ExecRequest(
        session_id=sid, command=f"curl -sS http://127.0.0.1:{upstream}/"), timeout=WAIT_S)
    assert fetched.exit_code == 0, fetched.output
    assert fetched.output.strip() == "hello through the proxy"
    denied = stub.Exec(shell_pb2.ExecRequest(
        session_id=sid, command=f"curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.2:{upstream}/"),
        timeout=WAIT_S)
    assert denied.output.strip() == "403"
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
    kinds = [e.WhichOneof("msg") for e in runtime.log.read(sid, 0, limit=1000)]
    assert "network_request_blocked" in kinds and "exec_end" in kinds and "shell_snapshot_ready" in kinds
    assert kinds.index("session_configured") == 0


def test_bad_exec_requests_get_clear_statuses(stack: Any) -> None:
    stub, _, tmp = stack
    sid = start(stub, tmp)
    with pytest.raises(grpc.RpcError) as empty:
        stub.Exec(shell_pb2.ExecRequest(session_id=sid, command=""), timeout=WAIT_S)
    assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as unknown:
        stub.Exec(shell_pb2.ExecRequest(session_id="nope", command="true"), timeout=WAIT_S)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    ok = stub.Exec(shell_pb2.ExecRequest(session_id=sid, command="exit 3"), timeout=WAIT_S)
    assert ok.exit_code == 3
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)


def test_allowlist_miss_during_a_turn_is_approved_over_grpc(stack: Any, upstream: int) -> None:
    stub, runtime, tmp = stack
    sid = start(stub, tmp, 'network.allowed_domains=["example.invalid"]', "network.allow_local_binding=true")
    stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="sleep 30"), timeout=WAIT_S)  # an active turn
    approved: dict[str, Any] = {}

    def approve() -> None:
        for event in runtime.stream(sid, 0):
            if event.WhichOneof("msg") == "network_approval_requested":
                req = event.network_approval_requested
                approved["host"] = req.host
                approved["found"] = stub.ResolveApproval(session_pb2.ResolveApprovalRequest(
                    session_id=sid, approval_id=req.id,
                    decision=network_pb2.NETWORK_APPROVAL_DECISION_APPROVE_FOR_SESSION), timeout=WAIT_S).found
                return

    approver = threading.Thread(target=approve)
    approver.start()
    fetched = stub.Exec(shell_pb2.ExecRequest(session_id=sid, command=f"curl -sS http://127.0.0.1:{upstream}/"),
                        timeout=WAIT_S)
    approver.join(WAIT_S)
    assert approved == {"host": "127.0.0.1", "found": True}
    assert fetched.output.strip() == "hello through the proxy"
    again = stub.Exec(shell_pb2.ExecRequest(session_id=sid, command=f"curl -sS http://127.0.0.1:{upstream}/"),
                      timeout=WAIT_S)
    assert again.output.strip() == "hello through the proxy"
    asked = [e for e in runtime.log.read(sid, 0, limit=1000) if e.WhichOneof("msg") == "network_approval_requested"]
    assert len(asked) == 1  # approve-for-session is remembered
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)


def test_session_start_hook_sees_startup_then_resume(stack: Any) -> None:
    stub, runtime, tmp = stack
    out = tmp / "hook.log"
    hooks = {"hooks": {"SessionStart": [{"matcher": "startup|resume", "hooks": [
        {"type": "command", "command": f"python3 -c 'import json,sys; print(json.load(sys.stdin)[\"source\"])' "
                                       f">> {out}"}]}]}}
    (runtime.options.home / "hooks.json").write_text(json.dumps(hooks))
    sid = start(stub, tmp)
    listed = stub.ListHooks(hooks_pb2.ListHooksRequest(session_id=sid), timeout=WAIT_S)
    assert len(listed.hooks) == 1
    _wait_for_lines(out, 1)
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
    stub.StartSession(session_pb2.StartSessionRequest(mode=session_pb2.START_MODE_RESUME, session_id=sid),
                      timeout=WAIT_S)
    _wait_for_lines(out, 2)
    assert out.read_text().split() == ["startup", "resume"]
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)


def _wait_for_lines(path: Path, n: int) -> None:
    import time

    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().split()) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"{path} never had {n} lines")


def test_a_malformed_hooks_file_is_a_warning_after_session_configured(stack: Any) -> None:
    stub, runtime, tmp = stack
    (runtime.options.home / "hooks.json").write_text("{not json")
    sid = start(stub, tmp)
    events = runtime.log.read(sid, 0)
    kinds = [e.WhichOneof("msg") for e in events]
    assert kinds[0] == "session_configured"
    warnings = [e.warning.message for e in events if e.WhichOneof("msg") == "warning"]
    assert any("hooks.json" in w for w in warnings), warnings
    stub.Submit(session_pb2.SubmitRequest(session_id=sid, input="still works"), timeout=WAIT_S)
    stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
