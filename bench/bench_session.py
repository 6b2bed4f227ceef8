"""Benchmark: session features end to end, beside the raw operation underneath, measured in the same run.

Run: ``.venv/bin/python bench/bench_session.py`` (about 20 s on 2 cores). Figures:
- subagent spawn-to-first-event latency (SpawnAgent returns once the child's SessionConfigured is logged),
  p50 and p99, vs starting a bare pykka actor and getting its first answer;
- exec round trip of ``true`` through a session (Exec request: session -> shell actor -> trio -> process, through
  the snapshot) vs ``subprocess.run(["true"])``;
- the same through a subagent (inherited snapshot, no shell actor of its own).
Prints a table and one JSON line per figure.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pykka

from actors.runtime import RuntimeOptions, SessionRuntime
from actors.turn import builtin_runner
from protos.supervisor.v1 import agents_pb2, envelope_pb2, session_pb2, shell_pb2

SPAWNS = 300
EXECS = 150
WARMUP = 10


class Bare(pykka.ThreadingActor):
    def on_receive(self, message: Any) -> Any:
        return message


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def feature(runtime: SessionRuntime, sid: str, message: Any) -> Any:
    env = envelope_pb2.Envelope(opaque=envelope_pb2.Opaque(type_url=message.DESCRIPTOR.full_name,
                                                           data=message.SerializeToString()))
    return runtime.request_feature(sid, env)


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    for _ in range(WARMUP):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> int:
    """Run every figure and print the table and JSON lines."""
    rows: list[tuple[str, float, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        runtime = SessionRuntime(RuntimeOptions(task_runner=builtin_runner, home=Path(tmp) / "home"))
        try:
            sid = runtime.start_session(session_pb2.StartSessionRequest(cwd=tmp, config_overrides=[
                "network.enabled=false", 'shell.program="/bin/bash"', f"agents.max_threads={SPAWNS + WARMUP + 1}",
            ])).session_id

            spawned: list[str] = []

            def spawn() -> None:
                reply = feature(runtime, sid, agents_pb2.SpawnAgentRequest(session_id=sid))
                spawned.append(reply.agent_id)

            def bare() -> None:
                ref = Bare.start()
                ref.ask("first")
                ref.stop()

            ours = timed(spawn, SPAWNS)
            base = timed(bare, SPAWNS)
            rows.append(("subagent spawn-to-first-event p50 vs bare pykka start+ask", statistics.median(ours),
                         statistics.median(base), "ms"))
            rows.append(("subagent spawn-to-first-event p99 vs bare pykka start+ask", percentile(ours, 0.99),
                         percentile(base, 0.99), "ms"))

            def exec_in(session_id: str) -> Callable[[], None]:
                def run() -> None:
                    reply = feature(runtime, session_id, shell_pb2.ExecRequest(session_id=session_id, command="true"))
                    assert reply.exit_code == 0
                return run

            direct = timed(lambda: subprocess.run(["true"], check=True), EXECS)
            via_session = timed(exec_in(sid), EXECS)
            rows.append(("exec `true` through a session vs subprocess.run", statistics.median(via_session),
                         statistics.median(direct), "ms"))
            snapshot = runtime.live(sid).task_services()["shell"].snapshot
            same_work = timed(lambda: subprocess.run(
                ["/bin/bash", "-c", f". {snapshot.path}\neval true"], check=True), EXECS)
            rows.append(("exec `true` through a session vs bash sourcing the same snapshot", statistics.median(
                via_session), statistics.median(same_work), "ms"))
            child_shell = runtime.live(spawned[0]).task_services()["shell"]
            via_child = timed(lambda: exec_in_child(child_shell), EXECS)
            rows.append(("exec `true` through a subagent's inherited shell vs bash + snapshot",
                         statistics.median(via_child), statistics.median(same_work), "ms"))
            runtime.stop_session(sid)
        finally:
            runtime.shutdown()
    print(f"{'figure':68} {'ours':>9} {'baseline':>9} {'ratio':>7}  unit")
    for figure, ours_v, base_v, unit in rows:
        print(f"{figure:68} {ours_v:9.3f} {base_v:9.3f} {ours_v / base_v:7.2f}  {unit}")
    for figure, ours_v, base_v, unit in rows:
        print(json.dumps({"bench": "session", "figure": figure, "ours": round(ours_v, 4), "baseline": round(base_v, 4),
                          "ratio": round(ours_v / base_v, 3), "unit": unit, "higher_is_better": False}))
    return 0


def exec_in_child(shell: Any) -> None:
    """Run `true` through a subagent's own (inherited-snapshot) shell on the trio loop."""
    from actors.core import get_host

    async def run() -> None:
        result = await shell.exec("true")
        assert result.exit_code == 0

    get_host().call(run, timeout=30)


if __name__ == "__main__":
    raise SystemExit(main())
