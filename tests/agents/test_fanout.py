"""The turn loop driving subagents: 100 workers (each one exec + one MCP call) under one traced root turn."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

from opentelemetry import trace

from actors.core import current_traceparent
from actors.runtime import RuntimeOptions, SessionRuntime
from protos.supervisor.v1 import envelope_pb2, session_pb2

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 100
WAIT_S = 120.0

PLAYBOOK = """
[[plans.root.steps]]
name = "spawn"
tool = "spawn_agent"
repeat = {workers}
arguments = {{ message = "job {{n}}", agent_type = "worker" }}

[[plans.root.steps]]
name = "waited"
tool = "wait"
arguments = {{ agent_ids = "{{result.spawn.agent_id}}", timeout_ms = 100000, all = true }}

[[plans.root.steps]]
text = "done: {{result.waited.timed_out}}"

[[plans."worker*".steps]]
name = "work"
calls = [
  {{ tool = "shell", arguments = {{ command = "echo out-$((6 * 7))" }} }},
  {{ tool = "mcp__example__word_count", arguments = {{ text = "{{input}} has three" }} }},
]

[[plans."worker*".steps]]
text = "{{input}} -> {{result.work[0]}} / words={{result.work[1]}}"
"""


def test_one_hundred_subagents_each_exec_and_mcp_in_one_trace(tmp_path: Path, span_exporter: Any) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "fan.toml").write_text(PLAYBOOK.format(workers=WORKERS))
    (home / "config.toml").write_text(f"""
model_provider = "playbook"
playbook = {json.dumps(str(tmp_path / "fan.toml"))}
[agents]
max_threads = {WORKERS}
[agent_types.worker]
role = "worker"
[network]
enabled = false
[shell]
program = "/bin/bash"
[mcp_servers.example]
command = {json.dumps(sys.executable)}
args = {json.dumps([str(ROOT / "examples" / "mcp_example_server.py")])}
required = true
""")
    runtime = SessionRuntime(RuntimeOptions(home=home, managed_dir=tmp_path / "etc"))
    try:
        sid = runtime.start_session(session_pb2.StartSessionRequest(cwd=str(tmp_path))).session_id
        with trace.get_tracer("test").start_as_current_span("client"):
            tp, _ = current_traceparent()
            env = envelope_pb2.Envelope(submit=session_pb2.SubmitRequest(session_id=sid, input="go"))
            env.trace.traceparent = tp
            runtime.request(sid, env)
        stop = threading.Event()
        timer = threading.Timer(WAIT_S, stop.set)
        timer.start()
        final = None
        for event in runtime.stream(sid, 0, stop=stop):
            if event.WhichOneof("msg") == "turn_completed" and event.agent_path == "/root":
                final = event.turn_completed.last_agent_message
                break
        timer.cancel()
        assert final == "done: False"
        results = [e.agent_message.text for e in runtime.log.read(sid, 0, limit=100_000)
                   if e.WhichOneof("msg") == "agent_message" and e.agent_path != "/root"
                   and not e.agent_message.delta]
        assert len(results) == WORKERS
        assert all("out-42" in r and "words=4" in r for r in results), results[:3]
        runtime.stop_session(sid)
    finally:
        runtime.shutdown()
    spans = span_exporter.get_finished_spans()
    client = next(s for s in spans if s.name == "client")
    spawns = {s.context.span_id: s for s in spans if s.name == "agent.spawn"}
    children = [s for s in spans if s.name == "subagent.session"]
    assert len(spawns) == WORKERS and len(children) == WORKERS
    assert all(s.parent.span_id in spawns for s in children)
    assert {s.context.trace_id for s in spans if s.name in ("agent.spawn", "subagent.session")} == {
        client.context.trace_id}
