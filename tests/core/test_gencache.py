"""The generated-code cache (``actors/_gencache.py``): a second process reuses what the first compiled, and the
classes it builds behave exactly as without it; a bad file or a read-only setting never breaks a start.

Each case runs fresh interpreters with ``PYTHONPYCACHEPREFIX`` in a temporary directory, so the cache file is
the test's own (the place Python gives the module's ``.pyc``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S = 60.0

#: Defines dataclasses (frozen, ordered, slotted, with defaults and a factory), imports trio (attrs classes),
#: exercises them and prints what they did plus the cache's figures.
PROBE = """
import dataclasses, json, sys
from actors import _gencache
_gencache.install()
compiled_names = []
_builtin = _gencache._builtin_compile
def _spy(source, filename, mode, *args, **kwargs):
    compiled_names.append(filename)
    return _builtin(source, filename, mode, *args, **kwargs)
_gencache._builtin_compile = _spy
from dataclasses import dataclass, field

@dataclass(frozen=True, order=True)
class Point:
    x: int
    y: int = 2
    tags: tuple[str, ...] = ()

@dataclass(slots=True)
class Bag:
    items: list[int] = field(default_factory=list)
    name: str = "bag"

import trio  # attrs-generated classes

p, q = Point(1), Point(1, 3, ("a",))
try:
    p.x = 5
    frozen = False
except dataclasses.FrozenInstanceError:
    frozen = True
b = Bag()
b.items.append(1)
result = {
    "repr": [repr(p), repr(q), repr(b)], "eq": p == Point(1, 2), "lt": p < q, "hash": hash(p) == hash(Point(1)),
    "frozen": frozen, "slots": not hasattr(b, "__dict__"), "factory": Bag().items == [],
    "trio": trio.run(trio.sleep, 0) is None,
    "attrs_cached": any(f.startswith("<attrs generated") for _, f, _ in _gencache._cache),
}
_gencache.save()
print(json.dumps({"result": result, "stats": _gencache.stats(), "path": _gencache.cache_path(),
                  "compiled": compiled_names}))
"""


def _probe(prefix: Path, **env: str) -> dict:
    base = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, env={**base, "PYTHONPYCACHEPREFIX": str(prefix), **env}, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _stock() -> dict:
    """The probe's result without the cache (``install`` made a no-op)."""
    code = PROBE.replace("_gencache.install()", "pass")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["result"]


def test_a_second_process_reuses_the_code_and_the_classes_behave_the_same(tmp_path: Path) -> None:
    first = _probe(tmp_path)
    path = Path(first["path"])
    assert path.is_file() and str(path).startswith(str(tmp_path))
    assert first["stats"]["compiled"] > 20  # dataclasses' and attrs' methods, compiled once
    second = _probe(tmp_path)
    print(f"first: {first['stats']}; second: {second['stats']}")
    # everything came from the file, attrs' hashable classes too (their hash-seeded constant swapped in)
    assert second["stats"]["reused"] == first["stats"]["compiled"] and second["compiled"] == []
    assert "<string>" in first["compiled"] and any(n.startswith("<attrs generated") for n in first["compiled"])
    third = _probe(tmp_path)
    assert third["stats"]["entries"] <= second["stats"]["entries"]  # no growth run after run
    stock = _stock()
    assert first["result"]["attrs_cached"] and not stock["attrs_cached"]  # trio's attrs classes go through it
    for probe in (first, second, third):
        del probe["result"]["attrs_cached"]
    del stock["attrs_cached"]
    assert first["result"] == second["result"] == third["result"] == stock
    assert stock["frozen"] and stock["slots"] and stock["eq"] and stock["lt"] and stock["trio"]


def test_a_corrupt_or_foreign_file_is_an_empty_cache(tmp_path: Path) -> None:
    path = Path(_probe(tmp_path)["path"])
    for junk in (b"", b"\x00" * 3, b"not a marshal file at all", path.read_bytes()[:4] + b"\xff" * 64):
        path.write_bytes(junk)
        got = _probe(tmp_path)
        assert got["result"]["frozen"] and got["stats"]["reused"] == 0
    # a cache of another Python (another magic number) is not read
    data = path.read_bytes()
    path.write_bytes(b"\x00\x00" + data[2:])
    assert _probe(tmp_path)["stats"]["reused"] == 0


def test_nothing_is_written_where_bytecode_must_not_be(tmp_path: Path) -> None:
    got = _probe(tmp_path, PYTHONDONTWRITEBYTECODE="1")
    assert got["stats"]["compiled"] > 0 and not Path(got["path"]).exists()
    # an unwritable place: the start still works
    blocker = tmp_path / "file"
    blocker.write_text("")
    got = _probe(blocker / "sub")
    assert got["result"]["frozen"] and not Path(got["path"]).exists()


def test_warming_fills_the_cache_for_the_cli(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPYCACHEPREFIX": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-m", "actors._gencache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, env=env, check=False)
    assert done.returncode == 0, done.stderr
    assert _probe(tmp_path)["stats"]["reused"] > 20  # like compileall, it writes whatever the environment says
