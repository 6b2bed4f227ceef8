"""Terminal views used by ``supervisor.py``: the JSONL translator, the event renderer, the live progress view.

This face is lazy: a name loads its module on first use;
each command of ``supervisor.py`` needs one view (cold start).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from actors.cli._attach import AttachedRuntime, serve_channel
    from actors.cli._exec import exec_main
    from actors.cli._jsonl import JsonlTranslator
    from actors.cli._progress import ProgressView
    from actors.cli._render import render_event

_WHERE = {
    "AttachedRuntime": "actors.cli._attach",
    "serve_channel": "actors.cli._attach",
    "exec_main": "actors.cli._exec",
    "JsonlTranslator": "actors.cli._jsonl",
    "ProgressView": "actors.cli._progress",
    "render_event": "actors.cli._render",
}

__all__ = [
    "AttachedRuntime",
    "JsonlTranslator",
    "ProgressView",
    "exec_main",
    "render_event",
    "serve_channel",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
