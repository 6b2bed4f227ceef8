"""``kill -9`` of an MCP server again and again while clients call its tools through ``serve``: no call hangs,
no call is answered INTERNAL or UNKNOWN (a server down is UNAVAILABLE with a retry hint), no zombie is left, and
the server answers again after the storm."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import grpc

from protos.supervisor.v1 import mcp_pb2, session_pb2
from tests.helpers.chaos import report, rng, scale
from tests.helpers.processes import cmdline, descendants, wait_for
from tests.helpers.serve import ServeProcess
from tests.mcp_servers.fixtures import TOOLBOX

WAIT_S = 30.0
KILLS = scale(2, 20)
CALLERS = scale(2, 6)
#: A call that takes longer than this hung (the tool timeout below, plus a margin).
TOOL_TIMEOUT_S = 5
HUNG_S = TOOL_TIMEOUT_S + 5
#: Time between kills (uniformly drawn), after the restarted server is back.
KILL_GAP_S = (0.0, 0.3)


def _servers(server: ServeProcess) -> set[int]:
    return {pid for pid in descendants(server.pid) if TOOLBOX in cmdline(pid)}


def _zombies(server: ServeProcess) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] == "Z" and int(fields[1]) == server.pid:
            out.append(int(entry))
    return out


def _call_until_answered(stub: object, call: mcp_pb2.McpToolCallRequest) -> mcp_pb2.McpToolCallResult:
    """Call, honouring UNAVAILABLE's ``retry-after-ms`` (what a well-behaved client does), within a bound."""
    deadline = time.monotonic() + WAIT_S * 2
    while True:
        try:
            return stub.McpToolCall(call, timeout=WAIT_S)  # type: ignore[attr-defined, no-any-return]
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:  # type: ignore[attr-defined]
                raise
            hint = dict(exc.trailing_metadata() or ()).get("retry-after-ms", "100")  # type: ignore[attr-defined]
            time.sleep(int(hint) / 1000)  # the server's own retry hint


def test_mcp_servers_killed_under_load_leave_no_hung_call_no_zombie_no_internal(tmp_path: Path) -> None:
    random, seed = rng("mcp_storm")
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[mcp_servers.toolbox]\ncommand = "{sys.executable}"\nargs = ["{TOOLBOX}"]\n'
        f"tool_timeout_sec = {TOOL_TIMEOUT_S}\n"
    )
    codes: Counter[str] = Counter()
    retry_hints: list[int] = []
    durations: list[float] = []
    done = threading.Event()
    with ServeProcess(home) as server, server.channel() as channel:
        stub = server.stub(channel)
        sid = stub.StartSession(session_pb2.StartSessionRequest(cwd=str(tmp_path)), timeout=WAIT_S).session_id
        call = mcp_pb2.McpToolCallRequest(session_id=sid, tool="mcp__toolbox__add", arguments_json='{"a": 1, "b": 2}')
        assert _call_until_answered(stub, call).text == "3"  # started (a kill during its start is a
        # start failure, reported once, not a crash to restart)

        def caller() -> None:
            while not done.is_set():
                began = time.monotonic()
                try:
                    stub.McpToolCall(call, timeout=HUNG_S)
                    codes["OK"] += 1
                except grpc.RpcError as exc:
                    code = exc.code()  # type: ignore[attr-defined]
                    tool_timeout = code == grpc.StatusCode.DEADLINE_EXCEEDED and "tool_timeout_sec" in (
                        exc.details() or "")  # type: ignore[attr-defined]
                    codes["TOOL_TIMEOUT" if tool_timeout else code.name] += 1
                    hint = dict(exc.trailing_metadata() or ()).get("retry-after-ms")  # type: ignore[attr-defined]
                    if code == grpc.StatusCode.UNAVAILABLE and hint is not None:
                        retry_hints.append(int(hint))
                        durations.append(time.monotonic() - began)
                        time.sleep(min(int(hint), 1000) / 1000)  # a client that honours the hint
                        continue
                durations.append(time.monotonic() - began)

        callers = [threading.Thread(target=caller) for _ in range(CALLERS)]
        for thread in callers:
            thread.start()
        killed: set[int] = set()
        try:
            for round_ in range(KILLS):
                # Even rounds kill a server that serves (calls in flight); odd ones the next process as soon as
                # it exists, mid-start-up (a failed restart, so the backoff grows).
                if round_ % 2 == 0:
                    _call_until_answered(stub, call)
                wait_for(lambda: _servers(server) - killed, WAIT_S, "a restarted MCP server")
                time.sleep(random.uniform(*KILL_GAP_S))  # the random point of the kill
                for pid in _servers(server) - killed:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
            wait_for(lambda: _servers(server) - killed, WAIT_S, "the MCP server after the storm")
        finally:
            done.set()
            for thread in callers:
                thread.join(HUNG_S * 2)
        hung_threads = sum(thread.is_alive() for thread in callers)
        after = _call_until_answered(stub, call)
        wait_for(lambda: not _zombies(server), WAIT_S, "no zombie child of the server")
        zombies = len(_zombies(server))
        stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=WAIT_S)
        assert server.stop() == 0
    hung = sum(1 for d in durations if d >= HUNG_S) + hung_threads + codes["DEADLINE_EXCEEDED"]
    report("mcp_storm", seed, kills=len(killed), calls=sum(codes.values()), codes=dict(codes), hung=hung,
           zombies=zombies, internal=codes["INTERNAL"], unknown=codes["UNKNOWN"],
           retry_hint_ms=sorted(set(retry_hints))[:5])
    assert after.text == "3"
    assert len(killed) >= KILLS
    assert hung == 0 and zombies == 0
    assert codes["INTERNAL"] == 0 and codes["UNKNOWN"] == 0, codes
    # TOOL_TIMEOUT: the server's answer when a restart took longer than tool_timeout_sec (a bound, not a hang)
    assert set(codes) <= {"OK", "UNAVAILABLE", "TOOL_TIMEOUT"}, codes
    assert codes["OK"] > 0
