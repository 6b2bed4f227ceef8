"""Benchmark: what `supervisor.py run --json` spends importing, beside a bare interpreter, in the same run.

Run: ``.venv/bin/python bench/bench_imports.py`` (about 10-20 s). One simple turn against a fake OpenAI
Responses server (``tests/helpers/fake_openai_server.py``, the ``openai`` provider), ``RUNS`` times, rounds
interleaved with the baseline; medians. The checkout's modules are compiled to bytecode first (``compileall``, and
``python -m actors._gencache`` for the methods dataclasses generate), as an installed application's are. Figures:
- the project's own import time on the run path: the sum of the *self* times that ``-X importtime`` reports
  for ``supervisor``, ``actors.*`` and ``protos.*`` modules (the work of our own module bodies; goal <= 100 ms),
  beside the whole import time of a bare ``python -c pass`` (site, encodings);
- every import of the run (ours and third-party: trio, protobuf, pykka, h11), summed self times, beside the
  same baseline;
- wall time of the whole run (process start to exit) beside ``python -c pass``.
Prints a table and one JSON line per figure.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers.fake_openai_server import FakeOpenAIServer, Reply

RUNS = 5
RUN_TIMEOUT_S = 60.0
OWN_PREFIXES = ("supervisor", "actors", "protos")
LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")

Row = tuple[str, float, float, str]


def import_times(stderr: str) -> tuple[float, float]:
    """(own self ms, all self ms) from ``-X importtime`` output."""
    own = total = 0
    for line in stderr.splitlines():
        match = LINE.match(line)
        if match is None:
            continue
        self_us, name = int(match.group(1)), match.group(4)
        total += self_us
        if name.split(".")[0] in OWN_PREFIXES:
            own += self_us
    return own / 1000, total / 1000


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[:4]} exited {done.returncode}: {done.stderr[-800:]}")
    return seconds * 1000, done.stderr


def main() -> int:
    """Measure, print the table and the JSON lines."""
    from bench_codex import compile_bytecode  # bench/ is this script's directory, first on sys.path

    compile_bytecode()
    own: list[float] = []
    every: list[float] = []
    base_imports: list[float] = []
    wall: list[float] = []
    base_wall: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(router=lambda _: Reply(text_deltas=("done",))) as srv:
        home = Path(tmp) / "home"
        home.mkdir()
        (home / "config.toml").write_text(
            f'model_provider = "openai"\nmodel = "gpt-5.5"\napproval_policy = "never"\n'
            f'[model_providers.openai]\nbase_url = "{srv.base_url}"\nmax_retries = 0\n')
        env = {**os.environ, "OPENAI_API_KEY": "sk-bench", "NO_COLOR": "1"}
        run = [sys.executable, str(ROOT / "supervisor.py"), "--home", str(home), "run", "--json", "hello"]
        bare = [sys.executable, "-c", "pass"]
        timed(run, env, Path(tmp))  # warm the page cache and the log
        for _ in range(RUNS):
            _, err = timed([sys.executable, "-X", "importtime", *run[1:]], env, Path(tmp))
            ours, total = import_times(err)
            own.append(ours)
            every.append(total)
            _, err = timed([sys.executable, "-X", "importtime", "-c", "pass"], env, Path(tmp))
            base_imports.append(import_times(err)[1])
            wall.append(timed(run, env, Path(tmp))[0])
            base_wall.append(timed(bare, env, Path(tmp))[0])
    rows: list[Row] = [
        ("project's own imports on the run path (sum of self times) vs python -c pass imports",
         statistics.median(own), statistics.median(base_imports), "ms"),
        ("all imports of the run path (sum of self times) vs python -c pass imports",
         statistics.median(every), statistics.median(base_imports), "ms"),
        ("supervisor.py run --json, one turn (wall, start to exit) vs python -c pass",
         statistics.median(wall), statistics.median(base_wall), "ms"),
    ]
    print(f"{'figure':88} {'ours':>9} {'baseline':>9} {'ratio':>7}  unit")
    for figure, ours_v, base_v, unit in rows:
        print(f"{figure:88} {ours_v:9.1f} {base_v:9.1f} {ours_v / base_v:7.2f}  {unit}")
    for figure, ours_v, base_v, unit in rows:
        print(json.dumps({"bench": "imports", "figure": figure, "ours": round(ours_v, 2), "baseline": round(base_v, 2),
                          "ratio": round(ours_v / base_v, 3), "unit": unit, "higher_is_better": False}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
