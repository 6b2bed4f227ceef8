"""The house rules of ``actors/`` (docs/design.md, "Layout"), checked on the source with ``ast``.

- no import circle among the modules of ``actors`` (top-level imports; ``TYPE_CHECKING`` blocks count too);
- a module outside wing W imports only W's face (``actors.W``), never ``actors.W._private``;
- a name imported from a face is in that face's ``__all__``;
- a module inside a wing imports its siblings directly, never its own face;
- the floors: ``core`` imports no wing; mcp/proxy/shell/hooks import no other wing; agents and turn never import
  session; nothing but runtime and gateway import runtime;
- function-level imports of the project's own modules stay few (each needs a reason), and only one module
  touches pykka's internals.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ACTORS = ROOT / "actors"
#: Wings that sit side by side on one floor and must not know each other.
LEAF_WINGS = ("mcp", "proxy", "shell", "hooks")
#: Most function-level imports of the project's own modules allowed (each lazy for a stated reason).
MAX_FUNCTION_LEVEL_IMPORTS = 12


@dataclass(frozen=True)
class Import:
    """One ``import``/``from ... import`` of an ``actors`` module."""

    source: str  # importing module, dotted
    target: str  # imported module, dotted
    names: tuple[str, ...]
    line: int
    in_function: bool


def module_name(path: Path, root: Path) -> str:
    """``actors/session/_actor.py`` -> ``actors.session._actor``; a package's ``__init__`` -> the package."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path) -> dict[str, Path]:
    """Every module of ``actors`` under ``root``."""
    return {module_name(p, root): p for p in sorted((root / "actors").rglob("*.py"))}


def imports(root: Path) -> Iterator[Import]:
    """Every import of an ``actors`` module by an ``actors`` module, resolved to the module it loads."""
    known = modules(root)
    for source, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        in_function: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                in_function.update(id(inner) for inner in ast.walk(node) if inner is not node)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if not node.module.startswith("actors"):
                    continue
                plain = tuple(a.name for a in node.names if f"{node.module}.{a.name}" not in known)
                for a in node.names:  # ``from actors.session import _specs`` loads a module
                    if f"{node.module}.{a.name}" in known:
                        yield Import(source, f"{node.module}.{a.name}", (), node.lineno, id(node) in in_function)
                if plain:
                    yield Import(source, node.module, plain, node.lineno, id(node) in in_function)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("actors"):
                        yield Import(source, a.name, (), node.lineno, id(node) in in_function)


