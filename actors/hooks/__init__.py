"""The hooks wing: lifecycle hooks (Claude-Code compatible), their discovery, runner and actor.
"""

from __future__ import annotations

from actors.hooks._actor import HooksActor, hooks_child_spec
from actors.hooks._discovery import discover
from actors.hooks._model import HookRegistry
from actors.hooks._output import AggregateResult
from actors.hooks._runner import HookRunner, run_hooks

__all__ = [
    "AggregateResult",
    "HookRegistry",
    "HookRunner",
    "HooksActor",
    "discover",
    "hooks_child_spec",
    "run_hooks",
]
