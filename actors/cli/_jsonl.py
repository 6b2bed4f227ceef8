"""Session events in the shape of ``codex exec --json`` (thread/turn/item JSONL), so its scripts work on us.

Shape: ``thread.started`` -> ``turn.started`` -> ``item.started`` / ``item.updated`` / ``item.completed`` ->
``turn.completed`` (with usage) or ``turn.failed``; ``error`` for session errors. Events with no counterpart
there are left out unless ``verbose``, in which case they appear as ``{"type": "event.<kind>", ...}``.
"""

from __future__ import annotations

from typing import Any

from protos.supervisor.v1 import events_pb2

__all__ = ["JsonlTranslator"]


class JsonlTranslator:
    """Stateful translation of one session's events (item ids are numbered per session)."""

    def __init__(self, *, verbose: bool = False) -> None:
        self.verbose = verbose
        self._item = 0
        self._open_exec: dict[str, str] = {}
        self._commands: dict[str, str] = {}

    def _next_item(self) -> str:
        item_id = f"item_{self._item}"
        self._item += 1
        return item_id

    def translate(self, event: events_pb2.Event) -> list[dict[str, Any]]:
        """The JSONL objects for one event (possibly none)."""
        kind = event.WhichOneof("msg")
        out: list[dict[str, Any]] = []
        relayed = bool(event.agent_path) and event.agent_path != "/root"
        if relayed and kind in ("session_configured", "turn_started", "turn_completed", "turn_aborted"):
            # a subagent's thread and turns are its own; the parent's stream shows its items only
            if self.verbose:
                out.append({"type": f"event.{kind}", "seq": event.seq, "agent_path": event.agent_path,
                            "session_id": event.session_id})
            return out
        if kind == "session_configured":
            out.append({"type": "thread.started", "thread_id": event.session_id})
        elif kind == "turn_started":
            out.append({"type": "turn.started"})
        elif kind == "agent_message" and not event.agent_message.delta:
            item = {"id": self._next_item(), "type": "agent_message", "text": event.agent_message.text}
            if event.agent_path and event.agent_path != "/root":
                item["agent_path"] = event.agent_path
            out.append({"type": "item.completed", "item": item})
        elif kind == "turn_completed":
            usage = event.turn_completed.usage
            out.append({"type": "turn.completed", "usage": {
                "input_tokens": usage.input_tokens, "cached_input_tokens": 0, "output_tokens": usage.output_tokens,
            }})
        elif kind == "turn_aborted":
            out.append({"type": "turn.failed", "error": {"message": event.turn_aborted.reason}})
        elif kind == "error":
            out.append({"type": "error", "message": event.error.message})
        else:
            extra = self._extra(event, kind or "")
            if extra is not None:
                out.append(extra)
            elif self.verbose:
                from google.protobuf.json_format import MessageToDict

                body = MessageToDict(getattr(event, kind or ""), preserving_proto_field_name=True)
                out.append({"type": f"event.{kind}", "seq": event.seq, **body})
        return out

    def _extra(self, event: events_pb2.Event, kind: str) -> dict[str, Any] | None:
        """Items for tool-like events, recognised by field names so feature protos can grow freely."""
        if kind == "exec_begin":
            msg = event.exec_begin
            item_id = self._next_item()
            self._open_exec[msg.call_id] = item_id
            self._commands[msg.call_id] = msg.command
            return {"type": "item.started", "item": {"id": item_id, "type": "command_execution",
                                                     "command": msg.command, "aggregated_output": "",
                                                     "exit_code": None, "status": "in_progress"}}
        if kind == "exec_end":
            end = event.exec_end
            item_id = self._open_exec.pop(end.call_id, "") or self._next_item()
            output = (end.head + end.tail).decode("utf-8", "replace")
            return {"type": "item.completed", "item": {
                "id": item_id, "type": "command_execution", "command": self._commands.pop(end.call_id, ""),
                "aggregated_output": output, "exit_code": end.exit_code,
                "status": "completed" if end.exit_code == 0 else "failed"}}
        return None
