"""API security, tested from outside: every method refuses a call without a valid token, the run directory is
private, another local user can neither read the token nor connect, a non-loopback listener needs TLS."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from actors.auth import ServeInfo, open_channel, read_serve_info, write_serve_info
from actors.gateway import GatewayServer, serve
from actors.runtime import RuntimeOptions, SessionRuntime
from actors.turn import builtin_runner
from protos.supervisor.v1 import session_pb2, session_pb2_grpc
from tests.helpers.serve import ROOT, ServeProcess

CALL_TIMEOUT_S = 10.0
#: The uid of ``nobody``: another local user, with no access to root's files.
NOBODY = 65534


@pytest.fixture
def server(tmp_path: Path) -> Iterator[GatewayServer]:
    runtime = SessionRuntime(RuntimeOptions(task_runner=builtin_runner, home=tmp_path / "home",
                                            managed_dir=tmp_path / "etc"))
    gateway = serve(runtime)
    try:
        yield gateway
    finally:
        gateway.stop()
        runtime.shutdown()


def _methods(channel: grpc.Channel) -> list[tuple[str, bool, bool]]:
    """Every method the server lists by reflection: (path, client streaming, server streaming)."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    def ask(**kw: str) -> reflection_pb2.ServerReflectionResponse:
        return next(iter(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(**kw)]),
                                                   timeout=CALL_TIMEOUT_S)))

    names = [s.name for s in ask(list_services="").list_services_response.service]
    found: list[tuple[str, bool, bool]] = []
    for name in names:
        files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
                 for raw in ask(file_containing_symbol=name).file_descriptor_response.file_descriptor_proto]
        for fd in files:
            for service in fd.service:
                if f"{fd.package}.{service.name}" == name:
                    found += [(f"/{name}/{m.name}", m.client_streaming, m.server_streaming) for m in service.method]
    return found


def _call(channel: grpc.Channel, method: str, client_streaming: bool, server_streaming: bool,
          metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    """Call ``method`` with an empty request; the status code it ends with."""
    ident = (lambda b: b), (lambda b: b)
    try:
        if client_streaming and server_streaming:
            for _ in channel.stream_stream(method, *ident)(iter([b""]), metadata=metadata, timeout=CALL_TIMEOUT_S):
                pass
        elif server_streaming:
            for _ in channel.unary_stream(method, *ident)(b"", metadata=metadata, timeout=CALL_TIMEOUT_S):
                pass
        elif client_streaming:
            channel.stream_unary(method, *ident)(iter([b""]), metadata=metadata, timeout=CALL_TIMEOUT_S)
        else:
            channel.unary_unary(method, *ident)(b"", metadata=metadata, timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_every_method_refuses_a_missing_wrong_or_malformed_token(server: GatewayServer) -> None:
    """The methods come from the server's own descriptors, so an RPC added later without the check fails here."""
    with open_channel(server.address, server.token) as authed:
        methods = _methods(authed)
    names = {m[0] for m in methods}
    assert "/supervisor.v1.SessionService/Exec" in names
    assert "/supervisor.v1.EventStreamService/StreamEventBatches" in names
    assert "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo" in names
    assert len([n for n in names if n.startswith("/supervisor.v1.SessionService/")]) == len(
        session_pb2.DESCRIPTOR.services_by_name["SessionService"].methods)
    wrong = "x" * len(server.token)
    bad_headers: dict[str, tuple[tuple[str, str], ...]] = {
        "none": (),
        "wrong token": (("authorization", f"Bearer {wrong}"),),
        "token of another server": (("authorization", "Bearer k9HvOPHw8YTC_9Nf9Ds0e6MfkkMEbGwjZTOqbE13I3k"),),
        "no scheme": (("authorization", server.token),),
        "basic scheme": (("authorization", f"Basic {server.token}"),),
        "empty bearer": (("authorization", "Bearer "),),
        "two words": (("authorization", f"Bearer {server.token} extra"),),
        "prefix of the token": (("authorization", f"Bearer {server.token[:-1]}"),),
        "two values": (("authorization", f"Bearer {server.token}"), ("authorization", f"Bearer {wrong}")),
    }
    results: dict[tuple[str, str], grpc.StatusCode] = {}
    with grpc.insecure_channel(server.address) as bare:
        for method, cs, ss in methods:
            if method.startswith("/grpc.health.v1.Health/"):
                continue
            for label, metadata in bad_headers.items():
                results[(method, label)] = _call(bare, method, cs, ss, metadata)
        refused = [k for k, code in results.items() if code is grpc.StatusCode.UNAUTHENTICATED]
        assert len(refused) == len(results), {k: c for k, c in results.items() if k not in refused}
        assert len(results) >= 25 * len(bad_headers)
        # health stays open (a load balancer has no token); the same token on the same call works
        health = health_pb2_grpc.HealthStub(bare).Check(health_pb2.HealthCheckRequest(), timeout=CALL_TIMEOUT_S)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        ok = session_pb2_grpc.SessionServiceStub(bare).ListSessions(
            session_pb2.ListSessionsRequest(), metadata=(("authorization", f"Bearer {server.token}"),),
            timeout=CALL_TIMEOUT_S)
        assert list(ok.sessions) == []


def test_refusal_names_what_is_wrong(server: GatewayServer) -> None:
    stub_of = session_pb2_grpc.SessionServiceStub
    with grpc.insecure_channel(server.address) as bare:
        for metadata, text in [((), "missing credentials"),
                               ((("authorization", "Basic abc"),), "malformed authorization"),
                               ((("authorization", "Bearer " + "y" * 43),), "invalid token")]:
            with pytest.raises(grpc.RpcError) as info:
                stub_of(bare).GetSession(session_pb2.GetSessionRequest(session_id="x"), metadata=metadata,
                                         timeout=CALL_TIMEOUT_S)
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
            assert text in (info.value.details() or "")


def test_serve_listens_on_a_private_socket_and_writes_a_private_serve_json(tmp_path: Path) -> None:
    home = tmp_path / "h"
    with ServeProcess(home, args=()) as server, server.channel() as channel:
        run = home / "run"
        info = read_serve_info(home)
        assert info.address == server.address and info.address.startswith("unix:")
        assert len(info.token) >= 43 and info.pid == server.pid
        sock = Path(info.address.removeprefix("unix:"))
        assert stat.S_ISSOCK(sock.stat().st_mode)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE((run / "serve.json").stat().st_mode) == 0o600
        assert stat.S_IMODE(run.stat().st_mode) == 0o700
        stub = server.stub(channel)
        assert list(stub.ListSessions(session_pb2.ListSessionsRequest(), timeout=CALL_TIMEOUT_S).sessions) == []
        with server.unauthenticated_channel() as bare, pytest.raises(grpc.RpcError) as refused:
            server.stub(bare).ListSessions(session_pb2.ListSessionsRequest(), timeout=CALL_TIMEOUT_S)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert server.stop() == 0
    assert not (run / "serve.json").exists() and not sock.exists()


def test_a_new_token_each_start(tmp_path: Path) -> None:
    home = tmp_path / "h"
    with ServeProcess(home) as first:
        token = first.token
        first.stop()
    with ServeProcess(home) as second:
        assert second.token != token
        with open_channel(second.address, token) as stale, pytest.raises(grpc.RpcError) as refused:
            second.stub(stale).ListSessions(session_pb2.ListSessionsRequest(), timeout=CALL_TIMEOUT_S)
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0"])
def test_a_non_loopback_listener_without_tls_refuses_to_start(tmp_path: Path, listen: str) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--home", str(tmp_path / "h"), "serve",
                           "--listen", listen], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "TLS" in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "h" / "run" / "serve.json").exists()


