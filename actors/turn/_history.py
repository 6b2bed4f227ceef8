"""The conversation as log events: each entry the turn loop adds is logged as a ``HistoryItem``, and resume,
fork and ``fork_context`` rebuild the model's context from those events alone, in log order.

A ``ContextCompacted`` event starts the conversation again (the compacted entries follow it as
``HistoryItem``s), and the number of them is the window generation. Only a session's own events count
(when its id is given): relayed copies of a subagent's events carry the subagent's session id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from actors.providers import Message, ToolCall
from protos.supervisor.v1 import events_pb2

__all__ = ["current_window", "history_item", "messages_from_history", "window_generation"]

_ROLES = ("system", "user", "assistant", "tool")


def history_item(message: Message) -> events_pb2.HistoryItem:
    """The log event for one conversation entry."""
    return events_pb2.HistoryItem(
        role=message.role, content=message.content, tool_call_id=message.tool_call_id or "",
        tool_calls=[events_pb2.HistoryToolCall(call_id=c.call_id, name=c.name,
                                               arguments_json=json.dumps(c.arguments, ensure_ascii=False))
                    for c in message.tool_calls],
    )


def _message(item: events_pb2.HistoryItem) -> Message | None:
    if item.role not in _ROLES:
        return None
    calls = []
    for call in item.tool_calls:
        try:
            arguments = json.loads(call.arguments_json or "{}")
        except ValueError:
            arguments = {}
        calls.append(ToolCall(call.call_id, call.name, arguments if isinstance(arguments, dict) else {}))
    return Message(item.role, item.content, item.tool_call_id or None, calls)  # type: ignore[arg-type]


def current_window(events: Iterable[events_pb2.Event], session_ids: Iterable[str] = ()) -> list[events_pb2.Event]:
    """The ``HistoryItem`` events of the current context window: those after the last ``ContextCompacted``
    (of ``session_ids`` only, when given)."""
    own = set(session_ids)
    out: list[events_pb2.Event] = []
    for event in events:
        kind = event.WhichOneof("msg")
        if kind not in ("history_item", "compacted") or (own and event.session_id not in own):
            continue
        if kind == "compacted":
            out.clear()
        else:
            out.append(event)
    return out


def messages_from_history(events: Iterable[events_pb2.Event], session_ids: Iterable[str] = ()) -> list[Message]:
    """The conversation the logged events describe: the current window's ``HistoryItem``s."""
    out: list[Message] = []
    for event in current_window(events, session_ids):
        message = _message(event.history_item)
        if message is not None:
            out.append(message)
    return out


def window_generation(events: Iterable[events_pb2.Event], session_id: str) -> int:
    """How many times the session's own conversation was compacted (its ``ContextCompacted`` events)."""
    return sum(1 for e in events if e.WhichOneof("msg") == "compacted" and e.session_id == session_id)
