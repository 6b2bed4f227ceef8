"""Benchmark: ours (cold `run`, warm `serve`) beside the real Codex CLI, four scenarios, one fake model.

Run: ``.venv/bin/python bench/bench_codex.py`` (+ ``CODEX_BIN=/path/to/codex`` to include Codex; about 1-2
minutes). Everything runs inside a loopback-only network namespace (``unshare -n``, only ``lo`` up): the script
re-executes itself there, so Codex (which probes the network on its own) never sees another interface.

Scenarios, each against the same fake OpenAI Responses server (``tests/helpers/fake_openai_server.py`` with a
responder that plays the model from what each request holds):
- ``simple``: one turn, the model answers text;
- ``mcp``: 3 stdio MCP servers that take ``MCP_INIT_S`` to initialise (``required``), then one turn;
- ``shell``: the model calls the shell once (``echo hi``), then answers;
- ``spawn``: the model spawns 4 subagents in one response, waits for them, then answers.

Sides: Codex (``codex exec --json``), ours cold (``supervisor.py run --json``, process start to exit, the
``openai`` provider) and ours warm (a running ``supervisor.py serve``: StartSession -> TurnCompleted over gRPC).
Rounds interleave the sides (``ROUNDS``, 7, or ``BENCH_ROUNDS``; median reported). The checkout's modules are
compiled to bytecode first (``compile_bytecode``: ``compileall`` and ``python -m actors._gencache`` for the code
dataclasses generate), as an installed application's are after its first run. Checks: the shell's output carries
``hi`` (in the JSONL item for Codex and ours cold, in the tool output the model got back for every side), four
subagents ran, and the MCP servers' tools are offered in the first model request. Prints a table, the ratios, and
one JSON line.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers.fake_openai_server import FakeOpenAIServer, RecordedRequest, Reply, ScriptedCall

#: Interleaved rounds (median reported); this 2-core host's noise swings one run by +-30%.
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
SCENARIOS = ("simple", "mcp", "shell", "spawn")
#: How long each bench MCP server sleeps before it reads its first message.
MCP_INIT_S = 1.0
MCP_SERVERS = 3
SUBAGENTS = 4
#: The model Codex is told to use (its catalog must know it; see ``codex_home``).
MODEL = "gpt-5.5"
#: Bound on one run of one side.
RUN_TIMEOUT_S = 120.0
#: Bound on `serve` printing its address.
SERVE_START_TIMEOUT_S = 60.0
#: Most wait calls the fake model makes before it answers anyway (Codex's wait may return on the first).
MAX_WAITS = 8
NETNS_MARK = "BENCH_CODEX_IN_NETNS"
#: Homes and work dirs live here, not under /tmp: Codex refuses to create its sandbox helper aliases there.
BENCH_TMP = ROOT / ".bench-tmp"
#: DNS wire constants for ``serve_nxdomain``.
DNS_MAX_BYTES = 4096
DNS_HEADER_BYTES = 12
DNS_RESPONSE = 0x8000
DNS_RD = 0x01
DNS_RA = 0x0080
DNS_NXDOMAIN = 3

MCP_SERVER_SOURCE = r'''
import json, sys, time
time.sleep(float(sys.argv[1]))  # the "slow init" every scenario server has
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    method = msg.get("method")
    if method == "initialize":
        result = {"protocolVersion": msg.get("params", {}).get("protocolVersion", "2025-06-18"),
                  "capabilities": {"tools": {}}, "serverInfo": {"name": sys.argv[2], "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{"name": "lookup_" + sys.argv[2], "description": "look a word up",
                             "inputSchema": {"type": "object", "properties": {"word": {"type": "string"}}}}]}
    elif method == "tools/call":
        result = {"content": [{"type": "text", "text": "found"}], "isError": False}
    elif method == "ping":
        result = {}
    else:
        print(json.dumps({"jsonrpc": "2.0", "id": msg["id"],
                          "error": {"code": -32601, "message": "no such method"}}), flush=True)
        continue
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
'''


# --- the fake model -----------------------------------------------------------------------------------------


def _offered(body: dict[str, Any]) -> dict[str, str]:
    """Tool name -> namespace ("" for a plain function tool) of the tools a request offers."""
    names: dict[str, str] = {}
    for tool in body.get("tools") or []:
        if tool.get("type") == "namespace":
            for inner in tool.get("tools") or []:
                names[inner.get("name", "")] = tool.get("name", "")
        elif tool.get("name"):
            names[tool["name"]] = ""
    return names


def _outputs(body: dict[str, Any]) -> list[str]:
    """The tool outputs fed back so far, in order."""
    out = []
    for item in body.get("input") or []:
        if isinstance(item, dict) and item.get("type") == "function_call_output":
            output = item.get("output")
            out.append(output if isinstance(output, str) else json.dumps(output))
    return out


@dataclass
class RunRecord:
    """What the fake model saw of one run."""

    first_tools: list[str] = field(default_factory=list)
    requests: int = 0
    children: set[str] = field(default_factory=set)
    tool_outputs: list[str] = field(default_factory=list)


class Model:
    """Plays the model for every run: which run and role a request belongs to is read from its text."""

    def __init__(self) -> None:
        self.runs: dict[str, RunRecord] = {}
        self._lock = threading.Lock()
        self._calls = 0

    def _call_id(self) -> str:
        with self._lock:
            self._calls += 1
            return f"call_bench_{self._calls}"

    def __call__(self, request: RecordedRequest) -> Reply | None:
        body = request.body
        text = json.dumps(body)
        root = re.search(r"ROOT-TASK (RUN\d+) (\w+)", text)
        child = re.search(r"CHILD-TASK (RUN\d+) (\d+)", text)
        if root is None and child is None:
            return Reply(text_deltas=("ok",))  # a request of no run (a title, a warm-up): answer something
        run_id = (root or child).group(1)  # type: ignore[union-attr]
        with self._lock:
            record = self.runs.setdefault(run_id, RunRecord())
            record.requests += 1
            if root is None and child is not None:
                record.children.add(child.group(2))
            elif not record.first_tools:
                record.first_tools = sorted(_offered(body))
            outputs = _outputs(body)
            record.tool_outputs = outputs if root is not None else record.tool_outputs
        if root is None:
            return Reply(text_deltas=("child says hi",))
        return self._root(root.group(2), body, outputs)

    def _root(self, scenario: str, body: dict[str, Any], outputs: list[str]) -> Reply:
        offered = _offered(body)
        if scenario == "shell" and not outputs:
            if "exec_command" in offered:
                call = ScriptedCall("exec_command", {"cmd": "echo hi"}, call_id=self._call_id())
            else:
                call = ScriptedCall("shell", {"command": "echo hi"}, call_id=self._call_id())
            return Reply(calls=(call,))
        if scenario == "spawn":
            return self._spawn(body, offered, outputs)
        return Reply(text_deltas=("done",))

    def _spawn(self, body: dict[str, Any], offered: dict[str, str], outputs: list[str]) -> Reply:
        ns = offered.get("spawn_agent", "")
        if not outputs:
            message = "CHILD-TASK {} {}: say hi"
            run_id = re.search(r"ROOT-TASK (RUN\d+)", json.dumps(body))
            assert run_id is not None
            return Reply(calls=tuple(
                ScriptedCall("spawn_agent", {"message": message.format(run_id.group(1), k)}, call_id=self._call_id(),
                             namespace=ns)
                for k in range(SUBAGENTS)))
        ids = [m.group(1) for out in outputs[:SUBAGENTS]
               for m in [re.search(r'"(?:agent_id|agentId)"\s*:\s*"([^"]+)"', out)] if m]
        waits = outputs[SUBAGENTS:]
        done = {agent for agent in ids if any(agent in w and "completed" in w.lower() for w in waits)}
        pending = [agent for agent in ids if agent not in done]
        if pending and len(waits) < MAX_WAITS:
            if "wait_agent" in offered:
                call = ScriptedCall("wait_agent", {"targets": pending, "timeout_ms": 30000},
                                    call_id=self._call_id(), namespace=offered["wait_agent"])
            else:
                call = ScriptedCall("wait", {"agent_ids": pending, "all": True, "timeout_ms": 30000},
                                    call_id=self._call_id(), namespace=offered.get("wait", ""))
            return Reply(calls=(call,))
        return Reply(text_deltas=("all done",))


# --- the sides ------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    seconds: float
    ok: bool
    jsonl: list[dict[str, Any]]
    detail: str = ""


def _parse_jsonl(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            out.append(value)
    return out


def _timed(cmd: list[str], env: dict[str, str], cwd: Path) -> Outcome:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          check=False)
    seconds = time.perf_counter() - started
    return Outcome(seconds, done.returncode == 0, _parse_jsonl(done.stdout),
                   "" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr[-800:]}")


class Bench:
    """Homes, configs and the three sides for one run of the benchmark."""

    def __init__(self, tmp: Path, server: FakeOpenAIServer, codex_bin: str | None) -> None:
        self.tmp = tmp
        self.server = server
        self.codex_bin = codex_bin
        self.mcp_script = tmp / "bench_mcp_server.py"
        self.mcp_script.write_text(MCP_SERVER_SOURCE)
        self.workdir = tmp / "work"
        self.workdir.mkdir()
        self.home = tmp / "ours"
        self.home.mkdir()
        (self.home / "config.toml").write_text(
            f'model_provider = "openai"\nmodel = "{MODEL}"\napproval_policy = "never"\n'
            f'[model_providers.openai]\nbase_url = "{server.base_url}"\nmax_retries = 0\n')
        # a private empty HOME for every side: the login shells both run must not source this machine's dotfiles
        # (here ~/.profile runs `pyenv rehash`, which waits up to 60 s for a lock other shells hold)
        user_home = tmp / "home"
        user_home.mkdir()
        self.env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "X": "sk-bench", "NO_COLOR": "1",
                    "HOME": str(user_home)}
        self.env.pop("OPENAI_BASE_URL", None)
        self._runs = 0
        self.serve: subprocess.Popen[str] | None = None
        self.stub: Any = None
        self.channel: Any = None

    def run_id(self) -> str:
        self._runs += 1
        return f"RUN{self._runs}"

    def prompt(self, scenario: str, run_id: str) -> str:
        return f"ROOT-TASK {run_id} {scenario}"

    def mcp_overrides(self) -> list[str]:
        py = json.dumps(sys.executable)
        return [f"mcp_servers.bench{n}={{command={py}, args=[\"-I\", {json.dumps(str(self.mcp_script))}, "
                f"\"{MCP_INIT_S}\", \"bench{n}\"], required=true}}" for n in range(MCP_SERVERS)]

    def overrides(self, scenario: str) -> list[str]:
        return self.mcp_overrides() if scenario == "mcp" else []

    # ours, cold
    def cold(self, scenario: str) -> tuple[str, Outcome]:
        run_id = self.run_id()
        cmd = [sys.executable, str(ROOT / "supervisor.py"), "--home", str(self.home), "run", "--json",
               "--cwd", str(self.workdir)]
        for override in self.overrides(scenario):
            cmd += ["-c", override]
        return run_id, _timed([*cmd, self.prompt(scenario, run_id)], self.env, self.workdir)

    # ours, warm
    def start_serve(self) -> None:
        from actors.auth import connect
        from protos.supervisor.v1 import session_pb2_grpc

        self.serve = subprocess.Popen(
            [sys.executable, str(ROOT / "supervisor.py"), "--home", str(self.home), "serve", "--listen",
             "127.0.0.1:0"], env=self.env, cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)
        assert self.serve.stdout is not None
        line = _readline_within(self.serve.stdout, SERVE_START_TIMEOUT_S)
        if "serving" not in line:
            raise RuntimeError(f"serve did not print its address: {line!r}")
        self.channel = connect(self.home)  # address and owner token from <home>/run/serve.json
        self.stub = session_pb2_grpc.SessionServiceStub(self.channel)

    def warm(self, scenario: str) -> tuple[str, Outcome]:
        from protos.supervisor.v1 import session_pb2

        run_id = self.run_id()
        started = time.perf_counter()
        session = self.stub.StartSession(session_pb2.StartSessionRequest(
            cwd=str(self.workdir), config_overrides=self.overrides(scenario)), timeout=RUN_TIMEOUT_S)
        sid = session.session_id
        reply = self.stub.Submit(session_pb2.SubmitRequest(session_id=sid, input=self.prompt(scenario, run_id)))
        ok = False
        for event in self.stub.StreamEvents(session_pb2.StreamEventsRequest(
                session_id=sid, from_seq=session.configured_seq), timeout=RUN_TIMEOUT_S):
            kind = event.WhichOneof("msg")
            if event.task_id == reply.task_id and kind in ("turn_completed", "turn_aborted"):
                ok = kind == "turn_completed"
                break
        seconds = time.perf_counter() - started
        self.stub.StopSession(session_pb2.StopSessionRequest(session_id=sid), timeout=RUN_TIMEOUT_S)
        return run_id, Outcome(seconds, ok, [])

    # Codex
    def codex(self, scenario: str) -> tuple[str, Outcome]:
        assert self.codex_bin is not None
        run_id = self.run_id()
        home = self.codex_home(scenario)
        cmd = [self.codex_bin, "exec", "--json", "--skip-git-repo-check", "--sandbox", "workspace-write",
               "-C", str(self.workdir), self.prompt(scenario, run_id)]
        return run_id, _timed(cmd, {**self.env, "CODEX_HOME": str(home)}, self.workdir)

    def codex_home(self, scenario: str) -> Path:
        home = self.tmp / f"codex-{scenario}"
        if home.exists():
            return home
        home.mkdir()
        catalog = json.loads(subprocess.run(
            [str(self.codex_bin), "debug", "models"], env={**self.env, "CODEX_HOME": str(home)},
            capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=True).stdout)
        for model in catalog["models"]:
            if model.get("slug") == MODEL:
                model["supports_search_tool"] = False  # else the multi-agent tools hide behind tool_search
        (home / "catalog.json").write_text(json.dumps(catalog))
        lines = [f'model = "{MODEL}"', 'model_provider = "local"', 'model_catalog_json = "catalog.json"',
                 'approval_policy = "never"',
                 "[model_providers.local]", 'name = "local"', f'base_url = "{self.server.base_url}"',
                 'wire_api = "responses"', 'env_key = "X"']
        if scenario == "mcp":
            for n in range(MCP_SERVERS):
                lines += [f"[mcp_servers.bench{n}]", f"command = {json.dumps(sys.executable)}",
                          f'args = ["-I", {json.dumps(str(self.mcp_script))}, "{MCP_INIT_S}", "bench{n}"]',
                          "required = true"]
        (home / "config.toml").write_text("\n".join(lines) + "\n")
        return home

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.serve is not None:
            self.serve.terminate()
            try:
                self.serve.wait(RUN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.serve.kill()
                self.serve.wait()


def _readline_within(stream: Any, timeout: float) -> str:
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0] if box else ""


# --- checks ---------------------------------------------------------------------------------------------------


def check(scenario: str, side: str, outcome: Outcome, record: RunRecord | None) -> list[str]:
    """What is wrong with one run (empty when it did what the scenario asks)."""
    problems = [] if outcome.ok else [f"failed: {outcome.detail}"]
    if record is None:
        return [*problems, "the model never saw this run"]
    if scenario == "shell":
        if not any("hi" in out for out in record.tool_outputs):
            problems.append("the shell's output did not reach the model")
        if side != "warm":
            items = [e.get("item", {}) for e in outcome.jsonl if e.get("type") == "item.completed"]
            if not any(i.get("type") == "command_execution" and "hi" in (i.get("aggregated_output") or "")
                       for i in items):
                problems.append("no command_execution item carrying 'hi'")
    if scenario == "spawn" and len(record.children) != SUBAGENTS:
        problems.append(f"{len(record.children)} subagents asked the model, not {SUBAGENTS}")
    if scenario == "mcp":
        mcp_tools = [name for name in record.first_tools if "lookup_bench" in name]
        if len(mcp_tools) != MCP_SERVERS:
            problems.append(f"first request offered {len(mcp_tools)} MCP tools, not {MCP_SERVERS}")
    return problems


# --- main -----------------------------------------------------------------------------------------------------


def _in_netns() -> int:
    """Re-run this script in new network + mount namespaces (only loopback up, /etc/resolv.conf pointing at
    ``serve_nxdomain``); return its exit code."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        raise SystemExit("bench_codex needs unshare(1) and ip(8) for its loopback-only network namespace")
    BENCH_TMP.mkdir(exist_ok=True)
    resolv = BENCH_TMP / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\n")
    script = 'ip link set lo up && mount --bind "$BENCH_RESOLV" /etc/resolv.conf && exec "$0" "$@"'
    done = subprocess.run(["unshare", "-n", "-m", "sh", "-c", script, sys.executable, *sys.argv],
                          env={**os.environ, NETNS_MARK: "1", "BENCH_RESOLV": str(resolv)}, check=False)
    return done.returncode


