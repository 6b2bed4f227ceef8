"""TLS and mTLS with grpcio's own TLS and ``trustme`` certificates: a non-loopback listener serves with TLS and
the token; a client without the CA, or with another CA's certificate under mTLS, fails the handshake; a client
certificate names its principal."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import trustme

from actors.auth import TlsConfig, open_channel, read_serve_info
from actors.gateway import GatewayServer, serve
from actors.runtime import RuntimeOptions, SessionRuntime
from actors.turn import builtin_runner
from protos.supervisor.v1 import session_pb2, session_pb2_grpc
from tests.helpers.serve import ROOT, START_BOUND_S

CALL_S = 10.0


@dataclass
class Pki:
    ca: trustme.CA
    server_cert: Path
    server_key: Path
    ca_file: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    cert, key, ca_file = tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem"
    cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
    key.write_bytes(leaf.private_key_pem.bytes())
    ca.cert_pem.write_to_path(str(ca_file))
    return Pki(ca, cert, key, ca_file)


def _list(channel: grpc.Channel) -> grpc.StatusCode:
    try:
        session_pb2_grpc.SessionServiceStub(channel).ListSessions(session_pb2.ListSessionsRequest(), timeout=CALL_S)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _client_cert(ca: trustme.CA, name: str) -> tuple[bytes, bytes]:
    leaf = ca.issue_cert(f"{name}.example", common_name=name)
    return leaf.private_key_pem.bytes(), b"".join(p.bytes() for p in leaf.cert_chain_pems)


def test_a_non_loopback_listener_serves_with_tls_and_the_token(tmp_path: Path, pki: Pki) -> None:
    home = tmp_path / "h"
    proc = subprocess.Popen([sys.executable, str(ROOT / "supervisor.py"), "--home", str(home), "serve",
                             "--listen", "0.0.0.0:0", "--tls-cert", str(pki.server_cert), "--tls-key",
                             str(pki.server_key)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("serving supervisor.v1.SessionService on 0.0.0.0:"), line
        info = read_serve_info(home)
        assert info.tls
        target = f"127.0.0.1:{line.rsplit(':', 1)[1].strip()}"
        ca = pki.ca_file.read_bytes()
        with open_channel(target, info.token, root_certificates=ca) as ch:
            assert _list(ch) is grpc.StatusCode.OK
        with open_channel(target, None, root_certificates=ca) as ch:
            assert _list(ch) is grpc.StatusCode.UNAUTHENTICATED
        with open_channel(target, info.token, root_certificates=trustme.CA().cert_pem.bytes()) as ch:
            assert _list(ch) is grpc.StatusCode.UNAVAILABLE  # the server's certificate is not from this CA
        with grpc.insecure_channel(target) as ch:
            assert _list(ch) is grpc.StatusCode.UNAVAILABLE  # plaintext to a TLS port
    finally:
        proc.terminate()
        assert proc.wait(START_BOUND_S) == 0
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_tls_flags_are_checked_before_serving(tmp_path: Path, pki: Pki) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--home", str(tmp_path / "h"), "serve",
                               *args], capture_output=True, text=True, timeout=60, check=False)

    for args, text in [(("--listen", "0.0.0.0:0", "--tls-cert", str(pki.server_cert)), "--tls-key"),
                       (("--listen", "0.0.0.0:0", "--tls-cert", str(pki.ca_file.with_name("nope.pem")),
                         "--tls-key", str(pki.server_key)), "nope.pem"),
                       (("--listen", "0.0.0.0:0", "--tls-cert", str(pki.server_key), "--tls-key",
                         str(pki.server_key)), "not a PEM"),
                       (("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)), "TCP")]:
        proc = run(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert text in proc.stderr and "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1


@pytest.fixture
def mtls(tmp_path: Path, pki: Pki) -> Iterator[tuple[GatewayServer, Pki]]:
    runtime = SessionRuntime(RuntimeOptions(task_runner=builtin_runner, home=tmp_path / "home",
                                            managed_dir=tmp_path / "etc"))
    server = serve(runtime, "127.0.0.1:0", tls=TlsConfig.load(pki.server_cert, pki.server_key, pki.ca_file))
    try:
        yield server, pki
    finally:
        server.stop()
        runtime.shutdown()


def test_mtls_refuses_a_client_without_a_certificate_or_with_another_cas(
        mtls: tuple[GatewayServer, Pki], tmp_path: Path) -> None:
    server, pki = mtls
    ca = pki.ca_file.read_bytes()
    key, chain = _client_cert(pki.ca, "alice")
    other_key, other_chain = _client_cert(trustme.CA(), "alice")
    # no client certificate: the handshake fails, even with the owner token
    with open_channel(server.address, server.token, root_certificates=ca) as ch:
        assert _list(ch) is grpc.StatusCode.UNAVAILABLE
    # a certificate from another CA
    with open_channel(server.address, None, root_certificates=ca, private_key=other_key,
                      certificate_chain=other_chain) as ch:
        assert _list(ch) is grpc.StatusCode.UNAVAILABLE
    # without the server's CA
    with open_channel(server.address, None, root_certificates=trustme.CA().cert_pem.bytes(), private_key=key,
                      certificate_chain=chain) as ch:
        assert _list(ch) is grpc.StatusCode.UNAVAILABLE
    # the CA's certificate: in, as principal "alice" (its subject), who owns what she starts
    with open_channel(server.address, None, root_certificates=ca, private_key=key, certificate_chain=chain) as a_ch:
        stub = session_pb2_grpc.SessionServiceStub(a_ch)
        sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp_path)), timeout=CALL_S).session_id
        assert [s.session_id for s in stub.ListSessions(session_pb2.ListSessionsRequest(), timeout=CALL_S).sessions
                ] == [sid]
        bob_key, bob_chain = _client_cert(pki.ca, "bob")
        with open_channel(server.address, None, root_certificates=ca, private_key=bob_key,
                          certificate_chain=bob_chain) as b_ch:
            bob = session_pb2_grpc.SessionServiceStub(b_ch)
            assert list(bob.ListSessions(session_pb2.ListSessionsRequest(), timeout=CALL_S).sessions) == []
            with pytest.raises(grpc.RpcError) as refused:
                bob.GetSession(session_pb2.GetSessionRequest(session_id=sid), timeout=CALL_S)
            assert refused.value.code() is grpc.StatusCode.NOT_FOUND
        # the owner token with a valid certificate is the administrator
        with open_channel(server.address, server.token, root_certificates=ca, private_key=bob_key,
                          certificate_chain=bob_chain) as admin:
            session_pb2_grpc.SessionServiceStub(admin).StopSession(session_pb2.StopSessionRequest(session_id=sid),
                                                                    timeout=CALL_S)
