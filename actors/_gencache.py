"""A bytecode cache for the methods that ``dataclasses`` and ``attrs`` generate while modules import.

Each ``@dataclass`` builds its ``__init__``, ``__repr__``, ``__eq__``, ``__hash__`` (and, frozen, its
``__setattr__``/``__delattr__``) as Python source and compiles it; ``attrs`` (under trio) does the same. On the
``run`` path that compiling was a sixth of the process's life (83 dataclasses, ~50 ms, measured with
``bench/bench_imports.py``; a frozen dataclass costs ~0.7 ms, ~0.09 ms with its code cached). Python caches a
module's bytecode in ``__pycache__``; this caches the generated code beside it, keyed by the exact source text
(and file name and mode), so a hit is the code ``compile`` would have returned and a changed class is a miss.
One exception: attrs writes into a hashable class's ``__hash__`` the hash of a name, which changes with each
process's hash seed; that number is masked in the key and swapped into the cached code's constants on a hit.

Contract:
- ``install()`` (the process's entry point calls it once, before importing what defines dataclasses; a library
  import never changes global state) loads the cache and routes the ``compile``/``exec`` of ``dataclasses`` and
  ``attr._make`` (patched when it is imported) through it. Only string sources with the plain signature are
  cached; anything else goes to the builtin untouched.
- ``save()`` writes the cache when this process compiled something new (atomically: a temporary file renamed
  over it), unless ``sys.dont_write_bytecode`` says not to write bytecode, as for ``.pyc`` files. Its place is
  the one Python gives this module's ``.pyc`` (``__pycache__`` or ``sys.pycache_prefix``), suffix ``.gen``.
- ``python -m actors._gencache [MODULE...]`` fills it ahead of time, as ``compileall`` does for ``.pyc``
  files (and, like it, whatever ``PYTHONDONTWRITEBYTECODE`` says): it imports the modules (default
  ``WARM_MODULES``: what the CLI's commands load) and saves.
- A missing, unreadable or foreign file (another Python's magic number) is an empty cache; write errors are
  ignored: the cache can make start-up faster, never fail it.
"""

from __future__ import annotations

import builtins
import marshal
import os
import sys
from types import CodeType
from typing import Any

__all__ = ["cache_path", "install", "save", "stats"]

#: What ``python -m actors._gencache`` imports by default: the modules `run`, `exec` and `serve` load.
WARM_MODULES = ("supervisor", "actors.runtime", "actors.cli", "actors.providers.openai_provider",
                "actors.mcp", "actors.gateway")
#: Entries kept at most; past it a save keeps only what this process used.
MAX_ENTRIES = 4096
_PATCHED_AFTER_IMPORT = "attr._make"
#: attrs' names for a class's generated code and for the string whose hash its ``__hash__`` mixes in.
_ATTRS_GENERATED = "<attrs generated "
_ATTRS_HASH = "<attrs generated hash "
_ATTRS_HASH_INDENT = "        "
#: What stands for that hash in a cache key (not a Python literal, so never in real source at that place).
_TYPE_HASH_MARK = "<type hash>"
#: Written after Python's magic number: the layout of the entries.
_FORMAT = b"gen2"

_Key = tuple[str, str, str]
#: Entries as loaded (marshalled bytes, unmarshalled on first use) or in use: (attrs type hash or 0, code).
_cache: dict[_Key, bytes | tuple[int, CodeType]] = {}
_used: set[_Key] = set()
_state = {"installed": False, "dirty": False, "finding": False}
_counts = {"reused": 0, "compiled": 0}
_builtin_compile = builtins.compile
_builtin_exec = builtins.exec


def _magic() -> bytes:
    from importlib.util import MAGIC_NUMBER

    return MAGIC_NUMBER


def cache_path() -> str | None:
    """Where the cache lives (beside this module's ``.pyc``), or None when Python keeps no bytecode cache."""
    from importlib.util import cache_from_source

    try:
        return cache_from_source(__file__).removesuffix(".pyc") + ".gen"
    except NotImplementedError:  # no cache_tag: this Python writes no bytecode
        return None


def _attrs_type_hash(source: str, filename: str) -> int | None:
    """The per-process constant attrs writes into a hashable class's ``__hash__`` (found in ``source``)."""
    if not filename.startswith(_ATTRS_GENERATED):
        return None
    _, _, name = filename[len(_ATTRS_GENERATED):].partition(" ")  # "<attrs generated LABEL module.Class>"
    value = hash(_ATTRS_HASH + name)  # as attrs computes it: the str hash of its "hash" name for the class
    return value if f"{_ATTRS_HASH_INDENT}{value}," in source else None


def _with_constant(code: CodeType, old: int, new: int) -> CodeType:
    """``code`` with the int constant ``old`` replaced by ``new``, in nested code objects too."""
    consts = tuple(new if type(c) is int and c == old else _with_constant(c, old, new) if isinstance(c, CodeType)
                   else c for c in code.co_consts)
    return code.replace(co_consts=consts)


