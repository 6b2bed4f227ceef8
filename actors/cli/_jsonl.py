"""Session events in the shape of ``codex exec --json`` (thread/turn/item JSONL), so its scripts work on us.

Shape (Codex 0.169, recorded in ``tests/fixtures/codex_0169/``): ``thread.started`` -> ``turn.started`` ->
``item.started`` / ``item.updated`` / ``item.completed`` -> ``turn.completed`` (with usage) or ``error`` +
``turn.failed``. Items: ``agent_message``, ``reasoning``, ``command_execution``, ``file_change``,
``mcp_tool_call``, ``collab_tool_call`` (one per spawn, send, wait, close, resume), ``todo_list`` (started at
the first plan of a turn, updated by the next ones, completed when the turn ends) and ``error`` (a warning).
Item ids are ``item_N``, numbered per translator (one process), as Codex numbers them. ``turn.completed.usage``
has Codex's five fields; with ``codex=True`` it is the thread's total so far (Codex's ``total_token_usage``:
every turn of the thread, those before a resume too, given as ``usage_before``), else the turn's own.

Tool items come from the tools' own events (``PatchApplyBegin``/``End``, ``PlanUpdated``,
``CollabToolCallBegin``/``End``, ``McpToolCallBegin``/``End``), recognised by message type so this module
needs no proto of its own. An MCP or multi-agent call with no such event (a runtime whose tools do not emit
them) is rebuilt from its ``ToolCallBegin``/``ToolCallEnd`` pair and the ``AgentSpawned`` /
``AgentStatusChanged`` events, once the call has ended.

``codex=True`` prints exactly Codex's fields (a subagent's own items stay out of its parent's stream, as in
Codex). Otherwise a relayed subagent message carries ``agent_path``, and ``verbose`` adds the events with no
counterpart as ``{"type": "event.<kind>", ...}``.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from typing import Any

from protos.supervisor.v1 import agents_pb2, events_pb2

__all__ = ["JsonlTranslator"]

ROOT_PATH = "/root"
MCP_PREFIX = "mcp__"
MCP_SEPARATOR = "__"
#: The model's multi-agent tools and the name Codex's ``collab_tool_call`` item gives each.
COLLAB_TOOLS = {"spawn_agent": "spawn_agent", "send_input": "send_input", "wait_agent": "wait", "wait": "wait",
                "close_agent": "close_agent", "resume_agent": "resume_agent"}
#: Our agent statuses in Codex's vocabulary.
AGENT_STATUS = {agents_pb2.AGENT_STATUS_PENDING_INIT: "pending_init", agents_pb2.AGENT_STATUS_RUNNING: "running",
                agents_pb2.AGENT_STATUS_COMPLETED: "completed", agents_pb2.AGENT_STATUS_ERRORED: "errored",
                agents_pb2.AGENT_STATUS_CLOSED: "shutdown"}
FINAL_AGENT_STATUSES = ("completed", "errored", "shutdown")
FILE_CHANGE_KINDS = {1: "add", 2: "delete", 3: "update"}
PLAN_DONE = 3  # PlanStepStatus COMPLETED
#: Events of a subagent that its parent's stream never shows as its own.
SUBAGENT_SESSION_EVENTS = ("session_configured", "turn_started", "turn_completed", "turn_aborted")

Json = dict[str, Any]


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


USAGE_FIELDS = ("input_tokens", "cached_input_tokens", "cache_write_input_tokens", "output_tokens",
                "reasoning_output_tokens")


def _usage(usage: Any) -> Json:
    return {name: int(getattr(usage, name, 0)) for name in USAGE_FIELDS}


class JsonlTranslator:
    """Stateful translation of one session's events (item ids are numbered per translator)."""

    def __init__(self, *, verbose: bool = False, codex: bool = False, usage_before: Json | None = None) -> None:
        self.verbose = verbose
        self.codex = codex
        #: Codex reports the thread's usage so far at each turn's end (a resumed thread's earlier turns included):
        #: ``usage_before`` is that of the turns before this translator's.
        self._thread_usage = {name: int((usage_before or {}).get(name, 0)) for name in USAGE_FIELDS}
        self.thread_id = ""
        self._item = 0
        self._open: dict[str, Json] = {}  # call_id -> the item started for it
        self._dedicated: set[str] = set()  # call_ids whose tool emitted its own begin event
        self._calls: dict[str, tuple[str, str]] = {}  # call_id -> (tool name, arguments JSON)
        self._agents: dict[str, Json] = {}  # agent id -> {"status", "message"} as last reported
        self._plan: Json | None = None  # the turn's todo_list item
        self._by_type: dict[str, Callable[[Any], list[Json]]] = {
            "ExecBegin": self._exec_begin, "ExecEnd": self._exec_end,
            "ToolCallBegin": self._tool_begin, "ToolCallEnd": self._tool_end,
            "AgentSpawned": self._agent_seen, "AgentStatusChanged": self._agent_seen,
            "McpToolCallBegin": self._mcp_begin, "McpToolCallEnd": self._mcp_end,
            "CollabToolCallBegin": self._collab_begin, "CollabToolCallEnd": self._collab_end,
            "PatchApplyBegin": self._patch_begin, "PatchApplyEnd": self._patch_end,
            "PlanUpdated": self._plan_updated, "AgentReasoning": self._reasoning,
        }

    def _next_item(self) -> str:
        item_id = f"item_{self._item}"
        self._item += 1
        return item_id

    def translate(self, event: events_pb2.Event) -> list[Json]:
        """The JSONL objects for one event (possibly none)."""
        kind = event.WhichOneof("msg") or ""
        relayed = bool(event.agent_path) and event.agent_path != ROOT_PATH
        if relayed and (self.codex or kind in SUBAGENT_SESSION_EVENTS):
            if kind in ("agent_spawned", "agent_status_changed"):
                self._agent_seen(getattr(event, kind))  # a grandchild: its state still counts for waits
            # a subagent's thread, turns and items are its own; the parent's stream shows its own items only
            return [self._verbose(event, kind)] if self.verbose else []
        if kind == "session_configured":
            self.thread_id = self.thread_id or event.session_id
            return [{"type": "thread.started", "thread_id": event.session_id}]
        if kind == "turn_started":
            self._plan = None
            return [{"type": "turn.started"}]
        if kind == "agent_message":
            if event.agent_message.delta:
                return []
            item = {"id": self._next_item(), "type": "agent_message", "text": event.agent_message.text}
            if relayed:
                item["agent_path"] = event.agent_path
            return [{"type": "item.completed", "item": item}]
        if kind == "turn_completed":
            usage = _usage(event.turn_completed.usage)
            if self.codex:
                self._thread_usage = usage = {k: self._thread_usage[k] + usage[k] for k in USAGE_FIELDS}
            return [*self._close_plan(), {"type": "turn.completed", "usage": usage}]
        if kind == "turn_aborted":
            message = event.turn_aborted.reason
            return [*self._close_plan(), {"type": "error", "message": message},
                    {"type": "turn.failed", "error": {"message": message}}]
        if kind == "error":
            return [{"type": "error", "message": event.error.message}]
        if kind in ("warning", "deprecation_notice"):
            body = getattr(event, kind)
            text = body.message if kind == "warning" else f"{body.summary}\n{body.details}".strip()
            return [self._completed({"type": "error", "message": text})]
        msg = getattr(event, kind) if kind else None
        handler = self._by_type.get(type(msg).DESCRIPTOR.name) if msg is not None else None
        if handler is not None:
            return handler(msg)
        return [self._verbose(event, kind)] if self.verbose and kind else []

    # --- helpers -----------------------------------------------------------------------------------
    def _verbose(self, event: events_pb2.Event, kind: str) -> Json:
        from google.protobuf.json_format import MessageToDict  # --all-events only (cold start)

        body = MessageToDict(getattr(event, kind), preserving_proto_field_name=True) if kind else {}
        return {"type": f"event.{kind}", "seq": event.seq, "agent_path": event.agent_path,
                "session_id": event.session_id, **body}

    def _completed(self, item: Json) -> Json:
        return {"type": "item.completed", "item": {"id": self._next_item(), **item}}

    def _start(self, call_id: str, item: Json) -> list[Json]:
        item = {"id": self._next_item(), **item}
        self._open[call_id] = item
        return [{"type": "item.started", "item": dict(item)}]

    def _finish(self, call_id: str, fields: Json, fallback: Json) -> list[Json]:
        item = self._open.pop(call_id, None) or {"id": self._next_item(), **fallback}
        item.update(fields)
        return [{"type": "item.completed", "item": item}]

    # --- commands ----------------------------------------------------------------------------------
    def _exec_begin(self, msg: Any) -> list[Json]:
        # Codex shows the command as it ran: `/bin/bash -lc 'echo hi'`
        command = shlex.join(msg.command_argv) if self.codex and msg.command_argv else msg.command
        return self._start(msg.call_id, {"type": "command_execution", "command": command,
                                         "aggregated_output": "", "exit_code": None, "status": "in_progress"})

    def _exec_end(self, msg: Any) -> list[Json]:
        output = (msg.head + msg.tail).decode("utf-8", "replace")
        return self._finish(msg.call_id, {"aggregated_output": output, "exit_code": msg.exit_code,
                                          "status": "completed" if msg.exit_code == 0 else "failed"},
                            {"type": "command_execution", "command": ""})

    def _reasoning(self, msg: Any) -> list[Json]:
        if getattr(msg, "delta", False):
            return []
        return [self._completed({"type": "reasoning", "text": msg.text})]

    # --- MCP ---------------------------------------------------------------------------------------
    def _mcp_begin(self, msg: Any) -> list[Json]:
        self._dedicated.add(msg.call_id)
        return self._start(msg.call_id, {"type": "mcp_tool_call", "server": msg.server, "tool": msg.tool,
                                         "arguments": _parse_json(msg.arguments_json), "result": None,
                                         "error": None, "status": "in_progress"})

    def _mcp_end(self, msg: Any) -> list[Json]:
        result = _parse_json(msg.result_json)
        error = {"message": msg.error} if msg.error else None
        failed = bool(msg.error) or msg.is_error
        return self._finish(msg.call_id, {"result": None if msg.error else result, "error": error,
                                          "status": "failed" if failed else "completed"},
                            {"type": "mcp_tool_call", "server": msg.server, "tool": msg.tool, "arguments": None})

    # --- multi-agent -------------------------------------------------------------------------------
    def _agent_seen(self, msg: Any) -> list[Json]:
        info = msg.agent
        self._agents[info.agent_id] = {"status": AGENT_STATUS.get(info.status, "running"),
                                       "message": info.last_message or None}
        return []

    def _collab_item(self, msg: Any, receivers: list[str]) -> Json:
        return {"type": "collab_tool_call", "tool": msg.tool, "sender_thread_id": msg.sender_thread_id,
                "receiver_thread_ids": receivers, "prompt": msg.prompt or None}

    def _collab_begin(self, msg: Any) -> list[Json]:
        self._dedicated.add(msg.call_id)
        return self._start(msg.call_id, {**self._collab_item(msg, list(msg.receiver_thread_ids)),
                                         "agents_states": {}, "status": "in_progress"})

    def _collab_end(self, msg: Any) -> list[Json]:
        states = {agent: {"status": s.status, "message": s.message or None} for agent, s in msg.agents_states.items()}
        fields = {"receiver_thread_ids": list(msg.receiver_thread_ids), "agents_states": states,
                  "status": "completed" if msg.success else "failed"}
        return self._finish(msg.call_id, fields, self._collab_item(msg, []))

    # --- patches and plans -------------------------------------------------------------------------
    @staticmethod
    def _changes(changes: Any) -> list[Json]:
        return [{"path": c.path, "kind": FILE_CHANGE_KINDS.get(c.kind, "update")} for c in changes]

    def _patch_begin(self, msg: Any) -> list[Json]:
        return self._start(msg.call_id, {"type": "file_change", "changes": self._changes(msg.changes),
                                         "status": "in_progress"})

    def _patch_end(self, msg: Any) -> list[Json]:
        return self._finish(msg.call_id, {"status": "completed" if msg.success else "failed"},
                            {"type": "file_change", "changes": self._changes(msg.changes)})

    def _plan_updated(self, msg: Any) -> list[Json]:
        items = [{"text": step.step, "completed": step.status == PLAN_DONE} for step in msg.plan]
        if self._plan is None:
            self._plan = {"id": self._next_item(), "type": "todo_list", "items": items}
            return [{"type": "item.started", "item": dict(self._plan)}]
        self._plan["items"] = items
        return [{"type": "item.updated", "item": dict(self._plan)}]

    def _close_plan(self) -> list[Json]:
        plan, self._plan = self._plan, None
        return [{"type": "item.completed", "item": plan}] if plan is not None else []

    # --- MCP and agent calls rebuilt from ToolCallBegin/End ----------------------------------------
    def _tool_begin(self, msg: Any) -> list[Json]:
        self._calls[msg.call_id] = (msg.name, msg.arguments_json)
        return []

    def _tool_end(self, msg: Any) -> list[Json]:
        name, arguments = self._calls.pop(msg.call_id, (msg.name, ""))
        if msg.call_id in self._dedicated:
            self._dedicated.discard(msg.call_id)
            return []
        args = _parse_json(arguments)
        args = args if isinstance(args, dict) else {}
        if name.startswith(MCP_PREFIX) and MCP_SEPARATOR in name[len(MCP_PREFIX):]:
            server, _, tool = name[len(MCP_PREFIX):].partition(MCP_SEPARATOR)
            item: Json = {"type": "mcp_tool_call", "server": server, "tool": tool, "arguments": args}
            done: Json = {"result": None, "error": {"message": msg.output}, "status": "failed"} if msg.is_error else {
                "result": {"content": [{"type": "text", "text": msg.output}], "structured_content": None},
                "error": None, "status": "completed"}
            return self._pair(item, {"result": None, "error": None, "status": "in_progress"}, done)
        tool = COLLAB_TOOLS.get(name)
        if tool is None:
            return []
        output = _parse_json(msg.output)
        output = output if isinstance(output, dict) else {}
        targets = self._targets(args)
        if tool == "spawn_agent" and output.get("agent_id"):
            targets = [str(output["agent_id"])]
        elif tool == "wait":
            targets = [t for t in targets if self._agents.get(t, {}).get("status") in FINAL_AGENT_STATUSES]
        states = {t: dict(self._agents.get(t, {"status": "not_found", "message": None})) for t in targets}
        item = {"type": "collab_tool_call", "tool": tool, "sender_thread_id": self.thread_id,
                "receiver_thread_ids": [] if tool == "spawn_agent" else self._targets(args),
                "prompt": args.get("message") or None}
        return self._pair(item, {"agents_states": {}, "status": "in_progress"}, {
            "receiver_thread_ids": targets, "agents_states": states,
            "status": "failed" if msg.is_error else "completed"})

    @staticmethod
    def _targets(args: Json) -> list[str]:
        raw = args.get("targets") or args.get("agent_ids") or args.get("target") or args.get("agent_id") \
            or args.get("id") or []
        return [str(t) for t in (raw if isinstance(raw, list) else [raw])]

    def _pair(self, item: Json, started: Json, completed: Json) -> list[Json]:
        first = {"id": self._next_item(), **item, **started}
        return [{"type": "item.started", "item": first}, {"type": "item.completed", "item": {**first, **completed}}]
