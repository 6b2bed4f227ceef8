"""Benchmark: thousands of live subagent sessions in one process, each figure beside its raw baseline.

Run: ``.venv/bin/python bench/bench_scale.py`` (about 75-100 s on 2 cores). Every measurement runs in a fresh
child process (``--worker``), so that RSS is not shared between them; ours and the baseline alternate.
Figures:
- live subagent sessions: subagents of one root session, spawned through the runtime
  (``SpawnAgentRequest`` as a feature request, the path of the gRPC ``SpawnAgent`` RPC), up to ``LEVELS[-1]``;
- spawn throughput (to 1,000) vs raw pykka ``ThreadingActor.start()`` of as many actors (goal >= 1,000/s and
  >= 0.25x);
- RSS per idle subagent session at 10,000 vs a raw idle ThreadingActor (goal <= 100 KiB);
- stop of a tree of 1,000 (``StopSession`` of the root) vs ``ActorRegistry.stop_all()`` of 1,000 raw actors,
  with a check that nothing is left behind (threads, fds, child processes, registered actors);
- from ``bench_core``, in the same run: envelope round trip, unary RPC through a session, time to
  SessionConfigured.
Writes ``bench/out/scale.png``: spawn latency and RSS per session against live sessions (log scale), ours and
raw. Prints a table and one JSON line per figure.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: Live-session counts at which spawn latency and RSS are sampled (the plot's x axis).
LEVELS = (10, 100, 1000, 10000)
#: Sessions spawned for the throughput figure, and rounds of ours/raw alternating.
THROUGHPUT_N = 1000
THROUGHPUT_ROUNDS = 2
#: Size of the tree whose stop is timed.
STOP_TREE_N = 1000
#: Bound on one worker process.
WORKER_TIMEOUT_S = 240.0
OUT_DIR = ROOT / "bench" / "out"

Row = tuple[str, float, float, str, bool]  # figure, ours, baseline, unit, higher_is_better


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _leftovers() -> dict[str, int]:
    """What a process holds that a stopped tree must give back."""
    import pykka

    children = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                children += 1
    return {"threads": threading.active_count(), "fds": len(os.listdir("/proc/self/fd")),
            "children": children, "actors": len(pykka.ActorRegistry.get_all())}


def _settled(before: dict[str, int], deadline_s: float = 5.0) -> dict[str, int]:
    """Leftovers once idle workers have exited (they leave within a second), bounded by ``deadline_s``."""
    end = time.monotonic() + deadline_s
    now = _leftovers()
    while time.monotonic() < end and any(now[k] > before[k] for k in now):
        time.sleep(0.05)
        now = _leftovers()
    return now


# --- workers (each in its own process) -------------------------------------------------------------------
def worker_ours(n: int, levels: list[int]) -> dict[str, Any]:
    """Spawn ``n`` idle subagents under one root; sample latency/RSS at ``levels``; stop the tree."""
    from actors.core import get_pool
    from actors.runtime import RuntimeOptions, SessionRuntime
    from actors.turn import builtin_runner
    from protos.supervisor.v1 import agents_pb2, envelope_pb2, session_pb2

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        runtime = SessionRuntime(RuntimeOptions(task_runner=builtin_runner, home=home / "home",
                                                managed_dir=home / "etc"))
        root = runtime.start_session(session_pb2.StartSessionRequest(cwd=str(home), config_overrides=[
            'shell.program="/bin/bash"', "network.enabled=false", f"agents.max_threads={n + 1}"])).session_id
        type_url = agents_pb2.SpawnAgentRequest.DESCRIPTOR.full_name
        data = agents_pb2.SpawnAgentRequest(session_id=root).SerializeToString()
        time.sleep(0.2)  # let the root's start-up settle before the RSS baseline
        before = _leftovers()
        rss0 = _rss_kib()
        latencies: list[float] = []
        samples = []
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            t = time.perf_counter()
            runtime.request_feature(root, envelope_pb2.Envelope(opaque=envelope_pb2.Opaque(type_url=type_url,
                                                                                          data=data)))
            latencies.append(time.perf_counter() - t)
            if i in levels:
                window = latencies[len(latencies) - min(len(latencies), max(i // 2, 10)):]
                samples.append({"live": i, "p50_ms": statistics.median(window) * 1000,
                                "rss_per_session_kib": (_rss_kib() - rss0) / i,
                                "threads": threading.active_count(), "workers": get_pool().thread_count()})
        elapsed = time.perf_counter() - t0
        live = len(runtime.live_ids()) - 1
        t1 = time.perf_counter()
        runtime.stop_session(root)
        stop_s = time.perf_counter() - t1
        left = _settled(before)
        runtime.shutdown()
    return {"rate": n / elapsed, "samples": samples, "live": live, "stop_s": stop_s, "before": before,
            "after": left}


def worker_raw(n: int, levels: list[int]) -> dict[str, Any]:
    """Start ``n`` idle raw pykka ThreadingActors; sample latency/RSS at ``levels``; stop_all."""
    import pykka

    class Idle(pykka.ThreadingActor):
        pass

    before = _leftovers()
    rss0 = _rss_kib()
    latencies: list[float] = []
    samples = []
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        t = time.perf_counter()
        Idle.start()
        latencies.append(time.perf_counter() - t)
        if i in levels:
            window = latencies[len(latencies) - min(len(latencies), max(i // 2, 10)):]
            samples.append({"live": i, "p50_ms": statistics.median(window) * 1000,
                            "rss_per_session_kib": (_rss_kib() - rss0) / i, "threads": threading.active_count()})
    elapsed = time.perf_counter() - t0
    t1 = time.perf_counter()
    pykka.ActorRegistry.stop_all()
    stop_s = time.perf_counter() - t1
    return {"rate": n / elapsed, "samples": samples, "live": n, "stop_s": stop_s, "before": before,
            "after": _settled(before)}


def run_worker(kind: str, n: int, levels: tuple[int, ...]) -> dict[str, Any]:
    """Run one worker in a fresh interpreter and return its JSON result."""
    out = subprocess.run([sys.executable, __file__, "--worker", kind, str(n), ",".join(map(str, levels))],
                         check=True, capture_output=True, text=True, cwd=ROOT, timeout=WORKER_TIMEOUT_S)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


# --- the plot ------------------------------------------------------------------------------------------
def plot(ours: dict[str, Any], raw: dict[str, Any], path: Path) -> None:
    """Spawn latency (p50) and RSS per session against live sessions, ours beside raw actors."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, mem) = plt.subplots(1, 2, figsize=(11, 4.2))
    for data, label, style in ((ours, "subagent session (ours)", "o-"), (raw, "raw pykka ThreadingActor", "s--")):
        xs = [s["live"] for s in data["samples"]]
        lat.plot(xs, [s["p50_ms"] for s in data["samples"]], style, label=label)
        mem.plot(xs, [s["rss_per_session_kib"] for s in data["samples"]], style, label=label)
    for axis, title, unit in ((lat, "spawn latency p50", "ms"), (mem, "RSS per live session", "KiB")):
        axis.set_xscale("log")
        axis.set_xlabel("live sessions")
        axis.set_ylabel(unit)
        axis.set_title(title)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    mem.axhline(100, color="red", linewidth=0.8, linestyle=":")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    """Run every figure, print the table, the JSON lines and the plot's path."""
    rows: list[Row] = []
    ours_rates, raw_rates = [], []
    for _ in range(THROUGHPUT_ROUNDS):  # alternate, so that background load does not favour one side
        raw_rates.append(run_worker("raw", THROUGHPUT_N, (THROUGHPUT_N,))["rate"])
        ours_rates.append(run_worker("ours", THROUGHPUT_N, (THROUGHPUT_N,))["rate"])
    raw_big = run_worker("raw", LEVELS[-1], LEVELS)
    ours_big = run_worker("ours", LEVELS[-1], LEVELS)
    raw_tree = run_worker("raw", STOP_TREE_N, (STOP_TREE_N,))
    ours_tree = run_worker("ours", STOP_TREE_N, (STOP_TREE_N,))
    leaks = {k: max(0, ours_tree["after"][k] - ours_tree["before"][k]) for k in ours_tree["before"]}
    rows.append((f"live subagent sessions (threads at {LEVELS[-1]}: {ours_big['samples'][-1]['threads']} ours, "
                 f"{raw_big['samples'][-1]['threads']} raw)", ours_big["live"], raw_big["live"], "sessions", True))
    rows.append((f"spawn throughput to {THROUGHPUT_N} vs raw ThreadingActor start", max(ours_rates),
                 max(raw_rates), "spawn/s", True))
    rows.append((f"spawn throughput to {LEVELS[-1]} vs raw ThreadingActor start", ours_big["rate"],
                 raw_big["rate"], "spawn/s", True))
    rows.append((f"RSS per idle subagent session at {LEVELS[-1]} vs raw idle actor",
                 ours_big["samples"][-1]["rss_per_session_kib"], raw_big["samples"][-1]["rss_per_session_kib"],
                 "KiB", False))
    rows.append((f"stop of a tree of {STOP_TREE_N} vs raw stop_all (left: {leaks})", ours_tree["stop_s"] * 1000,
                 raw_tree["stop_s"] * 1000, "ms", False))
    from bench_core import actor_round_trips, rpc_round_trips

    with tempfile.TemporaryDirectory() as tmp:
        rows.append(actor_round_trips())
        rows.extend(rpc_round_trips(Path(tmp)))
    png = OUT_DIR / "scale.png"
    plot(ours_big, raw_big, png)
    print(f"{'figure':100} {'ours':>10} {'baseline':>10} {'ratio':>7}  unit")
    for figure, ours, base, unit, _ in rows:
        print(f"{figure:100} {ours:10.2f} {base:10.2f} {ours / base:7.2f}  {unit}")
    print("per level (ours | raw): live, spawn p50 ms, RSS KiB/session, threads")
    for mine, theirs in zip(ours_big["samples"], raw_big["samples"], strict=True):
        print(f"  {mine['live']:>6}  {mine['p50_ms']:6.2f} | {theirs['p50_ms']:6.2f}   "
              f"{mine['rss_per_session_kib']:6.1f} | {theirs['rss_per_session_kib']:6.1f}   "
              f"{mine['threads']:>5} | {theirs['threads']:>5}")
    for figure, ours, base, unit, higher in rows:
        print(json.dumps({"bench": "scale", "figure": figure, "ours": round(ours, 3), "baseline": round(base, 3),
                          "ratio": round(ours / base, 3), "unit": unit, "higher_is_better": higher}))
    print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        fn = worker_ours if sys.argv[2] == "ours" else worker_raw
        print(json.dumps(fn(int(sys.argv[3]), [int(x) for x in sys.argv[4].split(",")])))
        raise SystemExit(0)
    raise SystemExit(main())
