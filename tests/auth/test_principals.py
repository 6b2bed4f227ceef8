"""Principals own their sessions: alice's session does not exist for bob, on every session-scoped method and in
ListSessions; the owner token sees all; a subagent is its root's; tokens expire and are revoked."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf.message_factory import GetMessageClass

from actors.auth import TokenStore, open_channel
from actors.gateway import GatewayServer, serve
from actors.runtime import RuntimeOptions, SessionRuntime
from actors.turn import builtin_runner
from protos.supervisor.v1 import agents_pb2, session_pb2, session_pb2_grpc, shell_pb2, stream_pb2
from tests.helpers.serve import ROOT, ServeProcess

WAIT_S = 20.0


@dataclass
class Stack:
    runtime: SessionRuntime
    server: GatewayServer
    alice: str
    bob: str
    cwd: Path


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    home = tmp_path / "home"
    store = TokenStore(home)
    alice, bob = store.create("alice"), store.create("bob")
    runtime = SessionRuntime(RuntimeOptions(task_runner=builtin_runner, home=home, managed_dir=tmp_path / "etc"))
    server = serve(runtime)
    try:
        yield Stack(runtime, server, alice, bob, tmp_path)
    finally:
        server.stop()
        runtime.shutdown()


def _stub(channel: grpc.Channel) -> session_pb2_grpc.SessionServiceStub:
    return session_pb2_grpc.SessionServiceStub(channel)


def _start(stub: session_pb2_grpc.SessionServiceStub, cwd: Path) -> str:
    return stub.StartSession(session_pb2.StartSessionRequest(cwd=str(cwd), config_overrides=[
        'shell.program="/bin/bash"', "network.enabled=false"]), timeout=WAIT_S).session_id


def _scoped_methods() -> list[tuple[str, str, type, bool]]:
    """Every method whose request names a session: (path, name, request class, server streaming)."""
    found = []
    for module, service in ((session_pb2, "SessionService"), (stream_pb2, "EventStreamService")):
        desc = module.DESCRIPTOR.services_by_name[service]
        for m in desc.methods:
            if "session_id" in m.input_type.fields_by_name:
                found.append((f"/{desc.full_name}/{m.name}", m.name, GetMessageClass(m.input_type),
                              m.server_streaming))
    return found


def _code(channel: grpc.Channel, path: str, request: bytes, streaming: bool) -> grpc.StatusCode:
    ident = (lambda b: b), (lambda b: b)
    try:
        if streaming:
            for _ in channel.unary_stream(path, *ident)(request, timeout=WAIT_S):
                break
        else:
            channel.unary_unary(path, *ident)(request, timeout=WAIT_S)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def _requests(name: str, cls: type, sid: str) -> list[bytes]:
    """The request(s) bob tries on alice's session ``sid``: StartSession as resume and as fork."""
    if name == "StartSession":
        return [cls(session_id=sid, mode=m).SerializeToString()  # type: ignore[call-arg]
                for m in (session_pb2.START_MODE_RESUME, session_pb2.START_MODE_FORK)]
    if name == "Exec":
        return [cls(session_id=sid, command="echo owned > owned.txt").SerializeToString()]  # type: ignore[call-arg]
    if name == "Submit":
        return [cls(session_id=sid, input="echo hi").SerializeToString()]  # type: ignore[call-arg]
    return [cls(session_id=sid).SerializeToString()]


