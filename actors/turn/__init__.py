"""Tasks and the turn loop: the task contract, the model + tools loop, the tool router.
"""

from __future__ import annotations

from actors.turn._builtin import router_for
from actors.turn._compact import COMPACT_COMMAND, COMPACT_PROMPT, SUMMARY_PREFIX
from actors.turn._history import current_window, window_generation
from actors.turn._loop import close_turn_state, default_runner, make_turn_runner
from actors.turn._router import ToolError, ToolOutput, ToolRouter
from actors.turn._task import TaskContext, TaskResult, TaskRunner, builtin_runner

__all__ = [
    "COMPACT_COMMAND",
    "COMPACT_PROMPT",
    "SUMMARY_PREFIX",
    "TaskContext",
    "TaskResult",
    "TaskRunner",
    "ToolError",
    "ToolOutput",
    "ToolRouter",
    "builtin_runner",
    "close_turn_state",
    "current_window",
    "default_runner",
    "make_turn_runner",
    "router_for",
    "window_generation",
]
