"""Hook costs beside baselines measured in the same run (2-core friendly, < 60 s).

Figures:
- one hook, sequential runs/s: ``run_hooks`` (discovery done once; JSON input, trio process, group, output
  parsing, events) vs ``subprocess.run`` of the same shell command with the same stdin (the floor);
- fan-out: wall time of 8 matching hooks that each sleep 0.2 s, run concurrently by ``run_hooks``, vs the
  same 8 commands run one after another with ``subprocess.run`` (what a sequential runner would cost);
- discovery: ``discover`` over 3 layers and 40 plugins (one hooks file each) vs ``json.loads`` of the same
  files (the floor any loader pays).

Run: ``.venv/bin/python bench/bench_hooks.py``. Prints a table, then one JSON line per figure.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actors.hooks import (
    discover,
    run_hooks,
)

SHELL = ["/bin/bash", "-c"]
#: Sequential single-hook runs per side.
SINGLE_RUNS = 60
#: Hooks in the fan-out figure, and how long each sleeps.
FANOUT_HOOKS = 8
FANOUT_SLEEP_S = 0.2
#: Repetitions of each fan-out side (median taken).
FANOUT_REPEATS = 3
#: Plugins in the discovery figure, and discovery repetitions.
PLUGINS = 40
DISCOVERY_REPEATS = 50
COMMAND = "cat > /dev/null; echo '{}'"
SUBPROCESS_TIMEOUT_S = 30.0
HOOK_INPUT: dict[str, Any] = {"tool_name": "Bash", "tool_input": {"command": "ls -la"}}


def hooks_doc(event: str, commands: list[str]) -> dict[str, Any]:
    return {"hooks": {event: [{"hooks": [{"type": "command", "command": c} for c in commands]}]}}


def write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def figure(name: str, ours: float, baseline: float, unit: str) -> dict[str, Any]:
    return {
        "bench": "hooks",
        "figure": name,
        "ours": round(ours, 4),
        "baseline": round(baseline, 4),
        "ratio": round(ours / baseline, 3),
        "unit": unit,
    }


def bench_single(tmp: Path) -> dict[str, Any]:
    write(tmp / "single/hooks.json", hooks_doc("PreToolUse", [COMMAND]))
    registry, _ = discover([("user", tmp / "single")])
    stdin = json.dumps(
        {"session_id": "", "cwd": str(tmp), "hook_event_name": "PreToolUse", **HOOK_INPUT}
    ).encode()

    async def ours() -> float:
        start = time.perf_counter()
        for _ in range(SINGLE_RUNS):
            await run_hooks(registry, "PreToolUse", HOOK_INPUT, cwd=tmp, shell_program=SHELL)
        return SINGLE_RUNS / (time.perf_counter() - start)

    ours_rate = trio.run(ours)
    start = time.perf_counter()
    for _ in range(SINGLE_RUNS):
        subprocess.run(
            [*SHELL, COMMAND],
            input=stdin,
            capture_output=True,
            cwd=tmp,
            check=False,
            start_new_session=True,
            timeout=SUBPROCESS_TIMEOUT_S,
        )
    base_rate = SINGLE_RUNS / (time.perf_counter() - start)
    return figure("single_hook_runs_per_s", ours_rate, base_rate, "runs/s")


def bench_fanout(tmp: Path) -> dict[str, Any]:
    command = f"cat > /dev/null; sleep {FANOUT_SLEEP_S}"
    write(tmp / "fanout/hooks.json", hooks_doc("Stop", [command] * FANOUT_HOOKS))
    registry, _ = discover([("user", tmp / "fanout")])

    async def ours() -> float:
        start = time.perf_counter()
        result = await run_hooks(registry, "Stop", {}, cwd=tmp, shell_program=SHELL)
        assert len(result.results) == FANOUT_HOOKS
        return time.perf_counter() - start

    ours_s = statistics.median(trio.run(ours) for _ in range(FANOUT_REPEATS))
    base = []
    for _ in range(FANOUT_REPEATS):
        start = time.perf_counter()
        for _ in range(FANOUT_HOOKS):
            subprocess.run(
                [*SHELL, command], input=b"{}", capture_output=True, check=False, timeout=SUBPROCESS_TIMEOUT_S
            )
        base.append(time.perf_counter() - start)
    return figure(f"fanout_{FANOUT_HOOKS}_hooks_wall_s", ours_s, statistics.median(base), "s")


def bench_discovery(tmp: Path) -> dict[str, Any]:
    layers = []
    files = []
    for source in ("user", "project", "managed"):
        write(tmp / source / "hooks.json", hooks_doc("PreToolUse", [f"echo {source}"]))
        layers.append((source, tmp / source))
        files.append(tmp / source / "hooks.json")
    roots = []
    for i in range(PLUGINS):
        root = tmp / "plugins" / f"p{i}"
        write(root / ".codex-plugin/plugin.json", {"name": f"p{i}"})
        write(root / "hooks/hooks.json", hooks_doc("PostToolUse", [f"echo {i}"]))
        roots.append(root)
        files += [root / ".codex-plugin/plugin.json", root / "hooks/hooks.json"]
    start = time.perf_counter()
    for _ in range(DISCOVERY_REPEATS):
        registry, warnings = discover(layers, roots, plugin_hooks=True)
    ours_ms = (time.perf_counter() - start) / DISCOVERY_REPEATS * 1000
    assert len(registry) == 3 + PLUGINS and not warnings
    start = time.perf_counter()
    for _ in range(DISCOVERY_REPEATS):
        for f in files:
            json.loads(f.read_text())
    base_ms = (time.perf_counter() - start) / DISCOVERY_REPEATS * 1000
    return figure(f"discover_3_layers_{PLUGINS}_plugins_ms", ours_ms, base_ms, "ms")


def main() -> None:
    """Run every figure and print them."""
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        figures = [bench_single(tmp), bench_fanout(tmp), bench_discovery(tmp)]
    print(f"{'figure':40} {'ours':>10} {'baseline':>10} {'ratio':>7}  unit")
    for f in figures:
        print(f"{f['figure']:40} {f['ours']:>10} {f['baseline']:>10} {f['ratio']:>7}  {f['unit']}")
    for f in figures:
        print(json.dumps(f))


if __name__ == "__main__":
    main()
