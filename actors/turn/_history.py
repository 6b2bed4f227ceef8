"""The conversation as log events: each entry the turn loop adds is logged as a ``HistoryItem``, and resume,
fork and ``fork_context`` rebuild the model's context from those events alone, in log order.

Only a session's own items count: relayed copies of a subagent's events carry the subagent's session id.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from actors.providers import Message, ToolCall
from protos.supervisor.v1 import events_pb2

__all__ = ["history_item", "messages_from_history"]

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


def messages_from_history(events: Iterable[events_pb2.Event], session_ids: Iterable[str] = ()) -> list[Message]:
    """The conversation the logged ``HistoryItem``s describe (of ``session_ids`` only, when given)."""
    own = set(session_ids)
    out: list[Message] = []
    for event in events:
        if event.WhichOneof("msg") != "history_item" or (own and event.session_id not in own):
            continue
        message = _message(event.history_item)
        if message is not None:
            out.append(message)
    return out
