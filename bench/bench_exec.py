"""Benchmark: command round trips through the exec service vs running the process directly.

Run: ``.venv/bin/python bench/bench_exec.py`` (about 15 s on 2 cores). Prints a table and one JSON line per
figure. Figures (baseline measured in the same run):
- ``true`` via ``CommandRunner`` on the shared trio loop (no snapshot; and through a bash snapshot) vs
  ``subprocess.run(["true"])`` and vs ``subprocess.run(["bash", "-c", "true"])``;
- ``true`` via the ``ShellSnapshotActor`` (actor call -> trio -> process) vs ``subprocess.run(["true"])``;
- 100 MB of output through ``CommandRunner`` (bounded head/tail) vs ``subprocess.run(..., stdout=PIPE)``
  (which holds all of it), wall time.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.core import get_host, start_actor
from actors.shell import CommandRunner, ShellSnapshotActor, ShellSnapshotter

ROUND_TRIPS = 200
WARMUP = 10
BIG_OUTPUT_BYTES = 100_000_000
BIG_REPEATS = 3
CALL_TIMEOUT_S = 30.0
BASH = shutil.which("bash") or "/bin/bash"
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def per_call_ms(fn: Callable[[], object], n: int = ROUND_TRIPS) -> float:
    """Median wall time of one call, in milliseconds."""
    for _ in range(WARMUP):
        fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def report(rows: list[tuple[str, str, float, float, str]]) -> None:
    """Print a table, then one JSON line per figure."""
    print(f"{'figure':58} {'ours':>10} {'baseline':>10} {'ratio':>7}  unit")
    for _bench, figure, ours, base, unit in rows:
        print(f"{figure:58} {ours:10.3f} {base:10.3f} {ours / base:7.2f}  {unit}")
    for bench, figure, ours, base, unit in rows:
        line = {"bench": bench, "figure": figure, "ours": round(ours, 4), "baseline": round(base, 4),
                "ratio": round(ours / base, 3), "unit": unit}  # fmt: skip
        print(json.dumps(line))


def main() -> None:
    """Run every figure and print the report."""
    host = get_host()
    rows: list[tuple[str, str, float, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        (home / ".bashrc").write_text("alias ll='ls -l'\nexport FOO=bar\nset -o noclobber\n")
        cwd = Path(tmp)

        direct_true = per_call_ms(lambda: subprocess.run(["true"], check=True, env=ENV))
        direct_bash = per_call_ms(lambda: subprocess.run([BASH, "-c", "true"], check=True, env=ENV))

        plain = CommandRunner(emit=lambda _m: None, shell=BASH, env=ENV)
        ours_plain = per_call_ms(lambda: host.call(plain.run, "true", cwd, timeout=CALL_TIMEOUT_S))

        snapper = ShellSnapshotter(session_id="bench", home=home, emit=lambda _m: None, shell=BASH, env=ENV)
        snapshot = host.call(snapper.capture, timeout=CALL_TIMEOUT_S)
        assert snapshot is not None
        snapped = CommandRunner(emit=lambda _m: None, snapshot=snapshot, env=ENV)
        ours_snap = per_call_ms(lambda: host.call(snapped.run, "true", cwd, timeout=CALL_TIMEOUT_S))

        actor = ShellSnapshotActor(session_id="bench-actor", home=home, emit=lambda _m: None, cwd=cwd, shell=BASH,
                                   env=ENV)  # fmt: skip
        ref = start_actor(actor)
        try:
            proxy = ref.proxy()
            proxy.snapshot().get(timeout=CALL_TIMEOUT_S).result(CALL_TIMEOUT_S)
            ours_actor = per_call_ms(lambda: proxy.exec("true").get(timeout=CALL_TIMEOUT_S).result(CALL_TIMEOUT_S))
        finally:
            ref.stop(timeout=CALL_TIMEOUT_S)

        rows += [
            ("exec", "true via CommandRunner (no snapshot) vs subprocess.run(true)", ours_plain, direct_true, "ms"),
            ("exec", "true via CommandRunner (no snapshot) vs bash -c true", ours_plain, direct_bash, "ms"),
            ("exec", "true via CommandRunner (bash snapshot) vs bash -c true", ours_snap, direct_bash, "ms"),
            ("exec", "true via ShellSnapshotActor.exec vs subprocess.run(true)", ours_actor, direct_true, "ms"),
        ]

        big = f"head -c {BIG_OUTPUT_BYTES} /dev/zero"
        ours_big = per_call_ms(lambda: host.call(plain.run, big, cwd, timeout=CALL_TIMEOUT_S), n=BIG_REPEATS)
        base_big = per_call_ms(
            lambda: subprocess.run([BASH, "-c", big], stdout=subprocess.PIPE, check=True, env=ENV), n=BIG_REPEATS
        )
        rows.append(("exec", "100 MB output via CommandRunner vs subprocess.run(PIPE)", ours_big, base_big, "ms"))
        snapshot.path.unlink()
    host.stop()
    print(f"cpus={os.cpu_count()} round_trips={ROUND_TRIPS}")
    report(rows)


if __name__ == "__main__":
    main()
