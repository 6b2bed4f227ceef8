"""Benchmark: start-up cost of the OS sandbox, a sandboxed ``true`` vs an unsandboxed one, same run.

Run: ``.venv/bin/python bench/bench_sandbox.py`` (about 20 s on 2 cores). Prints a table and one JSON line per
figure. Figures (baseline: ``subprocess.run(["true"])`` measured in the same run):
- bubblewrap as the session uses it: read-only; workspace-write with network off (a fresh network
  namespace per command); network limited (``nsenter`` into the session's proxy namespace, then bubblewrap);
- the alternative we did not choose, Landlock (+ ``no_new_privs``), applied by a helper before ``exec``:
  as a Python helper (what we could ship without a compiler) and, when ``cc`` is available, as a small C
  helper (its best case; Codex's legacy pipeline is such a native helper). See docs/design.md, "Sandbox".
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

from actors.sandbox import Network, ProxyNamespace, SandboxPolicy, bwrap_argv

ROUNDS = 150
WARMUP = 10
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}

#: Landlock, read-only except nothing: handle every fs right of ABI >= 3, allow read/exec below "/".
LANDLOCK_PY = r'''
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
attr = struct.pack("QQQ", (1 << 16) - 1, 0, 0)
fd = libc.syscall(444, ctypes.create_string_buffer(attr), len(attr), 0)
root = os.open("/", os.O_PATH)
rule = ctypes.create_string_buffer(struct.pack("=Qi", 1 | 4 | 8, root))
assert fd >= 0 and libc.syscall(445, fd, 1, rule, 0) == 0
libc.prctl(38, 1, 0, 0, 0)
assert libc.syscall(446, fd, 0) == 0
os.execvp(sys.argv[1], sys.argv[1:])
'''
LANDLOCK_C = r'''
#define _GNU_SOURCE
#include <linux/landlock.h>
#include <sys/syscall.h>
#include <sys/prctl.h>
#include <fcntl.h>
#include <unistd.h>
int main(int argc, char **argv) {
  struct landlock_ruleset_attr a = {.handled_access_fs = (1ULL << 16) - 1};
  int fd = syscall(SYS_landlock_create_ruleset, &a, sizeof a, 0);
  struct landlock_path_beneath_attr p = {.allowed_access = 1 | 4 | 8, .parent_fd = open("/", O_PATH)};
  if (fd < 0 || syscall(SYS_landlock_add_rule, fd, LANDLOCK_RULE_PATH_BENEATH, &p, 0)) return 1;
  prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  if (syscall(SYS_landlock_restrict_self, fd, 0)) return 1;
  execvp(argv[1], argv + 1);
  return 127;
}
'''


def per_call_ms(argv: list[str], cwd: str, n: int = ROUNDS) -> float:
    """Median wall time of one ``subprocess.run(argv)``, in milliseconds."""
    run: Callable[[], object] = lambda: subprocess.run(argv, check=True, env=ENV, cwd=cwd)  # noqa: E731
    for _ in range(WARMUP):
        run()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        run()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def report(rows: list[tuple[str, str, float, float, str]]) -> None:
    """Print a table, then one JSON line per figure."""
    print(f"{'figure':64} {'ours':>9} {'baseline':>9} {'ratio':>7}  unit")
    for _bench, figure, ours, base, unit in rows:
        print(f"{figure:64} {ours:9.3f} {base:9.3f} {ours / base:7.2f}  {unit}")
    for bench, figure, ours, base, unit in rows:
        line = {"bench": bench, "figure": figure, "ours": round(ours, 4), "baseline": round(base, 4),
                "ratio": round(ours / base, 3), "unit": unit}  # fmt: skip
        print(json.dumps(line))


def main() -> None:
    """Run every figure and print the report."""
    if shutil.which("bwrap") is None:
        sys.exit("bubblewrap is not installed (make setup installs it)")
    rows: list[tuple[str, str, float, float, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        ws = str(Path(tmp).resolve())
        base = per_call_ms(["true"], ws)
        read_only = SandboxPolicy(False)
        ws_off = SandboxPolicy(False, writable_roots=(Path(ws),), network=Network.OFF)
        rows.append(("sandbox", "true in bwrap, read-only vs true",
                     per_call_ms(bwrap_argv(read_only, ["true"], ws), ws), base, "ms"))
        rows.append(("sandbox", "true in bwrap, workspace-write + network off vs true",
                     per_call_ms(bwrap_argv(ws_off, ["true"], ws), ws), base, "ms"))
        netns = ProxyNamespace.create("127.0.0.1", 9)  # nothing is forwarded: only the spawn is timed
        try:
            limited = SandboxPolicy(False, writable_roots=(Path(ws),), network=Network.LIMITED)
            rows.append(("sandbox", "true in bwrap, workspace-write + network limited vs true",
                         per_call_ms(bwrap_argv(limited, ["true"], ws, netns_path=netns.path), ws), base, "ms"))
        finally:
            netns.close()
        helper = Path(tmp) / "landlock.py"
        helper.write_text(LANDLOCK_PY)
        rows.append(("sandbox", "true under Landlock, Python helper (not chosen) vs true",
                     per_call_ms([sys.executable, "-S", "-I", str(helper), "true"], ws), base, "ms"))
        cc = shutil.which("cc")
        if cc is not None:
            source = Path(tmp) / "landlock.c"
            source.write_text(LANDLOCK_C)
            binary = Path(tmp) / "landlock"
            built = subprocess.run([cc, "-O2", "-o", str(binary), str(source)], capture_output=True, check=False)
            if built.returncode == 0:
                rows.append(("sandbox", "true under Landlock, C helper (not chosen) vs true",
                             per_call_ms([str(binary), "true"], ws), base, "ms"))
    print(f"cpus={os.cpu_count()} rounds={ROUNDS}")
    report(rows)


if __name__ == "__main__":
    main()
