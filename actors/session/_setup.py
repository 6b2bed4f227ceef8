"""What a session is started with (``SessionSetup``), and the wrapping of event messages into ``Event``s.

Data below behaviour: the runtime, the session's mixins and the actor import this module; it imports none of
them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from actors.core import ChildSpec, EventLog
from actors.turn import TaskRunner, builtin_runner
from protos.supervisor.v1 import config_pb2, events_pb2

__all__ = ["SessionSetup", "event_for", "is_delta"]

_EVENT_FIELDS: dict[str, str] = {}


def _event_fields() -> dict[str, str]:
    if not _EVENT_FIELDS:
        for f in events_pb2.Event.DESCRIPTOR.oneofs_by_name["msg"].fields:
            if f.message_type is not None:
                _EVENT_FIELDS[f.message_type.full_name] = f.name
    return _EVENT_FIELDS


def is_delta(event: events_pb2.Event) -> bool:
    """Whether ``event`` is not relayed to a parent: a streamed delta (it would multiply the parent's log), or
    a conversation entry (a parent's log holds its own conversation only)."""
    kind = event.WhichOneof("msg")
    return kind in ("exec_output_delta", "history_item") or (kind == "agent_message" and event.agent_message.delta)


def event_for(msg: Message, *, task_id: str = "", agent_path: str = "", traceparent: str = "") -> events_pb2.Event:
    """Wrap an event message (any type in ``Event.msg``) into an unstamped ``Event``."""
    name = _event_fields().get(msg.DESCRIPTOR.full_name)
    if name is None:
        raise TypeError(f"{msg.DESCRIPTOR.full_name} is not an Event payload")
    event = events_pb2.Event(task_id=task_id, agent_path=agent_path, traceparent=traceparent)
    getattr(event, name).CopyFrom(msg)
    return event


@dataclass
class SessionSetup:
    """What a session is started with (built by the runtime)."""

    session_id: str
    start_kind: str  # "new" | "resume" | "fork"
    configuration: config_pb2.SessionConfiguration
    constraints: config_pb2.Constraints
    log: EventLog
    forked_from: str = ""
    fork_seq: int = -1
    window_generation: int = 0
    history: list[events_pb2.Event] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    deprecations: list[tuple[str, str]] = field(default_factory=list)
    children: list[ChildSpec] = field(default_factory=list)
    task_runner: TaskRunner = builtin_runner
    start_traceparent: str = ""
    agent_path: str = "/root"
    on_exit: Callable[[str], None] | None = None
    services: dict[str, Any] = field(default_factory=dict)
    #: A subagent's events are also relayed to its parent's log through this (the parent's ``relay``).
    relay: Callable[[events_pb2.Event], None] | None = None