def serve_nxdomain() -> None:
    """Answer every DNS query on 127.0.0.1:53 with NXDOMAIN, at once, in a daemon thread.

    Codex probes the network on its own (plugin sync, metrics export) and waits for it at exit; with no
    resolver each probe waits out a 5 s DNS timeout, which no real network makes it pay. A resolver that
    says "no such name" at once makes those probes fail as fast as they would finish on a real network.
    """
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 53))

    def answer() -> None:
        while True:
            query, peer = sock.recvfrom(DNS_MAX_BYTES)
            if len(query) < DNS_HEADER_BYTES:
                continue
            flags = DNS_RESPONSE | (query[2] & DNS_RD) << 8 | DNS_RA | DNS_NXDOMAIN
            # same id and question; flags say "response, name error"; no answer/authority/additional records
            sock.sendto(query[:2] + flags.to_bytes(2, "big") + query[4:6] + bytes(6) + query[12:], peer)

    threading.Thread(target=answer, name="bench-nxdomain", daemon=True).start()


def compile_bytecode() -> None:
    """Compile the checkout's modules once, as installing a Python application does: a fresh checkout (or an
    environment with ``PYTHONDONTWRITEBYTECODE``) would otherwise compile every module on every cold run."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "supervisor.py", "actors", "protos", "tests/helpers"],
                   cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    # and the methods dataclasses/attrs generate at import (actors/_gencache.py), as a first run would
    subprocess.run([sys.executable, "-m", "actors._gencache"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def _interfaces() -> list[str]:
    import socket

    return sorted(name for _, name in socket.if_nameindex())  # this namespace's (sysfs shows the host's)


def main() -> int:
    """Run every scenario for every side, interleaved; print the table, ratios and one JSON line."""
    if os.environ.get(NETNS_MARK) != "1":
        return _in_netns()
    if _interfaces() != ["lo"]:
        raise SystemExit(f"not in a loopback-only namespace (interfaces: {_interfaces()})")
    serve_nxdomain()
    compile_bytecode()
    codex_bin = os.environ.get("CODEX_BIN") or None
    sides = ["codex", "cold", "warm"] if codex_bin else ["cold", "warm"]
    model = Model()
    times: dict[tuple[str, str], list[float]] = {}
    problems: dict[tuple[str, str], list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-codex-", dir=BENCH_TMP) as tmp, \
            FakeOpenAIServer(router=model) as server:
        bench = Bench(Path(tmp), server, codex_bin)
        try:
            bench.start_serve()
            runners: dict[str, Callable[[str], tuple[str, Outcome]]] = {
                "codex": bench.codex, "cold": bench.cold, "warm": bench.warm}
            for round_no in range(ROUNDS):
                for scenario in SCENARIOS:
                    order = sides if round_no % 2 == 0 else list(reversed(sides))
                    for side in order:
                        run_id, outcome = runners[side](scenario)
                        times.setdefault((scenario, side), []).append(outcome.seconds)
                        found = check(scenario, side, outcome, model.runs.get(run_id))
                        if found:
                            problems.setdefault((scenario, side), []).extend(found)
                        print(f"  round {round_no + 1} {scenario:6} {side:5} {outcome.seconds:7.3f} s"
                              f"{'  ' + '; '.join(found) if found else ''}", flush=True)
        finally:
            bench.close()
    return report(sides, times, problems)


def report(sides: list[str], times: dict[tuple[str, str], list[float]],
           problems: dict[tuple[str, str], list[str]]) -> int:
    """Print medians and ratios; one JSON line; exit 1 when a check failed."""
    median = {key: statistics.median(values) for key, values in times.items()}
    print(f"\n{'scenario':8} " + " ".join(f"{side:>9}" for side in sides) + "   cold/codex  warm/codex  warm/cold")
    figures: dict[str, Any] = {}
    for scenario in SCENARIOS:
        row = {side: median[(scenario, side)] for side in sides}
        codex = row.get("codex")
        ratios = {
            "cold_vs_codex": row["cold"] / codex if codex else None,
            "warm_vs_codex": row["warm"] / codex if codex else None,
            "warm_vs_cold": row["warm"] / row["cold"],
        }
        figures[scenario] = {**{f"{side}_s": round(value, 3) for side, value in row.items()},
                             **{k: (round(v, 3) if v is not None else None) for k, v in ratios.items()}}

        def fmt(value: float | None) -> str:
            return f"{value:10.2f}x" if value is not None else f"{'n/a':>11}"

        print(f"{scenario:8} " + " ".join(f"{row[side]:8.3f}s" for side in sides)
              + f" {fmt(ratios['cold_vs_codex'])} {fmt(ratios['warm_vs_codex'])} {fmt(ratios['warm_vs_cold'])}")
    for (scenario, side), found in sorted(problems.items()):
        print(f"CHECK FAILED {scenario}/{side}: {'; '.join(sorted(set(found)))}")
    print(json.dumps({"bench": "codex", "rounds": ROUNDS, "figures": figures,
                      "checks_passed": not problems}))
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
