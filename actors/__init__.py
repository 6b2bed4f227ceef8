"""session-supervisor's runtime: sessions as supervised pykka actors, their children, the gRPC gateway.

The public surface is listed in ``__all__``. Names load lazily so that importing one submodule (the CLI's
``run`` path, a child process) does not pay for all of them.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ChildSpec",
    "Restart",
    "RuntimeOptions",
    "SessionRuntime",
    "SessionSupervisor",
    "Strategy",
    "SupervisedActor",
    "Supervisor",
    "get_host",
]

_WHERE = {
    "ChildSpec": "actors.core",
    "Restart": "actors.core",
    "Strategy": "actors.core",
    "SupervisedActor": "actors.core",
    "Supervisor": "actors.core",
    "RuntimeOptions": "actors.runtime",
    "SessionRuntime": "actors.runtime",
    "SessionSupervisor": "actors.session",
    "get_host": "actors.core",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'actors' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