_NOBODY_PROBE = r"""
import socket, sys
results = []
try:
    open(sys.argv[1]).read()
    results.append("read-token:ok")
except PermissionError:
    results.append("read-token:denied")
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[2])
    results.append("connect:ok")
except PermissionError:
    results.append("connect:denied")
finally:
    s.close()
try:
    results.append("control:" + open(sys.argv[3]).read().strip())
except OSError as exc:
    results.append(f"control:{exc}")
print(" ".join(results))
"""


def test_another_local_user_can_neither_read_the_token_nor_connect() -> None:
    """As uid 65534 (``setpriv``), with the home itself open to others: only ``run/`` keeps it out."""
    setpriv = shutil.which("setpriv")
    python = shutil.which("python3", path="/usr/bin:/bin")
    if setpriv is None or python is None:
        pytest.fail("setpriv and /usr/bin/python3 are required (util-linux, python3)")
    home = Path(tempfile.mkdtemp(prefix="sec-home-", dir="/tmp"))
    try:
        home.chmod(0o755)  # open: what keeps nobody out must be run/'s own modes
        (home / "control.txt").write_text("readable\n")
        (home / "control.txt").chmod(0o644)
        with ServeProcess(home, args=()) as server:
            sock = server.address.removeprefix("unix:")
            assert sock.startswith(str(home))
            probe = subprocess.run(
                [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", python, "-I", "-c",
                 _NOBODY_PROBE, str(home / "run" / "serve.json"), sock, str(home / "control.txt")],
                capture_output=True, text=True, timeout=30, check=False, cwd="/")
            assert probe.returncode == 0, probe.stderr
            assert probe.stdout.split() == ["read-token:denied", "connect:denied", "control:readable"]
            with server.channel() as channel:  # the owner still gets in
                server.stub(channel).ListSessions(session_pb2.ListSessionsRequest(), timeout=CALL_TIMEOUT_S)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_the_sessions_cli_goes_through_the_running_server_with_its_token(tmp_path: Path) -> None:
    home = tmp_path / "h"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--home", str(home), "sessions", *args],
                              capture_output=True, text=True, timeout=60, check=False)

    with ServeProcess(home, args=()) as server, server.channel() as channel:
        sid = server.stub(channel).StartSession(session_pb2.StartSessionRequest(cwd=str(tmp_path)),
                                                timeout=CALL_TIMEOUT_S).session_id
        listed = cli("list")
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.startswith(f"{sid}  running ") and f"cwd={tmp_path}" in listed.stdout
        shown = cli("show", sid)
        assert shown.returncode == 0 and shown.stdout.startswith(f"    0 session {sid} configured"), shown
        assert cli("show", "f" * 32).returncode == 1
        # proof that it asked the server: with a wrong token in serve.json it is refused
        good = read_serve_info(home)
        write_serve_info(home, ServeInfo(good.address, "w" * 43, pid=good.pid))
        refused = cli("list")
        assert refused.returncode == 1 and "UNAUTHENTICATED" in refused.stderr, refused
        write_serve_info(home, good)
        assert server.stop() == 0
    offline = cli("list")  # no server: straight from the log
    assert offline.returncode == 0 and offline.stdout.startswith(f"{sid}  stopped "), offline


def test_a_second_server_on_the_same_home_refuses_to_take_the_socket(tmp_path: Path) -> None:
    home = tmp_path / "h"
    with ServeProcess(home, args=()) as first:
        second = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--home", str(home), "serve"],
                                capture_output=True, text=True, timeout=60, check=False)
        assert second.returncode == 2 and "already runs" in second.stderr, second
        with first.channel() as channel:  # the first still serves, its serve.json untouched
            first.stub(channel).ListSessions(session_pb2.ListSessionsRequest(), timeout=CALL_TIMEOUT_S)
        assert read_serve_info(home).token == first.token