def wing_of(module: str) -> str | None:
    """The wing (package directly under ``actors``) a module belongs to, or None for ``actors.gateway`` & co."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (ACTORS / parts[1]).is_dir()) else None


def cycles(root: Path) -> list[list[str]]:
    """Strongly connected components (size > 1) of the module import graph."""
    graph: dict[str, set[str]] = {m: set() for m in modules(root)}
    for imp in imports(root):
        if imp.target in graph:
            graph[imp.source].add(imp.target)
        # importing ``actors.x.y`` also runs ``actors.x``'s face
        parent = imp.target.rpartition(".")[0]
        if parent in graph and parent != "actors" and not imp.source.startswith(parent + "."):
            graph[imp.source].add(parent)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def face_exports(root: Path, wing: str) -> set[str]:
    """The ``__all__`` of ``actors/<wing>/__init__.py``."""
    tree = ast.parse((root / "actors" / wing / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def violations(root: Path) -> list[str]:
    """Every broken rule, as ``module:line: what``."""
    out = [f"import circle: {' -> '.join(c)}" for c in cycles(root)]
    wings = {p.name for p in (root / "actors").iterdir() if (p / "__init__.py").exists()}
    exports = {w: face_exports(root, w) for w in wings}
    for imp in imports(root):
        src_wing, dst_wing = wing_of(imp.source), wing_of(imp.target)
        where = f"{imp.source}:{imp.line}"
        private = dst_wing is not None and imp.target != f"actors.{dst_wing}"
        if private and src_wing != dst_wing:
            out.append(f"{where}: imports {imp.target}, a private module of wing {dst_wing!r} (use its face)")
        if dst_wing is not None and imp.target == f"actors.{dst_wing}":
            if src_wing == dst_wing and imp.source != imp.target:
                out.append(f"{where}: imports its own wing's face {imp.target} (import the sibling module)")
            elif src_wing != dst_wing:
                missing = sorted(set(imp.names) - exports[dst_wing])
                if missing:
                    out.append(f"{where}: {missing} not in {imp.target}.__all__")
        if src_wing == "core" and dst_wing not in (None, "core") and dst_wing in wings:
            out.append(f"{where}: core imports wing {dst_wing!r}")
        if src_wing in LEAF_WINGS and dst_wing in wings and dst_wing not in (src_wing, "core", "config", "providers"):
            out.append(f"{where}: wing {src_wing!r} imports wing {dst_wing!r}")
        if src_wing in ("agents", "turn") and dst_wing == "session":
            out.append(f"{where}: {src_wing} imports session")
        if imp.target == "actors.runtime" and imp.source not in ("actors.gateway", "actors"):
            out.append(f"{where}: imports the runtime (only the gateway may)")
    lazy = [imp for imp in imports(root) if imp.in_function]
    if len(lazy) > MAX_FUNCTION_LEVEL_IMPORTS:
        listed = ", ".join(f"{i.source}:{i.line}" for i in lazy)
        out.append(f"{len(lazy)} function-level imports of actors modules "
                   f"(at most {MAX_FUNCTION_LEVEL_IMPORTS}): {listed}")
    pykka_internal = sorted({module_name(p, root) for p in (root / "actors").rglob("*.py")
                             if "pykka._" in p.read_text()})
    if len(pykka_internal) > 1:
        out.append(f"pykka internals used in {pykka_internal} (only actors.core._supervision may)")
    return out


def test_the_house_rules_hold() -> None:
    assert violations(ROOT) == []


def test_counts_of_the_layout() -> None:
    packages = [p for p in ACTORS.iterdir() if (p / "__init__.py").exists()]
    flat = [p for p in ACTORS.glob("*.py")]
    assert len(packages) >= 9, packages
    assert len(flat) <= 6, flat


@pytest.mark.parametrize("wing", sorted(p.name for p in ACTORS.iterdir() if (p / "__init__.py").exists()))
def test_each_face_exports_what_it_imports(wing: str) -> None:
    """Every name in a face's ``__all__`` is importable from it (a stale ``__all__`` fails here)."""
    module = __import__(f"actors.{wing}", fromlist=["__all__"])
    for name in getattr(module, "__all__", []):
        assert hasattr(module, name), f"actors.{wing}.__all__ lists {name!r}, which it does not define"


def _copy_actors(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    for path in ACTORS.rglob("*.py"):
        target = root / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    return root


def test_the_check_fails_on_a_circle(tmp_path: Path) -> None:
    root = _copy_actors(tmp_path)
    config = root / "actors" / "config" / "_apply.py"
    config.write_text("from actors.config._load import load_config\n" + config.read_text())
    assert any("import circle" in v for v in violations(root))


def test_the_check_fails_on_a_private_import_across_wings(tmp_path: Path) -> None:
    root = _copy_actors(tmp_path)
    turn = root / "actors" / "turn" / "_task.py"
    turn.write_text("from actors.shell._exec import CommandRunner\n" + turn.read_text())
    assert any("private module of wing 'shell'" in v for v in violations(root))


def test_the_check_fails_on_a_name_outside_all(tmp_path: Path) -> None:
    root = _copy_actors(tmp_path)
    turn = root / "actors" / "turn" / "_task.py"
    turn.write_text("from actors.shell import SNAPSHOT_WAIT_S\n" + turn.read_text())
    assert any("not in actors.shell.__all__" in v for v in violations(root))
