"""What a session task is: an async function on the shared trio loop, given a ``TaskContext``.

A session runs at most one task at a time. The turn loop (model + tools) is one such runner; the built-in
runner below needs no model and serves tests and the offline CLI. This module is the contract: it imports
nothing of the turn wing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from google.protobuf.message import Message

from protos.supervisor.v1 import config_pb2, events_pb2

__all__ = ["TaskContext", "TaskResult", "TaskRunner", "builtin_runner"]


@dataclass
class TaskContext:
    """Everything a running task may use. ``emit`` is thread-safe and stamps the task id."""

    session_id: str
    task_id: str
    input: str
    configuration: config_pb2.SessionConfiguration
    traceparent: str
    emit: Callable[[Message], None]
    services: dict[str, Any] = field(default_factory=dict)
    history: list[events_pb2.Event] = field(default_factory=list)
    #: Per-session mutable state that survives across tasks (the turn loop keeps "conversation" here).
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskResult:
    """How a task ended normally."""

    last_agent_message: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_output_tokens: int = 0


TaskRunner = Callable[[TaskContext], Awaitable[TaskResult]]

#: Longest pause the built-in runner's ``sleep N`` accepts.
BUILTIN_MAX_SLEEP_S = 3600.0


async def builtin_runner(ctx: TaskContext) -> TaskResult:
    """A model-free task: ``sleep N`` waits N seconds, ``fail`` raises, anything else is echoed back."""
    words = ctx.input.split()
    if words[:1] == ["sleep"] and len(words) == 2:
        await trio.sleep(min(float(words[1]), BUILTIN_MAX_SLEEP_S))
        text = f"slept {words[1]}s"
    elif words[:1] == ["fail"]:
        raise RuntimeError(" ".join(words[1:]) or "task failed on request")
    else:
        text = f"echo: {ctx.input}"
    ctx.emit(events_pb2.HistoryItem(role="user", content=ctx.input))
    ctx.emit(events_pb2.AgentMessage(text=text))
    ctx.emit(events_pb2.HistoryItem(role="assistant", content=text))
    tokens = max(1, len(ctx.input) // 4)
    return TaskResult(last_agent_message=text, input_tokens=tokens, output_tokens=max(1, len(text) // 4))
