"""Terminal views used by ``supervisor.py``: the JSONL translator, the event renderer, the live progress view.
"""

from __future__ import annotations

from actors.cli._jsonl import JsonlTranslator
from actors.cli._progress import ProgressView
from actors.cli._render import render_event

__all__ = [
    "JsonlTranslator",
    "ProgressView",
    "render_event",
]