def _compile(source: Any, filename: Any, mode: str, *args: Any, **kwargs: Any) -> Any:
    if args or kwargs or not isinstance(source, str) or not isinstance(filename, str):
        return _builtin_compile(source, filename, mode, *args, **kwargs)
    type_hash = _attrs_type_hash(source, filename)
    key_source = source if type_hash is None else source.replace(
        f"{_ATTRS_HASH_INDENT}{type_hash},", f"{_ATTRS_HASH_INDENT}{_TYPE_HASH_MARK},")
    key = (key_source, filename, mode)
    entry = _cache.get(key)
    if isinstance(entry, bytes):
        try:
            entry = _cache[key] = marshal.loads(entry)
        except (ValueError, EOFError, TypeError):
            entry = None
    code: CodeType | None = None
    if isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], CodeType):
        seen_hash, code = entry
        if type_hash is not None and seen_hash != type_hash:  # another process's hash seed
            code = _with_constant(code, seen_hash, type_hash)
            _cache[key] = (type_hash, code)
        _counts["reused"] += 1
    if code is None:
        code = _builtin_compile(source, filename, mode)
        _cache[key] = (type_hash or 0, code)
        _state["dirty"] = True
        _counts["compiled"] += 1
    _used.add(key)
    return code


def _exec(source: Any, globals: Any = None, locals: Any = None, /, **kwargs: Any) -> None:
    if globals is None:  # the builtin would run in its caller's namespace: that is our caller's
        frame = sys._getframe(1)
        globals, locals = frame.f_globals, frame.f_locals if locals is None else locals
    if isinstance(source, str) and not kwargs:
        source = _compile(source, "<string>", "exec")
    _builtin_exec(source, globals, locals, **kwargs)


class _PatchAfterImport:
    """A meta-path finder that patches ``attr._make`` once it has loaded (attrs is imported by trio, later)."""

    @classmethod
    def find_spec(cls, name: str, path: Any = None, target: Any = None) -> Any:
        if name != _PATCHED_AFTER_IMPORT or _state["finding"]:
            return None
        _state["finding"] = True  # the other finders may call back into the meta path
        try:
            return cls._find(name, path, target)
        finally:
            _state["finding"] = False

    @classmethod
    def _find(cls, name: str, path: Any, target: Any) -> Any:
        for finder in sys.meta_path:
            if finder is cls or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                spec.loader.exec_module = _patching(spec.loader.exec_module)  # type: ignore[method-assign]
                return spec
        return None


def stats() -> dict[str, int]:
    """This process's figures: code objects ``reused`` from the cache, ``compiled`` anew, ``entries`` held."""
    return {**_counts, "entries": len(_cache)}


def _patching(load: Any) -> Any:
    """``load`` (a loader's ``exec_module``) with the module's ``compile`` pointing at the cache from the start
    (a module global shadows the builtin, and attrs' own classes are made while its module body runs)."""

    def exec_module(module: Any) -> None:
        module.compile = _compile
        load(module)

    return exec_module


def _load(path: str) -> None:
    try:
        with open(path, "rb") as f:
            data = f.read()
        head = _magic() + _FORMAT
        if not data.startswith(head):
            return
        entries = marshal.loads(data[len(head):])
    except (OSError, ValueError, EOFError, TypeError):
        return
    if isinstance(entries, dict):
        _cache.update((k, v) for k, v in entries.items() if isinstance(k, tuple) and isinstance(v, bytes))


def install() -> None:
    """Load the cache and route generated code through it (idempotent)."""
    if _state["installed"]:
        return
    _state["installed"] = True
    path = cache_path()
    if path is not None:
        _load(path)
    import dataclasses

    if "exec" in vars(dataclasses):  # another copy of this module (run as __main__) got there first
        return
    # module globals shadow builtins: dataclasses' own `exec(txt, globals, ns)` now finds ours
    dataclasses.exec = _exec  # type: ignore[attr-defined]
    attrs_make = sys.modules.get(_PATCHED_AFTER_IMPORT)
    if attrs_make is not None:
        attrs_make.compile = _compile  # type: ignore[attr-defined]
    else:
        sys.meta_path.insert(0, _PatchAfterImport)  # type: ignore[arg-type]


def _entries_to_keep() -> dict[_Key, bytes]:
    """What a save writes: what this process used, and what it loaded of others unless superseded.

    attrs names each class's generated code by a file name of its own: a used entry supersedes the loaded ones
    of its file name (a class that changed does not leave its old code behind); dataclasses' code all has the
    name ``<string>``.
    """
    superseded = {(f, m) for _, f, m in _used if f != "<string>"}
    keep = [k for k in _cache if k in _used or (k[1], k[2]) not in superseded]
    if len(keep) > MAX_ENTRIES:
        keep = list(_used)
    return {k: v if isinstance(v := _cache[k], bytes) else marshal.dumps(v) for k in keep}


def save(*, force: bool = False) -> None:
    """Write the cache if this process compiled something new (and bytecode may be written, or ``force``)."""
    if not _state["dirty"] or (sys.dont_write_bytecode and not force):
        return
    path = cache_path()
    if path is None:
        return
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(_magic() + _FORMAT + marshal.dumps(_entries_to_keep()))
        os.replace(tmp, path)
    except (OSError, ValueError):
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return
    _state["dirty"] = False


def main(argv: list[str]) -> int:
    """Import ``argv``'s modules (default ``WARM_MODULES``) with the cache installed, then save it."""
    import importlib

    install()
    for name in argv or WARM_MODULES:
        importlib.import_module(name)
    save(force=True)
    print(f"{cache_path()}: {len(_cache)} generated code objects")
    return 0


if __name__ == "__main__":
    from actors._gencache import main as _main  # the importable copy: the one supervisor.py's imports share

    raise SystemExit(_main(sys.argv[1:]))