def test_bob_cannot_touch_alices_session_on_any_method(stack: Stack) -> None:
    with open_channel(stack.server.address, stack.alice) as a_ch, \
            open_channel(stack.server.address, stack.bob) as b_ch, \
            open_channel(stack.server.address, stack.server.token) as admin_ch:
        sid = _start(_stub(a_ch), stack.cwd)
        child = _stub(a_ch).SpawnAgent(agents_pb2.SpawnAgentRequest(session_id=sid, message="hello child"),
                                       timeout=WAIT_S).agent_id
        before = _stub(a_ch).GetSession(session_pb2.GetSessionRequest(session_id=sid), timeout=WAIT_S).session
        methods = _scoped_methods()
        assert len(methods) >= 23
        results = {}
        for target in (sid, child):
            for path, name, cls, streaming in methods:
                for i, raw in enumerate(_requests(name, cls, target)):
                    results[(target, name, i)] = _code(b_ch, path, raw, streaming)
        refused = {k for k, c in results.items() if c is grpc.StatusCode.NOT_FOUND}
        assert refused == set(results), {k: c for k, c in results.items() if k not in refused}
        # nothing of bob's reached the session: still running, no task, exec, settings or stop of the root's
        after = _stub(a_ch).GetSession(session_pb2.GetSessionRequest(session_id=sid), timeout=WAIT_S).session
        assert after.status == session_pb2.SESSION_STATUS_RUNNING
        root_kinds = [e.WhichOneof("msg") for e in stack.runtime.log.read(sid, before.last_seq + 1, limit=10_000)
                      if not e.agent_path.startswith("/root/")]
        assert not set(root_kinds) & {"task_queued", "turn_started", "exec_begin", "settings_updated",
                                      "session_stopped", "turn_aborted"}, root_kinds
        assert not (stack.cwd / "owned.txt").exists()
        agents = _stub(a_ch).ListAgents(agents_pb2.ListAgentsRequest(session_id=sid), timeout=WAIT_S).agents
        assert [a.agent_id for a in agents] == [child]  # bob's SpawnAgent spawned nothing
        # the refusal reads like an unknown id: bob cannot tell the session exists
        texts = []
        for target in (sid, "f" * 32):
            with pytest.raises(grpc.RpcError) as refused:
                _stub(b_ch).GetSession(session_pb2.GetSessionRequest(session_id=target), timeout=WAIT_S)
            assert refused.value.code() is grpc.StatusCode.NOT_FOUND
            texts.append(refused.value.details())
        assert texts == [f"no session {sid!r}", f"no session {'f' * 32!r}"]
        # ListSessions: bob sees none of alice's; alice sees hers (the subagent too); the owner sees all
        bob_sid = _start(_stub(b_ch), stack.cwd)
        listed = {n: {s.session_id for s in _stub(ch).ListSessions(
            session_pb2.ListSessionsRequest(include_stopped=True), timeout=WAIT_S).sessions}
            for n, ch in (("alice", a_ch), ("bob", b_ch), ("admin", admin_ch))}
        assert listed["bob"] == {bob_sid}
        assert listed["alice"] == {sid, child}
        assert listed["admin"] == {sid, child, bob_sid}
        # alice's own calls work, on her session and on her subagent
        assert _stub(a_ch).GetSession(session_pb2.GetSessionRequest(session_id=child), timeout=WAIT_S).session
        done = _stub(a_ch).Exec(shell_pb2.ExecRequest(session_id=sid, command="echo mine"), timeout=WAIT_S)
        assert done.exit_code == 0
        # the owner token is the administrator: it drives alice's session
        _stub(admin_ch).StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
        _stub(b_ch).StopSession(session_pb2.StopSessionRequest(session_id=bob_sid), timeout=WAIT_S)


def test_pages_of_a_principal_hold_only_its_sessions(stack: Stack) -> None:
    with open_channel(stack.server.address, stack.alice) as a_ch, \
            open_channel(stack.server.address, stack.bob) as b_ch:
        mine = []
        for i in range(6):
            mine.append(_start(_stub(a_ch), stack.cwd))
            _start(_stub(b_ch), stack.cwd)
            if i % 2:
                _start(_stub(b_ch), stack.cwd)
        seen: list[str] = []
        token = ""
        while True:
            page = _stub(a_ch).ListSessions(session_pb2.ListSessionsRequest(page_size=4, page_token=token),
                                            timeout=WAIT_S)
            seen += [s.session_id for s in page.sessions]
            token = page.next_page_token
            if not token:
                break
        assert sorted(seen) == sorted(mine) and len(seen) == len(set(seen))
        for sid in stack.runtime.live_ids():
            stack.runtime.stop_session(sid)


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "supervisor.py"), "--home", str(home), "token", *args],
                          capture_output=True, text=True, timeout=60, check=False)


def test_token_cli_create_expire_and_revoke_against_a_running_server(tmp_path: Path) -> None:
    home = tmp_path / "h"
    with ServeProcess(home, args=()) as server:
        made = _cli(home, "create", "--principal", "carol")
        assert made.returncode == 0, made.stderr
        carol = made.stdout.strip()
        short = _cli(home, "create", "--principal", "dave", "--ttl", "1").stdout.strip()
        assert len(carol) >= 43 and carol != short
        stored = (home / "auth" / "tokens.json").read_text()
        assert carol not in stored and "carol" in stored  # digests only
        assert (home / "auth" / "tokens.json").stat().st_mode & 0o077 == 0

        def list_as(token: str) -> grpc.StatusCode:
            with open_channel(server.address, token) as ch:
                try:
                    _stub(ch).ListSessions(session_pb2.ListSessionsRequest(), timeout=WAIT_S)
                except grpc.RpcError as exc:
                    return exc.code()  # type: ignore[no-any-return]
            return grpc.StatusCode.OK

        assert list_as(carol) is grpc.StatusCode.OK  # created while the server runs: valid at once
        assert list_as(short) is grpc.StatusCode.OK
        deadline = time.monotonic() + 10
        while list_as(short) is grpc.StatusCode.OK and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list_as(short) is grpc.StatusCode.UNAUTHENTICATED
        revoked = _cli(home, "revoke", carol)
        assert revoked.returncode == 0, revoked.stderr
        assert list_as(carol) is grpc.StatusCode.UNAUTHENTICATED
        assert _cli(home, "revoke", carol).returncode == 1  # nothing left to revoke
        assert _cli(home, "create", "--principal", "owner").returncode == 2  # the administrator's name
        assert _cli(home, "create", "--principal", "a b").returncode == 2
